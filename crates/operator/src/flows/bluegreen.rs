//! Blue/green upgrade: a second set of servers (green) on the new version joins the raft
//! cluster of the running set (blue) as non-voters, catches up, is promoted, takes the traffic
//! and the leadership, and blue is removed.
//!
//! ```text
//! Idle -> PreUpgradeSnapshot -> DeployingGreen -> JoiningMesh -> Syncing -> (AwaitingPromotion)
//!      -> Promoting -> DemotingBlue -> Cleanup -> Idle
//!                 \-> RollingBack -> Idle (latched: no new attempt without a change or a retry)
//! ```
//!
//! Until `DemotingBlue` blue keeps its votes, so giving green up is safe: `RollingBack` takes
//! green out of raft and deletes it with its storage. `DemotingBlue` is the point of no return:
//! traffic moves to green, blue loses its votes after the leadership moved to green by a
//! step-down, and blue is removed. From then on the way back is restoring the pre-upgrade
//! snapshot, which status says. Rolling back is also refused once a green server has been the
//! leader: data the new version wrote is never served by the old one (OpenBao 2.7 -> 2.6 never
//! becomes active).

use openbao_api::{
    BlueGreenStatus, OpenBaoClusterSpec, OpenBaoClusterStatus, UpgradePhase, UpgradeStatus, UpgradeStrategy,
};
use std::time::Duration;

use super::common::{self, act, enter, in_phase, pending, report, wait, with};
use super::names::{self, Revision};
use super::observed::Observed;
use super::step::{Action, Deployment, FlowStep};

/// How long each phase may wait before a blue/green upgrade that can still be rolled back is.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const JOIN_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Counted after `minSyncDuration`.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Past the point of no return a slow phase is only reported.
const COMMITTED_REPORT_AFTER: Duration = Duration::from_secs(5 * 60);

/// The next step of a blue/green upgrade (or of starting one, from `Idle`).
pub fn next_step(spec: &OpenBaoClusterSpec, status: &OpenBaoClusterStatus, observed: &Observed) -> FlowStep {
    let u = common::upgrade_of(status);
    if u.phase == UpgradePhase::Idle {
        return common::idle(spec, status, observed, UpgradeStrategy::BlueGreen);
    }
    let bg = status.blue_green.clone().unwrap_or_default();
    let Some(green) = bg.green_revision.clone() else {
        let mut u = u;
        report(
            &mut u,
            "InconsistentStatus",
            "a blue/green upgrade is in progress but status.blueGreen.greenRevision is empty",
            observed.now,
        );
        return common::settle(status, with(status, u), Action::Nothing);
    };
    let plan = BlueGreenPlan {
        spec,
        status,
        observed,
        blue: bg.blue_revision.clone(),
        green: Some(green),
        to: u.to_version.clone().unwrap_or_default(),
        u,
    };
    match plan.u.phase {
        UpgradePhase::PreUpgradeSnapshot
        | UpgradePhase::DeployingGreen
        | UpgradePhase::JoiningMesh
        | UpgradePhase::Syncing
        | UpgradePhase::AwaitingPromotion
        | UpgradePhase::Promoting => plan.reversible(),
        UpgradePhase::DemotingBlue | UpgradePhase::Cleanup => plan.committed(),
        UpgradePhase::RollingBack => plan.rolling_back(),
        UpgradePhase::Idle | UpgradePhase::RollingUpdate => {
            let mut u = plan.u;
            report(
                &mut u,
                "InconsistentStatus",
                "phase RollingUpdate belongs to a rolling upgrade, not a blue/green one",
                observed.now,
            );
            common::settle(status, with(status, u), Action::Nothing)
        }
    }
}

struct BlueGreenPlan<'a> {
    spec: &'a OpenBaoClusterSpec,
    status: &'a OpenBaoClusterStatus,
    observed: &'a Observed,
    blue: Revision,
    green: Revision,
    to: String,
    u: UpgradeStatus,
}

impl BlueGreenPlan<'_> {
    fn replicas(&self) -> u32 {
        self.spec.replicas.max(1) as u32
    }

    fn green_ids(&self) -> Vec<String> {
        (0..self.replicas())
            .map(|i| openbao_api::names::pod(&self.observed.cluster, self.green.as_deref(), i))
            .collect()
    }

    fn now(&self) -> jiff::Timestamp {
        self.observed.now
    }

    /// Green servers that run and are unsealed on the target version, out of all expected.
    fn green_serving(&self) -> (usize, usize) {
        let serving = self
            .observed
            .nodes_of(&self.green)
            .iter()
            .filter(|n| n.serves(&self.to))
            .count();
        (serving, self.replicas() as usize)
    }

    /// Deploy (again) when a green server is missing or its process is gone.
    fn deploy_if_missing(&self, u: &UpgradeStatus) -> Option<FlowStep> {
        let greens = self.observed.nodes_of(&self.green);
        let complete = (0..self.replicas()).all(|i| greens.iter().any(|n| n.ordinal == i && n.running));
        if complete {
            return None;
        }
        let mut u = u.clone();
        u.message = Some(format!(
            "starting {} green servers ({}) on {}",
            self.replicas(),
            names::describe(&self.green),
            self.to
        ));
        Some(act(
            Action::DeployNodes(Deployment {
                revision: self.green.clone().unwrap_or_default(),
                version: self.to.clone(),
                replicas: self.replicas(),
                join: self.blue.clone(),
            }),
            with(self.status, u),
        ))
    }

    /// Phases before the point of no return: requests, a changed version, repeated failures
    /// and timeouts may lead to `RollingBack`; otherwise the phase's own step.
    fn reversible(mut self) -> FlowStep {
        let now = self.now();
        // Once green has led, the old version would have to serve data the new one wrote.
        if self.observed.leader_revision().as_ref() == Some(&self.green) {
            self.u.rollback_available = false;
        }
        let requests = &self.spec.upgrade.requests;
        if let Some(token) = pending(&requests.retry, &self.u.acknowledged.retry) {
            self.u.acknowledged.retry = Some(token);
        }
        if let Some(token) = pending(&requests.rollback, &self.u.acknowledged.rollback) {
            self.u.acknowledged.rollback = Some(token.clone());
            if self.u.rollback_available {
                return self.begin_rollback("RollbackRequested", format!("rollback requested (token {token})"));
            }
            let message = format!(
                "rollback refused: a green server has been the raft leader, so {} wrote data the old version \
                 does not serve; {}",
                self.to,
                common::way_back(&self.u)
            );
            report(&mut self.u, "RollbackRefused", message, now);
        }
        if self.spec.version != self.to {
            if self.u.rollback_available {
                let message = format!(
                    "spec.version changed to {} during the upgrade to {}",
                    self.spec.version, self.to
                );
                return self.begin_rollback("VersionChanged", message);
            }
            let message = format!(
                "spec.version changed to {}, but a green server has led already: finishing the upgrade to {}; {}",
                self.spec.version,
                self.to,
                common::way_back(&self.u)
            );
            report(&mut self.u, "VersionChangeRefused", message, now);
        }
        let max_failures = self.spec.upgrade.blue_green.max_job_failures.max(1);
        if self.u.failures >= max_failures && self.u.rollback_available {
            let last = self
                .u
                .last_error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default();
            let message = format!(
                "{max_failures} failed steps in a row in {:?}; last: {last}",
                self.u.phase
            );
            return self.begin_rollback("TooManyFailures", message);
        }
        if let Some(limit) = self.timeout()
            && in_phase(&self.u, now) > limit
            && self.u.rollback_available
        {
            let message = format!("{:?} did not finish within {}s", self.u.phase, limit.as_secs());
            return self.begin_rollback("Timeout", message);
        }
        match self.u.phase {
            UpgradePhase::PreUpgradeSnapshot => common::snapshot(self.status, self.u, now),
            UpgradePhase::DeployingGreen => self.deploying_green(),
            UpgradePhase::JoiningMesh => self.joining_mesh(),
            UpgradePhase::Syncing => self.syncing(),
            UpgradePhase::AwaitingPromotion => self.awaiting_promotion(),
            _ => self.promoting(),
        }
    }

    fn timeout(&self) -> Option<Duration> {
        match self.u.phase {
            UpgradePhase::DeployingGreen => Some(DEPLOY_TIMEOUT),
            UpgradePhase::JoiningMesh => Some(JOIN_TIMEOUT),
            UpgradePhase::Syncing => Some(SYNC_TIMEOUT + self.min_sync()),
            UpgradePhase::Promoting => Some(PROMOTE_TIMEOUT),
            _ => None,
        }
    }

    fn min_sync(&self) -> Duration {
        self.spec
            .upgrade
            .blue_green
            .min_sync_duration
            .as_deref()
            .and_then(|t| openbao_api::duration::parse(t).ok())
            .unwrap_or(Duration::ZERO)
    }

    fn begin_rollback(mut self, reason: &str, message: String) -> FlowStep {
        let now = self.now();
        let from = self.u.from_version.clone().unwrap_or_default();
        self.u.message = Some(format!("rolling back to {from}: {message}"));
        self.u.last_error = Some(common::error(reason, message, now));
        enter(&mut self.u, UpgradePhase::RollingBack, now);
        act(Action::Record, with(self.status, self.u))
    }

    fn deploying_green(mut self) -> FlowStep {
        if let Some(step) = self.deploy_if_missing(&self.u) {
            return step;
        }
        let (serving, expected) = self.green_serving();
        if serving == expected {
            self.u.message = Some(format!("{expected} green servers unsealed; checking they joined raft"));
            enter(&mut self.u, UpgradePhase::JoiningMesh, self.observed.now);
            return act(Action::Record, with(self.status, self.u));
        }
        self.u.message = Some(format!("{serving}/{expected} green servers unsealed on {}", self.to));
        wait(with(self.status, self.u))
    }

    fn joining_mesh(mut self) -> FlowStep {
        if let Some(step) = self.deploy_if_missing(&self.u) {
            return step;
        }
        let Some(raft) = &self.observed.raft else {
            self.u.message = Some("no active server to read the raft configuration from".into());
            return wait(with(self.status, self.u));
        };
        let ids = self.green_ids();
        let joined = ids.iter().filter(|id| raft.peer(id).is_some()).count();
        let (serving, _) = self.green_serving();
        if joined == ids.len() && serving == ids.len() {
            self.u.message = Some(format!("{joined} green servers joined as non-voters; replicating"));
            enter(&mut self.u, UpgradePhase::Syncing, self.observed.now);
            return act(Action::Record, with(self.status, self.u));
        }
        self.u.message = Some(format!(
            "{joined}/{} green servers in the raft configuration",
            ids.len()
        ));
        wait(with(self.status, self.u))
    }

    fn syncing(mut self) -> FlowStep {
        let Some(raft) = &self.observed.raft else {
            self.u.message = Some("no active server to read autopilot state from".into());
            return wait(with(self.status, self.u));
        };
        let ids = self.green_ids();
        let caught_up = ids.iter().filter(|id| raft.caught_up(id)).count();
        let min_sync = self.min_sync();
        if in_phase(&self.u, self.now()) < min_sync {
            self.u.message = Some(format!(
                "green servers replicate for minSyncDuration {}s before promotion",
                min_sync.as_secs()
            ));
            return wait(with(self.status, self.u));
        }
        if caught_up < ids.len() {
            self.u.message = Some(format!(
                "{caught_up}/{} green servers caught up with the leader",
                ids.len()
            ));
            return wait(with(self.status, self.u));
        }
        self.promote_or_hold()
    }

    fn promote_or_hold(mut self) -> FlowStep {
        let now = self.now();
        let token = pending(&self.spec.upgrade.requests.promote, &self.u.acknowledged.promote);
        if self.spec.upgrade.blue_green.auto_promote || token.is_some() {
            if let Some(token) = token {
                self.u.acknowledged.promote = Some(token);
            }
            self.u.message = Some("green caught up; promoting green servers to voters".into());
            enter(&mut self.u, UpgradePhase::Promoting, now);
            return act(Action::Record, with(self.status, self.u));
        }
        self.u.message = Some(
            "green caught up; waiting for spec.upgrade.requests.promote to carry a new token \
             (or spec.upgrade.blueGreen.autoPromote: true)"
                .into(),
        );
        if self.u.phase != UpgradePhase::AwaitingPromotion {
            enter(&mut self.u, UpgradePhase::AwaitingPromotion, now);
        }
        common::settle(self.status, with(self.status, self.u), Action::Nothing)
    }

    fn awaiting_promotion(self) -> FlowStep {
        self.promote_or_hold()
    }

    fn promoting(mut self) -> FlowStep {
        let (serving, expected) = self.green_serving();
        if serving < expected {
            self.u.message = Some(format!("{serving}/{expected} green servers unsealed; promotion waits"));
            return wait(with(self.status, self.u));
        }
        let Some(raft) = &self.observed.raft else {
            self.u.message = Some("no active server to promote through".into());
            return wait(with(self.status, self.u));
        };
        let ids = self.green_ids();
        // Only servers not yet meant to vote: promoting a voter is an error (HTTP 500).
        if let Some(id) = ids.iter().find(|id| !raft.intends_voter(id)) {
            self.u.message = Some(format!("promoting {id} to a voter"));
            return act(Action::Promote { node_id: id.clone() }, with(self.status, self.u));
        }
        if ids.iter().all(|id| raft.is_voter(id)) && raft.autopilot_healthy() {
            self.u.rollback_available = false;
            self.u.message = Some(format!(
                "green servers vote; past the point of no return: moving traffic to green and demoting blue ({})",
                common::way_back(&self.u)
            ));
            enter(&mut self.u, UpgradePhase::DemotingBlue, self.observed.now);
            return act(Action::Record, with(self.status, self.u));
        }
        self.u.message = Some("waiting for autopilot to give the promoted green servers their votes".into());
        wait(with(self.status, self.u))
    }

    /// `DemotingBlue` and `Cleanup`: the only way is forward.
    fn committed(mut self) -> FlowStep {
        let now = self.now();
        self.u.rollback_available = false;
        let requests = &self.spec.upgrade.requests;
        if let Some(token) = pending(&requests.retry, &self.u.acknowledged.retry) {
            self.u.acknowledged.retry = Some(token);
        }
        if let Some(token) = pending(&requests.rollback, &self.u.acknowledged.rollback) {
            self.u.acknowledged.rollback = Some(token);
            let message = format!(
                "rollback refused: the green servers hold the votes (phase {:?}); {}",
                self.u.phase,
                common::way_back(&self.u)
            );
            report(&mut self.u, "RollbackRefused", message, now);
        }
        if self.spec.version != self.to {
            let message = format!(
                "spec.version changed to {} past the point of no return: finishing the upgrade to {}; {}",
                self.spec.version,
                self.to,
                common::way_back(&self.u)
            );
            report(&mut self.u, "VersionChangeRefused", message, now);
        }
        if in_phase(&self.u, now) > COMMITTED_REPORT_AFTER {
            let message = format!(
                "{:?} is taking longer than {}s: {}",
                self.u.phase,
                COMMITTED_REPORT_AFTER.as_secs(),
                self.u.message.clone().unwrap_or_default()
            );
            report(&mut self.u, "Slow", message, now);
        }
        match self.u.phase {
            UpgradePhase::DemotingBlue => self.demoting_blue(),
            _ => self.cleanup(),
        }
    }

    fn demoting_blue(mut self) -> FlowStep {
        let (serving, expected) = self.green_serving();
        if serving < expected {
            self.u.message = Some(format!(
                "{serving}/{expected} green servers unsealed; waiting before cutover"
            ));
            return wait(with(self.status, self.u));
        }
        if self.observed.traffic != self.green {
            self.u.message = Some("moving traffic to the green servers".into());
            let to = self.green.clone();
            return act(Action::SwitchTraffic { to }, with(self.status, self.u));
        }
        let Some(raft) = &self.observed.raft else {
            self.u.message = Some("no active server (leadership is moving)".into());
            return wait(with(self.status, self.u));
        };
        let blue_peers = self.observed.peers_of(&self.blue);
        let leader = raft.leader.clone();
        // Demote the other blue voters first, so the step-down can only hand leadership to green.
        if let Some(p) = blue_peers.iter().find(|p| p.id != leader && raft.intends_voter(&p.id)) {
            self.u.message = Some(format!("demoting blue server {}", p.id));
            let node_id = p.id.clone();
            return act(Action::Demote { node_id }, with(self.status, self.u));
        }
        if self.observed.leader_revision() == Some(self.blue.clone()) {
            // Until raft itself has taken their votes, a step-down could still hand the
            // leadership to another blue server.
            if blue_peers.iter().any(|p| p.id != leader && p.voter) {
                self.u.message =
                    Some("waiting for raft to take the other blue servers' votes before the step-down".into());
                return wait(with(self.status, self.u));
            }
            self.u.message = Some(format!("stepping down blue leader {leader} so that green leads"));
            return act(Action::StepDown { node_id: leader }, with(self.status, self.u));
        }
        if let Some(p) = blue_peers.iter().find(|p| raft.intends_voter(&p.id)) {
            self.u.message = Some(format!("demoting blue server {}", p.id));
            let node_id = p.id.clone();
            return act(Action::Demote { node_id }, with(self.status, self.u));
        }
        let green_leads = self.observed.leader_revision() == Some(self.green.clone());
        if green_leads && blue_peers.iter().all(|p| !p.voter) {
            self.u.message = Some(format!("green server {leader} leads; removing blue"));
            enter(&mut self.u, UpgradePhase::Cleanup, self.observed.now);
            return act(Action::Record, with(self.status, self.u));
        }
        self.u.message = Some("waiting for the blue servers to lose their votes".into());
        wait(with(self.status, self.u))
    }

    fn cleanup(mut self) -> FlowStep {
        let Some(raft) = &self.observed.raft else {
            self.u.message = Some("no active server to remove blue peers through".into());
            return wait(with(self.status, self.u));
        };
        let leader = raft.leader.clone();
        if self.observed.leader_revision() != Some(self.green.clone()) {
            // Removing the leader itself leaves the cluster without one for seconds.
            self.u.message = Some(format!("leader {leader} is not green; stepping it down first"));
            return act(Action::StepDown { node_id: leader }, with(self.status, self.u));
        }
        if let Some(p) = self.observed.peers_of(&self.blue).first() {
            self.u.message = Some(format!("removing blue raft peer {}", p.id));
            let node_id = p.id.clone();
            return act(Action::RemovePeer { node_id }, with(self.status, self.u));
        }
        if !self.observed.nodes_of(&self.blue).is_empty() {
            // Removed peers keep answering as standbys: they must be stopped.
            self.u.message = Some("stopping the removed blue servers and deleting their storage".into());
            let revision = self.blue.clone();
            return act(Action::RemoveNodes { revision }, with(self.status, self.u));
        }
        let ids = self.green_ids();
        let (serving, expected) = self.green_serving();
        if serving == expected && ids.iter().all(|id| raft.is_voter(id)) && raft.autopilot_healthy() {
            let blue_green = BlueGreenStatus {
                blue_revision: self.green.clone(),
                green_revision: None,
            };
            let done = common::finished(self.status, &self.u, self.now(), Some(blue_green));
            return act(Action::Record, done);
        }
        self.u.message = Some("waiting for the green servers to report a healthy cluster".into());
        wait(with(self.status, self.u))
    }

    /// Back to blue: green leaves raft (demoted, then removed) and is deleted with its storage.
    fn rolling_back(mut self) -> FlowStep {
        let now = self.now();
        let requests = &self.spec.upgrade.requests;
        for (requested, acknowledged) in [
            (&requests.rollback, &mut self.u.acknowledged.rollback),
            (&requests.retry, &mut self.u.acknowledged.retry),
        ] {
            if let Some(token) = pending(requested, acknowledged) {
                *acknowledged = Some(token);
            }
        }
        if self.observed.traffic != self.blue {
            self.u.message = Some("moving traffic back to the blue servers".into());
            let to = self.blue.clone();
            return act(Action::SwitchTraffic { to }, with(self.status, self.u));
        }
        let Some(raft) = &self.observed.raft else {
            self.u.message = Some("no active server to remove green peers through".into());
            return wait(with(self.status, self.u));
        };
        if self.observed.leader_revision() == Some(self.green.clone()) {
            // Handing leadership back would make the old version serve data the new one wrote.
            let message = format!(
                "green server {} became the leader during the rollback; the old version cannot serve data {} \
                 wrote. Set spec.version to {} to finish the upgrade, or {}",
                raft.leader,
                self.to,
                self.to,
                common::way_back(&self.u)
            );
            report(&mut self.u, "RollbackBlocked", message, now);
            return wait(with(self.status, self.u));
        }
        let green_peers = self.observed.peers_of(&self.green);
        if let Some(p) = green_peers.iter().find(|p| raft.intends_voter(&p.id)) {
            self.u.message = Some(format!("demoting green server {}", p.id));
            let node_id = p.id.clone();
            return act(Action::Demote { node_id }, with(self.status, self.u));
        }
        if let Some(p) = green_peers.first() {
            self.u.message = Some(format!("removing green raft peer {}", p.id));
            let node_id = p.id.clone();
            return act(Action::RemovePeer { node_id }, with(self.status, self.u));
        }
        if !self.observed.nodes_of(&self.green).is_empty() {
            self.u.message = Some("stopping the green servers and deleting their storage".into());
            let revision = self.green.clone();
            return act(Action::RemoveNodes { revision }, with(self.status, self.u));
        }
        let from = self.u.from_version.clone().unwrap_or_default();
        let why = self
            .u
            .last_error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        let message = format!(
            "rolled back to {from} ({}); green removed from raft and deleted ({why})",
            names::describe(&self.blue)
        );
        act(Action::Record, common::aborted(self.status, &self.u, message))
    }
}

#[cfg(test)]
mod tests;
