//! Names of the objects derived from a cluster, in one place so builders, controllers and
//! tests agree. They follow the Go operator's names where those are sound.

pub fn headless_service(cluster: &str) -> String {
    cluster.to_string()
}
pub fn public_service(cluster: &str) -> String {
    format!("{cluster}-public")
}
pub fn statefulset(cluster: &str) -> String {
    cluster.to_string()
}
pub fn config_map(cluster: &str) -> String {
    format!("{cluster}-config")
}
pub fn init_secret(cluster: &str) -> String {
    format!("{cluster}-config-init")
}
pub fn unseal_key_secret(cluster: &str) -> String {
    format!("{cluster}-unseal-key")
}
pub fn tls_ca_secret(cluster: &str) -> String {
    format!("{cluster}-tls-ca")
}
pub fn tls_server_secret(cluster: &str) -> String {
    format!("{cluster}-tls-server")
}
pub fn gateway_ca_config_map(cluster: &str) -> String {
    format!("{cluster}-tls-ca")
}
pub fn service_account(cluster: &str) -> String {
    format!("{cluster}-serviceaccount")
}
/// The ClusterRole holding what OpenBao's Kubernetes service registration does to its own pod
/// (read it, patch its labels). Installed with the operator (chart, kustomize); each cluster's
/// server account gets it through a RoleBinding in the cluster's namespace, so the operator
/// itself needs only `bind` on this one ClusterRole, never pod `patch`.
pub const SERVICE_REGISTRATION_CLUSTER_ROLE: &str = "openbao-operator-service-registration";

/// The RoleBinding granting [`SERVICE_REGISTRATION_CLUSTER_ROLE`] to the server account. (Older
/// operators bound a Role of their own, `<cluster>-service-registration`; a binding's roleRef
/// cannot change, hence the new name. The old pair is left to garbage collection with the cluster.)
pub fn service_registration_binding(cluster: &str) -> String {
    format!("{cluster}-service-registration-binding")
}
/// Service `<cluster>-metrics`: every server's `/v1/sys/metrics`, for Prometheus to scrape.
pub fn metrics_service(cluster: &str) -> String {
    format!("{cluster}-metrics")
}
pub fn pdb(cluster: &str) -> String {
    format!("{cluster}-pdb")
}
pub fn network_policy(cluster: &str) -> String {
    format!("{cluster}-network-policy")
}
pub fn http_route(cluster: &str) -> String {
    format!("{cluster}-httproute")
}
pub fn backend_tls_policy(cluster: &str) -> String {
    format!("{cluster}-backend-tls-policy")
}
pub fn pod(cluster: &str, ordinal: i32) -> String {
    format!("{cluster}-{ordinal}")
}
/// Service accounts the executor Jobs run as, each bound to its own OpenBao JWT role.
pub fn job_service_account(cluster: &str, job: &str) -> String {
    format!("{cluster}-{job}-serviceaccount")
}

/// The audience every service-account token sent to this cluster's OpenBao carries, and the
/// only one its JWT roles accept: unique per cluster, so that a token this cluster's OpenBao
/// (whose image the tenant chooses) receives logs in nowhere else, neither at another cluster
/// nor at the Kubernetes apiserver (the operator also asks the apiserver, see
/// `openbao::operator_token`). Namespace and name rather than the uid: a cluster recreated under
/// the same name and restored from its own backup keeps trusting the tokens it is sent. Not a
/// URL, so that no apiserver or other relying party mistakes it for its own issuer or host.
pub fn jwt_audience(namespace: &str, cluster: &str) -> String {
    format!("openbao-operator.openbao.org/{namespace}/{cluster}")
}
