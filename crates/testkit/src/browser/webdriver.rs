//! A small W3C WebDriver client: only the commands the browser checks use, over plain HTTP to a
//! loopback chromedriver.
//!
//! Our own client rather than a crate: the WebDriver crate we used turned on serde_json's
//! `preserve_order`, and Cargo's feature unification then gave every test build insertion-ordered
//! JSON maps while the shipped binary sorts them.
//!
//! Each command is one HTTP request with a timeout. An error names the command
//! (`METHOD /session/{id}/…`) and, when the driver answered with W3C error JSON
//! (`{"value":{"error","message"}}`), its error code and message; never a request body, so text
//! typed into a password field stays out of errors. Waiting is the caller's job (poll on state).

use base64::Engine;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The W3C "web element identifier": the key of an element reference (`{key: "<id>"}`).
pub const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long the best-effort session delete of [`Session`]'s drop may take (connect, write, read).
const DROP_DELETE_TIMEOUT: Duration = Duration::from_secs(2);

/// What went wrong with a WebDriver command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebDriverError {
    /// The driver answered with a W3C error (`no such element`, `stale element reference`, …).
    #[error("{command}: HTTP {status}: {code}: {message}")]
    Command {
        command: String,
        status: u16,
        /// The W3C error code, e.g. `no such element`.
        code: String,
        message: String,
    },

    /// No answer: connection refused or broken, or the command's timeout passed.
    #[error("{command}: no answer from the driver: {detail}")]
    Transport { command: String, detail: String },

    /// An answer this client does not understand (not W3C JSON, or a value of another shape).
    #[error("{command}: unexpected answer (HTTP {status}): {detail}")]
    Decode {
        command: String,
        status: u16,
        detail: String,
    },
}

impl WebDriverError {
    /// The W3C error code of a driver error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Command { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T, E = WebDriverError> = std::result::Result<T, E>;

/// A web element of the session's current page (a W3C element reference).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    id: String,
}

impl Element {
    /// The reference as a script argument or in a command body.
    fn to_json(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    /// Reads a W3C element reference.
    fn from_json(value: &Value) -> Option<Self> {
        let id = value.get(ELEMENT_KEY)?.as_str()?;
        Some(Self { id: id.to_string() })
    }
}

/// The capabilities of a session on a Chromium that is already running, reached through its
/// DevTools address (`host:port`): chromedriver attaches instead of launching a browser.
pub fn attach_capabilities(debugger_address: &str) -> Value {
    json!({
        "capabilities": {
            "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "debuggerAddress": debugger_address },
            },
        },
    })
}

/// The result of one answer: the W3C `value` on a success status, the driver's error otherwise.
fn decode_answer(command: &str, status: u16, body: &[u8]) -> Result<Value> {
    let decode = |detail: String| WebDriverError::Decode {
        command: command.to_string(),
        status,
        detail,
    };
    let parsed: Value = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        decode(format!("not JSON ({e}): {text:?}"))
    })?;
    let Some(value) = parsed.get("value") else {
        return Err(decode("no \"value\" in the answer".to_string()));
    };
    if let Some(code) = value.get("error").and_then(Value::as_str) {
        return Err(WebDriverError::Command {
            command: command.to_string(),
            status,
            code: code.to_string(),
            message: value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        });
    }
    if !(200..300).contains(&status) {
        return Err(decode("an error status without W3C error JSON".to_string()));
    }
    Ok(value.clone())
}

/// The `{ELEMENT_KEY: id}` references of a `value` that is a list of them.
fn decode_elements(command: &str, value: Value) -> Result<Vec<Element>> {
    let items = match &value {
        Value::Array(items) => items,
        _ => return Err(unexpected(command, "a list of elements", &value)),
    };
    items
        .iter()
        .map(|item| Element::from_json(item).ok_or_else(|| unexpected(command, "an element reference", item)))
        .collect()
}

fn unexpected(command: &str, wanted: &str, got: &Value) -> WebDriverError {
    let mut shown = got.to_string();
    shown.truncate(200);
    WebDriverError::Decode {
        command: command.to_string(),
        status: 200,
        detail: format!("expected {wanted}, got {shown}"),
    }
}

fn as_string(command: &str, value: Value) -> Result<String> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(unexpected(command, "a string", &other)),
    }
}

/// One WebDriver session. Dropping it without [`Session::delete`] ends it best-effort.
pub struct Session {
    http: reqwest::Client,
    /// The driver's base URL, e.g. `http://127.0.0.1:9515`.
    driver: String,
    id: String,
    deleted: bool,
}

impl Session {
    /// Opens a session on the driver at `driver_url` with `capabilities` (a `POST /session`
    /// body, e.g. [`attach_capabilities`]); every command of the session may take `timeout`.
    pub async fn new(driver_url: &str, capabilities: &Value, timeout: Duration) -> Result<Self> {
        let command = "POST /session";
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| WebDriverError::Transport {
                command: command.to_string(),
                detail: format!("build the HTTP client: {e}"),
            })?;
        let driver = driver_url.trim_end_matches('/').to_string();
        let value = send(&http, reqwest::Method::POST, &driver, "/session", Some(capabilities)).await?;
        let id = value
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| unexpected(command, "a sessionId", &value))?
            .to_string();
        Ok(Self {
            http,
            driver,
            id,
            deleted: false,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let path = format!("/session/{}{path}", self.id);
        send(&self.http, reqwest::Method::GET, &self.driver, &path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let path = format!("/session/{}{path}", self.id);
        send(&self.http, reqwest::Method::POST, &self.driver, &path, Some(body)).await
    }

    fn command(&self, method: &str, path: &str) -> String {
        format!("{method} /session/{}{path}", self.id)
    }

    /// Navigates and waits for the page load (the driver's page load strategy).
    pub async fn navigate(&self, url: &str) -> Result<()> {
        self.post("/url", &json!({ "url": url })).await.map(drop)
    }

    pub async fn current_url(&self) -> Result<String> {
        let value = self.get("/url").await?;
        as_string(&self.command("GET", "/url"), value)
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its result.
    /// Pass values as `args`, never by formatting them into the script.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.post("/execute/sync", &json!({ "script": script, "args": args }))
            .await
    }

    /// The elements matching the CSS selector, in document order.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let value = self
            .post("/elements", &json!({ "using": "css selector", "value": css }))
            .await?;
        decode_elements(&self.command("POST", "/elements"), value)
    }

    /// The elements `script` returns (a list), given `element` as `arguments[0]` and `args`
    /// after it.
    pub async fn execute_for_elements(
        &self,
        script: &str,
        element: &Element,
        args: Vec<Value>,
    ) -> Result<Vec<Element>> {
        let all = std::iter::once(element.to_json()).chain(args).collect();
        let value = self.execute(script, all).await?;
        decode_elements(&self.command("POST", "/execute/sync"), value)
    }

    /// Whether the element is displayed. W3C defines no command for it; chromedriver keeps the
    /// `displayed` endpoint, which runs the W3C "element displayedness" algorithm.
    pub async fn is_displayed(&self, element: &Element) -> Result<bool> {
        let path = format!("/element/{}/displayed", element.id);
        match self.get(&path).await? {
            Value::Bool(shown) => Ok(shown),
            other => Err(unexpected(&self.command("GET", &path), "a boolean", &other)),
        }
    }

    /// The element's rendered text.
    pub async fn text(&self, element: &Element) -> Result<String> {
        let path = format!("/element/{}/text", element.id);
        let value = self.get(&path).await?;
        as_string(&self.command("GET", &path), value)
    }

    /// Clears an editable element.
    pub async fn clear(&self, element: &Element) -> Result<()> {
        self.post(&format!("/element/{}/clear", element.id), &json!({}))
            .await
            .map(drop)
    }

    /// Types `text` into the element.
    pub async fn send_keys(&self, element: &Element, text: &str) -> Result<()> {
        self.post(&format!("/element/{}/value", element.id), &json!({ "text": text }))
            .await
            .map(drop)
    }

    /// Clicks the element's centre (scrolled into view); an `<option>` gets selected.
    pub async fn click(&self, element: &Element) -> Result<()> {
        self.post(&format!("/element/{}/click", element.id), &json!({}))
            .await
            .map(drop)
    }

    /// The page as a PNG.
    pub async fn screenshot_png(&self) -> Result<Vec<u8>> {
        let command = self.command("GET", "/screenshot");
        let encoded = as_string(&command, self.get("/screenshot").await?)?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| WebDriverError::Decode {
                command,
                status: 200,
                detail: format!("screenshot is not base64: {e}"),
            })
    }

    /// The page's HTML as serialized by the browser.
    pub async fn page_source(&self) -> Result<String> {
        let value = self.get("/source").await?;
        as_string(&self.command("GET", "/source"), value)
    }

    /// Ends the session.
    pub async fn delete(mut self) -> Result<()> {
        let path = format!("/session/{}", self.id);
        send(&self.http, reqwest::Method::DELETE, &self.driver, &path, None).await?;
        self.deleted = true;
        Ok(())
    }
}

impl Drop for Session {
    /// Best-effort `DELETE /session/{id}`: a blocking request with a short timeout, since drop
    /// cannot await and may run outside a runtime (the driver is killed right after anyway).
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let Some(authority) = self.driver.strip_prefix("http://") else {
            return;
        };
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.id
        );
        let delete = || -> std::io::Result<()> {
            let addr = authority
                .to_socket_addrs()?
                .next()
                .ok_or(std::io::ErrorKind::AddrNotAvailable)?;
            let mut stream = TcpStream::connect_timeout(&addr, DROP_DELETE_TIMEOUT)?;
            stream.set_write_timeout(Some(DROP_DELETE_TIMEOUT))?;
            stream.set_read_timeout(Some(DROP_DELETE_TIMEOUT))?;
            stream.write_all(request.as_bytes())?;
            // The status line is enough: the driver has handled the request by then.
            let mut status = [0u8; 16];
            let _ = stream.read(&mut status)?;
            Ok(())
        };
        if let Err(e) = delete() {
            tracing::debug!(session = %self.id, error = %e, "best-effort WebDriver session delete failed");
        }
    }
}

/// Sends one command and decodes its answer.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    driver: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value> {
    let command = format!("{method} {path}");
    let mut request = http.request(method, format!("{driver}{path}"));
    if let Some(body) = body {
        request = request.json(body);
    }
    let transport = |e: reqwest::Error| WebDriverError::Transport {
        command: command.clone(),
        // Without the URL: it is the driver's, already named by the command.
        detail: error_chain(&e.without_url()),
    };
    let response = request.send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(transport)?;
    decode_answer(&command, status, &bytes)
}

/// `error: cause: cause …`, since reqwest's own text omits the causes (refused, timed out).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_capabilities_name_the_debugger_address() {
        assert_eq!(
            attach_capabilities("127.0.0.1:40123"),
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"debuggerAddress": "127.0.0.1:40123"},
            }}})
        );
    }

    #[test]
    fn a_w3c_error_carries_its_code_and_message() {
        let body = br##"{"value":{"error":"no such element","message":"no such element: Unable to locate element","stacktrace":"#0 0x55"}}"##;
        let err = decode_answer("POST /session/abc/element", 404, body).unwrap_err();
        assert_eq!(err.code(), Some("no such element"));
        assert_eq!(
            err.to_string(),
            "POST /session/abc/element: HTTP 404: no such element: no such element: Unable to locate element"
        );
    }

    #[test]
    fn a_success_returns_the_value() {
        assert_eq!(
            decode_answer("GET /session/abc/url", 200, br#"{"value":"https://a.svc/ui/"}"#).unwrap(),
            json!("https://a.svc/ui/")
        );
        assert_eq!(
            decode_answer("POST /session/abc/url", 200, br#"{"value":null}"#).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn answers_that_are_not_w3c_json_are_decode_errors() {
        let not_json = decode_answer("GET /status", 502, b"<html>Bad Gateway</html>").unwrap_err();
        assert!(
            matches!(not_json, WebDriverError::Decode { status: 502, .. }),
            "{not_json}"
        );
        let no_value = decode_answer("GET /status", 200, br#"{"ready":true}"#).unwrap_err();
        assert!(matches!(no_value, WebDriverError::Decode { .. }), "{no_value}");
        let error_without_code = decode_answer("GET /x", 500, br#"{"value":{"message":"boom"}}"#).unwrap_err();
        assert!(
            matches!(error_without_code, WebDriverError::Decode { status: 500, .. }),
            "{error_without_code}"
        );
    }

    #[test]
    fn element_references_use_the_w3c_key() {
        let value = json!([
            {"element-6066-11e4-a52e-4f735466cecf": "f.1.e.2"},
            {"element-6066-11e4-a52e-4f735466cecf": "f.1.e.3"},
        ]);
        let elements = decode_elements("POST /session/abc/elements", value).unwrap();
        assert_eq!(elements.len(), 2);
        assert_eq!(elements[0].to_json(), json!({ELEMENT_KEY: "f.1.e.2"}));
        // The legacy (JSON Wire) key is not an element reference.
        let legacy = decode_elements("POST /session/abc/elements", json!([{"ELEMENT": "1"}])).unwrap_err();
        assert!(matches!(legacy, WebDriverError::Decode { .. }), "{legacy}");
        assert!(decode_elements("POST /x", json!({})).is_err());
    }
}
