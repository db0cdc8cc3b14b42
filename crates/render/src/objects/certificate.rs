//! `tls.certManager`: the cert-manager `Certificate` `<c>-tls-server` the operator owns, whose
//! Secret (same name) the servers mount, and the `ca.crt`-only copy `<c>-tls-ca` the executor
//! Jobs mount.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Secret;
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::meta;
use crate::{Cluster, labels, pki};
use openbao_api::{IssuerKind, names};

/// The API group every cert-manager issuer kind we accept belongs to.
pub const CERT_MANAGER_GROUP: &str = "cert-manager.io";

/// `cert-manager.io/v1` Certificate, the part the operator writes and the status it reads.
/// cert-manager's CRD holds the schema; it is not repeated here.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "Certificate",
    namespaced,
    status = "CertificateStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateBody {
    pub secret_name: String,
    pub issuer_ref: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    pub duration: String,
    pub renew_before: String,
    pub usages: Vec<String>,
    pub private_key: Value,
    pub secret_template: Value,
}

/// What the operator reads of a Certificate's status: its conditions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CertificateStatus {
    #[serde(default)]
    pub conditions: Vec<Value>,
}

impl Certificate {
    /// `(status, reason, message)` of the `Ready` condition cert-manager keeps.
    pub fn ready(&self) -> Option<(String, String, String)> {
        let text = |c: &Value, k: &str| c[k].as_str().unwrap_or_default().to_string();
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c["type"] == "Ready")
            .map(|c| (text(c, "status"), text(c, "reason"), text(c, "message")))
    }
}

/// The Certificate `tls.certManager` asks for: the servers' SANs (those the operator itself
/// would issue), ECDSA P-256 re-keyed at every renewal, server and client auth (raft peers
/// present it to each other), valid three rotation periods and renewed one before expiry, as
/// operator-managed certificates are. `None` without `tls.certManager`; an error when the
/// rotation period is not a duration.
pub fn certificate(cluster: &Cluster) -> Result<Option<Certificate>, pki::PkiError> {
    let Some(cert_manager) = cluster.spec.tls.cert_manager.as_ref() else {
        return Ok(None);
    };
    let rotation = pki::parse_duration(&cluster.spec.tls.rotation_period)?;
    let (ip_addresses, dns_names): (Vec<String>, Vec<String>) = pki::server_sans(cluster)
        .into_iter()
        .partition(|san| san.parse::<IpAddr>().is_ok());
    let kind = match cert_manager.issuer_ref.kind {
        IssuerKind::Issuer => "Issuer",
        IssuerKind::ClusterIssuer => "ClusterIssuer",
    };
    let mut certificate = Certificate::new(
        &names::tls_server_secret(cluster.name),
        CertificateBody {
            secret_name: names::tls_server_secret(cluster.name),
            issuer_ref: serde_json::json!({
                "name": cert_manager.issuer_ref.name,
                "kind": kind,
                "group": CERT_MANAGER_GROUP,
            }),
            dns_names,
            ip_addresses,
            duration: go_seconds(pki::server_lifetime(rotation)),
            renew_before: go_seconds(rotation),
            usages: ["digital signature", "key encipherment", "server auth", "client auth"]
                .map(String::from)
                .to_vec(),
            private_key: serde_json::json!({"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}),
            secret_template: serde_json::json!({ "labels": labels::common(cluster.name, "tls") }),
        },
    );
    certificate.metadata = meta(cluster, names::tls_server_secret(cluster.name), "tls");
    Ok(Some(certificate))
}

/// A duration as Go (and so cert-manager) parses it.
fn go_seconds(d: jiff::SignedDuration) -> String {
    format!("{}s", d.as_secs())
}

/// `<c>-tls-ca` holding only `ca.crt` (the issuer's CA, as cert-manager put it in the server
/// Secret): the executor Jobs verify OpenBao with it. No key: the CA is the issuer's.
pub fn ca_copy_secret(cluster: &Cluster, ca_pem: &str) -> Secret {
    super::secrets::secret(
        meta(cluster, names::tls_ca_secret(cluster.name), "tls"),
        "Opaque",
        vec![("ca.crt", ca_pem.as_bytes().to_vec())],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures::spec;
    use serde_json::json;

    #[test]
    fn the_certificate_carries_the_servers_sans_and_the_issuer() {
        let s = spec(json!({"tls": {"mode": "External", "rotationPeriod": "24h",
            "extraSANs": ["bao.example.com", "192.0.2.7"],
            "certManager": {"issuerRef": {"name": "lane-ca", "kind": "ClusterIssuer"}}}}));
        let c = Cluster {
            name: "demo",
            namespace: "team-a",
            uid: "uid-1",
            spec: &s,
        };
        let cert = certificate(&c).unwrap().expect("asked for");
        assert_eq!(cert.metadata.name.as_deref(), Some("demo-tls-server"));
        assert_eq!(cert.metadata.owner_references.as_ref().unwrap()[0].uid, "uid-1");
        assert_eq!(cert.spec.secret_name, "demo-tls-server");
        assert_eq!(
            cert.spec.issuer_ref,
            json!({"name": "lane-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
        );
        assert_eq!(cert.spec.ip_addresses, ["127.0.0.1", "192.0.2.7"]);
        assert!(cert.spec.dns_names.contains(&"demo-public.team-a.svc".to_string()));
        assert!(cert.spec.dns_names.contains(&"bao.example.com".to_string()));
        assert!(
            cert.spec.dns_names.contains(&c.pod_host(2)),
            "{:?}",
            cert.spec.dns_names
        );
        assert_eq!(
            (cert.spec.duration.as_str(), cert.spec.renew_before.as_str()),
            ("259200s", "86400s")
        );
        assert!(cert.spec.usages.contains(&"client auth".to_string()));
        let value = serde_json::to_value(&cert).unwrap();
        assert_eq!(value["apiVersion"], "cert-manager.io/v1");
        assert_eq!(value["spec"]["privateKey"]["rotationPolicy"], "Always");
        assert_eq!(
            value["spec"]["secretTemplate"]["labels"]["app.kubernetes.io/instance"],
            json!("demo")
        );
        assert!(value.get("status").is_none_or(Value::is_null), "{value}");
    }

    #[test]
    fn no_certificate_without_cert_manager() {
        let s = spec(json!({"tls": {"mode": "External"}}));
        assert!(
            certificate(&Cluster {
                name: "demo",
                namespace: "ns",
                uid: "uid",
                spec: &s
            })
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn the_ca_copy_holds_only_the_certificate() {
        let s = spec(json!({}));
        let secret = ca_copy_secret(
            &Cluster {
                name: "demo",
                namespace: "ns",
                uid: "uid",
                spec: &s,
            },
            "PEM",
        );
        assert_eq!(secret.metadata.name.as_deref(), Some("demo-tls-ca"));
        let keys: Vec<_> = secret.data.unwrap().into_keys().collect();
        assert_eq!(keys, ["ca.crt"]);
    }

    #[test]
    fn ready_reads_the_condition_cert_manager_keeps() {
        let s = spec(json!({"tls": {"mode": "External", "certManager": {"issuerRef": {"name": "x"}}}}));
        let mut cert = certificate(&Cluster {
            name: "demo",
            namespace: "ns",
            uid: "uid",
            spec: &s,
        })
        .unwrap()
        .unwrap();
        assert_eq!(cert.ready(), None);
        cert.status = Some(CertificateStatus {
            conditions: vec![
                json!({"type": "Ready", "status": "False", "reason": "DoesNotExist", "message": "Issuing certificate"}),
            ],
        });
        assert_eq!(
            cert.ready(),
            Some(("False".into(), "DoesNotExist".into(), "Issuing certificate".into()))
        );
    }
}
