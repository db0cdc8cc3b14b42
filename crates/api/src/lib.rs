//! `openbao.org/v1alpha1`: the types of the OpenBao operator's API, their defaults and the
//! validation rules the apiserver enforces (OpenAPI + CEL). No I/O lives here.

pub mod cluster;
pub mod conditions;
pub mod crd;
pub mod names;
pub mod status;
pub mod upgrade;

pub use cluster::*;
pub use status::*;
pub use upgrade::*;

pub const GROUP: &str = "openbao.org";
pub const VERSION: &str = "v1alpha1";
