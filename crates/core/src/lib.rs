//! The vocabulary every other flowstate crate speaks: typed ids, the
//! [`Clock`](time::Clock), delay parsing, named limits, run and step
//! statuses, the pure lifecycle decisions (what a step's outcome means for
//! its run), and the [`StepExecutor`](executor::StepExecutor) seam between
//! the engine and a sandbox. Nothing here does I/O, so all of it is tested
//! with plain unit tests.

pub mod checkpoint;
pub mod delay;
pub mod executor;
pub mod ids;
pub mod json;
pub mod lifecycle;
pub mod limits;
pub mod secrets;
pub mod state;
pub mod status;
pub mod time;

pub use ids::{RunId, StepId, VersionId};
pub use time::{Clock, Timestamp, VirtualClock, WallClock};
