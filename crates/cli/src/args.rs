//! The command line, in one place: commands as nouns and verbs, and the
//! engine's limit flags shared by every command that runs workflows.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use flowstate_core::delay::parse_flag_duration;
use flowstate_core::limits::{Limits, MIB};

#[derive(Parser, Debug)]
#[command(
    name = "flowstate",
    version,
    about = "A durable workflow engine for JavaScript workflows"
)]
pub struct Cli {
    /// Log what the engine does (or set FLOWSTATE_LOG, e.g. FLOWSTATE_LOG=debug).
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// Log lines as text or as JSON objects (for log collectors).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one workflow file to completion, locally, and print its timeline.
    Run(RunArgs),
    /// Serve webhooks and the management API, and run workflows durably.
    Serve(ServeArgs),
    /// Deploy a workflow file to a server (a new version; running runs keep theirs).
    Deploy(DeployArgs),
    /// Start a run of a deployed workflow on a server.
    Trigger(TriggerArgs),
    /// Look at and manage a server's runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Look at, set or clear a workflow's $checkpoint (or a step's this.$checkpoint).
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCommand,
    },
    /// Set, remove or list a workflow's variables and secrets (its `env`).
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Measure the engine on built-in scenarios.
    Bench(BenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum EnvCommand {
    /// Set a variable: NAME=VALUE (with --secret, sealed and never shown).
    Set {
        /// The deployed workflow's name.
        workflow: String,
        /// NAME=VALUE; a VALUE of `-` is read from stdin (for secrets).
        #[arg(value_name = "NAME=VALUE")]
        assignment: String,
        /// Store it as a secret: sealed at rest, never shown, redacted from logs.
        #[arg(long)]
        secret: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a variable.
    Unset {
        workflow: String,
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the variables (secrets by name only).
    List {
        workflow: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum CheckpointCommand {
    /// Print the checkpoint's value (or say it is not set).
    Get(CheckpointArgs),
    /// Replace the checkpoint with a JSON value (`-` reads it from stdin).
    Set {
        #[command(flatten)]
        target: CheckpointArgs,
        /// The new value, as JSON: e.g. '{"last_id": 42}' or 7.
        value: String,
    },
    /// Make the checkpoint undefined again.
    Clear(CheckpointArgs),
}

#[derive(Args, Debug)]
pub struct CheckpointArgs {
    /// The deployed workflow's name.
    pub workflow: String,
    /// A step method: its this.$checkpoint instead of the workflow's $checkpoint.
    #[arg(long, value_name = "METHOD")]
    pub step: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Where the server is, for the client commands.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The server's base URL.
    #[arg(
        long,
        env = "FLOWSTATE_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub server: String,
    /// The server's API token, if it requires one.
    #[arg(long, env = "FLOWSTATE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The workflow file.
    pub file: PathBuf,
    /// The workflow's name (default: the file name without .js).
    #[arg(long)]
    pub name: Option<String>,
    /// Require webhooks to be signed with this secret.
    #[arg(long, value_name = "SECRET")]
    pub webhook_secret: Option<String>,
    /// How webhooks are signed: shopify or hmac-sha256.
    #[arg(long, value_name = "SCHEME")]
    pub signature: Option<String>,
    /// For hmac-sha256: the header carrying the signature (default x-signature).
    #[arg(long, value_name = "HEADER")]
    pub signature_header: Option<String>,
    /// A header identifying each delivery; a redelivery starts no run.
    #[arg(long, value_name = "HEADER")]
    pub dedupe_header: Option<String>,
    /// Most runs active at once; the rest wait, queued, in arrival order.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u32>,
    /// Count --concurrency per value of this trigger-data path (e.g. customer.id).
    #[arg(long, value_name = "PATH", requires = "concurrency")]
    pub concurrency_key: Option<String>,
    /// Most runs started per --throttle-period; the rest wait, queued.
    #[arg(long, value_name = "N")]
    pub throttle: Option<u32>,
    /// The throttle's period (default 1m).
    #[arg(long, value_name = "DURATION", requires = "throttle")]
    pub throttle_period: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct TriggerArgs {
    /// The deployed workflow's name.
    pub workflow: String,
    /// A JSON file with the trigger's data.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// A trigger header, as name=value (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Wait for the run to finish and print its timeline; exit 0 only if it completed.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// Runs, newest first.
    List(RunsListArgs),
    /// A run's steps, attempts, logs, errors and (while it runs) its state.
    Show(RunArgsId),
    /// A run's log lines, oldest first.
    Logs(RunArgsId),
    /// Cancel an unfinished run.
    Cancel(RunArgsId),
}

#[derive(Args, Debug)]
pub struct RunsListArgs {
    #[arg(long)]
    pub workflow: Option<String>,
    /// queued, running, waiting, completed, failed, ended or cancelled.
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Only runs older than this one (for paging).
    #[arg(long, value_name = "RUN")]
    pub before: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct RunArgsId {
    /// The run, e.g. run_12.
    pub run: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `flowstate serve`. Every setting can also come from the environment
/// (`FLOWSTATE_<NAME>`) or a TOML file (`--config`); flags win over the
/// environment, the environment over the file, the file over defaults.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A TOML file of settings, keys named as the flags (e.g. `listen = "0.0.0.0:8080"`).
    #[arg(long, env = "FLOWSTATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The database file (created if missing).
    #[arg(
        long,
        env = "FLOWSTATE_DB",
        default_value = "flowstate.db",
        value_name = "PATH"
    )]
    pub db: String,
    /// PostgreSQL instead of the file (`postgres://user:pass@host/db`), so
    /// that many `serve` nodes can share one database.
    #[arg(
        long,
        env = "FLOWSTATE_DATABASE_URL",
        hide_env_values = true,
        conflicts_with = "db",
        value_name = "URL"
    )]
    pub database_url: Option<String>,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(
        long,
        env = "FLOWSTATE_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: std::net::SocketAddr,
    /// The key that seals workflow secrets at rest: 32 bytes as 64 hex
    /// digits or base64 (e.g. `openssl rand -hex 32`). Keep it safe: secrets
    /// cannot be read without it.
    #[arg(
        long,
        env = "FLOWSTATE_SECRET_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub secret_key: Option<String>,
    /// Read --secret-key from this file instead.
    #[arg(
        long,
        env = "FLOWSTATE_SECRET_KEY_FILE",
        value_name = "FILE",
        conflicts_with = "secret_key"
    )]
    pub secret_key_file: Option<PathBuf>,
    /// The base URL the outside reaches this server at, for the resume links
    /// of api.waitForEvent (default: http://<the listen address>).
    #[arg(long, env = "FLOWSTATE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Deploy every *.js in this directory at start, named after the file;
    /// settings from <name>.settings.json beside it, if present.
    #[arg(long, env = "FLOWSTATE_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// With --dir: redeploy a workflow when its file or settings change.
    #[arg(long, requires = "dir")]
    pub dev: bool,
    /// Require `Authorization: Bearer <token>` on /api/*.
    #[arg(long, env = "FLOWSTATE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Largest request body accepted, in KiB.
    #[arg(long, env = "FLOWSTATE_MAX_BODY", default_value_t = 5 * 1024, value_name = "KIB")]
    pub max_body: usize,
    /// Shortest repeat a schedule trigger may have (`every`).
    #[arg(long, env = "FLOWSTATE_MIN_SCHEDULE_INTERVAL", default_value = "10m", value_name = "DURATION", value_parser = parse_flag_duration)]
    pub min_schedule_interval: Duration,
    /// How long finished runs' history (steps, logs, errors) is kept.
    #[arg(long, env = "FLOWSTATE_RETENTION", default_value = "7d", value_name = "DURATION", value_parser = parse_flag_duration)]
    pub retention: Duration,
    /// How long a shutdown waits for running steps before leaving them to
    /// be retried on the next start.
    #[arg(long, env = "FLOWSTATE_SHUTDOWN_GRACE", default_value = "30s", value_name = "DURATION", value_parser = parse_flag_duration)]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The workflow file: JavaScript defining `class Workflow`.
    pub file: PathBuf,
    /// A JSON file with the trigger's data (what `start` receives).
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// A trigger header, as name=value (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// The database: a file path, or :memory:. An unfinished run of this
    /// workflow in the file is resumed rather than started anew.
    #[arg(long, default_value = ":memory:", value_name = "PATH")]
    pub db: String,
    /// Skip delays on a virtual clock: a workflow that waits 8 days finishes at once.
    #[arg(long)]
    pub fast_forward: bool,
    /// Print one JSON document (summary, final state, steps) instead of the timeline.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// How workflow code's `fetch` behaves.
#[derive(Args, Debug, Clone)]
pub struct FetchArgs {
    /// Refuse `fetch` to this network too (CIDR or address; repeatable).
    /// Link-local and cloud metadata addresses are always refused.
    #[arg(
        long,
        env = "FLOWSTATE_OUTBOUND_DENY",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub outbound_deny: Vec<String>,
    /// Longest one `fetch` may take (the step's wall limit may cut it shorter).
    #[arg(long, env = "FLOWSTATE_FETCH_TIMEOUT", value_name = "DURATION", value_parser = parse_flag_duration)]
    pub fetch_timeout: Option<Duration>,
}

impl FetchArgs {
    pub fn policy(&self) -> anyhow::Result<flowstate_js::FetchPolicy> {
        let mut policy = flowstate_js::FetchPolicy::default();
        policy
            .deny_networks(&self.outbound_deny)
            .map_err(anyhow::Error::msg)?;
        if let Some(t) = self.fetch_timeout {
            anyhow::ensure!(!t.is_zero(), "--fetch-timeout must be more than 0");
            policy.timeout = t;
        }
        Ok(policy)
    }
}

#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Shortest delay scheduleNextStep accepts (e.g. 10s; 0 for development).
    #[arg(long, env = "FLOWSTATE_MIN_DELAY", value_name = "DURATION", value_parser = parse_flag_duration)]
    pub min_delay: Option<Duration>,
    /// CPU time a step may use before it is stopped (e.g. 5m).
    #[arg(long, env = "FLOWSTATE_STEP_CPU_LIMIT", value_name = "DURATION", value_parser = parse_flag_duration)]
    pub step_cpu_limit: Option<Duration>,
    /// Memory one step's JavaScript may use, in MiB (e.g. 128).
    #[arg(long, env = "FLOWSTATE_STEP_MEMORY_LIMIT", value_name = "MIB")]
    pub step_memory_limit: Option<usize>,
    /// Wall time a step may take (e.g. 15m).
    #[arg(long, env = "FLOWSTATE_STEP_WALL_LIMIT", value_name = "DURATION", value_parser = parse_flag_duration)]
    pub step_wall_limit: Option<Duration>,
    /// Retries after a step's first attempt; 0 disables retries.
    #[arg(long, env = "FLOWSTATE_MAX_RETRIES", value_name = "N")]
    pub max_retries: Option<u32>,
}

impl LimitArgs {
    pub fn apply(&self, mut limits: Limits) -> anyhow::Result<Limits> {
        if let Some(d) = self.min_delay {
            limits.min_delay = d;
        }
        if let Some(d) = self.step_cpu_limit {
            anyhow::ensure!(!d.is_zero(), "--step-cpu-limit must be more than 0");
            limits.step_cpu = d;
        }
        if let Some(mib) = self.step_memory_limit {
            anyhow::ensure!(mib >= 1, "--step-memory-limit must be at least 1 (MiB)");
            limits.step_memory = mib * MIB;
        }
        if let Some(d) = self.step_wall_limit {
            anyhow::ensure!(!d.is_zero(), "--step-wall-limit must be more than 0");
            limits.step_wall = d;
        }
        if let Some(n) = self.max_retries {
            limits.max_retries = n;
        }
        anyhow::ensure!(
            limits.min_delay <= limits.max_delay,
            "--min-delay must not exceed the maximum delay of 400 days"
        );
        Ok(limits)
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Scenario {
    /// One run fanning out to N branches, each doing increment + push.
    Fanout,
    /// One run of N sequential zero-delay steps.
    Chain,
    /// Webhooks at a fixed offered rate against an in-process server:
    /// accepted per second and acknowledgement latency.
    Webhooks,
    /// fanout, chain and webhooks.
    All,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(value_enum, default_value = "all")]
    pub scenario: Scenario,
    /// Branches for fanout (default 10000).
    #[arg(long)]
    pub branches: Option<usize>,
    /// Steps for chain (default 1000).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Database file (default: a fresh file in a temporary directory).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// JS worker threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Skip syncing the WAL: survives a process crash, not a power loss.
    #[arg(long)]
    pub relaxed_durability: bool,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// webhooks: offered rate, requests per second (0: as fast as possible).
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// webhooks: how long to offer load, in seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// webhooks: concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// webhooks: measure the acceptance path alone (runs are recorded, and
    /// run after the measurement, not during it).
    #[arg(long)]
    pub accept_only: bool,
}

pub fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_ascii_lowercase(), value.to_string()))
        }
        _ => Err(format!(
            "'{s}' is not a header: write NAME=VALUE, e.g. x-shopify-topic=orders/create"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_equals_value_lowercased() {
        assert_eq!(
            parse_header("X-Shopify-Topic=orders/create"),
            Ok(("x-shopify-topic".into(), "orders/create".into()))
        );
        assert_eq!(parse_header("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_header("novalue").unwrap_err().contains("NAME=VALUE"));
        assert!(parse_header("=x").is_err());
    }

    #[test]
    fn limit_flags_override_defaults() {
        let args = LimitArgs {
            min_delay: Some(Duration::ZERO),
            step_cpu_limit: Some(Duration::from_secs(2)),
            step_memory_limit: Some(64),
            step_wall_limit: None,
            max_retries: Some(0),
        };
        let l = args.apply(Limits::default()).unwrap();
        assert_eq!(
            (l.min_delay, l.step_cpu, l.step_memory, l.max_retries),
            (Duration::ZERO, Duration::from_secs(2), 64 * MIB, 0)
        );
        let bad = LimitArgs {
            step_cpu_limit: Some(Duration::ZERO),
            ..args
        };
        assert!(bad.apply(Limits::default()).is_err());
    }
}
