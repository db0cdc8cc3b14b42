//! Per-cluster gauges computed at scrape time from the controller's cache of `OpenBaoCluster`
//! objects, so a deleted cluster leaves no stale series behind and the figures are exactly what
//! `status` says (`kubectl get openbaocluster` and the dashboard never disagree).

use super::metrics::ClusterLabels;
use openbao_api::OpenBaoCluster;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    namespace: String,
    cluster: String,
    condition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    namespace: String,
    cluster: String,
    version: String,
    upgrade_phase: String,
}

/// A registry holding the gauges of `clusters` (under the operator's metric prefix).
pub fn registry<'a>(clusters: impl IntoIterator<Item = &'a OpenBaoCluster>) -> Registry {
    let replicas = Family::<ClusterLabels, Gauge>::default();
    let ready = Family::<ClusterLabels, Gauge>::default();
    let conditions = Family::<ConditionLabels, Gauge>::default();
    let info = Family::<InfoLabels, Gauge>::default();
    for cluster in clusters {
        let labels = ClusterLabels {
            namespace: cluster.metadata.namespace.clone().unwrap_or_default(),
            cluster: cluster.metadata.name.clone().unwrap_or_default(),
        };
        replicas.get_or_create(&labels).set(i64::from(cluster.spec.replicas));
        let Some(status) = &cluster.status else { continue };
        ready.get_or_create(&labels).set(i64::from(status.ready_replicas));
        for condition in &status.conditions {
            conditions
                .get_or_create(&ConditionLabels {
                    namespace: labels.namespace.clone(),
                    cluster: labels.cluster.clone(),
                    condition: condition.type_.clone(),
                })
                .set(i64::from(condition.status == "True"));
        }
        let phase = status.upgrade.as_ref().map(|u| u.phase).unwrap_or_default();
        info.get_or_create(&InfoLabels {
            namespace: labels.namespace.clone(),
            cluster: labels.cluster.clone(),
            version: status.current_version.clone().unwrap_or_default(),
            upgrade_phase: format!("{phase:?}"),
        })
        .set(1);
    }
    let mut registry = Registry::with_prefix("openbao_operator");
    registry.register(
        "cluster_replicas",
        "Servers the cluster asks for (spec.replicas)",
        replicas,
    );
    registry.register("cluster_ready_replicas", "Servers ready (status.readyReplicas)", ready);
    registry.register(
        "cluster_condition",
        "1 when the status condition is True, else 0",
        conditions,
    );
    registry.register(
        "cluster_info",
        "Always 1: the running OpenBao version and the upgrade phase",
        info,
    );
    registry
}

#[cfg(test)]
mod tests {
    use super::registry;
    use openbao_api::OpenBaoCluster;

    fn cluster(name: &str, status: serde_json::Value) -> OpenBaoCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "openbao.org/v1alpha1",
            "kind": "OpenBaoCluster",
            "metadata": {"name": name, "namespace": "tenant"},
            "spec": {"version": "2.7.2", "replicas": 3, "profile": "Development", "storage": {"size": "1Gi"}},
            "status": status,
        }))
        .expect("a cluster")
    }

    fn encoded(clusters: &[OpenBaoCluster]) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry(clusters)).expect("encode");
        out
    }

    #[test]
    fn gauges_say_what_status_says() {
        let upgrading = cluster(
            "a",
            serde_json::json!({
                "readyReplicas": 2,
                "currentVersion": "2.6.2",
                "upgrade": {"phase": "Syncing"},
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "QuorumReady", "message": "",
                     "lastTransitionTime": "2026-11-24T22:00:00Z"},
                    {"type": "Degraded", "status": "False", "reason": "Reconciled", "message": "",
                     "lastTransitionTime": "2026-11-24T22:00:00Z"}
                ]
            }),
        );
        let text = encoded(&[upgrading]);
        for line in [
            r#"openbao_operator_cluster_replicas{namespace="tenant",cluster="a"} 3"#,
            r#"openbao_operator_cluster_ready_replicas{namespace="tenant",cluster="a"} 2"#,
            r#"openbao_operator_cluster_condition{namespace="tenant",cluster="a",condition="Available"} 1"#,
            r#"openbao_operator_cluster_condition{namespace="tenant",cluster="a",condition="Degraded"} 0"#,
            r#"openbao_operator_cluster_info{namespace="tenant",cluster="a",version="2.6.2",upgrade_phase="Syncing"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
    }

    #[test]
    fn a_cluster_not_in_the_cache_has_no_series() {
        let text = encoded(&[]);
        assert!(!text.contains("cluster=\""), "{text}");
        let fresh = encoded(&[cluster("new", serde_json::Value::Null)]);
        assert!(fresh.contains(r#"openbao_operator_cluster_replicas{namespace="tenant",cluster="new"} 3"#));
        assert!(!fresh.contains("cluster_ready_replicas{"), "{fresh}");
    }
}
