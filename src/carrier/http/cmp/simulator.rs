//! The China Telecom CMP (m2m_ec) wire simulator: `GET {prefix}/query.do` with the platform's
//! auth (`passWord` and `sign` in Telecom's DES, each method's own sign set), envelopes and
//! codes, as the dossier (`shared/domain/carrier-wire/cmp.md`) gives them and
//! `crate::carrier::http::cmp` speaks them, in front of a [`SimCarrier`] whose rules and fault
//! injection decide every answer.
//!
//! It refuses what the platform is documented to refuse: a wrong sign set (`-3`: e.g. a signed
//! `needDtl`, or `disabledNumber` without its empty `acctCd` in the sign), a missing required
//! parameter (`-2`: `acctCd`, `orderTypeId`, `needDtl`), an unknown card (`-4`). Invented,
//! because no source gives the platform's answer: HTTP 404 for any method on
//! `app/serviceAccept.do`; `-2` for a non-empty `acctCd` or an `orderTypeId` other than 19/20;
//! `RspType 1` + `result -5` for a restore of an active card (`1999`, [COOL]'s answer, for a stop
//! of a stopped one); `-4` for a change of a dismantled card and `-7` for an injected refusal
//! (simgate's own codes never reach the wire); the root element `root` of realNameQueryIot
//! (its name is not published); the description of getOnlineStatus is left out for a card with
//! no session, and `result`/`acctStatusType` carry no values (theirs are not published).
//! Cards are named by `access_number` (each simulated card has one: given at import, or
//! `1064` and its ICCID's last nine digits) or by `iccid` (not for `realNameQueryIot`), and
//! `getTelephonePlus` gives a card's number; the simulator answers both, whatever the
//! account's `card_identifier`, as [NKY] says the platform does.
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
    crypt, format_mb, is_published, main_status_code, request_sign, CmpConfig, JsonResult,
    ProductInfo, StatusReply, ALREADY_ORDERED, M_DISABLE, M_ONLINE, M_REAL_NAME, M_STATUS,
    M_TELEPHONE, M_TRAFFIC, ORDER_RESTORE, ORDER_STOP, QUERY_PATH, RATE_LIMITED,
    SERVICE_ACCEPT_PATH, STOP_RECORD_EXISTS, TIME_FORMAT,
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
    sign_need_dtl: bool,
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
        sign_need_dtl: cfg.sign_need_dtl,
        opts,
    });
    Router::new()
        .route(&format!("{prefix}{QUERY_PATH}"), get(query))
        .route(
            &format!("{prefix}{SERVICE_ACCEPT_PATH}"),
            get(|| async {
                (
                    StatusCode::NOT_FOUND,
                    "the simulator serves no method on app/serviceAccept.do",
                )
            }),
        )
        .with_state(wire)
}

type Params = Query<HashMap<String, String>>;

async fn query(State(w): State<Arc<Wire>>, Query(p): Params) -> Response {
    handle(&w, p).await
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

/// The code the simulator answers a change inside its repeat window with. CMP publishes no
/// repeat window and no code for one: invented, and outside every published code.
pub const INVENTED_REPEAT_WINDOW: &str = "-9001";

/// A `SimCarrier` error on the wire, in the platform's codes only.
fn carrier_error(e: CarrierError) -> Response {
    match e {
        CarrierError::Rejected { code, message } if is_published(&code) => refuse(&code, &message),
        // A dismantled card's number is gone (invented: no published code for it).
        CarrierError::Rejected { code, message } if code == "CARD_CANCELLED" => {
            refuse("-4", &message)
        }
        // Any other refusal of the simulated carrier (an injected one): a published refusal.
        CarrierError::Rejected { message, .. } => refuse("-7", &message),
        CarrierError::RateLimited { .. } => refuse(RATE_LIMITED, "请求过于频繁，请稍后再试"),
        // A repeat window of the simulated carrier: CMP publishes no such code (invented).
        CarrierError::Deferred { message, .. } => refuse(INVENTED_REPEAT_WINDOW, &message),
        CarrierError::Transient(m) | CarrierError::CircuitOpen(m) => {
            (StatusCode::SERVICE_UNAVAILABLE, m).into_response()
        }
        // Only changes produce it; `handle` deals with it before this point.
        CarrierError::OutcomeUnknown(m) => (StatusCode::GATEWAY_TIMEOUT, m).into_response(),
    }
}

/// The platform checks the sign with the password it decrypts from `passWord`: a wrong key
/// garbles both, so the sign fails (-3); a right key with a wrong password signs consistently
/// and fails the account check (-1). The sign must cover exactly the method's sign set.
fn authenticate(
    w: &Wire,
    method: &str,
    p: &HashMap<String, String>,
) -> Result<(), (&'static str, &'static str)> {
    let (Some(pass), Some(sign)) = (p.get("passWord"), p.get("sign")) else {
        return Err(("-2", "必传参数缺失: passWord, sign"));
    };
    let Some(user) = p.get("user_id") else {
        return Err(("-2", "必传参数缺失: user_id"));
    };
    let plain = crypt::decrypt(pass, &w.key).unwrap_or_default();
    let params: Vec<(&str, String)> = p.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let expected =
        request_sign(method, &params, &plain, &w.key, w.sign_need_dtl).unwrap_or_default();
    if expected.is_empty() || !expected.eq_ignore_ascii_case(sign) {
        return Err(("-3", "sign参数值错误"));
    }
    if *user != w.user_id || plain != w.password {
        return Err(("-1", "用户名或者密码错误，无权限"));
    }
    Ok(())
}

/// The parameters a method requires besides the account's (dossier §1, §5).
fn missing(method: &str, p: &HashMap<String, String>) -> Option<&'static str> {
    let need: &[&'static str] = match method {
        M_TRAFFIC => &["needDtl"],
        M_DISABLE => &["orderTypeId", "acctCd"],
        _ => &[],
    };
    need.iter().copied().find(|k| !p.contains_key(*k))
}

async fn handle(w: &Wire, p: HashMap<String, String>) -> Response {
    let Some(method) = p.get("method").cloned() else {
        return refuse("-2", "必传参数缺失: method");
    };
    if let Err((code, message)) = authenticate(w, &method, &p) {
        return refuse(code, message);
    }
    if let Some(param) = missing(&method, &p) {
        return refuse("-2", &format!("必传参数缺失: {param}"));
    }
    let (iccid, number) = match card_named(w, &method, &p).await {
        Ok(named) => named,
        Err(refusal) => return refusal,
    };
    let number = number.unwrap_or_else(|| iccid.to_string());
    match method.as_str() {
        M_TELEPHONE => telephone(w, &iccid).await,
        M_DISABLE => {
            if p.get("acctCd").is_some_and(|a| !a.is_empty()) {
                return refuse("-2", "acctCd 固定字段，保持为空");
            }
            disabled_number(w, &iccid, p.get("orderTypeId").map(String::as_str)).await
        }
        M_STATUS => match w.sim.card(&iccid).await {
            Ok(c) => {
                let code = main_status_code(c.state);
                let reply = StatusReply {
                    result_code: "0".into(),
                    result_msg: "处理成功！".into(),
                    transaction_id: transaction_id(),
                    number: number.clone(),
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
            // The verbatim sample's elements (dossier §1).
            Ok(c) => xml(format!(
                "<root><web:NEW_DATA_TICKET_QRsp xmlns:web=\"http://www.example.org/webservice\">\
                 <CHARGE_CNT_CH>0元</CHARGE_CNT_CH><DURATION_CNT_CH></DURATION_CNT_CH>\
                 <IRESULT>0</IRESULT><TOTALCOUNT></TOTALCOUNT><TOTALPAGE></TOTALPAGE>\
                 <TOTAL_BYTES_CNT>{}</TOTAL_BYTES_CNT>\
                 <GROUP_TRANSACTIONID>{}</GROUP_TRANSACTIONID><number>{}</number>\
                 </web:NEW_DATA_TICKET_QRsp></root>",
                format_mb(c.cycle_usage_bytes),
                transaction_id(),
                number
            )),
            Err(e) => carrier_error(e),
        },
        M_ONLINE => match w.sim.card(&iccid).await {
            Ok(c) => {
                let mut reply = serde_json::json!({
                    "resultCode": "0",
                    "resultMsg": "处理成功！",
                    "groupTransactionId": transaction_id(),
                });
                if let Some(at) = c.last_session.at() {
                    let at = at
                        .with_timezone(&chrono_tz::Asia::Shanghai)
                        .format(TIME_FORMAT)
                        .to_string();
                    reply["description"] = serde_json::json!({
                        "result": "", "msisdn": number, "netModel": "", "imsi": "",
                        "acctStatusType": "", "eventTimestamp": at, "framedIpAddress": "10.0.0.1",
                        "provname": "", "duration": "", "startTime": at, "stopTime": "",
                        "framedIpv6Prefix": "", "framedInterfaceId": "", "apn": "ctnet",
                        "rattype": "", "imei": "",
                    });
                }
                json(reply.to_string())
            }
            Err(e) => carrier_error(e),
        },
        // The simulated carrier keeps no real-name data: every card it knows is registered.
        M_REAL_NAME => match w.sim.card(&iccid).await {
            Ok(c) => xml(format!(
                "<root><resultCode>0</resultCode><resultMsg>处理成功！</resultMsg>\
                 <GROUP_TRANSACTIONID>{}</GROUP_TRANSACTIONID><RESULT><activeTime></activeTime>\
                 <prodStatusName></prodStatusName><prodMainStatusName>{}</prodMainStatusName>\
                 <certNumber>null</certNumber><number>{}</number></RESULT></root>",
                transaction_id(),
                status_name(main_status_code(c.state)),
                number
            )),
            Err(e) => carrier_error(e),
        },
        _ => refuse("-2", "unknown method"),
    }
}

/// The card a request names, and its access number when the simulated platform holds one.
/// An `access_number` is always understood (every source sends it); an `iccid` too ([NKY]),
/// except by `realNameQueryIot`, which no source calls with one; `getTelephonePlus` takes
/// only an `iccid` (dossier §7.2).
async fn card_named(
    w: &Wire,
    method: &str,
    p: &HashMap<String, String>,
) -> Result<(Iccid, Option<String>), Response> {
    let unknown = || refuse("-4", "iccid号码错误或不存在");
    let by_number = method != M_TELEPHONE;
    let by_iccid = method != M_REAL_NAME;
    if let Some(number) = p.get("access_number").filter(|_| by_number) {
        let iccid = w
            .sim
            .card_by_number(number)
            .await
            .map_err(carrier_error)?
            .ok_or_else(unknown)?;
        return Ok((iccid, Some(number.clone())));
    }
    let Some(raw) = p.get("iccid").filter(|_| by_iccid) else {
        let param = if by_number { "access_number" } else { "iccid" };
        return Err(refuse("-2", &format!("必传参数缺失: {param}")));
    };
    let iccid = Iccid::parse_any(raw).map_err(|_| unknown())?;
    let number = w.sim.number_of(&iccid).await.map_err(carrier_error)?;
    Ok((iccid, number))
}

/// `getTelephonePlus` (dossier §7.2): the [ESIM7] shape. The IMSIs are left empty (the
/// simulated carrier keeps none).
async fn telephone(w: &Wire, iccid: &Iccid) -> Response {
    if let Err(e) = w.sim.card(iccid).await {
        return carrier_error(e);
    }
    match w.sim.number_of(iccid).await {
        Ok(number) => json(
            serde_json::json!({
                "GROUP_TRANSACTIONID": transaction_id(),
                "resultCode": "0",
                "resultMsg": "处理成功！",
                "info": {
                    "access_number": number.unwrap_or_default(),
                    "ICCID": iccid.as_str(),
                    "3G_IMSI": "",
                    "4G_IMSI": "",
                },
            })
            .to_string(),
        ),
        Err(e) => carrier_error(e),
    }
}

async fn disabled_number(w: &Wire, iccid: &Iccid, order: Option<&str>) -> Response {
    let target = match order {
        Some(ORDER_STOP) => ServiceState::Stopped,
        Some(ORDER_RESTORE) => ServiceState::Active,
        _ => return refuse("-2", "orderTypeId must be 19 or 20"),
    };
    // An order for the state the card is already in is refused; the adapter reads the card.
    match w.sim.card(iccid).await {
        Ok(c) if c.state == target => {
            return match target {
                ServiceState::Stopped => {
                    change_reply("1", STOP_RECORD_EXISTS, "已存在停机类型为120000的停机记录")
                }
                _ => change_reply("1", ALREADY_ORDERED, "已经订购该产品，请不要重复订购"),
            }
        }
        Ok(_) => {}
        Err(e) => return carrier_error(e),
    }
    let result = match target {
        ServiceState::Stopped => w.sim.stop(iccid).await,
        _ => w.sim.restore(iccid).await,
    };
    match result {
        Ok(_) => change_reply("0", "0", "处理成功！"),
        Err(CarrierError::OutcomeUnknown(_)) => {
            // Applied, but the client must see no answer in time.
            tokio::time::sleep(w.opts.timeout_after_apply_delay).await;
            change_reply("0", "0", "处理成功！")
        }
        Err(e) => carrier_error(e),
    }
}

/// The `disabledNumber` reply: the dossier's reconstructed `businessServiceResponse` (§5).
fn change_reply(rsp_type: &str, result: &str, message: &str) -> Response {
    xml(format!(
        "<businessServiceResponse><RspType>{rsp_type}</RspType><result>{result}</result>\
         <resultMsg>{message}</resultMsg><GROUP_TRANSACTIONID>{}</GROUP_TRANSACTIONID>\
         </businessServiceResponse>",
        transaction_id()
    ))
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
