//! The carrier-call journal (`carrier_ops`).

use sqlx::Row;

use super::{Store, StoreError};
use crate::domain::{CarrierAction, CarrierId, Iccid};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierOp {
    pub id: i64,
    pub iccid: String,
    pub carrier: String,
    pub action: String,
    pub status: String,
    pub attempts: i64,
    pub last_error: String,
    pub source: String,
}

pub fn action_name(a: CarrierAction) -> &'static str {
    match a {
        CarrierAction::Stop => "STOP",
        CarrierAction::Restore => "RESTORE",
        CarrierAction::Cancel => "CANCEL",
    }
}

pub(super) async fn mark_applied(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    op_id: i64,
    at_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE carrier_ops SET status = 'APPLIED', updated_ms = $1 WHERE id = $2")
        .bind(at_ms)
        .bind(op_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn op_from_row(r: &sqlx::any::AnyRow) -> Result<CarrierOp, StoreError> {
    Ok(CarrierOp {
        id: r.try_get("id")?,
        iccid: r.try_get("iccid")?,
        carrier: r.try_get("carrier")?,
        action: r.try_get("action")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        source: r.try_get("source")?,
    })
}

impl Store {
    /// Writes the intent to call the carrier, before the call. Returns its id.
    pub async fn journal_intent(
        &self,
        iccid: &Iccid,
        carrier: CarrierId,
        action: CarrierAction,
        source: &str,
        at_ms: i64,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO carrier_ops (iccid, carrier, action, status, attempts, last_error, source, created_ms, updated_ms) \
             VALUES ($1, $2, $3, 'PENDING', 0, '', $4, $5, $5) RETURNING id",
        )
        .bind(iccid.as_str().to_string())
        .bind(carrier.as_str())
        .bind(action_name(action))
        .bind(source.to_string())
        .bind(at_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Records an attempt's outcome on an intent that is still open.
    pub async fn journal_attempt(
        &self,
        op_id: i64,
        status: &str,
        error: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE carrier_ops SET status = $1, attempts = attempts + 1, last_error = $2, updated_ms = $3 \
             WHERE id = $4 AND status IN ('PENDING', 'RETRYING')",
        )
        .bind(status.to_string())
        .bind(error.chars().take(500).collect::<String>())
        .bind(at_ms)
        .bind(op_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Intents written before `before_ms` and never closed: their writer died mid-call.
    pub async fn stale_intents(
        &self,
        before_ms: i64,
        limit: u32,
    ) -> Result<Vec<CarrierOp>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, iccid, carrier, action, status, attempts, last_error, source FROM carrier_ops \
             WHERE status IN ('PENDING', 'RETRYING') AND updated_ms < $1 ORDER BY id LIMIT $2",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(op_from_row).collect()
    }

    /// The journal of one card, oldest first.
    pub async fn card_ops(&self, iccid: &Iccid) -> Result<Vec<CarrierOp>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, iccid, carrier, action, status, attempts, last_error, source FROM carrier_ops \
             WHERE iccid = $1 ORDER BY id",
        )
        .bind(iccid.as_str().to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(op_from_row).collect()
    }
}
