//! Prometheus metrics of the operator.

use kube::runtime::reflector::Store;
use openbao_api::OpenBaoCluster;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::{Arc, RwLock};

/// The controller's cache of clusters, while this replica runs the controller (the leader).
type ClusterCache = Arc<RwLock<Option<Store<OpenBaoCluster>>>>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub reason: String,
}

/// One of the operator's controllers (`cluster`, `backup`, `restore`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

/// One cluster's backups.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub namespace: String,
    pub cluster: String,
}

/// Finished backups of one cluster by result (`success`, `failure`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackupLabels {
    pub namespace: String,
    pub cluster: String,
    pub result: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Histogram,
    /// Reconciles that panicked (contained: counted as a failed reconcile of that object).
    pub reconcile_panics: Family<ControllerLabels, Counter>,
    /// 1 while this replica holds the leader Lease and runs the controllers, else 0.
    pub leader: Gauge,
    /// Kubernetes writes (applies, deletes, status patches) the operator sent.
    pub kube_writes: Counter,
    /// Finished backup Jobs by cluster and result.
    pub backups: Family<BackupLabels, Counter>,
    /// How long backups took (as the executor measured them).
    pub backup_duration: Histogram,
    pub backup_last_size_bytes: Family<ClusterLabels, Gauge>,
    /// Unix time of the last successful backup.
    pub backup_last_success_timestamp: Family<ClusterLabels, Gauge>,
    pub backup_consecutive_failures: Family<ClusterLabels, Gauge>,
    pub registry: Arc<Registry>,
    /// Source of the per-cluster gauges (`cluster_metrics`), read at scrape time.
    clusters: ClusterCache,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Family::<ResultLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let kube_writes = Counter::default();
        let reconcile_panics = Family::<ControllerLabels, Counter>::default();
        let leader = Gauge::default();
        let mut registry = Registry::with_prefix("openbao_operator");
        registry.register(
            "reconcile_panics",
            "Reconciles that panicked, by controller",
            reconcile_panics.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and runs the controllers",
            leader.clone(),
        );
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles by reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_duration.clone(),
        );
        registry.register("kube_writes", "Kubernetes write requests sent", kube_writes.clone());
        let backups = Family::<BackupLabels, Counter>::default();
        let backup_duration = Histogram::new([1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0]);
        let backup_last_size_bytes = Family::<ClusterLabels, Gauge>::default();
        let backup_last_success_timestamp = Family::<ClusterLabels, Gauge>::default();
        let backup_consecutive_failures = Family::<ClusterLabels, Gauge>::default();
        registry.register("backups", "Finished backup Jobs by result", backups.clone());
        registry.register(
            "backup_duration_seconds",
            "Duration of a backup as its executor measured it",
            backup_duration.clone(),
        );
        registry.register(
            "backup_last_size_bytes",
            "Size of the last successful backup",
            backup_last_size_bytes.clone(),
        );
        registry.register(
            "backup_last_success_timestamp_seconds",
            "Unix time of the last successful backup",
            backup_last_success_timestamp.clone(),
        );
        registry.register(
            "backup_consecutive_failures",
            "Failed backups in a row",
            backup_consecutive_failures.clone(),
        );
        Self {
            reconciles,
            reconcile_errors,
            reconcile_duration,
            reconcile_panics,
            leader,
            kube_writes,
            backups,
            backup_duration,
            backup_last_size_bytes,
            backup_last_success_timestamp,
            backup_consecutive_failures,
            registry: Arc::new(registry),
            clusters: ClusterCache::default(),
        }
    }
}

impl Metrics {
    /// Serve per-cluster gauges from the controller's cache (`None` when the controller stops).
    pub fn watch_clusters(&self, store: Option<Store<OpenBaoCluster>>) {
        *self.clusters.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = store;
    }

    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let clusters = self
            .clusters
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(|store| store.state())
            .unwrap_or_default();
        let per_cluster = super::cluster_metrics::registry(clusters.iter().map(|c| c.as_ref()));
        let mut out = String::new();
        encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &per_cluster))
            .and_then(|()| encode_eof(&mut out))
            .expect("metrics encode to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{BackupLabels, ClusterLabels, ErrorLabels, Metrics, ResultLabels};

    /// Names in the Grafana dashboard (charts/openbao-operator/dashboards/), without the sample suffixes.
    fn dashboard_metric_families() -> Vec<String> {
        let dashboard = include_str!("../../../../charts/openbao-operator/dashboards/openbao-operator.json");
        let mut names: Vec<String> = dashboard
            .match_indices("openbao_operator_")
            .map(|(at, _)| {
                dashboard[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect::<String>()
            })
            .map(|name| {
                ["_bucket", "_total"]
                    .iter()
                    .fold(name, |n, suffix| n.strip_suffix(suffix).map(String::from).unwrap_or(n))
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    #[test]
    fn every_metric_of_the_dashboard_is_exported() {
        // A family is exported once it has a series: one of each, as a running operator has.
        let metrics = Metrics::default();
        let cluster = ClusterLabels {
            namespace: "ns".into(),
            cluster: "c".into(),
        };
        metrics
            .reconciles
            .get_or_create(&ResultLabels { result: "ok".into() })
            .inc();
        metrics
            .reconcile_errors
            .get_or_create(&ErrorLabels { reason: "r".into() })
            .inc();
        metrics
            .backups
            .get_or_create(&BackupLabels {
                namespace: "ns".into(),
                cluster: "c".into(),
                result: "success".into(),
            })
            .inc();
        metrics.backup_last_size_bytes.get_or_create(&cluster).set(1);
        metrics.backup_last_success_timestamp.get_or_create(&cluster).set(1);
        metrics.backup_consecutive_failures.get_or_create(&cluster).set(0);
        let cluster: openbao_api::OpenBaoCluster = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {"version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"}},
            "status": {"readyReplicas": 3, "conditions": [{"type": "Available", "status": "True",
                "reason": "AllReplicasReady", "message": "", "lastTransitionTime": "2026-11-24T22:00:00Z"}]}
        }))
        .expect("a cluster");
        let (store, mut writer) = kube::runtime::reflector::store();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(cluster));
        metrics.watch_clusters(Some(store));
        let exported = metrics.encode();
        assert_eq!(exported.matches("# EOF").count(), 1, "one OpenMetrics end:\n{exported}");
        assert!(exported.ends_with("# EOF\n"));
        let families = dashboard_metric_families();
        assert!(families.len() >= 8, "dashboard families: {families:?}");
        for family in families {
            assert!(
                exported.contains(&format!("# TYPE {family} ")),
                "the dashboard queries {family}, which the operator does not export:\n{exported}"
            );
        }
    }
}
