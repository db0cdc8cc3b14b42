//! `openbao-operator backup`: one raft snapshot, streamed from the active node straight into a
//! multipart upload, verified, then retention.
//!
//! Order matters: the store is checked first (credentials, bucket, reachability), so a broken
//! store is reported as such without loading OpenBao with a snapshot; the object is verified
//! before retention runs, so retention never deletes an old backup for a new one that is bad.

use super::{ClusterKeyArgs, Completed, ExecutorError, OpenBaoArgs, StoreArgs, find_leader, login, openbao_failure};
use openbao_api::duration::parse_with_days;
use openbao_client::BaoClient;
use openbao_objstore::{Retention, Store, StoreError, UploadError, Uploaded, new_backup_key, retention_plan};
use openbao_render::objects::jobs::Executor;
use serde::Serialize;

use crate::controllers::jobs::ExecutorResult;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, clap::Parser)]
#[command(name = "backup")]
pub struct BackupArgs {
    #[command(flatten)]
    pub openbao: OpenBaoArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(
        long = "jwt-role",
        env = "OPENBAO_JWT_ROLE",
        default_value = openbao_api::DEFAULT_BACKUP_JWT_ROLE
    )]
    pub jwt_role: String,
    #[command(flatten)]
    pub cluster: ClusterKeyArgs,
    /// Keep at most this many backups of the cluster (the newest is always kept).
    #[arg(long = "retention-max-count", env = "BACKUP_RETENTION_MAX_COUNT")]
    pub retention_max_count: Option<usize>,
    /// Delete backups older than this (`36h`, `7d`, …).
    #[arg(long = "retention-max-age", env = "BACKUP_RETENTION_MAX_AGE", value_parser = parse_with_days)]
    pub retention_max_age: Option<Duration>,
    /// Read the stored object back and compare its SHA-256 (not only its size).
    #[arg(long = "verify-checksum", env = "BACKUP_VERIFY_CHECKSUM", default_value_t = true, action = clap::ArgAction::Set)]
    pub verify_checksum: bool,
    /// Also write the result line to this file (e.g. `/dev/termination-log`).
    #[arg(long = "result-file", env = "EXECUTOR_RESULT_FILE")]
    pub result_file: Option<PathBuf>,
}

/// What a backup did; its [result line](ExecutorResult) is [`Completed::result_line`].
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BackupReport {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub duration_ms: u64,
    /// Milliseconds of the snapshot stream + upload alone.
    pub transfer_ms: u64,
    /// The node the snapshot came from.
    pub leader: String,
    /// Keys deleted by retention, oldest first.
    pub deleted: Vec<String>,
    /// Set when the backup succeeded but retention did not finish (the next run retries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_error: Option<String>,
}

impl Completed for BackupReport {
    fn result_line(&self, operation: &str) -> ExecutorResult {
        ExecutorResult {
            sha256: Some(self.sha256.clone()),
            transfer_ms: Some(self.transfer_ms),
            leader: Some(self.leader.clone()),
            deleted: Some(self.deleted.clone()),
            retention_error: self.retention_error.clone(),
            ..super::object_line(operation, &self.bucket, &self.key, self.size, self.duration_ms)
        }
    }
}

/// Runs the backup and prints the result line; returns the process exit code.
pub async fn main(args: BackupArgs) -> i32 {
    super::execute(Executor::Backup.as_str(), args.result_file.as_deref(), run(&args)).await
}

/// The whole backup; the report on success.
pub async fn run(args: &BackupArgs) -> Result<BackupReport, ExecutorError> {
    let started = Instant::now();
    let cluster = &args.cluster;
    let prefix = cluster.prefix("(they are part of the object key)")?;
    let target = args.store.target(&cluster.path_prefix)?;
    let store = Store::new(&target, args.store.options())?;
    // Fails fast on wrong credentials, a missing bucket or an unreachable store.
    let existing = store.list(&prefix).await?;
    tracing::info!(bucket = store.bucket(), prefix = %prefix, existing = existing.len(), "store reachable");

    let mut leader = find_leader(&args.openbao).await?;
    let mut bao = login(&leader, &args.openbao, &args.jwt_role).await?;

    let key = new_backup_key(&cluster.path_prefix, &cluster.namespace, &cluster.name, now());
    let mut transfer_started = Instant::now();
    let snapshot = match bao.snapshot().await {
        // Leadership moved between finding the leader and asking it: nothing was read yet, so
        // asking the new leader once is safe.
        Err(e) if e.redirect_location().is_some() => {
            tracing::warn!(error = %e, "the pinned node is no longer active; finding the active node again");
            leader = find_leader(&args.openbao).await?;
            bao = login(&leader, &args.openbao, &args.jwt_role).await?;
            transfer_started = Instant::now();
            bao.snapshot().await
        }
        other => other,
    }
    .map_err(|e| openbao_failure(&bao, e, |e| ExecutorError::SnapshotFailed(e.to_string())))?;
    let uploaded = store.upload_stream(&key.key, snapshot).await.map_err(|e| match e {
        UploadError::Source(e) => ExecutorError::SnapshotFailed(format!("the snapshot stream broke: {e}")),
        UploadError::Store(e) => ExecutorError::Store(e),
    })?;
    let transfer_ms = transfer_started.elapsed().as_millis() as u64;
    tracing::info!(key = %uploaded.key, size = uploaded.size, transfer_ms, "snapshot uploaded");

    if let Err(err) = verify(&store, &uploaded, args.verify_checksum).await {
        // An object that failed its check must not be counted as a backup later (retention
        // would keep it and delete a good one), so it goes.
        match store.delete(&uploaded.key).await {
            Ok(()) => tracing::warn!(key = %uploaded.key, "deleted the object that failed verification"),
            Err(e) => {
                tracing::error!(key = %uploaded.key, error = %e, "could not delete the object that failed verification")
            }
        }
        return Err(err.into());
    }

    let retention = Retention {
        max_count: args.retention_max_count,
        max_age: args.retention_max_age,
    };
    let (deleted, retention_error) = apply_retention(&store, &prefix, key.time, retention).await;
    Ok(BackupReport {
        bucket: store.bucket().to_string(),
        key: uploaded.key,
        size: uploaded.size,
        sha256: uploaded.sha256,
        duration_ms: started.elapsed().as_millis() as u64,
        transfer_ms,
        leader: base_url(&leader),
        deleted,
        retention_error,
    })
}

/// The stored object has the uploaded size and, if asked, the uploaded SHA-256.
async fn verify(store: &Store, uploaded: &Uploaded, checksum: bool) -> Result<(), StoreError> {
    store.verify(&uploaded.key, uploaded.size).await?;
    if checksum {
        store
            .verify_checksum(&uploaded.key, uploaded.size, &uploaded.sha256)
            .await?;
    }
    Ok(())
}

/// Deletes what the retention plan says, one object at a time; stops at the first failure.
async fn apply_retention(
    store: &Store,
    prefix: &str,
    now: jiff::Timestamp,
    retention: Retention,
) -> (Vec<String>, Option<String>) {
    if retention == Retention::default() {
        return (Vec::new(), None);
    }
    let objects = match store.list(prefix).await {
        Ok(o) => o,
        Err(e) => return (Vec::new(), Some(e.to_string())),
    };
    let mut deleted = Vec::new();
    for key in retention_plan(&objects, now, retention) {
        if let Err(e) = store.delete(&key).await {
            return (deleted, Some(e.to_string()));
        }
        tracing::info!(key = %key, "retention deleted an old backup");
        deleted.push(key);
    }
    (deleted, None)
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

fn base_url(client: &BaoClient) -> String {
    client.base_url().as_str().trim_end_matches('/').to_string()
}
