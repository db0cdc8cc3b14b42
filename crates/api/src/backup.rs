//! Backups: `spec.backup` (schedule, object-store target, retention, requests) and
//! `status.backup` (what the last runs did), plus the operation lock in `status.operationLock`
//! that keeps backups, restores and upgrades of one cluster apart.
//!
//! The backup itself runs as a Job in the cluster's namespace (the executor talks to OpenBao and
//! the store); the controller only schedules, creates the Job and records its result. Endpoint
//! rules are enforced twice: by the apiserver (CEL, below) and again by the controller through
//! [`endpoint_problem`], which also covers shapes CEL cannot express.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The JWT role of the backup Job (created by self-init; trusts `<cluster>-backup-serviceaccount`).
pub const DEFAULT_BACKUP_JWT_ROLE: &str = "openbao-operator-backup";
/// The JWT role of the restore Job (created by self-init; trusts `<cluster>-restore-serviceaccount`).
pub const DEFAULT_RESTORE_JWT_ROLE: &str = "openbao-operator-restore";
/// Annotation that asks for one backup now; each distinct value runs exactly once.
pub const TRIGGER_BACKUP_ANNOTATION: &str = "openbao.org/trigger-backup";

/// Scheduled and on-demand raft snapshots to an S3-compatible object store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When to back up: a 5-field cron expression in UTC (minute hour day-of-month month
    /// day-of-week), e.g. `0 3 * * *`. Windows missed while the operator was down collapse into
    /// one backup.
    #[x_kube(validation = Rule::new(r"self.matches('^\\s*[0-9A-Za-z*?,/#-]+(\\s+[0-9A-Za-z*?,/#-]+){4}\\s*$')").message("spec.backup.schedule: must be a 5-field cron expression (minute hour day-of-month month day-of-week), e.g. '0 3 * * *'"))]
    #[schemars(length(min = 9, max = 128))]
    pub schedule: String,

    /// Where the snapshots go.
    pub target: BackupTarget,

    /// Which old backups the backup Job deletes after a verified new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<BackupRetention>,

    /// OpenBao JWT role the backup Job logs in with. The default role is created at
    /// initialization and trusts only the `<cluster>-backup-serviceaccount` service account.
    #[serde(default = "default_backup_role")]
    #[schemars(length(min = 1, max = 128))]
    pub jwt_auth_role: String,

    /// One-shot requests. Each is a token: a new value asks once, and
    /// `status.backup.acknowledgedRequest` shows the last one acted upon, so applying the same
    /// manifest again never runs another backup.
    #[serde(default)]
    pub requests: BackupRequests,

    /// Restore drills: prove that backups restore by restoring them into a throw-away
    /// single-node OpenBao (in a Job of its own; the cluster is never touched). Off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<BackupVerify>,
}

/// The restore drill. A drill restores a backup into a single-node OpenBao that runs inside
/// the drill's Job (the cluster's version and seal key, storage in an emptyDir), waits until it
/// unseals with the restored data, and logs in through the restored JWT auth with the backup
/// service account's token (role `spec.backup.jwtAuthRole`). The result is in
/// `status.backup.verification` and the `BackupVerified` condition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupVerify {
    /// Run drills.
    #[serde(default)]
    pub enabled: bool,
    /// When to drill the newest successful backup (`status.backup.lastBackupName`): a 5-field
    /// cron expression in UTC, like `spec.backup.schedule`. When unset, every successful backup
    /// is drilled right after it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(r"self.matches('^\\s*[0-9A-Za-z*?,/#-]+(\\s+[0-9A-Za-z*?,/#-]+){4}\\s*$')").message("spec.backup.verify.schedule: must be a 5-field cron expression (minute hour day-of-month month day-of-week), e.g. '0 4 * * 0'"))]
    #[schemars(length(min = 9, max = 128))]
    pub schedule: Option<String>,
}

fn default_backup_role() -> String {
    DEFAULT_BACKUP_JWT_ROLE.to_string()
}

/// An S3-compatible bucket (RustFS, MinIO, AWS S3, ...).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!self.credentialsSecretRef.name.endsWith('-unseal-key') && !self.credentialsSecretRef.name.endsWith('-root-token') && !self.credentialsSecretRef.name.endsWith('-tls-ca') && !self.credentialsSecretRef.name.endsWith('-tls-server')").message("credentialsSecretRef.name: must not name one of the operator's own Secrets (-unseal-key, -root-token, -tls-ca, -tls-server); create a dedicated Secret with accessKeyId and secretAccessKey").field_path(".credentialsSecretRef.name"),
)]
pub struct BackupTarget {
    /// URL of the S3 API, e.g. `https://s3.example.com` or `http://rustfs.storage.svc:9000`.
    /// Plain `http://` is only allowed for in-cluster Services (`*.svc`, `*.svc.cluster.local`).
    /// Loopback, link-local (169.254.0.0/16, fe80::/10), unspecified (0.0.0.0, ::) and
    /// integer-, octal- or hex-encoded hosts are refused: the Job must not be pointed at the
    /// node or a cloud metadata service.
    #[schemars(length(min = 1, max = 512))]
    // Regular expressions on the URL text rather than CEL's url()/ip() libraries: the
    // apiserver's cost estimate for those exceeds the CRD budget many times over.
    #[x_kube(
        validation = Rule::new(r"self.matches('^https?://(\\[[0-9A-Fa-f:.]+\\]|[^/?#@:\\[\\]\\s]+)(:[0-9]{1,5})?([/?#].*)?$')").message("endpoint: must be an http(s) URL with a host and no credentials, such as https://s3.example.com or http://rustfs.storage.svc:9000"),
        validation = Rule::new(r"!self.startsWith('http://') || self.matches('^http://[A-Za-z0-9.-]+\\.svc(\\.cluster\\.local)?(:[0-9]{1,5})?([/?#].*)?$')").message("endpoint: plain http:// is only allowed for in-cluster Services (*.svc or *.svc.cluster.local); use https://"),
        validation = Rule::new(r"!self.matches('(?i)^https?://(localhost|[^/?#:]*\\.localhost|127\\.[0-9.]+|\\[[0:]*:0*1\\])\\.?([:/?#].*)?$')").message("endpoint: loopback hosts (localhost, 127.0.0.0/8, ::1) are not allowed"),
        validation = Rule::new(r"!self.matches('(?i)^https?://(169\\.254\\.[0-9.]+|\\[fe[89ab][0-9a-f]?:[^\\]]*\\])([:/?#].*)?$')").message("endpoint: link-local hosts (169.254.0.0/16, fe80::/10, e.g. cloud metadata services) are not allowed"),
        validation = Rule::new(r"!self.matches('^https?://(0\\.0\\.0\\.0|\\[[0:]*\\])([:/?#].*)?$')").message("endpoint: the unspecified address (0.0.0.0, ::) is not allowed"),
        validation = Rule::new(r"!self.matches('^https?://\\[[^\\]]*\\.[^\\]]*\\]')").message("endpoint: IPv4-mapped IPv6 hosts are not allowed; write the IPv4 address"),
        validation = Rule::new(r"!self.matches('^https?://(0[xX][0-9a-fA-F]*|[0-9]+)(\\.(0[xX][0-9a-fA-F]*|[0-9]+))*\\.?([:/?#].*)?$') || self.matches('^https?://((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])([:/?#].*)?$')").message("endpoint: integer-, octal- or hex-encoded hosts (e.g. 2130706433, 0x7f000001, 0177.0.0.1) are not allowed; write a DNS name or a dotted IP address"),
    )]
    pub endpoint: String,

    /// Bucket name.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: String,

    /// Region of the bucket (RustFS and MinIO accept any).
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,

    /// Prefix of the object keys; backups are stored as
    /// `<pathPrefix>/<namespace>/<cluster>/<UTC time>-<id>.snap`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.contains('..')").message("spec.backup.target.pathPrefix: must not start with / or contain .."))]
    pub path_prefix: String,

    /// Address buckets as `<endpoint>/<bucket>` (RustFS, MinIO) instead of `<bucket>.<endpoint>`.
    #[serde(default = "default_true")]
    pub use_path_style: bool,

    /// Secret in the cluster's namespace with keys `accessKeyId`, `secretAccessKey` and
    /// optionally `caCert` (PEM CA of the store's TLS certificate). Only the Job mounts it; the
    /// operator checks the keys exist but never reads them.
    pub credentials_secret_ref: LocalSecretRef,
}

fn default_region() -> String {
    "us-east-1".to_string()
}

fn default_true() -> bool {
    true
}

/// A Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalSecretRef {
    /// Name of the Secret.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"), length(min = 1, max = 253))]
    pub name: String,
}

/// Retention, applied by the backup Job after the new backup was verified. The newest backup
/// is always kept.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRetention {
    /// Keep at most this many backups of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_count: Option<i32>,
    /// Delete backups older than this, as a duration such as `36h`, `7d` or `1d12h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(d|h|m|s))+$')").message("spec.backup.retention.maxAge: must be a duration such as 36h, 7d or 1d12h"))]
    pub max_age: Option<String>,
}

/// One-shot backup requests (tokens).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRequests {
    /// Run one backup now. A new value asks once; the same value never runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$')").message("spec.backup.requests.backup: must be a token of 1-63 letters, digits, '.', '_' or '-'"))]
    pub backup: Option<String>,
}

/// What the backups of this cluster did, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// Object key of the last successful backup (what an OpenBaoRestore's `source.key` takes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_name: Option<String>,
    /// Bucket of the last successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_bucket: Option<String>,
    /// When the last successful backup finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<Time>,
    /// Size of the last successful backup in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_size: Option<i64>,
    /// How long the last successful backup took, e.g. `2.345s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_duration: Option<String>,
    /// SHA-256 of the last successful backup, as verified in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_sha256: Option<String>,
    /// Job of the last finished backup, successful or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job_name: Option<String>,
    /// When the next scheduled backup is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_backup: Option<Time>,
    /// Failed backups in a row; 0 after a success.
    #[serde(default)]
    pub consecutive_failures: i32,
    /// CamelCase reason of the last failure (from the backup Job), e.g. `CredentialsRejected`,
    /// `BucketMissing`, `Unreachable`, `OpenBaoAuthFailed`, `JobFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_reason: Option<String>,
    /// What went wrong the last time, and what to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_message: Option<String>,
    /// When the last failure happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// The last `spec.backup.requests.backup` token acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_request: Option<String>,
    /// The last `openbao.org/trigger-backup` annotation value acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_trigger: Option<String>,
    /// The backup Job that is running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_job: Option<String>,
    /// When the running Job was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<Time>,
    /// What the restore drills (`spec.backup.verify`) found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationStatus>,
}

/// The restore drills of this cluster, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationStatus {
    /// Object key of the backup the last finished drill restored (or tried to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_key: Option<String>,
    /// When the last drill finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verification_time: Option<Time>,
    /// `Succeeded` (the backup restored, unsealed and accepted the backup role's login) or
    /// `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// CamelCase reason of the last drill, e.g. `Restored`, `NotHealthyAfterRestore` (the
    /// backup did not unseal: another seal key), `OpenBaoAuthFailed`, `ObjectMissing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the last drill did, or what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The drill Job that is running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_job: Option<String>,
    /// The backup the running drill Job restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_key: Option<String>,
    /// When the running drill Job was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<Time>,
    /// When the next scheduled drill is due (only with `spec.backup.verify.schedule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_verification: Option<Time>,
}

/// Condition written by the backup controller when restore drills are enabled: whether the
/// last drill restored its backup.
pub const BACKUP_VERIFIED: &str = "BackupVerified";

/// Operations that must not overlap on one cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Operation {
    Backup,
    Restore,
    Upgrade,
}

/// Held by the one backup, restore or upgrade that may run on the cluster now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationLock {
    /// `Backup`, `Restore` or `Upgrade`.
    pub operation: Operation,
    /// Who holds it, e.g. `openbaocluster/backup` or `openbaorestore/<name>`.
    pub holder: String,
    /// Since when.
    pub since: Time,
}

/// Holder name of the backup controller's lock.
pub const BACKUP_LOCK_HOLDER: &str = "openbaocluster/backup";

/// Holder name of a restore's lock.
pub fn restore_lock_holder(restore: &str) -> String {
    format!("openbaorestore/{restore}")
}

/// Why `endpoint` must not be used, or `None` when it is acceptable. The same rules as the
/// CRD's CEL, plus what CEL cannot parse the way an HTTP client would (userinfo, trailing dots,
/// bracketed IPv4-mapped addresses). Pure: no DNS lookups.
pub fn endpoint_problem(endpoint: &str) -> Option<String> {
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => return Some("must be an http(s) URL such as https://s3.example.com".into()),
    };
    if scheme != "http" && scheme != "https" {
        return Some(format!(
            "scheme {scheme:?} is not allowed; use https:// (or http:// for *.svc)"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Some("credentials in the URL are not allowed; use credentialsSecretRef".into());
    }
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        let inner = bracketed.split(']').next().unwrap_or_default();
        if inner.contains('.') {
            return Some("IPv4-mapped IPv6 hosts are not allowed; write the IPv4 address".into());
        }
        inner.to_string()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_string()
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return Some("the URL has no host".into());
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return Some("loopback hosts (localhost, 127.0.0.0/8, ::1) are not allowed".into());
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            let ip = match ip {
                std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
                v4 => v4,
            };
            if ip.is_loopback() {
                return Some("loopback hosts (localhost, 127.0.0.0/8, ::1) are not allowed".into());
            }
            if ip.is_unspecified() {
                return Some("the unspecified address (0.0.0.0, ::) is not allowed".into());
            }
            let link_local = match ip {
                std::net::IpAddr::V4(v4) => v4.is_link_local(),
                std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
            };
            if link_local {
                return Some(
                    "link-local hosts (169.254.0.0/16, fe80::/10, e.g. cloud metadata services) are not allowed".into(),
                );
            }
        }
        Err(_) => {
            let numeric_label = |l: &str| {
                l.chars().all(|c| c.is_ascii_digit())
                    || l.strip_prefix("0x")
                        .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
            };
            if host.contains(':') || host.split('.').all(numeric_label) {
                return Some(
                    "integer-, octal- or hex-encoded hosts (e.g. 2130706433, 0x7f000001, 0177.0.0.1) are not \
                     allowed; write a DNS name or a dotted IP address"
                        .into(),
                );
            }
        }
    }
    if scheme == "http" && !(host.ends_with(".svc") || host.ends_with(".svc.cluster.local")) {
        return Some(
            "plain http:// is only allowed for in-cluster Services (*.svc or *.svc.cluster.local); use https://".into(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_rules() {
        for ok in [
            "https://s3.example.com",
            "https://s3.example.com:9443/",
            "http://rustfs.storage.svc:9000",
            "http://rustfs.storage.svc.cluster.local:9000",
            "https://10.0.0.5:9000",
            "https://[2001:db8::1]:9000",
        ] {
            assert_eq!(endpoint_problem(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("s3.example.com", "http(s) URL"),
            ("ftp://s3.example.com", "scheme"),
            ("http://s3.example.com", "only allowed for in-cluster"),
            ("https://localhost:9000", "loopback"),
            ("https://LOCALHOST.", "loopback"),
            ("https://127.0.0.1", "loopback"),
            ("https://[::1]", "loopback"),
            ("https://[::ffff:127.0.0.1]", "IPv4-mapped"),
            ("https://169.254.169.254", "link-local"),
            ("https://[fe80::1]", "link-local"),
            ("https://0.0.0.0", "unspecified"),
            ("https://2130706433/", "encoded"),
            ("https://0x7f000001", "encoded"),
            ("https://0177.0.0.1", "encoded"),
            ("https://user:pw@s3.example.com", "credentials"),
            ("https://:9000", "no host"),
        ] {
            let problem = endpoint_problem(bad).unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(problem.contains(why), "{bad}: {problem}");
        }
    }
}
