//! `openbao-operator run` (the controller), `openbao-operator crd` (prints the CRDs), and the
//! executors the controller runs as Jobs: `openbao-operator backup` and `openbao-operator restore`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use openbao_operator::context::Context;
use openbao_operator::controllers::{backup, cluster};
use openbao_operator::executors;
use openbao_operator::runtime::leader::{self, Ended, LeaderElector, LeaseTiming};
use openbao_operator::runtime::{http, kube_client, metrics::Metrics};
use openbao_render::OperatorIdentity;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// After the controllers stopped (or were cut short), this long to give the leader Lease back.
const LEASE_RELEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(3);
/// The Lease the replicas elect their leader with, in the operator's namespace.
const LEADER_LEASE: &str = "openbao-operator-leader";

#[derive(Parser)]
#[command(name = "openbao-operator", version, about = "Kubernetes operator for OpenBao")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the current kubeconfig or in-cluster config.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Back up a cluster's raft snapshot to S3 (run by the controller as a Job).
    Backup(Box<executors::backup::BackupArgs>),
    /// Restore a backup from S3 into a cluster (run by the controller as a Job).
    Restore(Box<executors::restore::RestoreArgs>),
    /// Restore drill: restore a backup into a throw-away local OpenBao and prove it is usable
    /// (run by the controller as a Job, next to that OpenBao).
    VerifyBackup(Box<executors::verify::VerifyArgs>),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "OPERATOR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Namespace the operator runs in (its service account is trusted by OpenBao).
    #[arg(long, env = "POD_NAMESPACE", default_value = "openbao-operator-system")]
    namespace: String,
    /// Service account the operator runs as.
    #[arg(long, env = "OPERATOR_SERVICE_ACCOUNT_NAME", default_value = "openbao-operator")]
    service_account: String,
    /// Reconcile only the clusters of this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Image of the executor Jobs (backup, restore): the operator's own image.
    #[arg(long, env = "OPERATOR_IMAGE", default_value = openbao_operator::DEFAULT_EXECUTOR_IMAGE)]
    executor_image: String,
    /// Namespace of the cluster DNS pods: OpenBao servers may reach it on port 53.
    #[arg(long, env = "OPERATOR_DNS_NAMESPACE", default_value = openbao_render::DEFAULT_DNS_NAMESPACE,
          value_parser = dns_label)]
    dns_namespace: String,
    /// Comma-separated CIDRs the operator's connections come from when it runs outside the pod
    /// network (its host's address, say): admitted to OpenBao's API next to its namespace.
    #[arg(long, env = "OPERATOR_EXTERNAL_SOURCE_CIDRS", value_delimiter = ',',
          value_parser = openbao_operator::context::parse_cidr)]
    external_source_cidrs: Vec<String>,
    /// Comma-separated cert-manager ClusterIssuers that a cluster's `tls.certManager` may name.
    /// A ClusterIssuer signs for every namespace, so none is usable unless listed here; an Issuer
    /// in the cluster's own namespace always is.
    #[arg(long, env = "OPERATOR_CERT_MANAGER_CLUSTER_ISSUERS", value_delimiter = ',')]
    cert_manager_cluster_issuers: Vec<String>,
    /// Elect a leader through a Lease so that only one replica reconciles.
    #[arg(long, env = "OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Lease duration of the leader election, in seconds. A leader that could not renew stops (the
    /// process exits) after 2/3 of it; a standby takes over once the Lease has not changed for all
    /// of it, so a dead leader is replaced within about 4/3 of it; a stopped one releases the Lease.
    #[arg(long, env = "OPERATOR_LEADER_LEASE_SECONDS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(3..=300))]
    leader_lease_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::try_parse().unwrap_or_else(|err| {
        // The executors answer with one JSON result line even when their settings are wrong.
        let executor = std::env::args()
            .nth(1)
            .filter(|a| a == "backup" || a == "restore" || a == "verify-backup");
        if let Some(operation) = executor.filter(|_| err.use_stderr()) {
            eprintln!("{err}");
            std::process::exit(executors::invalid_settings(&operation, &err.render().to_string()));
        }
        err.exit()
    });
    match cli.command {
        Command::Crd => {
            print!("{}", openbao_api::crd::yaml());
            Ok(())
        }
        Command::Run(args) => run(*args).await,
        // One JSON result line on stdout; the exit code says success or failure.
        Command::Backup(args) => std::process::exit(executors::backup::main(*args).await),
        Command::Restore(args) => std::process::exit(executors::restore::main(*args).await),
        Command::VerifyBackup(args) => std::process::exit(executors::verify::main(*args).await),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let timing = LeaseTiming {
        duration: std::time::Duration::from_secs(args.leader_lease_seconds),
    };
    let (client, lease_client) = kube_client::clients(timing.call_timeout())
        .await
        .context("connecting to Kubernetes")?;
    let metrics = Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
            // Shutdown is bounded: in-flight reconciles get a few seconds, then the process ends
            // (every step is idempotent, so the next leader redoes whatever was cut short).
            tokio::time::sleep(SHUTDOWN_GRACE + LEASE_RELEASE_GRACE).await;
            tracing::warn!(
                "graceful shutdown did not finish in {:?}; exiting",
                SHUTDOWN_GRACE + LEASE_RELEASE_GRACE
            );
            std::process::exit(0);
        }
    });
    let server = tokio::spawn(http::serve(args.http_addr, metrics.clone(), ready.clone(), stopped()));

    // Unique to this process: a restarted container is a new candidate, never the old leader.
    let identity = format!(
        "{}_{:08x}",
        std::env::var("POD_NAME").unwrap_or_else(|_| "openbao-operator".into()),
        rand::random::<u32>()
    );
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let leading = if args.leader_election {
        let elector = LeaderElector::new(
            Api::<Lease>::namespaced(lease_client, &args.namespace),
            LEADER_LEASE,
            &identity,
            timing,
        );
        tracing::info!(%identity, "waiting for leadership");
        let leadership = tokio::select! {
            leadership = elector.acquire() => leadership,
            _ = stopped() => return Ok(()),
        };
        tracing::info!(%identity, "acquired leadership");
        // Leadership ends by exiting the process: nothing of the controllers (in-flight
        // reconciles, OpenBao calls, Job creations) can outlive it, and the restarted process
        // comes back as a standby.
        leader::watchdog(leadership.tenure.clone(), {
            let metrics = metrics.clone();
            move || {
                metrics.leader.set(0);
                tracing::error!("the leader Lease was not renewed in time; exiting so that no two replicas lead");
                std::process::exit(1);
            }
        });
        Some(tokio::spawn(elector.lead(leadership, async {
            let _ = release_rx.await;
        })))
    } else {
        None
    };
    let operator = OperatorIdentity {
        namespace: args.namespace.clone(),
        service_account: args.service_account.clone(),
    };
    let mut ctx = Context::new(client, operator, metrics.clone()).await;
    ctx.watch_namespace = args.watch_namespace.clone();
    ctx.executor_image = args.executor_image.clone();
    ctx.cert_manager_cluster_issuers = args.cert_manager_cluster_issuers.clone();
    ctx.network = openbao_operator::context::NetworkSettings {
        dns_namespace: args.dns_namespace.clone(),
        external_source_cidrs: args.external_source_cidrs.clone(),
    };
    // Read once now; a failure is reported on each cluster (its policy waits), not fatal here.
    match ctx.discover_apiserver().await {
        Ok(addresses) => tracing::info!(?addresses, "where pods reach the apiserver"),
        Err(e) => tracing::warn!(error = %e, "cannot read where pods reach the apiserver yet"),
    }
    let ctx = Arc::new(ctx);
    tracing::info!(gateway_api = ctx.gateway_api, "starting the OpenBaoCluster controller");
    ready.store(true, Ordering::Relaxed);
    metrics.leader.set(1);
    let backups = Arc::new(backup::BackupContext::new(ctx.clone(), args.executor_image.clone()));
    let controller = futures::future::join3(
        cluster::run(ctx.clone(), stopped()),
        openbao_operator::controllers::restore::run(ctx, args.executor_image.clone(), stopped()),
        backup::run(backups, stopped()),
    );
    match leading {
        Some(mut leading) => {
            let grace_over = {
                let stopped = stopped();
                async move {
                    stopped.await;
                    tokio::time::sleep(SHUTDOWN_GRACE).await;
                }
            };
            tokio::select! {
                _ = controller => {}
                // Reconciles still running are cut short (each step is idempotent: the next
                // leader redoes it); the Lease is still given back below.
                _ = grace_over => {
                    tracing::warn!("controllers did not stop within {SHUTDOWN_GRACE:?} of the signal; stopping them");
                }
                ended = &mut leading => {
                    let why = match ended {
                        Ok(Ended::Lost(why)) => why,
                        Ok(Ended::Released) => "released".into(),
                        Err(e) => format!("the renewal task failed: {e}"),
                    };
                    metrics.leader.set(0);
                    tracing::error!(reason = %why, "lost leadership; exiting so that another replica takes over");
                    std::process::exit(1);
                }
            }
            metrics.leader.set(0);
            // The controllers stopped: give the Lease back so that a standby need not wait it out.
            tracing::info!("controllers stopped; releasing the leader Lease");
            let _ = release_tx.send(());
            let _ = leading.await;
        }
        None => {
            controller.await;
        }
    }
    let _ = stop_tx.send(true);
    server.await??;
    Ok(())
}

/// A namespace name (RFC 1123 label).
fn dns_label(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    ok.then(|| s.to_string())
        .ok_or_else(|| format!("{s:?} is not a namespace name"))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
