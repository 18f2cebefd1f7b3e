//! The friendly names people type and read (`unicom`, `suspended`, `over-quota`) for the proto
//! enums, both ways. The same names serve the command line, the CSV import and the tables.

use clap::ValueEnum;

use crate::pb;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CarrierArg {
    Mobile,
    Unicom,
    Telecom,
}

impl CarrierArg {
    pub fn to_pb(self) -> pb::Carrier {
        match self {
            CarrierArg::Mobile => pb::Carrier::ChinaMobile,
            CarrierArg::Unicom => pb::Carrier::ChinaUnicom,
            CarrierArg::Telecom => pb::Carrier::ChinaTelecom,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Active,
    Suspended,
    Retained,
    Cancelled,
}

impl StatusArg {
    pub fn to_pb(self) -> pb::CardStatus {
        match self {
            StatusArg::Active => pb::CardStatus::Active,
            StatusArg::Suspended => pb::CardStatus::Suspended,
            StatusArg::Retained => pb::CardStatus::Retained,
            StatusArg::Cancelled => pb::CardStatus::Cancelled,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReasonArg {
    OverQuota,
    Manual,
    Arrears,
    Expired,
    RealName,
    PoolExhausted,
    TestDataUsed,
    DeviceMismatch,
}

impl ReasonArg {
    pub fn to_pb(self) -> pb::StopReason {
        match self {
            ReasonArg::OverQuota => pb::StopReason::OverQuota,
            ReasonArg::Manual => pb::StopReason::Manual,
            ReasonArg::Arrears => pb::StopReason::Arrears,
            ReasonArg::Expired => pb::StopReason::Expired,
            ReasonArg::RealName => pb::StopReason::RealName,
            ReasonArg::PoolExhausted => pb::StopReason::PoolExhausted,
            ReasonArg::TestDataUsed => pb::StopReason::TestDataUsed,
            ReasonArg::DeviceMismatch => pb::StopReason::DeviceMismatch,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RealNameArg {
    Unknown,
    Verified,
    Unverified,
}

impl RealNameArg {
    pub fn to_pb(self) -> pb::RealNameStatus {
        match self {
            RealNameArg::Unknown => pb::RealNameStatus::Unknown,
            RealNameArg::Verified => pb::RealNameStatus::Verified,
            RealNameArg::Unverified => pb::RealNameStatus::Unverified,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StageArg {
    Test,
    Silent,
    Billing,
}

impl StageArg {
    pub fn to_pb(self) -> pb::LifecycleStage {
        match self {
            StageArg::Test => pb::LifecycleStage::Test,
            StageArg::Silent => pb::LifecycleStage::Silent,
            StageArg::Billing => pb::LifecycleStage::Billing,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LangArg {
    Zh,
    En,
}

impl LangArg {
    /// The language tag DiagnoseCardRequest takes.
    pub fn tag(self) -> &'static str {
        match self {
            LangArg::Zh => "zh-CN",
            LangArg::En => "en",
        }
    }
}

/// Parses a friendly name (any case) into its proto value, or the proto's own name
/// (`CARRIER_CHINA_UNICOM`) so that files written for grpcurl work too. The error lists the
/// friendly names.
pub fn parse_friendly<A: ValueEnum, P>(
    raw: &str,
    to_pb: impl Fn(A) -> P,
    from_proto_name: impl Fn(&str) -> Option<P>,
) -> Result<P, String> {
    if let Ok(v) = A::from_str(raw, true) {
        return Ok(to_pb(v));
    }
    if let Some(v) = from_proto_name(&raw.to_ascii_uppercase()) {
        return Ok(v);
    }
    let names: Vec<String> = A::value_variants()
        .iter()
        .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
        .collect();
    Err(format!("{raw:?} is not one of {}", names.join(", ")))
}

/// `CARD_STATUS_OVER_QUOTA`-style proto names as people read them: `over-quota`.
fn friendly(proto_name: &str, prefix: &str) -> String {
    proto_name
        .strip_prefix(prefix)
        .unwrap_or(proto_name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

fn or_unknown(name: Option<&str>, prefix: &str, raw: i32) -> String {
    match name {
        Some(n) => friendly(n, prefix),
        None => format!("unknown({raw})"),
    }
}

pub fn carrier_name(raw: i32) -> String {
    let name = pb::Carrier::try_from(raw).ok().map(|c| c.as_str_name());
    or_unknown(name, "CARRIER_CHINA_", raw)
}

pub fn status_name(raw: i32) -> String {
    let name = pb::CardStatus::try_from(raw).ok().map(|c| c.as_str_name());
    or_unknown(name, "CARD_STATUS_", raw)
}

pub fn reason_name(raw: i32) -> String {
    let name = pb::StopReason::try_from(raw).ok().map(|c| c.as_str_name());
    or_unknown(name, "STOP_REASON_", raw)
}

pub fn stage_name(raw: i32) -> String {
    let name = pb::LifecycleStage::try_from(raw)
        .ok()
        .map(|c| c.as_str_name());
    or_unknown(name, "LIFECYCLE_STAGE_", raw)
}

pub fn real_name_name(raw: i32) -> String {
    let name = pb::RealNameStatus::try_from(raw)
        .ok()
        .map(|c| c.as_str_name());
    or_unknown(name, "REAL_NAME_STATUS_", raw)
}

pub fn verdict_name(raw: i32) -> String {
    let name = pb::Verdict::try_from(raw).ok().map(|c| c.as_str_name());
    or_unknown(name, "VERDICT_", raw)
}

pub fn severity_name(raw: i32) -> String {
    let name = pb::Severity::try_from(raw).ok().map(|c| c.as_str_name());
    or_unknown(name, "SEVERITY_", raw)
}

pub fn action_name(raw: i32) -> String {
    let name = pb::RemedyAction::try_from(raw)
        .ok()
        .map(|c| c.as_str_name());
    or_unknown(name, "REMEDY_ACTION_", raw)
}

pub fn reasons(raw: &[i32]) -> String {
    if raw.is_empty() {
        return "-".into();
    }
    raw.iter()
        .map(|r| reason_name(*r))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn friendly_names_round_trip_with_the_command_line_names() {
        for c in CarrierArg::value_variants() {
            let shown = carrier_name(c.to_pb() as i32);
            assert_eq!(CarrierArg::from_str(&shown, false), Ok(*c));
        }
        for r in ReasonArg::value_variants() {
            let shown = reason_name(r.to_pb() as i32);
            assert_eq!(ReasonArg::from_str(&shown, false), Ok(*r));
        }
        for s in StatusArg::value_variants() {
            let shown = status_name(s.to_pb() as i32);
            assert_eq!(StatusArg::from_str(&shown, false), Ok(*s));
        }
    }

    #[test]
    fn proto_names_are_accepted_and_bad_names_are_listed() {
        let parse = |raw: &str| parse_friendly(raw, CarrierArg::to_pb, pb::Carrier::from_str_name);
        assert_eq!(parse("CARRIER_CHINA_UNICOM"), Ok(pb::Carrier::ChinaUnicom));
        assert_eq!(parse("Unicom"), Ok(pb::Carrier::ChinaUnicom));
        let err = parse("cmcc").unwrap_err();
        assert!(err.contains("mobile, unicom, telecom"), "{err}");
    }
}
