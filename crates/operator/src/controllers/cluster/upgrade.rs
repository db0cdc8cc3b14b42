//! Upgrades on Kubernetes: the operator's login for upgrade steps and the [`KubePlatform`] the
//! upgrade driver acts through. What the reconcile does about a changed `spec.version` is
//! decided without I/O in [`crate::flows::upgrade`].
//!
//! A rolling upgrade switches the live StatefulSet to `OnDelete` with the new version in its
//! template, so the StatefulSet controller never replaces a pod by itself; the driver replaces
//! exactly one pod at a time by deleting it (the leader last, after a step-down), which a
//! `partition` cannot express since the leader may hold any ordinal. A blue/green upgrade adds
//! a second StatefulSet (see [`super::bluegreen`]).

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoClusterSpec, OpenBaoClusterStatus, names};
use openbao_client::{BaoClient, ClientConfig, Token};
use openbao_render::objects::image_for;
use openbao_render::{API_PORT, Cluster, labels};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use super::bluegreen::BlueGreenKube;
use crate::context::Context;
use crate::flows::{Deployment, Platform, PlatformError, PlatformNode, Revision, Snapshot};
use crate::openbao::AccessError;

/// The operator's OpenBao token for upgrade steps. Logged in through the public Service; when
/// that reaches a standby which redirects to the active server (traffic may already select
/// green while blue still leads), the login goes to that server's pod directly.
pub async fn operator_login(ctx: &Context, cluster: &Cluster<'_>, bundle: &str) -> Result<Token, String> {
    let mut attempt = 1;
    loop {
        match operator_login_as(ctx, cluster, bundle, "openbao-operator").await {
            Ok(token) => return Ok(token),
            Err(e) if attempt < LOGIN_ATTEMPTS && e.worth_retrying() => {
                attempt += 1;
                tokio::time::sleep(LOGIN_RETRY_PAUSE).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Logins in one upgrade step. A login that lands in a leader change (HTTP 503 `no active Vault
/// instance found` while the servers elect) is tried again within the step, so a handover the
/// upgrade itself causes is not recorded as the step's `lastError`.
const LOGIN_ATTEMPTS: u32 = 3;
const LOGIN_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(700);

/// Why [`operator_login_as`] failed; `refused` keeps OpenBao's answer to the login itself (a
/// missing role shows there).
#[derive(Debug)]
pub struct LoginFailure {
    pub message: String,
    pub refused: Option<openbao_client::BaoError>,
}

impl LoginFailure {
    /// OpenBao answered with something a moment later may not repeat (429, 5xx: a standby
    /// without a leader, a sealed server, overload). A refusal (4xx) or a failure before the
    /// login was sent (no token for the operator) is final for this step.
    fn worth_retrying(&self) -> bool {
        self.refused
            .as_ref()
            .is_some_and(openbao_client::BaoError::is_retryable)
    }
}

impl std::fmt::Display for LoginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// [`operator_login`] as JWT role `role`.
pub async fn operator_login_as(
    ctx: &Context,
    cluster: &Cluster<'_>,
    bundle: &str,
    role: &str,
) -> Result<Token, LoginFailure> {
    let purpose = if role == openbao_render::selfinit::SEAL_MIGRATION_ROLE {
        "the seal migration"
    } else {
        "the upgrade"
    };
    let plain = |message: String| LoginFailure { message, refused: None };
    let refused = |what: String, e: AccessError| {
        let message = format!("{what}: {e}");
        match e {
            AccessError::OpenBao { source, .. } => LoginFailure {
                message,
                refused: Some(source),
            },
            _ => LoginFailure { message, refused: None },
        }
    };
    let jwt = crate::openbao::operator_token(
        &ctx.client,
        &ctx.operator,
        &ctx.safe_audiences,
        cluster.namespace,
        cluster.name,
    )
    .await
    .map_err(|e| plain(format!("logging in for {purpose}: {e}")))?;
    let endpoint = (ctx.endpoints)(cluster.name, cluster.namespace);
    let client = match crate::openbao::login_as(&endpoint, bundle, &jwt, role).await {
        Ok(client) => client,
        Err(AccessError::OpenBao { source, .. })
            if let Some(pod) = source
                .redirect_location()
                .and_then(|l| crate::openbao::redirect_to_pod(l, cluster.namespace)) =>
        {
            let ip = Api::<Pod>::namespaced(ctx.client.clone(), cluster.namespace)
                .get_opt(&pod)
                .await
                .map_err(|e| {
                    plain(format!(
                        "logging in for {purpose}: reading pod {pod} (the active server): {e}"
                    ))
                })?
                .as_ref()
                .and_then(KubePlatform::pod_ip)
                .ok_or_else(|| {
                    plain(format!(
                        "logging in for {purpose}: the active server {pod} has no pod IP"
                    ))
                })?;
            let at_leader = crate::openbao::Endpoint {
                url: server_url(cluster.name, cluster.namespace, &pod),
                resolve_to: Some(ip),
            };
            crate::openbao::login_as(&at_leader, bundle, &jwt, role)
                .await
                .map_err(|e| refused(format!("logging in for {purpose} at the active server {pod}"), e))?
        }
        Err(e) => return Err(refused(format!("logging in for {purpose}"), e)),
    };
    client
        .token()
        .cloned()
        .ok_or_else(|| plain(format!("the login for {purpose} returned no token")))
}

/// The URL a client reaches server `node_id` of `cluster` at, with a name its certificate holds:
/// the pod's `<pod>.<cluster>.<ns>.svc` for the original servers, the headless Service's
/// `<cluster>.<ns>.svc` for revision servers (whose pod names the certificate does not list).
pub(super) fn server_url(cluster: &str, namespace: &str, node_id: &str) -> String {
    let host = match names::parse_pod(cluster, node_id) {
        Some((None, _)) => format!("{node_id}.{}.{namespace}.svc", names::headless_service(cluster)),
        _ => format!("{}.{namespace}.svc", names::headless_service(cluster)),
    };
    format!("https://{host}:{API_PORT}")
}

/// A pod whose server runs: not being deleted, phase `Running`.
pub(super) fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// How a platform reaches one server of a cluster: by its pod IP, verifying the name
/// [`server_url`] gives against the cluster's CA, with the platform's token.
pub(super) struct ServerAccess {
    cluster: String,
    namespace: String,
    ca_pem: String,
    token: Token,
    /// Pod IPs seen when the platform last listed its servers, so clients need no extra lookups.
    pod_ips: Mutex<HashMap<String, IpAddr>>,
}

impl ServerAccess {
    pub fn new(cluster: &Cluster<'_>, ca_pem: String, token: Token) -> Self {
        Self {
            cluster: cluster.name.to_string(),
            namespace: cluster.namespace.to_string(),
            ca_pem,
            token,
            pod_ips: Mutex::default(),
        }
    }

    /// The pod IPs of the servers just listed.
    pub fn remember(&self, pod_ips: HashMap<String, IpAddr>) {
        *self.pod_ips.lock().expect("pod ip lock") = pod_ips;
    }

    /// A client for server `node_id`, at the pod IP last listed or the IP read now.
    pub async fn client(&self, pods: &Api<Pod>, node_id: &str) -> Result<BaoClient, PlatformError> {
        let known = self.pod_ips.lock().expect("pod ip lock").get(node_id).copied();
        let ip = match known {
            Some(ip) => ip,
            None => pods
                .get_opt(node_id)
                .await
                .map_err(kube_error(format!("reading pod {node_id}")))?
                .as_ref()
                .and_then(KubePlatform::pod_ip)
                .ok_or_else(|| PlatformError::new(format!("pod {node_id}"), "has no IP".to_string()))?,
        };
        let url = server_url(&self.cluster, &self.namespace, node_id);
        let config = ClientConfig::new(url.clone())
            .with_ca_pem(self.ca_pem.as_bytes().to_vec())
            .with_resolve_to(ip)
            .with_timeout(Duration::from_secs(5));
        let client = BaoClient::new(config).map_err(|e| PlatformError::new(format!("client for {url}"), e))?;
        Ok(client.with_token(self.token.clone()))
    }
}

/// The version a pod runs: the tag of its image, or (with `spec.image` naming an image without
/// a version tag) the version OpenBao's service registration reports.
fn pod_version(image: Option<&str>, labels: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let tag = image
        .and_then(|i| i.rsplit_once(':'))
        .map(|(_, tag)| tag)
        .filter(|t| !t.contains('/') && t.starts_with(|c: char| c.is_ascii_digit()));
    tag.map(str::to_string)
        .or_else(|| labels.get("openbao-version").cloned())
}

fn container_image(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    let c = spec
        .containers
        .iter()
        .find(|c| c.name == openbao_render::SERVER_CONTAINER)?;
    c.image.as_deref()
}

fn template_image(sts: &StatefulSet) -> Option<&str> {
    let spec = sts.spec.as_ref()?.template.spec.as_ref()?;
    let c = spec
        .containers
        .iter()
        .find(|c| c.name == openbao_render::SERVER_CONTAINER)?;
    c.image.as_deref()
}

/// A failed Kubernetes call of a platform step, with what it was doing.
pub(super) fn kube_error(context: String) -> impl FnOnce(kube::Error) -> PlatformError {
    move |e| PlatformError::new(context, e)
}

/// The servers of one cluster as pods of its StatefulSets (the live set and, during a
/// blue/green upgrade, the green one), reached directly by pod IP. TLS verifies a name the
/// server certificate holds: the pod's `<pod>.<cluster>.<ns>.svc` for the original servers, the
/// headless Service's `<cluster>.<ns>.svc` for revision servers (whose pod names the
/// certificate does not list).
pub struct KubePlatform<'a> {
    ctx: &'a Context,
    client: Client,
    name: String,
    namespace: String,
    uid: String,
    spec: OpenBaoClusterSpec,
    servers: ServerAccess,
    /// The live set and the green set of a blue/green upgrade, from status.
    live: Revision,
    green: Revision,
    /// When the upgrade in progress started: names its pre-upgrade snapshot Jobs.
    started: Timestamp,
}

impl<'a> KubePlatform<'a> {
    /// `token` is the operator's OpenBao token (role `openbao-operator`).
    pub fn new(ctx: &'a Context, cluster: &Cluster<'_>, ca_pem: String, token: Token) -> Self {
        Self {
            ctx,
            client: ctx.client.clone(),
            name: cluster.name.to_string(),
            namespace: cluster.namespace.to_string(),
            uid: cluster.uid.to_string(),
            spec: cluster.spec.clone(),
            servers: ServerAccess::new(cluster, ca_pem, token),
            live: None,
            green: None,
            started: Timestamp::UNIX_EPOCH,
        }
    }

    /// The sets of servers `status` names (the live one, a blue/green upgrade's green one).
    pub fn for_status(mut self, status: &OpenBaoClusterStatus) -> Self {
        self.live = crate::flows::upgrade::live_revision(status);
        self.green = status
            .blue_green
            .as_ref()
            .and_then(|b| b.green_revision.clone())
            .filter(|g| Some(g) != self.live.as_ref());
        self.started = super::snapshot::upgrade_started(status);
        self
    }

    fn cluster(&self) -> Cluster<'_> {
        Cluster {
            name: &self.name,
            namespace: &self.namespace,
            uid: &self.uid,
            spec: &self.spec,
        }
    }

    fn blue_green(&self) -> BlueGreenKube<'_> {
        BlueGreenKube {
            ctx: self.ctx,
            cluster: self.cluster(),
            live: self.live.clone(),
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn statefulset_api(&self) -> Api<StatefulSet> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The live set's StatefulSet (the one a rolling upgrade replaces pods of).
    async fn statefulset(&self) -> Result<StatefulSet, PlatformError> {
        let name = names::server_set(&self.name, self.live.as_deref());
        self.statefulset_api()
            .get_opt(&name)
            .await
            .map_err(kube_error(format!("reading StatefulSet {name}")))?
            .ok_or_else(|| PlatformError::new(format!("StatefulSet {name}"), "does not exist".to_string()))
    }

    fn image_for(&self, version: &str) -> String {
        image_for(&self.cluster(), version)
    }

    pub(super) fn pod_ip(pod: &Pod) -> Option<IpAddr> {
        pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
    }
}

impl Platform for KubePlatform<'_> {
    async fn nodes(&self) -> Result<Vec<PlatformNode>, PlatformError> {
        let listed = self
            .pods()
            .list(&ListParams::default().labels(&format!("{}={}", labels::CLUSTER_LABEL, self.name)))
            .await
            .map_err(kube_error(format!("listing the pods of {}", self.name)))?;
        let claims: Vec<(Revision, u32)> = {
            let api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
                Api::namespaced(self.client.clone(), &self.namespace);
            let list = api
                .list(&ListParams::default().labels(&format!("{}={}", labels::CLUSTER_LABEL, self.name)))
                .await
                .map_err(kube_error(format!("listing the volume claims of {}", self.name)))?;
            list.items
                .iter()
                .filter_map(|c| super::bluegreen::claim_server(&self.name, &c.name_any()))
                .collect()
        };
        let by_name: HashMap<String, &Pod> = listed.items.iter().map(|p| (p.name_any(), p)).collect();
        // Every set that runs or keeps storage, the live and green ones even when empty.
        let mut sets: Vec<Revision> = vec![self.live.clone()];
        sets.extend(self.green.iter().map(|g| Some(g.clone())));
        let found = by_name
            .keys()
            .filter_map(|n| names::parse_pod(&self.name, n))
            .chain(claims.iter().cloned());
        for (rev, _) in found {
            if !sets.contains(&rev) {
                sets.push(rev);
            }
        }
        let mut nodes = Vec::new();
        let mut ips = HashMap::new();
        for set in &sets {
            let sts_name = names::server_set(&self.name, set.as_deref());
            let sts = self
                .statefulset_api()
                .get_opt(&sts_name)
                .await
                .map_err(kube_error(format!("reading StatefulSet {sts_name}")))?;
            let replicas = sts
                .as_ref()
                .and_then(|s| s.spec.as_ref())
                .and_then(|s| s.replicas)
                .unwrap_or(0)
                .max(0) as u32;
            let template_version = sts
                .as_ref()
                .and_then(|s| pod_version(template_image(s), &Default::default()))
                .unwrap_or_default();
            // Every ordinal of the StatefulSet counts, with or without a pod: a pod deleted for
            // its replacement still holds its volume, and must not look finished while it is
            // gone. So do pods and volumes left over from a deleted StatefulSet.
            let mut ordinals: Vec<u32> = (0..replicas).collect();
            let extra = by_name
                .keys()
                .filter_map(|n| names::parse_pod(&self.name, n))
                .chain(claims.iter().cloned())
                .filter(|(rev, _)| rev == set)
                .map(|(_, ordinal)| ordinal);
            for ordinal in extra {
                if !ordinals.contains(&ordinal) {
                    ordinals.push(ordinal);
                }
            }
            ordinals.sort_unstable();
            for ordinal in ordinals {
                let id = names::pod(&self.name, set.as_deref(), ordinal);
                let pod = by_name.get(&id);
                if let Some(ip) = pod.and_then(|p| Self::pod_ip(p)) {
                    ips.insert(id.clone(), ip);
                }
                let running = pod.is_some_and(|p| is_running(p));
                let version = pod
                    .and_then(|p| pod_version(container_image(p), p.labels()))
                    .unwrap_or_else(|| template_version.clone());
                nodes.push(PlatformNode {
                    id,
                    revision: set.clone(),
                    ordinal,
                    version,
                    running,
                });
            }
        }
        self.servers.remember(ips);
        Ok(nodes)
    }

    async fn client(&self, node_id: &str) -> Result<BaoClient, PlatformError> {
        self.servers.client(&self.pods(), node_id).await
    }

    async fn traffic(&self) -> Result<Revision, PlatformError> {
        self.blue_green().traffic().await
    }

    async fn switch_traffic(&self, to: &Revision) -> Result<(), PlatformError> {
        self.blue_green().switch_traffic(to).await
    }

    async fn deploy_nodes(&self, deployment: &Deployment) -> Result<(), PlatformError> {
        self.blue_green().deploy(deployment).await
    }

    async fn remove_nodes(&self, revision: &Revision) -> Result<(), PlatformError> {
        self.blue_green().remove(revision).await
    }

    async fn replace_node(&self, node_id: &str, version: &str) -> Result<(), PlatformError> {
        let wanted = self.image_for(version);
        let sts = self.statefulset().await?;
        let on_delete = sts
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.type_.as_deref())
            == Some("OnDelete");
        let seen = sts.status.as_ref().and_then(|s| s.observed_generation) >= sts.metadata.generation;
        // A pod deleted before the StatefulSet controller saw the new template would come back
        // on the old version; the reconcile applies the template, the next step deletes.
        if template_image(&sts) != Some(wanted.as_str()) || !on_delete || !seen {
            return Err(PlatformError::new(
                format!("replacing {node_id}"),
                format!("StatefulSet template is not on {wanted} with OnDelete (observed) yet"),
            ));
        }
        let Some(pod) = self
            .pods()
            .get_opt(node_id)
            .await
            .map_err(kube_error(format!("reading pod {node_id}")))?
        else {
            // Gone already: the StatefulSet controller creates it from the new template.
            return Ok(());
        };
        if pod.metadata.deletion_timestamp.is_some() || container_image(&pod) == Some(wanted.as_str()) {
            return Ok(());
        }
        crate::kube_write::Writer::new(self.ctx, &self.namespace)
            .delete::<Pod>(node_id, &DeleteParams::default())
            .await
            .map(drop)
            .map_err(|e| PlatformError::new(format!("deleting pod {node_id}"), e))
    }

    async fn take_snapshot(&self, attempt: i32) -> Result<Snapshot, PlatformError> {
        super::snapshot::take(self.ctx, &self.cluster(), self.started, attempt).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_during_a_leader_change_is_tried_again_a_refusal_is_not() {
        let answered = |status: u16, text: &str| LoginFailure {
            message: format!("logging in for the upgrade: HTTP {status}"),
            refused: Some(openbao_client::BaoError::Api {
                method: "PUT".into(),
                path: "/v1/auth/jwt-operator/login".into(),
                status,
                errors: vec![text.into()],
            }),
        };
        assert!(answered(503, "no active Vault instance found").worth_retrying());
        assert!(answered(500, "local node not active but active cluster node not found").worth_retrying());
        assert!(!answered(400, "role \"openbao-operator\" could not be found").worth_retrying());
        assert!(!answered(403, "permission denied").worth_retrying());
        let before_sending = LoginFailure {
            message: "logging in for the upgrade: no token".into(),
            refused: None,
        };
        assert!(!before_sending.worth_retrying());
    }

    #[test]
    fn pod_versions_come_from_the_image_tag_or_the_registration_label() {
        let none = Default::default();
        assert_eq!(
            pod_version(Some("openbao/openbao:2.7.2"), &none).as_deref(),
            Some("2.7.2")
        );
        assert_eq!(
            pod_version(Some("localhost:5000/openbao"), &none),
            None,
            "a registry port is no tag"
        );
        let labels = std::collections::BTreeMap::from([("openbao-version".to_string(), "2.6.2".to_string())]);
        assert_eq!(
            pod_version(Some("mirror/bao:latest"), &labels).as_deref(),
            Some("2.6.2")
        );
    }
}
