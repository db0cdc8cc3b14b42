//! The token type: a secret that must never reach a log line.

use std::fmt;

/// An OpenBao token. `Debug` and `Display` print `Token(<redacted>)`; use [`Token::expose`]
/// only where the raw value must leave the process (an HTTP header).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The raw secret. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::Token;

    #[test]
    fn debug_and_display_hide_the_secret() {
        let token = Token::new("s.supersecret");
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        assert_eq!(format!("{token}"), "<redacted>");
        assert!(!format!("{:?}", Some(&token)).contains("supersecret"));
        assert_eq!(token.expose(), "s.supersecret");
    }
}
