//! A minimal test CA for harness processes (apiserver, etcd, OpenBao, S3). Product certificates
//! are built by `openbao-render`; this is only for the harness around it.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::net::IpAddr;

/// A PEM certificate with its PEM private key.
#[derive(Clone)]
pub struct CertPem {
    pub cert: String,
    pub key: String,
}

pub struct TestCa {
    pub pem: CertPem,
    issuer: Issuer<'static, KeyPair>,
}

fn validity(params: &mut CertificateParams) {
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(7 * 24 * 3600)).into();
}

impl TestCa {
    pub fn new(common_name: &str) -> Self {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params);
        let cert = params.self_signed(&key).expect("self-sign CA");
        let pem = CertPem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        let issuer = Issuer::new(params, key);
        Self { pem, issuer }
    }

    /// A leaf usable as server and client; `sans` may be DNS names or IP literals.
    pub fn leaf(&self, common_name: &str, organization: Option<&str>, sans: &[&str]) -> CertPem {
        let key = KeyPair::generate().expect("generate leaf key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        if let Some(org) = organization {
            params.distinguished_name.push(DnType::OrganizationName, org);
        }
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*s).try_into().expect("valid DNS SAN")),
            })
            .collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        validity(&mut params);
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        CertPem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// SHA-256 (hex) of the DER of the first certificate in `pem`.
pub fn pem_fingerprint(pem: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use base64::Engine as _;
    use sha2::Digest as _;
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = pem.find(begin).context("no PEM certificate")? + begin.len();
    let end = pem[start..]
        .find("-----END CERTIFICATE-----")
        .context("unterminated PEM certificate")?
        + start;
    let body: String = pem[start..end].split_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .context("PEM body is not base64")?;
    Ok(hex::encode(sha2::Sha256::digest(&der)))
}

/// The fingerprint ([`pem_fingerprint`]) of the certificate served at `addr` to a client asking
/// for `server_name` (`openssl s_client` prints it; nothing is verified).
pub async fn served_cert_fingerprint(addr: std::net::SocketAddr, server_name: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let run = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-servername", server_name])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), run)
        .await
        .context("openssl s_client timed out")?
        .context("run openssl s_client")?;
    pem_fingerprint(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("no certificate from {addr}: {}", String::from_utf8_lossy(&out.stderr)))
}
