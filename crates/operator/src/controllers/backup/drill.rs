//! Restore drills (`spec.backup.verify`): when to run one, and what a finished one means for
//! `status.backup.verification` and the `BackupVerified` condition. Pure, like [`super::decide`].
//!
//! A drill restores into a throw-away server inside its own Job and never touches the cluster,
//! so it takes no operation lock and may overlap a backup; only one drill per cluster runs at a
//! time. It always restores a backup the operator recorded as successful (`lastBackupName`):
//! without a schedule each new one right after it finished, with a schedule the newest one at
//! every window. A backup whose drill failed is not drilled again (the next backup is).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use openbao_api::conditions::{Desired, Status};
use openbao_api::{BACKUP_VERIFIED, BackupStatus, BackupVerify, VerificationStatus};
use std::time::Duration;

use super::decide::{CONFIG_RETRY, JOB_POLL, MAX_REQUEUE, next_after, parse_schedule};
use crate::controllers::jobs::{JobOutcome, RecordedJob, RunningJob, recorded_job};

/// Everything one drill decision needs.
pub struct Inputs<'a> {
    pub cluster: &'a str,
    /// `spec.backup.verify` (`None` also when `spec.backup` is unset).
    pub verify: Option<&'a BackupVerify>,
    /// `status.backup` as this reconcile leaves it (a backup that just finished is in it).
    pub backup: &'a BackupStatus,
    /// The Job named in `verification.runningJob`, if one is named.
    pub running: Option<RunningJob>,
    pub now: Timestamp,
}

/// A drill that just finished, for events.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub job: String,
    pub succeeded: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The new `status.backup.verification`.
    pub status: Option<VerificationStatus>,
    /// Create this drill Job for this backup key (after status is written).
    pub create: Option<(String, String)>,
    pub finished: Option<Finished>,
    /// `BackupVerified`; `None` while drills are off.
    pub condition: Option<Desired>,
    pub requeue: Option<Duration>,
}

pub fn decide(inputs: &Inputs) -> Decision {
    let now = inputs.now;
    let existing = inputs.backup.verification.clone();
    let mut v = existing.clone().unwrap_or_default();
    let enabled = inputs.verify.filter(|v| v.enabled);
    let mut decision = Decision {
        status: existing,
        create: None,
        finished: None,
        condition: None,
        requeue: None,
    };

    // A running drill is seen through to its end even if drills were switched off meanwhile.
    if let Some(job) = v.running_job.clone() {
        let since = v.running_since.as_ref().map(|t| t.0).unwrap_or(now);
        let wanted = enabled.is_some() && v.running_key.is_some();
        match recorded_job("drill", &job, inputs.running.clone(), since, now, wanted) {
            RecordedJob::Running => {
                decision.condition = enabled.map(|_| condition(&v));
                decision.requeue = Some(JOB_POLL);
                return decision;
            }
            RecordedJob::Create => {
                // Recorded, but the operator stopped before it created the Job.
                decision.condition = Some(condition(&v));
                decision.create = v.running_key.clone().map(|key| (job, key));
                decision.requeue = Some(JOB_POLL);
                return decision;
            }
            RecordedJob::Ended(outcome) => {
                decision.finished = Some(record(&mut v, &job, *outcome, now));
            }
        }
        decision.status = Some(v.clone());
    }

    let Some(verify) = enabled else {
        if v.next_scheduled_verification.take().is_some() {
            decision.status = Some(v);
        }
        return decision;
    };
    let newest = inputs.backup.last_backup_name.clone();
    let due = match &verify.schedule {
        None => {
            v.next_scheduled_verification = None;
            newest
                .as_ref()
                .filter(|k| v.last_verified_key.as_ref() != Some(*k))
                .cloned()
        }
        Some(schedule) => match parse_schedule(schedule) {
            Err(e) => {
                v.next_scheduled_verification = None;
                decision.status = Some(v);
                decision.condition = Some(Desired::new(BACKUP_VERIFIED, Status::False, "InvalidSchedule", e));
                decision.requeue = Some(CONFIG_RETRY);
                return decision;
            }
            Ok(cron) => {
                let next = match (
                    v.next_scheduled_verification.as_ref().map(|t| t.0),
                    next_after(&cron, now),
                ) {
                    (Some(stored), Some(by_schedule)) => Some(stored.min(by_schedule)),
                    (stored, by_schedule) => stored.or(by_schedule),
                };
                if next.is_some_and(|n| n <= now) {
                    // Every window up to now is served by this run (or skipped: no backup yet).
                    v.next_scheduled_verification = next_after(&cron, now).map(Time);
                    newest.clone()
                } else {
                    v.next_scheduled_verification = next.map(Time);
                    decision.requeue = Some(until(next, now));
                    None
                }
            }
        },
    };
    if let Some(key) = due {
        let name = openbao_api::names::verify_job(inputs.cluster, now);
        v.running_job = Some(name.clone());
        v.running_key = Some(key.clone());
        v.running_since = Some(Time(now));
        decision.create = Some((name, key));
        decision.requeue = Some(JOB_POLL);
    }
    decision.condition = Some(condition(&v));
    if Some(&v) != decision.status.as_ref() && v != VerificationStatus::default() {
        decision.status = Some(v);
    }
    decision
}

fn until(next: Option<Timestamp>, now: Timestamp) -> Duration {
    let Some(next) = next else { return MAX_REQUEUE };
    let secs = next.duration_since(now).as_secs_f64().max(0.0);
    Duration::from_secs_f64(secs + 0.5).min(MAX_REQUEUE)
}

/// `BackupVerified` from the last finished drill.
fn condition(v: &VerificationStatus) -> Desired {
    let new = |status, reason: &str, message: String| Desired::new(BACKUP_VERIFIED, status, reason, message);
    match v.result.as_deref() {
        Some("Succeeded") => new(
            Status::True,
            v.reason.as_deref().unwrap_or("Restored"),
            v.message.clone().unwrap_or_default(),
        ),
        Some(_) => new(
            Status::False,
            v.reason.as_deref().unwrap_or("DrillFailed"),
            v.message.clone().unwrap_or_default(),
        ),
        None => new(
            Status::Unknown,
            "NotVerifiedYet",
            "no restore drill has finished yet; one runs after the next successful backup (or at the verify schedule)"
                .into(),
        ),
    }
}

/// Records a finished drill in `v`.
fn record(v: &mut VerificationStatus, job: &str, outcome: JobOutcome, now: Timestamp) -> Finished {
    let asked = v.running_key.take();
    v.running_job = None;
    v.running_since = None;
    v.last_verification_time = Some(Time(now));
    let (succeeded, reason, message, key) = match outcome {
        JobOutcome::Succeeded { result } => {
            let key = result.as_ref().and_then(|r| r.key.clone()).or(asked);
            let policies = result
                .as_ref()
                .and_then(|r| r.policies.clone())
                .unwrap_or_default()
                .join(", ");
            let took = result
                .as_ref()
                .and_then(|r| r.restore_ms)
                .map(|ms| format!(" in {:.1}s", ms as f64 / 1000.0))
                .unwrap_or_default();
            let message = format!(
                "drill Job {job} restored {} into a throw-away OpenBao{took}; it unsealed with the cluster's seal key \
                 and the restored JWT auth issued the backup role's token (policies: {policies})",
                key.as_deref().unwrap_or("the backup")
            );
            (true, "Restored".to_string(), message, key)
        }
        JobOutcome::Failed {
            reason,
            message,
            result,
        } => {
            let key = result.as_ref().and_then(|r| r.key.clone()).or(asked);
            let message = format!(
                "drill Job {job} could not prove {} restores: {message}",
                key.as_deref().unwrap_or("the backup")
            );
            (false, reason, message, key)
        }
    };
    v.last_verified_key = key;
    v.result = Some(if succeeded { "Succeeded" } else { "Failed" }.to_string());
    v.reason = Some(reason.clone());
    v.message = Some(message.clone());
    Finished {
        job: job.to_string(),
        succeeded,
        reason,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::jobs::ExecutorResult;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn backed_up(key: &str) -> BackupStatus {
        BackupStatus {
            last_backup_name: Some(key.into()),
            last_backup_time: Some(Time(at("2026-11-24T10:00:00Z"))),
            ..Default::default()
        }
    }

    fn inputs<'a>(
        verify: Option<&'a BackupVerify>,
        backup: &'a BackupStatus,
        running: Option<RunningJob>,
    ) -> Inputs<'a> {
        Inputs {
            cluster: "c",
            verify,
            backup,
            running,
            now: at("2026-11-24T12:00:00Z"),
        }
    }

    fn on(schedule: Option<&str>) -> BackupVerify {
        BackupVerify {
            enabled: true,
            schedule: schedule.map(String::from),
        }
    }

    #[test]
    fn off_does_nothing_and_writes_nothing() {
        let st = backed_up("k1");
        let d = decide(&inputs(None, &st, None));
        assert_eq!((d.status, d.create, d.condition), (None, None, None));
        let off = BackupVerify::default();
        assert_eq!(decide(&inputs(Some(&off), &st, None)).create, None);
    }

    #[test]
    fn without_a_schedule_each_new_backup_is_drilled_once() {
        let verify = on(None);
        let st = backed_up("k1");
        let d = decide(&inputs(Some(&verify), &st, None));
        assert_eq!(d.create, Some(("c-verify-20261124-120000".into(), "k1".into())));
        let v = d.status.clone().unwrap();
        assert_eq!(v.running_key.as_deref(), Some("k1"));
        assert_eq!(d.condition.unwrap().reason, "NotVerifiedYet");

        // It finishes: recorded, and the same backup is not drilled again.
        let mut st = st;
        st.verification = Some(v);
        let result = ExecutorResult {
            operation: "verify-backup".into(),
            result: "Succeeded".into(),
            key: Some("k1".into()),
            restore_ms: Some(1200),
            policies: Some(vec!["default".into(), "openbao-operator-backup".into()]),
            ..Default::default()
        };
        let done = RunningJob::Finished(Box::new(JobOutcome::Succeeded { result: Some(result) }));
        let d = decide(&inputs(Some(&verify), &st, Some(done)));
        assert_eq!(d.create, None);
        let v = d.status.clone().unwrap();
        assert_eq!(v.last_verified_key.as_deref(), Some("k1"));
        assert_eq!(v.result.as_deref(), Some("Succeeded"));
        assert!(v.running_job.is_none() && v.running_key.is_none());
        let c = d.condition.unwrap();
        assert_eq!((c.status, c.reason.as_str()), (Status::True, "Restored"));
        assert!(c.message.contains("openbao-operator-backup"), "{}", c.message);
        assert!(d.finished.unwrap().succeeded);

        // A newer backup is drilled next.
        st.verification = Some(v);
        st.last_backup_name = Some("k2".into());
        let d = decide(&inputs(Some(&verify), &st, None));
        assert_eq!(d.create.map(|c| c.1), Some("k2".into()));
    }

    #[test]
    fn a_failed_drill_is_reported_and_not_retried_for_the_same_backup() {
        let verify = on(None);
        let mut st = backed_up("k1");
        st.verification = Some(VerificationStatus {
            running_job: Some("c-verify-1".into()),
            running_key: Some("k1".into()),
            running_since: Some(Time(at("2026-11-24T11:59:00Z"))),
            ..Default::default()
        });
        let failed = RunningJob::Finished(Box::new(JobOutcome::Failed {
            reason: "NotHealthyAfterRestore".into(),
            message: "still sealed".into(),
            result: None,
        }));
        let d = decide(&inputs(Some(&verify), &st, Some(failed)));
        assert_eq!(d.create, None);
        let v = d.status.clone().unwrap();
        assert_eq!(v.last_verified_key.as_deref(), Some("k1"));
        assert_eq!(v.reason.as_deref(), Some("NotHealthyAfterRestore"));
        let c = d.condition.unwrap();
        assert_eq!((c.status, c.reason.as_str()), (Status::False, "NotHealthyAfterRestore"));
        assert!(
            c.message.contains("k1") && c.message.contains("still sealed"),
            "{}",
            c.message
        );
        st.verification = Some(v);
        assert_eq!(decide(&inputs(Some(&verify), &st, None)).create, None);
    }

    #[test]
    fn a_running_drill_is_waited_for_and_a_lost_one_recreated_or_failed() {
        let verify = on(None);
        let mut st = backed_up("k2");
        st.verification = Some(VerificationStatus {
            running_job: Some("c-verify-1".into()),
            running_key: Some("k1".into()),
            running_since: Some(Time(at("2026-11-24T11:59:30Z"))),
            ..Default::default()
        });
        let d = decide(&inputs(Some(&verify), &st, Some(RunningJob::Active)));
        assert_eq!((d.create, d.requeue), (None, Some(JOB_POLL)));
        let d = decide(&inputs(Some(&verify), &st, Some(RunningJob::Missing)));
        assert_eq!(d.create, Some(("c-verify-1".into(), "k1".into())));
        // Long gone: a failure, and the newer backup is drilled.
        st.verification.as_mut().unwrap().running_since = Some(Time(at("2026-11-24T11:00:00Z")));
        let d = decide(&inputs(Some(&verify), &st, Some(RunningJob::Missing)));
        assert_eq!(d.finished.unwrap().reason, "JobMissing");
        assert_eq!(d.create.map(|c| c.1), Some("k2".into()));
    }

    #[test]
    fn a_schedule_drills_the_newest_backup_at_each_window() {
        let verify = on(Some("0 4 * * *"));
        let st = backed_up("k1");
        let d = decide(&inputs(Some(&verify), &st, None));
        assert_eq!(d.create, None);
        let v = d.status.clone().unwrap();
        assert_eq!(v.next_scheduled_verification.unwrap().0, at("2026-11-25T04:00:00Z"));
        assert_eq!(d.requeue, Some(MAX_REQUEUE));
        // The window came (missed ones collapse into one run).
        let mut st = st;
        st.verification = Some(VerificationStatus {
            next_scheduled_verification: Some(Time(at("2026-11-20T04:00:00Z"))),
            last_verified_key: Some("k1".into()),
            ..Default::default()
        });
        let d = decide(&inputs(Some(&verify), &st, None));
        assert_eq!(d.create.map(|c| c.1), Some("k1".into()));
        let v = d.status.unwrap();
        assert_eq!(v.next_scheduled_verification.unwrap().0, at("2026-11-25T04:00:00Z"));
    }
}
