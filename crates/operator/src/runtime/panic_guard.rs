//! Contains a panic in one reconcile. kube's `Controller` runs each reconcile as a task and
//! re-raises its panic in the controller's stream, which would end every controller of the
//! process; [`PanicGuard`] turns the panic into a failed reconcile of that one object instead
//! (counted, logged, retried with a backoff that grows while it keeps panicking).

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::Resource;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::metrics::{ControllerLabels, Metrics};

/// First retry after a panic; doubled for each further panic in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A reconcile's error, or its panic.
#[derive(Debug, thiserror::Error)]
pub enum Guarded<E> {
    #[error(transparent)]
    Failed(E),
    #[error("reconcile panicked: {0}")]
    Panicked(String),
}

/// Wraps one controller's reconcile and error policy (see the module documentation).
pub struct PanicGuard<K: Resource> {
    controller: &'static str,
    metrics: Metrics,
    /// Panics in a row, by object.
    streaks: Arc<Mutex<HashMap<ObjectRef<K>, u32>>>,
}

impl<K> PanicGuard<K>
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    /// Drives a controller's reconciles until its stream ends (at shutdown). A reconcile that
    /// did not complete is logged at debug level only: the error policy reported it already.
    pub async fn drive<T, E: std::fmt::Display>(&self, results: impl futures::Stream<Item = Result<T, E>>) {
        let controller = self.controller;
        results
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(controller, error = %e, "reconcile did not complete");
                }
            })
            .await;
    }

    pub fn new(controller: &'static str, metrics: Metrics) -> Self {
        Self {
            controller,
            metrics,
            streaks: Arc::default(),
        }
    }

    /// `reconcile`, with a panic caught and reported as [`Guarded::Panicked`].
    pub fn reconciler<C, E, F, Fut>(
        &self,
        reconcile: F,
    ) -> impl FnMut(Arc<K>, Arc<C>) -> BoxFuture<'static, Result<Action, Guarded<E>>> + use<K, C, E, F, Fut>
    where
        C: Send + Sync + 'static,
        E: Send + 'static,
        F: Fn(Arc<K>, Arc<C>) -> Fut,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        let controller = self.controller;
        let metrics = self.metrics.clone();
        let streaks = self.streaks.clone();
        move |obj, ctx| {
            let object = ObjectRef::from_obj(obj.as_ref());
            // The future is dropped after a panic, never polled again: no broken state is seen.
            let run = AssertUnwindSafe(reconcile(obj, ctx)).catch_unwind();
            let metrics = metrics.clone();
            let streaks = streaks.clone();
            async move {
                let outcome = run.await;
                let mut streaks = streaks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                match outcome {
                    Ok(result) => {
                        streaks.remove(&object);
                        result.map_err(Guarded::Failed)
                    }
                    Err(payload) => {
                        *streaks.entry(object.clone()).or_default() += 1;
                        metrics
                            .reconcile_panics
                            .get_or_create(&ControllerLabels {
                                controller: controller.into(),
                            })
                            .inc();
                        let message = panic_message(payload.as_ref());
                        // The message is the one the panic hook printed: our code's own text.
                        tracing::error!(controller, object = %object, panic = %message, "reconcile panicked");
                        Err(Guarded::Panicked(message))
                    }
                }
            }
            .boxed()
        }
    }

    /// `policy` for the reconcile's own errors; after a panic, a retry that backs off while the
    /// object keeps panicking.
    pub fn error_policy<C, E, P>(&self, policy: P) -> impl Fn(Arc<K>, &Guarded<E>, Arc<C>) -> Action + use<K, C, E, P>
    where
        P: Fn(Arc<K>, &E, Arc<C>) -> Action,
    {
        let streaks = self.streaks.clone();
        move |obj, err, ctx| match err {
            Guarded::Failed(e) => policy(obj, e, ctx),
            Guarded::Panicked(_) => {
                let streak = streaks
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .get(&ObjectRef::from_obj(obj.as_ref()))
                    .copied()
                    .unwrap_or(1);
                Action::requeue(backoff(streak))
            }
        }
    }
}

fn backoff(panics_in_a_row: u32) -> Duration {
    let doublings = panics_in_a_row.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".into())
}

#[cfg(test)]
mod tests {
    use super::{Guarded, PanicGuard, backoff};
    use crate::runtime::metrics::{ControllerLabels, Metrics};
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::controller::Action;
    use std::sync::Arc;
    use std::time::Duration;

    fn object(name: &str) -> Arc<ConfigMap> {
        Arc::new(ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[derive(Debug, thiserror::Error)]
    #[error("ordinary failure")]
    struct Failure;

    async fn reconcile(obj: Arc<ConfigMap>, _ctx: Arc<()>) -> Result<Action, Failure> {
        match obj.metadata.name.as_deref() {
            Some("bad") => panic!("a bug in one reconcile"),
            Some("failing") => Err(Failure),
            _ => Ok(Action::requeue(Duration::from_secs(300))),
        }
    }

    fn policy(_: Arc<ConfigMap>, _: &Failure, _: Arc<()>) -> Action {
        Action::requeue(Duration::from_secs(1))
    }

    #[tokio::test]
    async fn a_panic_fails_one_object_with_a_growing_backoff_and_others_go_on() {
        let metrics = Metrics::default();
        let guard = PanicGuard::<ConfigMap>::new("test", metrics.clone());
        let mut run = guard.reconciler(reconcile);
        let on_error = guard.error_policy(policy);
        let ctx = Arc::new(());

        // As kube's Controller runs it: a task of its own, whose panic would be re-raised.
        let bad = tokio::spawn(run(object("bad"), ctx.clone()))
            .await
            .expect("no panic escapes");
        let err = bad.expect_err("a panic is a failed reconcile");
        assert!(
            matches!(&err, Guarded::Panicked(m) if m == "a bug in one reconcile"),
            "{err}"
        );
        assert_eq!(on_error(object("bad"), &err, ctx.clone()), Action::requeue(backoff(1)));

        let good = tokio::spawn(run(object("good"), ctx.clone())).await.unwrap();
        assert_eq!(good.unwrap(), Action::requeue(Duration::from_secs(300)));

        let again = run(object("bad"), ctx.clone()).await.unwrap_err();
        assert_eq!(
            on_error(object("bad"), &again, ctx.clone()),
            Action::requeue(backoff(2))
        );
        assert_eq!(backoff(2), Duration::from_secs(20));

        // The controller's own errors keep their own policy.
        let failed = run(object("failing"), ctx.clone()).await.unwrap_err();
        assert!(matches!(failed, Guarded::Failed(Failure)));
        assert_eq!(
            on_error(object("failing"), &failed, ctx),
            Action::requeue(Duration::from_secs(1))
        );

        let panics = metrics
            .reconcile_panics
            .get_or_create(&ControllerLabels {
                controller: "test".into(),
            })
            .get();
        assert_eq!(panics, 2);
        assert!(
            metrics
                .encode()
                .contains("openbao_operator_reconcile_panics_total{controller=\"test\"} 2")
        );
    }

    #[test]
    fn the_backoff_is_bounded() {
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(6), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }
}
