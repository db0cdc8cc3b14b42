//! [`KubeSealPlatform`]: the servers of the live set as pods, each one's stage read from its
//! config hash, the recovery key in the Secret `spec.unseal.recoveryKey.secretName` (by default
//! `<cluster>-recovery-key`).

use super::*;
use crate::controllers::cluster::upgrade::{ServerAccess, is_running, kube_error};

/// The servers of the live set as pods, the recovery key in its Secret.
pub struct KubeSealPlatform<'a> {
    ctx: &'a Context,
    name: String,
    namespace: String,
    uid: String,
    spec: OpenBaoClusterSpec,
    servers: ServerAccess,
    live: Revision,
    statefulset_name: String,
    migration_hash: Option<String>,
    new_hash: Option<String>,
    /// When the migration started: names its pre-migration snapshot Jobs.
    started: Timestamp,
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
            servers: ServerAccess::new(cluster, ca_pem, token),
            live: workloads.live.clone(),
            statefulset_name: workloads.statefulset_name.clone(),
            migration_hash: workloads.stage_hash(SealStage::Migration),
            new_hash: workloads.stage_hash(SealStage::New),
            started: m.started_at.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0),
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

pub(super) fn template_hash(sts: &StatefulSet) -> Option<&String> {
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
            let running = pod.is_some_and(is_running);
            nodes.push(SealNode {
                stage: pod.map_or(SealStage::Old, |p| self.stage_of(p)),
                id,
                ordinal,
                running,
            });
        }
        self.servers.remember(ips);
        Ok(nodes)
    }

    async fn client(&self, node_id: &str) -> Result<BaoClient, PlatformError> {
        self.servers.client(&self.api::<Pod>(), node_id).await
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
        super::super::snapshot::take(self.ctx, &self.cluster(), self.started, attempt).await
    }

    async fn recovery_key(&self) -> Result<Option<RecoveryKey>, PlatformError> {
        let name = openbao_api::recovery_key_secret_name(self.spec.unseal.as_ref(), &self.name);
        let secret = self
            .api::<Secret>()
            .get_opt(&name)
            .await
            .map_err(kube_error(format!("reading Secret {name}")))?;
        // The name is the user's choice: a Secret the operator did not make for this cluster
        // is neither read nor overwritten.
        if let Some(s) = &secret
            && s.labels().get(CLUSTER_LABEL) != Some(&self.name)
        {
            return Err(PlatformError::new(
                format!("Secret {name} (spec.unseal.recoveryKey.secretName)"),
                "it exists and was not made by the operator for this cluster; name another Secret",
            ));
        }
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

/// The recovery key the operator made, and its verification nonce, in the Secret
/// `spec.unseal.recoveryKey.secretName` (by default `<c>-recovery-key`). Like the static seal
/// key it outlives the cluster unless `DeleteAll` (retained volumes may need it to migrate
/// again, or to generate a root token).
pub fn recovery_key_secret(cluster: &Cluster, key: &RecoveryKey) -> Secret {
    let name = openbao_api::recovery_key_secret_name(cluster.spec.unseal.as_ref(), cluster.name);
    let mut metadata = objects::meta(cluster, name, "seal");
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
