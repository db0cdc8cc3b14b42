//! The OpenBaoRestore controller against a real kube-apiserver (etcd + kube-apiserver built from
//! the pinned Kubernetes sources).
//!
//! Apiserver mode has no kube-controller-manager and no kubelet: a Job never gets a pod and
//! never finishes by itself. The test plays both where it must, through the API, in functions
//! named `simulate_*`: it creates the Job's pod, writes the executor's result line as the pod's
//! termination message, and sets the Job's conditions. Everything the controller does (the
//! lock, the status, the Job) is real API traffic. Crashes in the middle of a restore are
//! simulated by writing the status a crashed operator would have left (`simulate_crash_*`).
//! There is no garbage collector either: deleted restores leave their Jobs behind here.
//! The restore's NetworkPolicy (its store's namespace and port) is written before its Job.

mod apiserver_common;

use anyhow::{Context as _, Result, bail, ensure};
use apiserver_common::{client_with_crds, context};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, OpenBaoRestore, OpenBaoRestoreStatus, RestorePhase};
use openbao_operator::context::Context;
use openbao_operator::controllers::restore;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::apiserver::{ApiServer, create_namespace};

const IMAGE: &str = "ghcr.io/openbao-operator/openbao-operator:restore-test";
const KEY: &str = "backups/team-a/vault/20261124T120000Z-0a1b2c3d.snap";

async fn setup(prefix: &str) -> Result<(Client, Arc<Context>, String)> {
    let client = client_with_crds(ApiServer::shared().await?).await?;
    let ctx = Arc::new(context(&client).await);
    let ns = create_namespace(&client, prefix).await?;
    Ok((client, ctx, ns))
}

async fn delete_namespace(client: &Client, ns: &str) -> Result<()> {
    Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await?;
    Ok(())
}

/// The restore controller as a task; dropping it is an operator crash (nothing is flushed).
struct Operator(tokio::task::JoinHandle<()>);

impl Operator {
    fn start(ctx: &Arc<Context>) -> Self {
        Self(tokio::spawn(restore::run(
            ctx.clone(),
            IMAGE.to_string(),
            std::future::pending::<()>(),
        )))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An initialized cluster (status written as the cluster controller would), with `lock`.
async fn cluster(client: &Client, ns: &str, name: &str, lock: Option<Value>) -> Result<()> {
    let api = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    let obj: OpenBaoCluster = serde_json::from_value(json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster",
        "metadata": {"name": name},
        "spec": {"version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"}},
    }))?;
    api.create(&PostParams::default(), &obj).await?;
    set_lock(client, ns, name, lock.unwrap_or(Value::Null)).await?;
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"initialized": true}})),
    )
    .await?;
    // The restore Job's pods run as this service account (the cluster controller creates it).
    let sa: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": openbao_api::names::job_service_account(name, "restore")},
    }))?;
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await?;
    Ok(())
}

async fn set_lock(client: &Client, ns: &str, cluster: &str, lock: Value) -> Result<()> {
    Api::<OpenBaoCluster>::namespaced(client.clone(), ns)
        .patch_status(
            cluster,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"operationLock": lock}})),
        )
        .await?;
    Ok(())
}

fn backup_lock(holder: &str) -> Value {
    json!({"operation": "Backup", "holder": holder, "since": "2026-11-24T12:00:00Z"})
}

async fn lock_holder(client: &Client, ns: &str, cluster: &str) -> Result<Option<String>> {
    let obj = Api::<OpenBaoCluster>::namespaced(client.clone(), ns)
        .get(cluster)
        .await?;
    Ok(obj.status.and_then(|s| s.operation_lock).map(|l| l.holder))
}

async fn create_restore(client: &Client, ns: &str, name: &str, cluster: &str) -> Result<OpenBaoRestore> {
    let obj: OpenBaoRestore = serde_json::from_value(json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoRestore",
        "metadata": {"name": name},
        "spec": {
            "cluster": cluster,
            "source": {
                "target": {
                    "endpoint": "http://rustfs.storage.svc:9000",
                    "bucket": "openbao-backups",
                    "credentialsSecretRef": {"name": "backup-credentials"},
                },
                "key": KEY,
            },
        },
    }))?;
    Ok(Api::<OpenBaoRestore>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await?)
}

async fn status(client: &Client, ns: &str, name: &str) -> Result<OpenBaoRestoreStatus> {
    let obj = Api::<OpenBaoRestore>::namespaced(client.clone(), ns).get(name).await?;
    Ok(obj.status.unwrap_or_default())
}

async fn wait_status(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&OpenBaoRestoreStatus) -> bool,
) -> Result<OpenBaoRestoreStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(client, ns, name).await?;
        if pred(&s) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("restore {name}: timed out waiting for {what}; status is {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is(phase: RestorePhase, reason: &'static str) -> impl Fn(&OpenBaoRestoreStatus) -> bool {
    move |s| s.phase == phase && s.reason.as_deref() == Some(reason)
}

/// Every Job in the namespace: there must never be more than one per restore.
async fn jobs(client: &Client, ns: &str) -> Result<Vec<Job>> {
    Ok(Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items)
}

/// Plays kubelet and Job controller for a finished restore Job: a pod of the Job whose
/// container terminated with `result_line` as its termination message, and the Job conditions
/// the Job controller would set.
async fn simulate_job_finished(client: &Client, ns: &str, job_name: &str, result_line: &str) -> Result<()> {
    let succeeded = result_line.contains(r#""result":"Succeeded""#);
    let job = Api::<Job>::namespaced(client.clone(), ns).get(job_name).await?;
    let template = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .context("Job has a pod template")?;
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": format!("{job_name}-simulated"),
            "labels": {"batch.kubernetes.io/job-name": job_name, "job-name": job_name},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                 "uid": job.uid().context("Job uid")?, "controller": true}],
        },
        "spec": template,
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let now = jiff::Timestamp::now().to_string();
    let container = &template.containers[0];
    pods.patch_status(
        &format!("{job_name}-simulated"),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "phase": if succeeded { "Succeeded" } else { "Failed" },
            "containerStatuses": [{
                "name": container.name, "image": container.image, "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": if succeeded { 0 } else { 1 },
                    "reason": if succeeded { "Completed" } else { "Error" },
                    "message": result_line, "startedAt": now, "finishedAt": now,
                }},
            }],
        }})),
    )
    .await?;
    let condition = |kind: &str, reason: &str| {
        json!({"type": kind, "status": "True", "reason": reason, "message": reason,
               "lastProbeTime": now, "lastTransitionTime": now})
    };
    let status = if succeeded {
        json!({"startTime": now, "completionTime": now, "succeeded": 1, "active": 0,
               "conditions": [condition("SuccessCriteriaMet", "CompletionsReached"),
                              condition("Complete", "CompletionsReached")]})
    } else {
        json!({"startTime": now, "failed": 1, "active": 0,
               "conditions": [condition("FailureTarget", "BackoffLimitExceeded"),
                              condition("Failed", "BackoffLimitExceeded")]})
    };
    Api::<Job>::namespaced(client.clone(), ns)
        .patch_status(
            job_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .context("simulating the Job controller's status")?;
    Ok(())
}

/// Writes the status an operator leaves when it crashes right after that write.
async fn simulate_crash_after(client: &Client, ns: &str, name: &str, reason: &str) -> Result<()> {
    Api::<OpenBaoRestore>::namespaced(client.clone(), ns)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Running", "reason": reason, "jobName": openbao_api::names::restore_job(name),
                "startTime": jiff::Timestamp::now().to_string(),
            }})),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_restore_runs_once_across_operator_restarts_and_reports_the_job_result() -> Result<()> {
    let (client, ctx, ns) = setup("h-restore-once").await?;
    cluster(&client, &ns, "vault", None).await?;
    create_restore(&client, &ns, "r1", "vault").await?;

    let operator = Operator::start(&ctx);
    let running = wait_status(
        &client,
        &ns,
        "r1",
        "Running/Restoring",
        is(RestorePhase::Running, "Restoring"),
    )
    .await?;
    assert_eq!(running.job_name.as_deref(), Some("restore-r1"));
    assert_eq!(
        lock_holder(&client, &ns, "vault").await?.as_deref(),
        Some("openbaorestore/r1")
    );
    let all = jobs(&client, &ns).await?;
    assert_eq!(all.len(), 1, "one Job");
    let job = &all[0];
    let spec = job.spec.as_ref().context("job spec")?;
    assert_eq!(spec.backoff_limit, Some(0), "no Job retries");
    let pod = spec.template.spec.as_ref().context("pod spec")?;
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"), "no container restarts");
    let owner = &job.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("OpenBaoRestore", "r1"));
    let env = pod.containers[0].env.clone().unwrap_or_default();
    assert!(
        env.iter()
            .any(|e| e.name == "RESTORE_KEY" && e.value.as_deref() == Some(KEY))
    );
    assert_eq!(pod.containers[0].args.as_deref(), Some(&["restore".to_string()][..]));
    assert_eq!(pod.containers[0].image.as_deref(), Some(IMAGE));
    let uid = job.uid();
    // Its pods' NetworkPolicy, owned by the restore like the Job: the store's namespace and port
    // besides DNS and the servers' API, the cluster's restore executors selected.
    let np = Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .get(&openbao_api::names::restore_network_policy("r1"))
        .await
        .context("the restore's NetworkPolicy")?;
    let owner = &np.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("OpenBaoRestore", "r1"));
    let policy = serde_json::to_value(np.spec.as_ref().context("policy spec")?)?;
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let selected = policy["podSelector"]["matchLabels"]
        .as_object()
        .context("matchLabels")?
        .iter()
        .all(|(k, v)| template_labels.get(k).map(String::as_str) == v.as_str());
    ensure!(
        selected,
        "the Job's pods {template_labels:?} are not selected: {policy}"
    );
    ensure!(
        policy["egress"].as_array().is_some_and(|e| e.iter().any(|r| *r
            == json!({"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storage"}}}],
                      "ports": [{"protocol": "TCP", "port": 9000}]}))),
        "the store: {policy}"
    );

    // The operator crashes while the Job runs; the next one must not start another Job.
    drop(operator);
    let operator = Operator::start(&ctx);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = jobs(&client, &ns).await?;
    ensure!(
        all.len() == 1 && all[0].uid() == uid,
        "a restarted operator created another Job"
    );
    assert_eq!(status(&client, &ns, "r1").await?.phase, RestorePhase::Running);

    let line = r#"{"operation":"restore","result":"Succeeded","bucket":"openbao-backups","key":"backups/team-a/vault/20261124T120000Z-0a1b2c3d.snap","size":21184104,"duration_ms":4200,"leader":"https://vault-0.vault-internal.team-a.svc:8200"}"#;
    simulate_job_finished(&client, &ns, "restore-r1", line).await?;
    let done = wait_status(&client, &ns, "r1", "Completed", is(RestorePhase::Completed, "Restored")).await?;
    eprintln!("completed: {}", done.message.as_deref().unwrap_or_default());
    assert!(done.message.as_deref().unwrap_or_default().contains("21184104 bytes"));
    assert!(done.completion_time.is_some());
    let condition = done
        .conditions
        .iter()
        .find(|c| c.type_ == "RestoreComplete")
        .context("condition")?;
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "Restored")
    );
    wait_lock(&client, &ns, "vault", None).await?;

    // Another restart after the end: nothing runs again.
    drop(operator);
    let _operator = Operator::start(&ctx);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = jobs(&client, &ns).await?;
    ensure!(all.len() == 1 && all[0].uid() == uid, "a finished restore ran again");
    assert_eq!(status(&client, &ns, "r1").await?.phase, RestorePhase::Completed);
    assert_eq!(lock_holder(&client, &ns, "vault").await?, None);
    delete_namespace(&client, &ns).await
}

async fn wait_lock(client: &Client, ns: &str, cluster: &str, holder: Option<&str>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = lock_holder(client, ns, cluster).await?;
        if now.as_deref() == holder {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("lock of {cluster} is held by {now:?}, expected {holder:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_restore_waits_for_the_lock_and_a_foreign_seal_is_reported_as_refused() -> Result<()> {
    let (client, ctx, ns) = setup("h-restore-lock").await?;
    cluster(&client, &ns, "vault", Some(backup_lock("openbaocluster/backup"))).await?;
    create_restore(&client, &ns, "r2", "vault").await?;
    let _operator = Operator::start(&ctx);

    let waiting = wait_status(
        &client,
        &ns,
        "r2",
        "WaitingForLock",
        is(RestorePhase::Pending, "WaitingForLock"),
    )
    .await?;
    let message = waiting.message.clone().unwrap_or_default();
    eprintln!("waiting: {message}");
    assert!(
        message.contains("openbaocluster/backup") && message.contains("a backup"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        jobs(&client, &ns).await?.is_empty(),
        "no Job while a backup holds the lock"
    );
    assert_eq!(
        lock_holder(&client, &ns, "vault").await?.as_deref(),
        Some("openbaocluster/backup")
    );

    // The backup ends: the restore takes the lock and starts.
    set_lock(&client, &ns, "vault", Value::Null).await?;
    wait_status(
        &client,
        &ns,
        "r2",
        "Running/Restoring",
        is(RestorePhase::Running, "Restoring"),
    )
    .await?;
    assert_eq!(
        lock_holder(&client, &ns, "vault").await?.as_deref(),
        Some("openbaorestore/r2")
    );

    // A second restore of the same cluster waits for the first.
    create_restore(&client, &ns, "r3", "vault").await?;
    let waiting = wait_status(
        &client,
        &ns,
        "r3",
        "WaitingForLock",
        is(RestorePhase::Pending, "WaitingForLock"),
    )
    .await?;
    assert!(
        waiting
            .message
            .unwrap_or_default()
            .contains("openbaorestore/r2 holds it for a restore")
    );

    let line = r#"{"operation":"restore","result":"Failed","reason":"SealMismatch","message":"the snapshot was sealed with a different seal key than this cluster's; restoring it would leave the cluster sealed for good, so it was refused: POST /v1/sys/storage/raft/snapshot: HTTP 400: could not verify hash file","duration_ms":310}"#;
    simulate_job_finished(&client, &ns, "restore-r2", line).await?;
    let failed = wait_status(
        &client,
        &ns,
        "r2",
        "Failed/SealMismatch",
        is(RestorePhase::Failed, "SealMismatch"),
    )
    .await?;
    let message = failed.message.unwrap_or_default();
    eprintln!("seal mismatch: {message}");
    assert!(
        message.contains("different seal key") && message.contains("nothing was changed"),
        "{message}"
    );
    let condition = failed
        .conditions
        .iter()
        .find(|c| c.type_ == "RestoreComplete")
        .context("condition")?;
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "SealMismatch")
    );

    // r2 released the lock and r3 got it; r2's Job was not retried.
    wait_status(
        &client,
        &ns,
        "r3",
        "Running/Restoring",
        is(RestorePhase::Running, "Restoring"),
    )
    .await?;
    assert_eq!(
        lock_holder(&client, &ns, "vault").await?.as_deref(),
        Some("openbaorestore/r3")
    );
    let mut names: Vec<String> = jobs(&client, &ns).await?.iter().map(|j| j.name_any()).collect();
    names.sort();
    assert_eq!(names, ["restore-r2", "restore-r3"]);
    delete_namespace(&client, &ns).await
}

#[tokio::test]
async fn a_crash_before_the_job_starts_it_once_and_a_lost_or_leftover_job_is_never_taken_for_its_own() -> Result<()> {
    let (client, ctx, ns) = setup("h-restore-crash").await?;
    // The operator died right after writing Running/Starting (lock held, Job not created yet).
    cluster(
        &client,
        &ns,
        "c1",
        Some(json!({"operation": "Restore", "holder": "openbaorestore/r4", "since": "2026-11-24T12:00:00Z"})),
    )
    .await?;
    create_restore(&client, &ns, "r4", "c1").await?;
    simulate_crash_after(&client, &ns, "r4", "Starting").await?;
    // The operator died after the Job was seen (Running/Restoring), and the Job was deleted
    // while it was down.
    cluster(
        &client,
        &ns,
        "c2",
        Some(json!({"operation": "Restore", "holder": "openbaorestore/r5", "since": "2026-11-24T12:00:00Z"})),
    )
    .await?;
    create_restore(&client, &ns, "r5", "c2").await?;
    simulate_crash_after(&client, &ns, "r5", "Restoring").await?;

    let _operator = Operator::start(&ctx);
    wait_status(
        &client,
        &ns,
        "r4",
        "Running/Restoring",
        is(RestorePhase::Running, "Restoring"),
    )
    .await?;
    let lost = wait_status(
        &client,
        &ns,
        "r5",
        "Failed/JobLost",
        is(RestorePhase::Failed, "JobLost"),
    )
    .await?;
    let message = lost.message.unwrap_or_default();
    eprintln!("job lost: {message}");
    assert!(message.contains("not re-run"), "{message}");
    wait_lock(&client, &ns, "c2", None).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let names: Vec<String> = jobs(&client, &ns).await?.iter().map(|j| j.name_any()).collect();
    assert_eq!(names, ["restore-r4"], "r4 started exactly one Job, r5 none");

    // A pod that only looks like the Job's (same label, no owner) cannot forge a result.
    let forged: Pod = serde_json::from_value(json!({
        "metadata": {"name": "forged", "labels": {"batch.kubernetes.io/job-name": "restore-r4"}},
        "spec": {"serviceAccountName": openbao_api::names::job_service_account("c1", "restore"),
                 "containers": [{"name": "restore", "image": "x"}]},
    }))?;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &forged).await?;
    pods.patch_status("forged", &PatchParams::default(), &Patch::Merge(json!({"status": {
        "containerStatuses": [{"name": "restore", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "message": r#"{"operation":"restore","result":"Succeeded"}"#}}}],
    }}))).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status(&client, &ns, "r4").await?.phase, RestorePhase::Running);

    // A Job left under the same name by an earlier restore called r6 is neither reported nor
    // replaced: the new r6 waits (without the lock) until it is gone, then starts its own.
    cluster(&client, &ns, "c3", None).await?;
    let leftover: Job = serde_json::from_value(json!({
        "metadata": {"name": "restore-r6"},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "restore", "image": "x"}]}}},
    }))?;
    let job_api = Api::<Job>::namespaced(client.clone(), &ns);
    let leftover = job_api.create(&PostParams::default(), &leftover).await?;
    create_restore(&client, &ns, "r6", "c3").await?;
    let blocked = wait_status(
        &client,
        &ns,
        "r6",
        "PreviousJobPresent",
        is(RestorePhase::Pending, "PreviousJobPresent"),
    )
    .await?;
    eprintln!("leftover job: {}", blocked.message.unwrap_or_default());
    assert_eq!(lock_holder(&client, &ns, "c3").await?, None);
    // Background propagation: apiserver mode has no garbage collector to clear an orphan finalizer.
    job_api.delete("restore-r6", &DeleteParams::background()).await?;
    wait_status(
        &client,
        &ns,
        "r6",
        "Running/Restoring",
        is(RestorePhase::Running, "Restoring"),
    )
    .await?;
    let own = job_api.get("restore-r6").await?;
    assert_ne!(own.uid(), leftover.uid());
    assert_eq!(own.owner_references()[0].name, "r6");

    // Deleting a running restore releases its lock (finalizer), so backups are not blocked.
    Api::<OpenBaoRestore>::namespaced(client.clone(), &ns)
        .delete("r4", &DeleteParams::default())
        .await?;
    wait_lock(&client, &ns, "c1", None).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Api::<OpenBaoRestore>::namespaced(client.clone(), &ns)
        .get_opt("r4")
        .await?
        .is_some()
    {
        ensure!(Instant::now() < deadline, "the finalizer was not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    delete_namespace(&client, &ns).await
}
