//! The journaled path of every carrier change, and the settler that finishes what an unknown
//! outcome, a lost answer or a crash left open.
//!
//! A change to a card that needs its carrier (stop, restore, cancel) is an intent in the store
//! before it is an HTTP call (see `store::journal`). The call then ends one of three ways:
//! - the carrier accepted it, or a read shows the intended state: the intent's plan is stored
//!   (card, events, audit, the request's answer) and the caller gets the new card;
//! - nothing can have been applied (refused, never sent, the carrier shows the old state): the
//!   intent is abandoned and the caller gets the carrier's error;
//! - the outcome is unknown (sent, no answer, and the carrier cannot be read): the intent stays
//!   open, the card shows `pending_change`, the caller gets UNAVAILABLE
//!   `CARRIER_OUTCOME_PENDING`, and the settler finishes it later by reading the carrier.
//!
//! A bulk operation's stops and restores on an account whose platform has a batch change call
//! (OneLink `/change/sim-status/batch`) are gathered: each is an intent scheduled for now, and
//! the settler sends the due ones of an account and action together, up to the platform's batch
//! size (a partial batch once its oldest card has waited [`GATHER_MS`]), each intent marked
//! sent first as for a single change. The platform's job id is every card's order, settled from
//! one query of the job; a refused batch falls back to single changes, an unanswered one is
//! settled by reading each card. A card inside its repeat window is never in a batch: its
//! intent is not due before the window ends.
//!
//! Settling only rolls forward: simgate never sets a carrier back to the stored state for an
//! intent it issued. Nothing here depends on an intent's age; ownership is a lease renewed by a
//! living process, so an intent whose process died is taken over once its lease runs out.

use std::collections::HashSet;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{CardService, Result, ServiceError};
use crate::carrier::{
    Carrier, CarrierCard, CarrierError, Change, OrderProgress, Rebind, Receipt, ServiceState,
};
use crate::clock::Clock;
use crate::domain::event;
use crate::domain::{Card, CardEvent, CarrierAction, Cause, Fen, Iccid, Transition};
use crate::store::{
    AuditRecord, IdempotencyRecord, IntentPlan, NewIntent, Settle, SettledBy, StoreError,
};

/// How long a process holds an intent without renewing it (wall clock).
pub const DEFAULT_LEASE_MS: u64 = 15_000;
/// How often the settler looks for intents to settle and renews the leases it holds.
pub const DEFAULT_SETTLE_INTERVAL_MS: u64 = 1_000;
/// Longest wait between two settling reads of one intent whose carrier does not answer. Short:
/// a read is cheap, the card is blocked until it succeeds, and a carrier that is down is
/// already spared by its circuit breaker.
const MAX_SETTLE_BACKOFF_MS: i64 = 10_000;
/// Intents one settling pass claims at most.
const SETTLE_BATCH: u32 = 100;

/// What the usage sync does when a card's carrier state differs from the card with no open
/// intent to explain it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftRepair {
    /// Record `card.drift_detected`, show it on the card and in DiagnoseCard; change nothing.
    #[default]
    Report,
    /// Also send the carrier the state the card says, as a journaled change of its own (for
    /// a reseller whose carrier account is changed only through simgate).
    CarrierFollowsCard,
}

/// `[journal]` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// How long a process holds an intent it is calling the carrier for without renewing it;
    /// after a crash, its intents are settled by another process (or its restart) this long
    /// after its last renewal.
    pub lease_ms: u64,
    /// How often open intents are settled and leases renewed.
    pub settle_interval_ms: u64,
    pub drift_repair: DriftRepair,
    /// The repeat window of every account whose entry sets none (seconds); unset: each
    /// platform's published window (30 minutes for OneLink and simulated China Mobile, none
    /// elsewhere; see `carrier::account::default_repeat_window_s`).
    pub repeat_window_s: Option<u64>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            lease_ms: DEFAULT_LEASE_MS,
            settle_interval_ms: DEFAULT_SETTLE_INTERVAL_MS,
            drift_repair: DriftRepair::Report,
            repeat_window_s: None,
        }
    }
}

/// This process's side of the journal: its owner id and the intents it is working on now.
pub(crate) struct Holder {
    pub owner: String,
    in_flight: Mutex<HashSet<i64>>,
}

impl Holder {
    pub fn new() -> Holder {
        Holder {
            owner: format!("simgate-{}", uuid::Uuid::new_v4().simple()),
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    /// Marks `op` as worked on (its lease is renewed) until the returned guard is dropped,
    /// also when the future holding it is: a cancelled RPC must not keep its intent forever.
    fn hold(&self, op: i64) -> HoldGuard<'_> {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(op);
        HoldGuard { holder: self, op }
    }

    fn drop_hold(&self, op: i64) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&op);
    }

    fn held(&self) -> Vec<i64> {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

pub(crate) struct HoldGuard<'a> {
    holder: &'a Holder,
    op: i64,
}

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        self.holder.drop_hold(self.op);
    }
}

/// On whose behalf a change is made: for the journal, and to recognise a retry of the same
/// request while its change is pending.
pub(crate) struct Origin {
    /// `method:request_id`, `engine:<owner>`, ...
    pub source: String,
    pub key_id: String,
    /// The caller's request id (empty for simgate's own changes and requests without one).
    pub request_id: String,
}

/// How a carrier call ended, for the journal.
enum Sent {
    /// Applied: the carrier's answer is proof (`by` Answer), or a read shows it (`by`
    /// StateRead); with the carrier's order id when its answer carried one.
    Applied {
        order_id: Option<String>,
        by: SettledBy,
    },
    /// Accepted as an order the platform has not completed yet.
    Submitted { order_id: Option<String> },
    /// The carrier did not take it now (a repeat window, a refusal simgate cannot classify) and
    /// nothing shows it applied: send it again later.
    Deferred {
        error: ServiceError,
        retry_after: Option<std::time::Duration>,
    },
    /// Nothing can have been applied: safe to abandon the intent.
    NotApplied(ServiceError),
    /// It may have been applied: only a later read of the carrier can tell.
    Unknown(ServiceError),
}

/// How sending an open intent left it.
enum Done {
    /// Applied and stored.
    Applied(Box<Card>),
    /// Still open, for the settler: scheduled again (deferred) or submitted as an order.
    Open,
    /// Refused or not applied: abandoned, the card released unchanged.
    NotApplied(ServiceError),
    /// The outcome is unknown: open, settled later by reading the carrier.
    Unknown,
}

impl Done {
    /// Whether the intent is settled (applied or abandoned), not left open.
    fn settled(&self) -> bool {
        matches!(self, Done::Applied(_) | Done::NotApplied(_))
    }
}

/// The status word recorded for an order the carrier accepted, before its platform says more.
const ACCEPTED: &str = "accepted";
/// When a submitted order is first asked about (operations clock).
const FIRST_ORDER_POLL_MS: i64 = 500;

/// The carrier change of a journal action, with its stored parameters.
fn change_of(action: CarrierAction, params: &str) -> Result<Change, String> {
    Ok(match action {
        CarrierAction::Stop => Change::Stop,
        CarrierAction::Restore => Change::Restore,
        CarrierAction::Cancel => Change::Cancel,
        CarrierAction::Rebind => Change::Rebind(
            serde_json::from_str::<Rebind>(params)
                .map_err(|e| format!("rebind parameters: {e}"))?,
        ),
    })
}

/// Whether the carrier shows `change` applied: Some(true) yes, Some(false) no, None when its
/// answer cannot tell (a state simgate cannot read; a binding the platform cannot report).
async fn shows_applied(
    carrier: &dyn Carrier,
    iccid: &Iccid,
    change: &Change,
) -> Result<Result<bool, String>, CarrierError> {
    match change {
        Change::Rebind(r) => Ok(match carrier.binding(iccid).await? {
            None => Err("the platform cannot report the binding".into()),
            Some(b) => Ok(match r {
                Rebind::Unbind => !b.bound,
                Rebind::CurrentDevice => b.bound && !b.separated,
                Rebind::Imei(imei) => b.bound && b.imei.as_deref() == Some(imei.as_str()),
            }),
        }),
        _ => {
            let wanted = match change {
                Change::Stop => ServiceState::Stopped,
                Change::Cancel => ServiceState::Cancelled,
                _ => ServiceState::Active,
            };
            Ok(match carrier.card(iccid).await? {
                CarrierCard {
                    unknown: Some(why), ..
                } => Err(format!("unknown at carrier: {why}")),
                c => Ok(c.state == wanted),
            })
        }
    }
}

/// How many times a change is sent before the request gives up.
pub(crate) const CARRIER_ATTEMPTS: u32 = 4;
/// Longest wait between attempts, whatever the carrier's rate-limit answer asks for.
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(2);
/// How often a change is deferred by its carrier before simgate gives it up as refused: with
/// the doubling waits below, about an hour of retrying. Not forever: a change the carrier keeps
/// refusing would otherwise block the card for good.
const MAX_DEFERRALS: i64 = 6;
/// The first wait after a deferral that names no time, when the account has no repeat
/// window either; doubled on each further deferral.
const DEFAULT_DEFER: std::time::Duration = std::time::Duration::from_secs(60);
/// How long an order the carrier accepted, but that simgate cannot query, may stay not
/// applied before it is taken as not done (operations clock).
const ORDER_PATIENCE_MS: i64 = 24 * 3_600_000;

/// Up to half again of `base`, so that many callers backing off do not retry in step.
fn jittered(base: std::time::Duration) -> std::time::Duration {
    base + base.mul_f64(fastrand::f64() / 2.0)
}

/// Sends one change with retries: transient failures and rate limits back off (nothing was
/// applied), a refusal is final at once, a deferral is checked by reading the card and sent
/// again later, and an answer that never came is checked by reading the card: the change
/// counts if the carrier shows it, is resent if the carrier shows it did not happen, and is
/// left unknown if the carrier cannot be read.
///
/// Back-offs are paused on `clock` (the operations clock): real waits in production, moved time
/// under a test's manual clock.
async fn send(clock: &dyn Clock, carrier: &dyn Carrier, iccid: &Iccid, change: &Change) -> Sent {
    let mut backoff = std::time::Duration::from_millis(50);
    let mut last: Option<CarrierError> = None;
    let fail = |error| ServiceError::Carrier {
        carrier: carrier.id(),
        error,
    };
    for attempt in 0..CARRIER_ATTEMPTS {
        if attempt > 0 {
            let wait = match &last {
                Some(CarrierError::RateLimited {
                    retry_after: Some(d),
                }) => (*d).min(MAX_BACKOFF),
                _ => jittered(backoff).min(MAX_BACKOFF),
            };
            clock.pause(wait).await;
            backoff *= 2;
        }
        match crate::carrier::send_change(carrier, iccid, change).await {
            Ok(Receipt {
                order_id,
                in_progress: true,
            }) => return Sent::Submitted { order_id },
            Ok(Receipt { order_id, .. }) => {
                return Sent::Applied {
                    order_id,
                    by: SettledBy::Answer,
                }
            }
            Err(e @ CarrierError::Deferred { retry_after, .. }) => {
                // A deferral says nothing was taken; a read makes sure before sending again.
                return match shows_applied(carrier, iccid, change).await {
                    Ok(Ok(true)) => Sent::Applied {
                        order_id: None,
                        by: SettledBy::StateRead,
                    },
                    _ => Sent::Deferred {
                        error: fail(e),
                        retry_after,
                    },
                };
            }
            Err(CarrierError::OutcomeUnknown(msg)) => {
                match shows_applied(carrier, iccid, change).await {
                    // The carrier answered but its state cannot be read: as good as no answer.
                    Ok(Err(why)) => {
                        return Sent::Unknown(fail(CarrierError::OutcomeUnknown(format!(
                            "{msg}; the card's state could not be read back: {why}"
                        ))))
                    }
                    Ok(Ok(true)) => {
                        return Sent::Applied {
                            order_id: None,
                            by: SettledBy::StateRead,
                        }
                    }
                    // The carrier shows it did not happen: sending again is safe.
                    Ok(Ok(false)) => last = Some(CarrierError::OutcomeUnknown(msg)),
                    Err(read) => {
                        return Sent::Unknown(fail(CarrierError::OutcomeUnknown(format!(
                            "{msg}; the card could not be read back: {read}"
                        ))))
                    }
                }
            }
            Err(e @ (CarrierError::Transient(_) | CarrierError::RateLimited { .. })) => {
                last = Some(e)
            }
            // Refused, or not sent at all (circuit open): nothing was applied.
            Err(e) => return Sent::NotApplied(fail(e)),
        }
    }
    Sent::NotApplied(fail(
        last.unwrap_or_else(|| CarrierError::Transient("no attempt made".into())),
    ))
}

/// A settling read: a transient failure or rate limit is retried at once a few times (a read
/// changes nothing), so one flaky answer does not leave the card blocked for a backoff period.
async fn read_with_retries(
    clock: &dyn Clock,
    carrier: &dyn Carrier,
    iccid: &Iccid,
    change: &Change,
) -> Result<Result<bool, String>, CarrierError> {
    let mut backoff = std::time::Duration::from_millis(20);
    let mut attempt = 1;
    loop {
        match shows_applied(carrier, iccid, change).await {
            Err(CarrierError::Transient(_) | CarrierError::RateLimited { .. })
                if attempt < CARRIER_ATTEMPTS =>
            {
                clock.pause(jittered(backoff)).await;
                backoff *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// How long a gathered change waits for more cards to fill its batch call (operations clock):
/// a batch is sent once full, or once its oldest card has waited this long.
const GATHER_MS: i64 = 2_000;

/// Whether a change's `source` (`method:request_id`, [`Origin::source`]) is a bulk operation's
/// card: on an account with a batch change call, its stop or restore is gathered (scheduled
/// for now, sent by the settler in a batch call) and waits for its batch to fill.
fn from_bulk(source: &str) -> bool {
    source
        .split_once(':')
        .is_some_and(|(method, _)| is_bulk(method))
}

/// Whether `method` is a bulk operation whose stops and restores are gathered for batch calls.
pub(crate) fn is_bulk(method: &str) -> bool {
    matches!(method, "BatchSuspend" | "BatchResume")
}

/// Whether `action` goes out in batch calls on `carrier`: a stop or restore, on a platform with
/// a batch change call.
fn batches(carrier: &dyn Carrier, action: CarrierAction) -> bool {
    matches!(action, CarrierAction::Stop | CarrierAction::Restore)
        && carrier.batch_change_limit() > 1
}

/// How long the settler waits before asking again about an intent tried `attempts` times.
fn settle_wait(attempts: i64) -> i64 {
    (500i64 << attempts.clamp(0, 5)).min(MAX_SETTLE_BACKOFF_MS)
}

/// Claimed intents the settler handles together.
struct OpGroup {
    carrier: std::sync::Arc<dyn Carrier>,
    kind: GroupKind,
    ops: Vec<crate::store::CarrierOp>,
}

#[derive(Clone)]
enum GroupKind {
    /// Due to be sent, in one batch call.
    Send(Change),
    /// Sent in this batch job: settled from one query of it.
    Job(String, Change),
}

impl CardService {
    fn lease_until(&self) -> i64 {
        self.lease_from(self.ops_now_ms())
    }

    fn lease_from(&self, now_ms: i64) -> i64 {
        now_ms + self.journal.lease_ms as i64
    }

    fn ops_now_ms(&self) -> i64 {
        self.ops_clock.now().timestamp_millis()
    }

    /// Makes the carrier agree with a transition and stores it: the one commit path of every
    /// card change. A change without a carrier action is a versioned write. One with an action
    /// is journaled (see the module doc). A carrier that refused leaves the store untouched; an
    /// unknown outcome answers `OutcomePending` and leaves the card pending until settled; a
    /// change scheduled for the end of a repeat window, deferred by its carrier, or taken as an
    /// order still to complete answers the card with its `pending` order.
    pub(crate) async fn commit(
        &self,
        carrier: &dyn Carrier,
        t: Transition,
        audit: Option<&AuditRecord>,
        answer: Option<&IdempotencyRecord>,
        origin: &Origin,
    ) -> Result<Card> {
        self.commit_change(carrier, t, audit, answer, origin, None)
            .await
    }

    /// [`CardService::commit`] with the parameters of a rebind (`Rebind` actions need them).
    pub(crate) async fn commit_change(
        &self,
        carrier: &dyn Carrier,
        t: Transition,
        audit: Option<&AuditRecord>,
        answer: Option<&IdempotencyRecord>,
        origin: &Origin,
        rebind: Option<&Rebind>,
    ) -> Result<Card> {
        let Some(action) = t.action else {
            let after = self
                .store
                .update_card(&t.card, &t.events, audit, answer, t.usage_bytes)
                .await
                .map_err(|e| match e {
                    // The same request id raced in concurrently and won: a retry gets its
                    // answer.
                    StoreError::Duplicate {
                        field: "request_id",
                        ..
                    } => ServiceError::Conflict,
                    other => other.into(),
                })?;
            log_change(&after, &t.events);
            return Ok(after);
        };
        // The stored parameters are what the settler rebuilds the change from (`change_of`).
        let (change, params) = match (action, rebind) {
            (CarrierAction::Rebind, Some(r)) => (
                Change::Rebind(r.clone()),
                serde_json::to_string(r)
                    .map_err(|e| StoreError::Corrupt(format!("rebind parameters: {e}")))?,
            ),
            (CarrierAction::Rebind, None) => {
                return Err(ServiceError::Store(StoreError::Corrupt(
                    "a rebind without its parameters".into(),
                )))
            }
            (a, _) => (
                change_of(a, "").map_err(StoreError::Corrupt)?,
                String::new(),
            ),
        };
        let now_ms = self.ops_now_ms();
        let mut not_before = self.window_end(&t.card, action).await?;
        // A bulk operation's card: sent by the settler with other cards' in one batch call,
        // instead of on its own at once.
        let gathered = from_bulk(&origin.source) && batches(carrier, action);
        if gathered && not_before.is_none() {
            // Due now, sent by the settler in a batch call with the other cards due with it.
            not_before = Some(self.now());
        }
        let op = self
            .store
            .open_intent(
                &NewIntent {
                    carrier: carrier.id(),
                    account: &t.card.account,
                    action,
                    source: &origin.source,
                    key_id: &origin.key_id,
                    request_id: &origin.request_id,
                    owner: &self.holder.owner,
                    now_ms,
                    lease_until_ms: self.lease_from(now_ms),
                    not_before_ms: not_before.map(|t| t.timestamp_millis()),
                    params: &params,
                    // Sent right after this write unless it waits for a window: marked sent
                    // here, one transaction less on every change.
                    sent_ms: not_before.is_none().then(|| self.now().timestamp_millis()),
                },
                &IntentPlan {
                    card: &t.card,
                    events: &t.events,
                    audit,
                    answer,
                    usage_bytes: t.usage_bytes,
                },
            )
            .await?;
        let iccid = &t.card.iccid;
        if let Some(at) = not_before {
            // Inside the card's repeat window: the carrier would refuse it now. The settler
            // sends it once the window has passed.
            if gathered && at <= self.now() {
                info!(%iccid, op, action = action.as_str(), "change gathered for a batch call");
            } else {
                info!(%iccid, op, action = action.as_str(), not_before = %at, "change scheduled for the end of the card's repeat window");
            }
            self.store.hand_over_intent(op, &self.holder.owner).await?;
            return self.load(iccid).await;
        }
        // Renewed while this call runs; if the call is dropped (the client went away), the lease
        // runs out and a settler finishes the intent from the carrier's state.
        let _held = self.holder.hold(op);
        let since =
            DateTime::<Utc>::from_timestamp_millis(now_ms).unwrap_or_else(|| self.ops_clock.now());
        match self.send_op(carrier, iccid, op, &change, 0, true).await? {
            Done::Applied(after) => {
                log_change(&after, &t.events);
                Ok(*after)
            }
            Done::Open => self.load(iccid).await,
            Done::NotApplied(e) => Err(e),
            Done::Unknown => Err(ServiceError::OutcomePending {
                carrier: carrier.id(),
                action,
                since,
            }),
        }
    }

    /// The end of the card's repeat window for `action`, if it has not passed yet (card clock):
    /// the account's window from its last change the carrier may have taken.
    async fn window_end(
        &self,
        card: &Card,
        action: CarrierAction,
    ) -> Result<Option<DateTime<Utc>>> {
        if action == CarrierAction::Cancel {
            return Ok(None);
        }
        let window = self.carriers.repeat_window(&card.account);
        if window.is_zero() {
            return Ok(None);
        }
        let Some(last) = self
            .store
            .last_change_sent_ms(&card.iccid, &card.account)
            .await?
        else {
            return Ok(None);
        };
        // A second past the window: a carrier that counts it from when the change reached it,
        // not from when simgate sent it, must not see the next one early.
        let end = DateTime::<Utc>::from_timestamp_millis(last).map(|t| {
            t + chrono::Duration::from_std(window).unwrap_or(chrono::TimeDelta::MAX)
                + chrono::Duration::seconds(1)
        });
        Ok(end.filter(|e| *e > self.now()))
    }

    /// Sends open intent `op` (held by this process) and records how it ended: applied or
    /// abandoned (settled), submitted as an order or deferred (open, for the settler), or
    /// unknown. `deferrals` is how often the carrier deferred it already.
    async fn send_op(
        &self,
        carrier: &dyn Carrier,
        iccid: &Iccid,
        op: i64,
        change: &Change,
        deferrals: i64,
        marked_sent: bool,
    ) -> Result<Done> {
        let owner = &self.holder.owner;
        if !marked_sent
            && !self
                .store
                .mark_intent_sent(op, owner, self.now().timestamp_millis())
                .await?
        {
            // Our lease ran out and a settler took the intent over.
            return Ok(Done::Unknown);
        }
        match send(self.ops_clock.as_ref(), carrier, iccid, change).await {
            Sent::Applied { order_id, by } => {
                let how = Settle {
                    by,
                    order_id: order_id.as_deref(),
                    order_status: None,
                };
                match self
                    .store
                    .settle_applied(op, owner, self.ops_now_ms(), &how)
                    .await
                {
                    Ok(Some(after)) => Ok(Done::Applied(Box::new(after))),
                    // Our lease ran out during the call and a settler took the intent over:
                    // it finishes it from the carrier's state.
                    Ok(None) => Ok(Done::Unknown),
                    Err(e) => {
                        warn!(%iccid, op, error = %e, "carrier applied the change but the store did not take it; left for the settler");
                        self.release(op, &format!("applied; store write failed: {e}"), 0)
                            .await;
                        Ok(Done::Unknown)
                    }
                }
            }
            Sent::Submitted { order_id } => {
                info!(%iccid, op, order = order_id.as_deref().unwrap_or("(none)"), "carrier took the change as an order; pending until it completes");
                self.store
                    .record_order(
                        op,
                        order_id.as_deref().unwrap_or(""),
                        ACCEPTED,
                        self.ops_now_ms(),
                    )
                    .await?;
                self.release(op, "", FIRST_ORDER_POLL_MS).await;
                Ok(Done::Open)
            }
            Sent::Deferred { error, retry_after } => {
                if deferrals + 1 >= MAX_DEFERRALS {
                    let reason = format!("deferred by the carrier {MAX_DEFERRALS} times: {error}");
                    warn!(%iccid, op, error = %error, "carrier keeps deferring the change; given up as refused");
                    self.store
                        .settle_abandoned(
                            op,
                            owner,
                            &reason,
                            self.ops_now_ms(),
                            &Settle::by(SettledBy::Answer),
                        )
                        .await?;
                    return Ok(Done::NotApplied(error));
                }
                let window = self.carriers.repeat_window(&carrier.account());
                let wait = retry_after.unwrap_or_else(|| {
                    let base = if window.is_zero() {
                        DEFAULT_DEFER
                    } else {
                        window
                    };
                    base * 2u32.saturating_pow(u32::try_from(deferrals).unwrap_or(0))
                });
                let at =
                    self.now() + chrono::Duration::from_std(wait).unwrap_or(chrono::TimeDelta::MAX);
                info!(%iccid, op, error = %error, retry_at = %at, "carrier deferred the change; sent again later");
                self.store
                    .reschedule_intent(
                        op,
                        owner,
                        &error.to_string(),
                        at.timestamp_millis(),
                        self.ops_now_ms(),
                    )
                    .await?;
                Ok(Done::Open)
            }
            Sent::NotApplied(e) => {
                if let Err(err) = self
                    .store
                    .settle_abandoned(
                        op,
                        owner,
                        &e.to_string(),
                        self.ops_now_ms(),
                        &Settle::by(SettledBy::Answer),
                    )
                    .await
                {
                    warn!(%iccid, op, error = %err, "could not abandon a refused intent; left for the settler");
                    self.release(op, &e.to_string(), 0).await;
                }
                Ok(Done::NotApplied(e))
            }
            Sent::Unknown(e) => {
                info!(%iccid, op, error = %e, "carrier outcome unknown; the change is pending until settled");
                self.release(op, &e.to_string(), 0).await;
                Ok(Done::Unknown)
            }
        }
    }

    /// Gives an intent back unsettled, for any settler from `after_ms` on.
    async fn release(&self, op: i64, error: &str, after_ms: i64) {
        let now = self.ops_now_ms();
        if let Err(e) = self
            .store
            .release_intent(op, &self.holder.owner, error, now + after_ms, now)
            .await
        {
            // The lease runs out by itself (nobody renews what is not in flight).
            warn!(op, error = %e, "could not release a carrier intent");
        }
    }

    /// Whether the card's open order is this request's and is scheduled or with the carrier as
    /// an order (not an unknown outcome): a retry is then answered with the card as it is.
    pub(crate) async fn own_open_order(
        &self,
        card: &Card,
        key_id: &str,
        request_id: Option<&str>,
    ) -> Result<bool> {
        let (Some(p), Some(request_id)) = (&card.pending, request_id.filter(|r| !r.is_empty()))
        else {
            return Ok(false);
        };
        if p.state() == crate::domain::OrderState::Unknown {
            return Ok(false);
        }
        Ok(matches!(
            self.store.open_intent_of(&card.iccid).await?,
            Some(op) if op.key_id == key_id && op.request_id == request_id
        ))
    }

    /// The error a change to a card with an open intent gets: the same request sees its own
    /// outcome pending; anyone else is told which change is pending.
    pub(crate) async fn pending_error(
        &self,
        card: &Card,
        key_id: &str,
        request_id: Option<&str>,
    ) -> ServiceError {
        let Some(p) = &card.pending else {
            return ServiceError::Conflict;
        };
        if let Some(request_id) = request_id.filter(|r| !r.is_empty()) {
            match self.store.open_intent_of(&card.iccid).await {
                Ok(Some(op)) if op.key_id == key_id && op.request_id == request_id => {
                    return ServiceError::OutcomePending {
                        carrier: card.carrier,
                        action: p.action,
                        since: p.since,
                    }
                }
                Ok(_) => {}
                Err(e) => return e.into(),
            }
        }
        ServiceError::Rule(crate::domain::RuleViolation::ChangePending(p.action))
    }

    /// Renews the leases of the intents this process is calling carriers for right now.
    pub async fn renew_leases(&self) -> Result<u64> {
        let held = self.holder.held();
        if held.is_empty() {
            return Ok(0);
        }
        Ok(self
            .store
            .renew_intent_leases(&self.holder.owner, &held, self.lease_until())
            .await?)
    }

    /// Settles every open intent nobody holds, by reading its card at the carrier: the
    /// intended state rolls the plan forward, the old state abandons it, no answer leaves it
    /// for a later pass (with backoff). Returns how many intents were settled.
    pub async fn settle_open_intents(&self) -> Result<usize> {
        self.settle(false).await
    }

    /// The same without waiting out any intent's backoff (harnesses, tests, an operator who
    /// knows the carrier is back).
    pub async fn settle_open_intents_now(&self) -> Result<usize> {
        self.settle(true).await
    }

    async fn settle(&self, ignore_backoff: bool) -> Result<usize> {
        let mut settled = 0;
        loop {
            let now = self.ops_now_ms();
            let claimed = self
                .store
                .claim_open_intents(
                    &self.holder.owner,
                    now,
                    if ignore_backoff { i64::MAX } else { now },
                    self.lease_until(),
                    SETTLE_BATCH,
                    self.now().timestamp_millis(),
                )
                .await?;
            if claimed.is_empty() {
                return Ok(settled);
            }
            let mut progressed = false;
            // Every claimed intent is held (renewed) until it is processed, not only the one
            // being read: another settler must not claim the rest of the batch meanwhile.
            let mut held: std::collections::HashMap<i64, HoldGuard<'_>> = claimed
                .iter()
                .map(|op| (op.id, self.holder.hold(op.id)))
                .collect();
            let (groups, singles, waiting) = self.group_for_batches(claimed);
            for id in waiting {
                self.store.unclaim_intent(id, &self.holder.owner).await?;
                held.remove(&id);
            }
            for group in groups {
                let ids: Vec<i64> = group.ops.iter().map(|o| o.id).collect();
                let done = match &group.kind {
                    GroupKind::Send(change) => {
                        self.send_batch(group.carrier.as_ref(), change, &group.ops)
                            .await
                    }
                    GroupKind::Job(job_id, change) => {
                        self.settle_job(group.carrier.as_ref(), job_id, change, &group.ops)
                            .await
                    }
                };
                match done {
                    Ok(n) => {
                        settled += n;
                        // A batch sent is progress even before it settles: the next intents
                        // are claimed at once.
                        progressed |= n > 0 || matches!(group.kind, GroupKind::Send(_));
                    }
                    Err(e) => {
                        warn!(cards = ids.len(), error = %e, "settling a batch of carrier intents failed; given back");
                        for id in &ids {
                            self.release(
                                *id,
                                &format!("settling failed: {e}"),
                                MAX_SETTLE_BACKOFF_MS,
                            )
                            .await;
                        }
                    }
                }
                for id in ids {
                    held.remove(&id);
                }
            }
            for op in singles {
                let done = self.settle_one(&op).await;
                held.remove(&op.id);
                match done {
                    Ok(true) => {
                        settled += 1;
                        progressed = true;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        warn!(op = op.id, error = %e, "settling a carrier intent failed; given back");
                        // After a while, for this process or one that can settle it.
                        self.release(
                            op.id,
                            &format!("settling failed: {e}"),
                            MAX_SETTLE_BACKOFF_MS,
                        )
                        .await;
                    }
                }
            }
            if !progressed {
                return Ok(settled);
            }
        }
    }

    async fn settle_one(&self, op: &crate::store::CarrierOp) -> Result<bool> {
        let iccid = Iccid::from_trusted(op.iccid.clone());
        let (action, change, carrier) = self.op_change(op)?;
        let _guard = self.locks.lock(iccid.as_str()).await;
        let owner = &self.holder.owner;
        if op.sent_ms.is_none() {
            // Scheduled for the end of a repeat window, or deferred by the carrier: its time
            // has come (the claim checks it on the card clock).
            let done = self
                .send_op(carrier.as_ref(), &iccid, op.id, &change, op.attempts, false)
                .await?;
            return Ok(match done {
                Done::Applied(card) => {
                    info!(%iccid, op = op.id, action = action.as_str(), status = card.status().as_str(), "scheduled carrier change sent and applied");
                    true
                }
                Done::NotApplied(e) => {
                    info!(%iccid, op = op.id, action = action.as_str(), error = %e, "scheduled carrier change not applied");
                    true
                }
                Done::Open | Done::Unknown => false,
            });
        }
        let wait = settle_wait(op.attempts);
        if !op.order_id.is_empty() && op.job_id.is_empty() && carrier.queries_orders() {
            match carrier.order(&iccid, &op.order_id).await {
                Ok(OrderProgress::Completed) => {
                    let how = Settle {
                        by: SettledBy::OrderQuery,
                        order_id: None,
                        order_status: Some("completed"),
                    };
                    let after = self
                        .store
                        .settle_applied(op.id, owner, self.ops_now_ms(), &how)
                        .await?;
                    if let Some(card) = &after {
                        info!(%iccid, op = op.id, order = op.order_id.as_str(), status = card.status().as_str(), "carrier order completed: applied");
                    }
                    return Ok(after.is_some());
                }
                Ok(OrderProgress::Failed(word)) => {
                    let how = Settle {
                        by: SettledBy::OrderQuery,
                        order_id: None,
                        order_status: Some(&word),
                    };
                    let reason = format!(
                        "the carrier's order {} ended {word}: the {} did not happen",
                        op.order_id,
                        action.verb()
                    );
                    let done = self
                        .store
                        .settle_abandoned(op.id, owner, &reason, self.ops_now_ms(), &how)
                        .await?;
                    if done {
                        info!(%iccid, op = op.id, order = op.order_id.as_str(), word = word.as_str(), "carrier order failed: not applied");
                    }
                    return Ok(done);
                }
                Ok(OrderProgress::Open(word)) => {
                    self.store
                        .record_order(op.id, &op.order_id, &word, self.ops_now_ms())
                        .await?;
                    self.release(op.id, "", wait).await;
                    return Ok(false);
                }
                // The platform no longer knows the order (OneLink keeps orders 60 days): the
                // card's state tells instead.
                Err(CarrierError::Rejected { .. }) => {}
                Err(e) => {
                    self.release(op.id, &format!("order query failed: {e}"), wait)
                        .await;
                    return Ok(false);
                }
            }
        }
        // Taken by the carrier as an order: not applied yet may mean not completed yet.
        let accepted_as_order = !op.order_status.is_empty();
        match read_with_retries(self.ops_clock.as_ref(), carrier.as_ref(), &iccid, &change).await {
            // A state that cannot be read settles nothing either way: read again later.
            Ok(Err(why)) => {
                self.release(op.id, &format!("settling read: {why}"), wait)
                    .await;
                Ok(false)
            }
            Ok(Ok(true)) => {
                let after = self
                    .store
                    .settle_applied(
                        op.id,
                        owner,
                        self.ops_now_ms(),
                        &Settle::by(SettledBy::StateRead),
                    )
                    .await?;
                if let Some(card) = &after {
                    info!(%iccid, op = op.id, action = action.as_str(), status = card.status().as_str(), "pending carrier change settled: applied");
                }
                Ok(after.is_some())
            }
            Ok(Ok(false))
                if accepted_as_order && self.ops_now_ms() - op.created_ms < ORDER_PATIENCE_MS =>
            {
                self.release(op.id, "", wait).await;
                Ok(false)
            }
            Ok(Ok(false)) => {
                let reason = format!(
                    "the carrier does not show the {}: it did not happen",
                    action.verb()
                );
                let done = self
                    .store
                    .settle_abandoned(
                        op.id,
                        owner,
                        &reason,
                        self.ops_now_ms(),
                        &Settle::by(SettledBy::StateRead),
                    )
                    .await?;
                if done {
                    info!(%iccid, op = op.id, action = action.as_str(), "pending carrier change settled: not applied");
                }
                Ok(done)
            }
            // A refused read (expired credentials, a card the platform no longer lists) says
            // nothing about whether the change landed: like no answer, it is tried again later.
            Err(e) => {
                self.release(op.id, &format!("settling read failed: {e}"), wait)
                    .await;
                Ok(false)
            }
        }
    }

    /// The account, carrier action and change of a journal row.
    fn op_change(
        &self,
        op: &crate::store::CarrierOp,
    ) -> Result<(CarrierAction, Change, std::sync::Arc<dyn Carrier>)> {
        let corrupt = |what: String| ServiceError::Store(StoreError::Corrupt(what));
        let (Some(action), Ok(carrier_id)) = (
            op.carrier_action(),
            op.carrier.parse::<crate::domain::CarrierId>(),
        ) else {
            return Err(corrupt(format!(
                "carrier op {} names no known carrier or action",
                op.id
            )));
        };
        let change = change_of(action, &op.params)
            .map_err(|e| corrupt(format!("carrier op {}: {e}", op.id)))?;
        let account = if op.account_id.is_empty() {
            crate::domain::AccountId::default_for(carrier_id)
        } else {
            crate::domain::AccountId::parse(&op.account_id).map_err(|_| {
                corrupt(format!(
                    "carrier op {} names account {:?}",
                    op.id, op.account_id
                ))
            })?
        };
        Ok((action, change, self.carrier(&account)?.clone()))
    }

    /// Splits claimed intents into batches and the rest: stops or restores due to be sent on
    /// an account whose platform has a batch change call, by account and action (two or more:
    /// one card goes on its own), and intents sent in the same batch job, by job; and the ids
    /// of gathered changes that wait for their batch to fill ([`GATHER_MS`]). A row that
    /// cannot be read is left to `settle_one`, which reports it.
    fn group_for_batches(
        &self,
        claimed: Vec<crate::store::CarrierOp>,
    ) -> (Vec<OpGroup>, Vec<crate::store::CarrierOp>, Vec<i64>) {
        let mut waiting = Vec::new();
        let mut sends: std::collections::BTreeMap<(String, &'static str), OpGroup> =
            Default::default();
        let mut jobs: std::collections::BTreeMap<(String, String), OpGroup> = Default::default();
        let mut singles = Vec::new();
        for op in claimed {
            let Ok((action, change, carrier)) = self.op_change(&op) else {
                singles.push(op);
                continue;
            };
            if op.sent_ms.is_none() && batches(carrier.as_ref(), action) {
                let key = (carrier.account().as_str().to_string(), action.as_str());
                sends
                    .entry(key)
                    .or_insert_with(|| OpGroup {
                        carrier: carrier.clone(),
                        kind: GroupKind::Send(change),
                        ops: Vec::new(),
                    })
                    .ops
                    .push(op);
            } else if op.sent_ms.is_some() && !op.job_id.is_empty() {
                let key = (carrier.account().as_str().to_string(), op.job_id.clone());
                jobs.entry(key)
                    .or_insert_with(|| OpGroup {
                        carrier: carrier.clone(),
                        kind: GroupKind::Job(op.job_id.clone(), change),
                        ops: Vec::new(),
                    })
                    .ops
                    .push(op);
            } else {
                singles.push(op);
            }
        }
        let mut groups = Vec::new();
        let young = self.ops_now_ms() - GATHER_MS;
        for (_, g) in sends {
            let limit = g.carrier.batch_change_limit().max(1);
            if g.ops.len() < limit
                && g.ops
                    .iter()
                    .all(|o| o.created_ms > young && from_bulk(&o.source))
            {
                // Not full, and its cards may still be arriving (a bulk operation opens them a
                // few at a time): waits for more, until its oldest card has waited GATHER_MS.
                waiting.extend(g.ops.iter().map(|o| o.id));
                continue;
            }
            if g.ops.len() < 2 {
                singles.extend(g.ops);
                continue;
            }
            let mut ops = g.ops;
            while !ops.is_empty() {
                let rest = ops.split_off(limit.min(ops.len()));
                groups.push(OpGroup {
                    carrier: g.carrier.clone(),
                    kind: g.kind.clone(),
                    ops,
                });
                ops = rest;
            }
        }
        groups.extend(jobs.into_values());
        (groups, singles, waiting)
    }

    /// Sends one batch of due stops or restores (held by this process) in one batch call. The
    /// intents are marked sent first, as for a single change. Taken: each is an order of the
    /// job, settled by [`CardService::settle_job`]. No answer: each is settled by reading its
    /// card. Any refusal: the platform may have refused the whole batch for one card (a card
    /// changed within its window outside simgate, which the reply need not name), so the cards
    /// are changed one by one, each through the single-change path. Returns how many settled.
    ///
    /// No per-card lock is taken here: the intents are held under this process's lease, and
    /// every other path to the card sees its open intent.
    async fn send_batch(
        &self,
        carrier: &dyn Carrier,
        change: &Change,
        ops: &[crate::store::CarrierOp],
    ) -> Result<usize> {
        let owner = &self.holder.owner;
        let sent_ms = self.now().timestamp_millis();
        let mut marked = Vec::with_capacity(ops.len());
        for op in ops {
            if self.store.mark_intent_sent(op.id, owner, sent_ms).await? {
                marked.push(op);
            }
        }
        if marked.is_empty() {
            return Ok(0);
        }
        let iccids: Vec<Iccid> = marked
            .iter()
            .map(|op| Iccid::from_trusted(op.iccid.clone()))
            .collect();
        match carrier.change_batch(&iccids, change).await {
            Ok(receipt) => {
                info!(account = %carrier.account(), job = receipt.job_id.as_str(), cards = marked.len(), "batch change taken by the carrier; settled through its job");
                for op in &marked {
                    self.store
                        .record_job(op.id, &receipt.job_id, ACCEPTED, self.ops_now_ms())
                        .await?;
                    self.release(op.id, "", FIRST_ORDER_POLL_MS).await;
                }
                Ok(0)
            }
            Err(CarrierError::OutcomeUnknown(msg)) => {
                info!(account = %carrier.account(), cards = marked.len(), error = msg.as_str(), "batch change unanswered; each card is settled by reading it");
                for op in &marked {
                    self.release(op.id, &format!("batch change unanswered: {msg}"), 0)
                        .await;
                }
                Ok(0)
            }
            Err(e) => {
                info!(account = %carrier.account(), cards = marked.len(), error = %e, "batch change not taken; the cards are changed one by one");
                let mut settled = 0;
                for (op, iccid) in marked.iter().zip(&iccids) {
                    if self
                        .send_op(carrier, iccid, op.id, change, op.attempts, true)
                        .await?
                        .settled()
                    {
                        settled += 1;
                    }
                }
                Ok(settled)
            }
        }
    }

    /// Settles the intents of batch job `job_id` from one query of the job: a card the job
    /// applied is applied; a card it failed is read, and changed on its own if the read shows
    /// it not changed; a card it has not processed waits; a card a finished job does not name,
    /// or a job the platform no longer knows, is settled by reading the card. Returns how many
    /// settled.
    async fn settle_job(
        &self,
        carrier: &dyn Carrier,
        job_id: &str,
        change: &Change,
        ops: &[crate::store::CarrierOp],
    ) -> Result<usize> {
        let owner = &self.holder.owner;
        let iccids: Vec<Iccid> = ops
            .iter()
            .map(|op| Iccid::from_trusted(op.iccid.clone()))
            .collect();
        let job = match carrier.batch_job(job_id, &iccids).await {
            Ok(job) => job,
            Err(CarrierError::Rejected { code, message }) => {
                info!(job = job_id, code = code.as_str(), message = message.as_str(), "the platform does not know the batch job; its cards are settled by reading them");
                for op in ops {
                    self.store.leave_job(op.id, self.ops_now_ms()).await?;
                    self.release(op.id, "", 0).await;
                }
                return Ok(0);
            }
            Err(e) => {
                for op in ops {
                    self.release(
                        op.id,
                        &format!("batch job query failed: {e}"),
                        settle_wait(op.attempts),
                    )
                    .await;
                }
                return Ok(0);
            }
        };
        let items: std::collections::HashMap<&Iccid, &crate::carrier::BatchItem> =
            job.items.iter().map(|(i, item)| (i, item)).collect();
        let mut settled = 0;
        for (op, iccid) in ops.iter().zip(&iccids) {
            match items.get(iccid) {
                Some(crate::carrier::BatchItem::Applied) => {
                    let how = Settle {
                        by: SettledBy::OrderQuery,
                        order_id: None,
                        order_status: Some(&job.status),
                    };
                    if let Some(card) = self
                        .store
                        .settle_applied(op.id, owner, self.ops_now_ms(), &how)
                        .await?
                    {
                        info!(%iccid, op = op.id, job = job_id, status = card.status().as_str(), "batch job applied the change");
                        settled += 1;
                    }
                }
                Some(crate::carrier::BatchItem::Failed { code, message }) => {
                    info!(%iccid, op = op.id, job = job_id, code = code.as_str(), message = message.as_str(), "batch job failed the card; read, then changed on its own");
                    self.store.leave_job(op.id, self.ops_now_ms()).await?;
                    if self.retry_alone(carrier, iccid, op, change).await? {
                        settled += 1;
                    }
                }
                Some(crate::carrier::BatchItem::Open) | None if !job.finished => {
                    self.store
                        .record_order(op.id, job_id, &job.status, self.ops_now_ms())
                        .await?;
                    self.release(op.id, "", settle_wait(op.attempts)).await;
                }
                _ => {
                    self.store.leave_job(op.id, self.ops_now_ms()).await?;
                    self.release(op.id, "", 0).await;
                }
            }
        }
        Ok(settled)
    }

    /// A card a batch job did not change: applied if a read shows the change, else sent on
    /// its own (the single-change path, with its deferrals); a read that fails leaves it for
    /// the settler. True when settled.
    async fn retry_alone(
        &self,
        carrier: &dyn Carrier,
        iccid: &Iccid,
        op: &crate::store::CarrierOp,
        change: &Change,
    ) -> Result<bool> {
        match read_with_retries(self.ops_clock.as_ref(), carrier, iccid, change).await {
            Ok(Ok(true)) => Ok(self
                .store
                .settle_applied(
                    op.id,
                    &self.holder.owner,
                    self.ops_now_ms(),
                    &Settle::by(SettledBy::StateRead),
                )
                .await?
                .is_some()),
            Ok(Ok(false)) => Ok(self
                .send_op(carrier, iccid, op.id, change, op.attempts, true)
                .await?
                .settled()),
            Ok(Err(why)) => {
                self.release(op.id, &format!("settling read: {why}"), 0)
                    .await;
                Ok(false)
            }
            Err(e) => {
                self.release(op.id, &format!("settling read failed: {e}"), 0)
                    .await;
                Ok(false)
            }
        }
    }

    /// What the usage sync does with a reading whose state differs from a card with no open
    /// intent: records the drift once (and repairs it if so configured); clears a recorded
    /// drift the carrier no longer shows.
    pub(crate) async fn check_drift(&self, card: &Card, carrier_state: ServiceState) -> Result<()> {
        if card.pending.is_some() {
            return Ok(());
        }
        let expected = card.expected_carrier_state();
        let now = self.now();
        if carrier_state.as_str() == expected {
            if card.drift.is_some() {
                let e = CardEvent::of(
                    card,
                    now,
                    event::card::DRIFT_RESOLVED,
                    Cause::Usage,
                    Fen::ZERO,
                );
                self.store.clear_drift(card, &e).await?;
            }
            return Ok(());
        }
        if card
            .drift
            .as_ref()
            .is_some_and(|d| d.carrier_state == carrier_state.as_str())
        {
            return Ok(());
        }
        let e = CardEvent::of(
            card,
            now,
            event::card::DRIFT_DETECTED,
            Cause::Usage,
            Fen::ZERO,
        );
        let recorded = self
            .store
            .record_drift(card, carrier_state.as_str(), &e, now.timestamp_millis())
            .await?;
        if recorded {
            warn!(iccid = %card.iccid, carrier_state = carrier_state.as_str(), expected, "carrier state differs from the card with no change of simgate's open (drift)");
        }
        if recorded && self.journal.drift_repair == DriftRepair::CarrierFollowsCard {
            self.repair_drift(&card.iccid).await?;
        }
        Ok(())
    }

    /// Sends the carrier the state the stored card says, journaled like any change.
    async fn repair_drift(&self, iccid: &Iccid) -> Result<()> {
        let _guard = self.locks.lock(iccid.as_str()).await;
        let card = self.load(iccid).await?;
        if card.pending.is_some() || card.cancelled {
            return Ok(());
        }
        let carrier = self.carrier(&card.account)?.clone();
        let action = if card.is_online() {
            CarrierAction::Restore
        } else {
            CarrierAction::Stop
        };
        let now = self.now();
        let mut next = card.clone();
        next.updated_at = now;
        let t = Transition {
            events: vec![CardEvent::of(
                &next,
                now,
                event::card::DRIFT_REPAIRED,
                Cause::Usage,
                Fen::ZERO,
            )],
            card: next,
            action: Some(action),
            changed: true,
            usage_bytes: 0,
        };
        let origin = Origin {
            source: "DriftRepair".into(),
            key_id: String::new(),
            request_id: String::new(),
        };
        match self.commit(carrier.as_ref(), t, None, None, &origin).await {
            Ok(_) | Err(ServiceError::OutcomePending { .. }) => Ok(()),
            Err(e) => {
                warn!(%iccid, error = %e, "drift repair not applied; reported only");
                Ok(())
            }
        }
    }
}

fn log_change(after: &Card, events: &[CardEvent]) {
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    info!(iccid = %after.iccid, events = ?kinds, status = after.status().as_str(), "card changed");
}

/// Settles open intents and renews this process's leases every `interval` until `shutdown`.
pub async fn run_settler(
    service: CardService,
    interval: std::time::Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // Renewal runs on a task of its own: a settling pass slowed by a hung carrier or a card
    // lock must not let this process's leases run out while it is still working on them.
    let renewer = {
        let service = service.clone();
        let every = std::time::Duration::from_millis((service.journal.lease_ms / 3).max(50));
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            super::every(tokio::time::interval(every), shutdown, || async {
                if let Err(e) = service.renew_leases().await {
                    warn!(error = %e, "renewing carrier intent leases failed");
                }
            })
            .await
        })
    };
    super::every(tokio::time::interval(interval), shutdown, || async {
        if let Err(e) = service.settle_open_intents().await {
            warn!(error = %e, "settling open carrier intents failed; retrying");
        }
    })
    .await;
    let _ = renewer.await;
}
