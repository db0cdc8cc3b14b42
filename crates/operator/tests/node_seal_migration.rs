//! A seal migration on a real single-node cluster: a 3-server Development cluster with secrets
//! written under the static seal moves to the transit seal of another OpenBao running in
//! another namespace, by changing `spec.unseal`. The operator (in-process, on the host) is
//! killed and started again at every step it records. Afterwards every secret is readable,
//! every server restarted with no static key anywhere unseals through transit, and the static
//! key Secret was there until the migration had succeeded. Needs the node (`make cluster-up`)
//! with the 2.7.2 image loaded; every namespace is Pod Security `restricted`.
//!
//! The transit OpenBao is the one of `node_transit.rs` (`node_common::transit`): a real `bao`
//! server in the test's second namespace, its transit key and seal token made by the test as a
//! platform team would (`testkit::transit`).

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, SealMigrationPhase, conditions, names};
use openbao_client::BaoClient;
use openbao_operator::context::Context;
use openbao_operator::controllers::cluster;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::openbao::TestTls;

mod node_common;
use node_common::transit::{TRANSIT_SERVICE, start_initialized};
use node_common::{
    PublicIp, cluster_admin, condition, create, host_operator_context, in_namespaces, learn_public_ip, retrying,
};

const CLUSTER: &str = "moving";
const KEY_NAME: &str = "moving-unseal";
const SECRETS: u32 = 25;
const AVAILABLE_TIMEOUT: Duration = Duration::from_secs(300);
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(900);

#[tokio::test]
async fn a_cluster_migrates_from_the_static_to_the_transit_seal_with_the_operator_killed_at_every_step() -> Result<()> {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    // The transit server runs in the second namespace, with the operator's identity (as in
    // node_transit.rs: a platform namespace).
    in_namespaces("bao-seal", async |client: &Client, ns: &str, op_ns: &str| {
        testkit::apiserver::install_gateway_api_crds(client).await?;
        migrate(client, ns, op_ns).await
    })
    .await
}

/// A controller on the host for the clusters of `ns`, stopped by sending on (or dropping) the
/// returned sender.
struct Controller {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Controller {
    fn start(ctx: Context) -> Self {
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(cluster::run(Arc::new(ctx), async move {
            let _ = stop_rx.await;
        }));
        Self { stop, task }
    }

    /// Kills it: the reconcile in flight is dropped wherever it is.
    async fn kill(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.abort();
        let _ = self.task.await;
        Ok(())
    }
}

fn cluster_manifest() -> serde_json::Value {
    json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster", "metadata": {"name": CLUSTER},
        "spec": {
            "version": "2.7.2", "profile": "Development", "replicas": 3, "storage": {"size": "256Mi"},
            "unseal": {"type": "static"},
            // The hermetic node has no AppArmor: a node limitation, stated where it is turned off.
            "workloadHardening": {"appArmorEnabled": false},
            "selfInit": {
                "oidc": {"adminServiceAccount": {"name": "bao-admin"}},
                "requests": [{"name": "kv", "operation": "update", "path": "sys/mounts/secret",
                              "data": {"type": "kv", "options": {"version": "2"}}}],
            },
        }
    })
}

/// Waits until `name` is Available with every replica and not Degraded, keeping `public_ip`
/// pointed at its public Service.
async fn wait_available(client: &Client, ns: &str, name: &str, public_ip: &PublicIp) -> Result<OpenBaoCluster> {
    let started = Instant::now();
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    loop {
        learn_public_ip(client, ns, name, public_ip).await?;
        let c = clusters.get(name).await?;
        let ready = condition(&c, conditions::AVAILABLE).is_some_and(|(s, r)| s == "True" && r == "AllReplicasReady");
        let healthy = condition(&c, conditions::DEGRADED).is_some_and(|(s, _)| s == "False");
        if ready && healthy && c.status.as_ref().is_some_and(|s| s.initialized) {
            return Ok(c);
        }
        if started.elapsed() > AVAILABLE_TIMEOUT {
            bail!("{ns}/{name} not Available after {AVAILABLE_TIMEOUT:?}: {:#?}", c.status);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn check_secrets(admin: &BaoClient) -> Result<()> {
    for i in 0..SECRETS {
        let v = admin
            .read(&format!("secret/data/s{i}"))
            .await?
            .with_context(|| format!("secret s{i} is gone"))?;
        ensure!(v["data"]["data"]["n"] == json!(i), "s{i}: {v}");
    }
    Ok(())
}

/// The transit OpenBao in `transit_ns`, its key and a token that may only encrypt and decrypt
/// with it, stored with the transit server's CA in Secrets of `ns`; returns its address.
async fn transit_server(client: &Client, ns: &str, transit_ns: &str) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let tls = TestTls::generate(dir.path(), transit_ns)?;
    let (transit, _, root) = start_initialized(client, transit_ns, &tls).await?;
    let seal_token = testkit::transit::provision(&transit.with_token(root), KEY_NAME).await?;
    for (name, key, value) in [
        ("transit-token", "token", seal_token.as_str()),
        ("transit-ca", "ca.crt", tls.ca_pem()),
    ] {
        create::<Secret>(
            client,
            ns,
            json!({"metadata": {"name": name}, "stringData": {key: value}}),
        )
        .await?;
    }
    Ok(format!("https://{TRANSIT_SERVICE}.{transit_ns}.svc:8200"))
}

async fn migrate(client: &Client, ns: &str, op_ns: &str) -> Result<()> {
    create::<ServiceAccount>(client, op_ns, json!({"metadata": {"name": "openbao-operator"}})).await?;
    create::<ServiceAccount>(client, ns, json!({"metadata": {"name": "bao-admin"}})).await?;
    let transit_address = transit_server(client, ns, op_ns).await?;
    migrate_with_transit(client, ns, op_ns, &transit_address).await
}

async fn migrate_with_transit(client: &Client, ns: &str, op_ns: &str, transit_address: &str) -> Result<()> {
    let (ctx, public_ip) = host_operator_context(client, ns, op_ns).await;
    let mut controller = Controller::start(ctx);
    create::<OpenBaoCluster>(client, ns, cluster_manifest()).await?;
    wait_available(client, ns, CLUSTER, &public_ip).await?;
    let bao = cluster_admin(client, ns, CLUSTER, &public_ip).await?;
    // Autopilot makes joined servers voters shortly after they are ready; the migration
    // starts only with three voters.
    let voters_wait = Instant::now();
    while bao.raft_configuration().await?.voters().count() != 3 {
        ensure!(voters_wait.elapsed() < Duration::from_secs(60), "3 voters");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for i in 0..SECRETS {
        bao.write(&format!("secret/data/s{i}"), &json!({"data": {"n": i}}))
            .await?;
    }
    let seal = bao.seal_status().await?;
    ensure!(seal.seal_type == "static", "{seal:?}");

    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    let static_key = names::unseal_key_secret(CLUSTER);
    ensure!(secrets.get_opt(&static_key).await?.is_some());
    let started = Instant::now();
    clusters
        .patch(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unseal": {"type": "transit", "transit": {
                "address": transit_address,
                "keyName": KEY_NAME,
                "caSecretRef": {"name": "transit-ca", "key": "ca.crt"},
                "tokenSecretRef": {"name": "transit-token", "key": "token"},
            }}}})),
        )
        .await
        .context("spec.unseal static -> transit")?;

    // Every step the operator records kills it; a new one carries on from status.
    let mut seen: Vec<String> = Vec::new();
    let mut kills = 0;
    let mut migrated = false;
    loop {
        // The Secret first: a status read after it shows at least where the migration stood
        // when the Secret was seen.
        let key_present = secrets.get_opt(&static_key).await?.is_some();
        let c = clusters.get(CLUSTER).await?;
        let status = c.status.clone().unwrap_or_default();
        let m = status.seal_migration.clone().unwrap_or_default();
        let step = format!("{:?} [{}]", m.phase, m.completed.join(","));
        if seen.last() != Some(&step) {
            eprintln!(
                "{:>6.1}s seal migration {step}: {} (static key Secret present: {key_present})",
                started.elapsed().as_secs_f64(),
                m.message.clone().unwrap_or_default()
            );
            if let Some(e) = &m.last_error {
                eprintln!("        last error {}: {}", e.reason, e.message);
            }
            if !seen.is_empty() {
                controller.kill().await?;
                kills += 1;
                let (ctx, ip) = host_operator_context(client, ns, op_ns).await;
                *ip.lock().unwrap() = *public_ip.lock().unwrap();
                controller = Controller::start(ctx);
            }
            seen.push(step.clone());
        }
        ensure!(m.aborted_to.is_none(), "the migration was given up: {:?}", m.last_error);
        let done = m.phase == SealMigrationPhase::Idle
            && m.from.is_none()
            && m.started_at.is_none()
            && m.message.as_deref().is_some_and(|t| t.starts_with("migrated"));
        if done && !key_present {
            migrated = true;
        }
        // The static key goes only after every server runs the transit seal alone: the step
        // that removes it records Idle right after, so it may be seen gone with every server
        // of Finalize completed, never earlier.
        let all_final = m.phase == SealMigrationPhase::Finalize && m.completed.len() == 3;
        ensure!(
            key_present || done || all_final,
            "the static key Secret was removed before the migration succeeded ({step})"
        );
        if migrated {
            break;
        }
        if started.elapsed() > MIGRATION_TIMEOUT {
            bail!(
                "no end after {MIGRATION_TIMEOUT:?}: {:#?}\nseen: {seen:?}",
                status.seal_migration
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wall = started.elapsed();
    eprintln!(
        "TIMING seal migration static -> transit on the node: {} ms, {kills} operator kills, steps seen: {seen:?}",
        wall.as_millis()
    );
    for phase in ["Standbys", "StepDown", "Finalize"] {
        ensure!(
            seen.iter().any(|s| s.starts_with(phase)),
            "phase {phase} never seen: {seen:?}"
        );
    }

    // Every secret readable; the servers on transit; the recovery key kept, never in status.
    let bao = retrying("admin login after the migration", || {
        cluster_admin(client, ns, CLUSTER, &public_ip)
    })
    .await?;
    check_secrets(&bao).await?;
    let seal = bao.seal_status().await?;
    ensure!(
        seal.seal_type == "transit" && !seal.sealed && !seal.migration,
        "{seal:?}"
    );
    let recovery = secrets
        .get(&names::recovery_key_secret(CLUSTER))
        .await?
        .data
        .context("recovery key data")?;
    let key = String::from_utf8(recovery["key"].0.clone())?;
    let c = clusters.get(CLUSTER).await?;
    ensure!(
        !serde_json::to_string(&c.status)?.contains(&key),
        "the recovery key is in status"
    );
    let (s, r) = condition(&c, conditions::SEAL_MIGRATION).context("SealMigration condition")?;
    ensure!((s.as_str(), r.as_str()) == ("False", "Idle"), "{s} {r}");
    // The next reconcile puts back the settled StatefulSet: RollingUpdate, no static key volume.
    let settled = Instant::now();
    let statefulsets = Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(client.clone(), ns);
    loop {
        let spec = statefulsets.get(CLUSTER).await?.spec.context("sts spec")?;
        let rolling = spec.update_strategy.as_ref().and_then(|u| u.type_.as_deref()) == Some("RollingUpdate");
        let volumes: Vec<String> = spec
            .template
            .spec
            .map(|p| p.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect())
            .unwrap_or_default();
        if rolling && !volumes.contains(&"unseal".to_string()) {
            break;
        }
        if settled.elapsed() > Duration::from_secs(60) {
            bail!("the StatefulSet is not settled 60 s after the migration: rolling {rolling}, volumes {volumes:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "StatefulSet settled (RollingUpdate, no static key volume) {:.1?} after Idle",
        settled.elapsed()
    );

    // Every server stopped and started again: they unseal through transit, no static key
    // anywhere.
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let selector = format!("{}={CLUSTER}", openbao_render::labels::CLUSTER_LABEL);
    let before: Vec<String> = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    pods.delete_collection(&DeleteParams::default(), &ListParams::default().labels(&selector))
        .await?;
    let restart = Instant::now();
    loop {
        let listed = pods.list(&ListParams::default().labels(&selector)).await?.items;
        let fresh = listed.len() == 3 && listed.iter().all(|p| p.uid().is_some_and(|u| !before.contains(&u)));
        // What the new servers say of themselves (service registration), not a status that may
        // still describe the servers before the restart.
        let label = |p: &Pod, k: &str| p.labels().get(k).cloned().unwrap_or_default();
        let serving = listed.iter().all(|p| label(p, "openbao-sealed") == "false")
            && listed.iter().filter(|p| label(p, "openbao-active") == "true").count() == 1;
        let c = clusters.get(CLUSTER).await?;
        let ready = condition(&c, conditions::AVAILABLE).is_some_and(|(s, r)| s == "True" && r == "AllReplicasReady");
        if fresh && serving && ready {
            break;
        }
        ensure!(
            restart.elapsed() < AVAILABLE_TIMEOUT,
            "servers not back unsealed through transit: {:#?}",
            c.status
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    ensure!(secrets.get_opt(&static_key).await?.is_none());
    let bao = retrying("admin login after the restart", || {
        cluster_admin(client, ns, CLUSTER, &public_ip)
    })
    .await?;
    // A standby may answer 500 until it has heard from the new leader: retried, and a secret
    // really gone still fails once the retries end.
    retrying("every secret after the restart", || check_secrets(&bao)).await?;
    let seal = bao.seal_status().await?;
    ensure!(seal.seal_type == "transit" && !seal.sealed, "{seal:?}");
    eprintln!(
        "every server restarted unsealed through transit in {} ms",
        restart.elapsed().as_millis()
    );
    controller.kill().await
}
