//! One controller per kind.

pub mod backup;
pub mod cluster;
pub mod restore;
