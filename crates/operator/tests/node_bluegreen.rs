//! Blue/green upgrades on a real single-node cluster, run by the real controller (in-process, on
//! the host) against real OpenBao pods:
//! - 3 servers on 2.6.2 upgraded to 2.7.2 while a client writes and reads through the public
//!   Service every 200 ms: every acknowledged write is readable at the end, the cluster is 3
//!   voters on 2.7.2 (the green servers only), blue's StatefulSet and volumes are gone;
//! - a rollback before promotion (autoPromote false, `requests.rollback`) returns to blue with
//!   green removed from raft and deleted with its volumes, and the upgrade does not start again.
//!
//! Needs the node (`make cluster-up`) with both images loaded.

use anyhow::{Result, ensure};
use kube::Client;
use openbao_api::UpgradePhase;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod node_common;
use node_common::bluegreen::{
    CLUSTER, GREEN, Harness, check_acknowledged, check_upgraded_to_green, raft_peers, start_load,
    upgrade_to_green_under_load, upgraded,
};
use node_common::in_namespaces;

/// The two scenarios run one after the other: two 3-server clusters at once on a 2-core node would
/// measure the machine, not the upgrade (the write checks have 2 s windows).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_blue_green_upgrade_keeps_every_write_on_a_real_node() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    in_namespaces("bluegreen-upgrade", upgrade_under_load).await
}

async fn upgrade_under_load(client: &Client, ns: &str, op_ns: &str) -> Result<()> {
    let mut h = Harness::start(client, ns, op_ns).await?;
    let (admin, config) = h.create_cluster(json!({})).await?;
    ensure!(h.public_selector().await? == "server");
    let mut phases = Vec::new();
    let run = upgrade_to_green_under_load(&mut h, &admin, config, async |h, epoch| {
        h.watch_until(epoch, Duration::from_secs(600), &mut phases, upgraded)
            .await
    })
    .await?;
    let report = &run.report;
    eprintln!(
        "TIMING blue/green upgrade 2.6.2 -> 2.7.2 on the node: wall time {} ms; client: {} writes, {} reads, \
         {} failed attempts retried, longest window of failed requests {} ms",
        run.wall.as_millis(),
        report.writes,
        report.reads,
        report.failed_attempts,
        report.longest_outage.as_millis()
    );
    check_upgraded_to_green(&h, &admin, &run.done, report, run.epoch, &mut phases).await?;
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
