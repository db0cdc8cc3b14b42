//! The OpenBaoCluster controller against a real kube-apiserver (etcd + kube-apiserver built from
//! the pinned Kubernetes sources). No kubelet here: pods never start, so these tests prove the
//! objects, ownership, idempotency, drift repair and pausing.

mod apiserver_common;

use anyhow::{Context as _, Result};
use apiserver_common::{client_with_crds, context, wait_for};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use openbao_api::{OpenBaoCluster, conditions};
use openbao_operator::context::Context;
use openbao_operator::controllers::cluster;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::apiserver::{ApiServer, create_namespace, install_gateway_api_crds};

async fn setup() -> Result<(Client, Arc<Context>)> {
    let client = client_with_crds(ApiServer::shared().await?).await?;
    install_gateway_api_crds(&client).await?;
    // The operator reads the issuer's discovery documents as an authenticated client.
    let ctx = Arc::new(context(&client).await);
    assert!(
        ctx.gateway_api,
        "Gateway API CRDs were installed, discovery must see them"
    );
    Ok((client, ctx))
}

fn cluster_manifest(name: &str, extra: serde_json::Value) -> Result<OpenBaoCluster> {
    let mut spec = serde_json::json!({
        "version": "2.7.2",
        "profile": "Development",
        "storage": {"size": "1Gi"},
        "selfInit": {
            "oidc": {"adminServiceAccount": {"name": "bao-admin"}},
            "demoUserpass": {"passwordSecretRef": {"name": "demo-password"}}
        },
        "gateway": {"gatewayRef": {"name": "edge", "namespace": "edge-system"}, "hostname": "bao.lane.localhost", "listenerName": "https"},
    });
    for (k, v) in extra.as_object().context("extra is an object")? {
        spec[k] = v.clone();
    }
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster",
        "metadata": {"name": name}, "spec": spec,
    }))?)
}

async fn get<K>(client: &Client, ns: &str, name: &str) -> Result<Option<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug,
{
    Ok(Api::<K>::namespaced(client.clone(), ns).get_opt(name).await?)
}

/// Every managed object's name and resourceVersion, to prove a reconcile wrote nothing.
async fn versions(client: &Client, ns: &str, c: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    macro_rules! rv {
        ($k:ty, $name:expr) => {{
            let o: $k = get::<$k>(client, ns, &$name)
                .await?
                .with_context(|| format!("{} missing", $name))?;
            out.push((
                format!("{}/{}", <$k as Resource>::kind(&()), $name),
                o.resource_version().unwrap_or_default(),
            ));
        }};
    }
    use openbao_api::names::*;
    rv!(ServiceAccount, service_account(c));
    rv!(RoleBinding, service_registration_binding(c));
    rv!(Secret, unseal_key_secret(c));
    rv!(Secret, tls_ca_secret(c));
    rv!(Secret, tls_server_secret(c));
    rv!(Secret, init_secret(c));
    rv!(ConfigMap, config_map(c));
    rv!(ConfigMap, gateway_ca_config_map(c));
    rv!(Service, headless_service(c));
    rv!(Service, public_service(c));
    rv!(NetworkPolicy, network_policy(c));
    rv!(PodDisruptionBudget, pdb(c));
    rv!(StatefulSet, statefulset(c));
    rv!(gateway_api::httproutes::HttpRoute, http_route(c));
    rv!(gateway_api::backendtlspolicies::BackendTlsPolicy, backend_tls_policy(c));
    let cr: OpenBaoCluster = get(client, ns, c).await?.context("cluster")?;
    out.push(("OpenBaoCluster".into(), cr.resource_version().unwrap_or_default()));
    Ok(out)
}

async fn create(client: &Client, ns: &str, obj: &OpenBaoCluster) -> Result<OpenBaoCluster> {
    Ok(Api::<OpenBaoCluster>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), obj)
        .await?)
}

async fn reconcile_once(client: &Client, ctx: &Arc<Context>, ns: &str, name: &str) -> Result<()> {
    let obj: OpenBaoCluster = get(client, ns, name).await?.context("cluster exists")?;
    cluster::reconcile(Arc::new(obj), ctx.clone()).await?;
    Ok(())
}

#[tokio::test]
async fn one_cluster_yields_every_object_owned_and_a_second_reconcile_writes_nothing() -> Result<()> {
    let (client, ctx) = setup().await?;
    let ns = create_namespace(&client, "bao-objects").await?;
    let created = create(&client, &ns, &cluster_manifest("lane", serde_json::json!({}))?).await?;
    let uid = created.uid().unwrap();

    let t = Instant::now();
    reconcile_once(&client, &ctx, &ns, "lane").await?;
    eprintln!("first reconcile: {:?}", t.elapsed());
    let before = versions(&client, &ns, "lane").await?;

    // Everything but the seal key is owned by the cluster (the key outlives it under Retain).
    let sts: StatefulSet = get(&client, &ns, "lane").await?.unwrap();
    assert_eq!(sts.owner_references()[0].uid, uid);
    assert_eq!(sts.owner_references()[0].controller, Some(true));
    let retention = sts
        .spec
        .as_ref()
        .unwrap()
        .persistent_volume_claim_retention_policy
        .clone()
        .unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
    let key: Secret = get(&client, &ns, "lane-unseal-key").await?.unwrap();
    assert!(
        key.owner_references().is_empty(),
        "Retain keeps the seal key beyond the cluster"
    );
    assert_eq!(key.data.unwrap()["key"].0.len(), 32);
    for (kind_name, _) in &before {
        eprintln!("applied {kind_name}");
    }

    // TLS material verifies: the server certificate carries the pod and gateway names.
    let server: Secret = get(&client, &ns, "lane-tls-server").await?.unwrap();
    let pem = String::from_utf8(server.data.unwrap()["tls.crt"].0.clone())?;
    let info = openbao_render::pki::inspect(&pem)?;
    for san in [
        format!("lane-2.lane.{ns}.svc"),
        "bao.lane.localhost".to_string(),
        format!("lane-public.{ns}.svc"),
    ] {
        assert!(info.sans.contains(&san), "{san} not in {:?}", info.sans);
    }
    // The self-init file trusts the apiserver's real issuer and keys.
    let init: Secret = get(&client, &ns, "lane-config-init").await?.unwrap();
    let hcl = String::from_utf8(init.data.unwrap()["zz-init.hcl"].0.clone())?;
    assert!(
        hcl.contains("\"bound_issuer\" = \"https://kubernetes.default.svc.cluster.local\""),
        "{hcl}"
    );
    assert!(hcl.contains("BEGIN PUBLIC KEY"));
    assert!(hcl.contains(&format!("system:serviceaccount:{ns}:bao-admin")));
    // Every role accepts this cluster's own audience, the one published in status (the
    // operator, its seal migration, three executor Jobs, the admin).
    let audience = openbao_api::names::jwt_audience(&ns, "lane");
    assert_eq!(
        hcl.matches(&format!("\"bound_audiences\" = [\"{audience}\"]")).count(),
        6,
        "{hcl}"
    );

    // Status after the first reconcile.
    let cr: OpenBaoCluster = get(&client, &ns, "lane").await?.unwrap();
    let status = cr.status.unwrap();
    let cond = |t: &str| conditions::find(&status.conditions, t).map(|c| (c.status.clone(), c.reason.clone()));
    assert_eq!(
        cond(conditions::TLS_READY),
        Some(("True".into(), "OperatorManaged".into()))
    );
    assert_eq!(
        cond(conditions::GATEWAY_INTEGRATION_READY),
        Some(("True".into(), "RouteApplied".into()))
    );
    assert_eq!(
        cond(conditions::SECURITY_RISK),
        Some(("True".into(), "DemoLoginEnabled".into()))
    );
    assert_eq!(
        cond(conditions::OPENBAO_INITIALIZED),
        Some(("False".into(), "WaitingForSelfInit".into()))
    );
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.jwt_audience.as_deref(), Some(audience.as_str()));

    let writes_before = ctx.metrics.kube_writes.get();
    reconcile_once(&client, &ctx, &ns, "lane").await?;
    let after = versions(&client, &ns, "lane").await?;
    assert_eq!(before, after, "a second reconcile must not change any object");
    eprintln!(
        "second reconcile: {} apply requests, 0 objects changed",
        ctx.metrics.kube_writes.get() - writes_before
    );
    Ok(())
}

#[tokio::test]
async fn drift_is_repaired_within_seconds_and_paused_clusters_are_left_alone() -> Result<()> {
    let (client, _) = setup().await?;
    let ns = create_namespace(&client, "bao-drift").await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Scoped to this test's namespace: the other tests reconcile theirs by hand.
    let mut scoped = context(&client).await;
    scoped.watch_namespace = Some(ns.clone());
    let controller = tokio::spawn(cluster::run(Arc::new(scoped), async move {
        let _ = stop_rx.await;
    }));
    create(&client, &ns, &cluster_manifest("drift", serde_json::json!({}))?).await?;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let original = wait_for("the config ConfigMap", Duration::from_secs(30), || async {
        Ok(cms.get_opt("drift-config").await?)
    })
    .await?;

    // Delete a managed object: the owned-object watch brings it back.
    cms.delete("drift-config", &DeleteParams::default()).await?;
    let t = Instant::now();
    let back = wait_for("the ConfigMap to come back", Duration::from_secs(10), || async {
        Ok(cms.get_opt("drift-config").await?.filter(|c| c.uid() != original.uid()))
    })
    .await?;
    eprintln!("deleted ConfigMap restored in {:?}", t.elapsed());
    assert_eq!(back.data, original.data);

    // Edit a managed field: it is put back.
    let svcs = Api::<Service>::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({"spec": {"publishNotReadyAddresses": false}});
    svcs.patch("drift", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_for(
        "the headless Service to be repaired",
        Duration::from_secs(10),
        || async {
            Ok(svcs
                .get("drift")
                .await?
                .spec
                .and_then(|s| s.publish_not_ready_addresses)
                .filter(|p| *p))
        },
    )
    .await?;

    // Paused: no writes at all, status says so.
    let crs = Api::<OpenBaoCluster>::namespaced(client.clone(), &ns);
    crs.patch(
        "drift",
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"spec": {"paused": true}})),
    )
    .await?;
    wait_for("phase Paused", Duration::from_secs(10), || async {
        Ok(crs
            .get("drift")
            .await?
            .status
            .and_then(|s| s.phase)
            .filter(|p| *p == openbao_api::ClusterPhase::Paused))
    })
    .await?;
    cms.delete("drift-config", &DeleteParams::default()).await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        cms.get_opt("drift-config").await?.is_none(),
        "a paused cluster must not be changed"
    );

    // Unpause: repaired again.
    crs.patch(
        "drift",
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"spec": {"paused": false}})),
    )
    .await?;
    wait_for("the ConfigMap after unpausing", Duration::from_secs(10), || async {
        Ok(cms.get_opt("drift-config").await?)
    })
    .await?;
    let _ = stop_tx.send(());
    controller.await?;
    Ok(())
}

#[tokio::test]
async fn deletion_policy_decides_what_outlives_the_cluster() -> Result<()> {
    let (client, ctx) = setup().await?;
    let ns = create_namespace(&client, "bao-deletion").await?;
    for (name, policy, key_owned, pvcs) in [
        ("keep", "Retain", false, "Retain"),
        ("pvcs", "DeletePVCs", false, "Delete"),
        ("all", "DeleteAll", true, "Delete"),
    ] {
        create(
            &client,
            &ns,
            &cluster_manifest(name, serde_json::json!({"deletionPolicy": policy, "gateway": null}))?,
        )
        .await?;
        reconcile_once(&client, &ctx, &ns, name).await?;
        let key: Secret = get(&client, &ns, &format!("{name}-unseal-key")).await?.unwrap();
        assert_eq!(
            !key.owner_references().is_empty(),
            key_owned,
            "{policy}: seal key ownership"
        );
        let sts: StatefulSet = get(&client, &ns, name).await?.unwrap();
        let when = sts
            .spec
            .unwrap()
            .persistent_volume_claim_retention_policy
            .unwrap()
            .when_deleted;
        assert_eq!(when.as_deref(), Some(pvcs), "{policy}: PVC retention");
    }
    // Switching DeleteAll back to Retain releases the key again.
    let crs = Api::<OpenBaoCluster>::namespaced(client.clone(), &ns);
    crs.patch(
        "all",
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"spec": {"deletionPolicy": "Retain"}})),
    )
    .await?;
    reconcile_once(&client, &ctx, &ns, "all").await?;
    let key: Secret = get(&client, &ns, "all-unseal-key").await?.unwrap();
    assert!(key.owner_references().is_empty());
    // No gateway: no route objects, and the condition is absent.
    assert!(
        get::<gateway_api::httproutes::HttpRoute>(&client, &ns, "keep-httproute")
            .await?
            .is_none()
    );
    Ok(())
}

#[tokio::test]
async fn missing_gateway_api_is_a_condition_not_a_crash() -> Result<()> {
    // An apiserver of its own, without the Gateway API CRDs.
    let server = ApiServer::start().await?;
    let client = client_with_crds(&server).await?;
    let ctx = Arc::new(context(&client).await);
    assert!(!ctx.gateway_api);
    let ns = create_namespace(&client, "bao-nogw").await?;
    create(&client, &ns, &cluster_manifest("edge", serde_json::json!({}))?).await?;
    reconcile_once(&client, &ctx, &ns, "edge").await?;
    let cr: OpenBaoCluster = get(&client, &ns, "edge").await?.unwrap();
    let status = cr.status.unwrap();
    let gw = conditions::find(&status.conditions, conditions::GATEWAY_INTEGRATION_READY).unwrap();
    assert_eq!((gw.status.as_str(), gw.reason.as_str()), ("False", "GatewayAPIMissing"));
    assert!(gw.message.contains("Gateway API"), "{}", gw.message);
    // Everything else is still there.
    assert!(get::<StatefulSet>(&client, &ns, "edge").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn transitions_are_reported_as_events() -> Result<()> {
    let (client, ctx) = setup().await?;
    let ns = create_namespace(&client, "bao-events").await?;
    create(&client, &ns, &cluster_manifest("ev", serde_json::json!({}))?).await?;
    reconcile_once(&client, &ctx, &ns, "ev").await?;
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns);
    let reasons = wait_for("events", Duration::from_secs(10), || async {
        let list = events.list(&Default::default()).await?;
        let reasons: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
        Ok((reasons.len() >= 3).then_some(reasons))
    })
    .await?;
    for r in ["SealKeyCreated", "CertificateIssued", "PhaseChanged"] {
        assert!(reasons.iter().any(|x| x == r), "{r} not in {reasons:?}");
    }
    Ok(())
}

/// A child of `component` named `name`, with the labels the operator puts on `cluster`'s
/// children; controlled by `owner` (a uid) or by nobody.
fn labelled<K: DeserializeOwned>(
    cluster: &str,
    component: &str,
    name: &str,
    owner: Option<&str>,
    body: serde_json::Value,
) -> Result<K> {
    let mut object = body;
    object["metadata"] = serde_json::json!({
        "name": name,
        "labels": openbao_render::labels::common(cluster, component),
        "ownerReferences": owner.map(|uid| vec![serde_json::json!({
            "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster", "name": cluster, "uid": uid,
            "controller": true, "blockOwnerDeletion": true,
        })]).unwrap_or_default(),
    });
    Ok(serde_json::from_value(object)?)
}

/// Children no longer wanted are pruned by owner and label, whatever their names (e.g. one an
/// earlier version named differently); an object with the same labels that the cluster does not
/// control is kept. A settled cluster lists nothing: a leftover appearing meanwhile is found
/// when the wanted set changes or the operator restarts.
#[tokio::test]
async fn children_no_longer_wanted_are_pruned_by_owner_and_label_whatever_their_name() -> Result<()> {
    let (client, ctx) = setup().await?;
    let ns = create_namespace(&client, "bao-prune").await?;
    let created = create(&client, &ns, &cluster_manifest("pr", serde_json::json!({}))?).await?;
    let uid = created.uid().context("uid")?;
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let service = serde_json::json!({"spec": {"clusterIP": "None", "ports": [{"port": 8200}]}});
    let post = PostParams::default();
    // No telemetry in the spec: no metrics Service is wanted.
    let leftover: Service = labelled("pr", "metrics", "pr-metrics-v0", Some(&uid), service.clone())?;
    let foreign: Service = labelled("pr", "metrics", "pr-metrics-foreign", None, service.clone())?;
    // The gateway is wanted: its CA ConfigMap under today's name, not under an old one.
    let old_ca: ConfigMap = labelled("pr", "gateway", "pr-gateway-ca-v0", Some(&uid), serde_json::json!({}))?;
    services.create(&post, &leftover).await?;
    services.create(&post, &foreign).await?;
    config_maps.create(&post, &old_ca).await?;

    reconcile_once(&client, &ctx, &ns, "pr").await?;
    let gone = |name: &'static str| {
        let services = services.clone();
        let config_maps = config_maps.clone();
        async move {
            let service = services.get_opt(name).await?;
            let config_map = config_maps.get_opt(name).await?;
            Ok((service.is_none() && config_map.is_none()).then_some(()))
        }
    };
    wait_for("the owned leftover Service to go", Duration::from_secs(10), || {
        gone("pr-metrics-v0")
    })
    .await?;
    wait_for("the owned leftover ConfigMap to go", Duration::from_secs(10), || {
        gone("pr-gateway-ca-v0")
    })
    .await?;
    assert!(
        services.get_opt("pr-metrics-foreign").await?.is_some(),
        "an object the cluster does not control is never pruned"
    );
    let ca = openbao_api::names::gateway_ca_config_map("pr");
    assert!(
        config_maps.get_opt(&ca).await?.is_some(),
        "the wanted CA ConfigMap stays"
    );
    assert!(
        services
            .get_opt(&openbao_api::names::headless_service("pr"))
            .await?
            .is_some()
    );

    // Settled: nothing is listed, so a leftover created now stays until the operator restarts.
    let late: Service = labelled("pr", "metrics", "pr-metrics-v1", Some(&uid), service)?;
    services.create(&post, &late).await?;
    reconcile_once(&client, &ctx, &ns, "pr").await?;
    assert!(services.get_opt("pr-metrics-v1").await?.is_some());
    let restarted = Arc::new(context(&client).await);
    reconcile_once(&client, &restarted, &ns, "pr").await?;
    wait_for(
        "the late leftover to go after a restart",
        Duration::from_secs(10),
        || gone("pr-metrics-v1"),
    )
    .await?;
    assert!(services.get_opt("pr-metrics-foreign").await?.is_some());
    Ok(())
}
