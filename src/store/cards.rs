//! The `cards` table and its outbox `card_events`: import in one transaction, keyset-paged
//! listing, and versioned updates that write their event in the same transaction.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::access::AuditRecord;
use super::events::{insert_events, EventDetail, EventFilter, EventRow, NewEvent};
use super::idempotency::IdempotencyRecord;
use super::pools::add_daily_usage;
use super::{
    db_to_u64, millis_to_time, parse_text, placeholders, u64_to_db, Backend, Store, StoreError,
};
use crate::domain::event;
use crate::domain::{
    AccountId, Card, CardEvent, CardStatus, CarrierAction, CarrierId, Cause, Drift, Fen, Iccid,
    Imsi, LifecycleStage, Msisdn, PendingChange, Plan, RealNameStatus, StopReason, StopReasons,
};

/// The columns every card write sets, in `bind_card` order.
macro_rules! written_columns {
    () => {
        "iccid, msisdn, imsi, carrier, customer_id, quota_bytes, monthly_fee_fen, \
        validity_end_ms, auto_suspend, cancelled, status, stop_reasons, stage, real_name, balance_fen, \
        cycle_usage_bytes, cycle_start_ms, stage_since_ms, test_used_bytes, retention_fee_next_ms, \
        retention_ends_ms, expiry_restore_ms, arrears_paid, warnings, created_ms, updated_ms, version, \
        next_due_ms, pool_id, alert_keys, spare, account_id"
    };
}
const COLUMNS: &str = written_columns!();

const NUM_COLUMNS: usize = 32;

/// What a read returns: the written columns and the journal's and the sync's own (an open
/// intent, drift), which only they write.
const SELECT_COLUMNS: &str = concat!(
    written_columns!(),
    ", pending_op_id, pending_action, pending_since_ms, drift_carrier_state, drift_since_ms, \
     carrier_unknown, pending_order_id, pending_not_before_ms, pending_sent_ms"
);

/// Rows per multi-row INSERT: 32 parameters each stays under SQLite's 32,766-parameter limit.
const INSERT_CHUNK: usize = 1000;

/// Cards per batched UPDATE statement (33 parameters each).
const UPDATE_CHUNK: usize = 500;

/// SQL types of `COLUMNS`, in order, for the casts PostgreSQL needs in a VALUES list.
const COLUMN_TYPES: [&str; NUM_COLUMNS] = [
    "text", "text", "text", "text", "text", "bigint", "bigint", "bigint", "bigint", "bigint",
    "text", "bigint", "text", "text", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint",
    "bigint", "bigint", "bigint", "text", "bigint", "bigint", "bigint", "bigint", "text", "text",
    "bigint", "text",
];

/// Narrows a card listing. Every field is optional; all given ones must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardFilter {
    pub carrier: Option<CarrierId>,
    pub account_id: Option<AccountId>,
    pub customer_id: Option<String>,
    pub status: Option<CardStatus>,
    pub stop_reason: Option<StopReason>,
    /// Members of this pool; with `customer_id`, the pool is that customer's.
    pub pool_id: Option<String>,
}

/// A card as stored; also the form a journal intent keeps its planned card in.
#[derive(sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub(super) struct CardRow {
    iccid: String,
    msisdn: Option<String>,
    imsi: Option<String>,
    carrier: String,
    customer_id: String,
    quota_bytes: i64,
    monthly_fee_fen: i64,
    validity_end_ms: i64,
    auto_suspend: i64,
    cancelled: i64,
    stop_reasons: i64,
    stage: String,
    real_name: String,
    balance_fen: i64,
    cycle_usage_bytes: i64,
    cycle_start_ms: i64,
    stage_since_ms: i64,
    test_used_bytes: i64,
    retention_fee_next_ms: Option<i64>,
    retention_ends_ms: Option<i64>,
    expiry_restore_ms: Option<i64>,
    arrears_paid: i64,
    warnings: String,
    created_ms: i64,
    updated_ms: i64,
    version: i64,
    next_due_ms: Option<i64>,
    pool_id: Option<String>,
    alert_keys: String,
    /// Absent from plans written before spares existed.
    #[serde(default)]
    spare: i64,
    /// Empty in plans written before accounts existed: the carrier's default account.
    #[serde(default)]
    account_id: String,
    #[serde(default)]
    pending_op_id: Option<i64>,
    #[serde(default)]
    pending_action: Option<String>,
    #[serde(default)]
    pending_since_ms: Option<i64>,
    #[serde(default)]
    drift_carrier_state: Option<String>,
    #[serde(default)]
    drift_since_ms: Option<i64>,
    #[serde(default)]
    carrier_unknown: Option<String>,
    #[serde(default)]
    pending_order_id: Option<String>,
    #[serde(default)]
    pending_not_before_ms: Option<i64>,
    #[serde(default)]
    pending_sent_ms: Option<i64>,
}

impl CardRow {
    /// The written columns of `c` (none of the journal's or the sync's own).
    pub(super) fn of(c: &Card) -> Result<CardRow, StoreError> {
        Ok(CardRow {
            iccid: c.iccid.as_str().to_string(),
            msisdn: c.msisdn.as_ref().map(|m| m.as_str().to_string()),
            imsi: c.imsi.as_ref().map(|m| m.as_str().to_string()),
            carrier: c.carrier.as_str().to_string(),
            customer_id: c.customer_id.clone(),
            quota_bytes: u64_to_db(c.plan.monthly_quota_bytes)?,
            monthly_fee_fen: c.plan.monthly_fee.0,
            validity_end_ms: c.plan.validity_end.timestamp_millis(),
            auto_suspend: i64::from(c.plan.auto_suspend_over_quota),
            cancelled: i64::from(c.cancelled),
            stop_reasons: i64::from(c.stop_reasons.bits()),
            stage: c.stage.as_str().to_string(),
            real_name: c.real_name.as_str().to_string(),
            balance_fen: c.balance.0,
            cycle_usage_bytes: u64_to_db(c.cycle_usage_bytes)?,
            cycle_start_ms: c.cycle_start.timestamp_millis(),
            stage_since_ms: c.stage_since.timestamp_millis(),
            test_used_bytes: u64_to_db(c.test_used_bytes)?,
            retention_fee_next_ms: c.retention_fee_next_at.map(|t| t.timestamp_millis()),
            retention_ends_ms: c.retention_ends_at.map(|t| t.timestamp_millis()),
            expiry_restore_ms: c.expiry_restore_at.map(|t| t.timestamp_millis()),
            arrears_paid: i64::from(c.arrears_paid_awaiting_resume),
            warnings: serde_json::to_string(&c.warnings).unwrap_or_else(|_| "[]".into()),
            created_ms: c.created_at.timestamp_millis(),
            updated_ms: c.updated_at.timestamp_millis(),
            version: c.version,
            next_due_ms: c.next_due_at.map(|t| t.timestamp_millis()),
            pool_id: c.pool.clone(),
            alert_keys: c.alert_keys.join(","),
            spare: i64::from(c.spare),
            account_id: c.account.to_string(),
            pending_op_id: None,
            pending_action: None,
            pending_since_ms: None,
            drift_carrier_state: None,
            drift_since_ms: None,
            carrier_unknown: None,
            pending_order_id: None,
            pending_not_before_ms: None,
            pending_sent_ms: None,
        })
    }
}

impl TryFrom<CardRow> for Card {
    type Error = StoreError;

    fn try_from(r: CardRow) -> Result<Card, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("{what} of card {}", r.iccid));
        let pending = match (r.pending_op_id, &r.pending_action, r.pending_since_ms) {
            (Some(op), Some(action), Some(since)) => Some(PendingChange {
                action: CarrierAction::parse(action).ok_or_else(|| corrupt("pending_action"))?,
                since: millis_to_time(since)?,
                order_id: r.pending_order_id.clone().filter(|o| !o.is_empty()),
                order: op,
                not_before: r.pending_not_before_ms.map(millis_to_time).transpose()?,
                sent: r.pending_sent_ms.is_some(),
            }),
            (None, _, _) => None,
            _ => return Err(corrupt("pending change")),
        };
        let drift = match (&r.drift_carrier_state, r.drift_since_ms) {
            (Some(state), Some(since)) => Some((state.clone(), millis_to_time(since)?)),
            _ => None,
        };
        let stop_reasons = u32::try_from(r.stop_reasons)
            .ok()
            .and_then(StopReasons::from_bits)
            .ok_or_else(|| corrupt("stop_reasons"))?;
        let carrier: CarrierId = parse_text("carrier", &r.carrier)?;
        let account = if r.account_id.is_empty() {
            AccountId::default_for(carrier)
        } else {
            AccountId::parse(&r.account_id).map_err(|_| corrupt("account_id"))?
        };
        let mut card = Card {
            msisdn: r.msisdn.map(Msisdn::from_trusted),
            imsi: r.imsi.map(Imsi::from_trusted),
            carrier,
            account,
            plan: Plan {
                monthly_quota_bytes: db_to_u64(r.quota_bytes)?,
                monthly_fee: Fen(r.monthly_fee_fen),
                validity_end: millis_to_time(r.validity_end_ms)?,
                auto_suspend_over_quota: r.auto_suspend != 0,
            },
            cancelled: r.cancelled != 0,
            stop_reasons,
            stage: LifecycleStage::parse(&r.stage).ok_or_else(|| corrupt("stage"))?,
            real_name: RealNameStatus::parse(&r.real_name).ok_or_else(|| corrupt("real_name"))?,
            balance: Fen(r.balance_fen),
            cycle_usage_bytes: db_to_u64(r.cycle_usage_bytes)?,
            cycle_start: millis_to_time(r.cycle_start_ms)?,
            stage_since: millis_to_time(r.stage_since_ms)?,
            test_used_bytes: db_to_u64(r.test_used_bytes)?,
            retention_fee_next_at: r.retention_fee_next_ms.map(millis_to_time).transpose()?,
            next_due_at: r.next_due_ms.map(millis_to_time).transpose()?,
            retention_ends_at: r.retention_ends_ms.map(millis_to_time).transpose()?,
            expiry_restore_at: r.expiry_restore_ms.map(millis_to_time).transpose()?,
            arrears_paid_awaiting_resume: r.arrears_paid != 0,
            warnings: serde_json::from_str(&r.warnings).map_err(|_| corrupt("warnings"))?,
            created_at: millis_to_time(r.created_ms)?,
            updated_at: millis_to_time(r.updated_ms)?,
            version: r.version,
            pool: r.pool_id,
            alert_keys: r
                .alert_keys
                .split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect(),
            customer_id: r.customer_id,
            iccid: Iccid::from_trusted(r.iccid),
            pending,
            drift: None,
            carrier_unknown: r.carrier_unknown,
            spare: r.spare != 0,
        };
        card.drift = drift.map(|(carrier_state, since)| Drift {
            carrier_state,
            expected_state: card.expected_carrier_state().to_string(),
            since,
        });
        Ok(card)
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds every column of `card` in `COLUMNS` order.
fn bind_card<'q>(q: AnyQuery<'q>, c: &Card) -> Result<AnyQuery<'q>, StoreError> {
    Ok(q.bind(c.iccid.as_str().to_string())
        .bind(c.msisdn.as_ref().map(|m| m.as_str().to_string()))
        .bind(c.imsi.as_ref().map(|m| m.as_str().to_string()))
        .bind(c.carrier.as_str())
        .bind(c.customer_id.clone())
        .bind(u64_to_db(c.plan.monthly_quota_bytes)?)
        .bind(c.plan.monthly_fee.0)
        .bind(c.plan.validity_end.timestamp_millis())
        .bind(i64::from(c.plan.auto_suspend_over_quota))
        .bind(i64::from(c.cancelled))
        .bind(c.status().as_str())
        .bind(i64::from(c.stop_reasons.bits()))
        .bind(c.stage.as_str())
        .bind(c.real_name.as_str())
        .bind(c.balance.0)
        .bind(u64_to_db(c.cycle_usage_bytes)?)
        .bind(c.cycle_start.timestamp_millis())
        .bind(c.stage_since.timestamp_millis())
        .bind(u64_to_db(c.test_used_bytes)?)
        .bind(c.retention_fee_next_at.map(|t| t.timestamp_millis()))
        .bind(c.retention_ends_at.map(|t| t.timestamp_millis()))
        .bind(c.expiry_restore_at.map(|t| t.timestamp_millis()))
        .bind(i64::from(c.arrears_paid_awaiting_resume))
        .bind(serde_json::to_string(&c.warnings).unwrap_or_else(|_| "[]".into()))
        .bind(c.created_at.timestamp_millis())
        .bind(c.updated_at.timestamp_millis())
        .bind(c.version)
        .bind(c.next_due_at.map(|t| t.timestamp_millis()))
        .bind(c.pool.clone())
        .bind(c.alert_keys.join(","))
        .bind(i64::from(c.spare))
        .bind(c.account.to_string()))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// How many cards share one status and one set of stop reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardCount {
    pub status: String,
    pub stop_reasons: i64,
    pub count: i64,
}

impl Store {
    /// Cards grouped by status and stop reasons, for the metrics gauges.
    pub async fn card_counts(&self) -> Result<Vec<CardCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, stop_reasons, COUNT(*) AS n FROM cards GROUP BY status, stop_reasons",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CardCount {
                    status: r.try_get("status")?,
                    stop_reasons: r.try_get("stop_reasons")?,
                    count: r.try_get("n")?,
                })
            })
            .collect()
    }

    /// Work not yet done: (bulk-operation cards pending, journal entries pending).
    pub async fn pending_counts(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM batch_items WHERE status = 'PENDING') AS items, \
             (SELECT COUNT(*) FROM carrier_ops WHERE status = 'OPEN') AS ops",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("items")?, row.try_get("ops")?))
    }

    /// Stores all cards or none. Reports the first ICCID or MSISDN that already exists.
    pub async fn insert_cards(
        &self,
        cards: &[Card],
        audit: Option<&AuditRecord>,
        answer: Option<&IdempotencyRecord>,
    ) -> Result<(), StoreError> {
        self.ensure_new(cards).await?;
        let mut tx = self.pool.begin().await?;
        for chunk in cards.chunks(INSERT_CHUNK) {
            let rows = (0..chunk.len())
                .map(|i| {
                    format!(
                        "({})",
                        placeholders(self.backend, i * NUM_COLUMNS, NUM_COLUMNS)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("INSERT INTO cards ({COLUMNS}) VALUES {rows}");
            let mut q = sqlx::query(&sql);
            for c in chunk {
                q = bind_card(q, c)?;
            }
            q.execute(&mut *tx).await.map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Duplicate {
                        field: "iccid or msisdn",
                        value: "in this import (added concurrently)".into(),
                    }
                } else {
                    e.into()
                }
            })?;
        }
        let imported: Vec<NewEvent> = cards
            .iter()
            .map(|c| {
                let e = CardEvent::of(
                    c,
                    c.created_at,
                    event::card::IMPORTED,
                    Cause::Request,
                    Fen::ZERO,
                );
                NewEvent::of_card(c, &e)
            })
            .collect();
        if let Some(a) = audit {
            super::access::insert_audit(&mut tx, a).await?;
        }
        if let Some(r) = answer {
            super::idempotency::insert_idempotency(&mut tx, r).await?;
        }
        insert_events(&mut tx, self.backend, &imported).await?;
        tx.commit().await?;
        self.wrote_events();
        Ok(())
    }

    /// Finds the first card of the batch whose ICCID or MSISDN is taken.
    pub async fn ensure_new(&self, cards: &[Card]) -> Result<(), StoreError> {
        for chunk in cards.chunks(INSERT_CHUNK) {
            let sql = format!(
                "SELECT iccid FROM cards WHERE iccid IN ({}) ORDER BY iccid LIMIT 1",
                placeholders(self.backend, 0, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for c in chunk {
                q = q.bind(c.iccid.as_str().to_string());
            }
            if let Some(row) = q.fetch_optional(&self.pool).await? {
                return Err(StoreError::Duplicate {
                    field: "iccid",
                    value: row.try_get("iccid")?,
                });
            }
            let msisdns: Vec<String> = chunk
                .iter()
                .filter_map(|c| c.msisdn.as_ref().map(|m| m.as_str().to_string()))
                .collect();
            if msisdns.is_empty() {
                continue;
            }
            let sql = format!(
                "SELECT msisdn FROM cards WHERE msisdn IN ({}) ORDER BY msisdn LIMIT 1",
                placeholders(self.backend, 0, msisdns.len())
            );
            let mut q = sqlx::query(&sql);
            for m in msisdns {
                q = q.bind(m);
            }
            if let Some(row) = q.fetch_optional(&self.pool).await? {
                return Err(StoreError::Duplicate {
                    field: "msisdn",
                    value: row.try_get("msisdn")?,
                });
            }
        }
        Ok(())
    }

    pub async fn get_card(&self, iccid: &Iccid) -> Result<Option<Card>, StoreError> {
        let sql = format!("SELECT {SELECT_COLUMNS} FROM cards WHERE iccid = $1");
        let row: Option<CardRow> = sqlx::query_as(&sql)
            .bind(iccid.as_str().to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(Card::try_from).transpose()
    }

    /// Up to `limit` cards of `account` that are not cancelled, after ICCID `after`: the usage
    /// sync's walk over the live cards.
    pub async fn live_cards_page(
        &self,
        account: &AccountId,
        after: &str,
        limit: u32,
    ) -> Result<Vec<Card>, StoreError> {
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM cards WHERE account_id = $1 AND iccid > $2 \
             AND cancelled = 0 ORDER BY account_id, iccid LIMIT $3"
        );
        let rows: Vec<CardRow> = sqlx::query_as(&sql)
            .bind(account.to_string())
            .bind(after.to_string())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(Card::try_from).collect()
    }

    /// Up to `limit` cards matching `filter` with an ICCID after `after`, in ICCID order.
    /// Keyset paging: a card added or changed while pages are read is neither repeated nor
    /// skipped.
    pub async fn list_cards(
        &self,
        filter: &CardFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Card>, StoreError> {
        let mut conds: Vec<String> = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.carrier.is_some() {
            conds.push(format!("carrier = {}", next()));
        }
        if filter.account_id.is_some() {
            conds.push(format!("account_id = {}", next()));
        }
        if filter.customer_id.is_some() {
            conds.push(format!("customer_id = {}", next()));
        }
        if filter.status.is_some() {
            conds.push(format!("status = {}", next()));
        }
        if filter.stop_reason.is_some() {
            conds.push(format!("(stop_reasons & {}) <> 0", next()));
        }
        if filter.pool_id.is_some() {
            conds.push(format!("pool_id = {}", next()));
        }
        if after.is_some() {
            conds.push(format!("iccid > {}", next()));
        }
        let limit_ph = next();
        let where_clause = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM cards {where_clause} ORDER BY iccid LIMIT {limit_ph}"
        );
        let mut q = sqlx::query_as::<_, CardRow>(&sql);
        if let Some(c) = filter.carrier {
            q = q.bind(c.as_str());
        }
        if let Some(a) = &filter.account_id {
            q = q.bind(a.to_string());
        }
        if let Some(c) = &filter.customer_id {
            q = q.bind(c.clone());
        }
        if let Some(s) = filter.status {
            q = q.bind(s.as_str());
        }
        if let Some(r) = filter.stop_reason {
            q = q.bind(i64::from(StopReasons::mask(r)));
        }
        if let Some(p) = &filter.pool_id {
            q = q.bind(p.clone());
        }
        if let Some(a) = after {
            q = q.bind(a.to_string());
        }
        q = q.bind(i64::from(limit));
        q.fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(Card::try_from)
            .collect()
    }

    /// Writes `card` if it is still at `card.version`, with its events, in one transaction, and
    /// releases any engine lease on it. Returns the card at its new version; `Conflict` if
    /// someone else wrote it first.
    pub async fn update_card(
        &self,
        card: &Card,
        events: &[CardEvent],
        audit: Option<&AuditRecord>,
        answer: Option<&IdempotencyRecord>,
        usage_bytes: u64,
    ) -> Result<Card, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(next) = update_in(&mut tx, card, Guard::NoPendingChange).await? else {
            // Rolled back now, not whenever the pooled connection is next used: until then the
            // open transaction would hold its locks (a DROP SCHEMA or migration would wait).
            tx.rollback().await?;
            return Err(StoreError::Conflict);
        };
        if let Some(a) = audit {
            super::access::insert_audit(&mut tx, a).await?;
        }
        if let Some(r) = answer {
            super::idempotency::insert_idempotency(&mut tx, r).await?;
        }
        if usage_bytes > 0 {
            let row = daily_row(&next, usage_bytes)?;
            add_daily_usage(&mut tx, self.backend, &[row]).await?;
        }
        let rows: Vec<NewEvent> = events.iter().map(|e| NewEvent::of_card(&next, e)).collect();
        let wrote = !rows.is_empty();
        insert_events(&mut tx, self.backend, &rows).await?;
        tx.commit().await?;
        if wrote {
            self.wrote_events();
        }
        Ok(next)
    }

    /// AssignCards' writes: each card from its `before` version to `after`, with its events,
    /// the audit record and the idempotent answer, in one transaction. `Conflict` (and nothing
    /// written) if any card changed meanwhile or has a carrier change pending.
    pub async fn assign_cards(
        &self,
        changes: &[(Card, Card, Vec<CardEvent>)],
        audit: &AuditRecord,
        answer: Option<&IdempotencyRecord>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut rows = Vec::new();
        for (before, after, events) in changes {
            let mut next = after.clone();
            next.version = before.version;
            let Some(written) = update_in(&mut tx, &next, Guard::NoPendingChange).await? else {
                tx.rollback().await?;
                return Err(StoreError::Conflict);
            };
            rows.extend(events.iter().map(|e| NewEvent::of_card(&written, e)));
        }
        super::access::insert_audit(&mut tx, audit).await?;
        if let Some(r) = answer {
            super::idempotency::insert_idempotency(&mut tx, r).await?;
        }
        let wrote = !rows.is_empty();
        insert_events(&mut tx, self.backend, &rows).await?;
        tx.commit().await?;
        if wrote {
            self.wrote_events();
        }
        Ok(())
    }

    /// Records that the carrier shows `carrier_state` for a card that says otherwise, with a
    /// `card.drift_detected` event, if the card is still at `card.version` with no open intent
    /// (a change settled since the reading explains the difference) and the same drift is not
    /// already recorded (another replica's sync). Returns whether it wrote.
    pub async fn record_drift(
        &self,
        card: &Card,
        carrier_state: &str,
        event: &CardEvent,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let set = sqlx::query(
            "UPDATE cards SET drift_carrier_state = $1, drift_since_ms = $2 \
             WHERE iccid = $3 AND version = $4 AND pending_op_id IS NULL \
             AND (drift_carrier_state IS NULL OR drift_carrier_state <> $1)",
        )
        .bind(carrier_state.to_string())
        .bind(at_ms)
        .bind(card.iccid.as_str().to_string())
        .bind(card.version);
        let detail = EventDetail {
            carrier_state: Some(carrier_state.to_string()),
            expected_state: Some(card.expected_carrier_state().to_string()),
            ..EventDetail::default()
        };
        self.drift_write(set, NewEvent::of_card(card, event).with_detail(detail))
            .await
    }

    /// Records (`Some`) or clears (`None`) that the carrier's answer about the card could not be
    /// read ("unknown at carrier"). Only the sync writes it, and it is not part of the card's
    /// version: a reading is a fact about the carrier, not a change of the card. Returns
    /// whether it changed anything.
    pub async fn set_carrier_unknown(
        &self,
        iccid: &Iccid,
        why: Option<&str>,
    ) -> Result<bool, StoreError> {
        let q = match why {
            Some(why) => sqlx::query(
                "UPDATE cards SET carrier_unknown = $1 \
                 WHERE iccid = $2 AND (carrier_unknown IS NULL OR carrier_unknown <> $1)",
            )
            .bind(why.to_string())
            .bind(iccid.as_str().to_string()),
            None => sqlx::query(
                "UPDATE cards SET carrier_unknown = NULL \
                 WHERE iccid = $1 AND carrier_unknown IS NOT NULL",
            )
            .bind(iccid.as_str().to_string()),
        };
        Ok(q.execute(&self.pool).await?.rows_affected() == 1)
    }

    /// Clears a drift the carrier no longer shows, with a `card.drift_resolved` event.
    pub async fn clear_drift(&self, card: &Card, event: &CardEvent) -> Result<bool, StoreError> {
        let clear = sqlx::query(
            "UPDATE cards SET drift_carrier_state = NULL, drift_since_ms = NULL \
             WHERE iccid = $1 AND version = $2 AND drift_carrier_state IS NOT NULL",
        )
        .bind(card.iccid.as_str().to_string())
        .bind(card.version);
        self.drift_write(clear, NewEvent::of_card(card, event))
            .await
    }

    /// Runs a guarded drift update and, if it touched the card, writes its event, in one
    /// transaction. Returns whether it wrote.
    async fn drift_write(&self, update: AnyQuery<'_>, event: NewEvent) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if update.execute(&mut *tx).await?.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_events(&mut tx, self.backend, &[event]).await?;
        tx.commit().await?;
        self.wrote_events();
        Ok(true)
    }

    /// Writes many cards in one transaction, a few hundred per statement. A card changed by
    /// someone else since it was read is skipped (and reported false), not an error: its work
    /// stays due and is picked up again.
    pub async fn update_cards(
        &self,
        cards: &[(Card, Vec<CardEvent>, u64)],
    ) -> Result<Vec<bool>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut done = vec![false; cards.len()];
        let mut written: Vec<(Card, &[CardEvent])> = Vec::with_capacity(cards.len());
        // One row per card and day: an upsert may not touch a row twice in one statement.
        let mut daily: std::collections::BTreeMap<(String, i64), i64> = Default::default();
        for (chunk_no, chunk) in cards.chunks(UPDATE_CHUNK).enumerate() {
            let sql = self.batch_update_sql(chunk.len());
            let mut q = sqlx::query(&sql);
            for (card, _, _) in chunk {
                let mut next = card.clone();
                next.version = card.version + 1;
                q = bind_card(q.bind(card.version), &next)?;
            }
            let updated: std::collections::HashSet<String> = q
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>("iccid"))
                .collect::<Result<_, _>>()?;
            for (i, (card, events, usage)) in chunk.iter().enumerate() {
                if updated.contains(card.iccid.as_str()) {
                    done[chunk_no * UPDATE_CHUNK + i] = true;
                    if *usage > 0 {
                        let (iccid, day, bytes) = daily_row(card, *usage)?;
                        *daily.entry((iccid, day)).or_default() += bytes;
                    }
                    let mut next = card.clone();
                    next.version = card.version + 1;
                    written.push((next, events));
                }
            }
        }
        let daily: Vec<(String, i64, i64)> =
            daily.into_iter().map(|((i, d), b)| (i, d, b)).collect();
        add_daily_usage(&mut tx, self.backend, &daily).await?;
        let rows: Vec<NewEvent> = written
            .iter()
            .flat_map(|(c, events)| events.iter().map(move |e| NewEvent::of_card(c, e)))
            .collect();
        let wrote = !rows.is_empty();
        insert_events(&mut tx, self.backend, &rows).await?;
        tx.commit().await?;
        if wrote {
            self.wrote_events();
        }
        Ok(done)
    }

    /// One UPDATE of `rows` cards from a VALUES list of (old version, every column), guarded by
    /// the old version, returning the ICCIDs it wrote.
    fn batch_update_sql(&self, rows: usize) -> String {
        let cols: Vec<&str> = COLUMNS.split(',').map(str::trim).collect();
        let per_row = cols.len() + 1;
        let sets = cols
            .iter()
            .skip(1)
            .map(|c| format!("{c} = v.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        match self.backend {
            Backend::Postgres => {
                // VALUES parameters have no type of their own in PostgreSQL: cast each.
                let values = (0..rows)
                    .map(|r| {
                        let cells = std::iter::once("bigint")
                            .chain(COLUMN_TYPES.iter().copied())
                            .enumerate()
                            .map(|(i, ty)| format!("${}::{ty}", r * per_row + i + 1))
                            .collect::<Vec<_>>()
                            .join(", ");
                        format!("({cells})")
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "UPDATE cards AS c SET {sets}, lease_owner = NULL, lease_until_ms = NULL \
                     FROM (VALUES {values}) AS v(old_version, {COLUMNS}) \
                     WHERE c.iccid = v.iccid AND c.version = v.old_version \
                     AND c.pending_op_id IS NULL RETURNING c.iccid"
                )
            }
            Backend::Sqlite => {
                let values = (0..rows)
                    .map(|r| format!("({})", placeholders(self.backend, r * per_row, per_row)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let names = std::iter::once("old_version")
                    .chain(cols.iter().copied())
                    .enumerate()
                    .map(|(i, c)| format!("column{} AS {c}", i + 1))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "UPDATE cards SET {sets}, lease_owner = NULL, lease_until_ms = NULL \
                     FROM (SELECT {names} FROM (VALUES {values})) AS v \
                     WHERE cards.iccid = v.iccid AND cards.version = v.old_version \
                     AND cards.pending_op_id IS NULL RETURNING cards.iccid"
                )
            }
        }
    }

    /// Claims up to `limit` cards whose next transition is due at `due_by`, oldest due first,
    /// for `owner` until `lease_until` (wall clock). Cards leased by a live engine are skipped,
    /// so two engines never work on the same card; a dead engine's lease runs out.
    pub async fn claim_due(
        &self,
        owner: &str,
        due_by: DateTime<Utc>,
        lease_now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<Card>, StoreError> {
        // PostgreSQL: concurrent claimers skip each other's locked rows instead of waiting.
        // SQLite has a single writer, so the subquery and update are already atomic.
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE cards SET lease_owner = $1, lease_until_ms = $2 WHERE iccid IN ( \
               SELECT iccid FROM cards WHERE next_due_ms <= $3 AND pending_op_id IS NULL \
               AND (lease_until_ms IS NULL OR lease_until_ms < $4) \
               ORDER BY next_due_ms, iccid LIMIT $5 {lock}) \
             RETURNING {SELECT_COLUMNS}"
        );
        let rows: Vec<CardRow> = sqlx::query_as(&sql)
            .bind(owner.to_string())
            .bind(lease_until_ms)
            .bind(due_by.timestamp_millis())
            .bind(lease_now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut cards: Vec<Card> = rows
            .into_iter()
            .map(Card::try_from)
            .collect::<Result<_, _>>()?;
        cards.sort_by(|a, b| {
            a.next_due_at
                .cmp(&b.next_due_at)
                .then(a.iccid.cmp(&b.iccid))
        });
        Ok(cards)
    }

    /// Gives back every lease `owner` still holds (cards it could not finish).
    pub async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE cards SET lease_owner = NULL, lease_until_ms = NULL WHERE lease_owner = $1",
        )
        .bind(owner.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Number of cards with a transition due at `due_by`.
    pub async fn count_due(&self, due_by: DateTime<Utc>) -> Result<i64, StoreError> {
        Ok(sqlx::query(
            "SELECT COUNT(*) AS n FROM cards WHERE next_due_ms <= $1 AND pending_op_id IS NULL",
        )
        .bind(due_by.timestamp_millis())
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?)
    }

    /// A card's history, oldest first, after event `after_id`.
    pub async fn card_events_page(
        &self,
        iccid: &Iccid,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        let filter = EventFilter {
            iccid: Some(iccid.as_str().to_string()),
            without_alerts: true,
            ..EventFilter::default()
        };
        self.events_after(&filter, after_id, limit).await
    }

    /// The last `limit` events of a card, oldest first.
    pub async fn recent_card_events(
        &self,
        iccid: &Iccid,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        let newest: Option<i64> = sqlx::query(
            "SELECT MIN(id) AS first FROM (SELECT id FROM card_events WHERE iccid = $1 \
             AND kind NOT LIKE 'alert.%' ORDER BY id DESC LIMIT $2) AS recent",
        )
        .bind(iccid.as_str().to_string())
        .bind(i64::from(limit))
        .fetch_one(&self.pool)
        .await?
        .try_get("first")?;
        match newest {
            Some(first) => self.card_events_page(iccid, first - 1, limit).await,
            None => Ok(Vec::new()),
        }
    }

    /// A card's whole history, oldest first.
    pub async fn card_events(&self, iccid: &Iccid) -> Result<Vec<EventRow>, StoreError> {
        self.card_events_page(iccid, 0, u32::MAX).await
    }

    /// The benchmark's ceiling: a whole rollover's balance arithmetic as one statement, with no
    /// rules, carrier or history. Not used by the service.
    #[doc(hidden)]
    pub async fn bench_set_based_rollover(&self, cycle_start_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE cards SET cycle_start_ms = $1, cycle_usage_bytes = 0, \
             balance_fen = balance_fen - monthly_fee_fen, version = version + 1, updated_ms = $1",
        )
        .bind(cycle_start_ms)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// The usage-sync benchmark's ceiling: every live card's usage copied from the simulated
    /// carriers' table in one statement, with no rules, alerts, history or version checks. Not
    /// used by the service.
    #[doc(hidden)]
    pub async fn bench_set_based_usage_sync(
        &self,
        usage_cycle_ms: i64,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE cards SET cycle_usage_bytes = s.cycle_usage_bytes, version = version + 1, \
             updated_ms = $2 FROM sim_cards AS s \
             WHERE s.carrier = cards.account_id AND s.iccid = cards.iccid \
             AND s.usage_cycle_ms = $1 AND cards.cancelled = 0",
        )
        .bind(usage_cycle_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// How many events of `kind` were recorded, across all cards.
    pub async fn count_events(&self, kind: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM card_events WHERE kind = $1")
                .bind(kind.to_string())
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?,
        )
    }

    /// Cards per account (cancelled ones included: they are still the account's).
    pub async fn cards_by_account(
        &self,
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        let rows = sqlx::query("SELECT account_id, COUNT(*) AS n FROM cards GROUP BY account_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("account_id")?, r.try_get("n")?)))
            .collect()
    }

    pub async fn count_cards(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM cards")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }
}

/// Which card rows a write may touch besides its version.
#[derive(Debug, Clone, Copy)]
pub(super) enum Guard {
    /// Any write but the journal's: the card has no open carrier intent.
    NoPendingChange,
    /// The journal settling intent `op`: the card is that intent's, and settling clears it and
    /// any drift (the carrier now shows what the card says).
    Settles(i64),
}

/// The versioned UPDATE of one card inside a transaction; None if its version moved on or the
/// guard does not hold.
pub(super) async fn update_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    card: &Card,
    guard: Guard,
) -> Result<Option<Card>, StoreError> {
    let mut next = card.clone();
    next.version = card.version + 1;
    let sets = COLUMNS
        .split(',')
        .map(str::trim)
        .enumerate()
        .skip(1)
        .map(|(i, col)| format!("{col} = ${}", i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let version = NUM_COLUMNS + 1;
    let sql = match guard {
        Guard::NoPendingChange => format!(
            "UPDATE cards SET {sets}, lease_owner = NULL, lease_until_ms = NULL \
             WHERE iccid = $1 AND version = ${version} AND pending_op_id IS NULL"
        ),
        Guard::Settles(_) => format!(
            "UPDATE cards SET {sets}, lease_owner = NULL, lease_until_ms = NULL, \
             pending_op_id = NULL, pending_action = NULL, pending_since_ms = NULL, \
             pending_order_id = NULL, pending_not_before_ms = NULL, pending_sent_ms = NULL, \
             drift_carrier_state = NULL, drift_since_ms = NULL \
             WHERE iccid = $1 AND version = ${version} AND pending_op_id = ${}",
            version + 1
        ),
    };
    let mut q = bind_card(sqlx::query(&sql), &next)?.bind(card.version);
    if let Guard::Settles(op) = guard {
        q = q.bind(op);
    }
    let done = q.execute(&mut **tx).await?;
    next.pending = None;
    if matches!(guard, Guard::Settles(_)) {
        next.drift = None;
    }
    Ok((done.rows_affected() == 1).then_some(next))
}

/// The daily-history row of `bytes` a card accrued at its `updated_at`.
pub(super) fn daily_row(card: &Card, bytes: u64) -> Result<(String, i64, i64), StoreError> {
    let day = crate::domain::policy::start_of_local_day(card.updated_at);
    Ok((
        card.iccid.as_str().to_string(),
        day.timestamp_millis(),
        u64_to_db(bytes)?,
    ))
}

/// The store is where adapters find the access numbers of cards (given or looked up at import).
#[async_trait::async_trait]
impl crate::carrier::platform::CardNumbers for Store {
    async fn msisdn(&self, account: &AccountId, iccid: &Iccid) -> Result<Option<String>, String> {
        let row = sqlx::query("SELECT msisdn FROM cards WHERE account_id = $1 AND iccid = $2")
            .bind(account.as_str())
            .bind(iccid.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| format!("the card's access number: {e}"))?;
        match row {
            Some(r) => r
                .try_get::<Option<String>, _>("msisdn")
                .map_err(|e| format!("the card's access number: {e}")),
            None => Ok(None),
        }
    }
}
