//! The `flowstate` binary: parses the command line and hands each command
//! to its module under `commands/`. Errors meet `anyhow` here, at the edge.

mod args;
mod commands;
mod config;
mod render;

use std::process::ExitCode;

use args::Command;

fn main() -> ExitCode {
    let cli = match config::parse() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_tracing(cli.verbose, cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(a) => commands::run::run(a).await,
            Command::Serve(a) => commands::serve::run(a).await,
            Command::Deploy(a) => commands::client::deploy(a),
            Command::Trigger(a) => commands::client::trigger(a),
            Command::Runs { command } => commands::client::runs(command),
            Command::Checkpoint { command } => commands::checkpoint::run(command),
            Command::Env { command } => commands::env::run(command),
            Command::Bench(a) => commands::bench::run(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(verbose: bool, format: args::LogFormat) {
    let default = if verbose { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOWSTATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        args::LogFormat::Text => builder.init(),
        args::LogFormat::Json => builder.json().init(),
    }
}
