//! Raft membership through the API, as the upgrade state machine drives it: an uninitialized
//! node joins as a non-voter with `sys/storage/raft/join`, then is promoted and demoted.

mod common;

use anyhow::{Context, Result, ensure};
use common::{Workspace, admin};
use openbao_client::{AutopilotConfigUpdate, AutopilotState, BaoClient, HealthState, RaftJoin};
use std::time::{Duration, Instant};
use testkit::openbao::{BaoServer, NodeAddr, pod_host, poll_until};

#[tokio::test]
async fn api_join_as_non_voter_then_promote_and_demote() -> Result<()> {
    let ws = Workspace::new()?;
    let bao = testkit::cache::bao_binary("2.7.2")?;
    let (addr_a, addr_b) = (NodeAddr::allocate()?, NodeAddr::allocate()?);
    let mut a = BaoServer::start(ws.node_spec(0, &ws.node_config(0, addr_a), true, &bao)?)?;
    // Node B: same static seal key, no retry_join, no self-init: it waits uninitialized.
    let mut b = BaoServer::start(ws.node_spec(1, &ws.node_config(1, addr_b), false, &bao)?)?;

    let health = b.wait_answering(Duration::from_secs(30)).await?;
    ensure!(
        health.state == HealthState::Uninitialized && !health.initialized,
        "{health:?}"
    );
    a.wait_active(Duration::from_secs(60)).await?;
    let admin = admin(a.client()).await?;
    admin
        .set_autopilot_config(&AutopilotConfigUpdate {
            server_stabilization_time: Some("2s".into()),
            ..Default::default()
        })
        .await?;

    let join = RaftJoin {
        leader_api_addr: addr_a.api_url(),
        leader_ca_cert: Some(ws.tls.ca_pem().to_string()),
        leader_tls_servername: Some(pod_host(common::NAMESPACE, 0)),
        non_voter: true,
        retry: false,
    };
    // Trap: on an already initialized node a join is a silent no-op that still says joined.
    ensure!(a.client().join_raft(&join).await?, "join on an initialized node");
    let raft = admin.raft_configuration().await?;
    ensure!(
        raft.servers.len() == 1 && a.health().await?.state == HealthState::Active,
        "{raft:?}"
    );

    let t = Instant::now();
    ensure!(b.client().join_raft(&join).await?, "join answered joined=false");
    b.wait_unsealed(Duration::from_secs(30)).await?;
    eprintln!("TIMING API join -> standby: {} ms", t.elapsed().as_millis());

    let raft = admin.raft_configuration().await?;
    let node2 = raft.server("node2").context("node2 in raft configuration")?;
    ensure!(!node2.voter && raft.voters().count() == 1, "{raft:?}");
    // Autopilot learns of a new server at its next update tick (1 s here).
    let (state, server) = poll_until("node2 in autopilot as a non-voter", Duration::from_secs(15), || async {
        let state = admin.autopilot_state().await?;
        let server = state
            .servers
            .get("node2")
            .filter(|s| s.node_type == "non-voter" && s.status == "non-voter")
            .cloned();
        Ok(server.map(|s| (state, s)))
    })
    .await?;
    eprintln!("non-voter in autopilot: {server:?}, non_voters={:?}", state.non_voters);

    let t = Instant::now();
    admin.promote("node2").await?;
    // node_type flips at the next autopilot update (1 s here), the vote after stabilization.
    let state = wait_voters(&admin, 2).await?;
    ensure!(state.servers["node2"].node_type == "voter", "{state:?}");
    eprintln!("TIMING promote -> 2 voters: {} ms", t.elapsed().as_millis());

    let err = admin.promote("node2").await.unwrap_err();
    eprintln!("promote of a voter: {err}");
    ensure!(
        err.status() == Some(500) && err.to_string().contains("not a non-voter"),
        "{err}"
    );

    let t = Instant::now();
    admin.demote("node2").await?;
    let state = wait_voters(&admin, 1).await?;
    eprintln!("TIMING demote -> 1 voter: {} ms", t.elapsed().as_millis());
    ensure!(state.servers["node2"].node_type == "non-voter", "{state:?}");
    Ok(())
}

async fn wait_voters(client: &BaoClient, voters: usize) -> Result<AutopilotState> {
    poll_until(&format!("exactly {voters} voters"), Duration::from_secs(30), || async {
        let state = client.autopilot_state().await?;
        Ok((state.voters.len() == voters).then_some(state))
    })
    .await
}
