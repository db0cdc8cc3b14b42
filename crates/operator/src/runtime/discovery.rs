//! What the operator learns from the apiserver: the service-account issuer with its signing
//! keys (so OpenBao can verify Kubernetes JWTs) and whether the Gateway API is installed.

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
