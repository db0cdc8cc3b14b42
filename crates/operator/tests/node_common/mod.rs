//! Shared by the node upgrade tests (`node_upgrade.rs`, `node_bluegreen.rs`): the node client,
//! and a client that writes and reads through the public Service during an upgrade and reports
//! every failed operation and the longest window of failed requests.

#![allow(dead_code)]
pub mod audit;
pub mod bluegreen;
pub mod transit;

use anyhow::{Context as _, Result, bail, ensure};
use futures::FutureExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::DeleteParams;
use kube::api::{Api, PostParams};
use openbao_api::{OpenBaoCluster, conditions};
use openbao_client::{BaoClient, ClientConfig};
use openbao_operator::context::Context;
use openbao_operator::openbao::Endpoint;
use openbao_operator::runtime::metrics::Metrics;
use openbao_render::OperatorIdentity;
use serde_json::json;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::apiserver::{client_from_kubeconfig, create_restricted_namespace, install_crds};

/// A client operation is retried for at most this long before it counts as failed: five
/// attempts of [`ATTEMPT_TIMEOUT`]. This bound measures the loaded 2-core machine more than the
/// operator, so it follows what CI saw there: 2 s until a fresh-clone run (2026-12-04, `3eca137`)
/// failed `node_bluegreen` on one write two attempts in a row left unanswered, while its client
/// also saw unanswered attempts before the upgrade began; 3 s until `node_multinode`'s drains
/// (three runs: 3.0-3.4 s from a standby pod's SIGTERM, the survivors' forwarded requests to the
/// unchanged active server cancelled by the 1-s attempt limit) and a CI run under other load
/// (2026-12-04, `e232cf6`) that left one write of `node_upgrade`'s rolling upgrade unanswered
/// for 3 s. Quiet runs: windows of 0.1-0.7 s. The longest window of failed requests is still
/// reported by every test.
pub const CLIENT_RETRY: Duration = Duration::from_secs(5);
/// One attempt waits at most this long: a request on a kept-alive connection to a server that
/// is shutting down may never be answered, and a new connection reaches a live one.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the operator on the host reaches a cluster's public Service: its ClusterIP, once known.
pub type PublicIp = Arc<Mutex<Option<IpAddr>>>;

/// The context of a controller running on the host for the clusters of `ns`, as the service account
/// `openbao-operator` of `op_ns`. It reaches each public Service through the ClusterIP set in the
/// returned slot (the node's Service range is routed into its network namespace); TLS still
/// verifies the Service's DNS name.
pub async fn host_operator_context(client: &Client, ns: &str, op_ns: &str) -> (Context, PublicIp) {
    let public_ip = PublicIp::default();
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
    // The operator runs on the host: its connections reach the pods from the host's address.
    ctx.network.external_source_cidrs = vec![format!("{}/32", testkit::node::HOST_IP)];
    let ip = public_ip.clone();
    ctx.endpoints = Arc::new(move |c: &str, n: &str| Endpoint {
        url: format!("https://{c}-public.{n}.svc:8200"),
        resolve_to: *ip.lock().expect("ip lock"),
    });
    (ctx, public_ip)
}

/// The operator's cluster controller running in this test process (as [`host_operator_context`]
/// sets it up); [`HostOperator::stop`] ends it.
pub struct HostOperator {
    stop: tokio::sync::oneshot::Sender<()>,
    controller: tokio::task::JoinHandle<()>,
}

impl HostOperator {
    /// Creates the operator's service account in `op_ns` and starts the controller for `ns`.
    pub async fn start(client: &Client, ns: &str, op_ns: &str) -> Result<(Self, PublicIp)> {
        create::<k8s_openapi::api::core::v1::ServiceAccount>(
            client,
            op_ns,
            serde_json::json!({"metadata": {"name": "openbao-operator"}}),
        )
        .await?;
        let (ctx, public_ip) = host_operator_context(client, ns, op_ns).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let controller = tokio::spawn(openbao_operator::controllers::cluster::run(Arc::new(ctx), async move {
            let _ = stopped.await;
        }));
        Ok((Self { stop, controller }, public_ip))
    }

    /// Stops the controller and waits until it has.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        Ok(self.controller.await?)
    }
}

/// Points `public_ip` (what [`host_operator_context`]'s endpoint resolver connects to) at the
/// ClusterIP of `cluster`'s public Service once that Service has one; called while waiting.
pub async fn learn_public_ip(client: &Client, ns: &str, cluster: &str, public_ip: &PublicIp) -> Result<()> {
    if public_ip.lock().expect("ip lock").is_some() {
        return Ok(());
    }
    let service = Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns)
        .get_opt(&openbao_api::names::public_service(cluster))
        .await?;
    if let Some(ip) = service.and_then(|s| s.spec?.cluster_ip) {
        *public_ip.lock().expect("ip lock") = ip.parse().ok();
    }
    Ok(())
}

pub async fn node_client() -> Result<Client> {
    let Some(state) = testkit::node::running_node().await else {
        bail!("no hermetic node is running: `make test` starts one, or run `make cluster-up`");
    };
    client_from_kubeconfig(&state.join("kubeconfig")).await
}

pub async fn create<K>(client: &Client, ns: &str, value: serde_json::Value) -> Result<K>
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

pub fn condition(c: &OpenBaoCluster, t: &str) -> Option<(String, String)> {
    let s = c.status.as_ref()?;
    conditions::find(&s.conditions, t).map(|c| (c.status.clone(), c.reason.clone()))
}

#[derive(Debug, Default)]
pub struct LoadReport {
    pub writes: u64,
    pub failed_writes: u64,
    pub reads: u64,
    pub failed_reads: u64,
    pub failed_attempts: u64,
    /// How long each operation was retried before it counted as failed.
    pub retry: Duration,
    /// The longest time from a failed attempt to the next success.
    pub longest_outage: Duration,
    pub acknowledged: Vec<u64>,
    pub errors: Vec<String>,
}

/// Writes `secret/data/load/k<n>` every 200 ms and reads back an earlier acknowledged key, each
/// operation retried for at most [`CLIENT_RETRY`].
pub struct LoadClient {
    pub bao: BaoClient,
    /// To open new connections after a failure: behind a ClusterIP a kept-alive connection
    /// stays with its server while that one shuts down (a standby then answers 307 or 500 for
    /// about 2 s), while a new connection reaches a server that is still in the Service.
    pub config: ClientConfig,
    /// Failure times are reported relative to this (the test's clock).
    pub epoch: Instant,
    /// How long one operation is retried before it counts as failed ([`CLIENT_RETRY`] unless a
    /// test says otherwise, with its reason).
    pub retry: Duration,
    pub outage_since: Option<Instant>,
    pub report: LoadReport,
}

impl LoadClient {
    async fn attempt(&mut self, write: Option<u64>, key: u64) -> Result<Option<u64>, String> {
        let path = format!("secret/data/load/k{key}");
        let started = Instant::now();
        loop {
            let budget = self
                .retry
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
                    // Every failed attempt, on the test's clock, to line it up with the operator's steps.
                    let sent = attempt_started.duration_since(self.epoch).as_secs_f64();
                    eprintln!("failed attempt at {sent:.1}s ({path}): {e}");
                    // The window of failure starts when the failed attempt was sent.
                    self.outage_since.get_or_insert(attempt_started);
                    if started.elapsed() >= self.retry {
                        let at = started.duration_since(self.epoch).as_secs_f64();
                        return Err(format!("{path} (first try at {at:.1}s): {e}"));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn run(mut self, stop: Arc<AtomicBool>) -> LoadReport {
        self.report.retry = self.retry;
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

/// No operation of `report` failed after its retries, and every acknowledged write reads back.
pub async fn check_no_failed_operations(admin: &BaoClient, report: &LoadReport) -> Result<()> {
    ensure!(
        report.failed_writes + report.failed_reads == 0,
        "{} writes and {} reads failed after retries of {:?}: {:?}",
        report.failed_writes,
        report.failed_reads,
        report.retry,
        report.errors
    );
    check_acknowledged(admin, report).await
}

/// Every acknowledged write reads back. The Service may pick a standby that has not applied the
/// newest entries yet: a key counts as lost only if it stays unreadable for 5 s.
pub async fn check_acknowledged(admin: &BaoClient, report: &LoadReport) -> Result<()> {
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

/// Runs `test` with a namespace for the cluster and one for the operator, both named after
/// `name`, and deletes them whatever the outcome.
pub async fn in_namespaces(name: &str, test: impl AsyncFnOnce(&Client, &str, &str) -> Result<()>) -> Result<()> {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let client = node_client().await?;
    install_crds(&client, openbao_api::crd::all()).await?;
    // What the operator's install ships besides the CRDs: OpenBao pods label themselves with it.
    testkit::apiserver::apply_cluster_scoped(&client, &openbao_render::objects::service_registration_cluster_role())
        .await?;
    // Pod Security `restricted` enforced: every pod the operator makes must meet it (proven
    // for each pod template by tests/pods_apiserver.rs).
    let ns = create_restricted_namespace(&client, name).await?;
    let op_ns = create_restricted_namespace(&client, &format!("{name}-operator")).await?;
    operator_log_in_test_output();
    let result = AssertUnwindSafe(test(&client, &ns, &op_ns)).catch_unwind().await;
    if !matches!(result, Ok(Ok(()))) {
        print_server_logs(&client, &ns, None).await;
    }
    // The namespaces go either way (error or panic), so no pods are left running on the shared node.
    let namespaces = Api::<Namespace>::all(client.clone());
    for n in [&ns, &op_ns] {
        namespaces.delete(n, &DeleteParams::default()).await.ok();
    }
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The operator's log (INFO and up: every step of an upgrade, restore or seal migration, with
/// its time) in the test's output, which the test harness prints when the test fails.
fn operator_log_in_test_output() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("openbao_operator=info"))
        .with_test_writer()
        .try_init()
        .ok();
}

/// At most this many notable lines of each server's log are printed.
const SERVER_LOG_LINES: usize = 80;

/// What each OpenBao server of `ns` said about leadership and trouble (elections, the HA lock,
/// step-downs, warnings and errors), repeats folded, in the last `since` or since it started:
/// so a CI log shows why a client's requests went unanswered. Printed for every failed test
/// (its pods go with the namespace right after), and by tests whose pods are replaced on the
/// way (their logs go with them).
pub async fn print_server_logs(client: &Client, ns: &str, since: Option<Duration>) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::ResourceExt as _;
    use kube::api::{ListParams, LogParams};
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let Ok(list) = pods.list(&ListParams::default()).await else {
        return;
    };
    let params = LogParams {
        container: Some(openbao_render::SERVER_CONTAINER.to_string()),
        since_seconds: since.map(|d| d.as_secs().max(1) as i64),
        ..Default::default()
    };
    let runs_openbao = |p: &&Pod| {
        p.spec
            .as_ref()
            .is_some_and(|s| s.containers.iter().any(|c| c.name == openbao_render::SERVER_CONTAINER))
    };
    for pod in list.items.iter().filter(runs_openbao) {
        let name = pod.name_any();
        let Ok(log) = pods.logs(&name, &params).await else {
            continue;
        };
        let lines = notable_server_lines(&log);
        let skipped = lines.len().saturating_sub(SERVER_LOG_LINES);
        eprintln!(
            "--- server log {ns}/{name}: {} notable lines, the last {}",
            lines.len(),
            lines.len() - skipped
        );
        for line in &lines[skipped..] {
            eprintln!("  {line}");
        }
    }
}

/// The lines of an OpenBao log worth reading after a failure, each repeat of the same message
/// (timestamps aside) folded into its first line with a count.
fn notable_server_lines(log: &str) -> Vec<String> {
    const KEYS: [&str; 10] = [
        "[WARN]",
        "[ERROR]",
        "entering leader state",
        "entering follower state",
        "entering candidate state",
        "leadership",
        "acquired lock",
        "stepping down",
        "post-unseal setup complete",
        "heartbeat timeout",
    ];
    let mut out: Vec<(String, String, usize)> = Vec::new();
    for line in log.lines().filter(|l| KEYS.iter().any(|k| l.contains(k))) {
        let (time, message) = line.split_once(' ').unwrap_or(("", line));
        let message: String = message.chars().take(160).collect();
        match out.last_mut() {
            Some((_, last, count)) if *last == message => *count += 1,
            _ => out.push((time.to_string(), message, 1)),
        }
    }
    out.into_iter()
        .map(|(time, message, count)| match count {
            1 => format!("{time} {message}"),
            n => format!("{time} {message} (x{n})"),
        })
        .collect()
}

/// Retries `f` for up to a minute, printing each error: a request may meet a server restarting,
/// or a standby that has not yet heard from the active server (HTTP 500 `active cluster node not
/// found`) and so cannot forward.
pub async fn retrying<T, Fut>(what: &str, mut f: impl FnMut() -> Fut) -> Result<T>
where
    Fut: std::future::Future<Output = Result<T>>,
{
    let started = Instant::now();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("{what}: {e:#}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.context(what.to_string())),
        }
    }
}

/// The admin of cluster `name` through its public Service: JWT role `admin`, logged in with a
/// token of the service account `bao-admin` (the cluster's `selfInit.oidc.adminServiceAccount`).
pub async fn cluster_admin(client: &Client, ns: &str, name: &str, public_ip: &PublicIp) -> Result<BaoClient> {
    let bao = BaoClient::new(public_client_config(client, ns, name, public_ip).await?)?;
    let login = bao
        .login_jwt("jwt-operator", "admin", &admin_jwt(client, ns, name).await?)
        .await?;
    Ok(bao.with_token(login.token))
}

/// How a client on the host reaches cluster `name` through its public Service: its ClusterIP
/// (once learned), trusting the cluster's CA, each request bounded by [`CLIENT_RETRY`].
pub async fn public_client_config(client: &Client, ns: &str, name: &str, public_ip: &PublicIp) -> Result<ClientConfig> {
    use k8s_openapi::api::core::v1::Secret;
    use openbao_api::names;
    let ca = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&names::tls_ca_secret(name))
        .await?
        .data
        .context("ca data")?["ca.crt"]
        .0
        .clone();
    let ip = public_ip.lock().unwrap().context("public ClusterIP")?;
    Ok(
        ClientConfig::new(format!("https://{}.{ns}.svc:8200", names::public_service(name)))
            .with_ca_pem(ca)
            .with_resolve_to(ip)
            .with_timeout(CLIENT_RETRY),
    )
}

/// A token of the service account `bao-admin` of `ns` for cluster `name`'s audience: what its
/// admin logs in to OpenBao with (JWT role `admin`).
pub async fn admin_jwt(client: &Client, ns: &str, name: &str) -> Result<String> {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let request: TokenRequest = serde_json::from_value(
        json!({"spec": {"audiences": [openbao_api::names::jwt_audience(ns, name)], "expirationSeconds": 3600}}),
    )?;
    Ok(Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_subresource::<_, TokenRequest>("token", "bao-admin", &PostParams::default(), &request)
        .await?
        .status
        .context("token")?
        .token)
}
