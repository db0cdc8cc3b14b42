//! The cluster's NetworkPolicy, enforced by a real engine (the node runs kube-router in firewall
//! mode): a 3-server cluster becomes Available with the policy in force (raft on 8201, DNS and
//! the apiserver for service registration all pass); from a pod in an unrelated namespace, 8200
//! and 8201 are refused; from a namespace the cluster lists (`telemetry.scrapeNamespaces`) 8200
//! answers and 8201 stays refused; from inside an OpenBao pod, a destination the policy does not
//! list is refused while the same destination answers from elsewhere, and cluster DNS answers.
//! Every probe waits for the state it expects (the engine applies a policy within seconds).
//! Needs the node: `make test` starts it (`make cluster-up` by hand).

use anyhow::{Context as _, Result, bail};
use futures::FutureExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, conditions};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use testkit::apiserver::create_restricted_namespace;
use testkit::probe::{Exec, Reach, pod_ip, start_pod};

mod node_common;
use node_common::{HostOperator, condition, create, in_namespaces};

/// How long a probe may wait for the engine to apply what the policy says.
const ENFORCED_WITHIN: Duration = Duration::from_secs(45);
const WEB_PORT: u16 = 8080;

#[tokio::test]
async fn only_listed_peers_reach_openbao_and_openbao_reaches_only_what_it_needs() -> Result<()> {
    in_namespaces("bao-netpol", with_two_more_namespaces).await
}

/// Two more namespaces: one the cluster lists, one it does not. Removed however the test ends.
async fn with_two_more_namespaces(client: &Client, ns: &str, op_ns: &str) -> Result<()> {
    let listed = create_restricted_namespace(client, "bao-netpol-listed").await?;
    let unlisted = create_restricted_namespace(client, "bao-netpol-unlisted").await?;
    let result = AssertUnwindSafe(probe_the_policy(client, ns, op_ns, &listed, &unlisted))
        .catch_unwind()
        .await;
    let namespaces = Api::<Namespace>::all(client.clone());
    for n in [&listed, &unlisted] {
        namespaces.delete(n, &DeleteParams::default()).await.ok();
    }
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

async fn probe_the_policy(client: &Client, ns: &str, op_ns: &str, listed: &str, unlisted: &str) -> Result<()> {
    let (operator, _public_ip) = HostOperator::start(client, ns, op_ns).await?;

    let started = Instant::now();
    create::<OpenBaoCluster>(
        client,
        ns,
        serde_json::json!({
            "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster", "metadata": {"name": "np"},
            "spec": {
                "version": "2.7.2", "profile": "Development", "replicas": 3, "storage": {"size": "256Mi"},
                // The hermetic node has no AppArmor: a node limitation, stated where it is turned off.
                "workloadHardening": {"appArmorEnabled": false},
                "telemetry": {"scrapeNamespaces": [listed]},
            }
        }),
    )
    .await?;
    // The probes start while the cluster comes up.
    let listed_prober = start_pod(client, listed, "prober", &["sleep", "3600"]).await?;
    let unlisted_prober = start_pod(client, unlisted, "prober", &["sleep", "3600"]).await?;
    let web = start_pod(
        client,
        unlisted,
        "web",
        &["httpd", "-f", "-p", &WEB_PORT.to_string(), "-h", "/"],
    )
    .await?;

    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    loop {
        let c = clusters.get("np").await?;
        if condition(&c, conditions::AVAILABLE).is_some_and(|(s, r)| s == "True" && r == "AllReplicasReady") {
            break;
        }
        if started.elapsed() > Duration::from_secs(240) {
            bail!(
                "cluster not Available under the enforced policy after 240 s: {:#?}",
                c.status
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "3 servers Available with the policy enforced (raft on 8201, DNS, apiserver): {:.1?}",
        started.elapsed()
    );

    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let servers = pods
        .list(&ListParams::default().labels("openbao.org/cluster=np"))
        .await?
        .items;
    let server = servers.first().context("no server pod")?;
    let server_ip = pod_ip(server)?;
    let web_ip = pod_ip(&web)?;

    let unlisted_from = Exec::new(unlisted, &unlisted_prober.name_any(), None).await?;
    let listed_from = Exec::new(listed, &listed_prober.name_any(), None).await?;
    let openbao_from = Exec::new(ns, &server.name_any(), Some("openbao")).await?;

    for port in [8200, 8201] {
        unlisted_from
            .wait_for(&server_ip, port, Reach::Refused, ENFORCED_WITHIN)
            .await?;
    }
    listed_from
        .wait_for(&server_ip, 8200, Reach::Open, ENFORCED_WITHIN)
        .await?;
    listed_from
        .wait_for(&server_ip, 8201, Reach::Refused, ENFORCED_WITHIN)
        .await?;
    // The destination answers from a pod without a policy, and is refused from OpenBao.
    listed_from
        .wait_for(&web_ip, WEB_PORT, Reach::Open, ENFORCED_WITHIN)
        .await?;
    openbao_from
        .wait_for(&web_ip, WEB_PORT, Reach::Refused, ENFORCED_WITHIN)
        .await?;
    // What OpenBao needs still passes: cluster DNS, and the other servers on 8201.
    let lookup = openbao_from
        .run(&["nslookup", &format!("np-public.{ns}.svc.cluster.local")])
        .await?;
    if !lookup.contains("Address") {
        bail!("DNS from an OpenBao pod failed under the policy: {lookup}");
    }
    for peer in servers.iter().skip(1) {
        openbao_from
            .wait_for(&pod_ip(peer)?, 8201, Reach::Open, ENFORCED_WITHIN)
            .await?;
    }

    operator.stop().await?;
    Ok(())
}
