//! `hermetic-k8s apiserver-up | down`: the test harness's control plane, kept running for
//! interactive use (`make apiserver-up`, then `kubectl --kubeconfig .cluster/kubeconfig ...`).

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use testkit::apiserver;

#[derive(Parser)]
#[command(about = "Hermetic Kubernetes for local work: real etcd + kube-apiserver on loopback")]
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
    ApiserverUp,
    /// Stop what `apiserver-up` started and remove its state.
    Down {
        /// Keep `<state-dir>/logs`.
        #[arg(long)]
        keep_logs: bool,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let dir = &cli.state_dir;
    match cli.command {
        Cmd::ApiserverUp => {
            if apiserver::detached_is_ready(dir).await {
                eprintln!("apiserver already up");
            } else {
                // Leftovers of a crashed or half-started run would hold ports or stale certs.
                apiserver::stop_detached(dir, true)?;
                let started = std::time::Instant::now();
                apiserver::start_detached(dir).await?;
                eprintln!(
                    "apiserver up in {:.1?} (logs in {})",
                    started.elapsed(),
                    dir.join("logs").display()
                );
            }
            println!("{}", apiserver::Layout::new(dir).kubeconfig().display());
        }
        Cmd::Down { keep_logs } => {
            apiserver::stop_detached(dir, keep_logs)?;
            eprintln!("stopped; state in {} removed", dir.display());
        }
    }
    Ok(())
}
