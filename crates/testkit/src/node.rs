//! Node mode: a real single-node Kubernetes cluster without Docker. The apiserver mode's etcd and
//! kube-apiserver plus kube-controller-manager, kube-scheduler, kubelet (containerd CRI, runc, a
//! bridge CNI), kube-proxy (iptables), a NetworkPolicy engine (kube-router, firewall mode), CoreDNS
//! and the local-path provisioner.
//!
//! Network safety: the whole node runs inside a network namespace of its own (`openbao-node`).
//! Its only link is a veth pair to the host (`198.19.255.1/30` host side, `198.19.255.2/30` node
//! side); pods hang off a bridge inside the namespace. Pod (`198.18.0.0/17`) and Service
//! (`198.18.128.0/17`) addresses come from the RFC 2544 benchmark range, which is routed nowhere;
//! the node namespace has no default route, so nothing in it can reach beyond the host.
//!
//! Every process of the node (control plane, containerd, shims, pods) lives in the cgroup
//! `/openbao-node`, so [`teardown`] finds and kills all of them, even after a failed start.
//!
//! `hermetic-k8s cluster-up` prepares the host ([`cluster_up`]) and then runs itself as
//! `hermetic-k8s node-boot` inside the namespace ([`enter`] + [`boot_inside`]).
//!
//! More nodes (`make cluster-up NODES=3`): [`workers`] adds kubelet nodes, each in a network
//! namespace and cgroup of its own, linked to this one.

mod addons;
mod boot;
mod cgroups;
mod config;
mod guard;
mod leftovers;
mod lock;
mod mounts;
mod network;
mod owner;
mod readiness;
mod sysctls;
pub mod workers;

pub use boot::boot_inside;
pub use guard::NodeGuard;
pub use readiness::is_ready;

use crate::apiserver::{self, Layout};
use crate::cache::run_hack;
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Name of the Node object, the network namespace and the cgroup.
pub const NODE_NAME: &str = "openbao-node";
/// The node side of the veth: the apiserver, the kubelet and NodePorts listen here.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 2);
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
pub const POD_CIDR: &str = "198.18.0.0/17";
/// The one node's share of POD_CIDR: the controller-manager allocates the first /24 to the first
/// (and only) node, and the CNI config uses the same range.
pub const NODE_POD_CIDR: &str = "198.18.0.0/24";
pub const SERVICE_CIDR: &str = apiserver::plan::SERVICE_CIDR;
pub const CLUSTER_DNS_IP: &str = "198.18.128.10";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
pub const STORAGE_CLASS: &str = "local-path";

/// What the host side hands to `node-boot`: real binaries and image archives, found or built on
/// the host (which has the package registries; the node namespace has no route anywhere).
#[derive(Clone)]
pub(crate) struct Inputs {
    pub(crate) bin: PathBuf,
    /// kube-router, built by `hack/build-kube-router.sh`.
    pub(crate) network_policy_engine: PathBuf,
    /// `(image name, OCI archive)` pairs from `hack/images.sh`.
    pub(crate) images: Vec<(String, PathBuf)>,
}

impl Inputs {
    fn path(root: &Path) -> PathBuf {
        root.join("node-inputs.json")
    }

    fn write(&self, root: &Path) -> Result<()> {
        let images: Vec<_> = self
            .images
            .iter()
            .map(|(n, p)| json!({"name": n, "archive": p}))
            .collect();
        let text = serde_json::to_string_pretty(
            &json!({"bin": self.bin, "network_policy_engine": self.network_policy_engine, "images": images}),
        )?;
        std::fs::write(Self::path(root), text).context("write node-inputs.json")
    }

    pub(crate) fn read(root: &Path) -> Result<Self> {
        let path = Self::path(root);
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text).context("parse node-inputs.json")?;
        let bin = value["bin"].as_str().context("node-inputs.json: bin")?.into();
        let network_policy_engine = value["network_policy_engine"]
            .as_str()
            .context("node-inputs.json: network_policy_engine")?
            .into();
        let images = value["images"]
            .as_array()
            .context("node-inputs.json: images")?
            .iter()
            .map(|i| {
                let name = i["name"].as_str().context("image name")?.to_string();
                let archive = i["archive"].as_str().context("image archive")?.into();
                Ok((name, archive))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            bin,
            network_policy_engine,
            images,
        })
    }
}

/// Brings the node up (idempotent) and returns the kubeconfig path. `node_boot` is the command
/// that runs [`enter`] + [`boot_inside`] for `root` (the `hermetic-k8s node-boot` subcommand).
/// Returns once `/readyz` answers over the veth, the node is Ready and CoreDNS and the
/// local-path provisioner are Ready. A failed start is torn down again (logs stay).
pub async fn cluster_up(root: &Path, node_boot: Command) -> Result<PathBuf> {
    let _lock = lock::exclusive()?;
    let layout = Layout::new(root);
    if let Some(other) = owner::get().filter(|o| o != root) {
        if is_ready(&other).await {
            bail!(
                "this machine's node belongs to {} (one node per machine); run `make cluster-down` there first",
                other.display()
            );
        }
        eprintln!("node: removing the remains of a node of {}", other.display());
        teardown(&other)?;
    }
    if is_ready(root).await {
        eprintln!("node already up");
        return Ok(layout.kubeconfig());
    }
    let began = Instant::now();
    // Leftovers of a crashed or half-started run (or an apiserver-mode control plane) hold
    // addresses, mounts and stale certificates.
    teardown(root)?;
    apiserver::stop_detached(root, false)?;
    let inputs = tokio::task::spawn_blocking(prepare_inputs).await??;
    eprintln!("node: binaries and images ready after {:.1?}", began.elapsed());
    if let Err(err) = start(root, &inputs, node_boot).await {
        eprintln!(
            "node: start failed, tearing down (logs stay in {})",
            root.join("logs").display()
        );
        if let Err(down) = teardown(root).and_then(|()| apiserver::stop_detached(root, true)) {
            eprintln!("node: teardown after the failed start failed too: {down:#}");
        }
        return Err(err);
    }
    eprintln!(
        "node up in {:.1?} (logs in {})",
        began.elapsed(),
        root.join("logs").display()
    );
    Ok(layout.kubeconfig())
}

/// The state dir of the node running on this machine, if one is up and ready (from any checkout).
/// Its kubeconfig is `<dir>/kubeconfig`.
pub async fn running_node() -> Option<PathBuf> {
    let root = owner::get()?;
    is_ready(&root).await.then_some(root)
}

/// Host packages, the Kubernetes binaries and the image archives; each step is a no-op once done.
fn prepare_inputs() -> Result<Inputs> {
    run_hack("node/install-deps.sh", &[])?;
    let bin = run_hack("build-kubernetes.sh", &["node"])?
        .lines()
        .last()
        .map(PathBuf::from)
        .context("build-kubernetes.sh printed no bin dir")?;
    let network_policy_engine = run_hack("build-kube-router.sh", &[])?
        .lines()
        .last()
        .map(PathBuf::from)
        .context("build-kube-router.sh printed no path")?;
    let images = image_list()?;
    Ok(Inputs {
        bin,
        network_policy_engine,
        images,
    })
}

/// The images the node runs, as `(name, OCI archive)` pairs: assembles them with
/// `hack/images.sh` (cached; images whose inputs are missing, like an unbuilt RustFS, are left out).
pub fn image_list() -> Result<Vec<(String, PathBuf)>> {
    run_hack("images.sh", &[])?
        .lines()
        .map(|line| {
            let (name, archive) = line
                .split_once(' ')
                .with_context(|| format!("images.sh line {line:?}"))?;
            Ok((name.to_string(), PathBuf::from(archive)))
        })
        .collect()
}

/// Imports image archives into the containerd of every node running from `root` (the first and
/// its workers), for images added or rebuilt after the node booted (node-boot imports the list
/// once). Re-importing an image that is already there only re-reads its archive.
pub fn import_images(root: &Path, images: &[(String, PathBuf)]) -> Result<()> {
    import_into(&config::NodePaths::new(root).containerd_socket(), images)?;
    for worker in network::existing_workers() {
        // A killed worker is left out: it imports the node's boot list when it starts again. A
        // worker may also go away meanwhile (a test removing its workers): a warning, not a failure.
        if workers::is_running(root, &worker)
            && let Err(e) = import_into(&config::NodePaths::new(&worker.dir(root)).containerd_socket(), images)
        {
            eprintln!("node: images not imported into worker {}: {e:#}", worker.name());
        }
    }
    Ok(())
}

fn import_into(socket: &Path, images: &[(String, PathBuf)]) -> Result<()> {
    for (name, archive) in images {
        let out = Command::new("/usr/bin/ctr")
            .arg(format!("--address={}", socket.display()))
            .args(["-n", "k8s.io", "images", "import"])
            .arg(archive)
            .output()
            .context("run /usr/bin/ctr")?;
        if !out.status.success() {
            bail!(
                "ctr images import {name} ({}) failed: {} {}",
                archive.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

async fn start(root: &Path, inputs: &Inputs, mut node_boot: Command) -> Result<()> {
    std::fs::create_dir_all(root.join("logs")).with_context(|| format!("create {}", root.display()))?;
    owner::set(root)?;
    inputs.write(root)?;
    sysctls::save(root)?;
    cgroups::create()?;
    network::create()?;
    let status = tokio::task::spawn_blocking(move || node_boot.status())
        .await?
        .context("run node-boot")?;
    if !status.success() {
        bail!(
            "node-boot failed ({status}); see the messages above and {}",
            root.join("logs").display()
        );
    }
    // node-boot checked from inside the namespace; this proves the host reaches it too.
    readiness::wait_for_readyz_from_host(root).await
}

/// Joins the node's network namespace and cgroup. Call it first thing in `node-boot`, before any
/// thread starts: a network namespace is per thread, and threads inherit it when created.
pub fn enter() -> Result<()> {
    network::enter()?;
    cgroups::join_system(std::process::id())
}

/// `make cluster-down`: tears the node down (if `root` owns it) and then whatever `apiserver-up`
/// started, and removes the state under `root` (except `logs/` when `keep_logs`). Idempotent.
/// A node started from another state dir (another checkout) is left alone.
pub fn cluster_down(root: &Path, keep_logs: bool) -> Result<()> {
    let _lock = lock::exclusive()?;
    match owner::get() {
        Some(other) if other != root => eprintln!(
            "node: the node on this machine belongs to {}; left alone",
            other.display()
        ),
        _ => teardown(root)?,
    }
    apiserver::stop_detached(root, keep_logs)
}

/// Stops every process of the node, unmounts everything under `root`, deletes the network
/// namespace, veth and route, removes the cgroups and restores the kernel settings kubelet
/// changed. Idempotent; the files under `root` stay (the caller removes them).
fn teardown(root: &Path) -> Result<()> {
    cgroups::kill_all()?;
    network::kill_processes_inside()?;
    mounts::unmount_under(root)?;
    leftovers::remove(root);
    for worker in (1..=workers::MAX_WORKERS).map(workers::Worker::new) {
        leftovers::remove(&worker.dir(root));
    }
    network::delete()?;
    cgroups::remove()?;
    sysctls::restore(root)?;
    owner::clear()
}
