//! Alert rules (per customer, with defaults) and their pure evaluation: which thresholds a card
//! or a pool has reached, each fired once per period.
//!
//! "Once per period" is kept on the subject itself: every alert sent leaves a key
//! `rule:threshold@period` in the card's (or pool's) `alert_keys`, written in the same versioned
//! update as the alert event. The period is the billing cycle for usage and balance, the validity
//! end for plan expiry and the retention end for cancellation, so a rollover, a renewal or a new
//! retention window re-arms exactly the alerts it should, and a sync that finds the same usage
//! again finds the key and stays quiet.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::alert as kind;
use super::event::{CardEvent, Cause};
use super::{Card, LifecycleStage, StopReason};

/// Which alerts a customer wants. Thresholds are per mille of a quota and days before a date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRules {
    pub card_usage_permille: Vec<u32>,
    pub pool_usage_permille: Vec<u32>,
    pub validity_days: Vec<u32>,
    pub balance_below_next_fee: bool,
    pub retention_cancel_days: Vec<u32>,
    pub card_stopped: bool,
    pub card_restored: bool,
}

impl Default for AlertRules {
    fn default() -> AlertRules {
        AlertRules {
            card_usage_permille: vec![800, 900, 1000],
            pool_usage_permille: vec![800, 900, 1000],
            validity_days: vec![30, 7, 1],
            balance_below_next_fee: true,
            retention_cancel_days: vec![30, 7],
            card_stopped: true,
            card_restored: true,
        }
    }
}

/// Largest per-mille threshold accepted (5x the quota) and longest warning in days.
pub const MAX_PERMILLE: u32 = 5000;
pub const MAX_DAYS: u32 = 366;
/// At most this many thresholds per rule.
pub const MAX_THRESHOLDS: usize = 10;

impl AlertRules {
    /// Checks the thresholds; Err names the field and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let lists: [(&'static str, &Vec<u32>, u32); 4] = [
            (
                "card_usage_permille",
                &self.card_usage_permille,
                MAX_PERMILLE,
            ),
            (
                "pool_usage_permille",
                &self.pool_usage_permille,
                MAX_PERMILLE,
            ),
            ("validity_days", &self.validity_days, MAX_DAYS),
            (
                "retention_cancel_days",
                &self.retention_cancel_days,
                MAX_DAYS,
            ),
        ];
        for (field, values, max) in lists {
            if values.len() > MAX_THRESHOLDS {
                return Err((field, format!("at most {MAX_THRESHOLDS} thresholds")));
            }
            if let Some(v) = values.iter().find(|v| **v == 0 || **v > max) {
                return Err((field, format!("{v} is outside 1..={max}")));
            }
            let mut sorted = values.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != values.len() {
                return Err((field, "thresholds must not repeat".into()));
            }
        }
        Ok(())
    }
}

/// What an alert event says beyond the card's state: the rule, the threshold it reached and the
/// value that reached it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertDetail {
    pub rule: String,
    pub threshold: i64,
    pub value: i64,
    /// permille, days or fen.
    pub unit: String,
}

/// Per mille of `quota` that `used` is, saturating (a zero quota is always 1000).
pub fn permille(used: u64, quota: u64) -> u64 {
    if quota == 0 {
        return 1000;
    }
    u64::try_from(u128::from(used) * 1000 / u128::from(quota)).unwrap_or(u64::MAX)
}

/// Whole days from `now` until `at`, rounded up (a plan ending in 3 hours ends "in 1 day").
fn days_until(now: DateTime<Utc>, at: DateTime<Utc>) -> i64 {
    let secs = (at - now).num_seconds();
    (secs + 86_399).div_euclid(86_400)
}

fn key(rule: &str, threshold: u32, period: DateTime<Utc>) -> String {
    format!("{rule}:{threshold}@{}", period.timestamp_millis())
}

/// The keys of the periods that are still current; the others can never match again.
fn prune(keys: &[String], current: &[(&str, Option<DateTime<Utc>>)]) -> Vec<String> {
    keys.iter()
        .filter(|k| {
            current.iter().any(|(rule, period)| {
                period.is_some_and(|p| {
                    k.starts_with(&format!("{rule}:"))
                        && k.ends_with(&format!("@{}", p.timestamp_millis()))
                })
            })
        })
        .cloned()
        .collect()
}

/// Thresholds `value` has reached ("at least" for `rising`, "at most" otherwise) whose key is not
/// yet in `keys`. Returns the one to report (the most severe) and records all of them, so one
/// sync that jumps from 70% to 95% sends one alert, not two.
fn reached(
    keys: &mut Vec<String>,
    rule: &str,
    thresholds: &[u32],
    value: i64,
    rising: bool,
    period: DateTime<Utc>,
) -> Option<u32> {
    let new: Vec<u32> = thresholds
        .iter()
        .copied()
        .filter(|t| {
            let hit = if rising {
                value >= i64::from(*t)
            } else {
                value <= i64::from(*t)
            };
            hit && !keys.contains(&key(rule, *t, period))
        })
        .collect();
    let report = if rising {
        new.iter().max().copied()
    } else {
        new.iter().min().copied()
    }?;
    keys.extend(new.iter().map(|t| key(rule, *t, period)));
    Some(report)
}

fn alert(
    card: &Card,
    at: DateTime<Utc>,
    kind: &'static str,
    cause: Cause,
    detail: AlertDetail,
) -> CardEvent {
    let mut e = CardEvent::of(card, at, kind, cause, super::Fen::ZERO);
    e.alert = Some(detail);
    e
}

fn detail(rule: &str, threshold: i64, value: i64, unit: &str) -> AlertDetail {
    AlertDetail {
        rule: rule.into(),
        threshold,
        value,
        unit: unit.into(),
    }
}

/// The alerts a card's new state calls for. `before` is the card before the change being
/// written (None when only time passed); `card`'s `alert_keys` are updated to match. Stopped and
/// restored alerts follow every change of service; the others fire once per period.
pub fn evaluate_card(
    before: Option<&Card>,
    card: &mut Card,
    rules: &AlertRules,
    now: DateTime<Utc>,
    cause: Cause,
) -> Vec<CardEvent> {
    let mut events = Vec::new();
    if let Some(b) = before {
        if rules.card_stopped && b.is_online() && !card.is_online() {
            let reasons = i64::from(card.stop_reasons.bits());
            events.push(alert(
                card,
                now,
                kind::CARD_STOPPED,
                cause,
                detail("card_stopped", 0, reasons, "stop_reasons"),
            ));
        }
        if rules.card_restored && !b.is_online() && card.is_online() {
            events.push(alert(
                card,
                now,
                kind::CARD_RESTORED,
                cause,
                detail("card_restored", 0, 0, "stop_reasons"),
            ));
        }
    }
    let expired = card.stop_reasons.contains(StopReason::Expired);
    let mut keys = prune(
        &card.alert_keys,
        &[
            ("card_usage", Some(card.cycle_start)),
            ("balance", Some(card.cycle_start)),
            ("validity", Some(card.plan.validity_end)),
            ("retention", card.retention_ends_at),
        ],
    );
    if !card.cancelled {
        // A pooled card's own quota does not apply; its pool has the usage alerts.
        if card.pool.is_none() && card.stage == LifecycleStage::Billing {
            let pm = permille(card.cycle_usage_bytes, card.plan.monthly_quota_bytes);
            let pm = i64::try_from(pm).unwrap_or(i64::MAX);
            if let Some(t) = reached(
                &mut keys,
                "card_usage",
                &rules.card_usage_permille,
                pm,
                true,
                card.cycle_start,
            ) {
                events.push(alert(
                    card,
                    now,
                    kind::CARD_USAGE,
                    cause,
                    detail("card_usage", i64::from(t), pm, "permille"),
                ));
            }
        }
        if !expired && card.plan.validity_end > now {
            let days = days_until(now, card.plan.validity_end);
            if let Some(t) = reached(
                &mut keys,
                "validity",
                &rules.validity_days,
                days,
                false,
                card.plan.validity_end,
            ) {
                events.push(alert(
                    card,
                    now,
                    kind::VALIDITY_ENDING,
                    Cause::Schedule,
                    detail("validity", i64::from(t), days, "days"),
                ));
            }
        }
        let fee = card.plan.monthly_fee;
        if rules.balance_below_next_fee
            && !expired
            && card.stage == LifecycleStage::Billing
            && card.balance < fee
        {
            // One threshold per cycle: the next fee is charged at the next rollover.
            let short = i64::from(card.balance < fee);
            if reached(&mut keys, "balance", &[1], short, true, card.cycle_start).is_some() {
                events.push(alert(
                    card,
                    now,
                    kind::BALANCE_LOW,
                    cause,
                    detail("balance", fee.0, card.balance.0, "fen"),
                ));
            }
        }
        if let Some(ends) = card.retention_ends_at.filter(|e| *e > now) {
            let days = days_until(now, ends);
            if let Some(t) = reached(
                &mut keys,
                "retention",
                &rules.retention_cancel_days,
                days,
                false,
                ends,
            ) {
                events.push(alert(
                    card,
                    now,
                    kind::RETENTION_CANCEL,
                    Cause::Schedule,
                    detail("retention", i64::from(t), days, "days"),
                ));
            }
        }
    }
    keys.sort();
    card.alert_keys = keys;
    events
}

/// The pool usage alert due at `used` bytes of a `capacity`, if any; updates `keys`.
pub fn evaluate_pool(
    keys: &mut Vec<String>,
    cycle_start: DateTime<Utc>,
    used: u64,
    capacity: u64,
    rules: &AlertRules,
) -> Option<AlertDetail> {
    let mut kept = prune(keys, &[("pool_usage", Some(cycle_start))]);
    let pm = i64::try_from(permille(used, capacity)).unwrap_or(i64::MAX);
    let t = reached(
        &mut kept,
        "pool_usage",
        &rules.pool_usage_permille,
        pm,
        true,
        cycle_start,
    );
    kept.sort();
    *keys = kept;
    t.map(|t| detail("pool_usage", i64::from(t), pm, "permille"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::open_card;
    use crate::domain::rules::tests::{new_card, now};
    use crate::domain::{CarrierId, CarrierPolicy, Fen};

    const GIB: u64 = 1 << 30;

    fn card() -> Card {
        let mut n = new_card(CarrierId::Mobile);
        n.plan.monthly_quota_bytes = GIB;
        n.plan.monthly_fee = Fen(1000);
        n.plan.validity_end = now() + chrono::Duration::days(365);
        n.balance = Fen(10_000);
        open_card(n, &CarrierPolicy::default_for(CarrierId::Mobile), now())
    }

    fn kinds(events: &[CardEvent]) -> Vec<(&'static str, i64)> {
        events
            .iter()
            .map(|e| (e.kind, e.alert.as_ref().map_or(0, |a| a.threshold)))
            .collect()
    }

    fn use_permille(c: &mut Card, pm: u64) {
        c.cycle_usage_bytes = GIB * pm / 1000;
    }

    #[test]
    fn rule_usage_alert_fires_once_per_threshold_per_cycle() {
        let rules = AlertRules::default();
        let mut c = card();
        use_permille(&mut c, 810);
        let first = evaluate_card(None, &mut c, &rules, now(), Cause::Usage);
        assert_eq!(kinds(&first), vec![(kind::CARD_USAGE, 800)]);
        use_permille(&mut c, 850);
        assert!(evaluate_card(None, &mut c, &rules, now(), Cause::Usage).is_empty());
        use_permille(&mut c, 905);
        let third = evaluate_card(None, &mut c, &rules, now(), Cause::Usage);
        assert_eq!(kinds(&third), vec![(kind::CARD_USAGE, 900)]);
        assert!(evaluate_card(None, &mut c, &rules, now(), Cause::Usage).is_empty());
    }

    #[test]
    fn rule_usage_alerts_rearm_at_rollover() {
        let rules = AlertRules::default();
        let mut c = card();
        use_permille(&mut c, 950);
        assert_eq!(
            kinds(&evaluate_card(None, &mut c, &rules, now(), Cause::Usage)),
            vec![(kind::CARD_USAGE, 900)]
        );
        // A new cycle: the old cycle's keys no longer count.
        c.cycle_start += chrono::Duration::days(31);
        use_permille(&mut c, 820);
        let later = now() + chrono::Duration::days(31);
        assert_eq!(
            kinds(&evaluate_card(None, &mut c, &rules, later, Cause::Usage)),
            vec![(kind::CARD_USAGE, 800)]
        );
        assert_eq!(
            c.alert_keys.len(),
            1,
            "stale keys are pruned: {:?}",
            c.alert_keys
        );
    }

    #[test]
    fn a_jump_over_two_thresholds_sends_the_higher_one_only() {
        let mut c = card();
        use_permille(&mut c, 1200);
        let events = evaluate_card(None, &mut c, &AlertRules::default(), now(), Cause::Usage);
        assert_eq!(kinds(&events), vec![(kind::CARD_USAGE, 1000)]);
        use_permille(&mut c, 1300);
        assert!(
            evaluate_card(None, &mut c, &AlertRules::default(), now(), Cause::Usage).is_empty()
        );
    }

    #[test]
    fn pooled_cards_have_no_card_usage_alerts() {
        let mut c = card();
        c.pool = Some("p1".into());
        use_permille(&mut c, 990);
        assert!(
            evaluate_card(None, &mut c, &AlertRules::default(), now(), Cause::Usage).is_empty()
        );
    }

    #[test]
    fn rule_validity_alerts_fire_at_30_7_and_1_days_and_rearm_after_renewal() {
        let rules = AlertRules::default();
        let mut c = card();
        c.plan.validity_end = now() + chrono::Duration::days(20);
        let events = evaluate_card(None, &mut c, &rules, now(), Cause::Schedule);
        assert_eq!(kinds(&events), vec![(kind::VALIDITY_ENDING, 30)]);
        let later = now() + chrono::Duration::days(14);
        assert_eq!(
            kinds(&evaluate_card(None, &mut c, &rules, later, Cause::Schedule)),
            vec![(kind::VALIDITY_ENDING, 7)]
        );
        assert!(evaluate_card(None, &mut c, &rules, later, Cause::Schedule).is_empty());
        let last_day = c.plan.validity_end - chrono::Duration::hours(3);
        assert_eq!(
            kinds(&evaluate_card(
                None,
                &mut c,
                &rules,
                last_day,
                Cause::Schedule
            )),
            vec![(kind::VALIDITY_ENDING, 1)]
        );
        // Renewed: a new validity end is a new period.
        c.plan.validity_end += chrono::Duration::days(25);
        assert_eq!(
            kinds(&evaluate_card(
                None,
                &mut c,
                &rules,
                last_day,
                Cause::Schedule
            )),
            vec![(kind::VALIDITY_ENDING, 30)]
        );
    }

    #[test]
    fn rule_balance_below_next_fee_alerts_once_per_cycle() {
        let rules = AlertRules::default();
        let mut c = card();
        c.balance = Fen(999);
        let events = evaluate_card(None, &mut c, &rules, now(), Cause::Request);
        assert_eq!(kinds(&events), vec![(kind::BALANCE_LOW, 1000)]);
        assert!(evaluate_card(None, &mut c, &rules, now(), Cause::Request).is_empty());
        c.cycle_start += chrono::Duration::days(31);
        assert_eq!(
            kinds(&evaluate_card(None, &mut c, &rules, now(), Cause::Schedule)),
            vec![(kind::BALANCE_LOW, 1000)]
        );
    }

    #[test]
    fn rule_retained_number_cancellation_alerts_at_30_and_7_days() {
        let rules = AlertRules::default();
        let mut c = card();
        c.stop_reasons.insert(StopReason::Expired);
        c.retention_ends_at = Some(now() + chrono::Duration::days(25));
        assert_eq!(
            kinds(&evaluate_card(None, &mut c, &rules, now(), Cause::Schedule)),
            vec![(kind::RETENTION_CANCEL, 30)]
        );
        let later = now() + chrono::Duration::days(19);
        assert_eq!(
            kinds(&evaluate_card(None, &mut c, &rules, later, Cause::Schedule)),
            vec![(kind::RETENTION_CANCEL, 7)]
        );
    }

    #[test]
    fn rule_card_stopped_and_restored_alert_on_every_change_of_service() {
        let rules = AlertRules::default();
        let before = card();
        let mut stopped = before.clone();
        stopped.stop_reasons.insert(StopReason::Manual);
        let events = evaluate_card(Some(&before), &mut stopped, &rules, now(), Cause::Request);
        assert_eq!(kinds(&events), vec![(kind::CARD_STOPPED, 0)]);
        let mut restored = stopped.clone();
        restored.stop_reasons.remove(StopReason::Manual);
        let events = evaluate_card(Some(&stopped), &mut restored, &rules, now(), Cause::Request);
        assert_eq!(kinds(&events), vec![(kind::CARD_RESTORED, 0)]);
        let off = AlertRules {
            card_stopped: false,
            ..AlertRules::default()
        };
        let mut again = before.clone();
        again.stop_reasons.insert(StopReason::Manual);
        assert!(evaluate_card(Some(&before), &mut again, &off, now(), Cause::Request).is_empty());
    }

    #[test]
    fn pool_usage_alerts_fire_once_per_cycle() {
        let rules = AlertRules::default();
        let mut keys = Vec::new();
        let cycle = now();
        assert_eq!(
            evaluate_pool(&mut keys, cycle, 81, 100, &rules).map(|d| d.threshold),
            Some(800)
        );
        assert_eq!(evaluate_pool(&mut keys, cycle, 85, 100, &rules), None);
        assert_eq!(
            evaluate_pool(&mut keys, cycle, 100, 100, &rules).map(|d| d.threshold),
            Some(1000)
        );
        let next = cycle + chrono::Duration::days(30);
        assert_eq!(
            evaluate_pool(&mut keys, next, 80, 100, &rules).map(|d| d.threshold),
            Some(800)
        );
    }

    #[test]
    fn rules_are_validated_field_by_field() {
        let mut r = AlertRules::default();
        assert!(r.validate().is_ok());
        r.validity_days = vec![7, 7];
        assert_eq!(r.validate().map_err(|e| e.0), Err("validity_days"));
        r.validity_days = vec![];
        r.card_usage_permille = vec![0];
        assert_eq!(r.validate().map_err(|e| e.0), Err("card_usage_permille"));
    }
}
