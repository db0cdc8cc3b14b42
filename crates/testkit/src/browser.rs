//! A real headless Chromium driven through WebDriver, for checks of web UIs (OpenBao's) as a user
//! sees them.
//!
//! [`Browser::start`] runs Debian's headless Chromium and `chromedriver` as [`ManagedProcess`]es
//! (killed with the test, even a SIGKILLed one) on loopback ports they pick, and opens one
//! WebDriver session through [`fantoccini`] (a maintained WebDriver client; unlike thirtyfour it
//! leaves serde_json's `preserve_order` off, see `crates/testkit/Cargo.toml`). It talks plain HTTP
//! to chromedriver on loopback, so no TLS stack is involved. Each browser gets a fresh temp
//! dir holding its profile and a `$HOME` whose NSS database (`~/.pki/nssdb`, where Chromium on
//! Linux reads locally added trust anchors) trusts the one CA the test gives: TLS is verified as
//! in production, with no `--ignore-certificate-errors` and no system-wide change. Host names are mapped to loopback
//! addresses with `--host-resolver-rules`, so URLs carry the names in the certificates.
//!
//! [`Browser::step`] runs one step of a check; when it fails, the page's screenshot (PNG) and
//! HTML are saved under the caller's artifacts dir and their paths are put in the error.
//!
//! Needs `chromium`, `chromium-driver` and `libnss3-tools` (`certutil`): `hack/install-deps.sh`.

pub mod openbao_ui;

use crate::openbao::poll_until;
use crate::process::ManagedProcess;
use anyhow::{Context, Result, anyhow, bail};
use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::Url;
use serde_json::json;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// Debian's packages put them here (`chromium`, `chromium-driver`, `libnss3-tools`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The browser binary itself, not `/usr/bin/chromium`: that launcher script adds the flags of
/// `/etc/chromium.d`, which the tests should not depend on.
pub const CHROMIUM: &str = "/usr/lib/chromium/chromium";
pub const CERTUTIL: &str = "/usr/bin/certutil";

/// How long chromedriver may take to start.
const DRIVER_READY: Duration = Duration::from_secs(30);
/// The session's own timeouts (W3C `timeouts` capability): a navigation and a script are cut
/// off by chromedriver, which then answers with an error, before [`COMMAND_TIMEOUT`] passes.
/// No implicit wait: looking up elements answers at once, and waits are polls on state.
const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(50);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one WebDriver command may take, answer included (fantoccini has no HTTP timeout).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The document URL of Chromium's network error and certificate interstitial pages.
const ERROR_PAGE_SCHEME: &str = "chrome-error:";
/// How often Chromium's and chromedriver's startup files are looked at.
const POLL: Duration = Duration::from_millis(100);

/// What a browser session trusts and resolves, and where failure artifacts go.
#[derive(Clone, Debug)]
pub struct BrowserConfig {
    /// Names the artifacts of this session (`<name>-<step>.png`).
    pub name: String,
    /// PEM CA certificate(s) the browser trusts for this session.
    pub trusted_ca_pem: Option<String>,
    /// `(host, ip)`: the browser resolves `host` to `ip` (every port).
    pub resolve: Vec<(String, IpAddr)>,
    /// Screenshots and page HTML of failed steps go here (created when needed).
    pub artifacts_dir: PathBuf,
}

impl BrowserConfig {
    pub fn new(name: &str, artifacts_dir: &Path) -> Self {
        Self {
            name: name.to_string(),
            trusted_ca_pem: None,
            resolve: Vec::new(),
            artifacts_dir: artifacts_dir.to_path_buf(),
        }
    }

    pub fn trust_ca(mut self, pem: &str) -> Self {
        self.trusted_ca_pem = Some(pem.to_string());
        self
    }

    pub fn resolve(mut self, host: &str, ip: IpAddr) -> Self {
        self.resolve.push((host.to_string(), ip));
        self
    }

    /// The `--host-resolver-rules` value, `None` without mappings. Host names are checked,
    /// since the value is a comma-separated rule list.
    fn host_resolver_rules(&self) -> Result<Option<String>> {
        if self.resolve.is_empty() {
            return Ok(None);
        }
        let mut rules = Vec::new();
        for (host, ip) in &self.resolve {
            let valid = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '*');
            if !valid {
                bail!("host {host:?} is not a DNS name");
            }
            rules.push(format!("MAP {host} {ip}"));
        }
        Ok(Some(rules.join(",")))
    }
}

/// One Chromium session. Dropping it ends the session and kills Chromium and chromedriver;
/// [`Browser::quit`] does the same politely.
pub struct Browser {
    config: BrowserConfig,
    // Field order is drop order: the session (fantoccini's session task then sends a
    // best-effort DELETE to chromedriver), then the processes, then the profile and `$HOME`.
    client: Client,
    chromedriver: ManagedProcess,
    chromium: ManagedProcess,
    dir: TempDir,
}

impl Browser {
    /// Starts headless Chromium and chromedriver on loopback ports they pick, and opens a
    /// WebDriver session on that Chromium.
    ///
    /// The test starts Chromium itself and chromedriver attaches to it (`debuggerAddress`):
    /// a browser launched by chromedriver is chromedriver's child, and would outlive a SIGKILLed
    /// test; as the test's own [`ManagedProcess`] it dies with the test (its renderers and
    /// helpers follow their browser process).
    pub async fn start(config: BrowserConfig) -> Result<Self> {
        for binary in [CHROMEDRIVER, CHROMIUM, CERTUTIL] {
            if !Path::new(binary).exists() {
                bail!(
                    "{binary} is missing: run hack/install-deps.sh (Debian chromium, chromium-driver, libnss3-tools)"
                );
            }
        }
        let host_rules = config.host_resolver_rules()?;
        let dir = tempfile::Builder::new().prefix("testkit-browser-").tempdir()?;
        let home = dir.path().join("home");
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(&profile)?;
        init_nss_db(&home, config.trusted_ca_pem.as_deref())?;
        // `$HOME` selects the NSS database; the XDG dirs keep caches, config and crash reports
        // out of the real home.
        let envs = [
            ("HOME", home.display().to_string()),
            ("XDG_CONFIG_HOME", home.join(".config").display().to_string()),
            ("XDG_CACHE_HOME", home.join(".cache").display().to_string()),
        ];

        let mut args = chromium_args(&profile);
        if let Some(rules) = host_rules {
            args.push(format!("--host-resolver-rules={rules}"));
        }
        let mut chromium = ManagedProcess::start(
            "chromium",
            Path::new(CHROMIUM),
            &args,
            &envs,
            &dir.path().join("chromium.log"),
        )?;
        let devtools_port = wait_for_devtools_port(&mut chromium, &profile).await?;

        let mut chromedriver = ManagedProcess::start(
            "chromedriver",
            Path::new(CHROMEDRIVER),
            &["--port=0".to_string(), "--allowed-ips=127.0.0.1".to_string()],
            &envs,
            &dir.path().join("chromedriver.log"),
        )?;
        let url = wait_for_driver(&mut chromedriver).await?;

        // Plain HTTP: chromedriver listens on loopback only.
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(attach_capabilities(&format!("127.0.0.1:{devtools_port}")));
        let client = tokio::time::timeout(COMMAND_TIMEOUT, builder.connect(&url))
            .await
            .map_err(|_| anyhow!("chromedriver did not answer within {COMMAND_TIMEOUT:?}"))
            .and_then(|connected| Ok(connected?))
            .with_context(|| {
                format!(
                    "open a WebDriver session on Chromium\n--- chromedriver log tail ---\n{}\n--- chromium log tail ---\n{}",
                    chromedriver.log_tail(20),
                    chromium.log_tail(20)
                )
            })?;
        Ok(Self {
            config,
            client,
            chromedriver,
            chromium,
            dir,
        })
    }

    /// The WebDriver session, for anything the helpers here do not cover.
    pub fn driver(&self) -> &Client {
        &self.client
    }

    /// chromedriver's process id.
    pub fn chromedriver_pid(&self) -> Option<u32> {
        self.chromedriver.pid()
    }

    /// The Chromium browser process's id; its helpers run in its process group.
    pub fn chromium_pid(&self) -> Option<u32> {
        self.chromium.pid()
    }

    /// The session's temp dir (profile, `$HOME`, chromedriver log); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Navigates to `url` and waits for the document to load; a page that cannot be shown (a
    /// TLS error, a refused connection) is an error naming Chromium's `net::ERR_…` code.
    pub async fn goto(&self, url: &str) -> Result<()> {
        command(&format!("open {url}"), self.client.goto(url)).await?;
        if let Some(code) = self.error_page_code().await? {
            bail!("open {url}: Chromium shows its error page: {code}");
        }
        Ok(())
    }

    /// Chromium's `net::ERR_…` code when the current page is one of its error pages (the
    /// certificate interstitial, a refused connection), which WebDriver navigation reports as
    /// success. Such a page's document URL is `chrome-error://chromewebdata/`.
    pub async fn error_page_code(&self) -> Result<Option<String>> {
        let script = "return [location.href, document.body ? document.body.innerText : ''];";
        let ret = command("read the page's URL and text", self.client.execute(script, Vec::new())).await?;
        let (href, text): (String, String) =
            serde_json::from_value(ret).context("the page's URL and text are not two strings")?;
        if !href.starts_with(ERROR_PAGE_SCHEME) {
            return Ok(None);
        }
        let code = text
            .split_whitespace()
            .find(|word| word.starts_with("NET::ERR_") || word.starts_with("ERR_"))
            .unwrap_or("(no ERR_ code on the page)");
        Ok(Some(code.to_string()))
    }

    pub async fn current_url(&self) -> Result<String> {
        Ok(self.url().await?.to_string())
    }

    /// The path of the current URL (no query or fragment).
    pub async fn current_path(&self) -> Result<String> {
        Ok(self.url().await?.path().to_string())
    }

    async fn url(&self) -> Result<Url> {
        command("read the page URL", self.client.current_url()).await
    }

    /// The first displayed element matching `css` whose text contains `text` (any text when
    /// `None`), or `None` for now.
    async fn displayed(&self, css: &str, text: Option<&str>) -> Result<Option<Element>> {
        for element in self.find_all(css).await? {
            if !command(&format!("check {css:?} is displayed"), element.is_displayed()).await? {
                continue;
            }
            let Some(wanted) = text else {
                return Ok(Some(element));
            };
            let shown = command(&format!("read {css:?}"), element.text()).await?;
            if shown.contains(wanted) {
                return Ok(Some(element));
            }
        }
        Ok(None)
    }

    /// The texts of the displayed elements matching `css`, in document order.
    pub async fn displayed_texts(&self, css: &str) -> Result<Vec<String>> {
        let mut texts = Vec::new();
        for element in self.find_all(css).await? {
            if command(&format!("check {css:?} is displayed"), element.is_displayed()).await? {
                texts.push(command(&format!("read {css:?}"), element.text()).await?);
            }
        }
        Ok(texts)
    }

    /// The elements matching `css`, in document order.
    async fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        command(&format!("find {css:?}"), self.client.find_all(Locator::Css(css))).await
    }

    /// Waits until an element matching `css` is displayed.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element> {
        poll_until(&format!("a displayed element {css:?}"), timeout, || {
            self.displayed(css, None)
        })
        .await
    }

    /// Waits until an element matching `css` whose text contains `text` is displayed.
    pub async fn wait_for_text(&self, css: &str, text: &str, timeout: Duration) -> Result<Element> {
        poll_until(
            &format!("a displayed element {css:?} with text {text:?}"),
            timeout,
            || self.displayed(css, Some(text)),
        )
        .await
    }

    /// Waits until the URL's path ends with `suffix` (query and fragment ignored).
    pub async fn wait_for_path(&self, suffix: &str, timeout: Duration) -> Result<String> {
        poll_until(&format!("URL path ending in {suffix:?}"), timeout, || async {
            let url = self.url().await?;
            Ok(url.path().ends_with(suffix).then(|| url.to_string()))
        })
        .await
    }

    /// Types `value` into the input matching `css` once it is displayed (its old value cleared).
    pub async fn fill(&self, css: &str, value: &str, timeout: Duration) -> Result<()> {
        let input = self.wait_for(css, timeout).await?;
        command(&format!("clear {css:?}"), input.clear()).await?;
        // The error names the field, never `value` (it may be a password).
        command(&format!("type into {css:?}"), input.send_keys(value)).await
    }

    /// Clicks the element matching `css` once it is displayed.
    pub async fn click(&self, css: &str, timeout: Duration) -> Result<()> {
        let element = self.wait_for(css, timeout).await?;
        command(&format!("click {css:?}"), element.click()).await
    }

    /// Selects the `<option value=…>` of the `<select>` matching `css` by clicking it, as a user
    /// does (the page sees the same `input` and `change` events).
    ///
    /// The options' values are compared here, not in a selector: fantoccini's
    /// `Element::select_by_value` formats the value into `option[value='…']` unescaped.
    pub async fn select(&self, css: &str, value: &str, timeout: Duration) -> Result<()> {
        let select = self.wait_for(css, timeout).await?;
        let what = format!("read the options of {css:?}");
        for option in command(&what, select.find_all(Locator::Css("option"))).await? {
            if command(&what, option.prop("value")).await?.as_deref() == Some(value) {
                return command(&format!("select {value:?} in {css:?}"), option.click()).await;
            }
        }
        bail!("{css:?} has no option with value {value:?}")
    }

    /// Runs one step of a check. When it fails, a screenshot and the page HTML are saved as
    /// `<artifacts_dir>/<name>-<step>.{png,html}` and their paths are added to the error.
    pub async fn step<T>(&self, step: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
        match work.await {
            Ok(value) => Ok(value),
            Err(err) => {
                let saved = self.save_artifacts(step).await;
                Err(err.context(format!("browser step {step:?} failed ({saved})")))
            }
        }
    }

    /// Saves the current page as `<artifacts_dir>/<name>-<label>.png` (and `.html`); returns a
    /// sentence naming the files, or why they could not be saved.
    pub async fn save_artifacts(&self, label: &str) -> String {
        let base = self
            .config
            .artifacts_dir
            .join(format!("{}-{}", file_label(&self.config.name), file_label(label)));
        let png = base.with_extension("png");
        let html = base.with_extension("html");
        let shot = async {
            std::fs::create_dir_all(&self.config.artifacts_dir)
                .with_context(|| format!("create {}", self.config.artifacts_dir.display()))?;
            let bytes = command("take a screenshot", self.client.screenshot()).await?;
            std::fs::write(&png, bytes).with_context(|| format!("write {}", png.display()))?;
            if let Ok(source) = command("read the page source", self.client.source()).await {
                let _ = std::fs::write(&html, source);
            }
            anyhow::Ok(())
        };
        match shot.await {
            Ok(()) => format!("screenshot: {}, page: {}", png.display(), html.display()),
            Err(e) => format!("no screenshot: {e:#}"),
        }
    }

    /// Ends the session, then stops chromedriver and Chromium; the temp dir is removed.
    pub async fn quit(mut self) -> Result<()> {
        command("end the WebDriver session", self.client.clone().close()).await?;
        self.chromedriver.stop();
        self.chromium.stop();
        Ok(())
    }
}

/// Runs one WebDriver command, cut off after [`COMMAND_TIMEOUT`]; an error names `what` (a
/// step or selector, never typed text) and chromedriver's answer.
async fn command<T>(what: &str, run: impl Future<Output = Result<T, CmdError>>) -> Result<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
        Ok(answer) => answer.with_context(|| what.to_string()),
        Err(_) => bail!("{what}: no answer from chromedriver within {COMMAND_TIMEOUT:?}"),
    }
}

/// The capabilities of a session on a Chromium that is already running, reached through its
/// DevTools address (`host:port`): chromedriver attaches instead of launching a browser. The
/// session's timeouts are set here, explicitly.
fn attach_capabilities(debugger_address: &str) -> Capabilities {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut capabilities = Capabilities::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({ "debuggerAddress": debugger_address }),
    );
    capabilities.insert(
        "timeouts".into(),
        json!({
            "implicit": 0,
            "pageLoad": millis(PAGE_LOAD_TIMEOUT),
            "script": millis(SCRIPT_TIMEOUT),
        }),
    );
    capabilities
}

/// Creates `<home>/.pki/nssdb` (empty password) trusting `ca_pem` for TLS servers.
fn init_nss_db(home: &Path, ca_pem: Option<&str>) -> Result<()> {
    let db_dir = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db_dir).with_context(|| format!("create {}", db_dir.display()))?;
    let db = format!("sql:{}", db_dir.display());
    crate::cache::command_output(Command::new(CERTUTIL).args(["-N", "-d", &db, "--empty-password"]))?;
    if let Some(pem) = ca_pem {
        let ca_file = home.join("trusted-ca.pem");
        std::fs::write(&ca_file, pem).with_context(|| format!("write {}", ca_file.display()))?;
        // "C,," = a trusted CA for TLS server certificates only.
        crate::cache::command_output(
            Command::new(CERTUTIL)
                .args(["-A", "-d", &db, "-n", "testkit-trusted-ca", "-t", "C,,", "-a", "-i"])
                .arg(&ca_file),
        )?;
    }
    Ok(())
}

/// Flags of the headless browser process. `--remote-debugging-port=0`: Chromium picks a free
/// loopback port and writes it to `<profile>/DevToolsActivePort`.
fn chromium_args(profile: &Path) -> Vec<String> {
    [
        "--headless",
        // Chromium refuses to run as root with its sandbox, and containers lack the user
        // namespaces it needs otherwise; the browser only visits the test's own servers.
        "--no-sandbox",
        "--disable-gpu",
        // /dev/shm is small in containers; Chromium then uses /tmp.
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("--user-data-dir={}", profile.display()),
        "about:blank".to_string(),
    ])
    .collect()
}

/// Waits for Chromium's DevTools port (first line of `<profile>/DevToolsActivePort`).
async fn wait_for_devtools_port(chromium: &mut ManagedProcess, profile: &Path) -> Result<u16> {
    let file = profile.join("DevToolsActivePort");
    let started = std::time::Instant::now();
    loop {
        if !chromium.is_running() {
            bail!("chromium exited\n--- log tail ---\n{}", chromium.log_tail(30));
        }
        let port = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<u16>().ok());
        if let Some(port) = port {
            return Ok(port);
        }
        if started.elapsed() > DRIVER_READY {
            bail!(
                "chromium wrote no {} within {DRIVER_READY:?}\n--- log tail ---\n{}",
                file.display(),
                chromium.log_tail(30)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What chromedriver logs once it listens, followed by the port (`--port=0` lets it pick).
const DRIVER_STARTED: &str = "started successfully on port ";

/// Waits until chromedriver has logged its port and answers `/status` as ready; returns its URL.
async fn wait_for_driver(process: &mut ManagedProcess) -> Result<String> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let started = std::time::Instant::now();
    loop {
        if !process.is_running() {
            bail!("chromedriver exited\n--- log tail ---\n{}", process.log_tail(30));
        }
        let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
        let port = log.split_once(DRIVER_STARTED).and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u16>().ok()
        });
        if let Some(port) = port {
            let url = format!("http://127.0.0.1:{port}");
            if let Ok(resp) = http.get(format!("{url}/status")).send().await
                && let Ok(body) = resp.json::<serde_json::Value>().await
                && body["value"]["ready"] == serde_json::Value::Bool(true)
            {
                return Ok(url);
            }
        }
        if started.elapsed() > DRIVER_READY {
            bail!(
                "chromedriver not ready after {DRIVER_READY:?}\n--- log tail ---\n{}",
                process.log_tail(30)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `label` with everything but ASCII letters, digits, `-` and `_` replaced by `-`.
fn file_label(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn host_resolver_rules_map_each_name() {
        let config = BrowserConfig::new("t", Path::new("/tmp"))
            .resolve("openbao.ns.svc", IpAddr::V4(Ipv4Addr::new(127, 0, 3, 4)))
            .resolve("bao.lane.localhost", IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(
            config.host_resolver_rules().unwrap().as_deref(),
            Some("MAP openbao.ns.svc 127.0.3.4,MAP bao.lane.localhost 127.0.0.1")
        );
        assert_eq!(
            BrowserConfig::new("t", Path::new("/tmp"))
                .host_resolver_rules()
                .unwrap(),
            None
        );
    }

    #[test]
    fn host_resolver_rules_refuse_a_second_rule_in_a_name() {
        let config =
            BrowserConfig::new("t", Path::new("/tmp")).resolve("a.svc,MAP * 10.0.0.1", IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(config.host_resolver_rules().is_err());
    }

    #[test]
    fn attach_capabilities_name_the_debugger_address_and_the_timeouts() {
        assert_eq!(
            serde_json::Value::Object(attach_capabilities("127.0.0.1:40123")),
            json!({
                "browserName": "chrome",
                "goog:chromeOptions": {"debuggerAddress": "127.0.0.1:40123"},
                "timeouts": {"implicit": 0, "pageLoad": 50_000, "script": 10_000},
            })
        );
        assert!(PAGE_LOAD_TIMEOUT < COMMAND_TIMEOUT && SCRIPT_TIMEOUT < COMMAND_TIMEOUT);
    }

    #[test]
    fn artifact_labels_are_file_names() {
        assert_eq!(file_label("log in/userpass"), "log-in-userpass");
    }
}
