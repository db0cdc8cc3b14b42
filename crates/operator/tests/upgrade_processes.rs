//! The upgrade flows and their driver against real OpenBao 2.6.2 and 2.7.2 processes.
//!
//! [`ProcessPlatform`] implements the driver's `Platform` with plain `bao server` processes on
//! loopback addresses instead of pods: it starts and stops servers, swaps a server's binary in
//! place, moves "traffic" (which servers the public endpoint targets) and stores raft snapshots
//! in files. Everything OpenBao-side is the real thing and is done by the same driver code the
//! operator runs: health, raft configuration, autopilot, promote, demote, step-down, remove-peer.
//!
//! The cluster bootstraps from the operator's own rendered self-init requests (static seal,
//! JWT roles, demo login). The driver logs in as the `openbao-operator-upgrade` JWT role, so
//! every step also proves that `selfinit::UPGRADE_POLICY` is enough for it. A client writes and
//! reads KV through the current traffic target every 100 ms during each upgrade (each operation
//! retried for at most 2 s, following a standby's redirect as `bao` does); afterwards every
//! acknowledged write must still be readable.
//!
//! The operator "crashes" by dropping the driver and its platform adapter (with its cached
//! token): only the status, kept as JSON between steps, survives. The OpenBao processes are the
//! world and live on.

mod apiserver_common;

use anyhow::{Context, Result, bail, ensure};
use apiserver_common::operator;
use futures::StreamExt;
use openbao_api::{OpenBaoClusterSpec, OpenBaoClusterStatus, UpgradePhase};
use openbao_client::{BaoClient, BaoError, ClientConfig, HealthState, Token};
use openbao_operator::flows::{
    self, Action, Deployment, Driver, Platform, PlatformError, PlatformNode, Revision, Snapshot,
};
use openbao_render::{Cluster, JwtTrust, paths, selfinit};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testkit::openbao::{
    BaoServer, BaoServerSpec, NodeAddr, TestJwtSigner, TestNodeConfig, TestTls, poll_until, unix_now,
    write_static_seal_key,
};

const CLUSTER: &str = "bao";
const NAMESPACE: &str = "obtest";
const FROM: &str = "2.6.2";
const TO: &str = "2.7.2";
const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo-password-for-the-upgrade-test";
const JWT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const UPGRADE_ROLE: &str = "openbao-operator-upgrade";
/// The whole upgrade, including every wait, must fit in this.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(240);
/// Each client operation is retried for at most this long.
const CLIENT_RETRY: Duration = Duration::from_secs(2);
/// One attempt of an operation waits at most this long, so that a request one server leaves
/// unanswered (seen in CI: a write that hung for the whole 2 s on one server while the others
/// answered) is tried again on the next server within [`CLIENT_RETRY`], as a client with a
/// request timeout would.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(1);

/// One cluster at a time: up to six `bao` processes on two shared cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// The world: processes, their files, and where traffic goes. It outlives every driver.

struct NodeMeta {
    revision: Revision,
    ordinal: u32,
    version: String,
    addr: NodeAddr,
    dir: PathBuf,
}

/// One server to start: `join` are the peers it retry-joins (as a non-voter if `non_voter`),
/// `init` adds the self-init requests.
struct Launch<'a> {
    id: &'a str,
    revision: &'a Revision,
    ordinal: u32,
    version: &'a str,
    join: &'a [(String, NodeAddr)],
    non_voter: bool,
    init: bool,
}

struct World {
    dir: tempfile::TempDir,
    tls: TestTls,
    seal_key: PathBuf,
    signer: TestJwtSigner,
    init_hcl: String,
    binaries: BTreeMap<String, PathBuf>,
    meta: std::sync::Mutex<BTreeMap<String, NodeMeta>>,
    traffic: std::sync::Mutex<Revision>,
    procs: tokio::sync::Mutex<BTreeMap<String, BaoServer>>,
    /// Signalled where an arranged crash stops an action dead.
    hung: tokio::sync::Notify,
}

/// The spec the cluster was bootstrapped from (the lane's shape: Development, demo login, KV).
fn base_spec() -> Result<OpenBaoClusterSpec> {
    Ok(serde_json::from_value(json!({
        "version": FROM,
        "profile": "Development",
        "replicas": 3,
        "storage": {"size": "1Gi"},
        "selfInit": {
            "demoUserpass": {"username": DEMO_USER, "passwordSecretRef": {"name": "demo-password"}},
            "requests": [
                {"name": "kv", "operation": "update", "path": "sys/mounts/secret", "data": {"type": "kv", "options": {"version": "2"}}}
            ]
        }
    }))?)
}

impl World {
    fn new() -> Result<Arc<Self>> {
        let dir = tempfile::Builder::new().prefix("upgrade-processes-").tempdir()?;
        let tls = TestTls::generate(&dir.path().join("tls"), NAMESPACE)?;
        let seal_key = write_static_seal_key(&dir.path().join("tls/unseal.key"))?;
        let signer = TestJwtSigner::new()?;
        let spec = base_spec()?;
        let cluster = Cluster {
            name: CLUSTER,
            namespace: NAMESPACE,
            uid: "upgrade-test-uid",
            spec: &spec,
        };
        let operator = operator();
        let trust = JwtTrust {
            issuer: JWT_ISSUER.into(),
            public_keys_pem: vec![signer.public_key_pem()],
        };
        let init_hcl = selfinit::init_hcl(&cluster, &operator, &trust);
        let mut binaries = BTreeMap::new();
        for v in [FROM, TO] {
            binaries.insert(v.to_string(), testkit::cache::bao_binary(v)?);
        }
        Ok(Arc::new(Self {
            dir,
            tls,
            seal_key,
            signer,
            init_hcl,
            binaries,
            meta: Default::default(),
            traffic: std::sync::Mutex::new(None),
            procs: Default::default(),
            hung: tokio::sync::Notify::new(),
        }))
    }

    fn client_config(&self, id: &str) -> Result<ClientConfig> {
        let meta = self.meta.lock().unwrap();
        let node = meta.get(id).with_context(|| format!("no node {id}"))?;
        Ok(self.tls.client_config_for(id, &node.addr))
    }

    /// (id, address) of every node of `revision`.
    fn nodes_of(&self, revision: &Revision) -> Vec<(String, NodeAddr)> {
        let meta = self.meta.lock().unwrap();
        meta.iter()
            .filter(|(_, m)| &m.revision == revision)
            .map(|(id, m)| (id.clone(), m.addr))
            .collect()
    }

    fn traffic_nodes(&self) -> Vec<String> {
        let traffic = self.traffic.lock().unwrap().clone();
        self.nodes_of(&traffic).into_iter().map(|(id, _)| id).collect()
    }

    fn upgrade_jwt(&self) -> Result<String> {
        let now = unix_now();
        let subject = format!(
            "system:serviceaccount:{NAMESPACE}:{}",
            openbao_api::names::job_service_account(CLUSTER, "upgrade")
        );
        self.signer.sign(&json!({
            "iss": JWT_ISSUER, "sub": subject, "aud": [openbao_api::names::jwt_audience(NAMESPACE, CLUSTER)],
            "iat": now, "nbf": now - 5, "exp": now + 600,
        }))
    }

    /// Writes the config of a node and starts it (keeping its address and storage if it existed).
    async fn start_node(&self, launch: Launch<'_>) -> Result<()> {
        let Launch {
            id,
            revision,
            ordinal,
            version,
            join,
            non_voter,
            init,
        } = launch;
        let binary = self
            .binaries
            .get(version)
            .with_context(|| format!("no binary for {version}"))?;
        let (addr, dir) = {
            let meta = self.meta.lock().unwrap();
            match meta.get(id) {
                Some(m) => (m.addr, m.dir.clone()),
                None => (NodeAddr::allocate()?, self.dir.path().join("nodes").join(id)),
            }
        };
        let mut config = TestNodeConfig::new(id, addr, &dir.join("data"), &self.tls).static_seal(&self.seal_key);
        for (peer, peer_addr) in join.iter().filter(|(peer, _)| peer != id) {
            config = config.join_node(&self.tls, peer, peer_addr);
        }
        config.retry_join_as_non_voter = non_voter;
        let init_files: Vec<(&str, &str)> = if init {
            vec![(openbao_render::config::INIT_FILE, self.init_hcl.as_str())]
        } else {
            Vec::new()
        };
        let config_dir = config.write_to(&dir.join("config"), &init_files)?;
        let spec = BaoServerSpec::new(id, binary, &config_dir, self.tls.client_config_for(id, &addr))
            .env(paths::DEMO_PASSWORD_ENV, DEMO_PASSWORD);
        let mut procs = self.procs.lock().await;
        if let Some(mut old) = procs.remove(id) {
            old.stop().await;
        }
        procs.insert(id.to_string(), BaoServer::start(spec)?);
        drop(procs);
        self.meta.lock().unwrap().insert(
            id.to_string(),
            NodeMeta {
                revision: revision.clone(),
                ordinal,
                version: version.to_string(),
                addr,
                dir,
            },
        );
        Ok(())
    }

    /// Three original servers on `version`: self-init on the first, the others join; waits for
    /// three healthy voters and takes the self-init file away again (as the operator does).
    async fn bootstrap(&self, version: &str) -> Result<()> {
        let t0 = Instant::now();
        let addrs: Vec<(String, NodeAddr)> = (0..3)
            .map(|i| Ok((openbao_api::names::pod(CLUSTER, None, i), NodeAddr::allocate()?)))
            .collect::<Result<_>>()?;
        // Reserve the addresses first so every node can name its peers.
        for (i, (id, addr)) in addrs.iter().enumerate() {
            self.meta.lock().unwrap().insert(
                id.clone(),
                NodeMeta {
                    revision: None,
                    ordinal: i as u32,
                    version: version.into(),
                    addr: *addr,
                    dir: self.dir.path().join("nodes").join(id),
                },
            );
        }
        for (i, (id, _)) in addrs.iter().enumerate() {
            self.start_node(Launch {
                id,
                revision: &None,
                ordinal: i as u32,
                version,
                join: &addrs,
                non_voter: false,
                init: i == 0,
            })
            .await?;
        }
        *self.traffic.lock().unwrap() = None;
        let admin = self.admin_client(&addrs[0].0).await?;
        poll_until("3 healthy voters", Duration::from_secs(90), || async {
            let state = admin.autopilot_state().await?;
            Ok((state.healthy && state.voters.len() == 3).then_some(()))
        })
        .await?;
        let init_file = self
            .dir
            .path()
            .join("nodes")
            .join(&addrs[0].0)
            .join("config")
            .join("zz-init.hcl");
        std::fs::remove_file(&init_file).with_context(|| format!("remove {}", init_file.display()))?;
        eprintln!("TIMING bootstrap of 3 x {version}: {} ms", t0.elapsed().as_millis());
        Ok(())
    }

    /// The demo user's client on node `id` (waits until the node serves).
    async fn admin_client(&self, id: &str) -> Result<BaoClient> {
        let client = BaoClient::new(self.client_config(id)?)?;
        let login = poll_until("demo login", Duration::from_secs(90), || async {
            Ok(Some(client.login_userpass("userpass", DEMO_USER, DEMO_PASSWORD).await?))
        })
        .await?;
        Ok(client.with_token(login.token))
    }

    async fn deploy(&self, d: &Deployment, hang_after: Option<usize>) -> Result<()> {
        let revision = Some(d.revision.clone());
        let join = self.nodes_of(&d.join);
        let mut started = 0;
        for ordinal in 0..d.replicas {
            let id = openbao_api::names::pod(CLUSTER, revision.as_deref(), ordinal);
            let running = self.procs.lock().await.get_mut(&id).is_some_and(|s| s.is_running());
            if running {
                continue;
            }
            self.start_node(Launch {
                id: &id,
                revision: &revision,
                ordinal,
                version: &d.version,
                join: &join,
                non_voter: true,
                init: false,
            })
            .await?;
            started += 1;
            if hang_after == Some(started) {
                // The operator dies here: part of the work is done, status knows nothing of it.
                self.hang().await;
            }
            // Staggered like a StatefulSet with parallel pod management would not be: keeps
            // three joins from competing for the two cores at the same instant.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Stops the servers of `revision` and deletes their storage (logs are kept for debugging).
    /// They are killed, not stopped gracefully: their storage is deleted next and they left
    /// raft already (a graceful stop of a removed peer takes seconds for nothing).
    async fn remove(&self, revision: &Revision, hang_after: Option<usize>) -> Result<()> {
        let mut stopped = 0;
        for (id, _) in self.nodes_of(revision) {
            let server = self.procs.lock().await.remove(&id);
            if let Some(mut server) = server {
                server.kill();
                stopped += 1;
            }
            let dir = self.meta.lock().unwrap().get(&id).map(|m| m.dir.clone());
            if let Some(dir) = dir {
                for sub in ["data", "config"] {
                    let path = dir.join(sub);
                    if path.exists() {
                        std::fs::remove_dir_all(&path).with_context(|| format!("delete {}", path.display()))?;
                    }
                }
            }
            self.meta.lock().unwrap().remove(&id);
            if hang_after == Some(stopped) {
                self.hang().await;
            }
        }
        Ok(())
    }

    /// Restarts `id` on `version` with the same storage (a pod recreated with a new image).
    async fn replace(&self, id: &str, version: &str) -> Result<()> {
        let (revision, ordinal) = {
            let meta = self.meta.lock().unwrap();
            let m = meta.get(id).with_context(|| format!("no node {id}"))?;
            (m.revision.clone(), m.ordinal)
        };
        let peers = self.nodes_of(&revision);
        let already = self.meta.lock().unwrap().get(id).is_some_and(|m| m.version == version);
        let running = self.procs.lock().await.get_mut(id).is_some_and(|s| s.is_running());
        if already && running {
            return Ok(());
        }
        self.start_node(Launch {
            id,
            revision: &revision,
            ordinal,
            version,
            join: &peers,
            non_voter: false,
            init: false,
        })
        .await
    }

    async fn platform_nodes(&self) -> Vec<PlatformNode> {
        let mut procs = self.procs.lock().await;
        let meta = self.meta.lock().unwrap();
        meta.iter()
            .map(|(id, m)| PlatformNode {
                id: id.clone(),
                revision: m.revision.clone(),
                ordinal: m.ordinal,
                version: m.version.clone(),
                running: procs.get_mut(id).is_some_and(|s| s.is_running()),
            })
            .collect()
    }

    async fn hang(&self) {
        self.hung.notify_one();
        std::future::pending::<()>().await
    }

    fn log_tails(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("nodes")) else {
            return out;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().to_string();
            let log = entry.path().join(format!("{id}.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- {id} ---\n{}\n",
                lines[lines.len().saturating_sub(15)..].join("\n")
            ));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The platform adapter: what the operator holds in memory. Dropped on every simulated crash.

/// Where a [`ProcessPlatform`] stops dead, as an operator killed in the middle of an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HangIn {
    Nowhere,
    /// After starting the first of the green servers.
    Deploy,
    /// After stopping the first blue server.
    Remove,
}

struct ProcessPlatform {
    world: Arc<World>,
    token: tokio::sync::Mutex<Option<Token>>,
    hang_in: HangIn,
}

fn platform_err(context: &str) -> impl FnOnce(anyhow::Error) -> PlatformError + '_ {
    move |e| PlatformError::new(context, e)
}

impl ProcessPlatform {
    fn new(world: &Arc<World>, hang_in: HangIn) -> Self {
        Self {
            world: world.clone(),
            token: tokio::sync::Mutex::new(None),
            hang_in,
        }
    }

    /// A token of the `openbao-operator-upgrade` JWT role, logged in on a serving node.
    async fn token(&self) -> Option<Token> {
        let mut cached = self.token.lock().await;
        if cached.is_none() {
            let jwt = self.world.upgrade_jwt().ok()?;
            let mut candidates = self.world.traffic_nodes();
            candidates.extend(self.world.meta.lock().unwrap().keys().cloned());
            for id in candidates {
                let Ok(config) = self.world.client_config(&id) else {
                    continue;
                };
                let Ok(client) = BaoClient::new(config.with_timeout(Duration::from_secs(3))) else {
                    continue;
                };
                if let Ok(login) = client.login_jwt(selfinit::JWT_MOUNT, UPGRADE_ROLE, &jwt).await {
                    *cached = Some(login.token);
                    break;
                }
            }
        }
        cached.clone()
    }
}

impl Platform for ProcessPlatform {
    async fn nodes(&self) -> Result<Vec<PlatformNode>, PlatformError> {
        Ok(self.world.platform_nodes().await)
    }

    async fn client(&self, node_id: &str) -> Result<BaoClient, PlatformError> {
        let config = self
            .world
            .client_config(node_id)
            .map_err(platform_err("client config"))?;
        let client = BaoClient::new(config.with_timeout(Duration::from_secs(3)))
            .map_err(|e| PlatformError::new(format!("client for {node_id}"), e))?;
        Ok(match self.token().await {
            Some(token) => client.with_token(token),
            None => client,
        })
    }

    async fn traffic(&self) -> Result<Revision, PlatformError> {
        Ok(self.world.traffic.lock().unwrap().clone())
    }

    async fn switch_traffic(&self, to: &Revision) -> Result<(), PlatformError> {
        *self.world.traffic.lock().unwrap() = to.clone();
        Ok(())
    }

    async fn deploy_nodes(&self, deployment: &Deployment) -> Result<(), PlatformError> {
        let hang = (self.hang_in == HangIn::Deploy).then_some(1);
        self.world
            .deploy(deployment, hang)
            .await
            .map_err(platform_err("deploy"))
    }

    async fn remove_nodes(&self, revision: &Revision) -> Result<(), PlatformError> {
        let hang = (self.hang_in == HangIn::Remove).then_some(1);
        self.world.remove(revision, hang).await.map_err(platform_err("remove"))
    }

    async fn replace_node(&self, node_id: &str, version: &str) -> Result<(), PlatformError> {
        self.world
            .replace(node_id, version)
            .await
            .map_err(platform_err("replace"))
    }

    async fn take_snapshot(&self, _attempt: i32) -> Result<Snapshot, PlatformError> {
        let err = platform_err("snapshot");
        let mut leader = None;
        for id in self.world.traffic_nodes() {
            let client = self.client(&id).await?;
            if client.health().await.is_ok_and(|h| h.state == HealthState::Active) {
                leader = Some(client);
                break;
            }
        }
        let client = leader.ok_or_else(|| err(anyhow::anyhow!("no active server")))?;
        let path = self
            .world
            .dir
            .path()
            .join(format!("pre-upgrade-{}.snap", jiff::Timestamp::now().as_millisecond()));
        let mut stream = client.snapshot().await.map_err(|e| PlatformError::new("snapshot", e))?;
        let mut file = std::fs::File::create(&path).map_err(|e| PlatformError::new("snapshot file", e))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| PlatformError::new("snapshot stream", e))?;
            file.write_all(&chunk)
                .map_err(|e| PlatformError::new("snapshot file", e))?;
        }
        Ok(Snapshot::Stored(path.display().to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// The continuous client.

#[derive(Debug, Default)]
struct LoadReport {
    writes: u64,
    failed_writes: u64,
    reads: u64,
    failed_reads: u64,
    /// Reads that found nothing where an acknowledged write had been.
    lost: u64,
    /// Attempts that failed before a retry succeeded.
    failed_attempts: u64,
    /// The longest time from a failed attempt to the next success.
    longest_outage: Duration,
    /// The longest time one operation took, retries included.
    slowest_op: Duration,
    acknowledged: Vec<u64>,
    errors: Vec<String>,
}

/// What a read that found nothing reports.
const NOT_FOUND: &str = "404";

struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<LoadReport>,
}

/// Every operation is sent to the current traffic target (round robin over its servers;
/// standbys forward to the leader) and retried for at most [`CLIENT_RETRY`].
struct LoadClient {
    world: Arc<World>,
    token: Token,
    clients: HashMap<String, BaoClient>,
    next: usize,
    outage_since: Option<Instant>,
    report: LoadReport,
}

impl LoadClient {
    /// The next server of the traffic target.
    fn endpoint(&mut self) -> Option<BaoClient> {
        let nodes = self.world.traffic_nodes();
        if nodes.is_empty() {
            return None;
        }
        self.next = self.next.wrapping_add(1);
        let id = nodes[self.next % nodes.len()].clone();
        self.client_for(&id)
    }

    fn client_for(&mut self, id: &str) -> Option<BaoClient> {
        if !self.clients.contains_key(id) {
            let config = self.world.client_config(id).ok()?;
            let client = BaoClient::new(config.with_timeout(CLIENT_RETRY)).ok()?;
            self.clients
                .insert(id.to_string(), client.with_token(self.token.clone()));
        }
        self.clients.get(id).cloned()
    }

    /// The server a standby's redirect points to, when it is one of the world's.
    fn redirect_target(&mut self, location: &str) -> Option<BaoClient> {
        let id = {
            let meta = self.world.meta.lock().unwrap();
            meta.iter()
                .find(|(_, m)| location.starts_with(&format!("https://{}:{}/", m.addr.ip, m.addr.api_port)))
                .map(|(id, _)| id.clone())?
        };
        self.client_for(&id)
    }

    /// One request: `Some(value)` read or `None` on success of a write; `Ok(Err(NOT_FOUND))`
    /// when a read found nothing.
    async fn call(client: &BaoClient, path: &str, write: Option<u64>) -> Result<Result<Option<u64>, String>, BaoError> {
        Ok(match write {
            Some(n) => client.write(path, &json!({"data": {"n": n}})).await.map(|_| Ok(None))?,
            None => match client.read(path).await? {
                Some(v) => Ok(v["data"]["data"]["n"].as_u64()),
                None => Err(NOT_FOUND.to_string()),
            },
        })
    }

    /// One request to `client`; a standby's redirect to another server is followed once, as
    /// `bao` and OpenBao's Go API client do. A standby redirects instead of forwarding while it
    /// has no forwarding connection to the active server (for seconds after a leader change
    /// on a loaded machine: CI, 2026-12-04, three writes in a row redirected for 2 s each).
    async fn call_following_redirect(
        &mut self,
        client: BaoClient,
        path: &str,
        write: Option<u64>,
    ) -> Result<Option<u64>, String> {
        match Self::call(&client, path, write).await {
            Ok(answer) => answer,
            Err(e) => match e.redirect_location().and_then(|l| self.redirect_target(l)) {
                Some(active) => match Self::call(&active, path, write).await {
                    Ok(answer) => answer,
                    Err(again) => Err(format!("{e}; after following the redirect: {again}")),
                },
                None => Err(e.to_string()),
            },
        }
    }

    /// `Some(value)` read or `None` on success of a write; `Err` after retries ran out.
    async fn attempt(&mut self, write: Option<u64>, key: u64) -> Result<Option<u64>, String> {
        let path = format!("secret/data/load/k{key}");
        let started = Instant::now();
        let mut last;
        loop {
            // Each attempt may use what is left of the operation's budget, and at most
            // ATTEMPT_LIMIT of it.
            let budget = CLIENT_RETRY
                .saturating_sub(started.elapsed())
                .min(ATTEMPT_LIMIT)
                .max(Duration::from_millis(100));
            let result = match self.endpoint() {
                None => Err("no traffic target".to_string()),
                Some(client) => tokio::time::timeout(budget, self.call_following_redirect(client, &path, write))
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {budget:?}"))),
            };
            self.report.slowest_op = self.report.slowest_op.max(started.elapsed());
            match result {
                Ok(value) => {
                    if let Some(since) = self.outage_since.take() {
                        self.report.longest_outage = self.report.longest_outage.max(since.elapsed());
                    }
                    return Ok(value);
                }
                Err(e) => {
                    self.report.failed_attempts += 1;
                    self.outage_since.get_or_insert_with(Instant::now);
                    last = e;
                }
            }
            if started.elapsed() >= CLIENT_RETRY {
                return Err(format!("{path}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn run(mut self, stop: Arc<AtomicBool>) -> LoadReport {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            n += 1;
            self.report.writes += 1;
            match self.attempt(Some(n), n).await {
                Ok(_) => self.report.acknowledged.push(n),
                Err(e) => {
                    self.report.failed_writes += 1;
                    self.report.errors.push(format!("write: {e}"));
                }
            }
            // Read back one acknowledged key, cycling through all of them.
            let Some(&key) = self
                .report
                .acknowledged
                .get((n as usize * 7) % self.report.acknowledged.len().max(1))
            else {
                continue;
            };
            self.report.reads += 1;
            match self.attempt(None, key).await {
                Ok(Some(v)) if v == key => {}
                Ok(other) => {
                    self.report.failed_reads += 1;
                    self.report.errors.push(format!("read k{key}: got {other:?}"));
                }
                Err(e) => {
                    if e.ends_with(NOT_FOUND) {
                        self.report.lost += 1;
                    }
                    self.report.failed_reads += 1;
                    self.report.errors.push(format!("read: {e}"));
                }
            }
        }
        self.report
    }
}

impl Load {
    async fn start(world: &Arc<World>) -> Result<Self> {
        let nodes = world.traffic_nodes();
        let admin = world.admin_client(nodes.first().context("no traffic target")?).await?;
        let token = admin.token().context("admin token")?.clone();
        let client = LoadClient {
            world: world.clone(),
            token,
            clients: HashMap::new(),
            next: 0,
            outage_since: None,
            report: LoadReport::default(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(client.run(stop.clone()));
        Ok(Self { stop, task })
    }

    async fn finish(self) -> Result<LoadReport> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

// ---------------------------------------------------------------------------------------------
// Driving an upgrade, with or without crashes.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crashes {
    None,
    /// Restart the driver at every phase boundary, once between two steps of one phase, and
    /// kill it twice in the middle of an action.
    Everywhere,
}

struct Run {
    spec: OpenBaoClusterSpec,
    /// The only thing that survives a crash.
    status_json: String,
    log: Vec<String>,
    restarts: u32,
    phases: Vec<UpgradePhase>,
}

impl Run {
    fn new(spec: OpenBaoClusterSpec, status: &OpenBaoClusterStatus) -> Result<Self> {
        Ok(Self {
            spec,
            status_json: serde_json::to_string(status)?,
            log: Vec::new(),
            restarts: 0,
            phases: vec![status.upgrade.as_ref().map(|u| u.phase).unwrap_or_default()],
        })
    }

    fn status(&self) -> Result<OpenBaoClusterStatus> {
        Ok(serde_json::from_str(&self.status_json)?)
    }

    fn phase(&self) -> Result<UpgradePhase> {
        Ok(self.status()?.upgrade.map(|u| u.phase).unwrap_or_default())
    }
}

/// Steps until `done` holds for a report; returns the wall time.
async fn drive(
    world: &Arc<World>,
    run: &mut Run,
    crashes: Crashes,
    done: impl Fn(&flows::StepReport) -> bool,
) -> Result<Duration> {
    let started = Instant::now();
    let mut hang_in = HangIn::Nowhere;
    let mut driver = Driver::new(CLUSTER, ProcessPlatform::new(world, hang_in));
    let (mut hung_in_deploy, mut hung_in_remove, mut restarted_mid_phase) = (false, false, false);
    loop {
        ensure!(
            started.elapsed() < UPGRADE_TIMEOUT,
            "no end after {UPGRADE_TIMEOUT:?}; status: {}\nsteps:\n{}",
            run.status_json,
            run.log.join("\n")
        );
        let status = run.status()?;
        let before = run.phase()?;
        if crashes == Crashes::Everywhere {
            // Arrange a kill in the middle of the next DeployNodes / RemoveNodes, once each.
            let want = match before {
                UpgradePhase::DeployingGreen if !hung_in_deploy => HangIn::Deploy,
                UpgradePhase::Cleanup if !hung_in_remove => HangIn::Remove,
                _ => HangIn::Nowhere,
            };
            if want != hang_in {
                hang_in = want;
                driver = Driver::new(CLUSTER, ProcessPlatform::new(world, hang_in));
            }
        }
        let step = tokio::select! {
            report = driver.step(&run.spec, &status) => Some(report),
            _ = world.hung.notified() => None,
        };
        let report = match step {
            None => {
                // The step hung where the crash was arranged: the operator is gone mid-action.
                run.log.push(format!(
                    "{:>6} ms  KILLED in the middle of an action ({hang_in:?})",
                    started.elapsed().as_millis()
                ));
                match hang_in {
                    HangIn::Deploy => hung_in_deploy = true,
                    HangIn::Remove => hung_in_remove = true,
                    HangIn::Nowhere => bail!("a step hung without an arranged crash"),
                }
                hang_in = HangIn::Nowhere;
                driver = Driver::new(CLUSTER, ProcessPlatform::new(world, hang_in));
                run.restarts += 1;
                continue;
            }
            Some(Err(e)) => {
                run.log
                    .push(format!("{:>6} ms  observe failed: {e}", started.elapsed().as_millis()));
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            Some(Ok(report)) => report,
        };
        let message_before = status.upgrade.as_ref().and_then(|u| u.message.clone());
        run.status_json = serde_json::to_string(&report.status)?;
        let after = run.phase()?;
        let message = report.status.upgrade.as_ref().and_then(|u| u.message.clone());
        if report.action != Action::Wait || after != before || message != message_before {
            let message = message.unwrap_or_default();
            run.log.push(format!(
                "{:>6} ms  {before:?} -> {after:?}  {}{}  | {message}",
                started.elapsed().as_millis(),
                report.action.name(),
                report
                    .error
                    .as_ref()
                    .map(|e| format!(" FAILED: {e}"))
                    .unwrap_or_default()
            ));
        }
        if run.phases.last() != Some(&after) {
            run.phases.push(after);
        }
        if done(&report) {
            return Ok(started.elapsed());
        }
        if crashes == Crashes::Everywhere {
            let boundary = after != before;
            let mid_phase = !restarted_mid_phase && matches!(report.action, Action::Promote { .. });
            if boundary || mid_phase {
                restarted_mid_phase |= mid_phase;
                // The operator dies: driver, adapter and token go; only the status JSON stays.
                drop(driver);
                driver = Driver::new(CLUSTER, ProcessPlatform::new(world, hang_in));
                run.restarts += 1;
                run.log.push(format!(
                    "{:>6} ms  operator restarted ({})",
                    started.elapsed().as_millis(),
                    if boundary { "phase boundary" } else { "mid-phase" }
                ));
            }
        }
        let pause = report
            .requeue_after
            .unwrap_or(Duration::from_millis(300))
            .min(Duration::from_millis(300));
        tokio::time::sleep(pause).await;
    }
}

fn finished(report: &flows::StepReport) -> bool {
    report.action == Action::Nothing
        && report
            .status
            .upgrade
            .as_ref()
            .is_none_or(|u| u.phase == UpgradePhase::Idle)
}

fn upgrade_spec(strategy: &str, extra: serde_json::Value) -> Result<OpenBaoClusterSpec> {
    let mut spec = base_spec()?;
    spec.version = TO.into();
    let mut upgrade = json!({"strategy": strategy});
    if let (Some(u), Some(e)) = (upgrade.as_object_mut(), extra.as_object()) {
        u.extend(e.clone());
    }
    spec.upgrade = serde_json::from_value(upgrade)?;
    Ok(spec)
}

fn running_status(version: &str) -> OpenBaoClusterStatus {
    OpenBaoClusterStatus {
        current_version: Some(version.into()),
        initialized: true,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// The cluster after an upgrade: 3 voters, all on `version`, healthy; only the live servers
/// exist; every server that was removed is stopped and its storage is gone.
async fn check_cluster(
    world: &Arc<World>,
    live: &Revision,
    version: &str,
    removed: &[(String, NodeAddr)],
) -> Result<()> {
    let platform = ProcessPlatform::new(world, HangIn::Nowhere);
    let nodes = world.platform_nodes().await;
    ensure!(
        nodes.len() == 3
            && nodes
                .iter()
                .all(|n| &n.revision == live && n.running && n.version == version),
        "servers left: {nodes:?}"
    );
    let mut leader = None;
    for n in &nodes {
        let client = platform.client(&n.id).await?;
        if client.health().await?.state == HealthState::Active {
            leader = Some(client);
        }
    }
    let leader = leader.context("no active server after the upgrade")?;
    let state = poll_until(
        "3 healthy voters after the upgrade",
        Duration::from_secs(30),
        || async {
            let state = leader.autopilot_state().await?;
            Ok((state.healthy && state.voters.len() == 3 && state.servers.len() == 3).then_some(state))
        },
    )
    .await?;
    ensure!(
        state.servers.values().all(|s| s.version == version),
        "versions: {:?}",
        state.servers.values().map(|s| (&s.id, &s.version)).collect::<Vec<_>>()
    );
    let raft = leader.raft_configuration().await?;
    let peers: Vec<&str> = raft.servers.iter().map(|s| s.node_id.as_str()).collect();
    let expected: Vec<String> = (0..3)
        .map(|i| openbao_api::names::pod(CLUSTER, live.as_deref(), i))
        .collect();
    ensure!(
        peers.len() == 3 && expected.iter().all(|id| peers.contains(&id.as_str())),
        "raft peers {peers:?}, expected {expected:?}"
    );
    ensure!(raft.voters().count() == 3, "{raft:?}");
    for (id, addr) in removed {
        let client = BaoClient::new(
            world
                .tls
                .client_config_for(id, addr)
                .with_timeout(Duration::from_secs(2)),
        )?;
        match client.health().await {
            Err(e) if e.is_connect() => {}
            other => bail!("removed server {id} still answers: {other:?}"),
        }
        let dir = world.dir.path().join("nodes").join(id);
        ensure!(
            !dir.join("data").exists() && !dir.join("config").exists(),
            "storage of {id} left behind"
        );
    }
    Ok(())
}

/// No failed operation after retries, and every acknowledged write still readable.
async fn check_load(world: &Arc<World>, report: &LoadReport) -> Result<()> {
    ensure!(
        report.failed_writes == 0 && report.failed_reads == 0 && report.lost == 0,
        "client saw failures: {} writes, {} reads ({} lost): {:?}",
        report.failed_writes,
        report.failed_reads,
        report.lost,
        report.errors.iter().take(10).collect::<Vec<_>>()
    );
    ensure!(
        report.acknowledged.len() > 50,
        "too few writes: {}",
        report.acknowledged.len()
    );
    let nodes = world.traffic_nodes();
    let client = world.admin_client(nodes.first().context("no traffic target")?).await?;
    for n in &report.acknowledged {
        let value = client
            .read(&format!("secret/data/load/k{n}"))
            .await?
            .with_context(|| format!("acknowledged write k{n} is gone"))?;
        ensure!(value["data"]["data"]["n"] == json!(n), "k{n}: {value}");
    }
    Ok(())
}

fn print_summary(what: &str, wall: Duration, run: &Run, load: &LoadReport) {
    eprintln!("{}", run.log.join("\n"));
    eprintln!(
        "TIMING {what}: wall time {} ms; phases {:?}; operator restarts {}; client: {} writes, {} reads, \
         {} failed attempts retried, longest window of failed requests {} ms, slowest operation {} ms",
        wall.as_millis(),
        run.phases,
        run.restarts,
        load.writes,
        load.reads,
        load.failed_attempts,
        load.longest_outage.as_millis(),
        load.slowest_op.as_millis()
    );
}

/// Runs `body` and prints the servers' log tails if it fails.
async fn with_logs<F: std::future::Future<Output = Result<()>>>(world: &Arc<World>, body: F) -> Result<()> {
    let result = body.await;
    if result.is_err() {
        eprintln!("{}", world.log_tails());
    }
    result
}

// ---------------------------------------------------------------------------------------------
// The tests.

async fn blue_green(crashes: Crashes) -> Result<()> {
    let world = World::new()?;
    with_logs(&world, async {
        world.bootstrap(FROM).await?;
        let blue = world.nodes_of(&None);
        let spec = upgrade_spec("BlueGreen", json!({"preUpgradeSnapshot": true}))?;
        let mut run = Run::new(spec, &running_status(FROM))?;
        let load = Load::start(&world).await?;
        // Let the client get going against the old servers first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let wall = drive(&world, &mut run, crashes, finished).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = load.finish().await?;
        let wall = wall?;
        print_summary(
            &format!("blue/green {FROM} -> {TO} ({crashes:?} crashes)"),
            wall,
            &run,
            &report,
        );

        let status = run.status()?;
        let u = status.upgrade.clone().unwrap_or_default();
        ensure!(status.current_version.as_deref() == Some(TO), "{status:?}");
        ensure!(u.phase == UpgradePhase::Idle && u.last_error.is_none(), "{u:?}");
        let green: Revision = Some(flows::names::revision_for(TO));
        let bg = status.blue_green.clone().unwrap_or_default();
        ensure!(bg.blue_revision == green && bg.green_revision.is_none(), "{bg:?}");
        let snapshot = u
            .message
            .as_deref()
            .and_then(|m| m.split("pre-upgrade snapshot: ").nth(1));
        let snapshot = snapshot.context("the message names the pre-upgrade snapshot")?;
        let size = std::fs::metadata(snapshot)?.len();
        ensure!(size > 1000, "snapshot {snapshot} has {size} bytes");
        let expected = [
            UpgradePhase::Idle,
            UpgradePhase::PreUpgradeSnapshot,
            UpgradePhase::DeployingGreen,
            UpgradePhase::JoiningMesh,
            UpgradePhase::Syncing,
            UpgradePhase::Promoting,
            UpgradePhase::DemotingBlue,
            UpgradePhase::Cleanup,
            UpgradePhase::Idle,
        ];
        ensure!(run.phases == expected, "phases {:?}", run.phases);
        if crashes == Crashes::Everywhere {
            ensure!(
                run.log.iter().filter(|l| l.contains("KILLED in the middle")).count() == 2,
                "both mid-action kills happened"
            );
            ensure!(
                run.log.iter().any(|l| l.contains("(mid-phase)")),
                "a mid-phase restart happened"
            );
            ensure!(run.restarts >= 10, "only {} restarts", run.restarts);
        }
        check_cluster(&world, &green, TO, &blue).await?;
        check_load(&world, &report).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_2_6_2_to_2_7_2_under_continuous_traffic() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    blue_green(Crashes::None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_resumes_after_the_operator_is_killed_at_every_phase() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    blue_green(Crashes::Everywhere).await
}

/// Where the rollback is requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RollbackAt {
    /// Green caught up, held for promotion (non-voters).
    AwaitingPromotion,
    /// While the second green server is promoted: the first one already votes.
    SecondPromotion,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_rollback_before_promotion_returns_to_blue_and_removes_green() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    rollback(RollbackAt::AwaitingPromotion).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_rollback_during_promotion_demotes_and_removes_green() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    rollback(RollbackAt::SecondPromotion).await
}

async fn rollback(at: RollbackAt) -> Result<()> {
    let world = World::new()?;
    with_logs(&world, async {
        world.bootstrap(FROM).await?;
        let blue = world.nodes_of(&None);
        let auto_promote = at == RollbackAt::SecondPromotion;
        let spec = upgrade_spec("BlueGreen", json!({"blueGreen": {"autoPromote": auto_promote}}))?;
        let mut run = Run::new(spec, &running_status(FROM))?;
        let load = Load::start(&world).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let holding = drive(&world, &mut run, Crashes::None, |r| match at {
            RollbackAt::AwaitingPromotion => r
                .status
                .upgrade
                .as_ref()
                .is_some_and(|u| u.phase == UpgradePhase::AwaitingPromotion),
            // The flow promotes the next server only once it sees the previous one meant to vote.
            RollbackAt::SecondPromotion => {
                matches!(&r.action, Action::Promote { node_id } if node_id.ends_with("-1")) && r.error.is_none()
            }
        })
        .await;
        let green: Revision = Some(flows::names::revision_for(TO));
        let green_nodes = world.nodes_of(&green);
        let rollback = async {
            holding?;
            ensure!(
                green_nodes.len() == 3,
                "green servers before the rollback: {green_nodes:?}"
            );
            run.spec.upgrade.requests.rollback = Some("rollback-1".into());
            drive(&world, &mut run, Crashes::None, finished).await
        }
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = load.finish().await?;
        let wall = rollback?;
        print_summary(
            &format!("blue/green {FROM} -> {TO} rolled back at {at:?}"),
            wall,
            &run,
            &report,
        );
        if at == RollbackAt::SecondPromotion {
            ensure!(
                run.log
                    .iter()
                    .any(|l| l.contains("Demote  | demoting green server bao-v2-7-2-0")),
                "the promoted green server was demoted before its removal"
            );
        }

        let status = run.status()?;
        let u = status.upgrade.clone().unwrap_or_default();
        ensure!(status.current_version.as_deref() == Some(FROM), "{status:?}");
        ensure!(u.phase == UpgradePhase::Idle, "{u:?}");
        ensure!(u.aborted_version.as_deref() == Some(TO), "latched: {u:?}");
        ensure!(u.acknowledged.rollback.as_deref() == Some("rollback-1"), "{u:?}");
        ensure!(
            u.last_error.as_ref().is_some_and(|e| e.reason == "RollbackRequested"),
            "{u:?}"
        );
        ensure!(status.blue_green.clone().unwrap_or_default().green_revision.is_none());
        check_cluster(&world, &None, FROM, &green_nodes).await?;
        check_load(&world, &report).await?;
        // The aborted upgrade does not start again by itself.
        let driver = Driver::new(CLUSTER, ProcessPlatform::new(&world, HangIn::Nowhere));
        for _ in 0..3 {
            let report = driver.step(&run.spec, &run.status()?).await?;
            ensure!(
                report.action == Action::Nothing,
                "after the rollback: {:?}",
                report.action
            );
            run.status_json = serde_json::to_string(&report.status)?;
        }
        ensure!(world.nodes_of(&green).is_empty() && world.nodes_of(&None).len() == blue.len());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_2_6_2_to_2_7_2_under_continuous_traffic() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let world = World::new()?;
    with_logs(&world, async {
        world.bootstrap(FROM).await?;
        let spec = upgrade_spec("RollingUpdate", json!({}))?;
        let mut run = Run::new(spec, &running_status(FROM))?;
        let load = Load::start(&world).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let wall = drive(&world, &mut run, Crashes::None, finished).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = load.finish().await?;
        let wall = wall?;
        print_summary(&format!("rolling {FROM} -> {TO}"), wall, &run, &report);

        let status = run.status()?;
        ensure!(status.current_version.as_deref() == Some(TO), "{status:?}");
        ensure!(
            run.phases == [UpgradePhase::Idle, UpgradePhase::RollingUpdate, UpgradePhase::Idle],
            "{:?}",
            run.phases
        );
        // Highest ordinal first; the leader (bao-0, the self-init server) last, after a step-down.
        let order: Vec<&str> = run
            .log
            .iter()
            .filter_map(|l| l.split("restarting ").nth(1))
            .filter_map(|rest| rest.split(' ').next())
            .collect();
        ensure!(order == ["bao-2", "bao-1", "bao-0"], "restart order {order:?}");
        let step_down = run.log.iter().position(|l| l.contains("StepDown"));
        let last_restart = run.log.iter().position(|l| l.contains("restarting bao-0"));
        ensure!(
            matches!((step_down, last_restart), (Some(s), Some(r)) if s < r),
            "the leader was stepped down before its restart"
        );
        check_cluster(&world, &None, TO, &[]).await?;
        check_load(&world, &report).await
    })
    .await
}
