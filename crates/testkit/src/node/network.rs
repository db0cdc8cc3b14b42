//! The node's network namespace and its only link, a veth pair to the host. The host routes the
//! pod and Service ranges into the namespace, so tests reach Services and NodePorts by address;
//! the namespace has no default route, so nothing inside reaches past the host.

use super::workers::Worker;
use super::{HOST_IP, NODE_IP, NODE_NAME};
use anyhow::{Context, Result, bail};
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

const NETNS: &str = NODE_NAME;
const NETNS_PATH: &str = "/run/netns/openbao-node";
const HOST_VETH: &str = "obn-host";
const NODE_VETH: &str = "obn-node";
/// Pods (198.18.0.0/17) and Services (198.18.128.0/17) together.
const HOST_ROUTE: &str = "198.18.0.0/16";
/// The whole benchmark range, node addresses included. While the node exists its more specific
/// routes win; if the namespace vanishes, traffic for it fails here instead of following the
/// host's default route out of the machine.
const SAFETY_ROUTE: &str = "198.18.0.0/15";

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `ip` for cleanup: a missing object is fine.
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

pub(super) fn create() -> Result<()> {
    let host_cidr = format!("{HOST_IP}/30");
    let node_cidr = format!("{NODE_IP}/30");
    let node_ip = NODE_IP.to_string();
    ip(&["route", "add", "unreachable", SAFETY_ROUTE])?;
    ip(&["netns", "add", NETNS])?;
    ip(&[
        "link", "add", HOST_VETH, "type", "veth", "peer", "name", NODE_VETH, "netns", NETNS,
    ])?;
    ip(&["addr", "add", &host_cidr, "dev", HOST_VETH])?;
    ip(&["link", "set", HOST_VETH, "up"])?;
    ip(&["-n", NETNS, "link", "set", "lo", "up"])?;
    ip(&["-n", NETNS, "addr", "add", &node_cidr, "dev", NODE_VETH])?;
    ip(&["-n", NETNS, "link", "set", NODE_VETH, "up"])?;
    ip(&["route", "add", HOST_ROUTE, "via", &node_ip, "dev", HOST_VETH])?;
    forwarding_settings(NETNS)
}

/// Deleting the namespace also deletes its veth end, and with it the host end and the route.
/// Each is also removed by name in case the namespace is already gone. Workers' namespaces go
/// first: they hang off this one.
pub(super) fn delete() -> Result<()> {
    for worker in existing_workers() {
        delete_worker(&worker)?;
    }
    ip_quiet(&["route", "del", WORKER_LINKS]);
    ip_quiet(&["route", "del", HOST_ROUTE, "dev", HOST_VETH]);
    ip_quiet(&["link", "del", HOST_VETH]);
    delete_netns(NETNS)?;
    ip_quiet(&["route", "del", "unreachable", SAFETY_ROUTE]);
    Ok(())
}

fn netns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

fn delete_netns(name: &str) -> Result<()> {
    let path = netns_path(name);
    if fs::metadata(&path).is_ok() {
        kill_processes_in(name)?;
        ip(&["netns", "del", name])?;
    }
    if fs::metadata(&path).is_ok() {
        bail!("network namespace {name} still present after `ip netns del`");
    }
    Ok(())
}

/// The links of all workers: the host reaches a worker's kubelet and NodePorts through the node.
const WORKER_LINKS: &str = "198.19.254.0/24";
/// Inside a worker: every benchmark address (pods and Services of all nodes, the host, the
/// apiserver, other workers) is reached through the first node, which routes between them.
const WORKER_ROUTE: &str = "198.18.0.0/15";

/// The worker namespaces that exist (named `openbao-node-<n>`), for teardown.
pub(super) fn existing_workers() -> Vec<Worker> {
    (1..=super::workers::MAX_WORKERS)
        .map(Worker::new)
        .filter(|w| fs::metadata(netns_path(&w.name())).is_ok())
        .collect()
}

/// A worker's network namespace, linked to the first node by a veth pair (the first node
/// routes the worker's pod range to it, the worker routes everything else back), with the same
/// forwarding settings as the first node. Idempotent: an existing namespace is kept.
pub(super) fn create_worker(worker: &Worker) -> Result<()> {
    let name = worker.name();
    if fs::metadata(netns_path(&name)).is_ok() {
        return Ok(());
    }
    let node_side = worker.gateway().to_string();
    let worker_ip = worker.ip().to_string();
    let node_link = worker.link_name();
    ip(&["netns", "add", &name])?;
    ip(&[
        "-n", NETNS, "link", "add", &node_link, "type", "veth", "peer", "name", NODE_VETH, "netns", &name,
    ])?;
    ip(&[
        "-n",
        NETNS,
        "addr",
        "add",
        &format!("{node_side}/30"),
        "dev",
        &node_link,
    ])?;
    ip(&["-n", NETNS, "link", "set", &node_link, "up"])?;
    ip(&["-n", NETNS, "route", "add", &worker.pod_cidr(), "via", &worker_ip])?;
    ip(&["-n", &name, "link", "set", "lo", "up"])?;
    ip(&["-n", &name, "addr", "add", &format!("{worker_ip}/30"), "dev", NODE_VETH])?;
    ip(&["-n", &name, "link", "set", NODE_VETH, "up"])?;
    ip(&["-n", &name, "route", "add", WORKER_ROUTE, "via", &node_side])?;
    if !Command::new("ip")
        .args(["route", "show", WORKER_LINKS])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
    {
        ip(&[
            "route",
            "add",
            WORKER_LINKS,
            "via",
            &NODE_IP.to_string(),
            "dev",
            HOST_VETH,
        ])?;
    }
    forwarding_settings(&name)?;
    keep_host_address_to_workers()
}

/// The host's connections to Services keep the host's address when the first node forwards them
/// to a pod on a worker. kube-proxy would masquerade them (the host is outside the pod range) to
/// the first node's end of the link, an address that is not local on the worker, so the worker's
/// NetworkPolicy engine would judge them as from an unknown node; with the host's own address
/// they meet the policies the operator renders for an operator on the host (its
/// `external_source_cidrs`). On the first node itself kube-proxy's masquerade is left alone (the
/// bridge's address is local there, which its engine admits).
fn keep_host_address_to_workers() -> Result<()> {
    let host = format!("{HOST_IP}/32");
    let rule = ["POSTROUTING", "-s", &host, "-o", "obn-w+", "-j", "RETURN"];
    let iptables = |verb: &'static str| -> Vec<&str> {
        let mut args = vec!["netns", "exec", NETNS, "iptables", "-w", "-t", "nat", verb];
        args.extend(rule);
        args
    };
    // `-C` fails when the rule is missing: only then is it inserted.
    if ip(&iptables("-C")).is_ok() {
        return Ok(());
    }
    ip(&iptables("-I"))
}

/// Removes a worker's namespace; its veth ends and the first node's route to its pods go with it.
pub(super) fn delete_worker(worker: &Worker) -> Result<()> {
    ip_quiet(&["-n", NETNS, "link", "del", &worker.link_name()]);
    delete_netns(&worker.name())
}

/// A node forwards between its link and its pod bridge, and bridged pod traffic passes iptables
/// so kube-proxy's Service rules apply pod to pod (per-namespace settings).
fn forwarding_settings(netns: &str) -> Result<()> {
    ip(&[
        "netns",
        "exec",
        netns,
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_forward=1",
        "net.bridge.bridge-nf-call-iptables=1",
        "net.bridge.bridge-nf-call-ip6tables=1",
    ])
    .with_context(|| format!("forwarding settings of netns {netns} (is br_netfilter available?)"))
}

/// Moves the calling thread into the node namespace.
pub(super) fn enter() -> Result<()> {
    let file = fs::File::open(NETNS_PATH).with_context(|| format!("open {NETNS_PATH}"))?;
    // SAFETY: setns(2) with a namespace descriptor we opened; affects the calling thread only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns into the node network namespace");
    }
    Ok(())
}

/// An open handle of worker `name`'s namespace, for a child to `setns` into before it execs.
pub(super) fn open_worker_netns(worker: &Worker) -> Result<fs::File> {
    let path = netns_path(&worker.name());
    fs::File::open(&path).with_context(|| format!("open {path}"))
}

/// Kills whatever still runs inside the node namespace (anything that escaped the cgroup, or
/// a shell someone opened with `ip netns exec`): the namespace must be empty to go away.
pub(super) fn kill_processes_inside() -> Result<()> {
    kill_processes_in(NETNS)
}

fn kill_processes_in(netns: &str) -> Result<()> {
    let Ok(ns) = fs::metadata(netns_path(netns)) else {
        return Ok(());
    };
    let me = std::process::id() as i32;
    for attempt in 0..50 {
        let pids: Vec<i32> = fs::read_dir("/proc")?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != me)
            .filter(|pid| {
                fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ns.ino() && m.dev() == ns.dev())
            })
            .collect();
        if pids.is_empty() {
            return Ok(());
        }
        for pid in &pids {
            // SAFETY: kill(2); these processes belong to the node we are tearing down.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    bail!("processes keep running in network namespace {netns}")
}
