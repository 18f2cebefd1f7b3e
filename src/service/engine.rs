//! The lifecycle engine: finds cards whose time-driven transitions are due (rollover, expiry,
//! retention fees, cancellation, stage changes, scheduled restores) and applies them exactly once.
//!
//! Exactly once comes from three things together: the pure `lifecycle::advance` applies each
//! card's due transitions and moves its `next_due_at` past them in the same write; every write is
//! version-checked, so a card changed meanwhile is skipped and retried rather than overwritten;
//! and cards are claimed with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so two engines do
//! not work on the same card. A crash leaves either the old state (due again, redone after the
//! lease runs out) or the new one (no longer due), never half of a card's transitions.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::journal::Origin;
use super::CardService;
use crate::clock::{Clock, SystemClock};
use crate::domain::lifecycle;

/// How long an engine holds the cards it claimed without finishing them.
pub const DEFAULT_LEASE: chrono::Duration = chrono::Duration::seconds(60);

/// How many cards one claim takes; also the size of one write transaction.
pub const DEFAULT_BATCH: u32 = 1000;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassStats {
    /// Cards whose due transitions were applied and stored.
    pub applied: u64,
    /// Cards changed by someone else meanwhile; they stay due.
    pub conflicts: u64,
    /// Cards whose carrier call failed; they stay due and are retried on the next pass.
    pub failed: u64,
}

impl PassStats {
    fn add(&mut self, o: PassStats) {
        self.applied += o.applied;
        self.conflicts += o.conflicts;
        self.failed += o.failed;
    }
}

#[derive(Clone)]
pub struct Engine {
    service: CardService,
    /// Identifies this engine's leases; unique per process.
    owner: String,
    /// Leases expire on the wall clock, not the simulated one: they are about a process being
    /// alive, and a frozen test clock must not keep a crashed engine's cards locked forever.
    lease_clock: Arc<dyn Clock>,
    lease: chrono::Duration,
    batch: u32,
    /// One pass at a time inside this process (background ticks and AdvanceClock share it).
    running: Arc<Mutex<()>>,
}

impl Engine {
    pub fn new(service: CardService) -> Engine {
        Engine {
            service,
            owner: format!("engine-{}", uuid::Uuid::new_v4().simple()),
            lease_clock: Arc::new(SystemClock),
            lease: DEFAULT_LEASE,
            batch: DEFAULT_BATCH,
            running: Arc::new(Mutex::new(())),
        }
    }

    pub fn with_lease_clock(mut self, clock: Arc<dyn Clock>, lease: chrono::Duration) -> Engine {
        self.lease_clock = clock;
        self.lease = lease;
        self
    }

    pub fn with_batch(mut self, batch: u32) -> Engine {
        self.batch = batch.max(1);
        self
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Applies everything due at `now` once: claims due cards batch by batch until none is left
    /// that this pass has not tried.
    #[tracing::instrument(name = "engine.pass", skip_all, fields(idle = tracing::field::Empty))]
    pub async fn run_pass(&self, now: DateTime<Utc>) -> super::Result<PassStats> {
        let _one_at_a_time = self.running.lock().await;
        let result = self.pass(now).await;
        if matches!(&result, Ok(s) if *s == PassStats::default()) {
            tracing::Span::current().record(crate::telemetry::IDLE_FIELD, true);
        }
        // Cards this pass could not finish go back for the next pass or another engine.
        if let Err(e) = self.service.store.release_leases(&self.owner).await {
            warn!(error = %e, "could not release engine leases; they expire by themselves");
        }
        result
    }

    async fn pass(&self, now: DateTime<Utc>) -> super::Result<PassStats> {
        let mut stats = PassStats::default();
        loop {
            let lease_now = self.lease_clock.now();
            let cards = self
                .service
                .store
                .claim_due(
                    &self.owner,
                    now,
                    lease_now.timestamp_millis(),
                    (lease_now + self.lease).timestamp_millis(),
                    self.batch,
                )
                .await?;
            if cards.is_empty() {
                return Ok(stats);
            }
            stats.add(self.apply_batch(cards, now).await?);
        }
    }

    /// Cards whose carrier state changes go one by one (carrier call, then a versioned write);
    /// the rest, most of a rollover, are written together in one transaction.
    async fn apply_batch(
        &self,
        cards: Vec<crate::domain::Card>,
        now: DateTime<Utc>,
    ) -> super::Result<PassStats> {
        let mut stats = PassStats::default();
        let mut quiet = Vec::new();
        for card in cards {
            let carrier = self.service.carrier(&card.account)?.clone();
            let mut t = lifecycle::advance(&card, carrier.policy(), now);
            self.service.with_alerts(&card, &mut t, now).await?;
            if !t.changed {
                continue;
            }
            if t.action.is_none() {
                quiet.push((t.card, t.events, t.usage_bytes));
                continue;
            }
            // Under the card's lock, from a fresh read: a request may have changed the card
            // since it was claimed, and the carrier must be told what is true now.
            let _guard = self.service.locks.lock(card.iccid.as_str()).await;
            let Some(fresh) = self.service.store.get_card(&card.iccid).await? else {
                continue;
            };
            if fresh.pending.is_some() {
                // Its open carrier change is settled first; the card stays due.
                continue;
            }
            let mut t = lifecycle::advance(&fresh, carrier.policy(), now);
            self.service.with_alerts(&fresh, &mut t, now).await?;
            if !t.changed {
                continue;
            }
            let origin = Origin {
                source: format!("engine:{}", self.owner),
                key_id: String::new(),
                request_id: String::new(),
            };
            match self
                .service
                .commit(carrier.as_ref(), t, None, None, &origin)
                .await
            {
                Ok(_) => stats.applied += 1,
                Err(super::ServiceError::Conflict) => stats.conflicts += 1,
                Err(e) => {
                    warn!(iccid = %card.iccid, error = %e, "due transition not applied; will retry");
                    stats.failed += 1;
                }
            }
        }
        if !quiet.is_empty() {
            for done in self.service.store.update_cards(&quiet).await? {
                if done {
                    stats.applied += 1;
                } else {
                    stats.conflicts += 1;
                }
            }
        }
        debug!(?stats, "engine batch");
        Ok(stats)
    }

    /// Runs passes until nothing due at `now` is left or a pass makes no progress (cards whose
    /// carrier keeps failing stay due for the background loop).
    pub async fn run_until_idle(&self, now: DateTime<Utc>) -> super::Result<PassStats> {
        let mut total = PassStats::default();
        for _ in 0..100 {
            let stats = self.run_pass(now).await?;
            total.add(stats);
            if stats.applied == 0 || self.service.store.count_due(now).await? == 0 {
                break;
            }
        }
        self.service.settle_pools().await?;
        Ok(total)
    }

    /// Ticks every `interval` until `shutdown` resolves, applying what is due on the service's
    /// clock. Started with the server; catches up on missed ticks at once.
    pub async fn run(
        self,
        interval: std::time::Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        super::every(tokio::time::interval(interval), shutdown, || async {
            if let Err(e) = self.run_pass(self.service.now()).await {
                warn!(error = %e, "lifecycle pass failed; retrying on the next tick");
            }
            // Pools roll over with their members' cycles and follow top-ups made elsewhere.
            if let Err(e) = self.service.settle_pools().await {
                warn!(error = %e, "settling pools failed; retrying on the next tick");
            }
        })
        .await
    }
}
