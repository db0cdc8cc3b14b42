//! The openbao-operator: controllers that turn `OpenBaoCluster` objects into running,
//! self-initialized OpenBao clusters, and the runtime around them (leader election, metrics,
//! health endpoints).

pub mod context;
pub mod controllers;
pub mod openbao;
pub mod runtime;

pub const FIELD_MANAGER: &str = "openbao-operator";
