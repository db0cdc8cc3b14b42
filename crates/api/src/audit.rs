//! OpenBao's own trail and metrics: `spec.audit` (audit devices), `spec.auditFileStorage` (the
//! volume file devices write to) and `spec.telemetry` (the `telemetry` stanza and the metrics
//! endpoint).
//!
//! OpenBao 2.x refuses to enable audit devices through its API (`cannot enable audit device via
//! API`), so devices are declared in the server configuration, never by self-init requests.
//! Spellings follow the Go operator's (`fileOptions.filePath`, `socketOptions.socketType`,
//! `syslogOptions.facility`) where they are sound; the device's mount path is `name`.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Where file audit devices write inside the OpenBao container: the audit volume.
pub const AUDIT_DIR: &str = "/openbao/audit";
/// The `filePath` that sends a file device's entries to the container's standard output.
pub const AUDIT_STDOUT: &str = "stdout";

/// One audit device, declared in the server configuration as `audit "<type>" "<name>" { ... }`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type != 'file' || has(self.fileOptions)").message("spec.audit[].fileOptions: required for a file device (filePath stdout or /openbao/audit/<file>)").field_path(".fileOptions"),
    validation = Rule::new("self.type != 'socket' || has(self.socketOptions)").message("spec.audit[].socketOptions: required for a socket device (address)").field_path(".socketOptions"),
    validation = Rule::new("self.type == 'file' || !has(self.fileOptions)").message("spec.audit[].fileOptions: only for a device of type file").field_path(".fileOptions"),
    validation = Rule::new("self.type == 'socket' || !has(self.socketOptions)").message("spec.audit[].socketOptions: only for a device of type socket").field_path(".socketOptions"),
    validation = Rule::new("self.type == 'syslog' || !has(self.syslogOptions)").message("spec.audit[].syslogOptions: only for a device of type syslog").field_path(".syslogOptions"),
)]
pub struct AuditDevice {
    /// `file` (a file on the audit volume, or the container's stdout), `socket` (TCP, UDP or a
    /// Unix socket) or `syslog` (the local syslog daemon).
    #[serde(rename = "type")]
    pub type_: AuditDeviceType,

    /// The device's path in OpenBao (`sys/audit/<name>`): a DNS label, unique in `spec.audit`.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("spec.audit[].name: must be a DNS label (lower-case letters, digits and '-'), e.g. file-audit"))]
    pub name: String,

    /// Free text shown by `bao audit list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub description: Option<String>,

    /// Options of a `file` device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_options: Option<FileAuditOptions>,

    /// Options of a `socket` device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_options: Option<SocketAuditOptions>,

    /// Options of a `syslog` device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog_options: Option<SyslogAuditOptions>,

    /// HMAC token accessors in the entries (OpenBao's default). Refused as `false` under
    /// `Hardened`: an accessor in clear lets a log reader revoke or look up tokens.
    #[serde(default = "default_true")]
    pub hmac_accessor: bool,

    /// Write secrets, tokens and request bodies in clear instead of HMAC'd. Refused under
    /// `Hardened`: the audit trail would become a copy of every secret.
    #[serde(default)]
    pub log_raw: bool,

    /// Leave the key lists of `list` responses out of the entries (they can be large).
    #[serde(default)]
    pub elide_list_responses: bool,

    /// Entry format: `json`, or `jsonx` (XML).
    #[serde(default)]
    pub format: AuditFormat,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditDeviceType {
    File,
    Socket,
    Syslog,
}

impl AuditDeviceType {
    /// The device type as OpenBao's `audit "<type>"` block names it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditDeviceType::File => "file",
            AuditDeviceType::Socket => "socket",
            AuditDeviceType::Syslog => "syslog",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditFormat {
    #[default]
    Json,
    Jsonx,
}

impl AuditFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditFormat::Json => "json",
            AuditFormat::Jsonx => "jsonx",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileAuditOptions {
    /// `stdout`, or a file directly under `/openbao/audit/` (the audit volume), e.g.
    /// `/openbao/audit/audit.log`.
    #[schemars(length(min = 1, max = 160))]
    #[x_kube(validation = Rule::new("self == 'stdout' || self.matches('^/openbao/audit/[A-Za-z0-9_-][A-Za-z0-9._-]*$')").message("spec.audit[].fileOptions.filePath: must be stdout or a file directly under /openbao/audit/ (the audit volume), e.g. /openbao/audit/audit.log"))]
    pub file_path: String,

    /// Permissions of the log file as 4 octal digits, e.g. `0600` (OpenBao's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^0[0-7]{3}$')").message("spec.audit[].fileOptions.mode: must be 4 octal digits such as 0600"))]
    pub mode: Option<String>,
}

impl FileAuditOptions {
    /// Whether the device writes to the audit volume (not to stdout).
    pub fn writes_to_volume(&self) -> bool {
        self.file_path != AUDIT_STDOUT
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.socketType == 'unix' ? self.address.matches('^/[^\\\\s]+$') : self.address.matches('^[A-Za-z0-9.:\\\\[\\\\]-]+:[0-9]{1,5}$')").message("spec.audit[].socketOptions.address: must be host:port for tcp and udp, an absolute path for unix").field_path(".address"))]
pub struct SocketAuditOptions {
    /// Where entries go: `host:port` for `tcp` and `udp`, a socket path for `unix`.
    #[schemars(length(min = 1, max = 253))]
    pub address: String,

    /// `tcp` (the default), `udp` or `unix`.
    #[serde(default)]
    pub socket_type: SocketType,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SocketType {
    #[default]
    Tcp,
    Udp,
    Unix,
}

impl SocketType {
    pub fn as_str(self) -> &'static str {
        match self {
            SocketType::Tcp => "tcp",
            SocketType::Udp => "udp",
            SocketType::Unix => "unix",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyslogAuditOptions {
    /// Syslog facility, e.g. `AUTH` (OpenBao's default) or `LOCAL0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['KERN', 'USER', 'MAIL', 'DAEMON', 'AUTH', 'SYSLOG', 'LPR', 'NEWS', 'UUCP', 'CRON', 'AUTHPRIV', 'FTP', 'LOCAL0', 'LOCAL1', 'LOCAL2', 'LOCAL3', 'LOCAL4', 'LOCAL5', 'LOCAL6', 'LOCAL7']").message("spec.audit[].syslogOptions.facility: must be a syslog facility such as AUTH, DAEMON or LOCAL0-LOCAL7"))]
    pub facility: Option<String>,

    /// Program name the entries carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9._-]{1,32}$')").message("spec.audit[].syslogOptions.tag: must be 1-32 letters, digits, '.', '_' or '-'"))]
    pub tag: Option<String>,
}

/// The volume behind file audit devices, one claim per server (`audit-<pod>`). Without it the
/// audit volume is an emptyDir: entries survive container restarts, not a pod's deletion.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditFileStorage {
    /// Size of each server's audit volume, e.g. `1Gi`.
    #[serde(default = "default_audit_size")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.auditFileStorage.size: must be a positive quantity such as 1Gi"))]
    pub size: String,

    /// Storage class of the audit volumes. Defaults to the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

fn default_audit_size() -> String {
    "1Gi".to_string()
}

/// OpenBao's telemetry: a `telemetry` stanza with Prometheus retention, served at
/// `/v1/sys/metrics?format=prometheus` on the API port, and the metrics Service `<c>-metrics`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.serviceMonitor) || !self.serviceMonitor.enabled || self.unauthenticatedMetricsAccess").message("spec.telemetry.serviceMonitor: needs unauthenticatedMetricsAccess: true (the operator wires no scrape token)").field_path(".serviceMonitor"),
)]
pub struct TelemetrySpec {
    /// How long OpenBao keeps metrics for Prometheus to scrape (Go duration, e.g. `24h`);
    /// must be longer than the scrape interval.
    #[serde(default = "default_retention")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(h|m|s))+$') && !self.matches('^(0+(h|m|s))+$')").message("spec.telemetry.prometheusRetentionTime: must be a non-zero duration such as 24h or 30s"))]
    pub prometheus_retention_time: String,

    /// Leave the host name out of metric names (one series per metric whatever the pod).
    #[serde(default = "default_true")]
    pub disable_hostname: bool,

    /// Serve the metrics path without a token (the listener's `unauthenticated_metrics_access`:
    /// only `/v1/sys/metrics` is opened). When false, scrapers need a token with `read` on
    /// `sys/metrics`.
    #[serde(default = "default_true")]
    pub unauthenticated_metrics_access: bool,

    /// A Prometheus Operator `ServiceMonitor` for the metrics Service (spelled as the Go
    /// operator's `observability.metrics.serviceMonitor`). Applied only while the apiserver
    /// serves `monitoring.coreos.com/v1` ServiceMonitor; without that API nothing is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_monitor: Option<ServiceMonitorSpec>,
}

/// How Prometheus scrapes OpenBao through the ServiceMonitor `<c>-metrics`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.scrapeTimeout) <= duration(self.interval)").message("spec.telemetry.serviceMonitor.scrapeTimeout: must not be longer than interval").field_path(".scrapeTimeout"),
)]
pub struct ServiceMonitorSpec {
    /// Apply the ServiceMonitor (false removes it).
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// How often Prometheus scrapes each server (a duration such as `30s` or `1m`).
    #[serde(default = "default_scrape_interval")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$') && self != '' && !self.matches('^(0+h)?(0+m)?(0+s)?$')").message("spec.telemetry.serviceMonitor.interval: must be a non-zero duration in h, m, s order such as 30s or 1m30s"))]
    pub interval: String,

    /// How long one scrape may take, at most `interval` (a duration such as `10s`).
    #[serde(default = "default_scrape_timeout")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$') && self != '' && !self.matches('^(0+h)?(0+m)?(0+s)?$')").message("spec.telemetry.serviceMonitor.scrapeTimeout: must be a non-zero duration in h, m, s order such as 10s"))]
    pub scrape_timeout: String,
}

impl Default for ServiceMonitorSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_scrape_interval(),
            scrape_timeout: default_scrape_timeout(),
        }
    }
}

fn default_scrape_interval() -> String {
    "30s".to_string()
}

fn default_scrape_timeout() -> String {
    "10s".to_string()
}

impl Default for TelemetrySpec {
    fn default() -> Self {
        Self {
            prometheus_retention_time: default_retention(),
            disable_hostname: true,
            unauthenticated_metrics_access: true,
            service_monitor: None,
        }
    }
}

fn default_retention() -> String {
    "24h".to_string()
}

fn default_true() -> bool {
    true
}

/// What is wrong with `spec.audit` and `spec.telemetry`, checked again in Rust: the same rules
/// as the CEL ones, for objects admitted before a rule existed or under an older CRD. Each
/// message names the field.
pub fn problems(spec: &crate::OpenBaoClusterSpec) -> Vec<String> {
    let mut out = Vec::new();
    let hardened = spec.profile == crate::Profile::Hardened;
    if hardened && spec.audit.is_empty() {
        out.push("spec.audit: the Hardened profile requires at least one audit device".to_string());
    }
    for (i, d) in spec.audit.iter().enumerate() {
        let at = format!("spec.audit[{i}]");
        if !is_dns_label(&d.name) {
            out.push(format!("{at}.name: must be a DNS label"));
        }
        if spec.audit[..i].iter().any(|o| o.name == d.name) {
            out.push(format!("{at}.name: names must be unique"));
        }
        if hardened && d.log_raw {
            out.push(format!("{at}.logRaw: not allowed with the Hardened profile"));
        }
        if hardened && !d.hmac_accessor {
            out.push(format!("{at}.hmacAccessor: must stay true with the Hardened profile"));
        }
        let options_match = match d.type_ {
            AuditDeviceType::File => {
                d.file_options.is_some() && d.socket_options.is_none() && d.syslog_options.is_none()
            }
            AuditDeviceType::Socket => {
                d.socket_options.is_some() && d.file_options.is_none() && d.syslog_options.is_none()
            }
            AuditDeviceType::Syslog => d.file_options.is_none() && d.socket_options.is_none(),
        };
        if !options_match {
            out.push(format!(
                "{at}: needs the options of its type ({}) and no others",
                d.type_.as_str()
            ));
        }
        if let Some(f) = &d.file_options
            && f.file_path != AUDIT_STDOUT
            && !is_audit_volume_file(&f.file_path)
        {
            out.push(format!(
                "{at}.fileOptions.filePath: must be stdout or a file directly under {AUDIT_DIR}/"
            ));
        }
    }
    if let Some(t) = &spec.telemetry
        && let Some(m) = t.service_monitor.as_ref().filter(|m| m.enabled)
    {
        out.extend(service_monitor_problems(t, m));
    }
    out
}

/// The `spec.telemetry.serviceMonitor` rules, as the CEL ones.
fn service_monitor_problems(t: &TelemetrySpec, m: &ServiceMonitorSpec) -> Vec<String> {
    let at = "spec.telemetry.serviceMonitor";
    let mut out = Vec::new();
    if !t.unauthenticated_metrics_access {
        out.push(format!(
            "{at}: needs unauthenticatedMetricsAccess: true (the operator wires no scrape token)"
        ));
    }
    // Prometheus takes its units in order only (`1m30s`, never `30s1m`).
    let ordered = |text: &str| {
        let units: Vec<usize> = text.chars().filter_map(|c| "hms".find(c)).collect();
        units.windows(2).all(|w| w[0] < w[1])
    };
    let nonzero = |text: &str| {
        crate::duration::parse(text)
            .ok()
            .filter(|d| !d.is_zero() && ordered(text))
    };
    match (nonzero(&m.interval), nonzero(&m.scrape_timeout)) {
        (None, _) => out.push(format!(
            "{at}.interval: must be a non-zero duration in h, m, s order such as 30s or 1m30s"
        )),
        (_, None) => out.push(format!(
            "{at}.scrapeTimeout: must be a non-zero duration in h, m, s order such as 10s"
        )),
        (Some(interval), Some(timeout)) if timeout > interval => {
            out.push(format!("{at}.scrapeTimeout: must not be longer than interval"))
        }
        _ => {}
    }
    out
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `/openbao/audit/<file>`, the file name of letters, digits, `.`, `_` and `-`, not starting
/// with `.` (so never `.` or `..`).
fn is_audit_volume_file(path: &str) -> bool {
    path.strip_prefix(AUDIT_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|file| {
            !file.is_empty()
                && !file.starts_with('.')
                && file
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_checks_repeat_the_admission_rules() {
        let spec = |extra: serde_json::Value| -> crate::OpenBaoClusterSpec {
            let mut v = serde_json::json!({"version": "2.7.2", "profile": "Hardened", "storage": {"size": "1Gi"}});
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            serde_json::from_value(v).unwrap()
        };
        assert_eq!(
            problems(&spec(serde_json::json!({}))),
            ["spec.audit: the Hardened profile requires at least one audit device"]
        );
        let good =
            serde_json::json!({"type": "file", "name": "file", "fileOptions": {"filePath": "/openbao/audit/a.log"}});
        assert!(problems(&spec(serde_json::json!({"audit": [good]}))).is_empty());
        let bad = spec(serde_json::json!({"audit": [
            {"type": "file", "name": "a", "logRaw": true, "hmacAccessor": false, "fileOptions": {"filePath": "/openbao/audit/../x"}},
            {"type": "socket", "name": "a"},
            {"type": "syslog", "name": "Bad_Name", "fileOptions": {"filePath": "stdout"}},
        ]}));
        let found = problems(&bad);
        for expected in [
            "spec.audit[0].logRaw",
            "spec.audit[0].hmacAccessor",
            "spec.audit[0].fileOptions.filePath",
            "spec.audit[1].name: names must be unique",
            "spec.audit[1]: needs the options of its type (socket)",
            "spec.audit[2].name: must be a DNS label",
            "spec.audit[2]: needs the options of its type (syslog)",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "{expected} not in {found:?}"
            );
        }
        assert!(is_audit_volume_file("/openbao/audit/audit-2.log"));
        for path in [
            "/openbao/audit/",
            "/openbao/audit/.hidden",
            "/openbao/audit/a/b",
            "/openbao/auditx",
            "/tmp/a",
        ] {
            assert!(!is_audit_volume_file(path), "{path}");
        }
    }

    #[test]
    fn service_monitor_rules_are_checked_again_in_rust() {
        let problems_of = |telemetry: serde_json::Value| {
            let spec: crate::OpenBaoClusterSpec = serde_json::from_value(serde_json::json!({
                "version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"},
                "telemetry": telemetry,
            }))
            .unwrap();
            problems(&spec)
        };
        assert!(problems_of(serde_json::json!({"serviceMonitor": {}})).is_empty());
        assert!(
            problems_of(serde_json::json!({"serviceMonitor": {"interval": "1m", "scrapeTimeout": "1m"}})).is_empty()
        );
        // Switched off: nothing is applied, so nothing to check.
        assert!(
            problems_of(
                serde_json::json!({"unauthenticatedMetricsAccess": false, "serviceMonitor": {"enabled": false}})
            )
            .is_empty()
        );
        for (telemetry, expected) in [
            (
                serde_json::json!({"unauthenticatedMetricsAccess": false, "serviceMonitor": {}}),
                "spec.telemetry.serviceMonitor: needs unauthenticatedMetricsAccess",
            ),
            (
                serde_json::json!({"serviceMonitor": {"interval": "0s"}}),
                "spec.telemetry.serviceMonitor.interval",
            ),
            (
                serde_json::json!({"serviceMonitor": {"scrapeTimeout": "1d"}}),
                "spec.telemetry.serviceMonitor.scrapeTimeout: must be a non-zero",
            ),
            (
                serde_json::json!({"serviceMonitor": {"interval": "30s1m"}}),
                "spec.telemetry.serviceMonitor.interval: must be a non-zero duration in h, m, s order",
            ),
            (
                serde_json::json!({"serviceMonitor": {"interval": "10s", "scrapeTimeout": "1m"}}),
                "spec.telemetry.serviceMonitor.scrapeTimeout: must not be longer",
            ),
        ] {
            let found = problems_of(telemetry);
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "{expected} not in {found:?}"
            );
        }
    }

    #[test]
    fn a_file_device_defaults_to_hmac_and_json() {
        let d: AuditDevice = serde_json::from_value(serde_json::json!({
            "type": "file", "name": "file", "fileOptions": {"filePath": "/openbao/audit/audit.log"}
        }))
        .unwrap();
        assert!(d.hmac_accessor && !d.log_raw && !d.elide_list_responses);
        assert_eq!(d.format, AuditFormat::Json);
        assert!(d.file_options.unwrap().writes_to_volume());
        let t: TelemetrySpec = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(t, TelemetrySpec::default());
        let m: ServiceMonitorSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(m, ServiceMonitorSpec::default());
        assert!(m.enabled && m.interval == "30s" && m.scrape_timeout == "10s");
    }
}
