//! Smoke test on OpenBao 2.6.2: the same self-init and logins work, and an in-place binary
//! swap to 2.7.2 on the same data dir shows up in the version history.

mod common;

use anyhow::{Result, ensure};
use common::{Workspace, admin};
use futures::StreamExt;
use std::time::{Duration, Instant};
use testkit::openbao::{BaoServer, NodeAddr};

#[tokio::test]
async fn openbao_2_6_2_self_init_login_snapshot_and_in_place_upgrade() -> Result<()> {
    let ws = Workspace::new()?;
    let old = testkit::cache::bao_binary("2.6.2")?;
    let new = testkit::cache::bao_binary("2.7.2")?;
    let config = ws.node_config(0, NodeAddr::allocate()?);
    let t = Instant::now();
    let mut node = BaoServer::start(ws.node_spec(0, &config, true, &old)?)?;
    let health = node.wait_active(Duration::from_secs(60)).await?;
    eprintln!("TIMING 2.6.2 self-init -> active: {} ms", t.elapsed().as_millis());
    ensure!(health.version == "2.6.2", "{health:?}");

    let admin = admin(node.client()).await?;
    let login = node
        .client()
        .login_jwt("jwt", "operator", &ws.operator_jwt("openbao")?)
        .await?;
    ensure!(login.policies == ["default", "operator"], "{:?}", login.policies);
    let operator = node.client().with_token(login.token);
    let raft = operator.raft_configuration().await?;
    ensure!(raft.voters().count() == 1, "{raft:?}");
    let state = operator.autopilot_state().await?;
    ensure!(state.healthy && state.servers["node1"].version == "2.6.2", "{state:?}");
    let mut snapshot = operator.snapshot().await?;
    let first = snapshot.next().await.transpose()?.unwrap_or_default();
    ensure!(first.starts_with(&[0x1f, 0x8b]), "2.6.2 snapshot is not gzip");
    drop(snapshot);

    node.spec_mut().binary = new;
    let t = Instant::now();
    node.restart().await?;
    let health = node.wait_active(Duration::from_secs(30)).await?;
    eprintln!(
        "TIMING in-place swap 2.6.2 -> 2.7.2 active: {} ms",
        t.elapsed().as_millis()
    );
    ensure!(health.version == "2.7.2", "{health:?}");
    let history = admin.version_history().await?;
    eprintln!("version history: {history:?}");
    let versions: Vec<&str> = history.iter().map(|v| v.version.as_str()).collect();
    ensure!(versions == ["2.6.2", "2.7.2"], "{history:?}");
    ensure!(history[1].previous_version.as_deref() == Some("2.6.2"), "{history:?}");
    Ok(())
}
