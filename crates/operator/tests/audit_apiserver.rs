//! Audit devices and telemetry through the OpenBaoCluster controller on a real kube-apiserver
//! (no kubelet: the one pod is created by the test, as a StatefulSet would, with the labels
//! OpenBao's service registration sets). Proven: the config ConfigMap carries the audit and
//! telemetry files, the StatefulSet the audit volume claim and the audit hash, the metrics
//! Service exists while `spec.telemetry` does and is pruned after; `AuditReady` follows the pods.

mod apiserver_common;

use anyhow::{Context as _, Result};
use apiserver_common::{client_with_crds, context};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, conditions, names};
use openbao_operator::context::Context;
use openbao_operator::controllers::cluster;
use openbao_render::{config, labels};
use serde_json::json;
use std::sync::Arc;
use testkit::apiserver::{ApiServer, create_namespace};

const NAME: &str = "audited";

async fn setup() -> Result<(Client, Arc<Context>, String)> {
    let client = client_with_crds(ApiServer::shared().await?).await?;
    let ctx = Arc::new(context(&client).await);
    let ns = create_namespace(&client, "bao-audit").await?;
    Ok((client, ctx, ns))
}

async fn reconcile(client: &Client, ctx: &Arc<Context>, ns: &str) -> Result<OpenBaoCluster> {
    let api = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    cluster::reconcile(Arc::new(api.get(NAME).await?), ctx.clone()).await?;
    Ok(api.get(NAME).await?)
}

fn audit_ready(c: &OpenBaoCluster) -> Option<(String, String)> {
    let status = c.status.as_ref()?;
    conditions::find(&status.conditions, conditions::AUDIT_READY).map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn audit_and_telemetry_objects_follow_the_spec() -> Result<()> {
    let (client, ctx, ns) = setup().await?;
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), &ns);
    let manifest: OpenBaoCluster = serde_json::from_value(json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster",
        "metadata": {"name": NAME},
        "spec": {
            "version": "2.7.2", "profile": "Development", "replicas": 1, "storage": {"size": "1Gi"},
            "selfInit": {"oidc": {"enabled": false}},
            "audit": [{"type": "file", "name": "file", "fileOptions": {"filePath": "/openbao/audit/audit.log"}}],
            "auditFileStorage": {"size": "2Gi"},
            "telemetry": {},
        },
    }))?;
    clusters.create(&PostParams::default(), &manifest).await?;
    let c = reconcile(&client, &ctx, &ns).await?;

    let cm: ConfigMap = Api::namespaced(client.clone(), &ns)
        .get(&names::config_map(NAME))
        .await?;
    let data = cm.data.context("config data")?;
    assert!(
        data[config::AUDIT_FILE].contains("audit \"file\" \"file\" {"),
        "{data:?}"
    );
    assert!(data[config::TELEMETRY_FILE].contains("prometheus_retention_time = \"24h\""));
    assert!(data[config::SERVER_FILE].contains("unauthenticated_metrics_access = true"));

    let sts: StatefulSet = Api::namespaced(client.clone(), &ns)
        .get(&names::statefulset(NAME))
        .await?;
    let s = sts.spec.context("sts spec")?;
    let claims: Vec<String> = s
        .volume_claim_templates
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(claims, ["data", "audit"]);
    let hash =
        s.template.metadata.and_then(|m| m.annotations).unwrap_or_default()[labels::AUDIT_HASH_ANNOTATION].clone();

    let services = Api::<Service>::namespaced(client.clone(), &ns);
    let metrics = services
        .get(&names::metrics_service(NAME))
        .await
        .context("metrics Service")?;
    assert_eq!(metrics.owner_references()[0].uid, c.uid().unwrap());
    assert_eq!(
        audit_ready(&c),
        Some(("False".into(), "ServersPending".into())),
        "no server runs yet"
    );

    // A server pod of the current template, unsealed: the devices are live.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": names::pod(NAME, None, 0),
            "labels": {labels::CLUSTER_LABEL: NAME, "openbao-sealed": "false", "openbao-initialized": "true"},
            "annotations": {labels::AUDIT_HASH_ANNOTATION: hash},
        },
        "spec": {
            "serviceAccountName": names::service_account(NAME),
            "automountServiceAccountToken": false,
            "containers": [{"name": "openbao", "image": "openbao/openbao:2.7.2"}],
        },
    }))?;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &pod).await?;
    let c = reconcile(&client, &ctx, &ns).await?;
    assert_eq!(audit_ready(&c), Some(("True".into(), "DevicesEnabled".into())));
    // Idempotent: nothing audit-related is written again.
    let before = services.get(&names::metrics_service(NAME)).await?.resource_version();
    let c = reconcile(&client, &ctx, &ns).await?;
    assert_eq!(
        services.get(&names::metrics_service(NAME)).await?.resource_version(),
        before
    );
    assert_eq!(audit_ready(&c), Some(("True".into(), "DevicesEnabled".into())));

    // Devices and telemetry removed: the files and the metrics Service go, the claim stays.
    clusters
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"audit": null, "telemetry": null}})),
        )
        .await?;
    let c = reconcile(&client, &ctx, &ns).await?;
    assert_eq!(audit_ready(&c), Some(("False".into(), "NotConfigured".into())));
    assert!(services.get_opt(&names::metrics_service(NAME)).await?.is_none());
    let cm: ConfigMap = Api::namespaced(client.clone(), &ns)
        .get(&names::config_map(NAME))
        .await?;
    let data = cm.data.context("config data")?;
    assert!(!data.contains_key(config::AUDIT_FILE) && !data.contains_key(config::TELEMETRY_FILE));
    assert!(!data[config::SERVER_FILE].contains("telemetry"));
    let sts: StatefulSet = Api::namespaced(client.clone(), &ns)
        .get(&names::statefulset(NAME))
        .await?;
    assert_eq!(sts.spec.unwrap().volume_claim_templates.unwrap().len(), 2);
    Ok(())
}
