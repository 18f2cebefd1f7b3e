//! The China Telecom CMP (m2m_ec) wire simulator: `GET {prefix}/query.do` with the platform's
//! auth (`passWord` and `sign` in Telecom's DES, each method's own sign set), envelopes and
//! codes, as the dossier (`shared/domain/carrier-wire/cmp.md`) gives them and
//! `crate::carrier::http::cmp` speaks them, in front of a [`SimCarrier`] whose rules and fault
//! injection decide every answer.
//!
//! It refuses what the platform is documented to refuse: a wrong sign set (`-3`: e.g. a signed
//! `needDtl`, or `disabledNumber` without its empty `acctCd` in the sign), a missing required
//! parameter (`-2`: `acctCd`, `orderTypeId`, `needDtl`, `action`), an unknown card (`-4`).
//! Invented, because no source gives the platform's answer: HTTP 404 for any method but form
//! B's `IMEIReRecord` on `app/serviceAccept.do`; `-2` for a non-empty `acctCd` or an
//! `orderTypeId` other than 19/20;
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
//!
//! `IMEIReRecord` (dossier §6.1) is served in the configured account's `imei_rerecord_form`
//! (both with [`WireOptions::both_imei_rerecord_forms`]): form A on `query.do` by
//! `access_number` (`bind_type` absent or `2` with `imei`), form B on `app/serviceAccept.do`
//! by `iccid` (no `bind_type`); the other form is refused (`-2` on query.do, 404 on
//! app/serviceAccept.do, invented). It is backed by the `SimCarrier`'s `rebind()` and answers
//! in the shape of the two verbatim samples; a refusal of the simulated carrier is the
//! published `-5` 业务校验失败 with its reason (invented; a simulated carrier without binding
//! support refuses every rebind so).
//!
//! Changes (`disabledNumber`, `IMEIReRecord`) answer a `GROUP_TRANSACTIONID` of 28 digits like
//! the samples, derived from the simulated carrier's order id when it gives one
//! ([`transaction_id_of`]), else fresh (invented digits). A change inside the simulated
//! carrier's repeat window (its `Deferred`) is refused with [`WireOptions::repeat_window_code`]
//! ([`INVENTED_REPEAT_WINDOW`] by default: no code is published), without a retry time (the
//! wire has no field for one). A change the simulated carrier takes as an order still in
//! progress is answered as accepted all the same: CMP's replies have no "accepted, not done"
//! form in the dossier, so orders should stay off behind a CMP account (the adapter reads an
//! accepted reply as applied).
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
    crypt, format_mb, is_published, main_status_code, request_sign, CmpConfig, ImeiReRecordForm,
    JsonResult, ProductInfo, StatusReply, ALREADY_ORDERED, BIND_TYPE_FIXED, M_DISABLE,
    M_IMEI_RERECORD, M_ONLINE, M_REAL_NAME, M_STATUS, M_TELEPHONE, M_TRAFFIC, ORDER_RESTORE,
    ORDER_STOP, QUERY_PATH, RATE_LIMITED, REBIND_ACTION, REBIND_REFUSED, SERVICE_ACCEPT_PATH,
    STOP_RECORD_EXISTS, TIME_FORMAT,
};
use crate::carrier::sim::SimCarrier;
use crate::carrier::{Carrier, CarrierError, Rebind, Receipt, ServiceState};
use crate::domain::Iccid;

/// How the simulator behaves on the wire beyond what `SimCarrier` decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireOptions {
    /// How long a change that was applied but must look unanswered (OutcomeUnknown at the
    /// simulated carrier) is held before its answer. Must exceed the client's request timeout.
    pub timeout_after_apply_delay: Duration,
    /// The code a change inside the simulated carrier's repeat window (its `Deferred`) is
    /// refused with. Invented ([`INVENTED_REPEAT_WINDOW`] by default): CMP publishes none.
    pub repeat_window_code: String,
    /// Serve `IMEIReRecord` in both forms (dossier §6.1), not only the configured account's
    /// `imei_rerecord_form`: how a platform that takes either would answer.
    pub both_imei_rerecord_forms: bool,
}

impl Default for WireOptions {
    fn default() -> Self {
        // Longer than the adapter's default 10 s request timeout.
        WireOptions {
            timeout_after_apply_delay: Duration::from_secs(15),
            repeat_window_code: INVENTED_REPEAT_WINDOW.to_string(),
            both_imei_rerecord_forms: false,
        }
    }
}

struct Wire {
    sim: Arc<SimCarrier>,
    user_id: String,
    password: String,
    key: String,
    sign_need_dtl: bool,
    imei_form: ImeiReRecordForm,
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
        imei_form: cfg.imei_rerecord_form,
        opts,
    });
    Router::new()
        .route(&format!("{prefix}{QUERY_PATH}"), get(query))
        .route(
            &format!("{prefix}{SERVICE_ACCEPT_PATH}"),
            get(service_accept),
        )
        .with_state(wire)
}

type Params = Query<HashMap<String, String>>;

impl Wire {
    /// Whether `IMEIReRecord` is served in `form`.
    fn serves(&self, form: ImeiReRecordForm) -> bool {
        self.opts.both_imei_rerecord_forms || self.imei_form == form
    }
}

async fn query(State(w): State<Arc<Wire>>, Query(p): Params) -> Response {
    if p.get("method").map(String::as_str) == Some(M_IMEI_RERECORD)
        && !w.serves(ImeiReRecordForm::QueryAccessNumber)
    {
        return refuse("-2", "unknown method");
    }
    handle(&w, p, ImeiReRecordForm::QueryAccessNumber).await
}

/// `app/serviceAccept.do`: only `IMEIReRecord`, and only in form B (dossier §6.1, [ESIM7]);
/// HTTP 404 for anything else (invented: no source gives the answer).
async fn service_accept(State(w): State<Arc<Wire>>, Query(p): Params) -> Response {
    if p.get("method").map(String::as_str) == Some(M_IMEI_RERECORD)
        && w.serves(ImeiReRecordForm::ServiceAcceptIccid)
    {
        return handle(&w, p, ImeiReRecordForm::ServiceAcceptIccid).await;
    }
    (
        StatusCode::NOT_FOUND,
        "the simulator serves no such method on app/serviceAccept.do",
    )
        .into_response()
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

/// A `SimCarrier` error on the wire, in the platform's codes only (a repeat window with the
/// default invented code: reads never meet one; changes use [`Wire::change_error`]).
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

impl Wire {
    fn change_error(&self, e: CarrierError) -> Response {
        change_error(&self.opts.repeat_window_code, e)
    }
}

/// A `SimCarrier` error of a change: its repeat window (`Deferred`) refused with `window` (the
/// configured window code) in the common refusal envelope, the rest as [`carrier_error`].
fn change_error(window: &str, e: CarrierError) -> Response {
    match e {
        CarrierError::Deferred { message, .. } => refuse(window, &message),
        other => carrier_error(other),
    }
}

/// The parameter the other form of `IMEIReRecord` names its card by.
fn other_param(form: ImeiReRecordForm) -> &'static str {
    match form {
        ImeiReRecordForm::QueryAccessNumber => ImeiReRecordForm::ServiceAcceptIccid.param(),
        ImeiReRecordForm::ServiceAcceptIccid => ImeiReRecordForm::QueryAccessNumber.param(),
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
        M_IMEI_RERECORD => &["action"],
        _ => &[],
    };
    need.iter().copied().find(|k| !p.contains_key(*k))
}

/// One call; `path_form` is the `IMEIReRecord` form of the path it came on.
async fn handle(w: &Wire, p: HashMap<String, String>, path_form: ImeiReRecordForm) -> Response {
    let Some(method) = p.get("method").cloned() else {
        return refuse("-2", "必传参数缺失: method");
    };
    if let Err((code, message)) = authenticate(w, &method, &p) {
        return refuse(code, message);
    }
    if let Some(param) = missing(&method, &p) {
        return refuse("-2", &format!("必传参数缺失: {param}"));
    }
    // IMEIReRecord names the card as its form does: access_number on query.do (A), iccid on
    // app/serviceAccept.do (B).
    if method == M_IMEI_RERECORD
        && (!p.contains_key(path_form.param()) || p.contains_key(other_param(path_form)))
    {
        return refuse("-2", &format!("必传参数缺失: {}", path_form.param()));
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
        M_IMEI_RERECORD => rerecord(w, &iccid, &p, path_form).await,
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
        Ok(r) => change_reply_as("0", "0", "处理成功！", &transaction_id_of(&r)),
        Err(CarrierError::OutcomeUnknown(_)) => {
            // Applied, but the client must see no answer in time.
            tokio::time::sleep(w.opts.timeout_after_apply_delay).await;
            change_reply("0", "0", "处理成功！")
        }
        Err(e) => w.change_error(e),
    }
}

/// `IMEIReRecord` (dossier §6.1), backed by the simulated carrier's `rebind`: no `bind_type`
/// is the ordinary rebind (`CurrentDevice`), `bind_type=2` with `imei` the fixed binding
/// (form A only). Invented: `-2` for an `action` other than `ADD`, another `bind_type`, a
/// `bind_type=2` without `imei`, or a `bind_type` in form B (its source sends none).
async fn rerecord(
    w: &Wire,
    iccid: &Iccid,
    p: &HashMap<String, String>,
    form: ImeiReRecordForm,
) -> Response {
    if p.get("action").map(String::as_str) != Some(REBIND_ACTION) {
        return refuse("-2", "action 固定为 ADD");
    }
    let rebind = match (p.get("bind_type").map(String::as_str), p.get("imei")) {
        (None, _) => Rebind::CurrentDevice,
        (Some(BIND_TYPE_FIXED), Some(imei)) if form.binds_to_imei() && !imei.is_empty() => {
            Rebind::Imei(imei.clone())
        }
        _ => return refuse("-2", "bind_type/imei"),
    };
    match w.sim.rebind(iccid, &rebind).await {
        Ok(r) => rebind_reply("0", "0000", "成功接收消息", &transaction_id_of(&r)),
        Err(CarrierError::OutcomeUnknown(_)) => {
            tokio::time::sleep(w.opts.timeout_after_apply_delay).await;
            rebind_reply("0", "0000", "成功接收消息", &transaction_id())
        }
        Err(CarrierError::Deferred { message, .. }) => {
            rebind_reply("1", &w.opts.repeat_window_code, &message, &transaction_id())
        }
        // A refusal of the simulated carrier: a published code as is, a dismantled card -4,
        // anything else (no binding support, an injected refusal) the published 业务校验失败
        // (-5) with the carrier's reason (invented: the platform's reasons are not published).
        Err(CarrierError::Rejected { code, message }) => {
            let code = match code.as_str() {
                c if is_published(c) => c.to_string(),
                "CARD_CANCELLED" => "-4".to_string(),
                _ => REBIND_REFUSED.to_string(),
            };
            let message = if code == REBIND_REFUSED {
                format!("业务校验失败（{message}）")
            } else {
                message
            };
            rebind_reply("1", &code, &message, &transaction_id())
        }
        Err(e) => carrier_error(e),
    }
}

/// The `IMEIReRecord` reply (dossier §6.1, the shape of both verbatim samples).
fn rebind_reply(rsp_type: &str, code: &str, message: &str, transaction_id: &str) -> Response {
    json(
        serde_json::json!({
            "Response": {"RspType": rsp_type, "RspCode": code, "RspDesc": message},
            "GROUP_TRANSACTIONID": transaction_id,
        })
        .to_string(),
    )
}

/// The `disabledNumber` reply: the dossier's reconstructed `businessServiceResponse` (§5).
fn change_reply(rsp_type: &str, result: &str, message: &str) -> Response {
    change_reply_as(rsp_type, result, message, &transaction_id())
}

fn change_reply_as(rsp_type: &str, result: &str, message: &str, transaction_id: &str) -> Response {
    xml(format!(
        "<businessServiceResponse><RspType>{rsp_type}</RspType><result>{result}</result>\
         <resultMsg>{message}</resultMsg><GROUP_TRANSACTIONID>{transaction_id}</GROUP_TRANSACTIONID>\
         </businessServiceResponse>"
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

/// A fresh `GROUP_TRANSACTIONID` of 28 digits like the samples (`1000000190` + date + ten
/// digits, e.g. `1000000190202004162026784683`): the ten are the milliseconds of the day and
/// a counter (invented; what the platform's digits mean is not published).
fn transaction_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai);
    let ms_of_day = u64::from(chrono::Timelike::num_seconds_from_midnight(&now)) * 1000
        + u64::from(chrono::Timelike::nanosecond(&now) / 1_000_000) % 1000;
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100;
    format!(
        "1000000190{}{:010}",
        now.format("%Y%m%d"),
        ms_of_day * 100 + n
    )
}

/// The `GROUP_TRANSACTIONID` of an applied change: the simulated carrier's order id when it
/// gives one (as is when it already has the samples' 28 digits, else `1000000190` and 18
/// digits of a hash of it, so one order always has one id), else a fresh one.
pub fn transaction_id_of(receipt: &Receipt) -> String {
    match receipt.order_id.as_deref() {
        Some(id) if id.len() == 28 && id.bytes().all(|b| b.is_ascii_digit()) => id.to_string(),
        Some(id) => {
            // FNV-1a, 64 bits: stable across runs and builds.
            let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            format!("1000000190{:018}", hash % 1_000_000_000_000_000_000)
        }
        None => transaction_id(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carrier::http::cmp::{change_answer, change_refusal, rebind_answer, ChangeAnswer};

    async fn body(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn is_28_digits(id: &str) -> bool {
        id.len() == 28 && id.starts_with("1000000190") && id.bytes().all(|b| b.is_ascii_digit())
    }

    #[test]
    fn transaction_ids_have_the_samples_28_digits_and_follow_the_order_id() {
        let a = transaction_id();
        let b = transaction_id();
        assert!(is_28_digits(&a) && is_28_digits(&b), "{a} {b}");
        assert_ne!(a, b);
        assert!(is_28_digits(&transaction_id_of(&Receipt::applied())));
        let sample = "1000000190202103293055805587";
        assert_eq!(transaction_id_of(&Receipt::applied_as(sample)), sample);
        let order = Receipt::in_progress(Some("sim-order-7".into()));
        let id = transaction_id_of(&order);
        assert!(is_28_digits(&id), "{id}");
        assert_eq!(id, transaction_id_of(&order), "one order, one id");
        assert_ne!(
            id,
            transaction_id_of(&Receipt::applied_as("sim-order-8")),
            "another order, another id"
        );
    }

    #[tokio::test]
    async fn a_deferred_change_is_refused_with_the_configured_window_code() {
        let deferred = || CarrierError::Deferred {
            code: "SIM_REPEAT_WINDOW".into(),
            message: "同一卡号5分钟内不能重复办理".into(),
            retry_after: None,
        };
        for window in [INVENTED_REPEAT_WINDOW, "-8"] {
            let text = body(change_error(window, deferred())).await;
            // The adapter reads it as a refusal with that code: Deferred either way.
            assert_eq!(
                change_answer(&text),
                ChangeAnswer::Refused {
                    code: window.into(),
                    message: "同一卡号5分钟内不能重复办理".into()
                },
                "{text}"
            );
            assert!(matches!(
                change_refusal(window, "", Some(window)),
                CarrierError::Deferred { .. }
            ));
        }
        let text = body(rebind_reply("1", "-8", "window", &transaction_id())).await;
        assert_eq!(
            rebind_answer(&text),
            ChangeAnswer::Refused {
                code: "-8".into(),
                message: "window".into()
            }
        );
        // Other errors of a change keep their published codes.
        let text = body(change_error(
            INVENTED_REPEAT_WINDOW,
            CarrierError::RateLimited { retry_after: None },
        ))
        .await;
        assert!(text.contains(RATE_LIMITED), "{text}");
    }
}
