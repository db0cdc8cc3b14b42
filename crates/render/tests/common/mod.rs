//! Helpers shared by the render integration tests.

pub mod hcl1;
