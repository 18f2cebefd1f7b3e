//! Control Center's wire terms: the device statuses both ways, the error codes and what each
//! means, the JSON bodies and the timestamp format, shared by the adapter and the wire
//! simulator. (Authentication is HTTP Basic `username:apiKey`, which reqwest writes; there is
//! no auth module.)

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::carrier::http::status_error;
use crate::carrier::{CarrierError, ServiceState};
use crate::domain::Iccid;

// ---------------------------------------------------------------------------------------------
// Mapping tables. Sources: Cisco Control Center REST docs as quoted by public client code
// (OSGP/open-smart-grid-platform `JasperError`, liuxianbing/zebra) and carrier-apis.md.

/// Every device status Control Center documents, with the service it means for simgate.
/// TEST_READY and ACTIVATION_READY cards pass data (test traffic, or the first session activates
/// them), INVENTORY cards do not. REPLACED and PURGED cards are gone for good like RETIRED ones.
pub const STATUSES: &[(&str, ServiceState)] = &[
    ("TEST_READY", ServiceState::Active),
    ("ACTIVATION_READY", ServiceState::Active),
    ("ACTIVATED", ServiceState::Active),
    ("INVENTORY", ServiceState::Stopped),
    ("DEACTIVATED", ServiceState::Stopped),
    ("RETIRED", ServiceState::Cancelled),
    ("REPLACED", ServiceState::Cancelled),
    ("PURGED", ServiceState::Cancelled),
];

/// The platform status that means `state`, both for the status the adapter sets and the one the
/// wire simulator reports.
pub fn status_for(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Active => "ACTIVATED",
        ServiceState::Stopped => "DEACTIVATED",
        ServiceState::Cancelled => "RETIRED",
    }
}

/// What a platform status means for service; None for a status Control Center does not document.
pub fn state_of(status: &str) -> Option<ServiceState> {
    STATUSES
        .iter()
        .find(|(s, _)| *s == status)
        .map(|(_, state)| *state)
}

/// Invalid credentials, or a caller IP outside the account's allowed range (HTTP 401).
pub const CODE_INVALID_CREDENTIALS: &str = "10000001";
/// The request body is not well-formed JSON (HTTP 400).
pub const CODE_JSON_NOT_WELL_FORMED: &str = "10000023";
/// The request carried unrecognized parameters (HTTP 400).
pub const CODE_INVALID_REQUEST: &str = "10000028";
/// The API user's role may not call this function (HTTP 400).
pub const CODE_NO_ACCESS: &str = "10000030";
/// Resource not found - invalid ICCID (HTTP 404).
pub const CODE_INVALID_ICCID: &str = "20000001";
/// Unknown server error (HTTP 500).
pub const CODE_SERVER_ERROR: &str = "30000001";
/// Fair-use overrun: more than one call at a time, or too many calls per second for the account.
pub const CODE_RATE_LIMIT: &str = "40000029";

/// How simgate treats an error code of the platform. Codes not listed here are unrecognised:
/// a read answered so is unavailable, a change answered so has an unknown outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    /// A refusal for good: `Rejected` with the platform's code and message.
    Refused,
    /// The fair-use limit: `RateLimited`.
    RateLimit,
    /// The platform failed while processing: nothing known about a change.
    ServerFault,
}

/// Every code of the dossier's table (jasper.md §7: [OSGP] JasperError.java, [NKY] models.rs).
pub const ERROR_CODES: &[(&str, CodeKind)] = &[
    (CODE_INVALID_CREDENTIALS, CodeKind::Refused),
    ("10000002", CodeKind::Refused),
    ("10000003", CodeKind::Refused),
    ("10000004", CodeKind::Refused),
    ("10000005", CodeKind::Refused),
    ("10000006", CodeKind::Refused),
    ("10000007", CodeKind::Refused),
    ("10000008", CodeKind::Refused),
    ("10000009", CodeKind::Refused),
    ("10000010", CodeKind::Refused),
    ("10000011", CodeKind::Refused),
    ("10000012", CodeKind::Refused),
    ("10000013", CodeKind::Refused),
    ("10000014", CodeKind::Refused),
    ("10000015", CodeKind::Refused),
    ("10000016", CodeKind::Refused),
    ("10000017", CodeKind::Refused),
    ("10000018", CodeKind::Refused),
    ("10000019", CodeKind::Refused),
    ("10000020", CodeKind::Refused),
    ("10000021", CodeKind::Refused),
    ("10000022", CodeKind::Refused),
    (CODE_JSON_NOT_WELL_FORMED, CodeKind::Refused),
    ("10000024", CodeKind::Refused),
    ("10000025", CodeKind::Refused),
    ("10000026", CodeKind::Refused),
    ("10000027", CodeKind::Refused),
    (CODE_INVALID_REQUEST, CodeKind::Refused),
    ("10000029", CodeKind::Refused),
    (CODE_NO_ACCESS, CodeKind::Refused),
    ("10000031", CodeKind::Refused),
    ("10000032", CodeKind::Refused),
    ("10000049", CodeKind::Refused),
    (CODE_INVALID_ICCID, CodeKind::Refused),
    ("20000002", CodeKind::Refused),
    (CODE_SERVER_ERROR, CodeKind::ServerFault),
    ("30000002", CodeKind::ServerFault),
    (CODE_RATE_LIMIT, CodeKind::RateLimit),
];

/// What simgate does with `code`; None for a code the dossier does not list.
pub fn code_kind(code: &str) -> Option<CodeKind> {
    ERROR_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, k)| *k)
}

/// How long to wait after a 40000029 that names no time: the two public clients that retry
/// wait one second ([SSU] autoplan.go L219-227, [MEH] jasper-client/index.ts L126-134).
pub const RATE_LIMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Code simgate reports when `cancel` finds the card still in service: the platform releases
/// numbers itself, so there is nothing to send, only a state to confirm.
pub const CODE_NOT_RETIRED: &str = "NOT_RETIRED";

/// A failed answer, from its HTTP status and (when the platform sent one) its error envelope.
/// `changes`: the request changes the card, so a server fault may hide an applied change. Also
/// called for a 2xx answer that carries an `errorCode` (40000029 is rate limiting whatever the
/// HTTP status, dossier §7).
pub fn error_of(
    status: reqwest::StatusCode,
    body: Option<&ErrorBody>,
    retry: Option<std::time::Duration>,
    changes: bool,
) -> CarrierError {
    let code = body.and_then(|b| b.error_code.as_deref());
    let kind = code.and_then(code_kind);
    if status.as_u16() == 429 || kind == Some(CodeKind::RateLimit) {
        return CarrierError::RateLimited {
            retry_after: Some(retry.unwrap_or(RATE_LIMIT_WAIT)),
        };
    }
    // Gateways answer 502-504 before the platform has processed anything.
    if (502..=504).contains(&status.as_u16()) {
        return status_error(status, retry);
    }
    let message = body
        .and_then(|b| b.error_message.clone())
        .unwrap_or_default();
    let unknown = |what: String| {
        if changes {
            CarrierError::OutcomeUnknown(what)
        } else {
            CarrierError::Transient(what)
        }
    };
    if status.is_server_error() || kind == Some(CodeKind::ServerFault) {
        return unknown(format!(
            "platform error HTTP {status} [{}] {message}",
            code.unwrap_or("-")
        ));
    }
    match (code, kind) {
        (Some(code), Some(CodeKind::Refused)) if !status.is_success() => CarrierError::Rejected {
            code: code.to_string(),
            message,
        },
        // A code outside the table, or any code on a 2xx answer: nothing can be concluded.
        (Some(code), _) => unknown(format!(
            "unrecognised platform answer HTTP {status} [{code}] {message}"
        )),
        (None, _) if changes && !matches!(status.as_u16(), 401 | 403) => unknown(format!(
            "platform answered HTTP {status} without an error code"
        )),
        (None, _) => status_error(status, retry),
    }
}

// ---------------------------------------------------------------------------------------------
// Wire types (field names as Control Center spells them).

/// The error body `{"errorMessage", "errorCode"}` (dossier §7, verbatim examples; `errorCode`
/// is a string there, a number is read too, and [CCTS] accepts `message` for `errorMessage`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default, alias = "message")]
    pub error_message: Option<String>,
    #[serde(default, deserialize_with = "code_text")]
    pub error_code: Option<String>,
}

/// An error code given as a string or a number.
fn code_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// `GET devices/{iccid}` (the fields simgate reads; the platform sends more).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceBody {
    pub iccid: String,
    pub status: String,
    #[serde(default)]
    pub rate_plan: Option<String>,
    #[serde(default)]
    pub date_activated: Option<String>,
    #[serde(default)]
    pub imsi: Option<String>,
    #[serde(default)]
    pub msisdn: Option<String>,
}

/// `GET devices/{iccid}/ctdUsages` (the fields simgate reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CtdUsageBody {
    pub iccid: String,
    pub ctd_data_usage: u64,
    #[serde(default)]
    pub overage_limit_reached: bool,
}

/// `GET devices/{iccid}/sessionInfo`: the current or last data session. Field names follow
/// Cisco's Control Center REST documentation as remembered; not confirmed in public client code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfoBody {
    pub iccid: String,
    #[serde(default)]
    pub date_session_started: Option<String>,
    /// Empty while the session is open.
    #[serde(default)]
    pub date_session_ended: Option<String>,
}

/// `PUT devices/{iccid}`: the request (only the status is ever changed) and the answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct EditBody {
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct EditAnswer {
    pub iccid: String,
}

/// Control Center's timestamp format, e.g. `2016-06-27 07:00:00.000+0000`.
pub const DATE_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f%z";

pub(super) fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, DATE_FORMAT)
        .or_else(|_| DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

// ---------------------------------------------------------------------------------------------
// Results of the extra calls, in simgate terms.

/// A card's identity and plan at the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceDetails {
    pub iccid: Iccid,
    pub state: ServiceState,
    /// The platform's own status name (more detail than `state`, e.g. INVENTORY).
    pub status: String,
    pub rate_plan: Option<String>,
    pub date_activated: Option<DateTime<Utc>>,
    pub imsi: Option<String>,
    pub msisdn: Option<String>,
}

/// Cycle-to-date usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtdUsage {
    pub data_bytes: u64,
    /// The rate plan's overage limit is reached: the platform may have cut data.
    pub overage_limit_reached: bool,
}
