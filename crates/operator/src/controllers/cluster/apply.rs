//! Server-side apply with one field manager, and pruning of objects the cluster no longer wants.

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

use crate::FIELD_MANAGER;
use crate::runtime::metrics::Metrics;

pub struct Applier<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
    pub metrics: &'a Metrics,
    /// UID of the owning OpenBaoCluster: only objects it controls are ever pruned.
    pub owner_uid: &'a str,
}

impl Applier<'_> {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), self.namespace)
    }

    /// Applies `obj`; the apiserver persists nothing when the object already matches.
    pub async fn apply<K>(&self, obj: &K) -> Result<K, kube::Error>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
    {
        let name = obj.meta().name.clone().expect("built objects are named");
        self.metrics.kube_writes.inc();
        self.api::<K>()
            .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj))
            .await
    }

    /// Deletes `name` if it exists and this cluster controls it.
    pub async fn prune<K>(&self, name: &str) -> Result<bool, kube::Error>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug,
    {
        let api = self.api::<K>();
        let Some(existing) = api.get_opt(name).await? else {
            return Ok(false);
        };
        let owned = existing
            .owner_references()
            .iter()
            .any(|o| o.uid == self.owner_uid && o.controller == Some(true));
        if !owned {
            return Ok(false);
        }
        self.metrics.kube_writes.inc();
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: keys `new` lacks are set to
/// null, since a merge patch keeps whatever it does not mention (status fields that serialize
/// only when set, e.g. a finished upgrade's green revision, would otherwise never go away).
pub fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, v) in n {
                let entry = match o.get(k) {
                    Some(ov) => merge_patch(ov, v),
                    None => v.clone(),
                };
                patch.insert(k.clone(), entry);
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn a_merge_patch_removes_what_the_new_value_lacks() {
        let old = json!({"upgrade": {"phase": "Cleanup", "completedPods": ["a"]}, "blueGreen": {"blueRevision": "x", "greenRevision": "y"}, "n": 1});
        let new = json!({"upgrade": {"phase": "Idle"}, "blueGreen": {"blueRevision": "y"}});
        let patch = merge_patch(&old, &new);
        assert_eq!(
            patch,
            json!({"upgrade": {"phase": "Idle", "completedPods": null}, "blueGreen": {"blueRevision": "y", "greenRevision": null}, "n": null})
        );
        assert_eq!(merge_patch(&json!(null), &new), new);
    }
}
