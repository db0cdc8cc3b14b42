//! The node's cgroup `/openbao-node` (cgroup v1, cgroupfs driver). kubelet uses it as its
//! `cgroupRoot` (pods go below `kubepods`), and the node's own daemons join `system` in the freezer
//! hierarchy, so the node's processes are exactly that subtree: teardown freezes it, kills every
//! task and removes the directories. A worker node (`super::workers`) has the same shape one level
//! down, `/openbao-node/<worker>`: killing that subtree is the worker losing its power, and the
//! node's teardown still finds every process below `/openbao-node`.

use super::NODE_NAME;
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CGROUP_FS: &str = "/sys/fs/cgroup";

/// kubelet's `cgroupRoot` of the first node.
pub(super) fn root_name() -> String {
    format!("/{NODE_NAME}")
}

/// kubelet's `cgroupRoot` of worker `name`: inside the first node's subtree.
pub(super) fn worker_root_name(name: &str) -> String {
    format!("/{NODE_NAME}/{name}")
}

/// The mounted v1 hierarchies (`cpu`, `memory`, `name=systemd`, ...) and the v2 one of a hybrid
/// host: every directory under /sys/fs/cgroup that is a cgroup.
fn hierarchies() -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(CGROUP_FS)
        .with_context(|| format!("read {CGROUP_FS}"))?
        .flatten()
        .map(|e| e.path())
        // Skip symlinks such as cpu,cpuacct -> cpu: the same hierarchy twice.
        .filter(|p| p.is_dir() && !p.is_symlink() && p.join("cgroup.procs").exists())
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn is_v1(hierarchy: &Path) -> bool {
    hierarchy.file_name().is_some_and(|n| n != "unified")
}

/// `cgroup_root` (e.g. `/openbao-node`) in the freezer hierarchy.
fn freezer(cgroup_root: &str) -> PathBuf {
    Path::new(CGROUP_FS)
        .join("freezer")
        .join(cgroup_root.trim_start_matches('/'))
}

pub(super) fn create() -> Result<()> {
    create_subtree(&root_name())
}

/// The cgroup `cgroup_root` in every v1 hierarchy, with a `system` freezer cgroup for its daemons.
pub(super) fn create_subtree(cgroup_root: &str) -> Result<()> {
    if !Path::new(CGROUP_FS).join("freezer/cgroup.procs").exists() {
        bail!(
            "node mode needs the cgroup v1 freezer hierarchy at {CGROUP_FS}/freezer (this host: {}); \
             a cgroup v2-only host is not supported yet",
            hierarchies()?
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let relative = Path::new(cgroup_root.trim_start_matches('/'));
    for hierarchy in hierarchies()?.into_iter().filter(|h| is_v1(h)) {
        // Each level is created in turn: a new v1 cpuset starts with no CPUs and no memory
        // nodes, and nothing could join it (or a child of it) until they are copied down.
        let mut parent = hierarchy.clone();
        for part in relative.components() {
            let dir = parent.join(part);
            fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            if hierarchy.ends_with("cpuset") {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let value = fs::read_to_string(parent.join(file))?;
                    fs::write(dir.join(file), value.trim())
                        .with_context(|| format!("write {}", dir.join(file).display()))?;
                }
            }
            parent = dir;
        }
        // `cpu` or `cpu,cpuacct`, whichever this host mounts.
        if hierarchy.join("cpu.shares").exists() {
            give_a_machines_weight(&parent)?;
        }
    }
    fs::create_dir_all(freezer(cgroup_root).join("system")).context("create the freezer cgroup for the node's daemons")
}

/// The CPU weight of a node's cgroup: that of a machine with this host's cores, as kubelet
/// weighs its `kubepods` (1024 shares per core). With the v1 default of 1024, every pod of a
/// node together weighed as much as one busy process of the host (the apiserver, a compiler, a
/// test's own loop), so on a loaded host OpenBao servers stalled for seconds, starved by
/// construction rather than by anything they or the operator did.
fn give_a_machines_weight(cpu_cgroup: &Path) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shares = cpu_cgroup.join("cpu.shares");
    fs::write(&shares, (1024 * cores).to_string()).with_context(|| format!("write {}", shares.display()))
}

/// Moves `pid` (with its threads) into the node's daemon cgroup; its children inherit it.
pub(super) fn join_system(pid: u32) -> Result<()> {
    let procs = daemon_procs(&root_name());
    fs::write(&procs, pid.to_string()).with_context(|| format!("join {}", procs.display()))
}

/// The `cgroup.procs` file of the daemons of `cgroup_root`; writing "0" to it moves the writer.
pub(super) fn daemon_procs(cgroup_root: &str) -> PathBuf {
    freezer(cgroup_root).join("system/cgroup.procs")
}

/// Every cgroup directory of the subtree at `dir`, parents before children.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = fs::read_dir(&out[i]) {
            let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
            children.sort();
            out.extend(children);
        }
        i += 1;
    }
    out
}

fn tasks(dir: &Path) -> Vec<i32> {
    subtree(dir)
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<_>>())
        .collect()
}

fn kill(pids: &[i32]) {
    for pid in pids {
        // SAFETY: kill(2) on tasks of the node's own cgroup.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
}

/// Kills every process of the node, its workers included.
pub(super) fn kill_all() -> Result<()> {
    kill_subtree(&root_name())
}

/// Freezes the subtree `cgroup_root` (so nothing forks or restarts while we kill), SIGKILLs every
/// task, thaws it and waits until all tasks are gone, in every hierarchy.
pub(super) fn kill_subtree(cgroup_root: &str) -> Result<()> {
    let relative = cgroup_root.trim_start_matches('/');
    let frozen = freezer(cgroup_root);
    if frozen.exists() {
        let state = frozen.join("freezer.state");
        fs::write(&state, "FROZEN").with_context(|| format!("freeze {}", frozen.display()))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::read_to_string(&state).is_ok_and(|s| s.trim() != "FROZEN") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        kill(&tasks(&frozen));
        fs::write(&state, "THAWED").with_context(|| format!("thaw {}", frozen.display()))?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<i32> = hierarchies()?
            .iter()
            .map(|h| h.join(relative))
            .filter(|d| d.exists())
            .flat_map(|d| tasks(&d))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("tasks {left:?} survive SIGKILL in the {cgroup_root} cgroups");
        }
        kill(&left);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes the node's (empty) subtree in every hierarchy, children first.
pub(super) fn remove() -> Result<()> {
    remove_subtree(&root_name())
}

/// Removes the (empty) subtree `cgroup_root` in every hierarchy, children first.
pub(super) fn remove_subtree(cgroup_root: &str) -> Result<()> {
    for hierarchy in hierarchies()? {
        let top = hierarchy.join(cgroup_root.trim_start_matches('/'));
        if !top.exists() {
            continue;
        }
        for dir in subtree(&top).iter().rev() {
            // An emptied cgroup can stay busy for a moment while the kernel finishes the exits.
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Err(err) = fs::remove_dir(dir) {
                if err.kind() == std::io::ErrorKind::NotFound {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(err).with_context(|| format!("remove cgroup {}", dir.display()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(())
}
