//! Everything decided before a process starts: ports, certificates, kubeconfig, command lines.

use crate::pki::TestCa;
use anyhow::{Context, Result};
use base64::Engine;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// RFC 2544 benchmark space: routed nowhere, so a Service address can never leave the machine.
pub(crate) const SERVICE_CIDR: &str = "198.18.128.0/17";
/// First address of SERVICE_CIDR: the in-cluster `kubernetes` Service.
const KUBERNETES_SERVICE_IP: &str = "198.18.128.1";

/// Where the control plane listens.
#[derive(Clone, Copy)]
pub(crate) enum Placement {
    /// The caller's loopback on ports the kernel picks (apiserver mode; many may run at once).
    Loopback,
    /// Inside the node's own network namespace: etcd on its loopback, the apiserver on the node
    /// address (reachable from the host over the node's veth) on the standard ports.
    Node { address: Ipv4Addr },
}

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
    pub(crate) fn pki(&self, file: &str) -> PathBuf {
        self.root.join("pki").join(file)
    }
    pub(crate) fn log(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(format!("{name}.log"))
    }
    pub(crate) fn pid_file(&self, name: &str) -> PathBuf {
        self.root.join("pids").join(format!("{name}.pid"))
    }
}

/// Ports, certificates and command lines, written to disk before anything starts.
pub(crate) struct LaunchPlan {
    pub(crate) layout: Layout,
    pub(crate) bin: PathBuf,
    pub(crate) etcd_client_port: u16,
    etcd_peer_port: u16,
    api_port: u16,
    placement: Placement,
    /// Signs the certificates of further components (node mode: kubelet, controllers).
    pub(crate) ca: TestCa,
    /// Appended to kube-apiserver's flags (a later flag overrides an earlier one).
    pub(crate) extra_apiserver_args: Vec<String>,
}

impl LaunchPlan {
    pub(crate) fn prepare(layout: Layout, bin: PathBuf) -> Result<Self> {
        Self::prepare_for(layout, bin, Placement::Loopback)
    }

    pub(crate) fn prepare_for(layout: Layout, bin: PathBuf, placement: Placement) -> Result<Self> {
        for sub in ["pki", "logs", "pids", "etcd"] {
            let dir = layout.root.join(sub);
            fs::create_dir_all(&dir).with_context(|| format!("create {sub} dir"))?;
            // Keys live in pki/; etcd refuses to be quiet about a data dir others can read.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        }
        let [etcd_client_port, etcd_peer_port, api_port] = match placement {
            Placement::Loopback => free_ports()?,
            // A namespace of our own: nothing else can hold these ports.
            Placement::Node { .. } => [2379, 2380, 6443],
        };
        let plan = Self {
            layout,
            bin,
            etcd_client_port,
            etcd_peer_port,
            api_port,
            placement,
            ca: TestCa::new("hermetic-kubernetes-ca"),
            extra_apiserver_args: Vec::new(),
        };
        plan.write_pki()?;
        write_kubeconfig(&plan.layout.kubeconfig(), &plan.url(), &plan.layout, "admin")?;
        Ok(plan)
    }

    fn api_host(&self) -> String {
        match self.placement {
            Placement::Loopback => "127.0.0.1".into(),
            Placement::Node { address } => address.to_string(),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("https://{}:{}", self.api_host(), self.api_port)
    }

    fn write_pki(&self) -> Result<()> {
        let ca = &self.ca;
        let api_host = self.api_host();
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
                &api_host,
            ],
        );
        let admin = ca.leaf("admin", Some("system:masters"), &[]);
        let service_account = rcgen::KeyPair::generate().context("generate service-account key")?;
        let files = [
            ("ca.crt", ca.pem.cert.clone()),
            // The controller-manager signs CertificateSigningRequests with it (node mode).
            ("ca.key", ca.pem.key.clone()),
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

    pub(crate) fn etcd_args(&self) -> Vec<String> {
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

    pub(crate) fn apiserver_args(&self) -> Vec<String> {
        let pki = |file: &str| self.layout.pki(file).display().to_string();
        let host = self.api_host();
        let mut args = vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_client_port),
            format!("--bind-address={host}"),
            format!("--advertise-address={host}"),
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
            "--profiling=false".into(),
        ];
        match self.placement {
            // The `kubernetes` Endpoints cannot hold a loopback address; nothing here routes to it.
            Placement::Loopback => args.push("--endpoint-reconciler-type=none".into()),
            // Pods reach the apiserver through the `kubernetes` Service; logs and exec go to the kubelet.
            Placement::Node { .. } => args.extend([
                format!("--kubelet-client-certificate={}", pki("apiserver-kubelet-client.crt")),
                format!("--kubelet-client-key={}", pki("apiserver-kubelet-client.key")),
                "--kubelet-preferred-address-types=InternalIP".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
            ]),
        }
        args.extend(self.extra_apiserver_args.iter().cloned());
        args
    }

    /// Writes `pki/<name>.crt|key` for a client or server signed by the cluster CA.
    pub(crate) fn write_leaf(&self, name: &str, common_name: &str, org: Option<&str>, sans: &[&str]) -> Result<()> {
        let leaf = self.ca.leaf(common_name, org, sans);
        fs::write(self.layout.pki(&format!("{name}.crt")), leaf.cert)
            .with_context(|| format!("write pki/{name}.crt"))?;
        fs::write(self.layout.pki(&format!("{name}.key")), leaf.key).with_context(|| format!("write pki/{name}.key"))
    }
}

/// A kubeconfig at `path` for the identity in `pki/<identity>.crt|key`. Certificates are embedded,
/// so the file stays valid when copied elsewhere.
pub(crate) fn write_kubeconfig(path: &Path, server: &str, layout: &Layout, identity: &str) -> Result<()> {
    let b64 = |file: &str| -> Result<String> {
        let pem = fs::read(layout.pki(file)).with_context(|| format!("read pki/{file}"))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(pem))
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: hermetic\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\n\
         users:\n- name: {identity}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n\
         contexts:\n- name: hermetic\n  context:\n    cluster: hermetic\n    user: {identity}\n\
         current-context: hermetic\n",
        b64("ca.crt")?,
        b64(&format!("{identity}.crt"))?,
        b64(&format!("{identity}.key"))?,
    );
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
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
