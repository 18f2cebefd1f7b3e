//! The layer every gRPC call passes through first. It gives the call a request id (the caller's
//! `x-request-id` if it is a sane one, else a new UUID), opens the tracing span that every log
//! line of the call carries, echoes the id in the response headers, counts and times the call
//! by method and status code once the code is known (in the headers of an error, in the
//! trailers of a success). At shutdown it ends server streams cleanly with UNAVAILABLE, so that
//! a watcher does not hold the shutdown up, and when the grace time is over it cuts the calls
//! still running with UNAVAILABLE (dropping them, carrier call included).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::{Layer, Service};
use tracing::{debug, warn, Instrument, Span};

use crate::metrics::Metrics;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
const MAX_REQUEST_ID_LEN: usize = 128;

#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Metrics,
    shutdown: CancellationToken,
    cut: CancellationToken,
}

impl ObserveLayer {
    /// `shutdown` is cancelled when the server stops accepting calls, `cut` when the calls still
    /// running must end.
    pub fn new(
        metrics: Metrics,
        shutdown: CancellationToken,
        cut: CancellationToken,
    ) -> ObserveLayer {
        ObserveLayer {
            metrics,
            shutdown,
            cut,
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            cut: self.cut.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Metrics,
    shutdown: CancellationToken,
    cut: CancellationToken,
}

/// The caller's id if it is 1-128 visible ASCII characters (it goes into every log line, so it
/// must not be able to forge lines or grow them without bound); otherwise a fresh one.
/// 1-128 visible ASCII characters: what a request id must be to be kept, logged and audited.
pub fn is_sane_request_id(b: &[u8]) -> bool {
    !b.is_empty() && b.len() <= MAX_REQUEST_ID_LEN && b.iter().all(|c| c.is_ascii_graphic())
}

fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(REQUEST_ID_HEADER)
        .filter(|v| is_sane_request_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        })
}

fn grpc_code(headers: &HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

/// Records the call exactly once: when its code is seen, or, if the client goes away first,
/// as CANCELLED when the response is dropped.
struct Pending {
    metrics: Metrics,
    rpc: String,
    started: Instant,
    span: Span,
    done: bool,
}

impl Pending {
    fn finish(&mut self, code: tonic::Code) {
        if self.done {
            return;
        }
        self.done = true;
        let elapsed = self.started.elapsed();
        self.metrics.rpc_finished(&self.rpc, code, elapsed);
        let _enter = self.span.enter();
        log_finished(code, elapsed);
    }
}

fn log_finished(code: tonic::Code, elapsed: Duration) {
    let ms = elapsed.as_secs_f64() * 1000.0;
    match code {
        // The server's own failures: someone should look at these.
        tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss => {
            warn!(code = ?code, elapsed_ms = ms, "call failed")
        }
        _ => debug!(code = ?code, elapsed_ms = ms, "call finished"),
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

impl<S, B> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ObservedBody<tonic::body::Body>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = request_id(req.headers());
        // Handlers read the id from the request, so the one the layer chose is the one they see.
        req.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
        let rpc = self.metrics.rpc_label(req.uri().path()).to_string();
        let span = tracing::info_span!(
            "rpc",
            rpc = %rpc,
            request_id = %id.to_str().unwrap_or("unknown")
        );
        self.metrics.rpc_started();
        let mut pending = Pending {
            metrics: self.metrics.clone(),
            rpc,
            started: Instant::now(),
            span: span.clone(),
            done: false,
        };
        let shutdown = self.shutdown.clone();
        let cut = self.cut.clone();
        // The clone that was made ready is the one to call (tower's rule for Clone services).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(
            async move {
                let answered = tokio::select! {
                    answered = inner.call(req) => answered,
                    () = cut.cancelled() => {
                        warn!("grace time over: call cut");
                        Ok(tonic::Status::unavailable("server shutting down: grace time over")
                            .into_http())
                    }
                };
                let mut resp = answered.inspect_err(|_| {
                    pending.finish(tonic::Code::Internal);
                })?;
                resp.headers_mut().insert(REQUEST_ID_HEADER, id);
                if let Some(code) = grpc_code(resp.headers()) {
                    // A trailers-only answer: the code is already known.
                    pending.finish(code);
                }
                Ok(resp.map(|inner| ObservedBody {
                    inner,
                    pending,
                    shutdown: Box::pin(shutdown.cancelled_owned()),
                    ended: false,
                }))
            }
            .instrument(span),
        )
    }
}

pin_project! {
    /// The response body, watched for the trailers that carry the status code.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        pending: Pending,
        shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
        ended: bool,
    }
}

impl<B> Body for ObservedBody<B>
where
    B: Body,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        let span = this.pending.span.clone();
        let _enter = span.enter();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_code) {
                    this.pending.finish(code);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.pending.finish(tonic::Code::Internal);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // Waiting for the next message of a stream: if the server is shutting down,
                // end the stream here, between two messages, with a code that tells the client
                // to reconnect elsewhere.
                if this.shutdown.as_mut().poll(cx).is_ready() {
                    *this.ended = true;
                    this.pending.finish(tonic::Code::Unavailable);
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("14"));
                    trailers.insert(
                        "grpc-message",
                        HeaderValue::from_static("server%20shutting%20down"),
                    );
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_caller_id_is_kept_and_anything_else_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_static("order-42"));
        assert_eq!(request_id(&h), "order-42");
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_static("two words"));
        let id = request_id(&h);
        assert_ne!(id, "two words");
        assert!(uuid::Uuid::parse_str(id.to_str().unwrap_or("")).is_ok());
        h.insert(
            REQUEST_ID_HEADER,
            HeaderValue::from_str(&"x".repeat(129)).unwrap(),
        );
        assert_eq!(request_id(&h).len(), 36);
        assert_eq!(request_id(&HeaderMap::new()).len(), 36);
    }
}
