//! The operations' rules (rules.md §1, §3, §5) as pure functions: each takes a card, its
//! carrier's policy and the time, and returns the card's next state plus what the carrier must be
//! told, or the rule that refuses it. The service persists the result; simulated carriers and the
//! lifecycle engine reuse the same functions.

use chrono::{DateTime, Utc};

use super::event;
use super::policy::add_months;
use super::{
    AccountId, ArrearsRecovery, Card, CardEvent, CarrierId, CarrierPolicy, Cause, Fen, Iccid, Imsi,
    LifecycleStage, Msisdn, Plan, RealNameStatus, StopReason, StopReasons,
};

/// What the carrier must do so that its state matches the card's new state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarrierAction {
    /// 停机: the card had service and now has a stop reason.
    Stop,
    /// 复机: the card's last stop reason was cleared.
    Restore,
    /// 销户: the retention window ran out; the number is released.
    Cancel,
    /// 机卡重绑: the card's machine-card binding changes (RebindCard); its service state does not.
    Rebind,
}

impl CarrierAction {
    /// The stored name (`STOP`, `RESTORE`, `CANCEL`).
    pub fn as_str(self) -> &'static str {
        match self {
            CarrierAction::Stop => "STOP",
            CarrierAction::Restore => "RESTORE",
            CarrierAction::Cancel => "CANCEL",
            CarrierAction::Rebind => "REBIND",
        }
    }

    pub fn parse(s: &str) -> Option<CarrierAction> {
        [
            CarrierAction::Stop,
            CarrierAction::Restore,
            CarrierAction::Cancel,
            CarrierAction::Rebind,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    /// For people: "stop (停机)".
    pub fn verb(self) -> &'static str {
        match self {
            CarrierAction::Stop => "stop (停机)",
            CarrierAction::Restore => "restore (复机)",
            CarrierAction::Cancel => "cancellation (销户)",
            CarrierAction::Rebind => "rebinding (机卡重绑)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub card: Card,
    pub action: Option<CarrierAction>,
    /// What happened, oldest first; written to the outbox with the card.
    pub events: Vec<CardEvent>,
    /// False when the operation found the card already in the requested state.
    pub changed: bool,
    /// Data this change accrued, recorded in the daily usage history on the day of the card's
    /// `updated_at`.
    pub usage_bytes: u64,
}

impl Transition {
    /// A transition that changes nothing.
    pub fn none(card: &Card) -> Transition {
        Transition {
            card: card.clone(),
            action: None,
            events: Vec::new(),
            changed: false,
            usage_bytes: 0,
        }
    }

    /// This transition followed by `next` (which started from this one's card).
    pub fn then(self, before: &Card, next: Transition) -> Transition {
        let mut events = self.events;
        events.extend(next.events);
        let changed = self.changed || next.changed;
        // A rebind changes no service state, so the states alone do not show it.
        let action = match (carrier_action(before, &next.card), next.action) {
            (None, Some(CarrierAction::Rebind)) => Some(CarrierAction::Rebind),
            (a, _) => a,
        };
        Transition {
            action,
            card: next.card,
            events,
            changed,
            usage_bytes: self.usage_bytes.saturating_add(next.usage_bytes),
        }
    }
}

/// What the carrier must be told for its state to go from `before` to `after`.
pub fn carrier_action(before: &Card, after: &Card) -> Option<CarrierAction> {
    if after.cancelled && !before.cancelled {
        return Some(CarrierAction::Cancel);
    }
    match (before.is_online(), after.is_online()) {
        (true, false) => Some(CarrierAction::Stop),
        (false, true) => Some(CarrierAction::Restore),
        _ => None,
    }
}

/// A rule that refuses an operation. `reason()` is the stable ErrorInfo reason callers match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleViolation {
    #[error("the card is cancelled (number released); no operation can bring it back")]
    CardCancelled,
    #[error("the plan expired at {0}; renew it first (manual stop needs a valid plan)")]
    PlanExpired(DateTime<Utc>),
    #[error("the card is in arrears (balance {0}); recharge first")]
    InArrears(Fen),
    #[error("the card is stopped for over-quota; it restores at the next billing cycle or with a data top-up")]
    OverQuota,
    #[error("the card is stopped with {0}, which a manual resume cannot clear{hint}", hint = resume_hint(*.0))]
    NotResumable(StopReason),
    #[error("the balance would exceed the largest amount simgate holds")]
    BalanceLimit,
    #[error(
        "the card is a {card} card and the pool is a {pool} pool: a pool holds one carrier's cards"
    )]
    PoolCarrierMismatch { card: CarrierId, pool: CarrierId },
    #[error("the card belongs to another customer than the pool")]
    PoolCustomerMismatch,
    #[error("the card is in pool {0}; remove it from that pool first")]
    InAnotherPool(String),
    #[error("a {} of this card was sent to its carrier and is not settled yet; retry once the card shows no pending_change", .0.verb())]
    ChangePending(CarrierAction),
    #[error("the plan would be valid until {0}, past the year {LATEST_VALIDITY_YEAR}, the latest simgate accepts (as for an import)")]
    ValidityLimit(DateTime<Utc>),
    #[error("card {0} belongs to another customer; only unassigned inventory can be assigned")]
    AssignedToAnother(String),
    #[error("the card's platform ({platform}) has no machine-card binding call for {mode}{}", if .supported.is_empty() { String::new() } else { format!("; it has: {}", .supported.join(", ")) })]
    RebindNotSupported {
        platform: String,
        mode: &'static str,
        supported: Vec<&'static str>,
    },
}

/// The years a plan's validity end may fall in, at import and after any renewal.
pub const EARLIEST_VALIDITY_YEAR: i32 = 2000;
pub const LATEST_VALIDITY_YEAR: i32 = 2200;

/// Whether `t` is a validity end simgate accepts.
pub fn validity_in_bounds(t: DateTime<Utc>) -> bool {
    (EARLIEST_VALIDITY_YEAR..=LATEST_VALIDITY_YEAR).contains(&chrono::Datelike::year(&t))
}

fn resume_hint(r: StopReason) -> &'static str {
    match r {
        StopReason::Expired => ": renew the plan",
        StopReason::Arrears => ": recharge until the balance is not negative",
        StopReason::RealName => ": complete real-name verification",
        StopReason::DeviceMismatch => {
            ": the card was found in a device it is not bound to; handle the binding with the carrier"
        }
        StopReason::OverQuota => ": it restores at the next billing cycle or with a data top-up",
        StopReason::PoolExhausted => ": top up the pool or wait for the next cycle",
        StopReason::TestDataUsed => ": the card restores when it moves to billing",
        StopReason::Manual => "",
    }
}

impl RuleViolation {
    pub fn reason(&self) -> &'static str {
        match self {
            RuleViolation::CardCancelled => "CARD_CANCELLED",
            RuleViolation::PlanExpired(_) => "PLAN_EXPIRED",
            RuleViolation::InArrears(_) => "CARD_IN_ARREARS",
            RuleViolation::OverQuota => "CARD_OVER_QUOTA",
            RuleViolation::NotResumable(r) => match r {
                StopReason::Expired => "PLAN_EXPIRED",
                StopReason::Arrears => "CARD_IN_ARREARS",
                StopReason::OverQuota => "CARD_OVER_QUOTA",
                StopReason::RealName => "REAL_NAME_REQUIRED",
                StopReason::DeviceMismatch => "DEVICE_MISMATCH",
                StopReason::PoolExhausted => "POOL_EXHAUSTED",
                StopReason::TestDataUsed => "TEST_DATA_USED",
                StopReason::Manual => "CARD_MANUALLY_STOPPED",
            },
            RuleViolation::BalanceLimit => "BALANCE_LIMIT",
            RuleViolation::PoolCarrierMismatch { .. } => "POOL_CARRIER_MISMATCH",
            RuleViolation::PoolCustomerMismatch => "POOL_CUSTOMER_MISMATCH",
            RuleViolation::InAnotherPool(_) => "CARD_IN_ANOTHER_POOL",
            RuleViolation::ChangePending(_) => "CHANGE_PENDING",
            RuleViolation::ValidityLimit(_) => "VALIDITY_LIMIT",
            RuleViolation::AssignedToAnother(_) => "CARD_ASSIGNED_TO_ANOTHER_CUSTOMER",
            RuleViolation::RebindNotSupported { .. } => "REBIND_NOT_SUPPORTED",
        }
    }
}

/// A card's validated import row.
#[derive(Debug, Clone)]
pub struct NewCard {
    pub iccid: Iccid,
    pub msisdn: Option<Msisdn>,
    pub imsi: Option<Imsi>,
    pub carrier: CarrierId,
    /// The carrier account; None: the carrier's default account (the service chooses and
    /// checks it before the card is opened).
    pub account: Option<AccountId>,
    pub customer_id: String,
    pub plan: Plan,
    pub real_name: RealNameStatus,
    pub stage: LifecycleStage,
    pub balance: Fen,
    pub cycle_usage_bytes: u64,
    pub warnings: Vec<String>,
}

/// Derives an imported card's state from its facts: a negative balance is arrears, a missing
/// real-name is a stop, a used-up quota with auto-suspend is over-quota, a past validity end is
/// expiry in retention, and a retention window already over means the card is cancelled.
pub fn open_card(input: NewCard, policy: &CarrierPolicy, now: DateTime<Utc>) -> Card {
    let mut reasons = StopReasons::NONE;
    let mut warnings = input.warnings;
    if input.balance.is_negative() {
        reasons.insert(StopReason::Arrears);
    }
    if input.real_name == RealNameStatus::Unverified {
        reasons.insert(StopReason::RealName);
    }
    if input.plan.auto_suspend_over_quota
        && input.cycle_usage_bytes >= input.plan.monthly_quota_bytes
    {
        reasons.insert(StopReason::OverQuota);
    }
    let mut retention_ends_at = None;
    let mut retention_fee_next_at = None;
    let mut cancelled = false;
    if input.plan.validity_end <= now {
        reasons.insert(StopReason::Expired);
        let ends = policy.retention_ends_at(input.plan.validity_end);
        if ends <= now && policy.cancel_when_retention_ends {
            cancelled = true;
            warnings.push(format!(
                "the plan ended at {} and the retention window at {ends}: imported as CANCELLED",
                input.plan.validity_end
            ));
        } else {
            retention_ends_at = Some(ends);
            // Fees for the months before the import were settled elsewhere; charge from the
            // next monthly anniversary of the expiry on.
            retention_fee_next_at = crate::domain::lifecycle::next_retention_fee_at(
                policy,
                input.plan.validity_end,
                now,
            );
        }
    }
    let test_used_bytes = match input.stage {
        LifecycleStage::Test => input.cycle_usage_bytes,
        _ => 0,
    };
    let mut card = Card {
        iccid: input.iccid,
        msisdn: input.msisdn,
        imsi: input.imsi,
        carrier: input.carrier,
        account: input
            .account
            .unwrap_or_else(|| AccountId::default_for(input.carrier)),
        customer_id: input.customer_id,
        plan: input.plan,
        cancelled,
        stop_reasons: reasons,
        stage: input.stage,
        real_name: input.real_name,
        balance: input.balance,
        cycle_usage_bytes: input.cycle_usage_bytes,
        cycle_start: policy.cycle_bounds(now).0,
        stage_since: now,
        test_used_bytes,
        retention_fee_next_at,
        next_due_at: None,
        retention_ends_at,
        expiry_restore_at: None,
        arrears_paid_awaiting_resume: false,
        warnings,
        created_at: now,
        updated_at: now,
        version: 0,
        pool: None,
        alert_keys: Vec::new(),
        pending: None,
        drift: None,
        carrier_unknown: None,
        spare: false,
    };
    card.next_due_at = crate::domain::lifecycle::next_due(&card, policy).map(|(t, _)| t);
    card
}

fn transition(
    before: &Card,
    mut after: Card,
    now: DateTime<Utc>,
    kind: &'static str,
    amount: Fen,
) -> Transition {
    let changed = after != *before;
    let mut events = Vec::new();
    if changed {
        after.updated_at = now;
        events.push(CardEvent::of(&after, now, kind, Cause::Request, amount));
    }
    Transition {
        action: carrier_action(before, &after),
        card: after,
        events,
        changed,
        usage_bytes: 0,
    }
}

fn ensure_not_cancelled(card: &Card) -> Result<(), RuleViolation> {
    if card.cancelled {
        Err(RuleViolation::CardCancelled)
    } else {
        Ok(())
    }
}

/// 机卡重绑 (RebindCard): a carrier change of the card's binding; its service state and stop
/// reasons stay as they are. A DEVICE_MISMATCH stop clears only when the carrier's own stop
/// reason clears on a later read ([`device_mismatch_cleared`]): whether the carrier lifts its
/// stop after a rebind is the carrier's to say, not simgate's to assume.
pub fn rebind(card: &Card, now: DateTime<Utc>) -> Result<Transition, RuleViolation> {
    ensure_not_cancelled(card)?;
    let mut next = card.clone();
    next.updated_at = now;
    Ok(Transition {
        events: vec![CardEvent::of(
            &next,
            now,
            event::card::REBOUND,
            Cause::Request,
            Fen::ZERO,
        )],
        card: next,
        action: Some(CarrierAction::Rebind),
        changed: true,
        usage_bytes: 0,
    })
}

/// The carrier stopped the card for 机卡分离 (its stop reason says so, e.g. OneLink's position
/// 2): the card gains DEVICE_MISMATCH. The carrier already stopped it, so nothing is sent.
pub fn device_mismatch_found(card: &Card, now: DateTime<Utc>) -> Transition {
    if card.cancelled || card.stop_reasons.contains(StopReason::DeviceMismatch) {
        return Transition::none(card);
    }
    let mut next = card.clone();
    next.stop_reasons.insert(StopReason::DeviceMismatch);
    next.updated_at = now;
    Transition {
        events: vec![CardEvent::of(
            &next,
            now,
            event::card::DEVICE_MISMATCH,
            Cause::Usage,
            Fen::ZERO,
        )],
        card: next,
        action: None,
        changed: true,
        usage_bytes: 0,
    }
}

/// The carrier's stop reason for 机卡分离 has cleared: DEVICE_MISMATCH goes. If the carrier
/// still shows the card stopped and no other reason remains, simgate restores it; if the
/// carrier already lifted its stop (`carrier_active`), nothing is sent.
pub fn device_mismatch_cleared(
    card: &Card,
    carrier_active: bool,
    now: DateTime<Utc>,
) -> Transition {
    if !card.stop_reasons.contains(StopReason::DeviceMismatch) {
        return Transition::none(card);
    }
    let mut next = card.clone();
    next.stop_reasons.remove(StopReason::DeviceMismatch);
    next.updated_at = now;
    let action = (!carrier_active && next.is_online()).then_some(CarrierAction::Restore);
    Transition {
        events: vec![CardEvent::of(
            &next,
            now,
            event::card::DEVICE_MISMATCH_CLEARED,
            Cause::Usage,
            Fen::ZERO,
        )],
        card: next,
        action,
        changed: true,
        usage_bytes: 0,
    }
}

/// 人工停用: allowed only while the plan is valid, the card is not in arrears and not over quota.
/// Suspending a card already stopped by hand changes nothing.
pub fn suspend(card: &Card, now: DateTime<Utc>) -> Result<Transition, RuleViolation> {
    ensure_not_cancelled(card)?;
    if card.stop_reasons.contains(StopReason::Expired) || card.plan.validity_end <= now {
        return Err(RuleViolation::PlanExpired(card.plan.validity_end));
    }
    if card.stop_reasons.contains(StopReason::Arrears) || card.balance.is_negative() {
        return Err(RuleViolation::InArrears(card.balance));
    }
    if card.stop_reasons.contains(StopReason::OverQuota) {
        return Err(RuleViolation::OverQuota);
    }
    let mut next = card.clone();
    next.stop_reasons.insert(StopReason::Manual);
    Ok(transition(
        card,
        next,
        now,
        event::card::SUSPENDED,
        Fen::ZERO,
    ))
}

/// Manual restore: clears MANUAL, and ARREARS once it is paid on a carrier whose arrears
/// recovery is manual. Every other reason stays, and keeps the card stopped.
pub fn resume(card: &Card, now: DateTime<Utc>) -> Result<Transition, RuleViolation> {
    ensure_not_cancelled(card)?;
    let mut next = card.clone();
    next.stop_reasons.remove(StopReason::Manual);
    if card.arrears_paid_awaiting_resume {
        next.stop_reasons.remove(StopReason::Arrears);
        next.arrears_paid_awaiting_resume = false;
    }
    if next.stop_reasons == card.stop_reasons {
        if let Some(blocking) = card.stop_reasons.iter().next() {
            return Err(RuleViolation::NotResumable(blocking));
        }
    }
    Ok(transition(card, next, now, event::card::RESUMED, Fen::ZERO))
}

/// Adds money. A recharge that brings a card in arrears back to a non-negative balance clears
/// ARREARS at once (`auto`) or marks it ready for a manual restore (`manual`).
pub fn recharge(
    card: &Card,
    policy: &CarrierPolicy,
    amount: Fen,
    now: DateTime<Utc>,
) -> Result<Transition, RuleViolation> {
    ensure_not_cancelled(card)?;
    let mut next = card.clone();
    next.balance = card
        .balance
        .checked_add(amount)
        .ok_or(RuleViolation::BalanceLimit)?;
    if card.stop_reasons.contains(StopReason::Arrears) && !next.balance.is_negative() {
        match policy.arrears_recovery {
            ArrearsRecovery::Auto => {
                next.stop_reasons.remove(StopReason::Arrears);
                next.arrears_paid_awaiting_resume = false;
            }
            ArrearsRecovery::Manual => next.arrears_paid_awaiting_resume = true,
        }
    }
    Ok(transition(card, next, now, event::card::RECHARGED, amount))
}

/// Extends validity by whole months from the current end, or from now if the plan has ended. An
/// expired card is restored when its carrier's `renewal_restore` rule says: at once, the same
/// day (after the carrier's processing delay, by 23:59:59 at the latest), or at the next
/// billing cycle.
pub fn renew(
    card: &Card,
    policy: &CarrierPolicy,
    months: u32,
    now: DateTime<Utc>,
) -> Result<Transition, RuleViolation> {
    ensure_not_cancelled(card)?;
    let mut next = card.clone();
    if card.stop_reasons.contains(StopReason::Expired) {
        // Renewed: the number is no longer heading for release and retention fees stop.
        next.retention_ends_at = None;
        next.retention_fee_next_at = None;
        let restore_at = policy.renewal_restore_at(now);
        // A restore already scheduled by an earlier renewal keeps its time.
        let restore_at = card.expiry_restore_at.unwrap_or(restore_at);
        if restore_at <= now {
            next.stop_reasons.remove(StopReason::Expired);
            next.expiry_restore_at = None;
        } else {
            next.expiry_restore_at = Some(restore_at);
        }
        // The renewed months are months of service: they run from the restore, not from the
        // renewal, so a card restored at the next cycle is not charged for days it was stopped.
        next.plan.validity_end = add_months(card.plan.validity_end.max(restore_at), months);
    } else {
        next.plan.validity_end = add_months(card.plan.validity_end.max(now), months);
    }
    if !validity_in_bounds(next.plan.validity_end) {
        return Err(RuleViolation::ValidityLimit(next.plan.validity_end));
    }
    Ok(transition(card, next, now, event::card::RENEWED, Fen::ZERO))
}

/// Gives a card of the reseller's unassigned inventory to `customer`, or sets whether a
/// customer's own card is one of its spares (kept in reserve for swaps). A card of another
/// customer is not moved: cards enter a customer through the reseller's inventory only.
pub fn assign(
    card: &Card,
    customer: &str,
    spare: bool,
    now: DateTime<Utc>,
) -> Result<Transition, RuleViolation> {
    ensure_not_cancelled(card)?;
    if !card.customer_id.is_empty() && card.customer_id != customer {
        return Err(RuleViolation::AssignedToAnother(card.iccid.to_string()));
    }
    if card.customer_id == customer && card.spare == spare {
        return Ok(Transition::none(card));
    }
    let mut next = card.clone();
    next.customer_id = customer.to_string();
    next.spare = spare;
    Ok(transition(
        card,
        next,
        now,
        event::card::ASSIGNED,
        Fen::ZERO,
    ))
}

/// Completing real-name verification clears REAL_NAME.
pub fn verify_real_name(card: &Card, now: DateTime<Utc>) -> Result<Transition, RuleViolation> {
    ensure_not_cancelled(card)?;
    let mut next = card.clone();
    next.real_name = RealNameStatus::Verified;
    next.stop_reasons.remove(StopReason::RealName);
    Ok(transition(
        card,
        next,
        now,
        event::card::REAL_NAME_VERIFIED,
        Fen::ZERO,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::policy::add_months;
    use crate::domain::CardStatus;
    use chrono::{Duration, TimeZone};
    use chrono_tz::Asia::Shanghai;

    pub(crate) fn now() -> DateTime<Utc> {
        Shanghai
            .with_ymd_and_hms(2026, 11, 25, 10, 0, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    pub(crate) fn new_card(carrier: CarrierId) -> NewCard {
        let iccid = match carrier {
            CarrierId::Mobile => "898602D9981700140197",
            CarrierId::Unicom => "89860117750006390067",
            CarrierId::Telecom => "8986031630200230821",
        };
        NewCard {
            iccid: Iccid::parse_any(iccid).unwrap(),
            msisdn: None,
            imsi: None,
            carrier,
            account: None,
            customer_id: "acme".into(),
            plan: Plan {
                monthly_quota_bytes: 1 << 30,
                monthly_fee: Fen(1200),
                validity_end: now() + Duration::days(200),
                auto_suspend_over_quota: true,
            },
            real_name: RealNameStatus::Verified,
            stage: LifecycleStage::Billing,
            balance: Fen(0),
            cycle_usage_bytes: 0,
            warnings: vec![],
        }
    }

    fn policy(c: CarrierId) -> CarrierPolicy {
        CarrierPolicy::default_for(c)
    }

    fn open(n: NewCard) -> Card {
        let p = policy(n.carrier);
        open_card(n, &p, now())
    }

    fn active(c: CarrierId) -> Card {
        open(new_card(c))
    }

    fn with_reasons(c: CarrierId, reasons: &[StopReason]) -> Card {
        let mut card = active(c);
        for r in reasons {
            card.stop_reasons.insert(*r);
        }
        card
    }

    // §1: a card is online only when its set of stop reasons is empty.
    #[test]
    fn rule_card_is_online_only_when_it_has_no_stop_reason() {
        let card = active(CarrierId::Mobile);
        assert!(card.is_online());
        assert_eq!(card.status(), CardStatus::Active);
        for r in StopReason::ALL {
            let stopped = with_reasons(CarrierId::Mobile, &[r]);
            assert!(!stopped.is_online(), "{r} must stop the card");
            let expected = if r == StopReason::Expired {
                CardStatus::Retained
            } else {
                CardStatus::Suspended
            };
            assert_eq!(stopped.status(), expected);
        }
    }

    // §1: clearing one reason must not restore a card that still has another.
    #[test]
    fn rule_clearing_one_reason_does_not_restore_a_card_stopped_for_another() {
        let card = with_reasons(
            CarrierId::Mobile,
            &[StopReason::Manual, StopReason::RealName],
        );
        let t = resume(&card, now()).unwrap();
        assert!(!t.card.stop_reasons.contains(StopReason::Manual));
        assert!(t.card.stop_reasons.contains(StopReason::RealName));
        assert_eq!(
            t.action, None,
            "still stopped: the carrier must not restore it"
        );
        assert_eq!(t.card.status(), CardStatus::Suspended);

        let t = verify_real_name(&t.card, now()).unwrap();
        assert_eq!(t.action, Some(CarrierAction::Restore));
        assert!(t.card.is_online());
    }

    // §1 OVER_QUOTA: starts when the quota is used up AND the card has the auto-suspend option.
    #[test]
    fn rule_over_quota_stops_only_cards_with_the_auto_suspend_option() {
        let mut n = new_card(CarrierId::Mobile);
        n.cycle_usage_bytes = n.plan.monthly_quota_bytes;
        let card = open(n.clone());
        assert!(card.stop_reasons.contains(StopReason::OverQuota));

        n.plan.auto_suspend_over_quota = false;
        let card = open(n);
        assert!(
            card.is_online(),
            "without the option it keeps running into overage"
        );
        assert!(card.is_over_quota());
    }

    // §1 MANUAL: allowed only while the plan is valid.
    #[test]
    fn rule_manual_stop_requires_a_valid_plan() {
        let card = with_reasons(CarrierId::Mobile, &[StopReason::Expired]);
        assert_eq!(suspend(&card, now()).unwrap_err().reason(), "PLAN_EXPIRED");

        // Validity ended but the lifecycle engine has not marked it yet: still refused.
        let mut card = active(CarrierId::Mobile);
        card.plan.validity_end = now() - Duration::seconds(1);
        assert_eq!(suspend(&card, now()).unwrap_err().reason(), "PLAN_EXPIRED");
    }

    // §1 MANUAL: not while the card is in arrears.
    #[test]
    fn rule_manual_stop_is_refused_in_arrears() {
        let mut n = new_card(CarrierId::Unicom);
        n.balance = Fen(-300);
        let card = open(n);
        let err = suspend(&card, now()).unwrap_err();
        assert_eq!(err.reason(), "CARD_IN_ARREARS");
        assert!(err.to_string().contains("-3.00 yuan"));
    }

    // §1 MANUAL: not while the card is over quota.
    #[test]
    fn rule_manual_stop_is_refused_over_quota() {
        let card = with_reasons(CarrierId::Telecom, &[StopReason::OverQuota]);
        assert_eq!(
            suspend(&card, now()).unwrap_err().reason(),
            "CARD_OVER_QUOTA"
        );
    }

    #[test]
    fn rule_manual_stop_of_an_online_card_stops_it_at_the_carrier() {
        let card = active(CarrierId::Mobile);
        let t = suspend(&card, now()).unwrap();
        assert_eq!(t.action, Some(CarrierAction::Stop));
        assert_eq!(t.card.status(), CardStatus::Suspended);

        // Already stopped for another reason: MANUAL is added, the carrier has nothing to do.
        let card = with_reasons(CarrierId::Mobile, &[StopReason::RealName]);
        let t = suspend(&card, now()).unwrap();
        assert!(t.card.stop_reasons.contains(StopReason::Manual));
        assert_eq!(t.action, None);

        // Suspending twice changes nothing.
        let again = suspend(
            &suspend(&active(CarrierId::Mobile), now()).unwrap().card,
            now(),
        )
        .unwrap();
        assert!(!again.changed);
        assert_eq!(again.action, None);
    }

    // §1 MANUAL: ends only by a manual resume; resume clears only MANUAL.
    #[test]
    fn rule_manual_stop_ends_only_by_manual_resume() {
        let card = suspend(&active(CarrierId::Mobile), now()).unwrap().card;
        let p = policy(CarrierId::Mobile);
        // Neither money nor verification nor renewal clears a manual stop.
        let t = recharge(&card, &p, Fen(10_000), now()).unwrap();
        assert!(t.card.stop_reasons.contains(StopReason::Manual));
        let t = verify_real_name(&t.card, now()).unwrap();
        assert!(t.card.stop_reasons.contains(StopReason::Manual));
        let t = renew(&t.card, &p, 12, now()).unwrap();
        assert!(t.card.stop_reasons.contains(StopReason::Manual));
        let t = resume(&t.card, now()).unwrap();
        assert!(t.card.is_online());
        assert_eq!(t.action, Some(CarrierAction::Restore));
    }

    #[test]
    fn resume_refuses_with_the_first_reason_it_cannot_clear() {
        let card = with_reasons(
            CarrierId::Mobile,
            &[StopReason::OverQuota, StopReason::Expired],
        );
        let err = resume(&card, now()).unwrap_err();
        assert_eq!(err, RuleViolation::NotResumable(StopReason::Expired));
        assert_eq!(err.reason(), "PLAN_EXPIRED");
        let card = with_reasons(CarrierId::Mobile, &[StopReason::OverQuota]);
        assert_eq!(
            resume(&card, now()).unwrap_err().reason(),
            "CARD_OVER_QUOTA"
        );
    }

    #[test]
    fn resume_of_an_active_card_changes_nothing() {
        let t = resume(&active(CarrierId::Mobile), now()).unwrap();
        assert!(!t.changed);
        assert_eq!(t.action, None);
    }

    // §1 ARREARS, arrears_recovery = auto: recharge restores by itself.
    #[test]
    fn rule_arrears_recovery_auto_restores_on_recharge() {
        let mut n = new_card(CarrierId::Mobile);
        n.balance = Fen(-1200);
        let card = open(n);
        let p = policy(CarrierId::Mobile);
        assert_eq!(card.status(), CardStatus::Suspended);

        let t = recharge(&card, &p, Fen(1199), now()).unwrap();
        assert_eq!(t.card.balance, Fen(-1));
        assert!(
            t.card.stop_reasons.contains(StopReason::Arrears),
            "still 1 fen short"
        );
        assert_eq!(t.action, None);

        let t = recharge(&t.card, &p, Fen(1), now()).unwrap();
        assert_eq!(t.card.balance, Fen(0));
        assert!(t.card.is_online());
        assert_eq!(t.action, Some(CarrierAction::Restore));
    }

    // §1 ARREARS, arrears_recovery = manual: recharge, then request a manual restore.
    #[test]
    fn rule_arrears_recovery_manual_needs_a_resume_after_recharge() {
        let mut n = new_card(CarrierId::Unicom);
        n.balance = Fen(-500);
        let card = open(n);
        let p = policy(CarrierId::Unicom);
        assert_eq!(
            resume(&card, now()).unwrap_err().reason(),
            "CARD_IN_ARREARS"
        );

        let t = recharge(&card, &p, Fen(500), now()).unwrap();
        assert!(t.card.stop_reasons.contains(StopReason::Arrears));
        assert!(t.card.arrears_paid_awaiting_resume);
        assert_eq!(t.action, None);

        let t = resume(&t.card, now()).unwrap();
        assert!(t.card.is_online());
        assert!(!t.card.arrears_paid_awaiting_resume);
        assert_eq!(t.action, Some(CarrierAction::Restore));
    }

    #[test]
    fn recharge_refuses_to_overflow_the_balance() {
        let mut card = active(CarrierId::Mobile);
        card.balance = Fen(i64::MAX - 1);
        let p = policy(CarrierId::Mobile);
        assert_eq!(
            recharge(&card, &p, Fen(2), now()).unwrap_err(),
            RuleViolation::BalanceLimit
        );
    }

    fn expired(c: CarrierId) -> Card {
        let mut n = new_card(c);
        n.plan.validity_end = now() - Duration::days(10);
        open(n)
    }

    // §1 EXPIRED + §3: an expired card is held in 停机保号 (RETAINED).
    #[test]
    fn rule_expired_card_enters_retention() {
        let card = expired(CarrierId::Mobile);
        assert_eq!(card.status(), CardStatus::Retained);
        assert!(card.stop_reasons.contains(StopReason::Expired));
        assert!(card.retention_ends_at.is_some());
    }

    // §1 EXPIRED, renewal_restore = immediate (Telecom default).
    #[test]
    fn rule_renewal_restore_immediate_clears_expiry_at_once() {
        let card = expired(CarrierId::Telecom);
        let t = renew(&card, &policy(CarrierId::Telecom), 1, now()).unwrap();
        assert!(t.card.is_online());
        assert_eq!(t.action, Some(CarrierAction::Restore));
        assert_eq!(
            t.card.plan.validity_end,
            add_months(now(), 1),
            "renewed from now"
        );
        assert_eq!(t.card.retention_ends_at, None);
    }

    // §1 EXPIRED, renewal_restore = same_day (Mobile default): 当天, after the carrier's
    // processing delay (default 2 h), never later than 23:59:59 of the day of renewal.
    #[test]
    fn rule_renewal_restore_same_day_restores_after_the_processing_delay_within_the_day() {
        let card = expired(CarrierId::Mobile);
        let p = policy(CarrierId::Mobile);
        assert_eq!(p.same_day_restore_delay_minutes, 120, "default 2 h");
        // Renewed at 10:00 -> restored at 12:00 the same day.
        let t = renew(&card, &p, 1, now()).unwrap();
        assert!(t.card.stop_reasons.contains(StopReason::Expired));
        assert_eq!(t.action, None);
        let noon = Shanghai.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        assert_eq!(t.card.expiry_restore_at, Some(noon.with_timezone(&Utc)));
        // Renewed at 23:00 -> restored at 23:59:59, not at 01:00 the next day.
        let late = Shanghai
            .with_ymd_and_hms(2026, 11, 25, 23, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        let t = renew(&card, &p, 1, late).unwrap();
        let last = Shanghai.with_ymd_and_hms(2026, 11, 25, 23, 59, 59).unwrap();
        assert_eq!(t.card.expiry_restore_at, Some(last.with_timezone(&Utc)));
        // The delay is the carrier's policy setting.
        let quick = CarrierPolicy {
            same_day_restore_delay_minutes: 15,
            ..p.clone()
        };
        let t = renew(&card, &quick, 1, now()).unwrap();
        let quarter = Shanghai.with_ymd_and_hms(2026, 11, 25, 10, 15, 0).unwrap();
        assert_eq!(t.card.expiry_restore_at, Some(quarter.with_timezone(&Utc)));
        // The restore itself is the engine's once that time comes: EXPIRED clears then.
        let due = crate::domain::lifecycle::advance(&t.card, &quick, quarter.with_timezone(&Utc));
        assert!(due.card.is_online(), "{:?}", due.card.stop_reasons);
        assert_eq!(due.action, Some(CarrierAction::Restore));
    }

    // §1 EXPIRED, renewal_restore = next_cycle (Unicom default: cycle starts on the 27th).
    #[test]
    fn rule_renewal_restore_next_cycle_schedules_the_restore_at_the_next_cycle() {
        let card = expired(CarrierId::Unicom);
        let t = renew(&card, &policy(CarrierId::Unicom), 3, now()).unwrap();
        let due = Shanghai.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap();
        assert_eq!(t.card.expiry_restore_at, Some(due.with_timezone(&Utc)));
        assert_eq!(t.action, None);
    }

    #[test]
    fn renewed_months_run_from_the_restore_when_the_carrier_restores_later() {
        let card = expired(CarrierId::Unicom);
        let p = policy(CarrierId::Unicom);
        let t = renew(&card, &p, 1, now()).unwrap();
        let restore = p.cycle_bounds(now()).1;
        assert_eq!(t.card.expiry_restore_at, Some(restore));
        assert_eq!(t.card.plan.validity_end, add_months(restore, 1));
        // Renewing again extends the same plan and keeps the scheduled restore.
        let t2 = renew(&t.card, &p, 2, now()).unwrap();
        assert_eq!(t2.card.expiry_restore_at, Some(restore));
        assert_eq!(
            t2.card.plan.validity_end,
            add_months(add_months(restore, 1), 2)
        );
    }

    #[test]
    fn renewal_of_a_valid_plan_extends_from_its_current_end() {
        let card = active(CarrierId::Mobile);
        let t = renew(&card, &policy(CarrierId::Mobile), 12, now()).unwrap();
        assert_eq!(
            t.card.plan.validity_end,
            add_months(card.plan.validity_end, 12)
        );
        assert_eq!(t.action, None);
    }

    // §1 REAL_NAME: ends by completing verification.
    #[test]
    fn rule_real_name_stop_clears_on_verification() {
        let mut n = new_card(CarrierId::Telecom);
        n.real_name = RealNameStatus::Unverified;
        let card = open(n);
        assert!(card.stop_reasons.contains(StopReason::RealName));
        let t = verify_real_name(&card, now()).unwrap();
        assert_eq!(t.card.real_name, RealNameStatus::Verified);
        assert!(t.card.is_online());
        assert_eq!(t.action, Some(CarrierAction::Restore));
    }

    // §3: China Mobile retains an expired number for 3 months.
    #[test]
    fn rule_retention_window_is_three_months_after_expiry_for_china_mobile() {
        let card = expired(CarrierId::Mobile);
        assert_eq!(
            card.retention_ends_at,
            Some(add_months(card.plan.validity_end, 3))
        );
    }

    // §3: a card still expired when the window ends is cancelled, and cancellation is terminal.
    #[test]
    fn rule_card_past_its_retention_window_is_cancelled_and_terminal() {
        let mut n = new_card(CarrierId::Mobile);
        n.plan.validity_end = now() - Duration::days(100);
        let card = open(n);
        assert_eq!(card.status(), CardStatus::Cancelled);
        assert!(card.warnings.iter().any(|w| w.contains("CANCELLED")));
        let p = policy(CarrierId::Mobile);
        for err in [
            suspend(&card, now()).unwrap_err(),
            resume(&card, now()).unwrap_err(),
            recharge(&card, &p, Fen(100), now()).unwrap_err(),
            renew(&card, &p, 1, now()).unwrap_err(),
            verify_real_name(&card, now()).unwrap_err(),
        ] {
            assert_eq!(err, RuleViolation::CardCancelled);
        }
    }

    #[test]
    fn rule_carrier_that_does_not_cancel_keeps_the_number_retained() {
        let mut p = policy(CarrierId::Telecom);
        p.cancel_when_retention_ends = false;
        let mut n = new_card(CarrierId::Telecom);
        n.plan.validity_end = now() - Duration::days(100);
        let card = open_card(n, &p, now());
        assert_eq!(card.status(), CardStatus::Retained);
    }

    // §3: within the window the card can still be renewed.
    #[test]
    fn rule_renewal_within_the_retention_window_restores_the_card() {
        let mut n = new_card(CarrierId::Telecom);
        n.plan.validity_end = now() - Duration::days(80);
        let card = open(n);
        assert_eq!(card.status(), CardStatus::Retained);
        let t = renew(&card, &policy(CarrierId::Telecom), 1, now()).unwrap();
        assert_eq!(t.card.status(), CardStatus::Active);
    }

    // §5: the carrier's daily check found the card in another device: DEVICE_MISMATCH, and
    // nothing is sent (the carrier stopped it itself).
    #[test]
    fn rule_device_mismatch_found_by_the_carrier_stops_the_card_without_a_carrier_change() {
        let card = open(new_card(CarrierId::Mobile));
        let t = device_mismatch_found(&card, now());
        assert!(t.card.stop_reasons.contains(StopReason::DeviceMismatch));
        assert_eq!(t.card.status(), CardStatus::Suspended);
        assert_eq!(t.action, None);
        assert_eq!(t.events[0].kind, event::card::DEVICE_MISMATCH);
        // Found again: nothing more.
        assert!(!device_mismatch_found(&t.card, now()).changed);
    }

    // §5: only the binding route brings it back: a rebind is a carrier change that keeps the
    // reason; the reason goes when the carrier's own stop reason goes.
    #[test]
    fn rule_device_mismatch_clears_only_when_the_carrier_clears_it_after_a_rebind() {
        let card = with_reasons(CarrierId::Mobile, &[StopReason::DeviceMismatch]);
        let t = rebind(&card, now()).unwrap();
        assert_eq!(t.action, Some(CarrierAction::Rebind));
        // Brought up to now first, as every change is: still a rebind.
        let at_now =
            crate::domain::lifecycle::at_now(&card, &policy(CarrierId::Mobile), now(), |c| {
                rebind(c, now())
            })
            .unwrap();
        assert_eq!(at_now.action, Some(CarrierAction::Rebind));
        assert!(t.card.stop_reasons.contains(StopReason::DeviceMismatch));
        assert_eq!(t.events[0].kind, event::card::REBOUND);
        // The carrier lifted its stop by itself: nothing to send.
        let lifted = device_mismatch_cleared(&t.card, true, now());
        assert!(lifted.card.is_online());
        assert_eq!(lifted.action, None);
        // The reason cleared but the carrier still shows it stopped: simgate restores it.
        let stopped = device_mismatch_cleared(&t.card, false, now());
        assert_eq!(stopped.action, Some(CarrierAction::Restore));
        // Another reason keeps it stopped, and nothing is sent.
        let also = with_reasons(
            CarrierId::Mobile,
            &[StopReason::DeviceMismatch, StopReason::Manual],
        );
        let kept = device_mismatch_cleared(&also, false, now());
        assert!(!kept.card.is_online());
        assert_eq!(kept.action, None);
        let cancelled = Card {
            cancelled: true,
            ..card
        };
        assert_eq!(
            rebind(&cancelled, now()).unwrap_err().reason(),
            "CARD_CANCELLED"
        );
    }

    // §5: a card stopped for 机卡分离 cannot simply be restored.
    #[test]
    fn rule_device_mismatch_is_not_cleared_by_a_manual_resume() {
        let card = with_reasons(
            CarrierId::Mobile,
            &[StopReason::DeviceMismatch, StopReason::Manual],
        );
        let t = resume(&card, now()).unwrap();
        assert!(t.card.stop_reasons.contains(StopReason::DeviceMismatch));
        assert_eq!(t.action, None);
        let err = resume(&t.card, now()).unwrap_err();
        assert_eq!(err.reason(), "DEVICE_MISMATCH");
        assert!(err.to_string().contains("binding"));
    }
}

#[cfg(test)]
mod inventory_tests {
    use super::tests::{new_card, now};
    use super::*;

    fn inventory_card() -> Card {
        let mut row = new_card(CarrierId::Mobile);
        row.customer_id = String::new();
        open_card(row, &CarrierPolicy::default_for(CarrierId::Mobile), now())
    }

    #[test]
    fn assigning_gives_an_inventory_card_to_the_customer_and_can_mark_it_spare() {
        let card = inventory_card();
        let t = assign(&card, "acme", true, now()).unwrap();
        assert_eq!((t.card.customer_id.as_str(), t.card.spare), ("acme", true));
        assert_eq!(t.events[0].kind, event::card::ASSIGNED);
        assert!(t.action.is_none(), "the carrier is not told");
        // Again: nothing changes.
        let again = assign(&t.card, "acme", true, now()).unwrap();
        assert!(!again.changed && again.events.is_empty());
        // The customer's own card can stop being a spare.
        let back = assign(&t.card, "acme", false, now()).unwrap();
        assert!(back.changed && !back.card.spare);
    }

    #[test]
    fn assigning_never_moves_another_customers_card() {
        let mut card = inventory_card();
        card.customer_id = "other".into();
        assert_eq!(
            assign(&card, "acme", false, now()).unwrap_err().reason(),
            "CARD_ASSIGNED_TO_ANOTHER_CUSTOMER"
        );
    }

    #[test]
    fn renewing_past_the_latest_validity_year_is_refused() {
        let policy = CarrierPolicy::default_for(CarrierId::Mobile);
        let mut card = inventory_card();
        card.plan.validity_end = chrono::TimeZone::with_ymd_and_hms(&Utc, 2196, 6, 1, 0, 0, 0)
            .single()
            .unwrap();
        assert!(renew(&card, &policy, 12, now()).is_ok());
        let err = renew(&card, &policy, 60, now()).unwrap_err();
        assert_eq!(err.reason(), "VALIDITY_LIMIT");
    }
}
