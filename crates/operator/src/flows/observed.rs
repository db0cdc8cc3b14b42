//! What the driver saw before a step: the servers the platform runs, their health, the raft
//! peer set and autopilot's view as the leader reports them, and where traffic goes.
//!
//! These are plain data (no client types), so table tests can write them down directly.

use jiff::Timestamp;
use openbao_client::HealthState;
use std::collections::BTreeMap;

use super::names::Revision;

/// Everything a flow decides on. Built by the driver, fresh for every step.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub now: Timestamp,
    /// Name of the cluster: node ids are `<cluster>-<ordinal>` or `<cluster>-<revision>-<ordinal>`.
    pub cluster: String,
    /// Every server the platform runs or keeps storage for, of any revision.
    pub nodes: Vec<NodeView>,
    /// The raft view of the active node; `None` when no node is active or it did not answer.
    pub raft: Option<RaftView>,
    /// The revision the public endpoint sends clients to.
    pub traffic: Revision,
}

/// One server as the platform and its own health endpoint describe it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    /// Raft node id (the pod name).
    pub id: String,
    pub revision: Revision,
    pub ordinal: u32,
    /// The OpenBao version the platform runs it with (image tag, binary).
    pub version: String,
    /// Its process (pod) exists; false when only its storage is left.
    pub running: bool,
    /// `sys/health`; `None` when it did not answer.
    pub health: Option<NodeHealth>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeHealth {
    pub state: HealthState,
    /// The version the server reports itself.
    pub version: String,
}

impl NodeView {
    pub fn is_unsealed(&self) -> bool {
        self.running && self.health.as_ref().is_some_and(|h| h.state.is_unsealed())
    }

    /// Running, unsealed and reporting `version` itself.
    pub fn serves(&self, version: &str) -> bool {
        self.is_unsealed() && self.health.as_ref().is_some_and(|h| h.version == version)
    }
}

/// The raft peer set and autopilot state, as the active node reports them.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RaftView {
    /// Node id of the raft leader.
    pub leader: String,
    pub peers: Vec<Peer>,
    /// `None` when autopilot state could not be read.
    pub autopilot: Option<AutopilotView>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    pub id: String,
    /// Raft suffrage. After promote/demote it follows only once autopilot reconciles.
    pub voter: bool,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct AutopilotView {
    pub healthy: bool,
    pub servers: BTreeMap<String, AutopilotPeer>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AutopilotPeer {
    pub healthy: bool,
    /// The intended role (`voter`/`non-voter`); changes at once on promote/demote.
    pub node_type: String,
    pub last_index: u64,
}

/// Log entries a server may trail the leader by and still count as caught up.
pub const CAUGHT_UP_ENTRIES: u64 = 100;

impl RaftView {
    pub fn peer(&self, id: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == id)
    }

    pub fn is_voter(&self, id: &str) -> bool {
        self.peer(id).is_some_and(|p| p.voter)
    }

    /// Whether `id` is meant to vote: autopilot's `node_type` when known (it changes at once on
    /// promote/demote, before the raft suffrage does), else the raft suffrage.
    pub fn intends_voter(&self, id: &str) -> bool {
        match self.autopilot.as_ref().and_then(|a| a.servers.get(id)) {
            Some(server) => server.node_type == "voter",
            None => self.is_voter(id),
        }
    }

    pub fn autopilot_healthy(&self) -> bool {
        self.autopilot.as_ref().is_some_and(|a| a.healthy)
    }

    /// Healthy in autopilot and at most [`CAUGHT_UP_ENTRIES`] behind the leader.
    pub fn caught_up(&self, id: &str) -> bool {
        let Some(autopilot) = &self.autopilot else {
            return false;
        };
        let (Some(server), Some(leader)) = (autopilot.servers.get(id), autopilot.servers.get(&self.leader)) else {
            return false;
        };
        server.healthy && leader.last_index.saturating_sub(server.last_index) <= CAUGHT_UP_ENTRIES
    }
}

impl Observed {
    /// The servers of `revision`, by ordinal.
    pub fn nodes_of(&self, revision: &Revision) -> Vec<&NodeView> {
        let mut nodes: Vec<&NodeView> = self.nodes.iter().filter(|n| &n.revision == revision).collect();
        nodes.sort_by_key(|n| n.ordinal);
        nodes
    }

    /// Raft peers whose id names a server of `revision`, whether the platform still runs it or not.
    pub fn peers_of(&self, revision: &Revision) -> Vec<&Peer> {
        let Some(raft) = &self.raft else {
            return Vec::new();
        };
        let mut peers: Vec<(&Peer, u32)> = raft
            .peers
            .iter()
            .filter_map(|p| match openbao_api::names::parse_pod(&self.cluster, &p.id) {
                Some((rev, ordinal)) if &rev == revision => Some((p, ordinal)),
                _ => None,
            })
            .collect();
        peers.sort_by_key(|(_, ordinal)| *ordinal);
        peers.into_iter().map(|(p, _)| p).collect()
    }

    /// The revision of the raft leader, if there is one and its id follows the naming.
    pub fn leader_revision(&self) -> Option<Revision> {
        let raft = self.raft.as_ref()?;
        openbao_api::names::parse_pod(&self.cluster, &raft.leader).map(|(rev, _)| rev)
    }
}
