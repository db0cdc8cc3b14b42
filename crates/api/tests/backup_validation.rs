//! `spec.backup` of OpenBaoCluster and the OpenBaoRestore CRD on a real kube-apiserver: the
//! OpenAPI and CEL rules reject bad schedules, SSRF-shaped endpoints and misused Secrets with
//! messages that name the field; valid specs are accepted and defaulted by the server.

use anyhow::{Context, Result, bail, ensure};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use openbao_api::{OpenBaoCluster, OpenBaoRestore};
use serde_json::{Value, json};
use std::time::Instant;
use testkit::apiserver::{ApiServer, create_namespace, install_crds};

/// Untyped APIs of a fresh namespace, so specs the Rust types could never produce can be sent.
async fn apis(prefix: &str) -> Result<(Api<DynamicObject>, Api<DynamicObject>)> {
    let server = ApiServer::shared().await?;
    let client = server.client().await?;
    install_crds(&client, openbao_api::crd::all()).await?;
    let namespace = create_namespace(&client, prefix).await?;
    let clusters = Api::namespaced_with(client.clone(), &namespace, &ApiResource::erase::<OpenBaoCluster>(&()));
    let restores = Api::namespaced_with(client, &namespace, &ApiResource::erase::<OpenBaoRestore>(&()));
    Ok((clusters, restores))
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn valid_backup() -> Value {
    json!({
        "schedule": "0 3 * * *",
        "target": {
            "endpoint": "http://rustfs.storage.svc:9000",
            "bucket": "openbao-backups",
            "credentialsSecretRef": { "name": "backup-credentials" },
        },
    })
}

/// A cluster whose `spec.backup` is the valid one with `patch` merged in; a store outside the
/// cluster comes with the egress rule admission asks for.
fn cluster(name: &str, backup_patch: &Value) -> Result<DynamicObject> {
    let mut value = cluster_without_egress(name, backup_patch)?;
    let endpoint = value.data["spec"]["backup"]["target"]["endpoint"]
        .as_str()
        .unwrap_or_default();
    if openbao_api::in_cluster_url(endpoint).is_none() {
        value.data["spec"]["network"] =
            json!({"egressRules": [{"to": [{"ipBlock": {"cidr": "203.0.113.5/32"}}], "ports": [{"port": 443}]}]});
    }
    Ok(value)
}

fn cluster_without_egress(name: &str, backup_patch: &Value) -> Result<DynamicObject> {
    let mut backup = valid_backup();
    merge(&mut backup, backup_patch);
    let value = json!({
        "apiVersion": "openbao.org/v1alpha1",
        "kind": "OpenBaoCluster",
        "metadata": { "name": name },
        "spec": {
            "version": "2.7.2",
            "profile": "Development",
            "storage": { "size": "1Gi" },
            "backup": backup,
        },
    });
    serde_json::from_value(value).context("test object is a DynamicObject")
}

fn restore(name: &str, spec_patch: &Value) -> Result<DynamicObject> {
    let mut spec = json!({
        "cluster": "vault",
        "source": {
            "target": valid_backup()["target"].clone(),
            "key": "team-a/vault/2026-01-01T03-00-00Z-0123abcd.snap",
        },
    });
    merge(&mut spec, spec_patch);
    let value = json!({
        "apiVersion": "openbao.org/v1alpha1",
        "kind": "OpenBaoRestore",
        "metadata": { "name": name },
        "spec": spec,
    });
    serde_json::from_value(value).context("test object is a DynamicObject")
}

fn endpoint(url: &str) -> Value {
    json!({ "target": { "endpoint": url } })
}

struct Invalid {
    what: &'static str,
    patch: Value,
    /// Every one must appear in the server's message; the first is the offending field's path.
    expect: &'static [&'static str],
}

const ENDPOINT: &str = "spec.backup.target.endpoint";

fn invalid_backups() -> Vec<Invalid> {
    let case = |what, patch, expect| Invalid { what, patch, expect };
    vec![
        case(
            "missing schedule",
            json!({ "schedule": null }),
            &["spec.backup.schedule", "Required value"],
        ),
        case(
            "6-field schedule",
            json!({ "schedule": "0 0 3 * * *" }),
            &["spec.backup.schedule", "5-field cron"],
        ),
        case(
            "4-field schedule",
            json!({ "schedule": "0 3 * *" }),
            &["spec.backup.schedule", "5-field cron"],
        ),
        case(
            "schedule in words",
            json!({ "schedule": "every day at 3" }),
            &["spec.backup.schedule", "5-field cron"],
        ),
        case(
            "missing target",
            json!({ "target": null }),
            &["spec.backup.target", "Required value"],
        ),
        case(
            "endpoint without scheme",
            endpoint("rustfs.storage.svc:9000"),
            &[ENDPOINT, "http(s) URL"],
        ),
        case(
            "ftp endpoint",
            endpoint("ftp://s3.example.com"),
            &[ENDPOINT, "http(s) URL"],
        ),
        case(
            "plain http to the internet",
            endpoint("http://s3.example.com"),
            &[ENDPOINT, "only allowed for in-cluster"],
        ),
        case("localhost", endpoint("https://localhost:9000"), &[ENDPOINT, "loopback"]),
        case(
            "sub.localhost",
            endpoint("https://s3.localhost"),
            &[ENDPOINT, "loopback"],
        ),
        case("127.0.0.1", endpoint("https://127.0.0.1:9000"), &[ENDPOINT, "loopback"]),
        case("127.1.2.3", endpoint("https://127.1.2.3"), &[ENDPOINT, "loopback"]),
        case("::1", endpoint("https://[::1]:9000"), &[ENDPOINT, "loopback"]),
        case(
            "cloud metadata IP",
            endpoint("https://169.254.169.254/latest"),
            &[ENDPOINT, "link-local"],
        ),
        case(
            "IPv6 link-local",
            endpoint("https://[fe80::1]"),
            &[ENDPOINT, "link-local"],
        ),
        case("0.0.0.0", endpoint("https://0.0.0.0:9000"), &[ENDPOINT, "unspecified"]),
        case("integer host", endpoint("https://2130706433/"), &[ENDPOINT, "encoded"]),
        case("hex host", endpoint("https://0x7f000001"), &[ENDPOINT, "encoded"]),
        case(
            "octal dotted host",
            endpoint("https://0177.0.0.1"),
            &[ENDPOINT, "encoded"],
        ),
        case(
            "IPv4-mapped loopback",
            endpoint("https://[::ffff:127.0.0.1]"),
            &[ENDPOINT],
        ),
        case(
            "bucket with upper case",
            json!({ "target": { "bucket": "Backups" } }),
            &["spec.backup.target.bucket", "should match"],
        ),
        case(
            "credentials in the seal key Secret",
            json!({ "target": { "credentialsSecretRef": { "name": "vault-unseal-key" } } }),
            &["spec.backup.target.credentialsSecretRef.name", "operator's own Secrets"],
        ),
        case(
            "credentials in the TLS Secret",
            json!({ "target": { "credentialsSecretRef": { "name": "vault-tls-server" } } }),
            &["spec.backup.target.credentialsSecretRef.name", "operator's own Secrets"],
        ),
        case(
            "missing credentials",
            json!({ "target": { "credentialsSecretRef": null } }),
            &["spec.backup.target.credentialsSecretRef", "Required value"],
        ),
        case(
            "path prefix with ..",
            json!({ "target": { "pathPrefix": "a/../b" } }),
            &["spec.backup.target.pathPrefix", "must not start with /"],
        ),
        case(
            "retention max age in weeks",
            json!({ "retention": { "maxAge": "2w" } }),
            &["spec.backup.retention.maxAge", "must be a duration"],
        ),
        case(
            "retention max count 0",
            json!({ "retention": { "maxCount": 0 } }),
            &["spec.backup.retention.maxCount", "greater than or equal to 1"],
        ),
        case(
            "request token with a space",
            json!({ "requests": { "backup": "now please" } }),
            &["spec.backup.requests.backup", "must be a token"],
        ),
        case(
            "empty JWT role",
            json!({ "jwtAuthRole": "" }),
            &["spec.backup.jwtAuthRole", "at least 1 chars long"],
        ),
    ]
}

fn invalid_restores() -> Vec<Invalid> {
    let case = |what, patch, expect| Invalid { what, patch, expect };
    vec![
        case(
            "restore without cluster",
            json!({ "cluster": null }),
            &["spec.cluster", "Required value"],
        ),
        case(
            "restore without key",
            json!({ "source": { "key": null } }),
            &["spec.source.key", "Required value"],
        ),
        case(
            "restore key with ..",
            json!({ "source": { "key": "a/../b.snap" } }),
            &["spec.source.key", "without a leading /"],
        ),
        case(
            "restore from the metadata service",
            json!({ "source": { "target": { "endpoint": "https://169.254.169.254" } } }),
            &["spec.source.target.endpoint", "link-local"],
        ),
        case(
            "restore over plain http to the internet",
            json!({ "source": { "target": { "endpoint": "http://s3.example.com" } } }),
            &["spec.source.target.endpoint", "only allowed for in-cluster"],
        ),
    ]
}

/// The server's 422 message for `obj`, or an error if it was accepted or failed differently.
async fn rejection(api: &Api<DynamicObject>, obj: &DynamicObject) -> Result<String> {
    match api.create(&PostParams::default(), obj).await {
        Ok(created) => bail!("accepted: {}", serde_json::to_string(&created.data)?),
        Err(kube::Error::Api(status)) if status.code == 422 && status.reason == "Invalid" => Ok(status.message),
        Err(other) => bail!("expected 422 Invalid, got {other:?}"),
    }
}

async fn check_all(
    api: &Api<DynamicObject>,
    cases: &[Invalid],
    build: impl Fn(&str, &Value) -> Result<DynamicObject>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let obj = match build(&format!("invalid-{i}"), &case.patch) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{}: {e:#}", case.what));
                continue;
            }
        };
        match rejection(api, &obj).await {
            Ok(message) => {
                eprintln!("{}: {message}", case.what);
                let missing: Vec<_> = case.expect.iter().filter(|s| !message.contains(**s)).collect();
                if !missing.is_empty() {
                    failures.push(format!("{}: {missing:?} not in {message:?}", case.what));
                }
            }
            Err(err) => failures.push(format!("{}: {err:#}", case.what)),
        }
    }
    failures
}

#[tokio::test]
async fn invalid_backup_and_restore_specs_are_rejected_naming_the_field() -> Result<()> {
    let (clusters, restores) = apis("backup-invalid").await?;
    let started = Instant::now();
    let backups = invalid_backups();
    let restore_cases = invalid_restores();
    let mut failures = check_all(&clusters, &backups, cluster).await;
    failures.extend(check_all(&restores, &restore_cases, restore).await);
    ensure!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} invalid backup and {} invalid restore specs rejected in {:.2?}",
        backups.len(),
        restore_cases.len(),
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn valid_backup_specs_are_accepted_and_defaulted() -> Result<()> {
    let (clusters, _) = apis("backup-valid").await?;
    let accepted = [
        ("minimal", json!({})),
        (
            "everything",
            json!({
                "schedule": "*/15 1-5 1,15 JAN-DEC MON-FRI",
                "target": {
                    "endpoint": "https://s3.eu-west-1.amazonaws.com",
                    "bucket": "my.backups-1",
                    "region": "eu-west-1",
                    "pathPrefix": "openbao/prod",
                    "usePathStyle": false,
                },
                "retention": { "maxCount": 7, "maxAge": "1d12h" },
                "jwtAuthRole": "custom-backup",
                "requests": { "backup": "2026-01-01T10.00" },
            }),
        ),
        (
            "svc-cluster-local",
            endpoint("http://rustfs.storage.svc.cluster.local:9000"),
        ),
        ("dotted-ip", endpoint("https://10.1.2.3:9000")),
        ("ipv6", endpoint("https://[2001:db8::10]:9000")),
    ];
    for (name, patch) in &accepted {
        clusters
            .create(&PostParams::default(), &cluster(name, patch)?)
            .await
            .with_context(|| format!("valid backup spec {name} rejected"))?;
    }
    // A store outside the cluster without an egress rule the Jobs could reach it by.
    let outside = cluster_without_egress("outside", &endpoint("https://s3.eu-west-1.amazonaws.com"))?;
    match clusters.create(&PostParams::default(), &outside).await {
        Err(kube::Error::Api(s)) if s.code == 422 => ensure!(
            s.message
                .contains("spec.network.egressRules: required when spec.backup.target.endpoint"),
            "{}",
            s.message
        ),
        other => bail!("an outside store without egressRules: {other:?}"),
    }
    let stored = clusters.get("minimal").await?;
    let backup = &stored.data["spec"]["backup"];
    for (pointer, expected) in [
        ("/target/region", json!("us-east-1")),
        ("/target/usePathStyle", json!(true)),
        ("/jwtAuthRole", json!("openbao-operator-backup")),
        ("/requests", json!({})),
    ] {
        assert_eq!(
            backup.pointer(pointer),
            Some(&expected),
            "spec.backup{pointer} in {backup}"
        );
    }
    let typed: OpenBaoCluster = serde_json::from_value(serde_json::to_value(&stored)?)?;
    assert_eq!(typed.spec.backup.map(|b| b.schedule), Some("0 3 * * *".to_string()));
    Ok(())
}

#[tokio::test]
async fn a_restore_is_accepted_defaulted_and_immutable() -> Result<()> {
    let (_, restores) = apis("restore-valid").await?;
    restores
        .create(&PostParams::default(), &restore("once", &json!({}))?)
        .await
        .context("valid restore rejected")?;
    let stored = restores.get("once").await?;
    assert_eq!(stored.data["spec"]["jwtAuthRole"], "openbao-operator-restore");
    let typed: OpenBaoRestore = serde_json::from_value(serde_json::to_value(&stored)?)?;
    assert_eq!(typed.spec.cluster, "vault");

    let change = json!({ "spec": { "source": { "key": "team-a/vault/other.snap" } } });
    match restores
        .patch("once", &PatchParams::default(), &Patch::Merge(&change))
        .await
    {
        Ok(_) => bail!("changing a restore's spec was accepted"),
        Err(kube::Error::Api(status)) if status.code == 422 => {
            ensure!(status.message.contains("cannot be changed"), "{}", status.message)
        }
        Err(other) => bail!("expected 422, got {other:?}"),
    }
    Ok(())
}
