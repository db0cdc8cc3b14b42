//! Raft membership and autopilot health: read the leader's autopilot state with the operator's
//! login (the read), decide `RaftMembershipReady` and whether a voting quorum serves (pure), so
//! that `Available` means voters and not only ready pods.
//!
//! The operator policy (`selfinit::OPERATOR_POLICY`) grants `read` on
//! `sys/storage/raft/autopilot/*`; `crates/operator/tests/raft_membership_processes.rs` proves
//! the read and every decision against a real 3-server raft cluster.

use openbao_api::conditions::{self as cond, Desired, Status};
use openbao_client::{AutopilotState, BaoClient};
use std::time::Duration;

/// How long the autopilot read may take before it counts as unreadable.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What this reconcile learned of raft membership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RaftObservation {
    /// Not read: the cluster does not serve yet, or the operator has no login to it.
    #[default]
    NotRead,
    /// Logged in, but the autopilot state could not be read; why (never a token).
    Unreadable(String),
    /// Autopilot's view, reduced to what the status reports.
    Read(Membership),
}

/// Autopilot's view of the voters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Node id of the leader, if autopilot names one.
    pub leader: Option<String>,
    /// Servers that vote.
    pub voters: usize,
    /// Voters autopilot reports healthy.
    pub healthy_voters: usize,
    /// Autopilot's overall verdict (every server, non-voters included, healthy).
    pub healthy: bool,
}

impl Membership {
    pub fn from_autopilot(state: &AutopilotState) -> Self {
        let healthy_voters = state
            .voters
            .iter()
            .filter(|id| state.servers.get(*id).is_some_and(|s| s.healthy))
            .count();
        Self {
            leader: Some(state.leader.clone()).filter(|l| !l.is_empty()),
            voters: state.voters.len(),
            healthy_voters,
            healthy: state.healthy,
        }
    }
}

/// Reads the autopilot state through `client` (logged in as the operator).
pub async fn observe(client: &BaoClient) -> RaftObservation {
    match tokio::time::timeout(READ_TIMEOUT, client.autopilot_state()).await {
        Err(_) => RaftObservation::Unreadable(format!(
            "reading the raft autopilot state: no answer within {} s",
            READ_TIMEOUT.as_secs()
        )),
        // `BaoError` never carries a token (crates/bao/src/error.rs).
        Ok(Err(e)) => RaftObservation::Unreadable(format!("reading the raft autopilot state: {e}")),
        Ok(Ok(state)) => RaftObservation::Read(Membership::from_autopilot(&state)),
    }
}

/// `RaftMembershipReady` for a cluster of `replicas` servers. `has_login`: whether the operator
/// logs in to this cluster at all (`selfInit.oidc.enabled`); without it membership is never read.
pub fn condition(observation: &RaftObservation, replicas: i32, has_login: bool) -> Desired {
    let t = cond::RAFT_MEMBERSHIP_READY;
    let expected = replicas.max(0) as usize;
    match observation {
        RaftObservation::NotRead if !has_login => Desired::new(
            t,
            Status::Unknown,
            "NoOperatorLogin",
            "the operator reads raft membership with its JWT login, which selfInit.oidc.enabled: false turns off; Available follows ready pods only",
        ),
        RaftObservation::NotRead => Desired::new(
            t,
            Status::Unknown,
            "NotObserved",
            "raft membership is read once the cluster is initialized, serves and the operator logged in",
        ),
        RaftObservation::Unreadable(why) => Desired::new(t, Status::Unknown, "Unknown", why.clone()),
        RaftObservation::Read(m) => {
            let counts = format!("{}/{expected} voters healthy ({} voting)", m.healthy_voters, m.voters);
            match &m.leader {
                None => Desired::new(t, Status::False, "NoLeader", format!("raft has no leader; {counts}")),
                Some(_) if m.voters < expected => Desired::new(
                    t,
                    Status::False,
                    "VotersMissing",
                    format!(
                        "{counts}: {} of {expected} expected servers do not vote",
                        expected - m.voters
                    ),
                ),
                Some(leader) if m.healthy_voters < expected || !m.healthy => Desired::new(
                    t,
                    Status::False,
                    "Unhealthy",
                    format!("{counts}, leader {leader}; autopilot reports the cluster unhealthy"),
                ),
                Some(leader) => Desired::new(t, Status::True, "Healthy", format!("{counts}, leader {leader}")),
            }
        }
    }
}

/// Whether a voting quorum serves, for `Available`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// Membership was not read: `Available` follows ready pods alone.
    NotRead,
    /// A leader and a majority of the expected voters healthy; `full` when every expected voter is.
    Serving { full: bool, message: String },
    /// No quorum, no leader, or membership unreadable: reason and message for `Available`.
    Lost { reason: &'static str, message: String },
}

/// Whether a voting quorum of the `replicas` expected servers serves.
pub fn quorum(observation: &RaftObservation, replicas: i32) -> Quorum {
    let expected = replicas.max(0) as usize;
    match observation {
        RaftObservation::NotRead => Quorum::NotRead,
        RaftObservation::Unreadable(why) => Quorum::Lost {
            reason: "RaftMembershipUnknown",
            message: why.clone(),
        },
        RaftObservation::Read(m) => {
            let counts = format!("{}/{expected} voters healthy", m.healthy_voters);
            if m.leader.is_none() {
                Quorum::Lost {
                    reason: "NoLeader",
                    message: format!("raft has no leader; {counts}"),
                }
            } else if m.healthy_voters <= expected / 2 {
                Quorum::Lost {
                    reason: "NoRaftQuorum",
                    message: format!("{counts}: no raft quorum"),
                }
            } else {
                Quorum::Serving {
                    full: m.healthy_voters >= expected && m.voters >= expected && m.healthy,
                    message: counts,
                }
            }
        }
    }
}

/// Look again this soon while membership was unready for less than [`SETTLING_FOR`]: a new
/// cluster's servers become voters a few seconds after their pods are ready, and `Available`
/// (`AllReplicasReady`) waits for that look (each look is a login and one read).
const SETTLING_REQUEUE: Duration = Duration::from_secs(1);
/// How long membership usually takes to settle: autopilot promotes a joined server after its
/// stabilization time (2 s Development, 10 s Hardened) plus its update intervals.
const SETTLING_FOR: Duration = Duration::from_secs(60);
/// Look again this soon once membership has been unready for longer (each look is a login).
const UNREADY_REQUEUE: Duration = Duration::from_secs(30);

/// Whether membership is read and not (yet) healthy.
pub fn settling(observation: &RaftObservation, replicas: i32) -> bool {
    match observation {
        RaftObservation::NotRead => false,
        _ => condition(observation, replicas, true).status != Status::True,
    }
}

/// When to reconcile again for membership's sake (`None`: it is healthy or not read). It moves
/// without any watch event, so an unready membership is looked at again soon, and less often
/// once it stayed unready for a while. `unready_since`: the `RaftMembershipReady` condition's
/// last transition, when it is not True.
pub fn requeue_after(
    observation: &RaftObservation,
    replicas: i32,
    unready_since: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Option<Duration> {
    if !settling(observation, replicas) {
        return None;
    }
    let unready_for = unready_since
        .map(|t| now.duration_since(t).as_secs().max(0) as u64)
        .unwrap_or(0);
    Some(if unready_for < SETTLING_FOR.as_secs() {
        SETTLING_REQUEUE
    } else {
        UNREADY_REQUEUE
    })
}

/// The `RaftMembershipReady` condition's last transition in `conditions`, when it is not True.
pub fn unready_since(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<jiff::Timestamp> {
    cond::find(conditions, cond::RAFT_MEMBERSHIP_READY)
        .filter(|c| c.status != Status::True.as_str())
        .map(|c| c.last_transition_time.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An autopilot state as OpenBao answers it: `(id, voter, healthy)` per server.
    fn state(leader: &str, servers: &[(&str, bool, bool)]) -> AutopilotState {
        let map: serde_json::Map<String, serde_json::Value> = servers
            .iter()
            .map(|(id, voter, healthy)| {
                let status = if *id == leader {
                    "leader"
                } else if *voter {
                    "voter"
                } else {
                    "non-voter"
                };
                (
                    id.to_string(),
                    json!({"id": id, "healthy": healthy, "status": status,
                           "node_type": if *voter {"voter"} else {"non-voter"}}),
                )
            })
            .collect();
        serde_json::from_value(json!({
            "healthy": servers.iter().all(|s| s.2),
            "failure_tolerance": 0,
            "leader": leader,
            "voters": servers.iter().filter(|s| s.1).map(|s| s.0).collect::<Vec<_>>(),
            "servers": map,
        }))
        .unwrap()
    }

    fn read(s: AutopilotState) -> RaftObservation {
        RaftObservation::Read(Membership::from_autopilot(&s))
    }

    #[test]
    fn all_voters_healthy_is_ready() {
        let o = read(state("a", &[("a", true, true), ("b", true, true), ("c", true, true)]));
        let c = condition(&o, 3, true);
        assert_eq!((c.status, c.reason.as_str()), (Status::True, "Healthy"));
        assert_eq!(c.message, "3/3 voters healthy (3 voting), leader a");
        assert!(matches!(quorum(&o, 3), Quorum::Serving { full: true, .. }));
        assert!(!settling(&o, 3));
    }

    #[test]
    fn a_stopped_voter_is_unhealthy_but_keeps_quorum() {
        let o = read(state("a", &[("a", true, true), ("b", true, true), ("c", true, false)]));
        let c = condition(&o, 3, true);
        assert_eq!((c.status, c.reason.as_str()), (Status::False, "Unhealthy"));
        assert!(c.message.starts_with("2/3 voters healthy"), "{}", c.message);
        assert!(matches!(quorum(&o, 3), Quorum::Serving { full: false, .. }));
        assert!(settling(&o, 3));
    }

    #[test]
    fn a_joined_non_voter_is_a_missing_voter() {
        let o = read(state("a", &[("a", true, true), ("b", true, true), ("c", false, true)]));
        let c = condition(&o, 3, true);
        assert_eq!((c.status, c.reason.as_str()), (Status::False, "VotersMissing"));
        assert!(
            c.message.contains("1 of 3 expected servers do not vote"),
            "{}",
            c.message
        );
        assert!(matches!(quorum(&o, 3), Quorum::Serving { full: false, .. }));
    }

    #[test]
    fn no_leader_or_no_majority_loses_quorum() {
        let o = read(state("", &[("a", true, true), ("b", true, true), ("c", true, true)]));
        assert_eq!(condition(&o, 3, true).reason, "NoLeader");
        assert!(matches!(quorum(&o, 3), Quorum::Lost { reason: "NoLeader", .. }));
        let o = read(state("a", &[("a", true, true), ("b", true, false), ("c", true, false)]));
        assert!(matches!(
            quorum(&o, 3),
            Quorum::Lost {
                reason: "NoRaftQuorum",
                ..
            }
        ));
        // Voters beyond the expected ones (a blue/green upgrade) still count.
        let six: Vec<(&str, bool, bool)> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|i| (*i, true, true))
            .collect();
        assert_eq!(condition(&read(state("a", &six)), 3, true).reason, "Healthy");
    }

    #[test]
    fn unread_membership_is_unknown_and_only_an_unreadable_one_blocks_available() {
        let c = condition(&RaftObservation::NotRead, 3, false);
        assert_eq!((c.status, c.reason.as_str()), (Status::Unknown, "NoOperatorLogin"));
        assert_eq!(condition(&RaftObservation::NotRead, 3, true).reason, "NotObserved");
        assert_eq!(quorum(&RaftObservation::NotRead, 3), Quorum::NotRead);
        let o = RaftObservation::Unreadable("reading the raft autopilot state: HTTP 503".into());
        let c = condition(&o, 3, true);
        assert_eq!((c.status, c.reason.as_str()), (Status::Unknown, "Unknown"));
        assert!(matches!(
            quorum(&o, 3),
            Quorum::Lost {
                reason: "RaftMembershipUnknown",
                ..
            }
        ));
        assert!(settling(&o, 3));
    }

    #[test]
    fn unready_membership_is_looked_at_soon_then_less_often() {
        let now: jiff::Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let healthy = read(state("a", &[("a", true, true)]));
        assert_eq!(requeue_after(&healthy, 1, None, now), None);
        assert_eq!(requeue_after(&RaftObservation::NotRead, 1, None, now), None);
        let unhealthy = read(state("a", &[("a", true, true), ("b", true, false), ("c", true, true)]));
        let since = |secs: i64| Some(now - jiff::SignedDuration::from_secs(secs));
        assert_eq!(requeue_after(&unhealthy, 3, None, now), Some(SETTLING_REQUEUE));
        assert_eq!(requeue_after(&unhealthy, 3, since(10), now), Some(SETTLING_REQUEUE));
        assert_eq!(requeue_after(&unhealthy, 3, since(120), now), Some(UNREADY_REQUEUE));
    }

    #[test]
    fn a_single_server_cluster_is_its_own_quorum() {
        let o = read(state("a", &[("a", true, true)]));
        assert_eq!(condition(&o, 1, true).status, Status::True);
        assert!(matches!(quorum(&o, 1), Quorum::Serving { full: true, .. }));
    }
}
