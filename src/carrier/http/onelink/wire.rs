//! OneLink's wire terms: every code simgate interprets ([`codes`]), the envelope, the KB and
//! date formats, and the `stopReason` flag, shared by the adapter and the wire simulator.

use serde::Deserialize;
use serde_json::Value;

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
    /// Ours, not OneLink's: `cancel()` found the card not (yet) released by the platform.
    pub const NOT_CANCELLED: &str = "NOT_CANCELLED";
    /// `realNameStatus` of a registered card.
    pub const REAL_NAME_DONE: &str = "1";

    /// `operType` of `/change/sim-status`.
    pub const OPER_STOP: &str = "0";
    pub const OPER_RESTART: &str = "1";

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

#[derive(Deserialize)]
pub(super) struct Envelope {
    pub status: Value,
    pub message: Option<String>,
    pub result: Option<Vec<Value>>,
}

/// What `/query/sim-basic-info` says of a card. Empty fields are None.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicInfo {
    pub imsi: Option<String>,
    pub msisdn: Option<String>,
    /// When the card was first activated (激活日期).
    pub active_date: Option<chrono::DateTime<chrono::Utc>>,
    /// When the card was opened (开户日期).
    pub open_date: Option<chrono::DateTime<chrono::Utc>>,
}

/// `yyyy-MM-dd HH:mm:ss` in Beijing time, as OneLink writes its dates.
pub fn beijing_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::TimeZone;
    let naive = chrono::NaiveDateTime::parse_from_str(s.trim(), BEIJING_FORMAT).ok()?;
    chrono_tz::Asia::Shanghai
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&chrono::Utc))
}

pub const BEIJING_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
