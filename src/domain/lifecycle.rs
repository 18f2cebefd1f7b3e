//! Time-driven card life (rules.md §1-§3) as pure functions: which transition a card is due for
//! next, applying every due transition up to a time in order, and what reported data usage does
//! to a card. The engine persists the results; nothing here reads a clock.

use chrono::{DateTime, Duration, Utc};

use super::event;
use super::event::{CardEvent, Cause};
use super::policy::add_months;
use super::rules::{carrier_action, RuleViolation, Transition};
use super::{Card, CarrierPolicy, Fen, LifecycleStage, StopReason};

/// A scheduled transition. The order is the order of application when several fall due at the
/// same instant: a renewal restore before the rollover that charges the renewed plan, an expiry
/// before the rollover (an expired plan is not charged), a cancellation last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Due {
    RenewalRestore,
    StageChange,
    Expiry,
    Rollover,
    RetentionFee,
    Cancellation,
}

/// Upper bound of transitions one call applies; a century of monthly events stays far below it.
/// Guards the engine against a scheduling bug turning into an endless loop.
const MAX_STEPS: usize = 100_000;

/// When billing starts after a silent period: at the first cycle start on or after the silent
/// period's end ("from the 1st of next month" for calendar-month carriers).
fn billing_start(card: &Card, policy: &CarrierPolicy) -> DateTime<Utc> {
    let end = card.stage_since + Duration::days(i64::from(policy.silent_period_days));
    let (start, next) = policy.cycle_bounds(end);
    if start == end {
        start
    } else {
        next
    }
}

/// The next monthly retention fee after `after`, or None when the window has no month left.
/// Fees fall on the monthly anniversaries of the expiry, one per started month of the window.
pub fn next_retention_fee_at(
    policy: &CarrierPolicy,
    validity_end: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    (1..policy.retention_months)
        .map(|k| add_months(validity_end, k))
        .find(|t| *t > after)
}

/// The earliest transition the card is due for, and when.
pub fn next_due(card: &Card, policy: &CarrierPolicy) -> Option<(DateTime<Utc>, Due)> {
    if card.cancelled {
        return None;
    }
    let expired = card.stop_reasons.contains(StopReason::Expired);
    let mut due = vec![(policy.cycle_bounds(card.cycle_start).1, Due::Rollover)];
    match card.stage {
        LifecycleStage::Test => due.push((
            card.stage_since + Duration::days(i64::from(policy.test_period_days)),
            Due::StageChange,
        )),
        LifecycleStage::Silent => due.push((billing_start(card, policy), Due::StageChange)),
        LifecycleStage::Billing => {}
    }
    if expired {
        due.extend(card.expiry_restore_at.map(|t| (t, Due::RenewalRestore)));
        due.extend(card.retention_fee_next_at.map(|t| (t, Due::RetentionFee)));
        if policy.cancel_when_retention_ends {
            due.extend(card.retention_ends_at.map(|t| (t, Due::Cancellation)));
        }
    } else {
        due.push((card.plan.validity_end, Due::Expiry));
    }
    due.into_iter().min()
}

/// Deducts a charge; a balance that goes negative stops the card for arrears.
fn charge(
    card: &mut Card,
    amount: Fen,
    at: DateTime<Utc>,
    kind: &'static str,
    cause: Cause,
    events: &mut Vec<CardEvent>,
) {
    if amount.0 <= 0 {
        return;
    }
    card.balance = card.balance.checked_sub(amount).unwrap_or(Fen(i64::MIN));
    if card.balance.is_negative() {
        card.stop_reasons.insert(StopReason::Arrears);
        card.arrears_paid_awaiting_resume = false;
    }
    events.push(CardEvent::of(card, at, kind, cause, Fen(-amount.0)));
}

/// The fee of the month billing starts in: in full, or per remaining day where the carrier
/// charges the first month per day (China Telecom).
pub fn first_month_fee(card: &Card, policy: &CarrierPolicy, at: DateTime<Utc>) -> Fen {
    let fee = card.plan.monthly_fee;
    if !policy.prorate_first_month {
        return fee;
    }
    let (start, end) = policy.cycle_bounds(at);
    let days_in_cycle = (end - start).num_days().max(1);
    // A started day is a charged day.
    let days_left = ((end - at).num_seconds() + 86_399) / 86_400;
    Fen(fee.0.saturating_mul(days_left.min(days_in_cycle)) / days_in_cycle)
}

fn apply(
    card: &mut Card,
    policy: &CarrierPolicy,
    at: DateTime<Utc>,
    due: Due,
    events: &mut Vec<CardEvent>,
) {
    let schedule = Cause::Schedule;
    match due {
        Due::RenewalRestore => {
            card.stop_reasons.remove(StopReason::Expired);
            card.expiry_restore_at = None;
            card.retention_ends_at = None;
            card.retention_fee_next_at = None;
            events.push(CardEvent::of(
                card,
                at,
                event::card::RESTORED_AFTER_RENEWAL,
                schedule,
                Fen::ZERO,
            ));
        }
        Due::StageChange => {
            let kind = match card.stage {
                LifecycleStage::Test => {
                    card.stage = LifecycleStage::Silent;
                    event::card::SILENT_PERIOD_STARTED
                }
                LifecycleStage::Silent | LifecycleStage::Billing => {
                    // The rollover at this same instant charges the first month.
                    card.stage = LifecycleStage::Billing;
                    event::card::BILLING_STARTED
                }
            };
            card.stage_since = at;
            events.push(CardEvent::of(card, at, kind, schedule, Fen::ZERO));
        }
        Due::Expiry => {
            card.stop_reasons.insert(StopReason::Expired);
            let ends = policy.retention_ends_at(card.plan.validity_end);
            card.retention_ends_at = Some(ends);
            card.expiry_restore_at = None;
            events.push(CardEvent::of(
                card,
                at,
                event::card::EXPIRED,
                schedule,
                Fen::ZERO,
            ));
            if ends > at {
                let fee = policy.retention_fee;
                charge(
                    card,
                    fee,
                    at,
                    event::card::RETENTION_FEE_CHARGED,
                    schedule,
                    events,
                );
            }
            card.retention_fee_next_at = next_retention_fee_at(policy, card.plan.validity_end, at);
        }
        Due::Rollover => {
            card.cycle_start = policy.cycle_bounds(card.cycle_start).1;
            card.cycle_usage_bytes = 0;
            card.stop_reasons.remove(StopReason::OverQuota);
            card.stop_reasons.remove(StopReason::PoolExhausted);
            events.push(CardEvent::of(
                card,
                at,
                event::card::CYCLE_STARTED,
                schedule,
                Fen::ZERO,
            ));
            if card.stage == LifecycleStage::Billing
                && !card.stop_reasons.contains(StopReason::Expired)
            {
                let fee = card.plan.monthly_fee;
                charge(
                    card,
                    fee,
                    at,
                    event::card::MONTHLY_FEE_CHARGED,
                    schedule,
                    events,
                );
            }
        }
        Due::RetentionFee => {
            let fee = policy.retention_fee;
            charge(
                card,
                fee,
                at,
                event::card::RETENTION_FEE_CHARGED,
                schedule,
                events,
            );
            card.retention_fee_next_at = next_retention_fee_at(policy, card.plan.validity_end, at);
        }
        Due::Cancellation => {
            card.cancelled = true;
            card.retention_fee_next_at = None;
            events.push(CardEvent::of(
                card,
                at,
                event::card::CANCELLED,
                schedule,
                Fen::ZERO,
            ));
        }
    }
}

/// Applies every transition due up to `until`, in time order, each at its own time.
pub fn advance(card: &Card, policy: &CarrierPolicy, until: DateTime<Utc>) -> Transition {
    let mut next = card.clone();
    let mut events = Vec::new();
    for _ in 0..MAX_STEPS {
        match next_due(&next, policy) {
            Some((at, due)) if at <= until => apply(&mut next, policy, at, due, &mut events),
            _ => break,
        }
    }
    if !events.is_empty() {
        next.updated_at = until.max(card.updated_at);
    }
    next.next_due_at = next_due(&next, policy).map(|(t, _)| t);
    Transition {
        action: carrier_action(card, &next),
        changed: next != *card,
        card: next,
        events,
        usage_bytes: 0,
    }
}

/// Applies a request's rule to a card brought up to date first, so the rule sees the card as it
/// is at `now` even if the engine has not run yet. The result carries both parts' events.
pub fn at_now<F>(
    card: &Card,
    policy: &CarrierPolicy,
    now: DateTime<Utc>,
    rule: F,
) -> Result<Transition, RuleViolation>
where
    F: FnOnce(&Card) -> Result<Transition, RuleViolation>,
{
    let settled = advance(card, policy, now);
    let op = rule(&settled.card)?;
    let mut t = settled.then(card, op);
    t.card.next_due_at = next_due(&t.card, policy).map(|(at, _)| at);
    // A carrier action is a change even when the card's fields are not (a rebind).
    t.changed = t.card != *card || t.action.is_some();
    Ok(t)
}

/// What the carrier's report of this cycle's total usage does to the card: the test gift runs
/// out (billing starts), use in the silent period starts billing, and passing the quota stops a
/// card that has the auto-suspend option (without it the overage is recorded).
pub fn accrue_usage(
    card: &Card,
    policy: &CarrierPolicy,
    cycle_total: u64,
    now: DateTime<Utc>,
) -> Transition {
    // Usage never goes down within a cycle: a lower total is a stale read.
    if card.cancelled || cycle_total <= card.cycle_usage_bytes {
        return Transition::none(card);
    }
    let usage = Cause::Usage;
    let mut c = card.clone();
    let mut events = Vec::new();
    let delta = cycle_total.saturating_sub(card.cycle_usage_bytes);
    c.cycle_usage_bytes = cycle_total;
    let starts_billing = match c.stage {
        LifecycleStage::Test => {
            c.test_used_bytes = c.test_used_bytes.saturating_add(delta);
            (c.test_used_bytes >= policy.test_gift_bytes).then_some(event::card::TEST_GIFT_USED_UP)
        }
        LifecycleStage::Silent => (delta > 0).then_some(event::card::BILLING_STARTED),
        LifecycleStage::Billing => None,
    };
    if let Some(kind) = starts_billing {
        c.stage = LifecycleStage::Billing;
        c.stage_since = now;
        events.push(CardEvent::of(&c, now, kind, usage, Fen::ZERO));
        if !c.stop_reasons.contains(StopReason::Expired) {
            let fee = first_month_fee(&c, policy, now);
            charge(
                &mut c,
                fee,
                now,
                event::card::MONTHLY_FEE_CHARGED,
                usage,
                &mut events,
            );
        }
    }
    let quota = c.plan.monthly_quota_bytes;
    // A pooled card draws from its pool: the pool, not the card's own quota, decides.
    if c.pool.is_none() && c.stage == LifecycleStage::Billing && cycle_total >= quota {
        if c.plan.auto_suspend_over_quota && !c.stop_reasons.contains(StopReason::OverQuota) {
            c.stop_reasons.insert(StopReason::OverQuota);
            events.push(CardEvent::of(
                &c,
                now,
                event::card::OVER_QUOTA,
                usage,
                Fen::ZERO,
            ));
        } else if !c.plan.auto_suspend_over_quota && card.cycle_usage_bytes < quota {
            events.push(CardEvent::of(
                &c,
                now,
                event::card::OVERAGE_STARTED,
                usage,
                Fen::ZERO,
            ));
        }
    }
    c.updated_at = now;
    c.next_due_at = next_due(&c, policy).map(|(t, _)| t);
    Transition {
        action: carrier_action(card, &c),
        changed: true,
        card: c,
        events,
        usage_bytes: delta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::tests::{new_card, now};
    use crate::domain::rules::{self, open_card, NewCard};
    use crate::domain::{CardStatus, CarrierAction, CarrierId, RenewalRestore};
    use chrono::TimeZone;
    use chrono_tz::Asia::Shanghai;

    fn sh(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Shanghai
            .with_ymd_and_hms(y, m, d, 0, 0, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn policy(c: CarrierId) -> CarrierPolicy {
        CarrierPolicy::default_for(c)
    }

    fn open(n: NewCard) -> Card {
        let p = policy(n.carrier);
        open_card(n, &p, now())
    }

    fn kinds(t: &Transition) -> Vec<&'static str> {
        t.events.iter().map(|e| e.kind).collect()
    }

    fn charged(t: &Transition) -> i64 {
        t.events.iter().map(|e| e.amount.0).sum()
    }

    // §1 OVER_QUOTA ends automatically at the start of the next billing cycle.
    #[test]
    fn rule_rollover_resets_usage_clears_over_quota_and_restores_the_card() {
        let mut n = new_card(CarrierId::Mobile);
        n.balance = Fen(5000);
        n.cycle_usage_bytes = n.plan.monthly_quota_bytes;
        let card = open(n);
        assert!(card.stop_reasons.contains(StopReason::OverQuota));
        assert_eq!(card.next_due_at, Some(sh(2026, 12, 1)));

        let t = advance(&card, &policy(CarrierId::Mobile), sh(2026, 12, 1));
        assert_eq!(
            kinds(&t),
            vec![event::card::CYCLE_STARTED, event::card::MONTHLY_FEE_CHARGED]
        );
        assert_eq!(t.card.cycle_usage_bytes, 0);
        assert!(t.card.is_online());
        assert_eq!(t.action, Some(CarrierAction::Restore));
        assert_eq!(t.card.balance, Fen(3800));
        assert_eq!(t.card.next_due_at, Some(sh(2027, 1, 1)));
    }

    // §1 ARREARS: when the balance cannot cover a charge the card stops.
    #[test]
    fn rule_monthly_fee_the_balance_cannot_cover_stops_the_card_in_arrears() {
        let mut n = new_card(CarrierId::Mobile);
        n.balance = Fen(1000);
        let card = open(n);
        let t = advance(&card, &policy(CarrierId::Mobile), sh(2026, 12, 1));
        assert_eq!(t.card.balance, Fen(-200));
        assert!(t.card.stop_reasons.contains(StopReason::Arrears));
        assert_eq!(t.action, Some(CarrierAction::Stop));
    }

    // §3 table: China Unicom's cycle runs from the 27th.
    #[test]
    fn rule_unicom_cycle_rolls_over_on_the_27th() {
        let mut n = new_card(CarrierId::Unicom);
        n.iccid = crate::domain::Iccid::parse_any("89860117750006390067").unwrap();
        let card = open(n);
        let t = advance(&card, &policy(CarrierId::Unicom), sh(2026, 11, 26));
        assert!(!t.changed || t.events.is_empty());
        let t = advance(&card, &policy(CarrierId::Unicom), sh(2026, 11, 27));
        assert_eq!(t.events[0].at, sh(2026, 11, 27));
        assert_eq!(t.card.balance, Fen(-1200));
    }

    // §1 EXPIRED + §3: expiry → 停机保号, 5 yuan per started month for 3 months, then cancelled.
    #[test]
    fn rule_retention_fee_is_charged_per_started_month_and_the_window_end_cancels_the_card() {
        let mut n = new_card(CarrierId::Mobile);
        n.balance = Fen(10_000);
        n.plan.validity_end = now() + chrono::Duration::days(10);
        let card = open(n);
        let p = policy(CarrierId::Mobile);

        let t = advance(&card, &p, now() + chrono::Duration::days(10));
        assert_eq!(t.card.status(), CardStatus::Retained);
        assert_eq!(t.action, Some(CarrierAction::Stop));
        assert_eq!(t.card.balance, Fen(10_000 - 1200 - 500));

        let end = add_months(card.plan.validity_end, 3);
        let t = advance(&card, &p, end + chrono::Duration::days(1));
        let fees: Vec<_> = t
            .events
            .iter()
            .filter(|e| e.kind == event::card::RETENTION_FEE_CHARGED)
            .map(|e| (e.at, e.amount))
            .collect();
        assert_eq!(
            fees,
            vec![
                (card.plan.validity_end, Fen(-500)),
                (add_months(card.plan.validity_end, 1), Fen(-500)),
                (add_months(card.plan.validity_end, 2), Fen(-500)),
            ]
        );
        assert_eq!(t.card.status(), CardStatus::Cancelled);
        assert_eq!(t.action, Some(CarrierAction::Cancel));
        assert_eq!(t.events.last().unwrap().kind, event::card::CANCELLED);
        assert_eq!(t.events.last().unwrap().at, end);
        assert_eq!(
            t.card.balance,
            Fen(10_000 - 1200 - 1500),
            "no monthly fee on an expired plan"
        );
        assert_eq!(
            t.card.next_due_at, None,
            "nothing happens to a cancelled card"
        );
    }

    // §3: within the window the card can be renewed, is restored by the carrier's rule, and is
    // not cancelled.
    #[test]
    fn rule_renewal_inside_the_window_stops_retention_and_restores_by_the_carriers_rule() {
        for (carrier, restore) in [
            (CarrierId::Mobile, RenewalRestore::SameDay),
            (CarrierId::Unicom, RenewalRestore::NextCycle),
            (CarrierId::Telecom, RenewalRestore::Immediate),
        ] {
            let mut n = new_card(carrier);
            n.balance = Fen(50_000);
            n.plan.validity_end = now() + chrono::Duration::days(3);
            let card = open(n);
            let p = policy(carrier);
            let renew_at = now() + chrono::Duration::days(40);
            let t = rules::renew(&advance(&card, &p, renew_at).card, &p, 12, renew_at).unwrap();
            let later = advance(&t.card, &p, renew_at + chrono::Duration::days(200));
            assert!(!later.card.cancelled, "{carrier}");
            assert!(
                !later.card.stop_reasons.contains(StopReason::Expired),
                "{carrier}"
            );
            let restored_at = match restore {
                RenewalRestore::Immediate => {
                    assert!(t.card.is_online());
                    renew_at
                }
                _ => {
                    later
                        .events
                        .iter()
                        .find(|e| e.kind == event::card::RESTORED_AFTER_RENEWAL)
                        .unwrap()
                        .at
                }
            };
            let expected = match restore {
                RenewalRestore::Immediate => renew_at,
                // Renewed at 10:00: the same day, after the 2 h processing delay.
                RenewalRestore::SameDay => renew_at + chrono::Duration::hours(2),
                RenewalRestore::NextCycle => p.cycle_bounds(renew_at).1,
            };
            assert_eq!(restored_at, expected, "{carrier}");
            let retention_fees_after_renewal = later
                .events
                .iter()
                .filter(|e| e.kind == event::card::RETENTION_FEE_CHARGED)
                .count();
            assert_eq!(retention_fees_after_renewal, 0, "{carrier}");
        }
    }

    // §2: the test period ends after its days if the gift is not used up.
    #[test]
    fn rule_test_period_ends_in_the_silent_period() {
        let mut n = new_card(CarrierId::Mobile);
        n.stage = LifecycleStage::Test;
        let card = open(n);
        let t = advance(
            &card,
            &policy(CarrierId::Mobile),
            now() + chrono::Duration::days(30),
        );
        assert_eq!(t.card.stage, LifecycleStage::Silent);
        assert_eq!(charged(&t), 0, "no charges in test or silent periods");
    }

    // §2: using up the test gift starts billing at once, a common surprise source of arrears.
    #[test]
    fn rule_test_gift_used_up_starts_billing_and_charging() {
        let mut n = new_card(CarrierId::Mobile);
        n.stage = LifecycleStage::Test;
        let card = open(n);
        let p = policy(CarrierId::Mobile);
        let t = accrue_usage(&card, &p, p.test_gift_bytes / 2, now());
        assert_eq!(t.card.stage, LifecycleStage::Test);
        assert!(t.events.is_empty());
        let t = accrue_usage(&t.card, &p, p.test_gift_bytes, now());
        assert_eq!(
            kinds(&t),
            vec![
                event::card::TEST_GIFT_USED_UP,
                event::card::MONTHLY_FEE_CHARGED
            ]
        );
        assert_eq!(t.card.stage, LifecycleStage::Billing);
        assert_eq!(t.card.balance, Fen(-1200));
        assert!(t.card.stop_reasons.contains(StopReason::Arrears));
    }

    // §2 / §3 table: billing is forced after the silent period, from the next cycle start.
    #[test]
    fn rule_silent_period_ends_in_billing_from_the_next_cycle_start() {
        let mut n = new_card(CarrierId::Mobile);
        n.stage = LifecycleStage::Silent;
        n.plan.validity_end = now() + chrono::Duration::days(800);
        n.balance = Fen(100_000);
        let card = open(n);
        let t = advance(&card, &policy(CarrierId::Mobile), sh(2027, 6, 1));
        let started = t
            .events
            .iter()
            .find(|e| e.kind == event::card::BILLING_STARTED)
            .unwrap();
        // 180 days after 2026-11-25 is 2027-05-24: billing from 2027-06-01.
        assert_eq!(started.at, sh(2027, 6, 1));
        assert_eq!(charged(&t), -1200, "only the first billed month");

        let mut n = new_card(CarrierId::Unicom);
        n.stage = LifecycleStage::Silent;
        n.plan.validity_end = now() + chrono::Duration::days(800);
        let card = open(n);
        let t = advance(
            &card,
            &policy(CarrierId::Unicom),
            now() + chrono::Duration::days(400),
        );
        let started = t
            .events
            .iter()
            .find(|e| e.kind == event::card::BILLING_STARTED)
            .unwrap();
        assert!(started.at >= now() + chrono::Duration::days(360));
        assert!(started.at < now() + chrono::Duration::days(392));
    }

    #[test]
    fn use_during_the_silent_period_starts_billing() {
        let mut n = new_card(CarrierId::Mobile);
        n.stage = LifecycleStage::Silent;
        n.balance = Fen(5000);
        let card = open(n);
        let t = accrue_usage(&card, &policy(CarrierId::Mobile), 1, now());
        assert_eq!(t.card.stage, LifecycleStage::Billing);
        assert_eq!(t.card.balance, Fen(3800));
    }

    // §3 table: China Telecom charges the first month per day.
    #[test]
    fn rule_telecom_charges_the_first_billed_month_per_day() {
        let mut n = new_card(CarrierId::Telecom);
        n.stage = LifecycleStage::Test;
        let card = open(n);
        let p = policy(CarrierId::Telecom);
        let t = accrue_usage(&card, &p, p.test_gift_bytes, now());
        // 25 Nov 10:00 to 1 Dec: 6 started days of 30.
        assert_eq!(t.card.balance, Fen(-1200 * 6 / 30));
    }

    // §1 OVER_QUOTA starts when the quota is used up AND the card has the auto-suspend option.
    #[test]
    fn rule_usage_past_the_quota_stops_only_cards_with_auto_suspend() {
        let p = policy(CarrierId::Mobile);
        let card = open(new_card(CarrierId::Mobile));
        let quota = card.plan.monthly_quota_bytes;
        let t = accrue_usage(&card, &p, quota - 1, now());
        assert!(t.card.is_online() && t.events.is_empty());
        let t = accrue_usage(&t.card, &p, quota + 10, now());
        assert_eq!(kinds(&t), vec![event::card::OVER_QUOTA]);
        assert_eq!(t.action, Some(CarrierAction::Stop));

        let mut n = new_card(CarrierId::Mobile);
        n.plan.auto_suspend_over_quota = false;
        let card = open(n);
        let t = accrue_usage(&card, &p, quota + 10, now());
        assert_eq!(kinds(&t), vec![event::card::OVERAGE_STARTED]);
        assert!(t.card.is_online());
        let t = accrue_usage(&t.card, &p, quota + 20, now());
        assert!(
            t.events.is_empty(),
            "the overage is recorded once per cycle"
        );
    }

    #[test]
    fn usage_never_goes_down_within_a_cycle() {
        let p = policy(CarrierId::Mobile);
        let mut n = new_card(CarrierId::Mobile);
        n.stage = LifecycleStage::Test;
        let card = open(n);
        let t = accrue_usage(&card, &p, 60 << 20, now());
        // A stale read of 50 MiB arriving late must not make the next 60 MiB count twice.
        let stale = accrue_usage(&t.card, &p, 50 << 20, now());
        assert!(!stale.changed);
        let again = accrue_usage(&stale.card, &p, 60 << 20, now());
        assert!(!again.changed);
        assert_eq!(again.card.test_used_bytes, 60 << 20);
    }

    #[test]
    fn missed_months_are_caught_up_in_order() {
        let mut n = new_card(CarrierId::Mobile);
        n.balance = Fen(10_000);
        let card = open(n);
        let t = advance(&card, &policy(CarrierId::Mobile), sh(2027, 3, 15));
        let fees: Vec<_> = t
            .events
            .iter()
            .filter(|e| e.kind == event::card::MONTHLY_FEE_CHARGED)
            .map(|e| e.at)
            .collect();
        assert_eq!(
            fees,
            vec![
                sh(2026, 12, 1),
                sh(2027, 1, 1),
                sh(2027, 2, 1),
                sh(2027, 3, 1)
            ]
        );
        assert!(t.events.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(t.card.balance, Fen(10_000 - 4 * 1200));
        // Applying again changes nothing: each transition happens once.
        let again = advance(&t.card, &policy(CarrierId::Mobile), sh(2027, 3, 15));
        assert!(!again.changed);
    }

    #[test]
    fn a_request_sees_the_card_as_it_is_now() {
        let mut n = new_card(CarrierId::Telecom);
        n.plan.validity_end = now() + chrono::Duration::days(1);
        n.balance = Fen(10_000);
        let card = open(n);
        let p = policy(CarrierId::Telecom);
        let later = now() + chrono::Duration::days(2);
        let err = at_now(&card, &p, later, |c| rules::suspend(c, later)).unwrap_err();
        assert_eq!(err.reason(), "PLAN_EXPIRED");
        let t = at_now(&card, &p, later, |c| rules::renew(c, &p, 1, later)).unwrap();
        assert!(t.card.is_online());
        assert_eq!(
            t.action, None,
            "expired and restored within the call: the carrier keeps serving"
        );
        let kinds: Vec<_> = t.events.iter().map(|e| e.kind).collect();
        assert!(
            kinds.contains(&event::card::EXPIRED) && kinds.contains(&event::card::RENEWED),
            "{kinds:?}"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Advance(u32),
            Suspend,
            Resume,
            Recharge(i64),
            Renew(u32),
            Verify,
            Usage(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (1u32..2000).prop_map(Op::Advance),
                1 => Just(Op::Suspend),
                1 => Just(Op::Resume),
                2 => (1i64..3000).prop_map(Op::Recharge),
                1 => (1u32..4).prop_map(Op::Renew),
                1 => Just(Op::Verify),
                2 => (0u64..(3u64 << 30)).prop_map(Op::Usage),
            ]
        }

        fn carrier() -> impl Strategy<Value = CarrierId> {
            prop_oneof![
                Just(CarrierId::Mobile),
                Just(CarrierId::Unicom),
                Just(CarrierId::Telecom)
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            #[test]
            fn card_invariants_hold_for_any_history(
                carrier in carrier(),
                stage in 0u8..3,
                balance in -2000i64..5000,
                validity_days in -60i64..200,
                ops in proptest::collection::vec(op(), 1..60),
            ) {
                let p = policy(carrier);
                let mut n = new_card(carrier);
                n.balance = Fen(balance);
                n.stage = [LifecycleStage::Test, LifecycleStage::Silent, LifecycleStage::Billing][stage as usize];
                n.plan.validity_end = now() + chrono::Duration::days(validity_days);
                let mut card = open_card(n, &p, now());
                let start_balance = card.balance;
                let mut recorded = 0i64;
                let mut clock = now();
                for op in ops {
                    let was_cancelled = card.cancelled;
                    let result = match op {
                        Op::Advance(h) => {
                            clock += chrono::Duration::hours(i64::from(h));
                            Ok(advance(&card, &p, clock))
                        }
                        Op::Usage(b) => Ok(accrue_usage(&advance(&card, &p, clock).card, &p, b, clock)),
                        Op::Suspend => at_now(&card, &p, clock, |c| rules::suspend(c, clock)),
                        Op::Resume => at_now(&card, &p, clock, |c| rules::resume(c, clock)),
                        Op::Recharge(a) => at_now(&card, &p, clock, |c| rules::recharge(c, &p, Fen(a), clock)),
                        Op::Renew(m) => at_now(&card, &p, clock, |c| rules::renew(c, &p, m, clock)),
                        Op::Verify => at_now(&card, &p, clock, |c| rules::verify_real_name(c, clock)),
                    };
                    if let Op::Usage(_) = op {
                        // accrue_usage ran on an advanced copy: count the advance's events too.
                        let settled = advance(&card, &p, clock);
                        recorded += settled.events.iter().map(|e| e.amount.0).sum::<i64>();
                    }
                    if let Ok(t) = result {
                        recorded += t.events.iter().map(|e| e.amount.0).sum::<i64>();
                        prop_assert!(t.events.windows(2).all(|w| w[0].at <= w[1].at));
                        card = t.card;
                    } else {
                        prop_assert!(!matches!(op, Op::Advance(_) | Op::Usage(_)));
                    }
                    // ACTIVE iff no stop reason (and not cancelled).
                    prop_assert_eq!(card.status() == CardStatus::Active, card.stop_reasons.is_empty() && !card.cancelled);
                    prop_assert_eq!(card.is_online(), card.status() == CardStatus::Active);
                    // CANCELLED is terminal.
                    if was_cancelled {
                        prop_assert!(card.cancelled);
                    }
                    // Every fen of the balance is explained by a recorded charge or recharge.
                    prop_assert_eq!(card.balance.0 - start_balance.0, recorded);
                    // Nothing overdue is left behind.
                    if let Some(due) = card.next_due_at {
                        prop_assert!(due > clock || matches!(op, Op::Usage(_)) && due > clock - chrono::Duration::hours(1));
                    }
                }
            }
        }
    }
}
