// Pattern: a linear chain with duration-string delays (steps & workflow
// design: "Linear chains"). Each step passes what the next one needs.
class Workflow {
  async start(data, headers, api) {
    await api.scheduleNextStep({
      delay: '1 day',
      action: 'sendFollowUp',
      payload: { orderId: data.id, email: data.email },
    });
  }

  async sendFollowUp({ orderId, email }, headers, api) {
    api.log(`follow-up for order ${orderId} to ${email}`);
    await api.scheduleNextStep({
      delay: '7 days',
      action: 'sendSecondFollowUp',
      payload: { orderId, email },
    });
  }

  async sendSecondFollowUp({ orderId, email }, headers, api) {
    api.log(`second follow-up for order ${orderId} to ${email}`);
  }
}
