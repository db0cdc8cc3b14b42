//! Long operations as state machines in status: blue/green and rolling upgrades.
//!
//! A flow is a pure function `next_step(spec, status, observed) -> FlowStep`. The [`driver`]
//! performs exactly one step per call (observe -> decide -> act -> new status), so the caller
//! persists status after every step and a restarted operator resumes from status alone. Flows
//! never trust an action's answer: a phase advances only when a later observation of the real
//! raft configuration, autopilot state and server health shows the effect.
//!
//! - [`bluegreen`] and [`rolling`]: the two strategies.
//! - [`driver`]: the [`Platform`] a driver needs (start/stop servers, move
//!   traffic, take a snapshot, reach a server's API) and the [`Driver`].
//! - [`step_report`]: what one driver step did, and how every flow's driver turns its action's
//!   outcome into the status to persist.
//! - [`names`]: server and revision names shared by every platform.
//! - [`upgrade`]: what a reconcile does about a changed `spec.version`, before any driver step.
//! - [`seal_migration`]: moving a running cluster to another seal (`static` <-> `transit`), with
//!   its own driver and platform contract.

pub mod bluegreen;
mod common;
pub mod driver;
pub mod names;
pub mod observed;
pub mod rolling;
pub mod seal_migration;
pub mod step;
pub mod step_report;
pub mod upgrade;
pub mod version;

#[cfg(test)]
mod fixtures;

pub use common::{STEP_FAILURES_DEGRADED, record_failure, record_step_failure};
pub use driver::{Driver, Platform, PlatformError, PlatformNode, Snapshot};
pub use names::Revision;
pub use observed::{AutopilotPeer, AutopilotView, NodeHealth, NodeView, Observed, Peer, RaftView};
pub use step::{Action, Deployment, FlowStep};
pub use step_report::StepReport;

use openbao_api::{OpenBaoClusterSpec, OpenBaoClusterStatus, UpgradeStrategy};

/// The next step of whatever upgrade is in progress, or of starting one with the strategy in
/// the spec. An upgrade in progress keeps the strategy it started with.
pub fn next_step(spec: &OpenBaoClusterSpec, status: &OpenBaoClusterStatus, observed: &Observed) -> FlowStep {
    match upgrade::strategy(spec, status) {
        UpgradeStrategy::BlueGreen => bluegreen::next_step(spec, status, observed),
        UpgradeStrategy::RollingUpdate => rolling::next_step(spec, status, observed),
    }
}
