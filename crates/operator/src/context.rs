//! What every reconcile shares: the Kubernetes client, who the operator is, what the
//! apiserver offers, and the metrics.

use kube::Client;
use kube::runtime::events::Reporter;
use openbao_render::{ClusterNetwork, JwtTrust, OperatorIdentity};
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
    /// Whether cert-manager's Certificate is served (asked like `service_monitors`).
    pub certificates: discovery::OptionalApi,
    /// The ClusterIssuers a cluster's `tls.certManager` may name (the installer's choice; an
    /// Issuer in the cluster's own namespace needs no listing).
    pub cert_manager_cluster_issuers: Vec<String>,
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
    /// The operator's network settings for the servers' NetworkPolicy.
    pub network: NetworkSettings,
    /// The apiserver's service-account issuer and keys, with when they were read.
    jwt_trust: RwLock<Option<(JwtTrust, Instant)>>,
    /// Where pods reach the apiserver, with when it was read.
    apiserver: RwLock<Option<(Vec<std::net::SocketAddr>, Instant)>>,
}

/// Operator-level settings of the servers' NetworkPolicy (flags, or the chart's values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSettings {
    /// Namespace of the cluster DNS pods.
    pub dns_namespace: String,
    /// CIDRs the operator's packets come from when it runs outside the pod network.
    pub external_source_cidrs: Vec<String>,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        Self {
            dns_namespace: openbao_render::DEFAULT_DNS_NAMESPACE.to_string(),
            external_source_cidrs: Vec::new(),
        }
    }
}

/// `s` as a canonical IPv4 or IPv6 CIDR (`192.0.2.10/32`, `2001:db8::/64`; host bits cleared,
/// as the apiserver wants an `ipBlock.cidr`), or why it is none. For the external source CIDRs.
pub fn parse_cidr(s: &str) -> Result<String, String> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let (ip, bits) = s
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: a CIDR needs /<prefix length>"))?;
    let ip: IpAddr = ip.parse().map_err(|_| format!("{s:?}: not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits
        .parse::<u32>()
        .ok()
        .filter(|b| *b <= max)
        .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?;
    let network = match ip {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(
            u32::from(v4) & u32::MAX.checked_shl(32 - bits).unwrap_or(0),
        )),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(
            u128::from(v6) & u128::MAX.checked_shl(128 - bits).unwrap_or(0),
        )),
    };
    Ok(format!("{network}/{bits}"))
}

/// How long the apiserver's addresses are believed: a control plane rarely moves, and a moved
/// one is in every cluster's policy within this long.
pub const APISERVER_REFRESH: Duration = Duration::from_secs(180);

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
            certificates: discovery::OptionalApi::certificates(discovery::OPTIONAL_API_TTL),
            cert_manager_cluster_issuers: Vec::new(),
            watch_namespace: None,
            endpoints: Arc::new(crate::openbao::in_cluster_endpoint),
            executor_image: crate::DEFAULT_EXECUTOR_IMAGE.to_string(),
            safe_audiences: Default::default(),
            published_events: Default::default(),
            pruned: Default::default(),
            network: NetworkSettings::default(),
            jwt_trust: RwLock::new(None),
            apiserver: RwLock::new(None),
        }
    }

    /// What the servers' NetworkPolicy needs besides the spec: the settings, and the
    /// apiserver's addresses, read again when older than [`APISERVER_REFRESH`].
    pub async fn cluster_network(&self) -> Result<ClusterNetwork, discovery::DiscoveryError> {
        let cached = self.apiserver.read().await.clone();
        let apiserver = match cached {
            Some((addresses, at)) if at.elapsed() < APISERVER_REFRESH => addresses,
            _ => self.discover_apiserver().await?,
        };
        Ok(ClusterNetwork {
            dns_namespace: self.network.dns_namespace.clone(),
            external_source_cidrs: self.network.external_source_cidrs.clone(),
            apiserver,
        })
    }

    /// Reads where pods reach the apiserver now (at start-up, then through [`Self::cluster_network`]).
    pub async fn discover_apiserver(&self) -> Result<Vec<std::net::SocketAddr>, discovery::DiscoveryError> {
        let addresses = discovery::apiserver_addresses(&self.client).await?;
        *self.apiserver.write().await = Some((addresses.clone(), Instant::now()));
        Ok(addresses)
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

#[cfg(test)]
mod tests {
    #[test]
    fn cidrs_are_checked() {
        assert_eq!(super::parse_cidr("192.0.2.10/32").as_deref(), Ok("192.0.2.10/32"));
        assert_eq!(super::parse_cidr(" 2001:db8::1/64").as_deref(), Ok("2001:db8::/64"));
        assert_eq!(super::parse_cidr("192.0.2.77/24").as_deref(), Ok("192.0.2.0/24"));
        assert_eq!(super::parse_cidr("10.1.2.3/0").as_deref(), Ok("0.0.0.0/0"));
        for bad in ["192.0.2.10", "192.0.2.10/33", "host/32", "2001:db8::/129", "10.0.0.0/x"] {
            assert!(super::parse_cidr(bad).is_err(), "{bad}");
        }
    }
}
