//! Attachment to a shared, TLS-terminating Gateway: an HTTPRoute to the public Service and a
//! BackendTLSPolicy that makes the Gateway re-encrypt and verify OpenBao against the cluster CA.

use gateway_api::backendtlspolicies::BackendTlsPolicy;
use gateway_api::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::ConfigMap;
use openbao_api::{GatewaySpec, names};
use serde_json::json;
use std::collections::BTreeMap;

use super::{meta, typed};
use crate::{API_PORT, Cluster};

fn enabled<'a>(cluster: &Cluster<'a>) -> Option<&'a GatewaySpec> {
    cluster.spec.gateway.as_ref().filter(|g| g.enabled)
}

pub fn http_route(cluster: &Cluster) -> Option<HttpRoute> {
    let g = enabled(cluster)?;
    let mut parent = json!({
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": g.gateway_ref.name,
        "namespace": g.gateway_ref.namespace.as_deref().unwrap_or(cluster.namespace),
    });
    if let Some(listener) = &g.listener_name {
        parent["sectionName"] = json!(listener);
    }
    let mut route: HttpRoute = typed(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {},
        "spec": {
            "parentRefs": [parent],
            "hostnames": g.hostname.iter().collect::<Vec<_>>(),
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": g.path}}],
                "backendRefs": [{"group": "", "kind": "Service", "name": names::public_service(cluster.name), "port": API_PORT}],
            }],
        }
    }));
    route.metadata = meta(cluster, names::http_route(cluster.name), "gateway");
    Some(route)
}

/// The name the Gateway verifies on OpenBao's certificate.
pub fn backend_hostname(cluster: &Cluster, g: &GatewaySpec) -> String {
    g.backend_tls
        .hostname
        .clone()
        .unwrap_or_else(|| format!("{}.{}.svc", names::public_service(cluster.name), cluster.namespace))
}

pub fn backend_tls_policy(cluster: &Cluster) -> Option<BackendTlsPolicy> {
    let g = enabled(cluster).filter(|g| g.backend_tls.enabled)?;
    let mut policy: BackendTlsPolicy = typed(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "BackendTLSPolicy",
        "metadata": {},
        "spec": {
            "targetRefs": [{"group": "", "kind": "Service", "name": names::public_service(cluster.name)}],
            "validation": {
                "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": names::gateway_ca_config_map(cluster.name)}],
                "hostname": backend_hostname(cluster, g),
            },
        }
    }));
    policy.metadata = meta(cluster, names::backend_tls_policy(cluster.name), "gateway");
    Some(policy)
}

/// ConfigMap `<c>-tls-ca`: the trust bundle, where BackendTLSPolicy can reference it.
pub fn gateway_ca_config_map(cluster: &Cluster, bundle_pem: &str) -> Option<ConfigMap> {
    enabled(cluster).filter(|g| g.backend_tls.enabled)?;
    Some(ConfigMap {
        metadata: meta(cluster, names::gateway_ca_config_map(cluster.name), "gateway"),
        data: Some(BTreeMap::from([("ca.crt".to_string(), bundle_pem.to_string())])),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures;

    #[test]
    fn route_attaches_to_the_shared_gateway_listener() {
        let spec = fixtures::spec(json!({"gateway": {
            "gatewayRef": {"name": "edge", "namespace": "edge-system"},
            "hostname": "bao.lane.local", "listenerName": "https"}}));
        let c = fixtures::cluster(&spec);
        let route = serde_json::to_value(http_route(&c).unwrap()).unwrap();
        assert_eq!(route["kind"], "HTTPRoute");
        assert_eq!(route["spec"]["parentRefs"][0]["namespace"], "edge-system");
        assert_eq!(route["spec"]["parentRefs"][0]["sectionName"], "https");
        assert_eq!(route["spec"]["hostnames"][0], "bao.lane.local");
        assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["name"], "vault-public");
        let policy = serde_json::to_value(backend_tls_policy(&c).unwrap()).unwrap();
        assert_eq!(policy["spec"]["validation"]["hostname"], "vault-public.team-a.svc");
        assert_eq!(
            policy["spec"]["validation"]["caCertificateRefs"][0]["name"],
            "vault-tls-ca"
        );
    }

    #[test]
    fn nothing_without_gateway() {
        let spec = fixtures::spec(json!({}));
        let c = fixtures::cluster(&spec);
        assert!(http_route(&c).is_none() && backend_tls_policy(&c).is_none());
        assert!(gateway_ca_config_map(&c, "pem").is_none());
    }
}
