//! A thin typed client for the OpenBao HTTP API, used by the operator controller, the
//! backup/restore executors and the upgrade state machine.
//!
//! One [`BaoClient`] talks to one node (one base URL). It never follows redirects, because a
//! redirect from a standby would carry the `X-Vault-Token` header to another host.
//!
//! - [`sys`]: health, seal status, leader (no token needed).
//! - [`auth`]: JWT and userpass logins.
//! - [`raft`]: raft peers, autopilot, join, promote/demote/remove, step-down, snapshots.
//! - [`logical`]: generic read/write/list/delete, token self-lookup, version history.
//!
//! Tokens live in [`Token`], whose `Debug`/`Display` never show the secret.

mod client;
mod config;
mod error;
mod token;

pub mod auth;
pub mod logical;
pub mod raft;
pub mod sys;

pub use auth::Login;
pub use bytes::Bytes;
pub use client::BaoClient;
pub use config::ClientConfig;
pub use error::BaoError;
pub use logical::{TokenInfo, VersionEntry};
pub use raft::{
    AutopilotConfig, AutopilotConfigUpdate, AutopilotServer, AutopilotState, RaftConfiguration, RaftJoin, RaftServer,
    SnapshotStream,
};
pub use sys::{Health, HealthState, Leader, SealStatus};
pub use token::Token;

pub type Result<T, E = BaoError> = std::result::Result<T, E>;
