//! `api.csv.importCSV`: downloads a CSV file once (through the fetch
//! policy: deny-list, redirects, timeout), parses it as it streams in
//! (quotes, embedded newlines, a UTF-8 BOM, any one-byte delimiter), and
//! hands the rows to the store in chunks, so memory holds one chunk however
//! large the file. Later steps read chunks by key, passing compact
//! references instead of rows.

use std::io::Read;
use std::time::Duration;

use flowstate_core::executor::{CsvOp, StepHost};
use serde_json::{Map, Value, json};

use crate::fetch::{self, FetchPolicy, FetchRequest, Opened};

/// The largest file an import reads.
pub const MAX_CSV_BYTES: u64 = 512 * 1024 * 1024;
/// Rows per chunk, at most.
pub const MAX_CHUNK_ROWS: u32 = 10_000;

pub struct Import<'a> {
    pub url: String,
    pub chunk_size: u32,
    pub delimiter: String,
    /// Unique to the step and its position in it, so a retry replaces
    /// what its earlier attempt imported.
    pub key: String,
    pub policy: &'a FetchPolicy,
    pub remaining: Duration,
    pub host: &'a dyn StepHost,
}

const WHAT: &str = "api.csv.importCSV";

/// Runs an import; returns `{key, totalRows, chunkCount, headers}` as JSON.
pub fn import(i: Import<'_>) -> Result<String, String> {
    if i.chunk_size == 0 || i.chunk_size > MAX_CHUNK_ROWS {
        return Err(format!(
            "{WHAT}: chunkSize must be 1 to {MAX_CHUNK_ROWS} rows, got {}",
            i.chunk_size
        ));
    }
    let delimiter = match i.delimiter.as_bytes() {
        [b] if b.is_ascii() && *b != b'"' && *b != b'\n' && *b != b'\r' => *b,
        _ => {
            return Err(format!(
                "{WHAT}: delimiter must be one character such as ',' ';' '|' or '\\t', got {:?}",
                i.delimiter
            ));
        }
    };
    let Opened { url, response, .. } = fetch::open(
        i.policy,
        i.remaining,
        FetchRequest {
            url: i.url.clone(),
            method: "GET".into(),
            headers: vec![(
                "accept".into(),
                "text/csv, text/tab-separated-values, text/plain;q=0.9, */*;q=0.5".into(),
            )],
            body: None,
        },
        WHAT,
    )?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "{WHAT}: {url} answered {} {}; check the URL (a signed link may have expired)",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ));
    }
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("text/html") || content_type.starts_with("application/json") {
        return Err(format!(
            "{WHAT}: {url} is not CSV: the server sent {content_type} (a login page or an API error?)"
        ));
    }
    let body = response
        .into_body()
        .into_with_config()
        .limit(MAX_CSV_BYTES)
        .reader();
    parse(i.host, &i.key, &url, body, delimiter, i.chunk_size)
}

fn parse(
    host: &dyn StepHost,
    key: &str,
    url: &url::Url,
    body: impl Read,
    delimiter: u8,
    chunk_size: u32,
) -> Result<String, String> {
    let bad = |e: csv::Error| {
        let line = e
            .position()
            .map(|p| format!(" at line {}", p.line()))
            .unwrap_or_default();
        match e.kind() {
            csv::ErrorKind::Io(io) => format!("{WHAT}: reading {url} failed: {io}"),
            csv::ErrorKind::Utf8 { .. } => {
                format!("{WHAT}: {url} is not CSV text{line}: it is not UTF-8")
            }
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => format!(
                "{WHAT}: {url} is not valid CSV{line}: a row has {len} fields where the header has {expected_len}"
            ),
            _ => format!("{WHAT}: {url} is not valid CSV{line}: {e}"),
        }
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_reader(body);
    let headers: Vec<String> = reader
        .headers()
        .map_err(bad)?
        .iter()
        .map(str::to_string)
        .collect();
    host.csv(CsvOp::Begin { key: key.into() })?;
    let mut chunk = Vec::with_capacity(chunk_size as usize);
    let (mut total, mut index) = (0u64, 0u32);
    let mut record = csv::StringRecord::new();
    let flush = |chunk: &mut Vec<Value>, index: &mut u32| -> Result<(), String> {
        let rows = Value::Array(std::mem::take(chunk)).to_string();
        host.csv(CsvOp::Chunk {
            key: key.into(),
            index: *index,
            rows,
        })?;
        *index += 1;
        Ok(())
    };
    while reader.read_record(&mut record).map_err(bad)? {
        let row: Map<String, Value> = headers
            .iter()
            .zip(record.iter())
            .map(|(h, v)| (h.clone(), Value::String(v.to_string())))
            .collect();
        chunk.push(Value::Object(row));
        total += 1;
        if chunk.len() == chunk_size as usize {
            flush(&mut chunk, &mut index)?;
        }
    }
    if !chunk.is_empty() {
        flush(&mut chunk, &mut index)?;
    }
    let meta = json!({
        "key": key,
        "totalRows": total,
        "chunkCount": index,
        "headers": headers,
    })
    .to_string();
    host.csv(CsvOp::Finish {
        key: key.into(),
        meta: meta.clone(),
    })?;
    Ok(meta)
}
