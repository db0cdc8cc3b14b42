//! Node mode is a real cluster: a StatefulSet of the locally assembled OpenBao image runs on the
//! real kubelet/containerd with a PersistentVolumeClaim bound by the local-path provisioner,
//! CoreDNS resolves its Services, kube-proxy routes the ClusterIP to it from another pod and from
//! the host (over the node's veth), and `/v1/sys/health` answers 200.
//!
//! Starts the node with `hermetic-k8s cluster-up` (or reuses a running one) and stops it again at
//! the end when it started it. Needs root (network namespaces, cgroups, mounts).

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::apiserver::{client_from_kubeconfig, create_namespace};

const OPENBAO_IMAGE: &str = "docker.io/openbao/openbao:2.7.2";
const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:1.35.0";
const POD_TIMEOUT: Duration = Duration::from_secs(180);

/// The node this test uses. Stops it on drop (panics included) when the test started it.
struct Node {
    state_dir: PathBuf,
    started_here: bool,
}

impl Node {
    async fn up() -> Result<Self> {
        if let Some(state_dir) = testkit::node::running_node().await {
            eprintln!("reusing the node of {}", state_dir.display());
            return Ok(Self {
                state_dir,
                started_here: false,
            });
        }
        let state_dir = testkit::cache::repo_root().join(".cluster");
        let began = Instant::now();
        let status = hermetic_k8s(&state_dir, &["cluster-up"])?;
        if !status.success() {
            bail!("hermetic-k8s cluster-up failed ({status})");
        }
        eprintln!("cluster-up took {:.1?}", began.elapsed());
        Ok(Self {
            state_dir,
            started_here: true,
        })
    }

    fn kubeconfig(&self) -> PathBuf {
        self.state_dir.join("kubeconfig")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.started_here {
            match hermetic_k8s(&self.state_dir, &["down"]) {
                Ok(status) if status.success() => {}
                other => eprintln!("hermetic-k8s down failed: {other:?}"),
            }
        }
    }
}

fn hermetic_k8s(state_dir: &Path, args: &[&str]) -> Result<std::process::ExitStatus> {
    Command::new(env!("CARGO_BIN_EXE_hermetic-k8s"))
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .context("run hermetic-k8s")
}

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
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 100, "runAsGroup": 1000, "fsGroup": 1000},
                    "containers": [{
                        "name": "openbao",
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
            "containers": [{"name": "client", "image": BUSYBOX_IMAGE, "command": ["sh", "-c", script]}],
        },
    }))
}

async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + POD_TIMEOUT;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {POD_TIMEOUT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn pod_state(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    format!(
        "{} {:?}",
        status.phase.unwrap_or_default(),
        status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.state)
            .collect::<Vec<_>>()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn openbao_statefulset_with_a_bound_pvc_answers_through_its_service() -> Result<()> {
    let node = Node::up().await?;
    let client = client_from_kubeconfig(&node.kubeconfig()).await?;
    let ns = create_namespace(&client, "node-smoke").await?;
    let result = exercise(&client, &ns).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(&ns, &DeleteParams::default()).await?;
    let volume = result?;
    // The namespace takes its PVC along; the provisioner's helper pod then removes the volume.
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    wait_for("the namespace and its volume to be deleted", async || {
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
    let mut last = String::new();
    let ready = wait_for("pod bao-0 Ready", async || {
        let Some(pod) = pods.get_opt("bao-0").await? else {
            return Ok(None);
        };
        last = pod_state(&pod);
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        Ok(ready.then_some(pod))
    })
    .await;
    let bao_pod = ready.with_context(|| format!("bao-0: {last}"))?;
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
    let mut last = String::new();
    let finished = wait_for("the client pod to finish", async || {
        let pod = pods.get("health-client").await?;
        last = pod_state(&pod);
        let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
        Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase))
    })
    .await
    .with_context(|| format!("health-client: {last}"))?;
    let logs = pods.logs("health-client", &LogParams::default()).await?;
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
