//! The optional ServiceMonitor through the OpenBaoCluster controller on a real kube-apiserver.
//!
//! Proven: without the Prometheus Operator's CRD a cluster asking for a ServiceMonitor
//! converges (no error, the usual requeue, no ServiceMonitor, one Event `ServiceMonitorAPIMissing`
//! saying why, and no write on the next reconcile). Once a ServiceMonitor
//! CRD is installed (a minimal one with the Prometheus Operator's field names and duration
//! pattern, so that anything else the operator sent would be pruned and show up as drift), an
//! operator that asked discovery recently does nothing yet (it asks again only every
//! `OPTIONAL_API_TTL`); the next discovery finds it and the reconcile applies `<c>-metrics` with
//! the owner reference, the applied hash and the selector, port, path, scheme and TLS settings
//! that match the metrics Service; a second reconcile writes nothing; switching it off prunes it.

mod apiserver_common;

use anyhow::{Context as _, Result, ensure};
use apiserver_common::{client_with_crds, context};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, names};
use openbao_operator::context::Context;
use openbao_operator::controllers::cluster;
use openbao_operator::kube_write::APPLIED_HASH_ANNOTATION;
use openbao_operator::runtime::discovery::OptionalApi;
use openbao_render::objects::{METRICS_PATH, ServiceMonitor};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use testkit::apiserver::{ApiServer, create_namespace, install_crds};

const NAME: &str = "scraped";

/// The Prometheus Operator's duration pattern (`monitoring.coreos.com_servicemonitors.yaml`).
const DURATION: &str = "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$";

/// A ServiceMonitor CRD with the fields the operator writes, as the Prometheus Operator names
/// them; any other field would be pruned by the apiserver.
fn service_monitor_crd() -> Result<CustomResourceDefinition> {
    let string = json!({"type": "string"});
    let selector = json!({"type": "object", "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
    }});
    let secret_ref = json!({"type": "object", "properties": {"name": string, "key": string, "optional": {"type": "boolean"}}, "required": ["key"]});
    let endpoint = json!({"type": "object", "properties": {
        "port": string, "path": string,
        "scheme": {"type": "string", "enum": ["http", "https", "HTTP", "HTTPS"]},
        "params": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "interval": {"type": "string", "pattern": DURATION},
        "scrapeTimeout": {"type": "string", "pattern": DURATION},
        "tlsConfig": {"type": "object", "properties": {
            "ca": {"type": "object", "properties": {"secret": secret_ref, "configMap": secret_ref}},
            "serverName": string,
            "insecureSkipVerify": {"type": "boolean"},
        }},
    }});
    Ok(serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": "ServiceMonitor", "listKind": "ServiceMonitorList", "plural": "servicemonitors", "singular": "servicemonitor"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "required": ["selector"], "properties": {
                    "selector": selector,
                    "endpoints": {"type": "array", "items": endpoint},
                }}},
            }}}],
        },
    }))?)
}

async fn reconcile(client: &Client, ctx: &Arc<Context>, ns: &str) -> Result<(OpenBaoCluster, Action)> {
    let api = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    let action = cluster::reconcile(Arc::new(api.get(NAME).await?), ctx.clone()).await?;
    Ok((api.get(NAME).await?, action))
}

fn writes(ctx: &Context) -> u64 {
    ctx.metrics.kube_writes.get()
}

#[tokio::test]
async fn the_service_monitor_follows_the_crd_and_the_spec() -> Result<()> {
    // Its own apiserver: the CRD is installed half-way, and no other test may see it early.
    let server = ApiServer::start().await?;
    let client = client_with_crds(&server).await?;
    // An operator as shipped: discovery believed for OPTIONAL_API_TTL.
    let cached = Arc::new(context(&client).await);
    let mut ctx = context(&client).await;
    // Discovery asked on every reconcile, so the CRD installed below is seen at once (the
    // operator asks every OPTIONAL_API_TTL).
    ctx.service_monitors = OptionalApi::service_monitors(Duration::ZERO);
    let ctx = Arc::new(ctx);
    let ns = create_namespace(&client, "bao-monitor").await?;
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), &ns);
    let manifest: OpenBaoCluster = serde_json::from_value(json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster",
        "metadata": {"name": NAME},
        "spec": {
            "version": "2.7.2", "profile": "Development", "replicas": 1, "storage": {"size": "1Gi"},
            "selfInit": {"oidc": {"enabled": false}},
            "telemetry": {"serviceMonitor": {"interval": "1m", "scrapeTimeout": "15s"}},
        },
    }))?;
    clusters.create(&PostParams::default(), &manifest).await?;

    // 1. No CRD: the cluster converges as any other, nothing about ServiceMonitors fails.
    let (_, first_requeue) = reconcile(&client, &ctx, &ns).await?;
    reconcile(&client, &cached, &ns).await?;
    let before = writes(&ctx);
    let (c, requeue) = reconcile(&client, &ctx, &ns).await?;
    ensure!(
        writes(&ctx) == before,
        "a converged cluster without the CRD wrote again"
    );
    // The pod-waiting requeue of any bootstrapping cluster, not a retry.
    ensure!(
        requeue == first_requeue && requeue == Action::requeue(Duration::from_secs(60)),
        "no fast retry without the CRD: {requeue:?}"
    );
    let status = c.status.context("status")?;
    ensure!(
        !status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True"),
        "{:?}",
        status.conditions
    );
    // The cluster says why it has no ServiceMonitor: once per operator (two here, `ctx` and
    // `cached`), not again on later reconciles (Events are not repeated within the hour).
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns);
    let said: Vec<String> = events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ServiceMonitorAPIMissing"))
        .filter_map(|e| e.note)
        .collect();
    ensure!(
        said.len() == 2 && said[0].contains("monitoring.coreos.com/v1 ServiceMonitor"),
        "{said:?}"
    );
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    let svc = services
        .get(&names::metrics_service(NAME))
        .await
        .context("metrics Service")?;

    // 2. The CRD appears: the next reconcile applies the ServiceMonitor.
    install_crds(&client, vec![service_monitor_crd()?]).await?;
    let monitors = Api::<ServiceMonitor>::namespaced(client.clone(), &ns);
    ensure!(monitors.list(&Default::default()).await?.items.is_empty());
    // The shipped operator still believes its last discovery (no discovery per reconcile).
    reconcile(&client, &cached, &ns).await?;
    ensure!(
        monitors.list(&Default::default()).await?.items.is_empty(),
        "discovery was asked again before OPTIONAL_API_TTL"
    );
    let (c, _) = reconcile(&client, &ctx, &ns).await?;
    let monitor = monitors
        .get(&names::metrics_service(NAME))
        .await
        .context("the ServiceMonitor once the CRD exists")?;
    let owner = &monitor.owner_references()[0];
    ensure!(
        owner.uid == c.uid().unwrap() && owner.controller == Some(true),
        "{owner:?}"
    );
    ensure!(monitor.annotations().contains_key(APPLIED_HASH_ANNOTATION));
    // The selector picks exactly the metrics Service's labels.
    let labels = svc.labels();
    let selector = monitor.spec.selector["matchLabels"]
        .as_object()
        .context("matchLabels")?;
    ensure!(!selector.is_empty());
    for (k, v) in selector {
        ensure!(
            labels.get(k).map(String::as_str) == v.as_str(),
            "selector {k}={v} not on {labels:?}"
        );
    }
    let endpoint = &monitor.spec.endpoints[0];
    let port = svc.spec.as_ref().and_then(|s| s.ports.as_ref()).context("ports")?[0].clone();
    ensure!(endpoint["port"] == json!(port.name), "{endpoint}");
    ensure!(
        endpoint["scheme"] == "https" && endpoint["path"] == METRICS_PATH,
        "{endpoint}"
    );
    ensure!(endpoint["params"] == json!({"format": ["prometheus"]}), "{endpoint}");
    ensure!(
        endpoint["interval"] == "1m" && endpoint["scrapeTimeout"] == "15s",
        "{endpoint}"
    );
    ensure!(
        endpoint["tlsConfig"]
            == json!({"ca": {"secret": {"name": names::tls_server_secret(NAME), "key": "ca.crt"}},
                      "serverName": format!("{}.{ns}.svc", names::headless_service(NAME))}),
        "{endpoint}"
    );

    // 3. A second reconcile sends nothing.
    let before = writes(&ctx);
    let version = monitor.resource_version();
    reconcile(&client, &ctx, &ns).await?;
    ensure!(
        writes(&ctx) == before,
        "the second reconcile wrote {} times",
        writes(&ctx) - before
    );
    ensure!(monitors.get(&names::metrics_service(NAME)).await?.resource_version() == version);

    // 4. Switched off: pruned.
    clusters
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"telemetry": {"serviceMonitor": {"enabled": false}}}})),
        )
        .await?;
    reconcile(&client, &ctx, &ns).await?;
    ensure!(
        monitors.get_opt(&names::metrics_service(NAME)).await?.is_none(),
        "not pruned"
    );
    Ok(())
}
