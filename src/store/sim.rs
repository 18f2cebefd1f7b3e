//! The simulated carriers' own table, `sim_cards`: what each simulated platform believes about
//! a card. Its `carrier` column holds the simulated account's id: the default accounts are
//! named after their carriers, so simulated cards from before accounts stay where they were.
//! Kept apart from `cards` so that simgate and its simulators can disagree, as simgate and a
//! real carrier can.

use sqlx::Row;

use super::{db_to_u64, placeholders, u64_to_db, Store, StoreError};
use crate::carrier::{CarrierCard, OnboardCard, ServiceState};
use crate::domain::Iccid;

impl Store {
    /// Creates the cards the simulator does not know yet; known ones are left as they are.
    pub async fn sim_onboard(
        &self,
        account: &str,
        cards: &[OnboardCard],
        cycle_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for chunk in cards.chunks(2000) {
            let rows = (0..chunk.len())
                .map(|i| format!("({}, 0)", placeholders(self.backend, i * 5, 5)))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO sim_cards (carrier, iccid, state, cycle_usage_bytes, usage_cycle_ms, changes) VALUES {rows} \
                 ON CONFLICT (carrier, iccid) DO NOTHING"
            );
            let mut q = sqlx::query(&sql);
            for c in chunk {
                q = q
                    .bind(account)
                    .bind(c.iccid.as_str().to_string())
                    .bind(c.state.as_str())
                    .bind(u64_to_db(c.cycle_usage_bytes)?)
                    .bind(cycle_ms);
            }
            q.execute(&mut *tx).await?;
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
                (3..3 + chunk.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
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

    pub async fn sim_set_state(
        &self,
        account: &str,
        iccid: &Iccid,
        state: ServiceState,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sim_cards SET state = $1, changes = changes + 1 \
             WHERE carrier = $2 AND iccid = $3 AND state <> $1",
        )
        .bind(state.as_str())
        .bind(account)
        .bind(iccid.as_str().to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds `bytes` to every active card of the simulated account (a traffic profile). Returns how many.
    pub async fn sim_add_traffic(
        &self,
        account: &str,
        bytes: u64,
        cycle_ms: i64,
        session_at_ms: i64,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE sim_cards SET cycle_usage_bytes = \
               CASE WHEN usage_cycle_ms = $1 THEN cycle_usage_bytes + $2 ELSE $2 END, \
               usage_cycle_ms = $1, last_session_ms = $4 \
             WHERE carrier = $3 AND state = 'ACTIVE'",
        )
        .bind(cycle_ms)
        .bind(u64_to_db(bytes)?)
        .bind(account)
        .bind(session_at_ms)
        .execute(&self.pool)
        .await?
        .rows_affected())
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
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
