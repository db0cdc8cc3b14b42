//! Table tests of the rolling flow: order (highest ordinal first, leader last after a
//! step-down), waiting per server, the point of no return and `spec.version` changes.

use openbao_api::{OpenBaoClusterSpec, OpenBaoClusterStatus, UpgradePhase, UpgradeStrategy};
use openbao_client::HealthState;

use crate::flows::fixtures::*;
use crate::flows::{Action, FlowStep, next_step};

const ROLLING: UpgradeStrategy = UpgradeStrategy::RollingUpdate;

fn step(spec: &OpenBaoClusterSpec, status: &OpenBaoClusterStatus, scene: &Scene) -> FlowStep {
    next_step(spec, status, &scene.observed)
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

fn rolling() -> OpenBaoClusterStatus {
    in_phase(UpgradePhase::RollingUpdate, ROLLING)
}

fn replace(id: &str) -> Action {
    Action::ReplaceNode {
        node_id: id.into(),
        version: TO.into(),
    }
}

/// `id` restarted on `TO`, unsealed, voting and caught up.
fn upgraded(scene: Scene, id: &str) -> Scene {
    scene.node_on(id, TO, Some(HealthState::Standby))
}

/// `id` applied entries written after it came back (the leader's appends reach it).
fn reached(mut scene: Scene, id: &str) -> Scene {
    let raft = scene.observed.raft.as_mut().unwrap();
    let servers = &mut raft.autopilot.as_mut().unwrap().servers;
    let leader_index = servers[&raft.leader].last_index;
    servers.get_mut(id).unwrap().last_index = leader_index + 1;
    scene
}

/// A restarted `id` is marked, then counts as done once it applied past the mark.
fn settle(
    spec: &OpenBaoClusterSpec,
    status: OpenBaoClusterStatus,
    scene: Scene,
    id: &str,
) -> (OpenBaoClusterStatus, Scene) {
    let s = step(spec, &status, &scene);
    assert_eq!(s.action, Action::Record);
    assert!(upgrade(&s.status).replication_mark.is_some(), "{id} marked");
    let scene = reached(scene, id);
    let s = step(spec, &s.status, &scene);
    assert_eq!(s.action, Action::Record, "{:?}", upgrade(&s.status).message);
    assert!(upgrade(&s.status).completed_pods.iter().any(|p| p == id), "{id} done");
    assert_eq!(upgrade(&s.status).replication_mark, None);
    (s.status, scene)
}

#[test]
fn starts_in_rolling_update() {
    let s = step(&rolling_spec(), &idle_status(), &Scene::blue(FROM));
    assert_eq!(
        (s.action.clone(), phase(&s)),
        (Action::Record, UpgradePhase::RollingUpdate)
    );
    assert_eq!(s.status.blue_green, None, "no revisions for a rolling upgrade");
}

#[test]
fn replaces_highest_ordinal_first_and_the_leader_last_after_a_step_down() {
    let spec = rolling_spec();
    let mut status = rolling();
    let mut scene = Scene::blue(FROM).at(10);

    let s = step(&spec, &status, &scene);
    assert_eq!(s.action, replace("bao-2"));
    let u = upgrade(&s.status);
    assert!(!u.rollback_available, "the first restart is the point of no return");
    assert_eq!(
        u.phase_started_at.as_ref().unwrap().0,
        at(10),
        "the step timeout starts now"
    );
    status = s.status;

    // Restarted but still sealed: wait, touch nothing else.
    scene = scene.node_on("bao-2", TO, Some(HealthState::Sealed));
    assert_eq!(step(&spec, &status, &scene).action, Action::Wait);
    // Unsealed but behind the leader: wait.
    scene = upgraded(scene, "bao-2").lag("bao-2", 500);
    assert_eq!(step(&spec, &status, &scene).action, Action::Wait);
    scene = scene.lag("bao-2", 3);
    // Caught up by autopilot's account: the leader's index is marked first.
    let s = step(&spec, &status, &scene);
    assert_eq!(s.action, Action::Record);
    assert_eq!(upgrade(&s.status).replication_mark, Some(1000));
    assert!(upgrade(&s.status).completed_pods.is_empty());
    status = s.status;
    // Not done before it applied an entry written after the mark.
    assert_eq!(step(&spec, &status, &scene).action, Action::Wait);
    scene = reached(scene, "bao-2");
    let s = step(&spec, &status, &scene);
    assert_eq!(s.action, Action::Record);
    assert_eq!(upgrade(&s.status).completed_pods, ["bao-2"]);
    status = s.status;

    assert_eq!(step(&spec, &status, &scene).action, replace("bao-1"));
    scene = upgraded(scene, "bao-1");
    (status, scene) = settle(&spec, status, scene, "bao-1");
    assert_eq!(upgrade(&status).completed_pods, ["bao-2", "bao-1"]);

    // Only the leader is left: step it down first.
    assert_eq!(
        step(&spec, &status, &scene).action,
        Action::StepDown {
            node_id: "bao-0".into()
        }
    );
    // While leadership moves nobody is replaced.
    assert_eq!(step(&spec, &status, &scene.clone().no_leader()).action, Action::Wait);
    scene = scene.leader("bao-2");
    assert_eq!(step(&spec, &status, &scene).action, replace("bao-0"));
    scene = upgraded(scene, "bao-0").leader("bao-2");
    (status, scene) = settle(&spec, status, scene, "bao-0");
    let s = step(&spec, &status, &scene);
    assert_eq!(s.action, Action::Record);
    let u = upgrade(&s.status);
    assert_eq!(u.phase, UpgradePhase::Idle);
    assert!(
        u.message
            .as_ref()
            .unwrap()
            .starts_with("upgraded from 2.6.2 to 2.7.2 (RollingUpdate)")
    );
    assert_eq!(s.status.current_version.as_deref(), Some(TO));
    assert_eq!(step(&spec, &s.status, &scene).action, Action::Nothing);
}

#[test]
fn a_leader_with_the_highest_ordinal_still_goes_last() {
    let scene = Scene::blue(FROM).leader("bao-2");
    assert_eq!(step(&rolling_spec(), &rolling(), &scene).action, replace("bao-1"));
}

#[test]
fn an_unhealthy_cluster_gets_no_further_restart() {
    let scene = Scene::blue(FROM).autopilot_healthy(false);
    assert_eq!(step(&rolling_spec(), &rolling(), &scene).action, Action::Wait);
    let mut scene = Scene::blue(FROM);
    scene.node_mut("bao-1").health = None;
    assert_eq!(step(&rolling_spec(), &rolling(), &scene).action, Action::Wait);
    let scene = Scene::blue(FROM).role("bao-1", false, false);
    assert_eq!(step(&rolling_spec(), &rolling(), &scene).action, Action::Wait);
}

#[test]
fn a_server_that_does_not_come_back_is_reported_per_step_and_waited_on() {
    let mut status = rolling();
    status.upgrade.as_mut().unwrap().phase_started_at =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(100)));
    let scene = Scene::blue(FROM).node_on("bao-2", TO, Some(HealthState::Sealed));
    // The timeout counts from the server's own step, not from the upgrade's start.
    let s = step(&rolling_spec(), &status, &scene.clone().at(100 + 9 * 60));
    assert_eq!((s.action.clone(), last_reason(&s)), (Action::Wait, String::new()));
    let s = step(&rolling_spec(), &status, &scene.at(100 + 11 * 60));
    assert_eq!(
        (s.action.clone(), last_reason(&s)),
        (Action::Wait, "Timeout".to_string())
    );
    assert_eq!(phase(&s), UpgradePhase::RollingUpdate);
}

#[test]
fn before_the_first_restart_a_version_change_or_rollback_aborts() {
    for (what, spec) in [
        ("reverted", spec(FROM, ROLLING)),
        ("rollback", {
            let mut s = rolling_spec();
            s.upgrade.requests.rollback = Some("stop".into());
            s
        }),
    ] {
        let s = step(&spec, &rolling(), &Scene::blue(FROM));
        assert_eq!(s.action, Action::Record, "{what}");
        let u = upgrade(&s.status);
        assert_eq!(u.phase, UpgradePhase::Idle, "{what}");
        assert_eq!(u.aborted_version.as_deref(), Some(TO), "{what}");
        assert_eq!(s.status.current_version.as_deref(), Some(FROM), "{what}");
    }
    // In the snapshot phase too.
    let s = step(
        &spec(FROM, ROLLING),
        &in_phase(UpgradePhase::PreUpgradeSnapshot, ROLLING),
        &Scene::blue(FROM),
    );
    assert_eq!(phase(&s), UpgradePhase::Idle);
}

#[test]
fn after_the_first_restart_version_changes_and_rollback_are_refused() {
    let scene = upgraded(Scene::blue(FROM), "bao-2");
    let mut asked = spec(FROM, ROLLING);
    asked.upgrade.requests.rollback = Some("stop".into());
    let s = step(&asked, &rolling(), &scene);
    assert_eq!(phase(&s), UpgradePhase::RollingUpdate);
    let u = upgrade(&s.status);
    assert!(!u.rollback_available);
    assert_eq!(u.replication_mark, Some(1000), "the upgrade goes on");
    assert_eq!(last_reason(&s), "VersionChangeRefused");
    assert!(
        u.last_error
            .as_ref()
            .unwrap()
            .message
            .contains("preUpgradeSnapshot was off")
    );
    assert_eq!(u.acknowledged.rollback.as_deref(), Some("stop"));
}

#[test]
fn snapshot_phase_takes_the_snapshot_then_rolls() {
    let s = step(
        &rolling_spec(),
        &in_phase(UpgradePhase::PreUpgradeSnapshot, ROLLING),
        &Scene::blue(FROM),
    );
    assert_eq!(
        (s.action.clone(), phase(&s)),
        (Action::TakeSnapshot, UpgradePhase::RollingUpdate)
    );
}

#[test]
fn rolling_a_blue_green_revision_uses_its_servers() {
    // After a blue/green upgrade the live servers carry a revision.
    let mut status = rolling();
    status.blue_green = Some(openbao_api::BlueGreenStatus {
        blue_revision: green(),
        green_revision: None,
    });
    let mut scene = Scene::blue(FROM).green_joined(true, 0).leader("bao-v2-7-2-0");
    for i in 0..3 {
        scene = scene.remove_peer(&format!("bao-{i}"));
        scene.node_mut(&format!("bao-v2-7-2-{i}")).version = FROM.into();
    }
    scene = scene.remove_nodes(&None);
    for i in 0..3 {
        let id = format!("bao-v2-7-2-{i}");
        scene = scene
            .node_on(&id, FROM, Some(HealthState::Standby))
            .leader("bao-v2-7-2-0");
    }
    assert_eq!(step(&rolling_spec(), &status, &scene).action, replace("bao-v2-7-2-2"));
}

#[test]
fn without_writes_a_restarted_server_counts_after_dns_caches_expired() {
    let spec = rolling_spec();
    let scene = upgraded(Scene::blue(FROM).at(10), "bao-2");
    let s = step(&spec, &rolling(), &scene);
    assert_eq!(upgrade(&s.status).replication_mark, Some(1000));
    let marked = s.status;
    // Nothing written since the mark: no entry can show the leader reaches bao-2 yet.
    assert_eq!(step(&spec, &marked, &scene.clone().at(40)).action, Action::Wait);
    let s = step(&spec, &marked, &scene.at(60));
    assert_eq!(s.action, Action::Record);
    assert_eq!(upgrade(&s.status).completed_pods, ["bao-2"]);
}
