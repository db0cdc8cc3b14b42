//! Step: once everything is applied, one step of an upgrade when `flows::upgrade::plan` says
//! so (one step of `flows::bluegreen` or `flows::rolling` through [`KubePlatform`]).

use jiff::Timestamp;
use openbao_api::OpenBaoClusterStatus;
use openbao_render::Cluster;
use std::time::Duration;

use super::status::{Observed, UpgradeState};
use super::upgrade::{self, KubePlatform};
use crate::context::Context;
use crate::flows::Driver;
use crate::flows::upgrade::{self as upgrade_plan, UpgradePlan};

/// Decides and takes the upgrade's next step, recording what to report in `observed`. Returns
/// the status to build on (the stored one, or what the step wrote) and when to step again.
pub(super) async fn upgrade(
    ctx: &Context,
    cluster: &Cluster<'_>,
    previous: &OpenBaoClusterStatus,
    bundle: Option<&str>,
    seal_migration_blocks: bool,
    observed: &mut Observed,
) -> (OpenBaoClusterStatus, Option<Duration>) {
    match upgrade_plan::plan(cluster.spec, previous) {
        UpgradePlan::Idle => (previous.clone(), None),
        UpgradePlan::Clear => (upgrade_plan::cleared(previous), None),
        UpgradePlan::Refused { reason, message } => {
            observed.upgrade = UpgradeState::Refused { reason, message };
            (previous.clone(), None)
        }
        UpgradePlan::Advance if seal_migration_blocks => {
            observed.upgrade = UpgradeState::Refused {
                reason: "WaitingForSealMigration",
                message: "the upgrade starts once the seal migration is finished".into(),
            };
            (previous.clone(), None)
        }
        // An upgrade does not start while a backup or restore holds the cluster; one in
        // progress is never interrupted (backups and restores wait for it instead).
        UpgradePlan::Advance if upgrade_waits_for_lock(previous) => {
            let holder = previous
                .operation_lock
                .as_ref()
                .map(|l| l.holder.clone())
                .unwrap_or_default();
            observed.upgrade = UpgradeState::Refused {
                reason: "WaitingForOperationLock",
                message: format!("the upgrade starts once {holder} releases the cluster's operation lock"),
            };
            (previous.clone(), Some(Duration::from_secs(15)))
        }
        UpgradePlan::Advance => match bundle {
            None => {
                observed.upgrade = UpgradeState::StepFailed("no CA bundle to reach OpenBao with".into());
                (previous.clone(), None)
            }
            Some(bundle) => {
                let (next, state, requeue) = upgrade_step(ctx, cluster, previous, bundle).await;
                observed.upgrade = state;
                (next, requeue)
            }
        },
    }
}

/// True while an upgrade has not started and another operation holds the lock.
fn upgrade_waits_for_lock(status: &OpenBaoClusterStatus) -> bool {
    let not_started = status
        .upgrade
        .as_ref()
        .is_none_or(|u| u.phase == openbao_api::UpgradePhase::Idle);
    let held_by_other = status
        .operation_lock
        .as_ref()
        .is_some_and(|l| l.operation != openbao_api::Operation::Upgrade);
    not_started && held_by_other
}

/// Even a step that only recorded a phase waits this long, so the next one reads it back.
pub(super) const UPGRADE_MIN_REQUEUE: Duration = Duration::from_millis(200);

/// One step of the upgrade driver, logged in as the operator. Returns the status to build on,
/// what to report, and when to step again (`None`: nothing in progress).
async fn upgrade_step(
    ctx: &Context,
    cluster: &Cluster<'_>,
    previous: &OpenBaoClusterStatus,
    bundle: &str,
) -> (OpenBaoClusterStatus, UpgradeState, Option<Duration>) {
    let token = match tokio::time::timeout(Duration::from_secs(20), upgrade::operator_login(ctx, cluster, bundle)).await
    {
        Err(_) => {
            return failed_step(
                previous,
                "LoginFailed",
                "logging in for the upgrade: no answer within 20 s",
            );
        }
        Ok(Err(message)) => return failed_step(previous, "LoginFailed", &message),
        Ok(Ok(token)) => token,
    };
    let platform = KubePlatform::new(ctx, cluster, bundle.to_string(), token).for_status(previous);
    let driver = Driver::new(cluster.name, platform);
    match driver.step(cluster.spec, previous).await {
        Ok(report) => {
            let state = match report.error {
                Some(e) => step_failure(&report.status, e),
                None => UpgradeState::Stepped,
            };
            (report.status, state, report.requeue_after)
        }
        Err(e) => failed_step(
            previous,
            "ObserveFailed",
            &format!("observing the servers for the upgrade: {e}"),
        ),
    }
}

/// A step that failed before the driver ran it: recorded like a failed action, tried again soon.
pub(super) fn failed_step(
    previous: &OpenBaoClusterStatus,
    reason: &str,
    message: &str,
) -> (OpenBaoClusterStatus, UpgradeState, Option<Duration>) {
    let status = crate::flows::record_step_failure(previous, reason, message, Timestamp::now());
    let state = step_failure(&status, message.to_string());
    (status, state, Some(Duration::from_secs(2)))
}

/// `Degraded` only once the step failed `STEP_FAILURES_DEGRADED` times in a row.
fn step_failure(status: &OpenBaoClusterStatus, message: String) -> UpgradeState {
    let in_a_row = status.upgrade.as_ref().map_or(0, |u| u.failures);
    if in_a_row >= crate::flows::STEP_FAILURES_DEGRADED {
        UpgradeState::StepFailed(message)
    } else {
        UpgradeState::StepRetrying
    }
}

#[cfg(test)]
mod tests {
    use super::{UpgradeState, failed_step};

    #[test]
    fn a_failed_step_degrades_the_cluster_only_when_it_keeps_failing() {
        let mut status = openbao_api::OpenBaoClusterStatus::default();
        for attempt in 1..=crate::flows::STEP_FAILURES_DEGRADED {
            let (next, state, retry) = failed_step(&status, "LoginFailed", "HTTP 500: local node not active");
            let upgrade = next.upgrade.clone().expect("the failure is recorded");
            assert_eq!(upgrade.failures, attempt);
            assert_eq!(upgrade.last_error.map(|e| e.reason), Some("LoginFailed".into()));
            assert_eq!(retry, Some(std::time::Duration::from_secs(2)));
            let degraded = attempt == crate::flows::STEP_FAILURES_DEGRADED;
            assert_eq!(
                matches!(state, UpgradeState::StepFailed(_)),
                degraded,
                "attempt {attempt}"
            );
            assert_eq!(state == UpgradeState::StepRetrying, !degraded, "attempt {attempt}");
            status = next;
        }
    }
}
