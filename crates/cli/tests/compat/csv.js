// Pattern: a large import passed between steps as compact references:
// import once, fan out one branch per chunk, count with increment (run
// state: "Use run state for compact data").
class Workflow {
  async start(data, headers, api) {
    const { key, chunkCount, totalRows } = await api.csv.importCSV(data.url, { chunkSize: 100 });
    await api.runStore.set('totalRows', totalRows);
    for (let index = 0; index < chunkCount; index++) {
      await api.scheduleNextStep({ delay: 10, action: 'processChunk', payload: { key, index } });
    }
  }

  async processChunk({ key, index }, headers, api) {
    const rows = await api.csv.readCSVChunk(key, index);
    for (const row of rows) {
      if (Number(row.inventory) < 5) await api.runStore.push('lowStock', row.sku);
    }
    await api.runStore.increment('rowsProcessed', rows.length);
  }

  async onWorkflowComplete(api) {
    const low = (await api.runStore.get('lowStock')) ?? [];
    api.log(`processed ${await api.runStore.get('rowsProcessed')} of ${await api.runStore.get('totalRows')} rows; ${low.length} low`);
  }
}
