//! The service's configuration: an optional TOML file, overridden by command-line flags and
//! `SIMGATE_*` environment variables. Zero configuration means an SQLite file in the working
//! directory and the three simulated carriers with the defaults of rules.md.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::domain::{ArrearsRecovery, CarrierId, CarrierPolicy, Fen, RenewalRestore};

pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50051);
pub const DEFAULT_DATABASE_URL: &str = "sqlite://simgate.db";

#[derive(Clone, Deserialize, Default)]
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
    /// true). Real carrier adapters are not built yet, so false is refused at start.
    #[serde(default)]
    pub simulation: Option<bool>,
    /// How often the lifecycle engine looks for due transitions, in milliseconds (default 1000).
    #[serde(default)]
    pub engine_interval_ms: Option<u64>,
    /// A reseller-admin key that must exist (e.g. from SIMGATE_BOOTSTRAP_KEY), so harnesses and
    /// CI start with a known credential. Never printed.
    #[serde(default)]
    pub bootstrap_key: Option<String>,
    /// Where the generated bootstrap key is written (default: the SQLite file's folder, else
    /// the working directory).
    #[serde(default)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Serve TLS (rustls) instead of plaintext.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Requests per second each API key may make (default 1000).
    #[serde(default)]
    pub rate_limit_per_key: Option<u32>,
    /// Per-carrier account limits and circuit breaker, keyed mobile/unicom/telecom.
    #[serde(default)]
    pub carrier_limits: BTreeMap<CarrierId, crate::carrier::guard::CarrierLimits>,
    /// Standing faults of the simulated carriers, keyed mobile/unicom/telecom.
    #[serde(default)]
    pub simulator: BTreeMap<CarrierId, crate::carrier::sim::SimFaults>,
    /// Per-carrier overrides of the retention and recovery rules, keyed mobile/unicom/telecom.
    #[serde(default)]
    pub carriers: BTreeMap<CarrierId, PolicyOverride>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
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
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverride {
    pub cycle_start_day: Option<u32>,
    pub retention_months: Option<u32>,
    pub retention_fee_fen: Option<i64>,
    pub cancel_when_retention_ends: Option<bool>,
    pub arrears_recovery: Option<ArrearsRecovery>,
    pub renewal_restore: Option<RenewalRestore>,
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
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_foreign_identifiers", &self.allow_foreign_identifiers)
            .field("simulation", &self.simulation)
            .field("engine_interval_ms", &self.engine_interval_ms)
            .field(
                "bootstrap_key",
                &self.bootstrap_key.as_ref().map(|_| "<redacted>"),
            )
            .field("data_dir", &self.data_dir)
            .field("tls", &self.tls)
            .field("rate_limit_per_key", &self.rate_limit_per_key)
            .field("carrier_limits", &self.carrier_limits)
            .field("simulator", &self.simulator)
            .field("carriers", &self.carriers)
            .finish()
    }
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        Config::from_toml(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.policies()?;
        for (id, f) in &cfg.simulator {
            f.validate().map_err(|e| format!("simulator.{id}: {e}"))?;
        }
        for (id, l) in &cfg.carrier_limits {
            if l.max_concurrency == 0 {
                return Err(format!(
                    "carrier_limits.{id}: max_concurrency must be at least 1"
                ));
            }
        }
        if cfg.rate_limit_per_key == Some(0) {
            return Err("rate_limit_per_key must be at least 1".into());
        }
        if cfg.engine_interval_ms == Some(0) {
            return Err("engine_interval_ms must be at least 1".into());
        }
        Ok(cfg)
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
}
