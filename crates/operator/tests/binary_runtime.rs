//! The `openbao-operator` binary as a process against a real kube-apiserver: leader election
//! through a Lease (one of two replicas reconciles; the other takes over when it dies), the
//! health and metrics endpoints, and a clean exit on SIGTERM.

mod apiserver_common;

use anyhow::{Result, bail};
use apiserver_common::client_with_crds;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::apiserver::{ApiServer, create_namespace};
use testkit::process::ManagedProcess;

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Replica {
    process: ManagedProcess,
    port: u16,
    _log_dir: tempfile::TempDir,
}

fn start_replica(kubeconfig: &Path, namespace: &str, name: &str) -> Result<Replica> {
    let port = free_port()?;
    let log_dir = tempfile::tempdir()?;
    let log = log_dir.path().join(format!("{name}.log"));
    let args = vec![
        "run".to_string(),
        "--http-addr".into(),
        format!("127.0.0.1:{port}"),
        "--namespace".into(),
        namespace.into(),
    ];
    let envs = [
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("POD_NAME", name.to_string()),
        // Only this test's namespace: other tests in the same apiserver are not disturbed.
        ("WATCH_NAMESPACE", namespace.to_string()),
    ];
    let process = ManagedProcess::start(
        name,
        Path::new(env!("CARGO_BIN_EXE_openbao-operator")),
        &args,
        &envs,
        &log,
    )?;
    Ok(Replica {
        process,
        port,
        _log_dir: log_dir,
    })
}

async fn status(port: u16, path: &str) -> Option<u16> {
    reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn wait_until_ready(r: &Replica, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if status(r.port, "/readyz").await == Some(200) {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "{} not ready after {timeout:?}:\n{}",
        r.process.name(),
        r.process.log_tail(20)
    )
}

#[tokio::test]
async fn one_leader_reconciles_and_a_standby_takes_over() -> Result<()> {
    let server = ApiServer::shared().await?;
    let client = client_with_crds(server).await?;
    let ns = create_namespace(&client, "bao-leader").await?;

    let a = start_replica(server.kubeconfig_path(), &ns, "operator-a")?;
    let took = wait_until_ready(&a, Duration::from_secs(30)).await?;
    eprintln!("first replica leading and ready after {took:?}");
    assert_eq!(status(a.port, "/healthz").await, Some(200));
    let mut b = start_replica(server.kubeconfig_path(), &ns, "operator-b")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status(b.port, "/healthz").await, Some(200), "a standby is alive");
    assert_eq!(
        status(b.port, "/readyz").await,
        Some(503),
        "a standby does not reconcile"
    );
    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get("openbao-operator-leader")
        .await?;
    let holder = lease.spec.unwrap().holder_identity.unwrap_or_default();
    assert!(holder.starts_with("operator-a_"), "holder {holder}");

    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", a.port))
        .await?
        .text()
        .await?;
    assert!(metrics.contains("openbao_operator_kube_writes_total"), "{metrics}");
    assert!(
        metrics.contains("openbao_operator_reconcile_duration_seconds"),
        "{metrics}"
    );

    // The leader dies without releasing the lease: the standby takes over once it expires.
    a.process.signal(9)?; // SIGKILL
    let takeover = wait_until_ready(&b, Duration::from_secs(40)).await?;
    eprintln!("standby took over {takeover:?} after the leader was killed");
    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get("openbao-operator-leader")
        .await?;
    let holder = lease.spec.unwrap().holder_identity.unwrap_or_default();
    assert!(holder.starts_with("operator-b_"), "holder {holder}");

    // SIGTERM: a prompt, clean exit.
    let t = Instant::now();
    b.process.signal(15)?; // SIGTERM
    while b.process.is_running() {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("no exit 10 s after SIGTERM:\n{}", b.process.log_tail(20));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("SIGTERM to exit: {:?}", t.elapsed());
    assert!(
        std::fs::read_to_string(b.process.log_path())?.contains("shutting down"),
        "{}",
        b.process.log_tail(20)
    );
    // Its controllers stopped, it gave the Lease back: a standby would take over at once.
    let released = Api::<Lease>::namespaced(client.clone(), &ns)
        .get("openbao-operator-leader")
        .await?
        .spec
        .unwrap_or_default();
    assert_eq!(released.holder_identity, None, "{}", b.process.log_tail(20));
    Ok(())
}
