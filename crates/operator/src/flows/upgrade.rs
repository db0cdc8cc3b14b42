//! What the reconcile does about upgrades, decided from spec and status alone: whether the
//! driver runs ([`plan`]), which version and update strategy the live StatefulSet's pod template
//! carries meanwhile ([`rollout`]), the status once a refused upgrade is no longer asked for
//! ([`cleared`]), and which strategy and live revision an upgrade in progress works with.

use openbao_api::{OpenBaoClusterSpec, OpenBaoClusterStatus, UpgradePhase, UpgradeStrategy};
use openbao_render::objects::Rollout;

use super::names::Revision;

/// What the reconcile does about upgrades this time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpgradePlan {
    /// Nothing to upgrade (or not initialized yet).
    Idle,
    /// Advance the upgrade by one driver step.
    Advance,
    /// `spec.version` is the running version again after a refused or aborted upgrade: only the
    /// leftover refusal goes, which needs no OpenBao ([`cleared`]).
    Clear,
    /// An upgrade is wanted but cannot run here; nothing is touched. Reported as
    /// `Upgrading=False` with this reason and message.
    Refused { reason: &'static str, message: String },
}

/// The strategy of the upgrade in progress (`None` when none is).
fn in_progress(status: &OpenBaoClusterStatus) -> Option<UpgradeStrategy> {
    let u = status.upgrade.as_ref().filter(|u| u.phase != UpgradePhase::Idle)?;
    Some(u.strategy.unwrap_or_else(|| strategy_of_phase(u.phase)))
}

/// The strategy an upgrade in progress runs: the one it started with (in status), or, for
/// one recorded before status named it, the one its phase belongs to; otherwise the spec's.
pub fn strategy(spec: &OpenBaoClusterSpec, status: &OpenBaoClusterStatus) -> UpgradeStrategy {
    in_progress(status).unwrap_or(spec.upgrade.strategy)
}

/// The strategy a phase belongs to.
fn strategy_of_phase(phase: UpgradePhase) -> UpgradeStrategy {
    match phase {
        UpgradePhase::Idle | UpgradePhase::PreUpgradeSnapshot | UpgradePhase::RollingUpdate => {
            UpgradeStrategy::RollingUpdate
        }
        _ => UpgradeStrategy::BlueGreen,
    }
}

/// The live (blue) set's revision; `None` for the cluster's original servers.
pub fn live_revision(status: &OpenBaoClusterStatus) -> Revision {
    status.blue_green.as_ref().and_then(|b| b.blue_revision.clone())
}

/// Decides from spec and status alone whether the driver runs.
pub fn plan(spec: &OpenBaoClusterSpec, status: &OpenBaoClusterStatus) -> UpgradePlan {
    let Some(current) = status.current_version.as_deref().filter(|_| status.initialized) else {
        return UpgradePlan::Idle;
    };
    let running = in_progress(status);
    if running.is_none() && spec.version == current {
        let leftover = status
            .upgrade
            .as_ref()
            .is_some_and(|u| u.last_error.is_some() || u.aborted_version.is_some());
        return if leftover {
            UpgradePlan::Clear
        } else {
            UpgradePlan::Idle
        };
    }
    if running.is_none() && spec.upgrade.pre_upgrade_snapshot && spec.backup.is_none() {
        // The CRD refuses this; a cluster stored before that rule still gets a clear answer.
        return UpgradePlan::Refused {
            reason: "PreUpgradeSnapshotNeedsBackup",
            message: format!(
                "spec.version {} differs from the running {current}, but spec.upgrade.preUpgradeSnapshot \
                 needs spec.backup (the store the snapshot goes to): no pod was changed",
                spec.version
            ),
        };
    }
    if !spec.self_init.oidc.enabled {
        return UpgradePlan::Refused {
            reason: "NoOperatorLogin",
            message: "upgrades need the operator's JWT login into OpenBao (spec.selfInit.oidc.enabled)".into(),
        };
    }
    UpgradePlan::Advance
}

/// `status` without the refusal or abort of an upgrade that `spec.version` no longer asks for.
pub fn cleared(status: &OpenBaoClusterStatus) -> OpenBaoClusterStatus {
    let mut cleared = status.clone();
    if let Some(u) = cleared.upgrade.as_mut() {
        u.last_error = None;
        u.aborted_version = None;
        u.message = Some("spec.version is the running version: nothing to upgrade".into());
    }
    cleared
}

/// The version and update strategy of the StatefulSet: the running version, so that a changed
/// `spec.version` alone never rolls pods; during a rolling upgrade the target version with
/// `OnDelete`, so that only the driver replaces pods. Before initialization: `spec.version`.
pub fn rollout(spec: &OpenBaoClusterSpec, status: &OpenBaoClusterStatus) -> Rollout {
    if in_progress(status) == Some(UpgradeStrategy::RollingUpdate)
        && let Some(to) = status.upgrade.as_ref().and_then(|u| u.to_version.clone())
    {
        return Rollout {
            version: to,
            on_delete: true,
        };
    }
    Rollout {
        version: status.current_version.clone().unwrap_or_else(|| spec.version.clone()),
        on_delete: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openbao_api::UpgradeStatus;

    fn spec(extra: serde_json::Value) -> OpenBaoClusterSpec {
        let mut v = serde_json::json!({"version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"}});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn running(version: &str) -> OpenBaoClusterStatus {
        OpenBaoClusterStatus {
            initialized: true,
            current_version: Some(version.into()),
            ..Default::default()
        }
    }

    fn rolling(from: &str, to: &str) -> OpenBaoClusterStatus {
        OpenBaoClusterStatus {
            upgrade: Some(UpgradeStatus {
                phase: UpgradePhase::RollingUpdate,
                strategy: Some(UpgradeStrategy::RollingUpdate),
                from_version: Some(from.into()),
                to_version: Some(to.into()),
                ..Default::default()
            }),
            ..running(from)
        }
    }

    #[test]
    fn a_changed_version_alone_never_rolls_pods() {
        let r = rollout(&spec(serde_json::json!({})), &running("2.6.2"));
        assert_eq!((r.version.as_str(), r.on_delete), ("2.6.2", false));
        let r = rollout(&spec(serde_json::json!({})), &Default::default());
        assert_eq!((r.version.as_str(), r.on_delete), ("2.7.2", false), "before init: spec");
    }

    #[test]
    fn a_rolling_upgrade_hands_pod_replacement_to_the_driver() {
        let r = rollout(&spec(serde_json::json!({})), &rolling("2.6.2", "2.7.2"));
        assert_eq!((r.version.as_str(), r.on_delete), ("2.7.2", true));
        assert_eq!(
            plan(&spec(serde_json::json!({})), &rolling("2.6.2", "2.7.2")),
            UpgradePlan::Advance
        );
        assert_eq!(
            plan(&spec(serde_json::json!({})), &running("2.6.2")),
            UpgradePlan::Advance
        );
        assert_eq!(plan(&spec(serde_json::json!({})), &running("2.7.2")), UpgradePlan::Idle);
        assert_eq!(
            plan(&spec(serde_json::json!({})), &Default::default()),
            UpgradePlan::Idle
        );
    }

    #[test]
    fn blue_green_runs_and_snapshots_without_a_store_are_refused_without_touching_pods() {
        let bg = spec(serde_json::json!({"upgrade": {"strategy": "BlueGreen"}}));
        assert_eq!(plan(&bg, &running("2.6.2")), UpgradePlan::Advance);
        // The live set keeps the running version: green is a separate StatefulSet.
        assert_eq!(rollout(&bg, &running("2.6.2")).version, "2.6.2");
        let snap = spec(serde_json::json!({"upgrade": {"preUpgradeSnapshot": true}}));
        assert!(matches!(
            plan(&snap, &running("2.6.2")),
            UpgradePlan::Refused {
                reason: "PreUpgradeSnapshotNeedsBackup",
                ..
            }
        ));
        let backup = serde_json::json!({"schedule": "0 3 * * *", "target": {
            "endpoint": "https://s3.example.com", "bucket": "b", "credentialsSecretRef": {"name": "c"}}});
        let snap = spec(serde_json::json!({"upgrade": {"preUpgradeSnapshot": true}, "backup": backup}));
        assert_eq!(plan(&snap, &running("2.6.2")), UpgradePlan::Advance);
        let no_login = spec(serde_json::json!({"selfInit": {"oidc": {"enabled": false}}}));
        assert!(matches!(
            plan(&no_login, &running("2.6.2")),
            UpgradePlan::Refused {
                reason: "NoOperatorLogin",
                ..
            }
        ));
    }

    #[test]
    fn a_refusal_goes_once_spec_version_is_the_running_one_again() {
        let mut refused = running("2.7.2");
        refused.upgrade = Some(UpgradeStatus {
            last_error: Some(openbao_api::UpgradeError {
                reason: "DowngradeRefused".into(),
                message: "spec.version 2.6.2 is older".into(),
                at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
            }),
            ..Default::default()
        });
        let same = spec(serde_json::json!({}));
        assert_eq!(plan(&same, &refused), UpgradePlan::Clear);
        let clear = cleared(&refused);
        assert_eq!(plan(&same, &clear), UpgradePlan::Idle);
        assert!(clear.upgrade.unwrap().last_error.is_none());
        let mut aborted = running("2.7.2");
        aborted.upgrade = Some(UpgradeStatus {
            aborted_version: Some("2.7.3".into()),
            ..Default::default()
        });
        assert_eq!(plan(&same, &aborted), UpgradePlan::Clear);
    }
}
