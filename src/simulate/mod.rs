//! Wire-level carrier simulators: HTTP servers that speak each carrier platform's protocol
//! (paths, auth, envelopes, codes) in front of the same [`SimCarrier`] state and rules as the
//! in-process simulators, with the same fault injection and simulated clock. This module owns
//! choosing the protocol per carrier, serving one on a listener, and [`OverTheWire`]: a
//! simulated carrier reached through its real adapter, which is how `simulator_transport =
//! "http"` runs the whole service over the carriers' wire protocols.

pub mod cmp;
pub mod jasper;
pub mod onelink;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::carrier::http::{ApiConfig, HttpTimeouts};
use crate::carrier::sim::SimCarrier;
use crate::carrier::{Carrier, CarrierCard, CarrierError, OnboardCard};
use crate::domain::{CarrierId, CarrierPolicy, Iccid};

/// How a simulating server reaches its simulated carriers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SimulatorTransport {
    /// Function calls: the fastest, for most tests.
    #[default]
    InProcess,
    /// The real HTTP adapters against wire simulators on loopback ports.
    Http,
}

/// The platform each carrier speaks.
pub fn platform_of(id: CarrierId) -> &'static str {
    match id {
        CarrierId::Mobile => "onelink",
        CarrierId::Unicom => "jasper",
        CarrierId::Telecom => "cmp",
    }
}

/// Credentials for a wire simulator nobody configured: random, so that a simulator reachable
/// from elsewhere is not open to anyone who guesses a default.
pub fn generated_api_config(
    id: CarrierId,
    base: &str,
    timeouts: HttpTimeouts,
) -> Result<ApiConfig, String> {
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let timeouts = serde_json::to_value(timeouts).map_err(|e| e.to_string())?;
    let value = match id {
        CarrierId::Mobile => serde_json::json!({
            "platform": "onelink",
            "base_url": format!("{base}/v5/ec"),
            "appid": "simgate-sim",
            "password": secret,
            "timeouts": timeouts,
        }),
        CarrierId::Unicom => serde_json::json!({
            "platform": "jasper",
            "base_url": format!("{base}/rws/api/v1"),
            "username": "simgate-sim",
            "api_key": secret,
            "timeouts": timeouts,
        }),
        CarrierId::Telecom => serde_json::json!({
            "platform": "cmp",
            "base_url": format!("{base}/m2m_ec"),
            "user_id": "simgate-sim",
            "password": &secret[..8],
            // CMP's key is nine characters: three DES keys of three.
            "key": &secret[8..17],
            "timeouts": timeouts,
        }),
    };
    serde_json::from_value(value).map_err(|e| format!("wire simulator config: {e}"))
}

/// The wire simulator of `sim`'s carrier, checking the credentials in `cfg`. A change that the
/// fault injection says "times out after apply" is answered only after `unanswered`, which must
/// be longer than the client's timeout.
pub fn router(sim: Arc<SimCarrier>, cfg: &ApiConfig, unanswered: Duration) -> axum::Router {
    match cfg {
        ApiConfig::Onelink(c) => onelink::router(
            sim,
            c,
            onelink::WireOptions {
                unanswered_delay: unanswered,
                ..Default::default()
            },
        ),
        ApiConfig::Jasper(c) => jasper::router(
            sim,
            c,
            jasper::WireOptions {
                timeout_after_apply_delay: unanswered,
                ..Default::default()
            },
        ),
        ApiConfig::Cmp(c) => cmp::router(
            sim,
            c,
            cmp::WireOptions {
                timeout_after_apply_delay: unanswered,
            },
        ),
    }
}

/// The real adapter for `cfg`.
pub fn adapter(cfg: &ApiConfig, policy: CarrierPolicy) -> Result<Arc<dyn Carrier>, String> {
    Ok(match cfg {
        ApiConfig::Onelink(c) => Arc::new(crate::carrier::http::onelink::OneLink::new(c, policy)?),
        ApiConfig::Jasper(c) => Arc::new(crate::carrier::http::jasper::Jasper::new(c, policy)?),
        ApiConfig::Cmp(c) => Arc::new(crate::carrier::http::cmp::Cmp::new(c, policy)?),
    })
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
    /// Serves `sim` over its carrier's protocol on 127.0.0.1 and returns the adapter
    /// configuration that reaches it.
    pub async fn start(sim: Arc<SimCarrier>) -> Result<(WireServer, ApiConfig), String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("wire simulator: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("wire simulator: {e}"))?;
        let base = format!("http://{addr}");
        let cfg = generated_api_config(sim.id(), &base, LOOPBACK_TIMEOUTS)?;
        let app = router(sim, &cfg, LOOPBACK_UNANSWERED);
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

    async fn cards(&self, iccids: &[Iccid]) -> Result<Vec<CarrierCard>, CarrierError> {
        self.adapter.cards(iccids).await
    }

    fn batch_limit(&self) -> usize {
        self.adapter.batch_limit()
    }

    async fn stop(&self, iccid: &Iccid) -> Result<(), CarrierError> {
        self.adapter.stop(iccid).await
    }

    async fn restore(&self, iccid: &Iccid) -> Result<(), CarrierError> {
        self.adapter.restore(iccid).await
    }

    /// A real carrier releases the number by itself when retention ends, and the adapter only
    /// confirms it; the simulated carrier releases it here, then the adapter confirms it over
    /// the wire.
    async fn cancel(&self, iccid: &Iccid) -> Result<(), CarrierError> {
        self.sim.cancel(iccid).await?;
        self.adapter.cancel(iccid).await
    }
}

/// What `simgate simulate` serves: which carriers, where, on which database, with which rules
/// and standing faults.
pub struct Standalone {
    pub carriers: Vec<CarrierId>,
    /// The first carrier's address; the next ones take the following ports.
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
    carrier_api: std::collections::BTreeMap<CarrierId, serde_json::Value>,
}

#[derive(Deserialize)]
struct ControlCard {
    iccid: String,
    #[serde(default)]
    stopped: bool,
    #[serde(default)]
    cycle_usage_bytes: u64,
}

#[derive(Deserialize)]
struct ControlUsage {
    iccid: String,
    bytes: u64,
}

#[derive(Deserialize)]
struct ControlAdvance {
    seconds: i64,
}

fn control_error(e: impl std::fmt::Display) -> (axum::http::StatusCode, String) {
    (axum::http::StatusCode::BAD_REQUEST, e.to_string())
}

/// Harness controls under `/_simgate/`, outside every carrier's own paths: create cards at the
/// carrier, record device traffic, set standing faults, move the simulated clock. They are the
/// wire-level counterparts of the SimulatorService and not part of any carrier's protocol.
fn control_router(sim: Arc<SimCarrier>, clock: Arc<dyn crate::clock::Clock>) -> axum::Router {
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
        Ok(Json(serde_json::json!({
            "iccid": c.iccid.as_str(),
            "state": c.state.as_str(),
            "cycle_usage_bytes": c.cycle_usage_bytes,
            "changes": c.changes,
        })))
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

    axum::Router::new()
        .route("/_simgate/cards", post(cards))
        .route("/_simgate/cards/{iccid}", get(card))
        .route("/_simgate/usage", post(usage))
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
            carrier_api: Default::default(),
        };
        for (n, id) in self.carriers.iter().enumerate() {
            let policy = policies
                .get(id)
                .cloned()
                .ok_or_else(|| format!("no policy for {id}"))?;
            let sim = Arc::new(SimCarrier::new(policy, store.clone(), clock.clone()));
            if let Some(f) = self.config.simulator.get(id) {
                sim.set_faults(*f);
            }
            let port = self
                .listen
                .port()
                .checked_add(u16::try_from(n).unwrap_or(u16::MAX))
                .ok_or("--listen: no port left for every carrier")?;
            let addr = std::net::SocketAddr::new(
                self.listen.ip(),
                if self.listen.port() == 0 { 0 } else { port },
            );
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("listen {addr}: {e}"))?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            let base = format!("http://{bound}");
            let api = generated_api_config(*id, &base, HttpTimeouts::default())?;
            println!(
                "{} ({}) at {base}; harness controls at {base}/_simgate/",
                id.display_name(),
                platform_of(*id),
            );
            serve_config.carrier_api.insert(*id, api_for_print(&api));
            let unanswered = Duration::from_millis(HttpTimeouts::default().request_ms + 5_000);
            let app =
                router(sim.clone(), &api, unanswered).merge(control_router(sim, clock.clone()));
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

/// The configuration with its secrets shown: a simulator's generated credentials are what the
/// person starting it needs to copy, and they are worthless anywhere else.
fn api_for_print(api: &ApiConfig) -> serde_json::Value {
    let mut v = serde_json::to_value(api).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        for (field, secret) in exposed_secrets(api) {
            o.insert(field.to_string(), serde_json::Value::String(secret));
        }
    }
    v
}

fn exposed_secrets(api: &ApiConfig) -> Vec<(&'static str, String)> {
    match api {
        ApiConfig::Onelink(c) => vec![("password", c.password.expose().to_string())],
        ApiConfig::Jasper(c) => vec![("api_key", c.api_key.expose().to_string())],
        ApiConfig::Cmp(c) => vec![
            ("password", c.password.expose().to_string()),
            ("key", c.key.expose().to_string()),
        ],
    }
}
