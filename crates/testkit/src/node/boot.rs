//! `node-boot`: runs inside the node's network namespace and cgroup (see [`super::enter`]) and
//! starts the node's processes detached, each with a pid file and a log under the state dir.

use super::config::{self, NodeIdentity, NodePaths};
use super::workers::Worker;
use super::{Inputs, NODE_IP, addons, network, readiness};
use crate::apiserver::detached::{boot_detached, detached_command, spawn_recorded};
use crate::apiserver::plan::{LaunchPlan, Placement};
use crate::apiserver::{Layout, client_from_kubeconfig, log_tail};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// Every long-running process of the node, by pid-file name.
pub(super) const COMPONENTS: [&str; 8] = [
    "etcd",
    "kube-apiserver",
    "containerd",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    config::NETWORK_POLICY_ENGINE,
];
const READY_TIMEOUT: Duration = Duration::from_secs(300);
const CONTAINERD: &str = "/usr/bin/containerd";
const CTR: &str = "/usr/bin/ctr";

/// The daemons every node runs, the first and each worker (by pid-file name on a worker,
/// after its name: see [`Worker::component`]).
pub(super) const NODE_DAEMONS: [&str; 4] = ["containerd", "kubelet", "kube-proxy", config::NETWORK_POLICY_ENGINE];

/// The started processes, watched so a crash ends the wait with that process's log.
pub(super) struct Started {
    layout: Layout,
    children: Vec<(String, Child)>,
    /// Set for a worker: its processes are started in its namespace and cgroup.
    worker: Option<Worker>,
}

impl Started {
    /// The processes of a worker of the node whose state is in `layout`.
    pub(super) fn in_worker(layout: Layout, worker: Worker) -> Self {
        Self {
            layout,
            children: Vec::new(),
            worker: Some(worker),
        }
    }

    fn spawn(&mut self, name: &str, program: &Path, args: &[String]) -> Result<()> {
        let child = match &self.worker {
            None => spawn_recorded(&self.layout, name, program, args, &self.layout.log(name))?,
            Some(worker) => {
                let name = worker.component(name);
                let child = spawn_in_worker(worker, program, args, &self.layout.log(&name))
                    .with_context(|| format!("spawn {name} ({})", program.display()))?;
                std::fs::write(self.layout.pid_file(&name), child.id().to_string())
                    .with_context(|| format!("write pid file of {name}"))?;
                child
            }
        };
        self.children.push((name.to_string(), child));
        Ok(())
    }

    pub(super) fn check_alive(&mut self) -> Result<()> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let logged = self.worker.map_or_else(|| name.clone(), |w| w.component(name));
                let log = self.layout.log(&logged);
                bail!(
                    "{name} exited ({status}); log {}:\n{}",
                    log.display(),
                    log_tail(&log, 40)
                );
            }
        }
        Ok(())
    }
}

/// Starts the node inside its namespace and waits until it is usable.
pub async fn boot_inside(root: &Path) -> Result<()> {
    let began = Instant::now();
    let inputs = Inputs::read(root)?;
    let paths = NodePaths::new(root);
    let plan = LaunchPlan::prepare_for(
        Layout::new(root),
        inputs.bin.clone(),
        Placement::Node { address: NODE_IP },
    )?;
    config::write_all(&plan, &paths)?;
    let mut started = Started {
        layout: Layout::new(root),
        children: Vec::new(),
        worker: None,
    };
    started.spawn("containerd", Path::new(CONTAINERD), &config::containerd_args(&paths))?;
    // The control plane boots while containerd imports the images: both take seconds.
    let (control_plane, images) = tokio::join!(boot_detached(&plan), import_images(&paths, &inputs, &mut started));
    let (etcd, apiserver) = control_plane?;
    started.children.push(("etcd".into(), etcd));
    started.children.push(("kube-apiserver".into(), apiserver));
    images?;
    eprintln!(
        "node: control plane ready, images imported after {:.1?}",
        began.elapsed()
    );
    let bin = |name: &str| inputs.bin.join(name);
    started.spawn(
        "kube-controller-manager",
        &bin("kube-controller-manager"),
        &config::controller_manager_args(&plan, &paths),
    )?;
    started.spawn(
        "kube-scheduler",
        &bin("kube-scheduler"),
        &config::scheduler_args(&paths),
    )?;
    let first = config::NodeIdentity::first();
    started.spawn("kubelet", &bin("kubelet"), &config::kubelet_args(&paths, &first))?;
    started.spawn("kube-proxy", &bin("kube-proxy"), &config::kube_proxy_args(&paths))?;
    let (add_on_inputs, add_on_paths, layout) = (inputs.clone(), NodePaths::new(root), Layout::new(root));
    tokio::task::spawn_blocking(move || addons::apply(&add_on_inputs, &add_on_paths, &layout)).await??;
    // After the add-ons: the engine exits if it cannot read its Node, which its RBAC allows.
    started.spawn(
        config::NETWORK_POLICY_ENGINE,
        &inputs.network_policy_engine,
        &config::network_policy_engine_args(&paths, &first),
    )?;
    wait_for_network_policy_engine(&mut started, None).await?;
    let client = client_from_kubeconfig(&plan.layout.kubeconfig()).await?;
    readiness::wait_until_ready(&client, READY_TIMEOUT, &mut || started.check_alive()).await?;
    eprintln!("node: ready inside its namespace after {:.1?}", began.elapsed());
    Ok(())
}

/// A worker's first daemons, in their order: containerd and its images, then kubelet and
/// kube-proxy (its Node exists already, see `workers::register`). The NetworkPolicy engine comes
/// once the kubelet has given the Node its address ([`start_network_policy_engine`]).
pub(super) async fn start_node_daemons(
    started: &mut Started,
    inputs: &Inputs,
    paths: &NodePaths,
    node: &NodeIdentity,
) -> Result<()> {
    started.spawn("containerd", Path::new(CONTAINERD), &config::containerd_args(paths))?;
    import_images(paths, inputs, started).await?;
    let bin = |name: &str| inputs.bin.join(name);
    started.spawn("kubelet", &bin("kubelet"), &config::kubelet_args(paths, node))?;
    started.spawn("kube-proxy", &bin("kube-proxy"), &config::kube_proxy_args(paths))
}

/// Starts a worker's NetworkPolicy engine (it exits when its Node has no address yet) and
/// returns once its chain is in place.
pub(super) async fn start_network_policy_engine(
    started: &mut Started,
    inputs: &Inputs,
    paths: &NodePaths,
    node: &NodeIdentity,
) -> Result<()> {
    started.spawn(
        config::NETWORK_POLICY_ENGINE,
        &inputs.network_policy_engine,
        &config::network_policy_engine_args(paths, node),
    )?;
    let netns = started.worker.map(|w| w.name());
    wait_for_network_policy_engine(started, netns.as_deref()).await
}

/// Spawns a detached daemon inside `worker`'s network namespace and daemon cgroup. Both are
/// entered by the child between fork and exec, with descriptors opened beforehand (nothing is
/// allocated there).
fn spawn_in_worker(worker: &Worker, program: &Path, args: &[String], log: &Path) -> Result<Child> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let netns = network::open_worker_netns(worker)?;
    let procs_path = super::cgroups::daemon_procs(&worker.identity().cgroup_root);
    let procs = std::fs::File::options()
        .write(true)
        .open(&procs_path)
        .with_context(|| format!("open {}", procs_path.display()))?;
    let (netns_fd, procs_fd) = (netns.as_raw_fd(), procs.as_raw_fd());
    let mut command = detached_command(program, args, log)?;
    // SAFETY: setns(2) and write(2) are async-signal-safe and use descriptors that stay open in
    // this process until spawn returns. "0" written to cgroup.procs moves the writing process.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(command.spawn()?)
}

/// Waits until the NetworkPolicy engine has installed its top-level chain: from then on a policy
/// applied is enforced (within the engine's sync of the change). `netns`: the worker's namespace
/// to look in, or `None` for this process's own (the first node's, in `node-boot`).
async fn wait_for_network_policy_engine(started: &mut Started, netns: Option<&str>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut iptables: Vec<&str> = match netns {
        Some(ns) => vec!["ip", "netns", "exec", ns, "iptables"],
        None => vec!["iptables"],
    };
    iptables.extend(["-w", "-t", "filter", "-n", "-L", NETWORK_POLICY_CHAIN]);
    loop {
        let listed = tokio::process::Command::new(iptables[0])
            .args(&iptables[1..])
            .output()
            .await
            .context("run iptables")?;
        if listed.status.success() {
            return Ok(());
        }
        started.check_alive()?;
        if Instant::now() > deadline {
            bail!("the NetworkPolicy engine installed no {NETWORK_POLICY_CHAIN} chain within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// kube-router's chain that the FORWARD chain jumps to for pod traffic.
const NETWORK_POLICY_CHAIN: &str = "KUBE-ROUTER-FORWARD";

/// Waits for containerd's socket, then imports every image archive into the `k8s.io` namespace
/// (the one the CRI plugin serves to kubelet), unpacked for the overlayfs snapshotter.
async fn import_images(paths: &NodePaths, inputs: &Inputs, started: &mut Started) -> Result<()> {
    let socket = paths.containerd_socket();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ctr(&socket, &["version"]).await.is_ok_and(|ok| ok.is_empty()) {
        started.check_alive()?;
        if Instant::now() > deadline {
            bail!("containerd did not answer on {} within 60 s", socket.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (name, archive) in &inputs.images {
        let archive = archive.display().to_string();
        let failure = ctr(&socket, &["-n", "k8s.io", "images", "import", &archive]).await?;
        if !failure.is_empty() {
            bail!("ctr images import {name} ({archive}) failed: {failure}");
        }
    }
    Ok(())
}

/// Runs ctr against our containerd; returns "" on success, else its stderr.
async fn ctr(socket: &Path, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(CTR)
        .arg(format!("--address={}", socket.display()))
        .args(args)
        .output()
        .await
        .with_context(|| format!("run {CTR}"))?;
    Ok(if out.status.success() {
        String::new()
    } else {
        format!("{} {}", out.status, String::from_utf8_lossy(&out.stderr).trim())
    })
}
