//! `node-boot`: runs inside the node's network namespace and cgroup (see [`super::enter`]) and
//! starts the node's processes detached, each with a pid file and a log under the state dir.

use super::config::{self, NodePaths};
use super::{Inputs, NODE_IP, addons, readiness};
use crate::apiserver::detached::{boot_detached, spawn_recorded};
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

/// The started processes, watched so a crash ends the wait with that process's log.
struct Started {
    layout: Layout,
    children: Vec<(String, Child)>,
}

impl Started {
    fn spawn(&mut self, name: &str, program: &Path, args: &[String]) -> Result<()> {
        let child = spawn_recorded(&self.layout, name, program, args, &self.layout.log(name))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    fn check_alive(&mut self) -> Result<()> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let log = self.layout.log(name);
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
    started.spawn("kubelet", &bin("kubelet"), &config::kubelet_args(&paths))?;
    started.spawn("kube-proxy", &bin("kube-proxy"), &config::kube_proxy_args(&paths))?;
    let (add_on_inputs, add_on_paths, layout) = (inputs.clone(), NodePaths::new(root), Layout::new(root));
    tokio::task::spawn_blocking(move || addons::apply(&add_on_inputs, &add_on_paths, &layout)).await??;
    // After the add-ons: the engine exits if it cannot read its Node, which its RBAC allows.
    started.spawn(
        config::NETWORK_POLICY_ENGINE,
        &inputs.network_policy_engine,
        &config::network_policy_engine_args(&paths),
    )?;
    wait_for_network_policy_engine(&mut started).await?;
    let client = client_from_kubeconfig(&plan.layout.kubeconfig()).await?;
    readiness::wait_until_ready(&client, READY_TIMEOUT, &mut || started.check_alive()).await?;
    eprintln!("node: ready inside its namespace after {:.1?}", began.elapsed());
    Ok(())
}

/// Waits until the NetworkPolicy engine has installed its top-level chain: from then on a policy
/// applied is enforced (within the engine's sync of the change).
async fn wait_for_network_policy_engine(started: &mut Started) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = tokio::process::Command::new("iptables")
            .args(["-w", "-t", "filter", "-n", "-L", NETWORK_POLICY_CHAIN])
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
