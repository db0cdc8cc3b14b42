//! `spec.unseal.type: transit` through the controller on a real kube-apiserver (no kubelet):
//! no seal key Secret ever exists, the token reaches the pods only by reference, a missing
//! token Secret or key is a condition with a reason (no pods are created, no error loop), and
//! `SecurityRisk` follows where the seal key lives.

use anyhow::{Context as _, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use openbao_api::{OpenBaoCluster, UNSEAL_CONFIGURATION_READY, conditions, names};
use openbao_operator::context::Context;
use openbao_operator::controllers::cluster;
use openbao_operator::runtime::metrics::Metrics;
use openbao_render::{OperatorIdentity, paths};
use std::collections::BTreeMap;
use std::sync::Arc;
use testkit::apiserver::{ApiServer, create_namespace, install_crds};

const TOKEN: &str = "s.transit-token-that-must-stay-in-its-secret";

async fn setup() -> Result<(Client, Arc<Context>)> {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let server = ApiServer::shared().await?;
    let client = server.client().await?;
    install_crds(&client, openbao_api::crd::all()).await?;
    let operator = OperatorIdentity {
        namespace: "openbao-operator-system".into(),
        service_account: "openbao-operator".into(),
    };
    let ctx = Arc::new(Context::new(client.clone(), operator, Metrics::default()).await);
    Ok((client, ctx))
}

fn manifest(name: &str, unseal: serde_json::Value) -> Result<OpenBaoCluster> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster",
        "metadata": {"name": name},
        "spec": {"version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"}, "unseal": unseal},
    }))?)
}

fn transit() -> serde_json::Value {
    serde_json::json!({"type": "transit", "transit": {
        "address": "https://transit.vault.svc:8200",
        "keyName": "openbao-unseal",
        "tokenSecretRef": {"name": "transit-token", "key": "token"},
    }})
}

/// Reconciles once (it must succeed: a missing Secret is no error) and returns the conditions.
async fn reconcile(
    client: &Client,
    ctx: &Arc<Context>,
    ns: &str,
    name: &str,
) -> Result<BTreeMap<String, (String, String)>> {
    let api = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    cluster::reconcile(Arc::new(api.get(name).await?), ctx.clone())
        .await
        .context("reconcile")?;
    let status = api.get(name).await?.status.context("status written")?;
    Ok(status
        .conditions
        .into_iter()
        .map(|c| (c.type_, (c.status, c.reason)))
        .collect())
}

fn is(conditions: &BTreeMap<String, (String, String)>, type_: &str, status: &str, reason: &str) -> Result<()> {
    let got = conditions
        .get(type_)
        .with_context(|| format!("{type_} missing in {conditions:?}"))?;
    anyhow::ensure!(
        got == &(status.to_string(), reason.to_string()),
        "{type_}: {got:?}, want {status} {reason}"
    );
    Ok(())
}

fn token_secret(data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("transit-token".into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_transit_cluster_waits_for_its_token_and_never_gets_a_seal_key() -> Result<()> {
    let (client, ctx) = setup().await?;
    let ns = create_namespace(&client, "bao-transit").await?;
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    clusters
        .create(&PostParams::default(), &manifest("sealed", transit())?)
        .await?;

    // No token Secret: a reason, no pods, no seal key.
    let c = reconcile(&client, &ctx, &ns, "sealed").await?;
    is(&c, UNSEAL_CONFIGURATION_READY, "False", "TokenSecretMissing")?;
    is(&c, conditions::DEGRADED, "True", "TokenSecretMissing")?;
    is(&c, conditions::SECURITY_RISK, "False", "SealKeyOutsideCluster")?;
    anyhow::ensure!(
        statefulsets.get_opt("sealed").await?.is_none(),
        "pods created without their token"
    );
    // Reconciling again changes nothing and fails nothing.
    let again = reconcile(&client, &ctx, &ns, "sealed").await?;
    anyhow::ensure!(again == c, "{again:?} != {c:?}");

    // The Secret without the key.
    secrets
        .create(&PostParams::default(), &token_secret(&[("other", TOKEN)]))
        .await?;
    let c = reconcile(&client, &ctx, &ns, "sealed").await?;
    is(&c, UNSEAL_CONFIGURATION_READY, "False", "TokenSecretKeyMissing")?;
    anyhow::ensure!(
        statefulsets.get_opt("sealed").await?.is_none(),
        "pods created without their token"
    );

    // The token in place: pods get it by reference.
    secrets
        .patch(
            "transit-token",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"token": ByteString(TOKEN.as_bytes().to_vec())}})),
        )
        .await?;
    let c = reconcile(&client, &ctx, &ns, "sealed").await?;
    is(&c, UNSEAL_CONFIGURATION_READY, "True", "TransitConfigured")?;
    is(&c, conditions::SECURITY_RISK, "False", "SealKeyOutsideCluster")?;
    let sts = statefulsets
        .get("sealed")
        .await
        .context("StatefulSet once the token exists")?;
    let pod = sts.spec.context("spec")?.template.spec.context("pod spec")?;
    anyhow::ensure!(
        pod.volumes.iter().flatten().all(|v| v.name != "unseal"),
        "a seal key volume"
    );
    let env = pod.containers[0].env.clone().unwrap_or_default();
    let token_env = env
        .iter()
        .find(|e| e.name == paths::TRANSIT_TOKEN_ENV)
        .context("token env")?;
    let from = token_env
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .context("secretKeyRef")?;
    anyhow::ensure!(token_env.value.is_none() && from.name == "transit-token" && from.key == "token");
    let config = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get(&names::config_map("sealed"))
        .await?;
    let text = serde_json::to_string(&config)?;
    anyhow::ensure!(text.contains("seal \\\"transit\\\"") && !text.contains(TOKEN), "{text}");
    anyhow::ensure!(
        secrets.get_opt(&names::unseal_key_secret("sealed")).await?.is_none(),
        "a transit cluster got a seal key Secret"
    );

    // The static seal, for contrast: its key is a Secret here, which SecurityRisk says.
    clusters
        .create(
            &PostParams::default(),
            &manifest("keyed", serde_json::json!({"type": "static"}))?,
        )
        .await?;
    let c = reconcile(&client, &ctx, &ns, "keyed").await?;
    is(&c, UNSEAL_CONFIGURATION_READY, "True", "StaticSealKey")?;
    is(&c, conditions::SECURITY_RISK, "True", "StaticSealKeyInCluster")?;
    anyhow::ensure!(secrets.get_opt(&names::unseal_key_secret("keyed")).await?.is_some());
    Ok(())
}
