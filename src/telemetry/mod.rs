//! Logs and traces of the running service. It owns the process-wide `tracing` subscriber (the
//! log lines on stdout, in the format `[log]` names), and, when `[telemetry] otlp_endpoint` is
//! set, the OpenTelemetry side: the tracer provider that exports spans over OTLP/gRPC, the
//! parent-based sampler, the trace and span ids in JSON log lines, and the flush at shutdown.
//! The span of each gRPC call, which continues the caller's W3C trace, is [`rpc::RpcSpanLayer`].
//!
//! What is exported: simgate's own spans at INFO and above, whatever `log.filter` says (a quiet
//! log must not cost the traces, and the transport crates' spans, which include the exporter's
//! own calls, are never exported). The carrier-call spans live in [`crate::carrier::guard`] and
//! the background passes' spans on the pass functions of [`crate::service`].

pub mod rpc;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracerProvider, SpanProcessor};
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Metadata, Subscriber};
use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter, Targets};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Json, JsonFields, Writer};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

use crate::config::{LogConfig, LogFormat, TelemetryConfig};

/// A span field that a background pass sets to `true` when it found nothing to do. Such spans
/// are not exported: the bulk-operation worker alone looks ten times a second, and a trace
/// store full of empty passes hides the ones that did work.
pub const IDLE_FIELD: &str = "idle";

/// How long an export to the collector may take (the OTLP default), and how long the flush
/// at shutdown waits for the last batch before giving up on it.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The tracer provider, kept so that the spans still queued are sent before the process ends.
/// Without `[telemetry]`, there is none and [`Telemetry::shutdown`] does nothing.
#[must_use = "call shutdown() when the server stops, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Where the JSON log format finds the subscriber it runs in (see [`WithTraceIds`]).
    log_dispatch: Option<Arc<OnceLock<WeakDispatch>>>,
}

/// The subscriber as [`Telemetry::init`] and [`Telemetry::set_default`] install it.
type Built = (Box<dyn Subscriber + Send + Sync + 'static>, Telemetry);

impl Telemetry {
    /// Builds the subscriber and makes it the process-wide default (bridging the `log` crate
    /// too). `traces`: the `[telemetry]` section for `simgate serve`; None for the commands
    /// that export nothing. Must run inside the Tokio runtime when traces are on (the OTLP
    /// client's connection lives on it).
    pub fn init(log: &LogConfig, traces: Option<&TelemetryConfig>) -> Result<Telemetry, String> {
        use tracing_subscriber::util::SubscriberInitExt;
        let (subscriber, telemetry) = Telemetry::build(log, traces)?;
        subscriber
            .try_init()
            .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
        telemetry.bind_current();
        Ok(telemetry)
    }

    /// The same subscriber as the default of this thread only, until the guard is dropped
    /// (for a test that must not touch the process-wide one).
    pub fn set_default(
        log: &LogConfig,
        traces: Option<&TelemetryConfig>,
    ) -> Result<(tracing::subscriber::DefaultGuard, Telemetry), String> {
        let (subscriber, telemetry) = Telemetry::build(log, traces)?;
        let guard = tracing::subscriber::set_default(subscriber);
        telemetry.bind_current();
        Ok((guard, telemetry))
    }

    fn build(log: &LogConfig, traces: Option<&TelemetryConfig>) -> Result<Built, String> {
        let provider = match traces.filter(|t| t.enabled()) {
            Some(t) => Some(provider(t)?),
            None => None,
        };
        layers(log, provider, std::io::stdout)
    }

    /// Tells the JSON formatter the dispatcher it was just installed as. It cannot ask while it
    /// formats: `tracing::dispatcher::get_default` inside an event answers "none" (that is how
    /// tracing stops loops).
    fn bind_current(&self) {
        if let Some(slot) = &self.log_dispatch {
            tracing::dispatcher::get_default(|d| {
                // Weak: the subscriber owns the formatter; a strong reference would be a cycle.
                let _ = slot.set(d.downgrade());
            });
        }
    }

    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still queued and stops the exporter, waiting at most a few seconds for
    /// an unreachable collector (the process is stopping; its traces are not worth a hang).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK's shutdown blocks until its export thread is done, and that export runs on
        // this runtime's connection: block a thread of the blocking pool, not a worker.
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "traces: the last spans may be lost"),
            Err(e) => tracing::warn!(error = %e, "traces: the flush at shutdown failed"),
        }
    }
}

/// The log layer writing to `writer`, and the OpenTelemetry layer when there is a provider.
fn layers<W>(
    log: &LogConfig,
    provider: Option<SdkTracerProvider>,
    writer: W,
) -> Result<Built, String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("simgate"))
            // Thread ids and source locations are 5 attributes on every span that no one
            // reading a trace of async code uses; busy/idle timings cost two clock reads per
            // poll. The span names and fields already say where a span comes from.
            .with_threads(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_filter(
                Targets::new()
                    .with_target("simgate", tracing::Level::INFO)
                    .and(leave_out(is_observe_span)),
            )
    });
    let log_dispatch =
        (provider.is_some() && log.format == LogFormat::Json).then(|| Arc::new(OnceLock::new()));
    let subscriber = Registry::default()
        .with(fmt_layer(log, log_dispatch.clone(), writer)?)
        .with(otel);
    Ok((
        Box::new(subscriber),
        Telemetry {
            provider,
            log_dispatch,
        },
    ))
}

/// A filter that passes everything but what `excluded` names. Its level hint is TRACE, so the
/// filter it is combined with keeps its own: without a hint the combination would have none,
/// and every disabled `trace!` and `debug!` in the process would cost a check instead of one
/// comparison.
fn leave_out(
    excluded: fn(&Metadata<'_>) -> bool,
) -> tracing_subscriber::filter::FilterFn<impl Fn(&Metadata<'_>) -> bool> {
    filter_fn(move |m| !excluded(m)).with_max_level_hint(LevelFilter::TRACE)
}

/// The RPC span of [`crate::api::observe`] (request id, method), which the log lines have always
/// carried. In a trace it would only repeat [`rpc::RPC_SPAN`], so it is left out there, as
/// that one is left out of the logs: each sink gets one span per call.
fn is_observe_span(m: &Metadata<'_>) -> bool {
    m.is_span() && m.name() == "rpc" && m.target() == "simgate::api::observe"
}

/// Logs in the configured format; RUST_LOG, when set, overrides the filter. `dispatch`: where
/// the JSON format finds the trace ids, when traces are on.
fn fmt_layer<W>(
    log: &LogConfig,
    dispatch: Option<Arc<OnceLock<WeakDispatch>>>,
    writer: W,
) -> Result<Box<dyn Layer<Registry> + Send + Sync>, String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(_) => tracing_subscriber::EnvFilter::try_new(&log.filter)
            .map_err(|e| format!("log.filter {:?}: {e}", log.filter))?,
    };
    let filter = filter.and(leave_out(rpc::is_rpc_span));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    Ok(match log.format {
        LogFormat::Pretty => layer.pretty().with_filter(filter).boxed(),
        LogFormat::Compact => layer.compact().with_filter(filter).boxed(),
        LogFormat::Json => layer
            .with_ansi(false)
            .event_format(WithTraceIds::new(dispatch))
            .fmt_fields(JsonFields::new())
            .with_filter(filter)
            .boxed(),
    })
}

/// The OTLP/gRPC exporter behind a batch processor, and the sampler.
fn provider(t: &TelemetryConfig) -> Result<SdkTracerProvider, String> {
    let endpoint = t.otlp_endpoint.trim();
    let shown = crate::config::redact_url(endpoint);
    // Our own channel: an https collector is checked against the public roots, which the
    // exporter's default channel would not load.
    let mut channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| format!("telemetry.otlp_endpoint {shown}: {e}"))?
        .timeout(EXPORT_TIMEOUT)
        .connect_timeout(Duration::from_secs(3));
    if endpoint.starts_with("https://") {
        channel = channel
            .tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots())
            .map_err(|e| format!("telemetry.otlp_endpoint {shown}: {e}"))?;
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_channel(channel.connect_lazy())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("telemetry.otlp_endpoint {shown}: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(t.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        // The batch size and delay follow the standard OTEL_BSP_* variables when set.
        .with_span_processor(DropIdle(BatchSpanProcessor::builder(exporter).build()))
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            t.sampling_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// Passes every ended span on to the exporter except the background passes that did nothing
/// (those with [`IDLE_FIELD`] set).
#[derive(Debug)]
struct DropIdle<P>(P);

impl<P: SpanProcessor> SpanProcessor for DropIdle<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx)
    }

    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        let idle = span.attributes.iter().any(|kv| {
            kv.key.as_str() == IDLE_FIELD && kv.value == opentelemetry::Value::Bool(true)
        });
        if !idle {
            self.0.on_end(span)
        }
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        // The exporter learns `service.name` through this call.
        self.0.set_resource(resource)
    }
}

/// The JSON line of tracing-subscriber with `trace_id` and `span_id` first, those of the
/// innermost span that has an OpenTelemetry span (the log-only RPC span of the observe layer
/// has none; its parent, the traced RPC span, has), so that a log line can be found from a
/// trace and back.
struct WithTraceIds {
    inner: tracing_subscriber::fmt::format::Format<Json>,
    /// The subscriber this formats for, to look the spans up in: its own view hides the RPC
    /// span, which its filter leaves out. None without traces: no ids to find.
    dispatch: Option<Arc<OnceLock<WeakDispatch>>>,
}

impl WithTraceIds {
    fn new(dispatch: Option<Arc<OnceLock<WeakDispatch>>>) -> WithTraceIds {
        WithTraceIds {
            inner: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false),
            dispatch,
        }
    }
}

impl<S, N> FormatEvent<S, N> for WithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    // What the JSON formatter itself asks of the span fields.
    FormattedFields<N>: 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = self
            .dispatch
            .as_ref()
            .and_then(|slot| slot.get()?.upgrade())
            .and_then(|dispatch| current_ids(&dispatch));
        let Some((trace_id, span_id)) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        // The JSON formatter writes one object; the ids go in as its first members.
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
}

/// The trace and span id of the innermost entered span that has an OpenTelemetry span. It
/// reads the registry directly: the log layer's own view hides the RPC span, which it filters.
fn current_ids(dispatch: &Dispatch) -> Option<(TraceId, SpanId)> {
    let registry = dispatch.downcast_ref::<Registry>()?;
    let current = registry.current_span();
    let span = registry.span(current.id()?)?;
    span.scope().find_map(|s| {
        let cx = tracing_opentelemetry::get_otel_context(&s.id(), dispatch)?;
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The subscriber as `simgate serve` builds it with `log.format = "json"`, with a tracer
    /// provider that has nowhere to send its spans (the ids exist all the same).
    #[test]
    fn json_log_lines_carry_the_trace_and_span_id_of_the_current_traced_span() {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let buf = Buf::default();
        let out = buf.clone();
        let log = LogConfig {
            format: LogFormat::Json,
            filter: "info".into(),
        };
        let provider = SdkTracerProvider::builder().build();
        let (subscriber, telemetry) =
            layers(&log, Some(provider.clone()), move || out.clone()).unwrap();
        let want = {
            let _default = tracing::subscriber::set_default(subscriber);
            telemetry.bind_current();
            tracing::info!("outside any span");
            // The call as the two layers open it: the traced RPC span, left out of the logs,
            // around the observe layer's log span, left out of the trace.
            let call = tracing::info_span!(target: "simgate::telemetry::rpc", rpc::RPC_SPAN);
            // Entered inside each other, as the layers' futures are polled.
            let _in_call = call.enter();
            let log_span =
                tracing::info_span!(target: "simgate::api::observe", "rpc", request_id = "r-1");
            let _in_log_span = log_span.enter();
            tracing::info!("in the call");
            let carrier = tracing::info_span!("carrier.call", iccid = "8986031630200230821");
            carrier.in_scope(|| tracing::info!("in the carrier call"));
            [call.context(), carrier.context()].map(|cx| {
                let sc = cx.span().span_context().clone();
                (sc.trace_id().to_string(), sc.span_id().to_string())
            })
        };
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].get("trace_id").is_none(), "{text}");
        // The log line shows the observe span, as it always did, and the traced call's ids.
        assert_eq!(lines[1]["span"]["request_id"], "r-1", "{text}");
        assert_eq!(lines[1]["trace_id"], want[0].0.as_str(), "{text}");
        assert_eq!(lines[1]["span_id"], want[0].1.as_str(), "{text}");
        assert_eq!(lines[2]["trace_id"], want[0].0.as_str(), "{text}");
        assert_eq!(lines[2]["span_id"], want[1].1.as_str(), "{text}");
        assert_eq!(lines[2]["span"]["iccid"], "8986031630200230821");
        let _ = provider.shutdown();
    }

    #[test]
    fn the_filters_keep_the_max_level_so_disabled_events_cost_one_comparison() {
        if std::env::var_os("RUST_LOG").is_some() {
            return; // RUST_LOG wins over log.filter: nothing to compare against.
        }
        let log = LogConfig {
            format: LogFormat::Compact,
            filter: "info,sqlx=warn".into(),
        };
        let (off, _t) = layers(&log, None, std::io::sink).unwrap();
        assert_eq!(off.max_level_hint(), Some(LevelFilter::INFO));
        let provider = SdkTracerProvider::builder().build();
        let (on, _t) = layers(&log, Some(provider.clone()), std::io::sink).unwrap();
        assert_eq!(on.max_level_hint(), Some(LevelFilter::INFO));
        let _ = provider.shutdown();
    }

    #[test]
    fn without_traces_json_log_lines_are_as_before() {
        let buf = Buf::default();
        let out = buf.clone();
        let log = LogConfig {
            format: LogFormat::Json,
            filter: "info".into(),
        };
        let (subscriber, _telemetry) = layers(&log, None, move || out.clone()).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("work", n = 1).in_scope(|| tracing::info!("inside"));
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert!(line.get("trace_id").is_none(), "{text}");
        assert_eq!(line["span"]["n"], 1, "{text}");
    }
}
