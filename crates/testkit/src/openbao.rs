//! Real `bao server` processes for tests.
//!
//! A test writes a config *directory* (OpenBao loads its `*.hcl` files in alphabetical order)
//! and starts a [`BaoServer`] on it. Every node gets its own loopback address from
//! [`NodeAddr::allocate`], so many nodes (and many test binaries) can use the same ports.
//! [`TestTls`], [`TestNodeConfig`] and [`write_static_seal_key`] produce a simple node config
//! (TLS listener from a test CA, raft storage, optional static seal and `retry_join`) for
//! client tests; product configs come from `openbao-render` and are only remapped by tests.
//! [`TestJwtSigner`] signs RS256 JWTs for JWT-auth logins.

use crate::pki::TestCa;
use crate::process::ManagedProcess;
use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openbao_client::{AutopilotState, BaoClient, ClientConfig, Health, HealthState};
use std::fmt::Write as _;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// API and cluster ports every node uses; nodes differ by IP.
pub const API_PORT: u16 = 8200;
pub const CLUSTER_PORT: u16 = 8201;

/// Where one node listens: `ip:api_port` (API) and `ip:cluster_port` (raft/cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddr {
    pub ip: Ipv4Addr,
    pub api_port: u16,
    pub cluster_port: u16,
}

impl NodeAddr {
    /// A loopback address in 127.0.X.2.. whose API and cluster ports are free right now, held by
    /// this process until it exits. X comes from the process id, so parallel test binaries rarely
    /// probe the same addresses. A free port is not enough: a test that stops a server and starts
    /// it again (a transit server "down" for a while) leaves its address unbound in between, and
    /// another binary probing then would take it. So each address is also claimed by an exclusive
    /// lock on a file named after it, which the kernel releases when this process ends, however
    /// it ends. Linux routes all of 127.0.0.0/8 to `lo`.
    pub fn allocate() -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let base = std::process::id() % 250;
        for _ in 0..250 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let third = 1 + (base + n / 250) % 250;
            let ip = Ipv4Addr::new(127, 0, third as u8, 2 + (n % 250) as u8);
            let addr = Self {
                ip,
                api_port: API_PORT,
                cluster_port: CLUSTER_PORT,
            };
            if !claim_for_this_process(ip)? {
                continue;
            }
            let free = TcpListener::bind(addr.api()).is_ok() && TcpListener::bind(addr.cluster()).is_ok();
            if free {
                return Ok(addr);
            }
        }
        bail!("no free loopback address for an OpenBao node (is 127.0.0.0/8 on lo?)")
    }

    pub fn api(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.api_port)
    }

    pub fn cluster(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.cluster_port)
    }

    /// `https://<ip>:<api_port>`, as used in `api_addr` and `leader_api_addr`.
    pub fn api_url(&self) -> String {
        format!("https://{}", self.api())
    }

    pub fn cluster_url(&self) -> String {
        format!("https://{}", self.cluster())
    }
}

/// Takes the lock naming `ip` in the shared claims directory and keeps it (the open file) until
/// the process exits; `false` when another live process holds it.
fn claim_for_this_process(ip: Ipv4Addr) -> Result<bool> {
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("openbao-testkit-loopback-claims");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(ip.to_string());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(file);
            Ok(true)
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// Pod-style DNS name of node `index`, e.g. `openbao-0.openbao-internal.obtest.svc`; covered by
/// the [`TestTls`] server certificate.
pub fn pod_host(namespace: &str, index: usize) -> String {
    node_host(namespace, &format!("openbao-{index}"))
}

/// DNS name of a node called `label` (one DNS label, e.g. a raft node id such as
/// `bao-v2-7-2-0`): `<label>.openbao-internal.<ns>.svc`, covered by the [`TestTls`] wildcard.
pub fn node_host(namespace: &str, label: &str) -> String {
    format!("{label}.openbao-internal.{namespace}.svc")
}

/// A test CA and one server certificate (DNS SANs only, like the product's: `openbao.<ns>.svc`
/// and `*.openbao-internal.<ns>.svc`), written to `ca.crt`, `server.crt`, `server.key`.
pub struct TestTls {
    pub ca: TestCa,
    pub namespace: String,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestTls {
    pub fn generate(dir: &Path, namespace: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let ca = TestCa::new("openbao-test-ca");
        let service = format!("openbao.{namespace}.svc");
        let wildcard = format!("*.openbao-internal.{namespace}.svc");
        let leaf = ca.leaf("openbao", None, &[&service, &wildcard]);
        let tls = Self {
            namespace: namespace.to_string(),
            ca_file: dir.join("ca.crt"),
            cert_file: dir.join("server.crt"),
            key_file: dir.join("server.key"),
            ca,
        };
        write_file(&tls.ca_file, tls.ca.pem.cert.as_bytes())?;
        write_file(&tls.cert_file, leaf.cert.as_bytes())?;
        write_file(&tls.key_file, leaf.key.as_bytes())?;
        Ok(tls)
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca.pem.cert
    }

    /// A client for node `index` at `addr` that verifies the pod hostname against the test CA.
    pub fn client_config(&self, index: usize, addr: &NodeAddr) -> ClientConfig {
        self.client_config_for(&format!("openbao-{index}"), addr)
    }

    /// A client for the node called `label` (see [`node_host`]) at `addr`.
    pub fn client_config_for(&self, label: &str, addr: &NodeAddr) -> ClientConfig {
        let host = node_host(&self.namespace, label);
        ClientConfig::new(format!("https://{host}:{}", addr.api_port))
            .with_ca_pem(self.ca_pem().as_bytes().to_vec())
            .with_resolve_to(IpAddr::V4(addr.ip))
            .with_timeout(Duration::from_secs(10))
    }
}

/// Writes 32 random bytes, the key file format of `seal "static"` (`current_key = "file://…"`).
pub fn write_static_seal_key(path: &Path) -> Result<PathBuf> {
    let mut key = [0u8; 32];
    let mut urandom = std::fs::File::open("/dev/urandom").context("open /dev/urandom")?;
    std::io::Read::read_exact(&mut urandom, &mut key).context("read /dev/urandom")?;
    write_file(path, &key)?;
    Ok(path.to_path_buf())
}

/// Creates `dir` and writes `files` (name, content) into it; returns `dir`.
pub fn write_config_dir(dir: &Path, files: &[(&str, &str)]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for (name, content) in files {
        write_file(&dir.join(name), content.as_bytes())?;
    }
    Ok(dir.to_path_buf())
}

fn write_file(path: &Path, content: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    std::fs::write(path, content).with_context(|| format!("write {}", path.display()))
}

/// A `retry_join` block: the peer's API URL, the name its certificate is verified against.
#[derive(Clone, Debug)]
pub struct RetryJoin {
    pub leader_api_addr: String,
    pub leader_tls_servername: String,
    pub leader_ca_cert_file: PathBuf,
}

/// A simple test node config: TLS listener, raft storage, optional static seal and retry_join.
/// Self-init `initialize` blocks go into a separate file of the same config dir.
#[derive(Clone, Debug)]
pub struct TestNodeConfig {
    pub node_id: String,
    pub addr: NodeAddr,
    pub data_dir: PathBuf,
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    /// `seal "static"` with this key file; `None` leaves the default Shamir seal.
    pub static_seal_key_file: Option<PathBuf>,
    pub retry_join: Vec<RetryJoin>,
    pub retry_join_as_non_voter: bool,
    /// `performance_multiplier = 1` and 1 s/2 s autopilot intervals: a 3-voter cluster in
    /// ~12 s instead of ~30 s.
    pub fast_raft: bool,
    pub log_level: String,
}

impl TestNodeConfig {
    pub fn new(node_id: &str, addr: NodeAddr, data_dir: &Path, tls: &TestTls) -> Self {
        Self {
            node_id: node_id.to_string(),
            addr,
            data_dir: data_dir.to_path_buf(),
            tls_cert_file: tls.cert_file.clone(),
            tls_key_file: tls.key_file.clone(),
            static_seal_key_file: None,
            retry_join: Vec::new(),
            retry_join_as_non_voter: false,
            fast_raft: true,
            log_level: "info".to_string(),
        }
    }

    /// Adds a `retry_join` to `peer` (node `index` of the test's [`TestTls`] namespace).
    pub fn join(self, tls: &TestTls, index: usize, peer: &NodeAddr) -> Self {
        self.join_node(tls, &format!("openbao-{index}"), peer)
    }

    /// Adds a `retry_join` to the node called `label` (see [`node_host`]) at `peer`.
    pub fn join_node(mut self, tls: &TestTls, label: &str, peer: &NodeAddr) -> Self {
        self.retry_join.push(RetryJoin {
            leader_api_addr: peer.api_url(),
            leader_tls_servername: node_host(&tls.namespace, label),
            leader_ca_cert_file: tls.ca_file.clone(),
        });
        self
    }

    pub fn static_seal(mut self, key_file: &Path) -> Self {
        self.static_seal_key_file = Some(key_file.to_path_buf());
        self
    }

    /// Creates the data dir (OpenBao 2.6.2 does not create it) and writes `00-node.hcl` plus
    /// `extra_files` (e.g. `initialize` blocks) into `config_dir`; returns `config_dir`.
    pub fn write_to(&self, config_dir: &Path, extra_files: &[(&str, &str)]) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.data_dir).with_context(|| format!("create {}", self.data_dir.display()))?;
        let node_hcl = self.render();
        let mut files = vec![("00-node.hcl", node_hcl.as_str())];
        files.extend_from_slice(extra_files);
        write_config_dir(config_dir, &files)
    }

    pub fn render(&self) -> String {
        let mut hcl = String::new();
        let a = &self.addr;
        let _ = writeln!(hcl, "ui            = false");
        let _ = writeln!(hcl, "disable_mlock = true");
        let _ = writeln!(hcl, "log_level     = {}", quote(&self.log_level));
        let _ = writeln!(hcl, "api_addr      = {}", quote(&a.api_url()));
        let _ = writeln!(hcl, "cluster_addr  = {}", quote(&a.cluster_url()));
        let _ = writeln!(hcl, "\nlistener \"tcp\" {{");
        let _ = writeln!(hcl, "  address         = {}", quote(&a.api().to_string()));
        let _ = writeln!(hcl, "  cluster_address = {}", quote(&a.cluster().to_string()));
        let _ = writeln!(hcl, "  tls_cert_file   = {}", quote_path(&self.tls_cert_file));
        let _ = writeln!(hcl, "  tls_key_file    = {}", quote_path(&self.tls_key_file));
        let _ = writeln!(hcl, "}}\n\nstorage \"raft\" {{");
        let _ = writeln!(hcl, "  path    = {}", quote_path(&self.data_dir));
        let _ = writeln!(hcl, "  node_id = {}", quote(&self.node_id));
        if self.fast_raft {
            let _ = writeln!(hcl, "  performance_multiplier       = 1");
            // Must be larger than the update interval, or the server refuses to start.
            let _ = writeln!(hcl, "  autopilot_reconcile_interval = \"2s\"");
            let _ = writeln!(hcl, "  autopilot_update_interval    = \"1s\"");
        }
        if self.retry_join_as_non_voter {
            let _ = writeln!(hcl, "  retry_join_as_non_voter = true");
        }
        for join in &self.retry_join {
            let _ = writeln!(hcl, "  retry_join {{");
            let _ = writeln!(hcl, "    leader_api_addr       = {}", quote(&join.leader_api_addr));
            let _ = writeln!(
                hcl,
                "    leader_tls_servername = {}",
                quote(&join.leader_tls_servername)
            );
            let _ = writeln!(
                hcl,
                "    leader_ca_cert_file   = {}",
                quote_path(&join.leader_ca_cert_file)
            );
            let _ = writeln!(hcl, "  }}");
        }
        let _ = writeln!(hcl, "}}");
        if let Some(key) = &self.static_seal_key_file {
            let _ = writeln!(hcl, "\nseal \"static\" {{");
            let _ = writeln!(hcl, "  current_key_id = \"k1\"");
            let _ = writeln!(
                hcl,
                "  current_key    = {}",
                quote(&format!("file://{}", key.display()))
            );
            let _ = writeln!(hcl, "}}");
        }
        hcl
    }
}

/// An HCL string literal (JSON escaping is valid HCL).
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn quote_path(p: &Path) -> String {
    quote(&p.display().to_string())
}

/// How to start one node and how to reach it.
#[derive(Clone, Debug)]
pub struct BaoServerSpec {
    pub name: String,
    pub binary: PathBuf,
    /// Passed as `-config=<dir>/`; every `*.hcl` in it is loaded.
    pub config_dir: PathBuf,
    pub log_file: PathBuf,
    pub envs: Vec<(String, String)>,
    /// How tests (and [`BaoServer::wait_until`]) reach the node.
    pub client: ClientConfig,
    /// Runs `program args…` instead of `<binary> server -config=<config_dir>/`, for wrappers
    /// that build their own config and start `bao server` themselves (a product entrypoint).
    pub launcher: Option<(PathBuf, Vec<String>)>,
}

impl BaoServerSpec {
    /// The log goes next to the config dir as `<name>.log`.
    pub fn new(name: &str, binary: &Path, config_dir: &Path, client: ClientConfig) -> Self {
        let log_dir = config_dir.parent().unwrap_or(config_dir);
        Self {
            name: name.to_string(),
            binary: binary.to_path_buf(),
            config_dir: config_dir.to_path_buf(),
            log_file: log_dir.join(format!("{name}.log")),
            envs: Vec::new(),
            client,
            launcher: None,
        }
    }

    /// Start the node through `program args…` (see [`BaoServerSpec::launcher`]).
    pub fn launcher(mut self, program: &Path, args: &[&str]) -> Self {
        self.launcher = Some((program.to_path_buf(), args.iter().map(|a| a.to_string()).collect()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }
}

/// A running (or stopped) `bao server`. Killed on drop.
pub struct BaoServer {
    spec: BaoServerSpec,
    process: Option<ManagedProcess>,
    client: BaoClient,
    /// Short timeouts for polling.
    probe: BaoClient,
}

impl BaoServer {
    pub fn start(spec: BaoServerSpec) -> Result<Self> {
        let (client, probe) = clients(&spec.client)?;
        let mut server = Self {
            spec,
            process: None,
            client,
            probe,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let envs: Vec<(&str, String)> = self.spec.envs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        if let Some((program, args)) = &self.spec.launcher {
            let process = ManagedProcess::start(&self.spec.name, program, args, &envs, &self.spec.log_file)?;
            self.process = Some(process);
            return Ok(());
        }
        let dir = &self.spec.config_dir;
        let has_hcl = std::fs::read_dir(dir)
            .with_context(|| format!("config dir {}", dir.display()))?
            .filter_map(|e| e.ok())
            .any(|e| e.path().extension().is_some_and(|x| x == "hcl"));
        if !has_hcl {
            bail!("config dir {} has no *.hcl file", dir.display());
        }
        // The trailing slash makes OpenBao treat the path as a directory of config files.
        let args = vec!["server".to_string(), format!("-config={}/", dir.display())];
        let process = ManagedProcess::start(&self.spec.name, &self.spec.binary, &args, &envs, &self.spec.log_file)?;
        self.process = Some(process);
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &BaoServerSpec {
        &self.spec
    }

    /// Changes take effect at the next [`restart`](Self::restart), e.g. a new `binary` for an
    /// in-place upgrade on the same data dir.
    pub fn spec_mut(&mut self) -> &mut BaoServerSpec {
        &mut self.spec
    }

    /// An unauthenticated client for this node; use `with_token` for authenticated calls.
    pub fn client(&self) -> &BaoClient {
        &self.client
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(|p| p.pid())
    }

    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.is_running())
    }

    pub fn log_path(&self) -> &Path {
        &self.spec.log_file
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.spec.log_file).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// One health probe with a short timeout.
    pub async fn health(&self) -> openbao_client::Result<Health> {
        self.probe.health().await
    }

    /// Polls `sys/health` every 100 ms until `pred` holds. Connection errors count as "not
    /// yet" (OpenBao does not listen during self-init). Fails at once if the process exits,
    /// and on timeout, with the last answer and the log tail.
    pub async fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Health) -> bool,
    ) -> Result<Health> {
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        loop {
            if !self.is_running() {
                bail!(
                    "{}: process exited while waiting for {what} (last: {last})\n--- log tail ---\n{}",
                    self.spec.name,
                    self.log_tail(40)
                );
            }
            match self.health().await {
                Ok(h) if pred(&h) => return Ok(h),
                Ok(h) => last = format!("{h:?}"),
                Err(e) => last = e.to_string(),
            }
            if started.elapsed() > timeout {
                bail!(
                    "{}: not {what} after {timeout:?} (last: {last})\n--- log tail ---\n{}",
                    self.spec.name,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_active(&mut self, timeout: Duration) -> Result<Health> {
        self.wait_until("active", timeout, |h| h.state == HealthState::Active)
            .await
    }

    /// Active or standby.
    pub async fn wait_unsealed(&mut self, timeout: Duration) -> Result<Health> {
        self.wait_until("unsealed", timeout, |h| h.state.is_unsealed()).await
    }

    /// Until the HTTP API answers at all (any health state).
    pub async fn wait_answering(&mut self, timeout: Duration) -> Result<Health> {
        self.wait_until("answering", timeout, |_| true).await
    }

    /// Polls the log file until it contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let path = self.spec.log_file.clone();
        let what = format!("log line containing {needle:?}");
        poll_until(&what, timeout, || {
            let path = path.clone();
            async move {
                Ok(std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .contains(needle)
                    .then_some(()))
            }
        })
        .await
    }

    /// Sends SIGHUP (OpenBao reloads listener certificates and the log level).
    pub fn sighup(&self) -> Result<()> {
        self.process.as_ref().context("not running")?.signal(libc::SIGHUP)
    }

    /// Graceful stop: SIGTERM, then SIGKILL if still running after 15 s.
    pub async fn stop(&mut self) {
        if let Some(process) = self.process.as_mut() {
            let _ = process.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while process.is_running() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.kill();
    }

    /// Crash stop: SIGKILL to the process group.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Graceful stop, then start again with the same config dir (and so the same data dir).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        let marker = format!("\n===== testkit: restarting {} =====\n", self.spec.name);
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.spec.log_file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, marker.as_bytes()));
        (self.client, self.probe) = clients(&self.spec.client)?;
        self.spawn()
    }
}

fn clients(config: &ClientConfig) -> Result<(BaoClient, BaoClient)> {
    let client = BaoClient::new(config.clone()).context("client config")?;
    let probe = BaoClient::new(config.clone().with_timeout(Duration::from_secs(2))).context("client config")?;
    Ok((client, probe))
}

/// Calls `probe` every 200 ms until it returns `Some`; errors count as "not yet" and the last
/// one is reported on timeout.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        let last = match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "condition not met".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if started.elapsed() > timeout {
            bail!("{what}: not reached after {timeout:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until autopilot (asked through `client`, which needs a token) reports at least
/// `voters` voters and a healthy cluster.
pub async fn wait_for_voters(client: &BaoClient, voters: usize, timeout: Duration) -> Result<AutopilotState> {
    poll_until(&format!("{voters} healthy autopilot voters"), timeout, || async {
        let state = client.autopilot_state().await?;
        Ok((state.healthy && state.voters.len() >= voters).then_some(state))
    })
    .await
}

/// Signs RS256 JWTs with a fresh RSA-2048 key, for `jwt_validation_pubkeys` logins.
pub struct TestJwtSigner {
    key: rcgen::KeyPair,
}

impl TestJwtSigner {
    pub fn new() -> Result<Self> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).context("generate RSA key")?;
        Ok(Self { key })
    }

    /// The SPKI PEM public key, as `jwt_validation_pubkeys` wants it.
    pub fn public_key_pem(&self) -> String {
        self.key.public_key_pem()
    }

    /// A compact JWT with header `{"alg":"RS256","typ":"JWT"}` over `claims`.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String> {
        use rcgen::SigningKey;
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?);
        let signing_input = format!("{header}.{payload}");
        let signature = self.key.sign(signing_input.as_bytes()).context("sign JWT")?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// Seconds since the Unix epoch, for `iat`/`nbf`/`exp` claims.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_address_is_never_claimed_again_while_its_holder_lives() {
        // 127.0.0.x is outside what `allocate` hands out, so this cannot steal a test's address.
        let ip = Ipv4Addr::new(127, 0, 0, 77);
        assert!(claim_for_this_process(ip).unwrap(), "a fresh address is claimed");
        assert!(!claim_for_this_process(ip).unwrap(), "the holder's claim stands");
    }
}
