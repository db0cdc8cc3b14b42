//! The local development lane (`make lane-up`) on the running hermetic node, end to end:
//! `hack/lane.sh up` installs the Gateway API CRDs, Traefik as the shared TLS-terminating Gateway,
//! the S3 store, the operator from the Helm chart (our image) and the lane's OpenBaoCluster. Then:
//! - the cluster is Available with TLSReady, GatewayIntegrationReady and BackupConfigurationReady
//!   (backups to the lane's S3 store with the dedicated Secret), and no root-token Secret exists;
//! - Traefik accepted the operator's HTTPRoute;
//! - a userpass login and a JWT admin login (a `bao-admin` service-account token) both succeed
//!   through the Gateway's NodePort, with only the lane CA trusted (a client without it fails);
//! - Prometheus, behind the same Gateway, scrapes the operator and answers every query of the
//!   Grafana dashboard (charts/openbao-operator/dashboards/);
//! - Argo CD (built from its Go module, no web UI) behind the same Gateway: the admin login with
//!   the lane's generated password and its API answer through the edge;
//! - the rehearsals on the same lane (`node_lane_common/rehearsals.rs`): `lane-backup` and
//!   `lane-restore` into a fresh cluster (`lane-upgrade` runs on the hardened lane,
//!   `node_lane_hardened.rs`), and `lane-gitops`: Argo CD syncs an OpenBaoCluster from the lane's
//!   Git server to `Available`/`Healthy`, and a second sync writes nothing to its children and
//!   starts no Job (docs/gitops.md);
//! - `hack/lane.sh down` removes what `up` created and leaves the node running.
//!
//! Prints the lane's timings (lane-up -> Available, CR apply -> Available, operator writes), the
//! figures of bench/lane.md. Needs the node (`make test` starts it; `make cluster-up` by hand);
//! refuses to run while a lane is already up (its `down` would remove that lane).

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use openbao_api::{OpenBaoCluster, conditions};
use serde_json::json;
use std::time::{Duration, Instant};
use testkit::browser::{Browser, BrowserConfig, openbao_ui};
use testkit::openbao::poll_until;
use testkit::pods::wait_for;
use testkit::probe::{Exec, Reach, pod_ip, start_pod};

mod node_lane_common;
use node_lane_common::metrics::{Expect, PROMETHEUS_HOST, Prometheus, Traffic};
use node_lane_common::{
    CLUSTER, EDGE, HOST, LaneGuard, TENANT_NS, admin_jwt, behind_the_edge, condition, edge_client, lane, lane_dir,
    login, namespaces_gone, node_without_lane, policies, read, route_accepted, state,
};

/// The RustFS console sits behind the same Gateway (`https://rustfs.lane.localhost:30443`), with
/// the lane CA: its server answers `/rustfs/console/version` with RustFS's version. The web UI
/// bundle is not in the crates.io package (its `static/` is empty; the official image adds it),
/// so on the hermetic node `/rustfs/console/` gets RustFS's own 404; the test says which it got.
/// s3s-fs, the lane's store while RustFS is not built, has no console: then this says so.
async fn store_console_answers(ca: &[u8]) -> Result<()> {
    let store = state("store").unwrap_or_default();
    if store != "rustfs" {
        eprintln!("store console NOT checked: the lane runs {store:?}, which has no console (RustFS is not built)");
        return Ok(());
    }
    let (http, edge) = behind_the_edge("rustfs.lane.localhost", ca)?;
    let base = format!("{edge}/rustfs/console");
    let version = wait_for(
        "the RustFS console through the Gateway",
        Duration::from_secs(60),
        async || {
            let response = http.get(format!("{base}/version")).send().await?;
            if !response.status().is_success() {
                return Ok(None);
            }
            let body: serde_json::Value = response.json().await?;
            Ok(body["version"].as_str().map(String::from))
        },
    )
    .await?;
    let ui = http.get(format!("{base}/")).send().await?;
    let ui_status = ui.status();
    let ui_body = ui.text().await.unwrap_or_default();
    let ui_note = if ui_status.is_success() {
        format!("its web UI answered {ui_status} ({} bytes)", ui_body.len())
    } else {
        ensure!(
            ui_status == 404 && ui_body.contains("RustFS"),
            "{base}/ answered {ui_status} without RustFS's own page: {ui_body:?}"
        );
        "its web UI is not bundled in this build (RustFS answered its own 404)".to_string()
    };
    eprintln!("RustFS console (version {version}) answered through the Traefik Gateway, lane CA verified; {ui_note}");
    Ok(())
}

/// Argo CD behind the same Gateway (`https://argocd.lane.localhost:30443`), lane CA verified: the
/// admin login with the password the lane generated gives a session token, with which the API
/// answers. Returns the client, the base URL and the token. Its web UI is not in this build
/// (docs/lane.md says why): the test prints what `/` answers.
async fn argocd_through_the_edge(ca: &[u8]) -> Result<(reqwest::Client, String, String)> {
    let (http, base) = behind_the_edge("argocd.lane.localhost", ca)?;
    let password = String::from_utf8(read(&lane_dir().join("argocd-admin-password"))?)?;
    let token = wait_for(
        "an Argo CD admin login through the Gateway",
        Duration::from_secs(60),
        async || {
            let response = http
                .post(format!("{base}/api/v1/session"))
                .json(&json!({"username": "admin", "password": password.trim()}))
                .send()
                .await?;
            if !response.status().is_success() {
                return Ok(None);
            }
            let body: serde_json::Value = response.json().await?;
            Ok(body["token"].as_str().map(String::from))
        },
    )
    .await?;
    let wrong = http
        .post(format!("{base}/api/v1/session"))
        .json(&json!({"username": "admin", "password": "not-the-password"}))
        .send()
        .await?
        .status();
    ensure!(wrong == 401, "a wrong Argo CD password answered {wrong}");
    let version: serde_json::Value = http
        .get(format!("{base}/api/version"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let ui = http.get(format!("{base}/")).send().await?.status();
    eprintln!(
        "Argo CD {} through the Traefik Gateway, lane CA verified: admin login with the generated password, API answers; a wrong password 401; web UI: {ui} (not in this build)",
        version["Version"].as_str().unwrap_or("?")
    );
    Ok((http, base, token))
}

/// The Application of `lane-gitops` as Argo CD's API reports it: synced and healthy.
async fn argocd_reports_the_application(http: &reqwest::Client, base: &str, token: &str) -> Result<()> {
    let app: serde_json::Value = http
        .get(format!("{base}/api/v1/applications/openbao-gitops"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let (sync, health) = (&app["status"]["sync"]["status"], &app["status"]["health"]["status"]);
    ensure!(
        sync == "Synced" && health == "Healthy",
        "Argo CD's API reports openbao-gitops {sync}/{health}"
    );
    eprintln!("Argo CD's API through the Gateway: Application openbao-gitops Synced and Healthy");
    Ok(())
}

/// Prometheus behind the same Gateway scrapes the operator, its UI renders, and every query of
/// the Grafana dashboard runs on it, the operator panels with data.
async fn prometheus_serves_the_dashboard(ca: &[u8], http: &reqwest::Client, token: String) -> Result<()> {
    let _traffic = Traffic::start(http.clone(), token);
    let prometheus = Prometheus::through_edge(ca)?;
    prometheus.wait_operator_scraped(Duration::from_secs(60)).await?;
    prometheus.ui_serves().await?;
    let panels = prometheus
        .dashboard_answers(Expect::OperatorRunning, Duration::from_secs(60))
        .await?;
    eprintln!(
        "Prometheus through the Gateway scrapes the operator; dashboard panels (series with a number): {panels:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lane_comes_up_serves_logins_through_the_gateway_and_its_rehearsals_pass() -> Result<()> {
    let (_, client) = node_without_lane().await?;

    let mut guard = LaneGuard { down: false };
    let began = Instant::now();
    lane("up")?;
    let up_wall = began.elapsed();
    eprintln!(
        "lane timings: `hack/lane.sh up` {up_wall:.1?} in all; lane-up -> Available {}s, CR apply -> Available {}s, {} operator writes",
        state("last_up_seconds").unwrap_or_default(),
        state("last_apply_to_available_seconds").unwrap_or_default(),
        state("last_kube_writes").unwrap_or_default()
    );
    let steps: Vec<String> = [
        "cluster",
        "images",
        "gateway_api",
        "edge",
        "store",
        "operator",
        "tools",
        "cluster_available",
    ]
    .iter()
    .map(|p| format!("{p} {}s", state(&format!("phase_{p}")).unwrap_or_default()))
    .collect();
    eprintln!("lane-up steps: {}", steps.join(", "));
    ensure!(
        state("started_node").as_deref() == Some("0"),
        "lane-up must reuse the running node"
    );

    let clusters = Api::<OpenBaoCluster>::namespaced(client.clone(), TENANT_NS);
    let cluster = clusters.get(CLUSTER).await?;
    let audience = cluster.status.as_ref().and_then(|s| s.jwt_audience.clone());
    ensure!(
        audience == Some(openbao_api::names::jwt_audience(TENANT_NS, CLUSTER)),
        "status.jwtAudience is {audience:?}"
    );
    for wanted in [
        conditions::AVAILABLE,
        conditions::TLS_READY,
        conditions::GATEWAY_INTEGRATION_READY,
        conditions::BACKUP_CONFIGURATION_READY,
    ] {
        let got = condition(&cluster, wanted);
        assert!(
            got.as_ref().is_some_and(|(s, _)| s == "True"),
            "{wanted}: {got:?} in {:#?}",
            cluster.status
        );
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), TENANT_NS);
    assert!(secrets.get_opt(&format!("{CLUSTER}-root-token")).await?.is_none());
    for s in secrets.list(&Default::default()).await?.items {
        assert!(!s.name_any().contains("root"), "unexpected Secret {}", s.name_any());
    }
    route_accepted(&client).await?;

    // Through the edge: only the lane CA is trusted; without it the handshake must fail.
    let ca = read(&lane_dir().join("ca.crt"))?;
    let http = edge_client(Some(&ca))?;
    let untrusting = edge_client(None)?;
    let refused = untrusting
        .get(format!("https://{HOST}:30443/v1/sys/health"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "the edge certificate must not verify without the lane CA"
    );

    let password = String::from_utf8(read(&lane_dir().join("demo-password"))?)?;
    let demo = login(&http, "auth/userpass/login/demo", json!({"password": password.trim()})).await?;
    assert!(
        policies(&demo).iter().any(|p| p == "admin"),
        "demo login: {:?}",
        policies(&demo)
    );
    let jwt = admin_jwt(&client, CLUSTER).await?;
    let admin = login(&http, "auth/jwt-operator/login", json!({"role": "admin", "jwt": jwt})).await?;
    assert!(
        policies(&admin).iter().any(|p| p == "admin"),
        "JWT admin login: {:?}",
        policies(&admin)
    );
    eprintln!("userpass and JWT admin logins passed through the Traefik Gateway ({EDGE}), lane CA verified");
    openbao_ui_in_a_browser(&ca, password.trim()).await?;
    store_console_answers(&ca).await?;
    let token = admin["client_token"].as_str().unwrap_or_default().to_string();
    prometheus_serves_the_dashboard(&ca, &http, token).await?;
    prometheus_targets_in_a_browser(&ca).await?;
    operator_metrics_only_from_monitoring(&client).await?;
    let (argocd, argocd_base, argocd_token) = argocd_through_the_edge(&ca).await?;

    // The rehearsals on the same lane: backup, restore into a fresh cluster (the upgrade
    // rehearsal runs on the hardened lane, node_lane_hardened.rs), GitOps with Argo CD.
    node_lane_common::rehearsals::rehearse_backup_and_restore(client.clone()).await?;
    let gitops_began = Instant::now();
    lane("gitops")?;
    eprintln!(
        "lane-gitops: first sync -> Synced, Healthy, Available in {}s; a second sync changed {} objects ({:.1?} in all)",
        state("gitops_first_sync_seconds").unwrap_or_default(),
        state("gitops_resync_changes").unwrap_or_default(),
        gitops_began.elapsed()
    );
    argocd_reports_the_application(&argocd, &argocd_base, &argocd_token).await?;

    guard.down = true;
    lane("down")?;
    namespaces_gone(&client).await?;
    ensure!(
        testkit::node::running_node().await.is_some(),
        "lane-down must leave the node it did not start running"
    );
    let classes = ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "GatewayClass".into(),
        plural: "gatewayclasses".into(),
    };
    let gateway_classes: Api<DynamicObject> = Api::all_with(client.clone(), &classes);
    // The Gateway API CRDs stay when they were there before the lane; then the class must be gone.
    if let Ok(left) = gateway_classes.get_opt("lane-traefik").await {
        assert!(left.is_none(), "GatewayClass lane-traefik left behind");
    }
    assert!(state("backend").is_none(), "lane-down forgets the lane's state");
    Ok(())
}

/// The OpenBao UI in a real headless Chromium through the Gateway, trusting only the lane CA:
/// the demo login with userpass lands on the secrets page, which lists `secret/`. A failed step
/// leaves a screenshot and the page in `.lane/`.
async fn openbao_ui_in_a_browser(ca: &[u8], password: &str) -> Result<()> {
    let config = BrowserConfig::new("lane-openbao-ui", &lane_dir())
        .trust_ca(std::str::from_utf8(ca)?)
        .resolve(HOST, std::net::IpAddr::V4(testkit::node::NODE_IP));
    let browser = Browser::start(config).await?;
    let base = format!("https://{HOST}:30443");
    let started = Instant::now();
    openbao_ui::login_userpass(&browser, &base, "demo", password, UI_TIMEOUT).await?;
    openbao_ui::wait_for_secrets_engine(&browser, "secret/", UI_TIMEOUT).await?;
    eprintln!(
        "OpenBao UI through the Gateway in Chromium: demo login -> secrets page with secret/ in {:.1?}",
        started.elapsed()
    );
    browser.quit().await
}

/// Prometheus's own UI in Chromium through the Gateway, trusting only the lane CA: its targets
/// page (`/classic/targets`, rendered by the server, so it is opened again until it shows them)
/// lists the operator's job and OpenBao's job with every target up.
async fn prometheus_targets_in_a_browser(ca: &[u8]) -> Result<()> {
    let config = BrowserConfig::new("lane-prometheus-ui", &lane_dir())
        .trust_ca(std::str::from_utf8(ca)?)
        .resolve(PROMETHEUS_HOST, std::net::IpAddr::V4(testkit::node::NODE_IP));
    let browser = Browser::start(config).await?;
    let url = format!("https://{PROMETHEUS_HOST}:30443/classic/targets");
    let started = Instant::now();
    let jobs = browser
        .step(
            "prometheus-targets",
            poll_until(
                "the operator's and OpenBao's targets up in the Prometheus UI",
                UI_TIMEOUT,
                || async {
                    browser.goto(&url).await?;
                    // A job header without the `danger` class has every target up; "(0/0 up)" has none.
                    let healthy = browser.displayed_texts("h2.job_header:not(.danger) a").await?;
                    let up = |job: &str| {
                        healthy
                            .iter()
                            .any(|t| t.starts_with(&format!("{job} (")) && !t.contains("(0/"))
                    };
                    Ok((up("openbao-operator") && up("openbao")).then_some(healthy.clone()))
                },
            ),
        )
        .await?;
    eprintln!(
        "Prometheus UI through the Gateway in Chromium: targets {jobs:?} in {:.1?}",
        started.elapsed()
    );
    browser.quit().await
}

/// The operator's own NetworkPolicy (shipped in `deploy/operator`), enforced by the node's engine:
/// its `/metrics` port answers a pod in `monitoring` (where Prometheus runs) and refuses a pod in
/// the tenant's namespace.
async fn operator_metrics_only_from_monitoring(client: &kube::Client) -> Result<()> {
    const OPERATOR_NS: &str = "openbao-operator-system";
    const METRICS_PORT: u16 = 8080;
    let operator = Api::<Pod>::namespaced(client.clone(), OPERATOR_NS)
        .list(&ListParams::default().labels("app.kubernetes.io/name=openbao-operator"))
        .await?
        .items
        .into_iter()
        .next()
        .context("no operator pod")?;
    let operator_ip = pod_ip(&operator)?;
    let within = Duration::from_secs(45);
    for (ns, want) in [("monitoring", Reach::Open), (TENANT_NS, Reach::Refused)] {
        let prober = start_pod(client, ns, "metrics-prober", &["sleep", "3600"]).await?;
        Exec::new(ns, &prober.name_any(), None)
            .await?
            .wait_for(&operator_ip, METRICS_PORT, want, within)
            .await?;
    }
    eprintln!("the operator's /metrics port answers from monitoring and refuses the tenant namespace");
    Ok(())
}

/// How long one UI step may take (the app loads and logs in within seconds).
const UI_TIMEOUT: Duration = Duration::from_secs(60);
