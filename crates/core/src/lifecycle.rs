//! What a step's outcome means for its run: a pure function of data, so the
//! rules of DESIGN.md 1.5 are tested without a database. The store calls
//! [`decide`] inside the transaction that records the outcome, which makes
//! the decision and its effects one atomic transition.
//!
//! `pending` counts a run's unfinished steps, hooks included; a run is
//! finalised (status fixed, state deleted) when it reaches zero.

use crate::status::{RunStatus, StepKind};

/// The run as the committing transaction sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunView {
    pub status: RunStatus,
    /// Unfinished steps, counting the one being committed.
    pub pending: i64,
    pub has_complete_hook: bool,
    pub has_error_hook: bool,
}

/// How a step attempt ended, as far as its run is concerned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// Finished and scheduled `children` new steps.
    Succeeded { children: i64 },
    /// Threw or hit a limit with no retries left (for a hook: threw at all).
    FailedForGood,
    /// Called `api.end` / `$end`.
    Ended,
}

/// The changes to make to the run, in the same transaction.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Transition {
    /// The run's unfinished-step count after this commit.
    pub pending: i64,
    /// A new status for the run, if it changes.
    pub status: Option<RunStatus>,
    /// A hook step to schedule now.
    pub schedule_hook: Option<StepKind>,
    /// Cancel the run's other pending and running steps.
    pub cancel_others: bool,
    /// The run is over: stamp it finished and delete its state.
    pub finalize: bool,
}

pub fn decide(run: RunView, kind: StepKind, outcome: Outcome) -> Transition {
    let mut t = Transition {
        pending: run.pending - 1,
        ..Transition::default()
    };
    match outcome {
        Outcome::Ended => {
            t.status = Some(RunStatus::Ended);
            t.cancel_others = true;
            t.pending = 0;
            t.finalize = true;
            return t;
        }
        Outcome::Succeeded { children } => t.pending += children,
        // A hook that throws is logged and changes no status.
        Outcome::FailedForGood if kind.is_hook() => {}
        Outcome::FailedForGood => {
            if run.status != RunStatus::Failed {
                // The first branch to fail for good fails the run, once.
                t.status = Some(RunStatus::Failed);
                if run.has_error_hook {
                    t.schedule_hook = Some(StepKind::ErrorHook);
                    t.pending += 1;
                }
            }
        }
    }
    if t.pending > 0 {
        return t;
    }
    let failed = run.status == RunStatus::Failed || t.status == Some(RunStatus::Failed);
    if !failed && kind == StepKind::Action && run.has_complete_hook {
        // Every branch succeeded: onWorkflowComplete runs, exactly once.
        t.schedule_hook = Some(StepKind::CompleteHook);
        t.pending = 1;
        return t;
    }
    if !failed {
        t.status = Some(RunStatus::Completed);
    }
    t.finalize = true;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunStatus, pending: i64) -> RunView {
        RunView {
            status,
            pending,
            has_complete_hook: true,
            has_error_hook: true,
        }
    }

    #[test]
    fn a_step_that_fans_out_keeps_the_run_open() {
        let t = decide(
            run(RunStatus::Running, 1),
            StepKind::Action,
            Outcome::Succeeded { children: 3 },
        );
        assert_eq!(
            t,
            Transition {
                pending: 3,
                ..Default::default()
            }
        );
    }

    #[test]
    fn the_last_branch_schedules_the_complete_hook_then_the_hook_completes_the_run() {
        let t = decide(
            run(RunStatus::Running, 1),
            StepKind::Action,
            Outcome::Succeeded { children: 0 },
        );
        assert_eq!(t.schedule_hook, Some(StepKind::CompleteHook));
        assert_eq!((t.pending, t.finalize, t.status), (1, false, None));
        let t = decide(
            run(RunStatus::Running, 1),
            StepKind::CompleteHook,
            Outcome::Succeeded { children: 0 },
        );
        assert_eq!(
            (t.pending, t.finalize, t.status),
            (0, true, Some(RunStatus::Completed))
        );
    }

    #[test]
    fn without_a_complete_hook_the_last_branch_completes_the_run() {
        let view = RunView {
            has_complete_hook: false,
            ..run(RunStatus::Running, 1)
        };
        let t = decide(view, StepKind::Action, Outcome::Succeeded { children: 0 });
        assert_eq!(
            (t.finalize, t.status, t.schedule_hook),
            (true, Some(RunStatus::Completed), None)
        );
    }

    #[test]
    fn the_first_failure_fails_the_run_and_calls_the_error_hook_once() {
        let t = decide(
            run(RunStatus::Running, 5),
            StepKind::Action,
            Outcome::FailedForGood,
        );
        assert_eq!(t.status, Some(RunStatus::Failed));
        assert_eq!(t.schedule_hook, Some(StepKind::ErrorHook));
        assert_eq!(t.pending, 5, "one branch gone, one hook added");
        assert!(!t.cancel_others, "other branches go on to their end");
        // A second failure changes nothing more.
        let t = decide(
            run(RunStatus::Failed, 5),
            StepKind::Action,
            Outcome::FailedForGood,
        );
        assert_eq!(
            t,
            Transition {
                pending: 4,
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_failed_run_finalizes_without_the_complete_hook() {
        let t = decide(
            run(RunStatus::Failed, 1),
            StepKind::Action,
            Outcome::Succeeded { children: 0 },
        );
        assert_eq!((t.finalize, t.status, t.schedule_hook), (true, None, None));
        let t = decide(
            run(RunStatus::Failed, 1),
            StepKind::ErrorHook,
            Outcome::Succeeded { children: 0 },
        );
        assert_eq!((t.finalize, t.status), (true, None));
    }

    #[test]
    fn a_failure_without_an_error_hook_and_no_siblings_finalizes_at_once() {
        let view = RunView {
            has_error_hook: false,
            ..run(RunStatus::Running, 1)
        };
        let t = decide(view, StepKind::Action, Outcome::FailedForGood);
        assert_eq!(
            (t.finalize, t.status, t.pending),
            (true, Some(RunStatus::Failed), 0)
        );
    }

    #[test]
    fn a_throwing_hook_changes_no_status() {
        let t = decide(
            run(RunStatus::Running, 1),
            StepKind::CompleteHook,
            Outcome::FailedForGood,
        );
        assert_eq!((t.finalize, t.status), (true, Some(RunStatus::Completed)));
        let t = decide(
            run(RunStatus::Failed, 2),
            StepKind::ErrorHook,
            Outcome::FailedForGood,
        );
        assert_eq!(
            t,
            Transition {
                pending: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn end_cancels_everything_and_finalizes() {
        let t = decide(run(RunStatus::Running, 7), StepKind::Action, Outcome::Ended);
        assert_eq!(t.status, Some(RunStatus::Ended));
        assert!(t.cancel_others && t.finalize);
        assert_eq!(t.pending, 0);
    }
}
