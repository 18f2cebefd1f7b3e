//! The gateway's wire terms: API names and paths, the `simStatus` and `realNameStatus` tables,
//! the result codes and what each means, the JSON envelopes and call bodies, and the usage
//! unit, shared by the adapter and the wire simulator. Sources: the dossier
//! `/work/shared/domain/carrier-wire/unicom-gateway.md` (§ below, source keys in its README).

use serde::{Deserialize, Serialize};

use crate::carrier::http::status_error;
use crate::carrier::{CarrierCard, CarrierError, LastSession, ServiceState};
use crate::domain::Iccid;

// ---------------------------------------------------------------------------------------------
// Calls (§0.1: `<base>/<apiName>/V1/1Main/vV1.1`).

pub const API_DETAILS: &str = "wsGetTerminalDetails";
pub const API_EDIT: &str = "wsEditTerminal";
pub const API_USAGE: &str = "wsGetTerminalUsage";

/// The path of `api` below `base_url` (§0.1: [SIMCTL] L84, L116; [MEH]; the SDK builds the same
/// from apiName `<api>/V1/1Main` and apiVer `V1.1`, [UGW] web_utils.go L41-58).
pub fn api_path(api: &str) -> String {
    format!("/{api}/V1/1Main/vV1.1")
}

/// At most this many ICCIDs per `wsGetTerminalDetails` ([YZ-LT-Q] "批量查询仅支持50位号码", §1, §7).
pub const DETAILS_BATCH: usize = 50;

/// Outer `status` and inner `resultCode` of success (§0.5).
pub const OK: &str = "0000";

/// `wsEditTerminal` `changeType` of the SIM status (§2: `"3"` in every source).
pub const CHANGE_TYPE_STATUS: &str = "3";

// ---------------------------------------------------------------------------------------------
// Tables.

/// Every `simStatus` of §3 (codes 0-9: [MEH] common.ts L2-11, [SIMCTL] L69, [UNSDK], [YZ-LT-Q],
/// [YZ-STATUS]) with the service it means for simgate. 0-7 are mapped as the adapter of the
/// same carrier's Control Center maps the equivalent status words ([MEH] names them
/// TEST_READY … INVENTORY): 可测试/可激活 pass data (test traffic, or the first session
/// activates them), 库存 does not, 已失效/已清除/已更换 are gone for good. 8 and 9 have no
/// Control Center word and no source says what they do: **inferred from the names**:
/// 8 开始 ("started", an initial lifecycle state listed with the pre-service ones) is taken as
/// in service like 可测试/可激活; 9 预清除 ("pre-purge", on its way to 已清除) is taken as
/// stopped: out of service but not yet released, so `cancel()` does not confirm on it and
/// waits for 5 已清除 (or 4/6).
pub const SIM_STATUSES: &[(&str, &str, ServiceState)] = &[
    ("0", "可测试", ServiceState::Active),
    ("1", "可激活", ServiceState::Active),
    ("2", "已激活", ServiceState::Active),
    ("3", "已停用", ServiceState::Stopped),
    ("4", "已失效", ServiceState::Cancelled),
    ("5", "已清除", ServiceState::Cancelled),
    ("6", "已更换", ServiceState::Cancelled),
    ("7", "库存", ServiceState::Stopped),
    ("8", "开始", ServiceState::Active),
    ("9", "预清除", ServiceState::Stopped),
];

/// What a `simStatus` means for service; None outside the table (exact comparison).
pub fn state_of(sim_status: &str) -> Option<ServiceState> {
    SIM_STATUSES
        .iter()
        .find(|(c, _, _)| *c == sim_status)
        .map(|(_, _, s)| *s)
}

/// The `simStatus` that means `state`: the `targetValue` the adapter sends (§2: "2" 激活,
/// "3" 停用, [YJ], [GWU]) and the status the simulator reports (4 已失效 for a cancelled card,
/// the first of the released statuses).
pub fn sim_status_for(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Active => "2",
        ServiceState::Stopped => "3",
        ServiceState::Cancelled => "4",
    }
}

/// `realNameStatus` (§4, [MEH] response.ts L11, [UNSDK]): 2 需要实名已实名 and 3 不需要实名已实名
/// are verified ([SIMCTL] L129 reads them so), 0 不需实名未实名 and 1 需要实名未实名 are not;
/// None outside the table.
pub fn real_name_verified(code: &str) -> Option<bool> {
    match code {
        "0" | "1" => Some(false),
        "2" | "3" => Some(true),
        _ => None,
    }
}

/// Bytes in the MB of `monthToDateDataUsage`. The dossier says MB ([MEH] L13-14 "单位 MB",
/// [YZ-PARSE] "数据用量(MB)") but not which MB; **inferred** binary: [SIMCTL] L134-135 turns it
/// into KB by multiplying by 1024.
pub const BYTES_PER_MB: u64 = 1024 * 1024;

/// An MB figure as the gateway writes it (a decimal string, §1: `"0"`, `"12.5"`) in bytes,
/// rounded to the byte; None for text that is not a finite, non-negative number.
pub fn mb_to_bytes(mb: &str) -> Option<u64> {
    let v: f64 = mb.trim().parse().ok()?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let bytes = (v * BYTES_PER_MB as f64).round();
    // Past u64 (about 17.6 million TB) is not a usage figure.
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// `bytes` as the gateway's MB string (the simulator's side of [`mb_to_bytes`]): a division by
/// a power of two is exact in f64 below 2^53 bytes, and `Display` writes the shortest text that
/// reads back to the same value, so the adapter reads back the simulated bytes exactly.
pub fn bytes_to_mb(bytes: u64) -> String {
    (bytes as f64 / BYTES_PER_MB as f64).to_string()
}

// ---------------------------------------------------------------------------------------------
// Result codes.

/// 账户阻止状态变更为预激活状态: the account blocks this status change ([MEH] types/response.ts
/// L66-67, §0.5). A published refusal of a change.
pub const CODE_STATUS_CHANGE_BLOCKED: &str = "1104";
/// `billingCycle` outside the months the platform answers ("超出月份返回resultCode:1074", [YJ]).
pub const CODE_MONTH_OUT_OF_RANGE: &str = "1074";

/// Every inner `resultCode` the dossier publishes besides `0000`, each a refusal for good
/// (`Rejected` with the code and the platform's `resultDesc`). Any other code is unrecognised:
/// a read answered with one is unavailable (`Transient`), a change answered with one is
/// settled by reading the card (see the adapter), never final.
pub const RESULT_CODES: &[(&str, &str)] = &[
    (CODE_STATUS_CHANGE_BLOCKED, "账户阻止状态变更为预激活状态"),
    (CODE_MONTH_OUT_OF_RANGE, "billingCycle out of range"),
];

pub fn is_published_code(code: &str) -> bool {
    RESULT_CODES.iter().any(|(c, _)| *c == code)
}

/// Code of ours: the card is not in `wsGetTerminalDetails`' `terminals` (the gateway's answer
/// for an unknown ICCID is not found, §1): the platform does not know it. The only code
/// `card_not_known` takes for an unknown card.
pub const CODE_CARD_NOT_KNOWN: &str = "CARD_NOT_IN_TERMINALS";

/// Code of ours: `cancel()` found the card still in service (the platform releases numbers
/// itself; there is nothing to send, only a state to confirm).
pub const CODE_NOT_RETIRED: &str = "NOT_RETIRED";

/// A refusal from the gateway itself: outer `status` other than `0000`, i.e. the gateway did
/// not forward the call (§0.5). Its codes are not published (bad token, app_id, timestamp
/// skew: not found); they refuse the request before the platform sees it, so nothing was
/// applied, and every card of the account would get the same: `Rejected` with the status as
/// the code (never "card not known": a sync fails for the account instead of dropping cards).
pub fn gateway_refusal(status: &str, message: Option<&str>) -> CarrierError {
    CarrierError::Rejected {
        code: status.to_string(),
        message: format!(
            "the gateway did not forward the call (status {status}): {}",
            message.unwrap_or("")
        ),
    }
}

/// A failed answer without a readable envelope, from its HTTP status. 429: rate limited
/// ([YZ-LT-Q], §0.5; its `Retry-After` if any, otherwise none: no source gives a wait).
/// 502-504: a gateway before processing, unavailable. Other 5xx: the platform may have
/// processed the call, so a change has an unknown outcome. Other 4xx: a read fails as
/// `status_error` says; a change without an envelope is of unknown outcome except 401/403.
pub fn http_error(
    status: reqwest::StatusCode,
    retry: Option<std::time::Duration>,
    changes: bool,
) -> CarrierError {
    let code = status.as_u16();
    if code == 429 || (502..=504).contains(&code) {
        return status_error(status, retry);
    }
    let unknown = |what: String| {
        if changes {
            CarrierError::OutcomeUnknown(what)
        } else {
            CarrierError::Transient(what)
        }
    };
    if status.is_server_error() {
        return unknown(format!("gateway error HTTP {status}"));
    }
    if changes && !matches!(code, 401 | 403) {
        return unknown(format!(
            "gateway answered HTTP {status} without an envelope"
        ));
    }
    status_error(status, retry)
}

/// A published business refusal (`Rejected` with the code and `resultDesc`), or, for a read,
/// an unrecognised code (`Transient`: nothing can be concluded from it).
pub fn read_refusal(code: &str, desc: Option<&str>) -> CarrierError {
    if is_published_code(code) {
        CarrierError::Rejected {
            code: code.to_string(),
            message: desc.unwrap_or("").to_string(),
        }
    } else {
        CarrierError::Transient(format!(
            "unrecognised gateway resultCode {code}: {}",
            desc.unwrap_or("")
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Envelopes (§0.3, §0.5).

/// The request envelope (§0.3: [UNSDK] `Request`, [UGW] iot_gateway_client.go L107-140,
/// [SIMCTL] L28-57). `data` carries `messageId`, `openId`, `version` and the call's parameters.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct RequestEnvelope {
    pub app_id: String,
    pub timestamp: String,
    pub trans_id: String,
    pub token: String,
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// The outer reply (§0.5): `status` `"0000"` = the gateway accepted and forwarded; `data` is
/// the platform's answer. A `status` given as a number is read as its digits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ReplyEnvelope {
    #[serde(deserialize_with = "text")]
    pub status: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
}

/// The fields of the inner `data` every answer carries (§0.5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InnerHead {
    #[serde(default, deserialize_with = "text")]
    pub result_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_desc: Option<String>,
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
}

/// A code or figure given as a string or a number ([YJ] sends `changeType` as a number; a
/// gateway may well answer codes so too).
pub fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// One of `wsGetTerminalDetails`' `terminals` (§1: [UNSDK] id 30368563814, [MEH]
/// response.ts L4-61). The adapter reads `iccid`, `simStatus`, `realNameStatus`,
/// `monthToDateDataUsage`, `msisdn`, `imsi`, `ratePlan`, `dateActivated`; the simulator sends
/// the skeleton's field set. Every field may be missing or null: a missing `simStatus` or usage
/// makes the card "unknown at carrier", never a malformed answer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Terminal {
    pub iccid: String,
    #[serde(default)]
    pub msisdn: Option<String>,
    #[serde(default)]
    pub imsi: Option<String>,
    #[serde(default)]
    pub imei: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub sim_status: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub real_name_status: Option<String>,
    /// A JSON number in [MEH]'s sample (`21003113`); kept as text.
    #[serde(default, deserialize_with = "text")]
    pub rate_plan: Option<String>,
    /// MB, a string (§1).
    #[serde(default, deserialize_with = "text")]
    pub month_to_date_data_usage: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub month_to_date_usage: Option<String>,
    #[serde(default, rename = "monthToDateSMSUsage", deserialize_with = "text")]
    pub month_to_date_sms_usage: Option<String>,
    #[serde(default)]
    pub date_activated: Option<String>,
    #[serde(default)]
    pub date_modified: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub lock_status: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub ctd_session_count: Option<String>,
}

/// `wsGetTerminalDetails`' inner `data` (§1).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct DetailsData {
    #[serde(flatten)]
    pub head: InnerHead,
    #[serde(default)]
    pub terminals: Option<Vec<Terminal>>,
}

/// `wsEditTerminal`'s inner `data` (§2: `{messageId, version, resultCode, timestamp, iccid,
/// effectiveDate}`, [UNSDK] `WsEditTerminalRes`, [MEH] response.ts L72-76).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EditData {
    #[serde(flatten)]
    pub head: InnerHead,
    #[serde(default)]
    pub iccid: Option<String>,
    #[serde(default)]
    pub effective_date: Option<String>,
}

/// `wsGetTerminalUsage`'s inner `data` (§5: only `totalDataVolume` is known, [YJ], [YZ-PARSE]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageData {
    #[serde(flatten)]
    pub head: InnerHead,
    #[serde(default, deserialize_with = "text")]
    pub total_data_volume: Option<String>,
}

/// Whether `cycle` is a `billingCycle` (§5: `yyyyMM`, e.g. `"202412"`).
pub fn is_billing_cycle(cycle: &str) -> bool {
    cycle.len() == 6
        && cycle.bytes().all(|b| b.is_ascii_digit())
        && matches!(cycle[4..].parse::<u8>(), Ok(1..=12))
}

// ---------------------------------------------------------------------------------------------
// Results in simgate terms.

/// A terminal as the card reading simgate applies: the state from `simStatus`, the usage from
/// `monthToDateDataUsage` (MB → bytes), or "unknown at carrier" with the reason when either
/// cannot be read (missing, null, outside the §3 table, not a number).
pub fn reading_of(iccid: &Iccid, t: &Terminal) -> CarrierCard {
    let state = t.sim_status.as_deref().and_then(state_of);
    let usage = t.month_to_date_data_usage.as_deref().and_then(mb_to_bytes);
    let mut unknown = Vec::new();
    match (&t.sim_status, state) {
        (None, _) => unknown.push("simStatus is missing".to_string()),
        (Some(s), None) => unknown.push(format!(
            "simStatus {s:?} is outside the gateway's table (0-9)"
        )),
        (Some(_), Some(_)) => {}
    }
    match (&t.month_to_date_data_usage, usage) {
        (None, _) => unknown.push("monthToDateDataUsage is missing".to_string()),
        (Some(u), None) => unknown.push(format!("monthToDateDataUsage {u:?} is not MB")),
        (Some(_), Some(_)) => {}
    }
    CarrierCard {
        iccid: iccid.clone(),
        // Not meaningful when `unknown` is set (every consumer checks it first).
        state: state.unwrap_or(ServiceState::Active),
        cycle_usage_bytes: usage.unwrap_or(0),
        // "Month to date" follows the account's billing cycle (27th to 26th, [YZ-LT-Q]), but
        // the answer does not say which cycle it counted: a guess from this machine's clock
        // would disagree with the platform around the 27th.
        usage_cycle_start: None,
        // Not in the answer, and the dossier has no session call for the gateway.
        last_session: LastSession::Unknown,
        changes: 0,
        unknown: (!unknown.is_empty())
            .then(|| format!("wsGetTerminalDetails: {}", unknown.join("; "))),
    }
}

/// A card's details at the gateway (`wsGetTerminalDetails`), in simgate terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalDetails {
    pub iccid: Iccid,
    /// None: `simStatus` missing or outside the table.
    pub state: Option<ServiceState>,
    /// The gateway's own code (more detail than `state`, e.g. 7 库存).
    pub sim_status: Option<String>,
    /// None: `realNameStatus` missing or outside the §4 table.
    pub real_name_verified: Option<bool>,
    pub real_name_status: Option<String>,
    /// None: missing or not a number.
    pub month_to_date_data_bytes: Option<u64>,
    pub msisdn: Option<String>,
    pub imsi: Option<String>,
    pub rate_plan: Option<String>,
    /// As the gateway wrote it (`yyyy-MM-dd HH:mm:ss`, sometimes `.0`, sometimes empty, §1).
    pub date_activated: Option<String>,
}

pub fn details_of(iccid: &Iccid, t: &Terminal) -> TerminalDetails {
    TerminalDetails {
        iccid: iccid.clone(),
        state: t.sim_status.as_deref().and_then(state_of),
        sim_status: t.sim_status.clone(),
        real_name_verified: t.real_name_status.as_deref().and_then(real_name_verified),
        real_name_status: t.real_name_status.clone(),
        month_to_date_data_bytes: t.month_to_date_data_usage.as_deref().and_then(mb_to_bytes),
        msisdn: t.msisdn.clone().filter(|s| !s.is_empty()),
        imsi: t.imsi.clone().filter(|s| !s.is_empty()),
        rate_plan: t.rate_plan.clone(),
        date_activated: t.date_activated.clone().filter(|s| !s.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sim_status_maps_to_a_service_state() {
        let expect = [
            ("0", ServiceState::Active),
            ("1", ServiceState::Active),
            ("2", ServiceState::Active),
            ("3", ServiceState::Stopped),
            ("4", ServiceState::Cancelled),
            ("5", ServiceState::Cancelled),
            ("6", ServiceState::Cancelled),
            ("7", ServiceState::Stopped),
            ("8", ServiceState::Active),
            ("9", ServiceState::Stopped),
        ];
        assert_eq!(SIM_STATUSES.len(), expect.len());
        for (code, state) in expect {
            assert_eq!(state_of(code), Some(state), "{code}");
        }
        for outside in ["10", "-1", "", " 2", "02", "ACTIVATED"] {
            assert_eq!(state_of(outside), None, "{outside:?}");
        }
        for state in [
            ServiceState::Active,
            ServiceState::Stopped,
            ServiceState::Cancelled,
        ] {
            assert_eq!(state_of(sim_status_for(state)), Some(state));
        }
        // §2: 2 restores, 3 stops.
        assert_eq!(sim_status_for(ServiceState::Active), "2");
        assert_eq!(sim_status_for(ServiceState::Stopped), "3");
    }

    #[test]
    fn real_name_2_and_3_are_verified() {
        assert_eq!(real_name_verified("0"), Some(false));
        assert_eq!(real_name_verified("1"), Some(false));
        assert_eq!(real_name_verified("2"), Some(true));
        assert_eq!(real_name_verified("3"), Some(true));
        assert_eq!(real_name_verified("4"), None);
    }

    #[test]
    fn mb_strings_become_binary_bytes() {
        assert_eq!(mb_to_bytes("0"), Some(0));
        assert_eq!(mb_to_bytes("1"), Some(1_048_576));
        assert_eq!(mb_to_bytes("12.5"), Some(13_107_200));
        assert_eq!(mb_to_bytes(" 3 "), Some(3 * BYTES_PER_MB));
        assert_eq!(mb_to_bytes("0.0000001"), Some(0));
        for bad in ["", "-1", "NaN", "inf", "1MB", "1,5", "1e300"] {
            assert_eq!(mb_to_bytes(bad), None, "{bad:?}");
        }
        for bytes in [0, 1, 1_234_567, 3 * BYTES_PER_MB, (1 << 53) - 1] {
            assert_eq!(mb_to_bytes(&bytes_to_mb(bytes)), Some(bytes), "{bytes}");
        }
    }

    #[test]
    fn published_codes_are_refusals_and_others_are_unavailable_reads() {
        assert_eq!(RESULT_CODES.len(), 2);
        assert!(matches!(
            read_refusal("1074", Some("x")),
            CarrierError::Rejected { ref code, .. } if code == "1074"
        ));
        assert!(matches!(
            read_refusal("1104", None),
            CarrierError::Rejected { ref code, .. } if code == "1104"
        ));
        assert!(matches!(
            read_refusal("9999", None),
            CarrierError::Transient(_)
        ));
        assert!(matches!(
            gateway_refusal("1001", Some("bad token")),
            CarrierError::Rejected { ref code, .. } if code == "1001"
        ));
    }

    #[test]
    fn http_statuses_without_an_envelope_fail_safe() {
        use reqwest::StatusCode as S;
        for changes in [false, true] {
            assert!(matches!(
                http_error(S::TOO_MANY_REQUESTS, None, changes),
                CarrierError::RateLimited { retry_after: None }
            ));
            assert!(matches!(
                http_error(S::BAD_GATEWAY, None, changes),
                CarrierError::Transient(_)
            ));
            assert!(matches!(
                http_error(S::UNAUTHORIZED, None, changes),
                CarrierError::Rejected { .. }
            ));
        }
        assert!(matches!(
            http_error(S::INTERNAL_SERVER_ERROR, None, true),
            CarrierError::OutcomeUnknown(_)
        ));
        assert!(matches!(
            http_error(S::INTERNAL_SERVER_ERROR, None, false),
            CarrierError::Transient(_)
        ));
        assert!(matches!(
            http_error(S::BAD_REQUEST, None, true),
            CarrierError::OutcomeUnknown(_)
        ));
        assert!(matches!(
            http_error(S::NOT_FOUND, None, false),
            CarrierError::Rejected { ref code, .. } if code == "HTTP_404"
        ));
    }

    #[test]
    fn billing_cycles_are_yyyymm() {
        assert!(is_billing_cycle("202412"));
        assert!(is_billing_cycle("202401"));
        for bad in ["202413", "202400", "2024-12", "20241", "2024120", "abcdef"] {
            assert!(!is_billing_cycle(bad), "{bad}");
        }
    }

    #[test]
    fn api_paths_follow_the_url_pattern() {
        assert_eq!(
            api_path(API_DETAILS),
            "/wsGetTerminalDetails/V1/1Main/vV1.1"
        );
        assert_eq!(api_path(API_EDIT), "/wsEditTerminal/V1/1Main/vV1.1");
        assert_eq!(api_path(API_USAGE), "/wsGetTerminalUsage/V1/1Main/vV1.1");
    }

    #[test]
    fn a_terminal_is_the_reading_or_unknown_at_carrier() {
        let iccid = Iccid::parse_any("89860600000000000001").unwrap();
        let t = |status: Option<&str>, usage: Option<&str>| Terminal {
            iccid: iccid.as_str().into(),
            sim_status: status.map(str::to_string),
            month_to_date_data_usage: usage.map(str::to_string),
            ..Terminal::default()
        };
        for (code, _, state) in SIM_STATUSES {
            let c = reading_of(&iccid, &t(Some(code), Some("1")));
            assert_eq!(
                (c.known_state(), c.cycle_usage_bytes, c.unknown),
                (Some(*state), BYTES_PER_MB, None),
                "{code}"
            );
        }
        let c = reading_of(&iccid, &t(Some("10"), Some("1")));
        assert!(c.unknown.as_deref().is_some_and(|w| w.contains("\"10\"")));
        assert_eq!(c.known_state(), None);
        let c = reading_of(&iccid, &t(None, None));
        assert_eq!(
            c.unknown.as_deref(),
            Some("wsGetTerminalDetails: simStatus is missing; monthToDateDataUsage is missing")
        );
        let c = reading_of(&iccid, &t(Some("2"), Some("lots")));
        assert!(c.unknown.is_some());
        assert_eq!(c.last_session, LastSession::Unknown);
        assert_eq!(c.usage_cycle_start, None);
    }

    #[test]
    fn codes_and_figures_read_as_strings_or_numbers() {
        let t: Terminal = serde_json::from_str(
            r#"{"iccid":"1","simStatus":2,"ratePlan":21000000,"monthToDateDataUsage":"12.5","ctdSessionCount":0}"#,
        )
        .unwrap();
        assert_eq!(t.sim_status.as_deref(), Some("2"));
        assert_eq!(t.rate_plan.as_deref(), Some("21000000"));
        assert_eq!(t.ctd_session_count.as_deref(), Some("0"));
        let r: ReplyEnvelope = serde_json::from_str(r#"{"status":0,"data":null}"#).unwrap();
        assert_eq!(r.status.as_deref(), Some("0"));
    }
}
