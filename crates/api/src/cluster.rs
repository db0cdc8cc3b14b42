//! `OpenBaoCluster`: one OpenBao raft cluster managed by the operator.

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::status::OpenBaoClusterStatus;

/// An OpenBao raft cluster: a StatefulSet of OpenBao servers that initializes itself, serves TLS
/// from certificates the operator owns, and lets the operator, its Jobs and an administrator log
/// in with Kubernetes service-account tokens.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "openbao.org",
    version = "v1alpha1",
    kind = "OpenBaoCluster",
    doc = "An OpenBao raft cluster managed by the operator.",
    namespaced,
    shortname = "bao",
    status = "OpenBaoClusterStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.currentVersion"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 40").message("metadata.name: at most 40 characters, so that every derived object and pod name stays valid"),
)]
#[x_kube(
    validation = Rule::new("self.profile != 'Hardened' || self.tls.mode == 'External'").message("spec.tls.mode: the Hardened profile requires External TLS (certificates from your own PKI)").field_path(".tls.mode"),
    validation = Rule::new("self.profile != 'Hardened' || self.replicas >= 3").message("spec.replicas: the Hardened profile requires at least 3 replicas").field_path(".replicas"),
    validation = Rule::new("self.profile != 'Hardened' || !has(self.selfInit.demoUserpass) || !self.selfInit.demoUserpass.enabled").message("spec.selfInit.demoUserpass: the demo userpass login is only allowed with profile Development").field_path(".selfInit.demoUserpass"),
    validation = Rule::new("self.profile != 'Hardened' || (has(self.unseal) && self.unseal.type != 'static')").message("spec.unseal.type: the Hardened profile forbids the static seal, whose key is stored in a Kubernetes Secret; use unseal.type: transit, kmip or kms").field_path(".unseal.type"),
    validation = Rule::new(r"!has(self.unseal) || self.unseal.type != 'kms' || self.version.matches('^(2\\.([7-9]|[1-9][0-9]+)|[3-9]|[1-9][0-9]+)\\.')").message("spec.unseal.type: kms (an external KMS plugin seal) needs OpenBao 2.7 or later; spec.version is older (on 2.6 use transit or kmip)").field_path(".unseal.type"),
    validation = Rule::new("(has(self.unseal) ? self.unseal.type : 'static') == (has(oldSelf.unseal) ? oldSelf.unseal.type : 'static') || ((has(self.unseal) ? self.unseal.type : 'static') in ['static', 'transit'] && (has(oldSelf.unseal) ? oldSelf.unseal.type : 'static') in ['static', 'transit'])").message("spec.unseal.type: on an existing cluster only static <-> transit can change (the operator migrates the seal); kmip and kms cannot be migrated to or from, create a new cluster").field_path(".unseal.type"),
    validation = Rule::new("!has(self.upgrade) || !has(self.upgrade.preUpgradeSnapshot) || !self.upgrade.preUpgradeSnapshot || has(self.backup)").message("spec.upgrade.preUpgradeSnapshot: needs spec.backup, whose target and credentials the snapshot is stored with").field_path(".upgrade.preUpgradeSnapshot"),
    validation = Rule::new("self.profile != 'Hardened' || (has(self.audit) && self.audit.size() > 0)").message("spec.audit: the Hardened profile requires at least one audit device").field_path(".audit"),
    validation = Rule::new("self.profile != 'Hardened' || !has(self.audit) || self.audit.all(a, !a.logRaw)").message("spec.audit[].logRaw: not allowed with the Hardened profile (the audit trail would hold every secret in clear)").field_path(".audit"),
    validation = Rule::new("self.profile != 'Hardened' || !has(self.audit) || self.audit.all(a, a.hmacAccessor)").message("spec.audit[].hmacAccessor: must stay true with the Hardened profile (token accessors in clear let log readers act on tokens)").field_path(".audit"),
    validation = Rule::new("self.profile != 'Hardened' || !has(self.network) || !has(self.network.ingressRules) || size(self.network.ingressRules) == 0").message(crate::network::INGRESS_HARDENED_MESSAGE).field_path(".network.ingressRules"),
    validation = Rule::new(crate::network::SEAL_EGRESS_RULE).message(crate::network::SEAL_EGRESS_MESSAGE).field_path(".network.egressRules"),
    validation = Rule::new(crate::network::BACKUP_EGRESS_RULE).message(crate::network::BACKUP_EGRESS_MESSAGE).field_path(".network.egressRules"),
    validation = Rule::new(crate::network::AUDIT_EGRESS_RULE).message(crate::network::AUDIT_EGRESS_MESSAGE).field_path(".network.egressRules"),
    validation = Rule::new(crate::network::HARDENED_EGRESS_RULE).message(crate::network::EGRESS_HARDENED_MESSAGE).field_path(".network.egressRules"),
    validation = Rule::new("has(self.auditFileStorage) == has(oldSelf.auditFileStorage) && (!has(self.auditFileStorage) || self.auditFileStorage == oldSelf.auditFileStorage)").message("spec.auditFileStorage: is immutable (a StatefulSet's volume claim templates cannot change); set it when creating the cluster").field_path(".auditFileStorage"),
)]
#[serde(rename_all = "camelCase")]
pub struct OpenBaoClusterSpec {
    /// OpenBao version to run, e.g. `2.7.2` or `2.8.0-beta20250101`. Selects the image tag unless
    /// `image` is set, so it carries no `+build` metadata (image tags cannot contain `+`).
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+\\\\.[0-9]+\\\\.[0-9]+(-[0-9A-Za-z.-]+)?$')").message("spec.version: must be a version such as 2.7.2 or 2.8.0-beta20250101, without +build metadata (it is the image tag)"))]
    pub version: String,

    /// Full image reference for the OpenBao containers. Defaults to `openbao/openbao:<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Number of OpenBao servers (raft voters). Odd numbers tolerate failures best.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,

    /// Security posture (required). `Development` allows operator-managed TLS, a static seal key stored in
    /// the cluster and a demo login, and reports `SecurityRisk`; `Hardened` forbids them.
    pub profile: Profile,

    /// How the servers unseal themselves. Absent: the `static` seal, whose key the operator
    /// keeps in the Secret `<name>-unseal-key` (Development only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseal: Option<crate::unseal::UnsealSpec>,

    /// Stops every change the operator would make to this cluster; status is still reported.
    #[serde(default)]
    pub paused: bool,

    /// How the OpenBao listener gets its certificates.
    #[serde(default)]
    pub tls: TlsSpec,

    /// Declarative self-initialization of OpenBao on first start.
    #[serde(default)]
    pub self_init: SelfInitSpec,

    /// Routing through a shared, TLS-terminating Gateway API edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySpec>,

    /// Persistent volume for each server's raft data.
    pub storage: StorageSpec,

    /// What happens to the data when the OpenBaoCluster is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Pod-level hardening switches.
    #[serde(default)]
    pub workload_hardening: WorkloadHardening,

    /// CPU and memory requests and limits for the OpenBao container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// How a change of `version` is rolled out, and requests for the upgrade in progress.
    #[serde(default)]
    pub upgrade: crate::upgrade::UpgradeSpec,

    /// Scheduled and on-demand raft snapshots to an S3-compatible object store (off when absent).
    /// The annotation `openbao.org/trigger-backup=<value>` also asks for one backup per value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::backup::BackupSpec>,

    /// Audit devices, declared in the server configuration (OpenBao 2.x refuses to enable them
    /// through its API). The `Hardened` profile requires at least one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[x_kube(
        validation = Rule::new("self.all(d, self.exists_one(o, o.name == d.name))").message("spec.audit[].name: names must be unique"),
        validation = Rule::new("self.all(d, !has(d.fileOptions) || d.fileOptions.filePath == 'stdout' || self.exists_one(o, has(o.fileOptions) && o.fileOptions.filePath == d.fileOptions.filePath))").message("spec.audit[].fileOptions.filePath: two devices cannot write to the same file"),
    )]
    pub audit: Vec<crate::audit::AuditDevice>,

    /// Per-server volume for file audit devices (a volume claim template `audit`); immutable.
    /// Without it, file devices write to an emptyDir that lives as long as the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_file_storage: Option<crate::audit::AuditFileStorage>,

    /// OpenBao's own metrics for Prometheus, and the metrics Service `<name>-metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<crate::audit::TelemetrySpec>,

    /// Rules appended to the servers' NetworkPolicy (`<name>-network-policy`), which otherwise
    /// admits and reaches only what the cluster needs (docs/security.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::NetworkSpec>,

    /// Scheduling constraints of the OpenBao pods (every set of servers). The node affinity
    /// part also applies to the backup, restore and drill Jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::placement::compact::<Affinity>")]
    pub affinity: Option<Affinity>,

    /// How the OpenBao pods spread over the topology, used as given. A constraint without a
    /// `labelSelector` gets the selector of the set of servers it is rendered for. Absent: one soft
    /// constraint (`ScheduleAnyway`, maxSkew 1) over `kubernetes.io/hostname`. A hard spread
    /// (`DoNotSchedule`) is never implied, not even by `Hardened`: write it here when the cluster
    /// has a node per server (a blue/green upgrade briefly runs twice the servers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        schema_with = "crate::placement::compact::<Vec<TopologySpreadConstraint>>",
        length(max = 8)
    )]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// Tolerations of the OpenBao pods and the executor Jobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::placement::compact::<Vec<Toleration>>", length(max = 32))]
    pub tolerations: Vec<Toleration>,

    /// Node labels the OpenBao pods and the executor Jobs require.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::placement::label_map")]
    #[x_kube(
        validation = Rule::new(crate::placement::QUALIFIED_KEY_RULE).message("spec.nodeSelector: every key must be a label key such as kubernetes.io/os"),
    )]
    pub node_selector: BTreeMap<String, String>,

    /// PriorityClass of the OpenBao pods and the executor Jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        length(min = 1, max = 253)
    )]
    pub priority_class_name: Option<String>,

    /// Labels and annotations added to the OpenBao pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_metadata: Option<crate::placement::PodMetadata>,

    /// The servers' service account `<name>-serviceaccount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<crate::placement::ServiceAccountSpec>,

    /// Secrets for pulling the OpenBao image (and, in the Jobs, the operator's image).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        schema_with = "crate::placement::compact::<Vec<LocalObjectReference>>",
        length(max = 16)
    )]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Type and annotations of the public Service `<name>-public`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<crate::placement::ServiceSpec>,
}

fn default_replicas() -> i32 {
    3
}

/// Security posture of a cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Profile {
    Development,
    Hardened,
}

/// Where listener certificates come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.certManager) || self.mode == 'External'").message("spec.tls.certManager: only with tls.mode External (OperatorManaged certificates are issued by the operator itself)").field_path(".certManager"))]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Always `true`: OpenBao is always served over TLS. This is the Go operator's spelling
    /// (its schema requires the field), accepted so that its manifests apply unchanged.
    #[serde(default = "default_true")]
    #[x_kube(validation = Rule::new("self == true").message("spec.tls.enabled: only true is supported: OpenBao is always served over TLS by this operator"))]
    pub enabled: bool,

    /// `OperatorManaged`: the operator issues and rotates a CA and server certificate.
    /// `External`: you provide Secrets `<name>-tls-ca` (`ca.crt`) and `<name>-tls-server`
    /// (`tls.crt`, `tls.key`, `ca.crt`).
    #[serde(default)]
    pub mode: TlsMode,

    /// How long before expiry the server certificate is reissued (Go duration, e.g. `720h`).
    /// Server certificates live three times this period.
    #[serde(default = "default_rotation_period")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(h|m|s))+$')").message("spec.tls.rotationPeriod: must be a duration such as 720h or 90m"))]
    pub rotation_period: String,

    /// Extra DNS names or IP addresses for the server certificate.
    #[serde(default, rename = "extraSANs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub extra_sans: Vec<String>,

    /// With `mode: External`: the operator owns a cert-manager `Certificate` named
    /// `<name>-tls-server` (the SANs the servers need, renewed `rotationPeriod` before expiry)
    /// whose Secret the servers load and reload without a restart, and copies its `ca.crt` to
    /// `<name>-tls-ca` for the executor Jobs. Without it you provide both Secrets yourself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<CertManagerTls>,
}

/// The cert-manager issuer of the servers' certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerTls {
    pub issuer_ref: IssuerRef,
}

/// A cert-manager (`cert-manager.io`) issuer, spelled as cert-manager spells `issuerRef`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the Issuer (in the cluster's namespace) or ClusterIssuer.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        length(min = 1, max = 253)
    )]
    pub name: String,
    /// `Issuer` (the default, in the cluster's namespace) or `ClusterIssuer`, which the
    /// operator uses only when its installer allowed that ClusterIssuer (`--cert-manager-cluster-issuers`):
    /// a cluster-wide issuer signs names beyond this tenant's namespace.
    #[serde(default)]
    pub kind: IssuerKind,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum IssuerKind {
    #[default]
    Issuer,
    ClusterIssuer,
}

impl Default for TlsSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: TlsMode::default(),
            rotation_period: default_rotation_period(),
            extra_sans: Vec::new(),
            cert_manager: None,
        }
    }
}

fn default_rotation_period() -> String {
    "720h".to_string()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum TlsMode {
    #[default]
    OperatorManaged,
    External,
}

/// Declarative self-initialization: OpenBao initializes itself from `initialize` requests on
/// its first start and revokes the root token, which is never stored anywhere.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelfInitSpec {
    /// Must stay `true`: this operator only bootstraps through self-initialization, so that no
    /// root token ever exists outside OpenBao.
    #[serde(default = "default_true")]
    #[x_kube(validation = Rule::new("self == true").message("spec.selfInit.enabled: only self-initialization is supported; the operator never stores a root token"))]
    pub enabled: bool,

    /// Kubernetes service-account JWT login for the operator, its Jobs and an administrator.
    #[serde(default)]
    pub oidc: OidcSpec,

    /// Extra requests run once at first initialization, after the operator's own bootstrap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(o, o.name == r.name))").message("spec.selfInit.requests: names must be unique"))]
    pub requests: Vec<InitRequest>,

    /// A demo `userpass` login with the admin policy, for local development only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo_userpass: Option<DemoUserpass>,
}

impl Default for SelfInitSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            oidc: OidcSpec::default(),
            requests: Vec::new(),
            demo_userpass: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Service-account JWT login (auth mount `jwt-operator`). The tokens' audience is not set here:
/// the operator derives one per cluster (`status.jwtAudience`), so that a token meant for this
/// cluster is accepted neither by another cluster nor by the Kubernetes apiserver.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcSpec {
    /// Create the JWT auth mount, policies and roles at initialization.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Overrides the issuer discovered from the Kubernetes apiserver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') && !self.contains('/.well-known/') && !self.contains('?') && !self.contains('#')").message("spec.selfInit.oidc.issuer: must be an https URL without query, fragment or /.well-known/ path"))]
    pub issuer: Option<String>,

    /// A service account that may log in as role `admin` (policy `admin`: everything but root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_service_account: Option<ServiceAccountRef>,
}

impl Default for OidcSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            issuer: None,
            admin_service_account: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountRef {
    /// Namespace of the service account; defaults to the cluster's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the service account.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One OpenBao API request run by self-initialization.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitRequest {
    /// Unique name of the request.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]*$"), length(min = 1, max = 64))]
    pub name: String,
    /// HTTP-like operation of the request.
    pub operation: InitOperation,
    /// API path without `/v1/`, e.g. `sys/mounts/secret`.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("!self.startsWith('/')").message("spec.selfInit.requests[].path: write it without a leading slash, e.g. sys/mounts/secret"))]
    pub path: String,
    // Request body. No doc comment: the description comes from `request_data::schema`, which
    // states the bounds from the same constants the checks use.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::request_data::deserialize"
    )]
    #[schemars(schema_with = "crate::request_data::schema")]
    pub data: Option<serde_json::Value>,
    /// Continue initialization when this request fails.
    #[serde(default)]
    pub allow_failure: bool,
}

/// A spec the apiserver should have refused (it may predate a rule): nothing is applied for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecViolation {
    /// `Degraded` condition reason.
    pub reason: &'static str,
    /// Names the field, e.g. `spec.selfInit.requests[0].data.a: ...`.
    pub message: String,
}

impl OpenBaoClusterSpec {
    /// The admission rules that guard the operator itself, checked again in Rust.
    pub fn check(&self) -> Result<(), SpecViolation> {
        if !self.tls.enabled {
            return Err(SpecViolation {
                reason: "PlaintextNotSupported",
                message: "spec.tls.enabled: only true is supported: OpenBao is always served over TLS by this operator"
                    .into(),
            });
        }
        if let Some(cert_manager) = &self.tls.cert_manager {
            if self.tls.mode != TlsMode::External {
                return Err(SpecViolation {
                    reason: "CertManagerNeedsExternalTLS",
                    message: "spec.tls.certManager: only with tls.mode External".into(),
                });
            }
            if !is_dns_subdomain(&cert_manager.issuer_ref.name) {
                return Err(SpecViolation {
                    reason: "InvalidIssuerRef",
                    message: "spec.tls.certManager.issuerRef.name: must be a DNS subdomain".into(),
                });
            }
        }
        crate::placement::check(self)?;
        crate::network::check(self)?;
        for (i, request) in self.self_init.requests.iter().enumerate() {
            if let Some(data) = &request.data {
                crate::request_data::check(data).map_err(|v| SpecViolation {
                    reason: "InvalidSelfInitRequest",
                    message: format!("spec.selfInit.requests[{i}].data{v}"),
                })?;
            }
        }
        Ok(())
    }
}

/// A Kubernetes object name of the DNS-subdomain kind (RFC 1123, lower case, at most 253).
pub fn is_dns_subdomain(s: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !s.is_empty() && s.len() <= 253 && s.split('.').all(label_ok)
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InitOperation {
    Create,
    Read,
    Update,
    Delete,
    List,
    Patch,
}

/// The demo userpass login: local development only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DemoUserpass {
    /// Create the demo login at initialization.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Login name of the demo user.
    #[serde(default = "default_demo_user")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_.-]*$"), length(min = 1, max = 63))]
    pub username: String,
    /// Secret key holding the password; the Secret lives in the cluster's namespace.
    pub password_secret_ref: SecretKeyRef,
}

fn default_demo_user() -> String {
    "demo".to_string()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_password_key")]
    pub key: String,
}

fn default_password_key() -> String {
    "password".to_string()
}

/// Attachment to a shared Gateway that terminates TLS and re-encrypts to OpenBao.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.enabled || (has(self.hostname) && self.hostname != '')").message("spec.gateway.hostname: required when the gateway is enabled").field_path(".hostname"))]
pub struct GatewaySpec {
    /// Create the HTTPRoute (and BackendTLSPolicy) for this cluster.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The shared Gateway the HTTPRoute attaches to.
    pub gateway_ref: GatewayRef,
    /// Host name clients use through the Gateway; added to the server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        length(max = 253)
    )]
    pub hostname: Option<String>,
    /// Listener (`sectionName`) of the Gateway to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_name: Option<String>,
    /// Path prefix routed to OpenBao.
    #[serde(default = "default_path")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("spec.gateway.path: must start with /"))]
    pub path: String,
    /// Re-encryption from the Gateway to OpenBao, verified against the cluster CA.
    #[serde(default, rename = "backendTLS")]
    pub backend_tls: BackendTlsSpec,
}

fn default_path() -> String {
    "/".to_string()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    /// Name of the Gateway.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Defaults to the cluster's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendTlsSpec {
    /// Re-encrypt traffic from the Gateway to OpenBao (a BackendTLSPolicy with the cluster CA).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Name the Gateway verifies on OpenBao's certificate; defaults to `<name>-public.<namespace>.svc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

impl Default for BackendTlsSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            hostname: None,
        }
    }
}

/// Raft data volume of each server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("spec.storage.storageClassName: is immutable; to use another class, create a new cluster").field_path(".storageClassName"),
    // Unparseable sizes are reported by the rule on `size` itself; guarding here keeps a CEL
    // runtime error ("quantities must match ...") out of the user's message.
    validation = Rule::new("!isQuantity(self.size) || !isQuantity(oldSelf.size) || quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0").message("spec.storage.size: cannot shrink; volumes can only grow").field_path(".size"),
)]
pub struct StorageSpec {
    /// Volume size, e.g. `1Gi`. Can grow, never shrink.
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.storage.size: must be a positive quantity such as 1Gi"))]
    pub size: String,
    /// Storage class of the volumes; immutable. Defaults to the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the volumes and the seal key Secret; everything else is removed.
    #[default]
    Retain,
    /// Also delete the volumes.
    DeletePVCs,
    /// Delete the volumes and the seal key: the data is gone for good.
    DeleteAll,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadHardening {
    /// Run OpenBao under the container runtime's default AppArmor profile. Turn off only when
    /// the node has no AppArmor (a node limitation, not a preferred setting).
    #[serde(default = "default_true")]
    pub app_armor_enabled: bool,
}

impl Default for WorkloadHardening {
    fn default() -> Self {
        Self {
            app_armor_enabled: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(patch: serde_json::Value) -> OpenBaoClusterSpec {
        let mut spec = json!({ "version": "2.7.2", "profile": "Development", "storage": { "size": "1Gi" } });
        spec.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        serde_json::from_value(spec).unwrap()
    }

    #[test]
    fn check_names_the_offending_request_and_path() {
        assert_eq!(spec(json!({})).check(), Ok(()));
        let deep = (0..=crate::request_data::MAX_DEPTH).fold(json!(1), |inner, _| json!({ "k": inner }));
        let requests = json!([
            { "name": "ok", "operation": "update", "path": "sys/mounts/kv", "data": { "type": "kv" } },
            { "name": "deep", "operation": "update", "path": "sys/x", "data": deep },
        ]);
        let err = spec(json!({ "selfInit": { "requests": requests } }))
            .check()
            .unwrap_err();
        assert_eq!(err.reason, "InvalidSelfInitRequest");
        assert!(
            err.message.starts_with("spec.selfInit.requests[1].data.k.k.")
                && err
                    .message
                    .ends_with(&format!("nested deeper than {} levels", crate::request_data::MAX_DEPTH)),
            "{}",
            err.message
        );
    }

    #[test]
    fn tls_enabled_is_the_go_spelling_and_only_true_passes() {
        assert!(spec(json!({})).tls.enabled);
        assert_eq!(spec(json!({ "tls": { "enabled": true } })).check(), Ok(()));
        let err = spec(json!({ "tls": { "enabled": false } })).check().unwrap_err();
        assert_eq!(err.reason, "PlaintextNotSupported");
        assert!(err.message.starts_with("spec.tls.enabled: only true is supported"));
    }

    #[test]
    fn cert_manager_needs_external_tls_and_a_valid_issuer_name() {
        let issuer = json!({ "issuerRef": { "name": "lane-ca" } });
        let external = spec(json!({ "tls": { "mode": "External", "certManager": issuer } }));
        assert_eq!(external.check(), Ok(()));
        assert_eq!(
            external.tls.cert_manager.as_ref().map(|c| c.issuer_ref.kind),
            Some(IssuerKind::Issuer)
        );
        let managed = spec(json!({ "tls": { "certManager": issuer } }));
        assert_eq!(managed.check().unwrap_err().reason, "CertManagerNeedsExternalTLS");
        for name in ["", "Upper", "-x", "a..b", "a_b", &"a".repeat(254)] {
            let bad = spec(json!({ "tls": { "mode": "External", "certManager": { "issuerRef": { "name": name } } } }));
            assert_eq!(bad.check().unwrap_err().reason, "InvalidIssuerRef", "{name:?}");
        }
        assert!(is_dns_subdomain("ca.example-1"));
    }
}
