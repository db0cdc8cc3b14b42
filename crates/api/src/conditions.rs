//! Condition types and reasons the operator reports, and a pure helper to update a list.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const AVAILABLE: &str = "Available";
pub const TLS_READY: &str = "TLSReady";
pub const OPENBAO_INITIALIZED: &str = "OpenBaoInitialized";
pub const OPENBAO_SEALED: &str = "OpenBaoSealed";
pub const USER_ACCESS_BOOTSTRAP: &str = "UserAccessBootstrap";
pub const GATEWAY_INTEGRATION_READY: &str = "GatewayIntegrationReady";
pub const DEGRADED: &str = "Degraded";
pub const SECURITY_RISK: &str = "SecurityRisk";
/// Whether the configured audit devices are in the servers' configuration and every server runs
/// it. False with reason `NotConfigured` when `spec.audit` is empty: no audit trail exists.
pub const AUDIT_READY: &str = "AuditReady";
/// Written by the backup controller: whether `spec.backup` can run (schedule, endpoint,
/// credentials Secret) and how the last backup went.
/// Whether a seal migration runs (`True`, reason the phase) or why one cannot (`False`, e.g.
/// `SealMigrationRoleMissing`); `False` with reason `Idle` otherwise.
pub const SEAL_MIGRATION: &str = "SealMigration";
pub const BACKUP_CONFIGURATION_READY: &str = "BackupConfigurationReady";
/// Whether raft has a leader and every expected server votes and is healthy, as the leader's
/// autopilot reports it (`sys/storage/raft/autopilot/state`, read with the operator's login).
pub const RAFT_MEMBERSHIP_READY: &str = "RaftMembershipReady";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// A condition the reconcile wants to report; the timestamp is filled in by [`set_condition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: Status,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(type_: &'static str, status: Status, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Sets `desired` in `conditions`, keeping `lastTransitionTime` when the status did not change,
/// so that re-applying the same status writes nothing new.
pub fn set_condition(conditions: &mut Vec<Condition>, desired: Desired, generation: Option<i64>, now: Time) {
    let existing = conditions.iter().position(|c| c.type_ == desired.type_);
    let transition = match existing {
        Some(i) if conditions[i].status == desired.status.as_str() => conditions[i].last_transition_time.clone(),
        _ => now,
    };
    let condition = Condition {
        type_: desired.type_.to_string(),
        status: desired.status.as_str().to_string(),
        reason: desired.reason,
        message: desired.message,
        observed_generation: generation,
        last_transition_time: transition,
    };
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn keeps_transition_time_while_status_is_unchanged() {
        let mut list = Vec::new();
        set_condition(
            &mut list,
            Desired::new(AVAILABLE, Status::False, "Starting", "a"),
            Some(1),
            t("2026-01-01T00:00:00Z"),
        );
        set_condition(
            &mut list,
            Desired::new(AVAILABLE, Status::False, "Waiting", "b"),
            Some(2),
            t("2026-01-01T00:01:00Z"),
        );
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last_transition_time, t("2026-01-01T00:00:00Z"));
        assert_eq!(list[0].reason, "Waiting");
        set_condition(
            &mut list,
            Desired::new(AVAILABLE, Status::True, "Ready", "c"),
            Some(2),
            t("2026-01-01T00:02:00Z"),
        );
        assert_eq!(list[0].last_transition_time, t("2026-01-01T00:02:00Z"));
    }
}
