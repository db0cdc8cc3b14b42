//! Observe: what the cluster is now (its pods as OpenBao's service registration labels them, the
//! live StatefulSet's readiness), read before anything is built or applied.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use openbao_api::{OpenBaoCluster, OpenBaoClusterStatus, names};
use openbao_render::{Cluster, labels};
use std::borrow::Cow;

use super::Error;
use super::bluegreen;
use super::status::{Observed, PodView, TlsState};
use crate::context::Context;
use crate::controllers::jobs::result::termination_message;
use crate::flows::upgrade::{self as upgrade_plan, UpgradePlan};
use crate::kube_write::kube_err;

/// The cluster to reconcile: the cached one, or read fresh when an upgrade may step. An upgrade
/// is a state machine in status: every step must start from the status the last step wrote, not
/// from a watch cache that may not have seen it yet. `None`: it is gone.
pub(super) async fn fresh<'a>(
    cached: &'a OpenBaoCluster,
    ctx: &Context,
) -> Result<Option<Cow<'a, OpenBaoCluster>>, Error> {
    if upgrade_plan::plan(&cached.spec, &cached.status.clone().unwrap_or_default()) == UpgradePlan::Idle
        && !super::seal_migration::in_progress(cached.status.as_ref())
    {
        return Ok(Some(Cow::Borrowed(cached)));
    }
    let api = Api::<OpenBaoCluster>::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    Ok(api
        .get_opt(&cached.name_any())
        .await
        .map_err(kube_err("reading the OpenBaoCluster"))?
        .map(Cow::Owned))
}

/// What is known before applying: the pods, their audit configuration, the live StatefulSet's
/// ready replicas, and the JWT audience the cluster's OpenBao is reached with.
pub(super) async fn observe(
    ctx: &Context,
    cluster: &Cluster<'_>,
    previous: &OpenBaoClusterStatus,
) -> Result<Observed, Error> {
    let (pods, pod_audit_hashes) = observe_pods(ctx, cluster).await?;
    let ready_replicas = Api::<StatefulSet>::namespaced(ctx.client.clone(), cluster.namespace)
        .get_opt(&bluegreen::live_statefulset_name(cluster.name, previous))
        .await
        .map_err(kube_err("reading the StatefulSet"))?
        .and_then(|s| s.status)
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let mut observed = Observed::before_apply(cluster.spec.paused, ready_replicas, pods);
    observed.pod_audit_hashes = pod_audit_hashes;
    if cluster.spec.self_init.oidc.enabled {
        observed.jwt_audience = Some(names::jwt_audience(cluster.namespace, cluster.name));
    }
    Ok(observed)
}

/// The pods as [`pod_views`] describes them, and the audit configuration each runs (its
/// `openbao.org/audit-hash`, by pod name).
async fn observe_pods(
    ctx: &Context,
    cluster: &Cluster<'_>,
) -> Result<(Vec<PodView>, Vec<(String, Option<String>)>), Error> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), cluster.namespace)
        .list(&ListParams::default().labels(&format!("{}={}", labels::CLUSTER_LABEL, cluster.name)))
        .await
        .map_err(kube_err("listing pods"))?;
    let audit_hashes = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            (
                p.name_any(),
                p.annotations().get(labels::AUDIT_HASH_ANNOTATION).cloned(),
            )
        })
        .collect();
    let seal = openbao_api::seal_of(cluster.spec.unseal.as_ref());
    Ok((pod_views(&pods.items, &seal), audit_hashes))
}

/// What OpenBao's service registration says of each pod, leaving out pods on their way out: a
/// pod being deleted (a removed blue server, a drained node) keeps its last labels, e.g.
/// `openbao-sealed=true` once its server stopped, which describe no server of the cluster.
/// A server that exits because its seal cannot be reached says so in its termination message.
pub(super) fn pod_views(pods: &[Pod], seal: &openbao_api::Seal<'_>) -> Vec<PodView> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| PodView {
            seal_failure: termination_message(p, openbao_render::SERVER_CONTAINER)
                .and_then(|m| super::status::seal_start_failure(&m, seal)),
            ..PodView::from_labels(&p.name_any(), p.labels())
        })
        .collect()
}

pub(super) fn previous_tls_state(previous: &OpenBaoClusterStatus) -> TlsState {
    let tls = previous.tls.clone().unwrap_or_default();
    TlsState::Ready {
        server_not_after: tls.server_not_after,
        ca_not_after: tls.ca_not_after,
    }
}

#[cfg(test)]
mod tests {
    use super::pod_views;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(name: &str, sealed: bool, deleting: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": {"openbao-sealed": sealed.to_string(), "openbao-initialized": "true"},
                "deletionTimestamp": deleting.then_some("2026-11-24T22:14:40Z"),
            }
        }))
        .expect("a pod")
    }

    #[test]
    fn pods_being_deleted_describe_no_server() {
        // After a blue/green upgrade: the removed blue servers are stopped (sealed) and deleted.
        let pods = [
            pod("openbao-0", true, true),
            pod("openbao-v2-7-2-0", false, false),
            pod("openbao-v2-7-2-1", false, false),
        ];
        let names: Vec<String> = pod_views(&pods, &openbao_api::Seal::Static)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["openbao-v2-7-2-0", "openbao-v2-7-2-1"]);
    }
}
