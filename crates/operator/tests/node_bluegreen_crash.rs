//! Crash-resume of a blue/green upgrade on a real single-node cluster: 3 OpenBao servers on
//! 2.6.2 are upgraded to 2.7.2 by the real controller (in-process, on the host) while a client
//! writes and reads through the public Service every 200 ms, and the operator is killed on
//! entering every phase of the upgrade and once more in the middle of a phase, each time
//! started again after 1 s with a fresh context. The upgrade still completes: no client
//! operation fails after retries of at most `CLIENT_RETRY` (5 s), every acknowledged write reads back, the
//! cluster ends as 3 voters on 2.7.2 (the green servers only) with none of blue's pods,
//! volumes, StatefulSet or raft peers left, and status is `Idle` with no `lastError`.
//!
//! Killed, in-process: the controller is a tokio task and `JoinHandle::abort` drops its future
//! at the point where it waits, so nothing after that point runs: no further request, no status
//! write, no graceful shutdown. The controller spawns no tasks of its own, so nothing of it
//! survives; a request already sent takes effect or not, as with a killed process. Its memory
//! (watch caches, reconcile queue, cached trust) goes with it: the next controller knows only
//! what Kubernetes and OpenBao hold. The phase changes are followed with a watch of the
//! OpenBaoCluster, so the kill lands right after the status write that entered the phase (within
//! the watch's latency, in which the controller may already act on the new phase).
//!
//! The tightest point is not a kill but the step-down of blue's leader in `DemotingBlue`: the
//! window of failed requests while leadership moves to green took 0.9-1.9 s on a 2-core machine
//! with other work, and more than 2 s when the load average was well above the core count.
//!
//! Needs the node (`make cluster-up`) with both images loaded. `RUST_LOG` sets what the
//! controller logs (default: its info lines, among them every `upgrade step`).

use anyhow::{Context as _, Result, ensure};
use futures::TryStreamExt as _;
use kube::Client;
use kube::runtime::{WatchStreamExt as _, watcher};
use openbao_api::{OpenBaoCluster, UpgradePhase};
use serde_json::json;
use std::pin::pin;
use std::time::{Duration, Instant};

mod node_common;
use node_common::bluegreen::{CLUSTER, Harness, check_upgraded_to_green, upgrade_to_green_under_load};
use node_common::in_namespaces;

/// How long the operator stays dead before it is started again.
const DOWN: Duration = Duration::from_secs(1);
/// The mid-phase kill: this long after the controller was started again in a phase it had
/// just been killed on entering.
const MID_PHASE_AFTER: Duration = Duration::from_millis(1500);
/// The phases to see (and kill the operator in) on the way from 2.6.2 to 2.7.2 with autoPromote.
const PHASES: [UpgradePhase; 6] = [
    UpgradePhase::DeployingGreen,
    UpgradePhase::JoiningMesh,
    UpgradePhase::Syncing,
    UpgradePhase::Promoting,
    UpgradePhase::DemotingBlue,
    UpgradePhase::Cleanup,
];
const LIMIT: Duration = Duration::from_secs(900);

/// One kill of the operator.
#[derive(Debug)]
struct Kill {
    phase: UpgradePhase,
    mid_phase: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_upgrade_resumes_after_the_operator_is_killed_at_every_phase_on_a_real_node() -> Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,openbao_operator=info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init()
        .ok();
    in_namespaces("bgcrash", upgrade_with_kills).await
}

async fn upgrade_with_kills(client: &Client, ns: &str, op_ns: &str) -> Result<()> {
    let mut h = Harness::start(client, ns, op_ns).await?;
    let (admin, config) = h.create_cluster(json!({})).await?;
    let mut phases = Vec::new();
    let mut kills = Vec::new();
    let run = upgrade_to_green_under_load(&mut h, &admin, config, async |h, epoch| {
        follow_killing(h, epoch, &mut phases, &mut kills).await
    })
    .await?;
    let report = &run.report;
    eprintln!(
        "TIMING blue/green upgrade 2.6.2 -> 2.7.2 on the node with the operator killed {} times: wall time {} ms; \
         client: {} writes, {} reads, {} failed attempts retried, longest window of failed requests {} ms",
        kills.len(),
        run.wall.as_millis(),
        report.writes,
        report.reads,
        report.failed_attempts,
        report.longest_outage.as_millis()
    );
    eprintln!("kills: {kills:?}");
    for phase in PHASES {
        ensure!(
            kills.iter().any(|k| k.phase == phase && !k.mid_phase),
            "phase {phase:?} not seen (so no kill on entering it): phases {phases:?}"
        );
    }
    ensure!(kills.iter().any(|k| k.mid_phase), "no mid-phase kill: {kills:?}");
    check_upgraded_to_green(&h, &admin, &run.done, report, run.epoch, &mut phases).await?;
    h.stop().await
}

/// Follows the upgrade with a watch until it is done, killing the operator on entering each
/// phase (the first time) and once in the middle of `Syncing` or `Promoting` (the first of them
/// still in progress [`MID_PHASE_AFTER`] after the restart).
async fn follow_killing(
    h: &mut Harness,
    epoch: Instant,
    phases: &mut Vec<String>,
    kills: &mut Vec<Kill>,
) -> Result<OpenBaoCluster> {
    let config = watcher::Config::default().fields(&format!("metadata.name={CLUSTER}"));
    let mut events = pin!(watcher(h.clusters(), config).default_backoff().applied_objects());
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut current: Option<UpgradePhase> = None;
    let mut mid_phase_at: Option<tokio::time::Instant> = None;
    let mut last_error: Option<String> = None;
    loop {
        let cluster = tokio::select! {
            event = events.try_next() => event.context("watching the cluster")?.context("the watch ended")?,
            () = at(mid_phase_at) => {
                mid_phase_at = None;
                let phase = current.unwrap_or_default();
                kill_and_restart(h, epoch, Kill { phase, mid_phase: true }, kills).await;
                continue;
            }
            () = tokio::time::sleep_until(deadline) => {
                anyhow::bail!("upgrade not done after {LIMIT:?}; phases {phases:?}, kills {kills:?}")
            }
        };
        let status = cluster.status.clone().unwrap_or_default();
        let u = status.upgrade.clone().unwrap_or_default();
        if current != Some(u.phase) {
            eprintln!(
                "{:>6.1}s upgrade {:?}: {}",
                epoch.elapsed().as_secs_f64(),
                u.phase,
                u.message.clone().unwrap_or_default()
            );
            phases.push(format!("{:?}", u.phase));
            current = Some(u.phase);
            mid_phase_at = None;
            let first_time = !kills.iter().any(|k| k.phase == u.phase);
            if u.phase != UpgradePhase::Idle && first_time {
                kill_and_restart(
                    h,
                    epoch,
                    Kill {
                        phase: u.phase,
                        mid_phase: false,
                    },
                    kills,
                )
                .await;
                let mid_phase_done = kills.iter().any(|k| k.mid_phase);
                if !mid_phase_done && matches!(u.phase, UpgradePhase::Syncing | UpgradePhase::Promoting) {
                    mid_phase_at = Some(tokio::time::Instant::now() + MID_PHASE_AFTER);
                }
            }
        }
        let error = u.last_error.as_ref().map(|e| format!("{e:?}"));
        if error.is_some() && error != last_error {
            eprintln!(
                "{:>6.1}s lastError: {}",
                epoch.elapsed().as_secs_f64(),
                error.as_deref().unwrap_or_default()
            );
        }
        last_error = error;
        if node_common::bluegreen::upgraded(&status) {
            return Ok(cluster);
        }
    }
}

/// Resolves at `when`, never without one.
async fn at(when: Option<tokio::time::Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

async fn kill_and_restart(h: &mut Harness, epoch: Instant, kill: Kill, kills: &mut Vec<Kill>) {
    h.kill_controller().await;
    let how = if kill.mid_phase {
        "in the middle of"
    } else {
        "on entering"
    };
    eprintln!(
        "{:>6.1}s KILL operator {how} {:?}; starting a fresh one in {DOWN:?}",
        epoch.elapsed().as_secs_f64(),
        kill.phase
    );
    kills.push(kill);
    tokio::time::sleep(DOWN).await;
    h.start_controller().await;
}
