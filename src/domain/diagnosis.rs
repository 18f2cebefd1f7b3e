//! "Why did my card stop working, and what do I do now?" (rules.md, all of it, §4 especially) as a
//! pure function of the card as it is now, its carrier's rules, what the carrier reports and the
//! card's recent history. Every stop reason becomes a finding with its evidence and the remedy as
//! ordered steps (what each costs, when it takes effect under this carrier's rules); an online
//! card gets foresight warnings and, if it has no recent data session, the troubleshooting steps.
//! Messages are in Simplified Chinese or English; codes and numbers are the same in both.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Asia::Shanghai;

use super::money::MAX_RECHARGE;
use super::{
    ArrearsRecovery, Card, CardStatus, CarrierId, CarrierPolicy, Fen, LifecycleStage,
    RenewalRestore, StopReason,
};

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
    /// The last data session the carrier saw; None: none known.
    pub last_session_at: Option<DateTime<Utc>>,
    /// The carrier's service state (`ACTIVE`, `STOPPED`, `CANCELLED`), when it was read.
    pub service_state: Option<&'static str>,
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

fn tr(lang: Lang, zh: String, en: String) -> String {
    match lang {
        Lang::Zh => zh,
        Lang::En => en,
    }
}

fn money(lang: Lang, f: Fen) -> String {
    let sign = if f.0 < 0 { "-" } else { "" };
    let a = f.0.unsigned_abs();
    match lang {
        Lang::Zh => format!("{sign}{}.{:02} 元", a / 100, a % 100),
        Lang::En => format!("{sign}{}.{:02} yuan", a / 100, a % 100),
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.with_timezone(&Shanghai)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
}

fn carrier_name(lang: Lang, c: CarrierId) -> &'static str {
    match (lang, c) {
        (Lang::Zh, CarrierId::Mobile) => "中国移动",
        (Lang::Zh, CarrierId::Unicom) => "中国联通",
        (Lang::Zh, CarrierId::Telecom) => "中国电信",
        (Lang::En, c) => c.display_name(),
    }
}

/// Whole days from `a` to `b`, rounded up (a started day counts).
fn days_until(a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
    ((b - a).num_seconds() + 86_399).div_euclid(86_400)
}

fn ev(name: &'static str, value: i64, unit: &'static str) -> Evidence {
    Evidence { name, value, unit }
}

fn step(action: Action, text: String) -> Step {
    Step {
        action,
        cost: Fen::ZERO,
        takes_effect_at: None,
        optional: false,
        months: 0,
        text,
        pool_id: None,
        bytes: 0,
    }
}

/// When a renewal made now restores an expired card under this carrier's rule (the same rule
/// RenewPlan applies); None: at once.
fn renewal_takes_effect(policy: &CarrierPolicy, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(policy.renewal_restore_at(now)).filter(|at| *at > now)
}

struct Ctx<'a> {
    card: &'a Card,
    policy: &'a CarrierPolicy,
    facts: &'a CarrierFacts,
    pool: Option<&'a PoolFacts>,
    history: &'a [HistoryEntry],
    now: DateTime<Utc>,
    lang: Lang,
    cycle_end: DateTime<Utc>,
}

impl Ctx<'_> {
    fn carrier(&self) -> &'static str {
        carrier_name(self.lang, self.card.carrier)
    }

    /// The monthly fee the next cycle start will charge, if it charges one.
    fn next_fee(&self) -> Fen {
        let billing = self.card.stage == LifecycleStage::Billing;
        if billing {
            self.card.plan.monthly_fee
        } else {
            Fen::ZERO
        }
    }

    fn expired(&self) -> Finding {
        let c = self.card;
        let lang = self.lang;
        if let Some(at) = c.expiry_restore_at {
            return Finding {
                code: "RESTORE_PENDING_AFTER_RENEWAL",
                severity: Severity::Blocking,
                message: tr(
                    lang,
                    format!("套餐已续费，{}将于 {} 自动复机，无需其他操作。", self.carrier(), when(at)),
                    format!("The plan is renewed; {} restores the card automatically at {}. Nothing else to do.", self.carrier(), when(at)),
                ),
                evidence: vec![ev("restore_at", at.timestamp(), "unix_seconds")],
                steps: vec![Step {
                    takes_effect_at: Some(at),
                    ..step(Action::Wait, tr(lang, format!("等待至 {} 自动复机", when(at)), format!("Wait: the card restores at {}", when(at))))
                }],
            };
        }
        let end = c.plan.validity_end;
        let accrued: i64 = self
            .history
            .iter()
            .filter(|h| h.kind == "card.retention_fee_charged" && h.at >= end)
            .map(|h| -h.amount.0)
            .sum();
        let mut evidence = vec![
            ev("validity_end", end.timestamp(), "unix_seconds"),
            ev("days_since_expiry", (self.now - end).num_days(), "days"),
            ev("retention_fees_accrued_fen", accrued, "fen"),
            ev(
                "retention_fee_per_month_fen",
                self.policy.retention_fee.0,
                "fen",
            ),
        ];
        let cancel = c
            .retention_ends_at
            .filter(|_| self.policy.cancel_when_retention_ends);
        let cancel_text = match cancel {
            Some(at) => {
                evidence.push(ev("cancellation_at", at.timestamp(), "unix_seconds"));
                evidence.push(ev(
                    "days_until_cancellation",
                    days_until(self.now, at),
                    "days",
                ));
                tr(
                    lang,
                    format!("若在 {}（还剩 {} 天）前不续费，号码将被注销且无法恢复。", when(at), days_until(self.now, at)),
                    format!("Unless renewed before {} ({} days left), the number is cancelled for good.", when(at), days_until(self.now, at)),
                )
            }
            None => String::new(),
        };
        let effect = renewal_takes_effect(self.policy, self.now);
        let effect_text = match (self.policy.renewal_restore, effect) {
            (RenewalRestore::Immediate, _) | (_, None) => tr(
                lang,
                format!("{}续费后立即复机。", self.carrier()),
                format!("{} restores the card at once.", self.carrier()),
            ),
            (RenewalRestore::SameDay, Some(at)) => tr(
                lang,
                format!("{}当天复机（最迟 {}）。", self.carrier(), when(at)),
                format!(
                    "{} restores it the same day (by {}).",
                    self.carrier(),
                    when(at)
                ),
            ),
            (RenewalRestore::NextCycle, Some(at)) => tr(
                lang,
                format!(
                    "{}在下个计费周期开始时复机（{}）。",
                    self.carrier(),
                    when(at)
                ),
                format!(
                    "{} restores it at the start of the next billing cycle ({}).",
                    self.carrier(),
                    when(at)
                ),
            ),
        };
        let fee = c.plan.monthly_fee;
        Finding {
            code: "EXPIRED_IN_RETENTION",
            severity: Severity::Blocking,
            message: tr(
                lang,
                format!(
                    "套餐已于 {} 到期，卡处于停机保号状态（已 {} 天），保号费每月 {}，已累计 {}。{}",
                    when(end), (self.now - end).num_days(), money(lang, self.policy.retention_fee), money(lang, Fen(accrued)), cancel_text
                ),
                format!(
                    "The plan expired at {} and the card is held in number retention (停机保号) for {} days, at {} a month; {} charged so far. {}",
                    when(end), (self.now - end).num_days(), money(lang, self.policy.retention_fee), money(lang, Fen(accrued)), cancel_text
                ),
            ),
            evidence,
            steps: vec![
                Step {
                    cost: fee,
                    takes_effect_at: effect,
                    months: 1,
                    ..step(
                        Action::RenewPlan,
                        tr(
                            lang,
                            format!("续费套餐（RenewPlan，至少 1 个月，月费 {}，每个计费周期初扣取）。{}", money(lang, fee), effect_text),
                            format!("Renew the plan (RenewPlan, at least 1 month; {} a month, charged at each cycle start). {}", money(lang, fee), effect_text),
                        ),
                    )
                },
                Step {
                    optional: true,
                    ..step(
                        Action::ReplaceCard,
                        tr(
                            lang,
                            "长期保号不划算：如不再需要这个号码，换一张新卡通常更便宜。".to_string(),
                            "Long retention rarely pays: if the number itself does not matter, a new card is usually cheaper.".to_string(),
                        ),
                    )
                },
            ],
        }
    }

    fn arrears(&self) -> Finding {
        let c = self.card;
        let lang = self.lang;
        let manual = self.policy.arrears_recovery == ArrearsRecovery::Manual;
        let debt = Fen(c.balance.0.saturating_neg().max(0));
        let mut evidence = vec![
            ev("balance_fen", c.balance.0, "fen"),
            ev("debt_fen", debt.0, "fen"),
            ev("monthly_fee_fen", c.plan.monthly_fee.0, "fen"),
            ev("next_fee_at", self.cycle_end.timestamp(), "unix_seconds"),
        ];
        if c.arrears_paid_awaiting_resume {
            return Finding {
                code: "ARREARS",
                severity: Severity::Blocking,
                message: tr(
                    lang,
                    format!("欠费已结清（余额 {}），但{}欠费停机后需人工复机。", money(lang, c.balance), self.carrier()),
                    format!("The arrears are paid (balance {}), but {} restores a card stopped for arrears only on request.", money(lang, c.balance), self.carrier()),
                ),
                evidence,
                steps: vec![step(
                    Action::ResumeCard,
                    tr(lang, "申请复机：调用 ResumeCard，立即生效。".to_string(), "Request the restore: call ResumeCard; it takes effect at once.".to_string()),
                )],
            };
        }
        // Enough to clear the debt and the fee of the next cycle start, so the card does not
        // stop again there (a wait until then may be part of the remedy).
        let recommended = Fen(debt.0.saturating_add(self.next_fee().0));
        evidence.push(ev("recommended_recharge_fen", recommended.0, "fen"));
        let mut steps = vec![Step {
            cost: recommended.min(MAX_RECHARGE),
            ..step(
                Action::Recharge,
                tr(
                    lang,
                    format!(
                        "充值至少 {}（还清欠款）；建议充值 {}，同时覆盖 {} 扣取的月费 {}。{}",
                        money(lang, debt), money(lang, recommended), when(self.cycle_end), money(lang, self.next_fee()),
                        if manual { format!("{}充值后不会自动复机。", self.carrier()) } else { format!("{}充值后自动复机。", self.carrier()) }
                    ),
                    format!(
                        "Recharge at least {} (clears the debt); {} also covers the {} fee due at {}. {}",
                        money(lang, debt), money(lang, recommended), money(lang, self.next_fee()), when(self.cycle_end),
                        if manual { format!("{} does not restore the card by itself after a recharge.", self.carrier()) } else { format!("{} restores the card automatically once paid.", self.carrier()) }
                    ),
                ),
            )
        }];
        // One recharge carries at most MAX_RECHARGE: a larger debt takes several.
        let mut left = recommended.0 - recommended.0.min(MAX_RECHARGE.0);
        while left > 0 {
            let part = Fen(left.min(MAX_RECHARGE.0));
            left -= part.0;
            steps.push(Step {
                cost: part,
                ..step(
                    Action::Recharge,
                    tr(
                        lang,
                        format!(
                            "继续充值 {}（单次充值上限 {}）。",
                            money(lang, part),
                            money(lang, MAX_RECHARGE)
                        ),
                        format!(
                            "Recharge a further {} (one recharge carries at most {}).",
                            money(lang, part),
                            money(lang, MAX_RECHARGE)
                        ),
                    ),
                )
            });
        }
        if manual {
            steps.push(step(
                Action::ResumeCard,
                tr(
                    lang,
                    format!("充值后调用 ResumeCard 申请复机（{}规则：欠费需人工复机）。", self.carrier()),
                    format!("After the recharge, call ResumeCard: {} needs a manual restore after arrears.", self.carrier()),
                ),
            ));
        }
        Finding {
            code: "ARREARS",
            severity: Severity::Blocking,
            message: tr(
                lang,
                format!(
                    "卡因欠费停机：余额 {}，欠款 {}。",
                    money(lang, c.balance),
                    money(lang, debt)
                ),
                format!(
                    "The card is stopped for arrears: balance {}, {} owed.",
                    money(lang, c.balance),
                    money(lang, debt)
                ),
            ),
            evidence,
            steps,
        }
    }

    fn gift_used_up(&self) -> Option<Finding> {
        let h = self.history.iter().rev().find(|h| {
            h.kind == "card.test_gift_used_up" && self.now - h.at <= Duration::days(62)
        })?;
        let fee = self
            .history
            .iter()
            .find(|x| x.kind == "card.monthly_fee_charged" && x.at == h.at)
            .map(|x| Fen(-x.amount.0))
            .unwrap_or(Fen::ZERO);
        let lang = self.lang;
        Some(Finding {
            code: "TEST_GIFT_USED_UP",
            severity: Severity::Info,
            message: tr(
                lang,
                format!("测试期赠送流量（{}）已于 {} 用完，卡随即进入计费期并扣取首月月费 {}——这是欠费的常见原因。", mb(self.policy.test_gift_bytes), when(h.at), money(lang, fee)),
                format!("The test-period gift ({}) ran out at {}; billing started at once and the first month's fee of {} was charged, a common cause of arrears.", mb(self.policy.test_gift_bytes), when(h.at), money(lang, fee)),
            ),
            evidence: vec![
                ev("gift_used_up_at", h.at.timestamp(), "unix_seconds"),
                ev("first_fee_fen", fee.0, "fen"),
                ev("test_gift_bytes", self.policy.test_gift_bytes.min(i64::MAX as u64) as i64, "bytes"),
            ],
            steps: vec![],
        })
    }

    fn waits_for_cycle(
        &self,
        code: &'static str,
        zh: String,
        en: String,
        top_up_zh: &str,
        top_up_en: &str,
    ) -> Finding {
        let c = self.card;
        let lang = self.lang;
        let quota = c.plan.monthly_quota_bytes;
        let used = self.facts.cycle_usage_bytes.max(c.cycle_usage_bytes);
        Finding {
            code,
            severity: Severity::Blocking,
            message: tr(lang, zh, en),
            evidence: vec![
                ev("used_bytes", used.min(i64::MAX as u64) as i64, "bytes"),
                ev("quota_bytes", quota.min(i64::MAX as u64) as i64, "bytes"),
                ev("used_permille", (used.saturating_mul(1000) / quota.max(1)).min(i64::MAX as u64) as i64, "permille"),
                ev("restores_at", self.cycle_end.timestamp(), "unix_seconds"),
            ],
            steps: vec![
                Step {
                    takes_effect_at: Some(self.cycle_end),
                    ..step(
                        Action::Wait,
                        tr(
                            lang,
                            format!("无需操作：{}（下个计费周期开始）自动复机。", when(self.cycle_end)),
                            format!("Nothing to do: the card restores automatically at {} (next billing cycle).", when(self.cycle_end)),
                        ),
                    )
                },
                Step {
                    optional: true,
                    ..step(Action::DataTopUp, tr(lang, top_up_zh.to_string(), top_up_en.to_string()))
                },
            ],
        }
    }

    /// The card's pool is used up: the pool's usage and capacity (not the card's own, which do
    /// not apply to a pooled card), the wait for the next cycle, and the TopUpPool that brings
    /// every member back now, with the pool and the least data it must add.
    fn pool_exhausted(&self) -> Finding {
        let lang = self.lang;
        let pool_id = self
            .pool
            .map(|p| p.pool_id.clone())
            .or_else(|| self.card.pool.clone())
            .unwrap_or_default();
        let big = |v: u64| v.min(i64::MAX as u64) as i64;
        let mut evidence = Vec::new();
        let (message, top_up, needed) = match self.pool {
            Some(p) => {
                let needed = p.bytes_needed();
                evidence.push(ev("pool_used_bytes", big(p.used_bytes), "bytes"));
                evidence.push(ev("pool_capacity_bytes", big(p.capacity_bytes), "bytes"));
                evidence.push(ev(
                    "pool_used_permille",
                    big(p.used_bytes.saturating_mul(1000) / p.capacity_bytes.max(1)),
                    "permille",
                ));
                evidence.push(ev("pool_bytes_needed", big(needed), "bytes"));
                (
                    tr(
                        lang,
                        format!("该卡所在的流量池 {pool_id} 本月已用完（{} / {}），池内所有卡已停机。", mb(p.used_bytes), mb(p.capacity_bytes)),
                        format!("The data pool {pool_id} this card draws on is used up for this month ({} of {}); every card in it is stopped.", mb(p.used_bytes), mb(p.capacity_bytes)),
                    ),
                    tr(
                        lang,
                        format!("如需立即恢复，调用 TopUpPool 为流量池 {pool_id} 充值至少 {needed} 字节（{}）。", mb(needed)),
                        format!("To restore it now, call TopUpPool on pool {pool_id} with at least {needed} bytes ({})." , mb(needed)),
                    ),
                    needed,
                )
            }
            None => (
                tr(
                    lang,
                    format!("该卡所在的流量池 {pool_id} 本月已用完。"),
                    format!(
                        "The data pool {pool_id} this card draws on is used up for this month."
                    ),
                ),
                tr(
                    lang,
                    format!("如需立即恢复，调用 TopUpPool 为流量池 {pool_id} 充值。"),
                    format!("To restore it now, call TopUpPool on pool {pool_id}."),
                ),
                1,
            ),
        };
        evidence.push(ev(
            "restores_at",
            self.cycle_end.timestamp(),
            "unix_seconds",
        ));
        Finding {
            code: "POOL_EXHAUSTED",
            severity: Severity::Blocking,
            message,
            evidence,
            steps: vec![
                Step {
                    takes_effect_at: Some(self.cycle_end),
                    ..step(
                        Action::Wait,
                        tr(
                            lang,
                            format!("无需操作：{}（下个计费周期开始，充值失效、用量清零）自动复机。", when(self.cycle_end)),
                            format!("Nothing to do: the card restores automatically at {} (the pool's next billing cycle).", when(self.cycle_end)),
                        ),
                    )
                },
                Step {
                    optional: true,
                    pool_id: Some(pool_id),
                    bytes: needed,
                    ..step(Action::TopUpPool, top_up)
                },
            ],
        }
    }

    fn blocking(&self, reason: StopReason) -> Finding {
        let lang = self.lang;
        let c = self.card;
        match reason {
            StopReason::Expired => self.expired(),
            StopReason::Arrears => self.arrears(),
            StopReason::RealName => Finding {
                code: "REAL_NAME_MISSING",
                severity: Severity::Blocking,
                message: tr(
                    lang,
                    "卡未完成实名认证，按规定违规停机。".to_string(),
                    "The card has no completed real-name verification and is stopped under the real-name rules.".to_string(),
                ),
                evidence: vec![],
                steps: vec![step(
                    Action::VerifyRealName,
                    tr(
                        lang,
                        "完成实名认证（入口通常在充值页面），记录后调用 VerifyRealName，立即生效。".to_string(),
                        "Complete real-name verification (the entry is usually where you recharge), then record it with VerifyRealName; it takes effect at once.".to_string(),
                    ),
                )],
            },
            StopReason::DeviceMismatch => Finding {
                code: "DEVICE_MISMATCH",
                severity: Severity::Blocking,
                message: tr(
                    lang,
                    "机卡分离：该卡绑定了设备 IMEI，运营商发现它被插入了其他设备并停机。普通复机无法恢复。".to_string(),
                    "Card/device separation (机卡分离): the card is bound to its device's IMEI and the carrier found it in another device. A plain restore does not bring it back.".to_string(),
                ),
                evidence: vec![],
                steps: vec![step(
                    Action::ContactCarrier,
                    tr(
                        lang,
                        format!("把卡放回绑定的设备，并联系代理商请{}处理机卡绑定（解绑或重新绑定）。", self.carrier()),
                        format!("Put the card back into its bound device and ask your reseller to have {} re-bind or unbind it.", self.carrier()),
                    ),
                )],
            },
            StopReason::OverQuota => {
                let quota = c.plan.monthly_quota_bytes;
                let used = self.facts.cycle_usage_bytes.max(c.cycle_usage_bytes);
                self.waits_for_cycle(
                    "OVER_QUOTA",
                    format!("本月流量已用完（{} / {}），卡开通了超量自动停机。", mb(used), mb(quota)),
                    format!("This month's data is used up ({} of {}) and the card has auto-suspend on over-quota.", mb(used), mb(quota)),
                    "如需立即恢复，请向代理商购买流量加油包。",
                    "To restore it now, buy a data top-up from your reseller.",
                )
            }
            StopReason::PoolExhausted => self.pool_exhausted(),
            StopReason::TestDataUsed => self.waits_for_cycle(
                "TEST_GIFT_USED_UP",
                "测试期赠送流量已用完，卡等待进入计费期。".to_string(),
                "The test-period gift is used up; the card waits to move to billing.".to_string(),
                "联系代理商提前开通计费期。",
                "Ask your reseller to start billing early.",
            ),
            StopReason::Manual => Finding {
                code: "MANUAL_STOP",
                severity: Severity::Blocking,
                message: tr(lang, "卡被人工停用。".to_string(), "The card was stopped by hand (manual stop).".to_string()),
                evidence: vec![],
                steps: vec![step(
                    Action::ResumeCard,
                    tr(
                        lang,
                        "调用 ResumeCard 人工复机（人工停机不会自动恢复）。".to_string(),
                        "Call ResumeCard; a manual stop never lifts by itself.".to_string(),
                    ),
                )],
            },
        }
    }

    /// A change sent to the carrier whose outcome simgate is still settling.
    fn change_pending(&self) -> Option<Finding> {
        let p = self.card.pending.as_ref()?;
        let lang = self.lang;
        let (zh, en) = match p.action {
            crate::domain::CarrierAction::Stop => ("停机", "stop"),
            crate::domain::CarrierAction::Restore => ("复机", "restore"),
            crate::domain::CarrierAction::Cancel => ("销户", "cancellation"),
        };
        Some(Finding {
            code: "CARRIER_CHANGE_PENDING",
            severity: Severity::Warning,
            message: tr(
                lang,
                format!("{} 已向{}发送{zh}请求，但没有收到结果；simgate 正在向运营商核实，核实后卡的状态随之更新。在此之前该卡的其他变更会被拒绝。", when(p.since), self.carrier()),
                format!("A {en} was sent to {} at {} and its answer never came; simgate is confirming it with the carrier and updates the card as soon as it knows. Until then, other changes to the card are refused.", self.carrier(), when(p.since)),
            ),
            evidence: vec![ev("pending_since", p.since.timestamp(), "unix_seconds")],
            steps: vec![step(
                Action::Wait,
                tr(
                    lang,
                    "稍后再查看；用相同的 request_id 重试原请求即可得到结果。".to_string(),
                    "Check again shortly; retrying the original request with the same request_id returns its outcome.".to_string(),
                ),
            )],
        })
    }

    /// The carrier shows another service state than the card says, with no change open: found
    /// now, or recorded by the last sync.
    fn carrier_state_differs(&self) -> Option<Finding> {
        if self.card.pending.is_some() {
            return None;
        }
        let expected = self.card.expected_carrier_state();
        let seen = match self.facts.service_state {
            Some(s) if s != expected => s.to_string(),
            Some(_) => return None,
            None => self.card.drift.as_ref()?.carrier_state.clone(),
        };
        let lang = self.lang;
        let since = self.card.drift.as_ref().map(|d| d.since);
        let stopped_behind_our_back = seen != "ACTIVE" && expected == "ACTIVE";
        let mut evidence = Vec::new();
        if let Some(t) = since {
            evidence.push(ev("drift_since", t.timestamp(), "unix_seconds"));
        }
        Some(Finding {
            code: "CARRIER_STATE_DIFFERS",
            severity: if stopped_behind_our_back {
                Severity::Blocking
            } else {
                Severity::Warning
            },
            message: tr(
                lang,
                format!("{}显示该卡为 {seen}，而 simgate 记录的状态应为 {expected}，且没有未完成的变更可以解释：卡在 simgate 之外被改动过（例如在运营商平台上操作）。", self.carrier()),
                format!("{} shows the card as {seen} while simgate's record implies {expected}, and no change of simgate's explains it: the card was changed outside simgate (for example on the carrier's own platform)."
                , self.carrier()),
            ),
            evidence,
            steps: vec![step(
                Action::ContactCarrier,
                tr(
                    lang,
                    "请代理商核对运营商平台上的操作记录，确定以哪一方为准。".to_string(),
                    "Ask your reseller to check the carrier account's change log and decide which state is right.".to_string(),
                ),
            )],
        })
    }

    fn no_recent_session(&self) -> Option<Finding> {
        let silent_since = match self.facts.last_session_at {
            Some(at) if self.now - at < SESSION_SILENCE => return None,
            other => other,
        };
        let lang = self.lang;
        let hours = silent_since.map(|at| (self.now - at).num_hours());
        let mut evidence = vec![];
        if let (Some(at), Some(h)) = (silent_since, hours) {
            evidence.push(ev("last_session_at", at.timestamp(), "unix_seconds"));
            evidence.push(ev("hours_since_last_session", h, "hours"));
        }
        let since = match (silent_since, lang) {
            (Some(at), Lang::Zh) => format!("最近一次数据会话在 {}。", when(at)),
            (Some(at), Lang::En) => format!("The last data session was at {}.", when(at)),
            (None, Lang::Zh) => "运营商没有该卡的数据会话记录。".to_string(),
            (None, Lang::En) => {
                "The carrier has no data session on record for this card.".to_string()
            }
        };
        let bound_warning = if self.card.carrier == CarrierId::Mobile {
            tr(
                lang,
                "注意：中国移动的卡可能绑定了设备（机卡分离检测），换到其他设备后次日会被停机且难以恢复——换卡测试前请先向代理商确认该卡未绑定。".to_string(),
                "Warning: a China Mobile card may be bound to its device (机卡分离 check); in another device it is stopped the next day and is hard to restore. Ask your reseller to confirm it is not bound before you try this.".to_string(),
            )
        } else {
            String::new()
        };
        Some(Finding {
            code: "NO_RECENT_SESSION",
            severity: Severity::Warning,
            message: tr(
                lang,
                format!("账户正常，卡未被停机，但近 24 小时没有上网。{since}问题很可能在网络覆盖或设备。"),
                format!("The account is fine and the card is not stopped, but it has not been online for 24 hours. {since} The cause is most likely coverage or the device."),
            ),
            evidence,
            steps: vec![
                step(Action::RestartDevice, tr(lang, "重启设备并重置其网络设置。".to_string(), "Restart the device and reset its network settings.".to_string())),
                step(
                    Action::MoveToAnotherDevice,
                    tr(
                        lang,
                        format!("把卡插到另一台设备上试：能上网说明是原设备兼容性问题；仍无信号说明卡本身故障，请申请换卡。{bound_warning}"),
                        format!("Try the card in another device: if it works there, the first device is incompatible; if there is still no signal, the card itself is faulty; ask for a replacement. {bound_warning}"),
                    ),
                ),
                step(
                    Action::CheckCoverage,
                    tr(
                        lang,
                        format!("确认设备所在地有{}物联网基站覆盖；覆盖因地区而异，必要时换用其他运营商的卡。", self.carrier()),
                        format!("Check that {} IoT base stations cover where the device is; coverage differs by region, so consider another carrier's card there.", self.carrier()),
                    ),
                ),
            ],
        })
    }

    fn warnings(&self) -> Vec<Finding> {
        let c = self.card;
        let lang = self.lang;
        let mut out = Vec::new();
        let expired = c.stop_reasons.contains(StopReason::Expired);
        let quota = c.plan.monthly_quota_bytes;
        let used = self.facts.cycle_usage_bytes.max(c.cycle_usage_bytes);
        let elapsed = self.now - c.cycle_start;
        if c.stage == LifecycleStage::Billing
            && !c.stop_reasons.contains(StopReason::OverQuota)
            && !expired
        {
            if used >= quota {
                out.push(Finding {
                    code: "OVERAGE",
                    severity: Severity::Warning,
                    message: tr(
                        lang,
                        format!("本月已超出套餐流量 {}（未开通超量停机），超出部分将按运营商资费另行计费。", mb(used - quota)),
                        format!("This month's usage is {} over the quota (no auto-suspend); the carrier bills the overage.", mb(used - quota)),
                    ),
                    evidence: vec![
                        ev("used_bytes", used.min(i64::MAX as u64) as i64, "bytes"),
                        ev("quota_bytes", quota.min(i64::MAX as u64) as i64, "bytes"),
                    ],
                    steps: vec![],
                });
            } else if used > 0 && elapsed >= Duration::hours(1) {
                let rate = used as f64 / elapsed.num_seconds() as f64;
                let secs_left = (quota - used) as f64 / rate;
                let runs_out = self.now + Duration::seconds(secs_left.min(1e12) as i64);
                if runs_out < self.cycle_end {
                    let days = days_until(self.now, runs_out);
                    let what = if c.plan.auto_suspend_over_quota {
                        tr(
                            lang,
                            "届时卡将自动停机，直到下个计费周期。".to_string(),
                            "The card will then stop until the next cycle.".to_string(),
                        )
                    } else {
                        tr(
                            lang,
                            "之后将产生超量费用。".to_string(),
                            "Overage charges follow.".to_string(),
                        )
                    };
                    out.push(Finding {
                        code: "QUOTA_RUNS_OUT_SOON",
                        severity: Severity::Warning,
                        message: tr(
                            lang,
                            format!("按本周期日均用量，流量将在约 {days} 天后（{}）用完，早于周期结束 {}。{what}", when(runs_out), when(self.cycle_end)),
                            format!("At this cycle's daily rate the quota runs out in about {days} days ({}), before the cycle ends at {}. {what}", when(runs_out), when(self.cycle_end)),
                        ),
                        evidence: vec![
                            ev("used_bytes", used as i64, "bytes"),
                            ev("quota_bytes", quota.min(i64::MAX as u64) as i64, "bytes"),
                            ev("bytes_per_day", (rate * 86_400.0) as i64, "bytes"),
                            ev("days_until_quota_used", days, "days"),
                            ev("quota_used_at", runs_out.timestamp(), "unix_seconds"),
                        ],
                        steps: vec![Step {
                            optional: true,
                            ..step(Action::DataTopUp, tr(lang, "提前购买流量加油包，或降低设备用量。".to_string(), "Buy a data top-up in time, or reduce the device's traffic.".to_string()))
                        }],
                    });
                }
            }
        }
        if !expired
            && c.plan.validity_end > self.now
            && c.plan.validity_end - self.now <= Duration::days(VALIDITY_WARNING_DAYS)
        {
            let days = days_until(self.now, c.plan.validity_end);
            out.push(Finding {
                code: "VALIDITY_ENDS_SOON",
                severity: Severity::Warning,
                message: tr(
                    lang,
                    format!("套餐将于 {}（{} 天后）到期，到期后停机保号，每月保号费 {}。", when(c.plan.validity_end), days, money(lang, self.policy.retention_fee)),
                    format!("The plan ends at {} (in {} days); after that the card is held in number retention at {} a month.", when(c.plan.validity_end), days, money(lang, self.policy.retention_fee)),
                ),
                evidence: vec![
                    ev("validity_end", c.plan.validity_end.timestamp(), "unix_seconds"),
                    ev("days_until_expiry", days, "days"),
                ],
                steps: vec![Step {
                    cost: c.plan.monthly_fee,
                    months: 1,
                    ..step(Action::RenewPlan, tr(lang, "到期前续费（RenewPlan）。".to_string(), "Renew before it ends (RenewPlan).".to_string()))
                }],
            });
        }
        let fee = self.next_fee();
        let plan_valid_then = c.plan.validity_end > self.cycle_end;
        if !expired && !c.balance.is_negative() && fee.0 > 0 && plan_valid_then && c.balance < fee {
            let short = Fen(fee.0 - c.balance.0);
            out.push(Finding {
                code: "BALANCE_SHORT_FOR_NEXT_FEE",
                severity: Severity::Warning,
                message: tr(
                    lang,
                    format!("余额 {} 不足以支付 {} 扣取的月费 {}，届时将欠费停机。", money(lang, c.balance), when(self.cycle_end), money(lang, fee)),
                    format!("The balance of {} does not cover the {} fee due at {}: the card will stop for arrears then.", money(lang, c.balance), money(lang, fee), when(self.cycle_end)),
                ),
                evidence: vec![
                    ev("balance_fen", c.balance.0, "fen"),
                    ev("next_fee_fen", fee.0, "fen"),
                    ev("next_fee_at", self.cycle_end.timestamp(), "unix_seconds"),
                    ev("shortfall_fen", short.0, "fen"),
                ],
                steps: vec![Step {
                    cost: short,
                    ..step(Action::Recharge, tr(lang, format!("在 {} 前充值至少 {}。", when(self.cycle_end), money(lang, short)), format!("Recharge at least {} before {}.", money(lang, short), when(self.cycle_end))))
                }],
            });
        }
        if c.stage == LifecycleStage::Test && self.policy.test_gift_bytes > 0 {
            let permille = c.test_used_bytes.saturating_mul(1000) / self.policy.test_gift_bytes;
            if permille >= GIFT_WARNING_PERMILLE {
                out.push(Finding {
                    code: "TEST_GIFT_RUNNING_LOW",
                    severity: Severity::Warning,
                    message: tr(
                        lang,
                        format!("测试期赠送流量已用 {}‰；用完后立即进入计费期并扣取月费 {}，当前余额 {}。", permille, money(lang, c.plan.monthly_fee), money(lang, c.balance)),
                        format!("{}‰ of the test gift is used; when it runs out billing starts at once and the {} monthly fee is charged (balance now {}).", permille, money(lang, c.plan.monthly_fee), money(lang, c.balance)),
                    ),
                    evidence: vec![
                        ev("test_used_bytes", c.test_used_bytes.min(i64::MAX as u64) as i64, "bytes"),
                        ev("test_gift_bytes", self.policy.test_gift_bytes.min(i64::MAX as u64) as i64, "bytes"),
                    ],
                    steps: vec![],
                });
            }
        }
        out
    }
}

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
            .find(|h| h.kind == "card.cancelled")
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

/// A finding's short name for a sentence a customer reads.
fn label(lang: Lang, code: &str) -> &'static str {
    match (code, lang) {
        ("EXPIRED_IN_RETENTION", Lang::Zh) => "套餐到期（停机保号）",
        ("EXPIRED_IN_RETENTION", Lang::En) => "expired plan",
        ("RESTORE_PENDING_AFTER_RENEWAL", Lang::Zh) => "续费后等待复机",
        ("RESTORE_PENDING_AFTER_RENEWAL", Lang::En) => "restore pending after renewal",
        ("ARREARS", Lang::Zh) => "欠费",
        ("ARREARS", Lang::En) => "arrears",
        ("REAL_NAME_MISSING", Lang::Zh) => "未实名认证",
        ("REAL_NAME_MISSING", Lang::En) => "missing real-name verification",
        ("DEVICE_MISMATCH", Lang::Zh) => "机卡分离",
        ("DEVICE_MISMATCH", Lang::En) => "card/device separation",
        ("OVER_QUOTA", Lang::Zh) => "流量超量",
        ("OVER_QUOTA", Lang::En) => "data quota used up",
        ("POOL_EXHAUSTED", Lang::Zh) => "流量池用完",
        ("POOL_EXHAUSTED", Lang::En) => "data pool used up",
        ("TEST_GIFT_USED_UP", Lang::Zh) => "测试流量用完",
        ("TEST_GIFT_USED_UP", Lang::En) => "test gift used up",
        ("MANUAL_STOP", Lang::Zh) => "人工停机",
        ("MANUAL_STOP", Lang::En) => "manual stop",
        (_, Lang::Zh) => "其他原因",
        (_, Lang::En) => "other",
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

fn summary(ctx: &Ctx<'_>, verdict: Verdict, blocking: &[&'static str], total: usize) -> String {
    let lang = ctx.lang;
    match verdict {
        // Their first finding says it best.
        Verdict::Cancelled | Verdict::ChangePending | Verdict::CarrierStateDiffers => String::new(),
        Verdict::OnlineOk => tr(
            lang,
            format!("卡状态正常，可以上网。{}", if total > 0 { format!("有 {total} 条提醒。") } else { String::new() }),
            format!("The card is in service and online.{}", if total > 0 { format!(" {total} warning(s) below.") } else { String::new() }),
        ),
        Verdict::LikelyNetworkOrDevice => tr(
            lang,
            "账户没有问题，卡未停机；请按以下步骤排查网络和设备。".to_string(),
            "Nothing on the account stops this card; work through the network and device checks below.".to_string(),
        ),
        Verdict::BlockedByAccount => {
            let order = blocking
                .iter()
                .map(|c| label(lang, c))
                .collect::<Vec<_>>()
                .join(" → ");
            let why = if blocking.first() == Some(&"EXPIRED_IN_RETENTION") && blocking.len() > 1 {
                tr(lang, "先续费：不续费号码会被注销，单独充值也不能让过期的卡复机。".to_string(), "Renew first: without it the number is cancelled, and no recharge restores an expired card.".to_string())
            } else if blocking.first() == Some(&"ARREARS") && blocking.len() > 1 {
                tr(lang, "先还清欠款：欠费期间其他处理都不能让卡复机。".to_string(), "Pay the arrears first: while they are owed nothing else brings the card back.".to_string())
            } else {
                String::new()
            };
            tr(
                lang,
                format!("卡因 {} 项原因停机，需按顺序处理：{order}。{why}", blocking.len()),
                format!("{} thing(s) stop this card; clear them in this order: {order}. {why}", blocking.len()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::accrue_usage;
    use crate::domain::rules::tests::{new_card, now};
    use crate::domain::rules::{open_card, NewCard};
    use crate::domain::CarrierPolicy;

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
            last_session_at: Some(now() - Duration::hours(1)),
            service_state: None,
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
                kind: "card.retention_fee_charged".into(),
                at: end,
                amount: Fen(-500),
            },
            HistoryEntry {
                kind: "card.retention_fee_charged".into(),
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
            last_session_at: Some(now() - Duration::hours(30)),
            service_state: None,
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
        let d = run(&telecom, &CarrierFacts::default(), &[], Lang::En);
        assert_eq!(d.verdict, Verdict::LikelyNetworkOrDevice);
        assert!(!d.findings[0].steps[1].text.contains("bound"));
    }

    #[test]
    fn finding_quota_runs_out_soon_forecasts_from_the_cycle_rate() {
        // 90% used 24.4 days into the cycle: the last 10% lasts 2.7 more days, before 1 Dec.
        let card = card_with(CarrierId::Mobile, |_| {});
        let facts = CarrierFacts {
            cycle_usage_bytes: card.plan.monthly_quota_bytes / 10 * 9,
            last_session_at: Some(now()),
            service_state: None,
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
            last_session_at: Some(now()),
            service_state: None,
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
            last_session_at: Some(now()),
            service_state: None,
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
