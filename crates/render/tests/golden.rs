//! Golden files of the rendered OpenBao configuration for the lane's cluster shape.
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p openbao-render --test golden` and review the diff.

use openbao_api::OpenBaoClusterSpec;
use openbao_render::{Cluster, JwtTrust, OperatorIdentity, config, objects, selfinit};
use std::path::Path;

fn lane_spec() -> OpenBaoClusterSpec {
    serde_json::from_value(serde_json::json!({
        "version": "2.7.2",
        "profile": "Development",
        "replicas": 3,
        "storage": {"size": "1Gi"},
        "selfInit": {
            "oidc": {"adminServiceAccount": {"namespace": "platform", "name": "bao-admin"}},
            "demoUserpass": {"passwordSecretRef": {"name": "demo-password"}},
            "requests": [
                {"name": "seed", "operation": "update", "path": "secret/data/demo", "data": {"data": {"hello": "world"}}},
                {"name": "kv", "operation": "update", "path": "sys/mounts/secret", "data": {"type": "kv", "options": {"version": "2"}}}
            ]
        },
        "gateway": {"gatewayRef": {"name": "edge"}, "hostname": "bao.lane.localhost"}
    }))
    .unwrap()
}

fn check(name: &str, actual: &str) {
    let path = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{name} differs from its golden file; rerun with UPDATE_GOLDEN=1 and review:\n{actual}"
    );
}

#[test]
fn server_config() {
    let spec = lane_spec();
    let c = Cluster {
        name: "openbao",
        namespace: "lane",
        uid: "u",
        spec: &spec,
    };
    check("server.hcl", &config::server_hcl(&c));
}

/// A blue/green upgrade's green servers: join the original servers as non-voters.
#[test]
fn green_server_config() {
    let spec = lane_spec();
    let c = Cluster {
        name: "openbao",
        namespace: "lane",
        uid: "u",
        spec: &spec,
    };
    let joining = objects::Joining::AsNonVoter {
        revision: None,
        replicas: 3,
    };
    check(
        "server-green.hcl",
        &objects::revision_server_hcl(&c, "v2-7-2", &joining),
    );
}

#[test]
fn self_init_requests() {
    let keys = vec!["-----BEGIN PUBLIC KEY-----\nMFkw...\n-----END PUBLIC KEY-----\n".to_string()];
    check("init.hcl", &init_hcl_of(&lane_spec(), keys));
}

/// `zz-init.hcl` of cluster lane/openbao with `spec`, trusting `keys`.
fn init_hcl_of(spec: &OpenBaoClusterSpec, keys: Vec<String>) -> String {
    let c = Cluster {
        name: "openbao",
        namespace: "lane",
        uid: "u",
        spec,
    };
    let operator = OperatorIdentity {
        namespace: "openbao-operator-system".into(),
        service_account: "openbao-operator".into(),
    };
    let jwt = JwtTrust {
        issuer: "https://kubernetes.default.svc.cluster.local".into(),
        public_keys_pem: keys,
    };
    selfinit::init_hcl(&c, &operator, &jwt)
}

#[test]
fn entrypoint() {
    check("entrypoint.sh", &config::entrypoint_sh());
}

/// How hostile user strings are written (HCL1 escapes; see `openbao_render::hcl`).
#[test]
fn self_init_hostile_strings() {
    let spec: OpenBaoClusterSpec = serde_json::from_value(serde_json::json!({
        "version": "2.7.2", "profile": "Development", "replicas": 1, "storage": {"size": "1Gi"},
        "selfInit": {
            "oidc": {"enabled": false},
            "requests": [{
                "name": "hostile", "operation": "update", "path": "secret/data/${a}\"/%{b}",
                "data": {"data": {
                    "${identity.entity.id}": "$${x} %{y} \"}\nenable_response_header_hostname = true\n#",
                    "placeholder": "@@POD_NAME@@", "controls": "\u{0}\r\t\u{7f}\u{E123}", "unicode": "é😀"
                }}
            }]
        }
    }))
    .unwrap();
    check("init-hostile.hcl", &init_hcl_of(&spec, vec![]));
}

/// A cluster with a file audit device on its own volume, a stdout device, a syslog device and
/// telemetry: the audit and telemetry files, the server config's listener (metrics path opened)
/// and the metrics Service.
#[test]
fn audit_and_telemetry() {
    let mut spec = lane_spec();
    let extra: OpenBaoClusterSpec = serde_json::from_value(serde_json::json!({
        "version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"},
        "audit": [
            {"type": "file", "name": "file", "description": "audit volume", "fileOptions": {"filePath": "/openbao/audit/audit.log", "mode": "0600"}},
            {"type": "file", "name": "stdout", "elideListResponses": true, "fileOptions": {"filePath": "stdout"}},
            {"type": "syslog", "name": "syslog", "syslogOptions": {"facility": "LOCAL0", "tag": "openbao"}}
        ],
        "auditFileStorage": {"size": "2Gi"},
        "telemetry": {"prometheusRetentionTime": "1h"}
    }))
    .unwrap();
    spec.audit = extra.audit;
    spec.audit_file_storage = extra.audit_file_storage;
    spec.telemetry = extra.telemetry;
    let c = Cluster {
        name: "openbao",
        namespace: "lane",
        uid: "u",
        spec: &spec,
    };
    check("audit.hcl", &config::audit_hcl(&spec).unwrap());
    check("telemetry.hcl", &config::telemetry_hcl(&spec).unwrap());
    check("server-telemetry.hcl", &config::server_hcl(&c));
    let svc = objects::metrics_service(&c).unwrap();
    check(
        "metrics-service.json",
        &format!("{}\n", serde_json::to_string_pretty(&svc).unwrap()),
    );
    // Blue/green servers carry the same audit and telemetry files as the original ones.
    let joining = objects::Joining::AsNonVoter {
        revision: None,
        replicas: 3,
    };
    let blue = objects::config_map(&c).data.unwrap();
    let green = objects::revision_config_map(&c, "v2-7-2", &joining).data.unwrap();
    for file in [config::AUDIT_FILE, config::TELEMETRY_FILE] {
        assert_eq!(blue.get(file), green.get(file), "{file}");
        assert!(blue.contains_key(file), "{file}");
    }
}

/// A spec with every placement and pod-customisation field.
fn placement_spec() -> OpenBaoClusterSpec {
    let mut spec = lane_spec();
    let extra: OpenBaoClusterSpec = serde_json::from_value(serde_json::json!({
        "version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"},
        "affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "node-role.example.com/vault", "operator": "Exists"}]}]}},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100,
                "podAffinityTerm": {"topologyKey": "topology.kubernetes.io/zone",
                    "labelSelector": {"matchLabels": {"openbao.org/cluster": "openbao"}}}}]}
        },
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}
        ],
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "vault", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "priorityClassName": "vault-critical",
        "podMetadata": {"labels": {"team": "platform"}, "annotations": {"example.com/role": "bao"}},
        "serviceAccount": {"annotations": {"iam.example.com/role": "arn:bao"}},
        "imagePullSecrets": [{"name": "registry"}],
        "service": {"type": "LoadBalancer", "annotations": {"lb.example.com/internal": "true"}},
        "backup": {"schedule": "0 3 * * *", "target": {"endpoint": "http://s3.storage.svc:9000",
            "bucket": "b", "credentialsSecretRef": {"name": "s3"}}}
    }))
    .unwrap();
    spec.affinity = extra.affinity;
    spec.topology_spread_constraints = extra.topology_spread_constraints;
    spec.tolerations = extra.tolerations;
    spec.node_selector = extra.node_selector;
    spec.priority_class_name = extra.priority_class_name;
    spec.pod_metadata = extra.pod_metadata;
    spec.service_account = extra.service_account;
    spec.image_pull_secrets = extra.image_pull_secrets;
    spec.service = extra.service;
    spec.backup = extra.backup;
    spec
}

fn pretty<T: serde::Serialize>(value: &T) -> String {
    format!("{}\n", serde_json::to_string_pretty(value).unwrap())
}

#[test]
fn placement_and_pod_customisation() {
    let spec = placement_spec();
    let c = Cluster {
        name: "openbao",
        namespace: "lane",
        uid: "u",
        spec: &spec,
    };
    let template = |sts: k8s_openapi::api::apps::v1::StatefulSet| {
        let mut t = sts.spec.unwrap().template;
        // Only what placement sets: the rest of the pod has its own tests.
        let pod = t.spec.as_mut().unwrap();
        pod.containers.clear();
        pod.volumes = None;
        t.metadata
            .as_mut()
            .unwrap()
            .annotations
            .as_mut()
            .unwrap()
            .retain(|k, _| !k.starts_with("openbao.org/"));
        t
    };
    check(
        "placement-server-pod.json",
        &pretty(&template(objects::statefulset(&c))),
    );
    check(
        "placement-green-pod.json",
        &pretty(&template(objects::revision_statefulset(
            &c,
            "v2-7-2",
            &objects::Rollout::of_spec(&c),
        ))),
    );
    check("placement-public-service.json", &pretty(&objects::public_service(&c)));
    check("placement-service-account.json", &pretty(&objects::service_account(&c)));
    let mut job = objects::jobs::backup_job(&c, spec.backup.as_ref().unwrap(), "openbao-backup-1", "op:1")
        .spec
        .unwrap()
        .template;
    job.spec.as_mut().unwrap().containers.clear();
    job.spec.as_mut().unwrap().volumes = None;
    check("placement-backup-job-pod.json", &pretty(&job));
}
