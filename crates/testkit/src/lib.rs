//! Test support shared by the integration tests: real parts only.

pub mod cache;
pub mod pki;
pub mod process;
