//! `lane restore`: an OpenBaoRestore of one backup key, followed through its phases.

use crate::watch::{Lane, Progress, follow};
use crate::{Clock, Record, say};
use anyhow::{Context as _, Result, bail};
use kube::api::PostParams;
use openbao_api::{DEFAULT_RESTORE_JWT_ROLE, OpenBaoRestore, OpenBaoRestoreSpec, RestorePhase, RestoreSource};
use std::time::Duration;

pub async fn run(lane: &Lane, key: &str, into: &str, limit: Duration, record: &mut Record) -> Result<()> {
    // The store as the lane cluster backs up to it: endpoint, bucket, credentials Secret.
    let target = lane
        .cluster()
        .await?
        .spec
        .backup
        .map(|b| b.target)
        .context("the lane cluster has no spec.backup: nothing says where its backups are")?;
    let name = format!("lane-restore-{}", jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S"));
    say(format!(
        "restore {key} into {}/{into} (OpenBaoRestore {name})",
        lane.namespace
    ));
    let restore = OpenBaoRestore::new(
        &name,
        OpenBaoRestoreSpec {
            cluster: into.to_string(),
            source: RestoreSource {
                target,
                key: key.to_string(),
            },
            jwt_auth_role: DEFAULT_RESTORE_JWT_ROLE.to_string(),
        },
    );
    let api = lane.api::<OpenBaoRestore>();
    api.create(&PostParams::default(), &restore)
        .await
        .with_context(|| format!("create OpenBaoRestore {name}"))?;
    let clock = Clock::start();
    let mut said = None;
    follow(api, &name, limit, |restore| {
        let Some(restore) = restore else {
            bail!("OpenBaoRestore {name} is gone")
        };
        let status = restore.status.clone().unwrap_or_default();
        let reason = status.reason.unwrap_or_else(|| "-".into());
        let message = status.message.unwrap_or_default();
        let now = (restore.status.is_some(), status.phase, reason.clone());
        if said.as_ref() != Some(&now) {
            match now.0 {
                false => say(format!(
                    "{:>6}s  created; no status from the operator yet",
                    clock.seconds()
                )),
                true => say(format!(
                    "{:>6}s  phase {:?}  reason {reason}: {message}",
                    clock.seconds(),
                    status.phase
                )),
            }
            said = Some(now);
        }
        Ok(match status.phase {
            RestorePhase::Completed => Progress::Done(status.job_name),
            RestorePhase::Failed => bail!("restore {name} Failed: {reason}: {message}"),
            phase => Progress::Waiting(format!("phase {phase:?}, reason {reason}")),
        })
    })
    .await
    .map(|job| {
        say(format!(
            "restore Completed in {}s (Job {})",
            clock.seconds(),
            job.unwrap_or_else(|| "?".into())
        ));
        record.set("last_restore_seconds", clock.seconds());
    })
}
