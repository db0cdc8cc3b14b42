//! Network probes from inside pods on the hermetic node, for tests of NetworkPolicy
//! enforcement: a restricted busybox pod to probe from, and TCP connection attempts run in any
//! container through `kubectl exec`.

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::{Client, ResourceExt};
use std::time::{Duration, Instant};

pub fn pod_ip(pod: &Pod) -> Result<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .with_context(|| format!("pod {} has no IP", pod.name_any()))
}

/// A busybox pod that meets Pod Security `restricted`, running `command`; returned once Ready
/// (it has an IP then).
pub async fn start_pod(client: &Client, ns: &str, name: &str, command: &[&str]) -> Result<Pod> {
    let image = crate::node::image_list()?
        .into_iter()
        .map(|(name, _)| name)
        .find(|n| n.starts_with("docker.io/library/busybox:"))
        .context("no busybox image")?;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "Never", "command": command,
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
        }
    }))?;
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&Default::default(), &pod)
        .await
        .with_context(|| format!("create pod {ns}/{name}"))?;
    crate::pods::ready(&Api::namespaced(client.clone(), ns), name, Duration::from_secs(120)).await
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reach {
    Open,
    Refused,
}

/// Runs commands in a container with the node's kubectl (`kubectl exec` reaches the container
/// through the kubelet, not the pod network, so the policy does not apply to the exec itself).
pub struct Exec {
    kubectl: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
    target: Vec<String>,
}

impl Exec {
    pub async fn new(ns: &str, pod: &str, container: Option<&str>) -> Result<Self> {
        let state = crate::node::running_node().await.context("no hermetic node")?;
        let mut target = vec!["-n".to_string(), ns.to_string(), "exec".into(), pod.to_string()];
        if let Some(c) = container {
            target.extend(["-c".to_string(), c.to_string()]);
        }
        Ok(Self {
            kubectl: crate::cache::kubectl()?,
            kubeconfig: state.join("kubeconfig"),
            target,
        })
    }

    pub async fn run(&self, command: &[&str]) -> Result<String> {
        let out = tokio::process::Command::new(&self.kubectl)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(&self.target)
            .arg("--")
            .args(command)
            .output()
            .await
            .context("run kubectl exec")?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// One TCP connection attempt to `ip:port` from inside the container.
    pub async fn reach(&self, ip: &str, port: u16) -> Result<Reach> {
        // busybox nc has no -z: with stdin at EOF it connects and exits 0, or exits 1 when refused.
        let script = format!("if nc -w 2 {ip} {port} </dev/null >/dev/null 2>&1; then echo OPEN; else echo CLOSED; fi");
        let out = self.run(&["sh", "-c", &script]).await?;
        match out.trim() {
            "OPEN" => Ok(Reach::Open),
            "CLOSED" => Ok(Reach::Refused),
            other => bail!("kubectl exec failed: {other}"),
        }
    }

    /// Waits until a connection to `ip:port` gives `want` (at most `within`: a policy engine
    /// applies a policy within seconds).
    pub async fn wait_for(&self, ip: &str, port: u16, want: Reach, within: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            let got = self.reach(ip, port).await?;
            if got == want {
                eprintln!(
                    "{:?} -> {ip}:{port}: {want:?} after {:.1?}",
                    self.target,
                    started.elapsed()
                );
                return Ok(());
            }
            if started.elapsed() > within {
                bail!("{:?} -> {ip}:{port}: still {got:?}, expected {want:?}", self.target);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
