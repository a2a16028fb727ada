// Nightly inventory sync: fan out over every product, count what changed,
// and collect failures without losing any. One product's feed is broken:
// its branch retries, then fails for good, and onWorkflowError reports it
// while the other branches finish their work.
//
//   flowstate run examples/inventory-sync.js --data examples/inventory.json --fast-forward

class Workflow {
  async start({ products }, headers, api) {
    for (const product of products) {
      await api.scheduleNextStep({ delay: '30 sec', action: 'syncProduct', payload: product });
    }
    api.log(`syncing ${products.length} products`);
  }

  async syncProduct(product, headers, api) {
    if (product.feed === 'broken') {
      throw new Error(`supplier feed for ${product.sku} returned no stock level`);
    }
    const delta = product.supplierStock - product.shopStock;
    await api.runStore.increment('checked');
    if (delta !== 0) {
      await api.runStore.increment('changed');
      await api.runStore.push('adjustments', { sku: product.sku, delta });
    }
  }

  async onWorkflowError(err, api) {
    const checked = await api.runStore.get('checked');
    console.error(`inventory sync incomplete after ${checked} products: ${err.message}`);
  }
}
