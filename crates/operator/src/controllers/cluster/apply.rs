//! Build and apply: every desired object, built by `openbao_render` from the spec and what was
//! observed, applied in dependency order through [`Writer`]; what is no longer wanted is pruned.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::Api;
use openbao_api::{OpenBaoClusterStatus, TlsMode, names};
use openbao_render::{Cluster, JwtTrust, labels, objects};

use super::status::{self, GatewayState, Observed, SealState, TlsState};
use super::{Error, bluegreen, certificate, tls};
use crate::context::Context;
use crate::flows::upgrade as upgrade_plan;
use crate::kube_write::{Created, Writer, kube_err};

/// What the apply step leaves for the steps after it.
pub(super) struct Applied {
    /// When certificates must be looked at again.
    pub next_cert_check: Option<Timestamp>,
    /// The CA bundle clients verify OpenBao with.
    pub bundle: Option<String>,
}

/// Applies every desired object in dependency order and prunes the ones no longer wanted.
pub(super) async fn apply_all(
    ctx: &Context,
    cluster: &Cluster<'_>,
    previous: &OpenBaoClusterStatus,
    seal: &super::seal_migration::SealWorkloads,
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
    let mut wanted_accounts = Vec::new();
    for sa in objects::job_service_accounts(cluster) {
        match job_account(cluster, &sa.name_any()) {
            JobAccount::Wanted => wanted_accounts.push(writer.apply(&sa).await?.name_any()),
            JobAccount::NotWanted | JobAccount::RestoreControllers => {}
        }
    }
    // The restore account is the restore controller's: its component is not listed here.
    // The operator watches ServiceAccounts and may delete them (deploy/operator/rbac.yaml): an
    // owned account of a feature switched off goes, never one someone else controls.
    let job_accounts = labels::children_selector(name, &["backup", "upgrade"]);
    writer
        .prune::<ServiceAccount>(&job_accounts, cluster.uid, &wanted_accounts)
        .await?;
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
            status::seal_state(
                cluster.spec.unseal.as_ref(),
                &cluster.spec.version,
                (cluster.namespace, cluster.name),
                &lookup,
            )
        }
    };

    if cluster.spec.tls.cert_manager.is_none() {
        certificate::prune(ctx, cluster, writer, false).await?;
    }
    let mut next_cert_check = None;
    let bundle = match cluster.spec.tls.mode {
        TlsMode::OperatorManaged => {
            let ca = get_secret(names::tls_ca_secret(name)).await?;
            let server = get_secret(names::tls_server_secret(name)).await?;
            match tls::reconcile_tls(cluster, ca.as_ref(), server.as_ref(), now) {
                Ok(out) => {
                    writer.apply(&out.secrets.ca).await?;
                    writer.apply(&out.secrets.server).await?;
                    // One Event for what one pass issued (a new cluster gets its CA and server
                    // certificate together).
                    if !out.changes.is_empty() {
                        events.push(("CertificateIssued".into(), out.changes.join("; ")));
                    }
                    next_cert_check = out.next_check;
                    observed.tls = TlsState::Ready {
                        server_not_after: out.server_not_after.map(|t| t.to_string()),
                        ca_not_after: out.ca_not_after.map(|t| t.to_string()),
                    };
                    Some(out.bundle_pem)
                }
                Err(e) => {
                    observed.tls = TlsState::NotReady {
                        reason: status::tls_reason::ISSUE_FAILED,
                        message: e.to_string(),
                    };
                    None
                }
            }
        }
        TlsMode::External => {
            // `Some(issuance)` with cert-manager, `None` for the user's own Secrets.
            let issued_by = match cluster.spec.tls.cert_manager {
                Some(_) => certificate::apply(ctx, cluster, writer).await?.map(Some),
                None => Ok(None),
            };
            match issued_by {
                Err(refused) => {
                    observed.tls = refused;
                    None
                }
                Ok(issued_by) => {
                    let secret_name = names::tls_server_secret(name);
                    let server = get_secret(secret_name.clone()).await?;
                    let out = tls::external_tls(&secret_name, server.as_ref(), issued_by, now);
                    if let (Some(_), Some(ca_pem)) = (&cluster.spec.tls.cert_manager, &out.ca_pem) {
                        writer.apply(&objects::ca_copy_secret(cluster, ca_pem)).await?;
                    }
                    observed.tls = out.state;
                    next_cert_check = out.next_check;
                    out.ca_pem
                }
            }
        }
    };

    if let Some(cm) = seal.config_map(objects::config_map(cluster)) {
        writer.apply(&cm).await?;
    }
    let initialized = observed.pods.iter().any(|p| p.initialized == Some(true)) || previous.initialized;
    let bootstrap_ready = if initialized {
        // A re-created first pod must never found a second cluster: the requests go away for good.
        // Of the Secrets labelled `config`, only the self-init requests exist.
        let config = labels::children_selector(name, &["config"]);
        if !writer.prune::<Secret>(&config, cluster.uid, &[]).await?.is_empty() {
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
    // The servers' policy needs the apiserver's addresses: without them no policy is written
    // (a wrong egress would cut service registration) and no pod is started or changed.
    let network_ready = match ctx.cluster_network().await {
        Ok(network) => {
            let mut policy = objects::network_policy(cluster, &ctx.operator, &network);
            // Moving away from transit: the servers need the old transit server until they leave it.
            let previous = seal.previous_transit_address().and_then(objects::transit_egress);
            if let (Some(rule), Some(spec)) = (previous, policy.spec.as_mut()) {
                let egress = spec.egress.get_or_insert_with(Vec::new);
                if !egress.contains(&rule) {
                    egress.push(rule);
                }
            }
            writer.apply(&policy).await?;
            true
        }
        Err(e) => {
            observed.network_error = Some(e.to_string());
            false
        }
    };
    // The executor Jobs' policy needs no apiserver address: written (or pruned with the
    // backups) whatever the discovery says.
    let jobs_policy = applied(
        writer,
        objects::jobs_network_policy(cluster, &ctx.network.dns_namespace),
    )
    .await?;
    let executor = labels::children_selector(name, &["executor"]);
    writer
        .prune::<NetworkPolicy>(&executor, cluster.uid, &jobs_policy)
        .await?;
    let pdb = applied(writer, objects::pod_disruption_budget(cluster)).await?;
    let server = labels::children_selector(name, &["server"]);
    writer.prune::<PodDisruptionBudget>(&server, cluster.uid, &pdb).await?;
    let metrics = applied(writer, objects::metrics_service(cluster)).await?;
    let metrics_selector = labels::children_selector(name, &["metrics"]);
    writer
        .prune::<Service>(&metrics_selector, cluster.uid, &metrics)
        .await?;
    super::service_monitor::apply(ctx, cluster, writer, events).await?;
    apply_gateway(ctx, cluster, writer, observed, bundle.as_deref()).await?;

    // Pods start only once their TLS material, what their seal needs, their NetworkPolicy and
    // (first time) the self-init file exist: a pod without its seal token would only wait in
    // an error state.
    if bootstrap_ready && network_ready && matches!(observed.tls, TlsState::Ready { .. }) && observed.seal.is_ready() {
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

/// Applies `object` when it is wanted; the names to keep when pruning its kind.
async fn applied<K>(writer: &Writer<'_>, object: Option<K>) -> Result<Vec<String>, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    match object {
        Some(object) => Ok(vec![writer.apply(&object).await?.name_any()]),
        None => Ok(Vec::new()),
    }
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
    let gateway = labels::children_selector(name, &["gateway"]);
    match (
        objects::http_route(cluster),
        objects::backend_tls_policy(cluster),
        bundle.and_then(|b| objects::gateway_ca_config_map(cluster, b)),
    ) {
        (Some(route), policy, ca) => {
            if let Some(ca) = ca {
                writer.apply(&ca).await?;
            }
            // The CA ConfigMap stays while the route does, also before there is a bundle.
            let ca = [names::gateway_ca_config_map(name)];
            writer.prune::<ConfigMap>(&gateway, cluster.uid, &ca).await?;
            let policy = applied(writer, policy).await?;
            writer.prune::<BackendTlsPolicy>(&gateway, cluster.uid, &policy).await?;
            let route = writer.apply(&route).await?.name_any();
            writer.prune::<HttpRoute>(&gateway, cluster.uid, &[route]).await?;
            observed.gateway = GatewayState::Attached;
        }
        (None, _, _) => {
            writer.prune::<HttpRoute>(&gateway, cluster.uid, &[]).await?;
            writer.prune::<BackendTlsPolicy>(&gateway, cluster.uid, &[]).await?;
            writer.prune::<ConfigMap>(&gateway, cluster.uid, &[]).await?;
            observed.gateway = GatewayState::Disabled;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
}
