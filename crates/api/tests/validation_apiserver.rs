//! The OpenBaoCluster CRD on a real kube-apiserver (v1.34, etcd-backed): the OpenAPI and CEL
//! rules reject bad specs with messages that name the field, valid specs are accepted and
//! defaulted by the server, transition rules guard storage, and the served OpenAPI v3 document
//! carries the field descriptions `kubectl explain` shows.

use anyhow::{Context, Result, bail, ensure};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use openbao_api::OpenBaoCluster;
use openbao_api::request_data::{MAX_DEPTH, MAX_ENTRIES, MAX_STRING_CHARS};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use testkit::apiserver::{ApiServer, create_namespace, install_crds};

/// Installs the CRDs (idempotent, so every test may do it) and returns the OpenBaoCluster API of
/// a fresh namespace. Untyped, so that specs the Rust types could never produce can be sent.
async fn clusters_in_new_namespace(prefix: &str) -> Result<(kube::Client, Api<DynamicObject>)> {
    let server = ApiServer::shared().await?;
    let client = server.client().await?;
    install_crds(&client, openbao_api::crd::all()).await?;
    let namespace = create_namespace(&client, prefix).await?;
    let resource = ApiResource::erase::<OpenBaoCluster>(&());
    let api = Api::namespaced_with(client.clone(), &namespace, &resource);
    Ok((client, api))
}

fn base_object(name: &str) -> Value {
    json!({
        "apiVersion": "openbao.org/v1alpha1",
        "kind": "OpenBaoCluster",
        "metadata": { "name": name },
        "spec": {
            "version": "2.7.2",
            "profile": "Development",
            "storage": { "size": "1Gi" },
        },
    })
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` removes a key, anything else
/// (arrays included) replaces.
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

fn object(name: &str, patch: &Value) -> Result<DynamicObject> {
    let mut value = base_object(name);
    merge(&mut value, patch);
    serde_json::from_value(value).context("test object is a DynamicObject")
}

/// Everything a Hardened cluster needs to be valid, so each Hardened case breaks exactly one rule.
fn hardened(extra: Value) -> Value {
    let mut spec = json!({
        "profile": "Hardened",
        "replicas": 3,
        "tls": { "mode": "External" },
        "unseal": { "type": "transit", "transit": transit_seal() },
        "audit": [{ "type": "file", "name": "file", "fileOptions": { "filePath": "stdout" } }],
    });
    merge(&mut spec, &extra);
    json!({ "spec": spec })
}

fn spec(patch: Value) -> Value {
    json!({ "spec": patch })
}

/// A valid transit seal.
fn transit_seal() -> Value {
    json!({
        "address": "https://transit.vault.svc:8200",
        "keyName": "openbao-unseal",
        "tokenSecretRef": { "name": "transit-token", "key": "token" },
    })
}

/// `spec.unseal` of type transit with `patch` merged into the valid transit seal.
fn transit(patch: Value) -> Value {
    let mut seal = transit_seal();
    merge(&mut seal, &patch);
    spec(json!({ "unseal": { "type": "transit", "transit": seal } }))
}

fn requests(requests: Value) -> Value {
    spec(json!({ "selfInit": { "requests": requests } }))
}

/// One request whose body is `data`.
fn request_data(data: Value) -> Value {
    requests(json!([{ "name": "body", "operation": "update", "path": "sys/mounts/kv", "data": data }]))
}

/// `levels` objects nested under key `a`, `leaf` innermost (at path depth `levels`).
fn nested(levels: usize, leaf: Value) -> Value {
    (0..levels).fold(leaf, |inner, _| json!({ "a": inner }))
}

struct Invalid {
    what: &'static str,
    patch: Value,
    /// Every one must appear in the server's message; the first is the offending field's path.
    expect: &'static [&'static str],
}

fn invalid_cases() -> Vec<Invalid> {
    let case = |what, patch, expect| Invalid { what, patch, expect };
    let demo = json!({ "passwordSecretRef": { "name": "demo-password" } });
    let gateway_ref = json!({ "name": "edge" });
    let sans: Vec<String> = (0..33).map(|i| format!("san-{i}.example.com")).collect();
    vec![
        case(
            "missing profile",
            spec(json!({ "profile": null })),
            &["spec.profile", "Required value"],
        ),
        case(
            "unknown profile",
            spec(json!({ "profile": "Production" })),
            &["spec.profile", "Unsupported value"],
        ),
        case(
            "missing version",
            spec(json!({ "version": null })),
            &["spec.version", "Required value"],
        ),
        case(
            "version latest",
            spec(json!({ "version": "latest" })),
            &["spec.version", "must be a version"],
        ),
        case(
            "version without patch",
            spec(json!({ "version": "2.7" })),
            &["spec.version", "must be a version"],
        ),
        case(
            "version with v prefix",
            spec(json!({ "version": "v2.7.2" })),
            &["spec.version", "must be a version"],
        ),
        // The version is the image tag, and tags cannot contain `+`.
        case(
            "version with build metadata",
            spec(json!({ "version": "2.7.2+build.5" })),
            &["spec.version", "without +build metadata"],
        ),
        case(
            "pre-upgrade snapshot without a backup target",
            spec(json!({ "upgrade": { "preUpgradeSnapshot": true } })),
            &["spec.upgrade.preUpgradeSnapshot", "needs spec.backup"],
        ),
        case(
            "replicas 0",
            spec(json!({ "replicas": 0 })),
            &["spec.replicas", "greater than or equal to 1"],
        ),
        case(
            "replicas 10",
            spec(json!({ "replicas": 10 })),
            &["spec.replicas", "less than or equal to 9"],
        ),
        case(
            "Hardened with OperatorManaged TLS",
            hardened(json!({ "tls": { "mode": "OperatorManaged" } })),
            &["spec.tls.mode", "Hardened profile requires External TLS"],
        ),
        case(
            "Hardened with 1 replica",
            hardened(json!({ "replicas": 1 })),
            &["spec.replicas", "at least 3"],
        ),
        case(
            "Hardened with demo userpass",
            hardened(json!({ "selfInit": { "demoUserpass": demo } })),
            &["spec.selfInit.demoUserpass", "only allowed with profile Development"],
        ),
        case(
            "Hardened without unseal (static seal)",
            hardened(json!({ "unseal": null })),
            &[
                "spec.unseal.type",
                "Hardened profile forbids the static seal",
                "unseal.type: transit",
            ],
        ),
        case(
            "Hardened with an explicit static seal",
            hardened(json!({ "unseal": { "type": "static", "transit": null } })),
            &[
                "spec.unseal.type",
                "Hardened profile forbids the static seal",
                "unseal.type: transit",
            ],
        ),
        case(
            "unseal type transit without a transit block",
            spec(json!({ "unseal": { "type": "transit" } })),
            &["spec.unseal.transit", "required when spec.unseal.type is transit"],
        ),
        case(
            "transit block with the static seal",
            spec(json!({ "unseal": { "type": "static", "transit": transit_seal() } })),
            &["spec.unseal.transit", "only allowed when spec.unseal.type is transit"],
        ),
        case(
            "unknown unseal type",
            spec(json!({ "unseal": { "type": "awskms" } })),
            &["spec.unseal.type", "Unsupported value"],
        ),
        case(
            "plain http transit address",
            transit(json!({ "address": "http://transit.vault.svc:8200" })),
            &["spec.unseal.transit.address", "https URL"],
        ),
        case(
            "transit address with credentials",
            transit(json!({ "address": "https://root:secret@transit.vault.svc:8200" })),
            &["spec.unseal.transit.address", "no credentials"],
        ),
        case(
            "transit address with a query",
            transit(json!({ "address": "https://transit.vault.svc:8200/?token=x" })),
            &["spec.unseal.transit.address", "query or fragment"],
        ),
        case(
            "transit address with a fragment",
            transit(json!({ "address": "https://transit.vault.svc:8200/#x" })),
            &["spec.unseal.transit.address", "query or fragment"],
        ),
        case(
            "transit with both a token Secret and a login",
            transit(json!({ "login": { "mountPath": "kubernetes", "role": "sealer" } })),
            &["spec.unseal.transit", "exactly one of tokenSecretRef", "and login"],
        ),
        case(
            "transit with neither a token Secret nor a login",
            transit(json!({ "tokenSecretRef": null })),
            &["spec.unseal.transit", "exactly one of tokenSecretRef", "and login"],
        ),
        case(
            "transit login role that would make the CLI read a file",
            transit(json!({ "tokenSecretRef": null, "login": { "mountPath": "kubernetes", "role": "@/etc/passwd" } })),
            &["spec.unseal.transit.login.role"],
        ),
        case(
            "transit login mount path that climbs out of auth/",
            transit(json!({ "tokenSecretRef": null, "login": { "mountPath": "../sys/raw", "role": "sealer" } })),
            &["spec.unseal.transit.login.mountPath"],
        ),
        case(
            "transit login mount path with a space",
            transit(json!({ "tokenSecretRef": null, "login": { "mountPath": "jwt login", "role": "sealer" } })),
            &["spec.unseal.transit.login.mountPath"],
        ),
        case(
            "transit login without a role",
            transit(json!({ "tokenSecretRef": null, "login": { "mountPath": "kubernetes" } })),
            &["spec.unseal.transit.login.role", "Required"],
        ),
        case(
            "recovery key in the cluster's seal key Secret",
            spec(json!({ "unseal": { "recoveryKey": { "secretName": "valid-unseal-key" } } })),
            &[
                "spec.unseal.recoveryKey.secretName",
                "must not name one of the operator's own Secrets",
            ],
        ),
        case(
            "recovery key in a Secret with an invalid name",
            spec(json!({ "unseal": { "recoveryKey": { "secretName": "Break_Glass" } } })),
            &["spec.unseal.recoveryKey.secretName"],
        ),
        case(
            "transit address on loopback",
            transit(json!({ "address": "https://127.0.0.1:8200" })),
            &["spec.unseal.transit.address", "loopback"],
        ),
        case(
            "transit address at the metadata service",
            transit(json!({ "address": "https://169.254.169.254" })),
            &["spec.unseal.transit.address", "link-local"],
        ),
        case(
            "transit address integer-encoded",
            transit(json!({ "address": "https://2130706433:8200" })),
            &["spec.unseal.transit.address", "integer-"],
        ),
        case(
            "transit without keyName",
            transit(json!({ "keyName": null })),
            &["spec.unseal.transit.keyName", "Required value"],
        ),
        case(
            "transit keyName with a slash",
            transit(json!({ "keyName": "../sys" })),
            &["spec.unseal.transit.keyName", "should match"],
        ),
        case(
            "transit mountPath with ..",
            transit(json!({ "mountPath": "transit/../sys/" })),
            &["spec.unseal.transit.mountPath", "should match"],
        ),
        case(
            "transit token from the cluster's CA Secret",
            transit(json!({ "tokenSecretRef": { "name": "vault-tls-ca", "key": "ca.key" } })),
            &["spec.unseal.transit.tokenSecretRef.name", "operator's own Secrets"],
        ),
        case(
            "transit CA Secret without key",
            transit(json!({ "caSecretRef": { "name": "transit-ca" } })),
            &["spec.unseal.transit.caSecretRef.key", "Required value"],
        ),
        case(
            "transit tlsServerName with a space",
            transit(json!({ "tlsServerName": "transit vault" })),
            &["spec.unseal.transit.tlsServerName", "should match"],
        ),
        case(
            "unknown TLS mode",
            spec(json!({ "tls": { "mode": "Manual" } })),
            &["spec.tls.mode", "Unsupported value"],
        ),
        case(
            "self-init disabled",
            spec(json!({ "selfInit": { "enabled": false } })),
            &["spec.selfInit.enabled", "only self-initialization is supported"],
        ),
        case(
            "gateway enabled without hostname",
            spec(json!({ "gateway": { "gatewayRef": gateway_ref } })),
            &["spec.gateway.hostname", "required when the gateway is enabled"],
        ),
        case(
            "gateway hostname with upper case and underscore",
            spec(json!({ "gateway": { "gatewayRef": gateway_ref, "hostname": "Bao_Edge.example.com" } })),
            &["spec.gateway.hostname", "should match"],
        ),
        case(
            "gateway path without leading slash",
            spec(json!({ "gateway": { "gatewayRef": gateway_ref, "hostname": "bao.example.com", "path": "bao" } })),
            &["spec.gateway.path", "must start with /"],
        ),
        case(
            "rotation period in days",
            spec(json!({ "tls": { "rotationPeriod": "30d" } })),
            &["spec.tls.rotationPeriod", "must be a duration"],
        ),
        case(
            "rotation period without unit",
            spec(json!({ "tls": { "rotationPeriod": "720" } })),
            &["spec.tls.rotationPeriod", "must be a duration"],
        ),
        case(
            "cert-manager with operator-managed TLS",
            spec(json!({ "tls": { "certManager": { "issuerRef": { "name": "ca" } } } })),
            &["spec.tls.certManager", "only with tls.mode External"],
        ),
        case(
            "cert-manager issuer of another API kind",
            spec(
                json!({ "tls": { "mode": "External", "certManager": { "issuerRef": { "name": "ca", "kind": "StepIssuer" } } } }),
            ),
            &["spec.tls.certManager.issuerRef.kind", "Unsupported value"],
        ),
        case(
            "cert-manager issuer name with a slash",
            spec(json!({ "tls": { "mode": "External", "certManager": { "issuerRef": { "name": "other/ca" } } } })),
            &["spec.tls.certManager.issuerRef.name", "should match"],
        ),
        case(
            "33 extra SANs",
            spec(json!({ "tls": { "extraSANs": sans } })),
            &["spec.tls.extraSANs", "must have at most 32 items"],
        ),
        case(
            "negative storage size",
            spec(json!({ "storage": { "size": "-1Gi" } })),
            &["spec.storage.size", "positive quantity"],
        ),
        case(
            "storage size not a quantity",
            spec(json!({ "storage": { "size": "abc" } })),
            &["spec.storage.size", "positive quantity"],
        ),
        case(
            "storage size zero",
            spec(json!({ "storage": { "size": "0" } })),
            &["spec.storage.size", "positive quantity"],
        ),
        case(
            "missing storage",
            spec(json!({ "storage": null })),
            &["spec.storage", "Required value"],
        ),
        case(
            "request name starting with a digit",
            requests(json!([{ "name": "1bad", "operation": "update", "path": "sys/mounts/kv" }])),
            &["spec.selfInit.requests[0].name", "should match"],
        ),
        case(
            "request path with leading slash",
            requests(json!([{ "name": "kv", "operation": "update", "path": "/sys/mounts/kv" }])),
            &["spec.selfInit.requests[0].path", "without a leading slash"],
        ),
        case(
            "duplicate request names",
            requests(json!([
                { "name": "kv", "operation": "update", "path": "sys/mounts/kv" },
                { "name": "audit", "operation": "update", "path": "sys/audit/file" },
                { "name": "kv", "operation": "update", "path": "sys/mounts/kv2" },
            ])),
            &["spec.selfInit.requests", "names must be unique"],
        ),
        case(
            "unknown request operation",
            requests(json!([{ "name": "kv", "operation": "post", "path": "sys/mounts/kv" }])),
            &["spec.selfInit.requests[0].operation", "Unsupported value"],
        ),
        case(
            "unknown deletion policy",
            spec(json!({ "deletionPolicy": "Delete" })),
            &["spec.deletionPolicy", "Unsupported value"],
        ),
        case(
            "name of 41 characters",
            json!({ "metadata": { "name": "a".repeat(41) } }),
            &["metadata.name", "at most 40 characters"],
        ),
        case(
            "plain http OIDC issuer",
            spec(json!({ "selfInit": { "oidc": { "issuer": "http://kubernetes.default.svc" } } })),
            &["spec.selfInit.oidc.issuer", "https URL"],
        ),
        case(
            "OIDC issuer with discovery path",
            spec(json!({ "selfInit": { "oidc": {
                "issuer": "https://kubernetes.default.svc/.well-known/openid-configuration"
            } } })),
            &["spec.selfInit.oidc.issuer", "/.well-known/"],
        ),
        case(
            "unknown upgrade strategy",
            spec(json!({ "upgrade": { "strategy": "Recreate" } })),
            &["spec.upgrade.strategy", "Unsupported value"],
        ),
        case(
            "blue/green min sync duration in words",
            spec(json!({ "upgrade": { "blueGreen": { "minSyncDuration": "5 minutes" } } })),
            &["spec.upgrade.blueGreen.minSyncDuration", "must be a duration"],
        ),
        case(
            "blue/green max job failures 0",
            spec(json!({ "upgrade": { "blueGreen": { "maxJobFailures": 0 } } })),
            &["spec.upgrade.blueGreen.maxJobFailures", "between 1 and 100"],
        ),
        case(
            "upgrade request token with a space",
            spec(json!({ "upgrade": { "requests": { "rollback": "go back" } } })),
            &["spec.upgrade.requests.rollback", "must be a token"],
        ),
        case(
            "data nested 121 levels deep",
            request_data(nested(121, json!(1))),
            &["spec.selfInit.requests[0].data.a.a", "must have at most 0"],
        ),
        case(
            "data nested 200 levels deep",
            request_data(nested(200, json!(1))),
            &["spec.selfInit.requests[0].data.a.a", "must have at most 0"],
        ),
        case(
            "data one level deeper than the limit, inside a list",
            request_data(json!({ "a": nested(MAX_DEPTH - 1, json!([1])) })),
            &["spec.selfInit.requests[0].data.a.a.a.a.a.a: Too many: 1: must have at most 0 items"],
        ),
        case(
            "data string of 1 MiB",
            request_data(json!({ "pem": "x".repeat(1 << 20) })),
            &["spec.selfInit.requests[0].data.pem", "may not be more than 65536"],
        ),
        case(
            "nested data string one character too long",
            request_data(json!({ "list": [{ "pem": "x".repeat(MAX_STRING_CHARS + 1) }] })),
            &[
                "spec.selfInit.requests[0].data.list[0].pem",
                "may not be more than 65536",
            ],
        ),
        case(
            "data with too many entries",
            request_data(json!({ "list": vec![0; MAX_ENTRIES + 1] })),
            &["spec.selfInit.requests[0].data.list", "must have at most 1024 items"],
        ),
        case(
            "data that is not an object",
            request_data(json!(["a"])),
            &["spec.selfInit.requests[0].data", "must be of type object"],
        ),
        case(
            "plaintext (the Go operator's tls.enabled false)",
            spec(json!({ "tls": { "enabled": false } })),
            &[
                "spec.tls.enabled",
                "only true is supported: OpenBao is always served over TLS by this operator",
            ],
        ),
        case(
            "demo username with upper case",
            spec(json!({ "selfInit": { "demoUserpass": {
                "username": "Demo", "passwordSecretRef": { "name": "demo-password" }
            } } })),
            &["spec.selfInit.demoUserpass.username", "should match"],
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

#[tokio::test]
async fn invalid_specs_are_rejected_naming_the_field() -> Result<()> {
    let (_, api) = clusters_in_new_namespace("invalid").await?;
    let cases = invalid_cases();
    let started = Instant::now();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let obj = object(&format!("invalid-{i}"), &case.patch)?;
        match rejection(&api, &obj).await {
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
    ensure!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    ensure!(cases.len() >= 25, "only {} invalid cases", cases.len());
    eprintln!(
        "{} invalid specs rejected with field paths in {:.2?}",
        cases.len(),
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn minimal_spec_is_accepted_and_defaulted_by_the_server() -> Result<()> {
    let (_, api) = clusters_in_new_namespace("defaults").await?;
    api.create(&PostParams::default(), &object("minimal", &json!({}))?)
        .await
        .context("create minimal cluster")?;
    // Read back from storage, not the create response, so the defaults are really persisted.
    let stored = api.get("minimal").await?;
    let spec = &stored.data["spec"];
    for (pointer, expected) in [
        ("/replicas", json!(3)),
        ("/paused", json!(false)),
        ("/tls/mode", json!("OperatorManaged")),
        ("/tls/rotationPeriod", json!("720h")),
        ("/tls/enabled", json!(true)),
        ("/selfInit/enabled", json!(true)),
        ("/selfInit/oidc/enabled", json!(true)),
        ("/deletionPolicy", json!("Retain")),
        ("/workloadHardening/appArmorEnabled", json!(true)),
        ("/upgrade/strategy", json!("RollingUpdate")),
        ("/upgrade/preUpgradeSnapshot", json!(false)),
        ("/upgrade/blueGreen/autoPromote", json!(true)),
        ("/upgrade/blueGreen/maxJobFailures", json!(5)),
    ] {
        assert_eq!(spec.pointer(pointer), Some(&expected), "spec{pointer} in {spec}");
    }
    // The typed API reads what the server stored.
    let typed: OpenBaoCluster = serde_json::from_value(serde_json::to_value(&stored)?)?;
    assert_eq!(typed.spec.replicas, 3);

    // The token audience is the operator's choice, not the spec's: an old manifest that still
    // sets one (here an apiserver audience) is stored without it.
    let old =
        json!({ "spec": { "selfInit": { "oidc": { "audience": "https://kubernetes.default.svc.cluster.local" } } } });
    api.create(&PostParams::default(), &object("old-manifest", &old)?)
        .await
        .context("create a cluster with the removed spec.selfInit.oidc.audience")?;
    let stored = api.get("old-manifest").await?;
    assert_eq!(
        stored.data.pointer("/spec/selfInit/oidc/audience"),
        None,
        "spec.selfInit.oidc.audience pruned: {}",
        stored.data["spec"]
    );
    Ok(())
}

#[tokio::test]
async fn valid_specs_are_accepted() -> Result<()> {
    let (_, api) = clusters_in_new_namespace("valid").await?;
    let sans: Vec<String> = (0..32).map(|i| format!("san-{i}.example.com")).collect();
    let longest_name = "a".repeat(40);
    let accepted = [
        ("hardened", hardened(json!({}))),
        (
            "transit-login",
            transit(
                json!({ "tokenSecretRef": null, "login": { "mountPath": "tenants/a/jwt", "role": "team-a.sealer" } }),
            ),
        ),
        (
            "hardened-demo-off",
            hardened(json!({ "selfInit": { "demoUserpass": {
                "enabled": false, "passwordSecretRef": { "name": "demo-password" }
            } } })),
        ),
        (
            "everything",
            spec(json!({
                "version": "2.8.0-beta20250101",
                "replicas": 9,
                "tls": { "rotationPeriod": "1h30m", "extraSANs": sans },
                "selfInit": {
                    "oidc": { "issuer": "https://kubernetes.default.svc.cluster.local" },
                    "requests": [
                        { "name": "kv", "operation": "update", "path": "sys/mounts/kv", "data": { "type": "kv-v2" } },
                        { "name": "_audit-file", "operation": "update", "path": "sys/audit/file" },
                    ],
                    "demoUserpass": { "username": "dev.user", "passwordSecretRef": { "name": "demo-password" } },
                },
                "gateway": { "gatewayRef": { "name": "edge" }, "hostname": "*.bao.example.com", "path": "/bao" },
                "storage": { "size": "10Gi", "storageClassName": "fast" },
                "deletionPolicy": "DeleteAll",
                "backup": {
                    "schedule": "0 3 * * *",
                    "target": {
                        "endpoint": "https://s3.example.com",
                        "bucket": "openbao-backups",
                        "credentialsSecretRef": { "name": "backup-credentials" },
                    },
                },
                // The store is outside the cluster: the Jobs reach it through this rule.
                "network": { "egressRules": [{ "to": [{ "ipBlock": { "cidr": "203.0.113.20/32" } }], "ports": [{ "port": 443 }] }] },
                "upgrade": {
                    "strategy": "BlueGreen",
                    "preUpgradeSnapshot": true,
                    "blueGreen": { "autoPromote": false, "minSyncDuration": "1m30s", "maxJobFailures": 3 },
                    "requests": { "promote": "promote-1", "rollback": "2026-01-01T10.00", "retry": "r_1" },
                },
            })),
        ),
        (
            "transit-everything",
            transit(json!({
                "address": "https://transit.vault.svc.cluster.local:8200/",
                "mountPath": "tenants/a/transit/",
                "namespace": "team-a/",
                "tlsServerName": "transit.vault.svc",
                "caSecretRef": { "name": "transit-ca", "key": "ca.crt" },
            })),
        ),
        ("explicit-static", spec(json!({ "unseal": { "type": "static" } }))),
        (
            "gateway-disabled-without-hostname",
            spec(json!({ "gateway": { "enabled": false, "gatewayRef": { "name": "edge" } } })),
        ),
        (longest_name.as_str(), json!({})),
        // The Go operator's spelling of TLS, accepted as it is always true.
        ("go-tls-enabled", spec(json!({ "tls": { "enabled": true } }))),
        // Every bound of request bodies, at its limit (another corpus sends 64 KiB strings).
        (
            "data-at-the-limits",
            requests(json!([
                { "name": "deepest", "operation": "update", "path": "sys/x", "data": nested(MAX_DEPTH, json!("leaf")) },
                { "name": "deepest_empty", "operation": "update", "path": "sys/x",
                  "data": { "a": nested(MAX_DEPTH - 2, json!([{}, [], 1.5, true])) } },
                { "name": "string_64k", "operation": "update", "path": "sys/x", "data": { "pem": "x".repeat(MAX_STRING_CHARS) } },
                { "name": "entries", "operation": "update", "path": "sys/x", "data": { "list": vec![0; MAX_ENTRIES] } },
            ])),
        ),
    ];
    for (name, patch) in accepted {
        api.create(&PostParams::default(), &object(name, &patch)?)
            .await
            .with_context(|| format!("valid cluster {name} rejected"))?;
    }
    // Bodies at the limits are stored whole, and the typed API decodes them unchanged.
    let stored = api.get("data-at-the-limits").await?;
    let typed: OpenBaoCluster = serde_json::from_value(serde_json::to_value(&stored)?)?;
    let sent = &stored.data["spec"]["selfInit"]["requests"];
    for (i, request) in typed.spec.self_init.requests.iter().enumerate() {
        assert_eq!(
            request.data.as_ref(),
            Some(&sent[i]["data"]),
            "request {}",
            request.name
        );
    }
    assert_eq!(sent[0]["data"], nested(MAX_DEPTH, json!("leaf")));
    assert_eq!(typed.spec.check(), Ok(()));
    let stored = api.get("hardened").await?;
    assert_eq!(stored.data["spec"]["profile"], "Hardened");
    assert_eq!(stored.data["spec"]["tls"]["mode"], "External");
    // The server defaults the mount path.
    assert_eq!(stored.data["spec"]["unseal"]["transit"]["mountPath"], "transit/");
    Ok(())
}

/// The seal of an existing cluster stays what its data was sealed with, except a seal migration
/// between static and transit (the other moves: `seal_validation_apiserver.rs`).
#[tokio::test]
async fn the_seal_cannot_change_on_an_existing_cluster() -> Result<()> {
    let (_, api) = clusters_in_new_namespace("unseal-change").await?;
    api.create(&PostParams::default(), &object("static", &json!({}))?)
        .await?;
    api.create(&PostParams::default(), &object("transit", &transit(json!({})))?)
        .await?;

    let message = update_rejection(&api, "transit", &transit(json!({ "keyName": "another" }))).await?;
    assert_mentions(&message, &["spec.unseal.transit.keyName", "cannot change"]);
    let message = update_rejection(&api, "transit", &transit(json!({ "mountPath": "other/" }))).await?;
    assert_mentions(&message, &["spec.unseal.transit.mountPath", "cannot change"]);

    // Absent and `static` are the same seal; the transit server may move.
    api.patch(
        "static",
        &PatchParams::default(),
        &Patch::Merge(spec(json!({ "unseal": { "type": "static" } }))),
    )
    .await
    .context("absent -> static")?;
    api.patch(
        "transit",
        &PatchParams::default(),
        &Patch::Merge(transit(json!({ "address": "https://transit.other.svc:8200" }))),
    )
    .await
    .context("transit server moved")?;

    // The recovery key's Secret is named once.
    let recovery = |name: &str| json!({ "spec": { "unseal": { "recoveryKey": { "secretName": name } } } });
    api.patch(
        "transit",
        &PatchParams::default(),
        &Patch::Merge(recovery("break-glass")),
    )
    .await
    .context("recoveryKey set")?;
    let message = update_rejection(&api, "transit", &recovery("elsewhere")).await?;
    assert_mentions(
        &message,
        &["spec.unseal.recoveryKey.secretName", "cannot change once set"],
    );

    // A seal migration: static -> transit and transit -> static are admitted.
    let to_transit = json!({ "spec": { "unseal": { "type": "transit", "transit": transit_seal() } } });
    api.patch("static", &PatchParams::default(), &Patch::Merge(&to_transit))
        .await
        .context("static -> transit")?;
    api.patch(
        "transit",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "unseal": null } })),
    )
    .await
    .context("transit -> static (unseal absent)")?;
    Ok(())
}

async fn update_rejection(api: &Api<DynamicObject>, name: &str, patch: &Value) -> Result<String> {
    match api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => bail!("update {patch} of {name} accepted"),
        Err(kube::Error::Api(status)) if status.code == 422 => Ok(status.message),
        Err(other) => bail!("update {patch} of {name}: expected 422, got {other:?}"),
    }
}

fn assert_mentions(message: &str, expected: &[&str]) {
    for s in expected {
        assert!(message.contains(s), "{s:?} not in {message:?}");
    }
}

#[tokio::test]
async fn storage_can_grow_but_never_shrink() -> Result<()> {
    let (_, api) = clusters_in_new_namespace("storage-size").await?;
    let size = |size: &str| spec(json!({ "storage": { "size": size } }));
    api.create(&PostParams::default(), &object("grow", &size("2Gi"))?)
        .await?;

    let message = update_rejection(&api, "grow", &size("1Gi")).await?;
    assert_mentions(&message, &["spec.storage.size", "cannot shrink"]);
    // An unparseable size is reported once, by the size rule, not as a CEL runtime error of
    // the shrink rule.
    let message = update_rejection(&api, "grow", &size("abc")).await?;
    assert_mentions(&message, &["spec.storage.size", "must be a positive quantity"]);
    assert!(
        !message.contains("cannot shrink") && !message.contains("evaluating rule"),
        "{message}"
    );
    // Quantities compare by value, not by spelling.
    let message = update_rejection(&api, "grow", &size("2047Mi")).await?;
    assert_mentions(&message, &["spec.storage.size", "cannot shrink"]);
    api.patch("grow", &PatchParams::default(), &Patch::Merge(size("2048Mi")))
        .await
        .context("same size, other unit")?;
    api.patch("grow", &PatchParams::default(), &Patch::Merge(size("3Gi")))
        .await
        .context("grow to 3Gi")?;
    assert_eq!(api.get("grow").await?.data["spec"]["storage"]["size"], "3Gi");
    Ok(())
}

#[tokio::test]
async fn storage_class_is_immutable() -> Result<()> {
    let (_, api) = clusters_in_new_namespace("storage-class").await?;
    let class = |class: Value| spec(json!({ "storage": { "storageClassName": class } }));
    api.create(&PostParams::default(), &object("with-class", &class(json!("fast")))?)
        .await?;
    api.create(&PostParams::default(), &object("without-class", &json!({}))?)
        .await?;

    for (name, patch) in [
        ("with-class", class(json!("slow"))),
        ("with-class", class(Value::Null)),
        ("without-class", class(json!("fast"))),
    ] {
        let message = update_rejection(&api, name, &patch).await?;
        assert_mentions(&message, &["spec.storage.storageClassName", "is immutable"]);
    }
    // Other storage and spec changes still go through.
    let unrelated = spec(json!({ "replicas": 5, "storage": { "size": "2Gi" } }));
    for name in ["with-class", "without-class"] {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&unrelated))
            .await
            .with_context(|| format!("unrelated update of {name}"))?;
    }
    assert_eq!(
        api.get("with-class").await?.data["spec"]["storage"]["storageClassName"],
        "fast"
    );
    Ok(())
}

/// The schema `kubectl explain` reads: the group's OpenAPI v3 document as the server publishes
/// it. Publication trails the CRD becoming Established, so poll briefly.
#[tokio::test]
async fn served_openapi_describes_the_fields() -> Result<()> {
    let (client, _) = clusters_in_new_namespace("openapi").await?;
    let path = format!("/openapi/v3/apis/{}/{}", openbao_api::GROUP, openbao_api::VERSION);
    let deadline = Instant::now() + Duration::from_secs(30);
    let schema = loop {
        let request = http::Request::get(&path).body(Vec::new())?;
        let last = match client.request_text(request).await {
            Ok(text) => {
                let document: Value = serde_json::from_str(&text).with_context(|| format!("parse {path}"))?;
                match cluster_schema(&document) {
                    Some(schema) => break schema.clone(),
                    None => "document has no OpenBaoCluster schema yet".to_string(),
                }
            }
            Err(err) => format!("{err:#}"),
        };
        ensure!(Instant::now() < deadline, "GET {path}: {last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let spec = &schema["properties"]["spec"]["properties"];
    let description = |pointer: &str| spec.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
    assert!(
        description("/profile/description").contains("Security posture (required)"),
        "spec.profile description: {:?}",
        spec.get("profile")
    );
    assert!(
        description("/tls/properties/mode/description").contains("`OperatorManaged`: the operator issues"),
        "spec.tls.mode description: {:?}",
        spec.pointer("/tls/properties/mode")
    );
    assert_eq!(spec["profile"]["enum"], json!(["Development", "Hardened"]));
    Ok(())
}

fn cluster_schema(document: &Value) -> Option<&Value> {
    document["components"]["schemas"]
        .as_object()?
        .iter()
        .find(|(name, _)| name.ends_with(".OpenBaoCluster"))
        .map(|(_, schema)| schema)
}
