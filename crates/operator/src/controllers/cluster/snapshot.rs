//! The pre-upgrade snapshot on Kubernetes: a Job of the backup executor (the same code, service
//! account and JWT role as scheduled backups), stored under `<pathPrefix>/pre-upgrade/`.
//!
//! The Job's name is derived from the upgrade's start time and the attempt number, both in
//! status, so an operator restarted while the Job runs finds the same Job instead of starting a
//! second snapshot; a failed attempt counts in status and the next attempt gets a new Job.

use jiff::Timestamp;
use openbao_api::{OpenBaoClusterStatus, UpgradeStatus, names};
use openbao_render::Cluster;
use openbao_render::objects::jobs as job_objects;

use crate::context::Context;
use crate::controllers::jobs::{self, ExecutorResult, JobOutcome, RunningJob};
use crate::flows::{PlatformError, Snapshot};

/// When the upgrade in `status` started (the epoch for one recorded without a start).
pub fn upgrade_started(status: &OpenBaoClusterStatus) -> Timestamp {
    status
        .upgrade
        .as_ref()
        .and_then(|u: &UpgradeStatus| u.started_at.as_ref())
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
}

/// Starts the Job of this attempt if it does not exist, and reports where it stands.
pub async fn take(
    ctx: &Context,
    cluster: &Cluster<'_>,
    started: Timestamp,
    attempt: i32,
) -> Result<Snapshot, PlatformError> {
    let name = names::pre_upgrade_snapshot_job(cluster.name, started, attempt);
    let Some(backup) = cluster.spec.backup.as_ref() else {
        return Err(PlatformError::new(
            "taking the pre-upgrade snapshot",
            "spec.upgrade.preUpgradeSnapshot needs spec.backup (the store the snapshot goes to)".to_string(),
        ));
    };
    let failed = |e| PlatformError::new(format!("pre-upgrade snapshot Job {name}"), e);
    let running = jobs::observe(ctx, cluster.namespace, &name, job_objects::Executor::Backup)
        .await
        .map_err(failed)?;
    match running {
        RunningJob::Missing => {
            let job = job_objects::pre_upgrade_snapshot_job(cluster, backup, &name, &ctx.executor_image);
            jobs::create(ctx, cluster.namespace, &job).await.map_err(failed)?;
            Ok(Snapshot::Running(format!("pre-upgrade snapshot: Job {name} started")))
        }
        RunningJob::Active => Ok(Snapshot::Running(format!(
            "pre-upgrade snapshot: Job {name} is running"
        ))),
        RunningJob::Finished(outcome) => stored(&name, *outcome),
    }
}

/// The object key of a finished Job, or why it failed.
fn stored(name: &str, outcome: JobOutcome) -> Result<Snapshot, PlatformError> {
    let context = format!("pre-upgrade snapshot Job {name}");
    match outcome {
        JobOutcome::Succeeded {
            result: Some(ExecutorResult { key: Some(key), .. }),
        } => Ok(Snapshot::Stored(key)),
        JobOutcome::Succeeded { .. } => Err(PlatformError::new(
            context,
            "succeeded without reporting where the snapshot is stored (its result is gone)".to_string(),
        )),
        JobOutcome::Failed { reason, message, .. } => Err(PlatformError::new(context, format!("{reason}: {message}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_follow_the_attempt_and_fit_a_label_value() {
        let started: Timestamp = "2026-11-24T19:30:05Z".parse().unwrap();
        assert_eq!(
            names::pre_upgrade_snapshot_job("lane", started, 0),
            "lane-snap-20261124-193005-0"
        );
        assert_ne!(
            names::pre_upgrade_snapshot_job("lane", started, 1),
            names::pre_upgrade_snapshot_job("lane", started, 0)
        );
        assert!(names::pre_upgrade_snapshot_job(&"x".repeat(40), started, 2).len() <= 63);
    }

    #[test]
    fn a_finished_job_gives_its_key_or_why_it_failed() {
        let ok = JobOutcome::Succeeded {
            result: Some(ExecutorResult {
                key: Some("prod/pre-upgrade/ns/c/k.snap".into()),
                ..Default::default()
            }),
        };
        assert_eq!(
            stored("j", ok).unwrap(),
            Snapshot::Stored("prod/pre-upgrade/ns/c/k.snap".into())
        );
        let lost = JobOutcome::Succeeded { result: None };
        assert!(stored("j", lost).unwrap_err().to_string().contains("result is gone"));
        let failed = JobOutcome::Failed {
            reason: "AuthenticationFailed".into(),
            message: "wrong secret key".into(),
            result: None,
        };
        let text = stored("j", failed).unwrap_err().to_string();
        assert!(
            text.contains("Job j") && text.contains("AuthenticationFailed: wrong secret key"),
            "{text}"
        );
    }
}
