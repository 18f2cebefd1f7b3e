//! OpenTelemetry traces end to end: `simgate serve` (a child process, as in production: the
//! tracer and the subscriber are process-wide) exports over OTLP/gRPC to a collector that the
//! test runs, and a call that arrives with a W3C `traceparent` continues the caller's trace.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use simgate::pb;

use crate::helpers::*;

/// The collector: keeps every span it is sent, with its resource's `service.name`.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An attribute as text (strings as they are, numbers in decimal).
fn attr(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The server child, killed when dropped: a failing assertion must not leave it running.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_a_traceparent_continues_the_callers_trace_through_the_carrier_call() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    // The carrier transport of the run (.ci/run also runs the suite over the wire simulators).
    let transport = std::env::var(TRANSPORT_ENV).unwrap_or_else(|_| "in_process".into());
    let mut serve = ServeProcess::command();
    serve
        .arg("--database-url")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("simgate.db").display()
        ))
        .env("SIMGATE_SIMULATOR_TRANSPORT", &transport)
        .env("SIMGATE_TELEMETRY__OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("SIMGATE_TELEMETRY__SERVICE_NAME", "simgate-test")
        // Only the caller's trace is of interest: a root span (an engine pass) is dropped,
        // a call whose traceparent says sampled is kept (parent-based).
        .env("SIMGATE_TELEMETRY__SAMPLING_RATIO", "0")
        // JSON logs with simgate's debug lines, among them the end of each call.
        .env("SIMGATE_LOG__FORMAT", "json")
        .env("RUST_LOG", "warn,simgate=debug");
    let (mut server, channel) = ServeProcess::up(serve).await;
    let mut cards = cards_client(&channel, ADMIN_KEY);
    cards
        .import_cards(pb::ImportCardsRequest {
            cards: vec![card_input(TELECOM_ICCID, pb::Carrier::ChinaTelecom)],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut req = tonic::Request::new(pb::SuspendCardRequest {
        iccid: TELECOM_ICCID.into(),
        request_id: String::new(),
    });
    let md = req.metadata_mut();
    md.insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    md.insert("tracestate", "caller=1".parse().unwrap());
    md.insert("x-request-id", "trace-test-1".parse().unwrap());
    cards.suspend_card(req).await.unwrap();

    // SIGTERM: the server stops in order and sends its last spans before it exits, so there
    // is nothing to wait for but the exit.
    let status = server.terminate().await;
    assert!(status.success(), "{status}");

    let spans = collector.0.lock().unwrap().clone();
    let names: Vec<_> = spans.iter().map(|(_, s)| s.name.clone()).collect();
    let (service, rpc) = spans
        .iter()
        .find(|(_, s)| s.name == "simgate.v1.CardService/SuspendCard")
        .unwrap_or_else(|| panic!("no SuspendCard span among {names:?}"));
    assert_eq!(service, "simgate-test");
    assert_eq!(rpc.kind, SpanKind::Server as i32);
    assert_eq!(hex(&rpc.trace_id), TRACE_ID, "the caller's trace");
    assert_eq!(
        hex(&rpc.parent_span_id),
        CALLER_SPAN_ID,
        "the caller's span"
    );
    assert_eq!(
        rpc.trace_state, "caller=1",
        "the caller's tracestate goes on"
    );
    let a = |s: &Span, k: &str| attr(&s.attributes, k);
    assert_eq!(a(rpc, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        a(rpc, "rpc.service").as_deref(),
        Some("simgate.v1.CardService")
    );
    assert_eq!(a(rpc, "rpc.method").as_deref(), Some("SuspendCard"));
    assert_eq!(a(rpc, "rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(a(rpc, "request_id").as_deref(), Some("trace-test-1"));

    let (_, carrier) = spans
        .iter()
        .find(|(_, s)| s.name == "carrier.stop")
        .unwrap_or_else(|| panic!("no carrier call span among {names:?}"));
    assert_eq!(hex(&carrier.trace_id), TRACE_ID, "the same trace");
    assert_eq!(carrier.parent_span_id, rpc.span_id, "a child of the call");
    assert_eq!(carrier.kind, SpanKind::Client as i32);
    assert_eq!(a(carrier, "carrier").as_deref(), Some("telecom"));
    let platform = if transport == "http" { "cmp" } else { "sim" };
    assert_eq!(a(carrier, "platform").as_deref(), Some(platform));
    assert_eq!(a(carrier, "method").as_deref(), Some("stop"));
    assert_eq!(a(carrier, "iccid").as_deref(), Some(TELECOM_ICCID));
    assert_eq!(a(carrier, "outcome").as_deref(), Some("ok"));

    // The import came without a traceparent: a new trace, which the ratio of 0 drops. The
    // observe layer's log span is not exported (the RPC span stands for it).
    assert!(
        spans.iter().all(|(_, s)| hex(&s.trace_id) == TRACE_ID),
        "only the sampled trace is exported: {names:?}"
    );
    assert!(!names.iter().any(|n| n == "rpc"), "{names:?}");

    // The call's log lines carry its trace and span id.
    let log = server.stdout();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let finished = lines
        .iter()
        .find(|l| l["span"]["request_id"] == "trace-test-1" && l["message"] == "call finished")
        .unwrap_or_else(|| panic!("no log line of the call in:\n{log}"));
    assert_eq!(finished["trace_id"], TRACE_ID, "{finished}");
    assert_eq!(finished["span_id"], hex(&rpc.span_id), "{finished}");
}
