//! Upgrades: how a change of `spec.version` is carried out (`spec.upgrade`) and the state of the
//! upgrade in progress (`status.upgrade`, `status.blueGreen`).
//!
//! Everything an interrupted upgrade needs to continue lives in status, so an operator that is
//! restarted at any point resumes exactly where it stopped. Requests a person makes during an
//! upgrade (promote, roll back, retry) are tokens in the spec that status acknowledges: a
//! GitOps tool can set them declaratively, and setting the same token again does nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// How a change of `spec.version` is rolled out.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeSpec {
    /// `RollingUpdate`: replace one server at a time in place, highest ordinal first and the
    /// leader last. `BlueGreen`: start a second set of servers on the new version beside the
    /// running one, let them catch up as non-voters, promote them, move traffic, then remove the
    /// old set; it can be rolled back until the new set holds the only votes.
    #[serde(default)]
    pub strategy: UpgradeStrategy,

    /// Take a raft snapshot before anything changes, with the backup executor, into
    /// `spec.backup`'s store under `<pathPrefix>/pre-upgrade/` (which backup retention never
    /// touches). It is the way back once an upgrade is past the point where it can be rolled back.
    /// Three failed attempts abort the upgrade before any server changed.
    #[serde(default)]
    pub pre_upgrade_snapshot: bool,

    /// Settings of the `BlueGreen` strategy.
    #[serde(default)]
    pub blue_green: BlueGreenSpec,

    /// One-shot requests for the upgrade in progress. Each is a token: setting a new value asks
    /// once, and `status.upgrade.acknowledged` shows the last token acted upon.
    #[serde(default)]
    pub requests: UpgradeRequests,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum UpgradeStrategy {
    #[default]
    RollingUpdate,
    BlueGreen,
}

/// Settings of a blue/green upgrade.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenSpec {
    /// Promote the new servers as soon as they have caught up. When false the upgrade waits in
    /// phase `AwaitingPromotion` until `requests.promote` carries a new token (or this becomes true).
    #[serde(default = "default_true")]
    pub auto_promote: bool,

    /// How long the new servers replicate as non-voters at least before they may be promoted,
    /// as a duration such as `30s` or `5m`. Catching up is always required as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(h|m|s))+$')").message("spec.upgrade.blueGreen.minSyncDuration: must be a duration such as 30s, 5m or 1h30m"))]
    pub min_sync_duration: Option<String>,

    /// Failed steps in a row after which an upgrade that can still be rolled back is rolled back.
    /// Past that point failed steps are retried for as long as it takes, since the only way
    /// forward is finishing.
    #[serde(default = "default_max_job_failures")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("spec.upgrade.blueGreen.maxJobFailures: must be between 1 and 100"))]
    pub max_job_failures: i32,
}

impl Default for BlueGreenSpec {
    fn default() -> Self {
        Self {
            auto_promote: true,
            min_sync_duration: None,
            max_job_failures: default_max_job_failures(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_max_job_failures() -> i32 {
    5
}

/// Requests for the upgrade in progress. A request is pending while its token differs from the
/// one in `status.upgrade.acknowledged`; tokens set while no upgrade needs them are acknowledged
/// and ignored.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeRequests {
    /// Promote the caught-up new servers of a blue/green upgrade waiting in `AwaitingPromotion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$')").message("spec.upgrade.requests.promote: must be a token of 1-63 letters, digits, '.', '_' or '-'"))]
    pub promote: Option<String>,

    /// Roll a blue/green upgrade back to the old servers. Only possible before the new servers
    /// hold the only votes; later the request is refused and the way back is restoring the
    /// pre-upgrade snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$')").message("spec.upgrade.requests.rollback: must be a token of 1-63 letters, digits, '.', '_' or '-'"))]
    pub rollback: Option<String>,

    /// Try again an upgrade that was aborted or rolled back (which otherwise does not start again
    /// until `spec.version` changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$')").message("spec.upgrade.requests.retry: must be a token of 1-63 letters, digits, '.', '_' or '-'"))]
    pub retry: Option<String>,
}

/// Where an upgrade stands. Rolling: `PreUpgradeSnapshot` -> `RollingUpdate`. Blue/green:
/// `PreUpgradeSnapshot` -> `DeployingGreen` -> `JoiningMesh` -> `Syncing` -> (`AwaitingPromotion`)
/// -> `Promoting` -> `DemotingBlue` (the point of no return; traffic moves to green) -> `Cleanup`,
/// or `RollingBack` before the point of no return. Every upgrade ends in `Idle`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum UpgradePhase {
    // Variants carry no doc comments: schemars would turn the enum into a `oneOf` of
    // single-value schemas and lose the plain value list `kubectl explain` shows.
    #[default]
    Idle,
    PreUpgradeSnapshot,
    RollingUpdate,
    DeployingGreen,
    JoiningMesh,
    Syncing,
    AwaitingPromotion,
    Promoting,
    DemotingBlue,
    Cleanup,
    RollingBack,
}

/// The upgrade in progress and what the last one left behind, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    /// Where the upgrade stands; `Idle` when none is in progress. Rolling: `PreUpgradeSnapshot`,
    /// `RollingUpdate`. Blue/green: `PreUpgradeSnapshot`, `DeployingGreen`, `JoiningMesh`,
    /// `Syncing`, `AwaitingPromotion` (only without autoPromote), `Promoting`, `DemotingBlue`
    /// (the point of no return: traffic moves to the new servers), `Cleanup`; `RollingBack`
    /// returns to the old servers before that point.
    #[serde(default)]
    pub phase: UpgradePhase,
    /// Strategy of the upgrade in progress, fixed when it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<UpgradeStrategy>,
    /// Version the upgrade started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// Version the upgrade goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
    /// When the upgrade started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the current phase (for rolling: the current server's step) started; step timeouts count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_started_at: Option<Time>,
    /// Rolling: servers already running the new version and caught up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed_pods: Vec<String>,
    /// Rolling: the leader's raft index once the server being waited on was back. The server
    /// counts as caught up only after it applied an entry past it: autopilot trusts the
    /// server's own heartbeats, while the leader may not reach a restarted server yet (it still
    /// dials the pod's old address for as long as DNS caches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_mark: Option<u64>,
    /// Failed steps in a row in the current phase.
    #[serde(default)]
    pub failures: i32,
    /// The last failure, timeout or refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<UpgradeError>,
    /// Whether `requests.rollback` can still return to the old servers.
    #[serde(default)]
    pub rollback_available: bool,
    /// Object key of the pre-upgrade snapshot in `spec.backup`'s bucket (the way back after the
    /// point of no return).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_upgrade_snapshot: Option<String>,
    /// An upgrade to this version was aborted or rolled back. It does not start again until
    /// `spec.version` changes or `spec.upgrade.requests.retry` carries a new token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_version: Option<String>,
    /// The request tokens acted upon last.
    #[serde(default)]
    pub acknowledged: AcknowledgedRequests,
    /// What is happening, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A failure, timeout or refusal of an upgrade step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeError {
    /// CamelCase reason, e.g. `DowngradeRefused`, `RollbackRefused`, `StepFailed`, `Timeout`.
    pub reason: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// When it happened.
    pub at: Time,
}

/// Which set of servers is live. Servers of revision `r` are named `<cluster>-<r>-<ordinal>`;
/// without a revision (a cluster that never had a blue/green upgrade) `<cluster>-<ordinal>`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStatus {
    /// Revision of the live (blue) servers; absent for the cluster's original servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_revision: Option<String>,
    /// Revision of the new (green) servers while a blue/green upgrade is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub green_revision: Option<String>,
}

/// The last token of each `spec.upgrade.requests` entry that the operator acted upon (or
/// acknowledged and ignored because no upgrade needed it).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcknowledgedRequests {
    /// Last `requests.promote` token handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<String>,
    /// Last `requests.rollback` token handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// Last `requests.retry` token handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
}
