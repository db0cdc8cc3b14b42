//! Table tests of the seal-migration flow: the whole procedure step by step as the driver
//! would observe it (three servers, `bao-0` leads), leader last, resuming from every persisted
//! status, and the reasons it reports or gives up with.

use openbao_api::{SealMigrationPhase, SealMigrationStatus, UnsealType};

use super::*;
use crate::flows::fixtures::{Scene, at};

const STATIC: UnsealType = UnsealType::Static;
const TRANSIT: UnsealType = UnsealType::Transit;

fn target(snapshot_first: bool) -> SealTarget {
    SealTarget {
        to: TRANSIT,
        snapshot_first,
    }
}

/// The world as the driver sees it: the upgrade fixtures' raft view plus each server's seal.
#[derive(Clone, Debug)]
struct World {
    observed: SealObserved,
}

fn view(seal: &str, sealed: bool, migration: bool, shares: u32) -> Option<SealView> {
    Some(SealView {
        seal_type: seal.into(),
        sealed,
        migration,
        recovery_shares: shares,
    })
}

impl World {
    /// Three servers on the static seal, all voting and caught up, `bao-0` leads.
    fn static_cluster() -> Self {
        let raft = Scene::blue("2.7.2").at(10).observed.raft;
        let nodes = (0..3)
            .map(|i| SealNodeView {
                id: format!("bao-{i}"),
                ordinal: i,
                running: true,
                stage: SealStage::Old,
                seal: view("static", false, false, 0),
            })
            .collect();
        Self {
            observed: SealObserved {
                now: at(10),
                nodes,
                raft,
                recovery_key_held: false,
            },
        }
    }

    fn node(&mut self, id: &str) -> &mut SealNodeView {
        self.observed.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    fn set(mut self, id: &str, stage: SealStage, seal: Option<SealView>) -> Self {
        let n = self.node(id);
        n.stage = stage;
        n.seal = seal;
        self
    }

    fn recovery_key(mut self) -> Self {
        self.observed.recovery_key_held = true;
        for n in &mut self.observed.nodes {
            if let Some(s) = n.seal.as_mut() {
                s.recovery_shares = 1;
            }
        }
        self
    }

    fn leader(mut self, id: &str) -> Self {
        self.observed.raft.as_mut().unwrap().leader = id.into();
        self
    }

    fn no_leader(mut self) -> Self {
        self.observed.raft = None;
        self
    }

    fn lag(mut self, id: &str, entries: u64) -> Self {
        let servers = &mut self.observed.raft.as_mut().unwrap().autopilot.as_mut().unwrap().servers;
        servers.get_mut(id).unwrap().last_index = 1000 - entries;
        self
    }

    fn at(mut self, secs: i64) -> Self {
        self.observed.now = at(secs);
        self
    }
}

fn next(status: &SealMigrationStatus, world: &World) -> SealStep {
    next_step(target(false), status, &world.observed)
}

/// Persists and reloads the status as JSON, the only thing a restarted operator has.
fn persisted(status: &SealMigrationStatus) -> SealMigrationStatus {
    serde_json::from_str(&serde_json::to_string(status).unwrap()).unwrap()
}

fn restart(id: &str, stage: SealStage) -> SealAction {
    SealAction::RestartNode {
        node_id: id.into(),
        stage,
    }
}

/// Runs the flow against `world` as `apply` changes it after every action, persisting status
/// between steps; returns the actions taken (waits and records left out).
fn drive(
    mut status: SealMigrationStatus,
    mut world: World,
    apply: impl Fn(World, &SealAction) -> World,
) -> (Vec<SealAction>, SealMigrationStatus, World) {
    let mut actions = Vec::new();
    for _ in 0..100 {
        let s = next(&persisted(&status), &world);
        status = s.status;
        if s.action.acts() {
            actions.push(s.action.clone());
        }
        match s.action {
            SealAction::Nothing => return (actions, status, world),
            SealAction::Record | SealAction::Wait => {}
            ref action => world = apply(world, action),
        }
        if matches!(s.action, SealAction::RemoveOldSeal { .. }) {
            return (actions, status, world);
        }
    }
    panic!("no end after 100 steps: {status:?}");
}

/// What real servers do after each action (as verified in docs/seal-migration.md).
fn openbao(world: World, action: &SealAction) -> World {
    match action {
        SealAction::EnsureRecoveryKey => world.recovery_key(),
        SealAction::RestartNode { node_id, stage } => match stage {
            // Restarted in migration mode: sealed until unsealed with migrate.
            SealStage::Migration => world.set(node_id, *stage, view("transit", true, true, 1)),
            SealStage::New => world.set(node_id, *stage, view("transit", false, false, 1)),
            SealStage::Old => world.set(node_id, *stage, view("static", false, false, 1)),
        },
        // Unsealed in migration mode: seal-status answers 500 "does not match loaded type".
        SealAction::UnsealMigrate { node_id } => {
            world.set(node_id, SealStage::Migration, view("transit", false, true, 1))
        }
        SealAction::StepDown { node_id } => {
            // A migrated standby takes over and migrates; the old leader's seal then mismatches.
            let next = if node_id == "bao-0" { "bao-2" } else { "bao-1" };
            let mut w = world.leader(next);
            for n in &mut w.observed.nodes {
                if n.stage == SealStage::Migration {
                    n.seal = view("transit", false, false, 1);
                }
                if n.stage == SealStage::Old {
                    n.seal = view("static", false, true, 1);
                }
            }
            w
        }
        _ => world,
    }
}

#[test]
fn nothing_to_do_when_the_cluster_already_runs_the_spec_seal() {
    let s = next_step(
        SealTarget {
            to: STATIC,
            snapshot_first: false,
        },
        &SealMigrationStatus::default(),
        &World::static_cluster().observed,
    );
    assert_eq!(s.action, SealAction::Nothing);
    assert_eq!(s.status, SealMigrationStatus::default());
}

#[test]
fn migrates_standbys_highest_ordinal_first_then_steps_down_and_finalizes_the_leader_first() {
    let (actions, status, world) = drive(SealMigrationStatus::default(), World::static_cluster(), openbao);
    let unseal = |id: &str| SealAction::UnsealMigrate { node_id: id.into() };
    let step_down = |id: &str| SealAction::StepDown { node_id: id.into() };
    assert_eq!(
        actions,
        [
            SealAction::EnsureRecoveryKey,
            restart("bao-2", SealStage::Migration),
            unseal("bao-2"),
            restart("bao-1", SealStage::Migration),
            unseal("bao-1"),
            step_down("bao-0"),
            // The old leader first: it runs only the old seal and cannot serve any more.
            restart("bao-0", SealStage::New),
            restart("bao-1", SealStage::New),
            // The current leader last, after a step-down.
            step_down("bao-2"),
            restart("bao-2", SealStage::New),
            SealAction::RemoveOldSeal { from: STATIC },
        ]
    );
    assert_eq!(status.phase, SealMigrationPhase::Idle);
    assert!(
        status
            .message
            .as_deref()
            .unwrap()
            .starts_with("migrated from the static seal to the transit seal"),
        "{status:?}"
    );
    assert!(world.observed.nodes.iter().all(|n| n.stage == SealStage::New));
    // Once done, nothing more.
    assert_eq!(next(&status, &world).action, SealAction::Nothing);
}

#[test]
fn a_snapshot_comes_first_when_backups_are_configured() {
    let s = next_step(
        target(true),
        &SealMigrationStatus::default(),
        &World::static_cluster().observed,
    );
    assert_eq!(s.status.phase, SealMigrationPhase::PreMigrationSnapshot);
    assert_eq!(s.status.from, Some(STATIC));
    let s = next_step(target(true), &s.status, &World::static_cluster().observed);
    assert_eq!(s.action, SealAction::TakeSnapshot);
    assert_eq!(s.status.phase, SealMigrationPhase::RecoveryKey);
    // A snapshot that keeps failing gives the migration up before any server changed.
    let mut failing = s.status.clone();
    failing.phase = SealMigrationPhase::PreMigrationSnapshot;
    failing.failures = 3;
    let s = next_step(target(true), &failing, &World::static_cluster().observed);
    assert_eq!(s.status.phase, SealMigrationPhase::Idle);
    assert_eq!(s.status.aborted_to, Some(TRANSIT));
    assert_eq!(s.status.last_error.unwrap().reason, "PreMigrationSnapshotFailed");
}

#[test]
fn resumes_from_every_persisted_status_with_the_same_next_action() {
    // Drive once, keeping each (status, world) before every step; then a "restarted operator"
    // given only the persisted status decides exactly what the first one decided.
    let mut status = SealMigrationStatus::default();
    let mut world = World::static_cluster();
    let mut seen = 0;
    for _ in 0..100 {
        let first = next(&status, &world);
        let resumed = next(&persisted(&status), &world);
        assert_eq!(first, resumed, "resume from {status:?}");
        seen += 1;
        status = first.status;
        if first.action.acts() {
            // The action is repeated after a crash that lost its status write: it must be
            // idempotent on the world (the platform's contract) and the flow must pick it up.
            world = openbao(world, &first.action);
        }
        if matches!(first.action, SealAction::RemoveOldSeal { .. } | SealAction::Nothing) {
            break;
        }
    }
    assert!(seen > 15, "only {seen} steps");
    assert_eq!(status.phase, SealMigrationPhase::Idle);
}

#[test]
fn a_crash_after_an_action_whose_status_was_lost_repeats_nothing_harmful() {
    // bao-2 was restarted in migration mode, but the status still says "restart bao-2".
    let status = SealMigrationStatus {
        phase: SealMigrationPhase::Standbys,
        from: Some(STATIC),
        to: Some(TRANSIT),
        leader: Some("bao-0".into()),
        phase_started_at: Some(Time(at(10))),
        ..Default::default()
    };
    let world =
        World::static_cluster()
            .recovery_key()
            .set("bao-2", SealStage::Migration, view("transit", true, true, 1));
    assert_eq!(
        next(&status, &world).action,
        SealAction::UnsealMigrate {
            node_id: "bao-2".into()
        },
        "observed in migration mode: unseal it, no second restart"
    );
    // Unsealed already (the unseal's status was lost): caught up -> done, no second unseal.
    let world = world.set("bao-2", SealStage::Migration, view("transit", false, true, 1));
    let s = next(&status, &world);
    assert_eq!(s.action, SealAction::Record);
    assert_eq!(s.status.completed, ["bao-2"]);
}

#[test]
fn a_server_is_not_counted_before_it_is_unsealed_and_caught_up() {
    let status = SealMigrationStatus {
        phase: SealMigrationPhase::Standbys,
        from: Some(STATIC),
        to: Some(TRANSIT),
        leader: Some("bao-0".into()),
        phase_started_at: Some(Time(at(10))),
        ..Default::default()
    };
    let base = World::static_cluster().recovery_key();
    // Restarted, not answering yet.
    let w = base.clone().set("bao-2", SealStage::Migration, None);
    assert_eq!(next(&status, &w).action, SealAction::Wait);
    // Unsealed but behind the leader.
    let w = base
        .clone()
        .set("bao-2", SealStage::Migration, view("transit", false, true, 1))
        .lag("bao-2", 500);
    assert_eq!(next(&status, &w).action, SealAction::Wait);
    // Never more than one server away: bao-1 is not touched while bao-2 waits.
    let s = next(&status, &w.clone().at(10 + 11 * 60));
    assert_eq!(s.action, SealAction::Wait);
    assert_eq!(s.status.last_error.unwrap().reason, "Timeout");
}

#[test]
fn no_leader_means_waiting_and_a_moved_leadership_is_followed() {
    let status = SealMigrationStatus {
        phase: SealMigrationPhase::Standbys,
        from: Some(STATIC),
        to: Some(TRANSIT),
        leader: Some("bao-0".into()),
        ..Default::default()
    };
    let w = World::static_cluster().recovery_key();
    assert_eq!(next(&status, &w.clone().no_leader()).action, SealAction::Wait);
    // bao-1 (not migrated) took over: it becomes the one migrated last.
    let s = next(&status, &w.clone().leader("bao-1"));
    assert_eq!(s.action, SealAction::Record);
    assert_eq!(s.status.leader.as_deref(), Some("bao-1"));
    assert_eq!(
        next(&s.status, &w.leader("bao-1")).action,
        restart("bao-2", SealStage::Migration)
    );
}

#[test]
fn recovery_keys_the_operator_does_not_hold_give_the_migration_up() {
    let status = SealMigrationStatus {
        phase: SealMigrationPhase::RecoveryKey,
        from: Some(STATIC),
        to: Some(TRANSIT),
        ..Default::default()
    };
    let mut w = World::static_cluster().recovery_key();
    w.observed.recovery_key_held = false;
    let s = next(&status, &w);
    assert_eq!(s.status.phase, SealMigrationPhase::Idle);
    assert_eq!(s.status.aborted_to, Some(TRANSIT));
    assert_eq!(s.status.last_error.as_ref().unwrap().reason, "RecoveryKeyUnknown");
    // Latched: it does not start again by itself.
    assert_eq!(next(&s.status, &World::static_cluster()).action, SealAction::Nothing);
    // Back on the running seal: the latch goes.
    let back = next_step(
        SealTarget {
            to: STATIC,
            snapshot_first: false,
        },
        &s.status,
        &World::static_cluster().observed,
    );
    assert_eq!(back.action, SealAction::Record);
    assert_eq!(back.status.aborted_to, None);
}

#[test]
fn a_spec_change_before_any_restart_aborts_and_after_is_refused() {
    let back = SealTarget {
        to: STATIC,
        snapshot_first: false,
    };
    let before = SealMigrationStatus {
        phase: SealMigrationPhase::RecoveryKey,
        from: Some(STATIC),
        to: Some(TRANSIT),
        ..Default::default()
    };
    let s = next_step(back, &before, &World::static_cluster().observed);
    assert_eq!(s.status.phase, SealMigrationPhase::Idle);
    assert_eq!(s.status.last_error.unwrap().reason, "SealChanged");

    let after = SealMigrationStatus {
        phase: SealMigrationPhase::Standbys,
        leader: Some("bao-0".into()),
        ..before
    };
    let w = World::static_cluster()
        .recovery_key()
        .set("bao-2", SealStage::Migration, view("transit", true, true, 1));
    let s = next_step(back, &after, &w.observed);
    assert_eq!(
        s.action,
        SealAction::UnsealMigrate {
            node_id: "bao-2".into()
        }
    );
    assert_eq!(s.status.last_error.unwrap().reason, "SealChangeRefused");
}

#[test]
fn an_unhealthy_cluster_does_not_start_a_migration() {
    let w = World::static_cluster().set("bao-1", SealStage::Old, view("static", true, false, 0));
    let s = next(&SealMigrationStatus::default(), &w);
    assert_eq!(s.action, SealAction::Wait);
    assert_eq!(s.status.phase, SealMigrationPhase::Idle);
    let w = World::static_cluster().lag("bao-2", 500);
    assert_eq!(next(&SealMigrationStatus::default(), &w).action, SealAction::Wait);
}

#[test]
fn the_old_seal_goes_only_after_every_server_runs_the_new_one() {
    let (actions, ..) = drive(SealMigrationStatus::default(), World::static_cluster(), openbao);
    let last_restart = actions
        .iter()
        .rposition(|a| matches!(a, SealAction::RestartNode { .. }))
        .unwrap();
    let removal = actions
        .iter()
        .position(|a| matches!(a, SealAction::RemoveOldSeal { .. }))
        .unwrap();
    assert!(removal > last_restart && removal == actions.len() - 1);
}

#[test]
fn a_leader_with_the_highest_ordinal_still_goes_last() {
    let status = SealMigrationStatus {
        phase: SealMigrationPhase::RecoveryKey,
        from: Some(STATIC),
        to: Some(TRANSIT),
        ..Default::default()
    };
    let world = World::static_cluster().recovery_key().leader("bao-2");
    let s = next(&status, &world);
    assert_eq!(s.status.leader.as_deref(), Some("bao-2"));
    assert_eq!(next(&s.status, &world).action, restart("bao-1", SealStage::Migration));
}
