//! Worker nodes: `make cluster-up NODES=3` is the first node (control plane and a kubelet) plus
//! two workers, each a kubelet node of its own for placement, drain and node-failure tests.
//!
//! A worker is `openbao-node-<n>`: its own network namespace, containerd, kubelet, kube-proxy and
//! NetworkPolicy engine, its state under `<root>/workers/<name>`, its processes in the cgroup
//! `/openbao-node/<name>` (so the first node's teardown still finds them all). Its only link is
//! a veth pair to the first node (`198.19.254.<4n+1>` there, `198.19.254.<4n+2>` on the worker),
//! which routes between the host, the apiserver and every node's pods: the pod network is a
//! star through the first node, with no tunnel and no address translation, so a pod keeps its
//! address from node to node (what NetworkPolicy sees). Its pods take `198.18.<n>.0/24`, written
//! into its Node object before its kubelet registers, so the controller-manager agrees with the
//! CNI. The apiserver was given every worker's kubelet certificates when the node booted.
//!
//! Killing a worker ([`kill`]) is a power loss: every process of its cgroup subtree, containers
//! included, dies at once; its disk (the state dir) stays, and [`start`] brings it back.

use super::config::{self, NodeIdentity, NodePaths};
use super::{NODE_NAME, boot, cgroups, leftovers, mounts, network};
use crate::apiserver::{Layout, client_from_kubeconfig};
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Workers a node can have (`NODES` up to 4): their kubelet certificates are made at boot.
pub const MAX_WORKERS: u8 = 3;
/// The taint (effect `NoSchedule`, value `true`) and label of [`Scheduling::Reserved`] workers.
pub const RESERVED: &str = "openbao.org/reserved-worker";

/// Which pods the workers take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduling {
    /// Any pod (`make cluster-up NODES=3`).
    Open,
    /// Only pods that tolerate the taint [`RESERVED`] (and may select the label of that name): a
    /// test that drains and removes its workers keeps the pods of the tests beside it off them.
    Reserved,
}
/// From the first process to the Node Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Worker `index` (1-based) of the machine's node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Worker {
    index: u8,
}

impl Worker {
    /// # Panics
    /// When `index` is not in `1..=MAX_WORKERS`.
    pub fn new(index: u8) -> Self {
        assert!((1..=MAX_WORKERS).contains(&index), "worker index {index} out of range");
        Self { index }
    }

    /// The Node's name, the network namespace's and the cgroup's.
    pub fn name(&self) -> String {
        format!("{NODE_NAME}-{}", self.index)
    }

    /// The worker's address: its kubelet and NodePorts listen here.
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, 254, 4 * self.index + 2)
    }

    /// The first node's end of the link.
    pub(super) fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, 254, 4 * self.index + 1)
    }

    /// The link's interface name in the first node's namespace.
    pub(super) fn link_name(&self) -> String {
        format!("obn-w{}", self.index)
    }

    pub(super) fn pod_cidr(&self) -> String {
        format!("198.18.{}.0/24", self.index)
    }

    fn cgroup_root(&self) -> String {
        cgroups::worker_root_name(&self.name())
    }

    pub(super) fn identity(&self) -> NodeIdentity {
        NodeIdentity {
            name: self.name(),
            ip: self.ip(),
            pod_cidr: self.pod_cidr(),
            cgroup_root: self.cgroup_root(),
            kubelet_client: format!("kubelet-{}", self.name()),
            kubelet_serving: format!("kubelet-serving-{}", self.name()),
        }
    }

    pub(super) fn dir(&self, root: &Path) -> PathBuf {
        root.join("workers").join(self.name())
    }

    /// Logs and pid files are the first node's, prefixed: they outlive a removed worker.
    pub(super) fn component(&self, component: &str) -> String {
        format!("{}-{component}", self.name())
    }
}

/// Adds workers 1..=`count` to the node running from `root` (those already up are kept) and
/// returns once each one's Node is Ready. `scheduling` applies to workers it registers.
pub async fn add(root: &Path, count: u8, scheduling: Scheduling) -> Result<Vec<Worker>> {
    if count > MAX_WORKERS {
        bail!("at most {MAX_WORKERS} workers (NODES={})", MAX_WORKERS + 1);
    }
    let _lock = super::lock::exclusive()?;
    if super::owner::get().as_deref() != Some(root) {
        bail!("no node of {} runs here: `make cluster-up` first", root.display());
    }
    let workers: Vec<Worker> = (1..=count).map(Worker::new).collect();
    // Side by side: most of a worker's start is containerd importing the images.
    futures::future::try_join_all(workers.iter().map(|worker| start(root, worker, scheduling))).await?;
    Ok(workers)
}

/// Starts `worker`'s processes (creating its namespace, cgroups, files and Node when missing,
/// the Node with `scheduling`) and waits until its Node is Ready. Its processes are started only
/// if they are not all running; any that run are killed first.
pub async fn start(root: &Path, worker: &Worker, scheduling: Scheduling) -> Result<()> {
    let began = Instant::now();
    let layout = Layout::new(root);
    let client = client_from_kubeconfig(&layout.kubeconfig()).await?;
    if is_running(root, worker) {
        return wait_until_ready(&client, worker, &mut || Ok(())).await;
    }
    // Some of its daemons may still run (a start that failed midway, or one daemon died): new
    // ones beside them would fight over their sockets and ports, so what is left goes first, as
    // after a power loss (its disk and Node stay). Nothing to kill on a first start.
    kill(root, worker)?;
    let inputs = super::Inputs::read(root)?;
    let paths = NodePaths::new(&worker.dir(root));
    let identity = worker.identity();
    network::create_worker(worker)?;
    cgroups::create_subtree(&identity.cgroup_root)?;
    let server = api_server_url(&layout)?;
    config::write_node_files(&layout, &server, &identity, &paths)?;
    register(&client, worker, scheduling).await?;
    let mut started = boot::Started::in_worker(layout, *worker);
    boot::start_node_daemons(&mut started, &inputs, &paths, &identity).await?;
    wait_for_address(&client, worker, &mut || started.check_alive()).await?;
    boot::start_network_policy_engine(&mut started, &inputs, &paths, &identity).await?;
    wait_until_ready(&client, worker, &mut || started.check_alive()).await?;
    eprintln!("node: worker {} Ready after {:.1?}", worker.name(), began.elapsed());
    Ok(())
}

/// Whether every daemon of `worker` runs (by its pid file).
pub(super) fn is_running(root: &Path, worker: &Worker) -> bool {
    let layout = Layout::new(root);
    boot::NODE_DAEMONS.iter().all(|name| {
        crate::apiserver::detached::read_pid(&layout, &worker.component(name)).is_some_and(crate::apiserver::pid_alive)
    })
}

/// A power loss of `worker` of the node running from `root`: every process of it (kubelet,
/// containerd, kube-proxy, its containers) is killed at once, and what lives in /run goes; its
/// namespace, disk and Node object stay.
pub fn kill(root: &Path, worker: &Worker) -> Result<()> {
    cgroups::kill_subtree(&worker.cgroup_root())?;
    leftovers::remove_shim_sockets(&worker.dir(root));
    Ok(())
}

/// Removes every worker of the node running from `root`: processes, mounts, files, network,
/// cgroups and Node objects, and returns once the first node's add-ons (CoreDNS, local-path) are
/// Ready again, wherever they ran. Idempotent.
pub async fn remove_all(root: &Path) -> Result<()> {
    let _lock = super::lock::exclusive()?;
    let began = Instant::now();
    for index in 1..=MAX_WORKERS {
        remove_local(root, &Worker::new(index))?;
    }
    eprintln!(
        "node: workers' processes, mounts and namespaces gone after {:.1?}",
        began.elapsed()
    );
    // The workers' dir itself, once empty (what `remove_local` leaves).
    let _ = std::fs::remove_dir(root.join("workers"));
    let Ok(client) = client_from_kubeconfig(&Layout::new(root).kubeconfig()).await else {
        return Ok(());
    };
    for index in 1..=MAX_WORKERS {
        forget(&client, &Worker::new(index)).await?;
    }
    super::readiness::wait_until_ready(&client, READY_TIMEOUT, &mut || Ok(())).await
}

/// Deletes `worker`'s pods at once (no kubelet is left to confirm their end, and the pod garbage
/// collector would wait 40 s; their controllers start them again on the first node) and its Node.
async fn forget(client: &kube::Client, worker: &Worker) -> Result<()> {
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={}", worker.name())))
        .await?;
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for pod in pods.items {
        let (Some(ns), Some(name)) = (pod.metadata.namespace, pod.metadata.name) else {
            continue;
        };
        match Api::<Pod>::namespaced(client.clone(), &ns).delete(&name, &now).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("delete pod {ns}/{name} of {}", worker.name())),
        }
    }
    match Api::<Node>::all(client.clone())
        .delete(&worker.name(), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("delete Node {}", worker.name())),
    }
}

/// Everything of `worker` on this machine (the first node's teardown calls it for each).
pub(super) fn remove_local(root: &Path, worker: &Worker) -> Result<()> {
    kill(root, worker)?;
    let dir = worker.dir(root);
    mounts::unmount_under(&dir)?;
    leftovers::remove(&dir);
    network::delete_worker(worker)?;
    cgroups::remove_subtree(&worker.cgroup_root())?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    Ok(())
}

/// The apiserver's URL from the admin kubeconfig (the workers' components use the same).
fn api_server_url(layout: &Layout) -> Result<String> {
    let kubeconfig = kube::config::Kubeconfig::read_from(layout.kubeconfig())?;
    kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .context("kubeconfig without a server")
}

/// Creates `worker`'s Node with its pod range before its kubelet registers (which then finds
/// it and fills in the rest): the controller-manager takes an existing range as given.
async fn register(client: &kube::Client, worker: &Worker, scheduling: Scheduling) -> Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    if nodes.get_opt(&worker.name()).await?.is_some() {
        return Ok(());
    }
    let mut node = serde_json::json!({
        "metadata": {"name": worker.name()},
        "spec": {"podCIDR": worker.pod_cidr(), "podCIDRs": [worker.pod_cidr()]},
    });
    if scheduling == Scheduling::Reserved {
        node["metadata"]["labels"] = serde_json::json!({RESERVED: "true"});
        node["spec"]["taints"] = serde_json::json!([{"key": RESERVED, "value": "true", "effect": "NoSchedule"}]);
    }
    let node: Node = serde_json::from_value(node)?;
    nodes
        .create(&PostParams::default(), &node)
        .await
        .with_context(|| format!("create Node {}", worker.name()))?;
    Ok(())
}

/// Waits until `worker`'s kubelet has written its address into the Node.
async fn wait_for_address(client: &kube::Client, worker: &Worker, alive: &mut dyn FnMut() -> Result<()>) -> Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        alive()?;
        let node = nodes.get(&worker.name()).await?;
        let addresses = node.status.and_then(|s| s.addresses).unwrap_or_default();
        if addresses.iter().any(|a| a.type_ == "InternalIP") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the kubelet of {} gave its Node no address within {READY_TIMEOUT:?}",
                worker.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_until_ready(client: &kube::Client, worker: &Worker, alive: &mut dyn FnMut() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        alive()?;
        if super::readiness::node_ready(client, &worker.name())
            .await
            .unwrap_or(false)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("Node {} not Ready after {READY_TIMEOUT:?}", worker.name());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_do_not_overlap_the_first_node() {
        let first = NodeIdentity::first();
        for index in 1..=MAX_WORKERS {
            let worker = Worker::new(index);
            assert_ne!(worker.pod_cidr(), first.pod_cidr);
            assert_ne!(worker.ip(), first.ip);
            assert!(worker.link_name().len() <= 15, "interface names are at most 15 bytes");
            assert_eq!(worker.gateway().octets()[3] + 1, worker.ip().octets()[3]);
        }
    }
}
