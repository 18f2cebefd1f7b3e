//! OneLink's wire terms: every code simgate interprets ([`codes`]), the envelope, the KB and
//! date formats, and the `stopReason` flag, shared by the adapter and the wire simulator.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::carrier::http::malformed;
use crate::carrier::{CarrierError, LastSession, OrderProgress, ServiceState};
use crate::domain::reasons::StopReason;

/// Every OneLink code simgate interprets, in one place.
pub mod codes {
    use crate::carrier::ServiceState;
    use crate::domain::reasons::StopReason;

    /// Envelope `status` of a successful call; every other value is an error.
    pub const OK: &str = "0";
    /// Token missing or expired: fetch a new token and retry once.
    pub const TOKEN_INVALID: &str = "12021";
    /// The card is not on the platform (IoTCard/IoTOS: "移动平台无此卡").
    pub const CARD_UNKNOWN: &str = "11011";
    /// Wrong appid or password on `/get/token`: a configuration error, final. Reseller
    /// evidence only ([COTONDA], SIMBOSS's OneLink-like table; no China Mobile or client source):
    /// the only [COTONDA] code adopted. Every other refusal of `/get/token` is unavailable.
    pub const CREDENTIALS_REFUSED: &str = "12022";
    /// simgate's own code for a change to a card the platform has cancelled (the domain's
    /// `RuleViolation::CardCancelled`): given when the card reads 9 已销户 / PB 04 销号 after a
    /// refused change, whatever code the platform sent (none is published for this case).
    pub const CARD_CANCELLED: &str = "CARD_CANCELLED";
    /// Ours, not OneLink's: `cancel()` found the card not (yet) released by the platform.
    pub const NOT_CANCELLED: &str = "NOT_CANCELLED";
    /// `realNameStatus` of a registered card.
    pub const REAL_NAME_DONE: &str = "1";

    /// `operType` of `/change/sim-status`.
    pub const OPER_STOP: &str = "0";
    pub const OPER_RESTART: &str = "1";

    /// `/query/order-info` `status` (§3.1, [SMOC] 25165314112) → where the order stands. Every
    /// listed word; a word not listed is open (and warned about), never a guessed outcome.
    pub const ORDER_STATUS: [(&str, OrderKind, &str); 11] = [
        ("acknowledged", OrderKind::Open, "初始"),
        ("ready", OrderKind::Open, "准备"),
        ("future", OrderKind::Open, "等待"),
        ("inProgress", OrderKind::Open, "处理中"),
        ("amending", OrderKind::Open, "修改中"),
        ("suspended", OrderKind::Open, "暂停"),
        ("failed", OrderKind::Failed, "异常"),
        ("aborted", OrderKind::Failed, "终止"),
        ("cancelling", OrderKind::Open, "取消中"),
        ("cancelled", OrderKind::Failed, "已取消"),
        ("completed", OrderKind::Completed, "完成"),
    ];

    /// What an order status word means (see [`ORDER_STATUS`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum OrderKind {
        Open,
        Completed,
        Failed,
    }

    /// The kind of a listed status word (exact, case-sensitive as listed); None: not listed.
    pub fn order_kind(status: &str) -> Option<OrderKind> {
        ORDER_STATUS
            .iter()
            .find(|(w, _, _)| *w == status)
            .map(|(_, k, _)| *k)
    }

    /// `/query/card-bind-status` `testType` (§7.1): 0 话单侧检测 (by the bills; the only one
    /// that reports `sepTime`), 1 网络侧检测 (by the network).
    pub const TEST_TYPE_BILL: &str = "0";
    pub const TEST_TYPE_NETWORK: &str = "1";
    /// `/query/card-bind-status` `result` (§7.1): 0 已分离, 1 未分离, 2 查询失败.
    pub const BIND_SEPARATED: &str = "0";
    pub const BIND_NOT_SEPARATED: &str = "1";
    pub const BIND_QUERY_FAILED: &str = "2";

    /// `/operate/card-bind-by-bill` (§7.2, [PHP] CMIOT_API23A05): `operType` 1 机卡绑定,
    /// 2 机卡解绑; `bindingStyle` 0 首话单自动绑定（一对一）, 1 人工录入IMEI段（一对多）, with
    /// `tac` the first 8-14 digits of the IMEI range.
    pub const BIND_OPER_BIND: &str = "1";
    pub const BIND_OPER_UNBIND: &str = "2";
    pub const BINDING_STYLE_FIRST_BILL: &str = "0";
    pub const BINDING_STYLE_IMEI_RANGE: &str = "1";
    /// How many leading IMEI digits `tac` may carry (§7.2: "first 8–14 digits").
    pub const TAC_DIGITS: std::ops::RangeInclusive<usize> = 8..=14;

    /// simgate's own code: a card whose access number neither simgate nor the platform has
    /// (`/query/card-bind-status` takes an msisdn only).
    pub const NO_MSISDN: &str = "NO_MSISDN";
    /// simgate's own code: a refused bind to the current device of a card the platform reports
    /// in no device (`/query/sim-imei` empty): nothing to bind to.
    pub const NO_DEVICE: &str = "NO_DEVICE";
    /// simgate's own code: an IMEI too short or not digits, refused before anything is sent.
    pub const IMEI_INVALID: &str = "IMEI_INVALID";

    /// `cardStatus` → whether the card has service (dossier onelink.md §8). OneLink-CT codes
    /// are one digit ([PHP] CMIOT_API25S04, [MEH] response.ts L3-14, [SIMCTL], [IOTOS],
    /// [YZ-STATUS]); OneLink-PB codes are two digits in the same field ([PHP], [YZ-STATUS], the
    /// heclouds doc), so codes are matched as strings, exactly. 1 待激活 (silent period: data
    /// flows and activates the card) and 6 可测试 give service; 7 库存 none; 8 预销户 is on its
    /// way out but not released (no service: Stopped); 9 已销户 and PB 04 销号 are released.
    /// Inferred, from the names only: PB 01 单向停机 and 06 休眠 give no data service, 07 待激活
    /// is like CT 1. PB 05 过户 (transferred) and 99 号码不存在 are not mapped: 99 is an unknown
    /// card ([`PB_NO_SUCH_NUMBER`]), 05 a state simgate cannot act on (read: unavailable).
    pub const CARD_STATUS: [(&str, ServiceState, &str); 14] = [
        ("1", ServiceState::Active, "awaiting activation (待激活)"),
        ("2", ServiceState::Active, "active (已激活)"),
        ("4", ServiceState::Stopped, "stopped (停机)"),
        ("6", ServiceState::Active, "testable (可测试)"),
        ("7", ServiceState::Stopped, "inventory (库存)"),
        ("8", ServiceState::Stopped, "pending cancellation (预销户)"),
        ("9", ServiceState::Cancelled, "cancelled (已销户)"),
        ("00", ServiceState::Active, "normal (正常, PB)"),
        ("01", ServiceState::Stopped, "one-way stop (单向停机, PB)"),
        ("02", ServiceState::Stopped, "stopped (停机, PB)"),
        (
            "03",
            ServiceState::Stopped,
            "pending cancellation (预销号, PB)",
        ),
        ("04", ServiceState::Cancelled, "cancelled (销号, PB)"),
        ("06", ServiceState::Stopped, "dormant (休眠, PB)"),
        (
            "07",
            ServiceState::Active,
            "awaiting activation (待激活, PB)",
        ),
    ];

    /// The `cardStatus` codes that confirm a release (`cancel()`): 9 已销户 and PB 04 销号.
    /// 8 预销户 and PB 03 预销号 are not yet.
    pub const RELEASED: [&str; 2] = ["9", "04"];

    /// PB `cardStatus` 99 号码不存在: the platform has no such number.
    pub const PB_NO_SUCH_NUMBER: &str = "99";

    pub fn service_state(card_status: &str) -> Option<ServiceState> {
        CARD_STATUS
            .iter()
            .find(|(c, _, _)| *c == card_status)
            .map(|(_, s, _)| *s)
    }

    /// The `cardStatus` a card in `state` shows (the simulator's direction: OneLink-CT).
    pub fn card_status(state: ServiceState) -> &'static str {
        match state {
            ServiceState::Active => "2",
            ServiceState::Stopped => "4",
            ServiceState::Cancelled => "9",
        }
    }

    /// What a position of `stopReason` (1-based) means to simgate.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Position {
        /// A simgate stop reason.
        Reason(StopReason),
        /// A documented OneLink reason simgate has no counterpart for.
        PlatformOnly(&'static str),
        /// A position public client code does not document.
        Undocumented,
    }

    pub const STOP_REASON_LEN: usize = 12;

    pub fn position(pos: usize) -> Position {
        match pos {
            1 => Position::Reason(StopReason::Expired), // narrowband product expired
            2 => Position::Reason(StopReason::DeviceMismatch), // 机卡分离
            4 => Position::PlatformOnly("M2M management stop (管理停机)"),
            5 => Position::Reason(StopReason::Arrears), // 信控双向停机
            9 => Position::Reason(StopReason::Manual),  // 主动停机, asked for by the customer
            10 => Position::PlatformOnly("region restriction (区域限制)"),
            11 => Position::PlatformOnly("forced stop (强制停机)"),
            _ => Position::Undocumented,
        }
    }

    /// Cards one batch call may carry (§4, §5.1-5.3: "≤100", [PHP]; [THL] "暂定100张";
    /// [SMOC] refuses more than 100 itself).
    pub const BATCH_LIMIT: usize = 100;
    /// What joins the identifiers of a batch call (`msisdns` / `iccids` / `imsis`, §0.3).
    pub const BATCH_SEPARATOR: &str = "_";
    /// `operType` of `/change/sim-status/batch` (§4; numbered unlike the single call): 9
    /// 已激活→已停机, 11 已停机→已激活. The other batch operTypes (1-8, 10) are not sent.
    pub const BATCH_OPER_STOP: &str = "9";
    pub const BATCH_OPER_RESTORE: &str = "11";
    /// `reason` of a batch stop or restore (required for operType 9 and 11): 01 主动停复机.
    pub const BATCH_REASON_OWN: &str = "01";
    /// `/query/sim-batch-result` `jobStatus` (§4.1, [PHP] CMIOT_API23M10, [SMOC] 25895048779)
    /// → whether the job is over. A value not listed is not finished (and warned about).
    pub const JOB_STATUS: [(&str, bool, &str); 5] = [
        ("0", false, "待处理"),
        ("1", false, "处理中"),
        ("2", true, "处理完成"),
        ("3", true, "包含有处理失败记录的处理完成"),
        ("4", true, "处理失败"),
    ];
    /// Whether a listed `jobStatus` is over; None: not listed.
    pub fn job_finished(job_status: &str) -> Option<bool> {
        JOB_STATUS
            .iter()
            .find(|(c, _, _)| *c == job_status)
            .map(|(_, f, _)| *f)
    }
    /// `resultList[].resultType` whose `resultId` is an msisdn (§4.1, [SMOC] 25895048779,
    /// 25480351904); no other value is published.
    pub const RESULT_TYPE_MSISDN: &str = "1";
    /// How many days back `/query/sim-data-usage-daily/batch` answers (§5.1: one day within
    /// the 7 days before today; today itself has no data yet).
    pub const DAILY_DAYS_BACK: i64 = 7;
    /// simgate's own code: a batch of more cards than [`BATCH_LIMIT`], or a daily query for a
    /// day outside the last [`DAILY_DAYS_BACK`], refused before anything is sent.
    pub const BATCH_REFUSED_LOCALLY: &str = "BATCH_REFUSED_LOCALLY";

    /// The `stopReason` flag for a set of simgate reasons (the simulator's direction).
    pub fn stop_reason_flag(reasons: &[StopReason]) -> String {
        (1..=STOP_REASON_LEN)
            .map(|p| match position(p) {
                Position::Reason(r) if reasons.contains(&r) => '2',
                _ => '0',
            })
            .collect()
    }
}

/// A stop reason the platform reports that simgate has no counterpart for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformStopReason {
    /// 1-based position in OneLink's `stopReason` flag.
    pub position: usize,
    pub description: String,
}

/// `/query/sim-stop-reason` in simgate terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneLinkStopReasons {
    /// The flag as the platform sent it.
    pub raw: String,
    pub reasons: Vec<StopReason>,
    pub platform_only: Vec<PlatformStopReason>,
}

/// Parses a `stopReason` flag: "2" at a position = that reason applies, "0" = it does not.
pub fn parse_stop_reason(raw: &str) -> Result<OneLinkStopReasons, String> {
    if raw.chars().count() != codes::STOP_REASON_LEN {
        return Err(format!(
            "stopReason must have {} positions, got {}",
            codes::STOP_REASON_LEN,
            raw.chars().count()
        ));
    }
    let mut out = OneLinkStopReasons {
        raw: raw.to_string(),
        reasons: Vec::new(),
        platform_only: Vec::new(),
    };
    for (i, c) in raw.chars().enumerate() {
        let pos = i + 1;
        match c {
            '0' => {}
            '2' => match codes::position(pos) {
                codes::Position::Reason(r) => out.reasons.push(r),
                codes::Position::PlatformOnly(d) => out.platform_only.push(PlatformStopReason {
                    position: pos,
                    description: d.to_string(),
                }),
                codes::Position::Undocumented => out.platform_only.push(PlatformStopReason {
                    position: pos,
                    description: format!("undocumented stop reason at position {pos}"),
                }),
            },
            other => return Err(format!("stopReason has '{other}' at position {pos}")),
        }
    }
    Ok(out)
}

/// KB as OneLink reports them (a number or a decimal string) → bytes.
pub fn kb_to_bytes(v: &Value) -> Option<u64> {
    let kb = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (kb.is_finite() && kb >= 0.0).then(|| (kb * 1024.0).round() as u64)
}

/// A field the platform sends as a string or a number, as text.
pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A field as text, trimmed; None when it is absent, not text, or blank (the platform sends
/// `" "` for "no value", [SMOC] 25105153156).
fn filled(record: &Map<String, Value>, name: &str) -> Option<String> {
    record
        .get(name)
        .and_then(text)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[derive(Deserialize)]
struct RawEnvelope {
    status: Value,
    message: Option<String>,
    result: Option<Vec<Value>>,
}

/// The envelope every call answers with (dossier §0.4): `status` (a string; a number is read
/// as its text), `message`, `result` (absent = empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub status: String,
    pub message: String,
    pub result: Vec<Value>,
}

/// Parses a body as the envelope. Err when it is not one (the caller decides what that means).
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, String> {
    let env: RawEnvelope =
        serde_json::from_slice(body).map_err(|_| "not an envelope".to_string())?;
    let status = text(&env.status).ok_or_else(|| "status is not a code".to_string())?;
    Ok(Envelope {
        status: status.trim().to_string(),
        message: env.message.unwrap_or_default(),
        result: env.result.unwrap_or_default(),
    })
}

/// The first record of a `result`, or a read failure (Transient) naming the call.
pub fn first_record(path: &str, result: &[Value]) -> Result<Map<String, Value>, CarrierError> {
    match result.first() {
        Some(Value::Object(m)) => Ok(m.clone()),
        _ => Err(malformed(&format!("{path}: no record"), false)),
    }
}

/// `/get/token` (§1): `result[0].token` (a non-empty string) and `result[0].ttl` in seconds
/// (a JSON integer in [SIMCTL]; a string of digits is accepted too).
pub fn parse_token(result: &[Value]) -> Result<(String, Duration), CarrierError> {
    let first = first_record("/get/token", result)?;
    let token = first
        .get("token")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed("/get/token answered without a token", false))?
        .to_string();
    let ttl = first
        .get("ttl")
        .and_then(text)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| malformed("/get/token answered without a ttl", false))?;
    Ok((token, Duration::from_secs(ttl)))
}

/// `/query/sim-status` (§2.1, §8): the raw `cardStatus` and what it means. PB 99 号码不存在 is
/// the platform's "no such card" (Rejected 11011, so `onboard()` refuses it); a code outside
/// the table is unavailable (Transient). `lastChangeDate` is not read (format not found).
pub fn parse_card_status(
    record: &Map<String, Value>,
) -> Result<(String, ServiceState), CarrierError> {
    let code = record
        .get("cardStatus")
        .and_then(text)
        .ok_or_else(|| malformed("/query/sim-status: no cardStatus", false))?;
    if code == codes::PB_NO_SUCH_NUMBER {
        return Err(CarrierError::Rejected {
            code: codes::CARD_UNKNOWN.into(),
            message: "cardStatus 99 (号码不存在, no such number)".into(),
        });
    }
    let state = codes::service_state(&code)
        .ok_or_else(|| malformed(&format!("unknown cardStatus {code}"), false))?;
    Ok((code, state))
}

/// `/query/sim-data-usage` (§2.3): this month's usage in bytes. `dataAmount` is KB; blank or
/// whitespace-only means no usage (0, [SMOC] 25105153156). When `dataAmount` is absent, the
/// [YZ-PARSE] shape `dataAmountList[0].dataAmount` is read: the two shapes cannot be mistaken
/// for each other, so no setting chooses between them. Anything else is unavailable.
pub fn parse_data_usage(record: &Map<String, Value>) -> Result<u64, CarrierError> {
    let amount = match record.get("dataAmount") {
        Some(v) => v.clone(),
        None => record
            .get("dataAmountList")
            .and_then(Value::as_array)
            .and_then(|l| l.first())
            .and_then(|r| r.get("dataAmount"))
            .cloned()
            .ok_or_else(|| malformed("/query/sim-data-usage: no dataAmount", false))?,
    };
    if matches!(&amount, Value::String(s) if s.trim().is_empty()) {
        return Ok(0);
    }
    kb_to_bytes(&amount).ok_or_else(|| malformed("dataAmount is not KB", false))
}

/// `/query/sim-basic-info` (§2.2). Never fails on a field: a date that cannot be read is
/// [`WireDate::Unreadable`] for that field only. `activeDate` is the most common name (5
/// sources); [MEH]'s `activateDate` is read when `activeDate` is absent (they cannot clash).
pub fn parse_basic_info(record: &Map<String, Value>) -> BasicInfo {
    let active = if record.contains_key("activeDate") {
        "activeDate"
    } else {
        "activateDate"
    };
    BasicInfo {
        imsi: filled(record, "imsi"),
        msisdn: filled(record, "msisdn"),
        active_date: WireDate::of(record.get(active)),
        open_date: WireDate::of(record.get("openDate")),
    }
}

/// `/query/sim-session` (§2.6): the newest `simSessionList[].createDate`. Fails safe, never
/// guesses: an empty list is [`LastSession::Never`]; an absent or non-list `simSessionList`,
/// or any entry whose non-blank `createDate` cannot be read (its format is not found), is
/// [`LastSession::Unknown`], so the card's state and usage are still read. Entries with a
/// blank `createDate` are skipped; when only such entries exist the answer is Unknown too
/// (a session existed, its time is not known).
pub fn parse_last_session(record: &Map<String, Value>) -> LastSession {
    let Some(list) = record.get("simSessionList").and_then(Value::as_array) else {
        return LastSession::Unknown;
    };
    let mut newest = None;
    let mut skipped = false;
    for session in list {
        match WireDate::of(session.get("createDate")) {
            WireDate::At(at) => newest = newest.max(Some(at)),
            WireDate::Absent => skipped = true,
            WireDate::Unreadable(_) => return LastSession::Unknown,
        }
    }
    match newest {
        Some(at) => LastSession::At(at),
        None if skipped => LastSession::Unknown,
        None => LastSession::Never,
    }
}

/// What a `/change/sim-status` answered with status 0 (§3, DISPUTED reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeReply {
    /// `result[0].<identifier>` is the card sent ([PHP], [SIMCTL], [MEH]): applied.
    Applied,
    /// `result[0].orderNum` ([GOSDK]): an order the platform took, to be settled with
    /// `/query/order-info` (§3.1). Wins over an echo of the card when a reply has both (an
    /// order still open is the safer reading).
    Order { order_num: String },
    /// No record, or a record naming another card and no order: not proof of anything; the
    /// card must be read again.
    NotProof,
}

pub fn parse_change_reply(result: &[Value], iccid: &str) -> ChangeReply {
    let record = result.first().and_then(Value::as_object);
    if let Some(order_num) = record.and_then(|r| filled(r, "orderNum")) {
        return ChangeReply::Order { order_num };
    }
    let echoed = record
        .and_then(|r| r.get("iccid"))
        .and_then(text)
        .is_some_and(|s| s.trim().eq_ignore_ascii_case(iccid));
    if echoed {
        ChangeReply::Applied
    } else {
        ChangeReply::NotProof
    }
}

/// `/operate/card-bind-by-bill` answered status 0 (§7.2; its reply body is **not found**):
/// `Some(orderNum)` when a record carries one (read as the change call's [GOSDK] form),
/// else None: status 0 (正确) is the only evidence, and it is taken as applied.
pub fn parse_rebind_reply(result: &[Value]) -> Option<String> {
    result
        .first()
        .and_then(Value::as_object)
        .and_then(|r| filled(r, "orderNum"))
}

/// `/query/order-info` (§3.1) in simgate terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderInfo {
    /// `orderNum` as answered (None: absent or blank).
    pub order_num: Option<String>,
    /// The `status` word as answered (trimmed).
    pub status: String,
    pub progress: OrderProgress,
    /// The word is not in the dossier's list: read as open, never as an outcome.
    pub unlisted: bool,
    /// `statusDate` / `createDate`, yyyyMMddHHmmss per [SMOC]; tolerated absent or unreadable.
    pub status_date: WireDate,
    pub create_date: WireDate,
}

/// `/query/order-info` (§3.1): `status` → [`OrderProgress`] by [`codes::ORDER_STATUS`]; a
/// missing or blank `status` is unavailable (Transient). Dates never fail the answer.
pub fn parse_order_info(record: &Map<String, Value>) -> Result<OrderInfo, CarrierError> {
    let status =
        filled(record, "status").ok_or_else(|| malformed("/query/order-info: no status", false))?;
    let kind = codes::order_kind(&status);
    let progress = match kind {
        Some(codes::OrderKind::Completed) => OrderProgress::Completed,
        Some(codes::OrderKind::Failed) => OrderProgress::Failed(status.clone()),
        Some(codes::OrderKind::Open) | None => OrderProgress::Open(status.clone()),
    };
    Ok(OrderInfo {
        order_num: filled(record, "orderNum"),
        unlisted: kind.is_none(),
        status,
        progress,
        status_date: WireDate::of(record.get("statusDate")),
        create_date: WireDate::of(record.get("createDate")),
    })
}

/// `/query/card-bind-status` (§7.1) in simgate terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindStatus {
    /// `result` 0 已分离, with `sepTime` (话单侧 only; format not found: both dossier formats
    /// are read, anything else is `Unreadable` and the time unknown).
    Separated { since: WireDate },
    /// `result` 1 未分离.
    NotSeparated,
}

/// `/query/card-bind-status` (§7.1): `result` 0 / 1; 2 查询失败 is unavailable (Transient)
/// with the platform's `errorCode` and `errorDes`; any other value, or none, is unavailable.
pub fn parse_bind_status(record: &Map<String, Value>) -> Result<BindStatus, CarrierError> {
    let result = filled(record, "result")
        .ok_or_else(|| malformed("/query/card-bind-status: no result", false))?;
    match result.as_str() {
        codes::BIND_SEPARATED => Ok(BindStatus::Separated {
            since: WireDate::of(record.get("sepTime")),
        }),
        codes::BIND_NOT_SEPARATED => Ok(BindStatus::NotSeparated),
        codes::BIND_QUERY_FAILED => Err(CarrierError::Transient(format!(
            "/query/card-bind-status: 查询失败 (result 2), errorCode {}, errorDes {}",
            filled(record, "errorCode").unwrap_or_default(),
            filled(record, "errorDes").unwrap_or_default()
        ))),
        other => Err(malformed(
            &format!("/query/card-bind-status: unknown result {other}"),
            false,
        )),
    }
}

/// `/query/sim-imei` (§2.9): `result[0].imei`; blank or absent is None (no IMEI known).
pub fn parse_imei(record: &Map<String, Value>) -> Option<String> {
    filled(record, "imei")
}

/// `/query/sim-stop-reason` (§2.7): the `stopReason` flag. `platformType` and
/// `shutdownReasonDesc` are not read.
pub fn parse_stop_reasons(record: &Map<String, Value>) -> Result<OneLinkStopReasons, CarrierError> {
    let raw = record
        .get("stopReason")
        .and_then(text)
        .ok_or_else(|| malformed("/query/sim-stop-reason: no stopReason", false))?;
    parse_stop_reason(raw.trim()).map_err(|e| malformed(&e, false))
}

/// `/query/sim-real-name-status` (§2.8): "1" is registered; a blank or missing value is
/// unavailable; any other value is "not registered", as the clients read it ([SIMCTL] L109,
/// [WX]) — the full value list is not found.
pub fn parse_real_name(record: &Map<String, Value>) -> Result<bool, CarrierError> {
    let s = filled(record, "realNameStatus")
        .ok_or_else(|| malformed("/query/sim-real-name-status: no realNameStatus", false))?;
    Ok(s == codes::REAL_NAME_DONE)
}

/// `/query/group-data-usage` (§6): the reply fields are not found; `useAmount` (KB) is a
/// guess, and an answer without it is unavailable.
pub fn parse_group_usage(result: &[Value]) -> Result<u64, CarrierError> {
    result
        .first()
        .and_then(|r| r.get("useAmount"))
        .and_then(kb_to_bytes)
        .ok_or_else(|| malformed("/query/group-data-usage: no useAmount", false))
}

/// What `/query/sim-basic-info` says of a card. Empty fields are None.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicInfo {
    pub imsi: Option<String>,
    pub msisdn: Option<String>,
    /// When the card was first activated (激活日期（首次）).
    pub active_date: WireDate,
    /// When the card was opened (开卡时间).
    pub open_date: WireDate,
}

/// A date field as the platform sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireDate {
    /// Absent, not text, or blank.
    Absent,
    At(chrono::DateTime<chrono::Utc>),
    /// Present but in no known format: unavailable, the raw text kept for the operator.
    Unreadable(String),
}

impl WireDate {
    pub fn of(v: Option<&Value>) -> WireDate {
        match v.and_then(text) {
            Some(s) if !s.trim().is_empty() => match beijing_time(&s) {
                Some(at) => WireDate::At(at),
                None => WireDate::Unreadable(s),
            },
            _ => WireDate::Absent,
        }
    }

    pub fn at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            WireDate::At(t) => Some(*t),
            _ => None,
        }
    }
}

/// The date formats the dossier lists: `yyyy-MM-dd HH:mm:ss` ([WX] for `activeDate`) and
/// `yyyyMMddHHmmss` ([SMOC] for order-info dates, [PHP] for the transid). Read after trimming,
/// in Beijing time: the dossier states no time zone, Asia/Shanghai is an inference (China
/// Mobile's platform; no source shows an offset or a UTC value).
pub fn beijing_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::TimeZone;
    let s = s.trim();
    let naive = [BEIJING_FORMAT, COMPACT_FORMAT]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())?;
    chrono_tz::Asia::Shanghai
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Identifiers joined for a batch call (`a_b_c`, §0.3).
pub fn join_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    ids.into_iter()
        .collect::<Vec<_>>()
        .join(codes::BATCH_SEPARATOR)
}

/// A batch call's identifiers, split (the simulator's direction): blanks dropped.
pub fn split_ids(joined: &str) -> Vec<String> {
    joined
        .split(codes::BATCH_SEPARATOR)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The Beijing calendar day of `at` (the dossier's dates are Beijing time, an inference).
pub fn beijing_day(at: chrono::DateTime<chrono::Utc>) -> chrono::NaiveDate {
    at.with_timezone(&chrono_tz::Asia::Shanghai).date_naive()
}

/// `queryDate` of `/query/sim-data-usage-monthly/batch` (§5.2): the month of `at`, `yyyyMM`,
/// Beijing time.
pub fn month_query_date(at: chrono::DateTime<chrono::Utc>) -> String {
    beijing_day(at).format("%Y%m").to_string()
}

/// `queryDate` of `/query/sim-data-usage-daily/batch` (§5.1): `yyyyMMdd`.
pub fn day_query_date(day: chrono::NaiveDate) -> String {
    day.format("%Y%m%d").to_string()
}

/// Whether `day` is one the daily batch answers on `today` (§5.1): one of the
/// [`codes::DAILY_DAYS_BACK`] days before today (data runs up to yesterday).
pub fn daily_day_in_range(today: chrono::NaiveDate, day: chrono::NaiveDate) -> bool {
    let back = (today - day).num_days();
    (1..=codes::DAILY_DAYS_BACK).contains(&back)
}

/// One card of a batch usage answer (§5.1, §5.2): the identifier(s) it carries and its
/// `dataAmount` in bytes (None: unreadable, so this card has no figure in the answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageItem {
    pub iccid: Option<String>,
    pub msisdn: Option<String>,
    pub imsi: Option<String>,
    pub bytes: Option<u64>,
}

/// A batch usage answer (§5.1, §5.2): the `dataAmountList[]` items of every record. Two shapes,
/// both accepted since they cannot be mistaken for each other: [PHP]'s and [GOSDK]'s
/// `result[]{deadLine, dataAmountList[…]}`, and items directly in `result[]` (a record with a
/// `dataAmount` and no `dataAmountList`). `dataAmount` is KB; blank is 0 ([SMOC]
/// 25105153156, as the single call). `apnDataAmountList` ("dataAmount为0则不返回" is said of it
/// alone) and `deadLine` are not read. An item naming no card is skipped.
pub fn parse_batch_usage(result: &[Value]) -> Vec<UsageItem> {
    let mut out = Vec::new();
    let mut push = |item: &Map<String, Value>| {
        let bytes = match item.get("dataAmount") {
            Some(Value::String(s)) if s.trim().is_empty() => Some(0),
            Some(v) => kb_to_bytes(v),
            None => None,
        };
        let u = UsageItem {
            iccid: filled(item, "iccid"),
            msisdn: filled(item, "msisdn"),
            imsi: filled(item, "imsi"),
            bytes,
        };
        if u.iccid.is_some() || u.msisdn.is_some() || u.imsi.is_some() {
            out.push(u);
        }
    };
    for record in result.iter().filter_map(Value::as_object) {
        match record.get("dataAmountList").and_then(Value::as_array) {
            Some(list) => list.iter().filter_map(Value::as_object).for_each(&mut push),
            None if record.contains_key("dataAmount") => push(record),
            None => {}
        }
    }
    out
}

/// One card of `/query/sim-card-info/batch` (§5.3, [GOSDK] 62506604523): `result[]{status,
/// message, imsi, msisdn, iccid}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardInfo {
    pub iccid: Option<String>,
    pub msisdn: Option<String>,
    pub imsi: Option<String>,
    /// The record's own `status` ("0" = found; None: absent, read as found when the numbers
    /// are there).
    pub status: Option<String>,
}

impl CardInfo {
    /// The card's access number, when the record says it was found and carries one.
    pub fn found_msisdn(&self) -> Option<&str> {
        let ok = self.status.as_deref().is_none_or(|s| s == codes::OK);
        self.msisdn.as_deref().filter(|_| ok)
    }
}

pub fn parse_card_info(result: &[Value]) -> Vec<CardInfo> {
    result
        .iter()
        .filter_map(Value::as_object)
        .map(|r| CardInfo {
            iccid: filled(r, "iccid"),
            msisdn: filled(r, "msisdn"),
            imsi: filled(r, "imsi"),
            status: filled(r, "status"),
        })
        .collect()
}

/// `/change/sim-status/batch` answered status 0 (§4, [PHP], [GOSDK]): `result[0].jobId`, None
/// when it is absent or blank.
pub fn parse_batch_receipt(result: &[Value]) -> Option<String> {
    result
        .first()
        .and_then(Value::as_object)
        .and_then(|r| filled(r, "jobId"))
}

/// One `resultList[]` item of `/query/sim-batch-result` (§4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchResultItem {
    pub result_type: Option<String>,
    pub result_id: Option<String>,
    /// Per-item `status` ("0" applied; its other values are not found, presumably envelope
    /// codes); None: absent or blank, which says nothing about the card.
    pub status: Option<String>,
    pub message: String,
}

impl BatchResultItem {
    /// The msisdn the item names (resultType 1); None for any other type (not published).
    pub fn msisdn(&self) -> Option<&str> {
        (self.result_type.as_deref() == Some(codes::RESULT_TYPE_MSISDN))
            .then_some(self.result_id.as_deref())
            .flatten()
    }
}

/// `/query/sim-batch-result` in simgate terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchResult {
    /// `jobStatus` as answered (trimmed).
    pub job_status: String,
    /// Over, by [`codes::JOB_STATUS`]; false for a value not listed (see `unlisted`).
    pub finished: bool,
    pub unlisted: bool,
    pub items: Vec<BatchResultItem>,
}

/// `/query/sim-batch-result` (§4.1): `jobStatus` (required: missing is unavailable) and
/// `resultList[]` (absent = none yet). An unlisted `jobStatus` is not finished, never a guessed
/// outcome.
pub fn parse_batch_result(record: &Map<String, Value>) -> Result<BatchResult, CarrierError> {
    let job_status = filled(record, "jobStatus")
        .ok_or_else(|| malformed("/query/sim-batch-result: no jobStatus", false))?;
    let finished = codes::job_finished(&job_status);
    let items = record
        .get("resultList")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_object)
                .map(|i| BatchResultItem {
                    result_type: filled(i, "resultType"),
                    result_id: filled(i, "resultId"),
                    status: filled(i, "status"),
                    message: filled(i, "message").unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(BatchResult {
        finished: finished.unwrap_or(false),
        unlisted: finished.is_none(),
        job_status,
        items,
    })
}

/// The format the simulator writes its dates in.
pub const BEIJING_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
pub const COMPACT_FORMAT: &str = "%Y%m%d%H%M%S";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn batch_identifiers_are_joined_and_split_by_underscores() {
        assert_eq!(join_ids(["1", "2", "3"]), "1_2_3");
        assert_eq!(join_ids(["1"]), "1");
        assert_eq!(join_ids(std::iter::empty::<&str>()), "");
        assert_eq!(split_ids("1_2__ 3 _"), vec!["1", "2", "3"]);
        assert!(split_ids("").is_empty());
    }

    #[test]
    fn query_dates_are_beijing_months_and_days() {
        // 2024-01-31 20:00 UTC is already 1 February in Beijing.
        let late = chrono::DateTime::parse_from_rfc3339("2024-01-31T20:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(month_query_date(late), "202402");
        assert_eq!(
            beijing_day(late),
            chrono::NaiveDate::from_ymd_opt(2024, 2, 1).unwrap()
        );
        let day = chrono::NaiveDate::from_ymd_opt(2024, 1, 5).unwrap();
        assert_eq!(day_query_date(day), "20240105");
        let today = chrono::NaiveDate::from_ymd_opt(2024, 1, 10).unwrap();
        let back = |n: i64| today - chrono::Duration::days(n);
        assert!(!daily_day_in_range(today, today), "today has no data yet");
        assert!(daily_day_in_range(today, back(1)));
        assert!(daily_day_in_range(today, back(7)));
        assert!(!daily_day_in_range(today, back(8)));
        assert!(!daily_day_in_range(today, back(-1)));
    }

    #[test]
    fn batch_usage_reads_both_shapes() {
        let item = json!({ "iccid": "898604", "dataAmount": "2", "apnDataAmountList": [] });
        let nested = [json!({ "deadLine": "x", "dataAmountList": [item.clone()] })];
        let flat = [item];
        for result in [&nested[..], &flat[..]] {
            assert_eq!(
                parse_batch_usage(result),
                vec![UsageItem {
                    iccid: Some("898604".into()),
                    msisdn: None,
                    imsi: None,
                    bytes: Some(2048),
                }]
            );
        }
        let odd = [
            json!({ "dataAmountList": [
            { "msisdn": "1440000000001", "dataAmount": " " },
            { "imsi": "460040000000001", "dataAmount": "lots" },
            { "dataAmount": "1" },
            "not a record",
        ] }),
            json!({ "deadLine": "x" }),
        ];
        let items = parse_batch_usage(&odd);
        assert_eq!(items.len(), 2, "the item naming no card is skipped");
        assert_eq!(
            (items[0].msisdn.as_deref(), items[0].bytes),
            (Some("1440000000001"), Some(0))
        );
        assert_eq!(
            (items[1].imsi.as_deref(), items[1].bytes),
            (Some("460040000000001"), None)
        );
        assert!(parse_batch_usage(&[]).is_empty());
    }

    #[test]
    fn card_info_gives_a_number_only_when_found() {
        let infos = parse_card_info(&[
            json!({ "status": "0", "msisdn": "1440000000001", "iccid": "a", "imsi": "i" }),
            json!({ "status": "11011", "msisdn": "1440000000002", "iccid": "b" }),
            json!({ "msisdn": "1440000000003", "iccid": "c" }),
            json!({ "status": "0", "msisdn": " ", "iccid": "d" }),
        ]);
        let found: Vec<Option<&str>> = infos.iter().map(CardInfo::found_msisdn).collect();
        assert_eq!(
            found,
            vec![Some("1440000000001"), None, Some("1440000000003"), None]
        );
        assert_eq!(infos[0].imsi.as_deref(), Some("i"));
    }

    #[test]
    fn a_batch_receipt_needs_a_job_id() {
        assert_eq!(
            parse_batch_receipt(&[json!({ "jobId": " J1 " })]).as_deref(),
            Some("J1")
        );
        assert_eq!(
            parse_batch_receipt(&[json!({ "jobId": 7 })]).as_deref(),
            Some("7")
        );
        assert_eq!(parse_batch_receipt(&[json!({ "jobId": "" })]), None);
        assert_eq!(parse_batch_receipt(&[]), None);
    }

    #[test]
    fn every_job_status_is_classified_and_an_unlisted_one_is_not_finished() {
        assert_eq!(codes::JOB_STATUS.len(), 5);
        for (code, finished) in [
            ("0", false),
            ("1", false),
            ("2", true),
            ("3", true),
            ("4", true),
        ] {
            assert_eq!(codes::job_finished(code), Some(finished), "{code}");
            let r = parse_batch_result(&record(json!({ "jobStatus": code }))).unwrap();
            assert_eq!((r.finished, r.unlisted), (finished, false));
            assert!(r.items.is_empty());
        }
        let r = parse_batch_result(&record(json!({ "jobStatus": "5" }))).unwrap();
        assert_eq!((r.finished, r.unlisted), (false, true));
        assert!(matches!(
            parse_batch_result(&record(json!({ "resultList": [] }))),
            Err(CarrierError::Transient(_))
        ));
    }

    #[test]
    fn batch_result_items_name_msisdns_by_result_type_1() {
        let r = parse_batch_result(&record(json!({ "jobStatus": 3, "resultList": [
            { "resultType": "1", "resultId": "1440000000001", "status": "0", "message": "正确" },
            { "resultType": "2", "resultId": "89860400000000000001", "status": "0" },
            { "resultType": "1", "resultId": "1440000000002" },
        ] })))
        .unwrap();
        assert_eq!((r.job_status.as_str(), r.finished), ("3", true));
        assert_eq!(r.items[0].msisdn(), Some("1440000000001"));
        assert_eq!(r.items[0].status.as_deref(), Some("0"));
        assert_eq!(r.items[1].msisdn(), None, "only resultType 1 is published");
        assert_eq!(
            (r.items[2].status.as_deref(), r.items[2].message.as_str()),
            (None, "")
        );
    }
}
