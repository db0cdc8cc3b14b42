//! Node mode is a real cluster: a StatefulSet of the locally assembled OpenBao image runs on the
//! real kubelet/containerd with a PersistentVolumeClaim bound by the local-path provisioner,
//! CoreDNS resolves its Services, kube-proxy routes the ClusterIP to it from another pod and from
//! the host (over the node's veth), and `/v1/sys/health` answers 200.
//!
//! Starts the node with `hermetic-k8s cluster-up` (or reuses a running one) and stops it again at
//! the end when it started it. Needs root (network namespaces, cgroups, mounts).

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use testkit::apiserver::{client_from_kubeconfig, create_restricted_namespace};
use testkit::node::NodeGuard;
use testkit::pods;

const OPENBAO_IMAGE: &str = "docker.io/openbao/openbao:2.7.2";
const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:1.35.0";
const POD_TIMEOUT: Duration = Duration::from_secs(180);

fn typed<T: k8s_openapi::serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

fn openbao_objects() -> (Service, Service, StatefulSet) {
    let labels = json!({"app": "bao"});
    let headless = typed(json!({
        "metadata": {"name": "bao-internal"},
        "spec": {"clusterIP": "None", "selector": labels, "ports": [{"name": "api", "port": 8200}]},
    }));
    let service = typed(json!({
        "metadata": {"name": "bao"},
        "spec": {"selector": labels, "ports": [{"name": "api", "port": 8200, "targetPort": 8200}]},
    }));
    let statefulset = typed(json!({
        "metadata": {"name": "bao"},
        "spec": {
            "serviceName": "bao-internal",
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": true, "runAsUser": 100, "runAsGroup": 1000, "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [{
                        "name": "openbao",
                        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                        "image": OPENBAO_IMAGE,
                        "command": ["bao", "server", "-dev", "-dev-listen-address=0.0.0.0:8200"],
                        "ports": [{"name": "api", "containerPort": 8200}],
                        "readinessProbe": {"httpGet": {"path": "/v1/sys/health", "port": 8200}, "periodSeconds": 1},
                        "volumeMounts": [{"name": "data", "mountPath": "/bao/data"}],
                    }],
                },
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}},
            }],
        },
    }));
    (headless, service, statefulset)
}

/// A pod that resolves both Service names through CoreDNS and fetches the health endpoint
/// through the ClusterIP Service, printing the HTTP status line.
fn client_pod(namespace: &str) -> Pod {
    let service = format!("bao.{namespace}.svc.cluster.local");
    let pod_dns = format!("bao-0.bao-internal.{namespace}.svc.cluster.local");
    let script = format!(
        "nslookup {service} && nslookup {pod_dns} || exit 1\n\
         for i in $(seq 1 30); do\n\
           wget -S -O - http://{service}:8200/v1/sys/health 2>&1 && exit 0\n\
           sleep 1\n\
         done\n\
         exit 1\n"
    );
    typed(json!({
        "metadata": {"name": "health-client"},
        "spec": {
            "restartPolicy": "Never",
            // Pod Security `restricted`, like every pod of the node tests.
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "client", "image": BUSYBOX_IMAGE, "command": ["sh", "-c", script],
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }))
}

#[tokio::test(flavor = "multi_thread")]
async fn openbao_statefulset_with_a_bound_pvc_answers_through_its_service() -> Result<()> {
    let node = NodeGuard::up(Path::new(env!("CARGO_BIN_EXE_hermetic-k8s"))).await?;
    let client = client_from_kubeconfig(&node.kubeconfig()).await?;
    let ns = create_restricted_namespace(&client, "node-smoke").await?;
    let result = exercise(&client, &ns).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(&ns, &DeleteParams::default()).await?;
    let volume = result?;
    // The namespace takes its PVC along; the provisioner's helper pod then removes the volume.
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    pods::wait_for("the namespace and its volume to be deleted", POD_TIMEOUT, async || {
        let gone = namespaces.get_opt(&ns).await?.is_none() && pvs.get_opt(&volume).await?.is_none();
        Ok(gone.then_some(()))
    })
    .await?;
    drop(node);
    Ok(())
}

/// Runs the scenario in `ns`; returns the name of the PersistentVolume it provisioned.
async fn exercise(client: &kube::Client, ns: &str) -> Result<String> {
    let pp = PostParams::default();
    let (headless, service, statefulset) = openbao_objects();
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    services
        .create(&pp, &headless)
        .await
        .context("create headless Service")?;
    let service = services
        .create(&pp, &service)
        .await
        .context("create ClusterIP Service")?;
    let cluster_ip = service.spec.and_then(|s| s.cluster_ip).context("ClusterIP assigned")?;
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .create(&pp, &statefulset)
        .await
        .context("create StatefulSet")?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let bao_pod = pods::ready(&pods, "bao-0", POD_TIMEOUT).await?;
    let pod_ip = bao_pod.status.and_then(|s| s.pod_ip).context("bao-0 has an IP")?;

    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get("data-bao-0")
        .await
        .context("get PVC data-bao-0")?;
    let pvc_spec = pvc.spec.unwrap_or_default();
    let phase = pvc.status.and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Bound"), "PVC data-bao-0 must be Bound");
    assert_eq!(
        pvc_spec.storage_class_name.as_deref(),
        Some("local-path"),
        "default StorageClass"
    );
    let volume = pvc_spec.volume_name.context("bound PVC names its volume")?;

    pods.create(&pp, &client_pod(ns)).await.context("create client pod")?;
    let (finished, logs) = testkit::pods::finished(&pods, "health-client", POD_TIMEOUT).await?;
    eprintln!("client pod ({finished}):\n{logs}");
    assert_eq!(finished, "Succeeded", "client pod failed:\n{logs}");
    assert!(
        logs.contains(&format!("Address: {cluster_ip}")),
        "Service name resolves to {cluster_ip}"
    );
    assert!(
        logs.contains(&format!("Address: {pod_ip}")),
        "per-pod name resolves to {pod_ip}"
    );
    assert!(
        logs.contains("HTTP/1.1 200 OK"),
        "health answered 200 through the Service"
    );
    assert!(logs.contains(r#""initialized":true"#), "a dev server is initialized");

    // Tests on the host reach Services by address: the host routes the Service range over the veth.
    let health = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?
        .get(format!("http://{cluster_ip}:8200/v1/sys/health"))
        .send()
        .await
        .context("GET /v1/sys/health from the host through the ClusterIP")?;
    assert_eq!(health.status(), 200, "health through the ClusterIP from the host");
    Ok(volume)
}
