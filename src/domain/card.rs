//! The card as simgate holds it: identifiers, owner, plan, money, usage and every reason it is
//! stopped. Its status is derived from those facts, never stored on its own.

use chrono::{DateTime, Utc};

use super::{
    AccountId, CarrierAction, CarrierId, Fen, Iccid, Imsi, Msisdn, StopReason, StopReasons,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub monthly_quota_bytes: u64,
    pub monthly_fee: Fen,
    pub validity_end: DateTime<Utc>,
    /// Chosen when the card is opened: stop it with OVER_QUOTA when the quota is used up, rather
    /// than let it run into overage charges.
    pub auto_suspend_over_quota: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardStatus {
    Active,
    Suspended,
    /// Expired and held in 停机保号 until its retention window ends.
    Retained,
    Cancelled,
}

impl CardStatus {
    pub const ALL: [CardStatus; 4] = [
        CardStatus::Active,
        CardStatus::Suspended,
        CardStatus::Retained,
        CardStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CardStatus::Active => "ACTIVE",
            CardStatus::Suspended => "SUSPENDED",
            CardStatus::Retained => "RETAINED",
            CardStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<CardStatus> {
        CardStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleStage {
    Test,
    Silent,
    Billing,
}

impl LifecycleStage {
    pub const ALL: [LifecycleStage; 3] = [
        LifecycleStage::Test,
        LifecycleStage::Silent,
        LifecycleStage::Billing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleStage::Test => "TEST",
            LifecycleStage::Silent => "SILENT",
            LifecycleStage::Billing => "BILLING",
        }
    }

    pub fn parse(s: &str) -> Option<LifecycleStage> {
        LifecycleStage::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RealNameStatus {
    /// Not reported yet; does not stop the card.
    Unknown,
    Verified,
    /// Known to be missing: the card is stopped with REAL_NAME.
    Unverified,
}

impl RealNameStatus {
    pub const ALL: [RealNameStatus; 3] = [
        RealNameStatus::Unknown,
        RealNameStatus::Verified,
        RealNameStatus::Unverified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RealNameStatus::Unknown => "UNKNOWN",
            RealNameStatus::Verified => "VERIFIED",
            RealNameStatus::Unverified => "UNVERIFIED",
        }
    }

    pub fn parse(s: &str) -> Option<RealNameStatus> {
        RealNameStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub iccid: Iccid,
    pub msisdn: Option<Msisdn>,
    pub imsi: Option<Imsi>,
    pub carrier: CarrierId,
    /// The carrier account the card is on: every carrier call for it goes through this account.
    pub account: AccountId,
    /// The reseller's enterprise customer that owns the card; every query can be scoped by it.
    /// Empty: unassigned inventory, seen only by the reseller until AssignCards gives it to a
    /// customer.
    pub customer_id: String,
    /// A card the customer holds in reserve for swaps (set by AssignCards).
    pub spare: bool,
    pub plan: Plan,
    /// Terminal: the number has been released. Kept apart from the stop reasons because no
    /// operation clears it.
    pub cancelled: bool,
    pub stop_reasons: StopReasons,
    pub stage: LifecycleStage,
    pub real_name: RealNameStatus,
    pub balance: Fen,
    pub cycle_usage_bytes: u64,
    /// Start of the billing cycle `cycle_usage_bytes` belongs to; the next rollover follows it.
    pub cycle_start: DateTime<Utc>,
    /// When the card entered its current lifecycle stage (test and silent periods run from it).
    pub stage_since: DateTime<Utc>,
    /// Data used during the test period, measured against the carrier's gift.
    pub test_used_bytes: u64,
    /// While RETAINED: when the next monthly retention fee is due.
    pub retention_fee_next_at: Option<DateTime<Utc>>,
    /// The earliest time-driven transition still to apply (derived; stored so the engine can
    /// find due cards with one indexed query).
    pub next_due_at: Option<DateTime<Utc>>,
    /// While RETAINED: when the number is released unless the plan is renewed.
    pub retention_ends_at: Option<DateTime<Utc>>,
    /// After a renewal whose restore the carrier applies later (same day, next cycle).
    pub expiry_restore_at: Option<DateTime<Utc>>,
    /// Arrears are paid but the carrier restores only on request (arrears_recovery = manual).
    pub arrears_paid_awaiting_resume: bool,
    pub warnings: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic concurrency token, bumped by the store on every write.
    pub version: i64,
    /// The shared data pool the card draws from; None: its own monthly quota applies.
    pub pool: Option<String>,
    /// Alerts already sent for the card's current periods (see `alerts`), so a threshold fires
    /// once per cycle however often usage is synced.
    pub alert_keys: Vec<String>,
    /// A carrier change simgate sent whose outcome is not settled yet (the journal's open
    /// intent). Set and cleared only by the journal; no other change is made meanwhile.
    pub pending: Option<PendingChange>,
    /// The carrier's state differs from what the card says while no change of simgate's is
    /// open: found by the usage sync, cleared when they agree again.
    pub drift: Option<Drift>,
    /// The carrier answered the last sync's read, but simgate could not read this card's state
    /// or usage from it (e.g. a status outside the platform's table, a null usage): why. Set
    /// and cleared only by the usage sync; cleared when a later read succeeds. While it is set
    /// the stored state and usage are the last ones read, not the carrier's now.
    pub carrier_unknown: Option<String>,
}

/// A carrier change the journal has open for the card: scheduled, or sent and not settled yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    pub action: CarrierAction,
    /// When simgate accepted it.
    pub since: DateTime<Utc>,
    /// The carrier's order id, when its platform answered with one.
    pub order_id: Option<String>,
    /// simgate's id of the order (the journal's).
    pub order: i64,
    /// The earliest time it may be sent (the end of a repeat window), on the card clock.
    pub not_before: Option<DateTime<Utc>>,
    /// Whether it has been sent.
    pub sent: bool,
}

/// Where a carrier order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    /// Accepted, not sent yet: it waits for its `not_before`.
    Scheduled,
    /// Sent; the carrier took it as an order it has not completed.
    Submitted,
    /// Sent; whether the carrier applied it is not known yet.
    Unknown,
    Applied,
    /// Refused, or it did not happen: nothing changed.
    Refused,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Scheduled => "SCHEDULED",
            OrderState::Submitted => "SUBMITTED",
            OrderState::Unknown => "UNKNOWN",
            OrderState::Applied => "APPLIED",
            OrderState::Refused => "REFUSED",
        }
    }

    pub fn parse(s: &str) -> Option<OrderState> {
        [
            OrderState::Scheduled,
            OrderState::Submitted,
            OrderState::Unknown,
            OrderState::Applied,
            OrderState::Refused,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

impl PendingChange {
    /// Where the open order stands: not sent yet, sent as a carrier order, or sent with no
    /// answer that settles it.
    pub fn state(&self) -> OrderState {
        if !self.sent {
            OrderState::Scheduled
        } else if self.order_id.is_some() {
            OrderState::Submitted
        } else {
            OrderState::Unknown
        }
    }
}

/// What the carrier showed that the card does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The carrier's service state: `ACTIVE`, `STOPPED` or `CANCELLED`.
    pub carrier_state: String,
    /// The state the card implies, in the same terms.
    pub expected_state: String,
    pub since: DateTime<Utc>,
}

impl Card {
    pub fn status(&self) -> CardStatus {
        if self.cancelled {
            CardStatus::Cancelled
        } else if self.stop_reasons.contains(StopReason::Expired) {
            CardStatus::Retained
        } else if !self.stop_reasons.is_empty() {
            CardStatus::Suspended
        } else {
            CardStatus::Active
        }
    }

    /// A card has service only when it is not cancelled and has no stop reason at all.
    pub fn is_online(&self) -> bool {
        !self.cancelled && self.stop_reasons.is_empty()
    }

    /// The carrier's service state this card implies: `ACTIVE`, `STOPPED` or `CANCELLED`.
    pub fn expected_carrier_state(&self) -> &'static str {
        if self.cancelled {
            "CANCELLED"
        } else if self.is_online() {
            "ACTIVE"
        } else {
            "STOPPED"
        }
    }

    pub fn is_over_quota(&self) -> bool {
        self.cycle_usage_bytes >= self.plan.monthly_quota_bytes
    }
}

/// What a carrier says about a card's data sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LastSession {
    /// Not known: the carrier was not asked, or its answer could not be read (a reply shape
    /// or time format that is not known: it answered, but nothing can be concluded from it).
    /// Never read as "none".
    #[default]
    Unknown,
    /// The carrier has no data session on record.
    Never,
    /// The last (or current) data session started at this time.
    At(chrono::DateTime<chrono::Utc>),
}

impl LastSession {
    /// `Never` for None: for carriers whose answer always says whether there was a session.
    pub fn from_seen(at: Option<chrono::DateTime<chrono::Utc>>) -> LastSession {
        at.map_or(LastSession::Never, LastSession::At)
    }

    /// The session's time, when one is known.
    pub fn at(self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            LastSession::At(t) => Some(t),
            _ => None,
        }
    }
}
