//! The CustomResourceDefinitions this crate defines, as objects and as YAML.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{OpenBaoCluster, OpenBaoRestore};

/// Every CRD of the operator, in install order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![OpenBaoCluster::crd(), OpenBaoRestore::crd()]
}

/// All CRDs as one multi-document YAML stream (what `openbao-operator crd` prints).
pub fn yaml() -> String {
    all()
        .iter()
        .map(|crd| serde_saphyr::to_string(crd).expect("CRD serializes to YAML"))
        .map(|doc| format!("---\n{doc}"))
        .collect()
}
