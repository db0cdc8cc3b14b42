//! The cluster's NetworkPolicy, enforced by a real engine (the node runs kube-router in firewall
//! mode): a 3-server cluster becomes Available with the policy in force (raft on 8201, DNS and
//! the apiserver for service registration all pass); from a pod in an unrelated namespace, 8200
//! and 8201 are refused; from a namespace the cluster lists (`telemetry.scrapeNamespaces`) 8200
//! answers and 8201 stays refused; from inside an OpenBao pod, a destination the policy does not
//! list is refused while the same destination answers from elsewhere, and cluster DNS answers.
//! Every probe waits for the state it expects (the engine applies a policy within seconds).
//! Needs the node: `make test` starts it (`make cluster-up` by hand).

use anyhow::{Context as _, Result, bail};
use futures::FutureExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, conditions};
use openbao_operator::controllers::cluster;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::apiserver::create_restricted_namespace;

mod node_common;
use node_common::{condition, create, host_operator_context, in_namespaces};

/// How long a probe may wait for the engine to apply what the policy says.
const ENFORCED_WITHIN: Duration = Duration::from_secs(45);
const WEB_PORT: u16 = 8080;

#[tokio::test]
async fn only_listed_peers_reach_openbao_and_openbao_reaches_only_what_it_needs() -> Result<()> {
    in_namespaces("bao-netpol", with_two_more_namespaces).await
}

/// Two more namespaces: one the cluster lists, one it does not. Removed however the test ends.
async fn with_two_more_namespaces(client: &Client, ns: &str, op_ns: &str) -> Result<()> {
    let listed = create_restricted_namespace(client, "bao-netpol-listed").await?;
    let unlisted = create_restricted_namespace(client, "bao-netpol-unlisted").await?;
    let result = AssertUnwindSafe(probe_the_policy(client, ns, op_ns, &listed, &unlisted))
        .catch_unwind()
        .await;
    let namespaces = Api::<Namespace>::all(client.clone());
    for n in [&listed, &unlisted] {
        namespaces.delete(n, &DeleteParams::default()).await.ok();
    }
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

async fn probe_the_policy(client: &Client, ns: &str, op_ns: &str, listed: &str, unlisted: &str) -> Result<()> {
    create::<ServiceAccount>(
        client,
        op_ns,
        serde_json::json!({"metadata": {"name": "openbao-operator"}}),
    )
    .await?;
    let (ctx, _public_ip) = host_operator_context(client, ns, op_ns).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(cluster::run(Arc::new(ctx), async move {
        let _ = stop_rx.await;
    }));

    let started = Instant::now();
    create::<OpenBaoCluster>(
        client,
        ns,
        serde_json::json!({
            "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster", "metadata": {"name": "np"},
            "spec": {
                "version": "2.7.2", "profile": "Development", "replicas": 3, "storage": {"size": "256Mi"},
                // The hermetic node has no AppArmor: a node limitation, stated where it is turned off.
                "workloadHardening": {"appArmorEnabled": false},
                "telemetry": {"scrapeNamespaces": [listed]},
            }
        }),
    )
    .await?;
    // The probes start while the cluster comes up.
    let listed_prober = start_pod(client, listed, "prober", &["sleep", "3600"]).await?;
    let unlisted_prober = start_pod(client, unlisted, "prober", &["sleep", "3600"]).await?;
    let web = start_pod(
        client,
        unlisted,
        "web",
        &["httpd", "-f", "-p", &WEB_PORT.to_string(), "-h", "/"],
    )
    .await?;

    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    loop {
        let c = clusters.get("np").await?;
        if condition(&c, conditions::AVAILABLE).is_some_and(|(s, r)| s == "True" && r == "AllReplicasReady") {
            break;
        }
        if started.elapsed() > Duration::from_secs(240) {
            bail!(
                "cluster not Available under the enforced policy after 240 s: {:#?}",
                c.status
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "3 servers Available with the policy enforced (raft on 8201, DNS, apiserver): {:.1?}",
        started.elapsed()
    );

    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let servers = pods
        .list(&ListParams::default().labels("openbao.org/cluster=np"))
        .await?
        .items;
    let server = servers.first().context("no server pod")?;
    let server_ip = pod_ip(server)?;
    let web_ip = pod_ip(&web)?;

    let unlisted_from = Exec::new(unlisted, &unlisted_prober.name_any(), None).await?;
    let listed_from = Exec::new(listed, &listed_prober.name_any(), None).await?;
    let openbao_from = Exec::new(ns, &server.name_any(), Some("openbao")).await?;

    for port in [8200, 8201] {
        unlisted_from.wait_for(&server_ip, port, Reach::Refused).await?;
    }
    listed_from.wait_for(&server_ip, 8200, Reach::Open).await?;
    listed_from.wait_for(&server_ip, 8201, Reach::Refused).await?;
    // The destination answers from a pod without a policy, and is refused from OpenBao.
    listed_from.wait_for(&web_ip, WEB_PORT, Reach::Open).await?;
    openbao_from.wait_for(&web_ip, WEB_PORT, Reach::Refused).await?;
    // What OpenBao needs still passes: cluster DNS, and the other servers on 8201.
    let lookup = openbao_from
        .run(&["nslookup", &format!("np-public.{ns}.svc.cluster.local")])
        .await?;
    if !lookup.contains("Address") {
        bail!("DNS from an OpenBao pod failed under the policy: {lookup}");
    }
    for peer in servers.iter().skip(1) {
        openbao_from.wait_for(&pod_ip(peer)?, 8201, Reach::Open).await?;
    }

    let _ = stop_tx.send(());
    controller.await?;
    Ok(())
}

fn pod_ip(pod: &Pod) -> Result<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .with_context(|| format!("pod {} has no IP", pod.name_any()))
}

/// A busybox pod that meets Pod Security `restricted`, running `command`; returned once Ready
/// (it has an IP then).
async fn start_pod(client: &Client, ns: &str, name: &str, command: &[&str]) -> Result<Pod> {
    let image = testkit::node::image_list()?
        .into_iter()
        .map(|(name, _)| name)
        .find(|n| n.starts_with("docker.io/library/busybox:"))
        .context("no busybox image")?;
    create::<Pod>(client, ns, serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "Never", "command": command,
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
        }
    }))
    .await?;
    testkit::pods::ready(&Api::namespaced(client.clone(), ns), name, Duration::from_secs(120)).await
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Reach {
    Open,
    Refused,
}

/// Runs commands in a container with the node's kubectl (`kubectl exec` reaches the container
/// through the kubelet, not the pod network, so the policy does not apply to the exec itself).
struct Exec {
    kubectl: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
    target: Vec<String>,
}

impl Exec {
    async fn new(ns: &str, pod: &str, container: Option<&str>) -> Result<Self> {
        let state = testkit::node::running_node().await.context("no hermetic node")?;
        let mut target = vec!["-n".to_string(), ns.to_string(), "exec".into(), pod.to_string()];
        if let Some(c) = container {
            target.extend(["-c".to_string(), c.to_string()]);
        }
        Ok(Self {
            kubectl: testkit::cache::kubectl()?,
            kubeconfig: state.join("kubeconfig"),
            target,
        })
    }

    async fn run(&self, command: &[&str]) -> Result<String> {
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
    async fn reach(&self, ip: &str, port: u16) -> Result<Reach> {
        // busybox nc has no -z: with stdin at EOF it connects and exits 0, or exits 1 when refused.
        let script = format!("if nc -w 2 {ip} {port} </dev/null >/dev/null 2>&1; then echo OPEN; else echo CLOSED; fi");
        let out = self.run(&["sh", "-c", &script]).await?;
        match out.trim() {
            "OPEN" => Ok(Reach::Open),
            "CLOSED" => Ok(Reach::Refused),
            other => bail!("kubectl exec failed: {other}"),
        }
    }

    /// Waits until a connection to `ip:port` gives `want`.
    async fn wait_for(&self, ip: &str, port: u16, want: Reach) -> Result<()> {
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
            if started.elapsed() > ENFORCED_WITHIN {
                bail!("{:?} -> {ip}:{port}: still {got:?}, expected {want:?}", self.target);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
