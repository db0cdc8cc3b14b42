//! Properties of the generated schema that `kubectl explain` and the apiserver rely on.

use openbao_api::crd;
use serde_json::Value;

fn undocumented(path: &str, schema: &Value, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let here = format!("{path}.{name}");
            // metadata/apiVersion/kind are documented by Kubernetes itself.
            let inherited = path.is_empty() && ["metadata", "apiVersion", "kind"].contains(&name.as_str());
            if !inherited && prop.get("description").is_none() {
                out.push(here.clone());
            }
            // Kubernetes core types carry their own documentation (the pod-spec ones are kept
            // compact in the CRD: `kubectl explain pod.spec.affinity` and
            // `kubectl explain networkpolicy.spec.ingress` have their texts).
            let core = [
                "resources",
                "conditions",
                "affinity",
                "tolerations",
                "topologySpreadConstraints",
                "imagePullSecrets",
                "ingressRules",
                "egressRules",
            ];
            if !core.contains(&name.as_str()) {
                undocumented(&here, prop, out);
            }
        }
    }
    if let Some(items) = schema.get("items") {
        undocumented(&format!("{path}[]"), items, out);
    }
}

#[test]
fn every_field_is_documented() {
    for c in crd::all() {
        let v = serde_json::to_value(&c.spec.versions[0].schema).unwrap();
        let mut missing = Vec::new();
        undocumented("", &v["openAPIV3Schema"], &mut missing);
        assert!(
            missing.is_empty(),
            "{}: fields without description: {missing:?}",
            c.metadata.name.unwrap()
        );
    }
}

#[test]
fn profile_is_required_and_has_no_default() {
    let c = &crd::all()[0];
    let v = serde_json::to_value(&c.spec.versions[0].schema).unwrap();
    let spec = &v["openAPIV3Schema"]["properties"]["spec"];
    let required: Vec<&str> = spec["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(required.contains(&"profile"), "required: {required:?}");
    assert!(spec["properties"]["profile"].get("default").is_none());
}

#[test]
fn go_operator_field_names_are_kept() {
    let yaml = crd::yaml();
    for name in [
        "backendTLS:",
        "extraSANs:",
        "gatewayRef:",
        "listenerName:",
        "rotationPeriod:",
        "selfInit:",
        "deletionPolicy:",
        "appArmorEnabled:",
        "storageClassName:",
    ] {
        assert!(yaml.contains(name), "{name} missing from the CRD");
    }
}
