//! API keys and the audit log.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{millis_to_time, Store, StoreError};
use crate::auth::{ApiKey, NewKey, Role};

/// One audit record: who (key id, never the key), what, on which card, the request id, the
/// result and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub key_id: String,
    pub method: String,
    pub iccid: Option<String>,
    pub customer_id: Option<String>,
    pub request_id: String,
    /// `OK` or the gRPC status code name of the refusal.
    pub result: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub record: AuditRecord,
}

/// Narrows an audit listing; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub key_id: Option<String>,
    pub iccid: Option<String>,
    pub customer_id: Option<String>,
    pub method: Option<String>,
}

pub(super) async fn insert_audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    a: &AuditRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_entries (at_ms, key_id, method, iccid, customer_id, request_id, result, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(a.at.timestamp_millis())
    .bind(a.key_id.clone())
    .bind(a.method.clone())
    .bind(a.iccid.clone())
    .bind(a.customer_id.clone())
    .bind(a.request_id.clone())
    .bind(a.result.clone())
    .bind(a.detail.clone())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn key_from_row(r: &sqlx::any::AnyRow) -> Result<(ApiKey, String), StoreError> {
    let role: String = r.try_get("role")?;
    let opt_time = |col: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        r.try_get::<Option<i64>, _>(col)?
            .map(millis_to_time)
            .transpose()
    };
    Ok((
        ApiKey {
            key_id: r.try_get("key_id")?,
            role: Role::parse(&role)
                .ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
            customer_id: r.try_get("customer_id")?,
            name: r.try_get("name")?,
            created_at: millis_to_time(r.try_get("created_ms")?)?,
            created_by: r.try_get("created_by")?,
            expires_at: opt_time("expires_ms")?,
            revoked_at: opt_time("revoked_ms")?,
        },
        r.try_get("secret_hash")?,
    ))
}

const KEY_COLUMNS: &str =
    "key_id, secret_hash, role, customer_id, name, created_ms, created_by, expires_ms, revoked_ms";

/// The row of a new key, in `tx`.
async fn insert_key_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    new: &NewKey,
    key: &ApiKey,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(new.key_id.clone())
    .bind(new.secret_hash.clone())
    .bind(key.role.as_str())
    .bind(key.customer_id.clone())
    .bind(key.name.clone())
    .bind(key.created_at.timestamp_millis())
    .bind(key.created_by.clone())
    .bind(key.expires_at.map(|t| t.timestamp_millis()))
    .bind(key.revoked_at.map(|t| t.timestamp_millis()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Stores a key (its hash only), with the audit record of its creation.
    pub async fn insert_key(
        &self,
        new: &NewKey,
        key: &ApiKey,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_key_row(&mut tx, new, key).await?;
        if let Some(a) = audit {
            insert_audit(&mut tx, a).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Inserts `key` only if there is no key at all (the first start's generated bootstrap
    /// key). On PostgreSQL replicas starting together take turns under an advisory lock, so
    /// exactly one of them makes the key. Returns whether this call made it.
    pub async fn insert_first_key(&self, new: &NewKey, key: &ApiKey) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == super::Backend::Postgres {
            sqlx::query(
                "SELECT pg_advisory_xact_lock(hashtext('simgate.bootstrap'))::text AS locked",
            )
            .fetch_one(&mut *tx)
            .await?;
        }
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM api_keys")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if n > 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_key_row(&mut tx, new, key).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A key and its secret's hash.
    pub async fn get_key(&self, key_id: &str) -> Result<Option<(ApiKey, String)>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = $1"
        ))
        .bind(key_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Keys, newest first; one customer's only when `customer_id` is given.
    pub async fn list_keys(&self, customer_id: Option<&str>) -> Result<Vec<ApiKey>, StoreError> {
        let rows = match customer_id {
            Some(c) => {
                sqlx::query(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE customer_id = $1 ORDER BY created_ms DESC, key_id"
                ))
                .bind(c.to_string())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_ms DESC, key_id"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter()
            .map(|r| key_from_row(r).map(|(k, _)| k))
            .collect()
    }

    /// Marks a key revoked (once), with its audit record, and cancels the bulk operations it
    /// started that are still running, in the same transaction: a revoked key's batch must not
    /// go on changing cards in its name. False if it was already revoked.
    pub async fn revoke_key(
        &self,
        key_id: &str,
        at: DateTime<Utc>,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_ms = $1 WHERE key_id = $2 AND revoked_ms IS NULL",
        )
        .bind(at.timestamp_millis())
        .bind(key_id.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE batch_items SET status = 'CANCELLED', reason = 'key revoked' \
             WHERE status = 'PENDING' AND batch_id IN \
             (SELECT id FROM batches WHERE key_id = $1 AND state = 'RUNNING')",
        )
        .bind(key_id.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE batches SET state = 'CANCELLED', updated_ms = $1 \
             WHERE key_id = $2 AND state = 'RUNNING'",
        )
        .bind(at.timestamp_millis())
        .bind(key_id.to_string())
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn count_keys(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM api_keys")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    /// Records a call that changed nothing (a refusal), on its own.
    pub async fn record_audit(&self, a: &AuditRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_audit(&mut tx, a).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Audit entries, newest first, older than `before_id` (0: from the newest).
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        before_id: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut conds = vec!["($1 = 0 OR id < $1)".to_string()];
        let mut binds: Vec<String> = Vec::new();
        for (col, v) in [
            ("key_id", &filter.key_id),
            ("iccid", &filter.iccid),
            ("customer_id", &filter.customer_id),
            ("method", &filter.method),
        ] {
            if let Some(v) = v {
                binds.push(v.clone());
                conds.push(format!("{col} = ${}", binds.len() + 1));
            }
        }
        let sql = format!(
            "SELECT id, at_ms, key_id, method, iccid, customer_id, request_id, result, detail \
             FROM audit_entries WHERE {} ORDER BY id DESC LIMIT ${}",
            conds.join(" AND "),
            binds.len() + 2
        );
        let mut q = sqlx::query(&sql).bind(before_id);
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    record: AuditRecord {
                        at: millis_to_time(r.try_get("at_ms")?)?,
                        key_id: r.try_get("key_id")?,
                        method: r.try_get("method")?,
                        iccid: r.try_get("iccid")?,
                        customer_id: r.try_get("customer_id")?,
                        request_id: r.try_get("request_id")?,
                        result: r.try_get("result")?,
                        detail: r.try_get("detail")?,
                    },
                })
            })
            .collect()
    }
}
