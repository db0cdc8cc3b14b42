//! The operator's own access to OpenBao, against a real kube-apiserver (TokenRequest, issuer
//! discovery) and a real OpenBao 2.7.2 bootstrapped from the operator's rendered self-init
//! requests: it logs in with its service-account token and keeps OpenBao's trusted keys equal
//! to the apiserver's. Its token carries the cluster's own audience, is never sent when the
//! apiserver itself would accept that audience, and a cluster an older operator set up with
//! the shared audience gets the commands that move its roles over (run here, they work). The
//! same login reads raft membership for `RaftMembershipReady` (the operator policy allows it).

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use openbao_api::OpenBaoClusterSpec;
use openbao_api::names;
use openbao_operator::context::Context;
use openbao_operator::controllers::cluster::status::{Access, LEGACY_AUDIENCE};
use openbao_operator::openbao::{
    AccessError, Endpoint, KeySync, SafeAudiences, is_audience_refusal, login, operator_token, sync_jwt_keys,
};
use openbao_operator::runtime::metrics::Metrics;
use openbao_render::{Cluster, JwtTrust, OperatorIdentity, selfinit};
use std::time::Duration;
use testkit::apiserver::{ApiServer, create_namespace};
use testkit::openbao::{
    BaoServer, BaoServerSpec, NodeAddr, TestJwtSigner, TestNodeConfig, TestTls, pod_host, write_static_seal_key,
};

const TLS_NAMESPACE: &str = "obtest";

struct Node {
    server: BaoServer,
    endpoint: Endpoint,
    tls: TestTls,
    _dir: tempfile::TempDir,
}

/// One OpenBao node whose self-init requests are exactly what the operator renders.
async fn start_node(init_hcl: &str) -> Result<Node> {
    let dir = tempfile::Builder::new().prefix("operator-access-").tempdir()?;
    let tls = TestTls::generate(&dir.path().join("tls"), TLS_NAMESPACE)?;
    let key = write_static_seal_key(&dir.path().join("tls/unseal.key"))?;
    let addr = NodeAddr::allocate()?;
    let config = TestNodeConfig::new("node1", addr, &dir.path().join("data"), &tls).static_seal(&key);
    let config_dir = config.write_to(&dir.path().join("config"), &[("zz-init.hcl", init_hcl)])?;
    let binary = testkit::cache::bao_binary("2.7.2")?;
    let mut server = BaoServer::start(BaoServerSpec::new(
        "node1",
        &binary,
        &config_dir,
        tls.client_config(0, &addr),
    ))?;
    server.wait_active(Duration::from_secs(60)).await?;
    let endpoint = Endpoint {
        url: format!("https://{}:8200", pod_host(TLS_NAMESPACE, 0)),
        resolve_to: Some(addr.ip.into()),
    };
    Ok(Node {
        server,
        endpoint,
        tls,
        _dir: dir,
    })
}

fn spec() -> OpenBaoClusterSpec {
    serde_json::from_value(
        serde_json::json!({"version": "2.7.2", "profile": "Development", "replicas": 1, "storage": {"size": "1Gi"}}),
    )
    .expect("valid spec")
}

#[tokio::test]
async fn operator_logs_in_with_its_service_account_and_keeps_jwt_keys_in_step() -> Result<()> {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let client = ApiServer::shared().await?.client().await?;
    let ns = create_namespace(&client, "bao-access").await?;
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": "openbao-operator"}}))?;
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await?;
    let operator = OperatorIdentity {
        namespace: ns.clone(),
        service_account: "openbao-operator".into(),
    };
    let ctx = Context::new(client.clone(), operator.clone(), Metrics::default()).await;
    let trust = ctx.jwt_trust().await?;

    // OpenBao starts out trusting the apiserver's key plus a key that no longer signs anything
    // (as after a completed rotation); the operator must converge it to the apiserver's set.
    let retired = TestJwtSigner::new()?.public_key_pem();
    let spec = spec();
    let cluster = Cluster {
        name: "openbao",
        namespace: &ns,
        uid: "u",
        spec: &spec,
    };
    let mut keys = trust.public_keys_pem.clone();
    keys.push(retired.clone());
    let init = selfinit::init_hcl(
        &cluster,
        &operator,
        &JwtTrust {
            issuer: trust.issuer.clone(),
            public_keys_pem: keys,
        },
    );
    let node = start_node(&init).await?;

    let jwt = operator_token(&client, &operator, &ctx.safe_audiences, &ns, "openbao").await?;
    let bao = login(&node.endpoint, node.tls.ca_pem(), &jwt).await?;
    let me = bao.token_lookup_self().await?;
    eprintln!("operator logged in with policies {:?}", me.policies);
    assert!(me.policies.iter().any(|p| p == "openbao-operator"));
    // Least privilege: raft state yes, mounts no.
    bao.raft_configuration().await?;
    // The status's raft membership read, through this very login (one server: its own voter,
    // healthy once autopilot's first update ran).
    {
        use openbao_operator::controllers::cluster::raft_membership as raft;
        let healthy = testkit::openbao::poll_until("raft membership Healthy", Duration::from_secs(30), || async {
            let c = raft::condition(&raft::observe(&bao).await, 1, true);
            anyhow::ensure!(c.reason == "Healthy", "{}: {}", c.reason, c.message);
            Ok(Some(c))
        })
        .await?;
        eprintln!("raft membership through the operator's login: {}", healthy.message);
    }
    let denied = bao
        .read("sys/mounts")
        .await
        .expect_err("the operator policy must not list mounts");
    assert_eq!(denied.status(), Some(403));

    assert_eq!(
        sync_jwt_keys(&bao, &trust.issuer, &trust.public_keys_pem).await?,
        KeySync::Updated { added: 0, removed: 1 }
    );
    assert_eq!(
        sync_jwt_keys(&bao, &trust.issuer, &trust.public_keys_pem).await?,
        KeySync::Unchanged
    );
    let config = bao.read("auth/jwt-operator/config").await?.context("jwt config")?;
    let trusted: Vec<String> = serde_json::from_value(config["data"]["jwt_validation_pubkeys"].clone())?;
    assert_eq!(trusted.len(), trust.public_keys_pem.len());
    assert!(!trusted.iter().any(|k| k.trim() == retired.trim()));

    // After the sync, a fresh token still logs in (nobody was locked out).
    let jwt = operator_token(&client, &operator, &ctx.safe_audiences, &ns, "openbao").await?;
    login(&node.endpoint, node.tls.ca_pem(), &jwt).await?;

    // The token for another cluster's audience (same operator, same roles' names) is refused.
    let elsewhere = operator_token(&client, &operator, &ctx.safe_audiences, &ns, "other").await?;
    let refused = login(&node.endpoint, node.tls.ca_pem(), &elsewhere)
        .await
        .expect_err("a token for another cluster's audience");
    assert!(is_audience_refusal(&refused), "{refused}");
    drop(node.server);
    Ok(())
}

#[tokio::test]
async fn a_cluster_that_trusts_only_retired_keys_reports_why_login_fails() -> Result<()> {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let client = ApiServer::shared().await?.client().await?;
    let ns = create_namespace(&client, "bao-lockout").await?;
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": "openbao-operator"}}))?;
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await?;
    let operator = OperatorIdentity {
        namespace: ns.clone(),
        service_account: "openbao-operator".into(),
    };
    let trust = Context::new(client.clone(), operator.clone(), Metrics::default())
        .await
        .jwt_trust()
        .await?;
    let spec = spec();
    let cluster = Cluster {
        name: "openbao",
        namespace: &ns,
        uid: "u",
        spec: &spec,
    };
    let retired = TestJwtSigner::new()?.public_key_pem();
    let init = selfinit::init_hcl(
        &cluster,
        &operator,
        &JwtTrust {
            issuer: trust.issuer,
            public_keys_pem: vec![retired],
        },
    );
    let node = start_node(&init).await?;
    let jwt = operator_token(&client, &operator, &SafeAudiences::default(), &ns, "openbao").await?;
    let err = login(&node.endpoint, node.tls.ca_pem(), &jwt)
        .await
        .expect_err("untrusted key");
    let text = err.to_string();
    eprintln!("lock-out is reported as: {text}");
    assert!(
        text.contains("auth/jwt-operator/login") && text.contains("400"),
        "{text}"
    );
    assert!(!text.contains(&jwt), "the token must never appear in errors");
    Ok(())
}

/// A cluster an older operator initialized: every role accepts the shared `openbao-internal`.
/// The operator's login with the cluster's own audience is refused for its audience; the
/// message of `LegacyTokenAudience` names commands that, run by the admin, make it work.
#[tokio::test]
async fn a_legacy_cluster_is_moved_to_its_own_audience_by_the_commands_of_its_condition() -> Result<()> {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let client = ApiServer::shared().await?.client().await?;
    let ns = create_namespace(&client, "bao-legacy").await?;
    for name in ["openbao-operator", "bao-admin"] {
        let sa: ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &sa)
            .await?;
    }
    let operator = OperatorIdentity {
        namespace: ns.clone(),
        service_account: "openbao-operator".into(),
    };
    let ctx = Context::new(client.clone(), operator.clone(), Metrics::default()).await;
    let trust = ctx.jwt_trust().await?;
    let mut spec = spec();
    spec.self_init.oidc.admin_service_account = Some(serde_json::from_value(serde_json::json!({"name": "bao-admin"}))?);
    let cluster = Cluster {
        name: "openbao",
        namespace: &ns,
        uid: "u",
        spec: &spec,
    };
    let audience = names::jwt_audience(&ns, "openbao");
    // What the older operator rendered: the same requests, with the shared audience.
    let init = selfinit::init_hcl(&cluster, &operator, &trust).replace(&audience, LEGACY_AUDIENCE);
    assert!(init.contains(LEGACY_AUDIENCE) && !init.contains(&audience));
    let node = start_node(&init).await?;

    let jwt = operator_token(&client, &operator, &ctx.safe_audiences, &ns, "openbao").await?;
    let refused = login(&node.endpoint, node.tls.ca_pem(), &jwt)
        .await
        .expect_err("the legacy roles do not accept the cluster's own audience");
    assert!(is_audience_refusal(&refused), "{refused}");
    let roles: Vec<String> = selfinit::jwt_roles(&cluster, &operator)
        .into_iter()
        .map(|r| r.role.to_string())
        .collect();
    let initialized_by_an_older_operator = openbao_api::OpenBaoClusterStatus {
        initialized: true,
        ..Default::default()
    };
    let Access::AudienceRefused { legacy: true, message } =
        Access::audience_refused(&initialized_by_an_older_operator, &roles, &audience)
    else {
        panic!("a legacy refusal");
    };
    eprintln!("LegacyTokenAudience: {message}");

    // The admin logs in with a token for the old audience and runs exactly the commands named.
    let admin_jwt = kube_token(&client, &ns, "bao-admin", LEGACY_AUDIENCE).await?;
    let admin = openbao_client::BaoClient::new(
        openbao_client::ClientConfig::new(node.endpoint.url.clone())
            .with_ca_pem(node.tls.ca_pem().as_bytes().to_vec())
            .with_resolve_to(node.endpoint.resolve_to.context("resolved")?),
    )?;
    let token = admin.login_jwt(selfinit::JWT_MOUNT, "admin", &admin_jwt).await?.token;
    let admin = admin.with_token(token);
    let commands: Vec<&str> = message
        .split("run: ")
        .nth(1)
        .context("the message names commands")?
        .split("; ")
        .collect();
    // An older operator never wrote the seal-migration role: no command for it.
    assert_eq!(commands.len(), roles.len() - 1, "one command per role: {commands:?}");
    assert!(!message.contains(selfinit::SEAL_MIGRATION_ROLE), "{message}");
    for command in commands {
        // `bao write <path> k1=v1 k2=v2` is a write of {"k1": "v1", "k2": "v2"}.
        let mut words = command.strip_prefix("bao write ").context("a bao write")?.split(' ');
        let path = words.next().context("a path")?;
        let mut data = serde_json::Map::new();
        for pair in words {
            let (key, value) = pair.split_once('=').context("key=value")?;
            data.insert(key.to_string(), value.into());
        }
        admin.write(path, &serde_json::Value::Object(data)).await?;
    }
    let bao = login(&node.endpoint, node.tls.ca_pem(), &jwt).await?;
    assert!(
        bao.token_lookup_self()
            .await?
            .policies
            .iter()
            .any(|p| p == "openbao-operator")
    );
    // Only the audience changed: the subject each role had is still there.
    let role = admin
        .read("auth/jwt-operator/role/openbao-operator")
        .await?
        .context("role")?;
    assert_eq!(
        role["data"]["bound_subject"],
        format!("system:serviceaccount:{ns}:openbao-operator")
    );
    assert_eq!(role["data"]["bound_audiences"], serde_json::json!([audience]));
    let old = kube_token(&client, &ns, "bao-admin", LEGACY_AUDIENCE).await?;
    let gone = admin.login_jwt(selfinit::JWT_MOUNT, "admin", &old).await;
    assert_eq!(
        gone.expect_err("the shared audience no longer logs in").status(),
        Some(400)
    );
    drop(node.server);
    Ok(())
}

/// The seal-migration login: self-init writes its role and policy, and the token it gives may
/// do what a seal migration does (make a recovery key pending verification, cancel it, read raft)
/// and no more. A cluster whose self-init predates it (role and policy removed here) refuses the
/// login in a way the operator recognizes (`SealMigrationRoleMissing`), and the commands of that
/// message, run by the admin, make it work.
#[tokio::test]
async fn the_seal_migration_login_comes_from_self_init_and_an_older_cluster_is_told_how_to_add_it() -> Result<()> {
    use openbao_operator::controllers::cluster::seal_migration::{is_role_missing, role_missing_message};
    use openbao_operator::controllers::cluster::upgrade::operator_login_as;
    use openbao_operator::openbao::login_as;
    use selfinit::{SEAL_MIGRATION_POLICY, SEAL_MIGRATION_ROLE};
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let client = ApiServer::shared().await?.client().await?;
    let ns = create_namespace(&client, "bao-seal-login").await?;
    for name in ["openbao-operator", "bao-admin"] {
        let sa: ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &sa)
            .await?;
    }
    let operator = OperatorIdentity {
        namespace: ns.clone(),
        service_account: "openbao-operator".into(),
    };
    let mut ctx = Context::new(client.clone(), operator.clone(), Metrics::default()).await;
    let trust = ctx.jwt_trust().await?;
    let mut spec = spec();
    spec.self_init.oidc.admin_service_account = Some(serde_json::from_value(serde_json::json!({"name": "bao-admin"}))?);
    let cluster = Cluster {
        name: "openbao",
        namespace: &ns,
        uid: "u",
        spec: &spec,
    };
    let node = start_node(&selfinit::init_hcl(&cluster, &operator, &trust)).await?;
    let endpoint = node.endpoint.clone();
    ctx.endpoints = std::sync::Arc::new(move |_: &str, _: &str| endpoint.clone());
    let ca = node.tls.ca_pem();

    let jwt = operator_token(&client, &operator, &ctx.safe_audiences, &ns, "openbao").await?;
    let bao = login_as(&node.endpoint, ca, &jwt, SEAL_MIGRATION_ROLE).await?;
    let policies = bao.token_lookup_self().await?.policies;
    assert!(policies.iter().any(|p| p == SEAL_MIGRATION_ROLE), "{policies:?}");
    assert!(!policies.iter().any(|p| p == "openbao-operator"), "{policies:?}");
    bao.raft_configuration().await?;
    let pending = bao
        .write(
            "sys/rotate/recovery/init",
            &serde_json::json!({"secret_shares": 1, "secret_threshold": 1, "require_verification": true}),
        )
        .await?
        .context("recovery key init answered nothing")?;
    assert!(
        pending["data"]["verification_nonce"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    );
    bao.delete("sys/rotate/recovery/init").await?;
    let denied = bao.read("sys/mounts").await.expect_err("no more than the migration");
    assert_eq!(denied.status(), Some(403));

    // As on a cluster initialized before the role existed.
    let audience = names::jwt_audience(&ns, "openbao");
    let admin_jwt = kube_token(&client, &ns, "bao-admin", &audience).await?;
    let admin = openbao_client::BaoClient::new(
        openbao_client::ClientConfig::new(node.endpoint.url.clone())
            .with_ca_pem(ca.as_bytes().to_vec())
            .with_resolve_to(node.endpoint.resolve_to.context("resolved")?),
    )?;
    let token = admin.login_jwt(selfinit::JWT_MOUNT, "admin", &admin_jwt).await?.token;
    let admin = admin.with_token(token);
    admin
        .delete(&format!("auth/{}/role/{SEAL_MIGRATION_ROLE}", selfinit::JWT_MOUNT))
        .await?;
    admin.delete(&format!("sys/policies/acl/{SEAL_MIGRATION_ROLE}")).await?;
    // The reconcile's own login (through the endpoint, as the seal-migration step does it).
    let refused = operator_login_as(&ctx, &cluster, ca, SEAL_MIGRATION_ROLE)
        .await
        .expect_err("the role is gone");
    eprintln!("login refused: {refused}");
    let answer = refused.refused.as_ref().context("OpenBao's answer is kept")?;
    assert!(is_role_missing(answer), "{refused}");
    assert!(!refused.message.contains(&jwt), "the token must never appear in errors");

    // The message's commands: the policy (its text from docs/seal-migration.md), then the role.
    let message = role_missing_message(&operator, &audience);
    eprintln!("SealMigrationRoleMissing: {message}");
    assert!(message.contains(&format!("bao policy write {SEAL_MIGRATION_ROLE}")));
    admin
        .write(
            &format!("sys/policies/acl/{SEAL_MIGRATION_ROLE}"),
            &serde_json::json!({"policy": SEAL_MIGRATION_POLICY}),
        )
        .await?;
    let command = message
        .split("; bao write ")
        .nth(1)
        .and_then(|c| c.split(". The migration").next())
        .context("the message names the role command")?;
    let mut words = command.split(' ');
    let path = words.next().context("a path")?;
    let mut data = serde_json::Map::new();
    for pair in words {
        let (key, value) = pair.split_once('=').context("key=value")?;
        data.insert(key.to_string(), value.into());
    }
    admin.write(path, &serde_json::Value::Object(data)).await?;
    let token = operator_login_as(&ctx, &cluster, ca, SEAL_MIGRATION_ROLE)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bao = bao.with_token(token);
    let policies = bao.token_lookup_self().await?.policies;
    assert!(policies.iter().any(|p| p == SEAL_MIGRATION_ROLE), "{policies:?}");
    bao.raft_configuration().await?;
    drop(node.server);
    Ok(())
}

/// A TokenRequest for `namespace/sa` with `audience` (what `kubectl create token` does).
async fn kube_token(client: &kube::Client, namespace: &str, sa: &str, audience: &str) -> Result<String> {
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(serde_json::json!({"spec": {"audiences": [audience], "expirationSeconds": 600}}))?;
    let response = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_subresource::<_, k8s_openapi::api::authentication::v1::TokenRequest>(
            "token",
            sa,
            &PostParams::default(),
            &request,
        )
        .await?;
    Ok(response.status.context("token status")?.token)
}

/// An apiserver that lists a cluster's derived audience among its own (`--api-audiences`):
/// the operator's token for that cluster would log in to the apiserver as the operator, so it
/// is refused before it goes anywhere; other clusters on the same apiserver are unaffected.
#[tokio::test]
async fn a_cluster_audience_the_apiserver_accepts_is_never_used() -> Result<()> {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let unsafe_audience = names::jwt_audience("guard", "openbao");
    let apiserver = ApiServer::start_with_args(&[format!(
        "--api-audiences=https://kubernetes.default.svc.cluster.local,{unsafe_audience}"
    )])
    .await?;
    let client = apiserver.client().await?;
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "guard"}}))?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": "openbao-operator"}}))?;
    Api::<ServiceAccount>::namespaced(client.clone(), "guard")
        .create(&PostParams::default(), &sa)
        .await?;
    let operator = OperatorIdentity {
        namespace: "guard".into(),
        service_account: "openbao-operator".into(),
    };
    let safe = SafeAudiences::default();
    for _ in 0..2 {
        // Refused every time: an unsafe audience is never remembered as checked.
        let err = operator_token(&client, &operator, &safe, "guard", "openbao")
            .await
            .expect_err("the apiserver accepts this audience");
        assert!(
            matches!(&err, AccessError::AudienceUnsafe { audience } if *audience == unsafe_audience),
            "{err}"
        );
        eprintln!("refused: {err}");
    }
    let token = operator_token(&client, &operator, &safe, "guard", "openbao-2").await?;
    assert!(!token.is_empty());
    Ok(())
}
