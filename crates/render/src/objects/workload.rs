//! The OpenBao servers: config ConfigMap, Services and StatefulSet.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use serde_json::json;
use std::collections::BTreeMap;

use super::{meta, typed};
use crate::config::{self, ENTRYPOINT_FILE, SERVER_FILE};
use crate::labels::{self, AUDIT_HASH_ANNOTATION, CONFIG_HASH_ANNOTATION};
use crate::paths::{self, DEMO_PASSWORD_ENV};
use crate::{API_PORT, CLUSTER_PORT, Cluster};
use openbao_api::{AUDIT_DIR, DeletionPolicy, Seal, names};

/// ConfigMap `<c>-config`: the server config template and the entrypoint.
pub fn config_map(cluster: &Cluster) -> ConfigMap {
    ConfigMap {
        metadata: meta(cluster, names::config_map(cluster.name), "config"),
        data: Some(config_data(cluster, config::server_hcl(cluster))),
        ..Default::default()
    }
}

/// The files of a set's config ConfigMap: its `10-server.hcl`, the files every set shares
/// (service registration, audit, telemetry) and the entrypoint.
pub(crate) fn config_data(cluster: &Cluster, server_hcl: String) -> BTreeMap<String, String> {
    let mut data = BTreeMap::from([
        (SERVER_FILE.to_string(), server_hcl),
        (ENTRYPOINT_FILE.to_string(), config::entrypoint_sh()),
    ]);
    for (name, content) in config::shared_files(cluster.spec) {
        data.insert(name.to_string(), content);
    }
    data
}

fn ports() -> serde_json::Value {
    json!([
        {"name": "api", "port": API_PORT, "targetPort": API_PORT},
        {"name": "cluster", "port": CLUSTER_PORT, "targetPort": CLUSTER_PORT},
    ])
}

/// Headless Service `<c>`: stable per-pod DNS names, published before pods are ready so
/// that joining nodes can reach the leader.
pub fn headless_service(cluster: &Cluster) -> Service {
    let mut svc: Service = typed(json!({
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": labels::selector(cluster.name),
            "ports": ports(),
        }
    }));
    svc.metadata = meta(cluster, names::headless_service(cluster.name), "server");
    svc
}

/// Service `<c>-public`: the API of every ready (unsealed) server; standbys forward to the leader.
/// Blue/green upgrades move it to another set of servers ([`super::public_service_to`]).
pub fn public_service(cluster: &Cluster) -> Service {
    super::bluegreen::public_service_to(cluster, None)
}

fn health_probe(query: &str, period: i32, failures: i32) -> serde_json::Value {
    json!({
        "httpGet": {"path": format!("/v1/sys/health?{query}"), "port": API_PORT, "scheme": "HTTPS"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 3,
    })
}

/// Which OpenBao version the StatefulSet's pod template runs and whether the StatefulSet
/// controller may replace pods by itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// The version in the pod template (image tag unless `spec.image` names the image).
    pub version: String,
    /// `OnDelete`: a pod gets the template only when it is deleted. A rolling upgrade needs
    /// this: it replaces pods one at a time, the leader last, in an order a `partition` cannot
    /// express (with the leader at ordinal 2, pod 1 goes before it).
    pub on_delete: bool,
}

impl Rollout {
    /// Whatever `spec.version` says, rolled out by the StatefulSet controller.
    pub fn of_spec(cluster: &Cluster) -> Self {
        Self {
            version: cluster.spec.version.clone(),
            on_delete: false,
        }
    }
}

/// The image that runs `version`: `spec.image` when set (the user names the image), else the
/// default repository tagged with the version.
pub fn image_for(cluster: &Cluster, version: &str) -> String {
    cluster
        .spec
        .image
        .clone()
        .unwrap_or_else(|| format!("{}:{version}", crate::DEFAULT_IMAGE_REPOSITORY))
}

/// The StatefulSet `<c>` running `spec.version`. All pods start in parallel: pod 0 founds the
/// cluster from its self-init file, the others join it over TLS.
pub fn statefulset(cluster: &Cluster) -> StatefulSet {
    statefulset_with(cluster, &Rollout::of_spec(cluster))
}

/// The StatefulSet `<c>` with the template version and update strategy of `rollout`.
pub fn statefulset_with(cluster: &Cluster, rollout: &Rollout) -> StatefulSet {
    let set = ServerSet {
        revision: None,
        server_hcl: config::server_hcl(cluster),
        self_init: true,
    };
    server_statefulset(cluster, rollout, &set)
}

/// What an auto-unseal seal needs in the pod instead of the static key's Secret: secrets
/// through the environment (so they are in no file) or as read-only files from their Secrets,
/// and for a KMS plugin image a place to download it to.
fn seal_inputs(
    cluster: &Cluster,
    env: &mut Vec<serde_json::Value>,
    mounts: &mut Vec<serde_json::Value>,
    volumes: &mut Vec<serde_json::Value>,
) {
    let seal = openbao_api::seal_of(cluster.spec.unseal.as_ref());
    if seal.key_in_cluster() {
        return;
    }
    // No seal key exists anywhere: nothing to mount.
    mounts.retain(|m| m["name"] != "unseal");
    volumes.retain(|v| v["name"] != "unseal");
    let secret_file = |r: &openbao_api::SealSecretKeyRef, path: &str| json!({"secret": {"name": r.name, "items": [{"key": r.key, "path": path, "mode": 0o440}]}});
    match seal {
        Seal::Static | Seal::MissingBlock(_) => {}
        Seal::Transit(transit) => {
            if let Some(token) = &transit.token_secret_ref {
                env.push(json!({"name": paths::TRANSIT_TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}}}));
            }
            if let Some(login) = &transit.login {
                transit_login_inputs(cluster, transit, login, env, mounts, volumes);
            }
            if let Some(ca) = &transit.ca_secret_ref {
                mounts.push(json!({"name": "transit-ca", "mountPath": paths::TRANSIT_CA_DIR, "readOnly": true}));
                volumes.push(
                    json!({"name": "transit-ca", "secret": {"secretName": ca.name, "defaultMode": 0o440,
                    "items": [{"key": ca.key, "path": paths::TRANSIT_CA_FILE}]}}),
                );
            }
        }
        Seal::Kmip(kmip) => {
            let mut sources = vec![
                secret_file(&kmip.client_cert_secret_ref, paths::KMIP_CLIENT_CERT_FILE),
                secret_file(&kmip.client_key_secret_ref, paths::KMIP_CLIENT_KEY_FILE),
            ];
            if let Some(ca) = &kmip.ca_secret_ref {
                sources.push(secret_file(ca, paths::KMIP_CA_FILE));
            }
            mounts.push(json!({"name": "kmip", "mountPath": paths::KMIP_DIR, "readOnly": true}));
            volumes.push(json!({"name": "kmip", "projected": {"sources": sources}}));
        }
        Seal::Kms(kms) => {
            for e in &kms.credentials_env {
                env.push(json!({"name": e.name, "valueFrom": {"secretKeyRef": {
                    "name": e.secret_key_ref.name, "key": e.secret_key_ref.key}}}));
            }
            if !kms.credentials_files.is_empty() {
                let sources: Vec<_> = kms
                    .credentials_files
                    .iter()
                    .map(|f| secret_file(&f.secret_key_ref, &f.name))
                    .collect();
                mounts.push(
                    json!({"name": "seal-credentials", "mountPath": paths::SEAL_CREDENTIALS_DIR, "readOnly": true}),
                );
                volumes.push(json!({"name": "seal-credentials", "projected": {"sources": sources}}));
            }
            if kms.plugin.image.is_some() {
                // OpenBao downloads the plugin image here when it starts.
                mounts.push(json!({"name": "plugins", "mountPath": paths::PLUGIN_DIR}));
                volumes.push(json!({"name": "plugins", "emptyDir": {"sizeLimit": "512Mi"}}));
            }
        }
    }
}

/// What the entrypoint needs to log in to the transit server (`spec.unseal.transit.login`): the
/// login's settings as variables (the script reads them as quoted parameters, never as code)
/// and the pod's service-account token for the transit audience.
fn transit_login_inputs(
    cluster: &Cluster,
    transit: &openbao_api::TransitSeal,
    login: &openbao_api::TransitLogin,
    env: &mut Vec<serde_json::Value>,
    mounts: &mut Vec<serde_json::Value>,
    volumes: &mut Vec<serde_json::Value>,
) {
    let mut var = |name: &str, value: &str| env.push(json!({"name": name, "value": value}));
    var(paths::TRANSIT_LOGIN_PATH_ENV, &openbao_api::transit_login_path(login));
    var(paths::TRANSIT_LOGIN_ROLE_ENV, &login.role);
    var(paths::TRANSIT_LOGIN_ADDR_ENV, &transit.address);
    if transit.ca_secret_ref.is_some() {
        var(
            paths::TRANSIT_LOGIN_CACERT_ENV,
            &format!("{}/{}", paths::TRANSIT_CA_DIR, paths::TRANSIT_CA_FILE),
        );
    }
    if let Some(namespace) = &transit.namespace {
        var(paths::TRANSIT_LOGIN_NAMESPACE_ENV, namespace);
    }
    if let Some(name) = &transit.tls_server_name {
        var(paths::TRANSIT_LOGIN_SERVER_NAME_ENV, name);
    }
    mounts.push(json!({"name": TRANSIT_LOGIN_VOLUME, "mountPath": paths::TRANSIT_LOGIN_DIR, "readOnly": true}));
    volumes.push(
        json!({"name": TRANSIT_LOGIN_VOLUME, "projected": {"defaultMode": 0o440, "sources": [{"serviceAccountToken": {
            "audience": names::transit_login_audience(cluster.namespace, cluster.name),
            // The shortest the kubelet issues: the token is read once, when the server starts.
            "expirationSeconds": 600,
            "path": paths::TRANSIT_LOGIN_JWT_FILE,
        }}]}}),
    );
}

/// The volume holding the service-account token of the transit login.
pub const TRANSIT_LOGIN_VOLUME: &str = "transit-login";

/// What tells one set of servers apart from another in its StatefulSet.
pub(crate) struct ServerSet<'a> {
    /// `None`: the cluster's original servers (StatefulSet `<c>`, ConfigMap `<c>-config`).
    pub revision: Option<&'a str>,
    /// The set's server config in its steady state; pods restart when it changes.
    pub server_hcl: String,
    /// Mount the self-init requests (only the original set may found the cluster).
    pub self_init: bool,
}

pub(crate) fn server_statefulset(cluster: &Cluster, rollout: &Rollout, set: &ServerSet) -> StatefulSet {
    let spec = cluster.spec;
    // Every file of the set's ConfigMap, in key order (for a cluster without audit or telemetry
    // exactly the server config, service registration and entrypoint, as before they existed).
    let files = config_data(cluster, set.server_hcl.clone());
    let hash = config::config_hash(&files.values().map(String::as_str).collect::<Vec<_>>());
    let mut pod_annotations = BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), hash)]);
    if let Some(audit) = config::audit_hash(spec) {
        pod_annotations.insert(AUDIT_HASH_ANNOTATION.to_string(), audit);
    }
    let mut env = vec![
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "BAO_K8S_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "BAO_K8S_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
    ];
    if let Some(demo) = spec.self_init.demo_userpass.as_ref().filter(|d| d.enabled) {
        env.push(json!({"name": DEMO_PASSWORD_ENV, "valueFrom": {"secretKeyRef": {
            "name": demo.password_secret_ref.name, "key": demo.password_secret_ref.key, "optional": true}}}));
    }
    let mut pod_security = json!({
        "runAsNonRoot": true,
        "runAsUser": 100,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    if spec.workload_hardening.app_armor_enabled {
        pod_security["appArmorProfile"] = json!({"type": "RuntimeDefault"});
    }
    let resources = spec
        .resources
        .as_ref()
        .map(|r| serde_json::to_value(r).expect("resources serialize"));
    let mut pvc_spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage.size}},
    });
    if let Some(class) = &spec.storage.storage_class_name {
        pvc_spec["storageClassName"] = json!(class);
    }
    // Volumes go with the StatefulSet only when the deletion policy says so (no finalizer needed).
    let pvc_when_deleted = match spec.deletion_policy {
        DeletionPolicy::Retain => "Retain",
        DeletionPolicy::DeletePVCs | DeletionPolicy::DeleteAll => "Delete",
    };
    let pod_labels = super::server_set::server_set_pod_labels(cluster.name, set.revision);
    // The original StatefulSet's selector predates revisions and cannot change.
    let sts_selector = match set.revision {
        None => labels::selector(cluster.name),
        Some(_) => super::server_set::server_set_selector(cluster.name, set.revision),
    };
    let mut mounts = vec![
        json!({"name": "config", "mountPath": paths::CONFIG_TEMPLATE_DIR, "readOnly": true}),
        json!({"name": "init", "mountPath": paths::INIT_DIR, "readOnly": true}),
        json!({"name": "tls", "mountPath": paths::TLS_DIR, "readOnly": true}),
        json!({"name": "unseal", "mountPath": paths::UNSEAL_DIR, "readOnly": true}),
        json!({"name": "rendered", "mountPath": paths::RENDERED_DIR}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
        json!({"name": "data", "mountPath": paths::DATA_DIR}),
    ];
    let mut volumes = vec![
        json!({"name": "config", "configMap": {"name": names::server_set_config_map(cluster.name, set.revision), "defaultMode": 0o444}}),
        // Present only until the cluster is initialized; optional so pods start without it.
        json!({"name": "init", "secret": {"secretName": names::init_secret(cluster.name), "optional": true, "defaultMode": 0o440}}),
        json!({"name": "tls", "secret": {"secretName": names::tls_server_secret(cluster.name), "defaultMode": 0o440}}),
        json!({"name": "unseal", "secret": {"secretName": names::unseal_key_secret(cluster.name), "defaultMode": 0o440}}),
        json!({"name": "rendered", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}),
        // OpenBao stages an incoming snapshot (a restore) in /tmp: it may be as large as the data.
        json!({"name": "tmp", "emptyDir": {"sizeLimit": cluster.spec.storage.size}}),
    ];
    // File audit devices write to the audit volume: a claim of its own per server when
    // `spec.auditFileStorage` is set (always mounted then: claim templates cannot change),
    // else an emptyDir that lives as long as the pod.
    let audit_claim = spec.audit_file_storage.as_ref();
    let audit_to_volume = spec
        .audit
        .iter()
        .any(|d| d.file_options.as_ref().is_some_and(|f| f.writes_to_volume()));
    if audit_claim.is_some() || audit_to_volume {
        mounts.push(json!({"name": "audit", "mountPath": AUDIT_DIR}));
    }
    if audit_claim.is_none() && audit_to_volume {
        volumes.push(json!({"name": "audit", "emptyDir": {}}));
    }
    if !set.self_init {
        // A joining set never sees the founding requests, whatever the entrypoint would do.
        mounts.retain(|m| m["name"] != "init");
        volumes.retain(|v| v["name"] != "init");
    }
    seal_inputs(cluster, &mut env, &mut mounts, &mut volumes);
    let mut claim_labels = labels::selector(cluster.name);
    if let Some(rev) = set.revision {
        claim_labels.insert(super::server_set::REVISION_LABEL.to_string(), rev.to_string());
    }
    let mut claim_templates = vec![json!({
        "metadata": {"name": "data", "labels": claim_labels},
        "spec": pvc_spec,
    })];
    if let Some(storage) = audit_claim {
        let mut audit_spec = json!({
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": storage.size}},
        });
        if let Some(class) = &storage.storage_class_name {
            audit_spec["storageClassName"] = json!(class);
        }
        claim_templates.push(json!({
            "metadata": {"name": "audit", "labels": claim_labels},
            "spec": audit_spec,
        }));
    }
    let mut sts: StatefulSet = typed(json!({
        "spec": {
            "serviceName": names::headless_service(cluster.name),
            "replicas": spec.replicas,
            "podManagementPolicy": "Parallel",
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": pvc_when_deleted, "whenScaled": "Retain"},
            "updateStrategy": {"type": if rollout.on_delete { "OnDelete" } else { "RollingUpdate" }},
            "selector": {"matchLabels": sts_selector},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": {
                    "serviceAccountName": names::service_account(cluster.name),
                    "securityContext": pod_security,
                    "terminationGracePeriodSeconds": 30,
                    "containers": [{
                        "name": crate::SERVER_CONTAINER,
                        "image": image_for(cluster, &rollout.version),
                        "command": ["/bin/sh", paths::ENTRYPOINT],
                        "env": env,
                        "ports": [
                            {"name": "api", "containerPort": API_PORT},
                            {"name": "cluster", "containerPort": CLUSTER_PORT},
                        ],
                        // Self-initialization keeps the listener closed, so start-up is judged by TCP.
                        // Every 1 s (a TCP connect, nothing for OpenBao to answer): the readiness
                        // probe only starts once this one passed. Still 5 minutes in all.
                        "startupProbe": {"tcpSocket": {"port": API_PORT}, "periodSeconds": 1, "failureThreshold": 300},
                        // Ready = unsealed and serving (active or standby). Every 2 s: a server
                        // that unseals waits at most that long to receive traffic (and the cluster
                        // to be Available); 5 failures in a row still take 10 s to mark it unready.
                        "readinessProbe": health_probe("standbyok=true", 2, 5),
                        // Alive while sealed or uninitialized: a restart would not fix those.
                        "livenessProbe": health_probe("standbyok=true&sealedcode=204&uninitcode=204", 10, 6),
                        // Deleting a pod removes it from the Services and signals it at the same time;
                        // serving on for a few seconds lets every proxy stop sending it new requests
                        // before OpenBao starts shutting down and answering them with errors.
                        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 5"]}}},
                        "resources": resources,
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": mounts,
                        // A server that exits at start (its seal unreachable, a bad config) leaves
                        // the end of its log where the operator reads it for the status.
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                    }],
                    "volumes": volumes,
                },
            },
            "volumeClaimTemplates": claim_templates,
        }
    }));
    let set_selector = super::server_set::server_set_selector(cluster.name, set.revision);
    if let Some(s) = sts.spec.as_mut() {
        super::placement::server_pod(&mut s.template, spec, &set_selector);
    }
    sts.metadata = meta(cluster, names::server_set(cluster.name, set.revision), "server");
    sts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures;
    use openbao_api::OpenBaoClusterSpec;

    #[test]
    fn statefulset_runs_the_entrypoint_with_every_volume() {
        let spec = fixtures::spec(json!({"replicas": 3, "workloadHardening": {"appArmorEnabled": false}}));
        let sts = statefulset(&fixtures::cluster(&spec));
        let s = sts.spec.unwrap();
        assert_eq!(s.replicas, Some(3));
        assert_eq!(s.pod_management_policy.as_deref(), Some("Parallel"));
        let pod = s.template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("openbao/openbao:2.7.2"));
        assert_eq!(c.command.as_ref().unwrap()[1], "/etc/bao/config/entrypoint.sh");
        assert_eq!(pod.volumes.unwrap().len(), 6);
        assert!(pod.security_context.unwrap().app_armor_profile.is_none());
        let owner = &sts.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("OpenBaoCluster", "uid-1"));
    }

    #[test]
    fn a_rollout_sets_the_template_version_and_stops_the_statefulset_controller() {
        let spec = fixtures::spec(json!({}));
        let cluster = fixtures::cluster(&spec);
        let rollout = Rollout {
            version: "2.6.2".into(),
            on_delete: true,
        };
        let s = statefulset_with(&cluster, &rollout).spec.unwrap();
        let image = s.template.spec.unwrap().containers[0].image.clone();
        assert_eq!(image.as_deref(), Some("openbao/openbao:2.6.2"));
        assert_eq!(s.update_strategy.unwrap().type_.as_deref(), Some("OnDelete"));
        let plain = statefulset(&cluster).spec.unwrap();
        assert_eq!(plain.update_strategy.unwrap().type_.as_deref(), Some("RollingUpdate"));
        let own = fixtures::spec(json!({"image": "mirror.example/bao:pinned"}));
        assert_eq!(
            image_for(&fixtures::cluster(&own), "2.6.2"),
            "mirror.example/bao:pinned"
        );
    }

    /// The restart-trigger annotation of the StatefulSet rendered for `spec`.
    fn config_hash_of(spec: &openbao_api::OpenBaoClusterSpec) -> String {
        statefulset(&fixtures::cluster(spec))
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    }

    #[test]
    fn config_hash_changes_with_the_server_config_only() {
        let a = fixtures::spec(json!({}));
        let b = fixtures::spec(json!({"replicas": 5}));
        let c = fixtures::spec(json!({"tls": {"extraSANs": ["bao.example"]}}));
        let hash = config_hash_of;
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a), hash(&c), "certificate changes reload without a restart");
    }

    fn pod_annotations(s: &OpenBaoClusterSpec) -> BTreeMap<String, String> {
        statefulset(&fixtures::cluster(s))
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()
    }

    #[test]
    fn audit_and_telemetry_restart_the_servers_and_mark_the_audit_revision() {
        let plain = fixtures::spec(json!({}));
        let audited = fixtures::spec(json!({"audit": [
            {"type": "file", "name": "file", "fileOptions": {"filePath": "/openbao/audit/audit.log"}}]}));
        let other = fixtures::spec(json!({"audit": [
            {"type": "file", "name": "file", "fileOptions": {"filePath": "stdout"}}]}));
        let telemetry = fixtures::spec(json!({"telemetry": {}}));
        let [p, a, o, t] = [&plain, &audited, &other, &telemetry].map(pod_annotations);
        let config = |x: &BTreeMap<String, String>| x[CONFIG_HASH_ANNOTATION].clone();
        assert_ne!(config(&p), config(&a));
        assert_ne!(config(&a), config(&o));
        assert_ne!(config(&p), config(&t));
        assert!(!p.contains_key(AUDIT_HASH_ANNOTATION) && !t.contains_key(AUDIT_HASH_ANNOTATION));
        assert_ne!(a[AUDIT_HASH_ANNOTATION], o[AUDIT_HASH_ANNOTATION]);
        // The hash of a cluster without audit or telemetry is the one older operators wrote:
        // upgrading the operator restarts no server.
        let c = fixtures::cluster(&plain);
        let legacy = config::config_hash(&[
            &config::server_hcl(&c),
            &config::service_registration_hcl(),
            &config::entrypoint_sh(),
        ]);
        assert_eq!(config(&p), legacy);
    }

    #[test]
    fn file_audit_devices_get_a_volume() {
        let volumes = |s: &OpenBaoClusterSpec| {
            let sts = statefulset(&fixtures::cluster(s)).spec.unwrap();
            let pod = sts.template.spec.unwrap();
            let mounted = pod.containers[0]
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.name == "audit" && m.mount_path == AUDIT_DIR);
            let empty_dir = pod
                .volumes
                .unwrap()
                .iter()
                .any(|v| v.name == "audit" && v.empty_dir.is_some());
            let claims: Vec<String> = sts
                .volume_claim_templates
                .unwrap()
                .iter()
                .map(|c| c.metadata.name.clone().unwrap())
                .collect();
            (mounted, empty_dir, claims)
        };
        let stdout = fixtures::spec(json!({"audit": [
            {"type": "file", "name": "out", "fileOptions": {"filePath": "stdout"}}]}));
        assert_eq!(volumes(&stdout), (false, false, vec!["data".to_string()]));
        let file = fixtures::spec(json!({"audit": [
            {"type": "file", "name": "file", "fileOptions": {"filePath": "/openbao/audit/audit.log"}}]}));
        assert_eq!(volumes(&file), (true, true, vec!["data".to_string()]));
        let claimed = fixtures::spec(json!({"auditFileStorage": {"size": "2Gi", "storageClassName": "fast"},
            "audit": [{"type": "file", "name": "file", "fileOptions": {"filePath": "/openbao/audit/audit.log"}}]}));
        assert_eq!(
            volumes(&claimed),
            (true, false, vec!["data".to_string(), "audit".to_string()])
        );
        // The claim template stays when the devices go: claim templates cannot change.
        let no_devices = fixtures::spec(json!({"auditFileStorage": {"size": "2Gi"}}));
        assert_eq!(volumes(&no_devices).2, vec!["data".to_string(), "audit".to_string()]);
        let sts = statefulset(&fixtures::cluster(&claimed)).spec.unwrap();
        let audit = &sts.volume_claim_templates.unwrap()[1];
        let spec = audit.spec.as_ref().unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "2Gi"
        );
    }

    #[test]
    fn demo_password_comes_from_the_referenced_secret() {
        let spec = fixtures::spec(json!({"selfInit": {"demoUserpass": {"passwordSecretRef": {"name": "demo-pw"}}}}));
        let sts = statefulset(&fixtures::cluster(&spec));
        let env = sts.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let demo = env.iter().find(|e| e.name == DEMO_PASSWORD_ENV).expect("demo env");
        let r = demo.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("demo-pw", "password"));
    }

    #[test]
    fn transit_mounts_no_seal_key_and_takes_the_token_from_its_secret() {
        let spec = fixtures::spec(json!({"unseal": {"type": "transit", "transit": {
            "address": "https://transit.vault.svc:8200", "keyName": "unseal",
            "tokenSecretRef": {"name": "transit-token", "key": "token"},
            "caSecretRef": {"name": "transit-ca", "key": "bundle.pem"},
        }}}));
        let sts = statefulset(&fixtures::cluster(&spec));
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let volumes = pod.volumes.unwrap();
        assert!(volumes.iter().all(|v| v.name != "unseal"), "no seal key volume");
        let ca = volumes
            .iter()
            .find(|v| v.name == "transit-ca")
            .expect("transit CA volume");
        let ca = ca.secret.as_ref().unwrap();
        assert_eq!(ca.secret_name.as_deref(), Some("transit-ca"));
        let items = ca.items.as_ref().unwrap();
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            ("bundle.pem", "ca.crt")
        );
        let c = &pod.containers[0];
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert!(mounts.iter().all(|m| m.name != "unseal"));
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "transit-ca" && m.mount_path == paths::TRANSIT_CA_DIR)
        );
        let env = c.env.as_ref().unwrap();
        let token = env
            .iter()
            .find(|e| e.name == paths::TRANSIT_TOKEN_ENV)
            .expect("token env");
        assert!(token.value.is_none(), "the token is never a literal");
        let r = token.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str(), r.optional),
            ("transit-token", "token", None)
        );

        // The static seal keeps its key volume and has no token.
        let plain = statefulset(&fixtures::cluster(&fixtures::spec(json!({}))))
            .spec
            .unwrap();
        let pod = plain.template.spec.unwrap();
        assert!(pod.volumes.unwrap().iter().any(|v| v.name == "unseal"));
        let env = pod.containers[0].env.clone().unwrap();
        assert!(env.iter().all(|e| e.name != paths::TRANSIT_TOKEN_ENV));
    }

    #[test]
    fn a_transit_login_projects_the_transit_audience_and_stores_no_token() {
        let spec = fixtures::spec(json!({"unseal": {"type": "transit", "transit": {
            "address": "https://transit.vault.svc:8200", "keyName": "unseal", "namespace": "team-a/",
            "tlsServerName": "transit.vault.svc",
            "caSecretRef": {"name": "transit-ca", "key": "bundle.pem"},
            "login": {"mountPath": "clusters/jwt", "role": "team-a-sealer"},
        }}}));
        let pod = statefulset(&fixtures::cluster(&spec))
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let c = &pod.containers[0];
        let env: BTreeMap<_, _> = c
            .env
            .iter()
            .flatten()
            .filter(|e| e.name.starts_with(paths::TRANSIT_ENV_PREFIX))
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap()))
            .collect();
        let ca = format!("{}/{}", paths::TRANSIT_CA_DIR, paths::TRANSIT_CA_FILE);
        assert_eq!(
            env,
            BTreeMap::from([
                (paths::TRANSIT_LOGIN_PATH_ENV, "auth/clusters/jwt/login"),
                (paths::TRANSIT_LOGIN_ROLE_ENV, "team-a-sealer"),
                (paths::TRANSIT_LOGIN_ADDR_ENV, "https://transit.vault.svc:8200"),
                (paths::TRANSIT_LOGIN_CACERT_ENV, ca.as_str()),
                (paths::TRANSIT_LOGIN_NAMESPACE_ENV, "team-a/"),
                (paths::TRANSIT_LOGIN_SERVER_NAME_ENV, "transit.vault.svc"),
            ]),
            "no token variable, only the login's settings"
        );
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == TRANSIT_LOGIN_VOLUME)
            .unwrap();
        let source = volume.projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
            .service_account_token
            .clone()
            .unwrap();
        assert_eq!(
            source.audience.as_deref(),
            Some("openbao-operator.openbao.org/transit/team-a/vault")
        );
        assert_eq!((source.path.as_str(), source.expiration_seconds), ("token", Some(600)));
        assert!(c.volume_mounts.iter().flatten().any(|m| m.name == TRANSIT_LOGIN_VOLUME
            && m.mount_path == paths::TRANSIT_LOGIN_DIR
            && m.read_only == Some(true)));
        // Only the login's own audience: the pod's API token is not what is sent.
        assert_eq!(pod.service_account_name.as_deref(), Some("vault-serviceaccount"));
    }

    #[test]
    fn the_config_hash_covers_the_seal() {
        let hash = config_hash_of;
        let transit = |address: &str| {
            fixtures::spec(json!({"unseal": {"type": "transit", "transit": {
                "address": address, "keyName": "unseal", "tokenSecretRef": {"name": "t", "key": "token"},
            }}}))
        };
        let a = transit("https://a.example:8200");
        assert_ne!(hash(&fixtures::spec(json!({}))), hash(&a));
        assert_ne!(hash(&a), hash(&transit("https://b.example:8200")));
    }
}
