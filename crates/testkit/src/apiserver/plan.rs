//! Everything decided before a process starts: ports, certificates, kubeconfig, command lines.

use crate::pki::TestCa;
use anyhow::{Context, Result};
use base64::Engine;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const SERVICE_CIDR: &str = "10.96.0.0/16";
/// First address of SERVICE_CIDR: the in-cluster `kubernetes` Service.
const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

/// Files of one control plane, identical for a test's temp dir and for `.cluster/`.
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }
    pub(super) fn pki(&self, file: &str) -> PathBuf {
        self.root.join("pki").join(file)
    }
    pub(super) fn log(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(format!("{name}.log"))
    }
    pub(super) fn pid_file(&self, name: &str) -> PathBuf {
        self.root.join("pids").join(format!("{name}.pid"))
    }
}

/// Ports, certificates and command lines, written to disk before anything starts.
pub(super) struct Plan {
    pub(super) layout: Layout,
    pub(super) bin: PathBuf,
    pub(super) etcd_client_port: u16,
    etcd_peer_port: u16,
    api_port: u16,
}

impl Plan {
    pub(super) fn prepare(layout: Layout, bin: PathBuf) -> Result<Self> {
        for sub in ["pki", "logs", "pids", "etcd"] {
            let dir = layout.root.join(sub);
            fs::create_dir_all(&dir).with_context(|| format!("create {sub} dir"))?;
            // Keys live in pki/; etcd refuses to be quiet about a data dir others can read.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        }
        let [etcd_client_port, etcd_peer_port, api_port] = free_ports()?;
        let plan = Self {
            layout,
            bin,
            etcd_client_port,
            etcd_peer_port,
            api_port,
        };
        plan.write_pki()?;
        plan.write_kubeconfig()?;
        Ok(plan)
    }

    pub(super) fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    fn write_pki(&self) -> Result<()> {
        let ca = TestCa::new("hermetic-kubernetes-ca");
        let serving = ca.leaf(
            "kube-apiserver",
            None,
            &[
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                KUBERNETES_SERVICE_IP,
            ],
        );
        let admin = ca.leaf("admin", Some("system:masters"), &[]);
        let service_account = rcgen::KeyPair::generate().context("generate service-account key")?;
        let files = [
            ("ca.crt", ca.pem.cert.clone()),
            ("apiserver.crt", serving.cert),
            ("apiserver.key", serving.key),
            ("admin.crt", admin.cert),
            ("admin.key", admin.key),
            ("sa.key", service_account.serialize_pem()),
            ("sa.pub", service_account.public_key_pem()),
        ];
        for (name, pem) in files {
            fs::write(self.layout.pki(name), pem).with_context(|| format!("write pki/{name}"))?;
        }
        Ok(())
    }

    fn write_kubeconfig(&self) -> Result<()> {
        let b64 = |file: &str| -> Result<String> {
            Ok(base64::engine::general_purpose::STANDARD.encode(fs::read(self.layout.pki(file))?))
        };
        // Certificates are embedded, so the file stays valid when copied elsewhere.
        let text = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: hermetic\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n\
             users:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n\
             contexts:\n- name: hermetic\n  context:\n    cluster: hermetic\n    user: admin\n\
             current-context: hermetic\n",
            self.url(),
            b64("ca.crt")?,
            b64("admin.crt")?,
            b64("admin.key")?,
        );
        fs::write(self.layout.kubeconfig(), text).context("write kubeconfig")
    }

    pub(super) fn etcd_args(&self) -> Vec<String> {
        let client = format!("http://127.0.0.1:{}", self.etcd_client_port);
        let peer = format!("http://127.0.0.1:{}", self.etcd_peer_port);
        vec![
            "--name=hermetic".into(),
            format!("--data-dir={}", self.layout.root.join("etcd").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=hermetic={peer}"),
            // Throw-away data: durability buys nothing and fsync dominates write latency.
            "--unsafe-no-fsync".into(),
            "--quota-backend-bytes=268435456".into(),
            "--log-level=warn".into(),
        ]
    }

    pub(super) fn apiserver_args(&self) -> Vec<String> {
        let pki = |file: &str| self.layout.pki(file).display().to_string();
        vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_client_port),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", self.api_port),
            format!("--tls-cert-file={}", pki("apiserver.crt")),
            format!("--tls-private-key-file={}", pki("apiserver.key")),
            format!("--client-ca-file={}", pki("ca.crt")),
            "--authorization-mode=Node,RBAC".into(),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!("--service-account-key-file={}", pki("sa.pub")),
            format!("--service-account-signing-key-file={}", pki("sa.key")),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--allow-privileged=true".into(),
            // The `kubernetes` Endpoints cannot hold a loopback address; nothing here routes to it.
            "--endpoint-reconciler-type=none".into(),
            "--profiling=false".into(),
        ]
    }
}

/// Loopback ports the kernel considers free right now (released again before use; a collision
/// surfaces as a bind error in the process log).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("reserve loopback ports")?;
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?;
    Ok(ports.try_into().expect("N ports"))
}
