//! One hostile OpenBaoCluster must not stop the others (issue 13): an object whose
//! `spec.selfInit.requests[].data` nests 200 levels deep, stored before the CRD had the depth
//! bound (the apiserver keeps what it once accepted), on a real kube-apiserver. serde_json stops
//! at 128 levels, so a plain decode of the LIST fails; the operator's types decode it anyway,
//! report it as invalid, and keep reconciling its neighbour.

mod apiserver_common;

use anyhow::{Context as _, Result, bail, ensure};
use apiserver_common::{cluster_object, context, install_crypto_provider, untyped_clusters};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use openbao_api::{OpenBaoCluster, conditions};
use openbao_operator::controllers::cluster;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::apiserver::{ApiServer, create_namespace, install_crds};
use testkit::openbao::poll_until;

const DEPTH: usize = 200;

/// The CRDs as they were before `data` had bounds: a free-form object, nothing more.
fn crds_without_data_bounds() -> Result<Vec<CustomResourceDefinition>> {
    let mut crds = openbao_api::crd::all();
    let mut cluster = serde_json::to_value(&crds[0])?;
    let data = cluster
        .pointer_mut("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/selfInit/properties/requests/items/properties/data")
        .context("the CRD has a data schema")?;
    *data = json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true });
    crds[0] = serde_json::from_value(cluster)?;
    Ok(crds)
}

fn manifest(name: &str, data: Option<Value>) -> Result<DynamicObject> {
    let mut spec = json!({ "version": "2.7.2", "profile": "Development", "storage": { "size": "1Gi" } });
    if let Some(data) = data {
        spec["selfInit"] =
            json!({ "requests": [{ "name": "deep", "operation": "update", "path": "sys/x", "data": data }] });
    }
    cluster_object(name, spec)
}

#[tokio::test]
async fn a_cluster_with_200_levels_of_data_does_not_stop_its_neighbour() -> Result<()> {
    install_crypto_provider();
    let server = ApiServer::shared().await?;
    let client = server.client().await?;
    let ns = create_namespace(&client, "deep-data").await?;
    let untyped = untyped_clusters(client.clone(), &ns);

    // Stored while the CRD had no bound, then the bound is installed: the object stays.
    install_crds(&client, crds_without_data_bounds()?).await?;
    let deep = (0..DEPTH).fold(json!("leaf"), |inner, _| json!({ "a": inner }));
    // Stored: the response echoes the object, which a plain decode already cannot read.
    match untyped
        .create(&PostParams::default(), &manifest("deep", Some(deep.clone()))?)
        .await
    {
        Ok(_) | Err(kube::Error::SerdeError(_)) => {}
        Err(other) => bail!("the apiserver refused 200 levels without the bound: {other:?}"),
    }
    install_crds(&client, openbao_api::crd::all()).await?;
    let refused = untyped
        .create(&PostParams::default(), &manifest("deep-again", Some(deep))?)
        .await;
    ensure!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("spec.selfInit.requests[0].data.a")),
        "with the bound installed, 200 levels are refused: {refused:?}"
    );

    // The failure the operator had: a LIST decoded into plain JSON values stops at 128 levels.
    let plain = untyped.list(&ListParams::default()).await;
    ensure!(
        matches!(&plain, Err(kube::Error::SerdeError(e)) if e.to_string().contains("recursion limit")),
        "a plain decode of the LIST fails on the deep object: {:?}",
        plain.map(|l| l.items.len())
    );
    // The operator's type decodes the same LIST.
    let typed = Api::<OpenBaoCluster>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .context("typed LIST with the deep object")?;
    assert_eq!(typed.items.len(), 1);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut ctx = context(&client).await;
    ctx.watch_namespace = Some(ns.clone());
    let controller = tokio::spawn(cluster::run(Arc::new(ctx), async move {
        let _ = stop_rx.await;
    }));
    untyped
        .create(&PostParams::default(), &manifest("neighbour", None)?)
        .await?;

    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let started = Instant::now();
    poll_until("the neighbour's StatefulSet", Duration::from_secs(60), || async {
        Ok(statefulsets.get_opt("neighbour").await?)
    })
    .await?;
    eprintln!(
        "neighbour's StatefulSet applied {:?} after its creation",
        started.elapsed()
    );

    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), &ns);
    let degraded = poll_until("Degraded on the deep cluster", Duration::from_secs(30), || async {
        let status = clusters.get("deep").await?.status.unwrap_or_default();
        Ok(status
            .conditions
            .into_iter()
            .find(|c| c.type_ == conditions::DEGRADED && c.status == "True"))
    })
    .await?;
    assert_eq!(degraded.reason, "InvalidSelfInitRequest");
    assert!(
        degraded
            .message
            .starts_with("spec.selfInit.requests[0].data.a.a.a.a.a.a.a: nested deeper than"),
        "{}",
        degraded.message
    );
    // Nothing is built from an invalid spec.
    assert!(
        statefulsets.get_opt("deep").await?.is_none(),
        "no StatefulSet for the deep cluster"
    );

    let _ = stop_tx.send(());
    controller.await?;
    Ok(())
}
