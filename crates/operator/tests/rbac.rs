//! The operator's Kubernetes rights, on a real kube-apiserver, for both ways to install it:
//! - cluster-wide (`deploy/operator/rbac.yaml`, = the chart's defaults) and namespaced (the chart
//!   with `watchNamespace`, which holds Roles in that namespace only);
//! - what its identity can do is asked of the apiserver (`kubectl auth can-i --list` as the
//!   operator's service account) in its own namespace, the watched namespace and an unrelated
//!   one, and compared with `tests/rbac/can-i.txt`: any change, a widening above all, fails
//!   (`UPDATE_RBAC=1` rewrites the file after a deliberate change, to be reviewed in the diff);
//! - the real binary, authenticated as that service account and nothing more, converges a
//!   cluster with exactly those rights (no "forbidden" in its log).

mod apiserver_common;

use anyhow::{Context as _, Result, bail, ensure};
use apiserver_common::{client_with_crds, install_crypto_provider};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::apiserver::{ApiServer, create_namespace};
use testkit::cache::{command_output, kubectl, repo_root, run_hack};
use testkit::process::ManagedProcess;

/// How the operator is installed.
struct Install {
    /// Label in the snapshot file.
    label: &'static str,
    /// The operator's namespace and service account.
    namespace: &'static str,
    service_account: &'static str,
    /// The one namespace it watches (namespaced install), else `None`.
    watch: Option<&'static str>,
}

const CLUSTER_WIDE: Install = Install {
    label: "cluster-wide (deploy/operator/rbac.yaml)",
    namespace: "openbao-operator-system",
    service_account: "openbao-operator",
    watch: None,
};

/// Other names than the cluster-wide install's: both live in one apiserver.
const NAMESPACED: Install = Install {
    label: "namespaced (chart, watchNamespace=rbac-tenant)",
    namespace: "openbao-operator-ns",
    service_account: "openbao-operator-ns",
    watch: Some("rbac-tenant"),
};

/// Where the namespaced install's clusters live, and a namespace nobody watches.
const TENANT: &str = "rbac-tenant";
const UNRELATED: &str = "rbac-unrelated";

/// The RBAC objects (and service account) of `install`, as YAML documents.
fn rbac_documents(install: &Install) -> Result<String> {
    let text = match install.watch {
        None => std::fs::read_to_string(repo_root().join("deploy/operator/rbac.yaml"))?,
        Some(watch) => {
            let helm = run_hack("fetch-helm.sh", &[])?;
            command_output(
                Command::new(helm)
                    .args(["template", "openbao-operator"])
                    .arg(repo_root().join("charts/openbao-operator"))
                    .args(["--namespace", install.namespace])
                    .args(["--set", &format!("watchNamespace={watch}")])
                    .args(["--set", &format!("nameOverride={}", install.service_account)])
                    .args(["--set", &format!("serviceAccount.name={}", install.service_account)]),
            )?
        }
    };
    Ok(text)
}

/// Server-side applies the ServiceAccounts and RBAC objects of a YAML stream (other kinds, e.g.
/// the Deployment, are left out: apiserver mode runs no pods).
async fn apply_rbac(client: &kube::Client, yaml: &str) -> Result<()> {
    const KINDS: [&str; 5] = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    let discovery = Discovery::new(client.clone()).run().await?;
    let docs: Vec<Option<DynamicObject>> = serde_saphyr::from_multiple(yaml).context("parse YAML stream")?;
    for obj in docs.into_iter().flatten() {
        let Some(types) = obj.types.as_ref() else { continue };
        if !KINDS.contains(&types.kind.as_str()) {
            continue;
        }
        let gvk = kube::api::GroupVersionKind::try_from(types)?;
        let (ar, caps) = discovery.resolve_gvk(&gvk).context("unknown kind")?;
        let api: Api<DynamicObject> = match (caps.scope, obj.metadata.namespace.as_deref()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
            _ => Api::all_with(client.clone(), &ar),
        };
        let name = obj.metadata.name.clone().context("unnamed object")?;
        api.patch(&name, &PatchParams::apply("test").force(), &Patch::Apply(&obj))
            .await
            .with_context(|| format!("apply {} {name}", types.kind))?;
    }
    Ok(())
}

/// Namespace `name`, created unless it exists (the shared apiserver serves every test here).
async fn ensure_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let namespace: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&namespace))
        .await
        .with_context(|| format!("apply namespace {name}"))?;
    Ok(())
}

/// Installs `install`'s RBAC into the shared apiserver (idempotent).
async fn install_rbac(client: &kube::Client, install: &Install) -> Result<()> {
    for ns in [install.namespace, TENANT, UNRELATED] {
        ensure_namespace(client, ns).await?;
    }
    let yaml = rbac_documents(install)?;
    if install.watch.is_some() {
        // The chart's ServiceAccount template is in the release namespace; helm template names it.
        ensure!(
            yaml.contains(&format!("name: {}", install.service_account)),
            "chart renders no service account {}",
            install.service_account
        );
    }
    apply_rbac(client, &yaml).await
}

/// `kubectl auth can-i --list` of the operator's identity in `namespace`, one sorted rule a line.
fn can_i_list(server: &ApiServer, install: &Install, namespace: &str) -> Result<Vec<String>> {
    let text = command_output(
        Command::new(kubectl()?)
            .arg("--kubeconfig")
            .arg(server.kubeconfig_path())
            .args(["auth", "can-i", "--list", "-n", namespace])
            .arg(format!(
                "--as=system:serviceaccount:{}:{}",
                install.namespace, install.service_account
            ))
            .args(["--as-group=system:serviceaccounts", "--as-group=system:authenticated"])
            .arg(format!("--as-group=system:serviceaccounts:{}", install.namespace)),
    )?;
    let mut lines: Vec<String> = text
        .lines()
        .skip(1) // the header
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    Ok(lines)
}

#[tokio::test]
async fn what_the_operator_may_do_is_exactly_the_snapshot() -> Result<()> {
    install_crypto_provider();
    let server = ApiServer::shared().await?;
    let client = server.client().await?;
    let mut snapshot = String::from(
        "# What the operator's identity may do, as the apiserver answers `kubectl auth can-i --list`.\n\
         # Written by crates/operator/tests/rbac.rs with UPDATE_RBAC=1; review every change.\n",
    );
    for install in [&CLUSTER_WIDE, &NAMESPACED] {
        install_rbac(&client, install).await?;
        // `default`: where it reads the apiserver's addresses (Service and EndpointSlices).
        for namespace in [install.namespace, TENANT, UNRELATED, "default"] {
            snapshot.push_str(&format!("\n## {}: in namespace {namespace}\n", install.label));
            for line in can_i_list(server, install, namespace)? {
                snapshot.push_str(&line);
                snapshot.push('\n');
            }
        }
    }
    let path = repo_root().join("crates/operator/tests/rbac/can-i.txt");
    if std::env::var_os("UPDATE_RBAC").is_some() {
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        std::fs::write(&path, &snapshot)?;
    }
    let expected = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    if expected != snapshot {
        let added: Vec<&str> = snapshot
            .lines()
            .filter(|l| !expected.lines().any(|e| e == *l))
            .collect();
        let removed: Vec<&str> = expected
            .lines()
            .filter(|l| !snapshot.lines().any(|e| e == *l))
            .collect();
        bail!(
            "the operator's rights changed (UPDATE_RBAC=1 rewrites {} once the change is deliberate)\n\
             now allowed, not in the snapshot:\n  {}\nin the snapshot, no longer allowed:\n  {}",
            path.display(),
            added.join("\n  "),
            removed.join("\n  ")
        );
    }
    // The namespaced install holds nothing on objects outside the watched namespace.
    for line in can_i_list(server, &NAMESPACED, UNRELATED)? {
        ensure!(
            !line.contains("secrets") && !line.contains("pods") && !line.contains("openbaoclusters"),
            "the namespaced install reaches namespace {UNRELATED}: {line}"
        );
    }
    Ok(())
}

/// A kubeconfig for `server` that authenticates as `install`'s service account and nothing more.
async fn operator_kubeconfig(
    server: &ApiServer,
    client: &kube::Client,
    install: &Install,
    dir: &Path,
) -> Result<PathBuf> {
    let request: TokenRequest =
        serde_json::from_value(serde_json::json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))?;
    let token = Api::<ServiceAccount>::namespaced(client.clone(), install.namespace)
        .create_subresource::<_, TokenRequest>("token", install.service_account, &PostParams::default(), &request)
        .await?
        .status
        .context("TokenRequest status")?
        .token;
    let mut kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig_path())?;
    for user in &mut kubeconfig.auth_infos {
        user.auth_info = Some(kube::config::AuthInfo {
            token: Some(token.clone().into()),
            ..Default::default()
        });
    }
    let path = dir.join(format!("{}-kubeconfig", install.service_account));
    std::fs::write(&path, serde_saphyr::to_string(&kubeconfig)?)?;
    Ok(path)
}

/// Runs the real binary as `install`'s service account, watching the namespace it is installed
/// for (a new one for the cluster-wide install), and waits until a new cluster there has its
/// StatefulSet and `Degraded=False`, with no RBAC denial in the log.
async fn converges_with_exactly_its_rbac(install: &Install, cluster: &str) -> Result<()> {
    let server = ApiServer::shared().await?;
    let client = client_with_crds(server).await?;
    testkit::apiserver::install_gateway_api_crds(&client).await?;
    install_rbac(&client, install).await?;
    let ns = match install.watch {
        Some(watch) => watch.to_string(),
        None => create_namespace(&client, "bao-rbac").await?,
    };

    let dir = tempfile::tempdir()?;
    let kubeconfig = operator_kubeconfig(server, &client, install, dir.path()).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = dir.path().join("operator.log");
    let args: Vec<String> = [
        "run",
        "--http-addr",
        &format!("127.0.0.1:{port}"),
        "--namespace",
        install.namespace,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let envs = [
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("POD_NAME", format!("operator-{cluster}")),
        ("WATCH_NAMESPACE", ns.clone()),
    ];
    let process = ManagedProcess::start(
        &format!("operator-{cluster}"),
        Path::new(env!("CARGO_BIN_EXE_openbao-operator")),
        &args,
        &envs,
        &log,
    )?;

    let object: openbao_api::OpenBaoCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster", "metadata": {"name": cluster},
        "spec": {"version": "2.7.2", "profile": "Development", "storage": {"size": "1Gi"},
                 "gateway": {"gatewayRef": {"name": "edge"}, "hostname": "bao.example"}}
    }))?;
    let crs = Api::<openbao_api::OpenBaoCluster>::namespaced(client.clone(), &ns);
    crs.create(&PostParams::default(), &object).await?;
    let start = Instant::now();
    loop {
        let sts = Api::<StatefulSet>::namespaced(client.clone(), &ns)
            .get_opt(cluster)
            .await?;
        let degraded = crs.get(cluster).await?.status.and_then(|s| {
            openbao_api::conditions::find(&s.conditions, openbao_api::conditions::DEGRADED)
                .map(|c| (c.status.clone(), c.message.clone()))
        });
        if sts.is_some() && degraded.as_ref().is_some_and(|(s, _)| s == "False") {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!(
                "not converged with the shipped RBAC (degraded: {degraded:?}):\n{}",
                process.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log_text = std::fs::read_to_string(&log)?;
    assert!(
        !log_text.contains("forbidden"),
        "RBAC denials in the operator log:\n{log_text}"
    );
    eprintln!(
        "{}: converged with the shipped RBAC in {:?}",
        install.label,
        start.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn cluster_wide_install_converges_with_exactly_its_rbac() -> Result<()> {
    converges_with_exactly_its_rbac(&CLUSTER_WIDE, "rbac").await
}

#[tokio::test]
async fn namespaced_install_converges_with_roles_only() -> Result<()> {
    converges_with_exactly_its_rbac(&NAMESPACED, "rbac-ns").await
}
