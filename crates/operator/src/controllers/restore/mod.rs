//! The OpenBaoRestore controller: one restore, exactly once.
//!
//! Each reconcile reads the restore, its cluster and its Job fresh from the API (a destructive
//! step must never be decided on a stale watch cache), asks [`decide::next_step`] what to do,
//! does that one thing, and asks again, until the answer is to wait. The status is the state
//! machine: `Pending` (waiting for the cluster or its operation lock) → `Running`/`Starting`
//! (lock held, Job about to be created) → `Running`/`Restoring` (Job exists) → `Completed` or
//! `Failed` (from the executor's result line), then the lock is released.
//!
//! Writes that decide something (the lock, the phase) carry the object's `resourceVersion`,
//! so a concurrent writer makes them fail with a conflict and the next round decides again.
//! A finalizer releases the lock when a restore that holds it is deleted. The Job's result is
//! read only from pods the Job controls (owner reference with the Job's uid).
//!
//! The lock is not watched: a restore waiting for it looks again every 10 s.

pub mod decide;
pub mod result;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use openbao_api::{OpenBaoCluster, OpenBaoRestore, OpenBaoRestoreStatus, Operation, RestorePhase};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

use self::decide::{ClusterView, Inputs, RESTORING, RestoreStep, STARTING};
use crate::context::Context;
use crate::controllers::jobs;
use crate::kube_write::{KubeError, Writer, kube_err};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("OpenBaoRestore has no namespace")]
    MissingNamespace,
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error("building the restore Job: {0}")]
    Build(String),
    #[error(transparent)]
    Job(#[from] jobs::Error),
}

/// How long a finished restore keeps checking that its lock stays released (a cluster status
/// write from a stale cache could bring it back).
const RELEASE_WATCH: Duration = Duration::from_secs(120);
/// Releases the cluster's operation lock when a restore that holds it is deleted.
pub const FINALIZER: &str = "openbao.org/restore-lock";
/// Steps per reconcile; each one changes what the next decision sees.
const MAX_STEPS: usize = 10;

/// What every restore reconcile shares.
pub struct RestoreContext {
    pub ctx: Arc<Context>,
    /// Image of the restore Jobs: the operator's own (`--executor-image` / `OPERATOR_IMAGE`).
    pub image: String,
}

/// Runs the controller until `shutdown` resolves; restore Jobs run `image`.
pub async fn run(
    ctx: Arc<Context>,
    image: String,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (restores, job_watch) = (ctx.watched::<OpenBaoRestore>(), ctx.watched::<Job>());
    let managed = watcher::Config::default().labels(&format!(
        "{}={}",
        openbao_render::labels::MANAGED_BY_LABEL,
        openbao_render::labels::MANAGED_BY
    ));
    let guard = crate::runtime::panic_guard::PanicGuard::new("restore", ctx.metrics.clone());
    let results = Controller::new(restores, watcher::Config::default().any_semantic())
        .owns(job_watch, managed)
        .graceful_shutdown_on(shutdown)
        .run(
            guard.reconciler(reconcile),
            guard.error_policy(error_policy),
            Arc::new(RestoreContext { ctx, image }),
        );
    guard.drive(results).await;
}

fn error_policy(obj: Arc<OpenBaoRestore>, err: &Error, _ctx: Arc<RestoreContext>) -> Action {
    tracing::warn!(restore = %obj.name_any(), namespace = ?obj.namespace(), error = %err, "restore reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

/// One reconcile of the restore `obj` names (its cached content is not used).
pub async fn reconcile(obj: Arc<OpenBaoRestore>, rctx: Arc<RestoreContext>) -> Result<Action, Error> {
    let ctx = &rctx.ctx;
    let namespace = obj.namespace().ok_or(Error::MissingNamespace)?;
    let name = obj.name_any();
    let restores = Api::<OpenBaoRestore>::namespaced(ctx.client.clone(), &namespace);
    let clusters = Api::<OpenBaoCluster>::namespaced(ctx.client.clone(), &namespace);
    let job_api = Api::<Job>::namespaced(ctx.client.clone(), &namespace);
    let writer = Writer::new(ctx, &namespace);
    let holder = openbao_api::restore_lock_holder(&name);
    let job_name = openbao_api::names::restore_job(&name);

    for _ in 0..MAX_STEPS {
        let Some(restore) = restores
            .get_opt(&name)
            .await
            .map_err(kube_err("reading the OpenBaoRestore"))?
        else {
            return Ok(Action::await_change());
        };
        let status = restore.status.clone().unwrap_or_default();
        let cluster = clusters
            .get_opt(&restore.spec.cluster)
            .await
            .map_err(kube_err("reading the OpenBaoCluster"))?;
        let cluster_status = cluster.as_ref().and_then(|c| c.status.clone()).unwrap_or_default();
        let holds_lock = cluster_status
            .operation_lock
            .as_ref()
            .is_some_and(|l| l.holder == holder);
        if restore.metadata.deletion_timestamp.is_some() {
            // Deleted: the lock must not outlive the restore (it would block every backup).
            if let Some(cluster) = cluster.as_ref().filter(|_| holds_lock) {
                if retry_on_conflict(patch_lock(&writer, cluster, serde_json::Value::Null).await)? {
                    continue;
                }
                tracing::info!(restore = %name, %namespace, "deleted: released the operation lock");
            }
            if retry_on_conflict(set_finalizer(&writer, &restore, false).await)? {
                continue;
            }
            return Ok(Action::await_change());
        }
        if !restore.finalizers().iter().any(|f| f == FINALIZER) {
            retry_on_conflict(set_finalizer(&writer, &restore, true).await)?;
            continue;
        }
        let job = job_api
            .get_opt(&job_name)
            .await
            .map_err(kube_err("reading the restore Job"))?;
        let job_pods = match &job {
            // Only pods the Job controls: a look-alike pod with the same label cannot forge a result.
            Some(job) => jobs::owned_pods(ctx, &namespace, job).await?,
            None => Vec::new(),
        };
        let job_state = result::job_state(job.as_ref(), restore.metadata.uid.as_deref(), &job_pods);
        let step = decide::next_step(&Inputs {
            holder: &holder,
            cluster_name: &restore.spec.cluster,
            key: &restore.spec.source.key,
            job_name: &job_name,
            status: &status,
            cluster: cluster.as_ref().map(|c| ClusterView {
                store_reachable: openbao_api::in_cluster_url(&restore.spec.source.target.endpoint).is_some()
                    || c.spec.network.as_ref().is_some_and(|n| !n.egress_rules.is_empty()),
                initialized: cluster_status.initialized,
                lock: cluster_status.operation_lock.as_ref(),
            }),
            source_problem: openbao_api::endpoint_problem(&restore.spec.source.target.endpoint),
            job: &job_state,
        });
        tracing::debug!(restore = %name, %namespace, ?step, "restore step");
        match step {
            RestoreStep::Wait { reason, message, retry } => {
                let mut next = status.clone();
                next.phase = RestorePhase::Pending;
                next.reason = Some(reason.into());
                next.message = Some(message);
                next.observed_generation = restore.metadata.generation;
                if next != status && retry_on_conflict(write_status(&writer, &restore, &next).await)? {
                    continue;
                }
                return Ok(Action::requeue(retry));
            }
            RestoreStep::TakeLock => {
                let cluster = cluster.as_ref().expect("a lock is only taken on an existing cluster");
                let lock = json!({
                    "operation": Operation::Restore,
                    "holder": holder,
                    "since": Time(Timestamp::now()),
                });
                if !retry_on_conflict(patch_lock(&writer, cluster, lock).await)? {
                    tracing::info!(restore = %name, %namespace, cluster = %restore.spec.cluster, "took the operation lock");
                }
            }
            RestoreStep::MarkStarting => {
                let mut next = status.clone();
                next.phase = RestorePhase::Running;
                next.reason = Some(STARTING.into());
                next.message = Some(format!("starting the restore Job {job_name}"));
                next.job_name = Some(job_name.clone());
                next.start_time = Some(Time(Timestamp::now()));
                next.observed_generation = restore.metadata.generation;
                retry_on_conflict(write_status(&writer, &restore, &next).await)?;
            }
            RestoreStep::CreateJob => {
                let cluster = cluster.as_ref().expect("a Job is only created for an existing cluster");
                let job = restore_job(&restore, cluster, &job_name, &rctx.image)?;
                // The restore Job's account exists only for restores (the cluster controller
                // leaves it alone); owned by the cluster, like every account of it.
                writer.apply(&restore_service_account(cluster)).await?;
                // Before the Job: its pods reach the restore's store (and only what a Job may).
                writer
                    .apply(&restore_network_policy(&restore, cluster, &ctx.network.dns_namespace)?)
                    .await?;
                jobs::create(ctx, &namespace, &job).await?;
                tracing::info!(restore = %name, %namespace, job = %job_name, "created the restore Job");
            }
            RestoreStep::MarkRestoring => {
                let mut next = status.clone();
                next.reason = Some(RESTORING.into());
                next.message = Some(format!(
                    "the restore Job {job_name} restores {} into {}",
                    restore.spec.source.key, restore.spec.cluster
                ));
                retry_on_conflict(write_status(&writer, &restore, &next).await)?;
            }
            RestoreStep::WatchJob { retry } => return Ok(Action::requeue(retry)),
            RestoreStep::Finish(outcome) => {
                let now = Time(Timestamp::now());
                let mut next = status.clone();
                next.phase = if outcome.completed {
                    RestorePhase::Completed
                } else {
                    RestorePhase::Failed
                };
                next.conditions = vec![Condition {
                    type_: "RestoreComplete".into(),
                    status: if outcome.completed { "True" } else { "False" }.into(),
                    reason: outcome.reason.clone(),
                    message: outcome.message.clone(),
                    last_transition_time: now.clone(),
                    observed_generation: restore.metadata.generation,
                }];
                next.reason = Some(outcome.reason);
                next.message = Some(outcome.message);
                next.completion_time = Some(now);
                if !retry_on_conflict(write_status(&writer, &restore, &next).await)? {
                    tracing::info!(restore = %name, %namespace, phase = ?next.phase, reason = ?next.reason, "restore finished");
                }
            }
            RestoreStep::ReleaseLock => {
                let cluster = cluster.as_ref().expect("a held lock belongs to an existing cluster");
                if !retry_on_conflict(patch_lock(&writer, cluster, serde_json::Value::Null).await)? {
                    tracing::info!(restore = %name, %namespace, "released the operation lock");
                }
            }
            RestoreStep::Done => {
                let recently = status
                    .completion_time
                    .as_ref()
                    .is_some_and(|t| Timestamp::now().duration_since(t.0).as_secs() < RELEASE_WATCH.as_secs() as i64);
                return Ok(if recently {
                    Action::requeue(Duration::from_secs(30))
                } else {
                    Action::await_change()
                });
            }
        }
    }
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// `Ok(true)` when the write lost a race (HTTP 409): decide again from fresh reads.
fn retry_on_conflict(result: Result<(), Error>) -> Result<bool, Error> {
    match result {
        Ok(()) => Ok(false),
        Err(Error::Kube(e)) if e.is_conflict() => Ok(true),
        Err(e) => Err(e),
    }
}

/// Adds or removes [`FINALIZER`], if the restore was not changed since it was read.
async fn set_finalizer(writer: &Writer<'_>, restore: &OpenBaoRestore, present: bool) -> Result<(), Error> {
    let mut finalizers: Vec<String> = restore
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(FINALIZER.to_string());
    }
    let patch = json!({"metadata": {"resourceVersion": restore.resource_version(), "finalizers": finalizers}});
    writer.merge::<OpenBaoRestore>(&restore.name_any(), &patch).await?;
    Ok(())
}

/// Writes the restore's status (what changed, if anything) if the restore was not changed
/// since it was read.
async fn write_status(
    writer: &Writer<'_>,
    restore: &OpenBaoRestore,
    status: &OpenBaoRestoreStatus,
) -> Result<(), Error> {
    writer
        .patch_status::<OpenBaoRestore, _>(
            &restore.name_any(),
            restore.status.as_ref(),
            status,
            restore.resource_version().as_deref(),
        )
        .await?;
    Ok(())
}

/// Sets (or, with `null`, clears) the cluster's operation lock if the cluster was not changed
/// since it was read.
async fn patch_lock(writer: &Writer<'_>, cluster: &OpenBaoCluster, lock: serde_json::Value) -> Result<(), Error> {
    let patch = json!({
        "metadata": {"resourceVersion": cluster.resource_version()},
        "status": {"operationLock": lock},
    });
    writer
        .merge_status::<OpenBaoCluster>(&cluster.name_any(), &patch)
        .await?;
    Ok(())
}

/// The service account the restore Job runs as.
fn restore_service_account(cluster: &OpenBaoCluster) -> ServiceAccount {
    let (uid, namespace, name) = (
        cluster.uid().unwrap_or_default(),
        cluster.namespace().unwrap_or_default(),
        cluster.name_any(),
    );
    let view = openbao_render::Cluster {
        name: &name,
        namespace: &namespace,
        uid: &uid,
        spec: &cluster.spec,
    };
    let account = openbao_api::names::job_service_account(&name, "restore");
    openbao_render::objects::job_service_accounts(&view)
        .into_iter()
        .find(|sa| sa.metadata.name.as_deref() == Some(account.as_str()))
        .expect("the builder makes the restore account")
}

/// The restore Job's NetworkPolicy, owned by the OpenBaoRestore like its Job.
fn restore_network_policy(
    restore: &OpenBaoRestore,
    cluster: &OpenBaoCluster,
    dns_namespace: &str,
) -> Result<NetworkPolicy, Error> {
    let (uid, namespace) = (
        cluster.uid().unwrap_or_default(),
        cluster.namespace().unwrap_or_default(),
    );
    let view = openbao_render::Cluster {
        name: &restore.spec.cluster,
        namespace: &namespace,
        uid: &uid,
        spec: &cluster.spec,
    };
    let mut np = openbao_render::objects::restore_network_policy(
        &view,
        &restore.name_any(),
        &restore.spec.source.target.endpoint,
        dns_namespace,
    );
    np.metadata.owner_references = Some(vec![restore_owner(restore)?]);
    Ok(np)
}

/// The OpenBaoRestore as the controller owner of what it runs.
fn restore_owner(restore: &OpenBaoRestore) -> Result<OwnerReference, Error> {
    Ok(OwnerReference {
        api_version: OpenBaoRestore::api_version(&()).into(),
        kind: OpenBaoRestore::kind(&()).into(),
        name: restore.name_any(),
        uid: restore
            .uid()
            .ok_or_else(|| Error::Build("the OpenBaoRestore has no uid".into()))?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// The restore Job, owned by the OpenBaoRestore (deleting the restore deletes its Job).
fn restore_job(restore: &OpenBaoRestore, cluster: &OpenBaoCluster, job_name: &str, image: &str) -> Result<Job, Error> {
    let owner = restore_owner(restore)?;
    let cluster_uid = cluster.uid().unwrap_or_default();
    let cluster_namespace = cluster.namespace().unwrap_or_default();
    let view = openbao_render::Cluster {
        name: &restore.spec.cluster,
        namespace: &cluster_namespace,
        uid: &cluster_uid,
        spec: &cluster.spec,
    };
    let mut job = openbao_render::objects::jobs::restore_job(&view, &restore.spec, owner, job_name, image);
    // Exactly once, whatever the builder does: no Job retry, no container restart in place.
    if let Some(spec) = job.spec.as_mut() {
        spec.backoff_limit = Some(0);
        if let Some(pod) = spec.template.spec.as_mut() {
            pod.restart_policy = Some("Never".into());
        }
    }
    Ok(job)
}
