//! The China Telecom CMP (m2m_ec) wire simulator: `GET {prefix}/query.do` and
//! `GET {prefix}/app/serviceAccept.do` with the platform's auth (`passWord` and `sign` in
//! Telecom's DES), envelopes and codes, exactly as `crate::carrier::http::cmp` speaks them, in
//! front of a [`SimCarrier`] whose rules and fault injection decide every answer.
//!
//! The prefix is the path of the configured `base_url` (e.g. `/m2m_ec`), so one configuration
//! serves both the adapter and this simulator.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::carrier::http::cmp::{
    crypt, format_mb, main_status_code, request_sign, ChangeReply, ChangeResponse, CmpConfig,
    JsonResult, OnlineReply, ProductInfo, RealNameReply, StatusReply, ALREADY_ORDERED, CHANGE_OK,
    CHANGE_PATH, M_DISABLE, M_ONLINE, M_REAL_NAME, M_STATUS, M_TRAFFIC, ORDER_RESTORE, ORDER_STOP,
    QUERY_PATH, RATE_LIMITED, TIME_FORMAT,
};
use crate::carrier::sim::SimCarrier;
use crate::carrier::{Carrier, CarrierError, ServiceState};
use crate::domain::Iccid;

/// How the simulator behaves on the wire beyond what `SimCarrier` decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireOptions {
    /// How long a change that was applied but must look unanswered (OutcomeUnknown at the
    /// simulated carrier) is held before its answer. Must exceed the client's request timeout.
    pub timeout_after_apply_delay: Duration,
}

impl Default for WireOptions {
    fn default() -> Self {
        // Longer than the adapter's default 10 s request timeout.
        WireOptions {
            timeout_after_apply_delay: Duration::from_secs(15),
        }
    }
}

struct Wire {
    sim: Arc<SimCarrier>,
    user_id: String,
    password: String,
    key: String,
    opts: WireOptions,
}

/// The router; mount it at the root of a listener.
pub fn router(sim: Arc<SimCarrier>, cfg: &CmpConfig, opts: WireOptions) -> Router {
    let prefix = url::Url::parse(&cfg.base_url)
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default();
    let wire = Arc::new(Wire {
        sim,
        user_id: cfg.user_id.clone(),
        password: cfg.password.expose().to_string(),
        key: cfg.key.expose().to_string(),
        opts,
    });
    Router::new()
        .route(&format!("{prefix}{QUERY_PATH}"), get(query))
        .route(&format!("{prefix}{CHANGE_PATH}"), get(change))
        .with_state(wire)
}

type Params = Query<HashMap<String, String>>;

async fn query(State(w): State<Arc<Wire>>, Query(p): Params) -> Response {
    handle(&w, p, false).await
}

async fn change(State(w): State<Arc<Wire>>, Query(p): Params) -> Response {
    handle(&w, p, true).await
}

fn json(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body,
    )
        .into_response()
}

fn xml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml;charset=UTF-8")], body).into_response()
}

/// The platform's refusal envelope (see the adapter's envelope notes).
fn refuse(code: &str, message: &str) -> Response {
    let body = JsonResult {
        result_code: Some(code.to_string()),
        result_msg: Some(message.to_string()),
    };
    json(serde_json::to_string(&body).unwrap_or_default())
}

fn to_xml<T: serde::Serialize>(v: &T) -> Response {
    match quick_xml::se::to_string(v) {
        Ok(s) => xml(s),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A `SimCarrier` error on the wire.
fn carrier_error(e: CarrierError) -> Response {
    match e {
        CarrierError::Rejected { code, message } => refuse(&code, &message),
        CarrierError::RateLimited { .. } => refuse(RATE_LIMITED, "too many requests"),
        CarrierError::Transient(m) | CarrierError::CircuitOpen(m) => {
            (StatusCode::SERVICE_UNAVAILABLE, m).into_response()
        }
        // Only changes produce it; `handle` deals with it before this point.
        CarrierError::OutcomeUnknown(m) => (StatusCode::GATEWAY_TIMEOUT, m).into_response(),
    }
}

/// The platform checks the sign with the password it decrypts from `passWord`: a wrong key
/// garbles both, so the sign fails (-3); a right key with a wrong password signs consistently
/// and fails the account check (-1).
fn authenticate(w: &Wire, p: &HashMap<String, String>) -> Result<(), (&'static str, &'static str)> {
    let (Some(pass), Some(sign)) = (p.get("passWord"), p.get("sign")) else {
        return Err(("-2", "missing passWord or sign"));
    };
    let Some(user) = p.get("user_id") else {
        return Err(("-2", "missing user_id"));
    };
    let plain = crypt::decrypt(pass, &w.key).unwrap_or_default();
    let params: Vec<(&str, String)> = p.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let expected = request_sign(&params, &plain, &w.key).unwrap_or_default();
    if expected.is_empty() || !expected.eq_ignore_ascii_case(sign) {
        return Err(("-3", "sign check failed"));
    }
    if *user != w.user_id || plain != w.password {
        return Err(("-1", "bad user_id or password"));
    }
    Ok(())
}

async fn handle(w: &Wire, p: HashMap<String, String>, change_path: bool) -> Response {
    let Some(method) = p.get("method").cloned() else {
        return refuse("-2", "missing method");
    };
    if let Err((code, message)) = authenticate(w, &p) {
        return refuse(code, message);
    }
    let Some(raw) = p.get("iccid").or_else(|| p.get("access_number")) else {
        return refuse("-2", "missing iccid or access_number");
    };
    let Ok(iccid) = Iccid::parse_any(raw) else {
        return refuse("-4", "no such card");
    };
    match method.as_str() {
        // Public clients send disabledNumber to either path; both accept it.
        M_DISABLE => disabled_number(w, &iccid, p.get("orderTypeId").map(String::as_str)).await,
        _ if change_path => refuse("-2", "unknown method for serviceAccept.do"),
        M_STATUS => match w.sim.card(&iccid).await {
            Ok(c) => {
                let code = main_status_code(c.state);
                let reply = StatusReply {
                    result_code: "0".into(),
                    result_msg: "处理成功！".into(),
                    transaction_id: transaction_id(),
                    number: iccid.to_string(),
                    serv_create_date: String::new(),
                    product_info: vec![ProductInfo {
                        status_code: code.into(),
                        status_name: status_name(code).into(),
                    }],
                };
                json(serde_json::to_string(&reply).unwrap_or_default())
            }
            Err(e) => carrier_error(e),
        },
        M_TRAFFIC => match w.sim.card(&iccid).await {
            Ok(c) => xml(format!(
                "<root><web:NEW_DATA_TICKET_QRsp xmlns:web=\"http://www.example.org/webservice\">\
                 <IRESULT>0</IRESULT><TOTAL_BYTES_CNT>{}</TOTAL_BYTES_CNT>\
                 <GROUP_TRANSACTIONID>{}</GROUP_TRANSACTIONID><number>{}</number>\
                 </web:NEW_DATA_TICKET_QRsp></root>",
                format_mb(c.cycle_usage_bytes),
                transaction_id(),
                iccid
            )),
            Err(e) => carrier_error(e),
        },
        M_ONLINE => match w.sim.card(&iccid).await {
            Ok(c) => {
                // The simulated card is online while it has service and has had a session.
                let online = c.state == ServiceState::Active && c.last_session_at.is_some();
                let reply = OnlineReply {
                    result_code: "0".into(),
                    result_msg: "处理成功！".into(),
                    number: iccid.to_string(),
                    online_status: if online { "1" } else { "0" }.into(),
                    start_time: c
                        .last_session_at
                        .map(|t| {
                            t.with_timezone(&chrono_tz::Asia::Shanghai)
                                .format(TIME_FORMAT)
                                .to_string()
                        })
                        .unwrap_or_default(),
                };
                json(serde_json::to_string(&reply).unwrap_or_default())
            }
            Err(e) => carrier_error(e),
        },
        M_REAL_NAME => match w.sim.card(&iccid).await {
            // The simulated carrier keeps no real-name data: every card it knows is registered.
            Ok(c) => to_xml(&RealNameReply {
                result_code: "0".into(),
                result_msg: "处理成功！".into(),
                prod_main_status_name: status_name(main_status_code(c.state)).into(),
                cert_number: String::new(),
            }),
            Err(e) => carrier_error(e),
        },
        _ => refuse("-2", "unknown method"),
    }
}

async fn disabled_number(w: &Wire, iccid: &Iccid, order: Option<&str>) -> Response {
    let target = match order {
        Some(ORDER_STOP) => ServiceState::Stopped,
        Some(ORDER_RESTORE) => ServiceState::Active,
        _ => return refuse("-2", "orderTypeId must be 19 or 20"),
    };
    // An order for the state the card is already in is "already ordered".
    match w.sim.card(iccid).await {
        Ok(c) if c.state == target => return change_reply(ALREADY_ORDERED, "已订购"),
        Ok(_) => {}
        Err(e) => return carrier_error(e),
    }
    let result = match target {
        ServiceState::Stopped => w.sim.stop(iccid).await,
        _ => w.sim.restore(iccid).await,
    };
    match result {
        Ok(()) => change_reply(CHANGE_OK, "成功"),
        Err(CarrierError::OutcomeUnknown(_)) => {
            // Applied, but the client must see no answer in time.
            tokio::time::sleep(w.opts.timeout_after_apply_delay).await;
            change_reply(CHANGE_OK, "成功")
        }
        Err(e) => carrier_error(e),
    }
}

fn change_reply(code: &str, desc: &str) -> Response {
    to_xml(&ChangeReply {
        response: ChangeResponse {
            rsp_type: if code == CHANGE_OK { "0" } else { "1" }.into(),
            rsp_code: code.into(),
            rsp_desc: desc.into(),
        },
        transaction_id: transaction_id(),
    })
}

fn status_name(code: &str) -> &'static str {
    match code {
        "4" => "在用",
        "5" => "停机",
        "7" => "拆机",
        _ => "",
    }
}

fn transaction_id() -> String {
    format!("1000000190{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"))
}
