//! A real S3-compatible server for tests: RustFS when `hack/build-rustfs.sh` has built it,
//! otherwise s3s-fs (both via `hack/build-s3-server.sh`). It listens on 127.0.0.1 with its own
//! data dir and keys, is killed on drop, and can be stopped and started again on the same data
//! dir and port (to test a store that goes away in the middle of an upload).
//!
//! The few admin requests tests need (create a bucket, count unfinished multipart uploads) are
//! signed here with SigV4, so tests do not depend on the client under test to set up the store.

use crate::process::ManagedProcess;
use anyhow::{Context, Result, bail};
use aws_lc_rs::{digest, hmac};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const ACCESS_KEY: &str = "openbao-backup-test";
pub const SECRET_KEY: &str = "openbao-backup-test-secret-key";
pub const REGION: &str = "us-east-1";

/// Which real server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Kind {
    RustFs,
    S3sFs,
}

impl std::fmt::Display for S3Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::RustFs => "rustfs",
            Self::S3sFs => "s3s-fs",
        })
    }
}

/// The server binary `hack/build-s3-server.sh` picks (building s3s-fs once if needed).
pub fn server_binary() -> Result<(S3Kind, PathBuf)> {
    let line = crate::cache::run_hack("build-s3-server.sh", &[])?;
    let (kind, path) = line
        .lines()
        .last()
        .and_then(|l| l.split_once(' '))
        .with_context(|| format!("build-s3-server.sh printed {line:?}"))?;
    let kind = match kind {
        "rustfs" => S3Kind::RustFs,
        "s3s-fs" => S3Kind::S3sFs,
        other => bail!("build-s3-server.sh: unknown server kind {other:?}"),
    };
    Ok((kind, PathBuf::from(path)))
}

/// A running (or stopped) S3 server on 127.0.0.1.
pub struct S3Server {
    kind: S3Kind,
    binary: PathBuf,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    process: Option<ManagedProcess>,
    http: reqwest::Client,
}

impl S3Server {
    /// Starts the server with [`ACCESS_KEY`]/[`SECRET_KEY`] on a free port and waits until it
    /// answers signed requests. Prints which server runs (tests report it).
    pub async fn start() -> Result<Self> {
        let (kind, binary) = server_binary()?;
        let dir = tempfile::Builder::new().prefix("s3-server-").tempdir()?;
        std::fs::create_dir_all(dir.path().join("data"))?;
        let addr = free_port()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?;
        let mut server = Self {
            kind,
            binary,
            addr,
            dir,
            process: None,
            http,
        };
        server.spawn().await?;
        eprintln!(
            "S3 server: {kind} ({}) at {}",
            server.binary.display(),
            server.endpoint()
        );
        Ok(server)
    }

    pub fn kind(&self) -> S3Kind {
        self.kind
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.kind))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.is_running())
    }

    async fn spawn(&mut self) -> Result<()> {
        let data = self.data_dir().display().to_string();
        let (args, envs): (Vec<String>, Vec<(&str, String)>) = match self.kind {
            S3Kind::S3sFs => (
                vec![
                    "--host".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    self.addr.port().to_string(),
                    "--access-key".into(),
                    ACCESS_KEY.into(),
                    "--secret-key".into(),
                    SECRET_KEY.into(),
                    data,
                ],
                vec![("RUST_LOG", "s3s_fs=info,s3s=info".into())],
            ),
            S3Kind::RustFs => (
                vec!["server".into(), "--address".into(), self.addr.to_string(), data],
                vec![
                    ("RUSTFS_ACCESS_KEY", ACCESS_KEY.into()),
                    ("RUSTFS_SECRET_KEY", SECRET_KEY.into()),
                    // The console would listen on 0.0.0.0:9001; tests bind loopback only.
                    ("RUSTFS_CONSOLE_ENABLE", "false".into()),
                    ("RUSTFS_CONSOLE_ADDRESS", "127.0.0.1:0".into()),
                    ("RUSTFS_REGION", REGION.into()),
                    ("RUST_LOG", "warn".into()),
                ],
            ),
        };
        let log = self.log_path();
        self.process = Some(ManagedProcess::start(
            &self.kind.to_string(),
            &self.binary,
            &args,
            &envs,
            &log,
        )?);
        self.wait_ready(Duration::from_secs(60)).await
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let mut last = String::from("not listening yet");
        loop {
            if !self.is_running() {
                bail!(
                    "{} exited during startup ({last})\n--- log tail ---\n{}",
                    self.kind,
                    self.log_tail(30)
                );
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                match self.request("GET", "/", "").await {
                    Ok((200, _)) => return Ok(()),
                    Ok((status, body)) => last = format!("ListBuckets answered {status}: {body}"),
                    Err(e) => last = format!("{e:#}"),
                }
            }
            if started.elapsed() > timeout {
                bail!(
                    "{} not ready after {timeout:?} ({last})\n--- log tail ---\n{}",
                    self.kind,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the server (SIGKILL); the data dir stays for [`start_again`](Self::start_again).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }

    /// Starts the server again on the same port and data dir.
    pub async fn start_again(&mut self) -> Result<()> {
        self.kill();
        self.spawn().await
    }

    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let (status, body) = self.request("PUT", &format!("/{bucket}"), "").await?;
        if status != 200 {
            bail!("creating bucket {bucket} on {}: HTTP {status}: {body}", self.kind);
        }
        Ok(())
    }

    /// Multipart uploads that were started and neither completed nor aborted.
    pub async fn pending_multipart_uploads(&self, bucket: &str) -> Result<usize> {
        match self.kind {
            // s3s-fs has no ListMultipartUploads; it keeps one `.upload-<id>.json` per upload
            // at the top of its data dir until the upload completes or is aborted.
            S3Kind::S3sFs => {
                let mut n = 0;
                for entry in std::fs::read_dir(self.data_dir())? {
                    let name = entry?.file_name().to_string_lossy().to_string();
                    if name.starts_with(".upload-") && name.ends_with(".json") {
                        n += 1;
                    }
                }
                Ok(n)
            }
            S3Kind::RustFs => {
                let (status, body) = self.request("GET", &format!("/{bucket}"), "uploads=").await?;
                if status != 200 {
                    bail!("ListMultipartUploads on {bucket}: HTTP {status}: {body}");
                }
                Ok(body.matches("<UploadId>").count())
            }
        }
    }

    /// Sends a SigV4-signed request with an empty body; returns status and body text.
    /// `query` must already be canonical (sorted `k=v` pairs, URI-encoded).
    async fn request(&self, method: &str, path: &str, query: &str) -> Result<(u16, String)> {
        signed_request(&self.http, self.addr, method, path, query).await
    }
}

/// Creates `bucket` on any S3 server at `addr` that accepts [`ACCESS_KEY`]/[`SECRET_KEY`], e.g.
/// one running in a pod of the node and reached through its Service's ClusterIP.
pub async fn create_bucket_at(addr: SocketAddr, bucket: &str) -> Result<()> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let (status, body) = signed_request(&http, addr, "PUT", &format!("/{bucket}"), "").await?;
    if status != 200 {
        bail!("creating bucket {bucket} at {addr}: HTTP {status}: {body}");
    }
    Ok(())
}

async fn signed_request(
    http: &reqwest::Client,
    addr: SocketAddr,
    method: &str,
    path: &str,
    query: &str,
) -> Result<(u16, String)> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let signed = sign_v4(method, &addr.to_string(), path, query, now);
    let url = if query.is_empty() {
        format!("http://{addr}{path}")
    } else {
        format!("http://{addr}{path}?{query}")
    };
    let resp = http
        .request(reqwest::Method::from_bytes(method.as_bytes())?, url)
        .header("x-amz-date", &signed.amz_date)
        .header("x-amz-content-sha256", EMPTY_SHA256)
        .header("authorization", signed.authorization)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.unwrap_or_default()))
}

fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

struct Signed {
    amz_date: String,
    authorization: String,
}

/// AWS Signature Version 4 for an empty-body request with the test keys.
fn sign_v4(method: &str, host: &str, path: &str, query: &str, unix_secs: u64) -> Signed {
    let (date, amz_date) = amz_dates(unix_secs);
    let signed_headers = "host;x-amz-content-sha256;x-amz-date";
    let canonical = format!(
        "{method}\n{path}\n{query}\nhost:{host}\nx-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:{amz_date}\n\n{signed_headers}\n{EMPTY_SHA256}"
    );
    let scope = format!("{date}/{REGION}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let mut key = format!("AWS4{SECRET_KEY}").into_bytes();
    for part in [date.as_str(), REGION, "s3", "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex(&hmac_sha256(&key, to_sign.as_bytes()));
    Signed {
        amz_date,
        authorization: format!(
            "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
        ),
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// (`YYYYMMDD`, `YYYYMMDDTHHMMSSZ`) in UTC.
fn amz_dates(unix_secs: u64) -> (String, String) {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = format!("{year:04}{month:02}{day:02}");
    let stamp = format!("{date}T{:02}{:02}{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60);
    (date, stamp)
}

/// The S3 server as a pod on the node (`node_backup`): `image` run with `args` and `env` as
/// `user`, data in an emptyDir, serving `port` as port `s3`. Built here so that the apiserver
/// test of Pod Security `restricted` (`crates/operator/tests/pods_apiserver.rs`) admits the
/// very pod the node test runs in its restricted namespace.
pub fn server_pod(
    image: &str,
    args: serde_json::Value,
    env: serde_json::Value,
    user: i64,
    port: u16,
) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"name": "s3", "labels": {"app.kubernetes.io/name": "s3"}},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": user, "runAsGroup": user, "fsGroup": user,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "s3", "image": image, "imagePullPolicy": "Never", "args": args, "env": env,
                "ports": [{"name": "s3", "containerPort": port}],
                "readinessProbe": {"tcpSocket": {"port": "s3"}, "periodSeconds": 1},
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "logs", "mountPath": "/logs"}],
            }],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "logs", "emptyDir": {}}],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_are_utc_civil_dates() {
        assert_eq!(amz_dates(0), ("19700101".into(), "19700101T000000Z".into()));
        // 2024-02-29T23:59:59Z (leap day).
        assert_eq!(amz_dates(1_709_251_199).1, "20240229T235959Z");
        assert_eq!(amz_dates(1_767_225_600).1, "20260101T000000Z");
    }
}
