//! A real cert-manager: the controllers of the pinned cert-manager Go module, run by our own small
//! main (`hack/cert-manager/main.go`, built by `hack/build-cert-manager.sh`), out of cluster
//! against a kubeconfig, all namespaces, no webhook, no leader election. Its CRDs are the module's
//! `deploy/crds`, cached next to the binary.

use crate::apiserver::{install_crds as apply_crds, read_crd_dir};
use crate::cache::run_hack;
use crate::process::ManagedProcess;
use anyhow::{Context, Result, bail};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The API group of Certificate, CertificateRequest, Issuer and ClusterIssuer.
pub const GROUP: &str = "cert-manager.io";

/// The `cert-manager` binary, built (once per version and main.go) by the hack script.
pub async fn binary() -> Result<PathBuf> {
    let line = tokio::task::spawn_blocking(|| run_hack("build-cert-manager.sh", &[])).await??;
    let path = PathBuf::from(line.lines().last().context("build-cert-manager.sh printed nothing")?);
    if !path.is_file() {
        bail!("build-cert-manager.sh printed {}, which is not a file", path.display());
    }
    Ok(path)
}

/// The module's CRDs, which the build script copies to `crds/` beside the binary.
pub fn crd_dir(binary: &Path) -> Result<PathBuf> {
    Ok(binary.parent().context("binary has a parent")?.join("crds"))
}

/// Installs cert-manager's CRDs (server-side apply; idempotent) and waits until they are served.
pub async fn install_crds(client: &kube::Client) -> Result<()> {
    let dir = crd_dir(&binary().await?)?;
    let crds = tokio::task::spawn_blocking(move || read_crd_dir(dir)).await??;
    apply_crds(client, crds).await
}

/// `cert-manager.io/v1` `kind` (plural `plural`), for `Api::namespaced_with` / `Api::all_with`.
pub fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", kind), plural)
}

/// The status of condition `type_` in `status.conditions`, with its reason and message.
pub fn condition(obj: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    let text = |c: &serde_json::Value, k: &str| c[k].as_str().unwrap_or_default().to_string();
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| (text(c, "status"), text(c, "reason"), text(c, "message")))
}

/// The cert-manager controller process. Dropping it kills it; its log lives in a temp directory
/// removed with it.
pub struct CertManager {
    // Declared first: dropped (killed) before its log directory is removed.
    process: ManagedProcess,
    _dir: tempfile::TempDir,
}

impl CertManager {
    /// Starts the controllers against `kubeconfig`, watching every namespace.
    pub async fn start(kubeconfig: &Path) -> Result<Self> {
        let bin = binary().await?;
        let dir = tempfile::Builder::new()
            .prefix("testkit-cert-manager-")
            .tempdir()
            .context("create cert-manager temp dir")?;
        let args = vec![format!("--kubeconfig={}", kubeconfig.display())];
        let process = ManagedProcess::start("cert-manager", &bin, &args, &[], &dir.path().join("cert-manager.log"))?;
        Ok(Self { process, _dir: dir })
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// Polls `check` every 200 ms until it yields a value. Fails at once if cert-manager exits,
    /// and after `timeout`, with the last state `check` reported and cert-manager's log tail.
    pub async fn wait_until<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl AsyncFnMut(&mut String) -> Result<Option<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let mut last = String::from("nothing yet");
        loop {
            if !self.is_running() {
                bail!(
                    "cert-manager exited while waiting for {what} (last: {last})\n--- log tail ---\n{}",
                    self.log_tail(60)
                );
            }
            if let Some(value) = check(&mut last).await? {
                return Ok(value);
            }
            if started.elapsed() > timeout {
                bail!(
                    "not {what} after {timeout:?} (last: {last})\n--- cert-manager log tail ---\n{}",
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
