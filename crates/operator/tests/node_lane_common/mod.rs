//! Shared by the lane tests (`node_lane.rs`, `node_lane_hardened.rs`): running `hack/lane.sh`,
//! its state file, and clients that reach OpenBao through the lane's Traefik Gateway.

#![allow(dead_code)]

pub mod metrics;
pub mod rehearsals;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use kube::{Client, ResourceExt};
use openbao_api::{OpenBaoCluster, conditions};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::apiserver::client_from_kubeconfig;
use testkit::cache::repo_root;

pub const TENANT_NS: &str = "openbao";
pub const CLUSTER: &str = "openbao";
pub const HOST: &str = "openbao.lane.localhost";
/// The node's IP (testkit::node::NODE_IP) and the edge's NodePort (deploy/lane/edge.yaml).
pub const EDGE: &str = "198.19.255.2:30443";
pub const LANE_NAMESPACES: [&str; 6] = [
    "openbao",
    "argocd",
    "storage",
    "monitoring",
    "lane-edge",
    "openbao-operator-system",
];

/// The running hermetic node (its state dir) and a client of it, once it is clear that no lane
/// is up and none of the lane's namespaces exists: a lane test's `down` removes what it finds.
pub async fn node_without_lane() -> Result<(PathBuf, Client)> {
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let Some(node) = testkit::node::running_node().await else {
        bail!("no hermetic node is running: `make test` starts one, or run `make cluster-up`");
    };
    ensure!(
        state("backend").is_none(),
        "a lane is already up (.lane/state.env): run `make lane-down` first; this test would remove it"
    );
    let client = client_from_kubeconfig(&node.join("kubeconfig")).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in LANE_NAMESPACES {
        ensure!(
            namespaces.get_opt(ns).await?.is_none(),
            "namespace {ns} exists before lane-up: the test would not know what to remove"
        );
    }
    Ok((node, client))
}

/// Waits until lane-down removed every namespace of the lane.
pub async fn namespaces_gone(client: &Client) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut left = Vec::new();
        for ns in LANE_NAMESPACES {
            if namespaces.get_opt(ns).await?.is_some() {
                left.push(ns);
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("namespaces still there after lane-down: {left:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub fn lane_dir() -> PathBuf {
    repo_root().join(".lane")
}

/// Runs `hack/lane.sh <args>` on the node backend with extra environment; its log goes to the
/// test's stderr, its stdout is returned (the rehearsals print their result there).
pub fn lane_with(args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let output = Command::new("bash")
        .arg(repo_root().join("hack/lane.sh"))
        .args(args)
        .env("LANE_BACKEND", "node")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run hack/lane.sh {}", args.join(" ")))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "hack/lane.sh {} failed ({}); stdout: {stdout}",
        args.join(" "),
        output.status
    );
    Ok(stdout)
}

pub fn lane(command: &str) -> Result<()> {
    lane_with(&[command], &[]).map(|_| ())
}

/// Runs `hack/lane.sh down` on drop unless `down` already ran (a failed test leaves nothing).
pub struct LaneGuard {
    pub down: bool,
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        if !self.down
            && let Err(err) = lane("down")
        {
            eprintln!("hack/lane.sh down after a failure: {err:#}");
        }
    }
}

/// One `key=value` of .lane/state.env.
pub fn state(key: &str) -> Option<String> {
    let text = std::fs::read_to_string(lane_dir().join("state.env")).ok()?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
        .next_back()
}

pub fn condition(c: &OpenBaoCluster, t: &str) -> Option<(String, String)> {
    let s = c.status.as_ref()?;
    conditions::find(&s.conditions, t).map(|c| (c.status.clone(), c.reason.clone()))
}

/// A client that trusts only `ca_pem` (when given) and reaches HOST at the edge's address.
pub fn edge_client(ca_pem: Option<&[u8]>) -> Result<reqwest::Client> {
    let edge: SocketAddr = EDGE.parse()?;
    let mut builder = reqwest::Client::builder()
        .resolve(HOST, edge)
        .timeout(Duration::from_secs(10));
    if let Some(pem) = ca_pem {
        builder = builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(pem)?);
    }
    Ok(builder.build()?)
}

/// A tool behind the edge at `host` (e.g. `argocd.lane.localhost`): a client that reaches it at
/// the edge's address trusting only the lane CA `ca_pem`, and its base URL.
pub fn behind_the_edge(host: &str, ca_pem: &[u8]) -> Result<(reqwest::Client, String)> {
    let http = reqwest::Client::builder()
        .resolve(host, EDGE.parse()?)
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca_pem)?)
        .timeout(Duration::from_secs(10))
        .build()?;
    let base = format!("https://{host}:{}", EDGE.rsplit(':').next().unwrap_or_default());
    Ok((http, base))
}

/// `https://openbao.lane.localhost:30443` (what `edge_client` resolves to the edge).
pub fn edge_url() -> String {
    format!("https://{HOST}:{}", EDGE.rsplit(':').next().unwrap_or_default())
}

/// POSTs a login to `base` (e.g. [`edge_url`]); returns the `auth` object of a 200 answer.
pub async fn login_at(http: &reqwest::Client, base: &str, path: &str, body: Value) -> Result<Value> {
    let url = format!("{base}/v1/{path}");
    let response = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let answer: Value = response.json().await.with_context(|| format!("{url}: JSON answer"))?;
    ensure!(status == 200, "{url}: HTTP {status}: {}", answer["errors"]);
    Ok(answer["auth"].clone())
}

/// A login through the edge.
pub async fn login(http: &reqwest::Client, path: &str, body: Value) -> Result<Value> {
    login_at(http, &edge_url(), path, body).await
}

pub fn policies(auth: &Value) -> Vec<String> {
    auth["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(String::from))
        .collect()
}

/// A token of the lane's `bao-admin` service account (namespace `openbao`), the subject the
/// lane cluster's JWT `admin` role trusts, for the audience of cluster `cluster` (of that
/// namespace) whose roles are to accept it.
pub async fn admin_jwt(client: &Client, cluster: &str) -> Result<String> {
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": [openbao_api::names::jwt_audience(TENANT_NS, cluster)], "expirationSeconds": 600}
    }))?;
    Ok(Api::<ServiceAccount>::namespaced(client.clone(), TENANT_NS)
        .create_subresource::<_, TokenRequest>("token", "bao-admin", &PostParams::default(), &request)
        .await?
        .status
        .context("TokenRequest status")?
        .token)
}

pub fn http_route_resource() -> ApiResource {
    ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        plural: "httproutes".into(),
    }
}

/// The Gateway accepted the operator's HTTPRoute and resolved its backend.
pub async fn route_accepted(client: &Client) -> Result<()> {
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), TENANT_NS, &http_route_resource());
    let listed = routes.list(&Default::default()).await?;
    let route = listed.items.first().context("the operator's HTTPRoute")?;
    let parents = route.data["status"]["parents"].as_array().cloned().unwrap_or_default();
    let by_edge = parents
        .iter()
        .find(|p| p["parentRef"]["name"] == "edge")
        .with_context(|| {
            format!(
                "HTTPRoute {} has no status from Gateway edge: {parents:?}",
                route.name_any()
            )
        })?;
    for wanted in ["Accepted", "ResolvedRefs"] {
        let cond = by_edge["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == wanted);
        ensure!(
            cond.is_some_and(|c| c["status"] == "True"),
            "HTTPRoute {}: {wanted} is not True: {by_edge}",
            route.name_any()
        );
    }
    Ok(())
}

pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read {}", path.display()))
}
