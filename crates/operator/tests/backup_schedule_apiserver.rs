//! The backup controller against a real kube-apiserver (etcd + kube-apiserver built from the
//! pinned Kubernetes sources). There is no kubelet and no Job controller here: Jobs never run.
//! Where a test needs a finished backup it plays the kubelet's and the Job controller's part
//! itself, through the API (`simulate_job_finished`): it creates the Job's pod, sets the pod's
//! termination message to an executor result line and marks the Job complete or failed.
//!
//! The schedule is driven by an injected clock, so "every minute" is tested in milliseconds;
//! one test runs the real controller loop with the real clock for the manual trigger.

mod apiserver_common;

use anyhow::{Context as _, Result, bail, ensure};
use apiserver_common::{client_with_crds, context};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use openbao_api::conditions::{self, BACKUP_CONFIGURATION_READY};
use openbao_api::{OpenBaoCluster, Operation};
use openbao_operator::controllers::backup::{self, BackupContext};
use openbao_render::objects::jobs::{Executor, executor_selector};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::apiserver::{ApiServer, create_namespace};

const CLUSTER: &str = "vault";
const IMAGE: &str = "ghcr.io/openbao-operator/openbao-operator:test";

struct Env {
    client: Client,
    ns: String,
    bctx: Arc<BackupContext>,
    clock: Arc<Mutex<Timestamp>>,
}

impl Env {
    async fn new(prefix: &str, schedule: &str) -> Result<Self> {
        let client = client_with_crds(ApiServer::shared().await?).await?;
        let ns = create_namespace(&client, prefix).await?;
        let ctx = Arc::new(context(&client).await);
        let clock = Arc::new(Mutex::new(ts("2026-01-01T10:00:30Z")));
        let source = clock.clone();
        let bctx = Arc::new(BackupContext {
            ctx,
            image: IMAGE.into(),
            clock: Arc::new(move || *source.lock().unwrap()),
        });
        let env = Self {
            client,
            ns,
            bctx,
            clock,
        };
        env.create_cluster(schedule).await?;
        Ok(env)
    }

    fn set_time(&self, t: &str) {
        *self.clock.lock().unwrap() = ts(t);
    }

    fn clusters(&self) -> Api<OpenBaoCluster> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create_cluster(&self, schedule: &str) -> Result<()> {
        let cluster: OpenBaoCluster = serde_json::from_value(json!({
            "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster",
            "metadata": {"name": CLUSTER},
            "spec": {
                "version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"},
                "backup": {
                    "schedule": schedule,
                    "target": {
                        "endpoint": "http://rustfs.storage.svc:9000",
                        "bucket": "openbao-backups",
                        "credentialsSecretRef": {"name": "backup-credentials"},
                    },
                    "retention": {"maxCount": 3},
                },
            },
        }))?;
        self.clusters().create(&PostParams::default(), &cluster).await?;
        // What the cluster controller reports once OpenBao initialized itself.
        self.clusters()
            .patch_status(
                CLUSTER,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"initialized": true, "currentVersion": "2.7.2"}})),
            )
            .await?;
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "backup-credentials"},
            "stringData": {"accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "not-a-real-secret"},
        }))?;
        Api::<Secret>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &secret)
            .await?;
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "default"}}))?;
        match Api::<ServiceAccount>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &sa)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    async fn cluster(&self) -> Result<OpenBaoCluster> {
        Ok(self.clusters().get(CLUSTER).await?)
    }

    async fn reconcile(&self) -> Result<kube::runtime::controller::Action> {
        let obj = self.cluster().await?;
        Ok(backup::reconcile(Arc::new(obj), self.bctx.clone()).await?)
    }

    /// Reconciles until nothing changes any more (a decision may take two writes).
    async fn settle(&self) -> Result<()> {
        for _ in 0..5 {
            let before = self.cluster().await?.resource_version();
            self.reconcile().await?;
            let after = self.cluster().await?;
            if after.resource_version() == before {
                return Ok(());
            }
            eprintln!("settle: status now {}", serde_json::to_string(&after.status)?);
        }
        bail!("the backup status did not settle")
    }

    async fn job_names(&self) -> Result<Vec<String>> {
        let list = self
            .jobs()
            .list(&ListParams::default().labels(&executor_selector(CLUSTER, Executor::Backup)))
            .await?;
        let mut names: Vec<String> = list.items.iter().map(|j| j.name_any()).collect();
        names.sort();
        Ok(names)
    }

    async fn backup_status(&self) -> Result<openbao_api::BackupStatus> {
        self.cluster()
            .await?
            .status
            .and_then(|s| s.backup)
            .context("status.backup is missing")
    }

    async fn annotate(&self, value: &str) -> Result<()> {
        let patch = json!({"metadata": {"annotations": {openbao_api::TRIGGER_BACKUP_ANNOTATION: value}}});
        self.clusters()
            .patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Plays kubelet and Job controller: the Job's pod terminates with `result_line` as its
    /// termination message, and the Job is marked complete (or failed).
    async fn simulate_job_finished(&self, job: &str, succeeded: bool, result_line: &str) -> Result<()> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.ns);
        // Like the Job controller's pods: controlled by the Job (only those count for a result).
        let job_uid = Api::<Job>::namespaced(self.client.clone(), &self.ns)
            .get(job)
            .await?
            .metadata
            .uid
            .context("the Job has no uid")?;
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("{job}-pod"), "labels": {"batch.kubernetes.io/job-name": job},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": job_uid, "controller": true}]},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "containers": [{"name": "backup", "image": IMAGE}],
            },
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        let now = jiff::Timestamp::now().to_string();
        let exit_code = if succeeded { 0 } else { 1 };
        pods.patch_status(
            &format!("{job}-pod"),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": if succeeded { "Succeeded" } else { "Failed" },
                "containerStatuses": [{
                    "name": "backup", "image": IMAGE, "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {
                        "exitCode": exit_code, "message": result_line,
                        "startedAt": now, "finishedAt": now,
                    }},
                }],
            }})),
        )
        .await
        .context("setting the simulated pod's status")?;
        let (counts, conditions) = if succeeded {
            (
                json!({"succeeded": 1, "completionTime": now}),
                json!([
                    {"type": "SuccessCriteriaMet", "status": "True", "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now},
                ]),
            )
        } else {
            (
                json!({"failed": 1}),
                json!([
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now},
                ]),
            )
        };
        let mut status = json!({"startTime": now, "active": 0, "ready": 0, "conditions": conditions});
        for (k, v) in counts.as_object().unwrap() {
            status[k] = v.clone();
        }
        self.jobs()
            .patch_status(job, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
            .await
            .context("setting the simulated Job status")?;
        Ok(())
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn success_line(key: &str, size: u64) -> String {
    json!({
        "operation": "backup", "result": "Succeeded", "bucket": "openbao-backups", "key": key,
        "size": size, "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "duration_ms": 1875, "transfer_ms": 1200, "leader": "https://vault-0.vault.ns.svc:8200", "deleted": [],
    })
    .to_string()
}

#[tokio::test]
async fn the_schedule_creates_jobs_at_the_right_times_one_at_a_time() -> Result<()> {
    let started = Instant::now();
    let env = Env::new("backup-schedule", "* * * * *").await?;

    // First look: the next window is computed, nothing runs.
    env.settle().await?;
    assert_eq!(env.job_names().await?, Vec::<String>::new());
    let st = env.backup_status().await?;
    assert_eq!(st.next_scheduled_backup.map(|t| t.0), Some(ts("2026-01-01T10:01:00Z")));
    let cond = conditions::find(
        &env.cluster().await?.status.unwrap().conditions,
        BACKUP_CONFIGURATION_READY,
    )
    .cloned()
    .context("condition")?;
    assert_eq!((cond.status.as_str(), cond.reason.as_str()), ("True", "Ready"));

    // A second before the window: still nothing.
    env.set_time("2026-01-01T10:00:59Z");
    env.settle().await?;
    assert_eq!(env.job_names().await?, Vec::<String>::new());

    // At the window: exactly one Job, from our image, and the lock.
    env.set_time("2026-01-01T10:01:00Z");
    env.settle().await?;
    let first = "vault-backup-20260101-100100".to_string();
    assert_eq!(env.job_names().await?, vec![first.clone()]);
    let job = env.jobs().get(&first).await?;
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.containers[0].image.as_deref(), Some(IMAGE));
    assert_eq!(pod.service_account_name.as_deref(), Some("vault-backup-serviceaccount"));
    assert_eq!(job.spec.as_ref().unwrap().backoff_limit, Some(0));
    assert_eq!(job.owner_references()[0].name, CLUSTER);
    let status = env.cluster().await?.status.unwrap();
    let lock = status.operation_lock.context("the backup holds the lock")?;
    assert_eq!(
        (lock.operation, lock.holder.as_str()),
        (Operation::Backup, "openbaocluster/backup")
    );
    let st = status.backup.unwrap();
    assert_eq!(st.running_job.as_deref(), Some(first.as_str()));
    assert_eq!(st.next_scheduled_backup.map(|t| t.0), Some(ts("2026-01-01T10:02:00Z")));

    // The next window comes while the first Job still runs, and a manual trigger too: the lock
    // keeps it at one backup.
    env.set_time("2026-01-01T10:02:30Z");
    env.annotate("manual-1").await?;
    env.settle().await?;
    assert_eq!(
        env.job_names().await?,
        vec![first.clone()],
        "a second backup started concurrently"
    );

    // The first Job finishes: its result line fills the status and the lock is released; the
    // due window and the pending trigger then run as one backup.
    env.simulate_job_finished(
        &first,
        true,
        &success_line("team-a/vault/2026-01-01T10-01-00Z-0a1b2c3d.snap", 28697),
    )
    .await?;
    env.set_time("2026-01-01T10:02:31Z");
    env.reconcile().await?;
    let st = env.backup_status().await?;
    assert_eq!(
        st.last_backup_name.as_deref(),
        Some("team-a/vault/2026-01-01T10-01-00Z-0a1b2c3d.snap")
    );
    assert_eq!(st.last_backup_size, Some(28697));
    assert_eq!(st.last_backup_duration.as_deref(), Some("1.875s"));
    assert_eq!(st.last_backup_bucket.as_deref(), Some("openbao-backups"));
    assert_eq!(st.last_backup_time.map(|t| t.0), Some(ts("2026-01-01T10:02:31Z")));
    assert_eq!(st.consecutive_failures, 0);
    assert_eq!(st.last_job_name.as_deref(), Some(first.as_str()));
    env.settle().await?;
    let second = "vault-backup-20260101-100231".to_string();
    assert_eq!(env.job_names().await?, vec![first.clone(), second.clone()]);
    let st = env.backup_status().await?;
    assert_eq!(st.acknowledged_trigger.as_deref(), Some("manual-1"));
    // Missed windows collapse: the next one is after now, not 10:02.
    assert_eq!(st.next_scheduled_backup.map(|t| t.0), Some(ts("2026-01-01T10:03:00Z")));

    // The second fails with wrong store credentials: counted, reason kept, condition actionable.
    let failure = json!({"operation": "backup", "result": "Failed", "reason": "CredentialsRejected",
        "message": "the store rejected the credentials: InvalidAccessKeyId", "duration_ms": 40})
    .to_string();
    env.simulate_job_finished(&second, false, &failure).await?;
    env.set_time("2026-01-01T10:02:40Z");
    env.settle().await?;
    let status = env.cluster().await?.status.unwrap();
    assert!(status.operation_lock.is_none(), "the lock was not released");
    let st = status.backup.clone().unwrap();
    assert_eq!(st.consecutive_failures, 1);
    assert_eq!(st.last_failure_reason.as_deref(), Some("CredentialsRejected"));
    assert!(st.last_failure_message.unwrap().contains("InvalidAccessKeyId"));
    // The last success is still the one on record.
    assert_eq!(st.last_backup_size, Some(28697));
    let cond = conditions::find(&status.conditions, BACKUP_CONFIGURATION_READY).unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "AuthenticationFailed")
    );
    // The same annotation value never runs again.
    assert_eq!(env.job_names().await?.len(), 2);

    let metrics = env.bctx.ctx.metrics.encode();
    for line in [
        "openbao_operator_backups_total{namespace=\"",
        "result=\"success\"} 1",
        "result=\"failure\"} 1",
        "openbao_operator_backup_last_size_bytes{",
        "openbao_operator_backup_consecutive_failures{",
    ] {
        ensure!(metrics.contains(line), "{line:?} not in metrics:\n{metrics}");
    }
    eprintln!(
        "schedule, lock, results and failure proven in {:.2?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn another_operation_holding_the_lock_blocks_the_backup() -> Result<()> {
    let env = Env::new("backup-lock", "0 3 * * *").await?;
    env.clusters()
        .patch_status(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"operationLock": {
                "operation": "Restore", "holder": "openbaorestore/r1", "since": "2026-01-01T10:00:00Z"
            }}})),
        )
        .await?;
    env.annotate("now").await?;
    env.settle().await?;
    assert_eq!(
        env.job_names().await?,
        Vec::<String>::new(),
        "backup ran while a restore held the lock"
    );
    let st = env.backup_status().await?;
    assert_eq!(
        st.acknowledged_trigger, None,
        "the trigger was dropped instead of waiting"
    );

    // The restore releases the lock: the waiting trigger runs.
    env.clusters()
        .patch_status(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"operationLock": null}})),
        )
        .await?;
    env.set_time("2026-01-01T10:00:40Z");
    env.settle().await?;
    assert_eq!(env.job_names().await?, vec!["vault-backup-20260101-100040".to_string()]);
    Ok(())
}

#[tokio::test]
async fn a_missing_credentials_secret_is_a_condition_not_a_job() -> Result<()> {
    let env = Env::new("backup-creds", "0 3 * * *").await?;
    Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .delete("backup-credentials", &Default::default())
        .await?;
    env.annotate("now").await?;
    env.settle().await?;
    assert_eq!(env.job_names().await?, Vec::<String>::new());
    let status = env.cluster().await?.status.unwrap();
    let cond = conditions::find(&status.conditions, BACKUP_CONFIGURATION_READY).unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "CredentialsSecretMissing")
    );
    assert!(cond.message.contains("backup-credentials"), "{}", cond.message);
    Ok(())
}

/// The real controller loop (watches, real clock): one annotation value, exactly one Job, and
/// the same value applied again runs nothing.
#[tokio::test]
async fn the_running_controller_runs_a_manual_trigger_exactly_once() -> Result<()> {
    let env = Env::new("backup-trigger", "0 3 * * *").await?;
    // Only this test's namespace: other tests of this binary drive their clusters by hand.
    let mut ctx = context(&env.client).await;
    ctx.watch_namespace = Some(env.ns.clone());
    let real = Arc::new(BackupContext::new(Arc::new(ctx), IMAGE));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(backup::run(real, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let result = async {
        env.annotate("run-1").await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let started = Instant::now();
        while env.job_names().await?.is_empty() {
            ensure!(Instant::now() < deadline, "no backup Job within 20 s of the annotation");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("backup Job created {:.2?} after the annotation", started.elapsed());
        // Re-applying the same value (a GitOps sync) and waiting: still exactly one Job.
        env.annotate("run-1").await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let names = env.job_names().await?;
        ensure!(names.len() == 1, "expected exactly one Job, got {names:?}");
        let st = env.backup_status().await?;
        ensure!(st.acknowledged_trigger.as_deref() == Some("run-1"), "{st:?}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    result
}

/// The cluster controller does not start an upgrade while a backup holds the lock, and starts
/// it once the lock is free.
#[tokio::test]
async fn an_upgrade_waits_while_a_backup_holds_the_lock() -> Result<()> {
    let env = Env::new("backup-upgrade", "0 3 * * *").await?;
    let ctx = env.bctx.ctx.clone();
    let reconcile_cluster = || async {
        let obj = env.cluster().await?;
        openbao_operator::controllers::cluster::reconcile(Arc::new(obj), ctx.clone()).await?;
        Ok::<_, anyhow::Error>(())
    };
    reconcile_cluster().await?;
    // A backup runs (it took the lock) and the cluster, on 2.6.2, is asked to go to 2.7.2.
    env.clusters()
        .patch_status(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "currentVersion": "2.6.2", "readyReplicas": 3,
                "operationLock": {"operation": "Backup", "holder": "openbaocluster/backup", "since": "2026-01-01T10:00:00Z"},
            }})),
        )
        .await?;
    reconcile_cluster().await?;
    let status = env.cluster().await?.status.unwrap();
    let upgrading = conditions::find(&status.conditions, "Upgrading").context("Upgrading condition")?;
    assert_eq!(
        (upgrading.status.as_str(), upgrading.reason.as_str()),
        ("False", "WaitingForOperationLock"),
        "{upgrading:?}"
    );
    assert!(
        upgrading.message.contains("openbaocluster/backup"),
        "{}",
        upgrading.message
    );
    assert!(
        status
            .upgrade
            .as_ref()
            .is_none_or(|u| u.phase == openbao_api::UpgradePhase::Idle),
        "the upgrade started: {:?}",
        status.upgrade
    );
    assert!(
        status.operation_lock.is_some(),
        "the cluster controller dropped the lock"
    );
    Ok(())
}
