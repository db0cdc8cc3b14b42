//! Desired Kubernetes objects for a cluster, built as typed objects with owner references.
//! Each builder is pure; the controller server-side-applies what they return.

mod bluegreen;
mod certificate;
mod gateway;
pub mod jobs;
mod metrics;
mod network;
pub mod placement;
mod rbac;
mod secrets;
mod server_set;
mod workload;

pub use bluegreen::{
    Joining, public_service_to, revision_config_map, revision_server_hcl, revision_statefulset, traffic_of,
};
pub use certificate::{
    CERT_MANAGER_GROUP, Certificate, CertificateBody, CertificateStatus, ca_copy_secret, certificate,
};
pub use gateway::{backend_tls_policy, gateway_ca_config_map, http_route};
pub use metrics::{
    METRICS_PATH, METRICS_PORT_NAME, ServiceMonitor, ServiceMonitorBody, metrics_service, service_monitor,
};
pub use network::{jobs_network_policy, network_policy, pod_disruption_budget, restore_network_policy, transit_egress};
pub use rbac::{
    job_service_accounts, service_account, service_registration_binding, service_registration_cluster_role,
};
pub use secrets::{TlsSecrets, ca_state_from_secret, init_secret, tls_secrets, unseal_key_secret};
pub use server_set::{REVISION_LABEL, server_set_pod_labels, server_set_selector};
pub use workload::{
    Rollout, TRANSIT_LOGIN_VOLUME, config_map, headless_service, image_for, public_service, statefulset,
    statefulset_with,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::de::DeserializeOwned;

use crate::{Cluster, labels};

/// Metadata of an object named `name` owned by `cluster`, labelled for `component`.
pub fn meta(cluster: &Cluster, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(cluster.namespace.to_string()),
        labels: Some(labels::common(cluster.name, component)),
        owner_references: Some(vec![owner_reference(cluster)]),
        ..Default::default()
    }
}

pub fn owner_reference(cluster: &Cluster) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/{}", openbao_api::GROUP, openbao_api::VERSION),
        kind: "OpenBaoCluster".to_string(),
        name: cluster.name.to_string(),
        uid: cluster.uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Builds a typed object from a JSON literal; the literal's shape is covered by unit tests.
fn typed<T: DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("object literal matches its Kubernetes type")
}

#[cfg(test)]
pub(crate) mod fixtures {
    use openbao_api::OpenBaoClusterSpec;

    pub fn spec(yaml_extra: serde_json::Value) -> OpenBaoClusterSpec {
        let mut base = serde_json::json!({
            "version": "2.7.2",
            "profile": "Development",
            "storage": {"size": "1Gi"},
        });
        merge(&mut base, yaml_extra);
        serde_json::from_value(base).expect("valid spec")
    }

    fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
        match (base, extra) {
            (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
                for (k, v) in e {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, e) => *b = e,
        }
    }

    pub fn cluster(spec: &OpenBaoClusterSpec) -> crate::Cluster<'_> {
        crate::Cluster {
            name: "vault",
            namespace: "team-a",
            uid: "uid-1",
            spec,
        }
    }
}
