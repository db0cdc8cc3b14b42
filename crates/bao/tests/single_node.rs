//! One real `bao` 2.7.2 node (static seal, self-init, TLS verified by hostname through the
//! resolve override) exercised through every client call.

mod common;

use anyhow::{Context, Result, ensure};
use common::{DEMO_PASSWORD, Workspace, admin};
use futures::StreamExt;
use openbao_client::{AutopilotConfigUpdate, BaoClient, BaoError, Bytes, ClientConfig, HealthState};
use serde_json::json;
use std::time::{Duration, Instant};
use testkit::openbao::{BaoServer, NodeAddr};

#[tokio::test]
async fn single_node_covers_the_client_api() -> Result<()> {
    let ws = Workspace::new()?;
    let bao = testkit::cache::bao_binary("2.7.2")?;
    let addr = NodeAddr::allocate()?;
    let config = ws.node_config(0, addr);
    let spec = ws.node_spec(0, &config, true, &bao)?;
    let t0 = Instant::now();
    let mut node = BaoServer::start(spec)?;

    // While self-init runs the listener is closed: a connect error, which callers retry.
    let early = node.client().health().await;
    if let Err(e) = &early {
        ensure!(
            e.is_connect() && e.is_retryable(),
            "early health error should be a connect error: {e}"
        );
        eprintln!("health before self-init finished: {e}");
    }
    let health = node.wait_active(Duration::from_secs(60)).await?;
    eprintln!(
        "TIMING single node self-init -> active: {} ms",
        t0.elapsed().as_millis()
    );
    ensure!(health.initialized && !health.sealed && !health.standby, "{health:?}");
    ensure!(health.version == "2.7.2", "version {}", health.version);
    ensure!(
        health.cluster_id.is_some() && health.cluster_name.is_some(),
        "{health:?}"
    );

    let anon = node.client().clone();
    let seal = anon.seal_status().await?;
    ensure!(
        seal.seal_type == "static" && seal.initialized && !seal.sealed && seal.recovery_seal,
        "{seal:?}"
    );
    let leader = anon.leader().await?;
    ensure!(
        leader.ha_enabled && leader.is_self && leader.leader_address == addr.api_url(),
        "{leader:?}"
    );

    // Authenticated calls without a token fail before any request is sent.
    let err = anon.raft_configuration().await.unwrap_err();
    ensure!(matches!(err, BaoError::MissingToken { .. }), "{err}");

    tls_is_verified_by_hostname(&ws, &addr).await?;
    logins(&ws, &anon).await?;

    let admin = admin(&anon).await?;
    ensure!(
        !format!("{admin:?}").contains(admin.token().unwrap().expose()),
        "client Debug leaks the token"
    );
    let me = admin.token_lookup_self().await?;
    ensure!(me.policies.contains(&"admin".to_string()) && me.ttl > 0, "{me:?}");

    kv_read_write_list(&admin).await?;
    raft_and_autopilot(&admin, &config.node_id).await?;

    let history = admin.version_history().await?;
    ensure!(history.iter().any(|v| v.version == "2.7.2"), "{history:?}");

    snapshot_and_restore(&mut node, &admin).await?;

    // Restart on the same data dir: auto-unseals from the static key, data is still there.
    let t = Instant::now();
    node.restart().await?;
    node.wait_active(Duration::from_secs(30)).await?;
    eprintln!("TIMING single node restart -> active: {} ms", t.elapsed().as_millis());
    let admin = common::admin(node.client()).await?;
    let marker = admin
        .read("secret/data/marker")
        .await?
        .context("marker after restart")?;
    ensure!(marker["data"]["data"]["v"] == "1", "{marker}");

    // Step-down on a single node answers 204; the node then stays standby for ~10 s (OpenBao
    // does not retake leadership right after a manual step-down).
    admin.step_down().await?;
    let after = node.health().await?;
    eprintln!("single node right after step-down: {:?}", after.state);
    ensure!(after.state == HealthState::Standby, "{after:?}");

    // SIGHUP reloads without stopping the node.
    node.sighup()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(node.is_running(), "node died on SIGHUP:\n{}", node.log_tail(20));
    node.wait_unsealed(Duration::from_secs(10)).await?;

    // Trap worth knowing: SIGTERM during that post-step-down wait only completes when the wait
    // ends (~10 s), so pods need a grace period above that.
    let t = Instant::now();
    node.stop().await;
    eprintln!(
        "TIMING graceful stop right after step-down: {} ms",
        t.elapsed().as_millis()
    );

    // A dead node is a connect error, distinguishable from API errors.
    let err = admin.raft_configuration().await.unwrap_err();
    ensure!(
        err.is_connect() && err.is_retryable() && err.status().is_none(),
        "{err}"
    );
    eprintln!("error for a stopped node: {err}");
    ensure!(
        !err.to_string().contains(admin.token().unwrap().expose()),
        "error leaks the token"
    );
    Ok(())
}

async fn tls_is_verified_by_hostname(ws: &Workspace, addr: &NodeAddr) -> Result<()> {
    // Wrong name (not in the certificate's SANs) on the right address.
    let wrong = ClientConfig::new(format!("https://openbao-0.elsewhere.svc:{}", addr.api_port))
        .with_ca_pem(ws.tls.ca_pem().as_bytes().to_vec())
        .with_resolve_to(addr.ip.into());
    let err = BaoClient::new(wrong)?.health().await.unwrap_err();
    ensure!(
        err.is_connect() && err.to_string().contains("certificate"),
        "wrong host name: {err}"
    );
    eprintln!("wrong TLS name: {err}");

    // Right name, but a CA the node's certificate does not chain to.
    let other_ca = testkit::pki::TestCa::new("unrelated-ca");
    let mut untrusted = ws.tls.client_config(0, addr);
    untrusted.ca_pem = Some(other_ca.pem.cert.into_bytes());
    let err = BaoClient::new(untrusted)?.health().await.unwrap_err();
    ensure!(
        err.is_connect() && err.to_string().contains("certificate"),
        "untrusted CA: {err}"
    );

    // Not a certificate at all: a configuration error up front.
    let mut garbage = ws.tls.client_config(0, addr);
    garbage.ca_pem = Some(b"not a pem".to_vec());
    ensure!(
        matches!(BaoClient::new(garbage), Err(BaoError::Config(_))),
        "garbage CA accepted"
    );
    Ok(())
}

async fn logins(ws: &Workspace, anon: &BaoClient) -> Result<()> {
    let login = anon.login_userpass("userpass", "demo", DEMO_PASSWORD).await?;
    ensure!(login.policies.contains(&"admin".to_string()), "{login:?}");
    ensure!(
        !format!("{login:?}").contains(login.token.expose()),
        "Login Debug leaks the token"
    );

    let err = anon
        .login_userpass("userpass", "demo", "wrong-password")
        .await
        .unwrap_err();
    ensure!(err.status() == Some(400) && !err.is_retryable(), "{err}");
    ensure!(
        !err.to_string().contains("wrong-password"),
        "error leaks the password: {err}"
    );
    eprintln!("wrong password: {err}");

    let jwt = ws.operator_jwt("openbao")?;
    let login = anon.login_jwt("jwt", "operator", &jwt).await?;
    ensure!(login.policies == ["default", "operator"], "{:?}", login.policies);
    ensure!(
        login.lease_duration == Duration::from_secs(3600),
        "{:?}",
        login.lease_duration
    );

    let operator = anon.with_token(login.token);
    let raft = operator.raft_configuration().await?;
    ensure!(raft.servers.len() == 1, "{raft:?}");
    // Another timeout keeps the node (this client's host name resolves nowhere: it is pinned
    // to the node's IP), the trust anchors and the token.
    let patient = operator.with_timeout(Duration::from_secs(120))?;
    let own = patient.token_lookup_self().await?;
    ensure!(
        own.token_type == "service" && own.policies.contains(&"operator".to_string()),
        "{own:?}"
    );
    let err = operator.read("sys/mounts").await.unwrap_err();
    ensure!(
        err.status() == Some(403) && err.api_errors().iter().any(|e| e.contains("permission denied")),
        "{err}"
    );

    let bad = ws.operator_jwt("someone-else")?;
    let err = anon.login_jwt("jwt", "operator", &bad).await.unwrap_err();
    eprintln!("bad audience: {err}");
    ensure!(err.status() == Some(400), "{err}");
    ensure!(err.to_string().contains("PUT /v1/auth/jwt/login"), "{err}");
    ensure!(
        err.api_errors()
            .iter()
            .any(|e| e.contains("invalid audience (aud) claim")),
        "{err}"
    );
    ensure!(!err.to_string().contains(&bad), "error leaks the JWT");
    Ok(())
}

async fn kv_read_write_list(admin: &BaoClient) -> Result<()> {
    let seed = admin
        .read("secret/data/demo")
        .await?
        .context("self-init seed missing")?;
    ensure!(seed["data"]["data"]["hello"] == "world", "{seed}");

    let written = admin
        .write("secret/data/marker", &json!({ "data": { "v": "1" } }))
        .await?;
    ensure!(
        written.as_ref().is_some_and(|w| w["data"]["version"] == 1),
        "{written:?}"
    );
    let marker = admin.read("secret/data/marker").await?.context("marker")?;
    ensure!(marker["data"]["data"]["v"] == "1", "{marker}");

    ensure!(
        admin.read("secret/data/absent").await?.is_none(),
        "absent key should be None"
    );
    let keys = admin.list("secret/metadata").await?;
    ensure!(
        keys.contains(&"demo".to_string()) && keys.contains(&"marker".to_string()),
        "{keys:?}"
    );
    ensure!(
        admin.list("secret/metadata/nothing-here").await?.is_empty(),
        "list of nothing"
    );
    Ok(())
}

async fn raft_and_autopilot(admin: &BaoClient, node_id: &str) -> Result<()> {
    let raft = admin.raft_configuration().await?;
    ensure!(raft.voters().count() == 1, "{raft:?}");
    let me = raft.leader().context("no leader in raft configuration")?;
    ensure!(me.node_id == node_id && me.voter, "{raft:?}");

    let state = admin.autopilot_state().await?;
    eprintln!("autopilot state: {state:?}");
    ensure!(
        state.healthy && state.leader == node_id && state.voters == [node_id],
        "{state:?}"
    );
    let server = state.servers.get(node_id).context("self in autopilot servers")?;
    ensure!(
        server.status == "leader" && server.node_type == "voter" && server.healthy,
        "{server:?}"
    );
    ensure!(server.version == "2.7.2" && server.last_index > 0, "{server:?}");

    admin
        .set_autopilot_config(&AutopilotConfigUpdate {
            server_stabilization_time: Some("2s".into()),
            ..Default::default()
        })
        .await?;
    let config = admin.autopilot_config().await?;
    eprintln!("autopilot config: {config:?}");
    ensure!(config.server_stabilization_time == "2s", "{config:?}");
    Ok(())
}

async fn snapshot_and_restore(node: &mut BaoServer, admin: &BaoClient) -> Result<()> {
    let t = Instant::now();
    let mut stream = admin.snapshot().await?;
    let mut chunks: Vec<Bytes> = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk?);
    }
    let size: usize = chunks.iter().map(Bytes::len).sum();
    eprintln!(
        "TIMING snapshot: {size} bytes in {} chunks, {} ms",
        chunks.len(),
        t.elapsed().as_millis()
    );
    let first = chunks.iter().find(|c| !c.is_empty()).context("empty snapshot")?;
    ensure!(
        first.len() >= 2 && first[..2] == [0x1f, 0x8b],
        "snapshot is not gzip: {:02x?}",
        &first[..2]
    );

    // Changes after the snapshot are undone by restoring it.
    admin.delete("secret/data/marker").await?;
    admin
        .write("secret/data/after-snapshot", &json!({ "data": { "v": "2" } }))
        .await?;
    ensure!(
        admin.read("secret/data/marker").await?.is_none(),
        "marker should be deleted"
    );

    let t = Instant::now();
    let upload = futures::stream::iter(chunks.clone().into_iter().map(Ok::<_, std::io::Error>));
    admin.restore_snapshot_stream(upload, true).await?;
    eprintln!(
        "TIMING restore (force, streamed upload): {} ms",
        t.elapsed().as_millis()
    );
    node.wait_active(Duration::from_secs(30)).await?;
    let admin = common::admin(node.client()).await?;
    let marker = admin
        .read("secret/data/marker")
        .await?
        .context("marker after restore")?;
    ensure!(marker["data"]["data"]["v"] == "1", "{marker}");
    ensure!(
        admin.read("secret/data/after-snapshot").await?.is_none(),
        "post-snapshot write survived the restore"
    );

    // The non-force form accepts a snapshot sealed with the same key.
    let whole: Vec<u8> = chunks.concat();
    let t = Instant::now();
    admin.restore_snapshot(Bytes::from(whole), false).await?;
    eprintln!(
        "TIMING restore (non-force, from memory): {} ms",
        t.elapsed().as_millis()
    );
    node.wait_active(Duration::from_secs(30)).await?;

    // Garbage is rejected with a readable API error.
    let admin = common::admin(node.client()).await?;
    let err = admin
        .restore_snapshot(Bytes::from_static(b"not a snapshot"), false)
        .await
        .unwrap_err();
    eprintln!("garbage snapshot: {err}");
    ensure!(err.status().is_some_and(|s| s >= 400), "{err}");
    ensure!(
        node.client().health().await?.state == HealthState::Active,
        "node not active after bad restore"
    );
    Ok(())
}
