//! China Telecom 5G CMP (天翼物联 5G 连接管理平台, `https://cmp-api.ctwing.cn:20164`), one folder:
//! the adapter (here), its wire terms (`wire`: paths, methods, the status table, envelopes,
//! MB amounts), its signature (`sign`) and its wire simulator (`simulator`). Evidence:
//! `shared/domain/carrier-wire/cmp5g.md` (the dossier, cited by section and source key);
//! golden fixtures from it in `tests/fixtures/carrier-wire/cmp_5g/`.
//!
//! Upstream calls (every one with the `AppKey`, `Timestamp` and `Sign` headers, §0.2–0.3):
//! - `batchQrySimInfo` (§3, [NEST5G] 54501513172, 54798239189): POST
//!   `/api/v1/prod/batchQrySimInfo` `{accessNumbers[≤100], custNumber, groupId:"",
//!   simStatus:""}` → `data.qrySimInfoList[]{accessNumber, iccid, simStatus}`: the cards'
//!   states, for `card()`/`cards()`, `onboard()` (does the number exist, and name this ICCID?),
//!   `cancel()` (dismantled?) and to confirm a refused or unexplained change.
//! - `batchQryFlowByMonth` (§1, [SIMCTL] L145-179, the only verbatim reply): POST
//!   `/api/v1/batchQry/batchQryFlowByMonth` `{custNumber, accessNumber[]}` →
//!   `data[]{accessNumber, flowAmount, unit, month, status, statusDesc}`: this month's usage,
//!   MB × 1024 × 1024 bytes, for `card()`/`cards()`.
//! - `qryRealNameStatus` (§5, [SIMCTL] L108-136): POST `/api/v1/realName/qryRealNameStatus`
//!   `{accessNumber[]}` → `data.statusList[]{accessNumber, status}`, "1" = verified:
//!   [`Cmp5g::real_name`].
//! - `disabledNumberService` (§6, [YZ-5G-C] 68543279609): GET
//!   `/5gcmp/openapi/v1/common/disabledNumberService?access_number=…&acctCd=&orderTypeId=19|20`
//!   (`acctCd` always sent empty: "不传入会报错"): stop (停机保号) and restore.
//! - `requestServActive` (§6.1, [YZ-5G-C]): GET `…/requestServActive?access_number=…` →
//!   `{RESULT "0", SMSG}`: a restore answered `100008` (the card awaits activation, 待激活) is
//!   sent again as this forced activation, and reported as the restore.
//!
//! Cards are named by access number (`addresses_by_msisdn()`): the dossier has no confirmed
//! ICCID → number lookup on this platform, so a card's number is simgate's stored one
//! (`AccountCtx::stored_number`: given at import), kept for the process (`KnownNumbers`); a
//! card without one is refused `NO_MSISDN` (ours) with nothing sent, and `msisdn_of()` can
//! only give the stored one. batchQrySimInfo answers each number's `iccid`: `onboard()` refuses
//! a number that names another card (`MSISDN_MISMATCH`), and a read marks such a card
//! `unknown` instead of taking another card's state. Changes do not check it again (it would
//! cost a call per change; the import checked it).
//!
//! Batches: `batch_limit()` is 100 (batchQrySimInfo's "一次最多 100 张"); `cards()` sends one
//! batchQrySimInfo and one batchQryFlowByMonth per 100 cards (more flow calls when the account's
//! `flow_batch_size`, default 100 since its maximum is not found, is smaller). A number missing
//! from batchQrySimInfo's answer is a card the platform does not know: left out. A card in it
//! but missing from the flow answer, or whose flow item has another unit than MB or a status
//! other than "0", or whose `simStatus` is outside the table, is returned with `unknown` set:
//! its reading is never guessed.
//!
//! Changes and receipts: an accepted disabledNumberService reply (`RspCode` 0000 / `result` 0)
//! is proof the change is applied: `Receipt::applied_as` its `GROUP_TRANSACTIONID` (or
//! `applied()`); there is no order query (`queries_orders()` false). A refusal (no code is
//! published but 100008) makes the adapter read the card: in the target state → applied, else
//! `Deferred` (never final: the journal retries). A reply it cannot read → the card is read:
//! target state → applied, else `OutcomeUnknown` (never success). HTTP 401/403 refuse a change
//! (`Rejected`): the API gateway checks AppKey and Sign before anything reaches the platform
//! (inferred from the gateway account the headers come from, §0.2); any other HTTP error after a
//! change was sent is `OutcomeUnknown`, 429 rate limiting, 502–504 unavailable. `cancel()` only
//! confirms: Telecom releases numbers itself; confirmed when `simStatus` is 7 (拆机, inferred,
//! see `wire::sim_status`), else `NOT_DISMANTLED`. No binding calls (`rebind_modes()` empty).
//!
//! Disputed facts, as per-account settings (defaults are the doc-backed or most common form):
//! `timestamp_zone` (`gmt` | `beijing`, §0.2), `sign_body` (`raw` | `sorted_fields`, §0.3),
//! `http_methods` (`likely` | `all_post`, §0.4). Unknown (§8, §9): the error-code list (a
//! non-zero `code` makes a read unavailable, never "no such card"), rate limits, the allowed
//! clock skew, disabledNumberService's reply body (read as the §0.5 XML family), the maximum
//! numbers of batchQryFlowByMonth and qryRealNameStatus, whether `month` is a request field
//! (not sent), batchQrySimStatus (path only: not used).

pub mod sign;
pub mod simulator;
pub mod wire;

use std::collections::HashMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{client, retry_after, send_error, status_error, HttpTimeouts, Secret};
use crate::carrier::platform::{AccountCtx, KnownNumbers, WirePlatform};
use crate::carrier::{
    Carrier, CarrierCard, CarrierError, LastSession, OnboardCard, Receipt, ServiceState,
};
use crate::domain::{CarrierId, Iccid};

pub use sign::{SignBody, TimestampZone};
use wire::*;

/// An `[[accounts]]` entry with `platform = "cmp_5g"`: endpoint, credentials and the settings
/// for the dossier's disputed facts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cmp5gConfig {
    /// Base URL of the platform, e.g. https://cmp-api.ctwing.cn:20164 (§0.1).
    pub base_url: String,
    /// 客户编码 / 企业 id ("群组管理->企业id", [SIMCTL] L20), sent as `custNumber`.
    pub cust_number: String,
    /// The API gateway's app key ("能力开放—API 网关账号管理", §0.2), sent as `AppKey`.
    pub app_key: String,
    /// The gateway's secret key, which enters every `Sign` (§0.3).
    pub secret: Secret,
    #[serde(default)]
    pub timeouts: HttpTimeouts,
    /// Time zone of the `Timestamp` header (DISPUTED, §0.2): `gmt` (default: [YZ-5G],
    /// [NEST5G] and the doc's test) or `beijing` ([SIMCTL]).
    #[serde(default)]
    pub timestamp_zone: TimestampZone,
    /// What a POST signs after the query (DISPUTED, §0.3): `raw` body (default: the doc
    /// example, [NEST5G]) or `sorted_fields` ([SIMCTL]'s `k=v&…` re-serialisation).
    #[serde(default)]
    pub sign_body: SignBody,
    /// GET vs POST (DISPUTED, §0.4): `likely` (default: batch and real-name calls POST JSON,
    /// `/5gcmp/openapi/v1/common/…` calls GET) or `all_post` ([SIMCTL]).
    #[serde(default)]
    pub http_methods: HttpMethods,
    /// Access numbers per batchQryFlowByMonth call. Its maximum is not found (§1, §8): default
    /// 100, batchQrySimInfo's documented limit; at most 100 is used (one flow call never spans
    /// two batchQrySimInfo chunks).
    #[serde(default = "default_flow_batch")]
    pub flow_batch_size: usize,
}

fn default_flow_batch() -> usize {
    DEFAULT_FLOW_BATCH
}

/// The 5G CMP in the platform registry.
pub struct Platform;

impl WirePlatform for Platform {
    const NAME: &'static str = "cmp_5g";
    const CARRIER: CarrierId = CarrierId::Telecom;
    /// No rate limit is published (§8); as m2m_ec.
    const MAX_CONCURRENCY: u32 = 32;
    type Config = Cmp5gConfig;

    fn adapter(cfg: &Cmp5gConfig, ctx: AccountCtx) -> Result<std::sync::Arc<dyn Carrier>, String> {
        Ok(std::sync::Arc::new(Cmp5g::new(cfg, ctx)?))
    }

    fn simulator(
        sim: std::sync::Arc<crate::carrier::sim::SimCarrier>,
        cfg: &Cmp5gConfig,
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

    fn generated(base: &str, secret: &str, timeouts: HttpTimeouts) -> Cmp5gConfig {
        Cmp5gConfig {
            base_url: base.trim_end_matches('/').to_string(),
            cust_number: "simgate-sim".into(),
            app_key: "simgate-sim".into(),
            secret: Secret::new(secret),
            timeouts,
            timestamp_zone: TimestampZone::default(),
            sign_body: SignBody::default(),
            http_methods: HttpMethods::default(),
            flow_batch_size: DEFAULT_FLOW_BATCH,
        }
    }

    fn secrets(cfg: &Cmp5gConfig) -> Vec<(&'static str, String)> {
        vec![("secret", cfg.secret.expose().to_string())]
    }
}

/// simgate's code for a card with no access number stored (nothing is sent).
pub const NO_MSISDN: &str = "NO_MSISDN";
/// simgate's code for an access number batchQrySimInfo does not answer for.
pub const NOT_FOUND: &str = "NOT_FOUND";
/// simgate's code for an access number the platform says names another ICCID.
pub const MSISDN_MISMATCH: &str = "MSISDN_MISMATCH";
/// simgate's code when `cancel()` finds the card not dismantled at the platform.
pub const NOT_DISMANTLED: &str = "NOT_DISMANTLED";

pub struct Cmp5g {
    /// Whose account it is: carrier, rules, budget and the stored access numbers.
    ctx: AccountCtx,
    http: reqwest::Client,
    base_url: String,
    cust_number: String,
    app_key: String,
    secret: Secret,
    zone: TimestampZone,
    sign_body: SignBody,
    methods: HttpMethods,
    flow_batch: usize,
    /// Access numbers found in the store (or given at import), kept for the process.
    numbers: KnownNumbers,
}

impl std::fmt::Debug for Cmp5g {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cmp5g")
            .field("base_url", &self.base_url)
            .field("app_key", &self.app_key)
            .finish_non_exhaustive()
    }
}

/// One card's reading from batchQrySimInfo: its status code, as given, and the ICCID check.
#[derive(Debug, Clone)]
struct Info {
    status: String,
    /// Why the reading cannot be used (another ICCID, an unknown status); None: readable.
    unknown: Option<String>,
    /// The mapped status; a placeholder, never read, when `unknown` is set (every consumer
    /// of a `CarrierCard` leaves an unknown reading unapplied).
    state: ServiceState,
}

impl Cmp5g {
    pub fn new(cfg: &Cmp5gConfig, ctx: AccountCtx) -> Result<Cmp5g, String> {
        let base = url::Url::parse(&cfg.base_url).map_err(|e| format!("base_url: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.query().is_some() {
            return Err("base_url must be an http(s) URL without a query".into());
        }
        if cfg.flow_batch_size == 0 {
            return Err("flow_batch_size must be at least 1".into());
        }
        Ok(Cmp5g {
            ctx,
            http: client(&cfg.timeouts)?,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            cust_number: cfg.cust_number.clone(),
            app_key: cfg.app_key.clone(),
            secret: cfg.secret.clone(),
            zone: cfg.timestamp_zone,
            sign_body: cfg.sign_body,
            methods: cfg.http_methods,
            flow_batch: cfg.flow_batch_size.min(SIM_INFO_MAX),
            numbers: KnownNumbers::default(),
        })
    }

    /// The card's access number: kept, else simgate's stored one. None stored → `NO_MSISDN`,
    /// before anything is sent (no lookup by ICCID is confirmed on this platform).
    async fn number(&self, iccid: &Iccid) -> Result<String, CarrierError> {
        self.numbers
            .resolve(&self.ctx, iccid, async { Err(no_number(iccid)) })
            .await
    }

    /// Sends one signed call and returns the body of a 2xx answer. `params` are the call's
    /// parameters: a JSON body when the account's methods POST to `path`, else the query
    /// string (scalars only: no GET call here has an array).
    async fn send(
        &self,
        path: &'static str,
        params: serde_json::Map<String, serde_json::Value>,
        changes: bool,
    ) -> Result<String, CarrierError> {
        self.ctx.budget.spend(path).await;
        let timestamp = sign::timestamp(chrono::Utc::now(), self.zone);
        let url = format!("{}{}", self.base_url, path);
        let secret = self.secret.expose();
        let request = if self.methods.posts(path) {
            let body = serde_json::Value::Object(params).to_string();
            let signed = sign::signed_body(&body, self.sign_body);
            let s = sign::sign("", &signed, secret, &timestamp);
            self.http
                .post(url)
                .header("Content-Type", "application/json;charset=utf-8")
                .header("AppKey", &self.app_key)
                .header("Timestamp", &timestamp)
                .header("Sign", s)
                .body(body)
        } else {
            let mut pairs: Vec<(String, String)> = Vec::with_capacity(params.len());
            for (k, v) in params {
                let v = scalar(&v).ok_or_else(|| {
                    CarrierError::Transient(format!("{path}: {k} cannot go in a query string"))
                })?;
                pairs.push((k, v));
            }
            pairs.sort();
            let s = sign::sign(&sign::sorted_query(&pairs), "", secret, &timestamp);
            self.http
                .get(url)
                .query(&pairs)
                .header("AppKey", &self.app_key)
                .header("Timestamp", &timestamp)
                .header("Sign", s)
        };
        let resp = request.send().await.map_err(|e| send_error(e, changes))?;
        let status = resp.status();
        if !status.is_success() {
            let e = status_error(status, retry_after(resp.headers()));
            return Err(match e {
                // The gateway refuses a bad AppKey or Sign before the platform sees the call.
                CarrierError::Rejected { .. }
                    if changes && matches!(status.as_u16(), 401 | 403) =>
                {
                    e
                }
                // No other HTTP error is published: a change answered so may have applied.
                CarrierError::Rejected { .. } if changes => CarrierError::OutcomeUnknown(format!(
                    "{path} answered HTTP {}",
                    status.as_u16()
                )),
                other => other,
            });
        }
        resp.text().await.map_err(|e| send_error(e, changes))
    }

    /// batchQrySimInfo for at most 100 numbers: each answered number's status (left out:
    /// numbers the platform does not answer for).
    async fn sim_infos(
        &self,
        wanted: &[(Iccid, String)],
    ) -> Result<HashMap<String, Info>, CarrierError> {
        let mut params = serde_json::Map::new();
        let numbers: Vec<&str> = wanted.iter().map(|(_, n)| n.as_str()).collect();
        params.insert("accessNumbers".into(), serde_json::json!(numbers));
        params.insert("custNumber".into(), serde_json::json!(self.cust_number));
        // Sent empty when absent: "按文档示例送空串" ([NEST5G]).
        params.insert("groupId".into(), serde_json::json!(""));
        params.insert("simStatus".into(), serde_json::json!(""));
        let body = self.send(SIM_INFO_PATH, params, false).await?;
        let data: SimInfoData = envelope_data(&body, "batchQrySimInfo")?;
        let by_number: HashMap<&str, &Iccid> =
            wanted.iter().map(|(i, n)| (n.as_str(), i)).collect();
        let mut out = HashMap::new();
        for item in data.list {
            let Some(number) = scalar(&item.access_number) else {
                continue;
            };
            let Some(iccid) = by_number.get(number.as_str()) else {
                continue;
            };
            let status = scalar(&item.sim_status).unwrap_or_default();
            let theirs = scalar(&item.iccid).unwrap_or_default();
            let state = sim_status(&status);
            let unknown = if !theirs.is_empty() && !same_iccid(iccid.as_str(), &theirs) {
                Some(format!(
                    "{MSISDN_MISMATCH}: access number {number} names ICCID {theirs} at China Telecom, not {iccid}"
                ))
            } else if state.is_none() {
                Some(format!(
                    "simStatus {status:?} is outside the published table (1-6)"
                ))
            } else {
                None
            };
            out.insert(
                number,
                Info {
                    status,
                    unknown,
                    state: state.unwrap_or(ServiceState::Active),
                },
            );
        }
        Ok(out)
    }

    /// batchQryFlowByMonth for `numbers`, in calls of `flow_batch_size`: each answered number's
    /// usage, or why it cannot be read.
    async fn flows(
        &self,
        numbers: &[&str],
    ) -> Result<HashMap<String, Result<u64, String>>, CarrierError> {
        let mut out = HashMap::new();
        for chunk in numbers.chunks(self.flow_batch) {
            let mut params = serde_json::Map::new();
            params.insert("custNumber".into(), serde_json::json!(self.cust_number));
            params.insert("accessNumber".into(), serde_json::json!(chunk));
            let body = self.send(FLOW_PATH, params, false).await?;
            let items: Vec<Flow> = envelope_data(&body, "batchQryFlowByMonth")?;
            for item in items {
                if let Some(number) = scalar(&item.access_number) {
                    out.insert(number, item.bytes());
                }
            }
        }
        Ok(out)
    }

    /// The numbers of `iccids`, with the cards that have none left out (`cards()`) or refused
    /// (`strict`).
    async fn numbered(
        &self,
        iccids: &[Iccid],
        strict: bool,
    ) -> Result<Vec<(Iccid, String)>, CarrierError> {
        let mut out = Vec::with_capacity(iccids.len());
        for iccid in iccids {
            match self.number(iccid).await {
                Ok(n) => out.push((iccid.clone(), n)),
                Err(e) if !strict && self.card_not_known(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Reads up to 100 cards: one batchQrySimInfo, then batchQryFlowByMonth for the numbers it
    /// answered. Cards it did not answer for are left out.
    async fn read_chunk(
        &self,
        wanted: &[(Iccid, String)],
    ) -> Result<Vec<CarrierCard>, CarrierError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let infos = self.sim_infos(wanted).await?;
        let answered: Vec<&str> = wanted
            .iter()
            .map(|(_, n)| n.as_str())
            .filter(|n| infos.contains_key(*n))
            .collect();
        let flows = if answered.is_empty() {
            HashMap::new()
        } else {
            self.flows(&answered).await?
        };
        let mut out = Vec::with_capacity(answered.len());
        for (iccid, number) in wanted {
            let Some(info) = infos.get(number) else {
                continue;
            };
            let usage = match flows.get(number) {
                Some(u) => u.clone(),
                None => Err(format!("batchQryFlowByMonth did not answer for {number}")),
            };
            let (cycle_usage_bytes, usage_unknown) = match usage {
                Ok(b) => (b, None),
                Err(why) => (0, Some(why)),
            };
            out.push(CarrierCard {
                iccid: iccid.clone(),
                state: info.state,
                cycle_usage_bytes,
                // batchQryFlowByMonth says `month` (yyyyMM) but not when the cycle starts.
                usage_cycle_start: None,
                // No session call of this platform is used (getOnlineStatus: reply not found).
                last_session: LastSession::Unknown,
                changes: 0,
                unknown: info.unknown.clone().or(usage_unknown),
            });
        }
        Ok(out)
    }

    /// The card's status at the platform alone (one batchQrySimInfo): None when it does not
    /// answer for the number or the reading cannot be used.
    async fn status_of(&self, iccid: &Iccid) -> Result<Option<Info>, CarrierError> {
        let number = self.number(iccid).await?;
        let mut infos = self.sim_infos(&[(iccid.clone(), number.clone())]).await?;
        Ok(infos.remove(&number))
    }

    /// Whether the card is now in `to`, as far as a fresh read says.
    async fn is_in(&self, iccid: &Iccid, to: ServiceState) -> bool {
        matches!(self.status_of(iccid).await, Ok(Some(i)) if i.unknown.is_none() && i.state == to)
    }

    /// A GET (or POST) of a `/5gcmp/openapi/v1/common/…` call about one card.
    async fn common_call(
        &self,
        path: &'static str,
        number: &str,
        extras: &[(&str, &str)],
    ) -> Result<String, CarrierError> {
        let mut params = serde_json::Map::new();
        params.insert("access_number".into(), serde_json::json!(number));
        for (k, v) in extras {
            params.insert((*k).into(), serde_json::json!(v));
        }
        self.send(path, params, true).await
    }

    /// disabledNumberService with `order` (19 stop, 20 restore); on a restore answered 100008,
    /// requestServActive.
    async fn change(
        &self,
        iccid: &Iccid,
        order: &str,
        to: ServiceState,
    ) -> Result<Receipt, CarrierError> {
        let number = self.number(iccid).await?;
        // acctCd: "文档中没有，请求示例中有，不传入会报错！" ([YZ-5G-C]): always sent, empty.
        let body = self
            .common_call(
                DISABLED_PATH,
                &number,
                &[("acctCd", ""), ("orderTypeId", order)],
            )
            .await?;
        match change_answer(&body) {
            ChangeAnswer::Accepted { transaction_id } => Ok(receipt(transaction_id)),
            ChangeAnswer::NeedsActivation { .. } if order == ORDER_RESTORE => {
                self.activate(iccid, &number).await
            }
            ChangeAnswer::NeedsActivation { message } => {
                self.refused(iccid, to, NEEDS_ACTIVATION, &message).await
            }
            ChangeAnswer::Refused { code, message } => {
                self.refused(iccid, to, &code, &message).await
            }
            ChangeAnswer::Unrecognised(text) => {
                self.unexplained(iccid, to, "disabledNumberService", &text)
                    .await
            }
        }
    }

    /// requestServActive (§6.1): the restore of a card awaiting activation.
    async fn activate(&self, iccid: &Iccid, number: &str) -> Result<Receipt, CarrierError> {
        let body = self.common_call(SERV_ACTIVE_PATH, number, &[]).await?;
        match activation_answer(&body) {
            ChangeAnswer::Accepted { transaction_id } => Ok(receipt(transaction_id)),
            ChangeAnswer::Refused { code, message } => {
                self.refused(iccid, ServiceState::Active, &code, &message)
                    .await
            }
            ChangeAnswer::NeedsActivation { message } => {
                self.refused(iccid, ServiceState::Active, NEEDS_ACTIVATION, &message)
                    .await
            }
            ChangeAnswer::Unrecognised(text) => {
                self.unexplained(iccid, ServiceState::Active, "requestServActive", &text)
                    .await
            }
        }
    }

    /// A refused change: applied if the card is already in `to` (a repeated change), else
    /// deferred. No refusal code is published, so none is final.
    async fn refused(
        &self,
        iccid: &Iccid,
        to: ServiceState,
        code: &str,
        message: &str,
    ) -> Result<Receipt, CarrierError> {
        if self.is_in(iccid, to).await {
            return Ok(Receipt::applied());
        }
        Err(CarrierError::Deferred {
            code: code.to_string(),
            message: format!("refusal of a change no source explains: {message}"),
            retry_after: None,
        })
    }

    /// A change reply simgate cannot read: applied only if the card says so.
    async fn unexplained(
        &self,
        iccid: &Iccid,
        to: ServiceState,
        call: &str,
        text: &str,
    ) -> Result<Receipt, CarrierError> {
        if self.is_in(iccid, to).await {
            return Ok(Receipt::applied());
        }
        Err(CarrierError::OutcomeUnknown(format!(
            "{call} answered in a form no source explains: {text}"
        )))
    }

    /// qryRealNameStatus (§5): whether each card's real-name registration (实名) is verified
    /// (`status "1"`), for up to 100 cards a call (its maximum is not found: batchQrySimInfo's
    /// 100). Cards without a stored number, or not in the answer, are left out.
    pub async fn real_name(&self, iccids: &[Iccid]) -> Result<HashMap<Iccid, bool>, CarrierError> {
        let wanted = self.numbered(iccids, false).await?;
        let mut out = HashMap::new();
        for chunk in wanted.chunks(SIM_INFO_MAX) {
            let numbers: Vec<&str> = chunk.iter().map(|(_, n)| n.as_str()).collect();
            let mut params = serde_json::Map::new();
            params.insert("accessNumber".into(), serde_json::json!(numbers));
            let body = self.send(REAL_NAME_PATH, params, false).await?;
            let data: RealNameData = envelope_data(&body, "qryRealNameStatus")?;
            let by_number: HashMap<&str, &Iccid> =
                chunk.iter().map(|(i, n)| (n.as_str(), i)).collect();
            for item in data.list {
                if let Some(iccid) = scalar(&item.access_number)
                    .as_deref()
                    .and_then(|n| by_number.get(n))
                {
                    out.insert((*iccid).clone(), item.verified());
                }
            }
        }
        Ok(out)
    }
}

/// An accepted change's receipt: applied, named by its `GROUP_TRANSACTIONID` when given.
fn receipt(transaction_id: Option<String>) -> Receipt {
    transaction_id.map_or_else(Receipt::applied, Receipt::applied_as)
}

fn no_number(iccid: &Iccid) -> CarrierError {
    CarrierError::Rejected {
        code: NO_MSISDN.into(),
        message: format!(
            "{iccid}: no access number stored; the 5G CMP names cards by access number and has no confirmed lookup by ICCID"
        ),
    }
}

fn not_found(iccid: &Iccid, number: &str) -> CarrierError {
    CarrierError::Rejected {
        code: NOT_FOUND.into(),
        message: format!("{iccid}: batchQrySimInfo does not answer for access number {number}"),
    }
}

#[async_trait]
impl Carrier for Cmp5g {
    crate::carrier::platform::account_methods!();

    /// simgate's own `NO_MSISDN` and `NOT_FOUND` name a card the platform cannot be asked
    /// about or does not know; the platform's own codes are not published, so none of them
    /// drops a card.
    fn card_not_known(&self, error: &CarrierError) -> bool {
        matches!(error, CarrierError::Rejected { code, .. } if code == NO_MSISDN || code == NOT_FOUND)
    }

    fn addresses_by_msisdn(&self) -> bool {
        true
    }

    /// Only simgate's own record: the platform has no confirmed ICCID → number lookup.
    async fn msisdn_of(&self, iccid: &Iccid) -> Result<Option<String>, CarrierError> {
        if let Some(n) = self.numbers.get(iccid) {
            return Ok(Some(n));
        }
        self.ctx.stored_number(iccid).await
    }

    /// Every card needs its access number (given, else stored), and batchQrySimInfo must
    /// answer for it with this card's ICCID: a wrong number would stop someone else's card.
    async fn onboard(&self, cards: &[OnboardCard]) -> Result<(), CarrierError> {
        let mut wanted = Vec::with_capacity(cards.len());
        for c in cards {
            let number = match &c.msisdn {
                Some(n) => n.clone(),
                None => self.number(&c.iccid).await?,
            };
            wanted.push((c.iccid.clone(), number));
        }
        for chunk in wanted.chunks(SIM_INFO_MAX) {
            let infos = self.sim_infos(chunk).await?;
            for (iccid, number) in chunk {
                let info = infos.get(number).ok_or_else(|| not_found(iccid, number))?;
                if let Some(why) = info
                    .unknown
                    .as_deref()
                    .filter(|w| w.starts_with(MSISDN_MISMATCH))
                {
                    return Err(CarrierError::Rejected {
                        code: MSISDN_MISMATCH.into(),
                        message: why.to_string(),
                    });
                }
            }
        }
        for (iccid, number) in &wanted {
            self.numbers.keep(iccid, number);
        }
        Ok(())
    }

    async fn card(&self, iccid: &Iccid) -> Result<CarrierCard, CarrierError> {
        let number = self.number(iccid).await?;
        let wanted = [(iccid.clone(), number.clone())];
        self.read_chunk(&wanted)
            .await?
            .pop()
            .ok_or_else(|| not_found(iccid, &number))
    }

    async fn cards(&self, iccids: &[Iccid]) -> Result<Vec<CarrierCard>, CarrierError> {
        let wanted = self.numbered(iccids, false).await?;
        let mut out = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(SIM_INFO_MAX) {
            out.extend(self.read_chunk(chunk).await?);
        }
        Ok(out)
    }

    fn batch_limit(&self) -> usize {
        SIM_INFO_MAX
    }

    async fn stop(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.change(iccid, ORDER_STOP, ServiceState::Stopped).await
    }

    async fn restore(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.change(iccid, ORDER_RESTORE, ServiceState::Active)
            .await
    }

    /// Telecom dismantles (拆机) by itself: confirm it happened (simStatus 7).
    async fn cancel(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        let number = self.number(iccid).await?;
        let info = self
            .status_of(iccid)
            .await?
            .ok_or_else(|| not_found(iccid, &number))?;
        if info.unknown.is_none() && info.status == DISMANTLED {
            return Ok(Receipt::applied());
        }
        Err(CarrierError::Rejected {
            code: NOT_DISMANTLED.into(),
            message: format!(
                "{iccid} is not dismantled at China Telecom (simStatus {:?}{})",
                info.status,
                info.unknown.map(|u| format!("; {u}")).unwrap_or_default()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_to_the_doc_backed_forms() {
        let cfg: Cmp5gConfig = toml::from_str(
            r#"
            base_url = "https://cmp-api.ctwing.cn:20164"
            cust_number = "c"
            app_key = "k"
            secret = "topsecret-value"
            "#,
        )
        .expect("config");
        assert_eq!(cfg.timestamp_zone, TimestampZone::Gmt);
        assert_eq!(cfg.sign_body, SignBody::Raw);
        assert_eq!(cfg.http_methods, HttpMethods::Likely);
        assert_eq!(cfg.flow_batch_size, 100);
        let alt: Cmp5gConfig = toml::from_str(
            r#"
            base_url = "https://cmp-api.ctwing.cn:20164"
            cust_number = "c"
            app_key = "k"
            secret = "s"
            timestamp_zone = "beijing"
            sign_body = "sorted_fields"
            http_methods = "all_post"
            flow_batch_size = 50
            "#,
        )
        .expect("config");
        assert_eq!(
            (
                alt.timestamp_zone,
                alt.sign_body,
                alt.http_methods,
                alt.flow_batch_size
            ),
            (
                TimestampZone::Beijing,
                SignBody::SortedFields,
                HttpMethods::AllPost,
                50
            )
        );
        let ctx = AccountCtx::default_for(CarrierId::Telecom);
        assert!(Cmp5g::new(
            &Cmp5gConfig {
                flow_batch_size: 0,
                ..cfg.clone()
            },
            ctx.clone()
        )
        .is_err());
        assert!(Cmp5g::new(
            &Cmp5gConfig {
                base_url: "ftp://x".into(),
                ..cfg.clone()
            },
            ctx.clone()
        )
        .is_err());
        // At most 100 numbers a flow call, whatever is configured.
        let big = Cmp5g::new(
            &Cmp5gConfig {
                flow_batch_size: 500,
                ..cfg
            },
            ctx,
        )
        .expect("adapter");
        assert_eq!(big.flow_batch, SIM_INFO_MAX);
        // The secret never shows.
        assert!(!format!("{big:?}").contains("topsecret"), "{big:?}");
    }
}
