//! The executor Jobs: `openbao-operator backup`, `openbao-operator restore` and the restore
//! drill `openbao-operator verify-backup`, run from the operator's own image in the cluster's
//! namespace.
//!
//! A Job never retries (`backoffLimit: 0`): a restore must not be replayed, and a failed backup
//! is reported and waits for the next window rather than loading OpenBao again at once. The pod
//! logs in to OpenBao with a projected token of its own service account (trusted by exactly one
//! JWT role), reads the store's credentials from a Secret only it mounts, and writes its one
//! JSON result line to the termination log, where the controller reads it.
//!
//! The drill's pod also runs a throw-away single-node OpenBao as a native sidecar (an init
//! container with `restartPolicy: Always`, stopped by the kubelet once the executor is done):
//! the cluster's version and static seal key, raft in an emptyDir, plain HTTP on 127.0.0.1 only.
//! It never talks to the cluster's servers and needs neither their CA nor a Service.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use openbao_api::{BackupSpec, BackupTarget, OpenBaoRestoreSpec, names};
use serde_json::{Value, json};
use std::collections::BTreeMap;

use super::typed;
use crate::config::STATIC_SEAL_KEY_ID;
use crate::hcl::Body;
use crate::paths::{DATA_DIR, UNSEAL_DIR};
use crate::{API_PORT, CLUSTER_PORT, Cluster, labels, selfinit};

/// Where the projected service-account token is mounted (the executors' default).
pub const TOKEN_PATH: &str = "/var/run/secrets/openbao/token";
/// Where the store's credentials Secret is mounted (the executors' default `S3_CREDENTIALS_DIR`).
pub const CREDENTIALS_DIR: &str = "/etc/openbao/backup/credentials";
/// Where the cluster's CA certificate is mounted.
pub const CA_DIR: &str = "/etc/openbao/ca";
/// The executors write their result line here too; the kubelet keeps it as the termination message.
pub const RESULT_FILE: &str = "/dev/termination-log";
/// Finished Jobs (and their pods with the result) stay this long, so the result is read even
/// after an operator restart, then the Job controller removes them.
pub const TTL_SECONDS_AFTER_FINISHED: i32 = 3600;
/// A Job still running after this is stopped, so a hung executor cannot hold the lock forever.
pub const ACTIVE_DEADLINE_SECONDS: i64 = 6 * 3600;

/// Label with the executor operation (`backup`, `restore`) on Jobs and their pods.
pub const OPERATION_LABEL: &str = "openbao.org/operation";
/// Label with the cluster's name on executor Jobs and their pods. Not `openbao.org/cluster`:
/// that one marks OpenBao's own pods.
pub const EXECUTOR_CLUSTER_LABEL: &str = "openbao.org/executor-for";
/// `app.kubernetes.io/name` of executor Jobs and pods.
pub const EXECUTOR_NAME: &str = "openbao-executor";
/// Where the drill's executor reaches its throw-away OpenBao.
pub const DRILL_OPENBAO_ADDR: &str = "http://127.0.0.1:8200";
/// Where the drill's OpenBao sidecar writes its configuration (an emptyDir).
const DRILL_CONFIG_DIR: &str = "/bao/drill";

/// The executor a Job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    Backup,
    Restore,
    /// The restore drill.
    Verify,
}

impl Executor {
    /// The subcommand, and the name of the container that runs it.
    pub fn as_str(self) -> &'static str {
        match self {
            Executor::Backup => "backup",
            Executor::Restore => "restore",
            Executor::Verify => "verify-backup",
        }
    }

    /// The `<cluster>-<job>-serviceaccount` the Job runs as. The drill logs in to the restored
    /// data as the backup Job would, so it is the backup service account (and JWT role).
    fn service_account_job(self) -> &'static str {
        match self {
            Executor::Backup | Executor::Verify => "backup",
            Executor::Restore => "restore",
        }
    }
}

/// Labels of every executor Job of `cluster` for `executor`: a label selector for listing them.
pub fn executor_labels(cluster: &str, executor: Executor) -> BTreeMap<String, String> {
    let mut labels = executor_pods(cluster);
    labels.extend([
        (
            "app.kubernetes.io/managed-by".to_string(),
            labels::MANAGED_BY.to_string(),
        ),
        (labels::COMPONENT_LABEL.to_string(), executor.as_str().to_string()),
        (OPERATION_LABEL.to_string(), executor.as_str().to_string()),
    ]);
    labels
}

/// The labels every executor Job pod of `cluster` carries, whatever its operation: what the
/// servers' NetworkPolicy admits the executors by.
pub fn executor_pods(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), EXECUTOR_NAME.to_string()),
        ("app.kubernetes.io/instance".to_string(), cluster.to_string()),
        (EXECUTOR_CLUSTER_LABEL.to_string(), cluster.to_string()),
    ])
}

/// `executor_labels` as a `key=value,...` selector string.
pub fn executor_selector(cluster: &str, executor: Executor) -> String {
    executor_labels(cluster, executor)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// How the executor reaches OpenBao: the public Service (any ready server; a standby names the
/// leader, which the executor then follows). It stays right across blue/green upgrades.
pub fn openbao_addresses(cluster: &Cluster) -> String {
    format!(
        "https://{}.{}.svc:{API_PORT}",
        names::public_service(cluster.name),
        cluster.namespace
    )
}

/// The backup Job `name` of `cluster`, owned by the cluster.
pub fn backup_job(cluster: &Cluster, backup: &BackupSpec, name: &str, image: &str) -> Job {
    let mut retention_env = Vec::new();
    if let Some(retention) = &backup.retention {
        if let Some(count) = retention.max_count {
            retention_env.push(env_value("BACKUP_RETENTION_MAX_COUNT", count.to_string()));
        }
        if let Some(age) = &retention.max_age {
            retention_env.push(env("BACKUP_RETENTION_MAX_AGE", age));
        }
    }
    backup_executor_job(cluster, backup, name, image, &backup.target.path_prefix, retention_env)
}

/// A Job of the backup executor storing under `path_prefix`, with `more_env`.
fn backup_executor_job(
    cluster: &Cluster,
    backup: &BackupSpec,
    name: &str,
    image: &str,
    path_prefix: &str,
    more_env: Vec<Value>,
) -> Job {
    let mut extra_env = vec![
        env("CLUSTER_NAMESPACE", cluster.namespace),
        env("CLUSTER_NAME", cluster.name),
        env("S3_PATH_PREFIX", path_prefix),
    ];
    extra_env.extend(more_env);
    executor_job(
        cluster,
        JobInputs {
            executor: Executor::Backup,
            name,
            image,
            owner: super::owner_reference(cluster),
            target: &backup.target,
            jwt_role: &backup.jwt_auth_role,
            extra_env,
            drill_openbao_image: None,
        },
    )
}

/// Where pre-upgrade snapshots go, below `spec.backup.target.pathPrefix`: outside the prefix
/// of scheduled backups, so their retention never deletes the way back of an upgrade.
pub const PRE_UPGRADE_PREFIX: &str = "pre-upgrade";
/// `openbao.org/operation` (and component) of pre-upgrade snapshot Jobs: the backup executor,
/// but not a scheduled backup, so the backup controller never counts it as one of its own.
pub const PRE_UPGRADE_OPERATION: &str = "pre-upgrade-snapshot";

/// The pre-upgrade snapshot Job `name` of `cluster`, owned by the cluster: the backup executor
/// storing under `<pathPrefix>/pre-upgrade/`, without retention.
pub fn pre_upgrade_snapshot_job(cluster: &Cluster, backup: &BackupSpec, name: &str, image: &str) -> Job {
    let prefix = [backup.target.path_prefix.trim_matches('/'), PRE_UPGRADE_PREFIX]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    let mut job = backup_executor_job(cluster, backup, name, image, &prefix, Vec::new());
    let template_labels = job
        .spec
        .as_mut()
        .and_then(|s| s.template.metadata.as_mut())
        .and_then(|m| m.labels.as_mut());
    for labels in [job.metadata.labels.as_mut(), template_labels].into_iter().flatten() {
        for key in [OPERATION_LABEL, labels::COMPONENT_LABEL] {
            labels.insert(key.to_string(), PRE_UPGRADE_OPERATION.to_string());
        }
    }
    job
}

/// The restore drill Job `name` of `cluster`, owned by the cluster: restores `key` (the newest
/// backup of the cluster when `None`) into a throw-away OpenBao running `openbao_version`.
pub fn verify_job(
    cluster: &Cluster,
    backup: &BackupSpec,
    name: &str,
    image: &str,
    openbao_version: &str,
    key: Option<&str>,
) -> Job {
    let mut extra = vec![
        env("CLUSTER_NAMESPACE", cluster.namespace),
        env("CLUSTER_NAME", cluster.name),
        env("S3_PATH_PREFIX", &backup.target.path_prefix),
    ];
    if let Some(key) = key {
        extra.push(env("VERIFY_KEY", key));
    }
    executor_job(
        cluster,
        JobInputs {
            executor: Executor::Verify,
            name,
            image,
            owner: super::owner_reference(cluster),
            target: &backup.target,
            jwt_role: &backup.jwt_auth_role,
            extra_env: extra,
            drill_openbao_image: Some(super::workload::image_for(cluster, openbao_version)),
        },
    )
}

/// The drill server's configuration: one raft node on loopback, no TLS (nothing leaves the
/// pod), sealed by the cluster's static key so the backup's keyring opens.
pub fn drill_server_hcl() -> String {
    let mut b = Body::new();
    b.attr("ui", false)
        .attr("api_addr", DRILL_OPENBAO_ADDR)
        .attr("cluster_addr", format!("https://127.0.0.1:{CLUSTER_PORT}"))
        .attr("disable_mlock", true)
        .block("listener", &["tcp"], |l| {
            l.attr("address", format!("127.0.0.1:{API_PORT}"))
                .attr("cluster_address", format!("127.0.0.1:{CLUSTER_PORT}"))
                .attr("tls_disable", true);
        })
        .block("seal", &["static"], |s| {
            s.attr("current_key_id", STATIC_SEAL_KEY_ID)
                .attr("current_key", format!("file://{UNSEAL_DIR}/key"));
        })
        .block("storage", &["raft"], |r| {
            r.attr("path", DATA_DIR).attr("node_id", "restore-drill");
        });
    b.finish()
}

/// The restore Job `name` for an OpenBaoRestore, owned by it (`owner`).
pub fn restore_job(
    cluster: &Cluster,
    restore: &OpenBaoRestoreSpec,
    owner: OwnerReference,
    name: &str,
    image: &str,
) -> Job {
    executor_job(
        cluster,
        JobInputs {
            executor: Executor::Restore,
            name,
            image,
            owner,
            target: &restore.source.target,
            jwt_role: &restore.jwt_auth_role,
            extra_env: vec![env("RESTORE_KEY", &restore.source.key)],
            drill_openbao_image: None,
        },
    )
}

struct JobInputs<'a> {
    executor: Executor,
    name: &'a str,
    image: &'a str,
    owner: OwnerReference,
    target: &'a BackupTarget,
    jwt_role: &'a str,
    extra_env: Vec<Value>,
    /// Set for the drill: the image of its throw-away OpenBao sidecar.
    drill_openbao_image: Option<String>,
}

fn env(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

fn env_value(name: &str, value: String) -> Value {
    json!({"name": name, "value": value})
}

fn executor_job(cluster: &Cluster, inputs: JobInputs) -> Job {
    let op = inputs.executor.as_str();
    let target = inputs.target;
    let drill = inputs.drill_openbao_image.is_some();
    let mut environment = if drill {
        vec![env("OPENBAO_ADDRESSES", DRILL_OPENBAO_ADDR)]
    } else {
        vec![
            env("OPENBAO_ADDRESSES", &openbao_addresses(cluster)),
            env("OPENBAO_CA_FILE", &format!("{CA_DIR}/ca.crt")),
        ]
    };
    environment.extend([
        env("OPENBAO_JWT_MOUNT", selfinit::JWT_MOUNT),
        env("OPENBAO_JWT_ROLE", inputs.jwt_role),
        env("OPENBAO_JWT_TOKEN_FILE", TOKEN_PATH),
        env("S3_ENDPOINT", &target.endpoint),
        env("S3_BUCKET", &target.bucket),
        env("S3_REGION", &target.region),
        env(
            "S3_USE_PATH_STYLE",
            if target.use_path_style { "true" } else { "false" },
        ),
        env("S3_CREDENTIALS_DIR", CREDENTIALS_DIR),
        env("EXECUTOR_RESULT_FILE", RESULT_FILE),
    ]);
    environment.extend(inputs.extra_env);
    let (token_dir, token_file) = TOKEN_PATH.rsplit_once('/').expect("TOKEN_PATH has a directory");
    let pod_labels = executor_labels(cluster.name, inputs.executor);
    let mut job: Job = typed(json!({
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": TTL_SECONDS_AFTER_FINISHED,
            "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": names::job_service_account(cluster.name, inputs.executor.service_account_job()),
                    // Only the projected token with this cluster's OpenBao audience; no Kubernetes API token.
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [{
                        "name": op,
                        "image": inputs.image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": [op],
                        "env": environment,
                        "terminationMessagePath": RESULT_FILE,
                        // The result line when the executor wrote one, its last log lines when it
                        // could not (e.g. it crashed before reporting).
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "securityContext": restricted_container(),
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"memory": "256Mi"},
                        },
                        "volumeMounts": [
                            {"name": "openbao-token", "mountPath": token_dir, "readOnly": true},
                            {"name": "s3-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": true},
                            {"name": "openbao-ca", "mountPath": CA_DIR, "readOnly": true},
                        ],
                    }],
                    "volumes": [
                        {"name": "openbao-token", "projected": {"defaultMode": 0o440, "sources": [
                            {"serviceAccountToken": {
                                "audience": names::jwt_audience(cluster.namespace, cluster.name),
                                "expirationSeconds": 3600,
                                "path": token_file,
                            }},
                        ]}},
                        {"name": "s3-credentials", "secret": {
                            "secretName": target.credentials_secret_ref.name,
                            "defaultMode": 0o440,
                        }},
                        // Only the CA certificate: the CA Secret also holds the CA's private key.
                        {"name": "openbao-ca", "secret": {
                            "secretName": names::tls_ca_secret(cluster.name),
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            "defaultMode": 0o444,
                        }},
                    ],
                },
            },
        }
    }));
    if let Some(openbao_image) = &inputs.drill_openbao_image {
        add_drill_server(&mut job, cluster, openbao_image);
    }
    if let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        super::placement::job_pod(pod, cluster.spec);
    }
    job.metadata = ObjectMeta {
        name: Some(inputs.name.to_string()),
        namespace: Some(cluster.namespace.to_string()),
        labels: Some(executor_labels(cluster.name, inputs.executor)),
        owner_references: Some(vec![inputs.owner]),
        ..Default::default()
    };
    job
}

/// What every container of an executor Job runs with (Pod Security `restricted`, read-only root).
fn restricted_container() -> serde_json::Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]},
    })
}

/// Turns an executor Job into the drill's: the OpenBao sidecar, its volumes, and no mount of the
/// cluster's CA (the drill never talks to the cluster).
fn add_drill_server(job: &mut Job, cluster: &Cluster, openbao_image: &str) {
    let sidecar: k8s_openapi::api::core::v1::Container = typed(json!({
        "name": crate::SERVER_CONTAINER,
        "image": openbao_image,
        "imagePullPolicy": "IfNotPresent",
        // A native sidecar: started before the executor, stopped once it has finished.
        "restartPolicy": "Always",
        // The image's entrypoint expects the cluster's config layout; the drill has its own.
        "command": ["/bin/sh", "-c", format!(
            "printf '%s' \"$BAO_DRILL_CONFIG\" > {DRILL_CONFIG_DIR}/server.hcl && exec bao server -config={DRILL_CONFIG_DIR}/server.hcl"
        )],
        "env": [{"name": "BAO_DRILL_CONFIG", "value": drill_server_hcl()}],
        "securityContext": restricted_container(),
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "volumeMounts": [
            {"name": "drill-data", "mountPath": DATA_DIR},
            {"name": "drill-config", "mountPath": DRILL_CONFIG_DIR},
            // A restore first spools the snapshot to a temporary file.
            {"name": "drill-tmp", "mountPath": "/tmp"},
            {"name": "unseal", "mountPath": UNSEAL_DIR, "readOnly": true},
        ],
    }));
    let pod = job
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .expect("executor Jobs have a pod spec");
    pod.init_containers = Some(vec![sidecar]);
    for c in &mut pod.containers {
        if let Some(mounts) = c.volume_mounts.as_mut() {
            mounts.retain(|m| m.name != "openbao-ca");
        }
    }
    let volumes = pod.volumes.get_or_insert_with(Vec::new);
    volumes.retain(|v| v.name != "openbao-ca");
    volumes.extend([
        typed(json!({"name": "drill-data", "emptyDir": {}})),
        typed(json!({"name": "drill-config", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})),
        typed(json!({"name": "drill-tmp", "emptyDir": {}})),
        // The cluster's seal key, mounted as the cluster's pods mount it: only it opens the
        // backup's keyring.
        typed(json!({"name": "unseal", "secret": {
            "secretName": names::unseal_key_secret(cluster.name),
            "defaultMode": 0o440,
        }})),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures;

    fn backup_spec() -> openbao_api::OpenBaoClusterSpec {
        fixtures::spec(json!({"backup": {
            "schedule": "0 3 * * *",
            "target": {
                "endpoint": "http://rustfs.storage.svc:9000",
                "bucket": "openbao-backups",
                "pathPrefix": "prod",
                "credentialsSecretRef": {"name": "backup-credentials"},
            },
            "retention": {"maxCount": 7, "maxAge": "7d"},
        }}))
    }

    fn env_of(job: &Job) -> BTreeMap<String, String> {
        let c = &job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
        c.env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn backup_job_runs_once_as_the_backup_service_account() {
        let spec = backup_spec();
        let cluster = fixtures::cluster(&spec);
        let job = backup_job(&cluster, spec.backup.as_ref().unwrap(), "vault-backup-1", "op:1");
        let js = job.spec.as_ref().unwrap();
        assert_eq!(js.backoff_limit, Some(0));
        assert_eq!(js.ttl_seconds_after_finished, Some(TTL_SECONDS_AFTER_FINISHED));
        let pod = js.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.service_account_name.as_deref(), Some("vault-backup-serviceaccount"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("op:1"));
        assert_eq!(c.args, Some(vec!["backup".to_string()]));
        assert_eq!(c.termination_message_policy.as_deref(), Some("FallbackToLogsOnError"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("OpenBaoCluster", "uid-1"));
        // The role that trusts this service account is the one the Job logs in with.
        let roles = selfinit::jwt_roles(
            &cluster,
            &crate::OperatorIdentity {
                namespace: "ops".into(),
                service_account: "op".into(),
            },
        );
        let role = roles
            .iter()
            .find(|r| r.role == openbao_api::DEFAULT_BACKUP_JWT_ROLE)
            .unwrap();
        assert_eq!(role.service_account, pod.service_account_name.clone().unwrap());
        assert_eq!(role.namespace, "team-a");
        assert_eq!(env_of(&job)["OPENBAO_JWT_ROLE"], role.role);
    }

    #[test]
    fn pre_upgrade_snapshots_are_backups_outside_the_scheduled_prefix_and_retention() {
        let spec = backup_spec();
        let cluster = fixtures::cluster(&spec);
        let job = pre_upgrade_snapshot_job(&cluster, spec.backup.as_ref().unwrap(), "vault-pre-upgrade", "op:1");
        let env = env_of(&job);
        assert_eq!(env["S3_PATH_PREFIX"], "prod/pre-upgrade");
        assert!(!env.contains_key("BACKUP_RETENTION_MAX_COUNT") && !env.contains_key("BACKUP_RETENTION_MAX_AGE"));
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.containers[0].args, Some(vec!["backup".to_string()]));
        assert_eq!(pod.service_account_name.as_deref(), Some("vault-backup-serviceaccount"));
        // Neither the Job nor its pod looks like a scheduled backup.
        let scheduled = executor_labels("vault", Executor::Backup);
        let template_labels = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone();
        for labels in [job.metadata.labels.clone().unwrap(), template_labels.unwrap()] {
            assert_eq!(labels[OPERATION_LABEL], PRE_UPGRADE_OPERATION);
            assert!(scheduled.iter().any(|(k, v)| labels.get(k) != Some(v)));
        }
        let unprefixed = fixtures::spec(json!({"backup": {
            "schedule": "0 3 * * *",
            "target": {"endpoint": "https://s3.example.com", "bucket": "b", "credentialsSecretRef": {"name": "c"}},
        }}));
        let job = pre_upgrade_snapshot_job(
            &fixtures::cluster(&unprefixed),
            unprefixed.backup.as_ref().unwrap(),
            "j",
            "i",
        );
        assert_eq!(env_of(&job)["S3_PATH_PREFIX"], "pre-upgrade");
    }

    #[test]
    fn pods_are_not_selected_as_openbao_servers() {
        let spec = backup_spec();
        let cluster = fixtures::cluster(&spec);
        let job = backup_job(&cluster, spec.backup.as_ref().unwrap(), "j", "i");
        let pod_labels = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        assert!(!pod_labels.contains_key(labels::CLUSTER_LABEL));
        assert!(
            labels::selector("vault")
                .iter()
                .any(|(k, v)| pod_labels.get(k) != Some(v))
        );
    }

    #[test]
    fn env_matches_the_executor_settings() {
        let spec = backup_spec();
        let cluster = fixtures::cluster(&spec);
        let env = env_of(&backup_job(&cluster, spec.backup.as_ref().unwrap(), "j", "i"));
        for (k, v) in [
            ("OPENBAO_ADDRESSES", "https://vault-public.team-a.svc:8200"),
            ("OPENBAO_CA_FILE", "/etc/openbao/ca/ca.crt"),
            ("OPENBAO_JWT_MOUNT", "jwt-operator"),
            ("OPENBAO_JWT_ROLE", "openbao-operator-backup"),
            ("OPENBAO_JWT_TOKEN_FILE", "/var/run/secrets/openbao/token"),
            ("S3_ENDPOINT", "http://rustfs.storage.svc:9000"),
            ("S3_BUCKET", "openbao-backups"),
            ("S3_REGION", "us-east-1"),
            ("S3_USE_PATH_STYLE", "true"),
            ("S3_CREDENTIALS_DIR", "/etc/openbao/backup/credentials"),
            ("EXECUTOR_RESULT_FILE", "/dev/termination-log"),
            ("CLUSTER_NAMESPACE", "team-a"),
            ("CLUSTER_NAME", "vault"),
            ("S3_PATH_PREFIX", "prod"),
            ("BACKUP_RETENTION_MAX_COUNT", "7"),
            ("BACKUP_RETENTION_MAX_AGE", "7d"),
        ] {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(env.len(), 16, "{env:?}");
    }

    #[test]
    fn restore_job_is_owned_by_the_restore_and_names_the_key() {
        let spec = backup_spec();
        let cluster = fixtures::cluster(&spec);
        let restore: OpenBaoRestoreSpec = serde_json::from_value(json!({
            "cluster": "vault",
            "source": {"target": spec.backup.as_ref().unwrap().target, "key": "prod/team-a/vault/x.snap"},
        }))
        .unwrap();
        let owner = OwnerReference {
            api_version: "openbao.org/v1alpha1".into(),
            kind: "OpenBaoRestore".into(),
            name: "r1".into(),
            uid: "uid-r1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let job = restore_job(&cluster, &restore, owner, "vault-restore-r1", "op:1");
        let env = env_of(&job);
        assert_eq!(env["RESTORE_KEY"], "prod/team-a/vault/x.snap");
        assert_eq!(env["OPENBAO_JWT_ROLE"], "openbao-operator-restore");
        assert!(!env.contains_key("S3_PATH_PREFIX"));
        assert_eq!(job.spec.as_ref().unwrap().backoff_limit, Some(0));
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("vault-restore-serviceaccount")
        );
        assert_eq!(job.metadata.owner_references.unwrap()[0].kind, "OpenBaoRestore");
    }

    #[test]
    fn drill_job_runs_openbao_as_a_sidecar_with_the_cluster_seal_and_no_cluster_access() {
        let spec = backup_spec();
        let cluster = fixtures::cluster(&spec);
        let backup = spec.backup.as_ref().unwrap();
        let job = verify_job(&cluster, backup, "vault-verify-1", "op:1", "2.6.2", Some("prod/x.snap"));
        let env = env_of(&job);
        assert_eq!(env["OPENBAO_ADDRESSES"], DRILL_OPENBAO_ADDR);
        assert!(!env.contains_key("OPENBAO_CA_FILE"));
        assert_eq!(env["OPENBAO_JWT_ROLE"], "openbao-operator-backup");
        assert_eq!(env["VERIFY_KEY"], "prod/x.snap");
        let js = job.spec.as_ref().unwrap();
        assert_eq!(js.backoff_limit, Some(0));
        let pod = js.template.spec.as_ref().unwrap();
        // The backup role trusts exactly this service account.
        assert_eq!(pod.service_account_name.as_deref(), Some("vault-backup-serviceaccount"));
        assert_eq!(pod.containers[0].args, Some(vec!["verify-backup".to_string()]));
        assert_eq!(pod.containers[0].name, "verify-backup");
        let sidecar = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
        assert_eq!(sidecar.image.as_deref(), Some("openbao/openbao:2.6.2"));
        let volumes: Vec<_> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert!(!volumes.contains(&"openbao-ca"), "{volumes:?}");
        let unseal = pod.volumes.iter().flatten().find(|v| v.name == "unseal").unwrap();
        assert_eq!(
            unseal.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("vault-unseal-key")
        );
        // Newest backup when no key is given.
        let newest = verify_job(&cluster, backup, "j", "op:1", "2.7.2", None);
        assert!(!env_of(&newest).contains_key("VERIFY_KEY"));
        assert_eq!(env_of(&newest)["CLUSTER_NAME"], "vault");
    }

    #[test]
    fn drill_server_listens_on_loopback_only_with_the_static_seal() {
        let hcl = drill_server_hcl();
        assert!(hcl.contains("address = \"127.0.0.1:8200\""), "{hcl}");
        assert!(hcl.contains("tls_disable = true"), "{hcl}");
        assert!(!hcl.contains("0.0.0.0"), "{hcl}");
        assert!(
            hcl.contains(&format!("current_key_id = \"{STATIC_SEAL_KEY_ID}\"")),
            "{hcl}"
        );
        assert!(hcl.contains("current_key = \"file:///etc/bao/unseal/key\""), "{hcl}");
        assert!(hcl.contains("storage \"raft\""), "{hcl}");
    }

    /// The whole drill Job, reviewed as JSON. Regenerate with `UPDATE_GOLDEN=1`.
    #[test]
    fn verify_job_golden() {
        let spec = backup_spec();
        let cluster = fixtures::cluster(&spec);
        let job = verify_job(
            &cluster,
            spec.backup.as_ref().unwrap(),
            "vault-verify-20260101-030000",
            "ghcr.io/openbao-operator/openbao-operator:0.1.0",
            "2.7.2",
            Some("prod/team-a/vault/20260101T030000Z-0000000a.snap"),
        );
        let actual = serde_json::to_string_pretty(&job).unwrap() + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/verify-job.json");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            expected == actual,
            "verify-job.json differs; rerun with UPDATE_GOLDEN=1 and review:\n{actual}"
        );
    }

    /// The whole Job, reviewed as JSON. Regenerate with `UPDATE_GOLDEN=1`.
    #[test]
    fn backup_job_golden() {
        let spec = backup_spec();
        let cluster = fixtures::cluster(&spec);
        let job = backup_job(
            &cluster,
            spec.backup.as_ref().unwrap(),
            "vault-backup-s202601010300",
            "ghcr.io/openbao-operator/openbao-operator:0.1.0",
        );
        let actual = serde_json::to_string_pretty(&job).unwrap() + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/backup-job.json");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            expected == actual,
            "backup-job.json differs; rerun with UPDATE_GOLDEN=1 and review:\n{actual}"
        );
    }
}
