//! The findings: one method per stop reason or warning, each reading the card, its carrier's
//! rules, the carrier's report and the recent history, and returning its evidence and remedy
//! steps (what each costs and when it takes effect under this carrier's rules).

use crate::domain::event;
use chrono::{DateTime, Duration, Utc};

use crate::domain::money::MAX_RECHARGE;
use crate::domain::{
    ArrearsRecovery, Card, CarrierId, CarrierPolicy, Fen, LifecycleStage, RenewalRestore,
    StopReason,
};

use super::*;

/// Whole days from `a` to `b`, rounded up (a started day counts).
pub(super) fn days_until(a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
    ((b - a).num_seconds() + 86_399).div_euclid(86_400)
}

pub(super) fn ev(name: &'static str, value: i64, unit: &'static str) -> Evidence {
    Evidence { name, value, unit }
}

pub(super) fn step(action: Action, text: String) -> Step {
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
pub(super) fn renewal_takes_effect(
    policy: &CarrierPolicy,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    Some(policy.renewal_restore_at(now)).filter(|at| *at > now)
}

pub(super) struct Ctx<'a> {
    pub(super) card: &'a Card,
    pub(super) policy: &'a CarrierPolicy,
    pub(super) facts: &'a CarrierFacts,
    pub(super) pool: Option<&'a PoolFacts>,
    pub(super) history: &'a [HistoryEntry],
    pub(super) now: DateTime<Utc>,
    pub(super) lang: Lang,
    pub(super) cycle_end: DateTime<Utc>,
}

impl Ctx<'_> {
    /// The remedy "nothing to do: wait until `at`", with its words in both languages.
    fn wait_until(&self, at: DateTime<Utc>, zh: String, en: String) -> Step {
        Step {
            takes_effect_at: Some(at),
            ..step(Action::Wait, tr(self.lang, zh, en))
        }
    }

    pub(super) fn carrier(&self) -> &'static str {
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

    pub(super) fn expired(&self) -> Finding {
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
            .filter(|h| h.kind == event::card::RETENTION_FEE_CHARGED && h.at >= end)
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

    pub(super) fn arrears(&self) -> Finding {
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

    pub(super) fn gift_used_up(&self) -> Option<Finding> {
        let h = self.history.iter().rev().find(|h| {
            h.kind == event::card::TEST_GIFT_USED_UP && self.now - h.at <= Duration::days(62)
        })?;
        let fee = self
            .history
            .iter()
            .find(|x| x.kind == event::card::MONTHLY_FEE_CHARGED && x.at == h.at)
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
                self.wait_until(
                    self.cycle_end,
                    format!("无需操作：{}（下个计费周期开始）自动复机。", when(self.cycle_end)),
                    format!("Nothing to do: the card restores automatically at {} (next billing cycle).", when(self.cycle_end)),
                ),
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
                self.wait_until(
                    self.cycle_end,
                    format!("无需操作：{}（下个计费周期开始，充值失效、用量清零）自动复机。", when(self.cycle_end)),
                    format!("Nothing to do: the card restores automatically at {} (the pool's next billing cycle).", when(self.cycle_end)),
                ),
                Step {
                    optional: true,
                    pool_id: Some(pool_id),
                    bytes: needed,
                    ..step(Action::TopUpPool, top_up)
                },
            ],
        }
    }

    pub(super) fn blocking(&self, reason: StopReason) -> Finding {
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
                steps: self.device_mismatch_steps(),
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

    /// What brings a card stopped for 机卡分离 back: the binding route, never a plain restore.
    fn device_mismatch_steps(&self) -> Vec<Step> {
        let lang = self.lang;
        let modes = &self.facts.rebind_modes;
        let device = self
            .facts
            .device_imei
            .as_deref()
            .map(|i| (format!("（IMEI {i}）"), format!(" (IMEI {i})")))
            .unwrap_or_default();
        let back = step(
            Action::MoveToAnotherDevice,
            tr(
                lang,
                "或者把卡放回它绑定的设备；运营商在下一次每日检测时发现卡已回到原设备。".to_string(),
                "Or put the card back into the device it is bound to; the carrier sees it there at its next daily check.".to_string(),
            ),
        );
        if modes.contains(&"CURRENT_DEVICE") || modes.contains(&"IMEI") {
            let how = if modes.contains(&"CURRENT_DEVICE") {
                (
                    "current_device = true（绑定到卡现在所在的设备）或 imei",
                    "current_device = true (bind it to the device it is in now) or imei",
                )
            } else {
                ("imei（要绑定的设备）", "imei (the device to bind it to)")
            };
            vec![
                step(
                    Action::RebindCard,
                    tr(
                        lang,
                        format!("调用 RebindCard，{}，把卡重新绑定到现在的设备{}。运营商的停机原因解除后（通常在下一次每日检测时），simgate 随之恢复该卡。", how.0, device.0),
                        format!("Call RebindCard with {} to bind the card to its device{}. Once the carrier's stop reason clears (usually at its next daily check), simgate brings the card back.", how.1, device.1),
                    ),
                ),
                Step {
                    optional: true,
                    ..back
                },
            ]
        } else {
            vec![step(
                Action::ContactCarrier,
                tr(
                    lang,
                    format!("把卡放回绑定的设备，或联系代理商请{}处理机卡绑定（解绑或重新绑定）：该卡所在平台没有 simgate 可调用的绑定接口。", self.carrier()),
                    format!("Put the card back into its bound device, or ask your reseller to have {} re-bind or unbind it: the card's platform has no binding call simgate can make.", self.carrier()),
                ),
            )]
        }
    }

    /// A change sent to the carrier whose outcome simgate is still settling.
    pub(super) fn change_pending(&self) -> Option<Finding> {
        let p = self.card.pending.as_ref()?;
        let lang = self.lang;
        let (zh, en) = match p.action {
            crate::domain::CarrierAction::Stop => ("停机", "stop"),
            crate::domain::CarrierAction::Restore => ("复机", "restore"),
            crate::domain::CarrierAction::Cancel => ("销户", "cancellation"),
            crate::domain::CarrierAction::Rebind => ("机卡重绑", "rebinding"),
        };
        if p.state() == crate::domain::OrderState::Scheduled {
            let at = p.not_before.unwrap_or(p.since);
            return Some(Finding {
                code: "CARRIER_CHANGE_SCHEDULED",
                severity: Severity::Warning,
                message: tr(
                    lang,
                    format!("{zh}请求已受理，将于 {} 发送给{}：运营商不允许同一张卡在短时间内重复办理（重复办理窗口）。在此之前该卡的其他变更会被拒绝。", when(at), self.carrier()),
                    format!("The {en} is accepted and will be sent to {} at {}: the carrier refuses a second change to one card within its repeat window. Until then, other changes to the card are refused.", self.carrier(), when(at)),
                ),
                evidence: vec![ev("not_before", at.timestamp(), "unix_seconds")],
                steps: vec![Step {
                    takes_effect_at: Some(at),
                    ..step(
                        Action::Wait,
                        tr(
                            lang,
                            format!("等待到 {}；simgate 届时自动发送。", when(at)),
                            format!("Wait until {}; simgate sends it then by itself.", when(at)),
                        ),
                    )
                }],
            });
        }
        if let (crate::domain::OrderState::Submitted, Some(order)) = (p.state(), &p.order_id) {
            return Some(Finding {
                code: "CARRIER_ORDER_IN_PROGRESS",
                severity: Severity::Warning,
                message: tr(
                    lang,
                    format!("{} 已向{}发送{zh}请求，运营商以工单 {order} 受理，尚未完成；simgate 跟踪该工单，完成后卡的状态随之更新。", when(p.since), self.carrier()),
                    format!("A {en} was sent to {} at {}; the carrier took it as order {order}, not completed yet. simgate follows the order and updates the card once it completes.", self.carrier(), when(p.since)),
                ),
                evidence: vec![ev("pending_since", p.since.timestamp(), "unix_seconds")],
                steps: vec![step(
                    Action::Wait,
                    tr(
                        lang,
                        "等待运营商完成工单。".to_string(),
                        "Wait for the carrier to complete the order.".to_string(),
                    ),
                )],
            });
        }
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
    pub(super) fn carrier_state_differs(&self) -> Option<Finding> {
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

    /// The carrier answered but simgate could not read the card's state or usage from it (now,
    /// or at the last sync): what simgate shows may be stale, and no state is guessed.
    pub(super) fn carrier_state_unknown(&self) -> Option<Finding> {
        let why = self
            .facts
            .carrier_unknown
            .as_deref()
            .or(self.card.carrier_unknown.as_deref())?;
        let lang = self.lang;
        Some(Finding {
            code: "CARRIER_STATE_UNKNOWN",
            severity: Severity::Warning,
            message: tr(
                lang,
                format!("{}对该卡的应答无法识别（{why}）：simgate 没有据此更改卡的状态或用量，显示的是最近一次能读到的值。", self.carrier()),
                format!("{} answered about this card in a form simgate cannot read ({why}): simgate applied neither a state nor a usage from it, and shows the last values it could read.", self.carrier()),
            ),
            evidence: vec![],
            steps: vec![step(
                Action::ContactCarrier,
                tr(
                    lang,
                    "请在运营商平台上查看该卡的状态和本月用量；如状态不在平台文档之列，请代理商向运营商确认其含义。".to_string(),
                    "Check the card's status and this cycle's usage on the carrier's own platform; if the status is not one the platform documents, ask your reseller to confirm with the carrier what it means.".to_string(),
                ),
            )],
        })
    }

    pub(super) fn no_recent_session(&self) -> Option<Finding> {
        let silent_since = match self.facts.last_session {
            LastSession::At(at) if self.now - at < SESSION_SILENCE => return None,
            // The carrier answered in a form that says nothing either way: no finding rather
            // than "never connects" for every card.
            LastSession::Unknown => return None,
            other => other.at(),
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

    pub(super) fn warnings(&self) -> Vec<Finding> {
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
