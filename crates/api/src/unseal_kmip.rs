//! `spec.unseal.kmip`: OpenBao's built-in `kmip` seal. Every server asks a KMIP server (an HSM
//! or a KMS speaking KMIP 1.2 to 1.4) to encrypt and decrypt its root key with an existing key,
//! authenticating with a TLS client certificate. The certificate, its key and the server's CA
//! come from Secrets the pods mount as files; the rendered configuration only names the files.
//!
//! Spelled like the Go operator's `unseal.kmip` where sound (`address`, `tlsServerName`); its
//! `certificate`/`key`/`caCert` (inline values) become Secret references, and `tlsSkipVerify`
//! is not offered.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::unseal::SealSecretKeyRef;

/// The KMIP seal. While the KMIP server cannot be reached, a server that (re)starts stays
/// sealed; running servers are not affected.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KmipSeal {
    /// `host:port` of the KMIP server, e.g. `kmip.hsm.svc:5696` (OpenBao's `endpoint`).
    /// Loopback, link-local (e.g. cloud metadata services) and unspecified hosts are refused.
    #[schemars(length(min = 1, max = 261))]
    #[x_kube(
        validation = Rule::new(r"self.matches('^(\\[[0-9A-Fa-f:]+\\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?):[0-9]{1,5}$')").message("spec.unseal.kmip.address: must be host:port such as kmip.hsm.svc:5696, without a scheme"),
        validation = Rule::new(r"!self.matches('(?i)^(localhost|[^:]*\\.localhost|127\\.[0-9.]+|\\[[0:]*:0*1\\])\\.?:')").message("spec.unseal.kmip.address: loopback hosts (localhost, 127.0.0.0/8, ::1) are not allowed"),
        validation = Rule::new(r"!self.matches('(?i)^(169\\.254\\.[0-9.]+|\\[fe[89ab][0-9a-f]?:[^\\]]*\\]):')").message("spec.unseal.kmip.address: link-local hosts (169.254.0.0/16, fe80::/10, e.g. cloud metadata services) are not allowed"),
        validation = Rule::new(r"!self.matches('^(0\\.0\\.0\\.0|\\[[0:]*\\]):')").message("spec.unseal.kmip.address: the unspecified address (0.0.0.0, ::) is not allowed"),
    )]
    pub address: String,

    /// Unique identifier of the wrapping key on the KMIP server (OpenBao's `kms_key_id`): an
    /// AES key, or an RSA private key, created and activated before the cluster. Changing it is
    /// a key rotation: OpenBao keeps decrypting older data with the old key, which must stay.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"), length(min = 1, max = 256))]
    pub key_id: String,

    /// The client certificate (PEM) the servers present to the KMIP server.
    pub client_cert_secret_ref: SealSecretKeyRef,

    /// The private key (PEM) of that certificate.
    pub client_key_secret_ref: SealSecretKeyRef,

    /// PEM CA bundle the KMIP server's certificate is verified with. Without it, the system's
    /// trust store is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SealSecretKeyRef>,

    /// Name the KMIP server's certificate is verified against, when it differs from the host
    /// of `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$"),
        length(min = 1, max = 253)
    )]
    pub tls_server_name: Option<String>,

    /// Timeout of one KMIP operation, in seconds (OpenBao's default: 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: Option<u32>,

    /// Encryption algorithm (OpenBao's default: `AES_GCM`; the RSA ones need an RSA key pair).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt_algorithm: Option<KmipEncryptAlgorithm>,

    /// TLS 1.2 cipher suites to allow, by Go name (e.g. `TLS_RSA_WITH_AES_128_CBC_SHA256`, which
    /// PyKMIP needs). Empty: Go's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(regex(pattern = r"^TLS_[A-Z0-9_]{1,64}$")))]
    pub tls12_ciphers: Vec<String>,
}

/// The algorithms OpenBao's KMIP seal supports.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum KmipEncryptAlgorithm {
    #[serde(rename = "AES_GCM")]
    AesGcm,
    #[serde(rename = "RSA_OAEP_SHA256")]
    RsaOaepSha256,
    #[serde(rename = "RSA_OAEP_SHA384")]
    RsaOaepSha384,
    #[serde(rename = "RSA_OAEP_SHA512")]
    RsaOaepSha512,
}

impl KmipEncryptAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            KmipEncryptAlgorithm::AesGcm => "AES_GCM",
            KmipEncryptAlgorithm::RsaOaepSha256 => "RSA_OAEP_SHA256",
            KmipEncryptAlgorithm::RsaOaepSha384 => "RSA_OAEP_SHA384",
            KmipEncryptAlgorithm::RsaOaepSha512 => "RSA_OAEP_SHA512",
        }
    }
}

/// Why this KMIP seal is unacceptable, or `None`: the CRD's address rules again (through the
/// same host checks as the backup endpoint) and the port range CEL does not check. Pure.
pub fn kmip_problem(k: &KmipSeal) -> Option<String> {
    let field = "spec.unseal.kmip.address";
    let Some((host, port)) = k.address.rsplit_once(':') else {
        return Some(format!("{field}: must be host:port such as kmip.hsm.svc:5696"));
    };
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Some(format!(
            "{field}: must be host:port such as kmip.hsm.svc:5696, without a scheme"
        ));
    }
    if !matches!(port.parse::<u32>(), Ok(1..=65535)) {
        return Some(format!("{field}: the port must be 1 to 65535"));
    }
    if let Some(problem) = crate::backup::endpoint_problem(&format!("https://{}", k.address)) {
        return Some(format!("{field}: {problem}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(address: &str) -> KmipSeal {
        serde_json::from_value(serde_json::json!({
            "address": address, "keyId": "1",
            "clientCertSecretRef": {"name": "kmip-client", "key": "tls.crt"},
            "clientKeySecretRef": {"name": "kmip-client", "key": "tls.key"},
        }))
        .unwrap()
    }

    #[test]
    fn address_rules() {
        for ok in ["kmip.hsm.svc:5696", "10.0.0.5:5696", "[2001:db8::1]:5696"] {
            assert_eq!(kmip_problem(&seal(ok)), None, "{ok}");
        }
        for (bad, why) in [
            ("kmip.hsm.svc", "host:port"),
            ("https://kmip:5696", "without a scheme"),
            ("kmip:99999", "1 to 65535"),
            ("127.0.0.1:5696", "loopback"),
            ("169.254.169.254:5696", "link-local"),
            ("0.0.0.0:5696", "unspecified"),
        ] {
            let problem = kmip_problem(&seal(bad)).unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(
                problem.starts_with("spec.unseal.kmip.address: ") && problem.contains(why),
                "{bad}: {problem}"
            );
        }
    }
}
