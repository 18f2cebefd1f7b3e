//! "Why did my card stop working, and what do I do now?" (rules.md, all of it, §4 especially) as a
//! pure function of the card as it is now, its carrier's rules, what the carrier reports and the
//! card's recent history. Every stop reason becomes a finding with its evidence and the remedy as
//! ordered steps (what each costs, when it takes effect under this carrier's rules); an online
//! card gets foresight warnings and, if it has no recent data session, the troubleshooting steps.
//! Messages are in Simplified Chinese or English; codes and numbers are the same in both.

use chrono::{DateTime, Duration, Utc};

use super::event;
use super::{Card, CardStatus, CarrierPolicy, Fen, LastSession, StopReason};

mod findings;
mod texts;

use findings::{ev, step, Ctx};
use texts::{carrier_name, mb, money, summary, tr, when};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    /// Picks the language from a request field or an `accept-language` value: Chinese when it
    /// asks for `zh` before any `en`, English otherwise.
    pub fn pick(field: &str, accept_language: Option<&str>) -> Lang {
        let wanted = if field.trim().is_empty() {
            accept_language.unwrap_or("")
        } else {
            field
        };
        for tag in wanted.split(',') {
            let tag = tag.trim().to_ascii_lowercase();
            if tag.starts_with("zh") {
                return Lang::Zh;
            }
            if tag.starts_with("en") {
                return Lang::En;
            }
        }
        Lang::En
    }

    pub fn tag(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    OnlineOk,
    BlockedByAccount,
    LikelyNetworkOrDevice,
    Cancelled,
    /// A carrier change is being settled: the card's state is about to change.
    ChangePending,
    /// The carrier's service state differs from the card's with no change open.
    CarrierStateDiffers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Stops the card now.
    Blocking,
    /// Will stop the card or cost money soon.
    Warning,
    /// Explains how the card got here.
    Info,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    RenewPlan,
    Recharge,
    ResumeCard,
    VerifyRealName,
    Wait,
    DataTopUp,
    ContactCarrier,
    MoveToAnotherDevice,
    CheckCoverage,
    RestartDevice,
    ReplaceCard,
    /// Top up the card's pool (`Step::pool_id`) by at least `Step::bytes`.
    TopUpPool,
    /// Change the card's machine-card binding (RebindCard).
    RebindCard,
}

impl Action {
    /// The simgate RPC that carries the step out, where there is one.
    pub fn rpc(self) -> Option<&'static str> {
        match self {
            Action::RenewPlan => Some("RenewPlan"),
            Action::Recharge => Some("Recharge"),
            Action::ResumeCard => Some("ResumeCard"),
            Action::VerifyRealName => Some("VerifyRealName"),
            Action::TopUpPool => Some("TopUpPool"),
            Action::RebindCard => Some("RebindCard"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub action: Action,
    /// What the step costs (0: nothing).
    pub cost: Fen,
    /// When it takes effect; None: at once.
    pub takes_effect_at: Option<DateTime<Utc>>,
    /// An alternative, not needed to bring the card back.
    pub optional: bool,
    /// For RenewPlan: how many months to renew.
    pub months: u32,
    pub text: String,
    /// For TopUpPool: the pool (of the card's customer).
    pub pool_id: Option<String>,
    /// For TopUpPool: the least data the top-up must add.
    pub bytes: u64,
}

/// A number behind a finding, with its unit: `fen`, `bytes`, `days`, `hours`, `permille` or
/// `unix_seconds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub name: &'static str,
    pub value: i64,
    pub unit: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub evidence: Vec<Evidence>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub verdict: Verdict,
    pub status: CardStatus,
    pub summary: String,
    pub findings: Vec<Finding>,
    pub lang: Lang,
}

/// What the carrier reports about the card's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CarrierFacts {
    pub cycle_usage_bytes: u64,
    /// The last data session the carrier saw (`Unknown` when its answer could not be read;
    /// `Never` also when the carrier was not asked).
    pub last_session: LastSession,
    /// The carrier's service state (`ACTIVE`, `STOPPED`, `CANCELLED`), when it was read.
    pub service_state: Option<&'static str>,
    /// The carrier answered, but the card's state or usage could not be read from the answer
    /// ("unknown at carrier"): why. `service_state` is then None and the usage is the stored one.
    pub carrier_unknown: Option<String>,
    /// The RebindCard modes the card's platform has calls for (`UNBIND`, `CURRENT_DEVICE`,
    /// `IMEI`); empty: it has none, and the binding is the carrier's to handle.
    pub rebind_modes: Vec<&'static str>,
    /// The IMEI of the device the card is in, when the platform reports it.
    pub device_imei: Option<String>,
}

/// The pool a pooled card draws from, as it is now: its usage is the sum of its members'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolFacts {
    pub pool_id: String,
    pub used_bytes: u64,
    /// The pool's quota plus this cycle's top-ups.
    pub capacity_bytes: u64,
}

impl PoolFacts {
    /// The least top-up after which the pool has data again: it is exhausted while its usage
    /// reaches its capacity, so the capacity must exceed the usage by a byte.
    pub fn bytes_needed(&self) -> u64 {
        self.used_bytes
            .saturating_add(1)
            .saturating_sub(self.capacity_bytes)
            .max(1)
    }
}

/// One entry of the card's history (`card_events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub kind: String,
    pub at: DateTime<Utc>,
    pub amount: Fen,
}

/// An online card with no data session for this long is probably failing on the network or in
/// its device rather than on its account.
pub const SESSION_SILENCE: Duration = Duration::hours(24);
/// Warn this many days before a plan ends.
pub const VALIDITY_WARNING_DAYS: i64 = 30;
/// Warn when this share of the test gift is used (per mille).
pub const GIFT_WARNING_PERMILLE: u64 = 800;

/// Diagnoses `card`, which must already be brought up to `now` (`lifecycle::advance`).
pub fn diagnose(
    card: &Card,
    policy: &CarrierPolicy,
    facts: &CarrierFacts,
    pool: Option<&PoolFacts>,
    history: &[HistoryEntry],
    now: DateTime<Utc>,
    lang: Lang,
) -> Diagnosis {
    let ctx = Ctx {
        card,
        policy,
        facts,
        pool,
        history,
        now,
        lang,
        cycle_end: policy.cycle_bounds(now).1,
    };
    if card.cancelled {
        let at = history
            .iter()
            .rev()
            .find(|h| h.kind == event::card::CANCELLED)
            .map(|h| h.at);
        let finding = Finding {
            code: "CANCELLED",
            severity: Severity::Blocking,
            message: tr(
                lang,
                format!(
                    "号码已注销{}，无法恢复。",
                    at.map(|t| format!("（{}）", when(t))).unwrap_or_default()
                ),
                format!(
                    "The number was cancelled{} and is released for good; nothing brings it back.",
                    at.map(|t| format!(" at {}", when(t))).unwrap_or_default()
                ),
            ),
            evidence: at
                .map(|t| vec![ev("cancelled_at", t.timestamp(), "unix_seconds")])
                .unwrap_or_default(),
            steps: vec![step(
                Action::ReplaceCard,
                tr(
                    lang,
                    "申请一张新卡。".to_string(),
                    "Order a new card.".to_string(),
                ),
            )],
        };
        return Diagnosis {
            verdict: Verdict::Cancelled,
            status: CardStatus::Cancelled,
            summary: finding.message.clone(),
            findings: vec![finding],
            lang,
        };
    }
    let mut findings: Vec<Finding> = Vec::new();
    for reason in card.stop_reasons.iter() {
        findings.push(ctx.blocking(reason));
        if reason == StopReason::Arrears {
            findings.extend(ctx.gift_used_up());
        }
    }
    merge_resumes(&mut findings, &ctx);
    let blocking: Vec<&'static str> = findings
        .iter()
        .filter(|f| f.severity == Severity::Blocking)
        .map(|f| f.code)
        .collect();
    let pending = ctx.change_pending();
    let differs = ctx.carrier_state_differs();
    let verdict = if let Some(f) = pending {
        findings.insert(0, f);
        Verdict::ChangePending
    } else if let Some(f) = differs {
        findings.insert(0, f);
        Verdict::CarrierStateDiffers
    } else if !blocking.is_empty() {
        Verdict::BlockedByAccount
    } else if let Some(f) = ctx.no_recent_session() {
        findings.push(f);
        Verdict::LikelyNetworkOrDevice
    } else {
        Verdict::OnlineOk
    };
    findings.extend(ctx.carrier_state_unknown());
    findings.extend(ctx.warnings());
    let summary = match verdict {
        Verdict::ChangePending | Verdict::CarrierStateDiffers => findings[0].message.clone(),
        _ => summary(&ctx, verdict, &blocking, findings.len()),
    };
    Diagnosis {
        verdict,
        status: card.status(),
        summary,
        findings,
        lang,
    }
}

/// One ResumeCard lifts every reason it can (a manual stop and paid arrears together), and a
/// second one would find nothing left to lift. When a manual stop is listed, the arrears'
/// restore request is left to that last step.
fn merge_resumes(findings: &mut [Finding], ctx: &Ctx<'_>) {
    if !findings.iter().any(|f| f.code == "MANUAL_STOP") {
        return;
    }
    let mut moved = false;
    for f in findings.iter_mut().filter(|f| f.code == "ARREARS") {
        let before = f.steps.len();
        f.steps.retain(|s| s.action != Action::ResumeCard);
        moved |= f.steps.len() != before;
    }
    if moved {
        if let Some(step) = findings
            .iter_mut()
            .filter(|f| f.code == "MANUAL_STOP")
            .flat_map(|f| f.steps.iter_mut())
            .find(|s| s.action == Action::ResumeCard)
        {
            step.text.push_str(&tr(
                ctx.lang,
                format!("这一步同时申请欠费复机（{}欠费停机需人工复机）。", ctx.carrier()),
                format!(" The same call also restores the card after the arrears ({} needs a manual restore after arrears).", ctx.carrier()),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::findings::{days_until, renewal_takes_effect};
    use super::*;
    use crate::domain::lifecycle::accrue_usage;
    use crate::domain::money::MAX_RECHARGE;
    use crate::domain::rules::tests::{new_card, now};
    use crate::domain::rules::{open_card, NewCard};
    use crate::domain::{CarrierId, CarrierPolicy, LifecycleStage};

    fn policy(c: CarrierId) -> CarrierPolicy {
        CarrierPolicy::default_for(c)
    }

    fn card_with(c: CarrierId, f: impl FnOnce(&mut NewCard)) -> Card {
        let mut n = new_card(c);
        n.balance = Fen(5000);
        f(&mut n);
        open_card(n, &policy(c), now())
    }

    fn online() -> CarrierFacts {
        CarrierFacts {
            cycle_usage_bytes: 0,
            last_session: LastSession::At(now() - Duration::hours(1)),
            service_state: None,
            carrier_unknown: None,
            ..Default::default()
        }
    }

    fn run(card: &Card, facts: &CarrierFacts, history: &[HistoryEntry], lang: Lang) -> Diagnosis {
        diagnose(
            card,
            &policy(card.carrier),
            facts,
            None,
            history,
            now(),
            lang,
        )
    }

    fn codes(d: &Diagnosis) -> Vec<&'static str> {
        d.findings.iter().map(|f| f.code).collect()
    }

    fn evidence(f: &Finding, name: &str) -> i64 {
        f.evidence
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .value
    }

    #[test]
    fn a_healthy_online_card_is_online_ok_with_no_findings() {
        let d = run(
            &card_with(CarrierId::Mobile, |_| {}),
            &online(),
            &[],
            Lang::En,
        );
        assert_eq!(d.verdict, Verdict::OnlineOk);
        assert!(d.findings.is_empty(), "{:?}", codes(&d));
    }

    #[test]
    fn finding_over_quota_waits_for_the_next_cycle_with_a_top_up_alternative() {
        let card = card_with(CarrierId::Mobile, |n| {
            n.cycle_usage_bytes = n.plan.monthly_quota_bytes + 5
        });
        let d = run(&card, &online(), &[], Lang::En);
        assert_eq!(d.verdict, Verdict::BlockedByAccount);
        let f = &d.findings[0];
        assert_eq!(f.code, "OVER_QUOTA");
        assert_eq!(evidence(f, "used_permille"), 1000);
        let next_cycle = policy(CarrierId::Mobile).cycle_bounds(now()).1;
        assert_eq!(f.steps[0].action, Action::Wait);
        assert_eq!(f.steps[0].takes_effect_at, Some(next_cycle));
        assert!(f.steps[1].optional && f.steps[1].action == Action::DataTopUp);
        assert!(f.message.contains("auto-suspend"));
    }

    #[test]
    fn finding_arrears_on_an_auto_recovery_carrier_is_one_recharge_covering_the_next_fee() {
        let card = card_with(CarrierId::Telecom, |n| n.balance = Fen(-350));
        let d = run(&card, &online(), &[], Lang::En);
        let f = &d.findings[0];
        assert_eq!(f.code, "ARREARS");
        assert_eq!(evidence(f, "debt_fen"), 350);
        assert_eq!(f.steps.len(), 1);
        assert_eq!(
            (f.steps[0].action, f.steps[0].cost),
            (Action::Recharge, Fen(350 + 1200))
        );
        assert!(
            f.steps[0].text.contains("at least 3.50 yuan"),
            "{}",
            f.steps[0].text
        );
        assert!(f.steps[0].text.contains("restores the card automatically"));
    }

    #[test]
    fn a_debt_above_one_recharge_is_split_into_recharges_within_the_limit() {
        let card = card_with(CarrierId::Mobile, |n| n.balance = Fen(-25_000_000));
        let d = run(&card, &online(), &[], Lang::En);
        let costs: Vec<_> = d.findings[0]
            .steps
            .iter()
            .map(|s| (s.action, s.cost))
            .collect();
        assert_eq!(
            costs,
            vec![
                (Action::Recharge, MAX_RECHARGE),
                (Action::Recharge, MAX_RECHARGE),
                (
                    Action::Recharge,
                    Fen(25_000_000 + 1200 - 2 * MAX_RECHARGE.0)
                ),
            ]
        );
    }

    #[test]
    fn finding_arrears_on_china_unicom_adds_the_manual_restore() {
        let card = card_with(CarrierId::Unicom, |n| n.balance = Fen(-1200));
        let d = run(&card, &online(), &[], Lang::En);
        let actions: Vec<_> = d.findings[0].steps.iter().map(|s| s.action).collect();
        assert_eq!(actions, vec![Action::Recharge, Action::ResumeCard]);
        assert!(d.findings[0].steps[1]
            .text
            .contains("China Unicom needs a manual restore"));

        let mut paid = card.clone();
        paid.balance = Fen(100);
        paid.arrears_paid_awaiting_resume = true;
        let d = run(&paid, &online(), &[], Lang::En);
        let actions: Vec<_> = d.findings[0].steps.iter().map(|s| s.action).collect();
        assert_eq!(
            actions,
            vec![Action::ResumeCard],
            "paid already: only the restore is left"
        );
    }

    #[test]
    fn finding_expired_in_retention_gives_days_fees_and_the_cancellation_date() {
        let card = card_with(CarrierId::Mobile, |n| {
            n.plan.validity_end = now() - Duration::days(40)
        });
        let end = card.plan.validity_end;
        let history = vec![
            HistoryEntry {
                kind: event::card::RETENTION_FEE_CHARGED.into(),
                at: end,
                amount: Fen(-500),
            },
            HistoryEntry {
                kind: event::card::RETENTION_FEE_CHARGED.into(),
                at: crate::domain::policy::add_months(end, 1),
                amount: Fen(-500),
            },
        ];
        let d = run(&card, &online(), &history, Lang::En);
        let f = &d.findings[0];
        assert_eq!(f.code, "EXPIRED_IN_RETENTION");
        assert_eq!(evidence(f, "days_since_expiry"), 40);
        assert_eq!(evidence(f, "retention_fees_accrued_fen"), 1000);
        assert_eq!(
            evidence(f, "cancellation_at"),
            crate::domain::policy::add_months(end, 3).timestamp()
        );
        assert_eq!(
            evidence(f, "days_until_cancellation"),
            days_until(now(), crate::domain::policy::add_months(end, 3))
        );
        let renew = &f.steps[0];
        assert_eq!(
            (renew.action, renew.months, renew.cost),
            (Action::RenewPlan, 1, Fen(1200))
        );
        assert_eq!(
            renew.takes_effect_at,
            Some(now() + Duration::hours(2)),
            "China Mobile: the same day, after its 2 h processing delay"
        );
        assert!(f.steps[1].optional && f.steps[1].action == Action::ReplaceCard);
    }

    #[test]
    fn renewal_timing_follows_each_carriers_rule() {
        let expired = |c| card_with(c, |n| n.plan.validity_end = now() - Duration::days(2));
        let at =
            |c| run(&expired(c), &online(), &[], Lang::En).findings[0].steps[0].takes_effect_at;
        assert_eq!(at(CarrierId::Telecom), None);
        // Renewed at 10:00: restored at 12:00 (2 h processing), not at midnight.
        assert_eq!(at(CarrierId::Mobile), Some(now() + Duration::hours(2)));
        // Renewed at 23:00: still the same day, at 23:59:59.
        let late = now() + Duration::hours(13);
        let end_of_day = now() + Duration::hours(14) - Duration::seconds(1);
        assert_eq!(
            renewal_takes_effect(&policy(CarrierId::Mobile), late),
            Some(end_of_day)
        );
        assert_eq!(
            at(CarrierId::Unicom),
            Some(policy(CarrierId::Unicom).cycle_bounds(now()).1)
        );
    }

    #[test]
    fn finding_restore_pending_after_renewal_only_waits() {
        let mut card = card_with(CarrierId::Unicom, |n| {
            n.plan.validity_end = now() - Duration::days(2)
        });
        let restore = policy(CarrierId::Unicom).cycle_bounds(now()).1;
        card.expiry_restore_at = Some(restore);
        let d = run(&card, &online(), &[], Lang::En);
        assert_eq!(codes(&d), vec!["RESTORE_PENDING_AFTER_RENEWAL"]);
        assert_eq!(d.findings[0].steps[0].takes_effect_at, Some(restore));
    }

    #[test]
    fn finding_real_name_missing_points_to_verification() {
        let card = card_with(CarrierId::Telecom, |n| {
            n.real_name = crate::domain::RealNameStatus::Unverified
        });
        let d = run(&card, &online(), &[], Lang::En);
        assert_eq!(codes(&d), vec!["REAL_NAME_MISSING"]);
        assert_eq!(d.findings[0].steps[0].action, Action::VerifyRealName);
    }

    #[test]
    fn finding_manual_stop_points_to_resume() {
        let mut card = card_with(CarrierId::Mobile, |_| {});
        card.stop_reasons.insert(StopReason::Manual);
        let d = run(&card, &online(), &[], Lang::En);
        assert_eq!(codes(&d), vec!["MANUAL_STOP"]);
        assert_eq!(d.findings[0].steps[0].action, Action::ResumeCard);
    }

    #[test]
    fn finding_device_mismatch_needs_the_carrier_not_a_restore() {
        let mut card = card_with(CarrierId::Mobile, |_| {});
        card.stop_reasons.insert(StopReason::DeviceMismatch);
        let d = run(&card, &online(), &[], Lang::Zh);
        assert_eq!(codes(&d), vec!["DEVICE_MISMATCH"]);
        assert_eq!(d.findings[0].steps[0].action, Action::ContactCarrier);
        assert!(d.findings[0].message.contains("机卡分离"));
    }

    #[test]
    fn finding_device_mismatch_names_rebind_card_where_the_platform_can_rebind() {
        let mut card = card_with(CarrierId::Mobile, |_| {});
        card.stop_reasons.insert(StopReason::DeviceMismatch);
        let facts = CarrierFacts {
            rebind_modes: vec!["UNBIND", "CURRENT_DEVICE", "IMEI"],
            device_imei: Some("860000000000001".into()),
            ..online()
        };
        let d = run(&card, &facts, &[], Lang::En);
        assert_eq!(codes(&d), vec!["DEVICE_MISMATCH"]);
        let steps = &d.findings[0].steps;
        assert_eq!(steps[0].action, Action::RebindCard);
        assert_eq!(steps[0].action.rpc(), Some("RebindCard"));
        assert!(steps[0].text.contains("current_device"));
        assert!(steps[0].text.contains("860000000000001"));
        assert!(steps[1].optional);
        // A platform that binds only to a given IMEI is told so.
        let facts = CarrierFacts {
            rebind_modes: vec!["IMEI"],
            ..online()
        };
        let d = run(&card, &facts, &[], Lang::En);
        assert!(!d.findings[0].steps[0].text.contains("current_device"));
    }

    #[test]
    fn finding_a_change_scheduled_for_the_repeat_window_says_when_it_is_sent() {
        let mut card = card_with(CarrierId::Mobile, |_| {});
        card.stop_reasons.insert(StopReason::Manual);
        let at = now() + Duration::minutes(30);
        card.pending = Some(crate::domain::PendingChange {
            action: crate::domain::CarrierAction::Restore,
            since: now(),
            order_id: None,
            order: 7,
            not_before: Some(at),
            sent: false,
        });
        let d = run(&card, &online(), &[], Lang::En);
        assert_eq!(d.findings[0].code, "CARRIER_CHANGE_SCHEDULED");
        assert_eq!(d.findings[0].steps[0].takes_effect_at, Some(at));
        // Sent and taken as an order: the order is named.
        card.pending = Some(crate::domain::PendingChange {
            action: crate::domain::CarrierAction::Restore,
            since: now(),
            order_id: Some("O123".into()),
            order: 7,
            not_before: None,
            sent: true,
        });
        let d = run(&card, &online(), &[], Lang::En);
        assert_eq!(d.findings[0].code, "CARRIER_ORDER_IN_PROGRESS");
        assert!(d.findings[0].message.contains("O123"));
    }

    #[test]
    fn finding_pool_exhausted_waits_for_the_cycle() {
        let mut card = card_with(CarrierId::Unicom, |_| {});
        card.stop_reasons.insert(StopReason::PoolExhausted);
        let d = run(&card, &online(), &[], Lang::En);
        assert_eq!(codes(&d), vec!["POOL_EXHAUSTED"]);
        assert_eq!(d.findings[0].steps[0].action, Action::Wait);
    }

    #[test]
    fn finding_pool_exhausted_quotes_the_pool_and_names_top_up_pool_with_the_bytes_needed() {
        let mut card = card_with(CarrierId::Mobile, |_| {});
        card.pool = Some("fleet-a".into());
        // The card's own figures, which a pooled card does not go by.
        card.cycle_usage_bytes = 7;
        card.stop_reasons.insert(StopReason::PoolExhausted);
        let pool = PoolFacts {
            pool_id: "fleet-a".into(),
            used_bytes: 5000,
            capacity_bytes: 4000,
        };
        let d = diagnose(
            &card,
            &policy(CarrierId::Mobile),
            &online(),
            Some(&pool),
            &[],
            now(),
            Lang::En,
        );
        let f = &d.findings[0];
        assert_eq!(f.code, "POOL_EXHAUSTED");
        assert_eq!(evidence(f, "pool_used_bytes"), 5000);
        assert_eq!(evidence(f, "pool_capacity_bytes"), 4000);
        assert_eq!(evidence(f, "pool_bytes_needed"), 1001);
        assert!(
            !f.evidence
                .iter()
                .any(|e| e.name == "quota_bytes" || e.name == "used_bytes"),
            "no card quota figures: {:?}",
            f.evidence
        );
        let top_up = f
            .steps
            .iter()
            .find(|s| s.action == Action::TopUpPool)
            .expect("a TopUpPool step");
        assert_eq!(top_up.action.rpc(), Some("TopUpPool"));
        assert_eq!(top_up.pool_id.as_deref(), Some("fleet-a"));
        assert_eq!(top_up.bytes, 1001, "usage 5000 > capacity 4000: 1001 bytes");
        assert!(top_up.text.contains("fleet-a") && top_up.text.contains("1001"));
        // Used exactly up: one byte more gives the pool data again.
        let full = PoolFacts {
            used_bytes: 4000,
            ..pool
        };
        assert_eq!(full.bytes_needed(), 1);
    }

    #[test]
    fn finding_test_gift_used_up_explains_the_arrears_it_caused() {
        let p = policy(CarrierId::Mobile);
        let card = card_with(CarrierId::Mobile, |n| {
            n.stage = LifecycleStage::Test;
            n.balance = Fen(0);
        });
        let t = accrue_usage(&card, &p, p.test_gift_bytes, now());
        let history: Vec<HistoryEntry> = t
            .events
            .iter()
            .map(|e| HistoryEntry {
                kind: e.kind.to_string(),
                at: e.at,
                amount: e.amount,
            })
            .collect();
        let d = run(&t.card, &online(), &history, Lang::En);
        assert_eq!(codes(&d)[..2], ["ARREARS", "TEST_GIFT_USED_UP"]);
        assert_eq!(d.findings[1].severity, Severity::Info);
        assert_eq!(evidence(&d.findings[1], "first_fee_fen"), 1200);
    }

    #[test]
    fn finding_test_data_used_reason_waits() {
        let mut card = card_with(CarrierId::Mobile, |_| {});
        card.stop_reasons.insert(StopReason::TestDataUsed);
        assert_eq!(
            codes(&run(&card, &online(), &[], Lang::En)),
            vec!["TEST_GIFT_USED_UP"]
        );
    }

    #[test]
    fn finding_cancelled_is_final() {
        let card = card_with(CarrierId::Mobile, |n| {
            n.plan.validity_end = now() - Duration::days(200)
        });
        let d = run(&card, &online(), &[], Lang::En);
        assert_eq!(d.verdict, Verdict::Cancelled);
        assert_eq!(codes(&d), vec!["CANCELLED"]);
        assert_eq!(d.findings[0].steps[0].action, Action::ReplaceCard);
    }

    #[test]
    fn finding_no_recent_session_gives_the_troubleshooting_steps_and_warns_about_binding() {
        let card = card_with(CarrierId::Mobile, |_| {});
        let quiet = CarrierFacts {
            cycle_usage_bytes: 0,
            last_session: LastSession::At(now() - Duration::hours(30)),
            service_state: None,
            carrier_unknown: None,
            ..Default::default()
        };
        let d = run(&card, &quiet, &[], Lang::En);
        assert_eq!(d.verdict, Verdict::LikelyNetworkOrDevice);
        let f = &d.findings[0];
        assert_eq!(f.code, "NO_RECENT_SESSION");
        assert_eq!(evidence(f, "hours_since_last_session"), 30);
        let actions: Vec<_> = f.steps.iter().map(|s| s.action).collect();
        assert_eq!(
            actions,
            vec![
                Action::RestartDevice,
                Action::MoveToAnotherDevice,
                Action::CheckCoverage
            ]
        );
        assert!(
            f.steps[1].text.contains("bound"),
            "China Mobile binding warning (rules.md §5)"
        );

        let telecom = card_with(CarrierId::Telecom, |_| {});
        let never = CarrierFacts {
            last_session: LastSession::Never,
            ..Default::default()
        };
        let d = run(&telecom, &never, &[], Lang::En);
        assert_eq!(d.verdict, Verdict::LikelyNetworkOrDevice);
        assert!(!d.findings[0].steps[1].text.contains("bound"));
    }

    /// A carrier answer whose session record could not be read (a reply shape or time format no
    /// source gives) is no evidence that the card never connects.
    #[test]
    fn an_unreadable_session_record_draws_no_conclusion() {
        let telecom = card_with(CarrierId::Telecom, |_| {});
        let unknown = CarrierFacts {
            last_session: LastSession::Unknown,
            ..Default::default()
        };
        let d = run(&telecom, &unknown, &[], Lang::En);
        assert!(!codes(&d).contains(&"NO_RECENT_SESSION"), "{:?}", codes(&d));
        let never = CarrierFacts {
            last_session: LastSession::Never,
            ..Default::default()
        };
        assert!(codes(&run(&telecom, &never, &[], Lang::En)).contains(&"NO_RECENT_SESSION"));
    }

    #[test]
    fn finding_quota_runs_out_soon_forecasts_from_the_cycle_rate() {
        // 90% used 24.4 days into the cycle: the last 10% lasts 2.7 more days, before 1 Dec.
        let card = card_with(CarrierId::Mobile, |_| {});
        let facts = CarrierFacts {
            cycle_usage_bytes: card.plan.monthly_quota_bytes / 10 * 9,
            last_session: LastSession::At(now()),
            service_state: None,
            carrier_unknown: None,
            ..Default::default()
        };
        let d = run(&card, &facts, &[], Lang::En);
        assert_eq!(d.verdict, Verdict::OnlineOk);
        let f = d
            .findings
            .iter()
            .find(|f| f.code == "QUOTA_RUNS_OUT_SOON")
            .expect("forecast");
        assert_eq!(evidence(f, "days_until_quota_used"), 3);

        // Half used at the same point lasts past the cycle end: no warning.
        let facts = CarrierFacts {
            cycle_usage_bytes: card.plan.monthly_quota_bytes / 2,
            last_session: LastSession::At(now()),
            service_state: None,
            carrier_unknown: None,
            ..Default::default()
        };
        assert!(run(&card, &facts, &[], Lang::En).findings.is_empty());
        assert!(f.message.contains("stop until the next cycle"));
    }

    #[test]
    fn finding_overage_is_reported_for_cards_without_auto_suspend() {
        let card = card_with(CarrierId::Mobile, |n| {
            n.plan.auto_suspend_over_quota = false
        });
        let facts = CarrierFacts {
            cycle_usage_bytes: card.plan.monthly_quota_bytes + (1 << 20),
            last_session: LastSession::At(now()),
            service_state: None,
            carrier_unknown: None,
            ..Default::default()
        };
        let d = run(&card, &facts, &[], Lang::En);
        assert_eq!(codes(&d), vec!["OVERAGE"]);
    }

    #[test]
    fn finding_validity_ends_soon_and_balance_short_for_next_fee() {
        let card = card_with(CarrierId::Mobile, |n| {
            n.plan.validity_end = now() + Duration::days(12);
            n.balance = Fen(700);
        });
        let d = run(&card, &online(), &[], Lang::En);
        assert_eq!(
            codes(&d),
            vec!["VALIDITY_ENDS_SOON", "BALANCE_SHORT_FOR_NEXT_FEE"]
        );
        assert_eq!(evidence(&d.findings[0], "days_until_expiry"), 12);
        assert_eq!(d.findings[1].steps[0].cost, Fen(500));
    }

    #[test]
    fn finding_test_gift_running_low_warns_before_billing_starts() {
        let p = policy(CarrierId::Unicom);
        let card = card_with(CarrierId::Unicom, |n| n.stage = LifecycleStage::Test);
        let t = accrue_usage(&card, &p, p.test_gift_bytes * 9 / 10, now());
        let d = run(&t.card, &online(), &[], Lang::En);
        assert_eq!(codes(&d), vec!["TEST_GIFT_RUNNING_LOW"]);
    }

    #[test]
    fn several_reasons_are_all_reported_in_the_order_they_must_be_cleared() {
        let mut card = card_with(CarrierId::Unicom, |n| {
            n.plan.validity_end = now() - Duration::days(3);
            n.balance = Fen(-800);
            n.cycle_usage_bytes = n.plan.monthly_quota_bytes;
        });
        card.stop_reasons.insert(StopReason::Manual);
        let d = run(&card, &online(), &[], Lang::En);
        assert_eq!(
            codes(&d),
            vec![
                "EXPIRED_IN_RETENTION",
                "ARREARS",
                "OVER_QUOTA",
                "MANUAL_STOP"
            ]
        );
        assert!(d.summary.starts_with("4 thing(s)"), "{}", d.summary);
        assert!(d
            .summary
            .contains("expired plan → arrears → data quota used up → manual stop"));
        assert!(d.summary.contains("Renew first"));
    }

    #[test]
    fn one_resume_lifts_paid_arrears_and_a_manual_stop_together() {
        let mut card = card_with(CarrierId::Unicom, |n| n.balance = Fen(-100));
        card.stop_reasons.insert(StopReason::Manual);
        let d = run(&card, &online(), &[], Lang::En);
        let resumes: Vec<_> = d
            .findings
            .iter()
            .flat_map(|f| f.steps.iter().map(move |s| (f.code, s.action)))
            .filter(|(_, a)| *a == Action::ResumeCard)
            .collect();
        assert_eq!(resumes, vec![("MANUAL_STOP", Action::ResumeCard)]);
        assert!(d.findings[1].steps[0]
            .text
            .contains("also restores the card after the arrears"));
    }

    #[test]
    fn chinese_and_english_carry_the_same_codes_and_numbers() {
        let card = card_with(CarrierId::Unicom, |n| {
            n.balance = Fen(-1234);
            n.real_name = crate::domain::RealNameStatus::Unverified;
        });
        let zh = run(&card, &online(), &[], Lang::Zh);
        let en = run(&card, &online(), &[], Lang::En);
        assert_eq!(codes(&zh), codes(&en));
        for (a, b) in zh.findings.iter().zip(&en.findings) {
            assert_eq!(a.evidence, b.evidence);
            let costs = |f: &Finding| {
                f.steps
                    .iter()
                    .map(|s| (s.action, s.cost, s.takes_effect_at))
                    .collect::<Vec<_>>()
            };
            assert_eq!(costs(a), costs(b));
        }
        assert!(
            zh.findings[0].message.contains("欠款 12.34 元"),
            "{}",
            zh.findings[0].message
        );
        assert!(zh.summary.contains("欠费 → 未实名认证"), "{}", zh.summary);
        assert!(zh.findings[0].steps[1].text.contains("中国联通"));
    }

    #[test]
    fn language_is_picked_from_the_field_then_accept_language() {
        assert_eq!(Lang::pick("zh-CN", Some("en")), Lang::Zh);
        assert_eq!(Lang::pick("", Some("zh-CN,zh;q=0.9,en;q=0.8")), Lang::Zh);
        assert_eq!(Lang::pick("", Some("en-US,zh;q=0.5")), Lang::En);
        assert_eq!(Lang::pick("", None), Lang::En);
        assert_eq!(Lang::pick("fr", None), Lang::En);
    }
}
