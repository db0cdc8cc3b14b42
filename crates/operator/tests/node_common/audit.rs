//! What a cluster's `stdout` file audit device wrote, read back from its pods' logs.

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The audit entries (request and response JSON lines) in the logs of every pod of a namespace,
/// and the logs' whole text (to check what must not be in it).
pub struct AuditTrail {
    pub entries: Vec<Value>,
    pub text: String,
}

impl AuditTrail {
    /// Whether a request to `path` is audited.
    pub fn requested(&self, path: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e["type"] == "request" && e["request"]["path"] == path)
    }

    /// The value of the KV v2 `field` in every audited read response of `path` that returned it.
    pub fn read_values(&self, path: &str, field: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e["type"] == "response" && e["request"]["path"] == path && e["request"]["operation"] == "read")
            .filter_map(|e| e["response"]["data"]["data"][field].as_str())
            .collect()
    }
}

/// Waits (at most a minute) until the pods of `ns` have audited a read of the KV v2 secret at
/// `path` that returned `field`. Requests reach any server; the active one audits them.
pub async fn wait_for_audited_read(client: &Client, ns: &str, path: &str, field: &str) -> Result<AuditTrail> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let started = Instant::now();
    loop {
        let mut text = String::new();
        for pod in pods.list(&Default::default()).await?.items {
            text += &pods
                .logs(&pod.name_any(), &Default::default())
                .await
                .unwrap_or_default();
        }
        let entries = text
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["type"] == "response" || e["type"] == "request")
            .collect();
        let trail = AuditTrail { entries, text };
        if !trail.read_values(path, field).is_empty() {
            return Ok(trail);
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("no audited read of {path} after 60 s ({} entries)", trail.entries.len());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
