//! Blue/green on a real kube-apiserver (no kubelet: pods never start, and there is no OpenBao).
//! Status is written as the upgrade driver writes it in each phase, then the real reconcile
//! runs: it must apply exactly the StatefulSets of that phase (never re-create one the upgrade
//! removed), point the public Service (the HTTPRoute's backend) at the right set, and report
//! the phase accurately. The Kubernetes half of the driver's actions (remove a set with its
//! volume claims, move traffic) runs against the same apiserver.
//!
//! Without OpenBao the driver's step cannot log in: that is recorded (`lastError` `LoginFailed`)
//! while the phase stays put, and shows as `Degraded=UpgradeStepFailed` after 3 failures in a
//! row, which is also what is checked. The OpenBao half of every phase is
//! proven on real servers in `upgrade_processes.rs` and end to end in `node_bluegreen.rs`.

mod apiserver_common;

use anyhow::{Context as _, Result};
use apiserver_common::{client_with_crds, context};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, OpenBaoClusterStatus, UpgradePhase, conditions};
use openbao_operator::context::Context;
use openbao_operator::controllers::cluster;
use openbao_operator::controllers::cluster::bluegreen::BlueGreenKube;
use openbao_render::Cluster;
use serde_json::json;
use std::sync::Arc;
use testkit::apiserver::{ApiServer, create_namespace, install_gateway_api_crds};

const NAME: &str = "lane";
const GREEN: &str = "v2-7-2";

async fn setup() -> Result<(Client, Arc<Context>)> {
    let client = client_with_crds(ApiServer::shared().await?).await?;
    install_gateway_api_crds(&client).await?;
    let ctx = Arc::new(context(&client).await);
    Ok((client, ctx))
}

struct Phases {
    client: Client,
    ctx: Arc<Context>,
    ns: String,
}

impl Phases {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn cluster(&self) -> Result<OpenBaoCluster> {
        Ok(self.api::<OpenBaoCluster>().get(NAME).await?)
    }

    /// Writes status as the driver would, then runs one real reconcile.
    async fn reconcile_in(&self, status: serde_json::Value) -> Result<OpenBaoClusterStatus> {
        self.api::<OpenBaoCluster>()
            .patch_status(NAME, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
            .await?;
        let obj = self.cluster().await?;
        cluster::reconcile(Arc::new(obj), self.ctx.clone()).await?;
        Ok(self.cluster().await?.status.unwrap_or_default())
    }

    async fn statefulsets(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .api::<StatefulSet>()
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(|s| s.name_any())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The component the public Service selects, and the Service the HTTPRoute sends to.
    async fn traffic(&self) -> Result<(String, String)> {
        let svc = self.api::<Service>().get(&format!("{NAME}-public")).await?;
        let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
        let route = self
            .api::<gateway_api::httproutes::HttpRoute>()
            .get(&format!("{NAME}-httproute"))
            .await?;
        let backend = route.spec.rules.context("rules")?[0]
            .backend_refs
            .clone()
            .context("backends")?[0]
            .name
            .clone();
        Ok((selector["app.kubernetes.io/component"].clone(), backend))
    }

    async fn server_config(&self, revision: &str) -> Result<String> {
        let cm = self
            .api::<ConfigMap>()
            .get(&format!("{NAME}-config-{revision}"))
            .await?;
        Ok(cm.data.context("data")?["10-server.hcl"].clone())
    }

    async fn live_claims(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .api::<PersistentVolumeClaim>()
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            // No controller manager here removes the in-use protection finalizer: a deleted
            // claim stays, marked for deletion.
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .map(|c| c.name_any())
            .collect();
        names.sort();
        Ok(names)
    }

    async fn remove_set(&self, revision: Option<&str>) -> Result<()> {
        let obj = self.cluster().await?;
        let uid = obj.uid().unwrap_or_default();
        let kube = BlueGreenKube {
            ctx: &self.ctx,
            cluster: Cluster {
                name: NAME,
                namespace: &self.ns,
                uid: &uid,
                spec: &obj.spec,
            },
            live: None,
        };
        kube.remove(&revision.map(str::to_string)).await?;
        Ok(())
    }
}

fn upgrade(phase: &str) -> serde_json::Value {
    json!({
        "initialized": true,
        "currentVersion": "2.6.2",
        "upgrade": {"phase": phase, "strategy": "BlueGreen", "fromVersion": "2.6.2", "toVersion": "2.7.2",
                    "rollbackAvailable": true, "message": format!("in {phase}"), "failures": 0},
        "blueGreen": {"greenRevision": GREEN},
    })
}

fn condition(s: &OpenBaoClusterStatus, t: &str) -> Option<(String, String)> {
    conditions::find(&s.conditions, t).map(|c| (c.status.clone(), c.reason.clone()))
}

fn claim(name: &str) -> Result<PersistentVolumeClaim> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"openbao.org/cluster": NAME}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))?)
}

#[tokio::test]
async fn each_blue_green_phase_applies_its_sets_and_points_the_service() -> Result<()> {
    let (client, ctx) = setup().await?;
    let ns = create_namespace(&client, "bluegreen-phases").await?;
    let manifest: OpenBaoCluster = serde_json::from_value(json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster", "metadata": {"name": NAME},
        "spec": {
            "version": "2.7.2", "profile": "Development", "replicas": 3, "storage": {"size": "1Gi"},
            "upgrade": {"strategy": "BlueGreen"},
            "selfInit": {"oidc": {"adminServiceAccount": {"name": "bao-admin"}}},
            "gateway": {"gatewayRef": {"name": "edge", "namespace": "edge-system"}, "hostname": "bao.lane.localhost"},
        }
    }))?;
    Api::<OpenBaoCluster>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &manifest)
        .await?;
    let p = Phases { client, ctx, ns };
    let blue = ("server".to_string(), format!("{NAME}-public"));
    let green = (format!("server-{GREEN}"), format!("{NAME}-public"));
    let both = vec![NAME.to_string(), format!("{NAME}-{GREEN}")];

    // Before any upgrade: the original set, selected by the public Service.
    let obj = p.cluster().await?;
    cluster::reconcile(Arc::new(obj), p.ctx.clone()).await?;
    assert_eq!(p.statefulsets().await?, vec![NAME.to_string()]);
    assert_eq!(p.traffic().await?, blue);
    for c in ["data-lane-0", "data-lane-1", "data-lane-2", "data-lane-v2-7-2-0"] {
        p.api::<PersistentVolumeClaim>()
            .create(&PostParams::default(), &claim(c)?)
            .await?;
    }

    // Green deployed beside blue, joining it as non-voters on 2.7.2; traffic stays on blue.
    for phase in [
        "DeployingGreen",
        "JoiningMesh",
        "Syncing",
        "AwaitingPromotion",
        "Promoting",
    ] {
        let status = p.reconcile_in(upgrade(phase)).await?;
        assert_eq!(p.statefulsets().await?, both, "{phase}");
        assert_eq!(p.traffic().await?, blue, "{phase}");
        let u = status.upgrade.clone().unwrap_or_default();
        assert_eq!(
            format!("{:?}", u.phase),
            phase,
            "the phase stays until the driver moves it"
        );
        assert_eq!(
            condition(&status, "Upgrading"),
            Some(("True".into(), phase.to_string()))
        );
        // No OpenBao to log in to: recorded and retried, not yet Degraded (a leader handover
        // looks the same for a moment).
        assert_eq!(
            condition(&status, conditions::DEGRADED).map(|c| c.1),
            Some("Reconciled".into()),
            "{phase}"
        );
        assert_eq!(u.failures, 1, "{phase}");
        assert_eq!(u.last_error.map(|e| e.reason), Some("LoginFailed".into()), "{phase}");
    }
    // The same failure twice more: now the cluster says it is Degraded.
    p.reconcile_in(json!({})).await?;
    let status = p.reconcile_in(json!({})).await?;
    assert_eq!(status.upgrade.as_ref().map(|u| u.failures), Some(3));
    assert_eq!(
        condition(&status, conditions::DEGRADED).map(|c| c.1),
        Some("UpgradeStepFailed".into()),
        "no OpenBao to log in to, 3 times in a row"
    );
    let green_sts = p.api::<StatefulSet>().get(&format!("{NAME}-{GREEN}")).await?;
    let s = green_sts.spec.context("spec")?;
    assert_eq!(s.update_strategy.and_then(|u| u.type_).as_deref(), Some("OnDelete"));
    assert_eq!(s.service_name.as_deref(), Some(NAME));
    let image = s.template.spec.context("pod")?.containers[0].image.clone();
    assert_eq!(image.as_deref(), Some("openbao/openbao:2.7.2"));
    let blue_image = p
        .api::<StatefulSet>()
        .get(NAME)
        .await?
        .spec
        .context("spec")?
        .template
        .spec
        .context("pod")?
        .containers[0]
        .image
        .clone();
    assert_eq!(
        blue_image.as_deref(),
        Some("openbao/openbao:2.6.2"),
        "blue keeps running 2.6.2"
    );
    let hcl = p.server_config(GREEN).await?;
    assert!(hcl.contains("retry_join_as_non_voter = true"), "{hcl}");
    assert!(hcl.contains(&format!("https://lane-0.lane.{}.svc:8200", p.ns)), "{hcl}");

    // Rolling back: the reconcile never brings green back once the driver removed it.
    p.reconcile_in(upgrade("RollingBack")).await?;
    p.remove_set(Some(GREEN)).await?;
    let status = p.reconcile_in(upgrade("RollingBack")).await?;
    assert_eq!(p.statefulsets().await?, vec![NAME.to_string()]);
    assert_eq!(p.traffic().await?, blue);
    assert!(
        p.api::<ConfigMap>()
            .get_opt(&format!("{NAME}-config-{GREEN}"))
            .await?
            .is_none(),
        "green's ConfigMap goes with it"
    );
    assert_eq!(
        p.live_claims().await?,
        vec!["data-lane-0", "data-lane-1", "data-lane-2"],
        "green's volume claims go, blue's stay"
    );
    assert_eq!(
        condition(&status, "Upgrading"),
        Some(("True".into(), "RollingBack".into()))
    );

    // Again, to the point of no return: traffic moves to green at DemotingBlue.
    p.reconcile_in(upgrade("DeployingGreen")).await?;
    assert_eq!(p.statefulsets().await?, both);
    p.reconcile_in(upgrade("DemotingBlue")).await?;
    assert_eq!(p.statefulsets().await?, both);
    assert_eq!(p.traffic().await?, green);

    // Cleanup: blue is removed with its claims and not applied again.
    p.reconcile_in(upgrade("Cleanup")).await?;
    p.remove_set(None).await?;
    let status = p.reconcile_in(upgrade("Cleanup")).await?;
    assert_eq!(p.statefulsets().await?, vec![format!("{NAME}-{GREEN}")]);
    assert_eq!(p.traffic().await?, green);
    assert_eq!(p.live_claims().await?, Vec::<String>::new());
    assert_eq!(condition(&status, "Upgrading"), Some(("True".into(), "Cleanup".into())));

    // Done: green is the live set, joins only itself, and keeps the traffic.
    let status = p
        .reconcile_in(json!({
            "currentVersion": "2.7.2",
            "upgrade": {"phase": "Idle", "strategy": null, "fromVersion": null, "toVersion": null,
                        "rollbackAvailable": false, "message": "upgraded from 2.6.2 to 2.7.2 (BlueGreen) in 60s"},
            "blueGreen": {"blueRevision": GREEN, "greenRevision": null},
        }))
        .await?;
    assert_eq!(p.statefulsets().await?, vec![format!("{NAME}-{GREEN}")]);
    assert_eq!(p.traffic().await?, green);
    let hcl = p.server_config(GREEN).await?;
    assert!(!hcl.contains("retry_join_as_non_voter"), "{hcl}");
    assert!(
        hcl.contains(&format!("https://lane-v2-7-2-2.lane.{}.svc:8200", p.ns)),
        "{hcl}"
    );
    assert_eq!(condition(&status, "Upgrading"), Some(("False".into(), "Idle".into())));
    assert_eq!(status.upgrade.map(|u| u.phase), Some(UpgradePhase::Idle));
    // A second reconcile writes nothing to the workloads.
    let before = p
        .api::<StatefulSet>()
        .get(&format!("{NAME}-{GREEN}"))
        .await?
        .resource_version();
    let obj = p.cluster().await?;
    cluster::reconcile(Arc::new(obj), p.ctx.clone()).await?;
    let after = p
        .api::<StatefulSet>()
        .get(&format!("{NAME}-{GREEN}"))
        .await?
        .resource_version();
    assert_eq!(before, after);
    Ok(())
}
