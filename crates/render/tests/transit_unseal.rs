//! `spec.unseal.type: transit` on real OpenBao: a second `bao` server (its transit engine, key,
//! policy and token made by this test) holds the seal key of a 3-node cluster that runs the
//! operator's rendered configuration through the rendered entrypoint, as
//! `openbao_bootstrap.rs` does for the static seal.
//!
//! Proven per version: the cluster self-initializes and unseals with no seal key anywhere; all
//! three servers restarted come back unsealed by themselves; while the transit server is down,
//! running servers stay unsealed and a restarted one does not unseal (OpenBao checks the transit
//! server before it even listens, and gives up: `bao server` exits, which in a pod is a container
//! restart); once the transit server is back, the server started again (the kubelet's restart)
//! unseals by itself. The transit token is in no rendered file and no rendered object: the pods
//! get it from the Secret through their environment.
//!
//! The transit address is a loopback address here, which admission refuses for real clusters
//! (`spec.unseal.transit.address`); the renderer does not validate, so the test can use it.

use anyhow::{Context, Result, ensure};
use openbao_api::OpenBaoClusterSpec;
use openbao_client::{BaoClient, ClientConfig, HealthState, Token};
use openbao_render::pki::{self, KeyedCert};
use openbao_render::{API_PORT, CLUSTER_PORT, Cluster, JwtTrust, OperatorIdentity, config, objects, paths, selfinit};
use serde_json::json;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testkit::openbao::{
    BaoServer, BaoServerSpec, NodeAddr, TestJwtSigner, poll_until, wait_for_voters, write_config_dir,
};
use testkit::transit::{SealLogin, TransitServer};

const CLUSTER: &str = "sealed";
const NAMESPACE: &str = "transit-test";
const REPLICAS: usize = 3;
const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo-password-for-the-transit-test";
const KEY_NAME: &str = "openbao-unseal";
const STARTUP: Duration = Duration::from_secs(90);

/// One cluster at a time: four `bao` processes on two shared cores already stretch raft timeouts.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn transit_seal_unseals_a_rendered_cluster_2_6_2() -> Result<()> {
    transit_unseal("2.6.2").await
}

#[tokio::test]
async fn transit_seal_unseals_a_rendered_cluster_2_7_2() -> Result<()> {
    transit_unseal("2.7.2").await
}

#[tokio::test]
async fn transit_login_unseals_with_the_servers_own_token_2_6_2() -> Result<()> {
    transit_login("2.6.2").await
}

#[tokio::test]
async fn transit_login_unseals_with_the_servers_own_token_2_7_2() -> Result<()> {
    transit_login("2.7.2").await
}

fn pod_name(ordinal: usize) -> String {
    format!("{CLUSTER}-{ordinal}")
}

/// A cluster of `replicas` unsealed by `transit`, authenticating with `auth` (the
/// `tokenSecretRef` or `login` field).
fn cluster_spec(
    version: &str,
    transit: &TransitServer,
    replicas: usize,
    auth: serde_json::Value,
) -> Result<OpenBaoClusterSpec> {
    let mut seal = json!({
        "address": transit.address(),
        "keyName": KEY_NAME,
        "tlsServerName": transit.server_name(),
        "caSecretRef": {"name": "transit-ca", "key": "bundle.pem"},
    });
    seal.as_object_mut()
        .context("seal")?
        .extend(auth.as_object().context("auth")?.clone());
    Ok(serde_json::from_value(json!({
        "version": version,
        "profile": "Development",
        "replicas": replicas,
        "storage": {"size": "1Gi"},
        "unseal": {"type": "transit", "transit": seal},
        "selfInit": {
            "demoUserpass": {"username": DEMO_USER, "passwordSecretRef": {"name": "demo-password"}},
            "requests": [
                {"name": "kv", "operation": "update", "path": "sys/mounts/secret", "data": {"type": "kv", "options": {"version": "2"}}}
            ]
        }
    }))?)
}

/// The rendered `10-server.hcl` of pod `ordinal` on loopback: container paths become the test's
/// directories and cluster DNS names the pods' loopback addresses (TLS still verifies the DNS
/// names). The seal stanza is left exactly as rendered, except for its CA file's directory.
fn remap_for_loopback(
    server_hcl: &str,
    cluster: &Cluster,
    ordinal: usize,
    addrs: &[NodeAddr],
    dirs: &Dirs,
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
        ensure!(hcl.contains(&from), "rendered 10-server.hcl has no {from:?}:\n{hcl}");
        hcl = hcl.replace(&from, &to);
        Ok(())
    };
    replace(paths::TLS_DIR.to_string(), dirs.tls.display().to_string())?;
    replace(paths::TRANSIT_CA_DIR.to_string(), dirs.transit_ca.display().to_string())?;
    replace(
        format!("\"{}\"", paths::DATA_DIR),
        format!("\"{}\"", dirs.data(ordinal).display()),
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
    for gone in ["/etc/bao/", "\"/bao/", "0.0.0.0", ".svc:"] {
        ensure!(!hcl.contains(gone), "{gone:?} left after remapping:\n{hcl}");
    }
    Ok(hcl)
}

/// Where the test keeps what a pod would have mounted.
struct Dirs {
    root: PathBuf,
    tls: PathBuf,
    transit_ca: PathBuf,
}

impl Dirs {
    fn node(&self, ordinal: usize) -> PathBuf {
        self.root.join(pod_name(ordinal))
    }
    fn data(&self, ordinal: usize) -> PathBuf {
        self.node(ordinal).join("data")
    }
}

fn client_config(cluster: &Cluster, addr: &NodeAddr, ordinal: usize, ca_pem: &str) -> ClientConfig {
    ClientConfig::new(format!("https://{}:{API_PORT}", cluster.pod_host(ordinal as u32)))
        .with_ca_pem(ca_pem.as_bytes().to_vec())
        .with_resolve_to(IpAddr::V4(addr.ip))
        .with_timeout(Duration::from_secs(10))
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files_under(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

async fn transit_unseal(version: &str) -> Result<()> {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let bao = testkit::cache::bao_binary(version)?;
    let tmp = tempfile::Builder::new().prefix("openbao-transit-").tempdir()?;
    let mut transit = TransitServer::start(&bao, &tmp.path().join("transit"), KEY_NAME, None, STARTUP).await?;

    let spec = cluster_spec(
        version,
        &transit,
        REPLICAS,
        json!({"tokenSecretRef": {"name": "transit-token", "key": "token"}}),
    )?;
    let cluster = Cluster {
        name: CLUSTER,
        namespace: NAMESPACE,
        uid: "transit-test-uid",
        spec: &spec,
    };
    let root = tmp.path().join("cluster");
    let (dirs, ca_pem, init_dir) = prepare(&cluster, &root, &transit)?;

    // What the operator would apply: no seal key Secret, no seal key volume, the token only by
    // reference.
    let server_hcl = config::server_hcl(&cluster);
    ensure!(
        server_hcl.contains("seal \"transit\" {") && !server_hcl.contains("seal \"static\""),
        "{server_hcl}"
    );
    let statefulset = serde_json::to_string(&objects::statefulset(&cluster))?;
    let config_map = serde_json::to_string(&objects::config_map(&cluster))?;
    for (what, text) in [("StatefulSet", &statefulset), ("ConfigMap", &config_map)] {
        ensure!(
            !text.contains(&transit.token),
            "the transit token is in the rendered {what}"
        );
        ensure!(
            !text.contains(&openbao_api::names::unseal_key_secret(CLUSTER)) && !text.contains(paths::UNSEAL_DIR),
            "the rendered {what} refers to a seal key: {text}"
        );
    }

    let addrs = (0..REPLICAS)
        .map(|_| NodeAddr::allocate())
        .collect::<Result<Vec<_>>>()?;
    let mut nodes = Vec::new();
    for ordinal in 0..REPLICAS {
        let node = server_node(&bao, &cluster, ordinal, &addrs, &dirs, &ca_pem, &init_dir)?
            // What the kubelet sets from the tokenSecretRef.
            .env(paths::TRANSIT_TOKEN_ENV, &transit.token);
        nodes.push(node);
    }

    // 1. Three servers at once: one founds the cluster, all unseal through transit.
    let t0 = Instant::now();
    let mut nodes = nodes.into_iter().map(BaoServer::start).collect::<Result<Vec<_>>>()?;
    let active = nodes[0].wait_active(STARTUP).await?;
    for node in &mut nodes[1..] {
        node.wait_unsealed(STARTUP).await?;
    }
    let cluster_id = active.cluster_id.clone().context("no cluster_id")?;
    let demo = nodes[0]
        .client()
        .login_userpass(selfinit::USERPASS_MOUNT, DEMO_USER, DEMO_PASSWORD)
        .await
        .context("demo login")?;
    let admin = nodes[0].client().with_token(demo.token.clone());
    wait_for_voters(&admin, REPLICAS, STARTUP).await?;
    eprintln!(
        "TIMING {version}: 3 voters, unsealed by transit, {} ms",
        t0.elapsed().as_millis()
    );
    for node in &nodes {
        let seal = node.client().seal_status().await?;
        ensure!(seal.seal_type == "transit" && !seal.sealed, "{}: {seal:?}", node.name());
    }
    admin
        .write(
            "secret/data/marker",
            &json!({"data": {"written": "before the restarts"}}),
        )
        .await?;

    // 2. Every server restarted: all unseal by themselves, with no seal key anywhere.
    for node in &mut nodes {
        node.stop().await;
    }
    let t_restart = Instant::now();
    for node in &mut nodes {
        node.restart().await?;
    }
    for node in &mut nodes {
        let health = node.wait_unsealed(STARTUP).await?;
        ensure!(health.cluster_id.as_deref() == Some(cluster_id.as_str()), "{health:?}");
    }
    eprintln!(
        "TIMING {version}: all 3 restarted and unsealed in {} ms",
        t_restart.elapsed().as_millis()
    );
    let admin = leader_client(&nodes, &demo.token).await?;
    let marker = admin.read("secret/data/marker").await?.context("marker lost")?;
    ensure!(marker["data"]["data"]["written"] == "before the restarts", "{marker}");

    // 3. The transit server down: running servers stay unsealed, a restarted one does not unseal.
    transit.server.stop().await;
    nodes[2].stop().await;
    nodes[2].restart().await?;
    let t_down = Instant::now();
    let mut answers = Vec::new();
    while nodes[2].is_running() && t_down.elapsed() < STARTUP {
        if let Ok(h) = nodes[2].health().await {
            answers.push(h.state);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        !nodes[2].is_running(),
        "{} still runs {STARTUP:?} after starting without its transit server:\n{}",
        nodes[2].name(),
        nodes[2].log_tail(20)
    );
    ensure!(
        answers.iter().all(|s| !s.is_unsealed()),
        "{} unsealed without its transit server: {answers:?}",
        nodes[2].name()
    );
    let log = std::fs::read_to_string(nodes[2].log_path())?;
    let (_, last_start) = log.rsplit_once("testkit: restarting").context("restart marker")?;
    ensure!(
        last_start.contains("Error configuring seal \"transit\""),
        "{} exited without naming the transit seal:\n{}",
        nodes[2].name(),
        nodes[2].log_tail(20)
    );
    eprintln!(
        "TIMING {version}: without the transit server, the restarted server gave up after {} ms",
        t_down.elapsed().as_millis()
    );
    for node in &nodes[..2] {
        ensure!(
            node.health().await?.state.is_unsealed(),
            "{} sealed itself",
            node.name()
        );
    }

    // 4. The transit server back: the server, started again as the kubelet restarts a
    // container that exited, unseals by itself.
    transit.server.restart().await?;
    transit.server.wait_active(STARTUP).await?;
    nodes[2].restart().await?;
    let health = nodes[2].wait_unsealed(STARTUP).await?;
    ensure!(health.cluster_id.as_deref() == Some(cluster_id.as_str()), "{health:?}");
    let again = nodes[2].client().with_token(demo.token.clone());
    let marker = again.read("secret/data/marker").await?.context("marker lost")?;
    ensure!(marker["data"]["data"]["written"] == "before the restarts", "{marker}");

    // 5. No seal key and no token in any file the servers were given or rendered, nor in
    // their logs (the raft data is encrypted and left out).
    for file in files_under(&root)? {
        if (0..REPLICAS).any(|i| file.starts_with(dirs.data(i))) {
            continue;
        }
        let text = std::fs::read(&file)?;
        ensure!(
            !String::from_utf8_lossy(&text).contains(&transit.token),
            "the transit token is in {}",
            file.display()
        );
    }
    for ordinal in 0..REPLICAS {
        let rendered = std::fs::read_to_string(dirs.node(ordinal).join("rendered").join(config::SERVER_FILE))?;
        ensure!(
            rendered.contains(&format!("token = \"env://{}\"", paths::TRANSIT_TOKEN_ENV)),
            "{rendered}"
        );
    }
    ensure!(
        !files_under(&root)?
            .iter()
            .any(|f| f.to_string_lossy().contains("unseal")),
        "a seal key file exists"
    );

    for node in &mut nodes {
        node.stop().await;
    }
    transit.server.stop().await;
    Ok(())
}

/// `spec.unseal.transit.login`: no token anywhere. The transit server trusts the key that signs
/// the service-account tokens (a test signer stands in for the apiserver's) for one role bound
/// to the cluster's transit audience and its servers' subject. The rendered entrypoint logs in
/// with the token file the kubelet would project and the variables the rendered StatefulSet
/// sets, and the server unseals; a token for another audience is refused, and the server exits
/// with a line the operator's status reads, naming the login and OpenBao's reason but not the
/// token; with a good token again it unseals.
async fn transit_login(version: &str) -> Result<()> {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let bao = testkit::cache::bao_binary(version)?;
    let tmp = tempfile::Builder::new().prefix("openbao-transit-login-").tempdir()?;
    let apiserver = TestJwtSigner::new()?;
    let audience = openbao_api::names::transit_login_audience(NAMESPACE, CLUSTER);
    let subject = format!(
        "system:serviceaccount:{NAMESPACE}:{}",
        openbao_api::names::service_account(CLUSTER)
    );
    let login = SealLogin {
        mount: "k8s/jwt".into(),
        role: "sealer".into(),
        public_keys_pem: vec![apiserver.public_key_pem()],
        audience: audience.clone(),
        subject: subject.clone(),
    };
    let mut transit = TransitServer::start(&bao, &tmp.path().join("transit"), KEY_NAME, Some(&login), STARTUP).await?;
    let spec = cluster_spec(
        version,
        &transit,
        1,
        json!({"login": {"mountPath": "k8s/jwt", "role": "sealer"}}),
    )?;
    let cluster = Cluster {
        name: CLUSTER,
        namespace: NAMESPACE,
        uid: "transit-login-uid",
        spec: &spec,
    };
    let root = tmp.path().join("cluster");
    let (dirs, ca_pem, init_dir) = prepare(&cluster, &root, &transit)?;

    // The rendered pod: the login's variables, the projected token for the transit audience, and
    // no token variable.
    let sts = objects::statefulset(&cluster);
    let pod = sts.spec.and_then(|s| s.template.spec).context("pod template")?;
    let container = &pod.containers[0];
    let env: Vec<(String, String)> = container
        .env
        .iter()
        .flatten()
        .filter(|e| e.name.starts_with(paths::TRANSIT_ENV_PREFIX))
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    ensure!(
        env.iter().all(|(name, _)| name != paths::TRANSIT_TOKEN_ENV),
        "a token variable with login: {env:?}"
    );
    let projected = pod
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.projected.as_ref().filter(|_| v.name == "transit-login"))
        .context("no transit-login volume")?;
    let token_source = projected
        .sources
        .iter()
        .flatten()
        .find_map(|s| s.service_account_token.as_ref());
    ensure!(
        token_source.is_some_and(|t| t.audience.as_deref() == Some(audience.as_str())),
        "{projected:?}"
    );

    let jwt_file = root.join("transit-login-token");
    let service_account_token = |aud: &str| {
        let now = testkit::openbao::unix_now();
        apiserver.sign(&json!({
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": subject, "aud": [aud], "iat": now, "nbf": now, "exp": now + 600,
        }))
    };
    std::fs::write(&jwt_file, service_account_token(&audience)?)?;
    let addrs = vec![NodeAddr::allocate()?];
    let mut node = server_node(&bao, &cluster, 0, &addrs, &dirs, &ca_pem, &init_dir)?
        .env("BAO_TRANSIT_JWT", &jwt_file.display().to_string());
    for (name, value) in &env {
        // The CA file is where the caSecretRef volume is in a pod; here it is the test's copy.
        let value = value.replace(paths::TRANSIT_CA_DIR, &dirs.transit_ca.display().to_string());
        node = node.env(name, &value);
    }

    // 1. It logs in, self-initializes and is unsealed by transit.
    let t0 = Instant::now();
    let mut server = BaoServer::start(node)?;
    server.wait_active(STARTUP).await?;
    let seal = server.client().seal_status().await?;
    ensure!(seal.seal_type == "transit" && !seal.sealed, "{seal:?}");
    let log = std::fs::read_to_string(server.log_path())?;
    ensure!(
        log.contains("entrypoint: logged in to the transit server at auth/k8s/jwt/login"),
        "{log}"
    );
    eprintln!(
        "TIMING {version}: logged in and unsealed in {} ms",
        t0.elapsed().as_millis()
    );

    // 2. A token for another audience: refused, the server gives up at start and says why.
    server.stop().await;
    let wrong = service_account_token(&openbao_api::names::jwt_audience(NAMESPACE, CLUSTER))?;
    std::fs::write(&jwt_file, &wrong)?;
    server.restart().await?;
    poll_until("the server to give up without a login", STARTUP, || {
        let running = server.is_running();
        async move { Ok((!running).then_some(())) }
    })
    .await?;
    let log = std::fs::read_to_string(server.log_path())?;
    let (_, last_start) = log.rsplit_once("testkit: restarting").context("restart marker")?;
    let line = last_start
        .lines()
        .find(|l| l.contains("Error configuring seal \"transit\""))
        .with_context(|| format!("no seal error in:\n{last_start}"))?;
    ensure!(
        line.starts_with("Error configuring seal \"transit\": login at auth/k8s/jwt/login as role sealer failed: ")
            && line.contains("aud"),
        "{line}"
    );
    ensure!(
        !log.contains(&wrong) && !log.contains(&transit.token),
        "a token is in the log"
    );
    eprintln!("{version}: refused as expected: {line}");

    // 3. The right token again: it unseals by itself.
    std::fs::write(&jwt_file, service_account_token(&audience)?)?;
    server.restart().await?;
    server.wait_active(STARTUP).await?;

    server.stop().await;
    transit.server.stop().await;
    Ok(())
}

/// What every server here is given besides its seal's credentials: the cluster's TLS, the
/// transit CA (the caSecretRef volume) and the self-init file. Returns the directories, the
/// cluster CA (PEM) and the self-init directory.
fn prepare(cluster: &Cluster, root: &Path, transit: &TransitServer) -> Result<(Dirs, String, PathBuf)> {
    let dirs = Dirs {
        tls: root.join("tls"),
        transit_ca: root.join("transit-ca"),
        root: root.to_path_buf(),
    };
    let ca = pki::issue_ca(CLUSTER, jiff::Timestamp::now())?;
    let lifetime = pki::server_lifetime(pki::parse_duration(&cluster.spec.tls.rotation_period)?);
    let server: KeyedCert = pki::issue_server(&ca, &pki::server_sans(cluster), jiff::Timestamp::now(), lifetime)?;
    write_config_dir(
        &dirs.tls,
        &[
            ("ca.crt", &ca.cert_pem),
            ("tls.crt", &server.cert_pem),
            ("tls.key", &server.key_pem),
        ],
    )?;
    // The caSecretRef volume: the Secret's key `bundle.pem` mounted under the fixed file name.
    write_config_dir(&dirs.transit_ca, &[(paths::TRANSIT_CA_FILE, transit.tls.ca_pem())])?;
    let signer = TestJwtSigner::new()?;
    let trust = JwtTrust {
        issuer: "https://kubernetes.default.svc.cluster.local".into(),
        public_keys_pem: vec![signer.public_key_pem()],
    };
    let operator = OperatorIdentity {
        namespace: "openbao-operator-system".into(),
        service_account: "openbao-operator".into(),
    };
    let init_dir = write_config_dir(
        &root.join("init"),
        &[(config::INIT_FILE, &selfinit::init_hcl(cluster, &operator, &trust))],
    )?;
    Ok((dirs, ca.cert_pem, init_dir))
}

/// Pod `ordinal` as a process: the rendered config remapped to loopback, run by the rendered
/// entrypoint with what the kubelet would set, except the seal's credentials.
fn server_node(
    bao: &Path,
    cluster: &Cluster,
    ordinal: usize,
    addrs: &[NodeAddr],
    dirs: &Dirs,
    ca_pem: &str,
    init_dir: &Path,
) -> Result<BaoServerSpec> {
    let bin_dir = bao.parent().context("bao binary has no parent dir")?;
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    std::fs::create_dir_all(dirs.data(ordinal))?;
    let hcl = remap_for_loopback(&config::server_hcl(cluster), cluster, ordinal, addrs, dirs)?;
    let templates = write_config_dir(
        &dirs.node(ordinal).join("templates"),
        &[
            (config::SERVER_FILE, &hcl),
            (config::ENTRYPOINT_FILE, &config::entrypoint_sh()),
        ],
    )?;
    let script = templates.join(config::ENTRYPOINT_FILE);
    Ok(BaoServerSpec::new(
        &pod_name(ordinal),
        bao,
        &templates,
        client_config(cluster, &addrs[ordinal], ordinal, ca_pem),
    )
    .launcher(Path::new("/bin/sh"), &[script.to_str().context("entrypoint path")?])
    .env("POD_NAME", &pod_name(ordinal))
    .env("BAO_TEMPLATE_DIR", &templates.display().to_string())
    .env("BAO_INIT_DIR", &init_dir.display().to_string())
    .env(
        "BAO_RENDERED_DIR",
        &dirs.node(ordinal).join("rendered").display().to_string(),
    )
    .env("BAO_DATA_DIR", &dirs.data(ordinal).display().to_string())
    .env("BAO_TLS_CERT", &dirs.tls.join("tls.crt").display().to_string())
    // What the kubelet sets from the demo password Secret.
    .env(paths::DEMO_PASSWORD_ENV, DEMO_PASSWORD)
    .env("PATH", &path))
}

/// A client with `token` on the active server.
async fn leader_client(nodes: &[BaoServer], token: &Token) -> Result<BaoClient> {
    poll_until("an active server", STARTUP, || async {
        for node in nodes {
            if node.health().await.is_ok_and(|h| h.state == HealthState::Active) {
                return Ok(Some(node.client().with_token(token.clone())));
            }
        }
        Ok(None)
    })
    .await
}
