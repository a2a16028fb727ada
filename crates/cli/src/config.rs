//! Configuration in one place: defaults, then a TOML file (`serve
//! --config`), then `FLOWSTATE_*` environment variables, then flags. The
//! file's keys are the flags' names; a key whose setting was not given by
//! a flag or the environment is appended as that flag and the command line
//! parsed again, so file values pass the same parsers and errors as flags.

use std::path::Path;

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use crate::args::Cli;

/// Parses the command line, folding in `serve --config FILE` if given.
pub fn parse() -> anyhow::Result<Cli> {
    let argv: Vec<String> = std::env::args().collect();
    let matches = Cli::command().get_matches_from(&argv);
    let Some(("serve", serve)) = matches.subcommand() else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let Some(path) = serve.get_one::<std::path::PathBuf>("config") else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let extra = file_flags(path, serve)?;
    let mut full = argv;
    full.extend(extra);
    let matches = Cli::command().try_get_matches_from(&full).map_err(|e| {
        anyhow::anyhow!(
            "{}: {}",
            path.display(),
            e.to_string().trim_start_matches("error: ").trim()
        )
    })?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// The file's settings as flags, for those not set by a flag or the environment.
fn file_flags(path: &Path, given: &ArgMatches) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!("the config file {} is not valid TOML: {e}", path.display())
    })?;
    let known: Vec<String> = Cli::command()
        .find_subcommand("serve")
        .expect("serve is a command")
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|name| name != "config" && name != "help")
        .collect();
    let mut flags = Vec::new();
    for (key, value) in table {
        let name = key.replace('_', "-");
        if !known.contains(&name) {
            bail!(
                "the config file {} has an unknown setting '{key}'; known settings: {}",
                path.display(),
                known.join(", ")
            );
        }
        let id = name.replace('-', "_");
        if matches!(
            given.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "the config file {} sets '{key}' to a {}; write a string or a number",
                path.display(),
                other.type_str()
            ),
        };
        flags.push(format!("--{name}={value}"));
    }
    Ok(flags)
}
