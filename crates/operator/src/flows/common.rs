//! What both strategies share: starting an upgrade from `Idle` (downgrade refusal, the abort
//! latch, request tokens), the pre-upgrade snapshot, phase transitions, finishing and aborting.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use openbao_api::{
    BlueGreenStatus, OpenBaoClusterSpec, OpenBaoClusterStatus, UpgradeError, UpgradePhase, UpgradeStatus,
    UpgradeStrategy,
};
use std::time::Duration;

use super::names::{self, Revision};
use super::observed::Observed;
use super::step::{Action, FlowStep};
use super::version::Version;

/// The upgrade status to work on (the default when none was written yet).
pub fn upgrade_of(status: &OpenBaoClusterStatus) -> UpgradeStatus {
    status.upgrade.clone().unwrap_or_default()
}

/// The token of a request that was not acted upon yet.
pub fn pending(requested: &Option<String>, acknowledged: &Option<String>) -> Option<String> {
    requested.clone().filter(|t| Some(t) != acknowledged.as_ref())
}

pub fn error(reason: &str, message: impl Into<String>, now: Timestamp) -> UpgradeError {
    UpgradeError {
        reason: reason.to_string(),
        message: message.into(),
        at: Time(now),
    }
}

/// Sets `last_error` unless an error with the same reason and message is already recorded, so
/// a condition that persists does not rewrite status on every poll.
pub fn report(upgrade: &mut UpgradeStatus, reason: &str, message: impl Into<String>, now: Timestamp) {
    let message = message.into();
    let same = upgrade
        .last_error
        .as_ref()
        .is_some_and(|e| e.reason == reason && e.message == message);
    if !same {
        upgrade.last_error = Some(error(reason, message, now));
    }
}

/// Time spent in the current phase (or step).
pub fn in_phase(upgrade: &UpgradeStatus, now: Timestamp) -> Duration {
    let since = upgrade.phase_started_at.as_ref().map(|t| t.0).unwrap_or(now);
    now.duration_since(since).try_into().unwrap_or(Duration::ZERO)
}

pub fn enter(upgrade: &mut UpgradeStatus, phase: UpgradePhase, now: Timestamp) {
    upgrade.phase = phase;
    upgrade.phase_started_at = Some(Time(now));
    upgrade.failures = 0;
}

/// `status` with `upgrade` replaced.
/// An empty upgrade status is not written where none was before.
pub fn with(status: &OpenBaoClusterStatus, upgrade: UpgradeStatus) -> OpenBaoClusterStatus {
    let upgrade = (status.upgrade.is_some() || upgrade != UpgradeStatus::default()).then_some(upgrade);
    OpenBaoClusterStatus {
        upgrade,
        ..status.clone()
    }
}

/// A step that only records `next` (or, when nothing changed, does nothing / waits).
pub fn settle(previous: &OpenBaoClusterStatus, next: OpenBaoClusterStatus, unchanged: Action) -> FlowStep {
    let action = if &next == previous { unchanged } else { Action::Record };
    FlowStep { action, status: next }
}

/// Waits: persists `next` if it changed (a new message), otherwise just polls again.
pub fn wait(next: OpenBaoClusterStatus) -> FlowStep {
    FlowStep {
        action: Action::Wait,
        status: next,
    }
}

pub fn act(action: Action, next: OpenBaoClusterStatus) -> FlowStep {
    FlowStep { action, status: next }
}

/// The first phase after the (optional) snapshot.
pub fn first_phase(strategy: UpgradeStrategy) -> UpgradePhase {
    match strategy {
        UpgradeStrategy::RollingUpdate => UpgradePhase::RollingUpdate,
        UpgradeStrategy::BlueGreen => UpgradePhase::DeployingGreen,
    }
}

/// `Idle`: start an upgrade when `spec.version` is newer than the running version, the cluster
/// is healthy and no abort latch holds it back. Request tokens no upgrade needs are acknowledged.
pub fn idle(
    spec: &OpenBaoClusterSpec,
    status: &OpenBaoClusterStatus,
    observed: &Observed,
    strategy: UpgradeStrategy,
) -> FlowStep {
    let now = observed.now;
    let mut u = upgrade_of(status);
    let requests = &spec.upgrade.requests;
    if let Some(token) = pending(&requests.promote, &u.acknowledged.promote) {
        u.acknowledged.promote = Some(token);
        u.message = Some("promote request ignored: no upgrade is waiting for promotion".into());
    }
    if let Some(token) = pending(&requests.rollback, &u.acknowledged.rollback) {
        u.acknowledged.rollback = Some(token);
        u.message = Some("rollback request ignored: no upgrade is in progress".into());
    }
    let retry = pending(&requests.retry, &u.acknowledged.retry);
    if let Some(token) = &retry {
        u.acknowledged.retry = Some(token.clone());
    }
    let Some(current) = status.current_version.clone() else {
        // Not initialized yet: there is nothing to upgrade.
        return settle(status, with(status, u), Action::Nothing);
    };
    let target = spec.version.clone();
    if target == current {
        u.aborted_version = None;
        u.last_error = None;
        return settle(status, with(status, u), Action::Nothing);
    }
    let (Some(from), Some(to)) = (Version::parse(&current), Version::parse(&target)) else {
        report(
            &mut u,
            "InvalidVersion",
            format!("cannot compare spec.version {target:?} with the running version {current:?}"),
            now,
        );
        return settle(status, with(status, u), Action::Nothing);
    };
    if to < from {
        report(
            &mut u,
            "DowngradeRefused",
            format!(
                "spec.version {target} is older than the running {current}: downgrades are refused (data written by \
                 {current} is not served by {target}); to go back, restore a snapshot taken on {target}"
            ),
            now,
        );
        return settle(status, with(status, u), Action::Nothing);
    }
    match u.aborted_version.clone() {
        Some(aborted) if aborted == target && retry.is_none() => {
            // The abort message says why and how to retry; keep it.
            if u.message.is_none() {
                u.message = Some(latch_note(&target));
            }
            return settle(status, with(status, u), Action::Nothing);
        }
        _ => u.aborted_version = None,
    }
    let live = super::upgrade::live_revision(status);
    if let Some(problem) = unhealthy(observed, &live, spec.replicas) {
        u.message = Some(format!("upgrade to {target} waits for a healthy cluster: {problem}"));
        return wait(with(status, u));
    }
    let phase = if spec.upgrade.pre_upgrade_snapshot {
        UpgradePhase::PreUpgradeSnapshot
    } else {
        first_phase(strategy)
    };
    let mut next = UpgradeStatus {
        strategy: Some(strategy),
        from_version: Some(current.clone()),
        to_version: Some(target.clone()),
        started_at: Some(Time(now)),
        rollback_available: true,
        acknowledged: u.acknowledged,
        message: Some(format!("upgrading from {current} to {target} ({strategy:?})")),
        ..UpgradeStatus::default()
    };
    enter(&mut next, phase, now);
    let mut status = with(status, next);
    if strategy == UpgradeStrategy::BlueGreen {
        status.blue_green = Some(BlueGreenStatus {
            blue_revision: live,
            green_revision: Some(names::revision_for(&target)),
        });
    }
    act(Action::Record, status)
}

fn latch_note(version: &str) -> String {
    format!(
        "the upgrade to {version} does not start again until spec.version changes or \
         spec.upgrade.requests.retry carries a new token"
    )
}

/// Why the servers of `revision` are not fit to start an upgrade, if they are not.
pub fn unhealthy(observed: &Observed, revision: &Revision, replicas: i32) -> Option<String> {
    let nodes = observed.nodes_of(revision);
    if nodes.len() != replicas.max(0) as usize {
        return Some(format!("{} of {replicas} servers exist", nodes.len()));
    }
    let sealed: Vec<&str> = nodes
        .iter()
        .filter(|n| !n.is_unsealed())
        .map(|n| n.id.as_str())
        .collect();
    if !sealed.is_empty() {
        return Some(format!("not serving: {}", sealed.join(", ")));
    }
    let Some(raft) = &observed.raft else {
        return Some("no active server".into());
    };
    let not_voting: Vec<&str> = nodes
        .iter()
        .filter(|n| !raft.is_voter(&n.id))
        .map(|n| n.id.as_str())
        .collect();
    if !not_voting.is_empty() {
        return Some(format!("not raft voters: {}", not_voting.join(", ")));
    }
    if !raft.autopilot_healthy() {
        return Some("autopilot does not report the cluster healthy".into());
    }
    None
}

/// Failed pre-upgrade snapshot attempts after which the upgrade is given up (nothing changed yet).
pub const SNAPSHOT_ATTEMPTS: i32 = 3;

/// The pre-upgrade snapshot; afterwards the strategy's first phase. Given up (no server was
/// touched) after [`SNAPSHOT_ATTEMPTS`] failures.
pub fn snapshot(status: &OpenBaoClusterStatus, mut u: UpgradeStatus, now: Timestamp) -> FlowStep {
    if u.failures >= SNAPSHOT_ATTEMPTS {
        let last = u.last_error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
        let message = format!("the pre-upgrade snapshot failed {SNAPSHOT_ATTEMPTS} times; last: {last}");
        u.last_error = Some(error("PreUpgradeSnapshotFailed", message.clone(), now));
        let from = u.from_version.clone().unwrap_or_default();
        let text = format!("upgrade aborted before any server changed; still on {from}: {message}");
        return act(Action::Record, aborted(status, &u, text));
    }
    let strategy = u.strategy.unwrap_or_default();
    enter(&mut u, first_phase(strategy), now);
    u.message = Some("pre-upgrade snapshot taken".into());
    act(Action::TakeSnapshot, with(status, u))
}

/// The upgrade is done: `Idle`, running `to`.
pub fn finished(
    status: &OpenBaoClusterStatus,
    u: &UpgradeStatus,
    now: Timestamp,
    blue_green: Option<BlueGreenStatus>,
) -> OpenBaoClusterStatus {
    let from = u.from_version.clone().unwrap_or_default();
    let to = u.to_version.clone().unwrap_or_default();
    let took = u
        .started_at
        .as_ref()
        .map(|t| now.duration_since(t.0))
        .unwrap_or(SignedDuration::ZERO);
    let snapshot = u
        .pre_upgrade_snapshot
        .as_ref()
        .map(|s| format!("; pre-upgrade snapshot: {s}"))
        .unwrap_or_default();
    let done = UpgradeStatus {
        acknowledged: u.acknowledged.clone(),
        message: Some(format!(
            "upgraded from {from} to {to} ({:?}) in {}s{snapshot}",
            u.strategy.unwrap_or_default(),
            took.as_secs()
        )),
        ..UpgradeStatus::default()
    };
    OpenBaoClusterStatus {
        current_version: Some(to),
        upgrade: Some(done),
        blue_green: blue_green.or_else(|| status.blue_green.clone()),
        ..status.clone()
    }
}

/// The upgrade was given up before it changed anything that cannot be undone: `Idle`, still on
/// the old version, latched so it does not start again by itself. `u.last_error` says why.
pub fn aborted(status: &OpenBaoClusterStatus, u: &UpgradeStatus, message: String) -> OpenBaoClusterStatus {
    let to = u.to_version.clone().unwrap_or_default();
    let latched = UpgradeStatus {
        aborted_version: u.to_version.clone(),
        acknowledged: u.acknowledged.clone(),
        last_error: u.last_error.clone(),
        message: Some(format!("{message}; {}", latch_note(&to))),
        ..UpgradeStatus::default()
    };
    let blue_green = status.blue_green.clone().map(|b| BlueGreenStatus {
        green_revision: None,
        ..b
    });
    OpenBaoClusterStatus {
        upgrade: Some(latched),
        blue_green,
        ..status.clone()
    }
}

/// The message that names the way back once rolling back is no longer possible.
pub fn way_back(u: &UpgradeStatus) -> String {
    let from = u.from_version.clone().unwrap_or_default();
    match &u.pre_upgrade_snapshot {
        Some(handle) => format!("the way back to {from} is restoring the pre-upgrade snapshot {handle}"),
        None => format!(
            "the way back to {from} is restoring a snapshot taken before the upgrade \
             (spec.upgrade.preUpgradeSnapshot was off, so the operator took none)"
        ),
    }
}

/// Failed steps in a row (in one phase) after which the cluster reports `Degraded`: a single
/// failure is often a leader handover that the next step, seconds later, no longer meets.
pub const STEP_FAILURES_DEGRADED: i32 = 3;

/// Records a failed action on the status it started from: the same step runs again next time.
pub fn record_failure(
    status: &OpenBaoClusterStatus,
    action: &Action,
    message: &str,
    now: Timestamp,
) -> OpenBaoClusterStatus {
    record_step_failure(status, &format!("{}Failed", action.name()), message, now)
}

/// Records a failed step (`reason`, e.g. `LoginFailed`) on the status it started from.
pub fn record_step_failure(
    status: &OpenBaoClusterStatus,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> OpenBaoClusterStatus {
    let mut u = upgrade_of(status);
    u.failures += 1;
    let text: String = message.chars().take(1024).collect();
    u.last_error = Some(error(reason, text, now));
    with(status, u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_that_keeps_failing_aborts_before_any_server_changed() {
        let now: Timestamp = "2026-11-24T19:30:00Z".parse().unwrap();
        let mut u = UpgradeStatus {
            phase: UpgradePhase::PreUpgradeSnapshot,
            strategy: Some(UpgradeStrategy::BlueGreen),
            from_version: Some("2.6.2".into()),
            to_version: Some("2.7.2".into()),
            failures: SNAPSHOT_ATTEMPTS - 1,
            ..UpgradeStatus::default()
        };
        let status = OpenBaoClusterStatus::default();
        let step = snapshot(&status, u.clone(), now);
        assert_eq!(step.action, Action::TakeSnapshot, "one more attempt");
        assert_eq!(step.status.upgrade.unwrap().phase, UpgradePhase::DeployingGreen);

        u.failures = SNAPSHOT_ATTEMPTS;
        u.last_error = Some(error("TakeSnapshotFailed", "AuthenticationFailed: bad key", now));
        let step = snapshot(&status, u, now);
        assert_eq!(step.action, Action::Record);
        let done = step.status.upgrade.unwrap();
        assert_eq!(done.phase, UpgradePhase::Idle);
        assert_eq!(
            done.aborted_version.as_deref(),
            Some("2.7.2"),
            "latched: it does not start again by itself"
        );
        let e = done.last_error.unwrap();
        assert_eq!(e.reason, "PreUpgradeSnapshotFailed");
        assert!(e.message.contains("AuthenticationFailed: bad key"), "{}", e.message);
    }
}
