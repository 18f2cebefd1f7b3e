//! The carrier-call journal (`carrier_ops`): one row per change simgate sends to a carrier.
//!
//! An intent is written before the call, in the transaction that marks its card as having a
//! pending change, and holds the whole plan of what the store records once the carrier has
//! applied it (the card, its events, its audit record, the request's answer). It stays OPEN
//! until it is settled, and settling only ever rolls forward:
//! - APPLIED: the carrier accepted the change, or shows the intended state; the plan is
//!   written and the card's pending change cleared, in one transaction.
//! - ABANDONED: the carrier refused it, nothing was sent, or the carrier shows it did not
//!   happen; the card is released unchanged.
//!
//! At most one intent per card is OPEN (a partial unique index), and a card with an open intent
//! takes no other write (every card write requires `pending_op_id IS NULL`), so two processes
//! can never both call the carrier for one card, and the plan is still right when it is applied.
//! An intent is owned by a lease (`lease_owner`, `lease_until_ms` on the wall clock), renewed
//! while its owner lives; only an intent nobody holds is claimed by a settler.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::access::AuditRecord;
use super::cards::{daily_row, update_in, CardRow, Guard};
use super::events::{insert_events, NewEvent};
use super::idempotency::IdempotencyRecord;
use super::pools::add_daily_usage;
use super::{Store, StoreError};
use std::collections::BTreeMap;

use crate::domain::{AccountId, Card, CardEvent, CarrierAction, CarrierId, Iccid, OrderState};

/// One journal row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierOp {
    pub id: i64,
    pub iccid: String,
    pub carrier: String,
    /// The account the change goes out through (empty in rows of older builds: the
    /// carrier's default account).
    pub account_id: String,
    pub action: String,
    /// OPEN, APPLIED or ABANDONED (rows of older builds may say FAILED or RECONCILED).
    pub status: String,
    pub attempts: i64,
    pub last_error: String,
    pub source: String,
    /// The API key and request id the change was made for (empty for simgate's own changes).
    pub key_id: String,
    pub request_id: String,
    pub lease_owner: Option<String>,
    pub created_ms: i64,
    /// The earliest time it may be sent (card clock); None: at once.
    pub not_before_ms: Option<i64>,
    /// When it was last sent (card clock); None: not sent yet.
    pub sent_ms: Option<i64>,
    /// The carrier's order id ('' when its answer carried none).
    pub order_id: String,
    /// The platform's last word on its order.
    pub order_status: String,
    /// ANSWER, ORDER_QUERY or STATE_READ once settled.
    pub settled_by: String,
    pub settled_ms: Option<i64>,
    /// The change's parameters (a rebind's), JSON; '' for none.
    pub params: String,
    /// The platform's batch job the change went out in ('' for a change sent on its own).
    pub job_id: String,
}

impl CarrierOp {
    pub fn carrier_action(&self) -> Option<CarrierAction> {
        CarrierAction::parse(&self.action)
    }

    /// Where the order stands.
    pub fn state(&self) -> OrderState {
        match self.status.as_str() {
            "OPEN" if self.sent_ms.is_none() => OrderState::Scheduled,
            "OPEN" if !self.order_id.is_empty() => OrderState::Submitted,
            "OPEN" => OrderState::Unknown,
            // RECONCILED: rows of older builds, settled as applied.
            "APPLIED" | "RECONCILED" => OrderState::Applied,
            _ => OrderState::Refused,
        }
    }
}

/// How an order's outcome was learnt (`carrier_ops.settled_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettledBy {
    /// The carrier's answer to the change.
    Answer,
    /// The platform's order query.
    OrderQuery,
    /// A read of the card at the carrier.
    StateRead,
}

impl SettledBy {
    pub fn as_str(self) -> &'static str {
        match self {
            SettledBy::Answer => "ANSWER",
            SettledBy::OrderQuery => "ORDER_QUERY",
            SettledBy::StateRead => "STATE_READ",
        }
    }
}

/// Which orders `list_orders` returns.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub iccid: Option<String>,
    pub account: Option<String>,
    pub state: Option<OrderState>,
    /// Only the cards of this customer.
    pub customer: Option<String>,
}

pub fn action_name(a: CarrierAction) -> &'static str {
    a.as_str()
}

/// What the store records once the carrier has applied an intent.
pub struct IntentPlan<'a> {
    /// The card to store, at the version it was read at (the write bumps it).
    pub card: &'a Card,
    pub events: &'a [CardEvent],
    pub audit: Option<&'a AuditRecord>,
    pub answer: Option<&'a IdempotencyRecord>,
    pub usage_bytes: u64,
}

/// Who sends an intent, and for whom.
pub struct NewIntent<'a> {
    pub carrier: CarrierId,
    pub account: &'a AccountId,
    pub action: CarrierAction,
    /// `method:request_id`, `engine:<owner>`, ...: for people reading the journal.
    pub source: &'a str,
    pub key_id: &'a str,
    pub request_id: &'a str,
    /// The process holding the intent while it calls the carrier.
    pub owner: &'a str,
    pub now_ms: i64,
    pub lease_until_ms: i64,
    /// The earliest time it may be sent (card clock): the end of the card's repeat window.
    pub not_before_ms: Option<i64>,
    /// The change's parameters (JSON), '' for none.
    pub params: &'a str,
    /// When it is sent (card clock), if it is sent at once by the caller: marked sent in the
    /// same transaction. None: [`Store::mark_intent_sent`] marks it when it is sent.
    pub sent_ms: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct StoredAudit {
    at_ms: i64,
    key_id: String,
    method: String,
    iccid: Option<String>,
    customer_id: Option<String>,
    request_id: String,
    result: String,
    detail: String,
}

#[derive(Serialize, Deserialize)]
struct StoredAnswer {
    key_id: String,
    request_id: String,
    method: String,
    fingerprint: String,
    response: Vec<u8>,
    created_ms: i64,
}

/// The plan as the `plan` column keeps it (JSON).
#[derive(Serialize, Deserialize)]
struct StoredPlan {
    card: CardRow,
    events: Vec<NewEvent>,
    audit: Option<StoredAudit>,
    answer: Option<StoredAnswer>,
    usage_bytes: u64,
}

impl StoredPlan {
    fn of(plan: &IntentPlan<'_>) -> Result<StoredPlan, StoreError> {
        // The events name the card as it will be stored.
        let mut next = plan.card.clone();
        next.version += 1;
        Ok(StoredPlan {
            card: CardRow::of(plan.card)?,
            events: plan
                .events
                .iter()
                .map(|e| NewEvent::of_card(&next, e))
                .collect(),
            audit: plan.audit.map(|a| StoredAudit {
                at_ms: a.at.timestamp_millis(),
                key_id: a.key_id.clone(),
                method: a.method.clone(),
                iccid: a.iccid.clone(),
                customer_id: a.customer_id.clone(),
                request_id: a.request_id.clone(),
                result: a.result.clone(),
                detail: a.detail.clone(),
            }),
            answer: plan.answer.map(|r| StoredAnswer {
                key_id: r.key_id.clone(),
                request_id: r.request_id.clone(),
                method: r.method.clone(),
                fingerprint: r.fingerprint.clone(),
                response: r.response.clone(),
                created_ms: r.created_ms,
            }),
            usage_bytes: plan.usage_bytes,
        })
    }
}

const OP_COLUMNS: &str =
    "id, iccid, carrier, account_id, action, status, attempts, last_error, source, \
    key_id, request_id, lease_owner, created_ms, not_before_ms, sent_ms, order_id, order_status, \
    settled_by, settled_ms, params, job_id";

fn op_from_row(r: &sqlx::any::AnyRow) -> Result<CarrierOp, StoreError> {
    Ok(CarrierOp {
        id: r.try_get("id")?,
        iccid: r.try_get("iccid")?,
        carrier: r.try_get("carrier")?,
        account_id: r.try_get("account_id")?,
        action: r.try_get("action")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        source: r.try_get("source")?,
        key_id: r.try_get("key_id")?,
        request_id: r.try_get("request_id")?,
        lease_owner: r.try_get("lease_owner")?,
        created_ms: r.try_get("created_ms")?,
        not_before_ms: r.try_get("not_before_ms")?,
        sent_ms: r.try_get("sent_ms")?,
        order_id: r.try_get("order_id")?,
        order_status: r.try_get("order_status")?,
        settled_by: r.try_get("settled_by")?,
        settled_ms: r.try_get("settled_ms")?,
        params: r.try_get("params")?,
        job_id: r.try_get("job_id")?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Errors are kept short in the journal: they are for people, not a log.
fn short(error: &str) -> String {
    error.chars().take(500).collect()
}

/// How an intent is closed.
pub struct Settle<'a> {
    pub by: SettledBy,
    /// The carrier's order id learnt with the outcome (kept if one is already recorded).
    pub order_id: Option<&'a str>,
    /// The platform's last word on its order.
    pub order_status: Option<&'a str>,
}

impl Settle<'_> {
    pub fn by(by: SettledBy) -> Settle<'static> {
        Settle {
            by,
            order_id: None,
            order_status: None,
        }
    }
}

/// Settles intent `op_id` as `status` if it is still open and held by `owner`, keeping
/// `reason` as its last error when given. Returns its row (plan and ICCID), or None.
async fn close_op(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    op_id: i64,
    owner: &str,
    status: &str,
    reason: Option<&str>,
    at_ms: i64,
    how: &Settle<'_>,
) -> Result<Option<sqlx::any::AnyRow>, StoreError> {
    Ok(sqlx::query(
        "UPDATE carrier_ops SET status = $1, lease_owner = NULL, lease_until_ms = NULL, \
         settled_ms = $2, updated_ms = $2, last_error = COALESCE($3, last_error), \
         settled_by = $6, order_id = CASE WHEN order_id = '' THEN COALESCE($7, '') ELSE order_id END, \
         order_status = COALESCE($8, order_status) \
         WHERE id = $4 AND status = 'OPEN' AND lease_owner = $5 RETURNING plan, iccid",
    )
    .bind(status.to_string())
    .bind(at_ms)
    .bind(reason.map(short))
    .bind(op_id)
    .bind(owner.to_string())
    .bind(how.by.as_str())
    .bind(how.order_id.map(str::to_string))
    .bind(how.order_status.map(str::to_string))
    .fetch_optional(&mut **tx)
    .await?)
}

impl Store {
    /// Opens an intent for `plan.card` before its carrier call: the card must still be at the
    /// version it was read at and have no open intent (else `Conflict`, and nothing is written).
    /// Returns the intent's id.
    pub async fn open_intent(
        &self,
        intent: &NewIntent<'_>,
        plan: &IntentPlan<'_>,
    ) -> Result<i64, StoreError> {
        let stored = serde_json::to_string(&StoredPlan::of(plan)?)
            .map_err(|e| StoreError::Corrupt(format!("intent plan: {e}")))?;
        let iccid = plan.card.iccid.as_str().to_string();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO carrier_ops (iccid, carrier, action, status, attempts, last_error, source, \
             created_ms, updated_ms, plan, base_version, key_id, request_id, lease_owner, \
             lease_until_ms, next_attempt_ms, account_id, not_before_ms, params, sent_ms) \
             VALUES ($1, $2, $3, 'OPEN', 0, '', $4, $5, $5, $6, $7, $8, $9, $10, $11, 0, $12, $13, $14, $15) \
             RETURNING id",
        )
        .bind(iccid.clone())
        .bind(intent.carrier.as_str())
        .bind(intent.action.as_str())
        .bind(intent.source.to_string())
        .bind(intent.now_ms)
        .bind(stored)
        .bind(plan.card.version)
        .bind(intent.key_id.to_string())
        .bind(intent.request_id.to_string())
        .bind(intent.owner.to_string())
        .bind(intent.lease_until_ms)
        .bind(intent.account.to_string())
        .bind(intent.not_before_ms)
        .bind(intent.params.to_string())
        .bind(intent.sent_ms)
        .fetch_one(&mut *tx)
        .await;
        let id: i64 = match inserted {
            Ok(row) => row.try_get("id")?,
            Err(e) if is_unique_violation(&e) => {
                // Another process holds an open intent for this card.
                tx.rollback().await?;
                return Err(StoreError::Conflict);
            }
            Err(e) => return Err(e.into()),
        };
        let marked = sqlx::query(
            "UPDATE cards SET pending_op_id = $1, pending_action = $2, pending_since_ms = $3, \
             pending_not_before_ms = $6, pending_order_id = NULL, pending_sent_ms = $7 \
             WHERE iccid = $4 AND version = $5 AND pending_op_id IS NULL",
        )
        .bind(id)
        .bind(intent.action.as_str())
        .bind(intent.now_ms)
        .bind(iccid)
        .bind(plan.card.version)
        .bind(intent.not_before_ms)
        .bind(intent.sent_ms)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() != 1 {
            tx.rollback().await?;
            return Err(StoreError::Conflict);
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Settles an intent as applied: writes its plan (card, events, audit, answer, daily usage)
    /// and clears the card's pending change, if `owner` still holds it. Returns the stored card,
    /// or None when the intent is no longer open or held by someone else (nothing written).
    pub async fn settle_applied(
        &self,
        op_id: i64,
        owner: &str,
        at_ms: i64,
        how: &Settle<'_>,
    ) -> Result<Option<Card>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = close_op(&mut tx, op_id, owner, "APPLIED", None, at_ms, how).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let plan: String = row.try_get("plan")?;
        let plan: StoredPlan = serde_json::from_str(&plan)
            .map_err(|e| StoreError::Corrupt(format!("plan of carrier op {op_id}: {e}")))?;
        let card = Card::try_from(plan.card)?;
        let Some(next) = update_in(&mut tx, &card, Guard::Settles(op_id)).await? else {
            tx.rollback().await?;
            return Err(StoreError::Corrupt(format!(
                "card {} changed while carrier op {op_id} was open",
                card.iccid
            )));
        };
        if let Some(a) = plan.audit {
            let record = AuditRecord {
                at: super::millis_to_time(a.at_ms)?,
                key_id: a.key_id,
                method: a.method,
                iccid: a.iccid,
                customer_id: a.customer_id,
                request_id: a.request_id,
                result: a.result,
                detail: a.detail,
            };
            super::access::insert_audit(&mut tx, &record).await?;
        }
        if let Some(r) = plan.answer {
            let record = IdempotencyRecord {
                key_id: r.key_id,
                request_id: r.request_id,
                method: r.method,
                fingerprint: r.fingerprint,
                response: r.response,
                created_ms: r.created_ms,
            };
            super::idempotency::insert_idempotency_if_absent(&mut tx, &record).await?;
        }
        if plan.usage_bytes > 0 {
            let row = daily_row(&next, plan.usage_bytes)?;
            add_daily_usage(&mut tx, self.backend, &[row]).await?;
        }
        let wrote = !plan.events.is_empty();
        insert_events(&mut tx, self.backend, &plan.events).await?;
        tx.commit().await?;
        if wrote {
            self.wrote_events();
        }
        Ok(Some(next))
    }

    /// Settles an intent as not applied: the card is released as it was. False when the intent
    /// is no longer open or held by someone else.
    pub async fn settle_abandoned(
        &self,
        op_id: i64,
        owner: &str,
        reason: &str,
        at_ms: i64,
        how: &Settle<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) =
            close_op(&mut tx, op_id, owner, "ABANDONED", Some(reason), at_ms, how).await?
        else {
            tx.rollback().await?;
            return Ok(false);
        };
        let iccid: String = row.try_get("iccid")?;
        sqlx::query(
            "UPDATE cards SET pending_op_id = NULL, pending_action = NULL, pending_since_ms = NULL, \
             pending_order_id = NULL, pending_not_before_ms = NULL, pending_sent_ms = NULL \
             WHERE iccid = $1 AND pending_op_id = $2",
        )
        .bind(iccid)
        .bind(op_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Gives an open intent back unsettled (its outcome is still unknown): any settler may
    /// claim it from `next_attempt_ms` on.
    pub async fn release_intent(
        &self,
        op_id: i64,
        owner: &str,
        error: &str,
        next_attempt_ms: i64,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE carrier_ops SET lease_owner = NULL, lease_until_ms = NULL, attempts = attempts + 1, \
             last_error = $1, next_attempt_ms = $2, updated_ms = $3 \
             WHERE id = $4 AND status = 'OPEN' AND lease_owner = $5",
        )
        .bind(short(error))
        .bind(next_attempt_ms)
        .bind(at_ms)
        .bind(op_id)
        .bind(owner.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives a claimed intent back untouched (no attempt counted, due at once): a change
    /// gathered for a batch call that waits for more cards to fill it.
    pub async fn unclaim_intent(&self, op_id: i64, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE carrier_ops SET lease_owner = NULL, lease_until_ms = NULL \
             WHERE id = $1 AND status = 'OPEN' AND lease_owner = $2",
        )
        .bind(op_id)
        .bind(owner.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Claims up to `limit` open intents that nobody holds (released, or their owner's lease ran
    /// out at `now_ms`) and are due by `due_by_ms`, for `owner` until `lease_until_ms`. An
    /// intent not sent yet is due only once its `not_before_ms` has come on the card clock
    /// (`card_now_ms`): a repeat window is never cut short, whatever the backoff.
    pub async fn claim_open_intents(
        &self,
        owner: &str,
        now_ms: i64,
        due_by_ms: i64,
        lease_until_ms: i64,
        limit: u32,
        card_now_ms: i64,
    ) -> Result<Vec<CarrierOp>, StoreError> {
        let lock = match self.backend {
            super::Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            super::Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE carrier_ops SET lease_owner = $1, lease_until_ms = $2 WHERE id IN ( \
               SELECT id FROM carrier_ops WHERE status = 'OPEN' AND next_attempt_ms <= $4 \
               AND (lease_owner IS NULL OR lease_until_ms IS NULL OR lease_until_ms < $3) \
               AND (sent_ms IS NOT NULL OR not_before_ms IS NULL OR not_before_ms <= $6) \
               ORDER BY id LIMIT $5 {lock}) \
             RETURNING {OP_COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(owner.to_string())
            .bind(lease_until_ms)
            .bind(now_ms)
            .bind(due_by_ms)
            .bind(i64::from(limit))
            .bind(card_now_ms)
            .fetch_all(&self.pool)
            .await?;
        let mut ops: Vec<CarrierOp> = rows.iter().map(op_from_row).collect::<Result<_, _>>()?;
        ops.sort_by_key(|o| o.id);
        Ok(ops)
    }

    /// Extends `owner`'s leases on the intents `ids` it is still working on: it is alive.
    pub async fn renew_intent_leases(
        &self,
        owner: &str,
        ids: &[i64],
        lease_until_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut renewed = 0;
        for chunk in ids.chunks(500) {
            let sql = format!(
                "UPDATE carrier_ops SET lease_until_ms = $1 \
                 WHERE status = 'OPEN' AND lease_owner = $2 AND id IN ({})",
                (0..chunk.len())
                    .map(|i| format!("${}", i + 3))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut q = sqlx::query(&sql)
                .bind(lease_until_ms)
                .bind(owner.to_string());
            for id in chunk {
                q = q.bind(*id);
            }
            renewed += q.execute(&self.pool).await?.rows_affected();
        }
        Ok(renewed)
    }

    pub async fn carrier_op(&self, id: i64) -> Result<Option<CarrierOp>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {OP_COLUMNS} FROM carrier_ops WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(op_from_row).transpose()
    }

    /// The open intent of a card, if any.
    pub async fn open_intent_of(&self, iccid: &Iccid) -> Result<Option<CarrierOp>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {OP_COLUMNS} FROM carrier_ops WHERE iccid = $1 AND status = 'OPEN'"
        ))
        .bind(iccid.as_str().to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(op_from_row).transpose()
    }

    /// Open intents per account.
    pub async fn open_intents_by_account(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT account_id, COUNT(*) AS n FROM carrier_ops WHERE status = 'OPEN' \
             GROUP BY account_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("account_id")?, r.try_get("n")?)))
            .collect()
    }

    /// How many intents are open, across all cards.
    pub async fn count_open_intents(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM carrier_ops WHERE status = 'OPEN'")
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?,
        )
    }

    /// Cards with more than one open intent: always none (the store forbids it); for checks.
    pub async fn cards_with_several_open_intents(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT iccid FROM carrier_ops WHERE status = 'OPEN' GROUP BY iccid HAVING COUNT(*) > 1",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("iccid")?)).collect()
    }

    /// The journal of one card, oldest first.
    pub async fn card_ops(&self, iccid: &Iccid) -> Result<Vec<CarrierOp>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {OP_COLUMNS} FROM carrier_ops WHERE iccid = $1 ORDER BY id"
        ))
        .bind(iccid.as_str().to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(op_from_row).collect()
    }

    /// Marks an open intent held by `owner` as sent at `sent_ms` (card clock), on the intent
    /// and on its card, just before its carrier call.
    pub async fn mark_intent_sent(
        &self,
        op_id: i64,
        owner: &str,
        sent_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE carrier_ops SET sent_ms = $1 WHERE id = $2 AND status = 'OPEN' AND lease_owner = $3",
        )
        .bind(sent_ms)
        .bind(op_id)
        .bind(owner.to_string())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("UPDATE cards SET pending_sent_ms = $1 WHERE pending_op_id = $2")
            .bind(sent_ms)
            .bind(op_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records the carrier's order id (and its status word) on an open intent and its card.
    pub async fn record_order(
        &self,
        op_id: i64,
        order_id: &str,
        order_status: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE carrier_ops SET order_id = $1, order_status = $2, updated_ms = $3 \
             WHERE id = $4 AND status = 'OPEN'",
        )
        .bind(order_id.to_string())
        .bind(order_status.to_string())
        .bind(at_ms)
        .bind(op_id)
        .execute(&mut *tx)
        .await?;
        if !order_id.is_empty() {
            sqlx::query("UPDATE cards SET pending_order_id = $1 WHERE pending_op_id = $2")
                .bind(order_id.to_string())
                .bind(op_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records that open intent `op_id` went out in the platform's batch job `job_id`: the job
    /// is its order (on the intent and its card), settled through the job's result.
    pub async fn record_job(
        &self,
        op_id: i64,
        job_id: &str,
        order_status: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE carrier_ops SET job_id = $1, order_id = $1, order_status = $2, updated_ms = $3 \
             WHERE id = $4 AND status = 'OPEN'",
        )
        .bind(job_id.to_string())
        .bind(order_status.to_string())
        .bind(at_ms)
        .bind(op_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE cards SET pending_order_id = $1 WHERE pending_op_id = $2")
            .bind(job_id.to_string())
            .bind(op_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes open intent `op_id` out of its batch job (the job says nothing more about it):
    /// it is then settled like a change sent on its own without an order, by reading its card.
    pub async fn leave_job(&self, op_id: i64, at_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE carrier_ops SET job_id = '', order_id = '', order_status = '', updated_ms = $1 \
             WHERE id = $2 AND status = 'OPEN'",
        )
        .bind(at_ms)
        .bind(op_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE cards SET pending_order_id = NULL WHERE pending_op_id = $1")
            .bind(op_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Up to when the usage sync has seen every change the account's platform lists.
    pub async fn swept_to(&self, account: &AccountId) -> Result<Option<i64>, StoreError> {
        let r = sqlx::query("SELECT swept_to_ms FROM carrier_sweeps WHERE account_id = $1")
            .bind(account.as_str())
            .fetch_optional(&self.pool)
            .await?;
        r.map(|r| r.try_get::<i64, _>("swept_to_ms"))
            .transpose()
            .map_err(Into::into)
    }

    /// Moves the account's sweep mark forward to `to_ms`; never back (two replicas sweeping
    /// at once leave the later mark).
    pub async fn set_swept_to(&self, account: &AccountId, to_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO carrier_sweeps (account_id, swept_to_ms) VALUES ($1, $2) \
             ON CONFLICT (account_id) DO UPDATE SET swept_to_ms = \
             CASE WHEN excluded.swept_to_ms > carrier_sweeps.swept_to_ms THEN excluded.swept_to_ms \
             ELSE carrier_sweeps.swept_to_ms END",
        )
        .bind(account.as_str())
        .bind(to_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives an open intent back as not sent (the carrier deferred it): due again from
    /// `not_before_ms` on the card clock.
    pub async fn reschedule_intent(
        &self,
        op_id: i64,
        owner: &str,
        error: &str,
        not_before_ms: i64,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE carrier_ops SET lease_owner = NULL, lease_until_ms = NULL, attempts = attempts + 1, \
             last_error = $1, not_before_ms = $2, sent_ms = NULL, next_attempt_ms = 0, updated_ms = $3 \
             WHERE id = $4 AND status = 'OPEN' AND lease_owner = $5",
        )
        .bind(short(error))
        .bind(not_before_ms)
        .bind(at_ms)
        .bind(op_id)
        .bind(owner.to_string())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            sqlx::query(
                "UPDATE cards SET pending_sent_ms = NULL, pending_not_before_ms = $1 \
                 WHERE pending_op_id = $2",
            )
            .bind(not_before_ms)
            .bind(op_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// When the last change to `iccid` through `account` that the carrier may have taken was
    /// sent (card clock): the start of its repeat window. Refused and never-sent changes do not
    /// count; nor do cancellations, which only confirm what the carrier did by itself.
    pub async fn last_change_sent_ms(
        &self,
        iccid: &Iccid,
        account: &AccountId,
    ) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MAX(sent_ms) AS sent FROM carrier_ops WHERE iccid = $1 AND account_id = $2 \
             AND sent_ms IS NOT NULL AND status IN ('OPEN', 'APPLIED') AND action <> 'CANCEL'",
        )
        .bind(iccid.as_str().to_string())
        .bind(account.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>("sent")?)
    }

    /// Orders newest first, up to `limit`, with ids below `before` (0: from the newest).
    pub async fn list_orders(
        &self,
        filter: &OrderFilter,
        before: i64,
        limit: u32,
    ) -> Result<Vec<CarrierOp>, StoreError> {
        let mut sql = format!("SELECT {OP_COLUMNS} FROM carrier_ops WHERE id < $1");
        let mut binds: Vec<String> = Vec::new();
        let mut next = 2;
        let mut param = |sql: &mut String, clause: &str, value: String| {
            sql.push_str(&clause.replace('?', &format!("${next}")));
            binds.push(value);
            next += 1;
        };
        if let Some(i) = &filter.iccid {
            param(&mut sql, " AND iccid = ?", i.clone());
        }
        if let Some(a) = &filter.account {
            param(&mut sql, " AND account_id = ?", a.clone());
        }
        if let Some(c) = &filter.customer {
            param(
                &mut sql,
                " AND iccid IN (SELECT iccid FROM cards WHERE customer_id = ?)",
                c.clone(),
            );
        }
        sql.push_str(match filter.state {
            None => "",
            Some(OrderState::Scheduled) => " AND status = 'OPEN' AND sent_ms IS NULL",
            Some(OrderState::Submitted) => {
                " AND status = 'OPEN' AND sent_ms IS NOT NULL AND order_id <> ''"
            }
            Some(OrderState::Unknown) => {
                " AND status = 'OPEN' AND sent_ms IS NOT NULL AND order_id = ''"
            }
            Some(OrderState::Applied) => " AND status IN ('APPLIED', 'RECONCILED')",
            Some(OrderState::Refused) => " AND status NOT IN ('OPEN', 'APPLIED', 'RECONCILED')",
        });
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${next}"));
        let mut q = sqlx::query(&sql).bind(if before <= 0 { i64::MAX } else { before });
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(op_from_row).collect()
    }

    /// Lets go of an open intent without counting an attempt (it was scheduled, not sent): any
    /// settler claims it once it is due.
    pub async fn hand_over_intent(&self, op_id: i64, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE carrier_ops SET lease_owner = NULL, lease_until_ms = NULL \
             WHERE id = $1 AND status = 'OPEN' AND lease_owner = $2",
        )
        .bind(op_id)
        .bind(owner.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
