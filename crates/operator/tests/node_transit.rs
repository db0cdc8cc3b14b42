//! `spec.unseal.type: transit` end to end on the real node. A transit OpenBao runs in another
//! namespace (a real `bao` server: raft storage on its own PVC, its own static seal, so it
//! comes back unsealed after it was down; its transit engine, key and seal token made by the
//! test as a platform team would). A 3-server cluster points at it and authenticates with
//! `login`: no token is stored anywhere; each server logs in with its own service-account token
//! (projected for the cluster's transit audience) to a `jwt` auth method of the transit server
//! that trusts the apiserver's signing keys for one role bound to that audience and subject.
//! (`tokenSecretRef` is what `node_seal_migration.rs` runs on the node.) And:
//! - it initializes and becomes `Available` with no seal key Secret anywhere, and
//!   `UnsealConfigurationReady` names the login, its audience and subject;
//! - `spec.unseal.recoveryKey` puts a recovery key in the Secret it names (self-init makes
//!   none), and that key really is one: a root token is generated with it and works;
//! - all three pods deleted come back unsealed by themselves;
//! - with the transit server down, restarted pods stay sealed and `Available` says why
//!   (`SealUnavailable`, with OpenBao's own line from the pod's termination message);
//! - once the transit server is back, the pods unseal by themselves (the kubelet restarts the
//!   servers that exited) and the cluster is `Available` again.

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, conditions};
use openbao_render::labels;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Instant;

mod node_common;
use node_common::transit::{LIMIT, LOGIN_MOUNT, LOGIN_ROLE, POLL, TRANSIT_APP, transit_with_login, wait_for};
use node_common::{HostOperator, PublicIp, cluster_admin, condition, create, in_namespaces, learn_public_ip};

const CLUSTER: &str = "sealed";
const RECOVERY_SECRET: &str = "sealed-break-glass";

#[tokio::test]
async fn a_transit_sealed_cluster_unseals_by_itself_and_says_why_when_it_cannot() -> Result<()> {
    in_namespaces("bao-transit", transit_cluster).await
}

async fn transit_cluster(client: &Client, ns: &str, transit_ns: &str) -> Result<()> {
    // The transit server runs in the second namespace of the test (the operator's identity
    // lives there too, as it would in a platform namespace).
    let transit = transit_with_login(client, ns, transit_ns, CLUSTER).await?;
    let (login, seal_token) = (&transit.login, &transit.seal_token);
    let mut unseal = transit.unseal.clone();
    unseal["recoveryKey"] = json!({"secretName": RECOVERY_SECRET});
    create::<ServiceAccount>(client, ns, json!({"metadata": {"name": "bao-admin"}})).await?;
    let (operator, public_ip) = HostOperator::start(client, ns, transit_ns).await?;

    create::<OpenBaoCluster>(
        client,
        ns,
        json!({
            "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster", "metadata": {"name": CLUSTER},
            "spec": {
                "version": "2.7.2", "profile": "Development", "replicas": 3, "storage": {"size": "256Mi"},
                // The hermetic node has no AppArmor: a node limitation, stated where it is turned off.
                "workloadHardening": {"appArmorEnabled": false},
                "unseal": unseal,
                "selfInit": {"oidc": {"adminServiceAccount": {"name": "bao-admin"}}},
            },
        }),
    )
    .await?;
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    let started = Instant::now();
    wait_for("the cluster Available", || async {
        learn_public_ip(client, ns, CLUSTER, &public_ip).await?;
        all_ready(&clusters.get(CLUSTER).await?)
    })
    .await?;
    eprintln!(
        "CR applied -> Available under the transit seal: {:.1?}",
        started.elapsed()
    );
    let status = clusters.get(CLUSTER).await?.status.context("status")?;
    ensure!(status.initialized, "{status:?}");
    let unseal = conditions::find(&status.conditions, openbao_api::UNSEAL_CONFIGURATION_READY)
        .context("no UnsealConfigurationReady")?;
    ensure!(
        unseal.reason == "TransitConfigured"
            && unseal.message.contains(&login.audience)
            && unseal.message.contains(&login.subject),
        "{unseal:?}"
    );
    for namespace in [ns, transit_ns] {
        for s in Api::<Secret>::namespaced(client.clone(), namespace)
            .list(&Default::default())
            .await?
            .items
        {
            ensure!(
                !s.name_any().ends_with("-unseal-key"),
                "a seal key Secret exists: {namespace}/{}",
                s.name_any()
            );
        }
    }

    recovery_key_generates_a_root_token(client, ns, &public_ip).await?;

    // 1. Every pod restarted comes back unsealed by itself.
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let restarted = Instant::now();
    let old = delete_cluster_pods(&pods).await?;
    wait_for("every pod replaced, the cluster Available", || async {
        let now = cluster_pod_uids(&pods).await?;
        Ok(now.len() == 3 && now.is_disjoint(&old) && all_ready(&clusters.get(CLUSTER).await?)?)
    })
    .await?;
    eprintln!(
        "all pods deleted -> back unsealed and Available: {:.1?}",
        restarted.elapsed()
    );

    // 2. The transit server down: restarted pods stay sealed, and the condition says why.
    let deployments = Api::<Deployment>::namespaced(client.clone(), transit_ns);
    scale(&deployments, 0).await?;
    let transit_pods = Api::<Pod>::namespaced(client.clone(), transit_ns);
    wait_for("the transit server gone", || async {
        Ok(transit_pods
            .list(&ListParams::default().labels(&format!("app={TRANSIT_APP}")))
            .await?
            .items
            .is_empty())
    })
    .await?;
    let down = Instant::now();
    let old = delete_cluster_pods(&pods).await?;
    let said = loop {
        let c = clusters.get(CLUSTER).await?;
        let available = c
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, conditions::AVAILABLE));
        if let Some(a) = available.filter(|a| a.reason == "SealUnavailable") {
            ensure!(a.status == "False", "{a:?}");
            break a.message.clone();
        }
        if down.elapsed() > LIMIT {
            bail!("no SealUnavailable after {LIMIT:?}: {:#?}", c.status);
        }
        tokio::time::sleep(POLL).await;
    };
    eprintln!("transit down, pods restarted -> {said:?} after {:.1?}", down.elapsed());
    // The login is the first thing a server does, so that is what fails.
    ensure!(
        said.contains(&format!(
            "Error configuring seal \"transit\": login at auth/{LOGIN_MOUNT}/login as role {LOGIN_ROLE} failed"
        )),
        "{said}"
    );
    ensure!(!said.contains(seal_token.as_str()), "the seal token reached the status");
    // The condition can name the first restarted pod while another old one is still terminating.
    wait_for("every pod replaced while the transit server is down", || async {
        let now = cluster_pod_uids(&pods).await?;
        Ok(now.len() == 3 && now.is_disjoint(&old))
    })
    .await?;
    for pod in pods.list(&cluster_pods()).await?.items {
        if old.contains(&pod.uid().unwrap_or_default()) {
            continue; // still terminating
        }
        let sealed = pod.labels().get("openbao-sealed").map(String::as_str);
        ensure!(
            sealed != Some("false"),
            "{} unsealed without its transit server",
            pod.name_any()
        );
    }

    // 3. The transit server back: the pods unseal by themselves.
    let back = Instant::now();
    scale(&deployments, 1).await?;
    wait_for("the cluster Available again", || async {
        all_ready(&clusters.get(CLUSTER).await?)
    })
    .await?;
    eprintln!("transit back -> Available again after {:.1?}", back.elapsed());

    operator.stop().await?;
    Ok(())
}

/// `spec.unseal.recoveryKey`: `RecoveryKeyReady` names the Secret, which holds a key that
/// OpenBao accepts as its recovery key: `sys/generate-root-token` (OpenBao 2.x's name for `sys/generate-root`) with it gives a root token.
async fn recovery_key_generates_a_root_token(client: &Client, ns: &str, public_ip: &PublicIp) -> Result<()> {
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    let started = Instant::now();
    wait_for("RecoveryKeyReady", || async {
        Ok(clusters
            .get(CLUSTER)
            .await?
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, openbao_api::RECOVERY_KEY_READY))
            .is_some_and(|c| c.status == "True" && c.message.contains(RECOVERY_SECRET)))
    })
    .await?;
    eprintln!("RecoveryKeyReady after {:.1?}", started.elapsed());
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let stored = secrets.get(RECOVERY_SECRET).await?;
    ensure!(
        stored.labels().get(labels::CLUSTER_LABEL).map(String::as_str) == Some(CLUSTER),
        "{:?}",
        stored.metadata.labels
    );
    let key = String::from_utf8(stored.data.context("no data")?["key"].0.clone())?;
    let status = serde_json::to_string(&clusters.get(CLUSTER).await?.status)?;
    ensure!(!status.contains(&key), "the recovery key is in the status");

    // OpenBao 2.x serves generate-root only to an authenticated caller: the cluster's admin.
    let bao = cluster_admin(client, ns, CLUSTER, public_ip).await?;
    let attempt = bao
        .write("sys/generate-root-token/attempt", &json!({}))
        .await?
        .context("no attempt")?;
    let (nonce, otp) = (
        attempt["data"]["nonce"].as_str().context("nonce")?,
        attempt["data"]["otp"].as_str().context("otp")?,
    );
    let done = bao
        .write("sys/generate-root-token/update", &json!({"key": key, "nonce": nonce}))
        .await?
        .context("no update answer")?;
    ensure!(done["data"]["complete"] == json!(true), "{done}");
    let encoded = done["data"]["encoded_token"].as_str().context("encoded_token")?;
    use base64::Engine as _;
    let xored = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .context("encoded_token is not base64")?;
    ensure!(xored.len() == otp.len(), "encoded token and OTP differ in length");
    let token: String = xored.iter().zip(otp.bytes()).map(|(a, b)| char::from(a ^ b)).collect();
    let root = bao.with_token(openbao_client::Token::new(token));
    let me = root.read("auth/token/lookup-self").await?.context("lookup-self")?;
    ensure!(me["data"]["policies"] == json!(["root"]), "{me}");
    root.write("auth/token/revoke-self", &json!({})).await?;
    eprintln!("a root token was generated with the stored recovery key, then revoked");
    Ok(())
}

fn all_ready(c: &OpenBaoCluster) -> Result<bool> {
    Ok(
        condition(c, conditions::AVAILABLE).is_some_and(|(s, r)| s == "True" && r == "AllReplicasReady")
            && condition(c, conditions::OPENBAO_SEALED).is_some_and(|(s, _)| s == "False")
            && c.status
                .as_ref()
                .is_some_and(|s| s.initialized && s.ready_replicas == 3),
    )
}

fn cluster_pods() -> ListParams {
    ListParams::default().labels(&format!("{}={CLUSTER}", labels::CLUSTER_LABEL))
}

async fn cluster_pod_uids(pods: &Api<Pod>) -> Result<BTreeSet<String>> {
    Ok(pods
        .list(&cluster_pods())
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.uid())
        .collect())
}

/// Deletes every server pod of the cluster; returns the uids they had.
async fn delete_cluster_pods(pods: &Api<Pod>) -> Result<BTreeSet<String>> {
    let uids = cluster_pod_uids(pods).await?;
    ensure!(uids.len() == 3, "expected 3 server pods, found {}", uids.len());
    pods.delete_collection(&DeleteParams::default(), &cluster_pods())
        .await?;
    Ok(uids)
}

async fn scale(deployments: &Api<Deployment>, replicas: i32) -> Result<()> {
    let patch = json!({"spec": {"replicas": replicas}});
    deployments
        .patch(TRANSIT_APP, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}
