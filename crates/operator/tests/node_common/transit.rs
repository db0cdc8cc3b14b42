//! The transit OpenBao of the node seal tests (`node_transit.rs`, `node_seal_migration.rs`): a
//! real `bao` server in a namespace of the test, started as a platform team would run one.

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, ListParams, LogParams};
use kube::{Client, ResourceExt};
use openbao_client::{BaoClient, ClientConfig};
use serde_json::json;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use testkit::openbao::TestTls;

use super::create;

/// The transit server's Service; its test certificate names `openbao.<namespace>.svc`.
/// Its transit key, and the auth mount and role of the servers' login.
pub const KEY_NAME: &str = "openbao-unseal";
pub const LOGIN_MOUNT: &str = "kubernetes/jwt";
pub const LOGIN_ROLE: &str = "sealed-cluster";

pub const TRANSIT_SERVICE: &str = "openbao";
pub const TRANSIT_APP: &str = "transit";
pub const LIMIT: Duration = Duration::from_secs(240);
pub const POLL: Duration = Duration::from_millis(500);

/// The transit OpenBao: a Deployment (one replica, its data on a PVC, its seal key and TLS from a
/// Secret) and its Service; returns a client for it and its ClusterIP.
pub async fn start_transit_server(client: &Client, ns: &str, tls: &TestTls) -> Result<(BaoClient, IpAddr)> {
    let seal_key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, {
        let mut key = [0u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
        key
    });
    create::<Secret>(
        client,
        ns,
        json!({
            "metadata": {"name": "transit-server"},
            "stringData": {
                "tls.crt": std::fs::read_to_string(&tls.cert_file)?,
                "tls.key": std::fs::read_to_string(&tls.key_file)?,
            },
            "data": {"seal.key": seal_key},
        }),
    )
    .await?;
    let config = format!(
        "ui = false\napi_addr = \"https://{TRANSIT_SERVICE}.{ns}.svc:8200\"\n\
         cluster_addr = \"https://{TRANSIT_SERVICE}.{ns}.svc:8201\"\n\
         storage \"raft\" {{\n  path = \"/bao/data\"\n  node_id = \"transit\"\n}}\n\
         listener \"tcp\" {{\n  address = \"0.0.0.0:8200\"\n  tls_cert_file = \"/etc/transit/tls.crt\"\n  tls_key_file = \"/etc/transit/tls.key\"\n}}\n\
         seal \"static\" {{\n  current_key_id = \"transit-1\"\n  current_key = \"file:///etc/transit/seal.key\"\n}}\n"
    );
    create::<k8s_openapi::api::core::v1::ConfigMap>(
        client,
        ns,
        json!({"metadata": {"name": "transit-config"}, "data": {"config.hcl": config}}),
    )
    .await?;
    create::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(
        client,
        ns,
        json!({"metadata": {"name": "transit-data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}}),
    )
    .await?;
    create::<Deployment>(
        client,
        ns,
        json!({
            "metadata": {"name": TRANSIT_APP},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app": TRANSIT_APP}},
                "template": {
                    "metadata": {"labels": {"app": TRANSIT_APP}},
                    "spec": {
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 100, "runAsGroup": 1000, "fsGroup": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": "openbao",
                            "image": "docker.io/openbao/openbao:2.7.2",
                            "args": ["server", "-config=/etc/transit-config/config.hcl"],
                            "ports": [{"containerPort": 8200}],
                            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/transit-config"},
                                {"name": "keys", "mountPath": "/etc/transit"},
                                {"name": "data", "mountPath": "/bao/data"},
                            ],
                        }],
                        "volumes": [
                            {"name": "config", "configMap": {"name": "transit-config"}},
                            {"name": "keys", "secret": {"secretName": "transit-server"}},
                            {"name": "data", "persistentVolumeClaim": {"claimName": "transit-data"}},
                        ],
                    },
                },
            },
        }),
    )
    .await?;
    create::<Service>(
        client,
        ns,
        json!({
            "metadata": {"name": TRANSIT_SERVICE},
            "spec": {"selector": {"app": TRANSIT_APP}, "ports": [{"name": "api", "port": 8200, "targetPort": 8200}]},
        }),
    )
    .await?;
    let ip: IpAddr = Api::<Service>::namespaced(client.clone(), ns)
        .get(TRANSIT_SERVICE)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the transit Service has a ClusterIP")?
        .parse()?;
    let transit = BaoClient::new(
        ClientConfig::new(format!("https://{TRANSIT_SERVICE}.{ns}.svc:8200"))
            .with_ca_pem(tls.ca_pem().as_bytes().to_vec())
            .with_resolve_to(ip)
            // sys/init bootstraps raft and writes the keyring: seconds on a busy node.
            .with_timeout(Duration::from_secs(30)),
    )?;
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let answering = wait_for("the transit server answering", || async {
        Ok(transit.health().await.is_ok())
    })
    .await;
    if let Err(e) = answering {
        let mut logs = String::new();
        for p in pods
            .list(&ListParams::default().labels(&format!("app={TRANSIT_APP}")))
            .await?
            .items
        {
            let previous = LogParams {
                previous: true,
                ..Default::default()
            };
            let log = pods.logs(&p.name_any(), &previous).await.unwrap_or_default();
            logs += &format!(
                "{}: {:?}\nlast log:\n{log}\n",
                p.name_any(),
                p.status.map(|s| s.container_statuses)
            );
        }
        bail!("{e:#}\n{logs}");
    }
    Ok((transit, ip))
}

/// Polls `check` until it holds, for at most [`LIMIT`].
pub async fn wait_for<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let started = Instant::now();
    loop {
        if check().await? {
            return Ok(());
        }
        if started.elapsed() > LIMIT {
            bail!("{what}: not reached after {LIMIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`start_transit_server`], initialized and active; also returns its root token.
pub async fn start_initialized(
    client: &Client,
    ns: &str,
    tls: &TestTls,
) -> Result<(BaoClient, IpAddr, openbao_client::Token)> {
    let (server, ip) = start_transit_server(client, ns, tls).await?;
    let root = testkit::transit::initialize(&server).await?;
    wait_for("the transit server active", || async {
        Ok(server
            .health()
            .await
            .is_ok_and(|h| h.state == openbao_client::HealthState::Active))
    })
    .await?;
    Ok((server, ip, root))
}

/// A transit server in `transit_ns` that cluster `cluster` of `ns` logs in to
/// (`spec.unseal.transit.login`), set up as a platform team would: started, initialized, its key
/// made, a `jwt` auth method trusting the apiserver's service-account keys with one role bound
/// to the cluster's transit audience and its servers' subject, and the transit CA in the Secret
/// `transit-ca` of `ns`.
pub struct LoginTransit {
    /// `spec.unseal` for the cluster.
    pub unseal: serde_json::Value,
    /// The role's audience and subject.
    pub login: testkit::transit::SealLogin,
    /// The orphan seal token provisioning also makes: never given to the cluster, only checked
    /// to be nowhere.
    pub seal_token: String,
    /// The transit server, for stopping it.
    pub server: BaoClient,
    _tls_dir: tempfile::TempDir,
}

pub async fn transit_with_login(client: &Client, ns: &str, transit_ns: &str, cluster: &str) -> Result<LoginTransit> {
    use openbao_api::names;
    let dir = tempfile::tempdir()?;
    let tls = TestTls::generate(dir.path(), transit_ns)?;
    let started = Instant::now();
    let (server, transit_ip, root) = start_initialized(client, transit_ns, &tls).await?;
    let trust = openbao_operator::runtime::discovery::service_account_trust(client).await?;
    let login = testkit::transit::SealLogin {
        mount: LOGIN_MOUNT.into(),
        role: LOGIN_ROLE.into(),
        public_keys_pem: trust.public_keys_pem,
        audience: names::transit_login_audience(ns, cluster),
        subject: format!("system:serviceaccount:{ns}:{}", names::service_account(cluster)),
    };
    let seal_token = testkit::transit::provision_with_login(&server.with_token(root), KEY_NAME, &login).await?;
    create::<Secret>(
        client,
        ns,
        json!({"metadata": {"name": "transit-ca"}, "stringData": {"ca.crt": tls.ca_pem()}}),
    )
    .await?;
    eprintln!(
        "transit server initialized and provisioned after {:.1?} (ClusterIP {transit_ip})",
        started.elapsed()
    );
    Ok(LoginTransit {
        unseal: json!({"type": "transit", "transit": {
            "address": format!("https://{TRANSIT_SERVICE}.{transit_ns}.svc:8200"),
            "keyName": KEY_NAME,
            "login": {"mountPath": LOGIN_MOUNT, "role": LOGIN_ROLE},
            "caSecretRef": {"name": "transit-ca", "key": "ca.crt"},
        }}),
        login,
        seal_token,
        server,
        _tls_dir: dir,
    })
}

/// Waits until `cluster` of `ns` is `Available` with every one of its `replicas` ready, keeping
/// `public_ip` pointed at its public Service; returns how long that took.
pub async fn wait_all_ready(
    client: &Client,
    ns: &str,
    cluster: &str,
    replicas: i32,
    public_ip: &super::PublicIp,
) -> Result<Duration> {
    use openbao_api::{OpenBaoCluster, conditions};
    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), ns);
    let started = Instant::now();
    wait_for(
        &format!("{cluster} Available with {replicas} ready servers"),
        || async {
            super::learn_public_ip(client, ns, cluster, public_ip).await?;
            let c = clusters.get(cluster).await?;
            Ok(
                super::condition(&c, conditions::AVAILABLE)
                    .is_some_and(|(s, r)| s == "True" && r == "AllReplicasReady")
                    && c.status.as_ref().is_some_and(|s| s.ready_replicas == replicas),
            )
        },
    )
    .await?;
    Ok(started.elapsed())
}
