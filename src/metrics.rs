//! Prometheus metrics: the counters and histograms the service keeps as it works (RPCs by method
//! and status code, carrier calls by carrier, operation and outcome), the gauges read from the
//! store when scraped (cards by status and by stop reason, pending operations), and the HTTP
//! endpoint that serves them in the text exposition format.
//!
//! Each [`Metrics`] owns its registry, so several servers in one process (the tests) never mix
//! their figures.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use prost::Message;
use tracing::warn;

use crate::domain::reasons::{StopReason, StopReasons};
use crate::store::Store;

/// Latency buckets in seconds: gRPC calls of this service take from tens of microseconds (a
/// cached read) to seconds (a bulk import, a slow carrier).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The label of a request to a path the server does not serve: keeps a client that sends
/// random paths from growing the label set without bound.
pub const UNKNOWN_RPC: &str = "unknown";

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    known_rpcs: HashSet<String>,
    rpc_requests: IntCounterVec,
    rpc_seconds: HistogramVec,
    rpc_in_flight: IntGauge,
    carrier_calls: IntCounterVec,
    carrier_seconds: HistogramVec,
    cards: IntGaugeVec,
    cards_by_reason: IntGaugeVec,
    pending_batch_items: IntGauge,
    pending_carrier_ops: IntGauge,
    auth: IntCounterVec,
    event_streams: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: prometheus::Result<T>,
) -> prometheus::Result<T> {
    let c = c?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Every method path the server answers: simgate's own services (from the compiled descriptor
/// set), health and reflection.
fn known_rpcs() -> HashSet<String> {
    let mut known: HashSet<String> = [
        "grpc.health.v1.Health/Check",
        "grpc.health.v1.Health/Watch",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if let Ok(set) = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET) {
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let name = service.name.unwrap_or_default();
                for method in service.method {
                    known.insert(format!(
                        "{package}.{name}/{}",
                        method.name.unwrap_or_default()
                    ));
                }
            }
        }
    }
    known
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let r = &registry;
        let inner = Inner {
            known_rpcs: known_rpcs(),
            rpc_requests: register(
                r,
                IntCounterVec::new(
                    Opts::new("simgate_rpc_requests_total", "gRPC calls answered, by method and status code"),
                    &["rpc", "code"],
                ),
            )?,
            rpc_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "simgate_rpc_duration_seconds",
                        "Time from a call's arrival to its last response byte, by method and status code",
                    )
                    .buckets(BUCKETS.to_vec()),
                    &["rpc", "code"],
                ),
            )?,
            rpc_in_flight: register(
                r,
                IntGauge::new("simgate_rpc_in_flight", "gRPC calls being answered now"),
            )?,
            carrier_calls: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "simgate_carrier_calls_total",
                        "Calls to a carrier platform, by account, carrier, operation and outcome",
                    ),
                    &["account", "carrier", "operation", "outcome"],
                ),
            )?,
            carrier_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "simgate_carrier_call_duration_seconds",
                        "Time of a carrier call including waiting for the carrier's limits",
                    )
                    .buckets(BUCKETS.to_vec()),
                    &["account", "carrier", "operation"],
                ),
            )?,
            cards: register(
                r,
                IntGaugeVec::new(
                    Opts::new("simgate_cards", "Cards by status, read from the store at scrape time"),
                    &["status"],
                ),
            )?,
            cards_by_reason: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "simgate_cards_stopped",
                        "Stopped cards by stop reason (a card with two reasons counts under both)",
                    ),
                    &["reason"],
                ),
            )?,
            pending_batch_items: register(
                r,
                IntGauge::new(
                    "simgate_pending_batch_items",
                    "Cards of bulk operations still waiting for their carrier call",
                ),
            )?,
            pending_carrier_ops: register(
                r,
                IntGauge::new(
                    "simgate_pending_carrier_ops",
                    "Carrier calls written to the journal and not yet settled",
                ),
            )?,
            auth: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "simgate_auth_total",
                        "Authentication work by outcome: key_lookup (a store read of a key), \
                         unknown_key_cached (a miss answered from memory), refused_audited, \
                         refused_unaudited (over the per-peer failure limit: counted, not written)",
                    ),
                    &["outcome"],
                ),
            )?,
            event_streams: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "simgate_event_streams_total",
                        "WatchEvents streams by outcome: opened, refused_key_cap, \
                         refused_connection_cap, ended_slow_consumer",
                    ),
                    &["outcome"],
                ),
            )?,
            registry,
        };
        Ok(Metrics {
            inner: Arc::new(inner),
        })
    }

    /// The label for a request path: the method if the server has it, else [`UNKNOWN_RPC`].
    pub fn rpc_label<'a>(&self, path: &'a str) -> &'a str {
        let method = path.strip_prefix('/').unwrap_or(path);
        if self.inner.known_rpcs.contains(method) {
            method
        } else {
            UNKNOWN_RPC
        }
    }

    pub fn rpc_started(&self) {
        self.inner.rpc_in_flight.inc();
    }

    pub fn rpc_finished(&self, rpc: &str, code: tonic::Code, elapsed: Duration) {
        let code = format!("{code:?}");
        self.inner.rpc_in_flight.dec();
        self.inner
            .rpc_requests
            .with_label_values(&[rpc, &code])
            .inc();
        self.inner
            .rpc_seconds
            .with_label_values(&[rpc, &code])
            .observe(elapsed.as_secs_f64());
    }

    /// Calls being answered now (what a graceful shutdown waits for).
    /// Counts one authentication outcome (see `simgate_auth_total`).
    pub fn auth(&self, outcome: &str) {
        self.inner.auth.with_label_values(&[outcome]).inc();
    }

    /// How many times `outcome` was counted by [`Metrics::auth`].
    pub fn auth_count(&self, outcome: &str) -> u64 {
        self.inner.auth.with_label_values(&[outcome]).get()
    }

    /// Counts one WatchEvents stream outcome (see `simgate_event_streams_total`).
    pub fn event_stream(&self, outcome: &str) {
        self.inner.event_streams.with_label_values(&[outcome]).inc();
    }

    pub fn event_stream_count(&self, outcome: &str) -> u64 {
        self.inner.event_streams.with_label_values(&[outcome]).get()
    }

    pub fn rpcs_in_flight(&self) -> i64 {
        self.inner.rpc_in_flight.get()
    }

    /// One carrier call of `account` (an account is configured, so the label's values are few).
    pub fn carrier_call(
        &self,
        account: &str,
        carrier: &str,
        operation: &str,
        outcome: &str,
        elapsed: Duration,
    ) {
        self.inner
            .carrier_calls
            .with_label_values(&[account, carrier, operation, outcome])
            .inc();
        self.inner
            .carrier_seconds
            .with_label_values(&[account, carrier, operation])
            .observe(elapsed.as_secs_f64());
    }

    /// Reads the store-derived gauges afresh.
    pub async fn refresh(&self, store: &Store) -> Result<(), crate::store::StoreError> {
        let counts = store.card_counts().await?;
        let inner = &self.inner;
        inner.cards.reset();
        inner.cards_by_reason.reset();
        for reason in StopReason::ALL {
            inner
                .cards_by_reason
                .with_label_values(&[reason.as_str()])
                .set(0);
        }
        for c in counts {
            inner.cards.with_label_values(&[&c.status]).add(c.count);
            let reasons = u32::try_from(c.stop_reasons)
                .ok()
                .and_then(StopReasons::from_bits)
                .unwrap_or(StopReasons::NONE);
            for reason in reasons.iter() {
                inner
                    .cards_by_reason
                    .with_label_values(&[reason.as_str()])
                    .add(c.count);
            }
        }
        let (batch_items, carrier_ops) = store.pending_counts().await?;
        inner.pending_batch_items.set(batch_items);
        inner.pending_carrier_ops.set(carrier_ops);
        Ok(())
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.inner.registry.gather(), &mut buf) {
            warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Serves `GET /metrics` on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        store: Store,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::http::{header, StatusCode};
        use axum::response::IntoResponse;

        let handler = move || {
            let metrics = self.clone();
            let store = store.clone();
            async move {
                // A store that cannot be read still gets the process's own figures out: the
                // scrape must not fail because of the very outage it should show.
                if let Err(e) = metrics.refresh(&store).await {
                    warn!(error = %e, "metrics: cannot read card counts");
                }
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics.render(),
                )
                    .into_response()
            }
        };
        let app = axum::Router::new().route("/metrics", axum::routing::get(handler));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_keep_their_name_and_unknown_paths_share_one_label() {
        let m = Metrics::new().expect("metrics");
        assert_eq!(
            m.rpc_label("/simgate.v1.CardService/GetCard"),
            "simgate.v1.CardService/GetCard"
        );
        assert_eq!(
            m.rpc_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(m.rpc_label("/simgate.v1.CardService/Nope"), UNKNOWN_RPC);
        assert_eq!(m.rpc_label("/x/y"), UNKNOWN_RPC);
    }

    #[test]
    fn a_finished_call_is_counted_under_its_method_and_code() {
        let m = Metrics::new().expect("metrics");
        m.rpc_started();
        assert_eq!(m.rpcs_in_flight(), 1);
        m.rpc_finished(
            "simgate.v1.CardService/GetCard",
            tonic::Code::NotFound,
            Duration::from_millis(2),
        );
        assert_eq!(m.rpcs_in_flight(), 0);
        let text = m.render();
        assert!(
            text.contains(
                "simgate_rpc_requests_total{code=\"NotFound\",rpc=\"simgate.v1.CardService/GetCard\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("simgate_rpc_duration_seconds_bucket"),
            "{text}"
        );
    }
}
