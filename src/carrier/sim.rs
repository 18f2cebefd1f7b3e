//! Simulated China Mobile, China Unicom and China Telecom platforms. They keep the carrier's side
//! of every card in the database (so a restarted server and its simulators still agree), refuse
//! what a real platform refuses, and can be told to fail on purpose.
//!
//! They also model what makes a carrier change more than a function call (issue 20), each
//! setting of [`SimFaults`]:
//! - the **repeat window** (同一卡号N分钟内不能重复办理业务, onelink.md §3): a stop, restore or
//!   rebind of a card within the window of its last accepted change is deferred, nothing
//!   applied. The platforms publish no error code for it; `SIM_REPEAT_WINDOW` is invented.
//! - **orders** (onelink.md §3.1): every accepted change gets an order number (`SIM` and a
//!   sequence per account, invented: OneLink's own format is not public). With `orders` on,
//!   the change is only accepted, and applied when its order completes, `order_delay_s` later.
//! - **machine-card binding** (机卡绑定, rules.md §5, onelink.md §7): a bound card found in
//!   another device at the carrier's daily check, 00:00 Beijing time, is stopped by the
//!   carrier (机卡分离); a restore cannot bring it back, only a rebind that ends the mismatch,
//!   lifted at the next daily check (or, with `rebind_lifts_stop = "never"`, a restore after
//!   it).
//!
//! Time is the simulator's own clock (the card clock, which AdvanceClock moves). Orders and
//! daily checks fall due lazily: every read, order query and change first applies, in time
//! order, whatever fell due since the last one, so a jump of the clock costs one step per order
//! completed and one per span of daily checks, not one per simulated day.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{
    BatchItem, BatchJob, BatchReceipt, Binding, Carrier, CarrierCard, CarrierError, Change,
    OnboardCard, OrderProgress, Rebind, Receipt, ServiceState,
};
use crate::clock::Clock;
use crate::domain::{AccountId, CarrierId, CarrierPolicy, Iccid, StopReason, StopReasons};
use crate::store::Store;

/// Largest cycle usage a simulated card can record (2^62 bytes).
const USAGE_LIMIT: u64 = 1 << 62;

/// Cards per batched read: the simulator answers like a platform with a generous batch query.
const SIM_BATCH: usize = 1000;

/// A day of the card clock, and where the carrier's daily check falls in it: 00:00 Beijing time
/// (UTC+8, no daylight saving) is 16:00 UTC.
const DAY_MS: i64 = 86_400_000;
const BEIJING_OFFSET_MS: i64 = 8 * 3_600_000;

/// The longest repeat window and order delay a simulated account may be given: a day and 30
/// days. The published windows are 3 and 30 minutes; OneLink keeps orders 60 days.
const MAX_REPEAT_WINDOW_S: u64 = 86_400;
const MAX_ORDER_DELAY_S: u64 = 30 * 86_400;

/// The first daily check strictly after `ms`.
fn first_check_after(ms: i64) -> i64 {
    ((ms + BEIJING_OFFSET_MS).div_euclid(DAY_MS) + 1) * DAY_MS - BEIJING_OFFSET_MS
}

/// The last daily check at or before `ms`.
fn last_check_at_or_before(ms: i64) -> i64 {
    (ms + BEIJING_OFFSET_MS).div_euclid(DAY_MS) * DAY_MS - BEIJING_OFFSET_MS
}

/// 00:00 Beijing time of the day `ms` falls in: the carriers' day, which daily usage counts by.
pub fn day_start_ms(ms: i64) -> i64 {
    last_check_at_or_before(ms)
}

/// `bytes` used evenly from `from_ms` to `to_ms`, by the Beijing days they fall in (the daily
/// usage record): the last day takes what rounding leaves.
fn split_by_day(bytes: u64, from_ms: i64, to_ms: i64) -> Vec<(i64, u64)> {
    let span = (to_ms - from_ms).max(0);
    if span == 0 {
        return vec![(day_start_ms(to_ms), bytes)];
    }
    let mut out = Vec::new();
    let mut left = bytes;
    let mut at = from_ms;
    while at < to_ms {
        let day = day_start_ms(at);
        let end = (day + DAY_MS).min(to_ms);
        let share = if end == to_ms {
            left
        } else {
            let part = u128::from(bytes) * u128::try_from(end - at).unwrap_or(0)
                / u128::try_from(span).unwrap_or(1);
            u64::try_from(part).unwrap_or(left).min(left)
        };
        left -= share;
        out.push((day, share));
        at = end;
    }
    out
}

/// The status of a batch order the card refused when the batch was taken (kept with its code
/// and message in `params`); not an accepted change, so it opens no repeat window.
const ORDER_REFUSED: &str = "refused";

/// What the carrier does at its next daily check for a card whose rebind ended its
/// machine-card separation (`rebind_lifts_stop`). Resellers report that such a stop "cannot
/// simply be restored" and is lifted by the carrier after the binding is handled, but not how
/// or when: both settings are invented, so a test can run either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebindLiftsStop {
    /// The carrier lifts its stop: a card it stopped is ACTIVE again.
    #[default]
    NextDailyCheck,
    /// The separation clears but the card stays STOPPED until a restore.
    Never,
}

/// The standing settings of a simulated account (configuration `[simulator.<account>]`):
/// its misbehaviour (what share of calls fail and how, also set by SimulatorService.SetFaults)
/// and how it takes changes (repeat window, orders, what a rebind lifts; SetFaults keeps
/// these as they are).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
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
    /// The repeat window in seconds: a stop, restore or rebind of a card this soon after its
    /// last accepted change is deferred. None: the account's own repeat window; 0: none.
    pub repeat_window_s: Option<u64>,
    /// False: a change is applied at once. True: it is taken as an order that completes
    /// `order_delay_s` later, and only then applied.
    pub orders: bool,
    /// How long an order takes, in seconds of the card clock (default 60).
    pub order_delay_s: u64,
    /// What the next daily check does after a rebind ended a card's machine-card separation.
    pub rebind_lifts_stop: RebindLiftsStop,
}

impl Default for SimFaults {
    fn default() -> SimFaults {
        SimFaults {
            error_rate: 0.0,
            latency_ms: 0,
            rate_limit_rate: 0.0,
            timeout_after_apply_rate: 0.0,
            down: false,
            traffic_bytes_per_hour: 0,
            responses_lost: false,
            repeat_window_s: None,
            orders: false,
            order_delay_s: 60,
            rebind_lifts_stop: RebindLiftsStop::default(),
        }
    }
}

impl SimFaults {
    /// Each error starts with the key it is about (SetFaults names the field by it).
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
        if self
            .repeat_window_s
            .is_some_and(|w| w > MAX_REPEAT_WINDOW_S)
        {
            return Err(format!(
                "repeat_window_s must be at most {MAX_REPEAT_WINDOW_S} (a day), got {}",
                self.repeat_window_s.unwrap_or_default()
            ));
        }
        if self.order_delay_s > MAX_ORDER_DELAY_S {
            return Err(format!(
                "order_delay_s must be at most {MAX_ORDER_DELAY_S} (30 days), got {}",
                self.order_delay_s
            ));
        }
        Ok(())
    }

    /// These faults with `settings`' repeat window, orders and rebind setting: what SetFaults
    /// sets, leaving how the account takes changes as configured.
    pub fn with_change_settings_of(self, settings: SimFaults) -> SimFaults {
        SimFaults {
            repeat_window_s: settings.repeat_window_s,
            orders: settings.orders,
            order_delay_s: settings.order_delay_s,
            rebind_lifts_stop: settings.rebind_lifts_stop,
            ..self
        }
    }
}

/// A simulated card's machine-card binding, as the harness shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SimBinding {
    /// The IMEI the card is bound to; None: not bound.
    pub bound_imei: Option<String>,
    /// The device the card is in; None: none seen.
    pub device_imei: Option<String>,
    /// The carrier stopped the card for machine-card separation.
    pub device_stopped: bool,
}

/// A simulated card's machine-card binding and how its stop came about (times on the card
/// clock, Unix milliseconds), as `sim_cards` stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimBindingRow {
    pub state: ServiceState,
    pub bound_imei: Option<String>,
    pub device_imei: Option<String>,
    pub device_since_ms: Option<i64>,
    /// When a daily check stopped the card for machine-card separation; None: it did not.
    pub device_stopped_ms: Option<i64>,
    /// The STOPPED state is the daily check's, not a change's.
    pub carrier_stopped: bool,
    pub rebound_ms: Option<i64>,
}

impl SimBindingRow {
    /// Bound, and in a device other than the bound one.
    pub fn separated(&self) -> bool {
        matches!((&self.bound_imei, &self.device_imei), (Some(b), Some(d)) if b != d)
    }
}

/// One change a simulated account accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimOrder {
    pub order_num: String,
    pub seq: i64,
    pub iccid: Iccid,
    /// STOP, RESTORE, CANCEL or REBIND.
    pub action: String,
    /// A rebind's mode and IMEI as JSON; empty for none.
    pub params: String,
    pub created_ms: i64,
    pub completes_ms: i64,
    /// `inProgress`, `completed` or `failed`; `refused` for a card of a batch that did not
    /// take the change (its code and message in `params`).
    pub status: String,
    /// The batch job the order belongs to; empty for a change sent on its own.
    pub job_id: String,
}

pub use crate::domain::ids::is_imei;

fn store_error(e: crate::store::StoreError) -> CarrierError {
    CarrierError::Transient(e.to_string())
}

fn action_of(change: &Change) -> &'static str {
    match change {
        Change::Stop => "STOP",
        Change::Restore => "RESTORE",
        Change::Cancel => "CANCEL",
        Change::Rebind(_) => "REBIND",
    }
}

/// The order statuses kept, in OneLink's words (onelink.md §3.1).
const ORDER_OPEN: &str = "inProgress";
const ORDER_DONE: &str = "completed";
const ORDER_FAILED: &str = "failed";

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
    /// The account's own repeat window (its `[[accounts]]` entry), used when the settings do
    /// not set `repeat_window_s`.
    account_window: std::time::Duration,
    /// Held while due orders and daily checks are applied and while a change or a harness
    /// control writes, so that each is applied once and in time order within this process.
    settling: tokio::sync::Mutex<()>,
    /// Requests its wire simulators answered, by path (see [`SimCarrier::count_wire_call`]).
    wire_calls: Mutex<BTreeMap<String, u64>>,
}

impl SimCarrier {
    /// The carrier's default account.
    pub fn new(policy: CarrierPolicy, store: Store, clock: Arc<dyn Clock>) -> SimCarrier {
        SimCarrier::for_account(AccountId::default_for(policy.carrier), policy, store, clock)
    }

    /// A simulated account with its standing settings from configuration (`[simulator.<id>]`)
    /// and the account's own repeat window (used unless the settings set `repeat_window_s`).
    pub fn configured(
        account: AccountId,
        policy: CarrierPolicy,
        store: Store,
        clock: Arc<dyn Clock>,
        faults: &BTreeMap<AccountId, SimFaults>,
        repeat_window: std::time::Duration,
    ) -> Arc<SimCarrier> {
        let mut sim = SimCarrier::for_account(account, policy, store, clock);
        sim.account_window = repeat_window;
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
            account_window: std::time::Duration::ZERO,
            settling: tokio::sync::Mutex::new(()),
            wire_calls: Mutex::new(BTreeMap::new()),
        }
    }

    /// The standing settings now.
    pub fn settings(&self) -> SimFaults {
        self.faults()
    }

    /// The repeat window in force.
    fn repeat_window(&self) -> std::time::Duration {
        self.faults()
            .repeat_window_s
            .map(std::time::Duration::from_secs)
            .unwrap_or(self.account_window)
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Applies, in time order, every order that completed and every daily check that fell due
    /// since the last time. The caller holds `settling`.
    ///
    /// Between two order completions nothing a check looks at changes (every change and harness
    /// control settles first), so of the daily checks in such a span only the first can do
    /// anything: it runs, stamped with its own time, and the span's later ones are skipped. An
    /// order completing at a check's very time is applied before that check.
    async fn settle_locked(&self) -> Result<(), CarrierError> {
        let account = self.account.as_str();
        let now = self.now_ms();
        let checked = match self
            .store
            .sim_checked_until(account)
            .await
            .map_err(store_error)?
        {
            Some(c) => c,
            None => {
                // A new account: nothing was bound before its first settling.
                let c = last_check_at_or_before(now);
                self.store
                    .sim_set_checked(account, c)
                    .await
                    .map_err(store_error)?;
                c
            }
        };
        let due = self
            .store
            .sim_due_orders(account, now)
            .await
            .map_err(store_error)?;
        let mut from = checked;
        for order in due {
            from = self.checks_until(from, order.completes_ms - 1).await?;
            self.complete(&order).await?;
        }
        let last = self.checks_until(from, now).await?;
        if last > checked {
            self.store
                .sim_set_checked(account, last)
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    /// Runs the first daily check in `(from, to]`, if any; returns up to when checks are done.
    async fn checks_until(&self, from: i64, to: i64) -> Result<i64, CarrierError> {
        let first = first_check_after(from);
        if first > to {
            return Ok(from);
        }
        let lift = self.faults().rebind_lifts_stop == RebindLiftsStop::NextDailyCheck;
        let (lifted, stopped) = self
            .store
            .sim_daily_check(self.account.as_str(), first, lift)
            .await
            .map_err(store_error)?;
        if lifted + stopped > 0 {
            tracing::debug!(account = %self.account, lifted, stopped, "simulated daily check");
        }
        Ok(last_check_at_or_before(to))
    }

    /// Settles, for a read or a harness control.
    async fn settle(&self) -> Result<(), CarrierError> {
        let _held = self.settling.lock().await;
        self.settle_locked().await
    }

    /// Completes a due order: applies its change, or fails it when the card no longer allows
    /// it (cancelled meanwhile, or separated before a restore).
    async fn complete(&self, order: &SimOrder) -> Result<(), CarrierError> {
        let change = match order.action.as_str() {
            "STOP" => Change::Stop,
            "RESTORE" => Change::Restore,
            "CANCEL" => Change::Cancel,
            "REBIND" => Change::Rebind(serde_json::from_str(&order.params).map_err(|e| {
                CarrierError::Transient(format!("order {}: params: {e}", order.order_num))
            })?),
            other => {
                return Err(CarrierError::Transient(format!(
                    "order {}: unknown action {other:?}",
                    order.order_num
                )))
            }
        };
        let row = self
            .store
            .sim_binding(self.account.as_str(), &order.iccid)
            .await
            .map_err(store_error)?;
        let status = match row {
            Some(row) if self.refusal(&order.iccid, &row, &change).is_none() => {
                self.apply(&order.iccid, &row, &change, order.completes_ms)
                    .await?;
                ORDER_DONE
            }
            _ => ORDER_FAILED,
        };
        self.store
            .sim_end_order(self.account.as_str(), &order.order_num, status)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Why the card refuses `change` as it stands (the repeat window apart); None: it takes it.
    fn refusal(&self, iccid: &Iccid, row: &SimBindingRow, change: &Change) -> Option<CarrierError> {
        if row.state == ServiceState::Cancelled && *change != Change::Cancel {
            return Some(CarrierError::Rejected {
                code: "CARD_CANCELLED".into(),
                message: format!("{iccid} is cancelled at {}", self.id.display_name()),
            });
        }
        match change {
            Change::Restore if row.device_stopped_ms.is_some() => {
                // Invented code: the platform's refusal of this restore is not published.
                Some(CarrierError::Rejected {
                    code: "SIM_DEVICE_MISMATCH".into(),
                    message: format!(
                        "{iccid} was stopped for machine-card separation (机卡分离): only a \
                         rebind ends it (simulated)"
                    ),
                })
            }
            Change::Rebind(Rebind::CurrentDevice) if row.device_imei.is_none() => {
                Some(CarrierError::Rejected {
                    code: "SIM_NO_DEVICE".into(),
                    message: format!("{iccid} has been in no device to bind to (simulated)"),
                })
            }
            Change::Rebind(Rebind::Imei(x)) if !is_imei(x) => Some(CarrierError::Rejected {
                code: "SIM_BAD_IMEI".into(),
                message: format!("{x:?} is not an IMEI of 15 digits (simulated)"),
            }),
            _ => None,
        }
    }

    /// Applies an accepted change at `at_ms`.
    async fn apply(
        &self,
        iccid: &Iccid,
        row: &SimBindingRow,
        change: &Change,
        at_ms: i64,
    ) -> Result<(), CarrierError> {
        let account = self.account.as_str();
        let to = match change {
            Change::Stop => ServiceState::Stopped,
            Change::Restore => ServiceState::Active,
            Change::Cancel => ServiceState::Cancelled,
            Change::Rebind(r) => {
                let bound = match r {
                    Rebind::Unbind => None,
                    Rebind::CurrentDevice => row.device_imei.as_deref(),
                    Rebind::Imei(x) => Some(x.as_str()),
                };
                return self
                    .store
                    .sim_rebind(account, iccid, bound, at_ms)
                    .await
                    .map_err(store_error);
            }
        };
        self.store
            .sim_set_state(account, iccid, to, at_ms)
            .await
            .map_err(store_error)
    }

    /// The card's binding as the harness shows it (no simulated fault applies).
    pub async fn binding_of(&self, iccid: &Iccid) -> Result<SimBinding, CarrierError> {
        self.settle().await?;
        let row = self.binding_row(iccid).await?;
        Ok(SimBinding {
            bound_imei: row.bound_imei,
            device_imei: row.device_imei,
            device_stopped: row.device_stopped_ms.is_some(),
        })
    }

    async fn binding_row(&self, iccid: &Iccid) -> Result<SimBindingRow, CarrierError> {
        self.store
            .sim_binding(self.account.as_str(), iccid)
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(self.id, iccid))
    }

    /// Harness: binds the card to device `imei`, which it is then in (as the carrier's first
    /// bill in a device binds it, 首话单自动绑定). Not a rebind: it sets the card up, it does not
    /// lift a separation stop.
    pub async fn bind(&self, iccid: &Iccid, imei: &str) -> Result<CarrierCard, CarrierError> {
        self.put_in_device(iccid, imei, true).await
    }

    /// Harness: puts the card in device `imei`. A bound card in another device is stopped at
    /// the next daily check.
    pub async fn move_to_device(
        &self,
        iccid: &Iccid,
        imei: &str,
    ) -> Result<CarrierCard, CarrierError> {
        self.put_in_device(iccid, imei, false).await
    }

    async fn put_in_device(
        &self,
        iccid: &Iccid,
        imei: &str,
        bind: bool,
    ) -> Result<CarrierCard, CarrierError> {
        if !is_imei(imei) {
            return Err(CarrierError::Rejected {
                code: "SIM_BAD_IMEI".into(),
                message: format!("imei {imei:?} must be exactly 15 digits"),
            });
        }
        let _held = self.settling.lock().await;
        self.settle_locked().await?;
        let found = self
            .store
            .sim_put_in_device(self.account.as_str(), iccid, imei, bind, self.now_ms())
            .await
            .map_err(store_error)?;
        if !found {
            return Err(not_found(self.id, iccid));
        }
        self.read_raw(iccid).await
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
            (bytes, since.timestamp_millis())
        };
        let (bytes, since_ms) = bytes;
        self.store
            .sim_add_traffic(
                self.account.as_str(),
                bytes,
                self.cycle_ms(),
                now.timestamp_millis(),
                &split_by_day(bytes, since_ms, now.timestamp_millis()),
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

    /// The simulator's own record of a card, without any simulated failure, after whatever
    /// fell due.
    async fn read(&self, iccid: &Iccid) -> Result<CarrierCard, CarrierError> {
        self.settle().await?;
        self.read_raw(iccid).await
    }

    /// The record as stored; the caller settled.
    async fn read_raw(&self, iccid: &Iccid) -> Result<CarrierCard, CarrierError> {
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
        let _held = self.settling.lock().await;
        self.settle_locked().await?;
        self.read_raw(iccid).await?;
        self.store
            .sim_set_state(self.account.as_str(), iccid, to, self.now_ms())
            .await
            .map_err(|e| CarrierError::Transient(e.to_string()))?;
        self.read_raw(iccid).await
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

    /// The faults a change meets before the platform looks at it: an injected one, the
    /// standing ones (unless its answers are lost, when it lands), a rate-limit answer. Ok: the
    /// settings it is taken under.
    async fn change_faults(&self) -> Result<SimFaults, CarrierError> {
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
        Ok(f)
    }

    /// Takes a change as the platform would: injected and standing faults first, then the
    /// card's refusals and its repeat window (a cancel, the carrier's own release of the
    /// number, is exempt), then an order, applied now or when it completes.
    async fn change(&self, iccid: &Iccid, change: &Change) -> Result<Receipt, CarrierError> {
        let f = self.change_faults().await?;
        // The account's lock is held for its bookkeeping (due orders, daily checks) only: the
        // card's own work runs beside other cards' changes, as a platform takes many cards'
        // changes at once. One card's changes never overlap (simgate sends one at a time).
        self.settle().await?;
        let receipt = self.take_order(iccid, change, &f).await?;
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
        Ok(receipt)
    }

    /// The refusals, the window and the order of `change`; the caller has settled.
    async fn take_order(
        &self,
        iccid: &Iccid,
        change: &Change,
        f: &SimFaults,
    ) -> Result<Receipt, CarrierError> {
        let row = self.binding_row(iccid).await?;
        if let Some(refused) = self.refusal(iccid, &row, change) {
            return Err(refused);
        }
        if let Some(remaining) = self.window_left(iccid, change).await? {
            return Err(CarrierError::Deferred {
                code: "SIM_REPEAT_WINDOW".into(),
                message: format!(
                    "同一卡号{}分钟内不能重复办理业务 (simulated)",
                    self.repeat_window().as_secs().div_ceil(60)
                ),
                retry_after: Some(remaining),
            });
        }
        self.insert_order(iccid, &row, change, f, "").await
    }

    /// How much of the card's repeat window is left for `change` (None: none; a cancel, the
    /// carrier's own release of the number, has no window).
    async fn window_left(
        &self,
        iccid: &Iccid,
        change: &Change,
    ) -> Result<Option<std::time::Duration>, CarrierError> {
        let window = self.repeat_window();
        if *change == Change::Cancel || window.is_zero() {
            return Ok(None);
        }
        let Some(last) = self
            .store
            .sim_last_change_ms(self.account.as_str(), iccid)
            .await
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        // At most the window: a clock restarted behind the last change (an offset clock after
        // a restart) must not defer a card for longer.
        let remaining = (last.saturating_add(window_ms) - self.now_ms()).min(window_ms);
        Ok((remaining > 0)
            .then(|| std::time::Duration::from_millis(u64::try_from(remaining).unwrap_or(0))))
    }

    /// Records the order of an accepted change (of batch `job_id`, or "" for none) and applies
    /// it now unless the account takes changes as orders.
    async fn insert_order(
        &self,
        iccid: &Iccid,
        row: &SimBindingRow,
        change: &Change,
        f: &SimFaults,
        job_id: &str,
    ) -> Result<Receipt, CarrierError> {
        let now = self.now_ms();
        // A cancel is the carrier's own release of the number: never left waiting.
        let later = f.orders && *change != Change::Cancel;
        let delay_ms = i64::try_from(f.order_delay_s)
            .unwrap_or(i64::MAX / 2_000)
            .saturating_mul(1000);
        let mut order = SimOrder {
            order_num: String::new(),
            seq: 0,
            iccid: iccid.clone(),
            action: action_of(change).into(),
            params: match change {
                Change::Rebind(r) => serde_json::to_string(r)
                    .map_err(|e| CarrierError::Transient(format!("rebind params: {e}")))?,
                _ => String::new(),
            },
            created_ms: now,
            completes_ms: if later {
                now.saturating_add(delay_ms)
            } else {
                now
            },
            status: if later { ORDER_OPEN } else { ORDER_DONE }.into(),
            job_id: job_id.to_string(),
        };
        self.insert_numbered(&mut order).await?;
        if later {
            return Ok(Receipt::in_progress(Some(order.order_num)));
        }
        self.apply(iccid, row, change, now).await?;
        Ok(Receipt::applied_as(order.order_num))
    }

    /// Stores `order` under the account's next number (`SIM` and its sequence).
    async fn insert_numbered(&self, order: &mut SimOrder) -> Result<(), CarrierError> {
        let account = self.account.as_str();
        // Two servers simulating one account on one database (the replica tests) may take the
        // same next number; the loser's insert fails on the unique index and takes the next.
        let mut attempt = 0;
        loop {
            order.seq = self
                .store
                .sim_next_order_seq(account)
                .await
                .map_err(store_error)?;
            order.order_num = format!("SIM{:010}", order.seq);
            match self.store.sim_insert_order(account, order).await {
                Ok(()) => return Ok(()),
                Err(crate::store::StoreError::Db(_)) if attempt < 5 => attempt += 1,
                Err(e) => return Err(store_error(e)),
            }
        }
    }

    /// Takes a stop or restore for many cards at once, as OneLink's `/change/sim-status/batch`
    /// does (onelink.md §4): one card inside its repeat window fails the whole batch, with a
    /// message that names no card, and no card of it counts as changed. Otherwise every card
    /// gets an order of the job (`JOB` and the job's number): applied now or when the order
    /// completes; a card that refuses the change (cancelled, unknown) is recorded refused in
    /// the job, with its code and message, and the others go on. Faults apply as to a change.
    pub async fn take_batch(
        &self,
        iccids: &[Iccid],
        change: &Change,
    ) -> Result<BatchReceipt, CarrierError> {
        if !matches!(change, Change::Stop | Change::Restore) {
            return Err(CarrierError::Rejected {
                code: "SIM_BATCH_CHANGE".into(),
                message: "a batch carries stops or restores only (simulated)".into(),
            });
        }
        let f = self.change_faults().await?;
        self.settle().await?;
        for iccid in iccids {
            if self.window_left(iccid, change).await?.is_some() {
                return Err(CarrierError::Deferred {
                    code: "SIM_BATCH_REPEAT_WINDOW".into(),
                    message: format!(
                        "批量办理中有卡号在{}分钟内有成功调用，本次不允许调用 (simulated; the card is not named)",
                        self.repeat_window().as_secs().div_ceil(60)
                    ),
                    retry_after: None,
                });
            }
        }
        let job_seq = self
            .store
            .sim_next_order_seq(self.account.as_str())
            .await
            .map_err(store_error)?;
        // The job's number comes from the order sequence: distinct from every order number and
        // from every other job of the account (its first order takes that number or a later one).
        let job_id = format!("JOB{job_seq:010}");
        for iccid in iccids {
            // A card the platform does not know, or whose state refuses the change, is
            // recorded refused in the job; the others go on.
            let refused = match self.binding_row(iccid).await {
                Ok(row) => match self.refusal(iccid, &row, change) {
                    None => {
                        self.insert_order(iccid, &row, change, &f, &job_id).await?;
                        continue;
                    }
                    Some(refused) => refused,
                },
                Err(refused @ CarrierError::Rejected { .. }) => refused,
                Err(e) => return Err(e),
            };
            let CarrierError::Rejected { code, message } = refused else {
                return Err(refused);
            };
            let now = self.now_ms();
            let mut order = SimOrder {
                order_num: String::new(),
                seq: 0,
                iccid: iccid.clone(),
                action: action_of(change).into(),
                params: serde_json::json!({ "code": code, "message": message }).to_string(),
                created_ms: now,
                completes_ms: now,
                status: ORDER_REFUSED.into(),
                job_id: job_id.clone(),
            };
            self.insert_numbered(&mut order).await?;
        }
        if f.responses_lost {
            return Err(CarrierError::OutcomeUnknown(
                "simulated: the batch was taken and its answer never arrived".into(),
            ));
        }
        if self.roll(f.timeout_after_apply_rate) {
            return Err(CarrierError::OutcomeUnknown(
                "simulated timeout after the batch was taken".into(),
            ));
        }
        Ok(BatchReceipt { job_id })
    }

    /// Where batch job `job_id` stands, card by card (every card of the job, whatever
    /// `iccids` names). Unknown job: Rejected `SIM_NO_SUCH_JOB`.
    pub async fn job(&self, job_id: &str) -> Result<BatchJob, CarrierError> {
        self.settle().await?;
        let orders = self
            .store
            .sim_job_orders(self.account.as_str(), job_id)
            .await
            .map_err(store_error)?;
        if orders.is_empty() {
            return Err(CarrierError::Rejected {
                code: "SIM_NO_SUCH_JOB".into(),
                message: format!("no batch job {job_id} (simulated)"),
            });
        }
        let items: Vec<(Iccid, BatchItem)> = orders
            .into_iter()
            .map(|o| {
                let item = match o.status.as_str() {
                    ORDER_DONE => BatchItem::Applied,
                    ORDER_OPEN => BatchItem::Open,
                    _ => {
                        let v: serde_json::Value =
                            serde_json::from_str(&o.params).unwrap_or_default();
                        BatchItem::Failed {
                            code: v["code"].as_str().unwrap_or("SIM_FAILED").to_string(),
                            message: v["message"]
                                .as_str()
                                .unwrap_or("the order failed (simulated)")
                                .to_string(),
                        }
                    }
                };
                (o.iccid, item)
            })
            .collect();
        let open = items.iter().filter(|(_, i)| *i == BatchItem::Open).count();
        let failed = items
            .iter()
            .filter(|(_, i)| matches!(i, BatchItem::Failed { .. }))
            .count();
        let status = if open > 0 {
            JOB_RUNNING
        } else if failed == items.len() {
            JOB_FAILED
        } else if failed > 0 {
            JOB_DONE_WITH_FAILURES
        } else {
            JOB_DONE
        };
        Ok(BatchJob {
            finished: open == 0,
            status: status.into(),
            items,
        })
    }

    /// Page `page` (from 1, `page_size` a page) of the cards whose state changed after `since`
    /// (card clock), oldest change first, and whether it is the last: a platform's list of
    /// modified cards (Control Center `devices?modifiedSince`).
    pub async fn modified_since(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        page: u32,
        page_size: u32,
    ) -> Result<
        (
            Vec<(Iccid, ServiceState, chrono::DateTime<chrono::Utc>)>,
            bool,
        ),
        CarrierError,
    > {
        self.settle().await?;
        let page_size = page_size.max(1);
        let offset = u64::from(page.max(1) - 1) * u64::from(page_size);
        // One more than a page: whether another follows.
        let mut rows = self
            .store
            .sim_modified_since(
                self.account.as_str(),
                since.timestamp_millis(),
                offset,
                page_size + 1,
            )
            .await
            .map_err(store_error)?;
        let last = rows.len() <= page_size as usize;
        rows.truncate(page_size as usize);
        Ok((
            rows.into_iter()
                .map(|(i, s, ms)| {
                    (
                        i,
                        s,
                        chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default(),
                    )
                })
                .collect(),
            last,
        ))
    }

    /// Data each card of `iccids` used from the start of the day of `from` to the start of the
    /// day of `to` (whole Beijing days, card clock): what a batch usage call answers. Its data
    /// runs up to yesterday: pass today as `to`. Cards without usage in the range are absent.
    pub async fn usage_between(
        &self,
        iccids: &[Iccid],
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    ) -> Result<std::collections::HashMap<Iccid, u64>, CarrierError> {
        self.accrue_traffic().await?;
        self.store
            .sim_usage_between(
                self.account.as_str(),
                iccids,
                day_start_ms(from.timestamp_millis()),
                day_start_ms(to.timestamp_millis()),
            )
            .await
            .map_err(store_error)
    }

    /// Start of the carrier's billing cycle at `at` (its usage counters belong to it).
    pub fn cycle_start_at(
        &self,
        at: chrono::DateTime<chrono::Utc>,
    ) -> chrono::DateTime<chrono::Utc> {
        self.policy.cycle_bounds(at).0
    }

    /// The simulated platform's clock (the card clock).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Counts one request a wire simulator of this account answered, by its path with every
    /// segment that names a card (15 or more characters, mostly digits: an ICCID, IMSI or
    /// access number) shown as `{card}`, so that a card-by-card platform counts by call.
    pub fn count_wire_call(&self, path: &str) {
        let key = path
            .split('/')
            .map(|seg| {
                let digits = seg.bytes().filter(u8::is_ascii_digit).count();
                if seg.len() >= 15 && digits * 4 >= seg.len() * 3 {
                    "{card}"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        *self
            .wire_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Requests the account's wire simulators answered since it started, by path.
    pub fn wire_calls(&self) -> BTreeMap<String, u64> {
        self.wire_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A batch job's state in the simulators' words (OneLink `jobStatus` 1, 2, 3, 4: onelink.md
/// §4.1; its wire simulator maps them back).
pub const JOB_RUNNING: &str = "inProgress";
pub const JOB_DONE: &str = "completed";
pub const JOB_DONE_WITH_FAILURES: &str = "completedWithFailures";
pub const JOB_FAILED: &str = "failed";

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
        let cycle = self.cycle_ms();
        let usage_day = (day_start_ms(self.now_ms()) - DAY_MS).max(cycle);
        self.store
            .sim_onboard(self.account.as_str(), cards, cycle, usage_day)
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
        self.settle().await?;
        self.store
            .sim_cards(self.account.as_str(), iccids, self.cycle_ms())
            .await
            .map_err(|e| CarrierError::Transient(e.to_string()))
    }

    fn batch_limit(&self) -> usize {
        SIM_BATCH
    }

    // The in-process simulator changes card by card (`batch_change_limit` stays 1), so that
    // the journal's batch path is exercised against a platform's own batch call, over its wire;
    // its wire simulators call these.
    async fn change_batch(
        &self,
        iccids: &[Iccid],
        change: &Change,
    ) -> Result<BatchReceipt, CarrierError> {
        self.take_batch(iccids, change).await
    }

    async fn batch_job(&self, job_id: &str, _iccids: &[Iccid]) -> Result<BatchJob, CarrierError> {
        self.job(job_id).await
    }

    async fn stop(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.change(iccid, &Change::Stop).await
    }

    async fn restore(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.change(iccid, &Change::Restore).await
    }

    async fn cancel(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.change(iccid, &Change::Cancel).await
    }

    async fn rebind(&self, iccid: &Iccid, rebind: &Rebind) -> Result<Receipt, CarrierError> {
        self.change(iccid, &Change::Rebind(rebind.clone())).await
    }

    fn rebind_modes(&self) -> Vec<&'static str> {
        [
            Rebind::Unbind,
            Rebind::CurrentDevice,
            Rebind::Imei(String::new()),
        ]
        .iter()
        .map(Rebind::mode)
        .collect()
    }

    fn queries_orders(&self) -> bool {
        true
    }

    async fn order(&self, iccid: &Iccid, order_id: &str) -> Result<OrderProgress, CarrierError> {
        self.weather().await?;
        self.settle().await?;
        let order = self
            .store
            .sim_order(self.account.as_str(), order_id)
            .await
            .map_err(store_error)?
            .filter(|o| &o.iccid == iccid)
            .ok_or_else(|| CarrierError::Rejected {
                // Invented: OneLink's code for an unknown order number is not published.
                code: "SIM_ORDER_UNKNOWN".into(),
                message: format!("no order {order_id} for {iccid} (simulated)"),
            })?;
        Ok(match order.status.as_str() {
            ORDER_DONE => OrderProgress::Completed,
            ORDER_OPEN => OrderProgress::Open(order.status),
            _ => OrderProgress::Failed(order.status),
        })
    }

    async fn stop_reasons(&self, iccid: &Iccid) -> Result<Option<StopReasons>, CarrierError> {
        self.weather().await?;
        self.settle().await?;
        let row = self.binding_row(iccid).await?;
        let mut reasons = StopReasons::NONE;
        if row.state == ServiceState::Stopped {
            if row.device_stopped_ms.is_some() {
                reasons.insert(StopReason::DeviceMismatch);
            }
            if !row.carrier_stopped {
                reasons.insert(StopReason::Manual);
            }
        }
        Ok(Some(reasons))
    }

    async fn binding(&self, iccid: &Iccid) -> Result<Option<Binding>, CarrierError> {
        self.weather().await?;
        self.settle().await?;
        let row = self.binding_row(iccid).await?;
        let separated = row.separated();
        Ok(Some(Binding {
            bound: row.bound_imei.is_some(),
            imei: row.device_imei.clone(),
            separated,
            separated_since: row
                .device_since_ms
                .filter(|_| separated)
                .and_then(chrono::DateTime::from_timestamp_millis),
        }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::StoreOptions;
    use chrono::TimeZone;
    use std::time::Duration;

    const IMEI_A: &str = "860000000000001";
    const IMEI_B: &str = "860000000000002";

    struct Fixture {
        sim: SimCarrier,
        store: Store,
        clock: ManualClock,
        iccid: Iccid,
        _dir: tempfile::TempDir,
    }

    /// 2026-11-25 02:00 UTC (10:00 in Beijing): the next daily check is at 16:00 UTC.
    fn start() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc.with_ymd_and_hms(2026, 11, 25, 2, 0, 0).unwrap()
    }

    async fn fixture(settings: SimFaults) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("sim.db").display());
        let store = Store::connect(&url, StoreOptions::default()).await.unwrap();
        let clock = ManualClock::new(start());
        let sim = new_sim(&store, &clock, settings);
        let iccid = Iccid::from_trusted("89860400000000000001".into());
        sim.onboard(&[OnboardCard {
            iccid: iccid.clone(),
            state: ServiceState::Active,
            cycle_usage_bytes: 0,
            msisdn: None,
        }])
        .await
        .unwrap();
        Fixture {
            sim,
            store,
            clock,
            iccid,
            _dir: dir,
        }
    }

    fn new_sim(store: &Store, clock: &ManualClock, settings: SimFaults) -> SimCarrier {
        let sim = SimCarrier::new(
            CarrierPolicy::default_for(CarrierId::Mobile),
            store.clone(),
            Arc::new(clock.clone()),
        );
        sim.set_faults(settings);
        sim
    }

    impl Fixture {
        fn advance(&self, by: chrono::Duration) {
            self.clock.advance(by).unwrap();
        }

        /// Moves the clock to `h:m` UTC of the start day.
        fn at_utc(&self, h: u32, m: u32) {
            let to = chrono::Utc.with_ymd_and_hms(2026, 11, 25, h, m, 0).unwrap();
            self.clock.set(to).unwrap();
        }

        async fn state(&self) -> ServiceState {
            self.sim.inspect(&self.iccid).await.unwrap().state
        }

        async fn changes(&self) -> u64 {
            self.sim.inspect(&self.iccid).await.unwrap().changes
        }

        async fn device_stopped(&self) -> bool {
            self.sim
                .binding_of(&self.iccid)
                .await
                .unwrap()
                .device_stopped
        }

        async fn reasons(&self) -> Vec<StopReason> {
            self.sim
                .stop_reasons(&self.iccid)
                .await
                .unwrap()
                .unwrap()
                .iter()
                .collect()
        }

        /// Bound to A, moved to B, stopped by the 16:00 UTC check.
        async fn separated_and_stopped(&self) {
            self.sim.bind(&self.iccid, IMEI_A).await.unwrap();
            self.sim.move_to_device(&self.iccid, IMEI_B).await.unwrap();
            self.at_utc(16, 0);
            assert_eq!(self.state().await, ServiceState::Stopped);
            assert!(self.device_stopped().await);
        }
    }

    fn windowed(seconds: u64) -> SimFaults {
        SimFaults {
            repeat_window_s: Some(seconds),
            ..SimFaults::default()
        }
    }

    fn with_orders() -> SimFaults {
        SimFaults {
            orders: true,
            order_delay_s: 60,
            ..SimFaults::default()
        }
    }

    #[test]
    fn daily_checks_fall_at_midnight_in_beijing() {
        let t = start().timestamp_millis();
        let check = chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, 16, 0, 0)
            .unwrap();
        assert_eq!(first_check_after(t), check.timestamp_millis());
        assert_eq!(
            first_check_after(check.timestamp_millis()),
            check.timestamp_millis() + DAY_MS
        );
        assert_eq!(
            last_check_at_or_before(check.timestamp_millis()),
            check.timestamp_millis()
        );
        assert_eq!(
            last_check_at_or_before(check.timestamp_millis() - 1),
            check.timestamp_millis() - DAY_MS
        );
    }

    #[test]
    fn settings_parse_with_defaults_and_refuse_bad_values_naming_the_key() {
        let s: SimFaults = toml::from_str("orders = true").unwrap();
        assert!(s.orders);
        assert_eq!(s.order_delay_s, 60);
        assert_eq!(s.repeat_window_s, None);
        assert_eq!(s.rebind_lifts_stop, RebindLiftsStop::NextDailyCheck);
        let s: SimFaults =
            toml::from_str("rebind_lifts_stop = \"never\"\nrepeat_window_s = 0").unwrap();
        assert_eq!(s.rebind_lifts_stop, RebindLiftsStop::Never);
        assert_eq!(s.repeat_window_s, Some(0));
        let bad = toml::from_str::<SimFaults>("rebind_lifts_stop = \"sometimes\"").unwrap_err();
        assert!(bad.to_string().contains("next_daily_check"), "{bad}");
        let e = windowed(MAX_REPEAT_WINDOW_S + 1).validate().unwrap_err();
        assert!(e.starts_with("repeat_window_s "), "{e}");
        let e = SimFaults {
            order_delay_s: MAX_ORDER_DELAY_S + 1,
            ..SimFaults::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.starts_with("order_delay_s "), "{e}");
        assert!(windowed(1800).validate().is_ok());
    }

    #[test]
    fn set_faults_keeps_the_change_settings() {
        let configured = SimFaults {
            orders: true,
            order_delay_s: 5,
            repeat_window_s: Some(30),
            rebind_lifts_stop: RebindLiftsStop::Never,
            ..SimFaults::default()
        };
        let set = SimFaults {
            error_rate: 0.5,
            ..SimFaults::default()
        }
        .with_change_settings_of(configured);
        assert_eq!(set.error_rate, 0.5);
        assert_eq!(
            (set.orders, set.order_delay_s, set.repeat_window_s),
            (true, 5, Some(30))
        );
        assert_eq!(set.rebind_lifts_stop, RebindLiftsStop::Never);
    }

    #[tokio::test]
    async fn a_change_inside_the_repeat_window_is_deferred_until_it_ends_on_the_sim_clock() {
        let f = fixture(windowed(1800)).await;
        let r = f.sim.stop(&f.iccid).await.unwrap();
        assert_eq!(r, Receipt::applied_as("SIM0000000001"));
        f.advance(chrono::Duration::minutes(10));
        let e = f.sim.restore(&f.iccid).await.unwrap_err();
        match e {
            CarrierError::Deferred {
                code,
                message,
                retry_after,
            } => {
                assert_eq!(code, "SIM_REPEAT_WINDOW");
                assert!(message.contains("30分钟"), "{message}");
                assert_eq!(retry_after, Some(Duration::from_secs(20 * 60)));
            }
            other => panic!("expected a deferral, got {other:?}"),
        }
        // Nothing applied, and the refusal opened no window of its own.
        assert_eq!(f.state().await, ServiceState::Stopped);
        assert_eq!(f.changes().await, 1);
        let rebind = f.sim.rebind(&f.iccid, &Rebind::Unbind).await.unwrap_err();
        assert!(
            matches!(rebind, CarrierError::Deferred { .. }),
            "{rebind:?}"
        );
        f.advance(chrono::Duration::minutes(20) - chrono::Duration::seconds(1));
        assert!(matches!(
            f.sim.restore(&f.iccid).await,
            Err(CarrierError::Deferred { retry_after: Some(d), .. }) if d == Duration::from_secs(1)
        ));
        f.advance(chrono::Duration::seconds(1));
        let r = f.sim.restore(&f.iccid).await.unwrap();
        assert_eq!(r, Receipt::applied_as("SIM0000000002"));
        assert_eq!(f.state().await, ServiceState::Active);
        assert_eq!(f.changes().await, 2);
        // A cancel (the carrier releasing the number) is exempt.
        f.sim.cancel(&f.iccid).await.unwrap();
        assert_eq!(f.state().await, ServiceState::Cancelled);
    }

    #[tokio::test]
    async fn the_account_window_applies_unless_the_settings_set_one() {
        let f = fixture(SimFaults::default()).await;
        let account = SimCarrier::configured(
            AccountId::default_for(CarrierId::Mobile),
            CarrierPolicy::default_for(CarrierId::Mobile),
            f.store.clone(),
            Arc::new(f.clock.clone()),
            &BTreeMap::new(),
            Duration::from_secs(180),
        );
        account.stop(&f.iccid).await.unwrap();
        assert!(matches!(
            account.restore(&f.iccid).await,
            Err(CarrierError::Deferred { retry_after: Some(d), .. }) if d == Duration::from_secs(180)
        ));
        account.set_faults(windowed(0));
        account.restore(&f.iccid).await.unwrap();
        assert_eq!(f.state().await, ServiceState::Active);
    }

    #[tokio::test]
    async fn a_clock_behind_the_last_change_defers_for_the_window_at_most() {
        let f = fixture(windowed(600)).await;
        let ahead = ManualClock::new(start() + chrono::Duration::hours(1));
        new_sim(&f.store, &ahead, windowed(600))
            .stop(&f.iccid)
            .await
            .unwrap();
        assert!(matches!(
            f.sim.restore(&f.iccid).await,
            Err(CarrierError::Deferred { retry_after: Some(d), .. }) if d == Duration::from_secs(600)
        ));
    }

    #[tokio::test]
    async fn injected_faults_come_before_the_window() {
        let f = fixture(windowed(1800)).await;
        f.sim.inject(Fault::Reject, 1);
        assert!(matches!(
            f.sim.stop(&f.iccid).await,
            Err(CarrierError::Rejected { code, .. }) if code == "SIM_INJECTED"
        ));
        // The refused call was no accepted change: the next one goes through.
        f.sim.stop(&f.iccid).await.unwrap();
        assert_eq!(f.state().await, ServiceState::Stopped);
    }

    #[tokio::test]
    async fn an_order_completes_only_after_its_delay() {
        let f = fixture(with_orders()).await;
        let r = f.sim.stop(&f.iccid).await.unwrap();
        let num = r.order_id.clone().unwrap();
        assert_eq!(r, Receipt::in_progress(Some("SIM0000000001".into())));
        assert!(f.sim.queries_orders());
        assert_eq!(f.state().await, ServiceState::Active);
        assert_eq!(
            f.sim.order(&f.iccid, &num).await.unwrap(),
            OrderProgress::Open("inProgress".into())
        );
        f.advance(chrono::Duration::seconds(59));
        assert_eq!(f.state().await, ServiceState::Active);
        assert_eq!(
            f.sim.order(&f.iccid, &num).await.unwrap(),
            OrderProgress::Open("inProgress".into())
        );
        f.advance(chrono::Duration::seconds(1));
        // A batched read settles it too.
        let read = f.sim.cards(std::slice::from_ref(&f.iccid)).await.unwrap();
        assert_eq!(read[0].state, ServiceState::Stopped);
        assert_eq!(read[0].changes, 1);
        assert_eq!(
            f.sim.order(&f.iccid, &num).await.unwrap(),
            OrderProgress::Completed
        );
        // An unknown number, or one of another card, is refused.
        assert!(matches!(
            f.sim.order(&f.iccid, "SIM0000000099").await,
            Err(CarrierError::Rejected { code, .. }) if code == "SIM_ORDER_UNKNOWN"
        ));
        let other = Iccid::from_trusted("89860400000000000002".into());
        assert!(matches!(
            f.sim.order(&other, &num).await,
            Err(CarrierError::Rejected { .. })
        ));
    }

    #[tokio::test]
    async fn an_order_survives_a_restart_and_numbers_go_on() {
        let Fixture {
            sim,
            store,
            clock,
            iccid,
            _dir,
        } = fixture(with_orders()).await;
        let num = sim.stop(&iccid).await.unwrap().order_id.unwrap();
        drop(sim);
        let again = new_sim(&store, &clock, with_orders());
        clock.advance(chrono::Duration::seconds(60)).unwrap();
        assert_eq!(
            again.order(&iccid, &num).await.unwrap(),
            OrderProgress::Completed
        );
        assert_eq!(
            again.inspect(&iccid).await.unwrap().state,
            ServiceState::Stopped
        );
        let next = again.restore(&iccid).await.unwrap();
        assert_eq!(next.order_id.as_deref(), Some("SIM0000000002"));
    }

    #[tokio::test]
    async fn an_order_the_card_no_longer_allows_fails() {
        let f = fixture(with_orders()).await;
        let num = f.sim.stop(&f.iccid).await.unwrap().order_id.unwrap();
        // The carrier releases the number before the order completes.
        f.sim.cancel(&f.iccid).await.unwrap();
        f.advance(chrono::Duration::seconds(60));
        assert_eq!(
            f.sim.order(&f.iccid, &num).await.unwrap(),
            OrderProgress::Failed("failed".into())
        );
        assert_eq!(f.state().await, ServiceState::Cancelled);
    }

    #[tokio::test]
    async fn a_change_whose_answer_is_lost_still_has_its_order() {
        let f = fixture(windowed(60)).await;
        f.sim.set_faults(SimFaults {
            responses_lost: true,
            ..windowed(60)
        });
        assert!(matches!(
            f.sim.stop(&f.iccid).await,
            Err(CarrierError::OutcomeUnknown(_))
        ));
        f.sim.set_faults(windowed(60));
        assert_eq!(f.state().await, ServiceState::Stopped);
        assert_eq!(
            f.sim.order(&f.iccid, "SIM0000000001").await.unwrap(),
            OrderProgress::Completed
        );
        // The lost change opened the card's window like any accepted one.
        assert!(matches!(
            f.sim.restore(&f.iccid).await,
            Err(CarrierError::Deferred { .. })
        ));
    }

    #[tokio::test]
    async fn the_daily_check_stops_a_moved_bound_card_at_16_utc_and_not_before() {
        let f = fixture(SimFaults::default()).await;
        let c = f.sim.bind(&f.iccid, IMEI_A).await.unwrap();
        assert_eq!(c.state, ServiceState::Active);
        f.sim.move_to_device(&f.iccid, IMEI_B).await.unwrap();
        let b = f.sim.binding(&f.iccid).await.unwrap().unwrap();
        assert!(b.bound && b.separated);
        assert_eq!(b.imei.as_deref(), Some(IMEI_B));
        assert_eq!(b.separated_since, Some(start()));
        f.at_utc(15, 59);
        assert_eq!(f.state().await, ServiceState::Active);
        assert!(!f.device_stopped().await);
        assert!(f.reasons().await.is_empty());
        f.at_utc(16, 0);
        assert_eq!(f.state().await, ServiceState::Stopped);
        assert!(f.device_stopped().await);
        // The carrier's own stop, not one simgate sent.
        assert_eq!(f.changes().await, 0);
        assert_eq!(f.reasons().await, vec![StopReason::DeviceMismatch]);
        let refused = f.sim.restore(&f.iccid).await.unwrap_err();
        assert!(
            matches!(&refused, CarrierError::Rejected { code, .. } if code == "SIM_DEVICE_MISMATCH"),
            "{refused:?}"
        );
        assert_eq!(f.state().await, ServiceState::Stopped);
    }

    #[tokio::test]
    async fn a_card_in_its_bound_device_or_unbound_is_left_alone() {
        let f = fixture(SimFaults::default()).await;
        f.sim.bind(&f.iccid, IMEI_A).await.unwrap();
        f.advance(chrono::Duration::days(3));
        assert_eq!(f.state().await, ServiceState::Active);
        f.sim.rebind(&f.iccid, &Rebind::Unbind).await.unwrap();
        f.sim.move_to_device(&f.iccid, IMEI_B).await.unwrap();
        f.advance(chrono::Duration::days(3));
        assert_eq!(f.state().await, ServiceState::Active);
        assert!(!f.device_stopped().await);
    }

    #[tokio::test]
    async fn a_check_long_after_the_move_still_stops_the_card_once() {
        let f = fixture(SimFaults::default()).await;
        f.sim.bind(&f.iccid, IMEI_A).await.unwrap();
        f.sim.move_to_device(&f.iccid, IMEI_B).await.unwrap();
        f.advance(chrono::Duration::days(400));
        assert_eq!(f.state().await, ServiceState::Stopped);
        assert!(f.device_stopped().await);
        assert_eq!(f.changes().await, 0);
    }

    #[tokio::test]
    async fn a_rebind_lifts_the_stop_at_the_next_daily_check() {
        let f = fixture(SimFaults::default()).await;
        f.separated_and_stopped().await;
        assert_eq!(
            f.sim.rebind_modes(),
            vec!["UNBIND", "CURRENT_DEVICE", "IMEI"]
        );
        f.at_utc(17, 0);
        let r = f
            .sim
            .rebind(&f.iccid, &Rebind::CurrentDevice)
            .await
            .unwrap();
        assert!(r.order_id.is_some() && !r.in_progress);
        let b = f.sim.binding_of(&f.iccid).await.unwrap();
        assert_eq!(b.bound_imei.as_deref(), Some(IMEI_B));
        // Still stopped until the carrier's next check.
        f.advance(chrono::Duration::hours(22) + chrono::Duration::minutes(59));
        assert_eq!(f.state().await, ServiceState::Stopped);
        assert!(f.device_stopped().await);
        f.advance(chrono::Duration::minutes(1));
        assert_eq!(f.state().await, ServiceState::Active);
        assert!(!f.device_stopped().await);
        assert_eq!(f.changes().await, 0);
        assert!(f.reasons().await.is_empty());
    }

    #[tokio::test]
    async fn with_never_the_flag_clears_and_a_restore_is_needed() {
        let f = fixture(SimFaults {
            rebind_lifts_stop: RebindLiftsStop::Never,
            ..SimFaults::default()
        })
        .await;
        f.separated_and_stopped().await;
        f.sim
            .rebind(&f.iccid, &Rebind::Imei(IMEI_B.into()))
            .await
            .unwrap();
        f.advance(chrono::Duration::days(1));
        assert!(!f.device_stopped().await);
        assert_eq!(f.state().await, ServiceState::Stopped);
        assert_eq!(f.reasons().await, vec![StopReason::Manual]);
        f.sim.restore(&f.iccid).await.unwrap();
        assert_eq!(f.state().await, ServiceState::Active);
        assert_eq!(f.changes().await, 1);
    }

    #[tokio::test]
    async fn a_rebind_that_keeps_the_mismatch_lifts_nothing() {
        let f = fixture(SimFaults::default()).await;
        f.separated_and_stopped().await;
        f.sim
            .rebind(&f.iccid, &Rebind::Imei("860000000000009".into()))
            .await
            .unwrap();
        f.advance(chrono::Duration::days(2));
        assert_eq!(f.state().await, ServiceState::Stopped);
        assert!(f.device_stopped().await);
        // Moving back to the bound device is no rebind either: the carrier keeps its stop.
        let g = fixture(SimFaults::default()).await;
        g.separated_and_stopped().await;
        g.sim.move_to_device(&g.iccid, IMEI_A).await.unwrap();
        g.advance(chrono::Duration::days(2));
        assert!(g.device_stopped().await);
    }

    #[tokio::test]
    async fn a_card_stopped_by_simgate_stays_stopped_when_the_separation_lifts() {
        let f = fixture(SimFaults::default()).await;
        f.sim.stop(&f.iccid).await.unwrap();
        f.separated_and_stopped().await;
        assert_eq!(
            f.reasons().await,
            vec![StopReason::DeviceMismatch, StopReason::Manual]
        );
        f.sim.rebind(&f.iccid, &Rebind::Unbind).await.unwrap();
        f.advance(chrono::Duration::days(1));
        assert!(!f.device_stopped().await);
        assert_eq!(f.state().await, ServiceState::Stopped);
        assert_eq!(f.reasons().await, vec![StopReason::Manual]);
    }

    #[tokio::test]
    async fn a_rebind_order_lifts_at_the_check_after_it_completes() {
        let f = fixture(SimFaults {
            orders: true,
            order_delay_s: 3600,
            ..SimFaults::default()
        })
        .await;
        f.separated_and_stopped().await;
        // Completes at 16:00 the next day, just as the check runs: applied first.
        f.at_utc(16, 0);
        f.advance(chrono::Duration::hours(23));
        let r = f.sim.rebind(&f.iccid, &Rebind::Unbind).await.unwrap();
        assert!(r.in_progress);
        f.advance(chrono::Duration::hours(1));
        assert_eq!(f.state().await, ServiceState::Active);
    }

    #[tokio::test]
    async fn rebinds_are_checked() {
        let f = fixture(SimFaults::default()).await;
        assert!(matches!(
            f.sim.rebind(&f.iccid, &Rebind::CurrentDevice).await,
            Err(CarrierError::Rejected { code, .. }) if code == "SIM_NO_DEVICE"
        ));
        assert!(matches!(
            f.sim.rebind(&f.iccid, &Rebind::Imei("123".into())).await,
            Err(CarrierError::Rejected { code, .. }) if code == "SIM_BAD_IMEI"
        ));
        assert!(matches!(
            f.sim.bind(&f.iccid, "86000000000000x").await,
            Err(CarrierError::Rejected { .. })
        ));
        let unknown = Iccid::from_trusted("89860400000000000009".into());
        assert!(matches!(
            f.sim.move_to_device(&unknown, IMEI_A).await,
            Err(CarrierError::Rejected { code, .. }) if code == "NOT_FOUND"
        ));
    }

    async fn more_cards(f: &Fixture, n: u64) -> Vec<Iccid> {
        let cards: Vec<OnboardCard> = (2..2 + n)
            .map(|i| OnboardCard {
                iccid: Iccid::from_trusted(format!("898604000000000{i:05}")),
                state: ServiceState::Active,
                cycle_usage_bytes: 0,
                msisdn: None,
            })
            .collect();
        f.sim.onboard(&cards).await.unwrap();
        let mut all = vec![f.iccid.clone()];
        all.extend(cards.into_iter().map(|c| c.iccid));
        all
    }

    #[tokio::test]
    async fn one_card_inside_its_window_fails_the_whole_batch_and_counts_nothing() {
        let f = fixture(windowed(1800)).await;
        let cards = more_cards(&f, 3).await;
        f.sim.stop(&cards[1]).await.unwrap();
        f.advance(chrono::Duration::minutes(5));
        let e = f.sim.take_batch(&cards, &Change::Stop).await.unwrap_err();
        assert!(
            matches!(&e, CarrierError::Deferred { message, .. } if !message.contains(cards[1].as_str())),
            "{e:?}"
        );
        // No card counts as changed: the others can be batched at once without it.
        let rest = [cards[0].clone(), cards[2].clone(), cards[3].clone()];
        let job = f.sim.take_batch(&rest, &Change::Stop).await.unwrap();
        let done = f.sim.job(&job.job_id).await.unwrap();
        assert!(done.finished);
        assert_eq!(done.status, JOB_DONE);
        assert_eq!(done.items.len(), 3);
        assert!(done.items.iter().all(|(_, i)| *i == BatchItem::Applied));
        for c in &rest {
            assert_eq!(f.sim.inspect(c).await.unwrap().state, ServiceState::Stopped);
        }
    }

    #[tokio::test]
    async fn a_batch_job_completes_with_its_orders_and_reports_refused_cards() {
        let f = fixture(with_orders()).await;
        let mut cards = more_cards(&f, 2).await;
        cards.push(Iccid::from_trusted("89860400000000099999".into()));
        let job = f.sim.take_batch(&cards, &Change::Stop).await.unwrap();
        let running = f.sim.job(&job.job_id).await.unwrap();
        assert!(!running.finished);
        assert_eq!(running.status, JOB_RUNNING);
        assert!(matches!(
            running.items.iter().find(|(i, _)| *i == cards[3]),
            Some((_, BatchItem::Failed { .. }))
        ));
        assert_eq!(f.state().await, ServiceState::Active);
        f.advance(chrono::Duration::seconds(61));
        let done = f.sim.job(&job.job_id).await.unwrap();
        assert!(done.finished);
        assert_eq!(done.status, JOB_DONE_WITH_FAILURES);
        assert_eq!(f.state().await, ServiceState::Stopped);
        assert!(matches!(
            f.sim.job("JOB9999999999").await,
            Err(CarrierError::Rejected { .. })
        ));
        // A refused card opened no repeat window.
        assert!(f
            .sim
            .window_left(&cards[3], &Change::Stop)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn batch_usage_runs_up_to_yesterday_by_beijing_days() {
        let f = fixture(SimFaults::default()).await;
        f.sim.record_usage(&f.iccid, 1000).await.unwrap();
        let today = f.sim.now();
        let cycle = f.sim.cycle_start_at(today);
        let through_yesterday = |at| {
            f.sim
                .usage_between(std::slice::from_ref(&f.iccid), cycle, at)
        };
        assert!(through_yesterday(today).await.unwrap().is_empty());
        // 16:00 UTC is midnight in Beijing: the day's usage is now yesterday's.
        f.at_utc(16, 0);
        f.sim.record_usage(&f.iccid, 50).await.unwrap();
        let now = f.sim.now();
        assert_eq!(through_yesterday(now).await.unwrap()[&f.iccid], 1000);
        assert_eq!(
            f.sim.inspect(&f.iccid).await.unwrap().cycle_usage_bytes,
            1050
        );
    }

    #[tokio::test]
    async fn cards_modified_since_a_time_are_listed_oldest_first_in_pages() {
        let f = fixture(SimFaults::default()).await;
        let cards = more_cards(&f, 4).await;
        let since = f.sim.now();
        for c in &cards[..3] {
            f.advance(chrono::Duration::seconds(10));
            f.sim.stop(c).await.unwrap();
        }
        let (page1, last1) = f.sim.modified_since(since, 1, 2).await.unwrap();
        assert_eq!(
            page1.iter().map(|p| &p.0).collect::<Vec<_>>(),
            vec![&cards[0], &cards[1]]
        );
        assert!(!last1);
        let (page2, last2) = f.sim.modified_since(since, 2, 2).await.unwrap();
        assert_eq!(page2.len(), 1);
        assert_eq!(page2[0].1, ServiceState::Stopped);
        assert!(last2);
        let (later, _) = f.sim.modified_since(page1[1].2, 1, 50).await.unwrap();
        assert_eq!(later.len(), 1);
    }

    #[test]
    fn traffic_is_split_over_the_beijing_days_it_spans() {
        // 12:00 UTC to 20:00 UTC: 4 hours before midnight in Beijing (16:00 UTC), 4 after.
        let from = chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
            .unwrap();
        let to = from + chrono::Duration::hours(8);
        let parts = split_by_day(1000, from.timestamp_millis(), to.timestamp_millis());
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], (day_start_ms(from.timestamp_millis()), 500));
        assert_eq!(parts[1].1, 500);
        assert_eq!(parts[1].0 - parts[0].0, DAY_MS);
        let same = split_by_day(7, from.timestamp_millis(), from.timestamp_millis());
        assert_eq!(same, vec![(day_start_ms(from.timestamp_millis()), 7)]);
        let days = split_by_day(
            999,
            from.timestamp_millis(),
            (from + chrono::Duration::days(3)).timestamp_millis(),
        );
        assert_eq!(days.iter().map(|d| d.1).sum::<u64>(), 999);
        assert_eq!(days.len(), 4);
    }
}
