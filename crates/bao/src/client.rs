//! The request plumbing shared by every endpoint: URL building, the token header, timeouts and
//! turning transport failures and non-success statuses into [`BaoError`]s.

use crate::error::{REDIRECT_PREFIX, chain_text};
use crate::{BaoError, ClientConfig, Result, Token};
use reqwest::header::{HeaderValue, LOCATION};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};

const TOKEN_HEADER: &str = "X-Vault-Token";

/// A client for one OpenBao node. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct BaoClient {
    http: reqwest::Client,
    base: Url,
    timeout: Duration,
    token: Option<Token>,
    /// What it was built from, to build the same client with another timeout.
    config: std::sync::Arc<ClientConfig>,
}

impl std::fmt::Debug for BaoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaoClient")
            .field("base", &self.base.as_str())
            .field("has_token", &self.token.is_some())
            .finish()
    }
}

/// Whether a call sends the token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// Unauthenticated endpoint: never send the token, even if the client has one.
    None,
    Required,
    /// Generic calls (`sys/init`, `sys/unseal` work without one).
    IfPresent,
}

/// One API call, for error messages and logs.
pub(crate) struct Call {
    pub method: Method,
    /// `/v1/...` including any query string.
    pub path: String,
    /// Streaming transfers get no total deadline, only the per-read idle timeout.
    pub streaming: bool,
}

impl Call {
    pub fn new(method: Method, path: &str) -> Self {
        Self {
            method,
            path: format!("/v1/{}", path.trim_start_matches('/')),
            streaming: false,
        }
    }

    pub fn streaming(mut self) -> Self {
        self.streaming = true;
        self
    }

    pub fn method(&self) -> String {
        self.method.to_string()
    }

    pub fn transport_error(&self, url: &str, err: reqwest::Error) -> BaoError {
        let (method, path) = (self.method(), self.path.clone());
        let (is_connect, is_timeout) = (err.is_connect(), err.is_timeout());
        let detail = chain_text(&err.without_url());
        if is_connect {
            BaoError::Connect {
                method,
                path,
                url: url.to_string(),
                detail,
            }
        } else if is_timeout {
            BaoError::Timeout { method, path, detail }
        } else {
            BaoError::Transport { method, path, detail }
        }
    }

    pub fn decode_error(&self, status: u16, detail: impl std::fmt::Display) -> BaoError {
        BaoError::Decode {
            method: self.method(),
            path: self.path.clone(),
            status,
            detail: detail.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

/// The standard response envelope of authenticated endpoints.
#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

impl BaoClient {
    pub fn new(config: ClientConfig) -> Result<Self> {
        let base = Url::parse(&config.base_url)
            .map_err(|e| BaoError::Config(format!("base_url {:?}: {e}", config.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(BaoError::Config(format!(
                "base_url {:?}: scheme must be http or https",
                config.base_url
            )));
        }
        let mut builder = reqwest::Client::builder()
            // A standby's redirect would carry X-Vault-Token to another host; callers pick the node.
            .redirect(reqwest::redirect::Policy::none())
            // No idle connections: a request on a pooled connection to a node that has died
            // fails as a broken transport instead of a clean "cannot connect", and the operator
            // calls each node only every few seconds anyway.
            .pool_max_idle_per_host(0)
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.timeout);
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| BaoError::Config(format!("ca_pem is not a PEM certificate bundle: {e}")))?;
            if certs.is_empty() {
                return Err(BaoError::Config("ca_pem contains no certificate".into()));
            }
            builder = builder.tls_certs_only(certs);
        }
        if let Some(ip) = config.resolve_to {
            let host = base
                .host_str()
                .ok_or_else(|| BaoError::Config(format!("base_url {:?} has no host", config.base_url)))?;
            // Port 0: the URL's port is used.
            builder = builder.resolve(host, std::net::SocketAddr::new(ip, 0));
        }
        let http = builder
            .build()
            .map_err(|e| BaoError::Config(format!("building HTTP client: {}", chain_text(&e))))?;
        Ok(Self {
            http,
            base,
            timeout: config.timeout,
            token: None,
            config: std::sync::Arc::new(config),
        })
    }

    /// A clone of this client that sends `token` on authenticated calls.
    pub fn with_token(&self, token: Token) -> Self {
        Self {
            token: Some(token),
            ..self.clone()
        }
    }

    /// The same node, address pin and trust anchors with another `timeout` (the limit of each
    /// call, and for streamed transfers the longest pause between two reads); keeps the token.
    pub fn with_timeout(&self, timeout: Duration) -> Result<Self> {
        let config = ClientConfig {
            timeout,
            ..(*self.config).clone()
        };
        Ok(Self {
            token: self.token.clone(),
            ..Self::new(config)?
        })
    }

    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, call: &Call) -> Result<Url> {
        let text = format!("{}{}", self.base.as_str().trim_end_matches('/'), call.path);
        Url::parse(&text).map_err(|e| BaoError::Config(format!("request URL {text:?}: {e}")))
    }

    /// Sends the request and returns the response whatever its status; only transport
    /// failures are errors here.
    pub(crate) async fn send(
        &self,
        call: &Call,
        auth: Auth,
        body: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response> {
        let url = self.url(call)?;
        let mut req = self.http.request(call.method.clone(), url.clone());
        if !call.streaming {
            req = req.timeout(self.timeout);
        }
        match (auth, &self.token) {
            (Auth::Required | Auth::IfPresent, Some(token)) => {
                let mut value = HeaderValue::from_str(token.expose())
                    .map_err(|_| BaoError::Config("token contains characters not allowed in a header".into()))?;
                value.set_sensitive(true);
                req = req.header(TOKEN_HEADER, value);
            }
            (Auth::Required, None) => {
                return Err(BaoError::MissingToken {
                    method: call.method(),
                    path: call.path.clone(),
                });
            }
            _ => {}
        }
        let started = Instant::now();
        let result = body(req).send().await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(resp) => {
                tracing::debug!(method = %call.method, path = %call.path, status = resp.status().as_u16(), elapsed_ms, "openbao call");
                Ok(resp)
            }
            Err(err) => {
                tracing::debug!(method = %call.method, path = %call.path, elapsed_ms, error = %chain_text(&err), "openbao call failed");
                Err(call.transport_error(url.as_str(), err))
            }
        }
    }

    /// Like [`send`](Self::send), but a non-2xx status becomes [`BaoError::Api`].
    pub(crate) async fn send_ok(
        &self,
        call: &Call,
        auth: Auth,
        body: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response> {
        let resp = self.send(call, auth, body).await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(api_error(call, resp).await)
        }
    }

    /// Sends a JSON body (or none) and expects success; the response body is ignored.
    pub(crate) async fn exec(&self, call: Call, auth: Auth, json: Option<&serde_json::Value>) -> Result<()> {
        self.send_ok(&call, auth, |r| with_json(r, json)).await.map(drop)
    }

    /// Sends a JSON body (or none), expects success and decodes the whole body as `T`.
    pub(crate) async fn fetch<T: DeserializeOwned>(
        &self,
        call: Call,
        auth: Auth,
        json: Option<&serde_json::Value>,
    ) -> Result<T> {
        let resp = self.send_ok(&call, auth, |r| with_json(r, json)).await?;
        decode(&call, resp).await
    }

    /// GET of an authenticated endpoint, decoding the `data` field as `T`.
    pub(crate) async fn get_data<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let envelope: Envelope<T> = self.fetch(Call::new(Method::GET, path), Auth::Required, None).await?;
        Ok(envelope.data)
    }
}

fn with_json(req: RequestBuilder, json: Option<&serde_json::Value>) -> RequestBuilder {
    match json {
        Some(v) => req.json(v),
        None => req,
    }
}

/// Reads the body and decodes it; an empty body decodes as JSON `null` so `Option<T>` works.
pub(crate) async fn decode<T: DeserializeOwned>(call: &Call, resp: Response) -> Result<T> {
    let status = resp.status().as_u16();
    let url = resp.url().to_string();
    let bytes = resp.bytes().await.map_err(|e| call.transport_error(&url, e))?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes).map_err(|e| call.decode_error(status, e))
}

/// Builds [`BaoError::Api`] from a non-success response, with OpenBao's `errors` array when the
/// body has one, else a short excerpt of the body.
pub(crate) async fn api_error(call: &Call, resp: Response) -> BaoError {
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.bytes().await.unwrap_or_default();
    let mut errors = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(parsed) => parsed.errors.iter().flat_map(|e| flatten_multierror(e)).collect(),
        Err(_) => {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            if text.is_empty() {
                Vec::new()
            } else {
                vec![text.chars().take(300).collect()]
            }
        }
    };
    if let Some(location) = location {
        errors.push(format!(
            "{REDIRECT_PREFIX}{location} (redirects are not followed; call the active node)"
        ));
    }
    BaoError::Api {
        method: call.method(),
        path: call.path.clone(),
        status,
        errors,
    }
}

/// Go's multierror text ("1 error occurred:\n\t* failed …\n\n") as one entry per error.
fn flatten_multierror(text: &str) -> Vec<String> {
    let is_header =
        |l: &str| l.ends_with("occurred:") && l.split_whitespace().next().is_some_and(|n| n.parse::<u32>().is_ok());
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_header(l))
        .map(|l| l.strip_prefix("* ").unwrap_or(l).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::flatten_multierror;
    use crate::{BaoClient, BaoError, ClientConfig};

    #[test]
    fn bad_configs_are_rejected_up_front() {
        for url in ["not a url", "ftp://host:8200"] {
            assert!(
                matches!(BaoClient::new(ClientConfig::new(url)), Err(BaoError::Config(_))),
                "{url}"
            );
        }
        let no_cert = ClientConfig::new("https://h:8200").with_ca_pem(b"-----BEGIN NOTHING-----".to_vec());
        assert!(matches!(BaoClient::new(no_cert), Err(BaoError::Config(_))));
    }

    #[test]
    fn multierror_text_becomes_one_line_per_error() {
        let text = "1 error occurred:\n\t* failed to decompress snapshot: gzip: invalid header\n\n";
        assert_eq!(
            flatten_multierror(text),
            ["failed to decompress snapshot: gzip: invalid header"]
        );
        assert_eq!(flatten_multierror("permission denied"), ["permission denied"]);
    }
}
