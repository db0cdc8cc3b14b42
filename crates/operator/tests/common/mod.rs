//! Shared set-up for the executor tests (`backup_executor.rs`, `backup_faults.rs`): OpenBao
//! 2.7.2 nodes bootstrapped from the operator's rendered self-init requests (the executors log
//! in with the JWT roles it renders), a real S3 server, and a throttling TCP proxy that lets a
//! test act in the middle of a snapshot transfer.

#![allow(dead_code)]

use anyhow::Result;
use openbao_api::OpenBaoClusterSpec;
use openbao_client::BaoClient;
use openbao_objstore::{Credentials, Secret, Store, StoreOptions, Target};
use openbao_operator::executors::ClusterKeyArgs;
use openbao_operator::executors::backup::BackupArgs;
use openbao_operator::executors::restore::RestoreArgs;
use openbao_operator::executors::{OpenBaoArgs, StoreArgs};
use openbao_render::{Cluster, JwtTrust, OperatorIdentity, selfinit};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use testkit::openbao::{
    BaoServer, BaoServerSpec, NodeAddr, TestJwtSigner, TestNodeConfig, TestTls, unix_now, wait_for_voters,
    write_static_seal_key,
};
use testkit::s3::{ACCESS_KEY, REGION, S3Server, SECRET_KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const NAMESPACE: &str = "team-a";
pub const CLUSTER: &str = "vault";
pub const BUCKET: &str = "openbao-backups";
pub const PREFIX: &str = "backups";
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub const DEMO_PASSWORD: &str = "demo-password-for-backup-tests";

fn cluster_spec() -> OpenBaoClusterSpec {
    serde_json::from_value(json!({
        "version": "2.7.2",
        "profile": "Development",
        "replicas": 1,
        "storage": {"size": "1Gi"},
        "selfInit": {
            "requests": [{
                "name": "enable-kv",
                "operation": "update",
                "path": "sys/mounts/secret",
                "data": {"type": "kv", "options": {"version": "2"}},
            }],
            "demoUserpass": {"enabled": true, "passwordSecretRef": {"name": "demo"}},
        },
    }))
    .expect("valid spec")
}

/// Everything the tests share: a temp dir, a JWT signer that all nodes trust, the cluster spec.
pub struct World {
    pub dir: tempfile::TempDir,
    pub signer: TestJwtSigner,
    pub spec: OpenBaoClusterSpec,
}

/// One OpenBao node started from the operator's rendered self-init requests.
pub struct Node {
    pub server: BaoServer,
    /// `https://<ip>:8200`; the serving certificate has the IP (and 127.0.0.1) as SANs.
    pub url: String,
    pub addr: NodeAddr,
    pub ca_file: PathBuf,
}

impl World {
    pub fn new() -> Result<Self> {
        rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
        Ok(Self {
            dir: tempfile::Builder::new().prefix("backup-executor-").tempdir()?,
            signer: TestJwtSigner::new()?,
            spec: cluster_spec(),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn seal_key(&self, name: &str) -> Result<PathBuf> {
        write_static_seal_key(&self.path().join(format!("{name}.key")))
    }

    /// A test CA and a serving certificate for `addrs`: the executors reach nodes by IP (and
    /// through a throttling proxy on 127.0.0.1) and verify them against the CA file; raft
    /// joins verify the pod-style DNS names.
    fn tls_for(&self, name: &str, addrs: &[NodeAddr]) -> Result<TestTls> {
        let tls = TestTls::generate(&self.path().join(name).join("tls"), NAMESPACE)?;
        let ips: Vec<String> = addrs.iter().map(|a| a.ip.to_string()).collect();
        let pods = format!("*.openbao-internal.{NAMESPACE}.svc");
        let mut sans: Vec<&str> = ips.iter().map(String::as_str).collect();
        sans.extend(["127.0.0.1", &pods]);
        let leaf = tls.ca.leaf("openbao", None, &sans);
        std::fs::write(&tls.cert_file, &leaf.cert)?;
        std::fs::write(&tls.key_file, &leaf.key)?;
        Ok(tls)
    }

    /// Starts one member; only a member without `joins` gets the self-init requests.
    fn spawn_member(
        &self,
        name: &str,
        index: usize,
        addr: NodeAddr,
        tls: &TestTls,
        seal_key: &Path,
        joins: &[NodeAddr],
    ) -> Result<Node> {
        let dir = self.path().join(name);
        let mut config = TestNodeConfig::new(name, addr, &dir.join("data"), tls).static_seal(seal_key);
        for (i, peer) in joins.iter().enumerate() {
            config = config.join(tls, i, peer);
        }
        let init = if joins.is_empty() {
            let cluster = Cluster {
                name: CLUSTER,
                namespace: NAMESPACE,
                uid: "uid",
                spec: &self.spec,
            };
            let operator = OperatorIdentity {
                namespace: "openbao-operator-system".into(),
                service_account: "openbao-operator".into(),
            };
            let trust = JwtTrust {
                issuer: ISSUER.into(),
                public_keys_pem: vec![self.signer.public_key_pem()],
            };
            Some(selfinit::init_hcl(&cluster, &operator, &trust))
        } else {
            None
        };
        let extra: Vec<(&str, &str)> = init.iter().map(|i| ("zz-init.hcl", i.as_str())).collect();
        let config_dir = config.write_to(&dir.join("config"), &extra)?;
        let binary = testkit::cache::bao_binary("2.7.2")?;
        let spec = BaoServerSpec::new(name, &binary, &config_dir, tls.client_config(index, &addr))
            .env(openbao_render::paths::DEMO_PASSWORD_ENV, DEMO_PASSWORD);
        Ok(Node {
            server: BaoServer::start(spec)?,
            url: format!("https://{}:8200", addr.ip),
            addr,
            ca_file: tls.ca_file.clone(),
        })
    }

    /// A single self-initialized node, active.
    pub async fn start_node(&self, name: &str, seal_key: &Path) -> Result<Node> {
        let addr = NodeAddr::allocate()?;
        let tls = self.tls_for(name, &[addr])?;
        let mut node = self.spawn_member(name, 0, addr, &tls, seal_key, &[])?;
        node.server.wait_active(Duration::from_secs(60)).await?;
        Ok(node)
    }

    /// `size` nodes (`<name>-0` self-initializes, the others join it), all voters, one CA;
    /// `[0]` is the active node.
    pub async fn start_cluster(&self, name: &str, size: usize, seal_key: &Path) -> Result<Vec<Node>> {
        let started = Instant::now();
        let addrs = (0..size).map(|_| NodeAddr::allocate()).collect::<Result<Vec<_>>>()?;
        let tls = self.tls_for(name, &addrs)?;
        let mut nodes = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let joins = if i == 0 { Vec::new() } else { vec![addrs[0]] };
            nodes.push(self.spawn_member(&format!("{name}-{i}"), i, *addr, &tls, seal_key, &joins)?);
        }
        nodes[0].server.wait_active(Duration::from_secs(60)).await?;
        for node in &mut nodes[1..] {
            node.server.wait_unsealed(Duration::from_secs(60)).await?;
        }
        let admin = admin(&nodes[0]).await?;
        admin
            .set_autopilot_config(&openbao_client::AutopilotConfigUpdate {
                server_stabilization_time: Some("2s".into()),
                ..Default::default()
            })
            .await?;
        wait_for_voters(&admin, size, Duration::from_secs(60)).await?;
        eprintln!("{size}-node cluster with {size} voters in {:?}", started.elapsed());
        Ok(nodes)
    }

    /// A projected-token stand-in for the Job's service account `<cluster>-<job>-serviceaccount`.
    pub fn token_file(&self, job: &str) -> Result<PathBuf> {
        let now = unix_now();
        let sa = openbao_api::names::job_service_account(CLUSTER, job);
        let jwt = self.signer.sign(&json!({
            "iss": ISSUER,
            "sub": format!("system:serviceaccount:{NAMESPACE}:{sa}"),
            "aud": [openbao_api::names::jwt_audience(NAMESPACE, CLUSTER)],
            "iat": now,
            "nbf": now - 5,
            "exp": now + 600,
        }))?;
        let path = self.path().join(format!("{job}.token"));
        std::fs::write(&path, jwt)?;
        Ok(path)
    }

    /// A mounted-Secret stand-in with the S3 keys.
    pub fn credentials_dir(&self, name: &str, secret: &str) -> Result<PathBuf> {
        let dir = self.path().join(format!("creds-{name}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("accessKeyId"), format!("{ACCESS_KEY}\n"))?;
        std::fs::write(dir.join("secretAccessKey"), format!("{secret}\n"))?;
        Ok(dir)
    }

    pub fn openbao_args(&self, url: &str, ca_file: &Path, job: &str) -> Result<OpenBaoArgs> {
        Ok(OpenBaoArgs {
            addresses: vec![url.to_string()],
            ca_file: Some(ca_file.to_path_buf()),
            jwt_mount: selfinit::JWT_MOUNT.into(),
            jwt_token_file: self.token_file(job)?,
            leader_timeout: Duration::from_secs(10),
            pin_active: true,
        })
    }

    pub fn store_args(&self, s3: &S3Server, bucket: &str, secret: &str) -> Result<StoreArgs> {
        Ok(StoreArgs {
            endpoint: s3.endpoint(),
            bucket: bucket.into(),
            region: REGION.into(),
            use_path_style: true,
            credentials_dir: self.credentials_dir(&format!("{bucket}-{}", secret.len()), secret)?,
            part_size_mib: 5,
            concurrency: 2,
            max_retries: 2,
        })
    }

    pub fn backup_args(&self, node: &Node, s3: &S3Server) -> Result<BackupArgs> {
        Ok(BackupArgs {
            openbao: self.openbao_args(&node.url, &node.ca_file, "backup")?,
            store: self.store_args(s3, BUCKET, SECRET_KEY)?,
            jwt_role: "openbao-operator-backup".into(),
            cluster: ClusterKeyArgs {
                namespace: NAMESPACE.into(),
                name: CLUSTER.into(),
                path_prefix: PREFIX.into(),
            },
            retention_max_count: None,
            retention_max_age: None,
            verify_checksum: true,
            result_file: None,
        })
    }

    pub fn restore_args(&self, node: &Node, s3: &S3Server, key: &str) -> Result<RestoreArgs> {
        Ok(RestoreArgs {
            openbao: self.openbao_args(&node.url, &node.ca_file, "restore")?,
            store: self.store_args(s3, BUCKET, SECRET_KEY)?,
            jwt_role: "openbao-operator-restore".into(),
            key: key.into(),
            response_timeout: Duration::from_secs(120),
            healthy_timeout: Duration::from_secs(60),
            result_file: None,
        })
    }
}

pub fn store(s3: &S3Server) -> Result<Store> {
    let target = Target {
        endpoint: s3.endpoint(),
        bucket: BUCKET.into(),
        region: REGION.into(),
        path_prefix: PREFIX.into(),
        use_path_style: true,
        credentials: Credentials {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: Secret::new(SECRET_KEY),
            ca_cert_pem: None,
        },
    };
    Ok(Store::new(&target, StoreOptions::default())?)
}

pub async fn s3_with_bucket() -> Result<S3Server> {
    let s3 = S3Server::start().await?;
    s3.create_bucket(BUCKET).await?;
    Ok(s3)
}

/// A client logged in as the demo admin (`admin` policy).
pub async fn admin(node: &Node) -> Result<BaoClient> {
    let client = node.server.client();
    let login = client.login_userpass("userpass", "demo", DEMO_PASSWORD).await?;
    Ok(client.with_token(login.token))
}

pub async fn write_secret(admin: &BaoClient, path: &str, value: &str) -> Result<()> {
    admin
        .write(&format!("secret/data/{path}"), &json!({"data": {"value": value}}))
        .await?;
    Ok(())
}

pub async fn read_secret(admin: &BaoClient, path: &str) -> Result<Option<String>> {
    Ok(admin
        .read(&format!("secret/data/{path}"))
        .await?
        .and_then(|v| v["data"]["data"]["value"].as_str().map(str::to_string)))
}

/// Writes `count` secrets of `size` random bytes each, hex-encoded (2×size of KV data), 8 at a
/// time.
pub async fn write_bulk(admin: &BaoClient, count: usize, size: usize) -> Result<()> {
    let started = Instant::now();
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    let mut pending = Vec::new();
    for i in 0..count {
        let mut bytes = vec![0u8; size];
        std::io::Read::read_exact(&mut urandom, &mut bytes)?;
        let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let admin = admin.clone();
        pending.push(tokio::spawn(async move {
            write_secret(&admin, &format!("bulk/{i:05}"), &value).await
        }));
        if pending.len() == 8 {
            for p in pending.drain(..) {
                p.await??;
            }
        }
    }
    for p in pending {
        p.await??;
    }
    eprintln!(
        "wrote {count} secrets of {size} random bytes in {:?}",
        started.elapsed()
    );
    Ok(())
}

pub fn assert_key_shape(key: &str) {
    let rest = key
        .strip_prefix(&format!("{PREFIX}/{NAMESPACE}/{CLUSTER}/"))
        .unwrap_or_else(|| panic!("key {key} has the wrong prefix"));
    let name = rest.strip_suffix(".snap").expect(".snap suffix");
    let (stamp, id) = name.split_once('-').expect("<timestamp>-<id>");
    assert_eq!(stamp.len(), 16, "{key}");
    assert!(stamp.as_bytes()[8] == b'T' && stamp.ends_with('Z'), "{key}");
    assert!(
        stamp[..8]
            .bytes()
            .chain(stamp[9..15].bytes())
            .all(|b| b.is_ascii_digit()),
        "{key}"
    );
    assert!(id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
}

/// A TCP proxy on 127.0.0.1 that passes OpenBao's answers on at `rate` bytes/s and counts them,
/// so a test knows how far a snapshot transfer has got.
///
/// When the upstream connection breaks (e.g. the node was killed), [`Throttle::start`] keeps
/// the client's side open and silent, like a host that vanished without closing its sockets;
/// [`Throttle::start_passing_breaks`] closes it, like a process that died on a reachable host.
pub struct Throttle {
    pub addr: SocketAddr,
    pub forwarded: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Throttle {
    pub async fn start(upstream: SocketAddr, rate: u64) -> Result<Self> {
        Self::start_with(upstream, rate, false).await
    }

    pub async fn start_passing_breaks(upstream: SocketAddr, rate: u64) -> Result<Self> {
        Self::start_with(upstream, rate, true).await
    }

    async fn start_with(upstream: SocketAddr, rate: u64, pass_breaks: bool) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let forwarded = Arc::new(AtomicU64::new(0));
        let counter = forwarded.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = tokio::io::copy(&mut client_read, &mut server_write);
                    let down = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        let ended = loop {
                            let n = match server_read.read(&mut buf).await {
                                Ok(0) => break Ok(()),
                                Ok(n) => n,
                                Err(e) => break Err(e),
                            };
                            client_write.write_all(&buf[..n]).await?;
                            counter.fetch_add(n as u64, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_micros(n as u64 * 1_000_000 / rate)).await;
                        };
                        if ended.is_ok() || pass_breaks {
                            client_write.shutdown().await?;
                        }
                        ended
                    };
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Ok(Self { addr, forwarded, task })
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
