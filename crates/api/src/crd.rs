//! The CustomResourceDefinitions this crate defines, as objects and as YAML.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use schemars::{Schema, SchemaGenerator, json_schema};

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

/// Schema of a free-form JSON object (request bodies passed through to OpenBao).
pub fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
