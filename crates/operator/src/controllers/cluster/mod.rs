//! The OpenBaoCluster controller, one file a stage of the pipeline:
//! [`observe`] (pods, the live StatefulSet) → validate (`spec.check()`) → [`apply`] (build with
//! `openbao_render`, apply through `kube_write`, prune) → [`access`] (OpenBao's trust of the
//! apiserver's keys) → [`step`] (an upgrade step) → [`report`] (status from [`status`], Events).

mod access;
mod apply;
pub mod bluegreen;
mod certificate;
mod observe;
pub mod raft_membership;
mod report;
pub mod seal_migration;
mod service_monitor;
mod snapshot;
pub mod status;
mod step;
mod tls;
pub mod upgrade;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use openbao_api::OpenBaoCluster;
use openbao_render::{Cluster, labels};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::status::{Observed, TlsState};
use crate::context::Context;
use crate::controllers::watches;
use crate::kube_write::KubeError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("OpenBaoCluster has no namespace or uid")]
    MissingMetadata,
    #[error(transparent)]
    Kube(#[from] KubeError),
}

impl Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::MissingMetadata => "missing_metadata",
            Error::Kube(e) => e.metric_label(),
        }
    }
}

/// Requeue while the cluster bootstraps and waits for its pods only: what they do (OpenBao's
/// service-registration labels: initialized, sealed, active; readiness) reaches the controller
/// through the pod and StatefulSet watches, so this is only a safety net.
const BOOTSTRAP_REQUEUE: Duration = Duration::from_secs(60);
/// Requeue while the cluster bootstraps and waits for something no watch reports: a Secret the
/// user provides (the transit token, External TLS), the apiserver's issuer, OpenBao's answer.
const RETRY_REQUEUE: Duration = Duration::from_secs(5);
/// Requeue of a settled cluster (certificate checks set an earlier one when due).
const STEADY_REQUEUE: Duration = Duration::from_secs(300);
/// After a seal-migration step that set no requeue of its own (see the reconcile).
const SEAL_STEP_FOLLOW_UP: Duration = Duration::from_secs(1);

/// Reconciles in flight at once. Each holds what it observed and built until its writes are done;
/// unbounded, 1,000 new clusters meant 1,000 of them in memory together, while the apiserver
/// serves only so many writes at a time anyway.
const CONCURRENT_RECONCILES: u16 = 32;

/// Runs the controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let managed = watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY_LABEL, labels::MANAGED_BY));
    let pods = watcher::Config::default().labels(labels::CLUSTER_LABEL);
    let guard = crate::runtime::panic_guard::PanicGuard::new("cluster", ctx.metrics.clone());
    let (clusters, cache) = watches::clusters(ctx.watched::<OpenBaoCluster>());
    let mut controller = Controller::for_stream(clusters, cache)
        .owns(ctx.watched::<StatefulSet>(), managed.clone())
        .owns(ctx.watched::<Service>(), managed.clone())
        .owns(ctx.watched::<ConfigMap>(), managed.clone())
        // The cluster's own Secrets, and those cert-manager keeps for `tls.certManager` (no owner
        // reference to the cluster, but the labels of the Certificate's secretTemplate): a renewed,
        // deleted or re-created certificate is looked at at once. Metadata only: the reconcile
        // reads the Secrets it needs itself.
        .watches_stream(
            watches::metadata_of(ctx.watched::<PartialObjectMeta<Secret>>(), managed.clone()),
            |secret| {
                let owner = secret
                    .owner_references()
                    .iter()
                    .find(|o| o.controller == Some(true) && o.kind == "OpenBaoCluster")
                    .map(|o| o.name.clone());
                let cluster = owner.or_else(|| secret.labels().get(labels::CLUSTER_LABEL).cloned())?;
                Some(ObjectRef::<OpenBaoCluster>::new(&cluster).within(&secret.namespace()?))
            },
        )
        .owns(ctx.watched::<ServiceAccount>(), managed.clone())
        .owns(ctx.watched::<RoleBinding>(), managed.clone())
        .owns(ctx.watched::<PodDisruptionBudget>(), managed.clone())
        .owns(ctx.watched::<NetworkPolicy>(), managed.clone())
        // Pods carry OpenBao's own state (initialized, sealed, active) in their labels.
        .watches_stream(
            watches::metadata_of(ctx.watched::<PartialObjectMeta<Pod>>(), pods),
            |pod| {
                let cluster = pod.labels().get(labels::CLUSTER_LABEL)?.clone();
                Some(ObjectRef::<OpenBaoCluster>::new(&cluster).within(&pod.namespace()?))
            },
        );
    if ctx.gateway_api {
        controller = controller
            .owns(ctx.watched::<gateway_api::httproutes::HttpRoute>(), managed.clone())
            .owns(
                ctx.watched::<gateway_api::backendtlspolicies::BackendTlsPolicy>(),
                managed,
            );
    }
    ctx.metrics.watch_clusters(Some(controller.store()));
    let metrics = ctx.metrics.clone();
    let results = controller
        // Creating a cluster's children fires a burst of watch events; one reconcile serves them all.
        .with_config(
            kube::runtime::controller::Config::default()
                .debounce(Duration::from_millis(500))
                .concurrency(CONCURRENT_RECONCILES),
        )
        .graceful_shutdown_on(shutdown)
        .run(guard.reconciler(reconcile), guard.error_policy(error_policy), ctx);
    guard.drive(results).await;
    // A replica that no longer runs the controller reports no clusters (its cache goes stale).
    metrics.watch_clusters(None);
}

fn error_policy(obj: Arc<OpenBaoCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %obj.name_any(), namespace = ?obj.namespace(), error = %err, "reconcile failed");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::runtime::metrics::ErrorLabels {
            reason: err.metric_label().into(),
        })
        .inc();
    Action::requeue(Duration::from_secs(10))
}

pub async fn reconcile(obj: Arc<OpenBaoCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    // Boxed: its state is large, and callers (tests too) may poll it on a small stack.
    let result = Box::pin(reconcile_inner(&obj, &ctx)).await;
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    let label = if result.is_ok() { "success" } else { "error" };
    ctx.metrics
        .reconciles
        .get_or_create(&crate::runtime::metrics::ResultLabels { result: label.into() })
        .inc();
    result
}

async fn reconcile_inner(cached: &OpenBaoCluster, ctx: &Context) -> Result<Action, Error> {
    let Some(obj) = observe::fresh(cached, ctx).await? else {
        return Ok(Action::await_change());
    };
    let obj = obj.as_ref();
    let namespace = obj.namespace().ok_or(Error::MissingMetadata)?;
    let uid = obj.uid().ok_or(Error::MissingMetadata)?;
    let name = obj.name_any();
    let cluster = Cluster {
        name: &name,
        namespace: &namespace,
        uid: &uid,
        spec: &obj.spec,
    };
    let previous = obj.status.clone().unwrap_or_default();
    let now = Timestamp::now();

    // Observe, then validate: a spec that predates an admission rule is reported, and nothing is built from it.
    let mut observed = observe::observe(ctx, &cluster, &previous).await?;
    if let Err(violation) = obj.spec.check() {
        tracing::warn!(cluster = %name, namespace = %namespace, reason = violation.reason, "invalid spec: {}", violation.message);
        observed.tls = observe::previous_tls_state(&previous);
        observed.invalid_spec = Some(violation);
        report::write_status(ctx, obj, &previous, &observed).await?;
        return Ok(Action::await_change());
    }
    if obj.spec.paused {
        observed.tls = observe::previous_tls_state(&previous);
        report::write_status(ctx, obj, &previous, &observed).await?;
        return Ok(Action::await_change());
    }

    // Build and apply; then, on what was applied, OpenBao's access and an upgrade step.
    let mut events = Vec::new();
    // A seal migration decides what the servers' objects are (boxed: the future stays small).
    let seal = Box::new(Box::pin(seal_migration::SealWorkloads::read(&ctx.client, &cluster, &previous)).await?);
    let applied_to = seal.cluster(&cluster);
    let outcome = apply::apply_all(ctx, &applied_to, &previous, &seal, &mut observed, &mut events, now).await;
    let mut base = previous.clone();
    let mut upgrade_requeue = None;
    match &outcome {
        Err(e) => observed.apply_error = Some(e.to_string()),
        Ok(applied) => {
            let serving = observed.ready_replicas > 0
                && (previous.initialized || observed.pods.iter().any(|p| p.initialized == Some(true)));
            if let (true, true, Some(bundle)) = (serving, obj.spec.self_init.oidc.enabled, applied.bundle.as_deref()) {
                let (access, client) = access::sync_openbao_access(ctx, &cluster, &previous, bundle, &mut events).await;
                observed.access = access;
                if let Some(client) = client {
                    observed.raft = raft_membership::observe(&client).await;
                }
            }
            let seal_blocks = seal.blocks_upgrade(&previous);
            (base, upgrade_requeue) = step::upgrade(
                ctx,
                &cluster,
                &previous,
                applied.bundle.as_deref(),
                seal_blocks,
                &mut observed,
            )
            .await;
            let (bundle, seal_ready) = (applied.bundle.as_deref(), observed.seal.is_ready());
            if let Some(step) = Box::pin(seal_migration::step(ctx, &cluster, &base, bundle, seal_ready, &seal)).await {
                base = step.status;
                events.extend(step.events);
                // A step changed the status: the next reconcile applies what the new phase
                // renders (after the last one, the settled StatefulSet with RollingUpdate) now,
                // not at the steady requeue: a status write wakes no watch of this controller.
                let follow_up = step.requeue.unwrap_or(SEAL_STEP_FOLLOW_UP);
                upgrade_requeue = Some(follow_up).into_iter().chain(upgrade_requeue).min();
            }
        }
    }
    // Report.
    let new_status = report::write_status(ctx, obj, &base, &observed).await?;
    report::publish_events(ctx, obj, &previous, &new_status, events).await;
    let next_cert_check = outcome?.next_cert_check;
    let unready_since = raft_membership::unready_since(&new_status.conditions);
    let raft_requeue = raft_membership::requeue_after(&observed.raft, obj.spec.replicas, unready_since, now);
    let settled = new_status.initialized && new_status.ready_replicas >= obj.spec.replicas && raft_requeue.is_none();
    Ok(Action::requeue(requeue_after(
        settled,
        &observed,
        next_cert_check.map(|at| at.duration_since(now)),
        upgrade_requeue.into_iter().chain(raft_requeue).min(),
    )))
}

/// When to reconcile again: a settled cluster rarely, a bootstrapping one as its waits need
/// (see the constants), sooner when a certificate is due (`cert_check_in`) or an upgrade steps.
fn requeue_after(
    settled: bool,
    observed: &Observed,
    cert_check_in: Option<jiff::SignedDuration>,
    upgrade_requeue: Option<Duration>,
) -> Duration {
    let mut requeue = if settled {
        STEADY_REQUEUE
    } else if waits_for_the_unwatched(observed) {
        RETRY_REQUEUE
    } else {
        BOOTSTRAP_REQUEUE
    };
    if let Some(until) = cert_check_in {
        let until = until.as_secs().max(1) as u64;
        requeue = requeue.min(Duration::from_secs(until));
    }
    if let Some(after) = upgrade_requeue {
        requeue = requeue.min(after.max(step::UPGRADE_MIN_REQUEUE));
    }
    requeue
}

/// Whether a bootstrapping cluster waits for something only polling notices (see
/// [`RETRY_REQUEUE`]); everything else it waits for is its pods, which are watched.
fn waits_for_the_unwatched(observed: &Observed) -> bool {
    !observed.seal.is_ready()
        || !matches!(observed.tls, TlsState::Ready { .. })
        || observed.trust_error.is_some()
        || observed.network_error.is_some()
        || matches!(observed.access, status::Access::Failed(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_cluster_is_requeued_rarely_but_in_time_for_a_certificate_or_an_upgrade_step() {
        let observed = Observed::before_apply(false, 3, Vec::new());
        assert_eq!(requeue_after(true, &observed, None, None), STEADY_REQUEUE);
        let soon = Some(jiff::SignedDuration::from_secs(42));
        assert_eq!(requeue_after(true, &observed, soon, None), Duration::from_secs(42));
        let overdue = Some(jiff::SignedDuration::from_secs(-5));
        assert_eq!(requeue_after(true, &observed, overdue, None), Duration::from_secs(1));
        let stepping = Some(Duration::from_millis(10));
        assert_eq!(
            requeue_after(true, &observed, None, stepping),
            step::UPGRADE_MIN_REQUEUE
        );
    }
}
