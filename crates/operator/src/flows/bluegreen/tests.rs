//! Table tests of the blue/green flow, phase by phase, including OpenBao's traps and
//! `spec.version` changes in every phase.

use openbao_api::{OpenBaoClusterSpec, OpenBaoClusterStatus, UpgradePhase, UpgradeStrategy};
use openbao_client::HealthState;

use crate::flows::fixtures::*;
use crate::flows::{Action, Deployment, FlowStep, next_step};

const BG: UpgradeStrategy = UpgradeStrategy::BlueGreen;

fn step(spec: &OpenBaoClusterSpec, status: &OpenBaoClusterStatus, scene: &Scene) -> FlowStep {
    let step = next_step(spec, status, &scene.observed);
    // Every decision is a pure function of its inputs.
    assert_eq!(step, next_step(spec, status, &scene.observed));
    step
}

fn phase(step: &FlowStep) -> UpgradePhase {
    upgrade(&step.status).phase
}

fn last_reason(step: &FlowStep) -> String {
    upgrade(&step.status)
        .last_error
        .as_ref()
        .map(|e| e.reason.clone())
        .unwrap_or_default()
}

fn last_message(step: &FlowStep) -> String {
    upgrade(&step.status)
        .last_error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default()
}

fn with_spec(f: impl FnOnce(&mut OpenBaoClusterSpec)) -> OpenBaoClusterSpec {
    let mut spec = bg_spec();
    f(&mut spec);
    spec
}

// ---- Idle ----

#[test]
fn idle_with_the_running_version_does_nothing() {
    let current = spec(FROM, BG);
    let s = step(&current, &idle_status(), &Scene::blue(FROM));
    assert_eq!(s.action, Action::Nothing);
}

#[test]
fn uninitialized_cluster_is_not_upgraded() {
    let status = OpenBaoClusterStatus::default();
    let s = step(&bg_spec(), &status, &Scene::blue(FROM));
    assert_eq!(s.action, Action::Nothing);
    assert_eq!(s.status.current_version, None);
}

#[test]
fn downgrade_is_refused_with_a_reason_and_without_churn() {
    let older = spec("2.6.0", BG);
    let s = step(&older, &idle_status(), &Scene::blue(FROM));
    assert_eq!(s.action, Action::Record);
    assert_eq!(phase(&s), UpgradePhase::Idle);
    assert_eq!(last_reason(&s), "DowngradeRefused");
    assert!(
        last_message(&s).contains("2.6.0 is older than the running 2.6.2"),
        "{}",
        last_message(&s)
    );
    // The refusal is recorded once; the next call changes nothing.
    let again = step(&older, &s.status, &Scene::blue(FROM).at(60));
    assert_eq!(again.action, Action::Nothing);
    assert_eq!(again.status, s.status);
    // Pre-releases of the running version are older too.
    let s = step(&spec("2.6.2-rc1", BG), &idle_status(), &Scene::blue(FROM));
    assert_eq!(last_reason(&s), "DowngradeRefused");
}

#[test]
fn unparseable_version_is_refused() {
    let mut status = idle_status();
    status.current_version = Some("weird".into());
    let s = step(&bg_spec(), &status, &Scene::blue(FROM));
    assert_eq!(last_reason(&s), "InvalidVersion");
    assert_eq!(phase(&s), UpgradePhase::Idle);
}

#[test]
fn newer_version_starts_deploying_green() {
    let s = step(&bg_spec(), &idle_status(), &Scene::blue(FROM));
    assert_eq!(s.action, Action::Record);
    let u = upgrade(&s.status);
    assert_eq!(u.phase, UpgradePhase::DeployingGreen);
    assert_eq!(u.strategy, Some(BG));
    assert_eq!(
        (u.from_version.as_deref(), u.to_version.as_deref()),
        (Some(FROM), Some(TO))
    );
    assert!(u.rollback_available && u.started_at.is_some() && u.phase_started_at.is_some());
    let bg = s.status.blue_green.as_ref().unwrap();
    assert_eq!((bg.blue_revision.clone(), bg.green_revision.clone()), (None, green()));
}

#[test]
fn snapshot_first_when_asked() {
    let spec = with_spec(|s| s.upgrade.pre_upgrade_snapshot = true);
    let s = step(&spec, &idle_status(), &Scene::blue(FROM));
    assert_eq!(phase(&s), UpgradePhase::PreUpgradeSnapshot);
    let s = step(&spec, &s.status, &Scene::blue(FROM));
    assert_eq!(s.action, Action::TakeSnapshot);
    // The phase after a successful snapshot; the driver adds the handle.
    assert_eq!(phase(&s), UpgradePhase::DeployingGreen);
}

#[test]
fn unhealthy_cluster_is_not_upgraded_yet() {
    let mut sealed = Scene::blue(FROM);
    sealed.node_mut("bao-2").health = None;
    let cases = [
        ("no leader", Scene::blue(FROM).no_leader()),
        ("autopilot unhealthy", Scene::blue(FROM).autopilot_healthy(false)),
        ("a server not answering", sealed),
        (
            "a server missing",
            Scene::blue(FROM).remove_nodes(&None).green_started(0, None),
        ),
    ];
    for (what, scene) in cases {
        let s = step(&bg_spec(), &idle_status(), &scene);
        assert_eq!(s.action, Action::Wait, "{what}");
        assert_eq!(phase(&s), UpgradePhase::Idle, "{what}");
        let message = upgrade(&s.status).message.clone().unwrap();
        assert!(message.contains("waits for a healthy cluster"), "{what}: {message}");
    }
}

fn latched() -> OpenBaoClusterStatus {
    let mut status = idle_status();
    status.upgrade = Some(openbao_api::UpgradeStatus {
        aborted_version: Some(TO.into()),
        ..Default::default()
    });
    status
}

#[test]
fn aborted_upgrade_does_not_start_again_by_itself() {
    let s = step(&bg_spec(), &latched(), &Scene::blue(FROM));
    assert_eq!(s.action, Action::Record, "message explains the latch");
    assert_eq!(phase(&s), UpgradePhase::Idle);
    assert!(upgrade(&s.status).message.as_ref().unwrap().contains("requests.retry"));
    // A message from the abort itself is kept.
    let mut explained = latched();
    explained.upgrade.as_mut().unwrap().message = Some("rolled back to 2.6.2 (...)".into());
    let kept = step(&bg_spec(), &explained, &Scene::blue(FROM));
    assert_eq!((kept.action.clone(), kept.status.clone()), (Action::Nothing, explained));
    let again = step(&bg_spec(), &s.status, &Scene::blue(FROM));
    assert_eq!(again.action, Action::Nothing);
}

#[test]
fn retry_token_restarts_an_aborted_upgrade_once() {
    let spec = with_spec(|s| s.upgrade.requests.retry = Some("r1".into()));
    let s = step(&spec, &latched(), &Scene::blue(FROM));
    assert_eq!(phase(&s), UpgradePhase::DeployingGreen);
    let u = upgrade(&s.status);
    assert_eq!(u.acknowledged.retry.as_deref(), Some("r1"));
    assert_eq!(u.aborted_version, None);
}

#[test]
fn changed_version_clears_the_latch() {
    let newer = spec("2.7.3", BG);
    let s = step(&newer, &latched(), &Scene::blue(FROM));
    assert_eq!(phase(&s), UpgradePhase::DeployingGreen);
    assert_eq!(upgrade(&s.status).to_version.as_deref(), Some("2.7.3"));
    assert_eq!(s.status.blue_green.unwrap().green_revision.as_deref(), Some("v2-7-3"));
    // Reverting to the running version clears it too.
    let s = step(&spec(FROM, BG), &latched(), &Scene::blue(FROM));
    assert_eq!(upgrade(&s.status).aborted_version, None);
}

#[test]
fn request_tokens_without_an_upgrade_are_acknowledged_and_ignored() {
    let mut current = spec(FROM, BG);
    current.upgrade.requests.promote = Some("p1".into());
    current.upgrade.requests.rollback = Some("b1".into());
    let s = step(&current, &idle_status(), &Scene::blue(FROM));
    assert_eq!(s.action, Action::Record);
    let u = upgrade(&s.status);
    assert_eq!(
        (u.acknowledged.promote.as_deref(), u.acknowledged.rollback.as_deref()),
        (Some("p1"), Some("b1"))
    );
    assert_eq!(u.phase, UpgradePhase::Idle);
    assert_eq!(step(&current, &s.status, &Scene::blue(FROM)).action, Action::Nothing);
}

// ---- DeployingGreen ----

fn deploying() -> OpenBaoClusterStatus {
    in_phase(UpgradePhase::DeployingGreen, BG)
}

fn deploy_action() -> Action {
    Action::DeployNodes(Deployment {
        revision: GREEN.into(),
        version: TO.into(),
        replicas: 3,
        join: None,
    })
}

#[test]
fn deploying_green_creates_missing_servers_then_waits_for_them() {
    let s = step(&bg_spec(), &deploying(), &Scene::blue(FROM));
    assert_eq!(s.action, deploy_action());
    let s = step(&bg_spec(), &deploying(), &Scene::blue(FROM).green_started(2, None));
    assert_eq!(s.action, deploy_action(), "a missing server is deployed again");
    let s = step(
        &bg_spec(),
        &deploying(),
        &Scene::blue(FROM).green_started(3, Some(HealthState::Sealed)),
    );
    assert_eq!(s.action, Action::Wait);
    assert!(
        upgrade(&s.status)
            .message
            .as_ref()
            .unwrap()
            .contains("0/3 green servers unsealed")
    );
    let s = step(
        &bg_spec(),
        &deploying(),
        &Scene::blue(FROM).green_started(3, Some(HealthState::Standby)),
    );
    assert_eq!(
        (s.action.clone(), phase(&s)),
        (Action::Record, UpgradePhase::JoiningMesh)
    );
}

#[test]
fn crashed_green_server_is_deployed_again() {
    let mut scene = Scene::blue(FROM).green_started(3, Some(HealthState::Standby));
    scene.node_mut("bao-v2-7-2-1").running = false;
    let s = step(&bg_spec(), &deploying(), &scene);
    assert_eq!(s.action, deploy_action());
}

#[test]
fn deploying_green_that_never_unseals_is_rolled_back_after_the_timeout() {
    let scene = Scene::blue(FROM)
        .green_started(3, Some(HealthState::Sealed))
        .at(11 * 60);
    let s = step(&bg_spec(), &deploying(), &scene);
    assert_eq!(
        (s.action.clone(), phase(&s)),
        (Action::Record, UpgradePhase::RollingBack)
    );
    assert_eq!(last_reason(&s), "Timeout");
}

#[test]
fn repeated_failures_roll_back_before_the_point_of_no_return() {
    let mut status = deploying();
    status.upgrade.as_mut().unwrap().failures = 5;
    let s = step(&bg_spec(), &status, &Scene::blue(FROM));
    assert_eq!(phase(&s), UpgradePhase::RollingBack);
    assert_eq!(last_reason(&s), "TooManyFailures");
    // maxJobFailures is honoured.
    status.upgrade.as_mut().unwrap().failures = 2;
    let spec = with_spec(|s| s.upgrade.blue_green.max_job_failures = 3);
    assert_eq!(
        phase(&step(&spec, &status, &Scene::blue(FROM))),
        UpgradePhase::DeployingGreen
    );
}

/// Before the point of no return, a changed `spec.version` or a rollback request rolls back.
#[test]
fn every_reversible_phase_rolls_back_on_request_or_version_change() {
    let scenes = [
        (UpgradePhase::PreUpgradeSnapshot, Scene::blue(FROM)),
        (UpgradePhase::DeployingGreen, Scene::blue(FROM).green_started(2, None)),
        (
            UpgradePhase::JoiningMesh,
            Scene::blue(FROM).green_started(3, Some(HealthState::Standby)),
        ),
        (UpgradePhase::Syncing, Scene::blue(FROM).green_joined(false, 500)),
        (
            UpgradePhase::AwaitingPromotion,
            Scene::blue(FROM).green_joined(false, 0),
        ),
        (UpgradePhase::Promoting, Scene::blue(FROM).green_joined(true, 0)),
    ];
    for (p, scene) in scenes {
        let status = in_phase(p, BG);
        let reverted = spec(FROM, BG);
        let s = step(&reverted, &status, &scene);
        assert_eq!(phase(&s), UpgradePhase::RollingBack, "{p:?} reverted");
        assert_eq!(last_reason(&s), "VersionChanged", "{p:?}");
        let other = spec("2.8.0", BG);
        assert_eq!(
            phase(&step(&other, &status, &scene)),
            UpgradePhase::RollingBack,
            "{p:?} to 2.8.0"
        );
        let asked = with_spec(|s| s.upgrade.requests.rollback = Some("back-1".into()));
        let s = step(&asked, &status, &scene);
        assert_eq!(phase(&s), UpgradePhase::RollingBack, "{p:?} asked");
        assert_eq!(last_reason(&s), "RollbackRequested");
        assert_eq!(upgrade(&s.status).acknowledged.rollback.as_deref(), Some("back-1"));
    }
}

// ---- JoiningMesh, Syncing, AwaitingPromotion ----

#[test]
fn joining_mesh_waits_until_every_green_server_is_a_raft_peer() {
    let status = in_phase(UpgradePhase::JoiningMesh, BG);
    let scene = Scene::blue(FROM).green_started(3, Some(HealthState::Standby));
    let s = step(&bg_spec(), &status, &scene);
    assert_eq!(s.action, Action::Wait);
    assert!(upgrade(&s.status).message.as_ref().unwrap().contains("0/3"));
    let s = step(
        &bg_spec(),
        &status,
        &Scene::blue(FROM)
            .green_started(3, Some(HealthState::Standby))
            .no_leader(),
    );
    assert_eq!(s.action, Action::Wait);
    let s = step(&bg_spec(), &status, &Scene::blue(FROM).green_joined(false, 900));
    assert_eq!(phase(&s), UpgradePhase::Syncing);
}

#[test]
fn syncing_waits_for_catch_up_and_min_sync_duration() {
    let status = in_phase(UpgradePhase::Syncing, BG);
    let lagging = Scene::blue(FROM).green_joined(false, 101);
    assert_eq!(step(&bg_spec(), &status, &lagging).action, Action::Wait);
    let caught_up = Scene::blue(FROM).green_joined(false, 100);
    let s = step(&bg_spec(), &status, &caught_up);
    assert_eq!(phase(&s), UpgradePhase::Promoting);
    let spec = with_spec(|s| s.upgrade.blue_green.min_sync_duration = Some("1m".into()));
    assert_eq!(step(&spec, &status, &caught_up.clone().at(59)).action, Action::Wait);
    assert_eq!(phase(&step(&spec, &status, &caught_up.at(61))), UpgradePhase::Promoting);
}

#[test]
fn without_auto_promote_the_upgrade_holds_until_a_promote_token() {
    let manual = with_spec(|s| s.upgrade.blue_green.auto_promote = false);
    let scene = Scene::blue(FROM).green_joined(false, 0);
    let s = step(&manual, &in_phase(UpgradePhase::Syncing, BG), &scene);
    assert_eq!(phase(&s), UpgradePhase::AwaitingPromotion);
    let held = step(&manual, &s.status, &scene.clone().at(3600));
    assert_eq!(held.action, Action::Nothing, "holds without polling");
    assert_eq!(held.status, s.status);
    let mut promote = manual.clone();
    promote.upgrade.requests.promote = Some("go".into());
    let s = step(&promote, &s.status, &scene);
    assert_eq!(phase(&s), UpgradePhase::Promoting);
    assert_eq!(upgrade(&s.status).acknowledged.promote.as_deref(), Some("go"));
    // The same token again does not promote another upgrade.
    let mut status = in_phase(UpgradePhase::AwaitingPromotion, BG);
    status.upgrade.as_mut().unwrap().acknowledged.promote = Some("go".into());
    assert_eq!(phase(&step(&promote, &status, &scene)), UpgradePhase::AwaitingPromotion);
}

// ---- Promoting ----

fn promoting() -> OpenBaoClusterStatus {
    in_phase(UpgradePhase::Promoting, BG)
}

#[test]
fn promoting_promotes_each_non_voter_once() {
    let scene = Scene::blue(FROM).green_joined(false, 0);
    let s = step(&bg_spec(), &promoting(), &scene);
    assert_eq!(
        s.action,
        Action::Promote {
            node_id: "bao-v2-7-2-0".into()
        }
    );
    // Autopilot already means bao-v2-7-2-0 to vote, raft suffrage has not followed yet:
    // promoting it again would be a 500 ("server is not a non-voter").
    let scene = scene.role("bao-v2-7-2-0", false, true);
    let s = step(&bg_spec(), &promoting(), &scene);
    assert_eq!(
        s.action,
        Action::Promote {
            node_id: "bao-v2-7-2-1".into()
        }
    );
    let scene = scene
        .role("bao-v2-7-2-1", false, true)
        .role("bao-v2-7-2-2", false, true);
    let s = step(&bg_spec(), &promoting(), &scene);
    assert_eq!(s.action, Action::Wait, "suffrage has not followed");
    assert!(upgrade(&s.status).rollback_available);
}

#[test]
fn promoting_crosses_the_point_of_no_return_once_green_votes() {
    let scene = Scene::blue(FROM).green_joined(true, 0);
    let s = step(&bg_spec(), &promoting(), &scene.clone().autopilot_healthy(false));
    assert_eq!(s.action, Action::Wait);
    let s = step(&bg_spec(), &promoting(), &scene);
    assert_eq!(phase(&s), UpgradePhase::DemotingBlue);
    let u = upgrade(&s.status);
    assert!(!u.rollback_available);
    assert!(u.message.as_ref().unwrap().contains("point of no return"));
}

#[test]
fn promoting_waits_for_every_green_server_to_serve() {
    let mut scene = Scene::blue(FROM).green_joined(false, 0);
    scene.node_mut("bao-v2-7-2-2").health = None;
    assert_eq!(step(&bg_spec(), &promoting(), &scene).action, Action::Wait);
}

#[test]
fn once_green_has_led_rollback_is_refused_and_the_upgrade_continues() {
    let scene = Scene::blue(FROM)
        .green_joined(true, 0)
        .leader("bao-v2-7-2-1")
        .role("bao-v2-7-2-2", false, false);
    let asked = with_spec(|s| s.upgrade.requests.rollback = Some("back".into()));
    let s = step(&asked, &promoting(), &scene);
    assert_eq!(
        s.action,
        Action::Promote {
            node_id: "bao-v2-7-2-2".into()
        }
    );
    assert_eq!(last_reason(&s), "RollbackRefused");
    assert!(last_message(&s).contains("way back to 2.6.2"), "{}", last_message(&s));
    let u = upgrade(&s.status);
    assert!(!u.rollback_available);
    assert_eq!(u.acknowledged.rollback.as_deref(), Some("back"));
    // Also after green stopped leading: the flag is sticky.
    let s2 = step(&asked, &s.status, &scene.clone().leader("bao-0"));
    assert!(!upgrade(&s2.status).rollback_available);
    // A reverted version is refused as well, and failures or timeouts no longer roll back.
    let s = step(&spec(FROM, BG), &promoting(), &scene);
    assert_eq!(last_reason(&s), "VersionChangeRefused");
    assert_eq!(phase(&s), UpgradePhase::Promoting);
    let mut failing = promoting();
    failing.upgrade.as_mut().unwrap().failures = 9;
    assert_eq!(
        phase(&step(&bg_spec(), &failing, &scene.at(3600))),
        UpgradePhase::Promoting
    );
}

// ---- DemotingBlue ----

fn demoting() -> OpenBaoClusterStatus {
    in_phase(UpgradePhase::DemotingBlue, BG)
}

fn promoted() -> Scene {
    Scene::blue(FROM).green_joined(true, 0)
}

#[test]
fn demoting_blue_moves_traffic_first() {
    let s = step(&bg_spec(), &demoting(), &promoted());
    assert_eq!(s.action, Action::SwitchTraffic { to: green() });
}

#[test]
fn demoting_blue_demotes_followers_then_steps_the_leader_down_then_demotes_it() {
    let scene = promoted().traffic(green());
    let s = step(&bg_spec(), &demoting(), &scene);
    assert_eq!(
        s.action,
        Action::Demote {
            node_id: "bao-1".into()
        },
        "never the leader first"
    );
    let scene = scene.role("bao-1", true, false);
    assert_eq!(
        step(&bg_spec(), &demoting(), &scene).action,
        Action::Demote {
            node_id: "bao-2".into()
        }
    );
    let scene = scene.role("bao-2", false, false);
    // bao-1 is demoted but raft still counts its vote: a step-down now could elect it.
    assert_eq!(step(&bg_spec(), &demoting(), &scene).action, Action::Wait);
    let scene = scene.role("bao-1", false, false);
    let s = step(&bg_spec(), &demoting(), &scene);
    assert_eq!(
        s.action,
        Action::StepDown {
            node_id: "bao-0".into()
        }
    );
    // Leadership moved to green; the old leader is still a voter.
    let scene = scene.leader("bao-v2-7-2-2");
    assert_eq!(
        step(&bg_spec(), &demoting(), &scene).action,
        Action::Demote {
            node_id: "bao-0".into()
        }
    );
    // Demoted, raft suffrage not yet changed: wait.
    let scene = scene.role("bao-0", true, false);
    assert_eq!(step(&bg_spec(), &demoting(), &scene).action, Action::Wait);
    let scene = scene.role("bao-0", false, false);
    let s = step(&bg_spec(), &demoting(), &scene);
    assert_eq!(phase(&s), UpgradePhase::Cleanup);
    // Nothing was removed from raft in this phase.
    assert!(!matches!(s.action, Action::RemovePeer { .. }));
}

#[test]
fn demoting_blue_without_a_leader_waits() {
    let scene = promoted().traffic(green()).no_leader();
    assert_eq!(step(&bg_spec(), &demoting(), &scene).action, Action::Wait);
}

#[test]
fn past_the_point_of_no_return_rollback_and_version_changes_are_refused() {
    let mut status = demoting();
    status.upgrade.as_mut().unwrap().pre_upgrade_snapshot = Some("s3://backups/bao/pre-upgrade-1.snap".into());
    let asked = with_spec(|s| s.upgrade.requests.rollback = Some("please".into()));
    let s = step(&asked, &status, &promoted());
    assert_eq!(s.action, Action::SwitchTraffic { to: green() }, "the upgrade goes on");
    assert_eq!(phase(&s), UpgradePhase::DemotingBlue);
    assert_eq!(last_reason(&s), "RollbackRefused");
    assert!(last_message(&s).contains("restoring the pre-upgrade snapshot s3://backups/bao/pre-upgrade-1.snap"));
    assert_eq!(upgrade(&s.status).acknowledged.rollback.as_deref(), Some("please"));

    for (p, scene) in [
        (UpgradePhase::DemotingBlue, promoted()),
        (UpgradePhase::Cleanup, Scene::blue(FROM).green_leads()),
    ] {
        let status = in_phase(p, BG);
        let s = step(&spec(FROM, BG), &status, &scene);
        assert_eq!(phase(&s), p, "{p:?}: not rolled back");
        assert_eq!(last_reason(&s), "VersionChangeRefused", "{p:?}");
        assert!(last_message(&s).contains("finishing the upgrade to 2.7.2"), "{p:?}");
        assert!(last_message(&s).contains("preUpgradeSnapshot was off"), "{p:?}");
        // Failures never roll back from here.
        let mut failing = status.clone();
        failing.upgrade.as_mut().unwrap().failures = 50;
        assert_eq!(phase(&step(&bg_spec(), &failing, &scene)), p);
    }
}

#[test]
fn slow_committed_phase_is_reported_not_rolled_back() {
    let scene = promoted().traffic(green()).at(6 * 60).no_leader();
    let s = step(&bg_spec(), &demoting(), &scene);
    assert_eq!(
        (s.action.clone(), phase(&s)),
        (Action::Wait, UpgradePhase::DemotingBlue)
    );
    assert_eq!(last_reason(&s), "Slow");
}

// ---- Cleanup ----

fn cleanup() -> OpenBaoClusterStatus {
    in_phase(UpgradePhase::Cleanup, BG)
}

#[test]
fn cleanup_removes_blue_peers_through_the_green_leader_then_stops_blue() {
    let scene = Scene::blue(FROM).green_leads();
    assert_eq!(
        step(&bg_spec(), &cleanup(), &scene).action,
        Action::RemovePeer {
            node_id: "bao-0".into()
        }
    );
    let scene = scene.remove_peer("bao-0").remove_peer("bao-1");
    assert_eq!(
        step(&bg_spec(), &cleanup(), &scene).action,
        Action::RemovePeer {
            node_id: "bao-2".into()
        }
    );
    let scene = scene.remove_peer("bao-2");
    // Removed peers still answer as standbys: they are stopped and their storage deleted.
    assert_eq!(
        step(&bg_spec(), &cleanup(), &scene).action,
        Action::RemoveNodes { revision: None }
    );
    let s = step(&bg_spec(), &cleanup(), &scene.remove_nodes(&None));
    assert_eq!(s.action, Action::Record);
    let u = upgrade(&s.status);
    assert_eq!(u.phase, UpgradePhase::Idle);
    assert!(
        u.message
            .as_ref()
            .unwrap()
            .starts_with("upgraded from 2.6.2 to 2.7.2 (BlueGreen)")
    );
    assert_eq!(s.status.current_version.as_deref(), Some(TO));
    let bg = s.status.blue_green.as_ref().unwrap();
    assert_eq!((bg.blue_revision.clone(), bg.green_revision.clone()), (green(), None));
    // Done: the next call does nothing.
    let done_scene = Scene::blue(FROM).green_leads().remove_nodes(&None);
    let mut done_scene = done_scene;
    for i in 0..3 {
        done_scene = done_scene.remove_peer(&format!("bao-{i}"));
    }
    assert_eq!(step(&bg_spec(), &s.status, &done_scene).action, Action::Nothing);
}

#[test]
fn cleanup_removes_a_blue_peer_whose_server_is_gone() {
    let scene = Scene::blue(FROM)
        .green_leads()
        .remove_nodes(&None)
        .remove_peer("bao-0")
        .remove_peer("bao-2");
    assert_eq!(
        step(&bg_spec(), &cleanup(), &scene).action,
        Action::RemovePeer {
            node_id: "bao-1".into()
        }
    );
}

#[test]
fn cleanup_never_removes_the_leader() {
    let scene = Scene::blue(FROM).green_leads().leader("bao-1");
    assert_eq!(
        step(&bg_spec(), &cleanup(), &scene).action,
        Action::StepDown {
            node_id: "bao-1".into()
        }
    );
}

// ---- RollingBack ----

fn rolling_back() -> OpenBaoClusterStatus {
    let mut status = in_phase(UpgradePhase::RollingBack, BG);
    status.upgrade.as_mut().unwrap().last_error = Some(openbao_api::UpgradeError {
        reason: "RollbackRequested".into(),
        message: "rollback requested (token b)".into(),
        at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(0)),
    });
    status
}

#[test]
fn rolling_back_takes_traffic_back_demotes_and_removes_green_then_deletes_it() {
    let scene = Scene::blue(FROM).green_joined(true, 0).traffic(green());
    assert_eq!(
        step(&bg_spec(), &rolling_back(), &scene).action,
        Action::SwitchTraffic { to: None }
    );
    let scene = scene.traffic(None);
    assert_eq!(
        step(&bg_spec(), &rolling_back(), &scene).action,
        Action::Demote {
            node_id: "bao-v2-7-2-0".into()
        }
    );
    let mut scene = scene;
    for i in 0..3 {
        scene = scene.role(&format!("bao-v2-7-2-{i}"), false, false);
    }
    assert_eq!(
        step(&bg_spec(), &rolling_back(), &scene).action,
        Action::RemovePeer {
            node_id: "bao-v2-7-2-0".into()
        }
    );
    for i in 0..3 {
        scene = scene.remove_peer(&format!("bao-v2-7-2-{i}"));
    }
    assert_eq!(
        step(&bg_spec(), &rolling_back(), &scene).action,
        Action::RemoveNodes { revision: green() }
    );
    let s = step(&bg_spec(), &rolling_back(), &scene.remove_nodes(&green()));
    assert_eq!(s.action, Action::Record);
    let u = upgrade(&s.status);
    assert_eq!(u.phase, UpgradePhase::Idle);
    assert_eq!(u.aborted_version.as_deref(), Some(TO), "latched");
    assert_eq!(last_reason(&s), "RollbackRequested");
    let message = u.message.clone().unwrap();
    assert!(
        message.starts_with("rolled back to 2.6.2") && message.contains("requests.retry"),
        "{message}"
    );
    assert_eq!(s.status.current_version.as_deref(), Some(FROM));
    assert_eq!(s.status.blue_green.as_ref().unwrap().green_revision, None);
    // And it does not start again by itself.
    let again = step(&bg_spec(), &s.status, &Scene::blue(FROM));
    assert_eq!(phase(&again), UpgradePhase::Idle);
    assert_ne!(again.action, Action::Wait);
}

#[test]
fn rolling_back_removes_stray_green_peers_without_servers() {
    let scene = Scene::blue(FROM).green_joined(false, 0).remove_nodes(&green());
    assert_eq!(
        step(&bg_spec(), &rolling_back(), &scene).action,
        Action::RemovePeer {
            node_id: "bao-v2-7-2-0".into()
        }
    );
}

#[test]
fn rolling_back_with_nothing_deployed_is_immediate() {
    let s = step(&bg_spec(), &rolling_back(), &Scene::blue(FROM));
    assert_eq!(phase(&s), UpgradePhase::Idle);
}

#[test]
fn rolling_back_holds_when_green_took_the_lead() {
    let scene = Scene::blue(FROM).green_joined(true, 0).leader("bao-v2-7-2-0");
    let s = step(&bg_spec(), &rolling_back(), &scene);
    assert_eq!(s.action, Action::Wait);
    assert_eq!(last_reason(&s), "RollbackBlocked");
}

#[test]
fn rolling_back_continues_whatever_the_spec_says() {
    // Even with the target version set again, a rollback in progress finishes first.
    let scene = Scene::blue(FROM).green_joined(false, 0);
    let s = step(&bg_spec(), &rolling_back(), &scene);
    assert_eq!(
        s.action,
        Action::RemovePeer {
            node_id: "bao-v2-7-2-0".into()
        }
    );
}

// ---- failures and dispatch ----

#[test]
fn a_failed_action_is_counted_on_the_previous_status() {
    let status = promoting();
    let action = Action::Promote {
        node_id: "bao-v2-7-2-0".into(),
    };
    let failed = crate::flows::record_failure(&status, &action, "POST /v1/sys/storage/raft/promote: HTTP 503", at(5));
    let u = upgrade(&failed);
    assert_eq!((u.failures, u.phase), (1, UpgradePhase::Promoting));
    let e = u.last_error.as_ref().unwrap();
    assert_eq!(e.reason, "PromoteFailed");
    assert!(e.message.contains("HTTP 503"));
}

#[test]
fn an_upgrade_in_progress_keeps_its_strategy() {
    let rolling = spec(TO, UpgradeStrategy::RollingUpdate);
    let s = step(&rolling, &promoting(), &Scene::blue(FROM).green_joined(false, 0));
    assert_eq!(
        s.action,
        Action::Promote {
            node_id: "bao-v2-7-2-0".into()
        }
    );
}
