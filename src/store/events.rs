//! The event outbox (`card_events`): every card change, pool change and alert, written in the
//! transaction of the change it records, numbered in commit order so a reader that has seen
//! event N has seen every event before N.
//!
//! Commit order = id order is what makes a cursor safe. SQLite has one writer at a time, so it
//! holds by itself. On PostgreSQL two transactions can draw ids 7 and 8 and commit 8 first; a
//! reader would pass 7 and never see it. Every transaction that writes events therefore takes
//! one transaction-scoped advisory lock just before its events, as its last statement: ids are
//! drawn and committed one writer at a time, and only that final step is serialised.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{millis_to_time, placeholders, Backend, Store, StoreError};
use crate::domain::alerts::AlertDetail;
use crate::domain::pool::Pool;
use crate::domain::PoolEvent;
use crate::domain::{Card, CardEvent, CardStatus, CarrierId, Fen, StopReasons};

/// The advisory lock key that orders event writers on PostgreSQL ("simgate" in ASCII, truncated).
const EVENT_ORDER_LOCK: i64 = 0x73_69_6d_67_61_74;

/// What an event carries beyond the card's state, stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_capacity_bytes: Option<u64>,
    /// On `card.drift_detected`: what the carrier showed, and what the card implies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_state: Option<String>,
}

impl EventDetail {
    fn to_column(&self) -> String {
        if *self == EventDetail::default() {
            return String::new();
        }
        serde_json::to_string(self).unwrap_or_default()
    }

    fn from_column(s: &str) -> Result<EventDetail, StoreError> {
        if s.is_empty() {
            return Ok(EventDetail::default());
        }
        serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("event detail: {e}")))
    }
}

/// One stored event. Card events have an ICCID and the card's state right after; pool events
/// have an empty ICCID, the pool and no card state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: i64,
    pub iccid: String,
    pub customer_id: String,
    pub carrier: CarrierId,
    pub pool_id: Option<String>,
    pub kind: String,
    pub cause: String,
    pub amount: Fen,
    /// None on pool events.
    pub status: Option<CardStatus>,
    pub stop_reasons: StopReasons,
    pub balance: Fen,
    pub at: DateTime<Utc>,
    pub detail: EventDetail,
}

/// An event about to be written (also kept in a journal intent's plan until it is applied).
#[derive(Serialize, Deserialize)]
pub(super) struct NewEvent {
    iccid: String,
    customer_id: String,
    carrier: CarrierId,
    pool_id: Option<String>,
    kind: String,
    cause: String,
    amount: i64,
    status: String,
    stop_reasons: i64,
    balance: i64,
    at_ms: i64,
    detail: String,
}

impl NewEvent {
    pub(super) fn of_card(c: &Card, e: &CardEvent) -> NewEvent {
        NewEvent {
            iccid: c.iccid.as_str().to_string(),
            customer_id: c.customer_id.clone(),
            carrier: c.carrier,
            pool_id: c.pool.clone(),
            kind: e.kind.to_string(),
            cause: e.cause.as_str().to_string(),
            amount: e.amount.0,
            status: e.status.as_str().to_string(),
            stop_reasons: i64::from(e.stop_reasons.bits()),
            balance: e.balance.0,
            at_ms: e.at.timestamp_millis(),
            detail: EventDetail {
                alert: e.alert.clone(),
                ..EventDetail::default()
            }
            .to_column(),
        }
    }

    /// The same event with `detail` (merged over an alert's).
    pub(super) fn with_detail(mut self, mut detail: EventDetail) -> NewEvent {
        if let Ok(current) = EventDetail::from_column(&self.detail) {
            detail.alert = detail.alert.or(current.alert);
        }
        self.detail = detail.to_column();
        self
    }

    pub(super) fn of_pool(p: &Pool, e: &PoolEvent) -> NewEvent {
        NewEvent {
            iccid: String::new(),
            customer_id: p.customer_id.clone(),
            carrier: p.carrier,
            pool_id: Some(p.id.clone()),
            kind: e.kind.to_string(),
            cause: e.cause.as_str().to_string(),
            amount: 0,
            status: String::new(),
            stop_reasons: 0,
            balance: 0,
            at_ms: e.at.timestamp_millis(),
            detail: EventDetail {
                alert: e.alert.clone(),
                pool_used_bytes: Some(e.used_bytes),
                pool_capacity_bytes: Some(e.capacity_bytes),
                ..EventDetail::default()
            }
            .to_column(),
        }
    }
}

/// Rows per multi-row event INSERT (12 parameters each).
const EVENT_CHUNK: usize = 2000;
const EVENT_COLS: usize = 12;

/// Writes events as the last statements of `tx` (see the module doc for why last).
pub(super) async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    rows: &[NewEvent],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)::text AS locked")
            .bind(EVENT_ORDER_LOCK)
            .fetch_one(&mut **tx)
            .await?;
    }
    for chunk in rows.chunks(EVENT_CHUNK) {
        let values = (0..chunk.len())
            .map(|i| format!("({})", placeholders(backend, i * EVENT_COLS, EVENT_COLS)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO card_events (iccid, customer_id, carrier, pool_id, kind, cause, amount_fen, \
             status, stop_reasons, balance_fen, at_ms, detail) VALUES {values}"
        );
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q
                .bind(e.iccid.clone())
                .bind(e.customer_id.clone())
                .bind(e.carrier.as_str())
                .bind(e.pool_id.clone())
                .bind(e.kind.clone())
                .bind(e.cause.clone())
                .bind(e.amount)
                .bind(e.status.clone())
                .bind(e.stop_reasons)
                .bind(e.balance)
                .bind(e.at_ms)
                .bind(e.detail.clone());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Narrows events. Every field is optional; all given ones must match. A kind ending in `.*`
/// matches every kind with that prefix (`alert.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub customer_id: Option<String>,
    pub carrier: Option<CarrierId>,
    pub iccid: Option<String>,
    pub pool_id: Option<String>,
    pub kinds: Vec<String>,
    /// Leave alerts out: a card's history is its changes, its alerts are about them.
    pub without_alerts: bool,
}

fn kind_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

impl EventFilter {
    /// The same test as the SQL, for events already read (the live stream filters in memory).
    pub fn matches(&self, e: &EventRow) -> bool {
        self.customer_id
            .as_ref()
            .is_none_or(|c| *c == e.customer_id)
            && self.carrier.is_none_or(|c| c == e.carrier)
            && self.iccid.as_ref().is_none_or(|i| *i == e.iccid)
            && self
                .pool_id
                .as_ref()
                .is_none_or(|p| e.pool_id.as_ref() == Some(p))
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| kind_matches(k, &e.kind)))
            && !(self.without_alerts && e.kind.starts_with("alert."))
    }
}

const SELECT: &str = "SELECT id, iccid, customer_id, carrier, pool_id, kind, cause, amount_fen, \
    status, stop_reasons, balance_fen, at_ms, detail FROM card_events";

fn event_from_row(r: &sqlx::any::AnyRow) -> Result<EventRow, StoreError> {
    let status: String = r.try_get("status")?;
    let reasons: i64 = r.try_get("stop_reasons")?;
    let carrier: String = r.try_get("carrier")?;
    let detail: String = r.try_get("detail")?;
    Ok(EventRow {
        id: r.try_get("id")?,
        iccid: r.try_get("iccid")?,
        customer_id: r.try_get("customer_id")?,
        carrier: super::parse_text("event carrier", &carrier)?,
        pool_id: r.try_get("pool_id")?,
        kind: r.try_get("kind")?,
        cause: r.try_get("cause")?,
        amount: Fen(r.try_get("amount_fen")?),
        status: if status.is_empty() {
            None
        } else {
            Some(
                CardStatus::parse(&status)
                    .ok_or_else(|| StoreError::Corrupt(format!("event status {status:?}")))?,
            )
        },
        stop_reasons: u32::try_from(reasons)
            .ok()
            .and_then(StopReasons::from_bits)
            .ok_or_else(|| StoreError::Corrupt(format!("event reasons {reasons}")))?,
        balance: Fen(r.try_get("balance_fen")?),
        at: millis_to_time(r.try_get("at_ms")?)?,
        detail: EventDetail::from_column(&detail)?,
    })
}

impl Store {
    /// Events after `after_id` that match `filter`, oldest first.
    pub async fn events_after(
        &self,
        filter: &EventFilter,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        let mut sql = format!("{SELECT} WHERE id > $1");
        let mut n = 1;
        let mut next = |sql: &mut String, cond: &str| {
            n += 1;
            sql.push_str(&format!(" AND {cond} ${n}"));
        };
        if filter.customer_id.is_some() {
            next(&mut sql, "customer_id =");
        }
        if filter.carrier.is_some() {
            next(&mut sql, "carrier =");
        }
        if filter.iccid.is_some() {
            next(&mut sql, "iccid =");
        }
        if filter.pool_id.is_some() {
            next(&mut sql, "pool_id =");
        }
        if !filter.kinds.is_empty() {
            let alts = filter
                .kinds
                .iter()
                .map(|k| {
                    n += 1;
                    if k.ends_with('*') {
                        format!("kind LIKE ${n} ESCAPE '\\'")
                    } else {
                        format!("kind = ${n}")
                    }
                })
                .collect::<Vec<_>>()
                .join(" OR ");
            sql.push_str(&format!(" AND ({alts})"));
        }
        if filter.without_alerts {
            sql.push_str(" AND kind NOT LIKE 'alert.%'");
        }
        n += 1;
        sql.push_str(&format!(" ORDER BY id LIMIT ${n}"));
        let mut q = sqlx::query(&sql).bind(after_id);
        if let Some(c) = &filter.customer_id {
            q = q.bind(c.clone());
        }
        if let Some(c) = filter.carrier {
            q = q.bind(c.as_str());
        }
        if let Some(i) = &filter.iccid {
            q = q.bind(i.clone());
        }
        if let Some(p) = &filter.pool_id {
            q = q.bind(p.clone());
        }
        for k in &filter.kinds {
            q = match k.strip_suffix('*') {
                Some(prefix) => q.bind(format!(
                    "{}%",
                    prefix
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_")
                )),
                None => q.bind(k.clone()),
            };
        }
        let rows = q.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The id of the newest event (0 if there is none): where a stream that starts "now" begins.
    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS last FROM card_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("last")?)
    }
}
