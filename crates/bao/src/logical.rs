//! Generic access to any path, plus the token self-lookup and version history.

use crate::client::{Auth, Call, api_error, decode};
use crate::{BaoClient, Result};
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// `GET /v1/auth/token/lookup-self`, without the token id itself.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct TokenInfo {
    #[serde(default)]
    pub accessor: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub policies: Vec<String>,
    /// Seconds left; 0 for tokens that do not expire.
    #[serde(default)]
    pub ttl: u64,
    #[serde(default)]
    pub renewable: bool,
    #[serde(default)]
    pub expire_time: Option<String>,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub meta: Option<BTreeMap<String, String>>,
    /// `service` or `batch`. A batch token lives in no store, so a restore does not end it.
    #[serde(default, rename = "type")]
    pub token_type: String,
}

/// One entry of `sys/version-history`, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionEntry {
    pub version: String,
    pub previous_version: Option<String>,
    pub timestamp_installed: String,
    pub build_date: Option<String>,
}

#[derive(Deserialize)]
struct VersionInfo {
    #[serde(default)]
    previous_version: Option<String>,
    #[serde(default)]
    timestamp_installed: String,
    #[serde(default)]
    build_date: Option<String>,
}

#[derive(Deserialize)]
struct ListData<I> {
    #[serde(default)]
    keys: Vec<String>,
    // Spelled out: a plain `default` would make serde require `I: Default`.
    #[serde(default = "Option::default")]
    key_info: Option<BTreeMap<String, I>>,
}

#[derive(Deserialize)]
struct ListResponse<I> {
    data: ListData<I>,
}

impl BaoClient {
    /// `GET /v1/<path>`: the whole JSON response (`data`, `lease_duration`, …), or `None` on 404.
    /// For KV v2 the secret is at `["data"]["data"]`.
    pub async fn read(&self, path: &str) -> Result<Option<Value>> {
        self.optional(Call::new(Method::GET, path), None).await
    }

    /// `PUT /v1/<path>` with `body`: the JSON response, or `None` for 204.
    pub async fn write(&self, path: &str, body: &Value) -> Result<Option<Value>> {
        self.fetch(Call::new(Method::PUT, path), Auth::IfPresent, Some(body))
            .await
    }

    /// `DELETE /v1/<path>`.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.exec(Call::new(Method::DELETE, path), Auth::IfPresent, None).await
    }

    /// `LIST /v1/<path>` (as `GET ?list=true`): the keys, empty when the path has none (404).
    pub async fn list(&self, path: &str) -> Result<Vec<String>> {
        let call = Call::new(Method::GET, &format!("{}?list=true", path.trim_end_matches('/')));
        match self.optional(call, None).await? {
            None => Ok(Vec::new()),
            Some(body) => {
                let call = Call::new(Method::GET, path);
                let parsed: ListResponse<Value> =
                    serde_json::from_value(body).map_err(|e| call.decode_error(200, e))?;
                Ok(parsed.data.keys)
            }
        }
    }

    async fn optional(&self, call: Call, body: Option<&Value>) -> Result<Option<Value>> {
        let resp = self
            .send(&call, Auth::IfPresent, |r| match body {
                Some(b) => r.json(b),
                None => r,
            })
            .await?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(api_error(&call, resp).await);
        }
        decode(&call, resp).await
    }

    /// `GET /v1/auth/token/lookup-self`.
    pub async fn token_lookup_self(&self) -> Result<TokenInfo> {
        self.get_data("auth/token/lookup-self").await
    }

    /// `LIST /v1/sys/version-history`: every version this cluster has run, oldest first.
    pub async fn version_history(&self) -> Result<Vec<VersionEntry>> {
        let call = Call::new(Method::GET, "sys/version-history?list=true");
        let resp: ListResponse<VersionInfo> = self.fetch(call, Auth::Required, None).await?;
        let mut info = resp.data.key_info.unwrap_or_default();
        let mut entries: Vec<VersionEntry> = resp
            .data
            .keys
            .into_iter()
            .map(|version| {
                let i = info.remove(&version);
                VersionEntry {
                    previous_version: i
                        .as_ref()
                        .and_then(|i| i.previous_version.clone())
                        .filter(|s| !s.is_empty()),
                    timestamp_installed: i.as_ref().map(|i| i.timestamp_installed.clone()).unwrap_or_default(),
                    build_date: i.and_then(|i| i.build_date).filter(|s| !s.is_empty()),
                    version,
                }
            })
            .collect();
        // RFC 3339 timestamps in UTC sort lexically.
        entries.sort_by(|a, b| a.timestamp_installed.cmp(&b.timestamp_installed));
        Ok(entries)
    }
}
