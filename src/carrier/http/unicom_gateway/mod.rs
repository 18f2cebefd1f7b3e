//! China Unicom's IoT gateway (能力开放网关, `gwapi.10646.cn/api`), one folder: the adapter
//! (here), its wire terms and mapping tables (`wire`: paths, the `simStatus` and
//! `realNameStatus` tables, result codes, envelopes, the MB unit), its request authentication
//! (`auth`: timestamp, trans_id, token) and its wire simulator (`simulator`), which shares
//! them. The gateway fronts the same carrier's Control Center functions under their SOAP names
//! (see [`crate::carrier::http::jasper`] for the REST side): cards are named by ICCID.
//! Evidence: the dossier `shared/domain/carrier-wire/unicom-gateway.md` (§ below; source keys
//! in its README); golden fixtures in `tests/fixtures/carrier-wire/unicom_gateway/`.
//!
//! Transport (§0): every call is `POST {base_url}/<apiName>/V1/1Main/vV1.1` (`base_url`
//! `https://gwapi.10646.cn/api` [SIMCTL][MEH][UGW][YZ-LT]; test `https://gwtest.10646.cn/api`
//! [UGW]), `Content-Type: application/json;charset=UTF-8` ([UGW] web_utils.go L54), body
//! `{app_id, timestamp, trans_id, token, data{messageId, openId, version, …}}` (§0.3). The
//! reply is accepted only with outer `status` `"0000"` and inner `data.resultCode` `"0000"`
//! (§0.5). `messageId` is the request's `trans_id` (sources send anything from `"1"` to a
//! trans_id, [YZ-LT-Q]); `trans_id` = Beijing `yyyyMMddHHmmss` + `SSS` + 6 random digits.
//!
//! Disputed facts, as per-account settings (majority default, documented on each field of
//! [`UnicomGatewayConfig`]): `token_recipe` (§0.4: `sm3_named`, four sources, or
//! `sha256_plain`, [NESTCU]; [GWU]'s TreeMap-with-`data.toString()` variant is **not
//! implemented**: it digests a Java `Map.toString()` whose exact text the dossier does not
//! give), `timestamp_format` (§0.3), `version` (§0.3: `"1.0"` vs `"V1.1"`), `asynchronous`
//! (§2: `"0"` vs `"1"`, meaning not documented).
//!
//! Upstream calls, and what each [`Carrier`] method costs:
//! - `wsGetTerminalDetails` `{iccids: [...]}` (§1, ≤50 ICCIDs [YZ-LT-Q]): `terminals[]` with
//!   `simStatus` (§3), `realNameStatus` (§4), `monthToDateDataUsage` (MB string, [MEH]
//!   [SIMCTL][YZ-PARSE]; MB = 1024×1024 bytes **inferred** from [SIMCTL]'s ×1024 to KB). The
//!   **only** call behind [`Carrier::card`] (one call for one ICCID), [`Carrier::cards`] (one
//!   call per ≤50 ICCIDs; `batch_limit()` 50), [`Carrier::onboard`] (the card must be in
//!   `terminals`), [`Carrier::cancel`] (4 已失效, 5 已清除, 6 已更换 confirm) and
//!   [`UnicomGateway::terminal_details`]. A card missing from `terminals` is "not known" (the
//!   gateway's answer for an unknown ICCID is not found): left out of `cards()`, `Rejected`
//!   [`CODE_CARD_NOT_KNOWN`] (ours) from `card()`. A `simStatus` outside the table, or a
//!   usage missing or not a number, marks the card "unknown at carrier"
//!   (`CarrierCard::unknown`), never an error. `usage_of` keeps the default (this call): it
//!   is the only usage figure with a known unit. Still unknown: which cycle "month to date"
//!   counts (`usage_cycle_start` None; the billing cycle is the 27th to the 26th, [YZ-LT-Q]);
//!   the reply to >50 ICCIDs (the adapter never sends more); any verbatim success body.
//! - `wsEditTerminal` `{asynchronous, iccid, changeType "3", targetValue "3" | "2"}` (§2):
//!   [`Carrier::stop`], [`Carrier::restore`]; reply `{iccid, effectiveDate, resultCode}`.
//!   `resultCode` `0000` naming the card → `Receipt::applied()` (as Control Center's `{"iccid"}`:
//!   no order id, no order query, `queries_orders()` false; the journal settles by reading the
//!   card). `0000` without an `iccid` is not proof: the card is read, and only its target state
//!   confirms (else `OutcomeUnknown`). `1104` (账户阻止状态变更为预激活状态, published) →
//!   `Rejected`. Any other `resultCode` is an unpublished refusal: the card is read (one more
//!   `wsGetTerminalDetails`): already in the target state → applied; not in `terminals` →
//!   `Rejected` [`CODE_CARD_NOT_KNOWN`]; otherwise (or if the read fails) `Deferred`, never
//!   final. Still unknown: what `asynchronous` and `effectiveDate` mean (a future
//!   `effectiveDate` is still taken as applied; the journal's read settles it), the repeat
//!   window, changeType values other than 3.
//! - `wsGetTerminalUsage` `{iccid, billingCycle yyyyMM}` (§5):
//!   [`UnicomGateway::terminal_usage`] only, returning `totalDataVolume` as the gateway wrote it:
//!   its **unit is not found**, so simgate converts nothing and no [`Carrier`] method uses it.
//!   `1074` (month out of range, [YJ]) → `Rejected`.
//! - `realNameStatusQuery` (§4): not implemented (`rspcode` values not found); the real-name
//!   state comes from `realNameStatus` in `wsGetTerminalDetails` instead.
//!
//! Binding: no call in the dossier, `rebind_modes()` empty, `binding()` None.
//!
//! Errors (§0.5, §7): HTTP 429 → `RateLimited` ([YZ-LT-Q]; `Retry-After` when sent, no wait
//! otherwise); 502-504 → `Transient`; other 5xx → `Transient` for reads, `OutcomeUnknown` for
//! changes. Outer `status` ≠ `"0000"`: the gateway did not forward the call (its codes, e.g. a
//! bad token, are not published) → `Rejected` with the status as the code, which fails a sync
//! for the account (`card_not_known` takes only [`CODE_CARD_NOT_KNOWN`]). An unpublished inner
//! `resultCode` on a read → `Transient`. A body without the envelope → `Transient` for reads,
//! `OutcomeUnknown` for changes. No URL, `app_secret` or token ever enters an error or a log.
//!
//! Concurrency: `MAX_CONCURRENCY` 1. The gateway's numeric rate limit is not found (§7), but
//! it answers HTTP 429 when called too fast ([YZ-LT-Q]) and fronts Control Center, whose fair
//! use is one call at a time per account (jasper.md §8 [FAIR]). Batch reads keep the cost low
//! anyway: 20 calls per 1,000 cards.

pub mod auth;
pub mod simulator;
pub mod wire;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{client, malformed, retry_after, send_error, HttpTimeouts, Secret};
use crate::carrier::platform::{AccountCtx, WirePlatform};
use crate::carrier::{Carrier, CarrierCard, CarrierError, OnboardCard, Receipt, ServiceState};
use crate::domain::{CarrierId, Iccid};

pub use auth::{TimestampFormat, TokenRecipe};
pub use wire::*;

fn default_version() -> String {
    "1.0".into()
}

fn default_asynchronous() -> String {
    "0".into()
}

/// An `[[accounts]]` entry with `platform = "unicom_gateway"`: endpoint, credentials and the
/// settings for the dossier's disputed facts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UnicomGatewayConfig {
    /// Base URL of the gateway, e.g. https://gwapi.10646.cn/api (test: https://gwtest.10646.cn/api).
    pub base_url: String,
    /// The application id issued with the app (`app_id`, 10 characters in samples).
    pub app_id: String,
    /// The application secret the token is computed with; never sent.
    pub app_secret: Secret,
    /// The customer's openId issued with the app (`data.openId`, 15 characters in samples).
    pub open_id: String,
    #[serde(default)]
    pub timeouts: HttpTimeouts,
    /// How the token is computed (DISPUTED, dossier §0.4): `sm3_named` (default: the official
    /// SDK's port [UGW], [YJ], [MEH]) or `sha256_plain` ([NESTCU], self-flagged uncertain).
    #[serde(default)]
    pub token_recipe: TokenRecipe,
    /// The envelope's timestamp (DISPUTED, dossier §0.3), Beijing time: `yyyy-MM-dd HH:mm:ss SSS`
    /// (default: [YJ], [SIMCTL], [GWU], [YZ-LT], the manual's example) or `yyyyMMddHHmmssSSS`
    /// ([MEH]).
    #[serde(default)]
    pub timestamp_format: TimestampFormat,
    /// `data.version` (DISPUTED, dossier §0.3): `"1.0"` (default: [SIMCTL], [MEH], [YJ],
    /// [UNSDK], [GWU], [YZ-LT]) or `"V1.1"` ([UGW] example).
    #[serde(default = "default_version")]
    pub version: String,
    /// `wsEditTerminal`'s `asynchronous` (DISPUTED, dossier §2; meaning not documented): `"0"`
    /// (default: [SIMCTL], [MEH], [UNSDK], [GWU], [YZ-LT-C]) or `"1"` ([YJ]).
    #[serde(default = "default_asynchronous")]
    pub asynchronous: String,
}

/// The gateway in the platform registry.
pub struct Platform;

impl WirePlatform for Platform {
    const NAME: &'static str = "unicom_gateway";
    const CARRIER: CarrierId = CarrierId::Unicom;
    /// One call at a time: no numeric limit is published, 429 is seen, and the gateway fronts
    /// Control Center, whose fair use is one call at a time per account (module doc).
    const MAX_CONCURRENCY: u32 = 1;
    type Config = UnicomGatewayConfig;

    fn adapter(
        cfg: &UnicomGatewayConfig,
        ctx: AccountCtx,
    ) -> Result<std::sync::Arc<dyn Carrier>, String> {
        Ok(std::sync::Arc::new(UnicomGateway::new(cfg, ctx)?))
    }

    fn simulator(
        sim: std::sync::Arc<crate::carrier::sim::SimCarrier>,
        cfg: &UnicomGatewayConfig,
        unanswered: std::time::Duration,
    ) -> axum::Router {
        simulator::router(
            sim,
            cfg,
            simulator::WireOptions {
                timeout_after_apply_delay: unanswered,
                ..Default::default()
            },
        )
    }

    fn generated(base: &str, secret: &str, timeouts: HttpTimeouts) -> UnicomGatewayConfig {
        UnicomGatewayConfig {
            base_url: format!("{base}/api"),
            // The shapes of the dossier's fakes: 10 and 15 characters.
            app_id: "SIMGATE000".into(),
            app_secret: Secret::new(secret),
            open_id: "00000ousimgate0".into(),
            timeouts,
            token_recipe: TokenRecipe::default(),
            timestamp_format: TimestampFormat::default(),
            version: default_version(),
            asynchronous: default_asynchronous(),
        }
    }

    fn secrets(cfg: &UnicomGatewayConfig) -> Vec<(&'static str, String)> {
        vec![("app_secret", cfg.app_secret.expose().to_string())]
    }
}

/// A call that failed: as a [`CarrierError`], or refused by the platform with an inner
/// `resultCode` (which each call interprets itself).
enum Failure {
    Carrier(CarrierError),
    Business { code: String, desc: Option<String> },
}

impl From<CarrierError> for Failure {
    fn from(e: CarrierError) -> Failure {
        Failure::Carrier(e)
    }
}

impl Failure {
    /// As a read's error: a published code is a refusal, any other unavailable.
    fn for_read(self) -> CarrierError {
        match self {
            Failure::Carrier(e) => e,
            Failure::Business { code, desc } => read_refusal(&code, desc.as_deref()),
        }
    }
}

/// `wsGetTerminalUsage`'s answer: the figure as the gateway wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalUsage {
    pub billing_cycle: String,
    /// `totalDataVolume`, raw: its unit is not found (dossier §5, §8); None when not sent.
    pub total_data_volume: Option<String>,
}

pub struct UnicomGateway {
    /// Whose account it is: carrier, rules and budget.
    ctx: AccountCtx,
    http: reqwest::Client,
    base_url: String,
    app_id: String,
    app_secret: Secret,
    open_id: String,
    token_recipe: TokenRecipe,
    timestamp_format: TimestampFormat,
    version: String,
    asynchronous: String,
}

impl UnicomGateway {
    pub fn new(cfg: &UnicomGatewayConfig, ctx: AccountCtx) -> Result<UnicomGateway, String> {
        let base =
            url::Url::parse(&cfg.base_url).map_err(|e| format!("base_url is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err("base_url must be http or https".into());
        }
        if cfg.app_id.is_empty() || cfg.app_secret.expose().is_empty() || cfg.open_id.is_empty() {
            return Err("an app_id, an app_secret and an open_id are required".into());
        }
        if cfg.version.trim().is_empty() {
            return Err("version must not be empty (\"1.0\" by default)".into());
        }
        if !matches!(cfg.asynchronous.as_str(), "0" | "1") {
            return Err("asynchronous must be \"0\" or \"1\"".into());
        }
        Ok(UnicomGateway {
            ctx,
            http: client(&cfg.timeouts)?,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            app_id: cfg.app_id.clone(),
            app_secret: cfg.app_secret.clone(),
            open_id: cfg.open_id.clone(),
            token_recipe: cfg.token_recipe,
            timestamp_format: cfg.timestamp_format,
            version: cfg.version.clone(),
            asynchronous: cfg.asynchronous.clone(),
        })
    }

    /// The signed envelope of one request with `params` in `data`.
    fn envelope(&self, params: Map<String, Value>) -> RequestEnvelope {
        let now = chrono::Utc::now();
        let trans_id = auth::trans_id(now, fastrand::u32(..));
        let timestamp = self.timestamp_format.format(now);
        let token = auth::token(
            self.token_recipe,
            &self.app_id,
            &timestamp,
            &trans_id,
            self.app_secret.expose(),
        );
        let mut data = Map::new();
        data.insert("messageId".into(), json!(trans_id));
        data.insert("openId".into(), json!(self.open_id));
        data.insert("version".into(), json!(self.version));
        data.extend(params);
        RequestEnvelope {
            app_id: self.app_id.clone(),
            timestamp,
            trans_id,
            token,
            data,
        }
    }

    /// One call: the inner `data` of an answer accepted at both levels.
    async fn call(
        &self,
        api: &'static str,
        params: Map<String, Value>,
        changes: bool,
    ) -> Result<Value, Failure> {
        self.ctx.budget.spend(api).await;
        let resp = self
            .http
            .post(format!("{}{}", self.base_url, api_path(api)))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json;charset=UTF-8",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&self.envelope(params))
            .send()
            .await
            .map_err(|e| send_error(e, changes))?;
        let status = resp.status();
        let retry = retry_after(resp.headers());
        let body = resp.bytes().await.map_err(|e| send_error(e, changes))?;
        let reply = serde_json::from_slice::<ReplyEnvelope>(&body).ok();
        if !status.is_success() {
            // A gateway refusal in its envelope on a 4xx is still a refusal; anything else by
            // the HTTP status.
            return Err(match reply {
                Some(ReplyEnvelope {
                    status: Some(s),
                    message,
                    ..
                }) if s != OK && status.is_client_error() && status.as_u16() != 429 => {
                    gateway_refusal(&s, message.as_deref())
                }
                _ => http_error(status, retry, changes),
            }
            .into());
        }
        let reply = reply.ok_or_else(|| malformed(&format!("{api}: not the envelope"), changes))?;
        match reply.status.as_deref() {
            Some(OK) => {}
            Some(s) => return Err(gateway_refusal(s, reply.message.as_deref()).into()),
            None => return Err(malformed(&format!("{api}: no status"), changes).into()),
        }
        let data = reply
            .data
            .ok_or_else(|| malformed(&format!("{api}: no data"), changes))?;
        let head: InnerHead = serde_json::from_value(data.clone())
            .map_err(|e| malformed(&format!("{api}: {e}"), changes))?;
        match head.result_code.as_deref() {
            Some(OK) => Ok(data),
            Some(code) => Err(Failure::Business {
                code: code.to_string(),
                desc: head.result_desc,
            }),
            None => Err(malformed(&format!("{api}: no resultCode"), changes).into()),
        }
    }

    /// `wsGetTerminalDetails` for at most [`DETAILS_BATCH`] ICCIDs: each requested card the
    /// answer holds, in the order asked; a card missing from `terminals` is absent.
    async fn terminals(&self, iccids: &[Iccid]) -> Result<Vec<(Iccid, Terminal)>, CarrierError> {
        debug_assert!(iccids.len() <= DETAILS_BATCH);
        let mut params = Map::new();
        params.insert(
            "iccids".into(),
            json!(iccids.iter().map(Iccid::as_str).collect::<Vec<_>>()),
        );
        let data = self
            .call(API_DETAILS, params, false)
            .await
            .map_err(Failure::for_read)?;
        let d: DetailsData = serde_json::from_value(data)
            .map_err(|e| malformed(&format!("{API_DETAILS}: {e}"), false))?;
        let terminals = d
            .terminals
            .ok_or_else(|| malformed(&format!("{API_DETAILS}: no terminals"), false))?;
        // Terminals about cards not asked for are ignored: only an asked card is read.
        Ok(iccids
            .iter()
            .filter_map(|i| {
                terminals
                    .iter()
                    .find(|t| t.iccid.trim().eq_ignore_ascii_case(i.as_str()))
                    .map(|t| (i.clone(), t.clone()))
            })
            .collect())
    }

    /// One card's terminal, or `Rejected` [`CODE_CARD_NOT_KNOWN`] when the answer lacks it.
    async fn terminal(&self, iccid: &Iccid) -> Result<Terminal, CarrierError> {
        self.terminals(std::slice::from_ref(iccid))
            .await?
            .into_iter()
            .next()
            .map(|(_, t)| t)
            .ok_or_else(|| not_known(iccid))
    }

    /// `wsGetTerminalDetails` for one card: status, real-name state, usage, identity.
    pub async fn terminal_details(&self, iccid: &Iccid) -> Result<TerminalDetails, CarrierError> {
        Ok(details_of(iccid, &self.terminal(iccid).await?))
    }

    /// `wsGetTerminalUsage` for one card and one `billing_cycle` (`yyyyMM`): `totalDataVolume`
    /// as the gateway wrote it (unit not found, dossier §5). 1074 (month out of range) →
    /// `Rejected`; a malformed cycle is refused before sending.
    pub async fn terminal_usage(
        &self,
        iccid: &Iccid,
        billing_cycle: &str,
    ) -> Result<TerminalUsage, CarrierError> {
        if !is_billing_cycle(billing_cycle) {
            return Err(CarrierError::Rejected {
                code: "BAD_BILLING_CYCLE".into(),
                message: format!("billingCycle {billing_cycle:?} is not yyyyMM"),
            });
        }
        let mut params = Map::new();
        params.insert("iccid".into(), json!(iccid.as_str()));
        params.insert("billingCycle".into(), json!(billing_cycle));
        let data = self
            .call(API_USAGE, params, false)
            .await
            .map_err(Failure::for_read)?;
        let u: UsageData = serde_json::from_value(data)
            .map_err(|e| malformed(&format!("{API_USAGE}: {e}"), false))?;
        Ok(TerminalUsage {
            billing_cycle: billing_cycle.to_string(),
            total_data_volume: u.total_data_volume,
        })
    }

    /// `wsEditTerminal` to the `simStatus` of `to` (module doc: how each answer is settled).
    async fn set_status(&self, iccid: &Iccid, to: ServiceState) -> Result<Receipt, CarrierError> {
        let mut params = Map::new();
        params.insert("asynchronous".into(), json!(self.asynchronous));
        params.insert("iccid".into(), json!(iccid.as_str()));
        params.insert("changeType".into(), json!(CHANGE_TYPE_STATUS));
        params.insert("targetValue".into(), json!(sim_status_for(to)));
        match self.call(API_EDIT, params, true).await {
            Ok(data) => {
                let e: EditData = serde_json::from_value(data)
                    .map_err(|e| malformed(&format!("{API_EDIT}: {e}"), true))?;
                match e.iccid.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                    Some(i) if i.eq_ignore_ascii_case(iccid.as_str()) => Ok(Receipt::applied()),
                    Some(_) => Err(malformed(&format!("{API_EDIT}: answer for another ICCID"), true)),
                    // Success without naming the card is not proof: only the card's state is.
                    None => match self.card(iccid).await {
                        Ok(c) if c.known_state() == Some(to) => Ok(Receipt::applied()),
                        _ => Err(CarrierError::OutcomeUnknown(format!(
                            "{API_EDIT} answered 0000 without naming the card, and the card does not show the change yet"
                        ))),
                    },
                }
            }
            Err(Failure::Carrier(e)) => Err(e),
            Err(Failure::Business { code, desc }) if is_published_code(&code) => {
                Err(CarrierError::Rejected {
                    code,
                    message: desc.unwrap_or_default(),
                })
            }
            Err(Failure::Business { code, desc }) => {
                self.settle_refusal(iccid, to, code, desc.unwrap_or_default())
                    .await
            }
        }
    }

    /// An unpublished refusal of a change: nothing can be concluded from the code, so the card
    /// decides. Already in the target state → applied (e.g. a repeat); unknown to the
    /// platform → `Rejected` (final: the card is not there); anything else → `Deferred`.
    async fn settle_refusal(
        &self,
        iccid: &Iccid,
        to: ServiceState,
        code: String,
        desc: String,
    ) -> Result<Receipt, CarrierError> {
        match self.card(iccid).await {
            Ok(c) if c.known_state() == Some(to) => Ok(Receipt::applied()),
            Err(e) if self.card_not_known(&e) => Err(CarrierError::Rejected {
                code: CODE_CARD_NOT_KNOWN.into(),
                message: format!(
                    "{API_EDIT} refused with {code} ({desc}) and the gateway does not know {iccid}"
                ),
            }),
            _ => Err(CarrierError::Deferred {
                code: code.clone(),
                message: format!("unrecognised refusal of a change ({code}): {desc}"),
                retry_after: None,
            }),
        }
    }
}

fn not_known(iccid: &Iccid) -> CarrierError {
    CarrierError::Rejected {
        code: CODE_CARD_NOT_KNOWN.into(),
        message: format!("{iccid} is not in the gateway's wsGetTerminalDetails answer"),
    }
}

#[async_trait]
impl Carrier for UnicomGateway {
    crate::carrier::platform::account_methods!();

    /// The platform already knows its cards: each must be in `terminals`, one call per 50.
    /// Being there is the proof, whatever its status.
    async fn onboard(&self, cards: &[OnboardCard]) -> Result<(), CarrierError> {
        let iccids: Vec<Iccid> = cards.iter().map(|c| c.iccid.clone()).collect();
        for chunk in iccids.chunks(DETAILS_BATCH) {
            let found = self.terminals(chunk).await?;
            if let Some(missing) = chunk.iter().find(|i| !found.iter().any(|(f, _)| f == *i)) {
                return Err(not_known(missing));
            }
        }
        Ok(())
    }

    /// One `wsGetTerminalDetails` for the one card (§1).
    async fn card(&self, iccid: &Iccid) -> Result<CarrierCard, CarrierError> {
        let t = self.terminal(iccid).await?;
        Ok(reading_of(iccid, &t))
    }

    /// One `wsGetTerminalDetails` per 50 cards; cards missing from `terminals` are left out.
    async fn cards(&self, iccids: &[Iccid]) -> Result<Vec<CarrierCard>, CarrierError> {
        let mut out = Vec::with_capacity(iccids.len());
        for chunk in iccids.chunks(DETAILS_BATCH) {
            out.extend(
                self.terminals(chunk)
                    .await?
                    .iter()
                    .map(|(i, t)| reading_of(i, t)),
            );
        }
        Ok(out)
    }

    fn batch_limit(&self) -> usize {
        DETAILS_BATCH
    }

    /// Only a card missing from `terminals` is unknown; a gateway refusal (bad token, app_id)
    /// or any other refusal fails the sync for the account.
    fn card_not_known(&self, error: &CarrierError) -> bool {
        matches!(error, CarrierError::Rejected { code, .. } if code == CODE_CARD_NOT_KNOWN)
    }

    async fn stop(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.set_status(iccid, ServiceState::Stopped).await
    }

    async fn restore(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.set_status(iccid, ServiceState::Active).await
    }

    /// Confirms the platform released the number (4 已失效, 5 已清除, 6 已更换). A status
    /// outside the table is unavailable (`Transient`), never a confirmation; 9 预清除 is not yet
    /// released (see `SIM_STATUSES`).
    async fn cancel(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        let t = self.terminal(iccid).await?;
        match t.sim_status.as_deref().map(|s| (s, state_of(s))) {
            Some((_, Some(ServiceState::Cancelled))) => Ok(Receipt::applied()),
            Some((status, Some(_))) => Err(CarrierError::Rejected {
                code: CODE_NOT_RETIRED.into(),
                message: format!(
                    "{iccid} has simStatus {status} at the China Unicom gateway, not 4/5/6: the platform has not released the number yet"
                ),
            }),
            Some((status, None)) => Err(malformed(
                &format!("simStatus {status:?} outside the table: cannot confirm the cancellation"),
                false,
            )),
            None => Err(malformed(
                "simStatus missing: cannot confirm the cancellation",
                false,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> UnicomGatewayConfig {
        Platform::generated(
            "https://gwapi.10646.cn",
            "s3cret-value",
            HttpTimeouts::default(),
        )
    }

    #[test]
    fn construction_checks_the_configuration_and_hides_the_secret() {
        let ctx = AccountCtx::default_for(CarrierId::Unicom);
        assert!(UnicomGateway::new(&cfg(), ctx.clone()).is_ok());
        let bad = [
            UnicomGatewayConfig {
                base_url: "ftp://x".into(),
                ..cfg()
            },
            UnicomGatewayConfig {
                open_id: String::new(),
                ..cfg()
            },
            UnicomGatewayConfig {
                asynchronous: "2".into(),
                ..cfg()
            },
            UnicomGatewayConfig {
                version: " ".into(),
                ..cfg()
            },
        ];
        for b in bad {
            assert!(UnicomGateway::new(&b, ctx.clone()).is_err(), "{b:?}");
        }
        assert!(!format!("{:?}", cfg()).contains("s3cret-value"));
        assert!(!serde_json::to_string(&cfg())
            .unwrap_or_default()
            .contains("s3cret-value"));
    }

    #[test]
    fn settings_default_to_the_majority() {
        let c: UnicomGatewayConfig = serde_json::from_str(
            r#"{"base_url":"https://gwapi.10646.cn/api","app_id":"AAAAAAAAAA","app_secret":"x","open_id":"00000ouAAAAAAAA"}"#,
        )
        .expect("minimal settings");
        assert_eq!(c.token_recipe, TokenRecipe::Sm3Named);
        assert_eq!(c.timestamp_format, TimestampFormat::Spaced);
        assert_eq!(c.version, "1.0");
        assert_eq!(c.asynchronous, "0");
        let unknown = serde_json::from_str::<UnicomGatewayConfig>(
            r#"{"base_url":"u","app_id":"a","app_secret":"x","open_id":"o","tokn":"x"}"#,
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn the_envelope_carries_the_common_data_and_a_token_over_its_own_fields() {
        let g = UnicomGateway::new(&cfg(), AccountCtx::default_for(CarrierId::Unicom))
            .expect("adapter");
        let mut params = Map::new();
        params.insert("iccids".into(), json!(["89860600000000000001"]));
        let e = g.envelope(params);
        assert!(auth::is_trans_id(&e.trans_id), "{}", e.trans_id);
        assert!(TimestampFormat::Spaced.parse(&e.timestamp).is_some());
        assert_eq!(
            e.token,
            auth::token(
                TokenRecipe::Sm3Named,
                "SIMGATE000",
                &e.timestamp,
                &e.trans_id,
                "s3cret-value"
            )
        );
        let mut keys: Vec<&str> = e.data.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["iccids", "messageId", "openId", "version"]);
        assert_eq!(e.data["version"], "1.0");
        assert_eq!(e.data["messageId"], json!(e.trans_id));
        // The trans_id's leading 17 digits are the timestamp's instant.
        assert_eq!(e.trans_id[..17], e.timestamp.replace(['-', ' ', ':'], ""));
    }
}
