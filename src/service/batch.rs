//! Bulk operations: a request for up to 100,000 cards is stored at once and carried out card by
//! card by a background worker. Each card goes through the same path as a single request, under
//! the request id `batch:<id>:<index>`, so it is changed exactly once however many times a crash
//! or a retry makes the worker try it; rule refusals are recorded per card, carrier trouble is
//! retried with backoff.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::{result_name, Caller, CardService, Idem, Result, ServiceError};
use crate::auth::{Principal, Role};
use crate::carrier::CarrierError;
use crate::clock::Clock;
use crate::domain::{Card, Fen, Iccid};
use crate::store::{Batch, BatchCounts, BatchItem, IdempotencyRecord, Store};

pub const MAX_BATCH: usize = 100_000;
/// Tries of one card before it is reported failed.
const MAX_ATTEMPTS: i64 = 10;
/// Cards in flight at once (carrier calls wait on the carrier's own limits).
const CONCURRENCY: usize = 32;
/// Cards chosen per pass, round-robin across tenants. A pass waits for its slowest card, so a
/// pass of a few waves keeps the carrier calls flowing (64 cost a third of the throughput).
const PASS: usize = 16 * CONCURRENCY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Suspend,
    Resume,
    Recharge,
}

impl Kind {
    pub fn method(self) -> &'static str {
        match self {
            Kind::Suspend => "BatchSuspend",
            Kind::Resume => "BatchResume",
            Kind::Recharge => "BatchRecharge",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Suspend, Kind::Resume, Kind::Recharge]
            .into_iter()
            .find(|k| k.method() == s)
    }
}

#[derive(Clone)]
pub struct BatchService {
    cards: CardService,
    store: Store,
    /// Wall time: retry backoff is about carriers recovering, not simulated card time.
    clock: Arc<dyn Clock>,
    running: Arc<Mutex<()>>,
}

/// How long to wait before trying an item again whose change is accepted and whose carrier
/// order is still open on `card`: until a scheduled change's time has come (a second after), or
/// none for one with the carrier (the caller backs off). None: the change is done.
fn open_order_wait(card: &Card, card_now: DateTime<Utc>) -> Option<chrono::Duration> {
    let p = card.pending.as_ref()?;
    Some(match p.not_before {
        Some(at) if !p.sent && at > card_now => at - card_now + chrono::Duration::seconds(1),
        _ => chrono::Duration::zero(),
    })
}

fn retryable(e: &ServiceError) -> bool {
    match e {
        ServiceError::Carrier { error, .. } => !matches!(error, CarrierError::Rejected { .. }),
        ServiceError::Conflict
        | ServiceError::Store(_)
        | ServiceError::OutcomePending { .. }
        | ServiceError::Rule(crate::domain::RuleViolation::ChangePending(_)) => true,
        _ => false,
    }
}

/// An item whose own change is pending is never given up: its outcome is being settled, and
/// the next try answers from the settled intent (done) or makes the change again (abandoned).
fn awaits_settling(e: &ServiceError) -> bool {
    matches!(e, ServiceError::OutcomePending { .. })
}

impl BatchService {
    pub fn new(cards: CardService, store: Store) -> BatchService {
        BatchService {
            cards,
            store,
            clock: Arc::new(crate::clock::SystemClock),
            running: Arc::new(Mutex::new(())),
        }
    }

    /// Runs retry backoff and timestamps on `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> BatchService {
        self.clock = clock;
        self
    }

    /// Stores the batch (and, with a request id, its answer) and returns it; the worker does
    /// the rest.
    pub async fn create(
        &self,
        caller: &Caller,
        kind: Kind,
        iccids: Vec<String>,
        amount: Fen,
        idem: Option<&Idem<'_, Batch>>,
    ) -> Result<Batch> {
        // Refused whole, before anything is stored: a batch naming cards the caller cannot see
        // would otherwise be accepted and fail card by card, an audit row each.
        let (first, total) = self
            .store
            .cards_not_visible(&iccids, caller.principal.customer_id.as_deref(), 5)
            .await?;
        if total > 0 {
            let e = ServiceError::CardsNotFound { first, total };
            // One row for the refused request, not one per card.
            let audit = caller.audit(
                self.clock.now(),
                None,
                caller.principal.customer_id.as_deref(),
                &result_name(&e),
                e.to_string(),
            );
            if let Err(err) = self.store.record_audit(&audit).await {
                warn!(error = %err, "could not write the audit record of a refused batch");
            }
            return Err(e);
        }
        let now = self.clock.now();
        let batch = Batch {
            id: uuid::Uuid::new_v4().simple().to_string(),
            kind: kind.method().to_string(),
            amount_fen: amount.0,
            key_id: caller.principal.key_id.clone(),
            role: caller.principal.role.as_str().to_string(),
            customer_id: caller.principal.customer_id.clone(),
            state: "RUNNING".into(),
            total: iccids.len() as i64,
            created_ms: now.timestamp_millis(),
        };
        let answer: Option<IdempotencyRecord> = idem.map(|i| i.record(caller, &batch, now));
        match self
            .store
            .insert_batch(&batch, &iccids, answer.as_ref())
            .await
        {
            Ok(()) => {}
            Err(crate::store::StoreError::Duplicate { .. }) => return Err(ServiceError::Conflict),
            Err(e) => return Err(e.into()),
        }
        info!(batch = %batch.id, kind = %batch.kind, cards = batch.total, "bulk operation accepted");
        Ok(batch)
    }

    /// A batch the caller may see (its own customer's, or any for the reseller admin).
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<(Batch, BatchCounts)> {
        let b = self
            .store
            .get_batch(id)
            .await?
            .filter(|b| match &caller.principal.customer_id {
                None => true,
                Some(own) => b.customer_id.as_deref() == Some(own.as_str()),
            })
            .ok_or_else(|| ServiceError::OperationNotFound(id.to_string()))?;
        let counts = self.store.batch_counts(id).await?;
        Ok((b, counts))
    }

    pub async fn items(
        &self,
        id: &str,
        status: Option<&str>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<BatchItem>> {
        Ok(self.store.batch_items(id, status, after, limit).await?)
    }

    pub async fn list(
        &self,
        caller: &Caller,
        before: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<(Batch, BatchCounts)>> {
        let batches = self
            .store
            .list_batches(caller.principal.customer_id.as_deref(), before, limit)
            .await?;
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let c = self.store.batch_counts(&b.id).await?;
            out.push((b, c));
        }
        Ok(out)
    }

    /// Cancels what is not done yet, audited (a refusal too).
    pub async fn cancel(&self, caller: &Caller, id: &str) -> Result<(Batch, BatchCounts)> {
        let result = self.cancel_seen(caller, id).await;
        let (outcome, customer, detail) = match &result {
            Ok((b, c)) => (
                "OK".to_string(),
                b.customer_id.clone(),
                format!("cancelled operation {id} ({} cards cancelled)", c.cancelled),
            ),
            Err(e) => (
                result_name(e),
                caller.principal.customer_id.clone(),
                e.to_string(),
            ),
        };
        let audit = caller.audit(
            self.clock.now(),
            None,
            customer.as_deref(),
            &outcome,
            detail,
        );
        if let Err(e) = self.store.record_audit(&audit).await {
            warn!(error = %e, "could not write the audit record of CancelOperation");
        }
        result
    }

    async fn cancel_seen(&self, caller: &Caller, id: &str) -> Result<(Batch, BatchCounts)> {
        self.get(caller, id).await?;
        self.store
            .cancel_batch(id, self.clock.now().timestamp_millis())
            .await?;
        self.get(caller, id).await
    }

    /// Works through every due card once; returns how many it tried.
    #[tracing::instrument(name = "batch.pass", skip_all, fields(idle = tracing::field::Empty))]
    pub async fn run_once(&self) -> Result<usize> {
        let _one = self.running.lock().await;
        let mut tried = 0;
        loop {
            let now = self.clock.now();
            // A pass is small so that a tenant who arrives behind a big batch is served within
            // one pass: the pass waits for its slowest card before the next is chosen.
            let (items, running) = self
                .store
                .due_items(now.timestamp_millis(), PASS as u32)
                .await?;
            if items.is_empty() {
                break;
            }
            tried += items.len();
            // Items are claimed a few at a time just before their tries, for as long as a
            // journal lease: the replicas sharing a database take every item once, one that dies
            // leaves its items due again a lease later, and a pass slowed by a carrier's limit
            // does not hold items it will not reach within the lease. The next few are claimed
            // while the ones before them are still being tried.
            let now_ms = now.timestamp_millis();
            let until_ms = now_ms
                + i64::try_from(self.cards.journal_config().lease_ms).unwrap_or(i64::MAX / 2);
            let batches: std::collections::HashMap<String, Batch> =
                running.into_iter().map(|b| (b.id.clone(), b)).collect();
            let batches = Arc::new(batches);
            let chunks: Vec<Vec<BatchItem>> = items
                .chunks(CONCURRENCY)
                .map(<[BatchItem]>::to_vec)
                .collect();
            let store = self.store.clone();
            let claimed = futures::stream::iter(chunks)
                .then(move |chunk| {
                    let store = store.clone();
                    async move {
                        let claimed = store.claim_items(&chunk, now_ms, until_ms).await;
                        let out: Vec<Result<BatchItem>> = match claimed {
                            Ok(set) => chunk
                                .into_iter()
                                .filter(|i| set.contains(&(i.batch_id.clone(), i.seq)))
                                .map(Ok)
                                .collect(),
                            Err(e) => vec![Err(e.into())],
                        };
                        futures::stream::iter(out)
                    }
                })
                .flatten();
            let results: Vec<Result<()>> = claimed
                .map(|item| {
                    let batches = batches.clone();
                    async move {
                        let item = item?;
                        match batches.get(&item.batch_id) {
                            Some(b) => self.process(b, &item, now).await,
                            None => Ok(()),
                        }
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for r in results {
                r?;
            }
        }
        self.finish_done_batches().await?;
        if tried == 0 {
            tracing::Span::current().record(crate::telemetry::IDLE_FIELD, true);
        }
        Ok(tried)
    }

    async fn finish_done_batches(&self) -> Result<()> {
        for id in self.store.finished_running_batches().await? {
            self.store
                .set_batch_state(&id, "DONE", self.clock.now().timestamp_millis())
                .await?;
            info!(batch = %id, "bulk operation finished");
        }
        Ok(())
    }

    async fn process(&self, b: &Batch, item: &BatchItem, now: DateTime<Utc>) -> Result<()> {
        let Some(kind) = Kind::parse(&b.kind) else {
            return Ok(());
        };
        let caller = Caller {
            principal: Principal {
                key_id: b.key_id.clone(),
                role: Role::parse(&b.role).unwrap_or(Role::CustomerViewer),
                customer_id: b.customer_id.clone(),
            },
            request_id: format!("batch:{}:{}", b.id, item.seq),
            method: kind.method(),
        };
        let fingerprint = "batch";
        // Ok(Some(card clock wait)): the item's change is accepted and its carrier order still
        // open (scheduled for the end of a repeat window, or with the carrier): not done yet.
        let card_now = self.cards.now();
        let outcome = match self
            .cards
            .replay(&caller, &caller.request_id, fingerprint)
            .await
        {
            Ok(Some(_)) => Ok(None),
            Ok(None) => {
                let respond = |(_, after): &(Card, Card)| after.version.to_le_bytes().to_vec();
                let idem = Idem {
                    request_id: caller.request_id.clone(),
                    fingerprint: fingerprint.into(),
                    respond: &respond,
                };
                let iccid = Iccid::from_trusted(item.iccid.clone());
                match kind {
                    Kind::Suspend => self
                        .cards
                        .suspend(&iccid, &caller, Some(&idem))
                        .await
                        .map(|c| open_order_wait(&c, card_now)),
                    Kind::Resume => self
                        .cards
                        .resume(&iccid, &caller, Some(&idem))
                        .await
                        .map(|c| open_order_wait(&c, card_now)),
                    Kind::Recharge => self
                        .cards
                        .recharge(&iccid, Fen(b.amount_fen), &caller, Some(&idem))
                        .await
                        .map(|(_, c)| open_order_wait(&c, card_now)),
                }
            }
            Err(e) => Err(e),
        };
        let (status, reason, next) = match outcome {
            Ok(None) => ("DONE", String::new(), 0),
            // Tried again once it may have settled: a scheduled change after its window (the
            // wait is on the card clock, which is the wall clock outside simulation), one with
            // the carrier as the journal's settling does.
            Ok(Some(wait)) => {
                let backoff =
                    chrono::Duration::milliseconds((250i64 << item.attempts.min(5)).min(10_000));
                (
                    "PENDING",
                    "CARRIER_ORDER_OPEN".to_string(),
                    (now + wait.max(backoff)).timestamp_millis(),
                )
            }
            Err(e) if awaits_settling(&e) => {
                let backoff =
                    chrono::Duration::milliseconds((250i64 << item.attempts.min(5)).min(10_000));
                (
                    "PENDING",
                    result_name(&e),
                    (now + backoff).timestamp_millis(),
                )
            }
            Err(e) if retryable(&e) && item.attempts + 1 < MAX_ATTEMPTS => {
                let backoff =
                    chrono::Duration::milliseconds((250i64 << item.attempts.min(8)).min(60_000));
                (
                    "PENDING",
                    result_name(&e),
                    (now + backoff).timestamp_millis(),
                )
            }
            Err(e) => {
                if retryable(&e) {
                    warn!(batch = %b.id, iccid = %item.iccid, error = %e, "card given up after retries");
                }
                ("FAILED", result_name(&e), 0)
            }
        };
        self.store
            .finish_item(&b.id, item.seq, status, &reason, next)
            .await?;
        if status != "PENDING" {
            // Done when its last card is, not when the pass ends: a small batch served in the
            // middle of a big one's pass is reported done at once.
            self.store
                .finish_batch_if_done(&b.id, self.clock.now().timestamp_millis())
                .await?;
        }
        Ok(())
    }

    /// Works through due cards every `interval` until `shutdown` resolves.
    pub async fn run(
        self,
        interval: std::time::Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        super::every(tokio::time::interval(interval), shutdown, || async {
            if let Err(e) = self.run_once().await {
                warn!(error = %e, "bulk operation pass failed; retrying");
            }
        })
        .await
    }
}
