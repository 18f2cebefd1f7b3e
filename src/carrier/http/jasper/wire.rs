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
// Mapping tables. Sources: the dossier /work/shared/domain/carrier-wire/jasper.md (§6 statuses:
// [MEH] common.ts, the Chinese Control Center help text, and [NKY] models.rs; §7 codes: [OSGP]
// JasperError.java and [NKY] models.rs).

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

/// What a platform status means for service; None for a status Control Center does not document
/// (the comparison is exact: the platform spells them in capitals, §6).
pub fn state_of(status: &str) -> Option<ServiceState> {
    STATUSES
        .iter()
        .find(|(s, _)| *s == status)
        .map(|(_, state)| *state)
}

/// Invalid credentials, or a caller IP outside the account's allowed range (HTTP 401).
pub const CODE_INVALID_CREDENTIALS: &str = "10000001";
/// 一个或多个必填字段缺失: one or more required fields are missing (HTTP status not published).
pub const CODE_REQUIRED_FIELD_MISSING: &str = "10000011";
/// SIM 卡状态无效: an invalid SIM status (HTTP status not published).
pub const CODE_INVALID_SIM_STATUS: &str = "10000005";
/// ICCID 无效: an invalid ICCID (HTTP status not published; [NKY] only).
pub const CODE_ICCID_INVALID: &str = "10000021";
/// Invalid apiVersion (HTTP 400): a `base_url` with the wrong `v{n}`.
pub const CODE_INVALID_API_VERSION: &str = "10000024";
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
    /// The platform does not know the card (`Rejected`): the usage sync leaves the card out.
    CardUnknown,
    /// A refusal every card of the account would get (credentials or caller IP, API version,
    /// a request shape the platform does not accept, the API user's role): `Rejected`, and a
    /// usage sync that meets it fails for the account instead of dropping the card.
    AccountRefused,
    /// The fair-use limit: `RateLimited`.
    RateLimit,
    /// The platform failed while processing: nothing known about a change.
    ServerFault,
}

/// Every code of the dossier's table (jasper.md §7: [OSGP] JasperError.java, [NKY] models.rs).
pub const ERROR_CODES: &[(&str, CodeKind)] = &[
    (CODE_INVALID_CREDENTIALS, CodeKind::AccountRefused),
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
    (CODE_ICCID_INVALID, CodeKind::CardUnknown),
    ("10000022", CodeKind::Refused),
    (CODE_JSON_NOT_WELL_FORMED, CodeKind::Refused),
    (CODE_INVALID_API_VERSION, CodeKind::AccountRefused),
    ("10000025", CodeKind::Refused),
    ("10000026", CodeKind::Refused),
    ("10000027", CodeKind::Refused),
    (CODE_INVALID_REQUEST, CodeKind::AccountRefused),
    ("10000029", CodeKind::Refused),
    (CODE_NO_ACCESS, CodeKind::AccountRefused),
    ("10000031", CodeKind::Refused),
    ("10000032", CodeKind::Refused),
    ("10000049", CodeKind::Refused),
    (CODE_INVALID_ICCID, CodeKind::CardUnknown),
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

/// Code simgate reports when `usage_of` finds `ctdDataUsage` null: simgate's own, not the
/// platform's (the platform answered, but with no usage to apply).
pub const CODE_USAGE_UNKNOWN: &str = "USAGE_UNKNOWN";

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
        (
            Some(code),
            Some(CodeKind::Refused | CodeKind::CardUnknown | CodeKind::AccountRefused),
        ) if !status.is_success() => CarrierError::Rejected {
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

/// A failed answer to a change (`PUT devices/{iccid}`): the account's `repeat_window_code`
/// (none is published) on any answer but a server fault → `Deferred`; a code outside the
/// table on a 4xx (the platform refused, nothing applied as far as simgate can tell) →
/// `Deferred` too, never final; everything else as [`error_of`] (codes in the table keep their
/// kind, a code on a 2xx or a 5xx is an unknown outcome).
pub fn change_error_of(
    status: reqwest::StatusCode,
    body: Option<&ErrorBody>,
    retry: Option<std::time::Duration>,
    window: Option<&str>,
) -> CarrierError {
    let code = body.and_then(|b| b.error_code.as_deref());
    let message = body
        .and_then(|b| b.error_message.clone())
        .unwrap_or_default();
    if let Some(code) = code.filter(|_| !status.is_server_error()) {
        if window.is_some_and(|w| w.trim() == code) {
            return CarrierError::Deferred {
                code: code.to_string(),
                message: format!("repeat window (the account's repeat_window_code): {message}"),
                retry_after: None,
            };
        }
        if code_kind(code).is_none() && status.is_client_error() && status.as_u16() != 429 {
            return CarrierError::Deferred {
                code: code.to_string(),
                message: format!("unrecognised refusal of a change (HTTP {status}): {message}"),
                retry_after: None,
            };
        }
    }
    error_of(status, body, retry, true)
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

/// `GET devices/{iccid}` (§1: the field set of [CISCO-GDD] and [MEH] response.ts L3-23; the
/// simulator sends all of them, the adapter reads `iccid`, `status`, `ratePlan`,
/// `dateActivated`, `imsi`, `msisdn`). Every field may be null: a null `status` is a status
/// simgate cannot read, not a malformed answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceBody {
    pub iccid: String,
    #[serde(default)]
    pub imsi: Option<String>,
    #[serde(default)]
    pub msisdn: Option<String>,
    #[serde(default)]
    pub imei: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub rate_plan: Option<String>,
    #[serde(default)]
    pub communication_plan: Option<String>,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub end_consumer_id: Option<String>,
    /// Format not published (§0.4, §10): kept as text, parsed where it can be.
    #[serde(default)]
    pub date_activated: Option<String>,
    #[serde(default)]
    pub date_updated: Option<String>,
    #[serde(default)]
    pub date_shipped: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default, rename = "fixedIPAddress")]
    pub fixed_ip_address: Option<String>,
    #[serde(default)]
    pub sim_notes: Option<String>,
    #[serde(default, rename = "deviceID")]
    pub device_id: Option<String>,
    #[serde(default, rename = "modemID")]
    pub modem_id: Option<String>,
    #[serde(default)]
    pub global_sim_type: Option<String>,
}

/// `GET devices/{iccid}/ctdUsages` (§3: [CISCO-GDU], [SSU] unicommodel.go L26-40, [MEH]
/// response.ts L29-43). It carries the status too, so it alone answers [`Carrier::card`]
/// ([SSU] getdata.go L16-30 reads it so). `ctdDataUsage` is bytes since the cycle start.
///
/// [`Carrier::card`]: crate::carrier::Carrier::card
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CtdUsageBody {
    pub iccid: String,
    #[serde(default)]
    pub imsi: Option<String>,
    #[serde(default)]
    pub msisdn: Option<String>,
    #[serde(default)]
    pub imei: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub rate_plan: Option<String>,
    #[serde(default)]
    pub communication_plan: Option<String>,
    /// [CCTS] types it optional: a null is "usage unknown", never 0.
    #[serde(default)]
    pub ctd_data_usage: Option<u64>,
    #[serde(default, rename = "ctdSMSUsage")]
    pub ctd_sms_usage: Option<u64>,
    /// Seconds.
    #[serde(default)]
    pub ctd_voice_usage: Option<u64>,
    #[serde(default)]
    pub ctd_session_count: Option<u64>,
    #[serde(default)]
    pub overage_limit_reached: Option<bool>,
    /// `DEFAULT`, `TEMPORARY_OVERRIDE` or `PERMANENT_OVERRIDE`.
    #[serde(default)]
    pub overage_limit_override: Option<String>,
}

/// `GET devices/{iccid}/sessionInfo` (§4, field names confirmed by [CISCO-GSD], [OSGP]
/// GetSessionInfoResponse.java id 5986997010 and [CCTS]): the current or most recent data
/// session. Both dates are null when the card never had a session; `dateSessionEnded` is null
/// while it is in one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfoBody {
    pub iccid: String,
    #[serde(default)]
    pub date_session_started: Option<String>,
    #[serde(default)]
    pub date_session_ended: Option<String>,
    /// Always sent, null when the card never had a session ([CISCO-GSD]).
    #[serde(default)]
    pub ip_address: Option<String>,
    /// Sent only when the device has one. DISPUTED spelling: `ipv6Address` [CISCO-GSD] (most
    /// common, sent) vs `ipV6Address` [OSGP] (read too); simgate reads nothing from it.
    #[serde(
        default,
        alias = "ipV6Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_address: Option<String>,
}

/// `PUT devices/{iccid}` (§2): the request (only the status is ever changed; no
/// `effectiveDate`, so the change is asked for now) and the answer (`{"iccid"}`, [MEH]
/// response.ts L25-27).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct EditBody {
    pub status: String,
}

/// Every field `PUT devices/{iccid}` documents (§2, [CISCO-EDD] and [MEH] request-params.ts
/// L3-11; the Cisco list goes on with custom fields, which simgate never sends): the simulator
/// refuses any other field with 10000028.
pub const EDIT_FIELDS: &[&str] = &[
    "effectiveDate",
    "status",
    "ratePlan",
    "communicationPlan",
    "customer",
    "deviceID",
    "modemID",
    "overageLimitOverride",
    "ipv4Address",
    "apn",
    "pdpId",
    "ipv6Address",
];

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct EditAnswer {
    pub iccid: String,
}

/// `GET devices?modifiedSince=&pageSize=&pageNumber=` (§5, Search Devices: [CISCO-SD]; reply
/// fields [SSU] unicommodel.go L4-13, `totalCount` [CCTS] only). Only `devices` is required:
/// a missing `lastPage` is decided by [`page_of`], a missing `pageNumber` is not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchDevicesBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_number: Option<u32>,
    pub devices: Vec<SearchDevice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_page: Option<bool>,
    /// Read by [CCTS] only, not in the §5 skeleton: neither sent by the simulator nor used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_count: Option<u64>,
}

/// One device of a Search Devices page (§5: `iccid`, `status`, `ratePlan`,
/// `communicationPlan`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchDevice {
    pub iccid: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub rate_plan: Option<String>,
    #[serde(default)]
    pub communication_plan: Option<String>,
}

/// The largest (and default) `pageSize` of Search Devices (§5, [CISCO-SD]); the adapter always
/// asks for it: the fewest calls a sweep can make.
pub const SEARCH_PAGE_SIZE: u32 = 50;

/// The query parameters Search Devices documents (§5, [CISCO-SD]): the simulator refuses any
/// other with 10000028.
pub const SEARCH_PARAMS: &[&str] = &[
    "accountId",
    "modifiedSince",
    "status",
    "pageSize",
    "pageNumber",
];

/// `modifiedSince` as [SSU] getdata.go L33-55 sends it: ISO 8601 with an explicit `+00:00`
/// offset, whole seconds (`2016-04-18T17:31:34+00:00`). Sub-seconds are dropped, which moves
/// the time earlier: a sweep may list a card twice, never miss one. (URL-encoding is the
/// query serializer's: `:` → `%3A`, `+` → `%2B`, as in the dossier's example.)
pub fn modified_since_text(since: DateTime<Utc>) -> String {
    since.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// The query of Search Devices page `page`, in the order of the dossier's example (§5:
/// `modifiedSince`, `pageSize`, `pageNumber`; no `status`: the sweep wants every status),
/// URL-encoded.
pub fn search_query(since: DateTime<Utc>, page: u32) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("modifiedSince", &modified_since_text(since))
        .append_pair("pageSize", &SEARCH_PAGE_SIZE.to_string())
        .append_pair("pageNumber", &page.to_string())
        .finish()
}

/// A Search Devices answer for page `page` in simgate's terms. Each device is a
/// [`ListedCard`](crate::carrier::ListedCard) with its status mapped by [`STATUSES`]; a status
/// outside the table keeps its word with no state, a null status is the empty word with no
/// state (the sweep must read such a card itself). Fails (the caller's "malformed") on an ICCID
/// that is not one, or a `pageNumber` that is not the page asked for: skipping a device or
/// taking another page's devices could lose a change.
///
/// `lastPage` missing (no source says it is always sent): a page shorter than
/// [`SEARCH_PAGE_SIZE`] is the last, a full one is not. Fail-safe: a full last page costs one
/// more call (an empty page), a card is never left unlisted. An empty page is the last whatever
/// `lastPage` says, so that a platform answering `lastPage: false` with no devices cannot keep
/// a sweep asking forever.
pub fn page_of(body: &SearchDevicesBody, page: u32) -> Result<crate::carrier::ChangePage, String> {
    if let Some(n) = body.page_number.filter(|n| *n != page) {
        return Err(format!("asked for page {page}, answered page {n}"));
    }
    let cards = body
        .devices
        .iter()
        .map(|d| {
            let iccid = Iccid::parse_any(&d.iccid)
                .map_err(|e| format!("device ICCID {:?}: {e}", d.iccid))?;
            let status = d.status.clone().unwrap_or_default();
            Ok(crate::carrier::ListedCard {
                iccid,
                state: state_of(&status),
                status,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let short = body.devices.len() < SEARCH_PAGE_SIZE as usize;
    let last_page = body.devices.is_empty() || body.last_page.unwrap_or(short);
    Ok(crate::carrier::ChangePage { cards, last_page })
}

/// The timestamp format simgate assumes, e.g. `2016-06-27 07:00:00.000+0000`. Not published
/// (the Cisco "Date Formats" page was not found, §0.4, §10): a guess, so a date in any other
/// form is read as "unknown", never as an error of the whole answer. The simulator writes it.
pub const DATE_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f%z";

pub fn parse_date(s: &str) -> Option<DateTime<Utc>> {
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
    /// None: the status is null or not one of the eight (§6).
    pub state: Option<ServiceState>,
    /// The platform's own status name (more detail than `state`, e.g. INVENTORY).
    pub status: Option<String>,
    pub rate_plan: Option<String>,
    /// None also when the date is in a form simgate cannot read: see `date_activated_text`.
    pub date_activated: Option<DateTime<Utc>>,
    /// `dateActivated` as the platform wrote it.
    pub date_activated_text: Option<String>,
    pub imsi: Option<String>,
    pub msisdn: Option<String>,
}

/// Cycle-to-date usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtdUsage {
    /// None: the platform sent no usage (null).
    pub data_bytes: Option<u64>,
    /// The rate plan's overage limit is reached: the platform may have cut data (false when
    /// the platform does not say).
    pub overage_limit_reached: bool,
    /// Data sessions this cycle.
    pub session_count: Option<u64>,
}

/// A `ctdUsages` answer as the card reading simgate applies: the state from `status`, the usage
/// from `ctdDataUsage`, or "unknown at carrier" with the reason when either cannot be read (a
/// status outside the table, a null status, a null usage). `last_session` is not in the
/// answer: `Unknown` (the diagnosis asks `sessionInfo` for it).
pub fn reading_of(iccid: &Iccid, u: &CtdUsageBody) -> crate::carrier::CarrierCard {
    let state = u.status.as_deref().and_then(state_of);
    let mut unknown = Vec::new();
    match (&u.status, state) {
        (None, _) => unknown.push("status is null".to_string()),
        (Some(s), None) => unknown.push(format!(
            "status {s:?} is not one of Control Center's eight statuses"
        )),
        (Some(_), Some(_)) => {}
    }
    if u.ctd_data_usage.is_none() {
        unknown.push("ctdDataUsage is null".to_string());
    }
    crate::carrier::CarrierCard {
        iccid: iccid.clone(),
        // Not meaningful when `unknown` is set (every consumer checks it first).
        state: state.unwrap_or(ServiceState::Active),
        cycle_usage_bytes: u.ctd_data_usage.unwrap_or(0),
        // Cycle-to-date follows the account's billing cycle (Unicom: 27th to 26th), but the
        // answer does not say which cycle it counted. Deriving it from this machine's clock
        // would be a guess that disagrees with the platform around the 27th (and with a
        // simulated clock always), and a wrong cycle makes simgate drop the usage.
        usage_cycle_start: None,
        last_session: crate::carrier::LastSession::Unknown,
        // The platform does not count status changes.
        changes: 0,
        unknown: (!unknown.is_empty()).then(|| format!("ctdUsages: {}", unknown.join("; "))),
    }
}

/// A `ctdUsages` answer as the usage alone ([`Carrier::usage_of`]): the bytes and cycle start of
/// [`reading_of`] (so the cycle start is what `card()` says: unknown), None when
/// `ctdDataUsage` is null (never read as 0 bytes). The status is not needed for the usage: one
/// outside the table does not make the usage unreadable.
///
/// [`Carrier::usage_of`]: crate::carrier::Carrier::usage_of
pub fn usage_reading_of(iccid: &Iccid, u: &CtdUsageBody) -> Option<crate::carrier::UsageReading> {
    let c = reading_of(iccid, u);
    u.ctd_data_usage.map(|_| crate::carrier::UsageReading {
        cycle_usage_bytes: c.cycle_usage_bytes,
        usage_cycle_start: c.usage_cycle_start,
    })
}

/// A `sessionInfo` answer as simgate's last session (§4): started and not ended is a session
/// open now (`now`), whatever the date text says; an end that can be read is the last session;
/// no dates at all is "never"; anything else (a date in a form simgate cannot read) is
/// `Unknown`, never `Never`, which the diagnosis would read as "no session on record".
pub fn last_session_of(s: &SessionInfoBody, now: DateTime<Utc>) -> crate::carrier::LastSession {
    use crate::carrier::LastSession;
    let text = |v: &Option<String>| v.clone().filter(|t| !t.trim().is_empty());
    match (text(&s.date_session_started), text(&s.date_session_ended)) {
        (Some(_), None) => LastSession::At(now),
        (_, Some(ended)) => parse_date(&ended).map_or(LastSession::Unknown, LastSession::At),
        (None, None) => LastSession::Never,
    }
}
