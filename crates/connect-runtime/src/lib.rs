//! Server plumbing shared by the Connect services, so that the registry and the broker start,
//! report health, log and drain in exactly the same way.
//!
//! [`serve`] runs a tonic server with `grpc.health.v1` and server reflection (v1 and v1alpha, which
//! older grpcurl releases use) next to the service. Health says NOT_SERVING until the service's
//! readiness check passes, SERVING while it runs, and NOT_SERVING again from the moment shutdown
//! begins; in-flight calls then get a grace period to finish. At most
//! [`ServeOptions::max_concurrent_requests`] calls run at once across all connections; a call beyond
//! that is refused at once with RESOURCE_EXHAUSTED (tower's load-shed and global concurrency-limit
//! layers) instead of queueing without bound, so an overloaded server answers quickly and a client
//! can retry elsewhere.

pub mod http;
pub mod metrics;
pub mod outbound;
pub mod read_timeout;
pub mod telemetry;
pub mod tls;

use std::{fmt, future::Future, time::Duration};

use tokio::{net::TcpListener, sync::oneshot};
use tonic::{
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;

/// Adds `authorization: Bearer <credential>` to every call of a client: the one way Connect's own
/// clients (the broker's registry client, admin tools, tests) present a key or a token. The value
/// is marked sensitive, and `Debug` never shows it. Inside a trace it also sends the trace
/// context on ([`telemetry::inject`]).
#[derive(Clone, Default)]
pub struct BearerAuth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerAuth {
    /// Presents `credential`; it must be visible ASCII.
    pub fn new(credential: &str) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        let mut value: tonic::metadata::MetadataValue<_> =
            format!("Bearer {credential}").parse()?;
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }

    /// Presents nothing.
    pub fn anonymous() -> Self {
        Self(None)
    }
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerAuth(<redacted>)"
        } else {
            "BearerAuth(none)"
        })
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        telemetry::inject(request.metadata_mut());
        Ok(request)
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global `tracing` subscriber without span export: levels from `RUST_LOG` (default
/// `info`), lines on stderr so that commands which print a value keep stdout clean. A second call
/// keeps the first. Servers use [`telemetry::init`], which can also export spans.
pub fn init_logging(format: LogFormat) {
    let _ = tracing::subscriber::set_global_default(telemetry::styled_subscriber(
        format,
        None,
        std::io::stderr,
        telemetry::stderr_in_colour(),
    ));
}

/// Displays an error with its whole `source()` chain, for log lines.
#[derive(Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot build gRPC reflection")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC server task failed")]
    Task(#[from] tokio::task::JoinError),
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("invalid TLS configuration")]
    Tls(#[source] tonic::transport::Error),
    #[error("cannot register metrics")]
    Metrics(#[from] prometheus::Error),
}

/// What to serve and how to stop.
#[derive(Debug)]
pub struct ServeOptions {
    /// The fully-qualified names of the services served, e.g.
    /// `connect.registry.v1.LinkRegistry`: health reports each, reflection lists each.
    pub service_names: &'static [&'static str],
    /// How long in-flight calls may run on after shutdown begins.
    pub shutdown_grace: Duration,
    /// Most calls served at once; further calls are shed.
    pub max_concurrent_requests: usize,
    /// Serve over TLS (mTLS when it names a client CA); `None`: plaintext h2c.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// Serve Prometheus metrics (the service's own and the per-call gRPC ones) on this endpoint.
    pub metrics: Option<metrics::MetricsEndpoint>,
    /// A call whose request has not fully arrived by then is ended (`DEADLINE_EXCEEDED`).
    pub request_read_timeout: Duration,
    /// Most calls one HTTP/2 connection may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_streams_per_connection: u32,
}

/// Whether `path` is a method Connect's servers serve: one of the RPCs of Connect's own
/// services, health or reflection. Metric labels and span names take a path only when it is one,
/// so a caller cannot grow either set with made-up paths.
pub fn known_method(path: &str) -> bool {
    use std::{collections::HashSet, sync::OnceLock};
    static KNOWN: OnceLock<HashSet<String>> = OnceLock::new();
    KNOWN
        .get_or_init(|| {
            let mut known = HashSet::new();
            for set in [
                connect_proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ] {
                let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(set)
                else {
                    continue;
                };
                for file in set.file {
                    let package = file.package();
                    for service in &file.service {
                        for method in &service.method {
                            known.insert(format!(
                                "/{package}.{}/{}",
                                service.name(),
                                method.name()
                            ));
                        }
                    }
                }
            }
            for version in ["v1", "v1alpha"] {
                known.insert(format!(
                    "/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
                ));
            }
            known
        })
        .contains(path)
}

fn reflection(service_names: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(connect_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // The error-detail types, so that grpcurl can print ErrorInfo and BadRequest.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    service_names
        .iter()
        .fold(builder, |builder, name| builder.with_service_name(*name))
}

/// Serves `routes` with health and reflection on `listener` until `shutdown` completes, then
/// drains. `ready` runs once the listener accepts calls; health turns SERVING when it succeeds.
pub async fn serve<R, S>(
    listener: TcpListener,
    routes: Routes,
    mut options: ServeOptions,
    ready: R,
    shutdown: S,
) -> Result<(), ServeError>
where
    R: Future<Output = Result<(), String>>,
    S: Future<Output = ()>,
{
    let (health, health_service) = tonic_health::server::health_reporter();
    let service_names = options.service_names;
    let set_health = |status| {
        let health = health.clone();
        async move {
            health.set_service_status("", status).await;
            for name in service_names {
                health.set_service_status(*name, status).await;
            }
        }
    };
    set_health(ServingStatus::NotServing).await;

    let routes = routes
        .add_service(health_service)
        .add_service(reflection(options.service_names).build_v1()?)
        .add_service(reflection(options.service_names).build_v1alpha()?);
    let local_addr = listener.local_addr().ok();
    if options.tls.is_none() && local_addr.is_some_and(|a| !a.ip().is_loopback()) {
        tracing::warn!(
            addr = ?local_addr,
            "serving plaintext h2c on a non-loopback address: callers' keys and tokens cross the network in the clear; pass --tls-cert and --tls-key"
        );
    }
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (drain, drained) = oneshot::channel::<()>();
    let (metrics_layer, metrics_server) = match options.metrics.take() {
        Some(endpoint) => {
            let layer =
                metrics::GrpcMetricsLayer(metrics::GrpcMetrics::register(&endpoint.registry)?);
            let addr = endpoint.listener.local_addr().ok();
            let task = tokio::spawn(async move {
                let forever = std::future::pending();
                if let Err(e) =
                    metrics::serve_metrics(endpoint.listener, endpoint.registry, forever).await
                {
                    tracing::error!(error = %e, "metrics endpoint failed");
                }
            });
            tracing::info!(addr = ?addr, "serving metrics on /metrics");
            (Some(layer), Some(task))
        }
        None => (None, None),
    };
    let layers = tower::ServiceBuilder::new()
        .layer(read_timeout::ReadTimeoutLayer::new(
            options.request_read_timeout,
        ))
        .layer(telemetry::ServerTraceLayer)
        .option_layer(metrics_layer)
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            options.max_concurrent_requests.max(1),
        ));
    let mut builder =
        Server::builder().max_concurrent_streams(Some(options.max_streams_per_connection.max(1)));
    if let Some(tls) = options.tls.clone() {
        builder = builder.tls_config(tls).map_err(ServeError::Tls)?;
    }
    let mut server = tokio::spawn(
        builder
            .layer(layers)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = drained.await;
            }),
    );

    // The metrics endpoint stops with the server, whichever way it ends.
    let _metrics_guard = MetricsGuard(metrics_server);
    let mut shutdown = std::pin::pin!(shutdown);
    let stopping = tokio::select! {
        result = ready => {
            result.map_err(ServeError::NotReady)?;
            false
        }
        () = &mut shutdown => true,
        result = &mut server => return Ok(result??),
    };
    if !stopping {
        set_health(ServingStatus::Serving).await;
        tracing::info!(services = ?options.service_names, addr = ?local_addr, "serving");
        tokio::select! {
            () = &mut shutdown => {}
            result = &mut server => return Ok(result??),
        }
    }

    tracing::info!(grace = ?options.shutdown_grace, "shutting down: draining in-flight calls");
    set_health(ServingStatus::NotServing).await;
    let _ = drain.send(());
    match tokio::time::timeout(options.shutdown_grace, &mut server).await {
        Ok(result) => result??,
        Err(_) => {
            tracing::warn!("grace period over: abandoning calls still in flight");
            server.abort();
        }
    }
    tracing::info!(services = ?options.service_names, "stopped");
    Ok(())
}

struct MetricsGuard(Option<tokio::task::JoinHandle<()>>);

impl Drop for MetricsGuard {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Completes on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when the
/// future is first polled, so a signal that arrives in between (while a program prints its
/// banner, say) ends the program through the future instead of the signal's default action.
#[cfg(unix)]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for {name}");
            None
        }
    };
    let interrupt = listen(SignalKind::interrupt(), "Ctrl-C");
    let terminate = listen(SignalKind::terminate(), "SIGTERM");
    async move {
        tokio::select! {
            () = received(interrupt) => {}
            () = received(terminate) => {}
        }
    }
}

/// Completes when `signal` arrives; never without one.
#[cfg(unix)]
async fn received(signal: Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(mut signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    #[test]
    fn the_bearer_interceptor_adds_one_sensitive_value_and_never_shows_it() {
        let mut auth = BearerAuth::new("cnk_secret").unwrap();
        assert!(!format!("{auth:?}").contains("cnk_secret"));
        let request = auth.call(tonic::Request::new(())).unwrap();
        let values: Vec<_> = request.metadata().get_all("authorization").iter().collect();
        assert_eq!(values.len(), 1);
        assert!(values[0].is_sensitive());
        assert_eq!(values[0].to_str().unwrap(), "Bearer cnk_secret");
        let request = BearerAuth::anonymous()
            .call(tonic::Request::new(()))
            .unwrap();
        assert!(request.metadata().get("authorization").is_none());
        assert!(BearerAuth::new("two\nlines").is_err());
    }

    #[test]
    fn a_missing_tls_file_is_named() {
        let tls = tls::ServerTls {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
        };
        let err = tls.load().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }
}
