//! What the backup controller does next, as a pure function of the cluster, its backup status,
//! what was observed (the running Job, the credentials Secret) and the time.
//!
//! One backup at a time per cluster: a backup starts only while no backup Job runs and no other
//! operation holds `status.operationLock`, and it takes the lock in the same status write that
//! records the Job, before the Job exists. Windows missed while a backup could not start (the
//! operator was down, the cluster was upgrading) collapse into one run; the next window is
//! computed from the time the backup starts.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use openbao_api::conditions::{BACKUP_CONFIGURATION_READY, Desired, Status};
use openbao_api::{
    BACKUP_LOCK_HOLDER, BackupStatus, OpenBaoClusterSpec, OpenBaoClusterStatus, Operation, OperationLock,
};
use std::time::Duration;

use crate::controllers::jobs::{ExecutorResult, JobOutcome, RecordedJob, RunningJob, recorded_job};
use crate::flows::upgrade::{self, UpgradePlan};

/// How often a running Job is looked at without a watch event (its completion also wakes us).
pub const JOB_POLL: Duration = Duration::from_secs(30);
/// How long to wait before trying a blocked backup again.
pub const BLOCKED_RETRY: Duration = Duration::from_secs(30);
/// How soon to look again at a configuration problem (a Secret can appear any time).
pub const CONFIG_RETRY: Duration = Duration::from_secs(60);
/// Longest requeue, so a schedule far away is still re-checked now and then.
pub const MAX_REQUEUE: Duration = Duration::from_secs(3600);

/// What the reconcile observed about the store configuration (the credentials Secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialsCheck {
    Present,
    SecretMissing,
    KeysMissing(Vec<&'static str>),
}

/// Everything one decision needs.
pub struct Inputs<'a> {
    pub cluster: &'a str,
    pub spec: &'a OpenBaoClusterSpec,
    pub status: &'a OpenBaoClusterStatus,
    /// Value of the `openbao.org/trigger-backup` annotation.
    pub trigger: Option<&'a str>,
    pub credentials: CredentialsCheck,
    /// The Job named in `status.backup.runningJob`, if one is named.
    pub running: Option<RunningJob>,
    pub now: Timestamp,
}

/// Why a backup was started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    Scheduled,
    Annotation,
    Request,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobAction {
    None,
    /// Create the Job named in the new `status.backup.runningJob` (after status is written).
    Create {
        name: String,
        why: Why,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockChange {
    Keep,
    Acquire,
    Release,
}

/// A backup that just finished, for events and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub job: String,
    pub succeeded: bool,
    pub reason: String,
    pub message: String,
    pub result: Option<ExecutorResult>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The new `status.backup` (`None`: leave it out).
    pub backup: Option<BackupStatus>,
    pub lock: LockChange,
    pub job: JobAction,
    /// `BackupConfigurationReady`; `None` when backups are not configured.
    pub condition: Option<Desired>,
    pub finished: Option<Finished>,
    /// Set when a wanted backup waits for something else; the message says what.
    pub blocked: Option<String>,
    /// `None`: nothing to wait for but a change of the object.
    pub requeue: Option<Duration>,
}

/// Parses a 5-field cron schedule (UTC).
pub fn parse_schedule(schedule: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(schedule.trim())
        .map_err(|e| format!("spec.backup.schedule {schedule:?} is not a valid 5-field cron expression: {e}"))
}

/// The first scheduled time strictly after `after`.
pub fn next_after(cron: &Cron, after: Timestamp) -> Option<Timestamp> {
    let zoned = after.to_zoned(jiff::tz::TimeZone::UTC);
    cron.find_next_occurrence(&zoned, false).ok().map(|z| z.timestamp())
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn holds_lock(status: &OpenBaoClusterStatus) -> bool {
    status
        .operation_lock
        .as_ref()
        .is_some_and(|l| l.operation == Operation::Backup && l.holder == BACKUP_LOCK_HOLDER)
}

/// The lock for a backup starting now.
pub fn backup_lock(now: Timestamp) -> OperationLock {
    OperationLock {
        operation: Operation::Backup,
        holder: BACKUP_LOCK_HOLDER.to_string(),
        since: time(now),
    }
}

pub fn decide(inputs: &Inputs) -> Decision {
    let now = inputs.now;
    let mut st = inputs.status.backup.clone().unwrap_or_default();
    let we_hold_lock = holds_lock(inputs.status);
    let mut decision = Decision {
        backup: None,
        lock: LockChange::Keep,
        job: JobAction::None,
        condition: None,
        finished: None,
        blocked: None,
        requeue: None,
    };

    // A running Job is seen through to its end even if backups were switched off meanwhile.
    if let Some(job) = st.running_job.clone() {
        let since = st.running_since.as_ref().map(|t| t.0).unwrap_or(now);
        let wanted = inputs.spec.backup.is_some();
        match recorded_job("backup", &job, inputs.running.clone(), since, now, wanted) {
            RecordedJob::Running => {
                decision.condition = inputs.spec.backup.as_ref().map(|_| config_condition(inputs, &st));
                decision.backup = Some(st);
                decision.requeue = Some(JOB_POLL);
                return decision;
            }
            RecordedJob::Create => {
                decision.condition = Some(config_condition(inputs, &st));
                decision.backup = Some(st);
                decision.job = JobAction::Create {
                    name: job,
                    why: Why::Scheduled,
                };
                decision.requeue = Some(JOB_POLL);
                return decision;
            }
            RecordedJob::Ended(outcome) => {
                decision.finished = Some(record(&mut st, &job, *outcome, now));
            }
        }
        if we_hold_lock {
            decision.lock = LockChange::Release;
        }
    } else if we_hold_lock {
        // Held without a running Job: left over from an interrupted start.
        decision.lock = LockChange::Release;
    }

    let Some(backup) = inputs.spec.backup.as_ref() else {
        if inputs.status.backup.is_some() {
            st.next_scheduled_backup = None;
            decision.backup = Some(st);
        }
        return decision;
    };
    // From the status this reconcile writes: a Job that just failed is in `st`, not yet in
    // `inputs.status`, and one status write carries both (the condition never lags the result).
    let condition = config_condition(inputs, &st);
    let config_ok = condition.status == Status::True || !is_config_problem(&condition.reason);
    decision.condition = Some(condition);
    let cron = match parse_schedule(&backup.schedule) {
        Ok(c) if config_ok => c,
        _ => {
            st.next_scheduled_backup = None;
            decision.backup = Some(st);
            decision.requeue = Some(CONFIG_RETRY);
            return decision;
        }
    };
    // The stored window stays (it may be due), unless the schedule now has an earlier one: a
    // changed schedule takes effect without waiting for the old schedule's next window.
    let next = match (st.next_scheduled_backup.as_ref().map(|t| t.0), next_after(&cron, now)) {
        (Some(stored), Some(by_schedule)) => Some(stored.min(by_schedule)),
        (stored, by_schedule) => stored.or(by_schedule),
    };
    st.next_scheduled_backup = next.map(time);

    let annotation = inputs
        .trigger
        .filter(|t| !t.is_empty() && st.acknowledged_trigger.as_deref() != Some(*t));
    let request = backup
        .requests
        .backup
        .as_deref()
        .filter(|t| st.acknowledged_request.as_deref() != Some(*t));
    let scheduled_due = next.is_some_and(|n| n <= now);
    let why = if annotation.is_some() {
        Some(Why::Annotation)
    } else if request.is_some() {
        Some(Why::Request)
    } else if scheduled_due {
        Some(Why::Scheduled)
    } else {
        None
    };
    let Some(why) = why else {
        decision.requeue = Some(until(next, now));
        decision.backup = Some(st);
        return decision;
    };

    if let Some(reason) = blocker(inputs, decision.lock == LockChange::Release) {
        decision.blocked = Some(reason);
        decision.backup = Some(st);
        decision.requeue = Some(BLOCKED_RETRY);
        return decision;
    }

    let name = openbao_api::names::backup_job(inputs.cluster, now);
    st.running_job = Some(name.clone());
    st.running_since = Some(time(now));
    // Every pending request is served by the run that starts now.
    if let Some(a) = annotation {
        st.acknowledged_trigger = Some(a.to_string());
    }
    if let Some(r) = request {
        st.acknowledged_request = Some(r.to_string());
    }
    if scheduled_due || st.next_scheduled_backup.is_none() {
        // Every window up to now is served by this run.
        st.next_scheduled_backup = next_after(&cron, now).map(time);
    }
    decision.backup = Some(st);
    decision.lock = LockChange::Acquire;
    decision.job = JobAction::Create { name, why };
    decision.requeue = Some(JOB_POLL);
    decision
}

fn until(next: Option<Timestamp>, now: Timestamp) -> Duration {
    let Some(next) = next else { return MAX_REQUEUE };
    let secs = next.duration_since(now).as_secs_f64().max(0.0);
    // Half a second late rather than early: a wake-up before the window would only requeue.
    Duration::from_secs_f64(secs + 0.5).min(MAX_REQUEUE)
}

/// Why a wanted backup cannot start now; `releasing` says our own stale lock goes in this write.
fn blocker(inputs: &Inputs, releasing: bool) -> Option<String> {
    let status = inputs.status;
    if !status.initialized {
        return Some("the cluster has not initialized yet".into());
    }
    if inputs.spec.paused {
        return Some("spec.paused is true".into());
    }
    if upgrade::plan(inputs.spec, status) == UpgradePlan::Advance {
        return Some("an upgrade is in progress or pending".into());
    }
    match &status.operation_lock {
        Some(l) if !(releasing || (l.operation == Operation::Backup && l.holder == BACKUP_LOCK_HOLDER)) => {
            Some(format!(
                "the cluster's operation lock is held by {} ({:?}) since {}",
                l.holder, l.operation, l.since.0
            ))
        }
        _ => None,
    }
}

fn is_config_problem(reason: &str) -> bool {
    matches!(
        reason,
        "InvalidSchedule" | "InvalidEndpoint" | "CredentialsSecretMissing" | "CredentialsKeyMissing"
    )
}

/// `BackupConfigurationReady`: configuration problems first, then how the last backup went
/// (`st`: the backup status as this reconcile leaves it).
fn config_condition(inputs: &Inputs, st: &BackupStatus) -> Desired {
    let new = |status, reason: &str, message: String| Desired::new(BACKUP_CONFIGURATION_READY, status, reason, message);
    let Some(backup) = inputs.spec.backup.as_ref() else {
        return new(Status::Unknown, "NotConfigured", "spec.backup is not set".into());
    };
    if let Err(e) = parse_schedule(&backup.schedule) {
        return new(Status::False, "InvalidSchedule", e);
    }
    if let Some(problem) = openbao_api::endpoint_problem(&backup.target.endpoint) {
        return new(
            Status::False,
            "InvalidEndpoint",
            format!("spec.backup.target.endpoint {:?}: {problem}", backup.target.endpoint),
        );
    }
    let secret = &backup.target.credentials_secret_ref.name;
    match &inputs.credentials {
        CredentialsCheck::SecretMissing => {
            return new(
                Status::False,
                "CredentialsSecretMissing",
                format!(
                    "Secret {secret} (spec.backup.target.credentialsSecretRef) does not exist in the cluster's \
                     namespace; create it with keys accessKeyId and secretAccessKey (and caCert for a private CA)"
                ),
            );
        }
        CredentialsCheck::KeysMissing(keys) => {
            return new(
                Status::False,
                "CredentialsKeyMissing",
                format!("Secret {secret} lacks the keys {}", keys.join(", ")),
            );
        }
        CredentialsCheck::Present => {}
    }
    if st.consecutive_failures > 0 {
        let raw = st.last_failure_reason.clone().unwrap_or_else(|| "BackupFailed".into());
        let (reason, hint) = failure_reason(&raw);
        return new(
            Status::False,
            reason,
            format!(
                "the last {} backup(s) failed ({raw}): {}{hint}",
                st.consecutive_failures,
                st.last_failure_message.clone().unwrap_or_default()
            ),
        );
    }
    let next = st
        .next_scheduled_backup
        .as_ref()
        .map(|t| format!("; next scheduled backup at {}", t.0))
        .unwrap_or_default();
    let last = match (&st.last_backup_name, &st.last_backup_time) {
        (Some(key), Some(at)) => format!("; last backup {key} at {}", at.0),
        _ => String::new(),
    };
    new(
        Status::True,
        "Ready",
        format!(
            "schedule {:?} to bucket {}{next}{last}",
            backup.schedule, backup.target.bucket
        ),
    )
}

/// The condition reason a person acts on for an executor failure reason, and a hint.
pub fn failure_reason(executor_reason: &str) -> (&'static str, &'static str) {
    match executor_reason {
        "CredentialsRejected" => (
            "AuthenticationFailed",
            " — the store rejected accessKeyId/secretAccessKey; fix the credentials Secret",
        ),
        "BucketMissing" => (
            "BucketNotFound",
            " — create the bucket or fix spec.backup.target.bucket",
        ),
        "Unreachable" => (
            "BucketUnreachable",
            " — check spec.backup.target.endpoint, DNS, network policies and the store's TLS (caCert)",
        ),
        "OpenBaoAuthFailed" => (
            "OpenBaoAuthenticationFailed",
            " — the backup Job's JWT login was refused; check spec.backup.jwtAuthRole and the JWT auth mount",
        ),
        "LeaderNotFound" | "OpenBaoUnreachable" => ("OpenBaoUnavailable", " — no active OpenBao node answered"),
        "SnapshotFailed" => ("SnapshotFailed", ""),
        "VerificationFailed" => ("VerificationFailed", " — the stored object did not match what was sent"),
        "InvalidConfig" => ("InvalidConfiguration", ""),
        "JobMissing" => ("JobMissing", " — the Job was deleted before it finished"),
        _ => ("BackupFailed", ""),
    }
}

/// Records a finished Job in `st`.
fn record(st: &mut BackupStatus, job: &str, outcome: JobOutcome, now: Timestamp) -> Finished {
    st.running_job = None;
    st.running_since = None;
    st.last_job_name = Some(job.to_string());
    match outcome {
        JobOutcome::Succeeded { result } => {
            st.consecutive_failures = 0;
            st.last_failure_reason = None;
            st.last_failure_message = None;
            st.last_backup_time = Some(time(now));
            if let Some(r) = &result {
                st.last_backup_name = r.key.clone();
                st.last_backup_bucket = r.bucket.clone();
                st.last_backup_size = r.size.map(|s| s as i64);
                st.last_backup_sha256 = r.sha256.clone();
                st.last_backup_duration = r.duration_ms.map(|ms| format!("{:.3}s", ms as f64 / 1000.0));
            }
            let message = match result.as_ref().and_then(|r| r.key.as_deref()) {
                Some(key) => format!("backup Job {job} stored {key}"),
                None => format!("backup Job {job} succeeded but reported no object key"),
            };
            Finished {
                job: job.to_string(),
                succeeded: true,
                reason: "Succeeded".into(),
                message,
                result,
            }
        }
        JobOutcome::Failed {
            reason,
            message,
            result,
        } => {
            st.consecutive_failures = st.consecutive_failures.saturating_add(1);
            st.last_failure_reason = Some(reason.clone());
            st.last_failure_message = Some(message.clone());
            st.last_failure_time = Some(time(now));
            Finished {
                job: job.to_string(),
                succeeded: false,
                reason,
                message,
                result,
            }
        }
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
