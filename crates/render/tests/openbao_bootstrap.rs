//! The operator's rendered configuration bootstraps a real 3-node OpenBao cluster.
//!
//! Everything a pod gets comes from `openbao_render` and is used as rendered: `10-server.hcl`,
//! the entrypoint (it renders the pod's config, adds the self-init file on pod 0 only and runs
//! `bao server`), the `zz-init.hcl` self-init requests and the certificates. The only changes
//! are the ones [`remap_for_loopback`] documents; `20-service-registration.hcl` is left out
//! because it needs a Kubernetes API.
//!
//! Proven per version: three nodes started at once form one cluster with three voters; the root
//! token is revoked; the demo user and the JWT roles log in with their policies, with this
//! cluster's audience only (another cluster's, the old shared one and the apiserver's are
//! refused); TLS is verified
//! by host name; a renewed certificate is served without a restart; a restarted pod 0 does not
//! initialize a second time.

use anyhow::{Context, Result, bail, ensure};
use openbao_api::OpenBaoClusterSpec;
use openbao_client::{BaoClient, ClientConfig, HealthState, Login};
use openbao_render::pki::{self, KeyedCert};
use openbao_render::{API_PORT, CLUSTER_PORT, Cluster, JwtTrust, OperatorIdentity, config, paths, selfinit};
use serde_json::json;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testkit::openbao::{
    BaoServer, BaoServerSpec, NodeAddr, TestJwtSigner, poll_until, unix_now, wait_for_voters, write_config_dir,
    write_static_seal_key,
};
use testkit::pki::{pem_fingerprint, served_cert_fingerprint};

const CLUSTER: &str = "openbao";
const NAMESPACE: &str = "obtest";
const REPLICAS: usize = 3;
const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo-password-for-the-bootstrap-test";
const JWT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const ADMIN_SERVICE_ACCOUNT: &str = "bao-admin";
/// What the entrypoint prints when it adds the self-init file.
const SELF_INIT_INCLUDED: &str = "self-initialization requests included";
const RELOAD_LOGGED: &str = "certificate changed, reloading OpenBao (SIGHUP)";
const STARTUP: Duration = Duration::from_secs(90);

/// One 3-node cluster at a time: six `bao` processes on two shared cores would stretch the raft
/// timeouts the assertions wait on.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn rendered_config_bootstraps_openbao_2_6_2() -> Result<()> {
    bootstrap("2.6.2").await
}

#[tokio::test]
async fn rendered_config_bootstraps_openbao_2_7_2() -> Result<()> {
    bootstrap("2.7.2").await
}

/// The lane's cluster: Development, 3 replicas, demo login, an admin service account, and user
/// requests that mount KV v2 and seed it (listed seed first: the renderer must reorder them).
fn lane_spec(version: &str) -> Result<OpenBaoClusterSpec> {
    Ok(serde_json::from_value(json!({
        "version": version,
        "profile": "Development",
        "replicas": REPLICAS,
        "storage": {"size": "1Gi"},
        "selfInit": {
            "oidc": {"adminServiceAccount": {"namespace": NAMESPACE, "name": ADMIN_SERVICE_ACCOUNT}},
            "demoUserpass": {"username": DEMO_USER, "passwordSecretRef": {"name": "demo-password"}},
            "requests": [
                {"name": "seed", "operation": "update", "path": "secret/data/demo", "data": {"data": {"hello": "world"}}},
                {"name": "kv", "operation": "update", "path": "sys/mounts/secret", "data": {"type": "kv", "options": {"version": "2"}}}
            ]
        },
        "gateway": {"gatewayRef": {"name": "edge"}, "hostname": "bao.obtest.localhost"}
    }))?)
}

fn pod_name(ordinal: usize) -> String {
    format!("{CLUSTER}-{ordinal}")
}

/// Where the container paths of one pod live in this test.
struct LocalPaths<'a> {
    tls_dir: &'a Path,
    unseal_dir: &'a Path,
    data_dir: &'a Path,
}

/// Turns the rendered `10-server.hcl` into the config of pod `ordinal` on loopback. These, and
/// only these, differ from a pod:
/// - the container paths [`paths::TLS_DIR`], [`paths::UNSEAL_DIR`] and [`paths::DATA_DIR`]
///   become temp dirs;
/// - the listener's `0.0.0.0:8200/8201` becomes this pod's loopback ip;
/// - every address a pod reaches through cluster DNS becomes the loopback ip of the pod behind
///   it: this pod's `api_addr`/`cluster_addr` and each `retry_join` `leader_api_addr`.
///
/// `leader_tls_servername` stays the pod's DNS name, so every join still verifies the
/// certificate's DNS SANs; `node_id` stays the placeholder the entrypoint fills in.
fn remap_for_loopback(
    server_hcl: &str,
    cluster: &Cluster,
    ordinal: usize,
    addrs: &[NodeAddr],
    local: &LocalPaths,
) -> Result<String> {
    let own = addrs[ordinal].ip;
    let own_host = format!(
        "{}.{}.{}.svc",
        paths::POD_NAME_PLACEHOLDER,
        cluster.name,
        cluster.namespace
    );
    let mut hcl = server_hcl.to_string();
    let mut replace = |from: String, to: String| -> Result<()> {
        ensure!(
            hcl.contains(&from),
            "rendered 10-server.hcl has no {from:?} to remap:\n{hcl}"
        );
        hcl = hcl.replace(&from, &to);
        Ok(())
    };
    replace(paths::TLS_DIR.to_string(), local.tls_dir.display().to_string())?;
    replace(
        format!("file://{}/", paths::UNSEAL_DIR),
        format!("file://{}/", local.unseal_dir.display()),
    )?;
    replace(
        format!("\"{}\"", paths::DATA_DIR),
        format!("\"{}\"", local.data_dir.display()),
    )?;
    replace(format!("\"0.0.0.0:{API_PORT}\""), format!("\"{own}:{API_PORT}\""))?;
    replace(
        format!("\"0.0.0.0:{CLUSTER_PORT}\""),
        format!("\"{own}:{CLUSTER_PORT}\""),
    )?;
    replace(format!("\"https://{own_host}:"), format!("\"https://{own}:"))?;
    for (peer, addr) in addrs.iter().enumerate() {
        let host = cluster.pod_host(peer as u32);
        replace(
            format!("leader_api_addr = \"https://{host}:{API_PORT}\""),
            format!("leader_api_addr = \"https://{}:{API_PORT}\"", addr.ip),
        )?;
    }
    // Nothing of the container or of cluster DNS may be left, except the names TLS verifies.
    for gone in ["/etc/bao/", "\"/bao/", "0.0.0.0", ".svc:"] {
        ensure!(!hcl.contains(gone), "{gone:?} left after remapping:\n{hcl}");
    }
    for peer in 0..addrs.len() {
        let servername = format!("leader_tls_servername = \"{}\"", cluster.pod_host(peer as u32));
        ensure!(hcl.contains(&servername), "{servername} lost in remapping:\n{hcl}");
    }
    Ok(hcl)
}

/// The test's files and addresses: what the operator would put into Secrets and ConfigMaps.
struct Fixture {
    dir: tempfile::TempDir,
    spec: OpenBaoClusterSpec,
    operator: OperatorIdentity,
    signer: TestJwtSigner,
    addrs: Vec<NodeAddr>,
    ca: KeyedCert,
    tls_dir: PathBuf,
}

impl Fixture {
    fn cluster(&self) -> Cluster<'_> {
        Cluster {
            name: CLUSTER,
            namespace: NAMESPACE,
            uid: "bootstrap-test-uid",
            spec: &self.spec,
        }
    }

    fn node_dir(&self, ordinal: usize) -> PathBuf {
        self.dir.path().join(pod_name(ordinal))
    }

    fn rendered_dir(&self, ordinal: usize) -> PathBuf {
        self.node_dir(ordinal).join("rendered")
    }

    /// A client for pod `ordinal` that connects to its loopback ip but verifies its pod DNS name
    /// against `ca_pem`.
    fn client_config(&self, ordinal: usize, ca_pem: &str) -> ClientConfig {
        let host = self.cluster().pod_host(ordinal as u32);
        ClientConfig::new(format!("https://{host}:{API_PORT}"))
            .with_ca_pem(ca_pem.as_bytes().to_vec())
            .with_resolve_to(IpAddr::V4(self.addrs[ordinal].ip))
            .with_timeout(Duration::from_secs(10))
    }

    /// A service-account token as the apiserver would issue it, signed by the trusted key.
    fn service_account_jwt(&self, namespace: &str, service_account: &str, audience: &str) -> Result<String> {
        let now = unix_now();
        self.signer.sign(&json!({
            "iss": JWT_ISSUER,
            "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
            "aud": [audience],
            "iat": now,
            "nbf": now - 5,
            "exp": now + 600,
        }))
    }
}

/// Renders and writes everything, and returns the node specs (not started).
fn prepare(version: &str) -> Result<(Fixture, Vec<BaoServerSpec>)> {
    let bao = testkit::cache::bao_binary(version)?;
    let dir = tempfile::Builder::new().prefix("openbao-bootstrap-").tempdir()?;
    let signer = TestJwtSigner::new()?;
    let addrs = (0..REPLICAS)
        .map(|_| NodeAddr::allocate())
        .collect::<Result<Vec<_>>>()?;
    let spec = lane_spec(version)?;
    let tls_dir = dir.path().join("tls");
    let probe = Cluster {
        name: CLUSTER,
        namespace: NAMESPACE,
        uid: "bootstrap-test-uid",
        spec: &spec,
    };
    let now = jiff::Timestamp::now();
    let ca = pki::issue_ca(CLUSTER, now)?;
    let server = issue_server_cert(&probe, &ca)?;
    let fixture = Fixture {
        dir,
        operator: OperatorIdentity {
            namespace: "openbao-operator-system".into(),
            service_account: "openbao-operator".into(),
        },
        signer,
        addrs,
        ca,
        tls_dir,
        spec: spec.clone(),
    };
    let cluster = fixture.cluster();
    let root = fixture.dir.path();

    write_config_dir(
        &fixture.tls_dir,
        &[
            ("ca.crt", &fixture.ca.cert_pem),
            ("tls.crt", &server.cert_pem),
            ("tls.key", &server.key_pem),
        ],
    )?;
    let unseal_dir = root.join("unseal");
    write_static_seal_key(&unseal_dir.join("key"))?;
    let trust = JwtTrust {
        issuer: JWT_ISSUER.into(),
        public_keys_pem: vec![fixture.signer.public_key_pem()],
    };
    let init_hcl = selfinit::init_hcl(&cluster, &fixture.operator, &trust);
    ensure!(
        !init_hcl.contains("/etc/bao") && !init_hcl.contains("/bao/"),
        "init file uses container paths"
    );
    // Mounted on every pod, as the optional init Secret is: the entrypoint decides who uses it.
    let init_dir = write_config_dir(&root.join("init"), &[(config::INIT_FILE, &init_hcl)])?;

    let server_hcl = config::server_hcl(&cluster);
    let entrypoint = config::entrypoint_sh();
    let bin_dir = bao.parent().context("bao binary has no parent dir")?;
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut specs = Vec::new();
    for ordinal in 0..REPLICAS {
        let node_dir = fixture.node_dir(ordinal);
        let data_dir = node_dir.join("data");
        // The PersistentVolume: exists, empty.
        std::fs::create_dir_all(&data_dir)?;
        let local = LocalPaths {
            tls_dir: &fixture.tls_dir,
            unseal_dir: &unseal_dir,
            data_dir: &data_dir,
        };
        let hcl = remap_for_loopback(&server_hcl, &cluster, ordinal, &fixture.addrs, &local)?;
        let templates = write_config_dir(
            &node_dir.join("templates"),
            &[(config::SERVER_FILE, &hcl), (config::ENTRYPOINT_FILE, &entrypoint)],
        )?;
        let script = templates.join(config::ENTRYPOINT_FILE);
        let script = script.to_str().context("entrypoint path is not UTF-8")?;
        let spec = BaoServerSpec::new(
            &pod_name(ordinal),
            &bao,
            &templates,
            fixture.client_config(ordinal, &fixture.ca.cert_pem),
        )
        .launcher(Path::new("/bin/sh"), &[script])
        .env("POD_NAME", &pod_name(ordinal))
        .env("BAO_TEMPLATE_DIR", &templates.display().to_string())
        .env("BAO_INIT_DIR", &init_dir.display().to_string())
        .env("BAO_RENDERED_DIR", &fixture.rendered_dir(ordinal).display().to_string())
        .env("BAO_DATA_DIR", &data_dir.display().to_string())
        .env("BAO_TLS_CERT", &fixture.tls_dir.join("tls.crt").display().to_string())
        .env("BAO_RELOAD_POLL_SECONDS", "1")
        .env(paths::DEMO_PASSWORD_ENV, DEMO_PASSWORD)
        .env("PATH", &path);
        specs.push(spec);
    }
    Ok((fixture, specs))
}

fn issue_server_cert(cluster: &Cluster, ca: &KeyedCert) -> Result<KeyedCert> {
    let lifetime = pki::server_lifetime(pki::parse_duration(&cluster.spec.tls.rotation_period)?);
    Ok(pki::issue_server(
        ca,
        &pki::server_sans(cluster),
        jiff::Timestamp::now(),
        lifetime,
    )?)
}

async fn bootstrap(version: &str) -> Result<()> {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (fx, specs) = prepare(version)?;
    let cluster = fx.cluster();
    let marker = fx.dir.path().display().to_string();
    let mut pids = BTreeSet::new();

    // 1. All pods start at once, like a StatefulSet with podManagementPolicy Parallel.
    let t0 = Instant::now();
    let mut nodes = specs.into_iter().map(BaoServer::start).collect::<Result<Vec<_>>>()?;
    let active = nodes[0].wait_active(STARTUP).await?;
    let t_active = t0.elapsed();
    for node in &mut nodes[1..] {
        node.wait_unsealed(STARTUP).await?;
    }
    let t_unsealed = t0.elapsed();
    let cluster_id = active.cluster_id.clone().context("active node reports no cluster_id")?;
    for node in &nodes {
        let health = node.health().await?;
        ensure!(
            health.cluster_id.as_deref() == Some(cluster_id.as_str()) && health.version.starts_with(version),
            "{} is not in the cluster {cluster_id} of version {version}: {health:?}",
            node.name()
        );
    }

    // The demo user (userpass, password from the pod's environment) is an admin.
    let mut our_accessors = BTreeSet::new();
    let demo = nodes[0]
        .client()
        .login_userpass(selfinit::USERPASS_MOUNT, DEMO_USER, DEMO_PASSWORD)
        .await
        .context("demo userpass login")?;
    ensure_policy(&demo, "admin", "demo user")?;
    our_accessors.insert(demo.accessor.clone());
    let admin0 = nodes[0].client().with_token(demo.token.clone());

    let voters = wait_for_voters(&admin0, REPLICAS, STARTUP).await?;
    let t_voters = t0.elapsed();
    eprintln!(
        "TIMING {version}: node 0 active {} ms, 3 unsealed {} ms, 3 voters {} ms",
        t_active.as_millis(),
        t_unsealed.as_millis(),
        t_voters.as_millis()
    );
    let expected_ids: BTreeSet<String> = (0..REPLICAS).map(pod_name).collect();
    ensure!(
        voters.voters.iter().cloned().collect::<BTreeSet<_>>() == expected_ids,
        "voters are not the three pods: {voters:?}"
    );
    let raft = admin0.raft_configuration().await?;
    for (ordinal, addr) in fx.addrs.iter().enumerate() {
        let server = raft
            .server(&pod_name(ordinal))
            .with_context(|| format!("{} missing from {raft:?}", pod_name(ordinal)))?;
        ensure!(
            server.voter && server.address == addr.cluster().to_string(),
            "{server:?}"
        );
    }
    // Self-init applied the profile's autopilot settings.
    let autopilot = admin0.autopilot_config().await?;
    ensure!(
        autopilot.server_stabilization_time == "2s" && autopilot.min_quorum == 3 && autopilot.cleanup_dead_servers,
        "{autopilot:?}"
    );

    // 2. The JWT roles: the operator's, the admin's; each accepts only this cluster's audience.
    let audience = openbao_api::names::jwt_audience(NAMESPACE, CLUSTER);
    ensure!(
        audience == "openbao-operator.openbao.org/obtest/openbao",
        "the audience formula changed: {audience}"
    );
    let operator_jwt = fx.service_account_jwt(&fx.operator.namespace, &fx.operator.service_account, &audience)?;
    let operator = nodes[0]
        .client()
        .login_jwt(selfinit::JWT_MOUNT, "openbao-operator", &operator_jwt)
        .await
        .context("operator JWT login")?;
    ensure_policy(&operator, "openbao-operator", "operator role")?;
    our_accessors.insert(operator.accessor.clone());
    // Through a standby, which forwards to the active node.
    let operator1 = nodes[1].client().with_token(operator.token.clone());
    let raft = operator1.raft_configuration().await.context("operator reads raft")?;
    ensure!(raft.servers.len() == REPLICAS, "{raft:?}");
    operator1.autopilot_state().await.context("operator reads autopilot")?;
    expect_status(operator1.read("sys/mounts").await, 403, "operator reads sys/mounts")?;

    let admin_jwt = fx.service_account_jwt(NAMESPACE, ADMIN_SERVICE_ACCOUNT, &audience)?;
    let admin = nodes[2]
        .client()
        .login_jwt(selfinit::JWT_MOUNT, "admin", &admin_jwt)
        .await
        .context("admin JWT login")?;
    ensure_policy(&admin, "admin", "admin role")?;
    our_accessors.insert(admin.accessor.clone());

    // The same operator's token for another cluster (another namespace, or another name), the
    // old shared audience, and the apiserver's own audience are all refused by every role.
    for other in [
        openbao_api::names::jwt_audience("other-team", CLUSTER),
        openbao_api::names::jwt_audience(NAMESPACE, "openbao-2"),
        "openbao-internal".to_string(),
        JWT_ISSUER.to_string(),
    ] {
        let jwt = fx.service_account_jwt(&fx.operator.namespace, &fx.operator.service_account, &other)?;
        let refused = nodes[0]
            .client()
            .login_jwt(selfinit::JWT_MOUNT, "openbao-operator", &jwt)
            .await;
        expect_status(refused, 400, &format!("operator login with audience {other}"))?;
        let jwt = fx.service_account_jwt(NAMESPACE, ADMIN_SERVICE_ACCOUNT, &other)?;
        let refused = nodes[0].client().login_jwt(selfinit::JWT_MOUNT, "admin", &jwt).await;
        expect_status(refused, 400, &format!("admin login with audience {other}"))?;
    }

    // 3. The root token of self-init is gone: only our own logins hold tokens.
    let accessors: BTreeSet<String> = admin0.list("auth/token/accessors").await?.into_iter().collect();
    ensure!(
        accessors == our_accessors,
        "token accessors {accessors:?} are not exactly our logins {our_accessors:?}: a root token survived?"
    );
    let log0 = std::fs::read_to_string(nodes[0].log_path())?;
    ensure!(
        log0.lines()
            .any(|l| l.contains("revoked lease") && l.contains("auth/token/root")),
        "node 0 never logged the revocation of the root token"
    );
    ensure!(
        log0.contains(SELF_INIT_INCLUDED),
        "the entrypoint of pod 0 did not include the self-init file"
    );

    // 4. The seed, written by the last self-init request, reads back through every node.
    for node in &nodes {
        let secret = node
            .client()
            .with_token(demo.token.clone())
            .read("secret/data/demo")
            .await?
            .with_context(|| format!("secret/data/demo missing on {}", node.name()))?;
        ensure!(secret["data"]["data"]["hello"] == "world", "{}: {secret}", node.name());
    }

    // 5. TLS: the clients above verified the pod names against the generated CA; a different
    // CA, or a name the certificate does not carry, is refused.
    let other_ca = pki::issue_ca("someone-else", jiff::Timestamp::now())?;
    let stranger = BaoClient::new(fx.client_config(0, &other_ca.cert_pem))?;
    expect_tls_refused(stranger.health().await, "a client trusting another CA")?;
    let wrong_name = BaoClient::new(
        ClientConfig::new(format!("https://not-in-the-certificate.example:{API_PORT}"))
            .with_ca_pem(fx.ca.cert_pem.as_bytes().to_vec())
            .with_resolve_to(IpAddr::V4(fx.addrs[0].ip))
            .with_timeout(Duration::from_secs(10)),
    )?;
    expect_tls_refused(wrong_name.health().await, "a host name outside the SANs")?;

    // 6. Hot reload: a renewed certificate (new key) is served without restarting anything.
    let shell_pids = nodes
        .iter()
        .map(|n| n.pid().context("node not running"))
        .collect::<Result<Vec<_>>>()?;
    let bao_pids = shell_pids
        .iter()
        .map(|p| bao_child_of(*p))
        .collect::<Result<Vec<_>>>()?;
    pids.extend(shell_pids.iter().chain(&bao_pids).copied());
    let served = served_cert_fingerprint(fx.addrs[0].api(), &cluster.pod_host(0)).await?;
    let first = fx.tls_dir.join("tls.crt");
    ensure!(
        served == pem_fingerprint(&std::fs::read_to_string(&first)?)?,
        "node 0 does not serve the issued certificate"
    );
    let renewed = issue_server_cert(&cluster, &fx.ca)?;
    let renewed_fp = pem_fingerprint(&renewed.cert_pem)?;
    let t_reload = Instant::now();
    // Key first: the entrypoint reloads when the *certificate* changes, and must then find the
    // matching key (a Secret volume swaps both at once).
    replace_atomically(&fx.tls_dir.join("tls.key"), &renewed.key_pem)?;
    replace_atomically(&first, &renewed.cert_pem)?;
    for (ordinal, addr) in fx.addrs.iter().enumerate() {
        let host = cluster.pod_host(ordinal as u32);
        poll_until(
            &format!("{} serves the renewed certificate", pod_name(ordinal)),
            Duration::from_secs(15),
            || async { Ok((served_cert_fingerprint(addr.api(), &host).await? == renewed_fp).then_some(())) },
        )
        .await?;
    }
    eprintln!(
        "TIMING {version}: renewed certificate served by all 3 nodes {} ms after the swap",
        t_reload.elapsed().as_millis()
    );
    for (ordinal, node) in nodes.iter().enumerate() {
        ensure!(
            node.pid() == Some(shell_pids[ordinal]) && bao_child_of(shell_pids[ordinal])? == bao_pids[ordinal],
            "{} was restarted instead of reloaded",
            node.name()
        );
        let log = std::fs::read_to_string(node.log_path())?;
        ensure!(log.contains(RELOAD_LOGGED), "{} never signalled a reload", node.name());
    }
    ensure!(
        nodes[0].health().await?.state == HealthState::Active,
        "node 0 lost leadership"
    );
    let secret = admin0.read("secret/data/demo").await?.context("read after reload")?;
    ensure!(secret["data"]["data"]["hello"] == "world", "{secret}");

    // 7. Restart safety: pod 0 comes back with the init file still mounted and must rejoin,
    // not found a second cluster.
    let t_stop = Instant::now();
    nodes[0].stop().await;
    let stop_ms = t_stop.elapsed().as_millis();
    let log0 = std::fs::read_to_string(nodes[0].log_path())?;
    ensure!(
        stop_ms < 14_000 && log0.contains("shutdown triggered"),
        "SIGTERM was not forwarded to bao (stop took {stop_ms} ms)"
    );
    let t_failover = Instant::now();
    let survivors = &nodes[1..];
    poll_until("a new active node", Duration::from_secs(60), || async {
        for node in survivors {
            if node.health().await.is_ok_and(|h| h.state == HealthState::Active) {
                return Ok(Some(()));
            }
        }
        Ok(None)
    })
    .await?;
    eprintln!(
        "TIMING {version}: graceful stop of node 0 {stop_ms} ms, new active {} ms later",
        t_failover.elapsed().as_millis()
    );
    let t_restart = Instant::now();
    nodes[0].restart().await?;
    let health = nodes[0].wait_unsealed(STARTUP).await?;
    eprintln!(
        "TIMING {version}: restarted node 0 unsealed in {} ms",
        t_restart.elapsed().as_millis()
    );
    ensure!(
        health.cluster_id.as_deref() == Some(cluster_id.as_str()),
        "restarted node 0 is in another cluster: {health:?}"
    );
    let admin1 = nodes[1].client().with_token(demo.token.clone());
    let state = wait_for_voters(&admin1, REPLICAS, STARTUP).await?;
    ensure!(
        state.servers.len() == REPLICAS && state.servers.get(&pod_name(0)).is_some_and(|s| s.healthy),
        "{state:?}"
    );
    let log0 = std::fs::read_to_string(nodes[0].log_path())?;
    let (_, after_restart) = log0
        .split_once("testkit: restarting")
        .context("restart marker missing in node 0's log")?;
    ensure!(
        !after_restart.contains(SELF_INIT_INCLUDED),
        "node 0 included the self-init file again although its storage is not empty"
    );
    ensure!(
        !fx.rendered_dir(0).join(config::INIT_FILE).exists(),
        "restart left the self-init file in the rendered config"
    );
    for (ordinal, node) in nodes.iter().enumerate().skip(1) {
        let log = std::fs::read_to_string(node.log_path())?;
        ensure!(
            !log.contains(SELF_INIT_INCLUDED) && !fx.rendered_dir(ordinal).join(config::INIT_FILE).exists(),
            "{} included the self-init file",
            node.name()
        );
    }
    for node in &nodes {
        let health = node.health().await?;
        ensure!(health.cluster_id.as_deref() == Some(cluster_id.as_str()), "{health:?}");
    }

    // 8. Nothing outlives the test.
    let shell0 = nodes[0].pid().context("node 0 not running")?;
    pids.insert(shell0);
    pids.insert(bao_child_of(shell0)?);
    for node in &mut nodes {
        node.stop().await;
    }
    drop(nodes);
    poll_until("every process of this test gone", Duration::from_secs(10), || async {
        let left = processes_mentioning(&marker)?;
        let alive: Vec<u32> = pids.iter().copied().filter(|p| is_alive(*p)).collect();
        Ok((left.is_empty() && alive.is_empty()).then_some(()))
    })
    .await?;
    Ok(())
}

fn ensure_policy(login: &Login, policy: &str, who: &str) -> Result<()> {
    ensure!(
        login.token_policies.iter().any(|p| p == policy),
        "{who}: token policies {:?} lack {policy}",
        login.token_policies
    );
    Ok(())
}

/// `result` must be an API error with `status`.
fn expect_status<T: std::fmt::Debug>(result: openbao_client::Result<T>, status: u16, what: &str) -> Result<()> {
    match result {
        Err(e) if e.status() == Some(status) => Ok(()),
        Err(e) => bail!("{what}: expected HTTP {status}, got {e}"),
        Ok(v) => bail!("{what}: expected HTTP {status}, got success {v:?}"),
    }
}

/// The TLS handshake must fail (reported as a connect error, with the certificate reason).
fn expect_tls_refused<T: std::fmt::Debug>(result: openbao_client::Result<T>, what: &str) -> Result<()> {
    match result {
        Err(e) if e.is_connect() && e.to_string().to_lowercase().contains("certificate") => Ok(()),
        Err(e) => bail!("{what}: expected a certificate error, got {e}"),
        Ok(v) => bail!("{what}: TLS was accepted: {v:?}"),
    }
}

/// Write to a temp file in the same directory, then rename: readers see old or new, never half.
fn replace_atomically(path: &Path, content: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename onto {}", path.display()))
}

/// The `bao` process the entrypoint shell `shell` started.
fn bao_child_of(shell: u32) -> Result<u32> {
    let children: Vec<u32> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|(comm, _, ppid)| comm == "bao" && ppid == shell))
        .collect();
    match children.as_slice() {
        [one] => Ok(*one),
        other => bail!("expected one bao child of shell {shell}, found {other:?}"),
    }
}

/// (comm, state, ppid) from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(String, char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, tail) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let mut fields = tail.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// Running, i.e. present and not a zombie waiting to be reaped by someone else.
fn is_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(_, state, _)| state != 'Z')
}

/// `pgrep -a -f <needle>`: every process whose command line mentions this test's directory.
fn processes_mentioning(needle: &str) -> Result<Vec<String>> {
    let out = std::process::Command::new("pgrep")
        .args(["-a", "-f", needle])
        .output()
        .context("run pgrep")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}
