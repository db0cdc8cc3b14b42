//! Report: the status derived by `status.rs` (written only when it changed) and Events for
//! transitions.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use openbao_api::{ClusterPhase, OpenBaoCluster, OpenBaoClusterStatus};

use super::Error;
use super::status::{self, Observed};
use crate::context::Context;
use crate::kube_write::Writer;

/// Patches status only when it changed (compared with the observed one), so a settled cluster
/// costs no writes.
/// `base` is the status to build on: the stored one, or what an upgrade step returned.
pub(super) async fn write_status(
    ctx: &Context,
    obj: &OpenBaoCluster,
    base: &OpenBaoClusterStatus,
    observed: &Observed,
) -> Result<OpenBaoClusterStatus, Error> {
    let now = Time(Timestamp::now());
    let status = status::derive(&obj.spec, base, observed, obj.metadata.generation, now);
    Writer::new(ctx, &obj.namespace().unwrap_or_default())
        .patch_status::<OpenBaoCluster, _>(&obj.name_any(), obj.status.as_ref(), &status, None)
        .await?;
    Ok(status)
}

pub(super) async fn publish_events(
    ctx: &Context,
    obj: &OpenBaoCluster,
    previous: &OpenBaoClusterStatus,
    current: &OpenBaoClusterStatus,
    mut events: Vec<(String, String)>,
) {
    if !previous.initialized && current.initialized {
        events.push((
            "Initialized".into(),
            "OpenBao initialized itself; the root token was revoked".into(),
        ));
    }
    if previous.phase != current.phase {
        events.push(("PhaseChanged".into(), phase_change(previous.phase, current.phase)));
    }
    let upgrade_phase = |s: &OpenBaoClusterStatus| s.upgrade.as_ref().map(|u| u.phase).unwrap_or_default();
    if upgrade_phase(previous) != upgrade_phase(current) {
        let message = current
            .upgrade
            .as_ref()
            .and_then(|u| u.message.clone())
            .unwrap_or_default();
        events.push((
            "UpgradePhaseChanged".into(),
            format!(
                "upgrade phase {:?} -> {:?}: {message}",
                upgrade_phase(previous),
                upgrade_phase(current)
            ),
        ));
    }
    let degraded = openbao_api::conditions::find(&current.conditions, openbao_api::conditions::DEGRADED);
    let was_degraded = openbao_api::conditions::find(&previous.conditions, openbao_api::conditions::DEGRADED);
    let warning = degraded.filter(|c| c.status == "True" && was_degraded.map(|w| &w.reason) != Some(&c.reason));
    let reference = obj.object_ref(&());
    let mut all: Vec<(EventType, String, String)> =
        events.into_iter().map(|(r, n)| (EventType::Normal, r, n)).collect();
    if let Some(c) = warning {
        all.push((EventType::Warning, c.reason.clone(), c.message.clone()));
    }
    let writer = Writer::new(ctx, reference.namespace.as_deref().unwrap_or_default());
    for (type_, reason, note) in all {
        writer.event(&reference, type_, &reason, &note, "Reconcile").await;
    }
}

/// The note of a `PhaseChanged` Event, in the phase names `status.phase` shows.
fn phase_change(from: Option<ClusterPhase>, to: Option<ClusterPhase>) -> String {
    let name = |p: Option<ClusterPhase>| p.map_or_else(|| "none".to_string(), |p| format!("{p:?}"));
    match from {
        None => format!("phase {}", name(to)),
        Some(_) => format!("phase {} -> {}", name(from), name(to)),
    }
}

#[cfg(test)]
mod tests {
    use super::phase_change;
    use openbao_api::ClusterPhase;

    #[test]
    fn phase_events_name_the_phases_as_the_status_does() {
        assert_eq!(
            phase_change(None, Some(ClusterPhase::Initializing)),
            "phase Initializing"
        );
        assert_eq!(
            phase_change(Some(ClusterPhase::Degraded), Some(ClusterPhase::Running)),
            "phase Degraded -> Running"
        );
        assert_eq!(phase_change(Some(ClusterPhase::Running), None), "phase Running -> none");
    }
}
