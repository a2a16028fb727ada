//! The sandbox against an in-memory host: every `api` member, the limits,
//! and the errors a workflow author can cause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowstate_core::executor::*;
use flowstate_core::limits::Limits;
use flowstate_core::state::StateOp;
use flowstate_core::status::StepKind;
use flowstate_core::{RunId, StepId, Timestamp, VersionId};
use flowstate_js::Sandbox;

#[derive(Default)]
struct MemHost {
    state: Mutex<HashMap<String, serde_json::Value>>,
    ops: Mutex<Vec<String>>,
    /// Checkpoints by scope: (JSON text, version).
    checkpoints: Mutex<HashMap<String, (String, i64)>>,
    csv: Mutex<MemCsv>,
}

/// CSV chunks by (key, index), and the keys of finished imports.
type MemCsv = (HashMap<(String, u32), String>, Vec<String>);

impl StepHost for MemHost {
    fn state(
        &self,
        scope: flowstate_core::state::StateScope,
        op: StateOp,
    ) -> Result<String, String> {
        if scope == flowstate_core::state::StateScope::Workflow {
            self.ops.lock().unwrap().push("workflow".into());
        }
        self.ops
            .lock()
            .unwrap()
            .push(format!("{}:{}", op.name(), op.key()));
        let mut st = self.state.lock().unwrap();
        Ok(match op {
            StateOp::Get { key } => st.get(&key).cloned().unwrap_or_default().to_string(),
            StateOp::Set { key, value } => {
                st.insert(key, serde_json::from_str(&value).unwrap());
                "null".into()
            }
            StateOp::Push { key, item } => {
                let list = st.entry(key).or_insert(serde_json::json!([]));
                list.as_array_mut()
                    .unwrap()
                    .push(serde_json::from_str(&item).unwrap());
                "null".into()
            }
            StateOp::Increment { key, delta } => {
                let v = st.entry(key.clone()).or_insert(serde_json::json!(0));
                let Some(n) = v.as_f64() else {
                    return Err(format!("runStore.increment('{key}'): not a number"));
                };
                *v = serde_json::json!(n + delta);
                v.to_string()
            }
            StateOp::Delete { key } => {
                st.remove(&key);
                "null".into()
            }
            StateOp::Dedupe { .. } => r#"{"locked":false}"#.into(),
        })
    }

    fn checkpoint(&self, scope: &str) -> Result<flowstate_core::checkpoint::Checkpoint, String> {
        let cps = self.checkpoints.lock().unwrap();
        Ok(match cps.get(scope) {
            Some((value, version)) => flowstate_core::checkpoint::Checkpoint {
                value: Some(value.clone()),
                version: *version,
            },
            None => Default::default(),
        })
    }

    fn csv(&self, op: CsvOp) -> Result<Option<String>, String> {
        let mut csv = self.csv.lock().unwrap();
        match op {
            CsvOp::Begin { key } => csv.0.retain(|(k, _), _| *k != key),
            CsvOp::Chunk { key, index, rows } => {
                csv.0.insert((key, index), rows);
            }
            CsvOp::Finish { key, .. } => csv.1.push(key),
            CsvOp::Read { key, index } => {
                if !csv.1.contains(&key) {
                    return Ok(None);
                }
                return Ok(csv.0.get(&(key, index)).cloned());
            }
            CsvOp::Delete { key } => {
                csv.0.retain(|(k, _), _| *k != key);
                csv.1.retain(|k| *k != key);
            }
        }
        Ok(None)
    }

    fn now(&self) -> Timestamp {
        Timestamp(1_000)
    }
}

struct Fixture {
    sandbox: Sandbox,
    code: Arc<WorkflowCode>,
    host: Arc<MemHost>,
    limits: Limits,
    env: Arc<StepEnv>,
}

fn fixture(source: &str) -> Fixture {
    fixture_with(
        source,
        Limits {
            min_delay: Duration::ZERO,
            ..Limits::default()
        },
    )
}

fn fixture_with(source: &str, limits: Limits) -> Fixture {
    fixture_full(source, limits, flowstate_js::FetchPolicy::default())
}

fn fixture_full(source: &str, limits: Limits, policy: flowstate_js::FetchPolicy) -> Fixture {
    let sandbox = Sandbox::with_fetch(1, policy);
    sandbox
        .inspect("wf", source)
        .expect("the test workflow loads");
    Fixture {
        sandbox,
        code: Arc::new(WorkflowCode {
            version: VersionId(1),
            name: "wf".into(),
            source: source.into(),
        }),
        host: Arc::default(),
        limits,
        env: Arc::default(),
    }
}

impl Fixture {
    async fn run(&self, action: &str, data: &str) -> StepReport {
        self.run_kind(StepKind::Action, action, data, None).await
    }

    async fn run_kind(
        &self,
        kind: StepKind,
        action: &str,
        data: &str,
        error: Option<StepError>,
    ) -> StepReport {
        let job = StepJob {
            code: self.code.clone(),
            run: RunMeta {
                id: RunId(7),
                workflow: "wf".into(),
                action: action.into(),
                step_id: StepId(3),
                attempt: 1,
                depth: 0,
                status: "running".into(),
            },
            kind,
            data: data.into(),
            headers: Arc::from(r#"{"x-shopify-topic":"orders/create"}"#),
            error,
            limits: StepLimits {
                cpu: self.limits.step_cpu,
                wall: self.limits.step_wall,
                memory: self.limits.step_memory,
                limits: Arc::new(self.limits.clone()),
                steps_left: 1_000,
            },
            host: self.host.clone(),
            public_url: Arc::from("https://flows.example.com/"),
            env: self.env.clone(),
        };
        self.sandbox.execute(job).await
    }

    fn state(&self, key: &str) -> serde_json::Value {
        self.host
            .state
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default()
    }
}

fn failed(r: &StepReport) -> &StepError {
    match &r.result {
        StepResult::Failed(e) => e,
        other => panic!("expected a failure, got {other:?} (logs {:?})", r.logs),
    }
}

fn scheduled(r: &StepReport) -> &[ScheduledStep] {
    match &r.result {
        StepResult::Completed { scheduled } => scheduled,
        other => panic!("expected success, got {other:?} (logs {:?})", r.logs),
    }
}

#[tokio::test]
async fn run_store_calls_reach_the_host_with_json_values() {
    let f = fixture(
        "export class Workflow {
            async start(data, headers, api) {
                await api.runStore.set('order', { id: data.id, topic: headers['x-shopify-topic'] });
                const n = await api.runStore.increment('count');
                const m = await api.runStore.increment('count', 2);
                await api.runStore.push('seen', n + m);
                const order = await api.runStore.get('order');
                await api.runStore.set('copy', order.id);
                await api.runStore.delete('order');
                api.log('run', api.run.id, 'step', api.run.stepId, 'attempt', api.run.attempt);
            }
        }",
    );
    let r = f.run("start", r#"{"id": 42}"#).await;
    assert!(scheduled(&r).is_empty());
    assert_eq!(f.state("count"), serde_json::json!(3.0));
    assert_eq!(f.state("seen"), serde_json::json!([4]));
    assert_eq!(f.state("copy"), serde_json::json!(42));
    assert_eq!(f.state("order"), serde_json::Value::Null);
    assert_eq!(r.logs[0].message, "run 7 step 3 attempt 1");
}

#[tokio::test]
async fn schedule_next_step_collects_children_with_parsed_delays() {
    let f = fixture(
        "class Workflow {
            async start(data, headers, api) {
                for (const item of data.items) {
                    await api.scheduleNextStep({ delay: '1 day', action: 'process', payload: { item } });
                }
                await api.scheduleNextStep({ delay: 30, action: 'summary' });
            }
            async process() {}
            async summary() {}
        }",
    );
    let r = f.run("start", r#"{"items":[1,2]}"#).await;
    let s = scheduled(&r);
    assert_eq!(s.len(), 3);
    assert_eq!(
        (s[0].action.as_str(), s[0].delay, s[0].payload.as_str()),
        ("process", Duration::from_secs(86_400), r#"{"item":1}"#)
    );
    assert_eq!(
        (s[2].action.as_str(), s[2].delay, s[2].payload.as_str()),
        ("summary", Duration::from_secs(30), "null")
    );
}

#[tokio::test]
async fn a_step_that_throws_schedules_nothing_and_keeps_message_and_stack() {
    let f = fixture(
        "class Workflow {
            async start(data, headers, api) {
                await api.scheduleNextStep({ delay: 10, action: 'next' });
                throw new RangeError('inventory went negative');
            }
            async next() {}
        }",
    );
    let r = f.run("start", "{}").await;
    let e = failed(&r);
    assert_eq!(
        (e.name.as_str(), e.message.as_str()),
        ("RangeError", "inventory went negative")
    );
    let stack = e.stack.as_deref().unwrap_or("");
    assert!(stack.contains("wf.js:4"), "{stack}");
    assert!(
        !stack.contains("<null>") && !stack.contains("runStep"),
        "only the author's frames: {stack}"
    );
}

#[tokio::test]
async fn bad_schedule_calls_throw_clear_errors() {
    let f = fixture(
        "class Workflow {
            async start(data, headers, api) {
                try { await api.scheduleNextStep({ delay: data.delay, action: data.action, payload: data.payload }); }
                catch (e) { api.log(e.message); }
            }
            async ship() {}
            async notify() {}
        }",
    );
    let cases = [
        (
            r#"{"delay":10,"action":"shipp"}"#,
            "no method 'shipp'; methods you can schedule: ship, notify",
        ),
        (
            r#"{"delay":10,"action":"start"}"#,
            "'start' is the entry step",
        ),
        (
            r#"{"delay":"3 months","action":"ship"}"#,
            "months and years are not a fixed length",
        ),
        (
            r#"{"delay":"soon","action":"ship"}"#,
            "invalid delay \"soon\"",
        ),
        (
            r#"{"delay":"401 days","action":"ship"}"#,
            "above the maximum of 400d",
        ),
    ];
    for (data, expected) in cases {
        let r = f.run("start", data).await;
        assert!(scheduled(&r).is_empty());
        assert!(
            r.logs[0].message.contains(expected),
            "{data}: {}",
            r.logs[0].message
        );
    }
}

#[tokio::test]
async fn non_json_values_are_refused_with_their_path() {
    let f = fixture(
        "class Workflow {
            async start(data, headers, api) {
                const cyclic = { a: {} }; cyclic.a.back = cyclic;
                const bad = { fn: { x: [1, () => 1] }, big: { n: 10n }, cyclic };
                for (const k of Object.keys(bad)) {
                    try { await api.runStore.set(k, bad[k]); } catch (e) { api.log(e.message); }
                }
                try { await api.runStore.increment('n', 'two'); } catch (e) { api.log(e.message); }
            }
        }",
    );
    let r = f.run("start", "{}").await;
    let logs: Vec<_> = r.logs.iter().map(|l| l.message.as_str()).collect();
    assert!(
        logs[0].contains("the value.x[1] is a function"),
        "{}",
        logs[0]
    );
    assert!(logs[1].contains("is a BigInt"), "{}", logs[1]);
    assert!(logs[2].contains("cycle"), "{}", logs[2]);
    assert!(
        logs[3].contains("the delta must be a finite number"),
        "{}",
        logs[3]
    );
    assert!(
        f.host.ops.lock().unwrap().is_empty(),
        "nothing reached the store"
    );
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_the_cpu_limit() {
    let src =
        "class Workflow { async start() { while (true) { try { for(;;){} } catch (e) {} } } }";
    let limits = Limits {
        step_cpu: Duration::from_millis(200),
        ..Limits::default()
    };
    let f = fixture_with(src, limits);
    let r = f.run("start", "{}").await;
    let e = failed(&r);
    assert_eq!(e.kind, ErrorKind::CpuLimit, "{e:?}");
    assert!(e.message.contains("--step-cpu-limit"), "{}", e.message);
}

#[tokio::test]
async fn the_cpu_limit_is_what_stops_the_loop_control_run() {
    // The same loop, bounded, finishes under the same limit: the limit, not
    // the code, stopped the endless one.
    let src = "class Workflow { async start(d, h, api) { let i = 0; while (i < 1e5) { i++; } api.log(i); } }";
    let limits = Limits {
        step_cpu: Duration::from_millis(200),
        ..Limits::default()
    };
    let r = fixture_with(src, limits).run("start", "{}").await;
    assert!(scheduled(&r).is_empty());
    assert_eq!(r.logs[0].message, "100000");
}

#[tokio::test]
async fn the_memory_limit_fails_the_step() {
    let src = "class Workflow { async start() { const a = []; while (true) a.push('x'.repeat(1e5) + a.length); } }";
    let limits = Limits {
        step_memory: 16 * 1024 * 1024,
        ..Limits::default()
    };
    let r = fixture_with(src, limits).run("start", "{}").await;
    assert_eq!(failed(&r).kind, ErrorKind::MemoryLimit, "{:?}", failed(&r));
}

#[tokio::test]
async fn end_stops_the_step_and_discards_what_it_scheduled() {
    let f = fixture(
        "class Workflow {
            async start(data, headers, api) {
                await api.scheduleNextStep({ delay: 10, action: 'next' });
                if (data.global) $end('duplicate order'); else api.end('done early');
                api.log('never reached');
            }
            async next() {}
        }",
    );
    let r = f.run("start", r#"{"global":true}"#).await;
    assert_eq!(
        r.result,
        StepResult::Ended {
            reason: "duplicate order".into()
        }
    );
    assert!(r.logs.is_empty());
    let r = f.run("start", "{}").await;
    assert_eq!(
        r.result,
        StepResult::Ended {
            reason: "done early".into()
        }
    );
}

#[tokio::test]
async fn hooks_get_a_restricted_api() {
    let f = fixture(
        "class Workflow {
            async start() {}
            async next() {}
            async onWorkflowComplete(api) {
                const total = await api.runStore.get('total');
                console.info('complete', total);
                await api.scheduleNextStep({ delay: 10, action: 'next' });
            }
            async onWorkflowError(err, api) {
                console.error('failed:', err.name, err.message);
            }
        }",
    );
    f.host
        .state
        .lock()
        .unwrap()
        .insert("total".into(), serde_json::json!(5));
    let r = f
        .run_kind(StepKind::CompleteHook, "onWorkflowComplete", "null", None)
        .await;
    assert_eq!(r.logs[0].message, "complete 5");
    assert_eq!(r.logs[0].level, LogLevel::Info);
    assert!(
        failed(&r)
            .message
            .contains("cannot be called from onWorkflowComplete"),
        "{:?}",
        r.result
    );
    let err = StepError::new(ErrorKind::Thrown, "TypeError", "x is undefined");
    let r = f
        .run_kind(StepKind::ErrorHook, "onWorkflowError", "null", Some(err))
        .await;
    assert!(scheduled(&r).is_empty());
    assert_eq!(r.logs[0].message, "failed: TypeError x is undefined");
    assert_eq!(r.logs[0].level, LogLevel::Error);
}

#[tokio::test]
async fn steps_share_no_memory() {
    let f = fixture(
        "let calls = 0;
         class Workflow {
            async start(data, headers, api) { calls++; globalThis.leak = (globalThis.leak || 0) + 1; api.log(calls, globalThis.leak); }
         }",
    );
    for _ in 0..3 {
        let r = f.run("start", "{}").await;
        assert_eq!(r.logs[0].message, "1 1");
    }
}

#[tokio::test]
async fn a_promise_that_never_settles_is_reported() {
    let f = fixture("class Workflow { async start() { await new Promise(() => {}); } }");
    let r = f.run("start", "{}").await;
    assert!(
        failed(&r).message.contains("never settled"),
        "{:?}",
        r.result
    );
}

#[tokio::test]
async fn console_formats_objects_and_errors() {
    let f = fixture(
        "class Workflow { async start() { console.log('order', { id: 1 }, [1, 2], null, undefined, 3); console.warn(new Error('careful')); } }",
    );
    let r = f.run("start", "{}").await;
    assert_eq!(
        r.logs[0].message,
        r#"order {"id":1} [1,2] null undefined 3"#
    );
    assert!(
        r.logs[1].message.starts_with("Error: careful"),
        "{}",
        r.logs[1].message
    );
    assert_eq!(r.logs[1].level, LogLevel::Warn);
}

#[tokio::test]
async fn typed_arrays_appear_on_first_use() {
    let f = fixture(
        "class Workflow {
            async start(d, h, api) {
                const bytes = new Uint8Array([1, 2, 3]);
                const view = new DataView(bytes.buffer);
                api.log(bytes.length, view.getUint8(2), typeof Float64Array, bytes instanceof Uint8Array);
            }
        }",
    );
    let r = f.run("start", "{}").await;
    assert!(scheduled(&r).is_empty());
    assert_eq!(r.logs[0].message, "3 3 function true");
}

#[tokio::test]
async fn the_wall_limit_stops_a_step_the_cpu_limit_would_let_run() {
    let src = "class Workflow { async start() { while (true) {} } }";
    let limits = Limits {
        step_cpu: Duration::from_secs(60),
        step_wall: Duration::from_millis(200),
        ..Limits::default()
    };
    let r = fixture_with(src, limits).run("start", "{}").await;
    let e = failed(&r);
    assert_eq!(e.kind, ErrorKind::WallLimit, "{e:?}");
    assert!(
        e.message.contains("wall-time limit of 200ms"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn url_and_search_params_follow_the_web_api() {
    let f = fixture(
        "class Workflow {
            async start(d, h, api) {
                const u = new URL('/admin/api/2024-10/orders.json?status=any&limit=50#top', 'https://shop.example.com:8443');
                api.log(u.href, u.host, u.pathname, u.searchParams.get('limit'), u.hash);
                u.searchParams.set('limit', '250');
                u.searchParams.append('fields', 'id,name');
                api.log(u.search);
                const q = new URLSearchParams({ a: 'x y', b: 'é&=' });
                api.log(q.toString(), new URLSearchParams('?a=1&a=2').getAll('a').join('|'));
                api.log(URL.canParse('not a url'), URL.canParse('mailto:a@b.c'));
                try { new URL('::'); } catch (e) { api.log(e.name); }
            }
        }",
    );
    let r = f.run("start", "{}").await;
    assert!(scheduled(&r).is_empty(), "{:?}", r.result);
    let logs: Vec<_> = r.logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(
        logs[0],
        "https://shop.example.com:8443/admin/api/2024-10/orders.json?status=any&limit=50#top shop.example.com:8443 /admin/api/2024-10/orders.json 50 #top"
    );
    assert_eq!(logs[1], "?status=any&limit=250&fields=id%2Cname");
    assert_eq!(logs[2], "a=x+y&b=%C3%A9%26%3D 1|2");
    assert_eq!(logs[3], "false true");
    assert_eq!(logs[4], "TypeError");
}

#[tokio::test]
async fn text_encoding_base64_and_crypto_work() {
    let f = fixture(
        "class Workflow {
            async start(d, h, api) {
                const bytes = new TextEncoder().encode('héllo €𝄞');
                api.log(bytes.length, new TextDecoder().decode(bytes));
                api.log(btoa('flowstate'), atob('Zmxvd3N0YXRl'));
                const id = crypto.randomUUID();
                api.log(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(id), id !== crypto.randomUUID());
                const r = crypto.getRandomValues(new Uint32Array(4));
                api.log(r.length, r.some((x) => x !== 0));
            }
        }",
    );
    let r = f.run("start", "{}").await;
    assert!(scheduled(&r).is_empty(), "{:?}", r.result);
    let logs: Vec<_> = r.logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(
        logs,
        [
            "14 héllo €𝄞",
            "Zmxvd3N0YXRl flowstate",
            "true true",
            "4 true"
        ]
    );
}

#[tokio::test]
async fn set_timeout_runs_callbacks_in_time_order_and_clear_timeout_cancels() {
    let f = fixture(
        "class Workflow {
            async start(d, h, api) {
                const seen = [];
                const cancelled = setTimeout(() => seen.push('cancelled'), 5);
                clearTimeout(cancelled);
                setTimeout(() => seen.push('late'), 40);
                setTimeout((x) => seen.push(x), 10, 'early');
                await new Promise((resolve) => setTimeout(resolve, 60));
                api.log(seen.join(','));
            }
        }",
    );
    let r = f.run("start", "{}").await;
    assert!(scheduled(&r).is_empty(), "{:?}", r.result);
    assert_eq!(r.logs[0].message, "early,late");
}

#[tokio::test]
async fn a_timer_past_the_wall_limit_stops_the_step() {
    let src =
        "class Workflow { async start() { await new Promise((r) => setTimeout(r, 60000)); } }";
    let limits = Limits {
        step_wall: Duration::from_millis(300),
        ..Limits::default()
    };
    let r = fixture_with(src, limits).run("start", "{}").await;
    assert_eq!(failed(&r).kind, ErrorKind::WallLimit, "{:?}", r.result);
}

/// A loopback HTTP server for fetch tests: a few canned routes, a thread
/// per connection, answering until the test ends.
fn http_server() -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (mut length, mut ctype) = (0usize, String::new());
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end().to_ascii_lowercase();
                    if h.is_empty() {
                        break;
                    }
                    if let Some(v) = h.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if let Some(v) = h.strip_prefix("content-type:") {
                        ctype = v.trim().to_string();
                    }
                }
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body).unwrap();
                let (status, extra, out): (&str, String, Vec<u8>) = match path.as_str() {
                    "/json" => (
                        "200 OK",
                        "content-type: application/json\r\nx-test: yes\r\n".into(),
                        br#"{"ok":1}"#.to_vec(),
                    ),
                    "/echo" => (
                        "200 OK",
                        String::new(),
                        format!("{}|{}", ctype, String::from_utf8_lossy(&body)).into_bytes(),
                    ),
                    "/redirect" => ("302 Found", "location: /json\r\n".into(), Vec::new()),
                    "/binary" => ("200 OK", String::new(), vec![0, 255, 1]),
                    "/orders.csv" => (
                        "200 OK",
                        "content-type: text/csv\r\n".into(),
                        "\u{feff}id,name,note\r\n1,\"Smith, Ann\",\"line one\nline two\"\n2,Bob,\"said \"\"hi\"\"\"\n3,Cy,\n"
                            .as_bytes()
                            .to_vec(),
                    ),
                    "/items.tsv" => ("200 OK", String::new(), b"sku\tqty\nA\t1\nB\t2\n".to_vec()),
                    "/ragged.csv" => ("200 OK", String::new(), b"a,b\n1,2\n3\n".to_vec()),
                    "/page.html" => (
                        "200 OK",
                        "content-type: text/html\r\n".into(),
                        b"<html>login</html>".to_vec(),
                    ),
                    "/big" => ("200 OK", String::new(), vec![b'x'; 200_000]),
                    "/slow" => {
                        std::thread::sleep(Duration::from_millis(1500));
                        ("200 OK", String::new(), b"late".to_vec())
                    }
                    _ => ("404 Not Found", String::new(), b"no such thing".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
                    out.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&out);
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn fetch_talks_to_a_real_server() {
    let base = http_server();
    let src = format!(
        "class Workflow {{
            async start(d, h, api) {{
                const r = await fetch('{base}/json');
                api.log(r.status, r.ok, r.headers.get('X-Test'), JSON.stringify(await r.json()));
                const e = await fetch(new URL('/echo', '{base}'), {{ method: 'post', headers: {{ 'content-type': 'application/json' }}, body: JSON.stringify({{ a: 1 }}) }});
                api.log(await e.text());
                const f = await fetch('{base}/echo', {{ method: 'POST', body: new URLSearchParams({{ q: 'a b' }}) }});
                api.log(await f.text());
                const m = await fetch('{base}/missing');
                api.log(m.status, m.ok, await m.text());
                const rd = await fetch('{base}/redirect');
                api.log(rd.status, rd.redirected, rd.url.endsWith('/json'));
                const b = new Uint8Array(await (await fetch('{base}/binary')).arrayBuffer());
                api.log(Array.from(b).join(','));
            }}
        }}"
    );
    let r = fixture(&src).run("start", "{}").await;
    assert!(scheduled(&r).is_empty(), "{:?}", r.result);
    let logs: Vec<_> = r.logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(
        logs,
        [
            r#"200 true yes {"ok":1}"#,
            r#"application/json|{"a":1}"#,
            "application/x-www-form-urlencoded;charset=utf-8|q=a+b",
            "404 false no such thing",
            "200 true true",
            "0,255,1",
        ]
    );
}

#[tokio::test]
async fn fetch_limits_size_time_and_destinations() {
    let base = http_server();
    let src = format!(
        "class Workflow {{
            async start(d, h, api) {{
                for (const url of ['{base}/big', '{base}/slow', 'http://169.254.169.254/latest/meta-data/', '{base}/json', 'ftp://example.com/x']) {{
                    try {{ const r = await fetch(url); api.log('ok', r.status); }} catch (e) {{ api.log(e.name, e.message); }}
                }}
            }}
        }}"
    );
    let policy = flowstate_js::FetchPolicy {
        timeout: Duration::from_millis(300),
        max_response_bytes: 100_000,
        ..Default::default()
    };
    let r = fixture_full(&src, Limits::default(), policy.clone())
        .run("start", "{}")
        .await;
    let logs: Vec<_> = r.logs.iter().map(|l| l.message.as_str()).collect();
    assert!(
        logs[0].starts_with("TypeError") && logs[0].contains("over the fetch limit of 97.7 KiB"),
        "{}",
        logs[0]
    );
    assert!(logs[1].contains("timed out after 300ms"), "{}", logs[1]);
    assert!(
        logs[2].contains("denied") && logs[2].contains("169.254.0.0/16"),
        "{}",
        logs[2]
    );
    assert_eq!(logs[3], "ok 200", "control: the same server is reachable");
    assert!(logs[4].contains("only http and https"), "{}", logs[4]);

    // The deny-list is what stops a request: deny loopback and the server
    // that just answered is refused.
    let mut denied = policy;
    denied.deny_networks(&["127.0.0.0/8".into()]).unwrap();
    let r = fixture_full(&src, Limits::default(), denied)
        .run("start", "{}")
        .await;
    assert!(
        r.logs[3].message.contains("denied") && r.logs[3].message.contains("127.0.0.0/8"),
        "{}",
        r.logs[3].message
    );
}

#[tokio::test]
async fn workflow_store_calls_carry_the_workflow_scope() {
    let f = fixture(
        "class Workflow { async start(d, h, api) { await api.workflowStore.increment('n'); await api.runStore.increment('m'); } }",
    );
    let r = f.run("start", "{}").await;
    assert!(scheduled(&r).is_empty(), "{:?}", r.result);
    assert_eq!(
        *f.host.ops.lock().unwrap(),
        ["workflow", "increment:n", "increment:m"]
    );
}

#[tokio::test]
async fn checkpoints_are_read_on_use_and_handed_back_when_changed() {
    let f = fixture(
        "export class Workflow {
            async start(data, headers, api) {
                api.log(typeof $checkpoint);
                $checkpoint = ($checkpoint || 0) + 1;
                this.$checkpoint = { seen: [data.id] };
            }
            async mutate(data) {
                $checkpoint.emails.push(data.email);
            }
            async readOnly() {
                return $checkpoint.emails.length;
            }
            async blind() {
                $checkpoint = undefined;
            }
            async huge() {
                $checkpoint = 'x'.repeat(70 * 1024);
            }
        }",
    );
    let r = f.run("start", r#"{"id": 5}"#).await;
    assert!(scheduled(&r).is_empty());
    assert_eq!(r.logs[0].message, "undefined");
    let by_scope: HashMap<_, _> = r
        .checkpoints
        .iter()
        .map(|w| (w.scope.as_str(), (w.read_version, w.value.as_deref())))
        .collect();
    assert_eq!(
        by_scope[""],
        (Some(0), Some("1")),
        "read at version 0, then set"
    );
    assert_eq!(
        by_scope["start"],
        (None, Some(r#"{"seen":[5]}"#)),
        "assigned without reading: nothing to compare"
    );

    f.host
        .checkpoints
        .lock()
        .unwrap()
        .insert(String::new(), (r#"{"emails":["a@x"]}"#.into(), 4));
    let r = f.run("mutate", r#"{"email": "b@x"}"#).await;
    assert_eq!(
        r.checkpoints[0].value.as_deref(),
        Some(r#"{"emails":["a@x","b@x"]}"#),
        "a change in place counts as a write"
    );
    assert_eq!(r.checkpoints[0].read_version, Some(4));
    let r = f.run("readOnly", "null").await;
    assert!(r.checkpoints.is_empty(), "reading alone writes nothing");
    let r = f.run("blind", "null").await;
    assert_eq!(
        (
            r.checkpoints[0].read_version,
            r.checkpoints[0].value.as_deref()
        ),
        (None, None)
    );

    let r = f.run("huge", "null").await;
    let e = failed(&r);
    assert_eq!(e.name, "CheckpointTooLarge");
    assert!(
        e.message.contains("$checkpoint would be") && e.message.contains("64"),
        "{}",
        e.message
    );
    assert!(
        r.checkpoints.is_empty(),
        "a failed step writes no checkpoint"
    );
}

#[tokio::test]
async fn wait_for_event_returns_a_resume_url_and_schedules_a_wait() {
    let f = fixture(
        "export class Workflow {
            async start(data, headers, api) {
                const w = await api.waitForEvent({ action: 'decide', payload: { id: 1 }, timeout: '2h', redirect_url: 'https://shop.example.com/thanks' });
                const d = await api.waitForEvent({ action: 'decide' });
                api.log(w.resumeUrl, w.token.length, w.token === d.token);
            }
            async decide() {}
            async badRedirect(data, headers, api) {
                await api.waitForEvent({ action: 'decide', redirect_url: '/relative' });
            }
            async tooLong(data, headers, api) {
                await api.waitForEvent({ action: 'decide', timeout: '31 days' });
            }
            async onWorkflowComplete(api) {
                await api.waitForEvent({ action: 'decide' });
            }
        }",
    );
    let r = f.run("start", "{}").await;
    let steps = scheduled(&r);
    assert_eq!(steps.len(), 2);
    let wait = steps[0].wait.as_ref().unwrap();
    assert_eq!(steps[0].delay, Duration::from_secs(7_200));
    assert_eq!(
        steps[1].delay,
        Duration::from_secs(86_400),
        "a day by default"
    );
    assert_eq!(
        wait.redirect_url.as_deref(),
        Some("https://shop.example.com/thanks")
    );
    assert_eq!(
        r.logs[0].message,
        format!("https://flows.example.com/resume/{} 32 false", wait.token)
    );
    assert!(wait.token.bytes().all(|b| b.is_ascii_hexdigit()));

    let e = failed(&f.run("badRedirect", "{}").await).clone();
    assert!(e.message.contains("absolute http(s) URL"), "{}", e.message);
    let e = failed(&f.run("tooLong", "{}").await).clone();
    assert!(
        e.message.starts_with("api.waitForEvent to 'decide'"),
        "{}",
        e.message
    );
    let r = f
        .run_kind(StepKind::CompleteHook, "onWorkflowComplete", "null", None)
        .await;
    assert!(
        failed(&r)
            .message
            .contains("cannot be called from onWorkflowComplete")
    );
}

#[tokio::test]
async fn csv_imports_parse_quotes_newlines_bom_and_tabs_into_chunks() {
    let base = http_server();
    let src = format!(
        "class Workflow {{
            async start(d, h, api) {{
                const a = await api.csv.importCSV('{base}/orders.csv', {{ chunkSize: 2 }});
                api.log(JSON.stringify(a));
                api.log(JSON.stringify(await api.csv.readCSVChunk(a.key, 0)));
                api.log(JSON.stringify(await api.csv.readCSVChunk(a.key, 1)));
                api.log(JSON.stringify(await api.csv.readCSVChunk(a.key, 2)));
                const t = await api.csv.importCSV(new URL('/items.tsv', '{base}'), {{ delimiter: '\\t' }});
                api.log(t.key !== a.key, JSON.stringify(await api.csv.readCSVChunk(t.key, 0)));
                await api.csv.deleteCSV(t.key);
                api.log(await api.csv.readCSVChunk(t.key, 0));
            }}
            async fails(d, h, api) {{
                await api.csv.importCSV('{base}' + d.path, d.options);
            }}
        }}"
    );
    let f = fixture(&src);
    let r = f.run("start", "{}").await;
    assert!(scheduled(&r).is_empty());
    let lines: Vec<&str> = r.logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(
        lines[0],
        r#"{"key":"csv_7_3_1","totalRows":3,"chunkCount":2,"headers":["id","name","note"]}"#
    );
    assert_eq!(
        lines[1],
        r#"[{"id":"1","name":"Smith, Ann","note":"line one\nline two"},{"id":"2","name":"Bob","note":"said \"hi\""}]"#
    );
    assert_eq!(lines[2], r#"[{"id":"3","name":"Cy","note":""}]"#);
    assert_eq!(lines[3], "null", "past the last chunk");
    assert_eq!(
        lines[4],
        r#"true [{"sku":"A","qty":"1"},{"sku":"B","qty":"2"}]"#
    );
    assert_eq!(lines[5], "null", "deleted");

    let fails = |path: &str, options: &str| {
        let data = format!(r#"{{"path":"{path}","options":{options}}}"#);
        let f = &f;
        async move { failed(&f.run("fails", &data).await).message.clone() }
    };
    let m = fails("/missing.csv", "{}").await;
    assert!(m.contains("answered 404 Not Found"), "{m}");
    let m = fails("/page.html", "{}").await;
    assert!(m.contains("is not CSV") && m.contains("text/html"), "{m}");
    let m = fails("/ragged.csv", "{}").await;
    assert!(
        m.contains("line 3") && m.contains("1 fields where the header has 2"),
        "{m}"
    );
    let m = fails("/orders.csv", r#"{"chunkSize":0}"#).await;
    assert!(m.contains("chunkSize must be 1 to 10000"), "{m}");
    let m = fails("/orders.csv", r#"{"delimiter":"ab"}"#).await;
    assert!(m.contains("delimiter must be one character"), "{m}");
}

#[tokio::test]
async fn env_is_a_frozen_object_of_the_workflows_variables() {
    let mut f = fixture(
        "export class Workflow {
            async start() {
                try { env.X = 'changed'; } catch (e) { console.log(e.name); }
                return { x: env.X, missing: env.MISSING === undefined, keys: Object.keys(env) };
            }
        }",
    );
    f.env = Arc::new(StepEnv {
        vars: vec![("X".into(), "1".into()), ("Y".into(), "two".into())],
        ..StepEnv::default()
    });
    let r = f.run("start", "{}").await;
    assert_eq!(r.logs[0].message, "TypeError", "env is read-only");
    assert_eq!(
        r.returned,
        Some(Returned::Json(
            r#"{"x":"1","missing":true,"keys":["X","Y"]}"#.into()
        ))
    );
}
