// Pattern: an HTTP trigger answers with what start returns: a plain object
// as JSON, a Response as is, nothing as {"success":true}; later steps run
// after the answer.
class Workflow {
  async start(data, headers, api) {
    if (data.mode === 'json') return { received: data.order, ok: true };
    if (data.mode === 'response') {
      return new Response(`created ${data.order}`, { status: 201, headers: { 'x-order': String(data.order) } });
    }
    await api.scheduleNextStep({ delay: 10, action: 'later', payload: { order: data.order } });
  }

  async later({ order }, headers, api) {
    api.log('after the answer', order);
  }
}
