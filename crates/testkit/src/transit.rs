//! The transit OpenBao of the seal tests: one real `bao` node with its own static seal (so it
//! restarts unsealed), a transit key, and an orphan periodic token allowed exactly to encrypt and
//! decrypt with that key. Its root token is revoked: nothing but the seal token opens it.

use crate::openbao::{BaoServer, BaoServerSpec, NodeAddr, TestNodeConfig, TestTls, node_host, write_static_seal_key};
use anyhow::{Context, Result};
use openbao_client::{BaoClient, Token};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const LABEL: &str = "transit";
/// The namespace its certificate names, as if it ran in another Kubernetes namespace.
const NAMESPACE: &str = "vault";

pub struct TransitServer {
    pub server: BaoServer,
    pub tls: TestTls,
    pub addr: NodeAddr,
    /// The token the cluster's servers unseal with.
    pub token: String,
}

impl TransitServer {
    /// Starts it in `dir` with the transit key `key_name` (and the servers' `login` when given),
    /// waiting at most `startup` for each state.
    pub async fn start(
        bao: &Path,
        dir: &Path,
        key_name: &str,
        login: Option<&SealLogin>,
        startup: Duration,
    ) -> Result<Self> {
        let tls = TestTls::generate(&dir.join("tls"), NAMESPACE)?;
        let addr = NodeAddr::allocate()?;
        let key = write_static_seal_key(&dir.join("seal.key"))?;
        let config_dir = TestNodeConfig::new(LABEL, addr, &dir.join("data"), &tls)
            .static_seal(&key)
            .write_to(&dir.join("config"), &[])?;
        let spec = BaoServerSpec::new(LABEL, bao, &config_dir, tls.client_config_for(LABEL, &addr));
        let mut server = BaoServer::start(spec)?;
        server.wait_answering(startup).await?;
        let root = initialize(server.client()).await?;
        server.wait_active(startup).await?;
        let token = provision_then(&server.client().with_token(root), key_name, login).await?;
        Ok(Self {
            server,
            tls,
            addr,
            token,
        })
    }

    /// `spec.unseal.transit.address` of a cluster unsealed by it.
    pub fn address(&self) -> String {
        format!("https://{}:{}", self.addr.ip, self.addr.api_port)
    }

    /// `spec.unseal.transit.tlsServerName`: the DNS name its certificate carries.
    pub fn server_name(&self) -> String {
        node_host(NAMESPACE, LABEL)
    }
}

/// Initializes a fresh transit OpenBao (its own seal is static: one recovery share, which no
/// test needs) and returns its root token.
pub async fn initialize(client: &BaoClient) -> Result<Token> {
    let init = client
        .write("sys/init", &json!({"recovery_shares": 1, "recovery_threshold": 1}))
        .await?
        .context("sys/init returned nothing")?;
    Ok(Token::new(
        init["root_token"].as_str().context("no root token")?.to_string(),
    ))
}

/// What a transit server needs to accept the servers' own login (`spec.unseal.transit.login`),
/// as a platform team would set it up: a `jwt` auth method at `mount` trusting the keys that
/// sign the service-account tokens, and a role bound to one audience and one subject that
/// issues periodic tokens holding only the seal policy.
pub struct SealLogin {
    pub mount: String,
    pub role: String,
    pub public_keys_pem: Vec<String>,
    pub audience: String,
    pub subject: String,
}

/// [`provision`], then the login of `login` (before the root token is revoked).
pub async fn provision_with_login(admin: &BaoClient, key_name: &str, login: &SealLogin) -> Result<String> {
    provision_then(admin, key_name, Some(login)).await
}

/// With the root token (`admin`, its server active): the transit engine, the key `key_name`, a
/// policy allowing exactly encrypt and decrypt with it, and an orphan periodic token holding only
/// that policy, which is returned. The root token is revoked.
pub async fn provision(admin: &BaoClient, key_name: &str) -> Result<String> {
    provision_then(admin, key_name, None).await
}

async fn provision_then(admin: &BaoClient, key_name: &str, login: Option<&SealLogin>) -> Result<String> {
    admin.write("sys/mounts/transit", &json!({"type": "transit"})).await?;
    admin.write(&format!("transit/keys/{key_name}"), &json!({})).await?;
    let policy = format!(
        "path \"transit/encrypt/{key_name}\" {{ capabilities = [\"update\"] }}\n\
         path \"transit/decrypt/{key_name}\" {{ capabilities = [\"update\"] }}\n"
    );
    admin
        .write("sys/policies/acl/unseal", &json!({"policy": policy}))
        .await?;
    let created = admin
        .write(
            "auth/token/create-orphan",
            &json!({"policies": ["unseal"], "no_default_policy": true, "period": "1h"}),
        )
        .await?
        .context("token create returned nothing")?;
    let token = created["auth"]["client_token"]
        .as_str()
        .context("no client token")?
        .to_string();
    if let Some(login) = login {
        let mount = &login.mount;
        admin
            .write(&format!("sys/auth/{mount}"), &json!({"type": "jwt"}))
            .await?;
        admin
            .write(
                &format!("auth/{mount}/config"),
                &json!({"jwt_validation_pubkeys": login.public_keys_pem}),
            )
            .await?;
        admin
            .write(
                &format!("auth/{mount}/role/{}", login.role),
                &json!({
                    "role_type": "jwt",
                    "user_claim": "sub",
                    "bound_audiences": [login.audience],
                    "bound_subject": login.subject,
                    "token_policies": ["unseal"],
                    "token_no_default_policy": true,
                    "token_period": "1h",
                }),
            )
            .await?;
    }
    admin.write("auth/token/revoke-self", &json!({})).await?;
    Ok(token)
}
