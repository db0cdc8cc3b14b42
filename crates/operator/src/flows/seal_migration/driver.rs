//! The seal-migration driver: one step per call, like [`crate::flows::Driver`]. It observes
//! every server's `sys/seal-status` and the leader's raft view, asks [`super::next_step`], acts,
//! and returns the status to persist. It keeps nothing between calls.
//!
//! A [`SealPlatform`] runs the servers (Kubernetes in the operator, processes in the tests) and
//! keeps the recovery key; it never decides anything.

use crate::flows::StepReport;
use crate::flows::step_report::{ActionKind, FlowAction, FlowStatus, report_outcome};
use futures::future::join_all;
use jiff::Timestamp;
use openbao_api::{SealMigrationStatus, UnsealType};
use openbao_client::{BaoClient, BaoError};
use serde_json::json;
use std::future::Future;

use super::{SealAction, SealNodeView, SealObserved, SealStage, SealTarget, SealView};
use crate::flows::driver::{PROBE_TIMEOUT, raft_view};
use crate::flows::{PlatformError, Snapshot};

/// What the token of [`SealPlatform::client`] needs: make and verify the recovery key, step
/// down, read the raft view (and snapshot, for the pre-migration snapshot). Self-init writes it
/// for new clusters; proven enough by `tests/seal_migration_processes.rs`.
pub use openbao_render::selfinit::SEAL_MIGRATION_POLICY;

/// One server as the platform knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealNode {
    /// The raft node id (pod name).
    pub id: String,
    pub ordinal: u32,
    /// Its process (pod) exists.
    pub running: bool,
    /// The seal configuration its running process was started with.
    pub stage: SealStage,
}

/// The recovery key the operator made, and the nonce that verifies it (until verified, the
/// cluster does not use it).
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryKey {
    /// Base64, as `sys/unseal` takes it. Never logged.
    pub key: String,
    pub verification_nonce: String,
}

impl std::fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryKey").finish_non_exhaustive()
    }
}

/// What runs the servers during a seal migration. Every method must be idempotent: the driver
/// may call it again after a crash, whether or not the first call took effect.
pub trait SealPlatform: Send + Sync {
    /// Every server of the cluster.
    fn nodes(&self) -> impl Future<Output = Result<Vec<SealNode>, PlatformError>> + Send;

    /// A client for server `node_id` with a token allowed `sys/rotate/recovery/init` and
    /// `.../verify` (read, update, delete, sudo), `sys/step-down` and the raft reads of the
    /// upgrade policy; short timeouts.
    fn client(&self, node_id: &str) -> impl Future<Output = Result<BaoClient, PlatformError>> + Send;

    /// Make server `node_id` run with the seal configuration of `stage`, keeping its storage:
    /// nothing when its running process already was started with it.
    fn restart_node(&self, node_id: &str, stage: SealStage) -> impl Future<Output = Result<(), PlatformError>> + Send;

    /// As [`crate::flows::Platform::take_snapshot`].
    fn take_snapshot(&self, attempt: i32) -> impl Future<Output = Result<Snapshot, PlatformError>> + Send;

    /// The recovery key stored by [`Self::store_recovery_key`], if any.
    fn recovery_key(&self) -> impl Future<Output = Result<Option<RecoveryKey>, PlatformError>> + Send;

    /// Keep `key` where a restarted operator finds it (a Secret), replacing any other.
    fn store_recovery_key(&self, key: &RecoveryKey) -> impl Future<Output = Result<(), PlatformError>> + Send;

    /// Remove what only the `from` seal needed (the static key Secret). Called once every
    /// server runs only the new seal.
    fn remove_old_seal(&self, from: UnsealType) -> impl Future<Output = Result<(), PlatformError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum SealDriverError {
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("{what} on {node}: {source}")]
    OpenBao {
        what: String,
        node: String,
        #[source]
        source: BaoError,
    },
    #[error("{0}")]
    Precondition(String),
}

/// What one call of [`SealDriver::step`] did.
impl FlowAction for SealAction {
    fn name(&self) -> &'static str {
        SealAction::name(self)
    }

    fn kind(&self) -> ActionKind {
        match self {
            // Removing the old seal's key is the migration's last act.
            SealAction::Nothing | SealAction::RemoveOldSeal { .. } => ActionKind::Finished,
            SealAction::Record => ActionKind::Record,
            SealAction::Wait => ActionKind::Wait,
            _ => ActionKind::Acted,
        }
    }
}

impl FlowStatus for SealMigrationStatus {
    type Action = SealAction;

    fn waiting(&self, message: String) -> Self {
        Self {
            message: Some(message),
            ..self.clone()
        }
    }

    fn snapshot_stored(self, handle: String) -> Self {
        Self {
            pre_migration_snapshot: Some(handle),
            ..self
        }
    }

    fn failure(&self, action: &SealAction, message: &str, now: Timestamp) -> Self {
        super::record_failure(self, action, message, now)
    }
}

pub type SealStepReport = StepReport<SealAction, SealMigrationStatus>;

pub struct SealDriver<P> {
    cluster: String,
    platform: P,
}

fn openbao<'a>(what: &'a str, node: &'a str) -> impl FnOnce(BaoError) -> SealDriverError + 'a {
    move |source| SealDriverError::OpenBao {
        what: what.to_string(),
        node: node.to_string(),
        source,
    }
}

/// The seal an unsealed server runs when its seal does not match storage: OpenBao answers
/// `barrier seal type of "X" does not match loaded type of "Y"` (HTTP 500).
fn mismatched_seal(err: &BaoError) -> Option<String> {
    let text = err.api_errors().join(" ");
    let rest = text.split("does not match loaded type of \"").nth(1)?;
    Some(rest.split('"').next()?.to_string())
}

impl<P: SealPlatform> SealDriver<P> {
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
        target: SealTarget,
        status: &SealMigrationStatus,
    ) -> Result<SealStepReport, SealDriverError> {
        let observed = self.observe().await?;
        let step = super::next_step(target, status, &observed);
        if step.action.acts() {
            tracing::info!(cluster = %self.cluster, action = ?step.action, "seal migration step");
        }
        let outcome = self.execute(&step.action, status).await;
        Ok(report_outcome(
            "seal migration",
            &self.cluster,
            step.action,
            status,
            step.status,
            outcome,
            observed.now,
        ))
    }

    pub async fn observe(&self) -> Result<SealObserved, SealDriverError> {
        let nodes = self.platform.nodes().await?;
        let seals = join_all(nodes.iter().map(|n| self.seal_of(n))).await;
        let views: Vec<SealNodeView> = nodes
            .into_iter()
            .zip(seals)
            .map(|(n, seal)| SealNodeView {
                id: n.id,
                ordinal: n.ordinal,
                running: n.running,
                stage: n.stage,
                seal,
            })
            .collect();
        let mut raft = None;
        for node in views.iter().filter(|n| n.seal.as_ref().is_some_and(|s| !s.sealed)) {
            let Ok(client) = self.platform.client(&node.id).await else {
                continue;
            };
            if let Some(view) = raft_view(&client, &node.id).await {
                raft = Some(view);
                break;
            }
        }
        Ok(SealObserved {
            now: Timestamp::now(),
            nodes: views,
            raft,
            recovery_key_held: self.platform.recovery_key().await?.is_some(),
        })
    }

    async fn seal_of(&self, node: &SealNode) -> Option<SealView> {
        if !node.running {
            return None;
        }
        let client = self.platform.client(&node.id).await.ok()?;
        match tokio::time::timeout(PROBE_TIMEOUT, client.seal_status()).await.ok()? {
            Ok(s) => Some(SealView {
                seal_type: s.seal_type,
                sealed: s.sealed,
                migration: s.migration,
                recovery_shares: s.n,
            }),
            Err(e) => mismatched_seal(&e).map(|seal_type| SealView {
                seal_type,
                sealed: false,
                migration: true,
                recovery_shares: 0,
            }),
        }
    }

    async fn execute(
        &self,
        action: &SealAction,
        status: &SealMigrationStatus,
    ) -> Result<Option<Snapshot>, SealDriverError> {
        match action {
            SealAction::Nothing | SealAction::Record | SealAction::Wait => Ok(None),
            SealAction::TakeSnapshot => Ok(Some(self.platform.take_snapshot(status.failures).await?)),
            SealAction::EnsureRecoveryKey => self.ensure_recovery_key().await.map(|_| None),
            SealAction::RestartNode { node_id, stage } => {
                self.platform.restart_node(node_id, *stage).await?;
                Ok(None)
            }
            SealAction::UnsealMigrate { node_id } => {
                let key = self.platform.recovery_key().await?.ok_or_else(|| {
                    SealDriverError::Precondition("no recovery key stored: cannot unseal in migration mode".into())
                })?;
                let client = self.platform.client(node_id).await?;
                let answer = client
                    .write("sys/unseal", &json!({"key": key.key, "migrate": true}))
                    .await
                    .map_err(openbao("unseal (migrate)", node_id))?;
                let sealed = answer.as_ref().and_then(|a| a["sealed"].as_bool()).unwrap_or(true);
                if sealed {
                    return Err(SealDriverError::Precondition(format!(
                        "{node_id} is still sealed after the recovery key was given"
                    )));
                }
                Ok(None)
            }
            SealAction::StepDown { node_id } => {
                let client = self.platform.client(node_id).await?;
                client.step_down().await.map_err(openbao("step-down", node_id))?;
                Ok(None)
            }
            SealAction::RemoveOldSeal { from } => {
                self.platform.remove_old_seal(*from).await?;
                Ok(None)
            }
        }
    }

    /// A recovery key the cluster uses and the platform holds. OpenBao returns a new key at
    /// once when the cluster has none, but with `require_verification` commits it only when
    /// the key is sent back: it is stored first, so a crash anywhere leaves either no key or a
    /// stored one. A pending rotation this driver cannot finish is cancelled and started again.
    pub async fn ensure_recovery_key(&self) -> Result<(), SealDriverError> {
        let (leader, client) = self.leader().await?;
        let seal = client.seal_status().await.map_err(openbao("seal status", &leader))?;
        let held = self.platform.recovery_key().await?;
        if seal.n > 0 {
            return match held {
                Some(_) => Ok(()),
                None => Err(SealDriverError::Precondition(
                    "the cluster has recovery keys the operator does not hold".into(),
                )),
            };
        }
        if let Some(key) = &held {
            let verified = client
                .write(
                    "sys/rotate/recovery/verify",
                    &json!({"key": key.key, "nonce": key.verification_nonce}),
                )
                .await;
            if verified.is_ok() {
                return Ok(());
            }
        }
        // Nothing usable pending: cancel whatever is. With nothing pending OpenBao answers 400
        // `no rotation configuration found`, which is what we want.
        for (path, what) in [
            ("sys/rotate/recovery/verify", "cancel recovery key verification"),
            ("sys/rotate/recovery/init", "cancel recovery key rotation"),
        ] {
            match client.delete(path).await {
                Err(e) if e.status() == Some(400) => {}
                other => other.map_err(openbao(what, &leader))?,
            }
        }
        let answer = client
            .write(
                "sys/rotate/recovery/init",
                &json!({"secret_shares": 1, "secret_threshold": 1, "require_verification": true}),
            )
            .await
            .map_err(openbao("make a recovery key", &leader))?
            .ok_or_else(|| SealDriverError::Precondition("sys/rotate/recovery/init answered nothing".into()))?;
        let data = &answer["data"];
        let key = RecoveryKey {
            key: data["keys_base64"][0].as_str().unwrap_or_default().to_string(),
            verification_nonce: data["verification_nonce"].as_str().unwrap_or_default().to_string(),
        };
        if key.key.is_empty() || key.verification_nonce.is_empty() {
            return Err(SealDriverError::Precondition(
                "sys/rotate/recovery/init returned no key or no verification nonce (does the cluster already have recovery keys?)"
                    .into(),
            ));
        }
        self.platform.store_recovery_key(&key).await?;
        client
            .write(
                "sys/rotate/recovery/verify",
                &json!({"key": key.key, "nonce": key.verification_nonce}),
            )
            .await
            .map_err(openbao("verify the recovery key", &leader))?;
        Ok(())
    }

    async fn leader(&self) -> Result<(String, BaoClient), SealDriverError> {
        for node in self.platform.nodes().await? {
            let Ok(client) = self.platform.client(&node.id).await else {
                continue;
            };
            if raft_view(&client, &node.id).await.is_some() {
                return Ok((node.id, client));
            }
        }
        Err(SealDriverError::Precondition("no active server".into()))
    }
}
