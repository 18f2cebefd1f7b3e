//! Assembly: opens the store, builds the carriers (simulated by default), the lifecycle engine,
//! and serves the gRPC services with health, reflection and metrics; and the orderly shutdown.
//! `main` and the end-to-end tests both start the service through [`Server::builder`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::access::AccessApi;
use crate::api::auth::{Authenticator, DEFAULT_RATE_PER_KEY};
use crate::api::cards::CardApi;
use crate::api::monitoring::MonitoringApi;
use crate::api::observe::ObserveLayer;
use crate::api::operations::OperationApi;
use crate::api::simulator::SimulatorApi;
use crate::carrier::budget::Budget;
use crate::carrier::guard::Guarded;
use crate::carrier::platform::{AccountCtx, Platform, SimulatorTransport};
use crate::carrier::sim::{SimCarrier, Simulators};
use crate::carrier::Carriers;
use crate::clock::{Clock, OffsetClock};
use crate::config::{Config, ShutdownConfig, DEFAULT_DATABASE_URL};
use crate::domain::ids::CarrierCheck;
use crate::domain::{CarrierId, CarrierPolicy};
use crate::metrics::Metrics;
use crate::pb;
use crate::service::access::AccessService;
use crate::service::batch::BatchService;
use crate::service::engine::Engine;
use crate::service::events::EventHub;
use crate::service::webhooks::WebhookService;
use crate::service::CardService;
use crate::simulate::{OverTheWire, WireServer};
use crate::store::{Store, StoreOptions};

/// Largest request simgate accepts: an import of 10,000 cards fits with room to spare.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Largest request of the services that take no bulk input.
pub const SMALL_MESSAGE_BYTES: usize = 64 * 1024;

fn tls_config(
    cfg: &crate::config::TlsConfig,
) -> Result<tonic::transport::ServerTlsConfig, StartError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p)
            .map_err(|e| StartError::Config(format!("tls: cannot read {}: {e}", p.display())))
    };
    let identity =
        tonic::transport::Identity::from_pem(read(&cfg.cert_path)?, read(&cfg.key_path)?);
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &cfg.client_ca_path {
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    Ok(tls)
}
pub use crate::config::{DEFAULT_ENGINE_INTERVAL_MS, DEFAULT_USAGE_SYNC_INTERVAL_MS};
/// Refuses to start when an account's settings differ from those the replicas already running
/// recorded (a replica with other limits would break the shared budget), naming the account
/// and each setting; records them when none are, or when told to replace them.
async fn check_account_settings(
    store: &Store,
    accounts: &[crate::carrier::account::AccountConfig],
    replace: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StartError> {
    for a in accounts {
        let mine = a.shared_settings();
        let text = serde_json::to_string(&mine).map_err(|e| StartError::Config(e.to_string()))?;
        let recorded = store
            .record_account_settings(a.id.as_str(), &text, now.timestamp_millis(), replace)
            .await?;
        let theirs: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&recorded).unwrap_or_default();
        let differ: Vec<String> = mine
            .iter()
            .filter(|(k, v)| theirs.get(*k) != Some(*v))
            .map(|(k, v)| {
                format!(
                    "{k} is {v} here but {} in the database",
                    theirs.get(k).map_or("unset".to_string(), |t| t.to_string())
                )
            })
            .chain(
                theirs
                    .keys()
                    .filter(|k| !mine.contains_key(*k))
                    .map(|k| format!("{k} is set in the database but not here")),
            )
            .collect();
        if !differ.is_empty() {
            return Err(StartError::Config(format!(
                "account {}: {}; every replica must run the same account settings (to change \
                 them, stop every replica and start one with replace_account_settings = true)",
                a.id,
                differ.join("; ")
            )));
        }
    }
    Ok(())
}

/// How long cut calls get to send their UNAVAILABLE answer before the server stops waiting.
const CUT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

pub struct Server;

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

#[derive(Default)]
pub struct ServerBuilder {
    config: Config,
    store_options: StoreOptions,
    clock: Option<Arc<dyn Clock>>,
    ops_clock: Option<Arc<dyn Clock>>,
    data_key: Option<crate::store::sealing::DataKey>,
    webhook_lookup: Option<Arc<dyn crate::service::webhooks::target::Lookup>>,
}

impl ServerBuilder {
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.config.database_url = Some(url.into());
        self
    }

    pub fn store_options(mut self, opts: StoreOptions) -> Self {
        self.store_options = opts;
        self
    }

    /// The card clock: what card life (plans, cycles, pools, usage, the engine) and the
    /// simulation run on (default: real time plus a simulated offset that AdvanceClock grows).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The wall clock (default: the system's), never moved by AdvanceClock: security facts
    /// (API-key creation, expiry and revocation, audit times) and operational waits (journal
    /// leases and settling backoff, circuit-breaker windows, engine leases, bulk-operation
    /// timestamps and retry backoff). Tests move it instead of sleeping.
    pub fn ops_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.ops_clock = Some(clock);
        self
    }

    /// A reseller-admin key that must exist (what SIMGATE_BOOTSTRAP_KEY sets).
    pub fn bootstrap_key(mut self, token: impl Into<String>) -> Self {
        self.config.bootstrap_key = Some(token.into());
        self
    }

    /// Requests per second each API key may make.
    pub fn rate_limit_per_key(mut self, per_second: u32) -> Self {
        self.config.rate_limit_per_key = Some(per_second.max(1));
        self
    }

    /// The unknown-key cache and the per-peer limit of failed authentications.
    pub fn auth(mut self, auth: crate::api::auth::AuthConfig) -> Self {
        self.config.auth = auth;
        self
    }

    /// WatchEvents stream caps and buffer.
    pub fn events(mut self, events: crate::service::events::EventsConfig) -> Self {
        self.config.events = events;
        self
    }

    /// How long a key read from the database is trusted (0: read on every call).
    pub fn key_cache_ms(mut self, ms: u64) -> Self {
        self.config.key_cache_ms = Some(ms);
        self
    }

    /// The carrier accounts (`[[accounts]]` entries), instead of one default per carrier.
    pub fn accounts(mut self, entries: Vec<crate::carrier::account::AccountEntry>) -> Self {
        self.config.accounts = entries;
        self
    }

    /// The standing settings of a simulated account (`[simulator.<id>]`): its faults and how it
    /// takes changes (repeat window, orders, what a rebind lifts).
    pub fn simulator(
        mut self,
        account: crate::domain::AccountId,
        settings: crate::carrier::sim::SimFaults,
    ) -> Self {
        self.config.simulator.insert(account, settings);
        self
    }

    /// The repeat window of every account whose entry sets none (`[journal] repeat_window_s`).
    pub fn repeat_window_s(mut self, seconds: Option<u64>) -> Self {
        self.config.journal.repeat_window_s = seconds;
        self
    }

    /// Replace the account settings the replicas recorded (PostgreSQL) with this server's.
    pub fn replace_account_settings(mut self, replace: bool) -> Self {
        self.config.replace_account_settings = replace;
        self
    }

    /// Limits and circuit breaker of a carrier's default account.
    pub fn carrier_limits(
        mut self,
        id: CarrierId,
        limits: crate::carrier::guard::CarrierLimits,
    ) -> Self {
        self.config.carrier_limits.insert(id, limits);
        self
    }

    /// Serve TLS with these files.
    pub fn tls(mut self, tls: crate::config::TlsConfig) -> Self {
        self.config.tls = Some(tls);
        self
    }

    pub fn data_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.config.data_dir = Some(dir.into());
        self
    }

    pub fn engine_interval_ms(mut self, ms: u64) -> Self {
        self.config.engine_interval_ms = Some(ms.max(1));
        self
    }

    pub fn usage_sync_interval_ms(mut self, ms: u64) -> Self {
        self.config.usage_sync_interval_ms = Some(ms.max(1));
        self
    }

    /// How the simulated carriers are reached.
    pub fn simulator_transport(mut self, t: SimulatorTransport) -> Self {
        self.config.simulator_transport = t;
        self
    }

    /// How SIGTERM (the `shutdown` future of [`App::serve`]) is handled.
    pub fn shutdown(mut self, shutdown: ShutdownConfig) -> Self {
        self.config.shutdown = shutdown;
        self
    }

    /// Journal leases, settling interval and drift repair.
    pub fn journal(mut self, journal: crate::service::JournalConfig) -> Self {
        self.config.journal = journal;
        self
    }

    pub fn webhooks(mut self, webhooks: crate::service::webhooks::WebhookConfig) -> Self {
        self.config.webhooks = webhooks;
        self
    }

    /// The key webhook secrets are sealed with (instead of `data_key` / `data_key_file`).
    pub fn data_key(mut self, key: crate::store::sealing::DataKey) -> Self {
        self.data_key = Some(key);
        self
    }

    /// How webhook host names are resolved (default: the system resolver). What it returns
    /// still passes the target policy.
    pub fn webhook_lookup(
        mut self,
        lookup: Arc<dyn crate::service::webhooks::target::Lookup>,
    ) -> Self {
        self.webhook_lookup = Some(lookup);
        self
    }

    /// Opens the store (applying migrations) and builds the carriers, services and engine.
    pub async fn build(self) -> Result<App, StartError> {
        let policies: BTreeMap<CarrierId, CarrierPolicy> =
            self.config.policies().map_err(StartError::Config)?;
        let url = self
            .config
            .database_url
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
        let key = data_key(&self.config, &url, self.data_key).map_err(StartError::Config)?;
        let store = Store::connect(&url, self.store_options)
            .await?
            .with_data_key(key);
        let sealed = store.seal_plain_secrets().await?;
        if sealed > 0 {
            info!(sealed, "webhook secrets stored in plain text were sealed");
        }
        let clock: Arc<dyn Clock> = self
            .clock
            .unwrap_or_else(|| Arc::new(OffsetClock::default()));
        let ops_clock: Arc<dyn Clock> = self
            .ops_clock
            .unwrap_or_else(|| Arc::new(crate::clock::SystemClock));
        let metrics = Metrics::new()?;
        let mut carriers = Carriers::new();
        let mut sims = Simulators::default();
        let mut wire_servers = Vec::new();
        let simulation = self.config.simulation != Some(false);
        // Replicas on one PostgreSQL share each account's limits; this process's name as the
        // holder of its calls in flight.
        let shared = store.backend() == crate::store::Backend::Postgres;
        let process = uuid::Uuid::new_v4().simple().to_string();
        let accounts = self.config.accounts().map_err(StartError::Config)?;
        if shared {
            check_account_settings(
                &store,
                &accounts,
                self.config.replace_account_settings,
                ops_clock.now(),
            )
            .await?;
        }
        for account in accounts {
            let at = |e: String| StartError::Config(format!("account {}: {e}", account.id));
            let policy = policies
                .get(&account.carrier)
                .cloned()
                .ok_or_else(|| at(format!("no policy for {}", account.carrier)))?;
            let budget = Arc::new(if shared {
                Budget::shared(
                    account.limits.requests_per_second,
                    account.limits.method_requests_per_second,
                    store.clone(),
                    account.id.as_str(),
                )
            } else {
                Budget::new(
                    account.limits.requests_per_second,
                    account.limits.method_requests_per_second,
                )
            });
            let ctx = AccountCtx {
                account: account.id.clone(),
                carrier: account.carrier,
                policy: policy.clone(),
                budget: budget.clone(),
                numbers: crate::carrier::platform::NumberBook(Arc::new(store.clone())),
            };
            let (carrier, platform): (Arc<dyn crate::carrier::Carrier>, Platform) = if simulation {
                let sim = SimCarrier::configured(
                    account.id.clone(),
                    policy,
                    store.clone(),
                    clock.clone(),
                    &self.config.simulator,
                    // The simulated carrier's window is the account's unless [simulator.<id>] sets its own.
                    account.repeat_window(),
                );
                sims.by_id.insert(account.id.clone(), sim.clone());
                let wire = match (account.platform, self.config.simulator_transport) {
                    (Platform::Simulated, SimulatorTransport::InProcess) => None,
                    (Platform::Simulated, SimulatorTransport::Http) => {
                        Platform::wire_of(account.carrier)
                    }
                    (p, _) => Some(p),
                };
                match wire {
                    None => (sim, Platform::Simulated),
                    Some(p) => {
                        let (server, api) = WireServer::start(sim.clone(), p)
                            .await
                            .map_err(StartError::Config)?;
                        wire_servers.push(server);
                        let adapter = api.adapter(ctx).map_err(at)?;
                        (Arc::new(OverTheWire::new(sim, adapter)), p)
                    }
                }
            } else {
                let api = account
                    .api
                    .as_ref()
                    .ok_or_else(|| at("no base_url or credentials".into()))?;
                (api.adapter(ctx).map_err(at)?, account.platform)
            };
            // Which platform the calls go to, for the carrier-call spans.
            let span_platform = match platform {
                Platform::Simulated => "sim",
                p => p.as_str(),
            };
            let mut guarded = Guarded::new(carrier, account.limits)
                .with_budget(budget)
                .with_platform(span_platform)
                .with_clock(ops_clock.clone())
                .with_metrics(metrics.clone());
            if shared {
                store
                    .ensure_slots(account.id.as_str(), account.limits.max_concurrency)
                    .await?;
                guarded = guarded.with_shared_slots(crate::carrier::guard::SharedSlots {
                    store: store.clone(),
                    holder: process.clone(),
                });
            }
            carriers = carriers
                .with_guarded(Arc::new(guarded), platform)
                .with_repeat_window(&account.id, account.repeat_window());
        }
        let check = if self.config.allow_foreign_identifiers {
            CarrierCheck::Allow
        } else {
            CarrierCheck::Enforce
        };
        let service = CardService::new(store.clone(), carriers, clock.clone())
            .with_journal(self.config.journal)
            .with_ops_clock(ops_clock.clone());
        let access = AccessService::new(store.clone());
        let bootstrap = access
            .bootstrap(self.config.bootstrap_key.as_deref(), ops_clock.now())
            .await
            .map_err(StartError::Config)?;
        let bootstrap = match bootstrap {
            Some(token) if self.config.bootstrap_key.is_none() => {
                let dir = data_dir(&self.config, &url);
                let path = write_secret_file(&dir, "bootstrap-key", &token).map_err(|e| {
                    StartError::Config(format!(
                        "cannot write the bootstrap key into {}: {e}",
                        dir.display()
                    ))
                })?;
                Some(Bootstrap { token, path })
            }
            _ => None,
        };
        let auth = Authenticator::new(
            store.clone(),
            ops_clock.clone(),
            self.config
                .rate_limit_per_key
                .unwrap_or(DEFAULT_RATE_PER_KEY),
        )
        .with_key_cache(std::time::Duration::from_millis(
            self.config
                .key_cache_ms
                .unwrap_or(crate::api::auth::DEFAULT_KEY_CACHE_MS),
        ))
        .with_config(self.config.auth)
        .with_metrics(metrics.clone());
        let lookup = self
            .webhook_lookup
            .unwrap_or_else(|| Arc::new(crate::service::webhooks::target::SystemLookup));
        let webhooks =
            WebhookService::with_lookup(store.clone(), self.config.webhooks.clone(), lookup)
                .map_err(StartError::Config)?;
        Ok(App {
            webhooks,
            batches: BatchService::new(service.clone(), store.clone())
                .with_clock(ops_clock.clone()),
            access,
            auth,
            bootstrap,
            tls: self.config.tls.clone(),
            engine: Engine::new(service.clone())
                .with_lease_clock(ops_clock.clone(), crate::service::engine::DEFAULT_LEASE),
            engine_interval: std::time::Duration::from_millis(
                self.config
                    .engine_interval_ms
                    .unwrap_or(DEFAULT_ENGINE_INTERVAL_MS),
            ),
            usage_sync_interval: std::time::Duration::from_millis(
                self.config
                    .usage_sync_interval_ms
                    .unwrap_or(DEFAULT_USAGE_SYNC_INTERVAL_MS),
            ),
            service,
            sims,
            store,
            check,
            clock,
            wall_clock: ops_clock,
            events: self.config.events,
            metrics,
            metrics_listener: None,
            _wire_servers: wire_servers,
            shutdown: self.config.shutdown,
            traced: self.config.telemetry.enabled(),
        })
    }
}

/// A reseller-admin key created because the key table was empty.
pub struct Bootstrap {
    /// Shown once by `simgate serve`; never logged.
    pub token: String,
    /// Where it was also written, readable by the owner only.
    pub path: std::path::PathBuf,
}

fn data_dir(config: &Config, url: &str) -> std::path::PathBuf {
    if let Some(d) = &config.data_dir {
        return d.clone();
    }
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|p| p.split('?').next().unwrap_or(p))
        .and_then(|p| std::path::Path::new(p).parent().map(|d| d.to_path_buf()))
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}

/// The key webhook secrets are sealed with: given to the builder, else `data_key` (base64),
/// else read from `data_key_file`. PostgreSQL has no default: replicas share the database and
/// must share the key, so one without it refuses to start. An SQLite file gets `<file>.key`,
/// generated owner-only on first start; an in-memory database an ephemeral key.
fn data_key(
    config: &Config,
    url: &str,
    given: Option<crate::store::sealing::DataKey>,
) -> Result<crate::store::sealing::DataKey, String> {
    use crate::store::sealing::DataKey;
    if let Some(k) = given {
        return Ok(k);
    }
    if let Some(text) = &config.data_key {
        return DataKey::from_base64(text).map_err(|e| format!("data_key: {e}"));
    }
    if let Some(path) = &config.data_key_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("data_key_file {}: {e}", path.display()))?;
        return DataKey::from_base64(&text)
            .map_err(|e| format!("data_key_file {}: {e}", path.display()));
    }
    match crate::store::backend_of(url).map_err(|e| e.to_string())? {
        crate::store::Backend::Postgres => Err(
            "PostgreSQL needs the data key that seals webhook secrets: set data_key_file \
             (SIMGATE_DATA_KEY_FILE) or data_key (SIMGATE_DATA_KEY, base64 of 32 bytes), the \
             same on every replica"
                .into(),
        ),
        crate::store::Backend::Sqlite => match crate::store::sqlite_file_path(url) {
            None => DataKey::generate(),
            Some(db) => {
                let mut p = db.into_os_string();
                p.push(".key");
                let path = std::path::PathBuf::from(p);
                match std::fs::read_to_string(&path) {
                    Ok(text) => DataKey::from_base64(&text)
                        .map_err(|e| format!("data key file {}: {e}", path.display())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let key = DataKey::generate()?;
                        write_new_secret_file(&path, &key.to_base64()).map_err(|e| {
                            format!("cannot write the data key {}: {e}", path.display())
                        })?;
                        info!(path = %path.display(), "generated the data key that seals webhook secrets");
                        Ok(key)
                    }
                    Err(e) => Err(format!("data key file {}: {e}", path.display())),
                }
            }
        },
    }
}

/// Creates `path` (refusing to replace one) readable and writable by its owner only.
fn write_new_secret_file(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// Writes a secret to `dir/name`, readable and writable by its owner only.
fn write_secret_file(
    dir: &std::path::Path,
    name: &str,
    secret: &str,
) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(path)
}

/// A built service, ready to serve.
pub struct App {
    webhooks: WebhookService,
    batches: BatchService,
    access: AccessService,
    auth: Authenticator,
    bootstrap: Option<Bootstrap>,
    tls: Option<crate::config::TlsConfig>,
    service: CardService,
    engine: Engine,
    engine_interval: std::time::Duration,
    usage_sync_interval: std::time::Duration,
    sims: Simulators,
    store: Store,
    check: CarrierCheck,
    clock: Arc<dyn Clock>,
    events: crate::service::events::EventsConfig,
    /// Key times and expiry: wall time, which AdvanceClock does not move.
    wall_clock: Arc<dyn Clock>,
    metrics: Metrics,
    metrics_listener: Option<TcpListener>,
    /// The loopback wire simulators of `simulator_transport = "http"`, stopped with the app.
    _wire_servers: Vec<WireServer>,
    shutdown: ShutdownConfig,
    /// Whether each call gets its trace span (`[telemetry]` is on; `main` installed the exporter).
    traced: bool,
}

impl App {
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn service(&self) -> &CardService {
        &self.service
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn batches(&self) -> &BatchService {
        &self.batches
    }

    pub fn simulators(&self) -> &Simulators {
        &self.sims
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Also serve `GET /metrics` on this listener while serving gRPC.
    pub fn with_metrics_listener(mut self, listener: TcpListener) -> Self {
        self.metrics_listener = Some(listener);
        self
    }

    /// The key created at this start because there was none, if any.
    pub fn bootstrap(&self) -> Option<&Bootstrap> {
        self.bootstrap.as_ref()
    }

    /// Serves on `listener` until `shutdown` completes, then shuts down in order: health turns
    /// NOT_SERVING, new connections are refused after the drain time, server streams end with
    /// UNAVAILABLE, in-flight calls get until the grace time to finish, the engine and the
    /// bulk-operation worker finish their current step, and the store is flushed and closed.
    /// The lifecycle engine runs alongside and first catches up on anything missed while down.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), StartError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in std::iter::once("").chain(crate::pb::SERVICE_NAMES) {
            health
                .set_service_status(name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let cards = pb::card_service_server::CardServiceServer::new(CardApi::new(
            self.service.clone(),
            self.check,
            self.auth.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let sims = pb::simulator_service_server::SimulatorServiceServer::new(SimulatorApi::new(
            self.sims.clone(),
            self.service.clone(),
            self.engine.clone(),
            self.clock.clone(),
            self.auth.clone(),
        ))
        .max_decoding_message_size(SMALL_MESSAGE_BYTES);
        let access = pb::access_service_server::AccessServiceServer::new(AccessApi::new(
            self.access.clone(),
            self.auth.clone(),
            self.wall_clock.clone(),
        ))
        .max_decoding_message_size(SMALL_MESSAGE_BYTES);
        let operations =
            pb::operation_service_server::OperationServiceServer::new(OperationApi::new(
                self.batches.clone(),
                self.service.clone(),
                self.auth.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);

        let accounts = pb::carrier_account_service_server::CarrierAccountServiceServer::new(
            crate::api::accounts::AccountApi::new(
                self.service.carriers().clone(),
                self.store.clone(),
                self.auth.clone(),
            ),
        )
        .max_decoding_message_size(SMALL_MESSAGE_BYTES);

        let hub = EventHub::new(self.store.clone()).await?;
        let monitoring = pb::monitoring_service_server::MonitoringServiceServer::new(
            MonitoringApi::new(
                self.service.clone(),
                hub.clone(),
                self.webhooks.clone(),
                self.auth.clone(),
            )
            .with_streams(self.events, self.metrics.clone()),
        )
        .max_decoding_message_size(SMALL_MESSAGE_BYTES);

        // `stopping` is cancelled when shutdown begins; `stop_accepting` after the drain time.
        let stopping = CancellationToken::new();
        let stop_accepting = CancellationToken::new();
        let cut = CancellationToken::new();
        // The trace span outermost, so that the observe layer's log span and everything the call
        // does are inside it.
        let mut builder = tonic::transport::Server::builder()
            .layer(crate::telemetry::rpc::RpcSpanLayer::new(
                self.traced,
                self.metrics.clone(),
            ))
            .layer(ObserveLayer::new(
                self.metrics.clone(),
                stopping.clone(),
                cut.clone(),
            ));
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls_config(tls)?)?;
        }
        let (stop_engine, engine_stopped) = tokio::sync::watch::channel(false);
        let batches = tokio::spawn(self.batches.clone().run(
            std::time::Duration::from_millis(100),
            engine_stopped.clone(),
        ));
        let engine = tokio::spawn(
            self.engine
                .clone()
                .run(self.engine_interval, engine_stopped.clone()),
        );
        info!(interval = ?self.engine_interval, "lifecycle engine started");
        let settler = tokio::spawn(crate::service::journal::run_settler(
            self.service.clone(),
            std::time::Duration::from_millis(self.service.journal_config().settle_interval_ms),
            engine_stopped.clone(),
        ));
        let tailer = tokio::spawn(hub.run(engine_stopped.clone()));
        let deliveries = tokio::spawn(self.webhooks.clone().run(engine_stopped.clone()));
        let usage_sync = tokio::spawn(crate::service::monitor::run_usage_sync(
            self.service.clone(),
            self.usage_sync_interval,
            engine_stopped.clone(),
        ));
        info!(interval = ?self.usage_sync_interval, "usage sync started");
        let metrics_server =
            self.metrics_listener.map(|l| {
                let addr = l.local_addr().ok();
                info!(addr = ?addr, "metrics on /metrics");
                let done = stop_accepting.clone();
                tokio::spawn(
                    self.metrics
                        .clone()
                        .serve(l, self.store.clone(), async move { done.cancelled().await }),
                )
            });

        let drain = std::time::Duration::from_millis(self.shutdown.drain_ms);
        let grace = std::time::Duration::from_millis(self.shutdown.grace_ms);
        let signal = {
            let stopping = stopping.clone();
            let stop_accepting = stop_accepting.clone();
            let health = health.clone();
            async move {
                shutdown.await;
                for name in std::iter::once("").chain(crate::pb::SERVICE_NAMES) {
                    health
                        .set_service_status(name, tonic_health::ServingStatus::NotServing)
                        .await;
                }
                info!(
                    drain_ms = drain.as_millis() as u64,
                    "shutting down: health is NOT_SERVING"
                );
                if !drain.is_zero() {
                    tokio::time::sleep(drain).await;
                }
                stopping.cancel();
                stop_accepting.cancel();
            }
        };
        let server = builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(cards)
            .add_service(sims)
            .add_service(access)
            .add_service(operations)
            .add_service(monitoring)
            .add_service(accounts)
            .serve_with_incoming_shutdown(no_delay(listener), signal);
        tokio::pin!(server);
        let deadline = async {
            stop_accepting.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        let served = tokio::select! {
            served = &mut server => served,
            () = deadline => {
                // A cut carrier call stays OPEN in the journal; its lease runs out and a settler
                // (another replica, or this one restarted) finishes it from the carrier's state.
                warn!(
                    in_flight = self.metrics.rpcs_in_flight(),
                    grace_ms = grace.as_millis() as u64,
                    "grace time over: cutting the calls still running"
                );
                cut.cancel();
                match tokio::time::timeout(CUT_WAIT, &mut server).await {
                    Ok(served) => served,
                    Err(_) => {
                        warn!("connections still open after the cut; leaving them");
                        Ok(())
                    }
                }
            }
        };
        let _ = stop_engine.send(true);
        let workers = async {
            let _ = engine.await;
            let _ = settler.await;
            let _ = batches.await;
            let _ = tailer.await;
            let _ = deliveries.await;
            let _ = usage_sync.await;
        };
        if tokio::time::timeout(grace, workers).await.is_err() {
            warn!("the engine or the bulk-operation worker did not stop within the grace time");
        }
        stop_accepting.cancel();
        if let Some(m) = metrics_server {
            let _ = m.await;
        }
        self.store.flush().await;
        self.store.close().await;
        info!("stopped");
        Ok(served?)
    }
}

/// The accepted connections with Nagle's algorithm off. tonic applies its `tcp_nodelay` only to
/// listeners it binds itself, and a small response held back for a delayed ACK costs tens of
/// milliseconds at p99 (found by the watch benchmark).
fn no_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        if let Ok(c) = &conn {
            if let Err(e) = c.set_nodelay(true) {
                warn!(error = %e, "could not turn off Nagle's algorithm on a connection");
            }
        }
        conn
    })
}
