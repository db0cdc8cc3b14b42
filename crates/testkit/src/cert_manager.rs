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

/// A `cert-manager.io/v1` object of `kind` from its JSON (apiVersion and kind added).
fn object(kind: &str, value: serde_json::Value) -> Result<DynamicObject> {
    let mut value = value;
    value["apiVersion"] = serde_json::json!(format!("{GROUP}/v1"));
    value["kind"] = serde_json::json!(kind);
    Ok(serde_json::from_value(value)?)
}

/// Namespaced API of `kind` (plural `plural`).
pub fn api(client: &kube::Client, namespace: &str, kind: &str, plural: &str) -> kube::Api<DynamicObject> {
    kube::Api::namespaced_with(client.clone(), namespace, &resource(kind, plural))
}

/// Waits until `name`'s `Ready` condition is True (polled every 200 ms; the error names the
/// last status seen).
pub async fn wait_ready(api: &kube::Api<DynamicObject>, name: &str, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let last = api.get_opt(name).await?;
        if last
            .as_ref()
            .and_then(|obj| condition(obj, "Ready"))
            .is_some_and(|(status, _, _)| status == "True")
        {
            return Ok(());
        }
        if started.elapsed() > timeout {
            let status = last.map(|obj| obj.data["status"].to_string());
            bail!("{name} not Ready after {timeout:?} (status: {status:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The usual cert-manager bootstrap inside `namespace`: a self-signed Issuer makes a CA
/// (Certificate and Secret `name`, ECDSA P-256), and the CA Issuer `name` signs with it.
/// Returns once that Issuer is Ready.
pub async fn ca_issuer(client: &kube::Client, namespace: &str, name: &str, timeout: Duration) -> Result<()> {
    let pp = kube::api::PostParams::default();
    let issuers = api(client, namespace, "Issuer", "issuers");
    let certificates = api(client, namespace, "Certificate", "certificates");
    let root = format!("{name}-selfsigned");
    issuers
        .create(
            &pp,
            &object(
                "Issuer",
                serde_json::json!({"metadata": {"name": root}, "spec": {"selfSigned": {}}}),
            )?,
        )
        .await
        .context("create the self-signed Issuer")?;
    wait_ready(&issuers, &root, timeout).await?;
    certificates
        .create(
            &pp,
            &object(
                "Certificate",
                serde_json::json!({"metadata": {"name": name}, "spec": {
                    "isCA": true, "commonName": format!("{name} test CA"), "secretName": name,
                    "privateKey": {"algorithm": "ECDSA", "size": 256},
                    "issuerRef": {"name": root, "kind": "Issuer", "group": GROUP},
                }}),
            )?,
        )
        .await
        .context("create the CA Certificate")?;
    wait_ready(&certificates, name, timeout).await?;
    issuers
        .create(
            &pp,
            &object(
                "Issuer",
                serde_json::json!({"metadata": {"name": name}, "spec": {"ca": {"secretName": name}}}),
            )?,
        )
        .await
        .context("create the CA Issuer")?;
    wait_ready(&issuers, name, timeout).await
}

/// Asks cert-manager to reissue Certificate `name` now, as `cmctl renew` does: an `Issuing=True`
/// condition on its status.
pub async fn renew(certificates: &kube::Api<DynamicObject>, name: &str) -> Result<()> {
    let mut cert = certificates.get(name).await?;
    let now = serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ))?;
    let issuing = serde_json::json!({
        "type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
        "message": "renewal requested by the test",
        "lastTransitionTime": now,
        "observedGeneration": cert.metadata.generation,
    });
    match cert.data["status"]["conditions"].as_array_mut() {
        Some(conditions) => conditions.push(issuing),
        None => bail!("Certificate {name} has no status conditions yet"),
    }
    certificates
        .replace_status(name, &kube::api::PostParams::default(), &cert)
        .await
        .context("set Issuing=True on the Certificate status")?;
    Ok(())
}

/// The cert-manager Deployment on the hermetic node, the one the hardened lane applies too.
const NODE_MANIFEST: &str = include_str!("../../../deploy/lane/cert-manager-node.yaml");
/// Its namespace.
pub const NODE_NAMESPACE: &str = "cert-manager";
/// How long the controller may take to come up on the node (image present, one small pod).
const NODE_READY: Duration = Duration::from_secs(120);

/// The controller image `hack/images.sh` assembles from the cached build (our main).
pub fn image() -> Result<String> {
    Ok(format!(
        "quay.io/jetstack/cert-manager-controller:{}",
        crate::cache::pinned("CERT_MANAGER_VERSION")?
    ))
}

/// Runs cert-manager's controller on the hermetic node behind `client` (idempotent: server-side
/// apply): its CRDs, then namespace `cert-manager`, its service account and RBAC and a one-replica
/// Deployment of [`image`]. Returns once the Deployment has an available replica. It stays up
/// until the node goes (several tests share it; each one's issuers live in its own namespace).
pub async fn deploy_on_node(client: &kube::Client) -> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{Patch, PatchParams};

    install_crds(client).await?;
    let text = NODE_MANIFEST.replace("@IMAGE@", &image()?);
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).context("parse the cert-manager manifest")?;
    let pp = PatchParams::apply("testkit-cert-manager").force();
    for doc in docs {
        let name = doc["metadata"]["name"]
            .as_str()
            .context("manifest object without a name")?
            .to_string();
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let applied = match kind.as_str() {
            "Namespace" => kube::Api::<Namespace>::all(client.clone())
                .patch(&name, &pp, &Patch::Apply(&doc))
                .await
                .map(drop),
            "ClusterRole" => kube::Api::<ClusterRole>::all(client.clone())
                .patch(&name, &pp, &Patch::Apply(&doc))
                .await
                .map(drop),
            "ClusterRoleBinding" => kube::Api::<ClusterRoleBinding>::all(client.clone())
                .patch(&name, &pp, &Patch::Apply(&doc))
                .await
                .map(drop),
            "ServiceAccount" => kube::Api::<ServiceAccount>::namespaced(client.clone(), NODE_NAMESPACE)
                .patch(&name, &pp, &Patch::Apply(&doc))
                .await
                .map(drop),
            "Deployment" => kube::Api::<Deployment>::namespaced(client.clone(), NODE_NAMESPACE)
                .patch(&name, &pp, &Patch::Apply(&doc))
                .await
                .map(drop),
            other => bail!("the cert-manager manifest holds a {other}, which deploy_on_node does not apply"),
        };
        applied.with_context(|| format!("apply {kind} {name}"))?;
    }
    let deployments = kube::Api::<Deployment>::namespaced(client.clone(), NODE_NAMESPACE);
    let started = Instant::now();
    loop {
        let status = deployments.get("cert-manager").await?.status.unwrap_or_default();
        if status.available_replicas.unwrap_or(0) >= 1 {
            return Ok(());
        }
        if started.elapsed() > NODE_READY {
            bail!("cert-manager's Deployment has no available replica after {NODE_READY:?}: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
