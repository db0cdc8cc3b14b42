//! Integrated storage (raft): peers, autopilot, membership changes, step-down and snapshots.
//!
//! Traps (see the runtime facts): `remove_peer` answers success for unknown ids, removed peers
//! keep answering health 429, `promote` of a voter is a 500, `step_down` needs `sudo`.

use crate::client::{Auth, Call, api_error};
use crate::{BaoClient, Result};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStream};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::pin::Pin;

/// One peer in `sys/storage/raft/configuration`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct RaftServer {
    pub node_id: String,
    /// The peer's cluster address (`host:port`), not its API address.
    pub address: String,
    pub leader: bool,
    pub voter: bool,
    #[serde(default)]
    pub protocol_version: String,
}

/// The raft peer set as the answering node sees it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct RaftConfiguration {
    pub servers: Vec<RaftServer>,
    #[serde(default)]
    pub index: u64,
}

impl RaftConfiguration {
    pub fn voters(&self) -> impl Iterator<Item = &RaftServer> {
        self.servers.iter().filter(|s| s.voter)
    }

    pub fn leader(&self) -> Option<&RaftServer> {
        self.servers.iter().find(|s| s.leader)
    }

    pub fn server(&self, node_id: &str) -> Option<&RaftServer> {
        self.servers.iter().find(|s| s.node_id == node_id)
    }
}

#[derive(Deserialize)]
struct RaftConfigurationData {
    config: RaftConfiguration,
}

/// One server in the autopilot state.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct AutopilotServer {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Cluster address.
    #[serde(default)]
    pub address: String,
    /// `alive`, `left`, …
    #[serde(default)]
    pub node_status: String,
    /// `leader`, `voter` or `non-voter`.
    #[serde(default)]
    pub status: String,
    /// `voter` or `non-voter`: the intended role (changes at once on promote; `status` follows
    /// after autopilot's stabilization time).
    #[serde(default)]
    pub node_type: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub healthy: bool,
    #[serde(default)]
    pub last_index: u64,
    #[serde(default)]
    pub last_term: u64,
    #[serde(default)]
    pub last_contact: Option<String>,
    #[serde(default)]
    pub stable_since: Option<String>,
}

/// `GET /v1/sys/storage/raft/autopilot/state`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct AutopilotState {
    pub healthy: bool,
    pub failure_tolerance: i64,
    #[serde(default)]
    pub optimistic_failure_tolerance: i64,
    /// Node id of the leader.
    #[serde(default)]
    pub leader: String,
    /// Node ids that currently vote. Wait on this, not on the peer count: joined nodes start as
    /// non-voters until autopilot promotes them.
    #[serde(default, deserialize_with = "null_as_default")]
    pub voters: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub non_voters: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub servers: BTreeMap<String, AutopilotServer>,
}

/// Autopilot settings as read back. Durations are Go duration strings (`"10s"`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct AutopilotConfig {
    #[serde(default)]
    pub cleanup_dead_servers: bool,
    #[serde(default)]
    pub dead_server_last_contact_threshold: String,
    #[serde(default)]
    pub last_contact_threshold: String,
    #[serde(default)]
    pub max_trailing_logs: u64,
    #[serde(default)]
    pub min_quorum: u64,
    #[serde(default)]
    pub server_stabilization_time: String,
}

/// A partial autopilot update: only the `Some` fields are sent. Durations as Go strings (`"2s"`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AutopilotConfigUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_dead_servers: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_server_last_contact_threshold: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_contact_threshold: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_trailing_logs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_quorum: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_stabilization_time: Option<String>,
}

/// Body of `PUT /v1/sys/storage/raft/join`, sent to an *uninitialized* node.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RaftJoin {
    /// e.g. `https://127.0.0.2:8200` or a pod's API URL.
    pub leader_api_addr: String,
    /// PEM CA the joining node uses to verify the leader's API certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_ca_cert: Option<String>,
    /// Name to verify in the leader's certificate when `leader_api_addr` is an IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_tls_servername: Option<String>,
    /// Join without a vote; autopilot will not promote it (use [`BaoClient::promote`]).
    pub non_voter: bool,
    /// Keep retrying in the background instead of failing on the first attempt.
    pub retry: bool,
}

#[derive(Deserialize)]
struct JoinResponse {
    #[serde(default)]
    joined: bool,
}

fn null_as_default<'de, D, T>(de: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// A raft snapshot (gzip tar) as it arrives from the node, chunk by chunk.
pub type SnapshotStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

impl BaoClient {
    /// `GET /v1/sys/storage/raft/configuration`.
    pub async fn raft_configuration(&self) -> Result<RaftConfiguration> {
        let data: RaftConfigurationData = self.get_data("sys/storage/raft/configuration").await?;
        Ok(data.config)
    }

    /// `GET /v1/sys/storage/raft/autopilot/state`.
    pub async fn autopilot_state(&self) -> Result<AutopilotState> {
        self.get_data("sys/storage/raft/autopilot/state").await
    }

    /// `GET /v1/sys/storage/raft/autopilot/configuration`.
    pub async fn autopilot_config(&self) -> Result<AutopilotConfig> {
        self.get_data("sys/storage/raft/autopilot/configuration").await
    }

    /// `POST /v1/sys/storage/raft/autopilot/configuration` with the `Some` fields of `update`.
    pub async fn set_autopilot_config(&self, update: &AutopilotConfigUpdate) -> Result<()> {
        let body = serde_json::to_value(update).expect("autopilot update serializes");
        self.exec(
            Call::new(Method::POST, "sys/storage/raft/autopilot/configuration"),
            Auth::Required,
            Some(&body),
        )
        .await
    }

    /// `PUT /v1/sys/step-down` on the active node (needs `sudo`). Another node becomes active.
    pub async fn step_down(&self) -> Result<()> {
        self.exec(Call::new(Method::PUT, "sys/step-down"), Auth::Required, None)
            .await
    }

    /// `POST /v1/sys/storage/raft/remove-peer`. Succeeds for unknown ids too: check
    /// [`raft_configuration`](Self::raft_configuration) afterwards. Removing the leader itself
    /// leaves the cluster without an active node for a while; step it down first.
    pub async fn remove_peer(&self, node_id: &str) -> Result<()> {
        self.server_id_call("sys/storage/raft/remove-peer", node_id).await
    }

    /// `POST /v1/sys/storage/raft/promote`: make a non-voter a voter. A 500 "server is not a
    /// non-voter" means it already is one.
    pub async fn promote(&self, node_id: &str) -> Result<()> {
        self.server_id_call("sys/storage/raft/promote", node_id).await
    }

    /// `POST /v1/sys/storage/raft/demote`: make a voter a non-voter.
    pub async fn demote(&self, node_id: &str) -> Result<()> {
        self.server_id_call("sys/storage/raft/demote", node_id).await
    }

    async fn server_id_call(&self, path: &str, node_id: &str) -> Result<()> {
        self.exec(
            Call::new(Method::POST, path),
            Auth::Required,
            Some(&json!({ "server_id": node_id })),
        )
        .await
    }

    /// `PUT /v1/sys/storage/raft/join` (unauthenticated), sent to an uninitialized node.
    /// Returns OpenBao's `joined` flag. Trap: an already initialized node answers `true` and
    /// does nothing, so check for [`HealthState::Uninitialized`](crate::HealthState) first.
    pub async fn join_raft(&self, join: &RaftJoin) -> Result<bool> {
        let body = serde_json::to_value(join).expect("join request serializes");
        let resp: JoinResponse = self
            .fetch(Call::new(Method::PUT, "sys/storage/raft/join"), Auth::None, Some(&body))
            .await?;
        Ok(resp.joined)
    }

    /// `GET /v1/sys/storage/raft/snapshot`: the snapshot as a stream of chunks, never buffered
    /// whole. The HTTP status is checked before the stream is returned; a broken connection
    /// later shows up as an `Err` item.
    pub async fn snapshot(&self) -> Result<SnapshotStream> {
        let call = Call::new(Method::GET, "sys/storage/raft/snapshot").streaming();
        let resp = self.send(&call, Auth::Required, |r| r).await?;
        if !resp.status().is_success() {
            return Err(api_error(&call, resp).await);
        }
        let url = resp.url().to_string();
        Ok(Box::pin(
            resp.bytes_stream()
                .map(move |chunk| chunk.map_err(|e| call.transport_error(&url, e))),
        ))
    }

    /// `POST /v1/sys/storage/raft/snapshot[-force]` from memory. `force` skips the check that
    /// the snapshot was sealed with this cluster's seal key.
    pub async fn restore_snapshot(&self, snapshot: Bytes, force: bool) -> Result<()> {
        self.restore(snapshot.into(), force).await
    }

    /// Like [`restore_snapshot`](Self::restore_snapshot), streaming the body (chunked upload),
    /// e.g. straight from an object store download.
    pub async fn restore_snapshot_stream<S>(&self, snapshot: S, force: bool) -> Result<()>
    where
        S: TryStream + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        Bytes: From<S::Ok>,
    {
        self.restore(reqwest::Body::wrap_stream(snapshot), force).await
    }

    async fn restore(&self, body: reqwest::Body, force: bool) -> Result<()> {
        let path = if force {
            "sys/storage/raft/snapshot-force"
        } else {
            "sys/storage/raft/snapshot"
        };
        let call = Call::new(Method::POST, path).streaming();
        self.send_ok(&call, Auth::Required, |r| r.body(body)).await.map(drop)
    }
}
