//! The backup and restore executors against real parts: OpenBao 2.7.2 nodes bootstrapped from
//! the operator's rendered self-init requests (the executors log in with the JWT roles it
//! renders), and a real S3 server (RustFS when built, else s3s-fs; the test prints which).
//!
//! The executors run in-process (`executors::backup::run`) and, for the result line, exit code
//! and memory, as the real `openbao-operator backup` binary. The shared set-up is in `common/`.

mod common;

use anyhow::{Context as _, Result, bail};
use common::{
    BUCKET, CLUSTER, NAMESPACE, Node, PREFIX, Throttle, World, admin, assert_key_shape, read_secret, s3_with_bucket,
    store, write_bulk, write_secret,
};
use openbao_operator::executors::ExecutorError;
use openbao_operator::executors::backup;
use openbao_operator::executors::restore;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use testkit::process::ManagedProcess;
use testkit::s3::{S3Server, SECRET_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restores_into_a_fresh_node_and_a_foreign_seal_is_refused() -> Result<()> {
    let world = World::new()?;
    let s3 = s3_with_bucket().await?;
    let key_a = world.seal_key("seal-a")?;
    let source = world.start_node("source", &key_a).await?;
    let source_admin = admin(&source).await?;
    write_secret(&source_admin, "app/db", "s3cr3t-from-source").await?;
    write_secret(&source_admin, "app/api", "token-from-source").await?;

    let report = backup::run(&world.backup_args(&source, &s3)?).await?;
    eprintln!("backup: {}", serde_json::to_string(&report)?);
    assert_key_shape(&report.key);
    assert_eq!(report.leader, source.url);
    let listed = store(&s3)?.list(&format!("{PREFIX}/{NAMESPACE}/{CLUSTER}")).await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].key.as_str(), listed[0].size),
        (report.key.as_str(), report.size)
    );
    // The stored bytes are the uploaded bytes.
    store(&s3)?
        .verify_checksum(&report.key, report.size, &report.sha256)
        .await?;
    assert!(report.size > 10_000, "a raft snapshot, not an empty object");

    // A fresh node with the same seal key: the backup restores and the secrets come back.
    let target = world.start_node("target", &key_a).await?;
    let before_restore = admin(&target).await?;
    write_secret(&before_restore, "only/target", "lost-on-restore").await?;
    let restored = restore::run(&world.restore_args(&target, &s3, &report.key)?).await?;
    eprintln!("restore: {}", serde_json::to_string(&restored)?);
    // The restore is in place when the executor returns: OpenBao answers the restore call
    // before it applies the snapshot (in a goroutine: pre-seal, apply, post-unseal), and its
    // health says active all along, so the server's own log must already show the post-unseal
    // that follows applying it.
    let log = std::fs::read_to_string(target.server.log_path())?;
    let applying = log
        .rfind("applying snapshot")
        .context("the server never logged applying the snapshot")?;
    assert!(
        log[applying..].contains("post-unseal setup complete"),
        "restore::run returned before OpenBao finished installing the snapshot:\n{}",
        &log[applying..]
    );
    // And a token of the replaced token store is refused at once, not after a retry.
    let refused = before_restore
        .token_lookup_self()
        .await
        .expect_err("a token issued before the restore must be gone once restore::run returned");
    assert_eq!(refused.status(), Some(403), "{refused}");
    // Tokens of the target died with its old token store: log in again.
    let target_admin = admin(&target).await?;
    assert_eq!(
        read_secret(&target_admin, "app/db").await?.as_deref(),
        Some("s3cr3t-from-source")
    );
    assert_eq!(
        read_secret(&target_admin, "app/api").await?.as_deref(),
        Some("token-from-source")
    );
    assert_eq!(read_secret(&target_admin, "only/target").await?, None);

    // A node with another seal key: the snapshot is refused and the node stays unsealed with
    // its own data.
    let key_b = world.seal_key("seal-b")?;
    let mut foreign = world.start_node("foreign", &key_b).await?;
    write_secret(&admin(&foreign).await?, "mine", "still-here").await?;
    let err = restore::run(&world.restore_args(&foreign, &s3, &report.key)?)
        .await
        .expect_err("a foreign seal must be refused");
    eprintln!("foreign seal: {} ({err})", err.reason());
    assert_eq!(err.reason(), "SealMismatch");
    assert!(err.to_string().contains("could not verify hash file"), "{err}");
    foreign.server.wait_active(Duration::from_secs(5)).await?;
    assert_eq!(
        read_secret(&admin(&foreign).await?, "mine").await?.as_deref(),
        Some("still-here")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_exactly_max_count_backups() -> Result<()> {
    let world = World::new()?;
    let s3 = s3_with_bucket().await?;
    let node = world.start_node("node", &world.seal_key("seal")?).await?;
    let store = store(&s3)?;
    // Not a backup: retention must leave it alone.
    let foreign = format!("{PREFIX}/{NAMESPACE}/{CLUSTER}/README");
    store
        .upload_stream(
            &foreign,
            futures::stream::iter([Ok::<_, std::io::Error>(openbao_client::Bytes::from_static(b"notes"))]),
        )
        .await?;

    let mut args = world.backup_args(&node, &s3)?;
    args.retention_max_count = Some(2);
    let mut keys: Vec<String> = Vec::new();
    for round in 0..4 {
        let report = backup::run(&args).await?;
        eprintln!("backup {round}: {} deleted {:?}", report.key, report.deleted);
        if round >= 2 {
            // Exactly the oldest remaining backup goes.
            assert_eq!(report.deleted, [keys[round - 2].clone()], "round {round}");
        } else {
            assert!(report.deleted.is_empty(), "round {round}");
        }
        keys.push(report.key);
        // Distinct timestamps in the keys (they have one-second resolution).
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let mut remaining: Vec<String> = store
        .list(&format!("{PREFIX}/{NAMESPACE}/{CLUSTER}"))
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    remaining.sort();
    let mut expected = vec![keys[2].clone(), keys[3].clone(), foreign];
    expected.sort();
    assert_eq!(remaining, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_faults_are_reported_with_their_reasons() -> Result<()> {
    let world = World::new()?;
    let mut s3 = s3_with_bucket().await?;
    let node = world.start_node("node", &world.seal_key("seal")?).await?;

    let mut wrong = world.backup_args(&node, &s3)?;
    wrong.store = world.store_args(&s3, BUCKET, "not-the-secret-key")?;
    let err = backup::run(&wrong).await.expect_err("wrong secret");
    eprintln!("wrong secret: {} ({err})", err.reason());
    assert_eq!(err.reason(), "CredentialsRejected");
    assert!(!err.to_string().contains(SECRET_KEY) && !err.to_string().contains("not-the-secret-key"));

    let mut missing = world.backup_args(&node, &s3)?;
    missing.store = world.store_args(&s3, "no-such-bucket", SECRET_KEY)?;
    let err = backup::run(&missing).await.expect_err("missing bucket");
    eprintln!("missing bucket: {} ({err})", err.reason());
    assert_eq!(err.reason(), "BucketMissing");

    // The store is down before the upload.
    s3.kill();
    let started = Instant::now();
    let err = backup::run(&world.backup_args(&node, &s3)?)
        .await
        .expect_err("store down");
    eprintln!("store down: {} after {:?} ({err})", err.reason(), started.elapsed());
    assert_eq!(err.reason(), "Unreachable");
    s3.start_again().await?;
    assert!(store(&s3)?.list("").await?.is_empty(), "nothing may be listed");

    // The JWT role of another Job cannot take snapshots.
    let mut other_role = world.backup_args(&node, &s3)?;
    other_role.openbao.jwt_token_file = world.token_file("restore")?;
    other_role.jwt_role = "openbao-operator-restore".into();
    let err = backup::run(&other_role)
        .await
        .expect_err("restore role cannot read snapshots");
    eprintln!("restore role: {} ({err})", err.reason());
    assert_eq!(err.reason(), "OpenBaoAuthFailed");

    // No active node at the given address.
    let mut nowhere = world.backup_args(&node, &s3)?;
    nowhere.openbao.addresses = vec!["https://127.0.0.1:1".into()];
    nowhere.openbao.leader_timeout = Duration::from_secs(1);
    let err = backup::run(&nowhere).await.expect_err("no leader");
    assert_eq!(err.reason(), "LeaderNotFound");

    // The restore of a key that does not exist touches nothing.
    let err = restore::run(&world.restore_args(&node, &s3, "backups/none.snap")?)
        .await
        .expect_err("no such backup");
    assert_eq!(err.reason(), "ObjectMissing");
    assert!(matches!(err, ExecutorError::Store(_)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_killed_during_the_upload_leaves_no_object() -> Result<()> {
    let world = World::new()?;
    let mut s3 = s3_with_bucket().await?;
    let node = world.start_node("node", &world.seal_key("seal")?).await?;
    // About 21 MB of snapshot (values are encrypted, so it does not compress): four 5 MiB parts.
    write_bulk(&admin(&node).await?, 320, 32 * 1024).await?;

    // The snapshot flows at 2 MB/s through the proxy; the store is killed once 6 MiB have gone
    // through (so at least one part was sent), leaving seconds of snapshot still to come: the
    // kill always lands in the middle of the upload.
    let throttle = Throttle::start(node.addr.api(), 2_000_000).await?;
    let mut args = world.backup_args(&node, &s3)?;
    args.openbao.addresses = vec![throttle.url()];
    args.openbao.pin_active = false;
    let forwarded = throttle.forwarded.clone();
    let backup = tokio::spawn(async move { backup::run(&args).await });
    let started = Instant::now();
    while forwarded.load(Ordering::Relaxed) < 6 * 1024 * 1024 {
        if started.elapsed() > Duration::from_secs(60) || backup.is_finished() {
            bail!("the snapshot transfer did not get going");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s3.kill();
    eprintln!(
        "killed the store after {} bytes of snapshot",
        forwarded.load(Ordering::Relaxed)
    );
    let err = backup.await?.expect_err("the store died mid-upload");
    eprintln!("store killed mid-upload: {} ({err})", err.reason());
    assert_eq!(err.reason(), "Unreachable");
    assert!(err.to_string().contains("uploading a part"), "{err}");

    s3.start_again().await?;
    assert!(
        store(&s3)?.list("").await?.is_empty(),
        "no partial object may be listed"
    );
    Ok(())
}

/// Runs the real binary under `/usr/bin/time -v`; returns (result line, exit status, peak RSS
/// in KiB).
async fn run_binary(subcommand: &str, envs: &[(&str, String)], dir: &Path) -> Result<(Value, i32, u64)> {
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let stats = dir.join(format!("{subcommand}-{run}.time"));
    let log = dir.join(format!("{subcommand}-{run}.log"));
    let args = vec![
        "-v".to_string(),
        "-o".into(),
        stats.display().to_string(),
        env!("CARGO_BIN_EXE_openbao-operator").into(),
        subcommand.into(),
    ];
    let mut process = ManagedProcess::start(subcommand, Path::new("/usr/bin/time"), &args, envs, &log)?;
    let started = Instant::now();
    while process.is_running() {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("{subcommand} still running after 5 min:\n{}", process.log_tail(20));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = std::fs::read_to_string(&log)?;
    let result = output
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["operation"] == subcommand && v.get("result").is_some())
        .with_context(|| format!("no result line in:\n{output}"))?;
    let stats_text = std::fs::read_to_string(&stats)?;
    let field = |name: &str| -> Result<u64> {
        stats_text
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().parse::<u64>()))
            .with_context(|| format!("{name} not in {stats_text}"))?
            .map_err(Into::into)
    };
    let exit = field("Exit status:").unwrap_or(0) as i32;
    Ok((result, exit, field("Maximum resident set size (kbytes):")?))
}

fn binary_env(world: &World, node: &Node, s3: &S3Server, secret: &str) -> Result<Vec<(&'static str, String)>> {
    Ok(vec![
        ("OPENBAO_ADDRESSES", node.url.clone()),
        ("OPENBAO_CA_FILE", node.ca_file.display().to_string()),
        (
            "OPENBAO_JWT_TOKEN_FILE",
            world.token_file("backup")?.display().to_string(),
        ),
        ("CLUSTER_NAMESPACE", NAMESPACE.into()),
        ("CLUSTER_NAME", CLUSTER.into()),
        ("S3_ENDPOINT", s3.endpoint()),
        ("S3_BUCKET", BUCKET.into()),
        ("S3_PATH_PREFIX", PREFIX.into()),
        (
            "S3_CREDENTIALS_DIR",
            world.credentials_dir("binary", secret)?.display().to_string(),
        ),
        ("S3_PART_SIZE_MIB", "8".into()),
        ("BACKUP_RETENTION_MAX_COUNT", "1".into()),
        ("RUST_LOG", "info".into()),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_one_result_line_and_keeps_memory_flat() -> Result<()> {
    let world = World::new()?;
    let s3 = s3_with_bucket().await?;
    let node = world.start_node("node", &world.seal_key("seal")?).await?;
    let admin = admin(&node).await?;
    // MB of KV data for the large snapshot (about its size: the values are encrypted). At
    // least 128, so that the medium run (a quarter) already fills all part buffers.
    let kv_mb: usize = std::env::var("BACKUP_TEST_KV_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
        .max(128);

    // Settings that do not parse still give a result line.
    let (line, exit, _) = run_binary("backup", &[("S3_BUCKET", BUCKET.into())], world.path()).await?;
    eprintln!("binary, no settings (exit {exit}): {line}");
    assert_eq!((exit, line["reason"].as_str()), (1, Some("InvalidConfig")));
    assert!(line["message"].as_str().unwrap_or_default().contains("--openbao-addr"));

    // A failure: exit status 1 and a reason, and no secret in the output.
    let (line, exit, _) = run_binary("backup", &binary_env(&world, &node, &s3, "wrong-secret")?, world.path()).await?;
    eprintln!("binary, wrong secret (exit {exit}): {line}");
    assert_eq!(
        (exit, line["result"].as_str(), line["reason"].as_str()),
        (1, Some("Failed"), Some("CredentialsRejected"))
    );
    assert!(!line.to_string().contains("wrong-secret"));

    // Three snapshot sizes: a fresh store plus 1 MB, then a quarter of the large size, then the
    // large size. The part buffers make the second run use more than the first (they are
    // bounded by part size × (concurrency + 1) = 24 MiB), but from there on the peak must stay
    // where it is however large the snapshot grows.
    let env = binary_env(&world, &node, &s3, SECRET_KEY)?;
    let mut runs: Vec<(Value, u64)> = Vec::new();
    for kv_bytes in [1024 * 1024, kv_mb * 1024 * 1024 / 4, kv_mb * 1024 * 1024 * 3 / 4] {
        // 128 KiB of hex per secret; values are encrypted by the barrier, so the snapshot
        // does not compress them: it grows by about `kv_bytes`.
        write_bulk(&admin, kv_bytes / (128 * 1024), 64 * 1024).await?;
        let (line, exit, rss) = run_binary("backup", &env, world.path()).await?;
        assert_eq!(exit, 0, "{line}");
        assert_eq!(line["result"], "Succeeded");
        assert_key_shape(line["key"].as_str().unwrap_or_default());
        if let Some((previous, _)) = runs.last() {
            // Retention (max 1) removed the previous backup.
            assert_eq!(line["deleted"], json!([previous["key"]]));
        }
        let size = line["size"].as_u64().unwrap_or_default();
        let transfer_ms = line["transfer_ms"].as_f64().unwrap_or(1.0);
        eprintln!(
            "memory: snapshot {:.1} MB -> peak RSS {:.1} MiB (snapshot+upload {} ms = {:.1} MB/s; with the \
             checksum read-back {} ms)",
            size as f64 / 1e6,
            rss as f64 / 1024.0,
            line["transfer_ms"],
            size as f64 / 1e6 / (transfer_ms / 1000.0),
            line["duration_ms"],
        );
        runs.push((line, rss));
    }
    let size = |i: usize| runs[i].0["size"].as_u64().unwrap_or_default();
    assert!(
        size(2) > 3 * size(1) && size(1) > 10 * size(0),
        "sizes {} {} {}",
        size(0),
        size(1),
        size(2)
    );
    let (medium_rss, large_rss) = (runs[1].1, runs[2].1);
    assert!(
        large_rss < medium_rss + 8 * 1024,
        "peak RSS grew from {medium_rss} KiB to {large_rss} KiB while the snapshot grew from {} to {} bytes",
        size(1),
        size(2)
    );
    Ok(())
}
