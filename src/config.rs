//! The service's configuration: defaults, then an optional TOML file, then `SIMGATE_*`
//! environment variables, then command-line flags (each overrides the one before). Zero
//! configuration means an SQLite file in the working directory and the three simulated carriers
//! with the defaults of rules.md. It owns validation (every error names the key that is wrong)
//! and the redacted rendering of the effective configuration (`simgate config print`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::carrier::account::{AccountConfig, AccountEntry, Legacy};
use crate::domain::{AccountId, ArrearsRecovery, CarrierId, CarrierPolicy, Fen, RenewalRestore};

pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50051);
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);
pub const DEFAULT_DATABASE_URL: &str = "sqlite://simgate.db";
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn";
/// How often the lifecycle engine looks for due transitions by default.
pub const DEFAULT_ENGINE_INTERVAL_MS: u64 = 1000;
/// How often every live card's usage is read from its carrier by default (5 minutes: carriers
/// update usage counters a few times an hour at best, and their APIs are rate limited).
pub const DEFAULT_USAGE_SYNC_INTERVAL_MS: u64 = 300_000;
const REDACTED: &str = "<redacted>";

/// `SIMGATE_*` variables that are not configuration keys: where the file is, secrets read from
/// files, the client's settings and the test suite's. Anything else with the prefix must be a
/// key, so a misspelt variable is an error instead of a silently ignored setting.
const NOT_CONFIG_KEYS: &[&str] = &[
    "config",
    "bootstrap_key_file",
    "database_url_file",
    "server",
    "api_key",
    "api_key_file",
];

#[derive(Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Option<SocketAddr>,
    /// `sqlite://PATH` or `postgres://USER@HOST/DB`. Kept out of Debug output: it may hold a
    /// password.
    #[serde(default)]
    pub database_url: Option<String>,
    /// Accept ICCIDs and IMSIs whose issuer code or MNC belongs to another carrier than the one
    /// declared (cards bought through virtual operators).
    #[serde(default)]
    pub allow_foreign_identifiers: bool,
    /// Run simulated carriers and a controllable clock, with the SimulatorService (default:
    /// true): every account is simulated, each with its own cards and faults. With false, every
    /// account is a real platform with its endpoint and credentials.
    #[serde(default)]
    pub simulation: Option<bool>,
    /// With simulation: reach the accounts on `platform = "simulated"` by function call
    /// (`in_process`, default) or through their carrier's real HTTP adapter and wire simulator
    /// on loopback (`http`).
    #[serde(default)]
    pub simulator_transport: crate::carrier::platform::SimulatorTransport,
    /// The carrier accounts: `id`, `carrier`, `platform` (`onelink`, `jasper`, `cmp`, `cmp_5g`,
    /// `simulated`), the platform's `base_url` and credentials (each also as `<key>_file` or
    /// `<key>_env`), and limits. Without any: one simulated account per carrier, named after it.
    #[serde(default)]
    pub accounts: Vec<AccountEntry>,
    /// On PostgreSQL, replace the account settings the replicas recorded with this
    /// configuration's, instead of refusing to start when they differ (default false: stop
    /// every replica, change the settings, start one with this set).
    #[serde(default)]
    pub replace_account_settings: bool,
    /// The older one-account-per-carrier form, keyed mobile/unicom/telecom: the platform of the
    /// account named after the carrier, with simulation = false. Refused next to `[[accounts]]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub carrier_api: BTreeMap<CarrierId, crate::carrier::platform::ApiConfig>,
    /// How often the lifecycle engine looks for due transitions, in milliseconds (default 1000).
    #[serde(default)]
    pub engine_interval_ms: Option<u64>,
    /// How often every live card's usage is read from its carrier, in milliseconds (default
    /// 300000). Traffic recorded on a simulated card is synced at once as well.
    #[serde(default)]
    pub usage_sync_interval_ms: Option<u64>,
    /// A reseller-admin key that must exist (e.g. from SIMGATE_BOOTSTRAP_KEY), so harnesses and
    /// CI start with a known credential. Never printed.
    #[serde(default)]
    pub bootstrap_key: Option<String>,
    /// Where the generated bootstrap key is written (default: the SQLite file's folder, else
    /// the working directory).
    #[serde(default)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Base64 of the 32-byte key webhook secrets are sealed with (e.g. from SIMGATE_DATA_KEY).
    /// Required on PostgreSQL (this or `data_key_file`), the same on every replica; an SQLite
    /// file without one gets `<database>.key`, generated owner-only on first start. Never
    /// printed.
    #[serde(default)]
    pub data_key: Option<String>,
    /// A file holding the data key in base64 (e.g. from SIMGATE_DATA_KEY_FILE).
    #[serde(default)]
    pub data_key_file: Option<std::path::PathBuf>,
    /// Serve TLS (rustls) instead of plaintext.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Requests per second each API key may make (default 1000).
    #[serde(default)]
    pub rate_limit_per_key: Option<u32>,
    /// How long a key read from the database is trusted, in milliseconds (default 1000; 0 reads
    /// it on every call). A key revoked through another server process may be accepted here
    /// for this long; one revoked through this process is refused at once.
    #[serde(default)]
    pub key_cache_ms: Option<u64>,
    /// Unknown-key cache and the per-peer limit of failed authentications.
    #[serde(default)]
    pub auth: crate::api::auth::AuthConfig,
    /// WatchEvents: open streams per key and per connection, and each stream's buffer.
    #[serde(default)]
    pub events: crate::service::events::EventsConfig,
    /// The older form of the default accounts' limits and circuit breaker, keyed
    /// mobile/unicom/telecom (also `SIMGATE_CARRIER_LIMITS__UNICOM__MAX_CONCURRENCY`). Refused
    /// next to `[[accounts]]`, whose entries carry their own limits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub carrier_limits: BTreeMap<CarrierId, crate::carrier::guard::CarrierLimits>,
    /// Standing settings of the simulated accounts, keyed by account id (the default accounts
    /// are mobile, unicom and telecom): their faults, and how they take changes (repeat window,
    /// orders, what a rebind lifts; see `carrier::sim::SimFaults`).
    #[serde(default)]
    pub simulator: BTreeMap<AccountId, crate::carrier::sim::SimFaults>,
    /// Per-carrier overrides of the retention and recovery rules, keyed mobile/unicom/telecom.
    #[serde(default)]
    pub carriers: BTreeMap<CarrierId, PolicyOverride>,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Log format and filter.
    #[serde(default)]
    pub log: LogConfig,
    /// OpenTelemetry traces over OTLP/gRPC (off unless `otlp_endpoint` is set).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// What SIGTERM does.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Webhook delivery: attempts, backoff, timeout.
    #[serde(default)]
    pub webhooks: crate::service::webhooks::WebhookConfig,
    /// The carrier journal: intent leases, how often open intents are settled, drift repair.
    #[serde(default)]
    pub journal: crate::service::JournalConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` (default true).
    pub enabled: bool,
    /// Where (default 127.0.0.1:9464).
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: DEFAULT_METRICS_LISTEN,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Multi-line, coloured when the output is a terminal: for people.
    #[default]
    Pretty,
    /// One line per event, without colours.
    Compact,
    /// One JSON object per line, with the fields of every open span (request id, method): for
    /// log collectors.
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter such as `info,simgate=debug`; RUST_LOG, when set, wins.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            filter: DEFAULT_LOG_FILTER.to_string(),
        }
    }
}

pub const DEFAULT_SERVICE_NAME: &str = "simgate";

/// `[telemetry]`: where `simgate serve` sends its traces. A span per RPC (continuing the
/// caller's W3C `traceparent`), per carrier call and per background pass.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// An OTLP/gRPC collector such as `http://127.0.0.1:4317` (`https://` checks the
    /// collector's certificate against the public web roots). Empty, the default: no traces
    /// are made or sent, and the only cost is none.
    pub otlp_endpoint: String,
    /// The `service.name` the traces carry (default "simgate"): one name per deployment, so
    /// that replicas show up as one service.
    pub service_name: String,
    /// The share of new traces kept, 0.0 to 1.0 (default 1.0). A call that arrives with a
    /// sampled `traceparent` is kept whatever this says, and one marked not sampled is not
    /// (parent-based), so a trace is never cut in half between services.
    pub sampling_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: String::new(),
            service_name: DEFAULT_SERVICE_NAME.to_string(),
            sampling_ratio: 1.0,
        }
    }
}

impl TelemetryConfig {
    /// Whether traces are made and exported at all.
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.trim().is_empty()
    }

    /// This section with the endpoint's password replaced: a collector URL may carry one
    /// (`https://user:token@collector:4317`).
    fn redacted(&self) -> TelemetryConfig {
        let mut t = self.clone();
        if t.enabled() {
            t.otlp_endpoint = redact_url(&t.otlp_endpoint);
        }
        t
    }

    fn validate(&self) -> Result<(), String> {
        // `contains` is false for NaN, so a NaN from `nan` in the file is refused too.
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(format!(
                "telemetry.sampling_ratio must be between 0.0 and 1.0, not {}",
                self.sampling_ratio
            ));
        }
        if !self.enabled() {
            return Ok(());
        }
        if self.service_name.trim().is_empty() {
            return Err("telemetry.service_name must not be empty when traces are sent".into());
        }
        let shown = redact_url(&self.otlp_endpoint);
        let url = url::Url::parse(self.otlp_endpoint.trim())
            .map_err(|e| format!("telemetry.otlp_endpoint {shown}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "telemetry.otlp_endpoint {shown}: expected http://HOST:PORT or https://HOST:PORT \
                 (OTLP over gRPC, usually port 4317)"
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After health turns NOT_SERVING, how long to keep accepting calls so that load balancers
    /// notice before connections are refused (default 0).
    pub drain_ms: u64,
    /// How long in-flight calls and carrier calls may take to finish before they are cut
    /// (default 30000). A cut carrier call stays an open intent in the journal and is settled
    /// from the carrier's state once its lease runs out.
    pub grace_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_ms: 0,
            grace_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert_path: std::path::PathBuf,
    /// PEM private key of the server.
    pub key_path: std::path::PathBuf,
    /// PEM CA that client certificates must chain to; set for mutual TLS.
    #[serde(default)]
    pub client_ca_path: Option<std::path::PathBuf>,
}

/// Any subset of a carrier's policy; what is left out keeps the rules.md default.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverride {
    pub cycle_start_day: Option<u32>,
    pub retention_months: Option<u32>,
    pub retention_fee_fen: Option<i64>,
    pub cancel_when_retention_ends: Option<bool>,
    pub arrears_recovery: Option<ArrearsRecovery>,
    pub renewal_restore: Option<RenewalRestore>,
    pub same_day_restore_delay_minutes: Option<u32>,
    pub test_period_days: Option<u32>,
    pub test_gift_bytes: Option<u64>,
    pub silent_period_days: Option<u32>,
    pub prorate_first_month: Option<bool>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("allow_foreign_identifiers", &self.allow_foreign_identifiers)
            .field("simulation", &self.simulation)
            .field("simulator_transport", &self.simulator_transport)
            .field("accounts", &self.accounts)
            .field("replace_account_settings", &self.replace_account_settings)
            .field("carrier_api", &self.carrier_api)
            .field("engine_interval_ms", &self.engine_interval_ms)
            .field("usage_sync_interval_ms", &self.usage_sync_interval_ms)
            .field(
                "bootstrap_key",
                &self.bootstrap_key.as_ref().map(|_| REDACTED),
            )
            .field("data_dir", &self.data_dir)
            .field("data_key", &self.data_key.as_ref().map(|_| REDACTED))
            .field("data_key_file", &self.data_key_file)
            .field("tls", &self.tls)
            .field("rate_limit_per_key", &self.rate_limit_per_key)
            .field("key_cache_ms", &self.key_cache_ms)
            .field("auth", &self.auth)
            .field("events", &self.events)
            .field("carrier_limits", &self.carrier_limits)
            .field("simulator", &self.simulator)
            .field("carriers", &self.carriers)
            .field("metrics", &self.metrics)
            .field("log", &self.log)
            .field("telemetry", &self.telemetry.redacted())
            .field("shutdown", &self.shutdown)
            .field("webhooks", &self.webhooks)
            .field("journal", &self.journal)
            .finish()
    }
}

/// A database URL with its password replaced, so operators still see host, user and database.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            // Only fails for URLs that cannot have a password, which this one has.
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        // Unparseable: it may still contain a secret somewhere.
        Err(_) => REDACTED.to_string(),
    }
}

/// The `SIMGATE_*` variables with their values kept exactly as written. figment's own `Env`
/// parses values, which turns a password `0012345` into the number 12345 and then refuses it
/// for a string key; here every value stays a string and extraction reads numbers and flags
/// from strings where a key wants them.
struct RawEnv(Env);

impl figment::Provider for RawEnv {
    fn metadata(&self) -> figment::Metadata {
        self.0.metadata()
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        for (key, value) in self.0.iter() {
            insert_nested(&mut dict, key.as_str(), value);
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

/// Puts `value` at the dotted `key`, creating the tables on the way.
fn insert_nested(dict: &mut figment::value::Dict, key: &str, value: String) {
    use figment::value::{Dict, Value};
    match key.split_once('.') {
        None => {
            dict.insert(key.to_string(), Value::from(value));
        }
        Some((head, rest)) => {
            let entry = dict
                .entry(head.to_string())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_nested(inner, rest, value);
            }
        }
    }
}

/// Every error figment found, each naming its key and where the value came from.
fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Config {
    /// Defaults, the TOML file at `path` if given, then the `SIMGATE_*` environment.
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            // figment skips a missing file silently; a named file that is not there is a mistake.
            if !path.is_file() {
                return Err(format!(
                    "cannot read config {}: no such file",
                    path.display()
                ));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Config::from_figment(figment.merge(Self::env()))
    }

    /// The `SIMGATE_*` variables as configuration keys; `__` separates nested keys, as in
    /// `SIMGATE_CARRIER_LIMITS__MOBILE__REQUESTS_PER_SECOND=50`.
    fn env() -> RawEnv {
        RawEnv(Env::prefixed("SIMGATE_").split("__").filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            !NOT_CONFIG_KEYS.contains(&key.as_str()) && !key.starts_with("test_")
        }))
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        Config::from_figment(Figment::from(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, String> {
        // Lossy: a number or a flag given as a string (as every environment value is) is read
        // as one where the key wants it.
        let cfg: Config = figment.extract_lossy().map_err(describe)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        self.policies()?;
        for (id, f) in &self.simulator {
            f.validate().map_err(|e| format!("simulator.{id}: {e}"))?;
        }
        for (id, l) in &self.carrier_limits {
            if l.max_concurrency == 0 {
                return Err(format!(
                    "carrier_limits.{id}.max_concurrency must be at least 1"
                ));
            }
        }
        if self.rate_limit_per_key == Some(0) {
            return Err("rate_limit_per_key must be at least 1".into());
        }
        if self.engine_interval_ms == Some(0) {
            return Err("engine_interval_ms must be at least 1".into());
        }
        if self.usage_sync_interval_ms == Some(0) {
            return Err("usage_sync_interval_ms must be at least 1".into());
        }
        self.webhooks.validate()?;
        self.telemetry.validate()?;
        self.auth.validate()?;
        self.events.validate()?;
        if self.journal.lease_ms < 100 || self.journal.settle_interval_ms == 0 {
            return Err(
                "journal.lease_ms must be at least 100 and journal.settle_interval_ms at least 1"
                    .into(),
            );
        }
        if let Some(url) = &self.database_url {
            crate::store::backend_of(url)
                .map_err(|e| format!("database_url {}: {e}", redact_url(url)))?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.filter)
            .map_err(|e| format!("log.filter {:?}: {e}", self.log.filter))?;
        if self.metrics.enabled && Some(self.metrics.listen) == self.listen {
            return Err(format!(
                "metrics.listen {} is also the gRPC listen address",
                self.metrics.listen
            ));
        }
        let accounts = self.accounts()?;
        for id in self.simulator.keys() {
            if !accounts.iter().any(|a| &a.id == id) {
                return Err(format!("simulator.{id}: no account {id} is configured"));
            }
        }
        if self.shutdown.grace_ms == 0 {
            return Err("shutdown.grace_ms must be at least 1".into());
        }
        Ok(())
    }

    /// This configuration with every default written out, as the server will run it.
    pub fn effective(&self) -> Result<Config, String> {
        let policies = self.policies()?;
        let mut cfg = self.clone();
        cfg.listen.get_or_insert(DEFAULT_LISTEN);
        cfg.database_url
            .get_or_insert_with(|| DEFAULT_DATABASE_URL.to_string());
        cfg.simulation.get_or_insert(true);
        cfg.engine_interval_ms
            .get_or_insert(DEFAULT_ENGINE_INTERVAL_MS);
        cfg.usage_sync_interval_ms
            .get_or_insert(DEFAULT_USAGE_SYNC_INTERVAL_MS);
        cfg.rate_limit_per_key
            .get_or_insert(crate::api::auth::DEFAULT_RATE_PER_KEY);
        cfg.key_cache_ms
            .get_or_insert(crate::api::auth::DEFAULT_KEY_CACHE_MS);
        // The accounts as they run, in the one form that says it all.
        let accounts = self.accounts()?;
        if cfg.simulation == Some(true) {
            for a in &accounts {
                cfg.simulator.entry(a.id.clone()).or_default();
            }
        }
        cfg.accounts = accounts.iter().map(AccountConfig::to_entry).collect();
        cfg.carrier_api.clear();
        cfg.carrier_limits.clear();
        cfg.carriers = policies
            .iter()
            .map(|(id, p)| (*id, PolicyOverride::from_policy(p)))
            .collect();
        Ok(cfg)
    }

    /// The effective configuration as TOML, with the database password and the bootstrap key
    /// replaced: safe to paste into a ticket.
    pub fn to_redacted_toml(&self) -> Result<String, String> {
        let mut cfg = self.effective()?;
        cfg.database_url = cfg.database_url.as_deref().map(redact_url);
        if cfg.data_key.is_some() {
            cfg.data_key = Some(REDACTED.to_string());
        }
        if cfg.bootstrap_key.is_some() {
            cfg.bootstrap_key = Some(REDACTED.to_string());
        }
        cfg.telemetry = cfg.telemetry.redacted();
        toml::to_string(&cfg).map_err(|e| format!("cannot render the configuration: {e}"))
    }

    /// The accounts the server runs (see `carrier::account`), validated.
    pub fn accounts(&self) -> Result<Vec<AccountConfig>, String> {
        let mut accounts = crate::carrier::account::accounts(
            &self.accounts,
            Legacy {
                carrier_api: &self.carrier_api,
                carrier_limits: &self.carrier_limits,
            },
            self.simulation != Some(false),
        )?;
        for a in &mut accounts {
            a.resolve_repeat_window(self.journal.repeat_window_s);
        }
        Ok(accounts)
    }

    /// The accounts `simgate simulate` serves: read as simulated, whatever `simulation` says.
    pub fn simulated_accounts(&self) -> Result<Vec<AccountConfig>, String> {
        let mut accounts = crate::carrier::account::accounts(
            &self.accounts,
            Legacy {
                carrier_api: &BTreeMap::new(),
                carrier_limits: &self.carrier_limits,
            },
            true,
        )?;
        for a in &mut accounts {
            a.resolve_repeat_window(self.journal.repeat_window_s);
        }
        Ok(accounts)
    }

    /// The effective policy of every carrier, validated.
    pub fn policies(&self) -> Result<BTreeMap<CarrierId, CarrierPolicy>, String> {
        CarrierId::ALL
            .into_iter()
            .map(|id| {
                let mut p = CarrierPolicy::default_for(id);
                if let Some(o) = self.carriers.get(&id) {
                    o.apply(&mut p);
                }
                p.validate().map_err(|e| format!("carriers.{id}: {e}"))?;
                Ok((id, p))
            })
            .collect()
    }
}

impl PolicyOverride {
    fn from_policy(p: &CarrierPolicy) -> PolicyOverride {
        PolicyOverride {
            cycle_start_day: Some(p.cycle_start_day),
            retention_months: Some(p.retention_months),
            retention_fee_fen: Some(p.retention_fee.0),
            cancel_when_retention_ends: Some(p.cancel_when_retention_ends),
            arrears_recovery: Some(p.arrears_recovery),
            renewal_restore: Some(p.renewal_restore),
            same_day_restore_delay_minutes: Some(p.same_day_restore_delay_minutes),
            test_period_days: Some(p.test_period_days),
            test_gift_bytes: Some(p.test_gift_bytes),
            silent_period_days: Some(p.silent_period_days),
            prorate_first_month: Some(p.prorate_first_month),
        }
    }

    fn apply(&self, p: &mut CarrierPolicy) {
        macro_rules! set {
            ($field:ident) => {
                if let Some(v) = self.$field {
                    p.$field = v;
                }
            };
        }
        set!(cycle_start_day);
        set!(retention_months);
        set!(cancel_when_retention_ends);
        set!(arrears_recovery);
        set!(renewal_restore);
        set!(same_day_restore_delay_minutes);
        set!(test_period_days);
        set!(test_gift_bytes);
        set!(silent_period_days);
        set!(prorate_first_month);
        if let Some(v) = self.retention_fee_fen {
            p.retention_fee = Fen(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gives_the_rules_defaults() {
        let cfg = Config::from_toml("").unwrap();
        let p = cfg.policies().unwrap();
        assert_eq!(
            p[&CarrierId::Unicom],
            CarrierPolicy::default_for(CarrierId::Unicom)
        );
    }

    #[test]
    fn simulator_change_settings_parse_and_bad_ones_name_their_key() {
        let cfg = Config::from_toml(
            "[simulator.mobile]\nrepeat_window_s = 1800\norders = true\norder_delay_s = 5\n\
             rebind_lifts_stop = \"never\"\n",
        )
        .unwrap();
        let s = &cfg.simulator[&AccountId::default_for(CarrierId::Mobile)];
        assert_eq!(
            (s.repeat_window_s, s.orders, s.order_delay_s),
            (Some(1800), true, 5)
        );
        assert_eq!(
            s.rebind_lifts_stop,
            crate::carrier::sim::RebindLiftsStop::Never
        );
        for (text, key) in [
            (
                "repeat_window_s = 86401",
                "simulator.mobile: repeat_window_s",
            ),
            ("order_delay_s = 2592001", "simulator.mobile: order_delay_s"),
            ("rebind_lifts_stop = \"sometimes\"", "rebind_lifts_stop"),
        ] {
            let e = Config::from_toml(&format!("[simulator.mobile]\n{text}\n")).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn carrier_overrides_change_only_what_they_name() {
        let cfg = Config::from_toml(
            "[carriers.unicom]\narrears_recovery = \"auto\"\nretention_fee_fen = 300\n",
        )
        .unwrap();
        let p = &cfg.policies().unwrap()[&CarrierId::Unicom];
        assert_eq!(p.arrears_recovery, ArrearsRecovery::Auto);
        assert_eq!(p.retention_fee, Fen(300));
        assert_eq!(p.renewal_restore, RenewalRestore::NextCycle);
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let cfg = Config::from_toml(
            "database_url = \"postgres://u:hunter2@h/db\"\nbootstrap_key = \"sgk_0123456789abcdef_topsecretsecretsecret\"\n",
        )
        .unwrap();
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("topsecret"),
            "{shown}"
        );
    }

    #[test]
    // figment::Jail's closure must return figment's own (large) error type.
    #[allow(clippy::result_large_err)]
    fn environment_overrides_the_file_and_nested_keys_use_double_underscores() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "simgate.toml",
                "engine_interval_ms = 200\n[log]\nformat = \"pretty\"\n",
            )?;
            jail.set_env("SIMGATE_ENGINE_INTERVAL_MS", "5000");
            jail.set_env("SIMGATE_LOG__FORMAT", "json");
            jail.set_env("SIMGATE_CARRIER_LIMITS__UNICOM__REQUESTS_PER_SECOND", "50");
            // Not configuration keys: the file's path, the client's and the tests' settings.
            jail.set_env("SIMGATE_CONFIG", "simgate.toml");
            jail.set_env("SIMGATE_API_KEY", "sgk_x");
            jail.set_env("SIMGATE_TEST_POSTGRES_URL", "postgres://x");
            let cfg = Config::load(Some(Path::new("simgate.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(cfg.engine_interval_ms, Some(5000));
            assert_eq!(cfg.log.format, LogFormat::Json);
            assert_eq!(
                cfg.carrier_limits[&CarrierId::Unicom].requests_per_second,
                50
            );
            Ok(())
        });
    }

    #[test]
    // figment::Jail's closure must return figment's own (large) error type.
    #[allow(clippy::result_large_err)]
    fn a_misspelt_or_mistyped_variable_is_refused_by_name() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SIMGATE_ENGINE_INTERVL_MS", "5000");
            let err = Config::load(None).expect_err("misspelt key accepted");
            assert!(err.contains("ENGINE_INTERVL_MS"), "{err}");
            jail.clear_env();
            jail.set_env("SIMGATE_RATE_LIMIT_PER_KEY", "lots");
            let err = Config::load(None).expect_err("string accepted as a number");
            assert!(err.contains("RATE_LIMIT_PER_KEY"), "{err}");
            jail.clear_env();
            jail.set_env("SIMGATE_METRICS__ENABLED", "maybe");
            let err = Config::load(None).expect_err("a non-flag accepted as a flag");
            assert!(err.contains("METRICS.ENABLED"), "{err}");
            jail.clear_env();
            jail.set_env("SIMGATE_LOG__FILTER", "info,[");
            let err = Config::load(None).expect_err("bad filter accepted");
            assert!(err.contains("log.filter"), "{err}");
            jail.clear_env();
            jail.set_env("SIMGATE_JOURNAL__LEASE_MS", "10");
            let err = Config::load(None).expect_err("a 10 ms journal lease accepted");
            assert!(err.contains("journal.lease_ms"), "{err}");
            jail.clear_env();
            jail.set_env("SIMGATE_JOURNAL__DRIFT_REPAIR", "undo");
            let err = Config::load(None).expect_err("an unknown drift repair accepted");
            assert!(err.to_lowercase().contains("drift_repair"), "{err}");
            Ok(())
        });
    }

    #[test]
    // figment::Jail's closure must return figment's own (large) error type.
    #[allow(clippy::result_large_err)]
    fn environment_values_are_kept_as_written_and_read_as_the_key_wants() {
        figment::Jail::expect_with(|jail| {
            // A secret of digits keeps its leading zeros and stays a string.
            jail.set_env("SIMGATE_BOOTSTRAP_KEY", "0012345");
            jail.set_env("SIMGATE_DATABASE_URL", "sqlite://0042.db");
            jail.set_env("SIMGATE_METRICS__ENABLED", "false");
            jail.set_env("SIMGATE_SHUTDOWN__GRACE_MS", "2500");
            let cfg = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(cfg.bootstrap_key.as_deref(), Some("0012345"));
            assert_eq!(cfg.database_url.as_deref(), Some("sqlite://0042.db"));
            assert!(!cfg.metrics.enabled);
            assert_eq!(cfg.shutdown.grace_ms, 2500);
            Ok(())
        });
    }

    #[test]
    // figment::Jail's closure must return figment's own (large) error type.
    #[allow(clippy::result_large_err)]
    fn telemetry_is_off_by_default_and_set_from_the_file_or_the_environment() {
        let d = Config::from_toml("").unwrap().telemetry;
        assert!(!d.enabled());
        assert_eq!(
            (d.service_name.as_str(), d.sampling_ratio),
            ("simgate", 1.0)
        );
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "simgate.toml",
                "[telemetry]\notlp_endpoint = \"http://collector:4317\"\nservice_name = \"sg-eu\"\n",
            )?;
            jail.set_env("SIMGATE_TELEMETRY__SAMPLING_RATIO", "0.25");
            let cfg = Config::load(Some(Path::new("simgate.toml"))).map_err(|e| e.to_string())?;
            assert!(cfg.telemetry.enabled());
            assert_eq!(cfg.telemetry.service_name, "sg-eu");
            assert_eq!(cfg.telemetry.sampling_ratio, 0.25);
            jail.set_env("SIMGATE_TELEMETRY__SAMPLING_RATIO", "1.5");
            let err = Config::load(None).expect_err("a ratio above 1 accepted");
            assert!(err.contains("telemetry.sampling_ratio"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_telemetry_settings_name_the_field_and_the_endpoint_password_is_never_shown() {
        for (toml, field) in [
            ("sampling_ratio = -0.1", "telemetry.sampling_ratio"),
            ("sampling_ratio = nan", "telemetry.sampling_ratio"),
            (
                "otlp_endpoint = \"collector:4317\"",
                "telemetry.otlp_endpoint",
            ),
            (
                "otlp_endpoint = \"ftp://collector\"",
                "telemetry.otlp_endpoint",
            ),
            (
                "otlp_endpoint = \"http://c:4317\"\nservice_name = \"\"",
                "telemetry.service_name",
            ),
            ("samplng_ratio = 0.5", "samplng_ratio"),
        ] {
            let err = Config::from_toml(&format!("[telemetry]\n{toml}\n")).unwrap_err();
            assert!(err.contains(field), "{toml}: {err}");
        }
        let cfg = Config::from_toml(
            "[telemetry]\notlp_endpoint = \"https://u:hunter2@collector:4317\"\n",
        )
        .unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
        let text = cfg.to_redacted_toml().unwrap();
        assert!(
            !text.contains("hunter2") && text.contains("collector:4317"),
            "{text}"
        );
    }

    #[test]
    fn a_named_file_that_is_missing_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/simgate.toml"))).unwrap_err();
        assert!(err.contains("/nonexistent/simgate.toml"), "{err}");
    }

    #[test]
    fn the_printed_configuration_has_every_default_and_no_secret() {
        let cfg = Config::from_toml(
            "database_url = \"postgres://u:hunter2@db.internal/simgate\"\n\
             bootstrap_key = \"sgk_0123456789abcdef_topsecretsecretsecret\"\n\
             [carriers.telecom]\nretention_months = 6\n",
        )
        .unwrap();
        let text = cfg.to_redacted_toml().unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("topsecret"),
            "{text}"
        );
        assert!(text.contains("db.internal/simgate"), "{text}");
        // What is printed is itself a valid configuration that means the same thing.
        let again = Config::from_toml(&text).unwrap();
        assert_eq!(again.engine_interval_ms, Some(DEFAULT_ENGINE_INTERVAL_MS));
        assert_eq!(again.listen, Some(DEFAULT_LISTEN));
        assert_eq!(
            again.policies().unwrap()[&CarrierId::Telecom].retention_months,
            6
        );
        assert_eq!(again.policies().unwrap(), cfg.policies().unwrap());
        assert_eq!(again.metrics, MetricsConfig::default());
        // The default accounts, each with its limits written out.
        let accounts = again.accounts().unwrap();
        assert_eq!(accounts.len(), 3);
        assert_eq!(accounts[1].id.as_str(), "unicom");
        assert_eq!(
            accounts[1].limits,
            crate::carrier::guard::CarrierLimits::default()
        );
    }

    #[test]
    fn bad_config_names_the_key() {
        let err = Config::from_toml("[carriers.mobile]\ncycle_start_day = 30\n").unwrap_err();
        assert!(
            err.contains("carriers.mobile") && err.contains("cycle_start_day"),
            "{err}"
        );
        let err = Config::from_toml("[carriers.mobile]\nretention_mnths = 3\n").unwrap_err();
        assert!(err.contains("retention_mnths"), "{err}");
        let err = Config::from_toml("[carriers.cmcc]\n").unwrap_err();
        assert!(err.contains("cmcc"), "{err}");
    }

    #[test]
    fn webhook_targets_and_the_data_key_are_configured_and_checked_by_name() {
        let cfg = Config::from_toml(
            "data_key = \"dGVzdC1kYXRhLWtleS0wMTIzNDU2Nzg5YWJjZGVmMDE=\"\n\
             [webhooks]\nallow_http = true\nallow_hosts = [\"127.0.0.0/8\", \"hooks.test\"]\n\
             max_per_customer = 3\n",
        )
        .unwrap();
        assert!(cfg.webhooks.allow_http);
        assert_eq!(cfg.webhooks.max_per_customer, 3);
        assert_eq!(cfg.webhooks.max_in_flight_per_webhook, 4);
        // The data key is never printed.
        assert!(!format!("{cfg:?}").contains("dGVzdC1k"));
        assert!(!cfg.to_redacted_toml().unwrap().contains("dGVzdC1k"));
        let err = Config::from_toml("[webhooks]\nallow_hosts = [\"10.0.0.0/40\"]\n").unwrap_err();
        assert!(err.contains("webhooks.allow_hosts"), "{err}");
        let err = Config::from_toml("[webhooks]\nmax_per_customer = 0\n").unwrap_err();
        assert!(err.contains("webhooks.max_per_customer"), "{err}");
        // Secure defaults.
        let d = Config::default().webhooks;
        assert!(!d.allow_http && d.allow_hosts.is_empty() && d.max_per_customer == 10);
    }
}
