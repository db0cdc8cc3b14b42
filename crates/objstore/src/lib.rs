//! The S3 side of backups, on `object_store`'s S3 client: streaming multipart uploads with
//! bounded memory that are aborted on any failure (so a partial object is never listed),
//! verification of what was stored, listing, deletion, downloads as streams, the backup key
//! format and the retention plan.
//!
//! - [`Target`]: where backups go (endpoint, bucket, prefix, credentials). Secrets are wrapped
//!   in [`Secret`], whose `Debug` never shows them.
//! - [`Store`]: the operations.
//! - [`key`]: `<pathPrefix>/<namespace>/<cluster>/<YYYYMMDDTHHMMSSZ>-<8 hex>.snap`.
//! - [`retention`]: which backups to delete, by count and age (pure).
//! - [`StoreError`]: failures classified into reasons a user can act on.

mod error;
pub mod key;
pub mod retention;
mod store;
mod target;

pub use error::{StoreError, UploadError};
pub use key::{BackupKey, cluster_prefix, new_backup_key, parse_key_time};
pub use retention::{Retention, retention_plan};
pub use store::{ByteStream, ObjectInfo, Store, Uploaded};
pub use target::{Credentials, Secret, StoreOptions, Target};
