//! Real carrier platforms over HTTP: the client settings every adapter shares (rustls,
//! timeouts, connection reuse), credentials that never reach a log, and the one mapping of
//! transport failures into [`CarrierError`] kinds. Each platform is a folder here (adapter,
//! wire terms, auth, wire simulator), registered in `carrier::platform`.

pub mod cmp;
pub mod cmp_5g;
pub mod jasper;
pub mod onelink;
pub mod unicom_gateway;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::CarrierError;

/// A credential from configuration or the environment. Its Debug and Serialize forms are
/// redacted, so neither a log line nor `simgate config print` can show it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Per-call time limits of one carrier's platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpTimeouts {
    pub connect_ms: u64,
    /// The whole call, from sending to the last byte of the answer.
    pub request_ms: u64,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            connect_ms: 3_000,
            request_ms: 10_000,
        }
    }
}

/// One client per adapter: it keeps connections to the platform open between calls.
pub fn client(timeouts: &HttpTimeouts) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_millis(timeouts.connect_ms))
        .timeout(Duration::from_millis(timeouts.request_ms))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// What a failed exchange means. `changes` says whether the request changes the card: once a
/// change has been sent, silence may hide an applied change, so it is OutcomeUnknown, never a
/// retryable failure.
pub fn send_error(e: reqwest::Error, changes: bool) -> CarrierError {
    // Without the URL: it may carry credentials in its query (CMP signs in the query string).
    let e = e.without_url();
    if e.is_connect() || e.is_builder() {
        CarrierError::Transient(format!("cannot reach the platform: {e}"))
    } else if changes {
        CarrierError::OutcomeUnknown(format!("no answer to a change: {e}"))
    } else {
        CarrierError::Transient(format!("no answer: {e}"))
    }
}

/// An HTTP status without a usable envelope.
pub fn status_error(status: reqwest::StatusCode, retry_after: Option<Duration>) -> CarrierError {
    match status.as_u16() {
        429 => CarrierError::RateLimited { retry_after },
        // Gateways answer 502-504 before the platform processes anything.
        502..=504 => CarrierError::Transient(format!("platform unavailable: HTTP {status}")),
        code => CarrierError::Rejected {
            code: format!("HTTP_{code}"),
            message: status.canonical_reason().unwrap_or("").to_string(),
        },
    }
}

/// A body that is not what the platform sends. For a change it is unknown whether it applied.
pub fn malformed(what: &str, changes: bool) -> CarrierError {
    let msg = format!("malformed answer from the platform: {what}");
    if changes {
        CarrierError::OutcomeUnknown(msg)
    } else {
        CarrierError::Transient(msg)
    }
}

/// `Retry-After` in seconds, when the platform sends one.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug_and_serialized_forms() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(
            serde_json::to_string(&s).unwrap_or_default(),
            "\"<redacted>\""
        );
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn statuses_without_an_envelope_map_to_error_kinds() {
        assert!(matches!(
            status_error(reqwest::StatusCode::TOO_MANY_REQUESTS, None),
            CarrierError::RateLimited { .. }
        ));
        assert!(matches!(
            status_error(reqwest::StatusCode::SERVICE_UNAVAILABLE, None),
            CarrierError::Transient(_)
        ));
        assert!(matches!(
            status_error(reqwest::StatusCode::UNAUTHORIZED, None),
            CarrierError::Rejected { ref code, .. } if code == "HTTP_401"
        ));
        assert!(matches!(
            malformed("x", true),
            CarrierError::OutcomeUnknown(_)
        ));
        assert!(matches!(malformed("x", false), CarrierError::Transient(_)));
    }
}
