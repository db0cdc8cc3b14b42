//! Pure builders: an `OpenBaoCluster` spec (plus what the controller observed) in, desired
//! Kubernetes objects, OpenBao configuration and certificate plans out. No I/O and no clock:
//! time and randomness-bearing inputs are arguments, so every builder is testable alone.

pub mod config;
pub mod hcl;
pub mod jwks;
pub mod labels;
pub mod objects;
pub mod pki;
pub mod selfinit;

use openbao_api::OpenBaoClusterSpec;

/// The cluster being rendered.
#[derive(Clone, Copy, Debug)]
pub struct Cluster<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    /// UID of the OpenBaoCluster, for owner references.
    pub uid: &'a str,
    pub spec: &'a OpenBaoClusterSpec,
}

impl Cluster<'_> {
    /// DNS name of pod `ordinal` behind the headless Service (`<pod>.<cluster>.<ns>.svc`).
    pub fn pod_host(&self, ordinal: u32) -> String {
        let pod = openbao_api::names::pod(self.name, None, ordinal);
        format!(
            "{pod}.{}.{}.svc",
            openbao_api::names::headless_service(self.name),
            self.namespace
        )
    }

    pub fn image(&self) -> String {
        self.spec
            .image
            .clone()
            .unwrap_or_else(|| format!("{DEFAULT_IMAGE_REPOSITORY}:{}", self.spec.version))
    }
}

pub const DEFAULT_IMAGE_REPOSITORY: &str = "openbao/openbao";
pub const API_PORT: i32 = 8200;
pub const CLUSTER_PORT: i32 = 8201;
/// The OpenBao container of every server pod (and of the drill Job's sidecar).
pub const SERVER_CONTAINER: &str = "openbao";

/// Where the operator itself runs: its service account is trusted by OpenBao's JWT auth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorIdentity {
    pub namespace: String,
    pub service_account: String,
}

/// What the servers' NetworkPolicy needs besides the spec: the operator's settings and what it
/// discovered about the apiserver (never the tenant's word).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNetwork {
    /// Namespace of the cluster DNS pods: the servers may reach it on 53 (UDP and TCP).
    pub dns_namespace: String,
    /// Addresses (CIDRs) the operator reaches the servers from when it runs outside the pod
    /// network: its packets arrive from them, not from a pod of its namespace.
    pub external_source_cidrs: Vec<String>,
    /// Where the servers reach the apiserver (service registration, JWT login checks): the
    /// `kubernetes` Service's ClusterIP and port, and each of its endpoints, since a policy
    /// engine may see the packet before or after the Service's address translation.
    pub apiserver: Vec<std::net::SocketAddr>,
}

/// The DNS namespace of most distributions.
pub const DEFAULT_DNS_NAMESPACE: &str = "kube-system";

/// The Kubernetes service-account token issuer OpenBao's JWT auth trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtTrust {
    pub issuer: String,
    /// PEM public keys of the apiserver's current signing keys.
    pub public_keys_pem: Vec<String>,
}

/// Fixed paths inside the OpenBao container. Tests that run the rendered config outside a pod
/// remap exactly these.
pub mod paths {
    pub const CONFIG_TEMPLATE_DIR: &str = "/etc/bao/config";
    pub const INIT_DIR: &str = "/etc/bao/init";
    pub const TLS_DIR: &str = "/etc/bao/tls";
    pub const UNSEAL_DIR: &str = "/etc/bao/unseal";
    /// The transit server's CA bundle (`spec.unseal.transit.caSecretRef`), as [`TRANSIT_CA_FILE`].
    pub const TRANSIT_CA_DIR: &str = "/etc/bao/transit-ca";
    pub const TRANSIT_CA_FILE: &str = "ca.crt";
    /// The KMIP seal's client certificate, key and server CA (`spec.unseal.kmip.*SecretRef`),
    /// one projected volume.
    pub const KMIP_DIR: &str = "/etc/bao/kmip";
    pub const KMIP_CLIENT_CERT_FILE: &str = "client.crt";
    pub const KMIP_CLIENT_KEY_FILE: &str = "client.key";
    pub const KMIP_CA_FILE: &str = "ca.crt";
    /// OpenBao's `plugin_directory` for a KMS plugin seal: where the plugin binary of
    /// `spec.unseal.kms.plugin.command` must be in the image, or where OpenBao downloads
    /// `plugin.image` (an emptyDir then).
    pub const PLUGIN_DIR: &str = "/openbao/plugins";
    /// `spec.unseal.kms.credentialsFiles`, one file per entry.
    pub const SEAL_CREDENTIALS_DIR: &str = openbao_api::SEAL_CREDENTIALS_DIR;
    /// Environment variable carrying the transit seal's token (from
    /// `spec.unseal.transit.tokenSecretRef`); the config names it as `token = "env://..."`, so
    /// the token is in no file. Not `BAO_TOKEN`, which the `bao` CLI in the
    /// container would send to whatever server it is pointed at.
    pub const TRANSIT_TOKEN_ENV: &str = "SEAL_TRANSIT_TOKEN";
    /// The service-account token a server logs in to the transit server with
    /// (`spec.unseal.transit.login`), projected by the kubelet with the transit audience.
    pub const TRANSIT_LOGIN_DIR: &str = "/var/run/secrets/openbao-transit";
    pub const TRANSIT_LOGIN_JWT_FILE: &str = "token";
    /// The entrypoint's inputs for that login (it exports the token it gets as
    /// [`TRANSIT_TOKEN_ENV`]); every name starts with `SEAL_TRANSIT_`, like the token's.
    pub const TRANSIT_LOGIN_PATH_ENV: &str = "SEAL_TRANSIT_LOGIN_PATH";
    pub const TRANSIT_LOGIN_ROLE_ENV: &str = "SEAL_TRANSIT_LOGIN_ROLE";
    pub const TRANSIT_LOGIN_ADDR_ENV: &str = "SEAL_TRANSIT_LOGIN_ADDR";
    pub const TRANSIT_LOGIN_CACERT_ENV: &str = "SEAL_TRANSIT_LOGIN_CACERT";
    pub const TRANSIT_LOGIN_NAMESPACE_ENV: &str = "SEAL_TRANSIT_LOGIN_NAMESPACE";
    pub const TRANSIT_LOGIN_SERVER_NAME_ENV: &str = "SEAL_TRANSIT_LOGIN_SERVER_NAME";
    /// What every transit seal variable of the server container starts with.
    pub const TRANSIT_ENV_PREFIX: &str = "SEAL_TRANSIT_";
    pub const RENDERED_DIR: &str = "/bao/rendered";
    pub const DATA_DIR: &str = "/bao/data";
    pub const ENTRYPOINT: &str = "/etc/bao/config/entrypoint.sh";
    /// Placeholder the entrypoint replaces with the pod name.
    pub const POD_NAME_PLACEHOLDER: &str = "@@POD_NAME@@";
    /// Environment variable carrying the demo user's password into self-init.
    pub const DEMO_PASSWORD_ENV: &str = "BAO_DEMO_PASSWORD";
}
