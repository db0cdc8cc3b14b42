//! Leader election under a partition, with the real binary against a real kube-apiserver:
//! replica A reaches the apiserver through a TCP proxy of this test, replica B directly. While A
//! leads, the proxy blackholes A (connections accepted, nothing forwarded, requests hang: the
//! nasty case) for 60 s. Both replicas' `openbao_operator_leader` gauges are sampled every 150 ms:
//! never both leaders, B leads within 20 s, A stops within a lease, and A, restarted
//! once the network is back (as the kubelet restarts an exited container), stays a standby.

mod apiserver_common;

use anyhow::{Context as _, Result, bail};
use apiserver_common::client_with_crds;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::apiserver::{ApiServer, create_namespace};
use testkit::process::ManagedProcess;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Short, so that the test is quick; the production default is 15 s.
const LEASE: Duration = Duration::from_secs(9);
/// The partition the trust issue's acceptance names: far longer than a takeover, so B leads alone
/// for several leases before A may come back.
const BLACKHOLE: Duration = Duration::from_secs(60);
const TAKEOVER_LIMIT: Duration = Duration::from_secs(20);
const SAMPLE_EVERY: Duration = Duration::from_millis(150);

/// A TCP proxy that forwards until blackholed; then it holds every connection (old and new) open
/// without reading or forwarding a byte, and cuts them all when restored (nothing stale is
/// delivered late).
struct Proxy {
    addr: SocketAddr,
    blackholed: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (blackholed, _) = watch::channel(false);
        let state = blackholed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, state.subscribe()));
            }
        });
        Ok(Self { addr, blackholed })
    }

    fn blackhole(&self, on: bool) {
        self.blackholed.send_replace(on);
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, mut blackholed: watch::Receiver<bool>) {
    let hold_until_restored = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|b| !*b).await;
    };
    if *blackholed.borrow_and_update() {
        return hold_until_restored(blackholed).await; // `client` is dropped (cut) after
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let mut starts = blackholed.clone();
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = async { let _ = starts.wait_for(|b| *b).await; } => hold_until_restored(blackholed).await,
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Replica {
    process: ManagedProcess,
    port: u16,
}

fn start_replica(kubeconfig: &Path, namespace: &str, name: &str, logs: &Path) -> Result<Replica> {
    let port = free_port()?;
    let args: Vec<String> = [
        "run",
        "--http-addr",
        &format!("127.0.0.1:{port}"),
        "--namespace",
        namespace,
        "--leader-lease-seconds",
        &LEASE.as_secs().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let envs = [
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("POD_NAME", name.to_string()),
        ("WATCH_NAMESPACE", namespace.to_string()),
    ];
    let log = logs.join(format!("{name}-{port}.log"));
    let process = ManagedProcess::start(
        name,
        Path::new(env!("CARGO_BIN_EXE_openbao-operator")),
        &args,
        &envs,
        &log,
    )?;
    Ok(Replica { process, port })
}

/// What a replica says of itself: `Some(leader?)`, or `None` when nothing listens (exited).
/// A replica that listens but does not answer counts as a leader: overlap is never hidden.
async fn says_leader(http: &reqwest::Client, port: u16) -> Option<bool> {
    let response = match http.get(format!("http://127.0.0.1:{port}/metrics")).send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return None,
        Err(_) => return Some(true),
    };
    let Ok(text) = response.text().await else {
        return Some(true);
    };
    let gauge = text
        .lines()
        .find_map(|l| l.strip_prefix("openbao_operator_leader "))
        .map(str::trim);
    Some(gauge != Some("0"))
}

async fn wait_for(what: &str, deadline: Duration, mut done: impl AsyncFnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if done().await {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what}: not within {deadline:?}")
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    a: bool,
    b: bool,
}

#[tokio::test]
async fn a_partitioned_leader_stops_before_the_standby_takes_over() -> Result<()> {
    let server = ApiServer::shared().await?;
    let client = client_with_crds(server).await?;
    let ns = create_namespace(&client, "bao-partition").await?;
    let logs = tempfile::tempdir()?;

    let upstream: SocketAddr = server
        .url()
        .strip_prefix("https://")
        .context("the apiserver URL is https")?
        .parse()?;
    let proxy = Proxy::start(upstream).await?;
    let mut kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig_path())?;
    for cluster in &mut kubeconfig.clusters {
        if let Some(c) = cluster.cluster.as_mut() {
            c.server = Some(format!("https://{}", proxy.addr));
        }
    }
    let proxied = logs.path().join("kubeconfig-through-proxy");
    std::fs::write(&proxied, serde_saphyr::to_string(&kubeconfig)?)?;

    let http = reqwest::Client::builder().timeout(Duration::from_secs(1)).build()?;
    let mut a = start_replica(&proxied, &ns, "operator-a", logs.path())?;
    wait_for("A leads", Duration::from_secs(60), async || {
        says_leader(&http, a.port).await == Some(true)
    })
    .await
    .with_context(|| a.process.log_tail(20))?;
    let mut b = start_replica(server.kubeconfig_path(), &ns, "operator-b", logs.path())?;
    wait_for("B is up as a standby", Duration::from_secs(30), async || {
        says_leader(&http, b.port).await == Some(false)
    })
    .await
    .with_context(|| b.process.log_tail(20))?;

    // Both gauges, sampled until the end of the test.
    let ports = Arc::new(Mutex::new((a.port, b.port)));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let (stop_sampling, sampling_stopped) = watch::channel(false);
    let sampler = tokio::spawn({
        let (http, ports, samples) = (http.clone(), ports.clone(), samples.clone());
        async move {
            while !*sampling_stopped.borrow() {
                let (pa, pb) = *ports.lock().unwrap();
                let at = Instant::now();
                let (a, b) = tokio::join!(says_leader(&http, pa), says_leader(&http, pb));
                let sample = Sample {
                    at,
                    a: a == Some(true),
                    b: b == Some(true),
                };
                samples.lock().unwrap().push(sample);
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        }
    });

    let blackholed_at = Instant::now();
    proxy.blackhole(true);
    let a_stopped = wait_for("A stops leading", LEASE, async || {
        says_leader(&http, a.port).await != Some(true)
    })
    .await
    .with_context(|| a.process.log_tail(20))?;
    wait_for(
        "B takes over",
        TAKEOVER_LIMIT.saturating_sub(blackholed_at.elapsed()),
        async || says_leader(&http, b.port).await == Some(true),
    )
    .await
    .with_context(|| b.process.log_tail(20))?;
    let b_leads = blackholed_at.elapsed();
    eprintln!("after the blackhole: A stopped leading at {a_stopped:?}, B led at {b_leads:?}");
    assert!(!a.process.is_running(), "a leader that cannot renew exits");
    let a_log = std::fs::read_to_string(a.process.log_path())?;
    assert!(
        a_log.contains("not renewed in time") || a_log.contains("lost leadership"),
        "{}",
        a.process.log_tail(10)
    );

    // The partition lasts; B keeps leading alone.
    let healed_at = blackholed_at + BLACKHOLE;
    tokio::time::sleep_until(healed_at.into()).await;
    proxy.blackhole(false);
    assert_eq!(says_leader(&http, b.port).await, Some(true), "B still leads");

    // A comes back (as the kubelet restarts an exited container) through the healed network.
    a = start_replica(&proxied, &ns, "operator-a", logs.path())?;
    ports.lock().unwrap().0 = a.port;
    wait_for("the restarted A is up", Duration::from_secs(30), async || {
        says_leader(&http, a.port).await.is_some()
    })
    .await
    .with_context(|| a.process.log_tail(20))?;
    // It stays a standby while B renews: watched for two leases (the samples check every instant).
    let watched_from = Instant::now();
    while watched_from.elapsed() < 2 * LEASE {
        assert_eq!(
            says_leader(&http, a.port).await,
            Some(false),
            "{}",
            a.process.log_tail(20)
        );
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get("openbao-operator-leader")
        .await?
        .spec
        .unwrap_or_default();
    let holder = lease.holder_identity.unwrap_or_default();
    assert!(holder.starts_with("operator-b_"), "holder {holder}");
    assert_eq!(lease.lease_transitions, Some(1), "one takeover");
    assert_eq!(lease.lease_duration_seconds, Some(LEASE.as_secs() as i32));

    stop_sampling.send_replace(true);
    sampler.await?;
    let samples = samples.lock().unwrap().clone();
    let overlaps: Vec<_> = samples.iter().filter(|s| s.a && s.b).collect();
    let largest_gap = samples.windows(2).map(|w| w[1].at - w[0].at).max().unwrap_or_default();
    eprintln!(
        "{} samples, largest gap {largest_gap:?}, {} with both leading",
        samples.len(),
        overlaps.len()
    );
    assert!(overlaps.is_empty(), "both replicas led at once: {overlaps:?}");
    assert!(samples.len() > 300, "sampled {} times", samples.len());
    assert!(
        largest_gap < Duration::from_secs(2),
        "largest sampling gap {largest_gap:?}"
    );
    b.process.stop();
    a.process.stop();
    Ok(())
}
