//! The life of one executor Job, decided without I/O so every shape is unit-tested: whether it
//! runs, is missing (not created yet, or lost) or finished and how ([`job_outcome`], from the
//! Job's status and the [result line](super::result) of a pod the Job owns), and whether an
//! object found under its name is really ours ([`is_same_job`], [`owned_by`]).

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::result::{ExecutorResult, result_of, termination_message};

/// A Job recorded in status but not found this soon after is assumed to be not created yet
/// (the operator stopped between the two writes) and is created; later it counts as lost.
pub const JOB_CREATE_GRACE: SignedDuration = SignedDuration::from_secs(120);

/// Whether a Job recorded in status at `since` and not found now may still be created.
pub fn within_create_grace(since: Timestamp, now: Timestamp) -> bool {
    now.duration_since(since) < JOB_CREATE_GRACE
}

/// A Job recorded in status, as observed.
#[derive(Clone, Debug, PartialEq)]
pub enum RunningJob {
    Active,
    Missing,
    Finished(Box<JobOutcome>),
}

/// How a Job ended.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
    Succeeded {
        result: Option<ExecutorResult>,
    },
    Failed {
        reason: String,
        message: String,
        result: Option<ExecutorResult>,
    },
}

impl JobOutcome {
    /// A `what` Job (backup, drill, …) named `job` that is gone without a result.
    pub fn missing(what: &str, job: &str) -> Self {
        JobOutcome::Failed {
            reason: "JobMissing".into(),
            message: format!("{what} Job {job} disappeared before it reported a result"),
            result: None,
        }
    }
}

/// What a decision does about a Job its status records as running.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordedJob {
    /// It runs: wait for it.
    Running,
    /// Not found within [`JOB_CREATE_GRACE`] of being recorded, and still wanted: the operator
    /// stopped between recording and creating it, so it is created now.
    Create,
    /// It ended, or it is lost: record how.
    Ended(Box<JobOutcome>),
}

/// Decides about the `what` Job (backup, drill, …) `job`, recorded as running at `since` and
/// observed as `running` (not observed: missing); `still_wanted`: whether the feature that
/// started it still asks for it (a lost Job is created again only then).
pub fn recorded_job(
    what: &str,
    job: &str,
    running: Option<RunningJob>,
    since: Timestamp,
    now: Timestamp,
    still_wanted: bool,
) -> RecordedJob {
    match running.unwrap_or(RunningJob::Missing) {
        RunningJob::Active => RecordedJob::Running,
        RunningJob::Missing if still_wanted && within_create_grace(since, now) => RecordedJob::Create,
        RunningJob::Missing => RecordedJob::Ended(Box::new(JobOutcome::missing(what, job))),
        RunningJob::Finished(outcome) => RecordedJob::Ended(outcome),
    }
}

/// The Job's state: `None` while it runs. `pods` are the Job's own ([`owned_by`]).
pub fn job_outcome(job: &Job, pods: &[Pod], container: &str) -> Option<JobOutcome> {
    let status = job.status.as_ref()?;
    let condition = |t: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t && c.status == "True")
    };
    let result = pods.iter().find_map(|p| result_of(p, container));
    if status.succeeded.unwrap_or(0) > 0 || condition("Complete").is_some() {
        return Some(JobOutcome::Succeeded { result });
    }
    let failed = condition("Failed");
    if status.failed.unwrap_or(0) == 0 && failed.is_none() {
        return None;
    }
    Some(match result {
        Some(r) if r.failed() => JobOutcome::Failed {
            reason: r.reason.clone().unwrap_or_else(|| "BackupFailed".into()),
            message: r.message.clone().unwrap_or_default(),
            result: Some(r),
        },
        _ => {
            let (reason, message) = match failed {
                Some(c) => (
                    c.reason.clone().unwrap_or_else(|| "JobFailed".into()),
                    c.message.clone().unwrap_or_default(),
                ),
                None => ("JobFailed".to_string(), String::new()),
            };
            let logs = pods.iter().find_map(|p| termination_message(p, container));
            let message = match logs {
                Some(l) => format!(
                    "the Job failed without a result ({reason}: {message}); last output: {}",
                    tail(&l)
                ),
                None => format!("the Job failed without a result ({reason}: {message})"),
            };
            JobOutcome::Failed {
                reason: "JobFailed".into(),
                message,
                result: None,
            }
        }
    })
}

/// Whether `pod` belongs to `job`: its controller is the Job, by uid. The label the Job
/// controller sets is only a selector; anyone who may create pods can copy it, so a
/// look-alike pod could otherwise forge a result.
pub fn owned_by(pod: &Pod, job: &Job) -> bool {
    job.metadata
        .uid
        .as_deref()
        .is_some_and(|uid| controlled_by(&pod.metadata, uid))
}

/// Whether `existing`, found under the name of the Job we `wanted` to create (HTTP 409 on
/// create), is that Job: the same controller (by uid) and every label of `wanted` (operation,
/// cluster). Otherwise the name is taken by something else, which must not be read as ours.
pub fn is_same_job(existing: &Job, wanted: &Job) -> bool {
    let owner = wanted
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    let same_owner = owner.is_some_and(|o| controlled_by(&existing.metadata, &o.uid));
    let labels = existing.metadata.labels.as_ref();
    let same_labels = wanted
        .metadata
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    same_owner && same_labels
}

fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

fn tail(text: &str) -> String {
    let chars: Vec<char> = text.trim().chars().collect();
    let start = chars.len().saturating_sub(400);
    chars[start..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_recorded_job_not_found_is_created_within_the_grace_only_while_wanted() {
        let since: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let soon = since + SignedDuration::from_secs(30);
        let late = since + JOB_CREATE_GRACE;
        let missing = RecordedJob::Ended(Box::new(JobOutcome::missing("backup", "j")));
        assert_eq!(
            recorded_job("backup", "j", None, since, soon, true),
            RecordedJob::Create
        );
        assert_eq!(recorded_job("backup", "j", None, since, soon, false), missing);
        assert_eq!(recorded_job("backup", "j", None, since, late, true), missing);
        let active = Some(RunningJob::Active);
        assert_eq!(
            recorded_job("backup", "j", active, since, late, false),
            RecordedJob::Running
        );
        let done = JobOutcome::Succeeded { result: None };
        let finished = Some(RunningJob::Finished(Box::new(done.clone())));
        assert_eq!(
            recorded_job("backup", "j", finished, since, soon, true),
            RecordedJob::Ended(Box::new(done))
        );
        let RecordedJob::Ended(lost) = missing else {
            unreachable!()
        };
        assert!(matches!(*lost, JobOutcome::Failed { ref reason, ref message, .. }
            if reason == "JobMissing" && message == "backup Job j disappeared before it reported a result"));
    }

    fn job(status: serde_json::Value) -> Job {
        serde_json::from_value(json!({"metadata": {"name": "j"}, "status": status})).unwrap()
    }

    fn pod(message: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"containerStatuses": [{
            "name": "backup", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "message": message}},
        }]}}))
        .unwrap()
    }

    const SUCCESS: &str = r#"{"operation":"backup","result":"Succeeded","bucket":"b","key":"p/ns/c/t.snap","size":28697,"sha256":"ab","duration_ms":812,"transfer_ms":50,"leader":"https://x","deleted":[]}"#;
    const FAILURE: &str = r#"{"operation":"backup","result":"Failed","reason":"CredentialsRejected","message":"the store rejected the credentials","duration_ms":20}"#;

    #[test]
    fn running_job_has_no_outcome() {
        assert_eq!(job_outcome(&job(json!({"active": 1})), &[], "backup"), None);
        assert_eq!(job_outcome(&Job::default(), &[], "backup"), None);
    }

    #[test]
    fn success_carries_the_result_line() {
        let out = job_outcome(&job(json!({"succeeded": 1})), &[pod(SUCCESS)], "backup").unwrap();
        let JobOutcome::Succeeded { result: Some(r) } = out else {
            panic!("{out:?}")
        };
        assert_eq!(r.key.as_deref(), Some("p/ns/c/t.snap"));
        assert_eq!(r.size, Some(28697));
        assert_eq!(r.duration_ms, Some(812));
    }

    #[test]
    fn failure_takes_the_executor_reason() {
        let out = job_outcome(
            &job(json!({"failed": 1})),
            &[pod(&format!("log line\n{FAILURE}"))],
            "backup",
        )
        .unwrap();
        assert!(
            matches!(&out, JobOutcome::Failed { reason, message, .. } if reason == "CredentialsRejected" && message.contains("rejected")),
            "{out:?}"
        );
    }

    #[test]
    fn failure_without_a_result_uses_the_job_condition_and_logs() {
        let j = job(json!({"failed": 1, "conditions": [
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too long"}
        ]}));
        let out = job_outcome(&j, &[pod("panicked at main.rs")], "backup").unwrap();
        let JobOutcome::Failed { reason, message, .. } = out else {
            panic!()
        };
        assert_eq!(reason, "JobFailed");
        assert!(
            message.contains("DeadlineExceeded") && message.contains("panicked"),
            "{message}"
        );
    }

    fn owned(uid: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": uid, "controller": true})
    }

    #[test]
    fn only_a_pod_the_job_controls_counts() {
        let job: Job = serde_json::from_value(json!({"metadata": {"name": "j", "uid": "job-1"}})).unwrap();
        let with_owner = |owner: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p", "ownerReferences": [owner],
                "labels": {"batch.kubernetes.io/job-name": "j"}}}))
            .unwrap()
        };
        assert!(owned_by(&with_owner(owned(json!("job-1"))), &job));
        // Same name label, another Job's uid: a look-alike.
        assert!(!owned_by(&with_owner(owned(json!("job-2"))), &job));
        let mut not_controller = owned(json!("job-1"));
        not_controller["controller"] = json!(false);
        assert!(!owned_by(&with_owner(not_controller), &job));
        assert!(!owned_by(&pod(SUCCESS), &job), "no owner at all");
        let no_uid = Job::default();
        assert!(!owned_by(&with_owner(owned(json!(""))), &no_uid));
    }

    #[test]
    fn a_conflicting_job_is_ours_only_with_our_owner_and_labels() {
        let job = |uid: &str, operation: &str| -> Job {
            serde_json::from_value(json!({"metadata": {"name": "c-backup-1",
                "ownerReferences": [{"apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster",
                    "name": "c", "uid": uid, "controller": true}],
                "labels": {"app.kubernetes.io/component": operation, "openbao.org/executor-for": "c"}}}))
            .unwrap()
        };
        let wanted = job("cluster-1", "backup");
        assert!(is_same_job(&job("cluster-1", "backup"), &wanted));
        // An earlier cluster of the same name, or another operation under the same name.
        assert!(!is_same_job(&job("cluster-0", "backup"), &wanted));
        assert!(!is_same_job(&job("cluster-1", "pre-upgrade-snapshot"), &wanted));
        let stranger: Job = serde_json::from_value(json!({"metadata": {"name": "c-backup-1"}})).unwrap();
        assert!(!is_same_job(&stranger, &wanted));
    }

    #[test]
    fn a_missing_job_is_created_only_within_the_grace_period() {
        let since: Timestamp = "2026-11-24T19:30:00Z".parse().unwrap();
        assert!(within_create_grace(since, since + SignedDuration::from_secs(119)));
        assert!(!within_create_grace(since, since + JOB_CREATE_GRACE));
    }
}
