//! An OTLP/gRPC trace collector on loopback that keeps every span it receives: what the tests
//! assert traces against, and what the benchmark exports to when it measures tracing's cost.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    trace::v1::Span,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tonic::{Request, Response, Status};

#[derive(Clone, Debug, Default)]
struct Spans {
    kept: Arc<Mutex<Vec<Span>>>,
    count: Arc<std::sync::atomic::AtomicUsize>,
    /// Whether the spans are kept, or only counted.
    keep: bool,
}

#[tonic::async_trait]
impl TraceService for Spans {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                self.count
                    .fetch_add(scope.spans.len(), std::sync::atomic::Ordering::Relaxed);
                if self.keep {
                    kept.extend(scope.spans);
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A running collector; it stops when dropped.
#[derive(Debug)]
pub struct OtlpCollector {
    spans: Spans,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl OtlpCollector {
    /// Listens on a free loopback port and keeps every span.
    pub async fn start() -> anyhow::Result<Self> {
        Self::listen(true).await
    }

    /// Listens on a free loopback port and only counts the spans (for long runs).
    pub async fn counting() -> anyhow::Result<Self> {
        Self::listen(false).await
    }

    async fn listen(keep: bool) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let spans = Spans {
            keep,
            ..Spans::default()
        };
        let service = TraceServiceServer::new(spans.clone());
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "the OTLP collector stopped");
            }
        });
        Ok(Self { spans, addr, task })
    }

    /// The `--otlp-endpoint` that reaches it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far (none when only counting).
    pub fn spans(&self) -> Vec<Span> {
        self.spans
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many spans were received so far.
    pub fn count(&self) -> usize {
        self.spans.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
