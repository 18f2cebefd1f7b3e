//! The carrier accounts of a deployment, from configuration: `[[accounts]]` entries (id,
//! carrier, platform, endpoint, credentials, limits), or, without any, one account per carrier
//! named after it (simulated by default; the older `[carrier_api.<carrier>]` and
//! `[carrier_limits.<carrier>]` sections still configure those). Each entry is read key by key
//! so that every error names `accounts[i].<key>`, and a credential can come from the entry, a
//! file (`<key>_file`) or an environment variable (`<key>_env`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::guard::CarrierLimits;
use super::platform::{ApiConfig, Platform};
use crate::domain::{AccountId, CarrierId};

/// Keys of an entry that are not the platform's own.
const ID: &str = "id";
const CARRIER: &str = "carrier";
const PLATFORM: &str = "platform";
const LIMIT_KEYS: &[&str] = &[
    "requests_per_second",
    "method_requests_per_second",
    "max_concurrency",
    "breaker_failures",
    "breaker_open_ms",
];

/// One account as the server runs it.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    pub id: AccountId,
    pub carrier: CarrierId,
    pub platform: Platform,
    /// The endpoint and credentials of a real platform; None for a simulated account and for
    /// every account in simulation mode (its wire simulator's are generated at start).
    pub api: Option<ApiConfig>,
    pub limits: CarrierLimits,
    /// `repeat_window_s`: the shortest time between two changes to one card the platform
    /// accepts. None: not set in the entry, see [`default_repeat_window_s`]; the server resolves
    /// it before use.
    pub repeat_window_s: Option<u64>,
}

/// The key of an account's repeat window.
const REPEAT_WINDOW: &str = "repeat_window_s";
/// The longest repeat window an entry may set (a day).
const MAX_REPEAT_WINDOW_S: u64 = 86_400;

/// The repeat window of an account whose entry sets none: 30 minutes for China Mobile's
/// OneLink and the simulated China Mobile, none for the other platforms. OneLink's
/// documentation says "同一卡号30分钟内不能通过此类接口重复办理业务" ([PHP] CMIOT_API23S03) and a
/// later copy says 3 minutes ([THL] OperatorRequestConstants.java); which one the live platform
/// applies is not confirmed (`carrier-wire/onelink.md` §3), so the longer one is the default:
/// waiting too long delays a change, waiting too little gets it refused. No window is published
/// for CMP or Control Center.
pub fn default_repeat_window_s(platform: Platform, carrier: CarrierId) -> u64 {
    match (platform, carrier) {
        (Platform::Onelink, _) | (Platform::Simulated, CarrierId::Mobile) => 1800,
        _ => 0,
    }
}

impl AccountConfig {
    /// The account's repeat window: its own, else `default` (`[journal] repeat_window_s`), else
    /// the platform's ([`default_repeat_window_s`]).
    pub fn resolve_repeat_window(&mut self, default: Option<u64>) {
        if self.repeat_window_s.is_none() {
            self.repeat_window_s = Some(
                default.unwrap_or_else(|| default_repeat_window_s(self.platform, self.carrier)),
            );
        }
    }

    pub fn repeat_window(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.repeat_window_s.unwrap_or(0))
    }
}

impl AccountConfig {
    /// What every replica must agree on: carrier, platform, endpoint, timeouts and limits
    /// (not the credentials, which a replica may read from its own secret store).
    pub fn shared_settings(&self) -> Map<String, Value> {
        let mut m = self.to_entry().0;
        if let Some(api) = &self.api {
            for (field, _) in api.secrets() {
                m.remove(field);
            }
        }
        m
    }

    /// The entry as `simgate config print` shows it: every limit written out, secrets redacted.
    pub fn to_entry(&self) -> AccountEntry {
        let mut m = Map::new();
        m.insert(ID.into(), Value::String(self.id.to_string()));
        m.insert(CARRIER.into(), Value::String(self.carrier.to_string()));
        m.insert(PLATFORM.into(), Value::String(self.platform.to_string()));
        if let Ok(Value::Object(limits)) = serde_json::to_value(self.limits) {
            m.extend(limits);
        }
        if let Some(w) = self.repeat_window_s {
            m.insert(REPEAT_WINDOW.into(), Value::from(w));
        }
        if let Some(Ok(Value::Object(api))) = self.api.as_ref().map(serde_json::to_value) {
            m.extend(api.into_iter().filter(|(k, _)| k != PLATFORM));
        }
        AccountEntry(m)
    }
}

/// An `[[accounts]]` entry as written, checked by [`accounts`].
#[derive(Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct AccountEntry(pub Map<String, Value>);

impl std::fmt::Debug for AccountEntry {
    /// Only the keys that are never secret: an entry may hold credentials in clear.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("AccountEntry");
        for k in [ID, CARRIER, PLATFORM] {
            if let Some(v) = self.0.get(k) {
                d.field(k, v);
            }
        }
        d.finish_non_exhaustive()
    }
}

/// `[[accounts]]` entries from a TOML text (for the server builder and tools).
pub fn entries_from_toml(text: &str) -> Result<Vec<AccountEntry>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        accounts: Vec<AccountEntry>,
    }
    toml::from_str::<File>(text)
        .map(|f| f.accounts)
        .map_err(|e| format!("accounts: {e}"))
}

/// The older one-account-per-carrier sections, still read when there is no `[[accounts]]`.
pub struct Legacy<'a> {
    pub carrier_api: &'a BTreeMap<CarrierId, ApiConfig>,
    pub carrier_limits: &'a BTreeMap<CarrierId, CarrierLimits>,
}

/// The accounts the server runs: the `[[accounts]]` entries, or the default account of every
/// carrier (from the older sections when they are set).
pub fn accounts(
    entries: &[AccountEntry],
    legacy: Legacy<'_>,
    simulation: bool,
) -> Result<Vec<AccountConfig>, String> {
    if entries.is_empty() {
        return legacy_accounts(legacy, simulation);
    }
    if let Some(c) = legacy.carrier_api.keys().next() {
        return Err(format!(
            "carrier_api.{c}: with [[accounts]], put each platform's base_url and credentials \
             in its account entry"
        ));
    }
    if let Some(c) = legacy.carrier_limits.keys().next() {
        return Err(format!(
            "carrier_limits.{c}: with [[accounts]], put the limits (requests_per_second, \
             max_concurrency, ...) in each account entry"
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let a = parse_entry(i, e, simulation)?;
        if !seen.insert(a.id.clone()) {
            return Err(format!(
                "accounts[{i}].id: account {} is configured twice",
                a.id
            ));
        }
        out.push(a);
    }
    Ok(out)
}

fn legacy_accounts(legacy: Legacy<'_>, simulation: bool) -> Result<Vec<AccountConfig>, String> {
    if simulation {
        if let Some(c) = legacy.carrier_api.keys().next() {
            return Err(format!(
                "carrier_api.{c} is used only with simulation = false (the simulated carriers \
                 are reached over HTTP with simulator_transport = \"http\")"
            ));
        }
        return Ok(CarrierId::ALL
            .into_iter()
            .map(|carrier| AccountConfig {
                id: AccountId::default_for(carrier),
                carrier,
                platform: Platform::Simulated,
                api: None,
                limits: legacy
                    .carrier_limits
                    .get(&carrier)
                    .copied()
                    .unwrap_or_else(|| default_limits(Platform::Simulated)),
                repeat_window_s: None,
            })
            .collect());
    }
    if legacy.carrier_api.is_empty() {
        return Err(
            "simulation = false needs the real carrier accounts: add [[accounts]] entries \
             (id, carrier, platform, base_url and credentials)"
                .into(),
        );
    }
    legacy
        .carrier_api
        .iter()
        .map(|(carrier, api)| {
            let platform = api.platform();
            check_platform_carrier(platform, *carrier)
                .map_err(|e| format!("carrier_api.{carrier}.platform: {e}"))?;
            Ok(AccountConfig {
                id: AccountId::default_for(*carrier),
                carrier: *carrier,
                platform,
                api: Some(api.clone()),
                limits: legacy
                    .carrier_limits
                    .get(carrier)
                    .copied()
                    .unwrap_or_else(|| default_limits(platform)),
                repeat_window_s: None,
            })
        })
        .collect()
}

fn default_limits(platform: Platform) -> CarrierLimits {
    CarrierLimits {
        max_concurrency: platform.default_max_concurrency(),
        ..CarrierLimits::default()
    }
}

fn check_platform_carrier(platform: Platform, carrier: CarrierId) -> Result<(), String> {
    match platform.carrier() {
        Some(c) if c != carrier => Err(format!(
            "{platform} is {}'s platform, not {}'s",
            c.display_name(),
            carrier.display_name()
        )),
        _ => Ok(()),
    }
}

fn text<'a>(i: usize, e: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match e.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("accounts[{i}].{key} must be a string")),
        None => Err(format!("accounts[{i}].{key} is required")),
    }
}

fn parse_entry(i: usize, e: &AccountEntry, simulation: bool) -> Result<AccountConfig, String> {
    let e = &e.0;
    let id = AccountId::parse(text(i, e, ID)?).map_err(|m| format!("accounts[{i}].id: {m}"))?;
    let at = |key: &str| format!("accounts[{i}].{key} (account {id})");
    let carrier: CarrierId = text(i, e, CARRIER)?
        .parse()
        .map_err(|m| format!("{}: {m}", at(CARRIER)))?;
    let platform =
        Platform::parse(text(i, e, PLATFORM)?).map_err(|m| format!("{}: {m}", at(PLATFORM)))?;
    check_platform_carrier(platform, carrier).map_err(|m| format!("{}: {m}", at(PLATFORM)))?;

    let mut limits = Map::new();
    let mut rest = Map::new();
    let mut repeat_window_s = None;
    for (k, v) in e {
        match k.as_str() {
            ID | CARRIER | PLATFORM => {}
            REPEAT_WINDOW => {
                let w = v
                    .as_u64()
                    .filter(|w| *w <= MAX_REPEAT_WINDOW_S)
                    .ok_or_else(|| {
                        format!(
                            "{}: must be a whole number of seconds from 0 to {MAX_REPEAT_WINDOW_S}",
                            at(REPEAT_WINDOW)
                        )
                    })?;
                repeat_window_s = Some(w);
            }
            k if LIMIT_KEYS.contains(&k) => {
                limits.insert(k.to_string(), v.clone());
            }
            _ => {
                rest.insert(k.clone(), v.clone());
            }
        }
    }
    let mut limits: CarrierLimits = serde_json::from_value(Value::Object(limits.clone()))
        .map_err(|m| format!("accounts[{i}] (account {id}) limits: {m}"))?;
    if !e.contains_key("max_concurrency") {
        limits.max_concurrency = platform.default_max_concurrency();
    }
    if limits.max_concurrency == 0 {
        return Err(format!("{} must be at least 1", at("max_concurrency")));
    }

    let api = if platform == Platform::Simulated || simulation {
        if let Some(k) = rest.keys().next() {
            let why = if platform == Platform::Simulated {
                "a simulated account has no endpoint or credentials".to_string()
            } else {
                "with simulation, the account's wire simulator and its credentials are made \
                 at start; set simulation = false to reach the real platform"
                    .to_string()
            };
            return Err(format!("{}: unexpected key: {why}", at(k)));
        }
        None
    } else {
        let mut fields = resolve_secrets(i, &id, rest)?;
        fields.insert(PLATFORM.into(), Value::String(platform.to_string()));
        let api: ApiConfig = serde_json::from_value(Value::Object(fields))
            .map_err(|m| format!("accounts[{i}] (account {id}, platform {platform}): {m}"))?;
        Some(api)
    };
    if platform == Platform::Simulated && !simulation {
        return Err(format!(
            "{}: a simulated account needs simulation = true",
            at(PLATFORM)
        ));
    }
    Ok(AccountConfig {
        id,
        carrier,
        platform,
        api,
        limits,
        repeat_window_s,
    })
}

/// `<key>_file` and `<key>_env` replaced by `<key>` read from the file (without its final line
/// break) or the environment variable.
fn resolve_secrets(
    i: usize,
    id: &AccountId,
    fields: Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (k, v) in fields {
        let (base, value) = if let Some(base) = k.strip_suffix("_file") {
            let path = v
                .as_str()
                .ok_or_else(|| format!("accounts[{i}].{k} must be a path"))?;
            let s = std::fs::read_to_string(path)
                .map_err(|e| format!("accounts[{i}].{k} (account {id}): {path}: {e}"))?;
            (
                base.to_string(),
                Value::String(s.trim_end_matches(['\r', '\n']).to_string()),
            )
        } else if let Some(base) = k.strip_suffix("_env") {
            let var = v
                .as_str()
                .ok_or_else(|| format!("accounts[{i}].{k} must name a variable"))?;
            let s = std::env::var(var).map_err(|_| {
                format!("accounts[{i}].{k} (account {id}): environment variable {var} is not set")
            })?;
            (base.to_string(), Value::String(s))
        } else {
            (k, v)
        };
        if out.insert(base.clone(), value).is_some() {
            return Err(format!(
                "accounts[{i}].{base} (account {id}) is given twice (directly, as a file or as \
                 a variable): keep one"
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(toml: &str) -> Vec<AccountEntry> {
        #[derive(serde::Deserialize)]
        struct F {
            accounts: Vec<AccountEntry>,
        }
        toml::from_str::<F>(toml)
            .map(|f| f.accounts)
            .unwrap_or_default()
    }

    fn none() -> (
        BTreeMap<CarrierId, ApiConfig>,
        BTreeMap<CarrierId, CarrierLimits>,
    ) {
        (BTreeMap::new(), BTreeMap::new())
    }

    #[test]
    fn zero_configuration_is_one_simulated_account_per_carrier() {
        let (api, limits) = none();
        let a = accounts(
            &[],
            Legacy {
                carrier_api: &api,
                carrier_limits: &limits,
            },
            true,
        )
        .unwrap();
        let ids: Vec<&str> = a.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["mobile", "unicom", "telecom"]);
        assert!(a
            .iter()
            .all(|a| a.platform == Platform::Simulated && a.api.is_none()));
    }

    #[test]
    fn real_accounts_read_their_platform_settings_and_limits_with_platform_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let toml = format!(
            r#"
            [[accounts]]
            id = "gd"
            carrier = "mobile"
            platform = "onelink"
            base_url = "https://api.iot.10086.cn/v5/ec"
            appid = "A1"
            password_file = "{}"
            method_requests_per_second = 1
            [[accounts]]
            id = "cc"
            carrier = "unicom"
            platform = "jasper"
            base_url = "https://api.10646.cn/rws/api/v1"
            username = "u"
            api_key = "k"
            "#,
            pw.display()
        );
        let (api, limits) = none();
        let a = accounts(
            &entries(&toml),
            Legacy {
                carrier_api: &api,
                carrier_limits: &limits,
            },
            false,
        )
        .unwrap();
        assert_eq!(a[0].limits.method_requests_per_second, 1);
        assert_eq!(a[0].limits.max_concurrency, 32);
        // Control Center's fair use: one call at a time unless configured.
        assert_eq!(a[1].limits.max_concurrency, 1);
        match &a[0].api {
            Some(ApiConfig::Onelink(c)) => assert_eq!(c.password.expose(), "s3cret"),
            other => panic!("{other:?}"),
        }
        // Printed, the secret is redacted and the entry names every limit.
        let shown = serde_json::to_string(&a[0].to_entry()).unwrap();
        assert!(
            !shown.contains("s3cret") && shown.contains("breaker_open_ms"),
            "{shown}"
        );
    }

    #[test]
    fn bad_entries_name_the_entry_and_the_key() {
        let (api, limits) = none();
        let legacy = || Legacy {
            carrier_api: &api,
            carrier_limits: &limits,
        };
        for (toml, simulation, want) in [
            ("id = \"x\"\ncarrier = \"unicom\"\nplatform = \"onelink\"", true, "accounts[0].platform"),
            ("id = \"X\"\ncarrier = \"mobile\"\nplatform = \"simulated\"", true, "accounts[0].id"),
            ("id = \"x\"\ncarrier = \"cmcc\"\nplatform = \"simulated\"", true, "accounts[0].carrier"),
            ("id = \"x\"\ncarrier = \"mobile\"\nplatform = \"simulated\"\nappid = \"a\"", true, "accounts[0].appid"),
            ("id = \"x\"\ncarrier = \"mobile\"\nplatform = \"onelink\"\nbase_url = \"http://h\"", true, "accounts[0].base_url"),
            ("id = \"x\"\ncarrier = \"mobile\"\nplatform = \"simulated\"", false, "simulation = true"),
            ("id = \"x\"\ncarrier = \"mobile\"\nplatform = \"onelink\"\nbase_url = \"http://h\"\nappid = \"a\"\npasword = \"p\"", false, "pasword"),
            ("id = \"x\"\ncarrier = \"mobile\"\nplatform = \"simulated\"\nmax_concurrency = 0", true, "accounts[0].max_concurrency"),
            ("id = \"x\"\ncarrier = \"mobile\"\nplatform = \"simulated\"\nrequests_per_second = \"fast\"", true, "accounts[0]"),
            ("id = \"x\"\ncarrier = \"mobile\"\nplatform = \"onelink\"\nbase_url = \"http://h\"\nappid = \"a\"\npassword_env = \"SIMGATE_TEST_NO_SUCH_VARIABLE\"", false, "SIMGATE_TEST_NO_SUCH_VARIABLE"),
        ] {
            let e = entries(&format!("[[accounts]]\n{toml}\n"));
            assert_eq!(e.len(), 1, "{toml}");
            let err = accounts(&e, legacy(), simulation).unwrap_err();
            assert!(err.contains(want), "{toml}: {err}");
        }
        let twice = entries("[[accounts]]\nid = \"a\"\ncarrier = \"mobile\"\nplatform = \"simulated\"\n[[accounts]]\nid = \"a\"\ncarrier = \"unicom\"\nplatform = \"simulated\"\n");
        let err = accounts(&twice, legacy(), true).unwrap_err();
        assert!(err.contains("accounts[1].id"), "{err}");
    }

    #[test]
    fn the_older_sections_configure_the_default_accounts_and_are_refused_next_to_accounts() {
        let mut limits = BTreeMap::new();
        limits.insert(
            CarrierId::Unicom,
            CarrierLimits {
                requests_per_second: 7,
                ..CarrierLimits::default()
            },
        );
        let api = BTreeMap::new();
        let a = accounts(
            &[],
            Legacy {
                carrier_api: &api,
                carrier_limits: &limits,
            },
            true,
        )
        .unwrap();
        assert_eq!(a[1].limits.requests_per_second, 7);
        let e =
            entries("[[accounts]]\nid = \"a\"\ncarrier = \"mobile\"\nplatform = \"simulated\"\n");
        let err = accounts(
            &e,
            Legacy {
                carrier_api: &api,
                carrier_limits: &limits,
            },
            true,
        )
        .unwrap_err();
        assert!(err.contains("carrier_limits.unicom"), "{err}");
        let err = accounts(
            &[],
            Legacy {
                carrier_api: &api,
                carrier_limits: &BTreeMap::new(),
            },
            false,
        )
        .unwrap_err();
        assert!(err.contains("[[accounts]]"), "{err}");
    }
}
