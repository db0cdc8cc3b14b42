//! `spec.unseal.type: transit` through the controller on a real kube-apiserver (no kubelet):
//! no seal key Secret ever exists, the token reaches the pods only by reference, a missing
//! token Secret or key is a condition with a reason (no pods are created, no error loop), and
//! `SecurityRisk` follows where the seal key lives.

mod apiserver_common;

use anyhow::{Context as _, Result};
use apiserver_common::{client_with_crds, context};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use openbao_api::{OpenBaoCluster, UNSEAL_CONFIGURATION_READY, conditions, names};
use openbao_operator::context::Context;
use openbao_operator::controllers::cluster;
use openbao_render::paths;
use std::collections::BTreeMap;
use std::sync::Arc;
use testkit::apiserver::{ApiServer, create_namespace};

const TOKEN: &str = "s.transit-token-that-must-stay-in-its-secret";

async fn setup() -> Result<(Client, Arc<Context>)> {
    let client = client_with_crds(ApiServer::shared().await?).await?;
    let ctx = Arc::new(context(&client).await);
    Ok((client, ctx))
}

fn manifest(name: &str, unseal: serde_json::Value) -> Result<OpenBaoCluster> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster",
        "metadata": {"name": name},
        "spec": {"version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"}, "unseal": unseal,
                 // A KMIP or KMS server is outside the cluster: such a seal needs an egress rule.
                 "network": {"egressRules": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]}},
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

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    let mut s = token_secret(data);
    s.metadata.name = Some(name.into());
    s
}

/// The `UnsealConfigurationReady` message of `name` (it must name Secrets, never values).
async fn seal_message(client: &Client, ns: &str, name: &str) -> Result<String> {
    let status = Api::<OpenBaoCluster>::namespaced(client.clone(), ns)
        .get(name)
        .await?
        .status
        .context("status")?;
    status
        .conditions
        .into_iter()
        .find(|c| c.type_ == UNSEAL_CONFIGURATION_READY)
        .map(|c| c.message)
        .context("no UnsealConfigurationReady")
}

const CLIENT_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----kmip-client-key-that-must-stay-in-its-secret";
const AWS_SECRET: &str = "aws-secret-access-key-that-must-stay-in-its-secret";

#[tokio::test]
async fn kmip_and_kms_clusters_wait_for_their_secrets_and_get_them_by_reference() -> Result<()> {
    let (client, ctx) = setup().await?;
    let ns = create_namespace(&client, "bao-kmip").await?;
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let kmip = serde_json::json!({"type": "kmip", "kmip": {
        "address": "kmip.hsm.svc:5696", "keyId": "1",
        "clientCertSecretRef": {"name": "kmip-client", "key": "tls.crt"},
        "clientKeySecretRef": {"name": "kmip-client", "key": "tls.key"},
        "caSecretRef": {"name": "kmip-ca", "key": "ca.crt"},
    }});
    clusters.create(&PostParams::default(), &manifest("hsm", kmip)?).await?;

    // Nothing there: the first Secret the seal needs is named, no pods.
    let c = reconcile(&client, &ctx, &ns, "hsm").await?;
    is(&c, UNSEAL_CONFIGURATION_READY, "False", "ClientCertSecretMissing")?;
    is(&c, conditions::SECURITY_RISK, "False", "SealKeyOutsideCluster")?;
    let message = seal_message(&client, &ns, "hsm").await?;
    anyhow::ensure!(
        message.contains("Secret kmip-client") && message.contains("spec.unseal.kmip.clientCertSecretRef"),
        "{message}"
    );
    anyhow::ensure!(
        statefulsets.get_opt("hsm").await?.is_none(),
        "pods without their certificate"
    );

    // The certificate without its key, then the key without the CA.
    secrets
        .create(&PostParams::default(), &secret("kmip-client", &[("tls.crt", "CERT")]))
        .await?;
    let c = reconcile(&client, &ctx, &ns, "hsm").await?;
    is(&c, UNSEAL_CONFIGURATION_READY, "False", "ClientKeySecretKeyMissing")?;
    secrets
        .patch(
            "kmip-client",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"tls.key": ByteString(CLIENT_KEY_PEM.as_bytes().to_vec())}})),
        )
        .await?;
    let c = reconcile(&client, &ctx, &ns, "hsm").await?;
    is(&c, UNSEAL_CONFIGURATION_READY, "False", "CASecretMissing")?;
    let message = seal_message(&client, &ns, "hsm").await?;
    anyhow::ensure!(
        message.contains("Secret kmip-ca")
            && message.contains("spec.unseal.kmip.caSecretRef")
            && !message.contains(CLIENT_KEY_PEM),
        "{message}"
    );
    secrets
        .create(&PostParams::default(), &secret("kmip-ca", &[("ca.crt", "CA")]))
        .await?;
    let c = reconcile(&client, &ctx, &ns, "hsm").await?;
    is(&c, UNSEAL_CONFIGURATION_READY, "True", "KmipConfigured")?;

    // The pods mount the three files from their Secrets; the config only names them.
    let pod = statefulsets
        .get("hsm")
        .await?
        .spec
        .context("spec")?
        .template
        .spec
        .context("pod")?;
    let volumes = pod.volumes.clone().unwrap_or_default();
    anyhow::ensure!(volumes.iter().all(|v| v.name != "unseal"), "a seal key volume");
    let kmip_volume = volumes.iter().find(|v| v.name == "kmip").context("kmip volume")?;
    let sources = kmip_volume
        .projected
        .as_ref()
        .and_then(|p| p.sources.clone())
        .unwrap_or_default();
    let files: Vec<(String, String, String)> = sources
        .iter()
        .filter_map(|s| s.secret.as_ref())
        .flat_map(|s| {
            s.items
                .iter()
                .flatten()
                .map(|i| (s.name.clone(), i.key.clone(), i.path.clone()))
        })
        .collect();
    anyhow::ensure!(
        files
            == [
                ("kmip-client".into(), "tls.crt".into(), "client.crt".into()),
                ("kmip-client".into(), "tls.key".into(), "client.key".into()),
                ("kmip-ca".into(), "ca.crt".into(), "ca.crt".into()),
            ],
        "{files:?}"
    );
    let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
    anyhow::ensure!(
        mounts
            .iter()
            .any(|m| m.name == "kmip" && m.mount_path == paths::KMIP_DIR && m.read_only == Some(true))
    );
    let config = serde_json::to_string(
        &Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get(&names::config_map("hsm"))
            .await?,
    )?;
    anyhow::ensure!(
        config.contains("seal \\\"kmip\\\"") && !config.contains(CLIENT_KEY_PEM),
        "{config}"
    );
    anyhow::ensure!(
        secrets.get_opt(&names::unseal_key_secret("hsm")).await?.is_none(),
        "a KMIP cluster got a seal key"
    );

    // A KMS plugin seal: its credentials Secret is waited for, then read into the environment.
    let kms = serde_json::json!({"type": "kms", "kms": {
        "wrapper": "awskms",
        "plugin": {"command": "openbao-plugin-kms-awskms", "sha256sum": "ab".repeat(32)},
        "settings": {"region": "eu-west-1", "kms_key_id": "alias/bao"},
        "credentialsEnv": [{"name": "AWS_SECRET_ACCESS_KEY", "secretKeyRef": {"name": "aws-creds", "key": "secret"}}],
    }});
    clusters
        .create(&PostParams::default(), &manifest("cloud", kms)?)
        .await?;
    let c = reconcile(&client, &ctx, &ns, "cloud").await?;
    is(&c, UNSEAL_CONFIGURATION_READY, "False", "CredentialsSecretMissing")?;
    let message = seal_message(&client, &ns, "cloud").await?;
    anyhow::ensure!(
        message.contains("Secret aws-creds") && message.contains("spec.unseal.kms.credentialsEnv[0].secretKeyRef"),
        "{message}"
    );
    anyhow::ensure!(
        statefulsets.get_opt("cloud").await?.is_none(),
        "pods without their credentials"
    );
    secrets
        .create(&PostParams::default(), &secret("aws-creds", &[("secret", AWS_SECRET)]))
        .await?;
    let c = reconcile(&client, &ctx, &ns, "cloud").await?;
    is(&c, UNSEAL_CONFIGURATION_READY, "True", "KmsPluginConfigured")?;
    is(&c, conditions::SECURITY_RISK, "False", "SealKeyOutsideCluster")?;
    let pod = statefulsets
        .get("cloud")
        .await?
        .spec
        .context("spec")?
        .template
        .spec
        .context("pod")?;
    let env = pod.containers[0].env.clone().unwrap_or_default();
    let aws = env
        .iter()
        .find(|e| e.name == "AWS_SECRET_ACCESS_KEY")
        .context("credentials env")?;
    let from = aws
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .context("secretKeyRef")?;
    anyhow::ensure!(aws.value.is_none() && from.name == "aws-creds" && from.key == "secret");
    let config = serde_json::to_string(
        &Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get(&names::config_map("cloud"))
            .await?,
    )?;
    anyhow::ensure!(
        config.contains("plugin \\\"kms\\\" \\\"awskms\\\"")
            && config.contains("seal \\\"awskms\\\"")
            && !config.contains(AWS_SECRET),
        "{config}"
    );
    Ok(())
}
