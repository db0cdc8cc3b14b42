//! Unauthenticated node status: `sys/health`, `sys/seal-status`, `sys/leader`.

use crate::client::{Auth, Call, api_error, decode};
use crate::{BaoClient, Result};
use reqwest::Method;
use serde::Deserialize;

/// What `sys/health` says about a node, from its status code (the body can lag behind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthState {
    /// 200: unsealed and active (the leader).
    Active,
    /// 429: unsealed standby. Also reported by raft peers that were removed from the cluster.
    Standby,
    /// 473: performance standby.
    PerfStandby,
    /// 503: sealed (or still joining with an auto-unseal seal).
    Sealed,
    /// 501: not initialized (a fresh node not yet joined).
    Uninitialized,
    /// Any other status that came with a health body (e.g. 472, DR secondary).
    Other(u16),
}

impl HealthState {
    pub fn from_status(status: u16) -> Self {
        match status {
            200 => Self::Active,
            429 => Self::Standby,
            473 => Self::PerfStandby,
            503 => Self::Sealed,
            501 => Self::Uninitialized,
            other => Self::Other(other),
        }
    }

    /// Unsealed and serving (active or any standby).
    pub fn is_unsealed(self) -> bool {
        matches!(self, Self::Active | Self::Standby | Self::PerfStandby)
    }
}

/// The answer of `GET /v1/sys/health`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub state: HealthState,
    pub initialized: bool,
    pub sealed: bool,
    pub standby: bool,
    pub performance_standby: bool,
    pub version: String,
    /// Absent while sealed.
    pub cluster_id: Option<String>,
    pub cluster_name: Option<String>,
    pub server_time_utc: Option<i64>,
}

#[derive(Deserialize)]
struct HealthBody {
    // Required: a body without it (a proxy's 503, an `errors` body) is not a health answer.
    initialized: bool,
    #[serde(default)]
    sealed: bool,
    #[serde(default)]
    standby: bool,
    #[serde(default)]
    performance_standby: bool,
    #[serde(default)]
    version: String,
    #[serde(default)]
    cluster_id: Option<String>,
    #[serde(default)]
    cluster_name: Option<String>,
    #[serde(default)]
    server_time_utc: Option<i64>,
}

/// The answer of `GET /v1/sys/seal-status`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct SealStatus {
    /// `static`, `shamir`, `transit`, …
    #[serde(rename = "type")]
    pub seal_type: String,
    pub initialized: bool,
    pub sealed: bool,
    /// Unseal threshold and share count (0 for auto-unseal seals).
    #[serde(default)]
    pub t: u32,
    #[serde(default)]
    pub n: u32,
    #[serde(default)]
    pub progress: u32,
    #[serde(default)]
    pub recovery_seal: bool,
    /// The server was started with a disabled seal next to the configured one (seal migration
    /// mode): it does not auto-unseal until the migration is done and it is restarted.
    #[serde(default)]
    pub migration: bool,
    #[serde(default)]
    pub storage_type: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub cluster_name: Option<String>,
    #[serde(default)]
    pub cluster_id: Option<String>,
}

/// The answer of `GET /v1/sys/leader`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Leader {
    pub ha_enabled: bool,
    /// Absent from some answers: a 2.6.2 standby answered 200 without it right after a snapshot
    /// restore (the hardened lane, 2026-12-04). Without it the server is not taken for the leader.
    #[serde(default)]
    pub is_self: bool,
    /// The leader's `api_addr`; empty when there is no leader.
    #[serde(default)]
    pub leader_address: String,
    #[serde(default)]
    pub leader_cluster_address: String,
    #[serde(default)]
    pub raft_committed_index: Option<u64>,
    #[serde(default)]
    pub raft_applied_index: Option<u64>,
}

impl BaoClient {
    /// `GET /v1/sys/health` with the default status codes, so the state comes from the status.
    /// A node that answers with a non-health body (or not at all) is an error.
    pub async fn health(&self) -> Result<Health> {
        let call = Call::new(Method::GET, "sys/health");
        let resp = self.send(&call, Auth::None, |r| r).await?;
        let status = resp.status().as_u16();
        let state = HealthState::from_status(status);
        if matches!(state, HealthState::Other(_)) && !resp.status().is_success() && status != 472 {
            return Err(api_error(&call, resp).await);
        }
        let body: HealthBody = decode(&call, resp).await?;
        Ok(Health {
            state,
            initialized: body.initialized,
            sealed: body.sealed,
            standby: body.standby,
            performance_standby: body.performance_standby,
            version: body.version,
            cluster_id: body.cluster_id.filter(|s| !s.is_empty()),
            cluster_name: body.cluster_name.filter(|s| !s.is_empty()),
            server_time_utc: body.server_time_utc,
        })
    }

    /// `GET /v1/sys/seal-status`.
    pub async fn seal_status(&self) -> Result<SealStatus> {
        self.fetch(Call::new(Method::GET, "sys/seal-status"), Auth::None, None)
            .await
    }

    /// `GET /v1/sys/leader`: which node is active, as this node sees it.
    pub async fn leader(&self) -> Result<Leader> {
        self.fetch(Call::new(Method::GET, "sys/leader"), Auth::None, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::HealthState;

    #[test]
    fn a_leader_answer_without_is_self_is_no_leader() {
        let leader: super::Leader =
            serde_json::from_str(r#"{"ha_enabled":true,"leader_address":"","leader_cluster_address":""}"#).unwrap();
        assert!(!leader.is_self && leader.leader_address.is_empty());
    }

    #[test]
    fn health_codes_map_to_states() {
        assert_eq!(HealthState::from_status(200), HealthState::Active);
        assert_eq!(HealthState::from_status(429), HealthState::Standby);
        assert_eq!(HealthState::from_status(473), HealthState::PerfStandby);
        assert_eq!(HealthState::from_status(501), HealthState::Uninitialized);
        assert_eq!(HealthState::from_status(503), HealthState::Sealed);
        assert_eq!(HealthState::from_status(472), HealthState::Other(472));
        assert!(HealthState::Standby.is_unsealed() && !HealthState::Sealed.is_unsealed());
    }
}
