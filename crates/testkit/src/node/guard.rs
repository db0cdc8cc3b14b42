use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The node a test uses: the running one, or one this guard starts with `hermetic-k8s
/// cluster-up` and stops again on drop (panics included).
pub struct NodeGuard {
    hermetic_k8s: PathBuf,
    state_dir: PathBuf,
    started_here: bool,
}

impl NodeGuard {
    /// `hermetic_k8s` is the harness binary (`env!("CARGO_BIN_EXE_hermetic-k8s")` in testkit's tests).
    pub async fn up(hermetic_k8s: &Path) -> Result<Self> {
        let hermetic_k8s = hermetic_k8s.to_path_buf();
        if let Some(state_dir) = super::running_node().await {
            eprintln!("reusing the node of {}", state_dir.display());
            return Ok(Self {
                hermetic_k8s,
                state_dir,
                started_here: false,
            });
        }
        let state_dir = crate::cache::repo_root().join(".cluster");
        let began = Instant::now();
        let status = run(&hermetic_k8s, &state_dir, &["cluster-up"])?;
        if !status.success() {
            bail!("hermetic-k8s cluster-up failed ({status})");
        }
        eprintln!("cluster-up took {:.1?}", began.elapsed());
        Ok(Self {
            hermetic_k8s,
            state_dir,
            started_here: true,
        })
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.state_dir.join("kubeconfig")
    }

    /// Whether this guard booted the node (and so imported today's images at boot).
    pub fn started_here(&self) -> bool {
        self.started_here
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        if self.started_here {
            match run(&self.hermetic_k8s, &self.state_dir, &["down"]) {
                Ok(status) if status.success() => {}
                other => eprintln!("hermetic-k8s down failed: {other:?}"),
            }
        }
    }
}

fn run(hermetic_k8s: &Path, state_dir: &Path, args: &[&str]) -> Result<std::process::ExitStatus> {
    Command::new(hermetic_k8s)
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .context("run hermetic-k8s")
}
