//! `RaftMembershipReady` against a real 3-server OpenBao 2.7.2 raft cluster (processes on
//! loopback): the operator's read (`raft_membership::observe`, through `crates/bao`) logged in
//! with the operator's own policy (`selfinit::OPERATOR_POLICY`), and its pure decision.
//!
//! Proven: all three voters healthy → True `Healthy` (read through the leader and through a
//! standby, which forwards the read); one server stopped → False `Unhealthy` with 2/3 voters
//! healthy while a quorum still serves (`Available` keeps `QuorumReady`); the server back → True
//! again; two of three stopped → no quorum (the read fails or names no leader) and `Available`
//! is False.

use anyhow::{Context, Result, ensure};
use openbao_api::conditions::Status;
use openbao_client::{AutopilotConfigUpdate, BaoClient};
use openbao_operator::controllers::cluster::raft_membership::{self as raft, Quorum, RaftObservation};
use std::time::{Duration, Instant};
use testkit::openbao::{
    BaoServer, NodeAddr, TestNodeConfig, TestTls, poll_until, wait_for_voters, write_static_seal_key,
};

const NAMESPACE: &str = "obraft";
const REPLICAS: i32 = 3;
const OPERATOR_PASSWORD: &str = "operator-password-for-the-raft-test";
const ADMIN_PASSWORD: &str = "admin-password-for-the-raft-test";
/// Autopilot marks a stopped server unhealthy after `last_contact_threshold` (its default,
/// 10 s, as the operator leaves it: followers report in only every few seconds, so 2 s already
/// marks running standbys unhealthy now and then).
const WAIT: Duration = Duration::from_secs(60);

/// Self-init: the operator's policy as rendered, a userpass user holding only it, and an admin.
fn initialize_hcl() -> String {
    format!(
        r#"
initialize "policies" {{
  request "operator-policy" {{
    operation = "update"
    path      = "sys/policies/acl/openbao-operator"
    data = {{
      policy = <<EOP
{operator}
EOP
    }}
  }}
  request "admin-policy" {{
    operation = "update"
    path      = "sys/policies/acl/admin"
    data = {{
      policy = <<EOP
path "*" {{ capabilities = ["create", "read", "update", "patch", "delete", "list", "sudo"] }}
EOP
    }}
  }}
}}

initialize "auth" {{
  request "enable-userpass" {{
    operation = "update"
    path      = "sys/auth/userpass"
    data      = {{ type = "userpass" }}
  }}
  request "operator-user" {{
    operation = "update"
    path      = "auth/userpass/users/operator"
    data = {{
      password       = "{OPERATOR_PASSWORD}"
      token_policies = ["openbao-operator"]
    }}
  }}
  request "admin-user" {{
    operation = "update"
    path      = "auth/userpass/users/admin"
    data = {{
      password       = "{ADMIN_PASSWORD}"
      token_policies = ["admin"]
    }}
  }}
}}
"#,
        operator = openbao_render::selfinit::OPERATOR_POLICY.trim_end()
    )
}

async fn login(client: &BaoClient, user: &str, password: &str) -> Result<BaoClient> {
    let login = client.login_userpass("userpass", user, password).await?;
    Ok(client.with_token(login.token))
}

async fn observe(client: &BaoClient) -> RaftObservation {
    raft::observe(client).await
}

#[tokio::test]
async fn raft_membership_follows_a_real_cluster() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("openbao-raft-membership-").tempdir()?;
    let tls = TestTls::generate(&dir.path().join("tls"), NAMESPACE)?;
    let seal_key = write_static_seal_key(&dir.path().join("tls/unseal.key"))?;
    let bao = testkit::cache::bao_binary("2.7.2")?;
    let addrs = [NodeAddr::allocate()?, NodeAddr::allocate()?, NodeAddr::allocate()?];
    let init = initialize_hcl();
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let data_dir = dir.path().join(format!("n{i}/data"));
        let mut config = TestNodeConfig::new(&format!("node{}", i + 1), *addr, &data_dir, &tls).static_seal(&seal_key);
        for (j, peer) in addrs.iter().enumerate().filter(|(j, _)| *j != i) {
            config = config.join(&tls, j, peer);
        }
        let extra: &[(&str, &str)] = if i == 0 { &[("10-initialize.hcl", &init)] } else { &[] };
        let config_dir = config.write_to(&dir.path().join(format!("n{i}/config")), extra)?;
        let spec = testkit::openbao::BaoServerSpec::new(&config.node_id, &bao, &config_dir, tls.client_config(i, addr));
        nodes.push(BaoServer::start(spec)?);
    }
    let t0 = Instant::now();
    nodes[0]
        .wait_active(WAIT)
        .await
        .with_context(|| nodes[0].log_tail(30))?;
    for node in nodes.iter_mut().skip(1) {
        node.wait_unsealed(WAIT).await.with_context(|| node.log_tail(30))?;
    }
    let admin = login(nodes[0].client(), "admin", ADMIN_PASSWORD).await?;
    // The Development profile's stabilization time (`config::autopilot_config`).
    admin
        .set_autopilot_config(&AutopilotConfigUpdate {
            server_stabilization_time: Some("2s".into()),
            ..Default::default()
        })
        .await?;
    wait_for_voters(&admin, 3, WAIT).await?;
    eprintln!("TIMING 3 healthy voters: {} ms", t0.elapsed().as_millis());

    // The operator's own policy reads the state, on the leader and through a standby.
    let on_leader = login(nodes[0].client(), "operator", OPERATOR_PASSWORD).await?;
    let on_standby = login(nodes[2].client(), "operator", OPERATOR_PASSWORD).await?;
    let healthy = |what: &'static str, client: BaoClient| async move {
        poll_until(what, WAIT, || async {
            let o = observe(&client).await;
            let c = raft::condition(&o, REPLICAS, true);
            Ok((c.status == Status::True).then_some((o, c)))
        })
        .await
    };
    for (what, client) in [
        ("healthy through the leader", on_leader.clone()),
        ("healthy through a standby", on_standby.clone()),
    ] {
        let (o, c) = healthy(what, client).await?;
        ensure!(c.reason == "Healthy", "{what}: {c:?}");
        ensure!(
            c.message == "3/3 voters healthy (3 voting), leader node1",
            "{what}: {c:?}"
        );
        ensure!(
            matches!(raft::quorum(&o, REPLICAS), Quorum::Serving { full: true, .. }),
            "{o:?}"
        );
        eprintln!("{what}: {} {}: {}", c.reason, c.status.as_str(), c.message);
    }

    // One standby stopped: 2/3 voters healthy, a quorum still serves.
    let t = Instant::now();
    nodes[2].stop().await;
    let (o, c) = poll_until("one server stopped shows as unhealthy", WAIT, || async {
        let o = observe(&on_leader).await;
        let c = raft::condition(&o, REPLICAS, true);
        Ok((c.status == Status::False).then_some((o, c)))
    })
    .await?;
    eprintln!(
        "TIMING stopped -> {} after {} ms: {}",
        c.reason,
        t.elapsed().as_millis(),
        c.message
    );
    ensure!(c.reason == "Unhealthy", "{c:?}");
    ensure!(
        c.message.starts_with("2/3 voters healthy (3 voting), leader node1"),
        "{c:?}"
    );
    ensure!(
        matches!(raft::quorum(&o, REPLICAS), Quorum::Serving { full: false, .. }),
        "{o:?}"
    );
    ensure!(
        raft::settling(&o, REPLICAS),
        "an unhealthy membership is looked at again soon"
    );

    // Back: healthy again, without anyone touching raft.
    let t = Instant::now();
    nodes[2].restart().await?;
    nodes[2]
        .wait_unsealed(WAIT)
        .await
        .with_context(|| nodes[2].log_tail(30))?;
    let (_, c) = healthy("healthy again after the restart", on_leader.clone()).await?;
    eprintln!("TIMING restarted -> {} after {} ms", c.reason, t.elapsed().as_millis());

    // Two of three stopped: no quorum, whatever the survivor answers.
    nodes[1].stop().await;
    nodes[2].stop().await;
    let o = poll_until("two servers stopped lose the quorum", WAIT, || async {
        let o = observe(&on_leader).await;
        Ok(matches!(raft::quorum(&o, REPLICAS), Quorum::Lost { .. }).then_some(o))
    })
    .await?;
    let c = raft::condition(&o, REPLICAS, true);
    eprintln!(
        "quorum lost: {o:?} -> {} {}: {}",
        c.status.as_str(),
        c.reason,
        c.message
    );
    ensure!(c.status != Status::True, "{c:?}");
    let token = on_leader
        .token()
        .context("the operator client has a token")?
        .expose()
        .to_string();
    for text in [&c.message, &format!("{o:?}")] {
        ensure!(
            !text.contains(OPERATOR_PASSWORD) && !text.contains(&token),
            "a secret in {text}"
        );
    }

    for node in &mut nodes {
        node.stop().await;
    }
    Ok(())
}
