//! The self-initialization requests: what OpenBao runs once, on the first pod, on first start.
//!
//! Order matters. User `sys/mounts/*` requests run first and writes last: a KV v2 mount is not
//! writable for a moment after it is enabled, and writing into it in the same step fails
//! intermittently. Between them sit the operator's policies, the JWT auth bootstrap and the
//! optional demo login.

use openbao_api::{InitOperation, OpenBaoClusterSpec};
use serde_json::{Value, json};

use crate::config::autopilot_config;
use crate::hcl::Body;
use crate::paths::DEMO_PASSWORD_ENV;
use crate::{Cluster, JwtTrust, OperatorIdentity};

/// Auth mount for service-account logins (the Go operator's path, so its roles keep working).
pub const JWT_MOUNT: &str = "jwt-operator";
pub const USERPASS_MOUNT: &str = "userpass";

/// A role that a Kubernetes service account logs in as, with its policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtRole {
    pub role: &'static str,
    pub policy: &'static str,
    pub namespace: String,
    pub service_account: String,
}

impl JwtRole {
    pub fn subject(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.service_account)
    }
}

pub const OPERATOR_POLICY: &str = r#"path "sys/storage/raft/configuration" { capabilities = ["read"] }
path "sys/storage/raft/autopilot/*" { capabilities = ["read", "update"] }
path "sys/storage/raft/remove-peer" { capabilities = ["update"] }
path "sys/storage/raft/promote" { capabilities = ["update"] }
path "sys/storage/raft/demote" { capabilities = ["update"] }
path "sys/step-down" { capabilities = ["update", "sudo"] }
path "auth/jwt-operator/config" { capabilities = ["read", "update"] }
"#;

pub const BACKUP_POLICY: &str = r#"path "sys/storage/raft/snapshot" { capabilities = ["read"] }
"#;

pub const RESTORE_POLICY: &str = r#"path "sys/storage/raft/snapshot" { capabilities = ["update"] }
path "sys/storage/raft/snapshot-force" { capabilities = ["update"] }
"#;

pub const UPGRADE_POLICY: &str = r#"path "sys/storage/raft/configuration" { capabilities = ["read"] }
path "sys/storage/raft/autopilot/state" { capabilities = ["read"] }
path "sys/storage/raft/snapshot" { capabilities = ["read"] }
path "sys/storage/raft/promote" { capabilities = ["update"] }
path "sys/storage/raft/demote" { capabilities = ["update"] }
path "sys/storage/raft/remove-peer" { capabilities = ["update"] }
path "sys/step-down" { capabilities = ["update", "sudo"] }
"#;

/// The operator's seal-migration token (role [`SEAL_MIGRATION_ROLE`]): make and verify the
/// recovery key, step down, read the raft view, snapshot. Proven enough by the operator's
/// `tests/seal_migration_processes.rs`. A role of its own: the operator's everyday token never
/// holds `sys/rotate/recovery`.
pub const SEAL_MIGRATION_POLICY: &str = r#"path "sys/rotate/recovery/init" { capabilities = ["read", "update", "delete", "sudo"] }
path "sys/rotate/recovery/verify" { capabilities = ["read", "update", "delete", "sudo"] }
path "sys/step-down" { capabilities = ["update", "sudo"] }
path "sys/storage/raft/configuration" { capabilities = ["read"] }
path "sys/storage/raft/autopilot/state" { capabilities = ["read"] }
path "sys/storage/raft/snapshot" { capabilities = ["read"] }
"#;

/// The JWT role (and policy name) the operator logs in as for seal-migration steps.
pub const SEAL_MIGRATION_ROLE: &str = "openbao-operator-seal-migration";

/// Everything except root-only operations (tokens cannot be root through a login anyway).
pub const ADMIN_POLICY: &str = r#"path "*" { capabilities = ["create", "read", "update", "patch", "delete", "list", "sudo"] }
"#;

/// The JWT roles of a cluster: the operator, one per executor Job, and the optional admin.
pub fn jwt_roles(cluster: &Cluster, operator: &OperatorIdentity) -> Vec<JwtRole> {
    let job = |role, policy, job: &str| JwtRole {
        role,
        policy,
        namespace: cluster.namespace.to_string(),
        service_account: openbao_api::names::job_service_account(cluster.name, job),
    };
    let mut roles = vec![
        JwtRole {
            role: "openbao-operator",
            policy: "openbao-operator",
            namespace: operator.namespace.clone(),
            service_account: operator.service_account.clone(),
        },
        JwtRole {
            role: SEAL_MIGRATION_ROLE,
            policy: SEAL_MIGRATION_ROLE,
            namespace: operator.namespace.clone(),
            service_account: operator.service_account.clone(),
        },
        job("openbao-operator-backup", "openbao-operator-backup", "backup"),
        job("openbao-operator-upgrade", "openbao-operator-upgrade", "upgrade"),
        job("openbao-operator-restore", "openbao-operator-restore", "restore"),
    ];
    if let Some(admin) = &cluster.spec.self_init.oidc.admin_service_account {
        roles.push(JwtRole {
            role: "admin",
            policy: "admin",
            namespace: admin.namespace.clone().unwrap_or_else(|| cluster.namespace.to_string()),
            service_account: admin.name.clone(),
        });
    }
    roles
}

fn policies(spec: &OpenBaoClusterSpec) -> Vec<(&'static str, &'static str)> {
    let mut list = vec![
        ("openbao-operator", OPERATOR_POLICY),
        (SEAL_MIGRATION_ROLE, SEAL_MIGRATION_POLICY),
        ("openbao-operator-backup", BACKUP_POLICY),
        ("openbao-operator-upgrade", UPGRADE_POLICY),
        ("openbao-operator-restore", RESTORE_POLICY),
    ];
    if spec.self_init.oidc.admin_service_account.is_some() || demo_enabled(spec) {
        list.push(("admin", ADMIN_POLICY));
    }
    list
}

pub fn demo_enabled(spec: &OpenBaoClusterSpec) -> bool {
    spec.self_init.demo_userpass.as_ref().is_some_and(|d| d.enabled)
}

struct Request {
    name: String,
    operation: &'static str,
    path: String,
    data: Option<Value>,
    allow_failure: bool,
}

fn update(name: &str, path: impl Into<String>, data: Value) -> Request {
    Request {
        name: name.to_string(),
        operation: "update",
        path: path.into(),
        data: Some(data),
        allow_failure: false,
    }
}

fn operation(op: InitOperation) -> &'static str {
    match op {
        InitOperation::Create => "create",
        InitOperation::Read => "read",
        InitOperation::Update => "update",
        InitOperation::Delete => "delete",
        InitOperation::List => "list",
        InitOperation::Patch => "patch",
    }
}

fn user_request(r: &openbao_api::InitRequest) -> Request {
    Request {
        name: r.name.clone(),
        operation: operation(r.operation),
        path: r.path.clone(),
        data: r.data.clone(),
        allow_failure: r.allow_failure,
    }
}

/// The ordered `initialize` blocks for `cluster`.
fn blocks(cluster: &Cluster, operator: &OperatorIdentity, jwt: &JwtTrust) -> Vec<(String, Vec<Request>)> {
    let spec = cluster.spec;
    let (mounts, rest): (Vec<_>, Vec<_>) = spec
        .self_init
        .requests
        .iter()
        .partition(|r| r.path.starts_with("sys/mounts/"));
    let mut blocks = Vec::new();
    if !mounts.is_empty() {
        blocks.push((
            "user-mounts".to_string(),
            mounts.into_iter().map(user_request).collect(),
        ));
    }
    let policy_requests = policies(spec)
        .into_iter()
        .map(|(name, body)| update(name, format!("sys/policies/acl/{name}"), json!({"policy": body})));
    blocks.push(("operator-policies".to_string(), policy_requests.collect()));

    let mut auth = Vec::new();
    if spec.self_init.oidc.enabled {
        auth.push(update(
            "enable-jwt",
            format!("sys/auth/{JWT_MOUNT}"),
            json!({"type": "jwt", "description": "Kubernetes service-account logins (managed by openbao-operator)"}),
        ));
        auth.push(update(
            "jwt-config",
            format!("auth/{JWT_MOUNT}/config"),
            json!({"bound_issuer": jwt.issuer, "jwt_validation_pubkeys": jwt.public_keys_pem}),
        ));
        // Every role accepts only this cluster's audience: a token sent to another cluster (or
        // captured by it) does not log in here, whatever role names the two share.
        let audience = openbao_api::names::jwt_audience(cluster.namespace, cluster.name);
        for role in jwt_roles(cluster, operator) {
            auth.push(update(
                &format!("role-{}", role.role),
                format!("auth/{JWT_MOUNT}/role/{}", role.role),
                json!({
                    "role_type": "jwt",
                    "user_claim": "sub",
                    "bound_subject": role.subject(),
                    "bound_audiences": [audience],
                    "token_policies": [role.policy],
                    "token_ttl": "1h",
                    "token_max_ttl": "4h",
                }),
            ));
        }
    }
    if let Some(demo) = spec.self_init.demo_userpass.as_ref().filter(|d| d.enabled) {
        auth.push(update(
            "enable-userpass",
            format!("sys/auth/{USERPASS_MOUNT}"),
            json!({"type": "userpass", "description": "Demo login for local development only"}),
        ));
        auth.push(update(
            "demo-user",
            format!("auth/{USERPASS_MOUNT}/users/{}", demo.username),
            json!({
                "password": {"eval_type": "string", "eval_source": "env", "env_var": DEMO_PASSWORD_ENV, "require_present": true},
                "token_policies": ["admin"],
                "token_ttl": "1h",
            }),
        ));
    }
    if !auth.is_empty() {
        blocks.push(("operator-auth".to_string(), auth));
    }
    blocks.push((
        "operator-autopilot".to_string(),
        vec![update(
            "autopilot",
            "sys/storage/raft/autopilot/configuration",
            autopilot_config(cluster),
        )],
    ));
    for r in rest {
        blocks.push((format!("user-{}", r.name), vec![user_request(r)]));
    }
    blocks
}

/// `zz-init.hcl`: the self-initialization file for the first pod of a new cluster.
pub fn init_hcl(cluster: &Cluster, operator: &OperatorIdentity, jwt: &JwtTrust) -> String {
    let mut b = Body::new();
    for (block, requests) in blocks(cluster, operator, jwt) {
        b.block("initialize", &[&block], |ib| {
            for r in requests {
                ib.block("request", &[&r.name], |rb| {
                    rb.attr("operation", r.operation).attr("path", r.path.as_str());
                    if let Some(data) = r.data {
                        rb.attr("data", data);
                    }
                    if r.allow_failure {
                        rb.attr("allow_failure", true);
                    }
                });
            }
        });
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> OpenBaoClusterSpec {
        serde_json::from_value(json!({
            "version": "2.7.2",
            "profile": "Development",
            "storage": {"size": "1Gi"},
            "selfInit": {
                "oidc": {"adminServiceAccount": {"name": "bao-admin"}},
                "demoUserpass": {"passwordSecretRef": {"name": "pw"}},
            },
        }))
        .unwrap()
    }

    fn operator() -> OperatorIdentity {
        OperatorIdentity {
            namespace: "openbao-operator-system".into(),
            service_account: "openbao-operator".into(),
        }
    }

    /// The role requests of `cluster`, as (role name, request data).
    fn role_requests(cluster: &Cluster) -> Vec<(String, Value)> {
        let trust = JwtTrust {
            issuer: "https://kubernetes.default.svc".into(),
            public_keys_pem: vec![],
        };
        blocks(cluster, &operator(), &trust)
            .into_iter()
            .flat_map(|(_, requests)| requests)
            .filter_map(|r| {
                let role = r.path.strip_prefix(&format!("auth/{JWT_MOUNT}/role/"))?.to_string();
                Some((role, r.data?))
            })
            .collect()
    }

    #[test]
    fn every_role_accepts_only_its_own_clusters_audience() {
        let spec = spec();
        let at = |namespace, name| Cluster {
            name,
            namespace,
            uid: "u",
            spec: &spec,
        };
        let a = role_requests(&at("team-a", "bao"));
        let b = role_requests(&at("team-b", "bao"));
        let names: Vec<&str> = a.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "openbao-operator",
                "openbao-operator-seal-migration",
                "openbao-operator-backup",
                "openbao-operator-upgrade",
                "openbao-operator-restore",
                "admin"
            ]
        );
        for (role, data) in &a {
            assert_eq!(
                data["bound_audiences"],
                json!(["openbao-operator.openbao.org/team-a/bao"]),
                "{role}"
            );
        }
        // Same role names in another namespace: only the audience tells them apart.
        for ((role, da), (_, db)) in a.iter().zip(&b) {
            assert_ne!(da["bound_audiences"], db["bound_audiences"], "{role}");
        }
    }

    /// Whether an ACL path pattern (`*` suffix glob, `+` one segment; the policies here use no
    /// `+` before a `*`) covers `path`.
    fn covers(pattern: &str, path: &str) -> bool {
        if let Some(prefix) = pattern.strip_suffix('*') {
            return path.starts_with(prefix);
        }
        let (p, q): (Vec<_>, Vec<_>) = (pattern.split('/').collect(), path.split('/').collect());
        p.len() == q.len() && p.iter().zip(&q).all(|(a, b)| a == b || *a == "+")
    }

    /// Who may change which service-account keys OpenBao trusts (and so who could forge every
    /// login): the operator's own role, and the admin's policy `admin` (everything but root),
    /// both bound to this cluster's audience. No executor Job's policy reaches the JWT config.
    #[test]
    fn only_the_operator_and_admin_policies_reach_the_jwt_config() {
        let config = format!("auth/{JWT_MOUNT}/config");
        assert!(covers("auth/+/config", &config) && covers("auth/*", &config) && covers("*", &config));
        assert!(!covers("sys/*", &config) && !covers("auth/jwt-operator/role/+", &config));
        let mut reaching = Vec::new();
        for (name, body) in policies(&spec()) {
            let paths = body
                .lines()
                .filter_map(|l| l.strip_prefix("path \"")?.split('"').next());
            if paths.into_iter().any(|p| covers(p, &config)) {
                reaching.push(name);
            }
        }
        assert_eq!(reaching, ["openbao-operator", "admin"]);
        // Each of those policies is attached to exactly one role.
        let spec = spec();
        let cluster = Cluster {
            name: "bao",
            namespace: "team-a",
            uid: "u",
            spec: &spec,
        };
        let roles = jwt_roles(&cluster, &operator());
        for policy in reaching {
            let holders: Vec<_> = roles
                .iter()
                .filter(|r| r.policy == policy)
                .map(|r| r.subject())
                .collect();
            assert_eq!(holders.len(), 1, "{policy}: {holders:?}");
        }
    }
}
