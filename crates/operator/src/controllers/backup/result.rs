//! Reading a finished executor Job: its state from the Job's status, its result from the one
//! JSON line the executor wrote to the termination log (kept by the kubelet as the container's
//! termination message). Pure, so every shape is unit-tested.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

/// The executor's result line (success and failure share it; absent fields stay `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ExecutorResult {
    pub operation: String,
    /// `Succeeded` or `Failed`.
    pub result: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub retention_error: Option<String>,
    /// Restore drill: milliseconds from the download's start to an active server.
    #[serde(default)]
    pub restore_ms: Option<u64>,
    /// Restore drill: policies of the token the restored JWT role issued.
    #[serde(default)]
    pub policies: Option<Vec<String>>,
    /// The node the executor worked through.
    #[serde(default)]
    pub leader: Option<String>,
}

impl ExecutorResult {
    pub fn succeeded(&self) -> bool {
        self.result == "Succeeded"
    }
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

/// The Job's state: `None` while it runs.
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
        Some(r) if r.result == "Failed" => JobOutcome::Failed {
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

fn termination_message(pod: &Pod, container: &str) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let status = statuses.iter().find(|s| s.name == container)?;
    let terminated = status
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| status.last_state.as_ref().and_then(|s| s.terminated.as_ref()))?;
    terminated.message.clone()
}

/// The result line of the executor in `container` (named after its operation) in the pod's
/// termination message.
pub fn result_of(pod: &Pod, container: &str) -> Option<ExecutorResult> {
    parse_result(&termination_message(pod, container)?, container)
}

/// The last line of `text` that is a result of `operation` (log lines may precede it).
pub fn parse_result(text: &str, operation: &str) -> Option<ExecutorResult> {
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<ExecutorResult>(l.trim()).ok())
        .find(|r| r.operation == operation && !r.result.is_empty())
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
}
