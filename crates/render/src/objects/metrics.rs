//! Service `<c>-metrics`: OpenBao's own metrics for Prometheus, and the Prometheus Operator's
//! ServiceMonitor `<c>-metrics` that scrapes it.

use k8s_openapi::api::core::v1::Service;
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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
            "ports": [{"name": METRICS_PORT_NAME, "port": API_PORT, "targetPort": API_PORT, "appProtocol": "https"}],
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

/// The port name of the metrics Service, which the ServiceMonitor scrapes.
pub const METRICS_PORT_NAME: &str = "https-metrics";

/// `monitoring.coreos.com/v1` ServiceMonitor, the part the operator writes. Its schema is the
/// Prometheus Operator's CRD; the fields are kept as JSON here (no second copy of that schema).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "ServiceMonitor",
    namespaced,
    schema = "disabled"
)]
pub struct ServiceMonitorBody {
    pub selector: Value,
    pub endpoints: Vec<Value>,
}

/// The ServiceMonitor, when `spec.telemetry.serviceMonitor` is enabled: every server behind the
/// metrics Service, over HTTPS verified with the cluster's CA bundle (`ca.crt` of the server TLS
/// Secret, which holds no CA key) against the headless Service's name, a SAN of the server
/// certificate the operator issues (an External certificate must carry it too).
pub fn service_monitor(cluster: &Cluster) -> Option<ServiceMonitor> {
    let telemetry = cluster.spec.telemetry.as_ref()?;
    let wanted = telemetry.service_monitor.as_ref().filter(|m| m.enabled)?;
    let mut selector = labels::selector(cluster.name);
    selector.insert(labels::COMPONENT_LABEL.to_string(), "metrics".to_string());
    let server_name = format!("{}.{}.svc", names::headless_service(cluster.name), cluster.namespace);
    let mut monitor = ServiceMonitor::new(
        &names::metrics_service(cluster.name),
        ServiceMonitorBody {
            selector: json!({"matchLabels": selector}),
            endpoints: vec![json!({
                "port": METRICS_PORT_NAME,
                "scheme": "https",
                "path": METRICS_PATH,
                "params": {"format": ["prometheus"]},
                "interval": wanted.interval,
                "scrapeTimeout": wanted.scrape_timeout,
                "tlsConfig": {
                    "ca": {"secret": {"name": names::tls_server_secret(cluster.name), "key": "ca.crt"}},
                    "serverName": server_name,
                },
            })],
        },
    );
    monitor.metadata = meta(cluster, names::metrics_service(cluster.name), "metrics");
    Some(monitor)
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

    #[test]
    fn a_service_monitor_only_when_enabled_scraping_the_metrics_service() {
        for telemetry in [
            json!({}),
            json!({"telemetry": {}}),
            json!({"telemetry": {"serviceMonitor": {"enabled": false}}}),
        ] {
            assert!(
                service_monitor(&fixtures::cluster(&fixtures::spec(telemetry.clone()))).is_none(),
                "{telemetry}"
            );
        }
        let spec = fixtures::spec(json!({"telemetry": {"serviceMonitor": {"interval": "1m"}}}));
        let cluster = fixtures::cluster(&spec);
        let monitor = service_monitor(&cluster).unwrap();
        let svc = metrics_service(&cluster).unwrap();
        assert_eq!(monitor.metadata.name, svc.metadata.name);
        assert_eq!(monitor.metadata.owner_references, svc.metadata.owner_references);
        // The selector picks the metrics Service by its labels, and nothing else of the cluster.
        let selector = &monitor.spec.selector["matchLabels"];
        for (k, v) in selector.as_object().unwrap() {
            assert_eq!(svc.metadata.labels.as_ref().unwrap()[k], v.as_str().unwrap(), "{k}");
        }
        assert_eq!(selector[labels::COMPONENT_LABEL], "metrics");
        let endpoint = &monitor.spec.endpoints[0];
        assert_eq!(
            endpoint["port"],
            svc.spec.unwrap().ports.unwrap()[0].name.clone().unwrap()
        );
        assert_eq!(endpoint["path"], METRICS_PATH);
        assert_eq!(endpoint["interval"], "1m");
        assert_eq!(endpoint["scrapeTimeout"], "10s");
        assert_eq!(endpoint["tlsConfig"]["ca"]["secret"]["name"], "vault-tls-server");
        let json = serde_json::to_value(&monitor).unwrap();
        assert_eq!(json["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(json["kind"], "ServiceMonitor");
    }
}
