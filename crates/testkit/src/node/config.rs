//! Files and command lines of the node's components, all under the state directory: nothing is
//! written to /etc or /var/lib, so teardown only has to remove one directory.

use super::{
    CLUSTER_DNS_IP, CLUSTER_DOMAIN, NODE_IP, NODE_NAME, NODE_POD_CIDR, POD_CIDR, SERVICE_CIDR, cgroups, workers,
};
use crate::apiserver::Layout;
use crate::apiserver::plan::{LaunchPlan, write_kubeconfig};
use anyhow::{Context, Result};
use serde_json::json;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Who a node is: the name, address, pod range and cgroup its kubelet, kube-proxy, CNI and
/// NetworkPolicy engine are configured with.
pub(super) struct NodeIdentity {
    pub(super) name: String,
    pub(super) ip: Ipv4Addr,
    pub(super) pod_cidr: String,
    pub(super) cgroup_root: String,
    /// The file name (under `pki/`) of its kubelet's client certificate, and of its serving one.
    pub(super) kubelet_client: String,
    pub(super) kubelet_serving: String,
}

impl NodeIdentity {
    /// The first node: control plane and kubelet in `openbao-node`.
    pub(super) fn first() -> Self {
        Self {
            name: NODE_NAME.into(),
            ip: NODE_IP,
            pod_cidr: NODE_POD_CIDR.into(),
            cgroup_root: cgroups::root_name(),
            kubelet_client: "kubelet".into(),
            kubelet_serving: "kubelet-serving".into(),
        }
    }
}

/// The pause image containerd starts every pod sandbox from (hack/images.sh builds it).
pub(super) const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.1";
const CNI_NETWORK: &str = "openbao-node";
const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// Where each component keeps its files.
pub(super) struct NodePaths {
    root: PathBuf,
}

impl NodePaths {
    pub(super) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    fn config(&self, file: &str) -> PathBuf {
        self.root.join("config").join(file)
    }
    pub(super) fn kubeconfig_of(&self, component: &str) -> PathBuf {
        self.config(&format!("{component}.kubeconfig"))
    }
    pub(super) fn containerd_config(&self) -> PathBuf {
        self.root.join("containerd/config.toml")
    }
    pub(super) fn containerd_socket(&self) -> PathBuf {
        self.root.join("containerd/containerd.sock")
    }
    pub(super) fn containerd_state(&self) -> PathBuf {
        self.root.join("containerd/state")
    }
    fn cni_conf_dir(&self) -> PathBuf {
        self.root.join("cni/net.d")
    }
    fn kubelet_dir(&self) -> PathBuf {
        self.root.join("kubelet")
    }
    /// Where local-path volumes live on the node.
    pub(super) fn storage(&self) -> PathBuf {
        self.root.join("storage")
    }
    /// kubelet's pod log directory; kubelet links `/var/log/containers/*` into it.
    pub(super) fn pod_logs(&self) -> PathBuf {
        self.root.join("pod-logs")
    }
}

/// Certificates, kubeconfigs and configuration files of everything but etcd and the apiserver
/// (the apiserver's kubelet-client certificate included: it must exist before the apiserver starts).
/// The kubelet certificates of every possible worker are made here too, while the CA is at hand.
pub(super) fn write_all(plan: &LaunchPlan, paths: &NodePaths) -> Result<()> {
    let first = NodeIdentity::first();
    let shared = [
        ("kube-controller-manager", "system:kube-controller-manager"),
        ("kube-scheduler", "system:kube-scheduler"),
        ("kube-proxy", "system:kube-proxy"),
        (NETWORK_POLICY_ENGINE, NETWORK_POLICY_ENGINE_USER),
    ];
    for (name, common_name) in shared {
        plan.write_leaf(name, common_name, None, &[])?;
    }
    plan.write_leaf(
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        Some("system:masters"),
        &[],
    )?;
    let workers = (1..=workers::MAX_WORKERS).map(|i| workers::Worker::new(i).identity());
    for node in std::iter::once(NodeIdentity::first()).chain(workers) {
        let ip = node.ip.to_string();
        plan.write_leaf(
            &node.kubelet_client,
            &format!("system:node:{}", node.name),
            Some("system:nodes"),
            &[],
        )?;
        plan.write_leaf(&node.kubelet_serving, &node.name, None, &[&node.name, &ip])?;
    }
    write_node_files(&plan.layout, &plan.url(), &first, paths)?;
    for name in ["kube-controller-manager", "kube-scheduler"] {
        write_kubeconfig(&paths.kubeconfig_of(name), &plan.url(), &plan.layout, name)?;
    }
    Ok(())
}

/// The files of one node's own components (containerd, CNI, kubelet, kube-proxy, the
/// NetworkPolicy engine) under `paths`, with the certificates already in `layout`'s `pki/`.
pub(super) fn write_node_files(layout: &Layout, server: &str, node: &NodeIdentity, paths: &NodePaths) -> Result<()> {
    for dir in [
        paths.root.join("config"),
        paths.root.join("containerd"),
        paths.cni_conf_dir(),
        paths.kubelet_dir(),
        paths.storage(),
        paths.pod_logs(),
    ] {
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    }
    write_kubeconfig(&paths.kubeconfig_of("kubelet"), server, layout, &node.kubelet_client)?;
    for name in ["kube-proxy", NETWORK_POLICY_ENGINE] {
        write_kubeconfig(&paths.kubeconfig_of(name), server, layout, name)?;
    }
    let files = [
        (paths.containerd_config(), containerd_toml(paths)),
        (
            paths.cni_conf_dir().join("10-openbao-node.conflist"),
            cni_conflist(paths, node),
        ),
        (paths.config("kubelet.yaml"), kubelet_yaml(layout, paths, node)),
        (paths.config("kube-proxy.yaml"), kube_proxy_yaml(paths, node)),
        (paths.config("resolv.conf"), resolv_conf()),
    ];
    for (path, text) in files {
        fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

fn containerd_toml(paths: &NodePaths) -> String {
    let dir = paths.root.join("containerd");
    let d = |sub: &str| dir.join(sub).display().to_string();
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{socket}"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Streaming (exec, logs, port-forward) on the node namespace's loopback; kubelet proxies it.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  # This machine's root lacks CAP_SYS_RESOURCE, so no process may lower its OOM score below
  # containerd's own; clamp what kubelet asks for (e.g. -998 for sandboxes) instead of failing.
  restrict_oom_score_adj = true
  # Pod network namespaces under our state dir instead of /run/netns.
  netns_mounts_under_state_dir = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "{runc}"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni}"
"#,
        root = d("root"),
        state = paths.containerd_state().display(),
        socket = paths.containerd_socket().display(),
        opt = d("opt"),
        runc = d("runc"),
        cni = paths.cni_conf_dir().display(),
    )
}

/// A bridge with the node as the pods' gateway; host-local keeps its leases under our state.
fn cni_conflist(paths: &NodePaths, node: &NodeIdentity) -> String {
    let ipam_dir = paths.root.join("cni/ipam");
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": node.pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    serde_json::to_string_pretty(&conf).expect("CNI config serializes")
}

fn kubelet_yaml(layout: &Layout, paths: &NodePaths, node: &NodeIdentity) -> String {
    let pki = |f: &str| layout.pki(f).display().to_string();
    let kubelet = paths.kubelet_dir();
    let config = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.ip.to_string(),
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": pki(&format!("{}.crt", node.kubelet_serving)),
        "tlsPrivateKeyFile": pki(&format!("{}.key", node.kubelet_serving)),
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": pki("ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": format!("unix://{}", paths.containerd_socket().display()),
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup_root,
        "cgroupsPerQOS": true,
        // The host is cgroup v1 (hybrid); kubelet 1.35+ refuses that unless told otherwise.
        "failCgroupV1": false,
        "failSwapOn": false,
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [CLUSTER_DNS_IP],
        "resolvConf": paths.config("resolv.conf"),
        "podLogsDir": paths.pod_logs(),
        "volumePluginDir": kubelet.join("volume-plugins"),
        "rotateCertificates": false,
        "serverTLSBootstrap": false,
        // Our images cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        // A shared build machine's disk fills and empties; do not evict test pods over it.
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "serializeImagePulls": false,
        "nodeStatusUpdateFrequency": "5s",
        // How soon a changed Secret reaches a mounted volume (a pod's periodic sync; 1m by
        // default): tests of certificate hot reload wait for it.
        "syncFrequency": "15s",
        "maxPods": 110,
        // Negative OOM scores need CAP_SYS_RESOURCE (see restrict_oom_score_adj above).
        "oomScoreAdj": 0,
    });
    serde_json::to_string_pretty(&config).expect("kubelet config serializes")
}

fn kube_proxy_yaml(paths: &NodePaths, node: &NodeIdentity) -> String {
    let config = json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": paths.kubeconfig_of("kube-proxy")},
        "hostnameOverride": node.name,
        "bindAddress": node.ip.to_string(),
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "nodePortAddresses": [format!("{}/32", node.ip)],
        // The conntrack table size is machine-wide: leave the host's alone.
        "conntrack": {"maxPerCore": 0, "min": 0},
        "oomScoreAdj": 0,
    });
    serde_json::to_string_pretty(&config).expect("kube-proxy config serializes")
}

/// What pods with `dnsPolicy: Default` (CoreDNS itself) get, and the base of every pod's
/// resolv.conf: only the cluster's DNS, so no name is ever looked up outside the node.
fn resolv_conf() -> String {
    format!("nameserver {CLUSTER_DNS_IP}\n")
}

pub(super) fn containerd_args(paths: &NodePaths) -> Vec<String> {
    vec!["--config".into(), paths.containerd_config().display().to_string()]
}

pub(super) fn controller_manager_args(plan: &LaunchPlan, paths: &NodePaths) -> Vec<String> {
    let pki = |f: &str| plan.layout.pki(f).display().to_string();
    let kubeconfig = paths.kubeconfig_of("kube-controller-manager").display().to_string();
    vec![
        format!("--kubeconfig={kubeconfig}"),
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        "--bind-address=127.0.0.1".into(),
        "--leader-elect=false".into(),
        "--use-service-account-credentials=true".into(),
        format!("--service-account-private-key-file={}", pki("sa.key")),
        format!("--root-ca-file={}", pki("ca.crt")),
        format!("--cluster-signing-cert-file={}", pki("ca.crt")),
        format!("--cluster-signing-key-file={}", pki("ca.key")),
        "--allocate-node-cidrs=true".into(),
        format!("--cluster-cidr={POD_CIDR}"),
        "--node-cidr-mask-size=24".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        format!("--cluster-name={NODE_NAME}"),
        "--controllers=*,bootstrapsigner,tokencleaner".into(),
        "--profiling=false".into(),
    ]
}

pub(super) fn scheduler_args(paths: &NodePaths) -> Vec<String> {
    let kubeconfig = paths.kubeconfig_of("kube-scheduler").display().to_string();
    vec![
        format!("--kubeconfig={kubeconfig}"),
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        "--bind-address=127.0.0.1".into(),
        "--leader-elect=false".into(),
        "--profiling=false".into(),
    ]
}

pub(super) fn kubelet_args(paths: &NodePaths, node: &NodeIdentity) -> Vec<String> {
    let kubelet = paths.kubelet_dir();
    vec![
        format!("--config={}", paths.config("kubelet.yaml").display()),
        format!("--kubeconfig={}", paths.kubeconfig_of("kubelet").display()),
        format!("--root-dir={}", kubelet.display()),
        format!("--cert-dir={}", kubelet.join("pki").display()),
        format!("--volume-plugin-dir={}", kubelet.join("volume-plugins").display()),
        format!("--hostname-override={}", node.name),
        format!("--node-ip={}", node.ip),
        "--v=1".into(),
    ]
}

/// The NetworkPolicy engine's process name, and the user its client certificate names (bound to
/// what it may read by `manifests/network-policy.yaml`).
pub(super) const NETWORK_POLICY_ENGINE: &str = "kube-router";
pub(super) const NETWORK_POLICY_ENGINE_USER: &str = "system:hermetic-node:kube-router";

/// kube-router as a NetworkPolicy engine only: no routing (the bridge CNI does it), no service
/// proxy (kube-proxy does it). It reads the node's pods and policies and programs iptables and
/// ipsets in the node's namespace; traffic a policy refuses is rejected, so a refused connection
/// fails at once instead of timing out.
pub(super) fn network_policy_engine_args(paths: &NodePaths, node: &NodeIdentity) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", paths.kubeconfig_of(NETWORK_POLICY_ENGINE).display()),
        format!("--hostname-override={}", node.name),
        "--run-firewall=true".into(),
        "--run-router=false".into(),
        "--run-service-proxy=false".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        // No health endpoint (it would listen on every address); boot waits for its chains.
        "--health-port=0".into(),
        "--metrics-port=0".into(),
        "--v=1".into(),
    ]
}

pub(super) fn kube_proxy_args(paths: &NodePaths) -> Vec<String> {
    vec![format!("--config={}", paths.config("kube-proxy.yaml").display())]
}
