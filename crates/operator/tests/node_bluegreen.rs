//! Blue/green upgrades on a real single-node cluster, run by the real controller (in-process, on
//! the host) against real OpenBao pods:
//! - 3 servers on 2.6.2 upgraded to 2.7.2 while a client writes and reads through the public
//!   Service every 200 ms: every acknowledged write is readable at the end, the cluster is 3
//!   voters on 2.7.2 (the green servers only), blue's StatefulSet and volumes are gone;
//! - a rollback before promotion (autoPromote false, `requests.rollback`) returns to blue with
//!   green removed from raft and deleted with its volumes, and the upgrade does not start again.
//!
//! Needs the node (`make cluster-up`) with both images loaded.

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, OpenBaoClusterStatus, UpgradePhase, conditions};
use openbao_client::{BaoClient, ClientConfig};
use openbao_operator::controllers::cluster;
use serde_json::json;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::apiserver::{create_namespace, install_crds};

mod node_common;
use node_common::{CLIENT_RETRY, LoadClient, LoadReport, condition, create, host_operator_context, node_client};

const CLUSTER: &str = "lane";
const GREEN: &str = "v2-7-2";

/// The controller, running until dropped with [`Harness::stop`], and what a test needs to reach
/// the cluster it creates.
struct Harness {
    client: Client,
    ns: String,
    public_ip: Arc<Mutex<Option<IpAddr>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    controller: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    async fn start(client: &Client, ns: &str, op_ns: &str) -> Result<Self> {
        for (sa_ns, name) in [(op_ns, "openbao-operator"), (ns, "bao-admin")] {
            create::<ServiceAccount>(client, sa_ns, json!({"metadata": {"name": name}})).await?;
        }
        let (ctx, public_ip) = host_operator_context(client, ns, op_ns).await;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let controller = tokio::spawn(cluster::run(Arc::new(ctx), async move {
            let _ = stop_rx.await;
        }));
        Ok(Self {
            client: client.clone(),
            ns: ns.to_string(),
            public_ip,
            stop: Some(stop_tx),
            controller: Some(controller),
        })
    }

    async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(c) = self.controller.take() {
            c.await?;
        }
        Ok(())
    }

    fn clusters(&self) -> Api<OpenBaoCluster> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates a 3-server cluster on 2.6.2 with the blue/green strategy and waits until it is
    /// Available with 3 voters; returns an admin client through the public Service.
    async fn create_cluster(&self, blue_green: serde_json::Value) -> Result<(BaoClient, ClientConfig)> {
        let started = Instant::now();
        create::<OpenBaoCluster>(&self.client, &self.ns, json!({
            "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster", "metadata": {"name": CLUSTER},
            "spec": {
                "version": "2.6.2", "profile": "Development", "replicas": 3, "storage": {"size": "256Mi"},
                "workloadHardening": {"appArmorEnabled": false},
                "upgrade": {"strategy": "BlueGreen", "blueGreen": blue_green},
                "selfInit": {
                    "oidc": {"adminServiceAccount": {"name": "bao-admin"}},
                    "requests": [{"name": "kv", "operation": "update", "path": "sys/mounts/secret", "data": {"type": "kv", "options": {"version": "2"}}}]
                }
            }
        }))
        .await?;
        let services = Api::<Service>::namespaced(self.client.clone(), &self.ns);
        loop {
            if self.public_ip.lock().unwrap().is_none()
                && let Some(ip) = services
                    .get_opt(&format!("{CLUSTER}-public"))
                    .await?
                    .and_then(|s| s.spec?.cluster_ip)
            {
                *self.public_ip.lock().unwrap() = ip.parse().ok();
            }
            let c = self.clusters().get(CLUSTER).await?;
            let ready =
                condition(&c, conditions::AVAILABLE).is_some_and(|(s, r)| s == "True" && r == "AllReplicasReady");
            let healthy = condition(&c, conditions::DEGRADED).is_some_and(|(s, _)| s == "False");
            if ready && healthy && c.status.as_ref().is_some_and(|s| s.initialized) {
                break;
            }
            if started.elapsed() > Duration::from_secs(240) {
                bail!("cluster not Available after 240 s: {:#?}", c.status);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        eprintln!("2.6.2 cluster Available after {:.1?}", started.elapsed());

        let secrets = Api::<Secret>::namespaced(self.client.clone(), &self.ns);
        let ca = secrets
            .get(&format!("{CLUSTER}-tls-ca"))
            .await?
            .data
            .context("ca data")?["ca.crt"]
            .0
            .clone();
        let ip = self.public_ip.lock().unwrap().context("public ClusterIP")?;
        let config = ClientConfig::new(format!("https://{CLUSTER}-public.{}.svc:8200", self.ns))
            .with_ca_pem(ca)
            .with_resolve_to(ip)
            .with_timeout(CLIENT_RETRY);
        let bao = BaoClient::new(config.clone())?;
        let request: TokenRequest =
            serde_json::from_value(json!({"spec": {"audiences": ["openbao-internal"], "expirationSeconds": 3600}}))?;
        let admin_jwt = Api::<ServiceAccount>::namespaced(self.client.clone(), &self.ns)
            .create_subresource::<_, TokenRequest>("token", "bao-admin", &PostParams::default(), &request)
            .await?
            .status
            .context("token")?
            .token;
        let login = bao.login_jwt("jwt-operator", "admin", &admin_jwt).await?;
        let admin = bao.with_token(login.token);
        let voters_wait = Instant::now();
        while admin.raft_configuration().await?.voters().count() != 3 {
            ensure!(
                voters_wait.elapsed() < Duration::from_secs(60),
                "3 voters before the upgrade"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok((admin, config))
    }

    /// Polls the cluster until `done` holds, printing every new upgrade phase.
    async fn watch_until(
        &self,
        epoch: Instant,
        limit: Duration,
        phases: &mut Vec<String>,
        done: impl Fn(&OpenBaoClusterStatus) -> bool,
    ) -> Result<OpenBaoCluster> {
        let started = Instant::now();
        loop {
            let c = self.clusters().get(CLUSTER).await?;
            let status = c.status.clone().unwrap_or_default();
            let u = status.upgrade.clone().unwrap_or_default();
            let seen = format!("{:?}", u.phase);
            if phases.last() != Some(&seen) {
                eprintln!(
                    "{:>6.1}s upgrade {seen}: {}",
                    epoch.elapsed().as_secs_f64(),
                    u.message.clone().unwrap_or_default()
                );
                phases.push(seen);
            }
            if done(&status) {
                return Ok(c);
            }
            if started.elapsed() > limit {
                bail!("not done after {limit:?}: {:#?}", c.status);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn set_spec(&self, patch: serde_json::Value) -> Result<()> {
        self.clusters()
            .patch(CLUSTER, &PatchParams::default(), &Patch::Merge(json!({"spec": patch})))
            .await?;
        Ok(())
    }

    async fn pod_names(&self) -> Result<Vec<String>> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default().labels(&format!("openbao.org/cluster={CLUSTER}")))
            .await?;
        let mut names: Vec<String> = pods.items.iter().map(|p| p.name_any()).collect();
        names.sort();
        Ok(names)
    }

    async fn claim_names(&self) -> Result<Vec<String>> {
        let claims = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default())
            .await?;
        let mut names: Vec<String> = claims
            .items
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .map(|c| c.name_any())
            .collect();
        names.sort();
        Ok(names)
    }

    async fn statefulset_names(&self) -> Result<Vec<String>> {
        let list = Api::<StatefulSet>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default())
            .await?;
        let mut names: Vec<String> = list.items.iter().map(|s| s.name_any()).collect();
        names.sort();
        Ok(names)
    }

    /// Waits until the pods of the cluster are exactly `expected` (terminating ones gone).
    async fn wait_for_pods(&self, expected: &[String], limit: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            let pods = self.pod_names().await?;
            let claims = self.claim_names().await?;
            let wanted_claims: Vec<String> = expected.iter().map(|p| format!("data-{p}")).collect();
            if pods == expected && claims == wanted_claims {
                return Ok(());
            }
            if started.elapsed() > limit {
                bail!("pods {pods:?} / claims {claims:?} after {limit:?}; expected {expected:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn public_selector(&self) -> Result<String> {
        let svc = Api::<Service>::namespaced(self.client.clone(), &self.ns)
            .get(&format!("{CLUSTER}-public"))
            .await?;
        let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
        Ok(selector.get("app.kubernetes.io/component").cloned().unwrap_or_default())
    }
}

fn start_load(admin: &BaoClient, config: ClientConfig, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<LoadReport> {
    tokio::spawn(
        LoadClient {
            bao: admin.clone(),
            config,
            epoch: Instant::now(),
            outage_since: None,
            report: LoadReport::default(),
        }
        .run(stop),
    )
}

/// Every acknowledged write reads back (a standby may lag a moment: 5 s to show up).
async fn check_acknowledged(admin: &BaoClient, report: &LoadReport) -> Result<()> {
    ensure!(
        report.acknowledged.len() > 50,
        "too few writes: {}",
        report.acknowledged.len()
    );
    for n in &report.acknowledged {
        let path = format!("secret/data/load/k{n}");
        let asked = Instant::now();
        let value = loop {
            match admin.read(&path).await {
                Ok(Some(v)) => break v,
                other if asked.elapsed() > Duration::from_secs(5) => {
                    bail!("acknowledged write k{n} is gone: {other:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        ensure!(value["data"]["data"]["n"] == json!(n), "k{n}: {value}");
    }
    Ok(())
}

/// The raft peers, sorted, as `(id, voter)`.
async fn raft_peers(admin: &BaoClient) -> Result<Vec<(String, bool)>> {
    let mut peers: Vec<(String, bool)> = admin
        .raft_configuration()
        .await?
        .servers
        .into_iter()
        .map(|s| (s.node_id, s.voter))
        .collect();
    peers.sort();
    Ok(peers)
}

async fn in_namespaces(name: &str, test: impl AsyncFnOnce(&Client, &str, &str) -> Result<()>) -> Result<()> {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let client = node_client().await?;
    install_crds(&client, openbao_api::crd::all()).await?;
    let ns = create_namespace(&client, name).await?;
    let op_ns = create_namespace(&client, &format!("{name}-operator")).await?;
    let result = test(&client, &ns, &op_ns).await;
    // The namespaces go either way, so no pods are left running on the shared node.
    let namespaces = Api::<Namespace>::all(client.clone());
    for n in [&ns, &op_ns] {
        namespaces.delete(n, &DeleteParams::default()).await.ok();
    }
    result
}

/// The two scenarios run one after the other: two 3-server clusters at once on a 2-core node would
/// measure the machine, not the upgrade (the write checks have 2 s windows).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_blue_green_upgrade_keeps_every_write_on_a_real_node() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    in_namespaces("bluegreen-upgrade", upgrade_under_load).await
}

async fn upgrade_under_load(client: &Client, ns: &str, op_ns: &str) -> Result<()> {
    let h = Harness::start(client, ns, op_ns).await?;
    let (admin, config) = h.create_cluster(json!({})).await?;
    ensure!(h.public_selector().await? == "server");

    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let load = start_load(&admin, config, stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;

    let upgrade_started = Instant::now();
    eprintln!("spec.version -> 2.7.2 (BlueGreen)");
    h.set_spec(json!({"version": "2.7.2"})).await?;
    let mut phases = Vec::new();
    let outcome = h
        .watch_until(epoch, Duration::from_secs(600), &mut phases, |s| {
            s.current_version.as_deref() == Some("2.7.2")
                && s.upgrade.as_ref().is_some_and(|u| u.phase == UpgradePhase::Idle)
        })
        .await;
    let done = match outcome {
        Ok(done) => done,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
    };
    let wall = upgrade_started.elapsed();
    // Keep writing a little after blue is gone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let report = load.await?;
    eprintln!(
        "TIMING blue/green upgrade 2.6.2 -> 2.7.2 on the node: wall time {} ms; client: {} writes, {} reads, \
         {} failed attempts retried, longest window of failed requests {} ms",
        wall.as_millis(),
        report.writes,
        report.reads,
        report.failed_attempts,
        report.longest_outage.as_millis()
    );
    eprintln!(
        "FAILED OPERATIONS after retries of {CLIENT_RETRY:?}: {} writes, {} reads: {:?}",
        report.failed_writes,
        report.failed_reads,
        report.errors.iter().take(10).collect::<Vec<_>>()
    );
    eprintln!("phases seen: {phases:?}");
    check_acknowledged(&admin, &report).await?;
    ensure!(
        report.failed_writes == 0 && report.failed_reads == 0,
        "failed operations: {:?}",
        report.errors
    );

    // Exactly the green servers are left: in raft, as pods, as volumes; blue is gone.
    let green: Vec<String> = (0..3).map(|i| format!("{CLUSTER}-{GREEN}-{i}")).collect();
    let peers = raft_peers(&admin).await?;
    let expected: Vec<(String, bool)> = green.iter().map(|g| (g.clone(), true)).collect();
    ensure!(peers == expected, "raft peers {peers:?}");
    ensure!(admin.health().await?.version == "2.7.2");
    h.wait_for_pods(&green, Duration::from_secs(120)).await?;
    ensure!(
        h.statefulset_names().await? == vec![format!("{CLUSTER}-{GREEN}")],
        "{:?}",
        h.statefulset_names().await?
    );
    ensure!(h.public_selector().await? == format!("server-{GREEN}"));
    let status = done.status.clone().unwrap_or_default();
    let upgrade = status.upgrade.clone().unwrap_or_default();
    ensure!(upgrade.last_error.is_none(), "{upgrade:?}");
    let bg = status.blue_green.clone().unwrap_or_default();
    ensure!(
        bg.blue_revision.as_deref() == Some(GREEN) && bg.green_revision.is_none(),
        "{bg:?}"
    );
    // The cluster reports the green set as its servers.
    let settled = h
        .watch_until(epoch, Duration::from_secs(60), &mut phases, |s| s.ready_replicas == 3)
        .await?;
    let available = condition(&settled, conditions::AVAILABLE);
    ensure!(available.as_ref().is_some_and(|(s, _)| s == "True"), "{available:?}");
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    for name in &green {
        let image = pods.get(name).await?.spec.and_then(|s| s.containers[0].image.clone());
        ensure!(image.as_deref() == Some("openbao/openbao:2.7.2"), "{name}: {image:?}");
    }
    h.stop().await
}

#[tokio::test]
async fn a_blue_green_rollback_before_promotion_removes_green_on_a_real_node() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    in_namespaces("bluegreen-rollback", rollback_before_promotion).await
}

async fn rollback_before_promotion(client: &Client, ns: &str, op_ns: &str) -> Result<()> {
    let h = Harness::start(client, ns, op_ns).await?;
    let (admin, config) = h.create_cluster(json!({"autoPromote": false})).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let load = start_load(&admin, config, stop.clone());
    h.set_spec(json!({"version": "2.7.2"})).await?;
    let mut phases = Vec::new();
    let held = h
        .watch_until(epoch, Duration::from_secs(400), &mut phases, |s| {
            s.upgrade
                .as_ref()
                .is_some_and(|u| u.phase == UpgradePhase::AwaitingPromotion)
        })
        .await;
    if let Err(e) = held {
        stop.store(true, Ordering::Relaxed);
        return Err(e);
    }
    // Green is in raft as non-voters; traffic still goes to blue.
    let peers = raft_peers(&admin).await?;
    let green: Vec<String> = (0..3).map(|i| format!("{CLUSTER}-{GREEN}-{i}")).collect();
    for g in &green {
        ensure!(peers.contains(&(g.clone(), false)), "{g} non-voter: {peers:?}");
    }
    ensure!(h.public_selector().await? == "server");

    let rollback_started = Instant::now();
    h.set_spec(json!({"upgrade": {"requests": {"rollback": "first"}}}))
        .await?;
    let outcome = h
        .watch_until(epoch, Duration::from_secs(300), &mut phases, |s| {
            s.upgrade
                .as_ref()
                .is_some_and(|u| u.phase == UpgradePhase::Idle && u.aborted_version.as_deref() == Some("2.7.2"))
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let report = load.await?;
    let rolled_back = outcome?;
    eprintln!(
        "TIMING blue/green rollback before promotion: {} ms; client: {} writes, {} failed attempts retried, \
         longest window of failed requests {} ms; failed writes {}, failed reads {}",
        rollback_started.elapsed().as_millis(),
        report.writes,
        report.failed_attempts,
        report.longest_outage.as_millis(),
        report.failed_writes,
        report.failed_reads
    );
    eprintln!("phases seen: {phases:?}");
    check_acknowledged(&admin, &report).await?;
    ensure!(
        report.failed_writes == 0 && report.failed_reads == 0,
        "failed operations: {:?}",
        report.errors
    );

    let status = rolled_back.status.clone().unwrap_or_default();
    ensure!(status.current_version.as_deref() == Some("2.6.2"), "{status:?}");
    let u = status.upgrade.clone().unwrap_or_default();
    ensure!(u.acknowledged.rollback.as_deref() == Some("first"), "{u:?}");
    ensure!(
        status.blue_green.as_ref().is_none_or(|b| b.green_revision.is_none()),
        "{:?}",
        status.blue_green
    );
    // Blue alone, in raft, as pods and volumes; no green StatefulSet, pods, volumes or peers.
    let blue: Vec<String> = (0..3).map(|i| format!("{CLUSTER}-{i}")).collect();
    let peers = raft_peers(&admin).await?;
    ensure!(
        peers == blue.iter().map(|b| (b.clone(), true)).collect::<Vec<_>>(),
        "raft peers {peers:?}"
    );
    ensure!(admin.health().await?.version == "2.6.2");
    h.wait_for_pods(&blue, Duration::from_secs(120)).await?;
    ensure!(h.statefulset_names().await? == vec![CLUSTER.to_string()]);
    ensure!(h.public_selector().await? == "server");
    // Latched: the upgrade does not start again by itself.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let later = h.clusters().get(CLUSTER).await?.status.unwrap_or_default();
    let phase = later.upgrade.map(|u| u.phase).unwrap_or_default();
    ensure!(phase == UpgradePhase::Idle, "started again: {phase:?}");
    ensure!(h.statefulset_names().await? == vec![CLUSTER.to_string()]);
    h.stop().await
}
