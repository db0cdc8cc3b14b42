//! Service accounts and the Role OpenBao's Kubernetes service registration needs.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde_json::json;

use super::{meta, typed};
use crate::Cluster;
use openbao_api::names;

pub fn service_account(cluster: &Cluster) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(cluster, names::service_account(cluster.name), "server"),
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

/// OpenBao labels its own pod (active, sealed, initialized, version).
pub fn service_registration_role(cluster: &Cluster) -> Role {
    let mut role: Role = typed(json!({
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch", "update"]}]
    }));
    role.metadata = meta(cluster, names::service_registration_role(cluster.name), "server");
    role
}

pub fn service_registration_role_binding(cluster: &Cluster) -> RoleBinding {
    let mut binding: RoleBinding = typed(json!({
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names::service_registration_role(cluster.name)},
        "subjects": [{"kind": "ServiceAccount", "name": names::service_account(cluster.name), "namespace": cluster.namespace}],
    }));
    binding.metadata = meta(cluster, names::service_registration_role(cluster.name), "server");
    binding
}
