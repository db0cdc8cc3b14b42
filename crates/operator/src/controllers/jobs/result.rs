//! The executor's result line: the one JSON line each executor (`openbao-operator backup`,
//! `restore`, `verify-backup`) writes to stdout and to its result file (the termination log,
//! kept by the kubelet as the container's termination message), and the controllers read back.
//! Writer and reader share this one type, so the wire contract cannot drift between them.

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

/// `result` of a run that did what it was asked.
pub const SUCCEEDED: &str = "Succeeded";
/// `result` of a run that failed; `reason` says why.
pub const FAILED: &str = "Failed";

/// The result line (success and failure share it; absent fields are left out and read as
/// `None`). Fields a controller does not use are still written, for people reading the logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorResult {
    /// The executor's operation, which is also its container's name.
    pub operation: String,
    /// [`SUCCEEDED`] or [`FAILED`].
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Backup: milliseconds of the snapshot stream and upload alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_ms: Option<u64>,
    /// The node the executor worked through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Backup: keys deleted by retention, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Vec<String>>,
    /// Backup: set when the backup succeeded but retention did not finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_error: Option<String>,
    /// Restore drill: milliseconds from the download's start to an active server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_ms: Option<u64>,
    /// Restore drill: the cluster id the restored data carries (the backed-up cluster's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_cluster_id: Option<String>,
    /// Restore drill: policies of the token the restored JWT role issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<String>>,
}

impl ExecutorResult {
    /// The line of a run of `operation` that succeeded; the caller fills in what it did.
    pub fn succeeded_run(operation: &str) -> Self {
        Self {
            operation: operation.to_string(),
            result: SUCCEEDED.to_string(),
            ..Self::default()
        }
    }

    /// The line of a run of `operation` that failed for `reason`.
    pub fn failed_run(operation: &str, reason: &str, message: String, duration_ms: u64) -> Self {
        Self {
            operation: operation.to_string(),
            result: FAILED.to_string(),
            reason: Some(reason.to_string()),
            message: Some(message),
            duration_ms: Some(duration_ms),
            ..Self::default()
        }
    }

    pub fn succeeded(&self) -> bool {
        self.result == SUCCEEDED
    }

    pub fn failed(&self) -> bool {
        self.result == FAILED
    }

    /// The line as written: one line of JSON.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a result line serializes")
    }
}

/// The termination message of `container` in `pod` (the current run's, else the last one's).
pub fn termination_message(pod: &Pod, container: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_line_reads_back_the_same() {
        let mut ok = ExecutorResult::succeeded_run("backup");
        ok.key = Some("p/ns/c/t.snap".into());
        ok.size = Some(28697);
        ok.deleted = Some(Vec::new());
        let line = ok.to_line();
        assert!(!line.contains('\n') && !line.contains("null"), "{line}");
        assert!(line.contains(r#""deleted":[]"#), "{line}");
        assert_eq!(parse_result(&format!("log\n{line}\n"), "backup"), Some(ok.clone()));
        assert!(ok.succeeded() && !ok.failed());
        let failed = ExecutorResult::failed_run("restore", "SealMismatch", "other seal".into(), 12);
        let back = parse_result(&failed.to_line(), "restore").unwrap();
        assert!(back.failed() && back.reason.as_deref() == Some("SealMismatch"));
        assert_eq!(
            parse_result(&failed.to_line(), "backup"),
            None,
            "another operation's line"
        );
    }
}
