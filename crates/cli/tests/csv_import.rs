//! `api.csv` end to end: a real server imports a large CSV from a loopback
//! file server once, fans out one branch per chunk, and every row is
//! counted exactly once; a missing file fails the step with its status.

use serde_json::{Value, json};

mod common;
use common::*;

const IMPORT: &str = "class Workflow {
    async start(data, headers, api) {
        const csv = await api.csv.importCSV(data.url, { chunkSize: 500 });
        await api.runStore.set('csv', csv);
        for (let i = 0; i < csv.chunkCount; i++) {
            await api.scheduleNextStep({ delay: 0, action: 'chunk', payload: { key: csv.key, i } });
        }
    }
    async chunk({ key, i }, headers, api) {
        const rows = await api.csv.readCSVChunk(key, i);
        let qty = 0;
        for (const row of rows) qty += Number(row.qty);
        await api.runStore.increment('rows', rows.length);
        await api.runStore.increment('qty', qty);
        await api.runStore.increment('multiline', rows.filter((r) => r.note.includes('\\n')).length);
    }
    async onWorkflowComplete(api) {
        const csv = await api.runStore.get('csv');
        api.log(JSON.stringify({
            total: csv.totalRows, chunks: csv.chunkCount, headers: csv.headers,
            rows: await api.runStore.get('rows'), qty: await api.runStore.get('qty'),
            multiline: await api.runStore.get('multiline'),
        }));
        await api.csv.deleteCSV(csv.key);
    }
}";

const ROWS: usize = 20_250;

fn big_csv() -> Vec<u8> {
    let mut out = String::from("\u{feff}sku,qty,note\r\n");
    for i in 0..ROWS {
        // Every 100th row has a quoted note with a comma, a quote and a newline.
        if i % 100 == 0 {
            out.push_str(&format!(
                "S{i},{},\"big, \"\"fragile\"\"\nhandle with care\"\r\n",
                i % 7
            ));
        } else {
            out.push_str(&format!("S{i},{},plain\r\n", i % 7));
        }
    }
    out.into_bytes()
}

#[test]
fn a_large_csv_is_imported_once_and_every_row_counted_once() {
    let files = file_server(vec![("/stock.csv", "200 OK", "text/csv", big_csv())]);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("s.db"),
        &["--min-delay", "0", "--max-retries", "0"],
    );
    let (status, body) = must(
        "PUT",
        &server.url("/api/workflows/stock"),
        &[],
        Some(IMPORT.as_bytes()),
    );
    assert_eq!(status, 201, "{body}");
    let start = |url: String| {
        let (status, accepted) = must(
            "POST",
            &server.url("/hooks/stock"),
            &[("content-type", "application/json")],
            Some(json!({ "url": url }).to_string().as_bytes()),
        );
        assert_eq!(status, 202, "{accepted}");
        wait_for_run(&server, accepted["run"].as_str().unwrap(), &[])
    };

    let doc = start(format!("{files}/stock.csv"));
    assert_eq!(doc["summary"]["status"], "completed", "{doc}");
    let hook = doc["steps"].as_array().unwrap().last().unwrap();
    let totals: Value = serde_json::from_str(hook["logs"][0]["message"].as_str().unwrap()).unwrap();
    let qty: usize = (0..ROWS).map(|i| i % 7).sum();
    assert_eq!(
        totals,
        json!({
            "total": ROWS, "chunks": ROWS.div_ceil(500), "headers": ["sku", "qty", "note"],
            "rows": ROWS, "qty": qty, "multiline": ROWS.div_ceil(100),
        })
    );

    // A file that is not there: the step fails with the HTTP status.
    let doc = start(format!("{files}/gone.csv"));
    assert_eq!(doc["summary"]["status"], "failed", "{doc}");
    let error = doc["summary"]["error"]["message"].as_str().unwrap();
    assert!(error.contains("answered 404 Not Found"), "{error}");
    server.kill();
}
