//! Files the node's components write outside the state dir no matter how they are configured:
//! containerd's shim sockets in /run/containerd/s, libcni's result cache in /var/lib/cni, kubelet's
//! log links in /var/log/containers and its default flexvolume directory. Teardown removes ours
//! (and the directories when they are left empty); a SIGKILLed node cannot clean them itself.

use super::config::NodePaths;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

const SHIM_SOCKETS: &str = "/run/containerd/s";
const CNI_RESULTS: &str = "/var/lib/cni/results";
const CONTAINER_LOG_LINKS: &str = "/var/log/containers";
const FLEXVOLUME_DIR: &str = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec";

/// Ids of every container and sandbox containerd still has a task directory for, per namespace.
fn tasks(paths: &NodePaths) -> Vec<(String, String)> {
    let tasks_dir = paths.containerd_state().join("io.containerd.runtime.v2.task");
    let mut out = Vec::new();
    for ns in fs::read_dir(&tasks_dir).into_iter().flatten().flatten() {
        for task in fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            out.push((
                ns.file_name().to_string_lossy().into_owned(),
                task.file_name().to_string_lossy().into_owned(),
            ));
        }
    }
    out
}

/// containerd 1.6 names a shim's socket after sha256("<containerd address>/<namespace>/<id>").
fn shim_socket(containerd_address: &Path, namespace: &str, id: &str) -> PathBuf {
    let key = format!("{}/{namespace}/{id}", containerd_address.display());
    let digest = Sha256::digest(key.as_bytes());
    Path::new(SHIM_SOCKETS).join(hex::encode(digest))
}

/// Removes `dir` and then its parents up to (excluding) `stop` while they are empty.
fn remove_empty_chain(dir: &Path, stop: &Path) {
    let mut current = Some(dir);
    while let Some(d) = current.filter(|d| *d != stop) {
        if fs::remove_dir(d).is_err() {
            break;
        }
        current = d.parent();
    }
}

/// The shim sockets of the node's tasks: what a reboot clears (they live in /run), so a node
/// that lost its power (`workers::kill`) loses them too. Its containerd, started again, cleans up
/// the dead tasks themselves.
pub(super) fn remove_shim_sockets(root: &Path) {
    let paths = NodePaths::new(root);
    for (namespace, id) in &tasks(&paths) {
        let _ = fs::remove_file(shim_socket(&paths.containerd_socket(), namespace, id));
    }
    remove_empty_chain(Path::new(SHIM_SOCKETS), Path::new("/run"));
}

pub(super) fn remove(root: &Path) {
    let paths = NodePaths::new(root);
    remove_shim_sockets(root);
    let tasks = tasks(&paths);
    for (_, id) in &tasks {
        for result in fs::read_dir(CNI_RESULTS).into_iter().flatten().flatten() {
            if result.file_name().to_string_lossy().contains(&format!("-{id}-")) {
                let _ = fs::remove_file(result.path());
            }
        }
    }
    remove_empty_chain(Path::new(CNI_RESULTS), Path::new("/var/lib"));
    let pod_logs = paths.pod_logs();
    for link in fs::read_dir(CONTAINER_LOG_LINKS).into_iter().flatten().flatten() {
        if fs::read_link(link.path()).is_ok_and(|target| target.starts_with(&pod_logs)) {
            let _ = fs::remove_file(link.path());
        }
    }
    remove_empty_chain(Path::new(CONTAINER_LOG_LINKS), Path::new("/var/log"));
    remove_empty_chain(Path::new(FLEXVOLUME_DIR), Path::new("/usr/libexec"));
}

#[cfg(test)]
mod tests {
    use super::shim_socket;
    use std::path::Path;

    #[test]
    fn shim_socket_matches_containerd_naming() {
        // Observed on this machine: containerd 1.6.20 with the address below.
        let socket = shim_socket(
            Path::new("/work/main/.cluster/containerd/containerd.sock"),
            "k8s.io",
            "0e7ca9f1a1fa7327dc5c394faca7babf72a7efd8a065a74920fda991cbb4dcb6",
        );
        assert_eq!(
            socket,
            Path::new("/run/containerd/s/92ae6dfa352a9efa15bc8d06ce8ac9c7fb8f4c9b5cc53491616ffa6051926106")
        );
    }
}
