//! The lane's rehearsals, run on a lane a test brought up (one lane-up ... lane-down for the lane's
//! checks and its rehearsals saves CI a lane-up and a lane-down): steps 1-4 by `node_lane.rs` on
//! the development lane, step 5 by `node_lane_hardened.rs` on the hardened lane (the script is
//! the same for both profiles, and a blue/green upgrade is the slowest step, so CI runs it once):
//! 1. the admin (JWT `admin` role, a `bao-admin` service-account token) writes secrets through
//!    the Traefik Gateway;
//! 2. `hack/lane.sh backup` (`make lane-backup`) leaves a new object in the lane's S3 store,
//!    the one `status.backup.lastBackupName` names (checked with our own S3 client), and every
//!    panel of the Grafana dashboard, backups included, has data in the lane's Prometheus;
//! 3. a FRESH OpenBaoCluster (`openbao-restored`, 1 server, no data but its own self-init) that
//!    reuses the lane cluster's seal key (a copy of `openbao-unseal-key`, made before the
//!    cluster exists: the operator keeps an existing seal key Secret);
//! 4. `hack/lane.sh restore KEY` (`make lane-restore`) with `LANE_RESTORE_CLUSTER=openbao-restored`
//!    restores the backup into it; the admin then reads back every secret written in step 1.
//!    Before the restore the fresh cluster has none of them (not even the KV mount).
//! 5. `hack/lane.sh upgrade <version>` (blue/green to the newest pinned OpenBao, or
//!    `LANE_REHEARSE_UPGRADE=<version>`; `LANE_REHEARSE_UPGRADE=` skips it): a probe through the
//!    Gateway every 200 ms, the HTTPRoute watched; then the secrets are read through the Gateway again.
//!    The lane asks for a pre-upgrade snapshot: it must be in the bucket under `pre-upgrade/`, and
//!    the finished upgrade names it; the cluster is never `Degraded` on the way. Then setting
//!    `spec.version` back is refused (`DowngradeRefused`) without touching a server.
//!
//! Why the fresh cluster lives in the lane's namespace: the lane's operator watches only that
//! namespace (`watchNamespace=openbao`). The restored data's JWT `admin` role trusts
//! `system:serviceaccount:openbao:bao-admin` with the lane cluster's audience (the source's:
//! restored data keeps the source cluster's identities), so the lane's `bao-admin` token for
//! the lane cluster logs in to it.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, conditions};
use openbao_objstore::{Credentials, Store, StoreOptions, Target};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use testkit::pods::wait_for;

use super::metrics::{Expect, Prometheus, Traffic};
use super::{
    CLUSTER, TENANT_NS, admin_jwt, condition, edge_client, edge_url, lane_dir, lane_with, login, login_at, read,
    route_accepted, state,
};

const FRESH: &str = "openbao-restored";
const BUCKET: &str = "openbao-backups";

/// A KV v2 secret the admin writes before the backup and reads after the restore.
pub struct Written {
    pub path: String,
    pub value: String,
}

/// One KV v2 request (`secret/data/<path>`) at `base`; the HTTP status and the JSON answer.
pub async fn kv(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let url = format!("{base}/v1/secret/data/{path}");
    let mut request = http.request(method, &url).header("X-Vault-Token", token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.with_context(|| format!("{url}: request"))?;
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    Ok((status, answer))
}

pub fn client_token(auth: &Value) -> Result<String> {
    auth["client_token"]
        .as_str()
        .map(String::from)
        .context("login answer without client_token")
}

/// The lane's bucket from the host, through the store Service's ClusterIP (the node routes the
/// Service range), with the keys `lane-up` generated.
async fn lane_store(client: &Client) -> Result<Store> {
    let service = Api::<Service>::namespaced(client.clone(), "storage").get("s3").await?;
    let ip: IpAddr = service
        .spec
        .and_then(|s| s.cluster_ip)
        .context("Service storage/s3 has no ClusterIP")?
        .parse()?;
    let text =
        |name: &str| -> Result<String> { Ok(String::from_utf8(read(&lane_dir().join(name))?)?.trim().to_string()) };
    let target = Target {
        endpoint: format!("http://{}", SocketAddr::new(ip, 9000)),
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
        path_prefix: String::new(),
        use_path_style: true,
        credentials: Credentials {
            access_key_id: text("s3-access-key")?,
            secret_access_key: openbao_objstore::Secret::new(text("s3-secret-key")?),
            ca_cert_pem: None,
        },
    };
    Ok(Store::new(&target, StoreOptions::default())?)
}

/// `hack/lane.sh backup`, once: it must succeed the first time (the executor pins the active
/// node, so a Service that lands on a standby no longer fails it with a 307). Returns the key it
/// printed.
fn lane_backup() -> Result<String> {
    let stdout = lane_with(&["backup"], &[])?;
    let key = stdout.lines().last().unwrap_or_default().trim().to_string();
    ensure!(key.ends_with(".snap"), "lane-backup printed no key: {stdout:?}");
    Ok(key)
}

/// Sets `spec.version` back to `older`: the cluster reports `Upgrading=False DowngradeRefused`
/// while every pod stays as it was; then `spec.version` goes back to `running`.
async fn downgrade_is_refused(
    client: &Client,
    clusters: &Api<OpenBaoCluster>,
    older: &str,
    running: &str,
) -> Result<()> {
    let pods = Api::<Pod>::namespaced(client.clone(), TENANT_NS);
    let servers = ListParams::default().labels(&format!("openbao.org/cluster={CLUSTER}"));
    let identities = async || -> Result<Vec<(String, String)>> {
        let mut list: Vec<(String, String)> = pods
            .list(&servers)
            .await?
            .items
            .iter()
            .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
            .collect();
        list.sort();
        Ok(list)
    };
    let before = identities().await?;
    let set_version = async |v: &str| -> Result<()> {
        let patch = json!({"spec": {"version": v}});
        clusters
            .patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    };
    set_version(older).await?;
    let refused = wait_for(
        "Upgrading=False DowngradeRefused",
        Duration::from_secs(90),
        async || {
            let c = clusters.get(CLUSTER).await?;
            let upgrading = c
                .status
                .as_ref()
                .and_then(|s| conditions::find(&s.conditions, "Upgrading"));
            Ok(upgrading
                .filter(|u| u.status == "False" && u.reason == "DowngradeRefused")
                .map(|u| u.message.clone()))
        },
    )
    .await;
    set_version(running).await?;
    let message = refused?;
    ensure!(
        message.contains("restore a snapshot"),
        "the refusal names the way back: {message}"
    );
    ensure!(identities().await? == before, "a refused downgrade changed the servers");
    wait_for("Upgrading back to Idle", Duration::from_secs(90), async || {
        let c = clusters.get(CLUSTER).await?;
        Ok(condition(&c, "Upgrading").filter(|(_, reason)| reason == "Idle"))
    })
    .await?;
    eprintln!("downgrade {running} -> {older} refused with DowngradeRefused; no server changed");
    Ok(())
}

/// The fresh cluster: the lane cluster's version and AppArmor setting, one server, operator TLS,
/// the same JWT admin subject, no gateway, no backups. Without a route, the test reaches it from
/// the host: an ingress rule (Development only) lets the host's address in on the API port, as a
/// platform engineer would for a cluster with no route (the node enforces NetworkPolicy).
fn fresh_cluster(lane: &OpenBaoCluster) -> Result<OpenBaoCluster> {
    let apparmor = lane.spec.workload_hardening.app_armor_enabled;
    Ok(serde_json::from_value(json!({
        "apiVersion": "openbao.org/v1alpha1",
        "kind": "OpenBaoCluster",
        "metadata": {"name": FRESH, "namespace": TENANT_NS},
        "spec": {
            "version": lane.spec.version,
            "profile": "Development",
            "replicas": 1,
            "storage": {"size": "1Gi"},
            "tls": {"mode": "OperatorManaged"},
            "selfInit": {"oidc": {"adminServiceAccount": {"name": "bao-admin"}}},
            "workloadHardening": {"appArmorEnabled": apparmor},
            "network": {"ingressRules": [{
                "from": [{"ipBlock": {"cidr": format!("{}/32", testkit::node::HOST_IP)}}],
                "ports": [{"port": 8200}],
            }]},
        }
    }))?)
}

/// Copies `openbao-unseal-key` to `openbao-restored-unseal-key` (same `key`).
async fn copy_seal_key(client: &Client) -> Result<()> {
    let secrets = Api::<Secret>::namespaced(client.clone(), TENANT_NS);
    let lane_key = secrets.get(&format!("{CLUSTER}-unseal-key")).await?;
    let data = lane_key
        .data
        .clone()
        .context("the lane's seal key Secret has no data")?;
    ensure!(data.contains_key("key"), "the lane's seal key Secret has no `key`");
    let copy: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("{FRESH}-unseal-key"), "namespace": TENANT_NS},
        "type": "Opaque",
        "immutable": true,
    }))?;
    let copy = Secret {
        data: Some(data),
        ..copy
    };
    secrets.create(&PostParams::default(), &copy).await?;
    Ok(())
}

/// A client for the fresh cluster's public Service (ClusterIP, reached from the host), trusting
/// only the cluster's operator-managed CA; returns it with its base URL.
async fn fresh_client(client: &Client) -> Result<(reqwest::Client, String)> {
    let host = format!("{FRESH}-public.{TENANT_NS}.svc");
    let service = Api::<Service>::namespaced(client.clone(), TENANT_NS)
        .get(&format!("{FRESH}-public"))
        .await?;
    let ip: IpAddr = service
        .spec
        .and_then(|s| s.cluster_ip)
        .context("no ClusterIP")?
        .parse()?;
    let ca = Api::<Secret>::namespaced(client.clone(), TENANT_NS)
        .get(&format!("{FRESH}-tls-ca"))
        .await?
        .data
        .and_then(|d| d.get("ca.crt").map(|v| v.0.clone()))
        .context("the fresh cluster's CA Secret has no ca.crt")?;
    let http = reqwest::Client::builder()
        .resolve(&host, SocketAddr::new(ip, 8200))
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca)?)
        .timeout(Duration::from_secs(10))
        .build()?;
    Ok((http, format!("https://{host}:8200")))
}

async fn wait_available(clusters: &Api<OpenBaoCluster>, name: &str, timeout: Duration) -> Result<()> {
    let mut last = None;
    wait_for(&format!("OpenBaoCluster {name} Available"), timeout, async || {
        let cluster = clusters.get(name).await?;
        last = cluster.status.clone();
        let initialized = cluster.status.as_ref().is_some_and(|s| s.initialized);
        let available = condition(&cluster, conditions::AVAILABLE).is_some_and(|(s, _)| s == "True");
        Ok((initialized && available).then_some(()))
    })
    .await
    .with_context(|| format!("last status: {last:#?}"))
}

/// Reads every written secret at `base` and compares the values.
pub async fn read_back(http: &reqwest::Client, base: &str, token: &str, written: &[Written]) -> Result<()> {
    for w in written {
        let (status, answer) = kv(http, base, token, reqwest::Method::GET, &w.path, None).await?;
        ensure!(
            status == 200,
            "GET secret/data/{} at {base}: HTTP {status}: {answer}",
            w.path
        );
        ensure!(
            answer["data"]["data"]["value"] == w.value.as_str(),
            "secret/data/{} at {base} holds another value",
            w.path
        );
    }
    Ok(())
}

/// Steps 1-4 above on the running lane (its cluster Available, its route accepted).
pub async fn rehearse_backup_and_restore(client: Client) -> Result<()> {
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), TENANT_NS);
    route_accepted(&client).await?;

    // 1. The admin writes secrets through the Gateway.
    let ca = read(&lane_dir().join("ca.crt"))?;
    let edge = edge_client(Some(&ca))?;
    let admin = login(
        &edge,
        "auth/jwt-operator/login",
        json!({"role": "admin", "jwt": admin_jwt(&client, CLUSTER).await?}),
    )
    .await?;
    let token = client_token(&admin)?;
    let stamp = jiff::Timestamp::now().as_nanosecond();
    let written: Vec<Written> = (1..=3)
        .map(|i| Written {
            path: format!("rehearsal/secret-{i}"),
            value: format!("written-before-the-backup-{stamp}-{i}"),
        })
        .collect();
    for w in &written {
        let (status, answer) = kv(
            &edge,
            &edge_url(),
            &token,
            reqwest::Method::POST,
            &w.path,
            Some(json!({"data": {"value": w.value}})),
        )
        .await?;
        ensure!(status == 200, "writing secret/data/{}: HTTP {status}: {answer}", w.path);
    }
    eprintln!("wrote {} secrets through the Gateway as the JWT admin", written.len());

    // 2. lane-backup leaves a new object in the store.
    let store = lane_store(&client).await?;
    let prefix = format!("{TENANT_NS}/{CLUSTER}/");
    let before: Vec<String> = store.list(&prefix).await?.into_iter().map(|o| o.key).collect();
    let backup_began = Instant::now();
    let key = lane_backup()?;
    eprintln!("lane-backup: {key} in {:.1?}", backup_began.elapsed());
    ensure!(!before.contains(&key), "{key} was in the store before lane-backup");
    let lane_cluster = clusters.get(CLUSTER).await?;
    let recorded = lane_cluster
        .status
        .as_ref()
        .and_then(|s| s.backup.as_ref())
        .and_then(|b| b.last_backup_name.clone());
    ensure!(
        recorded.as_deref() == Some(key.as_str()),
        "status.backup.lastBackupName is {recorded:?}, lane-backup printed {key}"
    );
    let object = store
        .head(&key)
        .await
        .with_context(|| format!("HEAD {key} in the store"))?;
    ensure!(object.size > 0, "{key} is empty in the store");
    eprintln!("the store lists {key}: {} bytes", object.size);
    let traffic = Traffic::start(edge.clone(), token.clone());
    let panels = Prometheus::through_edge(&ca)?
        .dashboard_answers(Expect::BackupTaken, Duration::from_secs(60))
        .await?;
    drop(traffic);
    eprintln!("after the backup, the dashboard's panels through the Gateway (series with a number): {panels:?}");

    // 3. A fresh cluster with the lane cluster's seal key.
    copy_seal_key(&client).await?;
    let fresh_began = Instant::now();
    clusters
        .create(&PostParams::default(), &fresh_cluster(&lane_cluster)?)
        .await?;
    wait_available(&clusters, FRESH, Duration::from_secs(300)).await?;
    eprintln!("fresh cluster {FRESH} Available after {:.1?}", fresh_began.elapsed());
    let (fresh, fresh_base) = fresh_client(&client).await?;
    let fresh_admin = login_at(
        &fresh,
        &fresh_base,
        "auth/jwt-operator/login",
        json!({"role": "admin", "jwt": admin_jwt(&client, FRESH).await?}),
    )
    .await?;
    let (status, _) = kv(
        &fresh,
        &fresh_base,
        &client_token(&fresh_admin)?,
        reqwest::Method::GET,
        &written[0].path,
        None,
    )
    .await?;
    ensure!(
        status != 200,
        "the fresh cluster has secret/data/{} before the restore",
        written[0].path
    );

    // 4. lane-restore of the key into the fresh cluster; the secrets come back.
    let restore_began = Instant::now();
    lane_with(&["restore", &key], &[("LANE_RESTORE_CLUSTER", FRESH)])?;
    eprintln!("lane-restore into {FRESH}: {:.1?}", restore_began.elapsed());
    wait_available(&clusters, FRESH, Duration::from_secs(120)).await?;
    // Tokens issued before the restore are gone with the old data: log in again, now as the
    // restored data's admin (its role trusts openbao:bao-admin, the lane's service account).
    // The restored data keeps the SOURCE cluster's identities: its roles accept the lane
    // cluster's audience, not the fresh cluster's (docs/lane.md, "Restore into another cluster").
    let restored_admin = login_at(
        &fresh,
        &fresh_base,
        "auth/jwt-operator/login",
        json!({"role": "admin", "jwt": admin_jwt(&client, CLUSTER).await?}),
    )
    .await?;
    read_back(&fresh, &fresh_base, &client_token(&restored_admin)?, &written).await?;
    eprintln!(
        "the fresh cluster gives back all {} secrets written before the backup",
        written.len()
    );

    clusters.delete(FRESH, &DeleteParams::default()).await?;
    wait_for(
        &format!("OpenBaoCluster {FRESH} gone"),
        Duration::from_secs(120),
        async || Ok(clusters.get_opt(FRESH).await?.is_none().then_some(())),
    )
    .await?;
    Api::<Secret>::namespaced(client.clone(), TENANT_NS)
        .delete(&format!("{FRESH}-unseal-key"), &DeleteParams::default())
        .await
        .ok();

    Ok(())
}

/// Step 5 above on the running lane: `hack/lane.sh upgrade` blue/green to the newest pinned
/// OpenBao (or `LANE_REHEARSE_UPGRADE`; empty skips it) with 0 failed probes through the Gateway,
/// the `written` secrets read back through it, the pre-upgrade snapshot in the bucket, and a
/// downgrade through `spec.version` refused without touching a server.
pub async fn rehearse_upgrade(client: &Client, written: &[Written]) -> Result<()> {
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), TENANT_NS);
    let edge = edge_client(Some(&read(&lane_dir().join("ca.crt"))?))?;
    let store = lane_store(client).await?;
    let newest_pinned = testkit::cache::pinned("OPENBAO_VERSIONS")?
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string();
    let version = std::env::var("LANE_REHEARSE_UPGRADE").unwrap_or(newest_pinned);
    if !version.is_empty() {
        let from = clusters
            .get(CLUSTER)
            .await?
            .status
            .and_then(|s| s.current_version)
            .context("the lane cluster reports no version")?;
        let upgrade_began = Instant::now();
        lane_with(&["upgrade", &version], &[])?;
        let probe = state("last_upgrade_probe").unwrap_or_default();
        eprintln!("lane-upgrade to {version}: {:.1?}; {probe}", upgrade_began.elapsed());
        ensure!(
            probe.contains(", 0 failed,"),
            "failed probes through the Gateway during the upgrade: {probe}"
        );
        let degraded = state("last_upgrade_degraded").unwrap_or_default();
        ensure!(
            degraded == "none",
            "the cluster was Degraded during the upgrade ({degraded}): an upgrade is no degradation"
        );
        route_accepted(client).await?;
        let admin = login(
            &edge,
            "auth/jwt-operator/login",
            json!({"role": "admin", "jwt": admin_jwt(client, CLUSTER).await?}),
        )
        .await?;
        read_back(&edge, &edge_url(), &client_token(&admin)?, written).await?;
        let upgraded = clusters.get(CLUSTER).await?;
        let running = upgraded.status.as_ref().and_then(|s| s.current_version.clone());
        ensure!(
            running.as_deref() == Some(version.as_str()),
            "the lane cluster runs {running:?} after lane-upgrade {version}"
        );
        eprintln!("lane cluster on {version}; secrets read back through the Gateway");
        // The lane asks for a pre-upgrade snapshot: the backup executor stored it outside the
        // scheduled backups' prefix, and the finished upgrade names it as the way back.
        let message = upgraded
            .status
            .as_ref()
            .and_then(|s| s.upgrade.as_ref())
            .and_then(|u| u.message.clone())
            .unwrap_or_default();
        let key = message
            .split_once("pre-upgrade snapshot: ")
            .map(|(_, key)| key.trim().to_string())
            .with_context(|| format!("the finished upgrade names no pre-upgrade snapshot: {message:?}"))?;
        ensure!(key.starts_with("pre-upgrade/openbao/openbao/"), "{key}");
        let stored = store.list("pre-upgrade/").await?;
        ensure!(
            stored.iter().any(|o| o.key == key && o.size > 0),
            "pre-upgrade snapshot {key} is not in the bucket: {stored:?}"
        );
        eprintln!("pre-upgrade snapshot {key} is in the bucket");

        // 6. Going back by changing spec.version is refused, and no server is touched.
        if from != version {
            downgrade_is_refused(client, &clusters, &from, &version).await?;
        }
    }
    Ok(())
}
