//! The platform registry: which carrier platforms exist, and how an account's adapter and its
//! wire simulator are built from the account's configuration. A platform is a folder under
//! `carrier/http/<platform>/` that implements [`WirePlatform`]; it joins the registry with one
//! line in the `platforms!` list below (and one in the contract suite, `tests/api/contract.rs`).
//! `simulated` is the in-process simulator, reachable for any carrier.

use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::budget::Budget;
use super::http::{cmp, cmp_5g, jasper, onelink, unicom_gateway, HttpTimeouts};
use super::sim::SimCarrier;
use super::Carrier;
use crate::domain::{AccountId, CarrierId, CarrierPolicy, Iccid};

/// What an adapter is given besides its platform settings: whose account it is, the rules
/// and budget that go with it, and where it finds the access numbers of its cards.
#[derive(Debug, Clone)]
pub struct AccountCtx {
    pub account: AccountId,
    pub carrier: CarrierId,
    pub policy: CarrierPolicy,
    pub budget: Arc<Budget>,
    pub numbers: NumberBook,
}

impl AccountCtx {
    /// The access number simgate stores for `iccid` on this account (None: none stored).
    pub async fn stored_number(
        &self,
        iccid: &Iccid,
    ) -> Result<Option<String>, super::CarrierError> {
        self.numbers
            .0
            .msisdn(&self.account, iccid)
            .await
            .map_err(super::CarrierError::Transient)
    }

    /// The carrier's default account with the rules.md policy and no limits (tests, tools).
    pub fn default_for(carrier: CarrierId) -> AccountCtx {
        AccountCtx {
            account: AccountId::default_for(carrier),
            carrier,
            policy: CarrierPolicy::default_for(carrier),
            budget: Arc::new(Budget::default()),
            numbers: NumberBook::none(),
        }
    }
}

/// simgate's own record of its cards' access numbers, for an adapter whose platform names
/// cards by number (CMP by default): the number stored with the card at import. Kept apart
/// from the adapter so that a platform adapter never reads the store itself.
#[async_trait::async_trait]
pub trait CardNumbers: Send + Sync {
    /// The access number stored for `iccid` on `account` (None: the card has none stored).
    async fn msisdn(&self, account: &AccountId, iccid: &Iccid) -> Result<Option<String>, String>;
}

/// The [`CardNumbers`] an adapter is given.
#[derive(Clone)]
pub struct NumberBook(pub Arc<dyn CardNumbers>);

impl NumberBook {
    /// No numbers stored anywhere (tests, tools): the adapter asks its platform.
    pub fn none() -> NumberBook {
        struct Nothing;
        #[async_trait::async_trait]
        impl CardNumbers for Nothing {
            async fn msisdn(&self, _: &AccountId, _: &Iccid) -> Result<Option<String>, String> {
                Ok(None)
            }
        }
        NumberBook(Arc::new(Nothing))
    }
}

/// The access numbers an adapter has learnt, kept for the life of the process: on a platform
/// that names cards by number, a card's number costs at most one lookup per process. A number
/// names its card until a card swap (a later issue invalidates it there).
#[derive(Default)]
pub struct KnownNumbers(std::sync::Mutex<std::collections::HashMap<Iccid, String>>);

impl KnownNumbers {
    pub fn get(&self, iccid: &Iccid) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(iccid)
            .cloned()
    }

    pub fn keep(&self, iccid: &Iccid, number: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(iccid.clone(), number.to_string());
    }

    /// The card's number: kept, else simgate's stored one, else what `platform` finds (it
    /// runs only then); kept from then on.
    pub async fn resolve(
        &self,
        ctx: &AccountCtx,
        iccid: &Iccid,
        platform: impl std::future::Future<Output = Result<String, super::CarrierError>>,
    ) -> Result<String, super::CarrierError> {
        if let Some(n) = self.get(iccid) {
            return Ok(n);
        }
        let number = match ctx.stored_number(iccid).await? {
            Some(n) => n,
            None => platform.await?,
        };
        self.keep(iccid, &number);
        Ok(number)
    }
}

impl std::fmt::Debug for NumberBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NumberBook")
    }
}

/// The [`Carrier`] methods every HTTP adapter answers from its `ctx: AccountCtx` field: the
/// carrier and account from configuration, their rules, and that it spends the account's
/// budget itself, per upstream request.
macro_rules! account_methods {
    () => {
        fn id(&self) -> $crate::domain::CarrierId {
            self.ctx.carrier
        }

        fn account(&self) -> $crate::domain::AccountId {
            self.ctx.account.clone()
        }

        fn spends_budget(&self) -> bool {
            true
        }

        fn policy(&self) -> &$crate::domain::CarrierPolicy {
            &self.ctx.policy
        }
    };
}
pub(crate) use account_methods;

/// One carrier platform spoken over HTTP: its settings, adapter and wire simulator.
pub trait WirePlatform {
    /// The `platform = "…"` name.
    const NAME: &'static str;
    /// The carrier whose platform it is.
    const CARRIER: CarrierId;
    /// Calls in flight at once per account unless configured (Control Center's fair use is
    /// one call at a time per account).
    const MAX_CONCURRENCY: u32;
    /// The endpoint and credentials of one account (`deny_unknown_fields`).
    type Config: Clone + std::fmt::Debug + Serialize + DeserializeOwned + Send + Sync;

    fn adapter(cfg: &Self::Config, ctx: AccountCtx) -> Result<Arc<dyn Carrier>, String>;

    /// The wire simulator in front of `sim`, checking the credentials in `cfg`. A change the
    /// faults say "times out after apply" is answered only after `unanswered`.
    fn simulator(sim: Arc<SimCarrier>, cfg: &Self::Config, unanswered: Duration) -> axum::Router;

    /// Settings reaching a wire simulator at `base` (scheme, host and port) with `secret` as
    /// every credential.
    fn generated(base: &str, secret: &str, timeouts: HttpTimeouts) -> Self::Config;

    /// The credentials in `cfg` by field name, in clear: for printing a simulator's generated
    /// settings, never a real account's.
    fn secrets(cfg: &Self::Config) -> Vec<(&'static str, String)>;
}

macro_rules! platforms {
    ($($(#[$meta:meta])* $variant:ident => $platform:ty),* $(,)?) => {
        /// Every platform an account can be on.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Platform {
            /// The in-process simulated carrier, for any carrier.
            Simulated,
            $($(#[$meta])* $variant),*
        }

        impl Platform {
            pub const ALL: [Platform; 1 + [$(stringify!($variant)),*].len()] =
                [Platform::Simulated, $(Platform::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    Platform::Simulated => "simulated",
                    $(Platform::$variant => <$platform as WirePlatform>::NAME),*
                }
            }

            /// The carrier whose platform this is; None for `simulated`, which serves any.
            pub fn carrier(self) -> Option<CarrierId> {
                match self {
                    Platform::Simulated => None,
                    $(Platform::$variant => Some(<$platform as WirePlatform>::CARRIER)),*
                }
            }

            pub fn default_max_concurrency(self) -> u32 {
                match self {
                    Platform::Simulated => 32,
                    $(Platform::$variant => <$platform as WirePlatform>::MAX_CONCURRENCY),*
                }
            }

            /// Settings reaching a wire simulator of this platform at `base`; None for
            /// `simulated`, which has no wire.
            pub fn generated(self, base: &str, secret: &str, timeouts: HttpTimeouts) -> Option<ApiConfig> {
                match self {
                    Platform::Simulated => None,
                    $(Platform::$variant => Some(ApiConfig::$variant(
                        <$platform as WirePlatform>::generated(base, secret, timeouts),
                    ))),*
                }
            }
        }

        /// An account's endpoint and credentials on a platform spoken over HTTP.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(tag = "platform", rename_all = "snake_case")]
        pub enum ApiConfig {
            $($(#[$meta])* $variant(<$platform as WirePlatform>::Config)),*
        }

        impl ApiConfig {
            pub fn platform(&self) -> Platform {
                match self {
                    $(ApiConfig::$variant(_) => Platform::$variant),*
                }
            }

            /// The real adapter for these settings.
            pub fn adapter(&self, ctx: AccountCtx) -> Result<Arc<dyn Carrier>, String> {
                match self {
                    $(ApiConfig::$variant(c) => <$platform as WirePlatform>::adapter(c, ctx)),*
                }
            }

            /// The wire simulator that answers these settings.
            pub fn simulator(&self, sim: Arc<SimCarrier>, unanswered: Duration) -> axum::Router {
                match self {
                    $(ApiConfig::$variant(c) => <$platform as WirePlatform>::simulator(sim, c, unanswered)),*
                }
            }

            pub fn secrets(&self) -> Vec<(&'static str, String)> {
                match self {
                    $(ApiConfig::$variant(c) => <$platform as WirePlatform>::secrets(c)),*
                }
            }
        }
    };
}

platforms! {
    Onelink => onelink::Platform,
    Jasper => jasper::Platform,
    // After Jasper: a simulated Unicom account reached over HTTP keeps speaking Control
    // Center (`wire_of` takes the carrier's first platform).
    UnicomGateway => unicom_gateway::Platform,
    Cmp => cmp::Platform,
    // After Cmp: `wire_of(Telecom)` stays m2m_ec's CMP. Renamed: serde's snake_case of
    // `Cmp5g` is `cmp5g`, not the platform's NAME.
    #[serde(rename = "cmp_5g")]
    Cmp5g => cmp_5g::Platform,
}

impl Platform {
    /// The platform a carrier's simulated account speaks when simulators are reached over
    /// HTTP (`simulator_transport = "http"`): the first registered platform of that carrier.
    pub fn wire_of(carrier: CarrierId) -> Option<Platform> {
        Platform::ALL
            .into_iter()
            .find(|p| p.carrier() == Some(carrier))
    }

    pub fn parse(s: &str) -> Result<Platform, String> {
        Platform::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Platform::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "unknown platform {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a simulating server reaches its simulated accounts that are on `platform =
/// "simulated"`. (An account on a wire platform is always reached over its wire.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SimulatorTransport {
    /// Function calls: the fastest, for most tests.
    #[default]
    InProcess,
    /// The carrier's wire platform: its real HTTP adapter against its wire simulator on
    /// loopback.
    Http,
}

/// The settings printed for a wire simulator: its generated credentials shown, because they
/// are what the person starting it must copy, and worthless anywhere else.
pub fn with_secrets_shown(api: &ApiConfig) -> serde_json::Value {
    let mut v = serde_json::to_value(api).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        for (field, secret) in api.secrets() {
            o.insert(field.to_string(), serde_json::Value::String(secret));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_carrier_has_a_wire_platform_and_names_round_trip() {
        for c in CarrierId::ALL {
            let p = Platform::wire_of(c).expect("a wire platform");
            assert_eq!(p.carrier(), Some(c));
        }
        for p in Platform::ALL {
            assert_eq!(Platform::parse(p.as_str()), Ok(p));
        }
        assert_eq!(
            Platform::parse("unicom_gateway"),
            Ok(Platform::UnicomGateway)
        );
        assert!(Platform::parse("unicom-gateway").is_err());
        assert_eq!(Platform::wire_of(CarrierId::Unicom), Some(Platform::Jasper));
        assert_eq!(Platform::Jasper.default_max_concurrency(), 1);
        assert_eq!(Platform::UnicomGateway.default_max_concurrency(), 1);
        assert_eq!(Platform::wire_of(CarrierId::Telecom), Some(Platform::Cmp));
    }

    #[test]
    fn serde_names_are_the_platform_names() {
        for p in Platform::ALL {
            assert_eq!(
                serde_json::to_value(p).ok(),
                Some(serde_json::Value::String(p.as_str().into())),
                "{p:?}"
            );
            if let Some(api) = p.generated("http://127.0.0.1:1", "s", HttpTimeouts::default()) {
                let v = serde_json::to_value(&api).unwrap_or_default();
                assert_eq!(v["platform"], p.as_str(), "{p:?}");
                let back: ApiConfig = serde_json::from_value(v).expect("round trip");
                assert_eq!(back.platform(), p);
            }
        }
    }

    #[test]
    fn generated_settings_reach_their_platform_and_carry_the_secret() {
        for p in Platform::ALL {
            let Some(api) = p.generated(
                "http://127.0.0.1:1",
                "0123456789abcdef",
                HttpTimeouts::default(),
            ) else {
                assert_eq!(p, Platform::Simulated);
                continue;
            };
            assert_eq!(api.platform(), p);
            assert!(!api.secrets().is_empty());
            // Printed settings show the secrets; the normal form never does.
            let shown = with_secrets_shown(&api).to_string();
            let normal = serde_json::to_string(&api).unwrap_or_default();
            for (_, s) in api.secrets() {
                assert!(shown.contains(&s) && !normal.contains(&s), "{p}: {normal}");
            }
        }
    }
}
