//! End to end on a real single-node cluster (kubelet, containerd, CNI, CoreDNS, local-path):
//! the operator turns one Development OpenBaoCluster into 3 running OpenBao pods that initialize
//! themselves, unseal, serve TLS from the operator's CA and accept the admin's service-account
//! JWT and the demo login. Its audit device writes to the servers' stdout: after the login and a
//! secret write and read, the pods' logs hold those requests, with the secret and the password
//! only HMAC'd. Needs the node: `make test` starts it (`make cluster-up` by hand).

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use kube::api::Api;
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, conditions};
use openbao_client::{BaoClient, ClientConfig};
use std::time::{Duration, Instant};

mod node_common;
use node_common::{HostOperator, admin_jwt, audit, condition, create, in_namespaces, retrying};

const DEMO_PASSWORD: &str = "lane-demo-password";

async fn poll<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        // An error counts as "not yet" (a standby may answer 500 for a moment); the last one is
        // in the time-out message.
        let last = match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => String::from("not yet"),
            Err(e) => format!("{e:#}"),
        };
        if start.elapsed() > Duration::from_secs(30) {
            bail!("timed out waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_development_cluster_bootstraps_itself_on_a_real_node() -> Result<()> {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    in_namespaces("bao-e2e", bootstrap).await
}

async fn bootstrap(client: &Client, ns: &str, op_ns: &str) -> Result<()> {
    let (client, ns) = (client.clone(), ns.to_string());
    create::<ServiceAccount>(&client, &ns, serde_json::json!({"metadata": {"name": "bao-admin"}})).await?;
    create::<Secret>(
        &client,
        &ns,
        serde_json::json!({"metadata": {"name": "demo-password"}, "stringData": {"password": DEMO_PASSWORD}}),
    )
    .await?;

    // The operator runs on the host: it reaches the public Service through its ClusterIP (the
    // node's Service range is routed into the node's network namespace); TLS still verifies the
    // Service's DNS name.
    let (operator, public_ip) = HostOperator::start(&client, &ns, op_ns).await?;

    let started = Instant::now();
    create::<OpenBaoCluster>(&client, &ns, serde_json::json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster", "metadata": {"name": "lane"},
        "spec": {
            "version": "2.7.2", "profile": "Development", "replicas": 3, "storage": {"size": "256Mi"},
            // The hermetic node has no AppArmor: a node limitation, stated where it is turned off.
            "workloadHardening": {"appArmorEnabled": false},
            "selfInit": {
                "oidc": {"adminServiceAccount": {"name": "bao-admin"}},
                "demoUserpass": {"passwordSecretRef": {"name": "demo-password"}},
                "requests": [{"name": "kv", "operation": "update", "path": "sys/mounts/secret", "data": {"type": "kv", "options": {"version": "2"}}}]
            },
            "audit": [{"type": "file", "name": "stdout", "fileOptions": {"filePath": "stdout"}}],
        }
    }))
    .await?;

    let services = Api::<Service>::namespaced(client.clone(), &ns);
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), &ns);
    let available = loop {
        if public_ip.lock().unwrap().is_none()
            && let Some(ip) = services.get_opt("lane-public").await?.and_then(|s| s.spec?.cluster_ip)
        {
            *public_ip.lock().unwrap() = ip.parse().ok();
        }
        let c = clusters.get("lane").await?;
        let ready = condition(&c, conditions::AVAILABLE).is_some_and(|(s, r)| s == "True" && r == "AllReplicasReady");
        let unsealed = condition(&c, conditions::OPENBAO_SEALED).is_some_and(|(s, _)| s == "False");
        let healthy = condition(&c, conditions::DEGRADED).is_some_and(|(s, _)| s == "False");
        if ready && unsealed && healthy && c.status.as_ref().is_some_and(|s| s.initialized) {
            break c;
        }
        if started.elapsed() > Duration::from_secs(240) {
            bail!("cluster not Available after 240 s: {:#?}", c.status);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let took = started.elapsed();
    eprintln!("CR applied -> Available, initialized, unsealed, keys in sync: {took:.1?}");
    let status = available.status.clone().unwrap();
    assert_eq!(status.ready_replicas, 3);
    assert_eq!(status.current_version.as_deref(), Some("2.7.2"));
    assert!(
        status.active_leader.as_deref().is_some_and(|l| l.starts_with("lane-")),
        "{status:?}"
    );

    // The self-init requests are gone for good; no root token was ever stored.
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    assert!(secrets.get_opt("lane-config-init").await?.is_none());
    for s in secrets.list(&Default::default()).await?.items {
        assert!(!s.name_any().contains("root"), "unexpected secret {}", s.name_any());
    }

    // Logins through the public Service, verified against the operator's CA by DNS name.
    let ca = secrets.get("lane-tls-ca").await?.data.context("ca data")?["ca.crt"]
        .0
        .clone();
    let ip = public_ip.lock().unwrap().context("public ClusterIP")?;
    let bao = BaoClient::new(
        ClientConfig::new(format!("https://lane-public.{ns}.svc:8200"))
            .with_ca_pem(ca)
            .with_resolve_to(ip),
    )?;
    // The public Service may pick the server that became ready last: a standby can answer 500
    // for a moment until it has heard from the active server.
    let demo = retrying("the demo login", || async {
        Ok(bao.login_userpass("userpass", "demo", DEMO_PASSWORD).await?)
    })
    .await?;
    assert!(demo.policies.iter().any(|p| p == "admin"));
    let admin_jwt = admin_jwt(&client, &ns, "lane").await?;
    let admin = retrying("the admin login", || async {
        Ok(bao.login_jwt("jwt-operator", "admin", &admin_jwt).await?)
    })
    .await?;
    assert!(admin.policies.iter().any(|p| p == "admin"), "{:?}", admin.policies);
    let admin = bao.with_token(admin.token);
    retrying("the secret write", || async {
        Ok(admin
            .write(
                "secret/data/e2e",
                &serde_json::json!({"data": {"written": "through the public Service"}}),
            )
            .await?)
    })
    .await?;
    // The public Service spreads requests over all servers; give a standby a moment to apply.
    let back = poll("the written secret", || async {
        admin.read("secret/data/e2e").await.map_err(Into::into)
    })
    .await?;
    assert_eq!(back["data"]["data"]["written"], "through the public Service");
    audited_in_pod_logs(&client, &ns).await?;

    // Autopilot promotes joined servers to voters shortly after they are ready.
    poll("3 raft voters", || async {
        let raft = admin.raft_configuration().await?;
        Ok((raft.voters().count() == 3).then_some(()))
    })
    .await?;

    operator.stop().await?;
    Ok(())
}

/// The audit entries (JSON lines) the servers wrote to stdout hold the demo login and the secret's
/// write and read, the values only HMAC'd.
async fn audited_in_pod_logs(client: &Client, ns: &str) -> Result<()> {
    let trail = audit::wait_for_audited_read(client, ns, "secret/data/e2e", "written").await?;
    assert!(
        trail.requested("auth/userpass/login/demo"),
        "the demo login is not audited"
    );
    assert!(trail.requested("secret/data/e2e"), "the secret write is not audited");
    for clear in ["through the public Service", DEMO_PASSWORD] {
        assert!(!trail.text.contains(clear), "the audit log holds {clear:?} in clear");
    }
    // Every read that returned the value has it HMAC'd.
    for value in trail.read_values("secret/data/e2e", "written") {
        assert!(
            value.starts_with("hmac-sha256:"),
            "the value read is not HMAC'd: {value}"
        );
    }
    eprintln!(
        "audit: {} entries in the pods' stdout; values HMAC'd",
        trail.entries.len()
    );
    Ok(())
}
