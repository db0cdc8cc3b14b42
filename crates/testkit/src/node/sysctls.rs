//! kubelet sets a few machine-wide kernel settings when it starts (it cannot be told not to:
//! `protectKernelDefaults` only turns the change into a start failure). We record the host's
//! values before the node starts and put them back on teardown.

use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// The settings kubelet's container manager writes (`setupKernelTunables`).
const KUBELET_TUNABLES: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

fn record(root: &Path) -> PathBuf {
    root.join("host-sysctls")
}

/// Records the current values, unless a record from an earlier start is still there (those are
/// the host's own values; the current ones may already be kubelet's).
pub(super) fn save(root: &Path) -> Result<()> {
    let path = record(root);
    if path.exists() {
        return Ok(());
    }
    let mut text = String::new();
    for key in KUBELET_TUNABLES {
        if let Ok(value) = fs::read_to_string(Path::new("/proc/sys").join(key)) {
            text.push_str(&format!("{key} {}\n", value.trim()));
        }
    }
    fs::create_dir_all(root)?;
    fs::write(&path, text).with_context(|| format!("write {}", path.display()))
}

pub(super) fn restore(root: &Path) -> Result<()> {
    let path = record(root);
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(());
    };
    for (key, value) in text.lines().filter_map(|l| l.split_once(' ')) {
        let target = Path::new("/proc/sys").join(key);
        if fs::read_to_string(&target).is_ok_and(|now| now.trim() != value) {
            fs::write(&target, value).with_context(|| format!("restore {}", target.display()))?;
        }
    }
    fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))
}
