//! The 5G CMP wire simulator: every call `crate::carrier::http::cmp_5g` makes, with the
//! platform's headers (`AppKey`, `Timestamp`, `Sign` recomputed as the account's `sign_body`
//! says), envelopes and shapes as the dossier (`shared/domain/carrier-wire/cmp5g.md`) gives
//! them, in front of a [`SimCarrier`] whose rules and fault injection decide every answer.
//! Each call is taken as GET (query string) or POST (JSON body), whatever the account's
//! `http_methods` (the dossier says a simulator should accept both, §0.4); a GET's array
//! parameter may be repeated or comma-separated (invented: no source shows one).
//!
//! Cards are named by access number: each simulated card has one (given at import, or `1064`
//! and its ICCID's last nine digits), read with `SimCarrier::number_of`/`card_by_number`. A
//! number the simulated carrier does not hold is left out of a batch answer (as the adapter
//! expects from the platform) and refused by a change.
//!
//! Invented, because no source gives the platform's answer (the adapter maps none of these to
//! anything final):
//! - a wrong `AppKey`, a `Sign` that does not match, a `Timestamp` that is not
//!   `yyyyMMddHHmmss` in the account's zone within [`WireOptions::max_skew`] of now: HTTP 401
//!   with `{"code":"401","message":…}` (the platform's code is not found; [NEST5G] handles a
//!   non-2xx `{message, code}` body);
//! - batchQrySimInfo or batchQryFlowByMonth with a wrong `custNumber`, or any of the three
//!   batch calls without 1–100 numbers (batchQrySimInfo's limit, applied to all three: the
//!   others' maximum is not found): `{"code":"-1"}`;
//! - disabledNumberService refusals in the §0.5 XML family (`RspType 1`): `-1` a missing
//!   `acctCd` ("不传入会报错") or an `orderTypeId` other than 19/20, `-4` a number it does not
//!   hold or a dismantled card, `-9` a stop of a stopped card or a restore of an active one
//!   (the `rspcode=-9` 不能重复订购 seen on singleCutNet, §6.2), `-7` an injected refusal,
//!   [`INVENTED_REPEAT_WINDOW`] the simulated carrier's repeat window; requestServActive's
//!   refusals the same codes in `{RESULT, SMSG}`;
//! - the simulated carrier's rate limit: HTTP 429; its outage: HTTP 503;
//! - batchQrySimInfo's `imsi`, `activeTime`, `createTime` are left empty (not kept), and
//!   qryRealNameStatus answers `status "1"` for every card (the simulated carrier keeps no
//!   real-name data).
//!
//! Awaiting activation (待激活): the simulated carrier has no such state. A test lists access
//! numbers in [`WireOptions::awaiting_activation`]: while such a card is stopped it shows
//! `simStatus` 3 (测试去激活), a restore (orderTypeId 20) of it is answered `100008`, and
//! requestServActive restores it (and takes it off the list).
//!
//! The prefix is the path of the configured `base_url` (normally none), so one configuration
//! serves both the adapter and this simulator. Requests are counted by the tests' recording
//! layer (`tests/api/helpers.rs`), per path.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{NaiveDateTime, TimeZone, Utc};

use super::sign::{self, SignBody, TimestampZone};
use super::wire::*;
use super::Cmp5gConfig;
use crate::carrier::http::cmp::simulator::transaction_id_of;
use crate::carrier::sim::SimCarrier;
use crate::carrier::{Carrier, CarrierError, Receipt, ServiceState};
use crate::domain::Iccid;

/// How the simulator behaves on the wire beyond what `SimCarrier` decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireOptions {
    /// How long a change that was applied but must look unanswered (OutcomeUnknown at the
    /// simulated carrier) is held before its answer. Must exceed the client's request timeout.
    pub timeout_after_apply_delay: Duration,
    /// Access numbers whose cards await activation (see the module notes).
    pub awaiting_activation: Vec<String>,
    /// How far `Timestamp` may be from now (invented: the allowed skew is not found, §0.2).
    pub max_skew: Duration,
}

impl Default for WireOptions {
    fn default() -> Self {
        WireOptions {
            // Longer than the adapter's default 10 s request timeout.
            timeout_after_apply_delay: Duration::from_secs(15),
            awaiting_activation: Vec::new(),
            max_skew: Duration::from_secs(15 * 60),
        }
    }
}

/// The code the simulator refuses a change inside the simulated carrier's repeat window with
/// (invented: none is published).
pub const INVENTED_REPEAT_WINDOW: &str = "-9001";

struct Wire {
    sim: Arc<SimCarrier>,
    prefix: String,
    app_key: String,
    secret: String,
    cust_number: String,
    zone: TimestampZone,
    sign_body: SignBody,
    awaiting: Mutex<HashSet<String>>,
    opts: WireOptions,
}

/// The router; mount it at the root of a listener.
pub fn router(sim: Arc<SimCarrier>, cfg: &Cmp5gConfig, opts: WireOptions) -> Router {
    let prefix = url::Url::parse(&cfg.base_url)
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default();
    let wire = Arc::new(Wire {
        sim,
        prefix: prefix.clone(),
        app_key: cfg.app_key.clone(),
        secret: cfg.secret.expose().to_string(),
        cust_number: cfg.cust_number.clone(),
        zone: cfg.timestamp_zone,
        sign_body: cfg.sign_body,
        awaiting: Mutex::new(opts.awaiting_activation.iter().cloned().collect()),
        opts,
    });
    let mut router = Router::new();
    for path in PATHS {
        router = router.route(&format!("{prefix}{path}"), get(handle).post(handle));
    }
    router.with_state(wire)
}

fn json(body: serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn xml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml;charset=UTF-8")], body).into_response()
}

/// The simulator's own refusal of a request's authentication (see the module notes).
fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        serde_json::json!({"code": "401", "message": message}).to_string(),
    )
        .into_response()
}

/// A refusal in the "new" JSON envelope (invented code, see the module notes).
fn envelope_refusal(message: &str) -> Response {
    json(serde_json::json!({"code": "-1", "message": message}))
}

type Params = serde_json::Map<String, serde_json::Value>;

/// Parameters that are arrays (§1, §3, §5).
const ARRAYS: [&str; 2] = ["accessNumbers", "accessNumber"];

impl Wire {
    /// AppKey, Timestamp and Sign, as the account's settings say the adapter computes them.
    fn authenticate(
        &self,
        method: &Method,
        query: &[(String, String)],
        body: &str,
        headers: &HeaderMap,
    ) -> Result<(), &'static str> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if header("AppKey").as_deref() != Some(self.app_key.as_str()) {
            return Err("AppKey 无效");
        }
        let Some(ts) = header("Timestamp") else {
            return Err("Timestamp 缺失");
        };
        if !self.timestamp_is_now(&ts) {
            return Err("Timestamp 无效");
        }
        let signed_body = if *method == Method::POST {
            sign::signed_body(body, self.sign_body)
        } else {
            String::new()
        };
        let expected = sign::sign(&sign::sorted_query(query), &signed_body, &self.secret, &ts);
        if header("Sign").is_none_or(|s| !s.eq_ignore_ascii_case(&expected)) {
            return Err("Sign 校验失败");
        }
        Ok(())
    }

    /// Whether `ts` is `yyyyMMddHHmmss` in the account's zone, within the allowed skew.
    fn timestamp_is_now(&self, ts: &str) -> bool {
        let Ok(naive) = NaiveDateTime::parse_from_str(ts, "%Y%m%d%H%M%S") else {
            return false;
        };
        let at = match self.zone {
            TimestampZone::Gmt => Some(Utc.from_utc_datetime(&naive)),
            TimestampZone::Beijing => chrono_tz::Asia::Shanghai
                .from_local_datetime(&naive)
                .single()
                .map(|t| t.with_timezone(&Utc)),
        };
        at.is_some_and(|at| {
            (Utc::now() - at)
                .abs()
                .to_std()
                .is_ok_and(|d| d <= self.opts.max_skew)
        })
    }

    fn is_awaiting(&self, number: &str) -> bool {
        self.awaiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(number)
    }

    fn activated(&self, number: &str) {
        self.awaiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(number);
    }
}

/// The request's parameters: a POST's JSON body fields (and any query pairs), a GET's query
/// pairs (an array parameter repeated or comma-separated).
fn params_of(method: &Method, query: &[(String, String)], body: &str) -> Result<Params, String> {
    let mut out = Params::new();
    if *method == Method::POST {
        match serde_json::from_str::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(map)) => out = map,
            _ => return Err("the body is not a JSON object".into()),
        }
    }
    for (k, v) in query {
        if ARRAYS.contains(&k.as_str()) {
            let entry = out
                .entry(k.clone())
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(items) = entry {
                items.extend(
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| serde_json::Value::String(s.to_string())),
                );
            }
        } else {
            out.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
    }
    Ok(out)
}

fn text(p: &Params, key: &str) -> Option<String> {
    p.get(key).and_then(scalar)
}

/// The access numbers of an array parameter (1 to 100), or why not.
fn numbers(p: &Params, key: &str) -> Result<Vec<String>, String> {
    let list = p
        .get(key)
        .and_then(|v| v.as_array())
        .ok_or_else(|| format!("{key} must be an array"))?;
    let numbers: Vec<String> = list.iter().filter_map(scalar).collect();
    if numbers.is_empty() || numbers.len() > SIM_INFO_MAX || numbers.len() != list.len() {
        return Err(format!("{key}: 1 to {SIM_INFO_MAX} access numbers"));
    }
    Ok(numbers)
}

async fn handle(
    State(w): State<Arc<Wire>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = uri
        .path()
        .strip_prefix(w.prefix.as_str())
        .unwrap_or(uri.path())
        .to_string();
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    if let Err(why) = w.authenticate(&method, &query, &body, &headers) {
        return unauthorized(why);
    }
    let p = match params_of(&method, &query, &body) {
        Ok(p) => p,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    match path.as_str() {
        SIM_INFO_PATH => sim_info(&w, &p).await,
        FLOW_PATH => flow(&w, &p).await,
        REAL_NAME_PATH => real_name(&w, &p).await,
        DISABLED_PATH => disabled_number(&w, &p).await,
        SERV_ACTIVE_PATH => serv_active(&w, &p).await,
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A `SimCarrier` error of a read, on the wire.
fn read_error(e: CarrierError) -> Response {
    match e {
        CarrierError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS.into_response(),
        other => (StatusCode::SERVICE_UNAVAILABLE, format!("{other:?}")).into_response(),
    }
}

/// The cards of `numbers` the simulated carrier holds, with their number.
async fn cards_of(
    w: &Wire,
    numbers: &[String],
) -> Result<Vec<(String, crate::carrier::CarrierCard)>, Response> {
    let mut out = Vec::new();
    for n in numbers {
        let Some(iccid) = w.sim.card_by_number(n).await.map_err(read_error)? else {
            continue;
        };
        out.push((n.clone(), w.sim.card(&iccid).await.map_err(read_error)?));
    }
    Ok(out)
}

/// batchQrySimInfo (§3): `{code "0", message, data{qrySimInfoList}}` ([NEST5G]'s shape).
async fn sim_info(w: &Wire, p: &Params) -> Response {
    if text(p, "custNumber").as_deref() != Some(w.cust_number.as_str()) {
        return envelope_refusal("custNumber 错误");
    }
    let numbers = match numbers(p, "accessNumbers") {
        Ok(n) => n,
        Err(why) => return envelope_refusal(&why),
    };
    let cards = match cards_of(w, &numbers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let list: Vec<serde_json::Value> = cards
        .iter()
        .map(|(n, c)| {
            let code = if c.state == ServiceState::Stopped && w.is_awaiting(n) {
                AWAITING_ACTIVATION
            } else {
                sim_status_code(c.state)
            };
            serde_json::json!({
                "accessNumber": n,
                "iccid": c.iccid.as_str(),
                "imsi": "",
                "simStatus": code,
                "activeTime": "",
                "createTime": "",
            })
        })
        .collect();
    json(serde_json::json!({
        "code": "0",
        "message": "OK",
        "data": {"qrySimInfoList": list},
    }))
}

/// batchQryFlowByMonth (§1): the verbatim sample's shape, `code` a number.
async fn flow(w: &Wire, p: &Params) -> Response {
    if text(p, "custNumber").as_deref() != Some(w.cust_number.as_str()) {
        return envelope_refusal("custNumber 错误");
    }
    let numbers = match numbers(p, "accessNumber") {
        Ok(n) => n,
        Err(why) => return envelope_refusal(&why),
    };
    let cards = match cards_of(w, &numbers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let month = Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y%m")
        .to_string();
    let data: Vec<serde_json::Value> = cards
        .iter()
        .map(|(n, c)| {
            serde_json::json!({
                "accessNumber": n,
                "result": "1",
                "unit": "MB",
                "flowAmount": format_mb(c.cycle_usage_bytes),
                "month": month,
                "status": "0",
                "statusDesc": "查询成功",
            })
        })
        .collect();
    json(serde_json::json!({"code": 0, "msg": "查询成功", "data": data}))
}

/// qryRealNameStatus (§5): every card the simulated carrier holds is verified.
async fn real_name(w: &Wire, p: &Params) -> Response {
    let numbers = match numbers(p, "accessNumber") {
        Ok(n) => n,
        Err(why) => return envelope_refusal(&why),
    };
    let cards = match cards_of(w, &numbers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let list: Vec<serde_json::Value> = cards
        .iter()
        .map(|(n, _)| serde_json::json!({"accessNumber": n, "status": "1"}))
        .collect();
    json(serde_json::json!({"code": 0, "msg": "查询成功", "data": {"statusList": list}}))
}

/// The §0.5 XML family's reply.
fn change_reply(rsp_type: &str, code: &str, message: &str, transaction_id: &str) -> Response {
    xml(format!(
        "<SvcCont><Response><RspType>{rsp_type}</RspType><RspCode>{code}</RspCode>\
         <RspDesc>{message}</RspDesc></Response>\
         <GROUP_TRANSACTIONID>{transaction_id}</GROUP_TRANSACTIONID></SvcCont>"
    ))
}

fn change_refusal(code: &str, message: &str) -> Response {
    change_reply("1", code, message, "")
}

/// A `SimCarrier` error of a change, in `reply`'s shape (code, message).
fn change_error(e: CarrierError, reply: fn(&str, &str) -> Response) -> Response {
    match e {
        CarrierError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS.into_response(),
        CarrierError::Transient(m) | CarrierError::CircuitOpen(m) => {
            (StatusCode::SERVICE_UNAVAILABLE, m).into_response()
        }
        CarrierError::Deferred { message, .. } => reply(INVENTED_REPEAT_WINDOW, &message),
        CarrierError::Rejected { code, message } if code == "CARD_CANCELLED" => {
            reply("-4", &message)
        }
        CarrierError::Rejected { message, .. } => reply("-7", &message),
        CarrierError::OutcomeUnknown(m) => (StatusCode::GATEWAY_TIMEOUT, m).into_response(),
    }
}

/// The card a change names, or the refusal.
async fn card_named(
    w: &Wire,
    p: &Params,
    reply: fn(&str, &str) -> Response,
) -> Result<(String, Iccid), Response> {
    let Some(number) = text(p, "access_number").filter(|n| !n.is_empty()) else {
        return Err(reply("-1", "access_number 缺失"));
    };
    match w.sim.card_by_number(&number).await {
        Ok(Some(iccid)) => Ok((number, iccid)),
        Ok(None) => Err(reply("-4", "号码不存在")),
        Err(e) => Err(change_error(e, reply)),
    }
}

/// Applies a change at the simulated carrier and answers it with `ok` (its receipt).
async fn apply(
    w: &Wire,
    iccid: &Iccid,
    to: ServiceState,
    ok: impl Fn(&Receipt) -> Response,
    reply: fn(&str, &str) -> Response,
) -> Response {
    let result = match to {
        ServiceState::Stopped => w.sim.stop(iccid).await,
        _ => w.sim.restore(iccid).await,
    };
    match result {
        Ok(r) => ok(&r),
        Err(CarrierError::OutcomeUnknown(_)) => {
            // Applied, but the client must see no answer in time.
            tokio::time::sleep(w.opts.timeout_after_apply_delay).await;
            ok(&Receipt::applied())
        }
        Err(e) => change_error(e, reply),
    }
}

/// disabledNumberService (§6): 19 stop, 20 restore; `acctCd` present and empty.
async fn disabled_number(w: &Wire, p: &Params) -> Response {
    if text(p, "acctCd").is_none_or(|a| !a.is_empty()) {
        return change_refusal("-1", "acctCd 必须存在且为空");
    }
    let to = match text(p, "orderTypeId").as_deref() {
        Some(ORDER_STOP) => ServiceState::Stopped,
        Some(ORDER_RESTORE) => ServiceState::Active,
        _ => return change_refusal("-1", "orderTypeId must be 19 or 20"),
    };
    let (number, iccid) = match card_named(w, p, change_refusal).await {
        Ok(named) => named,
        Err(r) => return r,
    };
    let now = match w.sim.card(&iccid).await {
        Ok(c) => c.state,
        Err(e) => return change_error(e, change_refusal),
    };
    if now == ServiceState::Cancelled {
        return change_refusal("-4", "号码已拆机");
    }
    if to == ServiceState::Active && now == ServiceState::Stopped && w.is_awaiting(&number) {
        return change_refusal(NEEDS_ACTIVATION, "卡状态为待激活，请先激活");
    }
    if now == to {
        return change_refusal("-9", "不能重复订购");
    }
    apply(
        w,
        &iccid,
        to,
        |r| change_reply("0", "0000", "成功", &transaction_id_of(r)),
        change_refusal,
    )
    .await
}

fn activation_reply(code: &str, message: &str) -> Response {
    json(serde_json::json!({"RESULT": code, "SMSG": message}))
}

/// requestServActive (§6.1): restores the card (whatever its state: the platform's answer for
/// a card not awaiting activation is not found) and takes it off the awaiting list.
async fn serv_active(w: &Wire, p: &Params) -> Response {
    let (number, iccid) = match card_named(w, p, activation_reply).await {
        Ok(named) => named,
        Err(r) => return r,
    };
    match w.sim.card(&iccid).await {
        Ok(c) if c.state == ServiceState::Cancelled => {
            return activation_reply("-4", "号码已拆机");
        }
        Ok(_) => {}
        Err(e) => return change_error(e, activation_reply),
    }
    let answer = apply(
        w,
        &iccid,
        ServiceState::Active,
        |_| activation_reply("0", "成功"),
        activation_reply,
    )
    .await;
    if answer.status().is_success() {
        w.activated(&number);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_parameters_take_arrays_repeated_or_comma_separated() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let p = params_of(
            &Method::GET,
            &q(&[
                ("accessNumber", "1,2"),
                ("accessNumber", "3"),
                ("custNumber", "c"),
            ]),
            "",
        )
        .expect("params");
        assert_eq!(
            numbers(&p, "accessNumber"),
            Ok(vec!["1".into(), "2".into(), "3".into()])
        );
        assert_eq!(text(&p, "custNumber").as_deref(), Some("c"));
        let p = params_of(
            &Method::POST,
            &[],
            r#"{"accessNumbers":["1"],"groupId":""}"#,
        )
        .expect("params");
        assert_eq!(numbers(&p, "accessNumbers"), Ok(vec!["1".into()]));
        assert!(params_of(&Method::POST, &[], "[1]").is_err());
        let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        let p = params_of(
            &Method::POST,
            &[],
            &serde_json::json!({"accessNumbers": many}).to_string(),
        )
        .expect("params");
        assert!(numbers(&p, "accessNumbers").is_err(), "at most 100");
    }

    #[tokio::test]
    async fn change_replies_read_back_as_the_adapter_reads_them() {
        async fn body(r: Response) -> String {
            let bytes = axum::body::to_bytes(r.into_body(), 1 << 16)
                .await
                .expect("body");
            String::from_utf8_lossy(&bytes).into_owned()
        }
        let ok = body(change_reply(
            "0",
            "0000",
            "成功",
            "1000000190202401010000000001",
        ))
        .await;
        assert_eq!(
            change_answer(&ok),
            ChangeAnswer::Accepted {
                transaction_id: Some("1000000190202401010000000001".into())
            }
        );
        let needs = body(change_refusal(NEEDS_ACTIVATION, "待激活")).await;
        assert!(matches!(
            change_answer(&needs),
            ChangeAnswer::NeedsActivation { .. }
        ));
        let window = body(change_error(
            CarrierError::Deferred {
                code: "X".into(),
                message: "window".into(),
                retry_after: None,
            },
            change_refusal,
        ))
        .await;
        assert!(
            matches!(change_answer(&window), ChangeAnswer::Refused { ref code, .. } if code == INVENTED_REPEAT_WINDOW)
        );
        let active = body(activation_reply("0", "成功")).await;
        assert!(matches!(
            activation_answer(&active),
            ChangeAnswer::Accepted { .. }
        ));
    }
}
