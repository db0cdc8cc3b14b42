//! The backup and restore executors: `openbao-operator backup` and `openbao-operator restore`,
//! run by the controller as Jobs in the cluster's namespace. They talk to OpenBao (leader
//! discovery, JWT login with the Job's projected service-account token) and to the object store
//! themselves, so the controller never needs the store's credentials or network access to it.
//!
//! Each run prints exactly one JSON line to stdout — the result the controller reads — and logs
//! to stderr. A failure carries a `reason` (see [`ExecutorError::reason`]) and exits non-zero.
//! Tokens, keys and snapshot bytes never reach a log line or the result.
//!
//! Settings come from flags or the environment (the Job sets the environment):
//!
//! | flag | env | meaning |
//! |---|---|---|
//! | `--openbao-addr` | `OPENBAO_ADDRESSES` | comma-separated API URLs of the pods, or the public Service |
//! | `--openbao-ca-file` | `OPENBAO_CA_FILE` | PEM CA bundle for OpenBao's TLS (else system roots) |
//! | `--jwt-mount` | `OPENBAO_JWT_MOUNT` | JWT auth mount, default `jwt-operator` |
//! | `--jwt-role` | `OPENBAO_JWT_ROLE` | default `openbao-operator-backup` / `openbao-operator-restore` |
//! | `--jwt-token-file` | `OPENBAO_JWT_TOKEN_FILE` | projected service-account token |
//! | `--leader-timeout` | `OPENBAO_LEADER_TIMEOUT` | how long to look for the active node, default `30s` |
//! | `--openbao-pin-active` | `OPENBAO_PIN_ACTIVE` | talk to the active node by its own address once found, default `true` |
//! | `--s3-endpoint` | `S3_ENDPOINT` | e.g. `https://rustfs.storage.svc:9000` (empty: AWS) |
//! | `--s3-bucket` | `S3_BUCKET` | |
//! | `--s3-region` | `S3_REGION` | default `us-east-1` |
//! | `--s3-path-style` | `S3_USE_PATH_STYLE` | default `true` |
//! | `--s3-credentials-dir` | `S3_CREDENTIALS_DIR` | mounted Secret: `accessKeyId`, `secretAccessKey`, optional `caCert` |
//! | `--s3-part-size-mib` | `S3_PART_SIZE_MIB` | multipart part size, default 8 (min 5) |
//! | `--s3-concurrency` | `S3_CONCURRENCY` | parts in flight, default 2 |
//! | `--s3-retries` | `S3_MAX_RETRIES` | retries per S3 request, default 3 |
//! | `--result-file` | `EXECUTOR_RESULT_FILE` | also write the result line here (e.g. `/dev/termination-log`) |
//!
//! Backup only: `--cluster-namespace`/`CLUSTER_NAMESPACE`, `--cluster-name`/`CLUSTER_NAME`,
//! `--s3-path-prefix`/`S3_PATH_PREFIX`, `--retention-max-count`/`BACKUP_RETENTION_MAX_COUNT`,
//! `--retention-max-age`/`BACKUP_RETENTION_MAX_AGE` (`30m`, `36h`, `7d`, `1d12h`),
//! `--verify-checksum`/`BACKUP_VERIFY_CHECKSUM` (read the object back and compare its SHA-256,
//! default `true`). Restore only: `--key`/`RESTORE_KEY`, `--response-timeout`/
//! `RESTORE_RESPONSE_TIMEOUT` (how long OpenBao may take to confirm, default `15m`),
//! `--healthy-timeout`/`RESTORE_HEALTHY_TIMEOUT` (wait until the snapshot is in place and a node is active, `120s`).

pub mod backup;
pub mod restore;
pub mod verify;

use crate::controllers::jobs::ExecutorResult;
use openbao_api::duration::parse_with_days;
use openbao_client::{BaoClient, BaoError, ClientConfig, HealthState};
use openbao_objstore::{Credentials, Secret, StoreError, StoreOptions, Target};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How to reach and log in to OpenBao.
#[derive(Clone, Debug, clap::Args)]
pub struct OpenBaoArgs {
    /// API URLs of the pods (any order) or of the public Service.
    #[arg(
        long = "openbao-addr",
        env = "OPENBAO_ADDRESSES",
        value_delimiter = ',',
        required = true
    )]
    pub addresses: Vec<String>,
    /// PEM CA bundle that OpenBao's serving certificate chains to.
    #[arg(long = "openbao-ca-file", env = "OPENBAO_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    #[arg(long = "jwt-mount", env = "OPENBAO_JWT_MOUNT", default_value = openbao_render::selfinit::JWT_MOUNT)]
    pub jwt_mount: String,
    /// The Job's projected service-account token.
    #[arg(
        long = "jwt-token-file",
        env = "OPENBAO_JWT_TOKEN_FILE",
        default_value = openbao_render::objects::jobs::TOKEN_PATH
    )]
    pub jwt_token_file: PathBuf,
    /// How long to keep looking for the active node.
    #[arg(long = "leader-timeout", env = "OPENBAO_LEADER_TIMEOUT", default_value = "30s", value_parser = parse_with_days)]
    pub leader_timeout: Duration,
    /// Once an address answers as the active node, talk to that node by its own address: behind a
    /// load-balancing Service the next request may otherwise reach a standby. Off only when the
    /// given address must carry every request (a proxy in front of one node).
    #[arg(long = "openbao-pin-active", env = "OPENBAO_PIN_ACTIVE", default_value_t = true, action = clap::ArgAction::Set)]
    pub pin_active: bool,
}

/// Which cluster's backups: the parts of their object keys, `<pathPrefix>/<namespace>/<name>/…`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClusterKeyArgs {
    /// Namespace of the OpenBaoCluster.
    #[arg(long = "cluster-namespace", env = "CLUSTER_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// Name of the OpenBaoCluster.
    #[arg(long = "cluster-name", env = "CLUSTER_NAME", default_value = "")]
    pub name: String,
    #[arg(long = "s3-path-prefix", env = "S3_PATH_PREFIX", default_value = "")]
    pub path_prefix: String,
}

impl ClusterKeyArgs {
    /// The prefix of the cluster's backups; `why` says what the names are needed for.
    pub fn prefix(&self, why: &str) -> Result<String, ExecutorError> {
        if self.namespace.is_empty() || self.name.is_empty() {
            return Err(ExecutorError::InvalidConfig(format!(
                "the cluster namespace and name are required {why}"
            )));
        }
        Ok(openbao_objstore::cluster_prefix(
            &self.path_prefix,
            &self.namespace,
            &self.name,
        ))
    }
}

/// Where the object store is and how to authenticate.
#[derive(Clone, Debug, clap::Args)]
pub struct StoreArgs {
    #[arg(long = "s3-endpoint", env = "S3_ENDPOINT", default_value = "")]
    pub endpoint: String,
    #[arg(long = "s3-bucket", env = "S3_BUCKET")]
    pub bucket: String,
    #[arg(long = "s3-region", env = "S3_REGION", default_value = "us-east-1")]
    pub region: String,
    #[arg(long = "s3-path-style", env = "S3_USE_PATH_STYLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub use_path_style: bool,
    /// Directory of the mounted credentials Secret.
    #[arg(
        long = "s3-credentials-dir",
        env = "S3_CREDENTIALS_DIR",
        default_value = openbao_render::objects::jobs::CREDENTIALS_DIR
    )]
    pub credentials_dir: PathBuf,
    #[arg(long = "s3-part-size-mib", env = "S3_PART_SIZE_MIB", default_value_t = 8)]
    pub part_size_mib: usize,
    #[arg(long = "s3-concurrency", env = "S3_CONCURRENCY", default_value_t = 2)]
    pub concurrency: usize,
    #[arg(long = "s3-retries", env = "S3_MAX_RETRIES", default_value_t = 3)]
    pub max_retries: usize,
}

impl StoreArgs {
    /// The target, with credentials read from the mounted Secret.
    pub fn target(&self, path_prefix: &str) -> Result<Target, ExecutorError> {
        let dir = &self.credentials_dir;
        let access_key_id = read_secret_file(&dir.join("accessKeyId"))?;
        let secret_access_key = Secret::new(read_secret_file(&dir.join("secretAccessKey"))?);
        let ca_path = dir.join("caCert");
        let ca_cert_pem = if ca_path.exists() {
            Some(read_secret_file(&ca_path)?)
        } else {
            None
        };
        Ok(Target {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            path_prefix: path_prefix.to_string(),
            use_path_style: self.use_path_style,
            credentials: Credentials {
                access_key_id,
                secret_access_key,
                ca_cert_pem,
            },
        })
    }

    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            part_size: self.part_size_mib.saturating_mul(1024 * 1024),
            max_concurrency: self.concurrency.max(1),
            max_retries: self.max_retries,
            ..StoreOptions::default()
        }
    }
}

fn read_secret_file(path: &Path) -> Result<String, ExecutorError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ExecutorError::InvalidConfig(format!("reading {}: {e}", path.display())))?;
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(ExecutorError::InvalidConfig(format!("{} is empty", path.display())));
    }
    Ok(text)
}

/// Why an executor run failed. [`reason`](Self::reason) is what the controller puts into the
/// status; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("invalid executor settings: {0}")]
    InvalidConfig(String),
    #[error("no active OpenBao node: {0}")]
    LeaderNotFound(String),
    #[error("OpenBao at {url} is unreachable: {source}")]
    OpenBaoUnreachable { url: String, source: BaoError },
    #[error("OpenBao refused the login or the operation: {0}")]
    OpenBaoAuthFailed(String),
    #[error("taking the raft snapshot failed: {0}")]
    SnapshotFailed(String),
    #[error(
        "the snapshot was sealed with a different seal key than this cluster's; restoring it would \
         leave the cluster sealed for good, so it was refused: {0}"
    )]
    SealMismatch(String),
    #[error("OpenBao rejected the snapshot: {0}")]
    RestoreFailed(String),
    #[error(
        "the snapshot was sent, but OpenBao did not confirm the restore ({0}); it may still have \
         been applied, check the cluster before retrying"
    )]
    RestoreOutcomeUnknown(String),
    #[error(
        "OpenBao accepted the snapshot but did not put it in place: {0}; a failed install seals \
         the node, whose log says why"
    )]
    RestoreNotApplied(String),
    #[error("the cluster did not come back with an active node after the restore: {0}")]
    NotHealthyAfterRestore(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ExecutorError {
    /// CamelCase reason: `InvalidConfig`, `LeaderNotFound`, `OpenBaoUnreachable`,
    /// `OpenBaoAuthFailed`, `SnapshotFailed`, `SealMismatch`, `RestoreFailed`,
    /// `RestoreOutcomeUnknown`, `RestoreNotApplied`, `NotHealthyAfterRestore`, or the store's (`CredentialsRejected`,
    /// `BucketMissing`, `Unreachable`, `ObjectMissing`, `VerificationFailed`, `Other`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidConfig(_) => "InvalidConfig",
            Self::LeaderNotFound(_) => "LeaderNotFound",
            Self::OpenBaoUnreachable { .. } => "OpenBaoUnreachable",
            Self::OpenBaoAuthFailed(_) => "OpenBaoAuthFailed",
            Self::SnapshotFailed(_) => "SnapshotFailed",
            Self::SealMismatch(_) => "SealMismatch",
            Self::RestoreFailed(_) => "RestoreFailed",
            Self::RestoreOutcomeUnknown(_) => "RestoreOutcomeUnknown",
            Self::RestoreNotApplied(_) => "RestoreNotApplied",
            Self::NotHealthyAfterRestore(_) => "NotHealthyAfterRestore",
            Self::Store(e) => e.reason(),
        }
    }
}

/// What an executor run reports when it succeeds: its [result line](ExecutorResult).
pub(crate) trait Completed {
    fn result_line(&self, operation: &str) -> ExecutorResult;
}

/// The result line of a run of `operation` that succeeded with the backup object `bucket`/`key`
/// of `size` bytes in `duration_ms`; the caller adds what else it did.
pub(crate) fn object_line(operation: &str, bucket: &str, key: &str, size: u64, duration_ms: u64) -> ExecutorResult {
    ExecutorResult {
        bucket: Some(bucket.to_string()),
        key: Some(key.to_string()),
        size: Some(size),
        duration_ms: Some(duration_ms),
        ..ExecutorResult::succeeded_run(operation)
    }
}

/// Runs one executor: process set-up, the run, one log line and the result line; returns the
/// process exit code.
pub(crate) async fn execute<T: Completed>(
    operation: &str,
    result_file: Option<&Path>,
    run: impl std::future::Future<Output = Result<T, ExecutorError>>,
) -> i32 {
    init_process();
    let started = Instant::now();
    let outcome = run.await;
    let line = match &outcome {
        Ok(r) => {
            let line = r.result_line(operation);
            let key = line.key.as_deref().unwrap_or_default();
            tracing::info!(operation, key = %key, size = line.size.unwrap_or_default(), duration_ms = line.duration_ms.unwrap_or_default(), "done");
            line
        }
        Err(e) => {
            tracing::error!(operation, reason = e.reason(), error = %e, "failed");
            failure_line(operation, started, e)
        }
    };
    report(&line, result_file)
}

/// The result line of a run of `operation` that failed with `err`.
fn failure_line(operation: &str, started: Instant, err: &ExecutorError) -> ExecutorResult {
    let duration_ms = started.elapsed().as_millis() as u64;
    ExecutorResult::failed_run(operation, err.reason(), err.to_string(), duration_ms)
}

/// Prints the result line (and writes it to `result_file`), returns the exit code.
fn report(result: &ExecutorResult, result_file: Option<&Path>) -> i32 {
    let line = result.to_line();
    let code = if result.succeeded() { 0 } else { 1 };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    if let Some(path) = result_file {
        // The termination message (if that is the file) is capped at 4 KiB.
        let capped: String = line.chars().take(4000).collect();
        if let Err(e) = std::fs::write(path, capped) {
            tracing::warn!(path = %path.display(), error = %e, "writing the result file failed");
        }
    }
    code
}

/// The result line for settings that did not even parse (a missing flag or env var); returns
/// the exit code.
pub fn invalid_settings(operation: &str, message: &str) -> i32 {
    let err = ExecutorError::InvalidConfig(message.trim().to_string());
    report(&failure_line(operation, Instant::now(), &err), None)
}

/// Sets up what both executors need: the TLS provider and JSON logs on stderr.
pub(crate) fn init_process() {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let _ = tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .try_init();
}

fn client_for(url: &str, ca_pem: Option<&[u8]>) -> Result<BaoClient, ExecutorError> {
    client_with_timeout(url, ca_pem, Duration::from_secs(30))
}

/// A client for `url`; `timeout` bounds each call, and for streamed transfers the longest
/// pause between two reads (e.g. OpenBao's answer after it received a whole snapshot).
pub(crate) fn client_with_timeout(
    url: &str,
    ca_pem: Option<&[u8]>,
    timeout: Duration,
) -> Result<BaoClient, ExecutorError> {
    let mut config = ClientConfig::new(url).with_timeout(timeout);
    if let Some(pem) = ca_pem {
        config = config.with_ca_pem(pem.to_vec());
    }
    BaoClient::new(config).map_err(|e| ExecutorError::InvalidConfig(format!("OpenBao address {url:?}: {e}")))
}

pub(crate) fn read_ca(args: &OpenBaoArgs) -> Result<Option<Vec<u8>>, ExecutorError> {
    args.ca_file
        .as_ref()
        .map(|p| std::fs::read(p).map_err(|e| ExecutorError::InvalidConfig(format!("reading {}: {e}", p.display()))))
        .transpose()
}

/// Finds the active node: polls `sys/health` on every address every 2 s until the active node
/// is pinned by its own address (`sys/leader`'s `leader_address`, or the answering address
/// pinned to the leader's IP), so a Service address that lands on a standby, or on the active
/// node this once, still leads to the active pod for every later request. With
/// `pin_active` off the first address that answers active is used as it is.
pub async fn find_leader(args: &OpenBaoArgs) -> Result<BaoClient, ExecutorError> {
    if args.addresses.iter().all(|a| a.trim().is_empty()) {
        return Err(ExecutorError::InvalidConfig("no OpenBao address given".into()));
    }
    let ca = read_ca(args)?;
    let clients = args
        .addresses
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .map(|a| client_for(a, ca.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let deadline = Instant::now() + args.leader_timeout;
    loop {
        let mut seen = Vec::new();
        for client in &clients {
            let url = client.base_url().as_str().trim_end_matches('/').to_string();
            match client.health().await {
                // An address may be a Service: the next request can land on another pod, so the
                // active node is pinned by its own address whenever it names one.
                Ok(h) if h.state == HealthState::Active && !args.pin_active => {
                    tracing::info!(leader = %url, "found the active node");
                    return Ok(client.clone());
                }
                // Never the address that answered: it may be a Service, whose next request can
                // land on a standby (which answers 307). Not pinned yet: try again next round.
                Ok(h) if h.state.is_unsealed() => match follow_leader(client, &url, ca.as_deref()).await {
                    Ok(leader) => return Ok(leader),
                    Err(why) => seen.push(format!("{url}: {:?}, but {why}", h.state)),
                },
                Ok(h) => seen.push(format!("{url}: {:?}", h.state)),
                Err(e) => seen.push(format!("{url}: {e}")),
            }
        }
        if Instant::now() >= deadline {
            return Err(ExecutorError::LeaderNotFound(format!(
                "after {:?}: {}",
                args.leader_timeout,
                seen.join("; ")
            )));
        }
        tracing::info!(nodes = %seen.join("; "), "no active node yet");
        tokio::time::sleep(Duration::from_secs(2).min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// The active node as `via` reports it: its own address, or — when its certificate does not name
/// that address (blue/green revision pods carry the cluster's names) — `via_url` pinned to the
/// active node's IP.
async fn follow_leader(via: &BaoClient, via_url: &str, ca: Option<&[u8]>) -> Result<BaoClient, String> {
    let leader = via.leader().await.map_err(|e| format!("sys/leader failed: {e}"))?;
    let address = leader.leader_address.trim_end_matches('/');
    if address.is_empty() {
        return Err("sys/leader names no active node".into());
    }
    let mut candidates = Vec::new();
    candidates.extend(client_for(address, ca).ok());
    let resolved = resolve(address).await;
    if let Some(ip) = resolved {
        let pinned = ClientConfig::new(via_url)
            .with_resolve_to(ip)
            .with_timeout(Duration::from_secs(30));
        let pinned = match ca {
            Some(pem) => pinned.with_ca_pem(pem.to_vec()),
            None => pinned,
        };
        candidates.extend(BaoClient::new(pinned).ok());
    }
    let mut answers = Vec::new();
    for client in candidates {
        match client.health().await {
            Ok(h) if h.state == HealthState::Active => {
                tracing::info!(leader = %address, "pinned the active node");
                return Ok(client);
            }
            Ok(h) => answers.push(format!("{}: {:?}", client.base_url(), h.state)),
            Err(e) => answers.push(e.to_string()),
        }
    }
    if resolved.is_none() {
        answers.push(format!("{address} did not resolve"));
    }
    Err(format!(
        "the active node {address} it names could not be pinned ({})",
        answers.join("; ")
    ))
}

/// The IP of an `https://host:port` address.
async fn resolve(address: &str) -> Option<std::net::IpAddr> {
    let uri: http::Uri = address.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("http") { 80 } else { 443 });
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .ok()?
        .next()
        .map(|a| a.ip())
}

/// Logs in on `client` with the projected service-account token.
pub async fn login(client: &BaoClient, args: &OpenBaoArgs, role: &str) -> Result<BaoClient, ExecutorError> {
    let jwt = std::fs::read_to_string(&args.jwt_token_file).map_err(|e| {
        ExecutorError::InvalidConfig(format!(
            "reading the service-account token {}: {e}",
            args.jwt_token_file.display()
        ))
    })?;
    let login = client.login_jwt(&args.jwt_mount, role, jwt.trim()).await.map_err(|e| {
        openbao_failure(client, e, |e| {
            ExecutorError::OpenBaoAuthFailed(format!("role {role:?}: {e}"))
        })
    })?;
    tracing::info!(role, policies = ?login.policies, "logged in to OpenBao");
    Ok(client.with_token(login.token))
}

/// Connection failures (before any answer) are `OpenBaoUnreachable`; 401/403 are
/// `OpenBaoAuthFailed`; the rest goes to `otherwise`. A snapshot stream that breaks midway is
/// not routed here: that is `SnapshotFailed`.
fn openbao_failure(
    client: &BaoClient,
    err: BaoError,
    otherwise: impl FnOnce(BaoError) -> ExecutorError,
) -> ExecutorError {
    match &err {
        BaoError::Connect { .. } | BaoError::Timeout { .. } | BaoError::Transport { .. } => {
            ExecutorError::OpenBaoUnreachable {
                url: client.base_url().to_string(),
                source: err,
            }
        }
        BaoError::Api { status: 401 | 403, .. } => ExecutorError::OpenBaoAuthFailed(err.to_string()),
        _ => otherwise(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_report_names_the_object_it_stored_or_restored() {
        let line = |r: &dyn Completed, op: &str| serde_json::to_value(r.result_line(op)).unwrap();
        let object = serde_json::json!({"bucket": "b", "key": "k", "size": 7, "duration_ms": 9, "result": "Succeeded"});
        let backup = backup::BackupReport {
            bucket: "b".into(),
            key: "k".into(),
            size: 7,
            sha256: "s".into(),
            duration_ms: 9,
            transfer_ms: 3,
            leader: "l".into(),
            deleted: vec!["old".into()],
            retention_error: None,
        };
        let restore = restore::RestoreReport {
            bucket: "b".into(),
            key: "k".into(),
            size: 7,
            duration_ms: 9,
            leader: "l".into(),
        };
        let verify = verify::VerifyReport {
            bucket: "b".into(),
            key: "k".into(),
            size: 7,
            duration_ms: 9,
            restore_ms: 5,
            restored_cluster_id: "c".into(),
            policies: vec!["p".into()],
        };
        let lines = [
            (
                line(&backup, "backup"),
                serde_json::json!({"operation": "backup", "sha256": "s", "transfer_ms": 3, "leader": "l", "deleted": ["old"]}),
            ),
            (
                line(&restore, "restore"),
                serde_json::json!({"operation": "restore", "leader": "l"}),
            ),
            (
                line(&verify, "verify-backup"),
                serde_json::json!({"operation": "verify-backup", "restore_ms": 5, "restored_cluster_id": "c", "policies": ["p"]}),
            ),
        ];
        for (line, own) in lines {
            let mut expected = object.clone();
            for (k, v) in own.as_object().unwrap() {
                expected[k] = v.clone();
            }
            assert_eq!(line, expected);
        }
    }

    #[test]
    fn reasons_are_stable() {
        assert_eq!(ExecutorError::SealMismatch("x".into()).reason(), "SealMismatch");
        let store = StoreError::Config("x".into());
        assert_eq!(ExecutorError::from(store).reason(), "InvalidConfig");
    }
}
