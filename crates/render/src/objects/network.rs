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
/// executor Jobs), the operator, the Gateway's namespace when a route is attached, and the
/// namespaces `spec.telemetry.scrapeNamespaces` names.
pub fn network_policy(cluster: &Cluster, operator: &OperatorIdentity) -> NetworkPolicy {
    let ns_selector = |ns: &str| json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}});
    let mut api_peers = vec![json!({"podSelector": {}}), ns_selector(&operator.namespace)];
    if let Some(g) = cluster.spec.gateway.as_ref().filter(|g| g.enabled) {
        api_peers.push(ns_selector(
            g.gateway_ref.namespace.as_deref().unwrap_or(cluster.namespace),
        ));
    }
    if let Some(t) = &cluster.spec.telemetry {
        api_peers.extend(t.scrape_namespaces.iter().map(|n| ns_selector(n)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures;

    fn api_namespaces(np: &NetworkPolicy) -> Vec<String> {
        let spec = serde_json::to_value(np.spec.as_ref().unwrap()).unwrap();
        spec["ingress"][1]["from"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_api_port_is_open_to_the_operator_the_gateway_and_the_scrapers_named() {
        let operator = OperatorIdentity {
            namespace: "openbao-operator-system".into(),
            service_account: "openbao-operator".into(),
        };
        let plain = fixtures::spec(json!({}));
        assert_eq!(
            api_namespaces(&network_policy(&fixtures::cluster(&plain), &operator)),
            ["openbao-operator-system"]
        );
        let scraped = fixtures::spec(json!({
            "telemetry": {"scrapeNamespaces": ["monitoring", "observability"]},
            "gateway": {"gatewayRef": {"name": "edge", "namespace": "lane-edge"}, "hostname": "b.example"},
        }));
        assert_eq!(
            api_namespaces(&network_policy(&fixtures::cluster(&scraped), &operator)),
            ["openbao-operator-system", "lane-edge", "monitoring", "observability"]
        );
    }
}
