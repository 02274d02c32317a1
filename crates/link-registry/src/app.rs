//! Startup, serving and shutdown. [`App::build`] binds the listener first (so port 0 works in
//! tests and `local_addr` is known at once), opens the database and applies pending migrations;
//! [`App::run_until`] serves until its shutdown future completes, then reports NOT_SERVING and
//! drains in-flight calls under the grace timeout (see `connect_runtime::serve`).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use connect_proto::registry::v1::{
    link_registry_server::{self, LinkRegistryServer},
    registry_runtime_server::{self, RegistryRuntimeServer},
};
use connect_runtime::{ServeOptions, metrics::MetricsEndpoint};
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::{
    config::{ServeConfig, redact_url, sqlite_path},
    crypto::{KeyFileError, SecretCipher},
    domain::{Registry, RegistryError, store::Store as _},
    grpc::{LinkRegistryService, RegistryRuntimeService},
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
    #[error(
        "the database holds secrets but their key file {path} is missing: restore it or pass --secret-key-file (a new key would not open them)"
    )]
    SecretKeyMissing { path: std::path::PathBuf },
    #[error(
        "the secret key does not open this database's secrets: start with the key they were sealed with (--secret-key-file)"
    )]
    WrongSecretKey,
    #[error(transparent)]
    Serve(#[from] connect_runtime::ServeError),
    #[error(transparent)]
    Tls(#[from] connect_runtime::tls::TlsFileError),
    #[error("{0}")]
    Config(String),
}

/// Opens the database at `url` and applies every pending migration.
pub async fn open_store(url: &str) -> Result<SeaStore, RegistryError> {
    let store = store::connect(url).await?;
    store.migrate().await?;
    Ok(store)
}

/// The cipher for connector secrets: the configured key file; for a SQLite file, a key file
/// beside it (created on first start, never next to a database that already holds secrets:
/// `holds_sealed`); for an in-memory database, a key that lives as long as it.
pub fn secret_cipher(config: &ServeConfig, holds_sealed: bool) -> Result<SecretCipher, AppError> {
    if let Some(path) = &config.secret_key_file {
        return Ok(SecretCipher::from_key_file(path, false)?);
    }
    if config.database_url.starts_with("sqlite:") {
        return Ok(match sqlite_path(&config.database_url) {
            Some(db) => {
                let mut key = db.into_os_string();
                key.push(".key");
                let key = std::path::PathBuf::from(key);
                if holds_sealed && !key.exists() {
                    return Err(AppError::SecretKeyMissing { path: key });
                }
                SecretCipher::from_key_file(&key, true)?
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
    metrics: Option<MetricsEndpoint>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    local_addr: SocketAddr,
    registry: Registry,
    operators: Option<crate::operators::Operators>,
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
        let metrics = match config.metrics_listen {
            Some(addr) => Some(
                MetricsEndpoint::bind(addr)
                    .await
                    .map_err(|source| AppError::Bind { addr, source })?,
            ),
            None => None,
        };
        let tls = config.tls.as_ref().map(|t| t.load()).transpose()?;
        let operators = config
            .operators
            .as_ref()
            .map(|settings| {
                if settings.audiences.is_empty() {
                    return Err(AppError::Config(
                        "--operator-issuer needs --operator-audience (the client ids people sign in with)".into(),
                    ));
                }
                crate::operators::Operators::new(settings).map_err(|e| {
                    AppError::Config(format!("building the operator issuers' HTTP client: {e}"))
                })
            })
            .transpose()?;
        let store = open_store(&config.database_url).await?;
        let holds_sealed = store.key_check().await?.is_some() || store.holds_sealed().await?;
        let cipher = secret_cipher(&config, holds_sealed)?;
        let registry = Registry::new(Arc::new(store), cipher)
            .with_url_policy(config.url_policy.clone())
            .with_revocation_wait(config.revocation_wait);
        if !registry.verify_master_key().await? {
            return Err(AppError::WrongSecretKey);
        }
        // Written now if it is not yet, so brokers never wait for it.
        registry.token_id_key().await?;
        let resealed = registry.upgrade_sealed_secrets().await?;
        if resealed > 0 {
            tracing::info!(
                connectors = resealed,
                "secrets re-sealed, bound to their destination"
            );
        }
        tracing::info!(database = %redact_url(&config.database_url), "database ready");
        Ok(Self {
            listener,
            metrics,
            tls,
            local_addr,
            registry,
            operators,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where metrics are served, when they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|m| m.local_addr().ok())
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), AppError> {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let registry = self.registry.clone().with_stopping(stopping);
        // Operator issuers' keys are refreshed in the background, as the broker's are.
        let operator_keys = self.operators.as_ref().map(|o| o.spawn_refresher());
        let admin = LinkRegistryServer::new(
            LinkRegistryService::new(registry.clone()).with_operators(self.operators.clone()),
        )
        .max_decoding_message_size(self.config.max_request_bytes);
        let runtime = RegistryRuntimeServer::new(RegistryRuntimeService::new(registry))
            .max_decoding_message_size(self.config.max_request_bytes);
        // Audit retention: at start, then every ten minutes.
        let pruner = self.config.audit_retention.map(|retention| {
            let registry = self.registry.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(600));
                loop {
                    every.tick().await;
                    match registry.prune_audit(retention).await {
                        Ok(0) => {}
                        Ok(deleted) => tracing::info!(deleted, "old audit events deleted"),
                        Err(e) => tracing::warn!(error = %e, "audit retention failed"),
                    }
                }
            })
        });
        // Held consents nobody finished: discarded (and their tokens revoked) soon after expiry.
        let sweeper = {
            let registry = self.registry.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(10));
                loop {
                    every.tick().await;
                    match registry.discard_expired_consents().await {
                        Ok(0) => {}
                        Ok(discarded) => {
                            tracing::info!(discarded, "expired consents discarded")
                        }
                        Err(e) => tracing::warn!(error = %e, "discarding expired consents failed"),
                    }
                }
            })
        };
        let store = self.registry.store().clone();
        let ready = async move {
            store
                .ping()
                .await
                .map_err(|e| format!("database does not answer: {e}"))
        };
        let options = ServeOptions {
            service_names: &[
                link_registry_server::SERVICE_NAME,
                registry_runtime_server::SERVICE_NAME,
            ],
            shutdown_grace: self.config.shutdown_grace,
            max_concurrent_requests: self.config.max_concurrent_requests,
            request_read_timeout: self.config.request_read_timeout,
            max_streams_per_connection: self.config.max_streams_per_connection,
            tls: self.tls,
            metrics: self.metrics,
        };
        // Open change feeds end as soon as shutdown begins, so they do not hold the drain.
        let shutdown = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let served = connect_runtime::serve(
            self.listener,
            Routes::new(admin).add_service(runtime),
            options,
            ready,
            shutdown,
        )
        .await;
        if let Some(pruner) = pruner {
            pruner.abort();
        }
        sweeper.abort();
        if let Some(refresher) = operator_keys {
            refresher.abort();
        }
        Ok(served?)
    }
}
