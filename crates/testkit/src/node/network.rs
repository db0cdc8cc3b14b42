//! The node's network namespace and its only link, a veth pair to the host. The host routes the
//! pod and Service ranges into the namespace, so tests reach Services and NodePorts by address;
//! the namespace has no default route, so nothing inside reaches past the host.

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
    // Per-namespace settings: the node forwards between veth and the pod bridge, and bridged pod
    // traffic passes iptables so kube-proxy's Service rules apply pod to pod.
    let out = Command::new("ip")
        .args(["netns", "exec", NETNS, "sysctl", "-q", "-w"])
        .args([
            "net.ipv4.ip_forward=1",
            "net.bridge.bridge-nf-call-iptables=1",
            "net.bridge.bridge-nf-call-ip6tables=1",
        ])
        .output()
        .context("run sysctl in the node namespace")?;
    if !out.status.success() {
        bail!(
            "sysctl in netns {NETNS} failed (is br_netfilter available?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Deleting the namespace also deletes its veth end, and with it the host end and the route.
/// Each is also removed by name in case the namespace is already gone.
pub(super) fn delete() -> Result<()> {
    ip_quiet(&["route", "del", HOST_ROUTE, "dev", HOST_VETH]);
    ip_quiet(&["link", "del", HOST_VETH]);
    if fs::metadata(NETNS_PATH).is_ok() {
        ip(&["netns", "del", NETNS])?;
    }
    if fs::metadata(NETNS_PATH).is_ok() {
        bail!("network namespace {NETNS} still present after `ip netns del`");
    }
    ip_quiet(&["route", "del", "unreachable", SAFETY_ROUTE]);
    Ok(())
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

/// Kills whatever still runs inside the node namespace (anything that escaped the cgroup, or
/// a shell someone opened with `ip netns exec`): the namespace must be empty to go away.
pub(super) fn kill_processes_inside() -> Result<()> {
    let Ok(ns) = fs::metadata(NETNS_PATH) else {
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
    bail!("processes keep running in network namespace {NETNS}")
}
