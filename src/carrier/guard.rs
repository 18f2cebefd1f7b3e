//! Protection around a carrier account: its fair-use budget (rates, in `budget`), a concurrency
//! limit (what the carrier's contract allows), and a circuit breaker, so that when a carrier is down calls fail
//! fast with a clear message instead of piling up, while reads of stored cards go on. It is also
//! where every carrier call is counted and timed for the metrics, and gets its span (carrier,
//! platform, method, card), so that a trace shows each call and the time spent waiting for the
//! account's limits.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tracing::field::Empty;
use tracing::Instrument;

use super::budget::Budget;
use super::{
    Binding, Carrier, CarrierCard, CarrierError, LastSession, OnboardCard, OrderProgress, Rebind,
    Receipt,
};
use crate::clock::Clock;
use crate::domain::{AccountId, CarrierId, CarrierPolicy, Iccid};

/// One account's limits and circuit breaker, from its `[[accounts]]` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CarrierLimits {
    /// Calls per second to the platform, all methods together; 0 means no limit.
    pub requests_per_second: u32,
    /// Calls per second per platform method (per upstream path or method name); 0 means no
    /// limit. IoTLink runs OneLink accounts at 1.
    pub method_requests_per_second: u32,
    /// Calls in flight at once.
    pub max_concurrency: u32,
    /// Consecutive failures (unavailable or no answer) that open the circuit.
    pub breaker_failures: u32,
    /// How long an open circuit refuses calls before one is let through to test the carrier.
    pub breaker_open_ms: u64,
}

impl Default for CarrierLimits {
    fn default() -> Self {
        CarrierLimits {
            requests_per_second: 0,
            method_requests_per_second: 0,
            max_concurrency: 32,
            breaker_failures: 5,
            breaker_open_ms: 30_000,
        }
    }
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<DateTime<Utc>>,
    /// The newest failed call's error and when it came back (wall time).
    last_error: Option<(DateTime<Utc>, String)>,
}

/// What `GetCarrierAccount` shows of an account's guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Until when calls are refused without being sent; None: the circuit is closed.
    pub open_until: Option<DateTime<Utc>>,
    /// Failures in a row (unavailable or no answer) since the last call that worked.
    pub consecutive_failures: u32,
    pub last_error: Option<(DateTime<Utc>, String)>,
    pub in_flight: u32,
}

/// An account's calls in flight counted across replicas (PostgreSQL): a call holds one of the
/// account's `max_concurrency` slot rows while it runs, renewing the hold; a replica that dies
/// leaves its slots to expire after [`SLOT_HOLD`].
pub struct SharedSlots {
    pub store: crate::store::Store,
    /// This process, as the holder of its slots.
    pub holder: String,
}

/// How long a slot stays held without renewal: how soon a dead replica's calls stop counting.
pub const SLOT_HOLD: std::time::Duration = std::time::Duration::from_secs(6);
const SLOT_RENEW: std::time::Duration = std::time::Duration::from_secs(2);
/// How often a call waiting for a slot asks again.
const SLOT_POLL: std::time::Duration = std::time::Duration::from_millis(20);

pub struct Guarded {
    inner: Arc<dyn Carrier>,
    slots: Option<SharedSlots>,
    limits: CarrierLimits,
    budget: Arc<Budget>,
    permits: Semaphore,
    breaker: Mutex<Breaker>,
    /// The inner carrier's account, kept for the spans.
    account: AccountId,
    /// Wall time for the breaker's window (injectable, so tests move time instead of waiting).
    clock: Arc<dyn Clock>,
    metrics: Option<crate::metrics::Metrics>,
    /// The platform the calls reach (`onelink`, `jasper`, `cmp`, or `sim` in process), for the
    /// spans: the same carrier can be reached through a real platform or a simulator.
    platform: &'static str,
}

/// The metrics label of a call's result.
pub fn outcome_label<T>(result: &Result<T, CarrierError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(CarrierError::Transient(_)) => "unavailable",
        Err(CarrierError::RateLimited { .. }) => "rate_limited",
        Err(CarrierError::Rejected { .. }) => "rejected",
        Err(CarrierError::CircuitOpen(_)) => "circuit_open",
        Err(CarrierError::OutcomeUnknown(_)) => "outcome_unknown",
        Err(CarrierError::Deferred { .. }) => "deferred",
    }
}

impl Guarded {
    pub fn new(inner: Arc<dyn Carrier>, limits: CarrierLimits) -> Guarded {
        Guarded {
            budget: Arc::new(Budget::new(
                limits.requests_per_second,
                limits.method_requests_per_second,
            )),
            permits: Semaphore::new(limits.max_concurrency.max(1) as usize),
            breaker: Mutex::new(Breaker::default()),
            clock: Arc::new(crate::clock::SystemClock),
            metrics: None,
            slots: None,
            platform: "unknown",
            account: inner.account(),
            inner,
            limits,
        }
    }

    /// Shares `budget` with the adapter: an adapter that spends it per upstream request
    /// ([`Carrier::spends_budget`]) and this guard must count against the same one.
    pub fn with_budget(mut self, budget: Arc<Budget>) -> Guarded {
        self.budget = budget;
        self
    }

    /// Counts this account's calls in flight across replicas, in `slots.store`.
    pub fn with_shared_slots(mut self, slots: SharedSlots) -> Guarded {
        self.slots = Some(slots);
        self
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    pub fn limits(&self) -> CarrierLimits {
        self.limits
    }

    /// The breaker's state, the newest error and the calls in flight.
    pub fn health(&self) -> Health {
        let b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        let max = self.limits.max_concurrency.max(1) as usize;
        Health {
            open_until: b.open_until.filter(|u| *u > now),
            consecutive_failures: b.failures,
            last_error: b.last_error.clone(),
            in_flight: u32::try_from(max.saturating_sub(self.permits.available_permits()))
                .unwrap_or(u32::MAX),
        }
    }

    /// Runs the breaker's window on `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Guarded {
        self.clock = clock;
        self
    }

    /// Names the platform in the carrier-call spans.
    pub fn with_platform(mut self, platform: &'static str) -> Guarded {
        self.platform = platform;
        self
    }

    /// Counts and times every call into `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Guarded {
        self.metrics = Some(metrics);
        self
    }

    fn open_error(&self, until: DateTime<Utc>) -> CarrierError {
        CarrierError::CircuitOpen(format!(
            "{} is not answering: circuit open after {} consecutive failures; the next call is tried in {} ms",
            self.inner.id().display_name(),
            self.limits.breaker_failures,
            (until - self.clock.now()).num_milliseconds().max(0)
        ))
    }

    /// Runs one call through the breaker, the concurrency limit and the rate limit, inside
    /// `span` (see [`call_span`]).
    async fn call<T, F>(
        &self,
        operation: &'static str,
        span: tracing::Span,
        f: F,
    ) -> Result<T, CarrierError>
    where
        F: std::future::Future<Output = Result<T, CarrierError>>,
    {
        let started = Instant::now();
        let result = self.guarded(operation, f).instrument(span.clone()).await;
        span.record("outcome", outcome_label(&result));
        if let Err(e) = &result {
            span.record("otel.status_code", "error");
            span.record("otel.status_description", tracing::field::display(e));
        }
        if let Some(m) = &self.metrics {
            m.carrier_call(
                self.account.as_str(),
                self.inner.id().as_str(),
                operation,
                outcome_label(&result),
                started.elapsed(),
            );
        }
        result
    }

    async fn guarded<T, F>(&self, operation: &'static str, f: F) -> Result<T, CarrierError>
    where
        F: std::future::Future<Output = Result<T, CarrierError>>,
    {
        {
            let b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(until) = b.open_until {
                if self.clock.now() < until {
                    return Err(self.open_error(until));
                }
            }
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| CarrierError::Transient("carrier guard closed".into()))?;
        let slot = match &self.slots {
            Some(shared) => Some(self.take_slot(shared).await),
            None => None,
        };
        if !self.inner.spends_budget() {
            self.budget.spend(operation).await;
        }
        let result = match (&self.slots, slot) {
            (Some(shared), Some(slot)) => {
                let account = self.account.as_str();
                let renew = async {
                    loop {
                        tokio::time::sleep(SLOT_RENEW).await;
                        if let Err(e) = shared
                            .store
                            .renew_slot(account, slot, &shared.holder, SLOT_HOLD)
                            .await
                        {
                            tracing::warn!(account, error = %e, "carrier slot not renewed");
                        }
                    }
                };
                let result = tokio::select! {
                    biased;
                    r = f => r,
                    () = renew => unreachable!("the renewal loop never ends"),
                };
                if let Err(e) = shared
                    .store
                    .release_slot(account, slot, &shared.holder)
                    .await
                {
                    tracing::warn!(account, error = %e, "carrier slot not released; it expires");
                }
                result
            }
            _ => f.await,
        };
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = &result {
            b.last_error = Some((self.clock.now(), e.to_string()));
        }
        match &result {
            Err(CarrierError::Transient(_)) | Err(CarrierError::OutcomeUnknown(_)) => {
                b.failures += 1;
                if self.limits.breaker_failures > 0 && b.failures >= self.limits.breaker_failures {
                    b.open_until = Some(
                        self.clock.now()
                            + chrono::Duration::milliseconds(
                                i64::try_from(self.limits.breaker_open_ms).unwrap_or(i64::MAX),
                            ),
                    );
                }
            }
            _ => {
                b.failures = 0;
                b.open_until = None;
            }
        }
        result
    }
}

impl Guarded {
    /// Waits for one of the account's slots across replicas. A database that cannot be read
    /// holds the call back rather than letting it exceed the account's concurrency.
    async fn take_slot(&self, shared: &SharedSlots) -> i64 {
        loop {
            match shared
                .store
                .take_slot(self.account.as_str(), &shared.holder, SLOT_HOLD)
                .await
            {
                Ok(Some(slot)) => return slot,
                Ok(None) => tokio::time::sleep(SLOT_POLL).await,
                Err(e) => {
                    tracing::warn!(account = %self.account, error = %e, "carrier slots unreadable; waiting");
                    tokio::time::sleep(SLOT_POLL * 10).await;
                }
            }
        }
    }
}

/// The span of one carrier call, `carrier.<method>`: a macro, because a span's name must be a
/// constant, and a name per method is what a trace viewer lists. `iccid`: the card of a
/// one-card call; `cards`: how many cards a batch call names.
macro_rules! call_span {
    ($guard:expr, $method:literal, iccid = $iccid:expr) => {
        call_span!($guard, $method, Some($iccid.as_str()), None::<usize>)
    };
    ($guard:expr, $method:literal, cards = $cards:expr) => {
        call_span!($guard, $method, None::<&str>, Some($cards))
    };
    ($guard:expr, $method:literal, $iccid:expr, $cards:expr) => {
        tracing::info_span!(
            concat!("carrier.", $method),
            otel.kind = "client",
            otel.status_code = Empty,
            otel.status_description = Empty,
            carrier = $guard.inner.id().as_str(),
            platform = $guard.platform,
            method = $method,
            // The carrier account the call is made on.
            account_id = $guard.account.as_str(),
            iccid = $iccid,
            cards = $cards,
            outcome = Empty,
        )
    };
}

#[async_trait]
impl Carrier for Guarded {
    fn id(&self) -> CarrierId {
        self.inner.id()
    }

    fn account(&self) -> AccountId {
        self.account.clone()
    }

    /// The guard spends the budget for an inner carrier that does not.
    fn spends_budget(&self) -> bool {
        true
    }

    fn addresses_by_msisdn(&self) -> bool {
        self.inner.addresses_by_msisdn()
    }

    async fn msisdn_of(&self, iccid: &Iccid) -> Result<Option<String>, CarrierError> {
        let span = call_span!(self, "msisdn_of", iccid = iccid);
        self.call("msisdn_of", span, self.inner.msisdn_of(iccid))
            .await
    }

    fn policy(&self) -> &CarrierPolicy {
        self.inner.policy()
    }

    async fn onboard(&self, cards: &[OnboardCard]) -> Result<(), CarrierError> {
        let span = call_span!(self, "onboard", cards = cards.len());
        self.call("onboard", span, self.inner.onboard(cards)).await
    }

    async fn card(&self, iccid: &Iccid) -> Result<CarrierCard, CarrierError> {
        let span = call_span!(self, "card", iccid = iccid);
        self.call("card", span, self.inner.card(iccid)).await
    }

    async fn last_session(&self, iccid: &Iccid) -> Result<LastSession, CarrierError> {
        let span = call_span!(self, "last_session", iccid = iccid);
        self.call("last_session", span, self.inner.last_session(iccid))
            .await
    }

    fn card_not_known(&self, error: &CarrierError) -> bool {
        self.inner.card_not_known(error)
    }

    fn reads_session_apart(&self) -> bool {
        self.inner.reads_session_apart()
    }

    async fn cards(&self, iccids: &[Iccid]) -> Result<Vec<CarrierCard>, CarrierError> {
        let span = call_span!(self, "cards", cards = iccids.len());
        self.call("cards", span, self.inner.cards(iccids)).await
    }

    fn batch_limit(&self) -> usize {
        self.inner.batch_limit()
    }

    async fn stop(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        let span = call_span!(self, "stop", iccid = iccid);
        self.call("stop", span, self.inner.stop(iccid)).await
    }

    async fn restore(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        let span = call_span!(self, "restore", iccid = iccid);
        self.call("restore", span, self.inner.restore(iccid)).await
    }

    async fn cancel(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        let span = call_span!(self, "cancel", iccid = iccid);
        self.call("cancel", span, self.inner.cancel(iccid)).await
    }

    async fn rebind(&self, iccid: &Iccid, rebind: &Rebind) -> Result<Receipt, CarrierError> {
        let span = call_span!(self, "rebind", iccid = iccid);
        self.call("rebind", span, self.inner.rebind(iccid, rebind))
            .await
    }

    fn rebind_modes(&self) -> Vec<&'static str> {
        self.inner.rebind_modes()
    }

    fn queries_orders(&self) -> bool {
        self.inner.queries_orders()
    }

    async fn order(&self, iccid: &Iccid, order_id: &str) -> Result<OrderProgress, CarrierError> {
        let span = call_span!(self, "order", iccid = iccid);
        self.call("order", span, self.inner.order(iccid, order_id))
            .await
    }

    async fn stop_reasons(
        &self,
        iccid: &Iccid,
    ) -> Result<Option<crate::domain::StopReasons>, CarrierError> {
        let span = call_span!(self, "stop_reasons", iccid = iccid);
        self.call("stop_reasons", span, self.inner.stop_reasons(iccid))
            .await
    }

    async fn binding(&self, iccid: &Iccid) -> Result<Option<Binding>, CarrierError> {
        let span = call_span!(self, "binding", iccid = iccid);
        self.call("binding", span, self.inner.binding(iccid)).await
    }

    fn batch_change_limit(&self) -> usize {
        self.inner.batch_change_limit()
    }

    async fn change_batch(
        &self,
        iccids: &[Iccid],
        change: &super::Change,
    ) -> Result<super::BatchReceipt, CarrierError> {
        let span = call_span!(self, "change_batch", cards = iccids.len());
        self.call(
            "change_batch",
            span,
            self.inner.change_batch(iccids, change),
        )
        .await
    }

    async fn batch_job(
        &self,
        job_id: &str,
        iccids: &[Iccid],
    ) -> Result<super::BatchJob, CarrierError> {
        let span = call_span!(self, "batch_job", cards = iccids.len());
        self.call("batch_job", span, self.inner.batch_job(job_id, iccids))
            .await
    }

    fn lists_changes(&self) -> bool {
        self.inner.lists_changes()
    }

    async fn changes_since(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        page: u32,
    ) -> Result<super::ChangePage, CarrierError> {
        let span = call_span!(self, "changes_since", None::<&str>, None::<usize>);
        self.call("changes_since", span, self.inner.changes_since(since, page))
            .await
    }

    async fn usage_of(&self, iccid: &Iccid) -> Result<super::UsageReading, CarrierError> {
        let span = call_span!(self, "usage_of", iccid = iccid);
        self.call("usage_of", span, self.inner.usage_of(iccid))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carrier::MockCarrier;

    fn mock() -> MockCarrier {
        let mut m = MockCarrier::new();
        m.expect_id().return_const(CarrierId::Telecom);
        m.expect_account()
            .return_const(AccountId::default_for(CarrierId::Telecom));
        m.expect_spends_budget().return_const(false);
        m
    }

    #[tokio::test]
    async fn the_circuit_opens_after_consecutive_failures_and_fails_fast() {
        let mut m = mock();
        m.expect_stop()
            .times(3)
            .returning(|_| Err(CarrierError::Transient("down".into())));
        let g = Guarded::new(
            Arc::new(m),
            CarrierLimits {
                breaker_failures: 3,
                breaker_open_ms: 60_000,
                ..CarrierLimits::default()
            },
        );
        let iccid = Iccid::from_trusted("8986031630200230821".into());
        for _ in 0..3 {
            assert!(g.stop(&iccid).await.is_err());
        }
        // The fourth call never reaches the carrier (the mock allows three).
        let err = g.stop(&iccid).await.unwrap_err();
        assert!(err.to_string().contains("circuit open"), "{err}");
        assert!(err.to_string().contains("China Telecom"));
    }

    #[tokio::test]
    async fn a_half_open_circuit_closes_on_success() {
        let mut m = mock();
        let mut seq = mockall::Sequence::new();
        m.expect_restore()
            .times(2)
            .in_sequence(&mut seq)
            .returning(|_| Err(CarrierError::OutcomeUnknown("timeout".into())));
        m.expect_restore()
            .times(2)
            .in_sequence(&mut seq)
            .returning(|_| Ok(crate::carrier::Receipt::applied()));
        let clock = crate::clock::ManualClock::new(chrono::Utc::now());
        let g = Guarded::new(
            Arc::new(m),
            CarrierLimits {
                breaker_failures: 2,
                breaker_open_ms: 20_000,
                ..CarrierLimits::default()
            },
        )
        .with_clock(Arc::new(clock.clone()));
        let iccid = Iccid::from_trusted("8986031630200230821".into());
        assert!(g.restore(&iccid).await.is_err());
        assert!(g.restore(&iccid).await.is_err());
        assert!(matches!(
            g.restore(&iccid).await,
            Err(CarrierError::CircuitOpen(_))
        ));
        clock.advance(chrono::Duration::seconds(19)).unwrap();
        assert!(matches!(
            g.restore(&iccid).await,
            Err(CarrierError::CircuitOpen(_))
        ));
        clock.advance(chrono::Duration::seconds(2)).unwrap();
        g.restore(&iccid).await.unwrap();
        g.restore(&iccid).await.unwrap();
    }

    #[tokio::test]
    async fn refusals_do_not_open_the_circuit() {
        let mut m = mock();
        m.expect_stop().times(10).returning(|_| {
            Err(CarrierError::Rejected {
                code: "-5".into(),
                message: "already ordered".into(),
            })
        });
        let g = Guarded::new(
            Arc::new(m),
            CarrierLimits {
                breaker_failures: 2,
                ..CarrierLimits::default()
            },
        );
        let iccid = Iccid::from_trusted("8986031630200230821".into());
        for _ in 0..10 {
            assert!(matches!(
                g.stop(&iccid).await,
                Err(CarrierError::Rejected { .. })
            ));
        }
    }
}
