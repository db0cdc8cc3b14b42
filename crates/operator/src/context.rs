//! What every reconcile shares: the Kubernetes client, who the operator is, what the
//! apiserver offers, and the metrics.

use kube::Client;
use kube::runtime::events::Reporter;
use openbao_render::{JwtTrust, OperatorIdentity};
use tokio::sync::RwLock;

use crate::runtime::discovery;
use crate::runtime::metrics::Metrics;

pub struct Context {
    pub client: Client,
    pub operator: OperatorIdentity,
    pub reporter: Reporter,
    pub metrics: Metrics,
    /// Whether the Gateway API (HTTPRoute, BackendTLSPolicy) is served by this apiserver.
    pub gateway_api: bool,
    /// Only reconcile clusters in this namespace (all namespaces when `None`).
    pub watch_namespace: Option<String>,
    /// The apiserver's service-account issuer and keys; refreshed when a reconcile needs them.
    jwt_trust: RwLock<Option<JwtTrust>>,
}

impl Context {
    pub async fn new(client: Client, operator: OperatorIdentity, metrics: Metrics) -> Self {
        let gateway_api = discovery::gateway_api_served(&client).await;
        Self {
            client,
            operator,
            reporter: Reporter {
                controller: crate::FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
            metrics,
            gateway_api,
            watch_namespace: None,
            jwt_trust: RwLock::new(None),
        }
    }

    /// The cluster's service-account trust, discovered once and then cached.
    pub async fn jwt_trust(&self) -> Result<JwtTrust, discovery::DiscoveryError> {
        if let Some(t) = self.jwt_trust.read().await.clone() {
            return Ok(t);
        }
        let trust = discovery::service_account_trust(&self.client).await?;
        *self.jwt_trust.write().await = Some(trust.clone());
        Ok(trust)
    }
}
