//! One module per command.

pub mod bench;
mod bench_webhooks;
pub mod checkpoint;
pub mod client;
pub mod env;
pub mod run;
pub mod serve;
