//! CMP's wire terms: paths and method names, which parameters each method signs, the status
//! and error-code tables, the JSON, XML and text envelopes, and the MB and time formats, shared
//! by the adapter and the wire simulator.
//!
//! Evidence: `shared/domain/carrier-wire/cmp.md` (the dossier; its source keys are quoted as
//! `[KEY]`). Golden fixtures from it are in `tests/fixtures/carrier-wire/cmp/`; `wire_fixtures`
//! in the API tests runs the adapter's parsers and this module's sign sets against them.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::carrier::http::malformed;
use crate::carrier::{CarrierError, LastSession, ServiceState};

/// Every call simgate makes, queries and changes alike: all five clients that implement
/// `disabledNumber` send it here ([YZ-CMP-C], [COOL], [CPP], [ESIM7], [MEH]; dossier §5).
pub const QUERY_PATH: &str = "/query.do";
/// The platform's path for some other changes (`speedLimitAction`, [YZ-CMP-C]). No source sends
/// `disabledNumber` there; the wire simulator refuses every method on it.
pub const SERVICE_ACCEPT_PATH: &str = "/app/serviceAccept.do";

pub const M_STATUS: &str = "queryCardMainStatus";
pub const M_TRAFFIC: &str = "queryTraffic";
pub const M_DISABLE: &str = "disabledNumber";
pub const M_ONLINE: &str = "getOnlineStatus";
pub const M_REAL_NAME: &str = "realNameQueryIot";
/// The access number (and IMSIs) of an ICCID (dossier §7.2): how simgate learns the number a
/// card is named by, once per card at import.
pub const M_TELEPHONE: &str = "getTelephonePlus";
/// 机卡重绑 (dossier §6.1): the machine-card binding change, in one of two forms
/// ([`ImeiReRecordForm`]).
pub const M_IMEI_RERECORD: &str = "IMEIReRecord";

/// The form of `IMEIReRecord` an account sends (dossier §6.1, DISPUTED), per account:
/// - `query_access_number` (version A, [YZ-CMP-C] `serviceAccept_DX.java` id 68586819785):
///   `query.do`, the card by `access_number`, `action=ADD`, `bind_type` absent for an ordinary
///   rebind (the device the card is in now) or `2` with `imei` for a fixed binding. The
///   default: it is the fuller source (a whole implementation with both bind types, the doc
///   comment with the two reply samples, and the path all of its other changes use), and it
///   names the card as every other call of an access-number account does.
/// - `service_accept_iccid` (version B, [ESIM7] id 45573986352, doc URL comment only):
///   `app/serviceAccept.do`, the card by `iccid`, `action=ADD`; no `bind_type`/`imei` in that
///   source, so only the ordinary rebind can be sent.
///
/// The form fixes how the card is named, whatever the account's `card_identifier`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImeiReRecordForm {
    #[default]
    QueryAccessNumber,
    ServiceAcceptIccid,
}

impl ImeiReRecordForm {
    /// The path the form is sent to.
    pub fn path(self) -> &'static str {
        match self {
            ImeiReRecordForm::QueryAccessNumber => QUERY_PATH,
            ImeiReRecordForm::ServiceAcceptIccid => SERVICE_ACCEPT_PATH,
        }
    }

    /// The parameter that names the card.
    pub fn param(self) -> &'static str {
        match self {
            ImeiReRecordForm::QueryAccessNumber => "access_number",
            ImeiReRecordForm::ServiceAcceptIccid => "iccid",
        }
    }

    /// Whether the form can bind to a given IMEI (`bind_type=2`, version A only).
    pub fn binds_to_imei(self) -> bool {
        self == ImeiReRecordForm::QueryAccessNumber
    }
}

/// `action` of `IMEIReRecord`: fixed `ADD` in both versions (dossier §6.1).
pub const REBIND_ACTION: &str = "ADD";
/// `bind_type` of a fixed binding to the given `imei` (version A, [YZ-CMP-C]); absent is an
/// ordinary rebind.
pub const BIND_TYPE_FIXED: &str = "2";
/// `RspCode` of `IMEIReRecord`'s published refusal: 业务校验失败（单卡本月调用次数已超过限定次数！）,
/// the per-card monthly limit ([YZ-CMP-C] sample, dossier §6.1, §10; the number not found).
pub const REBIND_REFUSED: &str = "-5";

/// How a call names its card (dossier §0.4, DISPUTED), per account. `access_number` (the 149 or
/// 10649 number) in [YZ-CMP-Q], [YZ-CMP-C], [MEH], [COOL], [CPP] and [ESIM7]'s disabledNumber:
/// the default. `iccid` in [NKY] (any identifier of 19-20 characters) and in [ESIM7] for some
/// queries; no source sends `disabledNumber` or `realNameQueryIot` by ICCID, so with `iccid`
/// the real-name query still goes by access number, and `getTelephonePlus` always goes by ICCID.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CardIdentifier {
    #[default]
    AccessNumber,
    Iccid,
}

impl CardIdentifier {
    /// The parameter that names the card in a `method` call.
    pub fn param(self, method: &str) -> &'static str {
        match (self, method) {
            (_, M_TELEPHONE) => "iccid",
            (_, M_REAL_NAME) => "access_number",
            (CardIdentifier::Iccid, _) => "iccid",
            (CardIdentifier::AccessNumber, _) => "access_number",
        }
    }
}

/// Whether the value of `param` enters the `sign` of a `method` request (dossier §0.5). The sign
/// always covers `user_id`, `method`, the card's identifier and the plain password (added by
/// [`crate::carrier::http::cmp::request_sign`]); `disabledNumber` also signs `acctCd` (present
/// and empty) and `orderTypeId` ([YZ-CMP-C], [COOL], [MEH], [ESIM7], [CPP]). `needDtl` of
/// `queryTraffic` is sent but not signed in five of six sources ([YZ-CMP-Q], [MEH], [ESIM7],
/// [SMARTCARD], stored Java 3230738650); [XUYU] signs it: `sign_need_dtl` (per account).
pub fn is_signed(method: &str, param: &str, sign_need_dtl: bool) -> bool {
    match param {
        "user_id" | "method" | "access_number" | "iccid" => true,
        "acctCd" | "orderTypeId" => method == M_DISABLE,
        // IMEIReRecord signs `action` in both versions; `bind_type` and `imei` are sent, not
        // signed ([YZ-CMP-C]; [ESIM7] signs iccid, uid, action, pw, method).
        "action" => method == M_IMEI_RERECORD,
        "needDtl" => method == M_TRAFFIC && sign_need_dtl,
        _ => false,
    }
}

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

/// The platform's published error codes and what they mean (dossier §9; [NKY] models.rs, [COOL]).
/// `-2` and `-3` have a second published reading: a getLocationByPhone reply type (stored file
/// 982867444) lists `-2` as a bad sign and `-3` as a bad user or password. Either way nothing was
/// done and the request must change, so both are refusals. Codes not listed here are
/// unrecognised: a read answered so is unavailable, a change answered so has an unknown outcome.
pub const ERROR_CODES: &[(&str, &str)] = &[
    ("-1", "用户名或者密码错误，无权限 (bad user_id or password)"),
    (
        "-2",
        "必传参数缺失 (a required parameter is missing; read as a bad sign by one published reply type)",
    ),
    (
        "-3",
        "sign参数值错误 (bad sign; read as a bad user or password by one published reply type)",
    ),
    ("-4", "iccid号码错误或不存在 (no such card)"),
    (
        "-5",
        "已经订购该产品，请不要重复订购 (already ordered; realNameQueryIot: no real-name record)",
    ),
    ("-7", "该号码已有业务正在处理，请稍后下发 (a change is already in progress for this number)"),
    ("1999", "已存在停机类型为120000的停机记录 (a stop record exists)"),
    (RATE_LIMITED, "请求过于频繁，请稍后再试 (too many requests)"),
];

/// Too many requests.
pub const RATE_LIMITED: &str = "101004";
/// No such card (iccid号码错误或不存在, [NKY]): the only code that says the platform lacks a card.
pub const UNKNOWN_CARD: &str = "-4";
/// Already ordered: a stop of a stopped card or a restore of an active one ([NKY]); the
/// adapter confirms by reading the card.
pub const ALREADY_ORDERED: &str = "-5";
/// `RspType 1` + `result 1999`: a stop record already exists ([COOL] 23665006106 treats it as
/// already stopped; the adapter confirms by reading the card).
pub const STOP_RECORD_EXISTS: &str = "1999";
/// Code simgate uses when `cancel()` finds the card not dismantled at the platform.
pub const NOT_DISMANTLED: &str = "NOT_DISMANTLED";

/// Whether `code` is one of [`ERROR_CODES`].
pub fn is_published(code: &str) -> bool {
    ERROR_CODES.iter().any(|(c, _)| *c == code)
}

/// A platform result code (not "0") → the trait's error kind. A published code is a refusal
/// (nothing was done) with the platform's code and message; 101004 is rate limiting; any other
/// code fails safe: a read is unavailable, a change has an unknown outcome (the journal settles
/// it by reading the card). `-7` (a change in progress) refuses this request: the caller decides.
pub fn platform_error(code: &str, message: &str, changes: bool) -> CarrierError {
    if code == RATE_LIMITED {
        // The platform sends no retry time with 101004.
        return CarrierError::RateLimited { retry_after: None };
    }
    let published = ERROR_CODES.iter().find(|(c, _)| *c == code);
    let Some((_, meaning)) = published else {
        let what = format!("unrecognised platform code {code:?}: {message}");
        return if changes {
            CarrierError::OutcomeUnknown(what)
        } else {
            CarrierError::Transient(what)
        };
    };
    let message = if message.trim().is_empty() {
        (*meaning).to_string()
    } else {
        message.to_string()
    };
    CarrierError::Rejected {
        code: code.to_string(),
        message,
    }
}

/// A change's refusal with a platform `code` (not "0") → the trait's error kind. `window` is the
/// account's `repeat_window_code` (none is published): a change refused with it is `Deferred`.
/// 101004 is rate limiting; a published code keeps its refusal ([`platform_error`]); any other
/// code is `Deferred` too: the platform answered and refused, so as far as simgate can tell
/// nothing was applied, but a refusal it cannot classify is never final (the journal reads the
/// card and sends the change again later). Reads keep [`platform_error`].
pub fn change_refusal(code: &str, message: &str, window: Option<&str>) -> CarrierError {
    if window.is_some_and(|w| w.trim() == code) {
        return CarrierError::Deferred {
            code: code.to_string(),
            message: format!("repeat window (the account's repeat_window_code): {message}"),
            retry_after: None,
        };
    }
    if code == RATE_LIMITED || is_published(code) {
        return platform_error(code, message, true);
    }
    CarrierError::Deferred {
        code: code.to_string(),
        message: format!("unrecognised refusal of a change: {message}"),
        retry_after: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Envelopes, per method (dossier §1-§5, §9):
// - queryCardMainStatus: JSON resultCode/resultMsg/productInfo[].productMainStatusCd (§2,
//   skeleton with [MEH]'s sample values; [NKY] decodes the same).
// - queryTraffic: XML <root><web:NEW_DATA_TICKET_QRsp><IRESULT/><TOTAL_BYTES_CNT>1.23MB</..>
//   (§1, verbatim sample CMXML 3429917198).
// - disabledNumber: DISPUTED (§5): the field set RspType/result/resultMsg/GROUP_TRANSACTIONID
//   ([MEH], [COOL]) in XML (root `businessServiceResponse`, [COOL] 23358068165, possibly one
//   level down) or JSON, top-level `result` alone ([COOL] 23606245317), or plain text
//   containing 流水号 ([YZ-CMP-C]; no captured body). All are read by [`change_answer`]; its
//   `GROUP_TRANSACTIONID` names the change in the receipt.
// - IMEIReRecord: JSON {"Response":{"RspType","RspCode","RspDesc"},"GROUP_TRANSACTIONID"} (§6.1,
//   two verbatim samples of [YZ-CMP-C]; the same model in [ESIM7] `Rootjkcb`), read by
//   [`rebind_answer`].
// - getOnlineStatus: JSON resultCode/resultMsg/groupTransactionId and a `description{…}` object
//   (§3, skeleton from [ESIM7]). The values of `result`/`acctStatusType` and every time format
//   are unknown: online is never guessed, a session time only from a format listed here.
// - realNameQueryIot: XML resultCode/resultMsg/GROUP_TRANSACTIONID/RESULT{…} (§4, [MEH]); the
//   root element's name is unknown (any root is read); JSON accepted as well.
// - Refusals: JSON {"resultCode", "resultMsg"} (§9; `RESULT`/`SMSG` too), or plain text
//   `<code>：<message>` ([NKY] splits replies so; inferred, no captured sample).
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

/// Every leaf element's (or scalar member's) text by name, whatever the root and the depth:
/// the first occurrence of a name wins. XML element names are taken without their prefix.
/// None when the body is neither XML nor a JSON object.
pub fn leaf_fields(body: &str) -> Option<BTreeMap<String, String>> {
    let t = body.trim_start();
    if t.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(t).ok()?;
        let mut out = BTreeMap::new();
        json_leaves(&v, &mut out);
        Some(out)
    } else if t.starts_with('<') {
        xml_leaves(t)
    } else {
        None
    }
}

fn json_leaves(v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    if let serde_json::Value::Object(map) = v {
        for (k, v) in map {
            let text = match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                serde_json::Value::Bool(b) => Some(b.to_string()),
                serde_json::Value::Null => Some(String::new()),
                serde_json::Value::Object(_) => {
                    json_leaves(v, out);
                    None
                }
                serde_json::Value::Array(_) => None,
            };
            if let Some(text) = text {
                out.entry(k.clone()).or_insert(text);
            }
        }
    }
}

fn xml_leaves(body: &str) -> Option<BTreeMap<String, String>> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(body);
    // (name, had a child element, text so far)
    let mut open: Vec<(String, bool, String)> = Vec::new();
    let mut out = BTreeMap::new();
    let mut any = false;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                if let Some(parent) = open.last_mut() {
                    parent.1 = true;
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                open.push((name, false, String::new()));
                any = true;
            }
            Event::Empty(e) => {
                if let Some(parent) = open.last_mut() {
                    parent.1 = true;
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                out.entry(name).or_insert_with(String::new);
                any = true;
            }
            Event::Text(t) => {
                if let Some(cur) = open.last_mut() {
                    cur.2.push_str(&t.decode().ok()?);
                }
            }
            Event::CData(t) => {
                if let Some(cur) = open.last_mut() {
                    cur.2.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(r) => {
                let name = r.decode().ok()?;
                let ch = match r.resolve_char_ref().ok()? {
                    Some(c) => c.to_string(),
                    None => match name.as_ref() {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => format!("&{other};"),
                    },
                };
                if let Some(cur) = open.last_mut() {
                    cur.2.push_str(&ch);
                }
            }
            Event::End(_) => {
                let (name, had_child, text) = open.pop()?;
                if !had_child {
                    out.entry(name).or_insert_with(|| text.trim().to_string());
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (any && open.is_empty()).then_some(out)
}

/// A refusal in plain text, `<code>：<message>` (full-width or ASCII colon), for a published
/// code only.
pub fn text_refusal(body: &str) -> Option<(String, String)> {
    let t = body.trim();
    let (code, message) = t.split_once('：').or_else(|| t.split_once(':'))?;
    let code = code.trim();
    is_published(code).then(|| (code.to_string(), message.trim().to_string()))
}

/// What a `disabledNumber` reply says, in any of its published forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeAnswer {
    /// Accepted (`RspType` 0 with `result` 0 or absent, or `result` 0 alone), with the
    /// platform's transaction id when it gives one.
    Accepted { transaction_id: Option<String> },
    /// Refused with a code (a published one is a refusal; -5 and 1999 are confirmed by a read).
    Refused { code: String, message: String },
    /// Anything else, e.g. the 流水号 text form (whose meaning no source gives): the outcome
    /// is unknown until the card's state is read.
    Unrecognised(String),
}

/// Reads a `disabledNumber` reply (dossier §5): XML or JSON field sets at any depth, a text
/// refusal, or anything else as unrecognised.
pub fn change_answer(body: &str) -> ChangeAnswer {
    if let Some(f) = leaf_fields(body) {
        let rsp_type = f.get("RspType").map(|s| s.trim());
        let result = f
            .get("result")
            .or_else(|| f.get("resultCode"))
            .or_else(|| f.get("RESULT"))
            .map(|s| s.trim());
        let message = f
            .get("resultMsg")
            .or_else(|| f.get("SMSG"))
            .or_else(|| f.get("RspDesc"))
            .cloned()
            .unwrap_or_default();
        let transaction_id = f
            .get("GROUP_TRANSACTIONID")
            .or_else(|| f.get("groupTransactionId"))
            .filter(|t| !t.trim().is_empty())
            .map(|t| t.trim().to_string());
        return match (rsp_type, result) {
            (Some("0"), None | Some("0")) | (None, Some("0")) => {
                ChangeAnswer::Accepted { transaction_id }
            }
            (_, Some(code)) if code != "0" && !code.is_empty() => ChangeAnswer::Refused {
                code: code.to_string(),
                message,
            },
            _ => ChangeAnswer::Unrecognised(short(body)),
        };
    }
    match text_refusal(body) {
        Some((code, message)) => ChangeAnswer::Refused { code, message },
        None => ChangeAnswer::Unrecognised(short(body)),
    }
}

/// Reads an `IMEIReRecord` reply (dossier §6.1: JSON `{"Response":{"RspType","RspCode",
/// "RspDesc"},"GROUP_TRANSACTIONID"}`, two verbatim samples of [YZ-CMP-C]). `RspType` 0 with
/// `RspCode` all zeros (`0000`) or absent is accepted; `RspType` 1 with an `RspCode` is refused
/// with it. A reply without `Response` is read as the common refusal envelope (`resultCode`,
/// §9) or a text refusal; anything else is unrecognised.
pub fn rebind_answer(body: &str) -> ChangeAnswer {
    let Some(f) = leaf_fields(body) else {
        return match text_refusal(body) {
            Some((code, message)) => ChangeAnswer::Refused { code, message },
            None => ChangeAnswer::Unrecognised(short(body)),
        };
    };
    let transaction_id = f
        .get("GROUP_TRANSACTIONID")
        .filter(|t| !t.trim().is_empty())
        .map(|t| t.trim().to_string());
    let message = f
        .get("RspDesc")
        .or_else(|| f.get("resultMsg"))
        .or_else(|| f.get("SMSG"))
        .cloned()
        .unwrap_or_default();
    let rsp_code = f.get("RspCode").map(|s| s.trim());
    match (f.get("RspType").map(|s| s.trim()), rsp_code) {
        (Some("0"), None) => ChangeAnswer::Accepted { transaction_id },
        (Some("0"), Some(c)) if !c.is_empty() && c.bytes().all(|b| b == b'0') => {
            ChangeAnswer::Accepted { transaction_id }
        }
        (Some("1"), Some(c)) if !c.is_empty() => ChangeAnswer::Refused {
            code: c.to_string(),
            message,
        },
        (Some(_), _) => ChangeAnswer::Unrecognised(short(body)),
        (None, _) => match f
            .get("resultCode")
            .or_else(|| f.get("RESULT"))
            .map(|s| s.trim())
        {
            Some(code) if code != "0" && !code.is_empty() => ChangeAnswer::Refused {
                code: code.to_string(),
                message,
            },
            _ => ChangeAnswer::Unrecognised(short(body)),
        },
    }
}

/// A reply's first characters, for an error message.
fn short(body: &str) -> String {
    body.trim().chars().take(120).collect()
}

/// `realNameQueryIot` (dossier §4): `resultCode` and the `RESULT{…}` fields, from XML (any
/// root) or JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealNameReply {
    pub result_code: String,
    pub result_msg: String,
    pub prod_main_status_name: Option<String>,
    /// `certNumber`; the platform writes "null" for none.
    pub cert_number: Option<String>,
}

impl RealNameReply {
    pub fn parse(body: &str) -> Option<RealNameReply> {
        let f = leaf_fields(body)?;
        let present = |k: &str| {
            f.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty() && v != "null")
        };
        Some(RealNameReply {
            result_code: f.get("resultCode")?.trim().to_string(),
            result_msg: f.get("resultMsg").cloned().unwrap_or_default(),
            prod_main_status_name: present("prodMainStatusName"),
            cert_number: present("certNumber"),
        })
    }
}

/// `getTelephonePlus` (dossier §7.2): JSON `{GROUP_TRANSACTIONID, resultCode, resultMsg,
/// info{access_number, ICCID, 3G_IMSI, 4G_IMSI}}` ([ESIM7] `Root`/`Info`; [SMARTCARD] reads
/// the IMSIs). Chosen over `getTelephone`, whose reply is disputed (plain `{RESULT, SMSG}` in
/// [NKY], DES-encrypted in [YZ-CMP-Q]).
#[derive(Debug, Deserialize, Serialize)]
pub struct TelephoneReply {
    #[serde(rename = "resultCode")]
    pub result_code: String,
    #[serde(rename = "resultMsg", default)]
    pub result_msg: String,
    #[serde(rename = "GROUP_TRANSACTIONID", default)]
    pub transaction_id: String,
    #[serde(default)]
    pub info: Option<TelephoneInfo>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct TelephoneInfo {
    #[serde(default)]
    pub access_number: String,
    #[serde(rename = "ICCID", default)]
    pub iccid: String,
    #[serde(rename = "3G_IMSI", default)]
    pub imsi_3g: String,
    #[serde(rename = "4G_IMSI", default)]
    pub imsi_4g: String,
}

/// `getOnlineStatus` (dossier §3): JSON with a `description{…}` object ([ESIM7]).
#[derive(Debug, Deserialize, Serialize)]
pub struct OnlineReply {
    #[serde(rename = "resultCode")]
    pub result_code: String,
    #[serde(rename = "resultMsg", default)]
    pub result_msg: String,
    #[serde(rename = "groupTransactionId", default)]
    pub transaction_id: String,
    #[serde(default)]
    pub description: Option<OnlineDescription>,
}

/// The fields of `description` ([ESIM7] `DescriptionWorkState`). They follow RADIUS accounting
/// attribute names (an observation, not documented); the values of `result`, `acctStatusType`
/// and `rattype`, and the time formats, are not published.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct OnlineDescription {
    pub result: String,
    pub msisdn: String,
    #[serde(rename = "netModel")]
    pub net_model: String,
    pub imsi: String,
    #[serde(rename = "acctStatusType")]
    pub acct_status_type: String,
    #[serde(rename = "eventTimestamp")]
    pub event_timestamp: String,
    #[serde(rename = "framedIpAddress")]
    pub framed_ip_address: String,
    pub provname: String,
    pub duration: String,
    #[serde(rename = "startTime")]
    pub start_time: String,
    #[serde(rename = "stopTime")]
    pub stop_time: String,
    #[serde(rename = "framedIpv6Prefix")]
    pub framed_ipv6_prefix: String,
    #[serde(rename = "framedInterfaceId")]
    pub framed_interface_id: String,
    pub apn: String,
    pub rattype: String,
    pub imei: String,
}

impl OnlineDescription {
    /// The session's start: `startTime`, else `eventTimestamp` ([THL] maps it to the session
    /// start), in a format [`parse_time`] knows. Unknown otherwise, never "none".
    pub fn last_session(&self) -> LastSession {
        parse_time(&self.start_time)
            .or_else(|| parse_time(&self.event_timestamp))
            .map_or(LastSession::Unknown, LastSession::At)
    }
}

/// Time format the simulator writes, in Beijing time. No source gives the platform's formats
/// for session times; [`parse_time`] reads this one and the compact `yyyyMMddHHmmss` that
/// `servCreateDate`-style fields suggest (an inference), nothing else.
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
const TIME_FORMATS: &[&str] = &[TIME_FORMAT, "%Y%m%d%H%M%S"];

/// A platform timestamp (Beijing time) in UTC; None when it is not in a known format.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    let naive = TIME_FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())?;
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
    /// Whether the card has a session now. Always None today: the values that would say so
    /// (`result`, `acctStatusType`) are not published, and guessing would be worse than not
    /// knowing.
    pub online: Option<bool>,
    /// The current or last data session, when the reply's time can be read.
    pub last_session: LastSession,
    /// The session's address and APN, as given.
    pub framed_ip_address: Option<String>,
    pub apn: Option<String>,
}

/// A refusal in the JSON error envelope or as `<code>：<message>` text, if the body is one.
pub(super) fn refusal(body: &str, changes: bool) -> Option<CarrierError> {
    let t = body.trim_start();
    if t.starts_with('{') {
        let r: JsonResult = serde_json::from_str(t).ok()?;
        let code = r.result_code?;
        return (code != "0")
            .then(|| platform_error(&code, r.result_msg.as_deref().unwrap_or(""), changes));
    }
    text_refusal(t).map(|(code, message)| platform_error(&code, &message, changes))
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(
    body: &str,
    method: &str,
    changes: bool,
) -> Result<T, CarrierError> {
    serde_json::from_str(body).map_err(|e| {
        refusal(body, changes).unwrap_or_else(|| malformed(&format!("{method}: {e}"), changes))
    })
}

pub(super) fn parse_xml<T: serde::de::DeserializeOwned>(
    body: &str,
    method: &str,
    changes: bool,
) -> Result<T, CarrierError> {
    if let Some(e) = refusal(body, changes) {
        return Err(e);
    }
    quick_xml::de::from_str(body).map_err(|e| malformed(&format!("{method}: {e}"), changes))
}
