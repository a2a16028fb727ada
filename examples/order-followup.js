// A store's order follow-up: reserve each line item in parallel, then email
// the customer a day later and ask for a review a week after that.
//
//   flowstate run examples/order-followup.js --data examples/order.json --fast-forward

export class Workflow {
  async start(order, headers, api) {
    // Shopify redelivers webhooks; the first delivery wins.
    const { locked } = await api.dedupe(`order:${order.id}`);
    if (locked) {
      api.log(`order ${order.id} was already handled; ignoring the redelivery`);
      return;
    }
    api.log(`order ${order.name} from ${order.email}: ${order.line_items.length} line items`, headers['x-shopify-topic'] || '');
    await api.runStore.set('customer', { email: order.email, name: order.customer.first_name });

    // Fan out: one branch per line item, staggered to respect API rate limits.
    for (const [i, item] of order.line_items.entries()) {
      await api.scheduleNextStep({
        delay: 10 + i,
        action: 'reserveItem',
        payload: { sku: item.sku, quantity: item.quantity, price: item.price },
      });
    }

    await api.scheduleNextStep({ delay: '1 day', action: 'sendFollowUp', payload: { orderId: order.id } });
  }

  async reserveItem({ sku, quantity, price }, headers, api) {
    const units = await api.runStore.increment('unitsReserved', quantity);
    await api.runStore.increment('revenueCents', Math.round(Number(price) * 100) * quantity);
    await api.runStore.push('reserved', { sku, quantity });
    api.log(`reserved ${quantity} × ${sku} (${units} units so far)`);
  }

  async sendFollowUp({ orderId }, headers, api) {
    const customer = await api.runStore.get('customer');
    console.info(`emailing ${customer.email}: how is order ${orderId} treating you, ${customer.name}?`);
    await api.runStore.increment('emailsSent');
    await api.scheduleNextStep({ delay: '7 days', action: 'requestReview', payload: { orderId } });
  }

  async requestReview({ orderId }, headers, api) {
    const customer = await api.runStore.get('customer');
    console.info(`emailing ${customer.email}: would you review order ${orderId}?`);
    await api.runStore.increment('emailsSent');
  }

  async onWorkflowComplete(api) {
    const reserved = await api.runStore.get('reserved');
    const cents = await api.runStore.get('revenueCents');
    api.log(`done: ${reserved.length} line items reserved, $${(cents / 100).toFixed(2)}, ${await api.runStore.get('emailsSent')} emails sent`);
  }

  async onWorkflowError(err, api) {
    console.error(`order follow-up failed: ${err.message}`);
  }
}
