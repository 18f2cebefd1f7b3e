//! Use cases: one method per card operation. Each loads the card, asks the domain rule what
//! happens, tells the carrier (stop/restore) when the card's service changes, and persists the
//! new state with its event in one transaction. Operations on one card are serialised, so two
//! concurrent calls cannot both read the same balance.

pub mod engine;
mod locks;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::carrier::{Carrier, CarrierError, Carriers, OnboardCard, ServiceState};
use crate::clock::Clock;
use crate::domain::diagnosis::{self, Diagnosis};
use crate::domain::lifecycle;
use crate::domain::rules::{self, NewCard};
use crate::domain::{
    Card, CarrierAction, CarrierId, CarrierPolicy, Fen, Iccid, RuleViolation, Transition,
};
use crate::store::{CardFilter, Store, StoreError};

use locks::CardLocks;

/// A request field that is wrong, named as the caller sent it (`cards[3].iccid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> FieldViolation {
        FieldViolation {
            field: field.into(),
            description: description.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid argument: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("card {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Rule(#[from] RuleViolation),
    #[error("{field} {value} already exists")]
    AlreadyExists { field: String, value: String },
    #[error("{}: {error}", carrier.display_name())]
    Carrier {
        carrier: CarrierId,
        error: CarrierError,
    },
    #[error("no adapter is configured for {0}")]
    CarrierNotConfigured(CarrierId),
    #[error("the card changed while the operation ran; retry")]
    Conflict,
    #[error("storage failure: {0}")]
    Store(StoreError),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => ServiceError::Conflict,
            StoreError::Duplicate { field, value } => ServiceError::AlreadyExists {
                field: field.to_string(),
                value,
            },
            other => ServiceError::Store(other),
        }
    }
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// A non-fatal finding about one imported row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportWarning {
    pub row: usize,
    pub iccid: String,
    pub message: String,
}

/// Usage of the current billing cycle against the plan's quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    pub iccid: Iccid,
    pub cycle_start: DateTime<Utc>,
    pub cycle_end: DateTime<Utc>,
    pub used_bytes: u64,
    pub quota_bytes: u64,
}

#[derive(Clone)]
pub struct CardService {
    store: Store,
    carriers: Carriers,
    clock: Arc<dyn Clock>,
    locks: Arc<CardLocks>,
}

impl CardService {
    pub fn new(store: Store, carriers: Carriers, clock: Arc<dyn Clock>) -> CardService {
        CardService {
            store,
            carriers,
            clock,
            locks: Arc::new(CardLocks::default()),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn carrier(&self, id: CarrierId) -> Result<&Arc<dyn Carrier>> {
        self.carriers
            .get(id)
            .ok_or(ServiceError::CarrierNotConfigured(id))
    }

    pub fn policy(&self, id: CarrierId) -> Result<&CarrierPolicy> {
        Ok(self.carrier(id)?.policy())
    }

    /// Registers validated cards, all or none. Each card's starting state is derived from its
    /// facts (balance, real-name, usage, validity) under its carrier's policy.
    pub async fn import(&self, rows: Vec<NewCard>) -> Result<(usize, Vec<ImportWarning>)> {
        let now = self.now();
        let mut cards = Vec::with_capacity(rows.len());
        for row in rows {
            let policy = self.policy(row.carrier)?;
            cards.push(rules::open_card(row, policy, now));
        }
        let mut by_carrier: BTreeMap<CarrierId, Vec<OnboardCard>> = BTreeMap::new();
        for c in &cards {
            by_carrier.entry(c.carrier).or_default().push(OnboardCard {
                iccid: c.iccid.clone(),
                state: service_state(c),
                cycle_usage_bytes: c.cycle_usage_bytes,
            });
        }
        // Carriers first: onboarding is idempotent, so a store failure after it leaves nothing
        // that a retried import would trip over.
        for (id, onboard) in &by_carrier {
            self.carrier(*id)?
                .onboard(onboard)
                .await
                .map_err(|error| ServiceError::Carrier {
                    carrier: *id,
                    error,
                })?;
        }
        match self.store.insert_cards(&cards).await {
            Ok(()) => {}
            Err(StoreError::Duplicate { field, value }) => {
                let row = cards.iter().position(|c| {
                    c.iccid.as_str() == value
                        || c.msisdn.as_ref().is_some_and(|m| m.as_str() == value)
                });
                let field = match row {
                    Some(i) => format!("cards[{i}].{field}"),
                    None => field.to_string(),
                };
                return Err(ServiceError::AlreadyExists { field, value });
            }
            Err(e) => return Err(e.into()),
        }
        let warnings = cards
            .iter()
            .enumerate()
            .flat_map(|(row, c)| {
                c.warnings.iter().map(move |w| ImportWarning {
                    row,
                    iccid: c.iccid.to_string(),
                    message: w.clone(),
                })
            })
            .collect();
        info!(count = cards.len(), "cards imported");
        Ok((cards.len(), warnings))
    }

    pub async fn get(&self, iccid: &Iccid) -> Result<Card> {
        self.store
            .get_card(iccid)
            .await?
            .ok_or_else(|| ServiceError::NotFound(iccid.to_string()))
    }

    pub async fn list(
        &self,
        filter: &CardFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Card>> {
        Ok(self.store.list_cards(filter, after, limit).await?)
    }

    pub async fn suspend(&self, iccid: &Iccid) -> Result<Card> {
        self.mutate(iccid, |card, _, now| rules::suspend(card, now))
            .await
            .map(|(_, after)| after)
    }

    pub async fn resume(&self, iccid: &Iccid) -> Result<Card> {
        self.mutate(iccid, |card, _, now| rules::resume(card, now))
            .await
            .map(|(_, after)| after)
    }

    /// Returns the card before and after, so the caller sees the balance move.
    pub async fn recharge(&self, iccid: &Iccid, amount: Fen) -> Result<(Card, Card)> {
        self.mutate(iccid, |card, policy, now| {
            rules::recharge(card, policy, amount, now)
        })
        .await
    }

    pub async fn renew(&self, iccid: &Iccid, months: u32) -> Result<Card> {
        self.mutate(iccid, |card, policy, now| {
            rules::renew(card, policy, months, now)
        })
        .await
        .map(|(_, after)| after)
    }

    pub async fn verify_real_name(&self, iccid: &Iccid) -> Result<Card> {
        self.mutate(iccid, |card, _, now| rules::verify_real_name(card, now))
            .await
            .map(|(_, after)| after)
    }

    /// Diagnoses the card as it is now (due transitions applied in memory, nothing stored) from
    /// what its carrier reports and its recent history.
    pub async fn diagnose(
        &self,
        iccid: &Iccid,
        lang: diagnosis::Lang,
    ) -> Result<(Diagnosis, DateTime<Utc>)> {
        let card = self.get(iccid).await?;
        let carrier = self.carrier(card.carrier)?;
        let now = self.now();
        let settled = lifecycle::advance(&card, carrier.policy(), now);
        let at_carrier = carrier
            .card(iccid)
            .await
            .map_err(|error| ServiceError::Carrier {
                carrier: card.carrier,
                error,
            })?;
        let mut history: Vec<diagnosis::HistoryEntry> = self
            .store
            .recent_card_events(iccid, 200)
            .await?
            .into_iter()
            .map(|e| diagnosis::HistoryEntry {
                kind: e.kind,
                at: e.at,
                amount: e.amount,
            })
            .collect();
        history.extend(settled.events.iter().map(|e| diagnosis::HistoryEntry {
            kind: e.kind.to_string(),
            at: e.at,
            amount: e.amount,
        }));
        let facts = diagnosis::CarrierFacts {
            // Usage the carrier counted in an earlier cycle is not this cycle's.
            cycle_usage_bytes: at_carrier.cycle_usage_bytes,
            last_session_at: at_carrier.last_session_at,
        };
        Ok((
            diagnosis::diagnose(&settled.card, carrier.policy(), &facts, &history, now, lang),
            now,
        ))
    }

    /// A page of the card's history, oldest first.
    pub async fn events(
        &self,
        iccid: &Iccid,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<crate::store::EventRow>> {
        Ok(self.store.card_events_page(iccid, after_id, limit).await?)
    }

    /// Reads the cycle's usage from the carrier, the source of truth for traffic.
    pub async fn usage(&self, iccid: &Iccid) -> Result<UsageReport> {
        let card = self.get(iccid).await?;
        let carrier = self.carrier(card.carrier)?;
        let at_carrier = carrier
            .card(iccid)
            .await
            .map_err(|error| ServiceError::Carrier {
                carrier: card.carrier,
                error,
            })?;
        let (cycle_start, cycle_end) = carrier.policy().cycle_bounds(self.now());
        Ok(UsageReport {
            iccid: card.iccid,
            cycle_start,
            cycle_end,
            used_bytes: at_carrier.cycle_usage_bytes,
            quota_bytes: card.plan.monthly_quota_bytes,
        })
    }

    /// Reads the card's cycle usage from its carrier and applies what it means (test gift used
    /// up, billing started, over quota). Returns the card as stored afterwards.
    pub async fn sync_usage(&self, iccid: &Iccid) -> Result<Card> {
        let carrier = self.carrier(self.get(iccid).await?.carrier)?.clone();
        let total = carrier
            .card(iccid)
            .await
            .map_err(|error| ServiceError::Carrier {
                carrier: carrier.id(),
                error,
            })?
            .cycle_usage_bytes;
        self.mutate(iccid, |card, policy, now| {
            Ok(lifecycle::accrue_usage(card, policy, total, now))
        })
        .await
        .map(|(_, after)| after)
    }

    /// The one path every requested change takes: serialise on the card, bring it up to now,
    /// apply the pure rule, make the carrier agree, then persist. A carrier failure leaves the
    /// store untouched.
    async fn mutate<F>(&self, iccid: &Iccid, rule: F) -> Result<(Card, Card)>
    where
        F: FnOnce(&Card, &CarrierPolicy, DateTime<Utc>) -> Result<Transition, RuleViolation>,
    {
        let _guard = self.locks.lock(iccid.as_str()).await;
        let before = self.get(iccid).await?;
        let carrier = self.carrier(before.carrier)?;
        let now = self.now();
        let policy = carrier.policy();
        let t = lifecycle::at_now(&before, policy, now, |c| rule(c, policy, now))?;
        if !t.changed {
            return Ok((before.clone(), before));
        }
        let after = commit(&self.store, carrier.as_ref(), t).await?;
        Ok((before, after))
    }
}

/// Makes the carrier agree with a transition, then stores it with its events. If the store
/// refuses (a concurrent change), the carrier is put back where it was.
async fn commit(store: &Store, carrier: &dyn Carrier, t: Transition) -> Result<Card> {
    let iccid = t.card.iccid.clone();
    if let Some(action) = t.action {
        apply_at_carrier(carrier, &iccid, action).await?;
    }
    match store.update_card(&t.card, &t.events).await {
        Ok(after) => {
            let kinds: Vec<&str> = t.events.iter().map(|e| e.kind).collect();
            info!(iccid = %iccid, events = ?kinds, status = after.status().as_str(), "card changed");
            Ok(after)
        }
        Err(e) => {
            let undo = match t.action {
                Some(CarrierAction::Stop) => Some(CarrierAction::Restore),
                Some(CarrierAction::Restore) => Some(CarrierAction::Stop),
                // A released number cannot be taken back; the next pass records it.
                Some(CarrierAction::Cancel) | None => None,
            };
            if let Some(undo) = undo {
                if let Err(u) = apply_at_carrier(carrier, &iccid, undo).await {
                    warn!(iccid = %iccid, error = %u, "could not undo the carrier change after a store failure");
                }
            }
            Err(e.into())
        }
    }
}

fn service_state(card: &Card) -> ServiceState {
    if card.cancelled {
        ServiceState::Cancelled
    } else if card.is_online() {
        ServiceState::Active
    } else {
        ServiceState::Stopped
    }
}

/// Sends a stop or restore. When the outcome is unknown (sent, no answer), reads the card back
/// from the carrier instead of resending: the change counts only if the carrier shows it.
async fn apply_at_carrier(
    carrier: &dyn Carrier,
    iccid: &Iccid,
    action: CarrierAction,
) -> Result<()> {
    let sent = match action {
        CarrierAction::Stop => carrier.stop(iccid).await,
        CarrierAction::Restore => carrier.restore(iccid).await,
        CarrierAction::Cancel => carrier.cancel(iccid).await,
    };
    let wanted = match action {
        CarrierAction::Stop => ServiceState::Stopped,
        CarrierAction::Restore => ServiceState::Active,
        CarrierAction::Cancel => ServiceState::Cancelled,
    };
    match sent {
        Ok(()) => Ok(()),
        Err(CarrierError::OutcomeUnknown(msg)) => match carrier.card(iccid).await {
            Ok(c) if c.state == wanted => Ok(()),
            _ => Err(ServiceError::Carrier {
                carrier: carrier.id(),
                error: CarrierError::OutcomeUnknown(msg),
            }),
        },
        Err(error) => Err(ServiceError::Carrier {
            carrier: carrier.id(),
            error,
        }),
    }
}
