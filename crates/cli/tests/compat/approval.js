// Pattern: human approval. The branch pauses on waitForEvent; the link
// resumes it with the reviewer's answer merged into the payload. Unanswered,
// it times out and the run still ends.
class Workflow {
  async start(data, headers, api) {
    const { resumeUrl } = await api.waitForEvent({
      action: 'onDecision',
      payload: { orderId: data.id, total: data.total },
      timeout: '2 days',
    });
    api.log('approval requested');
    await api.runStore.set('link', resumeUrl);
    return { resumeUrl };
  }

  async onDecision({ orderId, total, approved }, headers, api) {
    await api.runStore.set('decision', { orderId, total, approved });
    api.log(`order ${orderId} (${total}) approved: ${approved}`);
  }
}
