//! Stored first answers of idempotent requests.

use sqlx::Row;

use super::{Store, StoreError};

/// The first answer to a request, keyed by the API key and the caller's request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub key_id: String,
    pub request_id: String,
    pub method: String,
    /// SHA-256 of the request without its request id: the same id with another request is
    /// refused instead of answered.
    pub fingerprint: String,
    /// The encoded response message.
    pub response: Vec<u8>,
    pub created_ms: i64,
}

pub(super) async fn insert_idempotency(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    r: &IdempotencyRecord,
) -> Result<(), StoreError> {
    insert(tx, r, "").await.map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate {
            field: "request_id",
            value: r.request_id.clone(),
        },
        _ => e.into(),
    })
}

/// The same, keeping an answer already stored under the id (a settled intent's answer: the
/// request id was answered once, and that answer stands).
pub(super) async fn insert_idempotency_if_absent(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    r: &IdempotencyRecord,
) -> Result<(), StoreError> {
    insert(tx, r, "ON CONFLICT (key_id, request_id) DO NOTHING").await?;
    Ok(())
}

async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    r: &IdempotencyRecord,
    on_conflict: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO idempotency (key_id, request_id, method, fingerprint, response, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) {on_conflict}"
    ))
    .bind(r.key_id.clone())
    .bind(r.request_id.clone())
    .bind(r.method.clone())
    .bind(r.fingerprint.clone())
    .bind(r.response.clone())
    .bind(r.created_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    pub async fn get_idempotency(
        &self,
        key_id: &str,
        request_id: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT method, fingerprint, response, created_ms FROM idempotency \
             WHERE key_id = $1 AND request_id = $2",
        )
        .bind(key_id.to_string())
        .bind(request_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(IdempotencyRecord {
                key_id: key_id.to_string(),
                request_id: request_id.to_string(),
                method: r.try_get("method")?,
                fingerprint: r.try_get("fingerprint")?,
                response: r.try_get("response")?,
                created_ms: r.try_get("created_ms")?,
            })
        })
        .transpose()
    }

    /// Stores the answer of a request that changed nothing.
    pub async fn put_idempotency(&self, r: &IdempotencyRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_idempotency(&mut tx, r).await?;
        tx.commit().await?;
        Ok(())
    }
}
