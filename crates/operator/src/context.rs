//! What every reconcile shares: the Kubernetes client, who the operator is, what the
//! apiserver offers, and the metrics.

use kube::Client;
use kube::runtime::events::Reporter;
use openbao_render::{JwtTrust, OperatorIdentity};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

use crate::openbao::EndpointResolver;

use crate::runtime::discovery;
use crate::runtime::metrics::Metrics;

pub struct Context {
    pub client: Client,
    pub operator: OperatorIdentity,
    pub reporter: Reporter,
    pub metrics: Metrics,
    /// Whether the Gateway API (HTTPRoute, BackendTLSPolicy) is served by this apiserver.
    pub gateway_api: bool,
    /// Whether the Prometheus Operator's ServiceMonitor is served (asked again every
    /// [`discovery::OPTIONAL_API_TTL`]; tests may shorten it before sharing the context).
    pub service_monitors: discovery::OptionalApi,
    /// Only reconcile clusters in this namespace (all namespaces when `None`).
    pub watch_namespace: Option<String>,
    /// How to reach a cluster's OpenBao API (the public Service unless a test says otherwise).
    pub endpoints: EndpointResolver,
    /// Image of the executor Jobs (the operator's own image), e.g. for pre-upgrade snapshots.
    pub executor_image: String,
    /// Cluster token audiences the apiserver does not accept (asked once per process).
    pub safe_audiences: crate::openbao::SafeAudiences,
    /// The Events published recently (see [`crate::kube_write::Writer::event`]).
    pub published_events: crate::kube_write::PublishedEvents,
    /// What each prune kept last (see [`crate::kube_write::Writer::prune`]).
    pub pruned: crate::kube_write::Pruned,
    /// The apiserver's service-account issuer and keys, with when they were read.
    jwt_trust: RwLock<Option<(JwtTrust, Instant)>>,
}

/// How long discovered service-account keys are trusted before they are read again. Key
/// rotations publish the new key long before it signs, so minutes are plenty.
const TRUST_REFRESH: Duration = Duration::from_secs(120);

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
            service_monitors: discovery::OptionalApi::service_monitors(discovery::OPTIONAL_API_TTL),
            watch_namespace: None,
            endpoints: Arc::new(crate::openbao::in_cluster_endpoint),
            executor_image: crate::DEFAULT_EXECUTOR_IMAGE.to_string(),
            safe_audiences: Default::default(),
            published_events: Default::default(),
            pruned: Default::default(),
            jwt_trust: RwLock::new(None),
        }
    }

    /// An API over what this operator watches: `watch_namespace` alone when set (the operator
    /// then holds namespaced Roles only, and a cluster-wide list would be refused), else every
    /// namespace.
    pub fn watched<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.watch_namespace {
            Some(ns) => kube::Api::namespaced(self.client.clone(), ns),
            None => kube::Api::all(self.client.clone()),
        }
    }

    /// The cluster's service-account trust, cached (good enough for rendering a bootstrap).
    pub async fn jwt_trust(&self) -> Result<JwtTrust, discovery::DiscoveryError> {
        if let Some((t, _)) = self.jwt_trust.read().await.clone() {
            return Ok(t);
        }
        self.read_jwt_trust().await
    }

    /// The trust, read again when older than [`TRUST_REFRESH`] (for keeping OpenBao in step).
    pub async fn refreshed_jwt_trust(&self) -> Result<JwtTrust, discovery::DiscoveryError> {
        if let Some((t, at)) = self.jwt_trust.read().await.clone()
            && at.elapsed() < TRUST_REFRESH
        {
            return Ok(t);
        }
        self.read_jwt_trust().await
    }

    async fn read_jwt_trust(&self) -> Result<JwtTrust, discovery::DiscoveryError> {
        let trust = discovery::service_account_trust(&self.client).await?;
        *self.jwt_trust.write().await = Some((trust.clone(), Instant::now()));
        Ok(trust)
    }
}
