//! The lane's cluster and a watch of one object: every version of it as it changes, instead of a
//! poll every half second.

use anyhow::{Context as _, Result, bail};
use futures::{Stream, StreamExt as _};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::watch_object;
use kube::{Api, Client, Resource};
use openbao_api::OpenBaoCluster;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::time::Duration;

pub struct Lane {
    pub client: Client,
    pub namespace: String,
    pub cluster: String,
}

impl Lane {
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The lane's OpenBaoCluster now.
    pub async fn cluster(&self) -> Result<OpenBaoCluster> {
        self.api::<OpenBaoCluster>()
            .get(&self.cluster)
            .await
            .with_context(|| format!("OpenBaoCluster {}/{}", self.namespace, self.cluster))
    }
}

/// Every version of `name` from now on (`None` while it does not exist). A broken watch is
/// started again with a backoff; its errors are said, not fatal.
pub fn changes<K>(api: Api<K>, name: &str) -> impl Stream<Item = Option<K>> + Send + Unpin + use<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    Box::pin(
        watch_object(api, name)
            .default_backoff()
            .filter_map(|event| async move {
                match event {
                    Ok(object) => Some(object),
                    Err(err) => {
                        crate::say(format!("the watch broke ({err}); starting it again"));
                        None
                    }
                }
            }),
    )
}

/// What a follower made of one version of the object.
pub enum Progress<T> {
    Done(T),
    /// Not yet; what it waits for (the error message when time runs out).
    Waiting(String),
}

/// Follows `name` until `decide` says what it waited for, or fails after `limit` with what it
/// waited for last.
pub async fn follow<K, T>(
    api: Api<K>,
    name: &str,
    limit: Duration,
    mut decide: impl FnMut(Option<&K>) -> Result<Progress<T>>,
) -> Result<T>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut stream = changes(api, name);
    let deadline = tokio::time::Instant::now() + limit;
    let mut waiting = "no answer from the apiserver".to_string();
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(object)) => match decide(object.as_ref())? {
                Progress::Done(done) => return Ok(done),
                Progress::Waiting(what) => waiting = what,
            },
            Ok(None) => bail!("the watch of {name} ended"),
            Err(_) => bail!("{name}: not done after {}s: {waiting}", limit.as_secs()),
        }
    }
}
