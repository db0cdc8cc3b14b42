//! Which state dir the machine's node belongs to. The namespace, veth and cgroup names are
//! machine-wide, so a `cluster-down` (or an `apiserver-up` cleaning its leftovers) in another
//! checkout must not tear down this one's node.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

const OWNER_FILE: &str = "/run/openbao-node.owner";

pub(super) fn get() -> Option<PathBuf> {
    let text = std::fs::read_to_string(OWNER_FILE).ok()?;
    Some(PathBuf::from(text.trim()))
}

pub(super) fn set(root: &Path) -> Result<()> {
    std::fs::write(OWNER_FILE, root.display().to_string()).with_context(|| format!("write {OWNER_FILE}"))
}

pub(super) fn clear() -> Result<()> {
    match std::fs::remove_file(OWNER_FILE) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err).context(format!("remove {OWNER_FILE}")),
        _ => Ok(()),
    }
}
