//! Backups on the real node (kubelet, containerd, CNI, CoreDNS): the backup controller runs the
//! real `openbao-operator backup` Job from our image against a 3-replica Development cluster and
//! an S3 server running as a pod (RustFS when `hack/images.sh` has its image, else s3s-fs), and
//! records the Job's result. Proves on a real kubelet what the apiserver tests cannot: the Job's
//! security context, projected token, CA mount and environment work, the termination message
//! carries the result, the object lands in the bucket, a repeated trigger runs nothing, and wrong
//! store credentials end as `AuthenticationFailed` with the lock released.
//! The restore drill (`spec.backup.verify`) runs after the successful backup: its Job restores
//! that backup into a throw-away OpenBao sidecar with the cluster's seal key, which unseals with
//! the restored data and accepts the backup role's login; the result is in status.
//! Needs the node: `make test` starts it (`make cluster-up` by hand).

use anyhow::{Context as _, Result, bail, ensure};
use futures::FutureExt as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use openbao_api::{BackupStatus, OpenBaoCluster, TRIGGER_BACKUP_ANNOTATION, conditions};
use openbao_client::{BaoClient, ClientConfig};
use openbao_objstore::{Credentials, Store, StoreOptions, Target};
use openbao_operator::controllers::jobs::result::{ExecutorResult, result_of};
use openbao_operator::controllers::{backup, cluster};
use openbao_render::objects::jobs;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::apiserver::{create_restricted_namespace, install_crds};
use testkit::pods::{self, wait_for};

mod node_common;
use node_common::{admin_jwt, condition, create, host_operator_context, node_client};

const CLUSTER: &str = "bk";
const BUCKET: &str = "openbao-backups";
const S3_PORT: u16 = 9000;
const CREDENTIALS: &str = "backup-credentials";
/// How long a backup Job may take from the trigger to its recorded result.
const JOB_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test]
async fn a_triggered_backup_runs_as_a_job_on_a_real_node() -> Result<()> {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let state_dir = testkit::node::running_node()
        .await
        .context("no hermetic node is running: `make test` starts one, or run `make cluster-up`")?;
    let client = node_client().await?;
    let s3_image = import_images(&state_dir)?;
    install_crds(&client, openbao_api::crd::all()).await?;
    // What the operator's install ships besides the CRDs: OpenBao pods label themselves with it.
    testkit::apiserver::apply_cluster_scoped(&client, &openbao_render::objects::service_registration_cluster_role())
        .await?;
    let ns = create_restricted_namespace(&client, "helper-backup").await?;
    let op_ns = create_restricted_namespace(&client, "helper-backup-operator").await?;
    // A failed assertion (a panic) is caught, so it still reaches the cleanup.
    let run = AssertUnwindSafe(backups(&client, &ns, &op_ns, &s3_image))
        .catch_unwind()
        .await;
    // The namespaces go either way, so nothing is left running on the shared node.
    let namespaces = Api::<Namespace>::all(client.clone());
    for n in [&ns, &op_ns] {
        namespaces.delete(n, &DeleteParams::default()).await.ok();
    }
    match run {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Which S3 server runs in the pod.
#[derive(Clone, Debug)]
enum S3Image {
    RustFs(String),
    S3sFs(String),
}

/// Imports our image (rebuilt from this checkout by `hack/images.sh`) and the S3 server's into
/// the running node, which may have booted before either changed.
fn import_images(state_dir: &std::path::Path) -> Result<S3Image> {
    let began = Instant::now();
    let all = testkit::node::image_list()?;
    let operator_image = testkit::cache::pinned("OPERATOR_IMAGE")?;
    let find = |prefix: &str| all.iter().find(|(name, _)| name.starts_with(prefix)).cloned();
    let s3 = find("docker.io/rustfs/rustfs:")
        .map(|i| (S3Image::RustFs(i.0.clone()), i))
        .or_else(|| find("localhost/openbao-operator/s3s-fs:").map(|i| (S3Image::S3sFs(i.0.clone()), i)))
        .context("hack/images.sh lists neither RustFS nor s3s-fs (S3_SERVER=s3s-fs hack/build-s3-server.sh)")?;
    let operator: (String, PathBuf) = all
        .iter()
        .find(|(name, _)| *name == operator_image)
        .cloned()
        .context("hack/images.sh did not list the operator image")?;
    testkit::node::import_images(state_dir, &[operator, s3.1])?;
    eprintln!(
        "images built and imported in {:.1?}; S3 server: {:?}",
        began.elapsed(),
        s3.0
    );
    Ok(s3.0)
}

/// The S3 server as a pod (data in an emptyDir) behind Service `s3`; returns the ClusterIP
/// address the host reaches it on.
async fn start_s3(client: &Client, ns: &str, image: &S3Image) -> Result<SocketAddr> {
    create::<Secret>(
        client,
        ns,
        json!({"metadata": {"name": "s3-server-keys"}, "stringData": {
            "accessKeyId": testkit::s3::ACCESS_KEY, "secretAccessKey": testkit::s3::SECRET_KEY,
        }}),
    )
    .await?;
    let key = |name: &str, key: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": "s3-server-keys", "key": key}}});
    let (image, args, env, user) = match image {
        S3Image::S3sFs(image) => (
            image,
            json!([
                "--host",
                "0.0.0.0",
                "--port",
                S3_PORT.to_string(),
                "--access-key",
                "$(S3_ACCESS_KEY)",
                "--secret-key",
                "$(S3_SECRET_KEY)",
                "/data"
            ]),
            json!([
                key("S3_ACCESS_KEY", "accessKeyId"),
                key("S3_SECRET_KEY", "secretAccessKey")
            ]),
            10001,
        ),
        S3Image::RustFs(image) => (
            image,
            json!(["rustfs", "server", "--address", format!("0.0.0.0:{S3_PORT}"), "/data"]),
            json!([key("RUSTFS_ACCESS_KEY", "accessKeyId"), key("RUSTFS_SECRET_KEY", "secretAccessKey"),
                   {"name": "RUSTFS_CONSOLE_ENABLE", "value": "false"},
                   {"name": "RUSTFS_REGION", "value": testkit::s3::REGION}]),
            10001,
        ),
    };
    create::<Pod>(client, ns, testkit::s3::server_pod(image, args, env, user, S3_PORT)).await?;
    let service = create::<Service>(client, ns, json!({
        "metadata": {"name": "s3"},
        "spec": {"selector": {"app.kubernetes.io/name": "s3"}, "ports": [{"name": "s3", "port": S3_PORT, "targetPort": "s3"}]},
    }))
    .await?;
    pods::ready(&Api::namespaced(client.clone(), ns), "s3", Duration::from_secs(60)).await?;
    let ip: IpAddr = service
        .spec
        .and_then(|s| s.cluster_ip)
        .context("Service s3 has no ClusterIP")?
        .parse()?;
    Ok(SocketAddr::new(ip, S3_PORT))
}

/// A client of the bucket from the host, through the ClusterIP.
fn host_store(s3: SocketAddr) -> Result<Store> {
    let target = Target {
        endpoint: format!("http://{s3}"),
        bucket: BUCKET.into(),
        region: testkit::s3::REGION.into(),
        path_prefix: String::new(),
        use_path_style: true,
        credentials: Credentials {
            access_key_id: testkit::s3::ACCESS_KEY.into(),
            secret_access_key: openbao_objstore::Secret::new(testkit::s3::SECRET_KEY),
            ca_cert_pem: None,
        },
    };
    Ok(Store::new(&target, StoreOptions::default())?)
}

async fn backups(client: &Client, ns: &str, op_ns: &str, s3_image: &S3Image) -> Result<()> {
    for (sa_ns, name) in [(op_ns, "openbao-operator"), (ns, "bao-admin")] {
        create::<ServiceAccount>(client, sa_ns, json!({"metadata": {"name": name}})).await?;
    }
    let s3_started = Instant::now();
    let s3 = start_s3(client, ns, s3_image).await?;
    // The server's port may accept a moment before it serves; the bucket request retries.
    wait_for("the bucket to be created", Duration::from_secs(30), async || {
        Ok(testkit::s3::create_bucket_at(s3, BUCKET).await.ok())
    })
    .await?;
    eprintln!("S3 pod Ready and bucket created in {:.1?}", s3_started.elapsed());
    create::<Secret>(
        client,
        ns,
        json!({"metadata": {"name": CREDENTIALS}, "stringData": {
            "accessKeyId": testkit::s3::ACCESS_KEY, "secretAccessKey": testkit::s3::SECRET_KEY,
        }}),
    )
    .await?;

    // The operator runs on the host and reaches the public Service through its ClusterIP.
    let (ctx, public_ip) = host_operator_context(client, ns, op_ns).await;
    let ctx = Arc::new(ctx);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let image = testkit::cache::pinned("OPERATOR_IMAGE")?;
    let controllers = tokio::spawn(futures::future::join(
        cluster::run(ctx.clone(), stopped()),
        backup::run(Arc::new(backup::BackupContext::new(ctx.clone(), image)), stopped()),
    ));

    let started = Instant::now();
    create::<OpenBaoCluster>(client, ns, json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster", "metadata": {"name": CLUSTER},
        "spec": {
            "version": "2.7.2", "profile": "Development", "replicas": 3, "storage": {"size": "256Mi"},
            // The hermetic node has no AppArmor: a node limitation, stated where it is turned off.
            "workloadHardening": {"appArmorEnabled": false},
            "selfInit": {
                "oidc": {"adminServiceAccount": {"name": "bao-admin"}},
                "requests": [{"name": "kv", "operation": "update", "path": "sys/mounts/secret", "data": {"type": "kv", "options": {"version": "2"}}}]
            },
            "backup": {
                // Once a year: only the triggers below run backups in this test.
                "schedule": "0 0 1 1 *",
                "target": {
                    "endpoint": format!("http://s3.{ns}.svc:{S3_PORT}"),
                    "bucket": BUCKET,
                    "credentialsSecretRef": {"name": CREDENTIALS},
                },
                // A restore drill after every successful backup.
                "verify": {"enabled": true},
            },
        }
    }))
    .await?;
    let services = Api::<Service>::namespaced(client.clone(), ns);
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    wait_for("the cluster to be Available", Duration::from_secs(240), async || {
        if public_ip.lock().unwrap().is_none()
            && let Some(ip) = services
                .get_opt(&format!("{CLUSTER}-public"))
                .await?
                .and_then(|s| s.spec?.cluster_ip)
        {
            *public_ip.lock().unwrap() = ip.parse().ok();
        }
        let c = clusters.get(CLUSTER).await?;
        let ready = condition(&c, conditions::AVAILABLE).is_some_and(|(s, _)| s == "True");
        let ready = ready
            && c.status
                .as_ref()
                .is_some_and(|s| s.initialized && s.ready_replicas == 3);
        Ok(ready.then_some(()))
    })
    .await?;
    eprintln!("CR applied -> Available: {:.1?}", started.elapsed());

    let ip = public_ip.lock().unwrap().context("public ClusterIP")?;
    let admin = admin_client(client, ns, ip).await?;
    admin
        .write("secret/data/backed-up", &json!({"data": {"value": "in the snapshot"}}))
        .await?;

    // A manual backup: a real Job on the kubelet, its result in status.
    let triggered = Instant::now();
    trigger(&clusters, "first").await?;
    let (c, st) = wait_for_result(&clusters, None).await?;
    let backup_took = triggered.elapsed();
    let job_name = st.last_job_name.clone().context("lastJobName")?;
    let job = Api::<Job>::namespaced(client.clone(), ns).get(&job_name).await?;
    let result = executor_result(client, ns, &job_name, jobs::Executor::Backup).await?;
    ensure!(
        job.status.as_ref().and_then(|s| s.succeeded) == Some(1),
        "backup Job {job_name} did not succeed: {:?}\nstatus.backup: {st:#?}",
        job.status
    );
    eprintln!("trigger -> backup recorded in status: {backup_took:.1?}; result line: {result:?}");
    assert_eq!(result.result, "Succeeded");
    let key = result.key.clone().context("the result names no key")?;
    let size = result.size.context("the result has no size")?;
    assert!(
        key.starts_with(&format!("{ns}/{CLUSTER}/")) && key.ends_with(".snap"),
        "{key}"
    );
    assert_eq!(st.last_backup_name.as_deref(), Some(key.as_str()));
    assert_eq!(st.last_backup_bucket.as_deref(), Some(BUCKET));
    assert_eq!(st.last_backup_size, Some(size as i64));
    assert_eq!(st.last_backup_sha256, result.sha256);
    let duration_ms = result.duration_ms.context("the result has no duration")?;
    assert_eq!(
        st.last_backup_duration.as_deref(),
        Some(format!("{:.3}s", duration_ms as f64 / 1000.0).as_str())
    );
    assert!(st.last_backup_time.is_some(), "{st:?}");
    assert_eq!(st.consecutive_failures, 0);
    assert_eq!(st.acknowledged_trigger.as_deref(), Some("first"));
    let stored = host_store(s3)?.head(&key).await?;
    assert_eq!(stored.size, size, "the object in the bucket has the reported size");
    assert!(size > 1024, "a raft snapshot of an initialized cluster: {size} bytes");
    assert_eq!(
        condition(&c, conditions::BACKUP_CONFIGURATION_READY),
        Some(("True".into(), "Ready".into()))
    );
    let status = c.status.clone().unwrap_or_default();
    assert!(
        status.operation_lock.is_none(),
        "lock released: {:?}",
        status.operation_lock
    );

    // The restore drill of that backup: a real restore into a throw-away OpenBao in the Job's pod.
    let drill_started = Instant::now();
    let (c, verification) = wait_for("the restore drill result in status", JOB_TIMEOUT, async || {
        let c = clusters.get(CLUSTER).await?;
        let v = c.status.as_ref().and_then(|s| s.backup.as_ref()?.verification.clone());
        let done = v
            .as_ref()
            .is_some_and(|v| v.running_job.is_none() && v.result.is_some());
        Ok(done.then(|| (c.clone(), v.unwrap_or_default())))
    })
    .await?;
    let drill_took = drill_started.elapsed();
    let drill_jobs = Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&jobs::executor_selector(CLUSTER, jobs::Executor::Verify)))
        .await?;
    ensure!(
        drill_jobs.items.len() == 1,
        "one drill Job: {:?}",
        drill_jobs.items.len()
    );
    let drill_job = drill_jobs.items[0].name_any();
    let drill = executor_result(client, ns, &drill_job, jobs::Executor::Verify).await?;
    eprintln!("backup recorded -> drill recorded: {drill_took:.1?}; result line: {drill:?}");
    assert_eq!(
        verification.result.as_deref(),
        Some("Succeeded"),
        "{verification:#?}\n{drill:?}"
    );
    assert_eq!(drill.result, "Succeeded");
    assert_eq!(drill.key.as_deref(), Some(key.as_str()));
    assert!(
        drill.policies.iter().flatten().any(|p| p == "openbao-operator-backup"),
        "the restored backup role issued its policy: {drill:?}"
    );
    assert_eq!(verification.last_verified_key.as_deref(), Some(key.as_str()));
    assert_eq!(verification.reason.as_deref(), Some("Restored"));
    assert!(verification.last_verification_time.is_some());
    assert_eq!(
        condition(&c, openbao_api::BACKUP_VERIFIED),
        Some(("True".into(), "Restored".into()))
    );
    let job = Api::<Job>::namespaced(client.clone(), ns).get(&drill_job).await?;
    assert_eq!(
        job.status.as_ref().and_then(|s| s.succeeded),
        Some(1),
        "{:?}",
        job.status
    );

    // The same trigger value again (and a change that wakes the controller): nothing runs.
    trigger(&clusters, "first").await?;
    clusters
        .patch(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"test.openbao.org/poke": "1"}}})),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let executor_jobs = Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&jobs::executor_selector(CLUSTER, jobs::Executor::Backup)))
        .await?;
    assert_eq!(
        executor_jobs.items.iter().map(|j| j.name_any()).collect::<Vec<_>>(),
        vec![job_name.clone()],
        "the same trigger value must not run another backup"
    );
    let again = clusters.get(CLUSTER).await?;
    let again_backup = again.status.as_ref().and_then(|s| s.backup.clone()).unwrap_or_default();
    assert!(again_backup.running_job.is_none(), "{again_backup:?}");

    // Wrong store credentials: the next trigger's Job fails, and status says what to fix.
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            CREDENTIALS,
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"secretAccessKey": "not-the-secret-key"}})),
        )
        .await?;
    // Jobs are named by the second they start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let triggered = Instant::now();
    trigger(&clusters, "second").await?;
    let (c, st) = wait_for_result(&clusters, Some(&job_name)).await?;
    let failed_took = triggered.elapsed();
    let failed_job = st.last_job_name.clone().context("lastJobName")?;
    let job = Api::<Job>::namespaced(client.clone(), ns).get(&failed_job).await?;
    let failed = executor_result(client, ns, &failed_job, jobs::Executor::Backup).await?;
    eprintln!("trigger -> failure recorded: {failed_took:.1?}; result line: {failed:?}");
    ensure!(
        job.status.as_ref().and_then(|s| s.failed) == Some(1),
        "Job {failed_job} should have failed: {:?}",
        job.status
    );
    assert_eq!(failed.result, "Failed");
    assert_eq!(failed.reason.as_deref(), Some("CredentialsRejected"), "{failed:?}");
    assert_eq!(st.consecutive_failures, 1);
    assert_eq!(st.last_failure_reason.as_deref(), Some("CredentialsRejected"));
    assert!(
        st.last_failure_message.is_some() && st.last_failure_time.is_some(),
        "{st:?}"
    );
    // No credential reaches status: not even the access key id the store's error named.
    let status_text = serde_json::to_string(&c.status)?;
    assert!(
        !status_text.contains(testkit::s3::ACCESS_KEY),
        "the access key id is in status: {status_text}"
    );
    // The last success is still what status names.
    assert_eq!(st.last_backup_name.as_deref(), Some(key.as_str()));
    assert_eq!(st.acknowledged_trigger.as_deref(), Some("second"));
    assert_eq!(
        condition(&c, conditions::BACKUP_CONFIGURATION_READY),
        Some(("False".into(), "AuthenticationFailed".into()))
    );
    let status = c.status.clone().unwrap_or_default();
    assert!(
        status.operation_lock.is_none(),
        "lock released: {:?}",
        status.operation_lock
    );

    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(30), controllers).await??;
    Ok(())
}

async fn trigger(clusters: &Api<OpenBaoCluster>, value: &str) -> Result<()> {
    clusters
        .patch(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {TRIGGER_BACKUP_ANNOTATION: value}}})),
        )
        .await?;
    Ok(())
}

/// Waits until a backup Job other than `previous` has finished and is recorded in status.
async fn wait_for_result(
    clusters: &Api<OpenBaoCluster>,
    previous: Option<&str>,
) -> Result<(OpenBaoCluster, BackupStatus)> {
    let mut last = None;
    let found = wait_for("the backup result in status", JOB_TIMEOUT, async || {
        let c = clusters.get(CLUSTER).await?;
        let st = c.status.as_ref().and_then(|s| s.backup.clone()).unwrap_or_default();
        last = Some(st.clone());
        let done = st.running_job.is_none() && st.last_job_name.is_some() && st.last_job_name.as_deref() != previous;
        Ok(done.then_some((c, st)))
    })
    .await;
    found.with_context(|| format!("status.backup: {last:#?}"))
}

/// The result line the kubelet kept as the termination message of the Job's pod.
async fn executor_result(client: &Client, ns: &str, job: &str, executor: jobs::Executor) -> Result<ExecutorResult> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await?;
    let container = executor.as_str();
    match pods.items.iter().find_map(|p| result_of(p, container)) {
        Some(r) => Ok(r),
        None => bail!(
            "no result line in the termination message of Job {job}'s pods: {:?}",
            pods.items.iter().map(pods::pod_state).collect::<Vec<_>>()
        ),
    }
}

/// A token of the `admin` policy: the bao-admin service account's JWT login.
async fn admin_client(client: &Client, ns: &str, public_ip: IpAddr) -> Result<BaoClient> {
    let ca = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&format!("{CLUSTER}-tls-ca"))
        .await?
        .data
        .context("CA data")?["ca.crt"]
        .0
        .clone();
    let bao = BaoClient::new(
        ClientConfig::new(format!("https://{CLUSTER}-public.{ns}.svc:8200"))
            .with_ca_pem(ca)
            .with_resolve_to(public_ip),
    )?;
    let jwt = admin_jwt(client, ns, CLUSTER).await?;
    let login = bao.login_jwt("jwt-operator", "admin", &jwt).await?;
    ensure!(login.policies.iter().any(|p| p == "admin"), "{:?}", login.policies);
    Ok(bao.with_token(login.token))
}
