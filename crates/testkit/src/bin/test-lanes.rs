//! Runs every test binary of the workspace in lanes that do not share state, at the same time.
//!
//! `cargo test` runs its test binaries one after another, so the suite's wall time is the sum of
//! every binary's time, and most of that time is spent waiting for real processes (an apiserver
//! electing, a server unsealing, a pod starting): measured, the two cores were 58% busy with two
//! lanes. Three kinds of binaries exist:
//! - **lane** binaries (`node_lane*`) run `hack/lane.sh` on the one hermetic node that
//!   `hack/test.sh` starts: it installs the operator for the whole cluster (it would reconcile
//!   other tests' clusters too), cert-manager and the lane's NodePorts. Each runs alone on the node;
//! - **node** binaries (`node_*`) share the node too, but each works in namespaces of its own, with
//!   an operator that watches only those: up to `--node-lanes` of them run at once;
//! - every other binary starts its own processes on loopback ports it picks itself (apiservers,
//!   `bao` servers, S3 stores), so it shares nothing and runs beside anything.
//!
//! Every lane takes the next binary it may run: a lane binary when no node binary runs, else a
//! node binary when fewer than `--node-lanes` run and no lane binary waits, else a process binary.
//! Process binaries run at a lower CPU priority (`nice`): the node binaries measure client latency
//! through real pods, which must not lose the cores to a process test's burst. A process test
//! still gets every core the node binaries leave idle.
//!
//! Within a kind the binaries run longest first (durations of the previous run, kept in the build
//! directory), so the lanes finish close together. Each binary's output goes to a log file; its
//! libtest lines (`running N tests`, one line per test, `test result:`) are printed as `cargo test`
//! prints them, one block per binary, and a total `test result:` line closes the run. A failed
//! binary's whole log is printed at the end, followed by a table of every binary's time.
//! The exit status is non-zero when any binary failed, so CI fails loudly.

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Runs the workspace's test binaries in lanes that share no state")]
struct Args {
    /// Binaries running at once.
    #[arg(long, env = "OPENBAO_TEST_LANES", default_value_t = 3)]
    lanes: usize,
    /// Node binaries (each in namespaces of its own) running at once on the one node.
    #[arg(long, env = "OPENBAO_TEST_NODE_LANES", default_value_t = 2)]
    node_lanes: usize,
    /// `nice` increment of the process binaries (and every process they start).
    #[arg(long, env = "OPENBAO_TEST_PROCESS_NICE", default_value_t = 10)]
    process_nice: i32,
    /// Run only the binaries whose name (e.g. `operator/node_backup`) contains one of these.
    only: Vec<String>,
}

/// One test executable that `cargo test --no-run` built.
#[derive(Clone)]
struct TestBinary {
    /// `openbao-operator/node_backup`, or `openbao-operator (unit)` for a crate's own tests.
    name: String,
    executable: PathBuf,
    /// The package directory: cargo runs a test binary there, with `CARGO_MANIFEST_DIR` set to it.
    package_dir: PathBuf,
    kind: Kind,
}

/// What a binary shares with others, and so what may run beside it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Installs cluster-wide parts on the node (`hack/lane.sh`): alone on the node.
    Lane,
    /// Works on the node in namespaces of its own.
    Node,
    /// Starts its own processes; shares nothing.
    Process,
}

struct Outcome {
    binary: TestBinary,
    lane: String,
    passed: bool,
    took: Duration,
    log: PathBuf,
    /// The binary's own libtest lines (`running N tests`, `test x ... ok`, `test result: ...`).
    libtest_lines: Vec<String>,
    counts: TestCounts,
}

/// Test counts summed from libtest's `test result:` lines.
#[derive(Default, Clone, Copy)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Binaries whose target name starts with this share the hermetic node.
const NODE_PREFIX: &str = "node_";
/// Node binaries whose target name starts with this run the lane (see [`Kind::Lane`]).
const LANE_PREFIX: &str = "node_lane";

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("test-lanes: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let binaries: Vec<_> = build_test_binaries()?
        .into_iter()
        .filter(|b| args.only.is_empty() || args.only.iter().any(|o| b.name.contains(o.as_str())))
        .collect();
    let state_dir = target_dir().join("test-lanes");
    fs::create_dir_all(state_dir.join("logs"))?;
    let durations_file = state_dir.join("durations.tsv");
    let previous = read_durations(&durations_file);
    println!(
        "test-lanes: {} binaries built in {:.0} s; {} lanes, at most {} of them on the node",
        binaries.len(),
        started.elapsed().as_secs_f64(),
        args.lanes,
        args.node_lanes
    );

    let by_duration_desc = |mut list: Vec<TestBinary>| -> VecDeque<TestBinary> {
        list.sort_by(|a, b| {
            let da = previous.get(&a.name).copied().unwrap_or(0.0);
            let db = previous.get(&b.name).copied().unwrap_or(0.0);
            db.total_cmp(&da).then_with(|| a.name.cmp(&b.name))
        });
        list.into()
    };
    let queues = Queues::new(binaries, by_duration_desc, args.node_lanes.max(1));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let tests_started = Instant::now();
    let cpu = CpuSampler::start();
    let process_nice = args.process_nice;
    let handles: Vec<_> = (1..=args.lanes.max(1))
        .map(|i| {
            let (queues, outcomes) = (queues.clone(), outcomes.clone());
            let logs = state_dir.join("logs");
            let lane = format!("lane-{i}");
            std::thread::spawn(move || {
                while let Some(binary) = queues.next() {
                    let nice = if binary.kind == Kind::Process { process_nice } else { 0 };
                    let outcome = run_binary(&binary, &lane, nice, &logs);
                    queues.finished(binary.kind);
                    print_outcome(&outcome);
                    outcomes.lock().expect("outcomes").push(outcome);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().map_err(|_| anyhow::anyhow!("a lane thread panicked"))?;
    }

    let mut outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));
    outcomes.sort_by_key(|o| std::cmp::Reverse(o.took));
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.passed).collect();
    for outcome in &failed {
        println!(
            "\n===== FAILED {} (log {}) =====",
            outcome.binary.name,
            outcome.log.display()
        );
        print!("{}", fs::read_to_string(&outcome.log).unwrap_or_default());
    }
    print_summary(&outcomes, tests_started.elapsed());
    println!("{}", cpu.finish());
    for outcome in &failed {
        print_failure_reason(outcome);
    }
    write_durations(&durations_file, &previous, &outcomes)?;
    if !failed.is_empty() {
        let names: Vec<_> = failed.iter().map(|o| o.binary.name.as_str()).collect();
        bail!("{} test binaries failed: {}", failed.len(), names.join(", "));
    }
    Ok(())
}

/// The binaries still to run, by kind, and what runs on the node now: the rules of the module
/// comment. Shared by the lanes' threads.
#[derive(Clone)]
struct Queues {
    state: Arc<(Mutex<QueueState>, std::sync::Condvar)>,
    node_lanes: usize,
}

struct QueueState {
    lane: VecDeque<TestBinary>,
    node: VecDeque<TestBinary>,
    process: VecDeque<TestBinary>,
    /// Lane and node binaries running now.
    on_node: usize,
    /// Whether the one running on the node is a lane binary.
    lane_running: bool,
}

impl Queues {
    fn new(
        binaries: Vec<TestBinary>,
        order: impl Fn(Vec<TestBinary>) -> VecDeque<TestBinary>,
        node_lanes: usize,
    ) -> Self {
        let of = |kind: Kind| order(binaries.iter().filter(|b| b.kind == kind).cloned().collect());
        let state = QueueState {
            lane: of(Kind::Lane),
            node: of(Kind::Node),
            process: of(Kind::Process),
            on_node: 0,
            lane_running: false,
        };
        Self {
            state: Arc::new((Mutex::new(state), std::sync::Condvar::new())),
            node_lanes,
        }
    }

    /// The next binary this lane may run; waits while only node binaries are left and the node
    /// is full. `None`: nothing is left to run.
    fn next(&self) -> Option<TestBinary> {
        let (lock, changed) = &*self.state;
        let mut state = lock.lock().expect("queues");
        loop {
            if state.lane.is_empty() && state.node.is_empty() && state.process.is_empty() {
                return None;
            }
            // A lane binary waits for the node to empty; no node binary starts meanwhile.
            let picked = if !state.lane.is_empty() {
                (state.on_node == 0).then(|| state.lane.pop_front()).flatten()
            } else if state.on_node < self.node_lanes && !state.lane_running {
                state.node.pop_front()
            } else {
                None
            };
            if let Some(binary) = picked {
                state.on_node += 1;
                state.lane_running = binary.kind == Kind::Lane;
                return Some(binary);
            }
            if let Some(binary) = state.process.pop_front() {
                return Some(binary);
            }
            state = changed.wait(state).expect("queues");
        }
    }

    fn finished(&self, kind: Kind) {
        let (lock, changed) = &*self.state;
        if kind != Kind::Process {
            let mut state = lock.lock().expect("queues");
            state.on_node -= 1;
            state.lane_running = false;
        }
        changed.notify_all();
    }
}

/// Builds every test target (`cargo test --no-run`) and reads the executables from cargo's JSON.
fn build_test_binaries() -> Result<Vec<TestBinary>> {
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "test",
            "--workspace",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("run cargo test --no-run")?;
    let mut binaries = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let message: serde_json::Value = serde_json::from_str(&line?)?;
        if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
            continue;
        }
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        let target = message["target"]["name"].as_str().unwrap_or_default();
        let kind = message["target"]["kind"][0].as_str().unwrap_or_default();
        let manifest = PathBuf::from(message["manifest_path"].as_str().unwrap_or_default());
        let package_dir = manifest.parent().context("manifest path has a parent")?.to_path_buf();
        let package = package_dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let name = match kind {
            "test" => format!("{package}/{target}"),
            _ => format!("{package}/{target} ({kind})"),
        };
        binaries.push(TestBinary {
            name,
            executable: executable.into(),
            package_dir,
            kind: match kind {
                "test" if target.starts_with(LANE_PREFIX) => Kind::Lane,
                "test" if target.starts_with(NODE_PREFIX) => Kind::Node,
                _ => Kind::Process,
            },
        });
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo test --no-run failed with {status}");
    }
    Ok(binaries)
}

fn run_binary(binary: &TestBinary, lane: &str, nice: i32, logs: &Path) -> Outcome {
    let log = logs.join(format!("{}.log", binary.name.replace(['/', ' ', '(', ')'], "_")));
    let started = Instant::now();
    let passed = (|| -> Result<bool> {
        let out = fs::File::create(&log)?;
        let mut command = Command::new("nice");
        command.arg("-n").arg(nice.to_string()).arg(&binary.executable);
        let status = command
            .current_dir(&binary.package_dir)
            .env("CARGO_MANIFEST_DIR", &binary.package_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .with_context(|| format!("run {}", binary.executable.display()))?;
        Ok(status.success())
    })()
    .unwrap_or_else(|e| {
        let _ = fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .map(|mut f| writeln!(f, "{e:#}"));
        false
    });
    let took = started.elapsed();
    let libtest_lines = libtest_lines(&fs::read_to_string(&log).unwrap_or_default());
    let counts = count_tests(&libtest_lines);
    Outcome {
        binary: binary.clone(),
        lane: lane.to_string(),
        passed,
        took,
        log,
        libtest_lines,
        counts,
    }
}

/// The lines libtest itself prints, in the format `cargo test` shows, without the tests' own
/// output (tracing, process logs), which stays in the binary's log file.
fn libtest_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| {
            let running = line.starts_with("running ") && (line.ends_with(" test") || line.ends_with(" tests"));
            running || line.starts_with("test result: ") || line.starts_with("test ") && line.contains(" ... ")
        })
        .map(str::to_string)
        .collect()
}

fn count_tests(lines: &[String]) -> TestCounts {
    let mut counts = TestCounts::default();
    for line in lines.iter().filter_map(|l| l.strip_prefix("test result: ")) {
        for part in line.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => counts.passed += n,
                "failed" => counts.failed += n,
                "ignored" => counts.ignored += n,
                _ => {}
            }
        }
    }
    counts
}

/// One binary's block, as `cargo test` prints it (its `Running` header, then libtest's lines),
/// written at once so the lanes' blocks never interleave.
fn print_outcome(outcome: &Outcome) {
    let mut block = format!(
        "\n     Running {} [{}, {:.1} s, {}]\n",
        outcome.binary.name,
        outcome.lane,
        outcome.took.as_secs_f64(),
        if outcome.passed { "ok" } else { "FAILED" }
    );
    for line in &outcome.libtest_lines {
        block.push_str(line);
        block.push('\n');
    }
    if outcome.libtest_lines.is_empty() {
        block.push_str("(no libtest output; see the log below)\n");
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(block.as_bytes());
    let _ = stdout.flush();
}

fn print_summary(outcomes: &[Outcome], wall: Duration) {
    println!("\n== test binaries, slowest first");
    let mut per_lane: BTreeMap<&str, f64> = BTreeMap::new();
    for o in outcomes {
        *per_lane.entry(o.lane.as_str()).or_default() += o.took.as_secs_f64();
        if o.took >= Duration::from_secs(1) || !o.passed {
            println!(
                "{:>7.1} s  {:<9}  {}{}",
                o.took.as_secs_f64(),
                o.lane,
                o.binary.name,
                if o.passed { "" } else { "  FAILED" }
            );
        }
    }
    let busy: Vec<_> = per_lane.iter().map(|(l, s)| format!("{l} {s:.0} s")).collect();
    let total = outcomes.iter().fold(TestCounts::default(), |sum, o| TestCounts {
        passed: sum.passed + o.counts.passed,
        failed: sum.failed + o.counts.failed,
        ignored: sum.ignored + o.counts.ignored,
    });
    let all_passed = outcomes.iter().all(|o| o.passed);
    println!(
        "test result: {}. {} passed; {} failed; {} ignored; 0 measured; 0 filtered out; finished in {:.2}s (all {} binaries)",
        if all_passed { "ok" } else { "FAILED" },
        total.passed,
        total.failed,
        total.ignored,
        wall.as_secs_f64(),
        outcomes.len()
    );
    println!(
        "== {} binaries, {} failed; wall {:.0} s; busy per lane: {}",
        outcomes.len(),
        outcomes.iter().filter(|o| !o.passed).count(),
        wall.as_secs_f64(),
        busy.join(", ")
    );
}

/// The panic lines of a failed binary, repeated after the summary: a CI record that keeps only the
/// run's beginning and end still says why it failed.
fn print_failure_reason(outcome: &Outcome) {
    let log = fs::read_to_string(&outcome.log).unwrap_or_default();
    let mut reason = Vec::new();
    let mut lines = log.lines();
    while let Some(line) = lines.next() {
        if line.contains("panicked at") || line.starts_with("Error: ") {
            reason.push(line);
            reason.extend(lines.by_ref().take(FAILURE_REASON_LINES));
        }
    }
    println!("== why {} failed:", outcome.binary.name);
    if reason.is_empty() {
        println!("(no panic line; the log is printed above)");
    }
    for line in reason.iter().take(4 * FAILURE_REASON_LINES) {
        println!("   {}", truncate(line, 400));
    }
}

/// How busy the machine's cores were while the lanes ran: whether another lane would find a
/// core to run on. Samples `/proc/stat` every [`CPU_WINDOW`].
struct CpuSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Vec<f64>>,
}

const CPU_WINDOW: Duration = Duration::from_secs(10);

impl CpuSampler {
    fn start() -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut windows = Vec::new();
            let mut last = cpu_times();
            let mut window_start = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                // Short naps, so that `finish` does not wait out a whole window.
                std::thread::sleep(Duration::from_millis(500));
                if window_start.elapsed() < CPU_WINDOW {
                    continue;
                }
                window_start = Instant::now();
                let now = cpu_times();
                if let (Some((busy0, total0)), Some((busy1, total1))) = (last, now)
                    && total1 > total0
                {
                    windows.push((busy1 - busy0) as f64 / (total1 - total0) as f64);
                }
                last = now;
            }
            windows
        });
        Self { stop, handle }
    }

    /// One line: the mean utilisation and the share of windows in which every core was busy.
    fn finish(self) -> String {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let windows = self.handle.join().unwrap_or_default();
        if windows.is_empty() {
            return "== cpu: no sample".to_string();
        }
        let mean = windows.iter().sum::<f64>() / windows.len() as f64;
        let saturated = windows.iter().filter(|w| **w >= 0.95).count();
        format!(
            "== cpu: {:.0}% busy on average over {} cores; every core busy in {} of {} {}-s windows",
            mean * 100.0,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            saturated,
            windows.len(),
            CPU_WINDOW.as_secs()
        )
    }
}

/// `(busy, total)` jiffies of all cores from `/proc/stat` (idle and iowait count as not busy).
fn cpu_times() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle, total))
}

/// Lines kept after each panic line (the message, usually on the next lines).
const FAILURE_REASON_LINES: usize = 12;

fn truncate(line: &str, max: usize) -> &str {
    match line.char_indices().nth(max) {
        Some((at, _)) => &line[..at],
        None => line,
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn read_durations(path: &Path) -> BTreeMap<String, f64> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (secs, name) = line.split_once('\t')?;
            Some((name.to_string(), secs.parse().ok()?))
        })
        .collect()
}

fn write_durations(path: &Path, previous: &BTreeMap<String, f64>, outcomes: &[Outcome]) -> Result<()> {
    let mut all = previous.clone();
    for o in outcomes {
        all.insert(o.binary.name.clone(), o.took.as_secs_f64());
    }
    let text: String = all.iter().map(|(name, secs)| format!("{secs:.1}\t{name}\n")).collect();
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
}
