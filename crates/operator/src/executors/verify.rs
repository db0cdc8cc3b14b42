//! `openbao-operator verify-backup`: the restore drill. Restores a backup into a throw-away
//! single-node OpenBao that runs next to this executor in the same pod (a native sidecar on
//! 127.0.0.1 with raft in an emptyDir and the cluster's static seal key) and proves the restored
//! data is usable.
//!
//! Steps: find the backup (the given key, else the newest of the cluster), wait for the local
//! server, initialize it (its root token only lives in this process, for the restore), stream
//! the object from the store into a forced restore, wait until the server is unsealed and active
//! with the backup's data (its cluster id switches to the source's), then log in through the
//! restored `jwt-operator` mount with the Job's own service-account token and look the token up.
//! A backup sealed by another key leaves the throw-away server sealed, which is reported as a
//! failed drill; the cluster itself is never touched.
//!
//! Settings: those of the executors ([`OpenBaoArgs`]: `OPENBAO_ADDRESSES` is the local server,
//! `http://127.0.0.1:8200`; [`StoreArgs`]), plus `--key`/`VERIFY_KEY` (default: the newest
//! backup under `<pathPrefix>/<namespace>/<cluster>/`), `--cluster-namespace`/`CLUSTER_NAMESPACE`,
//! `--cluster-name`/`CLUSTER_NAME`, `--s3-path-prefix`/`S3_PATH_PREFIX`,
//! `--jwt-role`/`OPENBAO_JWT_ROLE` (default `openbao-operator-backup`),
//! `--server-timeout`/`VERIFY_SERVER_TIMEOUT` (wait for the local server, and for it to be
//! active again after the restore; default `120s`), `--result-file`/`EXECUTOR_RESULT_FILE`.

use super::{
    ClusterKeyArgs, Completed, ExecutorError, OpenBaoArgs, StoreArgs, client_with_timeout, login, openbao_failure,
};
use futures::TryStreamExt;
use openbao_api::duration::parse_with_days;
use openbao_client::{BaoClient, HealthState, Token};
use openbao_objstore::{ObjectInfo, Store, StoreError, parse_key_time};
use openbao_render::objects::jobs::Executor;
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::controllers::jobs::ExecutorResult;

#[derive(Clone, Debug, clap::Parser)]
#[command(name = "verify-backup")]
pub struct VerifyArgs {
    #[command(flatten)]
    pub openbao: OpenBaoArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The role the restored data trusts this Job's service account with.
    #[arg(
        long = "jwt-role",
        env = "OPENBAO_JWT_ROLE",
        default_value = openbao_api::DEFAULT_BACKUP_JWT_ROLE
    )]
    pub jwt_role: String,
    /// The backup to restore; empty: the newest backup of the cluster.
    #[arg(long = "key", env = "VERIFY_KEY", default_value = "")]
    pub key: String,
    #[command(flatten)]
    pub cluster: ClusterKeyArgs,
    /// How long the local server may take to answer, and to be active again after the restore.
    #[arg(long = "server-timeout", env = "VERIFY_SERVER_TIMEOUT", default_value = "120s", value_parser = parse_with_days)]
    pub server_timeout: Duration,
    /// Also write the result line to this file (e.g. `/dev/termination-log`).
    #[arg(long = "result-file", env = "EXECUTOR_RESULT_FILE")]
    pub result_file: Option<PathBuf>,
}

/// What a restore drill did; its [result line](ExecutorResult) is [`Completed::result_line`].
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct VerifyReport {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub duration_ms: u64,
    /// Milliseconds from the start of the download to an active server with the restored data.
    pub restore_ms: u64,
    /// The cluster id the restored data carries (the backed-up cluster's).
    pub restored_cluster_id: String,
    /// Policies of the token the restored JWT role issued to this Job.
    pub policies: Vec<String>,
}

impl Completed for VerifyReport {
    fn result_line(&self, operation: &str) -> ExecutorResult {
        ExecutorResult {
            restore_ms: Some(self.restore_ms),
            restored_cluster_id: Some(self.restored_cluster_id.clone()),
            policies: Some(self.policies.clone()),
            ..super::object_line(operation, &self.bucket, &self.key, self.size, self.duration_ms)
        }
    }
}

/// Runs the drill and prints the result line; returns the process exit code.
pub async fn main(args: VerifyArgs) -> i32 {
    super::execute(Executor::Verify.as_str(), args.result_file.as_deref(), run(&args)).await
}

pub async fn run(args: &VerifyArgs) -> Result<VerifyReport, ExecutorError> {
    let started = Instant::now();
    let local_url = args
        .openbao
        .addresses
        .iter()
        .map(|a| a.trim())
        .find(|a| !a.is_empty())
        .ok_or_else(|| ExecutorError::InvalidConfig("no address of the local OpenBao server given".into()))?
        .to_string();
    let store = Store::new(&args.store.target(&args.cluster.path_prefix)?, args.store.options())?;
    let object = find_backup(&store, args).await?;
    tracing::info!(key = %object.key, size = object.size, "backup to verify");

    // Restores answer only once the whole snapshot is installed; health polls answer at once.
    let local = client_with_timeout(&local_url, None, Duration::from_secs(15 * 60))?;
    let fresh = wait_for_state(&local, args.server_timeout, "answer", |_| true).await?;
    if fresh.initialized {
        return Err(ExecutorError::InvalidConfig(format!(
            "the local server at {local_url} is already initialized; the drill needs a fresh one"
        )));
    }
    let root = initialize(&local).await?;
    let before = wait_for_state(&local, args.server_timeout, "be active after initialization", |h| {
        h.state == HealthState::Active && h.cluster_id.is_some()
    })
    .await?;

    let restore_started = Instant::now();
    let (_, body) = store.download_stream(&object.key).await?;
    let store_failure: Arc<Mutex<Option<StoreError>>> = Arc::default();
    let slot = store_failure.clone();
    let body = body.map_err(move |e| {
        let text = e.to_string();
        slot.lock().expect("slot lock").replace(e);
        std::io::Error::other(text)
    });
    // Forced: the throw-away server's own keyring is replaced by the backup's, which only the
    // cluster's seal key opens; a backup sealed by another key shows up below as a sealed server.
    if let Err(err) = local.with_token(root).restore_snapshot_stream(body, true).await {
        if let Some(store_err) = store_failure.lock().expect("slot lock").take() {
            return Err(ExecutorError::Store(store_err));
        }
        return Err(openbao_failure(&local, err, |e| {
            ExecutorError::RestoreFailed(e.to_string())
        }));
    }
    tracing::info!(key = %object.key, "snapshot restored; waiting for the server to unseal");
    // OpenBao answers the restore before it has reloaded the restored data: the server is
    // the backup's once it is active again with the backup's cluster id.
    let after = wait_for_state(&local, args.server_timeout, "be active with the restored data", |h| {
        h.state == HealthState::Active && restored_cluster(&before, h).is_ok()
    })
    .await
    .map_err(|e| {
        ExecutorError::NotHealthyAfterRestore(format!(
            "{e}; a backup sealed by another key than this cluster's stays sealed"
        ))
    })?;
    let restored_cluster_id = restored_cluster(&before, &after)?;
    let restore_ms = restore_started.elapsed().as_millis() as u64;

    // The canary: the restored auth configuration accepts this Job's identity.
    let token = login(&local, &args.openbao, &args.jwt_role).await?;
    let info = token.token_lookup_self().await.map_err(|e| {
        openbao_failure(&token, e, |e| {
            ExecutorError::OpenBaoAuthFailed(format!("token lookup: {e}"))
        })
    })?;
    if info.policies.iter().all(|p| p == "default") {
        return Err(ExecutorError::OpenBaoAuthFailed(format!(
            "the restored role {:?} issued a token without its policies: {:?}",
            args.jwt_role, info.policies
        )));
    }
    Ok(VerifyReport {
        bucket: store.bucket().to_string(),
        key: object.key,
        size: object.size,
        duration_ms: started.elapsed().as_millis() as u64,
        restore_ms,
        restored_cluster_id,
        policies: info.policies,
    })
}

/// The given key, or the newest backup of the cluster.
async fn find_backup(store: &Store, args: &VerifyArgs) -> Result<ObjectInfo, ExecutorError> {
    if !args.key.trim().is_empty() {
        return Ok(store.head(args.key.trim()).await?);
    }
    let prefix = args.cluster.prefix("to find the newest backup without a key")?;
    let objects = store.list(&prefix).await?;
    newest(objects).ok_or_else(|| {
        ExecutorError::Store(StoreError::ObjectMissing {
            op: "finding the newest backup".into(),
            bucket: store.bucket().to_string(),
            key: format!("{prefix}/*.snap"),
        })
    })
}

/// The newest object whose key is a backup key (by the time in the key).
pub fn newest(objects: Vec<ObjectInfo>) -> Option<ObjectInfo> {
    objects
        .into_iter()
        .filter_map(|o| parse_key_time(&o.key).map(|t| (t, o)))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key.cmp(&b.1.key)))
        .map(|(_, o)| o)
}

/// The restored data is the backup's, not the fresh server's: its cluster id changed.
pub fn restored_cluster(
    before: &openbao_client::Health,
    after: &openbao_client::Health,
) -> Result<String, ExecutorError> {
    match (&before.cluster_id, &after.cluster_id) {
        (Some(b), Some(a)) if a != b => Ok(a.clone()),
        (_, Some(a)) => Err(ExecutorError::RestoreFailed(format!(
            "the server still reports its own cluster id {a} after the restore; the backup's data is not in place"
        ))),
        _ => Err(ExecutorError::NotHealthyAfterRestore(
            "the server reports no cluster id after the restore".into(),
        )),
    }
}

/// `sys/init` with one recovery share (the seal is the static key). The root token is only
/// used for the restore, which replaces the whole store and with it this token.
async fn initialize(local: &BaoClient) -> Result<Token, ExecutorError> {
    let answer = local
        .write("sys/init", &json!({"recovery_shares": 1, "recovery_threshold": 1}))
        .await
        .map_err(|e| {
            openbao_failure(local, e, |e| {
                ExecutorError::RestoreFailed(format!("initializing the local server: {e}"))
            })
        })?;
    root_token(answer.as_ref())
}

/// The root token of a `sys/init` answer; the rest of the answer (recovery keys) is dropped.
fn root_token(answer: Option<&serde_json::Value>) -> Result<Token, ExecutorError> {
    answer
        .and_then(|a| a.get("root_token"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .map(Token::new)
        .ok_or_else(|| ExecutorError::RestoreFailed("initializing the local server returned no root token".into()))
}

/// Polls `sys/health` every 500 ms until `wanted` holds for its answer.
async fn wait_for_state(
    local: &BaoClient,
    timeout: Duration,
    what: &str,
    wanted: impl Fn(&openbao_client::Health) -> bool,
) -> Result<openbao_client::Health, ExecutorError> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match local.health().await {
            Ok(h) if wanted(&h) => return Ok(h),
            Ok(h) => format!("{:?} (cluster id {:?})", h.state, h.cluster_id),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(ExecutorError::LeaderNotFound(format!(
                "the local server at {} did not {what} within {timeout:?}: {last}",
                local.base_url()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openbao_client::Health;

    fn object(key: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: 1,
            last_modified: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn newest_is_by_the_time_in_the_key_and_skips_other_objects() {
        let picked = newest(vec![
            object("p/ns/c/20260101T030000Z-0000000a.snap"),
            object("p/ns/c/20261124T142000Z-0000000b.snap"),
            object("p/ns/c/notes.txt"),
            object("p/ns/c/20260601T000000Z-0000000c.snap"),
        ]);
        assert_eq!(picked.unwrap().key, "p/ns/c/20261124T142000Z-0000000b.snap");
        assert_eq!(newest(vec![object("p/ns/c/notes.txt")]), None);
    }

    fn health(cluster_id: Option<&str>) -> Health {
        Health {
            state: HealthState::Active,
            initialized: true,
            sealed: false,
            standby: false,
            performance_standby: false,
            version: "2.7.2".into(),
            cluster_id: cluster_id.map(String::from),
            cluster_name: None,
            server_time_utc: None,
        }
    }

    #[test]
    fn the_restored_data_carries_the_source_cluster_id() {
        assert_eq!(
            restored_cluster(&health(Some("fresh")), &health(Some("source"))).unwrap(),
            "source"
        );
        let same = restored_cluster(&health(Some("fresh")), &health(Some("fresh"))).unwrap_err();
        assert_eq!(same.reason(), "RestoreFailed");
        assert!(restored_cluster(&health(Some("fresh")), &health(None)).is_err());
    }

    #[test]
    fn only_the_root_token_is_kept_from_the_init_answer() {
        let answer = json!({"root_token": "s.root", "recovery_keys": ["k"], "keys": []});
        let token = root_token(Some(&answer)).unwrap();
        assert_eq!(token.expose(), "s.root");
        assert!(!format!("{token:?}").contains("s.root"));
        assert_eq!(root_token(Some(&json!({}))).unwrap_err().reason(), "RestoreFailed");
        assert!(root_token(None).is_err());
    }
}
