//! OpenBao's web UI in a real headless Chromium (Debian's, through chromedriver), against a real
//! `bao` 2.7.2 server with TLS from a test CA on loopback.
//!
//! Proven: a browser that trusts the test CA opens the UI by the DNS name in the server's
//! certificate, logs in with userpass as `demo` and sees the secrets engines page list the KV v2
//! mount `secret/`; a wrong password fails at once with the form's error; a browser that trusts
//! another CA is refused with a certificate error (no
//! certificate checks are switched off). A failed step saves a PNG screenshot named in the
//! error, and no chromedriver or Chromium process outlives the browser.

use anyhow::{Context, Result, ensure};
use serde_json::json;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::browser::{Browser, BrowserConfig, openbao_ui};
use testkit::cache::bao_binary;
use testkit::openbao::{
    BaoServer, BaoServerSpec, NodeAddr, TestNodeConfig, TestTls, node_host, poll_until, write_static_seal_key,
};
use testkit::pki::TestCa;

const VERSION: &str = "2.7.2";
const NAMESPACE: &str = "obtest";
const LABEL: &str = "openbao-0";
const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo-password-for-the-browser-test";
const STARTUP: Duration = Duration::from_secs(60);
/// The UI is a large Ember app; two cores shared with other tests load it in seconds.
const UI_TIMEOUT: Duration = Duration::from_secs(60);

/// One Chromium at a time: each is several processes, and the machine has two cores.
static ONE_BROWSER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where failure screenshots go: `$CARGO_TARGET_DIR/browser-artifacts` (kept after the run).
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::cache::repo_root().join("target"));
    target.join("browser-artifacts")
}

/// A single `bao` node with `ui = true`, static seal, userpass user `demo` (policy `kv-reader`)
/// and a KV v2 mount `secret/`, all created through the API.
struct UiServer {
    _server: BaoServer,
    tls: TestTls,
    addr: NodeAddr,
}

impl UiServer {
    async fn start(dir: &Path) -> Result<Self> {
        let tls = TestTls::generate(&dir.join("tls"), NAMESPACE)?;
        let addr = NodeAddr::allocate()?;
        let key = write_static_seal_key(&dir.join("seal.key"))?;
        // A later config file's `ui = true` wins over the base config's `ui = false`.
        let config_dir = TestNodeConfig::new(LABEL, addr, &dir.join("data"), &tls)
            .static_seal(&key)
            .write_to(&dir.join("config"), &[("10-ui.hcl", "ui = true\n")])?;
        let spec = BaoServerSpec::new(
            LABEL,
            &bao_binary(VERSION)?,
            &config_dir,
            tls.client_config_for(LABEL, &addr),
        );
        let mut server = BaoServer::start(spec)?;
        server.wait_answering(STARTUP).await?;
        let root = testkit::transit::initialize(server.client()).await?;
        server.wait_active(STARTUP).await?;
        let admin = server.client().with_token(root);
        admin
            .write("sys/mounts/secret", &json!({"type": "kv", "options": {"version": "2"}}))
            .await
            .context("mount KV v2 at secret/")?;
        admin
            .write(
                "sys/policies/acl/kv-reader",
                &json!({"policy": "path \"secret/*\" { capabilities = [\"read\", \"list\"] }"}),
            )
            .await
            .context("write policy kv-reader")?;
        admin
            .write("sys/auth/userpass", &json!({"type": "userpass"}))
            .await
            .context("enable userpass")?;
        admin
            .write(
                &format!("auth/userpass/users/{DEMO_USER}"),
                &json!({"password": DEMO_PASSWORD, "token_policies": ["kv-reader"]}),
            )
            .await
            .context("create the demo user")?;
        Ok(Self {
            _server: server,
            tls,
            addr,
        })
    }

    /// The DNS name in the server certificate.
    fn host(&self) -> String {
        node_host(NAMESPACE, LABEL)
    }

    fn base_url(&self) -> String {
        format!("https://{}:{}", self.host(), self.addr.api_port)
    }

    fn browser_config(&self, name: &str, trusted_ca_pem: &str) -> BrowserConfig {
        BrowserConfig::new(name, &artifacts_dir())
            .trust_ca(trusted_ca_pem)
            .resolve(&self.host(), IpAddr::V4(self.addr.ip))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userpass_login_in_chromium_shows_the_secrets_page() -> Result<()> {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let dir = tempfile::Builder::new().prefix("browser-ui-").tempdir()?;
    let server = UiServer::start(dir.path()).await?;

    let browser = Browser::start(server.browser_config("ui-login", server.tls.ca_pem())).await?;
    openbao_ui::login_userpass(&browser, &server.base_url(), DEMO_USER, DEMO_PASSWORD, UI_TIMEOUT).await?;
    openbao_ui::wait_for_secrets_engine(&browser, "secret/", UI_TIMEOUT).await?;
    browser.quit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_with_the_login_forms_error() -> Result<()> {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let dir = tempfile::Builder::new().prefix("browser-ui-").tempdir()?;
    let server = UiServer::start(dir.path()).await?;
    let artifacts = tempfile::Builder::new().prefix("browser-artifacts-").tempdir()?;
    let config = BrowserConfig {
        artifacts_dir: artifacts.path().to_path_buf(),
        ..server.browser_config("wrong-password", server.tls.ca_pem())
    };
    let browser = Browser::start(config).await?;
    let err = openbao_ui::login_userpass(&browser, &server.base_url(), DEMO_USER, "not-the-password", UI_TIMEOUT)
        .await
        .err()
        .context("logged in with a wrong password")?;
    let message = format!("{err:#}");
    ensure!(
        message.contains("invalid username or password"),
        "expected OpenBao's login error, got: {message}"
    );
    let png = artifacts.path().join("wrong-password-log-in-with-userpass.png");
    ensure!(png.exists(), "no screenshot {}: {message}", png.display());
    browser.quit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() -> Result<()> {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let dir = tempfile::Builder::new().prefix("browser-ui-").tempdir()?;
    let server = UiServer::start(dir.path()).await?;

    let other_ca = TestCa::new("some-other-ca");
    let browser = Browser::start(server.browser_config("untrusted-ca", &other_ca.pem.cert)).await?;
    let url = format!("{}{}", server.base_url(), openbao_ui::LOGIN_PATH);
    let err = browser
        .goto(&url)
        .await
        .err()
        .context("the UI opened although the browser does not trust the server's CA")?;
    let message = format!("{err:#}");
    ensure!(
        message.contains("ERR_CERT_AUTHORITY_INVALID"),
        "expected a certificate authority error, got: {message}"
    );
    browser.quit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_saves_a_screenshot_and_no_browser_process_survives() -> Result<()> {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let artifacts = tempfile::Builder::new().prefix("browser-artifacts-").tempdir()?;
    let browser = Browser::start(BrowserConfig::new("failing", artifacts.path())).await?;
    let session_dir = browser.dir().display().to_string();
    browser
        .goto("data:text/html,<p id='here'>a page without the element</p>")
        .await?;
    browser.wait_for("p#here", UI_TIMEOUT).await?;

    let err = browser
        .step(
            "find a missing element",
            browser.wait_for("#missing", Duration::from_secs(1)),
        )
        .await
        .err()
        .context("waiting for a missing element succeeded")?;
    let png = artifacts.path().join("failing-find-a-missing-element.png");
    let message = format!("{err:#}");
    ensure!(
        message.contains(&png.display().to_string()),
        "error does not name {}: {message}",
        png.display()
    );
    let bytes = std::fs::read(&png).with_context(|| format!("read {}", png.display()))?;
    ensure!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        png.display()
    );

    // Every Chromium process (renderers, zygotes, the crash handler that daemonizes) names the
    // session's temp dir in its command line; chromedriver is the test's own child.
    let driver_pid = browser.chromedriver_pid().context("chromedriver running")?;
    let running = processes_mentioning(&session_dir);
    ensure!(running.len() > 2, "too few Chromium processes found: {running:?}");
    // Dropped without quit, as on a failed test.
    drop(browser);
    poll_until("every browser process gone", Duration::from_secs(10), || async {
        let survivors = processes_mentioning(&session_dir);
        Ok((survivors.is_empty() && !alive(driver_pid)).then_some(()))
    })
    .await
}

/// `(pid, command line)` of every live process whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid))
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmdline.contains(needle).then_some((pid, cmdline))
        })
        .collect()
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}
