use super::*;
use serde_json::json;

fn spec(backup: serde_json::Value) -> OpenBaoClusterSpec {
    let mut base = json!({
        "version": "2.7.2",
        "profile": "Development",
        "storage": {"size": "1Gi"},
        "backup": {
            "schedule": "0 * * * *",
            "target": {
                "endpoint": "http://rustfs.storage.svc:9000",
                "bucket": "backups",
                "credentialsSecretRef": {"name": "creds"},
            },
        },
    });
    if backup.is_null() {
        base.as_object_mut().unwrap().remove("backup");
    } else {
        for (k, v) in backup.as_object().unwrap() {
            base["backup"][k] = v.clone();
        }
    }
    serde_json::from_value(base).unwrap()
}

fn ready_status() -> OpenBaoClusterStatus {
    OpenBaoClusterStatus {
        initialized: true,
        current_version: Some("2.7.2".into()),
        ..Default::default()
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn inputs<'a>(spec: &'a OpenBaoClusterSpec, status: &'a OpenBaoClusterStatus, now: &str) -> Inputs<'a> {
    Inputs {
        cluster: "vault",
        spec,
        status,
        trigger: None,
        credentials: CredentialsCheck::Present,
        running: None,
        now: ts(now),
    }
}

fn with_backup(mut status: OpenBaoClusterStatus, f: impl FnOnce(&mut BackupStatus)) -> OpenBaoClusterStatus {
    let mut b = status.backup.clone().unwrap_or_default();
    f(&mut b);
    status.backup = Some(b);
    status
}

#[test]
fn first_reconcile_only_schedules() {
    let spec = spec(json!({}));
    let status = ready_status();
    let d = decide(&inputs(&spec, &status, "2026-01-01T10:20:00Z"));
    assert_eq!(d.job, JobAction::None);
    let b = d.backup.unwrap();
    assert_eq!(b.next_scheduled_backup, Some(Time(ts("2026-01-01T11:00:00Z"))));
    assert_eq!(d.requeue, Some(Duration::from_secs_f64(40.0 * 60.0 + 0.5)));
    assert_eq!(d.condition.unwrap().status, Status::True);
}

#[test]
fn a_due_window_starts_one_job_and_takes_the_lock() {
    let spec = spec(json!({}));
    let status = with_backup(ready_status(), |b| {
        b.next_scheduled_backup = Some(Time(ts("2026-01-01T11:00:00Z")))
    });
    let d = decide(&inputs(&spec, &status, "2026-01-01T11:00:01Z"));
    assert_eq!(
        d.job,
        JobAction::Create {
            name: "vault-backup-20260101-110001".into(),
            why: Why::Scheduled
        }
    );
    assert_eq!(d.lock, LockChange::Acquire);
    let b = d.backup.unwrap();
    assert_eq!(b.running_job.as_deref(), Some("vault-backup-20260101-110001"));
    assert_eq!(b.next_scheduled_backup, Some(Time(ts("2026-01-01T12:00:00Z"))));
}

#[test]
fn missed_windows_collapse_into_one_run() {
    let spec = spec(json!({}));
    // The operator was down from 11:00 to 15:30: four windows missed.
    let status = with_backup(ready_status(), |b| {
        b.next_scheduled_backup = Some(Time(ts("2026-01-01T11:00:00Z")))
    });
    let d = decide(&inputs(&spec, &status, "2026-01-01T15:30:00Z"));
    assert!(matches!(d.job, JobAction::Create { .. }));
    assert_eq!(
        d.backup.unwrap().next_scheduled_backup,
        Some(Time(ts("2026-01-01T16:00:00Z")))
    );
}

#[test]
fn nothing_starts_while_a_backup_job_runs() {
    let spec = spec(json!({}));
    let status = with_backup(ready_status(), |b| {
        b.next_scheduled_backup = Some(Time(ts("2026-01-01T11:00:00Z")));
        b.running_job = Some("vault-backup-x".into());
        b.running_since = Some(Time(ts("2026-01-01T10:59:00Z")));
    });
    let mut i = inputs(&spec, &status, "2026-01-01T11:00:05Z");
    i.running = Some(RunningJob::Active);
    i.trigger = Some("now");
    let d = decide(&i);
    assert_eq!(d.job, JobAction::None);
    assert_eq!(d.lock, LockChange::Keep);
    assert_eq!(d.requeue, Some(JOB_POLL));
}

#[test]
fn another_operation_holding_the_lock_blocks_the_backup() {
    let spec = spec(json!({}));
    let mut status = with_backup(ready_status(), |b| {
        b.next_scheduled_backup = Some(Time(ts("2026-01-01T11:00:00Z")))
    });
    status.operation_lock = Some(OperationLock {
        operation: Operation::Restore,
        holder: "openbaorestore/r1".into(),
        since: Time(ts("2026-01-01T10:59:00Z")),
    });
    let d = decide(&inputs(&spec, &status, "2026-01-01T11:00:05Z"));
    assert_eq!(d.job, JobAction::None);
    assert!(d.blocked.unwrap().contains("openbaorestore/r1"));
    // The window stays due: it runs as soon as the lock is free.
    assert_eq!(
        d.backup.unwrap().next_scheduled_backup,
        Some(Time(ts("2026-01-01T11:00:00Z")))
    );
}

#[test]
fn a_pending_upgrade_blocks_the_backup() {
    let spec = spec(json!({}));
    let mut status = ready_status();
    status.current_version = Some("2.6.2".into());
    let mut i = inputs(&spec, &status, "2026-01-01T11:00:05Z");
    i.trigger = Some("t1");
    let d = decide(&i);
    assert_eq!(d.job, JobAction::None);
    assert!(d.blocked.unwrap().contains("upgrade"));
}

#[test]
fn the_annotation_runs_once_per_value() {
    let spec = spec(json!({}));
    let status = ready_status();
    let mut i = inputs(&spec, &status, "2026-01-01T10:20:00Z");
    i.trigger = Some("manual-1");
    let d = decide(&i);
    assert!(matches!(
        &d.job,
        JobAction::Create {
            why: Why::Annotation,
            ..
        }
    ));
    let b = d.backup.unwrap();
    assert_eq!(b.acknowledged_trigger.as_deref(), Some("manual-1"));
    // The scheduled window is not consumed by a manual run.
    assert_eq!(b.next_scheduled_backup, Some(Time(ts("2026-01-01T11:00:00Z"))));

    let done = with_backup(ready_status(), |s| *s = b.clone());
    let mut done = done;
    done.backup.as_mut().unwrap().running_job = None;
    let mut again = inputs(&spec, &done, "2026-01-01T10:21:00Z");
    again.trigger = Some("manual-1");
    assert_eq!(decide(&again).job, JobAction::None);
    again.trigger = Some("manual-2");
    assert!(matches!(decide(&again).job, JobAction::Create { .. }));
}

#[test]
fn the_request_token_runs_once() {
    let spec = spec(json!({"requests": {"backup": "r1"}}));
    let status = ready_status();
    let d = decide(&inputs(&spec, &status, "2026-01-01T10:20:00Z"));
    assert!(matches!(&d.job, JobAction::Create { why: Why::Request, .. }));
    let mut b = d.backup.unwrap();
    assert_eq!(b.acknowledged_request.as_deref(), Some("r1"));
    b.running_job = None;
    let acked = with_backup(ready_status(), |s| *s = b);
    assert_eq!(
        decide(&inputs(&spec, &acked, "2026-01-01T10:21:00Z")).job,
        JobAction::None
    );
}

fn running(status: OpenBaoClusterStatus, since: &str) -> OpenBaoClusterStatus {
    let mut s = with_backup(status, |b| {
        b.running_job = Some("vault-backup-1".into());
        b.running_since = Some(Time(ts(since)));
        b.next_scheduled_backup = Some(Time(ts("2026-01-01T12:00:00Z")));
        b.consecutive_failures = 2;
    });
    s.operation_lock = Some(backup_lock(ts(since)));
    s
}

#[test]
fn success_is_recorded_and_the_lock_released() {
    let spec = spec(json!({}));
    let status = running(ready_status(), "2026-01-01T11:00:00Z");
    let mut i = inputs(&spec, &status, "2026-01-01T11:00:30Z");
    i.running = Some(RunningJob::Finished(Box::new(JobOutcome::Succeeded {
        result: Some(ExecutorResult {
            operation: "backup".into(),
            result: "Succeeded".into(),
            key: Some("ns/vault/t.snap".into()),
            bucket: Some("backups".into()),
            size: Some(1234),
            duration_ms: Some(2500),
            ..Default::default()
        }),
    })));
    let d = decide(&i);
    assert_eq!(d.lock, LockChange::Release);
    let b = d.backup.unwrap();
    assert_eq!(b.running_job, None);
    assert_eq!(b.consecutive_failures, 0);
    assert_eq!(b.last_backup_name.as_deref(), Some("ns/vault/t.snap"));
    assert_eq!(b.last_backup_size, Some(1234));
    assert_eq!(b.last_backup_duration.as_deref(), Some("2.500s"));
    assert_eq!(b.last_backup_time, Some(Time(ts("2026-01-01T11:00:30Z"))));
    assert!(d.finished.unwrap().succeeded);
}

#[test]
fn failure_counts_up_and_names_an_actionable_reason() {
    let spec = spec(json!({}));
    let status = running(ready_status(), "2026-01-01T11:00:00Z");
    let mut i = inputs(&spec, &status, "2026-01-01T11:00:30Z");
    i.running = Some(RunningJob::Finished(Box::new(JobOutcome::Failed {
        reason: "CredentialsRejected".into(),
        message: "403 InvalidAccessKeyId".into(),
        result: None,
    })));
    let d = decide(&i);
    let b = d.backup.clone().unwrap();
    assert_eq!(b.consecutive_failures, 3);
    assert_eq!(b.last_failure_reason.as_deref(), Some("CredentialsRejected"));
    assert_eq!(d.lock, LockChange::Release);
    // The condition is derived from the status this decision writes, in the same write: it
    // never says Ready next to a failure it has not caught up with (a CI flake of node_backup).
    let c = d.condition.clone().unwrap();
    assert_eq!((c.status, c.reason.as_str()), (Status::False, "AuthenticationFailed"));
    assert!(c.message.contains("403"), "{}", c.message);
    // And the next reconcile, from the written status, agrees.
    let after = with_backup(ready_status(), |s| *s = b);
    let next = decide(&inputs(&spec, &after, "2026-01-01T11:00:31Z"))
        .condition
        .unwrap();
    assert_eq!(next, c);
}

#[test]
fn a_job_missing_right_after_the_start_is_created_later_it_is_lost() {
    let spec = spec(json!({}));
    let status = running(ready_status(), "2026-01-01T11:00:00Z");
    let mut i = inputs(&spec, &status, "2026-01-01T11:00:10Z");
    i.running = Some(RunningJob::Missing);
    assert_eq!(
        decide(&i).job,
        JobAction::Create {
            name: "vault-backup-1".into(),
            why: Why::Scheduled
        }
    );
    i.now = ts("2026-01-01T11:10:00Z");
    let d = decide(&i);
    assert_eq!(d.lock, LockChange::Release);
    assert_eq!(d.backup.unwrap().last_failure_reason.as_deref(), Some("JobMissing"));
}

#[test]
fn configuration_problems_are_conditions_and_start_nothing() {
    let spec_bad_cron = spec(json!({"schedule": "61 * * * *"}));
    let status = ready_status();
    let mut i = inputs(&spec_bad_cron, &status, "2026-01-01T10:00:00Z");
    i.trigger = Some("x");
    let d = decide(&i);
    assert_eq!(d.job, JobAction::None);
    assert_eq!(d.condition.unwrap().reason, "InvalidSchedule");

    let spec_ok = spec(json!({}));
    let mut i = inputs(&spec_ok, &status, "2026-01-01T10:00:00Z");
    i.trigger = Some("x");
    i.credentials = CredentialsCheck::SecretMissing;
    let d = decide(&i);
    assert_eq!(d.job, JobAction::None);
    let c = d.condition.unwrap();
    assert_eq!(
        (c.status, c.reason.as_str()),
        (Status::False, "CredentialsSecretMissing")
    );
    assert!(c.message.contains("creds"));

    // What CEL cannot see is still refused (e.g. a CRD installed without its rules).
    let spec_ssrf = spec(
        json!({"target": {"endpoint": "https://0x7f000001", "bucket": "b", "credentialsSecretRef": {"name": "c"}}}),
    );
    let mut i = inputs(&spec_ssrf, &status, "2026-01-01T10:00:00Z");
    i.trigger = Some("x");
    let d = decide(&i);
    assert_eq!(d.job, JobAction::None);
    assert_eq!(d.condition.unwrap().reason, "InvalidEndpoint");
}

#[test]
fn backups_switched_off_release_a_stale_lock_and_stop_scheduling() {
    let spec = spec(serde_json::Value::Null);
    let mut status = with_backup(ready_status(), |b| {
        b.next_scheduled_backup = Some(Time(ts("2026-01-01T11:00:00Z")))
    });
    status.operation_lock = Some(backup_lock(ts("2026-01-01T10:00:00Z")));
    let d = decide(&inputs(&spec, &status, "2026-01-01T11:00:00Z"));
    assert_eq!(d.lock, LockChange::Release);
    assert_eq!(d.condition, None);
    assert_eq!(d.backup.unwrap().next_scheduled_backup, None);
}

#[test]
fn every_minute_schedule_and_job_names() {
    let cron = parse_schedule("* * * * *").unwrap();
    assert_eq!(
        next_after(&cron, ts("2026-01-01T10:00:00Z")),
        Some(ts("2026-01-01T10:01:00Z"))
    );
    assert!(parse_schedule("* * * * * *").is_err(), "seconds are not allowed");
    assert_eq!(
        openbao_api::names::backup_job(&"a".repeat(40), ts("2026-01-01T10:00:00Z")).len(),
        63
    );
}

#[test]
fn a_changed_schedule_takes_effect_at_once() {
    // Daily at 03:00 was stored; the schedule is now hourly.
    let spec = spec(json!({"schedule": "0 * * * *"}));
    let status = with_backup(ready_status(), |b| {
        b.next_scheduled_backup = Some(Time(ts("2026-01-02T03:00:00Z")))
    });
    let d = decide(&inputs(&spec, &status, "2026-01-01T10:20:00Z"));
    assert_eq!(
        d.backup.unwrap().next_scheduled_backup,
        Some(Time(ts("2026-01-01T11:00:00Z")))
    );
}
