//! `lane`: the part of the local development lane's rehearsals (docs/lane.md) that knows the
//! operator's API. `hack/lane.sh` keeps the orchestration of external tools (the node or k3d,
//! images, Helm, `kubectl apply`, the S3 listing) and calls this for everything that reads or
//! waits on `OpenBaoCluster` and `OpenBaoRestore` status: the types come from `openbao-api`, so a
//! renamed status field or annotation breaks this build, not a lane run.
//!
//! Progress goes to stderr, one timestamped line per change seen. What the lane records in its
//! state file goes to stdout as `key=value` lines ([`Record`]), printed also when the command
//! fails afterwards (an upgrade's probe figures explain its failure).

mod backup;
mod gitops;
mod probe;
mod ready;
mod restore;
mod upgrade;
mod watch;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "The lane's rehearsals: wait for, trigger and follow what the operator reports")]
struct Cli {
    /// The lane's kubeconfig.
    #[arg(long, env = "LANE_KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Namespace of the lane's OpenBaoCluster.
    #[arg(long, default_value = "openbao")]
    namespace: String,
    /// The lane's OpenBaoCluster.
    #[arg(long, default_value = "openbao")]
    cluster: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Waits until every condition named is True on the cluster.
    WaitReady {
        /// A condition type, e.g. `Available`; repeat for several.
        #[arg(long = "condition", required = true)]
        conditions: Vec<String>,
        #[arg(long, env = "LANE_TIMEOUT", default_value_t = 600)]
        timeout_seconds: u64,
    },
    /// A manual backup (the trigger annotation); waits for its result and prints its key.
    Backup {
        #[arg(long, env = "LANE_BACKUP_TIMEOUT", default_value_t = 300)]
        timeout_seconds: u64,
    },
    /// An OpenBaoRestore of KEY from the lane cluster's backup target into a cluster of the
    /// namespace; prints each phase change, fails on `Failed`.
    Restore {
        #[arg(long)]
        key: String,
        /// The cluster restored into (default: the lane cluster).
        #[arg(long)]
        into: Option<String>,
        #[arg(long, env = "LANE_RESTORE_TIMEOUT", default_value_t = 600)]
        timeout_seconds: u64,
    },
    /// Sets `spec.version` and follows the upgrade to `Available` on that version, probing the
    /// edge every 200 ms and watching the HTTPRoutes' conditions.
    Upgrade {
        #[arg(long)]
        version: String,
        /// What the probe GETs, e.g. `https://openbao.lane.localhost:30443/v1/sys/health?standbyok=true`.
        #[arg(long)]
        probe_url: reqwest::Url,
        /// The address the probe URL's host resolves to (the edge).
        #[arg(long)]
        edge_address: std::net::IpAddr,
        /// The CA (PEM) the probe verifies the edge with.
        #[arg(long)]
        ca: PathBuf,
        #[arg(long, env = "LANE_UPGRADE_TIMEOUT", default_value_t = 900)]
        timeout_seconds: u64,
    },
    /// Argo CD's Application syncs the cluster (`--cluster`) from the lane's Git server twice;
    /// the second sync must write nothing the operator owns and start no Job.
    Gitops {
        #[arg(long)]
        application: String,
        #[arg(long, env = "LANE_GITOPS_TIMEOUT", default_value_t = 600)]
        timeout_seconds: u64,
    },
}

/// What a command hands to the lane's state file.
#[derive(Default)]
pub struct Record(Vec<(&'static str, String)>);

impl Record {
    pub fn set(&mut self, key: &'static str, value: impl ToString) {
        self.0.push((key, value.to_string()));
    }
    fn print(&self) {
        for (key, value) in &self.0 {
            // One line per value: the state file is line-based.
            println!("{key}={}", value.replace('\n', " "));
        }
    }
}

/// Where a command is, relative to its start: what the progress lines and the records say.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Self {
        Self(Instant::now())
    }
    pub fn seconds(&self) -> String {
        format!("{:.1}", self.0.elapsed().as_secs_f64())
    }
}

/// A progress line, stamped like `hack/lib.sh`'s `log`.
pub fn say(message: impl std::fmt::Display) {
    eprintln!("[{}] {message}", jiff::Zoned::now().strftime("%H:%M:%S"));
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let mut record = Record::default();
    let result = run(cli, &mut record).await;
    record.print();
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli, record: &mut Record) -> Result<()> {
    let client = testkit::apiserver::client_from_kubeconfig(&cli.kubeconfig).await?;
    let lane = watch::Lane {
        client,
        namespace: cli.namespace,
        cluster: cli.cluster,
    };
    let limit = |seconds: u64| Duration::from_secs(seconds);
    match cli.command {
        Cmd::WaitReady {
            conditions,
            timeout_seconds,
        } => ready::wait(&lane, &conditions, limit(timeout_seconds)).await,
        Cmd::Backup { timeout_seconds } => backup::run(&lane, limit(timeout_seconds), record).await,
        Cmd::Restore {
            key,
            into,
            timeout_seconds,
        } => {
            let into = into.unwrap_or_else(|| lane.cluster.clone());
            restore::run(&lane, &key, &into, limit(timeout_seconds), record).await
        }
        Cmd::Upgrade {
            version,
            probe_url,
            edge_address,
            ca,
            timeout_seconds,
        } => {
            let ca = std::fs::read(&ca).with_context(|| format!("read the probe's CA {}", ca.display()))?;
            let probe = probe::Target {
                url: probe_url,
                address: edge_address,
                ca,
            };
            upgrade::run(&lane, &version, probe, limit(timeout_seconds), record).await
        }
        Cmd::Gitops {
            application,
            timeout_seconds,
        } => gitops::run(&lane, &application, limit(timeout_seconds), record).await,
    }
}
