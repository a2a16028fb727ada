// Pattern: a scheduled workflow that counts its runs: data.counter from the
// schedule trigger, and its own running total in $checkpoint.
class Workflow {
  async start(data, headers, api) {
    $checkpoint = ($checkpoint ?? 0) + 1;
    await api.runStore.set('seen', {
      counter: data.counter,
      next: data.next_schedule_time,
      total: $checkpoint,
    });
  }
}
