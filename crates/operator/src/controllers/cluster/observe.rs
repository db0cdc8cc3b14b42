//! Observe: what the cluster is now (its pods as OpenBao's service registration labels them, the
//! live StatefulSet's readiness), read before anything is built or applied.

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

/// What is known before applying: the pods, their audit configuration, how many servers of the
/// live StatefulSet are ready, and the JWT audience the cluster's OpenBao is reached with.
pub(super) async fn observe(
    ctx: &Context,
    cluster: &Cluster<'_>,
    previous: &OpenBaoClusterStatus,
) -> Result<Observed, Error> {
    let live = bluegreen::live_statefulset_name(cluster.name, previous);
    let (pods, pod_audit_hashes, ready_replicas) = observe_pods(ctx, cluster, &live).await?;
    let mut observed = Observed::before_apply(cluster.spec.paused, ready_replicas, pods);
    observed.pod_audit_hashes = pod_audit_hashes;
    if cluster.spec.self_init.oidc.enabled {
        observed.jwt_audience = Some(names::jwt_audience(cluster.namespace, cluster.name));
    }
    Ok(observed)
}

/// The pods as [`pod_views`] describes them, the audit configuration each runs (its
/// `openbao.org/audit-hash`, by pod name), and how many pods of the StatefulSet `live` are ready.
async fn observe_pods(
    ctx: &Context,
    cluster: &Cluster<'_>,
    live: &str,
) -> Result<(Vec<PodView>, Vec<(String, Option<String>)>, i32), Error> {
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
    Ok((
        pod_views(&pods.items, &seal),
        audit_hashes,
        ready_pods_of(&pods.items, live),
    ))
}

/// The pods of StatefulSet `statefulset` that are Ready and not being deleted: what its
/// `status.readyReplicas` will say once the controller-manager gets to it. Counted from the pods
/// the reconcile lists anyway, so `Available` follows the last server's readiness at once, not
/// the controller-manager's next status write (seconds later on a loaded node).
fn ready_pods_of(pods: &[Pod], statefulset: &str) -> i32 {
    let ready = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.kind == "StatefulSet" && o.name == statefulset)
        })
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    i32::try_from(ready).unwrap_or(i32::MAX)
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
    use super::{pod_views, ready_pods_of};
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

    fn server(name: &str, owner: &str, ready: &str, deleting: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": owner,
                                     "uid": "u", "controller": true}],
                "deletionTimestamp": deleting.then_some("2026-11-24T22:14:40Z"),
            },
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }))
        .expect("a pod")
    }

    #[test]
    fn ready_servers_are_the_live_sets_ready_pods_that_stay() {
        let pods = [
            server("openbao-0", "openbao", "True", false),
            server("openbao-1", "openbao", "False", false),
            server("openbao-2", "openbao", "True", true),
            server("openbao-v2-7-2-0", "openbao-v2-7-2", "True", false),
        ];
        assert_eq!(ready_pods_of(&pods, "openbao"), 1);
        assert_eq!(ready_pods_of(&pods, "openbao-v2-7-2"), 1);
        assert_eq!(ready_pods_of(&pods, "other"), 0);
    }
}
