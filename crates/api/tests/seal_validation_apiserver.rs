//! `spec.unseal.type: kmip` and `kms` (external KMS plugin seals) on a real kube-apiserver:
//! invalid seals are rejected with a message naming the field, every valid shape is accepted,
//! `kms` is refused for OpenBao before 2.7, and the KMS wrapper cannot change later.

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

fn object(name: &str, version: &str, unseal: Value) -> Result<DynamicObject> {
    serde_json::from_value(json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster",
        "metadata": {"name": name},
        // KMIP and KMS servers are outside the cluster: the seal needs an egress rule to them.
        "spec": {"version": version, "profile": "Development", "storage": {"size": "1Gi"}, "unseal": unseal,
                 "network": {"egressRules": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]}},
    }))
    .context("test object is a DynamicObject")
}

/// RFC 7386 merge: `null` removes a key.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn kmip(patch: Value) -> Value {
    let mut seal = json!({
        "address": "kmip.hsm.svc:5696", "keyId": "1",
        "clientCertSecretRef": {"name": "kmip-client", "key": "tls.crt"},
        "clientKeySecretRef": {"name": "kmip-client", "key": "tls.key"},
    });
    merge(&mut seal, &patch);
    json!({"type": "kmip", "kmip": seal})
}

fn sha() -> String {
    "0123456789abcdef".repeat(4)
}

fn kms(patch: Value) -> Value {
    let mut seal = json!({
        "wrapper": "awskms",
        "plugin": {"command": "openbao-plugin-kms-awskms", "sha256sum": sha()},
        "settings": {"region": "eu-west-1", "kms_key_id": "alias/bao"},
        "credentialsEnv": [{"name": "AWS_ACCESS_KEY_ID", "secretKeyRef": {"name": "aws", "key": "id"}}],
    });
    merge(&mut seal, &patch);
    json!({"type": "kms", "kms": seal})
}

async fn rejection(api: &Api<DynamicObject>, obj: &DynamicObject) -> Result<String> {
    match api.create(&PostParams::default(), obj).await {
        Ok(created) => bail!("accepted: {}", serde_json::to_string(&created.data)?),
        Err(kube::Error::Api(status)) if status.code == 422 && status.reason == "Invalid" => Ok(status.message),
        Err(other) => bail!("expected 422 Invalid, got {other:?}"),
    }
}

fn invalid_cases() -> Vec<(&'static str, &'static str, Value, &'static [&'static str])> {
    let v = "2.7.2";
    vec![
        (
            "kmip type without block",
            v,
            json!({"type": "kmip"}),
            &["spec.unseal.kmip", "required when spec.unseal.type is kmip"],
        ),
        (
            "kmip block with transit type",
            v,
            json!({"type": "transit", "kmip": kmip(json!({}))["kmip"]}),
            &["spec.unseal.kmip", "only allowed when spec.unseal.type is kmip"],
        ),
        (
            "kmip without port",
            v,
            kmip(json!({"address": "kmip.hsm.svc"})),
            &["spec.unseal.kmip.address", "host:port"],
        ),
        (
            "kmip with a scheme",
            v,
            kmip(json!({"address": "https://kmip.hsm.svc:5696"})),
            &["spec.unseal.kmip.address", "without a scheme"],
        ),
        (
            "kmip loopback",
            v,
            kmip(json!({"address": "127.0.0.1:5696"})),
            &["spec.unseal.kmip.address", "loopback"],
        ),
        (
            "kmip localhost",
            v,
            kmip(json!({"address": "localhost:5696"})),
            &["spec.unseal.kmip.address", "loopback"],
        ),
        (
            "kmip metadata service",
            v,
            kmip(json!({"address": "169.254.169.254:5696"})),
            &["spec.unseal.kmip.address", "link-local"],
        ),
        (
            "kmip unspecified",
            v,
            kmip(json!({"address": "0.0.0.0:5696"})),
            &["spec.unseal.kmip.address", "unspecified"],
        ),
        (
            "kmip without keyId",
            v,
            kmip(json!({"keyId": null})),
            &["spec.unseal.kmip.keyId", "Required value"],
        ),
        (
            "kmip keyId with a space",
            v,
            kmip(json!({"keyId": "a b"})),
            &["spec.unseal.kmip.keyId", "should match"],
        ),
        (
            "kmip without client certificate",
            v,
            kmip(json!({"clientCertSecretRef": null})),
            &["spec.unseal.kmip.clientCertSecretRef", "Required value"],
        ),
        (
            "kmip without client key",
            v,
            kmip(json!({"clientKeySecretRef": null})),
            &["spec.unseal.kmip.clientKeySecretRef", "Required value"],
        ),
        (
            "kmip client key from the operator's TLS Secret",
            v,
            kmip(json!({"clientKeySecretRef": {"name": "vault-tls-server"}})),
            &["spec.unseal.kmip.clientKeySecretRef.name", "operator's own Secrets"],
        ),
        (
            "kmip CA without key",
            v,
            kmip(json!({"caSecretRef": {"name": "kmip-ca"}})),
            &["spec.unseal.kmip.caSecretRef.key", "Required value"],
        ),
        (
            "kmip tlsServerName with a space",
            v,
            kmip(json!({"tlsServerName": "kmip hsm"})),
            &["spec.unseal.kmip.tlsServerName", "should match"],
        ),
        (
            "kmip timeout 0",
            v,
            kmip(json!({"timeoutSeconds": 0})),
            &[
                "spec.unseal.kmip.timeoutSeconds",
                "should be greater than or equal to 1",
            ],
        ),
        (
            "kmip timeout an hour",
            v,
            kmip(json!({"timeoutSeconds": 3600})),
            &["spec.unseal.kmip.timeoutSeconds", "should be less than or equal to 300"],
        ),
        (
            "kmip unknown algorithm",
            v,
            kmip(json!({"encryptAlgorithm": "DES"})),
            &["spec.unseal.kmip.encryptAlgorithm", "Unsupported value"],
        ),
        (
            "kmip cipher that is not a Go name",
            v,
            kmip(json!({"tls12Ciphers": ["RC4-MD5"]})),
            &["spec.unseal.kmip.tls12Ciphers", "should match"],
        ),
        (
            "kms type without block",
            v,
            json!({"type": "kms"}),
            &["spec.unseal.kms", "required when spec.unseal.type is kms"],
        ),
        (
            "kms on OpenBao 2.6",
            "2.6.2",
            kms(json!({})),
            &["spec.unseal.type", "needs OpenBao 2.7 or later"],
        ),
        (
            "kms unknown wrapper",
            v,
            kms(json!({"wrapper": "alicloudkms"})),
            &["spec.unseal.kms.wrapper", "Unsupported value"],
        ),
        (
            "kms without plugin",
            v,
            kms(json!({"plugin": null})),
            &["spec.unseal.kms.plugin", "Required value"],
        ),
        (
            "kms plugin without checksum",
            v,
            kms(json!({"plugin": {"sha256sum": null}})),
            &["spec.unseal.kms.plugin.sha256sum", "Required value"],
        ),
        (
            "kms plugin checksum not hex",
            v,
            kms(json!({"plugin": {"sha256sum": "z".repeat(64)}})),
            &["spec.unseal.kms.plugin.sha256sum", "should match"],
        ),
        (
            "kms plugin with command and image",
            v,
            kms(json!({"plugin": {"image": "ghcr.io/openbao/p", "version": "v1", "binaryName": "p"}})),
            &["spec.unseal.kms.plugin", "exactly one of command"],
        ),
        (
            "kms plugin with neither command nor image",
            v,
            kms(json!({"plugin": {"command": null}})),
            &["spec.unseal.kms.plugin", "exactly one of command"],
        ),
        (
            "kms plugin image without version",
            v,
            kms(json!({"plugin": {"command": null, "image": "ghcr.io/openbao/p", "binaryName": "p"}})),
            &["spec.unseal.kms.plugin.image", "needs version"],
        ),
        (
            "kms plugin command with a path",
            v,
            kms(json!({"plugin": {"command": "../../bin/sh"}})),
            &["spec.unseal.kms.plugin.command", "should match"],
        ),
        (
            "kms plugin image with a tag",
            v,
            kms(
                json!({"plugin": {"command": null, "image": "ghcr.io/openbao/p:v1", "version": "v1", "binaryName": "p"}}),
            ),
            &["spec.unseal.kms.plugin.image", "should match"],
        ),
        (
            "kms secret in settings",
            v,
            kms(json!({"settings": {"secret_key": "AKIA..."}})),
            &["spec.unseal.kms.settings", "secret values"],
        ),
        (
            "kms PIN in settings",
            v,
            kms(json!({"settings": {"pin": "1234"}})),
            &["spec.unseal.kms.settings", "secret values"],
        ),
        (
            "kms settings key with upper case",
            v,
            kms(json!({"settings": {"KmsKeyId": "x"}})),
            &["spec.unseal.kms.settings", "OpenBao seal parameter names"],
        ),
        (
            "kms settings disabled",
            v,
            kms(json!({"settings": {"disabled": "true"}})),
            &["spec.unseal.kms.settings", "set by the operator"],
        ),
        (
            "kms credentials env LD_PRELOAD",
            v,
            kms(json!({"credentialsEnv": [{"name": "LD_PRELOAD", "secretKeyRef": {"name": "x", "key": "y"}}]})),
            &["spec.unseal.kms.credentialsEnv[0].name", "reserved"],
        ),
        (
            "kms credentials env BAO_TOKEN",
            v,
            kms(json!({"credentialsEnv": [{"name": "BAO_TOKEN", "secretKeyRef": {"name": "x", "key": "y"}}]})),
            &["spec.unseal.kms.credentialsEnv[0].name", "reserved"],
        ),
        (
            "kms credentials env twice",
            v,
            kms(json!({"credentialsEnv": [
            {"name": "AWS_ACCESS_KEY_ID", "secretKeyRef": {"name": "x", "key": "a"}},
            {"name": "AWS_ACCESS_KEY_ID", "secretKeyRef": {"name": "x", "key": "b"}}]})),
            &["spec.unseal.kms.credentialsEnv[1]", "Duplicate value"],
        ),
        (
            "kms credentials from the root token Secret",
            v,
            kms(
                json!({"credentialsEnv": [{"name": "AWS_SECRET_ACCESS_KEY", "secretKeyRef": {"name": "vault-root-token", "key": "token"}}]}),
            ),
            &[
                "spec.unseal.kms.credentialsEnv[0].secretKeyRef.name",
                "operator's own Secrets",
            ],
        ),
        (
            "kms credentials file with a path",
            v,
            kms(
                json!({"credentialsFiles": [{"name": "../config/10-server.hcl", "secretKeyRef": {"name": "x", "key": "y"}}]}),
            ),
            &["spec.unseal.kms.credentialsFiles[0].name", "should match"],
        ),
    ]
}

#[tokio::test]
async fn invalid_kmip_and_kms_seals_are_rejected_naming_the_field() -> Result<()> {
    let api = clusters_in_new_namespace("seal-invalid").await?;
    let cases = invalid_cases();
    let mut failures = Vec::new();
    for (i, (what, version, unseal, expect)) in cases.iter().enumerate() {
        match rejection(&api, &object(&format!("invalid-{i}"), version, unseal.clone())?).await {
            Ok(message) => {
                eprintln!("{what}: {message}");
                let missing: Vec<_> = expect.iter().filter(|s| !message.contains(**s)).collect();
                if !missing.is_empty() {
                    failures.push(format!("{what}: {missing:?} not in {message:?}"));
                }
            }
            Err(err) => failures.push(format!("{what}: {err:#}")),
        }
    }
    ensure!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    ensure!(cases.len() >= 25, "only {} invalid cases", cases.len());
    eprintln!("{} invalid kmip/kms seals rejected", cases.len());
    Ok(())
}

#[tokio::test]
async fn valid_kmip_and_kms_seals_are_accepted_and_the_wrapper_is_fixed() -> Result<()> {
    let api = clusters_in_new_namespace("seal-valid").await?;
    let valid = [
        ("kmip-minimal", "2.6.2", kmip(json!({}))),
        (
            "kmip-full",
            "2.7.2",
            kmip(
                json!({"caSecretRef": {"name": "kmip-ca", "key": "ca.crt"}, "tlsServerName": "kmip.hsm.svc",
                "timeoutSeconds": 30, "encryptAlgorithm": "RSA_OAEP_SHA256", "address": "[2001:db8::1]:5696",
                "tls12Ciphers": ["TLS_RSA_WITH_AES_128_CBC_SHA256"]}),
            ),
        ),
        ("kms-command", "2.7.2", kms(json!({}))),
        (
            "kms-image",
            "2.8.0-beta1",
            kms(
                json!({"wrapper": "gcpckms", "plugin": {"command": null, "image": "ghcr.io/openbao/openbao-plugin-kms-gcpckms",
                "version": "v0.1.0", "binaryName": "openbao-plugin-kms-gcpckms"},
                "settings": {"region": null, "kms_key_id": null, "project": "p", "key_ring": "r", "crypto_key": "k",
                    "credentials": "/etc/bao/seal-credentials/sa.json"},
                "credentialsFiles": [{"name": "sa.json", "secretKeyRef": {"name": "gcp", "key": "key.json"}}]}),
            ),
        ),
        (
            "kms-pkcs11",
            "2.7.2",
            kms(
                json!({"wrapper": "pkcs11", "plugin": {"command": "openbao-plugin-kms-pkcs11"},
                "settings": {"region": null, "kms_key_id": null, "lib": "/usr/lib/softhsm/libsofthsm2.so", "key_label": "bao"},
                "credentialsEnv": [{"name": "BAO_HSM_PIN", "secretKeyRef": {"name": "hsm", "key": "pin"}}]}),
            ),
        ),
    ];
    for (name, version, unseal) in valid {
        api.create(&PostParams::default(), &object(name, version, unseal)?)
            .await
            .with_context(|| format!("{name} rejected"))?;
    }
    // The wrapper names the KMS whose key sealed the data: changing it is refused.
    let change = json!({"spec": {"unseal": {"kms": {"wrapper": "azurekeyvault"}}}});
    match api
        .patch("kms-command", &PatchParams::default(), &Patch::Merge(&change))
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("spec.unseal.kms.wrapper: cannot change") => {}
        other => bail!("wrapper change: {other:?}"),
    }
    // The plugin itself may change (a plugin upgrade is a new version and checksum).
    let upgrade = json!({"spec": {"unseal": {"kms": {"plugin": {"sha256sum": "f".repeat(64)}}}}});
    api.patch("kms-command", &PatchParams::default(), &Patch::Merge(&upgrade))
        .await
        .context("plugin checksum change")?;
    Ok(())
}

/// A seal migration is `static` <-> `transit`: those changes of `spec.unseal.type` are admitted
/// (the operator migrates the seal), every other one is refused naming the field.
#[tokio::test]
async fn the_seal_type_changes_only_between_static_and_transit() -> Result<()> {
    let api = clusters_in_new_namespace("seal-change").await?;
    let transit = json!({"type": "transit", "transit": {
        "address": "https://transit.vault.svc:8200", "keyName": "unseal",
        "tokenSecretRef": {"name": "transit-token", "key": "token"},
    }});
    let to_static = json!({"spec": {"unseal": {"type": "static", "transit": null}}});
    let to_transit = json!({"spec": {"unseal": transit}});
    let patch = |name: &'static str, body: Value| {
        let api = api.clone();
        async move { api.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await }
    };
    let refused = |result: Result<DynamicObject, kube::Error>, what: &str| -> Result<()> {
        match result {
            Err(kube::Error::Api(s))
                if s.code == 422
                    && s.message
                        .contains("spec.unseal.type: on an existing cluster only static <-> transit can change") =>
            {
                Ok(())
            }
            other => bail!("{what}: expected a refusal naming spec.unseal.type, got {other:?}"),
        }
    };
    api.create(
        &PostParams::default(),
        &object("moves", "2.7.2", json!({"type": "static"}))?,
    )
    .await?;
    patch("moves", to_transit.clone()).await.context("static -> transit")?;
    patch("moves", to_static.clone()).await.context("transit -> static")?;
    // `unseal` absent is the static seal: to transit and back.
    api.create(&PostParams::default(), &{
        let mut o = object("implicit", "2.7.2", json!({"type": "static"}))?;
        o.data["spec"].as_object_mut().context("spec")?.remove("unseal");
        o
    })
    .await?;
    patch("implicit", to_transit.clone())
        .await
        .context("(absent) -> transit")?;

    refused(
        patch("moves", json!({"spec": {"unseal": kmip(json!({}))}})).await,
        "static -> kmip",
    )?;
    refused(
        patch("moves", json!({"spec": {"unseal": kms(json!({}))}})).await,
        "static -> kms",
    )?;
    api.create(&PostParams::default(), &object("hsm", "2.7.2", kmip(json!({})))?)
        .await?;
    refused(
        patch(
            "hsm",
            json!({"spec": {"unseal": {"type": "transit", "kmip": null, "transit": transit["transit"]}}}),
        )
        .await,
        "kmip -> transit",
    )?;
    refused(
        patch("hsm", json!({"spec": {"unseal": {"type": "static", "kmip": null}}})).await,
        "kmip -> static",
    )?;
    api.create(&PostParams::default(), &object("cloud", "2.7.2", kms(json!({})))?)
        .await?;
    refused(
        patch(
            "cloud",
            json!({"spec": {"unseal": {"type": "kmip", "kms": null, "kmip": kmip(json!({}))["kmip"]}}}),
        )
        .await,
        "kms -> kmip",
    )?;
    Ok(())
}
