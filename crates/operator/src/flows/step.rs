//! The one thing a flow asks the driver to do next, and the status to persist afterwards.

use openbao_api::OpenBaoClusterStatus;

use super::names::Revision;

/// The result of a flow's decision: perform `action`; if it succeeds persist `status`.
/// If it fails the driver persists [`super::record_failure`] of the *previous* status instead,
/// and the same step is tried again on the next call (every action is idempotent).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowStep {
    pub action: Action,
    pub status: OpenBaoClusterStatus,
}

/// What the driver does. Flows never advance a phase on the strength of an action's answer:
/// the phase moves only when a later observation shows the effect (OpenBao answers 204 to a
/// `remove-peer` of an unknown id, and raft suffrage follows promote/demote only later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// No upgrade needs anything; nothing to poll for.
    Nothing,
    /// Only the status changes (a phase transition, an acknowledged request, a refusal).
    Record,
    /// Nothing to do until the observed state changes; look again soon.
    Wait,
    /// Take the pre-upgrade raft snapshot; the driver stores its handle in
    /// `status.upgrade.preUpgradeSnapshot`.
    TakeSnapshot,
    /// Make sure the servers of a [`Deployment`] exist and run.
    DeployNodes(Deployment),
    /// Stop every server of `revision` and delete its storage.
    RemoveNodes { revision: Revision },
    /// Restart one server in place on `version`, keeping its storage (rolling update).
    ReplaceNode { node_id: String, version: String },
    /// Point the public endpoint (Service selector, route backends) at the servers of `to`.
    SwitchTraffic { to: Revision },
    /// `sys/storage/raft/promote` on the leader.
    Promote { node_id: String },
    /// `sys/storage/raft/demote` on the leader.
    Demote { node_id: String },
    /// `sys/storage/raft/remove-peer` on the leader (never the leader itself).
    RemovePeer { node_id: String },
    /// `sys/step-down` on `node_id`, the current leader.
    StepDown { node_id: String },
}

impl Action {
    /// Short name for logs and error reasons.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Nothing => "Nothing",
            Action::Record => "Record",
            Action::Wait => "Wait",
            Action::TakeSnapshot => "TakeSnapshot",
            Action::DeployNodes { .. } => "DeployNodes",
            Action::RemoveNodes { .. } => "RemoveNodes",
            Action::ReplaceNode { .. } => "ReplaceNode",
            Action::SwitchTraffic { .. } => "SwitchTraffic",
            Action::Promote { .. } => "Promote",
            Action::Demote { .. } => "Demote",
            Action::RemovePeer { .. } => "RemovePeer",
            Action::StepDown { .. } => "StepDown",
        }
    }

    /// Whether the driver has to call OpenBao or the platform.
    pub fn acts(&self) -> bool {
        !matches!(self, Action::Nothing | Action::Record | Action::Wait)
    }
}

/// A set of new servers: `0..replicas` of `revision` on `version`, joining the raft cluster of
/// the servers of `join` as non-voters (`retry_join_as_non_voter`), without self-initialization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    pub revision: String,
    pub version: String,
    pub replicas: u32,
    pub join: Revision,
}
