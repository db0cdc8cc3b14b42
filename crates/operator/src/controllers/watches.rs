//! The watch streams of the controllers, shaped so that what stays in memory is what a reconcile
//! reads (issue 16: the operator's memory at 1,000 clusters). A reconcile reads its
//! `OpenBaoCluster` fresh from the apiserver when it acts (`cluster::observe::fresh`); the
//! cached copy only names it and answers cheap questions (spec, status). So the cache keeps no
//! `managedFields` (every writer's field list, often larger than the spec), and the watches of
//! other kinds, which only say "look at this cluster again", carry metadata only.

use futures::Stream;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use openbao_api::OpenBaoCluster;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Every `OpenBaoCluster` that `api` sees, cached without `managedFields`, and the cache.
pub fn clusters(
    api: Api<OpenBaoCluster>,
) -> (
    impl Stream<Item = Result<OpenBaoCluster, watcher::Error>> + Send,
    Store<OpenBaoCluster>,
) {
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|cluster| cluster.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects();
    (stream, reader)
}

/// The metadata (names, labels, owners) of the objects of `api` that `config` selects, as they
/// change: for watches that only map an object to the cluster it belongs to. An `Api` of
/// `PartialObjectMeta` asks the apiserver for `PartialObjectMetadata` (kube 4), so no Secret's
/// data ever reaches the operator this way.
pub fn metadata_of<K>(
    api: Api<PartialObjectMeta<K>>,
    config: watcher::Config,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    watcher(api, config).default_backoff().touched_objects()
}
