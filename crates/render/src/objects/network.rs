//! Disruption budget and network policy of the OpenBao pods.

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyEgressRule};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::json;

use std::collections::BTreeMap;

use super::{meta, typed};
use crate::{API_PORT, CLUSTER_PORT, Cluster, ClusterNetwork, OperatorIdentity, labels};
use openbao_api::audit::SocketType;
use openbao_api::{Profile, names};

/// Keeps a raft quorum through voluntary disruptions (drains): one server at a time.
pub fn pod_disruption_budget(cluster: &Cluster) -> Option<PodDisruptionBudget> {
    if cluster.spec.replicas < 3 {
        return None;
    }
    let mut pdb: PodDisruptionBudget = typed(json!({
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels::selector(cluster.name)}}
    }));
    pdb.metadata = meta(cluster, names::pdb(cluster.name), "server");
    Some(pdb)
}

/// The servers' NetworkPolicy, least privilege for every profile (docs/security.md).
///
/// Ingress: 8200 and 8201 from the cluster's own servers (every server set's pods carry
/// [`labels::selector`]); 8200 only from the operator's namespace, the operator's external
/// source CIDRs, the cluster's executor Job pods, the Gateway's namespace and
/// `spec.telemetry.scrapeNamespaces`; then `spec.network.ingressRules` (never under `Hardened`,
/// whose spec check refuses them: they are dropped here too).
///
/// Egress: DNS in `network.dns_namespace`; 8200 and 8201 to the own servers; the apiserver's
/// Service address and every endpoint (`network.apiserver`); the namespace and port of a
/// transit seal addressed as an in-cluster Service; those of `tcp`/`udp` socket audit devices
/// addressed as in-cluster Services; then `spec.network.egressRules` (a seal or an audit device
/// reaching outside the cluster must come with them, see `openbao_api::network`).
pub fn network_policy(cluster: &Cluster, operator: &OperatorIdentity, network: &ClusterNetwork) -> NetworkPolicy {
    let user = cluster.spec.network.clone().unwrap_or_default();
    let servers = json!({"podSelector": {"matchLabels": labels::selector(cluster.name)}});
    let server_ports = json!([{"port": API_PORT}, {"port": CLUSTER_PORT}]);

    let mut api_peers = vec![
        namespace_peer(&operator.namespace),
        json!({"podSelector": {"matchLabels": super::jobs::executor_pods(cluster.name)}}),
    ];
    api_peers.extend(
        network
            .external_source_cidrs
            .iter()
            .map(|c| json!({"ipBlock": {"cidr": c}})),
    );
    if let Some(g) = cluster.spec.gateway.as_ref().filter(|g| g.enabled) {
        api_peers.push(namespace_peer(
            g.gateway_ref.namespace.as_deref().unwrap_or(cluster.namespace),
        ));
    }
    if let Some(t) = &cluster.spec.telemetry {
        api_peers.extend(t.scrape_namespaces.iter().map(|n| namespace_peer(n)));
    }
    let mut ingress = vec![
        json!({"from": [servers.clone()], "ports": server_ports.clone()}),
        json!({"from": api_peers, "ports": [{"port": API_PORT}]}),
    ];
    if cluster.spec.profile != Profile::Hardened {
        ingress.extend(user.ingress_rules.iter().map(|r| json!(r)));
    }

    let mut egress = vec![
        dns_egress(&network.dns_namespace),
        json!({"to": [servers], "ports": server_ports}),
    ];
    // One rule per port, each address a single-host block.
    let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for a in &network.apiserver {
        let bits = if a.is_ipv4() { 32 } else { 128 };
        let cidr = format!("{}/{bits}", a.ip());
        let cidrs = by_port.entry(a.port()).or_default();
        if !cidrs.contains(&cidr) {
            cidrs.push(cidr);
        }
    }
    egress.extend(by_port.into_iter().map(|(port, cidrs)| {
        let to: Vec<_> = cidrs.iter().map(|c| json!({"ipBlock": {"cidr": c}})).collect();
        json!({"to": to, "ports": [{"protocol": "TCP", "port": port}]})
    }));
    if let Some(rule) = openbao_api::transit_seal(cluster.spec.unseal.as_ref()).and_then(|t| transit_egress(&t.address))
    {
        egress.push(json!(rule));
    }
    egress.extend(audit_egress(cluster));
    egress.extend(user.egress_rules.iter().map(|r| json!(r)));

    let mut np: NetworkPolicy = typed(json!({
        "spec": {
            "podSelector": {"matchLabels": labels::selector(cluster.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        }
    }));
    np.metadata = meta(cluster, names::network_policy(cluster.name), "server");
    np
}

/// The executor Jobs' NetworkPolicy (backup, restore, restore drill), written while
/// `spec.backup` is set; a restore's Job also gets [`restore_network_policy`] for its own store.
///
/// No ingress at all: nothing connects to an executor. Egress: DNS in `dns_namespace`;
/// 8200 of the cluster's own servers (the executors log in with their projected token against
/// OpenBao's static JWT keys and never call the apiserver); the namespace and port of a backup
/// store addressed as an in-cluster Service; then `spec.network.egressRules`, the same list as the
/// servers' (as the Go operator merges it into both), which must reach a store outside the cluster
/// (`openbao_api::network`). The restore drill's own OpenBao listens on the pod's loopback,
/// which no policy filters.
pub fn jobs_network_policy(cluster: &Cluster, dns_namespace: &str) -> Option<NetworkPolicy> {
    let backup = cluster.spec.backup.as_ref()?;
    let mut np = executor_policy(
        cluster,
        super::jobs::executor_pods(cluster.name),
        &backup.target.endpoint,
        dns_namespace,
    );
    np.metadata = meta(cluster, names::jobs_network_policy(cluster.name), "executor");
    Some(np)
}

/// The NetworkPolicy of an OpenBaoRestore's Job (`restore` is its name): the same rules as
/// [`jobs_network_policy`] with the restore's store (`endpoint`) in place of the backups',
/// selecting the cluster's restore executors only (one at a time: the operation lock). Complete
/// in itself, so a restore into a cluster without backups reaches DNS and the servers too; the
/// caller sets the restore as its owner, so it goes with the restore.
pub fn restore_network_policy(cluster: &Cluster, restore: &str, endpoint: &str, dns_namespace: &str) -> NetworkPolicy {
    let selector = super::jobs::executor_labels(cluster.name, super::jobs::Executor::Restore);
    let mut np = executor_policy(cluster, selector, endpoint, dns_namespace);
    np.metadata = meta(cluster, names::restore_network_policy(restore), "restore");
    np
}

/// An executor policy selecting `pods`: no ingress; DNS, the servers' API, the store at
/// `endpoint` when it is an in-cluster Service, then the user's `egressRules`.
fn executor_policy(
    cluster: &Cluster,
    pods: BTreeMap<String, String>,
    endpoint: &str,
    dns_namespace: &str,
) -> NetworkPolicy {
    let user = cluster.spec.network.clone().unwrap_or_default();
    let mut egress = vec![
        dns_egress(dns_namespace),
        json!({"to": [{"podSelector": {"matchLabels": labels::selector(cluster.name)}}],
               "ports": [{"port": API_PORT}]}),
    ];
    if let Some(store) = openbao_api::in_cluster_url(endpoint) {
        egress
            .push(json!({"to": [namespace_peer(store.namespace)], "ports": [{"protocol": "TCP", "port": store.port}]}));
    }
    egress.extend(user.egress_rules.iter().map(|r| json!(r)));
    typed(json!({
        "spec": {
            "podSelector": {"matchLabels": pods},
            // Ingress isolated with no rule: nothing may connect. (An empty list is left out: the
            // apiserver drops it, and the applied object would differ on every reconcile.)
            "policyTypes": ["Ingress", "Egress"],
            "egress": egress,
        }
    }))
}

/// DNS (UDP and TCP 53) to every pod of namespace `ns`.
fn dns_egress(ns: &str) -> serde_json::Value {
    json!({"to": [namespace_peer(ns)], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]})
}

/// One rule per `tcp`/`udp` socket audit device addressed as an in-cluster Service: its
/// namespace on its port and protocol. Any other address needs the user's `egressRules`.
fn audit_egress(cluster: &Cluster) -> Vec<serde_json::Value> {
    let mut rules = Vec::new();
    for s in cluster.spec.audit.iter().filter_map(|d| d.socket_options.as_ref()) {
        let protocol = match s.socket_type {
            SocketType::Tcp => "TCP",
            SocketType::Udp => "UDP",
            SocketType::Unix => continue,
        };
        if let Some(service) = openbao_api::in_cluster_socket(&s.address) {
            let rule = json!({"to": [namespace_peer(service.namespace)], "ports": [{"protocol": protocol, "port": service.port}]});
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
    }
    rules
}

/// Every pod of namespace `ns`.
fn namespace_peer(ns: &str) -> serde_json::Value {
    json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}})
}

/// The egress rule to a transit server addressed as an in-cluster Service (its namespace, on
/// its port), or `None` for any other address (the user's `egressRules` must reach it).
pub fn transit_egress(address: &str) -> Option<NetworkPolicyEgressRule> {
    let service = openbao_api::in_cluster_service(address)?;
    Some(typed(
        json!({"to": [namespace_peer(service.namespace)], "ports": [{"port": service.port}]}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures;
    use crate::objects::jobs::{Executor, executor_labels};
    use crate::objects::server_set_pod_labels;
    use serde_json::Value;

    fn operator() -> OperatorIdentity {
        OperatorIdentity {
            namespace: "openbao-operator-system".into(),
            service_account: "openbao-operator".into(),
        }
    }

    fn network() -> ClusterNetwork {
        ClusterNetwork {
            dns_namespace: "kube-system".into(),
            external_source_cidrs: vec!["192.0.2.10/32".into()],
            apiserver: [
                "10.96.0.1:443",
                "192.0.2.1:6443",
                "[2001:db8::1]:6443",
                "192.0.2.1:6443",
            ]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect(),
        }
    }

    fn policy(extra: Value) -> Value {
        let spec = fixtures::spec(extra);
        let np = network_policy(&fixtures::cluster(&spec), &operator(), &network());
        serde_json::to_value(np.spec.unwrap()).unwrap()
    }

    fn ns(name: &str) -> Value {
        json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}})
    }

    fn executors() -> Value {
        json!({"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "openbao-executor",
            "app.kubernetes.io/instance": "vault",
            "openbao.org/executor-for": "vault",
        }}})
    }

    fn servers() -> Value {
        json!({"podSelector": {"matchLabels": labels::selector("vault")}})
    }

    #[test]
    fn raft_is_between_the_servers_and_the_api_only_from_the_named_peers() {
        let p = policy(json!({
            "telemetry": {"scrapeNamespaces": ["monitoring"]},
            "gateway": {"gatewayRef": {"name": "edge", "namespace": "lane-edge"}, "hostname": "b.example"},
        }));
        assert_eq!(p["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(p["podSelector"], servers()["podSelector"]);
        assert_eq!(
            p["ingress"],
            json!([
                {"from": [servers()], "ports": [{"port": 8200}, {"port": 8201}]},
                {"from": [ns("openbao-operator-system"), executors(), {"ipBlock": {"cidr": "192.0.2.10/32"}},
                          ns("lane-edge"), ns("monitoring")],
                 "ports": [{"port": 8200}]},
            ])
        );
        // The namespace as a whole is no peer any more.
        assert!(!p.to_string().contains(r#""podSelector":{}"#), "{p}");
        // A gateway in the cluster's namespace admits that namespace only with a gateway.
        let own = policy(json!({"gateway": {"gatewayRef": {"name": "edge"}, "hostname": "b.example"}}));
        assert_eq!(own["ingress"][1]["from"][3], ns("team-a"));
        assert_eq!(policy(json!({}))["ingress"][1]["from"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn every_server_set_and_every_executor_is_selected() {
        let selects = |selector: &Value, labels: &BTreeMap<String, String>| {
            selector["podSelector"]["matchLabels"]
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        };
        for revision in [None, Some("v2-7-2")] {
            assert!(selects(&servers(), &server_set_pod_labels("vault", revision)));
        }
        for e in [Executor::Backup, Executor::Restore, Executor::Verify] {
            assert!(selects(&executors(), &executor_labels("vault", e)), "{e:?}");
            // No executor is taken for a server (it gets no raft port).
            assert!(!selects(&servers(), &executor_labels("vault", e)));
        }
        assert!(!selects(&executors(), &executor_labels("other", Executor::Backup)));
    }

    #[test]
    fn egress_is_dns_the_peers_and_every_apiserver_address() {
        let p = policy(json!({}));
        assert_eq!(
            p["egress"],
            json!([
                {"to": [ns("kube-system")], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"to": [servers()], "ports": [{"port": 8200}, {"port": 8201}]},
                {"to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}], "ports": [{"protocol": "TCP", "port": 443}]},
                {"to": [{"ipBlock": {"cidr": "192.0.2.1/32"}}, {"ipBlock": {"cidr": "2001:db8::1/128"}}],
                 "ports": [{"protocol": "TCP", "port": 6443}]},
            ])
        );
    }

    fn transit(address: &str) -> Value {
        json!({"type": "transit", "transit": {"address": address, "keyName": "k",
               "tokenSecretRef": {"name": "t", "key": "token"}}})
    }

    #[test]
    fn an_in_cluster_transit_seal_is_reached_in_its_namespace_and_user_rules_come_last() {
        let p = policy(json!({"unseal": transit("https://transit.vault-transit.svc.cluster.local:8300")}));
        let egress = p["egress"].as_array().unwrap();
        assert_eq!(
            egress.last().unwrap(),
            &json!({"to": [ns("vault-transit")], "ports": [{"port": 8300}]})
        );
        let rule =
            json!({"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}], "ports": [{"protocol": "TCP", "port": 8200}]});
        let p = policy(json!({"unseal": transit("https://vault.example.com"), "network": {"egressRules": [rule]}}));
        let egress = p["egress"].as_array().unwrap();
        // Nothing derived for an outside address: only the user's rule reaches it.
        assert_eq!(egress.len(), 5);
        assert_eq!(egress.last().unwrap(), &rule);
    }

    #[test]
    fn user_ingress_rules_are_appended_but_never_under_hardened() {
        let hostile = json!({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]});
        let dev = policy(json!({"network": {"ingressRules": [hostile]}}));
        assert_eq!(dev["ingress"].as_array().unwrap().last().unwrap(), &hostile);
        let hardened = policy(json!({"profile": "Hardened", "network": {"ingressRules": [hostile]}}));
        assert_eq!(hardened["ingress"].as_array().unwrap().len(), 2);
        assert!(!hardened.to_string().contains("0.0.0.0/0"), "{hardened}");
        // The spec check refuses the same spec, naming the field.
        let spec = fixtures::spec(json!({"profile": "Hardened", "network": {"ingressRules": [hostile]}}));
        let err = spec.check().unwrap_err();
        assert!(err.message.starts_with("spec.network.ingressRules"), "{}", err.message);
    }

    fn jobs_policy(extra: Value) -> Option<Value> {
        let spec = fixtures::spec(extra);
        let np = jobs_network_policy(&fixtures::cluster(&spec), "kube-system")?;
        assert_eq!(np.metadata.name.as_deref(), Some("vault-jobs-network-policy"));
        assert_eq!(np.metadata.owner_references.as_ref().map(Vec::len), Some(1));
        Some(serde_json::to_value(np.spec.unwrap()).unwrap())
    }

    fn backup(endpoint: &str) -> Value {
        json!({"schedule": "0 3 * * *", "target": {"endpoint": endpoint, "bucket": "b", "credentialsSecretRef": {"name": "c"}}})
    }

    #[test]
    fn the_jobs_take_no_ingress_and_reach_dns_the_servers_api_and_an_in_cluster_store() {
        assert_eq!(jobs_policy(json!({})), None, "no backups, no policy");
        let p = jobs_policy(json!({"backup": backup("http://s3.storage.svc:9000")})).unwrap();
        assert_eq!(p["podSelector"], executors()["podSelector"]);
        assert_eq!(p["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(p["ingress"], Value::Null);
        assert_eq!(
            p["egress"],
            json!([
                {"to": [ns("kube-system")], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"to": [servers()], "ports": [{"port": 8200}]},
                {"to": [ns("storage")], "ports": [{"protocol": "TCP", "port": 9000}]},
            ])
        );
        // Never the apiserver: the executors do not call it.
        assert!(!p.to_string().contains("ipBlock"), "{p}");
        // An https store without a port: 443.
        let p = jobs_policy(json!({"backup": backup("https://s3.storage.svc.cluster.local/x")})).unwrap();
        assert_eq!(
            p["egress"][2],
            json!({"to": [ns("storage")], "ports": [{"protocol": "TCP", "port": 443}]})
        );
    }

    #[test]
    fn a_store_outside_the_cluster_is_reached_by_the_user_rules_only() {
        let rule =
            json!({"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}], "ports": [{"protocol": "TCP", "port": 443}]});
        let p = jobs_policy(json!({"backup": backup("https://s3.example.com"), "network": {"egressRules": [rule]}}))
            .unwrap();
        let egress = p["egress"].as_array().unwrap();
        assert_eq!(egress.len(), 3, "{p}");
        assert_eq!(egress[2], rule);
    }

    #[test]
    fn in_cluster_socket_audit_devices_are_reached_on_their_protocol() {
        let p = policy(json!({"audit": [
            {"type": "socket", "name": "a", "socketOptions": {"address": "siem.logs.svc:6514"}},
            {"type": "socket", "name": "b", "socketOptions": {"address": "siem.logs.svc.cluster.local:514", "socketType": "udp"}},
            {"type": "socket", "name": "c", "socketOptions": {"address": "/run/audit.sock", "socketType": "unix"}},
            {"type": "socket", "name": "d", "socketOptions": {"address": "siem.example.com:6514"}},
        ], "network": {"egressRules": [{"to": [{"ipBlock": {"cidr": "203.0.113.8/32"}}], "ports": [{"port": 6514}]}]}}));
        let egress = p["egress"].as_array().unwrap();
        assert_eq!(egress.len(), 7, "{p}");
        assert_eq!(
            egress[4],
            json!({"to": [ns("logs")], "ports": [{"protocol": "TCP", "port": 6514}]})
        );
        assert_eq!(
            egress[5],
            json!({"to": [ns("logs")], "ports": [{"protocol": "UDP", "port": 514}]})
        );
        assert_eq!(egress[6]["to"][0]["ipBlock"]["cidr"], "203.0.113.8/32");
    }

    #[test]
    fn a_restore_reaches_its_own_store_and_everything_else_a_job_may() {
        let spec = fixtures::spec(json!({}));
        let cluster = fixtures::cluster(&spec);
        let np = restore_network_policy(&cluster, "r1", "https://minio.archive.svc:9443", "kube-system");
        assert_eq!(np.metadata.name.as_deref(), Some("r1-restore-network-policy"));
        let p = serde_json::to_value(np.spec.unwrap()).unwrap();
        let selector = &p["podSelector"]["matchLabels"];
        let selects = |labels: &BTreeMap<String, String>| {
            selector
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        };
        assert!(selects(&executor_labels("vault", Executor::Restore)));
        assert!(!selects(&executor_labels("vault", Executor::Backup)));
        assert!(!selects(&executor_labels("vault", Executor::Verify)));
        assert_eq!(p["ingress"], Value::Null);
        assert_eq!(p["egress"][1], json!({"to": [servers()], "ports": [{"port": 8200}]}));
        assert_eq!(
            p["egress"][2],
            json!({"to": [ns("archive")], "ports": [{"protocol": "TCP", "port": 9443}]})
        );
        let outside = restore_network_policy(&cluster, "r1", "https://s3.example.com", "kube-system");
        assert_eq!(
            serde_json::to_value(outside.spec.unwrap()).unwrap()["egress"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
