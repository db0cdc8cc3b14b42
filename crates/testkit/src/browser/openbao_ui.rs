//! OpenBao's web UI (the Ember app served under `/ui/` when `ui = true`), as a user drives it.
//!
//! The production build strips the `data-test-*` attributes except a few, so the selectors are
//! the form's ids and names, read from the served app (OpenBao 2.7.2):
//! - login page `/ui/vault/auth`: `select[data-test-select="auth-method"]` (option values are
//!   method types: `token`, `userpass`, …), then `input#username`, `input#password` and
//!   `button#auth-submit`;
//! - after login the app routes to `/ui/vault/secrets`, the secrets engines list, where each
//!   mount is a link into it (`a[href="/ui/vault/secrets/secret/list"]`) whose text is its path
//!   (`secret/`).

use super::Browser;
use crate::openbao::poll_until;
use anyhow::{Result, anyhow, ensure};
use std::time::Duration;

pub const LOGIN_PATH: &str = "/ui/vault/auth";
pub const SECRETS_PATH: &str = "/ui/vault/secrets";
pub const AUTH_METHOD_SELECT: &str = r#"select[data-test-select="auth-method"]"#;
pub const USERNAME_INPUT: &str = "input#username";
pub const PASSWORD_INPUT: &str = "input#password";
pub const SUBMIT_BUTTON: &str = "button#auth-submit";
/// The login form's error banner, e.g. "Authentication failed: invalid username or password".
pub const LOGIN_ERROR: &str = ".message.is-danger .alert-banner-message-body";

/// Opens `<base_url>/ui/vault/auth`, logs in with the userpass method (mount `userpass/`) and
/// waits for the secrets engines page; a refused login fails at once with the form's error.
/// `base_url` is e.g. `https://openbao.ns.svc:8200`.
pub async fn login_userpass(
    browser: &Browser,
    base_url: &str,
    username: &str,
    password: &str,
    timeout: Duration,
) -> Result<()> {
    let base = base_url.trim_end_matches('/');
    browser
        .step("open login page", browser.goto(&format!("{base}{LOGIN_PATH}")))
        .await?;
    browser
        .step("log in with userpass", async {
            browser.select(AUTH_METHOD_SELECT, "userpass", timeout).await?;
            browser.fill(USERNAME_INPUT, username, timeout).await?;
            browser.fill(PASSWORD_INPUT, password, timeout).await?;
            browser.click(SUBMIT_BUTTON, timeout).await?;
            wait_for_login(browser, timeout).await
        })
        .await
}

/// Waits until the app leaves the login form for the secrets engines page, or the form shows
/// its error banner (then the error names the banner's text).
async fn wait_for_login(browser: &Browser, timeout: Duration) -> Result<()> {
    let outcome = poll_until("the secrets engines page or a login error", timeout, || async {
        if browser.current_path().await?.ends_with(SECRETS_PATH) {
            return Ok(Some(Ok(())));
        }
        let banners = browser.displayed_texts(LOGIN_ERROR).await?;
        Ok(banners.first().map(|text| Err(text.trim().to_string())))
    })
    .await?;
    outcome.map_err(|message| anyhow!("the login form shows an error: {message}"))
}

/// Waits until the secrets engines page lists the mount `path` (e.g. `secret/`): a link into
/// the mount (`/ui/vault/secrets/<mount>/…`) whose text is the path.
pub async fn wait_for_secrets_engine(browser: &Browser, path: &str, timeout: Duration) -> Result<()> {
    let mount = path.trim_end_matches('/');
    ensure!(
        !mount.is_empty() && !mount.contains(['"', '\\']),
        "mount path {path:?} cannot be put in a CSS selector"
    );
    let link = format!(r#"a[href^="{SECRETS_PATH}/{mount}/"]"#);
    browser
        .step(&format!("secrets page lists {path}"), async {
            browser.wait_for_path(SECRETS_PATH, timeout).await?;
            browser.wait_for_text(&link, path, timeout).await?;
            Ok(())
        })
        .await
}
