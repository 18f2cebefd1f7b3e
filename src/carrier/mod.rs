//! The carrier adapter layer: the [`Carrier`] trait every carrier platform is reached through,
//! the error kinds callers must treat differently, and [`Carriers`], the configured accounts
//! that pick a card's adapter. Adapters translate; the business rules stay in `domain`.
//! `account` reads the `[[accounts]]` configuration, `platform` is the registry of platforms,
//! `budget` and `guard` protect each account, `http/<platform>/` holds each platform, and
//! `sim` is the in-process simulated carrier.

pub mod account;
pub mod budget;
pub mod guard;
pub mod http;
pub mod platform;
pub mod sim;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{AccountId, CarrierId, CarrierPolicy, Iccid};

/// What went wrong at a carrier, split by what the caller must do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarrierError {
    /// Nothing was applied (connection refused, 5xx before processing): safe to retry.
    #[error("carrier unavailable: {0}")]
    Transient(String),
    /// The platform's rate limit answered; retry after the given time if known.
    #[error("carrier rate limit reached{}", .retry_after.map(|d| format!("; retry after {d:?}")).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// The platform refused the request for good, with its own code and message.
    #[error("carrier refused the request: [{code}] {message}")]
    Rejected { code: String, message: String },
    /// Not sent: the circuit breaker is open after repeated failures. Fails fast; retrying
    /// before it closes is pointless.
    #[error("{0}")]
    CircuitOpen(String),
    /// The request was sent but no answer came back: it may or may not have been applied, so
    /// the caller must read the card's state before deciding, never blindly resend.
    #[error("carrier outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The platform did not take the change now, for a reason that may pass: a repeat window
    /// (同一卡号N分钟内不能重复办理), or a refusal of a change the adapter cannot classify. As
    /// far as simgate can tell nothing was applied, but it is never final: the journal reads
    /// the card, and if the change is not there, sends it again later (`retry_after` when the
    /// platform or the account's repeat window says, else after a backoff).
    #[error("carrier deferred the change: [{code}] {message}")]
    Deferred {
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
}

/// How a platform took a change it accepted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Receipt {
    /// The platform's id for the change (OneLink `orderNum`, CMP `GROUP_TRANSACTIONID`), when
    /// its answer carries one.
    pub order_id: Option<String>,
    /// The platform took the change as an order it has not completed yet: the journal settles
    /// it later, with [`Carrier::order`] where the platform has an order query, else by reading
    /// the card. False: the answer is proof the change is applied.
    pub in_progress: bool,
}

impl Receipt {
    /// Applied, with no order id.
    pub fn applied() -> Receipt {
        Receipt::default()
    }

    /// Applied, and the platform named the change `id`.
    pub fn applied_as(id: impl Into<String>) -> Receipt {
        Receipt {
            order_id: Some(id.into()),
            in_progress: false,
        }
    }

    /// Accepted as order `id`, still to complete.
    pub fn in_progress(id: Option<String>) -> Receipt {
        Receipt {
            order_id: id,
            in_progress: true,
        }
    }
}

/// Where a platform's order stands, from its order query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderProgress {
    /// Not finished; the platform's own status word (OneLink `acknowledged`, `inProgress`, ...).
    Open(String),
    /// Completed: the change is applied.
    Completed,
    /// Ended without applying it (OneLink `failed`, `aborted`, `cancelled`): the status word.
    Failed(String),
}

/// A change of a card's machine-card binding (机卡绑定), sent by `RebindCard`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "imei")]
pub enum Rebind {
    /// Remove the binding: the card works in any device.
    Unbind,
    /// Bind to the device the card is in now (OneLink 首话单自动绑定, CMP ordinary rebind).
    CurrentDevice,
    /// Bind to this IMEI (OneLink bindingStyle 1 with its TAC, CMP `bind_type=2`).
    Imei(String),
}

impl Rebind {
    /// The stored and shown name of the mode.
    pub fn mode(&self) -> &'static str {
        match self {
            Rebind::Unbind => "UNBIND",
            Rebind::CurrentDevice => "CURRENT_DEVICE",
            Rebind::Imei(_) => "IMEI",
        }
    }
}

/// A card's machine-card binding as the platform reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Binding {
    /// Whether the card is bound to a device.
    pub bound: bool,
    /// The IMEI of the device the card is in (or bound to), when the platform says.
    pub imei: Option<String>,
    /// The platform found the card separated from its bound device (OneLink 已分离), and
    /// since when if it says.
    pub separated: bool,
    pub separated_since: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a change sends: the journal's [`CarrierAction`](crate::domain::CarrierAction) with its
/// parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Stop,
    Restore,
    Cancel,
    Rebind(Rebind),
}

/// Whether the carrier gives the card service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    Active,
    Stopped,
    Cancelled,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Active => "ACTIVE",
            ServiceState::Stopped => "STOPPED",
            ServiceState::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<ServiceState> {
        [
            ServiceState::Active,
            ServiceState::Stopped,
            ServiceState::Cancelled,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

pub use crate::domain::LastSession;

/// A card as the carrier sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierCard {
    pub iccid: Iccid,
    pub state: ServiceState,
    pub cycle_usage_bytes: u64,
    /// Start of the billing cycle `cycle_usage_bytes` belongs to, when the carrier says.
    pub usage_cycle_start: Option<chrono::DateTime<chrono::Utc>>,
    /// The last data session the carrier saw.
    pub last_session: LastSession,
    /// How many stop/restore changes the carrier applied (lets tests prove nothing was doubled).
    pub changes: u64,
    /// The carrier answered, but simgate could not read this card's state or usage from the
    /// answer (a status outside the platform's documented table, a null status or usage): why.
    /// `state` and `cycle_usage_bytes` are then not meaningful, and every consumer must leave
    /// them unapplied: the sync records the mark on the card, the journal never settles from
    /// it, a cancellation is never confirmed by it, the diagnosis shows it. None: read.
    pub unknown: Option<String>,
}

impl CarrierCard {
    /// The reading's state, if the carrier's answer could be read.
    pub fn known_state(&self) -> Option<ServiceState> {
        self.unknown.is_none().then_some(self.state)
    }
}

/// A card being imported, with the service state simgate derived for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnboardCard {
    pub iccid: Iccid,
    pub state: ServiceState,
    pub cycle_usage_bytes: u64,
    /// The access number given at import, if any. A platform that names cards by it checks it
    /// against its own record of the card; a simulator keeps it as the card's number.
    pub msisdn: Option<String>,
}

#[cfg_attr(any(test, feature = "testsuite"), mockall::automock)]
#[async_trait]
pub trait Carrier: Send + Sync + 'static {
    /// The carrier of the account (from its configuration, not hard-coded by the platform).
    fn id(&self) -> CarrierId;

    /// The account the calls go out through.
    fn account(&self) -> AccountId {
        AccountId::default_for(self.id())
    }

    /// Whether the adapter spends its account's budget itself, once per upstream request; if
    /// not, the guard spends it once per call.
    fn spends_budget(&self) -> bool {
        false
    }

    /// Whether the platform names cards by their access number (MSISDN) instead of the ICCID.
    /// Such an account's cards need their MSISDN: given at import, or looked up once with
    /// [`Carrier::msisdn_of`] and stored. None of the platforms here needs it yet (CMP can be
    /// set to address by access number in the wire issue; the 5G CMP addresses by it).
    fn addresses_by_msisdn(&self) -> bool {
        false
    }

    /// The access number the platform holds for an ICCID (None: it has none).
    async fn msisdn_of(&self, _iccid: &Iccid) -> Result<Option<String>, CarrierError> {
        Ok(None)
    }

    /// The retention and recovery rules this carrier applies (configuration over rules.md).
    fn policy(&self) -> &CarrierPolicy;

    /// Called before imported cards are stored. A real platform already knows its cards and
    /// has nothing to do; a simulator creates them. Must be idempotent: an import that fails
    /// after this call may be retried.
    async fn onboard(&self, cards: &[OnboardCard]) -> Result<(), CarrierError>;

    /// The card's state and usage, in as few upstream calls as the platform allows. Its
    /// `last_session` may be `Unknown` where the session needs a call of its own: ask
    /// [`Carrier::last_session`] then.
    async fn card(&self, iccid: &Iccid) -> Result<CarrierCard, CarrierError>;

    /// The card's last data session, for the diagnosis. Platforms whose `card` answer already
    /// carries it keep this default and [`Carrier::reads_session_apart`] false, so the
    /// diagnosis never calls it for them (it would only repeat `card`'s calls); a platform with
    /// a separate session call (Control Center's `sessionInfo`) overrides both.
    async fn last_session(&self, iccid: &Iccid) -> Result<LastSession, CarrierError> {
        self.card(iccid).await.map(|c| c.last_session)
    }

    /// Whether `card` leaves the last session `Unknown` because [`Carrier::last_session`]
    /// reads it with a call of its own. False: `card`'s `Unknown` is the answer (the carrier
    /// said nothing readable), and asking again would change nothing.
    fn reads_session_apart(&self) -> bool {
        false
    }

    /// Whether `error`, answered by `card`, means the carrier does not know this card (so
    /// `cards` leaves it out), rather than a refusal every card of the account would get
    /// (credentials, caller IP, API version, role), which must fail the whole read. The default
    /// takes every refusal for an unknown card; a platform whose codes tell the two apart
    /// overrides it.
    fn card_not_known(&self, error: &CarrierError) -> bool {
        matches!(error, CarrierError::Rejected { .. })
    }

    /// Many cards in one call, for the usage sync. Cards the carrier does not know are left out;
    /// any other failure fails the call. Platforms with a batch query override this (up to
    /// `batch_limit` cards a call); the default asks card by card.
    async fn cards(&self, iccids: &[Iccid]) -> Result<Vec<CarrierCard>, CarrierError> {
        let mut out = Vec::with_capacity(iccids.len());
        for iccid in iccids {
            match self.card(iccid).await {
                Ok(c) => out.push(c),
                Err(e) if self.card_not_known(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// How many cards one `cards` call may ask for.
    fn batch_limit(&self) -> usize {
        1
    }

    /// 停机. Stopping a stopped card succeeds and changes nothing.
    async fn stop(&self, iccid: &Iccid) -> Result<Receipt, CarrierError>;

    /// 复机. Restoring an active card succeeds and changes nothing.
    async fn restore(&self, iccid: &Iccid) -> Result<Receipt, CarrierError>;

    /// 销户 at the end of the retention window. Carriers release the number by themselves; a
    /// real adapter confirms it happened, the simulator applies it. Idempotent.
    async fn cancel(&self, iccid: &Iccid) -> Result<Receipt, CarrierError>;

    /// Changes the card's machine-card binding. Platforms without binding calls refuse it
    /// (see [`Carrier::rebind_modes`], which the service checks first).
    async fn rebind(&self, _iccid: &Iccid, rebind: &Rebind) -> Result<Receipt, CarrierError> {
        Err(CarrierError::Rejected {
            code: "REBIND_NOT_SUPPORTED".into(),
            message: format!(
                "this platform has no binding call for mode {}",
                rebind.mode()
            ),
        })
    }

    /// The [`Rebind`] modes the platform has calls for (names as [`Rebind::mode`]); empty: the
    /// platform has no binding calls.
    fn rebind_modes(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Whether the platform can say where an order stands ([`Carrier::order`]).
    fn queries_orders(&self) -> bool {
        false
    }

    /// Where the platform's order `order_id` (for card `iccid`) stands.
    async fn order(&self, _iccid: &Iccid, order_id: &str) -> Result<OrderProgress, CarrierError> {
        Err(CarrierError::Rejected {
            code: "ORDER_QUERY_NOT_SUPPORTED".into(),
            message: format!("this platform has no order query (order {order_id})"),
        })
    }

    /// Why the platform stopped the card, in simgate's terms, where the platform says (OneLink
    /// `/query/sim-stop-reason`); None: the platform cannot say. Read by the usage sync for a
    /// card the carrier shows stopped, and by the diagnosis.
    async fn stop_reasons(
        &self,
        _iccid: &Iccid,
    ) -> Result<Option<crate::domain::StopReasons>, CarrierError> {
        Ok(None)
    }

    /// The card's machine-card binding, where the platform has a binding query; None: it has
    /// none.
    async fn binding(&self, _iccid: &Iccid) -> Result<Option<Binding>, CarrierError> {
        Ok(None)
    }

    /// How many cards one [`Carrier::change_batch`] call may carry; 1: the platform has no
    /// batch change call, and every change goes card by card.
    fn batch_change_limit(&self) -> usize {
        1
    }

    /// Sends a stop or restore for every card of `iccids` (at most `batch_change_limit`) in one
    /// call, answered by a job id. The platform may refuse the whole batch because of one card
    /// (OneLink: one card inside its repeat window fails the batch, and the reply may not say
    /// which): any Err means no card of the batch is known to be changed, and the journal
    /// falls back to changing them one by one, except `OutcomeUnknown` (the call may have
    /// been taken), which it settles by reading each card.
    async fn change_batch(
        &self,
        _iccids: &[Iccid],
        _change: &Change,
    ) -> Result<BatchReceipt, CarrierError> {
        Err(CarrierError::Rejected {
            code: "BATCH_NOT_SUPPORTED".into(),
            message: "this platform has no batch change call".into(),
        })
    }

    /// Where batch job `job_id`, sent for `iccids`, stands.
    async fn batch_job(&self, job_id: &str, _iccids: &[Iccid]) -> Result<BatchJob, CarrierError> {
        Err(CarrierError::Rejected {
            code: "BATCH_NOT_SUPPORTED".into(),
            message: format!("this platform has no batch job query (job {job_id})"),
        })
    }

    /// Whether the platform lists the cards modified since a time ([`Carrier::changes_since`]),
    /// so the usage sync reads states from the list and asks each card for its usage only.
    fn lists_changes(&self) -> bool {
        false
    }

    /// Page `page` (from 1) of the cards modified at the platform since `since`.
    async fn changes_since(
        &self,
        _since: chrono::DateTime<chrono::Utc>,
        _page: u32,
    ) -> Result<ChangePage, CarrierError> {
        Err(CarrierError::Rejected {
            code: "LIST_NOT_SUPPORTED".into(),
            message: "this platform does not list modified cards".into(),
        })
    }

    /// The card's usage alone, in as few calls as the platform allows (the default reads the
    /// whole card).
    async fn usage_of(&self, iccid: &Iccid) -> Result<UsageReading, CarrierError> {
        self.card(iccid).await.map(|c| UsageReading {
            cycle_usage_bytes: c.cycle_usage_bytes,
            usage_cycle_start: c.usage_cycle_start,
        })
    }
}

/// A change many cards take in one call ([`Carrier::change_batch`]): the platform's job id,
/// settled through [`Carrier::batch_job`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReceipt {
    pub job_id: String,
}

/// Where one card of a batch job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchItem {
    /// The platform applied the change to this card.
    Applied,
    /// The platform did not apply it to this card, with its code and message.
    Failed { code: String, message: String },
    /// Not processed yet, or the platform's answer does not mention the card (yet).
    Open,
}

/// A batch job as the platform reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchJob {
    /// The platform says the job is over (every card it will process is processed).
    pub finished: bool,
    /// The platform's own word for the job's state (OneLink `jobStatus`), for the journal.
    pub status: String,
    /// The cards the answer names, with their outcome; a card of the job it does not name is
    /// `Open` while the job runs and unknown (read its state) once it is over.
    pub items: Vec<(Iccid, BatchItem)>,
}

/// One card of [`Carrier::changes_since`]: a card the platform lists as modified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedCard {
    pub iccid: Iccid,
    /// Its state as listed; None when the listed status is outside the platform's table.
    pub state: Option<ServiceState>,
    /// The platform's own status word, as listed.
    pub status: String,
}

/// One page of [`Carrier::changes_since`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangePage {
    pub cards: Vec<ListedCard>,
    /// No page follows.
    pub last_page: bool,
}

/// A card's usage alone ([`Carrier::usage_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageReading {
    pub cycle_usage_bytes: u64,
    pub usage_cycle_start: Option<chrono::DateTime<chrono::Utc>>,
}

/// Sends `change` through `carrier`: the one entry the journal uses.
pub async fn send_change(
    carrier: &dyn Carrier,
    iccid: &Iccid,
    change: &Change,
) -> Result<Receipt, CarrierError> {
    match change {
        Change::Stop => carrier.stop(iccid).await,
        Change::Restore => carrier.restore(iccid).await,
        Change::Cancel => carrier.cancel(iccid).await,
        Change::Rebind(r) => carrier.rebind(iccid, r).await,
    }
}

/// One configured account: its adapter (behind its guard) and what is shown of it.
#[derive(Clone)]
pub struct Account {
    pub id: AccountId,
    pub carrier: CarrierId,
    pub platform: platform::Platform,
    pub adapter: Arc<dyn Carrier>,
    /// The guard in front of `adapter`, for its health and budget; None for an adapter
    /// registered bare (unit tests).
    pub guard: Option<Arc<guard::Guarded>>,
    /// The shortest time between two changes to one card that the platform accepts
    /// (同一卡号N分钟内不能重复办理业务): simgate never sends a change inside it. Zero: none.
    pub repeat_window: Duration,
}

/// Why a card's account could not be chosen from its carrier alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountChoice {
    /// The carrier has no account in this deployment.
    None,
    /// The carrier has several: the caller must name one.
    Several(Vec<AccountId>),
}

/// The configured carrier accounts, chosen at start.
#[derive(Clone, Default)]
pub struct Carriers {
    by_id: BTreeMap<AccountId, Account>,
}

impl Carriers {
    pub fn new() -> Carriers {
        Carriers::default()
    }

    /// Registers `carrier` as its own account, unguarded.
    pub fn with(mut self, carrier: Arc<dyn Carrier>) -> Carriers {
        let id = carrier.account();
        self.by_id.insert(
            id.clone(),
            Account {
                id,
                carrier: carrier.id(),
                platform: platform::Platform::Simulated,
                adapter: carrier,
                guard: None,
                repeat_window: Duration::ZERO,
            },
        );
        self
    }

    /// Registers a guarded account on `platform`.
    pub fn with_guarded(
        mut self,
        guarded: Arc<guard::Guarded>,
        platform: platform::Platform,
    ) -> Carriers {
        let id = guarded.account();
        self.by_id.insert(
            id.clone(),
            Account {
                id,
                carrier: guarded.id(),
                platform,
                adapter: guarded.clone(),
                guard: Some(guarded),
                repeat_window: Duration::ZERO,
            },
        );
        self
    }

    /// Sets the repeat window of an account (see [`Account::repeat_window`]).
    pub fn with_repeat_window(mut self, id: &AccountId, window: Duration) -> Carriers {
        if let Some(a) = self.by_id.get_mut(id) {
            a.repeat_window = window;
        }
        self
    }

    /// The repeat window of an account (zero for an account not configured).
    pub fn repeat_window(&self, id: &AccountId) -> Duration {
        self.by_id
            .get(id)
            .map(|a| a.repeat_window)
            .unwrap_or(Duration::ZERO)
    }

    /// The adapter of an account.
    pub fn get(&self, id: &AccountId) -> Option<&Arc<dyn Carrier>> {
        self.by_id.get(id).map(|a| &a.adapter)
    }

    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.by_id.get(id)
    }

    /// Every account, by id.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.by_id.values()
    }

    /// The accounts of one carrier.
    pub fn of(&self, carrier: CarrierId) -> impl Iterator<Item = &Account> {
        self.by_id.values().filter(move |a| a.carrier == carrier)
    }

    /// The carrier's only account, when it has exactly one.
    pub fn sole_account(&self, carrier: CarrierId) -> Result<&AccountId, AccountChoice> {
        let mut of = self.of(carrier);
        match (of.next(), of.next()) {
            (Some(a), None) => Ok(&a.id),
            (None, _) => Err(AccountChoice::None),
            (Some(a), Some(b)) => Err(AccountChoice::Several(
                [a, b].into_iter().chain(of).map(|a| a.id.clone()).collect(),
            )),
        }
    }

    /// The rules of a carrier, from any of its accounts (they share the carrier's policy).
    pub fn policy(&self, carrier: CarrierId) -> Option<&CarrierPolicy> {
        self.of(carrier).next().map(|a| a.adapter.policy())
    }
}

impl std::fmt::Debug for Carriers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_id.keys()).finish()
    }
}
