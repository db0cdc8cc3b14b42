//! `spec.network`: rules the user adds to the servers' NetworkPolicy `<c>-network-policy`.
//!
//! The operator's policy is least privilege (docs/security.md): the servers accept the API only
//! from the operator, the cluster's own Jobs, the Gateway's and the scrapers' namespaces, and
//! reach only DNS, each other, the apiserver and a transit seal inside the cluster. Whatever
//! else must pass is written here, as Kubernetes NetworkPolicy rules, and appended. The Go
//! operator's names (`network.ingressRules`, `network.egressRules`).
//!
//! Under `Hardened` no ingress rule may be added (as the Go operator): the API's peers are the
//! ones above. A seal that reaches outside the cluster (`kmip`, `kms`, a transit server not
//! addressed as an in-cluster Service) needs an egress rule: without one the servers could not
//! unseal once the policy is enforced, so such a spec is refused.

use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyIngressRule};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::cluster::SpecViolation;
use crate::unseal::Seal;

/// Most rules of each direction the user may add.
pub const MAX_RULES: usize = 16;

/// Admission: a seal that reaches outside the cluster comes with at least one egress rule. An
/// in-cluster transit address is `https://<svc>.<ns>.svc`, optionally `.cluster.local`, a port
/// (1-65535) and a path: exactly what [`in_cluster_service`] parses.
pub(crate) const SEAL_EGRESS_RULE: &str = concat!(
    "!has(self.unseal) || self.unseal.type == 'static'",
    " || (has(self.network) && has(self.network.egressRules) && size(self.network.egressRules) > 0)",
    // A missing seal block is refused by its own rule, not reported twice.
    " || (self.unseal.type == 'kmip' && !has(self.unseal.kmip)) || (self.unseal.type == 'kms' && !has(self.unseal.kms))",
    " || (self.unseal.type == 'transit' && (!has(self.unseal.transit) || self.unseal.transit.address.matches(",
    r"'^https://[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.svc(\\.cluster\\.local)?",
    r"(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/.*)?$')))",
);

/// Rules appended to the servers' NetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Extra ingress rules (Kubernetes `NetworkPolicyIngressRule`), appended to the operator's.
    /// Not allowed with the `Hardened` profile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        schema_with = "crate::placement::compact::<Vec<NetworkPolicyIngressRule>>",
        length(max = 16)
    )]
    pub ingress_rules: Vec<NetworkPolicyIngressRule>,

    /// Extra egress rules (Kubernetes `NetworkPolicyEgressRule`), appended to the operator's:
    /// e.g. to a KMIP server, a cloud KMS, or a transit server outside the cluster, which the
    /// operator cannot derive. Required when the seal reaches outside the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        schema_with = "crate::placement::compact::<Vec<NetworkPolicyEgressRule>>",
        length(max = 16)
    )]
    pub egress_rules: Vec<NetworkPolicyEgressRule>,
}

/// A Service inside the cluster a transit seal is addressed at: its namespace and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InClusterService<'a> {
    pub namespace: &'a str,
    pub port: u16,
}

/// The namespace and port of `address` when it is `https://<svc>.<ns>.svc[.cluster.local][:port][/path]`
/// (port 8200 when absent, OpenBao's), else `None`. The same shape CEL accepts.
pub fn in_cluster_service(address: &str) -> Option<InClusterService<'_>> {
    let rest = address.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (host, port.parse::<u16>().ok().filter(|p| *p != 0)?)
        }
        None => (authority, 8200),
    };
    let host = host.strip_suffix(".cluster.local").unwrap_or(host);
    let labels: Vec<&str> = host.split('.').collect();
    let [service, namespace, "svc"] = labels[..] else {
        return None;
    };
    let dns_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (dns_label(service) && dns_label(namespace)).then_some(InClusterService { namespace, port })
}

/// Why the seal needs a user egress rule (it reaches outside the cluster), if it does.
pub fn seal_reaches_outside(seal: &Seal<'_>) -> Option<&'static str> {
    match seal {
        Seal::Static | Seal::MissingBlock(_) => None,
        Seal::Transit(t) => in_cluster_service(&t.address)
            .is_none()
            .then_some("the transit address is not an in-cluster Service (https://<service>.<namespace>.svc)"),
        Seal::Kmip(_) => Some("the KMIP server is reached over the network"),
        Seal::Kms(_) => Some("the KMS plugin reaches its key service over the network"),
    }
}

/// The admission rules of `spec.network`, again in Rust.
pub(crate) fn check(spec: &crate::OpenBaoClusterSpec) -> Result<(), SpecViolation> {
    let network = spec.network.clone().unwrap_or_default();
    let refuse = |reason, message: String| Err(SpecViolation { reason, message });
    for (field, len) in [
        ("ingressRules", network.ingress_rules.len()),
        ("egressRules", network.egress_rules.len()),
    ] {
        if len > MAX_RULES {
            return refuse(
                "InvalidNetworkRules",
                format!("spec.network.{field}: at most {MAX_RULES} rules"),
            );
        }
    }
    if spec.profile == crate::Profile::Hardened && !network.ingress_rules.is_empty() {
        return refuse("IngressRulesNotAllowed", INGRESS_HARDENED_MESSAGE.into());
    }
    if network.egress_rules.is_empty()
        && let Some(why) = seal_reaches_outside(&crate::seal_of(spec.unseal.as_ref()))
    {
        return refuse("SealEgressMissing", format!("{SEAL_EGRESS_MESSAGE} ({why})"));
    }
    Ok(())
}

pub(crate) const INGRESS_HARDENED_MESSAGE: &str = "spec.network.ingressRules: not allowed with the Hardened profile; the API is open only to the operator, the cluster's Jobs, the Gateway's namespace and spec.telemetry.scrapeNamespaces";
pub(crate) const SEAL_EGRESS_MESSAGE: &str = "spec.network.egressRules: required when the seal reaches outside the cluster (unseal.type kmip or kms, or a transit address that is not https://<service>.<namespace>.svc): add an egress rule to the seal provider";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(extra: serde_json::Value) -> Result<(), SpecViolation> {
        let mut spec = json!({ "version": "2.7.2", "profile": "Development", "storage": { "size": "1Gi" } });
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value::<crate::OpenBaoClusterSpec>(spec)
            .unwrap()
            .check()
    }

    fn transit(address: &str) -> serde_json::Value {
        json!({"type": "transit", "transit": {"address": address, "keyName": "k",
               "tokenSecretRef": {"name": "t", "key": "token"}}})
    }

    #[test]
    fn in_cluster_transit_addresses_give_namespace_and_port() {
        for (address, ns, port) in [
            ("https://transit.vault.svc:8300", "vault", 8300),
            ("https://transit.vault.svc", "vault", 8200),
            ("https://transit.vault.svc.cluster.local:8201/x", "vault", 8201),
        ] {
            assert_eq!(
                in_cluster_service(address),
                Some(InClusterService { namespace: ns, port }),
                "{address}"
            );
        }
        for outside in [
            "https://vault.example.com:8200",
            "https://transit.vault.svc.example.com",
            "https://10.0.0.5:8200",
            "https://a.b.vault.svc",
            "https://Transit.vault.svc",
            "https://transit.vault.svc:0",
            "https://transit.vault.svc:99999",
            "https://transit.vault.svc:",
            "http://transit.vault.svc",
        ] {
            assert_eq!(in_cluster_service(outside), None, "{outside}");
        }
    }

    #[test]
    fn an_outside_seal_needs_an_egress_rule() {
        assert_eq!(
            check(json!({"unseal": transit("https://transit.vault.svc:8200")})),
            Ok(())
        );
        let err = check(json!({"unseal": transit("https://vault.example.com")})).unwrap_err();
        assert_eq!(err.reason, "SealEgressMissing");
        assert!(
            err.message.starts_with("spec.network.egressRules: required"),
            "{}",
            err.message
        );
        let with_rule = json!({"unseal": transit("https://vault.example.com"),
            "network": {"egressRules": [{"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}], "ports": [{"port": 8200}]}]}});
        assert_eq!(check(with_rule), Ok(()));
        let kmip = json!({"type": "kmip", "kmip": {"address": "kmip.example.com:5696", "keyId": "k",
            "clientCertSecretRef": {"name": "c", "key": "tls.crt"}, "clientKeySecretRef": {"name": "c", "key": "tls.key"}}});
        assert_eq!(check(json!({"unseal": kmip})).unwrap_err().reason, "SealEgressMissing");
    }

    #[test]
    fn hardened_refuses_ingress_rules() {
        let rules = json!({"network": {"ingressRules": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}});
        assert_eq!(check(rules.clone()), Ok(()));
        let mut hardened = rules.as_object().unwrap().clone();
        hardened.insert("profile".into(), json!("Hardened"));
        let err = check(serde_json::Value::Object(hardened)).unwrap_err();
        assert_eq!(err.reason, "IngressRulesNotAllowed");
        assert!(err.message.starts_with("spec.network.ingressRules: not allowed"));
        let many: Vec<_> = (0..=MAX_RULES).map(|_| json!({})).collect();
        let err = check(json!({"network": {"egressRules": many}})).unwrap_err();
        assert!(
            err.message.starts_with("spec.network.egressRules: at most"),
            "{}",
            err.message
        );
    }
}
