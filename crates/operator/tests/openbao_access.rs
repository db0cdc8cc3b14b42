//! The operator's own access to OpenBao, against a real kube-apiserver (TokenRequest, issuer
//! discovery) and a real OpenBao 2.7.2 bootstrapped from the operator's rendered self-init
//! requests: it logs in with its service-account token and keeps OpenBao's trusted keys equal
//! to the apiserver's.

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use openbao_api::OpenBaoClusterSpec;
use openbao_operator::context::Context;
use openbao_operator::openbao::{Endpoint, KeySync, login, service_account_token, sync_jwt_keys};
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

    let jwt = service_account_token(&client, &operator, &spec.self_init.oidc.audience).await?;
    let bao = login(&node.endpoint, node.tls.ca_pem(), &jwt).await?;
    let me = bao.token_lookup_self().await?;
    eprintln!("operator logged in with policies {:?}", me.policies);
    assert!(me.policies.iter().any(|p| p == "openbao-operator"));
    // Least privilege: raft state yes, mounts no.
    bao.raft_configuration().await?;
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
    let jwt = service_account_token(&client, &operator, &spec.self_init.oidc.audience).await?;
    login(&node.endpoint, node.tls.ca_pem(), &jwt).await?;
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
    let jwt = service_account_token(&client, &operator, &spec.self_init.oidc.audience).await?;
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
