//! China Mobile OneLink (EC API v5), one folder: the adapter behind [`Carrier`] (here), its
//! wire terms (`wire`: envelope, codes, formats), its token and transaction ids (`auth`) and
//! its wire simulator (`simulator`).
//!
//! Upstream calls, all `POST <base_url><path>` with a JSON body carrying `transid` and `token`:
//! - `/get/token` (appid, password, transid): `result[0].token`, `result[0].ttl` in seconds;
//! - `/query/sim-status` (iccid): `cardStatus` — `card()`, `cancel()`, `onboard()`, and the
//!   idempotency check after a refused change;
//! - `/query/sim-data-usage` (iccid): `dataAmount`, KB used this month — `card()`;
//! - `/query/sim-basic-info` (iccid): `imsi`, `msisdn`, `activeDate`, `openDate` —
//!   [`OneLink::basic_info`]; the `msisdn` field name and the date format are not confirmed;
//! - `/query/sim-session` (iccid): `simSessionList[].createDate`, the newest session — `card()`;
//! - `/change/sim-status` (iccid, operType 0 = stop, 1 = restart) — `stop()`, `restore()`;
//! - `/query/sim-stop-reason` (iccid): `stopReason`, a 12-position flag — [`OneLink::stop_reasons`];
//! - `/query/sim-real-name-status` (iccid): `realNameStatus` — [`OneLink::real_name_registered`];
//! - `/query/group-data-usage` (groupId): a pool's usage this month — [`OneLink::group_data_usage`].
//!
//! Not confirmed by public client code (chosen here, kept in [`codes`] so a correction is one
//! edit): the platform's rate-limit answer (treated as HTTP 429), the field of the pool's usage
//! in `/query/group-data-usage` (`useAmount`, KB), and what `realNameStatus` values other than
//! "1" mean (all "not registered").

pub mod auth;
pub mod simulator;
pub mod wire;

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{client, malformed, retry_after, send_error, status_error, HttpTimeouts, Secret};
use crate::carrier::platform::{AccountCtx, WirePlatform};
use crate::carrier::{Carrier, CarrierCard, CarrierError, LastSession, OnboardCard, ServiceState};
use crate::domain::{CarrierId, Iccid};

/// An `[[accounts]]` entry with `platform = "onelink"`: endpoint and credentials.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OneLinkConfig {
    /// Base URL of the platform, e.g. https://api.iot.10086.cn/v5/ec.
    pub base_url: String,
    pub appid: String,
    pub password: Secret,
    #[serde(default)]
    pub timeouts: HttpTimeouts,
}

use auth::Token;
pub use wire::{
    beijing_time, codes, kb_to_bytes, parse_stop_reason, BasicInfo, OneLinkStopReasons,
    PlatformStopReason, BEIJING_FORMAT,
};
use wire::{text, Envelope};

/// Why one exchange failed, before the token retry decides.
enum Failure {
    TokenInvalid,
    Carrier(CarrierError),
}

/// OneLink in the platform registry.
pub struct Platform;

impl WirePlatform for Platform {
    const NAME: &'static str = "onelink";
    const CARRIER: CarrierId = CarrierId::Mobile;
    const MAX_CONCURRENCY: u32 = 32;
    type Config = OneLinkConfig;

    fn adapter(
        cfg: &OneLinkConfig,
        ctx: AccountCtx,
    ) -> Result<std::sync::Arc<dyn Carrier>, String> {
        Ok(std::sync::Arc::new(OneLink::new(cfg, ctx)?))
    }

    fn simulator(
        sim: std::sync::Arc<crate::carrier::sim::SimCarrier>,
        cfg: &OneLinkConfig,
        unanswered: Duration,
    ) -> axum::Router {
        simulator::router(
            sim,
            cfg,
            simulator::WireOptions {
                unanswered_delay: unanswered,
                ..Default::default()
            },
        )
    }

    fn generated(base: &str, secret: &str, timeouts: HttpTimeouts) -> OneLinkConfig {
        OneLinkConfig {
            base_url: format!("{base}/v5/ec"),
            appid: "simgate-sim".into(),
            password: Secret::new(secret),
            timeouts,
        }
    }

    fn secrets(cfg: &OneLinkConfig) -> Vec<(&'static str, String)> {
        vec![("password", cfg.password.expose().to_string())]
    }
}

pub struct OneLink {
    /// Whose account it is: carrier, rules and budget.
    ctx: AccountCtx,
    base_url: String,
    appid: String,
    password: Secret,
    http: reqwest::Client,
    /// An async lock so that concurrent calls after expiry share one `/get/token`.
    token: tokio::sync::Mutex<Option<Token>>,
    seq: AtomicU32,
}

impl OneLink {
    pub fn new(cfg: &OneLinkConfig, ctx: AccountCtx) -> Result<OneLink, String> {
        if cfg.appid.is_empty() {
            return Err("appid is required".into());
        }
        url::Url::parse(&cfg.base_url).map_err(|e| format!("base_url is not a URL: {e}"))?;
        Ok(OneLink {
            ctx,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            appid: cfg.appid.clone(),
            password: cfg.password.clone(),
            http: client(&cfg.timeouts)?,
            token: tokio::sync::Mutex::new(None),
            seq: AtomicU32::new(0),
        })
    }

    /// One POST and its envelope; `result` on status "0".
    async fn exchange(
        &self,
        path: &'static str,
        body: &Map<String, Value>,
        changes: bool,
    ) -> Result<Vec<Value>, Failure> {
        self.ctx.budget.spend(path).await;
        let url = format!("{}{path}", self.base_url);
        let resp = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| Failure::Carrier(send_error(e, changes)))?;
        let status = resp.status();
        let wait = retry_after(resp.headers());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Failure::Carrier(send_error(e, changes)))?;
        if !status.is_success() {
            return Err(Failure::Carrier(status_error(status, wait)));
        }
        let env: Envelope = serde_json::from_slice(&bytes).map_err(|_| {
            Failure::Carrier(malformed(&format!("{path}: not an envelope"), changes))
        })?;
        let code = text(&env.status).ok_or_else(|| {
            Failure::Carrier(malformed(&format!("{path}: status is not a code"), changes))
        })?;
        match code.as_str() {
            codes::OK => Ok(env.result.unwrap_or_default()),
            codes::TOKEN_INVALID => Err(Failure::TokenInvalid),
            _ => Err(Failure::Carrier(CarrierError::Rejected {
                code,
                message: env.message.unwrap_or_default(),
            })),
        }
    }

    /// A call with the token, retried once with a new token if the platform refuses it.
    async fn call(
        &self,
        path: &'static str,
        mut params: Map<String, Value>,
        changes: bool,
    ) -> Result<Vec<Value>, CarrierError> {
        let mut stale: Option<String> = None;
        for _ in 0..2 {
            let token = self.token(stale.as_deref()).await?;
            params.insert("transid".into(), json!(self.transid()));
            params.insert("token".into(), json!(token));
            match self.exchange(path, &params, changes).await {
                Ok(r) => return Ok(r),
                // A refused token is checked before anything is applied: safe to resend.
                Err(Failure::TokenInvalid) => stale = Some(token),
                Err(Failure::Carrier(e)) => return Err(e),
            }
        }
        Err(CarrierError::Rejected {
            code: codes::TOKEN_INVALID.into(),
            message: "the platform refused a freshly issued token".into(),
        })
    }

    /// The first record of a card query.
    async fn query_card(
        &self,
        path: &'static str,
        iccid: &Iccid,
    ) -> Result<Map<String, Value>, CarrierError> {
        let mut p = Map::new();
        p.insert("iccid".into(), json!(iccid.as_str()));
        let result = self.call(path, p, false).await?;
        match result.into_iter().next() {
            Some(Value::Object(m)) => Ok(m),
            _ => Err(malformed(&format!("{path}: no record"), false)),
        }
    }

    async fn field(
        &self,
        path: &'static str,
        iccid: &Iccid,
        name: &str,
    ) -> Result<Value, CarrierError> {
        self.query_card(path, iccid)
            .await?
            .remove(name)
            .ok_or_else(|| malformed(&format!("{path}: no {name}"), false))
    }

    /// `/query/sim-session`: when the card's newest data session started. The diagnosis needs
    /// it to tell "stopped" from "never connects". Not confirmed in public client code: the
    /// record's `simSessionList` of sessions with `createDate` (`yyyy-MM-dd HH:mm:ss`, Beijing
    /// time) is what this adapter reads; an empty or absent list means no session is known.
    async fn last_session(
        &self,
        iccid: &Iccid,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, CarrierError> {
        let record = self.query_card("/query/sim-session", iccid).await?;
        let Some(list) = record.get("simSessionList") else {
            return Ok(None);
        };
        let list = list
            .as_array()
            .ok_or_else(|| malformed("simSessionList is not a list", false))?;
        let mut newest = None;
        for session in list {
            let Some(created) = session.get("createDate").and_then(Value::as_str) else {
                continue;
            };
            let at = beijing_time(created)
                .ok_or_else(|| malformed("createDate is not yyyy-MM-dd HH:mm:ss", false))?;
            newest = newest.max(Some(at));
        }
        Ok(newest)
    }

    /// `cardStatus` and what it means.
    async fn status(&self, iccid: &Iccid) -> Result<(String, ServiceState), CarrierError> {
        let v = self.field("/query/sim-status", iccid, "cardStatus").await?;
        let code = text(&v).ok_or_else(|| malformed("cardStatus is not a code", false))?;
        if code == codes::PB_NO_SUCH_NUMBER {
            return Err(CarrierError::Rejected {
                code: codes::CARD_UNKNOWN.into(),
                message: format!("{iccid}: cardStatus 99 (号码不存在, no such number)"),
            });
        }
        let state = codes::service_state(&code)
            .ok_or_else(|| malformed(&format!("unknown cardStatus {code}"), false))?;
        Ok((code, state))
    }

    async fn change(
        &self,
        iccid: &Iccid,
        oper: &str,
        to: ServiceState,
    ) -> Result<(), CarrierError> {
        let mut p = Map::new();
        p.insert("iccid".into(), json!(iccid.as_str()));
        p.insert("operType".into(), json!(oper));
        match self.call("/change/sim-status", p, true).await {
            Ok(_) => Ok(()),
            // The platform may refuse a change to the state the card is already in; that is
            // success for simgate. Unknown cards need no second look.
            Err(CarrierError::Rejected { code, message }) if code != codes::CARD_UNKNOWN => {
                match self.status(iccid).await {
                    Ok((_, state)) if state == to => Ok(()),
                    _ => Err(CarrierError::Rejected { code, message }),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `/query/sim-stop-reason` mapped to simgate's stop reasons.
    pub async fn stop_reasons(&self, iccid: &Iccid) -> Result<OneLinkStopReasons, CarrierError> {
        let v = self
            .field("/query/sim-stop-reason", iccid, "stopReason")
            .await?;
        let raw = text(&v).ok_or_else(|| malformed("stopReason is not text", false))?;
        parse_stop_reason(&raw).map_err(|e| malformed(&e, false))
    }

    /// `/query/sim-real-name-status`: whether the card's real-name registration is done.
    pub async fn real_name_registered(&self, iccid: &Iccid) -> Result<bool, CarrierError> {
        let v = self
            .field("/query/sim-real-name-status", iccid, "realNameStatus")
            .await?;
        let s = text(&v).ok_or_else(|| malformed("realNameStatus is not a code", false))?;
        Ok(s == codes::REAL_NAME_DONE)
    }

    /// `/query/sim-basic-info`: the card's IMSI, MSISDN and dates as the platform records them.
    pub async fn basic_info(&self, iccid: &Iccid) -> Result<BasicInfo, CarrierError> {
        let r = self.query_card("/query/sim-basic-info", iccid).await?;
        let text_of = |name: &str| r.get(name).and_then(text).filter(|s| !s.is_empty());
        let date_of = |name: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>, CarrierError> {
            text_of(name)
                .map(|d| {
                    beijing_time(&d)
                        .ok_or_else(|| malformed(&format!("{name} is not a date"), false))
                })
                .transpose()
        };
        Ok(BasicInfo {
            imsi: text_of("imsi"),
            msisdn: text_of("msisdn"),
            active_date: date_of("activeDate")?,
            open_date: date_of("openDate")?,
        })
    }

    /// `/query/group-data-usage`: bytes a pool (流量池, `groupId`) used this month.
    pub async fn group_data_usage(&self, group_id: &str) -> Result<u64, CarrierError> {
        let mut p = Map::new();
        p.insert("groupId".into(), json!(group_id));
        let result = self.call("/query/group-data-usage", p, false).await?;
        result
            .first()
            .and_then(|r| r.get("useAmount"))
            .and_then(kb_to_bytes)
            .ok_or_else(|| malformed("/query/group-data-usage: no useAmount", false))
    }
}

#[async_trait]
impl Carrier for OneLink {
    crate::carrier::platform::account_methods!();

    /// The platform knows its cards: each must exist there.
    async fn onboard(&self, cards: &[OnboardCard]) -> Result<(), CarrierError> {
        let iccids: Vec<Iccid> = cards.iter().map(|c| c.iccid.clone()).collect();
        futures::stream::iter(iccids)
            .map(|iccid| async move { self.status(&iccid).await.map(|_| ()) })
            .buffer_unordered(4)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    async fn card(&self, iccid: &Iccid) -> Result<CarrierCard, CarrierError> {
        let (_, state) = self.status(iccid).await?;
        let amount = self
            .field("/query/sim-data-usage", iccid, "dataAmount")
            .await?;
        let cycle_usage_bytes =
            kb_to_bytes(&amount).ok_or_else(|| malformed("dataAmount is not KB", false))?;
        let last_session = LastSession::from_seen(self.last_session(iccid).await?);
        Ok(CarrierCard {
            iccid: iccid.clone(),
            state,
            cycle_usage_bytes,
            // The platform's "this month" is implied by the call, not stated in the answer.
            usage_cycle_start: None,
            last_session,
            changes: 0,
            unknown: None,
        })
    }

    async fn stop(&self, iccid: &Iccid) -> Result<(), CarrierError> {
        self.change(iccid, codes::OPER_STOP, ServiceState::Stopped)
            .await
    }

    async fn restore(&self, iccid: &Iccid) -> Result<(), CarrierError> {
        self.change(iccid, codes::OPER_RESTART, ServiceState::Active)
            .await
    }

    /// OneLink releases numbers itself; this confirms it has.
    async fn cancel(&self, iccid: &Iccid) -> Result<(), CarrierError> {
        let (code, _) = self.status(iccid).await?;
        // Only the released codes confirm it, not any code that maps to Cancelled.
        if codes::RELEASED.contains(&code.as_str()) {
            return Ok(());
        }
        Err(CarrierError::Rejected {
            code: codes::NOT_CANCELLED.into(),
            message: format!(
                "{iccid} is not released at China Mobile OneLink yet (cardStatus {code})"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::codes::*;
    use super::*;
    use crate::domain::reasons::StopReason;

    #[test]
    fn every_card_status_maps_and_round_trips_from_simgate_states() {
        // Dossier onelink.md §8: OneLink-CT and OneLink-PB codes.
        let expect = [
            ("1", ServiceState::Active),
            ("2", ServiceState::Active),
            ("4", ServiceState::Stopped),
            ("6", ServiceState::Active),
            ("7", ServiceState::Stopped),
            ("8", ServiceState::Stopped),
            ("9", ServiceState::Cancelled),
            ("00", ServiceState::Active),
            ("01", ServiceState::Stopped),
            ("02", ServiceState::Stopped),
            ("03", ServiceState::Stopped),
            ("04", ServiceState::Cancelled),
            ("06", ServiceState::Stopped),
            ("07", ServiceState::Active),
        ];
        assert_eq!(CARD_STATUS.len(), expect.len());
        for (code, state) in expect {
            assert_eq!(service_state(code), Some(state), "cardStatus {code}");
        }
        // Unused (3, 5), not a service state (PB 05 过户, 99 号码不存在), or not the same code.
        for code in ["0", "3", "5", "05", "99", "", "004", " 4"] {
            assert_eq!(service_state(code), None, "cardStatus {code}");
        }
        for s in [
            ServiceState::Active,
            ServiceState::Stopped,
            ServiceState::Cancelled,
        ] {
            assert_eq!(service_state(card_status(s)), Some(s));
        }
        // Only 已销户 and 销号 confirm a release; 预销户 and 预销号 do not.
        for code in RELEASED {
            assert_eq!(service_state(code), Some(ServiceState::Cancelled));
        }
        assert!(!RELEASED.contains(&"8") && !RELEASED.contains(&"03"));
    }

    #[test]
    fn every_stop_reason_position_is_classified() {
        let expect = [
            (1, Position::Reason(StopReason::Expired)),
            (2, Position::Reason(StopReason::DeviceMismatch)),
            (3, Position::Undocumented),
            (4, Position::PlatformOnly("M2M management stop (管理停机)")),
            (5, Position::Reason(StopReason::Arrears)),
            (6, Position::Undocumented),
            (7, Position::Undocumented),
            (8, Position::Undocumented),
            (9, Position::Reason(StopReason::Manual)),
            (10, Position::PlatformOnly("region restriction (区域限制)")),
            (11, Position::PlatformOnly("forced stop (强制停机)")),
            (12, Position::Undocumented),
        ];
        for (pos, p) in expect {
            assert_eq!(position(pos), p, "position {pos}");
        }
    }

    #[test]
    fn stop_reason_flags_parse_into_simgate_and_platform_reasons() {
        let none = parse_stop_reason("000000000000").unwrap();
        assert!(none.reasons.is_empty() && none.platform_only.is_empty());

        let r = parse_stop_reason("220220002220").unwrap();
        assert_eq!(
            r.reasons,
            vec![
                StopReason::Expired,
                StopReason::DeviceMismatch,
                StopReason::Arrears,
                StopReason::Manual
            ]
        );
        let positions: Vec<usize> = r.platform_only.iter().map(|p| p.position).collect();
        assert_eq!(positions, vec![4, 10, 11]);

        let odd = parse_stop_reason("000000000002").unwrap();
        assert_eq!(odd.platform_only[0].position, 12);
        assert!(odd.platform_only[0].description.contains("undocumented"));

        assert!(parse_stop_reason("00000000000").is_err());
        assert!(parse_stop_reason("0000000000000").is_err());
        assert!(parse_stop_reason("000010000000").is_err());

        let flag = stop_reason_flag(&[StopReason::Arrears, StopReason::Manual]);
        assert_eq!(flag, "000020002000");
        assert_eq!(
            parse_stop_reason(&flag).unwrap().reasons,
            vec![StopReason::Arrears, StopReason::Manual]
        );
        // Reasons OneLink has no position for do not show.
        assert_eq!(stop_reason_flag(&[StopReason::OverQuota]), "000000000000");
    }

    #[test]
    fn kilobytes_become_bytes() {
        assert_eq!(kb_to_bytes(&json!("1")), Some(1024));
        assert_eq!(kb_to_bytes(&json!(" 2.5 ")), Some(2560));
        assert_eq!(kb_to_bytes(&json!(0)), Some(0));
        assert_eq!(kb_to_bytes(&json!(0.5)), Some(512));
        assert_eq!(kb_to_bytes(&json!("-1")), None);
        assert_eq!(kb_to_bytes(&json!("lots")), None);
        assert_eq!(kb_to_bytes(&json!(null)), None);
    }

    #[test]
    fn codes_the_adapter_acts_on() {
        assert_eq!(OK, "0");
        assert_eq!(TOKEN_INVALID, "12021");
        assert_eq!(CARD_UNKNOWN, "11011");
        assert_eq!((OPER_STOP, OPER_RESTART), ("0", "1"));
        assert_eq!(REAL_NAME_DONE, "1");
    }

    #[test]
    fn transids_are_appid_time_and_an_eight_digit_sequence() {
        let cfg = OneLinkConfig {
            base_url: "http://127.0.0.1:1/v5/ec".into(),
            appid: "C5010000000001".into(),
            password: Secret::new("pw"),
            timeouts: HttpTimeouts::default(),
        };
        let a = OneLink::new(&cfg, AccountCtx::default_for(CarrierId::Mobile)).unwrap();
        let t1 = a.transid();
        let t2 = a.transid();
        assert_eq!(t1.len(), cfg.appid.len() + 14 + 8);
        assert!(t1.starts_with(&cfg.appid));
        assert!(t1[cfg.appid.len()..].bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(&t1[t1.len() - 8..], "00000000");
        assert_eq!(&t2[t2.len() - 8..], "00000001");
    }

    #[test]
    fn a_bad_base_url_or_missing_appid_is_refused() {
        let mut cfg = OneLinkConfig {
            base_url: "not a url".into(),
            appid: "a".into(),
            password: Secret::new("pw"),
            timeouts: HttpTimeouts::default(),
        };
        let p = AccountCtx::default_for(CarrierId::Mobile);
        assert!(OneLink::new(&cfg, p.clone()).is_err());
        cfg.base_url = "http://x/v5/ec".into();
        cfg.appid.clear();
        assert!(OneLink::new(&cfg, p).is_err());
    }
}
