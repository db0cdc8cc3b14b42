//! No user-written string can change OpenBao's configuration: every one reaches OpenBao byte
//! for byte, checked against real `bao` 2.7.2 and 2.6.2.
//!
//! A corpus of hostile strings (HCL1 interpolation `${`, `%{`, `$${`, unbalanced braces, quotes,
//! backslashes and escape look-alikes, comments, heredocs, every control character, NUL, the
//! reserved U+E123, astral unicode, HCL lines that would set server options, the pod-name
//! placeholder, a 64 KiB string, and a fixed sample of the `hcl_roundtrip.rs` strategies) goes
//! through every user string that reaches `zz-init.hcl`:
//! - `spec.selfInit.requests[].data`: as a value, as a key, nested in objects and lists;
//! - `spec.selfInit.requests[].path`: as the last path segment(s) of a KV v2 write (the schema's
//!   256 characters limit applies);
//! - the JWT issuer and the admin service account's name and namespace: one hostile value each
//!   in the server run (a cluster has one of each), and every corpus string the schema allows
//!   through `validate-config` and the HCL1 reader of `common/hcl1.rs`;
//! - request names and the demo username: their admission patterns allow only `[A-Za-z0-9_-]`
//!   and `[a-z0-9_.-]`, so they use HCL keywords and edge cases within those.
//!
//! One rendered config per version: `bao operator validate-config` must pass without warnings,
//! then one server self-initializes from it and every value is read back through the HTTP API.
//! What OpenBao itself does to paths (cleans empty and dot segments, refuses newlines, answers
//! 400 over HTTP to non-printable characters) is counted apart from what the config loses.

mod common;

use anyhow::{Context, Result, bail, ensure};
use common::hcl1::{hostile_string, json_value, read_string};
use openbao_api::OpenBaoClusterSpec;
use openbao_render::{Cluster, JwtTrust, OperatorIdentity, config, paths, selfinit};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use testkit::openbao::{
    BaoServer, BaoServerSpec, NodeAddr, TestJwtSigner, TestNodeConfig, TestTls, write_static_seal_key,
};

const NAMESPACE: &str = "injection";
const DEMO_USER: &str = "a.b_c-9";
const DEMO_PASSWORD: &str = "demo-password-for-the-injection-test";
/// The admission schema's limit for `spec.selfInit.requests[].path`.
const MAX_PATH_CHARS: usize = 256;
/// Keys that make OpenBao's self-init evaluate the object they are in (read a file, an env
/// var...) instead of passing it on: not a quoting matter, left out of the key positions.
const EVALUATED_KEYS: [&str; 2] = ["eval_source", "eval_type"];
/// Request names the admission pattern `^[A-Za-z_][A-Za-z0-9_-]*$` allows that could confuse
/// an HCL reader: keywords, block and attribute names, the longest name.
const REQUEST_NAMES: [&str; 14] = [
    "true",
    "false",
    "null",
    "if",
    "for",
    "in",
    "request",
    "initialize",
    "data",
    "path",
    "EOF",
    "_",
    "_-_-",
    "Aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_",
];

static ONE_SERVER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn hostile_strings_reach_openbao_2_7_2_unchanged() -> Result<()> {
    run("2.7.2").await
}

#[tokio::test]
async fn hostile_strings_reach_openbao_2_6_2_unchanged() -> Result<()> {
    run("2.6.2").await
}

/// The server run above carries one issuer and one service account; here every corpus string
/// the schema allows in them: each rendered `zz-init.hcl` passes `validate-config`, and its
/// `bound_issuer`/`bound_subject` read back (HCL1 rules, `common/hcl1.rs`) as written.
#[tokio::test]
async fn every_hostile_issuer_and_service_account_renders_a_valid_config() -> Result<()> {
    let _turn = ONE_SERVER_AT_A_TIME.lock().await;
    let bao = testkit::cache::bao_binary("2.7.2")?;
    let dir = tempfile::Builder::new().prefix("openbao-injection-").tempdir()?;
    let tls = TestTls::generate(&dir.path().join("tls"), NAMESPACE)?;
    let node = TestNodeConfig::new("node1", NodeAddr::allocate()?, &dir.path().join("data"), &tls);
    let mut files = Vec::new();
    let (mut tried, mut rejected) = (0, 0);
    for s in corpus() {
        tried += 1;
        // The schema: issuer `https://` without `?`, `#` or `/.well-known/`; names 1-253.
        let issuer = format!("https://{s}");
        if s.contains('?') || s.contains('#') || issuer.contains("/.well-known/") || s.chars().count() > 253 {
            rejected += 1;
            continue;
        }
        let name = if s.is_empty() { "x".to_string() } else { s.clone() };
        let spec: OpenBaoClusterSpec = serde_json::from_value(json!({
            "version": "2.7.2", "profile": "Development", "replicas": 1, "storage": {"size": "1Gi"},
            "selfInit": {"oidc": {"adminServiceAccount": {"namespace": s, "name": name}}},
        }))?;
        let cluster = Cluster {
            name: "openbao",
            namespace: NAMESPACE,
            uid: "injection-test-uid",
            spec: &spec,
        };
        let operator = OperatorIdentity {
            namespace: "openbao-operator-system".into(),
            service_account: "openbao-operator".into(),
        };
        let trust = JwtTrust {
            issuer: issuer.clone(),
            public_keys_pem: vec![],
        };
        let hcl = selfinit::init_hcl(&cluster, &operator, &trust);
        let read = |key: &str| -> Result<Vec<String>> {
            hcl.lines()
                .filter_map(|l| l.trim().strip_prefix(&format!("\"{key}\" = ")))
                .map(|v| read_string(v).map_err(anyhow::Error::msg))
                .collect()
        };
        ensure!(
            read("bound_issuer")? == [issuer.clone()],
            "issuer {issuer:?} changed:\n{hcl}"
        );
        let subject = format!("system:serviceaccount:{s}:{name}");
        ensure!(
            read("bound_subject")?.contains(&subject),
            "subject {subject:?} changed:\n{hcl}"
        );
        files.push((format!("zz-init-{:04}.hcl", files.len()), hcl));
    }
    let files: Vec<(&str, &str)> = files.iter().map(|(n, h)| (n.as_str(), h.as_str())).collect();
    let config_dir = node.write_to(&dir.path().join("config"), &files)?;
    validate_config(&bao, &config_dir)?;
    eprintln!(
        "INJECTION issuer and admin service account: tried {tried}; rejected by admission: {rejected}; \
         validated by bao 2.7.2 and read back: {}; lost or changed: 0",
        files.len()
    );
    Ok(())
}

/// The hostile strings: fixed ones, each again inside text, and a sample of the property test's.
fn corpus() -> Vec<String> {
    let mut fixed: Vec<String> = [
        "${",
        "${a}",
        "${a",
        "$${a}",
        "$$",
        "${${a}}",
        "${\"}",
        "${ \" }\"",
        "\"${\"",
        "%{",
        "%{ if true }x%{ endif }",
        "%%{a}",
        "$",
        "%",
        "$5",
        "{",
        "}",
        "{{",
        "}}",
        "}}}",
        "{{a}}",
        "{a}",
        "\"",
        "\"\"",
        "\\",
        "\\\\",
        "\\\"",
        "\\n",
        "\\u0024{a}",
        "\\x41",
        "\\101",
        "\\U0001F600",
        "\\q",
        "#",
        "# comment",
        "//",
        "// comment",
        "/*",
        "*/",
        "/* a */",
        "<<EOF",
        "<<EOF\nx\nEOF",
        "<<-EOF\n  x\n  EOF\n",
        "\n",
        "\r",
        "\r\n",
        "\n\n",
        "\t",
        " ",
        "",
        "\0",
        "a\0b",
        "\u{E123}",
        "\u{FEFF}",
        "\u{2028}\u{2029}",
        "\u{200B}",
        "é",
        "e\u{301}",
        "中文",
        "😀",
        "\u{10FFFF}",
        "\u{1F600}${x}",
        "\u{FFFD}",
        "true",
        "false",
        "null",
        "if",
        "for",
        "in",
        "EOF",
        "0x10",
        "1e3",
        "-1",
        "key = value",
        "ui = false",
        "}\nenable_response_header_hostname = true\nx = {",
        "\"\n}\nenable_response_header_hostname = true\n#",
        "${\"}\nenable_response_header_hostname = true\ninitialize \"x\" {\n",
        "\"}\nlistener \"tcp\" { address = \"0.0.0.0:1\" }\n",
        "initialize \"evil\" {",
        "request \"evil\" {",
        "data = {",
        "{\"a\": 1}",
        "[1, 2]",
        "{\"a\": {\"b\": [\"${c}\"]}}",
        "[\"${\", \"}\"]",
        "'",
        "`",
        "@",
        "@@POD_NAME@@",
        "@@POD_NAME@",
        "  retry_join {",
        "  }",
        "\"https://",
        "= \"openbao-0.",
        "s/x/y/g",
        "&",
        "../..",
        "a/../b",
        "./a",
        "a//b",
        "a/",
        "?x=1",
        "#frag",
        "%2F",
        "%00",
        "a b",
        "~",
        "*",
        "+",
        ";",
        "|",
        "eval_source",
        "eval_type",
        "\u{7f}",
        "\u{80}",
        "\u{85}",
        "\u{9f}",
        "\u{a0}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    fixed.extend((0u8..0x20).map(|b| char::from(b).to_string()));
    let mut all = fixed.clone();
    all.extend(fixed.iter().map(|s| format!("a{s}b")));
    all.push("${\"}\u{10000}\\\n".repeat(6554)); // 64 KiB
    let mut runner = TestRunner::deterministic();
    let strings = hostile_string(64);
    for _ in 0..40 {
        all.push(strings.new_tree(&mut runner).expect("sample").current());
    }
    all.sort();
    all.dedup();
    all
}

/// A fixed sample of the property test's JSON data, with two changes for what HCL1 and
/// OpenBao do to structure (not strings): numbers are kept small (self-init data passes through
/// float64: integers beyond 2^53 are not exact) and empty lists get an element (HCL1 decodes
/// `[]` as null).
fn json_sample() -> Vec<Value> {
    fn small_numbers(v: Value) -> Value {
        match v {
            Value::Number(n) => json!(n.as_i64().unwrap_or(0) % 1000),
            Value::Array(a) if a.is_empty() => json!([true]),
            Value::Array(a) => Value::Array(a.into_iter().map(small_numbers).collect()),
            Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, small_numbers(v))).collect()),
            v => v,
        }
    }
    let mut runner = TestRunner::deterministic();
    let data = json_value();
    (0..20)
        .map(|_| small_numbers(data.new_tree(&mut runner).expect("sample").current()))
        .collect()
}

/// KV v2 data for value `s`: as a value, a key, and nested in objects and lists.
fn value_data(s: &str) -> Value {
    let mut data = json!({"value": s, "list": [s, [s], {"k": s}], "nested": {"deeper": {"k": [s]}}});
    if !EVALUATED_KEYS.contains(&s) {
        data["keyed"] = json!({ s: "as a key" });
        data["nested"]["deeper"][s] = json!({ s: s });
    }
    data
}

/// Every byte but unreserved ones and `/` percent-encoded, so the path reaches OpenBao as is.
fn url_path(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

struct InjectionPlan {
    spec: OpenBaoClusterSpec,
    issuer: String,
    /// (path, data) written by one request each; read back at the path.
    values: Vec<(String, Value)>,
    /// (s, data) written to `secret/data/p/<s>`, with allow_failure: OpenBao refuses some.
    paths: Vec<(String, Value)>,
    too_long_paths: usize,
    normalized_paths: usize,
}

fn plan(version: &str) -> Result<InjectionPlan> {
    let corpus = corpus();
    let mut requests = vec![json!({
        "name": "kv", "operation": "update", "path": "sys/mounts/secret",
        "data": {"type": "kv", "options": {"version": "2"}}
    })];
    let mut names = REQUEST_NAMES.iter().map(|n| n.to_string());
    let mut values = Vec::new();
    let data_values = corpus
        .iter()
        .map(|s| value_data(s))
        .chain(json_sample().into_iter().map(|v| json!({ "value": v })));
    for (i, data) in data_values.enumerate() {
        let path = format!("secret/data/v/{i}");
        let name = names.next().unwrap_or_else(|| format!("v{i}"));
        requests.push(json!({"name": name, "operation": "update", "path": path, "data": {"data": data}}));
        values.push((path, data));
    }
    let (mut paths, mut too_long_paths, mut normalized_paths) = (Vec::new(), 0, 0);
    for (i, s) in corpus.iter().enumerate() {
        let path = format!("secret/data/p/{s}");
        if path.chars().count() > MAX_PATH_CHARS {
            too_long_paths += 1;
            continue;
        }
        // OpenBao cleans empty and dot segments, so such paths can name another path's secret.
        if s.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
            normalized_paths += 1;
            continue;
        }
        let data = json!({ "i": i });
        requests.push(json!({
            "name": format!("p{i}"), "operation": "update", "path": path,
            "data": {"data": data}, "allowFailure": true
        }));
        paths.push((s.clone(), data));
    }
    let hostile = "${a}\"}\n#x %{y} $${z} @@POD_NAME@@ \\ /* <<EOF \u{0}\u{E123} 😀";
    let spec: OpenBaoClusterSpec = serde_json::from_value(json!({
        "version": version, "profile": "Development", "replicas": 1, "storage": {"size": "1Gi"},
        "selfInit": {
            "oidc": {"adminServiceAccount": {"namespace": format!("ns {hostile}"), "name": format!("sa {hostile}")}},
            "demoUserpass": {"username": DEMO_USER, "passwordSecretRef": {"name": "demo"}},
            "requests": requests,
        },
    }))?;
    Ok(InjectionPlan {
        spec,
        issuer: format!("https://issuer.example/{hostile}"),
        values,
        paths,
        too_long_paths,
        normalized_paths,
    })
}

/// `bao operator validate-config`: success, and no warning (unknown keys are warnings).
fn validate_config(bao: &std::path::Path, dir: &std::path::Path) -> Result<()> {
    let out = std::process::Command::new(bao)
        .args(["operator", "validate-config", "-config"])
        .arg(dir)
        .output()
        .context("run bao operator validate-config")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lower = text.to_lowercase();
    ensure!(
        out.status.success()
            && text.contains("[ success ]")
            && !["warn", "unknown", "unused", "invalid", "failure", "error"]
                .iter()
                .any(|w| lower.contains(w)),
        "validate-config of {}:\n{text}",
        dir.display()
    );
    Ok(())
}

async fn run(version: &str) -> Result<()> {
    let _turn = ONE_SERVER_AT_A_TIME.lock().await;
    let bao = testkit::cache::bao_binary(version)?;
    let dir = tempfile::Builder::new().prefix("openbao-injection-").tempdir()?;
    let plan = plan(version)?;
    let cluster = Cluster {
        name: "openbao",
        namespace: NAMESPACE,
        uid: "injection-test-uid",
        spec: &plan.spec,
    };
    let signer = TestJwtSigner::new()?;
    let operator = OperatorIdentity {
        namespace: "openbao-operator-system".into(),
        service_account: "openbao-operator".into(),
    };
    let trust = JwtTrust {
        issuer: plan.issuer.clone(),
        public_keys_pem: vec![signer.public_key_pem()],
    };
    let init_hcl = selfinit::init_hcl(&cluster, &operator, &trust);

    let tls = TestTls::generate(&dir.path().join("tls"), NAMESPACE)?;
    let seal_key = write_static_seal_key(&dir.path().join("unseal/key"))?;
    let addr = NodeAddr::allocate()?;
    let node = TestNodeConfig::new("node1", addr, &dir.path().join("data"), &tls).static_seal(&seal_key);
    let config_dir = node.write_to(&dir.path().join("config"), &[(config::INIT_FILE, &init_hcl)])?;
    validate_config(&bao, &config_dir)?;

    let mut server = BaoServer::start(
        BaoServerSpec::new("node1", &bao, &config_dir, tls.client_config(0, &addr))
            .env(paths::DEMO_PASSWORD_ENV, DEMO_PASSWORD),
    )?;
    server.wait_active(Duration::from_secs(60)).await?;
    // Self-init ends by revoking the root token; it fails the server on any request error.
    server.wait_for_log("auth/token/root", Duration::from_secs(60)).await?;
    let login = server
        .client()
        .login_userpass(selfinit::USERPASS_MOUNT, DEMO_USER, DEMO_PASSWORD)
        .await
        .context("demo login (username from spec.selfInit.demoUserpass)")?;
    let admin = server.client().with_token(login.token);

    let mut lost = Vec::new();
    let tried = plan.values.len() + plan.paths.len() + 3;
    for (path, data) in &plan.values {
        let got = admin.read(path).await?.map(|r| r["data"]["data"].clone());
        if got.as_ref() != Some(data) {
            lost.push(format!("{path}: wrote {data}, read {got:?}"));
        }
    }
    // The listing shows every key self-init wrote, byte for byte, also those the HTTP API
    // cannot address. OpenBao refuses a path with a newline (`unsupported path`: its routes do
    // not match `\n`), through self-init as through the API: not something the config changes.
    let listed: BTreeSet<String> = admin.list("secret/metadata/p/").await?.into_iter().collect();
    let key = |s: &str| match s.split_once('/') {
        Some((first, _)) => format!("{first}/"),
        None => s.to_string(),
    };
    let newline_paths = plan.paths.iter().filter(|(s, _)| s.contains('\n')).count();
    let must: BTreeSet<String> = plan
        .paths
        .iter()
        .filter(|(s, _)| !s.contains('\n'))
        .map(|(s, _)| key(s))
        .collect();
    let may: BTreeSet<String> = plan.paths.iter().map(|(s, _)| key(s)).collect();
    for k in must.difference(&listed) {
        lost.push(format!("path key {k:?} not listed"));
    }
    for k in listed.difference(&may) {
        lost.push(format!("unexpected path key {k:?} listed"));
    }
    // OpenBao's HTTP API answers 400 to paths with non-printable characters.
    let mut unreadable = 0;
    for (s, data) in plan.paths.iter().filter(|(s, _)| !s.contains('\n')) {
        let path = format!("secret/data/p/{s}");
        match admin.read(&url_path(&path)).await {
            Ok(got) if got.as_ref().map(|r| &r["data"]["data"]) == Some(data) => {}
            Err(e) if e.status() == Some(400) => unreadable += 1,
            other => lost.push(format!("{path:?}: wrote {data}, read {other:?}")),
        }
    }
    let jwt_config = admin.read("auth/jwt-operator/config").await?.context("jwt config")?;
    if jwt_config["data"]["bound_issuer"] != plan.issuer.as_str() {
        lost.push(format!("issuer: {}", jwt_config["data"]["bound_issuer"]));
    }
    let admin_sa = plan
        .spec
        .self_init
        .oidc
        .admin_service_account
        .as_ref()
        .context("admin SA")?;
    let role = admin
        .read("auth/jwt-operator/role/admin")
        .await?
        .context("admin role")?;
    let subject = format!(
        "system:serviceaccount:{}:{}",
        admin_sa.namespace.as_deref().unwrap_or_default(),
        admin_sa.name
    );
    if role["data"]["bound_subject"] != subject.as_str() {
        lost.push(format!("admin service account: {}", role["data"]["bound_subject"]));
    }
    eprintln!(
        "INJECTION {version}: tried {tried} (values {}, paths {}, issuer, admin service account name and namespace); \
         rejected by admission: {} paths over {MAX_PATH_CHARS} characters; left out: {} paths with \
         empty or dot segments (OpenBao cleans them); not stored by OpenBao: {newline_paths} paths \
         with a newline; listed but not readable over HTTP: {unreadable} paths with non-printable \
         characters; lost or changed: {}",
        plan.values.len(),
        plan.paths.len(),
        plan.too_long_paths,
        plan.normalized_paths,
        lost.len()
    );
    server.stop().await;
    if !lost.is_empty() {
        bail!("{} values lost or changed:\n{}", lost.len(), lost.join("\n"));
    }
    Ok(())
}
