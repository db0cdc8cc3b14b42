//! `spec.audit`, `spec.auditFileStorage` and `spec.telemetry` on a real kube-apiserver: invalid
//! specs are rejected with messages naming the field, valid ones are accepted and defaulted, and
//! the audit volume cannot change after creation.

use anyhow::{Context, Result, bail, ensure};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use openbao_api::OpenBaoCluster;
use serde_json::{Value, json};
use testkit::apiserver::{ApiServer, create_namespace, install_crds};

async fn clusters_in_new_namespace(prefix: &str) -> Result<Api<DynamicObject>> {
    let server = ApiServer::shared().await?;
    let client = server.client().await?;
    install_crds(&client, openbao_api::crd::all()).await?;
    let namespace = create_namespace(&client, prefix).await?;
    let resource = ApiResource::erase::<OpenBaoCluster>(&());
    Ok(Api::namespaced_with(client, &namespace, &resource))
}

/// A valid Development cluster with `extra` merged into its spec (top-level keys replace).
fn cluster(name: &str, extra: Value) -> Result<DynamicObject> {
    let mut spec = json!({"version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"}});
    for (k, v) in extra.as_object().context("extra is an object")? {
        if v.is_null() {
            spec.as_object_mut().unwrap().remove(k);
        } else {
            spec[k] = v.clone();
        }
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "openbao.org/v1alpha1",
        "kind": "OpenBaoCluster",
        "metadata": {"name": name},
        "spec": spec,
    }))?)
}

fn file_device(name: &str, path: &str) -> Value {
    json!({"type": "file", "name": name, "fileOptions": {"filePath": path}})
}

/// Everything else a Hardened cluster needs, so each case breaks one audit rule.
fn hardened(audit: Value) -> Value {
    json!({"profile": "Hardened", "replicas": 3, "tls": {"mode": "External"}, "unseal": transit_unseal(), "audit": audit})
}

/// The Hardened profile refuses the static seal.
fn transit_unseal() -> Value {
    json!({"type": "transit", "transit": {
        "address": "https://transit.vault.svc:8200",
        "keyName": "openbao-unseal",
        "tokenSecretRef": {"name": "transit-token", "key": "token"},
    }})
}

async fn rejection(api: &Api<DynamicObject>, obj: &DynamicObject) -> Result<String> {
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => bail!("accepted"),
        Err(kube::Error::Api(status)) if status.code == 422 => Ok(status.message),
        Err(other) => bail!("expected 422, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_audit_and_telemetry_specs_are_rejected_naming_the_field() -> Result<()> {
    let api = clusters_in_new_namespace("audit-invalid").await?;
    let good = file_device("file", "/openbao/audit/audit.log");
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "Hardened without audit",
            hardened(Value::Null),
            &["spec.audit", "Hardened profile requires at least one audit device"],
        ),
        (
            "Hardened with an empty audit list",
            hardened(json!([])),
            &["spec.audit", "requires at least one audit device"],
        ),
        (
            "Hardened with logRaw",
            hardened(json!([{"type": "file", "name": "file", "logRaw": true, "fileOptions": {"filePath": "stdout"}}])),
            &["spec.audit[].logRaw", "not allowed with the Hardened profile"],
        ),
        (
            "Hardened with hmacAccessor false",
            hardened(
                json!([{"type": "file", "name": "file", "hmacAccessor": false, "fileOptions": {"filePath": "stdout"}}]),
            ),
            &["spec.audit[].hmacAccessor", "must stay true with the Hardened profile"],
        ),
        (
            "unknown device type",
            json!({"audit": [{"type": "http", "name": "web"}]}),
            &["spec.audit[0].type", "Unsupported value"],
        ),
        (
            "name not a DNS label",
            json!({"audit": [file_device("File_Audit", "stdout")]}),
            &["spec.audit[].name", "must be a DNS label"],
        ),
        (
            "duplicate names",
            json!({"audit": [file_device("a", "stdout"), file_device("a", "/openbao/audit/b.log")]}),
            &["spec.audit[].name", "names must be unique"],
        ),
        (
            "two devices on one file",
            json!({"audit": [file_device("a", "/openbao/audit/x.log"), file_device("b", "/openbao/audit/x.log")]}),
            &["spec.audit[].fileOptions.filePath", "cannot write to the same file"],
        ),
        (
            "file path outside the audit volume",
            json!({"audit": [file_device("file", "/etc/bao/config/10-server.hcl")]}),
            &[
                "spec.audit[].fileOptions.filePath",
                "must be stdout or a file directly under /openbao/audit/",
            ],
        ),
        (
            "file path escaping the audit volume",
            json!({"audit": [file_device("file", "/openbao/audit/../data/raft.db")]}),
            &[
                "spec.audit[].fileOptions.filePath",
                "must be stdout or a file directly under",
            ],
        ),
        (
            "file path with a newline",
            json!({"audit": [file_device("file", "/openbao/audit/a\"\n}\nseal")]}),
            &["spec.audit[].fileOptions.filePath", "must be stdout"],
        ),
        (
            "file device without fileOptions",
            json!({"audit": [{"type": "file", "name": "file"}]}),
            &["spec.audit[0].fileOptions", "required for a file device"],
        ),
        (
            "file mode not octal",
            json!({"audit": [{"type": "file", "name": "file", "fileOptions": {"filePath": "stdout", "mode": "0999"}}]}),
            &["spec.audit[].fileOptions.mode", "4 octal digits"],
        ),
        (
            "socket device without socketOptions",
            json!({"audit": [{"type": "socket", "name": "sock"}]}),
            &["spec.audit[0].socketOptions", "required for a socket device"],
        ),
        (
            "socket tcp address without port",
            json!({"audit": [{"type": "socket", "name": "sock", "socketOptions": {"address": "siem.example.com"}}]}),
            &["spec.audit[].socketOptions.address", "host:port for tcp and udp"],
        ),
        (
            "socket device outside the cluster without an egress rule",
            json!({"audit": [{"type": "socket", "name": "sock", "socketOptions": {"address": "siem.example.com:6514", "socketType": "udp"}}]}),
            &["spec.network.egressRules", "socket audit device"],
        ),
        (
            "unix socket with a relative path",
            json!({"audit": [{"type": "socket", "name": "sock", "socketOptions": {"address": "run/audit.sock", "socketType": "unix"}}]}),
            &["spec.audit[].socketOptions.address", "absolute path for unix"],
        ),
        (
            "unknown socket type",
            json!({"audit": [{"type": "socket", "name": "sock", "socketOptions": {"address": "a:1", "socketType": "sctp"}}]}),
            &["spec.audit[0].socketOptions.socketType", "Unsupported value"],
        ),
        (
            "options of another type",
            json!({"audit": [{"type": "syslog", "name": "sys", "fileOptions": {"filePath": "stdout"}}]}),
            &["spec.audit[0].fileOptions", "only for a device of type file"],
        ),
        (
            "unknown syslog facility",
            json!({"audit": [{"type": "syslog", "name": "sys", "syslogOptions": {"facility": "LOCAL9"}}]}),
            &["spec.audit[].syslogOptions.facility", "must be a syslog facility"],
        ),
        (
            "syslog tag with a space",
            json!({"audit": [{"type": "syslog", "name": "sys", "syslogOptions": {"tag": "open bao"}}]}),
            &["spec.audit[].syslogOptions.tag", "1-32 letters"],
        ),
        (
            "unknown format",
            json!({"audit": [{"type": "file", "name": "file", "format": "xml", "fileOptions": {"filePath": "stdout"}}]}),
            &["spec.audit[0].format", "Unsupported value"],
        ),
        (
            "five devices",
            json!({"audit": (0..5).map(|i| file_device(&format!("f{i}"), "stdout")).collect::<Vec<_>>()}),
            &["spec.audit", "must have at most 4 items"],
        ),
        (
            "description too long",
            json!({"audit": [{"type": "file", "name": "file", "description": "x".repeat(257), "fileOptions": {"filePath": "stdout"}}]}),
            &["spec.audit[0].description", "may not be more than 256"],
        ),
        (
            "audit volume size not a quantity",
            json!({"audit": [good.clone()], "auditFileStorage": {"size": "lots"}}),
            &["spec.auditFileStorage.size", "must be a positive quantity"],
        ),
        (
            "telemetry retention not a duration",
            json!({"telemetry": {"prometheusRetentionTime": "1d"}}),
            &["spec.telemetry.prometheusRetentionTime", "must be a non-zero duration"],
        ),
        (
            "telemetry retention zero",
            json!({"telemetry": {"prometheusRetentionTime": "0s"}}),
            &["spec.telemetry.prometheusRetentionTime", "must be a non-zero duration"],
        ),
        (
            "service monitor without unauthenticated metrics",
            json!({"telemetry": {"unauthenticatedMetricsAccess": false, "serviceMonitor": {}}}),
            &[
                "spec.telemetry.serviceMonitor",
                "needs unauthenticatedMetricsAccess: true",
            ],
        ),
        (
            "scrape namespace not a namespace name",
            json!({"telemetry": {"scrapeNamespaces": ["Monitoring"]}}),
            &["spec.telemetry.scrapeNamespaces[0]", "should match"],
        ),
        (
            "scrape namespace too long",
            json!({"telemetry": {"scrapeNamespaces": ["m".repeat(64)]}}),
            &["spec.telemetry.scrapeNamespaces[0]", "may not be more than 63"],
        ),
        (
            "nine scrape namespaces",
            json!({"telemetry": {"scrapeNamespaces": (0..9).map(|i| format!("m{i}")).collect::<Vec<_>>()}}),
            &["spec.telemetry.scrapeNamespaces", "must have at most 8 items"],
        ),
        (
            "service monitor interval not a duration",
            json!({"telemetry": {"serviceMonitor": {"interval": "30"}}}),
            &["spec.telemetry.serviceMonitor.interval", "must be a non-zero duration"],
        ),
        (
            "service monitor interval zero",
            json!({"telemetry": {"serviceMonitor": {"interval": "0m"}}}),
            &["spec.telemetry.serviceMonitor.interval", "must be a non-zero duration"],
        ),
        (
            "service monitor interval units out of order",
            json!({"telemetry": {"serviceMonitor": {"interval": "30s1m"}}}),
            &["spec.telemetry.serviceMonitor.interval", "in h, m, s order"],
        ),
        (
            "service monitor interval empty",
            json!({"telemetry": {"serviceMonitor": {"interval": ""}}}),
            &["spec.telemetry.serviceMonitor.interval", "must be a non-zero duration"],
        ),
        (
            "service monitor timeout in days",
            json!({"telemetry": {"serviceMonitor": {"scrapeTimeout": "1d"}}}),
            &[
                "spec.telemetry.serviceMonitor.scrapeTimeout",
                "must be a non-zero duration",
            ],
        ),
        (
            "service monitor timeout longer than the interval",
            json!({"telemetry": {"serviceMonitor": {"interval": "15s", "scrapeTimeout": "1m"}}}),
            &[
                "spec.telemetry.serviceMonitor.scrapeTimeout",
                "must not be longer than interval",
            ],
        ),
        (
            "service monitor unknown field",
            json!({"telemetry": {"serviceMonitor": {"enabled": "yes"}}}),
            &["spec.telemetry.serviceMonitor.enabled"],
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, extra, expect)) in cases.iter().enumerate() {
        match rejection(&api, &cluster(&format!("bad-{i}"), extra.clone())?).await {
            Ok(message) => {
                if let Some(missing) = expect.iter().find(|e| !message.contains(**e)) {
                    failures.push(format!("{what}: {missing:?} not in {message:?}"));
                }
            }
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[tokio::test]
async fn valid_audit_and_telemetry_are_accepted_and_defaulted() -> Result<()> {
    let api = clusters_in_new_namespace("audit-valid").await?;
    let all_types = json!({
        "audit": [
            {"type": "file", "name": "file", "description": "to the audit volume",
             "fileOptions": {"filePath": "/openbao/audit/audit.log", "mode": "0640"}},
            {"type": "file", "name": "stdout", "elideListResponses": true, "format": "jsonx",
             "fileOptions": {"filePath": "stdout"}},
            {"type": "socket", "name": "siem", "socketOptions": {"address": "siem.example.com:6514"}},
            {"type": "syslog", "name": "syslog", "syslogOptions": {"facility": "LOCAL3", "tag": "openbao"}},
        ],
        // The SIEM is outside the cluster: the servers' policy must let them reach it.
        "network": {"egressRules": [{"to": [{"ipBlock": {"cidr": "203.0.113.9/32"}}], "ports": [{"port": 6514}]}]},
        "auditFileStorage": {"size": "2Gi", "storageClassName": "fast"},
        "telemetry": {"serviceMonitor": {}},
    });
    let stored = api.create(&PostParams::default(), &cluster("all", all_types)?).await?;
    let spec = &stored.data["spec"];
    ensure!(spec["audit"][0]["hmacAccessor"] == true, "{spec}");
    ensure!(spec["audit"][0]["logRaw"] == false, "{spec}");
    ensure!(spec["audit"][0]["format"] == "json", "{spec}");
    ensure!(spec["audit"][2]["socketOptions"]["socketType"] == "tcp", "{spec}");
    ensure!(
        spec["telemetry"]
            == json!({"prometheusRetentionTime": "24h", "disableHostname": true, "unauthenticatedMetricsAccess": true,
                      "serviceMonitor": {"enabled": true, "interval": "30s", "scrapeTimeout": "10s"}}),
        "{spec}"
    );
    let hardened = json!({"profile": "Hardened", "replicas": 3, "tls": {"mode": "External"},
        "unseal": transit_unseal(), "audit": [file_device("file", "stdout")]});
    api.create(&PostParams::default(), &cluster("hardened", hardened)?)
        .await
        .context("Hardened with one stdout device")?;

    // The audit volume is part of the StatefulSet's claim templates: it cannot come or go later.
    for patch in [
        json!({"spec": {"auditFileStorage": null}}),
        json!({"spec": {"auditFileStorage": {"size": "3Gi"}}}),
    ] {
        match api.patch("all", &PatchParams::default(), &Patch::Merge(&patch)).await {
            Err(kube::Error::Api(s)) if s.code == 422 => ensure!(
                s.message.contains("spec.auditFileStorage: is immutable"),
                "{}",
                s.message
            ),
            other => bail!("{patch} of cluster all: expected 422, got {other:?}"),
        }
    }
    match api
        .patch(
            "hardened",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"auditFileStorage": {"size": "1Gi"}}})),
        )
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 422 => ensure!(s.message.contains("is immutable"), "{}", s.message),
        other => bail!("adding auditFileStorage later: expected 422, got {other:?}"),
    }
    // Devices themselves may change (they only change the configuration).
    api.patch(
        "hardened",
        &PatchParams::default(),
        &Patch::Merge(
            &json!({"spec": {"audit": [file_device("file", "/openbao/audit/a.log"), file_device("out", "stdout")]}}),
        ),
    )
    .await
    .context("changing the devices")?;
    Ok(())
}
