//! China Telecom CMP (m2m_ec), one folder: the adapter (here), its wire terms (`wire`: paths,
//! sign sets, tables, envelopes), its signing scheme (`crypt`) and its wire simulator
//! (`simulator`). Evidence: `shared/domain/carrier-wire/cmp.md` (the dossier, cited by section
//! and source key); golden fixtures from it in `tests/fixtures/carrier-wire/cmp/`.
//!
//! Upstream calls (all `GET {base_url}/query.do?method=…`, account in the query string):
//! - `queryCardMainStatus` (JSON, §2): the card's main status, for `card()`, `cancel()` (is it
//!   dismantled?), `onboard()` (does it exist?) and to confirm a change answered `-5`/`1999`.
//! - `queryTraffic&needDtl=0` (XML, §1): this month's data usage, for `card()`.
//! - `disabledNumber&orderTypeId=19|20&acctCd=` (§5): stop with number retention (停机保号)
//!   and restore. On `query.do`, as all five clients that implement it send it (the older
//!   notes' `app/serviceAccept.do` was wrong); `acctCd` present, empty and signed.
//! - `getOnlineStatus` (JSON, §3): the last session, for `card()` and [`Cmp::online_status`].
//! - `realNameQueryIot` (XML, §4): [`Cmp::real_name`].
//! - `getTelephonePlus` (JSON, §7.2): a card's access number, by ICCID, for `onboard()` and
//!   `msisdn_of()`.
//! - `IMEIReRecord` (JSON reply, §6.1): `rebind()`, in the account's form (below).
//!
//! Receipts and orders: an accepted `disabledNumber` or `IMEIReRecord` reply is proof the
//! change is applied, so `stop`/`restore`/`rebind` return `Receipt::applied_as` its
//! `GROUP_TRANSACTIONID` (`applied()` when the reply has none, or when the change was
//! confirmed by reading the card after `-5`/`1999`/an unexplained reply). The dossier has no
//! order query for m2m_ec: `queries_orders()` stays false, and no receipt is ever
//! `in_progress`.
//!
//! Binding (`rebind`, `IMEIReRecord`, DISPUTED §6.1, setting `imei_rerecord_form`):
//! `query_access_number` (default; version A, [YZ-CMP-C] id 68586819785: `query.do`,
//! `access_number`, `action=ADD`, `bind_type` absent = ordinary rebind, `2` + `imei` = fixed
//! binding) or `service_accept_iccid` (version B, [ESIM7] id 45573986352 doc URL:
//! `app/serviceAccept.do`, `iccid`, `action=ADD`). Both sign identifier, `user_id`, `method`,
//! `action` and the password (§0.5); `bind_type`/`imei` are not signed. A is the default
//! because it is the fuller source (an implementation with both bind types and the two reply
//! samples). Modes: `CurrentDevice` → ordinary rebind; `Imei` → `bind_type=2` (form A only;
//! form B refuses it before sending); `Unbind` → no call in the dossier, refused before
//! sending (`rebind_modes()` leaves it out). Reply `RspType 0` → applied; `RspType 1` with
//! `RspCode -5` (per-card monthly limit, number not found) → `Rejected` with the platform's
//! code and text. Unknown: the limit's number, whether version B takes `bind_type`/`imei`,
//! what the unpublished `RspCode`s mean, a binding query's reply (`queryBindDetection`:
//! fields not found), so `binding()` stays None.
//!
//! Refusals of changes (`wire::change_refusal`): the account's `repeat_window_code` (none is
//! published; default none: set it when you learn the code your platform answers) →
//! `Deferred { retry_after: None }`; a code outside the published table (§9) → `Deferred` as
//! well (read the card, retry later, never final); published codes keep their refusal
//! (`-1`..`-4`, `-7`, `1999`), 101004 is rate limiting. Reads keep failing safe (an
//! unpublished code is "unavailable").
//!
//! Naming the card (§0.4, DISPUTED): by `access_number` (setting `card_identifier`, default,
//! six sources) or by `iccid` ([NKY]). By access number, each card's number comes from
//! simgate's record of the card (`AccountCtx::numbers`: the number given or learnt at import),
//! else from `getTelephonePlus` (one call), and is kept for the process. `onboard()` asks the
//! platform for every card's number (that proves the card exists) and refuses an import whose
//! given number is another (`MSISDN_MISMATCH`): a wrong number would stop someone else's card.
//! `realNameQueryIot` goes by access number in both settings (no source sends an ICCID).
//!
//! Auth: `user_id`, `passWord` = [`crypt::encrypt`] of the password, and `sign` =
//! [`crypt::request_sign`] over the parameters each method signs (`wire::is_signed`) plus the
//! plain password. The module owns Telecom's JS-style triple-key DES (the cipher itself comes
//! from the `des` crate).
//!
//! Disputed facts, as per-account settings: `sign_need_dtl` (does `queryTraffic` sign
//! `needDtl`? not in five of six sources: default false). Still unknown (dossier §11): a
//! verbatim `disabledNumber` reply and what its 流水号 text form means (read as "outcome
//! unknown" until the card's state confirms it); the values of getOnlineStatus' `result` and
//! `acctStatusType` (online is never guessed) and its time formats (a session time only from
//! a known format, otherwise "unknown", never "none"); error `-6`; the numeric rate limit.
//! Whether `getTelephonePlus` wants 19 or 20 ICCID digits ([ESIM7] cuts 20 to 19); whether
//! `disabledNumber` accepts an `iccid` at all (no source); the repeat window's code and length
//! (none published). Unpublished codes fail safe: a read is unavailable, a change answered
//! with one is deferred, a change answered in an unexplained form has an unknown outcome.

pub mod crypt;
pub mod simulator;
pub mod wire;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{client, malformed, retry_after, send_error, status_error, HttpTimeouts, Secret};
use crate::carrier::platform::{AccountCtx, WirePlatform};
use crate::carrier::{
    Carrier, CarrierCard, CarrierError, LastSession, OnboardCard, Rebind, Receipt, ServiceState,
};
use crate::domain::{CarrierId, Iccid};

/// An `[[accounts]]` entry with `platform = "cmp"`: endpoint and credentials.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CmpConfig {
    /// Base URL of the platform, e.g. http://api.ct10649.com:9001/m2m_ec.
    pub base_url: String,
    pub user_id: String,
    pub password: Secret,
    /// The 9-character secret from which the three DES keys are taken.
    pub key: Secret,
    #[serde(default)]
    pub timeouts: HttpTimeouts,
    /// Whether `queryTraffic` signs its `needDtl` parameter (DISPUTED, dossier §0.5: not in
    /// [YZ-CMP-Q], [MEH], [ESIM7], [SMARTCARD] and one more; signed by [XUYU]). Default false.
    #[serde(default)]
    pub sign_need_dtl: bool,
    /// How calls name a card (DISPUTED, dossier §0.4): `access_number` (default, six sources)
    /// or `iccid` ([NKY]). See [`CardIdentifier`].
    #[serde(default)]
    pub card_identifier: CardIdentifier,
    /// How `IMEIReRecord` is sent (DISPUTED, dossier §6.1): `query_access_number` (default,
    /// [YZ-CMP-C]) or `service_accept_iccid` ([ESIM7]). See [`ImeiReRecordForm`].
    #[serde(default)]
    pub imei_rerecord_form: ImeiReRecordForm,
    /// The code the platform refuses a repeated change with inside its repeat window (同一卡号
    /// N分钟内不能重复办理). None is published (dossier §9, §11): none by default; set it when you
    /// learn the code your platform answers. A change refused with it is deferred.
    // Left out when unset: TOML has no null (`simgate simulate` writes these settings out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_window_code: Option<String>,
}

pub use crypt::request_sign;
use wire::*;

/// CMP in the platform registry.
pub struct Platform;

impl WirePlatform for Platform {
    const NAME: &'static str = "cmp";
    const CARRIER: CarrierId = CarrierId::Telecom;
    const MAX_CONCURRENCY: u32 = 32;
    type Config = CmpConfig;

    fn adapter(cfg: &CmpConfig, ctx: AccountCtx) -> Result<std::sync::Arc<dyn Carrier>, String> {
        Ok(std::sync::Arc::new(Cmp::new(cfg, ctx)?))
    }

    fn simulator(
        sim: std::sync::Arc<crate::carrier::sim::SimCarrier>,
        cfg: &CmpConfig,
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

    /// CMP's key is nine characters (three DES keys of three): the secret's first eight are
    /// the password, the next nine the key.
    fn generated(base: &str, secret: &str, timeouts: HttpTimeouts) -> CmpConfig {
        let chars: Vec<char> = secret
            .chars()
            .chain(std::iter::repeat('0'))
            .take(17)
            .collect();
        CmpConfig {
            base_url: format!("{base}/m2m_ec"),
            user_id: "simgate-sim".into(),
            password: Secret::new(chars[..8].iter().collect::<String>()),
            key: Secret::new(chars[8..17].iter().collect::<String>()),
            timeouts,
            sign_need_dtl: false,
            card_identifier: CardIdentifier::default(),
            imei_rerecord_form: ImeiReRecordForm::default(),
            repeat_window_code: None,
        }
    }

    fn secrets(cfg: &CmpConfig) -> Vec<(&'static str, String)> {
        vec![
            ("password", cfg.password.expose().to_string()),
            ("key", cfg.key.expose().to_string()),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// The adapter.
// ---------------------------------------------------------------------------------------------

pub struct Cmp {
    /// Whose account it is: carrier, rules and budget.
    ctx: AccountCtx,
    http: reqwest::Client,
    base_url: String,
    user_id: String,
    password: Secret,
    key: Secret,
    sign_need_dtl: bool,
    identifier: CardIdentifier,
    imei_form: ImeiReRecordForm,
    repeat_window_code: Option<String>,
    /// Access numbers already found (from the store or `getTelephonePlus`), so each card's is
    /// looked up once per process.
    numbers: crate::carrier::platform::KnownNumbers,
}

impl std::fmt::Debug for Cmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cmp")
            .field("base_url", &self.base_url)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl Cmp {
    pub fn new(cfg: &CmpConfig, ctx: AccountCtx) -> Result<Cmp, String> {
        let base = url::Url::parse(&cfg.base_url).map_err(|e| format!("base_url: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.query().is_some() {
            return Err("base_url must be an http(s) URL without a query".into());
        }
        // Fails now rather than on the first call when the key has the wrong length.
        crypt::encrypt("", cfg.key.expose()).map_err(|e| format!("key: {e}"))?;
        Ok(Cmp {
            ctx,
            http: client(&cfg.timeouts)?,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            user_id: cfg.user_id.clone(),
            password: cfg.password.clone(),
            key: cfg.key.clone(),
            sign_need_dtl: cfg.sign_need_dtl,
            identifier: cfg.card_identifier,
            imei_form: cfg.imei_rerecord_form,
            repeat_window_code: cfg
                .repeat_window_code
                .as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string),
            numbers: Default::default(),
        })
    }

    /// The access number a call names `iccid` by: kept, else simgate's record of the card,
    /// else the platform's (`getTelephonePlus`, one call). A card with none is refused before
    /// anything is sent, so a change is never in doubt for want of a number.
    async fn access_number(&self, iccid: &Iccid) -> Result<String, CarrierError> {
        let from_platform = async { self.telephone(iccid).await?.ok_or_else(|| no_number(iccid)) };
        self.numbers.resolve(&self.ctx, iccid, from_platform).await
    }

    /// `getTelephonePlus`: the access number the platform holds for an ICCID (None: none).
    async fn telephone(&self, iccid: &Iccid) -> Result<Option<String>, CarrierError> {
        let name = ("iccid", iccid.as_str().to_string());
        let body = self.send(QUERY_PATH, M_TELEPHONE, name, &[], false).await?;
        let reply: TelephoneReply = parse_json(&body, M_TELEPHONE, false)?;
        if reply.result_code != "0" {
            return Err(platform_error(&reply.result_code, &reply.result_msg, false));
        }
        let info = reply.info.unwrap_or_default();
        // A reply about another card must not name this one ([ESIM7] sends 19 of 20 digits,
        // so a prefix counts as the same card).
        let theirs = info.iccid.trim().to_ascii_uppercase();
        if !theirs.is_empty() && !iccid.as_str().starts_with(&theirs) {
            return Err(malformed(
                &format!("{M_TELEPHONE} answered for ICCID {theirs}, not {iccid}"),
                false,
            ));
        }
        let number = info.access_number.trim().to_string();
        if number.is_empty() {
            return Ok(None);
        }
        crate::domain::Msisdn::parse(&number).map_err(|e| {
            malformed(
                &format!("{M_TELEPHONE} access_number {number:?}: {}", e.0),
                false,
            )
        })?;
        Ok(Some(number))
    }

    /// Sends one signed call about `iccid`, named as the account names cards, and returns the
    /// body of a 2xx answer. The URL (with the password and sign) is never put in an error or
    /// a log line.
    async fn call(
        &self,
        path: &str,
        method: &'static str,
        iccid: &Iccid,
        extras: &[(&'static str, &str)],
        changes: bool,
    ) -> Result<String, CarrierError> {
        let name = match self.identifier.param(method) {
            "access_number" => ("access_number", self.access_number(iccid).await?),
            _ => ("iccid", iccid.as_str().to_string()),
        };
        self.send(path, method, name, extras, changes).await
    }

    /// [`Cmp::call`] with the card's parameter given.
    async fn send(
        &self,
        path: &str,
        method: &'static str,
        name: (&'static str, String),
        extras: &[(&'static str, &str)],
        changes: bool,
    ) -> Result<String, CarrierError> {
        self.ctx.budget.spend(method).await;
        let mut params: Vec<(&str, String)> = vec![
            ("method", method.to_string()),
            ("user_id", self.user_id.clone()),
            name,
        ];
        params.extend(extras.iter().map(|(k, v)| (*k, v.to_string())));
        let secret = self.key.expose();
        let password = self.password.expose();
        let sign = request_sign(method, &params, password, secret, self.sign_need_dtl)
            .map_err(CarrierError::Transient)?;
        let pass = crypt::encrypt(password, secret).map_err(CarrierError::Transient)?;
        params.push(("passWord", pass));
        params.push(("sign", sign));
        let resp = self
            .http
            .get(format!("{}{}", self.base_url, path))
            .query(&params)
            .send()
            .await
            .map_err(|e| send_error(e, changes))?;
        let status = resp.status();
        if !status.is_success() {
            // No published HTTP-level errors: a change answered so may have been applied.
            let e = status_error(status, retry_after(resp.headers()));
            return Err(match e {
                CarrierError::Rejected { .. } if changes => CarrierError::OutcomeUnknown(format!(
                    "{method} answered HTTP {}",
                    status.as_u16()
                )),
                other => other,
            });
        }
        resp.text().await.map_err(|e| send_error(e, changes))
    }

    async fn status(&self, iccid: &Iccid) -> Result<StatusReply, CarrierError> {
        let body = self.call(QUERY_PATH, M_STATUS, iccid, &[], false).await?;
        let reply: StatusReply = parse_json(&body, M_STATUS, false)?;
        if reply.result_code != "0" {
            return Err(platform_error(&reply.result_code, &reply.result_msg, false));
        }
        Ok(reply)
    }

    async fn state(&self, iccid: &Iccid) -> Result<(String, ServiceState), CarrierError> {
        let reply = self.status(iccid).await?;
        // A card can list several products; 6 (carrier-managed) sits next to the real status,
        // so the first other one wins (as nkypy/carrier-api does).
        let info = reply
            .product_info
            .iter()
            .find(|p| p.status_code != "6")
            .or_else(|| reply.product_info.first())
            .ok_or_else(|| malformed("queryCardMainStatus without productInfo", false))?;
        let state = main_status(&info.status_code).ok_or_else(|| {
            malformed(
                &format!("unknown productMainStatusCd {:?}", info.status_code),
                false,
            )
        })?;
        Ok((info.status_code.clone(), state))
    }

    async fn usage(&self, iccid: &Iccid) -> Result<u64, CarrierError> {
        let body = self
            .call(QUERY_PATH, M_TRAFFIC, iccid, &[("needDtl", "0")], false)
            .await?;
        let root: TrafficRoot = parse_xml(&body, M_TRAFFIC, false)?;
        if root.rsp.iresult != "0" {
            return Err(platform_error(&root.rsp.iresult, "", false));
        }
        parse_mb(&root.rsp.total_bytes_cnt)
            .ok_or_else(|| malformed("queryTraffic TOTAL_BYTES_CNT is not N.NNMB", false))
    }

    /// `disabledNumber`. An accepted reply is proof the change is applied; its
    /// `GROUP_TRANSACTIONID` names it in the receipt.
    async fn change(
        &self,
        iccid: &Iccid,
        order: &str,
        to: ServiceState,
    ) -> Result<Receipt, CarrierError> {
        let body = self
            .call(
                QUERY_PATH,
                M_DISABLE,
                iccid,
                &[("orderTypeId", order), ("acctCd", "")],
                true,
            )
            .await?;
        let (code, message) = match change_answer(&body) {
            ChangeAnswer::Accepted { transaction_id } => return Ok(receipt(transaction_id)),
            ChangeAnswer::Refused { code, message } => (code, message),
            ChangeAnswer::Unrecognised(text) => {
                // Only the card's state says whether it took effect.
                return match self.state(iccid).await {
                    Ok((_, now)) if now == to => Ok(Receipt::applied()),
                    _ => Err(CarrierError::OutcomeUnknown(format!(
                        "{M_DISABLE} answered in a form no source explains: {text}"
                    ))),
                };
            }
        };
        if code == ALREADY_ORDERED || code == STOP_RECORD_EXISTS {
            // Both also answer an order that is pending for another reason: only the card's
            // state tells whether the change is already in effect.
            let (_, now) = self.state(iccid).await?;
            if now == to {
                return Ok(Receipt::applied());
            }
        }
        Err(change_refusal(
            &code,
            &message,
            self.repeat_window_code.as_deref(),
        ))
    }

    /// `IMEIReRecord` in the account's form (dossier §6.1). A mode the form has no parameters
    /// for is refused before anything is sent.
    async fn rerecord(&self, iccid: &Iccid, rebind: &Rebind) -> Result<Receipt, CarrierError> {
        let form = self.imei_form;
        let mut extras: Vec<(&'static str, &str)> = vec![("action", REBIND_ACTION)];
        match rebind {
            Rebind::CurrentDevice => {}
            Rebind::Imei(imei) if form.binds_to_imei() => {
                if imei.is_empty() || !imei.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CarrierError::Rejected {
                        code: INVALID_IMEI.into(),
                        message: format!("{imei:?} is not an IMEI (digits only)"),
                    });
                }
                extras.push(("bind_type", BIND_TYPE_FIXED));
                extras.push(("imei", imei));
            }
            other => return Err(mode_not_supported(other, form)),
        }
        let name = match form.param() {
            "access_number" => ("access_number", self.access_number(iccid).await?),
            _ => ("iccid", iccid.as_str().to_string()),
        };
        let body = self
            .send(form.path(), M_IMEI_RERECORD, name, &extras, true)
            .await?;
        match rebind_answer(&body) {
            ChangeAnswer::Accepted { transaction_id } => Ok(receipt(transaction_id)),
            // -5 is the published per-card monthly limit: a refusal with the platform's words.
            ChangeAnswer::Refused { code, message } => Err(change_refusal(
                &code,
                &message,
                self.repeat_window_code.as_deref(),
            )),
            // No binding query in the dossier: nothing can confirm it.
            ChangeAnswer::Unrecognised(text) => Err(CarrierError::OutcomeUnknown(format!(
                "{M_IMEI_RERECORD} answered in a form no source explains: {text}"
            ))),
        }
    }

    /// `getOnlineStatus`: the card's current or last data session, as far as the reply says.
    pub async fn online_status(&self, iccid: &Iccid) -> Result<OnlineStatus, CarrierError> {
        let body = self.call(QUERY_PATH, M_ONLINE, iccid, &[], false).await?;
        let reply: OnlineReply = parse_json(&body, M_ONLINE, false)?;
        if reply.result_code != "0" {
            return Err(platform_error(&reply.result_code, &reply.result_msg, false));
        }
        // Without the description object nothing is known: never "offline".
        let Some(d) = reply.description else {
            return Ok(OnlineStatus {
                online: None,
                last_session: LastSession::Unknown,
                framed_ip_address: None,
                apn: None,
            });
        };
        let given = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        Ok(OnlineStatus {
            online: None,
            last_session: d.last_session(),
            framed_ip_address: given(&d.framed_ip_address),
            apn: given(&d.apn),
        })
    }

    /// `realNameQueryIot`: whether the card's real-name registration (实名) is done. `0`: a
    /// record was found ([MEH]); `-5` on this method: none (未能查询到实名制信息, [MEH]).
    pub async fn real_name(&self, iccid: &Iccid) -> Result<RealName, CarrierError> {
        let body = self
            .call(QUERY_PATH, M_REAL_NAME, iccid, &[], false)
            .await?;
        let Some(reply) = RealNameReply::parse(&body) else {
            return Err(refusal(&body, false)
                .unwrap_or_else(|| malformed(&format!("{M_REAL_NAME}: unreadable reply"), false)));
        };
        match reply.result_code.as_str() {
            "0" => Ok(RealName::Registered),
            ALREADY_ORDERED => Ok(RealName::NotRegistered {
                code: reply.result_code,
                message: reply.result_msg,
            }),
            code => Err(platform_error(code, &reply.result_msg, false)),
        }
    }
}

#[async_trait]
impl Carrier for Cmp {
    crate::carrier::platform::account_methods!();

    /// `-4` (iccid号码错误或不存在) names a card the platform lacks, and so does a card it gives
    /// no access number; `-1` (credentials), `-2`, `-3` (sign) and the rest concern the account
    /// or the request and fail the sync.
    fn card_not_known(&self, error: &CarrierError) -> bool {
        matches!(error, CarrierError::Rejected { code, .. }
            if code == UNKNOWN_CARD || code == NO_ACCESS_NUMBER)
    }

    fn addresses_by_msisdn(&self) -> bool {
        self.identifier == CardIdentifier::AccessNumber
    }

    async fn msisdn_of(&self, iccid: &Iccid) -> Result<Option<String>, CarrierError> {
        if let Some(n) = self.numbers.get(iccid) {
            return Ok(Some(n));
        }
        let found = self.telephone(iccid).await?;
        if let Some(n) = &found {
            self.numbers.keep(iccid, n);
        }
        Ok(found)
    }

    /// The platform already knows its cards: check that each one exists there. Named by
    /// access number, each card's is asked by ICCID (which proves the card exists) and must be
    /// the one given at import: a wrong number would send this card's changes to another card.
    async fn onboard(&self, cards: &[OnboardCard]) -> Result<(), CarrierError> {
        if self.identifier == CardIdentifier::AccessNumber {
            for c in cards {
                let theirs = self
                    .telephone(&c.iccid)
                    .await
                    .map_err(|e| naming(&c.iccid, e))?;
                let theirs = theirs.ok_or_else(|| no_number(&c.iccid))?;
                if let Some(given) = c.msisdn.as_deref().filter(|g| *g != theirs) {
                    return Err(CarrierError::Rejected {
                        code: MSISDN_MISMATCH.into(),
                        message: format!(
                            "{}: msisdn {given} was given, but China Telecom names the card {theirs}",
                            c.iccid
                        ),
                    });
                }
                self.numbers.keep(&c.iccid, &theirs);
            }
            return Ok(());
        }
        for c in cards {
            self.status(&c.iccid)
                .await
                .map_err(|e| naming(&c.iccid, e))?;
        }
        Ok(())
    }

    async fn card(&self, iccid: &Iccid) -> Result<CarrierCard, CarrierError> {
        let (_, state) = self.state(iccid).await?;
        let cycle_usage_bytes = self.usage(iccid).await?;
        // A third call, because the diagnosis must tell "stopped" from "never connects", and
        // only getOnlineStatus knows sessions.
        let last_session = self.online_status(iccid).await?.last_session;
        Ok(CarrierCard {
            iccid: iccid.clone(),
            state,
            cycle_usage_bytes,
            // queryTraffic says "this month" without dates; the platform does not tell.
            usage_cycle_start: None,
            last_session,
            changes: 0,
            unknown: None,
        })
    }

    /// The usage sync's read: state and usage, two calls a card (m2m_ec has no batch query).
    /// The session call of `card()` is left out: the sync does not use the last session, and
    /// it would be a third of the account's budget.
    async fn cards(&self, iccids: &[Iccid]) -> Result<Vec<CarrierCard>, CarrierError> {
        let mut out = Vec::with_capacity(iccids.len());
        for iccid in iccids {
            let read = async {
                let (_, state) = self.state(iccid).await?;
                let cycle_usage_bytes = self.usage(iccid).await?;
                Ok::<_, CarrierError>(CarrierCard {
                    iccid: iccid.clone(),
                    state,
                    cycle_usage_bytes,
                    usage_cycle_start: None,
                    last_session: crate::carrier::LastSession::Unknown,
                    changes: 0,
                    unknown: None,
                })
            };
            match read.await {
                Ok(c) => out.push(c),
                Err(e) if self.card_not_known(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn stop(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.change(iccid, ORDER_STOP, ServiceState::Stopped).await
    }

    async fn restore(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.change(iccid, ORDER_RESTORE, ServiceState::Active)
            .await
    }

    /// `IMEIReRecord` (dossier §6.1): `CurrentDevice` is the ordinary rebind, `Imei` the fixed
    /// binding (`bind_type=2`, form `query_access_number` only). No call in the dossier
    /// removes a binding: `Unbind` is refused before anything is sent.
    async fn rebind(&self, iccid: &Iccid, rebind: &Rebind) -> Result<Receipt, CarrierError> {
        self.rerecord(iccid, rebind).await
    }

    fn rebind_modes(&self) -> Vec<&'static str> {
        if self.imei_form.binds_to_imei() {
            vec!["CURRENT_DEVICE", "IMEI"]
        } else {
            vec!["CURRENT_DEVICE"]
        }
    }

    /// Telecom dismantles (拆机) by itself: confirm it happened.
    async fn cancel(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        let (code, _) = self.state(iccid).await?;
        if code == DISMANTLED {
            Ok(Receipt::applied())
        } else {
            Err(CarrierError::Rejected {
                code: NOT_DISMANTLED.into(),
                message: format!(
                    "{iccid} is not dismantled at China Telecom (productMainStatusCd {code})"
                ),
            })
        }
    }
}

/// simgate's code for an import whose access number is not the platform's.
pub const MSISDN_MISMATCH: &str = "MSISDN_MISMATCH";
/// simgate's code for a card the platform holds no access number for.
pub const NO_ACCESS_NUMBER: &str = "NO_ACCESS_NUMBER";
/// simgate's code for a binding mode the account's `IMEIReRecord` form has no call for (the
/// trait's own code, refused before anything is sent).
pub const REBIND_NOT_SUPPORTED: &str = "REBIND_NOT_SUPPORTED";
/// simgate's code for an IMEI that is not digits (refused before anything is sent).
pub const INVALID_IMEI: &str = "INVALID_IMEI";

/// An accepted change's receipt: applied, named by its `GROUP_TRANSACTIONID` when the reply
/// has one. CMP has no order query in the dossier: the reply is the only proof.
fn receipt(transaction_id: Option<String>) -> Receipt {
    transaction_id.map_or_else(Receipt::applied, Receipt::applied_as)
}

fn mode_not_supported(rebind: &Rebind, form: ImeiReRecordForm) -> CarrierError {
    let why = match rebind {
        Rebind::Unbind => "no CMP call in the dossier removes a binding".to_string(),
        _ => {
            format!("IMEIReRecord in the form {form:?} (imei_rerecord_form) has no bind_type/imei")
        }
    };
    CarrierError::Rejected {
        code: REBIND_NOT_SUPPORTED.into(),
        message: format!("binding mode {} is not supported: {why}", rebind.mode()),
    }
}

/// A refusal of an import's card, with the card named (an import has many).
fn naming(iccid: &Iccid, e: CarrierError) -> CarrierError {
    match e {
        CarrierError::Rejected { code, message } => CarrierError::Rejected {
            code,
            message: format!("{iccid}: {message}"),
        },
        other => other,
    }
}

fn no_number(iccid: &Iccid) -> CarrierError {
    CarrierError::Rejected {
        code: NO_ACCESS_NUMBER.into(),
        message: format!(
            "{iccid}: China Telecom gives no access number for it, and the account names cards by access number (card_identifier)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abcdefghi";

    /// Public vectors of nkypy/carrier-api (`china_telecom` controllers test, key "abcdefghi").
    #[test]
    fn des_matches_the_public_test_vectors() {
        assert_eq!(crypt::sign(&["test"], KEY).unwrap(), "41894168BD86A2CC");
        assert_eq!(
            crypt::sign(&["14914000000", "test", "test", "queryPakage"], KEY).unwrap(),
            "45E8B9924DE397A8F7E5764767810CF774CC7E1685BA702C9C4C367EFDAE5D932B37C0C8F0F8EB0CAD6372289F407CA941894168BD86A2CC32E5804EA05BAA5099649468B9418E52"
        );
    }

    #[test]
    fn des_round_trips_and_rejects_bad_keys() {
        for s in ["", "a", "abcd", "password123", "实名制,Test"] {
            let enc = crypt::encrypt(s, KEY).unwrap();
            assert_eq!(enc.len(), s.encode_utf16().count().div_ceil(4) * 16);
            assert_eq!(crypt::decrypt(&enc, KEY).unwrap(), s);
        }
        assert_ne!(
            crypt::encrypt("password", KEY).unwrap(),
            crypt::encrypt("password", "abcdefghj").unwrap()
        );
        assert!(crypt::encrypt("x", "short").is_err());
        assert!(crypt::decrypt("ABC", KEY).is_err());
    }

    #[test]
    fn each_method_signs_its_own_parameters_and_the_plain_password() {
        let params = vec![
            ("method", "queryTraffic".to_string()),
            ("user_id", "test".to_string()),
            ("iccid", "8986031540025047173".to_string()),
            ("needDtl", "0".to_string()),
            ("passWord", "IGNORED".to_string()),
        ];
        let s = request_sign(M_TRAFFIC, &params, "pw", KEY, false).unwrap();
        // needDtl is sent, not signed (dossier §0.5, five of six sources).
        assert_eq!(
            s,
            crypt::sign(&["pw", "queryTraffic", "test", "8986031540025047173"], KEY).unwrap()
        );
        assert_eq!(
            request_sign(M_TRAFFIC, &params, "pw", KEY, true).unwrap(),
            crypt::sign(
                &["pw", "queryTraffic", "test", "8986031540025047173", "0"],
                KEY
            )
            .unwrap(),
            "sign_need_dtl signs it"
        );
        assert_ne!(
            s,
            request_sign(M_TRAFFIC, &params, "pw2", KEY, false).unwrap()
        );
        // disabledNumber signs acctCd (empty) and orderTypeId.
        let change = vec![
            ("method", "disabledNumber".to_string()),
            ("user_id", "test".to_string()),
            ("access_number", "14914000000".to_string()),
            ("acctCd", String::new()),
            ("orderTypeId", "19".to_string()),
        ];
        assert_eq!(
            request_sign(M_DISABLE, &change, "test", KEY, false).unwrap(),
            crypt::sign(
                &["14914000000", "test", "test", "disabledNumber", "", "19"],
                KEY
            )
            .unwrap()
        );
    }

    #[test]
    fn every_main_status_code_maps() {
        let expected = [
            ("1", ServiceState::Active),
            ("2", ServiceState::Active),
            ("3", ServiceState::Stopped),
            ("4", ServiceState::Active),
            ("5", ServiceState::Stopped),
            ("6", ServiceState::Stopped),
            ("7", ServiceState::Cancelled),
        ];
        for (code, state) in expected {
            assert_eq!(main_status(code), Some(state), "code {code}");
        }
        assert_eq!(main_status("8"), None);
        assert_eq!(main_status(""), None);
        for s in [
            ServiceState::Active,
            ServiceState::Stopped,
            ServiceState::Cancelled,
        ] {
            assert_eq!(main_status(main_status_code(s)), Some(s));
        }
        assert_eq!(main_status(DISMANTLED), Some(ServiceState::Cancelled));
    }

    #[test]
    fn every_error_code_maps_and_unpublished_ones_fail_safe() {
        for (code, meaning) in ERROR_CODES {
            for changes in [false, true] {
                let e = platform_error(code, "", changes);
                if *code == RATE_LIMITED {
                    assert_eq!(e, CarrierError::RateLimited { retry_after: None });
                } else {
                    assert_eq!(
                        e,
                        CarrierError::Rejected {
                            code: code.to_string(),
                            message: meaning.to_string()
                        }
                    );
                }
            }
        }
        assert_eq!(
            platform_error("-4", "无此号码", false),
            CarrierError::Rejected {
                code: "-4".into(),
                message: "无此号码".into()
            }
        );
        // Unpublished (-6, -99, RspCode > 9000): a read is unavailable, a change unknown.
        for code in ["-6", "-99", "9001"] {
            assert!(matches!(
                platform_error(code, "", false),
                CarrierError::Transient(_)
            ));
            assert!(matches!(
                platform_error(code, "", true),
                CarrierError::OutcomeUnknown(_)
            ));
        }
    }

    #[test]
    fn a_change_refused_with_the_window_or_an_unpublished_code_is_deferred() {
        let deferred = |e: CarrierError, want: &str| matches!(e, CarrierError::Deferred { ref code, retry_after: None, .. } if code == want);
        // The account's window code, whatever it is (a published one too).
        assert!(deferred(
            change_refusal("-9001", "x", Some("-9001")),
            "-9001"
        ));
        assert!(deferred(change_refusal("-7", "x", Some(" -7 ")), "-7"));
        // Unpublished codes: deferred, never final, with or without a window setting.
        for code in ["-6", "-99", "9001", "<code>"] {
            assert!(deferred(change_refusal(code, "", None), code), "{code}");
            assert!(deferred(change_refusal(code, "", Some("-9001")), code));
        }
        // Published codes keep their mapping.
        for (code, _) in ERROR_CODES {
            assert_eq!(
                change_refusal(code, "m", None),
                platform_error(code, "m", true)
            );
        }
        assert_eq!(
            change_refusal(REBIND_REFUSED, "业务校验失败", Some("-9001")),
            CarrierError::Rejected {
                code: "-5".into(),
                message: "业务校验失败".into()
            }
        );
    }

    #[test]
    fn an_imei_rerecord_reply_is_read_in_its_published_shape() {
        assert_eq!(
            rebind_answer(
                r#"{"Response":{"RspType":"0","RspCode":"0000","RspDesc":"成功接收消息"},"GROUP_TRANSACTIONID":"1000000190202103293055805587"}"#
            ),
            ChangeAnswer::Accepted {
                transaction_id: Some("1000000190202103293055805587".into())
            }
        );
        assert_eq!(
            rebind_answer(
                r#"{"Response":{"RspType":"1","RspCode":"-5","RspDesc":"业务校验失败"}}"#
            ),
            ChangeAnswer::Refused {
                code: "-5".into(),
                message: "业务校验失败".into()
            }
        );
        // The common refusal envelope (credentials, sign) and a text refusal.
        assert_eq!(
            rebind_answer(r#"{"resultCode":"-3","resultMsg":"sign参数值错误"}"#),
            ChangeAnswer::Refused {
                code: "-3".into(),
                message: "sign参数值错误".into()
            }
        );
        assert!(matches!(
            rebind_answer("-4：iccid号码错误或不存在"),
            ChangeAnswer::Refused { ref code, .. } if code == "-4"
        ));
        // RspType 0 with a non-zero RspCode, RspType 1 without one, garbage: unexplained.
        for body in [
            r#"{"Response":{"RspType":"0","RspCode":"0001"}}"#,
            r#"{"Response":{"RspType":"1"}}"#,
            r#"{"Response":{"RspType":"2","RspCode":"0000"}}"#,
            "<html>oops",
            "",
        ] {
            assert!(
                matches!(rebind_answer(body), ChangeAnswer::Unrecognised(_)),
                "{body}"
            );
        }
    }

    #[test]
    fn imei_rerecord_signs_action_not_bind_type_or_imei() {
        for (param, signed) in [
            ("method", true),
            ("user_id", true),
            ("access_number", true),
            ("iccid", true),
            ("action", true),
            ("bind_type", false),
            ("imei", false),
        ] {
            assert_eq!(is_signed(M_IMEI_RERECORD, param, false), signed, "{param}");
        }
        assert!(!is_signed(M_DISABLE, "action", false));
        assert_eq!(
            ImeiReRecordForm::default(),
            ImeiReRecordForm::QueryAccessNumber
        );
        assert_eq!(ImeiReRecordForm::QueryAccessNumber.path(), QUERY_PATH);
        assert_eq!(
            ImeiReRecordForm::ServiceAcceptIccid.path(),
            SERVICE_ACCEPT_PATH
        );
    }

    #[test]
    fn traffic_units_parse_and_format() {
        assert_eq!(parse_mb("0.00MB"), Some(0));
        assert_eq!(parse_mb("1.00MB"), Some(MIB));
        assert_eq!(parse_mb("2.5MB"), Some(2 * MIB + MIB / 2));
        assert_eq!(
            parse_mb("42118.59MB"),
            Some(42118 * MIB + (59 * MIB + 50) / 100)
        );
        for bad in ["", "MB", "1.234MB", "1.00", "-1.00MB", "1,00MB", "1.00KB"] {
            assert_eq!(parse_mb(bad), None, "{bad}");
        }
        assert_eq!(format_mb(0), "0.00MB");
        assert_eq!(format_mb(3 * MIB), "3.00MB");
        for bytes in [0, MIB, 7 * MIB, 123 * MIB + MIB / 4] {
            assert_eq!(parse_mb(&format_mb(bytes)), Some(bytes));
        }
    }

    #[test]
    fn envelopes_parse_as_public_clients_show_them() {
        let xml = "<root><web:NEW_DATA_TICKET_QRsp xmlns:web=\"http://www.example.org/webservice\"><CHARGE_CNT_CH>0元</CHARGE_CNT_CH><DURATION_CNT_CH></DURATION_CNT_CH><IRESULT>0</IRESULT><TOTALCOUNT></TOTALCOUNT><TOTALPAGE></TOTALPAGE><TOTAL_BYTES_CNT>1.50MB</TOTAL_BYTES_CNT><GROUP_TRANSACTIONID>1000000190201909030824413635</GROUP_TRANSACTIONID><number>1410028214051</number></web:NEW_DATA_TICKET_QRsp></root>";
        let t: TrafficRoot = parse_xml(xml, M_TRAFFIC, false).unwrap();
        assert_eq!(t.rsp.iresult, "0");
        assert_eq!(parse_mb(&t.rsp.total_bytes_cnt), Some(MIB + MIB / 2));

        // A refusal in JSON where XML was expected is the refusal, not a malformed body.
        let r = parse_xml::<TrafficRoot>(
            r#"{"resultCode":"-3","resultMsg":"sign"}"#,
            M_TRAFFIC,
            false,
        );
        assert_eq!(
            r.unwrap_err(),
            CarrierError::Rejected {
                code: "-3".into(),
                message: "sign".into()
            }
        );
        // ... and so is one in text, `<code>：<message>`.
        let r = parse_xml::<TrafficRoot>("-4：iccid号码错误或不存在", M_TRAFFIC, false);
        assert!(matches!(r, Err(CarrierError::Rejected { ref code, .. }) if code == "-4"));
        let r = parse_json::<StatusReply>(r#"{"RESULT":"101004","SMSG":"busy"}"#, M_STATUS, false);
        assert_eq!(
            r.unwrap_err(),
            CarrierError::RateLimited { retry_after: None }
        );
        assert!(matches!(
            parse_json::<StatusReply>("garbage", M_STATUS, false),
            Err(CarrierError::Transient(_))
        ));
    }

    #[test]
    fn a_change_reply_is_read_in_every_published_form() {
        let accepted = |body: &str| matches!(change_answer(body), ChangeAnswer::Accepted { .. });
        assert!(accepted("<businessServiceResponse><RspType>0</RspType><result>0</result><resultMsg>处理成功！</resultMsg><GROUP_TRANSACTIONID>1</GROUP_TRANSACTIONID></businessServiceResponse>"));
        assert!(accepted("<x><businessServiceResponse><RspType>0</RspType><result>0</result></businessServiceResponse></x>"));
        assert!(accepted(
            r#"{"RspType":"0","result":"0","resultMsg":"处理成功！"}"#
        ));
        assert!(accepted(
            r#"{"result":"0","resultMsg":"ok","GROUP_TRANSACTIONID":"1"}"#
        ));
        // The transaction id is kept (trimmed) for the receipt, in every form that has one.
        let id = |body: &str| match change_answer(body) {
            ChangeAnswer::Accepted { transaction_id } => transaction_id,
            other => panic!("{body}: {other:?}"),
        };
        assert_eq!(
            id("<businessServiceResponse><RspType>0</RspType><result>0</result><GROUP_TRANSACTIONID> 1000000190202004162026784683 </GROUP_TRANSACTIONID></businessServiceResponse>").as_deref(),
            Some("1000000190202004162026784683")
        );
        assert_eq!(
            id(r#"{"result":"0","GROUP_TRANSACTIONID":"7"}"#).as_deref(),
            Some("7")
        );
        assert_eq!(id(r#"{"RspType":"0","GROUP_TRANSACTIONID":""}"#), None);
        assert_eq!(receipt(Some("7".into())), Receipt::applied_as("7"));
        assert_eq!(receipt(None), Receipt::applied());
        assert_eq!(
            change_answer(r#"{"RspType":"1","result":"1999","resultMsg":"x"}"#),
            ChangeAnswer::Refused {
                code: "1999".into(),
                message: "x".into()
            }
        );
        assert_eq!(
            change_answer("-5：已经订购该产品，请不要重复订购。"),
            ChangeAnswer::Refused {
                code: "-5".into(),
                message: "已经订购该产品，请不要重复订购。".into()
            }
        );
        // The old guess (IMEIReRecord's shape) says RspType 0 but no result: accepted too, as
        // the field set reads it; a 流水号 text and garbage are unrecognised, never success.
        for body in [
            "业务受理成功，流水号：1000000190",
            "<html>oops",
            "",
            r#"{"RspType":"1"}"#,
        ] {
            assert!(
                matches!(change_answer(body), ChangeAnswer::Unrecognised(_)),
                "{body}"
            );
        }
    }

    #[test]
    fn platform_times_are_beijing_time() {
        let t = parse_time("2026-11-25 10:00:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-25T02:00:00+00:00");
        assert_eq!(parse_time(""), None);
        assert_eq!(
            parse_time("20261125100000").map(|t| t.to_rfc3339()),
            Some("2026-11-25T02:00:00+00:00".into())
        );
        assert_eq!(parse_time("<time>"), None);
    }
}
