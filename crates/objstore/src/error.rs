//! Store failures, classified into reasons that a status condition can carry and a user can act
//! on. Messages name the operation, endpoint, bucket and key, never a credential: not the secret
//! key and not the access key id either (messages reach status, Events and logs), and the store's
//! own error text is scrubbed of the access key id it may echo.

use object_store::client::{HttpError, HttpErrorKind};

/// What went wrong talking to the object store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// 401/403, or an S3 error code about the signature or access key: wrong or revoked keys,
    /// or a bucket policy that denies this key.
    #[error("{op}: the store at {endpoint} rejected the credentials: {detail}")]
    CredentialsRejected {
        op: String,
        endpoint: String,
        detail: String,
    },

    /// `NoSuchBucket`: the bucket has to be created by whoever runs the store.
    #[error("{op}: bucket {bucket:?} does not exist at {endpoint}: {detail}")]
    BucketMissing {
        op: String,
        endpoint: String,
        bucket: String,
        detail: String,
    },

    /// No connection, a TLS failure, a timeout or a connection that broke, after retries.
    #[error("{op}: cannot reach the store at {endpoint}: {detail}")]
    Unreachable {
        op: String,
        endpoint: String,
        detail: String,
    },

    /// The object does not exist (e.g. a restore of a deleted backup).
    #[error("{op}: object {key:?} does not exist in bucket {bucket:?}")]
    ObjectMissing { op: String, bucket: String, key: String },

    /// The stored object differs from what was uploaded.
    #[error("verifying {key:?}: {detail}")]
    VerificationFailed { key: String, detail: String },

    /// The target cannot be used as given (bad endpoint URL, bad CA, bad prefix).
    #[error("invalid store configuration: {0}")]
    Config(String),

    /// Anything else the store answered (5xx after retries, unexpected bodies).
    #[error("{op}: {detail}")]
    Other { op: String, detail: String },
}

impl StoreError {
    /// A stable, CamelCase reason for status conditions and the executor's result line.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::CredentialsRejected { .. } => "CredentialsRejected",
            Self::BucketMissing { .. } => "BucketMissing",
            Self::Unreachable { .. } => "Unreachable",
            Self::ObjectMissing { .. } => "ObjectMissing",
            Self::VerificationFailed { .. } => "VerificationFailed",
            Self::Config(_) => "InvalidConfig",
            Self::Other { .. } => "Other",
        }
    }
}

/// A failed streaming upload: either the source stream failed or the store did. Either way the
/// multipart upload was aborted.
#[derive(Debug, thiserror::Error)]
pub enum UploadError<E: std::error::Error + 'static> {
    #[error("reading the data to upload failed: {0}")]
    Source(#[source] E),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What classification needs to know about the store.
pub(crate) struct Context<'a> {
    pub endpoint: &'a str,
    pub bucket: &'a str,
    /// Only to scrub it from the store's error text.
    pub access_key_id: &'a str,
}

/// What stands in for the access key id where the store's error text echoed it.
const ACCESS_KEY_ID_REDACTED: &str = "<access key id>";

/// S3 error codes meaning "these credentials are not accepted here".
const CREDENTIAL_CODES: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "InvalidSecurity",
];

/// Longest error detail kept: S3 error bodies echo the canonical request, which is noise.
const MAX_DETAIL: usize = 600;

pub(crate) fn classify(ctx: &Context<'_>, op: String, key: Option<&str>, err: object_store::Error) -> StoreError {
    let mut detail = err.to_string();
    if !ctx.access_key_id.is_empty() {
        detail = detail.replace(ctx.access_key_id, ACCESS_KEY_ID_REDACTED);
    }
    let detail = truncate(&detail);
    let endpoint = ctx.endpoint.to_string();
    if detail.contains("NoSuchBucket") {
        return StoreError::BucketMissing {
            op,
            endpoint,
            bucket: ctx.bucket.to_string(),
            detail,
        };
    }
    let credentials = matches!(
        err,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) || CREDENTIAL_CODES.iter().any(|code| detail.contains(code));
    if credentials {
        return StoreError::CredentialsRejected { op, endpoint, detail };
    }
    if let (object_store::Error::NotFound { .. }, Some(key)) = (&err, key) {
        return StoreError::ObjectMissing {
            op,
            bucket: ctx.bucket.to_string(),
            key: key.to_string(),
        };
    }
    if transport_failure(&err) {
        return StoreError::Unreachable { op, endpoint, detail };
    }
    StoreError::Other { op, detail }
}

/// True when the chain holds a transport error (connect, TLS, timeout, broken connection).
fn transport_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Timeout | HttpErrorKind::Interrupted
            );
        }
        current = e.source();
    }
    false
}

fn truncate(text: &str) -> String {
    let text = text.trim();
    if text.len() <= MAX_DETAIL {
        return text.to_string();
    }
    let mut end = MAX_DETAIL;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context<'static> {
        Context {
            endpoint: "http://127.0.0.1:9000",
            bucket: "b",
            access_key_id: "AKID",
        }
    }

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: text.to_string().into(),
        }
    }

    #[test]
    fn s3_error_codes_pick_the_reason() {
        let bucket = classify(&ctx(), "list".into(), None, generic("404: <Code>NoSuchBucket</Code>"));
        assert_eq!(bucket.reason(), "BucketMissing");
        let creds = classify(
            &ctx(),
            "list".into(),
            None,
            generic("403: <Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>AKID</AWSAccessKeyId>"),
        );
        assert_eq!(creds.reason(), "CredentialsRejected");
        // The access key id reaches status and Events through this message: never in it, even
        // where the store's own error body echoed it.
        let text = creds.to_string();
        assert!(!text.contains("AKID"), "{text}");
        assert!(text.contains(ACCESS_KEY_ID_REDACTED), "{text}");
        let other = classify(&ctx(), "list".into(), None, generic("500: <Code>InternalError</Code>"));
        assert_eq!(other.reason(), "Other");
        let missing = object_store::Error::NotFound {
            path: "k".into(),
            source: "404".into(),
        };
        assert_eq!(
            classify(&ctx(), "get".into(), Some("k"), missing).reason(),
            "ObjectMissing"
        );
    }

    #[test]
    fn details_are_bounded() {
        let long = "x".repeat(5000);
        assert!(truncate(&long).len() < MAX_DETAIL + 4);
    }
}
