//! Logs and traces. Every server call that is part of a trace runs in one `grpc` span (from
//! [`ServerTraceLayer`]) that names the method and carries its `trace_id`, so every log line
//! written while the call runs says which trace it belongs to.
//!
//! A call is part of a trace when its caller sent a W3C `traceparent` header, or when spans are
//! exported (`--otlp-endpoint`): then each server call that arrives without one starts a trace.
//! The caller's context is attached to the call's future, and [`inject`] (which Connect's own
//! gRPC clients run through [`crate::BearerAuth`]) sends the current context on, so a broker
//! carries one trace into the registry whether or not it exports spans itself.
//!
//! With an OTLP endpoint, spans go out over OTLP/gRPC in batches from a background thread (a
//! bounded queue: a slow collector costs dropped spans, never a slower call). The `grpc` spans are
//! at `INFO`; the finer ones, around each step that waits (a signature check, a registry or
//! provider call), are at `DEBUG` and exist only while spans are exported. A server without an
//! endpoint makes no span at all for a call its caller did not trace: nothing would read it, and
//! its fields in every log line of the call cost more than the rest of a cached answer. Sampling is the SDK's, from `OTEL_TRACES_SAMPLER`. Span fields never hold a
//! token or a secret: the request path records ids, names and outcomes only.

use std::{
    fmt,
    task::{Context as TaskContext, Poll},
};

use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{FilterExt, Targets},
    layer::SubscriberExt,
    registry::LookupSpan,
};

use crate::LogFormat;

/// What went wrong setting up the span exporter.
#[derive(Debug, thiserror::Error)]
#[error("cannot export spans to {endpoint}: {source}")]
pub struct TelemetryError {
    endpoint: String,
    source: opentelemetry_otlp::ExporterBuildError,
}

/// The process's span exporter, if any; dropping it (or [`Telemetry::shutdown`]) sends what is
/// still queued.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Sends the queued spans and stops the exporter.
    pub fn shutdown(mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "span exporter did not shut down cleanly");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// A tracer provider that sends spans of `service_name` to an OTLP/gRPC collector at `endpoint`
/// (e.g. `http://127.0.0.1:4317`). It must be built inside a tokio runtime.
pub fn otlp_provider(
    endpoint: &str,
    service_name: &'static str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|source| TelemetryError {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    let resource = Resource::builder()
        .with_service_name(service_name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The subscriber every Connect process logs and traces through: log lines on stderr (levels
/// from `RUST_LOG`, default `info`), and with `provider` the spans, `DEBUG` ones of Connect's
/// crates included, to its exporter.
pub fn subscriber(
    format: LogFormat,
    provider: Option<&SdkTracerProvider>,
    writer: impl for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
) -> impl tracing::Subscriber + Send + Sync + for<'s> LookupSpan<'s> {
    styled_subscriber(format, provider, writer, false)
}

/// Whether log lines on stderr may carry colour: only on a terminal, and not under `NO_COLOR`.
pub fn stderr_in_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// As [`subscriber`], with text lines in colour when `ansi` (a terminal reads them).
pub fn styled_subscriber(
    format: LogFormat,
    provider: Option<&SdkTracerProvider>,
    writer: impl for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
    ansi: bool,
) -> impl tracing::Subscriber + Send + Sync + for<'s> LookupSpan<'s> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    }
    .with_filter(filter);
    let spans = provider.map(|provider| {
        let crates = [
            "link_registry",
            "token_broker",
            "connect_runtime",
            "connect_client",
        ];
        let targets = crates
            .into_iter()
            .fold(Targets::new().with_default(tracing::Level::INFO), |t, c| {
                t.with_target(c, tracing::Level::DEBUG)
            });
        // Log lines reach spans as events only from WARN up: the decision line of every call
        // would otherwise ride along in each exported span.
        let targets = tracing_subscriber::filter::filter_fn(move |meta| {
            meta.is_span() || *meta.level() <= tracing::Level::WARN
        })
        .and(targets);
        // Ids, names and outcomes only: no source locations, thread names or busy/idle times,
        // which cost an attribute (or a clock read) on every span and say little.
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("connect"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(targets)
    });
    // A marker only: its filter enables nothing, so it changes no callsite's interest.
    let exporting =
        provider.map(|_| Exporting.with_filter(tracing_subscriber::filter::filter_fn(|_| false)));
    Registry::default().with(logs).with(spans).with(exporting)
}

/// Marks a subscriber that exports spans (see [`exporting`]); it sees nothing itself.
struct Exporting;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Exporting {}

/// Whether the current subscriber exports spans.
fn exporting() -> bool {
    tracing::dispatcher::get_default(|dispatch| dispatch.is::<Exporting>())
}

/// Installs the process's subscriber (see [`subscriber`]), exporting spans to `otlp_endpoint`
/// when there is one. Call it inside the tokio runtime; keep the answer until the process ends.
/// A second call keeps the first subscriber.
pub fn init(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
    service_name: &'static str,
) -> Result<Telemetry, TelemetryError> {
    let provider = otlp_endpoint
        .map(|endpoint| otlp_provider(endpoint, service_name))
        .transpose()?;
    let _ = tracing::subscriber::set_global_default(styled_subscriber(
        format,
        provider.as_ref(),
        std::io::stderr,
        stderr_in_colour(),
    ));
    Ok(Telemetry { provider })
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The trace context a call runs in: its span's when spans are exported, else the one its caller
/// sent (attached to the call's future by [`ServerTraceLayer`]).
fn current_context() -> Context {
    let cx = Span::current().context();
    if cx.span().span_context().is_valid() {
        cx
    } else {
        Context::current()
    }
}

/// Adds the current trace context (`traceparent`, `tracestate`) to an outgoing call's metadata;
/// nothing outside a trace.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = current_context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
    }
}

/// The span's name for a request path: the method when it is one that is served, a fixed word
/// for anything else (a path is the caller's text, and names must stay few).
fn span_name(path: &str) -> &str {
    if crate::known_method(path) {
        path
    } else {
        "unknown"
    }
}

/// Runs each server call in a `grpc` span, a child of the caller's `traceparent` when it sent
/// one; a call outside any trace on a server that does not export spans runs without one.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerTraceLayer;

impl<S> tower::Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace { inner }
    }
}

#[derive(Clone, Debug)]
pub struct ServerTrace<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for ServerTrace<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<opentelemetry::context::WithContext<S::Future>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use opentelemetry::context::FutureExt as _;
        let traced_by_caller = request.headers().contains_key("traceparent");
        if !traced_by_caller && !exporting() {
            let future = self.inner.call(request);
            return future.with_context(Context::new()).instrument(Span::none());
        }
        let parent = if traced_by_caller {
            TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()))
        } else {
            Context::new()
        };
        let span = tracing::info_span!(
            "grpc",
            otel.name = span_name(request.uri().path()),
            otel.kind = "server",
            trace_id = tracing::field::Empty,
        );
        if !span.is_disabled() {
            if traced_by_caller {
                let _ = span.set_parent(parent.clone());
            }
            let own = span.context();
            let traced = if own.span().span_context().is_valid() {
                &own
            } else {
                &parent
            };
            let context = traced.span().span_context().clone();
            if context.is_valid() {
                span.record("trace_id", tracing::field::display(context.trace_id()));
            }
        }
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        future.with_context(parent).instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id of the trace the current call belongs to, if any.
    fn current_trace_id() -> Option<String> {
        let cx = current_context();
        let span = cx.span();
        let context = span.span_context();
        context.is_valid().then(|| context.trace_id().to_string())
    }

    #[test]
    fn span_names_come_only_from_known_services() {
        assert_eq!(
            span_name("/connect.broker.v1.TokenBroker/GetToken"),
            "/connect.broker.v1.TokenBroker/GetToken"
        );
        assert_eq!(
            span_name("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(span_name("/evil/../x"), "unknown");
        assert_eq!(span_name("/connect.broker.v1.TokenBroker/Made"), "unknown");
        assert_eq!(
            span_name(&format!("/connect.{}", "a".repeat(200))),
            "unknown"
        );
    }

    #[test]
    fn a_callers_traceparent_is_carried_on_without_an_exporter() {
        let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", sent.parse().unwrap());
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        let _attached = parent.attach();
        assert_eq!(
            current_trace_id().as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let mut metadata = tonic::metadata::MetadataMap::new();
        inject(&mut metadata);
        assert_eq!(metadata.get("traceparent").unwrap().to_str().unwrap(), sent);
    }

    #[test]
    fn outside_a_trace_nothing_is_sent() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        inject(&mut metadata);
        assert!(metadata.is_empty());
        assert_eq!(current_trace_id(), None);
    }

    /// Log lines written through a subscriber, shared with the test.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Tests that install a subscriber take turns: callsites cache their interest across every
    /// live subscriber, so one test's subscriber can change what another's `enabled!` answers.
    static SUBSCRIBERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// One call through [`ServerTraceLayer`] under a subscriber (exporting spans when
    /// `provider` is given): the name of the span the call ran in, and the log lines it wrote.
    fn serve_one(
        provider: Option<&SdkTracerProvider>,
        traceparent: Option<&str>,
    ) -> (String, String) {
        use tower::{Layer as _, Service as _, ServiceExt as _};
        let _turn = SUBSCRIBERS.lock().unwrap_or_else(|e| e.into_inner());
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = subscriber(LogFormat::Json, provider, move || writer.clone());
        let ran_in = tracing::subscriber::with_default(subscriber, || {
            let inner = tower::service_fn(|_request: http::Request<()>| async {
                tracing::info!("answered");
                let name = Span::current().metadata().map_or("none", |m| m.name());
                Ok::<_, std::convert::Infallible>(name.to_owned())
            });
            let mut service = ServerTraceLayer.layer(inner);
            let mut request =
                http::Request::builder().uri("/connect.broker.v1.TokenBroker/GetToken");
            if let Some(traceparent) = traceparent {
                request = request.header("traceparent", traceparent);
            }
            let request = request.body(()).unwrap();
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(async { service.ready().await.unwrap().call(request).await.unwrap() })
        });
        let written = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        (ran_in, written)
    }

    #[test]
    fn an_untraced_call_on_a_server_without_an_exporter_runs_without_a_span() {
        let (ran_in, lines) = serve_one(None, None);
        assert_eq!(ran_in, "none");
        assert!(lines.contains("answered"), "{lines}");
        assert!(
            !lines.contains("trace_id") && !lines.contains("grpc"),
            "{lines}"
        );
    }

    #[test]
    fn a_traced_call_runs_in_a_grpc_span_whose_trace_id_is_in_its_log_lines() {
        let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (ran_in, lines) = serve_one(None, Some(sent));
        assert_eq!(ran_in, "grpc");
        assert!(
            lines.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
            "{lines}"
        );
    }

    #[test]
    fn an_exporting_server_starts_a_trace_for_an_untraced_call() {
        let provider = SdkTracerProvider::builder().build();
        let (ran_in, lines) = serve_one(Some(&provider), None);
        assert_eq!(ran_in, "grpc");
        let line: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        let trace_id = line["span"]["trace_id"].as_str().unwrap_or_default();
        assert_eq!(trace_id.len(), 32, "{lines}");
        assert!(trace_id.bytes().all(|b| b.is_ascii_hexdigit()), "{lines}");
    }

    #[test]
    fn exporting_enables_no_event_the_filters_leave_out() {
        let _turn = SUBSCRIBERS.lock().unwrap_or_else(|e| e.into_inner());
        let provider = SdkTracerProvider::builder().build();
        let subscriber = subscriber(LogFormat::Json, Some(&provider), Lines::default);
        tracing::subscriber::with_default(subscriber, || {
            // Other tests of this binary run their own subscribers at the same time: the
            // callsites' cached interest is recomputed with this one among them.
            tracing::callsite::rebuild_interest_cache();
            assert!(!tracing::enabled!(target: "h2", tracing::Level::TRACE));
            assert!(!tracing::enabled!(target: "token_broker", tracing::Level::TRACE));
            // Connect's own DEBUG spans go to the exporter.
            assert!(tracing::enabled!(
                kind: tracing::metadata::Kind::SPAN,
                target: "token_broker",
                tracing::Level::DEBUG
            ));
            assert!(exporting());
        });
    }
}
