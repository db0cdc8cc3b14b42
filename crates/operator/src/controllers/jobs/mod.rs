//! Executor Jobs, shared by every controller that runs one (backups, restore drills, the
//! pre-upgrade snapshot, restores): creating one Job once, observing it, its life
//! ([`lifecycle`]) and the result line its executor writes ([`result`]).
//!
//! Only pods the Job controls are read (owner reference with the Job's uid), and a Job that
//! already exists under the name counts as the one being created only when it carries the same
//! owner and labels: a stranger's object is never taken for our result.

pub mod lifecycle;
pub mod result;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use openbao_render::objects::jobs::Executor;

pub use lifecycle::{JOB_CREATE_GRACE, JobOutcome, RecordedJob, RunningJob, recorded_job, within_create_grace};
pub use result::ExecutorResult;

use crate::context::Context;
use crate::kube_write::{Created, KubeError, Writer, kube_err};

/// The label the Job controller puts on a Job's pods.
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(
        "Job {name} already exists but is not this operation's (another owner or other labels); \
         delete it or let it finish"
    )]
    NotOurs { name: String },
}

/// Creates `job` unless this very Job exists already (created by an earlier attempt of the
/// same start, see [`lifecycle::is_same_job`]); another object under its name is an error.
pub async fn create(ctx: &Context, namespace: &str, job: &Job) -> Result<(), Error> {
    let name = job.metadata.name.clone().unwrap_or_default();
    match Writer::new(ctx, namespace).create(job, crate::FIELD_MANAGER).await? {
        Created::Created => Ok(()),
        Created::AlreadyExists => {
            let existing = Api::<Job>::namespaced(ctx.client.clone(), namespace)
                .get_opt(&name)
                .await
                .map_err(kube_err(format!("reading Job {name}, which already exists")))?;
            match existing {
                Some(existing) if lifecycle::is_same_job(&existing, job) => Ok(()),
                // Gone again since: the next reconcile creates it.
                None => Ok(()),
                Some(_) => Err(Error::NotOurs { name }),
            }
        }
    }
}

/// The Job `name` of `executor`, as observed: missing, running or how it finished.
pub async fn observe(ctx: &Context, namespace: &str, name: &str, executor: Executor) -> Result<RunningJob, Error> {
    let Some(job) = Api::<Job>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(kube_err(format!("reading Job {name}")))?
    else {
        return Ok(RunningJob::Missing);
    };
    let container = executor.as_str();
    if lifecycle::job_outcome(&job, &[], container).is_none() {
        return Ok(RunningJob::Active);
    }
    let pods = owned_pods(ctx, namespace, &job).await?;
    Ok(match lifecycle::job_outcome(&job, &pods, container) {
        Some(outcome) => RunningJob::Finished(Box::new(outcome)),
        None => RunningJob::Active,
    })
}

/// The pods `job` controls (see [`lifecycle::owned_by`]).
pub async fn owned_pods(ctx: &Context, namespace: &str, job: &Job) -> Result<Vec<Pod>, Error> {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={name}")))
        .await
        .map_err(kube_err(format!("listing the pods of Job {name}")))?;
    Ok(pods.items.into_iter().filter(|p| lifecycle::owned_by(p, job)).collect())
}
