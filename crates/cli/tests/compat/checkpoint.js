// Pattern: cross-run state with $checkpoint (workflow state: "use
// $checkpoint to increment a number", "dedupe incoming data").
class Workflow {
  async start(data, headers, api) {
    const checkpoint = $checkpoint + 1 || 1;
    console.log(checkpoint);
    $checkpoint = checkpoint;

    const emails = this.$checkpoint?.emails ?? [];
    if (emails.includes(data.email)) {
      $end('Email already seen. Exiting early');
    }
    emails.push(data.email);
    this.$checkpoint = { emails };
  }
}
