//! The 5G CMP's wire terms: paths, which HTTP method each call takes, the status table, the
//! "new" JSON envelope, the XML/JSON change replies and the MB amounts, shared by the adapter
//! and the wire simulator.
//!
//! Evidence: `shared/domain/carrier-wire/cmp5g.md` (the dossier; its source keys are quoted as
//! `[KEY]`). Golden fixtures from it are in `tests/fixtures/carrier-wire/cmp_5g/`.

use serde::Deserialize;

use crate::carrier::http::cmp::wire::leaf_fields;
use crate::carrier::http::malformed;
use crate::carrier::{CarrierError, ServiceState};

/// `batchQrySimInfo` (BQ018, §3): status and ICCID of up to [`SIM_INFO_MAX`] access numbers.
pub const SIM_INFO_PATH: &str = "/api/v1/prod/batchQrySimInfo";
/// `batchQryFlowByMonth` (§1): this month's usage of many access numbers.
pub const FLOW_PATH: &str = "/api/v1/batchQry/batchQryFlowByMonth";
/// `qryRealNameStatus` (BQ019, §5): real-name status of many access numbers.
pub const REAL_NAME_PATH: &str = "/api/v1/realName/qryRealNameStatus";
/// `disabledNumberService` (LC002, §6): 停机保号 (19) and its restore (20).
pub const DISABLED_PATH: &str = "/5gcmp/openapi/v1/common/disabledNumberService";
/// `requestServActive` (§6.1): forced activation of a card awaiting activation (待激活).
pub const SERV_ACTIVE_PATH: &str = "/5gcmp/openapi/v1/common/requestServActive";

/// Every path simgate calls, for the simulator's routes.
pub const PATHS: [&str; 5] = [
    SIM_INFO_PATH,
    FLOW_PATH,
    REAL_NAME_PATH,
    DISABLED_PATH,
    SERV_ACTIVE_PATH,
];

/// "文档：一次最多 100 张" ([NEST5G] 54501513172, §3): the only published batch limit.
pub const SIM_INFO_MAX: usize = 100;
/// Default of `flow_batch_size`: batchQryFlowByMonth's maximum is not found (§1, §8), so it
/// takes batchQrySimInfo's documented 100 until an account learns its own.
pub const DEFAULT_FLOW_BATCH: usize = 100;

/// `orderTypeId` of disabledNumberService (§6, [YZ-5G-C]): 19 停机保号, 20 停机保号复机.
pub const ORDER_STOP: &str = "19";
pub const ORDER_RESTORE: &str = "20";
/// The reply code of a restore (20) of a card awaiting activation (待激活): activate it with
/// requestServActive instead ("适配 复机时 卡状态为待激活时改为 强制激活", [YZ-5G-C], §6).
pub const NEEDS_ACTIVATION: &str = "100008";

/// How calls are sent (GET vs POST is DISPUTED, §0.4), per account.
/// - `likely` (default): the dossier's "likely reading": the batch and real-name calls
///   (`/api/v1/...`, array-valued parameters) POST a JSON body ([NEST5G], [SIMCTL]); the
///   `/5gcmp/openapi/v1/common/...` calls GET with a query string ([YZ-5G-C], the only client
///   that implements them).
/// - `all_post`: every call POSTs a JSON body, as [SIMCTL] does (it sends
///   disabledNumberService's scalar parameters as body fields).
///
/// There is no "every call GET": no source shows how an array parameter (`accessNumbers`)
/// goes into a query string, and that would be a guess.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpMethods {
    #[default]
    Likely,
    AllPost,
}

impl HttpMethods {
    /// Whether a call to `path` is a POST with a JSON body (else a GET with a query string).
    pub fn posts(self, path: &str) -> bool {
        match self {
            HttpMethods::AllPost => true,
            HttpMethods::Likely => path.starts_with("/api/"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The status table: the only place platform status codes are interpreted.
// ---------------------------------------------------------------------------------------------

/// batchQrySimInfo's `simStatus` (§3; the same table as queryCardMainStatus's
/// `productMainStatusCd`, §4, which the dossier says is m2m_ec's majority list) → simgate's
/// service state: read by m2m_ec's own table, `cmp::wire::main_status`, so the two Telecom
/// platforms can never disagree about a code. 1, 2, 4 active; 3 (测试去激活), 5, 6 stopped;
/// 7 拆机 cancelled. 7 is not in the 5G table (1–6) but is in m2m_ec's list (cmp.md §2): an
/// inference, and what lets `cancel()` confirm a dismantled card; a platform that never
/// answers 7 only leaves cancellations unconfirmed.
pub fn sim_status(code: &str) -> Option<ServiceState> {
    crate::carrier::http::cmp::wire::main_status(code.trim())
}

/// simgate's state → `simStatus`, for the simulator (m2m_ec's codes; a card awaiting
/// activation: [`AWAITING_ACTIVATION`]).
pub fn sim_status_code(state: ServiceState) -> &'static str {
    crate::carrier::http::cmp::wire::main_status_code(state)
}

/// `simStatus` 测试去激活: how the simulator shows a card awaiting activation.
pub const AWAITING_ACTIVATION: &str = "3";
/// The status of a dismantled card (inferred, see [`sim_status`]).
pub const DISMANTLED: &str = crate::carrier::http::cmp::wire::DISMANTLED;

/// The status names of the table (§3, §4), for the simulator.
pub fn sim_status_name(code: &str) -> &'static str {
    match code {
        "1" => "可激活",
        "2" => "测试激活",
        "3" => "测试去激活",
        "4" => "在用",
        "5" => "停机",
        "6" => "运营商管理状态",
        "7" => "拆机",
        _ => "",
    }
}

// ---------------------------------------------------------------------------------------------
// The "new" JSON envelope (§0.5): `{code, msg | message, data}`; code 0 ([SIMCTL], a number)
// or "0" ([NEST5G], a string) is success.
// ---------------------------------------------------------------------------------------------

/// A JSON scalar as text (`"0"` and `0` alike); None for null, objects and arrays.
pub fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.trim().to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whether an envelope's `code` says success.
pub fn is_success(code: &serde_json::Value) -> bool {
    scalar(code).is_some_and(|c| c == "0")
}

/// The `data` of a successful "new" JSON reply, read as `T`. A reply without `code` is
/// malformed; another code is a refusal no source explains (no error list is published, §8):
/// the read is unavailable (Transient), never "no such card".
pub fn envelope_data<T: serde::de::DeserializeOwned>(
    body: &str,
    call: &str,
) -> Result<T, CarrierError> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| malformed(&format!("{call}: not JSON: {e}"), false))?;
    let Some(code) = v.get("code") else {
        return Err(malformed(&format!("{call}: no code"), false));
    };
    if !is_success(code) {
        let message = ["msg", "message"]
            .iter()
            .find_map(|k| v.get(*k).and_then(scalar))
            .unwrap_or_default();
        return Err(CarrierError::Transient(format!(
            "{call} answered code {}: {message} (no error table is published)",
            scalar(code).unwrap_or_else(|| code.to_string())
        )));
    }
    let data = v.get("data").cloned().unwrap_or(serde_json::Value::Null);
    serde_json::from_value(data).map_err(|e| malformed(&format!("{call} data: {e}"), false))
}

/// `data` of batchQrySimInfo (§3): `{qrySimInfoList: [...]}`.
#[derive(Debug, Deserialize)]
pub struct SimInfoData {
    #[serde(rename = "qrySimInfoList", default)]
    pub list: Vec<SimInfo>,
}

/// One item of `qrySimInfoList` (client DTO of [NEST5G] id 54798239189; only the fields
/// simgate reads; the rest, `imsi`, `activeTime`, `createTime`, `mainOfferName`,
/// `cardBindingType`, `result`, are ignored).
#[derive(Debug, Deserialize)]
pub struct SimInfo {
    #[serde(rename = "accessNumber")]
    pub access_number: serde_json::Value,
    #[serde(default)]
    pub iccid: serde_json::Value,
    #[serde(rename = "simStatus", default)]
    pub sim_status: serde_json::Value,
}

/// One item of batchQryFlowByMonth's `data` (§1, the verbatim [SIMCTL] sample).
#[derive(Debug, Deserialize)]
pub struct Flow {
    #[serde(rename = "accessNumber")]
    pub access_number: serde_json::Value,
    #[serde(rename = "flowAmount", default)]
    pub flow_amount: serde_json::Value,
    #[serde(default)]
    pub unit: serde_json::Value,
    #[serde(default)]
    pub month: serde_json::Value,
    #[serde(default)]
    pub status: serde_json::Value,
    #[serde(rename = "statusDesc", default)]
    pub status_desc: serde_json::Value,
}

impl Flow {
    /// The item's usage in bytes, or why it cannot be read: a per-item `status` other than "0"
    /// (absent counts as "0": only the sample's items say), a `unit` other than `MB` (the only
    /// one seen; nothing else is converted by guess), or an amount that is not a decimal.
    pub fn bytes(&self) -> Result<u64, String> {
        let status = scalar(&self.status).unwrap_or_else(|| "0".into());
        if status != "0" {
            return Err(format!(
                "batchQryFlowByMonth item status {status:?}: {}",
                scalar(&self.status_desc).unwrap_or_default()
            ));
        }
        let unit = scalar(&self.unit).unwrap_or_default();
        if unit != "MB" {
            return Err(format!(
                "batchQryFlowByMonth unit {unit:?}: only MB is known (dossier §1)"
            ));
        }
        let amount = scalar(&self.flow_amount).unwrap_or_default();
        parse_mb(&amount)
            .ok_or_else(|| format!("batchQryFlowByMonth flowAmount {amount:?} is not a decimal"))
    }
}

/// `data` of qryRealNameStatus (§5): `{statusList: [{accessNumber, status}]}`.
#[derive(Debug, Deserialize)]
pub struct RealNameData {
    #[serde(rename = "statusList", default)]
    pub list: Vec<RealNameItem>,
}

#[derive(Debug, Deserialize)]
pub struct RealNameItem {
    #[serde(rename = "accessNumber")]
    pub access_number: serde_json::Value,
    #[serde(default)]
    pub status: serde_json::Value,
}

impl RealNameItem {
    /// `status "1"` = verified; anything else is read as not ([SIMCTL] L132-136; other values
    /// not found).
    pub fn verified(&self) -> bool {
        scalar(&self.status).as_deref() == Some("1")
    }
}

pub(crate) const MIB: u64 = 1024 * 1024;
/// Fraction digits [`parse_mb`] takes (the sample has two).
const MAX_FRACTION: usize = 6;

/// A decimal MB amount ("42118.59") in bytes, MB × 1024 × 1024 ([SIMCTL] multiplies MB by 1024
/// into KB, L178-179), rounded to the byte. None for anything but digits with an optional
/// fraction of up to six digits.
pub fn parse_mb(s: &str) -> Option<u64> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || (s.contains('.') && frac.is_empty())
        || frac.len() > MAX_FRACTION
        || !(int.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole = int.parse::<u64>().ok()?.checked_mul(MIB)?;
    if frac.is_empty() {
        return Some(whole);
    }
    let scale = 10u128.pow(frac.len() as u32);
    let part = (frac.parse::<u128>().ok()? * MIB as u128 + scale / 2) / scale;
    whole.checked_add(u64::try_from(part).ok()?)
}

/// Bytes as a two-decimal MB amount, for the simulator.
pub fn format_mb(bytes: u64) -> String {
    let hundredths = (bytes as u128 * 100 + (MIB as u128) / 2) / MIB as u128;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

// ---------------------------------------------------------------------------------------------
// Change replies (§6): disabledNumberService answers XML (its body is not found; read as the
// §0.5 m2m_ec-style XML family, `<SvcCont><Response><RspType/><RspCode/><RspDesc/></Response>
// <GROUP_TRANSACTIONID/></SvcCont>`, at any depth, with the `result` element [YZ-5G-C] reads
// 100008 from); requestServActive answers JSON `{RESULT, SMSG}`.
// ---------------------------------------------------------------------------------------------

/// What a change reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeAnswer {
    /// Taken, with the platform's transaction id when the reply has one.
    Accepted { transaction_id: Option<String> },
    /// `100008`: the card awaits activation (a restore must go through requestServActive).
    NeedsActivation { message: String },
    /// Refused with a code (none is published but 100008: the adapter reads the card).
    Refused { code: String, message: String },
    /// A reply that says neither: the outcome is unknown until the card is read.
    Unrecognised(String),
}

fn all_zeros(code: &str) -> bool {
    !code.is_empty() && code.bytes().all(|b| b == b'0')
}

/// Reads a disabledNumberService reply: `RspCode` (singleCutNet's `0000` = success, [SIMCTL]
/// L212) or `result` ([YZ-5G-C] reads `result`; `0` read as success like m2m_ec's) — a 100008
/// in either asks for activation; `RspType` other than 0 with an all-zero code is unexplained.
pub fn change_answer(body: &str) -> ChangeAnswer {
    let Some(f) = leaf_fields(body) else {
        return ChangeAnswer::Unrecognised(short(body));
    };
    let get = |k: &str| {
        f.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let message = get("RspDesc")
        .or_else(|| get("resultMsg"))
        .or_else(|| get("SMSG"))
        .unwrap_or_default();
    let transaction_id = get("GROUP_TRANSACTIONID");
    let rsp_code = get("RspCode");
    let result = get("result").or_else(|| get("RESULT"));
    if rsp_code.as_deref() == Some(NEEDS_ACTIVATION) || result.as_deref() == Some(NEEDS_ACTIVATION)
    {
        return ChangeAnswer::NeedsActivation { message };
    }
    let rsp_type = get("RspType");
    match rsp_code.or(result) {
        Some(code) if all_zeros(&code) && matches!(rsp_type.as_deref(), None | Some("0")) => {
            ChangeAnswer::Accepted { transaction_id }
        }
        Some(code) if !all_zeros(&code) => ChangeAnswer::Refused { code, message },
        _ => ChangeAnswer::Unrecognised(short(body)),
    }
}

/// Reads a requestServActive reply (§6.1: JSON `RESULT "0"`, `SMSG "成功"`, [YZ-5G-C]).
pub fn activation_answer(body: &str) -> ChangeAnswer {
    let Some(f) = leaf_fields(body) else {
        return ChangeAnswer::Unrecognised(short(body));
    };
    let message = f.get("SMSG").cloned().unwrap_or_default();
    match f.get("RESULT").map(|s| s.trim()) {
        Some("0") => ChangeAnswer::Accepted {
            transaction_id: None,
        },
        Some(code) if !code.is_empty() => ChangeAnswer::Refused {
            code: code.to_string(),
            message,
        },
        _ => ChangeAnswer::Unrecognised(short(body)),
    }
}

/// A reply's first characters, for an error message.
fn short(body: &str) -> String {
    body.trim().chars().take(120).collect()
}

/// Whether two ICCIDs name one card: equal, or one a prefix of the other of at least 19
/// characters (a 19-digit form of a 20-digit ICCID, as m2m_ec clients send, cmp.md §7.2).
pub fn same_iccid(ours: &str, theirs: &str) -> bool {
    let (a, b) = (ours.trim(), theirs.trim());
    a.eq_ignore_ascii_case(b)
        || (a.len().min(b.len()) >= 19
            && (a.to_ascii_uppercase().starts_with(&b.to_ascii_uppercase())
                || b.to_ascii_uppercase().starts_with(&a.to_ascii_uppercase())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sim_status_maps() {
        let expected = [
            ("1", ServiceState::Active),
            ("2", ServiceState::Active),
            ("3", ServiceState::Stopped),
            ("4", ServiceState::Active),
            ("5", ServiceState::Stopped),
            ("6", ServiceState::Stopped),
            ("7", ServiceState::Cancelled),
        ];
        for (code, state) in expected {
            assert_eq!(sim_status(code), Some(state), "{code}");
            assert!(!sim_status_name(code).is_empty());
        }
        for bad in ["", "0", "8", "在用"] {
            assert_eq!(sim_status(bad), None, "{bad}");
        }
        for s in [
            ServiceState::Active,
            ServiceState::Stopped,
            ServiceState::Cancelled,
        ] {
            assert_eq!(sim_status(sim_status_code(s)), Some(s));
        }
        assert_eq!(sim_status(AWAITING_ACTIVATION), Some(ServiceState::Stopped));
    }

    #[test]
    fn mb_amounts_convert_to_bytes() {
        assert_eq!(parse_mb("0"), Some(0));
        assert_eq!(parse_mb("3.00"), Some(3 * MIB));
        assert_eq!(parse_mb("2.5"), Some(2 * MIB + MIB / 2));
        assert_eq!(
            parse_mb("42118.59"),
            Some(42118 * MIB + (59 * MIB + 50) / 100)
        );
        assert_eq!(parse_mb("0.000001"), Some(1));
        for bad in ["", ".5", "1.", "-1", "1e3", "1,5", "1.0000001", "MB"] {
            assert_eq!(parse_mb(bad), None, "{bad}");
        }
        for bytes in [0, MIB, 7 * MIB, 123 * MIB + MIB / 4] {
            assert_eq!(parse_mb(&format_mb(bytes)), Some(bytes));
        }
        assert_eq!(format_mb(3 * MIB), "3.00");
    }

    #[test]
    fn a_flow_item_is_read_only_in_mb_and_with_status_0() {
        let item = |v: serde_json::Value| serde_json::from_value::<Flow>(v).expect("flow");
        let ok = item(
            serde_json::json!({"accessNumber":"1","unit":"MB","flowAmount":"1.50","status":"0"}),
        );
        assert_eq!(ok.bytes(), Ok(MIB + MIB / 2));
        let number = item(serde_json::json!({"accessNumber":"1","unit":"MB","flowAmount":2}));
        assert_eq!(number.bytes(), Ok(2 * MIB));
        for bad in [
            serde_json::json!({"accessNumber":"1","unit":"KB","flowAmount":"1.50","status":"0"}),
            serde_json::json!({"accessNumber":"1","unit":"GB","flowAmount":"1"}),
            serde_json::json!({"accessNumber":"1","flowAmount":"1"}),
            serde_json::json!({"accessNumber":"1","unit":"MB","flowAmount":"1","status":"1","statusDesc":"x"}),
            serde_json::json!({"accessNumber":"1","unit":"MB","flowAmount":null}),
        ] {
            assert!(item(bad.clone()).bytes().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_envelope_takes_code_0_as_a_number_or_a_string() {
        #[derive(Debug, Deserialize)]
        struct D {
            x: u32,
        }
        for body in [
            r#"{"code":0,"msg":"ok","data":{"x":1}}"#,
            r#"{"code":"0","message":"OK","data":{"x":1}}"#,
        ] {
            assert_eq!(envelope_data::<D>(body, "t").expect(body).x, 1);
        }
        for body in [
            r#"{"code":1,"msg":"no"}"#,
            r#"{"code":"500","message":"nope"}"#,
            r#"{"unexpected":true}"#,
            "garbage",
            r#"{"code":"0","data":{"y":1}}"#,
        ] {
            assert!(
                matches!(
                    envelope_data::<D>(body, "t"),
                    Err(CarrierError::Transient(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn change_replies_are_read_in_the_xml_family_and_100008_asks_for_activation() {
        let ok = "<SvcCont><Response><RspType>0</RspType><RspCode>0000</RspCode><RspDesc>成功</RspDesc></Response><GROUP_TRANSACTIONID>1000000190202401010000000001</GROUP_TRANSACTIONID></SvcCont>";
        assert_eq!(
            change_answer(ok),
            ChangeAnswer::Accepted {
                transaction_id: Some("1000000190202401010000000001".into())
            }
        );
        assert_eq!(
            change_answer("<x><result>0</result></x>"),
            ChangeAnswer::Accepted {
                transaction_id: None
            }
        );
        for needs in [
            "<SvcCont><Response><RspType>1</RspType><RspCode>100008</RspCode><RspDesc>请先激活</RspDesc></Response></SvcCont>",
            "<SvcCont><result>100008</result><resultMsg>请先激活</resultMsg></SvcCont>",
        ] {
            assert!(
                matches!(change_answer(needs), ChangeAnswer::NeedsActivation { .. }),
                "{needs}"
            );
        }
        assert_eq!(
            change_answer("<SvcCont><Response><RspType>1</RspType><RspCode>-9</RspCode><RspDesc>不能重复订购</RspDesc></Response></SvcCont>"),
            ChangeAnswer::Refused {
                code: "-9".into(),
                message: "不能重复订购".into()
            }
        );
        for body in [
            "<SvcCont><Response><RspType>1</RspType><RspCode>0000</RspCode></Response></SvcCont>",
            "<SvcCont><GROUP_TRANSACTIONID>1</GROUP_TRANSACTIONID></SvcCont>",
            r#"{"unexpected": true}"#,
            "<html>oops",
            "",
        ] {
            assert!(
                matches!(change_answer(body), ChangeAnswer::Unrecognised(_)),
                "{body}"
            );
        }
    }

    #[test]
    fn activation_replies_read_result_and_smsg() {
        assert_eq!(
            activation_answer(r#"{"RESULT":"0","SMSG":"成功"}"#),
            ChangeAnswer::Accepted {
                transaction_id: None
            }
        );
        assert_eq!(
            activation_answer(r#"{"RESULT":"-1","SMSG":"失败"}"#),
            ChangeAnswer::Refused {
                code: "-1".into(),
                message: "失败".into()
            }
        );
        assert!(matches!(
            activation_answer("{}"),
            ChangeAnswer::Unrecognised(_)
        ));
    }

    #[test]
    fn methods_follow_the_likely_reading_or_post_everything() {
        assert!(HttpMethods::Likely.posts(SIM_INFO_PATH));
        assert!(HttpMethods::Likely.posts(FLOW_PATH));
        assert!(HttpMethods::Likely.posts(REAL_NAME_PATH));
        assert!(!HttpMethods::Likely.posts(DISABLED_PATH));
        assert!(!HttpMethods::Likely.posts(SERV_ACTIVE_PATH));
        assert!(PATHS.iter().all(|p| HttpMethods::AllPost.posts(p)));
    }

    #[test]
    fn iccids_match_whole_or_by_a_19_digit_prefix() {
        assert!(same_iccid("89861100000000000001", "89861100000000000001"));
        assert!(same_iccid("8986110000000000000F", "8986110000000000000f"));
        assert!(same_iccid("89861100000000000001", "8986110000000000000"));
        assert!(!same_iccid("89861100000000000001", "898611"));
        assert!(!same_iccid("89861100000000000001", "89861100000000000002"));
    }
}
