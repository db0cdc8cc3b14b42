//! Blue/green upgrades on Kubernetes: which sets of servers the reconcile applies and where
//! the public Service points, decided from status alone, and the Kubernetes side of the
//! driver's blue/green actions (deploy a set, remove a set with its volumes, move traffic).
//!
//! The reconcile and the driver agree by construction: both derive the objects from the same
//! builders and the same status, so a restarted operator re-applies exactly what the last step
//! left. The reconcile never applies a set the upgrade is removing (blue in `Cleanup`, green in
//! `RollingBack` and after it), so a deleted StatefulSet stays deleted.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use openbao_api::{OpenBaoClusterStatus, UpgradePhase, names};
use openbao_render::objects::{self, Joining, Rollout};
use openbao_render::{Cluster, labels};

use crate::context::Context;
use crate::flows::upgrade::live_revision;
use crate::flows::{Deployment, PlatformError, Revision};
use crate::kube_write::{KubeError, Writer};

fn phase(status: &OpenBaoClusterStatus) -> UpgradePhase {
    status.upgrade.as_ref().map(|u| u.phase).unwrap_or_default()
}

/// The green set's revision while the upgrade keeps it (not while rolling back).
pub fn kept_green_revision(status: &OpenBaoClusterStatus) -> Revision {
    let keeps = matches!(
        phase(status),
        UpgradePhase::DeployingGreen
            | UpgradePhase::JoiningMesh
            | UpgradePhase::Syncing
            | UpgradePhase::AwaitingPromotion
            | UpgradePhase::Promoting
            | UpgradePhase::DemotingBlue
            | UpgradePhase::Cleanup
    );
    if !keeps {
        return None;
    }
    status.blue_green.as_ref().and_then(|b| b.green_revision.clone())
}

/// The set the public Service selects: green from `DemotingBlue` on (the point of no return),
/// otherwise the live set.
pub fn traffic_revision(status: &OpenBaoClusterStatus) -> Revision {
    match phase(status) {
        UpgradePhase::DemotingBlue | UpgradePhase::Cleanup => {
            kept_green_revision(status).or_else(|| live_revision(status))
        }
        _ => live_revision(status),
    }
}

/// StatefulSet of the live set (the one whose readiness the cluster's status reports).
pub fn live_statefulset_name(cluster: &str, status: &OpenBaoClusterStatus) -> String {
    names::server_set(cluster, live_revision(status).as_deref())
}

/// Service `<c>-public` as status wants it.
pub fn public_service(cluster: &Cluster, status: &OpenBaoClusterStatus) -> Service {
    objects::public_service_to(cluster, traffic_revision(status).as_deref())
}

/// The server sets the reconcile applies.
#[derive(Default)]
pub struct Workloads {
    pub config_maps: Vec<ConfigMap>,
    pub statefulsets: Vec<StatefulSet>,
}

/// The live set (unless `Cleanup` is removing it) and the green set while the upgrade keeps it.
/// `<c>-config` of the original set is applied by the reconcile in any case.
pub fn workloads(cluster: &Cluster, status: &OpenBaoClusterStatus, rollout: &Rollout) -> Workloads {
    let mut w = Workloads::default();
    let live = live_revision(status);
    if phase(status) != UpgradePhase::Cleanup {
        match live.as_deref() {
            None => w.statefulsets.push(objects::statefulset_with(cluster, rollout)),
            Some(rev) => {
                w.config_maps
                    .push(objects::revision_config_map(cluster, rev, &Joining::Own));
                w.statefulsets
                    .push(objects::revision_statefulset(cluster, rev, rollout));
            }
        }
    }
    if let Some(green) = kept_green_revision(status) {
        let to = status
            .upgrade
            .as_ref()
            .and_then(|u| u.to_version.clone())
            .unwrap_or_else(|| cluster.spec.version.clone());
        let (cm, sts) = green_objects(cluster, &green, &to, &live);
        w.config_maps.push(cm);
        w.statefulsets.push(sts);
    }
    w
}

/// ConfigMap and StatefulSet of green set `revision` on `version`, joining `blue` as non-voters.
/// `OnDelete`: only the operator ever replaces a green pod.
fn green_objects(cluster: &Cluster, revision: &str, version: &str, blue: &Revision) -> (ConfigMap, StatefulSet) {
    let joining = Joining::AsNonVoter {
        revision: blue.as_deref(),
        replicas: cluster.spec.replicas,
    };
    let rollout = Rollout {
        version: version.to_string(),
        on_delete: true,
    };
    (
        objects::revision_config_map(cluster, revision, &joining),
        objects::revision_statefulset(cluster, revision, &rollout),
    )
}

fn kube_error(context: String) -> impl FnOnce(kube::Error) -> PlatformError {
    move |e| PlatformError::new(context, e)
}

/// A failed write, as the driver reports it (the write says what it was doing).
fn write_error(e: KubeError) -> PlatformError {
    PlatformError::new(e.action.clone(), e)
}

/// The Kubernetes side of the blue/green actions for one cluster.
pub struct BlueGreenKube<'a> {
    pub ctx: &'a Context,
    pub cluster: Cluster<'a>,
    /// The live set, whose servers green joins.
    pub live: Revision,
}

impl BlueGreenKube<'_> {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.ctx.client.clone(), self.cluster.namespace)
    }

    fn writer(&self) -> Writer<'_> {
        Writer::new(self.ctx, self.cluster.namespace)
    }

    /// Applies the green set's ConfigMap and StatefulSet; the StatefulSet controller starts any
    /// pod that is missing.
    pub async fn deploy(&self, deployment: &Deployment) -> Result<(), PlatformError> {
        let (cm, mut sts) = green_objects(
            &self.cluster,
            &deployment.revision,
            &deployment.version,
            &deployment.join,
        );
        if let Some(spec) = sts.spec.as_mut() {
            spec.replicas = Some(deployment.replicas as i32);
        }
        self.writer().apply(&cm).await.map_err(write_error)?;
        self.writer().apply(&sts).await.map_err(write_error)?;
        Ok(())
    }

    /// Deletes the StatefulSet of `revision`, its pods (now, not after the garbage collector
    /// gets to them: removed raft peers keep serving as standbys), its volume claims and its
    /// ConfigMap. Done when [`crate::flows::Platform::nodes`] lists none of its servers.
    pub async fn remove(&self, revision: &Revision) -> Result<(), PlatformError> {
        let c = self.cluster.name;
        let rev = revision.as_deref();
        let sts = names::server_set(c, rev);
        let background = DeleteParams::background();
        let writer = self.writer();
        writer
            .delete::<StatefulSet>(&sts, &background)
            .await
            .map_err(write_error)?;
        let selector = selector_string(&objects::server_set_selector(c, rev));
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_error(format!("listing the pods of {sts}")))?;
        for pod in pods.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            let name = pod.name_any();
            writer
                .delete::<Pod>(&name, &DeleteParams::default())
                .await
                .map_err(write_error)?;
        }
        for claim in self.claims_of(revision).await? {
            writer
                .delete::<PersistentVolumeClaim>(&claim, &background)
                .await
                .map_err(write_error)?;
        }
        if let Some(rev) = rev {
            let cm = names::server_set_config_map(c, Some(rev));
            writer
                .delete::<ConfigMap>(&cm, &background)
                .await
                .map_err(write_error)?;
        }
        Ok(())
    }

    /// Names of the volume claims of `revision`'s servers that still exist.
    pub async fn claims_of(&self, revision: &Revision) -> Result<Vec<String>, PlatformError> {
        let c = self.cluster.name;
        let claims = self
            .api::<PersistentVolumeClaim>()
            .list(&ListParams::default().labels(&format!("{}={c}", labels::CLUSTER_LABEL)))
            .await
            .map_err(kube_error(format!("listing the volume claims of {c}")))?;
        Ok(claims
            .items
            .iter()
            .map(|p| p.name_any())
            .filter(|n| claim_server(c, n).is_some_and(|(rev, _)| &rev == revision))
            .collect())
    }

    /// Points `<c>-public` at the servers of `to`.
    pub async fn switch_traffic(&self, to: &Revision) -> Result<(), PlatformError> {
        let svc = objects::public_service_to(&self.cluster, to.as_deref());
        let name = svc.name_any();
        self.writer().apply(&svc).await.map_err(|e| {
            PlatformError::new(
                format!("pointing Service {name} at {}", crate::flows::names::describe(to)),
                e,
            )
        })?;
        Ok(())
    }

    /// The set `<c>-public` selects; the live set when it selects none in particular.
    pub async fn traffic(&self) -> Result<Revision, PlatformError> {
        let name = names::public_service(self.cluster.name);
        let svc = self
            .api::<Service>()
            .get_opt(&name)
            .await
            .map_err(kube_error(format!("reading Service {name}")))?;
        Ok(svc
            .and_then(|s| objects::traffic_of(self.cluster.name, &s))
            .unwrap_or_else(|| self.live.clone()))
    }
}

/// The server (revision, ordinal) a volume claim `data-<pod>` belongs to.
pub fn claim_server(cluster: &str, claim: &str) -> Option<(Revision, u32)> {
    names::parse_pod(cluster, claim.strip_prefix(names::VOLUME_CLAIM_PREFIX)?)
}

fn selector_string(selector: &std::collections::BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use openbao_api::{BlueGreenStatus, OpenBaoClusterSpec, UpgradeStatus, UpgradeStrategy};

    fn spec() -> OpenBaoClusterSpec {
        serde_json::from_value(serde_json::json!({
            "version": "2.7.2", "profile": "Development", "replicas": 3, "storage": {"size": "1Gi"},
            "upgrade": {"strategy": "BlueGreen"}
        }))
        .unwrap()
    }

    fn status(phase: UpgradePhase, blue: Option<&str>, green: Option<&str>) -> OpenBaoClusterStatus {
        OpenBaoClusterStatus {
            initialized: true,
            current_version: Some("2.6.2".into()),
            upgrade: Some(UpgradeStatus {
                phase,
                strategy: Some(UpgradeStrategy::BlueGreen),
                from_version: Some("2.6.2".into()),
                to_version: Some("2.7.2".into()),
                ..Default::default()
            }),
            blue_green: Some(BlueGreenStatus {
                blue_revision: blue.map(str::to_string),
                green_revision: green.map(str::to_string),
            }),
            ..Default::default()
        }
    }

    fn names_of(w: &Workloads) -> Vec<String> {
        w.statefulsets.iter().map(|s| s.name_any()).collect()
    }

    fn selected(c: &Cluster, s: &OpenBaoClusterStatus) -> String {
        public_service(c, s).spec.unwrap().selector.unwrap()[labels::COMPONENT_LABEL].clone()
    }

    #[test]
    fn each_phase_applies_its_sets_and_points_traffic() {
        let spec = spec();
        let c = Cluster {
            name: "bao",
            namespace: "ns",
            uid: "u",
            spec: &spec,
        };
        let rollout = Rollout {
            version: "2.6.2".into(),
            on_delete: false,
        };
        let green = Some("v2-7-2");
        use UpgradePhase::*;
        let table = [
            (Idle, None, vec!["bao"], "server"),
            (DeployingGreen, green, vec!["bao", "bao-v2-7-2"], "server"),
            (Syncing, green, vec!["bao", "bao-v2-7-2"], "server"),
            (AwaitingPromotion, green, vec!["bao", "bao-v2-7-2"], "server"),
            (Promoting, green, vec!["bao", "bao-v2-7-2"], "server"),
            (DemotingBlue, green, vec!["bao", "bao-v2-7-2"], "server-v2-7-2"),
            (Cleanup, green, vec!["bao-v2-7-2"], "server-v2-7-2"),
            (RollingBack, green, vec!["bao"], "server"),
        ];
        for (phase, green, sets, traffic) in table {
            let s = status(phase, None, green);
            let w = workloads(&c, &s, &rollout);
            assert_eq!(names_of(&w), sets, "{phase:?}");
            assert_eq!(selected(&c, &s), traffic, "{phase:?}");
        }
        // Green joins blue as a non-voter on the target version.
        let w = workloads(&c, &status(Syncing, None, green), &rollout);
        assert!(w.config_maps[0].data.as_ref().unwrap()["10-server.hcl"].contains("retry_join_as_non_voter = true"));
        let image = w.statefulsets[1]
            .spec
            .clone()
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers[0]
            .image
            .clone();
        assert_eq!(image.as_deref(), Some("openbao/openbao:2.7.2"));
        // Finished: the revision set is live, joins only itself, takes the traffic.
        let done = OpenBaoClusterStatus {
            upgrade: Some(UpgradeStatus::default()),
            ..status(Idle, Some("v2-7-2"), None)
        };
        let w = workloads(&c, &done, &rollout);
        assert_eq!(names_of(&w), vec!["bao-v2-7-2"]);
        assert!(!w.config_maps[0].data.as_ref().unwrap()["10-server.hcl"].contains("non_voter"));
        assert_eq!(selected(&c, &done), "server-v2-7-2");
        assert_eq!(live_statefulset_name("bao", &done), "bao-v2-7-2");
    }

    #[test]
    fn claims_name_their_server() {
        assert_eq!(claim_server("bao", "data-bao-1"), Some((None, 1)));
        assert_eq!(
            claim_server("bao", "data-bao-v2-7-2-0"),
            Some((Some("v2-7-2".into()), 0))
        );
        assert_eq!(claim_server("bao", "other-bao-0"), None);
    }
}
