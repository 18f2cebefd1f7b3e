//! The span of each gRPC call, as OpenTelemetry's RPC conventions name it: `rpc.system`,
//! `rpc.service`, `rpc.method`, and `rpc.grpc.status_code` once the answer's code is known (in
//! the headers of an error, in the trailers of a success). A W3C `traceparent` (and
//! `tracestate`) in the call's metadata makes it a child of the caller's span, so the trace
//! goes on through simgate; the sampler honours the caller's sampled flag.
//!
//! It is the outermost layer, so the observe layer's log span (request id) and everything the
//! handler does, carrier calls included, are inside it. Without `[telemetry]` it passes calls
//! through untouched.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::Metrics;

/// The name of the span; the log layer leaves it out (see [`is_rpc_span`]).
pub const RPC_SPAN: &str = "grpc.server";

/// Whether `m` is the RPC span, which only the trace exporter shows: the log lines carry the
/// observe layer's own RPC span, with the same method and the request id, as they always did.
pub fn is_rpc_span(m: &tracing::Metadata<'_>) -> bool {
    m.is_span() && m.name() == RPC_SPAN && m.target() == module_path!()
}

#[derive(Clone)]
pub struct RpcSpanLayer {
    enabled: bool,
    /// For the method names: only methods the server has become span names and attributes, so
    /// a caller cannot grow the set of names with made-up paths.
    metrics: Metrics,
}

impl RpcSpanLayer {
    /// `enabled`: whether traces are exported (`[telemetry] otlp_endpoint` is set).
    pub fn new(enabled: bool, metrics: Metrics) -> RpcSpanLayer {
        RpcSpanLayer { enabled, metrics }
    }
}

impl<S> Layer<S> for RpcSpanLayer {
    type Service = RpcSpan<S>;

    fn layer(&self, inner: S) -> RpcSpan<S> {
        RpcSpan {
            inner,
            enabled: self.enabled,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcSpan<S> {
    inner: S,
    enabled: bool,
    metrics: Metrics,
}

/// gRPC metadata as the propagator reads it: HTTP/2 headers, names in lower case.
struct MetadataExtractor<'a>(&'a HeaderMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The span of a call to `path`, a child of the caller's span if the metadata names one.
fn rpc_span(metrics: &Metrics, headers: &HeaderMap, path: &str) -> Span {
    let rpc = metrics.rpc_label(path);
    let (service, method) = rpc.split_once('/').unwrap_or((rpc, ""));
    let span = tracing::info_span!(
        RPC_SPAN,
        otel.name = rpc,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        request_id = Empty,
    );
    let parent = TraceContextPropagator::new().extract(&MetadataExtractor(headers));
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed, and then there is no trace to
        // continue.
        let _ = span.set_parent(parent);
    }
    span
}

fn grpc_code(headers: &HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

/// Records the answer's code, once. The codes OpenTelemetry's gRPC conventions count as a
/// server's failure make the span an error; a refusal of the caller's request (NOT_FOUND,
/// INVALID_ARGUMENT, ...) is the server working.
fn finish(span: &Span, code: tonic::Code) {
    span.record("rpc.grpc.status_code", code as i64);
    if matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    ) {
        span.record("otel.status_code", "error");
    }
}

impl<S, B, RB> Service<Request<B>> for RpcSpan<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<TracedBody<RB>>;
    type Error = S::Error;
    type Future = TracedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let span = self
            .enabled
            .then(|| rpc_span(&self.metrics, req.headers(), req.uri().path()));
        let inner = match &span {
            Some(span) => span.in_scope(|| self.inner.call(req)),
            None => self.inner.call(req),
        };
        TracedFuture { inner, span }
    }
}

pin_project! {
    /// The call, run inside its span.
    pub struct TracedFuture<F> {
        #[pin]
        inner: F,
        span: Option<Span>,
    }
}

impl<F, RB, E> Future for TracedFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<TracedBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let polled = match this.span.as_ref() {
            Some(span) => {
                let _entered = span.enter();
                this.inner.poll(cx)
            }
            None => this.inner.poll(cx),
        };
        let resp = match polled {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => {
                if let Some(span) = this.span.take() {
                    finish(&span, tonic::Code::Internal);
                }
                return Poll::Ready(Err(e));
            }
            Poll::Ready(Ok(resp)) => resp,
        };
        let span = this.span.take();
        let mut done = false;
        if let Some(span) = &span {
            // The observe layer inside has chosen the id and echoes it in the answer.
            if let Some(id) = resp
                .headers()
                .get(crate::api::observe::REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                span.record("request_id", id);
            }
            if let Some(code) = grpc_code(resp.headers()) {
                // A trailers-only answer: the code is already known.
                finish(span, code);
                done = true;
            }
        }
        Poll::Ready(Ok(resp.map(|inner| TracedBody { inner, span, done })))
    }
}

pin_project! {
    /// The answer's body, watched for the trailers that carry the code. The span ends when
    /// the body is dropped, after the last frame was sent.
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        span: Option<Span>,
        done: bool,
    }

    impl<B> PinnedDrop for TracedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let (Some(span), false) = (this.span.as_ref(), *this.done) {
                // The client went away before the end (or a stream was cut).
                finish(span, tonic::Code::Cancelled);
            }
        }
    }
}

impl<B: Body> Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(span) = this.span.as_ref() else {
            return this.inner.poll_frame(cx);
        };
        // Entered so that what the body's own layers log (the call's end) belongs to the call.
        let _entered = span.enter();
        let frame = this.inner.poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(f))) if !*this.done => {
                if let Some(code) = f.trailers_ref().and_then(grpc_code) {
                    finish(span, code);
                    *this.done = true;
                }
            }
            Poll::Ready(Some(Err(_))) if !*this.done => {
                finish(span, tonic::Code::Internal);
                *this.done = true;
            }
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extractor_reads_traceparent_and_tracestate_from_the_metadata() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        h.insert("tracestate", http::HeaderValue::from_static("vendor=x"));
        let cx = TraceContextPropagator::new().extract(&MetadataExtractor(&h));
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(sc.trace_state().get("vendor"), Some("x"));
    }
}
