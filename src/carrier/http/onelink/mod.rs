//! China Mobile OneLink (EC API v5), one folder: the adapter behind [`Carrier`] (here), its
//! wire terms (`wire`: envelope, codes, formats, and one parse function per reply), its token
//! and transaction ids (`auth`) and its wire simulator (`simulator`). Evidence:
//! `shared/domain/carrier-wire/onelink.md` (the dossier, cited by section and source key);
//! golden fixtures from it in `tests/fixtures/carrier-wire/onelink/` (see its INDEX.md).
//!
//! Transport (§0.2, DISPUTED, two per-account settings): `/get/token` is sent as
//! [`OneLinkConfig::token_method`] (default GET with a query string: every source but
//! [SIMCTL], which POSTs JSON); every other call as [`OneLinkConfig::request_method`] (default
//! GET, the most common, 4 clients: [MEH], [SMOC], [ESIM7], [WX]; POST JSON in 3: [IOTOS],
//! [PHP], [SIMCTL]; note that the only doc text copied by a client, [PHP]'s, says "get/token
//! GET, others POST"). In GET mode every parameter is a string in the query string, so a URL
//! may carry the password or the token: no URL is ever logged or put in an error.
//! Every call but the token carries `transid` (appid + yyyyMMddHHmmss + 8 digits, §0.3) and
//! `token`; the card is named by `iccid` (one of msisdn/iccid/imsi, §0.3).
//!
//! Per-account settings for disputed or unknown facts (each documented on its field):
//! `token_method`, `request_method` (§0.2); `repeat_window_code` (§3, §10: no code published;
//! default none); `bind_test_type` (§7.1, default `0`); `bind_tac_digits` (§7.2, default 14);
//! `sim_imei_reports` (§2.9 vs [IOTOS], default `device`); `batch_result_key` (§4.1, default
//! `jobId`).
//!
//! Calls, and what is still unknown about each:
//! - `/get/token` (§1; appid, password, transid): `result[0].token`, `result[0].ttl` (seconds).
//!   `12022` (wrong credentials) is Rejected, reseller evidence only ([COTONDA]); any other
//!   refusal is unavailable. Unknown: the real token lifetime (2 h per [COTONDA], clients cache
//!   30-55 min: `ttl` is honoured, and `12021` answered by one new token and one resend, §0.5)
//!   and China Mobile's own code for bad credentials.
//! - `/query/sim-status` (§2.1, §8): `cardStatus`, CT and PB codes ([`codes::CARD_STATUS`]) —
//!   `card()`, `cancel()` (only 9 已销户 / PB 04 销号 confirm), `onboard()` (PB 99 = no such
//!   card), and the re-read after a change. Unknown: whether `cardStatus` is ever a JSON number
//!   (then read as its text, CT table); what PB 01/05/06 do to service (names only); the
//!   format of `lastChangeDate` (not read).
//! - `/query/sim-data-usage` (§2.3): `dataAmount`, KB this month; blank = 0 ([SMOC]); the
//!   [YZ-PARSE] shape `dataAmountList[0].dataAmount` when `dataAmount` is absent — `card()`,
//!   and `cards()` for a card the monthly batch gives no figure for. Timing (doc text, [PHP]
//!   CMIOT_API25U04, [THL]): "PB号段为截至前一天24点流量，CT号段为实时流量" — a card on the
//!   OneLink-PB platform reads up to yesterday 24:00, one on OneLink-CT in real time (which a
//!   card is on: `/query/sim-platform/batch`, not called). Unknown: nothing beyond that.
//! - `/query/sim-session` (§2.6): the newest `simSessionList[].createDate` — `card()`. Field
//!   names confirmed ([IOTOS], [ESIM7]); unknown: the `createDate` format (both dossier
//!   formats are read, otherwise the last session is `Unknown`, never "never") and whether an
//!   offline (`00`) entry carries the last session's time.
//! - `/query/sim-basic-info` (§2.2): `imsi`, `msisdn` ([PHP]), `activeDate`
//!   (`yyyy-MM-dd HH:mm:ss`, [WX]; [MEH]'s `activateDate` read when it is absent), `openDate`
//!   — [`OneLink::basic_info`], `msisdn_of()`, the msisdn for `binding()`. Unknown: the `openDate` format (an unreadable date is that
//!   field unavailable, not the call) and the time zone (Beijing, an inference).
//! - `/change/sim-status` (§3; operType 0 stop, 1 restart, as strings) — `stop()`,
//!   `restore()`. The reply is DISPUTED: `result[0].iccid` echoed ([PHP], [SIMCTL], [MEH]) is
//!   proof → `Receipt::applied()`; `result[0].orderNum` ([GOSDK]) is an order the platform
//!   took → `Receipt::in_progress(orderNum)`, settled by the journal with `order()`; a reply
//!   with neither (no record, another card) is not proof and the card is read again (target
//!   state → applied, else `OutcomeUnknown`). A refusal: `11011` is final; the account's
//!   [`OneLinkConfig::repeat_window_code`] is `Deferred` (retry_after None: the journal waits
//!   out the account's window); any other code is not published for this call, so the card is
//!   read again: target state → applied (a refused change to the state the card is in),
//!   released → `CARD_CANCELLED`, else `Deferred` ("read the state, retry later", never final).
//!   Unknown: the repeat-window code and the window itself (30 min [PHP] vs 3 min [THL]),
//!   `13012` ([GOSDK] checks it; meaning not found), whether an identifier-only reply can also
//!   be asynchronous.
//! - `/query/order-info` (§3.1, CMIOT_API23M27; `orderNum` only: [IOTOS] InquireEcV5.java
//!   `orderInfo`, [SMOC] 25110956416) — `order()`: `status` completed → Completed; failed,
//!   aborted, cancelled → Failed(word); acknowledged, ready, future, inProgress, amending,
//!   suspended, cancelling → Open(word) ([SMOC] 25165314112); an unlisted word → Open(word)
//!   and a warning, never a guessed outcome. `statusDate`/`createDate` (yyyyMMddHHmmss,
//!   [SMOC]) are tolerated absent or unreadable; an answer naming another `orderNum` is
//!   unavailable. Orders are kept 60 days ([SMOC] 25110956416): an older order's refusal code
//!   is not found (read as unavailable, like every unpublished code of a read), so the journal
//!   must settle well within that.
//! - `/query/card-bind-status` (§7.1, CMIOT_API23A04; `msisdn` only, `testType`) and
//!   `/query/sim-imei` (§2.9, CMIOT_API23S04; `result[0].imei`) — `binding()`. The card's
//!   msisdn is simgate's record (`AccountCtx::numbers`), else `/query/sim-basic-info`'s
//!   `msisdn` (§2.2), kept for the process; none → `NO_MSISDN` (ours), nothing sent.
//!   `testType` is [`OneLinkConfig::bind_test_type`] (default `0` 话单侧, the only one with
//!   `sepTime`). `result` 0 已分离 → separated, `sepTime` → separated_since (format not
//!   found: both dossier formats read, otherwise None); 1 未分离; 2 查询失败 → Transient with
//!   `errorCode`/`errorDes`; anything else unavailable. DISPUTED meaning of sim-imei: 单卡绑定
//!   IMEI实时查询 ([PHP]: the bound IMEI) vs 单卡实时使用终端IMEI查询 ([IOTOS] InquireEcV5.java
//!   `querySimImei`: the device in use) — [`OneLinkConfig::sim_imei_reports`], default
//!   `device`; `bound` is inferred (separated, or an IMEI reported under [PHP]'s reading).
//!   Unknown: whether 未分离 means bound-and-in-place or unbound (read: not known to be
//!   bound), the errorCode values, the sepTime format.
//! - `/operate/card-bind-by-bill` (§7.2, CMIOT_API23A05, [PHP]; by `iccid`, "one identifier")
//!   — `rebind()`: Unbind → operType 2; CurrentDevice → operType 1, bindingStyle 0
//!   (首话单自动绑定); Imei → operType 1, bindingStyle 1, `tac` = the first
//!   [`OneLinkConfig::bind_tac_digits`] digits (8-14, default 14). A TAC binds every IMEI that
//!   starts with it (人工录入IMEI段, 一对多): 14 digits is one IMEI's body, fewer a wider range.
//!   The reply body is **not found**: status 0 → applied, or in progress when a record carries
//!   an `orderNum`; refusals as for `/change/sim-status` but with no state re-read
//!   (`Deferred`), except a refused CurrentDevice for a card sim-imei reports in no device:
//!   `NO_DEVICE` (ours, final: there is nothing to bind to).
//!   Repeat window 30 min ([PHP]).
//! - `/query/sim-stop-reason` (§2.7): `stopReason`, 12 positions of 0/2 —
//!   [`OneLink::stop_reason_flags`], and the trait's `stop_reasons()` with simgate's reasons
//!   only (position 1 Expired, 2 机卡分离 DeviceMismatch, 5 Arrears, 9 Manual). Unknown:
//!   positions 3, 6, 7, 8, 12; `platformType` not read.
//! - `/query/sim-real-name-status` (§2.8): `realNameStatus` "1" = registered, blank or missing
//!   = unavailable, any other value = not registered (the clients' convention, [SIMCTL] L109,
//!   [WX]) — [`OneLink::real_name_registered`]. Unknown: the values other than "1".
//! - `/query/group-data-usage` (§6; groupId): a pool's usage this month —
//!   [`OneLink::group_data_usage`]. Unknown: the whole reply; `useAmount` in KB is a guess.
//!
//! Batch calls (§4, §4.1, §5.1-5.3): every one takes at most 100 cards ([`codes::BATCH_LIMIT`];
//! more, or a daily date out of range, is refused before sending with our
//! `BATCH_REFUSED_LOCALLY`), their ids `_`-joined, refusals as for the single reads.
//! - `/query/sim-data-usage-monthly/batch` (§5.2, CMIOT_API25U03; `iccids`, `queryDate` =
//!   this month yyyyMM in Beijing time) — `cards()` ([`Carrier::batch_limit`] 100) and
//!   [`OneLink::monthly_usage`]. Its data runs **up to yesterday** ("current month up to
//!   yesterday", [PHP]) for every card: the usage sync's usage-limit stops can come up to a day
//!   late on OneLink. `dataAmountList[]` items (KB → bytes; blank = 0) carry `iccid`, `msisdn`
//!   or `imsi`: an item is the card's by its `iccid`, else by its `msisdn` through a number
//!   simgate already has (kept or stored; a usage read spends no number lookup); `imsi` alone
//!   names no card (simgate keeps none). Two shapes, both read: [GOSDK]'s
//!   `result[]{deadLine, dataAmountList[…]}` and the items directly in `result[]` (`deadLine`
//!   not read: format not found). A card absent from the answer: "dataAmount为0则不返回" is said
//!   of `apnDataAmountList` only, so absence is not read as zero: that card's usage is read
//!   alone with `/query/sim-data-usage` (real time for CT numbers). A batch refused `11011`
//!   (not saying which card) is read card by card.
//!   The state comes from `/query/sim-status` card by card: the dossier has **no batch status
//!   call** (`/query/sim-platform/batch` answers the platform, not the state). `last_session` is
//!   `Unknown` in `cards()` readings: the session call is left out of the batch read (the sync
//!   does not use it; `card()` still reads it). Calls per 100 cards: 1 + 100.
//! - `/query/sim-data-usage-daily/batch` (§5.1, CMIOT_API25U01; `queryDate` yyyyMMdd, one of
//!   the 7 days before today) — [`OneLink::daily_usage`]; same items; a card absent has no
//!   figure for that day.
//! - `/query/sim-card-info/batch` (§5.3, CMIOT_API25S05; `iccids` → per card `{status,
//!   message, msisdn, iccid, imsi}`, [GOSDK]) — [`OneLink::card_info`], and the access numbers
//!   the batch change names cards by: kept first (`KnownNumbers`), else simgate's stored
//!   number (`AccountCtx::stored_number`), else this call for the cards still missing, and
//!   kept: a card's number costs at most one lookup per process. A record with a `status`
//!   other than 0, or naming a card not asked for, gives no number.
//! - `/change/sim-status/batch` (§4, CMIOT_API23S06) — `change_batch()`
//!   ([`Carrier::batch_change_limit`] 100): Stop → operType 9 (已激活→已停机), Restore → 11
//!   (已停机→已激活), `reason` 01 (主动停复机), `msisdns` `_`-joined; nothing else is batched
//!   (refused `BATCH_NOT_SUPPORTED`). `result[0].jobId` → `BatchReceipt`; status 0 without a
//!   jobId is `OutcomeUnknown`. Any refusal is an unexplained batch failure — "one card inside
//!   its repeat window fails the whole batch" ([PHP]) and the reply need not say which; the
//!   code is not found — so `Deferred` with the platform's code: nothing is known changed and
//!   the journal falls back to single changes. A card with no number: `NO_MSISDN`, nothing
//!   sent. Transport errors as for a change (`OutcomeUnknown` once sent).
//! - `/query/sim-batch-result` (§4.1, CMIOT_API23M10) — `batch_job()`: the job id under
//!   [`OneLinkConfig::batch_result_key`] (DISPUTED `jobId` / `orderNum`). `jobStatus` 0 待处理,
//!   1 处理中 → not finished; 2 处理完成, 3 包含有处理失败记录的处理完成, 4 处理失败 → finished;
//!   an unlisted value → not finished and a warning, never a guessed outcome.
//!   `resultList[]{resultType, resultId, status, message}`: resultType 1 names an msisdn,
//!   mapped back to the job's card through its number (other types, not published, are
//!   ignored with a warning); item status 0 → Applied, any other → Failed with it and the
//!   message (per-item codes not found); blank → not read. A card not listed is Open while the
//!   job runs and left out once it is over (the journal reads its state).
//!
//! Failing safe where the dossier is silent: an envelope code not listed is, for a read,
//! unavailable (Transient, "unavailable: status X, message Y"), for a change `Deferred` after
//! reading the card (above), never final. HTTP errors (no HTTP-level facts are published): for a read, 429
//! is RateLimited and every other non-2xx Transient; for a change, 429 RateLimited, 502/503
//! Transient (a gateway answered before the platform), every other (500, 504, 4xx)
//! OutcomeUnknown. The rate-limit code of v5 and its figure are unknown (v2 used `71`).

pub mod auth;
pub mod simulator;
pub mod wire;

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{client, malformed, retry_after, send_error, HttpTimeouts, Secret};
use crate::carrier::platform::{AccountCtx, WirePlatform};
use crate::carrier::{
    BatchItem, BatchJob, BatchReceipt, Binding, Carrier, CarrierCard, CarrierError, Change,
    OnboardCard, OrderProgress, Rebind, Receipt, ServiceState,
};
use crate::domain::{CarrierId, Iccid, StopReasons};

/// How a OneLink call is sent (dossier §0.2, DISPUTED).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpMethod {
    /// Every parameter a string in the query string.
    #[default]
    Get,
    /// The parameters as a JSON object in the body.
    Post,
}

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
    /// How `/get/token` is sent: `"get"` (default; every source except one: [IOTOS] EcV5Api
    /// L66-84, [PHP] `getToken()`, [MEH], [WX], [SMOC], [ESIM7] and three more) or `"post"`
    /// (JSON, [SIMCTL] mobile.go L31-65). Dossier §0.2.
    #[serde(default)]
    pub token_method: HttpMethod,
    /// How every other call is sent: `"get"` (default, the most common: [MEH] index.ts L186,
    /// [SMOC], [ESIM7], [WX]) or `"post"` with a JSON body ([IOTOS] EcV5Api L113-117, [PHP]
    /// `fetchApi()`, [SIMCTL]). The only doc text a client copies ([PHP]) says POST; the
    /// default follows the "most common" rule (4:3). Dossier §0.2.
    #[serde(default)]
    pub request_method: HttpMethod,
    /// The envelope `status` your platform answers a change inside its repeat window with
    /// (同一卡号30分钟内不能重复办理, §3: 30 min [PHP] vs 3 min [THL], DISPUTED; the code is
    /// **not found**, §3, §10). Default none: set it when you learn the code your platform
    /// answers. A change refused with it is `Deferred` at once (the journal waits out the
    /// account's window, the account-level `repeat_window_s`, 30 min by default for OneLink);
    /// without it such a refusal is an unrecognised code: the card is read and the change is
    /// `Deferred` all the same (or done, if the card is already in the target state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_window_code: Option<String>,
    /// `testType` of `/query/card-bind-status` (§7.1): `0` 话单侧检测 (default: the only one
    /// that gives `sepTime`, the time of separation) or `1` 网络侧检测.
    #[serde(default = "default_bind_test_type")]
    pub bind_test_type: String,
    /// How many leading digits of an IMEI `/operate/card-bind-by-bill` sends as `tac` when
    /// binding to an IMEI (§7.2: "first 8–14 digits of the IMEI range"; 8 to 14, default 14).
    /// A TAC binds a *range*: every IMEI starting with those digits (人工录入IMEI段, 一对多),
    /// so 14 is the narrowest the platform takes (one IMEI's 14 digits before its check digit).
    #[serde(default = "default_bind_tac_digits")]
    pub bind_tac_digits: usize,
    /// What `/query/sim-imei` (CMIOT_API23S04) reports, DISPUTED: `"device"` (default), the
    /// IMEI of the device the card is in ([IOTOS] InquireEcV5.java `querySimImei`:
    /// "单卡实时使用终端IMEI查询", the later doc numbering 5.1.6), or `"binding"`, the IMEI the
    /// card is bound to ([PHP] CMIOT_API23S04: "单卡绑定IMEI实时查询"). One source each. It
    /// decides `Binding::bound`: with `"binding"` an IMEI reported means bound; with
    /// `"device"` only a separation (已分离) shows a binding.
    #[serde(default)]
    pub sim_imei_reports: ImeiReading,
    /// The key `/query/sim-batch-result` (§4.1, CMIOT_API23M10) takes the batch job's id
    /// under, DISPUTED: `"jobId"` (default: [PHP] CMIOT_API23M10 and [SMOC] 25110956416
    /// `&jobId=`, and the doc text) or `"orderNum"` ([IOTOS] InquireEcV5.java L43-47).
    #[serde(default)]
    pub batch_result_key: BatchResultKey,
}

/// The key of `/query/sim-batch-result` (see [`OneLinkConfig::batch_result_key`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum BatchResultKey {
    /// [PHP], [SMOC]: two sources and the doc text.
    #[default]
    #[serde(rename = "jobId")]
    JobId,
    /// [IOTOS].
    #[serde(rename = "orderNum")]
    OrderNum,
}

impl BatchResultKey {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchResultKey::JobId => "jobId",
            BatchResultKey::OrderNum => "orderNum",
        }
    }
}

/// What `/query/sim-imei` reports (see [`OneLinkConfig::sim_imei_reports`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImeiReading {
    /// The device the card is in ([IOTOS]).
    #[default]
    Device,
    /// The IMEI the card is bound to ([PHP]).
    Binding,
}

fn default_bind_test_type() -> String {
    codes::TEST_TYPE_BILL.to_string()
}

fn default_bind_tac_digits() -> usize {
    *codes::TAC_DIGITS.end()
}

use auth::Token;
pub use wire::{
    beijing_day, beijing_time, codes, daily_day_in_range, day_query_date, join_ids, kb_to_bytes,
    month_query_date, parse_basic_info, parse_batch_receipt, parse_batch_result, parse_batch_usage,
    parse_bind_status, parse_card_info, parse_card_status, parse_change_reply, parse_data_usage,
    parse_envelope, parse_group_usage, parse_imei, parse_last_session, parse_order_info,
    parse_real_name, parse_rebind_reply, parse_stop_reason, parse_stop_reasons, parse_token,
    split_ids, BasicInfo, BatchResult, BatchResultItem, BindStatus, CardInfo, ChangeReply,
    Envelope, OneLinkStopReasons, OrderInfo, PlatformStopReason, UsageItem, WireDate,
    BEIJING_FORMAT, COMPACT_FORMAT,
};
use wire::{first_record, text};

/// Why one exchange failed, before the token retry decides.
enum Failure {
    TokenInvalid,
    /// The platform answered with an envelope code other than 0 and 12021.
    Refused {
        code: String,
        message: String,
    },
    Carrier(CarrierError),
}

/// A call's answer after the token retry: its records, or the platform's refusal of it (what
/// that means depends on the call: see [`OneLink::read`] and [`OneLink::change`]).
enum Answer {
    Records(Vec<Value>),
    Refused { code: String, message: String },
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
            token_method: HttpMethod::default(),
            request_method: HttpMethod::default(),
            repeat_window_code: None,
            bind_test_type: default_bind_test_type(),
            bind_tac_digits: default_bind_tac_digits(),
            sim_imei_reports: ImeiReading::default(),
            batch_result_key: BatchResultKey::default(),
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
    token_method: HttpMethod,
    request_method: HttpMethod,
    http: reqwest::Client,
    /// An async lock so that concurrent calls after expiry share one `/get/token`.
    token: tokio::sync::Mutex<Option<Token>>,
    seq: AtomicU32,
    repeat_window_code: Option<String>,
    bind_test_type: String,
    bind_tac_digits: usize,
    sim_imei_reports: ImeiReading,
    batch_result_key: BatchResultKey,
    /// What dates the batch usage queries (`queryDate`): the wall clock, or a test's.
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    /// Access numbers already found (simgate's record of the card, else
    /// `/query/sim-basic-info`), so each card's is looked up once per process.
    numbers: crate::carrier::platform::KnownNumbers,
}

/// An HTTP status without a usable envelope. No HTTP-level facts are published for OneLink,
/// so this fails safe: a read is unavailable (429 excepted); a change is unknown unless a
/// gateway said it never reached the platform (502, 503). The shared `status_error` would
/// call a 500 or a 4xx a refusal, which for a change may hide an applied one.
fn http_status_error(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    changes: bool,
) -> CarrierError {
    match status.as_u16() {
        429 => CarrierError::RateLimited { retry_after },
        502 | 503 if changes => {
            CarrierError::Transient(format!("platform unavailable: HTTP {status}"))
        }
        _ if changes => CarrierError::OutcomeUnknown(format!(
            "HTTP {status} to a change: it may have been applied"
        )),
        _ => CarrierError::Transient(format!("platform unavailable: HTTP {status}")),
    }
}

impl OneLink {
    pub fn new(cfg: &OneLinkConfig, ctx: AccountCtx) -> Result<OneLink, String> {
        if cfg.appid.is_empty() {
            return Err("appid is required".into());
        }
        url::Url::parse(&cfg.base_url).map_err(|e| format!("base_url is not a URL: {e}"))?;
        if ![codes::TEST_TYPE_BILL, codes::TEST_TYPE_NETWORK].contains(&cfg.bind_test_type.as_str())
        {
            return Err(format!(
                "bind_test_type must be \"0\" (话单侧) or \"1\" (网络侧), got {:?}",
                cfg.bind_test_type
            ));
        }
        if !codes::TAC_DIGITS.contains(&cfg.bind_tac_digits) {
            return Err(format!(
                "bind_tac_digits must be 8 to 14, got {}",
                cfg.bind_tac_digits
            ));
        }
        let repeat_window_code = cfg
            .repeat_window_code
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        if repeat_window_code
            .as_deref()
            .is_some_and(|c| [codes::OK, codes::TOKEN_INVALID, codes::CARD_UNKNOWN].contains(&c))
        {
            return Err("repeat_window_code must not be 0, 12021 or 11011".into());
        }
        Ok(OneLink {
            ctx,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            appid: cfg.appid.clone(),
            password: cfg.password.clone(),
            token_method: cfg.token_method,
            request_method: cfg.request_method,
            http: client(&cfg.timeouts)?,
            token: tokio::sync::Mutex::new(None),
            seq: AtomicU32::new(0),
            repeat_window_code,
            bind_test_type: cfg.bind_test_type.clone(),
            bind_tac_digits: cfg.bind_tac_digits,
            sim_imei_reports: cfg.sim_imei_reports,
            batch_result_key: cfg.batch_result_key,
            clock: std::sync::Arc::new(crate::clock::SystemClock),
            numbers: Default::default(),
        })
    }

    /// This adapter with `queryDate` taken from `clock` instead of the wall clock (a test
    /// whose simulated platform runs on a clock of its own).
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn crate::clock::Clock>) -> OneLink {
        self.clock = clock;
        self
    }

    /// One request and its envelope; `result` on status "0".
    async fn exchange(
        &self,
        path: &'static str,
        params: &Map<String, Value>,
        method: HttpMethod,
        changes: bool,
    ) -> Result<Vec<Value>, Failure> {
        self.ctx.budget.spend(path).await;
        let url = format!("{}{path}", self.base_url);
        let request = match method {
            HttpMethod::Get => {
                let query: Vec<(&str, String)> = params
                    .iter()
                    .map(|(k, v)| (k.as_str(), text(v).unwrap_or_default()))
                    .collect();
                self.http.get(url).query(&query)
            }
            HttpMethod::Post => self.http.post(url).json(params),
        };
        // `send_error` drops the URL: in GET mode it carries the password or the token.
        let resp = request
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
            return Err(Failure::Carrier(http_status_error(status, wait, changes)));
        }
        let env = parse_envelope(&bytes)
            .map_err(|e| Failure::Carrier(malformed(&format!("{path}: {e}"), changes)))?;
        match env.status.as_str() {
            codes::OK => Ok(env.result),
            codes::TOKEN_INVALID => Err(Failure::TokenInvalid),
            _ => Err(Failure::Refused {
                code: env.status,
                message: env.message,
            }),
        }
    }

    /// A call with the token, retried once with a new token if the platform refuses it. Err
    /// is final (transport, token); the platform's refusal of the call itself is an Answer.
    async fn call(
        &self,
        path: &'static str,
        mut params: Map<String, Value>,
        changes: bool,
    ) -> Result<Answer, CarrierError> {
        let mut stale: Option<String> = None;
        for _ in 0..2 {
            let token = self.token(stale.as_deref()).await?;
            params.insert("transid".into(), json!(self.transid()));
            params.insert("token".into(), json!(token));
            match self
                .exchange(path, &params, self.request_method, changes)
                .await
            {
                Ok(r) => return Ok(Answer::Records(r)),
                // A refused token is checked before anything is applied: safe to resend.
                Err(Failure::TokenInvalid) => stale = Some(token),
                Err(Failure::Refused { code, message }) => {
                    return Ok(Answer::Refused { code, message })
                }
                Err(Failure::Carrier(e)) => return Err(e),
            }
        }
        Err(CarrierError::Rejected {
            code: codes::TOKEN_INVALID.into(),
            message: "the platform refused a freshly issued token".into(),
        })
    }

    /// A read: `11011` (no such card) is a refusal; every other code is not published for
    /// reads, so the answer is unavailable.
    async fn read(
        &self,
        path: &'static str,
        params: Map<String, Value>,
    ) -> Result<Vec<Value>, CarrierError> {
        match self.call(path, params, false).await? {
            Answer::Records(r) => Ok(r),
            Answer::Refused { code, message } if code == codes::CARD_UNKNOWN => {
                Err(CarrierError::Rejected { code, message })
            }
            Answer::Refused { code, message } => Err(CarrierError::Transient(format!(
                "{path} unavailable: status {code}, message {message}"
            ))),
        }
    }

    /// The first record of a card query.
    async fn query_card(
        &self,
        path: &'static str,
        iccid: &Iccid,
    ) -> Result<Map<String, Value>, CarrierError> {
        let mut p = Map::new();
        p.insert("iccid".into(), json!(iccid.as_str()));
        first_record(path, &self.read(path, p).await?)
    }

    /// `cardStatus` and what it means.
    async fn status(&self, iccid: &Iccid) -> Result<(String, ServiceState), CarrierError> {
        parse_card_status(&self.query_card("/query/sim-status", iccid).await?).map_err(
            |e| match e {
                CarrierError::Rejected { code, message } => CarrierError::Rejected {
                    code,
                    message: format!("{iccid}: {message}"),
                },
                e => e,
            },
        )
    }

    /// `/change/sim-status`, settled as the module doc says: an echo of the card is proof, an
    /// `orderNum` an order in progress; an answer with neither is settled by reading the card
    /// again, a refusal by [`OneLink::refused_change`].
    async fn change(
        &self,
        iccid: &Iccid,
        oper: &str,
        to: ServiceState,
    ) -> Result<Receipt, CarrierError> {
        let mut p = Map::new();
        p.insert("iccid".into(), json!(iccid.as_str()));
        p.insert("operType".into(), json!(oper));
        match self.call("/change/sim-status", p, true).await? {
            Answer::Records(result) => match parse_change_reply(&result, iccid.as_str()) {
                ChangeReply::Applied => Ok(Receipt::applied()),
                ChangeReply::Order { order_num } => Ok(Receipt::in_progress(Some(order_num))),
                ChangeReply::NotProof => self.confirm(iccid, to).await.map(|()| Receipt::applied()),
            },
            Answer::Refused { code, message } => {
                self.refused_change(iccid, Some(to), code, message).await
            }
        }
    }

    /// Reads the card after a change accepted without proof (status 0, no echo of the card, no
    /// `orderNum`): only the target state settles it; anything else is unknown.
    async fn confirm(&self, iccid: &Iccid, to: ServiceState) -> Result<(), CarrierError> {
        let why = "accepted without proof (no echo of the card, no orderNum)";
        match self.status(iccid).await {
            Ok((_, state)) if state == to => Ok(()),
            Ok((code, _)) => Err(CarrierError::OutcomeUnknown(format!(
                "{why}; {iccid} reads cardStatus {code}"
            ))),
            Err(e) => Err(CarrierError::OutcomeUnknown(format!(
                "{why}; {iccid} could not be read again: {e}"
            ))),
        }
    }

    /// A change the platform refused. `11011` is final (no such card); the account's
    /// `repeat_window_code` is `Deferred` at once. Any other code is not published for
    /// changes: where the change sets a state (`to`), the card is read again — already in the
    /// target state is success (the platform may refuse a change to the state the card is in),
    /// released is the certain refusal `CARD_CANCELLED`; otherwise, and for a binding change,
    /// `Deferred`: the platform said no, nothing is known to be applied, never final.
    async fn refused_change(
        &self,
        iccid: &Iccid,
        to: Option<ServiceState>,
        code: String,
        message: String,
    ) -> Result<Receipt, CarrierError> {
        if code == codes::CARD_UNKNOWN {
            return Err(CarrierError::Rejected { code, message });
        }
        let deferred = |message: String| CarrierError::Deferred {
            code: code.clone(),
            message,
            retry_after: None,
        };
        if self.repeat_window_code.as_deref() == Some(code.as_str()) {
            return Err(deferred(format!(
                "repeat window (同一卡号N分钟内不能重复办理): {message}"
            )));
        }
        let Some(to) = to else {
            return Err(deferred(format!("unrecognised refusal: {message}")));
        };
        match self.status(iccid).await {
            Ok((_, state)) if state == to => Ok(Receipt::applied()),
            // Certain whatever the platform's code was: a released card never comes back.
            Ok((read, _)) if codes::RELEASED.contains(&read.as_str()) => {
                Err(CarrierError::Rejected {
                    code: codes::CARD_CANCELLED.into(),
                    message: format!(
                        "{iccid} is cancelled at OneLink (cardStatus {read}); status {code}, message {message}"
                    ),
                })
            }
            Ok((read, _)) => Err(deferred(format!(
                "unrecognised refusal: {message}; {iccid} reads cardStatus {read}"
            ))),
            Err(e) => Err(deferred(format!(
                "unrecognised refusal: {message}; {iccid} could not be read again: {e}"
            ))),
        }
    }

    /// The access number `/query/card-bind-status` names the card by: kept, else simgate's
    /// record of the card (`AccountCtx::numbers`), else `/query/sim-basic-info`'s `msisdn`
    /// (§2.2, [PHP] CMIOT_API23S00). None anywhere: refused before anything is sent.
    async fn access_number(&self, iccid: &Iccid) -> Result<String, CarrierError> {
        let from_platform = async {
            self.basic_info(iccid)
                .await?
                .msisdn
                .ok_or_else(|| CarrierError::Rejected {
                    code: codes::NO_MSISDN.into(),
                    message: format!(
                        "{iccid}: no access number stored and none in /query/sim-basic-info; /query/card-bind-status names cards by msisdn only"
                    ),
                })
        };
        self.numbers.resolve(&self.ctx, iccid, from_platform).await
    }

    /// `/query/order-info` (§3.1) for `order_num`, as the platform answers it.
    pub async fn order_info(&self, order_num: &str) -> Result<OrderInfo, CarrierError> {
        let mut p = Map::new();
        p.insert("orderNum".into(), json!(order_num));
        let path = "/query/order-info";
        let info = parse_order_info(&first_record(path, &self.read(path, p).await?)?)?;
        // An answer about another order must not settle this one.
        if let Some(theirs) = info.order_num.as_deref().filter(|n| *n != order_num) {
            return Err(malformed(
                &format!("{path} answered for order {theirs}, not {order_num}"),
                false,
            ));
        }
        Ok(info)
    }

    /// `/query/card-bind-status` (§7.1) for the card, by its access number, with the
    /// account's `testType`.
    pub async fn bind_status(&self, iccid: &Iccid) -> Result<BindStatus, CarrierError> {
        let msisdn = self.access_number(iccid).await?;
        let mut p = Map::new();
        p.insert("msisdn".into(), json!(msisdn));
        p.insert("testType".into(), json!(self.bind_test_type));
        let path = "/query/card-bind-status";
        parse_bind_status(&first_record(path, &self.read(path, p).await?)?)
    }

    /// Whether the platform reports the card in no device: `/query/sim-imei` answers no IMEI
    /// and the account reads it as the device's ([`ImeiReading::Device`]). A failed read is
    /// "not known" (false).
    async fn in_no_device(&self, iccid: &Iccid) -> bool {
        self.sim_imei_reports == ImeiReading::Device && matches!(self.imei(iccid).await, Ok(None))
    }

    /// `/query/sim-imei` (§2.9): the IMEI the platform reports for the card (None: none).
    pub async fn imei(&self, iccid: &Iccid) -> Result<Option<String>, CarrierError> {
        Ok(parse_imei(
            &self.query_card("/query/sim-imei", iccid).await?,
        ))
    }

    /// The parameters of `/operate/card-bind-by-bill` (§7.2) for `rebind`, or the refusal of
    /// an IMEI that cannot give a TAC of `bind_tac_digits` digits (nothing is sent).
    fn rebind_params(
        &self,
        iccid: &Iccid,
        rebind: &Rebind,
    ) -> Result<Map<String, Value>, CarrierError> {
        let mut p = Map::new();
        p.insert("iccid".into(), json!(iccid.as_str()));
        match rebind {
            Rebind::Unbind => {
                p.insert("operType".into(), json!(codes::BIND_OPER_UNBIND));
            }
            Rebind::CurrentDevice => {
                p.insert("operType".into(), json!(codes::BIND_OPER_BIND));
                p.insert(
                    "bindingStyle".into(),
                    json!(codes::BINDING_STYLE_FIRST_BILL),
                );
            }
            Rebind::Imei(imei) => {
                let imei = imei.trim();
                if imei.len() < self.bind_tac_digits || !imei.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CarrierError::Rejected {
                        code: codes::IMEI_INVALID.into(),
                        message: format!(
                            "IMEI {imei:?} must be digits, at least {} of them (the TAC sent)",
                            self.bind_tac_digits
                        ),
                    });
                }
                p.insert("operType".into(), json!(codes::BIND_OPER_BIND));
                p.insert(
                    "bindingStyle".into(),
                    json!(codes::BINDING_STYLE_IMEI_RANGE),
                );
                p.insert("tac".into(), json!(&imei[..self.bind_tac_digits]));
            }
        }
        Ok(p)
    }

    /// `/query/sim-stop-reason` as the platform flags it: simgate's reasons and the platform's
    /// own (the trait's [`Carrier::stop_reasons`] keeps simgate's).
    pub async fn stop_reason_flags(
        &self,
        iccid: &Iccid,
    ) -> Result<OneLinkStopReasons, CarrierError> {
        parse_stop_reasons(&self.query_card("/query/sim-stop-reason", iccid).await?)
    }

    /// `/query/sim-real-name-status`: whether the card's real-name registration is done.
    pub async fn real_name_registered(&self, iccid: &Iccid) -> Result<bool, CarrierError> {
        parse_real_name(
            &self
                .query_card("/query/sim-real-name-status", iccid)
                .await?,
        )
    }

    /// `/query/sim-basic-info`: the card's IMSI, MSISDN and dates as the platform records them.
    pub async fn basic_info(&self, iccid: &Iccid) -> Result<BasicInfo, CarrierError> {
        Ok(parse_basic_info(
            &self.query_card("/query/sim-basic-info", iccid).await?,
        ))
    }

    /// A batch read (§5): `11011` and every other refusal as for [`OneLink::read`].
    async fn batch_read(
        &self,
        path: &'static str,
        iccids: &[Iccid],
        extra: &[(&str, String)],
    ) -> Result<Vec<Value>, CarrierError> {
        if iccids.len() > codes::BATCH_LIMIT {
            return Err(CarrierError::Rejected {
                code: codes::BATCH_REFUSED_LOCALLY.into(),
                message: format!(
                    "{path} takes at most {} cards, not {}",
                    codes::BATCH_LIMIT,
                    iccids.len()
                ),
            });
        }
        let mut p = Map::new();
        p.insert(
            "iccids".into(),
            json!(join_ids(iccids.iter().map(Iccid::as_str))),
        );
        for (k, v) in extra {
            p.insert((*k).into(), json!(v));
        }
        self.read(path, p).await
    }

    /// The batch usage items of `result` by card of `iccids`: by the item's `iccid`, else by
    /// its `msisdn` through the numbers simgate already has (kept or stored; no lookup is
    /// spent on a usage read). An item naming a card outside `iccids`, by an `imsi` only (simgate
    /// keeps no IMSIs), or with an unreadable `dataAmount` gives no figure.
    async fn usage_by_card(
        &self,
        iccids: &[Iccid],
        items: Vec<UsageItem>,
    ) -> Result<std::collections::HashMap<Iccid, u64>, CarrierError> {
        let mut out = std::collections::HashMap::new();
        let mut by_number: Option<std::collections::HashMap<String, Iccid>> = None;
        for item in items {
            let Some(bytes) = item.bytes else { continue };
            let by_iccid = item
                .iccid
                .as_deref()
                .and_then(|s| iccids.iter().find(|i| i.as_str().eq_ignore_ascii_case(s)));
            let card = match (by_iccid, item.msisdn.as_deref()) {
                (Some(i), _) => Some(i.clone()),
                (None, Some(m)) => {
                    if by_number.is_none() {
                        by_number = Some(self.known_numbers(iccids).await?);
                    }
                    by_number.as_ref().and_then(|n| n.get(m)).cloned()
                }
                (None, None) => None,
            };
            if let Some(card) = card {
                out.insert(card, bytes);
            }
        }
        Ok(out)
    }

    /// The numbers simgate already has for `iccids` (kept, else stored), number → card.
    async fn known_numbers(
        &self,
        iccids: &[Iccid],
    ) -> Result<std::collections::HashMap<String, Iccid>, CarrierError> {
        let mut out = std::collections::HashMap::new();
        for iccid in iccids {
            let n = match self.numbers.get(iccid) {
                Some(n) => Some(n),
                None => self.ctx.stored_number(iccid).await?,
            };
            if let Some(n) = n {
                out.insert(n, iccid.clone());
            }
        }
        Ok(out)
    }

    /// `/query/sim-data-usage-monthly/batch` (§5.2, CMIOT_API25U03) for this month (Beijing):
    /// each card's usage in bytes, **up to yesterday 24:00** ("current month up to yesterday").
    /// At most [`codes::BATCH_LIMIT`] cards. A card absent from the answer has no figure here
    /// (see the module doc).
    pub async fn monthly_usage(
        &self,
        iccids: &[Iccid],
    ) -> Result<std::collections::HashMap<Iccid, u64>, CarrierError> {
        let path = "/query/sim-data-usage-monthly/batch";
        let month = month_query_date(self.clock.now());
        let result = self
            .batch_read(path, iccids, &[("queryDate", month)])
            .await?;
        self.usage_by_card(iccids, parse_batch_usage(&result)).await
    }

    /// `/query/sim-data-usage-daily/batch` (§5.1, CMIOT_API25U01): each card's usage in bytes on
    /// `day` (Beijing), which must be one of the 7 days before today (refused before sending
    /// otherwise, as more than [`codes::BATCH_LIMIT`] cards are). A card absent from the answer
    /// has no figure for that day.
    pub async fn daily_usage(
        &self,
        iccids: &[Iccid],
        day: chrono::NaiveDate,
    ) -> Result<std::collections::HashMap<Iccid, u64>, CarrierError> {
        let today = beijing_day(self.clock.now());
        if !daily_day_in_range(today, day) {
            return Err(CarrierError::Rejected {
                code: codes::BATCH_REFUSED_LOCALLY.into(),
                message: format!(
                    "the daily batch answers one of the {} days before today ({today}), not {day}",
                    codes::DAILY_DAYS_BACK
                ),
            });
        }
        let path = "/query/sim-data-usage-daily/batch";
        let result = self
            .batch_read(path, iccids, &[("queryDate", day_query_date(day))])
            .await?;
        self.usage_by_card(iccids, parse_batch_usage(&result)).await
    }

    /// `/query/sim-card-info/batch` (§5.3, CMIOT_API25S05) by `iccids` (≤100): what the
    /// platform answers, card by card.
    pub async fn card_info(&self, iccids: &[Iccid]) -> Result<Vec<CardInfo>, CarrierError> {
        let path = "/query/sim-card-info/batch";
        Ok(parse_card_info(&self.batch_read(path, iccids, &[]).await?))
    }

    /// Finds the access numbers of `iccids` not kept yet, each costing at most one lookup per
    /// process: simgate's stored one, else one `/query/sim-card-info/batch` per 100 cards
    /// still missing; every number found is kept
    /// ([`KnownNumbers`](crate::carrier::platform::KnownNumbers)). A card the platform gives no
    /// number for stays without one (and is asked again by a later call).
    async fn look_up_numbers(&self, iccids: &[Iccid]) -> Result<(), CarrierError> {
        let mut missing = Vec::new();
        for iccid in iccids {
            if self.numbers.get(iccid).is_some() {
                continue;
            }
            match self.ctx.stored_number(iccid).await? {
                Some(n) => self.numbers.keep(iccid, &n),
                None => missing.push(iccid.clone()),
            }
        }
        for chunk in missing.chunks(codes::BATCH_LIMIT) {
            for info in self.card_info(chunk).await? {
                let (Some(sent), Some(msisdn)) = (info.iccid.as_deref(), info.found_msisdn())
                else {
                    continue;
                };
                // Only a card that was asked for: a record naming another card is not taken.
                if let Some(card) = chunk.iter().find(|i| i.as_str().eq_ignore_ascii_case(sent)) {
                    self.numbers.keep(card, msisdn);
                }
            }
        }
        Ok(())
    }

    /// The access numbers of `iccids`, in their order ([`OneLink::look_up_numbers`]). A card
    /// with no number anywhere: `NO_MSISDN` (ours), for the batch change names cards by msisdn.
    async fn numbers_of(&self, iccids: &[Iccid]) -> Result<Vec<String>, CarrierError> {
        self.look_up_numbers(iccids).await?;
        iccids
            .iter()
            .map(|iccid| {
                self.numbers.get(iccid).ok_or_else(|| CarrierError::Rejected {
                    code: codes::NO_MSISDN.into(),
                    message: format!(
                        "{iccid}: no access number stored and none in /query/sim-card-info/batch; /change/sim-status/batch names cards by msisdn only"
                    ),
                })
            })
            .collect()
    }

    /// One card of a `cards()` read: its state from `/query/sim-status`, its usage from the
    /// monthly batch (`used`), else from `/query/sim-data-usage`; None: the platform does not
    /// know the card.
    async fn batch_card(
        &self,
        iccid: Iccid,
        used: Option<u64>,
    ) -> Result<Option<CarrierCard>, CarrierError> {
        let unknown = |e: &CarrierError| matches!(e, CarrierError::Rejected { code, .. } if code == codes::CARD_UNKNOWN);
        let state = match self.status(&iccid).await {
            Ok((_, s)) => s,
            Err(e) if unknown(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let cycle_usage_bytes = match used {
            Some(b) => b,
            None => match self.query_card("/query/sim-data-usage", &iccid).await {
                Ok(r) => parse_data_usage(&r)?,
                Err(e) if unknown(&e) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        Ok(Some(CarrierCard {
            iccid,
            state,
            cycle_usage_bytes,
            // As `card()`: the platform's "this month" is implied by the call.
            usage_cycle_start: None,
            // The session call is left out of the batch read; the sync does not use it.
            last_session: crate::carrier::LastSession::Unknown,
            changes: 0,
            unknown: None,
        }))
    }

    /// `/query/sim-batch-result` (§4.1) for `job_id`, under the account's `batch_result_key`.
    pub async fn batch_result(&self, job_id: &str) -> Result<BatchResult, CarrierError> {
        let mut p = Map::new();
        p.insert(self.batch_result_key.as_str().into(), json!(job_id));
        let path = "/query/sim-batch-result";
        parse_batch_result(&first_record(path, &self.read(path, p).await?)?)
    }

    /// `/query/group-data-usage`: bytes a pool (流量池, `groupId`) used this month.
    pub async fn group_data_usage(&self, group_id: &str) -> Result<u64, CarrierError> {
        let mut p = Map::new();
        p.insert("groupId".into(), json!(group_id));
        parse_group_usage(&self.read("/query/group-data-usage", p).await?)
    }
}

#[async_trait]
impl Carrier for OneLink {
    crate::carrier::platform::account_methods!();

    /// Only `11011` (and cardStatus 99, read as it) names a card the platform lacks; any other
    /// refusal (credentials `12022`, an unknown code) concerns the account and fails the sync.
    fn card_not_known(&self, error: &CarrierError) -> bool {
        matches!(error, CarrierError::Rejected { code, .. } if code == codes::CARD_UNKNOWN)
    }

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
        let cycle_usage_bytes =
            parse_data_usage(&self.query_card("/query/sim-data-usage", iccid).await?)?;
        // An unreadable session answer is `Unknown`, not a failed read: state and usage hold.
        let last_session = parse_last_session(&self.query_card("/query/sim-session", iccid).await?);
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

    /// Per 100 cards one `/query/sim-data-usage-monthly/batch` for the usage (up to
    /// yesterday), then `/query/sim-status` card by card for the state (the dossier has no
    /// batch status call). A card absent from the usage answer is read alone with
    /// `/query/sim-data-usage`; one the platform does not know (`11011`) is left out. The
    /// last session is `Unknown`: the session call is left out of the batch read.
    async fn cards(&self, iccids: &[Iccid]) -> Result<Vec<CarrierCard>, CarrierError> {
        let mut out = Vec::with_capacity(iccids.len());
        for chunk in iccids.chunks(codes::BATCH_LIMIT) {
            let usage = match self.monthly_usage(chunk).await {
                Ok(u) => u,
                // A batch refused as "no such card" does not say which: each card alone.
                Err(e) if self.card_not_known(&e) => Default::default(),
                Err(e) => return Err(e),
            };
            let read = futures::stream::iter(chunk.iter().cloned())
                .map(|iccid| {
                    let used = usage.get(&iccid).copied();
                    async move { self.batch_card(iccid, used).await }
                })
                .buffered(4)
                .try_collect::<Vec<Option<CarrierCard>>>()
                .await?;
            out.extend(read.into_iter().flatten());
        }
        Ok(out)
    }

    fn batch_limit(&self) -> usize {
        codes::BATCH_LIMIT
    }

    fn batch_change_limit(&self) -> usize {
        codes::BATCH_LIMIT
    }

    /// `/change/sim-status/batch` (§4): Stop → operType 9, Restore → 11, `reason` 01, the
    /// cards' access numbers `_`-joined (looked up as [`OneLink::numbers_of`] says) →
    /// `result[0].jobId`. Any refusal (a card inside its repeat window fails the whole batch,
    /// with a code not found) is `Deferred` with the platform's code: nothing is known changed.
    /// Status 0 without a `jobId` is `OutcomeUnknown` (taken, but cannot be followed).
    async fn change_batch(
        &self,
        iccids: &[Iccid],
        change: &Change,
    ) -> Result<BatchReceipt, CarrierError> {
        let oper = match change {
            Change::Stop => codes::BATCH_OPER_STOP,
            Change::Restore => codes::BATCH_OPER_RESTORE,
            other => {
                return Err(CarrierError::Rejected {
                    code: "BATCH_NOT_SUPPORTED".into(),
                    message: format!(
                        "/change/sim-status/batch carries stops and restores only, not {other:?}"
                    ),
                })
            }
        };
        if iccids.is_empty() || iccids.len() > codes::BATCH_LIMIT {
            return Err(CarrierError::Rejected {
                code: codes::BATCH_REFUSED_LOCALLY.into(),
                message: format!(
                    "a batch change carries 1 to {} cards, not {}",
                    codes::BATCH_LIMIT,
                    iccids.len()
                ),
            });
        }
        let numbers = self.numbers_of(iccids).await?;
        let mut p = Map::new();
        p.insert(
            "msisdns".into(),
            json!(join_ids(numbers.iter().map(String::as_str))),
        );
        p.insert("operType".into(), json!(oper));
        p.insert("reason".into(), json!(codes::BATCH_REASON_OWN));
        match self.call("/change/sim-status/batch", p, true).await? {
            Answer::Records(result) => match parse_batch_receipt(&result) {
                Some(job_id) => Ok(BatchReceipt { job_id }),
                None => Err(CarrierError::OutcomeUnknown(
                    "/change/sim-status/batch accepted without a jobId".into(),
                )),
            },
            Answer::Refused { code, message } => Err(CarrierError::Deferred {
                code,
                message: format!("batch refused (a card inside its repeat window fails the whole batch, naming no card): {message}"),
                retry_after: None,
            }),
        }
    }

    /// `/query/sim-batch-result` (§4.1): `jobStatus` 0/1 not finished, 2/3/4 finished, an
    /// unlisted value not finished with a warning. Items with resultType 1 name an msisdn,
    /// mapped back to the card of `iccids` through its number; status "0" Applied, any other
    /// Failed with it and the message. A card of `iccids` not listed is Open while the job runs
    /// and left out once it is over (the journal reads it).
    async fn batch_job(&self, job_id: &str, iccids: &[Iccid]) -> Result<BatchJob, CarrierError> {
        let r = self.batch_result(job_id).await?;
        if r.unlisted {
            tracing::warn!(
                job = job_id,
                job_status = r.job_status.as_str(),
                "OneLink sim-batch-result jobStatus not in the dossier's list; read as not finished"
            );
        }
        // Normally kept since the change; after a restart looked up again. A card still
        // without a number cannot be matched: Open while the job runs, then left out.
        self.look_up_numbers(iccids).await?;
        let mut items: Vec<(Iccid, BatchItem)> = Vec::new();
        for item in &r.items {
            let card = item.msisdn().and_then(|m| {
                iccids
                    .iter()
                    .find(|i| self.numbers.get(i).as_deref() == Some(m))
                    .cloned()
            });
            let (Some(card), Some(status)) = (card, item.status.as_deref()) else {
                tracing::warn!(
                    job = job_id,
                    result_type = item.result_type.as_deref().unwrap_or(""),
                    "OneLink sim-batch-result item names no card of the job (or has no status); ignored"
                );
                continue;
            };
            let outcome = if status == codes::OK {
                BatchItem::Applied
            } else {
                BatchItem::Failed {
                    code: status.to_string(),
                    message: item.message.clone(),
                }
            };
            if !items.iter().any(|(c, _)| *c == card) {
                items.push((card, outcome));
            }
        }
        if !r.finished {
            for iccid in iccids {
                if !items.iter().any(|(c, _)| c == iccid) {
                    items.push((iccid.clone(), BatchItem::Open));
                }
            }
        }
        Ok(BatchJob {
            finished: r.finished,
            status: r.job_status,
            items,
        })
    }

    async fn stop(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.change(iccid, codes::OPER_STOP, ServiceState::Stopped)
            .await
    }

    async fn restore(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.change(iccid, codes::OPER_RESTART, ServiceState::Active)
            .await
    }

    /// `/query/sim-basic-info`'s `msisdn` (§2.2).
    async fn msisdn_of(&self, iccid: &Iccid) -> Result<Option<String>, CarrierError> {
        Ok(self.basic_info(iccid).await?.msisdn)
    }

    /// `/operate/card-bind-by-bill` (§7.2, by ICCID, "one identifier"): unbind is operType 2;
    /// the current device operType 1 with bindingStyle 0 (首话单自动绑定); an IMEI operType 1
    /// with bindingStyle 1 and `tac` = its first `bind_tac_digits` digits, which binds every
    /// IMEI starting with them (an IMEI *range*). The reply body is not found: status 0 is
    /// applied, or in progress when a record carries an `orderNum`. Refusals as for a change
    /// (`11011` final, the window code `Deferred`); any other code is `Deferred` too — except
    /// a refused CurrentDevice for a card `/query/sim-imei` reports in no device (with
    /// `sim_imei_reports = "device"`): nothing to bind to, final (`NO_DEVICE`, ours). No other
    /// re-read: the binding query cannot confirm a mode.
    async fn rebind(&self, iccid: &Iccid, rebind: &Rebind) -> Result<Receipt, CarrierError> {
        let p = self.rebind_params(iccid, rebind)?;
        match self.call("/operate/card-bind-by-bill", p, true).await? {
            Answer::Records(result) => Ok(match parse_rebind_reply(&result) {
                Some(order_num) => Receipt::in_progress(Some(order_num)),
                None => Receipt::applied(),
            }),
            Answer::Refused { code, message } => {
                if *rebind == Rebind::CurrentDevice
                    && code != codes::CARD_UNKNOWN
                    && self.repeat_window_code.as_deref() != Some(code.as_str())
                    && self.in_no_device(iccid).await
                {
                    return Err(CarrierError::Rejected {
                        code: codes::NO_DEVICE.into(),
                        message: format!(
                            "{iccid} is in no device to bind to (/query/sim-imei reports none); status {code}, message {message}"
                        ),
                    });
                }
                self.refused_change(iccid, None, code, message).await
            }
        }
    }

    fn rebind_modes(&self) -> Vec<&'static str> {
        [
            Rebind::Unbind,
            Rebind::CurrentDevice,
            Rebind::Imei(String::new()),
        ]
        .iter()
        .map(Rebind::mode)
        .collect()
    }

    fn queries_orders(&self) -> bool {
        true
    }

    /// `/query/order-info` (§3.1; orderNum only, orders kept 60 days [SMOC]): `completed` is
    /// Completed; `failed`, `aborted`, `cancelled` Failed; every other listed word Open; an
    /// unlisted word Open too, with a warning — never a guessed outcome. An order the platform
    /// no longer keeps is refused with an unpublished code: unavailable, like any read.
    async fn order(&self, iccid: &Iccid, order_id: &str) -> Result<OrderProgress, CarrierError> {
        let info = self.order_info(order_id).await?;
        if info.unlisted {
            tracing::warn!(
                iccid = %iccid,
                order = order_id,
                status = info.status.as_str(),
                "OneLink order-info status not in the dossier's list; read as still open"
            );
        }
        Ok(info.progress)
    }

    /// `/query/sim-stop-reason` (§2.7): simgate's reasons among the flags (position 2 机卡分离
    /// is `DeviceMismatch`); the platform-only and undocumented positions are left out.
    async fn stop_reasons(&self, iccid: &Iccid) -> Result<Option<StopReasons>, CarrierError> {
        let flags = self.stop_reason_flags(iccid).await?;
        Ok(Some(flags.reasons.into_iter().collect()))
    }

    /// `/query/card-bind-status` (§7.1, by msisdn, `bind_test_type`) and `/query/sim-imei`
    /// (§2.9). `separated` and `separated_since` come from the first (`sepTime` only with
    /// testType 0), `imei` from the second. `bound` is an inference: a separated card was bound
    /// (separation presupposes a binding); with `sim_imei_reports = "binding"` ([PHP]) an IMEI
    /// reported means bound too. Whether 未分离 means "bound, in its device" or "not bound" is
    /// not found: it reads as not known to be bound (false).
    async fn binding(&self, iccid: &Iccid) -> Result<Option<Binding>, CarrierError> {
        let status = self.bind_status(iccid).await?;
        let imei = self.imei(iccid).await?;
        let (separated, separated_since) = match status {
            BindStatus::Separated { since } => (true, since.at()),
            BindStatus::NotSeparated => (false, None),
        };
        let bound_imei = self.sim_imei_reports == ImeiReading::Binding && imei.is_some();
        Ok(Some(Binding {
            bound: separated || bound_imei,
            imei,
            separated,
            separated_since,
        }))
    }

    /// OneLink releases numbers itself; this confirms it has.
    async fn cancel(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        let (code, _) = self.status(iccid).await?;
        // Only the released codes confirm it, not any code that maps to Cancelled.
        if codes::RELEASED.contains(&code.as_str()) {
            return Ok(Receipt::applied());
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
    fn dates_are_read_in_both_dossier_formats_as_beijing_time() {
        let noon_utc = chrono::DateTime::parse_from_rfc3339("2024-01-01T04:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        for s in [
            "2024-01-01 12:00:00",
            " 20240101120000 ",
            "2024-01-01 12:00:00\n",
        ] {
            assert_eq!(beijing_time(s), Some(noon_utc), "{s:?}");
        }
        for s in ["<time>", "2024-01-01", "2024/01/01 12:00:00", "1704081600"] {
            assert_eq!(beijing_time(s), None, "{s:?}");
        }
        assert_eq!(WireDate::of(Some(&json!(" "))), WireDate::Absent);
        assert_eq!(WireDate::of(None), WireDate::Absent);
        assert_eq!(
            WireDate::of(Some(&json!("soon"))),
            WireDate::Unreadable("soon".into())
        );
    }

    fn record(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn sessions_fail_safe_to_unknown_never_to_none() {
        use crate::carrier::LastSession;
        let at = |d: &str| json!({ "createDate": d });
        assert_eq!(
            parse_last_session(&record(json!({ "simSessionList": [] }))),
            LastSession::Never
        );
        for unknown in [
            json!({}),
            json!({ "simSessionList": "none" }),
            json!({ "simSessionList": [at("2024-01-01 12:00:00"), at("yesterday")] }),
            json!({ "simSessionList": [at(" ")] }),
        ] {
            assert_eq!(
                parse_last_session(&record(unknown.clone())),
                LastSession::Unknown,
                "{unknown}"
            );
        }
        // A blank entry is skipped; the newest readable one wins.
        let r = record(json!({ "simSessionList": [
            at(""), at("2024-01-01 12:00:00"), at("20240102120000")
        ] }));
        assert_eq!(
            parse_last_session(&r).at(),
            beijing_time("2024-01-02 12:00:00")
        );
    }

    #[test]
    fn usage_real_name_and_basic_info_tolerate_what_the_dossier_lists() {
        assert_eq!(
            parse_data_usage(&record(json!({ "dataAmount": " " }))).unwrap(),
            0
        );
        assert_eq!(
            parse_data_usage(&record(
                json!({ "dataAmountList": [{ "dataAmount": "2" }] })
            ))
            .unwrap(),
            2048
        );
        // A flat dataAmount wins over the list; neither is unavailable.
        assert_eq!(
            parse_data_usage(&record(
                json!({ "dataAmount": "1", "dataAmountList": [{ "dataAmount": "2" }] })
            ))
            .unwrap(),
            1024
        );
        assert!(matches!(
            parse_data_usage(&record(json!({}))),
            Err(CarrierError::Transient(_))
        ));
        assert!(parse_real_name(&record(json!({ "realNameStatus": 1 }))).unwrap());
        assert!(!parse_real_name(&record(json!({ "realNameStatus": "0" }))).unwrap());
        assert!(!parse_real_name(&record(json!({ "realNameStatus": "2" }))).unwrap());
        for blank in [json!({ "realNameStatus": " " }), json!({})] {
            assert!(matches!(
                parse_real_name(&record(blank)),
                Err(CarrierError::Transient(_))
            ));
        }
        let info = parse_basic_info(&record(json!({ "activateDate": "2024-01-01 12:00:00" })));
        assert_eq!(info.active_date.at(), beijing_time("2024-01-01 12:00:00"));
    }

    #[test]
    fn http_statuses_fail_safe_for_reads_and_changes() {
        use reqwest::StatusCode as S;
        let kind =
            |s: u16, changes: bool| match http_status_error(S::from_u16(s).unwrap(), None, changes)
            {
                CarrierError::RateLimited { .. } => "rate",
                CarrierError::Transient(_) => "transient",
                CarrierError::OutcomeUnknown(_) => "unknown",
                e => panic!("{s}: {e:?}"),
            };
        for s in [400, 401, 404, 500, 502, 503, 504] {
            assert_eq!(kind(s, false), "transient", "read {s}");
        }
        for (s, k) in [
            (400, "unknown"),
            (500, "unknown"),
            (502, "transient"),
            (503, "transient"),
            (504, "unknown"),
        ] {
            assert_eq!(kind(s, true), k, "change {s}");
        }
        assert_eq!((kind(429, false), kind(429, true)), ("rate", "rate"));
    }

    #[test]
    fn methods_default_to_get_and_read_from_configuration() {
        let cfg: OneLinkConfig = serde_json::from_value(json!({
            "base_url": "http://h/v5/ec", "appid": "a", "password": "p"
        }))
        .unwrap();
        assert_eq!(
            (cfg.token_method, cfg.request_method),
            (HttpMethod::Get, HttpMethod::Get)
        );
        let cfg: OneLinkConfig = serde_json::from_value(json!({
            "base_url": "http://h/v5/ec", "appid": "a", "password": "p",
            "token_method": "post", "request_method": "post"
        }))
        .unwrap();
        assert_eq!(
            (cfg.token_method, cfg.request_method),
            (HttpMethod::Post, HttpMethod::Post)
        );
        assert!(serde_json::from_value::<OneLinkConfig>(json!({
            "base_url": "http://h/v5/ec", "appid": "a", "password": "p", "request_method": "form"
        }))
        .is_err());
    }

    #[test]
    fn every_order_status_word_is_classified() {
        // Dossier §3.1 ([SMOC] 25165314112): eleven words, three outcomes.
        assert_eq!(ORDER_STATUS.len(), 11);
        let failed = ["failed", "aborted", "cancelled"];
        for (word, kind, _) in ORDER_STATUS {
            let want = match word {
                "completed" => OrderKind::Completed,
                w if failed.contains(&w) => OrderKind::Failed,
                _ => OrderKind::Open,
            };
            assert_eq!((order_kind(word), kind), (Some(want), want), "{word}");
        }
        for unlisted in ["Completed", "COMPLETED", "done", "", "in_progress"] {
            assert_eq!(order_kind(unlisted), None, "{unlisted:?}");
        }
    }

    #[test]
    fn an_order_number_wins_over_an_echo_and_a_rebind_reply_is_read_leniently() {
        let both = [json!({ "iccid": "89860400000000000001", "orderNum": " 42 " })];
        assert_eq!(
            parse_change_reply(&both, "89860400000000000001"),
            ChangeReply::Order {
                order_num: "42".into()
            }
        );
        let blank = [json!({ "iccid": "89860400000000000001", "orderNum": " " })];
        assert_eq!(
            parse_change_reply(&blank, "89860400000000000001"),
            ChangeReply::Applied
        );
        assert_eq!(parse_rebind_reply(&[]), None);
        assert_eq!(parse_rebind_reply(&[json!({ "msisdn": "1" })]), None);
        assert_eq!(
            parse_rebind_reply(&[json!({ "orderNum": 7 })]),
            Some("7".into())
        );
    }

    #[test]
    fn rebind_modes_become_card_bind_by_bill_parameters() {
        let cfg = OneLinkConfig {
            base_url: "http://127.0.0.1:1/v5/ec".into(),
            appid: "a".into(),
            password: Secret::new("pw"),
            timeouts: HttpTimeouts::default(),
            token_method: HttpMethod::Get,
            request_method: HttpMethod::Get,
            repeat_window_code: Some(" ".into()),
            bind_test_type: "0".into(),
            bind_tac_digits: 10,
            sim_imei_reports: ImeiReading::Device,
            batch_result_key: BatchResultKey::JobId,
        };
        let a = OneLink::new(&cfg, AccountCtx::default_for(CarrierId::Mobile)).unwrap();
        // A blank window code is no window code.
        assert_eq!(a.repeat_window_code, None);
        let card = Iccid::parse_any("89860400000000000001").unwrap();
        let params = |r: &Rebind| Value::Object(a.rebind_params(&card, r).unwrap());
        assert_eq!(
            params(&Rebind::Unbind),
            json!({ "iccid": card.as_str(), "operType": "2" })
        );
        assert_eq!(
            params(&Rebind::CurrentDevice),
            json!({ "iccid": card.as_str(), "operType": "1", "bindingStyle": "0" })
        );
        assert_eq!(
            params(&Rebind::Imei(" 860000000000001 ".into())),
            json!({ "iccid": card.as_str(), "operType": "1", "bindingStyle": "1", "tac": "8600000000" })
        );
        for bad in ["", "860000000", "86000000000000a", "８６００００００００"] {
            assert!(
                matches!(
                    a.rebind_params(&card, &Rebind::Imei(bad.into())),
                    Err(CarrierError::Rejected { code, .. }) if code == IMEI_INVALID
                ),
                "{bad:?}"
            );
        }
        assert_eq!(a.rebind_modes(), vec!["UNBIND", "CURRENT_DEVICE", "IMEI"]);
        assert!(a.queries_orders());
    }

    #[test]
    fn generated_settings_survive_toml_with_and_without_a_window_code() {
        // `simgate simulate` writes the generated settings as TOML, which has no null.
        let mut cfg = <Platform as WirePlatform>::generated(
            "http://127.0.0.1:1",
            "s",
            HttpTimeouts::default(),
        );
        for code in [None, Some("19999".to_string())] {
            cfg.repeat_window_code = code.clone();
            let text = toml::to_string(&cfg).unwrap();
            let back: OneLinkConfig = toml::from_str(&text).unwrap();
            assert_eq!(back.repeat_window_code, code, "{text}");
            assert_eq!(
                (back.bind_test_type.as_str(), back.bind_tac_digits),
                ("0", 14)
            );
            assert_eq!(back.sim_imei_reports, ImeiReading::Device);
            assert_eq!(back.batch_result_key, BatchResultKey::JobId);
        }
        let cfg: OneLinkConfig = serde_json::from_value(json!({
            "base_url": "http://h/v5/ec", "appid": "a", "password": "p",
            "batch_result_key": "orderNum"
        }))
        .unwrap();
        assert_eq!(cfg.batch_result_key.as_str(), "orderNum");
        assert!(serde_json::from_value::<OneLinkConfig>(json!({
            "base_url": "http://h/v5/ec", "appid": "a", "password": "p",
            "batch_result_key": "job_id"
        }))
        .is_err());
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
            token_method: HttpMethod::Get,
            request_method: HttpMethod::Get,
            repeat_window_code: None,
            bind_test_type: "0".into(),
            bind_tac_digits: 14,
            sim_imei_reports: ImeiReading::Device,
            batch_result_key: BatchResultKey::JobId,
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
            token_method: HttpMethod::Get,
            request_method: HttpMethod::Get,
            repeat_window_code: None,
            bind_test_type: "0".into(),
            bind_tac_digits: 14,
            sim_imei_reports: ImeiReading::Device,
            batch_result_key: BatchResultKey::JobId,
        };
        let p = AccountCtx::default_for(CarrierId::Mobile);
        assert!(OneLink::new(&cfg, p.clone()).is_err());
        cfg.base_url = "http://x/v5/ec".into();
        cfg.appid.clear();
        assert!(OneLink::new(&cfg, p).is_err());
    }
}
