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
//! (the transit token variable, the transit CA or the static key volume) from the live
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
use openbao_client::{BaoClient, ClientConfig, Token};
use openbao_render::config::{self, SERVER_FILE};
use openbao_render::labels::{CLUSTER_LABEL, CONFIG_HASH_ANNOTATION};
use openbao_render::objects::{self, Joining};
use openbao_render::selfinit::{JWT_MOUNT, SEAL_MIGRATION_ROLE};
use openbao_render::{Cluster, OperatorIdentity, paths};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use super::upgrade::{KubePlatform, server_url};
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
const SEAL_VOLUMES: [&str; 2] = ["unseal", "transit-ca"];
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
        let migration_config = old_stanza.and_then(|old| migration_config(&new_config, &new_stanza, &old));
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
        }
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
        .filter(|e| e.name == paths::TRANSIT_TOKEN_ENV)
    {
        let env = container.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|e| e.name == var.name) {
            env.push(var.clone());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The reconcile's step.

/// What one reconcile's seal-migration step leaves: the status to build on, when to step again,
/// and Events (never a secret in them).
pub struct SealStepOutcome {
    pub status: OpenBaoClusterStatus,
    pub requeue: Option<Duration>,
    pub events: Vec<(String, String)>,
}

/// Why no driver step runs although a migration is wanted; reported in
/// `status.sealMigration.lastError` and the `SealMigration` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub reason: &'static str,
    pub message: String,
}

/// Whether the driver may step now (pure): `Err` says why not.
pub fn may_step(
    spec: &OpenBaoClusterSpec,
    status: &OpenBaoClusterStatus,
    from: Option<UnsealType>,
    new_seal_ready: bool,
) -> Result<(), Blocked> {
    let m = status.seal_migration.clone().unwrap_or_default();
    let to = spec_seal(spec);
    let migratable = |t: UnsealType| matches!(t, UnsealType::Static | UnsealType::Transit);
    if m.phase != SealMigrationPhase::Idle {
        return Ok(());
    }
    if let Some(from) = from
        && (!migratable(from) || !migratable(to))
    {
        return Err(Blocked {
            reason: "UnsupportedSealChange",
            message: format!(
                "spec.unseal.type: the servers run the {} seal; only static <-> transit can be migrated, \
                 so spec.unseal.type must go back to {}",
                from.as_str(),
                from.as_str()
            ),
        });
    }
    let upgrading = status.upgrade.as_ref().is_some_and(|u| u.phase != UpgradePhase::Idle)
        || status.blue_green.as_ref().is_some_and(|b| b.green_revision.is_some());
    if upgrading {
        return Err(Blocked {
            reason: "WaitingForUpgrade",
            message: "the seal migration starts once the upgrade in progress is finished".into(),
        });
    }
    if let Some(lock) = &status.operation_lock {
        return Err(Blocked {
            reason: "WaitingForOperationLock",
            message: format!(
                "the seal migration starts once {} releases the cluster's operation lock",
                lock.holder
            ),
        });
    }
    if !new_seal_ready {
        return Err(Blocked {
            reason: "WaitingForUnsealConfiguration",
            message: format!(
                "the seal migration to {} starts once what that seal needs is in place (see the \
                 UnsealConfigurationReady condition)",
                to.as_str()
            ),
        });
    }
    Ok(())
}

/// Records `reason`/`message` in `m.lastError` unless the same is recorded (a lasting state
/// does not rewrite status on every reconcile).
fn note(m: &mut SealMigrationStatus, reason: &str, message: &str) {
    if m.last_error
        .as_ref()
        .is_some_and(|e| e.reason == reason && e.message == message)
    {
        return;
    }
    m.last_error = Some(UpgradeError {
        reason: reason.into(),
        message: message.into(),
        at: Time(Timestamp::now()),
    });
}

/// The `SealMigration` condition for `m`.
pub fn condition(m: &SealMigrationStatus) -> Desired {
    let message = m.message.clone().unwrap_or_default();
    let error = m.last_error.as_ref();
    let with_error = |message: String| match error {
        Some(e) => format!("{message} (last error: {}: {})", e.reason, e.message),
        None => message,
    };
    match (m.phase, error) {
        (SealMigrationPhase::Idle, _) if m.aborted_to.is_some() => Desired::new(
            cond::SEAL_MIGRATION,
            Status::False,
            "Aborted",
            if message.is_empty() {
                with_error(String::new())
            } else {
                message
            },
        ),
        (SealMigrationPhase::Idle, Some(e)) => {
            Desired::new(cond::SEAL_MIGRATION, Status::False, e.reason.clone(), e.message.clone())
        }
        (SealMigrationPhase::Idle, None) => Desired::new(cond::SEAL_MIGRATION, Status::False, "Idle", message),
        (phase, _) => Desired::new(
            cond::SEAL_MIGRATION,
            Status::True,
            format!("{phase:?}"),
            with_error(message),
        ),
    }
}

/// What to write for a cluster initialized before self-init wrote the seal-migration login:
/// the policy (its text is `SEAL_MIGRATION_POLICY`, in docs/seal-migration.md) and the role as
/// self-init writes it, bound to the operator's service account and this cluster's audience.
pub fn role_missing_message(operator: &OperatorIdentity, audience: &str) -> String {
    format!(
        "the cluster was initialized before the operator's self-init wrote its seal-migration login, so the \
         migration cannot start. Log in as an admin and run: bao policy write {SEAL_MIGRATION_ROLE} \
         seal-migration.hcl (the policy in docs/seal-migration.md); bao write auth/{JWT_MOUNT}/role/{SEAL_MIGRATION_ROLE} \
         role_type=jwt user_claim=sub bound_subject=system:serviceaccount:{}:{} bound_audiences={audience} \
         token_policies={SEAL_MIGRATION_ROLE} token_ttl=1h token_max_ttl=4h. The migration then starts by itself",
        operator.namespace, operator.service_account
    )
}

/// Whether OpenBao refused a login because the role does not exist (`role "x" could not be
/// found`, HTTP 400; seen on 2.7.2 in tests/openbao_access.rs).
pub fn is_role_missing(e: &openbao_client::BaoError) -> bool {
    e.status() == Some(400) && e.api_errors().iter().any(|m| m.contains("could not be found"))
}

/// One reconcile's seal-migration step. `None`: no migration is wanted, nothing to report.
pub async fn step(
    ctx: &Context,
    cluster: &Cluster<'_>,
    previous: &OpenBaoClusterStatus,
    bundle: Option<&str>,
    new_seal_ready: bool,
    workloads: &SealWorkloads,
) -> Option<SealStepOutcome> {
    let m = previous.seal_migration.clone().unwrap_or_default();
    if !previous.initialized {
        return None;
    }
    if workloads.hold == Hold::None && m.phase == SealMigrationPhase::Idle {
        // Settled on the spec's seal: clear what an aborted or blocked migration left, and
        // keep the condition saying so (nothing when no migration was ever wanted).
        let recorded = previous.seal_migration.as_ref()?;
        let cleared = SealMigrationStatus {
            message: m.message.clone().filter(|_| m.aborted_to.is_none()),
            ..SealMigrationStatus::default()
        };
        let shown = cond::find(&previous.conditions, cond::SEAL_MIGRATION);
        let wanted = condition(&cleared);
        let unchanged = *recorded == cleared
            && shown.is_some_and(|c| {
                c.status == wanted.status.as_str() && c.reason == wanted.reason && c.message == wanted.message
            });
        return (!unchanged).then(|| outcome(previous, cleared, None, Vec::new()));
    }
    let mut blocked = m.clone();
    let block = |blocked: &mut SealMigrationStatus, reason: &str, message: &str| {
        note(blocked, reason, message);
        Some(outcome(
            previous,
            blocked.clone(),
            Some(Duration::from_secs(15)),
            Vec::new(),
        ))
    };
    let new_seal_ready = workloads
        .new_seal
        .as_ref()
        .map_or(new_seal_ready, super::status::SealState::is_ready);
    if let Err(mut b) = may_step(cluster.spec, previous, workloads.from, new_seal_ready) {
        if let Some(super::status::SealState::Problem { message, .. }) = &workloads.new_seal {
            b.message = format!("{}: {message}", b.message);
        }
        return block(&mut blocked, b.reason, &b.message);
    }
    let Some(bundle) = bundle else {
        return block(&mut blocked, "NoCABundle", "no CA bundle to reach OpenBao with");
    };
    // Boxed (here and the driver's step): their futures are large, and the reconcile's own
    // future must stay small enough for the stack of whoever polls it.
    let login = tokio::time::timeout(
        LOGIN_TIMEOUT,
        Box::pin(super::upgrade::operator_login_as(
            ctx,
            cluster,
            bundle,
            SEAL_MIGRATION_ROLE,
        )),
    )
    .await;
    let token = match login {
        Err(_) => {
            return block(
                &mut blocked,
                "LoginFailed",
                "logging in for the seal migration: no answer within 20 s",
            );
        }
        Ok(Err(e)) if e.refused.as_ref().is_some_and(is_role_missing) => {
            let audience = names::jwt_audience(cluster.namespace, cluster.name);
            let message = role_missing_message(&ctx.operator, &audience);
            return block(&mut blocked, "SealMigrationRoleMissing", &message);
        }
        Ok(Err(e)) => return block(&mut blocked, "LoginFailed", &e.message),
        Ok(Ok(token)) => token,
    };
    let platform = KubeSealPlatform::new(ctx, cluster, workloads, bundle.to_string(), token, &m);
    let driver = SealDriver::new(cluster.name, platform);
    let target = SealTarget {
        to: spec_seal(cluster.spec),
        snapshot_first: cluster.spec.backup.is_some(),
    };
    match Box::pin(driver.step(target, &m)).await {
        Ok(report) => {
            let mut events = Vec::new();
            if report.status.phase != m.phase {
                events.push((
                    "SealMigrationPhaseChanged".to_string(),
                    format!(
                        "seal migration phase {:?} -> {:?}: {}",
                        m.phase,
                        report.status.phase,
                        report.status.message.clone().unwrap_or_default()
                    ),
                ));
            }
            Some(outcome(previous, report.status, report.requeue_after, events))
        }
        Err(e) => block(
            &mut blocked,
            "ObserveFailed",
            &format!("observing the servers for the seal migration: {e}"),
        ),
    }
}

fn outcome(
    previous: &OpenBaoClusterStatus,
    m: SealMigrationStatus,
    requeue: Option<Duration>,
    events: Vec<(String, String)>,
) -> SealStepOutcome {
    let mut status = previous.clone();
    cond::set_condition(&mut status.conditions, condition(&m), None, Time(Timestamp::now()));
    status.seal_migration = Some(m);
    SealStepOutcome {
        status,
        requeue,
        events,
    }
}

// ---------------------------------------------------------------------------------------------
// The platform.

fn kube_error(context: String) -> impl FnOnce(kube::Error) -> PlatformError {
    move |e| PlatformError::new(context, e)
}

/// The servers of the live set as pods, the recovery key as the Secret `<c>-recovery-key`.
pub struct KubeSealPlatform<'a> {
    ctx: &'a Context,
    name: String,
    namespace: String,
    uid: String,
    spec: OpenBaoClusterSpec,
    ca_pem: String,
    token: Token,
    live: Revision,
    statefulset_name: String,
    migration_hash: Option<String>,
    new_hash: Option<String>,
    /// When the migration started: names its pre-migration snapshot Jobs.
    started: Timestamp,
    pod_ips: Mutex<HashMap<String, IpAddr>>,
}

impl<'a> KubeSealPlatform<'a> {
    /// `token` is the operator's seal-migration token (role `openbao-operator-seal-migration`).
    pub fn new(
        ctx: &'a Context,
        cluster: &Cluster<'_>,
        workloads: &SealWorkloads,
        ca_pem: String,
        token: Token,
        m: &SealMigrationStatus,
    ) -> Self {
        Self {
            ctx,
            name: cluster.name.to_string(),
            namespace: cluster.namespace.to_string(),
            uid: cluster.uid.to_string(),
            spec: cluster.spec.clone(),
            ca_pem,
            token,
            live: workloads.live.clone(),
            statefulset_name: workloads.statefulset_name.clone(),
            migration_hash: workloads.stage_hash(SealStage::Migration),
            new_hash: workloads.stage_hash(SealStage::New),
            started: m.started_at.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0),
            pod_ips: Mutex::default(),
        }
    }

    fn cluster(&self) -> Cluster<'_> {
        Cluster {
            name: &self.name,
            namespace: &self.namespace,
            uid: &self.uid,
            spec: &self.spec,
        }
    }

    fn writer(&self) -> Writer<'_> {
        Writer::new(self.ctx, &self.namespace)
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    /// The stage a pod's config hash stands for.
    fn stage_of(&self, pod: &Pod) -> SealStage {
        let hash = pod.annotations().get(CONFIG_HASH_ANNOTATION);
        if hash.is_some() && hash == self.migration_hash.as_ref() {
            SealStage::Migration
        } else if hash.is_some() && hash == self.new_hash.as_ref() {
            SealStage::New
        } else {
            SealStage::Old
        }
    }

    fn stage_hash(&self, stage: SealStage) -> Option<&String> {
        match stage {
            SealStage::Old => None,
            SealStage::Migration => self.migration_hash.as_ref(),
            SealStage::New => self.new_hash.as_ref(),
        }
    }

    async fn statefulset(&self) -> Result<StatefulSet, PlatformError> {
        let name = &self.statefulset_name;
        self.api::<StatefulSet>()
            .get_opt(name)
            .await
            .map_err(kube_error(format!("reading StatefulSet {name}")))?
            .ok_or_else(|| PlatformError::new(format!("StatefulSet {name}"), "does not exist".to_string()))
    }
}

fn template_hash(sts: &StatefulSet) -> Option<&String> {
    sts.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(CONFIG_HASH_ANNOTATION)
}

impl SealPlatform for KubeSealPlatform<'_> {
    async fn nodes(&self) -> Result<Vec<SealNode>, PlatformError> {
        let sts = self.statefulset().await?;
        let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0).max(0) as u32;
        let listed = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("{CLUSTER_LABEL}={}", self.name)))
            .await
            .map_err(kube_error(format!("listing the pods of {}", self.name)))?;
        let by_name: HashMap<String, &Pod> = listed.items.iter().map(|p| (p.name_any(), p)).collect();
        let mut ips = HashMap::new();
        let mut nodes = Vec::new();
        for ordinal in 0..replicas {
            let id = names::pod(&self.name, self.live.as_deref(), ordinal);
            let pod = by_name.get(&id).copied();
            if let Some(ip) = pod.and_then(KubePlatform::pod_ip) {
                ips.insert(id.clone(), ip);
            }
            let running = pod.is_some_and(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            });
            nodes.push(SealNode {
                stage: pod.map_or(SealStage::Old, |p| self.stage_of(p)),
                id,
                ordinal,
                running,
            });
        }
        *self.pod_ips.lock().expect("pod ip lock") = ips;
        Ok(nodes)
    }

    async fn client(&self, node_id: &str) -> Result<BaoClient, PlatformError> {
        let known = self.pod_ips.lock().expect("pod ip lock").get(node_id).copied();
        let ip = match known {
            Some(ip) => ip,
            None => self
                .api::<Pod>()
                .get_opt(node_id)
                .await
                .map_err(kube_error(format!("reading pod {node_id}")))?
                .as_ref()
                .and_then(KubePlatform::pod_ip)
                .ok_or_else(|| PlatformError::new(format!("pod {node_id}"), "has no IP".to_string()))?,
        };
        let url = server_url(&self.name, &self.namespace, node_id);
        let config = ClientConfig::new(url.clone())
            .with_ca_pem(self.ca_pem.as_bytes().to_vec())
            .with_resolve_to(ip)
            .with_timeout(Duration::from_secs(5));
        let client = BaoClient::new(config).map_err(|e| PlatformError::new(format!("client for {url}"), e))?;
        Ok(client.with_token(self.token.clone()))
    }

    async fn restart_node(&self, node_id: &str, stage: SealStage) -> Result<(), PlatformError> {
        let context = format!("restarting {node_id} on the {stage:?} seal configuration");
        let Some(wanted) = self.stage_hash(stage) else {
            return Err(PlatformError::new(
                context,
                "that stage's configuration is not known".to_string(),
            ));
        };
        let sts = self.statefulset().await?;
        let on_delete = sts
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.type_.as_deref())
            == Some("OnDelete");
        let seen = sts.status.as_ref().and_then(|s| s.observed_generation) >= sts.metadata.generation;
        // A pod deleted before the StatefulSet controller saw the stage's template would come
        // back on the previous one; the reconcile writes the template, a later step deletes.
        if template_hash(&sts) != Some(wanted) || !on_delete || !seen {
            return Err(PlatformError::new(
                context,
                "the StatefulSet's template does not carry that stage with OnDelete (observed) yet".to_string(),
            ));
        }
        let Some(pod) = self
            .api::<Pod>()
            .get_opt(node_id)
            .await
            .map_err(kube_error(format!("reading pod {node_id}")))?
        else {
            return Ok(());
        };
        if pod.metadata.deletion_timestamp.is_some() || pod.annotations().get(CONFIG_HASH_ANNOTATION) == Some(wanted) {
            return Ok(());
        }
        self.writer()
            .delete::<Pod>(node_id, &DeleteParams::default())
            .await
            .map(drop)
            .map_err(|e| PlatformError::new(format!("deleting pod {node_id}"), e))
    }

    async fn take_snapshot(&self, attempt: i32) -> Result<Snapshot, PlatformError> {
        super::snapshot::take(self.ctx, &self.cluster(), self.started, attempt).await
    }

    async fn recovery_key(&self) -> Result<Option<RecoveryKey>, PlatformError> {
        let name = names::recovery_key_secret(&self.name);
        let secret = self
            .api::<Secret>()
            .get_opt(&name)
            .await
            .map_err(kube_error(format!("reading Secret {name}")))?;
        let data = secret.and_then(|s| s.data).unwrap_or_default();
        let field = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(&v.0).into_owned());
        Ok(match (field(RECOVERY_KEY), field(RECOVERY_NONCE)) {
            (Some(key), Some(verification_nonce)) if !key.is_empty() => Some(RecoveryKey {
                key,
                verification_nonce,
            }),
            _ => None,
        })
    }

    async fn store_recovery_key(&self, key: &RecoveryKey) -> Result<(), PlatformError> {
        let secret = recovery_key_secret(&self.cluster(), key);
        self.writer()
            .apply(&secret)
            .await
            .map(drop)
            .map_err(|e| PlatformError::new(format!("storing the recovery key in Secret {}", secret.name_any()), e))
    }

    async fn remove_old_seal(&self, from: UnsealType) -> Result<(), PlatformError> {
        if from != UnsealType::Static {
            // A transit seal's token and CA are the user's Secrets: they are left alone.
            return Ok(());
        }
        let name = names::unseal_key_secret(&self.name);
        self.writer()
            .delete::<Secret>(&name, &DeleteParams::default())
            .await
            .map(drop)
            .map_err(|e| PlatformError::new(format!("deleting the static seal key Secret {name}"), e))
    }
}

/// `<c>-recovery-key`: the recovery key the operator made, and its verification nonce. Like the
/// static seal key it outlives the cluster unless `DeleteAll` (retained volumes may need it to
/// migrate again).
pub fn recovery_key_secret(cluster: &Cluster, key: &RecoveryKey) -> Secret {
    let mut metadata = objects::meta(cluster, names::recovery_key_secret(cluster.name), "seal");
    if cluster.spec.deletion_policy != DeletionPolicy::DeleteAll {
        metadata.owner_references = None;
    }
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (RECOVERY_KEY.to_string(), ByteString(key.key.as_bytes().to_vec())),
            (
                RECOVERY_NONCE.to_string(),
                ByteString(key.verification_nonce.as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
