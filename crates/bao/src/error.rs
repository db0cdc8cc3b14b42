//! Errors carry the call (`METHOD /v1/path`) and, for API errors, the status and OpenBao's
//! `errors` text. They never contain tokens or request bodies.

/// What went wrong talking to OpenBao.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaoError {
    /// No TCP/TLS connection could be made: the node is down, not listening yet (OpenBao does
    /// not listen during self-initialization), or the TLS handshake failed. Retry later.
    #[error("{method} {path}: cannot connect to {url}: {detail}")]
    Connect {
        method: String,
        path: String,
        url: String,
        detail: String,
    },

    /// Connected, but no complete answer within the timeout.
    #[error("{method} {path}: timed out: {detail}")]
    Timeout {
        method: String,
        path: String,
        detail: String,
    },

    /// OpenBao answered with a non-success status.
    #[error("{method} {path}: HTTP {status}: {}", errors_text(.errors))]
    Api {
        method: String,
        path: String,
        status: u16,
        errors: Vec<String>,
    },

    /// The connection broke after it was established (e.g. mid-stream).
    #[error("{method} {path}: transport error: {detail}")]
    Transport {
        method: String,
        path: String,
        detail: String,
    },

    /// A success status with a body this client does not understand.
    #[error("{method} {path}: unexpected response body (HTTP {status}): {detail}")]
    Decode {
        method: String,
        path: String,
        status: u16,
        detail: String,
    },

    /// An authenticated endpoint was called on a client without a token.
    #[error("{method} {path}: this call needs a token, but the client has none (use BaoClient::with_token)")]
    MissingToken { method: String, path: String },

    #[error("invalid OpenBao client configuration: {0}")]
    Config(String),
}

/// How a redirect's `Location` is recorded among an API error's texts.
pub(crate) const REDIRECT_PREFIX: &str = "redirected to ";

fn errors_text(errors: &[String]) -> String {
    if errors.is_empty() {
        "(no error text in the response)".to_string()
    } else {
        errors.join("; ")
    }
}

impl BaoError {
    /// True when the node could not be reached at all (down, restarting, not yet listening).
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// OpenBao's `errors` array of an API error (empty otherwise).
    pub fn api_errors(&self) -> &[String] {
        match self {
            Self::Api { errors, .. } => errors,
            _ => &[],
        }
    }

    /// Where a standby's redirect points (its `Location`), when this is one. Clients never
    /// follow redirects themselves (the token would go along); callers decide whether to.
    pub fn redirect_location(&self) -> Option<&str> {
        match self {
            Self::Api { status, errors, .. } if (300..400).contains(status) => errors
                .iter()
                .find_map(|e| e.strip_prefix(REDIRECT_PREFIX)?.split_whitespace().next()),
            _ => None,
        }
    }

    /// Worth retrying unchanged: unreachable, timed out, broken connection, sealed/standby/
    /// overloaded (429, 5xx). 4xx other than 429 are permanent for the same request.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::Api { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// The full `source()` chain of an error on one line; reqwest's top-level text alone
/// ("error sending request") hides the useful part ("Connection refused", "certificate …").
pub(crate) fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::BaoError;

    #[test]
    fn a_standby_redirect_names_its_location() {
        let err = BaoError::Api {
            method: "PUT".into(),
            path: "/v1/auth/jwt/login".into(),
            status: 307,
            errors: vec![format!(
                "{}https://b-0.b.ns.svc:8200/v1/auth/jwt/login (redirects are not followed; call the active node)",
                super::REDIRECT_PREFIX
            )],
        };
        assert_eq!(
            err.redirect_location(),
            Some("https://b-0.b.ns.svc:8200/v1/auth/jwt/login")
        );
        let not_a_redirect = BaoError::Api {
            method: "PUT".into(),
            path: "/v1/auth/jwt/login".into(),
            status: 400,
            errors: vec!["redirected to nowhere".into()],
        };
        assert_eq!(not_a_redirect.redirect_location(), None);
    }

    #[test]
    fn api_error_message_names_call_status_and_errors() {
        let err = BaoError::Api {
            method: "PUT".into(),
            path: "/v1/auth/jwt/login".into(),
            status: 400,
            errors: vec!["invalid audience (aud) claim".into()],
        };
        assert_eq!(
            err.to_string(),
            "PUT /v1/auth/jwt/login: HTTP 400: invalid audience (aud) claim"
        );
        assert!(!err.is_retryable());
        assert_eq!(err.status(), Some(400));
    }
}
