//! Secrets: the static seal key, the TLS material and the self-init requests.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;

use super::meta;
use crate::config::INIT_FILE;
use crate::pki::{CaState, KeyedCert, split_bundle};
use crate::{Cluster, JwtTrust, OperatorIdentity, selfinit};
use openbao_api::{DeletionPolicy, names};

pub(super) fn secret(
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    type_: &str,
    data: Vec<(&str, Vec<u8>)>,
) -> Secret {
    Secret {
        metadata,
        type_: Some(type_.to_string()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v)))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

/// `<c>-unseal-key`: the static seal key (32 random bytes the controller generates once).
/// Immutable: changing it would seal the cluster for good. Only `DeleteAll` lets it be
/// garbage-collected with the cluster; otherwise it outlives the cluster like the volumes do,
/// since retained data is unreadable without it.
pub fn unseal_key_secret(cluster: &Cluster, key: &[u8]) -> Secret {
    let mut metadata = meta(cluster, names::unseal_key_secret(cluster.name), "seal");
    if cluster.spec.deletion_policy != DeletionPolicy::DeleteAll {
        metadata.owner_references = None;
    }
    let mut s = secret(metadata, "Opaque", vec![("key", key.to_vec())]);
    s.immutable = Some(true);
    s
}

/// `<c>-config-init`: the self-init file, only while the cluster has not initialized.
pub fn init_secret(cluster: &Cluster, operator: &OperatorIdentity, jwt: &JwtTrust) -> Secret {
    let hcl = selfinit::init_hcl(cluster, operator, jwt);
    secret(
        meta(cluster, names::init_secret(cluster.name), "config"),
        "Opaque",
        vec![(INIT_FILE, hcl.into_bytes())],
    )
}

pub struct TlsSecrets {
    pub ca: Secret,
    pub server: Secret,
}

/// `<c>-tls-ca` (the CA keys and the trust bundle) and `<c>-tls-server` (what pods mount).
pub fn tls_secrets(cluster: &Cluster, ca: &CaState, server: &KeyedCert) -> TlsSecrets {
    let bundle = ca.bundle.concat();
    let mut ca_data = vec![
        ("ca.crt", bundle.clone().into_bytes()),
        ("ca.key", ca.signing.key_pem.clone().into_bytes()),
        ("signing.crt", ca.signing.cert_pem.clone().into_bytes()),
    ];
    if let Some(staged) = &ca.staged {
        ca_data.push(("staged.crt", staged.cert_pem.clone().into_bytes()));
        ca_data.push(("staged.key", staged.key_pem.clone().into_bytes()));
    }
    TlsSecrets {
        ca: secret(
            meta(cluster, names::tls_ca_secret(cluster.name), "tls"),
            "Opaque",
            ca_data,
        ),
        server: secret(
            meta(cluster, names::tls_server_secret(cluster.name), "tls"),
            "kubernetes.io/tls",
            vec![
                ("tls.crt", server.cert_pem.clone().into_bytes()),
                ("tls.key", server.key_pem.clone().into_bytes()),
                ("ca.crt", bundle.into_bytes()),
            ],
        ),
    }
}

/// Reads a CA state back from `<c>-tls-ca`; `None` when a key is missing or not UTF-8.
pub fn ca_state_from_secret(secret: &Secret) -> Option<CaState> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| data.get(k).and_then(|b| String::from_utf8(b.0.clone()).ok());
    let signing = KeyedCert {
        cert_pem: text("signing.crt")?,
        key_pem: text("ca.key")?,
    };
    let staged = match (text("staged.crt"), text("staged.key")) {
        (Some(cert_pem), Some(key_pem)) => Some(KeyedCert { cert_pem, key_pem }),
        _ => None,
    };
    Some(CaState {
        signing,
        staged,
        bundle: split_bundle(&text("ca.crt")?),
    })
}
