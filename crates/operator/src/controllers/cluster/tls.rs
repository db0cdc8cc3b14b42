//! Operator-managed TLS: read what exists, decide with the pure plans in `openbao_render::pki`,
//! and hand back the Secrets to apply.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use openbao_render::objects::{TlsSecrets, ca_state_from_secret, tls_secrets};
use openbao_render::pki::{self, CaPlan, KeyedCert, ServerPlan};
use openbao_render::{Cluster, pki::CaState};

use super::status::{TlsState, tls_reason};

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

/// What an External server Secret (the user's, or cert-manager's) gives the cluster.
#[derive(Debug, PartialEq)]
pub struct ExternalOutcome {
    pub state: TlsState,
    /// The Secret's `ca.crt`: what clients verify OpenBao with.
    pub ca_pem: Option<String>,
    /// When the certificate expires: the condition must turn then, unasked.
    pub next_check: Option<Timestamp>,
}

/// Decides `TLSReady` from the server Secret `secret_name` as found, and, with
/// `tls.certManager`, the `Ready` condition (status, reason, message) of its Certificate.
/// Pure: the caller reads both.
pub fn external_tls(
    secret_name: &str,
    server_secret: Option<&Secret>,
    issued_by: Option<Option<(String, String, String)>>,
    now: Timestamp,
) -> ExternalOutcome {
    let not_ready = |reason, message: String| ExternalOutcome {
        state: TlsState::NotReady { reason, message },
        ca_pem: None,
        next_check: None,
    };
    // cert-manager's own word on why there is no (valid) certificate.
    let issuer_says = match &issued_by {
        Some(Some((status, reason, message))) if status != "True" => {
            format!("; cert-manager: {reason}: {message}")
        }
        Some(None) => "; cert-manager has not reported on the Certificate yet".to_string(),
        _ => String::new(),
    };
    let (cert_pem, has_key, ca_pem) = (
        text(server_secret, "tls.crt"),
        text(server_secret, "tls.key").is_some(),
        text(server_secret, "ca.crt"),
    );
    let Some(cert_pem) = cert_pem.filter(|_| has_key) else {
        return match issued_by {
            Some(_) => not_ready(
                tls_reason::NOT_ISSUED,
                format!("waiting for cert-manager to issue Secret {secret_name}{issuer_says}"),
            ),
            None => not_ready(
                tls_reason::SECRET_MISSING,
                format!("Secret {secret_name} with tls.crt, tls.key and ca.crt is required with tls.mode External"),
            ),
        };
    };
    let Some(ca_pem) = ca_pem else {
        return not_ready(
            tls_reason::SECRET_MISSING,
            match issued_by {
                Some(_) => format!(
                    "Secret {secret_name} has no ca.crt: the issuer does not publish its CA (use a CA or self-signed Issuer)"
                ),
                None => format!("Secret {secret_name} has no ca.crt, which clients verify OpenBao with"),
            },
        );
    };
    let info = match pki::inspect(&cert_pem) {
        Ok(info) => info,
        Err(e) => {
            return not_ready(
                tls_reason::UNREADABLE,
                format!("tls.crt of Secret {secret_name} is not a PEM certificate: {e}{issuer_says}"),
            );
        }
    };
    if info.not_after <= now {
        return not_ready(
            tls_reason::EXPIRED,
            format!(
                "the server certificate in Secret {secret_name} expired at {}{issuer_says}",
                info.not_after
            ),
        );
    }
    ExternalOutcome {
        state: TlsState::Ready {
            server_not_after: Some(info.not_after.to_string()),
            ca_not_after: pki::inspect(&ca_pem).ok().map(|i| i.not_after.to_string()),
        },
        ca_pem: Some(ca_pem),
        next_check: Some(info.not_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(keys: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                keys.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn issued(now: Timestamp, lifetime_hours: i64) -> (String, String) {
        let ca = pki::issue_ca("t", now - jiff::SignedDuration::from_hours(2)).unwrap();
        let server = pki::issue_server(
            &ca,
            &["t-public.ns.svc".to_string()],
            now - jiff::SignedDuration::from_hours(2),
            jiff::SignedDuration::from_hours(lifetime_hours),
        )
        .unwrap();
        (server.cert_pem, ca.cert_pem)
    }

    fn reason(o: &ExternalOutcome) -> &'static str {
        match &o.state {
            TlsState::NotReady { reason, .. } => reason,
            TlsState::Ready { .. } => "Ready",
        }
    }

    #[test]
    fn a_valid_user_secret_is_ready_until_its_certificate_expires() {
        let now = Timestamp::now();
        let (cert, ca) = issued(now, 3);
        let s = secret(&[("tls.crt", &cert), ("tls.key", "k"), ("ca.crt", &ca)]);
        let ok = external_tls("t-tls-server", Some(&s), None, now);
        assert_eq!(reason(&ok), "Ready");
        assert_eq!(ok.ca_pem.as_deref(), Some(ca.as_str()));
        let expiry = ok.next_check.expect("expiry");
        let later = external_tls("t-tls-server", Some(&s), None, expiry);
        assert_eq!(reason(&later), tls_reason::EXPIRED);
        assert!(
            matches!(&later.state, TlsState::NotReady { message, .. } if message.contains("expired at")),
            "{later:?}"
        );
    }

    #[test]
    fn missing_or_broken_secrets_say_what_is_missing() {
        let now = Timestamp::now();
        assert_eq!(reason(&external_tls("s", None, None, now)), tls_reason::SECRET_MISSING);
        let no_ca = secret(&[("tls.crt", "x"), ("tls.key", "k")]);
        assert_eq!(
            reason(&external_tls("s", Some(&no_ca), None, now)),
            tls_reason::SECRET_MISSING
        );
        let garbage = secret(&[("tls.crt", "x"), ("tls.key", "k"), ("ca.crt", "c")]);
        assert_eq!(
            reason(&external_tls("s", Some(&garbage), None, now)),
            tls_reason::UNREADABLE
        );
    }

    #[test]
    fn a_certificate_not_issued_yet_carries_cert_managers_words() {
        let now = Timestamp::now();
        let waiting = Some(Some((
            "False".to_string(),
            "DoesNotExist".to_string(),
            "Issuer lane-ca not found".to_string(),
        )));
        let o = external_tls("s", None, waiting, now);
        assert_eq!(reason(&o), tls_reason::NOT_ISSUED);
        assert!(
            matches!(&o.state, TlsState::NotReady { message, .. } if message.ends_with("cert-manager: DoesNotExist: Issuer lane-ca not found")),
            "{o:?}"
        );
        assert_eq!(
            reason(&external_tls("s", None, Some(None), now)),
            tls_reason::NOT_ISSUED
        );
    }
}
