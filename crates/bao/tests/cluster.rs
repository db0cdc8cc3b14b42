//! Three real `bao` 2.7.2 processes: self-init on node 1 only, nodes 2 and 3 `retry_join` with
//! `leader_tls_servername` (the certificate has DNS SANs only). Covers the cluster views of the
//! client, step-down failover and the `remove-peer` traps.

mod common;

use anyhow::{Context, Result, ensure};
use common::{Workspace, admin};
use openbao_client::{AutopilotConfigUpdate, BaoClient, HealthState};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use testkit::openbao::{BaoServer, poll_until, wait_for_voters};

#[tokio::test]
async fn three_nodes_join_vote_fail_over_and_remove() -> Result<()> {
    let ws = Workspace::new()?;
    let bao = testkit::cache::bao_binary("2.7.2")?;
    let (addrs, specs) = ws.three_node_specs(&bao)?;
    let t0 = Instant::now();
    let mut nodes = specs.into_iter().map(BaoServer::start).collect::<Result<Vec<_>>>()?;

    nodes[0].wait_active(Duration::from_secs(60)).await?;
    eprintln!("TIMING node1 active: {} ms", t0.elapsed().as_millis());
    // Record what a joining follower reports on its way to standby (501 -> 503 -> 429).
    let seen = Mutex::new(Vec::<HealthState>::new());
    nodes[2]
        .wait_until("unsealed", Duration::from_secs(60), |h| {
            let mut seen = seen.lock().unwrap();
            if seen.last() != Some(&h.state) {
                seen.push(h.state);
            }
            h.state.is_unsealed()
        })
        .await?;
    nodes[1].wait_unsealed(Duration::from_secs(60)).await?;
    eprintln!(
        "TIMING 3 nodes unsealed: {} ms (node3 went through {:?})",
        t0.elapsed().as_millis(),
        seen.lock().unwrap()
    );

    let admin0 = admin(nodes[0].client()).await?;
    admin0
        .set_autopilot_config(&AutopilotConfigUpdate {
            server_stabilization_time: Some("2s".into()),
            ..Default::default()
        })
        .await?;
    let state = wait_for_voters(&admin0, 3, Duration::from_secs(60)).await?;
    eprintln!("TIMING 3 voters: {} ms", t0.elapsed().as_millis());
    ensure!(state.failure_tolerance == 1 && state.leader == "node1", "{state:?}");
    ensure!(
        state.servers.values().all(|s| s.version == "2.7.2" && s.healthy),
        "{state:?}"
    );

    let raft = admin0.raft_configuration().await?;
    ensure!(raft.servers.len() == 3 && raft.voters().count() == 3, "{raft:?}");
    ensure!(raft.leader().is_some_and(|l| l.node_id == "node1"), "{raft:?}");

    // A standby knows the leader, and forwards authenticated requests to it.
    let standby = nodes[2].client().with_token(common::token_of(&admin0));
    let leader = standby.leader().await?;
    ensure!(
        !leader.is_self && leader.leader_address == addrs[0].api_url(),
        "{leader:?}"
    );
    let demo = standby.read("secret/data/demo").await?.context("demo via standby")?;
    ensure!(demo["data"]["data"]["hello"] == "world", "{demo}");

    // Trap: remove-peer of an unknown id succeeds and changes nothing.
    admin0.remove_peer("no-such-node").await?;
    let raft = admin0.raft_configuration().await?;
    ensure!(
        raft.servers.len() == 3,
        "remove-peer of an unknown id changed the peers: {raft:?}"
    );

    // Step-down with the operator's JWT token (its policy has sudo on sys/step-down).
    let operator_login = nodes[0]
        .client()
        .login_jwt("jwt", "operator", &ws.operator_jwt("openbao")?)
        .await?;
    let operator0 = nodes[0].client().with_token(operator_login.token.clone());
    let t = Instant::now();
    operator0.step_down().await?;
    let new_leader = poll_until("a new active node", Duration::from_secs(30), || async {
        for (i, node) in nodes.iter().enumerate().skip(1) {
            if node.health().await.is_ok_and(|h| h.state == HealthState::Active) {
                return Ok(Some(i));
            }
        }
        Ok(None)
    })
    .await?;
    eprintln!(
        "TIMING step-down -> node{} active: {} ms",
        new_leader + 1,
        t.elapsed().as_millis()
    );
    // The old leader learns the new one a moment later (empty leader_address until then).
    let old = nodes[0].client();
    let leader = poll_until("node1 knows the new leader", Duration::from_secs(10), || async {
        Ok(Some(old.leader().await?).filter(|l| !l.leader_address.is_empty()))
    })
    .await?;
    ensure!(
        leader.leader_address == addrs[new_leader].api_url() && !leader.is_self,
        "{leader:?}"
    );

    // Remove the standby that did not become leader, through the new leader.
    let victim = if new_leader == 1 { 2 } else { 1 };
    let victim_id = format!("node{}", victim + 1);
    let operator_new = nodes[new_leader].client().with_token(operator_login.token);
    let t = Instant::now();
    operator_new.remove_peer(&victim_id).await?;
    let raft = operator_new.raft_configuration().await?;
    eprintln!("TIMING remove-peer {victim_id}: {} ms", t.elapsed().as_millis());
    ensure!(raft.servers.len() == 2 && raft.server(&victim_id).is_none(), "{raft:?}");

    // Trap: the removed node keeps reporting an unsealed standby; only stopping it ends that.
    let removed = nodes[victim].health().await?;
    ensure!(removed.state == HealthState::Standby, "removed peer: {removed:?}");
    nodes[victim].stop().await;

    let state = wait_two_voters(&operator_new).await?;
    ensure!(state.failure_tolerance == 0, "{state:?}");
    let t = Instant::now();
    for node in &mut nodes {
        node.stop().await;
    }
    eprintln!("TIMING graceful stop of the rest: {} ms", t.elapsed().as_millis());
    Ok(())
}

async fn wait_two_voters(client: &BaoClient) -> Result<openbao_client::AutopilotState> {
    poll_until(
        "autopilot shows exactly 2 healthy voters",
        Duration::from_secs(30),
        || async {
            let state = client.autopilot_state().await?;
            Ok((state.healthy && state.voters.len() == 2 && state.servers.len() == 2).then_some(state))
        },
    )
    .await
}
