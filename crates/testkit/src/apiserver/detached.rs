//! Detached mode for `hermetic-k8s`: the same boot as the tests, but etcd and kube-apiserver run
//! in their own sessions without PDEATHSIG, so they outlive the command. Pid files record them.

use super::plan::{LaunchPlan, Layout};
use super::{admin_http_client, boot, locate_binaries, pid_alive};
use anyhow::{Context, Result, bail};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether the detached control plane in `root` runs and answers `/readyz`.
pub async fn detached_is_ready(root: &Path) -> bool {
    let layout = Layout::new(root);
    let alive = ["etcd", "kube-apiserver"]
        .iter()
        .all(|name| read_pid(&layout, name).is_some_and(pid_alive));
    let Ok(server) = kube::config::Kubeconfig::read_from(layout.kubeconfig()) else {
        return false;
    };
    let Some(url) = server
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
    else {
        return false;
    };
    let Ok(http) = admin_http_client(&layout) else {
        return false;
    };
    let ready = http.get(format!("{url}/readyz")).send().await;
    alive && ready.is_ok_and(|r| r.status().is_success())
}

/// Starts etcd + kube-apiserver in their own sessions (no PDEATHSIG), state under `root`.
/// On failure whatever was started is stopped again.
pub async fn start_detached(root: &Path, extra_apiserver_args: &[String]) -> Result<PathBuf> {
    let bin = locate_binaries().await?;
    let mut plan = LaunchPlan::prepare(Layout::new(root), bin)?;
    plan.extra_apiserver_args = extra_apiserver_args.to_vec();
    if let Err(err) = boot_detached(&plan).await {
        stop_detached(root, true)?;
        return Err(err);
    }
    Ok(plan.layout.kubeconfig())
}

/// The boot sequence with detached processes recorded in `pids/` (apiserver and node mode).
/// Returns the processes so a caller can keep watching them for an early exit.
pub(crate) async fn boot_detached(plan: &LaunchPlan) -> Result<(Child, Child)> {
    boot(plan, |name, program, args, log| {
        spawn_recorded(&plan.layout, name, program, args, log)
    })
    .await
}

/// Spawns a detached process and writes its pid to `pids/<name>.pid`.
pub(crate) fn spawn_recorded(
    layout: &Layout,
    name: &str,
    program: &Path,
    args: &[String],
    log: &Path,
) -> Result<Child> {
    let child = spawn_detached(program, args, log).with_context(|| format!("spawn {name} ({})", program.display()))?;
    fs::write(layout.pid_file(name), child.id().to_string()).with_context(|| format!("write pid file of {name}"))?;
    Ok(child)
}

pub(crate) fn spawn_detached(program: &Path, args: &[String], log: &Path) -> Result<Child> {
    Ok(detached_command(program, args, log)?.spawn()?)
}

/// `program args` in a session of its own, its output appended to `log`, ready to spawn.
pub(crate) fn detached_command(program: &Path, args: &[String], log: &Path) -> Result<Command> {
    let out = fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    // SAFETY: setsid is async-signal-safe. A new session keeps the process out of the caller's
    // process group, so Ctrl-C on `make` or the end of the shell does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

pub(crate) fn read_pid(layout: &Layout, name: &str) -> Option<i32> {
    fs::read_to_string(layout.pid_file(name)).ok()?.trim().parse().ok()
}

/// Stops the processes recorded under `root/pids` (apiserver first) and removes the state;
/// logs stay when `keep_logs`. Safe to call when nothing runs.
pub fn stop_detached(root: &Path, keep_logs: bool) -> Result<()> {
    let layout = Layout::new(root);
    for name in ["kube-apiserver", "etcd"] {
        let Some(pid) = read_pid(&layout, name) else { continue };
        // A recycled pid must not be killed: check it still runs our binary.
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if pid_alive(pid) && String::from_utf8_lossy(&cmdline).contains(name) {
            terminate(pid, name)?;
        }
    }
    if !root.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(root)? {
        let path = entry?.path();
        if keep_logs && path.file_name().is_some_and(|n| n == "logs") {
            continue;
        }
        if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        }
        .with_context(|| format!("remove {}", path.display()))?;
    }
    if !keep_logs {
        fs::remove_dir(root).with_context(|| format!("remove {}", root.display()))?;
    }
    Ok(())
}

/// SIGTERM to the process group, SIGKILL after 10 s.
fn terminate(pid: i32, name: &str) -> Result<()> {
    // SAFETY: kill(2) on the process group our detached start created with setsid.
    unsafe { libc::kill(-pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if pid_alive(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(200));
    }
    if pid_alive(pid) {
        bail!("{name} (pid {pid}) survived SIGKILL");
    }
    Ok(())
}
