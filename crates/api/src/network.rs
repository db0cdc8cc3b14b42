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
//! unseal once the policy is enforced, so such a spec is refused. The same holds for a backup
//! store (`spec.backup.target.endpoint`) and a `tcp`/`udp` socket audit device outside the
//! cluster: the same `egressRules` are appended to the executor Jobs' policy
//! `<c>-jobs-network-policy` too (as the Go operator merges them into both). Under `Hardened`
//! every egress rule names its ports and its peers, none a wildcard.

use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyIngressRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::cluster::SpecViolation;
use crate::unseal::Seal;

/// Most rules of each direction the user may add.
pub const MAX_RULES: usize = 16;

/// An in-cluster Service host as CEL matches it: `<svc>.<ns>.svc[.cluster.local]` (DNS labels),
/// exactly what [`in_cluster_service`] and its siblings parse.
macro_rules! svc_host {
    () => {
        r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.svc(\\.cluster\\.local)?"
    };
}
/// A port 1-65535 as CEL matches it.
macro_rules! port {
    () => {
        r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
    };
}
/// At least one user egress rule, as CEL.
macro_rules! has_egress {
    () => {
        "(has(self.network) && has(self.network.egressRules) && size(self.network.egressRules) > 0)"
    };
}

/// Admission: a seal that reaches outside the cluster comes with at least one egress rule. An
/// in-cluster transit address is `https://<svc>.<ns>.svc`, optionally `.cluster.local`, a port
/// (1-65535) and a path: exactly what [`in_cluster_service`] parses.
pub(crate) const SEAL_EGRESS_RULE: &str = concat!(
    "!has(self.unseal) || self.unseal.type == 'static' || ",
    has_egress!(),
    // A missing seal block is refused by its own rule, not reported twice.
    " || (self.unseal.type == 'kmip' && !has(self.unseal.kmip)) || (self.unseal.type == 'kms' && !has(self.unseal.kms))",
    " || (self.unseal.type == 'transit' && (!has(self.unseal.transit) || self.unseal.transit.address.matches(",
    "'^https://",
    svc_host!(),
    "(:",
    port!(),
    ")?(/.*)?$')))",
);

/// Admission: a backup store outside the cluster comes with at least one egress rule (the Jobs'
/// policy reaches only an in-cluster store by itself). Exactly what [`in_cluster_url`] parses.
pub(crate) const BACKUP_EGRESS_RULE: &str = concat!(
    "!has(self.backup) || ",
    has_egress!(),
    " || self.backup.target.endpoint.matches('^https?://",
    svc_host!(),
    "(:",
    port!(),
    ")?([/?#].*)?$')",
);

/// Admission: a `tcp` or `udp` socket audit device outside the cluster comes with at least one
/// egress rule. Exactly what [`in_cluster_socket`] parses.
pub(crate) const AUDIT_EGRESS_RULE: &str = concat!(
    "!has(self.audit) || ",
    has_egress!(),
    " || self.audit.all(d, d.type != 'socket' || !has(d.socketOptions)",
    " || (has(d.socketOptions.socketType) && d.socketOptions.socketType == 'unix')",
    " || d.socketOptions.address.matches('^",
    svc_host!(),
    ":",
    port!(),
    "$'))",
);

/// An empty label selector (it selects everything), as CEL; `$s` is the selector's expression.
macro_rules! empty_selector {
    ($s:literal) => {
        concat!(
            "((!has(",
            $s,
            ".matchLabels) || size(",
            $s,
            ".matchLabels) == 0) && (!has(",
            $s,
            ".matchExpressions) || size(",
            $s,
            ".matchExpressions) == 0))"
        )
    };
}

/// Admission: under `Hardened` every user egress rule names its ports and its peers, and no peer
/// is a wildcard (an `ipBlock` of prefix length 0, every pod of every namespace, or empty).
/// Exactly what [`wildcard_egress`] refuses.
pub(crate) const HARDENED_EGRESS_RULE: &str = concat!(
    "self.profile != 'Hardened' || !has(self.network) || !has(self.network.egressRules)",
    " || self.network.egressRules.all(r, has(r.ports) && size(r.ports) > 0 && r.ports.all(p, has(p.port))",
    " && has(r.to) && size(r.to) > 0 && r.to.all(t, (has(t.ipBlock) || has(t.namespaceSelector) || has(t.podSelector))",
    " && !(has(t.ipBlock) && t.ipBlock.cidr.matches('/0*$'))",
    " && !(has(t.namespaceSelector) && ",
    empty_selector!("t.namespaceSelector"),
    " && (!has(t.podSelector) || ",
    empty_selector!("t.podSelector"),
    "))))",
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
    #[schemars(schema_with = "bounded_egress_rules", length(max = 16))]
    pub egress_rules: Vec<NetworkPolicyEgressRule>,
}

/// Most items of a list (peers, ports, selector terms and values), entries of a map (labels) in
/// a user egress rule, and the longest string: bounds that keep the CEL rules over the rules
/// ([`HARDENED_EGRESS_RULE`]) within the apiserver's cost budget.
const EGRESS_RULE_BOUND: u64 = 16;
const EGRESS_STRING_BOUND: u64 = 253;

/// The compact schema of the egress rules with every nested list, map and string bounded.
fn bounded_egress_rules(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    fn bound(value: &mut serde_json::Value) {
        let serde_json::Value::Object(map) = value else { return };
        match map.get("type").and_then(|t| t.as_str()) {
            Some("array") => {
                map.entry("maxItems").or_insert(EGRESS_RULE_BOUND.into());
            }
            Some("string") if !map.contains_key("enum") => {
                map.entry("maxLength").or_insert(EGRESS_STRING_BOUND.into());
            }
            Some("object") if map.contains_key("additionalProperties") => {
                map.entry("maxProperties").or_insert(EGRESS_RULE_BOUND.into());
            }
            _ => {}
        }
        map.values_mut().for_each(bound);
    }
    let schema = crate::placement::compact::<Vec<NetworkPolicyEgressRule>>(generator);
    let mut value = schema.as_value().clone();
    bound(&mut value);
    schemars::Schema::try_from(value).unwrap_or(schema)
}

/// A Service inside the cluster something is addressed at (a transit seal, a backup store, a
/// socket audit device): its namespace and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InClusterService<'a> {
    pub namespace: &'a str,
    pub port: u16,
}

/// `<svc>.<ns>.svc[.cluster.local][:port]` (`default_port` when the port is absent and one is
/// allowed), DNS labels only, else `None`.
fn service_authority(authority: &str, default_port: Option<u16>) -> Option<InClusterService<'_>> {
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (host, port.parse::<u16>().ok().filter(|p| *p != 0)?)
        }
        None => (authority, default_port?),
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

/// The namespace and port of `address` when it is `https://<svc>.<ns>.svc[.cluster.local][:port][/path]`
/// (port 8200 when absent, OpenBao's), else `None`. The same shape CEL accepts.
pub fn in_cluster_service(address: &str) -> Option<InClusterService<'_>> {
    let rest = address.strip_prefix("https://")?;
    service_authority(rest.split('/').next()?, Some(8200))
}

/// The namespace and port of an object-store URL `http(s)://<svc>.<ns>.svc[.cluster.local][:port]`
/// followed by nothing or a path, query or fragment (port 80 or 443 by scheme when absent), else
/// `None`. The same shape CEL accepts.
pub fn in_cluster_url(url: &str) -> Option<InClusterService<'_>> {
    let (rest, default_port) = match url.strip_prefix("https://") {
        Some(rest) => (rest, 443),
        None => (url.strip_prefix("http://")?, 80),
    };
    service_authority(rest.split(['/', '?', '#']).next()?, Some(default_port))
}

/// The namespace and port of a socket address `<svc>.<ns>.svc[.cluster.local]:port`, else `None`.
/// The same shape CEL accepts.
pub fn in_cluster_socket(address: &str) -> Option<InClusterService<'_>> {
    service_authority(address, None)
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
    if let Some((i, path)) = network
        .egress_rules
        .iter()
        .enumerate()
        .find_map(|(i, r)| oversized(&serde_json::to_value(r).unwrap_or_default(), "").map(|p| (i, p)))
    {
        return refuse(
            "InvalidNetworkRules",
            format!(
                "spec.network.egressRules[{i}]{path}: at most {EGRESS_RULE_BOUND} items or entries, strings of at most {EGRESS_STRING_BOUND} characters"
            ),
        );
    }
    if spec.profile == crate::Profile::Hardened
        && let Some((i, why)) = network
            .egress_rules
            .iter()
            .enumerate()
            .find_map(|(i, r)| wildcard_egress(r).map(|why| (i, why)))
    {
        return refuse(
            "EgressRuleTooBroad",
            format!("spec.network.egressRules[{i}]: {why} ({EGRESS_HARDENED_MESSAGE})"),
        );
    }
    if !network.egress_rules.is_empty() {
        return Ok(());
    }
    if let Some(why) = seal_reaches_outside(&crate::seal_of(spec.unseal.as_ref())) {
        return refuse("SealEgressMissing", format!("{SEAL_EGRESS_MESSAGE} ({why})"));
    }
    if let Some(b) = &spec.backup
        && in_cluster_url(&b.target.endpoint).is_none()
    {
        return refuse("BackupEgressMissing", BACKUP_EGRESS_MESSAGE.into());
    }
    if let Some(i) = spec.audit.iter().position(|d| {
        d.socket_options
            .as_ref()
            .is_some_and(|s| s.socket_type != crate::audit::SocketType::Unix && in_cluster_socket(&s.address).is_none())
    }) {
        return refuse(
            "AuditEgressMissing",
            format!("{AUDIT_EGRESS_MESSAGE} (spec.audit[{i}])"),
        );
    }
    Ok(())
}

/// The first place in an egress rule (as JSON) over the schema's bounds ([`bounded_egress_rules`]).
fn oversized(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.chars().count() as u64 > EGRESS_STRING_BOUND => Some(path.to_string()),
        Value::Array(items) if items.len() as u64 > EGRESS_RULE_BOUND => Some(path.to_string()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| oversized(v, &format!("{path}[{i}]"))),
        Value::Object(map) if path.ends_with(".matchLabels") && map.len() as u64 > EGRESS_RULE_BOUND => {
            Some(path.to_string())
        }
        Value::Object(map) => map.iter().find_map(|(k, v)| oversized(v, &format!("{path}.{k}"))),
        _ => None,
    }
}

/// Why an egress rule is too broad for `Hardened`, if it is: it must name its ports and its
/// peers, and no peer may be a wildcard.
pub fn wildcard_egress(rule: &NetworkPolicyEgressRule) -> Option<&'static str> {
    let ports = rule.ports.as_deref().unwrap_or_default();
    if ports.is_empty() || ports.iter().any(|p| p.port.is_none()) {
        return Some("every rule must name its ports, each with a port");
    }
    let to = rule.to.as_deref().unwrap_or_default();
    if to.is_empty() {
        return Some("every rule must name its peers (to)");
    }
    let empty = |s: &Option<LabelSelector>| {
        s.as_ref().is_none_or(|s| {
            s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
        })
    };
    for peer in to {
        if peer.ip_block.is_none() && peer.namespace_selector.is_none() && peer.pod_selector.is_none() {
            return Some("an empty peer matches everything");
        }
        if let Some(b) = &peer.ip_block
            && b.cidr
                .rsplit_once('/')
                .is_some_and(|(_, len)| len.bytes().all(|c| c == b'0'))
        {
            return Some("an ipBlock of prefix length 0 (0.0.0.0/0, ::/0) matches every address");
        }
        if peer.namespace_selector.is_some() && empty(&peer.namespace_selector) && empty(&peer.pod_selector) {
            return Some("an empty namespaceSelector without a podSelector matches every pod of every namespace");
        }
    }
    None
}

pub(crate) const INGRESS_HARDENED_MESSAGE: &str = "spec.network.ingressRules: not allowed with the Hardened profile; the API is open only to the operator, the cluster's Jobs, the Gateway's namespace and spec.telemetry.scrapeNamespaces";
pub(crate) const EGRESS_HARDENED_MESSAGE: &str = "spec.network.egressRules: with the Hardened profile every rule names its ports and its peers, and no peer is a wildcard (0.0.0.0/0, ::/0, every namespace, an empty peer)";
pub(crate) const BACKUP_EGRESS_MESSAGE: &str = "spec.network.egressRules: required when spec.backup.target.endpoint is not an in-cluster Service (http(s)://<service>.<namespace>.svc[:port]): add an egress rule to the object store";
pub(crate) const AUDIT_EGRESS_MESSAGE: &str = "spec.network.egressRules: required when a tcp or udp socket audit device (spec.audit[].socketOptions.address) is not an in-cluster Service (<service>.<namespace>.svc:<port>): add an egress rule to it";
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

    fn egress(rule: serde_json::Value) -> NetworkPolicyEgressRule {
        serde_json::from_value(rule).unwrap()
    }

    #[test]
    fn in_cluster_urls_and_sockets_give_namespace_and_port() {
        for (url, ns, port) in [
            ("http://s3.storage.svc:9000", "storage", 9000),
            ("http://s3.storage.svc", "storage", 80),
            ("https://s3.storage.svc.cluster.local", "storage", 443),
            ("https://s3.storage.svc:9443/x?y#z", "storage", 9443),
            ("http://s3.storage.svc?x", "storage", 80),
        ] {
            assert_eq!(
                in_cluster_url(url),
                Some(InClusterService { namespace: ns, port }),
                "{url}"
            );
        }
        for outside in [
            "https://s3.example.com",
            "http://10.0.0.5:9000",
            "ftp://s3.storage.svc",
            "https://s3.storage.svc:0",
            "https://s3.storage.svc.evil.com",
        ] {
            assert_eq!(in_cluster_url(outside), None, "{outside}");
        }
        assert_eq!(
            in_cluster_socket("logs.audit.svc.cluster.local:9090"),
            Some(InClusterService {
                namespace: "audit",
                port: 9090
            })
        );
        for outside in ["logs.audit.svc", "10.0.0.5:9090", "logs.example.com:9090", "[::1]:9090"] {
            assert_eq!(in_cluster_socket(outside), None, "{outside}");
        }
    }

    fn backup(endpoint: &str) -> serde_json::Value {
        json!({"schedule": "0 3 * * *", "target": {"endpoint": endpoint, "bucket": "backups",
               "credentialsSecretRef": {"name": "s3"}}})
    }

    #[test]
    fn an_outside_backup_store_needs_an_egress_rule() {
        assert_eq!(check(json!({"backup": backup("http://s3.storage.svc:9000")})), Ok(()));
        let err = check(json!({"backup": backup("https://s3.example.com")})).unwrap_err();
        assert_eq!(err.reason, "BackupEgressMissing");
        assert!(
            err.message
                .starts_with("spec.network.egressRules: required when spec.backup.target.endpoint")
        );
        let rule = json!([{"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}], "ports": [{"port": 443}]}]);
        assert_eq!(
            check(json!({"backup": backup("https://s3.example.com"), "network": {"egressRules": rule}})),
            Ok(())
        );
    }

    fn socket(address: &str, socket_type: &str) -> serde_json::Value {
        json!([{"type": "file", "name": "f", "fileOptions": {"filePath": "stdout"}},
               {"type": "socket", "name": "s", "socketOptions": {"address": address, "socketType": socket_type}}])
    }

    #[test]
    fn an_outside_socket_audit_device_needs_an_egress_rule() {
        assert_eq!(check(json!({"audit": socket("logs.audit.svc:9090", "tcp")})), Ok(()));
        assert_eq!(check(json!({"audit": socket("/run/audit.sock", "unix")})), Ok(()));
        for t in ["tcp", "udp"] {
            let err = check(json!({"audit": socket("logs.example.com:514", t)})).unwrap_err();
            assert_eq!(err.reason, "AuditEgressMissing");
            assert!(
                err.message
                    .starts_with("spec.network.egressRules: required when a tcp or udp socket")
            );
            assert!(err.message.ends_with("(spec.audit[1])"), "{}", err.message);
        }
    }

    #[test]
    fn hardened_egress_rules_name_ports_and_peers_and_no_wildcard() {
        let narrow = json!({"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}},
                                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kms"}}},
                                    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "kms"}}},
                                    {"podSelector": {}}],
                            "ports": [{"protocol": "TCP", "port": 5696}]});
        assert_eq!(wildcard_egress(&egress(narrow.clone())), None);
        let ports = json!([{"port": 443}]);
        for (rule, why) in [
            (json!({"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}]}), "ports"),
            (
                json!({"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}], "ports": [{"protocol": "TCP"}]}),
                "ports",
            ),
            (json!({"ports": ports}), "peers"),
            (
                json!({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": ports}),
                "prefix length 0",
            ),
            (
                json!({"to": [{"ipBlock": {"cidr": "::/0"}}], "ports": ports}),
                "prefix length 0",
            ),
            (
                json!({"to": [{"namespaceSelector": {}}], "ports": ports}),
                "every namespace",
            ),
            (
                json!({"to": [{"namespaceSelector": {"matchLabels": {}}, "podSelector": {}}], "ports": ports}),
                "every namespace",
            ),
            (json!({"to": [{}], "ports": ports}), "empty peer"),
        ] {
            assert!(wildcard_egress(&egress(rule.clone())).unwrap().contains(why), "{rule}");
            // Refused under Hardened, naming the rule; allowed otherwise.
            assert_eq!(check(json!({"network": {"egressRules": [narrow, rule]}})), Ok(()));
            let err = check(json!({"profile": "Hardened", "network": {"egressRules": [narrow, rule]}})).unwrap_err();
            assert_eq!(err.reason, "EgressRuleTooBroad");
            assert!(
                err.message.starts_with("spec.network.egressRules[1]: "),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn egress_rules_stay_within_the_schema_bounds() {
        let peers: Vec<_> = (0..=EGRESS_RULE_BOUND)
            .map(|i| json!({"ipBlock": {"cidr": format!("203.0.113.{i}/32")}}))
            .collect();
        let err = check(json!({"network": {"egressRules": [{"to": peers, "ports": [{"port": 443}]}]}})).unwrap_err();
        assert_eq!(err.reason, "InvalidNetworkRules");
        assert!(
            err.message.starts_with("spec.network.egressRules[0].to: at most 16"),
            "{}",
            err.message
        );
        let labels: serde_json::Map<_, _> = (0..=EGRESS_RULE_BOUND).map(|i| (format!("k{i}"), json!("v"))).collect();
        let err = check(json!({"network": {"egressRules": [{"to": [{"podSelector": {"matchLabels": labels}}]}]}}))
            .unwrap_err();
        assert!(
            err.message
                .starts_with("spec.network.egressRules[0].to[0].podSelector.matchLabels: at most"),
            "{}",
            err.message
        );
        let long = "a".repeat(EGRESS_STRING_BOUND as usize + 1);
        let err = check(json!({"network": {"egressRules": [{"to": [{"podSelector": {"matchLabels": {"k": long}}}]}]}}))
            .unwrap_err();
        assert!(
            err.message
                .starts_with("spec.network.egressRules[0].to[0].podSelector.matchLabels.k: "),
            "{}",
            err.message
        );
        let fine: Vec<_> = peers.into_iter().take(EGRESS_RULE_BOUND as usize).collect();
        assert_eq!(check(json!({"network": {"egressRules": [{"to": fine}]}})), Ok(()));
    }
}
