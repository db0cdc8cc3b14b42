//! Seal migration: a running cluster moves from one seal to another (`static` <-> `transit`)
//! by OpenBao's own procedure (`docs/seal-migration.md`), one server at a time, the leader last.
//!
//! ```text
//! Idle -> [PreMigrationSnapshot] -> RecoveryKey -> Standbys -> StepDown -> Finalize -> Idle
//! ```
//!
//! - `RecoveryKey`: OpenBao unseals a server in migration mode only with the recovery key, and
//!   self-initialized clusters have none; the driver makes one (stored before it counts).
//! - `Standbys`: every server but the leader, highest ordinal first, is restarted on the
//!   [`SealStage::Migration`] configuration (old seal disabled next to the new one), unsealed
//!   with `migrate`, and waited on until autopilot reports it healthy and caught up.
//! - `StepDown`: the old leader steps down; the migrated server that takes over rewraps the
//!   keys. The phase ends when a leader reports the new seal type out of migration mode.
//! - `Finalize`: every server is restarted on [`SealStage::New`] (only the new seal), the old
//!   leader first, the current leader last after a step-down. Then, and only then, the old
//!   seal's material (the static key Secret) is removed.
//!
//! Like the upgrade flows, [`next_step`] is pure and a phase moves only on an observation of
//! its effect, never on an action's answer. Before the first server restarts the migration can
//! be given up (snapshot or recovery key failing); after it, a change of `spec.unseal.type` is
//! refused and the migration finishes.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use openbao_api::{SealMigrationPhase, SealMigrationStatus, UnsealType, UpgradeError};
use std::time::Duration;

use super::observed::RaftView;

pub mod driver;

/// How long one server may take to come back, unseal and catch up before it is reported.
const NODE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Failed snapshots after which the migration is given up (no server was touched yet).
const SNAPSHOT_ATTEMPTS: i32 = 3;
/// Failed recovery-key attempts after which the migration is given up.
const RECOVERY_KEY_ATTEMPTS: i32 = 3;

/// Which seal configuration a server is started with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SealStage {
    /// Only the seal the cluster had (what every server runs before a migration).
    Old,
    /// The old seal with `disabled = "true"` next to the new one: OpenBao's migration mode.
    Migration,
    /// Only the new seal.
    New,
}

/// What a migration is asked for: the seal of the spec, and whether a snapshot comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealTarget {
    pub to: UnsealType,
    pub snapshot_first: bool,
}

/// One server as the platform and its `sys/seal-status` describe it.
#[derive(Clone, Debug, PartialEq)]
pub struct SealNodeView {
    pub id: String,
    pub ordinal: u32,
    pub running: bool,
    /// The seal configuration the platform last started it with.
    pub stage: SealStage,
    /// `None` when it did not answer (a standby unsealed in migration mode answers 500 until
    /// the migration is done).
    pub seal: Option<SealView>,
}

/// A server's seal as `sys/seal-status` tells it. An unsealed server whose loaded seal does
/// not match the one in storage (a standby unsealed in migration mode before the migration, the
/// old leader after it) answers 500 `barrier seal type of "X" does not match loaded type of
/// "Y"`: the driver reports it as unsealed, `migration: true`, `seal_type` Y.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealView {
    /// The seal it runs: `static`, `transit`, ...
    pub seal_type: String,
    pub sealed: bool,
    /// In migration mode (started with a disabled seal), or running a seal that storage no
    /// longer (or not yet) has.
    pub migration: bool,
    /// Recovery key shares (0: none was ever made).
    pub recovery_shares: u32,
}

/// Everything the seal-migration flow decides on, fresh for every step.
#[derive(Clone, Debug, PartialEq)]
pub struct SealObserved {
    pub now: Timestamp,
    pub nodes: Vec<SealNodeView>,
    /// The active server's raft view; `None` when none answered as leader.
    pub raft: Option<RaftView>,
    /// The platform holds a recovery key (made by the operator).
    pub recovery_key_held: bool,
}

impl SealObserved {
    fn node(&self, id: &str) -> Option<&SealNodeView> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The leader's own seal view.
    fn leader_seal(&self) -> Option<&SealView> {
        let leader = &self.raft.as_ref()?.leader;
        self.node(leader)?.seal.as_ref()
    }
}

/// What the driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SealAction {
    /// Nothing to migrate.
    Nothing,
    /// Only the status changes.
    Record,
    /// Look again soon.
    Wait,
    /// Take the pre-migration snapshot.
    TakeSnapshot,
    /// Make a recovery key (init with verification, store, verify); idempotent.
    EnsureRecoveryKey,
    /// Make server `node_id` run on `stage` (restart it unless it already does).
    RestartNode { node_id: String, stage: SealStage },
    /// `sys/unseal` with the recovery key and `migrate` on `node_id`.
    UnsealMigrate { node_id: String },
    /// `sys/step-down` on `node_id`, the leader.
    StepDown { node_id: String },
    /// Remove what only the old seal needed (the static key Secret); the migration is done.
    RemoveOldSeal { from: UnsealType },
}

impl SealAction {
    pub fn name(&self) -> &'static str {
        match self {
            SealAction::Nothing => "Nothing",
            SealAction::Record => "Record",
            SealAction::Wait => "Wait",
            SealAction::TakeSnapshot => "TakeSnapshot",
            SealAction::EnsureRecoveryKey => "EnsureRecoveryKey",
            SealAction::RestartNode { .. } => "RestartNode",
            SealAction::UnsealMigrate { .. } => "UnsealMigrate",
            SealAction::StepDown { .. } => "StepDown",
            SealAction::RemoveOldSeal { .. } => "RemoveOldSeal",
        }
    }

    pub fn acts(&self) -> bool {
        !matches!(self, SealAction::Nothing | SealAction::Record | SealAction::Wait)
    }
}

/// Perform `action`; on success persist `status`. On failure the driver persists
/// [`record_failure`] of the previous status and the same step runs again.
#[derive(Clone, Debug, PartialEq)]
pub struct SealStep {
    pub action: SealAction,
    pub status: SealMigrationStatus,
}

/// OpenBao's name of a seal type (`sys/seal-status` `type`): the spec's word for static, transit
/// and kmip. A `kms` seal reports its wrapper (e.g. `awskms`) and is never read back here.
pub fn seal_type_name(t: UnsealType) -> &'static str {
    t.as_str()
}

fn unseal_type_of(name: &str) -> Option<UnsealType> {
    match name {
        "static" => Some(UnsealType::Static),
        "transit" => Some(UnsealType::Transit),
        _ => None,
    }
}

fn error(reason: &str, message: impl Into<String>, now: Timestamp) -> UpgradeError {
    UpgradeError {
        reason: reason.into(),
        message: message.into(),
        at: Time(now),
    }
}

/// Sets `last_error` unless the same one is recorded (a lasting condition does not rewrite
/// status on every poll).
fn report(m: &mut SealMigrationStatus, reason: &str, message: impl Into<String>, now: Timestamp) {
    let message = message.into();
    if !m
        .last_error
        .as_ref()
        .is_some_and(|e| e.reason == reason && e.message == message)
    {
        m.last_error = Some(error(reason, message, now));
    }
}

fn enter(m: &mut SealMigrationStatus, phase: SealMigrationPhase, now: Timestamp) {
    m.phase = phase;
    m.phase_started_at = Some(Time(now));
    m.failures = 0;
    m.completed.clear();
}

fn in_phase(m: &SealMigrationStatus, now: Timestamp) -> Duration {
    let since = m.phase_started_at.as_ref().map(|t| t.0).unwrap_or(now);
    now.duration_since(since).try_into().unwrap_or(Duration::ZERO)
}

fn step(action: SealAction, status: SealMigrationStatus) -> SealStep {
    SealStep { action, status }
}

/// Waits, persisting a changed message.
fn wait(mut m: SealMigrationStatus, message: String) -> SealStep {
    m.message = Some(message);
    step(SealAction::Wait, m)
}

/// Records a failed action on the status it started from: the same step runs again next time.
pub fn record_failure(
    status: &SealMigrationStatus,
    action: &SealAction,
    message: &str,
    now: Timestamp,
) -> SealMigrationStatus {
    let mut m = status.clone();
    m.failures += 1;
    let text: String = message.chars().take(1024).collect();
    m.last_error = Some(error(&format!("{}Failed", action.name()), text, now));
    m
}

/// The migration given up before any server changed: `Idle`, latched on `to`.
fn abort(m: &SealMigrationStatus, reason: &str, message: String, now: Timestamp) -> SealStep {
    let from = m.from.map(seal_type_name).unwrap_or("?");
    let latched = SealMigrationStatus {
        aborted_to: m.to,
        last_error: Some(error(reason, message.clone(), now)),
        message: Some(format!(
            "seal migration given up before any server changed; still on {from}: {message}; \
             change spec.unseal.type back, or to retry change it again"
        )),
        ..SealMigrationStatus::default()
    };
    step(SealAction::Record, latched)
}

/// Running, unsealed on `seal` (out of migration mode), a voter and caught up.
fn serves(observed: &SealObserved, raft: &RaftView, id: &str, seal: Option<UnsealType>) -> bool {
    let Some(node) = observed.node(id) else {
        return false;
    };
    let seal_ok = match (seal, &node.seal) {
        (None, _) => true,
        (Some(t), Some(v)) => !v.sealed && !v.migration && v.seal_type == seal_type_name(t),
        (Some(_), None) => false,
    };
    node.running && seal_ok && raft.is_voter(id) && raft.caught_up(id)
}

/// The next step of the migration (or of starting one, from `Idle`).
pub fn next_step(target: SealTarget, status: &SealMigrationStatus, observed: &SealObserved) -> SealStep {
    let now = observed.now;
    let m = status.clone();
    match m.phase {
        SealMigrationPhase::Idle => idle(target, m, observed),
        SealMigrationPhase::PreMigrationSnapshot => {
            if let Some(s) = refused_change(target, &m, now, false) {
                return s;
            }
            snapshot(m, now)
        }
        SealMigrationPhase::RecoveryKey => {
            if let Some(s) = refused_change(target, &m, now, false) {
                return s;
            }
            recovery_key(m, observed)
        }
        SealMigrationPhase::Standbys => standbys(target, m, observed),
        SealMigrationPhase::StepDown => step_down(target, m, observed),
        SealMigrationPhase::Finalize => finalize(target, m, observed),
    }
}

/// Before any server changed, a different `spec.unseal.type` gives the migration up; after,
/// it is refused (reported) and `None` is returned so the migration goes on.
fn refused_change(target: SealTarget, m: &SealMigrationStatus, now: Timestamp, touched: bool) -> Option<SealStep> {
    if Some(target.to) == m.to {
        return None;
    }
    let wanted = seal_type_name(target.to);
    if !touched {
        return Some(abort(
            m,
            "SealChanged",
            format!("spec.unseal.type changed to {wanted} before any server was restarted"),
            now,
        ));
    }
    None
}

/// A change of `spec.unseal.type` after servers were restarted: reported, the migration finishes.
fn report_refusal(target: SealTarget, m: &mut SealMigrationStatus, now: Timestamp) {
    if Some(target.to) != m.to {
        let to = m.to.map(seal_type_name).unwrap_or("?");
        let message = format!(
            "spec.unseal.type changed to {} while servers already run the migration to {to}: \
             finishing it first; change spec.unseal.type again afterwards to migrate back",
            seal_type_name(target.to)
        );
        report(m, "SealChangeRefused", message, now);
    }
}

fn idle(target: SealTarget, mut m: SealMigrationStatus, observed: &SealObserved) -> SealStep {
    let now = observed.now;
    let Some(leader_seal) = observed.leader_seal() else {
        // No leader, or not answering: nothing to decide on; a migration starts only on a
        // healthy cluster.
        return step(SealAction::Nothing, m);
    };
    let Some(current) = unseal_type_of(&leader_seal.seal_type) else {
        let message = format!(
            "the cluster runs seal {:?}, which the operator cannot migrate",
            leader_seal.seal_type
        );
        let before = m.clone();
        report(&mut m, "UnsupportedSeal", message, now);
        let action = if m == before {
            SealAction::Nothing
        } else {
            SealAction::Record
        };
        return step(action, m);
    };
    if current == target.to {
        if m.aborted_to.is_some() || m.last_error.is_some() {
            let cleared = SealMigrationStatus {
                message: Some(format!("running on the {} seal", seal_type_name(current))),
                ..SealMigrationStatus::default()
            };
            let action = if cleared == m {
                SealAction::Nothing
            } else {
                SealAction::Record
            };
            return step(action, cleared);
        }
        return step(SealAction::Nothing, m);
    }
    if m.aborted_to == Some(target.to) {
        return step(SealAction::Nothing, m);
    }
    let Some(raft) = &observed.raft else {
        return step(SealAction::Nothing, m);
    };
    let all_serve = observed.nodes.len() == raft.peers.len()
        && observed
            .nodes
            .iter()
            .all(|n| serves(observed, raft, &n.id, Some(current)));
    if !all_serve || !raft.autopilot_healthy() {
        return wait(
            m,
            format!(
                "spec.unseal.type is {}: waiting for every server to be unsealed, voting and caught up \
                 before migrating from {}",
                seal_type_name(target.to),
                seal_type_name(current)
            ),
        );
    }
    let mut started = SealMigrationStatus {
        from: Some(current),
        to: Some(target.to),
        started_at: Some(Time(now)),
        ..SealMigrationStatus::default()
    };
    let first = if target.snapshot_first {
        SealMigrationPhase::PreMigrationSnapshot
    } else {
        SealMigrationPhase::RecoveryKey
    };
    enter(&mut started, first, now);
    started.message = Some(format!(
        "migrating from the {} seal to the {} seal",
        seal_type_name(current),
        seal_type_name(target.to)
    ));
    step(SealAction::Record, started)
}

fn snapshot(mut m: SealMigrationStatus, now: Timestamp) -> SealStep {
    if m.failures >= SNAPSHOT_ATTEMPTS {
        let last = m.last_error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
        let message = format!("the pre-migration snapshot failed {SNAPSHOT_ATTEMPTS} times; last: {last}");
        return abort(&m, "PreMigrationSnapshotFailed", message, now);
    }
    enter(&mut m, SealMigrationPhase::RecoveryKey, now);
    m.message = Some("pre-migration snapshot taken".into());
    step(SealAction::TakeSnapshot, m)
}

fn recovery_key(mut m: SealMigrationStatus, observed: &SealObserved) -> SealStep {
    let now = observed.now;
    let Some(leader_seal) = observed.leader_seal() else {
        return wait(m, "waiting for an active server to make the recovery key on".into());
    };
    if leader_seal.recovery_shares > 0 && observed.recovery_key_held {
        let leader = observed.raft.as_ref().map(|r| r.leader.clone());
        enter(&mut m, SealMigrationPhase::Standbys, now);
        m.leader = leader;
        m.message = Some("recovery key held; migrating the standbys".into());
        return step(SealAction::Record, m);
    }
    if leader_seal.recovery_shares > 0 {
        let message = "the cluster already has recovery keys, which the operator does not hold; it \
                       cannot unseal servers in migration mode without one"
            .to_string();
        return abort(&m, "RecoveryKeyUnknown", message, now);
    }
    if m.failures >= RECOVERY_KEY_ATTEMPTS {
        let last = m.last_error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
        let message = format!("making a recovery key failed {RECOVERY_KEY_ATTEMPTS} times; last: {last}");
        return abort(&m, "RecoveryKeyFailed", message, now);
    }
    m.message = Some("making a recovery key (sys/rotate/recovery, verified before it counts)".into());
    step(SealAction::EnsureRecoveryKey, m)
}

/// Highest ordinal first.
fn by_ordinal_desc(observed: &SealObserved, ids: impl Fn(&SealNodeView) -> bool) -> Vec<&SealNodeView> {
    let mut nodes: Vec<&SealNodeView> = observed.nodes.iter().filter(|n| ids(n)).collect();
    nodes.sort_by_key(|n| std::cmp::Reverse(n.ordinal));
    nodes
}

fn timed_out(m: &mut SealMigrationStatus, id: &str, now: Timestamp) {
    if in_phase(m, now) > NODE_TIMEOUT {
        let message = format!("{id} did not come back within {}s", NODE_TIMEOUT.as_secs());
        report(m, "Timeout", message, now);
    }
}

fn standbys(target: SealTarget, mut m: SealMigrationStatus, observed: &SealObserved) -> SealStep {
    let now = observed.now;
    report_refusal(target, &mut m, now);
    let Some(raft) = &observed.raft else {
        return wait(m, "no active server to read raft state from".into());
    };
    let to = m.to.unwrap_or(target.to);
    // A migrated server that became leader (the old leader failed) migrates by itself.
    if observed
        .leader_seal()
        .is_some_and(|s| !s.sealed && !s.migration && s.seal_type == seal_type_name(to))
    {
        enter(&mut m, SealMigrationPhase::Finalize, now);
        m.message = Some(format!("{} took over and migrated the seal", raft.leader));
        return step(SealAction::Record, m);
    }
    let leader = m.leader.clone().unwrap_or_else(|| raft.leader.clone());
    if raft.leader != leader && !m.completed.contains(&raft.leader) {
        // Leadership moved to a server not migrated yet: it is the one migrated last now.
        m.leader = Some(raft.leader.clone());
        m.message = Some(format!("leadership moved to {}; it is migrated last", raft.leader));
        return step(SealAction::Record, m);
    }
    let pending = by_ordinal_desc(observed, |n| n.id != leader && !m.completed.contains(&n.id));
    // A server on the migration configuration is finished before any other is touched.
    if let Some(node) = pending.iter().find(|n| n.stage == SealStage::Migration) {
        let id = node.id.clone();
        if node.seal.as_ref().is_some_and(|s| s.sealed && s.migration) {
            m.message = Some(format!("unsealing {id} with the recovery key (migrate)"));
            return step(SealAction::UnsealMigrate { node_id: id }, m);
        }
        let unsealed = node.seal.as_ref().is_some_and(|s| !s.sealed);
        if unsealed && serves(observed, raft, &id, None) && raft.autopilot_healthy() {
            m.completed.push(id.clone());
            m.phase_started_at = Some(Time(now));
            m.failures = 0;
            m.message = Some(format!("{id} unsealed in migration mode and caught up"));
            return step(SealAction::Record, m);
        }
        timed_out(&mut m, &id, now);
        return wait(
            m,
            format!("waiting for {id} to start in migration mode, unseal and catch up"),
        );
    }
    if let Some(node) = pending.first() {
        if !raft.autopilot_healthy() {
            return wait(m, "waiting for a healthy cluster before the next server".into());
        }
        m.phase_started_at = Some(Time(now));
        m.message = Some(format!(
            "restarting {} with the old seal disabled next to the new one",
            node.id
        ));
        let action = SealAction::RestartNode {
            node_id: node.id.clone(),
            stage: SealStage::Migration,
        };
        return step(action, m);
    }
    enter(&mut m, SealMigrationPhase::StepDown, now);
    m.leader = Some(leader.clone());
    m.message = Some(format!("every standby is in migration mode; stepping down {leader}"));
    step(SealAction::Record, m)
}

fn step_down(target: SealTarget, mut m: SealMigrationStatus, observed: &SealObserved) -> SealStep {
    let now = observed.now;
    report_refusal(target, &mut m, now);
    let to = m.to.unwrap_or(target.to);
    let Some(raft) = &observed.raft else {
        return wait(m, "waiting for a new leader".into());
    };
    let migrated = observed
        .leader_seal()
        .is_some_and(|s| !s.sealed && !s.migration && s.seal_type == seal_type_name(to));
    if migrated {
        enter(&mut m, SealMigrationPhase::Finalize, now);
        m.message = Some(format!("{} migrated the seal to {}", raft.leader, seal_type_name(to)));
        return step(SealAction::Record, m);
    }
    let old_leader = m.leader.clone().unwrap_or_default();
    if raft.leader == old_leader {
        m.message = Some(format!(
            "stepping down {old_leader} so that a migrated server takes over"
        ));
        return step(SealAction::StepDown { node_id: old_leader }, m);
    }
    timed_out(&mut m, &raft.leader, now);
    wait(m, format!("waiting for {} to migrate the seal", raft.leader))
}

fn finalize(target: SealTarget, mut m: SealMigrationStatus, observed: &SealObserved) -> SealStep {
    let now = observed.now;
    report_refusal(target, &mut m, now);
    let to = m.to.unwrap_or(target.to);
    let Some(raft) = &observed.raft else {
        return wait(m, "no active server to read raft state from".into());
    };
    let old_leader = m.leader.clone().unwrap_or_default();
    // The old leader first (it runs the old seal only and cannot serve), then highest ordinal
    // first, the current leader last.
    let mut order: Vec<&SealNodeView> = observed.nodes.iter().filter(|n| !m.completed.contains(&n.id)).collect();
    order.sort_by_key(|n| (n.id != old_leader, n.id == raft.leader, std::cmp::Reverse(n.ordinal)));
    if let Some(node) = order.iter().find(|n| n.stage == SealStage::New) {
        let id = node.id.clone();
        if serves(observed, raft, &id, Some(to)) && raft.autopilot_healthy() {
            m.completed.push(id.clone());
            m.phase_started_at = Some(Time(now));
            m.failures = 0;
            m.message = Some(format!("{id} runs only the {} seal", seal_type_name(to)));
            return step(SealAction::Record, m);
        }
        timed_out(&mut m, &id, now);
        return wait(
            m,
            format!(
                "waiting for {id} to unseal with the {} seal and catch up",
                seal_type_name(to)
            ),
        );
    }
    if let Some(node) = order.first() {
        if node.id == raft.leader {
            m.message = Some(format!("stepping down {} before restarting it", node.id));
            return step(
                SealAction::StepDown {
                    node_id: node.id.clone(),
                },
                m,
            );
        }
        if node.id != old_leader && !raft.autopilot_healthy() {
            return wait(m, "waiting for a healthy cluster before the next server".into());
        }
        m.phase_started_at = Some(Time(now));
        m.message = Some(format!(
            "restarting {} with only the {} seal",
            node.id,
            seal_type_name(to)
        ));
        let action = SealAction::RestartNode {
            node_id: node.id.clone(),
            stage: SealStage::New,
        };
        return step(action, m);
    }
    let from = m.from.unwrap_or(UnsealType::Static);
    let took = m
        .started_at
        .as_ref()
        .map(|t| now.duration_since(t.0).as_secs())
        .unwrap_or_default();
    let snapshot = m
        .pre_migration_snapshot
        .as_ref()
        .map(|s| format!("; pre-migration snapshot: {s}"))
        .unwrap_or_default();
    let done = SealMigrationStatus {
        message: Some(format!(
            "migrated from the {} seal to the {} seal in {took}s{snapshot}",
            seal_type_name(from),
            seal_type_name(to)
        )),
        ..SealMigrationStatus::default()
    };
    step(SealAction::RemoveOldSeal { from }, done)
}

#[cfg(test)]
mod tests;
