//! What a finished restore Job says: its state from the Job's conditions, and the executor's
//! result line from the pod's termination message (`EXECUTOR_RESULT_FILE=/dev/termination-log`),
//! turned into the reason and message the OpenBaoRestore reports. Pure.

use crate::controllers::jobs::result::{ExecutorResult, result_of};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

/// Where the restore Job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// No Job of that name exists.
    Missing,
    /// A Job of that name exists but is not this restore's (left by an earlier OpenBaoRestore of
    /// the same name): it must neither be reported nor replaced.
    Foreign,
    /// Created, not finished.
    Running,
    Succeeded {
        result: Option<ExecutorResult>,
    },
    /// `job_message` is the Job's `Failed` condition message (e.g. a deadline or a pod that
    /// never started), for when the executor left no result.
    Failed {
        result: Option<ExecutorResult>,
        job_message: Option<String>,
    },
}

/// The Job's state, with the result line of the first of `pods` that has one. `owner_uid` is
/// the restore's uid: a Job without it as controller is [`JobState::Foreign`].
pub fn job_state(job: Option<&Job>, owner_uid: Option<&str>, pods: &[Pod]) -> JobState {
    let Some(job) = job else {
        return JobState::Missing;
    };
    let ours = job
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == owner_uid);
    if !ours {
        return JobState::Foreign;
    }
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let is_true = |kind: &str| conditions.iter().find(|c| c.type_ == kind && c.status == "True");
    let result = || pods.iter().find_map(|p| result_of(p, "restore"));
    if is_true("Complete").is_some() {
        JobState::Succeeded { result: result() }
    } else if let Some(failed) = is_true("Failed") {
        JobState::Failed {
            result: result(),
            job_message: failed.message.clone().or_else(|| failed.reason.clone()),
        }
    } else {
        JobState::Running
    }
}

/// Reason and message of a finished restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub completed: bool,
    pub reason: String,
    pub message: String,
}

/// What the OpenBaoRestore reports for a finished Job.
pub fn outcome(job_name: &str, key: &str, state: &JobState) -> Option<Outcome> {
    let not_retried = "it is not retried, because a restore must never run twice; check the cluster, then \
                       create a new OpenBaoRestore";
    match state {
        JobState::Missing | JobState::Foreign | JobState::Running => None,
        JobState::Succeeded { result: Some(r) } if r.succeeded() => Some(Outcome {
            completed: true,
            reason: "Restored".into(),
            message: format!(
                "restored {} ({} bytes) from bucket {} in {:.1}s; the cluster has an active node again \
                 (tokens issued before the restore are no longer valid: log in again)",
                r.key.as_deref().unwrap_or(key),
                r.size.unwrap_or_default(),
                r.bucket.as_deref().unwrap_or("?"),
                r.duration_ms.unwrap_or_default() as f64 / 1000.0,
            ),
        }),
        // The Job says it succeeded but there is no result to prove it (e.g. the pod was
        // already garbage-collected): report success, say what is missing.
        JobState::Succeeded { .. } => Some(Outcome {
            completed: true,
            reason: "Restored".into(),
            message: format!("the restore Job {job_name} succeeded (its result line was not found)"),
        }),
        JobState::Failed { result: Some(r), .. } if !r.succeeded() => {
            let reason = r.reason.clone().unwrap_or_else(|| "JobFailed".into());
            let detail = r.message.clone().unwrap_or_default();
            let message = match reason.as_str() {
                "SealMismatch" => format!(
                    "refused: the snapshot {key} was sealed by a different seal key than this cluster's, and \
                     restoring it would have left the cluster sealed for good; nothing was changed. Restore a \
                     backup of this cluster or of one that shares its seal key ({detail})"
                ),
                "RestoreOutcomeUnknown" => format!("{detail}; {not_retried}"),
                _ => format!("{reason}: {detail}; {not_retried}"),
            };
            Some(Outcome {
                completed: false,
                reason,
                message,
            })
        }
        JobState::Failed { job_message, .. } => Some(Outcome {
            completed: false,
            reason: "JobFailed".into(),
            message: format!(
                "the restore Job {job_name} failed without a result ({}); {not_retried}",
                job_message.as_deref().unwrap_or("no reason given")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::jobs::result::parse_result;
    use serde_json::json;

    fn pod(message: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"containerStatuses": [{
                "name": "restore", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "message": message}},
            }]},
        }))
        .unwrap()
    }

    fn job(condition: Option<&str>) -> Job {
        let conditions: Vec<_> = condition
            .into_iter()
            .map(|c| json!({"type": c, "status": "True", "message": "BackoffLimitExceeded"}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "j", "ownerReferences": [
                {"apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoRestore", "name": "r", "uid": "u1", "controller": true},
            ]},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    const SEAL: &str = r#"{"operation":"restore","result":"Failed","reason":"SealMismatch","message":"the snapshot was sealed with a different seal key","duration_ms":12}"#;
    const OK: &str = r#"{"operation":"restore","result":"Succeeded","bucket":"b","key":"k.snap","size":2048,"duration_ms":1500,"leader":"https://x"}"#;

    #[test]
    fn the_job_state_follows_its_conditions_and_the_result_comes_from_the_pod() {
        assert_eq!(job_state(None, Some("u1"), &[]), JobState::Missing);
        assert_eq!(job_state(Some(&job(None)), Some("u1"), &[pod(SEAL)]), JobState::Running);
        let JobState::Failed { result, job_message } = job_state(Some(&job(Some("Failed"))), Some("u1"), &[pod(SEAL)])
        else {
            panic!("failed")
        };
        assert_eq!(result.unwrap().reason.as_deref(), Some("SealMismatch"));
        assert_eq!(job_message.as_deref(), Some("BackoffLimitExceeded"));
        let state = job_state(Some(&job(Some("Complete"))), Some("u1"), &[pod("log noise\n"), pod(OK)]);
        assert!(matches!(state, JobState::Succeeded { result: Some(r) } if r.size == Some(2048)));
        // The same Job name under another restore's ownership is not this restore's result.
        let other = job_state(Some(&job(Some("Complete"))), Some("u2"), &[pod(OK)]);
        assert_eq!(other, JobState::Foreign);
    }

    #[test]
    fn only_restore_lines_count() {
        assert_eq!(parse_result("not json", "restore"), None);
        assert_eq!(
            parse_result(r#"{"operation":"backup","result":"Succeeded"}"#, "restore"),
            None
        );
        assert!(parse_result(&format!("{{\"level\":\"info\"}}\n{OK}\n"), "restore").is_some());
    }

    #[test]
    fn a_seal_mismatch_says_the_restore_was_refused_and_why() {
        let state = JobState::Failed {
            result: parse_result(SEAL, "restore"),
            job_message: None,
        };
        let o = outcome("restore-r", "a/b.snap", &state).unwrap();
        assert!(!o.completed);
        assert_eq!(o.reason, "SealMismatch");
        assert!(o.message.contains("different seal key") && o.message.contains("nothing was changed"));
        assert!(o.message.contains("a/b.snap"));
    }

    #[test]
    fn success_and_failures_without_a_result_are_reported() {
        let ok = outcome(
            "j",
            "k",
            &JobState::Succeeded {
                result: parse_result(OK, "restore"),
            },
        )
        .unwrap();
        assert!(
            ok.completed && ok.reason == "Restored" && ok.message.contains("2048 bytes"),
            "{ok:?}"
        );
        let lost = JobState::Failed {
            result: None,
            job_message: Some("DeadlineExceeded".into()),
        };
        let o = outcome("restore-r", "k", &lost).unwrap();
        assert_eq!(o.reason, "JobFailed");
        assert!(o.message.contains("DeadlineExceeded") && o.message.contains("not retried"));
        assert_eq!(outcome("j", "k", &JobState::Running), None);
    }
}
