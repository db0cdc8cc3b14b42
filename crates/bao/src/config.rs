//! How to reach one node: URL, trust anchors, address override, timeout.

use std::net::IpAddr;
use std::time::Duration;

/// Connection settings for one OpenBao node.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// e.g. `https://openbao-0.openbao-internal.ns.svc:8200`. The host is what TLS verifies.
    pub base_url: String,
    /// PEM bundle of the CA(s) to trust. When set, *only* these are trusted (no system roots).
    pub ca_pem: Option<Vec<u8>>,
    /// Connect to this IP instead of resolving the URL host; the URL port and the hostname check
    /// stay as in `base_url`. Lets a client reach `127.0.0.2` while verifying `openbao-0.…svc`.
    pub resolve_to: Option<IpAddr>,
    /// Limit for each ordinary call. Snapshot transfers are not limited in total; for them this
    /// is the longest allowed pause between two reads instead.
    pub timeout: Duration,
    /// Limit for the TCP+TLS connect, kept short so a dead node is reported quickly.
    pub connect_timeout: Duration,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            ca_pem: None,
            resolve_to: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }

    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    pub fn with_resolve_to(mut self, ip: IpAddr) -> Self {
        self.resolve_to = Some(ip);
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}
