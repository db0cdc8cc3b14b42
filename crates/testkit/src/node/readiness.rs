//! When is the node usable: `/readyz`, the Node Ready, CoreDNS and the provisioner Ready.

use super::{NODE_NAME, boot::COMPONENTS};
use crate::apiserver::{Layout, admin_http_client, client_from_kubeconfig, pid_alive};
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams};
use std::path::Path;
use std::time::{Duration, Instant};

/// Pods that must be Ready before the node counts as up: (namespace, label selector).
pub(super) const ADDON_PODS: [(&str, &str); 2] = [
    ("kube-system", "k8s-app=kube-dns"),
    ("local-path-storage", "app=local-path-provisioner"),
];

/// Whether the node in `root` runs completely and answers, checked from the host.
pub async fn is_ready(root: &Path) -> bool {
    let layout = Layout::new(root);
    let all_alive = COMPONENTS
        .iter()
        .all(|name| crate::apiserver::detached::read_pid(&layout, name).is_some_and(pid_alive));
    if !all_alive || !readyz(&layout).await.unwrap_or(false) {
        return false;
    }
    let Ok(client) = client_from_kubeconfig(&layout.kubeconfig()).await else {
        return false;
    };
    node_ready(&client, NODE_NAME).await.unwrap_or(false)
        && addons_ready(&client).await.map(|m| m.is_empty()).unwrap_or(false)
}

async fn readyz(layout: &Layout) -> Result<bool> {
    let kubeconfig = kube::config::Kubeconfig::read_from(layout.kubeconfig())?;
    let server = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .context("kubeconfig without a server")?;
    let response = admin_http_client(layout)?
        .get(format!("{server}/readyz"))
        .send()
        .await?;
    Ok(response.status().is_success())
}

/// node-boot checked `/readyz` from inside the namespace; this proves the host reaches it over
/// the veth (the path every test and `kubectl` on the host takes).
pub(super) async fn wait_for_readyz_from_host(root: &Path) -> Result<()> {
    let layout = Layout::new(root);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match readyz(&layout).await {
            Ok(true) => return Ok(()),
            result if Instant::now() > deadline => {
                bail!("the apiserver does not answer /readyz from the host over the veth: {result:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Whether Node `name` says Ready.
pub(super) async fn node_ready(client: &kube::Client, name: &str) -> Result<bool> {
    let Some(node) = Api::<Node>::all(client.clone()).get_opt(name).await? else {
        return Ok(false);
    };
    let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
    Ok(conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What keeps the add-ons from being Ready; empty when they are.
async fn addons_ready(client: &kube::Client) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for (namespace, selector) in ADDON_PODS {
        let pods = Api::<Pod>::namespaced(client.clone(), namespace)
            .list(&ListParams::default().labels(selector))
            .await?;
        if pods.items.is_empty() {
            missing.push(format!("{namespace}/{selector}: no pod yet"));
        }
        for pod in pods.items.iter().filter(|p| !pod_ready(p)) {
            missing.push(describe_pod(pod));
        }
    }
    Ok(missing)
}

pub(crate) fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `ns/name Phase [container: Reason: message]...` for error messages.
pub(crate) fn describe_pod(pod: &Pod) -> String {
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("?"),
        pod.metadata.name.as_deref().unwrap_or("?")
    );
    let status = pod.status.clone().unwrap_or_default();
    let mut text = format!("{name} {}", status.phase.as_deref().unwrap_or("Unknown"));
    for c in status.container_statuses.unwrap_or_default() {
        let state = c.state.unwrap_or_default();
        if let Some(w) = state.waiting {
            text += &format!(
                " [{}: {} {}]",
                c.name,
                w.reason.unwrap_or_default(),
                w.message.unwrap_or_default()
            );
        } else if let Some(t) = state.terminated {
            text += &format!(" [{}: exited {} {}]", c.name, t.exit_code, t.reason.unwrap_or_default());
        }
    }
    text
}

/// The latest Warning events of `namespace`, for error messages.
pub(crate) async fn recent_warnings(client: &kube::Client, namespace: &str) -> String {
    let Ok(events) = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
    else {
        return String::new();
    };
    let mut lines: Vec<String> = events
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| {
            format!(
                "  {} {}: {}",
                e.involved_object.name.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            )
        })
        .collect();
    lines.reverse();
    lines.truncate(10);
    lines.join("\n")
}

/// Waits for the Node and the add-ons; `alive` fails early when a component process exited.
pub(super) async fn wait_until_ready(
    client: &kube::Client,
    timeout: Duration,
    alive: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let began = Instant::now();
    let mut node_seen_ready = false;
    loop {
        alive()?;
        if !node_seen_ready && node_ready(client, NODE_NAME).await.unwrap_or(false) {
            node_seen_ready = true;
            eprintln!("node: Node {NODE_NAME} Ready after {:.1?}", began.elapsed());
        }
        let missing = if node_seen_ready {
            addons_ready(client).await.unwrap_or_else(|e| vec![format!("{e:#}")])
        } else {
            vec![format!("Node {NODE_NAME} not Ready")]
        };
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let mut warnings = String::new();
            for namespace in ["kube-system", "local-path-storage", "default"] {
                warnings += &recent_warnings(client, namespace).await;
            }
            bail!(
                "node not ready after {timeout:?}: {}\nrecent warnings:\n{warnings}",
                missing.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
