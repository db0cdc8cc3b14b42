//! One node per machine: its namespace, veth and cgroup names are machine-wide, so `cluster-up`
//! and `cluster-down` (from make, tests or both at once) take turns on a lock file.

use anyhow::{Context, Result};
use std::fs::File;
use std::os::fd::AsRawFd;

const LOCK_FILE: &str = "/run/openbao-node.lock";

/// Held until dropped (closing the file releases the lock). The file is opened close-on-exec,
/// so the node's daemons do not inherit it.
pub(super) struct NodeLock(#[allow(dead_code)] File);

pub(super) fn exclusive() -> Result<NodeLock> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .with_context(|| format!("open {LOCK_FILE}"))?;
    // SAFETY: flock(2) on a descriptor we own; blocks until the other holder is done.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("lock {LOCK_FILE}"));
    }
    Ok(NodeLock(file))
}
