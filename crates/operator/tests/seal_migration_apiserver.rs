//! The seal migration through the cluster controller on a real kube-apiserver (no kubelet: pods
//! never start, and there is no OpenBao). What is checked is the Kubernetes half:
//!
//! - changing `spec.unseal.type` static -> transit on an initialized cluster starts the
//!   migration: `status.sealMigration` and the `SealMigration` condition say where it stands,
//!   and the servers' ConfigMap and StatefulSet are left on the static seal (rendering the
//!   transit seal alone would let pods restart into a seal that cannot unseal them);
//! - with the phase the driver records, the reconcile writes that phase's stage: the old seal
//!   disabled next to the new one with both seals' inputs mounted and the StatefulSet on
//!   `OnDelete`, then the new seal alone, then (migration done) the settled template;
//! - the controller task killed and started again between steps resumes from status;
//! - the platform's Kubernetes actions: each pod's stage read from its config hash, a pod
//!   deleted only once the observed template carries its stage, the recovery key kept in
//!   `<c>-recovery-key`, the static key Secret removed.
//!
//! Without OpenBao the driver's login fails: that is recorded (`lastError`) while the phase
//! stays put. The OpenBao half is proven on real servers in `seal_migration_processes.rs`, end
//! to end in `node_seal_migration.rs`.

mod apiserver_common;

use anyhow::{Context as _, Result, ensure};
use apiserver_common::{client_with_crds, context, wait_for};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use openbao_api::{OpenBaoCluster, OpenBaoClusterStatus, SealMigrationPhase, UnsealType, conditions, names};
use openbao_client::Token;
use openbao_operator::context::Context;
use openbao_operator::controllers::cluster;
use openbao_operator::controllers::cluster::seal_migration::{KubeSealPlatform, SealWorkloads};
use openbao_operator::flows::seal_migration::SealStage;
use openbao_operator::flows::seal_migration::driver::{RecoveryKey, SealPlatform};
use openbao_operator::runtime::metrics::Metrics;
use openbao_render::labels::{CLUSTER_LABEL, CONFIG_HASH_ANNOTATION};
use openbao_render::{Cluster, config, paths};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use testkit::apiserver::{ApiServer, create_namespace};

const NAME: &str = "moving";

async fn setup() -> Result<(Client, Arc<Context>)> {
    let client = client_with_crds(ApiServer::shared().await?).await?;
    let ctx = Arc::new(context(&client).await);
    Ok((client, ctx))
}

fn transit() -> serde_json::Value {
    json!({"type": "transit", "transit": {
        "address": "https://transit.vault.svc:8200",
        "keyName": "openbao-unseal",
        "tokenSecretRef": {"name": "transit-token", "key": "token"},
    }})
}

struct World {
    client: Client,
    ctx: Arc<Context>,
    ns: String,
}

/// The servers' objects as the reconcile left them.
struct Servers {
    server_hcl: String,
    config_data: std::collections::BTreeMap<String, String>,
    sts: StatefulSet,
}

impl Servers {
    fn strategy(&self) -> Option<String> {
        self.sts.spec.as_ref()?.update_strategy.as_ref()?.type_.clone()
    }

    fn template_hash(&self) -> Option<String> {
        self.sts
            .spec
            .as_ref()?
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(CONFIG_HASH_ANNOTATION)
            .cloned()
    }

    fn volumes(&self) -> Vec<String> {
        let pod = self.sts.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        pod.map(|p| p.volumes.iter().flatten().map(|v| v.name.clone()).collect())
            .unwrap_or_default()
    }

    fn env(&self) -> Vec<String> {
        let pod = self.sts.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        pod.map(|p| p.containers[0].env.iter().flatten().map(|e| e.name.clone()).collect())
            .unwrap_or_default()
    }

    fn config_hash(&self) -> String {
        config::config_hash(&self.config_data.values().map(String::as_str).collect::<Vec<_>>())
    }
}

impl World {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn cluster(&self) -> Result<OpenBaoCluster> {
        Ok(self.api::<OpenBaoCluster>().get(NAME).await?)
    }

    async fn status(&self) -> Result<OpenBaoClusterStatus> {
        Ok(self.cluster().await?.status.unwrap_or_default())
    }

    async fn patch_status(&self, status: serde_json::Value) -> Result<()> {
        self.api::<OpenBaoCluster>()
            .patch_status(NAME, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
            .await?;
        Ok(())
    }

    async fn reconcile(&self) -> Result<OpenBaoClusterStatus> {
        // Boxed: the reconcile's future is large for a test thread's stack.
        Box::pin(cluster::reconcile(Arc::new(self.cluster().await?), self.ctx.clone())).await?;
        self.status().await
    }

    async fn servers(&self) -> Result<Servers> {
        let cm = self.api::<ConfigMap>().get(&names::config_map(NAME)).await?;
        let config_data = cm.data.context("config data")?;
        Ok(Servers {
            server_hcl: config_data[config::SERVER_FILE].clone(),
            config_data,
            sts: self.api::<StatefulSet>().get(&names::statefulset(NAME)).await?,
        })
    }

    /// A controller task scoped to this namespace, stopped (killed) by dropping the sender.
    async fn start_controller(&self) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut scoped = Context::new(self.client.clone(), self.ctx.operator.clone(), Metrics::default()).await;
        scoped.watch_namespace = Some(self.ns.clone());
        let task = tokio::spawn(cluster::run(Arc::new(scoped), async move {
            let _ = stop_rx.await;
        }));
        (stop_tx, task)
    }

    fn condition(status: &OpenBaoClusterStatus) -> Option<(String, String, String)> {
        conditions::find(&status.conditions, conditions::SEAL_MIGRATION)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    }
}

/// The migration stage: the static seal disabled next to the transit seal.
fn is_migration_stage(hcl: &str) -> bool {
    hcl.contains("seal \"static\" {\n  disabled = \"true\"\n") && hcl.contains("seal \"transit\" {")
}

fn is_static_only(hcl: &str) -> bool {
    hcl.contains("seal \"static\" {\n  current_key_id") && !hcl.contains("transit") && !hcl.contains("disabled")
}

fn is_transit_only(hcl: &str) -> bool {
    hcl.contains("seal \"transit\" {") && !hcl.contains("seal \"static\"")
}

fn pod(name: &str, hash: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {CLUSTER_LABEL: NAME}, "annotations": {CONFIG_HASH_ANNOTATION: hash}},
        "spec": {"serviceAccountName": names::service_account(NAME), "automountServiceAccountToken": false,
                 "containers": [{"name": "openbao", "image": "openbao/openbao:2.7.2"}]},
    }))?)
}

#[tokio::test]
async fn changing_the_seal_starts_a_migration_whose_phases_write_their_stage_and_survive_a_restart() -> Result<()> {
    let (client, ctx) = setup().await?;
    let ns = create_namespace(&client, "bao-seal-migration").await?;
    let w = World { client, ctx, ns };
    let manifest: OpenBaoCluster = serde_json::from_value(json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster",
        "metadata": {"name": NAME},
        "spec": {"version": "2.7.2", "profile": "Development", "replicas": 3, "storage": {"size": "1Gi"},
                 "unseal": {"type": "static"}},
    }))?;
    w.api::<OpenBaoCluster>()
        .create(&PostParams::default(), &manifest)
        .await?;
    w.reconcile().await?;
    w.patch_status(json!({"initialized": true, "currentVersion": "2.7.2"}))
        .await?;
    let status = w.reconcile().await?;
    ensure!(status.seal_migration.is_none(), "{:?}", status.seal_migration);
    let settled = w.servers().await?;
    ensure!(is_static_only(&settled.server_hcl), "{}", settled.server_hcl);
    ensure!(settled.strategy().as_deref() == Some("RollingUpdate"));
    let static_key = names::unseal_key_secret(NAME);
    ensure!(w.api::<Secret>().get_opt(&static_key).await?.is_some());

    // static -> transit, its token Secret not there yet: the migration waits, with a reason,
    // and the servers stay on the static seal.
    w.api::<OpenBaoCluster>()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unseal": transit()}})),
        )
        .await
        .context("admission lets static -> transit through")?;
    let status = w.reconcile().await?;
    let m = status.seal_migration.clone().context("status.sealMigration")?;
    ensure!(m.phase == SealMigrationPhase::Idle, "{m:?}");
    let (cs, reason, message) = World::condition(&status).context("SealMigration condition")?;
    ensure!(
        (cs.as_str(), reason.as_str()) == ("False", "WaitingForUnsealConfiguration"),
        "{cs} {reason}: {message}"
    );
    let frozen = w.servers().await?;
    ensure!(frozen.server_hcl == settled.server_hcl, "{}", frozen.server_hcl);
    ensure!(
        frozen.sts.spec == settled.sts.spec,
        "the StatefulSet changed before the migration started"
    );

    // With the token: the driver runs; without OpenBao its login fails, which is recorded.
    let token = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("transit-token".into()),
            ..Default::default()
        },
        data: Some([("token".to_string(), ByteString(b"s.transit".to_vec()))].into()),
        ..Default::default()
    };
    w.api::<Secret>().create(&PostParams::default(), &token).await?;
    let status = w.reconcile().await?;
    let (cs, reason, message) = World::condition(&status).context("SealMigration condition")?;
    ensure!(
        (cs.as_str(), reason.as_str()) == ("False", "LoginFailed"),
        "{cs} {reason}: {message}"
    );
    ensure!(message.contains("logging in for the seal migration"), "{message}");
    let frozen = w.servers().await?;
    ensure!(is_static_only(&frozen.server_hcl), "{}", frozen.server_hcl);
    ensure!(frozen.sts.spec == settled.sts.spec);
    ensure!(w.api::<Secret>().get_opt(&static_key).await?.is_some());

    // The driver recorded the start and the recovery key (as in seal_migration_processes.rs);
    // the standbys migrate: the migration stage, OnDelete, both seals' inputs.
    let started = jiff::Timestamp::now().to_string();
    w.patch_status(json!({"sealMigration": {
        "phase": "Standbys", "from": "static", "to": "transit", "startedAt": started,
        "phaseStartedAt": started, "leader": "moving-0", "failures": 0, "lastError": null,
        "message": "recovery key held; migrating the standbys",
    }}))
    .await?;
    let status = w.reconcile().await?;
    let m = status.seal_migration.clone().context("status.sealMigration")?;
    ensure!(m.phase == SealMigrationPhase::Standbys, "{m:?}");
    let (cs, reason, _) = World::condition(&status).context("condition")?;
    ensure!((cs.as_str(), reason.as_str()) == ("True", "Standbys"), "{cs} {reason}");
    let migrating = w.servers().await?;
    ensure!(is_migration_stage(&migrating.server_hcl), "{}", migrating.server_hcl);
    ensure!(migrating.strategy().as_deref() == Some("OnDelete"));
    ensure!(
        migrating.template_hash() == Some(migrating.config_hash()),
        "the template names its config"
    );
    ensure!(
        migrating.volumes().contains(&"unseal".to_string()),
        "the static key stays mounted: {:?}",
        migrating.volumes()
    );
    ensure!(migrating.env().contains(&paths::TRANSIT_TOKEN_ENV.to_string()));
    ensure!(w.api::<Secret>().get_opt(&static_key).await?.is_some());

    // The platform's Kubernetes half, on pods made by hand: one still on the old config, one
    // on the migration stage.
    let obj = w.cluster().await?;
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let c = Cluster {
        name: NAME,
        namespace: &w.ns,
        uid: &uid,
        spec: &obj.spec,
    };
    let old_hash = settled.template_hash().context("old hash")?;
    let migration_hash = migrating.template_hash().context("migration hash")?;
    for (name, hash) in [
        ("moving-0", &old_hash),
        ("moving-1", &migration_hash),
        ("moving-2", &old_hash),
    ] {
        w.api::<Pod>().create(&PostParams::default(), &pod(name, hash)?).await?;
    }
    let status = w.status().await?;
    let workloads = SealWorkloads::read(&w.client, &c, &status).await?;
    let m = status.seal_migration.clone().unwrap_or_default();
    let platform = KubeSealPlatform::new(&w.ctx, &c, &workloads, String::new(), Token::new("unused"), &m);
    let stages: Vec<(String, SealStage)> = platform.nodes().await?.into_iter().map(|n| (n.id, n.stage)).collect();
    ensure!(
        stages
            == [
                ("moving-0".to_string(), SealStage::Old),
                ("moving-1".to_string(), SealStage::Migration),
                ("moving-2".to_string(), SealStage::Old),
            ],
        "{stages:?}"
    );
    // No StatefulSet controller here: the template was not observed yet, so no pod goes.
    ensure!(platform.restart_node("moving-2", SealStage::Migration).await.is_err());
    ensure!(w.api::<Pod>().get_opt("moving-2").await?.is_some());
    let generation = migrating.sts.metadata.generation.unwrap_or_default();
    w.api::<StatefulSet>()
        .patch_status(
            &names::statefulset(NAME),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 3, "observedGeneration": generation}})),
        )
        .await?;
    platform.restart_node("moving-1", SealStage::Migration).await?;
    ensure!(
        w.api::<Pod>().get_opt("moving-1").await?.is_some(),
        "a pod already on the stage is left alone"
    );
    platform.restart_node("moving-2", SealStage::Migration).await?;
    let gone = w.api::<Pod>().get_opt("moving-2").await?;
    ensure!(
        gone.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "moving-2 deleted for its restart"
    );
    // The recovery key: kept in its Secret, read back.
    ensure!(platform.recovery_key().await?.is_none());
    let key = RecoveryKey {
        key: "cmVjb3Zlcnkta2V5LWZvci10aGUtdGVzdA==".into(),
        verification_nonce: "nonce".into(),
    };
    platform.store_recovery_key(&key).await?;
    ensure!(platform.recovery_key().await? == Some(key.clone()));
    let stored = w.api::<Secret>().get(&names::recovery_key_secret(NAME)).await?;
    ensure!(stored.metadata.owner_references.is_none(), "outlives the cluster");
    let status = w.status().await?;
    let printed = serde_json::to_string(&status)?;
    ensure!(!printed.contains(&key.key), "the recovery key is in status");

    // The operator killed between steps: a controller task runs on Standbys, is stopped, the
    // step it was doing is recorded (StepDown), a new task picks it up from status.
    let (stop, task) = w.start_controller().await;
    wait_for("the controller to reconcile", Duration::from_secs(30), || async {
        let s = w.status().await?;
        Ok(s.seal_migration.filter(|m| m.last_error.is_some()).map(drop))
    })
    .await?;
    drop(stop);
    task.await?;
    // Someone (or a crash halfway through a write) put the StatefulSet back on RollingUpdate.
    w.api::<StatefulSet>()
        .patch(
            &names::statefulset(NAME),
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": NAME},
                "spec": {"updateStrategy": {"type": "RollingUpdate"}},
            })),
        )
        .await?;
    w.patch_status(json!({"sealMigration": {"phase": "StepDown", "message": "every standby is in migration mode; stepping down moving-0"}}))
        .await?;
    let (stop, task) = w.start_controller().await;
    let resumed = wait_for(
        "the migration stage back, OnDelete",
        Duration::from_secs(30),
        || async {
            let s = w.servers().await?;
            Ok((s.strategy().as_deref() == Some("OnDelete")).then_some(s))
        },
    )
    .await?;
    ensure!(is_migration_stage(&resumed.server_hcl), "{}", resumed.server_hcl);
    ensure!(resumed.template_hash() == Some(migration_hash.clone()));
    let status = w.status().await?;
    ensure!(
        status.seal_migration.as_ref().map(|m| m.phase) == Some(SealMigrationPhase::StepDown),
        "resumed from status: {:?}",
        status.seal_migration
    );
    wait_for("SealMigration True StepDown", Duration::from_secs(30), || async {
        let s = w.status().await?;
        Ok(World::condition(&s).filter(|(cs, reason, _)| cs == "True" && reason == "StepDown"))
    })
    .await?;

    // Finalize: the new seal alone, still OnDelete, the static key volume no longer mounted.
    w.patch_status(json!({"sealMigration": {"phase": "Finalize", "message": "moving-1 migrated the seal to transit"}}))
        .await?;
    let finalizing = wait_for("the transit seal alone", Duration::from_secs(30), || async {
        let s = w.servers().await?;
        // The ConfigMap is written before the StatefulSet: both, and the template naming it.
        Ok((is_transit_only(&s.server_hcl) && s.template_hash() == Some(s.config_hash())).then_some(s))
    })
    .await?;
    ensure!(finalizing.strategy().as_deref() == Some("OnDelete"));
    ensure!(!finalizing.volumes().contains(&"unseal".to_string()));
    // Status is written after the objects: wait for the condition too.
    wait_for("SealMigration True Finalize", Duration::from_secs(30), || async {
        let s = w.status().await?;
        Ok(World::condition(&s).filter(|(cs, reason, _)| cs == "True" && reason == "Finalize"))
    })
    .await?;
    drop(stop);
    task.await?;

    // Done: the driver removed the static key and recorded Idle. The settled template is the
    // final stage's, only the strategy goes back: no server restarts again.
    let status = w.status().await?;
    let workloads = SealWorkloads::read(&w.client, &c, &status).await?;
    let m = status.seal_migration.clone().unwrap_or_default();
    let platform = KubeSealPlatform::new(&w.ctx, &c, &workloads, String::new(), Token::new("unused"), &m);
    platform.remove_old_seal(UnsealType::Static).await?;
    ensure!(w.api::<Secret>().get_opt(&static_key).await?.is_none());
    platform.remove_old_seal(UnsealType::Static).await?;
    w.api::<OpenBaoCluster>()
        .patch_status(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"sealMigration": null}})),
        )
        .await?;
    w.patch_status(json!({"sealMigration": {"phase": "Idle", "message": "migrated from the static seal to the transit seal in 60s"}}))
        .await?;
    let status = w.reconcile().await?;
    let settled_transit = w.servers().await?;
    ensure!(settled_transit.strategy().as_deref() == Some("RollingUpdate"));
    ensure!(settled_transit.template_hash() == finalizing.template_hash());
    ensure!(
        settled_transit.sts.spec.as_ref().map(|s| &s.template) == finalizing.sts.spec.as_ref().map(|s| &s.template)
    );
    ensure!(
        w.api::<Secret>().get_opt(&static_key).await?.is_none(),
        "the transit cluster never gets a static key again"
    );
    let (cs, reason, message) = World::condition(&status).context("condition")?;
    ensure!(
        (cs.as_str(), reason.as_str()) == ("False", "Idle") && message.contains("migrated"),
        "{cs} {reason}: {message}"
    );

    // The way back: transit -> static. The transit settings are gone from the spec; the
    // servers' objects stay as they are until the standbys migrate, and the new static key is
    // made for the new seal.
    w.api::<OpenBaoCluster>()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unseal": {"type": "static", "transit": null}}})),
        )
        .await
        .context("admission lets transit -> static through")?;
    let status = w.reconcile().await?;
    let (_, reason, message) = World::condition(&status).context("condition")?;
    ensure!(reason == "LoginFailed", "{reason}: {message}");
    let waiting = w.servers().await?;
    ensure!(
        waiting.server_hcl == settled_transit.server_hcl,
        "{}",
        waiting.server_hcl
    );
    ensure!(waiting.sts.spec == settled_transit.sts.spec);
    ensure!(
        w.api::<Secret>().get_opt(&static_key).await?.is_some(),
        "a new static key for the new seal"
    );
    let started = jiff::Timestamp::now().to_string();
    w.patch_status(json!({"sealMigration": {
        "phase": "Standbys", "from": "transit", "to": "static", "startedAt": started,
        "phaseStartedAt": started, "leader": "moving-0", "message": "recovery key held; migrating the standbys",
    }}))
    .await?;
    w.reconcile().await?;
    let back = w.servers().await?;
    ensure!(
        back.server_hcl.contains("seal \"transit\" {\n  disabled = \"true\"\n")
            && back.server_hcl.contains("seal \"static\" {\n  current_key_id"),
        "{}",
        back.server_hcl
    );
    ensure!(back.strategy().as_deref() == Some("OnDelete"));
    ensure!(back.template_hash() == Some(back.config_hash()));
    ensure!(
        back.env().contains(&paths::TRANSIT_TOKEN_ENV.to_string()),
        "the old seal's token"
    );
    ensure!(back.volumes().contains(&"unseal".to_string()), "the new static key");
    // The spec names no transit server any more, but the servers still unseal through it: the
    // NetworkPolicy keeps the way there until they leave it.
    let policy = w
        .api::<k8s_openapi::api::networking::v1::NetworkPolicy>()
        .get(&names::network_policy(NAME))
        .await?;
    let egress = serde_json::to_value(policy.spec.context("policy spec")?.egress)?;
    let to_transit = json!({"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vault"}}}],
                            "ports": [{"port": 8200, "protocol": "TCP"}]});
    ensure!(
        egress.as_array().is_some_and(|e| e.contains(&to_transit)),
        "no way to the old transit server: {egress}"
    );
    Ok(())
}
