// Pattern: fan-out with one branch per line item, results collected with
// runStore.push and counted with runStore.increment (run state:
// "Collecting results across fan-out branches", "Atomic counters").
export class Workflow {
  async start(data, headers, api) {
    await api.runStore.set('customerId', data.customer.id);
    for (let i = 0; i < data.line_items.length; i++) {
      const item = data.line_items[i];
      await api.scheduleNextStep({
        delay: 10 + i,
        action: 'checkStock',
        payload: { itemId: item.id, sku: item.sku, quantity: item.quantity },
      });
    }
  }

  async checkStock({ itemId, sku, quantity }, headers, api) {
    await api.runStore.push('stockResults', { sku, quantity, inStock: quantity > 0 });
    await api.runStore.increment('processedCount');
    if (quantity === 0) await api.runStore.increment('outOfStock', 1);
  }

  async onWorkflowComplete(api) {
    const results = await api.runStore.get('stockResults');
    const processed = await api.runStore.get('processedCount');
    console.log('checked', results.length, 'items; processed', processed, 'for customer', await api.runStore.get('customerId'));
  }
}
