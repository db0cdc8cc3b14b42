//! Where the OpenBao pods (and the executor Jobs) run and what the user may add to them:
//! scheduling (`affinity`, `topologySpreadConstraints`, `tolerations`, `nodeSelector`,
//! `priorityClassName`), pod labels and annotations, image pull secrets, the server service
//! account's annotations and the public Service's type and annotations.
//!
//! The spellings are the Kubernetes pod spec's (and the Go operator's where it has them).
//! Labels and annotations the operator itself writes, selects on, or reads back from OpenBao's
//! service registration are refused: a pod label that collides with them would move pods in
//! or out of a Service, a StatefulSet or a PodDisruptionBudget, or fake a server's state.

use k8s_openapi::api::core::v1::{Affinity, LocalObjectReference, Toleration, TopologySpreadConstraint};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::cluster::SpecViolation;

/// Label keys the operator sets on the pods and objects it manages (selectors included).
pub const RESERVED_LABEL_KEYS: &[&str] = &[
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
];
/// The operator's own label and annotation domain (`openbao.org/cluster`, `.../revision`,
/// `.../config-hash`, ...): every key in it is reserved.
pub const RESERVED_KEY_PREFIX: &str = "openbao.org/";
/// What OpenBao's Kubernetes service registration writes on its own pod; the operator reads
/// them as the server's state.
pub const SERVICE_REGISTRATION_LABELS: &[&str] = &[
    "openbao-active",
    "openbao-initialized",
    "openbao-perf-standby",
    "openbao-sealed",
    "openbao-version",
];

/// The schema of a Kubernetes type without the descriptions of its nested fields (the field
/// using it keeps its own): the upstream texts would more than double the CRD's size, and
/// `kubectl explain pod.spec.affinity` has them.
pub fn compact<T: schemars::JsonSchema>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                if map.get("description").is_some_and(serde_json::Value::is_string) {
                    map.remove("description");
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut schema = generator.subschema_for::<T>();
    let mut value = schema.as_value().clone();
    strip(&mut value);
    if let Ok(compact) = schemars::Schema::try_from(value) {
        schema = compact;
    }
    schema
}

/// Most labels or annotations the user may add to one object.
pub const MAX_USER_METADATA_ENTRIES: usize = 64;

/// Why a user label key is refused, if it is.
pub fn reserved_label(key: &str) -> Option<&'static str> {
    if RESERVED_LABEL_KEYS.contains(&key) {
        Some("is set by the operator (it selects its pods with it)")
    } else if key.starts_with(RESERVED_KEY_PREFIX) {
        Some("openbao.org/ keys are reserved for the operator")
    } else if SERVICE_REGISTRATION_LABELS.contains(&key) {
        Some("is written by OpenBao's service registration")
    } else {
        None
    }
}

/// Why a user annotation key is refused, if it is.
pub fn reserved_annotation(key: &str) -> Option<&'static str> {
    key.starts_with(RESERVED_KEY_PREFIX)
        .then_some("openbao.org/ keys are reserved for the operator")
}

// The same rules as CEL. `self` is a map; `all` ranges over its keys.
const LABEL_KEYS_RULE: &str = "self.all(k, !(k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/component', 'app.kubernetes.io/managed-by']) && !k.startsWith('openbao.org/') && !(k in ['openbao-active', 'openbao-initialized', 'openbao-perf-standby', 'openbao-sealed', 'openbao-version']))";
const ANNOTATION_KEYS_RULE: &str = "self.all(k, !k.startsWith('openbao.org/'))";
/// A qualified name with an optional DNS-subdomain prefix (label and annotation keys).
pub(crate) const QUALIFIED_KEY_RULE: &str = "self.all(k, k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && k.size() <= 317)";

/// A label value, checked by OpenAPI (a CEL rule over every value of the map would cost more
/// than the apiserver's budget allows).
const LABEL_VALUE_PATTERN: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
/// Longest annotation value accepted (Kubernetes allows 256 KiB for all of an object's).
const MAX_ANNOTATION_VALUE: usize = 4096;

/// The schema of a map of labels: bounded, each value a label value.
pub fn label_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": MAX_USER_METADATA_ENTRIES,
        "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN},
    })
}

/// The schema of a map of annotations: bounded in entries and value length.
pub fn annotation_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": MAX_USER_METADATA_ENTRIES,
        "additionalProperties": {"type": "string", "maxLength": MAX_ANNOTATION_VALUE},
    })
}

/// Labels and annotations added to the OpenBao pods (e.g. workload identity, mesh or cost
/// labels). Keys the operator uses are refused.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMetadata {
    /// Added to every OpenBao pod. Not `app.kubernetes.io/{name,instance,component,managed-by}`,
    /// `openbao.org/*` (the operator's selectors) or the `openbao-{active,initialized,
    /// perf-standby,sealed,version}` labels of OpenBao's service registration.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "label_map")]
    #[x_kube(
        validation = Rule::new(LABEL_KEYS_RULE).message("spec.podMetadata.labels: app.kubernetes.io/{name,instance,component,managed-by}, openbao.org/* and OpenBao's service-registration labels (openbao-active, -initialized, -perf-standby, -sealed, -version) are the operator's and OpenBao's own"),
        validation = Rule::new(QUALIFIED_KEY_RULE).message("spec.podMetadata.labels: every key must be a label key such as example.com/team"),
    )]
    pub labels: BTreeMap<String, String>,
    /// Added to every OpenBao pod. Not `openbao.org/*` (the operator's restart triggers).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "annotation_map")]
    #[x_kube(
        validation = Rule::new(ANNOTATION_KEYS_RULE).message("spec.podMetadata.annotations: openbao.org/* keys are reserved for the operator"),
        validation = Rule::new(QUALIFIED_KEY_RULE).message("spec.podMetadata.annotations: every key must be an annotation key such as example.com/role"),
    )]
    pub annotations: BTreeMap<String, String>,
}

/// The OpenBao servers' service account `<name>-serviceaccount` (its name is fixed: OpenBao's
/// JWT roles and the service-registration RoleBinding name it).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSpec {
    /// Annotations of the service account, e.g. a cloud workload identity for a KMS seal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "annotation_map")]
    #[x_kube(
        validation = Rule::new(ANNOTATION_KEYS_RULE).message("spec.serviceAccount.annotations: openbao.org/* keys are reserved for the operator"),
        validation = Rule::new(QUALIFIED_KEY_RULE).message("spec.serviceAccount.annotations: every key must be an annotation key such as example.com/role"),
    )]
    pub annotations: BTreeMap<String, String>,
}

/// The public Service `<name>-public` (the API of every ready server).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `ClusterIP` (default), or `NodePort` / `LoadBalancer` to reach OpenBao without a Gateway.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations of the Service, e.g. for a cloud load balancer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "annotation_map")]
    #[x_kube(
        validation = Rule::new(ANNOTATION_KEYS_RULE).message("spec.service.annotations: openbao.org/* keys are reserved for the operator"),
        validation = Rule::new(QUALIFIED_KEY_RULE).message("spec.service.annotations: every key must be an annotation key such as example.com/role"),
    )]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The scheduling fields of the OpenBao pods, gathered for the builders.
#[derive(Clone, Copy, Debug)]
pub struct Placement<'a> {
    pub affinity: Option<&'a Affinity>,
    pub topology_spread_constraints: &'a [TopologySpreadConstraint],
    pub tolerations: &'a [Toleration],
    pub node_selector: &'a BTreeMap<String, String>,
    pub priority_class_name: Option<&'a str>,
    pub image_pull_secrets: &'a [LocalObjectReference],
}

impl crate::OpenBaoClusterSpec {
    pub fn placement(&self) -> Placement<'_> {
        Placement {
            affinity: self.affinity.as_ref(),
            topology_spread_constraints: &self.topology_spread_constraints,
            tolerations: &self.tolerations,
            node_selector: &self.node_selector,
            priority_class_name: self.priority_class_name.as_deref(),
            image_pull_secrets: &self.image_pull_secrets,
        }
    }
}

/// Checks again in Rust what admission refuses about pod customisation (a spec stored before
/// the rules existed, or written past them): reserved keys and oversized maps.
pub(crate) fn check(spec: &crate::OpenBaoClusterSpec) -> Result<(), SpecViolation> {
    let refuse = |message: String| SpecViolation {
        reason: "ReservedPodMetadata",
        message,
    };
    let sized = |field: &str, map: &BTreeMap<String, String>| {
        if map.len() > MAX_USER_METADATA_ENTRIES {
            Err(refuse(format!("{field}: at most {MAX_USER_METADATA_ENTRIES} entries")))
        } else {
            Ok(())
        }
    };
    if let Some(meta) = &spec.pod_metadata {
        sized("spec.podMetadata.labels", &meta.labels)?;
        sized("spec.podMetadata.annotations", &meta.annotations)?;
        if let Some((key, why)) = meta.labels.keys().find_map(|k| reserved_label(k).map(|w| (k, w))) {
            return Err(refuse(format!("spec.podMetadata.labels[{key}]: {why}")));
        }
        if let Some((key, why)) = meta
            .annotations
            .keys()
            .find_map(|k| reserved_annotation(k).map(|w| (k, w)))
        {
            return Err(refuse(format!("spec.podMetadata.annotations[{key}]: {why}")));
        }
    }
    let others = [
        (
            "spec.serviceAccount.annotations",
            spec.service_account.as_ref().map(|s| &s.annotations),
        ),
        (
            "spec.service.annotations",
            spec.service.as_ref().map(|s| &s.annotations),
        ),
    ];
    for (field, map) in others {
        let Some(map) = map else { continue };
        sized(field, map)?;
        if let Some((key, why)) = map.keys().find_map(|k| reserved_annotation(k).map(|w| (k, w))) {
            return Err(refuse(format!("{field}[{key}]: {why}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn check(extra: serde_json::Value) -> Result<(), crate::SpecViolation> {
        let mut spec = json!({ "version": "2.7.2", "profile": "Development", "storage": { "size": "1Gi" } });
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value::<crate::OpenBaoClusterSpec>(spec)
            .unwrap()
            .check()
    }

    #[test]
    fn reserved_keys_are_refused_naming_the_field_and_key() {
        assert_eq!(
            check(json!({"podMetadata": {"labels": {"team": "a", "example.com/x": "y"},
                "annotations": {"iam.example.com/role": "r"}}})),
            Ok(())
        );
        let cases = [
            (
                json!({"podMetadata": {"labels": {"app.kubernetes.io/instance": "x"}}}),
                "spec.podMetadata.labels[app.kubernetes.io/instance]",
            ),
            (
                json!({"podMetadata": {"labels": {"openbao.org/revision": "x"}}}),
                "spec.podMetadata.labels[openbao.org/revision]",
            ),
            (
                json!({"podMetadata": {"labels": {"openbao-active": "true"}}}),
                "spec.podMetadata.labels[openbao-active]",
            ),
            (
                json!({"podMetadata": {"annotations": {"openbao.org/config-hash": "x"}}}),
                "spec.podMetadata.annotations[openbao.org/config-hash]",
            ),
            (
                json!({"serviceAccount": {"annotations": {"openbao.org/x": "x"}}}),
                "spec.serviceAccount.annotations[openbao.org/x]",
            ),
            (
                json!({"service": {"annotations": {"openbao.org/x": "x"}}}),
                "spec.service.annotations[openbao.org/x]",
            ),
        ];
        for (extra, field) in cases {
            let err = check(extra).unwrap_err();
            assert_eq!(err.reason, "ReservedPodMetadata");
            assert!(err.message.starts_with(&format!("{field}: ")), "{}", err.message);
        }
        let many: serde_json::Map<_, _> = (0..=super::MAX_USER_METADATA_ENTRIES)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        let err = check(json!({"podMetadata": {"labels": many}})).unwrap_err();
        assert!(
            err.message.starts_with("spec.podMetadata.labels: at most"),
            "{}",
            err.message
        );
    }

    #[test]
    fn service_type_defaults_to_cluster_ip() {
        let s: super::ServiceSpec = serde_json::from_value(json!({})).unwrap();
        assert_eq!(s.type_.as_str(), "ClusterIP");
        let s: super::ServiceSpec = serde_json::from_value(json!({"type": "LoadBalancer"})).unwrap();
        assert_eq!(s.type_, super::ServiceType::LoadBalancer);
    }
}
