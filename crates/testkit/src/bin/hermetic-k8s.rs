//! `hermetic-k8s apiserver-up | cluster-up | down`: the test harness's Kubernetes, kept running
//! for interactive use (`make apiserver-up` / `make cluster-up`, then
//! `kubectl --kubeconfig .cluster/kubeconfig ...`).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use testkit::{apiserver, node};

#[derive(Parser)]
#[command(about = "Hermetic Kubernetes for local work: real etcd + kube-apiserver, optionally a real node")]
struct Cli {
    /// Where kubeconfig, certificates, etcd data, logs and pid files live.
    #[arg(long, global = true, default_value_os_t = testkit::cache::repo_root().join(".cluster"))]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start etcd + kube-apiserver detached; returns once /readyz answers. No-op when already up.
    ApiserverUp {
        /// Record every write request (create, update, patch, delete) in this JSON audit log
        /// (the benchmarks count requests from it).
        #[arg(long)]
        audit_log: Option<PathBuf>,
    },
    /// Start a cluster (kubelet, containerd, CoreDNS, local-path storage) in its own network
    /// namespace; returns once it is usable. No-op when already up.
    ClusterUp {
        /// Kubelet nodes in all: the first (with the control plane) and `nodes - 1` workers,
        /// each in a network namespace of its own.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=4))]
        nodes: u8,
    },
    /// Remove the workers of a running cluster (their Nodes, processes and state); the first
    /// node stays.
    WorkersDown,
    /// Stop what `apiserver-up` or `cluster-up` started and remove its state.
    Down {
        /// Keep `<state-dir>/logs`.
        #[arg(long)]
        keep_logs: bool,
    },
    /// Exit 0 when a node (from any checkout) is up and ready, printing its state dir; else 1.
    NodeStatus,
    /// Internal: the part of `cluster-up` that runs inside the node's network namespace.
    #[command(hide = true)]
    NodeBoot,
}

/// Metadata of every write request; nothing else.
const WRITES_AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
"#;

fn main() -> Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Cmd::NodeBoot) {
        // Before the runtime's threads exist: they inherit the namespace from this thread.
        node::enter()?;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    // Absolute: pid files, mounts and the node's configs all name it.
    let dir = &std::path::absolute(&cli.state_dir).context("resolve --state-dir")?;
    match cli.command {
        Cmd::ApiserverUp { audit_log } => {
            if apiserver::detached_is_ready(dir).await {
                eprintln!("apiserver already up");
            } else {
                // Leftovers of a crashed or half-started run would hold ports or stale certs.
                node::cluster_down(dir, true)?;
                let started = std::time::Instant::now();
                let mut extra = Vec::new();
                if let Some(log) = audit_log {
                    let log = std::path::absolute(log).context("resolve --audit-log")?;
                    let policy = dir.join("audit-policy.yaml");
                    std::fs::create_dir_all(dir)?;
                    std::fs::write(&policy, WRITES_AUDIT_POLICY).context("write the audit policy")?;
                    extra = vec![
                        format!("--audit-policy-file={}", policy.display()),
                        format!("--audit-log-path={}", log.display()),
                        "--audit-log-format=json".into(),
                    ];
                }
                apiserver::start_detached(dir, &extra).await?;
                eprintln!(
                    "apiserver up in {:.1?} (logs in {})",
                    started.elapsed(),
                    dir.join("logs").display()
                );
            }
            println!("{}", apiserver::Layout::new(dir).kubeconfig().display());
        }
        Cmd::ClusterUp { nodes } => {
            let exe = std::env::current_exe().context("locate the hermetic-k8s binary")?;
            let mut node_boot = std::process::Command::new(exe);
            node_boot.arg("--state-dir").arg(dir).arg("node-boot");
            let kubeconfig = node::cluster_up(dir, node_boot).await?;
            node::workers::add(dir, nodes - 1, node::workers::Scheduling::Open).await?;
            println!("{}", kubeconfig.display());
        }
        Cmd::WorkersDown => node::workers::remove_all(dir).await?,
        Cmd::NodeStatus => match node::running_node().await {
            Some(state) => println!("{}", state.display()),
            None => std::process::exit(1),
        },
        Cmd::Down { keep_logs } => {
            node::cluster_down(dir, keep_logs)?;
            eprintln!("stopped; state in {} removed", dir.display());
        }
        Cmd::NodeBoot => node::boot_inside(dir).await?,
    }
    Ok(())
}
