//! Operator-managed TLS: read what exists, decide with the pure plans in `openbao_render::pki`,
//! and hand back the Secrets to apply.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use openbao_render::objects::{TlsSecrets, ca_state_from_secret, tls_secrets};
use openbao_render::pki::{self, CaPlan, KeyedCert, ServerPlan};
use openbao_render::{Cluster, pki::CaState};

/// The outcome of one TLS pass.
pub struct TlsOutcome {
    pub secrets: TlsSecrets,
    pub bundle_pem: String,
    /// What changed, for events (empty when nothing did).
    pub changes: Vec<String>,
    pub next_check: Option<Timestamp>,
    pub server_not_after: Option<Timestamp>,
    pub ca_not_after: Option<Timestamp>,
}

fn text(secret: Option<&Secret>, key: &str) -> Option<String> {
    secret?
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

pub fn reconcile_tls(
    cluster: &Cluster,
    ca_secret: Option<&Secret>,
    server_secret: Option<&Secret>,
    now: Timestamp,
) -> Result<TlsOutcome, pki::PkiError> {
    let rotation = pki::parse_duration(&cluster.spec.tls.rotation_period)?;
    let existing_ca: Option<CaState> = ca_secret.and_then(ca_state_from_secret);
    let ca_plan = pki::plan_ca(existing_ca.as_ref(), now)?;
    let mut changes = Vec::new();
    if ca_plan != CaPlan::Keep {
        changes.push(format!("CA: {ca_plan:?}"));
    }
    let ca = pki::apply_ca_plan(cluster.name, existing_ca, &ca_plan, now)?;
    let sans = pki::server_sans(cluster);
    let existing_server = match (text(server_secret, "tls.crt"), text(server_secret, "tls.key")) {
        (Some(cert_pem), Some(key_pem)) => Some(KeyedCert { cert_pem, key_pem }),
        _ => None,
    };
    let server = match pki::plan_server(
        existing_server.as_ref().map(|c| c.cert_pem.as_str()),
        &ca,
        &sans,
        now,
        rotation,
    ) {
        ServerPlan::Keep => existing_server.expect("Keep implies an existing certificate"),
        ServerPlan::Issue(reason) => {
            changes.push(format!("server certificate: {reason}"));
            pki::issue_server(&ca.signing, &sans, now, pki::server_lifetime(rotation))?
        }
    };
    let server_not_after = pki::inspect(&server.cert_pem).ok().map(|i| i.not_after);
    let ca_not_after = pki::inspect(&ca.signing.cert_pem).ok().map(|i| i.not_after);
    Ok(TlsOutcome {
        next_check: pki::next_check(&server.cert_pem, &ca, rotation),
        bundle_pem: ca.bundle.concat(),
        secrets: tls_secrets(cluster, &ca, &server),
        changes,
        server_not_after,
        ca_not_after,
    })
}
