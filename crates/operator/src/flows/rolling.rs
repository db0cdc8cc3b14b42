//! Rolling upgrade: the servers are restarted on the new version in place, one at a time,
//! highest ordinal first and the leader last (after a step-down moved leadership to a server
//! that already runs the new version). Each server is waited on until it is unsealed, votes and
//! has caught up with the leader before the next one is touched; timeouts count per server.
//!
//! ```text
//! Idle -> PreUpgradeSnapshot -> RollingUpdate -> Idle
//! ```
//!
//! The first restarted server is the point of no return: a server that ran the new version is
//! never put back on the old one (OpenBao 2.7 data never becomes active on 2.6). Before it the
//! upgrade can be aborted; after it a changed `spec.version` or a rollback request is refused
//! with the way back (the pre-upgrade snapshot) and the upgrade finishes.

use openbao_api::{OpenBaoClusterSpec, OpenBaoClusterStatus, UpgradePhase, UpgradeStatus, UpgradeStrategy};
use std::time::Duration;

use super::common::{self, act, in_phase, pending, report, wait, with};
use super::names::Revision;
use super::observed::{NodeView, Observed};
use super::step::{Action, FlowStep};

/// How long one server may take to come back and catch up before it is reported.
const NODE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// When nothing at all is written, no entry can show that the leader reaches a restarted
/// server; after this long any stale address of it has expired from DNS caches (Kubernetes
/// DNS caches records for 30 s) and the leader has dialled again (its dials time out in 10 s).
const QUIET_REACH: Duration = Duration::from_secs(45);

/// The next step of a rolling upgrade (or of starting one, from `Idle`).
pub fn next_step(spec: &OpenBaoClusterSpec, status: &OpenBaoClusterStatus, observed: &Observed) -> FlowStep {
    let u = common::upgrade_of(status);
    match u.phase {
        UpgradePhase::Idle => common::idle(spec, status, observed, UpgradeStrategy::RollingUpdate),
        UpgradePhase::PreUpgradeSnapshot | UpgradePhase::RollingUpdate => Roll {
            spec,
            status,
            observed,
            set: super::upgrade::live_revision(status),
            to: u.to_version.clone().unwrap_or_default(),
            u,
        }
        .decide(),
        _ => {
            let mut u = u;
            let message = format!("phase {:?} belongs to a blue/green upgrade, not a rolling one", u.phase);
            report(&mut u, "InconsistentStatus", message, observed.now);
            common::settle(status, with(status, u), Action::Nothing)
        }
    }
}

struct Roll<'a> {
    spec: &'a OpenBaoClusterSpec,
    status: &'a OpenBaoClusterStatus,
    observed: &'a Observed,
    /// The servers being upgraded: the live set.
    set: Revision,
    to: String,
    u: UpgradeStatus,
}

impl Roll<'_> {
    fn decide(mut self) -> FlowStep {
        let now = self.observed.now;
        let nodes = self.observed.nodes_of(&self.set);
        let touched = !self.u.completed_pods.is_empty() || nodes.iter().any(|n| n.version == self.to);
        self.u.rollback_available = !touched;
        let requests = &self.spec.upgrade.requests;
        if let Some(token) = pending(&requests.retry, &self.u.acknowledged.retry) {
            self.u.acknowledged.retry = Some(token);
        }
        if let Some(token) = pending(&requests.promote, &self.u.acknowledged.promote) {
            self.u.acknowledged.promote = Some(token);
        }
        if let Some(token) = pending(&requests.rollback, &self.u.acknowledged.rollback) {
            self.u.acknowledged.rollback = Some(token.clone());
            if !touched {
                return self.abort("RollbackRequested", format!("rollback requested (token {token})"));
            }
            let message = format!(
                "rollback refused: servers already run {} and are never put back on an older version; {}",
                self.to,
                common::way_back(&self.u)
            );
            report(&mut self.u, "RollbackRefused", message, now);
        }
        if self.spec.version != self.to {
            if !touched {
                let message = format!(
                    "spec.version changed to {} before any server was replaced",
                    self.spec.version
                );
                return self.abort("VersionChanged", message);
            }
            let message = format!(
                "spec.version changed to {} after servers were replaced: finishing the upgrade to {}; {}",
                self.spec.version,
                self.to,
                common::way_back(&self.u)
            );
            report(&mut self.u, "VersionChangeRefused", message, now);
        }
        if self.u.phase == UpgradePhase::PreUpgradeSnapshot {
            return common::snapshot(self.status, self.u, now);
        }
        self.roll(nodes)
    }

    fn abort(mut self, reason: &str, message: String) -> FlowStep {
        let from = self.u.from_version.clone().unwrap_or_default();
        self.u.last_error = Some(common::error(reason, message.clone(), self.observed.now));
        let text = format!("upgrade aborted before any server changed; still on {from}: {message}");
        act(Action::Record, common::aborted(self.status, &self.u, text))
    }

    fn roll(mut self, nodes: Vec<&NodeView>) -> FlowStep {
        let now = self.observed.now;
        let Some(raft) = &self.observed.raft else {
            self.u.message = Some("no active server to read raft state from".into());
            return wait(with(self.status, self.u));
        };
        // A restarted server must be back, voting and caught up before anything else happens.
        let restarted = nodes
            .iter()
            .find(|n| n.version == self.to && !self.u.completed_pods.contains(&n.id));
        if let Some(node) = restarted {
            if node.serves(&self.to) && raft.is_voter(&node.id) && raft.caught_up(&node.id) && raft.autopilot_healthy()
            {
                // Autopilot's view comes from the server's own heartbeats to the leader; only an
                // entry written after the restart and applied by the server shows that the
                // leader's appends reach it. Until then stopping another server could leave the
                // leader without a quorum it can replicate to, and writes would stall.
                let index = |id: &str| raft.autopilot.as_ref()?.servers.get(id).map(|s| s.last_index);
                let (leader_index, own_index) = (index(&raft.leader), index(&node.id));
                let Some(mark) = self.u.replication_mark else {
                    self.u.replication_mark = leader_index;
                    self.u.phase_started_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
                    self.u.message = Some(format!(
                        "{} is back on {}; waiting for it to apply an entry past raft index {}",
                        node.id,
                        self.to,
                        leader_index.unwrap_or_default()
                    ));
                    return act(Action::Record, with(self.status, self.u));
                };
                let reached = own_index.is_some_and(|i| i > mark);
                let quiet = leader_index == Some(mark) && in_phase(&self.u, now) >= QUIET_REACH;
                if !reached && !quiet {
                    self.u.message = Some(format!(
                        "waiting for the leader's appends to reach {} (applied {} of {mark})",
                        node.id,
                        own_index.unwrap_or_default()
                    ));
                    return wait(with(self.status, self.u));
                }
                self.u.replication_mark = None;
                self.u.completed_pods.push(node.id.clone());
                self.u.phase_started_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
                self.u.failures = 0;
                self.u.message = Some(format!(
                    "{} runs {} and caught up ({}/{} servers done)",
                    node.id,
                    self.to,
                    self.u.completed_pods.len(),
                    nodes.len()
                ));
                return act(Action::Record, with(self.status, self.u));
            }
            let waiting = format!("waiting for {} to be unsealed on {} and caught up", node.id, self.to);
            if in_phase(&self.u, now) > NODE_TIMEOUT {
                let message = format!("{} did not catch up within {}s", node.id, NODE_TIMEOUT.as_secs());
                report(&mut self.u, "Timeout", message, now);
            }
            self.u.message = Some(waiting);
            return wait(with(self.status, self.u));
        }
        if !nodes.is_empty() && nodes.iter().all(|n| self.u.completed_pods.contains(&n.id)) {
            return act(Action::Record, common::finished(self.status, &self.u, now, None));
        }
        if let Some(problem) = common::unhealthy(self.observed, &self.set, nodes.len() as i32) {
            self.u.message = Some(format!(
                "waiting for a healthy cluster before the next server: {problem}"
            ));
            return wait(with(self.status, self.u));
        }
        // Highest ordinal first, the leader last.
        let mut remaining: Vec<&&NodeView> = nodes.iter().filter(|n| n.version != self.to).collect();
        remaining.sort_by_key(|n| (n.id == raft.leader, std::cmp::Reverse(n.ordinal)));
        let Some(target) = remaining.first() else {
            self.u.message = Some("waiting for the servers to report a healthy cluster".into());
            return wait(with(self.status, self.u));
        };
        if target.id == raft.leader {
            self.u.message = Some(format!("stepping down leader {} before replacing it", target.id));
            let node_id = target.id.clone();
            return act(Action::StepDown { node_id }, with(self.status, self.u));
        }
        self.u.rollback_available = false;
        self.u.phase_started_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        self.u.message = Some(format!("restarting {} on {}", target.id, self.to));
        let action = Action::ReplaceNode {
            node_id: target.id.clone(),
            version: self.to.clone(),
        };
        act(action, with(self.status, self.u))
    }
}

#[cfg(test)]
mod tests;
