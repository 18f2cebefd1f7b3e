//! Usage monitoring use cases: pools and their members, alert rules, the scheduled usage sync
//! and the daily usage history. Pools are settled level-triggered: whatever wrote last, a settle
//! compares the pool's usage with its capacity and brings every member to match, so a crash
//! between a pool's change and its members' is repaired by the next settle.
//!
//! The usage sync reads each account in its platform's batch size (`Carrier::cards`); an account
//! whose platform lists its modified cards (Control Center) is read in full once, then from the
//! list of cards modified since its last full pass (a mark per account in `carrier_sweeps`),
//! asking only the cards active at the carrier for their usage.
//!
//! Pool ids are per customer: every pool operation resolves its pool by (customer, pool id), so
//! a customer never learns whether another customer has a pool of some id.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use super::{Caller, CardService, FieldViolation, Idem, Result, ServiceError};
use crate::carrier::{CarrierCard, ServiceState};
use crate::domain::alerts::{self, AlertRules};
use crate::domain::event;
use crate::domain::lifecycle;
use crate::domain::pool::{self, Pool};
use crate::domain::rules;
use crate::domain::{
    AccountId, Card, CarrierId, Cause, Iccid, RuleViolation, StopReason, StopReasons, Transition,
};
use crate::store::{DailyUsage, IdempotencyRecord, PoolFilter, StoreError};

/// How long a customer's alert rules read from the store are used before being read again.
/// Rules set through this process take effect at once.
const RULES_TTL: Duration = Duration::from_secs(1);

/// Cards in one AddCardsToPool / RemoveCardsFromPool call.
pub const MAX_POOL_CARDS: usize = 1000;

#[derive(Default)]
pub struct RulesCache {
    by_customer: Mutex<HashMap<String, (Instant, AlertRules)>>,
}

impl RulesCache {
    fn get(&self, customer: &str) -> Option<AlertRules> {
        let map = self.by_customer.lock().unwrap_or_else(|e| e.into_inner());
        map.get(customer)
            .filter(|(at, _)| at.elapsed() < RULES_TTL)
            .map(|(_, r)| r.clone())
    }

    fn put(&self, customer: &str, rules: AlertRules) {
        let mut map = self.by_customer.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a reseller has thousands of customers at most; drop stale entries when big.
        if map.len() > 10_000 {
            map.retain(|_, (at, _)| at.elapsed() < RULES_TTL);
        }
        map.insert(customer.to_string(), (Instant::now(), rules));
    }
}

/// A pool to create, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPool {
    pub id: String,
    pub name: String,
    pub carrier: CarrierId,
    pub customer_id: String,
    pub quota_bytes: u64,
    pub auto_suspend: bool,
}

/// A pool with its derived usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolView {
    pub pool: Pool,
    pub used_bytes: u64,
    pub members: u64,
}

/// What one usage sync pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    /// Cards whose usage was read from a carrier.
    pub read: u64,
    /// Cards written (new usage, alerts or due transitions).
    pub updated: u64,
    /// Cards changed by someone else meanwhile, or whose write failed; synced next time.
    pub skipped: u64,
    /// Carrier calls that failed; their cards are synced next time.
    pub carrier_failures: u64,
}

/// How far before the last mark a sweep of modified cards starts: a change stamped just
/// before the mark but listed only after it (the platform's clock, its indexing) is not lost.
/// Cards listed twice cost nothing more.
const SWEEP_OVERLAP: chrono::Duration = chrono::Duration::minutes(5);
/// The most pages one sweep reads (50 cards a page on Control Center: 5 million changes).
const MAX_SWEEP_PAGES: u32 = 100_000;

/// One pass's list of modified cards of an account.
struct Sweep {
    /// When the pass started (card clock): the next pass lists the changes since then.
    started: DateTime<Utc>,
    /// The cards listed as modified since the last pass; None on the first pass (no mark).
    listed: Option<HashMap<Iccid, crate::carrier::ListedCard>>,
}

/// Readings of `cards` on a platform that lists its modified cards: the state is the listed
/// one, or for a card not listed the one last seen (unchanged since); the usage is read
/// (`usage_of`, one call) only for a card active at the carrier, since a stopped card carries
/// no data. A card last read in a form simgate cannot read is read in full again. A listed
/// status outside the platform's table makes the reading "unknown at carrier".
async fn read_listed(
    carrier: &dyn crate::carrier::Carrier,
    cards: &[Card],
    listed: &HashMap<Iccid, crate::carrier::ListedCard>,
) -> std::result::Result<Vec<CarrierCard>, crate::carrier::CarrierError> {
    // A reading built here: no session (the sync does not use it), and without a usage read
    // the card's own figure for its own cycle (after a rollover it is another cycle's and
    // applies nothing).
    let reading = |card: &Card, state, usage: Option<(u64, Option<DateTime<Utc>>)>, unknown| {
        let (cycle_usage_bytes, usage_cycle_start) =
            usage.unwrap_or((card.cycle_usage_bytes, Some(card.cycle_start)));
        CarrierCard {
            iccid: card.iccid.clone(),
            state,
            cycle_usage_bytes,
            usage_cycle_start,
            last_session: crate::carrier::LastSession::Unknown,
            changes: 0,
            unknown,
        }
    };
    let mut out = Vec::with_capacity(cards.len());
    for card in cards {
        let iccid = &card.iccid;
        let state = match listed.get(iccid) {
            Some(l) => match l.state {
                Some(s) => s,
                None => {
                    let why = format!(
                        "listed status {:?} is not in the platform's table",
                        l.status
                    );
                    out.push(reading(card, ServiceState::Stopped, None, Some(why)));
                    continue;
                }
            },
            None if card.carrier_unknown.is_some() => match carrier.card(iccid).await {
                Ok(c) => {
                    out.push(c);
                    continue;
                }
                Err(e) if carrier.card_not_known(&e) => continue,
                Err(e) => return Err(e),
            },
            None => {
                let seen = card
                    .drift
                    .as_ref()
                    .map(|d| d.carrier_state.as_str())
                    .unwrap_or(card.expected_carrier_state());
                ServiceState::parse(seen).unwrap_or(ServiceState::Stopped)
            }
        };
        // A stopped card carries no data: its usage is not read.
        if state != ServiceState::Active {
            out.push(reading(card, state, None, None));
            continue;
        }
        match carrier.usage_of(iccid).await {
            Ok(u) => out.push(reading(
                card,
                state,
                Some((u.cycle_usage_bytes, u.usage_cycle_start)),
                None,
            )),
            Err(e) if carrier.card_not_known(&e) => {}
            // Answered, but not with a usage simgate can read (Control Center's null
            // `ctdDataUsage`): this card is unknown at carrier, the others go on.
            Err(crate::carrier::CarrierError::Rejected { code, message }) => {
                let why = format!("usage unreadable: [{code}] {message}");
                out.push(reading(card, state, None, Some(why)));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Checks a pool id: 1-64 letters, digits, '-' or '_'.
pub fn valid_pool_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn pool_bit() -> u32 {
    let mut r = StopReasons::NONE;
    r.insert(StopReason::PoolExhausted);
    r.bits()
}

/// Which way [`CardService::move_cards`] moves cards: AddCardsToPool or RemoveCardsFromPool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMove {
    Join,
    Leave,
}

impl CardService {
    /// The customer's alert rules: stored ones, or the defaults.
    pub async fn alert_rules_of(&self, customer: &str) -> Result<AlertRules> {
        if let Some(r) = self.alert_rules.get(customer) {
            return Ok(r);
        }
        let rules = self.store.alert_rules(customer).await?.unwrap_or_default();
        self.alert_rules.put(customer, rules.clone());
        Ok(rules)
    }

    /// The rules as the caller may see them, and whether they were set.
    pub async fn get_alert_rules(
        &self,
        customer: &str,
        caller: &Caller,
    ) -> Result<(AlertRules, bool)> {
        self.scope(caller, customer)?;
        match self.store.alert_rules(customer).await? {
            Some(r) => Ok((r, true)),
            None => Ok((AlertRules::default(), false)),
        }
    }

    pub async fn set_alert_rules(
        &self,
        customer: &str,
        rules: AlertRules,
        caller: &Caller,
    ) -> Result<AlertRules> {
        self.scope(caller, customer)?;
        if let Err((field, problem)) = rules.validate() {
            return Err(ServiceError::InvalidArgument(vec![FieldViolation::new(
                format!("rules.{field}"),
                problem,
            )]));
        }
        let now = self.now();
        let audit = caller.audit(
            self.wall_now(),
            None,
            Some(customer),
            "OK",
            "alert rules set".into(),
        );
        self.store
            .put_alert_rules(customer, &rules, now, &audit)
            .await?;
        self.alert_rules.put(customer, rules.clone());
        Ok(rules)
    }

    /// A customer principal acts on its own customer only; anything else looks absent.
    fn scope(&self, caller: &Caller, customer: &str) -> Result<()> {
        if caller.principal.sees(customer) {
            Ok(())
        } else {
            Err(ServiceError::InvalidArgument(vec![FieldViolation::new(
                "customer_id",
                "is not a customer this key may act for",
            )]))
        }
    }

    /// Adds the alerts a change calls for to `t`, updating the card's alert memory.
    pub(crate) async fn with_alerts(
        &self,
        before: &Card,
        t: &mut Transition,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let rules = self.alert_rules_of(&before.customer_id).await?;
        let cause = t.events.last().map_or(Cause::Request, |e| e.cause);
        let fired = alerts::evaluate_card(Some(before), &mut t.card, &rules, now, cause);
        t.events.extend(fired);
        // A carrier action is a change even when the card's fields are not (a rebind).
        t.changed = t.card != *before || t.action.is_some();
        Ok(())
    }

    /// The customer's pool `id`, as stored now.
    async fn load_pool(&self, customer: &str, id: &str) -> Result<Pool> {
        self.store
            .get_pool(customer, id)
            .await?
            .ok_or_else(|| ServiceError::PoolNotFound(id.to_string()))
    }

    /// The pool a request names: pool `id` of `customer`, or of the caller's own customer when
    /// the request names none. A customer key naming another customer finds nothing (NOT_FOUND,
    /// as for an id nobody has). A reseller key that names no customer gets the one pool of that
    /// id; if several customers have one it must say which.
    pub async fn resolve_pool(
        &self,
        id: &str,
        customer: Option<&str>,
        caller: &Caller,
    ) -> Result<Pool> {
        let not_found = || ServiceError::PoolNotFound(id.to_string());
        if let Some(own) = &caller.principal.customer_id {
            if customer.is_some_and(|c| c != own) {
                return Err(not_found());
            }
            return self.load_pool(own, id).await;
        }
        if let Some(c) = customer {
            return self.load_pool(c, id).await;
        }
        let mut found = self.store.pools_with_id(id, 2).await?;
        match found.len() {
            0 => Err(not_found()),
            1 => Ok(found.remove(0)),
            _ => Err(ServiceError::InvalidArgument(vec![FieldViolation::new(
                "customer_id",
                format!("is required: more than one customer has a pool {id}"),
            )])),
        }
    }

    /// What DiagnoseCard needs of a pooled card's pool; None if the pool is gone.
    pub(crate) async fn pool_facts(
        &self,
        customer: &str,
        id: &str,
    ) -> Result<Option<crate::domain::diagnosis::PoolFacts>> {
        let Some(pool) = self.store.get_pool(customer, id).await? else {
            return Ok(None);
        };
        let capacity_bytes = pool.capacity();
        let view = self.view(pool).await?;
        Ok(Some(crate::domain::diagnosis::PoolFacts {
            pool_id: id.to_string(),
            used_bytes: view.used_bytes,
            capacity_bytes,
        }))
    }

    async fn view(&self, pool: Pool) -> Result<PoolView> {
        let (used_bytes, members) = self
            .store
            .pool_usage(&pool.customer_id, &pool.id, pool.cycle_start)
            .await?;
        Ok(PoolView {
            pool,
            used_bytes,
            members,
        })
    }

    pub async fn create_pool(&self, new: NewPool, caller: &Caller) -> Result<PoolView> {
        let NewPool {
            id,
            name,
            carrier,
            customer_id,
            quota_bytes,
            auto_suspend,
        } = new;
        let (id, customer) = (id.as_str(), customer_id.as_str());
        self.scope(caller, customer)?;
        let policy = self.policy(carrier)?;
        let now = self.now();
        let pool = Pool {
            id: id.to_string(),
            name,
            carrier,
            customer_id: customer.to_string(),
            quota_bytes,
            auto_suspend,
            cycle_start: policy.cycle_bounds(now).0,
            topup_bytes: 0,
            exhausted: false,
            alert_keys: Vec::new(),
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let created = crate::domain::PoolEvent {
            kind: event::pool::CREATED,
            cause: Cause::Request,
            at: now,
            used_bytes: 0,
            capacity_bytes: quota_bytes,
            alert: None,
        };
        let audit = caller.audit(
            self.wall_now(),
            None,
            Some(customer),
            "OK",
            format!("pool {id} created"),
        );
        self.store
            .insert_pool(&pool, &[created], Some(&audit), None)
            .await
            .map_err(|e| match e {
                StoreError::Duplicate { .. } => ServiceError::AlreadyExists {
                    field: "pool_id".into(),
                    value: id.to_string(),
                },
                other => other.into(),
            })?;
        self.view(pool).await
    }

    pub async fn get_pool(
        &self,
        id: &str,
        customer: Option<&str>,
        caller: &Caller,
    ) -> Result<PoolView> {
        let pool = self.resolve_pool(id, customer, caller).await?;
        self.view(pool).await
    }

    pub async fn list_pools(
        &self,
        filter: &PoolFilter,
        after: (&str, &str),
        limit: u32,
        caller: &Caller,
    ) -> Result<Vec<PoolView>> {
        let mut filter = filter.clone();
        if let Some(own) = &caller.principal.customer_id {
            if filter.customer_id.as_ref().is_some_and(|c| c != own) {
                return Ok(Vec::new());
            }
            filter.customer_id = Some(own.clone());
        }
        let mut out = Vec::new();
        for p in self.store.list_pools(&filter, after, limit).await? {
            out.push(self.view(p).await?);
        }
        Ok(out)
    }

    /// Moves cards into a pool or out of it. Every card is checked against the pool first
    /// (joining: exists, visible, same carrier and customer, not cancelled, not in another pool;
    /// leaving: in this pool), so a refused call moves none; then each moves through the change
    /// path, and the pool is settled once.
    pub async fn move_cards(
        &self,
        id: &str,
        customer: Option<&str>,
        iccids: &[Iccid],
        caller: &Caller,
        direction: PoolMove,
    ) -> Result<PoolView> {
        let rule: fn(&Card, &Pool, DateTime<Utc>) -> Result<Transition, RuleViolation> =
            match direction {
                PoolMove::Join => pool::join,
                PoolMove::Leave => pool::leave,
            };
        let pool = self.resolve_pool(id, customer, caller).await?;
        let owner = pool.customer_id.as_str();
        let now = self.now();
        for iccid in iccids {
            let card = self.get(iccid, caller).await?;
            rule(&card, &pool, now)?;
        }
        for iccid in iccids {
            // The pool as it is now: a settle may have changed it since the check.
            let current = self.load_pool(owner, id).await?;
            self.mutate(iccid, caller, None, |card, _, now| {
                rule(card, &current, now)
            })
            .await?;
        }
        self.settle_pool(owner, id, Cause::Request).await?;
        self.view(self.load_pool(owner, id).await?).await
    }

    /// Adds data to the pool for this cycle. With a request id, a repeat adds nothing and gets
    /// the first answer (`respond` encodes it from the pool as stored).
    pub async fn top_up_pool(
        &self,
        id: &str,
        customer: Option<&str>,
        bytes: u64,
        caller: &Caller,
        idem: Option<&Idem<'_, PoolView>>,
    ) -> Result<PoolView> {
        let owner = self.resolve_pool(id, customer, caller).await?.customer_id;
        for _ in 0..5 {
            let current = self.load_pool(&owner, id).await?;
            // Settle first so a top-up in a new cycle lands in that cycle.
            let now = self.now();
            let policy = self.policy(current.carrier)?;
            let cycle = policy.cycle_bounds(now).0.max(current.cycle_start);
            let (used, members) = self.store.pool_usage(&owner, id, cycle).await?;
            let rules = self.alert_rules_of(&current.customer_id).await?;
            let settled = pool::settle(&current, cycle, used, &rules, now, Cause::Schedule);
            let (topped, event) = pool::top_up(&settled.pool, bytes, used, now);
            let after = pool::settle(&topped, cycle, used, &rules, now, Cause::Request);
            let mut events = settled.events;
            events.push(event);
            events.extend(after.events);
            let mut stored = after.pool.clone();
            stored.version = current.version;
            let audit = caller.audit(
                self.wall_now(),
                None,
                Some(&current.customer_id),
                "OK",
                format!("pool {id} topped up by {bytes} bytes"),
            );
            let view = PoolView {
                pool: Pool {
                    version: current.version + 1,
                    ..after.pool.clone()
                },
                used_bytes: used,
                members,
            };
            let answer = idem.map(|i| i.record(caller, &view, now));
            match self
                .store
                .update_pool(&stored, &events, Some(&audit), answer.as_ref())
                .await
            {
                Ok(_) => {
                    self.follow_pool(&view.pool, Cause::Request).await?;
                    return Ok(view);
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Conflict)
    }

    /// Brings the customer's pool `id` to now (cycle, exhaustion, alerts) and its members to
    /// match it.
    pub async fn settle_pool(&self, customer: &str, id: &str, cause: Cause) -> Result<()> {
        let mut settled = None;
        for _ in 0..5 {
            let current = self.load_pool(customer, id).await?;
            let now = self.now();
            let cycle = self
                .policy(current.carrier)?
                .cycle_bounds(now)
                .0
                .max(current.cycle_start);
            let (used, _) = self.store.pool_usage(customer, id, cycle).await?;
            let rules = self.alert_rules_of(&current.customer_id).await?;
            let u = pool::settle(&current, cycle, used, &rules, now, cause);
            if !u.changed {
                settled = Some(current);
                break;
            }
            match self.store.update_pool(&u.pool, &u.events, None, None).await {
                Ok(p) => {
                    settled = Some(p);
                    break;
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let pool = settled.ok_or(ServiceError::Conflict)?;
        self.follow_pool(&pool, cause).await
    }

    /// Stops or restores the members whose POOL_EXHAUSTED stop does not match the pool.
    async fn follow_pool(&self, pool: &Pool, cause: Cause) -> Result<()> {
        let caller = Caller::system("PoolSettle");
        loop {
            let lagging = self
                .store
                .pool_members_to_follow(pool, pool.stops_members(), pool_bit(), 200)
                .await?;
            if lagging.is_empty() {
                return Ok(());
            }
            let mut progressed = false;
            for iccid in &lagging {
                let result = self
                    .mutate(iccid, &caller, None, |card, _, now| {
                        Ok(pool::follow(card, Some(pool), now, cause))
                    })
                    .await;
                match result {
                    Ok((before, after)) => progressed |= before != after,
                    Err(e) => {
                        warn!(%iccid, pool = %pool.id, customer = %pool.customer_id, error = %e, "pool member not updated; retried at the next settle")
                    }
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Settles every pool: rollovers, exhaustion, top-ups, alerts. Run with the engine.
    pub async fn settle_pools(&self) -> Result<usize> {
        let (mut after_id, mut after_customer) = (String::new(), String::new());
        let mut n = 0;
        loop {
            let page = self
                .store
                .list_pools(&PoolFilter::default(), (&after_id, &after_customer), 500)
                .await?;
            let Some(last) = page.last() else {
                return Ok(n);
            };
            after_id = last.id.clone();
            after_customer = last.customer_id.clone();
            for p in &page {
                if let Err(e) = self.settle_pool(&p.customer_id, &p.id, Cause::Usage).await {
                    warn!(pool = %p.id, customer = %p.customer_id, error = %e, "pool not settled; retried next time");
                }
                n += 1;
            }
        }
    }

    /// A card's usage by day over the last `days` days.
    pub async fn usage_history(
        &self,
        iccid: &Iccid,
        days: u32,
        caller: &Caller,
    ) -> Result<Vec<DailyUsage>> {
        self.get(iccid, caller).await?;
        let today = crate::domain::policy::start_of_local_day(self.now());
        let from = today - chrono::Duration::days(i64::from(days.saturating_sub(1)));
        Ok(self.store.daily_usage(iccid, from).await?)
    }

    /// Reads every live card's usage from its carrier, in batches as large as the carrier
    /// allows, and writes what changed (usage, daily history, alerts, stops) batch by batch.
    /// Pools are settled afterwards, so an exhausted pool stops its members in the same pass.
    #[tracing::instrument(name = "usage_sync.pass", skip_all)]
    pub async fn sync_all_usage(&self) -> Result<SyncStats> {
        let mut stats = SyncStats::default();
        let accounts: Vec<(AccountId, std::sync::Arc<dyn crate::carrier::Carrier>)> = self
            .carriers
            .accounts()
            .map(|a| (a.id.clone(), a.adapter.clone()))
            .collect();
        for (id, carrier) in &accounts {
            let sweep = if carrier.lists_changes() {
                match self.sweep(id, carrier.as_ref()).await? {
                    Some(sweep) => Some(sweep),
                    None => {
                        // The list could not be read: no state is known without it.
                        stats.carrier_failures += 1;
                        continue;
                    }
                }
            } else {
                None
            };
            let batch = carrier.batch_limit().clamp(1, 1000);
            // Read from the store in large pages; ask the carrier in its batch size.
            let page_size = u32::try_from(batch.max(500)).unwrap_or(500);
            let mut after = String::new();
            let failures_before = stats.carrier_failures;
            loop {
                let cards = self.store.live_cards_page(id, &after, page_size).await?;
                let Some(last) = cards.last() else {
                    break;
                };
                after = last.iccid.as_str().to_string();
                let mut readings = HashMap::new();
                for chunk in cards.chunks(batch) {
                    let read = match &sweep {
                        Some(Sweep {
                            listed: Some(listed),
                            ..
                        }) => read_listed(carrier.as_ref(), chunk, listed).await,
                        _ => {
                            let iccids: Vec<Iccid> =
                                chunk.iter().map(|c| c.iccid.clone()).collect();
                            carrier.cards(&iccids).await
                        }
                    };
                    match read {
                        Ok(found) => {
                            stats.read += found.len() as u64;
                            readings.extend(found.into_iter().map(|c| (c.iccid.clone(), c)));
                        }
                        Err(e) => {
                            stats.carrier_failures += 1;
                            debug!(account = %id, error = %e, "usage read failed; synced next pass");
                        }
                    }
                }
                let s = self.apply_readings(cards, &readings).await?;
                stats.updated += s.updated;
                stats.skipped += s.skipped;
            }
            if let Some(sweep) = sweep {
                // Only a pass that read every card moves the mark: a card whose read failed
                // must find its listed change again next time.
                if stats.carrier_failures == failures_before {
                    self.store
                        .set_swept_to(id, sweep.started.timestamp_millis())
                        .await?;
                }
            }
        }
        self.settle_pools().await?;
        Ok(stats)
    }

    /// The cards the account's platform lists as modified since the last full pass (paged),
    /// for a platform that lists them. The first pass has no mark yet and reads every card in
    /// full (`listed` None). None: the list could not be read.
    async fn sweep(
        &self,
        id: &crate::domain::AccountId,
        carrier: &dyn crate::carrier::Carrier,
    ) -> Result<Option<Sweep>> {
        // The platform's modification times are on its clock, the card clock.
        let started = self.now();
        let Some(mark) = self.store.swept_to(id).await? else {
            return Ok(Some(Sweep {
                started,
                listed: None,
            }));
        };
        let since = DateTime::<Utc>::from_timestamp_millis(mark).unwrap_or(started) - SWEEP_OVERLAP;
        let mut listed = HashMap::new();
        for page in 1..=MAX_SWEEP_PAGES {
            match carrier.changes_since(since, page).await {
                Ok(p) => {
                    let last = p.last_page || p.cards.is_empty();
                    listed.extend(p.cards.into_iter().map(|c| (c.iccid.clone(), c)));
                    if last {
                        return Ok(Some(Sweep {
                            started,
                            listed: Some(listed),
                        }));
                    }
                }
                Err(e) => {
                    warn!(account = %id, page, error = %e, "list of modified cards failed; the account is synced next pass");
                    return Ok(None);
                }
            }
        }
        warn!(account = %id, pages = MAX_SWEEP_PAGES, "list of modified cards did not end; the account is synced next pass");
        Ok(None)
    }

    /// Applies carrier readings to stored cards: cards whose carrier state does not change are
    /// written together; the few that must be stopped or restored go one by one, journaled.
    async fn apply_readings(
        &self,
        cards: Vec<Card>,
        readings: &HashMap<Iccid, CarrierCard>,
    ) -> Result<SyncStats> {
        let mut stats = SyncStats::default();
        let now = self.now();
        let mut quiet = Vec::new();
        let mut loud = Vec::new();
        for card in cards {
            if card.pending.is_some() {
                stats.skipped += 1;
                continue;
            }
            if let Some(r) = readings.get(&card.iccid) {
                if self.check_reading(&card, r).await? {
                    // The carrier's own stop reason changed the card: its usage is applied
                    // from the next pass's reading.
                    stats.updated += 1;
                    continue;
                }
            }
            let t = self
                .usage_transition(&card, readings.get(&card.iccid), now)
                .await?;
            if !t.changed {
                continue;
            }
            if t.action.is_none() {
                quiet.push((t.card, t.events, t.usage_bytes));
            } else {
                loud.push(card.iccid.clone());
            }
        }
        if !quiet.is_empty() {
            for done in self.store.update_cards(&quiet).await? {
                if done {
                    stats.updated += 1;
                } else {
                    stats.skipped += 1;
                }
            }
        }
        for iccid in loud {
            let Some(reading) = readings.get(&iccid) else {
                continue;
            };
            match self.apply_reading(&iccid, reading).await {
                Ok(_) => stats.updated += 1,
                Err(e) => {
                    stats.skipped += 1;
                    warn!(%iccid, error = %e, "usage not applied; synced next pass");
                }
            }
        }
        Ok(stats)
    }

    /// The card brought to `now` with the carrier's reading applied (if it is for the card's
    /// cycle) and the alerts this calls for.
    async fn usage_transition(
        &self,
        card: &Card,
        reading: Option<&CarrierCard>,
        now: DateTime<Utc>,
    ) -> Result<Transition> {
        let policy = self.policy(card.carrier)?;
        // A reading whose state or usage could not be read ("unknown at carrier") is no
        // reading: time still moves the card, the usage does not.
        let reading = reading.filter(|r| r.unknown.is_none());
        let mut t = lifecycle::at_now(card, policy, now, |c| {
            Ok(match reading {
                // Usage counted for another cycle than the card's (read just before a
                // rollover) says nothing about this cycle.
                Some(r) if r.usage_cycle_start.is_none_or(|s| s == c.cycle_start) => {
                    lifecycle::accrue_usage(c, policy, r.cycle_usage_bytes, now)
                }
                _ => Transition::none(c),
            })
        })?;
        if t.events.is_empty() {
            // Nothing happened but time: alerts are about the schedule.
            let rules = self.alert_rules_of(&card.customer_id).await?;
            let fired =
                alerts::evaluate_card(Some(card), &mut t.card, &rules, now, Cause::Schedule);
            t.events.extend(fired);
            t.changed = t.card != *card;
        } else {
            self.with_alerts(card, &mut t, now).await?;
        }
        Ok(t)
    }

    /// What a reading says about the card besides its usage: records on the card that the
    /// carrier's answer about it could not be read ("unknown at carrier", shown on GetCard and
    /// in the diagnosis), or clears the mark once a read succeeds (written only when it
    /// changes); for a readable answer, what the carrier's own stop reason says (a
    /// machine-card separation stop, or its end: see [`CardService::check_carrier_reasons`]),
    /// and otherwise whether the carrier's state drifted from the card's (an unreadable one
    /// shows no state to compare). True when the card was changed and must be read again.
    pub(crate) async fn check_reading(&self, card: &Card, reading: &CarrierCard) -> Result<bool> {
        match (&reading.unknown, &card.carrier_unknown) {
            (Some(why), Some(had)) if why == had => {}
            (Some(why), _) => {
                if self
                    .store
                    .set_carrier_unknown(&card.iccid, Some(why))
                    .await?
                {
                    warn!(iccid = %card.iccid, why = why.as_str(), "carrier answered in a form simgate cannot read: neither state nor usage applied (unknown at carrier)");
                }
            }
            (None, Some(_)) => {
                if self.store.set_carrier_unknown(&card.iccid, None).await? {
                    info!(iccid = %card.iccid, "carrier answer readable again: unknown-at-carrier mark cleared");
                }
            }
            (None, None) => {}
        }
        if reading.unknown.is_none() {
            if self.check_carrier_reasons(card, reading).await? {
                return Ok(true);
            }
            self.check_drift(card, reading.state).await?;
        }
        Ok(false)
    }

    /// Machine-card separation (机卡分离), from the carrier's own stop reason. A card the
    /// carrier shows stopped while simgate expects it active, or one simgate holds stopped for
    /// DEVICE_MISMATCH, has its platform's stop reason read (where the platform can say): the
    /// separation reason found stops the card with DEVICE_MISMATCH (nothing is sent: the
    /// carrier stopped it); the reason gone (or the carrier showing the card active again)
    /// clears it, and restores the card if the carrier still holds it stopped for nothing
    /// else. True when the card was changed.
    pub(crate) async fn check_carrier_reasons(
        &self,
        card: &Card,
        reading: &CarrierCard,
    ) -> Result<bool> {
        let Some(state) = reading.known_state() else {
            return Ok(false);
        };
        if card.pending.is_some() || card.cancelled {
            return Ok(false);
        }
        let has = card.stop_reasons.contains(StopReason::DeviceMismatch);
        let carrier = self.carrier(&card.account)?.clone();
        let found = match state {
            ServiceState::Stopped if has || card.expected_carrier_state() == "ACTIVE" => {
                match carrier.stop_reasons(&card.iccid).await {
                    Ok(Some(r)) => r.contains(StopReason::DeviceMismatch),
                    Ok(None) => return Ok(false),
                    Err(e) => {
                        debug!(iccid = %card.iccid, error = %e, "carrier stop reason not read; tried next pass");
                        return Ok(false);
                    }
                }
            }
            ServiceState::Active if has => false,
            _ => return Ok(false),
        };
        if found == has {
            return Ok(false);
        }
        let iccid = &card.iccid;
        let _guard = self.locks.lock(iccid.as_str()).await;
        let before = self.load(iccid).await?;
        if before.version != card.version || before.pending.is_some() {
            // Changed meanwhile: the next pass reads it again.
            return Ok(true);
        }
        let now = self.now();
        let policy = self.policy(before.carrier)?;
        let mut t = lifecycle::at_now(&before, policy, now, |c| {
            Ok(if found {
                rules::device_mismatch_found(c, now)
            } else {
                rules::device_mismatch_cleared(c, state == ServiceState::Active, now)
            })
        })?;
        if !t.changed {
            return Ok(false);
        }
        // What the carrier must be told follows from the state it shows, not from the card's
        // before and after: the carrier stopped the card itself (nothing to send), or lifted
        // its stop itself.
        if t.action != Some(crate::domain::CarrierAction::Cancel) {
            t.action = match (state, t.card.is_online()) {
                (ServiceState::Active, false) => Some(crate::domain::CarrierAction::Stop),
                (ServiceState::Stopped, true) => Some(crate::domain::CarrierAction::Restore),
                _ => None,
            };
        }
        self.with_alerts(&before, &mut t, now).await?;
        if found {
            warn!(%iccid, "the carrier stopped the card for machine-card separation (机卡分离): DEVICE_MISMATCH");
        } else {
            info!(%iccid, "the carrier's machine-card separation stop reason cleared");
        }
        let (audit, origin) = self.system_change("CarrierStopReason", &before, &t);
        match self
            .commit(
                carrier.as_ref(),
                t,
                Some(&audit),
                None::<&IdempotencyRecord>,
                &origin,
            )
            .await
        {
            Ok(_) | Err(ServiceError::OutcomePending { .. }) => {}
            Err(e) => warn!(%iccid, error = %e, "carrier stop reason not applied; tried next pass"),
        }
        Ok(true)
    }

    /// The audit record and journal origin of a change simgate makes on its own (`name`: the
    /// usage sync, the carrier's stop reason) to `card`.
    fn system_change(
        &self,
        name: &'static str,
        card: &Card,
        t: &Transition,
    ) -> (crate::store::AuditRecord, super::journal::Origin) {
        let caller = Caller::system(name);
        let audit = caller.audit(
            self.wall_now(),
            Some(&card.iccid),
            Some(&card.customer_id),
            "OK",
            t.events
                .iter()
                .map(|e| e.kind)
                .collect::<Vec<_>>()
                .join(","),
        );
        let origin = super::journal::Origin {
            source: format!("{name}:{}", caller.request_id),
            key_id: String::new(),
            request_id: String::new(),
        };
        (audit, origin)
    }

    /// One card's reading under its lock, from a fresh read, through the journaled path.
    pub(crate) async fn apply_reading(&self, iccid: &Iccid, reading: &CarrierCard) -> Result<Card> {
        let _guard = self.locks.lock(iccid.as_str()).await;
        let before = self.load(iccid).await?;
        if before.pending.is_some() {
            // Nothing else is written while a carrier change is open; read again next pass.
            return Ok(before);
        }
        let now = self.now();
        let t = self.usage_transition(&before, Some(reading), now).await?;
        if !t.changed {
            return Ok(before);
        }
        let (audit, origin) = self.system_change("UsageSync", &before, &t);
        let carrier = self.carrier(&before.account)?.clone();
        self.commit(
            carrier.as_ref(),
            t,
            Some(&audit),
            None::<&IdempotencyRecord>,
            &origin,
        )
        .await
    }
}

/// Syncs every live card's usage every `interval` until `shutdown` turns true.
pub async fn run_usage_sync(
    service: CardService,
    interval: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // The first pass after one interval, not at start: a restart loop must not turn into a
    // stream of full syncs against the carriers' rate limits.
    let ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    super::every(ticker, shutdown, || async {
        match service.sync_all_usage().await {
            Ok(stats) => debug!(?stats, "usage sync pass"),
            Err(e) => warn!(error = %e, "usage sync pass failed; retrying on the next tick"),
        }
    })
    .await
}
