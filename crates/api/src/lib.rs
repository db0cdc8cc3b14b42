//! `openbao.org/v1alpha1`: the types of the OpenBao operator's API, their defaults and the
//! validation rules the apiserver enforces (OpenAPI + CEL). No I/O lives here.

pub mod audit;
pub mod backup;
pub mod cluster;
pub mod conditions;
pub mod crd;
pub mod duration;
pub mod names;
pub mod network;
pub mod placement;
pub mod request_data;
pub mod restore;
pub mod seal_migration;
pub mod status;
pub mod unseal;
pub mod unseal_kmip;
pub mod unseal_kms;
pub mod upgrade;

pub use audit::*;
pub use backup::*;
pub use cluster::*;
pub use network::{NetworkSpec, in_cluster_service, in_cluster_socket, in_cluster_url};
pub use placement::{PodMetadata, ServiceAccountSpec, ServiceSpec, ServiceType};
pub use restore::*;
pub use seal_migration::*;
pub use status::*;
pub use unseal::*;
pub use unseal_kmip::*;
pub use unseal_kms::*;
pub use upgrade::*;

pub const GROUP: &str = "openbao.org";
pub const VERSION: &str = "v1alpha1";
