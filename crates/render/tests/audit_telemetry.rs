//! Audit devices and telemetry, as rendered, on a real OpenBao (2.6.2 and 2.7.2).
//!
//! One server runs the operator's rendered `10-server.hcl`, `30-audit.hcl` and
//! `40-telemetry.hcl` through the rendered entrypoint and initializes itself from the rendered
//! `zz-init.hcl`. Container paths become temp dirs (the audit volume `/openbao/audit` among them)
//! and cluster DNS names loopback addresses, as in `openbao_bootstrap.rs`.
//!
//! Proven per version: the rendered config directory passes `bao operator validate-config`; after
//! a userpass login and a KV write and read, the audit file holds all three requests, with the
//! secret and the password only HMAC'd (`hmac-sha256:`), never in clear; the metrics path answers
//! in Prometheus format without a token and reports the seal state and raft, while every other
//! path still needs one; every metric name the chart's OpenBao dashboard
//! (`charts/openbao-operator/dashboards/openbao.json`) queries is in the server's Prometheus
//! output (leader changes, raft commit time, request latency, seal status, autopilot health),
//! and every query of that dashboard answers with a number on a real Prometheus scraping the
//! server the way the ServiceMonitor does.

use anyhow::{Context, Result, bail, ensure};
use openbao_api::{AUDIT_DIR, OpenBaoClusterSpec};
use openbao_client::{BaoClient, ClientConfig};
use openbao_render::pki::{self, KeyedCert};
use openbao_render::{API_PORT, CLUSTER_PORT, Cluster, JwtTrust, OperatorIdentity, config, paths, selfinit};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;
use testkit::openbao::{BaoServer, BaoServerSpec, NodeAddr, poll_until, write_config_dir, write_static_seal_key};

const CLUSTER: &str = "audited";
const NAMESPACE: &str = "obaudit";
const POD: &str = "audited-0";
const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo-password-never-in-the-audit-log";
/// The secret written and read through OpenBao: it may appear in the audit log only HMAC'd.
const SECRET_VALUE: &str = "s3cret-value-never-in-the-audit-log";
const STARTUP: Duration = Duration::from_secs(90);

/// One server at a time: two cores are shared with other tests.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn audit_and_telemetry_on_openbao_2_6_2() -> Result<()> {
    audit_and_telemetry("2.6.2").await
}

#[tokio::test]
async fn audit_and_telemetry_on_openbao_2_7_2() -> Result<()> {
    audit_and_telemetry("2.7.2").await
}

fn spec(version: &str) -> Result<OpenBaoClusterSpec> {
    Ok(serde_json::from_value(json!({
        "version": version,
        "profile": "Development",
        "replicas": 1,
        "storage": {"size": "1Gi"},
        "selfInit": {
            "oidc": {"enabled": false},
            "demoUserpass": {"username": DEMO_USER, "passwordSecretRef": {"name": "demo-password"}},
            "requests": [
                {"name": "kv", "operation": "update", "path": "sys/mounts/secret", "data": {"type": "kv", "options": {"version": "2"}}}
            ]
        },
        "audit": [
            {"type": "file", "name": "file", "description": "the audit volume",
             "fileOptions": {"filePath": "/openbao/audit/audit.log", "mode": "0600"}}
        ],
        "telemetry": {"prometheusRetentionTime": "1h"}
    }))?)
}

/// Replaces `from` (which must occur) by `to` in `text`.
fn remap(text: &str, from: &str, to: &str) -> Result<String> {
    ensure!(text.contains(from), "no {from:?} to remap in:\n{text}");
    Ok(text.replace(from, to))
}

async fn audit_and_telemetry(version: &str) -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let bao = testkit::cache::bao_binary(version)?;
    let dir = tempfile::Builder::new().prefix("openbao-audit-").tempdir()?;
    let root = dir.path();
    let addr = NodeAddr::allocate()?;
    let spec = spec(version)?;
    let cluster = Cluster {
        name: CLUSTER,
        namespace: NAMESPACE,
        uid: "audit-test-uid",
        spec: &spec,
    };

    let ca = pki::issue_ca(CLUSTER, jiff::Timestamp::now())?;
    let server = issue_server_cert(&cluster, &ca)?;
    let tls_dir = write_config_dir(
        &root.join("tls"),
        &[
            ("ca.crt", &ca.cert_pem),
            ("tls.crt", &server.cert_pem),
            ("tls.key", &server.key_pem),
        ],
    )?;
    let unseal_dir = root.join("unseal");
    write_static_seal_key(&unseal_dir.join("key"))?;
    let data_dir = root.join("data");
    let audit_dir = root.join("audit");
    std::fs::create_dir_all(&data_dir)?;
    std::fs::create_dir_all(&audit_dir)?;
    let operator = OperatorIdentity {
        namespace: "openbao-operator-system".into(),
        service_account: "openbao-operator".into(),
    };
    let trust = JwtTrust {
        issuer: "https://kubernetes.default.svc.cluster.local".into(),
        public_keys_pem: vec![],
    };
    let init_dir = write_config_dir(
        &root.join("init"),
        &[(config::INIT_FILE, &selfinit::init_hcl(&cluster, &operator, &trust))],
    )?;

    // The rendered files, with container paths and cluster DNS mapped to this machine.
    let mut server_hcl = config::server_hcl(&cluster);
    server_hcl = remap(&server_hcl, paths::TLS_DIR, &tls_dir.display().to_string())?;
    server_hcl = remap(
        &server_hcl,
        &format!("file://{}/", paths::UNSEAL_DIR),
        &format!("file://{}/", unseal_dir.display()),
    )?;
    server_hcl = remap(
        &server_hcl,
        &format!("\"{}\"", paths::DATA_DIR),
        &format!("\"{}\"", data_dir.display()),
    )?;
    for port in [API_PORT, CLUSTER_PORT] {
        server_hcl = remap(
            &server_hcl,
            &format!("\"0.0.0.0:{port}\""),
            &format!("\"{}:{port}\"", addr.ip),
        )?;
    }
    let own_host = format!("{}.{CLUSTER}.{NAMESPACE}.svc", paths::POD_NAME_PLACEHOLDER);
    server_hcl = remap(
        &server_hcl,
        &format!("\"https://{own_host}:"),
        &format!("\"https://{}:", addr.ip),
    )?;
    let audit_hcl = config::audit_hcl(&spec).context("no audit file rendered")?;
    let audit_hcl = remap(
        &audit_hcl,
        &format!("\"{AUDIT_DIR}/"),
        &format!("\"{}/", audit_dir.display()),
    )?;
    let telemetry_hcl = config::telemetry_hcl(&spec).context("no telemetry file rendered")?;
    ensure!(
        server_hcl.contains("unauthenticated_metrics_access = true"),
        "the listener does not open the metrics path:\n{server_hcl}"
    );
    let entrypoint = config::entrypoint_sh();
    let templates = write_config_dir(
        &root.join("templates"),
        &[
            (config::SERVER_FILE, &server_hcl),
            (config::AUDIT_FILE, &audit_hcl),
            (config::TELEMETRY_FILE, &telemetry_hcl),
            (config::ENTRYPOINT_FILE, &entrypoint),
        ],
    )?;
    let rendered = root.join("rendered");
    let host = cluster.pod_host(0);
    let client_config = ClientConfig::new(format!("https://{host}:{API_PORT}"))
        .with_ca_pem(ca.cert_pem.as_bytes().to_vec())
        .with_resolve_to(IpAddr::V4(addr.ip))
        .with_timeout(Duration::from_secs(10));
    let script = templates.join(config::ENTRYPOINT_FILE);
    let bin_dir = bao.parent().context("bao binary has no parent dir")?;
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let node_spec = BaoServerSpec::new(POD, &bao, &templates, client_config.clone())
        .launcher(Path::new("/bin/sh"), &[script.to_str().context("entrypoint path")?])
        .env("POD_NAME", POD)
        .env("BAO_TEMPLATE_DIR", &templates.display().to_string())
        .env("BAO_INIT_DIR", &init_dir.display().to_string())
        .env("BAO_RENDERED_DIR", &rendered.display().to_string())
        .env("BAO_DATA_DIR", &data_dir.display().to_string())
        .env("BAO_TLS_CERT", &tls_dir.join("tls.crt").display().to_string())
        .env(paths::DEMO_PASSWORD_ENV, DEMO_PASSWORD)
        .env("PATH", &path);
    let mut node = BaoServer::start(node_spec)?;
    node.wait_active(STARTUP).await.with_context(|| node.log_tail(40))?;

    // 1. The directory the server runs (entrypoint output, self-init file included) validates.
    let validate = tokio::process::Command::new(&bao)
        .args(["operator", "validate-config", "-config"])
        .arg(&rendered)
        .kill_on_drop(true)
        .output()
        .await
        .context("run bao operator validate-config")?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
    ensure!(
        validate.status.success() && report.contains("success") && !report.contains("failure"),
        "validate-config on {}: {report}",
        rendered.display()
    );
    for file in [config::AUDIT_FILE, config::TELEMETRY_FILE, config::SERVER_FILE] {
        ensure!(rendered.join(file).exists(), "{file} missing from the rendered config");
    }

    // 2. A login, a secret written and read back.
    let login = node
        .client()
        .login_userpass(selfinit::USERPASS_MOUNT, DEMO_USER, DEMO_PASSWORD)
        .await
        .context("demo userpass login")?;
    let admin = node.client().with_token(login.token.clone());
    admin
        .write("secret/data/audit-test", &json!({"data": {"value": SECRET_VALUE}}))
        .await
        .context("write the secret")?;
    let read = admin
        .read("secret/data/audit-test")
        .await?
        .context("secret/data/audit-test missing")?;
    ensure!(read["data"]["data"]["value"] == SECRET_VALUE, "{read}");

    // 3. The audit file: every request, secrets HMAC'd only.
    let audit_log = audit_dir.join("audit.log");
    let login_path = format!("auth/{}/login/{DEMO_USER}", selfinit::USERPASS_MOUNT);
    let entries = poll_until("the audit file holds the read", Duration::from_secs(15), || async {
        let Ok(text) = std::fs::read_to_string(&audit_log) else {
            return Ok(None);
        };
        let entries: Vec<Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .context("an audit line is not JSON")?;
        let read_logged = entries.iter().any(|e| {
            e["type"] == "response"
                && e["request"]["path"] == "secret/data/audit-test"
                && e["request"]["operation"] == "read"
        });
        Ok(read_logged.then_some(entries))
    })
    .await?;
    let requested = |path: &str, operation: &str| {
        entries
            .iter()
            .any(|e| e["type"] == "request" && e["request"]["path"] == path && e["request"]["operation"] == operation)
    };
    ensure!(requested(&login_path, "update"), "login request not audited");
    // A write of a new key is a `create` (OpenBao tells create from update by existence).
    ensure!(
        requested("secret/data/audit-test", "create") || requested("secret/data/audit-test", "update"),
        "secret write not audited: {:?}",
        entries
            .iter()
            .map(|e| format!("{} {} {}", e["type"], e["request"]["operation"], e["request"]["path"]))
            .collect::<Vec<_>>()
    );
    ensure!(requested("secret/data/audit-test", "read"), "secret read not audited");
    let text = std::fs::read_to_string(&audit_log)?;
    for clear in [SECRET_VALUE, DEMO_PASSWORD, login.token.expose()] {
        ensure!(!text.contains(clear), "the audit file holds a secret in clear");
    }
    let write = entries
        .iter()
        .find(|e| {
            e["type"] == "request"
                && e["request"]["path"] == "secret/data/audit-test"
                && e["request"]["operation"] != "read"
        })
        .context("write request entry")?;
    let hmaced = write["request"]["data"]["data"]["value"].as_str().unwrap_or_default();
    ensure!(hmaced.starts_with("hmac-sha256:"), "written value not HMAC'd: {write}");
    let response = entries
        .iter()
        .find(|e| {
            e["type"] == "response"
                && e["request"]["path"] == "secret/data/audit-test"
                && e["request"]["operation"] == "read"
        })
        .context("read response entry")?;
    let hmaced = response["response"]["data"]["data"]["value"]
        .as_str()
        .unwrap_or_default();
    ensure!(hmaced.starts_with("hmac-sha256:"), "read value not HMAC'd: {response}");
    let accessor = write["auth"]["accessor"].as_str().unwrap_or_default();
    ensure!(
        accessor.starts_with("hmac-sha256:") && !text.contains(&login.accessor),
        "token accessor in clear (hmac_accessor): {accessor}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&audit_log)?.permissions());
    ensure!(mode & 0o777 == 0o600, "audit file mode {:o}", mode & 0o777);

    // 4. Metrics in Prometheus format without a token: seal state and raft.
    let metrics = curl(&ca, &host, &addr, "/v1/sys/metrics?format=prometheus").await?;
    ensure!(
        metrics.0 == 200,
        "metrics without a token: HTTP {}: {}",
        metrics.0,
        metrics.1
    );
    let names: Vec<&str> = metrics
        .1
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    // 2.6.2 and 2.7.2 both keep the `vault_` prefix of the metrics they inherited.
    let unsealed = metrics
        .1
        .lines()
        .find(|l| l.starts_with("vault_core_unsealed"))
        .with_context(|| format!("no vault_core_unsealed in:\n{}", metrics.1))?;
    ensure!(unsealed.ends_with(" 1"), "the server reports itself sealed: {unsealed}");
    ensure!(
        names.iter().any(|n| n.starts_with("vault_raft_")),
        "no raft metric in:\n{}",
        metrics.1
    );
    eprintln!(
        "METRICS {version}: {unsealed}; {} series, e.g. {:?}",
        names.len(),
        names.iter().filter(|n| n.contains("raft")).take(3).collect::<Vec<_>>()
    );
    // The listener opened the metrics path only: any other path still needs a token.
    let other = curl(&ca, &host, &addr, "/v1/sys/mounts").await?;
    ensure!(other.0 == 403, "sys/mounts without a token: HTTP {}", other.0);

    // 5. Every metric the chart's OpenBao dashboard queries is one this (raft) server exports.
    // Autopilot reports a moment after the server became active, hence the wait.
    let wanted = dashboard_metric_names()?;
    poll_until("every dashboard metric exported", Duration::from_secs(30), || async {
        let (_, body) = curl(&ca, &host, &addr, "/v1/sys/metrics?format=prometheus").await?;
        let exported: BTreeSet<&str> = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let missing: Vec<&String> = wanted.iter().filter(|n| !exported.contains(n.as_str())).collect();
        ensure!(missing.is_empty(), "{version} does not export {missing:?}");
        Ok(Some(()))
    })
    .await?;
    eprintln!(
        "DASHBOARD {version}: all {} metric names exported: {wanted:?}",
        wanted.len()
    );

    // 6. A real Prometheus scraping the server as the ServiceMonitor does (HTTPS verified with the
    // CA, the metrics path with format=prometheus, the target labelled like a Service endpoint):
    // every query of the dashboard runs and answers with a number.
    let answered = dashboard_on_prometheus(root, &ca, &host, &addr, &admin).await?;
    eprintln!("PROMETHEUS {version}: every dashboard query answered: {answered:?}");

    node.stop().await;
    Ok(())
}

/// The metric names the chart's OpenBao dashboard queries (panels and variables): every
/// `vault_*` name (OpenBao 2.6 and 2.7 keep the prefix). Each panel must query one, and the five
/// themes of the dashboard must be there.
fn dashboard_metric_names() -> Result<BTreeSet<String>> {
    let path = testkit::cache::repo_root().join("charts/openbao-operator/dashboards/openbao.json");
    let dashboard: Value =
        serde_json::from_slice(&std::fs::read(&path)?).with_context(|| path.display().to_string())?;
    let names_in = |expr: &str| -> Vec<String> {
        expr.match_indices("vault_")
            .map(|(at, _)| {
                expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            })
            .collect()
    };
    let mut all = BTreeSet::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        let mut in_panel = Vec::new();
        for target in panel["targets"].as_array().context("targets")? {
            in_panel.extend(names_in(target["expr"].as_str().context("expr")?));
        }
        ensure!(
            !in_panel.is_empty(),
            "panel {} queries no OpenBao metric",
            panel["title"]
        );
        all.extend(in_panel);
    }
    for variable in dashboard["templating"]["list"].as_array().context("variables")? {
        all.extend(names_in(variable["query"].as_str().unwrap_or_default()));
    }
    for theme in [
        "vault_raft_state_leader",
        "vault_raft_commitTime",
        "vault_core_handle_request",
        "vault_core_unsealed",
        "vault_autopilot_healthy",
    ] {
        ensure!(all.contains(theme), "the dashboard has no panel on {theme}");
    }
    Ok(all)
}

/// Starts Prometheus (Debian's build of the pinned version, `hack/fetch-prometheus.sh`) on a
/// loopback port, scraping the node every second, and runs every dashboard query on it until it
/// answers with a number; (panel title, series with a number) per query. Each try first writes
/// through `activity`: latency summaries (raft commit time, request handling) answer NaN once
/// nothing happened in their last few seconds, which on a loaded machine is the state a quiet
/// server reaches before its panel's turn comes.
async fn dashboard_on_prometheus(
    root: &Path,
    ca: &KeyedCert,
    host: &str,
    addr: &NodeAddr,
    activity: &BaoClient,
) -> Result<Vec<(String, usize)>> {
    let line = testkit::cache::run_hack("fetch-prometheus.sh", &[])?;
    let prometheus_root = line
        .split_once(' ')
        .map(|(_, r)| r)
        .context("fetch-prometheus.sh output")?;
    let binary = Path::new(prometheus_root).join("usr/bin/prometheus");
    let dir = root.join("prometheus");
    std::fs::create_dir_all(&dir)?;
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, &ca.cert_pem)?;
    let config = json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{
            "job_name": "openbao",
            "scheme": "https",
            "metrics_path": openbao_render::objects::METRICS_PATH,
            "params": {"format": ["prometheus"]},
            "tls_config": {"ca_file": ca_file, "server_name": host},
            "static_configs": [{
                "targets": [format!("{}:{API_PORT}", addr.ip)],
                "labels": {"namespace": NAMESPACE, "service": format!("{CLUSTER}-metrics"), "pod": POD},
            }],
        }],
    });
    // JSON is YAML.
    std::fs::write(dir.join("prometheus.yml"), serde_json::to_string(&config)?)?;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let listen = format!("127.0.0.1:{port}");
    let args = [
        format!("--config.file={}", dir.join("prometheus.yml").display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address={listen}"),
    ];
    let mut server =
        testkit::process::ManagedProcess::start("prometheus", &binary, &args, &[], &dir.join("prometheus.log"))?;
    let queries = dashboard_queries()?;
    let mut answered = Vec::new();
    let result = async {
        for (title, expr) in &queries {
            let numbers = poll_until(&format!("panel {title:?} answers"), Duration::from_secs(60), || async {
                activity
                    .write("secret/data/dashboard-activity", &json!({"data": {"panel": title}}))
                    .await?;
                let run = tokio::process::Command::new("curl")
                    .args(["-sS", "--max-time", "5", "-G"])
                    .arg(format!("http://{listen}/api/v1/query"))
                    .arg("--data-urlencode")
                    .arg(format!("query={expr}"))
                    .kill_on_drop(true)
                    .output()
                    .await?;
                let answer: Value = serde_json::from_slice(&run.stdout)
                    .with_context(|| format!("{expr}: {}", String::from_utf8_lossy(&run.stderr)))?;
                ensure!(answer["status"] == "success", "Prometheus refused {expr}: {answer}");
                let numbers = answer["data"]["result"]
                    .as_array()
                    .map(|series| {
                        series
                            .iter()
                            .filter(|s| {
                                s["value"][1]
                                    .as_str()
                                    .and_then(|v| v.parse::<f64>().ok())
                                    .is_some_and(f64::is_finite)
                            })
                            .count()
                    })
                    .unwrap_or(0);
                ensure!(numbers > 0, "{expr} -> {answer}");
                Ok(Some(numbers))
            })
            .await?;
            answered.push((title.clone(), numbers));
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let log = server.log_tail(20);
    server.stop();
    result.with_context(|| format!("Prometheus log:\n{log}"))?;
    Ok(answered)
}

/// (panel title, PromQL) of every target of the OpenBao dashboard, with Grafana's variables set
/// to this test's cluster and a 1-minute rate window.
fn dashboard_queries() -> Result<Vec<(String, String)>> {
    let path = testkit::cache::repo_root().join("charts/openbao-operator/dashboards/openbao.json");
    let dashboard: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        let title = panel["title"].as_str().context("title")?;
        for target in panel["targets"].as_array().context("targets")? {
            let expr = target["expr"]
                .as_str()
                .context("expr")?
                .replace("$__rate_interval", "1m")
                .replace("$namespace", NAMESPACE)
                .replace("$service", &format!("{CLUSTER}-metrics"));
            ensure!(!expr.contains('$'), "panel {title:?}: unknown variable in {expr}");
            out.push((title.to_string(), expr));
        }
    }
    Ok(out)
}

/// GET `path` on the node without a token, verifying its certificate; (status, body).
async fn curl(ca: &KeyedCert, host: &str, addr: &NodeAddr, path: &str) -> Result<(u16, String)> {
    let ca_file = tempfile::NamedTempFile::new()?;
    std::fs::write(ca_file.path(), &ca.cert_pem)?;
    let run = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca_file.path())
        .arg("--resolve")
        .arg(format!("{host}:{API_PORT}:{}", addr.ip))
        .arg(format!("https://{host}:{API_PORT}{path}"))
        .kill_on_drop(true)
        .output()
        .await
        .context("run curl")?;
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    let Some((body, code)) = out.rsplit_once('\n') else {
        bail!("curl {path}: {}", String::from_utf8_lossy(&run.stderr));
    };
    let code = code
        .trim()
        .parse()
        .with_context(|| format!("curl {path}: {}", String::from_utf8_lossy(&run.stderr)))?;
    Ok((code, body.to_string()))
}

fn issue_server_cert(cluster: &Cluster, ca: &KeyedCert) -> Result<KeyedCert> {
    let lifetime = pki::server_lifetime(pki::parse_duration(&cluster.spec.tls.rotation_period)?);
    Ok(pki::issue_server(
        ca,
        &pki::server_sans(cluster),
        jiff::Timestamp::now(),
        lifetime,
    )?)
}
