//! The host's native calls, registered as `globalThis.__flowstate` for the
//! prelude (which takes them and removes the name before user code runs):
//! state ops, scheduling and waits, checkpoints, CSV imports, fetch, logs,
//! timers, URL parsing and randomness. What a call leaves for the step's
//! report is collected in [`StepState`].

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use flowstate_core::checkpoint::{self, CheckpointWrite};
use flowstate_core::executor::{CsvOp, LogLevel, LogLine, ScheduledStep, StepJob, WaitSpec};
use flowstate_core::state::{StateOp, StateScope};
use rquickjs::{Ctx, Function, Module, Object, Value};

use crate::compile::Compiled;
use crate::csv_import;
use crate::fetch::{self, FetchPolicy, FetchRequest};
use crate::schedule::{self, ScheduleContext};
use crate::step::{MAX_LOG_LINE_BYTES, MAX_LOG_LINES, MAX_TIMERS, stripped_bytecode};

const WEB_NAME: &str = "flowstate:web";
const WEB_SOURCE: &str = include_str!("js/web.js");

/// Throws `msg` as a JS `Error`: what the workflow author sees.
fn throw(ctx: &Ctx<'_>, msg: &str) -> rquickjs::Error {
    rquickjs::Exception::throw_message(ctx, msg)
}

#[derive(Default)]
pub(crate) struct StepState {
    pub(crate) scheduled: Vec<ScheduledStep>,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) dropped_logs: usize,
    pub(crate) ended: Option<String>,
    /// CSV imports started so far (each gets its own key).
    pub(crate) csv_imports: u32,
    /// Checkpoint versions read, by scope.
    pub(crate) checkpoint_reads: std::collections::HashMap<String, i64>,
    /// Checkpoints changed, to write at commit.
    pub(crate) checkpoint_writes: Vec<CheckpointWrite>,
    /// `setTimeout`s waiting: (due, id), earliest first.
    pub(crate) timers: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u32)>>,
}

/// The web classes and fetch (`js/web.js`), loaded by a step on first use.
fn web_bytecode() -> &'static [u8] {
    static BYTECODE: OnceLock<Vec<u8>> = OnceLock::new();
    BYTECODE.get_or_init(|| stripped_bytecode(WEB_NAME, WEB_SOURCE))
}

/// Registers the host's native calls as `globalThis.__flowstate`; the prelude
/// takes them and removes the name before user code runs.
pub(crate) fn install_host<'js>(
    ctx: &Ctx<'js>,
    job: &StepJob,
    compiled: &Compiled,
    state: &Rc<RefCell<StepState>>,
    policy: &Arc<FetchPolicy>,
    wall_deadline: Instant,
) -> rquickjs::Result<()> {
    let obj = Object::new(ctx.clone())?;

    obj.set(
        "loadWeb",
        Function::new(ctx.clone(), |ctx: Ctx<'js>| {
            // SAFETY: bytecode produced in this process by this QuickJS build.
            let module = unsafe { Module::load(ctx.clone(), web_bytecode()) }?;
            let (module, done) = module.eval()?;
            done.finish::<()>()?;
            module.get::<_, Function<'js>>("build")
        })?,
    )?;

    // Serialised only if the step reads `env` (the prelude asks once).
    let env = job.env.clone();
    obj.set(
        "env",
        Function::new(ctx.clone(), move || {
            let vars: serde_json::Map<String, serde_json::Value> = env
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            serde_json::Value::Object(vars).to_string()
        })?,
    )?;

    let fetch_policy = policy.clone();
    let shopify = job.env.shopify.clone();
    obj.set(
        "fetch",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  url: String,
                  method: String,
                  headers: String,
                  text: Option<String>,
                  bytes: Option<Vec<u8>>| {
                let mut headers: Vec<(String, String)> =
                    serde_json::from_str(&headers).unwrap_or_default();
                if let Some(shop) = &shopify {
                    fetch::add_shopify_token(shop, &url, &mut headers);
                }
                let body = text.map(String::into_bytes).or(bytes);
                let remaining = wall_deadline.saturating_duration_since(Instant::now());
                fetch::perform(
                    &fetch_policy,
                    remaining,
                    FetchRequest {
                        url,
                        method,
                        headers,
                        body,
                    },
                )
                .map_err(|msg| rquickjs::Exception::throw_type(&ctx, &msg))
            },
        )?,
    )?;

    let host = job.host.clone();
    obj.set(
        "op",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, scope: String, name: String, key: String, arg: Option<String>| {
                let op = match (name.as_str(), arg) {
                    ("get", _) => StateOp::Get { key },
                    ("set", Some(value)) => StateOp::Set { key, value },
                    ("push", Some(item)) => StateOp::Push { key, item },
                    ("increment", Some(d)) => StateOp::Increment {
                        key,
                        delta: d.parse().unwrap_or(f64::NAN),
                    },
                    ("delete", _) => StateOp::Delete { key },
                    ("dedupe", Some(t)) => StateOp::Dedupe {
                        key,
                        ttl_secs: t.parse().unwrap_or(86_400.0),
                    },
                    _ => {
                        return Err(rquickjs::Exception::throw_internal(
                            &ctx,
                            "unknown state operation",
                        ));
                    }
                };
                let scope = if scope == "workflow" {
                    StateScope::Workflow
                } else {
                    StateScope::Run
                };
                host.state(scope, op).map_err(|msg| throw(&ctx, &msg))
            },
        )?,
    )?;

    let (host, st, policy) = (job.host.clone(), state.clone(), policy.clone());
    let (run, step) = (job.run.id.0, job.run.step_id.0);
    obj.set(
        "csvImport",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, url: String, chunk_size: f64, delimiter: String| {
                let n = {
                    let mut st = st.borrow_mut();
                    st.csv_imports += 1;
                    st.csv_imports
                };
                let chunk_size = if chunk_size.fract() == 0.0 && chunk_size >= 0.0 {
                    chunk_size.min(u32::MAX as f64) as u32
                } else {
                    0
                };
                csv_import::import(csv_import::Import {
                    url,
                    chunk_size,
                    delimiter,
                    key: format!("csv_{run}_{step}_{n}"),
                    policy: &policy,
                    remaining: wall_deadline.saturating_duration_since(Instant::now()),
                    host: host.as_ref(),
                })
                .map_err(|msg| throw(&ctx, &msg))
            },
        )?,
    )?;
    let host = job.host.clone();
    obj.set(
        "csvRead",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, key: String, index: u32| {
                host.csv(CsvOp::Read { key, index })
                    .map_err(|msg| throw(&ctx, &msg))
            },
        )?,
    )?;
    let host = job.host.clone();
    obj.set(
        "csvDelete",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, key: String| {
            host.csv(CsvOp::Delete { key })
                .map(|_| ())
                .map_err(|msg| throw(&ctx, &msg))
        })?,
    )?;

    let (host, st) = (job.host.clone(), state.clone());
    obj.set(
        "checkpointRead",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, scope: String| {
            let cp = host.checkpoint(&scope).map_err(|msg| throw(&ctx, &msg))?;
            st.borrow_mut().checkpoint_reads.insert(scope, cp.version);
            Ok::<_, rquickjs::Error>(cp.value)
        })?,
    )?;

    let st = state.clone();
    obj.set(
        "checkpointWrite",
        Function::new(ctx.clone(), move |scope: String, value: Option<String>| {
            if let Some(v) = &value
                && let Err(msg) = checkpoint::check_size(&checkpoint::describe_scope(&scope), v)
            {
                return Some(msg);
            }
            let mut st = st.borrow_mut();
            let read_version = st.checkpoint_reads.get(&scope).copied();
            st.checkpoint_writes.retain(|w| w.scope != scope);
            st.checkpoint_writes.push(CheckpointWrite {
                scope,
                read_version,
                value,
            });
            None
        })?,
    )?;

    let st = state.clone();
    let info = compiled.info.clone();
    let limits = job.limits.limits.clone();
    let (depth, steps_left) = (job.run.depth, job.limits.steps_left);
    let public_url = job.public_url.trim_end_matches('/').to_string();
    obj.set(
        "wait",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  action: Value<'js>,
                  timeout: String,
                  payload: String,
                  redirect_url: Option<String>| {
                if let Some(u) = &redirect_url
                    && !url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
                {
                    return Err(throw(
                        &ctx,
                        &format!(
                            "api.waitForEvent: redirect_url must be an absolute http(s) URL, got '{u}'"
                        ),
                    ));
                }
                let mut bytes = [0u8; 16];
                getrandom::fill(&mut bytes)
                    .map_err(|e| throw(&ctx, &format!("no randomness for a resume token: {e}")))?;
                let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let action = action.as_string().and_then(|s| s.to_string().ok());
                let already = st.borrow().scheduled.len();
                let cx = ScheduleContext {
                    info: &info,
                    limits: &limits,
                    depth,
                    steps_left,
                    already,
                };
                let wait = WaitSpec {
                    token: token.clone(),
                    redirect_url,
                };
                let step = schedule::check_wait(&cx, action.as_deref(), &timeout, payload, wait)
                    .map_err(|m| throw(&ctx, &m))?;
                st.borrow_mut().scheduled.push(step);
                Ok::<_, rquickjs::Error>(
                    serde_json::json!({
                        "token": token,
                        "resumeUrl": format!("{public_url}/resume/{token}"),
                    })
                    .to_string(),
                )
            },
        )?,
    )?;

    let st = state.clone();
    let info = compiled.info.clone();
    let limits = job.limits.limits.clone();
    obj.set(
        "schedule",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, action: Value<'js>, delay: String, payload: String| {
                let action = action.as_string().and_then(|s| s.to_string().ok());
                let already = st.borrow().scheduled.len();
                let cx = ScheduleContext {
                    info: &info,
                    limits: &limits,
                    depth,
                    steps_left,
                    already,
                };
                let step = schedule::check(&cx, action.as_deref(), &delay, payload)
                    .map_err(|msg| throw(&ctx, &msg))?;
                st.borrow_mut().scheduled.push(step);
                Ok::<_, rquickjs::Error>(())
            },
        )?,
    )?;

    let st = state.clone();
    let host = job.host.clone();
    obj.set(
        "log",
        Function::new(ctx.clone(), move |level: String, mut message: String| {
            let mut st = st.borrow_mut();
            if st.logs.len() >= MAX_LOG_LINES {
                st.dropped_logs += 1;
                return;
            }
            if message.len() > MAX_LOG_LINE_BYTES {
                let mut cut = MAX_LOG_LINE_BYTES;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
                message.push_str("… (truncated)");
            }
            let level = match level.as_str() {
                "info" => LogLevel::Info,
                "warn" => LogLevel::Warn,
                "error" => LogLevel::Error,
                _ => LogLevel::Log,
            };
            st.logs.push(LogLine {
                at: host.now(),
                level,
                message,
            });
        })?,
    )?;

    let st = state.clone();
    obj.set(
        "end",
        Function::new(ctx.clone(), move |reason: String| {
            st.borrow_mut().ended.get_or_insert(reason);
        })?,
    )?;

    let st = state.clone();
    obj.set(
        "setTimer",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, id: u32, ms: f64| {
            let mut st = st.borrow_mut();
            if st.timers.len() >= MAX_TIMERS {
                return Err(rquickjs::Exception::throw_range(
                    &ctx,
                    &format!("setTimeout: a step may have at most {MAX_TIMERS} timers waiting"),
                ));
            }
            let ms = if ms.is_finite() {
                ms.clamp(0.0, 1e12)
            } else {
                0.0
            };
            let due = Instant::now() + std::time::Duration::from_secs_f64(ms / 1000.0);
            st.timers.push(std::cmp::Reverse((due, id)));
            Ok(())
        })?,
    )?;

    obj.set(
        "parseUrl",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, input: String, base: Option<String>| {
                let parsed = match base {
                    Some(b) => url::Url::parse(&b).and_then(|b| b.join(&input)),
                    None => url::Url::parse(&input),
                };
                let u = parsed.map_err(|e| {
                    rquickjs::Exception::throw_type(&ctx, &format!("Invalid URL '{input}': {e}"))
                })?;
                Ok::<_, rquickjs::Error>(url_json(&u))
            },
        )?,
    )?;

    obj.set(
        "randomBytes",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, n: usize| {
            if n > 65_536 {
                return Err(rquickjs::Exception::throw_range(
                    &ctx,
                    "crypto.getRandomValues: at most 65536 bytes at a time",
                ));
            }
            let mut bytes = vec![0u8; n];
            getrandom::fill(&mut bytes).map_err(|e| {
                rquickjs::Exception::throw_internal(&ctx, &format!("no randomness: {e}"))
            })?;
            Ok(bytes)
        })?,
    )?;

    obj.set(
        "typedArrays",
        Function::new(ctx.clone(), |ctx: Ctx<'js>| {
            // SAFETY: adds the standard typed-array globals to this live
            // context, once (the prelude guards against a second call).
            let rc = unsafe { rquickjs::qjs::JS_AddIntrinsicTypedArrays(ctx.as_raw().as_ptr()) };
            if rc < 0 {
                return Err(rquickjs::Exception::throw_internal(
                    &ctx,
                    "could not install typed arrays",
                ));
            }
            Ok(())
        })?,
    )?;

    ctx.globals().set("__flowstate", obj)
}

/// A parsed URL's parts, as the `URL` class of the prelude reads them.
fn url_json(u: &url::Url) -> String {
    let port = u.port().map(|p| p.to_string()).unwrap_or_default();
    let host = match u.host_str() {
        Some(h) if !port.is_empty() => format!("{h}:{port}"),
        Some(h) => h.to_string(),
        None => String::new(),
    };
    serde_json::json!({
        "href": u.as_str(),
        "origin": u.origin().ascii_serialization(),
        "protocol": format!("{}:", u.scheme()),
        "username": u.username(),
        "password": u.password().unwrap_or_default(),
        "host": host,
        "hostname": u.host_str().unwrap_or_default(),
        "port": port,
        "pathname": u.path(),
        "search": u.query().map(|q| format!("?{q}")).unwrap_or_default(),
        "hash": u.fragment().map(|f| format!("#{f}")).unwrap_or_default(),
    })
    .to_string()
}
