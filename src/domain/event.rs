//! The events of a card's and a pool's history: their types, and the stable name of every
//! kind (what the outbox, `WatchEvents`, webhooks and `ListEvents` filters carry). A kind is
//! named here once; code that writes or matches one uses the constant.

use chrono::{DateTime, Utc};

use super::alerts::AlertDetail;
use super::{Card, CardStatus, Fen, StopReasons};

/// What set a change in motion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A caller's request (an RPC).
    Request,
    /// Time: a cycle ended, a plan expired, a retention window ran out.
    Schedule,
    /// Data usage reported by the carrier.
    Usage,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Request => "request",
            Cause::Schedule => "schedule",
            Cause::Usage => "usage",
        }
    }
}

/// One entry of a card's history: what happened, when, why, the money it moved, and the card's
/// state right after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardEvent {
    pub at: DateTime<Utc>,
    /// Stable name, e.g. `card.suspended`, `card.monthly_fee_charged`.
    pub kind: &'static str,
    pub cause: Cause,
    /// Change of the balance this event made (negative for a charge).
    pub amount: Fen,
    pub status: CardStatus,
    pub stop_reasons: StopReasons,
    pub balance: Fen,
    /// Set on alerts: which rule fired, at which threshold, on what value.
    pub alert: Option<AlertDetail>,
}

impl CardEvent {
    pub fn of(
        card: &Card,
        at: DateTime<Utc>,
        kind: &'static str,
        cause: Cause,
        amount: Fen,
    ) -> CardEvent {
        CardEvent {
            at,
            kind,
            cause,
            amount,
            status: card.status(),
            stop_reasons: card.stop_reasons,
            balance: card.balance,
            alert: None,
        }
    }
}

/// One entry of a pool's history, with the pool's usage at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEvent {
    pub kind: &'static str,
    pub cause: Cause,
    pub at: DateTime<Utc>,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    pub alert: Option<AlertDetail>,
}

/// The kinds of a card's history (`card.*`).
pub mod card {
    pub const ASSIGNED: &str = "card.assigned";
    pub const BILLING_STARTED: &str = "card.billing_started";
    pub const CANCELLED: &str = "card.cancelled";
    pub const CYCLE_STARTED: &str = "card.cycle_started";
    /// The carrier stopped the card: found in a device other than the one it is bound to.
    pub const DEVICE_MISMATCH: &str = "card.device_mismatch";
    /// The carrier's machine-card separation stop reason cleared.
    pub const DEVICE_MISMATCH_CLEARED: &str = "card.device_mismatch_cleared";
    pub const DRIFT_DETECTED: &str = "card.drift_detected";
    pub const DRIFT_REPAIRED: &str = "card.drift_repaired";
    pub const DRIFT_RESOLVED: &str = "card.drift_resolved";
    pub const EXPIRED: &str = "card.expired";
    pub const IMPORTED: &str = "card.imported";
    pub const MONTHLY_FEE_CHARGED: &str = "card.monthly_fee_charged";
    pub const OVER_QUOTA: &str = "card.over_quota";
    pub const OVERAGE_STARTED: &str = "card.overage_started";
    pub const POOL_EXHAUSTED: &str = "card.pool_exhausted";
    pub const POOL_JOINED: &str = "card.pool_joined";
    pub const POOL_LEFT: &str = "card.pool_left";
    pub const POOL_RESTORED: &str = "card.pool_restored";
    pub const REAL_NAME_VERIFIED: &str = "card.real_name_verified";
    /// The carrier applied a RebindCard.
    pub const REBOUND: &str = "card.rebound";
    pub const RECHARGED: &str = "card.recharged";
    pub const RENEWED: &str = "card.renewed";
    pub const RESTORED_AFTER_RENEWAL: &str = "card.restored_after_renewal";
    pub const RESUMED: &str = "card.resumed";
    pub const RETENTION_FEE_CHARGED: &str = "card.retention_fee_charged";
    pub const SILENT_PERIOD_STARTED: &str = "card.silent_period_started";
    pub const SUSPENDED: &str = "card.suspended";
    pub const TEST_GIFT_USED_UP: &str = "card.test_gift_used_up";
}

/// The kinds of a pool's history (`pool.*`).
pub mod pool {
    pub const CREATED: &str = "pool.created";
    pub const CYCLE_STARTED: &str = "pool.cycle_started";
    pub const EXHAUSTED: &str = "pool.exhausted";
    pub const RESTORED: &str = "pool.restored";
    pub const TOPPED_UP: &str = "pool.topped_up";
}

/// The kinds alerts are written as (`alert.*`), on a card's or a pool's history.
pub mod alert {
    pub const CARD_USAGE: &str = "alert.card_usage";
    pub const POOL_USAGE: &str = "alert.pool_usage";
    pub const VALIDITY_ENDING: &str = "alert.validity_ending";
    pub const BALANCE_LOW: &str = "alert.balance_below_next_fee";
    pub const RETENTION_CANCEL: &str = "alert.retention_cancel_soon";
    pub const CARD_STOPPED: &str = "alert.card_stopped";
    pub const CARD_RESTORED: &str = "alert.card_restored";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind is unique and lives in its namespace: a copy-paste slip in a constant would
    /// merge two kinds of history into one.
    #[test]
    fn every_event_kind_is_unique_and_in_its_namespace() {
        let all: Vec<(&str, &str)> = [
            ("card.", card::ASSIGNED),
            ("card.", card::BILLING_STARTED),
            ("card.", card::CANCELLED),
            ("card.", card::CYCLE_STARTED),
            ("card.", card::DRIFT_DETECTED),
            ("card.", card::DRIFT_REPAIRED),
            ("card.", card::DRIFT_RESOLVED),
            ("card.", card::EXPIRED),
            ("card.", card::IMPORTED),
            ("card.", card::MONTHLY_FEE_CHARGED),
            ("card.", card::OVER_QUOTA),
            ("card.", card::OVERAGE_STARTED),
            ("card.", card::POOL_EXHAUSTED),
            ("card.", card::POOL_JOINED),
            ("card.", card::POOL_LEFT),
            ("card.", card::POOL_RESTORED),
            ("card.", card::REAL_NAME_VERIFIED),
            ("card.", card::RECHARGED),
            ("card.", card::RENEWED),
            ("card.", card::RESTORED_AFTER_RENEWAL),
            ("card.", card::RESUMED),
            ("card.", card::RETENTION_FEE_CHARGED),
            ("card.", card::SILENT_PERIOD_STARTED),
            ("card.", card::SUSPENDED),
            ("card.", card::TEST_GIFT_USED_UP),
            ("pool.", pool::CREATED),
            ("pool.", pool::CYCLE_STARTED),
            ("pool.", pool::EXHAUSTED),
            ("pool.", pool::RESTORED),
            ("pool.", pool::TOPPED_UP),
        ]
        .into_iter()
        .chain(
            [
                alert::CARD_USAGE,
                alert::POOL_USAGE,
                alert::VALIDITY_ENDING,
                alert::BALANCE_LOW,
                alert::RETENTION_CANCEL,
                alert::CARD_STOPPED,
                alert::CARD_RESTORED,
            ]
            .map(|k| ("alert.", k)),
        )
        .collect();
        let mut seen = std::collections::HashSet::new();
        for (prefix, kind) in &all {
            assert!(kind.starts_with(prefix), "{kind} is not a {prefix} kind");
            assert!(seen.insert(*kind), "{kind} is named twice");
        }
    }
}
