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
pub fn service_registration_role(cluster: &str) -> String {
    format!("{cluster}-service-registration")
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
