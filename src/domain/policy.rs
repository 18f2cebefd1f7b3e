//! Each carrier's rules for how cards stop and come back (rules.md §3 table), and the calendar
//! arithmetic they need: billing cycles, month additions and day ends in Asia/Shanghai time,
//! where carriers bill.

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Asia::Shanghai;
use serde::{Deserialize, Serialize};

use super::{CarrierId, Fen};

/// What happens when a card in arrears is recharged back to a non-negative balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArrearsRecovery {
    /// The carrier restores the card by itself.
    Auto,
    /// The card stays stopped until someone asks for a restore (ResumeCard).
    Manual,
}

/// When a renewed card that had expired is restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenewalRestore {
    Immediate,
    /// The same day (当天): once the carrier has processed the renewal
    /// (`same_day_restore_delay_minutes` after it), but never later than 23:59:59 of the day
    /// of renewal, Asia/Shanghai time.
    SameDay,
    /// At the start of the next billing cycle.
    NextCycle,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarrierPolicy {
    pub carrier: CarrierId,
    /// Day of month (1-28) a billing cycle starts; 1 is the calendar month.
    pub cycle_start_day: u32,
    /// How long an expired card is held in 停机保号 before its number is released.
    pub retention_months: u32,
    /// Charged per started month of retention.
    pub retention_fee: Fen,
    pub cancel_when_retention_ends: bool,
    pub arrears_recovery: ArrearsRecovery,
    pub renewal_restore: RenewalRestore,
    /// For `renewal_restore = same_day`: how long after a renewal the carrier restores the card
    /// (its processing time), capped at the end of the day of renewal.
    #[serde(default = "default_same_day_restore_delay_minutes")]
    pub same_day_restore_delay_minutes: u32,
    pub test_period_days: u32,
    pub test_gift_bytes: u64,
    pub silent_period_days: u32,
    /// Charge the first billing month per day (China Telecom) instead of in full.
    pub prorate_first_month: bool,
}

const MIB: u64 = 1024 * 1024;

/// rules.md §3: a same-day restore comes about two hours after the renewal.
pub const DEFAULT_SAME_DAY_RESTORE_DELAY_MINUTES: u32 = 120;

fn default_same_day_restore_delay_minutes() -> u32 {
    DEFAULT_SAME_DAY_RESTORE_DELAY_MINUTES
}

impl CarrierPolicy {
    /// The documented defaults of rules.md §3; every field can be overridden in configuration.
    pub fn default_for(carrier: CarrierId) -> CarrierPolicy {
        let base = CarrierPolicy {
            carrier,
            cycle_start_day: 1,
            retention_months: 3,
            retention_fee: Fen(500),
            cancel_when_retention_ends: true,
            arrears_recovery: ArrearsRecovery::Auto,
            renewal_restore: RenewalRestore::SameDay,
            same_day_restore_delay_minutes: DEFAULT_SAME_DAY_RESTORE_DELAY_MINUTES,
            test_period_days: 30,
            test_gift_bytes: 100 * MIB,
            silent_period_days: 180,
            prorate_first_month: false,
        };
        match carrier {
            CarrierId::Mobile => base,
            CarrierId::Unicom => CarrierPolicy {
                cycle_start_day: 27,
                arrears_recovery: ArrearsRecovery::Manual,
                renewal_restore: RenewalRestore::NextCycle,
                silent_period_days: 360,
                ..base
            },
            CarrierId::Telecom => CarrierPolicy {
                renewal_restore: RenewalRestore::Immediate,
                prorate_first_month: true,
                ..base
            },
        }
    }

    /// Checks values a configuration file could get wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=28).contains(&self.cycle_start_day) {
            return Err(format!(
                "cycle_start_day must be 1..=28, got {}",
                self.cycle_start_day
            ));
        }
        if self.retention_fee.is_negative() {
            return Err("retention_fee must not be negative".into());
        }
        if self.retention_months > 120 {
            return Err("retention_months must be at most 120".into());
        }
        if self.same_day_restore_delay_minutes > 24 * 60 {
            return Err(format!(
                "same_day_restore_delay_minutes must be at most 1440 (one day), got {}",
                self.same_day_restore_delay_minutes
            ));
        }
        Ok(())
    }

    /// When a card that had expired and is renewed at `renewed_at` is restored under this
    /// carrier's `renewal_restore` rule; `renewed_at` itself means at once.
    pub fn renewal_restore_at(&self, renewed_at: DateTime<Utc>) -> DateTime<Utc> {
        match self.renewal_restore {
            RenewalRestore::Immediate => renewed_at,
            RenewalRestore::SameDay => {
                let processed = renewed_at
                    + chrono::Duration::minutes(i64::from(self.same_day_restore_delay_minutes));
                // 当天: still the day of renewal, whatever the processing delay.
                let last_second = end_of_local_day(renewed_at) - chrono::Duration::seconds(1);
                processed.min(last_second.max(renewed_at))
            }
            RenewalRestore::NextCycle => self.cycle_bounds(renewed_at).1,
        }
    }

    /// The billing cycle `[start, end)` that contains `now`.
    pub fn cycle_bounds(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let local = now.with_timezone(&Shanghai).date_naive();
        let this_month_start = first_of_month(local)
            .with_day(self.cycle_start_day)
            .unwrap_or(local);
        let start = if local >= this_month_start {
            this_month_start
        } else {
            this_month_start - Months::new(1)
        };
        let end = start + Months::new(1);
        (local_midnight(start), local_midnight(end))
    }

    /// When the number of a card whose plan ended at `validity_end` is released.
    pub fn retention_ends_at(&self, validity_end: DateTime<Utc>) -> DateTime<Utc> {
        add_months(validity_end, self.retention_months)
    }
}

fn first_of_month(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

fn local_midnight(d: NaiveDate) -> DateTime<Utc> {
    // Asia/Shanghai has no daylight saving time, so every local midnight exists exactly once.
    Shanghai
        .from_local_datetime(&d.and_time(NaiveTime::MIN))
        .single()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&d.and_time(NaiveTime::MIN)))
}

/// Adds calendar months in Shanghai time, clamping to the month's last day (Jan 31 + 1 = Feb 28).
pub fn add_months(t: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    let local = t.with_timezone(&Shanghai).naive_local();
    let moved = local
        .checked_add_months(Months::new(months))
        .unwrap_or(local);
    Shanghai
        .from_local_datetime(&moved)
        .single()
        .map(|x| x.with_timezone(&Utc))
        .unwrap_or(t)
}

/// The local (Asia/Shanghai) midnight that starts `t`'s day: the key of daily usage history.
pub fn start_of_local_day(t: DateTime<Utc>) -> DateTime<Utc> {
    local_midnight(t.with_timezone(&Shanghai).date_naive())
}

/// The next local midnight after `t`: the latest moment "the same day" can mean.
pub fn end_of_local_day(t: DateTime<Utc>) -> DateTime<Utc> {
    let d = t.with_timezone(&Shanghai).date_naive();
    local_midnight(d.succ_opt().unwrap_or(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shanghai(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Shanghai
            .with_ymd_and_hms(y, m, d, h, 0, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn rule_carrier_policy_defaults_match_the_rules_table() {
        let m = CarrierPolicy::default_for(CarrierId::Mobile);
        assert_eq!((m.retention_months, m.retention_fee), (3, Fen(500)));
        assert!(m.cancel_when_retention_ends);
        assert_eq!(m.arrears_recovery, ArrearsRecovery::Auto);
        assert_eq!(m.renewal_restore, RenewalRestore::SameDay);
        assert_eq!(m.same_day_restore_delay_minutes, 120, "two hours");
        assert_eq!(m.cycle_start_day, 1);
        assert_eq!(m.silent_period_days, 180);

        let u = CarrierPolicy::default_for(CarrierId::Unicom);
        assert_eq!(u.arrears_recovery, ArrearsRecovery::Manual);
        assert_eq!(u.renewal_restore, RenewalRestore::NextCycle);
        assert_eq!(u.cycle_start_day, 27);
        assert_eq!(u.silent_period_days, 360);

        let t = CarrierPolicy::default_for(CarrierId::Telecom);
        assert_eq!(t.arrears_recovery, ArrearsRecovery::Auto);
        assert_eq!(t.renewal_restore, RenewalRestore::Immediate);
        assert_eq!(t.cycle_start_day, 1);
        assert!(t.prorate_first_month && !m.prorate_first_month && !u.prorate_first_month);
        for p in [m, u, t] {
            assert_eq!(p.test_period_days, 30);
            assert!(p.validate().is_ok());
        }
    }

    #[test]
    fn rule_billing_cycle_is_the_calendar_month_for_mobile_and_telecom() {
        let p = CarrierPolicy::default_for(CarrierId::Mobile);
        let (s, e) = p.cycle_bounds(shanghai(2026, 11, 25, 10));
        assert_eq!((s, e), (shanghai(2026, 11, 1, 0), shanghai(2026, 12, 1, 0)));
        // 00:30 on the 1st in Shanghai is still the previous UTC day, but already the new cycle.
        let (s, _) = p.cycle_bounds(shanghai(2026, 12, 1, 0) + chrono::Duration::minutes(30));
        assert_eq!(s, shanghai(2026, 12, 1, 0));
    }

    #[test]
    fn rule_unicom_billing_cycle_runs_from_the_27th_to_the_26th() {
        let p = CarrierPolicy::default_for(CarrierId::Unicom);
        assert_eq!(
            p.cycle_bounds(shanghai(2026, 11, 25, 10)),
            (shanghai(2026, 10, 27, 0), shanghai(2026, 11, 27, 0))
        );
        assert_eq!(
            p.cycle_bounds(shanghai(2026, 12, 27, 0)),
            (shanghai(2026, 12, 27, 0), shanghai(2027, 1, 27, 0))
        );
    }

    #[test]
    fn month_addition_clamps_to_the_end_of_shorter_months() {
        assert_eq!(
            add_months(shanghai(2026, 1, 31, 8), 1),
            shanghai(2026, 2, 28, 8)
        );
        assert_eq!(
            add_months(shanghai(2026, 11, 30, 0), 3),
            shanghai(2027, 2, 28, 0)
        );
    }

    #[test]
    fn end_of_day_is_the_next_shanghai_midnight() {
        assert_eq!(
            end_of_local_day(shanghai(2026, 11, 25, 23)),
            shanghai(2026, 11, 26, 0)
        );
        assert_eq!(
            end_of_local_day(shanghai(2026, 11, 25, 0)),
            shanghai(2026, 11, 26, 0)
        );
    }

    #[test]
    fn same_day_restore_comes_after_the_processing_delay_within_the_day() {
        let m = CarrierPolicy::default_for(CarrierId::Mobile);
        assert_eq!(
            m.renewal_restore_at(shanghai(2026, 11, 25, 10)),
            shanghai(2026, 11, 25, 12)
        );
        let last_second = shanghai(2026, 11, 26, 0) - chrono::Duration::seconds(1);
        assert_eq!(
            m.renewal_restore_at(shanghai(2026, 11, 25, 23)),
            last_second
        );
        // A renewal in the last second of the day is restored in that second.
        assert_eq!(m.renewal_restore_at(last_second), last_second);
        let quick = CarrierPolicy {
            same_day_restore_delay_minutes: 30,
            ..m
        };
        assert_eq!(
            quick.renewal_restore_at(shanghai(2026, 11, 25, 10)),
            shanghai(2026, 11, 25, 10) + chrono::Duration::minutes(30)
        );
    }

    #[test]
    fn policy_validation_names_the_bad_value() {
        let mut p = CarrierPolicy::default_for(CarrierId::Mobile);
        p.cycle_start_day = 31;
        assert!(p.validate().unwrap_err().contains("cycle_start_day"));
        let mut p = CarrierPolicy::default_for(CarrierId::Mobile);
        p.same_day_restore_delay_minutes = 1441;
        assert!(p
            .validate()
            .unwrap_err()
            .contains("same_day_restore_delay_minutes"));
    }
}
