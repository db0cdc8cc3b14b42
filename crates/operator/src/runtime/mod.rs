//! The process around the controllers: discovery, leader election, metrics and health.

pub mod cluster_metrics;
pub mod discovery;
pub mod http;
pub mod leader;
pub mod metrics;
