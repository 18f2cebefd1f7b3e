//! The China Mobile OneLink (EC API v5) wire simulator: the paths, token auth, envelopes and
//! codes the [`OneLink`] adapter speaks, in front of a [`SimCarrier`] whose rules and fault
//! injection decide every answer.
//!
//! Where OneLink's own answer is not public the simulator says so in its codes: an unknown
//! card is `11011` (public client code), but bad credentials are `SIM_AUTH_FAILED`, a bad
//! request is `SIM_BAD_REQUEST`, and the rate limit is HTTP 429 with `Retry-After`.
//!
//! [`OneLink`]: crate::carrier::http::onelink::OneLink

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{json, Map, Value};

use crate::carrier::http::onelink::{codes, OneLinkConfig};
use crate::carrier::sim::SimCarrier;
use crate::carrier::{Carrier, CarrierError, ServiceState};
use crate::domain::{Iccid, StopReason};

/// Not OneLink's codes (theirs are not public): the simulator's own, recognisable as such.
pub const SIM_AUTH_FAILED: &str = "SIM_AUTH_FAILED";
pub const SIM_BAD_REQUEST: &str = "SIM_BAD_REQUEST";

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
}

struct Wire {
    sim: Arc<SimCarrier>,
    appid: String,
    password: String,
    opts: WireOptions,
    tokens: Mutex<HashMap<String, Instant>>,
    seq: AtomicU64,
}

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
    });
    let p = |path: &str| format!("{prefix}{path}");
    axum::Router::new()
        .route(&p("/get/token"), post(get_token))
        .route(&p("/query/sim-status"), post(sim_status))
        .route(&p("/query/sim-data-usage"), post(sim_data_usage))
        .route(&p("/query/sim-session"), post(sim_session))
        .route(&p("/query/sim-basic-info"), post(sim_basic_info))
        .route(&p("/change/sim-status"), post(change_sim_status))
        .route(&p("/query/sim-stop-reason"), post(sim_stop_reason))
        .route(
            &p("/query/sim-real-name-status"),
            post(sim_real_name_status),
        )
        .route(&p("/query/group-data-usage"), post(group_data_usage))
        .with_state(wire)
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

fn params(body: &Bytes) -> Result<Params, Refusal> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(refusal(SIM_BAD_REQUEST, "body must be a JSON object")),
    }
}

fn param<'a>(p: &'a Params, name: &str) -> Result<&'a str, Refusal> {
    p.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| refusal(SIM_BAD_REQUEST, &format!("{name} is required")))
}

impl Wire {
    /// appid + 14 digits of time + 8 digits of sequence.
    fn check_transid(&self, p: &Params) -> Result<(), Refusal> {
        let t = param(p, "transid")?;
        let rest = t.strip_prefix(self.appid.as_str()).unwrap_or("");
        if rest.len() != 22 || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refusal(
                SIM_BAD_REQUEST,
                "transid must be appid + yyyyMMddHHmmss + 8 digits",
            ));
        }
        Ok(())
    }

    fn authenticate(&self, body: &Bytes) -> Result<Params, Refusal> {
        let p = params(body)?;
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
            return Err(refusal(codes::TOKEN_INVALID, "token不存在或已过期"));
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
                let code = if code == "NOT_FOUND" {
                    codes::CARD_UNKNOWN.to_string()
                } else {
                    code
                };
                refuse(&code, &message)
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

    async fn card_or_fail(&self, body: &Bytes) -> Result<crate::carrier::CarrierCard, Refusal> {
        let p = self.authenticate(body)?;
        let iccid = self.iccid(&p)?;
        match self.sim.card(&iccid).await {
            Ok(c) => Ok(c),
            Err(e) => Err(Box::new(self.fail(e).await)),
        }
    }
}

async fn get_token(State(w): State<Arc<Wire>>, body: Bytes) -> Response {
    let p = match params(&body) {
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
        return refuse(SIM_AUTH_FAILED, "appid或密码错误 (wrong appid or password)");
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
    ok(json!({ "token": token, "ttl": ttl.to_string() }))
}

async fn sim_status(State(w): State<Arc<Wire>>, body: Bytes) -> Response {
    match w.card_or_fail(&body).await {
        Ok(c) => ok(json!({
            "cardStatus": codes::card_status(c.state),
            "lastChangeDate": "",
        })),
        Err(r) => *r,
    }
}

/// The simulated carrier keeps no IMSI, MSISDN or dates: they are answered empty, as the
/// platform does for fields it has no value for.
async fn sim_basic_info(State(w): State<Arc<Wire>>, body: Bytes) -> Response {
    match w.card_or_fail(&body).await {
        Ok(_) => ok(json!({ "imsi": "", "msisdn": "", "activeDate": "", "openDate": "" })),
        Err(r) => *r,
    }
}

/// The simulator knows when the card last carried data, and reports it as its newest session.
async fn sim_session(State(w): State<Arc<Wire>>, body: Bytes) -> Response {
    match w.card_or_fail(&body).await {
        Ok(c) => {
            let sessions: Vec<Value> = c
                .last_session
                .at()
                .map(|at| {
                    json!({
                        "createDate": at
                            .with_timezone(&chrono_tz::Asia::Shanghai)
                            .format(crate::carrier::http::onelink::BEIJING_FORMAT)
                            .to_string(),
                    })
                })
                .into_iter()
                .collect();
            ok(json!({ "simSessionList": sessions }))
        }
        Err(r) => *r,
    }
}

async fn sim_data_usage(State(w): State<Arc<Wire>>, body: Bytes) -> Response {
    match w.card_or_fail(&body).await {
        // KB, as a decimal string: exact for any usage below 2^53 bytes.
        Ok(c) => ok(json!({ "dataAmount": kb(c.cycle_usage_bytes) })),
        Err(r) => *r,
    }
}

fn kb(bytes: u64) -> String {
    format!("{}", bytes as f64 / 1024.0)
}

async fn change_sim_status(State(w): State<Arc<Wire>>, body: Bytes) -> Response {
    let p = match w.authenticate(&body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let iccid = match w.iccid(&p) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let oper = match p.get("operType") {
        Some(v) => v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string()),
        None => return refuse(SIM_BAD_REQUEST, "operType is required"),
    };
    let result = match oper.as_str() {
        codes::OPER_STOP => w.sim.stop(&iccid).await,
        codes::OPER_RESTART => w.sim.restore(&iccid).await,
        _ => return refuse(SIM_BAD_REQUEST, "operType not supported by the simulator"),
    };
    match result {
        Ok(()) => ok(json!({})),
        Err(e) => w.fail(e).await,
    }
}

async fn sim_stop_reason(State(w): State<Arc<Wire>>, body: Bytes) -> Response {
    match w.card_or_fail(&body).await {
        // The simulated platform's only stops are the ones asked for through the API (主动停机).
        Ok(c) => {
            let reasons: &[StopReason] = if c.state == ServiceState::Stopped {
                &[StopReason::Manual]
            } else {
                &[]
            };
            ok(json!({ "stopReason": codes::stop_reason_flag(reasons) }))
        }
        Err(r) => *r,
    }
}

async fn sim_real_name_status(State(w): State<Arc<Wire>>, body: Bytes) -> Response {
    match w.card_or_fail(&body).await {
        Ok(c) => {
            let done = !w.opts.unregistered.contains(&c.iccid);
            ok(json!({ "realNameStatus": if done { codes::REAL_NAME_DONE } else { "0" } }))
        }
        Err(r) => *r,
    }
}

async fn group_data_usage(State(w): State<Arc<Wire>>, body: Bytes) -> Response {
    let p = match w.authenticate(&body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let group = match param(&p, "groupId") {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let Some(members) = w.opts.groups.get(group) else {
        return refuse(SIM_BAD_REQUEST, "groupId unknown to the simulator");
    };
    let mut total: u64 = 0;
    for iccid in members {
        match w.sim.card(iccid).await {
            Ok(c) => total = total.saturating_add(c.cycle_usage_bytes),
            Err(e) => return w.fail(e).await,
        }
    }
    ok(json!({ "groupId": group, "useAmount": kb(total) }))
}
