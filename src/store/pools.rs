//! Pools, alert rules and daily usage history: the tables usage monitoring adds. A pool is keyed
//! by (customer, pool id): pool ids are per customer.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::access::AuditRecord;
use super::events::{insert_events, NewEvent};
use super::idempotency::IdempotencyRecord;
use super::{db_to_u64, millis_to_time, parse_text, u64_to_db, Store, StoreError};
use crate::domain::alerts::AlertRules;
use crate::domain::pool::Pool;
use crate::domain::PoolEvent;
use crate::domain::{CarrierId, Iccid};

const POOL_COLUMNS: &str = "id, name, carrier, customer_id, quota_bytes, auto_suspend, \
    cycle_start_ms, topup_bytes, exhausted, alert_keys, created_ms, updated_ms, version";

fn pool_from_row(r: &sqlx::any::AnyRow) -> Result<Pool, StoreError> {
    let carrier: String = r.try_get("carrier")?;
    let keys: String = r.try_get("alert_keys")?;
    Ok(Pool {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        carrier: parse_text("pool carrier", &carrier)?,
        customer_id: r.try_get("customer_id")?,
        quota_bytes: db_to_u64(r.try_get("quota_bytes")?)?,
        auto_suspend: r.try_get::<i64, _>("auto_suspend")? != 0,
        cycle_start: millis_to_time(r.try_get("cycle_start_ms")?)?,
        topup_bytes: db_to_u64(r.try_get("topup_bytes")?)?,
        exhausted: r.try_get::<i64, _>("exhausted")? != 0,
        alert_keys: keys
            .split(',')
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect(),
        created_at: millis_to_time(r.try_get("created_ms")?)?,
        updated_at: millis_to_time(r.try_get("updated_ms")?)?,
        version: r.try_get("version")?,
    })
}

/// Narrows a pool listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolFilter {
    pub customer_id: Option<String>,
    pub carrier: Option<CarrierId>,
}

/// One day of a card's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyUsage {
    pub day: DateTime<Utc>,
    pub bytes: u64,
}

impl Store {
    /// Creates a pool with its first event. `Duplicate` if the customer already has a pool with
    /// this id (pool ids are per customer: another customer's pools are no concern of this one).
    pub async fn insert_pool(
        &self,
        pool: &Pool,
        events: &[PoolEvent],
        audit: Option<&AuditRecord>,
        answer: Option<&IdempotencyRecord>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(&format!(
            "INSERT INTO pools ({POOL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13) ON CONFLICT (customer_id, id) DO NOTHING"
        ))
        .bind(pool.id.clone())
        .bind(pool.name.clone())
        .bind(pool.carrier.as_str())
        .bind(pool.customer_id.clone())
        .bind(u64_to_db(pool.quota_bytes)?)
        .bind(i64::from(pool.auto_suspend))
        .bind(pool.cycle_start.timestamp_millis())
        .bind(u64_to_db(pool.topup_bytes)?)
        .bind(i64::from(pool.exhausted))
        .bind(pool.alert_keys.join(","))
        .bind(pool.created_at.timestamp_millis())
        .bind(pool.updated_at.timestamp_millis())
        .bind(pool.version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(StoreError::Duplicate {
                field: "pool_id",
                value: pool.id.clone(),
            });
        }
        finish(tx, self.backend, pool, events, audit, answer).await?;
        self.wrote_events();
        Ok(())
    }

    /// The customer's pool `id`.
    pub async fn get_pool(&self, customer_id: &str, id: &str) -> Result<Option<Pool>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {POOL_COLUMNS} FROM pools WHERE customer_id = $1 AND id = $2"
        ))
        .bind(customer_id.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(pool_from_row).transpose()
    }

    /// Up to `limit` pools with this id, whatever their customer, in customer order: how a
    /// reseller key that names no customer finds the pool it means.
    pub async fn pools_with_id(&self, id: &str, limit: u32) -> Result<Vec<Pool>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {POOL_COLUMNS} FROM pools WHERE id = $1 ORDER BY customer_id LIMIT $2"
        ))
        .bind(id.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pool_from_row).collect()
    }

    /// Up to `limit` pools after `after` (a pool id and its customer) in (id, customer) order.
    pub async fn list_pools(
        &self,
        filter: &PoolFilter,
        after: (&str, &str),
        limit: u32,
    ) -> Result<Vec<Pool>, StoreError> {
        let mut sql = format!(
            "SELECT {POOL_COLUMNS} FROM pools WHERE (id > $1 OR (id = $1 AND customer_id > $2))"
        );
        let mut n = 2;
        if filter.customer_id.is_some() {
            n += 1;
            sql.push_str(&format!(" AND customer_id = ${n}"));
        }
        if filter.carrier.is_some() {
            n += 1;
            sql.push_str(&format!(" AND carrier = ${n}"));
        }
        sql.push_str(&format!(" ORDER BY id, customer_id LIMIT ${}", n + 1));
        let mut q = sqlx::query(&sql)
            .bind(after.0.to_string())
            .bind(after.1.to_string());
        if let Some(c) = &filter.customer_id {
            q = q.bind(c.clone());
        }
        if let Some(c) = filter.carrier {
            q = q.bind(c.as_str());
        }
        let rows = q.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(pool_from_row).collect()
    }

    /// Writes `pool` if it is still at `pool.version`, with its events; `Conflict` otherwise.
    pub async fn update_pool(
        &self,
        pool: &Pool,
        events: &[PoolEvent],
        audit: Option<&AuditRecord>,
        answer: Option<&IdempotencyRecord>,
    ) -> Result<Pool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE pools SET name = $1, quota_bytes = $2, auto_suspend = $3, cycle_start_ms = $4, \
             topup_bytes = $5, exhausted = $6, alert_keys = $7, updated_ms = $8, \
             version = version + 1 WHERE customer_id = $9 AND id = $10 AND version = $11",
        )
        .bind(pool.name.clone())
        .bind(u64_to_db(pool.quota_bytes)?)
        .bind(i64::from(pool.auto_suspend))
        .bind(pool.cycle_start.timestamp_millis())
        .bind(u64_to_db(pool.topup_bytes)?)
        .bind(i64::from(pool.exhausted))
        .bind(pool.alert_keys.join(","))
        .bind(pool.updated_at.timestamp_millis())
        .bind(pool.customer_id.clone())
        .bind(pool.id.clone())
        .bind(pool.version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(StoreError::Conflict);
        }
        let mut next = pool.clone();
        next.version += 1;
        finish(tx, self.backend, &next, events, audit, answer).await?;
        if !events.is_empty() {
            self.wrote_events();
        }
        Ok(next)
    }

    /// The pool's usage: its members' usage counted in the cycle that started at `cycle_start`
    /// (a member whose card has not rolled over yet has used nothing of the new cycle). The
    /// members are the customer's cards naming the pool: another customer's pool of the same id
    /// is another pool.
    pub async fn pool_usage(
        &self,
        customer_id: &str,
        pool_id: &str,
        cycle_start: DateTime<Utc>,
    ) -> Result<(u64, u64), StoreError> {
        let row = sqlx::query(
            // SUM over BIGINT is NUMERIC on PostgreSQL, which the Any driver cannot decode.
            "SELECT CAST(COALESCE(SUM(CASE WHEN cycle_start_ms = $3 THEN cycle_usage_bytes ELSE 0 END), 0) \
             AS BIGINT) AS used, COUNT(*) AS members FROM cards WHERE customer_id = $1 AND pool_id = $2",
        )
        .bind(customer_id.to_string())
        .bind(pool_id.to_string())
        .bind(cycle_start.timestamp_millis())
        .fetch_one(&self.pool)
        .await?;
        let used: i64 = row.try_get("used")?;
        Ok((db_to_u64(used)?, db_to_u64(row.try_get("members")?)?))
    }

    /// Members of `pool_id` whose POOL_EXHAUSTED stop differs from `stopped` (the ones a pool
    /// change has still to reach), up to `limit`.
    pub async fn pool_members_to_follow(
        &self,
        pool: &Pool,
        stopped: bool,
        bit: u32,
        limit: u32,
    ) -> Result<Vec<Iccid>, StoreError> {
        let cond = if stopped {
            "(stop_reasons & $3) = 0 AND cancelled = 0"
        } else {
            "(stop_reasons & $3) <> 0"
        };
        let rows = sqlx::query(&format!(
            "SELECT iccid FROM cards WHERE customer_id = $1 AND pool_id = $2 AND {cond} \
             ORDER BY iccid LIMIT $4"
        ))
        .bind(pool.customer_id.clone())
        .bind(pool.id.clone())
        .bind(i64::from(bit))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(Iccid::from_trusted(r.try_get::<String, _>("iccid")?)))
            .collect()
    }

    pub async fn alert_rules(&self, customer_id: &str) -> Result<Option<AlertRules>, StoreError> {
        let row = sqlx::query("SELECT rules FROM alert_rules WHERE customer_id = $1")
            .bind(customer_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let json: String = r.try_get("rules")?;
            serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("alert rules of {customer_id}: {e}")))
        })
        .transpose()
    }

    pub async fn put_alert_rules(
        &self,
        customer_id: &str,
        rules: &AlertRules,
        at: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(rules)
            .map_err(|e| StoreError::Corrupt(format!("alert rules: {e}")))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO alert_rules (customer_id, rules, updated_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (customer_id) DO UPDATE SET rules = excluded.rules, \
             updated_ms = excluded.updated_ms",
        )
        .bind(customer_id.to_string())
        .bind(json)
        .bind(at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        super::access::insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A card's daily usage from `from` (inclusive), oldest first.
    pub async fn daily_usage(
        &self,
        iccid: &Iccid,
        from: DateTime<Utc>,
    ) -> Result<Vec<DailyUsage>, StoreError> {
        let rows = sqlx::query(
            "SELECT day_ms, bytes FROM usage_daily WHERE iccid = $1 AND day_ms >= $2 ORDER BY day_ms",
        )
        .bind(iccid.as_str().to_string())
        .bind(from.timestamp_millis())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DailyUsage {
                    day: millis_to_time(r.try_get("day_ms")?)?,
                    bytes: db_to_u64(r.try_get("bytes")?)?,
                })
            })
            .collect()
    }
}

/// The rest of a pool write: audit, idempotent answer, then the events (last, see `events`).
async fn finish(
    mut tx: sqlx::Transaction<'_, sqlx::Any>,
    backend: super::Backend,
    pool: &Pool,
    events: &[PoolEvent],
    audit: Option<&AuditRecord>,
    answer: Option<&IdempotencyRecord>,
) -> Result<(), StoreError> {
    if let Some(a) = audit {
        super::access::insert_audit(&mut tx, a).await?;
    }
    if let Some(r) = answer {
        super::idempotency::insert_idempotency(&mut tx, r).await?;
    }
    let rows: Vec<NewEvent> = events.iter().map(|e| NewEvent::of_pool(pool, e)).collect();
    insert_events(&mut tx, backend, &rows).await?;
    tx.commit().await?;
    Ok(())
}

/// Adds usage to the daily history inside a card write: (iccid, day start, bytes) rows.
pub(super) async fn add_daily_usage(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: super::Backend,
    rows: &[(String, i64, i64)],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(3000) {
        let values = (0..chunk.len())
            .map(|i| format!("({})", super::placeholders(backend, i * 3, 3)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO usage_daily (iccid, day_ms, bytes) VALUES {values} \
             ON CONFLICT (iccid, day_ms) DO UPDATE SET bytes = usage_daily.bytes + excluded.bytes"
        );
        let mut q = sqlx::query(&sql);
        for (iccid, day, bytes) in chunk {
            q = q.bind(iccid.clone()).bind(*day).bind(*bytes);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
