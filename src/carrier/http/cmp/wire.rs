//! CMP's wire terms: paths and method names, the status and error-code tables, the JSON and
//! XML envelopes, and the MB and time formats, shared by the adapter and the wire simulator.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::carrier::http::malformed;
use crate::carrier::{CarrierError, ServiceState};

pub const QUERY_PATH: &str = "/query.do";
pub const CHANGE_PATH: &str = "/app/serviceAccept.do";

pub const M_STATUS: &str = "queryCardMainStatus";
pub const M_TRAFFIC: &str = "queryTraffic";
pub const M_DISABLE: &str = "disabledNumber";
pub const M_ONLINE: &str = "getOnlineStatus";
pub const M_REAL_NAME: &str = "realNameQueryIot";

/// `orderTypeId` of `disabledNumber`: 19 stops with number retention (停机保号), 20 restores.
pub const ORDER_STOP: &str = "19";
pub const ORDER_RESTORE: &str = "20";

// ---------------------------------------------------------------------------------------------
// Mapping tables: the only place platform codes are interpreted.
// ---------------------------------------------------------------------------------------------

/// `productMainStatusCd` → simgate's service state.
pub fn main_status(code: &str) -> Option<ServiceState> {
    Some(match code {
        // 可激活: not yet used; the card attaches and starts service on first use, nobody stopped it.
        "1" => ServiceState::Active,
        // 测试激活: test period, the card has service.
        "2" => ServiceState::Active,
        // 测试去激活: the test period ended without activation: no service until activated.
        "3" => ServiceState::Stopped,
        // 在用: in use.
        "4" => ServiceState::Active,
        // 停机: stopped, whether 停机保号 or deactivated.
        "5" => ServiceState::Stopped,
        // 运营商管理状态: pre-opened, arrears stop or emergency stop by the carrier. The card has
        // no service and simgate cannot restore it, but it is not cancelled: Stopped.
        "6" => ServiceState::Stopped,
        // 拆机: dismantled, the number is released.
        "7" => ServiceState::Cancelled,
        _ => return None,
    })
}

/// simgate's service state → `productMainStatusCd`, for the simulator.
pub fn main_status_code(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Active => "4",
        ServiceState::Stopped => "5",
        ServiceState::Cancelled => "7",
    }
}

/// The main status code of a dismantled card.
pub const DISMANTLED: &str = "7";

/// The platform's documented error codes and what they mean.
pub const ERROR_CODES: &[(&str, &str)] = &[
    ("-1", "bad user or password"),
    ("-2", "missing parameter"),
    ("-3", "bad sign"),
    ("-4", "bad iccid"),
    ("-5", "already ordered"),
    ("-7", "a request is already in progress for this number"),
    (RATE_LIMITED, "too many requests"),
];

/// Too many requests.
pub const RATE_LIMITED: &str = "101004";
/// Already ordered: answered to a stop of a stopped card (and a restore of an active one).
pub const ALREADY_ORDERED: &str = "-5";
/// Code simgate uses when `cancel()` finds the card not dismantled at the platform.
pub const NOT_DISMANTLED: &str = "NOT_DISMANTLED";

/// A platform result code (not "0") → the trait's error kind. The platform's own code and
/// message are kept; a missing message is filled from [`ERROR_CODES`]. `-7` (a change in
/// progress) is a refusal of this request: nothing was applied, the caller decides.
pub fn platform_error(code: &str, message: &str) -> CarrierError {
    if code == RATE_LIMITED {
        // The platform sends no retry time with 101004.
        return CarrierError::RateLimited { retry_after: None };
    }
    let message = if message.trim().is_empty() {
        ERROR_CODES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, m)| (*m).to_string())
            .unwrap_or_else(|| "refused by the platform".to_string())
    } else {
        message.to_string()
    };
    CarrierError::Rejected {
        code: code.to_string(),
        message,
    }
}

// ---------------------------------------------------------------------------------------------
// Envelopes. Field names follow public client code (nkypy/carrier-api `china_telecom`, and
// Java/C#/Go clients found by search):
// - queryCardMainStatus: JSON resultCode/resultMsg/productInfo[].productMainStatusCd — confirmed.
// - queryTraffic: XML <root><web:NEW_DATA_TICKET_QRsp><IRESULT/><TOTAL_BYTES_CNT>1.23MB</..> —
//   confirmed, the unit is MB with two decimals.
// - disabledNumber: XML <SvcCont><Response><RspType/><RspCode/><RspDesc/></Response> — the
//   platform's change answer as public clients parse it for other changes; not confirmed for
//   disabledNumber itself.
// - realNameQueryIot: resultCode (0 = real-name registered) and prodMainStatusName/certNumber,
//   answered as XML by some accounts and JSON by others — both accepted.
// - getOnlineStatus: NOT confirmed by any public code found; JSON resultCode/resultMsg plus
//   `onlineStatus` ("1" online) and `startTime` (session start, yyyy-MM-dd HH:mm:ss, Beijing).
// - Refusals (bad auth, bad iccid, 101004...): JSON {"resultCode": code, "resultMsg": msg},
//   the queryCardMainStatus envelope; `RESULT`/`SMSG` (getTelephone's envelope) is accepted too.
//   That XML methods refuse in JSON is an assumption.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct JsonResult {
    #[serde(rename = "resultCode", alias = "RESULT", default)]
    pub result_code: Option<String>,
    #[serde(rename = "resultMsg", alias = "SMSG", default)]
    pub result_msg: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ProductInfo {
    #[serde(rename = "productMainStatusCd")]
    pub status_code: String,
    #[serde(rename = "productMainStatusName", default)]
    pub status_name: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct StatusReply {
    #[serde(rename = "resultCode")]
    pub result_code: String,
    #[serde(rename = "resultMsg", default)]
    pub result_msg: String,
    #[serde(rename = "GROUP_TRANSACTIONID", default)]
    pub transaction_id: String,
    #[serde(default)]
    pub number: String,
    #[serde(rename = "servCreateDate", default)]
    pub serv_create_date: String,
    #[serde(rename = "productInfo", default)]
    pub product_info: Vec<ProductInfo>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename = "root")]
pub struct TrafficRoot {
    // quick-xml matches the qualified name; accept the prefix-less form as well.
    #[serde(rename = "web:NEW_DATA_TICKET_QRsp", alias = "NEW_DATA_TICKET_QRsp")]
    pub rsp: TrafficRsp,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct TrafficRsp {
    #[serde(rename = "IRESULT")]
    pub iresult: String,
    #[serde(rename = "TOTAL_BYTES_CNT", default)]
    pub total_bytes_cnt: String,
    #[serde(rename = "GROUP_TRANSACTIONID", default)]
    pub transaction_id: String,
    #[serde(default)]
    pub number: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename = "SvcCont")]
pub struct ChangeReply {
    #[serde(rename = "Response")]
    pub response: ChangeResponse,
    #[serde(rename = "GROUP_TRANSACTIONID", default)]
    pub transaction_id: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ChangeResponse {
    #[serde(rename = "RspType")]
    pub rsp_type: String,
    #[serde(rename = "RspCode")]
    pub rsp_code: String,
    #[serde(rename = "RspDesc", default)]
    pub rsp_desc: String,
}

/// Success of a change: `RspType` 0 with `RspCode` 0000.
pub const CHANGE_OK: &str = "0000";

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename = "SvcCont")]
pub struct RealNameReply {
    #[serde(rename = "resultCode")]
    pub result_code: String,
    #[serde(rename = "resultMsg", default)]
    pub result_msg: String,
    #[serde(rename = "prodMainStatusName", default)]
    pub prod_main_status_name: String,
    #[serde(rename = "certNumber", default)]
    pub cert_number: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct OnlineReply {
    #[serde(rename = "resultCode")]
    pub result_code: String,
    #[serde(rename = "resultMsg", default)]
    pub result_msg: String,
    #[serde(default)]
    pub number: String,
    #[serde(rename = "onlineStatus", default)]
    pub online_status: String,
    #[serde(rename = "startTime", default)]
    pub start_time: String,
}

/// Time format of the platform's timestamps, in Beijing time.
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// A platform timestamp (Beijing time) in UTC.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(s.trim(), TIME_FORMAT).ok()?;
    chrono_tz::Asia::Shanghai
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

pub(super) const MIB: u64 = 1024 * 1024;

/// `TOTAL_BYTES_CNT` ("12.34MB") in bytes. The platform rounds to 1/100 MB, so the result is
/// exact only to about 10 KB.
pub fn parse_mb(s: &str) -> Option<u64> {
    let num = s.trim().strip_suffix("MB")?.trim();
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty()
        || frac.len() > 2
        || !(int.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let hundredths: u64 = format!("{frac:0<2}").parse().ok()?;
    let whole = int.checked_mul(MIB)?;
    whole.checked_add((hundredths * MIB + 50) / 100)
}

/// Bytes as the platform writes them ("12.34MB"), for the simulator.
pub fn format_mb(bytes: u64) -> String {
    let hundredths = (bytes as u128 * 100 + (MIB as u128) / 2) / MIB as u128;
    format!("{}.{:02}MB", hundredths / 100, hundredths % 100)
}

/// Real-name status of a card, as `realNameQueryIot` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealName {
    Registered,
    /// Not (yet) registered, with the platform's code and message.
    NotRegistered {
        code: String,
        message: String,
    },
}

/// Online state, as `getOnlineStatus` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineStatus {
    pub online: bool,
    /// Start of the current or last data session, when the platform gives one.
    pub last_session_at: Option<DateTime<Utc>>,
}

/// A refusal in the JSON error envelope, if the body is one.
pub(super) fn refusal(body: &str) -> Option<CarrierError> {
    if !body.trim_start().starts_with('{') {
        return None;
    }
    let r: JsonResult = serde_json::from_str(body).ok()?;
    let code = r.result_code?;
    (code != "0").then(|| platform_error(&code, r.result_msg.as_deref().unwrap_or("")))
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(
    body: &str,
    method: &str,
    changes: bool,
) -> Result<T, CarrierError> {
    serde_json::from_str(body)
        .map_err(|e| refusal(body).unwrap_or_else(|| malformed(&format!("{method}: {e}"), changes)))
}

pub(super) fn parse_xml<T: serde::de::DeserializeOwned>(
    body: &str,
    method: &str,
    changes: bool,
) -> Result<T, CarrierError> {
    if let Some(e) = refusal(body) {
        return Err(e);
    }
    quick_xml::de::from_str(body).map_err(|e| malformed(&format!("{method}: {e}"), changes))
}
