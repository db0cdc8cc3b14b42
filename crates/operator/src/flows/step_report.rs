//! What one call of a flow driver's `step` did, and how every flow turns the outcome of its
//! action into that report: the upgrade driver and the seal-migration driver share this, so a
//! snapshot still being taken, a stored snapshot and a failed action mean the same in both.

use jiff::Timestamp;
use std::fmt::Display;
use std::time::Duration;

use super::Snapshot;

/// What one call of a flow driver's `step` did ([`super::Driver::step`], and the seal
/// migration's driver with its own action and status types).
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport<A = super::Action, S = openbao_api::OpenBaoClusterStatus> {
    /// The action the flow chose (performed, or attempted when `error` is set).
    pub action: A,
    /// The status to persist.
    pub status: S,
    /// Why the action failed; the same step is tried again next time.
    pub error: Option<String>,
    /// When to call again; `None` when nothing is in progress.
    pub requeue_after: Option<Duration>,
}

/// After a failed action, the same step is tried again this much later.
pub(super) const RETRY_FAILED_STEP: Duration = Duration::from_secs(5);
/// How often a snapshot taken in the background is looked at.
const SNAPSHOT_POLL: Duration = Duration::from_secs(3);

impl<A, S> StepReport<A, S> {
    /// `action` was performed (or is still waiting): persist `status`, call again after `requeue_after`.
    pub fn performed(action: A, status: S, requeue_after: Option<Duration>) -> Self {
        Self {
            action,
            status,
            error: None,
            requeue_after,
        }
    }

    /// `action` failed with `error`: persist `status` (the failure recorded on the status the
    /// step started from); the same step runs again after [`RETRY_FAILED_STEP`].
    pub fn failed(action: A, status: S, error: String) -> Self {
        Self {
            action,
            status,
            error: Some(error),
            requeue_after: Some(RETRY_FAILED_STEP),
        }
    }
}

/// What kind of action a flow chose, which says when its driver is called again.
pub(super) enum ActionKind {
    /// Nothing is in progress: not again (until something changes).
    Finished,
    /// Only the status moved on: at once.
    Record,
    /// Waiting for the servers to get somewhere: in 2 s.
    Wait,
    /// Acted on a server or the platform: in 500 ms, to observe the effect.
    Acted,
}

impl ActionKind {
    fn requeue_after(&self) -> Option<Duration> {
        match self {
            ActionKind::Finished => None,
            ActionKind::Record => Some(Duration::ZERO),
            ActionKind::Wait => Some(Duration::from_secs(2)),
            ActionKind::Acted => Some(Duration::from_millis(500)),
        }
    }
}

/// An action a flow chose, as the shared outcome handling needs it.
pub(super) trait FlowAction {
    /// Short name for logs and error reasons.
    fn name(&self) -> &'static str;
    fn kind(&self) -> ActionKind;
}

/// The status a flow persists, as the shared outcome handling needs it.
pub(super) trait FlowStatus: Clone {
    type Action: FlowAction;
    /// The status the step started from, with `message` saying what is still happening.
    fn waiting(&self, message: String) -> Self;
    /// The status the flow decided on, now that the snapshot it took is stored at `handle`.
    fn snapshot_stored(self, handle: String) -> Self;
    /// The status the step started from, with the failure of `action` recorded.
    fn failure(&self, action: &Self::Action, message: &str, now: Timestamp) -> Self;
}

/// Turns the outcome of executing `action` into the report to persist. `started_from` is the
/// status the step began with; `decided` the one the flow chose if the action succeeds.
pub(super) fn report_outcome<S: FlowStatus>(
    flow: &str,
    cluster: &str,
    action: S::Action,
    started_from: &S,
    decided: S,
    outcome: Result<Option<Snapshot>, impl Display>,
    now: Timestamp,
) -> StepReport<S::Action, S> {
    match outcome {
        // Nothing moved on: the phase stays until the snapshot is stored.
        Ok(Some(Snapshot::Running(what))) => {
            StepReport::performed(action, started_from.waiting(what), Some(SNAPSHOT_POLL))
        }
        Ok(snapshot) => {
            let next = match snapshot {
                Some(Snapshot::Stored(handle)) => decided.snapshot_stored(handle),
                _ => decided,
            };
            let requeue_after = action.kind().requeue_after();
            StepReport::performed(action, next, requeue_after)
        }
        Err(err) => {
            let text = err.to_string();
            tracing::warn!(%cluster, action = action.name(), error = %text, "{flow} step failed");
            let status = started_from.failure(&action, &text, now);
            StepReport::failed(action, status, text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    enum Act {
        Wait,
        Snapshot,
    }

    impl FlowAction for Act {
        fn name(&self) -> &'static str {
            match self {
                Act::Wait => "Wait",
                Act::Snapshot => "Snapshot",
            }
        }

        fn kind(&self) -> ActionKind {
            match self {
                Act::Wait => ActionKind::Wait,
                Act::Snapshot => ActionKind::Acted,
            }
        }
    }

    /// A flow's status reduced to what the outcome handling touches.
    #[derive(Clone, Debug, Default, PartialEq)]
    struct St {
        phase: &'static str,
        message: Option<String>,
        snapshot: Option<String>,
        failures: Vec<String>,
    }

    impl FlowStatus for St {
        type Action = Act;

        fn waiting(&self, message: String) -> Self {
            Self {
                message: Some(message),
                ..self.clone()
            }
        }

        fn snapshot_stored(self, handle: String) -> Self {
            Self {
                snapshot: Some(handle),
                ..self
            }
        }

        fn failure(&self, action: &Act, message: &str, _now: Timestamp) -> Self {
            let mut failed = self.clone();
            failed.failures.push(format!("{}Failed: {message}", action.name()));
            failed
        }
    }

    fn started() -> St {
        St {
            phase: "before",
            ..Default::default()
        }
    }

    fn decided() -> St {
        St {
            phase: "after",
            ..Default::default()
        }
    }

    fn report(outcome: Result<Option<Snapshot>, &str>) -> StepReport<Act, St> {
        report_outcome(
            "test",
            "c",
            Act::Snapshot,
            &started(),
            decided(),
            outcome,
            Timestamp::UNIX_EPOCH,
        )
    }

    #[test]
    fn a_snapshot_still_running_keeps_the_phase_and_says_what_happens() {
        let r = report(Ok(Some(Snapshot::Running("job x runs".into()))));
        assert_eq!(r.status.phase, "before");
        assert_eq!(r.status.message.as_deref(), Some("job x runs"));
        assert_eq!((r.error, r.requeue_after), (None, Some(SNAPSHOT_POLL)));
    }

    #[test]
    fn a_stored_snapshot_is_kept_on_the_decided_status() {
        let r = report(Ok(Some(Snapshot::Stored("s3://b/k".into()))));
        assert_eq!(r.status.phase, "after");
        assert_eq!(r.status.snapshot.as_deref(), Some("s3://b/k"));
        assert_eq!(
            r.requeue_after,
            Some(Duration::from_millis(500)),
            "an action: its effect is observed soon"
        );
        let plain = report_outcome(
            "test",
            "c",
            Act::Wait,
            &started(),
            decided(),
            Ok::<_, &str>(None),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(plain.status, decided());
        assert_eq!(plain.requeue_after, Some(Duration::from_secs(2)), "a wait's");
    }

    #[test]
    fn a_failed_action_is_recorded_on_the_status_it_started_from() {
        let r = report(Err("HTTP 500"));
        assert_eq!(r.status.phase, "before");
        assert_eq!(r.status.failures, vec!["SnapshotFailed: HTTP 500".to_string()]);
        assert_eq!(r.error.as_deref(), Some("HTTP 500"));
        assert_eq!(r.requeue_after, Some(RETRY_FAILED_STEP));
    }
}
