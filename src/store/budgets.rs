//! Carrier accounts' limits shared by every replica on one PostgreSQL: rate budgets
//! (`carrier_budgets`), calls in flight (`carrier_slots`) and the recorded account settings
//! (`carrier_account_settings`). Times are the database's own clock, so replicas whose clocks
//! differ still share one schedule.
//!
//! A rate budget is a virtual schedule (GCRA without burst): the row holds the earliest time
//! the next call may leave; taking a call reserves that time and moves it on by the interval,
//! in one statement. Turns reserved on one key are therefore at least one interval apart,
//! across all replicas; a caller sleeps until its turn (a caller cancelled meanwhile leaves
//! its turn unused, which errs on the carrier's side).

use std::time::Duration;

use sqlx::Row;

use super::{Store, StoreError};

/// The database's clock in microseconds.
const NOW_US: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint";

impl Store {
    /// Reserves the next turn on the budget `key`, whose calls leave `interval` apart, and
    /// answers how long to wait for it (zero: now). One statement, and each caller gets its
    /// own turn: waiters do not poll, so a crowd of them costs no more than one each.
    pub async fn take_budget(&self, key: &str, interval: Duration) -> Result<Duration, StoreError> {
        let interval_us = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX);
        let wait_us: i64 = sqlx::query(&format!(
            "INSERT INTO carrier_budgets AS b (key, tat_us) VALUES ($1, {NOW_US} + $2) \
             ON CONFLICT (key) DO UPDATE SET tat_us = GREATEST(b.tat_us, {NOW_US}) + $2 \
             RETURNING b.tat_us - $2 - {NOW_US} AS wait_us"
        ))
        .bind(key.to_string())
        .bind(interval_us)
        .fetch_one(&self.pool)
        .await?
        .try_get("wait_us")?;
        Ok(Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)))
    }

    /// Makes slots `0..count` of `account` exist and drops any above (a lowered limit).
    pub async fn ensure_slots(&self, account: &str, count: u32) -> Result<(), StoreError> {
        for slot in 0..i64::from(count) {
            sqlx::query(
                "INSERT INTO carrier_slots (account_id, slot, holder, until_us) \
                 VALUES ($1, $2, NULL, 0) ON CONFLICT (account_id, slot) DO NOTHING",
            )
            .bind(account.to_string())
            .bind(slot)
            .execute(&self.pool)
            .await?;
        }
        sqlx::query("DELETE FROM carrier_slots WHERE account_id = $1 AND slot >= $2")
            .bind(account.to_string())
            .bind(i64::from(count))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Holds a free slot of `account` for `holder` for at most `hold` (a slot whose holder's
    /// hold ran out is free: that replica died). None when every slot is held.
    pub async fn take_slot(
        &self,
        account: &str,
        holder: &str,
        hold: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let hold_us = i64::try_from(hold.as_micros()).unwrap_or(i64::MAX);
        let row = sqlx::query(&format!(
            "UPDATE carrier_slots SET holder = $2, until_us = {NOW_US} + $3 \
             WHERE account_id = $1 AND slot = (SELECT slot FROM carrier_slots \
               WHERE account_id = $1 AND (holder IS NULL OR until_us < {NOW_US}) \
               ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING slot"
        ))
        .bind(account.to_string())
        .bind(holder.to_string())
        .bind(hold_us)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get("slot"))
            .transpose()
            .map_err(Into::into)
    }

    /// Extends `holder`'s hold on a slot it still holds.
    pub async fn renew_slot(
        &self,
        account: &str,
        slot: i64,
        holder: &str,
        hold: Duration,
    ) -> Result<(), StoreError> {
        let hold_us = i64::try_from(hold.as_micros()).unwrap_or(i64::MAX);
        sqlx::query(&format!(
            "UPDATE carrier_slots SET until_us = {NOW_US} + $4 \
             WHERE account_id = $1 AND slot = $2 AND holder = $3"
        ))
        .bind(account.to_string())
        .bind(slot)
        .bind(holder.to_string())
        .bind(hold_us)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives a slot back (if `holder` still holds it).
    pub async fn release_slot(
        &self,
        account: &str,
        slot: i64,
        holder: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE carrier_slots SET holder = NULL, until_us = 0 \
             WHERE account_id = $1 AND slot = $2 AND holder = $3",
        )
        .bind(account.to_string())
        .bind(slot)
        .bind(holder.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The settings recorded for `account`, or records `settings` if there are none yet.
    /// Returns what the database holds after the call.
    pub async fn record_account_settings(
        &self,
        account: &str,
        settings: &str,
        now_ms: i64,
        replace: bool,
    ) -> Result<String, StoreError> {
        let sql = if replace {
            "INSERT INTO carrier_account_settings (account_id, settings, updated_ms) \
             VALUES ($1, $2, $3) ON CONFLICT (account_id) \
             DO UPDATE SET settings = excluded.settings, updated_ms = excluded.updated_ms"
        } else {
            "INSERT INTO carrier_account_settings (account_id, settings, updated_ms) \
             VALUES ($1, $2, $3) ON CONFLICT (account_id) DO NOTHING"
        };
        sqlx::query(sql)
            .bind(account.to_string())
            .bind(settings.to_string())
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query("SELECT settings FROM carrier_account_settings WHERE account_id = $1")
                .bind(account.to_string())
                .fetch_one(&self.pool)
                .await?
                .try_get("settings")?,
        )
    }
}
