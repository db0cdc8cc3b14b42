//! One controller per kind.

pub mod cluster;
