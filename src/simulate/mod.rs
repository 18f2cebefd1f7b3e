//! Wire-level carrier simulators served for simulated accounts: [`WireServer`] (one
//! platform's wire simulator, from the registry in `carrier::platform`, on a loopback port),
//! [`OverTheWire`] (a simulated account reached through its real adapter, which is how an
//! account on a wire platform runs in simulation, and how `simulator_transport = "http"` runs
//! every account), and `simgate simulate` ([`Standalone`]), which serves one wire simulator per
//! configured account with harness controls next to it.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::carrier::account::AccountConfig;
use crate::carrier::http::HttpTimeouts;
pub use crate::carrier::platform::SimulatorTransport;
use crate::carrier::platform::{with_secrets_shown, ApiConfig, Platform};
use crate::carrier::sim::SimCarrier;
use crate::carrier::{
    Binding, Carrier, CarrierCard, CarrierError, LastSession, OnboardCard, OrderProgress, Rebind,
    Receipt,
};
use crate::domain::{AccountId, CarrierId, CarrierPolicy, Iccid};

/// Credentials for a wire simulator nobody configured: random, so that a simulator reachable
/// from elsewhere is not open to anyone who guesses a default.
pub fn generated_api_config(
    platform: Platform,
    base: &str,
    timeouts: HttpTimeouts,
) -> Result<ApiConfig, String> {
    let secret = uuid::Uuid::new_v4().simple().to_string();
    platform
        .generated(base, &secret, timeouts)
        .ok_or_else(|| format!("platform {platform} has no wire simulator"))
}

/// Loopback answers in microseconds: short limits keep a simulated lost answer from holding a
/// test up for the ten seconds a real platform gets.
const LOOPBACK_TIMEOUTS: HttpTimeouts = HttpTimeouts {
    connect_ms: 1_000,
    request_ms: 3_000,
};
const LOOPBACK_UNANSWERED: Duration = Duration::from_secs(4);

/// A wire simulator served on a loopback port for as long as this value lives.
pub struct WireServer {
    pub base_url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WireServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WireServer {
    /// Serves `sim` over `platform`'s protocol on 127.0.0.1 and returns the adapter
    /// configuration that reaches it.
    pub async fn start(
        sim: Arc<SimCarrier>,
        platform: Platform,
    ) -> Result<(WireServer, ApiConfig), String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("wire simulator: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("wire simulator: {e}"))?;
        let base = format!("http://{addr}");
        let cfg = generated_api_config(platform, &base, LOOPBACK_TIMEOUTS)?;
        let app = counted(cfg.simulator(sim.clone(), LOOPBACK_UNANSWERED), sim);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "wire simulator stopped");
            }
        });
        Ok((
            WireServer {
                base_url: base,
                task,
            },
            cfg,
        ))
    }
}

/// `app` with every request it answers counted on `sim` by path (the Simulator service's
/// GetWireCalls).
pub fn counted(app: axum::Router, sim: Arc<SimCarrier>) -> axum::Router {
    app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            sim.count_wire_call(req.uri().path());
            next.run(req)
        },
    ))
}

/// A simulated carrier reached through its real adapter. Onboarding first creates the cards at
/// the simulator (a real carrier has them before they are imported), then lets the adapter
/// check them as it would at a real platform; everything else goes over the wire only.
pub struct OverTheWire {
    sim: Arc<SimCarrier>,
    adapter: Arc<dyn Carrier>,
}

impl OverTheWire {
    pub fn new(sim: Arc<SimCarrier>, adapter: Arc<dyn Carrier>) -> OverTheWire {
        OverTheWire { sim, adapter }
    }
}

#[async_trait]
impl Carrier for OverTheWire {
    fn id(&self) -> CarrierId {
        self.adapter.id()
    }

    fn account(&self) -> AccountId {
        self.adapter.account()
    }

    fn spends_budget(&self) -> bool {
        self.adapter.spends_budget()
    }

    fn addresses_by_msisdn(&self) -> bool {
        self.adapter.addresses_by_msisdn()
    }

    async fn msisdn_of(&self, iccid: &Iccid) -> Result<Option<String>, CarrierError> {
        self.adapter.msisdn_of(iccid).await
    }

    fn policy(&self) -> &CarrierPolicy {
        self.adapter.policy()
    }

    async fn onboard(&self, cards: &[OnboardCard]) -> Result<(), CarrierError> {
        self.sim.onboard(cards).await?;
        self.adapter.onboard(cards).await
    }

    async fn card(&self, iccid: &Iccid) -> Result<CarrierCard, CarrierError> {
        self.adapter.card(iccid).await
    }

    async fn last_session(&self, iccid: &Iccid) -> Result<LastSession, CarrierError> {
        self.adapter.last_session(iccid).await
    }

    fn card_not_known(&self, error: &CarrierError) -> bool {
        self.adapter.card_not_known(error)
    }

    fn reads_session_apart(&self) -> bool {
        self.adapter.reads_session_apart()
    }

    async fn cards(&self, iccids: &[Iccid]) -> Result<Vec<CarrierCard>, CarrierError> {
        self.adapter.cards(iccids).await
    }

    fn batch_limit(&self) -> usize {
        self.adapter.batch_limit()
    }

    async fn stop(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.adapter.stop(iccid).await
    }

    async fn restore(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.adapter.restore(iccid).await
    }

    /// A real carrier releases the number by itself when retention ends, and the adapter only
    /// confirms it; the simulated carrier releases it here, then the adapter confirms it over
    /// the wire.
    async fn cancel(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.sim.cancel(iccid).await?;
        self.adapter.cancel(iccid).await
    }

    async fn rebind(&self, iccid: &Iccid, rebind: &Rebind) -> Result<Receipt, CarrierError> {
        self.adapter.rebind(iccid, rebind).await
    }

    fn rebind_modes(&self) -> Vec<&'static str> {
        self.adapter.rebind_modes()
    }

    fn queries_orders(&self) -> bool {
        self.adapter.queries_orders()
    }

    async fn order(&self, iccid: &Iccid, order_id: &str) -> Result<OrderProgress, CarrierError> {
        self.adapter.order(iccid, order_id).await
    }

    async fn stop_reasons(
        &self,
        iccid: &Iccid,
    ) -> Result<Option<crate::domain::StopReasons>, CarrierError> {
        self.adapter.stop_reasons(iccid).await
    }

    async fn binding(&self, iccid: &Iccid) -> Result<Option<Binding>, CarrierError> {
        self.adapter.binding(iccid).await
    }

    fn batch_change_limit(&self) -> usize {
        self.adapter.batch_change_limit()
    }

    async fn change_batch(
        &self,
        iccids: &[Iccid],
        change: &crate::carrier::Change,
    ) -> Result<crate::carrier::BatchReceipt, CarrierError> {
        self.adapter.change_batch(iccids, change).await
    }

    async fn batch_job(
        &self,
        job_id: &str,
        iccids: &[Iccid],
    ) -> Result<crate::carrier::BatchJob, CarrierError> {
        self.adapter.batch_job(job_id, iccids).await
    }

    fn lists_changes(&self) -> bool {
        self.adapter.lists_changes()
    }

    async fn changes_since(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        page: u32,
    ) -> Result<crate::carrier::ChangePage, CarrierError> {
        self.adapter.changes_since(since, page).await
    }

    async fn usage_of(&self, iccid: &Iccid) -> Result<crate::carrier::UsageReading, CarrierError> {
        self.adapter.usage_of(iccid).await
    }
}

/// What `simgate simulate` serves: which accounts, where, on which database, with which rules
/// and standing faults.
pub struct Standalone {
    /// The accounts to simulate, each over its platform's wire (a `simulated` account over
    /// its carrier's wire platform).
    pub accounts: Vec<AccountConfig>,
    /// The first account's address; the next ones take the following ports.
    pub listen: std::net::SocketAddr,
    pub database_url: String,
    pub config: crate::config::Config,
    /// Where to write a `simgate serve` configuration that reaches these simulators.
    pub config_out: Option<std::path::PathBuf>,
}

/// What `simgate serve --config` needs to run against these simulators.
#[derive(Serialize)]
struct ServeConfig {
    simulation: bool,
    accounts: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct ControlCard {
    iccid: String,
    #[serde(default)]
    stopped: bool,
    #[serde(default)]
    cycle_usage_bytes: u64,
    /// The card's access number; without it the simulator gives one (`1064` and the ICCID's
    /// last nine digits).
    #[serde(default)]
    msisdn: Option<String>,
}

#[derive(Deserialize)]
struct ControlUsage {
    iccid: String,
    bytes: u64,
}

/// `/_simgate/bind` and `/_simgate/move`: a card and a device's IMEI (15 digits).
#[derive(Deserialize)]
struct ControlDevice {
    iccid: String,
    imei: String,
}

#[derive(Deserialize)]
struct ControlAdvance {
    seconds: i64,
}

fn control_error(e: impl std::fmt::Display) -> (axum::http::StatusCode, String) {
    (axum::http::StatusCode::BAD_REQUEST, e.to_string())
}

/// Each platform request the simulator received (Unix milliseconds, HTTP method and path,
/// oldest first; the harness's own `/_simgate/` requests left out): what a test reads to check
/// that the calls of every replica together kept an account's rate limit. The newest
/// [`CALL_LOG_KEPT`] are kept, so a long-running simulator does not grow without end.
#[derive(Clone, Default)]
struct CallLog(Arc<std::sync::Mutex<std::collections::VecDeque<Call>>>);

#[derive(Clone, serde::Serialize)]
struct Call {
    at_ms: i64,
    method: String,
    path: String,
}

const CALL_LOG_KEPT: usize = 100_000;

/// Records each platform request in the log before it is answered.
async fn log_call(
    axum::extract::State(log): axum::extract::State<CallLog>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !req.uri().path().starts_with("/_simgate/") {
        let call = Call {
            at_ms: chrono::Utc::now().timestamp_millis(),
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
        };
        let mut calls = log.0.lock().unwrap_or_else(|p| p.into_inner());
        if calls.len() == CALL_LOG_KEPT {
            calls.pop_front();
        }
        calls.push_back(call);
    }
    next.run(req).await
}

/// Harness controls under `/_simgate/`, outside every carrier's own paths: create cards at the
/// carrier (`POST /cards`, `GET /cards/{iccid}`), record device traffic (`POST /usage`), set
/// the standing settings (`PUT /faults`: the whole `[simulator.<account>]` section as JSON,
/// change settings included, keys left out taking their defaults), bind a card to a device and
/// move it to another (`POST /bind`, `POST /move`, `{"iccid": ..., "imei": ...}`: the
/// machine-card binding the carrier checks daily), move the simulated clock. They are the
/// wire-level counterparts of the SimulatorService and not part of any carrier's protocol.
///
fn control_router(
    sim: Arc<SimCarrier>,
    clock: Arc<dyn crate::clock::Clock>,
    calls: CallLog,
) -> axum::Router {
    use axum::extract::State;
    use axum::routing::{get, post, put};
    use axum::Json;

    type Ctl = (Arc<SimCarrier>, Arc<dyn crate::clock::Clock>);
    type Answer = Result<Json<serde_json::Value>, (axum::http::StatusCode, String)>;

    async fn cards(State((sim, _)): State<Ctl>, Json(cards): Json<Vec<ControlCard>>) -> Answer {
        let mut onboard = Vec::with_capacity(cards.len());
        for c in cards {
            let iccid = Iccid::parse_any(&c.iccid).map_err(control_error)?;
            onboard.push(OnboardCard {
                iccid,
                state: if c.stopped {
                    crate::carrier::ServiceState::Stopped
                } else {
                    crate::carrier::ServiceState::Active
                },
                cycle_usage_bytes: c.cycle_usage_bytes,
                msisdn: c
                    .msisdn
                    .as_deref()
                    .map(crate::domain::Msisdn::parse)
                    .transpose()
                    .map_err(|e| control_error(format!("msisdn: {}", e.0)))?
                    .map(|m| m.as_str().to_string()),
            });
        }
        sim.onboard(&onboard).await.map_err(control_error)?;
        Ok(Json(serde_json::json!({ "created": onboard.len() })))
    }

    async fn usage(State((sim, _)): State<Ctl>, Json(u): Json<ControlUsage>) -> Answer {
        let iccid = Iccid::parse_any(&u.iccid).map_err(control_error)?;
        let card = sim
            .record_usage(&iccid, u.bytes)
            .await
            .map_err(control_error)?;
        Ok(Json(
            serde_json::json!({ "cycle_usage_bytes": card.cycle_usage_bytes }),
        ))
    }

    async fn faults(
        State((sim, _)): State<Ctl>,
        Json(f): Json<crate::carrier::sim::SimFaults>,
    ) -> Answer {
        f.validate().map_err(control_error)?;
        sim.set_faults(f);
        Ok(Json(serde_json::json!({})))
    }

    async fn card(
        State((sim, _)): State<Ctl>,
        axum::extract::Path(iccid): axum::extract::Path<String>,
    ) -> Answer {
        let iccid = Iccid::parse_any(&iccid).map_err(control_error)?;
        let c = sim.inspect(&iccid).await.map_err(control_error)?;
        card_answer(&sim, c).await
    }

    /// A card as the controls answer it: its state, usage, changes and binding.
    async fn card_answer(sim: &SimCarrier, c: crate::carrier::CarrierCard) -> Answer {
        let b = sim.binding_of(&c.iccid).await.map_err(control_error)?;
        Ok(Json(serde_json::json!({
            "iccid": c.iccid.as_str(),
            "state": c.state.as_str(),
            "cycle_usage_bytes": c.cycle_usage_bytes,
            "changes": c.changes,
            "bound_imei": b.bound_imei,
            "device_imei": b.device_imei,
            "device_stopped": b.device_stopped,
        })))
    }

    fn device_of(d: &ControlDevice) -> Result<Iccid, (axum::http::StatusCode, String)> {
        if !crate::carrier::sim::is_imei(&d.imei) {
            return Err(control_error("imei: must be exactly 15 digits"));
        }
        Iccid::parse_any(&d.iccid).map_err(control_error)
    }

    async fn bind(State((sim, _)): State<Ctl>, Json(d): Json<ControlDevice>) -> Answer {
        let iccid = device_of(&d)?;
        let c = sim.bind(&iccid, &d.imei).await.map_err(control_error)?;
        card_answer(&sim, c).await
    }

    async fn move_to(State((sim, _)): State<Ctl>, Json(d): Json<ControlDevice>) -> Answer {
        let iccid = device_of(&d)?;
        let c = sim
            .move_to_device(&iccid, &d.imei)
            .await
            .map_err(control_error)?;
        card_answer(&sim, c).await
    }

    async fn clock_now(State((_, clock)): State<Ctl>) -> Answer {
        Ok(Json(serde_json::json!({ "now": clock.now().to_rfc3339() })))
    }

    async fn advance(State((_, clock)): State<Ctl>, Json(a): Json<ControlAdvance>) -> Answer {
        let now = clock
            .advance(chrono::Duration::seconds(a.seconds))
            .map_err(control_error)?;
        Ok(Json(serde_json::json!({ "now": now.to_rfc3339() })))
    }

    let received = {
        let calls = calls.clone();
        move || {
            let calls = calls.clone();
            async move {
                let kept: Vec<Call> = calls
                    .0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                Json(serde_json::json!({ "calls": kept }))
            }
        }
    };
    axum::Router::new()
        .route("/_simgate/calls", get(received))
        .route("/_simgate/cards", post(cards))
        .route("/_simgate/cards/{iccid}", get(card))
        .route("/_simgate/usage", post(usage))
        .route("/_simgate/bind", post(bind))
        .route("/_simgate/move", post(move_to))
        .route("/_simgate/faults", put(faults))
        .route("/_simgate/clock", get(clock_now))
        .route("/_simgate/clock/advance", post(advance))
        .with_state((sim, clock))
}

impl Standalone {
    /// Serves every chosen carrier until `shutdown` completes. Prints, for each, the URL and
    /// the adapter configuration that reaches it (the credentials are generated per start).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let store =
            crate::store::Store::connect(&self.database_url, crate::store::StoreOptions::default())
                .await
                .map_err(|e| e.to_string())?;
        let policies = self.config.policies()?;
        let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::OffsetClock::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let mut tasks = Vec::new();
        let mut serve_config = ServeConfig {
            simulation: false,
            accounts: Vec::new(),
        };
        for (n, account) in self.accounts.iter().enumerate() {
            let policy = policies
                .get(&account.carrier)
                .cloned()
                .ok_or_else(|| format!("no policy for {}", account.carrier))?;
            let platform = match account.platform {
                Platform::Simulated => Platform::wire_of(account.carrier)
                    .ok_or_else(|| format!("{} has no wire platform", account.carrier))?,
                p => p,
            };
            let sim = SimCarrier::configured(
                account.id.clone(),
                policy,
                store.clone(),
                clock.clone(),
                &self.config.simulator,
                // The simulated carrier's window is the account's unless [simulator.<id>] sets its own.
                account.repeat_window(),
            );
            let port = self
                .listen
                .port()
                .checked_add(u16::try_from(n).unwrap_or(u16::MAX))
                .ok_or("--listen: no port left for every account")?;
            let addr = std::net::SocketAddr::new(
                self.listen.ip(),
                if self.listen.port() == 0 { 0 } else { port },
            );
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("listen {addr}: {e}"))?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            let base = format!("http://{bound}");
            let api = generated_api_config(platform, &base, HttpTimeouts::default())?;
            println!(
                "account {} ({}, {platform}) at {base}; harness controls at {base}/_simgate/",
                account.id,
                account.carrier.display_name(),
            );
            let mut entry = with_secrets_shown(&api);
            if let Some(o) = entry.as_object_mut() {
                o.insert("id".into(), account.id.to_string().into());
                o.insert("carrier".into(), account.carrier.to_string().into());
                // The window the simulator keeps, so that simgate keeps the same one.
                if let Some(w) = account.repeat_window_s {
                    o.insert("repeat_window_s".into(), w.into());
                }
            }
            serve_config.accounts.push(entry);
            let unanswered = Duration::from_millis(HttpTimeouts::default().request_ms + 5_000);
            let calls = CallLog::default();
            let app = counted(api.simulator(sim.clone(), unanswered), sim.clone())
                .merge(control_router(sim, clock.clone(), calls.clone()))
                .layer(axum::middleware::from_fn_with_state(calls, log_call));
            let done = stop.clone();
            tasks.push(tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { done.cancelled().await })
                    .await
            }));
        }
        let toml = toml::to_string(&serve_config).map_err(|e| e.to_string())?;
        println!("\n# simgate serve --config FILE, with FILE holding:\n{toml}");
        if let Some(path) = &self.config_out {
            // Written whole, then renamed: a harness waiting for the file never reads half.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &toml)
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| format!("--config-out {}: {e}", path.display()))?;
        }
        shutdown.await;
        stop.cancel();
        for t in tasks {
            let _ = t.await;
        }
        store.close().await;
        Ok(())
    }
}
