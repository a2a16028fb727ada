//! End to end: the real `flowstate` binary, as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn flowstate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            stderr(o)
        )
    })
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn steps_of<'a>(doc: &'a Value, action: &str) -> Vec<&'a Value> {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == action)
        .collect()
}

#[test]
fn the_example_runs_to_completion_and_prints_the_documented_json() {
    let out = flowstate(&[
        "run",
        "examples/order-followup.js",
        "--data",
        "examples/order.json",
        "--fast-forward",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["summary"]["status"], "completed");
    assert_eq!(doc["state"]["unitsReserved"], 6);
    assert_eq!(doc["state"]["emailsSent"], 2);
    assert_eq!(doc["state"]["reserved"].as_array().unwrap().len(), 3);
    assert_eq!(doc["steps"].as_array().unwrap().len(), 7);
    let hook = steps_of(&doc, "onWorkflowComplete");
    assert_eq!(hook.len(), 1);
    assert!(
        hook[0]["logs"][0]["message"]
            .as_str()
            .unwrap()
            .contains("$61.00")
    );
    for s in doc["steps"].as_array().unwrap() {
        for key in ["id", "action", "status", "attempts", "depth", "logs"] {
            assert!(s.get(key).is_some(), "step is missing {key}: {s}");
        }
    }
    // Eight days of delays, fast-forwarded.
    assert_eq!(doc["summary"]["elapsed_ms"], 8 * 86_400_000);
}

#[test]
fn the_human_timeline_shows_steps_logs_and_state() {
    let out = flowstate(&[
        "run",
        "examples/order-followup.js",
        "--data",
        "examples/order.json",
        "--fast-forward",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "sendFollowUp",
        "+1d",
        "+8d",
        "reserved 3 × STICKER-PACK",
        "unitsReserved = 6",
        "completed: 7 steps",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn a_branch_that_fails_for_good_fails_the_run_and_the_error_hook_runs_once() {
    let out = flowstate(&[
        "run",
        "examples/inventory-sync.js",
        "--data",
        "examples/inventory.json",
        "--fast-forward",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "a failed run exits non-zero");
    let doc = json(&out);
    assert_eq!(doc["summary"]["status"], "failed");
    assert!(
        doc["summary"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("POSTER-A2")
    );
    assert_eq!(doc["state"]["checked"], 4, "the other branches went on");
    assert_eq!(steps_of(&doc, "onWorkflowError").len(), 1);
    let failed: Vec<_> = steps_of(&doc, "syncProduct")
        .into_iter()
        .filter(|s| s["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["attempts"], 4, "3 retries by default");
    assert_eq!(failed[0]["attempt_errors"].as_array().unwrap().len(), 3);
}

#[test]
fn an_endless_loop_is_stopped_and_its_siblings_finish() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "spin.js",
        "class Workflow {
            async start(data, headers, api) {
                for (const i of [1, 2, 3]) await api.scheduleNextStep({ delay: 0, action: 'work', payload: { i } });
            }
            async work({ i }, headers, api) {
                if (i === 2) { while (true) {} }
                await api.runStore.increment('done');
            }
        }",
    );
    let out = flowstate(&[
        "run",
        &file,
        "--min-delay",
        "0",
        "--step-cpu-limit",
        "300ms",
        "--max-retries",
        "0",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["state"]["done"], 2);
    let spun: Vec<_> = steps_of(&doc, "work")
        .into_iter()
        .filter(|s| s["status"] == "failed")
        .collect();
    assert_eq!(spun.len(), 1);
    assert_eq!(spun[0]["error"]["kind"], "cpu_limit");
    assert!(
        spun[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CPU limit of 300ms")
    );
}

#[test]
fn bad_workflow_files_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("missing.js", None, "cannot read the workflow file"),
        (
            "noclass.js",
            Some("class Flow { async start() {} }"),
            "does not define a class named Workflow",
        ),
        (
            "syntax.js",
            Some("class Workflow {\n  async start() {\n    let x = ;\n  }\n}\n"),
            "syntax.js:3:",
        ),
        (
            "nostart.js",
            Some("class Workflow { async other() {} }"),
            "has no start method",
        ),
    ];
    for (name, source, expected) in cases {
        let file = match source {
            Some(src) => write(dir.path(), name, src),
            None => dir.path().join(name).to_string_lossy().into_owned(),
        };
        let out = flowstate(&["run", &file]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{name}: {}", stderr(&out));
    }
}

#[test]
fn bad_data_and_flags_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let wf = "examples/order-followup.js";
    let bad_json = write(dir.path(), "bad.json", "{\n  \"id\": 1,\n  oops\n}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", wf, "--data", "nope.json"],
            "cannot read the data file nope.json",
        ),
        (vec!["run", wf, "--data", &bad_json], "is not JSON"),
        (vec!["run", wf, "--data", &bad_json], "line 3"),
        (vec!["run", wf, "--header", "novalue"], "NAME=VALUE"),
        (vec!["run", wf, "--min-delay", "soon"], "is not a duration"),
    ];
    for (args, expected) in cases {
        let out = flowstate(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// Each workflow mistake fails the step with a message that says what was
/// wrong; with retries off the run fails at once and exits non-zero.
#[test]
fn workflow_mistakes_fail_the_step_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "await api.scheduleNextStep({ delay: 10, action: 'shipit' });",
            "no method 'shipit'; methods you can schedule: ship",
        ),
        (
            "await api.scheduleNextStep({ delay: 10, action: 'start' });",
            "'start' is the entry step",
        ),
        (
            "await api.scheduleNextStep({ delay: '2 months', action: 'ship' });",
            "months and years are not a fixed length",
        ),
        (
            "await api.scheduleNextStep({ delay: 'later', action: 'ship' });",
            "invalid delay \"later\"",
        ),
        (
            "await api.scheduleNextStep({ delay: 5, action: 'ship' });",
            "below the minimum of 10s",
        ),
        (
            "await api.runStore.set('blob', 'x'.repeat(70000));",
            "value for key 'blob' is 68.4 KiB, over the limit of 64.0 KiB",
        ),
        (
            "await api.runStore.set('n', 'five'); await api.runStore.increment('n');",
            "the value stored there is a string, not a number",
        ),
        (
            "await api.scheduleNextStep({ delay: 10, action: 'ship', payload: { cb() {} } });",
            "is a function",
        ),
        ("await api.runStore.push('big', { n: 10n });", "is a BigInt"),
        (
            "await api.workflowStore.set('w', 'five'); await api.workflowStore.increment('w');",
            "workflowStore.increment('w'): the value stored there is a string",
        ),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let src = format!(
            "class Workflow {{ async start(data, headers, api) {{ {body} }} async ship() {{}} }}"
        );
        let file = write(dir.path(), &format!("mistake{i}.js"), &src);
        let out = flowstate(&["run", &file, "--max-retries", "0", "--json"]);
        assert_eq!(out.status.code(), Some(1), "{body}: {}", stderr(&out));
        let doc = json(&out);
        let message = doc["summary"]["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains(expected),
            "{body}\n  expected: {expected}\n  got: {message}"
        );
    }
}

#[test]
fn hooks_cannot_schedule_steps_and_a_throwing_hook_changes_no_status() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "hook.js",
        "class Workflow {
            async start(data, headers, api) { await api.runStore.set('x', 1); }
            async later() {}
            async onWorkflowComplete(api) { await api.scheduleNextStep({ delay: 10, action: 'later' }); }
        }",
    );
    let out = flowstate(&["run", &file, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["summary"]["status"], "completed");
    let hook = &steps_of(&doc, "onWorkflowComplete")[0];
    assert_eq!(hook["status"], "failed");
    assert_eq!(hook["attempts"], 1, "hooks are not retried for throwing");
    assert!(
        hook["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be called from onWorkflowComplete")
    );
}

fn jitter_ms(max: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    nanos % max
}

/// The process is killed with SIGKILL at random moments mid-run, then run
/// again on the same database until the run finishes: every branch counted
/// once, every item pushed once, the hook run once.
#[test]
fn sigkill_mid_run_then_resume_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = 5000;
    let file = write(
        dir.path(),
        "fanout.js",
        "class Workflow {
            async start(data, headers, api) {
                for (let i = 0; i < data.n; i++) {
                    await api.scheduleNextStep({ delay: 0, action: 'branch', payload: { i } });
                }
            }
            async branch({ i }, headers, api) {
                await api.runStore.increment('count');
                await api.runStore.push('items', i);
            }
            async onWorkflowComplete(api) {
                await api.runStore.increment('hookRuns');
            }
        }",
    );
    let data = write(dir.path(), "data.json", &format!("{{\"n\": {n}}}"));
    let db = dir.path().join("flow.db").to_string_lossy().into_owned();
    let args = [
        "run",
        &file,
        "--data",
        &data,
        "--db",
        &db,
        "--min-delay",
        "0",
        "--json",
    ];
    // Kill at random moments until the run has been interrupted enough,
    // then let it finish.
    let mut kills = 0;
    let out = loop {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowstate"))
            .args(args)
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if kills < 5 {
            std::thread::sleep(Duration::from_millis(100 + jitter_ms(300)));
            if child.try_wait().unwrap().is_none() {
                // SAFETY: sends a signal to our own child process.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                child.wait().unwrap();
                kills += 1;
                continue;
            }
        }
        break child.wait_with_output().unwrap();
    };
    assert!(kills >= 3, "the run was interrupted only {kills} times");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("resuming unfinished run_1"),
        "{}",
        stderr(&out)
    );
    let doc = json(&out);
    assert_eq!(doc["summary"]["status"], "completed");
    assert_eq!(doc["summary"]["run"], "run_1", "one run, resumed each time");
    assert_eq!(
        doc["state"]["count"], n,
        "every branch counted exactly once"
    );
    assert_eq!(
        doc["state"]["hookRuns"], 1,
        "onWorkflowComplete ran exactly once"
    );
    let mut items: Vec<u64> = serde_json::from_value(doc["state"]["items"].clone()).unwrap();
    assert_eq!(items.len(), n as usize, "no item lost or doubled");
    items.sort_unstable();
    items.dedup();
    assert_eq!(items.len(), n as usize, "every item exactly once");
    assert!(
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "done"),
        "no step stuck"
    );
}
