//! Simulated China Mobile, China Unicom and China Telecom platforms. They keep the carrier's side
//! of every card in the database (so a restarted server and its simulators still agree), refuse
//! what a real platform refuses, and can be told to fail on purpose.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Carrier, CarrierCard, CarrierError, OnboardCard, Receipt, ServiceState};
use crate::clock::Clock;
use crate::domain::{AccountId, CarrierId, CarrierPolicy, Iccid};
use crate::store::Store;

/// Largest cycle usage a simulated card can record (2^62 bytes).
const USAGE_LIMIT: u64 = 1 << 62;

/// Cards per batched read: the simulator answers like a platform with a generous batch query.
const SIM_BATCH: usize = 1000;

/// Standing misbehaviour of a simulated carrier (configuration `[simulator.mobile]`, or
/// SimulatorService.SetFaults): what share of calls fail and how.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimFaults {
    /// Share of calls answered "unavailable" without applying anything (0..=1).
    pub error_rate: f64,
    /// Added to every call.
    pub latency_ms: u64,
    /// Share of calls answered with a rate-limit refusal (0..=1).
    pub rate_limit_rate: f64,
    /// Share of changes that are applied but answered with a timeout: the nasty case (0..=1).
    pub timeout_after_apply_rate: f64,
    /// The platform answers nothing at all.
    pub down: bool,
    /// Traffic profile: data every active card uses per simulated hour (0: none).
    pub traffic_bytes_per_hour: u64,
    /// Every change is applied and none of the platform's answers arrive: changes time out
    /// after landing, reads fail.
    pub responses_lost: bool,
}

impl SimFaults {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("error_rate", self.error_rate),
            ("rate_limit_rate", self.rate_limit_rate),
            ("timeout_after_apply_rate", self.timeout_after_apply_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 1, got {v}"));
            }
        }
        if self.traffic_bytes_per_hour > 1 << 40 {
            return Err("traffic_bytes_per_hour must be at most 1 TiB".into());
        }
        if self.latency_ms > 60_000 {
            return Err("latency_ms must be at most 60000".into());
        }
        Ok(())
    }
}

/// How the next mutating calls of a simulated carrier fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Reject,
    Unavailable,
}

pub struct SimCarrier {
    id: CarrierId,
    /// The simulated account: each has its own cards, state and faults.
    account: AccountId,
    policy: CarrierPolicy,
    store: Store,
    /// The simulated platform's own clock: its usage counters restart with each billing cycle.
    clock: Arc<dyn Clock>,
    /// Pending injected faults, consumed one per stop/restore call.
    faults: Mutex<Vec<Fault>>,
    /// Standing fault rates.
    chaos: Mutex<SimFaults>,
    /// Up to when the traffic profile's usage has been added.
    traffic_until: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    /// xorshift state for the fault dice; seeded from the OS.
    dice: Mutex<u64>,
}

impl SimCarrier {
    /// The carrier's default account.
    pub fn new(policy: CarrierPolicy, store: Store, clock: Arc<dyn Clock>) -> SimCarrier {
        SimCarrier::for_account(AccountId::default_for(policy.carrier), policy, store, clock)
    }

    /// A simulated account with its standing faults from configuration (`[simulator.<id>]`).
    pub fn configured(
        account: AccountId,
        policy: CarrierPolicy,
        store: Store,
        clock: Arc<dyn Clock>,
        faults: &BTreeMap<AccountId, SimFaults>,
    ) -> Arc<SimCarrier> {
        let sim = SimCarrier::for_account(account, policy, store, clock);
        if let Some(f) = faults.get(&sim.account) {
            sim.set_faults(*f);
        }
        Arc::new(sim)
    }

    pub fn for_account(
        account: AccountId,
        policy: CarrierPolicy,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> SimCarrier {
        SimCarrier {
            account,
            id: policy.carrier,
            policy,
            store,
            clock,
            faults: Mutex::new(Vec::new()),
            chaos: Mutex::new(SimFaults::default()),
            traffic_until: Mutex::new(None),
            dice: Mutex::new({
                let mut b = [0u8; 8];
                getrandom::fill(&mut b)
                    .map(|_| u64::from_le_bytes(b) | 1)
                    .unwrap_or(0x9e37_79b9_7f4a_7c15)
            }),
        }
    }

    pub fn set_faults(&self, f: SimFaults) {
        let mut chaos = self.chaos.lock().unwrap_or_else(|e| e.into_inner());
        if chaos.traffic_bytes_per_hour != f.traffic_bytes_per_hour {
            // A new profile counts from now, not from when the old one started.
            *self.traffic_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.clock.now());
        }
        *chaos = f;
    }

    /// Adds the traffic profile's usage for the simulated time since it was last added, to every
    /// active card at once, before a read. Lazily, so a profile costs nothing between reads and
    /// follows the simulated clock however it jumps. Traffic spanning a cycle start is counted
    /// in the new cycle.
    async fn accrue_traffic(&self) -> Result<(), CarrierError> {
        let rate = self.faults().traffic_bytes_per_hour;
        if rate == 0 {
            return Ok(());
        }
        let now = self.clock.now();
        let bytes = {
            let mut until = self.traffic_until.lock().unwrap_or_else(|e| e.into_inner());
            let since = *until.get_or_insert(now);
            let ms = (now - since).num_milliseconds().max(0);
            let bytes = u128::from(rate) * u128::try_from(ms).unwrap_or(0) / 3_600_000;
            let bytes = u64::try_from(bytes)
                .unwrap_or(u64::MAX)
                .min(USAGE_LIMIT / 4);
            if bytes == 0 {
                // Keep the fraction for the next read.
                return Ok(());
            }
            *until = Some(now);
            bytes
        };
        self.store
            .sim_add_traffic(
                self.account.as_str(),
                bytes,
                self.cycle_ms(),
                now.timestamp_millis(),
            )
            .await
            .map_err(|e| CarrierError::Transient(e.to_string()))?;
        Ok(())
    }

    fn faults(&self) -> SimFaults {
        *self.chaos.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True with probability `p`.
    fn roll(&self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let mut x = self.dice.lock().unwrap_or_else(|e| e.into_inner());
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        ((*x >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// The standing faults every call meets: down, latency, and (for reads and writes alike)
    /// the error rate.
    async fn weather(&self) -> Result<(), CarrierError> {
        let f = self.faults();
        if f.down {
            return Err(CarrierError::Transient(format!(
                "simulated {} is down",
                self.id.display_name()
            )));
        }
        if f.responses_lost {
            return Err(CarrierError::Transient(format!(
                "no answer from simulated {}",
                self.id.display_name()
            )));
        }
        if f.latency_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(f.latency_ms)).await;
        }
        if self.roll(f.error_rate) {
            return Err(CarrierError::Transient(
                "simulated transient failure".into(),
            ));
        }
        Ok(())
    }

    /// Makes the next `count` stop/restore calls fail with `fault`.
    pub fn inject(&self, fault: Fault, count: u32) {
        let mut f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        f.clear();
        f.extend(std::iter::repeat_n(fault, count as usize));
    }

    /// The simulator's own record of a card, without any simulated failure.
    async fn read(&self, iccid: &Iccid) -> Result<CarrierCard, CarrierError> {
        self.store
            .sim_card(self.account.as_str(), iccid, self.cycle_ms())
            .await
            .map_err(|e| CarrierError::Transient(e.to_string()))?
            .ok_or_else(|| not_found(self.id, iccid))
    }

    /// The access number this simulated platform holds for a card (its wire simulators name
    /// cards by it where the platform does). Not counted as a carrier call: the wire simulator
    /// answers `getTelephonePlus` with it, and the adapter's call is what is counted.
    pub async fn number_of(&self, iccid: &Iccid) -> Result<Option<String>, CarrierError> {
        self.store
            .sim_msisdn(self.account.as_str(), iccid)
            .await
            .map_err(|e| CarrierError::Transient(e.to_string()))
    }

    /// The card an access number names at this simulated platform.
    pub async fn card_by_number(&self, msisdn: &str) -> Result<Option<Iccid>, CarrierError> {
        self.store
            .sim_iccid_by_msisdn(self.account.as_str(), msisdn)
            .await
            .map_err(|e| CarrierError::Transient(e.to_string()))
    }

    /// Start of the carrier's current billing cycle, which its usage counters belong to.
    fn cycle_ms(&self) -> i64 {
        self.policy
            .cycle_bounds(self.clock.now())
            .0
            .timestamp_millis()
    }

    fn take_fault(&self) -> Option<Fault> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Sets a card's state as the carrier's own platform would, without simgate knowing (a
    /// harness control for drift). Counts as a change like any other.
    pub async fn set_state_behind_simgate(
        &self,
        iccid: &Iccid,
        to: ServiceState,
    ) -> Result<CarrierCard, CarrierError> {
        self.read(iccid).await?;
        self.store
            .sim_set_state(self.account.as_str(), iccid, to)
            .await
            .map_err(|e| CarrierError::Transient(e.to_string()))?;
        self.read(iccid).await
    }

    /// The simulator's own record of a card, for harnesses: no simulated fault applies.
    pub async fn inspect(&self, iccid: &Iccid) -> Result<CarrierCard, CarrierError> {
        self.read(iccid).await
    }

    /// Adds data usage, as the card's device would.
    pub async fn record_usage(
        &self,
        iccid: &Iccid,
        bytes: u64,
    ) -> Result<CarrierCard, CarrierError> {
        // Counters are 64-bit signed in storage; refuse what would overflow them. Device traffic
        // flows whatever the platform's API is doing, so no simulated API fault applies here.
        let current = self.read(iccid).await?;
        if current.cycle_usage_bytes.saturating_add(bytes) > USAGE_LIMIT {
            return Err(CarrierError::Rejected {
                code: "USAGE_TOO_LARGE".into(),
                message: format!("cycle usage would exceed {USAGE_LIMIT} bytes"),
            });
        }
        let found = self
            .store
            .sim_add_usage(
                self.account.as_str(),
                iccid,
                bytes,
                self.cycle_ms(),
                self.clock.now().timestamp_millis(),
            )
            .await
            .map_err(|e| CarrierError::Transient(e.to_string()))?;
        if !found {
            return Err(not_found(self.id, iccid));
        }
        self.read(iccid).await
    }

    async fn change(&self, iccid: &Iccid, to: ServiceState) -> Result<(), CarrierError> {
        match self.take_fault() {
            Some(Fault::Reject) => {
                return Err(CarrierError::Rejected {
                    code: "SIM_INJECTED".into(),
                    message: "rejected by an injected fault".into(),
                })
            }
            Some(Fault::Unavailable) => {
                return Err(CarrierError::Transient(
                    "simulated carrier unavailable (injected fault)".into(),
                ))
            }
            None => {}
        }
        let f = self.faults();
        if !f.responses_lost {
            self.weather().await?;
        }
        if self.roll(f.rate_limit_rate) {
            return Err(CarrierError::RateLimited {
                retry_after: Some(std::time::Duration::from_millis(20)),
            });
        }
        let current = self.read(iccid).await?;
        if current.state == ServiceState::Cancelled && to != ServiceState::Cancelled {
            return Err(CarrierError::Rejected {
                code: "CARD_CANCELLED".into(),
                message: format!("{iccid} is cancelled at {}", self.id.display_name()),
            });
        }
        if current.state != to {
            self.store
                .sim_set_state(self.account.as_str(), iccid, to)
                .await
                .map_err(|e| CarrierError::Transient(e.to_string()))?;
        }
        if f.responses_lost {
            return Err(CarrierError::OutcomeUnknown(
                "simulated: the change was applied and its answer never arrived".into(),
            ));
        }
        if self.roll(f.timeout_after_apply_rate) {
            return Err(CarrierError::OutcomeUnknown(
                "simulated timeout after the change was applied".into(),
            ));
        }
        Ok(())
    }
}

/// The carrier's own answer for an ICCID it does not know. Telecom's CMP documents -4 (bad
/// iccid); the codes of the other platforms for this case are not public, so a neutral one is used.
fn not_found(id: CarrierId, iccid: &Iccid) -> CarrierError {
    let code = match id {
        CarrierId::Telecom => "-4",
        _ => "NOT_FOUND",
    };
    CarrierError::Rejected {
        code: code.into(),
        message: format!("{iccid} is not a card of {}", id.display_name()),
    }
}

#[async_trait]
impl Carrier for SimCarrier {
    fn id(&self) -> CarrierId {
        self.id
    }

    fn account(&self) -> AccountId {
        self.account.clone()
    }

    fn policy(&self) -> &CarrierPolicy {
        &self.policy
    }

    async fn onboard(&self, cards: &[OnboardCard]) -> Result<(), CarrierError> {
        if self.faults().down {
            return Err(CarrierError::Transient(format!(
                "simulated {} is down",
                self.id.display_name()
            )));
        }
        self.store
            .sim_onboard(self.account.as_str(), cards, self.cycle_ms())
            .await
            .map_err(|e| CarrierError::Transient(e.to_string()))
    }

    async fn card(&self, iccid: &Iccid) -> Result<CarrierCard, CarrierError> {
        self.weather().await?;
        self.accrue_traffic().await?;
        self.read(iccid).await
    }

    async fn cards(&self, iccids: &[Iccid]) -> Result<Vec<CarrierCard>, CarrierError> {
        self.weather().await?;
        self.accrue_traffic().await?;
        self.store
            .sim_cards(self.account.as_str(), iccids, self.cycle_ms())
            .await
            .map_err(|e| CarrierError::Transient(e.to_string()))
    }

    fn batch_limit(&self) -> usize {
        SIM_BATCH
    }

    async fn stop(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.change(iccid, ServiceState::Stopped)
            .await
            .map(|()| Receipt::applied())
    }

    async fn restore(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.change(iccid, ServiceState::Active)
            .await
            .map(|()| Receipt::applied())
    }

    async fn cancel(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.change(iccid, ServiceState::Cancelled)
            .await
            .map(|()| Receipt::applied())
    }
}

/// The simulated accounts of one server, by account id, for the simulator API.
#[derive(Clone, Default)]
pub struct Simulators {
    pub by_id: BTreeMap<AccountId, Arc<SimCarrier>>,
}

impl Simulators {
    pub fn get(&self, id: &AccountId) -> Option<&Arc<SimCarrier>> {
        self.by_id.get(id)
    }

    /// Every simulated account of a carrier.
    pub fn of(&self, carrier: CarrierId) -> impl Iterator<Item = &Arc<SimCarrier>> {
        self.by_id.values().filter(move |s| s.id == carrier)
    }
}
