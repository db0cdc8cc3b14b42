//! The seal-migration flow and its driver against real OpenBao processes (2.6.2 and 2.7.2):
//! a 3-server raft cluster self-initialized on the static seal, with secrets written, moves to
//! the transit seal of a second real OpenBao.
//!
//! [`ProcessPlatform`] implements `SealPlatform` with `bao server` processes on loopback: each
//! server's seal stanzas are the operator's rendered ones (`config::seal_hcl`,
//! `config::migration_seal_hcl`) with container paths remapped; the recovery key "Secret" is a
//! file; removing the old seal deletes the static key file. The driver logs in as a user whose
//! only policy is `SEAL_MIGRATION_POLICY`, so every step proves that policy enough.
//!
//! The operator "is killed" after every step: the driver and its platform adapter (with its
//! cached token) are dropped and made again from nothing but the persisted status JSON.
//! Afterwards: every secret readable; all servers stopped and started again unseal through
//! transit with the static key file gone. Then the way back (transit -> static, a new static
//! key) by the same flow, and all servers restarted with the transit server stopped unseal
//! with the new static key, every secret still readable.

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use openbao_api::{OpenBaoClusterSpec, SealMigrationPhase, SealMigrationStatus, UnsealType};
use openbao_client::{BaoClient, HealthState, Token};
use openbao_operator::flows::seal_migration::driver::{
    RecoveryKey, SEAL_MIGRATION_POLICY, SealDriver, SealNode, SealPlatform,
};
use openbao_operator::flows::seal_migration::{SealAction, SealStage, SealTarget};
use openbao_operator::flows::{PlatformError, Snapshot};
use openbao_render::{Cluster, config, paths};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::openbao::{
    BaoServer, BaoServerSpec, NodeAddr, TestNodeConfig, TestTls, poll_until, write_config_dir, write_static_seal_key,
};
use testkit::transit::TransitServer;

const CLUSTER: &str = "bao";
const NAMESPACE: &str = "sealtest";
const KEY_NAME: &str = "openbao-unseal";
const ADMIN_PASSWORD: &str = "admin-password-for-the-seal-test";
const MIGRATOR_PASSWORD: &str = "migrator-password-for-the-seal-test";
const SECRETS: u32 = 30;
const STARTUP: Duration = Duration::from_secs(90);
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(300);

/// One cluster at a time: four `bao` processes on two shared cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// The world: processes and their files. It outlives every driver.

struct Node {
    ordinal: u32,
    addr: NodeAddr,
    stage: SealStage,
    server: BaoServer,
}

struct World {
    dir: PathBuf,
    tls: TestTls,
    /// The static seal's key file (the `<cluster>-unseal-key` Secret).
    static_key: std::sync::Mutex<PathBuf>,
    transit_ca: PathBuf,
    static_spec: OpenBaoClusterSpec,
    transit_spec: OpenBaoClusterSpec,
    /// The seal stanzas of each stage of the migration at hand, rendered by the operator and
    /// remapped to this machine.
    stages: std::sync::Mutex<BTreeMap<&'static str, String>>,
    nodes: tokio::sync::Mutex<BTreeMap<String, Node>>,
}

fn stage_name(stage: SealStage) -> &'static str {
    match stage {
        SealStage::Old => "old",
        SealStage::Migration => "migration",
        SealStage::New => "new",
    }
}

fn spec(version: &str, unseal: serde_json::Value) -> Result<OpenBaoClusterSpec> {
    Ok(serde_json::from_value(json!({
        "version": version,
        "profile": "Development",
        "replicas": 3,
        "storage": {"size": "1Gi"},
        "unseal": unseal,
    }))?)
}

/// Self-init: KV, an admin user for the test's reads and writes, and the migrator whose only
/// policy is the operator's `SEAL_MIGRATION_POLICY`.
fn init_hcl() -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let admin = r#"path "*" { capabilities = ["create", "read", "update", "patch", "delete", "list", "sudo"] }"#;
    format!(
        r#"initialize "setup" {{
  request "kv" {{
    operation = "update"
    path = "sys/mounts/secret"
    data = {{ "type" = "kv", "options" = {{ "version" = "2" }} }}
  }}
  request "admin-policy" {{
    operation = "update"
    path = "sys/policies/acl/admin"
    data = {{ "policy" = {admin} }}
  }}
  request "migrator-policy" {{
    operation = "update"
    path = "sys/policies/acl/seal-migration"
    data = {{ "policy" = {migration} }}
  }}
  request "userpass" {{
    operation = "update"
    path = "sys/auth/userpass"
    data = {{ "type" = "userpass" }}
  }}
  request "admin" {{
    operation = "update"
    path = "auth/userpass/users/admin"
    data = {{ "password" = {admin_pw}, "token_policies" = ["admin"] }}
  }}
  request "migrator" {{
    operation = "update"
    path = "auth/userpass/users/migrator"
    data = {{ "password" = {migrator_pw}, "token_policies" = ["seal-migration"], "token_no_default_policy" = true }}
  }}
}}
"#,
        admin = q(admin),
        migration = q(SEAL_MIGRATION_POLICY),
        admin_pw = q(ADMIN_PASSWORD),
        migrator_pw = q(MIGRATOR_PASSWORD),
    )
}

impl World {
    fn seal_file(&self, stage: SealStage) -> String {
        self.stages.lock().unwrap()[stage_name(stage)].clone()
    }

    fn static_key(&self) -> PathBuf {
        self.static_key.lock().unwrap().clone()
    }

    /// The stages of a migration `from` -> `to`, with the static key at `static_key`.
    fn prepare(&self, from: &OpenBaoClusterSpec, to: &OpenBaoClusterSpec, static_key: PathBuf) -> Result<()> {
        let cluster = |spec| Cluster {
            name: CLUSTER,
            namespace: NAMESPACE,
            uid: "seal-test-uid",
            spec,
        };
        let (old, new) = (cluster(from), cluster(to));
        // Container paths -> this machine's.
        let remap = |hcl: String| {
            hcl.replace(
                &format!("file://{}/key", paths::UNSEAL_DIR),
                &format!("file://{}", static_key.display()),
            )
            .replace(paths::TRANSIT_CA_DIR, &self.transit_ca.display().to_string())
        };
        let stages = BTreeMap::from([
            ("old", remap(config::seal_hcl(&old))),
            ("migration", remap(config::migration_seal_hcl(&old, &new))),
            ("new", remap(config::seal_hcl(&new))),
        ]);
        for hcl in stages.values() {
            ensure!(!hcl.contains("/etc/bao"), "unmapped path in {hcl}");
        }
        *self.stages.lock().unwrap() = stages;
        *self.static_key.lock().unwrap() = static_key;
        Ok(())
    }

    fn client_config(&self, id: &str, addr: &NodeAddr) -> openbao_client::ClientConfig {
        self.tls
            .client_config_for(id, addr)
            .with_timeout(Duration::from_secs(3))
    }

    /// Writes `20-seal.hcl` of `stage` into the node's config dir.
    fn write_seal(&self, id: &str, stage: SealStage) -> Result<()> {
        write_config_dir(
            &self.dir.join("nodes").join(id).join("config"),
            &[("20-seal.hcl", &self.seal_file(stage))],
        )?;
        Ok(())
    }

    async fn bootstrap(bao: &Path, dir: &Path, transit: &TransitServer, version: &str) -> Result<Self> {
        let tls = TestTls::generate(&dir.join("tls"), NAMESPACE)?;
        let static_key = write_static_seal_key(&dir.join("unseal/key"))?;
        let transit_ca = write_config_dir(
            &dir.join("transit-ca"),
            &[(paths::TRANSIT_CA_FILE, transit.tls.ca_pem())],
        )?;
        let static_spec = spec(version, json!({"type": "static"}))?;
        let transit_spec = spec(
            version,
            json!({"type": "transit", "transit": {
                "address": transit.address(),
                "keyName": KEY_NAME,
                "tlsServerName": transit.server_name(),
                "caSecretRef": {"name": "transit-ca", "key": "bundle.pem"},
                "tokenSecretRef": {"name": "transit-token", "key": "token"},
            }}),
        )?;
        let addrs: Vec<(String, NodeAddr)> = (0..3)
            .map(|i| Ok((format!("{CLUSTER}-{i}"), NodeAddr::allocate()?)))
            .collect::<Result<_>>()?;
        let world = Self {
            dir: dir.to_path_buf(),
            tls,
            static_key: std::sync::Mutex::new(static_key.clone()),
            transit_ca,
            static_spec,
            transit_spec,
            stages: Default::default(),
            nodes: Default::default(),
        };
        world.prepare(&world.static_spec, &world.transit_spec, static_key)?;
        let init = init_hcl();
        for (i, (id, addr)) in addrs.iter().enumerate() {
            let node_dir = dir.join("nodes").join(id);
            let mut config = TestNodeConfig::new(id, *addr, &node_dir.join("data"), &world.tls);
            for (peer, peer_addr) in addrs.iter().filter(|(p, _)| p != id) {
                config = config.join_node(&world.tls, peer, peer_addr);
            }
            let old_seal = world.seal_file(SealStage::Old);
            let mut files = vec![("20-seal.hcl", old_seal.as_str())];
            if i == 0 {
                files.push(("zz-init.hcl", init.as_str()));
            }
            let config_dir = config.write_to(&node_dir.join("config"), &files)?;
            let server = BaoServer::start(
                BaoServerSpec::new(id, bao, &config_dir, world.client_config(id, addr))
                    .env(paths::TRANSIT_TOKEN_ENV, &transit.token),
            )?;
            world.nodes.lock().await.insert(
                id.clone(),
                Node {
                    ordinal: i as u32,
                    addr: *addr,
                    stage: SealStage::Old,
                    server,
                },
            );
        }
        let admin = world.login(&addrs[0].0, "admin", ADMIN_PASSWORD).await?;
        poll_until("3 healthy voters", STARTUP, || async {
            let state = admin.autopilot_state().await?;
            Ok((state.healthy && state.voters.len() == 3).then_some(()))
        })
        .await?;
        std::fs::remove_file(dir.join("nodes").join(&addrs[0].0).join("config/zz-init.hcl"))?;
        Ok(world)
    }

    async fn addr(&self, id: &str) -> Result<NodeAddr> {
        Ok(self
            .nodes
            .lock()
            .await
            .get(id)
            .with_context(|| format!("no node {id}"))?
            .addr)
    }

    async fn login(&self, id: &str, user: &str, password: &str) -> Result<BaoClient> {
        let client = BaoClient::new(self.client_config(id, &self.addr(id).await?))?;
        let login = poll_until(&format!("{user} login on {id}"), STARTUP, || async {
            Ok(Some(client.login_userpass("userpass", user, password).await?))
        })
        .await?;
        Ok(client.with_token(login.token))
    }

    /// A client with the admin token on the active server.
    async fn admin(&self) -> Result<BaoClient> {
        let ids: Vec<String> = self.nodes.lock().await.keys().cloned().collect();
        let active = poll_until("an active server", STARTUP, || async {
            for id in &ids {
                let client = BaoClient::new(self.client_config(id, &self.addr(id).await?))?;
                if client.health().await.is_ok_and(|h| h.state == HealthState::Active) {
                    return Ok(Some(id.clone()));
                }
            }
            Ok(None)
        })
        .await?;
        self.login(&active, "admin", ADMIN_PASSWORD).await
    }

    fn recovery_key_file(&self) -> PathBuf {
        self.dir.join("recovery-key.json")
    }

    async fn stop_all(&self) {
        for node in self.nodes.lock().await.values_mut() {
            node.server.stop().await;
        }
    }

    fn log_tails(&self) -> String {
        let mut out = String::new();
        for i in 0..3 {
            let id = format!("{CLUSTER}-{i}");
            let log = self.dir.join("nodes").join(&id).join(format!("{id}.log"));
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
// The platform adapter: what the operator holds in memory. Made anew for every step.

struct ProcessPlatform {
    world: Arc<World>,
    token: tokio::sync::Mutex<Option<Token>>,
}

fn platform_err(context: &str) -> impl FnOnce(anyhow::Error) -> PlatformError + '_ {
    move |e| PlatformError::new(context, e)
}

impl ProcessPlatform {
    fn new(world: &Arc<World>) -> Self {
        Self {
            world: world.clone(),
            token: Default::default(),
        }
    }

    /// The migrator's token, logged in on any unsealed server.
    async fn token(&self) -> Option<Token> {
        let mut cached = self.token.lock().await;
        if cached.is_none() {
            let nodes: Vec<(String, NodeAddr)> = self
                .world
                .nodes
                .lock()
                .await
                .iter()
                .map(|(id, n)| (id.clone(), n.addr))
                .collect();
            for (id, addr) in nodes {
                let Ok(client) = BaoClient::new(self.world.client_config(&id, &addr)) else {
                    continue;
                };
                if let Ok(login) = client.login_userpass("userpass", "migrator", MIGRATOR_PASSWORD).await {
                    *cached = Some(login.token);
                    break;
                }
            }
        }
        cached.clone()
    }
}

impl SealPlatform for ProcessPlatform {
    async fn nodes(&self) -> Result<Vec<SealNode>, PlatformError> {
        let mut nodes = self.world.nodes.lock().await;
        Ok(nodes
            .iter_mut()
            .map(|(id, n)| SealNode {
                id: id.clone(),
                ordinal: n.ordinal,
                running: n.server.is_running(),
                stage: n.stage,
            })
            .collect())
    }

    async fn client(&self, node_id: &str) -> Result<BaoClient, PlatformError> {
        let addr = self.world.addr(node_id).await.map_err(platform_err("client"))?;
        let client = BaoClient::new(self.world.client_config(node_id, &addr))
            .map_err(|e| PlatformError::new(format!("client for {node_id}"), e))?;
        Ok(match self.token().await {
            Some(token) => client.with_token(token),
            None => client,
        })
    }

    async fn restart_node(&self, node_id: &str, stage: SealStage) -> Result<(), PlatformError> {
        let mut nodes = self.world.nodes.lock().await;
        let node = nodes
            .get_mut(node_id)
            .ok_or_else(|| PlatformError::new("restart", anyhow::anyhow!("no node {node_id}")))?;
        if node.stage == stage && node.server.is_running() {
            return Ok(());
        }
        self.world
            .write_seal(node_id, stage)
            .map_err(platform_err("seal config"))?;
        node.server.restart().await.map_err(platform_err("restart"))?;
        node.stage = stage;
        Ok(())
    }

    async fn take_snapshot(&self, _attempt: i32) -> Result<Snapshot, PlatformError> {
        let ids: Vec<String> = self.world.nodes.lock().await.keys().cloned().collect();
        for id in ids {
            let client = self.client(&id).await?;
            if !client.health().await.is_ok_and(|h| h.state == HealthState::Active) {
                continue;
            }
            let path = self.world.dir.join("pre-migration.snap");
            let mut stream = client.snapshot().await.map_err(|e| PlatformError::new("snapshot", e))?;
            let mut file = std::fs::File::create(&path).map_err(|e| PlatformError::new("snapshot file", e))?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| PlatformError::new("snapshot stream", e))?;
                file.write_all(&chunk)
                    .map_err(|e| PlatformError::new("snapshot file", e))?;
            }
            return Ok(Snapshot::Stored(path.display().to_string()));
        }
        Err(PlatformError::new("snapshot", anyhow::anyhow!("no active server")))
    }

    async fn recovery_key(&self) -> Result<Option<RecoveryKey>, PlatformError> {
        let path = self.world.recovery_key_file();
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| PlatformError::new("recovery key", e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| PlatformError::new("recovery key", e))?;
        Ok(Some(RecoveryKey {
            key: v["key"].as_str().unwrap_or_default().into(),
            verification_nonce: v["nonce"].as_str().unwrap_or_default().into(),
        }))
    }

    async fn store_recovery_key(&self, key: &RecoveryKey) -> Result<(), PlatformError> {
        let text = json!({"key": key.key, "nonce": key.verification_nonce}).to_string();
        std::fs::write(self.world.recovery_key_file(), text).map_err(|e| PlatformError::new("recovery key", e))
    }

    async fn remove_old_seal(&self, from: UnsealType) -> Result<(), PlatformError> {
        let key = self.world.static_key();
        if from == UnsealType::Static && key.exists() {
            std::fs::remove_file(&key).map_err(|e| PlatformError::new("remove static key", e))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Driving, with the operator killed after every step.

async fn drive(world: &Arc<World>, target: SealTarget, log: &mut Vec<String>) -> Result<SealMigrationStatus> {
    let started = Instant::now();
    // The only thing that survives the operator.
    let mut status_json = serde_json::to_string(&SealMigrationStatus::default())?;
    let mut phases = vec![SealMigrationPhase::Idle];
    let mut finished = false;
    let mut steps = 0;
    loop {
        steps += 1;
        ensure!(
            started.elapsed() < MIGRATION_TIMEOUT,
            "no end after {MIGRATION_TIMEOUT:?}; status {status_json}\n{}",
            log.join("\n")
        );
        let status: SealMigrationStatus = serde_json::from_str(&status_json)?;
        // A fresh operator: nothing in memory but what status says.
        let driver = SealDriver::new(CLUSTER, ProcessPlatform::new(world));
        let report = driver.step(target, &status).await?;
        drop(driver);
        if report.action != SealAction::Wait || report.error.is_some() {
            log.push(format!(
                "{:>6} ms  {:<18} {:?} | {}{}",
                started.elapsed().as_millis(),
                report.action.name(),
                report.status.phase,
                report.status.message.clone().unwrap_or_default(),
                report.error.as_ref().map(|e| format!(" ERROR {e}")).unwrap_or_default()
            ));
        }
        ensure!(
            report.status.aborted_to.is_none(),
            "the migration was given up: {:?}\n{}",
            report.status.last_error,
            log.join("\n")
        );
        if phases.last() != Some(&report.status.phase) {
            phases.push(report.status.phase);
        }
        status_json = serde_json::to_string(&report.status)?;
        if matches!(report.action, SealAction::RemoveOldSeal { .. }) && report.error.is_none() {
            finished = true;
        }
        if finished && report.action == SealAction::Nothing {
            let mut expected = vec![SealMigrationPhase::Idle];
            if target.snapshot_first {
                expected.push(SealMigrationPhase::PreMigrationSnapshot);
            }
            expected.extend([
                SealMigrationPhase::RecoveryKey,
                SealMigrationPhase::Standbys,
                SealMigrationPhase::StepDown,
                SealMigrationPhase::Finalize,
                SealMigrationPhase::Idle,
            ]);
            ensure!(phases == expected, "phases {phases:?}");
            eprintln!(
                "TIMING seal migration to {:?}: {} ms, {steps} steps, each by a newly made driver",
                target.to,
                started.elapsed().as_millis(),
            );
            return Ok(report.status);
        }
        let pause = report
            .requeue_after
            .unwrap_or(Duration::from_millis(300))
            .min(Duration::from_millis(300));
        tokio::time::sleep(pause).await;
    }
}

async fn check_secrets(admin: &BaoClient) -> Result<()> {
    for i in 0..SECRETS {
        let v = admin
            .read(&format!("secret/data/s{i}"))
            .await?
            .with_context(|| format!("secret s{i} is gone"))?;
        ensure!(v["data"]["data"]["n"] == json!(i), "s{i}: {v}");
    }
    Ok(())
}

/// Where the operator died while making the recovery key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecoveryKeyCrash {
    /// After OpenBao answered, before the key was stored.
    BeforeStoring,
    /// After storing it, before verifying it.
    AfterStoring,
}

async fn static_to_transit(version: &str, crash: RecoveryKeyCrash) -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let bao = testkit::cache::bao_binary(version)?;
    let tmp = tempfile::Builder::new().prefix("seal-migration-").tempdir()?;
    let mut transit = TransitServer::start(&bao, &tmp.path().join("transit"), KEY_NAME, None, STARTUP).await?;
    let world = Arc::new(World::bootstrap(&bao, &tmp.path().join("cluster"), &transit, version).await?);
    let result = async {
        let admin = world.admin().await?;
        for i in 0..SECRETS {
            admin
                .write(&format!("secret/data/s{i}"), &json!({"data": {"n": i}}))
                .await?;
        }
        // An operator that died in the middle of making the recovery key: OpenBao handed out a
        // key that waits for verification, and the operator either lost it (the driver must
        // cancel the rotation and start over) or stored it (the driver must verify it).
        let pending = admin
            .write(
                "sys/rotate/recovery/init",
                &json!({"secret_shares": 1, "secret_threshold": 1, "require_verification": true}),
            )
            .await?
            .context("recovery key init answered nothing")?;
        let nonce = pending["data"]["verification_nonce"].as_str().unwrap_or_default();
        ensure!(!nonce.is_empty(), "{pending}");
        let pending_key = RecoveryKey {
            key: pending["data"]["keys_base64"][0].as_str().unwrap_or_default().into(),
            verification_nonce: nonce.into(),
        };
        if crash == RecoveryKeyCrash::AfterStoring {
            ProcessPlatform::new(&world).store_recovery_key(&pending_key).await?;
        }
        let mut log = Vec::new();
        let target = SealTarget {
            to: UnsealType::Transit,
            snapshot_first: true,
        };
        let status = drive(&world, target, &mut log).await;
        eprintln!("{}", log.join("\n"));
        let status = status?;
        ensure!(status.last_error.is_none(), "{status:?}");
        // The stored key was verified and used; a lost one was replaced by a new one.
        let used = ProcessPlatform::new(&world)
            .recovery_key()
            .await?
            .context("no recovery key")?;
        ensure!(
            (used == pending_key) == (crash == RecoveryKeyCrash::AfterStoring),
            "{crash:?}: the pending key was {} used",
            if used == pending_key { "" } else { "not" }
        );
        // Order: the standbys (highest ordinal first), then the leader steps down.
        let order: Vec<&str> = log
            .iter()
            .filter(|l| l.contains("RestartNode"))
            .filter_map(|l| l.split("restarting ").nth(1))
            .filter_map(|r| r.split(' ').next())
            .collect();
        // Standbys first (highest ordinal first), then the old leader first on the new seal,
        // then the other two, the one leading by then last.
        ensure!(order.len() == 5, "restarts {order:?}");
        ensure!(order[..3] == ["bao-2", "bao-1", "bao-0"], "restart order {order:?}");
        let last_step_down = log
            .iter()
            .rposition(|l| l.contains("StepDown ") && l.contains("before restarting"));
        let last_restart = log.iter().rposition(|l| l.contains("RestartNode"));
        ensure!(
            matches!((last_step_down, last_restart), (Some(s), Some(r)) if s < r),
            "the leader at the end was stepped down before its restart"
        );
        ensure!(!world.static_key().exists(), "the static key is still there");
        ensure!(std::fs::metadata(tmp.path().join("cluster/pre-migration.snap"))?.len() > 1000);
        let admin = world.admin().await?;
        check_secrets(&admin).await?;

        // Every server stopped and started again: unsealed through transit, no static key.
        world.stop_all().await;
        for node in world.nodes.lock().await.values_mut() {
            node.server.restart().await?;
        }
        for node in world.nodes.lock().await.values_mut() {
            node.server.wait_unsealed(STARTUP).await?;
            let seal = node.server.client().seal_status().await?;
            ensure!(
                seal.seal_type == "transit" && !seal.sealed && !seal.migration,
                "{seal:?}"
            );
        }
        let rendered: Vec<String> = (0..3)
            .map(|i| std::fs::read_to_string(world.dir.join(format!("nodes/bao-{i}/config/20-seal.hcl"))))
            .collect::<Result<_, _>>()?;
        ensure!(
            rendered.iter().all(|r| *r == world.seal_file(SealStage::New)),
            "{rendered:?}"
        );
        check_secrets(&world.admin().await?).await?;

        // The way back: transit -> static, with a new static key; the recovery key made for
        // the first migration is used again.
        let key2 = write_static_seal_key(&world.dir.join("unseal/key-2"))?;
        world.prepare(&world.transit_spec, &world.static_spec, key2.clone())?;
        for node in world.nodes.lock().await.values_mut() {
            // What they run now is the "old" seal of this migration.
            node.stage = SealStage::Old;
        }
        let mut back_log = Vec::new();
        let target = SealTarget {
            to: UnsealType::Static,
            snapshot_first: false,
        };
        let back = drive(&world, target, &mut back_log).await;
        eprintln!("{}", back_log.join("\n"));
        let back = back?;
        ensure!(back.last_error.is_none(), "{back:?}");
        check_secrets(&world.admin().await?).await?;
        // The transit server gone, every server restarted: unsealed with the new static key.
        transit.server.stop().await;
        world.stop_all().await;
        for node in world.nodes.lock().await.values_mut() {
            node.server.restart().await?;
        }
        for node in world.nodes.lock().await.values_mut() {
            node.server.wait_unsealed(STARTUP).await?;
            let seal = node.server.client().seal_status().await?;
            ensure!(
                seal.seal_type == "static" && !seal.sealed && !seal.migration,
                "{seal:?}"
            );
        }
        check_secrets(&world.admin().await?).await?;
        Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}", world.log_tails());
    }
    world.stop_all().await;
    transit.server.stop().await;
    let _ = &world.transit_ca;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_to_transit_and_back_2_7_2_with_the_operator_killed_after_every_step() -> Result<()> {
    static_to_transit("2.7.2", RecoveryKeyCrash::BeforeStoring).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_to_transit_and_back_2_6_2_with_the_operator_killed_after_every_step() -> Result<()> {
    static_to_transit("2.6.2", RecoveryKeyCrash::AfterStoring).await
}
