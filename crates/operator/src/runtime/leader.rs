//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas at
//! most one acts at any instant, even when the apiserver, the network or a request hangs.
//!
//! Two rules, each measured only on the process's own monotonic clock (the remote `renewTime` is
//! never compared with a local clock, so skew between nodes does not matter):
//! - the leader's tenure ends [`LeaseTiming::renew_deadline`] (2/3 of the lease duration) after it
//!   *sent* its last successful write of the Lease; a [`watchdog`] thread then exits the process,
//!   whatever the async runtime or a hung request is doing;
//! - a standby takes the Lease only after seeing the same record (holder, renewTime,
//!   resourceVersion) unchanged for a full lease duration, and writes it with the resourceVersion
//!   it saw, so a renewal in between makes the takeover fail (409).
//!
//! A write sent at `s` commits at `c >= s` and a standby first sees it at `>= c`, so the standby
//! acts at `>= s + duration`, a third of a lease after the leader stopped. A released Lease (no
//! holder) is taken at once: the leader releases only after its controllers stopped.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every period of the election derives from the lease duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    pub duration: Duration,
}

impl LeaseTiming {
    /// How long after sending its last successful write the leader stops acting. The third of a
    /// lease left is the margin for clock rate differences and for the process to exit.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// How often the leader renews and a standby reads the Lease.
    pub fn retry_period(&self) -> Duration {
        self.duration / 6
    }

    /// Bound of one Lease request: three hung attempts fit in the renew deadline.
    pub fn call_timeout(&self) -> Duration {
        self.duration / 5
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("Lease request while {action} failed: {source}")]
    Kube { action: &'static str, source: kube::Error },
    #[error("Lease request while {action} got no answer within {timeout:?}")]
    Timeout { action: &'static str, timeout: Duration },
}

/// Until when this process may act as leader, on its own monotonic clock; only moves forward.
#[derive(Clone, Debug)]
pub struct Tenure(Arc<Mutex<Instant>>);

impl Tenure {
    fn new(until: Instant) -> Self {
        Self(Arc::new(Mutex::new(until)))
    }

    pub fn until(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn extend_to(&self, until: Instant) {
        let mut current = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = (*current).max(until);
    }
}

/// Calls `on_expired` (which should end the process) once `tenure` ends, from a thread of its own
/// so that neither a blocked async runtime nor a hung request can delay it.
pub fn watchdog(tenure: Tenure, on_expired: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name("leader-watchdog".into())
        .spawn(move || {
            loop {
                let now = Instant::now();
                let until = tenure.until();
                if now >= until {
                    on_expired();
                    return;
                }
                std::thread::sleep(until - now);
            }
        })
        .expect("spawning the leader watchdog thread");
}

/// The parts of a Lease that say whether its holder is still renewing it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
    resource_version: Option<String>,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            holder: spec.and_then(|s| s.holder_identity.clone()).filter(|h| !h.is_empty()),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// What a standby knows of the Lease: the record it last saw and since when (its own clock).
#[derive(Debug, Default)]
struct Observer {
    seen: Option<(Record, Instant)>,
}

impl Observer {
    /// Notes `record` as seen at `now`; true when it may be taken: nobody holds it, or it has
    /// stayed the same for `duration` of this process's clock.
    fn may_take(&mut self, record: Record, now: Instant, duration: Duration) -> bool {
        if record.holder.is_none() {
            return true;
        }
        match &self.seen {
            Some((seen, since)) if *seen == record => now.duration_since(*since) >= duration,
            _ => {
                self.seen = Some((record, now));
                false
            }
        }
    }
}

/// This process holds the Lease: what it last wrote, and its tenure.
#[derive(Debug)]
pub struct Leadership {
    resource_version: Option<String>,
    acquire_time: Option<MicroTime>,
    transitions: i32,
    pub tenure: Tenure,
}

/// How a leadership ended.
#[derive(Debug)]
pub enum Ended {
    /// Another replica holds the Lease, or the tenure ran out before a renewal succeeded.
    Lost(String),
    /// Given back on request (the controllers stopped).
    Released,
}

#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
}

impl LeaderElector {
    /// `identity` must be unique to this process (a restarted container is another candidate).
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timing: LeaseTiming) -> Self {
        Self {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
        }
    }

    async fn bounded<T>(
        &self,
        action: &'static str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaseError> {
        let timeout = self.timing.call_timeout();
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result.map_err(|source| LeaseError::Kube { action, source }),
            Err(_) => Err(LeaseError::Timeout { action, timeout }),
        }
    }

    fn lease(&self, resource_version: Option<String>, spec: LeaseSpec) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version,
                ..Default::default()
            },
            spec: Some(spec),
        }
    }

    fn spec(&self, acquire_time: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.duration.as_secs().try_into().unwrap_or(i32::MAX)),
            acquire_time: Some(acquire_time.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    fn leadership(&self, written: Lease, sent: Instant) -> Leadership {
        let spec = written.spec.unwrap_or_default();
        Leadership {
            resource_version: written.metadata.resource_version,
            acquire_time: spec.acquire_time,
            transitions: spec.lease_transitions.unwrap_or(0),
            tenure: Tenure::new(sent + self.timing.renew_deadline()),
        }
    }

    /// One look at the Lease: takes it when it is absent, released, or unchanged for a lease.
    async fn try_acquire(&self, observer: &mut Observer) -> Result<Option<Leadership>, LeaseError> {
        let current = self.bounded("reading", self.api.get_opt(&self.name)).await?;
        // Seen no earlier than now: a write the response shows was committed before this instant.
        let seen = Instant::now();
        let (resource_version, transitions) = match current {
            None => (None, 0),
            Some(lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                // The holder's own duration, or ours if longer: the holder stops within its own.
                let advertised = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
                if !observer.may_take(Record::of(&lease), seen, advertised.max(self.timing.duration)) {
                    return Ok(None);
                }
                (lease.metadata.resource_version, spec.lease_transitions.unwrap_or(0) + 1)
            }
        };
        let sent = Instant::now();
        let lease = self.lease(resource_version.clone(), self.spec(None, transitions));
        let pp = PostParams::default();
        let written = match resource_version {
            None => self.bounded("creating", self.api.create(&pp, &lease)).await,
            Some(_) => {
                self.bounded("taking over", self.api.replace(&self.name, &pp, &lease))
                    .await
            }
        };
        match written {
            Ok(written) => Ok(Some(self.leadership(written, sent))),
            // Another candidate was first (or the holder renewed): look again.
            Err(LeaseError::Kube {
                source: kube::Error::Api(e),
                ..
            }) if e.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits until this process holds the Lease.
    pub async fn acquire(&self) -> Leadership {
        let mut observer = Observer::default();
        loop {
            match self.try_acquire(&mut observer).await {
                Ok(Some(leadership)) => return leadership,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.timing.retry_period()).await;
        }
    }

    /// One renewal; `Err(Ended::Lost)` when another replica holds the Lease.
    async fn renew(&self, held: &mut Leadership) -> Result<Result<(), LeaseError>, Ended> {
        let sent = Instant::now();
        let lease = self.lease(
            held.resource_version.clone(),
            self.spec(held.acquire_time.clone(), held.transitions),
        );
        let result = self
            .bounded("renewing", self.api.replace(&self.name, &PostParams::default(), &lease))
            .await;
        match result {
            Ok(written) => {
                held.resource_version = written.metadata.resource_version;
                held.tenure.extend_to(sent + self.timing.renew_deadline());
                Ok(Ok(()))
            }
            Err(LeaseError::Kube {
                source: kube::Error::Api(e),
                ..
            }) if e.code == 409 => {
                // Someone wrote the Lease: an earlier renewal of ours that timed out here but
                // reached the apiserver, or a new holder. Ours: continue from it, with the tenure
                // of the last renewal known to have succeeded.
                let current = match self.bounded("reading after a conflict", self.api.get(&self.name)).await {
                    Ok(current) => current,
                    Err(e) => return Ok(Err(e)),
                };
                let record = Record::of(&current);
                if record.holder.as_deref() != Some(self.identity.as_str()) {
                    return Err(Ended::Lost(format!(
                        "the Lease is held by {}",
                        record.holder.as_deref().unwrap_or("nobody")
                    )));
                }
                held.resource_version = record.resource_version;
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// Gives the Lease up so that a standby takes over without waiting out the lease.
    async fn release(&self, held: &Leadership) -> Result<(), LeaseError> {
        let mut spec = self.spec(held.acquire_time.clone(), held.transitions);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        let lease = self.lease(held.resource_version.clone(), spec);
        self.bounded(
            "releasing",
            self.api.replace(&self.name, &PostParams::default(), &lease),
        )
        .await
        .map(drop)
    }

    /// Renews the Lease until `done` resolves (then releases it) or leadership ends. The caller
    /// must stop acting as leader when this returns `Lost`; the [`watchdog`] covers a hang.
    pub async fn lead(self, mut held: Leadership, done: impl Future<Output = ()>) -> Ended {
        let mut done = std::pin::pin!(done);
        let retry = self.timing.retry_period();
        let mut next = tokio::time::Instant::now() + retry;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = &mut done => {
                    match self.release(&held).await {
                        Ok(()) => tracing::info!("released the leader Lease"),
                        Err(e) => tracing::warn!(error = %e, "releasing the leader Lease failed; it expires instead"),
                    }
                    return Ended::Released;
                }
            }
            if Instant::now() >= held.tenure.until() {
                return Ended::Lost(format!(
                    "no renewal succeeded within {:?}",
                    self.timing.renew_deadline()
                ));
            }
            let started = tokio::time::Instant::now();
            match self.renew(&mut held).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the leader Lease failed"),
                Err(ended) => return ended,
            }
            next = (started + retry).max(tokio::time::Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{LeaseTiming, Observer, Record, Tenure, watchdog};
    use jiff::Timestamp;
    use std::time::{Duration, Instant};

    const LEASE: Duration = Duration::from_secs(15);

    fn record(holder: &str, renewed: i64, version: &str) -> Record {
        Record {
            holder: Some(holder.into()).filter(|h: &String| !h.is_empty()),
            renew_time: Some(Timestamp::from_second(renewed).unwrap()),
            resource_version: Some(version.into()),
        }
    }

    #[test]
    fn a_standby_waits_a_full_lease_of_its_own_clock_after_the_last_change() {
        let t0 = Instant::now();
        let mut observer = Observer::default();
        // The renewTime is far in the past by any wall clock: it is not what decides.
        assert!(!observer.may_take(record("a", 0, "1"), t0, LEASE));
        assert!(!observer.may_take(record("a", 0, "1"), t0 + LEASE - Duration::from_millis(1), LEASE));
        assert!(observer.may_take(record("a", 0, "1"), t0 + LEASE, LEASE));
    }

    #[test]
    fn any_change_of_the_record_restarts_the_wait() {
        let t0 = Instant::now();
        let mut observer = Observer::default();
        assert!(!observer.may_take(record("a", 0, "1"), t0, LEASE));
        let renewed = t0 + Duration::from_secs(10);
        assert!(!observer.may_take(record("a", 5, "2"), renewed, LEASE));
        assert!(!observer.may_take(record("a", 5, "2"), t0 + LEASE, LEASE));
        // Only the resourceVersion moved (e.g. a metadata edit): still a change.
        assert!(!observer.may_take(record("a", 5, "3"), renewed + LEASE, LEASE));
        assert!(observer.may_take(record("a", 5, "3"), renewed + 2 * LEASE, LEASE));
        // A new holder with the same renewTime.
        assert!(!observer.may_take(record("b", 5, "3"), renewed + 3 * LEASE, LEASE));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut observer = Observer::default();
        assert!(observer.may_take(record("", 0, "7"), Instant::now(), LEASE));
    }

    #[test]
    fn the_leader_stops_a_third_of_a_lease_before_a_standby_may_start() {
        let timing = LeaseTiming { duration: LEASE };
        assert_eq!(timing.renew_deadline(), Duration::from_secs(10));
        // Three renewals start within the deadline even when each one hangs until its timeout.
        assert!(timing.retry_period() + 2 * timing.call_timeout() < timing.renew_deadline());
    }

    #[test]
    fn the_watchdog_fires_at_the_end_of_the_tenure_not_before() {
        let start = Instant::now();
        let tenure = Tenure::new(start + Duration::from_millis(100));
        let (tx, rx) = std::sync::mpsc::channel();
        watchdog(tenure.clone(), move || tx.send(Instant::now()).unwrap());
        // An extension before the end postpones it.
        tenure.extend_to(start + Duration::from_millis(300));
        tenure.extend_to(start + Duration::from_millis(200)); // never moves back
        let fired = rx.recv_timeout(Duration::from_secs(5)).expect("the watchdog fires");
        assert!(fired >= start + Duration::from_millis(300), "{:?}", fired - start);
    }
}
