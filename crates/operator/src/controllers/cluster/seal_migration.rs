//! Seal migrations on Kubernetes: what the reconcile writes while `spec.unseal.type` differs
//! from the seal the servers run, and the [`KubeSealPlatform`] the seal-migration driver acts
//! through. The order of the migration is decided without I/O in
//! [`crate::flows::seal_migration`]; the OpenBao facts are in `docs/seal-migration.md`.
//!
//! The live set of servers shares one config ConfigMap; its seal stanza is chosen by the
//! phase ([`hold`]):
//! - from the moment the spec asks for another seal until the first server restarts
//!   (`Idle`, `PreMigrationSnapshot`, `RecoveryKey`) the servers keep the seal they run
//!   (rendering the new seal alone would let pods restart into a seal that cannot unseal
//!   them): from `static` the whole spec is rendered with the static seal, from `transit` the
//!   ConfigMap and StatefulSet are left as they are (the transit settings are gone from the
//!   spec);
//! - `Standbys` and `StepDown`: the migration stage (the old seal `disabled` next to the new
//!   one), the StatefulSet on `OnDelete` with what both seals need mounted (the static key
//!   volume stays until the old seal is removed) and a liveness probe that tolerates a
//!   migrated standby's `sys/health` 500;
//! - `Finalize`: the new seal alone, still `OnDelete`; this template is exactly the one of the
//!   settled cluster, so going back to `RollingUpdate` afterwards restarts nothing.
//!
//! Which stage a pod runs is read from its `openbao.org/config-hash` annotation (the hash of
//! the config it was created with): each stage's config has its own hash. Restarting a server
//! on a stage is deleting its pod once the StatefulSet's template (observed by the StatefulSet
//! controller) carries that stage.
//!
//! The old seal is no longer in the spec (admission forbids a `transit` block with `type:
//! static`), so its stanza is read back from the live ConfigMap and what it needs in the pod
//! (the transit token or login variables, the transit CA and login token volumes, or the
//! static key volume) from the live
//! StatefulSet.

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use openbao_api::conditions::{self as cond, Desired, Status};
use openbao_api::{
    DeletionPolicy, OpenBaoClusterSpec, OpenBaoClusterStatus, SealMigrationPhase, SealMigrationStatus, UnsealType,
    UpgradeError, UpgradePhase, names,
};
use openbao_client::{BaoClient, Token};
use openbao_render::config::{self, SERVER_FILE};
use openbao_render::labels::{CLUSTER_LABEL, CONFIG_HASH_ANNOTATION};
use openbao_render::objects::{self, Joining};
use openbao_render::selfinit::{JWT_MOUNT, SEAL_MIGRATION_ROLE};
use openbao_render::{Cluster, OperatorIdentity, paths};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::upgrade::KubePlatform;
use crate::context::Context;
use crate::flows::seal_migration::driver::{RecoveryKey, SealDriver, SealNode, SealPlatform};
use crate::flows::seal_migration::{SealStage, SealTarget};
use crate::flows::upgrade::live_revision;
use crate::flows::{PlatformError, Revision, Snapshot};
use crate::kube_write::{KubeError, Writer, kube_err};

/// The recovery key Secret's keys.
const RECOVERY_KEY: &str = "key";
const RECOVERY_NONCE: &str = "nonce";
/// Pod volumes (and their mounts) that belong to a seal; the old seal's are kept from the live
/// StatefulSet while servers may still start on it.
const SEAL_VOLUMES: [&str; 3] = ["unseal", "transit-ca", objects::TRANSIT_LOGIN_VOLUME];
/// How long the login for a step may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);

/// How the live set's ConfigMap and StatefulSet are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// No migration: rendered from the spec as always.
    None,
    /// The spec asks for another seal, no server has changed yet, and the servers run the
    /// static seal: everything is rendered from the spec with the static seal (what they run),
    /// so other changes and an upgrade in progress go on.
    Old,
    /// Left as they are: the spec asks for another seal, no server has changed yet, and the
    /// old seal (transit) is no longer in the spec to render it from.
    Freeze,
    /// The configuration of `stage`, under `OnDelete`.
    Stage(SealStage),
}

/// What the live set is written as, from the seal in the spec, the seal its configuration has
/// (`None`: no configuration yet, a new cluster) and the migration in status.
pub fn hold(spec_seal: UnsealType, configured: Option<UnsealType>, m: &SealMigrationStatus) -> Hold {
    match m.phase {
        SealMigrationPhase::Idle if configured.is_some_and(|c| c != spec_seal) => Hold::Freeze,
        SealMigrationPhase::Idle => Hold::None,
        SealMigrationPhase::PreMigrationSnapshot | SealMigrationPhase::RecoveryKey => Hold::Freeze,
        SealMigrationPhase::Standbys | SealMigrationPhase::StepDown => Hold::Stage(SealStage::Migration),
        SealMigrationPhase::Finalize => Hold::Stage(SealStage::New),
    }
}

/// The seal type a `seal "<name>"` label stands for (a KMS plugin seal is named by its wrapper).
fn unseal_type_named(name: &str) -> UnsealType {
    match name {
        "static" => UnsealType::Static,
        "transit" => UnsealType::Transit,
        "kmip" => UnsealType::Kmip,
        _ => UnsealType::Kms,
    }
}

/// The `seal` blocks of a server config, as (label, block text with its closing brace). The
/// operator's HCL writer puts a block's header alone on its line and its closing brace at
/// column 0.
fn seal_blocks(server_hcl: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in server_hcl.lines() {
        if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
            if line == "}" {
                blocks.extend(current.take());
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("seal \"")
            && let Some((label, _)) = rest.split_once('"')
        {
            current = Some((label.to_string(), format!("{line}\n")));
        }
    }
    blocks
}

fn is_disabled(block: &str) -> bool {
    block.lines().any(|l| l.trim() == config::DISABLED_LINE)
}

/// The seal a server configuration unseals with: its first `seal` block that is not disabled.
pub fn configured_seal(server_hcl: &str) -> Option<UnsealType> {
    seal_blocks(server_hcl)
        .into_iter()
        .find(|(_, block)| !is_disabled(block))
        .map(|(label, _)| unseal_type_named(&label))
}

/// The stanza of seal `seal` in a server configuration, without a `disabled` line: what the
/// servers ran before the migration, read back from the live ConfigMap in either stage.
pub fn old_seal_stanza(server_hcl: &str, seal: UnsealType) -> Option<String> {
    seal_blocks(server_hcl)
        .into_iter()
        .find(|(label, _)| unseal_type_named(label) == seal)
        .map(|(_, block)| {
            block
                .lines()
                .filter(|l| l.trim() != config::DISABLED_LINE)
                .map(|l| format!("{l}\n"))
                .collect()
        })
}

/// The config of the migration stage: `rendered` (the new seal) with its seal stanza preceded
/// by the old one, disabled.
pub fn migration_config(
    rendered: &BTreeMap<String, String>,
    new_stanza: &str,
    old_stanza: &str,
) -> Option<BTreeMap<String, String>> {
    let server = rendered.get(SERVER_FILE)?;
    if !server.contains(new_stanza) {
        return None;
    }
    let mut data = rendered.clone();
    data.insert(
        SERVER_FILE.to_string(),
        server.replacen(new_stanza, &config::migration_stanzas(old_stanza, new_stanza), 1),
    );
    Some(data)
}

fn hash_of(data: &BTreeMap<String, String>) -> String {
    config::config_hash(&data.values().map(String::as_str).collect::<Vec<_>>())
}

/// The live set's objects as a seal migration needs them, read once per reconcile.
pub struct SealWorkloads {
    pub hold: Hold,
    /// The seal the servers ran before (status `from`, else what the live config has).
    pub from: Option<UnsealType>,
    /// With [`Hold::Old`]: the spec with the static seal, which the reconcile renders from.
    old_spec: Option<OpenBaoClusterSpec>,
    /// Whether what the spec's seal needs (token and CA Secrets) is in place, when that is not
    /// what the reconcile's own check looked at (with [`Hold::Old`] it checks the static seal).
    pub new_seal: Option<super::status::SealState>,
    live: Revision,
    config_map_name: String,
    statefulset_name: String,
    live_statefulset: Option<StatefulSet>,
    /// The live set's config rendered from the spec (the new seal alone) and its hash.
    new_config: BTreeMap<String, String>,
    /// The migration stage's config, when the old seal's stanza is known.
    migration_config: Option<BTreeMap<String, String>>,
    /// The old seal's stanza, as the live configuration has it.
    old_stanza: Option<String>,
}

impl SealWorkloads {
    /// Reads the live set's ConfigMap and StatefulSet.
    pub async fn read(
        client: &Client,
        cluster: &Cluster<'_>,
        status: &OpenBaoClusterStatus,
    ) -> Result<Self, KubeError> {
        let live = live_revision(status);
        let config_map_name = names::server_set_config_map(cluster.name, live.as_deref());
        let statefulset_name = names::server_set(cluster.name, live.as_deref());
        let live_hcl = Api::<ConfigMap>::namespaced(client.clone(), cluster.namespace)
            .get_opt(&config_map_name)
            .await
            .map_err(kube_err(format!("reading ConfigMap {config_map_name}")))?
            .and_then(|cm| cm.data)
            .and_then(|mut d| d.remove(SERVER_FILE));
        let live_statefulset = Api::<StatefulSet>::namespaced(client.clone(), cluster.namespace)
            .get_opt(&statefulset_name)
            .await
            .map_err(kube_err(format!("reading StatefulSet {statefulset_name}")))?;
        let mut workloads = Self::new(cluster, status, live, live_hcl.as_deref(), live_statefulset);
        if workloads.hold == Hold::Old {
            let secrets = Api::<Secret>::namespaced(client.clone(), cluster.namespace);
            let mut found = BTreeMap::new();
            for u in openbao_api::seal_of(cluster.spec.unseal.as_ref()).secret_uses() {
                let name = u.secret.name.clone();
                if let std::collections::btree_map::Entry::Vacant(slot) = found.entry(name) {
                    let secret = secrets
                        .get_opt(slot.key())
                        .await
                        .map_err(kube_err(format!("reading Secret {}", slot.key())))?;
                    slot.insert(secret);
                }
            }
            let lookup = |name: &str| found.get(name).and_then(Option::as_ref);
            workloads.new_seal = Some(super::status::seal_state(
                cluster.spec.unseal.as_ref(),
                &cluster.spec.version,
                (cluster.namespace, cluster.name),
                &lookup,
            ));
        }
        Ok(workloads)
    }

    /// From what [`Self::read`] read (pure).
    pub fn new(
        cluster: &Cluster<'_>,
        status: &OpenBaoClusterStatus,
        live: Revision,
        live_hcl: Option<&str>,
        live_statefulset: Option<StatefulSet>,
    ) -> Self {
        let m = status.seal_migration.clone().unwrap_or_default();
        let spec_seal = spec_seal(cluster.spec);
        let configured = live_hcl.and_then(configured_seal);
        let from = m.from.or(configured.filter(|c| *c != spec_seal));
        let hold = match hold(spec_seal, configured, &m) {
            _ if !status.initialized => Hold::None,
            Hold::Freeze if from == Some(UnsealType::Static) => Hold::Old,
            other => other,
        };
        let old_spec = (hold == Hold::Old).then(|| static_cluster(cluster).spec);
        let rendered = match live.as_deref() {
            None => objects::config_map(cluster),
            Some(rev) => objects::revision_config_map(cluster, rev, &Joining::Own),
        };
        let new_config = rendered.data.unwrap_or_default();
        let old_stanza = from.and_then(|f| {
            live_hcl
                .and_then(|hcl| old_seal_stanza(hcl, f))
                // The static stanza is the same for every cluster.
                .or_else(|| (f == UnsealType::Static).then(|| config::seal_hcl(&static_cluster(cluster).as_cluster())))
        });
        let new_stanza = config::seal_hcl(cluster);
        let migration_config = old_stanza
            .as_ref()
            .and_then(|old| migration_config(&new_config, &new_stanza, old));
        Self {
            hold,
            from,
            old_spec,
            new_seal: None,
            config_map_name: names::server_set_config_map(cluster.name, live.as_deref()),
            statefulset_name: names::server_set(cluster.name, live.as_deref()),
            live,
            live_statefulset,
            new_config,
            migration_config,
            old_stanza,
        }
    }

    /// The transit server the servers still need while they move away from it (the live
    /// configuration has its stanza): the spec no longer names it, so the NetworkPolicy gets
    /// its rule from here. An address written with escapes is no in-cluster Service anyway.
    pub fn previous_transit_address(&self) -> Option<&str> {
        if self.from != Some(UnsealType::Transit) {
            return None;
        }
        self.old_stanza.as_deref()?.lines().find_map(|l| {
            l.trim()
                .strip_prefix("address = \"")?
                .strip_suffix('"')
                .filter(|a| !a.contains(['\\', '"']))
        })
    }

    /// Whether a seal migration is wanted or runs.
    pub fn holds(&self) -> bool {
        self.hold != Hold::None
    }

    /// Whether an upgrade must wait: one that has not started waits for any wanted migration;
    /// one in progress goes on until the migration's first server restarts (which waits for
    /// the upgrade to finish). With [`Hold::Freeze`] (the way back) its StatefulSet is not
    /// written meanwhile, so it goes on only once the spec's seal is set back.
    pub fn blocks_upgrade(&self, status: &OpenBaoClusterStatus) -> bool {
        let upgrade_started = status.upgrade.as_ref().is_some_and(|u| u.phase != UpgradePhase::Idle);
        match self.hold {
            Hold::None => false,
            Hold::Stage(_) => true,
            Hold::Old | Hold::Freeze => !upgrade_started,
        }
    }

    /// The cluster the reconcile renders and applies: with [`Hold::Old`], the spec with the
    /// seal the servers run.
    pub fn cluster<'a>(&'a self, cluster: &Cluster<'a>) -> Cluster<'a> {
        Cluster {
            spec: self.old_spec.as_ref().unwrap_or(cluster.spec),
            ..*cluster
        }
    }

    /// The config hash of `stage` (`None` for the old stage, and for the migration stage when
    /// the old seal's stanza is no longer known).
    pub fn stage_hash(&self, stage: SealStage) -> Option<String> {
        match stage {
            SealStage::Old => None,
            SealStage::Migration => self.migration_config.as_ref().map(hash_of),
            SealStage::New => Some(hash_of(&self.new_config)),
        }
    }

    /// `cm` as the reconcile must write it, or `None` to leave it as it is.
    pub fn config_map(&self, mut cm: ConfigMap) -> Option<ConfigMap> {
        if cm.name_any() != self.config_map_name {
            return Some(cm);
        }
        match self.hold {
            Hold::None | Hold::Old | Hold::Stage(SealStage::New) => Some(cm),
            Hold::Freeze | Hold::Stage(SealStage::Old) => None,
            Hold::Stage(SealStage::Migration) => {
                cm.data = Some(self.migration_config.clone()?);
                Some(cm)
            }
        }
    }

    /// `sts` as the reconcile must write it, or `None` to leave it as it is.
    pub fn statefulset(&self, mut sts: StatefulSet) -> Option<StatefulSet> {
        if sts.name_any() != self.statefulset_name {
            return Some(sts);
        }
        let stage = match self.hold {
            Hold::None | Hold::Old => return Some(sts),
            Hold::Freeze | Hold::Stage(SealStage::Old) => return None,
            Hold::Stage(stage) => stage,
        };
        let hash = self.stage_hash(stage)?;
        let spec = sts.spec.as_mut()?;
        spec.update_strategy = Some(k8s_openapi::api::apps::v1::StatefulSetUpdateStrategy {
            type_: Some("OnDelete".into()),
            rolling_update: None,
        });
        spec.template
            .metadata
            .get_or_insert_with(Default::default)
            .annotations
            .get_or_insert_with(Default::default)
            .insert(CONFIG_HASH_ANNOTATION.to_string(), hash);
        if stage == SealStage::Migration {
            keep_old_seal_inputs(&mut sts, self.live_statefulset.as_ref());
            tolerate_migration_mode(&mut sts);
        }
        Some(sts)
    }
}

/// Whether `status` records a seal migration past `Idle` (each step must then start from the
/// status the last one wrote, not from a watch cache).
pub fn in_progress(status: Option<&OpenBaoClusterStatus>) -> bool {
    status
        .and_then(|s| s.seal_migration.as_ref())
        .is_some_and(|m| m.phase != SealMigrationPhase::Idle)
}

/// What the seal of the spec is (absent: static).
fn spec_seal(spec: &OpenBaoClusterSpec) -> UnsealType {
    spec.unseal.as_ref().map(|u| u.type_).unwrap_or_default()
}

/// A copy of a cluster with the static seal, to render the static stanza.
struct StaticCluster<'a> {
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
    spec: OpenBaoClusterSpec,
}

impl StaticCluster<'_> {
    fn as_cluster(&self) -> Cluster<'_> {
        Cluster {
            name: self.name,
            namespace: self.namespace,
            uid: self.uid,
            spec: &self.spec,
        }
    }
}

fn static_cluster<'a>(cluster: &Cluster<'a>) -> StaticCluster<'a> {
    let mut spec = cluster.spec.clone();
    spec.unseal = None;
    StaticCluster {
        name: cluster.name,
        namespace: cluster.namespace,
        uid: cluster.uid,
        spec,
    }
}

/// A standby unsealed in migration mode answers `sys/health` with HTTP 500 until the leader
/// has migrated (docs/seal-migration.md, fact 5): the usual liveness probe would have the
/// kubelet restart it, sealed again, in the middle of the migration. On the migration stage it
/// only checks that the API port answers.
fn tolerate_migration_mode(sts: &mut StatefulSet) {
    let containers = sts
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .map(|p| p.containers.iter_mut());
    for c in containers.into_iter().flatten().filter(|c| c.name == "openbao") {
        if let Some(probe) = c.liveness_probe.as_mut() {
            probe.http_get = None;
            probe.tcp_socket = Some(k8s_openapi::api::core::v1::TCPSocketAction {
                port: k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(openbao_render::API_PORT),
                host: None,
            });
        }
    }
}

/// Adds to `sts` what the old seal needs in the pod (its volumes, mounts and the transit token
/// variable), taken from the live StatefulSet, where the render of the new seal lacks them.
fn keep_old_seal_inputs(sts: &mut StatefulSet, live: Option<&StatefulSet>) {
    let Some(live_pod) = live
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
    else {
        return;
    };
    let Some(pod) = sts.spec.as_mut().and_then(|s| s.template.spec.as_mut()) else {
        return;
    };
    let is_seal_volume = |name: &str| SEAL_VOLUMES.contains(&name);
    for volume in live_pod.volumes.iter().flatten().filter(|v| is_seal_volume(&v.name)) {
        let volumes = pod.volumes.get_or_insert_with(Vec::new);
        if !volumes.iter().any(|v| v.name == volume.name) {
            volumes.push(volume.clone());
        }
    }
    let live_container = live_pod.containers.iter().find(|c| c.name == "openbao");
    let Some(container) = pod.containers.iter_mut().find(|c| c.name == "openbao") else {
        return;
    };
    let Some(live_container) = live_container else {
        return;
    };
    for mount in live_container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| is_seal_volume(&m.name))
    {
        let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
        if !mounts.iter().any(|m| m.name == mount.name) {
            mounts.push(mount.clone());
        }
    }
    for var in live_container
        .env
        .iter()
        .flatten()
        .filter(|e| e.name.starts_with(paths::TRANSIT_ENV_PREFIX))
    {
        let env = container.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|e| e.name == var.name) {
            env.push(var.clone());
        }
    }
}

mod platform;
mod run;
pub use platform::*;
pub use run::*;

#[cfg(test)]
mod tests;
