//! The card use cases: import and assignment, reads, the requested changes (each a pure rule
//! handed to the change path), diagnosis, history and usage.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use crate::carrier::{AccountChoice, CarrierError, LastSession, OnboardCard, ServiceState};
use crate::domain::diagnosis::{self, Diagnosis};
use crate::domain::lifecycle;
use crate::domain::rules::{self, NewCard};
use crate::domain::{AccountId, Card, Fen, Iccid, Msisdn, RuleViolation};
use crate::store::{CardFilter, StoreError};

use super::{
    result_name, Caller, CardIdem, CardService, FieldViolation, Idem, Result, ServiceError,
};

/// A non-fatal finding about one imported row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportWarning {
    pub row: usize,
    pub iccid: String,
    pub message: String,
}

/// Usage of the current billing cycle against the plan's quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    pub iccid: Iccid,
    pub cycle_start: DateTime<Utc>,
    pub cycle_end: DateTime<Utc>,
    pub used_bytes: u64,
    pub quota_bytes: u64,
}

impl CardService {
    /// Registers validated cards, all or none. Each card's starting state is derived from its
    /// facts (balance, real-name, usage, validity) under its carrier's policy.
    pub async fn import(
        &self,
        rows: Vec<NewCard>,
        caller: &Caller,
        idem: Option<&Idem<'_, (usize, Vec<ImportWarning>)>>,
    ) -> Result<(usize, Vec<ImportWarning>)> {
        let now = self.now();
        let result = self.import_rows(rows, caller, idem, now).await;
        if let Err(e) = &result {
            self.audit_failure(caller, None, None, e).await;
        }
        result
    }

    async fn import_rows(
        &self,
        rows: Vec<NewCard>,
        caller: &Caller,
        idem: Option<&Idem<'_, (usize, Vec<ImportWarning>)>>,
        now: DateTime<Utc>,
    ) -> Result<(usize, Vec<ImportWarning>)> {
        let rows = self.choose_accounts(rows)?;
        let mut cards = Vec::with_capacity(rows.len());
        for row in rows {
            let policy = self.policy(row.carrier)?;
            cards.push(rules::open_card(row, policy, now));
        }
        // Refuse duplicates before any carrier hears of the import.
        if let Err(e) = self.store.ensure_new(&cards).await {
            return Err(duplicate_row(&cards, e));
        }
        let mut by_account: BTreeMap<&AccountId, Vec<OnboardCard>> = BTreeMap::new();
        for c in &cards {
            by_account.entry(&c.account).or_default().push(OnboardCard {
                iccid: c.iccid.clone(),
                state: service_state(c),
                cycle_usage_bytes: c.cycle_usage_bytes,
                msisdn: c.msisdn.as_ref().map(|m| m.as_str().to_string()),
            });
        }
        // Carriers first: onboarding is idempotent, so a store failure after it leaves nothing
        // that a retried import would trip over.
        for (id, onboard) in &by_account {
            let carrier = self.carrier(id)?;
            carrier
                .onboard(onboard)
                .await
                .map_err(|error| ServiceError::Carrier {
                    carrier: carrier.id(),
                    error,
                })?;
        }
        // After onboarding: a platform that names cards by number checks or learns each
        // card's there (a simulator creates it first), so the look-up below costs no call.
        if self.look_up_msisdns(&mut cards).await? {
            if let Err(e) = self.store.ensure_new(&cards).await {
                return Err(duplicate_row(&cards, e));
            }
        }
        let customers: std::collections::BTreeSet<&str> =
            cards.iter().map(|c| c.customer_id.as_str()).collect();
        let audit = caller.audit(
            self.wall_now(),
            None,
            (customers.len() == 1).then(|| cards[0].customer_id.as_str()),
            "OK",
            format!("imported {} cards", cards.len()),
        );
        let warnings: Vec<ImportWarning> = cards
            .iter()
            .enumerate()
            .flat_map(|(row, c)| {
                c.warnings.iter().map(move |w| ImportWarning {
                    row,
                    iccid: c.iccid.to_string(),
                    message: w.clone(),
                })
            })
            .collect();
        let outcome = (cards.len(), warnings);
        let answer = idem.map(|i| i.record(caller, &outcome, now));
        match self
            .store
            .insert_cards(&cards, Some(&audit), answer.as_ref())
            .await
        {
            Ok(()) => {}
            Err(StoreError::Duplicate {
                field: "request_id",
                ..
            }) => return Err(ServiceError::Conflict),
            Err(e) => return Err(duplicate_row(&cards, e)),
        }
        info!(count = cards.len(), "cards imported");
        Ok(outcome)
    }

    /// Each row's carrier account: the one it names, which must be configured and of the
    /// row's carrier, or the carrier's only account. Every row is checked before anything is
    /// stored or sent, and every wrong row is named.
    fn choose_accounts(&self, mut rows: Vec<NewCard>) -> Result<Vec<NewCard>> {
        let mut violations = Vec::new();
        for (i, row) in rows.iter_mut().enumerate() {
            let field = format!("cards[{i}].account_id");
            match &row.account {
                Some(a) => match self.carriers.account(a) {
                    None => violations.push(FieldViolation::new(
                        field,
                        format!("no carrier account {a} is configured"),
                    )),
                    Some(acc) if acc.carrier != row.carrier => {
                        violations.push(FieldViolation::new(
                            field,
                            format!(
                                "account {a} is a {} account, not {}",
                                acc.carrier.display_name(),
                                row.carrier.display_name()
                            ),
                        ))
                    }
                    Some(_) => {}
                },
                None => match self.carriers.sole_account(row.carrier) {
                    Ok(a) => row.account = Some(a.clone()),
                    // The deployment does not use this carrier at all.
                    Err(AccountChoice::None) => {
                        return Err(ServiceError::CarrierNotConfigured(row.carrier))
                    }
                    Err(AccountChoice::Several(ids)) => violations.push(FieldViolation::new(
                        field,
                        format!(
                            "{} has several accounts ({}): name the card's account",
                            row.carrier.display_name(),
                            ids.iter()
                                .map(|a| a.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )),
                },
            }
        }
        if violations.is_empty() {
            Ok(rows)
        } else {
            Err(ServiceError::InvalidArgument(violations))
        }
    }

    /// The access number of every card without one whose account names cards by it, asked
    /// from the platform once, before anything is stored (so it is stored with the card).
    /// Returns whether any was found (the import checks the new numbers for duplicates).
    async fn look_up_msisdns(&self, cards: &mut [Card]) -> Result<bool> {
        let mut found_any = false;
        for (i, c) in cards.iter_mut().enumerate() {
            if c.msisdn.is_some() {
                continue;
            }
            let carrier = self.carrier(&c.account)?;
            if !carrier.addresses_by_msisdn() {
                continue;
            }
            let found =
                carrier
                    .msisdn_of(&c.iccid)
                    .await
                    .map_err(|error| ServiceError::Carrier {
                        carrier: carrier.id(),
                        error,
                    })?;
            let field = format!("cards[{i}].msisdn");
            let raw = found.ok_or_else(|| {
                ServiceError::InvalidArgument(vec![FieldViolation::new(
                    field.clone(),
                    format!(
                        "account {} names cards by access number and has none for {}: give the msisdn",
                        c.account, c.iccid
                    ),
                )])
            })?;
            let msisdn = Msisdn::parse(&raw).map_err(|e| {
                ServiceError::InvalidArgument(vec![FieldViolation::new(
                    field,
                    format!("the platform's access number {raw:?} {e}"),
                )])
            })?;
            c.msisdn = Some(msisdn);
            found_any = true;
        }
        if !found_any {
            // The given numbers were checked for duplicates with the request.
            return Ok(false);
        }
        // Two cards the platform gives one number would be one card to it.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, c) in cards.iter().enumerate() {
            if let Some(m) = &c.msisdn {
                if let Some(first) = seen.insert(m.as_str(), i) {
                    return Err(ServiceError::InvalidArgument(vec![FieldViolation::new(
                        format!("cards[{i}].msisdn"),
                        format!("{} is also the access number of cards[{first}]", m.as_str()),
                    )]));
                }
            }
        }
        Ok(true)
    }

    /// AssignCards: every card to `customer` (or its spare mark set), all or nothing, in one
    /// transaction with its events, audit record and idempotent answer. Returns how many cards
    /// changed. The caller must be the reseller (checked by the API's permission).
    pub async fn assign(
        &self,
        iccids: &[Iccid],
        customer: &str,
        spare: bool,
        caller: &Caller,
        idem: Option<&Idem<'_, usize>>,
    ) -> Result<usize> {
        let now = self.now();
        let result = self
            .assign_once(iccids, customer, spare, caller, idem, now)
            .await;
        // A concurrent change to one of the cards: read them again and decide again.
        let result = match result {
            Err(ServiceError::Conflict) => {
                self.assign_once(iccids, customer, spare, caller, idem, now)
                    .await
            }
            other => other,
        };
        if let Err(e) = &result {
            self.audit_failure(caller, None, Some(customer), e).await;
        }
        result
    }

    async fn assign_once(
        &self,
        iccids: &[Iccid],
        customer: &str,
        spare: bool,
        caller: &Caller,
        idem: Option<&Idem<'_, usize>>,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        let mut changes = Vec::new();
        let mut missing = Vec::new();
        for iccid in iccids {
            let Some(card) = self.store.get_card(iccid).await? else {
                missing.push(iccid.to_string());
                continue;
            };
            if let Some(p) = &card.pending {
                return Err(RuleViolation::ChangePending(p.action).into());
            }
            let t = rules::assign(&card, customer, spare, now)?;
            if t.changed {
                changes.push((card, t.card, t.events));
            }
        }
        if !missing.is_empty() {
            let total = missing.len();
            missing.truncate(5);
            return Err(ServiceError::CardsNotFound {
                first: missing,
                total,
            });
        }
        let audit = caller.audit(
            self.wall_now(),
            (iccids.len() == 1).then(|| &iccids[0]),
            Some(customer),
            "OK",
            format!(
                "{} of {} cards assigned to {customer}{}",
                changes.len(),
                iccids.len(),
                if spare { " as spares" } else { "" }
            ),
        );
        let answer = idem.map(|i| i.record(caller, &changes.len(), now));
        self.store
            .assign_cards(&changes, &audit, answer.as_ref())
            .await?;
        info!(customer, cards = changes.len(), spare, "cards assigned");
        Ok(changes.len())
    }

    /// The card, whoever asks (engine, simulator).
    pub(super) async fn load(&self, iccid: &Iccid) -> Result<Card> {
        self.store
            .get_card(iccid)
            .await?
            .ok_or_else(|| ServiceError::NotFound(iccid.to_string()))
    }

    /// The card, if the caller may see it: another customer's card is NOT_FOUND, exactly like
    /// one that does not exist.
    pub async fn get(&self, iccid: &Iccid, caller: &Caller) -> Result<Card> {
        let card = self.load(iccid).await?;
        if caller.principal.sees(&card.customer_id) {
            Ok(card)
        } else {
            Err(ServiceError::NotFound(iccid.to_string()))
        }
    }

    /// Lists cards; a customer's principal sees only its own customer's, whatever it asks for.
    pub async fn list(
        &self,
        filter: &CardFilter,
        after: Option<&str>,
        limit: u32,
        caller: &Caller,
    ) -> Result<Vec<Card>> {
        if let Some(own) = &caller.principal.customer_id {
            if filter.customer_id.as_ref().is_some_and(|c| c != own) {
                return Ok(Vec::new());
            }
            let mut scoped = filter.clone();
            scoped.customer_id = Some(own.clone());
            return Ok(self.store.list_cards(&scoped, after, limit).await?);
        }
        // Pool ids are per customer: a pool id alone names no pool for a reseller key.
        if filter.pool_id.is_some() && filter.customer_id.is_none() {
            return Err(ServiceError::InvalidArgument(vec![FieldViolation::new(
                "customer_id",
                "is required with pool_id: pool ids are per customer",
            )]));
        }
        Ok(self.store.list_cards(filter, after, limit).await?)
    }

    pub async fn suspend(
        &self,
        iccid: &Iccid,
        caller: &Caller,
        idem: CardIdem<'_, '_>,
    ) -> Result<Card> {
        self.change(iccid, caller, idem, |c, _, now| rules::suspend(c, now))
            .await
    }

    pub async fn resume(
        &self,
        iccid: &Iccid,
        caller: &Caller,
        idem: CardIdem<'_, '_>,
    ) -> Result<Card> {
        self.change(iccid, caller, idem, |c, _, now| rules::resume(c, now))
            .await
    }

    /// Returns the card before and after, so the caller sees the balance move.
    pub async fn recharge(
        &self,
        iccid: &Iccid,
        amount: Fen,
        caller: &Caller,
        idem: CardIdem<'_, '_>,
    ) -> Result<(Card, Card)> {
        self.mutate(iccid, caller, idem, |c, policy, now| {
            rules::recharge(c, policy, amount, now)
        })
        .await
    }

    pub async fn renew(
        &self,
        iccid: &Iccid,
        months: u32,
        caller: &Caller,
        idem: CardIdem<'_, '_>,
    ) -> Result<Card> {
        self.change(iccid, caller, idem, |c, policy, now| {
            rules::renew(c, policy, months, now)
        })
        .await
    }

    /// 机卡重绑: changes the card's machine-card binding at its carrier, as a journaled order.
    /// Refused with REBIND_NOT_SUPPORTED before anything is written where the card's platform
    /// has no binding call for the mode.
    pub async fn rebind(
        &self,
        iccid: &Iccid,
        caller: &Caller,
        idem: CardIdem<'_, '_>,
        rebind: crate::carrier::Rebind,
    ) -> Result<Card> {
        let card = self.get(iccid, caller).await?;
        let account = self.carriers.account(&card.account);
        let supported = account
            .map(|a| a.adapter.rebind_modes())
            .unwrap_or_default();
        if !supported.contains(&rebind.mode()) {
            let e = ServiceError::Rule(RuleViolation::RebindNotSupported {
                platform: account
                    .map(|a| a.platform.as_str().to_string())
                    .unwrap_or_else(|| card.account.to_string()),
                mode: rebind.mode(),
                supported,
            });
            self.audit_failure(caller, Some(iccid), Some(&card.customer_id), &e)
                .await;
            return Err(e);
        }
        self.mutate_with(
            iccid,
            caller,
            idem,
            |c, _, now| rules::rebind(c, now),
            Some(&rebind),
        )
        .await
        .map(|(_, after)| after)
    }

    /// The carrier orders of the journal, newest first, with ids below `before` (0: from the
    /// newest). A customer's principal sees its own cards' orders only.
    pub async fn list_orders(
        &self,
        filter: &crate::store::OrderFilter,
        before: i64,
        limit: u32,
        caller: &Caller,
    ) -> Result<Vec<crate::store::CarrierOp>> {
        let mut filter = filter.clone();
        if let Some(own) = &caller.principal.customer_id {
            filter.customer = Some(own.clone());
        }
        Ok(self.store.list_orders(&filter, before, limit).await?)
    }

    pub async fn verify_real_name(
        &self,
        iccid: &Iccid,
        caller: &Caller,
        idem: CardIdem<'_, '_>,
    ) -> Result<Card> {
        self.change(iccid, caller, idem, |c, _, now| {
            rules::verify_real_name(c, now)
        })
        .await
    }

    /// Records a refused call; the audit must not fail the answer, so a failure is only logged.
    pub(super) async fn audit_failure(
        &self,
        caller: &Caller,
        iccid: Option<&Iccid>,
        customer: Option<&str>,
        e: &ServiceError,
    ) {
        let record = caller.audit(
            self.wall_now(),
            iccid,
            customer,
            &result_name(e),
            e.to_string(),
        );
        if let Err(err) = self.store.record_audit(&record).await {
            warn!(error = %err, method = caller.method, "could not write the audit record of a refused call");
        }
    }

    /// Diagnoses the card as it is now (due transitions applied in memory, nothing stored) from
    /// what its carrier reports and its recent history.
    pub async fn diagnose(
        &self,
        iccid: &Iccid,
        lang: diagnosis::Lang,
        caller: &Caller,
    ) -> Result<(Diagnosis, DateTime<Utc>)> {
        let card = self.get(iccid, caller).await?;
        let carrier = self.carrier(&card.account)?;
        let now = self.now();
        let settled = lifecycle::advance(&card, carrier.policy(), now);
        let at_carrier = match carrier.card(iccid).await {
            Ok(c) => Some(c),
            // A pending change is the answer whatever the carrier says: reads never wait on it.
            Err(_) if card.pending.is_some() => None,
            Err(error) => {
                return Err(ServiceError::Carrier {
                    carrier: card.carrier,
                    error,
                })
            }
        };
        let mut history: Vec<diagnosis::HistoryEntry> = self
            .store
            .recent_card_events(iccid, 200)
            .await?
            .into_iter()
            .map(|e| diagnosis::HistoryEntry {
                kind: e.kind,
                at: e.at,
                amount: e.amount,
            })
            .collect();
        history.extend(settled.events.iter().map(|e| diagnosis::HistoryEntry {
            kind: e.kind.to_string(),
            at: e.at,
            amount: e.amount,
        }));
        // A platform whose card read leaves the session out (Control Center: sessionInfo is a
        // call of its own) is asked for it here, the only place that needs it. A failed session
        // read leaves it unknown rather than failing the whole diagnosis.
        let last_session = match &at_carrier {
            Some(c) if c.last_session == LastSession::Unknown && carrier.reads_session_apart() => {
                carrier.last_session(iccid).await.unwrap_or_else(|e| {
                    debug!(%iccid, error = %e, "last session not read; diagnosed as unknown");
                    LastSession::Unknown
                })
            }
            Some(c) => c.last_session,
            None => LastSession::Unknown,
        };
        // For a card stopped for 机卡分离: the device it is in, where the platform reports it.
        let device_imei = if settled
            .card
            .stop_reasons
            .contains(crate::domain::StopReason::DeviceMismatch)
        {
            match carrier.binding(iccid).await {
                Ok(b) => b.and_then(|b| b.imei),
                Err(e) => {
                    debug!(%iccid, error = %e, "binding not read; diagnosed without the device");
                    None
                }
            }
        } else {
            None
        };
        let mut facts = match &at_carrier {
            // The carrier answered in a form simgate cannot read: no state, the stored usage.
            Some(at_carrier) if at_carrier.unknown.is_some() => diagnosis::CarrierFacts {
                cycle_usage_bytes: settled.card.cycle_usage_bytes,
                last_session,
                service_state: None,
                carrier_unknown: at_carrier.unknown.clone(),
                ..Default::default()
            },
            Some(at_carrier) => diagnosis::CarrierFacts {
                // Usage the carrier counted in an earlier cycle is not this cycle's.
                cycle_usage_bytes: at_carrier.cycle_usage_bytes,
                last_session,
                // Compared with the card only when time has not moved its carrier state since
                // it was stored (a due stop the engine has yet to send is not drift).
                service_state: (card.expected_carrier_state()
                    == settled.card.expected_carrier_state())
                .then_some(at_carrier.state.as_str()),
                carrier_unknown: None,
                ..Default::default()
            },
            None => diagnosis::CarrierFacts {
                cycle_usage_bytes: settled.card.cycle_usage_bytes,
                ..Default::default()
            },
        };
        facts.rebind_modes = carrier.rebind_modes();
        facts.device_imei = device_imei;
        // A pooled card goes by its pool (of its own customer): the pool's usage and capacity.
        let pool = match &settled.card.pool {
            Some(id) => self.pool_facts(&settled.card.customer_id, id).await?,
            None => None,
        };
        Ok((
            diagnosis::diagnose(
                &settled.card,
                carrier.policy(),
                &facts,
                pool.as_ref(),
                &history,
                now,
                lang,
            ),
            now,
        ))
    }

    /// A page of the card's history, oldest first.
    pub async fn events(
        &self,
        iccid: &Iccid,
        after_id: i64,
        limit: u32,
        caller: &Caller,
    ) -> Result<Vec<crate::store::EventRow>> {
        self.get(iccid, caller).await?;
        Ok(self.store.card_events_page(iccid, after_id, limit).await?)
    }

    /// Reads the cycle's usage from the carrier, the source of truth for traffic.
    pub async fn usage(&self, iccid: &Iccid, caller: &Caller) -> Result<UsageReport> {
        let card = self.get(iccid, caller).await?;
        let carrier = self.carrier(&card.account)?;
        let at_carrier = carrier
            .card(iccid)
            .await
            .map_err(|error| ServiceError::Carrier {
                carrier: card.carrier,
                error,
            })?;
        // An answer whose usage cannot be read is no usage: unavailable, never 0.
        if let Some(why) = &at_carrier.unknown {
            return Err(ServiceError::Carrier {
                carrier: card.carrier,
                error: CarrierError::Transient(format!("unknown at carrier: {why}")),
            });
        }
        let (cycle_start, cycle_end) = carrier.policy().cycle_bounds(self.now());
        Ok(UsageReport {
            iccid: card.iccid,
            cycle_start,
            cycle_end,
            used_bytes: at_carrier.cycle_usage_bytes,
            quota_bytes: card.plan.monthly_quota_bytes,
        })
    }

    /// Reads the card's cycle usage from its carrier and applies what it means (test gift used
    /// up, billing started, over quota, alerts), then settles its pool. Returns the card as stored
    /// afterwards. A reading older than one already applied changes nothing: usage never goes
    /// down within a cycle.
    pub async fn sync_usage(&self, iccid: &Iccid) -> Result<Card> {
        let before = self.load(iccid).await?;
        let carrier = self.carrier(&before.account)?.clone();
        let at_carrier = carrier
            .card(iccid)
            .await
            .map_err(|error| ServiceError::Carrier {
                carrier: carrier.id(),
                error,
            })?;
        self.check_reading(&before, &at_carrier).await?;
        // An unreadable answer applies no usage (usage_transition leaves it out).
        let card = self.apply_reading(iccid, &at_carrier).await?;
        match &card.pool {
            Some(pool) => {
                // The card's pool is its own customer's pool of that id.
                self.settle_pool(&card.customer_id, pool, crate::domain::Cause::Usage)
                    .await?;
                self.load(iccid).await
            }
            None => Ok(card),
        }
    }
}

/// Names the import row a duplicate ICCID or MSISDN came from.
fn duplicate_row(cards: &[Card], e: StoreError) -> ServiceError {
    match e {
        StoreError::Duplicate { field, value } => {
            let row = cards.iter().position(|c| {
                c.iccid.as_str() == value || c.msisdn.as_ref().is_some_and(|m| m.as_str() == value)
            });
            let field = match row {
                Some(i) => format!("cards[{i}].{field}"),
                None => field.to_string(),
            };
            ServiceError::AlreadyExists { field, value }
        }
        other => other.into(),
    }
}

fn service_state(card: &Card) -> ServiceState {
    if card.cancelled {
        ServiceState::Cancelled
    } else if card.is_online() {
        ServiceState::Active
    } else {
        ServiceState::Stopped
    }
}
