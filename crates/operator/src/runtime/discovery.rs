//! What the operator learns from the apiserver: the service-account issuer with its signing
//! keys (so OpenBao can verify Kubernetes JWTs), where pods reach the apiserver (for the
//! servers' NetworkPolicy) and whether the Gateway API is installed.

use kube::Client;
use openbao_render::JwtTrust;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("reading {path} from the apiserver failed: {source}")]
    Request { path: &'static str, source: kube::Error },
    #[error("the apiserver's OIDC discovery document has no issuer: {0}")]
    NoIssuer(String),
    #[error("the apiserver's service-account JWKS is unusable: {0}")]
    Jwks(#[from] openbao_render::jwks::JwksError),
    #[error("reading {what} (where pods reach the apiserver) failed: {source}")]
    ApiServerAddress { what: &'static str, source: kube::Error },
    #[error("Service default/kubernetes has no cluster IP or no port: pods cannot reach the apiserver through it")]
    ApiServerServiceUnusable,
}

async fn get_text(client: &Client, path: &'static str) -> Result<String, DiscoveryError> {
    let req = http::Request::get(path).body(Vec::new()).expect("static request");
    client
        .request_text(req)
        .await
        .map_err(|source| DiscoveryError::Request { path, source })
}

pub async fn service_account_trust(client: &Client) -> Result<JwtTrust, DiscoveryError> {
    let doc = get_text(client, "/.well-known/openid-configuration").await?;
    let issuer = serde_json::from_str::<serde_json::Value>(&doc)
        .ok()
        .and_then(|v| v["issuer"].as_str().map(str::to_string))
        .ok_or_else(|| DiscoveryError::NoIssuer(doc.chars().take(200).collect()))?;
    let jwks = get_text(client, "/openid/v1/jwks").await?;
    Ok(JwtTrust {
        issuer,
        public_keys_pem: openbao_render::jwks::public_keys_pem(&jwks)?,
    })
}

/// Where pods reach the apiserver: the `default/kubernetes` Service's cluster IPs on its ports,
/// and every ready endpoint of its EndpointSlices on theirs. A NetworkPolicy engine that sees
/// packets after kube-proxy's translation matches the endpoints, one that sees them before
/// matches the Service. No endpoint at all (an apiserver that publishes none) leaves the
/// Service's address only: nothing behind it could be reached anyway.
pub async fn apiserver_addresses(client: &Client) -> Result<Vec<std::net::SocketAddr>, DiscoveryError> {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let service = kube::Api::<Service>::namespaced(client.clone(), "default")
        .get(KUBERNETES_SERVICE)
        .await
        .map_err(|source| DiscoveryError::ApiServerAddress {
            what: "Service default/kubernetes",
            source,
        })?;
    let slices = kube::Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .list(&kube::api::ListParams::default().labels(&format!("kubernetes.io/service-name={KUBERNETES_SERVICE}")))
        .await
        .map_err(|source| DiscoveryError::ApiServerAddress {
            what: "the EndpointSlices of Service default/kubernetes",
            source,
        })?;
    let spec = service.spec.unwrap_or_default();
    let ips = spec
        .cluster_ips
        .or(spec.cluster_ip.map(|ip| vec![ip]))
        .unwrap_or_default();
    let ports = spec.ports.unwrap_or_default();
    let mut addresses = socket_addrs(ips.iter(), ports.iter().map(|p| p.port));
    if addresses.is_empty() {
        return Err(DiscoveryError::ApiServerServiceUnusable);
    }
    for slice in slices.items {
        if slice.address_type == "FQDN" {
            continue;
        }
        let ports: Vec<i32> = slice.ports.iter().flatten().filter_map(|p| p.port).collect();
        let ready = slice
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false));
        let ips = ready.flat_map(|e| e.addresses.iter());
        for a in socket_addrs(ips, ports.iter().copied()) {
            if !addresses.contains(&a) {
                addresses.push(a);
            }
        }
    }
    Ok(addresses)
}

/// The Service every cluster has in `default` for its apiserver.
const KUBERNETES_SERVICE: &str = "kubernetes";

/// Every parseable IP on every valid port (a headless `None` IP and port 0 are skipped).
fn socket_addrs<'a>(
    ips: impl Iterator<Item = &'a String> + Clone,
    ports: impl Iterator<Item = i32>,
) -> Vec<std::net::SocketAddr> {
    let ports: Vec<u16> = ports
        .filter_map(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .collect();
    ips.filter_map(|ip| ip.parse::<std::net::IpAddr>().ok())
        .flat_map(|ip| ports.iter().map(move |p| std::net::SocketAddr::new(ip, *p)))
        .collect()
}

/// True when `gateway.networking.k8s.io/v1` serves both HTTPRoute and BackendTLSPolicy.
pub async fn gateway_api_served(client: &Client) -> bool {
    match client.list_api_group_resources("gateway.networking.k8s.io/v1").await {
        Ok(list) => {
            let has = |kind: &str| list.resources.iter().any(|r| r.kind == kind);
            has("HTTPRoute") && has("BackendTLSPolicy")
        }
        Err(_) => false,
    }
}

/// How long an optional API's presence is believed: one discovery request per API per this
/// long, and an API installed later is used within it.
pub const OPTIONAL_API_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Whether an optional API (a CRD another project installs, such as the Prometheus Operator's
/// ServiceMonitor) is served, asked at most once per `ttl`. Reconciles run often: an absent API
/// must cost neither an error nor a request each time, and is simply not used.
pub struct OptionalApi {
    group_version: &'static str,
    kind: &'static str,
    ttl: std::time::Duration,
    cached: std::sync::Mutex<Option<(bool, std::time::Instant)>>,
}

impl OptionalApi {
    pub fn new(group_version: &'static str, kind: &'static str, ttl: std::time::Duration) -> Self {
        Self {
            group_version,
            kind,
            ttl,
            cached: std::sync::Mutex::new(None),
        }
    }

    /// `monitoring.coreos.com/v1` ServiceMonitor.
    pub fn service_monitors(ttl: std::time::Duration) -> Self {
        Self::new("monitoring.coreos.com/v1", "ServiceMonitor", ttl)
    }

    /// `cert-manager.io/v1` Certificate.
    pub fn certificates(ttl: std::time::Duration) -> Self {
        Self::new("cert-manager.io/v1", "Certificate", ttl)
    }

    /// Whether the apiserver serves the kind, from the cache while it is fresh. A failed
    /// discovery (the group is absent: 404) counts as not served until the next one.
    pub async fn served(&self, client: &Client) -> bool {
        if let Some((served, at)) = *self.cached.lock().expect("optional API cache poisoned")
            && at.elapsed() < self.ttl
        {
            return served;
        }
        let served = match client.list_api_group_resources(self.group_version).await {
            Ok(list) => list.resources.iter().any(|r| r.kind == self.kind),
            Err(e) => {
                tracing::debug!(group_version = self.group_version, error = %e, "optional API not served");
                false
            }
        };
        *self.cached.lock().expect("optional API cache poisoned") = Some((served, std::time::Instant::now()));
        served
    }
}
