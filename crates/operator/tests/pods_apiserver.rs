//! The pods the operator makes, on a real kube-apiserver (no kubelet):
//! - Pod Security `restricted`: in a namespace labelled `enforce=restricted` (latest), the
//!   apiserver's built-in PodSecurity admission accepts a Pod built from every pod template the
//!   operator renders (the original servers, a blue/green revision's, with the static and the
//!   transit seal, the backup, pre-upgrade snapshot, restore and drill Jobs with the drill's
//!   OpenBao sidecar), from the operator's own Deployment rendered by the real Helm chart and
//!   the S3 server pod of `node_backup` (the node tests' namespaces enforce `restricted`);
//!   it refuses a privileged container and an OpenBao container that adds `IPC_LOCK` (why the
//!   rendered config sets `disable_mlock`) in the same namespace.
//! - Placement and pod customisation: an OpenBaoCluster with every field is accepted and kept
//!   whole by the schema; the controller's StatefulSet, public Service and service account carry
//!   the fields, and so do the Jobs built from the stored spec; hostile or invalid specs are
//!   refused with messages that name the field.

mod apiserver_common;

use anyhow::{Context as _, Result, bail, ensure};
use apiserver_common::{client_with_crds, context, merged, refusal, untyped_clusters};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, Service, ServiceAccount, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, OpenBaoClusterSpec, OpenBaoRestoreSpec, names};
use openbao_operator::controllers::cluster;
use openbao_render::objects::{self, jobs};
use openbao_render::{Cluster, labels};
use serde_json::{Value, json};
use std::process::Command;
use std::sync::Arc;
use testkit::apiserver::{ApiServer, create_namespace, create_restricted_namespace};
use testkit::cache::{command_output, repo_root, run_hack};

const OPERATOR_IMAGE: &str = "ghcr.io/example/openbao-operator:test";

fn spec(extra: Value) -> Result<OpenBaoClusterSpec> {
    let spec = json!({
        "version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"},
        "selfInit": {"demoUserpass": {"passwordSecretRef": {"name": "demo-password"}}},
        "audit": [{"type": "file", "name": "file", "fileOptions": {"filePath": "/openbao/audit/audit.log"}}],
        "backup": {"schedule": "0 3 * * *", "target": {"endpoint": "http://s3.storage.svc:9000",
            "bucket": "backups", "credentialsSecretRef": {"name": "s3"}}},
    });
    Ok(serde_json::from_value(merged(spec, extra))?)
}

/// Every placement and pod-customisation field.
fn placement() -> Value {
    json!({
        "affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["vault"]}]}]}},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100,
                "podAffinityTerm": {"topologyKey": "topology.kubernetes.io/zone",
                    "labelSelector": {"matchLabels": {"openbao.org/cluster": "placed"}}}}]}
        },
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule", "matchLabelKeys": ["controller-revision-hash"]}],
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "vault", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "priorityClassName": "vault-critical",
        "podMetadata": {"labels": {"team": "platform"}, "annotations": {"example.com/role": "bao"}},
        "serviceAccount": {"annotations": {"iam.example.com/role": "arn:bao"}},
        "imagePullSecrets": [{"name": "registry"}],
        "service": {"type": "LoadBalancer", "annotations": {"lb.example.com/internal": "true"}},
    })
}

/// The Pod a controller would create from `template` (a StatefulSet's also mounts one volume
/// per claim template, as the StatefulSet controller adds them).
fn pod_of(name: &str, template: &PodTemplateSpec, claims: &[String]) -> Pod {
    let mut spec = template.spec.clone().expect("templates have a pod spec");
    for claim in claims {
        spec.volumes.get_or_insert_with(Vec::new).push(
            serde_json::from_value::<Volume>(json!({"name": claim,
                "persistentVolumeClaim": {"claimName": format!("{claim}-{name}")}}))
            .expect("volume literal"),
        );
    }
    // The Priority admission plugin wants the class to exist; placement has its own test.
    spec.priority_class_name = None;
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: meta.labels,
            annotations: meta.annotations,
            ..Default::default()
        },
        spec: Some(spec),
        ..Default::default()
    }
}

fn statefulset_pod(name: &str, sts: &StatefulSet) -> Pod {
    let s = sts.spec.as_ref().expect("StatefulSet spec");
    let claims: Vec<String> = s
        .volume_claim_templates
        .iter()
        .flatten()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    pod_of(name, &s.template, &claims)
}

fn job_pod(name: &str, job: &Job) -> Pod {
    pod_of(name, &job.spec.as_ref().expect("Job spec").template, &[])
}

/// Creates the service account a pod runs as (the ServiceAccount admission plugin refuses
/// pods whose account does not exist).
async fn ensure_service_account(client: &Client, ns: &str, pod: &Pod) -> Result<()> {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    if api.get_opt(&name).await?.is_none() {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &sa)
            .await
            .with_context(|| format!("create service account {name}"))?;
    }
    Ok(())
}

/// Creates `pod` (dry run: every admission plugin runs, nothing is stored).
async fn admit(client: &Client, ns: &str, pod: &Pod) -> Result<(), String> {
    ensure_service_account(client, ns, pod)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&params, pod)
        .await
        .map(|_| ())
        .map_err(|e| match e {
            kube::Error::Api(status) => status.message,
            other => format!("{other:?}"),
        })
}

/// The operator's Deployment as the real Helm chart renders it with its default values.
fn chart_deployment_pod() -> Result<Pod> {
    let helm = run_hack("fetch-helm.sh", &[])?;
    let yaml = command_output(
        Command::new(helm)
            .args(["template", "openbao-operator"])
            .arg(repo_root().join("charts/openbao-operator"))
            .args(["--namespace", "openbao-operator-system"]),
    )?;
    let docs: Vec<Option<Value>> = serde_saphyr::from_multiple(&yaml).context("parse helm template")?;
    let deployment = docs
        .into_iter()
        .flatten()
        .find(|d| d["kind"] == "Deployment")
        .context("the chart renders a Deployment")?;
    let template: PodTemplateSpec = serde_json::from_value(deployment["spec"]["template"].clone())?;
    Ok(pod_of("openbao-operator", &template, &[]))
}

/// The lane's own workloads whose namespaces `hack/lane.sh` labels `restricted`.
const RESTRICTED_LANE_MANIFESTS: &[&str] = &[
    "deploy/lane/edge.yaml",
    "deploy/lane/storage-rustfs.yaml",
    "deploy/lane/storage-s3s-fs.yaml",
    "deploy/lane/monitoring.yaml",
];

/// A Pod from the template of every Deployment in the lane's manifests.
fn lane_pods() -> Result<Vec<(String, Pod)>> {
    let mut pods = Vec::new();
    for file in RESTRICTED_LANE_MANIFESTS {
        let yaml = std::fs::read_to_string(repo_root().join(file)).with_context(|| format!("read {file}"))?;
        let docs: Vec<Option<Value>> = serde_saphyr::from_multiple(&yaml).with_context(|| format!("parse {file}"))?;
        for d in docs.into_iter().flatten().filter(|d| d["kind"] == "Deployment") {
            let name = d["metadata"]["name"].as_str().context("Deployment name")?.to_string();
            let template: PodTemplateSpec = serde_json::from_value(d["spec"]["template"].clone())?;
            pods.push((
                format!("{file}: Deployment {name}"),
                pod_of(&format!("lane-{name}"), &template, &[]),
            ));
        }
    }
    Ok(pods)
}

fn restore_spec() -> Result<OpenBaoRestoreSpec> {
    Ok(serde_json::from_value(json!({
        "cluster": "restricted",
        "source": {"key": "b/restricted/x.snap", "target": {"endpoint": "http://s3.storage.svc:9000",
            "bucket": "backups", "credentialsSecretRef": {"name": "s3"}}},
    }))?)
}

#[tokio::test]
async fn every_operator_pod_passes_pod_security_restricted() -> Result<()> {
    let server = ApiServer::shared().await?;
    let client = server.client().await?;
    let ns = create_restricted_namespace(&client, "restricted").await?;

    let mut pods: Vec<(String, Pod)> = Vec::new();
    let specs = [
        ("static seal", spec(placement())?),
        (
            "transit seal",
            spec(
                json!({"unseal": {"type": "transit", "transit": {"address": "https://t.example:8200",
                "keyName": "k", "tokenSecretRef": {"name": "t", "key": "token"},
                "caSecretRef": {"name": "t-ca", "key": "ca.crt"}}}, "auditFileStorage": {"size": "1Gi"}}),
            )?,
        ),
        (
            "transit seal with login",
            spec(
                json!({"unseal": {"type": "transit", "transit": {"address": "https://t.example:8200",
                "keyName": "k", "login": {"mountPath": "kubernetes", "role": "sealer"}}}}),
            )?,
        ),
    ];
    for (i, (what, spec)) in specs.iter().enumerate() {
        let c = Cluster {
            name: "restricted",
            namespace: &ns,
            uid: "uid",
            spec,
        };
        let green = objects::revision_statefulset(&c, "v2-7-2", &objects::Rollout::of_spec(&c));
        pods.push((
            format!("server ({what})"),
            statefulset_pod(&format!("s{i}-0"), &objects::statefulset(&c)),
        ));
        pods.push((
            format!("blue/green server ({what})"),
            statefulset_pod(&format!("g{i}-0"), &green),
        ));
    }
    let spec = &specs[0].1;
    let c = Cluster {
        name: "restricted",
        namespace: &ns,
        uid: "uid",
        spec,
    };
    let backup = spec.backup.as_ref().unwrap();
    let owner = objects::owner_reference(&c);
    let job_pods = [
        ("backup Job", jobs::backup_job(&c, backup, "b", OPERATOR_IMAGE)),
        (
            "pre-upgrade snapshot Job",
            jobs::pre_upgrade_snapshot_job(&c, backup, "p", OPERATOR_IMAGE),
        ),
        (
            "restore Job",
            jobs::restore_job(&c, &restore_spec()?, owner, "r", OPERATOR_IMAGE),
        ),
        (
            "restore drill Job (OpenBao sidecar)",
            jobs::verify_job(&c, backup, "v", OPERATOR_IMAGE, "2.7.2", None),
        ),
    ];
    for (what, job) in &job_pods {
        pods.push((what.to_string(), job_pod(&format!("job-{}", pods.len()), job)));
    }
    pods.push(("operator Deployment (Helm chart)".into(), chart_deployment_pod()?));
    // The node test of backups runs its S3 server in its restricted namespace too.
    let s3: Pod = serde_json::from_value(testkit::s3::server_pod(
        "localhost/s3:test",
        json!(["/data"]),
        json!([{"name": "S3_ACCESS_KEY", "value": "x"}]),
        10001,
        9000,
    ))?;
    pods.push(("node_backup's S3 server".into(), s3));

    pods.extend(lane_pods()?);

    let mut refused = Vec::new();
    for (what, pod) in &pods {
        match admit(&client, &ns, pod).await {
            Ok(()) => eprintln!("restricted admits: {what}"),
            Err(message) => refused.push(format!("{what}: {message}")),
        }
    }
    ensure!(refused.is_empty(), "refused under restricted:\n{}", refused.join("\n"));

    // Negative controls in the same namespace: the admission is really enforcing.
    let mut privileged = pods[0].1.clone();
    privileged.metadata.name = Some("privileged".into());
    let context = privileged.spec.as_mut().unwrap().containers[0]
        .security_context
        .as_mut()
        .unwrap();
    // Pod validation refuses `privileged` next to `allowPrivilegeEscalation: false`.
    context.privileged = Some(true);
    context.allow_privilege_escalation = None;
    let mut ipc_lock = pods[0].1.clone();
    ipc_lock.metadata.name = Some("ipc-lock".into());
    ipc_lock.spec.as_mut().unwrap().containers[0]
        .security_context
        .as_mut()
        .unwrap()
        .capabilities
        .as_mut()
        .unwrap()
        .add = Some(vec!["IPC_LOCK".into()]);
    for (pod, expect) in [(&privileged, "privileged"), (&ipc_lock, "IPC_LOCK")] {
        match admit(&client, &ns, pod).await {
            Ok(()) => bail!("restricted admitted {expect}"),
            Err(message) => {
                eprintln!("restricted refuses {expect}: {message}");
                ensure!(
                    message.contains("violates PodSecurity \"restricted:latest\"") && message.contains(expect),
                    "{message}"
                );
            }
        }
    }
    // Why IPC_LOCK is never needed: every rendered config turns mlock off.
    for (_, spec) in &specs {
        let c = Cluster {
            name: "restricted",
            namespace: &ns,
            uid: "uid",
            spec,
        };
        ensure!(openbao_render::config::server_hcl(&c).contains("disable_mlock = true"));
    }
    ensure!(jobs::drill_server_hcl().contains("disable_mlock = true"));
    eprintln!("{} pod templates admitted under restricted, 2 refused", pods.len());
    Ok(())
}

#[tokio::test]
async fn placement_fields_are_kept_and_reach_every_object() -> Result<()> {
    let client = client_with_crds(ApiServer::shared().await?).await?;
    let ns = create_namespace(&client, "placement").await?;
    let ctx = Arc::new(context(&client).await);

    let sent = spec(placement())?;
    let api = Api::<OpenBaoCluster>::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &OpenBaoCluster::new("placed", sent.clone()))
        .await
        .context("create a cluster with every placement field")?;
    // Nothing pruned by the schema: the stored spec is the one sent.
    let stored = api.get("placed").await?;
    ensure!(stored.spec == sent, "the apiserver changed the spec: {:?}", stored.spec);
    cluster::reconcile(Arc::new(stored.clone()), ctx.clone()).await?;

    let sts = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .get(&names::server_set("placed", None))
        .await?;
    let template = sts.spec.unwrap().template;
    let meta = template.metadata.unwrap();
    let pod_labels = meta.labels.unwrap();
    ensure!(pod_labels["team"] == "platform" && pod_labels[labels::CLUSTER_LABEL] == "placed");
    ensure!(meta.annotations.unwrap()["example.com/role"] == "bao");
    let pod = template.spec.unwrap();
    ensure!(pod.affinity == sent.affinity, "affinity {:?}", pod.affinity);
    let spread = pod.topology_spread_constraints.unwrap();
    ensure!(spread.len() == 1 && spread[0].when_unsatisfiable == "DoNotSchedule");
    ensure!(spread[0].match_label_keys == Some(vec!["controller-revision-hash".to_string()]));
    ensure!(
        spread[0].label_selector.as_ref().and_then(|s| s.match_labels.clone())
            == Some(objects::server_set_selector("placed", None))
    );
    ensure!(pod.tolerations.unwrap() == sent.tolerations);
    ensure!(pod.node_selector.unwrap() == sent.node_selector);
    ensure!(pod.priority_class_name.as_deref() == Some("vault-critical"));
    ensure!(pod.image_pull_secrets.unwrap()[0].name == "registry");

    let svc = Api::<Service>::namespaced(client.clone(), &ns)
        .get(&names::public_service("placed"))
        .await?;
    ensure!(svc.annotations()["lb.example.com/internal"] == "true");
    let svc_spec = svc.spec.unwrap();
    ensure!(svc_spec.type_.as_deref() == Some("LoadBalancer"));
    ensure!(
        svc_spec.ports.unwrap()[0].node_port.is_some(),
        "the apiserver gave the LoadBalancer a node port"
    );
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get(&names::service_account("placed"))
        .await?;
    ensure!(sa.annotations()["iam.example.com/role"] == "arn:bao");

    // Back to a ClusterIP Service: the node port the apiserver allocated must not block it.
    let patch = json!({"spec": {"service": {"type": "ClusterIP"}}});
    api.patch("placed", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    cluster::reconcile(Arc::new(api.get("placed").await?), ctx.clone()).await?;
    let svc = Api::<Service>::namespaced(client.clone(), &ns)
        .get(&names::public_service("placed"))
        .await?;
    let svc_spec = svc.spec.unwrap();
    ensure!(svc_spec.type_.as_deref() == Some("ClusterIP"), "{svc_spec:?}");
    ensure!(svc_spec.ports.unwrap()[0].node_port.is_none());

    // The Jobs, built from the stored spec and stored by the apiserver.
    let c = Cluster {
        name: "placed",
        namespace: &ns,
        uid: stored.metadata.uid.as_deref().unwrap(),
        spec: &stored.spec,
    };
    let backup = stored.spec.backup.as_ref().unwrap();
    let jobs_api = Api::<Job>::namespaced(client.clone(), &ns);
    for job in [
        jobs::backup_job(&c, backup, "placed-backup", OPERATOR_IMAGE),
        jobs::verify_job(&c, backup, "placed-verify", OPERATOR_IMAGE, "2.7.2", None),
        jobs::restore_job(
            &c,
            &restore_spec()?,
            objects::owner_reference(&c),
            "placed-restore",
            OPERATOR_IMAGE,
        ),
    ] {
        let job = jobs_api.create(&PostParams::default(), &job).await?;
        let pod = job.spec.unwrap().template.spec.unwrap();
        let affinity = pod.affinity.unwrap();
        ensure!(affinity.node_affinity == sent.affinity.as_ref().unwrap().node_affinity);
        ensure!(affinity.pod_anti_affinity.is_none() && pod.topology_spread_constraints.is_none());
        ensure!(pod.tolerations.unwrap() == sent.tolerations);
        ensure!(pod.node_selector.unwrap() == sent.node_selector);
        ensure!(pod.priority_class_name.as_deref() == Some("vault-critical"));
        ensure!(pod.image_pull_secrets.unwrap()[0].name == "registry");
    }
    Ok(())
}

/// The server's 422 message for a cluster with `extra` in its spec.
async fn rejection(api: &Api<DynamicObject>, i: usize, extra: &Value) -> Result<String> {
    let spec = merged(
        json!({"version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"}}),
        extra.clone(),
    );
    refusal(api, &format!("hostile-{i}"), spec).await
}

#[tokio::test]
async fn hostile_placement_specs_are_refused_naming_the_field() -> Result<()> {
    let client = client_with_crds(ApiServer::shared().await?).await?;
    let ns = create_namespace(&client, "placement-hostile").await?;
    let api = untyped_clusters(client, &ns);
    let many: serde_json::Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let toleration = json!({"key": "k", "operator": "Exists"});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "steals the selector label",
            json!({"podMetadata": {"labels": {"app.kubernetes.io/instance": "other"}}}),
            "spec.podMetadata.labels",
        ),
        (
            "moves pods between sets",
            json!({"podMetadata": {"labels": {"app.kubernetes.io/component": "server"}}}),
            "spec.podMetadata.labels",
        ),
        (
            "claims another cluster",
            json!({"podMetadata": {"labels": {"openbao.org/cluster": "other"}}}),
            "spec.podMetadata.labels",
        ),
        (
            "fakes the active server",
            json!({"podMetadata": {"labels": {"openbao-active": "true"}}}),
            "spec.podMetadata.labels",
        ),
        (
            "pins the config hash",
            json!({"podMetadata": {"annotations": {"openbao.org/config-hash": "x"}}}),
            "spec.podMetadata.annotations",
        ),
        (
            "label value with a space",
            json!({"podMetadata": {"labels": {"team": "a b"}}}),
            "spec.podMetadata.labels",
        ),
        (
            "label key not a name",
            json!({"podMetadata": {"labels": {"-bad": "x"}}}),
            "spec.podMetadata.labels",
        ),
        (
            "65 labels",
            json!({"podMetadata": {"labels": many}}),
            "spec.podMetadata.labels",
        ),
        (
            "service account annotation in the operator's domain",
            json!({"serviceAccount": {"annotations": {"openbao.org/x": "y"}}}),
            "spec.serviceAccount.annotations",
        ),
        (
            "Service annotation in the operator's domain",
            json!({"service": {"annotations": {"openbao.org/x": "y"}}}),
            "spec.service.annotations",
        ),
        (
            "ExternalName Service",
            json!({"service": {"type": "ExternalName"}}),
            "spec.service.type",
        ),
        (
            "priority class not a name",
            json!({"priorityClassName": "Not_A_Name"}),
            "spec.priorityClassName",
        ),
        (
            "node selector value too long",
            json!({"nodeSelector": {"pool": "x".repeat(64)}}),
            "spec.nodeSelector",
        ),
        (
            "33 tolerations",
            json!({"tolerations": vec![toleration; 33]}),
            "spec.tolerations",
        ),
        (
            "spread without maxSkew",
            json!({"topologySpreadConstraints": [{"topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}]}),
            "spec.topologySpreadConstraints[0].maxSkew",
        ),
        (
            "affinity of the wrong shape",
            json!({"affinity": {"nodeAffinity": "anywhere"}}),
            "spec.affinity.nodeAffinity",
        ),
        (
            "pull secret without a name",
            json!({"imagePullSecrets": [{}]}),
            "spec.imagePullSecrets[0].name",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, extra, field)) in cases.iter().enumerate() {
        match rejection(&api, i, extra).await {
            Ok(message) if message.contains(field) => eprintln!("{what}: {message}"),
            Ok(message) => failures.push(format!("{what}: {field} not in {message}")),
            Err(err) => failures.push(format!("{what}: {err:#}")),
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{} hostile placement specs refused", cases.len());
    Ok(())
}
