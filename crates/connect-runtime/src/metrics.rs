//! Prometheus metrics, served as text on `http://ADDR/metrics` when a server is started with
//! `--metrics-listen ADDR`. Every server keeps its own [`prometheus::Registry`] (no global state),
//! so several servers in one process report separately.
//!
//! [`serve`](crate::serve) adds, for every server, `connect_grpc_requests_total{method,code}` and
//! `connect_grpc_request_duration_seconds{method}`, measured up to the response headers (for a
//! streaming call: until the stream starts). Calls to any path that is not a served method
//! ([`crate::known_method`]) are counted under `method="unknown"`, whatever their answer (a shed
//! or timed-out call included), so that no caller can grow the label set.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;

/// Where and what to serve: the listener (bound before startup so that port 0 works and a busy
/// port fails early) and the registry the server's own metrics are registered in.
#[derive(Debug)]
pub struct MetricsEndpoint {
    pub listener: TcpListener,
    pub registry: Registry,
}

impl MetricsEndpoint {
    /// Binds `addr`, with an empty registry for the server's metrics.
    pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            registry: Registry::new(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

/// Latency buckets from 100 µs to 10 s: a warm `GetToken` is well under a millisecond, a cold one
/// with a provider round trip can take seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Serves the registry's metrics as Prometheus text on `/metrics` until `shutdown` completes.
pub async fn serve_metrics(
    listener: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move { render(&registry) }
        }),
    );
    crate::http::serve(
        listener,
        router,
        crate::http::HttpLimits::default(),
        shutdown,
    )
    .await
}

fn render(registry: &Registry) -> axum::response::Response {
    use axum::response::IntoResponse;
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&registry.gather(), &mut body) {
        Ok(()) => (
            [(http::header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The per-call gRPC metrics every server exports.
#[derive(Clone, Debug)]
pub struct GrpcMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl GrpcMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "connect_grpc_requests_total",
                "gRPC calls answered, by method and status code",
            ),
            &["method", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "connect_grpc_request_duration_seconds",
                "Time to the response headers of a gRPC call, by method",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }

    fn observe(&self, method: &str, code: tonic::Code, started: Instant) {
        let method = if code == tonic::Code::Unimplemented || !crate::known_method(method) {
            "unknown"
        } else {
            method
        };
        self.requests
            .with_label_values(&[method, code_name(code)])
            .inc();
        self.duration
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The canonical name of a status code, as gRPC's documentation spells it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Counts and times every call of the service it wraps.
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer(pub GrpcMetrics);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = request.uri().path().to_owned();
        let metrics = self.metrics.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            let code = match &result {
                // A trailers-only answer (every error) carries its status in the headers; a
                // successful unary or streaming answer has none there.
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map(tonic::Code::from_i32)
                    .unwrap_or(tonic::Code::Ok),
                // Shed by the concurrency limit.
                Err(_) => tonic::Code::ResourceExhausted,
            };
            metrics.observe(&method, code, started);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label_and_codes_use_canonical_names() {
        let registry = Registry::new();
        let metrics = GrpcMetrics::register(&registry).unwrap();
        let started = Instant::now();
        let get = "/connect.broker.v1.TokenBroker/GetToken";
        metrics.observe(get, tonic::Code::Ok, started);
        metrics.observe("/a/b", tonic::Code::Unimplemented, started);
        metrics.observe("/c/d", tonic::Code::Unimplemented, started);
        metrics.observe(get, tonic::Code::PermissionDenied, started);
        // Made-up paths answered otherwise (a shed call, a timed-out read) are no label either.
        metrics.observe(
            "/connect.broker.v1.TokenBroker/Made",
            tonic::Code::ResourceExhausted,
            started,
        );
        metrics.observe("/e/f", tonic::Code::DeadlineExceeded, started);
        let text = String::from_utf8({
            let mut body = Vec::new();
            TextEncoder::new()
                .encode(&registry.gather(), &mut body)
                .unwrap();
            body
        })
        .unwrap();
        assert!(
            text.contains(
                r#"connect_grpc_requests_total{code="UNIMPLEMENTED",method="unknown"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"connect_grpc_requests_total{code="OK",method="/connect.broker.v1.TokenBroker/GetToken"} 1"#
        ));
        assert!(text.contains(
            r#"connect_grpc_requests_total{code="PERMISSION_DENIED",method="/connect.broker.v1.TokenBroker/GetToken"} 1"#
        ));
        assert!(text.contains(
            r#"connect_grpc_requests_total{code="RESOURCE_EXHAUSTED",method="unknown"} 1"#
        ));
        assert!(!text.contains("/a/b") && !text.contains("Made") && !text.contains("/e/f"));
    }
}
