//! Placement and disruption across kubelet nodes (issue 15): three workers
//! (`testkit::node::workers`, what `make cluster-up NODES=4` adds), each with its own network
//! namespace, containerd, kubelet and local-path disk. A 3-server cluster spreads one server per
//! node (`topologySpreadConstraints`); `kubectl drain` of each of those nodes in turn, while a
//! client writes every 200 ms, is held by the operator's PodDisruptionBudget and loses nothing;
//! then one node loses its power (every process of it killed) and the cluster keeps serving, and
//! heals when the node comes back.
//!
//! The workers are reserved for this test (tainted; the cluster tolerates the taint and selects
//! their label) and the first node is never drained, so the other node tests run beside it.

use anyhow::{Context as _, Result, bail, ensure};
use futures::FutureExt as _;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, Pod, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, conditions, names};
use openbao_client::BaoClient;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testkit::node::workers::{self, Scheduling, Worker};
use tokio::process::Command;

mod node_common;
use node_common::bluegreen::{raft_peers, start_load};
use node_common::{
    HostOperator, LoadReport, PublicIp, check_acknowledged, check_no_failed_operations, cluster_admin, condition,
    create, in_namespaces, learn_public_ip, print_server_logs, public_client_config,
};

const CLUSTER: &str = "spread";
/// The test's namespaces are named after this.
const NAMESPACE: &str = "bao-spread";
const SERVERS: usize = 3;
/// Longest a server may take to come back after its node is uncordoned or restarted.
const SERVER_BACK: Duration = Duration::from_secs(180);

// Two workers: the load client keeps its 200 ms pace while the test waits on the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_on_three_nodes_survive_drains_and_a_lost_node() -> Result<()> {
    let root = testkit::node::running_node()
        .await
        .context("no hermetic node is running: `make test` starts one, or run `make cluster-up`")?;
    let added = Instant::now();
    let result = AssertUnwindSafe(async {
        let workers = workers::add(&root, SERVERS as u8, Scheduling::Reserved).await?;
        eprintln!("{SERVERS} workers Ready after {:.1?}", added.elapsed());
        let tested = in_namespaces(NAMESPACE, async |client: &Client, ns: &str, op_ns: &str| {
            spread_drain_and_lose(&root, &workers, client, ns, op_ns).await
        })
        .await;
        // The servers' volumes are deleted by helper pods on their own nodes: wait for that
        // while the workers still run, so no volume is left pinned to a node that is gone.
        let cleanup = Instant::now();
        volumes_deleted(&node_common::node_client().await?).await?;
        eprintln!("namespaces and volumes gone after {:.1?}", cleanup.elapsed());
        tested
    })
    .catch_unwind()
    .await;
    // The workers go whatever happened: the next test finds the single node it expects.
    let removing = Instant::now();
    let removed = workers::remove_all(&root).await;
    eprintln!(
        "workers removed, add-ons Ready on the first node after {:.1?}",
        removing.elapsed()
    );
    let result = result.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    result.and(removed)
}

async fn spread_drain_and_lose(root: &Path, workers: &[Worker], client: &Client, ns: &str, op_ns: &str) -> Result<()> {
    create::<ServiceAccount>(client, ns, json!({"metadata": {"name": "bao-admin"}})).await?;
    let (operator, public_ip) = HostOperator::start(client, ns, op_ns).await?;
    let selector = format!("{}={CLUSTER}", openbao_render::labels::CLUSTER_LABEL);
    create::<OpenBaoCluster>(client, ns, json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster", "metadata": {"name": CLUSTER},
        "spec": {
            "version": "2.7.2", "profile": "Development", "replicas": SERVERS, "storage": {"size": "256Mi"},
            "workloadHardening": {"appArmorEnabled": false},
            // On the reserved workers only.
            "nodeSelector": {workers::RESERVED: "true"},
            "tolerations": [{"key": workers::RESERVED, "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
            // One server per node, or none: a hard spread (the default is a soft one).
            "topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {openbao_render::labels::CLUSTER_LABEL: CLUSTER}}
            }],
            "selfInit": {
                "oidc": {"adminServiceAccount": {"name": "bao-admin"}},
                "requests": [{"name": "kv", "operation": "update", "path": "sys/mounts/secret", "data": {"type": "kv", "options": {"version": "2"}}}]
            }
        }
    }))
    .await?;
    wait_available(client, ns, &public_ip, Duration::from_secs(300)).await?;

    // One server on each node.
    let placement = server_nodes(client, ns, &selector).await?;
    let nodes: BTreeSet<&String> = placement.values().collect();
    eprintln!("servers on nodes: {placement:?}");
    ensure!(nodes.len() == SERVERS, "3 servers on 3 distinct nodes: {placement:?}");
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
        .get(&names::pdb(CLUSTER))
        .await
        .context("the operator's PodDisruptionBudget")?;
    eprintln!("PodDisruptionBudget spec: {:?}", pdb.spec);

    let admin = cluster_admin(client, ns, CLUSTER, &public_ip).await?;
    wait_raft_healthy(&admin).await?;
    let config = public_client_config(client, ns, CLUSTER, &public_ip).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let load_epoch = Instant::now();
    let load = start_load(&admin, config.clone(), stop.clone());

    // Drain each node in turn; its server waits (Pending: its disk is on that node) until the
    // node is uncordoned, and the next drain starts only when all three serve again.
    let kubeconfig = root.join("kubeconfig");
    let all_nodes: Vec<String> = workers.iter().map(Worker::name).collect();
    for (i, node) in all_nodes.iter().enumerate() {
        let began = Instant::now();
        let evicted = placement
            .iter()
            .find(|(_, n)| *n == node)
            .map(|(pod, _)| pod.clone())
            .context("a server on every node")?;
        // Whether the drain takes the active server (its hand-over then counts in the client's
        // failure window), on the load client's clock, to line up with its failed attempts.
        let active = match admin.leader().await {
            Ok(leader) => leader.leader_address,
            Err(err) => format!("unknown ({err})"),
        };
        eprintln!(
            "draining {node} ({evicted}) at {:.1}s; active server: {active}",
            load_epoch.elapsed().as_secs_f64()
        );
        kubectl(
            &kubeconfig,
            &[
                "drain",
                node,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=300s",
            ],
        )
        .await?;
        eprintln!("drained {node} ({evicted} evicted) in {:.1?}", began.elapsed());
        wait_unschedulable(client, ns, &evicted).await?;
        if i == 0 {
            // While that server waits, the budget is spent: draining a second node must not
            // evict its server.
            let next = &all_nodes[1];
            let refused = kubectl(
                &kubeconfig,
                &[
                    "drain",
                    next,
                    "--ignore-daemonsets",
                    "--delete-emptydir-data",
                    "--timeout=15s",
                ],
            )
            .await
            .err()
            .context("a second drain while a server is down must not finish")?;
            ensure!(
                format!("{refused:#}").contains("disruption budget"),
                "the second drain was held by the PodDisruptionBudget: {refused:#}"
            );
            let running = server_nodes(client, ns, &selector).await?;
            ensure!(
                running.values().filter(|n| *n == next).count() == 1,
                "the server on {next} still runs: {running:?}"
            );
            kubectl(&kubeconfig, &["uncordon", next]).await?;
            eprintln!("a drain of {next} meanwhile: held by the PodDisruptionBudget");
        }
        kubectl(&kubeconfig, &["uncordon", node]).await?;
        wait_servers_back(client, ns, &selector, &admin).await?;
        let now = server_nodes(client, ns, &selector).await?;
        ensure!(
            now.get(&evicted) == Some(node),
            "{evicted} came back on its own node {node}: {now:?}"
        );
        eprintln!("{node}: all 3 servers serve again after {:.1?}", began.elapsed());
        // The drained server's old pod, and with it its log, is gone: what the servers said
        // during this drain is printed now (the harness shows it only if the test fails).
        print_server_logs(client, ns, Some(began.elapsed())).await;
    }
    stop.store(true, Ordering::Relaxed);
    let report = load.await?;
    print_report("drains", &report);
    check_no_failed_operations(&admin, &report)
        .await
        .context("during the drains")?;

    // A power loss of the worker with the last server: the other two keep serving.
    let lost = *workers.last().context("a worker")?;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&admin, config, stop.clone());
    let killed = Instant::now();
    workers::kill(root, &lost)?;
    eprintln!("killed every process of {}", lost.name());
    wait_node_not_ready(client, &lost.name()).await?;
    eprintln!("{} NotReady after {:.1?}", lost.name(), killed.elapsed());
    let during = {
        // The report so far is the load client's; read it by stopping and restarting.
        stop.store(true, Ordering::Relaxed);
        load.await?
    };
    print_report("node lost", &during);
    ensure!(
        during.acknowledged.len() >= 20,
        "the two servers left kept serving writes while {} was down: {} acknowledged",
        lost.name(),
        during.acknowledged.len()
    );
    workers::start(root, &lost, Scheduling::Reserved).await?;
    wait_servers_back(client, ns, &selector, &admin).await?;
    eprintln!("{} back, 3 servers serve after {:.1?}", lost.name(), killed.elapsed());
    check_acknowledged(&admin, &during).await?;
    let c = Api::<OpenBaoCluster>::namespaced(client.clone(), ns)
        .get(CLUSTER)
        .await?;
    ensure!(
        condition(&c, conditions::AVAILABLE).is_some_and(|(s, _)| s == "True"),
        "Available after the node came back: {:?}",
        c.status.map(|s| s.conditions)
    );
    operator.stop().await
}

/// Waits until no PersistentVolume of the test's namespaces is left.
async fn volumes_deleted(client: &Client) -> Result<()> {
    let volumes = Api::<PersistentVolume>::all(client.clone());
    let began = Instant::now();
    loop {
        let left: Vec<String> = volumes
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|pv| {
                pv.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .and_then(|c| c.namespace.as_deref())
                    .is_some_and(|ns| ns.starts_with(NAMESPACE))
            })
            .map(|pv| pv.name_any())
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        ensure!(
            began.elapsed() < Duration::from_secs(120),
            "volumes of the test still there 120 s after its namespaces were deleted: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn print_report(phase: &str, report: &LoadReport) {
    eprintln!(
        "{phase}: {} writes, {} reads, {} failed attempts retried, longest failure window {} ms, {} failed",
        report.writes,
        report.reads,
        report.failed_attempts,
        report.longest_outage.as_millis(),
        report.failed_writes + report.failed_reads
    );
}

/// `kubectl` of the node's build with the admin kubeconfig; fails with its output. Async: the
/// load client runs on the same runtime while a drain waits.
async fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<()> {
    static KUBECTL: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let program = match KUBECTL.get() {
        Some(path) => path.clone(),
        None => KUBECTL
            .get_or_init(|| testkit::cache::kubectl().expect("kubectl"))
            .clone(),
    };
    let out = Command::new(program)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .output()
        .await
        .context("run kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Server pod name → the node it runs on.
async fn server_nodes(client: &Client, ns: &str, selector: &str) -> Result<BTreeMap<String, String>> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await?;
    Ok(pods
        .items
        .iter()
        .filter_map(|p| Some((p.name_any(), p.spec.as_ref()?.node_name.clone()?)))
        .collect())
}

async fn wait_available(client: &Client, ns: &str, public_ip: &PublicIp, limit: Duration) -> Result<()> {
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    let began = Instant::now();
    loop {
        learn_public_ip(client, ns, CLUSTER, public_ip).await?;
        let c = clusters.get(CLUSTER).await?;
        let available =
            condition(&c, conditions::AVAILABLE).is_some_and(|(s, r)| s == "True" && r == "AllReplicasReady");
        if available && c.status.as_ref().is_some_and(|s| s.initialized) {
            eprintln!("cluster Available after {:.1?}", began.elapsed());
            return Ok(());
        }
        if began.elapsed() > limit {
            bail!("cluster not Available after {limit:?}: {:#?}", c.status);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The evicted server's new pod waits: its disk (a local-path volume) is on the cordoned node.
async fn wait_unschedulable(client: &Client, ns: &str, pod: &str) -> Result<()> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let began = Instant::now();
    loop {
        let unschedulable = pods.get_opt(pod).await?.is_some_and(|p| {
            p.status.and_then(|s| s.conditions).unwrap_or_default().iter().any(|c| {
                c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
            })
        });
        if unschedulable {
            return Ok(());
        }
        ensure!(
            began.elapsed() < Duration::from_secs(60),
            "{pod} not reported Unschedulable within 60 s of its node's drain"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every server's pod Ready and three healthy raft voters.
async fn wait_servers_back(client: &Client, ns: &str, selector: &str, admin: &BaoClient) -> Result<()> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let began = Instant::now();
    loop {
        let list = pods.list(&ListParams::default().labels(selector)).await?;
        let ready = list.items.iter().filter(|p| testkit::pods::is_ready(p)).count();
        if ready == SERVERS && raft_healthy(admin).await {
            return Ok(());
        }
        if began.elapsed() > SERVER_BACK {
            bail!(
                "servers not back within {SERVER_BACK:?}: {ready} of {SERVERS} pods Ready, raft {:?}",
                raft_peers(admin).await
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn raft_healthy(admin: &BaoClient) -> bool {
    let Ok(state) = admin.autopilot_state().await else {
        return false;
    };
    state.healthy && state.voters.len() == SERVERS
}

async fn wait_raft_healthy(admin: &BaoClient) -> Result<()> {
    let began = Instant::now();
    while !raft_healthy(admin).await {
        ensure!(
            began.elapsed() < Duration::from_secs(90),
            "raft not healthy with 3 voters: {:?}",
            raft_peers(admin).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

async fn wait_node_not_ready(client: &Client, name: &str) -> Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    let began = Instant::now();
    loop {
        let node = nodes.get(name).await?;
        let ready = node
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready {
            return Ok(());
        }
        ensure!(
            began.elapsed() < Duration::from_secs(120),
            "Node {name} still Ready 120 s after its processes were killed"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
