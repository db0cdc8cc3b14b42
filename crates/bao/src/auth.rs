//! Logins. The credentials (JWT, password) go only into the request body, never into logs or
//! error messages.

use crate::client::{Auth, Call};
use crate::{BaoClient, Result, Token};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// A successful login.
#[derive(Clone, Debug)]
pub struct Login {
    pub token: Token,
    pub accessor: String,
    /// Effective policies (token policies plus identity policies), e.g. `["default", "operator"]`.
    pub policies: Vec<String>,
    pub token_policies: Vec<String>,
    pub lease_duration: Duration,
    pub renewable: bool,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct LoginResponse {
    auth: Option<AuthBlock>,
}

#[derive(Deserialize)]
struct AuthBlock {
    client_token: String,
    #[serde(default)]
    accessor: String,
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    token_policies: Vec<String>,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

fn mount_path(mount: &str) -> &str {
    mount.trim_matches('/')
}

impl BaoClient {
    /// `PUT /v1/auth/<mount>/login` with `{role, jwt}` (JWT/OIDC auth method, e.g. a Kubernetes
    /// service account token).
    pub async fn login_jwt(&self, mount: &str, role: &str, jwt: &str) -> Result<Login> {
        let path = format!("auth/{}/login", mount_path(mount));
        self.login(Call::new(Method::PUT, &path), json!({ "role": role, "jwt": jwt }))
            .await
    }

    /// `PUT /v1/auth/<mount>/login/<username>` with `{password}`.
    pub async fn login_userpass(&self, mount: &str, username: &str, password: &str) -> Result<Login> {
        let path = format!("auth/{}/login/{username}", mount_path(mount));
        self.login(Call::new(Method::PUT, &path), json!({ "password": password }))
            .await
    }

    async fn login(&self, call: Call, body: serde_json::Value) -> Result<Login> {
        let resp: LoginResponse = self.fetch_login(&call, &body).await?;
        let auth = resp
            .auth
            .ok_or_else(|| call.decode_error(200, "login response has no `auth` block"))?;
        Ok(Login {
            token: Token::new(auth.client_token),
            accessor: auth.accessor,
            policies: auth.policies,
            token_policies: auth.token_policies,
            lease_duration: Duration::from_secs(auth.lease_duration),
            renewable: auth.renewable,
            metadata: auth.metadata.unwrap_or_default(),
        })
    }

    async fn fetch_login(&self, call: &Call, body: &serde_json::Value) -> Result<LoginResponse> {
        // Logins never send an existing token: a stale one would only add a failure mode.
        let resp = self.send_ok(call, Auth::None, |r| r.json(body)).await?;
        crate::client::decode(call, resp).await
    }
}
