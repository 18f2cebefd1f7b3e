//! The China Mobile OneLink (EC API v5) wire simulator: the paths, token auth, envelopes and
//! codes the [`OneLink`] adapter speaks, in front of a [`SimCarrier`] whose rules and fault
//! injection decide every answer.
//!
//! It answers GET (parameters in the query string) and POST (a JSON body) on every path, as
//! the real platform is used both ways (dossier §0.2), in the reply shapes of the dossier's
//! skeletons (a test compares them with `tests/fixtures/carrier-wire/onelink/`). Published:
//! the envelope (§0.4), `0`, `12021` with its verbatim message, `11011` for an unknown card,
//! the cardStatus codes (CT: 2, 4, 9), the change reply `{iccid}` (or `{orderNum, msisdn}`
//! when the [`SimCarrier`]'s receipt is in progress, or with
//! [`WireOptions::change_reply_order_num`]), order-info's status words and
//! `yyyyMMddHHmmss` dates (§3.1), card-bind-status' `result`/`errorCode`/`errorDes`/`sepTime`
//! fields (§7.1), sim-imei's `imei` (§2.9), card-bind-by-bill's parameters (§7.2).
//! Every answer comes from the [`SimCarrier`]: `order()`, `binding()`, `rebind()`,
//! `stop_reasons()` (a carrier that gives no reasons: `Manual` while stopped), its number
//! (`number_of`, for basic-info's and the change reply's `msisdn`, and to find the card
//! card-bind-status names by msisdn); its `Deferred` (repeat window) is refused with
//! [`WireOptions::repeat_window_code`].
//!
//! Batch calls (§4, §4.1, §5.1-5.3), from the [`SimCarrier`]'s batch jobs and daily usage:
//! `/change/sim-status/batch` (`msisdns`, operType 9/11 with reason 01 → `take_batch` → `jobId`;
//! its `Deferred` — one card inside its window fails the batch, naming no card — answered with
//! [`SIM_BATCH_REPEAT_WINDOW`], ours: the real code is not found), `/query/sim-batch-result`
//! (`job` → `jobStatus` 1/2/3/4 and the processed cards by msisdn; the job id under the
//! configuration's `batch_result_key`), `/query/sim-data-usage-monthly/batch` (`usage_between`
//! from the cycle start to today's 00:00 Beijing: up to yesterday; the simulated carrier has no
//! PB/CT notion, so every card lags a day here and none in the single call),
//! `/query/sim-data-usage-daily/batch` (that one day) and `/query/sim-card-info/batch`
//! (`number_of`). Batches are taken by `iccids` (reads) or `msisdns` (the change); more than
//! 100 cards is refused with [`SIM_BATCH_TOO_LARGE`], ours. Every request is counted by path
//! ([`WireStats::calls_to`]).
//!
//! Invented, because nothing is published (each marked where it is used):
//! - bad credentials answer `12022`: a reseller's code ([COTONDA]), not China Mobile's;
//! - the rate limit is HTTP 429 with `Retry-After` (the v5 answer is not found; v2 used `71`);
//! - `SIM_BAD_REQUEST` (a parameter missing or unusable) and `SIM_WRONG_STATE` (operType 0 on
//!   a card that is not active, 1 on one that is not stopped, or a restart of a cancelled
//!   card: the operType text says 已激活转已停机 / 已停机转已激活, no refusal code is
//!   published); simgate's own `CARD_CANCELLED` is never passed through;
//! - the `/query/group-data-usage` reply `{groupId, useAmount}` (its fields are not found);
//! - sim-session's `status`/`ip`/`rat` values (fields from the skeleton, values fake);
//! - `realNameStatus` "0" for an unregistered card (only "1" is published; any other value
//!   reads as "not registered"), and the `orderNum` format (the simulated carrier's order id,
//!   or `DONE` + 10 digits for an invented one, then `-` and the ICCID);
//! - the repeat-window code [`INVENTED_REPEAT_WINDOW`] (the default of
//!   [`WireOptions::repeat_window_code`]); [`SIM_UNKNOWN_ORDER`] for an orderNum never
//!   answered; [`SIM_NO_BINDING`] as result 2's errorCode when the simulated carrier keeps no
//!   binding; `sepTime` written `yyyy-MM-dd HH:mm:ss` (format not found); the
//!   card-bind-by-bill reply (not found): the §0.4 verbatim `{"status":"0","message":"正确",
//!   "result":[]}`, or `result:[{orderNum}]` for an order in progress; a TAC handed to the
//!   simulated carrier as one IMEI (the device's when it starts with the TAC, else 14 digits
//!   plus their Luhn digit; a shorter TAC the device does not match is refused: the simulated
//!   carrier binds single IMEIs, not ranges);
//! - the transid is only required non-empty; the strict appid + 22 digits check is opt-in
//!   ([`WireOptions::strict_transid`]) since clients build it in many ways (§0.3).
//!
//! [`OneLink`]: crate::carrier::http::onelink::OneLink

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use serde_json::{json, Map, Value};

use crate::carrier::http::onelink::{codes, split_ids, OneLinkConfig};
use crate::carrier::sim::{SimCarrier, JOB_DONE, JOB_DONE_WITH_FAILURES, JOB_FAILED, JOB_RUNNING};
use crate::carrier::{
    BatchItem, Carrier, CarrierError, Change, OrderProgress, Rebind, ServiceState,
};
use crate::domain::{Iccid, StopReason};

/// The status the simulator answers a change inside its repeat window with. OneLink documents
/// the window (同一卡号30分钟内不能重复办理) but no code for it ([onelink.md] §3): invented, outside
/// every published code.
pub const INVENTED_REPEAT_WINDOW: &str = "19999";

/// Not OneLink's codes (theirs are not public): the simulator's own, recognisable as such.
pub const SIM_BAD_REQUEST: &str = "SIM_BAD_REQUEST";
/// Invented: a change the card's state does not allow (no published code).
pub const SIM_WRONG_STATE: &str = "SIM_WRONG_STATE";
/// Invented: `/query/order-info` for an `orderNum` the simulator never answered (the
/// platform's code for an unknown or expired order, kept 60 days, is not found).
pub const SIM_UNKNOWN_ORDER: &str = "SIM_UNKNOWN_ORDER";
/// Invented: the `errorCode` of `/query/card-bind-status` result 2 when the simulated carrier
/// keeps no binding (no errorCode value is published).
pub const SIM_NO_BINDING: &str = "SIM_NO_BINDING";
/// Invented: the simulator's answer to a batch change the simulated carrier refuses because
/// one of its cards is inside its repeat window (the whole batch fails, naming no card, §4).
/// The platform's code for it is not found.
pub const SIM_BATCH_REPEAT_WINDOW: &str = "SIM_BATCH_REPEAT_WINDOW";
/// Invented: a batch call carrying more than 100 cards (§4, §5: "≤100"; the platform's code
/// for it is not found).
pub const SIM_BATCH_TOO_LARGE: &str = "SIM_BATCH_TOO_LARGE";
/// The verbatim 12021 message ([IOTOS] EcV5Api.java L96, dossier §0.4).
pub const TOKEN_INVALID_MESSAGE: &str = "TOKEN不存在或已过期，请重新获取";

/// How the simulated platform behaves beyond what `SimCarrier` decides.
#[derive(Debug, Clone)]
pub struct WireOptions {
    /// How long an issued token is accepted.
    pub token_ttl: Duration,
    /// The `ttl` `/get/token` reports, when it should differ from `token_ttl` (a platform that
    /// invalidates tokens early): None reports `token_ttl`.
    pub reported_ttl: Option<Duration>,
    /// How long a change that was applied but "timed out" waits before answering: longer than
    /// the client's request timeout, so the client sees no answer.
    pub unanswered_delay: Duration,
    /// Pools (`groupId` → member cards) for `/query/group-data-usage`.
    pub groups: HashMap<String, Vec<Iccid>>,
    /// Cards whose real-name registration is not done; all others are registered.
    pub unregistered: HashSet<Iccid>,
    /// Check the transid strictly (appid + yyyyMMddHHmmss + 8 digits). Off by default: the
    /// platform's check is not known and clients differ (dossier §0.3).
    pub strict_transid: bool,
    /// Answer a change with `{orderNum, msisdn}` ([GOSDK]) instead of `{iccid}` (the most
    /// common form) even when the simulated carrier applied it at once; `/query/order-info`
    /// then answers such an order `completed`. (A change the simulated carrier takes as an
    /// order in progress is answered `{orderNum, msisdn}` whatever this says.)
    pub change_reply_order_num: bool,
    /// The status a change inside the simulated carrier's repeat window is refused with
    /// (its `Deferred`). Default [`INVENTED_REPEAT_WINDOW`]: invented, OneLink's is not found.
    pub repeat_window_code: String,
    /// Counters tests read.
    pub stats: Arc<WireStats>,
}

impl Default for WireOptions {
    fn default() -> Self {
        WireOptions {
            // Public clients cache OneLink tokens for 30-55 minutes.
            token_ttl: Duration::from_secs(3600),
            reported_ttl: None,
            // Well past the adapter's default request timeout of 10 s.
            unanswered_delay: Duration::from_secs(60),
            groups: HashMap::new(),
            unregistered: HashSet::new(),
            strict_transid: false,
            change_reply_order_num: false,
            repeat_window_code: INVENTED_REPEAT_WINDOW.to_string(),
            stats: Arc::new(WireStats::default()),
        }
    }
}

/// What the simulator has answered, for assertions.
#[derive(Debug, Default)]
pub struct WireStats {
    token_issued: AtomicU64,
    token_refused: AtomicU64,
    calls: AtomicU64,
    /// Requests received per path (without the base URL's prefix), authenticated or not.
    by_path: Mutex<HashMap<String, u64>>,
}

impl WireStats {
    /// Successful `/get/token` calls.
    pub fn tokens_issued(&self) -> u64 {
        self.token_issued.load(Ordering::SeqCst)
    }

    /// Calls answered 12021.
    pub fn tokens_refused(&self) -> u64 {
        self.token_refused.load(Ordering::SeqCst)
    }

    /// Calls other than `/get/token` that passed authentication.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Requests received on `path` (e.g. `/query/sim-data-usage-monthly/batch`, without the
    /// base URL's `/v5/ec`), authenticated or not.
    pub fn calls_to(&self, path: &str) -> u64 {
        self.by_path
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn count(&self, path: &str) {
        *self
            .by_path
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(path.to_string())
            .or_default() += 1;
    }
}

struct Wire {
    sim: Arc<SimCarrier>,
    appid: String,
    password: String,
    opts: WireOptions,
    tokens: Mutex<HashMap<String, Instant>>,
    seq: AtomicU64,
    /// Every `orderNum` answered, for `/query/order-info` (which names only the order).
    orders: Mutex<HashMap<String, SimOrder>>,
    /// The key `/query/sim-batch-result` takes the job id under (the account's setting).
    batch_result_key: &'static str,
    /// Per batch job, the msisdns it carried that name no card: reported failed with
    /// `11011` in its result (the simulated carrier's job knows cards, not numbers).
    unknown_in_job: Mutex<HashMap<String, Vec<String>>>,
}

/// When the simulator answered an order (for `createDate`; an order answered before a
/// restart shows its status date instead).
#[derive(Debug, Clone)]
struct SimOrder {
    created: chrono::DateTime<chrono::Utc>,
}

/// The prefix of an `orderNum` the simulator invents for a change the simulated carrier
/// applied at once (`change_reply_order_num`): such an order is always `completed`.
const APPLIED_ORDER: &str = "DONE";

pub fn router(sim: Arc<SimCarrier>, cfg: &OneLinkConfig, opts: WireOptions) -> axum::Router {
    // Serve under the base URL's path (e.g. /v5/ec) so one configuration fits both ends.
    let prefix = url::Url::parse(&cfg.base_url)
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default();
    let wire = Arc::new(Wire {
        sim,
        appid: cfg.appid.clone(),
        password: cfg.password.expose().to_string(),
        opts,
        tokens: Mutex::new(HashMap::new()),
        seq: AtomicU64::new(0),
        orders: Mutex::new(HashMap::new()),
        batch_result_key: cfg.batch_result_key.as_str(),
        unknown_in_job: Mutex::new(HashMap::new()),
    });
    let stats = wire.opts.stats.clone();
    let strip = prefix.clone();
    let p = |path: &str| format!("{prefix}{path}");
    // Both methods on every path (dossier §0.2: clients use either).
    fn both<H, T>(h: H) -> MethodRouter<Arc<Wire>>
    where
        H: axum::handler::Handler<T, Arc<Wire>> + Clone,
        T: 'static,
    {
        get(h.clone()).post(h)
    }
    axum::Router::new()
        .route(&p("/get/token"), both(get_token))
        .route(&p("/query/sim-status"), both(sim_status))
        .route(&p("/query/sim-data-usage"), both(sim_data_usage))
        .route(&p("/query/sim-session"), both(sim_session))
        .route(&p("/query/sim-basic-info"), both(sim_basic_info))
        .route(&p("/change/sim-status"), both(change_sim_status))
        .route(&p("/query/sim-stop-reason"), both(sim_stop_reason))
        .route(
            &p("/query/sim-real-name-status"),
            both(sim_real_name_status),
        )
        .route(&p("/query/group-data-usage"), both(group_data_usage))
        .route(&p("/query/order-info"), both(order_info))
        .route(&p("/query/card-bind-status"), both(card_bind_status))
        .route(&p("/query/sim-imei"), both(sim_imei))
        .route(&p("/operate/card-bind-by-bill"), both(card_bind_by_bill))
        .route(
            &p("/change/sim-status/batch"),
            both(change_sim_status_batch),
        )
        .route(&p("/query/sim-batch-result"), both(sim_batch_result))
        .route(
            &p("/query/sim-data-usage-monthly/batch"),
            both(sim_data_usage_monthly_batch),
        )
        .route(
            &p("/query/sim-data-usage-daily/batch"),
            both(sim_data_usage_daily_batch),
        )
        .route(&p("/query/sim-card-info/batch"), both(sim_card_info_batch))
        .with_state(wire)
        // Every request counted by its path, for tests that count calls of one kind.
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                let path = req.uri().path();
                stats.count(path.strip_prefix(strip.as_str()).unwrap_or(path));
                next.run(req)
            },
        ))
}

fn envelope(status: &str, message: &str, result: Vec<Value>) -> Response {
    let body = json!({ "status": status, "message": message, "result": result });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(record: Value) -> Response {
    envelope(codes::OK, "正确", vec![record])
}

fn refuse(code: &str, message: &str) -> Response {
    envelope(code, message, Vec::new())
}

type Params = Map<String, Value>;

/// A refusal on its way out (boxed: a Response is large and travels through `?`).
type Refusal = Box<Response>;

fn refusal(code: &str, message: &str) -> Refusal {
    Box::new(refuse(code, message))
}

/// A request's parameters: the query string of a GET (every value a string), the JSON
/// object of a POST; or the refusal of a request that has neither.
struct Input(Result<Params, Refusal>);

impl<S: Send + Sync> FromRequest<S> for Input {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        if req.method() == Method::GET {
            let query = req.uri().query().unwrap_or("");
            let p = url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect();
            return Ok(Input(Ok(p)));
        }
        let body = axum::body::to_bytes(req.into_body(), 1 << 20).await;
        Ok(Input(match body {
            Ok(b) => match serde_json::from_slice::<Value>(&b) {
                Ok(Value::Object(m)) => Ok(m),
                _ => Err(refusal(SIM_BAD_REQUEST, "body must be a JSON object")),
            },
            Err(_) => Err(refusal(SIM_BAD_REQUEST, "body unreadable")),
        }))
    }
}

fn param<'a>(p: &'a Params, name: &str) -> Result<&'a str, Refusal> {
    p.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| refusal(SIM_BAD_REQUEST, &format!("{name} is required")))
}

impl Wire {
    /// A transid is required; its format only with `strict_transid` (appid + 14 digits of
    /// time + 8 digits of sequence).
    fn check_transid(&self, p: &Params) -> Result<(), Refusal> {
        let t = param(p, "transid")?;
        if !self.opts.strict_transid {
            return Ok(());
        }
        let rest = t.strip_prefix(self.appid.as_str()).unwrap_or("");
        if rest.len() != 22 || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refusal(
                SIM_BAD_REQUEST,
                "transid must be appid + yyyyMMddHHmmss + 8 digits",
            ));
        }
        Ok(())
    }

    fn authenticate(&self, input: Input) -> Result<Params, Refusal> {
        let p = input.0?;
        self.check_transid(&p)?;
        let token = p.get("token").and_then(Value::as_str).unwrap_or("");
        let valid = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .is_some_and(|until| Instant::now() < *until);
        if !valid {
            self.opts.stats.token_refused.fetch_add(1, Ordering::SeqCst);
            return Err(refusal(codes::TOKEN_INVALID, TOKEN_INVALID_MESSAGE));
        }
        self.opts.stats.calls.fetch_add(1, Ordering::SeqCst);
        Ok(p)
    }

    fn iccid(&self, p: &Params) -> Result<Iccid, Refusal> {
        Iccid::parse_any(param(p, "iccid")?).map_err(|_| {
            refusal(
                codes::CARD_UNKNOWN,
                "卡号不存在 (not a card of this platform)",
            )
        })
    }

    /// A `SimCarrier` error as OneLink would answer it.
    async fn fail(&self, e: CarrierError) -> Response {
        match e {
            CarrierError::Rejected { code, message } => {
                // simgate's own codes are not OneLink's: no pass-through.
                let code = match code.as_str() {
                    "NOT_FOUND" => codes::CARD_UNKNOWN.to_string(),
                    codes::CARD_CANCELLED => SIM_WRONG_STATE.to_string(),
                    _ => code,
                };
                refuse(&code, &message)
            }
            // OneLink publishes the window but no code for it: invented, configurable.
            CarrierError::Deferred { message, .. } => {
                refuse(&self.opts.repeat_window_code, &message)
            }
            CarrierError::RateLimited { retry_after } => {
                let secs = retry_after.map(|d| d.as_secs_f64().ceil().max(1.0) as u64);
                let mut r = (StatusCode::TOO_MANY_REQUESTS, "rate limit").into_response();
                if let Some(s) = secs.and_then(|s| s.to_string().parse().ok()) {
                    r.headers_mut().insert(header::RETRY_AFTER, s);
                }
                r
            }
            CarrierError::Transient(m) | CarrierError::CircuitOpen(m) => {
                (StatusCode::SERVICE_UNAVAILABLE, m).into_response()
            }
            // Applied, but the answer comes too late for the client to see it.
            CarrierError::OutcomeUnknown(_) => {
                tokio::time::sleep(self.opts.unanswered_delay).await;
                ok(json!({}))
            }
        }
    }

    /// The card a query names, with the identifier as it was sent.
    async fn card_or_fail(
        &self,
        input: Input,
    ) -> Result<(crate::carrier::CarrierCard, String), Refusal> {
        let p = self.authenticate(input)?;
        let iccid = self.iccid(&p)?;
        let sent = param(&p, "iccid")?.to_string();
        match self.sim.card(&iccid).await {
            Ok(c) => Ok((c, sent)),
            Err(e) => Err(Box::new(self.fail(e).await)),
        }
    }
}

async fn get_token(State(w): State<Arc<Wire>>, input: Input) -> Response {
    let p = match input.0 {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if let Err(r) = w.check_transid(&p) {
        return *r;
    }
    let appid = p.get("appid").and_then(Value::as_str).unwrap_or("");
    let password = p.get("password").and_then(Value::as_str).unwrap_or("");
    // Both compared in constant time: the simulator is a test double, but it should not teach
    // the wrong habit.
    use subtle::ConstantTimeEq;
    let good = bool::from(appid.as_bytes().ct_eq(w.appid.as_bytes()))
        & bool::from(password.as_bytes().ct_eq(w.password.as_bytes()));
    if !good {
        // 12022 is a reseller's code ([COTONDA]); China Mobile's own is not published.
        return refuse(
            codes::CREDENTIALS_REFUSED,
            "appid或密码错误 (wrong appid or password)",
        );
    }
    let n = w.seq.fetch_add(1, Ordering::SeqCst);
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    let token = format!(
        "{n:04}{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    );
    w.tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(token.clone(), Instant::now() + w.opts.token_ttl);
    w.opts.stats.token_issued.fetch_add(1, Ordering::SeqCst);
    let ttl = w.opts.reported_ttl.unwrap_or(w.opts.token_ttl).as_secs();
    // A JSON integer, as [SIMCTL] decodes it.
    ok(json!({ "token": token, "ttl": ttl }))
}

async fn sim_status(State(w): State<Arc<Wire>>, input: Input) -> Response {
    match w.card_or_fail(input).await {
        Ok((c, _)) => ok(json!({
            "cardStatus": codes::card_status(c.state),
            "lastChangeDate": "",
        })),
        Err(r) => *r,
    }
}

/// The card's access number as the simulated carrier holds it (empty when it has none); it
/// keeps no IMSI or dates: they are answered empty, as the platform does for fields it has no
/// value for.
async fn sim_basic_info(State(w): State<Arc<Wire>>, input: Input) -> Response {
    match w.card_or_fail(input).await {
        Ok((c, sent)) => {
            let msisdn = match w.sim.number_of(&c.iccid).await {
                Ok(n) => n.unwrap_or_default(),
                Err(e) => return w.fail(e).await,
            };
            ok(json!({
                "msisdn": msisdn,
                "imsi": "",
                "iccid": sent,
                "activeDate": "",
                "openDate": "",
            }))
        }
        Err(r) => *r,
    }
}

/// The simulator knows when the card last carried data, and reports it as its newest session,
/// with every field of the dossier's skeleton (§2.6). The values other than `createDate` are
/// invented: APN `CMIOT`, a fake IP, 4G (`rat` 6), online (`01`) while the card is active.
async fn sim_session(State(w): State<Arc<Wire>>, input: Input) -> Response {
    match w.card_or_fail(input).await {
        Ok((c, _)) => {
            let online = if c.state == ServiceState::Active {
                "01"
            } else {
                "00"
            };
            let sessions: Vec<Value> = c
                .last_session
                .at()
                .map(|at| {
                    json!({
                        "apnId": "CMIOT",
                        "status": online,
                        "ip": "10.0.0.1",
                        "ipv6Prefix": "",
                        "ipv6": "",
                        "createDate": at
                            .with_timezone(&chrono_tz::Asia::Shanghai)
                            .format(crate::carrier::http::onelink::BEIJING_FORMAT)
                            .to_string(),
                        "rat": "6",
                    })
                })
                .into_iter()
                .collect();
            ok(json!({ "simSessionList": sessions }))
        }
        Err(r) => *r,
    }
}

async fn sim_data_usage(State(w): State<Arc<Wire>>, input: Input) -> Response {
    match w.card_or_fail(input).await {
        // KB, as a decimal string: exact for any usage below 2^53 bytes.
        // One APN carries it all (the [GOSDK] breakdown, §2.3).
        Ok((c, _)) => ok(json!({
            "dataAmount": kb(c.cycle_usage_bytes),
            "apnUseAmountList": [{ "apnName": "CMIOT", "apnUseAmount": kb(c.cycle_usage_bytes) }],
        })),
        Err(r) => *r,
    }
}

fn kb(bytes: u64) -> String {
    format!("{}", bytes as f64 / 1024.0)
}

async fn change_sim_status(State(w): State<Arc<Wire>>, input: Input) -> Response {
    let p = match w.authenticate(input) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let iccid = match w.iccid(&p) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let sent = match param(&p, "iccid") {
        Ok(s) => s.to_string(),
        Err(r) => return *r,
    };
    let oper = match p.get("operType") {
        Some(v) => v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string()),
        None => return refuse(SIM_BAD_REQUEST, "operType is required"),
    };
    let from = match oper.as_str() {
        codes::OPER_STOP => ServiceState::Active,
        codes::OPER_RESTART => ServiceState::Stopped,
        _ => return refuse(SIM_BAD_REQUEST, "operType not supported by the simulator"),
    };
    // operType 0 is 已激活转已停机, 1 已停机转已激活 (§3): any other starting state is refused
    // (the code is invented). Read without simulated faults, which the change itself meets.
    match w.sim.inspect(&iccid).await {
        Ok(c) if c.state == from => {}
        Ok(c) => {
            return refuse(
                SIM_WRONG_STATE,
                &format!(
                    "operType {oper} needs a card in state {from:?}, not {:?}",
                    c.state
                ),
            )
        }
        Err(e) => return w.fail(e).await,
    }
    let result = if from == ServiceState::Active {
        w.sim.stop(&iccid).await
    } else {
        w.sim.restore(&iccid).await
    };
    match result {
        Ok(receipt) if receipt.in_progress || w.opts.change_reply_order_num => {
            let carrier_id = receipt.in_progress.then_some(receipt.order_id).flatten();
            let order_num = w.order(&iccid, carrier_id);
            // The card's number as the simulated carrier holds it (empty when it has none).
            let msisdn = match w.sim.number_of(&iccid).await {
                Ok(n) => n.unwrap_or_default(),
                Err(e) => return w.fail(e).await,
            };
            ok(json!({ "orderNum": order_num, "msisdn": msisdn }))
        }
        // The identifier as it was sent ([PHP], [SIMCTL], [MEH]).
        Ok(_) => ok(json!({ "iccid": sent })),
        Err(e) => w.fail(e).await,
    }
}

impl Wire {
    /// The `orderNum` of an order (invented format, OneLink's is not found): the simulated
    /// carrier's order id, or [`APPLIED_ORDER`] and a sequence, then `-` and the card's ICCID —
    /// so `/query/order-info`, which names only the order, finds the card again, also after a
    /// restart (the simulated carrier keeps its orders in the database).
    fn order(&self, iccid: &Iccid, carrier_id: Option<String>) -> String {
        let head = carrier_id.unwrap_or_else(|| {
            let n = self.seq.fetch_add(1, Ordering::SeqCst);
            format!("{APPLIED_ORDER}{n:010}")
        });
        let order_num = format!("{head}-{iccid}");
        self.orders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                order_num.clone(),
                SimOrder {
                    created: chrono::Utc::now(),
                },
            );
        order_num
    }
}

impl Wire {
    /// The one IMEI a `tac` stands for at the simulated carrier, which binds single IMEIs, not
    /// ranges (a simplification, invented): the device's IMEI when it starts with the TAC, else
    /// for 14 digits the IMEI they begin with its Luhn check digit added; else None.
    async fn imei_for_tac(&self, iccid: &Iccid, tac: &str) -> Result<Option<String>, CarrierError> {
        let device = self.sim.binding(iccid).await?.and_then(|b| b.imei);
        if let Some(d) = device.filter(|d| d.starts_with(tac)) {
            return Ok(Some(d));
        }
        Ok((tac.len() == 14).then(|| format!("{tac}{}", luhn_digit(tac))))
    }
}

/// The Luhn check digit of an IMEI's first 14 digits.
fn luhn_digit(body: &str) -> u32 {
    let sum: u32 = body
        .bytes()
        .map(|b| u32::from(b - b'0'))
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                (d * 2) / 10 + (d * 2) % 10
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// A time as the simulator writes order dates: yyyyMMddHHmmss, Beijing time ([SMOC]
/// 25165314112 gives the format; the time zone is an inference).
fn compact(at: chrono::DateTime<chrono::Utc>) -> String {
    at.with_timezone(&chrono_tz::Asia::Shanghai)
        .format(crate::carrier::http::onelink::COMPACT_FORMAT)
        .to_string()
}

/// `/query/order-info` (§3.1): `orderNum` only. The simulated carrier's orders are answered
/// from `SimCarrier::order`; an order the simulator invented (`change_reply_order_num`) is
/// `completed`. An `orderNum` of no order is refused with the simulator's own code (none is
/// published).
async fn order_info(State(w): State<Arc<Wire>>, input: Input) -> Response {
    let p = match w.authenticate(input) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let order_num = match param(&p, "orderNum") {
        Ok(n) => n.to_string(),
        Err(r) => return *r,
    };
    // The card and the simulated carrier's id, from the orderNum (see `Wire::order`).
    let parsed = order_num
        .rsplit_once('-')
        .and_then(|(head, iccid)| Some((head.to_string(), Iccid::parse_any(iccid).ok()?)));
    let Some((head, iccid)) = parsed else {
        return refuse(SIM_UNKNOWN_ORDER, "orderNum unknown to the simulator");
    };
    let status = if head.starts_with(APPLIED_ORDER) {
        "completed".to_string()
    } else {
        match w.sim.order(&iccid, &head).await {
            Ok(OrderProgress::Completed) => "completed".to_string(),
            // Words the dossier lists pass through; others become the closest listed one.
            Ok(OrderProgress::Open(word)) => listed_or(word, codes::OrderKind::Open, "inProgress"),
            Ok(OrderProgress::Failed(word)) => listed_or(word, codes::OrderKind::Failed, "failed"),
            // An order the simulated carrier does not know (its own code): none is published.
            Err(CarrierError::Rejected { message, .. }) => {
                return refuse(SIM_UNKNOWN_ORDER, &message)
            }
            Err(e) => return w.fail(e).await,
        }
    };
    let now = chrono::Utc::now();
    let created = w
        .orders
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&order_num)
        .map_or(now, |o| o.created);
    ok(json!({
        "orderNum": order_num,
        "status": status,
        "statusDate": compact(now),
        "createDate": compact(created),
    }))
}

/// `word` when the dossier lists it with `kind`, else `fallback`.
fn listed_or(word: String, kind: codes::OrderKind, fallback: &str) -> String {
    if codes::order_kind(&word) == Some(kind) {
        word
    } else {
        fallback.to_string()
    }
}

/// `/query/card-bind-status` (§7.1): `msisdn` (the card's number at the simulated carrier)
/// and `testType` 0/1 → `result` 0 已分离 / 1 未分离 from `SimCarrier::binding`, `sepTime`
/// for testType 0 only, written `yyyy-MM-dd HH:mm:ss` (invented: its format is not found). A
/// simulated carrier without binding answers `result` 2 查询失败 with the simulator's own
/// `errorCode`.
async fn card_bind_status(State(w): State<Arc<Wire>>, input: Input) -> Response {
    let p = match w.authenticate(input) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let (msisdn, test_type) = match (param(&p, "msisdn"), param(&p, "testType")) {
        (Ok(m), Ok(t)) => (m.to_string(), t.to_string()),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    if ![codes::TEST_TYPE_BILL, codes::TEST_TYPE_NETWORK].contains(&test_type.as_str()) {
        return refuse(SIM_BAD_REQUEST, "testType must be 0 or 1");
    }
    let iccid = match w.sim.card_by_number(&msisdn).await {
        Ok(Some(i)) => i,
        Ok(None) => return refuse(codes::CARD_UNKNOWN, "号码不存在 (no card has this msisdn)"),
        Err(e) => return w.fail(e).await,
    };
    let binding = match w.sim.binding(&iccid).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            return ok(json!({
                "result": codes::BIND_QUERY_FAILED,
                "errorCode": SIM_NO_BINDING,
                "errorDes": "the simulated carrier keeps no binding",
                "sepTime": "",
            }))
        }
        Err(e) => return w.fail(e).await,
    };
    let (result, sep_time) = if binding.separated {
        let at = binding
            .separated_since
            .filter(|_| test_type == codes::TEST_TYPE_BILL)
            .map(|at| {
                at.with_timezone(&chrono_tz::Asia::Shanghai)
                    .format(crate::carrier::http::onelink::BEIJING_FORMAT)
                    .to_string()
            });
        (codes::BIND_SEPARATED, at.unwrap_or_default())
    } else {
        (codes::BIND_NOT_SEPARATED, String::new())
    };
    ok(json!({ "result": result, "errorCode": "", "errorDes": "", "sepTime": sep_time }))
}

/// `/query/sim-imei` (§2.9): the IMEI `SimCarrier::binding` reports, empty when it reports
/// none or keeps no binding.
async fn sim_imei(State(w): State<Arc<Wire>>, input: Input) -> Response {
    match w.card_or_fail(input).await {
        Ok((c, _)) => match w.sim.binding(&c.iccid).await {
            Ok(b) => ok(json!({ "imei": b.and_then(|b| b.imei).unwrap_or_default() })),
            Err(e) => w.fail(e).await,
        },
        Err(r) => *r,
    }
}

/// `/operate/card-bind-by-bill` (§7.2) → `SimCarrier::rebind`: operType 2 unbinds; 1 with
/// bindingStyle 0 binds the current device; 1 with bindingStyle 1 binds `tac` (8-14 digits),
/// handed to the simulated carrier as one IMEI (`Wire::imei_for_tac`: the wire carries only
/// the TAC, the simulated carrier binds single IMEIs).
/// The reply body is not found: `{"status":"0","message":"正确","result":[]}` (the §0.4
/// verbatim success shape), or `result:[{orderNum}]` (invented, the change call's [GOSDK]
/// field) when the simulated carrier takes it as an order in progress.
async fn card_bind_by_bill(State(w): State<Arc<Wire>>, input: Input) -> Response {
    let p = match w.authenticate(input) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let iccid = match w.iccid(&p) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let field = |name: &str| p.get(name).and_then(super::wire::text);
    let rebind = match (
        field("operType").as_deref(),
        field("bindingStyle").as_deref(),
        field("tac"),
    ) {
        (Some(codes::BIND_OPER_UNBIND), _, _) => Rebind::Unbind,
        (Some(codes::BIND_OPER_BIND), Some(codes::BINDING_STYLE_FIRST_BILL), _) => {
            Rebind::CurrentDevice
        }
        (Some(codes::BIND_OPER_BIND), Some(codes::BINDING_STYLE_IMEI_RANGE), Some(tac))
            if codes::TAC_DIGITS.contains(&tac.len()) && tac.bytes().all(|b| b.is_ascii_digit()) =>
        {
            match w.imei_for_tac(&iccid, &tac).await {
                Ok(Some(imei)) => Rebind::Imei(imei),
                Ok(None) => {
                    return refuse(
                        SIM_BAD_REQUEST,
                        "the simulated carrier binds one IMEI: a tac of 14 digits, or one its device's IMEI starts with",
                    )
                }
                Err(e) => return w.fail(e).await,
            }
        }
        _ => {
            return refuse(
                SIM_BAD_REQUEST,
                "operType 2, or operType 1 with bindingStyle 0, or bindingStyle 1 with a tac of 8-14 digits",
            )
        }
    };
    match w.sim.rebind(&iccid, &rebind).await {
        Ok(receipt) if receipt.in_progress => {
            let order_num = w.order(&iccid, receipt.order_id);
            ok(json!({ "orderNum": order_num }))
        }
        Ok(_) => envelope(codes::OK, "正确", Vec::new()),
        Err(e) => w.fail(e).await,
    }
}

/// The reasons `SimCarrier::stop_reasons` gives; a simulated carrier that gives none stops
/// cards only when asked through the API (主动停机: `Manual` while stopped).
async fn sim_stop_reason(State(w): State<Arc<Wire>>, input: Input) -> Response {
    match w.card_or_fail(input).await {
        Ok((c, _)) => {
            let reasons: Vec<StopReason> = match w.sim.stop_reasons(&c.iccid).await {
                Ok(Some(r)) => r.iter().collect(),
                Ok(None) if c.state == ServiceState::Stopped => vec![StopReason::Manual],
                Ok(None) => Vec::new(),
                Err(e) => return w.fail(e).await,
            };
            ok(json!({
                "platformType": "OneLink-CT",
                "stopReason": codes::stop_reason_flag(&reasons),
            }))
        }
        Err(r) => *r,
    }
}

async fn sim_real_name_status(State(w): State<Arc<Wire>>, input: Input) -> Response {
    match w.card_or_fail(input).await {
        Ok((c, _)) => {
            let done = !w.opts.unregistered.contains(&c.iccid);
            // "0" is not a published value: any value but "1" is "not registered" (§2.8).
            let status = if done { codes::REAL_NAME_DONE } else { "0" };
            ok(json!({ "realNameStatus": status, "reason": "" }))
        }
        Err(r) => *r,
    }
}

async fn group_data_usage(State(w): State<Arc<Wire>>, input: Input) -> Response {
    let p = match w.authenticate(input) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let group = match param(&p, "groupId") {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let Some(members) = w.opts.groups.get(group) else {
        // [COTONDA]'s 12034 (群组ID不属于本企业) is not adopted: the simulator's own code.
        return refuse(SIM_BAD_REQUEST, "groupId unknown to the simulator");
    };
    let mut total: u64 = 0;
    for iccid in members {
        match w.sim.card(iccid).await {
            Ok(c) => total = total.saturating_add(c.cycle_usage_bytes),
            Err(e) => return w.fail(e).await,
        }
    }
    // Invented shape: the reply fields of this call are not found (§6).
    ok(json!({ "groupId": group, "useAmount": kb(total) }))
}

/// The cards of a batch call's `iccids` (≤100), or its refusal. The simulator takes batches by
/// `iccids` only (the adapter's form; `msisdns` / `imsis` are refused with its own code).
fn batch_iccids(p: &Params) -> Result<Vec<(String, Option<Iccid>)>, Refusal> {
    let ids = split_ids(param(p, "iccids")?);
    check_batch_size(ids.len())?;
    Ok(ids
        .into_iter()
        .map(|s| {
            let i = Iccid::parse_any(&s).ok();
            (s, i)
        })
        .collect())
}

/// More than 100 cards (§4, §5: "≤100"): refused with the simulator's own code (the
/// platform's is not found).
fn check_batch_size(n: usize) -> Result<(), Refusal> {
    if n == 0 {
        return Err(refusal(SIM_BAD_REQUEST, "no card in the batch"));
    }
    if n > codes::BATCH_LIMIT {
        return Err(refusal(
            SIM_BATCH_TOO_LARGE,
            &format!("每次不超过{}张卡 ({n} sent)", codes::BATCH_LIMIT),
        ));
    }
    Ok(())
}

impl Wire {
    /// `dataAmountList[]` items of a batch usage answer: every card of the batch the simulated
    /// carrier knows, with its usage in `[from, to)` (whole Beijing days; 0 when it used none),
    /// named by the ICCID as sent; cards it does not know are left out (invented: what the
    /// platform does with them is not found).
    async fn usage_items(
        &self,
        cards: &[(String, Option<Iccid>)],
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Value>, CarrierError> {
        let known: Vec<Iccid> = cards.iter().filter_map(|(_, i)| i.clone()).collect();
        let used = self.sim.usage_between(&known, from, to).await?;
        let mut items = Vec::new();
        for (sent, iccid) in cards {
            let Some(iccid) = iccid else { continue };
            match self.sim.inspect(iccid).await {
                Ok(_) => {}
                Err(CarrierError::Rejected { .. }) => continue,
                Err(e) => return Err(e),
            }
            let bytes = used.get(iccid).copied().unwrap_or(0);
            // "dataAmount为0则不返回" is said of apnDataAmountList: none for a card without usage.
            let apns: Vec<Value> = (bytes > 0)
                .then(|| json!({ "apnName": "CMIOT", "apnDataAmount": kb(bytes) }))
                .into_iter()
                .collect();
            items.push(json!({
                "iccid": sent,
                "dataAmount": kb(bytes),
                "apnDataAmountList": apns,
            }));
        }
        Ok(items)
    }

    /// The start (00:00 Beijing) of the month `yyyyMM` names, and of the month after it.
    fn month_bounds(
        query: &str,
    ) -> Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
        use chrono::{Datelike, TimeZone};
        let first = chrono::NaiveDate::parse_from_str(&format!("{query}01"), "%Y%m%d").ok()?;
        let next = if first.month() == 12 {
            chrono::NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)?
        } else {
            chrono::NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)?
        };
        let at = |d: chrono::NaiveDate| {
            chrono_tz::Asia::Shanghai
                .from_local_datetime(&d.and_hms_opt(0, 0, 0)?)
                .single()
                .map(|t| t.with_timezone(&chrono::Utc))
        };
        Some((at(first)?, at(next)?))
    }
}

/// `/query/sim-data-usage-monthly/batch` (§5.2): `iccids` (≤100) and `queryDate` yyyyMM →
/// `result[]{deadLine, dataAmountList[{iccid, dataAmount (KB), apnDataAmountList}]}` (the
/// [GOSDK] shape; `deadLine`'s format is not found: the simulator writes the last day its data
/// covers, yyyyMMdd, invented). The current month runs from the simulated carrier's cycle start
/// to today's 00:00 (Beijing): **up to yesterday**, as the platform says of this call. The
/// simulated carrier has no PB/CT notion: every card lags a day here and none in the single
/// `/query/sim-data-usage`. Invented leniency: the adapter dates `queryDate` by the wall clock,
/// the simulator counts on its card clock (which tests move), so the month of either clock
/// is answered as the current month; earlier months (6 back, §5.2) whole; others refused.
async fn sim_data_usage_monthly_batch(State(w): State<Arc<Wire>>, input: Input) -> Response {
    let p = match w.authenticate(input) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let (cards, query) = match (batch_iccids(&p), param(&p, "queryDate")) {
        (Ok(c), Ok(q)) => (c, q.to_string()),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    let now = w.sim.now();
    let current = [
        crate::carrier::http::onelink::month_query_date(now),
        crate::carrier::http::onelink::month_query_date(chrono::Utc::now()),
    ];
    let (from, to) = if query.len() == 6 && current.contains(&query) {
        (w.sim.cycle_start_at(now), now)
    } else {
        match Wire::month_bounds(&query) {
            Some((from, to))
                if query.len() == 6
                    && to <= now
                    && from >= now - chrono::Duration::days(6 * 31) =>
            {
                (from, to)
            }
            _ => {
                return refuse(
                    SIM_BAD_REQUEST,
                    "queryDate must be yyyyMM, one of the last 6 months",
                )
            }
        }
    };
    match w.usage_items(&cards, from, to).await {
        Ok(items) => {
            let day_start = crate::carrier::sim::day_start_ms(to.timestamp_millis());
            let dead_line = chrono::DateTime::from_timestamp_millis(day_start - 1)
                .map(|t| {
                    t.with_timezone(&chrono_tz::Asia::Shanghai)
                        .format("%Y%m%d")
                        .to_string()
                })
                .unwrap_or_default();
            ok(json!({ "deadLine": dead_line, "dataAmountList": items }))
        }
        Err(e) => w.fail(e).await,
    }
}

/// `/query/sim-data-usage-daily/batch` (§5.1): `iccids` (≤100) and `queryDate` yyyyMMdd, one
/// of the 7 days before the simulated carrier's today → that day's usage, in the same item
/// shape as the monthly call (§5.1 names the same `dataAmountList`; the simulator adds no
/// `deadLine` there, none is documented for the daily call).
async fn sim_data_usage_daily_batch(State(w): State<Arc<Wire>>, input: Input) -> Response {
    let p = match w.authenticate(input) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let (cards, query) = match (batch_iccids(&p), param(&p, "queryDate")) {
        (Ok(c), Ok(q)) => (c, q.to_string()),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    let today = crate::carrier::http::onelink::beijing_day(w.sim.now());
    let day = chrono::NaiveDate::parse_from_str(&query, "%Y%m%d")
        .ok()
        .filter(|d| {
            query.len() == 8 && crate::carrier::http::onelink::daily_day_in_range(today, *d)
        });
    let Some(day) = day else {
        return refuse(
            SIM_BAD_REQUEST,
            "queryDate must be yyyyMMdd, one of the 7 days before today",
        );
    };
    use chrono::TimeZone;
    let Some(from) = day
        .and_hms_opt(0, 0, 0)
        .and_then(|d| chrono_tz::Asia::Shanghai.from_local_datetime(&d).single())
        .map(|t| t.with_timezone(&chrono::Utc))
    else {
        return refuse(SIM_BAD_REQUEST, "queryDate is not a day");
    };
    match w
        .usage_items(&cards, from, from + chrono::Duration::days(1))
        .await
    {
        Ok(items) => ok(json!({ "dataAmountList": items })),
        Err(e) => w.fail(e).await,
    }
}

/// `/query/sim-card-info/batch` (§5.3): `iccids` (≤100) → `result[]{status, message, msisdn,
/// iccid, imsi}` per card ([GOSDK]). The simulated carrier keeps no IMSI (empty); a card it
/// does not know is a record with status `11011` (invented: the per-record codes are not
/// found).
async fn sim_card_info_batch(State(w): State<Arc<Wire>>, input: Input) -> Response {
    let p = match w.authenticate(input) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let cards = match batch_iccids(&p) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let mut records = Vec::new();
    for (sent, iccid) in cards {
        let number = match &iccid {
            Some(i) => match w.sim.inspect(i).await {
                Ok(_) => match w.sim.number_of(i).await {
                    Ok(n) => Some(n.unwrap_or_default()),
                    Err(e) => return w.fail(e).await,
                },
                Err(CarrierError::Rejected { .. }) => None,
                Err(e) => return w.fail(e).await,
            },
            None => None,
        };
        records.push(match number {
            Some(msisdn) => json!({
                "status": codes::OK, "message": "正确",
                "msisdn": msisdn, "iccid": sent, "imsi": "",
            }),
            None => json!({
                "status": codes::CARD_UNKNOWN, "message": "卡号不存在",
                "msisdn": "", "iccid": sent, "imsi": "",
            }),
        });
    }
    envelope(codes::OK, "正确", records)
}

/// `/change/sim-status/batch` (§4): `msisdns` (≤100, `_`-joined), `operType` 9 (已激活→已停机)
/// or 11 (已停机→已激活) with `reason` 01 → `SimCarrier::take_batch` → `result[{jobId}]`. The
/// other operTypes are refused (not simulated). The simulated carrier's batch refusal (one
/// card inside its repeat window fails the batch, naming no card) is answered with
/// [`SIM_BATCH_REPEAT_WINDOW`], ours: the platform's code is not found. Numbers that name no
/// card are left out of the job and reported failed (`11011`) in its result; a batch of only
/// such numbers is refused `11011`.
async fn change_sim_status_batch(State(w): State<Arc<Wire>>, input: Input) -> Response {
    let p = match w.authenticate(input) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let numbers = match param(&p, "msisdns") {
        Ok(m) => split_ids(m),
        Err(r) => return *r,
    };
    if let Err(r) = check_batch_size(numbers.len()) {
        return *r;
    }
    let field = |name: &str| p.get(name).and_then(super::wire::text);
    let change = match field("operType").as_deref() {
        Some(codes::BATCH_OPER_STOP) => Change::Stop,
        Some(codes::BATCH_OPER_RESTORE) => Change::Restore,
        _ => {
            return refuse(
                SIM_BAD_REQUEST,
                "the simulator takes operType 9 (已激活→已停机) and 11 (已停机→已激活) only",
            )
        }
    };
    if field("reason").as_deref() != Some(codes::BATCH_REASON_OWN) {
        return refuse(
            SIM_BAD_REQUEST,
            "reason 01 is required for operType 9 and 11",
        );
    }
    let mut iccids = Vec::new();
    let mut unknown = Vec::new();
    for n in numbers {
        match w.sim.card_by_number(&n).await {
            Ok(Some(i)) => iccids.push(i),
            Ok(None) => unknown.push(n),
            Err(e) => return w.fail(e).await,
        }
    }
    if iccids.is_empty() {
        return refuse(
            codes::CARD_UNKNOWN,
            "号码不存在 (no card has these msisdns)",
        );
    }
    match w.sim.take_batch(&iccids, &change).await {
        Ok(receipt) => {
            w.unknown_in_job
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(receipt.job_id.clone(), unknown);
            ok(json!({ "jobId": receipt.job_id }))
        }
        Err(CarrierError::Deferred { message, .. }) => refuse(SIM_BATCH_REPEAT_WINDOW, &message),
        Err(e) => w.fail(e).await,
    }
}

/// `/query/sim-batch-result` (§4.1): the job id under the account's `batch_result_key` →
/// `result[{jobStatus, resultList[{resultType "1", resultId msisdn, status, message}]}]`.
/// `jobStatus` from `SimCarrier::job`: running 1 (处理中; the simulator never answers 0
/// 待处理), done 2, done with failures 3, failed 4. Only processed cards are listed: applied
/// ones with status 0 正确, refused ones with the simulated carrier's code and message
/// (per-item codes are not found). An unknown job is refused with [`SIM_UNKNOWN_ORDER`].
async fn sim_batch_result(State(w): State<Arc<Wire>>, input: Input) -> Response {
    let p = match w.authenticate(input) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let job_id = match param(&p, w.batch_result_key) {
        Ok(j) => j.to_string(),
        Err(r) => return *r,
    };
    let job = match w.sim.job(&job_id).await {
        Ok(j) => j,
        Err(CarrierError::Rejected { message, .. }) => return refuse(SIM_UNKNOWN_ORDER, &message),
        Err(e) => return w.fail(e).await,
    };
    let unknown = w
        .unknown_in_job
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&job_id)
        .cloned()
        .unwrap_or_default();
    let mut list = Vec::new();
    for (iccid, item) in &job.items {
        let (status, message) = match item {
            BatchItem::Open => continue,
            BatchItem::Applied => (codes::OK.to_string(), "正确".to_string()),
            BatchItem::Failed { code, message } => (code.clone(), message.clone()),
        };
        let msisdn = match w.sim.number_of(iccid).await {
            Ok(n) => n.unwrap_or_default(),
            Err(e) => return w.fail(e).await,
        };
        list.push(json!({
            "resultType": codes::RESULT_TYPE_MSISDN, "resultId": msisdn,
            "status": status, "message": message,
        }));
    }
    for n in &unknown {
        list.push(json!({
            "resultType": codes::RESULT_TYPE_MSISDN, "resultId": n,
            "status": codes::CARD_UNKNOWN, "message": "号码不存在",
        }));
    }
    let job_status = match job.status.as_str() {
        JOB_RUNNING => "1",
        JOB_DONE if unknown.is_empty() => "2",
        JOB_DONE | JOB_DONE_WITH_FAILURES => "3",
        JOB_FAILED => "4",
        _ => "1",
    };
    ok(json!({ "jobStatus": job_status, "resultList": list }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_luhn_digit_completes_an_imei() {
        // 490154203237518: the usual worked example of the IMEI check digit.
        assert_eq!(super::luhn_digit("49015420323751"), 8);
        assert_eq!(super::luhn_digit("86000000000000"), 9);
    }
}
