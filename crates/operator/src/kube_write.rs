//! The one way the operator writes to Kubernetes. Every controller (cluster, blue/green,
//! rolling, backup, restore, executor Jobs) writes through a [`Writer`], so that every write
//! request has the same semantics, the same error and is counted once in `kube_writes`:
//!
//! - [`Writer::apply`]: server-side apply with the one field manager ([`crate::FIELD_MANAGER`],
//!   forced), **only when it would change something** (see below);
//! - [`Writer::create`]: create-once (an existing object is reported, never overwritten);
//! - [`Writer::delete`] and [`Writer::delete_if_owned`]: a missing object is no error;
//! - [`Writer::prune`]: deletes an owner's children of one kind and label selector that are not
//!   wanted any more, whatever their names, listing only when the wanted set changed;
//! - [`Writer::patch_status`]: the status as a JSON merge patch of what changed ([`merge_patch`]),
//!   sent only when something did, optionally guarded by the resourceVersion;
//! - [`Writer::event`]: an Event, not repeated while the same one was published recently.
//!
//! ## Applying only what changed
//! A no-op server-side apply still costs the apiserver a request, admission and a diff, and a
//! fleet re-applies every child on every reconcile. So each applied object carries
//! [`APPLIED_HASH_ANNOTATION`], the sha256 of the desired object's JSON, and the object is applied
//! again only when the observed one (a GET; reads are cheap, writes are what the apiserver
//! persists, audits and fans out to every watcher) differs:
//! - its annotation is not the desired hash: the desired object changed since the last apply,
//!   including a field the operator no longer sets (which only an apply removes); or
//! - some field the desired object sets has another value on the observed object: someone else
//!   edited it (drift), or the server normalizes it (then it is applied each time, as before);
//! - the object is missing: someone deleted it.
//!
//! The state lives on the object itself, not in memory: a restarted operator (or a new leader)
//! compares against what the last one applied and sends nothing, instead of a write per child
//! of every cluster at start-up. An in-memory cache keyed by resourceVersion would forget
//! everything on restart, and would re-apply a StatefulSet whenever its status moved.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::FIELD_MANAGER;
use crate::context::Context;

/// sha256 (hex) of the JSON of the object as last applied by the operator.
pub const APPLIED_HASH_ANNOTATION: &str = "openbao.org/applied-hash";

/// A Kubernetes API request that failed, with what the operator was doing. Reads and writes
/// alike; never carries an object's content (a Secret's data must not reach a log).
#[derive(Debug, thiserror::Error)]
#[error("Kubernetes API request failed while {action}: {source}")]
pub struct KubeError {
    pub action: String,
    #[source]
    pub source: Box<kube::Error>,
}

impl KubeError {
    pub fn new(action: impl Into<String>, source: kube::Error) -> Self {
        Self {
            action: action.into(),
            source: Box::new(source),
        }
    }

    /// The HTTP status the apiserver answered with, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self.source.as_ref() {
            kube::Error::Api(e) => Some(e.code),
            _ => None,
        }
    }

    /// The write lost a race for a resourceVersion (HTTP 409): decide again from fresh reads.
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }

    /// The `reason` label of `reconcile_errors`.
    pub fn metric_label(&self) -> &'static str {
        "kube"
    }
}

/// `map_err` adapter: `.map_err(kube_err("reading Secret x"))`.
pub fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> KubeError {
    let action = action.into();
    move |source| KubeError::new(action, source)
}

/// What [`Writer::create`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    /// An object of that name existed already; it was left as it is.
    AlreadyExists,
}

/// Writes to one namespace, on behalf of one reconcile.
#[derive(Clone, Copy)]
pub struct Writer<'a> {
    ctx: &'a Context,
    namespace: &'a str,
}

impl<'a> Writer<'a> {
    pub fn new(ctx: &'a Context, namespace: &'a str) -> Self {
        Self { ctx, namespace }
    }

    pub fn namespace(&self) -> &'a str {
        self.namespace
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.ctx.client.clone(), self.namespace)
    }

    fn counted(&self) {
        self.ctx.metrics.kube_writes.inc();
    }

    /// Server-side applies `obj` when the observed object differs from it (see the module
    /// documentation); returns the object as the apiserver has it.
    pub async fn apply<K>(&self, obj: &K) -> Result<K, KubeError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let kind = K::kind(&());
        let desired = with_hash(obj);
        let api = self.api::<K>();
        let observed = api
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading {kind} {name}")))?;
        if let Some(observed) = observed {
            match why_apply(&desired, &observed) {
                None => return Ok(observed),
                Some(why) => tracing::debug!(%kind, %name, %why, "applying"),
            }
        }
        self.counted();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(kube_err(format!("applying {kind} {name}")))
    }

    /// Creates `obj` unless an object of its name exists; that one is left untouched.
    /// `field_manager` names who owns the fields (e.g. the seal key's own manager).
    pub async fn create<K>(&self, obj: &K, field_manager: &str) -> Result<Created, KubeError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let params = PostParams {
            field_manager: Some(field_manager.to_string()),
            ..Default::default()
        };
        self.counted();
        match self.api::<K>().create(&params, obj).await {
            Ok(_) => Ok(Created::Created),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Created::AlreadyExists),
            Err(e) => Err(KubeError::new(format!("creating {} {name}", K::kind(&())), e)),
        }
    }

    /// Deletes `name`; `Ok(false)` when it did not exist.
    pub async fn delete<K>(&self, name: &str, params: &DeleteParams) -> Result<bool, KubeError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug,
    {
        self.counted();
        match self.api::<K>().delete(name, params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(KubeError::new(format!("deleting {} {name}", K::kind(&())), e)),
        }
    }

    /// Deletes `name` only if it exists and `owner_uid` controls it (prunes what a cluster no
    /// longer wants, never a stranger's object of the same name). `Ok(true)`: deleted.
    pub async fn delete_if_owned<K>(&self, name: &str, owner_uid: &str) -> Result<bool, KubeError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug,
    {
        let kind = K::kind(&());
        let Some(existing) = self
            .api::<K>()
            .get_opt(name)
            .await
            .map_err(kube_err(format!("reading {kind} {name}")))?
        else {
            return Ok(false);
        };
        if !controlled_by(existing.owner_references(), owner_uid) {
            return Ok(false);
        }
        self.delete::<K>(name, &DeleteParams::default()).await
    }

    /// Deletes the objects of kind `K` that carry the labels `selector`, are controlled by
    /// `owner_uid` and are not named in `keep`: what the owner no longer wants, whatever its
    /// name (a child an earlier version named differently goes too), never an object someone
    /// else controls. Returns the names deleted.
    ///
    /// The list (metadata only: a Secret's data is never read) is sent only when `keep` differs
    /// from what the last prune of the same kind, selector and owner kept ([`Pruned`]), so a
    /// settled owner costs no request. That memory is the process's own: a restarted operator
    /// lists each once more, which is when a child left behind by an earlier version is found.
    pub async fn prune<K>(&self, selector: &str, owner_uid: &str, keep: &[String]) -> Result<Vec<String>, KubeError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug,
    {
        let kind = K::kind(&());
        let key = format!("{kind}\n{}\n{selector}\n{owner_uid}", self.namespace);
        let keep: BTreeSet<String> = keep.iter().cloned().collect();
        if self.ctx.pruned.unchanged(&key, &keep) {
            return Ok(Vec::new());
        }
        let listed = self
            .api::<K>()
            .list_metadata(&ListParams::default().labels(selector))
            .await
            .map_err(kube_err(format!("listing {kind} {selector}")))?;
        let mut deleted = Vec::new();
        for object in listed.items {
            let name = object.name_any();
            if keep.contains(&name)
                || object.metadata.deletion_timestamp.is_some()
                || !controlled_by(object.owner_references(), owner_uid)
            {
                continue;
            }
            // Only the object seen as owned: one re-created under the name meanwhile stays.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: object.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            if self.delete::<K>(&name, &params).await? {
                deleted.push(name);
            }
        }
        self.ctx.pruned.remember(key, keep);
        Ok(deleted)
    }

    /// Patches the status of `name` from `stored` to `wanted` (a merge patch of what changed);
    /// nothing is sent when they are equal. With `resource_version` the write fails with a
    /// conflict ([`KubeError::is_conflict`]) if the object changed since it was read.
    /// `Ok(true)`: a patch was sent.
    pub async fn patch_status<K, S>(
        &self,
        name: &str,
        stored: Option<&S>,
        wanted: &S,
        resource_version: Option<&str>,
    ) -> Result<bool, KubeError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug,
        S: Serialize + PartialEq,
    {
        if stored == Some(wanted) {
            return Ok(false);
        }
        let stored = serde_json::to_value(stored).unwrap_or_default();
        let wanted = serde_json::to_value(wanted).unwrap_or_default();
        let mut patch = serde_json::json!({"status": merge_patch(&stored, &wanted)});
        if let Some(rv) = resource_version {
            patch["metadata"] = serde_json::json!({"resourceVersion": rv});
        }
        self.merge_status::<K>(name, &patch).await.map(|()| true)
    }

    /// Sends `patch` (a JSON merge patch with a `status` and optionally a
    /// `metadata.resourceVersion`) to the status of `name`, as it is.
    pub async fn merge_status<K>(&self, name: &str, patch: &Value) -> Result<(), KubeError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug,
    {
        self.send_merge::<K>(name, patch, true).await
    }

    /// Sends `patch` (a JSON merge patch, e.g. of finalizers) to `name`, as it is.
    pub async fn merge<K>(&self, name: &str, patch: &Value) -> Result<(), KubeError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug,
    {
        self.send_merge::<K>(name, patch, false).await
    }

    /// One merge patch request, to the `status` subresource or to the object itself.
    async fn send_merge<K>(&self, name: &str, patch: &Value, status: bool) -> Result<(), KubeError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug,
    {
        let (api, params, patch) = (self.api::<K>(), PatchParams::default(), Patch::Merge(patch));
        let kind = K::kind(&());
        self.counted();
        let (sent, action) = if status {
            (api.patch_status(name, &params, &patch).await, "writing the status of")
        } else {
            (api.patch(name, &params, &patch).await, "patching")
        };
        sent.map_err(kube_err(format!("{action} {kind} {name}")))?;
        Ok(())
    }

    /// Publishes an Event about `object`, unless the same one (type, reason, note) was published
    /// about it within [`EVENT_REPEAT_AFTER`]. Failures are logged only: an Event is never worth
    /// failing a reconcile.
    pub async fn event(&self, object: &ObjectReference, type_: EventType, reason: &str, note: &str, action: &str) {
        let key = format!(
            "{}/{}/{}\n{type_:?}\n{reason}\n{note}",
            object.kind.as_deref().unwrap_or_default(),
            object.uid.as_deref().unwrap_or_default(),
            object.name.as_deref().unwrap_or_default()
        );
        if !self.ctx.published_events.first_in_a_while(key, Instant::now()) {
            return;
        }
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.into()),
            action: action.into(),
            secondary: None,
        };
        self.counted();
        let recorder = Recorder::new(self.ctx.client.clone(), self.ctx.reporter.clone());
        if let Err(e) = recorder.publish(&event, object).await {
            tracing::debug!(error = %e, "publishing an event failed");
        }
    }
}

/// An Event is published again only this long after the same one.
pub const EVENT_REPEAT_AFTER: Duration = Duration::from_secs(3600);
/// Bound on remembered Events (they are forgotten after [`EVENT_REPEAT_AFTER`] anyway).
const EVENT_MEMORY: usize = 10_000;

/// The Events published recently, so that a reconcile that finds the same situation again does
/// not say the same thing again. In memory: after a restart an Event may be published once more.
#[derive(Default)]
pub struct PublishedEvents(Mutex<HashMap<String, Instant>>);

impl PublishedEvents {
    /// True (and remembered) when `key` was not published within [`EVENT_REPEAT_AFTER`] of `now`.
    pub fn first_in_a_while(&self, key: String, now: Instant) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < EVENT_REPEAT_AFTER)
        {
            return false;
        }
        if seen.len() >= EVENT_MEMORY {
            seen.retain(|_, at| now.duration_since(*at) < EVENT_REPEAT_AFTER);
            if seen.len() >= EVENT_MEMORY {
                seen.clear();
            }
        }
        seen.insert(key, now);
        true
    }
}

/// Whether an owner reference in `references` is the controller `owner_uid`.
fn controlled_by(references: &[OwnerReference], owner_uid: &str) -> bool {
    references
        .iter()
        .any(|o| o.uid == owner_uid && o.controller == Some(true))
}

/// Bound on remembered prunes (a few per cluster; forgetting one costs one list).
const PRUNE_MEMORY: usize = 10_000;

/// What each [`Writer::prune`] kept last time (by kind, namespace, selector and owner), so that
/// it lists again only when the wanted set changed.
#[derive(Default)]
pub struct Pruned(Mutex<HashMap<String, BTreeSet<String>>>);

impl Pruned {
    fn unchanged(&self, key: &str, keep: &BTreeSet<String>) -> bool {
        let pruned = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pruned.get(key) == Some(keep)
    }

    fn remember(&self, key: String, keep: BTreeSet<String>) {
        let mut pruned = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if pruned.len() >= PRUNE_MEMORY {
            pruned.clear();
        }
        pruned.insert(key, keep);
    }
}

/// `obj` with [`APPLIED_HASH_ANNOTATION`] set to the hash of its content (without the annotation).
fn with_hash<K: Resource + Serialize + Clone>(obj: &K) -> K {
    let mut desired = obj.clone();
    desired.annotations_mut().remove(APPLIED_HASH_ANNOTATION);
    let hash = hex::encode(Sha256::digest(serde_json::to_vec(&desired).unwrap_or_default()));
    desired
        .annotations_mut()
        .insert(APPLIED_HASH_ANNOTATION.to_string(), hash);
    desired
}

/// Why `desired` (carrying its hash) must be applied over `observed`; `None`: it would change
/// nothing.
fn why_apply<K: Resource + Serialize>(desired: &K, observed: &K) -> Option<String> {
    let hash = |k: &K| k.annotations().get(APPLIED_HASH_ANNOTATION).cloned();
    if hash(desired) != hash(observed) {
        return Some("the desired object changed since it was last applied".into());
    }
    let desired = serde_json::to_value(desired).unwrap_or_default();
    let observed = serde_json::to_value(observed).unwrap_or_default();
    first_difference(&desired, &observed, "").map(|path| format!("{path} differs from the desired value"))
}

/// The first path at which `observed` does not hold what `desired` sets (`None`: it holds all
/// of it). Fields only `observed` has (defaults, status, other managers' fields) are ignored;
/// lists must have the same length and hold the desired items in order.
fn first_difference(desired: &Value, observed: &Value, path: &str) -> Option<String> {
    match (desired, observed) {
        (Value::Object(d), Value::Object(o)) => d.iter().find_map(|(k, v)| match (v, o.get(k)) {
            (Value::Null, None) => None,
            (v, Some(ov)) => first_difference(v, ov, &format!("{path}.{k}")),
            (_, None) => Some(format!("{path}.{k}")),
        }),
        (Value::Array(d), Value::Array(o)) if d.len() == o.len() => d
            .iter()
            .zip(o)
            .enumerate()
            .find_map(|(i, (dv, ov))| first_difference(dv, ov, &format!("{path}[{i}]"))),
        (d, o) if d == o => None,
        _ => Some(if path.is_empty() { ".".into() } else { path.into() }),
    }
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: only what changed, and keys
/// `new` lacks set to null, since a merge patch keeps whatever it does not mention (status
/// fields that serialize only when set, e.g. a finished upgrade's green revision, would
/// otherwise never go away). Lists are replaced whole, as a merge patch always does.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, v) in n {
                match o.get(k) {
                    Some(ov) if ov == v => {}
                    Some(ov) => {
                        patch.insert(k.clone(), merge_patch(ov, v));
                    }
                    None => {
                        patch.insert(k.clone(), v.clone());
                    }
                }
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
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    #[test]
    fn a_merge_patch_sends_only_changes_and_removes_what_the_new_value_lacks() {
        let old = json!({"upgrade": {"phase": "Cleanup", "completedPods": ["a"]}, "blueGreen": {"blueRevision": "x", "greenRevision": "y"}, "n": 1, "same": {"a": 1}});
        let new = json!({"upgrade": {"phase": "Idle"}, "blueGreen": {"blueRevision": "y"}, "same": {"a": 1}});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"upgrade": {"phase": "Idle", "completedPods": null}, "blueGreen": {"blueRevision": "y", "greenRevision": null}, "n": null})
        );
        assert_eq!(merge_patch(&json!(null), &new), new);
    }

    fn config_map(data: Value) -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": "c", "labels": {"a": "1"}}, "data": data})).unwrap()
    }

    #[test]
    fn an_object_is_applied_only_when_its_desired_content_or_the_observed_one_changed() {
        let desired = with_hash(&config_map(json!({"k": "v"})));
        // What the apiserver returns: the same, plus fields of its own.
        let mut observed: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "c", "uid": "u", "resourceVersion": "7", "labels": {"a": "1", "other": "x"},
                         "annotations": desired.annotations()},
            "data": {"k": "v"}
        }))
        .unwrap();
        assert_eq!(why_apply(&desired, &observed), None);

        // Someone edited a field the operator sets.
        observed.data = Some([("k".to_string(), "edited".to_string())].into());
        assert!(why_apply(&desired, &observed).unwrap().contains(".data.k"));

        // The operator's desired content changed (also when it only drops a field).
        let observed = with_hash(&config_map(json!({"k": "v", "gone": "x"})));
        assert!(why_apply(&desired, &observed).is_some());
        // An object applied before the annotation existed is applied once more.
        assert!(why_apply(&desired, &config_map(json!({"k": "v"}))).is_some());
    }

    #[test]
    fn lists_must_hold_the_desired_items_in_order_with_the_servers_defaults_ignored() {
        let desired = json!({"ports": [{"port": 8200}]});
        assert_eq!(
            first_difference(&desired, &json!({"ports": [{"port": 8200, "protocol": "TCP"}]}), ""),
            None
        );
        assert_eq!(
            first_difference(&desired, &json!({"ports": [{"port": 8200}, {"port": 1}]}), ""),
            Some(".ports".into())
        );
        assert_eq!(
            first_difference(&desired, &json!({"ports": [{"port": 8201}]}), ""),
            Some(".ports[0].port".into())
        );
    }

    /// Every write to a Kubernetes object goes through this module, so every one is counted
    /// and none skips the unchanged-content check. Outside it only requests that store nothing
    /// in a cluster's namespace: the leader Lease (runtime/leader.rs, bounded by the lease's own
    /// clock) and TokenReview/TokenRequest (openbao.rs).
    #[test]
    fn no_kubernetes_write_bypasses_this_module() {
        const ALLOWED: [&str; 3] = ["kube_write.rs", "runtime/leader.rs", "openbao.rs"];
        const WRITES: [&str; 5] = ["Patch::", "PostParams", ".patch_status(", ".replace(&", "Recorder::"];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("reading src") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let mut violations = Vec::new();
        for file in files {
            let relative = file
                .strip_prefix(&root)
                .expect("under src")
                .to_string_lossy()
                .to_string();
            if ALLOWED.contains(&relative.as_str()) || relative.starts_with("executors/") {
                continue;
            }
            let source = std::fs::read_to_string(&file).expect("reading a source");
            for write in WRITES.iter().filter(|w| source.contains(**w)) {
                violations.push(format!("{relative} uses {write}"));
            }
        }
        assert!(
            violations.is_empty(),
            "write through kube_write::Writer: {violations:#?}"
        );
    }

    #[test]
    fn a_prune_lists_again_only_when_the_wanted_set_changed() {
        let pruned = Pruned::default();
        let keep = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        assert!(!pruned.unchanged("Service\nns\nsel\nuid", &keep(&[])));
        pruned.remember("Service\nns\nsel\nuid".into(), keep(&[]));
        assert!(pruned.unchanged("Service\nns\nsel\nuid", &keep(&[])));
        assert!(!pruned.unchanged("Service\nns\nsel\nuid", &keep(&["m"])));
        assert!(!pruned.unchanged("Service\nns\nsel\nother-uid", &keep(&[])));
    }

    #[test]
    fn an_event_is_published_once_in_a_while() {
        let events = PublishedEvents::default();
        let t = Instant::now();
        assert!(events.first_in_a_while("a".into(), t));
        assert!(!events.first_in_a_while("a".into(), t + Duration::from_secs(60)));
        assert!(events.first_in_a_while("b".into(), t + Duration::from_secs(60)));
        assert!(events.first_in_a_while("a".into(), t + EVENT_REPEAT_AFTER));
    }
}
