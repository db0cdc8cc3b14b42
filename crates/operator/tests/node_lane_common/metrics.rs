//! The lane's Prometheus, reached through the Gateway like a person would, and the Grafana
//! dashboards (charts/openbao-operator/dashboards/: the operator's and OpenBao's servers') checked
//! against it: every query of every panel runs on the real Prometheus scraping the real operator
//! and the lane cluster's real OpenBao servers.

use super::{edge_url, read};
use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;
use std::time::{Duration, Instant};
use testkit::cache::repo_root;

pub const PROMETHEUS_HOST: &str = "prometheus.lane.localhost";

/// Which panels must show data now (every query must run without error in any case).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Expect {
    /// Right after lane-up: the operator panels.
    OperatorRunning,
    /// After a successful backup: the backup panels too.
    BackupTaken,
}

/// Panels that stay empty on a healthy lane.
const EMPTY_WHEN_HEALTHY: [&str; 1] = ["Reconcile errors by reason"];
const BACKUP_PANELS: [&str; 5] = [
    "Time since the last successful backup",
    "Backups since the operator started",
    "Backups failed in a row",
    "Last backup size",
    "Backup duration (p95)",
];

pub struct Prometheus {
    http: reqwest::Client,
    base: String,
}

impl Prometheus {
    /// `https://prometheus.lane.localhost:30443` at the edge, trusting only the lane CA.
    pub fn through_edge(ca: &[u8]) -> Result<Self> {
        let (http, base) = super::behind_the_edge(PROMETHEUS_HOST, ca)?;
        Ok(Self { http, base })
    }

    /// The instant-query result vector of `expr`; an error for anything but `status: success`.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/query", self.base), [("query", expr)])?;
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let answer: Value = response.json().await.with_context(|| format!("{url}: JSON answer"))?;
        ensure!(
            status == 200 && answer["status"] == "success",
            "Prometheus refused {expr:?}: HTTP {status}: {answer}"
        );
        Ok(answer["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The classic web UI renders (its page and a JavaScript library it loads).
    pub async fn ui_serves(&self) -> Result<()> {
        for path in ["/classic/graph", "/classic/static/jquery/jquery.min.js"] {
            let url = format!("{}{path}", self.base);
            let response = self.http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
            ensure!(response.status() == 200, "{url}: HTTP {}", response.status());
        }
        Ok(())
    }

    /// Waits until Prometheus scrapes an operator pod.
    pub async fn wait_operator_scraped(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let up = self.query(r#"up{job="openbao-operator"} == 1"#).await;
            match up {
                Ok(series) if !series.is_empty() => return Ok(()),
                _ if Instant::now() > deadline => {
                    bail!("Prometheus did not scrape the operator within {timeout:?}: last {up:?}")
                }
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// Runs every query of the dashboard. Panels expected to have data by `expect` must have a
    /// number (not NaN) within `timeout` (the next scrapes); the others only have to run.
    pub async fn dashboard_answers(&self, expect: Expect, timeout: Duration) -> Result<Vec<(String, usize)>> {
        let deadline = Instant::now() + timeout;
        let mut answered = Vec::new();
        for (title, expr) in dashboard_queries()? {
            let must_have_data = !EMPTY_WHEN_HEALTHY.contains(&title.as_str())
                && (expect == Expect::BackupTaken || !BACKUP_PANELS.contains(&title.as_str()));
            loop {
                let series = self.query(&expr).await.with_context(|| format!("panel {title:?}"))?;
                let numbers = series.iter().filter(|s| has_number(s)).count();
                if numbers > 0 || !must_have_data {
                    answered.push((title.clone(), numbers));
                    break;
                }
                if Instant::now() > deadline {
                    bail!("panel {title:?} has no data after {timeout:?}: {expr} -> {series:?}");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Ok(answered)
    }
}

fn has_number(series: &Value) -> bool {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// The chart's dashboards: the operator's, and OpenBao's servers (scraped through the lane
/// cluster's metrics Service).
const DASHBOARDS: [&str; 2] = ["openbao-operator.json", "openbao.json"];

/// (panel title, PromQL) of every target of the dashboards, with Grafana's variables set the way
/// a dashboard opens: all namespaces, clusters and services, and a 5-minute rate window.
pub fn dashboard_queries() -> Result<Vec<(String, String)>> {
    let mut queries = Vec::new();
    for file in DASHBOARDS {
        queries.extend(queries_of(file)?);
    }
    Ok(queries)
}

fn queries_of(file: &str) -> Result<Vec<(String, String)>> {
    let path = repo_root().join("charts/openbao-operator/dashboards").join(file);
    let dashboard: Value = serde_json::from_slice(&read(&path)?).with_context(|| format!("{}", path.display()))?;
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().context("dashboard panels")? {
        let title = panel["title"].as_str().context("panel title")?.to_string();
        for target in panel["targets"].as_array().context("panel targets")? {
            let expr = target["expr"].as_str().context("target expr")?;
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$cluster", ".*")
                .replace("$service", ".*");
            ensure!(!expr.contains('$'), "panel {title:?}: unknown variable in {expr}");
            queries.push((title.clone(), expr));
        }
    }
    ensure!(!queries.is_empty(), "{file} has no queries");
    Ok(queries)
}

/// Requests to the lane's OpenBao through the edge, one KV write every 500 ms while it lives.
/// OpenBao's latency panels (request handling, raft commit time) are summaries over the last
/// seconds: an idle cluster answers them with NaN, a working one with numbers.
pub struct Traffic {
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    pub fn start(http: reqwest::Client, token: String) -> Self {
        let url = format!("{}/v1/secret/data/dashboard-traffic", edge_url());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            for n in 0u64.. {
                tick.tick().await;
                let body = serde_json::json!({"data": {"n": n}});
                let _ = http.post(&url).header("X-Vault-Token", &token).json(&body).send().await;
            }
        });
        Self { task }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.task.abort();
    }
}
