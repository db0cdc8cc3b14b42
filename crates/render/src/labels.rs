//! Labels and annotations on every object the operator manages.

use std::collections::BTreeMap;

pub const CLUSTER_LABEL: &str = "openbao.org/cluster";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
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
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    labels.insert(COMPONENT_LABEL.to_string(), component.to_string());
    labels
}

/// The label selector of `cluster`'s children labelled for one of `components` (see
/// [`common`]): what is listed to prune the ones no longer wanted.
pub fn children_selector(cluster: &str, components: &[&str]) -> String {
    format!(
        "{CLUSTER_LABEL}={cluster},{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL} in ({})",
        components.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_children_selector_selects_what_common_labels() {
        let selector = children_selector("vault", &["backup", "upgrade"]);
        assert_eq!(
            selector,
            "openbao.org/cluster=vault,app.kubernetes.io/managed-by=openbao-operator,app.kubernetes.io/component in (backup,upgrade)"
        );
        // Every label it names is one `common` puts on the child.
        let labels = common("vault", "backup");
        assert_eq!(labels[CLUSTER_LABEL], "vault");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels[COMPONENT_LABEL], "backup");
    }
}
