//! Cluster add-ons every node has: CoreDNS, the local-path provisioner (default StorageClass) and
//! what the NetworkPolicy engine may read.
//! Applied with the real kubectl (server-side apply), so re-applying is a no-op.

use super::config::{NETWORK_POLICY_ENGINE_USER, NodePaths};
use super::{CLUSTER_DNS_IP, CLUSTER_DOMAIN, Inputs};
use crate::apiserver::Layout;
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::process::{Command, Stdio};

const COREDNS: &str = include_str!("manifests/coredns.yaml");
const LOCAL_PATH: &str = include_str!("manifests/local-path.yaml");
const NETWORK_POLICY: &str = include_str!("manifests/network-policy.yaml");

/// The name of the image whose repository is `repository` (the tag comes from hack/images.sh).
fn image(inputs: &Inputs, repository: &str) -> Result<String> {
    inputs
        .images
        .iter()
        .map(|(name, _)| name)
        .find(|name| name.rsplit_once(':').is_some_and(|(repo, _)| repo == repository))
        .cloned()
        .with_context(|| format!("hack/images.sh built no image of {repository}"))
}

fn render(template: &str, values: &[(&str, String)]) -> Result<String> {
    let mut text = template.to_string();
    for (key, value) in values {
        text = text.replace(&format!("@{key}@"), value);
    }
    if let Some(line) = text.lines().find(|l| has_placeholder(l)) {
        bail!("unreplaced placeholder in add-on manifest: {line}");
    }
    Ok(text)
}

/// `@NAME@` with NAME in upper case and underscores.
fn has_placeholder(line: &str) -> bool {
    line.split('@')
        .skip(1)
        .zip(line.split('@').skip(2))
        .any(|(name, _)| !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
}

pub(super) fn manifests(inputs: &Inputs, paths: &NodePaths) -> Result<String> {
    let coredns = render(
        COREDNS,
        &[
            ("COREDNS_IMAGE", image(inputs, "registry.k8s.io/coredns/coredns")?),
            ("CLUSTER_DNS_IP", CLUSTER_DNS_IP.into()),
            ("CLUSTER_DOMAIN", CLUSTER_DOMAIN.into()),
        ],
    )?;
    let local_path = render(
        LOCAL_PATH,
        &[
            (
                "PROVISIONER_IMAGE",
                image(inputs, "docker.io/rancher/local-path-provisioner")?,
            ),
            ("HELPER_IMAGE", image(inputs, "docker.io/library/busybox")?),
            ("STORAGE_DIR", paths.storage().display().to_string()),
        ],
    )?;
    let network_policy = render(NETWORK_POLICY, &[("ENGINE_USER", NETWORK_POLICY_ENGINE_USER.into())])?;
    Ok(format!("{coredns}\n---\n{local_path}\n---\n{network_policy}"))
}

/// `kubectl apply --server-side` of the add-ons with the admin kubeconfig.
pub(super) fn apply(inputs: &Inputs, paths: &NodePaths, layout: &Layout) -> Result<()> {
    let text = manifests(inputs, paths)?;
    let kubectl = inputs.bin.join("kubectl");
    let mut child = Command::new(&kubectl)
        .arg(format!("--kubeconfig={}", layout.kubeconfig().display()))
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=hermetic-node",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {}", kubectl.display()))?;
    child
        .stdin
        .take()
        .context("kubectl stdin")?
        .write_all(text.as_bytes())
        .context("write add-on manifests to kubectl")?;
    let out = child.wait_with_output().context("wait for kubectl apply")?;
    if !out.status.success() {
        bail!(
            "kubectl apply of the add-ons failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_replaced() {
        let inputs = Inputs {
            bin: "/bin".into(),
            network_policy_engine: "/kube-router".into(),
            images: [
                "registry.k8s.io/coredns/coredns:v1",
                "docker.io/rancher/local-path-provisioner:v2",
                "docker.io/library/busybox:1.35.0",
            ]
            .iter()
            .map(|n| (n.to_string(), "/x.tar".into()))
            .collect(),
        };
        let text = manifests(&inputs, &NodePaths::new(std::path::Path::new("/state"))).unwrap();
        assert!(text.contains("image: docker.io/library/busybox:1.35.0"));
        assert!(text.contains(r#""paths": ["/state/storage"]"#));
        assert!(!text.lines().any(has_placeholder));
        assert!(has_placeholder("image: @HELPER_IMAGE@"));
    }
}
