//! Where backups are stored and how to talk to the store.

use std::fmt;
use std::time::Duration;

/// A secret string (an S3 secret key). `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The keys of the credentials Secret: `accessKeyId`, `secretAccessKey`, optional `caCert`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// PEM bundle; when set, only these CAs are trusted for the endpoint (no system roots).
    pub ca_cert_pem: Option<String>,
}

/// An S3 bucket (and key prefix) that backups go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// e.g. `https://rustfs.storage.svc:9000`; empty means AWS S3 of `region`.
    pub endpoint: String,
    pub bucket: String,
    /// Signing region; S3-compatible servers mostly accept anything (default `us-east-1`).
    pub region: String,
    /// Prepended to every key (without leading or trailing `/`); may be empty.
    pub path_prefix: String,
    /// `https://host/bucket/key` (true; what RustFS and most in-cluster stores need) or
    /// `https://bucket.host/key` (false).
    pub use_path_style: bool,
    pub credentials: Credentials,
}

/// Transfer tuning. The memory an upload holds is about `(max_concurrency + 1) * part_size`,
/// whatever the object size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Multipart part size; S3 needs at least 5 MiB for all but the last part.
    pub part_size: usize,
    /// Parts uploaded at the same time.
    pub max_concurrency: usize,
    /// Retries of one request (connect errors, 5xx) before the operation fails.
    pub max_retries: usize,
    /// Upper bound on the time spent retrying one request.
    pub retry_timeout: Duration,
    pub connect_timeout: Duration,
    /// Longest pause between two reads of a response; transfers have no total deadline.
    pub read_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            part_size: 8 * 1024 * 1024,
            max_concurrency: 2,
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
        }
    }
}

impl StoreOptions {
    /// The smallest part S3 accepts (except for the last part of an upload).
    pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret_key() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG"),
            ca_cert_pem: None,
        };
        let text = format!("{creds:?}");
        assert!(text.contains("AKIDEXAMPLE") && text.contains("<redacted>"), "{text}");
        assert!(!text.contains("wJalrXUtnFEMI"), "{text}");
        assert_eq!(creds.secret_access_key.to_string(), "<redacted>");
    }
}
