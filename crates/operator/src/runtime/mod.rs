//! The process around the controllers: discovery, leader election, metrics and health.

pub mod cluster_metrics;
pub mod discovery;
pub mod http;
pub mod kube_client;
pub mod leader;
pub mod metrics;
pub mod panic_guard;
