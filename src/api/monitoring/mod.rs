//! `simgate.v1.MonitoringService`: pools, alert rules, usage history, the event listing and
//! stream, and webhooks. Each RPC is an inherent method of `MonitoringApi` in the file that owns
//! its resource (`pools`, `alerts`, `events`, `webhooks`); the service trait below only routes to
//! them (an inherent method of the same name is found first, so a route does not recurse).

mod alerts;
mod events;
mod pools;
mod webhooks;

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::auth::{forbidden, Authenticator};
use super::error::invalid_field;
use crate::pb;
use crate::service::access::Forbidden;
use crate::service::events::{EventHub, EventsConfig, StreamSlots};
use crate::service::monitor::valid_pool_id;
use crate::service::webhooks::WebhookService;
use crate::service::{Caller, CardService};

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

/// A customer key may name its own customer only.
pub(super) fn own_customer(caller: &Caller, customer: &str) -> Result<(), Status> {
    if caller.principal.sees(customer) {
        Ok(())
    } else {
        Err(forbidden(Forbidden(format!(
            "this key may not act for customer {customer}"
        ))))
    }
}

pub(super) fn pool_id(field: &str, raw: &str) -> Result<String, Status> {
    if valid_pool_id(raw) {
        Ok(raw.to_string())
    } else {
        Err(invalid_field(
            field,
            "must be 1-64 characters of A-Z, a-z, 0-9, '-', '_'",
        ))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl pb::monitoring_service_server::MonitoringService for MonitoringApi {
    async fn create_pool(
        &self,
        request: Request<pb::CreatePoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        MonitoringApi::create_pool(self, request).await
    }

    async fn get_pool(
        &self,
        request: Request<pb::GetPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        MonitoringApi::get_pool(self, request).await
    }

    async fn list_pools(
        &self,
        request: Request<pb::ListPoolsRequest>,
    ) -> Result<Response<pb::ListPoolsResponse>, Status> {
        MonitoringApi::list_pools(self, request).await
    }

    async fn add_cards_to_pool(
        &self,
        request: Request<pb::AddCardsToPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        MonitoringApi::add_cards_to_pool(self, request).await
    }

    async fn remove_cards_from_pool(
        &self,
        request: Request<pb::RemoveCardsFromPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        MonitoringApi::remove_cards_from_pool(self, request).await
    }

    async fn top_up_pool(
        &self,
        request: Request<pb::TopUpPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        MonitoringApi::top_up_pool(self, request).await
    }

    async fn get_alert_rules(
        &self,
        request: Request<pb::GetAlertRulesRequest>,
    ) -> Result<Response<pb::AlertRules>, Status> {
        MonitoringApi::get_alert_rules(self, request).await
    }

    async fn set_alert_rules(
        &self,
        request: Request<pb::SetAlertRulesRequest>,
    ) -> Result<Response<pb::AlertRules>, Status> {
        MonitoringApi::set_alert_rules(self, request).await
    }

    async fn get_usage_history(
        &self,
        request: Request<pb::GetUsageHistoryRequest>,
    ) -> Result<Response<pb::UsageHistory>, Status> {
        MonitoringApi::get_usage_history(self, request).await
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        MonitoringApi::list_events(self, request).await
    }

    async fn create_webhook(
        &self,
        request: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        MonitoringApi::create_webhook(self, request).await
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        MonitoringApi::list_webhooks(self, request).await
    }

    async fn delete_webhook(
        &self,
        request: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        MonitoringApi::delete_webhook(self, request).await
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        MonitoringApi::list_webhook_deliveries(self, request).await
    }

    async fn retry_webhook_deliveries(
        &self,
        request: Request<pb::RetryWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::RetryWebhookDeliveriesResponse>, Status> {
        MonitoringApi::retry_webhook_deliveries(self, request).await
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        MonitoringApi::watch_events(self, request).await
    }
}
