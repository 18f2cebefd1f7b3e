//! Webhooks and their delivery queue. Queuing moves a webhook's cursor and inserts its
//! deliveries in one transaction, so each event is queued exactly once per webhook; delivery is
//! at least once (a crash after the POST and before the mark sends it again), which receivers
//! handle with the event id every delivery carries.

use sqlx::Row;

use super::access::{insert_audit, AuditRecord};
use super::events::{EventFilter, EventRow};
use super::{millis_to_time, Backend, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub customer_id: String,
    pub url: String,
    pub secret: String,
    pub kinds: Vec<String>,
    pub cursor_id: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl Webhook {
    /// The events this webhook receives: its customer's, of its kinds.
    pub fn filter(&self) -> EventFilter {
        EventFilter {
            customer_id: Some(self.customer_id.clone()),
            kinds: self.kinds.clone(),
            ..EventFilter::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "PENDING",
            DeliveryState::Delivered => "DELIVERED",
            DeliveryState::Dead => "DEAD",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Dead,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub webhook_id: String,
    pub event_id: i64,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: String,
    pub updated_ms: i64,
}

const HOOK_COLUMNS: &str = "id, customer_id, url, secret, kinds, cursor_id, created_ms";
const DELIVERY_COLUMNS: &str =
    "webhook_id, event_id, state, attempts, next_attempt_ms, last_error, updated_ms";

fn hook_from_row(
    key: Option<&super::sealing::DataKey>,
    r: &sqlx::any::AnyRow,
) -> Result<Webhook, StoreError> {
    let kinds: String = r.try_get("kinds")?;
    let id: String = r.try_get("id")?;
    let stored: String = r.try_get("secret")?;
    let secret = match key.map(|k| k.open(&id, &stored)) {
        None => return Err(StoreError::NoDataKey),
        Some(Some(opened)) => {
            opened.map_err(|e| StoreError::Corrupt(format!("webhook {id}: {e}")))?
        }
        // Written before secrets were sealed; seal_plain_secrets seals it at the next start.
        Some(None) => stored,
    };
    Ok(Webhook {
        id,
        customer_id: r.try_get("customer_id")?,
        url: r.try_get("url")?,
        secret,
        kinds: kinds
            .split(',')
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect(),
        cursor_id: r.try_get("cursor_id")?,
        created_at: millis_to_time(r.try_get("created_ms")?)?,
    })
}

fn delivery_from_row(r: &sqlx::any::AnyRow) -> Result<Delivery, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(Delivery {
        webhook_id: r.try_get("webhook_id")?,
        event_id: r.try_get("event_id")?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery state {state:?}")))?,
        attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        next_attempt_ms: r.try_get("next_attempt_ms")?,
        last_error: r.try_get("last_error")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

impl Store {
    fn data_key(&self) -> Result<&super::sealing::DataKey, StoreError> {
        self.data_key.as_deref().ok_or(StoreError::NoDataKey)
    }

    /// Registers a webhook that starts with the events after `cursor_id`, with its secret
    /// sealed and the audit record of its creation, unless its customer already has
    /// `max_per_customer` live webhooks (false, nothing written). The count and the insert are
    /// one statement (SQLite takes the write lock for all of it) or run under a per-customer
    /// advisory lock (PostgreSQL), so replicas creating at once cannot pass the cap together.
    pub async fn insert_webhook(
        &self,
        w: &Webhook,
        max_per_customer: u32,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let sealed = self
            .data_key()?
            .seal(&w.id, &w.secret)
            .map_err(StoreError::Corrupt)?;
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))::text AS locked")
                .bind(format!("webhooks:{}", w.customer_id))
                .fetch_one(&mut *tx)
                .await?;
        }
        let done = sqlx::query(&format!(
            "INSERT INTO webhooks ({HOOK_COLUMNS}) SELECT $1, $2, $3, $4, $5, $6, $7 \
             WHERE (SELECT COUNT(*) FROM webhooks WHERE customer_id = $2 \
             AND deleted_ms IS NULL) < $8"
        ))
        .bind(w.id.clone())
        .bind(w.customer_id.clone())
        .bind(w.url.clone())
        .bind(sealed)
        .bind(w.kinds.join(","))
        .bind(w.cursor_id)
        .bind(w.created_at.timestamp_millis())
        .bind(i64::from(max_per_customer))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Seals the secrets stored in plain text before sealing existed. Run at start.
    pub async fn seal_plain_secrets(&self) -> Result<u64, StoreError> {
        let key = self.data_key()?;
        let rows = sqlx::query("SELECT id, secret FROM webhooks")
            .fetch_all(&self.pool)
            .await?;
        let mut sealed = 0;
        for r in &rows {
            let id: String = r.try_get("id")?;
            let secret: String = r.try_get("secret")?;
            if super::sealing::is_sealed(&secret) {
                continue;
            }
            let s = key.seal(&id, &secret).map_err(StoreError::Corrupt)?;
            // Guarded by the old value: a replica sealing at the same time wins once.
            sealed += sqlx::query("UPDATE webhooks SET secret = $1 WHERE id = $2 AND secret = $3")
                .bind(s)
                .bind(id)
                .bind(secret)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(sealed)
    }

    /// Live webhooks, of one customer or all.
    pub async fn webhooks(&self, customer_id: Option<&str>) -> Result<Vec<Webhook>, StoreError> {
        let rows = match customer_id {
            Some(c) => {
                sqlx::query(&format!(
                    "SELECT {HOOK_COLUMNS} FROM webhooks WHERE deleted_ms IS NULL \
                     AND customer_id = $1 ORDER BY id"
                ))
                .bind(c.to_string())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {HOOK_COLUMNS} FROM webhooks WHERE deleted_ms IS NULL ORDER BY id"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        let key = self.data_key.as_deref();
        rows.iter().map(|r| hook_from_row(key, r)).collect()
    }

    pub async fn webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {HOOK_COLUMNS} FROM webhooks WHERE id = $1 AND deleted_ms IS NULL"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let key = self.data_key.as_deref();
        row.as_ref().map(|r| hook_from_row(key, r)).transpose()
    }

    /// Stops a webhook: nothing more is queued or sent. Its deliveries stay for the record.
    pub async fn delete_webhook(
        &self,
        id: &str,
        at_ms: i64,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done =
            sqlx::query("UPDATE webhooks SET deleted_ms = $1 WHERE id = $2 AND deleted_ms IS NULL")
                .bind(at_ms)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET state = 'DEAD', last_error = 'webhook deleted', \
             updated_ms = $1 WHERE webhook_id = $2 AND state = 'PENDING'",
        )
        .bind(at_ms)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Queues the webhook's next events (up to `limit`) and moves its cursor past them, in one
    /// transaction guarded by the cursor, so two workers cannot queue the same events.
    pub async fn queue_deliveries(
        &self,
        hook: &Webhook,
        limit: u32,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        // The newest id is read first: every event up to it is committed (ids commit in
        // order), so if the page below is not full, the cursor may skip to it without passing
        // over a matching event; other customers' events are then not scanned again.
        let newest = self.last_event_id().await?;
        let events = self
            .events_after(&hook.filter(), hook.cursor_id, limit)
            .await?;
        let new_cursor = match events.last() {
            Some(e) if events.len() as u64 == u64::from(limit) => e.id,
            Some(e) => e.id.max(newest),
            None => newest,
        };
        if new_cursor <= hook.cursor_id {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE webhooks SET cursor_id = $1 WHERE id = $2 AND cursor_id = $3 \
             AND deleted_ms IS NULL",
        )
        .bind(new_cursor)
        .bind(hook.id.clone())
        .bind(hook.cursor_id)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(0);
        }
        for e in &events {
            sqlx::query(&format!(
                "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS}) \
                 VALUES ($1, $2, 'PENDING', 0, $3, '', $3) ON CONFLICT DO NOTHING"
            ))
            .bind(hook.id.clone())
            .bind(e.id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(events.len())
    }

    /// Pending deliveries due by `now_ms`, with their events: at most `per_webhook` of each
    /// webhook (its oldest), taken round-robin across webhooks up to `limit`, so one webhook's
    /// backlog cannot hide the others' due deliveries.
    pub async fn due_deliveries(
        &self,
        now_ms: i64,
        per_webhook: u32,
        limit: u32,
    ) -> Result<Vec<(Delivery, EventRow)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM (SELECT {DELIVERY_COLUMNS}, ROW_NUMBER() OVER \
             (PARTITION BY webhook_id ORDER BY event_id) AS rn FROM webhook_deliveries \
             WHERE state = 'PENDING' AND next_attempt_ms <= $1) AS due WHERE rn <= $2 \
             ORDER BY rn, event_id LIMIT $3"
        ))
        .bind(now_ms)
        .bind(i64::from(per_webhook))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let d = delivery_from_row(r)?;
            if let Some(e) = self.event(d.event_id).await? {
                out.push((d, e));
            }
        }
        Ok(out)
    }

    async fn event(&self, id: i64) -> Result<Option<EventRow>, StoreError> {
        Ok(self
            .events_after(&EventFilter::default(), id - 1, 1)
            .await?
            .into_iter()
            .find(|e| e.id == id))
    }

    /// Takes a due delivery for one attempt by moving it out of the due window until
    /// `until_ms` (guarded by the value read), so no other round or replica picks it while it is
    /// being attempted; a crashed attempt is due again at `until_ms`. False: someone else has it.
    pub async fn claim_delivery(&self, d: &Delivery, until_ms: i64) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_ms = $1 WHERE webhook_id = $2 \
             AND event_id = $3 AND state = 'PENDING' AND next_attempt_ms = $4",
        )
        .bind(until_ms)
        .bind(d.webhook_id.clone())
        .bind(d.event_id)
        .bind(d.next_attempt_ms)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Records one attempt's outcome: DELIVERED, PENDING again at `next_attempt_ms`, or DEAD.
    /// Only for the claim `d` holds (its `next_attempt_ms`): a claim that ran out and was taken
    /// again is recorded by its new holder only.
    pub async fn mark_delivery(
        &self,
        d: &Delivery,
        state: DeliveryState,
        next_attempt_ms: i64,
        error: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, \
             next_attempt_ms = $2, last_error = $3, updated_ms = $4 \
             WHERE webhook_id = $5 AND event_id = $6 AND state = 'PENDING' \
             AND next_attempt_ms = $7",
        )
        .bind(state.as_str())
        .bind(next_attempt_ms)
        .bind(error.chars().take(500).collect::<String>())
        .bind(now_ms)
        .bind(d.webhook_id.clone())
        .bind(d.event_id)
        .bind(d.next_attempt_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A webhook's deliveries in one state (or all), newest event first.
    pub async fn deliveries(
        &self,
        webhook_id: &str,
        state: Option<DeliveryState>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = match state {
            Some(s) => {
                sqlx::query(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 \
                     AND state = $2 ORDER BY event_id DESC LIMIT $3"
                ))
                .bind(webhook_id.to_string())
                .bind(s.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 \
                     ORDER BY event_id DESC LIMIT $2"
                ))
                .bind(webhook_id.to_string())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(delivery_from_row).collect()
    }

    /// Puts a webhook's dead letters back in the queue, due now, with fresh attempts.
    /// The audit record is made from the count requeued and written with the change.
    pub async fn retry_dead(
        &self,
        webhook_id: &str,
        now_ms: i64,
        audit: impl FnOnce(u64) -> AuditRecord,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE webhook_deliveries SET state = 'PENDING', attempts = 0, next_attempt_ms = $1, \
             updated_ms = $1 WHERE webhook_id = $2 AND state = 'DEAD'",
        )
        .bind(now_ms)
        .bind(webhook_id.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        insert_audit(&mut tx, &audit(n)).await?;
        tx.commit().await?;
        Ok(n)
    }
}
