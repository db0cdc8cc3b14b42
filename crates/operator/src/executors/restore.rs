//! `openbao-operator restore`: stream one backup from the store into the active node.
//!
//! The restore is always the checked one (`POST sys/storage/raft/snapshot`, never
//! `snapshot-force`). OpenBao verifies the snapshot's sealed hash file with the cluster's seal
//! key: a snapshot from a cluster with the same seal key restores (even from another cluster),
//! and one from a different seal key is refused with HTTP 400 "could not verify hash file".
//! `snapshot-force` would skip exactly that check and install a keyring this cluster cannot
//! decrypt, sealing it for good — so that answer becomes `SealMismatch` and the cluster is left
//! as it was. Any other rejection (a corrupt or truncated file) would fail the forced restore
//! too, so it is reported as `RestoreFailed` without a second attempt. A connection that breaks
//! or times out after the snapshot went out is `RestoreOutcomeUnknown`: OpenBao may be
//! installing it, so a retry must look at the cluster first.
//!
//! OpenBao's answer to the restore is not the restore: it installs the snapshot afterwards (see
//! [`wait_until_applied`]), so success is reported only once the restored data is in place.

use super::{Completed, ExecutorError, OpenBaoArgs, StoreArgs, find_leader, login, openbao_failure};
use futures::TryStreamExt;
use openbao_api::duration::parse_with_days;
use openbao_client::BaoError;
use openbao_objstore::{Store, StoreError};
use openbao_render::objects::jobs::Executor;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::controllers::jobs::ExecutorResult;

/// What OpenBao says when the snapshot's hash was sealed by another key.
const SEAL_MISMATCH_TEXT: &str = "could not verify hash file";

/// One look at whether the restore is in place: a token lookup, which the active node answers
/// once it holds no state lock (the install holds it throughout).
const APPLIED_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const APPLIED_PROBE_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, clap::Parser)]
#[command(name = "restore")]
pub struct RestoreArgs {
    #[command(flatten)]
    pub openbao: OpenBaoArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(
        long = "jwt-role",
        env = "OPENBAO_JWT_ROLE",
        default_value = openbao_api::DEFAULT_RESTORE_JWT_ROLE
    )]
    pub jwt_role: String,
    /// The full object key of the backup, as the backup reported it.
    #[arg(long = "key", env = "RESTORE_KEY")]
    pub key: String,
    /// How long OpenBao may take to answer once it has the whole snapshot (it installs it
    /// before it answers).
    #[arg(long = "response-timeout", env = "RESTORE_RESPONSE_TIMEOUT", default_value = "15m", value_parser = parse_with_days)]
    pub response_timeout: Duration,
    /// How long OpenBao may take, once it answered, to put the snapshot in place and have an
    /// active node again.
    #[arg(long = "healthy-timeout", env = "RESTORE_HEALTHY_TIMEOUT", default_value = "120s", value_parser = parse_with_days)]
    pub healthy_timeout: Duration,
    /// Also write the result line to this file (e.g. `/dev/termination-log`).
    #[arg(long = "result-file", env = "EXECUTOR_RESULT_FILE")]
    pub result_file: Option<PathBuf>,
}

/// What a restore did; its [result line](ExecutorResult) is [`Completed::result_line`].
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RestoreReport {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub duration_ms: u64,
    /// The node the snapshot was restored through.
    pub leader: String,
}

impl Completed for RestoreReport {
    fn result_line(&self, operation: &str) -> ExecutorResult {
        ExecutorResult {
            leader: Some(self.leader.clone()),
            ..super::object_line(operation, &self.bucket, &self.key, self.size, self.duration_ms)
        }
    }
}

/// Runs the restore and prints the result line; returns the process exit code.
pub async fn main(args: RestoreArgs) -> i32 {
    super::execute(Executor::Restore.as_str(), args.result_file.as_deref(), run(&args)).await
}

pub async fn run(args: &RestoreArgs) -> Result<RestoreReport, ExecutorError> {
    let started = Instant::now();
    if args.key.trim().is_empty() {
        return Err(ExecutorError::InvalidConfig(
            "the backup key to restore is required".into(),
        ));
    }
    let store = Store::new(&args.store.target("")?, args.store.options())?;
    // The object must exist before OpenBao is touched.
    let object = store.head(&args.key).await?;
    tracing::info!(key = %args.key, size = object.size, "backup found");

    let leader = find_leader(&args.openbao).await?;
    // The same node as found (its address may be pinned to the active node's IP), patient.
    let patient = leader.with_timeout(args.response_timeout).map_err(invalid_client)?;
    let bao = login(&patient, &args.openbao, &args.jwt_role).await?;
    let witness = bao.with_timeout(APPLIED_PROBE_TIMEOUT).map_err(invalid_client)?;
    check_witness(&witness, &args.jwt_role).await?;

    let (_, body) = store.download_stream(&args.key).await?;
    // A store failure mid-stream reaches OpenBao only as a broken request body; keep the real
    // error so the reason names the store, not OpenBao.
    let store_failure: Arc<Mutex<Option<StoreError>>> = Arc::default();
    let slot = store_failure.clone();
    let body = body.map_err(move |e| {
        let text = e.to_string();
        slot.lock().expect("slot lock").replace(e);
        std::io::Error::other(text)
    });
    if let Err(err) = bao.restore_snapshot_stream(body, false).await {
        if let Some(store_err) = store_failure.lock().expect("slot lock").take() {
            return Err(ExecutorError::Store(store_err));
        }
        return Err(classify_restore_error(&bao, err));
    }
    let deadline = Instant::now() + args.healthy_timeout;
    tracing::info!(key = %args.key, "snapshot accepted; waiting until OpenBao has put it in place");
    wait_until_applied(&witness, deadline).await?;
    tracing::info!(key = %args.key, "snapshot in place; waiting for an active node");

    let healthy = OpenBaoArgs {
        leader_timeout: deadline
            .saturating_duration_since(Instant::now())
            .max(APPLIED_PROBE_TIMEOUT),
        ..args.openbao.clone()
    };
    let after = find_leader(&healthy)
        .await
        .map_err(|e| ExecutorError::NotHealthyAfterRestore(e.to_string()))?;
    Ok(RestoreReport {
        bucket: store.bucket().to_string(),
        key: args.key.clone(),
        size: object.size,
        duration_ms: started.elapsed().as_millis() as u64,
        leader: after.base_url().as_str().trim_end_matches('/').to_string(),
    })
}

/// The executor's token must be one a restore ends: a service token (kept in the token store
/// the snapshot replaces), which the restore policy may look up. A batch token lives in no store
/// and would stay valid, so it could not show the restore in place.
async fn check_witness(witness: &openbao_client::BaoClient, role: &str) -> Result<(), ExecutorError> {
    let own = witness.token_lookup_self().await.map_err(|e| {
        openbao_failure(witness, e, |e| {
            ExecutorError::OpenBaoAuthFailed(format!("looking up the restore token of role {role:?}: {e}"))
        })
    })?;
    if own.token_type == "batch" {
        return Err(ExecutorError::InvalidConfig(format!(
            "the JWT role {role:?} issues batch tokens; the restore needs a service token, the one \
             way to see that OpenBao has put the snapshot in place (a batch token outlives a restore)"
        )));
    }
    Ok(())
}

/// Waits until the restored data is in place on the node the snapshot went to.
///
/// OpenBao answers `POST sys/storage/raft/snapshot` before it installs the snapshot: the
/// handler hands it to a goroutine that takes the state lock, pre-seals, applies it and
/// post-unseals, and a failure there seals the node without telling the caller. A call that
/// reaches the node before that goroutine holds the lock still sees the old data (CI saw it:
/// `bao/tests/restore_forwarding.rs`). The witness is this executor's own token: the login that
/// issued it came after every backup, so no snapshot holds it, and the node refuses it (403)
/// once the restored token store is in place. Still valid, sealed, redirected or unreachable
/// all mean "not yet".
async fn wait_until_applied(witness: &openbao_client::BaoClient, deadline: Instant) -> Result<(), ExecutorError> {
    let started = Instant::now();
    loop {
        let not_yet = match witness.token_lookup_self().await {
            Err(e) if matches!(e.status(), Some(401 | 403)) => {
                tracing::info!(after = ?started.elapsed(), "the restored token store is in place");
                return Ok(());
            }
            Ok(_) => "the token issued before the restore is still valid".to_string(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(ExecutorError::RestoreNotApplied(format!(
                "after {:?}: {not_yet}",
                started.elapsed()
            )));
        }
        tokio::time::sleep(APPLIED_PROBE_INTERVAL).await;
    }
}

fn invalid_client(e: BaoError) -> ExecutorError {
    ExecutorError::InvalidConfig(e.to_string())
}

fn classify_restore_error(bao: &openbao_client::BaoClient, err: BaoError) -> ExecutorError {
    match &err {
        BaoError::Api {
            status: 400, errors, ..
        } if errors.iter().any(|e| e.contains(SEAL_MISMATCH_TEXT)) => ExecutorError::SealMismatch(err.to_string()),
        // The connection was up: OpenBao may have the whole snapshot and be installing it.
        BaoError::Timeout { .. } | BaoError::Transport { .. } => ExecutorError::RestoreOutcomeUnknown(err.to_string()),
        _ => openbao_failure(bao, err, |e| ExecutorError::RestoreFailed(e.to_string())),
    }
}
