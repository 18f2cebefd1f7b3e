//! Shared data pools (流量池) as pure rules: a pool's cycle, top-ups and exhaustion, and what
//! joining, leaving and an exhausted pool do to a member card.
//!
//! A pool's usage is never stored: it is the sum of its members' usage in the pool's current
//! cycle, read from the cards. The pool keeps only what cannot be derived: its quota, this
//! cycle's top-ups, and whether it was last found exhausted (the state its members must follow).
//!
//! Pool ids are per customer: a pool is the pair (customer, id), and a card is a member of a
//! pool when it belongs to the pool's customer and names the pool's id.

use chrono::{DateTime, Utc};

use super::alerts::{self, AlertRules};
use super::event;
use super::event::{CardEvent, Cause, PoolEvent};
use super::rules::{carrier_action, RuleViolation, Transition};
use super::{Card, CarrierId, Fen, LifecycleStage, StopReason};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub id: String,
    pub name: String,
    pub carrier: CarrierId,
    pub customer_id: String,
    /// The shared monthly quota.
    pub quota_bytes: u64,
    /// Stop every member with POOL_EXHAUSTED when the pool is used up.
    pub auto_suspend: bool,
    pub cycle_start: DateTime<Utc>,
    /// Data added by top-ups in this cycle.
    pub topup_bytes: u64,
    pub exhausted: bool,
    /// Pool usage alerts already sent this cycle.
    pub alert_keys: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl Pool {
    /// Whether `card` is one of this pool's members: the same customer and the pool's id.
    pub fn has_member(&self, card: &Card) -> bool {
        card.customer_id == self.customer_id && card.pool.as_deref() == Some(self.id.as_str())
    }

    pub fn capacity(&self) -> u64 {
        self.quota_bytes.saturating_add(self.topup_bytes)
    }

    /// Whether members must be stopped now.
    pub fn stops_members(&self) -> bool {
        self.exhausted && self.auto_suspend
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUpdate {
    pub pool: Pool,
    pub events: Vec<PoolEvent>,
    pub changed: bool,
}

/// Largest single top-up: 1 PiB, far above any real pool, low enough that sums cannot overflow.
pub const MAX_TOPUP_BYTES: u64 = 1 << 50;

/// Brings a pool to `now`: starts the carrier's current cycle if it began after the pool's (the
/// top-ups of the old cycle lapse), then compares `used` (the members' usage in `cycle_start`)
/// with the capacity. Exhaustion and its end are events; so is each usage alert.
pub fn settle(
    pool: &Pool,
    cycle_start: DateTime<Utc>,
    used: u64,
    rules: &AlertRules,
    now: DateTime<Utc>,
    cause: Cause,
) -> PoolUpdate {
    let mut p = pool.clone();
    let mut events = Vec::new();
    let event = |p: &Pool, kind, cause, alert| PoolEvent {
        kind,
        cause,
        at: now,
        used_bytes: used,
        capacity_bytes: p.capacity(),
        alert,
    };
    let mut cause = cause;
    if cycle_start > p.cycle_start {
        p.cycle_start = cycle_start;
        p.topup_bytes = 0;
        cause = Cause::Schedule;
        events.push(event(&p, event::pool::CYCLE_STARTED, cause, None));
    }
    let exhausted = used >= p.capacity();
    if exhausted != p.exhausted {
        p.exhausted = exhausted;
        let kind = if exhausted {
            event::pool::EXHAUSTED
        } else {
            event::pool::RESTORED
        };
        events.push(event(&p, kind, cause, None));
    }
    let capacity = p.capacity();
    if let Some(d) = alerts::evaluate_pool(&mut p.alert_keys, p.cycle_start, used, capacity, rules)
    {
        events.push(event(&p, event::alert::POOL_USAGE, cause, Some(d)));
    }
    let changed = p != *pool;
    if changed {
        p.updated_at = now;
    }
    PoolUpdate {
        pool: p,
        events,
        changed,
    }
}

/// Adds `bytes` to this cycle's capacity. The caller settles the pool afterwards, which ends an
/// exhaustion the top-up covers.
pub fn top_up(pool: &Pool, bytes: u64, used: u64, now: DateTime<Utc>) -> (Pool, PoolEvent) {
    let mut p = pool.clone();
    p.topup_bytes = p.topup_bytes.saturating_add(bytes);
    p.updated_at = now;
    let e = PoolEvent {
        kind: event::pool::TOPPED_UP,
        cause: Cause::Request,
        at: now,
        used_bytes: used,
        capacity_bytes: p.capacity(),
        alert: None,
    };
    (p, e)
}

fn card_transition(before: &Card, after: Card, events: Vec<CardEvent>) -> Transition {
    Transition {
        action: carrier_action(before, &after),
        changed: after != *before,
        card: after,
        events,
        usage_bytes: 0,
    }
}

/// Makes a member follow its pool: stopped with POOL_EXHAUSTED while the pool stops its members,
/// restored (if nothing else stops it) once it does not. A card not in `pool` loses the reason.
pub fn follow(card: &Card, pool: Option<&Pool>, now: DateTime<Utc>, cause: Cause) -> Transition {
    let member_of = pool.filter(|p| p.has_member(card));
    let stop = member_of.is_some_and(Pool::stops_members) && !card.cancelled;
    let has = card.stop_reasons.contains(StopReason::PoolExhausted);
    if stop == has {
        return Transition::none(card);
    }
    let mut c = card.clone();
    let kind = if stop {
        c.stop_reasons.insert(StopReason::PoolExhausted);
        event::card::POOL_EXHAUSTED
    } else {
        c.stop_reasons.remove(StopReason::PoolExhausted);
        event::card::POOL_RESTORED
    };
    c.updated_at = now;
    let events = vec![CardEvent::of(&c, now, kind, cause, Fen::ZERO)];
    card_transition(card, c, events)
}

/// A card joins `pool`: it must be of the pool's carrier and customer, not cancelled and not in
/// another pool. From now on it draws from the pool, so its own over-quota stop no longer applies.
pub fn join(card: &Card, pool: &Pool, now: DateTime<Utc>) -> Result<Transition, RuleViolation> {
    if card.cancelled {
        return Err(RuleViolation::CardCancelled);
    }
    if card.carrier != pool.carrier {
        return Err(RuleViolation::PoolCarrierMismatch {
            card: card.carrier,
            pool: pool.carrier,
        });
    }
    if card.customer_id != pool.customer_id {
        return Err(RuleViolation::PoolCustomerMismatch);
    }
    match card.pool.as_deref() {
        Some(p) if p == pool.id => return Ok(Transition::none(card)),
        Some(other) => return Err(RuleViolation::InAnotherPool(other.to_string())),
        None => {}
    }
    let mut c = card.clone();
    c.pool = Some(pool.id.clone());
    c.stop_reasons.remove(StopReason::OverQuota);
    c.updated_at = now;
    let mut events = vec![CardEvent::of(
        &c,
        now,
        event::card::POOL_JOINED,
        Cause::Request,
        Fen::ZERO,
    )];
    let follow = follow(&c, Some(pool), now, Cause::Request);
    events.extend(follow.events);
    Ok(card_transition(card, follow.card, events))
}

/// A card leaves `pool`: the pool's stop no longer applies and its own quota does again. A card
/// of another customer is never a member, even of a pool of its own customer with the same id.
pub fn leave(card: &Card, pool: &Pool, now: DateTime<Utc>) -> Result<Transition, RuleViolation> {
    if card.customer_id != pool.customer_id {
        return Err(RuleViolation::PoolCustomerMismatch);
    }
    match card.pool.as_deref() {
        None => return Ok(Transition::none(card)),
        Some(p) if p != pool.id => return Err(RuleViolation::InAnotherPool(p.to_string())),
        Some(_) => {}
    }
    let mut c = card.clone();
    c.pool = None;
    c.stop_reasons.remove(StopReason::PoolExhausted);
    if c.stage == LifecycleStage::Billing
        && c.plan.auto_suspend_over_quota
        && c.is_over_quota()
        && !c.cancelled
    {
        c.stop_reasons.insert(StopReason::OverQuota);
    }
    c.updated_at = now;
    let events = vec![CardEvent::of(
        &c,
        now,
        event::card::POOL_LEFT,
        Cause::Request,
        Fen::ZERO,
    )];
    Ok(card_transition(card, c, events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::open_card;
    use crate::domain::rules::tests::{new_card, now};
    use crate::domain::{CarrierAction, CarrierPolicy};

    fn pool() -> Pool {
        Pool {
            id: "p1".into(),
            name: "fleet".into(),
            carrier: CarrierId::Mobile,
            customer_id: "acme".into(),
            quota_bytes: 3000,
            auto_suspend: true,
            cycle_start: now(),
            topup_bytes: 0,
            exhausted: false,
            alert_keys: vec![],
            created_at: now(),
            updated_at: now(),
            version: 1,
        }
    }

    fn card() -> Card {
        open_card(
            new_card(CarrierId::Mobile),
            &CarrierPolicy::default_for(CarrierId::Mobile),
            now(),
        )
    }

    fn kinds(u: &PoolUpdate) -> Vec<&'static str> {
        u.events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn rule_pool_used_up_stops_every_member_with_pool_exhausted() {
        let rules = AlertRules::default();
        let u = settle(&pool(), now(), 3000, &rules, now(), Cause::Usage);
        assert!(u.pool.exhausted && u.pool.stops_members());
        assert_eq!(
            kinds(&u),
            vec![event::pool::EXHAUSTED, event::alert::POOL_USAGE]
        );
        let joined = join(&card(), &pool(), now()).unwrap().card;
        let t = follow(&joined, Some(&u.pool), now(), Cause::Usage);
        assert!(t.card.stop_reasons.contains(StopReason::PoolExhausted));
        assert_eq!(t.action, Some(CarrierAction::Stop));
        // Without auto-suspend the pool is exhausted but nobody stops.
        let lenient = Pool {
            auto_suspend: false,
            ..pool()
        };
        let u = settle(&lenient, now(), 3000, &rules, now(), Cause::Usage);
        assert!(u.pool.exhausted && !u.pool.stops_members());
    }

    #[test]
    fn rule_pool_top_up_restores_the_members() {
        let rules = AlertRules::default();
        let exhausted = settle(&pool(), now(), 3000, &rules, now(), Cause::Usage).pool;
        let (topped, e) = top_up(&exhausted, 1000, 3000, now());
        assert_eq!(e.capacity_bytes, 4000);
        let u = settle(&topped, now(), 3000, &rules, now(), Cause::Request);
        assert!(!u.pool.exhausted);
        assert_eq!(kinds(&u), vec![event::pool::RESTORED]);
        let mut member = join(&card(), &pool(), now()).unwrap().card;
        member.stop_reasons.insert(StopReason::PoolExhausted);
        let t = follow(&member, Some(&u.pool), now(), Cause::Request);
        assert!(t.card.is_online());
        assert_eq!(t.action, Some(CarrierAction::Restore));
    }

    #[test]
    fn rule_pool_next_cycle_resets_usage_and_lapses_top_ups() {
        let rules = AlertRules::default();
        let exhausted = settle(&pool(), now(), 3000, &rules, now(), Cause::Usage).pool;
        let (topped, _) = top_up(&exhausted, 500, 3000, now());
        let next = now() + chrono::Duration::days(31);
        // The members have not used anything in the new cycle yet.
        let u = settle(&topped, next, 0, &rules, next, Cause::Schedule);
        assert_eq!(u.pool.topup_bytes, 0);
        assert_eq!(u.pool.cycle_start, next);
        assert!(!u.pool.exhausted);
        assert_eq!(
            kinds(&u),
            vec![event::pool::CYCLE_STARTED, event::pool::RESTORED]
        );
    }

    #[test]
    fn settling_twice_changes_nothing_the_second_time() {
        let rules = AlertRules::default();
        let u = settle(&pool(), now(), 2900, &rules, now(), Cause::Usage);
        assert!(u.changed);
        let again = settle(&u.pool, now(), 2900, &rules, now(), Cause::Usage);
        assert!(!again.changed && again.events.is_empty());
    }

    #[test]
    fn rule_pool_refuses_cards_of_another_carrier_or_customer() {
        let mut other = card();
        other.carrier = CarrierId::Unicom;
        assert!(matches!(
            join(&other, &pool(), now()),
            Err(RuleViolation::PoolCarrierMismatch { .. })
        ));
        let mut other = card();
        other.customer_id = "globex".into();
        assert_eq!(
            join(&other, &pool(), now()),
            Err(RuleViolation::PoolCustomerMismatch)
        );
        let mut other = card();
        other.pool = Some("p2".into());
        assert_eq!(
            join(&other, &pool(), now()),
            Err(RuleViolation::InAnotherPool("p2".into()))
        );
    }

    #[test]
    fn joining_lifts_the_own_quota_stop_and_leaving_brings_it_back() {
        let mut c = card();
        c.cycle_usage_bytes = c.plan.monthly_quota_bytes;
        c.stop_reasons.insert(StopReason::OverQuota);
        let joined = join(&c, &pool(), now()).unwrap();
        assert!(joined.card.is_online());
        assert_eq!(joined.action, Some(CarrierAction::Restore));
        let left = leave(&joined.card, &pool(), now()).unwrap();
        assert!(left.card.stop_reasons.contains(StopReason::OverQuota));
        assert_eq!(left.card.pool, None);
        // Leaving twice is a no-op, not an error.
        assert!(!leave(&left.card, &pool(), now()).unwrap().changed);
    }

    #[test]
    fn a_pool_of_the_same_id_of_another_customer_is_another_pool() {
        let rules = AlertRules::default();
        let ours = settle(&pool(), now(), 3000, &rules, now(), Cause::Usage).pool;
        assert!(ours.stops_members());
        // globex's card names pool "p1" too: globex's own pool, not acme's.
        let mut theirs = card();
        theirs.customer_id = "globex".into();
        theirs.pool = Some("p1".into());
        assert!(!ours.has_member(&theirs));
        let t = follow(&theirs, Some(&ours), now(), Cause::Usage);
        assert!(
            !t.changed && t.card.is_online(),
            "acme's exhaustion stops no globex card"
        );
        assert_eq!(
            leave(&theirs, &ours, now()),
            Err(RuleViolation::PoolCustomerMismatch),
            "acme's pool cannot take globex's card out of globex's pool"
        );
    }
}
