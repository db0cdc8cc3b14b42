//! Builders for the flows' table tests: a spec, a status in a given phase, and a scene of
//! servers, raft peers and autopilot state written down the way the driver would observe it.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use openbao_api::{
    BlueGreenStatus, OpenBaoClusterSpec, OpenBaoClusterStatus, UpgradePhase, UpgradeStatus, UpgradeStrategy,
};
use openbao_client::HealthState;
use serde_json::json;

use super::names::Revision;
use super::observed::{AutopilotPeer, AutopilotView, NodeHealth, NodeView, Observed, Peer, RaftView};

pub const CLUSTER: &str = "bao";
pub const FROM: &str = "2.6.2";
pub const TO: &str = "2.7.2";
pub const GREEN: &str = "v2-7-2";

pub fn green() -> Revision {
    Some(GREEN.to_string())
}

/// Seconds after a fixed start.
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

pub fn spec(version: &str, strategy: UpgradeStrategy) -> OpenBaoClusterSpec {
    serde_json::from_value(json!({
        "version": version,
        "profile": "Development",
        "replicas": 3,
        "storage": {"size": "1Gi"},
        "upgrade": {"strategy": strategy},
    }))
    .unwrap()
}

pub fn bg_spec() -> OpenBaoClusterSpec {
    spec(TO, UpgradeStrategy::BlueGreen)
}

pub fn rolling_spec() -> OpenBaoClusterSpec {
    spec(TO, UpgradeStrategy::RollingUpdate)
}

/// A cluster running `FROM` with no upgrade history.
pub fn idle_status() -> OpenBaoClusterStatus {
    OpenBaoClusterStatus {
        current_version: Some(FROM.into()),
        initialized: true,
        ..Default::default()
    }
}

/// An upgrade `FROM` -> `TO` in `phase`, which started at `at(0)`.
pub fn in_phase(phase: UpgradePhase, strategy: UpgradeStrategy) -> OpenBaoClusterStatus {
    let upgrade = UpgradeStatus {
        phase,
        strategy: Some(strategy),
        from_version: Some(FROM.into()),
        to_version: Some(TO.into()),
        started_at: Some(Time(at(0))),
        phase_started_at: Some(Time(at(0))),
        rollback_available: !matches!(phase, UpgradePhase::DemotingBlue | UpgradePhase::Cleanup),
        ..Default::default()
    };
    let blue_green = (strategy == UpgradeStrategy::BlueGreen).then(|| BlueGreenStatus {
        blue_revision: None,
        green_revision: green(),
    });
    OpenBaoClusterStatus {
        upgrade: Some(upgrade),
        blue_green,
        ..idle_status()
    }
}

pub fn upgrade(status: &OpenBaoClusterStatus) -> &UpgradeStatus {
    status.upgrade.as_ref().expect("status.upgrade")
}

/// What the driver saw, built up step by step.
#[derive(Clone, Debug)]
pub struct Scene {
    pub observed: Observed,
}

fn node(revision: &Revision, ordinal: u32, version: &str, state: Option<HealthState>) -> NodeView {
    NodeView {
        id: openbao_api::names::pod(CLUSTER, revision.as_deref(), ordinal),
        revision: revision.clone(),
        ordinal,
        version: version.to_string(),
        running: true,
        health: state.map(|state| NodeHealth {
            state,
            version: version.to_string(),
        }),
    }
}

impl Scene {
    /// Three original servers on `version`, all voters, `bao-0` leads, autopilot healthy,
    /// traffic on them.
    pub fn blue(version: &str) -> Self {
        let blue: Revision = None;
        let nodes: Vec<NodeView> = (0..3)
            .map(|i| {
                let state = if i == 0 {
                    HealthState::Active
                } else {
                    HealthState::Standby
                };
                node(&blue, i, version, Some(state))
            })
            .collect();
        let peers = nodes
            .iter()
            .map(|n| Peer {
                id: n.id.clone(),
                voter: true,
            })
            .collect();
        let autopilot = AutopilotView {
            healthy: true,
            servers: nodes
                .iter()
                .map(|n| {
                    let peer = AutopilotPeer {
                        healthy: true,
                        node_type: "voter".into(),
                        last_index: 1000,
                    };
                    (n.id.clone(), peer)
                })
                .collect(),
        };
        Self {
            observed: Observed {
                now: at(1),
                cluster: CLUSTER.into(),
                nodes,
                raft: Some(RaftView {
                    leader: "bao-0".into(),
                    peers,
                    autopilot: Some(autopilot),
                }),
                traffic: None,
            },
        }
    }

    pub fn at(mut self, secs: i64) -> Self {
        self.observed.now = at(secs);
        self
    }

    pub fn traffic(mut self, to: Revision) -> Self {
        self.observed.traffic = to;
        self
    }

    pub fn no_leader(mut self) -> Self {
        self.observed.raft = None;
        for n in &mut self.observed.nodes {
            if let Some(h) = n.health.as_mut().filter(|h| h.state == HealthState::Active) {
                h.state = HealthState::Standby;
            }
        }
        self
    }

    fn raft(&mut self) -> &mut RaftView {
        self.observed.raft.as_mut().expect("scene has a raft view")
    }

    /// Green servers `0..count` running `TO` with `state` (not in raft yet).
    pub fn green_started(mut self, count: u32, state: Option<HealthState>) -> Self {
        for i in 0..count {
            self.observed.nodes.push(node(&green(), i, TO, state));
        }
        self
    }

    /// Green servers in raft: unsealed standbys, non-voters or voters, `lag` entries behind.
    pub fn green_joined(mut self, voter: bool, lag: u64) -> Self {
        self = self.green_started(3, Some(HealthState::Standby));
        for i in 0..3 {
            let id = openbao_api::names::pod(CLUSTER, green().as_deref(), i);
            self.add_peer(&id, voter, lag);
        }
        self
    }

    pub fn add_peer(&mut self, id: &str, voter: bool, lag: u64) {
        let raft = self.raft();
        raft.peers.push(Peer {
            id: id.to_string(),
            voter,
        });
        let autopilot = raft.autopilot.as_mut().unwrap();
        autopilot.servers.insert(
            id.to_string(),
            AutopilotPeer {
                healthy: true,
                node_type: if voter { "voter" } else { "non-voter" }.into(),
                last_index: 1000 - lag,
            },
        );
    }

    /// Sets raft suffrage and autopilot's intended role of `id`.
    pub fn role(mut self, id: &str, voter: bool, intends_voter: bool) -> Self {
        let raft = self.raft();
        raft.peers.iter_mut().find(|p| p.id == id).expect("peer").voter = voter;
        let server = raft
            .autopilot
            .as_mut()
            .unwrap()
            .servers
            .get_mut(id)
            .expect("autopilot server");
        server.node_type = if intends_voter { "voter" } else { "non-voter" }.into();
        self
    }

    pub fn leader(mut self, id: &str) -> Self {
        self.raft().leader = id.to_string();
        for n in &mut self.observed.nodes {
            if let Some(h) = n.health.as_mut() {
                h.state = if n.id == id {
                    HealthState::Active
                } else {
                    HealthState::Standby
                };
            }
        }
        self
    }

    pub fn remove_peer(mut self, id: &str) -> Self {
        let raft = self.raft();
        raft.peers.retain(|p| p.id != id);
        raft.autopilot.as_mut().unwrap().servers.remove(id);
        self
    }

    pub fn remove_nodes(mut self, revision: &Revision) -> Self {
        self.observed.nodes.retain(|n| &n.revision != revision);
        self
    }

    pub fn autopilot_healthy(mut self, healthy: bool) -> Self {
        self.raft().autopilot.as_mut().unwrap().healthy = healthy;
        self
    }

    pub fn lag(mut self, id: &str, lag: u64) -> Self {
        let server = self.raft().autopilot.as_mut().unwrap().servers.get_mut(id).unwrap();
        server.last_index = 1000 - lag;
        self
    }

    pub fn node_mut(&mut self, id: &str) -> &mut NodeView {
        self.observed.nodes.iter_mut().find(|n| n.id == id).expect("node")
    }

    /// Server `id` configured for `version`, reporting `state` on it.
    pub fn node_on(mut self, id: &str, version: &str, state: Option<HealthState>) -> Self {
        let n = self.node_mut(id);
        n.version = version.to_string();
        n.health = state.map(|state| NodeHealth {
            state,
            version: version.to_string(),
        });
        self
    }

    /// The whole blue/green upgrade is done on the green side: green voters and leader, blue
    /// demoted, traffic on green.
    pub fn green_leads(self) -> Self {
        let mut scene = self.green_joined(true, 0).traffic(green()).leader("bao-v2-7-2-0");
        for i in 0..3 {
            scene = scene.role(&format!("bao-{i}"), false, false);
        }
        scene
    }
}
