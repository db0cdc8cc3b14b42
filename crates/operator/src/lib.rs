//! The openbao-operator: controllers that turn `OpenBaoCluster` objects into running,
//! self-initialized OpenBao clusters, and the runtime around them (leader election, metrics,
//! health endpoints), the long operations (upgrades) as state machines, and the backup/restore
//! executors that run as Jobs.

pub mod context;
pub mod controllers;
pub mod executors;
pub mod flows;
pub mod kube_write;
pub mod openbao;
pub mod runtime;

pub const FIELD_MANAGER: &str = "openbao-operator";
/// Image of the executor Jobs when none is configured: the operator's own released image.
pub const DEFAULT_EXECUTOR_IMAGE: &str =
    concat!("ghcr.io/openbao-operator/openbao-operator:", env!("CARGO_PKG_VERSION"));
