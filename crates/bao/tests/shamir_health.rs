//! The health states an auto-unseal node never shows for long: a Shamir node (no seal stanza)
//! is uninitialized, then sealed after `sys/init`, active after `sys/unseal`, sealed again
//! after a restart. Uses the generic `write` without a token.

mod common;

use anyhow::{Context, Result, ensure};
use common::Workspace;
use openbao_client::{HealthState, Token};
use serde_json::json;
use std::time::{Duration, Instant};
use testkit::openbao::{BaoServer, NodeAddr};

#[tokio::test]
async fn shamir_node_walks_through_uninitialized_sealed_active() -> Result<()> {
    let ws = Workspace::new()?;
    let bao = testkit::cache::bao_binary("2.7.2")?;
    let mut config = ws.node_config(0, NodeAddr::allocate()?);
    config.static_seal_key_file = None;
    let mut node = BaoServer::start(ws.node_spec(0, &config, false, &bao)?)?;
    let client = node.client().clone();

    let health = node.wait_answering(Duration::from_secs(30)).await?;
    ensure!(health.state == HealthState::Uninitialized, "{health:?}");

    let t = Instant::now();
    let init = client
        .write("sys/init", &json!({ "secret_shares": 1, "secret_threshold": 1 }))
        .await?;
    eprintln!("TIMING sys/init: {} ms", t.elapsed().as_millis());
    let init = init.context("sys/init returned no body")?;
    let key = init["keys"][0].as_str().context("unseal key")?.to_string();
    let root = Token::new(init["root_token"].as_str().context("root token")?);

    let health = client.health().await?;
    ensure!(
        health.state == HealthState::Sealed && health.initialized && health.sealed,
        "{health:?}"
    );
    ensure!(
        health.cluster_id.is_none(),
        "sealed nodes do not report a cluster id: {health:?}"
    );
    let seal = client.seal_status().await?;
    ensure!(
        seal.seal_type == "shamir" && seal.sealed && seal.t == 1 && seal.n == 1,
        "{seal:?}"
    );

    client.write("sys/unseal", &json!({ "key": key })).await?;
    node.wait_active(Duration::from_secs(30)).await?;
    let me = client.with_token(root).token_lookup_self().await?;
    ensure!(me.policies == ["root"], "{me:?}");

    let t = Instant::now();
    node.restart().await?;
    let health = node.wait_answering(Duration::from_secs(30)).await?;
    eprintln!(
        "TIMING Shamir restart -> answering {:?}: {} ms",
        health.state,
        t.elapsed().as_millis()
    );
    ensure!(health.state == HealthState::Sealed, "{health:?}");
    Ok(())
}
