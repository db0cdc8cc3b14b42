//! `OpenBaoRestore`: restore one backup into an `OpenBaoCluster` of the same namespace, once.
//!
//! A restore replaces all of the cluster's data, so it runs exactly once: the Job has no
//! retries, a failed restore stays `Failed`, and trying again means creating a new
//! OpenBaoRestore. It takes the cluster's operation lock, so no backup or upgrade overlaps it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::backup::BackupTarget;

/// Restores one backup from an object store into an OpenBaoCluster.
// Clippy reads the repeated `type_ = "string"` of the print columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "openbao.org",
    version = "v1alpha1",
    kind = "OpenBaoRestore",
    doc = "Restores one backup into an OpenBaoCluster of the same namespace, exactly once.",
    namespaced,
    shortname = "baorestore",
    status = "OpenBaoRestoreStatus",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("self == oldSelf").message("spec: an OpenBaoRestore cannot be changed; create a new one to restore something else"),
)]
#[serde(rename_all = "camelCase")]
pub struct OpenBaoRestoreSpec {
    /// Name of the OpenBaoCluster (same namespace) to restore into.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(min = 1, max = 40))]
    pub cluster: String,

    /// The backup to restore.
    pub source: RestoreSource,

    /// OpenBao JWT role the restore Job logs in with. The default role is created at
    /// initialization and trusts only the `<cluster>-restore-serviceaccount` service account.
    #[serde(default = "default_restore_role")]
    #[schemars(length(min = 1, max = 128))]
    pub jwt_auth_role: String,
}

fn default_restore_role() -> String {
    crate::backup::DEFAULT_RESTORE_JWT_ROLE.to_string()
}

/// Where the backup is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// The store, with the same rules as `spec.backup.target` of a cluster. `pathPrefix` is
    /// not used: `key` is the full object key.
    pub target: BackupTarget,

    /// Full object key of the backup, as in the cluster's `status.backup.lastBackupName`.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.contains('..')").message("spec.source.key: must be an object key without a leading / or .."))]
    pub key: String,
}

/// Where a restore stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum RestorePhase {
    #[default]
    Pending,
    Running,
    Completed,
    Failed,
}

/// What the restore did, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenBaoRestoreStatus {
    /// `Pending` (waiting for the cluster or its operation lock), `Running` (the Job runs),
    /// `Completed` or `Failed`. The last two are final.
    #[serde(default)]
    pub phase: RestorePhase,
    /// CamelCase reason, e.g. `WaitingForLock`, `SealMismatch`, `ObjectMissing`, `Restored`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened, and what to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The restore Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// When the Job was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the restore reached `Completed` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (e.g. `RestoreComplete`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
