//! The China Unicom Control Center (Cisco Jasper REST) wire simulator: the paths, HTTP Basic
//! auth, JSON bodies and error codes of the adapter in [`crate::carrier::http::jasper`], in front
//! of a [`SimCarrier`] whose rules and fault injection decide every answer.
//!
//! Served paths (relative to the path of `base_url`, e.g. `/rws/api/v1`), each answering with
//! the field set of the dossier's example body (jasper.md; the fixture test
//! `wire_jasper_simulator_answers_in_the_dossier_shapes` holds it to them):
//! `GET devices/{iccid}` (§1), `GET devices/{iccid}/ctdUsages` (§3, with `status`),
//! `GET devices/{iccid}/sessionInfo` (§4), `PUT devices/{iccid}` with
//! `{"status": "ACTIVATED" | "DEACTIVATED" | "RETIRED"}` (§2), and
//! `GET devices?modifiedSince=&status=&pageSize=&pageNumber=` (§5, Search Devices, from
//! [`SimCarrier::modified_since`]: the cards whose state changed after `modifiedSince`, oldest
//! first; `pageSize` 1..=50, default 50; `pageNumber` from 1; `status` filters; `accountId`
//! accepted and ignored). Every call is one request on its own path, counted like the others
//! (and under the fair-use slot).
//!
//! What it refuses, with the platform's published codes (§7):
//! - wrong or missing Basic credentials: 401 `10000001`;
//! - an ICCID it does not hold or cannot parse: 404 `20000001` ("Resource not found - Invalid
//!   ICCID", verbatim [OSGP]);
//! - a PUT body that is not JSON: 400 `10000023`; a field `PUT devices/{iccid}` does not
//!   document ([`EDIT_FIELDS`]), or any query parameter on these calls: 400 `10000028` ("the
//!   request contained one or more unrecognized parameters", [OSGP] 400); a PUT with none of
//!   the fields: `10000011` (一个或多个必填字段缺失);
//! - a second call while one of the account's calls is being answered: `40000029` (fair use is
//!   one call at a time per account, §8 [FAIR]); [`WireOptions::one_call_at_a_time`], on by
//!   default, off behind a deployment's simulator (it follows the account's configured
//!   concurrency, which a legacy `carrier_limits` entry may raise above 1).
//!
//! Invented (no source; configurable or marked so):
//! - the HTTP status of `40000029`: [`WireOptions::rate_limit_status`], default 429 (the likely
//!   pairing, §7, not stated by any source);
//! - the HTTP status 400 of `10000005`, `10000011` (not published);
//! - Search Devices refusals (HTTP 400, status not published), each the §7 code closest to it:
//!   `modifiedSince` missing `10000003` (日期/时间缺失), not RFC 3339 with an offset `10000012`
//!   (日期格式无效; the platform may accept more ISO 8601 forms), `pageSize` outside 1..=50
//!   `10000006`, `pageNumber` below 1 `10000007`, `status` outside §6 `10000005`, another
//!   parameter `10000028`;
//! - what counts as "modified" in Search Devices: a change of state (the simulated carrier has
//!   no rate plans to change), compared strictly after `modifiedSince`; no `totalCount`;
//! - `10000005` (SIM 卡状态无效) for every change the simulated carrier refuses (a cancelled
//!   card, an injected refusal) and for a status it cannot set (TEST_READY, INVENTORY, ...):
//!   the published code closest to both, the platform's own answer is not known;
//! - a PUT with a documented field other than `status` (ratePlan, effectiveDate, ...):
//!   refused with `10000005` too (the simulator changes statuses only);
//! - a change held past the client's timeout is not counted as "in flight" while it is held
//!   (whether the platform counts an abandoned call against fair use is not known);
//! - the message texts, except the two verbatim ones (§7);
//! - the date format ([`crate::carrier::http::jasper::wire::DATE_FORMAT`], §0.4 not found);
//! - `sessionInfo`: a session that started and ended at the card's last traffic, `ipAddress`
//!   `10.0.0.1` after one, null before; never an open session;
//! - what the simulated card does not hold is null (`imsi`, `msisdn`, dates, custom fields),
//!   `ratePlan` is [`WireOptions::rate_plan`], `overageLimitReached` false, SMS and voice 0;
//! - a change inside the simulated carrier's repeat window (its `Deferred`): HTTP 400 with
//!   [`WireOptions::repeat_window_code`], [`INVENTED_REPEAT_WINDOW`] by default (no code is
//!   published);
//! - no order ids (the dossier's PUT reply has none) and no binding call (none in the
//!   dossier): the simulator serves neither; a change the simulated carrier takes as an order
//!   still in progress is answered `{"iccid"}` like any other (the adapter reads it as done);
//! - [`WireOptions::unreadable`]: a test hook serving a status outside the table, a null
//!   status or a null `ctdDataUsage` for chosen cards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::carrier::http::jasper::{
    state_of, status_for, CtdUsageBody, DeviceBody, EditAnswer, ErrorBody, JasperConfig,
    SearchDevice, SearchDevicesBody, SessionInfoBody, CODE_INVALID_CREDENTIALS, CODE_INVALID_ICCID,
    CODE_INVALID_REQUEST, CODE_INVALID_SIM_STATUS, CODE_JSON_NOT_WELL_FORMED, CODE_RATE_LIMIT,
    CODE_REQUIRED_FIELD_MISSING, DATE_FORMAT, EDIT_FIELDS, SEARCH_PAGE_SIZE, SEARCH_PARAMS,
};
use crate::carrier::sim::SimCarrier;
use crate::carrier::{Carrier, CarrierError, ServiceState};
use crate::domain::Iccid;

/// The error code the simulator answers a change inside its repeat window with. Control Center
/// publishes no repeat window and no code for one: invented, outside the published table.
pub const INVENTED_REPEAT_WINDOW: &str = "90000001";

/// How the simulator behaves beyond what the [`SimCarrier`]'s faults decide.
#[derive(Debug, Clone)]
pub struct WireOptions {
    /// How long a change that was applied but is to be answered with a timeout
    /// (`timeout_after_apply_rate`) is held before its answer: longer than the client's request
    /// timeout, so that the client gives up first.
    pub timeout_after_apply_delay: Duration,
    /// The `ratePlan` every simulated device reports.
    pub rate_plan: String,
    /// Answer a call that arrives while another of the account's is being answered with
    /// `40000029` (fair use, §8). On by default: the adapter must never need it off.
    pub one_call_at_a_time: bool,
    /// The HTTP status `40000029` comes with (not published; 429 assumed).
    pub rate_limit_status: StatusCode,
    /// Cards whose `ctdUsages` (and `GET devices`) answers simgate cannot read, by ICCID: a
    /// test hook for "unknown at carrier". Shared, so a test can change it while serving.
    pub unreadable: Arc<Mutex<BTreeMap<String, Unreadable>>>,
    /// The code (HTTP 400) a change inside the simulated carrier's repeat window (its
    /// `Deferred`) is refused with. Invented ([`INVENTED_REPEAT_WINDOW`] by default): Control
    /// Center publishes none.
    pub repeat_window_code: String,
}

/// How a card's answers are made unreadable (see [`WireOptions::unreadable`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unreadable {
    /// The status sent instead of the card's: `Some(None)` is a null status, `Some(Some(s))`
    /// any text (one outside the table); None keeps the card's.
    pub status: Option<Option<String>>,
    /// Send `ctdDataUsage: null`.
    pub null_usage: bool,
}

impl Default for WireOptions {
    fn default() -> Self {
        WireOptions {
            // The adapter's default request timeout is 10 s.
            timeout_after_apply_delay: Duration::from_secs(30),
            rate_plan: "SIMGATE_SIM_PLAN".into(),
            one_call_at_a_time: true,
            rate_limit_status: StatusCode::TOO_MANY_REQUESTS,
            unreadable: Arc::default(),
            repeat_window_code: INVENTED_REPEAT_WINDOW.to_string(),
        }
    }
}

struct Wire {
    sim: Arc<SimCarrier>,
    username: String,
    api_key: String,
    opts: WireOptions,
    /// A call of the account is being answered.
    busy: AtomicBool,
}

/// The account's one call in flight; freed when dropped.
struct Slot<'a>(Option<&'a AtomicBool>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.0 {
            b.store(false, Ordering::Release);
        }
    }
}

/// The router, with its routes under the path of `cfg.base_url` (e.g. `/rws/api/v1`; at the
/// root when `base_url` is not a URL), so that an adapter whose `base_url` has the same path and
/// this server's address reaches it. Credentials are `cfg`'s.
pub fn router(sim: Arc<SimCarrier>, cfg: &JasperConfig, opts: WireOptions) -> Router {
    let prefix = url::Url::parse(&cfg.base_url)
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default();
    // Whatever the options say, hold an applied change past the configured client's timeout:
    // answering earlier would turn the "timeout after apply" case into a plain success.
    let floor = Duration::from_millis(cfg.timeouts.request_ms.saturating_add(1_000));
    let opts = WireOptions {
        timeout_after_apply_delay: opts.timeout_after_apply_delay.max(floor),
        ..opts
    };
    let state = Arc::new(Wire {
        sim,
        username: cfg.username.clone(),
        api_key: cfg.api_key.expose().to_string(),
        opts,
        busy: AtomicBool::new(false),
    });
    Router::new()
        .route(&format!("{prefix}/devices"), get(search_devices))
        .route(
            &format!("{prefix}/devices/{{iccid}}"),
            get(get_device).put(edit_device),
        )
        .route(
            &format!("{prefix}/devices/{{iccid}}/ctdUsages"),
            get(ctd_usages),
        )
        .route(
            &format!("{prefix}/devices/{{iccid}}/sessionInfo"),
            get(session_info),
        )
        .with_state(state)
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(s) => (status, [(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    json(
        status,
        &ErrorBody {
            error_message: Some(message.into()),
            error_code: Some(code.into()),
        },
    )
}

fn invalid_request(what: impl std::fmt::Display) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        CODE_INVALID_REQUEST,
        format!(
            "Invalid request: the request contained one or more unrecognized parameters ({what})."
        ),
    )
}

fn invalid_iccid() -> Response {
    error(
        StatusCode::NOT_FOUND,
        CODE_INVALID_ICCID,
        "Resource not found - Invalid ICCID",
    )
}

impl Wire {
    /// The account's call slot, or the fair-use refusal when another call holds it.
    fn slot(&self) -> Result<Slot<'_>, Box<Response>> {
        if !self.opts.one_call_at_a_time {
            return Ok(Slot(None));
        }
        match self
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(Slot(Some(&self.busy))),
            Err(_) => Err(Box::new(self.rate_limited(
                "one call at a time per account: another call is being answered",
            ))),
        }
    }

    fn rate_limited(&self, why: &str) -> Response {
        error(
            self.opts.rate_limit_status,
            CODE_RATE_LIMIT,
            format!("Rate limit exceeded: {why}."),
        )
    }

    /// What the test hook makes of this card's answers.
    fn unreadable(&self, iccid: &Iccid) -> Unreadable {
        self.unreadable_lock()
            .get(iccid.as_str())
            .cloned()
            .unwrap_or_default()
    }

    fn unreadable_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Unreadable>> {
        // A test that panicked while holding it leaves a map that is still whole.
        self.opts
            .unreadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Checks Basic `username:apiKey` (in constant time), then the ICCID of the path. The
    /// refusal is boxed: a whole response is large to carry in a Result.
    fn admit(&self, headers: &HeaderMap, raw_iccid: &str) -> Result<Iccid, Box<Response>> {
        self.authorize(headers)?;
        Iccid::parse_any(raw_iccid).map_err(|_| Box::new(invalid_iccid()))
    }

    /// Checks Basic `username:apiKey`, in constant time.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Box<Response>> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|v| {
                base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .ok()
            });
        let expected = format!("{}:{}", self.username, self.api_key);
        let authorized = given.is_some_and(|g| bool::from(g.as_slice().ct_eq(expected.as_bytes())));
        if !authorized {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                CODE_INVALID_CREDENTIALS,
                "Invalid credentials",
            )));
        }
        Ok(())
    }

    /// A [`SimCarrier`] failure in the platform's terms. An applied change answered with a
    /// timeout is handled by the caller, which has to delay.
    fn failure(&self, e: CarrierError) -> Response {
        match e {
            CarrierError::Rejected { code, .. } if code == "NOT_FOUND" => invalid_iccid(),
            // The simulator's own refusals (a cancelled card, an injected fault) have no
            // documented Control Center code; 10000005 (SIM 卡状态无效, an invalid SIM status
            // change) is the published code closest to both (a choice: HTTP status not given).
            CarrierError::Rejected { message, .. } => {
                error(StatusCode::BAD_REQUEST, CODE_INVALID_SIM_STATUS, message)
            }
            CarrierError::RateLimited { .. } => self.rate_limited("injected"),
            // A repeat window of the simulated carrier: Control Center publishes none (invented).
            CarrierError::Deferred { message, .. } => error(
                StatusCode::BAD_REQUEST,
                &self.opts.repeat_window_code,
                message,
            ),
            CarrierError::Transient(_)
            | CarrierError::CircuitOpen(_)
            | CarrierError::OutcomeUnknown(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
            }
        }
    }
}

/// A read request's answer: one call at a time, no query parameters, credentials checked, the
/// ICCID parsed, the simulated carrier's faults applied, then `body` of the card as a 200, or
/// the platform's refusal instead.
async fn answer_card<B: serde::Serialize>(
    w: &Wire,
    headers: &HeaderMap,
    query: Option<String>,
    iccid: &str,
    body: impl FnOnce(&crate::carrier::CarrierCard, Unreadable) -> B,
) -> Response {
    let _slot = match w.slot() {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let iccid = match w.admit(headers, iccid) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    // None of the calls served takes a parameter in the query.
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        return invalid_request(format!("query {q:?}"));
    }
    match w.sim.card(&iccid).await {
        Ok(c) => json(StatusCode::OK, &body(&c, w.unreadable(&iccid))),
        Err(e) => w.failure(e),
    }
}

/// The status a card's answers carry: its own, or the test hook's.
fn status_text(c: &crate::carrier::CarrierCard, u: &Unreadable) -> Option<String> {
    match &u.status {
        Some(s) => s.clone(),
        None => Some(status_for(c.state).to_string()),
    }
}

async fn get_device(
    State(w): State<Arc<Wire>>,
    Path(iccid): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    answer_card(&w, &headers, query, &iccid, |c, u| DeviceBody {
        iccid: c.iccid.as_str().to_string(),
        imei: Some(String::new()),
        status: status_text(c, &u),
        rate_plan: Some(w.opts.rate_plan.clone()),
        communication_plan: Some(w.opts.rate_plan.clone()),
        global_sim_type: Some(String::new()),
        ..DeviceBody::default()
    })
    .await
}

/// The simulated carrier records when a card last carried data: a session that started and
/// ended then (invented: it never shows an open session).
async fn session_info(
    State(w): State<Arc<Wire>>,
    Path(iccid): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    answer_card(&w, &headers, query, &iccid, |c, _| {
        let at = c
            .last_session
            .at()
            .map(|t| t.format(DATE_FORMAT).to_string());
        SessionInfoBody {
            iccid: c.iccid.as_str().to_string(),
            ip_address: at.as_ref().map(|_| "10.0.0.1".to_string()),
            date_session_started: at.clone(),
            date_session_ended: at,
            ipv6_address: None,
        }
    })
    .await
}

async fn ctd_usages(
    State(w): State<Arc<Wire>>,
    Path(iccid): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    answer_card(&w, &headers, query, &iccid, |c, u| CtdUsageBody {
        iccid: c.iccid.as_str().to_string(),
        imei: Some(String::new()),
        status: status_text(c, &u),
        rate_plan: Some(w.opts.rate_plan.clone()),
        communication_plan: Some(w.opts.rate_plan.clone()),
        ctd_data_usage: (!u.null_usage).then_some(c.cycle_usage_bytes),
        ctd_sms_usage: Some(0),
        ctd_voice_usage: Some(0),
        // The simulated carrier counts no sessions per cycle: one if the card ever had one.
        ctd_session_count: Some(u64::from(c.last_session.at().is_some())),
        overage_limit_reached: Some(false),
        overage_limit_override: Some("DEFAULT".into()),
        ..CtdUsageBody::default()
    })
    .await
}

/// The status a PUT body asks for: the field set checked against §2 first.
fn edit_status(body: &[u8]) -> Result<String, Box<Response>> {
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|_| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                CODE_JSON_NOT_WELL_FORMED,
                "The JSON in the request is not well formed. Please ensure that commas, colons, braces etc. are formatted properly.",
            ))
        })?;
    let unknown: Vec<&str> = fields
        .keys()
        .map(String::as_str)
        .filter(|k| !EDIT_FIELDS.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(Box::new(invalid_request(unknown.join(", "))));
    }
    if fields.is_empty() {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            CODE_REQUIRED_FIELD_MISSING,
            "One or more required fields are missing.",
        )));
    }
    let others: Vec<&str> = fields
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "status")
        .collect();
    match fields.get("status") {
        Some(serde_json::Value::String(s)) if others.is_empty() => Ok(s.clone()),
        _ => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            CODE_INVALID_SIM_STATUS,
            format!(
                "the simulator changes the status only (a string), not {:?}",
                fields.keys().collect::<Vec<_>>()
            ),
        ))),
    }
}

async fn edit_device(
    State(w): State<Arc<Wire>>,
    Path(iccid): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let slot = match w.slot() {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let iccid = match w.admit(&headers, &iccid) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        return invalid_request(format!("query {q:?}"));
    }
    let status = match edit_status(&body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    // Only the statuses simgate's states map to can be set here; which code Control Center
    // gives other status changes is not public: 10000005 (SIM 卡状态无效) is the closest.
    let result = match state_of(&status).filter(|s| status_for(*s) == status) {
        Some(ServiceState::Active) => w.sim.restore(&iccid).await,
        Some(ServiceState::Stopped) => w.sim.stop(&iccid).await,
        Some(ServiceState::Cancelled) => w.sim.cancel(&iccid).await,
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                CODE_INVALID_SIM_STATUS,
                format!("the simulator cannot set status {status:?}"),
            )
        }
    };
    let ok = || {
        json(
            StatusCode::OK,
            &EditAnswer {
                iccid: iccid.as_str().to_string(),
            },
        )
    };
    match result {
        Ok(_) => ok(),
        // The change was applied: answer only after the client has given up. The client has
        // moved on by then; the held answer does not count as its call in flight (invented).
        Err(CarrierError::OutcomeUnknown(_)) => {
            drop(slot);
            tokio::time::sleep(w.opts.timeout_after_apply_delay).await;
            ok()
        }
        Err(e) => w.failure(e),
    }
}

/// A Search Devices query, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Search {
    since: chrono::DateTime<chrono::Utc>,
    status: Option<String>,
    page_size: u32,
    page: u32,
}

/// A refused Search Devices query: the §7 code and the message (HTTP 400).
type Refusal = (&'static str, String);

/// Reads the query of `GET devices` (§5). Every refusal is HTTP 400 (the status of these codes
/// is not published) with the §7 code closest to it: a parameter §5 does not document
/// 10000028; `modifiedSince` missing 10000003 (日期/时间缺失), not RFC 3339 with an offset
/// 10000012 (日期格式无效: the platform may accept more ISO 8601 forms, the simulator accepts
/// the one the adapter and [SSU] send); `pageSize` not 1..=50 10000006 (页面大小无效);
/// `pageNumber` not ≥ 1 10000007 (页面编号无效); `status` outside §6 10000005 (SIM 卡状态无效).
/// `accountId` is accepted and ignored (a simulated account is one enterprise account).
fn search_of(query: Option<&str>) -> Result<Search, Refusal> {
    let mut since = None;
    let mut status = None;
    let mut page_size = SEARCH_PAGE_SIZE;
    let mut page = 1;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "modifiedSince" => {
                since = Some(
                    chrono::DateTime::parse_from_rfc3339(&v)
                        .map_err(|_| ("10000012", format!("Invalid date format: {v:?}")))?
                        .with_timezone(&chrono::Utc),
                )
            }
            "status" => {
                if state_of(&v).is_none() {
                    return Err((
                        CODE_INVALID_SIM_STATUS,
                        format!("Invalid SIM status: {v:?}"),
                    ));
                }
                status = Some(v.into_owned());
            }
            "pageSize" => {
                page_size = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=SEARCH_PAGE_SIZE).contains(n))
                    .ok_or_else(|| ("10000006", format!("Invalid page size: {v:?}")))?
            }
            "pageNumber" => {
                page = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| ("10000007", format!("Invalid page number: {v:?}")))?
            }
            "accountId" => {}
            other => {
                debug_assert!(!SEARCH_PARAMS.contains(&other));
                return Err((
                    CODE_INVALID_REQUEST,
                    format!(
                        "Invalid request: the request contained one or more unrecognized parameters (parameter {other:?})."
                    ),
                ));
            }
        }
    }
    let since = since.ok_or_else(|| ("10000003", "modifiedSince is missing.".to_string()))?;
    Ok(Search {
        since,
        status,
        page_size,
        page,
    })
}

/// How many cards the simulator reads a time when it filters by status itself.
const FILTER_CHUNK: u32 = 500;

/// `GET devices?modifiedSince=&status=&pageSize=&pageNumber=` (§5): the simulated carrier's
/// cards whose state changed after `modifiedSince`, oldest change first, in the §5 skeleton
/// (`pageNumber`, `devices[{iccid, status, ratePlan, communicationPlan}]`, `lastPage`; no
/// `totalCount`, which only [CCTS] reads). "Modified" is a change of state only: the
/// simulated carrier has no rate plans to change. With `status`, the simulator reads every
/// modified card and pages the ones with that status itself (a simulator's card count is
/// small).
async fn search_devices(
    State(w): State<Arc<Wire>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let _slot = match w.slot() {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Err(r) = w.authorize(&headers) {
        return *r;
    }
    let q = match search_of(query.as_deref()) {
        Ok(q) => q,
        Err((code, message)) => return error(StatusCode::BAD_REQUEST, code, message),
    };
    let listed: Result<Listed, CarrierError> = match &q.status {
        None => w
            .sim
            .modified_since(q.since, q.page, q.page_size)
            .await
            .map(|(rows, last)| (rows.into_iter().map(|(i, s, _)| (i, s)).collect(), last)),
        Some(status) => filtered(&w.sim, q.since, status, q.page, q.page_size).await,
    };
    let (rows, last) = match listed {
        Ok(l) => l,
        Err(e) => return w.failure(e),
    };
    let devices = rows
        .into_iter()
        .map(|(iccid, state)| {
            let u = w.unreadable(&iccid);
            SearchDevice {
                status: match u.status {
                    Some(s) => s,
                    None => Some(status_for(state).to_string()),
                },
                iccid: iccid.as_str().to_string(),
                rate_plan: Some(w.opts.rate_plan.clone()),
                communication_plan: Some(w.opts.rate_plan.clone()),
            }
        })
        .collect();
    json(
        StatusCode::OK,
        &SearchDevicesBody {
            page_number: Some(q.page),
            devices,
            last_page: Some(last),
            total_count: None,
        },
    )
}

type Listed = (Vec<(Iccid, ServiceState)>, bool);

/// Page `page` of the modified cards whose status is `status`: every modified card read in
/// chunks, filtered, then paged.
async fn filtered(
    sim: &SimCarrier,
    since: chrono::DateTime<chrono::Utc>,
    status: &str,
    page: u32,
    page_size: u32,
) -> Result<Listed, CarrierError> {
    let mut all = Vec::new();
    for chunk in 1.. {
        let (rows, last) = sim.modified_since(since, chunk, FILTER_CHUNK).await?;
        all.extend(
            rows.into_iter()
                .filter(|(_, s, _)| status_for(*s) == status)
                .map(|(i, s, _)| (i, s)),
        );
        if last {
            break;
        }
    }
    let from = (page as usize - 1).saturating_mul(page_size as usize);
    let cards: Vec<_> = all
        .iter()
        .skip(from)
        .take(page_size as usize)
        .cloned()
        .collect();
    let last = from.saturating_add(page_size as usize) >= all.len();
    Ok((cards, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_query_is_checked_against_section_5() {
        let ok = search_of(Some(
            "modifiedSince=2016-04-18T17%3A31%3A34%2B00%3A00&pageSize=50&pageNumber=2&status=ACTIVATED&accountId=1",
        ))
        .expect("the dossier's example");
        assert_eq!(ok.since.to_rfc3339(), "2016-04-18T17:31:34+00:00");
        assert_eq!((ok.page_size, ok.page), (50, 2));
        assert_eq!(ok.status.as_deref(), Some("ACTIVATED"));
        let d = search_of(Some("modifiedSince=2016-04-18T17%3A31%3A34Z")).expect("defaults");
        assert_eq!((d.page_size, d.page, d.status), (50, 1, None));
        let since = "modifiedSince=2016-04-18T17%3A31%3A34%2B00%3A00";
        for (q, want) in [
            (None, "10000003"),
            (Some("pageSize=50".to_string()), "10000003"),
            (Some("modifiedSince=2016-04-18".to_string()), "10000012"),
            (Some(format!("{since}&pageSize=51")), "10000006"),
            (Some(format!("{since}&pageSize=0")), "10000006"),
            (Some(format!("{since}&pageSize=x")), "10000006"),
            (Some(format!("{since}&pageNumber=0")), "10000007"),
            (Some(format!("{since}&status=SUSPENDED")), "10000005"),
            (Some(format!("{since}&sort=asc")), "10000028"),
        ] {
            let (code, _) = search_of(q.as_deref()).expect_err("refused");
            assert_eq!(code, want, "{q:?}");
        }
    }
}
