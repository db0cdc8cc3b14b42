//! Locating the real binaries that `hack/*.sh` build or fetch into the user cache. When a binary
//! is missing the script is run (it is idempotent), so `cargo test` works on a fresh machine.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// The checkout this process runs from. Cargo sets `CARGO_MANIFEST_DIR` at run time for `cargo run`
/// and `cargo test`; the compile-time value is only a fallback, because one build directory is
/// shared by several checkouts (CI clones into a fresh path and reuses the cached build).
pub fn repo_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.join("../..").canonicalize().expect("repo root")
}

/// Runs `hack/<script> args...` and returns its trimmed stdout (stderr goes to the test log).
pub fn run_hack(script: &str, args: &[&str]) -> Result<String> {
    let path = repo_root().join("hack").join(script);
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        bail!("{} {:?} failed with {}", path.display(), args, out.status);
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// The `kubectl` that `hack/build-kubernetes.sh apiserver` builds with the pinned apiserver.
pub fn kubectl() -> Result<PathBuf> {
    Ok(PathBuf::from(run_hack("build-kubernetes.sh", &["apiserver"])?).join("kubectl"))
}

/// Runs `cmd` and returns its stdout; fails with its status, stdout and stderr.
pub fn command_output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Path of the `bao` binary for `version` (e.g. "2.7.2").
pub fn bao_binary(version: &str) -> Result<PathBuf> {
    let line = run_hack("fetch-openbao.sh", &[version])?;
    let path = line
        .split_once(' ')
        .map(|(_, p)| p)
        .context("fetch-openbao.sh output")?;
    Ok(PathBuf::from(path))
}

/// The pinned versions from hack/versions.env, e.g. `pinned("KUBERNETES_VERSION")`.
pub fn pinned(name: &str) -> Result<String> {
    let text = std::fs::read_to_string(repo_root().join("hack/versions.env"))?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .with_context(|| format!("{name} not in hack/versions.env"))
}
