//! `lane backup`: one manual backup through the trigger annotation, followed to its result in
//! `status.backup`.

use crate::watch::{Lane, Progress, follow};
use crate::{Clock, Record, say};
use anyhow::{Context as _, Result, bail};
use kube::api::{Patch, PatchParams};
use openbao_api::{BackupStatus, OpenBaoCluster, TRIGGER_BACKUP_ANNOTATION};
use serde_json::json;
use std::time::Duration;

pub async fn run(lane: &Lane, limit: Duration, record: &mut Record) -> Result<()> {
    let before = backup_status(Some(&lane.cluster().await?));
    let trigger = format!(
        "lane-{}-{}",
        jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ"),
        std::process::id()
    );
    say(format!(
        "backup of {}/{}: annotation {TRIGGER_BACKUP_ANNOTATION}={trigger}",
        lane.namespace, lane.cluster
    ));
    let clock = Clock::start();
    let api = lane.api::<OpenBaoCluster>();
    api.patch(
        &lane.cluster,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {TRIGGER_BACKUP_ANNOTATION: trigger}}})),
    )
    .await
    .context("set the trigger annotation")?;
    let mut job_said = None;
    let done = follow(api, &lane.cluster, limit, |cluster| {
        let now = backup_status(cluster);
        Ok(match seen(&now, &trigger, &before) {
            Seen::NotYet => Progress::Waiting("the operator has not acknowledged the trigger".into()),
            Seen::Running(job) => {
                if job_said.as_ref() != Some(&job) {
                    say(format!(
                        "the operator acknowledged the trigger: Job {job} runs ({}s)",
                        clock.seconds()
                    ));
                    job_said = Some(job.clone());
                }
                Progress::Waiting(format!("Job {job} runs"))
            }
            Seen::Succeeded => Progress::Done(now),
            Seen::Failed => bail!(
                "backup failed after {}s: {}: {}",
                clock.seconds(),
                now.last_failure_reason.as_deref().unwrap_or("?"),
                now.last_failure_message.as_deref().unwrap_or_default()
            ),
        })
    })
    .await?;
    let key = done.last_backup_name.clone().unwrap_or_default();
    let took = clock.seconds();
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| "?".into());
    say(format!(
        "backup done: {took}s from the trigger to the recorded result (Job {})",
        or_unknown(done.last_job_name)
    ));
    say(format!("key:      {key}"));
    say(format!("bucket:   {}", or_unknown(done.last_backup_bucket)));
    say(format!(
        "size:     {} bytes",
        or_unknown(done.last_backup_size.map(|s| s.to_string()))
    ));
    say(format!(
        "duration: {} (the Job's own measure)",
        or_unknown(done.last_backup_duration)
    ));
    say(format!("sha256:   {}", or_unknown(done.last_backup_sha256)));
    record.set("last_backup_key", key);
    record.set("last_backup_seconds", took);
    Ok(())
}

fn backup_status(cluster: Option<&OpenBaoCluster>) -> BackupStatus {
    cluster
        .and_then(|c| c.status.as_ref())
        .and_then(|s| s.backup.clone())
        .unwrap_or_default()
}

#[derive(Debug, PartialEq)]
enum Seen {
    NotYet,
    Running(String),
    /// A backup name other than the one before, and no Job running.
    Succeeded,
    /// A failure newer than the one before, and no Job running.
    Failed,
}

/// Where the backup of `trigger` stands, against the status before the trigger was set.
fn seen(now: &BackupStatus, trigger: &str, before: &BackupStatus) -> Seen {
    if now.acknowledged_trigger.as_deref() != Some(trigger) {
        return Seen::NotYet;
    }
    if let Some(job) = &now.running_job {
        return Seen::Running(job.clone());
    }
    if now.last_backup_name.is_some() && now.last_backup_name != before.last_backup_name {
        return Seen::Succeeded;
    }
    if now.last_failure_time.is_some() && now.last_failure_time != before.last_failure_time {
        return Seen::Failed;
    }
    Seen::NotYet
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: &str) -> Option<Time> {
        Some(Time(s.parse().unwrap()))
    }

    #[test]
    fn a_result_counts_only_for_this_trigger_and_only_when_new() {
        let before = BackupStatus {
            last_backup_name: Some("old.snap".into()),
            last_failure_time: at("2026-12-04T10:00:00Z"),
            acknowledged_trigger: Some("earlier".into()),
            ..Default::default()
        };
        assert_eq!(seen(&before, "t1", &before), Seen::NotYet);
        let acknowledged = BackupStatus {
            acknowledged_trigger: Some("t1".into()),
            ..before.clone()
        };
        assert_eq!(seen(&acknowledged, "t1", &before), Seen::NotYet);
        let running = BackupStatus {
            running_job: Some("job-1".into()),
            ..acknowledged.clone()
        };
        assert_eq!(seen(&running, "t1", &before), Seen::Running("job-1".into()));
        let new_name = BackupStatus {
            last_backup_name: Some("new.snap".into()),
            ..acknowledged.clone()
        };
        assert_eq!(seen(&new_name, "t1", &before), Seen::Succeeded);
        let new_failure = BackupStatus {
            last_failure_time: at("2026-12-04T11:00:00Z"),
            ..acknowledged
        };
        assert_eq!(seen(&new_failure, "t1", &before), Seen::Failed);
    }
}
