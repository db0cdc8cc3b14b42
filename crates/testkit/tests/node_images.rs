//! The lane's images that `hack/images.sh` assembles run on the real node (kubelet, containerd,
//! runc), under the securityContexts their manifests use:
//! - Traefik: `version` through the image's entrypoint prints the pinned version, and a server
//!   started with flag-only args (as the Helm chart starts it) passes its `/ping` readiness probe;
//! - our operator: `crd` prints the CRDs as the image's non-root user with a read-only root;
//! - RustFS, when its cached build exists: it starts on an emptyDir and `/health` answers 200
//!   through a ClusterIP Service from the host.
//!
//! Reuses the running node, importing the current images into it, or starts one with
//! `hermetic-k8s cluster-up` and stops it again at the end. Needs root.

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::apiserver::{client_from_kubeconfig, create_restricted_namespace};
use testkit::cache::pinned;
use testkit::node::NodeGuard;
use testkit::pods;

const POD_TIMEOUT: Duration = Duration::from_secs(300);
/// Test-only credentials of the throw-away RustFS pod; never printed.
const RUSTFS_ACCESS_KEY: &str = "node-images-access";
const RUSTFS_SECRET_KEY: &str = "node-images-secret-key";

/// The image names under test, from hack/versions.env.
struct LaneImages {
    traefik: String,
    operator: String,
    rustfs: String,
}

impl LaneImages {
    fn pinned() -> Result<Self> {
        Ok(Self {
            traefik: format!("docker.io/library/traefik:v{}", pinned("TRAEFIK_VERSION")?),
            operator: pinned("OPERATOR_IMAGE")?,
            rustfs: format!("docker.io/rustfs/rustfs:{}", pinned("RUSTFS_VERSION")?),
        })
    }
}

fn typed<T: k8s_openapi::serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

/// What the charts and the upstream e2e set: non-root, no capabilities, read-only root.
fn restricted(run_as_user: Option<i64>) -> serde_json::Value {
    let mut context = json!({
        "runAsNonRoot": true,
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    if let Some(uid) = run_as_user {
        context["runAsUser"] = json!(uid);
        context["runAsGroup"] = json!(uid);
    }
    context
}

/// A pod that runs the image's entrypoint with `args` once.
fn one_shot_pod(name: &str, image: &str, args: &[&str], run_as_user: Option<i64>) -> Pod {
    typed(json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": name, "image": image, "args": args, "securityContext": restricted(run_as_user),
            }],
        },
    }))
}

/// Traefik as the Helm chart runs it: flags only, uid 65532, Ready once `/ping` answers.
fn traefik_server_pod(image: &str) -> Pod {
    typed(json!({
        "metadata": {"name": "traefik"},
        "spec": {
            "containers": [{
                "name": "traefik",
                "image": image,
                "args": ["--ping=true", "--entryPoints.web.address=:8000", "--entryPoints.traefik.address=:8080"],
                "securityContext": restricted(Some(65532)),
                "readinessProbe": {"httpGet": {"path": "/ping", "port": 8080}, "periodSeconds": 1},
            }],
        },
    }))
}

/// RustFS as the upstream e2e runs it: env only, an emptyDir at /data, probes on `/health`.
fn rustfs_objects(image: &str) -> (Service, Pod) {
    let labels = json!({"app": "rustfs"});
    let service = typed(json!({
        "metadata": {"name": "rustfs-svc"},
        "spec": {"selector": labels, "ports": [{"name": "api", "port": 9000, "targetPort": 9000}]},
    }));
    let mut security = restricted(None);
    // RustFS writes its logs under /logs (the image's RUSTFS_OBS_LOG_DIRECTORY).
    security["readOnlyRootFilesystem"] = json!(false);
    let pod = typed(json!({
        "metadata": {"name": "rustfs", "labels": labels},
        "spec": {
            "containers": [{
                "name": "rustfs",
                "image": image,
                "env": [
                    {"name": "RUSTFS_ADDRESS", "value": "0.0.0.0:9000"},
                    {"name": "RUSTFS_CONSOLE_ENABLE", "value": "false"},
                    {"name": "RUSTFS_ACCESS_KEY", "value": RUSTFS_ACCESS_KEY},
                    {"name": "RUSTFS_SECRET_KEY", "value": RUSTFS_SECRET_KEY},
                ],
                "ports": [{"name": "api", "containerPort": 9000}],
                "securityContext": security,
                "readinessProbe": {"httpGet": {"path": "/health", "port": 9000}, "periodSeconds": 1},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }));
    (service, pod)
}

/// Waits until the one-shot pod `name` has finished; returns its logs, failing when it failed.
async fn finished_logs(pods: &Api<Pod>, name: &str) -> Result<String> {
    let (phase, logs) = pods::finished(pods, name, POD_TIMEOUT).await?;
    if phase != "Succeeded" {
        bail!("pod {name} {phase}:\n{logs}");
    }
    Ok(logs)
}

#[tokio::test(flavor = "multi_thread")]
async fn lane_images_run_on_the_node() -> Result<()> {
    let node = NodeGuard::up(Path::new(env!("CARGO_BIN_EXE_hermetic-k8s"))).await?;
    let lane = LaneImages::pinned()?;
    let began = Instant::now();
    let images = tokio::task::spawn_blocking(testkit::node::image_list).await??;
    eprintln!("hack/images.sh took {:.1?}", began.elapsed());
    let listed = |name: &str| images.iter().any(|(n, _)| n == name);
    assert!(listed(&lane.traefik), "hack/images.sh lists {}", lane.traefik);
    assert!(listed(&lane.operator), "hack/images.sh lists {}", lane.operator);
    let with_rustfs = listed(&lane.rustfs);
    if !node.started_here() {
        // node-boot imported the images of its time; bring the lane's current ones in.
        let lane_archives: Vec<_> = images
            .iter()
            .filter(|(n, _)| [&lane.traefik, &lane.operator, &lane.rustfs].contains(&n))
            .cloned()
            .collect();
        let (root, began) = (node.state_dir().to_path_buf(), Instant::now());
        tokio::task::spawn_blocking(move || testkit::node::import_images(&root, &lane_archives)).await??;
        eprintln!(
            "imported the lane's images into the running node in {:.1?}",
            began.elapsed()
        );
    }

    let client = client_from_kubeconfig(&node.kubeconfig()).await?;
    let ns = create_restricted_namespace(&client, "node-images").await?;
    let result = exercise(&client, &ns, &lane, with_rustfs).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(&ns, &DeleteParams::default()).await?;
    let tested = result?;
    pods::wait_for("the namespace to be deleted", POD_TIMEOUT, async || {
        Ok(namespaces.get_opt(&ns).await?.is_none().then_some(()))
    })
    .await?;
    eprintln!("images tested on the node: {}", tested.join(", "));
    if !with_rustfs {
        eprintln!(
            "not tested: {} (hack/images.sh left it out: hack/build-rustfs.sh has not built RustFS yet)",
            lane.rustfs
        );
    }
    drop(node);
    Ok(())
}

/// Runs every pod in `ns` at once and checks each; returns the images it proved.
async fn exercise(client: &kube::Client, ns: &str, lane: &LaneImages, with_rustfs: bool) -> Result<Vec<String>> {
    let pp = PostParams::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let began = Instant::now();
    let version_pod = one_shot_pod("traefik-version", &lane.traefik, &["version"], Some(65532));
    pods.create(&pp, &version_pod).await.context("create traefik-version")?;
    pods.create(&pp, &traefik_server_pod(&lane.traefik))
        .await
        .context("create traefik")?;
    // No runAsUser: the kubelet must find the image's own user (65532) non-root.
    let crd_pod = one_shot_pod("operator-crd", &lane.operator, &["crd"], None);
    pods.create(&pp, &crd_pod).await.context("create operator-crd")?;
    let rustfs_ip = if with_rustfs {
        let (service, pod) = rustfs_objects(&lane.rustfs);
        let service = services.create(&pp, &service).await.context("create rustfs-svc")?;
        pods.create(&pp, &pod).await.context("create rustfs")?;
        Some(
            service
                .spec
                .and_then(|s| s.cluster_ip)
                .context("rustfs-svc ClusterIP")?,
        )
    } else {
        None
    };

    let mut tested = Vec::new();
    let version = pinned("TRAEFIK_VERSION")?;
    let logs = finished_logs(&pods, "traefik-version").await?;
    let printed = logs
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(str::trim)
        .with_context(|| format!("`traefik version` printed no Version line:\n{logs}"))?;
    assert_eq!(printed, version, "traefik version");
    pods::ready(&pods, "traefik", POD_TIMEOUT)
        .await
        .context("traefik serving /ping")?;
    eprintln!(
        "traefik {printed}: `version` ok, /ping Ready after {:.1?}",
        began.elapsed()
    );
    tested.push(lane.traefik.clone());

    let crds = finished_logs(&pods, "operator-crd").await?;
    assert!(
        crds.starts_with("---"),
        "`openbao-operator crd` starts with ---:\n{crds:.200}"
    );
    assert!(
        crds.contains("openbaoclusters.openbao.org"),
        "`openbao-operator crd` prints the OpenBaoCluster CRD"
    );
    eprintln!(
        "operator: `crd` printed {} bytes as the image's non-root user after {:.1?}",
        crds.len(),
        began.elapsed()
    );
    tested.push(lane.operator.clone());

    if let Some(ip) = rustfs_ip {
        pods::ready(&pods, "rustfs", POD_TIMEOUT)
            .await
            .context("rustfs /health readiness")?;
        // The host routes the Service range over the node's veth.
        let health = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?
            .get(format!("http://{ip}:9000/health"))
            .send()
            .await
            .context("GET /health from the host through rustfs-svc")?;
        assert_eq!(
            health.status(),
            200,
            "RustFS /health through the ClusterIP from the host"
        );
        eprintln!("rustfs: /health 200 through {ip}:9000 after {:.1?}", began.elapsed());
        tested.push(lane.rustfs.clone());
    }
    Ok(tested)
}
