//! Startup, serving and shutdown. [`App::build`] binds the listener first (so port 0 works in
//! tests and `local_addr` is known at once), opens the database and applies pending migrations;
//! [`App::run_until`] serves until its shutdown future completes, then reports NOT_SERVING and
//! drains in-flight calls under the grace timeout.

use std::{future::Future, net::SocketAddr, sync::Arc};

use connect_proto::registry::v1::link_registry_server::LinkRegistryServer;
use tokio::{net::TcpListener, sync::oneshot};
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::ServingStatus;

use crate::{
    config::{ServeConfig, redact_url, sqlite_path},
    crypto::{KeyFileError, SecretCipher},
    domain::{Registry, RegistryError},
    grpc::LinkRegistryService,
    store::{self, SeaStore},
};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error(
        "a secret key file is required for this database: pass --secret-key-file (LINK_REGISTRY_SECRET_KEY_FILE)"
    )]
    SecretKeyRequired,
    #[error("cannot build gRPC reflection")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
    #[error("gRPC server task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// Opens the database at `url` and applies every pending migration.
pub async fn open_store(url: &str) -> Result<SeaStore, RegistryError> {
    let store = store::connect(url).await?;
    store.migrate().await?;
    Ok(store)
}

/// The cipher for connector secrets: the configured key file; for a SQLite file, a key file
/// beside it (created on first start); for an in-memory database, a key that lives as long as it.
pub fn secret_cipher(config: &ServeConfig) -> Result<SecretCipher, AppError> {
    if let Some(path) = &config.secret_key_file {
        return Ok(SecretCipher::from_key_file(path, false)?);
    }
    if config.database_url.starts_with("sqlite:") {
        return Ok(match sqlite_path(&config.database_url) {
            Some(db) => {
                let mut key = db.into_os_string();
                key.push(".key");
                SecretCipher::from_key_file(key.as_ref(), true)?
            }
            None => SecretCipher::ephemeral(),
        });
    }
    Err(AppError::SecretKeyRequired)
}

/// A registry server, bound and migrated, not yet serving.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    registry: Registry,
    config: ServeConfig,
}

impl App {
    pub async fn build(config: ServeConfig) -> Result<Self, AppError> {
        let bind_error = |source| AppError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let cipher = secret_cipher(&config)?;
        let store = open_store(&config.database_url).await?;
        tracing::info!(database = %redact_url(&config.database_url), "database ready");
        Ok(Self {
            listener,
            local_addr,
            registry: Registry::new(Arc::new(store), cipher),
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), AppError> {
        type Service = LinkRegistryServer<LinkRegistryService>;

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health.set_not_serving::<Service>().await;

        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let service = LinkRegistryServer::new(LinkRegistryService::new(self.registry.clone()))
            .max_decoding_message_size(self.config.max_request_bytes);
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let (drain, drained) = oneshot::channel::<()>();
        let mut server = tokio::spawn(
            Server::builder()
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = drained.await;
                }),
        );

        self.registry.store().ping().await?;
        health.set_serving::<Service>().await;
        health.set_service_status("", ServingStatus::Serving).await;
        tracing::info!(addr = %self.local_addr, "link-registry serving");

        tokio::select! {
            () = shutdown => {}
            result = &mut server => return Ok(result??),
        }

        tracing::info!(grace = ?self.config.shutdown_grace, "shutting down: draining in-flight calls");
        health.set_not_serving::<Service>().await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let _ = drain.send(());
        match tokio::time::timeout(self.config.shutdown_grace, &mut server).await {
            Ok(result) => result??,
            Err(_) => {
                tracing::warn!("grace period over: abandoning calls still in flight");
                server.abort();
            }
        }
        tracing::info!("link-registry stopped");
        Ok(())
    }
}

/// Server reflection for the registry and health services. The error-detail types are registered
/// too, so that `grpcurl` can print `ErrorInfo` and `BadRequest` details.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(connect_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("connect.registry.v1.LinkRegistry")
        .with_service_name("grpc.health.v1.Health")
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
