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

use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracerProvider, SpanProcessor};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::filter::{filter_fn, FilterExt, Targets};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Json, JsonFields, Writer};
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
}

impl Telemetry {
    /// Builds the subscriber and makes it the process-wide default (bridging the `log` crate
    /// too). `traces`: the `[telemetry]` section for `simgate serve`; None for the commands
    /// that export nothing. Must run inside the Tokio runtime when traces are on (the OTLP
    /// client's connection lives on it).
    pub fn init(log: &LogConfig, traces: Option<&TelemetryConfig>) -> Result<Telemetry, String> {
        use tracing_subscriber::util::SubscriberInitExt;
        let (subscriber, telemetry) = subscriber(log, traces)?;
        subscriber
            .try_init()
            .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
        Ok(telemetry)
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

/// The subscriber [`Telemetry::init`] installs, for a caller that scopes it instead (a test's
/// `tracing::subscriber::set_default`).
pub fn subscriber(
    log: &LogConfig,
    traces: Option<&TelemetryConfig>,
) -> Result<
    (
        impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
        Telemetry,
    ),
    String,
> {
    let provider = match traces.filter(|t| t.enabled()) {
        Some(t) => Some(provider(t)?),
        None => None,
    };
    let exporting = provider.is_some();
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
                    .and(filter_fn(|m| !is_observe_span(m))),
            )
    });
    let subscriber = Registry::default()
        .with(fmt_layer(log, exporting)?)
        .with(otel);
    Ok((subscriber, Telemetry { provider }))
}

/// The RPC span of [`crate::api::observe`] (request id, method), which the log lines have always
/// carried. In a trace it would only repeat [`rpc::RPC_SPAN`], so it is left out there, as
/// that one is left out of the logs: each sink gets one span per call.
fn is_observe_span(m: &Metadata<'_>) -> bool {
    m.is_span() && m.name() == "rpc" && m.target() == "simgate::api::observe"
}

/// Logs to stdout in the configured format; RUST_LOG, when set, overrides the filter.
fn fmt_layer(
    log: &LogConfig,
    exporting: bool,
) -> Result<Box<dyn Layer<Registry> + Send + Sync>, String> {
    let filter = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(_) => tracing_subscriber::EnvFilter::try_new(&log.filter)
            .map_err(|e| format!("log.filter {:?}: {e}", log.filter))?,
    };
    let filter = filter.and(filter_fn(|m| !rpc::is_rpc_span(m)));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let layer = tracing_subscriber::fmt::layer().with_ansi(ansi);
    Ok(match log.format {
        LogFormat::Pretty => layer.pretty().with_filter(filter).boxed(),
        LogFormat::Compact => layer.compact().with_filter(filter).boxed(),
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false);
            layer
                .with_ansi(false)
                .event_format(WithTraceIds {
                    inner: json,
                    enabled: exporting,
                })
                .fmt_fields(JsonFields::new())
                .with_filter(filter)
                .boxed()
        }
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
    /// False without an exporter: there are no ids to find, and no reason to look.
    enabled: bool,
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
        let ids = if self.enabled { current_ids() } else { None };
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
fn current_ids() -> Option<(TraceId, SpanId)> {
    tracing::dispatcher::get_default(|dispatch| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let current = dispatch.current_span();
        let span = registry.span(current.id()?)?;
        span.scope().find_map(|s| {
            let cx = tracing_opentelemetry::get_otel_context(&s.id(), dispatch)?;
            let sc = cx.span().span_context().clone();
            sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log lines of the JSON format with an exporter whose collector is not there: nothing
    /// is sent in the test, but the spans and their ids exist.
    #[tokio::test]
    async fn json_log_lines_carry_the_trace_and_span_id_of_the_current_span() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let traces = TelemetryConfig {
            otlp_endpoint: "http://127.0.0.1:9".into(),
            ..TelemetryConfig::default()
        };
        let provider = provider(&traces).unwrap();
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(move || out.clone())
            .event_format(WithTraceIds {
                inner: tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
                enabled: true,
            })
            .fmt_fields(JsonFields::new())
            .boxed();
        let subscriber = Registry::default()
            .with(fmt)
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let (want_trace, want_span) = tracing::subscriber::with_default(subscriber, || {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            tracing::info!("outside any span");
            let span = tracing::info_span!("work", iccid = "8986031630200230821");
            let _entered = span.enter();
            tracing::info!("inside");
            let sc = span.context().span().span_context().clone();
            (sc.trace_id(), sc.span_id())
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].get("trace_id").is_none(), "{text}");
        assert_eq!(lines[1]["trace_id"], want_trace.to_string(), "{text}");
        assert_eq!(lines[1]["span_id"], want_span.to_string(), "{text}");
        assert_eq!(lines[1]["message"], "inside");
        assert_eq!(lines[1]["span"]["iccid"], "8986031630200230821");
        Telemetry {
            provider: Some(provider),
        }
        .shutdown()
        .await;
    }
}
