//! Bulk operations (`batches`) and their per-card items (`batch_items`).

use sqlx::Row;

use super::{placeholders, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub id: String,
    pub kind: String,
    pub amount_fen: i64,
    pub key_id: String,
    pub role: String,
    pub customer_id: Option<String>,
    pub state: String,
    pub total: i64,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    pub batch_id: String,
    pub seq: i64,
    pub iccid: String,
    pub status: String,
    pub reason: String,
    pub attempts: i64,
}

/// Counts of a batch's items by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    pub pending: u64,
    pub done: u64,
    pub failed: u64,
    pub cancelled: u64,
}

const BATCH_COLUMNS: &str =
    "id, kind, amount_fen, key_id, role, customer_id, state, total, created_ms";

fn batch_from_row(r: &sqlx::any::AnyRow) -> Result<Batch, StoreError> {
    Ok(Batch {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        amount_fen: r.try_get("amount_fen")?,
        key_id: r.try_get("key_id")?,
        role: r.try_get("role")?,
        customer_id: r.try_get("customer_id")?,
        state: r.try_get("state")?,
        total: r.try_get("total")?,
        created_ms: r.try_get("created_ms")?,
    })
}

fn item_from_row(r: &sqlx::any::AnyRow) -> Result<BatchItem, StoreError> {
    Ok(BatchItem {
        batch_id: r.try_get("batch_id")?,
        seq: r.try_get("seq")?,
        iccid: r.try_get("iccid")?,
        status: r.try_get("status")?,
        reason: r.try_get("reason")?,
        attempts: r.try_get("attempts")?,
    })
}

/// The next due items of one batch, in order (`$1` batch, `$2` now in ms, `$3` how many).
/// `+next_attempt_ms` keeps SQLite's planner off `batch_items_due` (status, next_attempt_ms):
/// with it, every pass sorted all of the batch's pending items by seq, O(n) a pass and O(n²) a
/// batch (a 100,000-card batch spent most of its time in that sort). This way it walks
/// `batch_items_pending` in seq order and stops at the limit. PostgreSQL reads the unary plus
/// as the same number. Public for the store suite's query-plan test.
/// A batch's items counted by status (`$1` batch): one walk of `batch_items_by_status`, which
/// covers it (without that index SQLite sorted every item of the batch on each GetOperation).
pub const BATCH_COUNTS: &str =
    "SELECT status, COUNT(*) AS n FROM batch_items WHERE batch_id = $1 GROUP BY status";

pub const DUE_ITEMS_OF_BATCH: &str =
    "SELECT batch_id, seq, iccid, status, reason, attempts FROM batch_items \
     WHERE batch_id = $1 AND status = 'PENDING' AND +next_attempt_ms <= $2 \
     ORDER BY seq LIMIT $3";

impl Store {
    /// Stores a batch and all its items (PENDING) in one transaction.
    pub async fn insert_batch(
        &self,
        b: &Batch,
        iccids: &[String],
        answer: Option<&super::IdempotencyRecord>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(r) = answer {
            super::idempotency::insert_idempotency(&mut tx, r).await?;
        }
        sqlx::query(&format!(
            "INSERT INTO batches ({BATCH_COLUMNS}, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)"
        ))
        .bind(b.id.clone())
        .bind(b.kind.clone())
        .bind(b.amount_fen)
        .bind(b.key_id.clone())
        .bind(b.role.clone())
        .bind(b.customer_id.clone())
        .bind(b.state.clone())
        .bind(b.total)
        .bind(b.created_ms)
        .execute(&mut *tx)
        .await?;
        const COLS: usize = 3;
        for (chunk_no, chunk) in iccids.chunks(2000).enumerate() {
            let rows = (0..chunk.len())
                .map(|i| {
                    format!(
                        "({}, 'PENDING', '', 0, 0)",
                        placeholders(self.backend, i * COLS, COLS)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO batch_items (batch_id, seq, iccid, status, reason, attempts, next_attempt_ms) VALUES {rows}"
            );
            let mut q = sqlx::query(&sql);
            for (i, iccid) in chunk.iter().enumerate() {
                q = q
                    .bind(b.id.clone())
                    .bind((chunk_no * 2000 + i) as i64)
                    .bind(iccid.clone());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_batch(&self, id: &str) -> Result<Option<Batch>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(batch_from_row).transpose()
    }

    /// Batches, newest first, after the position `before` = (created_ms, id) of the last one a
    /// page showed (None: from the newest); one customer's only when given. The id breaks ties
    /// between batches created in the same millisecond, so a page edge never skips one.
    pub async fn list_batches(
        &self,
        customer_id: Option<&str>,
        before: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<Batch>, StoreError> {
        let (before_ms, before_id) = before.unwrap_or((i64::MAX, ""));
        let rows = sqlx::query(&format!(
            "SELECT {BATCH_COLUMNS} FROM batches \
             WHERE (created_ms < $1 OR (created_ms = $1 AND id < $2) OR $3 = 1) \
             AND ($4 = '' OR customer_id = $4) ORDER BY created_ms DESC, id DESC LIMIT $5"
        ))
        .bind(before_ms)
        .bind(before_id.to_string())
        .bind(i64::from(before.is_none()))
        .bind(customer_id.unwrap_or("").to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(batch_from_row).collect()
    }

    pub async fn batch_counts(&self, id: &str) -> Result<BatchCounts, StoreError> {
        let rows = sqlx::query(BATCH_COUNTS)
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await?;
        let mut c = BatchCounts::default();
        for r in rows {
            let status: String = r.try_get("status")?;
            let n = u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0);
            match status.as_str() {
                "PENDING" => c.pending = n,
                "DONE" => c.done = n,
                "FAILED" => c.failed = n,
                "CANCELLED" => c.cancelled = n,
                _ => {}
            }
        }
        Ok(c)
    }

    /// A page of a batch's items after `after_seq`, optionally of one status.
    pub async fn batch_items(
        &self,
        id: &str,
        status: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<BatchItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT batch_id, seq, iccid, status, reason, attempts FROM batch_items \
             WHERE batch_id = $1 AND seq > $2 AND ($3 = '' OR status = $3) ORDER BY seq LIMIT $4",
        )
        .bind(id.to_string())
        .bind(after_seq)
        .bind(status.unwrap_or("").to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(item_from_row).collect()
    }

    /// Up to `limit` due items of running batches, shared round-robin between tenants (each
    /// customer, and the reseller's own batches as one more): the first item of every tenant,
    /// then the second of every tenant, and so on. Within a tenant, its oldest batch goes first.
    /// So one customer's 100,000-card batch delays another customer's one-card batch by one
    /// pass at most, not by its whole length. Returns the batches the items belong to as well.
    pub async fn due_items(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<(Vec<BatchItem>, Vec<Batch>), StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {BATCH_COLUMNS} FROM batches WHERE state = 'RUNNING' ORDER BY created_ms, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        let running: Vec<Batch> = rows.iter().map(batch_from_row).collect::<Result<_, _>>()?;
        // Tenants in the order of their oldest running batch.
        let mut tenants: Vec<(Option<String>, Vec<&Batch>)> = Vec::new();
        for b in &running {
            match tenants.iter_mut().find(|(t, _)| *t == b.customer_id) {
                Some((_, list)) => list.push(b),
                None => tenants.push((b.customer_id.clone(), vec![b])),
            }
        }
        let share = (limit as usize).div_ceil(tenants.len().max(1)).max(1);
        let mut per_tenant: Vec<std::collections::VecDeque<BatchItem>> = Vec::new();
        for (_, batches) in &tenants {
            let mut items = Vec::new();
            for b in batches {
                if items.len() >= share {
                    break;
                }
                let rows = sqlx::query(DUE_ITEMS_OF_BATCH)
                    .bind(b.id.clone())
                    .bind(now_ms)
                    .bind((share - items.len()) as i64)
                    .fetch_all(&self.pool)
                    .await?;
                for r in &rows {
                    items.push(item_from_row(r)?);
                }
            }
            per_tenant.push(items.into());
        }
        let mut out = Vec::with_capacity(limit as usize);
        while out.len() < limit as usize {
            let mut any = false;
            for q in per_tenant.iter_mut() {
                if out.len() >= limit as usize {
                    break;
                }
                if let Some(item) = q.pop_front() {
                    out.push(item);
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        let used: std::collections::HashSet<&str> =
            out.iter().map(|i| i.batch_id.as_str()).collect();
        let batches = running
            .iter()
            .filter(|b| used.contains(b.id.as_str()))
            .cloned()
            .collect();
        Ok((out, batches))
    }

    /// Claims the items of `items` that are still due for a try until `until_ms`, counting the
    /// try before it is made (so that a try cut short by a crash still shows in `attempts` when
    /// the item is redone), in one statement. Returns the `(batch_id, seq)` of those claimed:
    /// one left out is not due any more (another replica claimed it first, or it is done). A
    /// claim that runs out (the replica died) makes the item due again.
    pub async fn claim_items(
        &self,
        items: &[BatchItem],
        now_ms: i64,
        until_ms: i64,
    ) -> Result<std::collections::HashSet<(String, i64)>, StoreError> {
        let mut claimed = std::collections::HashSet::new();
        // Grouped by batch, and with `status` and `next_attempt_ms` written as expressions, so
        // that the statement goes by the primary key (batch_id, seq). Written plainly, SQLite
        // (without statistics) picks the (status, next_attempt_ms) index and scans every due
        // item of every batch for each claim of 32 (EXPLAIN QUERY PLAN shows it); PostgreSQL
        // reads the expressions the same and plans by its statistics.
        let mut by_batch: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
        for i in items {
            by_batch.entry(&i.batch_id).or_default().push(i.seq);
        }
        for (batch, seqs) in by_batch {
            for chunk in seqs.chunks(400) {
                // Only numbered placeholders: SQLite does not mix `$1` with `?` as PostgreSQL would.
                let sql = format!(
                    "UPDATE batch_items SET attempts = attempts + 1, next_attempt_ms = {} \
                     WHERE batch_id = {} AND seq IN ({}) \
                     AND (status || '') = 'PENDING' AND (next_attempt_ms + 0) <= {} RETURNING seq",
                    placeholders(self.backend, 0, 1),
                    placeholders(self.backend, 1, 1),
                    placeholders(self.backend, 2, chunk.len()),
                    placeholders(self.backend, 2 + chunk.len(), 1),
                );
                let mut q = sqlx::query(&sql).bind(until_ms).bind(batch.to_string());
                for seq in chunk {
                    q = q.bind(*seq);
                }
                q = q.bind(now_ms);
                for row in q.fetch_all(&self.pool).await? {
                    claimed.insert((batch.to_string(), row.try_get("seq")?));
                }
            }
        }
        Ok(claimed)
    }

    /// Of `iccids`, those that are not cards of `customer_id` (of any customer when None), in
    /// the order given, at most `first` of them, and how many there are in all.
    pub async fn cards_not_visible(
        &self,
        iccids: &[String],
        customer_id: Option<&str>,
        first: usize,
    ) -> Result<(Vec<String>, usize), StoreError> {
        let mut found = std::collections::HashSet::with_capacity(iccids.len());
        for chunk in iccids.chunks(500) {
            let sql = format!(
                "SELECT iccid, customer_id FROM cards WHERE iccid IN ({})",
                placeholders(self.backend, 0, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for iccid in chunk {
                q = q.bind(iccid.clone());
            }
            for r in q.fetch_all(&self.pool).await? {
                let owner: String = r.try_get("customer_id")?;
                if customer_id.is_none_or(|c| c == owner) {
                    found.insert(r.try_get::<String, _>("iccid")?);
                }
            }
        }
        let missing: Vec<&String> = iccids.iter().filter(|i| !found.contains(*i)).collect();
        Ok((
            missing.iter().take(first).map(|s| s.to_string()).collect(),
            missing.len(),
        ))
    }

    /// Records an item's outcome (if it is still pending: a cancel wins).
    pub async fn finish_item(
        &self,
        batch_id: &str,
        seq: i64,
        status: &str,
        reason: &str,
        next_attempt_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE batch_items SET status = $1, reason = $2, next_attempt_ms = $3 \
             WHERE batch_id = $4 AND seq = $5 AND status = 'PENDING'",
        )
        .bind(status.to_string())
        .bind(reason.chars().take(300).collect::<String>())
        .bind(next_attempt_ms)
        .bind(batch_id.to_string())
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_batch_state(
        &self,
        id: &str,
        state: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE batches SET state = $1, updated_ms = $2 WHERE id = $3 AND state = 'RUNNING'",
        )
        .bind(state.to_string())
        .bind(at_ms)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Cancels what is not done yet.
    pub async fn cancel_batch(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE batch_items SET status = 'CANCELLED', reason = 'cancelled' WHERE batch_id = $1 AND status = 'PENDING'",
        )
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE batches SET state = 'CANCELLED', updated_ms = $1 WHERE id = $2 AND state = 'RUNNING'")
            .bind(at_ms)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks the batch DONE if it is running and has no pending item left.
    pub async fn finish_batch_if_done(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE batches SET state = 'DONE', updated_ms = $1 WHERE id = $2 AND state = 'RUNNING' \
             AND NOT EXISTS (SELECT 1 FROM batch_items i WHERE i.batch_id = $2 AND i.status = 'PENDING')",
        )
        .bind(at_ms)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Running batches with no pending item left.
    pub async fn finished_running_batches(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT b.id FROM batches b WHERE b.state = 'RUNNING' AND NOT EXISTS \
             (SELECT 1 FROM batch_items i WHERE i.batch_id = b.id AND i.status = 'PENDING')",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }
}
