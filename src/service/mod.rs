//! The use cases, over the store, the carriers and the clocks. `CardService` (here) is split by
//! concern: `cards` has one method per card operation, each a pure rule from `domain` handed to
//! `change`, the one path every change takes (serialise on the card, apply the rule, tell the
//! carrier through the `journal`, persist the card with its events in one transaction).
//! `batch`, `engine`, `monitor`, `events`, `webhooks` and `access` are the services around it;
//! `error` and `caller` are what every use case returns and is called with.

pub mod access;
pub mod batch;
mod caller;
mod cards;
mod change;
pub mod engine;
pub mod error;
pub mod events;
mod idempotency;
pub mod journal;
mod locks;
pub mod monitor;
#[cfg(test)]
mod tests;
pub mod webhooks;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::carrier::{Carrier, Carriers};
use crate::clock::Clock;
use crate::domain::{AccountId, Card, CarrierId, CarrierPolicy};
use crate::store::Store;
pub use caller::Caller;
pub use cards::{ImportWarning, UsageReport};
pub(crate) use error::result_name;
pub use error::{FieldViolation, Result, ServiceError};
pub use idempotency::Idem;

/// The idempotency of a card change, whose stored answer is the card before and after.
pub type CardIdem<'a, 'b> = Option<&'a Idem<'b, (Card, Card)>>;
use journal::Holder;
pub use journal::{DriftRepair, JournalConfig};

use locks::CardLocks;

/// Runs `pass` at each tick of `ticker` until `shutdown` changes: the loop of every background
/// worker. A tick missed while a pass runs long is delayed, not bunched up.
pub(crate) async fn every<F, Fut>(
    mut ticker: tokio::time::Interval,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => pass().await,
            _ = shutdown.changed() => return,
        }
    }
}

/// The card use cases (in `cards`) and the change path (in `change`), over one store, the
/// carriers and the clocks.
#[derive(Clone)]
pub struct CardService {
    store: Store,
    carriers: Carriers,
    clock: Arc<dyn Clock>,
    /// Wall time for the carrier-call journal: whether an intent is stale is about a process
    /// being alive, not about simulated card time.
    ops_clock: Arc<dyn Clock>,
    locks: Arc<CardLocks>,
    alert_rules: Arc<monitor::RulesCache>,
    /// This process's hold on the journal's intents.
    holder: Arc<Holder>,
    journal: JournalConfig,
}

impl CardService {
    pub fn new(store: Store, carriers: Carriers, clock: Arc<dyn Clock>) -> CardService {
        CardService {
            store,
            carriers,
            clock,
            ops_clock: Arc::new(crate::clock::SystemClock),
            locks: Arc::new(CardLocks::default()),
            alert_rules: Arc::new(monitor::RulesCache::default()),
            holder: Arc::new(Holder::new()),
            journal: JournalConfig::default(),
        }
    }

    /// Journal leases, settling and drift repair.
    pub fn with_journal(mut self, journal: JournalConfig) -> CardService {
        self.journal = journal;
        self
    }

    pub fn journal_config(&self) -> JournalConfig {
        self.journal
    }

    /// Card time: the clock card life (plans, cycles, pools, the engine) runs on.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Wall time: security facts (audit times) and operational waits, never simulated.
    pub fn wall_now(&self) -> DateTime<Utc> {
        self.ops_clock.now()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Replaces the journal's wall clock (tests of the settler and its leases).
    pub fn with_ops_clock(mut self, clock: Arc<dyn Clock>) -> CardService {
        self.ops_clock = clock;
        self
    }

    /// The adapter of a card's account.
    fn carrier(&self, account: &AccountId) -> Result<&Arc<dyn Carrier>> {
        self.carriers
            .get(account)
            .ok_or_else(|| ServiceError::AccountNotConfigured(account.clone()))
    }

    pub fn carriers(&self) -> &Carriers {
        &self.carriers
    }

    pub fn policy(&self, id: CarrierId) -> Result<&CarrierPolicy> {
        self.carriers
            .policy(id)
            .ok_or(ServiceError::CarrierNotConfigured(id))
    }
}
