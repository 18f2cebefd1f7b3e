//! Protobuf ⇄ domain conversions, and the validation of request fields into domain values.
//! Every refusal names the field as the caller sent it.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use crate::domain::diagnosis::{Action, Diagnosis, Severity, Step, Verdict};
use crate::domain::ids::CarrierCheck;
use crate::domain::rules::NewCard;
use crate::domain::{
    AccountId, ArrearsRecovery, Card, CardStatus, CarrierId, CarrierPolicy, Fen, Iccid, Imsi,
    LifecycleStage, Msisdn, Plan, RealNameStatus, RenewalRestore, StopReason,
};
use crate::pb;
use crate::service::FieldViolation;
use crate::store::EventRow;

/// Largest opening balance or debt an import may carry: 100 million yuan.
pub const MAX_ABS_BALANCE_FEN: i64 = 10_000_000_000;
/// Largest monthly fee: 10 million yuan.
pub const MAX_MONTHLY_FEE_FEN: i64 = 1_000_000_000;
/// Largest amount of one recharge: 100,000 yuan.
pub const MAX_RECHARGE_FEN: i64 = crate::domain::money::MAX_RECHARGE.0;
pub const MAX_RENEW_MONTHS: u32 = 60;
pub const MAX_CUSTOMER_ID_LEN: usize = 64;

/// Largest page any listing returns.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// A requested page size: 0 means `default`, otherwise 1..=MAX_PAGE_SIZE.
pub fn page_size(requested: i32, default: u32) -> Result<u32, tonic::Status> {
    match requested {
        0 => Ok(default),
        n if (1..=MAX_PAGE_SIZE as i32).contains(&n) => Ok(n as u32),
        _ => Err(super::error::invalid_field(
            "page_size",
            format!("must be 1..={MAX_PAGE_SIZE} (0 means {default})"),
        )),
    }
}

pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn from_timestamp(t: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(t.nanos).ok()?;
    DateTime::from_timestamp(t.seconds, nanos)
}

pub fn carrier_to_pb(c: CarrierId) -> pb::Carrier {
    match c {
        CarrierId::Mobile => pb::Carrier::ChinaMobile,
        CarrierId::Unicom => pb::Carrier::ChinaUnicom,
        CarrierId::Telecom => pb::Carrier::ChinaTelecom,
    }
}

/// A carrier field: required, one of the three.
pub fn carrier_from_pb(v: i32) -> Option<CarrierId> {
    match pb::Carrier::try_from(v).ok()? {
        pb::Carrier::ChinaMobile => Some(CarrierId::Mobile),
        pb::Carrier::ChinaUnicom => Some(CarrierId::Unicom),
        pb::Carrier::ChinaTelecom => Some(CarrierId::Telecom),
        pb::Carrier::Unspecified => None,
    }
}

pub fn status_to_pb(s: CardStatus) -> pb::CardStatus {
    match s {
        CardStatus::Active => pb::CardStatus::Active,
        CardStatus::Suspended => pb::CardStatus::Suspended,
        CardStatus::Retained => pb::CardStatus::Retained,
        CardStatus::Cancelled => pb::CardStatus::Cancelled,
    }
}

pub fn status_from_pb(v: pb::CardStatus) -> Option<CardStatus> {
    CardStatus::ALL.into_iter().find(|s| status_to_pb(*s) == v)
}

pub fn reason_to_pb(r: StopReason) -> pb::StopReason {
    match r {
        StopReason::OverQuota => pb::StopReason::OverQuota,
        StopReason::Manual => pb::StopReason::Manual,
        StopReason::Arrears => pb::StopReason::Arrears,
        StopReason::Expired => pb::StopReason::Expired,
        StopReason::RealName => pb::StopReason::RealName,
        StopReason::PoolExhausted => pb::StopReason::PoolExhausted,
        StopReason::TestDataUsed => pb::StopReason::TestDataUsed,
        StopReason::DeviceMismatch => pb::StopReason::DeviceMismatch,
    }
}

pub fn reason_from_pb(v: pb::StopReason) -> Option<StopReason> {
    StopReason::ALL.into_iter().find(|r| reason_to_pb(*r) == v)
}

fn stage_to_pb(s: LifecycleStage) -> pb::LifecycleStage {
    match s {
        LifecycleStage::Test => pb::LifecycleStage::Test,
        LifecycleStage::Silent => pb::LifecycleStage::Silent,
        LifecycleStage::Billing => pb::LifecycleStage::Billing,
    }
}

fn real_name_to_pb(r: RealNameStatus) -> pb::RealNameStatus {
    match r {
        RealNameStatus::Unknown => pb::RealNameStatus::Unknown,
        RealNameStatus::Verified => pb::RealNameStatus::Verified,
        RealNameStatus::Unverified => pb::RealNameStatus::Unverified,
    }
}

pub fn policy_to_pb(p: &CarrierPolicy) -> pb::CarrierPolicy {
    pb::CarrierPolicy {
        carrier: carrier_to_pb(p.carrier) as i32,
        cycle_start_day: p.cycle_start_day,
        retention_months: p.retention_months,
        retention_fee_fen_per_month: p.retention_fee.0,
        cancel_when_retention_ends: p.cancel_when_retention_ends,
        arrears_recovery: match p.arrears_recovery {
            ArrearsRecovery::Auto => pb::ArrearsRecovery::Auto,
            ArrearsRecovery::Manual => pb::ArrearsRecovery::Manual,
        } as i32,
        renewal_restore: match p.renewal_restore {
            RenewalRestore::Immediate => pb::RenewalRestore::Immediate,
            RenewalRestore::SameDay => pb::RenewalRestore::SameDay,
            RenewalRestore::NextCycle => pb::RenewalRestore::NextCycle,
        } as i32,
        test_period_days: p.test_period_days,
        test_gift_bytes: p.test_gift_bytes,
        silent_period_days: p.silent_period_days,
        same_day_restore_delay_minutes: p.same_day_restore_delay_minutes,
    }
}

pub fn order_state_to_pb(s: crate::domain::OrderState) -> pb::CarrierOrderState {
    use crate::domain::OrderState;
    match s {
        OrderState::Scheduled => pb::CarrierOrderState::Scheduled,
        OrderState::Submitted => pb::CarrierOrderState::Submitted,
        OrderState::Unknown => pb::CarrierOrderState::Unknown,
        OrderState::Applied => pb::CarrierOrderState::Applied,
        OrderState::Refused => pb::CarrierOrderState::Refused,
    }
}

pub fn order_state_from_pb(s: pb::CarrierOrderState) -> crate::domain::OrderState {
    use crate::domain::OrderState;
    match s {
        pb::CarrierOrderState::Scheduled => OrderState::Scheduled,
        pb::CarrierOrderState::Submitted => OrderState::Submitted,
        pb::CarrierOrderState::Unknown | pb::CarrierOrderState::Unspecified => OrderState::Unknown,
        pb::CarrierOrderState::Applied => OrderState::Applied,
        pb::CarrierOrderState::Refused => OrderState::Refused,
    }
}

fn action_to_pb(a: crate::domain::CarrierAction) -> pb::CarrierAction {
    match a {
        crate::domain::CarrierAction::Stop => pb::CarrierAction::Stop,
        crate::domain::CarrierAction::Restore => pb::CarrierAction::Restore,
        crate::domain::CarrierAction::Cancel => pb::CarrierAction::Cancel,
        crate::domain::CarrierAction::Rebind => pb::CarrierAction::Rebind,
    }
}

/// A journal row as ListCarrierOrders shows it.
pub fn order_to_pb(op: &crate::store::CarrierOp) -> pb::CarrierOrder {
    let at = |ms: Option<i64>| {
        ms.and_then(DateTime::<Utc>::from_timestamp_millis)
            .map(timestamp)
    };
    let rebind = serde_json::from_str::<crate::carrier::Rebind>(&op.params).ok();
    pb::CarrierOrder {
        id: op.id,
        iccid: op.iccid.clone(),
        account_id: op.account_id.clone(),
        carrier: op
            .carrier
            .parse::<CarrierId>()
            .map(carrier_to_pb)
            .unwrap_or(pb::Carrier::Unspecified) as i32,
        action: op
            .carrier_action()
            .map(action_to_pb)
            .unwrap_or(pb::CarrierAction::Unspecified) as i32,
        rebind_mode: rebind
            .as_ref()
            .map(|r| r.mode().to_string())
            .unwrap_or_default(),
        rebind_imei: match &rebind {
            Some(crate::carrier::Rebind::Imei(i)) => i.clone(),
            _ => String::new(),
        },
        state: order_state_to_pb(op.state()) as i32,
        carrier_order_id: op.order_id.clone(),
        carrier_order_status: op.order_status.clone(),
        carrier_job_id: op.job_id.clone(),
        created: at(Some(op.created_ms)),
        not_before: at(op.not_before_ms),
        sent: at(op.sent_ms),
        settled: at(op.settled_ms),
        settled_by: match op.settled_by.as_str() {
            "ANSWER" => pb::OrderSettledBy::Answer,
            "ORDER_QUERY" => pb::OrderSettledBy::OrderQuery,
            "STATE_READ" => pb::OrderSettledBy::StateRead,
            _ => pb::OrderSettledBy::Unspecified,
        } as i32,
        attempts: op.attempts,
        last_error: op.last_error.clone(),
        source: op.source.clone(),
    }
}

pub fn card_to_pb(c: &Card, policy: Option<&CarrierPolicy>) -> pb::Card {
    pb::Card {
        iccid: c.iccid.to_string(),
        account_id: c.account.to_string(),
        msisdn: c
            .msisdn
            .as_ref()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default(),
        imsi: c
            .imsi
            .as_ref()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default(),
        carrier: carrier_to_pb(c.carrier) as i32,
        customer_id: c.customer_id.clone(),
        spare: c.spare,
        plan: Some(pb::Plan {
            monthly_quota_bytes: c.plan.monthly_quota_bytes,
            monthly_fee_fen: c.plan.monthly_fee.0,
            validity_end: Some(timestamp(c.plan.validity_end)),
            auto_suspend_over_quota: c.plan.auto_suspend_over_quota,
        }),
        status: status_to_pb(c.status()) as i32,
        stop_reasons: c
            .stop_reasons
            .iter()
            .map(|r| reason_to_pb(r) as i32)
            .collect(),
        stage: stage_to_pb(c.stage) as i32,
        real_name: real_name_to_pb(c.real_name) as i32,
        balance_fen: c.balance.0,
        cycle_usage_bytes: c.cycle_usage_bytes,
        retention_ends_at: c.retention_ends_at.map(timestamp),
        expiry_restore_at: c.expiry_restore_at.map(timestamp),
        arrears_paid_awaiting_resume: c.arrears_paid_awaiting_resume,
        policy: policy.map(policy_to_pb),
        warnings: c.warnings.clone(),
        created_at: Some(timestamp(c.created_at)),
        updated_at: Some(timestamp(c.updated_at)),
        version: c.version,
        pending_change: c.pending.as_ref().map(|p| pb::PendingChange {
            action: action_to_pb(p.action) as i32,
            since: Some(timestamp(p.since)),
            order_id: p.order_id.clone().unwrap_or_default(),
            order: p.order,
            state: order_state_to_pb(p.state()) as i32,
            not_before: p.not_before.map(timestamp),
        }),
        drift: c.drift.as_ref().map(|d| pb::CarrierDrift {
            carrier_state: d.carrier_state.clone(),
            expected_state: d.expected_state.clone(),
            since: Some(timestamp(d.since)),
        }),
        pool_id: c.pool.clone().unwrap_or_default(),
        carrier_unknown: c.carrier_unknown.clone().unwrap_or_default(),
    }
}

/// An ICCID in a request that names an existing card (no carrier is declared there).
pub fn iccid_field(field: &str, raw: &str) -> Result<Iccid, FieldViolation> {
    Iccid::parse_any(raw).map_err(|e| FieldViolation::new(field, e.0))
}

/// A request's list of ICCIDs (`iccids[i]`), each parsed and none twice; stops collecting at 100
/// violations. Returns the parsed ICCIDs and the violations.
pub fn iccid_list(raw: &[String]) -> (Vec<Iccid>, Vec<FieldViolation>) {
    let mut violations = Vec::new();
    let mut seen = std::collections::HashSet::with_capacity(raw.len());
    let mut clean = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        match iccid_field(&format!("iccids[{i}]"), r) {
            Ok(iccid) => {
                if !seen.insert(iccid.to_string()) {
                    violations.push(FieldViolation::new(format!("iccids[{i}]"), "appears twice"));
                }
                clean.push(iccid);
            }
            Err(v) => violations.push(v),
        }
        if violations.len() >= 100 {
            break;
        }
    }
    (clean, violations)
}

pub fn customer_id_field(field: &str, raw: &str) -> Result<String, FieldViolation> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    if s.len() > MAX_CUSTOMER_ID_LEN
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(FieldViolation::new(
            field,
            format!("must be 1-{MAX_CUSTOMER_ID_LEN} characters of A-Z, a-z, 0-9, '-', '_', '.'"),
        ));
    }
    Ok(s.to_string())
}

/// Validates one import row. Collects every problem of the row, not just the first.
pub fn new_card(
    row: usize,
    input: &pb::CardInput,
    check: CarrierCheck,
    out: &mut Vec<FieldViolation>,
) -> Option<NewCard> {
    let f = |name: &str| format!("cards[{row}].{name}");
    let before = out.len();
    let mut warnings = Vec::new();

    let carrier = carrier_from_pb(input.carrier);
    if carrier.is_none() {
        out.push(FieldViolation::new(
            f("carrier"),
            "is required: CARRIER_CHINA_MOBILE, CARRIER_CHINA_UNICOM or CARRIER_CHINA_TELECOM",
        ));
    }
    let iccid = match carrier {
        Some(c) => match Iccid::parse(&input.iccid, c, check) {
            Ok((iccid, warning)) => {
                warnings.extend(warning);
                Some(iccid)
            }
            Err(e) => {
                out.push(FieldViolation::new(f("iccid"), e.0));
                None
            }
        },
        None => Iccid::parse_any(&input.iccid)
            .map_err(|e| out.push(FieldViolation::new(f("iccid"), e.0)))
            .ok(),
    };
    let msisdn = if input.msisdn.trim().is_empty() {
        None
    } else {
        Msisdn::parse(&input.msisdn)
            .map_err(|e| out.push(FieldViolation::new(f("msisdn"), e.0)))
            .ok()
    };
    let imsi = match (input.imsi.trim().is_empty(), carrier) {
        (true, _) => None,
        (false, Some(c)) => Imsi::parse(&input.imsi, c, check)
            .map_err(|e| out.push(FieldViolation::new(f("imsi"), e.0)))
            .ok(),
        (false, None) => None,
    };
    // Empty: the reseller's unassigned inventory.
    let customer_id = if input.customer_id.trim().is_empty() {
        Some(String::new())
    } else {
        customer_id_field(&f("customer_id"), &input.customer_id)
            .map_err(|v| out.push(v))
            .ok()
    };
    let plan = match &input.plan {
        None => {
            out.push(FieldViolation::new(f("plan"), "is required"));
            None
        }
        Some(p) => plan(&f("plan"), p, out),
    };
    let real_name = match pb::RealNameStatus::try_from(input.real_name) {
        Ok(pb::RealNameStatus::Unspecified | pb::RealNameStatus::Unknown) => {
            RealNameStatus::Unknown
        }
        Ok(pb::RealNameStatus::Verified) => RealNameStatus::Verified,
        Ok(pb::RealNameStatus::Unverified) => RealNameStatus::Unverified,
        Err(_) => {
            out.push(FieldViolation::new(f("real_name"), "unknown value"));
            RealNameStatus::Unknown
        }
    };
    let stage = match pb::LifecycleStage::try_from(input.stage) {
        Ok(pb::LifecycleStage::Unspecified | pb::LifecycleStage::Billing) => {
            LifecycleStage::Billing
        }
        Ok(pb::LifecycleStage::Test) => LifecycleStage::Test,
        Ok(pb::LifecycleStage::Silent) => LifecycleStage::Silent,
        Err(_) => {
            out.push(FieldViolation::new(f("stage"), "unknown value"));
            LifecycleStage::Billing
        }
    };
    if !(-MAX_ABS_BALANCE_FEN..=MAX_ABS_BALANCE_FEN).contains(&input.balance_fen) {
        out.push(FieldViolation::new(
            f("balance_fen"),
            format!("must be within ±{MAX_ABS_BALANCE_FEN} fen"),
        ));
    }
    if input.cycle_usage_bytes > i64::MAX as u64 {
        out.push(FieldViolation::new(f("cycle_usage_bytes"), "is too large"));
    }
    let account = if input.account_id.is_empty() {
        None
    } else {
        match AccountId::parse(&input.account_id) {
            Ok(a) => Some(a),
            Err(e) => {
                out.push(FieldViolation::new(f("account_id"), e));
                None
            }
        }
    };
    if out.len() > before {
        return None;
    }
    Some(NewCard {
        iccid: iccid?,
        msisdn,
        imsi,
        carrier: carrier?,
        account,
        customer_id: customer_id?,
        plan: plan?,
        real_name,
        stage,
        balance: Fen(input.balance_fen),
        cycle_usage_bytes: input.cycle_usage_bytes,
        warnings,
    })
}

fn plan(prefix: &str, p: &pb::Plan, out: &mut Vec<FieldViolation>) -> Option<Plan> {
    let before = out.len();
    if p.monthly_quota_bytes == 0 || p.monthly_quota_bytes > i64::MAX as u64 {
        out.push(FieldViolation::new(
            format!("{prefix}.monthly_quota_bytes"),
            "must be greater than 0 (and fit a signed 64-bit integer)",
        ));
    }
    if !(0..=MAX_MONTHLY_FEE_FEN).contains(&p.monthly_fee_fen) {
        out.push(FieldViolation::new(
            format!("{prefix}.monthly_fee_fen"),
            format!("must be 0..={MAX_MONTHLY_FEE_FEN} fen"),
        ));
    }
    let validity_end = match &p.validity_end {
        None => {
            out.push(FieldViolation::new(
                format!("{prefix}.validity_end"),
                "is required",
            ));
            None
        }
        Some(t) => {
            use crate::domain::rules::{
                validity_in_bounds, EARLIEST_VALIDITY_YEAR, LATEST_VALIDITY_YEAR,
            };
            let parsed = from_timestamp(t).filter(|d| validity_in_bounds(*d));
            if parsed.is_none() {
                out.push(FieldViolation::new(
                    format!("{prefix}.validity_end"),
                    format!("must be a valid time between the years {EARLIEST_VALIDITY_YEAR} and {LATEST_VALIDITY_YEAR}"),
                ));
            }
            parsed
        }
    };
    if out.len() > before {
        return None;
    }
    Some(Plan {
        monthly_quota_bytes: p.monthly_quota_bytes,
        monthly_fee: Fen(p.monthly_fee_fen),
        validity_end: validity_end?,
        auto_suspend_over_quota: p.auto_suspend_over_quota,
    })
}

pub fn event_to_pb(e: &EventRow) -> pb::CardEvent {
    pb::CardEvent {
        id: e.id,
        iccid: e.iccid.clone(),
        kind: e.kind.clone(),
        cause: e.cause.clone(),
        at: Some(timestamp(e.at)),
        amount_fen: e.amount.0,
        status: e.status.map_or(pb::CardStatus::Unspecified, status_to_pb) as i32,
        stop_reasons: e
            .stop_reasons
            .iter()
            .map(|r| reason_to_pb(r) as i32)
            .collect(),
        balance_fen: e.balance.0,
    }
}

pub fn diagnosis_to_pb(iccid: &Iccid, d: &Diagnosis, at: DateTime<Utc>) -> pb::Diagnosis {
    pb::Diagnosis {
        iccid: iccid.to_string(),
        verdict: match d.verdict {
            Verdict::OnlineOk => pb::Verdict::OnlineOk,
            Verdict::BlockedByAccount => pb::Verdict::BlockedByAccount,
            Verdict::LikelyNetworkOrDevice => pb::Verdict::LikelyNetworkOrDevice,
            Verdict::Cancelled => pb::Verdict::Cancelled,
            Verdict::ChangePending => pb::Verdict::ChangePending,
            Verdict::CarrierStateDiffers => pb::Verdict::CarrierStateDiffers,
        } as i32,
        status: status_to_pb(d.status) as i32,
        summary: d.summary.clone(),
        findings: d
            .findings
            .iter()
            .map(|f| pb::Finding {
                code: f.code.to_string(),
                severity: match f.severity {
                    Severity::Blocking => pb::Severity::Blocking,
                    Severity::Warning => pb::Severity::Warning,
                    Severity::Info => pb::Severity::Info,
                } as i32,
                message: f.message.clone(),
                evidence: f
                    .evidence
                    .iter()
                    .map(|e| pb::Evidence {
                        name: e.name.to_string(),
                        value: e.value,
                        unit: e.unit.to_string(),
                    })
                    .collect(),
                steps: f.steps.iter().map(step_to_pb).collect(),
            })
            .collect(),
        language: d.lang.tag().to_string(),
        diagnosed_at: Some(timestamp(at)),
    }
}

fn step_to_pb(s: &Step) -> pb::RemedyStep {
    pb::RemedyStep {
        action: match s.action {
            Action::RenewPlan => pb::RemedyAction::RenewPlan,
            Action::Recharge => pb::RemedyAction::Recharge,
            Action::ResumeCard => pb::RemedyAction::ResumeCard,
            Action::RebindCard => pb::RemedyAction::RebindCard,
            Action::VerifyRealName => pb::RemedyAction::VerifyRealName,
            Action::Wait => pb::RemedyAction::Wait,
            Action::DataTopUp => pb::RemedyAction::DataTopUp,
            Action::ContactCarrier => pb::RemedyAction::ContactCarrier,
            Action::MoveToAnotherDevice => pb::RemedyAction::MoveToAnotherDevice,
            Action::CheckCoverage => pb::RemedyAction::CheckCoverage,
            Action::RestartDevice => pb::RemedyAction::RestartDevice,
            Action::ReplaceCard => pb::RemedyAction::ReplaceCard,
            Action::TopUpPool => pb::RemedyAction::TopUpPool,
        } as i32,
        rpc: s.action.rpc().unwrap_or_default().to_string(),
        cost_fen: s.cost.0,
        takes_effect_at: s.takes_effect_at.map(timestamp),
        optional: s.optional,
        months: s.months,
        text: s.text.clone(),
        pool_id: s.pool_id.clone().unwrap_or_default(),
        bytes: s.bytes,
    }
}
