//! Disruption budget and network policy of the OpenBao pods.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::json;

use super::{meta, typed};
use crate::{API_PORT, CLUSTER_PORT, Cluster, OperatorIdentity, labels};
use openbao_api::names;

/// Keeps a raft quorum through voluntary disruptions (drains): one server at a time.
pub fn pod_disruption_budget(cluster: &Cluster) -> Option<PodDisruptionBudget> {
    if cluster.spec.replicas < 3 {
        return None;
    }
    let mut pdb: PodDisruptionBudget = typed(json!({
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels::selector(cluster.name)}}
    }));
    pdb.metadata = meta(cluster, names::pdb(cluster.name), "server");
    Some(pdb)
}

/// Raft traffic only between the servers; the API from the cluster's namespace (clients and
/// executor Jobs), the operator, and the Gateway's namespace when a route is attached.
pub fn network_policy(cluster: &Cluster, operator: &OperatorIdentity) -> NetworkPolicy {
    let ns_selector = |ns: &str| json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}});
    let mut api_peers = vec![json!({"podSelector": {}}), ns_selector(&operator.namespace)];
    if let Some(g) = cluster.spec.gateway.as_ref().filter(|g| g.enabled) {
        api_peers.push(ns_selector(
            g.gateway_ref.namespace.as_deref().unwrap_or(cluster.namespace),
        ));
    }
    let mut np: NetworkPolicy = typed(json!({
        "spec": {
            "podSelector": {"matchLabels": labels::selector(cluster.name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": labels::selector(cluster.name)}}],
                 "ports": [{"port": API_PORT}, {"port": CLUSTER_PORT}]},
                {"from": api_peers, "ports": [{"port": API_PORT}]},
            ],
        }
    }));
    np.metadata = meta(cluster, names::network_policy(cluster.name), "server");
    np
}
