//! `openbao-operator run` (the controller), `openbao-operator crd` (prints the CRDs), and the
//! executors the controller runs as Jobs: `openbao-operator backup` and `openbao-operator restore`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use openbao_operator::context::Context;
use openbao_operator::controllers::{backup, cluster};
use openbao_operator::executors;
use openbao_operator::runtime::{http, leader::LeaderElector, metrics::Metrics};
use openbao_render::OperatorIdentity;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Parser)]
#[command(name = "openbao-operator", version, about = "Kubernetes operator for OpenBao")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the current kubeconfig or in-cluster config.
    Run(RunArgs),
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
    /// Elect a leader through a Lease so that only one replica reconciles.
    #[arg(long, env = "OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
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
        Command::Run(args) => run(args).await,
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
    let client = kube::Client::try_default().await.context("connecting to Kubernetes")?;
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
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            tracing::warn!("graceful shutdown did not finish in {SHUTDOWN_GRACE:?}; exiting");
            std::process::exit(0);
        }
    });
    let server = tokio::spawn(http::serve(args.http_addr, metrics.clone(), ready.clone(), stopped()));

    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("openbao-operator-{}", std::process::id()));
    let elector = LeaderElector::new(
        Api::<Lease>::namespaced(client.clone(), &args.namespace),
        "openbao-operator-leader",
        &identity,
    );
    if args.leader_election {
        tracing::info!(%identity, "waiting for leadership");
        tokio::select! {
            _ = elector.acquire() => {}
            _ = stopped() => return Ok(()),
        }
        tracing::info!(%identity, "acquired leadership");
    }
    let operator = OperatorIdentity {
        namespace: args.namespace.clone(),
        service_account: args.service_account.clone(),
    };
    let mut ctx = Context::new(client, operator, metrics).await;
    ctx.watch_namespace = args.watch_namespace.clone();
    ctx.executor_image = args.executor_image.clone();
    let ctx = Arc::new(ctx);
    tracing::info!(gateway_api = ctx.gateway_api, "starting the OpenBaoCluster controller");
    ready.store(true, Ordering::Relaxed);
    let backups = Arc::new(backup::BackupContext::new(ctx.clone(), args.executor_image.clone()));
    let controller = futures::future::join3(
        cluster::run(ctx.clone(), stopped()),
        openbao_operator::controllers::restore::run(ctx, args.executor_image.clone(), stopped()),
        backup::run(backups, stopped()),
    );
    if args.leader_election {
        tokio::select! {
            _ = controller => {}
            _ = elector.hold() => {
                tracing::error!("lost leadership; exiting so another replica takes over");
                std::process::exit(1);
            }
        }
    } else {
        controller.await;
    }
    let _ = stop_tx.send(true);
    server.await??;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
