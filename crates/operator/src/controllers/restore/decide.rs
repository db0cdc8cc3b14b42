//! The restore's next step, decided from what is stored (the restore's status, the cluster's
//! operation lock, the Job) and nothing else. Pure.
//!
//! Exactly once: the Job is created only in phase `Running` with reason [`STARTING`], which is
//! written (with the lock held) before the Job exists; once the Job was seen, the reason becomes
//! [`RESTORING`], and from then on a missing Job fails the restore instead of starting another.
//! The Job has a fixed name, so a create that was cut short before the status caught up finds
//! the same Job (`AlreadyExists`) rather than a second one.

use super::result::{JobState, Outcome, outcome};
use openbao_api::{OpenBaoRestoreStatus, Operation, OperationLock, RestorePhase};
use std::time::Duration;

/// `Running` before the Job is known to exist.
pub const STARTING: &str = "Starting";
/// `Running` once the Job exists.
pub const RESTORING: &str = "Restoring";
pub const WAITING_FOR_LOCK: &str = "WaitingForLock";

/// What the controller sees of the target cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterView<'a> {
    pub initialized: bool,
    pub lock: Option<&'a OperationLock>,
    /// The Job's NetworkPolicy lets it reach the store: an in-cluster Service (its own rule), or
    /// the cluster has `spec.network.egressRules` (merged into the Jobs' policies).
    pub store_reachable: bool,
}

/// The store is outside the cluster and nothing lets the Job reach it.
pub const STORE_EGRESS_MISSING: &str = "StoreEgressMissing";

pub struct Inputs<'a> {
    /// `openbaorestore/<name>`.
    pub holder: &'a str,
    pub cluster_name: &'a str,
    pub key: &'a str,
    pub job_name: &'a str,
    pub status: &'a OpenBaoRestoreStatus,
    /// `None`: no such cluster in the namespace.
    pub cluster: Option<ClusterView<'a>>,
    /// Why the source cannot be used (e.g. an SSRF-shaped endpoint), if it cannot.
    pub source_problem: Option<String>,
    pub job: &'a JobState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreStep {
    /// Stay `Pending` with this reason and message; look again after `retry`.
    Wait {
        reason: &'static str,
        message: String,
        retry: Duration,
    },
    /// Take the cluster's operation lock.
    TakeLock,
    /// `Pending` → `Running`/`Starting` (job name and start time recorded).
    MarkStarting,
    /// Create the restore Job.
    CreateJob,
    /// `Running`/`Starting` → `Running`/`Restoring`: the Job exists.
    MarkRestoring,
    /// The Job runs: wait for it (its events wake the controller; `retry` is a safety net).
    WatchJob { retry: Duration },
    /// Final status; the lock is released afterwards.
    Finish(Outcome),
    /// Release the lock this restore still holds.
    ReleaseLock,
    /// Nothing left to do.
    Done,
}

const WAIT_RETRY: Duration = Duration::from_secs(30);
const JOB_RETRY: Duration = Duration::from_secs(60);

pub fn next_step(i: &Inputs) -> RestoreStep {
    let holds_lock = i
        .cluster
        .as_ref()
        .and_then(|c| c.lock)
        .is_some_and(|l| l.holder == i.holder);
    match i.status.phase {
        RestorePhase::Completed | RestorePhase::Failed if holds_lock => RestoreStep::ReleaseLock,
        RestorePhase::Completed | RestorePhase::Failed => RestoreStep::Done,
        RestorePhase::Pending => pending(i, holds_lock),
        RestorePhase::Running => running(i, holds_lock),
    }
}

fn pending(i: &Inputs, holds_lock: bool) -> RestoreStep {
    if let Some(problem) = &i.source_problem {
        return fail(
            "InvalidSource",
            format!("spec.source.target: {problem}; nothing was restored"),
        );
    }
    if *i.job == JobState::Foreign {
        return RestoreStep::Wait {
            reason: "PreviousJobPresent",
            message: format!(
                "a Job named {} from an earlier OpenBaoRestore of the same name still exists; waiting until it \
                 is removed (delete it to go on)",
                i.job_name
            ),
            retry: Duration::from_secs(10),
        };
    }
    let Some(cluster) = &i.cluster else {
        return RestoreStep::Wait {
            reason: "ClusterNotFound",
            message: format!("waiting for OpenBaoCluster {} in this namespace", i.cluster_name),
            retry: WAIT_RETRY,
        };
    };
    if !cluster.initialized {
        return RestoreStep::Wait {
            reason: "ClusterNotInitialized",
            message: format!(
                "waiting for OpenBaoCluster {} to be initialized (a restore needs a running, initialized cluster)",
                i.cluster_name
            ),
            retry: WAIT_RETRY,
        };
    }
    if !cluster.store_reachable {
        return RestoreStep::Wait {
            reason: STORE_EGRESS_MISSING,
            message: format!(
                "spec.source.target.endpoint is not an in-cluster Service (http(s)://<service>.<namespace>.svc) and \
                 OpenBaoCluster {} has no spec.network.egressRules: its Jobs' NetworkPolicy would not let the \
                 restore reach the store; add an egress rule to it there",
                i.cluster_name
            ),
            retry: WAIT_RETRY,
        };
    }
    match cluster.lock {
        Some(lock) if lock.holder != i.holder => RestoreStep::Wait {
            reason: WAITING_FOR_LOCK,
            message: format!(
                "waiting for the cluster's operation lock: {} holds it for {} since {}; the restore starts \
                 when it is released",
                lock.holder,
                operation_name(lock.operation),
                lock.since.0
            ),
            retry: Duration::from_secs(10),
        },
        _ if !holds_lock => RestoreStep::TakeLock,
        _ => RestoreStep::MarkStarting,
    }
}

fn running(i: &Inputs, holds_lock: bool) -> RestoreStep {
    let starting = i.status.reason.as_deref() == Some(STARTING);
    match i.job {
        JobState::Missing if starting && holds_lock => RestoreStep::CreateJob,
        JobState::Missing if starting => fail(
            "LockLost",
            format!(
                "the cluster's operation lock was taken from this restore before its Job {} was created; \
                 nothing was restored; create a new OpenBaoRestore",
                i.job_name
            ),
        ),
        // A Job of another restore under this name appeared before ours was created: wait.
        JobState::Foreign if starting => RestoreStep::WatchJob {
            retry: Duration::from_secs(10),
        },
        JobState::Missing | JobState::Foreign => fail(
            "JobLost",
            format!(
                "the restore Job {} disappeared before it reported a result; it is not re-run, because a \
                 restore must never run twice; check the cluster, then create a new OpenBaoRestore",
                i.job_name
            ),
        ),
        JobState::Running if starting => RestoreStep::MarkRestoring,
        JobState::Running => RestoreStep::WatchJob { retry: JOB_RETRY },
        finished => match outcome(i.job_name, i.key, finished) {
            Some(o) => RestoreStep::Finish(o),
            None => RestoreStep::WatchJob { retry: JOB_RETRY },
        },
    }
}

fn fail(reason: &str, message: String) -> RestoreStep {
    RestoreStep::Finish(Outcome {
        completed: false,
        reason: reason.into(),
        message,
    })
}

fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Backup => "a backup",
        Operation::Restore => "a restore",
        Operation::Upgrade => "an upgrade",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::jobs::ExecutorResult;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const ME: &str = "openbaorestore/r1";

    fn lock(holder: &str, operation: Operation) -> OperationLock {
        OperationLock {
            operation,
            holder: holder.into(),
            since: Time(jiff::Timestamp::UNIX_EPOCH),
        }
    }

    fn status(phase: RestorePhase, reason: Option<&str>) -> OpenBaoRestoreStatus {
        OpenBaoRestoreStatus {
            phase,
            reason: reason.map(Into::into),
            ..Default::default()
        }
    }

    fn step(status: &OpenBaoRestoreStatus, lock: Option<&OperationLock>, job: &JobState) -> RestoreStep {
        next_step(&Inputs {
            holder: ME,
            cluster_name: "vault",
            key: "k.snap",
            job_name: "restore-r1",
            status,
            cluster: Some(ClusterView {
                store_reachable: true,
                initialized: true,
                lock,
            }),
            source_problem: None,
            job,
        })
    }

    #[test]
    fn a_pending_restore_takes_the_lock_then_marks_itself_starting() {
        let pending = status(RestorePhase::Pending, None);
        assert_eq!(step(&pending, None, &JobState::Missing), RestoreStep::TakeLock);
        let mine = lock(ME, Operation::Restore);
        assert_eq!(
            step(&pending, Some(&mine), &JobState::Missing),
            RestoreStep::MarkStarting
        );
    }

    #[test]
    fn a_lock_held_by_a_backup_or_upgrade_makes_it_wait_with_a_message() {
        let pending = status(RestorePhase::Pending, None);
        for (holder, op, words) in [
            ("openbaocluster/backup", Operation::Backup, "a backup"),
            ("openbaocluster/upgrade", Operation::Upgrade, "an upgrade"),
        ] {
            let held = lock(holder, op);
            let RestoreStep::Wait { reason, message, .. } = step(&pending, Some(&held), &JobState::Missing) else {
                panic!("must wait")
            };
            assert_eq!(reason, WAITING_FOR_LOCK);
            assert!(message.contains(holder) && message.contains(words), "{message}");
        }
    }

    #[test]
    fn the_job_is_created_only_while_starting_and_never_again() {
        let mine = lock(ME, Operation::Restore);
        let starting = status(RestorePhase::Running, Some(STARTING));
        assert_eq!(step(&starting, Some(&mine), &JobState::Missing), RestoreStep::CreateJob);
        assert_eq!(
            step(&starting, Some(&mine), &JobState::Running),
            RestoreStep::MarkRestoring
        );
        let restoring = status(RestorePhase::Running, Some(RESTORING));
        assert_eq!(
            step(&restoring, Some(&mine), &JobState::Running),
            RestoreStep::WatchJob { retry: JOB_RETRY }
        );
        // The Job vanished after it was seen: fail, never create another.
        let RestoreStep::Finish(o) = step(&restoring, Some(&mine), &JobState::Missing) else {
            panic!("must fail")
        };
        assert_eq!((o.completed, o.reason.as_str()), (false, "JobLost"));
        // Someone else's Job under this name is never taken for ours.
        let pending = status(RestorePhase::Pending, None);
        assert!(matches!(
            step(&pending, None, &JobState::Foreign),
            RestoreStep::Wait {
                reason: "PreviousJobPresent",
                ..
            }
        ));
        assert!(matches!(
            step(&starting, Some(&mine), &JobState::Foreign),
            RestoreStep::WatchJob { .. }
        ));
        // Lock taken away before the Job existed: fail without creating it.
        let RestoreStep::Finish(o) = step(&starting, None, &JobState::Missing) else {
            panic!("must fail")
        };
        assert_eq!(o.reason, "LockLost");
    }

    #[test]
    fn a_finished_job_finishes_the_restore_and_then_the_lock_is_released() {
        let mine = lock(ME, Operation::Restore);
        let restoring = status(RestorePhase::Running, Some(RESTORING));
        let failed = JobState::Failed {
            result: Some(ExecutorResult {
                operation: "restore".into(),
                result: "Failed".into(),
                reason: Some("SealMismatch".into()),
                message: Some("x".into()),
                ..Default::default()
            }),
            job_message: None,
        };
        let RestoreStep::Finish(o) = step(&restoring, Some(&mine), &failed) else {
            panic!("must finish")
        };
        assert_eq!(o.reason, "SealMismatch");
        let done = status(RestorePhase::Failed, Some("SealMismatch"));
        assert_eq!(step(&done, Some(&mine), &failed), RestoreStep::ReleaseLock);
        assert_eq!(step(&done, None, &failed), RestoreStep::Done);
        // Someone else's lock is never released by a finished restore.
        let other = lock("openbaocluster/backup", Operation::Backup);
        assert_eq!(step(&done, Some(&other), &failed), RestoreStep::Done);
    }

    #[test]
    fn a_bad_source_fails_and_a_missing_or_uninitialized_cluster_waits() {
        let pending = status(RestorePhase::Pending, None);
        let base = Inputs {
            holder: ME,
            cluster_name: "vault",
            key: "k",
            job_name: "restore-r1",
            status: &pending,
            cluster: None,
            source_problem: None,
            job: &JobState::Missing,
        };
        assert!(matches!(
            next_step(&base),
            RestoreStep::Wait {
                reason: "ClusterNotFound",
                ..
            }
        ));
        let uninitialized = Inputs {
            cluster: Some(ClusterView {
                store_reachable: true,
                initialized: false,
                lock: None,
            }),
            ..base
        };
        assert!(matches!(
            next_step(&uninitialized),
            RestoreStep::Wait {
                reason: "ClusterNotInitialized",
                ..
            }
        ));
        // A store the Job could not reach: wait for an egress rule, before taking the lock.
        let unreachable = Inputs {
            cluster: Some(ClusterView {
                store_reachable: false,
                initialized: true,
                lock: None,
            }),
            source_problem: None,
            ..uninitialized
        };
        let RestoreStep::Wait { reason, message, .. } = next_step(&unreachable) else {
            panic!("must wait")
        };
        assert_eq!(reason, STORE_EGRESS_MISSING);
        assert!(message.contains("spec.network.egressRules"), "{message}");
        let bad = Inputs {
            source_problem: Some("loopback hosts are not allowed".into()),
            ..unreachable
        };
        assert!(matches!(next_step(&bad), RestoreStep::Finish(o) if o.reason == "InvalidSource"));
    }
}
