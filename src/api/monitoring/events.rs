//! The event listing and the `WatchEvents` stream, with their filter and caps.

use tokio_stream::{wrappers::ReceiverStream, StreamExt};
use tonic::{Request, Response, Status};

use crate::api::auth::forbidden;
use crate::api::convert::{self, carrier_from_pb, carrier_to_pb, status_to_pb, timestamp};
use crate::api::error::invalid_argument;
use crate::api::paging::{event_cursor, read_event_cursor};
use crate::api::rpc::Rpc;
use crate::pb;
use crate::service::access::Forbidden;
use crate::service::events::{OverCap, WatchEnd};
use crate::service::monitor::valid_pool_id;
use crate::service::FieldViolation;
use crate::store::{EventFilter, EventRow};

use super::{own_customer, EventStream, MonitoringApi};

const MAX_KINDS: usize = 20;

fn over_cap(over: OverCap) -> Status {
    let (limit, max, whose) = match over {
        OverCap::Key(n) => ("events.max_streams_per_key", n, "this API key"),
        OverCap::Connection(n) => ("events.max_streams_per_connection", n, "this connection"),
    };
    let mut d = tonic_types::ErrorDetails::new();
    d.set_error_info(
        "WATCH_STREAMS_LIMITED",
        crate::api::error::ERROR_DOMAIN,
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
        crate::api::error::ERROR_DOMAIN,
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

fn event_to_pb(e: &EventRow) -> pb::Event {
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

pub(super) fn event_filter(f: Option<pb::EventFilter>) -> Result<EventFilter, Status> {
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

impl MonitoringApi {
    pub(super) async fn list_events(
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

    pub(super) async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
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
