//! The state of a seal migration in progress (`status.sealMigration`): a running cluster moving
//! from one seal to another (`static` <-> `transit`) after `spec.unseal.type` changed.
//!
//! Like `status.upgrade`, it holds everything an interrupted migration needs to continue, so
//! an operator restarted at any point resumes where it stopped. The procedure and the OpenBao
//! facts behind it are in `docs/seal-migration.md`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::{UnsealType, UpgradeError};

/// Where a seal migration stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum SealMigrationPhase {
    /// No migration in progress.
    #[default]
    Idle,
    /// Taking a raft snapshot first (when `spec.backup` is set).
    PreMigrationSnapshot,
    /// Making sure the operator holds a recovery key: OpenBao unseals a server in migration
    /// mode only with it, and self-initialized clusters have none.
    RecoveryKey,
    /// Restarting the standbys one at a time with the old seal disabled next to the new one,
    /// each unsealed with the recovery key (`migrate`).
    Standbys,
    /// Stepping the old leader down: the migrated server that takes over rewraps the keys.
    StepDown,
    /// Restarting every server with only the new seal, the old leader first.
    Finalize,
}

/// `status.sealMigration`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealMigrationStatus {
    #[serde(default)]
    pub phase: SealMigrationPhase,
    /// The seal the cluster had when the migration started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<UnsealType>,
    /// The seal it moves to (`spec.unseal.type` when it started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<UnsealType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the current phase or server step started (its timeout counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_started_at: Option<Time>,
    /// Where the pre-migration snapshot was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_migration_snapshot: Option<String>,
    /// The server that led when the standbys were migrated; it is migrated last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Servers done in the current phase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed: Vec<String>,
    /// What is happening now, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<UpgradeError>,
    /// Failed steps in a row in this phase.
    #[serde(default)]
    pub failures: i32,
    /// A migration to this seal was given up before any server changed; it does not start
    /// again by itself until `spec.unseal.type` changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_to: Option<UnsealType>,
}
