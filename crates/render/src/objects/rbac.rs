//! Service accounts and the Role OpenBao's Kubernetes service registration needs.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use serde_json::json;

use super::{meta, typed};
use crate::Cluster;
use openbao_api::names;

pub fn service_account(cluster: &Cluster) -> ServiceAccount {
    let mut metadata = meta(cluster, names::service_account(cluster.name), "server");
    if let Some(sa) = cluster
        .spec
        .service_account
        .as_ref()
        .filter(|sa| !sa.annotations.is_empty())
    {
        metadata.annotations = Some(sa.annotations.clone());
    }
    ServiceAccount {
        metadata,
        ..Default::default()
    }
}

/// One service account per executor Job kind; each maps to its own OpenBao JWT role.
pub fn job_service_accounts(cluster: &Cluster) -> Vec<ServiceAccount> {
    ["backup", "upgrade", "restore"]
        .into_iter()
        .map(|job| ServiceAccount {
            metadata: meta(cluster, names::job_service_account(cluster.name, job), job),
            automount_service_account_token: Some(false),
            ..Default::default()
        })
        .collect()
}

/// What OpenBao's Kubernetes service registration needs: it labels its own pod (active, sealed,
/// initialized, version). Installed with the operator, not per cluster: see
/// [`names::SERVICE_REGISTRATION_CLUSTER_ROLE`]. The chart and `deploy/operator/rbac.yaml` carry
/// this object (a test compares them).
pub fn service_registration_cluster_role() -> ClusterRole {
    typed(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": names::SERVICE_REGISTRATION_CLUSTER_ROLE},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch", "update"]}]
    }))
}

/// Grants the service-registration ClusterRole to the cluster's server account, in the
/// cluster's namespace only.
pub fn service_registration_binding(cluster: &Cluster) -> RoleBinding {
    let mut binding: RoleBinding = typed(json!({
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": names::SERVICE_REGISTRATION_CLUSTER_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": names::service_account(cluster.name), "namespace": cluster.namespace}],
    }));
    binding.metadata = meta(cluster, names::service_registration_binding(cluster.name), "server");
    binding
}
