//! Observed state of an `OpenBaoCluster`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// What the operator observed and did, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenBaoClusterStatus {
    /// Summary of the cluster's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// Pods that are ready (unsealed and serving).
    #[serde(default)]
    pub ready_replicas: i32,
    /// Version the cluster runs once it is initialized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// Pod name of the raft leader, as OpenBao reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_leader: Option<String>,
    /// True once OpenBao has initialized itself; from then on no pod carries `initialize` requests.
    #[serde(default)]
    pub initialized: bool,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The audience OpenBao's JWT roles accept (derived from namespace and name): pass it to
    /// `kubectl create token <service account> --audience <this>` to log in. Recorded when the
    /// cluster initializes with it or the operator's login with it succeeds; absent on a
    /// cluster an older operator initialized with the shared `openbao-internal` audience until
    /// its roles are moved over (condition `Degraded`, reason `LegacyTokenAudience`, says how).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_audience: Option<String>,
    /// Certificates the operator issued (OperatorManaged TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
    /// Available, TLSReady, OpenBaoInitialized, OpenBaoSealed, UserAccessBootstrap,
    /// GatewayIntegrationReady, Degraded and SecurityRisk, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The upgrade in progress (phase and everything needed to resume it), and what the last
    /// one left behind: acknowledged requests, an aborted version, the last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<crate::upgrade::UpgradeStatus>,
    /// Which set of servers is live (blue) and which is being brought up (green).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<crate::upgrade::BlueGreenStatus>,
    /// What the scheduled and requested backups did, and when the next one is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::backup::BackupStatus>,
    /// The backup, restore or upgrade that holds the cluster now; the others wait for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_lock: Option<crate::backup::OperationLock>,
    /// The seal migration in progress after `spec.unseal.type` changed (`static` <-> `transit`),
    /// everything needed to resume it, and how the last one ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_migration: Option<crate::seal_migration::SealMigrationStatus>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ClusterPhase {
    Initializing,
    Running,
    Degraded,
    Paused,
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsStatus {
    /// Expiry of the current server certificate (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_not_after: Option<String>,
    /// Expiry of the current CA certificate (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_not_after: Option<String>,
}
