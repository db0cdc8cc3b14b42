//! Child processes owned by a test. They are killed when the handle drops (also on panic) and,
//! through `PR_SET_PDEATHSIG`, when the spawning thread dies, so a SIGKILLed test leaves none behind.

use anyhow::{Context, Result};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;

pub struct ManagedProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

/// Spawns `cmd` from a thread that lives as long as the returned handle's process, so the
/// death signal fires only when the owning test process exits.
fn spawn_with_death_signal(mut cmd: Command) -> std::io::Result<Child> {
    // SAFETY: pre_exec runs in the forked child before exec; prctl and getppid are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Own process group, so stop() can signal grandchildren too.
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    spawner().spawn(cmd)
}

/// One long-lived thread spawns every child: PDEATHSIG is tied to the spawning *thread*, and
/// tokio test runtimes end their worker threads between tests.
struct Spawner {
    tx: mpsc::Sender<(Command, mpsc::Sender<std::io::Result<Child>>)>,
}

impl Spawner {
    fn spawn(&self, cmd: Command) -> std::io::Result<Child> {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.tx.send((cmd, reply_tx)).expect("spawner thread alive");
        reply_rx.recv().expect("spawner reply")
    }
}

fn spawner() -> &'static Spawner {
    static SPAWNER: std::sync::OnceLock<Spawner> = std::sync::OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Command, mpsc::Sender<std::io::Result<Child>>)>();
        thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawner thread");
        Spawner { tx }
    })
}

impl ManagedProcess {
    /// Starts `program args` with stdout and stderr appended to `log`.
    pub fn start(name: &str, program: &Path, args: &[String], envs: &[(&str, String)], log: &Path) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = spawn_with_death_signal(cmd).with_context(|| format!("spawn {name} ({})", program.display()))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `signal` to the process (e.g. SIGHUP for a reload).
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = self.pid().context("process already stopped")?;
        // SAFETY: plain kill(2) on a pid we own.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// Kills the whole process group and reaps the child.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: negative pid = the process group we created in pre_exec.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
