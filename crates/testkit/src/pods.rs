//! Waiting on pods of the real node: readiness, completion and a one-line state for messages.

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use std::time::{Duration, Instant};

/// Polls `check` every 500 ms until it yields a value; fails after `timeout`, naming `what`.
pub async fn wait_for<T>(what: &str, timeout: Duration, check: impl AsyncFnMut() -> Result<Option<T>>) -> Result<T> {
    wait_every(what, timeout, Duration::from_millis(500), check).await
}

/// Polls `check` every `interval` until it yields a value; fails after `timeout`, naming `what`.
pub async fn wait_every<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// The pod's phase and container states, for failure messages.
pub fn pod_state(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    format!(
        "{} {:?}",
        status.phase.unwrap_or_default(),
        status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.state)
            .collect::<Vec<_>>()
    )
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until pod `name` exists and is Ready; on timeout the error carries its state and logs.
pub async fn ready(pods: &Api<Pod>, name: &str, timeout: Duration) -> Result<Pod> {
    let mut last = String::new();
    let ready = wait_for(&format!("pod {name} Ready"), timeout, async || {
        let Some(pod) = pods.get_opt(name).await? else {
            return Ok(None);
        };
        last = pod_state(&pod);
        Ok(is_ready(&pod).then_some(pod))
    })
    .await;
    match ready {
        Ok(pod) => Ok(pod),
        Err(err) => {
            let logs = pods.logs(name, &LogParams::default()).await.unwrap_or_default();
            bail!("{err:#}\n{name}: {last}\nlogs:\n{logs}")
        }
    }
}

/// Waits until the run-once pod `name` has finished; returns its phase (`Succeeded` or `Failed`)
/// and its logs.
pub async fn finished(pods: &Api<Pod>, name: &str, timeout: Duration) -> Result<(String, String)> {
    let mut last = String::new();
    let phase = wait_for(&format!("pod {name} to finish"), timeout, async || {
        let pod = pods.get(name).await?;
        last = pod_state(&pod);
        let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
        Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase))
    })
    .await
    .with_context(|| format!("{name}: {last}"))?;
    let logs = pods.logs(name, &LogParams::default()).await?;
    Ok((phase, logs))
}
