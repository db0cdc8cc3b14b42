//! The driver: one step per call. It observes the servers (through the [`Platform`] and
//! OpenBao's own API), asks the flow for the next step, performs it, and returns the status to
//! persist. It keeps nothing between calls, so dropping it at any point loses nothing that
//! status does not hold.
//!
//! A [`Platform`] is what runs the servers: Kubernetes (StatefulSets, Services, Jobs) in the
//! operator, plain processes in the tests. It never decides anything.

use futures::future::join_all;
use jiff::Timestamp;
use openbao_api::{OpenBaoClusterSpec, OpenBaoClusterStatus};
use openbao_client::{BaoClient, BaoError, HealthState};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use super::names::Revision;
use super::observed::{AutopilotPeer, AutopilotView, NodeHealth, NodeView, Observed, Peer, RaftView};
use super::step::{Action, Deployment};
use super::step_report::{ActionKind, FlowAction, FlowStatus, StepReport, report_outcome};

/// One server as the platform knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformNode {
    /// The raft node id, [`openbao_api::names::pod`] of `revision` and `ordinal`.
    pub id: String,
    pub revision: Revision,
    pub ordinal: u32,
    /// The OpenBao version the platform runs it with (image tag).
    pub version: String,
    /// Its process (pod) exists; false when only its storage is left.
    pub running: bool,
}

/// A platform operation that failed; the message says what and why.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct PlatformError {
    pub context: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl PlatformError {
    pub fn new(context: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// What runs the servers. Every method must be idempotent: the driver may call it again after
/// a crash, with the same arguments, whether or not the first call took effect.
pub trait Platform: Send + Sync {
    /// Every server of this cluster that runs or still has storage, of every revision.
    fn nodes(&self) -> impl Future<Output = Result<Vec<PlatformNode>, PlatformError>> + Send;

    /// A client for server `node_id`'s own API, with a token allowed to read the raft
    /// configuration and autopilot state, promote, demote, remove peers and step down (the
    /// `openbao-operator-upgrade` policy), and short timeouts (a few seconds).
    fn client(&self, node_id: &str) -> impl Future<Output = Result<BaoClient, PlatformError>> + Send;

    /// The revision whose servers the public endpoint sends clients to.
    fn traffic(&self) -> impl Future<Output = Result<Revision, PlatformError>> + Send;

    /// Point the public endpoint (Service selector, HTTPRoute backends) at the servers of `to`.
    fn switch_traffic(&self, to: &Revision) -> impl Future<Output = Result<(), PlatformError>> + Send;

    /// Create whatever of `deployment` is missing and start servers that are not running.
    fn deploy_nodes(&self, deployment: &Deployment) -> impl Future<Output = Result<(), PlatformError>> + Send;

    /// Stop every server of `revision` and delete its storage.
    fn remove_nodes(&self, revision: &Revision) -> impl Future<Output = Result<(), PlatformError>> + Send;

    /// Restart server `node_id` on `version`, keeping its storage.
    fn replace_node(&self, node_id: &str, version: &str) -> impl Future<Output = Result<(), PlatformError>> + Send;

    /// Take a raft snapshot of the cluster and store it. A platform that snapshots in the
    /// background answers [`Snapshot::Running`] until the snapshot is stored; called again, it
    /// must look at the same attempt rather than start another (`attempt` numbers them: it
    /// changes only after a failed one).
    fn take_snapshot(&self, attempt: i32) -> impl Future<Output = Result<Snapshot, PlatformError>> + Send;
}

/// Where a pre-upgrade snapshot stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Snapshot {
    /// Stored; where (e.g. an object key).
    Stored(String),
    /// Still being taken; what is happening, for people.
    Running(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("{what} on {node}: {source}")]
    OpenBao {
        what: String,
        node: String,
        #[source]
        source: BaoError,
    },
    /// OpenBao answered success but the change is not there (e.g. `remove-peer` of an id it
    /// does not know answers 204).
    #[error("{0}")]
    NotApplied(String),
    #[error("{0}")]
    Precondition(String),
}

impl FlowAction for Action {
    fn name(&self) -> &'static str {
        Action::name(self)
    }

    fn kind(&self) -> ActionKind {
        match self {
            Action::Nothing => ActionKind::Finished,
            Action::Record => ActionKind::Record,
            Action::Wait => ActionKind::Wait,
            _ => ActionKind::Acted,
        }
    }
}

/// An upgrade's state lives in `status.upgrade`.
impl FlowStatus for OpenBaoClusterStatus {
    type Action = Action;

    fn waiting(&self, message: String) -> Self {
        let mut waiting = self.clone();
        if let Some(u) = waiting.upgrade.as_mut() {
            u.message = Some(message);
        }
        waiting
    }

    fn snapshot_stored(mut self, handle: String) -> Self {
        if let Some(u) = self.upgrade.as_mut() {
            u.pre_upgrade_snapshot = Some(handle);
        }
        self
    }

    fn failure(&self, action: &Action, message: &str, now: Timestamp) -> Self {
        super::record_failure(self, action, message, now)
    }
}

/// Health probes must not hold a step up for long.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Driver<P> {
    cluster: String,
    platform: P,
}

impl<P: Platform> Driver<P> {
    pub fn new(cluster: impl Into<String>, platform: P) -> Self {
        Self {
            cluster: cluster.into(),
            platform,
        }
    }

    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// One step: observe, decide, act, and return the status to persist. Errors are only
    /// returned when nothing could be observed; a failed action is recorded in the status.
    pub async fn step(
        &self,
        spec: &OpenBaoClusterSpec,
        status: &OpenBaoClusterStatus,
    ) -> Result<StepReport, DriverError> {
        let observed = self.observe().await?;
        let step = super::next_step(spec, status, &observed);
        if step.action.acts() {
            tracing::info!(cluster = %self.cluster, action = ?step.action, "upgrade step");
        }
        let outcome = self.execute(&step.action, status, &observed).await;
        Ok(report_outcome(
            "upgrade",
            &self.cluster,
            step.action,
            status,
            step.status,
            outcome,
            observed.now,
        ))
    }

    /// What the flows decide on: the platform's servers with their health, the raft view of the
    /// active server and where traffic goes.
    pub async fn observe(&self) -> Result<Observed, DriverError> {
        let platform_nodes = self.platform.nodes().await?;
        let traffic = self.platform.traffic().await?;
        let probes = platform_nodes.iter().map(|n| self.probe(n));
        let healths = join_all(probes).await;
        let nodes: Vec<NodeView> = platform_nodes
            .into_iter()
            .zip(healths)
            .map(|(n, health)| NodeView {
                id: n.id,
                revision: n.revision,
                ordinal: n.ordinal,
                version: n.version,
                running: n.running,
                health,
            })
            .collect();
        let mut raft = None;
        for active in nodes
            .iter()
            .filter(|n| n.health.as_ref().is_some_and(|h| h.state == HealthState::Active))
        {
            if let Some(view) = self.raft_view(&active.id).await {
                raft = Some(view);
                break;
            }
        }
        Ok(Observed {
            now: Timestamp::now(),
            cluster: self.cluster.clone(),
            nodes,
            raft,
            traffic,
        })
    }

    async fn probe(&self, node: &PlatformNode) -> Option<NodeHealth> {
        if !node.running {
            return None;
        }
        let client = self.platform.client(&node.id).await.ok()?;
        let health = tokio::time::timeout(PROBE_TIMEOUT, client.health()).await.ok()?.ok()?;
        Some(NodeHealth {
            state: health.state,
            version: health.version,
        })
    }

    /// The raft configuration and autopilot state as `node_id` reports them, if it is the
    /// leader by its own configuration (a server that just stepped down may still answer 200).
    async fn raft_view(&self, node_id: &str) -> Option<RaftView> {
        let client = self.platform.client(node_id).await.ok()?;
        raft_view(&client, node_id).await
    }

    /// Performs `action`; returns where the snapshot stands for [`Action::TakeSnapshot`].
    async fn execute(
        &self,
        action: &Action,
        status: &OpenBaoClusterStatus,
        observed: &Observed,
    ) -> Result<Option<Snapshot>, DriverError> {
        match action {
            Action::Nothing | Action::Record | Action::Wait => Ok(None),
            Action::TakeSnapshot => {
                let attempt = status.upgrade.as_ref().map_or(0, |u| u.failures);
                Ok(Some(self.platform.take_snapshot(attempt).await?))
            }
            Action::DeployNodes(deployment) => self
                .platform
                .deploy_nodes(deployment)
                .await
                .map(|_| None)
                .map_err(Into::into),
            Action::RemoveNodes { revision } => self
                .platform
                .remove_nodes(revision)
                .await
                .map(|_| None)
                .map_err(Into::into),
            Action::ReplaceNode { node_id, version } => self
                .platform
                .replace_node(node_id, version)
                .await
                .map(|_| None)
                .map_err(Into::into),
            Action::SwitchTraffic { to } => self.platform.switch_traffic(to).await.map(|_| None).map_err(Into::into),
            // Autopilot's state lags its decisions by up to its update interval, so a flow may
            // ask again for a change already made; OpenBao answers 500 to that. Such answers
            // count as done: the flow only moves on once the change is observed.
            Action::Promote { node_id } => {
                let (leader, client) = self.leader(observed).await?;
                match client.promote(node_id).await {
                    Err(e) if already(&e, "not a non-voter") => Ok(None),
                    other => other
                        .map(|_| None)
                        .map_err(openbao(&format!("promote {node_id}"), &leader)),
                }
            }
            Action::Demote { node_id } => {
                let (leader, client) = self.leader(observed).await?;
                match client.demote(node_id).await {
                    Err(e) if already(&e, "already a non-voter") => Ok(None),
                    other => other
                        .map(|_| None)
                        .map_err(openbao(&format!("demote {node_id}"), &leader)),
                }
            }
            Action::RemovePeer { node_id } => {
                let (leader, client) = self.leader(observed).await?;
                if &leader == node_id {
                    return Err(DriverError::Precondition(format!(
                        "refusing to remove {node_id}: it is the leader (step it down first)"
                    )));
                }
                let what = format!("remove-peer {node_id}");
                client.remove_peer(node_id).await.map_err(openbao(&what, &leader))?;
                // remove-peer answers 204 for ids it does not know: check the configuration.
                let config = client
                    .raft_configuration()
                    .await
                    .map_err(openbao("raft configuration after remove-peer", &leader))?;
                if config.server(node_id).is_some() {
                    return Err(DriverError::NotApplied(format!(
                        "remove-peer {node_id} answered success on {leader}, but {node_id} is still a raft peer"
                    )));
                }
                Ok(None)
            }
            Action::StepDown { node_id } => {
                let client = self.platform.client(node_id).await?;
                client.step_down().await.map_err(openbao("step-down", node_id))?;
                Ok(None)
            }
        }
    }

    async fn leader(&self, observed: &Observed) -> Result<(String, BaoClient), DriverError> {
        let leader = observed
            .raft
            .as_ref()
            .map(|r| r.leader.clone())
            .ok_or_else(|| DriverError::Precondition("no active server".into()))?;
        let client = self.platform.client(&leader).await?;
        Ok((leader, client))
    }
}

/// The raft configuration and autopilot state as `client` (server `node_id`) reports them, if
/// it is the leader by its own configuration (a server that just stepped down may still answer
/// 200). Shared with the seal-migration driver.
pub(super) async fn raft_view(client: &BaoClient, node_id: &str) -> Option<RaftView> {
    let config = tokio::time::timeout(PROBE_TIMEOUT, client.raft_configuration())
        .await
        .ok()?
        .ok()?;
    let leader = config.leader()?.node_id.clone();
    if leader != node_id {
        return None;
    }
    let autopilot = match tokio::time::timeout(PROBE_TIMEOUT, client.autopilot_state()).await {
        Ok(Ok(state)) => Some(AutopilotView {
            healthy: state.healthy,
            servers: state
                .servers
                .into_iter()
                .map(|(id, s)| {
                    let peer = AutopilotPeer {
                        healthy: s.healthy,
                        node_type: s.node_type,
                        last_index: s.last_index,
                    };
                    (id, peer)
                })
                .collect::<BTreeMap<_, _>>(),
        }),
        _ => None,
    };
    Some(RaftView {
        leader,
        peers: config
            .servers
            .into_iter()
            .map(|s| Peer {
                id: s.node_id,
                voter: s.voter,
            })
            .collect(),
        autopilot,
    })
}

/// A 500 whose text says the requested state already holds.
fn already(err: &BaoError, text: &str) -> bool {
    err.status() == Some(500) && err.api_errors().iter().any(|e| e.contains(text))
}

fn openbao<'a>(what: &'a str, node: &'a str) -> impl FnOnce(BaoError) -> DriverError + 'a {
    move |source| DriverError::OpenBao {
        what: what.to_string(),
        node: node.to_string(),
        source,
    }
}
