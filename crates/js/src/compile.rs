//! Compiling a workflow's source to QuickJS bytecode, once per version, and
//! finding out what it defines. The source is compiled as a module with one
//! line appended that re-exports `Workflow` under a fixed name, so both
//! `export class Workflow` and a bare `class Workflow` load, and line
//! numbers in errors stay those of the author's file.

use flowstate_core::executor::{COMPLETE_HOOK, ERROR_HOOK, LoadError, START, WorkflowInfo};
use rquickjs::{Context, Ctx, Exception, Function, Module, Runtime, WriteOptions};

use crate::step::{PRELUDE_NAME, PRELUDE_SOURCE};

/// The name the appended line exports the class under.
pub const EXPORT_NAME: &str = "__flowstate_Workflow__";

/// Bytecode is tied to the exact QuickJS build, so it is made and consumed
/// in this process only, never accepted from outside.
#[derive(Debug)]
pub struct Compiled {
    pub module_name: String,
    pub bytecode: Vec<u8>,
    pub info: WorkflowInfo,
}

/// Memory for compiling and inspecting a workflow (not for running steps).
const COMPILE_MEMORY: usize = 256 * 1024 * 1024;

pub fn compile(name: &str, source: &str) -> Result<Compiled, LoadError> {
    let module_name = format!("{name}.js");
    let rt = Runtime::new().map_err(internal)?;
    rt.set_memory_limit(COMPILE_MEMORY);
    let ctx = Context::full(&rt).map_err(internal)?;
    ctx.with(|ctx| {
        let wrapped = format!("{source}\n;export {{ Workflow as {EXPORT_NAME} }};\n");
        let declared = match Module::declare(ctx.clone(), module_name.clone(), wrapped) {
            Ok(m) => m,
            Err(_) => {
                let _ = ctx.catch();
                // Either a syntax error (reported against the author's exact
                // text) or no `Workflow` for the appended export to name.
                if let Err(e) = Module::declare(ctx.clone(), module_name.clone(), source) {
                    return Err(load_error(&ctx, e, &module_name));
                }
                return Err(LoadError {
                    message: format!(
                        "{module_name} does not define a class named Workflow: write `export class Workflow {{ async start(data, headers, api) {{ ... }} }}`"
                    ),
                    line: None,
                    column: None,
                });
            }
        };
        // Line tables stay (stack traces name the author's lines); the
        // source text, which only Function.prototype.toString would show, goes.
        let options = WriteOptions { strip_source: true, ..WriteOptions::default() };
        let bytecode = declared.write(options).map_err(internal)?;
        let info = inspect(&ctx, &bytecode, &module_name)?;
        Ok(Compiled { module_name, bytecode, info })
    })
}

/// Evaluates the module once to list the class's methods.
fn inspect(ctx: &Ctx<'_>, bytecode: &[u8], module_name: &str) -> Result<WorkflowInfo, LoadError> {
    let prelude = Module::declare(ctx.clone(), PRELUDE_NAME, PRELUDE_SOURCE).map_err(internal)?;
    // Code at a module's top level runs here too; it may log, nothing more.
    ctx.eval::<(), _>(
        "globalThis.__flowstate = { log() {}, end() {}, \
           op() { throw new Error('run state is not available while the workflow loads'); }, \
           schedule() { throw new Error('steps cannot be scheduled while the workflow loads'); } };",
    )
    .map_err(internal)?;
    let (prelude, done) = prelude
        .eval()
        .map_err(|e| load_error(ctx, e, module_name))?;
    done.finish::<()>()
        .map_err(|e| load_error(ctx, e, module_name))?;
    // SAFETY: the bytecode was just produced by this same QuickJS build.
    let module = unsafe { Module::load(ctx.clone(), bytecode) }.map_err(internal)?;
    let (module, done) = module.eval().map_err(|e| load_error(ctx, e, module_name))?;
    done.finish::<()>()
        .map_err(|e| load_error(ctx, e, module_name))?;
    let class: rquickjs::Value = module.get(EXPORT_NAME).map_err(internal)?;
    let describe: Function = prelude.get("describeWorkflow").map_err(internal)?;
    let names: Option<String> = describe
        .call((class,))
        .map_err(|e| load_error(ctx, e, module_name))?;
    let Some(names) = names else {
        return Err(LoadError {
            message: format!(
                "{module_name}: `Workflow` is not a class; define `class Workflow {{ ... }}`"
            ),
            line: None,
            column: None,
        });
    };
    let names: Vec<String> = serde_json::from_str(&names).map_err(internal)?;
    if !names.iter().any(|n| n == START) {
        return Err(LoadError {
            message: format!(
                "{module_name}: class Workflow has no start method; every trigger runs `async start(data, headers, api)` first"
            ),
            line: None,
            column: None,
        });
    }
    Ok(WorkflowInfo {
        has_complete_hook: names.iter().any(|n| n == COMPLETE_HOOK),
        has_error_hook: names.iter().any(|n| n == ERROR_HOOK),
        actions: names
            .into_iter()
            .filter(|n| n != START && n != COMPLETE_HOOK && n != ERROR_HOOK)
            .collect(),
    })
}

/// Turns the pending JS exception into a message with line and column.
pub fn load_error(ctx: &Ctx<'_>, e: rquickjs::Error, file: &str) -> LoadError {
    if !matches!(e, rquickjs::Error::Exception) {
        return internal(e);
    }
    let value = ctx.catch();
    let (name, message, stack) = match Exception::from_value(value.clone()) {
        Ok(ex) => {
            let name: Option<String> = ex.get("name").ok();
            (
                name.unwrap_or_else(|| "Error".into()),
                ex.message().unwrap_or_default(),
                ex.stack().unwrap_or_default(),
            )
        }
        Err(_) => ("Error".into(), format!("{value:?}"), String::new()),
    };
    let (line, column) = position_in(&stack, file).unzip();
    let at = match (line, column) {
        (Some(l), Some(c)) => format!(" at {file}:{l}:{c}"),
        _ => String::new(),
    };
    LoadError {
        message: format!("{name}: {message}{at}"),
        line,
        column,
    }
}

/// Finds `file:line:col` in a QuickJS stack trace.
pub fn position_in(stack: &str, file: &str) -> Option<(u32, u32)> {
    let start = stack.find(file)? + file.len();
    let rest = stack[start..].strip_prefix(':')?;
    let mut parts = rest.splitn(3, |c: char| !c.is_ascii_digit());
    let line = parts.next()?.parse().ok()?;
    let column = parts.next()?.parse().ok()?;
    Some((line, column))
}

fn internal(e: impl std::fmt::Display) -> LoadError {
    LoadError {
        message: format!("internal error loading the workflow: {e}"),
        line: None,
        column: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_export_styles_load_and_methods_are_listed() {
        for src in [
            "export class Workflow { async start() {} async sendEmail() {} async onWorkflowComplete(api) {} }",
            "class Workflow { async start() {} async sendEmail() {} async onWorkflowComplete(api) {} }",
        ] {
            let c = compile("wf", src).unwrap();
            assert_eq!(c.info.actions, vec!["sendEmail"]);
            assert!(c.info.has_complete_hook && !c.info.has_error_hook);
        }
    }

    #[test]
    fn a_syntax_error_names_line_and_column() {
        let err = compile(
            "orders",
            "class Workflow {\n  async start() {\n    let x = ;\n  }\n}\n",
        )
        .unwrap_err();
        assert!(err.message.starts_with("SyntaxError"), "{}", err.message);
        assert_eq!(err.line, Some(3), "{}", err.message);
        assert!(err.message.contains("orders.js:3:"), "{}", err.message);
    }

    #[test]
    fn a_file_without_a_workflow_class_is_refused() {
        let err = compile("x", "class Flow { start() {} }").unwrap_err();
        assert!(
            err.message
                .contains("does not define a class named Workflow"),
            "{}",
            err.message
        );
        let err = compile("x", "class Workflow { other() {} }").unwrap_err();
        assert!(err.message.contains("no start method"), "{}", err.message);
        let err = compile("x", "const Workflow = 5;").unwrap_err();
        assert!(err.message.contains("not a class"), "{}", err.message);
    }

    #[test]
    fn stack_positions_parse() {
        assert_eq!(position_in("    at wf.js:12:7\n", "wf.js"), Some((12, 7)));
        assert_eq!(position_in("nothing here", "wf.js"), None);
    }
}
