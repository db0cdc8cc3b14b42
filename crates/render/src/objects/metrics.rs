//! Service `<c>-metrics`: OpenBao's own metrics for Prometheus.

use k8s_openapi::api::core::v1::Service;
use serde_json::json;

use super::{meta, typed};
use crate::{API_PORT, Cluster, labels};
use openbao_api::names;

/// Where each server serves its metrics (on the API port, over TLS); scrapers add
/// `?format=prometheus`.
pub const METRICS_PATH: &str = "/v1/sys/metrics";

/// The metrics Service, when `spec.telemetry` is set. Headless: Prometheus (a ServiceMonitor
/// selecting `app.kubernetes.io/component: metrics`, or the `prometheus.io/*` annotations)
/// scrapes every server through its endpoints, standbys included: each reports its own raft
/// and seal state. Every set of servers is selected, so blue/green servers are scraped too.
pub fn metrics_service(cluster: &Cluster) -> Option<Service> {
    cluster.spec.telemetry.as_ref()?;
    let mut svc: Service = typed(json!({
        "spec": {
            "clusterIP": "None",
            "selector": labels::selector(cluster.name),
            "ports": [{"name": "https-metrics", "port": API_PORT, "targetPort": API_PORT, "appProtocol": "https"}],
        }
    }));
    let mut metadata = meta(cluster, names::metrics_service(cluster.name), "metrics");
    metadata.annotations = Some(
        [
            ("prometheus.io/scrape", "true"),
            ("prometheus.io/scheme", "https"),
            ("prometheus.io/port", "8200"),
            ("prometheus.io/path", METRICS_PATH),
            ("prometheus.io/param_format", "prometheus"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    svc.metadata = metadata;
    Some(svc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures;

    #[test]
    fn only_with_telemetry_and_selecting_every_server() {
        let plain = fixtures::spec(json!({}));
        assert!(metrics_service(&fixtures::cluster(&plain)).is_none());
        let spec = fixtures::spec(json!({"telemetry": {}}));
        let svc = metrics_service(&fixtures::cluster(&spec)).unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("vault-metrics"));
        assert_eq!(
            svc.metadata.labels.as_ref().unwrap()[labels::COMPONENT_LABEL],
            "metrics"
        );
        let s = svc.spec.unwrap();
        assert_eq!(s.selector.unwrap(), labels::selector("vault"));
        assert_eq!(s.ports.unwrap()[0].port, API_PORT);
        assert_eq!(
            svc.metadata.annotations.unwrap()["prometheus.io/port"],
            API_PORT.to_string()
        );
    }
}
