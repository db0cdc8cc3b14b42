//! Labels and annotations on every object the operator manages.

use std::collections::BTreeMap;

pub const CLUSTER_LABEL: &str = "openbao.org/cluster";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const MANAGED_BY: &str = "openbao-operator";
pub const CONFIG_HASH_ANNOTATION: &str = "openbao.org/config-hash";
/// Hash of `30-audit.hcl` on the pods of a cluster with audit devices: a pod carrying the hash
/// of the current devices runs them (the `AuditReady` condition).
pub const AUDIT_HASH_ANNOTATION: &str = "openbao.org/audit-hash";

/// Labels that select a cluster's OpenBao pods (stable for the StatefulSet's lifetime).
pub fn selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "openbao".to_string()),
        ("app.kubernetes.io/instance".to_string(), cluster.to_string()),
        (CLUSTER_LABEL.to_string(), cluster.to_string()),
    ])
}

/// Full label set for an object of `component` (server, tls, config, gateway, ...).
pub fn common(cluster: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector(cluster);
    labels.insert("app.kubernetes.io/managed-by".to_string(), MANAGED_BY.to_string());
    labels.insert(COMPONENT_LABEL.to_string(), component.to_string());
    labels
}
