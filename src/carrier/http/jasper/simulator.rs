//! The China Unicom Control Center (Cisco Jasper REST) wire simulator: the paths, HTTP Basic
//! auth, JSON bodies and error codes of the adapter in [`crate::carrier::http::jasper`], in front
//! of a [`SimCarrier`] whose rules and fault injection decide every answer.
//!
//! Served paths (relative to the path of `base_url`, e.g. `/rws/api/v1`):
//! `GET devices/{iccid}`, `GET devices/{iccid}/ctdUsages`, `PUT devices/{iccid}` with
//! `{"status": "ACTIVATED" | "DEACTIVATED" | "RETIRED"}`.
//!
//! What the simulated card does not hold is answered plainly: `imsi`, `msisdn` and
//! `dateActivated` are null, `ratePlan` is [`WireOptions::rate_plan`], `overageLimitReached`
//! is false (the simulator knows no plan limits).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::carrier::http::jasper::{
    state_of, status_for, CtdUsageBody, DeviceBody, EditAnswer, EditBody, ErrorBody, JasperConfig,
    CODE_INVALID_CREDENTIALS, CODE_INVALID_ICCID, CODE_JSON_NOT_WELL_FORMED, CODE_RATE_LIMIT,
};
use crate::carrier::sim::SimCarrier;
use crate::carrier::{Carrier, CarrierError, ServiceState};
use crate::domain::Iccid;

/// How the simulator behaves beyond what the [`SimCarrier`]'s faults decide.
#[derive(Debug, Clone)]
pub struct WireOptions {
    /// How long a change that was applied but is to be answered with a timeout
    /// (`timeout_after_apply_rate`) is held before its answer: longer than the client's request
    /// timeout, so that the client gives up first.
    pub timeout_after_apply_delay: Duration,
    /// The `ratePlan` every simulated device reports.
    pub rate_plan: String,
}

impl Default for WireOptions {
    fn default() -> Self {
        WireOptions {
            // The adapter's default request timeout is 10 s.
            timeout_after_apply_delay: Duration::from_secs(30),
            rate_plan: "SIMGATE_SIM_PLAN".into(),
        }
    }
}

struct Wire {
    sim: Arc<SimCarrier>,
    username: String,
    api_key: String,
    opts: WireOptions,
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
    });
    Router::new()
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

fn invalid_iccid() -> Response {
    error(
        StatusCode::NOT_FOUND,
        CODE_INVALID_ICCID,
        "Resource not found - Invalid ICCID.",
    )
}

impl Wire {
    /// Checks Basic `username:apiKey` (in constant time), then the ICCID of the path. The
    /// refusal is boxed: a whole response is large to carry in a Result.
    fn admit(&self, headers: &HeaderMap, raw_iccid: &str) -> Result<Iccid, Box<Response>> {
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
                "Invalid credentials.",
            )));
        }
        Iccid::parse_any(raw_iccid).map_err(|_| Box::new(invalid_iccid()))
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
                error(StatusCode::BAD_REQUEST, "10000005", message)
            }
            // The HTTP status of a fair-use overrun is not documented publicly; 429 is assumed.
            CarrierError::RateLimited { .. } => error(
                StatusCode::TOO_MANY_REQUESTS,
                CODE_RATE_LIMIT,
                "Rate limit exceeded.",
            ),
            CarrierError::Transient(_)
            | CarrierError::CircuitOpen(_)
            | CarrierError::OutcomeUnknown(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
            }
        }
    }
}

/// A read request's answer: credentials checked, the ICCID parsed, the simulated carrier's
/// faults applied, then `body` of the card as a 200, or the platform's refusal instead.
async fn answer_card<B: serde::Serialize>(
    w: &Wire,
    headers: &HeaderMap,
    iccid: &str,
    body: impl FnOnce(&crate::carrier::CarrierCard) -> B,
) -> Response {
    let iccid = match w.admit(headers, iccid) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    match w.sim.card(&iccid).await {
        Ok(c) => json(StatusCode::OK, &body(&c)),
        Err(e) => w.failure(e),
    }
}

async fn get_device(
    State(w): State<Arc<Wire>>,
    Path(iccid): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer_card(&w, &headers, &iccid, |c| DeviceBody {
        iccid: c.iccid.as_str().to_string(),
        status: status_for(c.state).to_string(),
        rate_plan: Some(w.opts.rate_plan.clone()),
        date_activated: None,
        imsi: None,
        msisdn: None,
    })
    .await
}

/// The simulated carrier records when a card last carried data: a session that started and
/// ended then.
async fn session_info(
    State(w): State<Arc<Wire>>,
    Path(iccid): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer_card(&w, &headers, &iccid, |c| {
        let at = c.last_session.at().map(|t| {
            t.format(crate::carrier::http::jasper::DATE_FORMAT)
                .to_string()
        });
        crate::carrier::http::jasper::SessionInfoBody {
            iccid: c.iccid.as_str().to_string(),
            date_session_started: at.clone(),
            date_session_ended: at,
        }
    })
    .await
}

async fn ctd_usages(
    State(w): State<Arc<Wire>>,
    Path(iccid): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer_card(&w, &headers, &iccid, |c| CtdUsageBody {
        iccid: c.iccid.as_str().to_string(),
        ctd_data_usage: c.cycle_usage_bytes,
        overage_limit_reached: false,
    })
    .await
}

async fn edit_device(
    State(w): State<Arc<Wire>>,
    Path(iccid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let iccid = match w.admit(&headers, &iccid) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let edit: EditBody = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                CODE_JSON_NOT_WELL_FORMED,
                "The JSON in the request is not well formed.",
            )
        }
    };
    // Only the statuses simgate's states map to can be set here; which code Control Center
    // gives other status changes is not public: 10000005 (SIM 卡状态无效) is the closest.
    let result = match state_of(&edit.status).filter(|s| status_for(*s) == edit.status) {
        Some(ServiceState::Active) => w.sim.restore(&iccid).await,
        Some(ServiceState::Stopped) => w.sim.stop(&iccid).await,
        Some(ServiceState::Cancelled) => w.sim.cancel(&iccid).await,
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "10000005",
                format!("the simulator cannot set status {:?}", edit.status),
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
        Ok(()) => ok(),
        // The change was applied: answer only after the client has given up.
        Err(CarrierError::OutcomeUnknown(_)) => {
            tokio::time::sleep(w.opts.timeout_after_apply_delay).await;
            ok()
        }
        Err(e) => w.failure(e),
    }
}
