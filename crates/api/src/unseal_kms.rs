//! `spec.unseal.kms`: a seal provided by an external KMS plugin. Since OpenBao 2.7 the cloud
//! and HSM seals (`awskms`, `gcpckms`, `azurekeyvault`, `ocikms`, `pkcs11`) are no longer in
//! the server binary (2.7.2 answers `unknown wrapper` without the plugin); the configuration
//! declares the plugin (`plugin "kms" "<wrapper>"`, with its checksum) next to the
//! `seal "<wrapper>"` stanza. OpenBao 2.6 and older are refused.
//!
//! The Go operator spells this `unseal.kms`; its per-cloud blocks (`awskms`, `gcpCloudKMS`,
//! ...) with inline credentials become `wrapper` + `settings` (non-secret, checked) and
//! credentials from Secrets only (`credentialsEnv`, `credentialsFiles`) or workload identity
//! (nothing to configure here: the pods run as the cluster's service account).

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::unseal::SealSecretKeyRef;

/// Directory the credentials files are mounted in: `<dir>/<name>`, which `settings` may name
/// (e.g. gcpckms `credentials`).
pub const SEAL_CREDENTIALS_DIR: &str = "/etc/bao/seal-credentials";

/// The first OpenBao minor version whose KMS plugin seals the operator configures.
pub const KMS_PLUGIN_MIN_VERSION: (u64, u64) = (2, 7);

/// A seal from an external KMS plugin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.wrapper == oldSelf.wrapper").message("spec.unseal.kms.wrapper: cannot change on an existing cluster; its data is sealed by this KMS").field_path(".wrapper"),
)]
pub struct KmsSeal {
    /// Which seal: the name of the `seal` stanza and of the plugin declaration.
    pub wrapper: KmsWrapper,

    /// The plugin binary: a file in the image's plugin directory (`command`) or an OCI image
    /// OpenBao downloads at startup (`image`), with its SHA-256 either way.
    pub plugin: KmsPlugin,

    /// The wrapper's settings, as OpenBao documents them for `seal "<wrapper>"` (e.g. awskms
    /// `region`, `kms_key_id`; gcpckms `project`, `region`, `key_ring`, `crypto_key`). Only
    /// non-secret values: keys naming secrets (`secret_key`, `client_secret`, `pin`, ...) are
    /// refused; put those in `credentialsEnv` or `credentialsFiles`. Written to the
    /// configuration as strings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(
        validation = Rule::new(r"self.all(k, k.matches('^[a-z][a-z0-9_]{0,63}$'))").message("spec.unseal.kms.settings: keys must be OpenBao seal parameter names such as kms_key_id (lowercase, digits, _)"),
        validation = Rule::new(r"self.all(k, !k.matches('secret|password|passphrase|token|private') && !(k in ['pin', 'access_key', 'client_key']))").message("spec.unseal.kms.settings: secret values (keys such as secret_key, session_token, client_secret, pin, access_key) are not allowed here; give them through credentialsEnv or credentialsFiles"),
        validation = Rule::new(r"self.all(k, !(k in ['disabled', 'name', 'priority', 'plugin']))").message("spec.unseal.kms.settings: disabled, name, priority and plugin are set by the operator"),
    )]
    pub settings: BTreeMap<String, String>,

    /// Environment variables of the OpenBao servers taken from Secrets (e.g. `AWS_ACCESS_KEY_ID`,
    /// `AZURE_CLIENT_SECRET`, `BAO_HSM_PIN`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub credentials_env: Vec<SealCredentialEnv>,

    /// Files taken from Secrets, mounted read-only at `/etc/bao/seal-credentials/<name>`
    /// (e.g. a GCP service-account key named by `settings.credentials`, OCI API keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub credentials_files: Vec<SealCredentialFile>,
}

/// The seals OpenBao 2.7 ships as external KMS plugins (the Go operator's `unseal.type` names).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KmsWrapper {
    Awskms,
    Gcpckms,
    Azurekeyvault,
    Ocikms,
    Pkcs11,
}

impl KmsWrapper {
    pub fn as_str(self) -> &'static str {
        match self {
            KmsWrapper::Awskms => "awskms",
            KmsWrapper::Gcpckms => "gcpckms",
            KmsWrapper::Azurekeyvault => "azurekeyvault",
            KmsWrapper::Ocikms => "ocikms",
            KmsWrapper::Pkcs11 => "pkcs11",
        }
    }
}

/// OpenBao's declarative `plugin "kms" "<wrapper>"` stanza.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.command) != has(self.image)").message("spec.unseal.kms.plugin: set exactly one of command (a binary in the image's plugin directory) and image (an OCI image OpenBao downloads)"),
    validation = Rule::new("!has(self.image) || (has(self.version) && has(self.binaryName))").message("spec.unseal.kms.plugin.image: needs version (the image tag) and binaryName (the binary in the image)").field_path(".image"),
    validation = Rule::new("has(self.image) || !has(self.binaryName)").message("spec.unseal.kms.plugin.binaryName: only with image").field_path(".binaryName"),
)]
pub struct KmsPlugin {
    /// File name of the plugin binary in the plugin directory `/openbao/plugins` of the OpenBao
    /// image (build an image with it), e.g. `openbao-plugin-kms-awskms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"))]
    pub command: Option<String>,

    /// OCI image (registry and repository, without tag) holding the plugin binary, e.g.
    /// `ghcr.io/openbao/openbao-plugin-kms-awskms`; OpenBao downloads it when it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)+$"),
        length(max = 255)
    )]
    pub image: Option<String>,

    /// The plugin's version: the image tag (required with `image`), e.g. `v0.1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"))]
    pub version: Option<String>,

    /// Name of the binary inside the image (required with `image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"))]
    pub binary_name: Option<String>,

    /// SHA-256 of the plugin binary (64 lowercase hex digits): OpenBao refuses to run another.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256sum: String,
}

/// An environment variable of the servers from a Secret key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(r"!self.name.startsWith('LD_') && !(self.name in ['PATH', 'HOME', 'POD_NAME', 'SEAL_TRANSIT_TOKEN']) && (!self.name.startsWith('BAO_') || self.name == 'BAO_HSM_PIN') && !self.name.startsWith('VAULT_')").message("spec.unseal.kms.credentialsEnv[].name: LD_*, PATH, HOME, POD_NAME, SEAL_TRANSIT_TOKEN, VAULT_* and BAO_* (except BAO_HSM_PIN) are reserved").field_path(".name"),
)]
pub struct SealCredentialEnv {
    /// The variable's name, e.g. `AWS_ACCESS_KEY_ID`.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"))]
    pub name: String,
    pub secret_key_ref: SealSecretKeyRef,
}

/// A file from a Secret key, mounted at `/etc/bao/seal-credentials/<name>`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealCredentialFile {
    /// File name, e.g. `credentials.json`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"))]
    pub name: String,
    pub secret_key_ref: SealSecretKeyRef,
}

/// `major.minor` of an OpenBao version such as `2.7.2` or `2.8.0-beta1`.
pub fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Longest value of one `settings` entry (a key ID, an endpoint, a path).
pub const MAX_SETTING_CHARS: usize = 1024;

/// Why this KMS seal cannot run on OpenBao `version`, or `None`: the CRD's rules again. Pure.
pub fn kms_problem(k: &KmsSeal, version: &str) -> Option<String> {
    if major_minor(version).is_none_or(|v| v < KMS_PLUGIN_MIN_VERSION) {
        return Some(format!(
            "spec.unseal.type: kms needs OpenBao 2.7 or later (spec.version is {version}); on 2.6 use transit or kmip"
        ));
    }
    let p = &k.plugin;
    if p.command.is_some() == p.image.is_some() {
        return Some("spec.unseal.kms.plugin: set exactly one of command and image".into());
    }
    if p.image.is_some() && (p.version.is_none() || p.binary_name.is_none()) {
        return Some("spec.unseal.kms.plugin.image: needs version and binaryName".into());
    }
    if p.sha256sum.len() != 64 || !p.sha256sum.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Some("spec.unseal.kms.plugin.sha256sum: must be 64 lowercase hex digits".into());
    }
    for (key, value) in &k.settings {
        if let Some(why) = setting_key_problem(key) {
            return Some(format!("spec.unseal.kms.settings.{key}: {why}"));
        }
        if value.len() > MAX_SETTING_CHARS {
            return Some(format!(
                "spec.unseal.kms.settings.{key}: at most {MAX_SETTING_CHARS} characters"
            ));
        }
    }
    None
}

fn setting_key_problem(key: &str) -> Option<&'static str> {
    let shaped = key.len() <= 64
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !shaped {
        return Some("must be an OpenBao seal parameter name (lowercase, digits, _)");
    }
    let secret = ["secret", "password", "passphrase", "token", "private"]
        .iter()
        .any(|s| key.contains(s))
        || ["pin", "access_key", "client_key"].contains(&key);
    if secret {
        return Some("secret values are not allowed in settings; use credentialsEnv or credentialsFiles");
    }
    if ["disabled", "name", "priority", "plugin"].contains(&key) {
        return Some("set by the operator");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(extra: serde_json::Value) -> KmsSeal {
        let mut v = serde_json::json!({
            "wrapper": "awskms",
            "plugin": {"command": "openbao-plugin-kms-awskms", "sha256sum": "a".repeat(64)},
            "settings": {"region": "eu-west-1", "kms_key_id": "alias/bao"},
        });
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn versions_before_2_7_are_refused() {
        assert_eq!(kms_problem(&seal(serde_json::json!({})), "2.7.2"), None);
        assert_eq!(kms_problem(&seal(serde_json::json!({})), "2.10.0-beta1"), None);
        for old in ["2.6.2", "1.99.0", "garbage"] {
            let p = kms_problem(&seal(serde_json::json!({})), old).unwrap();
            assert!(p.starts_with("spec.unseal.type: kms needs OpenBao 2.7"), "{p}");
        }
    }

    #[test]
    fn plugin_and_settings_rules() {
        for (extra, field) in [
            (
                serde_json::json!({"plugin": {"sha256sum": "a".repeat(64)}}),
                "spec.unseal.kms.plugin:",
            ),
            (
                serde_json::json!({"plugin": {"image": "ghcr.io/o/p", "sha256sum": "a".repeat(64)}}),
                "spec.unseal.kms.plugin.image:",
            ),
            (
                serde_json::json!({"plugin": {"command": "p", "sha256sum": "A".repeat(64)}}),
                "spec.unseal.kms.plugin.sha256sum:",
            ),
            (
                serde_json::json!({"settings": {"secret_key": "x"}}),
                "spec.unseal.kms.settings.secret_key:",
            ),
            (
                serde_json::json!({"settings": {"pin": "1234"}}),
                "spec.unseal.kms.settings.pin:",
            ),
            (
                serde_json::json!({"settings": {"Region": "x"}}),
                "spec.unseal.kms.settings.Region:",
            ),
            (
                serde_json::json!({"settings": {"disabled": "true"}}),
                "spec.unseal.kms.settings.disabled:",
            ),
        ] {
            let p = kms_problem(&seal(extra.clone()), "2.7.2").unwrap_or_else(|| panic!("{extra} accepted"));
            assert!(p.starts_with(field), "{extra}: {p}");
        }
    }
}
