//! kubelet and containerd mount below the state directory: kubelet's root dir bind-mounted onto
//! itself (rshared), tmpfs for Secret and projected volumes, the containers' overlay root
//! filesystems, sandbox /dev/shm and the pods' network namespace files. Teardown unmounts all.

use anyhow::{Result, bail};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Mount points at or below `root`, deepest first.
fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detaches every mount at or below `root` (stacked mounts need several rounds) and fails when
/// one stays: deleting the state through a live mount could reach outside it.
pub(super) fn unmount_under(root: &Path) -> Result<()> {
    let Ok(root) = root.canonicalize() else {
        return Ok(());
    };
    for _ in 0..10 {
        let points = mounts_under(&root);
        if points.is_empty() {
            return Ok(());
        }
        for point in points {
            let Ok(path) = CString::new(point.as_os_str().as_bytes()) else {
                continue;
            };
            // SAFETY: umount2(2) with a NUL-terminated path; MNT_DETACH also handles busy mounts.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let left = mounts_under(&root);
    if !left.is_empty() {
        bail!("mounts under {} survive umount: {left:?}", root.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::unescape;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape("/plain/path"), "/plain/path");
    }
}
