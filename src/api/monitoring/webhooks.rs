//! Webhooks: registration, listing, removal and their deliveries; refused calls audited.

use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

use crate::api::convert::{self, timestamp};
use crate::api::error::{invalid_argument, invalid_field};
use crate::api::paging::event_cursor;
use crate::api::rpc::Rpc;
use crate::pb;
use crate::service::webhooks::NewWebhook;
use crate::service::Caller;
use crate::store::{DeliveryState, Webhook};

use super::events::event_filter;
use super::{own_customer, MonitoringApi};

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

impl MonitoringApi {
    pub(super) async fn create_webhook(
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

    pub(super) async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let caller = self.auth.caller(&request, Rpc::ListWebhooks).await?;
        let hooks = self.webhooks.list(&caller).await?;
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: hooks.iter().map(webhook_to_pb).collect(),
        }))
    }

    pub(super) async fn delete_webhook(
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

    pub(super) async fn list_webhook_deliveries(
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

    pub(super) async fn retry_webhook_deliveries(
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
}
