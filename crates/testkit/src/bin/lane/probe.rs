//! The upgrade rehearsal's probe: a GET through the edge every 200 ms, each on a new
//! connection and verified with the lane's CA, and the figures the lane reports of it.

use anyhow::{Context as _, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the probe calls and how it reaches it.
pub struct Target {
    pub url: reqwest::Url,
    /// Where the URL's host resolves (the edge's address).
    pub address: std::net::IpAddr,
    /// PEM bundle the edge's certificate is verified with.
    pub ca: Vec<u8>,
}

/// How often the probe asks, and how long one request may take.
const PERIOD: Duration = Duration::from_millis(200);
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// The status a request that got no answer is counted as (curl's `000`).
const NO_ANSWER: u16 = 0;

/// One request: when it was sent (ms from the probe's start) and the HTTP status it got.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at_ms: u64,
    pub code: u16,
}

pub struct Running {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

pub fn start(target: &Target) -> Result<Running> {
    let certs = reqwest::Certificate::from_pem_bundle(&target.ca).context("the probe's CA is not PEM")?;
    let host = target.url.host_str().context("the probe URL has no host")?;
    let port = target.url.port_or_known_default().unwrap_or(443);
    let http = reqwest::Client::builder()
        .tls_certs_only(certs)
        .resolve(host, std::net::SocketAddr::new(target.address, port))
        // Each request on a new connection, as a new client would come: a kept-alive one
        // stays with whatever server it reached first.
        .pool_max_idle_per_host(0)
        .no_proxy()
        .timeout(ANSWER_WITHIN)
        .build()
        .context("the probe's HTTP client")?;
    let stop = Arc::new(AtomicBool::new(false));
    let url = target.url.clone();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let began = Instant::now();
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(PERIOD);
        // A slow answer: start the cadence again from now instead of firing to catch up.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stopped.load(Ordering::Relaxed) {
            tick.tick().await;
            let at_ms = began.elapsed().as_millis() as u64;
            let code = match http.get(url.clone()).send().await {
                Ok(response) => response.status().as_u16(),
                Err(_) => NO_ANSWER,
            };
            samples.push(Sample { at_ms, code });
        }
        samples
    });
    Ok(Running { stop, task })
}

impl Running {
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// What the lane says of a probe run.
#[derive(Debug, PartialEq)]
pub struct Summary {
    pub requests: usize,
    /// Requests not answered 200 (active, or an unsealed standby with `standbyok`).
    pub failed: usize,
    /// From the first failed request of a run to the next success, or to the last request
    /// when the run never recovered.
    pub longest_window: Duration,
    /// Failed answers by status (`0`: none within the request's time).
    pub failed_codes: BTreeMap<u16, usize>,
}

pub fn summarize(samples: &[Sample]) -> Summary {
    let mut summary = Summary {
        requests: samples.len(),
        failed: 0,
        longest_window: Duration::ZERO,
        failed_codes: BTreeMap::new(),
    };
    let mut failing_since = None;
    let mut longest_ms = 0;
    for sample in samples {
        if sample.code == 200 {
            if let Some(since) = failing_since.take() {
                longest_ms = longest_ms.max(sample.at_ms - since);
            }
        } else {
            summary.failed += 1;
            *summary.failed_codes.entry(sample.code).or_default() += 1;
            failing_since.get_or_insert(sample.at_ms);
        }
    }
    if let (Some(since), Some(last)) = (failing_since, samples.last()) {
        longest_ms = longest_ms.max(last.at_ms - since);
    }
    summary.longest_window = Duration::from_millis(longest_ms);
    summary
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests, {} failed, longest window {} ms",
            self.requests,
            self.failed,
            self.longest_window.as_millis()
        )
    }
}

impl Summary {
    /// The failed answers, e.g. ` (failed answers: 000:2 503:1)`, or nothing.
    pub fn failed_answers(&self) -> String {
        if self.failed_codes.is_empty() {
            return String::new();
        }
        let codes: Vec<String> = self
            .failed_codes
            .iter()
            .map(|(code, n)| format!("{code:03}:{n}"))
            .collect();
        format!(" (failed answers: {})", codes.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(list: &[(u64, u16)]) -> Vec<Sample> {
        list.iter().map(|&(at_ms, code)| Sample { at_ms, code }).collect()
    }

    #[test]
    fn the_longest_window_runs_from_the_first_failure_to_the_next_success() {
        let s = summarize(&samples(&[
            (0, 200),
            (200, 503),
            (400, 0),
            (700, 200),
            (900, 502),
            (1000, 200),
        ]));
        assert_eq!((s.requests, s.failed), (6, 3));
        assert_eq!(s.longest_window, Duration::from_millis(500));
        assert_eq!(s.failed_answers(), " (failed answers: 000:1 502:1 503:1)");
        assert_eq!(s.to_string(), "6 requests, 3 failed, longest window 500 ms");
    }

    #[test]
    fn a_run_that_never_recovers_counts_to_the_last_request() {
        let s = summarize(&samples(&[(0, 200), (200, 503), (2600, 503)]));
        assert_eq!(s.longest_window, Duration::from_millis(2400));
        let clean = summarize(&samples(&[(0, 200), (200, 200)]));
        assert_eq!(
            (clean.failed, clean.longest_window, clean.failed_answers()),
            (0, Duration::ZERO, String::new())
        );
    }
}
