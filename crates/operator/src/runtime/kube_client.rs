//! The operator's Kubernetes clients, with every request bounded in time.

use kube::{Client, Config};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence of a response. Watches are quiet up to their server-side timeout (kube's
/// watcher asks for 290 s and reconnects itself 5 s after), so reads may idle a little longer.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading the kubeconfig or in-cluster configuration: {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("building the Kubernetes client: {0}")]
    Build(#[from] kube::Error),
}

/// The controllers' client, and the leader election's, whose requests all end within
/// `lease_call_timeout` (a hung renewal must not outlive the renewal it stands for).
pub async fn clients(lease_call_timeout: Duration) -> Result<(Client, Client), ClientError> {
    let mut config = Config::infer().await?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.write_timeout = Some(WRITE_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    let mut lease = config.clone();
    lease.connect_timeout = Some(lease_call_timeout);
    lease.write_timeout = Some(lease_call_timeout);
    lease.read_timeout = Some(lease_call_timeout);
    // Retries of 429/503/504 would stretch one Lease request past its bound: the election retries.
    lease.default_retry = false;
    Ok((Client::try_from(config)?, Client::try_from(lease)?))
}
