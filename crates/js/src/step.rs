//! One step attempt in a fresh QuickJS runtime: load the prelude and the
//! workflow from bytecode, call the method, drive its promise to the end
//! under the step's CPU, wall and memory limits, and report what happened.
//! A fresh runtime per step costs ~100 µs here and shares nothing between
//! steps or runs (see shared/notes/engine-facts.md).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use flowstate_core::executor::{
    ErrorKind, LogLevel, LogLine, Returned, StepError, StepJob, StepReport, StepResult,
};
use rquickjs::context::intrinsic;
use rquickjs::promise::PromiseState;
use rquickjs::{Context, Ctx, Function, Module, Promise, Runtime, Value, WriteOptions};

use crate::compile::{Compiled, EXPORT_NAME};
use crate::cpu::thread_cpu_time;
use crate::fetch::FetchPolicy;
use crate::natives::{StepState, install_host};

pub const PRELUDE_NAME: &str = "flowstate:prelude";
pub const PRELUDE_SOURCE: &str = include_str!("js/prelude.js");

/// QuickJS's own stack guard; worker threads get a larger native stack.
pub const JS_STACK_BYTES: usize = 4 * 1024 * 1024;

const LIMIT_NONE: u8 = 0;
const LIMIT_CPU: u8 = 1;
const LIMIT_WALL: u8 = 2;

/// Log lines one step may keep; past this they are counted, not stored.
pub(crate) const MAX_LOG_LINES: usize = 1_000;
/// Longest log line kept.
pub(crate) const MAX_LOG_LINE_BYTES: usize = 8 * 1024;

/// Every standard intrinsic but the typed arrays, which cost a third of a
/// context's creation (~50 µs here) and which few steps touch: the prelude
/// installs them on first use of any of their globals (`typedArrays` below).
type StepIntrinsics = (
    intrinsic::Date,
    intrinsic::Eval,
    intrinsic::RegExpCompiler,
    intrinsic::RegExp,
    intrinsic::Json,
    intrinsic::Proxy,
    intrinsic::MapSet,
    intrinsic::Promise,
    intrinsic::Performance,
    intrinsic::WeakRef,
    intrinsic::DOMException,
);

fn prelude_bytecode() -> &'static [u8] {
    static BYTECODE: OnceLock<Vec<u8>> = OnceLock::new();
    BYTECODE.get_or_init(|| stripped_bytecode(PRELUDE_NAME, PRELUDE_SOURCE))
}

pub(crate) fn stripped_bytecode(name: &str, source: &str) -> Vec<u8> {
    let rt = Runtime::new().expect("a QuickJS runtime can be created");
    let ctx = Context::full(&rt).expect("a QuickJS context can be created");
    ctx.with(|ctx| {
        // No source text or line tables: smaller bytecode, read on every
        // step, and flowstate's frames are cut from stacks anyway.
        let options = WriteOptions {
            strip_source: true,
            strip_debug: true,
            ..WriteOptions::default()
        };
        Module::declare(ctx, name, source)
            .and_then(|m| m.write(options))
            .expect("flowstate's own modules compile")
    })
}

/// Most timers one step may have waiting at once.
pub(crate) const MAX_TIMERS: usize = 10_000;

/// The step's runtime, kept alive past the report so its teardown (a final
/// garbage collection of everything the step made) happens after the
/// engine has its answer.
pub struct Teardown(#[allow(dead_code)] pub Option<(Context, Runtime)>);

pub fn run_step(
    job: StepJob,
    compiled: &Compiled,
    policy: &Arc<FetchPolicy>,
) -> (StepReport, Teardown) {
    let state = Rc::new(RefCell::new(StepState::default()));
    let limit_hit = Arc::new(AtomicU8::new(LIMIT_NONE));
    let mut teardown = Teardown(None);
    let outcome = execute(&job, compiled, policy, &state, &limit_hit, &mut teardown);
    let mut st = state.take();
    if st.dropped_logs > 0 {
        st.logs.push(LogLine {
            at: job.host.now(),
            level: LogLevel::Warn,
            message: format!(
                "{} more log lines were dropped (a step keeps at most {MAX_LOG_LINES})",
                st.dropped_logs
            ),
        });
    }
    let mut returned = None;
    let result = match (limit_hit.load(Ordering::SeqCst), outcome) {
        (LIMIT_CPU, _) => StepResult::Failed(StepError::new(
            ErrorKind::CpuLimit,
            "CpuLimitExceeded",
            format!(
                "the step used more than its CPU limit of {} and was stopped (an endless loop?); raise it with --step-cpu-limit if the work is real",
                flowstate_core::delay::format_duration(job.limits.cpu)
            ),
        )),
        (LIMIT_WALL, _) => StepResult::Failed(StepError::new(
            ErrorKind::WallLimit,
            "WallLimitExceeded",
            format!(
                "the step ran longer than its wall-time limit of {} and was stopped; raise it with --step-wall-limit, or split the work across steps",
                flowstate_core::delay::format_duration(job.limits.wall)
            ),
        )),
        _ if st.ended.is_some() => StepResult::Ended {
            reason: st.ended.take().unwrap_or_default(),
        },
        (_, Ok(value)) => {
            returned = value;
            StepResult::Completed {
                scheduled: std::mem::take(&mut st.scheduled),
            }
        }
        (_, Err(e)) => StepResult::Failed(e),
    };
    (
        StepReport {
            checkpoints: match result {
                StepResult::Failed(_) => Vec::new(),
                _ => std::mem::take(&mut st.checkpoint_writes),
            },
            result,
            logs: st.logs,
            returned,
        },
        teardown,
    )
}

fn execute(
    job: &StepJob,
    compiled: &Compiled,
    policy: &Arc<FetchPolicy>,
    state: &Rc<RefCell<StepState>>,
    limit_hit: &Arc<AtomicU8>,
    teardown: &mut Teardown,
) -> Result<Option<Returned>, StepError> {
    let rt = Runtime::new().map_err(internal)?;
    rt.set_memory_limit(job.limits.memory);
    rt.set_max_stack_size(JS_STACK_BYTES);
    let cpu_deadline = thread_cpu_time() + job.limits.cpu;
    let wall_deadline = Instant::now() + job.limits.wall;
    let flag = limit_hit.clone();
    rt.set_interrupt_handler(Some(Box::new(move || {
        if thread_cpu_time() >= cpu_deadline {
            flag.store(LIMIT_CPU, Ordering::SeqCst);
            true
        } else if Instant::now() >= wall_deadline {
            flag.store(LIMIT_WALL, Ordering::SeqCst);
            true
        } else {
            false
        }
    })));
    // Short steps should not collect garbage midway; the runtime's teardown
    // frees everything at once. A quarter of the limit leaves room to collect
    // before a memory-heavy step reaches the limit itself.
    rt.set_gc_threshold(job.limits.memory / 4);
    let ctx = Context::custom::<StepIntrinsics>(&rt).map_err(internal)?;
    let result = ctx.with(|ctx| {
        // SAFETY: adds the standard atob/btoa globals to this fresh, live
        // context (it needs DOMException, which StepIntrinsics includes).
        if unsafe { rquickjs::qjs::JS_AddIntrinsicAToB(ctx.as_raw().as_ptr()) } < 0 {
            return Err(internal("could not install atob/btoa"));
        }
        install_host(&ctx, job, compiled, state, policy, wall_deadline)
            .map_err(|e| js_error(&ctx, e))?;
        // SAFETY: both bytecodes were produced in this process by this same
        // QuickJS build (prelude_bytecode, compile::compile); none comes from outside.
        let prelude = unsafe { Module::load(ctx.clone(), prelude_bytecode()) }
            .map_err(|e| js_error(&ctx, e))?;
        let (prelude, done) = prelude.eval().map_err(|e| js_error(&ctx, e))?;
        done.finish::<()>().map_err(|e| js_error(&ctx, e))?;
        let module = unsafe { Module::load(ctx.clone(), &compiled.bytecode) }
            .map_err(|e| js_error(&ctx, e))?;
        let (module, done) = module.eval().map_err(|e| js_error(&ctx, e))?;
        drive(&ctx, &done);
        if let Some(Err(e)) = done.result::<()>() {
            return Err(js_error(&ctx, e));
        }
        let class: Value = module.get(EXPORT_NAME).map_err(|e| js_error(&ctx, e))?;
        let run_step: Function = prelude.get("runStep").map_err(|e| js_error(&ctx, e))?;
        let meta = ctx
            .json_parse(serde_json::to_string(&job.run).expect("RunMeta serialises"))
            .map_err(|e| js_error(&ctx, e))?;
        let error_json = job
            .error
            .as_ref()
            .map(|e| serde_json::to_string(e).expect("StepError serialises"));
        let promise: Promise = run_step
            .call((
                class,
                job.kind.as_str(),
                job.run.action.as_str(),
                job.data.as_str(),
                &*job.headers,
                error_json,
                meta,
            ))
            .map_err(|e| js_error(&ctx, e))?;
        let fire_timer: Function = prelude.get("fireTimer").map_err(|e| js_error(&ctx, e))?;
        let timers = Timers {
            state,
            fire: &fire_timer,
            wall_deadline,
            limit_hit,
            host: &job.host,
        };
        drive_with_timers(&ctx, &promise, &timers);
        // Un-awaited promises still run, within the same limits.
        while ctx.execute_pending_job() {}
        match promise.result::<String>() {
            None => Err(StepError::new(
                ErrorKind::Thrown,
                "Error",
                "the step's promise never settled: it awaited something that can never resolve",
            )),
            Some(Err(e)) => Err(js_error(&ctx, e)),
            Some(Ok(text)) => outcome_from(&text),
        }
    });
    teardown.0 = Some((ctx, rt));
    result
}

/// What the timer loop needs from the step.
struct Timers<'a, 'js> {
    state: &'a Rc<RefCell<StepState>>,
    fire: &'a Function<'js>,
    wall_deadline: Instant,
    limit_hit: &'a Arc<AtomicU8>,
    host: &'a Arc<dyn flowstate_core::executor::StepHost>,
}

/// Runs the job queue until `promise` settles; while it waits on nothing but
/// timers, sleeps until the next one is due (within the wall limit) and
/// fires it. Timers still waiting when the promise settles are dropped.
fn drive_with_timers(ctx: &Ctx<'_>, promise: &Promise<'_>, t: &Timers<'_, '_>) {
    let Timers {
        state,
        fire,
        wall_deadline,
        limit_hit,
        host,
    } = t;
    let wall_deadline = *wall_deadline;
    loop {
        drive(ctx, promise);
        if promise.state() != PromiseState::Pending
            || limit_hit.load(Ordering::SeqCst) != LIMIT_NONE
        {
            return;
        }
        let next = state.borrow_mut().timers.pop();
        let Some(std::cmp::Reverse((due, id))) = next else {
            return;
        };
        if due > wall_deadline {
            limit_hit.store(LIMIT_WALL, Ordering::SeqCst);
            return;
        }
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if let Err(e) = fire.call::<_, ()>((id,)) {
            // A throwing callback is an uncaught error, as in a browser: log it.
            let err = js_error(ctx, e);
            let mut st = state.borrow_mut();
            st.logs.push(LogLine {
                at: host.now(),
                level: LogLevel::Error,
                message: format!(
                    "uncaught in a setTimeout callback: {}: {}",
                    err.name, err.message
                ),
            });
        }
    }
}

/// Runs the job queue until `promise` settles or nothing is left to run.
fn drive(ctx: &Ctx<'_>, promise: &Promise<'_>) {
    while promise.state() == PromiseState::Pending {
        if !ctx.execute_pending_job() {
            break;
        }
    }
}

/// Reads the prelude's report of how the method ended (see `runStep`).
fn outcome_from(text: &str) -> Result<Option<Returned>, StepError> {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    if v["ok"] == serde_json::Value::Bool(true) {
        let r = &v["returned"];
        if let Some(json) = r["json"].as_str() {
            return Ok(Some(Returned::Json(json.to_string())));
        }
        if r["response"].is_object() {
            let resp = &r["response"];
            let headers = resp["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|pair| {
                    Some((pair[0].as_str()?.to_string(), pair[1].as_str()?.to_string()))
                })
                .collect();
            return Ok(Some(Returned::Response {
                status: resp["status"].as_u64().unwrap_or(200) as u16,
                headers,
                body: resp["body"].as_str().unwrap_or_default().to_string(),
            }));
        }
        return Ok(None);
    }
    let name = v["name"].as_str().unwrap_or("Error").to_string();
    let message = v["message"].as_str().unwrap_or_default().to_string();
    let kind = if message.contains("out of memory") {
        ErrorKind::MemoryLimit
    } else {
        ErrorKind::Thrown
    };
    Err(StepError {
        kind,
        name,
        message,
        stack: v["stack"].as_str().map(str::to_string),
    })
}

/// The pending JS exception (or an engine error) as a step error.
fn js_error(ctx: &Ctx<'_>, e: rquickjs::Error) -> StepError {
    if !matches!(e, rquickjs::Error::Exception) {
        return internal(e);
    }
    let value = ctx.catch();
    if let Some(obj) = value.as_object() {
        let name: Option<String> = obj.get("name").ok();
        let message: Option<String> = obj.get("message").ok();
        let stack: Option<String> = obj.get("stack").ok();
        let message = message.unwrap_or_default();
        let kind = if message.contains("out of memory") {
            ErrorKind::MemoryLimit
        } else {
            ErrorKind::Thrown
        };
        return StepError {
            kind,
            name: name.unwrap_or_else(|| "Error".into()),
            message,
            stack,
        };
    }
    let text = value
        .as_string()
        .and_then(|s| s.to_string().ok())
        .unwrap_or_else(|| format!("{value:?}"));
    StepError::new(ErrorKind::Thrown, "Error", text)
}

fn internal(e: impl std::fmt::Display) -> StepError {
    StepError::new(
        ErrorKind::Internal,
        "InternalError",
        format!("flowstate could not run the step: {e}"),
    )
}
