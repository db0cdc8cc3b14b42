//! A hermetic Kubernetes control plane: real etcd and a real kube-apiserver on loopback, no nodes.
//! Controllers, server-side apply, CEL validation, RBAC and ServiceAccount tokens are real;
//! nothing schedules or runs pods.
//!
//! Tests use [`ApiServer::start`] (owned) or [`ApiServer::shared`] (one per test binary; each test
//! takes its own namespace). `hermetic-k8s apiserver-up` runs the same boot sequence detached,
//! with its state in `<repo>/.cluster/`.

pub(crate) mod detached;
pub(crate) mod plan;
mod resources;

pub use detached::{detached_is_ready, start_detached, stop_detached};
pub use plan::Layout;
pub(crate) use resources::read_crd_dir;
pub use resources::{
    POD_SECURITY_RESTRICTED, apply_cluster_scoped, create_namespace, create_restricted_namespace, install_crds,
    install_gateway_api_crds,
};

use crate::cache::run_hack;
use crate::process::ManagedProcess;
use anyhow::{Context, Result, bail};
use plan::LaunchPlan;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Generous: a cold kube-apiserver on two busy cores needs a while for its post-start hooks.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const TEMP_PREFIX: &str = "testkit-apiserver-";

/// A running etcd + kube-apiserver owned by this process. Dropping it stops both and removes
/// its temporary directory; if the test process dies instead, PDEATHSIG takes the processes down.
pub struct ApiServer {
    running: Mutex<Option<Running>>,
    kubeconfig: PathBuf,
    url: String,
    startup: Duration,
}

struct Running {
    apiserver: ManagedProcess,
    etcd: ManagedProcess,
    dir: tempfile::TempDir,
}

static SHARED: tokio::sync::OnceCell<ApiServer> = tokio::sync::OnceCell::const_new();

impl ApiServer {
    pub async fn start() -> Result<Self> {
        Self::start_with_args(&[]).await
    }

    /// Like [`ApiServer::start`], with `extra` appended to kube-apiserver's flags (e.g.
    /// `--api-audiences=...`), for a test that needs an apiserver configured differently.
    pub async fn start_with_args(extra: &[String]) -> Result<Self> {
        let began = Instant::now();
        remove_stale_temp_dirs();
        let bin = locate_binaries().await?;
        let dir = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempdir()
            .context("create apiserver temp dir")?;
        fs::write(dir.path().join("owner.pid"), std::process::id().to_string())?;
        let layout = Layout::new(dir.path());
        let mut plan = LaunchPlan::prepare(layout, bin)?;
        plan.extra_apiserver_args = extra.to_vec();
        let (etcd, apiserver) = boot(&plan, |name, program, args, log| {
            ManagedProcess::start(name, program, args, &[], log)
        })
        .await?;
        Ok(Self {
            kubeconfig: plan.layout.kubeconfig(),
            url: plan.url(),
            running: Mutex::new(Some(Running { apiserver, etcd, dir })),
            startup: began.elapsed(),
        })
    }

    /// One apiserver for the whole test binary, started on first use. It is stopped (and its
    /// directory removed) when the process exits; PDEATHSIG covers a killed process.
    pub async fn shared() -> Result<&'static ApiServer> {
        SHARED
            .get_or_try_init(|| async {
                let server = ApiServer::start().await?;
                // SAFETY: registers a plain extern "C" fn; it only touches the initialised static.
                unsafe { libc::atexit(stop_shared_at_exit) };
                Ok(server)
            })
            .await
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Wall time `start()` took, binary lookup included.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// A new admin (system:masters) client. Build one per test: a kube client is bound to the
    /// tokio runtime it was created in, and every `#[tokio::test]` has its own runtime.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// A plain HTTPS client that trusts the cluster CA and presents the admin certificate, for
    /// non-resource paths such as `/readyz` or `/openid/v1/jwks`.
    pub fn http_client(&self) -> Result<reqwest::Client> {
        let dir = self.kubeconfig.parent().context("kubeconfig has a parent")?;
        admin_http_client(&Layout::new(dir))
    }

    /// Stops both processes and removes the directory. Idempotent.
    fn shutdown(&self) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(Running {
            mut apiserver,
            mut etcd,
            dir,
        }) = running
        {
            // The apiserver first, so it does not spend its last moments retrying a dead etcd.
            apiserver.stop();
            etcd.stop();
            let path = dir.path().to_path_buf();
            if let Err(err) = dir.close() {
                eprintln!("testkit: could not remove {}: {err}", path.display());
            }
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

extern "C" fn stop_shared_at_exit() {
    if let Some(server) = SHARED.get() {
        server.shutdown();
    }
}

pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).with_context(|| format!("read kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("load kubeconfig {}", path.display()))?;
    kube::Client::try_from(config).context("build kube client")
}

/// The directory holding etcd + kube-apiserver: `OPENBAO_OPERATOR_K8S_BIN`, or whatever
/// `hack/build-kubernetes.sh apiserver` builds (a no-op once cached).
async fn locate_binaries() -> Result<PathBuf> {
    let dir = match std::env::var_os("OPENBAO_OPERATOR_K8S_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => tokio::task::spawn_blocking(|| run_hack("build-kubernetes.sh", &["apiserver"]))
            .await??
            .lines()
            .last()
            .map(PathBuf::from)
            .context("build-kubernetes.sh printed no bin dir")?,
    };
    for name in ["etcd", "kube-apiserver"] {
        if !dir.join(name).is_file() {
            bail!(
                "{} missing in {} (OPENBAO_OPERATOR_K8S_BIN or hack/build-kubernetes.sh)",
                name,
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// Temp dirs whose owning test process was killed before it could clean up.
fn remove_stale_temp_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let owned_by_us = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
        let owner = fs::read_to_string(path.join("owner.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if owned_by_us && owner.is_some_and(|pid| !pid_alive(pid)) {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// Exists and is not a zombie (a zombie whose parent never reaps it would otherwise look alive).
pub(crate) fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    let exists = unsafe { libc::kill(pid, 0) == 0 };
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'));
    exists && !zombie
}

/// Something the boot sequence started and can watch for an early exit.
pub(crate) trait Started {
    fn has_exited(&mut self) -> bool;
}

impl Started for ManagedProcess {
    fn has_exited(&mut self) -> bool {
        !self.is_running()
    }
}

impl Started for Child {
    fn has_exited(&mut self) -> bool {
        !matches!(self.try_wait(), Ok(None))
    }
}

/// Starts etcd and kube-apiserver together (the apiserver retries etcd while it comes up, which
/// saves the etcd start-up from the critical path), then waits for etcd's health and `/readyz`.
pub(crate) async fn boot<P: Started>(
    plan: &LaunchPlan,
    mut launch: impl FnMut(&str, &Path, &[String], &Path) -> Result<P>,
) -> Result<(P, P)> {
    let (etcd_log, api_log) = (plan.layout.log("etcd"), plan.layout.log("kube-apiserver"));
    let mut etcd = launch("etcd", &plan.bin.join("etcd"), &plan.etcd_args(), &etcd_log)?;
    let mut apiserver = launch(
        "kube-apiserver",
        &plan.bin.join("kube-apiserver"),
        &plan.apiserver_args(),
        &api_log,
    )?;
    // etcd first: when it fails, its own log is the one that explains why.
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let health = format!("http://127.0.0.1:{}/health", plan.etcd_client_port);
    wait_until_ready(&plain, &health, "etcd", &mut etcd, &etcd_log).await?;
    let admin = admin_http_client(&plan.layout)?;
    let readyz = format!("{}/readyz", plan.url());
    wait_until_ready(&admin, &readyz, "kube-apiserver", &mut apiserver, &api_log).await?;
    Ok((etcd, apiserver))
}

pub(crate) async fn wait_until_ready(
    http: &reqwest::Client,
    url: &str,
    what: &str,
    process: &mut impl Started,
    log: &Path,
) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if process.has_exited() {
            bail!(
                "{what} exited before {url} answered; log {}:\n{}",
                log.display(),
                log_tail(log, 40)
            );
        }
        match http.get(url).send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => last = format!("HTTP {}: {}", resp.status(), resp.text().await.unwrap_or_default()),
            Err(err) => last = format!("{err:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "{what} not ready at {url} after {READY_TIMEOUT:?} (last: {last}); log {}:\n{}",
        log.display(),
        log_tail(log, 40)
    )
}

pub(crate) fn admin_http_client(layout: &Layout) -> Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(&fs::read(layout.pki("ca.crt"))?).context("parse ca.crt")?;
    let mut identity_pem = fs::read(layout.pki("admin.crt"))?;
    identity_pem.extend(fs::read(layout.pki("admin.key"))?);
    let identity = reqwest::Identity::from_pem(&identity_pem).context("parse admin identity")?;
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(identity)
        .timeout(Duration::from_secs(5))
        .build()
        .context("build admin HTTPS client")
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
