//! The openbao-operator: controllers that turn `OpenBaoCluster` objects into running,
//! self-initialized OpenBao clusters, and the runtime around them (leader election, metrics,
//! health endpoints), the long operations (upgrades) as state machines, and the backup/restore
//! executors that run as Jobs.

pub mod context;
pub mod controllers;
pub mod executors;
pub mod flows;
pub mod openbao;
pub mod runtime;

pub const FIELD_MANAGER: &str = "openbao-operator";
