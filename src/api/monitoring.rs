//! `simgate.v1.MonitoringService`: pools, alert rules, usage history, and the event listing and
//! stream, with request validation and the cursor format.

use std::pin::Pin;

use prost::Message;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

use super::auth::{forbidden, Authenticator};
use super::convert::{self, carrier_from_pb, carrier_to_pb, status_to_pb, timestamp};
use super::error::{invalid_argument, invalid_field};
use super::idempotency::{idempotent, RequestKey};
use super::paging::{event_cursor, read_event_cursor, Page};
use super::rpc::Rpc;
use crate::domain::alerts::AlertRules;
use crate::domain::pool::MAX_TOPUP_BYTES;
use crate::domain::Iccid;
use crate::pb;
use crate::service::access::Forbidden;
use crate::service::events::{EventHub, EventsConfig, OverCap, StreamSlots, WatchEnd};
use crate::service::monitor::{valid_pool_id, NewPool, PoolView, MAX_POOL_CARDS};
use crate::service::webhooks::{NewWebhook, WebhookService};
use crate::service::{Caller, CardService, FieldViolation};
use crate::store::{DeliveryState, EventFilter, EventRow, PoolFilter, Webhook};

const MAX_KINDS: usize = 20;
const MAX_HISTORY_DAYS: u32 = 400;

idempotent!(pb::TopUpPoolRequest);

pub struct MonitoringApi {
    service: CardService,
    hub: EventHub,
    webhooks: WebhookService,
    auth: Authenticator,
    streams: EventsConfig,
    slots: StreamSlots,
    metrics: Option<crate::metrics::Metrics>,
}

impl MonitoringApi {
    pub fn new(
        service: CardService,
        hub: EventHub,
        webhooks: WebhookService,
        auth: Authenticator,
    ) -> MonitoringApi {
        MonitoringApi {
            service,
            hub,
            webhooks,
            auth,
            streams: EventsConfig::default(),
            slots: StreamSlots::default(),
            metrics: None,
        }
    }

    /// WatchEvents caps and buffer, and where stream outcomes are counted.
    pub fn with_streams(
        mut self,
        cfg: EventsConfig,
        metrics: crate::metrics::Metrics,
    ) -> MonitoringApi {
        self.streams = cfg;
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, outcome: &str) {
        if let Some(m) = &self.metrics {
            m.event_stream(outcome);
        }
    }
}

fn over_cap(over: OverCap) -> Status {
    let (limit, max, whose) = match over {
        OverCap::Key(n) => ("events.max_streams_per_key", n, "this API key"),
        OverCap::Connection(n) => ("events.max_streams_per_connection", n, "this connection"),
    };
    let mut d = tonic_types::ErrorDetails::new();
    d.set_error_info(
        "WATCH_STREAMS_LIMITED",
        super::error::ERROR_DOMAIN,
        std::collections::HashMap::from([
            ("limit".to_string(), limit.to_string()),
            ("max".to_string(), max.to_string()),
        ]),
    );
    <Status as tonic_types::StatusExt>::with_error_details(
        tonic::Code::ResourceExhausted,
        format!("{whose} already has {max} open WatchEvents streams ({limit}); close one first"),
        d,
    )
}

/// The end of a stream whose client stopped reading: where to resume.
fn fell_behind(cursor: i64) -> Status {
    let token = event_cursor(cursor);
    let mut d = tonic_types::ErrorDetails::new();
    d.set_error_info(
        "WATCH_CONSUMER_TOO_SLOW",
        super::error::ERROR_DOMAIN,
        std::collections::HashMap::from([("resume_after_cursor".to_string(), token.clone())]),
    );
    <Status as tonic_types::StatusExt>::with_error_details(
        tonic::Code::ResourceExhausted,
        format!(
            "this stream stopped reading and its buffer stayed full, so it was ended; \
             watch again with after_cursor = {token} for everything after the last event sent"
        ),
        d,
    )
}

/// The audit log's name for a refusal: the gRPC code, with the reason of a precondition or
/// quota refusal (`FAILED_PRECONDITION:REASON`, as card operations write it).
fn refusal_name(status: &Status) -> String {
    let code = match status.code() {
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::Aborted => "ABORTED",
        Code::Unavailable => "UNAVAILABLE",
        Code::Unauthenticated => "UNAUTHENTICATED",
        _ => "INTERNAL",
    };
    match status.get_details_error_info() {
        Some(info)
            if matches!(
                status.code(),
                Code::FailedPrecondition | Code::ResourceExhausted
            ) =>
        {
            format!("{code}:{}", info.reason)
        }
        _ => code.to_string(),
    }
}

impl MonitoringApi {
    async fn audit_refusal(
        &self,
        caller: &Caller,
        customer: Option<&str>,
        status: &Status,
        what: &str,
    ) {
        // A malformed customer id is not written into the log as if it named one.
        let customer = customer.filter(|c| convert::customer_id_field("customer_id", c).is_ok());
        self.webhooks
            .audit_refusal(
                caller,
                customer,
                &refusal_name(status),
                format!("{what}: {}", status.message()),
            )
            .await;
    }

    async fn create_webhook_as(
        &self,
        caller: &Caller,
        req: pb::CreateWebhookRequest,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        let customer = convert::customer_id_field("customer_id", &req.customer_id)
            .map_err(|v| invalid_argument(vec![v]))?;
        own_customer(caller, &customer)?;
        if req.url.len() > 2000 {
            return Err(invalid_field("url", "must be at most 2,000 characters"));
        }
        let secret_ok = req.secret.is_empty()
            || ((16..=128).contains(&req.secret.len())
                && req.secret.bytes().all(|b| b.is_ascii_graphic()));
        if !secret_ok {
            return Err(invalid_field(
                "secret",
                "must be 16-128 visible ASCII characters: letters, digits and punctuation, no spaces (or empty to generate one)",
            ));
        }
        let kinds = kinds_field(req.kinds)?;
        let created = self
            .webhooks
            .create(
                NewWebhook {
                    customer_id: customer.clone(),
                    url: req.url,
                    kinds,
                    secret: req.secret,
                },
                caller,
            )
            .await?;
        let Some(hook) = created else {
            let limit = self.webhooks.max_per_customer();
            let mut d = tonic_types::ErrorDetails::new();
            d.set_error_info(
                "WEBHOOK_LIMIT",
                crate::api::error::ERROR_DOMAIN,
                std::collections::HashMap::from([("limit".to_string(), limit.to_string())]),
            );
            d.add_quota_failure_violation(
                format!("customer:{customer}"),
                format!("at most {limit} webhooks per customer (webhooks.max_per_customer)"),
            );
            return Err(Status::with_error_details(
                Code::ResourceExhausted,
                format!(
                    "customer {customer} already has {limit} webhooks, the most allowed \
                     (webhooks.max_per_customer); delete one first"
                ),
                d,
            ));
        };
        Ok(Response::new(pb::CreateWebhookResponse {
            webhook: Some(webhook_to_pb(&hook)),
            secret: hook.secret,
        }))
    }
}

fn webhook_to_pb(w: &Webhook) -> pb::Webhook {
    pb::Webhook {
        webhook_id: w.id.clone(),
        customer_id: w.customer_id.clone(),
        url: w.url.clone(),
        kinds: w.kinds.clone(),
        created_at: Some(timestamp(w.created_at)),
    }
}

fn delivery_state_to_pb(s: DeliveryState) -> pb::DeliveryState {
    match s {
        DeliveryState::Pending => pb::DeliveryState::Pending,
        DeliveryState::Delivered => pb::DeliveryState::Delivered,
        DeliveryState::Dead => pb::DeliveryState::Dead,
    }
}

fn millis(ms: i64) -> Option<prost_types::Timestamp> {
    chrono::DateTime::from_timestamp_millis(ms).map(timestamp)
}

fn webhook_id(raw: &str) -> Result<String, Status> {
    let ok = raw.len() <= 64
        && raw.starts_with("wh_")
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(raw.to_string())
    } else {
        Err(invalid_field("webhook_id", "is not a webhook id"))
    }
}

/// Kinds as the event filter takes them, checked the same way.
fn kinds_field(kinds: Vec<String>) -> Result<Vec<String>, Status> {
    let f = event_filter(Some(pb::EventFilter {
        kinds,
        ..Default::default()
    }))
    .map_err(|s| {
        let message = s.message().replace("filter.kinds", "kinds");
        invalid_field("kinds", message)
    })?;
    Ok(f.kinds)
}

/// A customer key may name its own customer only.
fn own_customer(caller: &Caller, customer: &str) -> Result<(), Status> {
    if caller.principal.sees(customer) {
        Ok(())
    } else {
        Err(forbidden(Forbidden(format!(
            "this key may not act for customer {customer}"
        ))))
    }
}

fn pool_to_pb(v: &PoolView) -> pb::Pool {
    let p = &v.pool;
    pb::Pool {
        pool_id: p.id.clone(),
        name: p.name.clone(),
        carrier: carrier_to_pb(p.carrier) as i32,
        customer_id: p.customer_id.clone(),
        monthly_quota_bytes: p.quota_bytes,
        auto_suspend: p.auto_suspend,
        cycle_start: Some(timestamp(p.cycle_start)),
        topup_bytes: p.topup_bytes,
        used_bytes: v.used_bytes,
        capacity_bytes: p.capacity(),
        used_permille: u32::try_from(crate::domain::alerts::permille(v.used_bytes, p.capacity()))
            .unwrap_or(u32::MAX),
        exhausted: p.exhausted,
        member_count: u32::try_from(v.members).unwrap_or(u32::MAX),
        created_at: Some(timestamp(p.created_at)),
        updated_at: Some(timestamp(p.updated_at)),
    }
}

pub fn event_to_pb(e: &EventRow) -> pb::Event {
    pb::Event {
        cursor: event_cursor(e.id),
        kind: e.kind.clone(),
        cause: e.cause.clone(),
        at: Some(timestamp(e.at)),
        customer_id: e.customer_id.clone(),
        carrier: carrier_to_pb(e.carrier) as i32,
        iccid: e.iccid.clone(),
        pool_id: e.pool_id.clone().unwrap_or_default(),
        status: e.status.map_or(pb::CardStatus::Unspecified, status_to_pb) as i32,
        stop_reasons: e
            .stop_reasons
            .iter()
            .map(|r| convert::reason_to_pb(r) as i32)
            .collect(),
        balance_fen: e.balance.0,
        amount_fen: e.amount.0,
        pool_used_bytes: e.detail.pool_used_bytes.unwrap_or(0),
        pool_capacity_bytes: e.detail.pool_capacity_bytes.unwrap_or(0),
        alert: e.detail.alert.as_ref().map(|a| pb::Alert {
            rule: a.rule.clone(),
            threshold: a.threshold,
            value: a.value,
            unit: a.unit.clone(),
        }),
        carrier_state: e.detail.carrier_state.clone().unwrap_or_default(),
        expected_state: e.detail.expected_state.clone().unwrap_or_default(),
    }
}

fn rules_to_pb(customer: &str, r: &AlertRules, customised: bool) -> pb::AlertRules {
    pb::AlertRules {
        customer_id: customer.to_string(),
        card_usage_permille: r.card_usage_permille.clone(),
        pool_usage_permille: r.pool_usage_permille.clone(),
        validity_days: r.validity_days.clone(),
        balance_below_next_fee: r.balance_below_next_fee,
        retention_cancel_days: r.retention_cancel_days.clone(),
        card_stopped: r.card_stopped,
        card_restored: r.card_restored,
        customised,
    }
}

/// The optional customer a pool request names (pool ids are per customer).
fn pool_customer(raw: &str) -> Result<Option<String>, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    convert::customer_id_field("customer_id", raw)
        .map(Some)
        .map_err(|v| invalid_argument(vec![v]))
}

fn pool_id(field: &str, raw: &str) -> Result<String, Status> {
    if valid_pool_id(raw) {
        Ok(raw.to_string())
    } else {
        Err(invalid_field(
            field,
            "must be 1-64 characters of A-Z, a-z, 0-9, '-', '_'",
        ))
    }
}

fn iccid_list(raw: &[String]) -> Result<Vec<Iccid>, Status> {
    if raw.is_empty() || raw.len() > MAX_POOL_CARDS {
        return Err(invalid_field(
            "iccids",
            format!("must name 1..={MAX_POOL_CARDS} cards"),
        ));
    }
    let mut violations = Vec::new();
    let mut out = Vec::with_capacity(raw.len());
    let mut seen = std::collections::HashSet::new();
    for (i, s) in raw.iter().enumerate() {
        match convert::iccid_field(&format!("iccids[{i}]"), s) {
            Ok(iccid) if !seen.insert(iccid.clone()) => violations.push(FieldViolation::new(
                format!("iccids[{i}]"),
                "is named twice",
            )),
            Ok(iccid) => out.push(iccid),
            Err(v) => violations.push(v),
        }
    }
    if violations.is_empty() {
        Ok(out)
    } else {
        Err(invalid_argument(violations))
    }
}

fn event_filter(f: Option<pb::EventFilter>) -> Result<EventFilter, Status> {
    let f = f.unwrap_or_default();
    let mut violations = Vec::new();
    let customer_id = if f.customer_id.is_empty() {
        None
    } else {
        convert::customer_id_field("filter.customer_id", &f.customer_id)
            .map_err(|v| violations.push(v))
            .ok()
    };
    let carrier = match f.carrier {
        0 => None,
        v => {
            let c = carrier_from_pb(v);
            if c.is_none() {
                violations.push(FieldViolation::new("filter.carrier", "is not a carrier"));
            }
            c
        }
    };
    let iccid = if f.iccid.is_empty() {
        None
    } else {
        convert::iccid_field("filter.iccid", &f.iccid)
            .map_err(|v| violations.push(v))
            .ok()
            .map(|i| i.as_str().to_string())
    };
    let pool_id = if f.pool_id.is_empty() {
        None
    } else if valid_pool_id(&f.pool_id) {
        Some(f.pool_id.clone())
    } else {
        violations.push(FieldViolation::new("filter.pool_id", "is not a pool id"));
        None
    };
    if f.kinds.len() > MAX_KINDS {
        violations.push(FieldViolation::new(
            "filter.kinds",
            format!("at most {MAX_KINDS} kinds"),
        ));
    }
    for (i, k) in f.kinds.iter().enumerate() {
        let body = k.strip_suffix('*').unwrap_or(k);
        let ok = !k.is_empty()
            && k.len() <= 64
            && body
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
        if !ok {
            violations.push(FieldViolation::new(
                format!("filter.kinds[{i}]"),
                "must be an event kind (e.g. card.suspended) or a prefix ending in * (alert.*)",
            ));
        }
    }
    if !violations.is_empty() {
        return Err(invalid_argument(violations));
    }
    Ok(EventFilter {
        customer_id,
        carrier,
        iccid,
        pool_id,
        kinds: f.kinds,
        without_alerts: false,
    })
}

/// A customer key sees its own customer's events only, whatever it asks for. None: nothing.
fn scoped(mut filter: EventFilter, own: Option<&String>) -> Option<EventFilter> {
    if let Some(own) = own {
        if filter.customer_id.as_ref().is_some_and(|c| c != own) {
            return None;
        }
        filter.customer_id = Some(own.clone());
    }
    Some(filter)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl pb::monitoring_service_server::MonitoringService for MonitoringApi {
    async fn create_pool(
        &self,
        request: Request<pb::CreatePoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let caller = self.auth.caller(&request, Rpc::CreatePool).await?;
        let req = request.into_inner();
        let mut violations = Vec::new();
        if !valid_pool_id(&req.pool_id) {
            violations.push(FieldViolation::new(
                "pool_id",
                "must be 1-64 characters of A-Z, a-z, 0-9, '-', '_'",
            ));
        }
        if req.name.chars().count() > 128 {
            violations.push(FieldViolation::new("name", "at most 128 characters"));
        }
        let carrier = carrier_from_pb(req.carrier);
        if carrier.is_none() {
            violations.push(FieldViolation::new("carrier", "is required"));
        }
        let customer = convert::customer_id_field("customer_id", &req.customer_id)
            .map_err(|v| violations.push(v))
            .ok();
        if req.monthly_quota_bytes == 0 || req.monthly_quota_bytes > MAX_TOPUP_BYTES {
            violations.push(FieldViolation::new(
                "monthly_quota_bytes",
                format!("must be 1..={MAX_TOPUP_BYTES}"),
            ));
        }
        let (Some(carrier), Some(customer_id), true) = (carrier, customer, violations.is_empty())
        else {
            return Err(invalid_argument(violations));
        };
        own_customer(&caller, &customer_id)?;
        let view = self
            .service
            .create_pool(
                NewPool {
                    id: req.pool_id,
                    name: req.name,
                    carrier,
                    customer_id,
                    quota_bytes: req.monthly_quota_bytes,
                    auto_suspend: req.auto_suspend,
                },
                &caller,
            )
            .await?;
        Ok(Response::new(pool_to_pb(&view)))
    }

    async fn get_pool(
        &self,
        request: Request<pb::GetPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let caller = self.auth.caller(&request, Rpc::GetPool).await?;
        let id = pool_id("pool_id", &request.get_ref().pool_id)?;
        let customer = pool_customer(&request.get_ref().customer_id)?;
        let view = self
            .service
            .get_pool(&id, customer.as_deref(), &caller)
            .await?;
        Ok(Response::new(pool_to_pb(&view)))
    }

    async fn list_pools(
        &self,
        request: Request<pb::ListPoolsRequest>,
    ) -> Result<Response<pb::ListPoolsResponse>, Status> {
        let caller = self.auth.caller(&request, Rpc::ListPools).await?;
        let req = request.into_inner();
        let size = convert::page_size(req.page_size, 100)?;
        let mut filter = PoolFilter::default();
        if !req.customer_id.is_empty() {
            filter.customer_id = Some(
                convert::customer_id_field("customer_id", &req.customer_id)
                    .map_err(|v| invalid_argument(vec![v]))?,
            );
        }
        if req.carrier != 0 {
            filter.carrier = Some(
                carrier_from_pb(req.carrier)
                    .ok_or_else(|| invalid_field("carrier", "is not a carrier"))?,
            );
        }
        // Pools page in (pool id, customer) order, since two customers may have a pool of the
        // same id.
        let unpaged = pb::ListPoolsRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        };
        let page = Page::<(String, String)>::read(
            "page_token",
            &req.page_token,
            size,
            "ListPools",
            &unpaged,
        )?;
        let (after_id, after_customer) = match &page.after {
            None => (String::new(), String::new()),
            // The position goes to the store as it is: only what a pool can be is taken.
            Some((id, customer))
                if valid_pool_id(id) && convert::customer_id_field("", customer).is_ok() =>
            {
                (id.clone(), customer.clone())
            }
            Some(_) => {
                return Err(invalid_field(
                    "page_token",
                    "is not a token this server issued",
                ))
            }
        };
        let mut pools = self
            .service
            .list_pools(&filter, (&after_id, &after_customer), page.limit(), &caller)
            .await?;
        let next_page_token = page.next(&mut pools, |last| {
            (last.pool.id.clone(), last.pool.customer_id.clone())
        });
        Ok(Response::new(pb::ListPoolsResponse {
            pools: pools.iter().map(pool_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn add_cards_to_pool(
        &self,
        request: Request<pb::AddCardsToPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let caller = self.auth.caller(&request, Rpc::AddCardsToPool).await?;
        let req = request.into_inner();
        let id = pool_id("pool_id", &req.pool_id)?;
        let customer = pool_customer(&req.customer_id)?;
        let iccids = iccid_list(&req.iccids)?;
        let view = self
            .service
            .add_to_pool(&id, customer.as_deref(), &iccids, &caller)
            .await?;
        Ok(Response::new(pool_to_pb(&view)))
    }

    async fn remove_cards_from_pool(
        &self,
        request: Request<pb::RemoveCardsFromPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let caller = self.auth.caller(&request, Rpc::RemoveCardsFromPool).await?;
        let req = request.into_inner();
        let id = pool_id("pool_id", &req.pool_id)?;
        let customer = pool_customer(&req.customer_id)?;
        let iccids = iccid_list(&req.iccids)?;
        let view = self
            .service
            .remove_from_pool(&id, customer.as_deref(), &iccids, &caller)
            .await?;
        Ok(Response::new(pool_to_pb(&view)))
    }

    async fn top_up_pool(
        &self,
        request: Request<pb::TopUpPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let caller = self.auth.caller(&request, Rpc::TopUpPool).await?;
        let mut req = request.into_inner();
        let id = pool_id("pool_id", &req.pool_id)?;
        let customer = pool_customer(&req.customer_id)?;
        if req.bytes == 0 || req.bytes > MAX_TOPUP_BYTES {
            return Err(invalid_field(
                "bytes",
                format!("must be 1..={MAX_TOPUP_BYTES}"),
            ));
        }
        // The fields are checked before the repeat check, so that a refusal never depends on
        // what was stored under the request id.
        let key = RequestKey::take(&mut req)?;
        if let Some(first) = key.replay(&self.service, &caller).await? {
            return Ok(Response::new(first));
        }
        let respond = |v: &PoolView| pool_to_pb(v).encode_to_vec();
        let idem = key.idem(&respond);
        let view = self
            .service
            .top_up_pool(&id, customer.as_deref(), req.bytes, &caller, idem.as_ref())
            .await?;
        Ok(Response::new(pool_to_pb(&view)))
    }

    async fn get_alert_rules(
        &self,
        request: Request<pb::GetAlertRulesRequest>,
    ) -> Result<Response<pb::AlertRules>, Status> {
        let caller = self.auth.caller(&request, Rpc::GetAlertRules).await?;
        let customer = convert::customer_id_field("customer_id", &request.get_ref().customer_id)
            .map_err(|v| invalid_argument(vec![v]))?;
        own_customer(&caller, &customer)?;
        let (rules, customised) = self.service.get_alert_rules(&customer, &caller).await?;
        Ok(Response::new(rules_to_pb(&customer, &rules, customised)))
    }

    async fn set_alert_rules(
        &self,
        request: Request<pb::SetAlertRulesRequest>,
    ) -> Result<Response<pb::AlertRules>, Status> {
        let caller = self.auth.caller(&request, Rpc::SetAlertRules).await?;
        let r = request
            .into_inner()
            .rules
            .ok_or_else(|| invalid_field("rules", "is required"))?;
        let customer = convert::customer_id_field("rules.customer_id", &r.customer_id)
            .map_err(|v| invalid_argument(vec![v]))?;
        own_customer(&caller, &customer)?;
        let rules = AlertRules {
            card_usage_permille: r.card_usage_permille,
            pool_usage_permille: r.pool_usage_permille,
            validity_days: r.validity_days,
            balance_below_next_fee: r.balance_below_next_fee,
            retention_cancel_days: r.retention_cancel_days,
            card_stopped: r.card_stopped,
            card_restored: r.card_restored,
        };
        let rules = self
            .service
            .set_alert_rules(&customer, rules, &caller)
            .await?;
        Ok(Response::new(rules_to_pb(&customer, &rules, true)))
    }

    async fn get_usage_history(
        &self,
        request: Request<pb::GetUsageHistoryRequest>,
    ) -> Result<Response<pb::UsageHistory>, Status> {
        let caller = self.auth.caller(&request, Rpc::GetUsageHistory).await?;
        let req = request.into_inner();
        let iccid =
            convert::iccid_field("iccid", &req.iccid).map_err(|v| invalid_argument(vec![v]))?;
        let days = match req.days {
            0 => 31,
            d if d <= MAX_HISTORY_DAYS => d,
            _ => {
                return Err(invalid_field(
                    "days",
                    format!("must be 1..={MAX_HISTORY_DAYS} (0 means 31)"),
                ))
            }
        };
        let history = self.service.usage_history(&iccid, days, &caller).await?;
        let total: u64 = history.iter().map(|d| d.bytes).sum();
        Ok(Response::new(pb::UsageHistory {
            iccid: iccid.as_str().to_string(),
            average_bytes_per_day: total / u64::from(days),
            days: history
                .iter()
                .map(|d| pb::DailyUsage {
                    day: Some(timestamp(d.day)),
                    bytes: d.bytes,
                })
                .collect(),
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let caller = self.auth.caller(&request, Rpc::ListEvents).await?;
        let req = request.into_inner();
        let size = convert::page_size(req.page_size, 100)?;
        let filter = event_filter(req.filter)?;
        // The token is an event cursor, not a filtered page token: ListEvents and WatchEvents
        // take each other's cursors whatever their filters (see `paging`).
        let after = read_event_cursor("page_token", &req.page_token)?
            .unwrap_or(0)
            .max(0);
        let Some(filter) = scoped(filter, caller.principal.customer_id.as_ref()) else {
            return Ok(Response::new(pb::ListEventsResponse::default()));
        };
        let mut events = self
            .service
            .store()
            .events_after(&filter, after, size + 1)
            .await
            .map_err(crate::service::ServiceError::from)?;
        let more = events.len() > size as usize;
        events.truncate(size as usize);
        let next_page_token = match (more, events.last()) {
            (true, Some(last)) => event_cursor(last.id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListEventsResponse {
            events: events.iter().map(event_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn create_webhook(
        &self,
        request: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        let caller = self.auth.caller(&request, Rpc::CreateWebhook).await?;
        let req = request.into_inner();
        let customer = req.customer_id.clone();
        let created = self.create_webhook_as(&caller, req).await;
        if let Err(status) = &created {
            self.audit_refusal(&caller, Some(&customer), status, "webhook not created")
                .await;
        }
        created
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let caller = self.auth.caller(&request, Rpc::ListWebhooks).await?;
        let hooks = self.webhooks.list(&caller).await?;
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: hooks.iter().map(webhook_to_pb).collect(),
        }))
    }

    async fn delete_webhook(
        &self,
        request: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        let caller = self.auth.caller(&request, Rpc::DeleteWebhook).await?;
        let raw = request.get_ref().webhook_id.clone();
        let deleted = match webhook_id(&raw) {
            Ok(id) => self
                .webhooks
                .delete(&id, &caller)
                .await
                .map_err(Status::from),
            Err(s) => Err(s),
        };
        if let Err(status) = &deleted {
            self.audit_refusal(
                &caller,
                None,
                status,
                &format!("webhook {raw:.64} not deleted"),
            )
            .await;
        }
        deleted.map(|()| Response::new(pb::DeleteWebhookResponse {}))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let caller = self
            .auth
            .caller(&request, Rpc::ListWebhookDeliveries)
            .await?;
        let req = request.into_inner();
        let id = webhook_id(&req.webhook_id)?;
        let size = convert::page_size(req.page_size, 100)?;
        let state = match pb::DeliveryState::try_from(req.state) {
            Ok(pb::DeliveryState::Unspecified) => None,
            Ok(pb::DeliveryState::Pending) => Some(DeliveryState::Pending),
            Ok(pb::DeliveryState::Delivered) => Some(DeliveryState::Delivered),
            Ok(pb::DeliveryState::Dead) => Some(DeliveryState::Dead),
            Err(_) => return Err(invalid_field("state", "is not a delivery state")),
        };
        let list = self.webhooks.deliveries(&id, state, size, &caller).await?;
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: list
                .iter()
                .map(|d| pb::WebhookDelivery {
                    webhook_id: d.webhook_id.clone(),
                    event_cursor: event_cursor(d.event_id),
                    state: delivery_state_to_pb(d.state) as i32,
                    attempts: d.attempts,
                    next_attempt_at: (d.state == DeliveryState::Pending)
                        .then(|| millis(d.next_attempt_ms))
                        .flatten(),
                    last_error: d.last_error.clone(),
                    updated_at: millis(d.updated_ms),
                })
                .collect(),
        }))
    }

    async fn retry_webhook_deliveries(
        &self,
        request: Request<pb::RetryWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::RetryWebhookDeliveriesResponse>, Status> {
        let caller = self
            .auth
            .caller(&request, Rpc::RetryWebhookDeliveries)
            .await?;
        let raw = request.get_ref().webhook_id.clone();
        let requeued = match webhook_id(&raw) {
            Ok(id) => self
                .webhooks
                .retry_dead(&id, &caller)
                .await
                .map_err(Status::from),
            Err(s) => Err(s),
        };
        if let Err(status) = &requeued {
            self.audit_refusal(
                &caller,
                None,
                status,
                &format!("dead letters of webhook {raw:.64} not requeued"),
            )
            .await;
        }
        Ok(Response::new(pb::RetryWebhookDeliveriesResponse {
            requeued: requeued?,
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = self.auth.caller(&request, Rpc::WatchEvents).await?;
        let connection = request.remote_addr();
        let req = request.into_inner();
        let filter = event_filter(req.filter)?;
        let after = read_event_cursor("after_cursor", &req.after_cursor)?;
        if let Some(c) = &filter.customer_id {
            own_customer(&caller, c)?;
        }
        let Some(filter) = scoped(filter, caller.principal.customer_id.as_ref()) else {
            return Err(forbidden(Forbidden(
                "this key may not watch another customer".into(),
            )));
        };
        let slot = match self
            .slots
            .acquire(&self.streams, &caller.principal.key_id, connection)
        {
            Ok(slot) => slot,
            Err(over) => {
                self.count(match over {
                    OverCap::Key(_) => "refused_key_cap",
                    OverCap::Connection(_) => "refused_connection_cap",
                });
                return Err(over_cap(over));
            }
        };
        self.count("opened");
        let (tx, rx) = tokio::sync::mpsc::channel(self.streams.stream_buffer);
        let hub = self.hub.clone();
        let stall = std::time::Duration::from_millis(self.streams.stall_ms);
        let metrics = self.metrics.clone();
        let watch = tokio::spawn(async move {
            let end = hub.watch(filter, after.map(|a| a.max(0)), tx, stall).await;
            if let (WatchEnd::Behind { .. }, Some(m)) = (end, &metrics) {
                m.event_stream("ended_slow_consumer");
            }
            end
        });
        // After the queued events, how the watch ended; the slot goes with the stream.
        let end = futures::stream::once(async move {
            let _slot = slot;
            match watch.await {
                Ok(WatchEnd::Behind { cursor }) => Some(Err(fell_behind(cursor))),
                _ => None,
            }
        })
        .filter_map(|x| x);
        let stream = ReceiverStream::new(rx)
            .map(|item| match item {
                Ok(e) => Ok(event_to_pb(&e)),
                Err(e) => Err(crate::service::ServiceError::from(e).into()),
            })
            .chain(end);
        Ok(Response::new(Box::pin(stream)))
    }
}
