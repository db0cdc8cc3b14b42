//! Operator-managed TLS: a private CA and a server certificate per cluster, and the pure
//! decisions of when to issue, reissue and rotate them.
//!
//! CA rotation never breaks trust: the trust bundle (`ca.crt`) carries every CA that may have
//! signed a certificate still in use. A successor CA is first *staged* (added to the bundle,
//! not yet signing) when the signing CA nears its end; only after it has been distributed for
//! [`CA_STAGE_GRACE`] does it sign new server certificates; expired CAs are then pruned.

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Cluster;
use openbao_api::names;

pub const CA_LIFETIME: SignedDuration = SignedDuration::from_hours(10 * 365 * 24);
/// Stage a successor when the signing CA has less than this left.
pub const CA_RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(365 * 24);
/// How long a staged CA is distributed before it signs anything.
pub const CA_STAGE_GRACE: SignedDuration = SignedDuration::from_hours(24);
/// Backdating absorbs clock skew between the operator and the nodes.
const BACKDATE: SignedDuration = SignedDuration::from_hours(1);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating or signing a certificate failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("certificate is not valid PEM/X.509: {0}")]
    Parse(String),
    #[error("invalid rotation period {0:?}: use a duration such as 720h")]
    RotationPeriod(String),
}

/// A certificate with its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for KeyedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// What the controller read back from the CA Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaState {
    pub signing: KeyedCert,
    pub staged: Option<KeyedCert>,
    /// Every CA certificate clients must trust, signing CA first.
    pub bundle: Vec<String>,
}

/// Facts about a certificate that the rotation decisions need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub sans: Vec<String>,
    pub subject: String,
    pub issuer: String,
}

fn system_time(t: Timestamp) -> SystemTime {
    let secs = t.as_second();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH
    }
}

/// The rotation period (`720h`, `1h30m`): a Go duration above zero.
pub fn parse_duration(s: &str) -> Result<SignedDuration, PkiError> {
    let err = || PkiError::RotationPeriod(s.to_string());
    let d = openbao_api::duration::parse(s).map_err(|_| err())?;
    match SignedDuration::try_from(d) {
        Ok(d) if d.is_positive() => Ok(d),
        _ => Err(err()),
    }
}

/// Every name a client may use to reach the cluster: each pod, the headless and public
/// Services (short and fully qualified), the gateway hostname and `extraSANs`.
pub fn server_sans(cluster: &Cluster) -> Vec<String> {
    let (c, ns) = (cluster.name, cluster.namespace);
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    for svc in [names::headless_service(c), names::public_service(c)] {
        sans.push(svc.clone());
        sans.push(format!("{svc}.{ns}"));
        sans.push(format!("{svc}.{ns}.svc"));
        sans.push(format!("{svc}.{ns}.svc.cluster.local"));
    }
    for ordinal in 0..cluster.spec.replicas.max(0) as u32 {
        sans.push(cluster.pod_host(ordinal));
        sans.push(format!("{}.cluster.local", cluster.pod_host(ordinal)));
    }
    if let Some(host) = cluster
        .spec
        .gateway
        .as_ref()
        .filter(|g| g.enabled)
        .and_then(|g| g.hostname.clone())
    {
        sans.push(host);
    }
    if let Some(host) = cluster
        .spec
        .gateway
        .as_ref()
        .and_then(|g| g.backend_tls.hostname.clone())
    {
        sans.push(host);
    }
    sans.extend(cluster.spec.tls.extra_sans.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    sans.retain(|s| seen.insert(s.clone()));
    sans
}

/// A new CA for `cluster_name`, valid for [`CA_LIFETIME`] from `now`.
pub fn issue_ca(cluster_name: &str, now: Timestamp) -> Result<KeyedCert, PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // The timestamp keeps successive CAs of one cluster distinguishable by subject.
    dn.push(
        DnType::CommonName,
        format!("{cluster_name} OpenBao CA {}", now.strftime("%Y%m%d%H%M%S")),
    );
    dn.push(DnType::OrganizationName, "openbao-operator");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = system_time(now - BACKDATE).into();
    params.not_after = system_time(now + CA_LIFETIME).into();
    let cert = params.self_signed(&key)?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A server (and raft client) certificate for `sans`, signed by `ca`, valid for `lifetime`.
pub fn issue_server(
    ca: &KeyedCert,
    sans: &[String],
    now: Timestamp,
    lifetime: SignedDuration,
) -> Result<KeyedCert, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        sans.iter()
            .find(|s| s.contains(".svc"))
            .cloned()
            .unwrap_or_else(|| sans[0].clone()),
    );
    params.distinguished_name = dn;
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(s.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.not_before = system_time(now - BACKDATE).into();
    params.not_after = system_time(now + lifetime).into();
    let cert = params.signed_by(&key, &issuer)?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Reads validity, SANs, subject and issuer of the first certificate in `pem`.
pub fn inspect(pem: &str) -> Result<CertInfo, PkiError> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| PkiError::Parse(e.to_string()))?;
    let cert = block.parse_x509().map_err(|e| PkiError::Parse(e.to_string()))?;
    let ts = |t: x509_parser::time::ASN1Time| {
        Timestamp::from_second(t.timestamp()).map_err(|e| PkiError::Parse(e.to_string()))
    };
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => sans.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                    4 => sans.push(IpAddr::from(<[u8; 4]>::try_from(*ip).expect("4 bytes")).to_string()),
                    16 => sans.push(IpAddr::from(<[u8; 16]>::try_from(*ip).expect("16 bytes")).to_string()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        not_before: ts(cert.validity().not_before)?,
        not_after: ts(cert.validity().not_after)?,
        sans,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
    })
}

/// Splits a PEM bundle into its certificates.
pub fn split_bundle(pem: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in pem.lines() {
        if line.starts_with("-----BEGIN ") {
            current.clear();
        }
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END ") {
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

/// What to do with the CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaPlan {
    Keep,
    /// No usable CA: create one.
    Create,
    /// The signing CA nears its end: stage a successor in the bundle.
    Stage,
    /// The staged CA has been distributed long enough: make it the signer.
    Promote,
    /// Drop expired CAs from the bundle.
    Prune,
}

pub fn plan_ca(state: Option<&CaState>, now: Timestamp) -> Result<CaPlan, PkiError> {
    let Some(state) = state else { return Ok(CaPlan::Create) };
    let Ok(signing) = inspect(&state.signing.cert_pem) else {
        return Ok(CaPlan::Create);
    };
    if signing.not_after <= now {
        return Ok(CaPlan::Create);
    }
    if let Some(staged) = &state.staged {
        let staged = inspect(&staged.cert_pem)?;
        let issued = staged.not_before + BACKDATE;
        return Ok(if now >= issued + CA_STAGE_GRACE {
            CaPlan::Promote
        } else {
            CaPlan::Keep
        });
    }
    if signing.not_after - CA_RENEW_BEFORE <= now {
        return Ok(CaPlan::Stage);
    }
    let expired = state
        .bundle
        .iter()
        .any(|pem| inspect(pem).map(|i| i.not_after <= now).unwrap_or(true));
    Ok(if expired { CaPlan::Prune } else { CaPlan::Keep })
}

/// Applies `plan` to `state`, returning the new CA state (issuing a CA where the plan says so).
pub fn apply_ca_plan(
    cluster_name: &str,
    state: Option<CaState>,
    plan: &CaPlan,
    now: Timestamp,
) -> Result<CaState, PkiError> {
    let fresh = || -> Result<CaState, PkiError> {
        let ca = issue_ca(cluster_name, now)?;
        Ok(CaState {
            bundle: vec![ca.cert_pem.clone()],
            signing: ca,
            staged: None,
        })
    };
    let Some(mut state) = state else { return fresh() };
    match plan {
        CaPlan::Keep => Ok(state),
        CaPlan::Create => fresh(),
        CaPlan::Stage => {
            let next = issue_ca(cluster_name, now)?;
            state.bundle.push(next.cert_pem.clone());
            state.staged = Some(next);
            Ok(state)
        }
        CaPlan::Promote => {
            let next = state.staged.take().expect("Promote is planned only with a staged CA");
            state.bundle.retain(|c| c != &next.cert_pem);
            state.bundle.insert(0, next.cert_pem.clone());
            state.signing = next;
            Ok(state)
        }
        CaPlan::Prune => {
            state
                .bundle
                .retain(|pem| inspect(pem).map(|i| i.not_after > now).unwrap_or(false));
            Ok(state)
        }
    }
}

/// Why the server certificate must be (re)issued, if it must.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerPlan {
    Keep,
    Issue(&'static str),
}

/// Server certificates live three rotation periods and are reissued one period before expiry,
/// when a SAN is missing, or when the signing CA changed.
pub fn plan_server(
    existing_cert_pem: Option<&str>,
    ca: &CaState,
    sans: &[String],
    now: Timestamp,
    rotation: SignedDuration,
) -> ServerPlan {
    let Some(pem) = existing_cert_pem else {
        return ServerPlan::Issue("Missing");
    };
    let Ok(info) = inspect(pem) else {
        return ServerPlan::Issue("Unparseable");
    };
    let Ok(signer) = inspect(&ca.signing.cert_pem) else {
        return ServerPlan::Issue("CAUnparseable");
    };
    if info.issuer != signer.subject {
        return ServerPlan::Issue("CAChanged");
    }
    if sans.iter().any(|s| !info.sans.contains(s)) {
        return ServerPlan::Issue("SANsChanged");
    }
    if info.not_after - rotation <= now {
        return ServerPlan::Issue("NearExpiry");
    }
    ServerPlan::Keep
}

pub fn server_lifetime(rotation: SignedDuration) -> SignedDuration {
    rotation * 3
}

/// When the controller must look at the certificates again, at the latest.
pub fn next_check(server_cert_pem: &str, ca: &CaState, rotation: SignedDuration) -> Option<Timestamp> {
    let server = inspect(server_cert_pem).ok()?.not_after - rotation;
    let signing = inspect(&ca.signing.cert_pem).ok()?.not_after - CA_RENEW_BEFORE;
    let staged = ca
        .staged
        .as_ref()
        .and_then(|s| inspect(&s.cert_pem).ok())
        .map(|i| i.not_before + BACKDATE + CA_STAGE_GRACE);
    [Some(server), Some(signing), staged].into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures;
    use serde_json::json;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("720h").unwrap(), SignedDuration::from_hours(720));
        assert_eq!(parse_duration("1h30m").unwrap(), SignedDuration::from_mins(90));
        assert!(parse_duration("30d").is_err() && parse_duration("").is_err() && parse_duration("10").is_err());
    }

    #[test]
    fn sans_cover_pods_services_gateway_and_extras() {
        let spec = fixtures::spec(json!({"replicas": 3, "tls": {"extraSANs": ["10.0.0.9", "bao.example"]},
            "gateway": {"gatewayRef": {"name": "edge"}, "hostname": "bao.lane.localhost"}}));
        let sans = server_sans(&fixtures::cluster(&spec));
        for s in [
            "vault-2.vault.team-a.svc",
            "vault-public.team-a.svc",
            "bao.lane.localhost",
            "10.0.0.9",
            "bao.example",
        ] {
            assert!(sans.contains(&s.to_string()), "{s} missing");
        }
    }

    #[test]
    fn server_certificate_lifecycle() {
        let now = at("2026-01-01T00:00:00Z");
        let rotation = SignedDuration::from_hours(720);
        let ca = apply_ca_plan("c", None, &CaPlan::Create, now).unwrap();
        let sans = vec!["c-0.c.ns.svc".to_string(), "127.0.0.1".to_string()];
        let cert = issue_server(&ca.signing, &sans, now, server_lifetime(rotation)).unwrap();
        let info = inspect(&cert.cert_pem).unwrap();
        assert_eq!(info.sans, sans);
        assert_eq!(
            plan_server(Some(&cert.cert_pem), &ca, &sans, now, rotation),
            ServerPlan::Keep
        );
        let more = vec!["c-0.c.ns.svc".to_string(), "c-1.c.ns.svc".to_string()];
        assert_eq!(
            plan_server(Some(&cert.cert_pem), &ca, &more, now, rotation),
            ServerPlan::Issue("SANsChanged")
        );
        let late = now + SignedDuration::from_hours(2 * 720 + 1);
        assert_eq!(
            plan_server(Some(&cert.cert_pem), &ca, &sans, late, rotation),
            ServerPlan::Issue("NearExpiry")
        );
        assert_eq!(
            plan_server(None, &ca, &sans, now, rotation),
            ServerPlan::Issue("Missing")
        );
    }

    #[test]
    fn ca_rotation_stages_then_promotes_then_prunes() {
        let t0 = at("2026-01-01T00:00:00Z");
        let ca = apply_ca_plan("c", None, &CaPlan::Create, t0).unwrap();
        assert_eq!(plan_ca(Some(&ca), t0).unwrap(), CaPlan::Keep);
        let renew = t0 + CA_LIFETIME - CA_RENEW_BEFORE + SignedDuration::from_hours(1);
        assert_eq!(plan_ca(Some(&ca), renew).unwrap(), CaPlan::Stage);
        let staged = apply_ca_plan("c", Some(ca.clone()), &CaPlan::Stage, renew).unwrap();
        assert_eq!(staged.bundle.len(), 2, "both CAs are trusted before the new one signs");
        assert_eq!(
            staged.signing, ca.signing,
            "the old CA still signs while the new one is distributed"
        );
        assert_eq!(
            plan_ca(Some(&staged), renew + SignedDuration::from_hours(1)).unwrap(),
            CaPlan::Keep
        );
        let promote_at = renew + CA_STAGE_GRACE;
        assert_eq!(plan_ca(Some(&staged), promote_at).unwrap(), CaPlan::Promote);
        let promoted = apply_ca_plan("c", Some(staged.clone()), &CaPlan::Promote, promote_at).unwrap();
        assert_eq!(promoted.signing, staged.staged.clone().unwrap());
        assert_eq!(promoted.bundle.len(), 2);
        let server = issue_server(&ca.signing, &["a.svc".to_string()], t0, SignedDuration::from_hours(24)).unwrap();
        assert_eq!(
            plan_server(
                Some(&server.cert_pem),
                &promoted,
                &["a.svc".to_string()],
                promote_at,
                SignedDuration::from_hours(1)
            ),
            ServerPlan::Issue("CAChanged")
        );
        let after_old_expiry = t0 + CA_LIFETIME + SignedDuration::from_hours(1);
        assert_eq!(plan_ca(Some(&promoted), after_old_expiry).unwrap(), CaPlan::Prune);
        let pruned = apply_ca_plan("c", Some(promoted), &CaPlan::Prune, after_old_expiry).unwrap();
        assert_eq!(pruned.bundle.len(), 1);
    }
}
