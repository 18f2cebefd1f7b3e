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
