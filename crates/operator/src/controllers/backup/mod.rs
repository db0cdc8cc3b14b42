//! The backup controller: schedules backups of each OpenBaoCluster with `spec.backup`, runs
//! each as a Job (`openbao-operator backup`) and records the Job's result in `status.backup`.
//!
//! I/O lives here; every decision is made by [`decide::decide`]. A reconcile reads the cluster
//! fresh (not from the watch cache: the lock and the running Job must be current), observes the
//! running Job and the credentials Secret, decides, writes status guarded by the resourceVersion
//! (so a concurrent lock holder makes this write fail instead of being overwritten), and only
//! then creates the Job. It writes `status.backup`, `status.operationLock` and the
//! `BackupConfigurationReady` and `BackupVerified` conditions, nothing else, and only when they
//! changed. Restore drills (`spec.backup.verify`) are decided by [`drill::decide`] in the same
//! reconcile and run as Jobs of their own (`openbao-operator verify-backup`).

pub mod decide;
pub mod drill;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use openbao_api::conditions::{self, BACKUP_CONFIGURATION_READY, Desired};
use openbao_api::{BACKUP_VERIFIED, OpenBaoCluster, TRIGGER_BACKUP_ANNOTATION};
use openbao_render::Cluster;
use openbao_render::objects::jobs::{self as job_objects, Executor};
use std::sync::Arc;
use std::time::Duration;

use self::decide::{CredentialsCheck, Decision, Inputs, JobAction, LockChange};
use crate::context::Context;
use crate::controllers::jobs;
use crate::controllers::watches;
use crate::kube_write::{KubeError, Writer, kube_err};
use crate::runtime::metrics::{BackupLabels, ClusterLabels};

/// The time source; tests set their own to drive schedules without waiting for them.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// What the backup controller needs beyond the shared context.
pub struct BackupContext {
    pub ctx: Arc<Context>,
    /// Image of the executor Jobs: the operator's own image.
    pub image: String,
    pub clock: Clock,
}

impl BackupContext {
    pub fn new(ctx: Arc<Context>, image: impl Into<String>) -> Self {
        Self {
            ctx,
            image: image.into(),
            clock: Arc::new(Timestamp::now),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("OpenBaoCluster has no namespace or uid")]
    MissingMetadata,
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    Job(#[from] jobs::Error),
}

/// After losing a race for the status (409), try again soon with the newer object.
const CONFLICT_RETRY: Duration = Duration::from_secs(1);
/// The key the executor Jobs' credentials Secret must hold.
const REQUIRED_KEYS: [&str; 2] = ["accessKeyId", "secretAccessKey"];

/// Runs the controller until `shutdown` resolves.
pub async fn run(bctx: Arc<BackupContext>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let (clusters, cache) = watches::clusters(bctx.ctx.watched::<OpenBaoCluster>());
    let executor_jobs =
        watcher::Config::default().labels(&format!("app.kubernetes.io/name={}", job_objects::EXECUTOR_NAME));
    let guard = crate::runtime::panic_guard::PanicGuard::new("backup", bctx.ctx.metrics.clone());
    let results = Controller::for_stream(clusters, cache)
        // A Job's completion is what a running backup waits for.
        .owns(bctx.ctx.watched::<Job>(), executor_jobs)
        .graceful_shutdown_on(shutdown)
        .run(guard.reconciler(reconcile), guard.error_policy(error_policy), bctx);
    guard.drive(results).await;
}

fn error_policy(obj: Arc<OpenBaoCluster>, err: &Error, _: Arc<BackupContext>) -> Action {
    tracing::warn!(cluster = %obj.name_any(), namespace = ?obj.namespace(), error = %err, "backup reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

/// One reconcile of the backups of `cached` (only its name is used; the object is read fresh).
pub async fn reconcile(cached: Arc<OpenBaoCluster>, bctx: Arc<BackupContext>) -> Result<Action, Error> {
    let ctx = &bctx.ctx;
    let namespace = cached.namespace().ok_or(Error::MissingMetadata)?;
    // Most clusters have no backups: the watch cache is enough to see that (a change brings
    // another event), so they cost no request.
    let cached_status = cached.status.as_ref();
    if cached.spec.backup.is_none() && cached_status.is_none_or(|s| s.backup.is_none() && s.operation_lock.is_none()) {
        return Ok(Action::await_change());
    }
    let api = Api::<OpenBaoCluster>::namespaced(ctx.client.clone(), &namespace);
    let Some(obj) = api
        .get_opt(&cached.name_any())
        .await
        .map_err(kube_err("reading the OpenBaoCluster"))?
    else {
        return Ok(Action::await_change());
    };
    let status = obj.status.clone().unwrap_or_default();
    let running_name = status.backup.as_ref().and_then(|b| b.running_job.clone());
    let running_drill_name = status
        .backup
        .as_ref()
        .and_then(|b| b.verification.as_ref())
        .and_then(|v| v.running_job.clone());
    if obj.spec.backup.is_none() && status.backup.is_none() && status.operation_lock.is_none() {
        return Ok(Action::await_change());
    }
    let credentials = match &obj.spec.backup {
        Some(b) => check_credentials(ctx, &namespace, &b.target.credentials_secret_ref.name).await?,
        None => CredentialsCheck::Present,
    };
    let running = match &running_name {
        Some(job) => Some(jobs::observe(ctx, &namespace, job, Executor::Backup).await?),
        None => None,
    };
    let running_drill = match &running_drill_name {
        Some(job) => Some(jobs::observe(ctx, &namespace, job, Executor::Verify).await?),
        None => None,
    };
    let name = obj.name_any();
    let inputs = Inputs {
        cluster: &name,
        spec: &obj.spec,
        status: &status,
        trigger: obj.annotations().get(TRIGGER_BACKUP_ANNOTATION).map(String::as_str),
        credentials,
        running,
        now: (bctx.clock)(),
    };
    let mut decision = decide::decide(&inputs);
    // The drill sees the backup status this reconcile writes (a backup that just finished).
    let backup_after = decision
        .backup
        .clone()
        .or_else(|| status.backup.clone())
        .unwrap_or_default();
    let drill = drill::decide(&drill::Inputs {
        cluster: &name,
        verify: obj.spec.backup.as_ref().and_then(|b| b.verify.as_ref()),
        backup: &backup_after,
        running: running_drill,
        now: inputs.now,
    });
    if drill.status != backup_after.verification {
        let mut backup = backup_after.clone();
        backup.verification = drill.status.clone();
        decision.backup = Some(backup);
    }
    if !write_status(ctx, &namespace, &obj, &decision, drill.condition.as_ref(), inputs.now).await? {
        return Ok(Action::requeue(CONFLICT_RETRY));
    }
    let mut events = Vec::new();
    if let JobAction::Create { name: job, why } = &decision.job {
        let uid = obj.uid().ok_or(Error::MissingMetadata)?;
        let (cluster, backup) = job_inputs(&obj, &name, &namespace, &uid, "a Job");
        jobs::create(
            ctx,
            &namespace,
            &job_objects::backup_job(&cluster, backup, job, &bctx.image),
        )
        .await?;
        events.push((
            EventType::Normal,
            "BackupStarted",
            format!("started backup Job {job} ({why:?})"),
        ));
    }
    if let Some((job, key)) = &drill.create {
        let uid = obj.uid().ok_or(Error::MissingMetadata)?;
        let (cluster, backup) = job_inputs(&obj, &name, &namespace, &uid, "a drill");
        // The version the cluster runs, so the drill proves the backup restores where it came from.
        let version = status.current_version.as_deref().unwrap_or(&obj.spec.version);
        let job_object = job_objects::verify_job(&cluster, backup, job, &bctx.image, version, Some(key));
        jobs::create(ctx, &namespace, &job_object).await?;
        events.push((
            EventType::Normal,
            "BackupVerificationStarted",
            format!("started restore drill Job {job} for backup {key}"),
        ));
    }
    if let Some(f) = &drill.finished {
        let (type_, reason) = if f.succeeded {
            (EventType::Normal, "BackupVerified")
        } else {
            (EventType::Warning, "BackupVerificationFailed")
        };
        events.push((type_, reason, f.message.clone()));
    }
    if let Some(f) = &decision.finished {
        record_metrics(ctx, &namespace, &name, f, decision.backup.as_ref());
        let (type_, reason) = if f.succeeded {
            (EventType::Normal, "BackupSucceeded")
        } else {
            (EventType::Warning, "BackupFailed")
        };
        let text = if f.succeeded {
            f.message.clone()
        } else {
            format!("backup Job {} failed ({}): {}", f.job, f.reason, f.message)
        };
        events.push((type_, reason, text));
    }
    if let Some(why) = &decision.blocked {
        tracing::info!(cluster = %name, namespace = %namespace, reason = %why, "backup waits");
        events.push((
            EventType::Normal,
            "BackupWaiting",
            format!("a backup is due but waits: {why}"),
        ));
    }
    let writer = Writer::new(ctx, &namespace);
    let reference = obj.object_ref(&());
    for (type_, reason, note) in events {
        writer.event(&reference, type_, reason, &note, "Backup").await;
    }
    let requeue = match (decision.requeue, drill.requeue) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(match requeue {
        Some(after) => Action::requeue(after.max(Duration::from_millis(200))),
        None => Action::await_change(),
    })
}

/// Which of the required keys the credentials Secret lacks. The values are only looked at for
/// emptiness and dropped when this returns: the Jobs mount the Secret, the controller never uses it.
/// The cluster as the Job builders take it, and its backup target (`job` names the Job kind
/// for the message of what cannot happen: a Job is only decided with `spec.backup`).
fn job_inputs<'a>(
    obj: &'a OpenBaoCluster,
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
    job: &str,
) -> (Cluster<'a>, &'a openbao_api::BackupSpec) {
    let backup = obj
        .spec
        .backup
        .as_ref()
        .unwrap_or_else(|| panic!("{job} is only created with spec.backup"));
    let cluster = Cluster {
        name,
        namespace,
        uid,
        spec: &obj.spec,
    };
    (cluster, backup)
}

async fn check_credentials(ctx: &Context, namespace: &str, name: &str) -> Result<CredentialsCheck, Error> {
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(kube_err(format!("reading Secret {name}")))?;
    let Some(secret) = secret else {
        return Ok(CredentialsCheck::SecretMissing);
    };
    let has = |k: &str| {
        secret
            .data
            .as_ref()
            .is_some_and(|d| d.get(k).is_some_and(|v| !v.0.is_empty()))
            || secret.string_data.as_ref().is_some_and(|d| d.contains_key(k))
    };
    let missing: Vec<&'static str> = REQUIRED_KEYS.into_iter().filter(|k| !has(k)).collect();
    Ok(if missing.is_empty() {
        CredentialsCheck::Present
    } else {
        CredentialsCheck::KeysMissing(missing)
    })
}

/// Writes what `decision` changes, guarded by the object's resourceVersion. `Ok(false)`: the
/// object changed meanwhile (the caller retries with the new one).
async fn write_status(
    ctx: &Context,
    api_namespace: &str,
    obj: &OpenBaoCluster,
    decision: &Decision,
    drill_condition: Option<&Desired>,
    now: Timestamp,
) -> Result<bool, Error> {
    let current = obj.status.clone().unwrap_or_default();
    let backup = decision.backup.clone().or_else(|| current.backup.clone());
    let lock = match decision.lock {
        LockChange::Keep => current.operation_lock.clone(),
        LockChange::Acquire => Some(decide::backup_lock(now)),
        LockChange::Release => None,
    };
    let mut conditions_list = current.conditions.clone();
    match &decision.condition {
        Some(c) => conditions::set_condition(&mut conditions_list, c.clone(), obj.metadata.generation, Time(now)),
        None => conditions_list.retain(|c| c.type_ != BACKUP_CONFIGURATION_READY),
    }
    match drill_condition {
        Some(c) => conditions::set_condition(&mut conditions_list, c.clone(), obj.metadata.generation, Time(now)),
        None => conditions_list.retain(|c| c.type_ != BACKUP_VERIFIED),
    }
    let mut wanted = current.clone();
    wanted.backup = backup;
    wanted.operation_lock = lock;
    wanted.conditions = conditions_list;
    let written = Writer::new(ctx, api_namespace)
        .patch_status::<OpenBaoCluster, _>(
            &obj.name_any(),
            Some(&current),
            &wanted,
            obj.resource_version().as_deref(),
        )
        .await;
    match written {
        Ok(_) => Ok(true),
        Err(e) if e.is_conflict() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn record_metrics(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
    finished: &decide::Finished,
    status: Option<&openbao_api::BackupStatus>,
) {
    let m = &ctx.metrics;
    let result = if finished.succeeded { "success" } else { "failure" };
    m.backups
        .get_or_create(&BackupLabels {
            namespace: namespace.into(),
            cluster: cluster.into(),
            result: result.into(),
        })
        .inc();
    let labels = ClusterLabels {
        namespace: namespace.into(),
        cluster: cluster.into(),
    };
    if let Some(r) = &finished.result
        && let Some(ms) = r.duration_ms
    {
        m.backup_duration.observe(ms as f64 / 1000.0);
    }
    if finished.succeeded {
        if let Some(size) = finished.result.as_ref().and_then(|r| r.size) {
            m.backup_last_size_bytes.get_or_create(&labels).set(size as i64);
        }
        m.backup_last_success_timestamp
            .get_or_create(&labels)
            .set(Timestamp::now().as_second());
    }
    let failures = status.map(|s| s.consecutive_failures).unwrap_or(0);
    m.backup_consecutive_failures
        .get_or_create(&labels)
        .set(i64::from(failures));
}
