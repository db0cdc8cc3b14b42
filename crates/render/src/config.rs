//! The OpenBao server configuration every pod loads, and the entrypoint that turns the shared
//! template into one pod's config and supervises `bao server`.
//!
//! The config is a directory of `*.hcl` files (OpenBao loads them in name order):
//! `10-server.hcl` (listener, seal, raft), `20-service-registration.hcl`, `30-audit.hcl` (the
//! audit devices of `spec.audit`) and `40-telemetry.hcl` (`spec.telemetry`) when configured,
//! and on the first pod only, while the cluster has never been initialized, `zz-init.hcl` (the
//! self-init requests).

use openbao_api::{AuditDevice, AuditDeviceType, KmipSeal, KmsSeal, OpenBaoClusterSpec, Profile, Seal};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::hcl::Body;
use crate::paths::{
    DATA_DIR, KMIP_CA_FILE, KMIP_CLIENT_CERT_FILE, KMIP_CLIENT_KEY_FILE, KMIP_DIR, PLUGIN_DIR, POD_NAME_PLACEHOLDER,
    TLS_DIR, TRANSIT_CA_DIR, TRANSIT_CA_FILE, TRANSIT_TOKEN_ENV, UNSEAL_DIR,
};
use crate::{API_PORT, CLUSTER_PORT, Cluster};

pub const SERVER_FILE: &str = "10-server.hcl";
pub const SERVICE_REGISTRATION_FILE: &str = "20-service-registration.hcl";
pub const AUDIT_FILE: &str = "30-audit.hcl";
pub const TELEMETRY_FILE: &str = "40-telemetry.hcl";
pub const INIT_FILE: &str = "zz-init.hcl";
pub const ENTRYPOINT_FILE: &str = "entrypoint.sh";
pub const STATIC_SEAL_KEY_ID: &str = "operator-generated-v1";

/// Where a server looks for the raft cluster to join: a server's API address and the name its
/// certificate is verified against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinTarget {
    pub api_host: String,
    pub tls_server_name: String,
}

/// `10-server.hcl`: identical for every pod; the pod name is a placeholder.
pub fn server_hcl(cluster: &Cluster) -> String {
    let targets: Vec<JoinTarget> = (0..cluster.spec.replicas.max(0) as u32)
        .map(|ordinal| {
            let host = cluster.pod_host(ordinal);
            JoinTarget {
                api_host: host.clone(),
                tls_server_name: host,
            }
        })
        .collect();
    server_hcl_joining(cluster, &targets, false)
}

/// `10-server.hcl` joining the servers of `targets`; with `as_non_voter` a server with empty
/// storage joins without a vote (a blue/green upgrade's new servers, promoted later).
pub fn server_hcl_joining(cluster: &Cluster, targets: &[JoinTarget], as_non_voter: bool) -> String {
    // After the pod name: `.<cluster>.<namespace>.svc`.
    let own_domain = format!(".{}.{}.svc", cluster.name, cluster.namespace);
    let development = cluster.spec.profile == Profile::Development;
    let mut b = Body::new();
    b.attr("ui", true)
        .attr("cluster_name", cluster.name)
        .attr_with_pod_name("api_addr", "https://", &format!("{own_domain}:{API_PORT}"))
        .attr_with_pod_name("cluster_addr", "https://", &format!("{own_domain}:{CLUSTER_PORT}"))
        // The container has no IPC_LOCK capability; the data volume is not swap-backed.
        .attr("disable_mlock", true)
        .block("listener", &["tcp"], |l| {
            l.attr("address", format!("0.0.0.0:{API_PORT}"))
                .attr("cluster_address", format!("0.0.0.0:{CLUSTER_PORT}"))
                .attr("tls_cert_file", format!("{TLS_DIR}/tls.crt"))
                .attr("tls_key_file", format!("{TLS_DIR}/tls.key"))
                .attr("tls_min_version", "tls12");
            if cluster
                .spec
                .telemetry
                .as_ref()
                .is_some_and(|t| t.unauthenticated_metrics_access)
            {
                // Opens `/v1/sys/metrics` only; every other path still needs a token.
                l.block("telemetry", &[], |t| {
                    t.attr("unauthenticated_metrics_access", true);
                });
            }
        });
    seal_block(&mut b, cluster);
    b.block("storage", &["raft"], |r| {
        r.attr("path", DATA_DIR).attr_with_pod_name("node_id", "", "");
        if development {
            // Elections in 2-4 s instead of 5-10 s with the default of 5. Not 1: that makes
            // the leader step down when it misses its followers for 500 ms, and while one
            // server of three restarts (every step of a rolling upgrade) a single pause of
            // the other one that long, common on a busy node, costs 2-3 s without a leader.
            r.attr("performance_multiplier", 2)
                .attr("autopilot_update_interval", "1s")
                .attr("autopilot_reconcile_interval", "2s");
        }
        if as_non_voter {
            r.attr("retry_join_as_non_voter", true);
        }
        for target in targets {
            r.block("retry_join", &[], |j| {
                j.attr("leader_api_addr", format!("https://{}:{API_PORT}", target.api_host))
                    .attr("leader_tls_servername", target.tls_server_name.as_str())
                    .attr("leader_ca_cert_file", format!("{TLS_DIR}/ca.crt"));
            });
        }
    });
    b.finish()
}

/// The `seal` stanza (and for a KMS plugin seal, the plugin declaration): the static key
/// file, the transit server, the KMIP server or the KMS plugin. Every user string goes through
/// the HCL writer; secrets are only named (`env://`, mounted files), never written here.
fn seal_block(b: &mut Body, cluster: &Cluster) {
    match openbao_api::seal_of(cluster.spec.unseal.as_ref()) {
        // A missing block is refused by admission and keeps UnsealConfigurationReady False,
        // so no pod ever runs this configuration; render the static seal rather than nothing.
        Seal::Static | Seal::MissingBlock(_) => {
            b.block("seal", &["static"], |s| {
                s.attr("current_key_id", STATIC_SEAL_KEY_ID)
                    .attr("current_key", format!("file://{UNSEAL_DIR}/key"));
            });
        }
        Seal::Transit(t) => {
            b.block("seal", &["transit"], |s| {
                s.attr("address", t.address.as_str())
                    .attr("mount_path", t.mount_path.as_str())
                    .attr("key_name", t.key_name.as_str());
                if let Some(ns) = &t.namespace {
                    s.attr("namespace", ns.as_str());
                }
                if let Some(name) = &t.tls_server_name {
                    s.attr("tls_server_name", name.as_str());
                }
                if t.ca_secret_ref.is_some() {
                    s.attr("tls_ca_cert", format!("{TRANSIT_CA_DIR}/{TRANSIT_CA_FILE}"));
                }
                s.attr("token", format!("env://{TRANSIT_TOKEN_ENV}"));
            });
        }
        Seal::Kmip(k) => kmip_seal_block(b, k),
        Seal::Kms(k) => kms_seal_blocks(b, k),
    }
}

/// `seal "kmip"`: the client certificate, its key and the CA are files mounted from Secrets.
fn kmip_seal_block(b: &mut Body, k: &KmipSeal) {
    b.block("seal", &["kmip"], |s| {
        s.attr("endpoint", k.address.as_str())
            .attr("kms_key_id", k.key_id.as_str())
            .attr("client_cert", format!("{KMIP_DIR}/{KMIP_CLIENT_CERT_FILE}"))
            .attr("client_key", format!("{KMIP_DIR}/{KMIP_CLIENT_KEY_FILE}"));
        if k.ca_secret_ref.is_some() {
            s.attr("ca_cert", format!("{KMIP_DIR}/{KMIP_CA_FILE}"));
        }
        if let Some(name) = &k.tls_server_name {
            s.attr("server_name", name.as_str());
        }
        if let Some(timeout) = k.timeout_seconds {
            s.attr("timeout", timeout);
        }
        if let Some(alg) = k.encrypt_algorithm {
            s.attr("encrypt_alg", alg.as_str());
        }
        if !k.tls12_ciphers.is_empty() {
            s.attr("tls12_ciphers", k.tls12_ciphers.join(","));
        }
    });
}

/// `plugin "kms" "<wrapper>"` and `seal "<wrapper>"`: OpenBao 2.7 finds the wrapper in the
/// declared plugin (same name), checks its SHA-256 and runs it from `plugin_directory`. With an
/// OCI image, OpenBao downloads it there when it starts (an emptyDir in the pod).
fn kms_seal_blocks(b: &mut Body, k: &KmsSeal) {
    let wrapper = k.wrapper.as_str();
    let p = &k.plugin;
    b.attr("plugin_directory", PLUGIN_DIR);
    if p.image.is_some() {
        b.attr("plugin_auto_download", true);
    }
    b.block("plugin", &["kms", wrapper], |pl| {
        if let Some(command) = &p.command {
            pl.attr("command", command.as_str());
        }
        if let Some(image) = &p.image {
            pl.attr("image", image.as_str());
        }
        if let Some(version) = &p.version {
            pl.attr("version", version.as_str());
        }
        if let Some(binary) = &p.binary_name {
            pl.attr("binary_name", binary.as_str());
        }
        pl.attr("sha256sum", p.sha256sum.as_str());
    });
    b.block("seal", &[wrapper], |s| {
        for (key, value) in &k.settings {
            s.attr(key, value.as_str());
        }
    });
}

/// The `seal` stanza of `cluster` alone, as `10-server.hcl` carries it.
pub fn seal_hcl(cluster: &Cluster) -> String {
    let mut b = Body::new();
    seal_block(&mut b, cluster);
    b.finish()
}

/// The seal stanzas of a seal migration's middle stage (`docs/seal-migration.md`): the seal of
/// `from` with `disabled = "true"`, then the seal of `to`. A server started with them stays
/// sealed in migration mode until it is unsealed with the recovery key and `migrate`. For static
/// and transit seals (one block each); the plugin-based seals carry more than one block.
pub fn migration_seal_hcl(from: &Cluster, to: &Cluster) -> String {
    migration_stanzas(&seal_hcl(from), &seal_hcl(to))
}

/// [`migration_seal_hcl`] from the stanzas themselves: `old` (one `seal` block, as
/// [`seal_hcl`] writes it) disabled, then `new`. The operator uses it when the old seal is no
/// longer in the spec (it is read back from the servers' configuration).
pub fn migration_stanzas(old: &str, new: &str) -> String {
    // The writer puts the block header alone on the first line.
    let (header, body) = old.split_once('\n').unwrap_or((old, ""));
    format!("{header}\n  {DISABLED_LINE}\n{body}{new}")
}

/// The attribute that turns a seal block into the old seal of a migration.
pub const DISABLED_LINE: &str = "disabled = \"true\"";

/// `20-service-registration.hcl`: pod labels for active/sealed/initialized state.
pub fn service_registration_hcl() -> String {
    let mut b = Body::new();
    b.block("service_registration", &["kubernetes"], |_| {});
    b.finish()
}

/// `30-audit.hcl`: one `audit "<type>" "<name>"` block per device of `spec.audit`, or `None`
/// without devices. OpenBao reads every option as a string.
pub fn audit_hcl(spec: &OpenBaoClusterSpec) -> Option<String> {
    if spec.audit.is_empty() {
        return None;
    }
    let mut b = Body::new();
    for device in &spec.audit {
        b.block("audit", &[device.type_.as_str(), &device.name], |a| {
            if let Some(d) = &device.description {
                a.attr("description", d.as_str());
            }
            a.attr("options", audit_options(device));
        });
    }
    Some(b.finish())
}

/// Hash of `30-audit.hcl`, carried by the pods as `openbao.org/audit-hash`: a pod with the
/// current hash runs the current devices.
pub fn audit_hash(spec: &OpenBaoClusterSpec) -> Option<String> {
    audit_hcl(spec).map(|hcl| config_hash(&[&hcl]))
}

fn audit_options(device: &AuditDevice) -> serde_json::Value {
    let flag = |b: bool| if b { "true" } else { "false" };
    let mut options = json!({
        "format": device.format.as_str(),
        "hmac_accessor": flag(device.hmac_accessor),
        "log_raw": flag(device.log_raw),
        "elide_list_responses": flag(device.elide_list_responses),
    });
    match device.type_ {
        AuditDeviceType::File => {
            if let Some(f) = &device.file_options {
                options["file_path"] = json!(f.file_path);
                if let Some(mode) = &f.mode {
                    options["mode"] = json!(mode);
                }
            }
        }
        AuditDeviceType::Socket => {
            if let Some(s) = &device.socket_options {
                options["address"] = json!(s.address);
                options["socket_type"] = json!(s.socket_type.as_str());
            }
        }
        AuditDeviceType::Syslog => {
            if let Some(s) = &device.syslog_options {
                if let Some(f) = &s.facility {
                    options["facility"] = json!(f);
                }
                if let Some(t) = &s.tag {
                    options["tag"] = json!(t);
                }
            }
        }
    }
    options
}

/// `40-telemetry.hcl`: Prometheus metrics kept for `prometheusRetentionTime`, or `None` when
/// `spec.telemetry` is absent (OpenBao then serves no Prometheus metrics).
pub fn telemetry_hcl(spec: &OpenBaoClusterSpec) -> Option<String> {
    let t = spec.telemetry.as_ref()?;
    let mut b = Body::new();
    b.block("telemetry", &[], |tb| {
        tb.attr("prometheus_retention_time", t.prometheus_retention_time.as_str())
            .attr("disable_hostname", t.disable_hostname);
    });
    Some(b.finish())
}

/// The config files every set of servers carries besides its own `10-server.hcl`, by name:
/// service registration, and audit and telemetry when configured. Blue/green sets carry the
/// same ones, so an upgrade keeps the audit trail and the metrics.
pub fn shared_files(spec: &OpenBaoClusterSpec) -> Vec<(&'static str, String)> {
    let mut files = vec![(SERVICE_REGISTRATION_FILE, service_registration_hcl())];
    if let Some(audit) = audit_hcl(spec) {
        files.push((AUDIT_FILE, audit));
    }
    if let Some(telemetry) = telemetry_hcl(spec) {
        files.push((TELEMETRY_FILE, telemetry));
    }
    files
}

/// Autopilot settings applied by self-init.
pub fn autopilot_config(cluster: &Cluster) -> serde_json::Value {
    let replicas = cluster.spec.replicas;
    let stabilization = match cluster.spec.profile {
        Profile::Development => "2s",
        Profile::Hardened => "10s",
    };
    json!({
        // Removing dead servers below a quorum of 3 could shrink a small cluster to nothing.
        "cleanup_dead_servers": replicas >= 3,
        "dead_server_last_contact_threshold": "5m",
        "min_quorum": replicas.max(1),
        "server_stabilization_time": stabilization,
    })
}

/// The pod entrypoint: renders this pod's config from the templates, adds the self-init file
/// only where it is safe, runs `bao server`, forwards SIGTERM/SIGINT and sends SIGHUP when the
/// mounted certificate changes so OpenBao serves a reissued certificate without a restart.
/// POSIX sh and busybox applets only (sed, cp, sha256sum...): it runs in the official (Alpine)
/// image as in ours; Debian's busybox has no `cksum`. Every path can be
/// overridden by environment, which is how tests run it outside a pod.
pub fn entrypoint_sh() -> String {
    format!(
        r#"#!/bin/sh
set -u
TEMPLATES="${{BAO_TEMPLATE_DIR:-{templates}}}"
INIT_DIR="${{BAO_INIT_DIR:-{init}}}"
OUT="${{BAO_RENDERED_DIR:-{rendered}}}"
DATA="${{BAO_DATA_DIR:-{data}}}"
CERT="${{BAO_TLS_CERT:-{tls}/tls.crt}}"
POLL="${{BAO_RELOAD_POLL_SECONDS:-5}}"
POD="${{POD_NAME:-$(hostname)}}"
TRANSIT_JWT="${{BAO_TRANSIT_JWT:-{login_dir}/{login_jwt}}}"

# Only the first pod may found the cluster, only while the operator still ships the requests
# (it removes them once the cluster is initialized) and only on empty storage: a second
# founder would start a separate cluster (split brain).
founding=0
case "$POD" in
  *-0)
    if [ -s "$INIT_DIR/{init_file}" ] && [ ! -e "$DATA/raft/raft.db" ]; then founding=1; fi ;;
esac
mkdir -p "$OUT" && rm -f "$OUT"/*.hcl
# A server never joins itself and the founder joins nobody. Their retry_join would look up
# names the cluster DNS does not serve yet (a pod's record appears only once its IP is
# reported), and the "no such host" answer stays cached for seconds: the leader then cannot
# reach a server that just joined, and followers cannot reach the founder.
for f in "$TEMPLATES"/*.hcl; do
  sed "s/{placeholder}/$POD/g" "$f" | awk -v self="$POD." -v founding="$founding" '
    /^  retry_join \{{/ {{ block = $0 "\n"; in_join = 1; keep = (founding != 1); next }}
    in_join {{
      block = block $0 "\n"
      if (index($0, "\"https://" self) || index($0, "= \"" self)) keep = 0
      if ($0 ~ /^  }}/) {{ in_join = 0; if (keep) printf "%s", block }}
      next
    }}
    {{ print }}' > "$OUT/$(basename "$f")" || exit 1
done
if [ "$founding" = 1 ]; then
  cp "$INIT_DIR/{init_file}" "$OUT/{init_file}"
  echo "entrypoint: first start of $POD: self-initialization requests included"
fi

# spec.unseal.transit.login: log in to the transit server with this pod's service-account token
# and seal with the token it answers (the config reads it from the environment). The settings
# arrive as variables and are only ever quoted parameters; a failed login is reported the way
# OpenBao reports an unreachable seal, so the operator's status says why.
if [ -n "${{{login_path}:-}}" ]; then
  err="$OUT/.transit-login.err"
  if {token}="$(
      export BAO_ADDR="${{{login_addr}}}"
      if [ -n "${{{login_cacert}:-}}" ]; then export BAO_CACERT="${{{login_cacert}}}"; fi
      if [ -n "${{{login_namespace}:-}}" ]; then export BAO_NAMESPACE="${{{login_namespace}}}"; fi
      if [ -n "${{{login_server_name}:-}}" ]; then export BAO_TLS_SERVER_NAME="${{{login_server_name}}}"; fi
      bao write -field=token "${{{login_path}}}" role="${{{login_role}}}" jwt=@"$TRANSIT_JWT" 2>"$err"
    )" && [ -n "${{{token}}}" ]; then
    export {token}
    rm -f "$err"
    echo "entrypoint: logged in to the transit server at ${{{login_path}}}"
  else
    echo "Error configuring seal \"transit\": login at ${{{login_path}}} as role ${{{login_role}}} failed: $(tr -s '\n\t' '  ' < "$err")"
    exit 1
  fi
fi

bao server -config="$OUT" &
child=$!
# Stopping: forward the signal and exit as soon as bao has stopped, not after the poll sleep.
# Until the container exits the pod keeps its name, so its replacement cannot start.
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit $?' TERM INT
sum="$(sha256sum < "$CERT" 2>/dev/null)"
while kill -0 "$child" 2>/dev/null; do
  sleep "$POLL" &
  wait $! 2>/dev/null
  now="$(sha256sum < "$CERT" 2>/dev/null)" || continue
  if [ -n "$now" ] && [ "$now" != "$sum" ]; then
    sum="$now"
    echo "entrypoint: certificate changed, reloading OpenBao (SIGHUP)"
    kill -HUP "$child" 2>/dev/null
  fi
done
wait "$child"
"#,
        templates = crate::paths::CONFIG_TEMPLATE_DIR,
        init = crate::paths::INIT_DIR,
        rendered = crate::paths::RENDERED_DIR,
        data = DATA_DIR,
        tls = TLS_DIR,
        placeholder = POD_NAME_PLACEHOLDER,
        init_file = INIT_FILE,
        login_dir = crate::paths::TRANSIT_LOGIN_DIR,
        login_jwt = crate::paths::TRANSIT_LOGIN_JWT_FILE,
        login_path = crate::paths::TRANSIT_LOGIN_PATH_ENV,
        login_role = crate::paths::TRANSIT_LOGIN_ROLE_ENV,
        login_addr = crate::paths::TRANSIT_LOGIN_ADDR_ENV,
        login_cacert = crate::paths::TRANSIT_LOGIN_CACERT_ENV,
        login_namespace = crate::paths::TRANSIT_LOGIN_NAMESPACE_ENV,
        login_server_name = crate::paths::TRANSIT_LOGIN_SERVER_NAME_ENV,
        token = crate::paths::TRANSIT_TOKEN_ENV,
    )
}

/// Hash of everything that requires a pod restart when it changes.
pub fn config_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> OpenBaoClusterSpec {
        let mut v = json!({"version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"}});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn audit_devices_become_config_blocks_with_string_options() {
        assert_eq!(audit_hcl(&spec(json!({}))), None);
        let s = spec(json!({"audit": [
            {"type": "file", "name": "file", "description": "d\"${x}", "fileOptions": {"filePath": "stdout", "mode": "0600"}},
            {"type": "socket", "name": "siem", "elideListResponses": true, "socketOptions": {"address": "siem:9090", "socketType": "udp"}},
            {"type": "syslog", "name": "sys", "format": "jsonx", "syslogOptions": {"facility": "LOCAL0", "tag": "bao"}}
        ]}));
        let hcl = audit_hcl(&s).unwrap();
        assert!(
            hcl.starts_with("audit \"file\" \"file\" {\n  description = \"d\\\"\\u0024{x}\"\n"),
            "{hcl}"
        );
        for needle in [
            "\"file_path\" = \"stdout\"",
            "\"mode\" = \"0600\"",
            "\"hmac_accessor\" = \"true\"",
            "\"log_raw\" = \"false\"",
            "audit \"socket\" \"siem\" {",
            "\"socket_type\" = \"udp\"",
            "\"elide_list_responses\" = \"true\"",
            "audit \"syslog\" \"sys\" {",
            "\"facility\" = \"LOCAL0\"",
            "\"format\" = \"jsonx\"",
        ] {
            assert!(hcl.contains(needle), "{needle} missing:\n{hcl}");
        }
    }

    #[test]
    fn telemetry_opens_only_the_metrics_path_when_asked() {
        let plain = spec(json!({}));
        let c = |s| Cluster {
            name: "b",
            namespace: "ns",
            uid: "u",
            spec: s,
        };
        assert_eq!(telemetry_hcl(&plain), None);
        assert!(!server_hcl(&c(&plain)).contains("telemetry"));
        let on = spec(json!({"telemetry": {"prometheusRetentionTime": "1h"}}));
        assert_eq!(
            telemetry_hcl(&on).unwrap(),
            "telemetry {\n  prometheus_retention_time = \"1h\"\n  disable_hostname = true\n}\n"
        );
        assert!(server_hcl(&c(&on)).contains("  telemetry {\n    unauthenticated_metrics_access = true\n  }\n"));
        let closed = spec(json!({"telemetry": {"unauthenticatedMetricsAccess": false}}));
        assert!(!server_hcl(&c(&closed)).contains("unauthenticated_metrics_access"));
        let names: Vec<&str> = shared_files(&on).iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [SERVICE_REGISTRATION_FILE, TELEMETRY_FILE]);
    }

    use crate::objects::fixtures;
    use serde_json::json;

    fn transit(extra: serde_json::Value) -> openbao_api::OpenBaoClusterSpec {
        let mut seal = json!({
            "address": "https://transit.vault.svc:8200",
            "keyName": "unseal",
            "tokenSecretRef": {"name": "transit-token", "key": "token"},
        });
        for (k, v) in extra.as_object().unwrap() {
            seal[k] = v.clone();
        }
        fixtures::spec(json!({"unseal": {"type": "transit", "transit": seal}}))
    }

    #[test]
    fn absent_or_static_unseal_renders_the_static_seal() {
        for spec in [
            fixtures::spec(json!({})),
            fixtures::spec(json!({"unseal": {"type": "static"}})),
        ] {
            let hcl = server_hcl(&fixtures::cluster(&spec));
            assert!(hcl.contains("seal \"static\" {\n  current_key_id = \"operator-generated-v1\"\n  current_key = \"file:///etc/bao/unseal/key\"\n}\n"), "{hcl}");
            assert!(!hcl.contains("transit"), "{hcl}");
        }
    }

    #[test]
    fn transit_renders_every_field_and_only_names_the_token() {
        let spec = transit(json!({
            "mountPath": "tenants/a/transit/",
            "namespace": "team-a/",
            "tlsServerName": "transit.vault.svc",
            "caSecretRef": {"name": "transit-ca", "key": "bundle.pem"},
        }));
        let hcl = server_hcl(&fixtures::cluster(&spec));
        let expected = "seal \"transit\" {\n  address = \"https://transit.vault.svc:8200\"\n  mount_path = \"tenants/a/transit/\"\n  key_name = \"unseal\"\n  namespace = \"team-a/\"\n  tls_server_name = \"transit.vault.svc\"\n  tls_ca_cert = \"/etc/bao/transit-ca/ca.crt\"\n  token = \"env://SEAL_TRANSIT_TOKEN\"\n}\n";
        assert!(hcl.contains(expected), "{hcl}");
        assert!(!hcl.contains("static") && !hcl.contains("/etc/bao/unseal"), "{hcl}");
        let minimal = server_hcl(&fixtures::cluster(&transit(json!({}))));
        assert!(minimal.contains("  mount_path = \"transit/\"\n"), "{minimal}");
        for absent in ["namespace", "tls_server_name", "tls_ca_cert"] {
            assert!(!minimal.contains(absent), "{absent} in {minimal}");
        }
    }

    #[test]
    fn the_migration_stage_disables_the_old_seal_next_to_the_new_one() {
        let from = fixtures::spec(json!({}));
        let to = transit(json!({}));
        let hcl = migration_seal_hcl(&fixtures::cluster(&from), &fixtures::cluster(&to));
        let expected = format!(
            "seal \"static\" {{\n  disabled = \"true\"\n  current_key_id = \"operator-generated-v1\"\n  current_key = \"file:///etc/bao/unseal/key\"\n}}\n{}",
            seal_hcl(&fixtures::cluster(&to))
        );
        assert_eq!(hcl, expected);
        let back = migration_seal_hcl(&fixtures::cluster(&to), &fixtures::cluster(&from));
        assert!(
            back.starts_with("seal \"transit\" {\n  disabled = \"true\"\n  address = "),
            "{back}"
        );
        assert!(back.ends_with(&seal_hcl(&fixtures::cluster(&from))), "{back}");
        assert!(server_hcl(&fixtures::cluster(&to)).contains(&seal_hcl(&fixtures::cluster(&to))));
    }

    #[test]
    fn transit_strings_cannot_leave_their_literal() {
        // The Rust types accept what admission would refuse; the writer must still hold.
        let spec =
            transit(json!({"address": "https://x\"\n}\nseal \"static\" {\n${env}@@POD_NAME@@", "keyName": "k\"}"}));
        let hcl = server_hcl(&fixtures::cluster(&spec));
        assert!(
            hcl.contains("  address = \"https://x\\\"\\n}\\nseal \\\"static\\\" {\\n\\u0024{env}\\u0040\\u0040POD_NAME\\u0040\\u0040\"\n"),
            "{hcl}"
        );
        assert!(hcl.contains("  key_name = \"k\\\"}\"\n"), "{hcl}");
    }
}
