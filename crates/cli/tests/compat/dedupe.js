// Pattern: keep start fast; dedupe Shopify redeliveries, then schedule the
// real work (steps & workflow design: "When start should do work").
class Workflow {
  async start(data, headers, api) {
    if (!data.id) return;
    const { locked } = await api.dedupe(`my-workflow:${data.id}`);
    if (locked) return;
    await api.scheduleNextStep({
      delay: 10,
      action: 'processOrder',
      payload: { orderId: data.id },
    });
  }

  async processOrder({ orderId }, headers, api) {
    api.log('processing order', orderId);
  }
}
