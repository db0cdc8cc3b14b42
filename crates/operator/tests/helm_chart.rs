//! The Helm chart (charts/openbao-operator) against the kustomize install (deploy/), with the
//! real pinned Helm CLI (hack/fetch-helm.sh builds it from its Go module) and the real kustomize
//! built into kubectl:
//! - the chart's CRDs are deploy/crds.yaml byte for byte (one source of truth: `UPDATE_CRDS=1`
//!   copies it, after `make crds` regenerated it);
//! - `helm lint --strict` passes;
//! - `helm template` renders the same objects as `kubectl kustomize deploy` in substance: the
//!   same RBAC rules, bindings, Deployment pod spec and metrics Service; the only differences
//!   are the extra Helm labels and the Namespace (Helm's `--create-namespace` makes it);
//! - the values the lane uses (one replica, a watched namespace, the image) reach the pod spec,
//!   and leader election cannot be turned off with more than one replica.

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use testkit::cache::{command_output, kubectl, pinned, repo_root, run_hack};

const RELEASE: &str = "openbao-operator";
const NAMESPACE: &str = "openbao-operator-system";

fn chart_dir() -> PathBuf {
    repo_root().join("charts/openbao-operator")
}

fn helm() -> Result<PathBuf> {
    Ok(PathBuf::from(run_hack("fetch-helm.sh", &[])?))
}

/// `helm template` of the chart with `--set` values, CRDs included.
fn helm_template(sets: &[&str]) -> Result<String> {
    let mut cmd = Command::new(helm()?);
    cmd.args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE, "--include-crds"]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    command_output(&mut cmd)
}

/// The objects of a multi-document YAML stream, keyed by `Kind/namespace/name`.
fn objects(yaml: &str) -> Result<BTreeMap<String, Value>> {
    let docs: Vec<Option<Value>> = serde_saphyr::from_multiple(yaml).context("parse YAML stream")?;
    let mut map = BTreeMap::new();
    for doc in docs.into_iter().flatten() {
        if doc.is_null() {
            continue;
        }
        let key = format!(
            "{}/{}/{}",
            doc["kind"].as_str().context("kind")?,
            doc["metadata"]["namespace"].as_str().unwrap_or(""),
            doc["metadata"]["name"].as_str().context("name")?
        );
        ensure!(map.insert(key.clone(), doc).is_none(), "{key} rendered twice");
    }
    Ok(map)
}

fn kustomize() -> Result<BTreeMap<String, Value>> {
    objects(&command_output(
        Command::new(kubectl()?)
            .arg("kustomize")
            .arg(repo_root().join("deploy")),
    )?)
}

/// `IfNotPresent` is what Kubernetes defaults a tagged image to; the chart only spells it out.
fn without_default_pull_policy(mut pod_spec: Value) -> Value {
    for container in pod_spec["containers"].as_array_mut().into_iter().flatten() {
        if container["imagePullPolicy"] == "IfNotPresent"
            && let Some(c) = container.as_object_mut()
        {
            c.remove("imagePullPolicy");
        }
    }
    pod_spec
}

/// kustomize re-serializes `9.0` as `9`: the same number to the apiserver.
fn whole_numbers(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(whole_numbers).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, whole_numbers(v))).collect()),
        other => other,
    }
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| &e["value"])
}

#[test]
fn chart_crds_are_deploy_crds() -> Result<()> {
    let source = repo_root().join("deploy/crds.yaml");
    let copy = chart_dir().join("crds/openbao.org.yaml");
    let want = std::fs::read_to_string(&source).with_context(|| format!("read {}", source.display()))?;
    if std::env::var_os("UPDATE_CRDS").is_some() {
        std::fs::write(&copy, &want).with_context(|| format!("write {}", copy.display()))?;
    }
    let have = std::fs::read_to_string(&copy).with_context(|| format!("read {}", copy.display()))?;
    assert!(
        have == want,
        "{} differs from deploy/crds.yaml: run `make crds` and then \
         `UPDATE_CRDS=1 cargo test -p openbao-operator --test helm_chart chart_crds`",
        copy.display()
    );
    Ok(())
}

#[test]
fn chart_version_and_image_follow_the_workspace() -> Result<()> {
    let chart: Value = serde_saphyr::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml"))?)?;
    let workspace = env!("CARGO_PKG_VERSION");
    assert_eq!(chart["version"], workspace, "Chart.yaml version");
    assert_eq!(chart["appVersion"], workspace, "Chart.yaml appVersion");
    let rendered = objects(&helm_template(&[])?)?;
    let deployment = &rendered[&format!("Deployment/{NAMESPACE}/openbao-operator")];
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        pinned("OPERATOR_IMAGE")?.as_str(),
        "the chart's default image is OPERATOR_IMAGE of hack/versions.env"
    );
    Ok(())
}

#[test]
fn helm_lint_passes() -> Result<()> {
    let out = command_output(Command::new(helm()?).args(["lint", "--strict"]).arg(chart_dir()))?;
    assert!(out.contains("0 chart(s) failed"), "{out}");
    let out = command_output(Command::new(helm()?).args(["lint", "--strict"]).arg(chart_dir()).args([
        "--set",
        "watchNamespace=openbao,replicaCount=1,leaderElection.enabled=false",
    ]))?;
    assert!(out.contains("0 chart(s) failed"), "{out}");
    Ok(())
}

#[test]
fn helm_template_matches_the_kustomize_install() -> Result<()> {
    let helm = objects(&helm_template(&[])?)?;
    let kustomize = kustomize()?;
    let only_kustomize: Vec<_> = kustomize.keys().filter(|k| !helm.contains_key(*k)).collect();
    let only_helm: Vec<_> = helm.keys().filter(|k| !kustomize.contains_key(*k)).collect();
    assert_eq!(
        only_kustomize,
        [&format!("Namespace//{NAMESPACE}")],
        "Helm leaves the namespace to --create-namespace; nothing else may be missing"
    );
    assert!(only_helm.is_empty(), "objects only the chart renders: {only_helm:?}");

    let mut compared = Vec::new();
    for (key, want) in &kustomize {
        let Some(have) = helm.get(key) else { continue };
        let kind = want["kind"].as_str().unwrap_or_default();
        match kind {
            "ClusterRole" | "Role" => assert_eq!(have["rules"], want["rules"], "{key}: RBAC rules"),
            "ClusterRoleBinding" | "RoleBinding" => {
                assert_eq!(have["roleRef"], want["roleRef"], "{key}: roleRef");
                assert_eq!(have["subjects"], want["subjects"], "{key}: subjects");
            }
            // Without the (long) values in the message: chart_crds_are_deploy_crds says how to fix it.
            "CustomResourceDefinition" => assert!(
                whole_numbers(have["spec"].clone()) == whole_numbers(want["spec"].clone()),
                "{key}: CRD spec differs"
            ),
            "Deployment" => {
                let (h, w) = (&have["spec"], &want["spec"]);
                assert_eq!(h["replicas"], w["replicas"], "{key}: replicas");
                assert_eq!(h["selector"], w["selector"], "{key}: selector");
                assert_eq!(
                    without_default_pull_policy(h["template"]["spec"].clone()),
                    w["template"]["spec"],
                    "{key}: pod spec"
                );
                let labels = h["template"]["metadata"]["labels"].as_object().context("pod labels")?;
                for (k, v) in w["template"]["metadata"]["labels"].as_object().context("pod labels")? {
                    assert_eq!(labels.get(k), Some(v), "{key}: pod label {k}");
                }
            }
            "Service" => {
                // `type: ClusterIP` is the default the chart spells out (it is a value there).
                let mut spec = have["spec"].clone();
                if spec["type"] == "ClusterIP"
                    && let Some(s) = spec.as_object_mut()
                {
                    s.remove("type");
                }
                assert_eq!(spec, want["spec"], "{key}: Service spec");
            }
            "ServiceAccount" => {}
            "NetworkPolicy" => assert_eq!(have["spec"], want["spec"], "{key}: NetworkPolicy spec"),
            other => bail!("{key}: no comparison for kind {other}"),
        }
        // Helm adds its own labels (instance, version, managed-by, chart) to kustomize's.
        if let Some(want_labels) = want["metadata"]["labels"].as_object() {
            for (k, v) in want_labels {
                assert_eq!(have["metadata"]["labels"][k], *v, "{key}: label {k}");
            }
        }
        compared.push(key.clone());
    }
    eprintln!("helm template = kubectl kustomize deploy for: {}", compared.join(", "));
    Ok(())
}

#[test]
fn lane_values_reach_the_pod_spec() -> Result<()> {
    let rendered = objects(&helm_template(&[
        "replicaCount=1",
        "watchNamespace=openbao",
        "image.repository=example.test/operator",
        "image.tag=9.9.9",
    ])?)?;
    let deployment = &rendered[&format!("Deployment/{NAMESPACE}/openbao-operator")];
    assert_eq!(deployment["spec"]["replicas"], 1);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "example.test/operator:9.9.9");
    assert_eq!(env_value(container, "WATCH_NAMESPACE"), Some(&Value::from("openbao")));
    assert_eq!(
        env_value(container, "OPERATOR_LEADER_ELECTION"),
        None,
        "leader election is on by default"
    );

    let err = helm_template(&["leaderElection.enabled=false"]).expect_err("two replicas without a Lease");
    assert!(format!("{err:#}").contains("needs replicaCount: 1"), "{err:#}");
    let single = objects(&helm_template(&["leaderElection.enabled=false", "replicaCount=1"])?)?;
    let container =
        &single[&format!("Deployment/{NAMESPACE}/openbao-operator")]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env_value(container, "OPERATOR_LEADER_ELECTION"),
        Some(&Value::from("false"))
    );
    Ok(())
}

#[test]
fn the_grafana_dashboard_is_a_configmap_for_the_sidecar_when_asked() -> Result<()> {
    let key = format!("ConfigMap/{NAMESPACE}/openbao-operator-dashboard");
    assert!(
        !objects(&helm_template(&[])?)?.contains_key(&key),
        "no dashboard by default"
    );
    let rendered = objects(&helm_template(&["grafanaDashboard.enabled=true"])?)?;
    let config_map = rendered.get(&key).with_context(|| format!("{key} rendered"))?;
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    // The operator's dashboard and OpenBao's own (its metric names are checked against real
    // servers in crates/render/tests/audit_telemetry.rs).
    for (file, uid) in [
        ("openbao-operator.json", "openbao-operator"),
        ("openbao.json", "openbao-servers"),
    ] {
        let shipped: Value = serde_json::from_str(config_map["data"][file].as_str().context("dashboard data")?)?;
        let on_disk: Value = serde_json::from_slice(&std::fs::read(chart_dir().join("dashboards").join(file))?)?;
        assert_eq!(shipped, on_disk, "the ConfigMap carries dashboards/{file} unchanged");
        assert_eq!(shipped["uid"], uid);
    }
    Ok(())
}
