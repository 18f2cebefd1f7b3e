//! The simulated carriers' own table, `sim_cards`: what each simulated platform believes about
//! a card. Its `carrier` column holds the simulated account's id: the default accounts are
//! named after their carriers, so simulated cards from before accounts stay where they were.
//! Kept apart from `cards` so that simgate and its simulators can disagree, as simgate and a
//! real carrier can.

use sqlx::Row;

use super::{db_to_u64, numbered, placeholders, u64_to_db, Store, StoreError};
use crate::carrier::sim::{SimBindingRow, SimOrder};
use crate::carrier::{CarrierCard, OnboardCard, ServiceState};
use crate::domain::Iccid;

impl Store {
    /// Creates the cards the simulator does not know yet; known ones are left as they are.
    /// A card's usage at import is counted on `usage_day_ms` in the daily record (the batch
    /// usage calls): the day before the import, or the cycle's first day if later.
    pub async fn sim_onboard(
        &self,
        account: &str,
        cards: &[OnboardCard],
        cycle_ms: i64,
        usage_day_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for chunk in cards.chunks(2000) {
            let rows = (0..chunk.len())
                .map(|i| format!("({}, 0)", placeholders(self.backend, i * 6, 6)))
                .collect::<Vec<_>>()
                .join(", ");
            // A number already held by another card of the account fails the whole import
            // (the unique index), loudly: the simulated platform cannot name two cards by it.
            let sql = format!(
                "INSERT INTO sim_cards (carrier, iccid, state, cycle_usage_bytes, usage_cycle_ms, msisdn, changes) VALUES {rows} \
                 ON CONFLICT (carrier, iccid) DO NOTHING"
            );
            let mut q = sqlx::query(&sql);
            for c in chunk {
                q = q
                    .bind(account)
                    .bind(c.iccid.as_str().to_string())
                    .bind(c.state.as_str())
                    .bind(u64_to_db(c.cycle_usage_bytes)?)
                    .bind(cycle_ms)
                    .bind(
                        c.msisdn
                            .clone()
                            .unwrap_or_else(|| simulated_access_number(&c.iccid)),
                    );
            }
            q.execute(&mut *tx).await?;
        }
        for c in cards.iter().filter(|c| c.cycle_usage_bytes > 0) {
            // Only a card new to the simulator: an import retried the same day adds nothing.
            sqlx::query(
                "INSERT INTO sim_usage_days (account, iccid, day_ms, bytes) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (account, iccid, day_ms) DO NOTHING",
            )
            .bind(account)
            .bind(c.iccid.as_str().to_string())
            .bind(usage_day_ms)
            .bind(u64_to_db(c.cycle_usage_bytes)?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The simulator's card; usage recorded in an earlier cycle than `cycle_ms` counts as zero.
    pub async fn sim_card(
        &self,
        account: &str,
        iccid: &Iccid,
        cycle_ms: i64,
    ) -> Result<Option<CarrierCard>, StoreError> {
        Ok(self
            .sim_cards(account, std::slice::from_ref(iccid), cycle_ms)
            .await?
            .into_iter()
            .next())
    }

    /// Many simulated cards at once (unknown ICCIDs are left out), usage counted as in `sim_card`.
    pub async fn sim_cards(
        &self,
        account: &str,
        iccids: &[Iccid],
        cycle_ms: i64,
    ) -> Result<Vec<CarrierCard>, StoreError> {
        let mut out = Vec::with_capacity(iccids.len());
        for chunk in iccids.chunks(1000) {
            let sql = format!(
                "SELECT iccid, state, CASE WHEN usage_cycle_ms = $1 THEN cycle_usage_bytes ELSE 0 END \
                 AS cycle_usage_bytes, changes, last_session_ms FROM sim_cards WHERE carrier = $2 \
                 AND iccid IN ({})",
                numbered(3, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(cycle_ms).bind(account);
            for i in chunk {
                q = q.bind(i.as_str().to_string());
            }
            for r in q.fetch_all(&self.pool).await? {
                let state: String = r.try_get("state")?;
                out.push(CarrierCard {
                    iccid: Iccid::from_trusted(r.try_get::<String, _>("iccid")?),
                    state: ServiceState::parse(&state)
                        .ok_or_else(|| StoreError::Corrupt(format!("sim state {state:?}")))?,
                    cycle_usage_bytes: db_to_u64(r.try_get("cycle_usage_bytes")?)?,
                    usage_cycle_start: Some(super::millis_to_time(cycle_ms)?),
                    changes: db_to_u64(r.try_get("changes")?)?,
                    unknown: None,
                    last_session: crate::carrier::LastSession::from_seen(
                        r.try_get::<Option<i64>, _>("last_session_ms")?
                            .map(super::millis_to_time)
                            .transpose()?,
                    ),
                });
            }
        }
        Ok(out)
    }

    /// The access number the simulated account holds for a card (None: no such card, or one
    /// onboarded before numbers were kept).
    pub async fn sim_msisdn(
        &self,
        account: &str,
        iccid: &Iccid,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT msisdn FROM sim_cards WHERE carrier = $1 AND iccid = $2")
            .bind(account)
            .bind(iccid.as_str().to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<Option<String>, _>("msisdn")?,
            None => None,
        })
    }

    /// The card of the simulated account that an access number names.
    pub async fn sim_iccid_by_msisdn(
        &self,
        account: &str,
        msisdn: &str,
    ) -> Result<Option<Iccid>, StoreError> {
        let row = sqlx::query("SELECT iccid FROM sim_cards WHERE carrier = $1 AND msisdn = $2")
            .bind(account)
            .bind(msisdn)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get::<String, _>("iccid").map(Iccid::from_trusted))
            .transpose()
            .map_err(Into::into)
    }

    /// Sets a card's state by a change (simgate's, or an operator's at the carrier): counted in
    /// `changes` when the state moves. The state is then the change's own, no longer the daily
    /// check's (`carrier_stopped` clears), and any state but STOPPED ends a separation stop.
    pub async fn sim_set_state(
        &self,
        account: &str,
        iccid: &Iccid,
        state: ServiceState,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sim_cards SET state = $1, \
               changes = changes + CASE WHEN state <> $1 THEN 1 ELSE 0 END, \
               modified_ms = CASE WHEN state <> $1 THEN $4 ELSE modified_ms END, \
               carrier_stopped = 0, \
               device_stopped_ms = CASE WHEN $1 = 'STOPPED' THEN device_stopped_ms ELSE NULL END \
             WHERE carrier = $2 AND iccid = $3",
        )
        .bind(state.as_str())
        .bind(account)
        .bind(iccid.as_str().to_string())
        .bind(at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds `bytes` to every active card of the simulated account (a traffic profile). Returns how many.
    /// `by_day` is how the bytes fall on the days of the daily usage record.
    pub async fn sim_add_traffic(
        &self,
        account: &str,
        bytes: u64,
        cycle_ms: i64,
        session_at_ms: i64,
        by_day: &[(i64, u64)],
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE sim_cards SET cycle_usage_bytes = \
               CASE WHEN usage_cycle_ms = $1 THEN cycle_usage_bytes + $2 ELSE $2 END, \
               usage_cycle_ms = $1, last_session_ms = $4 \
             WHERE carrier = $3 AND state = 'ACTIVE'",
        )
        .bind(cycle_ms)
        .bind(u64_to_db(bytes)?)
        .bind(account)
        .bind(session_at_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        for (day_ms, day_bytes) in by_day.iter().filter(|(_, b)| *b > 0) {
            sqlx::query(
                "INSERT INTO sim_usage_days (account, iccid, day_ms, bytes) \
                 SELECT carrier, iccid, $1, $2 FROM sim_cards WHERE carrier = $3 AND state = 'ACTIVE' \
                 ON CONFLICT (account, iccid, day_ms) DO UPDATE SET bytes = sim_usage_days.bytes + excluded.bytes",
            )
            .bind(*day_ms)
            .bind(u64_to_db(*day_bytes)?)
            .bind(account)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Returns false when the simulator does not know the card.
    pub async fn sim_add_usage(
        &self,
        account: &str,
        iccid: &Iccid,
        bytes: u64,
        cycle_ms: i64,
        session_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE sim_cards SET cycle_usage_bytes = \
               CASE WHEN usage_cycle_ms = $1 THEN cycle_usage_bytes + $2 ELSE $2 END, \
               usage_cycle_ms = $1, last_session_ms = $5 \
             WHERE carrier = $3 AND iccid = $4",
        )
        .bind(cycle_ms)
        .bind(u64_to_db(bytes)?)
        .bind(account)
        .bind(iccid.as_str().to_string())
        .bind(session_at_ms)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            add_usage_day(
                &mut tx,
                account,
                iccid,
                crate::carrier::sim::day_start_ms(session_at_ms),
                bytes,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Data each card of `iccids` used from `from_ms` (inclusive) to `to_ms` (exclusive), by
    /// whole days (00:00 Beijing time): what the batch usage calls answer. A card with no usage
    /// in the range is absent.
    pub async fn sim_usage_between(
        &self,
        account: &str,
        iccids: &[Iccid],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<std::collections::HashMap<Iccid, u64>, StoreError> {
        let mut out = std::collections::HashMap::new();
        for chunk in iccids.chunks(500) {
            let sql = format!(
                "SELECT iccid, SUM(bytes) AS used FROM sim_usage_days WHERE account = $1 \
                 AND day_ms >= $2 AND day_ms < $3 AND iccid IN ({}) GROUP BY iccid",
                numbered(4, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(account).bind(from_ms).bind(to_ms);
            for i in chunk {
                q = q.bind(i.as_str().to_string());
            }
            for r in q.fetch_all(&self.pool).await? {
                out.insert(
                    Iccid::from_trusted(r.try_get::<String, _>("iccid")?),
                    db_to_u64(r.try_get::<i64, _>("used")?)?,
                );
            }
        }
        Ok(out)
    }

    /// Up to `limit` cards whose state changed after `since_ms` (card clock), oldest change
    /// first, skipping the first `offset`: what a platform's list of modified cards answers.
    pub async fn sim_modified_since(
        &self,
        account: &str,
        since_ms: i64,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<(Iccid, ServiceState, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT iccid, state, modified_ms FROM sim_cards WHERE carrier = $1 \
             AND modified_ms IS NOT NULL AND modified_ms > $2 \
             ORDER BY modified_ms, iccid LIMIT $3 OFFSET $4",
        )
        .bind(account)
        .bind(since_ms)
        .bind(i64::from(limit))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok((
                    Iccid::from_trusted(r.try_get::<String, _>("iccid")?),
                    ServiceState::parse(&state).ok_or_else(|| {
                        StoreError::Corrupt(format!("simulated card state {state:?}"))
                    })?,
                    r.try_get::<i64, _>("modified_ms")?,
                ))
            })
            .collect()
    }
}

/// Adds `bytes` to the card's usage of the day starting at `day_ms`.
async fn add_usage_day(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    account: &str,
    iccid: &Iccid,
    day_ms: i64,
    bytes: u64,
) -> Result<(), StoreError> {
    if bytes == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO sim_usage_days (account, iccid, day_ms, bytes) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (account, iccid, day_ms) DO UPDATE SET bytes = sim_usage_days.bytes + excluded.bytes",
    )
    .bind(account)
    .bind(iccid.as_str().to_string())
    .bind(day_ms)
    .bind(u64_to_db(bytes)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const ORDER_COLUMNS: &str =
    "order_num, seq, iccid, action, params, created_ms, completes_ms, status, job_id";

fn order_of(r: &sqlx::any::AnyRow) -> Result<SimOrder, StoreError> {
    Ok(SimOrder {
        order_num: r.try_get("order_num")?,
        seq: r.try_get("seq")?,
        iccid: Iccid::from_trusted(r.try_get::<String, _>("iccid")?),
        action: r.try_get("action")?,
        params: r.try_get("params")?,
        created_ms: r.try_get("created_ms")?,
        completes_ms: r.try_get("completes_ms")?,
        status: r.try_get("status")?,
        job_id: r.try_get("job_id")?,
    })
}

/// Orders, repeat windows, binding and daily checks of the simulated carriers (migration 0012).
impl Store {
    /// A card's binding row; None: the simulated account does not know the card.
    pub async fn sim_binding(
        &self,
        account: &str,
        iccid: &Iccid,
    ) -> Result<Option<SimBindingRow>, StoreError> {
        let row = sqlx::query(
            "SELECT state, bound_imei, device_imei, device_since_ms, device_stopped_ms, \
             carrier_stopped, rebound_ms FROM sim_cards WHERE carrier = $1 AND iccid = $2",
        )
        .bind(account)
        .bind(iccid.as_str().to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let state: String = r.try_get("state")?;
        Ok(Some(SimBindingRow {
            state: ServiceState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("sim state {state:?}")))?,
            bound_imei: r.try_get("bound_imei")?,
            device_imei: r.try_get("device_imei")?,
            device_since_ms: r.try_get("device_since_ms")?,
            device_stopped_ms: r.try_get("device_stopped_ms")?,
            carrier_stopped: r.try_get::<i64, _>("carrier_stopped")? != 0,
            rebound_ms: r.try_get("rebound_ms")?,
        }))
    }

    /// Puts the card in device `imei` (`device_since_ms` moves only when the device changes);
    /// with `bind`, binds it to that device too. False: no such card.
    pub async fn sim_put_in_device(
        &self,
        account: &str,
        iccid: &Iccid,
        imei: &str,
        bind: bool,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE sim_cards SET \
               device_since_ms = CASE WHEN device_imei IS NULL OR device_imei <> $1 THEN $2 \
                 ELSE device_since_ms END, \
               device_imei = $1{} \
             WHERE carrier = $3 AND iccid = $4",
            if bind { ", bound_imei = $1" } else { "" }
        );
        let done = sqlx::query(&sql)
            .bind(imei)
            .bind(at_ms)
            .bind(account)
            .bind(iccid.as_str().to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A rebind applied: the card is bound to `bound` (None: unbound) since `at_ms`.
    pub async fn sim_rebind(
        &self,
        account: &str,
        iccid: &Iccid,
        bound: Option<&str>,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sim_cards SET bound_imei = $1, rebound_ms = $2 WHERE carrier = $3 AND iccid = $4",
        )
        .bind(bound.map(str::to_string))
        .bind(at_ms)
        .bind(account)
        .bind(iccid.as_str().to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The daily check at `at_ms`, over every card of the account, in the carrier's own name
    /// (nothing here counts in `changes`). A card rebound since its separation stop (or at its
    /// very time, after it) and no
    /// longer separated has the stop lifted: with `lift_to_active`, a card the check itself
    /// stopped becomes ACTIVE again; otherwise only the flag clears and the card stays STOPPED,
    /// now as if stopped by a change (a restore brings it back). Then a bound card in another
    /// device, not yet stopped for it, is stopped (a card already STOPPED stays so, now for this
    /// reason too; a CANCELLED one is left alone). Returns how many were lifted and how many stopped.
    pub async fn sim_daily_check(
        &self,
        account: &str,
        at_ms: i64,
        lift_to_active: bool,
    ) -> Result<(u64, u64), StoreError> {
        let mut tx = self.pool.begin().await?;
        let lift_state = if lift_to_active {
            "CASE WHEN carrier_stopped = 1 AND state = 'STOPPED' THEN 'ACTIVE' ELSE state END"
        } else {
            "state"
        };
        let lifted = sqlx::query(&format!(
            "UPDATE sim_cards SET modified_ms = CASE WHEN {lift_state} <> state THEN $2 ELSE modified_ms END, \
               state = {lift_state}, carrier_stopped = 0, \
               device_stopped_ms = NULL \
             WHERE carrier = $1 AND device_stopped_ms IS NOT NULL \
               AND rebound_ms IS NOT NULL AND rebound_ms >= device_stopped_ms \
               AND (bound_imei IS NULL OR device_imei IS NULL OR bound_imei = device_imei)"
        ))
        .bind(account)
        .bind(at_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let stopped = sqlx::query(
            "UPDATE sim_cards SET device_stopped_ms = $1, \
               modified_ms = CASE WHEN state = 'ACTIVE' THEN $1 ELSE modified_ms END, \
               carrier_stopped = CASE WHEN state = 'ACTIVE' THEN 1 ELSE carrier_stopped END, \
               state = CASE WHEN state = 'ACTIVE' THEN 'STOPPED' ELSE state END \
             WHERE carrier = $2 AND device_stopped_ms IS NULL AND state <> 'CANCELLED' \
               AND bound_imei IS NOT NULL AND device_imei IS NOT NULL \
               AND bound_imei <> device_imei",
        )
        .bind(at_ms)
        .bind(account)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok((lifted, stopped))
    }

    /// Up to when the account's daily checks have run (the time of the last one); None: never.
    pub async fn sim_checked_until(&self, account: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT checked_ms FROM sim_accounts WHERE account = $1")
            .bind(account)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get::<i64, _>("checked_ms"))
            .transpose()
            .map_err(Into::into)
    }

    pub async fn sim_set_checked(&self, account: &str, checked_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sim_accounts (account, checked_ms) VALUES ($1, $2) \
             ON CONFLICT (account) DO UPDATE SET checked_ms = excluded.checked_ms",
        )
        .bind(account)
        .bind(checked_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The next order sequence number of the account (1 for its first).
    pub async fn sim_next_order_seq(&self, account: &str) -> Result<i64, StoreError> {
        let r = sqlx::query(
            "SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM sim_orders WHERE account = $1",
        )
        .bind(account)
        .fetch_one(&self.pool)
        .await?;
        Ok(r.try_get::<i64, _>("next")?)
    }

    pub async fn sim_insert_order(&self, account: &str, o: &SimOrder) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO sim_orders (account, {ORDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(account)
        .bind(o.order_num.clone())
        .bind(o.seq)
        .bind(o.iccid.as_str().to_string())
        .bind(o.action.clone())
        .bind(o.params.clone())
        .bind(o.created_ms)
        .bind(o.completes_ms)
        .bind(o.status.clone())
        .bind(o.job_id.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn sim_order(
        &self,
        account: &str,
        order_num: &str,
    ) -> Result<Option<SimOrder>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM sim_orders WHERE account = $1 AND order_num = $2"
        ))
        .bind(account)
        .bind(order_num)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(order_of).transpose()
    }

    /// Open orders due by `until_ms`, in the order they complete.
    pub async fn sim_due_orders(
        &self,
        account: &str,
        until_ms: i64,
    ) -> Result<Vec<SimOrder>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM sim_orders WHERE account = $1 AND status = 'inProgress' \
             AND completes_ms <= $2 ORDER BY completes_ms, seq"
        ))
        .bind(account)
        .bind(until_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(order_of).collect()
    }

    /// Ends an open order with `status`. False: it was not open (already ended).
    pub async fn sim_end_order(
        &self,
        account: &str,
        order_num: &str,
        status: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sim_orders SET status = $1 WHERE account = $2 AND order_num = $3 \
             AND status = 'inProgress'",
        )
        .bind(status)
        .bind(account)
        .bind(order_num)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The orders of batch job `job_id`.
    pub async fn sim_job_orders(
        &self,
        account: &str,
        job_id: &str,
    ) -> Result<Vec<SimOrder>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM sim_orders WHERE account = $1 AND job_id = $2 ORDER BY seq"
        ))
        .bind(account)
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(order_of).collect()
    }

    /// When the card's latest accepted change was made (its repeat window starts then).
    pub async fn sim_last_change_ms(
        &self,
        account: &str,
        iccid: &Iccid,
    ) -> Result<Option<i64>, StoreError> {
        let r = sqlx::query(
            "SELECT MAX(created_ms) AS last FROM sim_orders WHERE account = $1 AND iccid = $2 \
             AND status <> 'refused'",
        )
        .bind(account)
        .bind(iccid.as_str().to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(r.try_get::<Option<i64>, _>("last")?)
    }
}

/// The number a simulated platform gives a card imported without one: `1064` (the IoT range of
/// identifiers.md) and the ICCID's last nine digits, so a fleet of consecutive ICCIDs gets
/// distinct numbers and a re-import the same ones.
pub fn simulated_access_number(iccid: &Iccid) -> String {
    let digits: Vec<char> = iccid
        .as_str()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let tail: String = digits[digits.len().saturating_sub(9)..].iter().collect();
    format!("1064{tail:0>9}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_numbers_are_thirteen_digits_and_distinct_for_consecutive_iccids() {
        let a = simulated_access_number(&Iccid::from_trusted("89860311112222333344".into()));
        let b = simulated_access_number(&Iccid::from_trusted("89860311112222333345".into()));
        assert_eq!(a, "1064222333344");
        assert_ne!(a, b);
        assert!(crate::domain::Msisdn::parse(&a).is_ok());
    }
}
