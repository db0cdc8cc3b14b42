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
