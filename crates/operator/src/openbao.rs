//! How the operator reaches a cluster's OpenBao and what it does there: it logs in with a
//! short-lived token of its own service account (TokenRequest, audience
//! [`names::jwt_audience`] of that cluster) over HTTPS verified against the cluster's CA, and
//! keeps OpenBao's trusted service-account keys in step with the apiserver's, so that rotating
//! the signing keys never locks anyone out.
//!
//! The cluster's OpenBao runs an image the tenant chooses, so every token sent there is
//! presumed captured. The per-cluster audience makes a captured token useless elsewhere, and
//! [`operator_token`] asks the apiserver first whether it would accept such a token itself.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use openbao_api::names;
use openbao_client::{BaoClient, ClientConfig};
use openbao_render::{API_PORT, OperatorIdentity, selfinit::JWT_MOUNT};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a cluster's API answers, as seen from the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    /// Connect here instead of resolving the URL's host (TLS still verifies the host name).
    pub resolve_to: Option<IpAddr>,
}

/// Maps (cluster, namespace) to its endpoint. In a cluster: the public Service.
pub type EndpointResolver = Arc<dyn Fn(&str, &str) -> Endpoint + Send + Sync>;

pub fn in_cluster_endpoint(cluster: &str, namespace: &str) -> Endpoint {
    Endpoint {
        url: format!(
            "https://{}.{namespace}.svc:{API_PORT}",
            openbao_api::names::public_service(cluster)
        ),
        resolve_to: None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("requesting a service-account token for {service_account} failed: {source}")]
    TokenRequest {
        service_account: String,
        source: kube::Error,
    },
    #[error("the TokenRequest for {0} returned no token")]
    EmptyToken(String),
    #[error("asking the apiserver whether it accepts tokens with audience {audience} (TokenReview) failed: {source}")]
    TokenReview { audience: String, source: kube::Error },
    #[error(
        "the Kubernetes apiserver itself accepts service-account tokens with audience {audience}: \
         the operator sends no such token to OpenBao (it would let the server log in to the \
         apiserver as the operator); remove {audience} from the apiserver's --api-audiences"
    )]
    AudienceUnsafe { audience: String },
    #[error("OpenBao at {url}: {source}")]
    OpenBao {
        url: String,
        source: openbao_client::BaoError,
    },
}

/// Audiences the apiserver was shown not to accept, in this process. An audience is asked
/// about once per cluster and process: the apiserver's audiences change only with its flags.
#[derive(Debug, Default)]
pub struct SafeAudiences(Mutex<HashSet<String>>);

impl SafeAudiences {
    fn contains(&self, audience: &str) -> bool {
        self.0.lock().expect("audience set poisoned").contains(audience)
    }
    fn insert(&self, audience: &str) {
        self.0
            .lock()
            .expect("audience set poisoned")
            .insert(audience.to_string());
    }
}

/// The token the operator sends to cluster `namespace/cluster`: its own service account's, for
/// that cluster's audience, and only once the apiserver refused to authenticate a token with
/// that audience (a TokenReview without `spec.audiences` checks the apiserver's own).
pub async fn operator_token(
    client: &kube::Client,
    operator: &OperatorIdentity,
    safe: &SafeAudiences,
    namespace: &str,
    cluster: &str,
) -> Result<String, AccessError> {
    let audience = names::jwt_audience(namespace, cluster);
    let token = service_account_token(client, operator, &audience).await?;
    if !safe.contains(&audience) {
        if apiserver_accepts(client, &token, &audience).await? {
            return Err(AccessError::AudienceUnsafe { audience });
        }
        safe.insert(&audience);
    }
    Ok(token)
}

/// Whether the apiserver authenticates `token` (whose audience is `audience`) for itself.
async fn apiserver_accepts(client: &kube::Client, token: &str, audience: &str) -> Result<bool, AccessError> {
    let review: TokenReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    }))
    .expect("TokenReview literal");
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|source| AccessError::TokenReview {
            audience: audience.to_string(),
            source,
        })?;
    Ok(reviewed.status.and_then(|s| s.authenticated).unwrap_or(false))
}

/// Whether OpenBao refused a login because of the token's audience: the roles were written
/// for another audience (e.g. by an older operator, or in the cluster a backup came from).
pub fn is_audience_refusal(error: &AccessError) -> bool {
    match error {
        AccessError::OpenBao { source, .. } => {
            source.status() == Some(400) && source.api_errors().iter().any(|e| e.contains("invalid audience"))
        }
        _ => false,
    }
}

/// A token for the operator's own service account, for `audience`, valid ten minutes. Only
/// [`operator_token`] hands one to a cluster.
async fn service_account_token(
    client: &kube::Client,
    operator: &OperatorIdentity,
    audience: &str,
) -> Result<String, AccessError> {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), &operator.namespace);
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": [audience], "expirationSeconds": 600},
    }))
    .expect("TokenRequest literal");
    let sa = format!("{}/{}", operator.namespace, operator.service_account);
    let response: TokenRequest = api
        .create_subresource("token", &operator.service_account, &PostParams::default(), &request)
        .await
        .map_err(|source| AccessError::TokenRequest {
            service_account: sa.clone(),
            source,
        })?;
    response
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or(AccessError::EmptyToken(sa))
}

/// Logs in to OpenBao as role `openbao-operator`.
pub async fn login(endpoint: &Endpoint, ca_bundle_pem: &str, jwt: &str) -> Result<BaoClient, AccessError> {
    login_as(endpoint, ca_bundle_pem, jwt, "openbao-operator").await
}

/// Logs in to OpenBao as JWT role `role` (the operator's own service account is bound to
/// `openbao-operator` and, for seal migrations, `openbao-operator-seal-migration`).
pub async fn login_as(
    endpoint: &Endpoint,
    ca_bundle_pem: &str,
    jwt: &str,
    role: &str,
) -> Result<BaoClient, AccessError> {
    let wrap = |source| AccessError::OpenBao {
        url: endpoint.url.clone(),
        source,
    };
    let mut config = ClientConfig::new(endpoint.url.clone())
        .with_ca_pem(ca_bundle_pem.as_bytes().to_vec())
        .with_timeout(Duration::from_secs(10));
    if let Some(ip) = endpoint.resolve_to {
        config = config.with_resolve_to(ip);
    }
    let client = BaoClient::new(config).map_err(wrap)?;
    let login = client.login_jwt(JWT_MOUNT, role, jwt).await.map_err(wrap)?;
    Ok(client.with_token(login.token))
}

/// The pod a standby's redirect names, when it is a server of `namespace`:
/// `https://<pod>.<cluster>.<namespace>.svc:<port>/…` gives `<pod>`. Anything else (another
/// namespace, another domain, plain HTTP) is not followed.
pub fn redirect_to_pod(location: &str, namespace: &str) -> Option<String> {
    let url: http::Uri = location.parse().ok()?;
    let host = url.host()?;
    let labels: Vec<&str> = host.split('.').collect();
    let [pod, _cluster, ns, "svc", ..] = labels.as_slice() else {
        return None;
    };
    if url.scheme_str() != Some("https") || *ns != namespace || labels.len() > 6 {
        return None;
    }
    Some(pod.to_string())
}

/// What a key sync did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySync {
    Unchanged,
    Updated { added: usize, removed: usize },
}

fn normalized(keys: &[String]) -> Vec<String> {
    let mut v: Vec<String> = keys.iter().map(|k| k.trim().to_string()).collect();
    v.sort();
    v.dedup();
    v
}

/// Makes OpenBao trust exactly the apiserver's current service-account keys. During a key
/// rotation the apiserver publishes old and new keys together, so following it step by step
/// never removes a key that still signs valid tokens.
pub async fn sync_jwt_keys(client: &BaoClient, issuer: &str, current_keys: &[String]) -> Result<KeySync, AccessError> {
    let path = format!("auth/{JWT_MOUNT}/config");
    let wrap = |source| AccessError::OpenBao {
        url: client.base_url().to_string(),
        source,
    };
    let config = client.read(&path).await.map_err(wrap)?.unwrap_or_default();
    let trusted: Vec<String> = config["data"]["jwt_validation_pubkeys"]
        .as_array()
        .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let (trusted, wanted) = (normalized(&trusted), normalized(current_keys));
    let bound_issuer = config["data"]["bound_issuer"].as_str().unwrap_or(issuer).to_string();
    if trusted == wanted && bound_issuer == issuer {
        return Ok(KeySync::Unchanged);
    }
    let added = wanted.iter().filter(|k| !trusted.contains(k)).count();
    let removed = trusted.iter().filter(|k| !wanted.contains(k)).count();
    client
        .write(
            &path,
            &serde_json::json!({"bound_issuer": issuer, "jwt_validation_pubkeys": wanted}),
        )
        .await
        .map_err(wrap)?;
    Ok(KeySync::Updated { added, removed })
}

#[cfg(test)]
mod tests {
    use super::redirect_to_pod;

    #[test]
    fn only_redirects_to_servers_of_the_namespace_are_followed() {
        assert_eq!(
            redirect_to_pod("https://openbao-0.openbao.lane.svc:8200/v1/auth/jwt/login", "lane").as_deref(),
            Some("openbao-0")
        );
        assert_eq!(
            redirect_to_pod("https://b-v2-7-2-1.b.lane.svc.cluster.local:8200/v1/x", "lane").as_deref(),
            Some("b-v2-7-2-1")
        );
        for elsewhere in [
            "https://openbao-0.openbao.other.svc:8200/v1/x",
            "http://openbao-0.openbao.lane.svc:8200/v1/x",
            "https://evil.example.com/v1/x",
            "https://openbao-0.lane.svc:8200/v1/x",
            "not a url",
        ] {
            assert_eq!(redirect_to_pod(elsewhere, "lane"), None, "{elsewhere}");
        }
    }
}
