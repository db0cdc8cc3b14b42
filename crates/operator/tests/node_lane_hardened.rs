//! The hardened lane (`make lane-up LANE_PROFILE=hardened`) on the running hermetic node, with
//! its rehearsals, in one lane-up ... lane-down:
//! 1. `LANE_PROFILE=hardened hack/lane.sh up`: cert-manager, a second OpenBao as the transit seal
//!    (namespace `openbao-seal`, `kubernetes` auth), the operator from its chart, a `Hardened`
//!    cluster. It ends `Available` with `TLSReady=CertManagerIssued`, `AuditReady`,
//!    `GatewayIntegrationReady`, `UnsealConfigurationReady=TransitConfigured`,
//!    `SecurityRisk=False` and `Degraded=False`, with no seal key, root token or recovery key
//!    Secret, and no demo login (the userpass path answers nothing);
//! 2. the admin (JWT `admin` role, a `bao-admin` token) logs in through the Gateway, which
//!    re-encrypts to the servers and verifies them against cert-manager's CA, and writes secrets;
//!    the audit trail (the servers' stdout) has the reads with the values HMAC'd;
//! 3. `hack/lane.sh backup`; a secret written after it; `hack/lane.sh restore` of that backup
//!    into the lane cluster itself: the secrets of before are there, the one of after is gone;
//! 4. the upgrade rehearsal (`node_lane_common::rehearsals::rehearse_upgrade`, which only this
//!    test runs): `hack/lane.sh upgrade` blue/green to the newest pinned OpenBao with 0 failed
//!    probes through the Gateway; the secrets read back; the pre-upgrade snapshot in the bucket;
//!    a downgrade through `spec.version` refused without touching a server;
//! 5. `hack/lane.sh down` removes every namespace it made, the transit server's included.
//!
//! Needs the node; refuses to run while a lane is up (its `down` would remove that lane).

use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::Api;
use openbao_api::{OpenBaoCluster, conditions};
use serde_json::json;
use std::time::{Duration, Instant};
use testkit::pods::wait_for;

mod node_lane_common;
use node_lane_common::rehearsals::{Written, client_token, kv, read_back, rehearse_upgrade};
use node_lane_common::{
    CLUSTER, LaneGuard, TENANT_NS, admin_jwt, condition, edge_client, edge_url, lane_dir, lane_with, login,
    namespaces_gone, node_without_lane, read, route_accepted, state,
};
#[path = "node_common/audit.rs"]
mod audit;

const HARDENED: [(&str, &str); 1] = [("LANE_PROFILE", "hardened")];
const SEAL_NS: &str = "openbao-seal";

async fn write(http: &reqwest::Client, token: &str, w: &Written) -> Result<()> {
    let body = json!({"data": {"value": w.value}});
    let (status, answer) = kv(http, &edge_url(), token, reqwest::Method::POST, &w.path, Some(body)).await?;
    ensure!(status == 200, "writing secret/data/{}: HTTP {status}: {answer}", w.path);
    Ok(())
}

/// The value at `path` through the Gateway, or None when it is not there (404).
async fn value(http: &reqwest::Client, token: &str, path: &str) -> Result<Option<String>> {
    let (status, answer) = kv(http, &edge_url(), token, reqwest::Method::GET, path, None).await?;
    if status == 404 {
        return Ok(None);
    }
    ensure!(status == 200, "reading secret/data/{path}: HTTP {status}: {answer}");
    Ok(answer["data"]["data"]["value"].as_str().map(String::from))
}

async fn admin_token(client: &kube::Client, edge: &reqwest::Client) -> Result<String> {
    let auth = login(
        edge,
        "auth/jwt-operator/login",
        json!({"role": "admin", "jwt": admin_jwt(client, CLUSTER).await?}),
    )
    .await?;
    client_token(&auth)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hardened_lane_comes_up_and_its_rehearsals_pass() -> Result<()> {
    let (_, client) = node_without_lane().await?;
    let namespaces = Api::<Namespace>::all(client.clone());
    ensure!(
        namespaces.get_opt(SEAL_NS).await?.is_none(),
        "namespace {SEAL_NS} exists before lane-up: the test would not know what to remove"
    );

    // 1. lane-up with the hardened profile.
    let mut guard = LaneGuard { down: false };
    let began = Instant::now();
    lane_with(&["up"], &HARDENED)?;
    eprintln!(
        "hardened lane-up took {:.1?} (CR apply -> Available {}s, {} operator writes); steps: {}",
        began.elapsed(),
        state("last_apply_to_available_seconds").unwrap_or_default(),
        state("last_kube_writes").unwrap_or_default(),
        ["cert_manager", "transit", "cluster_available"]
            .map(|p| format!("{p} {}s", state(&format!("phase_{p}")).unwrap_or_default()))
            .join(", ")
    );
    ensure!(
        state("profile").as_deref() == Some("hardened"),
        "the state records the profile"
    );
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), TENANT_NS);
    let c = clusters.get(CLUSTER).await?;
    ensure!(
        c.spec.profile == openbao_api::Profile::Hardened,
        "the lane cluster is not Hardened"
    );
    for (type_, status, reason) in [
        (conditions::AVAILABLE, "True", "AllReplicasReady"),
        (conditions::TLS_READY, "True", "CertManagerIssued"),
        (conditions::AUDIT_READY, "True", "DevicesEnabled"),
        (openbao_api::UNSEAL_CONFIGURATION_READY, "True", "TransitConfigured"),
        (conditions::SECURITY_RISK, "False", "SealKeyOutsideCluster"),
        (conditions::DEGRADED, "False", "Reconciled"),
    ] {
        ensure!(
            condition(&c, type_) == Some((status.into(), reason.into())),
            "{type_}: {:?}, want {status} {reason}",
            condition(&c, type_)
        );
    }
    ensure!(
        condition(&c, "GatewayIntegrationReady").is_some_and(|(s, _)| s == "True"),
        "GatewayIntegrationReady: {:?}",
        condition(&c, "GatewayIntegrationReady")
    );
    for s in Api::<Secret>::namespaced(client.clone(), TENANT_NS)
        .list(&Default::default())
        .await?
        .items
    {
        let name = s.name_any();
        ensure!(
            !["-unseal-key", "-root-token", "-recovery-key"]
                .iter()
                .any(|suffix| name.ends_with(suffix)),
            "Secret {name} exists in the hardened lane"
        );
    }
    route_accepted(&client).await?;

    // 2. The admin through the Gateway; no demo login; the audit trail.
    let ca = read(&lane_dir().join("ca.crt"))?;
    let edge = edge_client(Some(&ca))?;
    let token = admin_token(&client, &edge).await?;
    let demo = login(&edge, "auth/userpass/login/demo", json!({"password": "anything"})).await;
    ensure!(demo.is_err(), "a demo userpass login answered on the hardened lane");
    let stamp = jiff::Timestamp::now().as_nanosecond();
    let before: Vec<Written> = (1..=2)
        .map(|i| Written {
            path: format!("hardened/before-{i}"),
            value: format!("written-before-the-backup-{stamp}-{i}"),
        })
        .collect();
    for w in &before {
        write(&edge, &token, w).await?;
    }
    // A standby may answer a read from its own copy before it has applied the write.
    let first = &before[0];
    wait_for(
        "the first secret readable through the Gateway",
        Duration::from_secs(30),
        async || Ok((value(&edge, &token, &first.path).await?.as_deref() == Some(first.value.as_str())).then_some(())),
    )
    .await?;
    let audited = format!("secret/data/{}", first.path);
    let trail = audit::wait_for_audited_read(&client, TENANT_NS, &audited, "value").await?;
    ensure!(
        trail.requested("auth/jwt-operator/login"),
        "the admin's login is not audited"
    );
    ensure!(
        !trail.text.contains(&first.value),
        "the audit trail holds a secret in clear"
    );
    for v in trail.read_values(&audited, "value") {
        ensure!(v.starts_with("hmac-sha256:"), "not HMAC'd: {v}");
    }
    eprintln!(
        "admin wrote {} secrets through the Gateway; the audit trail has them HMAC'd",
        before.len()
    );

    // 3. Backup, a later write, restore in place.
    let backup = lane_with(&["backup"], &[])?;
    let key = backup.lines().last().unwrap_or_default().trim().to_string();
    ensure!(key.ends_with(".snap"), "lane-backup printed no key: {backup:?}");
    let after = Written {
        path: format!("hardened/after-{stamp}"),
        value: "written-after-the-backup".into(),
    };
    write(&edge, &token, &after).await?;
    let restore_began = Instant::now();
    lane_with(&["restore", &key], &[])?;
    eprintln!(
        "lane-restore of {key} into the lane cluster: {:.1?}",
        restore_began.elapsed()
    );
    // Tokens issued before the restore are gone with the data they lived in: log in again. The
    // restore reports Completed once the active server has the snapshot in place (its executor
    // waits for that: OpenBao answers the restore call before it installs the snapshot); the
    // login may still land on a standby that does not know the active server yet.
    let token = wait_for(
        "an admin login after the restore",
        Duration::from_secs(60),
        async || Ok(admin_token(&client, &edge).await.ok()),
    )
    .await?;
    // Like the login: right after the restore a standby may not know the new active server yet
    // and answers 307 to that server's in-cluster address, which the client follows and cannot
    // resolve (seen once in CI, 2026-12-04): the reads are tried again until they are answered.
    let mut said = String::new();
    let after_value = wait_for(
        "the secrets read back through the Gateway after the restore",
        Duration::from_secs(60),
        async || {
            let read = async {
                read_back(&edge, &edge_url(), &token, &before).await?;
                value(&edge, &token, &after.path).await
            };
            match read.await {
                Ok(after_value) => Ok(Some(after_value)),
                Err(err) => {
                    let text = format!("{err:#}");
                    if text != said {
                        eprintln!("reading back after the restore: {text}; trying again");
                        said = text;
                    }
                    Ok(None)
                }
            }
        },
    )
    .await?;
    ensure!(
        after_value.is_none(),
        "secret/data/{} written after the backup survived the restore",
        after.path
    );
    eprintln!("restored: the secrets of before the backup are there, the one of after is gone");

    // 4. The upgrade rehearsal: blue/green with 0 failed probes, the secrets read back, the
    //    pre-upgrade snapshot in the bucket, a downgrade refused.
    rehearse_upgrade(&client, &before).await?;

    // 5. lane-down.
    guard.down = true;
    lane_with(&["down"], &[])?;
    namespaces_gone(&client).await?;
    wait_for(
        &format!("namespace {SEAL_NS} gone"),
        Duration::from_secs(120),
        async || Ok(namespaces.get_opt(SEAL_NS).await?.is_none().then_some(())),
    )
    .await?;
    ensure!(state("backend").is_none(), "lane-down forgets the lane's state");
    Ok(())
}
