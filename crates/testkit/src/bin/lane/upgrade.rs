//! `lane upgrade`: sets `spec.version`, prints each upgrade and blue/green phase, probes the
//! edge throughout and watches the HTTPRoutes; fails unless the cluster ends `Available` on the
//! new version with the routes accepted throughout and no failure window of 2 s or more.

use crate::probe::{self, Target};
use crate::watch::{Lane, changes};
use crate::{Clock, Record, say};
use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use openbao_api::{OpenBaoCluster, UpgradePhase, conditions};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;

/// The probe runs this long before the change and after the end: a broken edge shows before the
/// upgrade is blamed, and a cutover that breaks the edge late shows too.
const PROBE_MARGIN: Duration = Duration::from_secs(2);
/// The longest failure window an upgrade may cause.
const WINDOW_LIMIT: Duration = Duration::from_secs(2);
/// How often the HTTPRoutes' conditions are read (they are not the operator's to report).
const ROUTE_CHECK: Duration = Duration::from_secs(1);
/// The Gateway the lane's routes attach to (hack/lane.sh `deploy_edge`).
const EDGE_GATEWAY: &str = "edge";

pub async fn run(lane: &Lane, version: &str, target: Target, limit: Duration, record: &mut Record) -> Result<()> {
    let cluster = lane.cluster().await?;
    let from = cluster.spec.version.clone();
    if from == version {
        bail!("the lane cluster runs {version} already");
    }
    let mut routes = route_conditions(lane).await?;
    say(format!(
        "==> upgrade {}/{} {from} -> {version} ({})",
        lane.namespace,
        lane.cluster,
        wire(&cluster.spec.upgrade.strategy)
    ));
    say(format!(
        "probe: GET {} through the Gateway every 200 ms (lane CA verified); HTTPRoute: {routes}",
        target.url.path()
    ));
    let probe = probe::start(&target)?;
    tokio::time::sleep(PROBE_MARGIN).await;
    let clock = Clock::start();
    let api = lane.api::<OpenBaoCluster>();
    api.patch(
        &lane.cluster,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"version": version}})),
    )
    .await
    .context("set spec.version")?;

    let mut follow = Follow::default();
    let mut stream = changes(api, &lane.cluster);
    let mut route_tick = tokio::time::interval(ROUTE_CHECK);
    let mut route_broken = false;
    let deadline = tokio::time::Instant::now() + limit;
    let outcome = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break Outcome::TimedOut,
            cluster = stream.next() => match cluster {
                // The watch restarts itself after errors; it ends only with the process.
                None => break Outcome::WatchEnded,
                Some(None) => continue,
                Some(Some(cluster)) => {
                    if let Some(outcome) = follow.see(&cluster, version, &clock) {
                        break outcome;
                    }
                }
            },
            _ = route_tick.tick() => {
                let now = route_conditions(lane).await.unwrap_or_else(|err| format!("unknown ({err:#})"));
                if now != routes {
                    say(format!("{:>6}s  HTTPRoute: {now}", clock.seconds()));
                    routes = now;
                }
                route_broken |= !routes_accepted(&routes);
            }
        }
    };
    tokio::time::sleep(PROBE_MARGIN).await;
    let summary = probe::summarize(&probe.stop().await);
    say(format!(
        "probe through the Gateway: {summary}{}",
        summary.failed_answers()
    ));
    say(format!(
        "HTTPRoute Accepted/ResolvedRefs: {}",
        if route_broken {
            "NOT True at some point (see above)"
        } else {
            "True throughout"
        }
    ));
    record.set("last_upgrade_probe", &summary);
    // An upgrade is no degradation: a Degraded condition seen on the way is a defect worth a look.
    let degraded = if follow.degraded.is_empty() {
        "none".to_string()
    } else {
        follow.degraded.join(" ")
    };
    if degraded != "none" {
        say(format!("Degraded during the upgrade: {degraded}"));
    }
    record.set("last_upgrade_degraded", degraded);
    match outcome {
        Outcome::Done(took) => {
            record.set("last_upgrade_seconds", &took);
            say(format!(
                "upgrade {from} -> {version} done in {took}s; the cluster is Available on {version}"
            ));
        }
        Outcome::Aborted(why) => bail!("the upgrade to {version} was aborted: {why}"),
        Outcome::WatchEnded => bail!("the watch of the lane cluster ended (last: {})", follow.seen),
        Outcome::TimedOut => bail!(
            "the upgrade to {version} did not finish in {}s (last: {})",
            limit.as_secs(),
            follow.seen
        ),
    }
    if route_broken {
        bail!("the HTTPRoute was not Accepted/ResolvedRefs throughout the upgrade");
    }
    if summary.longest_window >= WINDOW_LIMIT {
        bail!(
            "the longest failure window ({} ms) is not under {} s",
            summary.longest_window.as_millis(),
            WINDOW_LIMIT.as_secs()
        );
    }
    Ok(())
}

enum Outcome {
    /// Seconds from the change to `Available` on the new version.
    Done(String),
    Aborted(String),
    WatchEnded,
    TimedOut,
}

/// What the upgrade showed so far, to print each change once.
#[derive(Default)]
struct Follow {
    seen: String,
    problem: String,
    /// `Degraded <reason>` of each Degraded condition seen, once each.
    degraded: Vec<String>,
}

impl Follow {
    fn see(&mut self, cluster: &OpenBaoCluster, version: &str, clock: &Clock) -> Option<Outcome> {
        let status = cluster.status.clone().unwrap_or_default();
        let upgrade = status.upgrade.clone().unwrap_or_default();
        let blue_green = status.blue_green.clone().unwrap_or_default();
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let now = format!(
            "phase {}  blue {}  green {}  running {}",
            wire(&upgrade.phase),
            or_dash(blue_green.blue_revision),
            or_dash(blue_green.green_revision),
            status.current_version.clone().unwrap_or_else(|| "?".into())
        );
        if now != self.seen {
            say(format!(
                "{:>6}s  {now}: {}",
                clock.seconds(),
                upgrade.message.clone().unwrap_or_default()
            ));
            self.seen = now;
        }
        // Why an upgrade does not move (e.g. a refused step) shows as Degraded or lastError.
        let degraded = conditions::find(&status.conditions, conditions::DEGRADED).filter(|c| c.status == "True");
        let mut problem = degraded
            .map(|c| format!("Degraded {}: {}", c.reason, c.message))
            .unwrap_or_default();
        if let Some(e) = &upgrade.last_error {
            problem.push_str(&format!(" lastError {}: {}", e.reason, e.message));
        }
        if problem != self.problem {
            if !problem.is_empty() {
                say(format!("{:>6}s  {problem}", clock.seconds()));
            }
            self.problem = problem;
        }
        if let Some(c) = degraded {
            let seen = format!("Degraded {}", c.reason);
            if !self.degraded.contains(&seen) {
                self.degraded.push(seen);
            }
        }
        if upgrade.aborted_version.as_deref() == Some(version) {
            let why = upgrade
                .last_error
                .map(|e| format!("{}: {}", e.reason, e.message))
                .unwrap_or_else(|| "?".into());
            return Some(Outcome::Aborted(why));
        }
        let available = conditions::find(&status.conditions, conditions::AVAILABLE).is_some_and(|c| c.status == "True");
        (upgrade.phase == UpgradePhase::Idle && status.current_version.as_deref() == Some(version) && available)
            .then(|| Outcome::Done(clock.seconds()))
    }
}

/// An enum as the API writes it (`BlueGreen`, `DeployingGreen`).
fn wire(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// The part of an HTTPRoute's status the lane reads (Gateway API `RouteParentStatus`).
#[derive(Deserialize, Default)]
struct RouteStatus {
    #[serde(default)]
    parents: Vec<RouteParent>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RouteParent {
    parent_ref: ParentRef,
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Deserialize)]
struct ParentRef {
    name: String,
}

/// `route:Accepted=True route:ResolvedRefs=True` of every HTTPRoute of the namespace attached to
/// the edge, or `none`.
async fn route_conditions(lane: &Lane) -> Result<String> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"));
    let routes = kube::Api::<DynamicObject>::namespaced_with(lane.client.clone(), &lane.namespace, &resource)
        .list(&ListParams::default())
        .await
        .context("list HTTPRoutes")?;
    let mut found = Vec::new();
    for route in routes.items {
        let name = route.metadata.name.clone().unwrap_or_default();
        let status: RouteStatus = route
            .data
            .get("status")
            .map(|s| serde_json::from_value(s.clone()))
            .transpose()
            .with_context(|| format!("HTTPRoute {name}: status"))?
            .unwrap_or_default();
        for parent in status.parents.iter().filter(|p| p.parent_ref.name == EDGE_GATEWAY) {
            for c in parent
                .conditions
                .iter()
                .filter(|c| c.type_ == "Accepted" || c.type_ == "ResolvedRefs")
            {
                found.push(format!("{name}:{}={}", c.type_, c.status));
            }
        }
    }
    Ok(if found.is_empty() {
        "none".into()
    } else {
        found.join(" ")
    })
}

/// Whether the routes seen are attached and resolved.
fn routes_accepted(routes: &str) -> bool {
    routes != "none" && !routes.contains("=False") && !routes.contains("=Unknown")
}
