//! One module per command.

pub mod bench;
pub mod run;
pub mod serve;
