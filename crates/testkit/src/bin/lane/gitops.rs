//! `lane gitops`: the GitOps rehearsal's part that reads objects. Argo CD's Application syncs the
//! cluster from the lane's Git server; the first sync must end `Synced` and `Healthy` (Argo CD's
//! health check reads our `Available` condition) with the cluster `Available`; a second sync of the
//! same revision must change nothing the operator owns: every child keeps its resourceVersion (no
//! write stored), no Job appears, and the cluster object itself is not written.
//!
//! A sync is started the way `argocd app sync` starts one: an `operation` set on the Application,
//! which the application controller runs and clears, recording the result in
//! `status.operationState`.

use crate::watch::{Lane, Progress, follow};
use crate::{Clock, Record, say};
use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt as _};
use openbao_api::conditions;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

/// The Application's namespace (deploy/lane/argocd.yaml).
const ARGOCD_NAMESPACE: &str = "argocd";
/// The branch the lane's Git server holds (deploy/lane/gitops/git-server.yaml).
const REVISION: &str = "main";

pub async fn run(lane: &Lane, application: &str, limit: Duration, record: &mut Record) -> Result<()> {
    let apps = applications(lane);
    compared(&apps, application, limit).await?;
    let clock = Clock::start();
    say(format!(
        "sync 1 of Application {ARGOCD_NAMESPACE}/{application} (creates {})",
        lane.cluster
    ));
    sync(&apps, application, limit).await?;
    crate::ready::wait(lane, &[conditions::AVAILABLE.to_string()], limit).await?;
    let healthy = wait_synced_healthy(&apps, application, limit).await?;
    say(format!(
        "{}s: Synced at {healthy}, Healthy, and {} is Available",
        clock.seconds(),
        lane.cluster
    ));
    record.set("gitops_first_sync_seconds", clock.seconds());

    let before = Owned::read(lane).await?;
    say(format!(
        "sync 2 of the same revision; {} objects the operator owns, {} Jobs, before it",
        before.children.len(),
        before.jobs.len()
    ));
    sync(&apps, application, limit).await?;
    wait_synced_healthy(&apps, application, limit).await?;
    let after = Owned::read(lane).await?;
    let changed = before.changes(&after);
    record.set("gitops_resync_changes", changed.len());
    ensure!(
        changed.is_empty(),
        "the second sync of an unchanged revision changed what the operator owns: {}",
        changed.join("; ")
    );
    say(format!(
        "second sync: 0 of {} children written, no Job created, {} not written",
        before.children.len(),
        lane.cluster
    ));
    Ok(())
}

fn applications(lane: &Lane) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application");
    Api::namespaced_with(lane.client.clone(), ARGOCD_NAMESPACE, &ApiResource::from_gvk(&gvk))
}

fn text<'a>(object: &'a DynamicObject, pointer: &str) -> &'a str {
    object.data.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// Waits until Argo CD has compared the Application with its Git source: the lane's Git server
/// is new, and a comparison made before its Service answers fails (`ComparisonError`) and is
/// not repeated before the next refresh, so this asks for refreshes (the annotation the
/// controller removes once it has refreshed) until one succeeds.
async fn compared(apps: &Api<DynamicObject>, application: &str, limit: Duration) -> Result<()> {
    const REFRESH: &str = "argocd.argoproj.io/refresh";
    let deadline = tokio::time::Instant::now() + limit;
    let clock = Clock::start();
    let mut said = String::new();
    loop {
        let app = apps.get(application).await.context("the Application")?;
        let sync = text(&app, "/status/sync/status");
        let failed: Vec<&str> = app
            .data
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| c["type"] == "ComparisonError")
            .filter_map(|c| c["message"].as_str())
            .collect();
        if matches!(sync, "OutOfSync" | "Synced") && failed.is_empty() {
            say(format!(
                "{}s: Argo CD compared {application} with Git: {sync}",
                clock.seconds()
            ));
            return Ok(());
        }
        let now = format!("sync {sync:?}, {failed:?}");
        if now != said {
            say(format!("{}s: not compared yet: {now}", clock.seconds()));
            said = now;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "Argo CD did not compare {application} with Git in {}s: sync {sync:?}, {failed:?}",
                limit.as_secs()
            );
        }
        if !app.annotations().contains_key(REFRESH) {
            let refresh = json!({"metadata": {"annotations": {REFRESH: "hard"}}});
            apps.patch(application, &PatchParams::default(), &Patch::Merge(&refresh))
                .await
                .context("asking for a refresh")?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Starts a sync of [`REVISION`] and waits until the controller has run it; fails unless it
/// succeeded.
async fn sync(apps: &Api<DynamicObject>, application: &str, limit: Duration) -> Result<()> {
    let previous = apps.get(application).await.context("the Application")?;
    let started_before = text(&previous, "/status/operationState/startedAt").to_string();
    let operation = json!({"operation": {
        "initiatedBy": {"username": "openbao-lane"},
        "sync": {"revision": REVISION},
    }});
    apps.patch(application, &PatchParams::default(), &Patch::Merge(&operation))
        .await
        .context("setting the sync operation")?;
    follow(apps.clone(), application, limit, |app| {
        let Some(app) = app else {
            bail!("the Application {application} is gone")
        };
        let started = text(app, "/status/operationState/startedAt");
        let phase = text(app, "/status/operationState/phase");
        let message = text(app, "/status/operationState/message");
        if app.data.get("operation").is_some_and(|o| !o.is_null()) || started == started_before {
            return Ok(Progress::Waiting("the controller has not taken the sync yet".into()));
        }
        match phase {
            "Succeeded" => Ok(Progress::Done(())),
            "Failed" | "Error" => bail!("the sync ended {phase}: {message}"),
            _ => Ok(Progress::Waiting(format!("sync {phase}: {message}"))),
        }
    })
    .await
}

/// Waits for `Synced` and `Healthy`; returns the revision it is synced at.
async fn wait_synced_healthy(apps: &Api<DynamicObject>, application: &str, limit: Duration) -> Result<String> {
    follow(apps.clone(), application, limit, |app| {
        let Some(app) = app else {
            bail!("the Application {application} is gone")
        };
        let sync = text(app, "/status/sync/status");
        let health = text(app, "/status/health/status");
        Ok(if sync == "Synced" && health == "Healthy" {
            Progress::Done(text(app, "/status/sync/revision").chars().take(12).collect())
        } else {
            let message = text(app, "/status/health/message");
            Progress::Waiting(format!("sync {sync}, health {health} ({message})"))
        })
    })
    .await
}

/// The resourceVersion of everything the operator owns for the cluster and of the cluster
/// object, and the cluster's Jobs.
struct Owned {
    cluster: String,
    children: BTreeMap<String, String>,
    jobs: Vec<String>,
}

impl Owned {
    async fn read(lane: &Lane) -> Result<Self> {
        let cluster = lane.cluster().await?;
        let uid = cluster.uid().context("the cluster has no uid")?;
        let mut children = BTreeMap::new();
        owned_by::<Secret>(lane, &uid, &mut children).await?;
        owned_by::<ConfigMap>(lane, &uid, &mut children).await?;
        owned_by::<Service>(lane, &uid, &mut children).await?;
        owned_by::<ServiceAccount>(lane, &uid, &mut children).await?;
        owned_by::<Role>(lane, &uid, &mut children).await?;
        owned_by::<RoleBinding>(lane, &uid, &mut children).await?;
        owned_by::<StatefulSet>(lane, &uid, &mut children).await?;
        owned_by::<PodDisruptionBudget>(lane, &uid, &mut children).await?;
        owned_by::<NetworkPolicy>(lane, &uid, &mut children).await?;
        ensure!(!children.is_empty(), "no object owned by {} found", lane.cluster);
        // The cluster's Jobs (backup, upgrade, restore) are owned by it too; the lane cluster's
        // scheduled backups in the same namespace are not this cluster's.
        let mut jobs = BTreeMap::new();
        owned_by::<Job>(lane, &uid, &mut jobs).await?;
        Ok(Self {
            cluster: cluster.resource_version().unwrap_or_default(),
            children,
            jobs: jobs.into_keys().collect(),
        })
    }

    /// What differs from `later`, one entry per object.
    fn changes(&self, later: &Self) -> Vec<String> {
        let mut changed = Vec::new();
        if self.cluster != later.cluster {
            changed.push(format!(
                "the cluster object: resourceVersion {} -> {}",
                self.cluster, later.cluster
            ));
        }
        for (name, version) in &self.children {
            match later.children.get(name) {
                Some(v) if v == version => {}
                Some(v) => changed.push(format!("{name}: resourceVersion {version} -> {v}")),
                None => changed.push(format!("{name}: gone")),
            }
        }
        for name in later.children.keys().filter(|n| !self.children.contains_key(*n)) {
            changed.push(format!("{name}: new"));
        }
        for job in later.jobs.iter().filter(|j| !self.jobs.contains(j)) {
            changed.push(format!("{job}: new"));
        }
        changed
    }
}

async fn owned_by<K>(lane: &Lane, uid: &str, into: &mut BTreeMap<String, String>) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    for object in lane.api::<K>().list(&ListParams::default()).await?.items {
        if object.owner_references().iter().any(|o| o.uid == uid) {
            into.insert(
                format!("{kind} {}", object.name_any()),
                object.resource_version().unwrap_or_default(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(cluster: &str, children: &[(&str, &str)], jobs: &[&str]) -> Owned {
        Owned {
            cluster: cluster.into(),
            children: children.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            jobs: jobs.iter().map(|j| j.to_string()).collect(),
        }
    }

    #[test]
    fn names_every_write_new_object_and_job() {
        let before = owned(
            "10",
            &[("Secret a", "1"), ("Service b", "2"), ("ConfigMap c", "3")],
            &["Job old"],
        );
        assert!(before.changes(&before).is_empty());
        let after = owned(
            "11",
            &[("Secret a", "1"), ("Service b", "5"), ("Role d", "7")],
            &["Job old", "Job new"],
        );
        assert_eq!(
            before.changes(&after),
            [
                "the cluster object: resourceVersion 10 -> 11",
                "ConfigMap c: gone",
                "Service b: resourceVersion 2 -> 5",
                "Role d: new",
                "Job new: new",
            ]
        );
    }
}
