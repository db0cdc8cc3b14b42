//! Shared by the node blue/green tests (`node_bluegreen.rs`, `node_bluegreen_crash.rs`): a
//! controller running in-process on the host that a test can kill and start again, the
//! 3-server cluster they upgrade, and the checks of a finished upgrade.

pub use super::check_acknowledged;
use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, OpenBaoClusterStatus, UpgradePhase, conditions};
use openbao_client::{BaoClient, ClientConfig};
use openbao_operator::controllers::cluster;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{CLIENT_RETRY, LoadClient, LoadReport, PublicIp, condition, create, host_operator_context};

pub const CLUSTER: &str = "lane";
/// The revision of the green servers (2.7.2).
pub const GREEN: &str = "v2-7-2";

/// The controller, running until [`Harness::stop`] (or killed with [`Harness::kill_controller`]),
/// and what a test needs to reach the cluster it creates.
pub struct Harness {
    pub client: Client,
    pub ns: String,
    op_ns: String,
    /// The slot of the running controller's context; a fresh controller gets a fresh slot with
    /// the address found so far.
    public_ip: PublicIp,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    controller: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    pub async fn start(client: &Client, ns: &str, op_ns: &str) -> Result<Self> {
        for (sa_ns, name) in [(op_ns, "openbao-operator"), (ns, "bao-admin")] {
            create::<ServiceAccount>(client, sa_ns, json!({"metadata": {"name": name}})).await?;
        }
        let mut harness = Self {
            client: client.clone(),
            ns: ns.to_string(),
            op_ns: op_ns.to_string(),
            public_ip: PublicIp::default(),
            stop: None,
            controller: None,
        };
        harness.start_controller().await;
        Ok(harness)
    }

    /// Starts a controller with a fresh context (nothing cached from an earlier one but the
    /// public Service's address, which the test found, not the operator).
    pub async fn start_controller(&mut self) {
        let (ctx, public_ip) = host_operator_context(&self.client, &self.ns, &self.op_ns).await;
        let known = *self.public_ip.lock().expect("ip lock");
        *public_ip.lock().expect("ip lock") = known;
        self.public_ip = public_ip;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        self.controller = Some(tokio::spawn(cluster::run(Arc::new(ctx), async move {
            let _ = stop_rx.await;
        })));
        self.stop = Some(stop_tx);
    }

    /// Kills the controller: its task is aborted, so it stops at the point where it waits and
    /// nothing after runs (no status write, no graceful shutdown).
    pub async fn kill_controller(&mut self) {
        if let Some(c) = self.controller.take() {
            c.abort();
            let _ = c.await;
        }
        // Only now: a dropped sender would ask the controller to shut down gracefully.
        self.stop = None;
    }

    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(c) = self.controller.take() {
            c.await?;
        }
        Ok(())
    }

    pub fn clusters(&self) -> Api<OpenBaoCluster> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates a 3-server cluster on 2.6.2 with the blue/green strategy and waits until it is
    /// Available with 3 voters; returns an admin client through the public Service.
    pub async fn create_cluster(&self, blue_green: serde_json::Value) -> Result<(BaoClient, ClientConfig)> {
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
        let request: TokenRequest = serde_json::from_value(
            json!({"spec": {"audiences": [openbao_api::names::jwt_audience(&self.ns, CLUSTER)], "expirationSeconds": 3600}}),
        )?;
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
    pub async fn watch_until(
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

    pub async fn set_spec(&self, patch: serde_json::Value) -> Result<()> {
        self.clusters()
            .patch(CLUSTER, &PatchParams::default(), &Patch::Merge(json!({"spec": patch})))
            .await?;
        Ok(())
    }

    pub async fn pod_names(&self) -> Result<Vec<String>> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default().labels(&format!("openbao.org/cluster={CLUSTER}")))
            .await?;
        let mut names: Vec<String> = pods.items.iter().map(|p| p.name_any()).collect();
        names.sort();
        Ok(names)
    }

    pub async fn claim_names(&self) -> Result<Vec<String>> {
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

    pub async fn statefulset_names(&self) -> Result<Vec<String>> {
        let list = Api::<StatefulSet>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default())
            .await?;
        let mut names: Vec<String> = list.items.iter().map(|s| s.name_any()).collect();
        names.sort();
        Ok(names)
    }

    /// Waits until the pods of the cluster are exactly `expected` (terminating ones gone).
    pub async fn wait_for_pods(&self, expected: &[String], limit: Duration) -> Result<()> {
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

    pub async fn public_selector(&self) -> Result<String> {
        let svc = Api::<Service>::namespaced(self.client.clone(), &self.ns)
            .get(&format!("{CLUSTER}-public"))
            .await?;
        let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
        Ok(selector.get("app.kubernetes.io/component").cloned().unwrap_or_default())
    }
}

impl Drop for Harness {
    /// A test that fails half-way leaves no controller acting on a namespace being deleted.
    fn drop(&mut self) {
        if let Some(c) = self.controller.take() {
            c.abort();
        }
    }
}

pub fn start_load(
    admin: &BaoClient,
    config: ClientConfig,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<LoadReport> {
    tokio::spawn(
        LoadClient {
            bao: admin.clone(),
            config,
            epoch: Instant::now(),
            retry: CLIENT_RETRY,
            outage_since: None,
            report: LoadReport::default(),
        }
        .run(stop),
    )
}

/// The upgrade to 2.7.2 is done: that version runs and no upgrade is in progress.
pub fn upgraded(s: &OpenBaoClusterStatus) -> bool {
    s.current_version.as_deref() == Some("2.7.2") && s.upgrade.as_ref().is_some_and(|u| u.phase == UpgradePhase::Idle)
}

/// What an upgrade run under load left.
pub struct UpgradedUnderLoad {
    /// The cluster as it was when the upgrade was seen done.
    pub done: OpenBaoCluster,
    /// From setting the version to the upgrade seen done.
    pub wall: Duration,
    pub report: LoadReport,
    /// The start of the client's clock (3 s before the upgrade).
    pub epoch: Instant,
}

/// Sets version 2.7.2 while the load client writes and reads (from 3 s before until 3 s after
/// the upgrade, to see blue's servers go and green's alone serve), `follow` watching the upgrade
/// until it is done.
pub async fn upgrade_to_green_under_load(
    h: &mut Harness,
    admin: &BaoClient,
    config: ClientConfig,
    follow: impl AsyncFnOnce(&mut Harness, Instant) -> Result<OpenBaoCluster>,
) -> Result<UpgradedUnderLoad> {
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let load = start_load(admin, config, stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let upgrade_started = Instant::now();
    eprintln!("spec.version -> 2.7.2 (BlueGreen)");
    let outcome = match h.set_spec(json!({"version": "2.7.2"})).await {
        Ok(()) => follow(h, epoch).await,
        Err(e) => Err(e),
    };
    let wall = upgrade_started.elapsed();
    if outcome.is_ok() {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let report = load.await?;
    Ok(UpgradedUnderLoad {
        done: outcome?,
        wall,
        report,
        epoch,
    })
}

/// The raft peers, sorted, as `(id, voter)`.
pub async fn raft_peers(admin: &BaoClient) -> Result<Vec<(String, bool)>> {
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

/// The invariants of a finished upgrade to 2.7.2, `done` being the cluster as it reported it:
/// no client operation failed after its retries, every acknowledged write reads back, and
/// exactly the green servers are left (3 voters in raft, as pods, volumes and StatefulSet;
/// traffic goes to them); status is clean and the cluster Available again.
pub async fn check_upgraded_to_green(
    h: &Harness,
    admin: &BaoClient,
    done: &OpenBaoCluster,
    report: &LoadReport,
    epoch: Instant,
    phases: &mut Vec<String>,
) -> Result<()> {
    eprintln!(
        "FAILED OPERATIONS after retries of {:?}: {} writes, {} reads: {:?}",
        report.retry,
        report.failed_writes,
        report.failed_reads,
        report.errors.iter().take(10).collect::<Vec<_>>()
    );
    eprintln!("phases seen: {phases:?}");
    check_acknowledged(admin, report).await?;
    ensure!(
        report.failed_writes == 0 && report.failed_reads == 0,
        "failed operations: {:?}",
        report.errors
    );

    let green: Vec<String> = (0..3).map(|i| format!("{CLUSTER}-{GREEN}-{i}")).collect();
    let peers = raft_peers(admin).await?;
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
        .watch_until(epoch, Duration::from_secs(60), phases, |s| s.ready_replicas == 3)
        .await?;
    let available = condition(&settled, conditions::AVAILABLE);
    ensure!(available.as_ref().is_some_and(|(s, _)| s == "True"), "{available:?}");
    let pods = Api::<Pod>::namespaced(h.client.clone(), &h.ns);
    for name in &green {
        let image = pods.get(name).await?.spec.and_then(|s| s.containers[0].image.clone());
        ensure!(image.as_deref() == Some("openbao/openbao:2.7.2"), "{name}: {image:?}");
    }
    Ok(())
}
