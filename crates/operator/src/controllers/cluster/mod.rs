//! The OpenBaoCluster controller: dereference → validate → build → apply → status.

pub mod bluegreen;
pub mod seal_migration;
mod snapshot;
pub mod status;
mod tls;
pub mod upgrade;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use openbao_api::{OpenBaoCluster, OpenBaoClusterStatus, TlsMode, names};
use openbao_render::{Cluster, JwtTrust, labels, objects};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::status::{GatewayState, Observed, PodView, SealState, TlsState, UpgradeState};
use self::upgrade::KubePlatform;
use crate::context::Context;
use crate::flows::Driver;
use crate::flows::upgrade::{self as upgrade_plan, UpgradePlan};
use crate::kube_write::{Created, KubeError, Writer, kube_err};

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

/// Runs the controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let managed = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={}", labels::MANAGED_BY));
    let pods = watcher::Config::default().labels(labels::CLUSTER_LABEL);
    let guard = crate::runtime::panic_guard::PanicGuard::new("cluster", ctx.metrics.clone());
    let mut controller = Controller::new(
        ctx.watched::<OpenBaoCluster>(),
        watcher::Config::default().any_semantic(),
    )
    .owns(ctx.watched::<StatefulSet>(), managed.clone())
    .owns(ctx.watched::<Service>(), managed.clone())
    .owns(ctx.watched::<ConfigMap>(), managed.clone())
    .owns(ctx.watched::<Secret>(), managed.clone())
    .owns(ctx.watched::<ServiceAccount>(), managed.clone())
    .owns(ctx.watched::<RoleBinding>(), managed.clone())
    .owns(ctx.watched::<PodDisruptionBudget>(), managed.clone())
    .owns(ctx.watched::<NetworkPolicy>(), managed.clone())
    // Pods carry OpenBao's own state (initialized, sealed, active) in their labels.
    .watches(ctx.watched::<Pod>(), pods, |pod| {
        let cluster = pod.labels().get(labels::CLUSTER_LABEL)?.clone();
        Some(ObjectRef::<OpenBaoCluster>::new(&cluster).within(&pod.namespace()?))
    });
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
    controller
        // Creating a cluster's children fires a burst of watch events; one reconcile serves them all.
        .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_millis(500)))
        .graceful_shutdown_on(shutdown)
        .run(guard.reconciler(reconcile), guard.error_policy(error_policy), ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile did not complete");
            }
        })
        .await;
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
    // An upgrade is a state machine in status: every step must start from the status the last
    // step wrote, not from a watch cache that may not have seen it yet.
    let fresh;
    let obj = if upgrade_plan::plan(&cached.spec, &cached.status.clone().unwrap_or_default()) == UpgradePlan::Idle
        && !seal_migration::in_progress(cached.status.as_ref())
    {
        cached
    } else {
        let api = Api::<OpenBaoCluster>::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
        match api
            .get_opt(&cached.name_any())
            .await
            .map_err(kube_err("reading the OpenBaoCluster"))?
        {
            Some(o) => {
                fresh = o;
                &fresh
            }
            None => return Ok(Action::await_change()),
        }
    };
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

    let (pods, pod_audit_hashes) = observe_pods(ctx, &cluster).await?;
    let ready_replicas = Api::<StatefulSet>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&bluegreen::live_statefulset_name(&name, &previous))
        .await
        .map_err(kube_err("reading the StatefulSet"))?
        .and_then(|s| s.status)
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let mut observed = Observed::before_apply(obj.spec.paused, ready_replicas, pods);
    observed.pod_audit_hashes = pod_audit_hashes;
    if obj.spec.self_init.oidc.enabled {
        observed.jwt_audience = Some(names::jwt_audience(&namespace, &name));
    }
    // A spec that predates an admission rule is reported, and nothing is built from it.
    if let Err(violation) = obj.spec.check() {
        tracing::warn!(cluster = %name, namespace = %namespace, reason = violation.reason, "invalid spec: {}", violation.message);
        observed.tls = previous_tls_state(&previous);
        observed.invalid_spec = Some(violation);
        write_status(ctx, obj, &previous, &observed).await?;
        return Ok(Action::await_change());
    }
    if obj.spec.paused {
        observed.tls = previous_tls_state(&previous);
        write_status(ctx, obj, &previous, &observed).await?;
        return Ok(Action::await_change());
    }

    let mut events = Vec::new();
    // Boxed, like the step below: the reconcile's future must stay small for the stack.
    let seal = Box::new(Box::pin(seal_migration::SealWorkloads::read(&ctx.client, &cluster, &previous)).await?);
    let applied_to = seal.cluster(&cluster);
    let outcome = apply_all(ctx, &applied_to, &previous, &seal, &mut observed, &mut events, now).await;
    let mut base = previous.clone();
    let mut upgrade_requeue = None;
    match &outcome {
        Err(e) => observed.apply_error = Some(e.to_string()),
        Ok(applied) => {
            let serving = observed.ready_replicas > 0
                && (previous.initialized || observed.pods.iter().any(|p| p.initialized == Some(true)));
            if let (true, true, Some(bundle)) = (serving, obj.spec.self_init.oidc.enabled, applied.bundle.as_deref()) {
                observed.access = sync_openbao_access(ctx, &cluster, &previous, bundle, &mut events).await;
            }
            match upgrade_plan::plan(&obj.spec, &previous) {
                UpgradePlan::Idle => {}
                UpgradePlan::Clear => base = upgrade_plan::cleared(&previous),
                UpgradePlan::Refused { reason, message } => {
                    observed.upgrade = UpgradeState::Refused { reason, message }
                }
                UpgradePlan::Advance if seal.blocks_upgrade(&previous) => {
                    observed.upgrade = UpgradeState::Refused {
                        reason: "WaitingForSealMigration",
                        message: "the upgrade starts once the seal migration is finished".into(),
                    }
                }
                // An upgrade does not start while a backup or restore holds the cluster; one in
                // progress is never interrupted (backups and restores wait for it instead).
                UpgradePlan::Advance if upgrade_waits_for_lock(&previous) => {
                    let holder = previous
                        .operation_lock
                        .as_ref()
                        .map(|l| l.holder.clone())
                        .unwrap_or_default();
                    observed.upgrade = UpgradeState::Refused {
                        reason: "WaitingForOperationLock",
                        message: format!("the upgrade starts once {holder} releases the cluster's operation lock"),
                    };
                    upgrade_requeue = Some(Some(Duration::from_secs(15)));
                }
                UpgradePlan::Advance => match applied.bundle.as_deref() {
                    None => observed.upgrade = UpgradeState::StepFailed("no CA bundle to reach OpenBao with".into()),
                    Some(bundle) => {
                        let (next, state, requeue) = upgrade_step(ctx, &cluster, &previous, bundle).await;
                        base = next;
                        observed.upgrade = state;
                        upgrade_requeue = Some(requeue);
                    }
                },
            }
            let seal_ready = observed.seal.is_ready();
            let bundle = applied.bundle.as_deref();
            if let Some(step) = Box::pin(seal_migration::step(ctx, &cluster, &base, bundle, seal_ready, &seal)).await {
                base = step.status;
                events.extend(step.events);
                let after = step.requeue.into_iter().chain(upgrade_requeue.flatten()).min();
                upgrade_requeue = Some(after);
            }
        }
    }
    let new_status = write_status(ctx, obj, &base, &observed).await?;
    publish_events(ctx, obj, &previous, &new_status, events).await;
    let next_cert_check = outcome?.next_cert_check;

    let mut requeue = if new_status.initialized && new_status.ready_replicas >= obj.spec.replicas {
        STEADY_REQUEUE
    } else if waits_for_the_unwatched(&observed) {
        RETRY_REQUEUE
    } else {
        BOOTSTRAP_REQUEUE
    };
    if let Some(at) = next_cert_check {
        let until = at.duration_since(now).as_secs().max(1) as u64;
        requeue = requeue.min(Duration::from_secs(until));
    }
    if let Some(after) = upgrade_requeue.flatten() {
        requeue = requeue.min(after.max(UPGRADE_MIN_REQUEUE));
    }
    Ok(Action::requeue(requeue))
}

/// Whether a bootstrapping cluster waits for something only polling notices (see
/// [`RETRY_REQUEUE`]); everything else it waits for is its pods, which are watched.
fn waits_for_the_unwatched(observed: &Observed) -> bool {
    !observed.seal.is_ready()
        || !matches!(observed.tls, TlsState::Ready { .. })
        || observed.trust_error.is_some()
        || matches!(observed.access, status::Access::Failed(_))
}

/// True while an upgrade has not started and another operation holds the lock.
fn upgrade_waits_for_lock(status: &OpenBaoClusterStatus) -> bool {
    let not_started = status
        .upgrade
        .as_ref()
        .is_none_or(|u| u.phase == openbao_api::UpgradePhase::Idle);
    let held_by_other = status
        .operation_lock
        .as_ref()
        .is_some_and(|l| l.operation != openbao_api::Operation::Upgrade);
    not_started && held_by_other
}

/// Even a step that only recorded a phase waits this long, so the next one reads it back.
const UPGRADE_MIN_REQUEUE: Duration = Duration::from_millis(200);

/// One step of the upgrade driver, logged in as the operator. Returns the status to build on,
/// what to report, and when to step again (`None`: nothing in progress).
async fn upgrade_step(
    ctx: &Context,
    cluster: &Cluster<'_>,
    previous: &OpenBaoClusterStatus,
    bundle: &str,
) -> (OpenBaoClusterStatus, UpgradeState, Option<Duration>) {
    let token = match tokio::time::timeout(Duration::from_secs(20), upgrade::operator_login(ctx, cluster, bundle)).await
    {
        Err(_) => {
            return failed_step(
                previous,
                "LoginFailed",
                "logging in for the upgrade: no answer within 20 s",
            );
        }
        Ok(Err(message)) => return failed_step(previous, "LoginFailed", &message),
        Ok(Ok(token)) => token,
    };
    let platform = KubePlatform::new(ctx, cluster, bundle.to_string(), token).for_status(previous);
    let driver = Driver::new(cluster.name, platform);
    match driver.step(cluster.spec, previous).await {
        Ok(report) => {
            let state = match report.error {
                Some(e) => step_failure(&report.status, e),
                None => UpgradeState::Stepped,
            };
            (report.status, state, report.requeue_after)
        }
        Err(e) => failed_step(
            previous,
            "ObserveFailed",
            &format!("observing the servers for the upgrade: {e}"),
        ),
    }
}

/// A step that failed before the driver ran it: recorded like a failed action, tried again soon.
fn failed_step(
    previous: &OpenBaoClusterStatus,
    reason: &str,
    message: &str,
) -> (OpenBaoClusterStatus, UpgradeState, Option<Duration>) {
    let status = crate::flows::record_step_failure(previous, reason, message, Timestamp::now());
    let state = step_failure(&status, message.to_string());
    (status, state, Some(Duration::from_secs(2)))
}

/// `Degraded` only once the step failed `STEP_FAILURES_DEGRADED` times in a row.
fn step_failure(status: &OpenBaoClusterStatus, message: String) -> UpgradeState {
    let in_a_row = status.upgrade.as_ref().map_or(0, |u| u.failures);
    if in_a_row >= crate::flows::STEP_FAILURES_DEGRADED {
        UpgradeState::StepFailed(message)
    } else {
        UpgradeState::StepRetrying
    }
}

/// The pods as [`pod_views`] describes them, and the audit configuration each runs (its
/// `openbao.org/audit-hash`, by pod name).
async fn observe_pods(
    ctx: &Context,
    cluster: &Cluster<'_>,
) -> Result<(Vec<PodView>, Vec<(String, Option<String>)>), Error> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), cluster.namespace)
        .list(&ListParams::default().labels(&format!("{}={}", labels::CLUSTER_LABEL, cluster.name)))
        .await
        .map_err(kube_err("listing pods"))?;
    let audit_hashes = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            (
                p.name_any(),
                p.annotations().get(labels::AUDIT_HASH_ANNOTATION).cloned(),
            )
        })
        .collect();
    Ok((pod_views(&pods.items), audit_hashes))
}

/// What OpenBao's service registration says of each pod, leaving out pods on their way out: a
/// pod being deleted (a removed blue server, a drained node) keeps its last labels, e.g.
/// `openbao-sealed=true` once its server stopped, which describe no server of the cluster.
fn pod_views(pods: &[Pod]) -> Vec<PodView> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| PodView::from_labels(&p.name_any(), p.labels()))
        .collect()
}

fn previous_tls_state(previous: &OpenBaoClusterStatus) -> TlsState {
    let tls = previous.tls.clone().unwrap_or_default();
    TlsState::Ready {
        server_not_after: tls.server_not_after,
        ca_not_after: tls.ca_not_after,
    }
}

/// What the apply step leaves for the steps after it.
struct Applied {
    /// When certificates must be looked at again.
    next_cert_check: Option<Timestamp>,
    /// The CA bundle clients verify OpenBao with.
    bundle: Option<String>,
}

/// Applies every desired object in dependency order and prunes the ones no longer wanted.
async fn apply_all(
    ctx: &Context,
    cluster: &Cluster<'_>,
    previous: &OpenBaoClusterStatus,
    seal: &seal_migration::SealWorkloads,
    observed: &mut Observed,
    events: &mut Vec<(String, String)>,
    now: Timestamp,
) -> Result<Applied, Error> {
    let name = cluster.name;
    let writer = &Writer::new(ctx, cluster.namespace);
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), cluster.namespace);
    let get_secret = |n: String| {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt(&n)
                .await
                .map_err(kube_err(format!("reading Secret {n}")))
        }
    };

    writer.apply(&objects::service_account(cluster)).await?;
    for sa in objects::job_service_accounts(cluster) {
        let name = sa.name_any();
        match job_account(cluster, &name) {
            JobAccount::Wanted => drop(writer.apply(&sa).await?),
            JobAccount::NotWanted => drop(writer.delete_if_owned::<ServiceAccount>(&name, cluster.uid).await?),
            JobAccount::RestoreControllers => {}
        }
    }
    writer.apply(&objects::service_registration_binding(cluster)).await?;

    observed.seal = match openbao_api::seal_of(cluster.spec.unseal.as_ref()) {
        // The static seal's key lives in the cluster; an auto-unseal seal's never exists here.
        openbao_api::Seal::Static => {
            let unseal_key = ensure_unseal_key(cluster, writer, &secrets, events).await?;
            writer.apply(&objects::unseal_key_secret(cluster, &unseal_key)).await?;
            SealState::Static
        }
        seal => {
            let mut found = std::collections::BTreeMap::new();
            for u in seal.secret_uses() {
                if !found.contains_key(&u.secret.name) {
                    found.insert(u.secret.name.clone(), get_secret(u.secret.name.clone()).await?);
                }
            }
            let lookup = |name: &str| found.get(name).and_then(Option::as_ref);
            status::seal_state(cluster.spec.unseal.as_ref(), &cluster.spec.version, &lookup)
        }
    };

    let mut next_cert_check = None;
    let bundle = match cluster.spec.tls.mode {
        TlsMode::OperatorManaged => {
            let ca = get_secret(names::tls_ca_secret(name)).await?;
            let server = get_secret(names::tls_server_secret(name)).await?;
            match tls::reconcile_tls(cluster, ca.as_ref(), server.as_ref(), now) {
                Ok(out) => {
                    writer.apply(&out.secrets.ca).await?;
                    writer.apply(&out.secrets.server).await?;
                    for change in out.changes {
                        events.push(("CertificateIssued".into(), change));
                    }
                    next_cert_check = out.next_check;
                    observed.tls = TlsState::Ready {
                        server_not_after: out.server_not_after.map(|t| t.to_string()),
                        ca_not_after: out.ca_not_after.map(|t| t.to_string()),
                    };
                    Some(out.bundle_pem)
                }
                Err(e) => {
                    observed.tls = TlsState::Failed(e.to_string());
                    None
                }
            }
        }
        TlsMode::External => {
            let server = get_secret(names::tls_server_secret(name)).await?;
            let ca_pem = server.as_ref().and_then(|s| {
                s.data
                    .as_ref()?
                    .get("ca.crt")
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            });
            let has_cert = server
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .is_some_and(|d| d.contains_key("tls.crt") && d.contains_key("tls.key"));
            if has_cert && ca_pem.is_some() {
                observed.tls = TlsState::Ready {
                    server_not_after: None,
                    ca_not_after: None,
                };
            } else {
                observed.tls = TlsState::ExternalSecretMissing(format!(
                    "Secret {} with tls.crt, tls.key and ca.crt is required with tls.mode External",
                    names::tls_server_secret(name)
                ));
            }
            ca_pem
        }
    };

    if let Some(cm) = seal.config_map(objects::config_map(cluster)) {
        writer.apply(&cm).await?;
    }
    let initialized = observed.pods.iter().any(|p| p.initialized == Some(true)) || previous.initialized;
    let bootstrap_ready = if initialized {
        // A re-created first pod must never found a second cluster: the requests go away for good.
        if writer
            .delete_if_owned::<Secret>(&names::init_secret(name), cluster.uid)
            .await?
        {
            events.push((
                "SelfInitRequestsRemoved".into(),
                "cluster initialized; removed the self-init requests".into(),
            ));
        }
        true
    } else {
        match trust_for(ctx, cluster).await {
            Ok(trust) => {
                writer
                    .apply(&objects::init_secret(cluster, &ctx.operator, &trust))
                    .await?;
                true
            }
            Err(e) => {
                observed.trust_error = Some(e);
                false
            }
        }
    };

    writer.apply(&objects::headless_service(cluster)).await?;
    writer.apply(&bluegreen::public_service(cluster, previous)).await?;
    writer.apply(&objects::network_policy(cluster, &ctx.operator)).await?;
    match objects::pod_disruption_budget(cluster) {
        Some(pdb) => drop(writer.apply(&pdb).await?),
        None => drop(
            writer
                .delete_if_owned::<PodDisruptionBudget>(&names::pdb(name), cluster.uid)
                .await?,
        ),
    }
    match objects::metrics_service(cluster) {
        Some(svc) => drop(writer.apply(&svc).await?),
        None => drop(
            writer
                .delete_if_owned::<Service>(&names::metrics_service(name), cluster.uid)
                .await?,
        ),
    }
    apply_gateway(ctx, cluster, writer, observed, bundle.as_deref()).await?;

    // Pods start only once their TLS material, what their seal needs and (first time) the
    // self-init file exist: a pod without its seal token would only wait in an error state.
    if bootstrap_ready && matches!(observed.tls, TlsState::Ready { .. }) && observed.seal.is_ready() {
        let rollout = upgrade_plan::rollout(cluster.spec, previous);
        let workloads = bluegreen::workloads(cluster, previous, &rollout);
        for cm in workloads.config_maps.into_iter().filter_map(|cm| seal.config_map(cm)) {
            writer.apply(&cm).await?;
        }
        for sts in workloads.statefulsets.into_iter().filter_map(|s| seal.statefulset(s)) {
            writer.apply(&sts).await?;
        }
    }
    Ok(Applied {
        next_cert_check,
        bundle,
    })
}

/// What the cluster controller does with one executor service account.
#[derive(Debug, PartialEq, Eq)]
enum JobAccount {
    Wanted,
    /// No feature of the spec runs a Job as it: pruned (no account lies around unused).
    NotWanted,
    /// The restore controller applies it just before a restore Job (an `OpenBaoRestore` is
    /// the feature); left alone here, so a restore in progress never loses it.
    RestoreControllers,
}

/// The backup account with `spec.backup` (backups, restore drills and the pre-upgrade
/// snapshot run as it), the upgrade account with `spec.upgrade.preUpgradeSnapshot`.
fn job_account(cluster: &Cluster<'_>, account: &str) -> JobAccount {
    let wanted = |yes: bool| if yes { JobAccount::Wanted } else { JobAccount::NotWanted };
    if account == names::job_service_account(cluster.name, "backup") {
        wanted(cluster.spec.backup.is_some())
    } else if account == names::job_service_account(cluster.name, "upgrade") {
        wanted(cluster.spec.upgrade.pre_upgrade_snapshot)
    } else if account == names::job_service_account(cluster.name, "restore") {
        JobAccount::RestoreControllers
    } else {
        JobAccount::Wanted
    }
}

/// Logs in to OpenBao and keeps its trusted service-account keys equal to the apiserver's.
/// Runs only on a serving cluster; failures are reported in status, not retried as errors.
async fn sync_openbao_access(
    ctx: &Context,
    cluster: &Cluster<'_>,
    previous: &OpenBaoClusterStatus,
    bundle: &str,
    events: &mut Vec<(String, String)>,
) -> status::Access {
    use crate::openbao::AccessError;
    use status::Access;
    let oidc = &cluster.spec.self_init.oidc;
    let trust = match ctx.refreshed_jwt_trust().await {
        Ok(trust) => trust,
        Err(e) => return Access::Failed(e.to_string()),
    };
    let issuer = oidc.issuer.clone().unwrap_or(trust.issuer);
    let endpoint = (ctx.endpoints)(cluster.name, cluster.namespace);
    let work = async {
        let jwt = crate::openbao::operator_token(
            &ctx.client,
            &ctx.operator,
            &ctx.safe_audiences,
            cluster.namespace,
            cluster.name,
        )
        .await?;
        let client = crate::openbao::login(&endpoint, bundle, &jwt).await?;
        crate::openbao::sync_jwt_keys(&client, &issuer, &trust.public_keys_pem).await
    };
    match tokio::time::timeout(Duration::from_secs(20), work).await {
        Err(_) => Access::Failed(format!("OpenBao at {} did not answer within 20 s", endpoint.url)),
        Ok(Err(e @ AccessError::AudienceUnsafe { .. })) => Access::AudienceUnsafe(e.to_string()),
        Ok(Err(e)) if crate::openbao::is_audience_refusal(&e) => {
            let roles: Vec<String> = openbao_render::selfinit::jwt_roles(cluster, &ctx.operator)
                .into_iter()
                .map(|r| r.role.to_string())
                .collect();
            Access::audience_refused(previous, &roles, &names::jwt_audience(cluster.namespace, cluster.name))
        }
        Ok(Err(e)) => Access::Failed(e.to_string()),
        Ok(Ok(crate::openbao::KeySync::Unchanged)) => Access::Ok,
        Ok(Ok(crate::openbao::KeySync::Updated { added, removed })) => {
            events.push((
                "JWTKeysSynced".into(),
                format!(
                    "OpenBao now trusts the apiserver's current service-account keys ({added} added, {removed} removed)"
                ),
            ));
            Access::Ok
        }
    }
}

/// The seal key is generated once and never changes: losing it loses the data. It is created
/// (never applied over) so that two writers can never replace each other's key.
async fn ensure_unseal_key(
    cluster: &Cluster<'_>,
    writer: &Writer<'_>,
    secrets: &Api<Secret>,
    events: &mut Vec<(String, String)>,
) -> Result<Vec<u8>, Error> {
    let name = names::unseal_key_secret(cluster.name);
    let read = || async {
        let existing = secrets
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading Secret {name}")))?;
        Ok::<_, Error>(
            existing
                .and_then(|s| s.data)
                .and_then(|d| d.get("key").map(|k| k.0.clone())),
        )
    };
    if let Some(key) = read().await? {
        return Ok(key);
    }
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    // Only the key itself is created here; labels and owner references come from the apply
    // that follows, so that the apply alone decides them (and can drop them again).
    let mut bare = objects::unseal_key_secret(cluster, &key);
    bare.metadata = kube::api::ObjectMeta {
        name: Some(name.clone()),
        ..Default::default()
    };
    let manager = format!("{}-seal-key", crate::FIELD_MANAGER);
    match writer.create(&bare, &manager).await? {
        Created::Created => {
            events.push(("SealKeyCreated".into(), "generated the static seal key".into()));
            Ok(key.to_vec())
        }
        Created::AlreadyExists => read().await?.ok_or(Error::MissingMetadata),
    }
}

async fn trust_for(ctx: &Context, cluster: &Cluster<'_>) -> Result<JwtTrust, String> {
    let oidc = &cluster.spec.self_init.oidc;
    if !oidc.enabled {
        return Ok(JwtTrust {
            issuer: String::new(),
            public_keys_pem: Vec::new(),
        });
    }
    let mut trust = ctx.jwt_trust().await.map_err(|e| e.to_string())?;
    if let Some(issuer) = &oidc.issuer {
        trust.issuer = issuer.clone();
    }
    Ok(trust)
}

async fn apply_gateway(
    ctx: &Context,
    cluster: &Cluster<'_>,
    writer: &Writer<'_>,
    observed: &mut Observed,
    bundle: Option<&str>,
) -> Result<(), Error> {
    use gateway_api::backendtlspolicies::BackendTlsPolicy;
    use gateway_api::httproutes::HttpRoute;
    let wanted = cluster.spec.gateway.as_ref().is_some_and(|g| g.enabled);
    if !ctx.gateway_api {
        observed.gateway = if wanted {
            GatewayState::ApiMissing
        } else {
            GatewayState::Disabled
        };
        return Ok(());
    }
    let name = cluster.name;
    match (
        objects::http_route(cluster),
        objects::backend_tls_policy(cluster),
        bundle.and_then(|b| objects::gateway_ca_config_map(cluster, b)),
    ) {
        (Some(route), policy, ca) => {
            if let Some(ca) = ca {
                writer.apply(&ca).await?;
            }
            match policy {
                Some(p) => drop(writer.apply(&p).await?),
                None => drop(
                    writer
                        .delete_if_owned::<BackendTlsPolicy>(&names::backend_tls_policy(name), cluster.uid)
                        .await?,
                ),
            }
            writer.apply(&route).await?;
            observed.gateway = GatewayState::Attached;
        }
        (None, _, _) => {
            writer
                .delete_if_owned::<HttpRoute>(&names::http_route(name), cluster.uid)
                .await?;
            writer
                .delete_if_owned::<BackendTlsPolicy>(&names::backend_tls_policy(name), cluster.uid)
                .await?;
            writer
                .delete_if_owned::<ConfigMap>(&names::gateway_ca_config_map(name), cluster.uid)
                .await?;
            observed.gateway = GatewayState::Disabled;
        }
    }
    Ok(())
}

/// Patches status only when it changed (compared with the observed one), so a settled cluster
/// costs no writes.
/// `base` is the status to build on: the stored one, or what an upgrade step returned.
async fn write_status(
    ctx: &Context,
    obj: &OpenBaoCluster,
    base: &OpenBaoClusterStatus,
    observed: &Observed,
) -> Result<OpenBaoClusterStatus, Error> {
    let now = Time(Timestamp::now());
    let status = status::derive(&obj.spec, base, observed, obj.metadata.generation, now);
    Writer::new(ctx, &obj.namespace().unwrap_or_default())
        .patch_status::<OpenBaoCluster, _>(&obj.name_any(), obj.status.as_ref(), &status, None)
        .await?;
    Ok(status)
}

async fn publish_events(
    ctx: &Context,
    obj: &OpenBaoCluster,
    previous: &OpenBaoClusterStatus,
    current: &OpenBaoClusterStatus,
    mut events: Vec<(String, String)>,
) {
    if !previous.initialized && current.initialized {
        events.push((
            "Initialized".into(),
            "OpenBao initialized itself; the root token was revoked".into(),
        ));
    }
    if previous.phase != current.phase {
        events.push((
            "PhaseChanged".into(),
            format!("phase {:?} -> {:?}", previous.phase, current.phase),
        ));
    }
    let upgrade_phase = |s: &OpenBaoClusterStatus| s.upgrade.as_ref().map(|u| u.phase).unwrap_or_default();
    if upgrade_phase(previous) != upgrade_phase(current) {
        let message = current
            .upgrade
            .as_ref()
            .and_then(|u| u.message.clone())
            .unwrap_or_default();
        events.push((
            "UpgradePhaseChanged".into(),
            format!(
                "upgrade phase {:?} -> {:?}: {message}",
                upgrade_phase(previous),
                upgrade_phase(current)
            ),
        ));
    }
    let degraded = openbao_api::conditions::find(&current.conditions, openbao_api::conditions::DEGRADED);
    let was_degraded = openbao_api::conditions::find(&previous.conditions, openbao_api::conditions::DEGRADED);
    let warning = degraded.filter(|c| c.status == "True" && was_degraded.map(|w| &w.reason) != Some(&c.reason));
    let reference = obj.object_ref(&());
    let mut all: Vec<(EventType, String, String)> =
        events.into_iter().map(|(r, n)| (EventType::Normal, r, n)).collect();
    if let Some(c) = warning {
        all.push((EventType::Warning, c.reason.clone(), c.message.clone()));
    }
    let writer = Writer::new(ctx, reference.namespace.as_deref().unwrap_or_default());
    for (type_, reason, note) in all {
        writer.event(&reference, type_, &reason, &note, "Reconcile").await;
    }
}

#[cfg(test)]
mod tests {
    use super::{UpgradeState, failed_step, pod_views};
    use k8s_openapi::api::core::v1::Pod;

    fn pod(name: &str, sealed: bool, deleting: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": {"openbao-sealed": sealed.to_string(), "openbao-initialized": "true"},
                "deletionTimestamp": deleting.then_some("2026-11-24T22:14:40Z"),
            }
        }))
        .expect("a pod")
    }

    #[test]
    fn a_failed_step_degrades_the_cluster_only_when_it_keeps_failing() {
        let mut status = openbao_api::OpenBaoClusterStatus::default();
        for attempt in 1..=crate::flows::STEP_FAILURES_DEGRADED {
            let (next, state, retry) = failed_step(&status, "LoginFailed", "HTTP 500: local node not active");
            let upgrade = next.upgrade.clone().expect("the failure is recorded");
            assert_eq!(upgrade.failures, attempt);
            assert_eq!(upgrade.last_error.map(|e| e.reason), Some("LoginFailed".into()));
            assert_eq!(retry, Some(std::time::Duration::from_secs(2)));
            let degraded = attempt == crate::flows::STEP_FAILURES_DEGRADED;
            assert_eq!(
                matches!(state, UpgradeState::StepFailed(_)),
                degraded,
                "attempt {attempt}"
            );
            assert_eq!(state == UpgradeState::StepRetrying, !degraded, "attempt {attempt}");
            status = next;
        }
    }

    #[test]
    fn job_accounts_exist_only_for_the_features_that_run_jobs() {
        use super::{JobAccount, job_account};
        let account = |spec: serde_json::Value, job: &str| {
            let mut spec_json =
                serde_json::json!({"version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"}});
            for (k, v) in spec.as_object().unwrap() {
                spec_json[k] = v.clone();
            }
            let spec: openbao_api::OpenBaoClusterSpec = serde_json::from_value(spec_json).unwrap();
            let cluster = openbao_render::Cluster {
                name: "c",
                namespace: "ns",
                uid: "u",
                spec: &spec,
            };
            job_account(&cluster, &openbao_api::names::job_service_account("c", job))
        };
        let none = serde_json::json!({});
        assert_eq!(account(none.clone(), "backup"), JobAccount::NotWanted);
        assert_eq!(account(none.clone(), "upgrade"), JobAccount::NotWanted);
        assert_eq!(account(none, "restore"), JobAccount::RestoreControllers);
        let backup = serde_json::json!({
            "backup": {"schedule": "0 * * * *", "target": {"endpoint": "https://s3.example", "bucket": "b", "credentialsSecretRef": {"name": "s3"}}},
            "upgrade": {"preUpgradeSnapshot": true},
        });
        assert_eq!(account(backup.clone(), "backup"), JobAccount::Wanted);
        assert_eq!(account(backup, "upgrade"), JobAccount::Wanted);
    }

    #[test]
    fn pods_being_deleted_describe_no_server() {
        // After a blue/green upgrade: the removed blue servers are stopped (sealed) and deleted.
        let pods = [
            pod("openbao-0", true, true),
            pod("openbao-v2-7-2-0", false, false),
            pod("openbao-v2-7-2-1", false, false),
        ];
        let names: Vec<String> = pod_views(&pods).into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["openbao-v2-7-2-0", "openbao-v2-7-2-1"]);
    }
}
