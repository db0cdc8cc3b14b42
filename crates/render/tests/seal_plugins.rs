//! `spec.unseal.type: kmip` and `kms` (external KMS plugin seals) against real `bao`.
//!
//! Proven: the rendered `10-server.hcl` of a KMIP seal with every field passes
//! `bao operator validate-config` without a warning on 2.6.2 and 2.7.2; the rendered KMS plugin
//! seals (every wrapper; plugin from a command or an OCI image) pass it on 2.7.2; and a real
//! `bao server` 2.7.2 started on the rendered KMS configuration looks for exactly the plugin we
//! declared: without the binary it fails naming `<plugin_directory>/<command>`, with a binary
//! whose SHA-256 differs from `sha256sum` it refuses to run it, and without our plugin
//! declaration the same seal is an `unknown wrapper` (2.7 has no built-in cloud seals).
//!
//! `validate-config` only parses: it accepts unknown seal parameters and even an undeclared
//! plugin seal, which is why the server start is the proof that the declaration is used.

use anyhow::{Context, Result, ensure};
use openbao_api::OpenBaoClusterSpec;
use openbao_render::{API_PORT, CLUSTER_PORT, Cluster, config, paths};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use testkit::openbao::{NodeAddr, TestTls};

const PLUGIN: &str = "openbao-plugin-kms-awskms";

fn spec(version: &str, unseal: serde_json::Value) -> Result<OpenBaoClusterSpec> {
    Ok(serde_json::from_value(json!({
        "version": version, "profile": "Development", "replicas": 3, "storage": {"size": "1Gi"},
        "unseal": unseal,
    }))?)
}

fn server_hcl(spec: &OpenBaoClusterSpec) -> String {
    config::server_hcl(&Cluster {
        name: "sealed",
        namespace: "seal-test",
        uid: "u",
        spec,
    })
}

fn kmip_full() -> serde_json::Value {
    json!({"type": "kmip", "kmip": {
        "address": "kmip.hsm.svc:5696",
        "keyId": "c1afd090-e8ae-4d03-a81f-3938b7e2be02",
        "clientCertSecretRef": {"name": "kmip-client", "key": "tls.crt"},
        "clientKeySecretRef": {"name": "kmip-client", "key": "tls.key"},
        "caSecretRef": {"name": "kmip-ca", "key": "ca.crt"},
        "tlsServerName": "kmip.hsm.svc",
        "timeoutSeconds": 15,
        "encryptAlgorithm": "AES_GCM",
        "tls12Ciphers": ["TLS_RSA_WITH_AES_128_CBC_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
    }})
}

fn kms(wrapper: &str, plugin: serde_json::Value, settings: serde_json::Value) -> serde_json::Value {
    json!({"type": "kms", "kms": {"wrapper": wrapper, "plugin": plugin, "settings": settings,
        "credentialsEnv": [{"name": "AWS_ACCESS_KEY_ID", "secretKeyRef": {"name": "aws", "key": "id"}}],
        "credentialsFiles": [{"name": "credentials.json", "secretKeyRef": {"name": "gcp", "key": "sa.json"}}],
    }})
}

fn sha(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// Every KMS plugin seal the operator offers, as a user would write it.
fn kms_specs() -> Vec<serde_json::Value> {
    let command = |name: &str| json!({"command": name, "sha256sum": sha('a')});
    vec![
        kms(
            "awskms",
            command(PLUGIN),
            json!({"region": "eu-west-1", "kms_key_id": "alias/bao", "endpoint": "https://kms.eu-west-1.amazonaws.com"}),
        ),
        kms(
            "gcpckms",
            json!({"image": "ghcr.io/openbao/openbao-plugin-kms-gcpckms", "version": "v0.1.0",
            "binaryName": "openbao-plugin-kms-gcpckms", "sha256sum": sha('b')}),
            json!({"project": "p", "region": "global", "key_ring": "bao", "crypto_key": "unseal",
                "credentials": format!("{}/credentials.json", paths::SEAL_CREDENTIALS_DIR)}),
        ),
        kms(
            "azurekeyvault",
            command("openbao-plugin-kms-azurekeyvault"),
            json!({"tenant_id": "t", "vault_name": "v", "key_name": "k"}),
        ),
        kms(
            "ocikms",
            command("openbao-plugin-kms-ocikms"),
            json!({"key_id": "ocid1.key", "crypto_endpoint": "https://c", "management_endpoint": "https://m"}),
        ),
        kms(
            "pkcs11",
            command("openbao-plugin-kms-pkcs11"),
            json!({"lib": "/usr/lib/softhsm/libsofthsm2.so", "slot": "0", "key_label": "bao"}),
        ),
    ]
}

/// `bao operator validate-config`: success, and no warning (unknown keys are warnings). The
/// config directory holds only the file under test.
fn validate_config(bao: &Path, hcl: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join(config::SERVER_FILE), hcl)?;
    let out = std::process::Command::new(bao)
        .args(["operator", "validate-config", "-config"])
        .arg(dir.path())
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
        "validate-config:\n{text}\n---\n{hcl}"
    );
    Ok(())
}

fn kmip_validates(version: &str) -> Result<()> {
    let bao = testkit::cache::bao_binary(version)?;
    let hcl = server_hcl(&spec(version, kmip_full())?);
    let expected = format!(
        "seal \"kmip\" {{\n  endpoint = \"kmip.hsm.svc:5696\"\n  kms_key_id = \"c1afd090-e8ae-4d03-a81f-3938b7e2be02\"\n  \
         client_cert = \"{dir}/client.crt\"\n  client_key = \"{dir}/client.key\"\n  ca_cert = \"{dir}/ca.crt\"\n  \
         server_name = \"kmip.hsm.svc\"\n  timeout = 15\n  encrypt_alg = \"AES_GCM\"\n  \
         tls12_ciphers = \"TLS_RSA_WITH_AES_128_CBC_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\"\n}}\n",
        dir = paths::KMIP_DIR
    );
    ensure!(hcl.contains(&expected), "{hcl}");
    ensure!(!hcl.contains("static") && !hcl.contains(paths::UNSEAL_DIR), "{hcl}");
    validate_config(&bao, &hcl)
}

#[test]
fn kmip_seal_config_validates_2_6_2() -> Result<()> {
    kmip_validates("2.6.2")
}

#[test]
fn kmip_seal_config_validates_2_7_2() -> Result<()> {
    kmip_validates("2.7.2")
}

#[test]
fn kms_plugin_seal_configs_validate_2_7_2() -> Result<()> {
    let bao = testkit::cache::bao_binary("2.7.2")?;
    for unseal in kms_specs() {
        let wrapper = unseal["kms"]["wrapper"].as_str().context("wrapper")?.to_string();
        let hcl = server_hcl(&spec("2.7.2", unseal)?);
        ensure!(
            hcl.contains(&format!("plugin_directory = \"{}\"\n", paths::PLUGIN_DIR)),
            "{hcl}"
        );
        ensure!(hcl.contains(&format!("plugin \"kms\" \"{wrapper}\" {{\n")), "{hcl}");
        ensure!(hcl.contains(&format!("seal \"{wrapper}\" {{\n")), "{hcl}");
        ensure!(hcl.contains("  sha256sum = \""), "{hcl}");
        // Credentials are named by the pod (env, mounted files), never written here.
        ensure!(!hcl.contains("AWS_ACCESS_KEY_ID") && !hcl.contains("sa.json"), "{hcl}");
        validate_config(&bao, &hcl).with_context(|| wrapper.clone())?;
    }
    Ok(())
}

/// The rendered server config, runnable outside a pod: the container paths and listen
/// addresses remapped to `dir` and loopback ports (the seal stanzas are untouched).
fn runnable(hcl: &str, dir: &Path, addr: &NodeAddr) -> String {
    let own = "@@POD_NAME@@.sealed.seal-test.svc";
    let api = addr.api().to_string();
    let cluster = addr.cluster().to_string();
    hcl.replace(paths::TLS_DIR, &dir.join("tls").display().to_string())
        .replace(paths::PLUGIN_DIR, &dir.join("plugins").display().to_string())
        .replace(paths::DATA_DIR, &dir.join("data").display().to_string())
        .replace(&format!("0.0.0.0:{API_PORT}"), &api)
        .replace(&format!("0.0.0.0:{CLUSTER_PORT}"), &cluster)
        .replace(&format!("{own}:{API_PORT}"), &api)
        .replace(&format!("{own}:{CLUSTER_PORT}"), &cluster)
        .replace(paths::POD_NAME_PLACEHOLDER, "sealed-0")
}

/// Runs `bao server` on `hcl` until it exits (it must: the seal cannot be configured) and
/// returns its output. Killed on drop if it does not.
async fn server_output(bao: &Path, dir: &Path, hcl: &str) -> Result<String> {
    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    std::fs::write(config.join(config::SERVER_FILE), hcl)?;
    let run = tokio::process::Command::new(bao)
        .args(["server", "-config"])
        .arg(&config)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .context("bao server did not exit on a seal it cannot configure")??;
    ensure!(!out.status.success(), "bao server succeeded with a missing plugin");
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[tokio::test]
async fn kms_plugin_seal_server_looks_for_the_declared_plugin_2_7_2() -> Result<()> {
    let bao = testkit::cache::bao_binary("2.7.2")?;
    let dir = tempfile::tempdir()?;
    TestTls::generate(&dir.path().join("tls"), "seal-test")?;
    std::fs::create_dir_all(dir.path().join("plugins"))?;
    std::fs::create_dir_all(dir.path().join("data"))?;
    let addr = NodeAddr::allocate()?;
    let aws = spec("2.7.2", kms_specs().remove(0))?;
    let hcl = runnable(&server_hcl(&aws), dir.path(), &addr);

    // 1. No binary: the server looks for exactly the declared command in plugin_directory.
    let missing = dir.path().join("plugins").join(PLUGIN);
    let out = server_output(&bao, dir.path(), &hcl).await?;
    ensure!(
        out.contains("Error configuring seal \"awskms\"") && out.contains(&format!("lstat {}", missing.display())),
        "{out}"
    );

    // 2. A binary that is not the declared one: refused by its checksum, never run.
    std::fs::write(&missing, "#!/bin/sh\ntouch \"$0.ran\"\n")?;
    std::fs::set_permissions(&missing, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let out = server_output(&bao, dir.path(), &hcl).await?;
    ensure!(
        out.contains("Error configuring seal \"awskms\"") && out.contains("checksums did not match"),
        "{out}"
    );
    ensure!(
        !dir.path().join("plugins").join(format!("{PLUGIN}.ran")).exists(),
        "the wrong binary ran"
    );

    // 3. Without our declaration, 2.7 has no such seal at all.
    let undeclared = hcl
        .split("plugin \"kms\"")
        .next()
        .context("no plugin block")?
        .to_string()
        + &hcl[hcl.find("seal \"awskms\"").context("no seal block")?..];
    let out = server_output(&bao, dir.path(), &undeclared).await?;
    ensure!(out.contains("unknown wrapper: awskms"), "{out}\n---\n{undeclared}");
    Ok(())
}
