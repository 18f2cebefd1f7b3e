//! The China Unicom IoT gateway wire simulator: the paths, envelope, token check, bodies and
//! codes of the adapter in [`crate::carrier::http::unicom_gateway`], in front of a
//! [`SimCarrier`] whose rules and fault injection decide every answer.
//!
//! Served paths (relative to the path of `base_url`, e.g. `/api`), all `POST` with the §0.3
//! envelope, each answering in the dossier's skeleton shapes (the fixture test
//! `wire_unicom_gateway_simulator_answers_in_the_dossier_shapes` holds it to them):
//! `/wsGetTerminalDetails/V1/1Main/vV1.1` (§1), `/wsEditTerminal/V1/1Main/vV1.1` (§2, changeType
//! `"3"`, targetValue `"2"` or `"3"`), `/wsGetTerminalUsage/V1/1Main/vV1.1` (§5).
//!
//! What it checks, with the account's settings: `app_id`, `data.openId`, `data.version`, a
//! `timestamp` in the account's `timestamp_format`, a 23-digit `trans_id`, and the `token`
//! recomputed with the account's `token_recipe` (compared in constant time).
//!
//! Invented (no source; the gateway's own answers are not found, §8):
//! - the outer statuses: [`INVENTED_AUTH_REFUSED`] for a wrong app_id / openId / version /
//!   timestamp / trans_id / token, [`INVENTED_BAD_REQUEST`] for a body that is not the
//!   envelope (both with HTTP 200, as the envelope's own errors are assumed to come);
//! - the inner `resultCode`s: [`INVENTED_TOO_MANY_ICCIDS`] for more than 50 ICCIDs (the real
//!   reply is not found), [`INVENTED_UNKNOWN_ICCID`] for a change or usage query of a card it
//!   does not hold (an unknown card is simply absent from `terminals`, which the dossier does
//!   not confirm either), [`INVENTED_REFUSED`] for a change the simulated carrier refuses (a
//!   cancelled card, an injected refusal), [`INVENTED_REPEAT_WINDOW`] for one inside its repeat
//!   window, [`INVENTED_BAD_PARAMETER`] for parameters it does not take;
//! - HTTP 429 (empty body) for the simulated carrier's rate limit (429 is seen, [YZ-LT-Q]; its
//!   body is not), HTTP 503 for its outages;
//! - the field values: what the simulated card does not hold is empty (`imsi`, `msisdn`,
//!   `imei`), `ratePlan` is [`WireOptions::rate_plan`], `realNameStatus` `"2"`, SMS/voice `"0"`,
//!   `simStatus` 2/3/4 for active/stopped/cancelled, `effectiveDate` and `timestamp` now in
//!   `yyyy-MM-dd HH:mm:ss` Beijing time;
//! - `totalDataVolume`: the current cycle's usage in MB (the unit is not found, §5) for any
//!   valid `billingCycle`; `1074` for a `billingCycle` that is not `yyyyMM`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;

use super::auth;
use super::wire::{
    api_path, bytes_to_mb, is_billing_cycle, sim_status_for, InnerHead, RequestEnvelope,
    API_DETAILS, API_EDIT, API_USAGE, CHANGE_TYPE_STATUS, CODE_MONTH_OUT_OF_RANGE, DETAILS_BATCH,
    OK,
};
use super::UnicomGatewayConfig;
use crate::carrier::sim::SimCarrier;
use crate::carrier::{Carrier, CarrierCard, CarrierError};
use crate::domain::Iccid;

/// Outer status for a request the simulator cannot authenticate (invented).
pub const INVENTED_AUTH_REFUSED: &str = "9001";
/// Outer status for a body that is not the envelope (invented).
pub const INVENTED_BAD_REQUEST: &str = "9000";
/// Inner resultCode for more than 50 ICCIDs (invented).
pub const INVENTED_TOO_MANY_ICCIDS: &str = "9050";
/// Inner resultCode for an ICCID the simulated carrier does not hold (invented).
pub const INVENTED_UNKNOWN_ICCID: &str = "9404";
/// Inner resultCode for a change the simulated carrier refuses (invented).
pub const INVENTED_REFUSED: &str = "9400";
/// Inner resultCode for a change inside the simulated repeat window (invented).
pub const INVENTED_REPEAT_WINDOW: &str = "9409";
/// Inner resultCode for parameters the simulator does not take (invented).
pub const INVENTED_BAD_PARAMETER: &str = "9002";

/// How the simulator behaves beyond what the [`SimCarrier`]'s faults decide.
#[derive(Debug, Clone)]
pub struct WireOptions {
    /// How long a change that was applied but is to be answered with a timeout is held before
    /// its answer: longer than the client's request timeout.
    pub timeout_after_apply_delay: Duration,
    /// The `ratePlan` every simulated terminal reports (a JSON number, as in [MEH]'s sample).
    pub rate_plan: u64,
}

impl Default for WireOptions {
    fn default() -> Self {
        WireOptions {
            timeout_after_apply_delay: Duration::from_secs(30),
            rate_plan: 21_000_000,
        }
    }
}

struct Wire {
    sim: Arc<SimCarrier>,
    cfg: UnicomGatewayConfig,
    opts: WireOptions,
}

/// The router, with its routes under the path of `cfg.base_url` (e.g. `/api`). Credentials and
/// disputed settings are `cfg`'s.
pub fn router(sim: Arc<SimCarrier>, cfg: &UnicomGatewayConfig, opts: WireOptions) -> Router {
    let prefix = url::Url::parse(&cfg.base_url)
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default();
    // Hold an applied change past the configured client's timeout whatever the options say.
    let floor = Duration::from_millis(cfg.timeouts.request_ms.saturating_add(1_000));
    let opts = WireOptions {
        timeout_after_apply_delay: opts.timeout_after_apply_delay.max(floor),
        ..opts
    };
    let w = Arc::new(Wire {
        sim,
        cfg: cfg.clone(),
        opts,
    });
    Router::new()
        .route(
            &format!("{prefix}{}", api_path(API_DETAILS)),
            post(|State(w): State<Arc<Wire>>, body: Bytes| async move {
                w.answer(&body, Api::Details).await
            }),
        )
        .route(
            &format!("{prefix}{}", api_path(API_EDIT)),
            post(|State(w): State<Arc<Wire>>, body: Bytes| async move {
                w.answer(&body, Api::Edit).await
            }),
        )
        .route(
            &format!("{prefix}{}", api_path(API_USAGE)),
            post(|State(w): State<Arc<Wire>>, body: Bytes| async move {
                w.answer(&body, Api::Usage).await
            }),
        )
        .with_state(w)
}

#[derive(Clone, Copy)]
enum Api {
    Details,
    Edit,
    Usage,
}

fn json_response(body: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

/// A refusal by the gateway itself (outer status).
fn outer(status: &str, message: &str) -> Response {
    json_response(&json!({"status": status, "message": message, "data": null}))
}

fn now_text() -> String {
    chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

impl Wire {
    /// The inner `data` head of an answer to `message_id`.
    fn head(&self, message_id: &str, code: &str, desc: Option<&str>) -> Map<String, Value> {
        let head = InnerHead {
            result_code: Some(code.into()),
            result_desc: desc.map(str::to_string),
            message_id: Some(message_id.into()),
            timestamp: Some(now_text()),
            version: Some(self.cfg.version.clone()),
        };
        match serde_json::to_value(head) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// An accepted call: outer `0000` around `data`.
    fn reply(&self, data: Map<String, Value>) -> Response {
        json_response(&json!({"status": OK, "message": "success", "data": Value::Object(data)}))
    }

    /// A business refusal: outer `0000`, inner `code`.
    fn refusal(&self, message_id: &str, code: &str, desc: &str) -> Response {
        self.reply(self.head(message_id, code, Some(desc)))
    }

    /// Checks the envelope against the account; the request's `data` when it passes.
    fn admit(&self, body: &[u8]) -> Result<RequestEnvelope, Box<Response>> {
        let env: RequestEnvelope = serde_json::from_slice(body).map_err(|_| {
            Box::new(outer(
                INVENTED_BAD_REQUEST,
                "the body is not the gateway envelope",
            ))
        })?;
        let refused = |why: &str| Box::new(outer(INVENTED_AUTH_REFUSED, why));
        if env.app_id != self.cfg.app_id {
            return Err(refused("unknown app_id"));
        }
        if self.cfg.timestamp_format.parse(&env.timestamp).is_none() {
            return Err(refused("timestamp not in the account's format"));
        }
        if !auth::is_trans_id(&env.trans_id) {
            return Err(refused("trans_id is not 23 digits"));
        }
        let expected = auth::token(
            self.cfg.token_recipe,
            &env.app_id,
            &env.timestamp,
            &env.trans_id,
            self.cfg.app_secret.expose(),
        );
        if !bool::from(env.token.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(refused("token mismatch"));
        }
        let text = |k: &str| env.data.get(k).and_then(Value::as_str);
        if text("openId") != Some(self.cfg.open_id.as_str()) {
            return Err(refused("unknown openId"));
        }
        if text("version") != Some(self.cfg.version.as_str()) {
            return Err(refused("unexpected version"));
        }
        if text("messageId").is_none_or(str::is_empty) {
            return Err(refused("messageId missing"));
        }
        Ok(env)
    }

    /// A [`SimCarrier`] failure in the gateway's terms (all invented, module doc).
    fn failure(&self, message_id: &str, e: CarrierError) -> Response {
        match e {
            CarrierError::Rejected { code, message } if code == "NOT_FOUND" => {
                self.refusal(message_id, INVENTED_UNKNOWN_ICCID, &message)
            }
            CarrierError::Rejected { message, .. } => {
                self.refusal(message_id, INVENTED_REFUSED, &message)
            }
            CarrierError::Deferred { message, .. } => {
                self.refusal(message_id, INVENTED_REPEAT_WINDOW, &message)
            }
            CarrierError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS.into_response(),
            CarrierError::Transient(_)
            | CarrierError::CircuitOpen(_)
            | CarrierError::OutcomeUnknown(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
            }
        }
    }

    async fn answer(&self, body: &[u8], api: Api) -> Response {
        let env = match self.admit(body) {
            Ok(e) => e,
            Err(r) => return *r,
        };
        let message_id = env
            .data
            .get("messageId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match api {
            Api::Details => self.details(&message_id, &env.data).await,
            Api::Edit => self.edit(&message_id, &env.data).await,
            Api::Usage => self.usage(&message_id, &env.data).await,
        }
    }

    fn terminal(&self, c: &CarrierCard) -> Value {
        json!({
            "iccid": c.iccid.as_str(),
            "msisdn": "",
            "imsi": "",
            "imei": "",
            "simStatus": sim_status_for(c.state),
            "realNameStatus": "2",
            "ratePlan": self.opts.rate_plan,
            "monthToDateDataUsage": bytes_to_mb(c.cycle_usage_bytes),
            "monthToDateUsage": bytes_to_mb(c.cycle_usage_bytes),
            "monthToDateSMSUsage": "0",
            "dateActivated": "",
            "dateModified": format!("{}.0", now_text()),
            "lockStatus": "0",
            "ctdSessionCount": 0,
        })
    }

    async fn details(&self, message_id: &str, data: &Map<String, Value>) -> Response {
        let Some(list) = data.get("iccids").and_then(Value::as_array) else {
            return self.refusal(
                message_id,
                INVENTED_BAD_PARAMETER,
                "iccids must be an array",
            );
        };
        if list.len() > DETAILS_BATCH {
            return self.refusal(
                message_id,
                INVENTED_TOO_MANY_ICCIDS,
                "批量查询仅支持50位号码 (the simulator's refusal; the gateway's is not known)",
            );
        }
        // An ICCID that is not one is simply not found.
        let iccids: Vec<Iccid> = list
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|s| Iccid::parse_any(s).ok())
            .collect();
        match self.sim.cards(&iccids).await {
            Ok(cards) => {
                let mut d = self.head(message_id, OK, None);
                d.insert(
                    "terminals".into(),
                    Value::Array(cards.iter().map(|c| self.terminal(c)).collect()),
                );
                self.reply(d)
            }
            Err(e) => self.failure(message_id, e),
        }
    }

    async fn edit(&self, message_id: &str, data: &Map<String, Value>) -> Response {
        // [YJ] sends changeType as a number: both forms are taken.
        let text = |k: &str| match data.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        if text("changeType").as_deref() != Some(CHANGE_TYPE_STATUS) {
            return self.refusal(
                message_id,
                INVENTED_BAD_PARAMETER,
                "the simulator changes the SIM status only (changeType 3)",
            );
        }
        if !matches!(text("asynchronous").as_deref(), Some("0" | "1")) {
            return self.refusal(
                message_id,
                INVENTED_BAD_PARAMETER,
                "asynchronous must be 0 or 1",
            );
        }
        let Some(iccid) = text("iccid").and_then(|s| Iccid::parse_any(&s).ok()) else {
            return self.refusal(message_id, INVENTED_UNKNOWN_ICCID, "unknown iccid");
        };
        let result = match text("targetValue").as_deref() {
            Some("2") => self.sim.restore(&iccid).await,
            Some("3") => self.sim.stop(&iccid).await,
            _ => {
                return self.refusal(
                    message_id,
                    INVENTED_BAD_PARAMETER,
                    "the simulator sets targetValue 2 or 3 only",
                )
            }
        };
        let ok = || {
            let mut d = self.head(message_id, OK, None);
            d.insert("iccid".into(), json!(iccid.as_str()));
            d.insert("effectiveDate".into(), json!(now_text()));
            self.reply(d)
        };
        match result {
            Ok(_) => ok(),
            // Applied: answer only after the client has given up.
            Err(CarrierError::OutcomeUnknown(_)) => {
                tokio::time::sleep(self.opts.timeout_after_apply_delay).await;
                ok()
            }
            Err(e) => self.failure(message_id, e),
        }
    }

    async fn usage(&self, message_id: &str, data: &Map<String, Value>) -> Response {
        let cycle = data.get("billingCycle").and_then(Value::as_str);
        if !cycle.is_some_and(is_billing_cycle) {
            return self.refusal(
                message_id,
                CODE_MONTH_OUT_OF_RANGE,
                "超出月份 (the simulator takes any yyyyMM)",
            );
        }
        let Some(iccid) = data
            .get("iccid")
            .and_then(Value::as_str)
            .and_then(|s| Iccid::parse_any(s).ok())
        else {
            return self.refusal(message_id, INVENTED_UNKNOWN_ICCID, "unknown iccid");
        };
        match self.sim.card(&iccid).await {
            Ok(c) => {
                let mut d = self.head(message_id, OK, None);
                d.insert(
                    "totalDataVolume".into(),
                    json!(bytes_to_mb(c.cycle_usage_bytes)),
                );
                self.reply(d)
            }
            Err(e) => self.failure(message_id, e),
        }
    }
}
