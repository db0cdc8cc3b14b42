//! `spec.unseal.type: kmip` against a REAL KMIP server: PyKMIP's server (PyPI `PyKMIP`,
//! installed by `hack/fetch-pykmip.sh` into the user cache) on loopback with test certificates
//! (mutual TLS), an AES-256 key created and activated through KMIP by this test, and a real
//! `bao server` run from the operator's rendered `10-server.hcl` (the KMIP seal exactly as
//! rendered; only container paths, listen addresses and the retry_join blocks are remapped).
//!
//! Proven per version: the server initializes with the KMIP seal (recovery keys, no unseal
//! keys) and is unsealed by it; restarted, it unseals by itself through the KMIP server; with
//! the KMIP server down, a restarted server never unseals: it exits while configuring the seal
//! (`Error configuring seal "kmip": failed to dial kmip connection endpoint`; in a pod, a
//! container restart); once the KMIP server is back, the server started again unseals by itself.
//!
//! The KMIP address is a loopback address here, which admission refuses for real clusters
//! (`spec.unseal.kmip.address`); the renderer does not validate, so the test can use it.

use anyhow::{Context, Result, ensure};
use openbao_api::OpenBaoClusterSpec;
use openbao_render::{API_PORT, CLUSTER_PORT, Cluster, config, paths};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::openbao::{BaoServer, BaoServerSpec, NodeAddr, TestTls, poll_until};
use testkit::pki::TestCa;
use testkit::process::ManagedProcess;

const NAMESPACE: &str = "kmip-test";
const LABEL: &str = "kmip-bao";
/// The name the KMIP server's certificate carries (verified through `tlsServerName`).
const KMIP_SERVER_NAME: &str = "kmip.hsm.test";
const STARTUP: Duration = Duration::from_secs(90);

/// One KMIP server + OpenBao at a time on two shared cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn kmip_seal_unseals_through_a_real_kmip_server_2_6_2() -> Result<()> {
    kmip_unseal("2.6.2").await
}

#[tokio::test]
async fn kmip_seal_unseals_through_a_real_kmip_server_2_7_2() -> Result<()> {
    kmip_unseal("2.7.2").await
}

/// The venv python with PyKMIP (installed on first use; cached).
fn pykmip_python() -> Result<PathBuf> {
    let out = testkit::cache::run_hack("fetch-pykmip.sh", &[])?;
    let path = out
        .lines()
        .find_map(|l| l.strip_prefix("PYKMIP_PYTHON "))
        .context("fetch-pykmip.sh printed no PYKMIP_PYTHON")?;
    Ok(PathBuf::from(path.trim()))
}

fn free_loopback_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// PyKMIP's server with mutual TLS on `127.0.0.1:<port>`; its SQLite store keeps the key
/// across restarts. Killed (process group) on drop.
struct KmipServer {
    python: PathBuf,
    dir: PathBuf,
    port: u16,
    process: Option<ManagedProcess>,
}

impl KmipServer {
    fn new(python: PathBuf, dir: &Path, ca: &TestCa) -> Result<Self> {
        std::fs::create_dir_all(dir.join("policies"))?;
        let server = ca.leaf("kmip", None, &[KMIP_SERVER_NAME, "127.0.0.1"]);
        std::fs::write(dir.join("ca.crt"), &ca.pem.cert)?;
        std::fs::write(dir.join("server.crt"), &server.cert)?;
        std::fs::write(dir.join("server.key"), &server.key)?;
        let port = free_loopback_port()?;
        let d = dir.display();
        std::fs::write(
            dir.join("server.conf"),
            format!(
                "[server]\nhostname=127.0.0.1\nport={port}\ncertificate_path={d}/server.crt\nkey_path={d}/server.key\n\
                 ca_path={d}/ca.crt\nauth_suite=TLS1.2\npolicy_path={d}/policies\nenable_tls_client_auth=True\n\
                 logging_level=INFO\ndatabase_path={d}/pykmip.db\n"
            ),
        )?;
        Ok(Self {
            python,
            dir: dir.to_path_buf(),
            port,
            process: None,
        })
    }

    async fn start(&mut self) -> Result<()> {
        let script = format!(
            "from kmip.services.server import server\n\
             s = server.KmipServer(config_path='{d}/server.conf', log_path='{d}/server.log')\n\
             with s:\n    s.serve()\n",
            d = self.dir.display()
        );
        let args = vec!["-W".to_string(), "ignore".to_string(), "-c".to_string(), script];
        self.process = Some(ManagedProcess::start(
            "pykmip",
            &self.python,
            &args,
            &[],
            &self.dir.join("pykmip.out"),
        )?);
        let port = self.port;
        poll_until("PyKMIP listening", Duration::from_secs(60), || async move {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ()))
        })
        .await
        .with_context(|| self.process.as_ref().map(|p| p.log_tail(30)).unwrap_or_default())
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }

    /// Creates and activates an AES-256 encrypt/decrypt key through KMIP; returns its id.
    fn create_key(&self, client_dir: &Path) -> Result<String> {
        // The same files the seal reads (the PyKMIP server accepts any client its CA signed).
        let c = client_dir.display();
        let script = format!(
            "from kmip.pie.client import ProxyKmipClient\nfrom kmip.core import enums\n\
             c = ProxyKmipClient(hostname='127.0.0.1', port={port}, cert='{c}/{cert}', key='{c}/{key}', \
             ca='{c}/{ca}', config_file='/dev/null')\n\
             with c:\n\
             \x20   uid = c.create(enums.CryptographicAlgorithm.AES, 256, cryptographic_usage_mask=\
             [enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT])\n\
             \x20   c.activate(uid)\n\
             \x20   print('KEY', uid)\n",
            port = self.port,
            cert = paths::KMIP_CLIENT_CERT_FILE,
            key = paths::KMIP_CLIENT_KEY_FILE,
            ca = paths::KMIP_CA_FILE,
        );
        let out = std::process::Command::new(&self.python)
            .args(["-W", "ignore", "-c", &script])
            .output()
            .context("run the PyKMIP client")?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "PyKMIP client: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .find_map(|l| l.strip_prefix("KEY "))
            .map(|k| k.trim().to_string())
            .context("no key id")
    }
}

impl Drop for KmipServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn cluster_spec(version: &str, port: u16, key_id: &str) -> Result<OpenBaoClusterSpec> {
    Ok(serde_json::from_value(json!({
        "version": version, "profile": "Development", "replicas": 1, "storage": {"size": "1Gi"},
        "unseal": {"type": "kmip", "kmip": {
            "address": format!("127.0.0.1:{port}"),
            "keyId": key_id,
            "clientCertSecretRef": {"name": "kmip-client", "key": "tls.crt"},
            "clientKeySecretRef": {"name": "kmip-client", "key": "tls.key"},
            "caSecretRef": {"name": "kmip-ca", "key": "ca.crt"},
            "tlsServerName": KMIP_SERVER_NAME,
            "timeoutSeconds": 5,
        }},
    }))?)
}

/// The rendered server config with container paths and addresses remapped to this process
/// world; the seal stanza is kept byte for byte except the mounted-file directory.
fn runnable(hcl: &str, dir: &Path, addr: &NodeAddr) -> String {
    let own = format!("{}.sealed.{NAMESPACE}.svc", paths::POD_NAME_PLACEHOLDER);
    let mut out = String::new();
    let mut in_join = false;
    for line in hcl.lines() {
        // A single server: no raft peers to join.
        if line == "  retry_join {" {
            in_join = true;
        }
        if !in_join {
            out.push_str(line);
            out.push('\n');
        }
        if in_join && line == "  }" {
            in_join = false;
        }
    }
    out.replace(paths::TLS_DIR, &dir.join("tls").display().to_string())
        .replace(paths::KMIP_DIR, &dir.join("kmip-files").display().to_string())
        .replace(paths::DATA_DIR, &dir.join("data").display().to_string())
        .replace(&format!("0.0.0.0:{API_PORT}"), &addr.api().to_string())
        .replace(&format!("0.0.0.0:{CLUSTER_PORT}"), &addr.cluster().to_string())
        .replace(
            &format!("{own}:{API_PORT}"),
            &format!("{}:{}", testkit::openbao::node_host(NAMESPACE, LABEL), addr.api_port),
        )
        .replace(&format!("{own}:{CLUSTER_PORT}"), &addr.cluster().to_string())
        .replace(paths::POD_NAME_PLACEHOLDER, LABEL)
}

async fn kmip_unseal(version: &str) -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let bao = testkit::cache::bao_binary(version)?;
    let python = pykmip_python()?;
    let dir = tempfile::tempdir()?;
    let root = dir.path();

    // The KMIP server and the client certificate the cluster's Secret would hold.
    let ca = TestCa::new("kmip-test-ca");
    let mut kmip = KmipServer::new(python, &root.join("pykmip"), &ca)?;
    kmip.start().await?;
    let files = root.join("kmip-files");
    std::fs::create_dir_all(&files)?;
    let client = ca.leaf("bao", None, &[]);
    std::fs::write(files.join(paths::KMIP_CLIENT_CERT_FILE), &client.cert)?;
    std::fs::write(files.join(paths::KMIP_CLIENT_KEY_FILE), &client.key)?;
    std::fs::write(files.join(paths::KMIP_CA_FILE), &ca.pem.cert)?;
    let key_id = kmip.create_key(&files)?;

    // OpenBao from the rendered configuration.
    let spec = cluster_spec(version, kmip.port, &key_id)?;
    let hcl = config::server_hcl(&Cluster {
        name: "sealed",
        namespace: NAMESPACE,
        uid: "u",
        spec: &spec,
    });
    ensure!(hcl.contains("seal \"kmip\" {"), "{hcl}");
    let tls = TestTls::generate(&root.join("tls"), NAMESPACE)?;
    std::fs::copy(&tls.cert_file, root.join("tls/tls.crt"))?;
    std::fs::copy(&tls.key_file, root.join("tls/tls.key"))?;
    std::fs::create_dir_all(root.join("data"))?;
    let addr = NodeAddr::allocate()?;
    let config_dir = root.join("config");
    std::fs::create_dir_all(&config_dir)?;
    std::fs::write(config_dir.join(config::SERVER_FILE), runnable(&hcl, root, &addr))?;
    let mut server = BaoServer::start(BaoServerSpec::new(
        LABEL,
        &bao,
        &config_dir,
        tls.client_config_for(LABEL, &addr),
    ))?;
    server
        .wait_answering(STARTUP)
        .await
        .with_context(|| server.log_tail(40))?;

    // 1. Initialize: the KMIP seal wraps the root key, recovery keys only.
    let init = server
        .client()
        .write("sys/init", &json!({"recovery_shares": 1, "recovery_threshold": 1}))
        .await?
        .context("init answered nothing")?;
    ensure!(
        init["keys"].as_array().is_none_or(|k| k.is_empty())
            && init["recovery_keys"].as_array().is_some_and(|k| k.len() == 1),
        "init: {}",
        init.get("keys")
            .map(|_| "unseal keys returned")
            .unwrap_or("no recovery keys")
    );
    server
        .wait_unsealed(STARTUP)
        .await
        .with_context(|| server.log_tail(40))?;

    // 2. Restarted, it unseals by itself through the KMIP server.
    server.restart().await?;
    server
        .wait_unsealed(STARTUP)
        .await
        .with_context(|| server.log_tail(40))?;

    // 3. KMIP server down: a restarted server never unseals. OpenBao dials the KMIP server
    // while configuring the seal, before it listens, and gives up: `bao server` exits (in a
    // pod, a container restart), saying why.
    server.stop().await;
    kmip.stop();
    server.restart().await?;
    poll_until("bao server exits without its KMIP server", STARTUP, || {
        let running = server.is_running();
        async move { Ok((!running).then_some(())) }
    })
    .await
    .with_context(|| server.log_tail(40))?;
    let log = server.log_tail(20);
    ensure!(
        log.contains("Error configuring seal \"kmip\": failed to dial kmip connection endpoint"),
        "{log}"
    );

    // 4. KMIP server back: started again (the kubelet's restart), it unseals by itself.
    kmip.start().await?;
    server.restart().await?;
    server
        .wait_unsealed(STARTUP)
        .await
        .with_context(|| server.log_tail(40))?;
    server.stop().await;
    Ok(())
}
