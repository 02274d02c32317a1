//! Startup, serving and shutdown of the broker. [`App::build`] binds the listener first and wires
//! verifier, registry client and issuers; [`App::run_until`] fetches every issuer's keys once,
//! reports SERVING once the registry answers its health check, and drains on shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use connect_proto::broker::v1::token_broker_server::TokenBrokerServer;
use connect_runtime::{ServeOptions, metrics::MetricsEndpoint};
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::{
    auth::{
        TokenVerifier,
        jwks::{Fetcher, JwksCache, JwksSettings},
    },
    config::BrokerConfig,
    consent::Consents,
    error::BrokerError,
    feed::{FeedListener, Revoker},
    grpc::TokenBrokerService,
    issuers::{Issuers, UserGrants},
    ledger::Ledger,
    metrics::BrokerMetrics,
    outbound::Outbound,
    registry::{Authorizer, CachedAuthorizer, RegistryClient},
    service::Broker,
};

/// Largest `GetToken` request accepted, in bytes.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Serve(#[from] connect_runtime::ServeError),
    #[error(transparent)]
    Tls(#[from] connect_runtime::tls::TlsFileError),
    #[error("cannot register metrics")]
    Metrics(#[from] prometheus::Error),
}

/// An HTTP listener bound now on `addr`, and its public URL: `configured`, else `http://` and the
/// bound address.
async fn bind_http(
    addr: SocketAddr,
    configured: Option<&url::Url>,
    what: &str,
) -> Result<(TcpListener, url::Url), AppError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AppError::Bind { addr, source })?;
    let url = match configured {
        Some(url) => url.clone(),
        None => url::Url::parse(&format!("http://{bound}"))
            .map_err(|e| AppError::Config(format!("{what} address: {e}")))?,
    };
    Ok((listener, url))
}

#[derive(Debug)]
pub struct App {
    /// Provider requests (revocations of user grants' refresh tokens).
    provider_outbound: Outbound,
    /// The consent callback's listener and flow, when it is served.
    callback: Option<(TcpListener, Arc<Consents>)>,
    /// Connect's OIDC issuer's listener and keys, when it is served.
    issuer: Option<(TcpListener, crate::issuer::Issuer)>,
    /// The credential-injecting proxy's listener and state, when it is served.
    proxy: Option<(TcpListener, crate::proxy::Proxy)>,
    listener: TcpListener,
    metrics: Option<MetricsEndpoint>,
    cache: Option<Arc<CachedAuthorizer>>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    local_addr: SocketAddr,
    broker: Broker,
    /// The one adapter every part asks the registry through.
    registry: Arc<RegistryClient>,
    config: BrokerConfig,
}

impl App {
    pub async fn build(config: BrokerConfig) -> Result<Self, AppError> {
        if config.trusted_issuers.is_empty() {
            return Err(AppError::Config(
                "at least one --trusted-issuer is required".into(),
            ));
        }
        for issuer in &config.trusted_issuers {
            config
                .outbound
                .policy
                .check_url(issuer.as_str())
                .map_err(|e| AppError::Config(format!("trusted issuer '{issuer}': {e}")))?;
        }
        if config.leeway > Duration::from_secs(crate::config::MAX_LEEWAY_SECS) {
            return Err(AppError::Config(format!(
                "the clock leeway may be at most {} seconds",
                crate::config::MAX_LEEWAY_SECS
            )));
        }
        if config.audience.is_empty() {
            return Err(AppError::Config("--audience must not be empty".into()));
        }
        let bind_error = |source| AppError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let (endpoint, metrics) = match config.metrics_listen {
            Some(addr) => {
                let endpoint = MetricsEndpoint::bind(addr)
                    .await
                    .map_err(|source| AppError::Bind { addr, source })?;
                let metrics = BrokerMetrics::register(&endpoint.registry)?;
                (Some(endpoint), metrics)
            }
            None => (None, BrokerMetrics::unserved()),
        };
        let issuer_outbound = Outbound::new(&config.outbound, config.jwks_timeout)
            .map_err(|e| BrokerError::internal("building an outbound HTTP client", e))?;
        let fetches = metrics.clone();
        let jwks = JwksCache::new(
            &config.trusted_issuers,
            Fetcher {
                http: issuer_outbound.http().clone(),
                policy: issuer_outbound.policy().clone(),
                on_fetch: Arc::new(move |ok| fetches.jwks_fetch(ok)),
            },
            JwksSettings {
                audiences: vec![config.audience.clone()],
                leeway: config.leeway,
                max_token_age: config.max_token_age,
                refresh_every: config.jwks_refresh,
                max_stale: config.jwks_max_stale,
                kid_refetch_cooldown: config.kid_refetch_cooldown,
            },
        );
        let registry_https = config.registry_url.starts_with("https://");
        if !registry_https
            && (config.registry_tls.ca.is_some() || config.registry_tls.identity.is_some())
        {
            return Err(AppError::Config(
                "--registry-ca and --registry-client-cert/--registry-client-key apply to an https:// registry, but --registry-url is not https://: use https:// (or drop them)".into(),
            ));
        }
        if !registry_https && !connect_types::is_loopback_http(&config.registry_url) {
            tracing::warn!(
                url = %config.registry_url,
                "the registry link (--registry-url) is plaintext to a non-loopback address: the broker key and every answer cross the network in the clear; use https://"
            );
        }
        let registry_tls = registry_https
            .then(|| config.registry_tls.load())
            .transpose()?;
        let registry = Arc::new(RegistryClient::new(
            &config.registry_url,
            &config.registry_key,
            config.registry_timeout,
            registry_tls,
        )?);
        let tls = config.tls.as_ref().map(|t| t.load()).transpose()?;
        let cache = (config.authz_cache_size > 0).then(|| {
            Arc::new(CachedAuthorizer::new(
                registry.clone(),
                config.authz_cache_size,
                config.authz_max_staleness,
                metrics.clone(),
            ))
        });
        let authorizer: Arc<dyn Authorizer> = match &cache {
            Some(cache) => cache.clone(),
            None => registry.clone(),
        };
        let provider_outbound = Outbound::new(&config.outbound, config.provider_timeout)
            .map_err(|e| BrokerError::internal("building an outbound HTTP client", e))?;
        let issuer = match config.issuer_listen {
            Some(addr) => {
                let (listener, url) = bind_http(addr, config.issuer_url.as_ref(), "issuer").await?;
                connect_types::IssuerUrl::parse(url.as_str().trim_end_matches('/'))
                    .map_err(|e| AppError::Config(format!("--issuer-url: {e}")))?;
                if config.signing_key_publish_delay
                    < crate::issuer::JWKS_MAX_AGE + config.signing_keys_refresh
                {
                    tracing::warn!(
                        delay = ?config.signing_key_publish_delay,
                        "--signing-key-publish-delay is shorter than the JWKS cache lifetime (300 s) plus --signing-keys-refresh-secs: a verifier may see a token signed with a key it has not fetched yet"
                    );
                }
                let ring = Arc::new(crate::issuer::KeyRing::new(
                    config.signing_key_publish_delay,
                ));
                Some((listener, crate::issuer::Issuer { url, ring }))
            }
            None => None,
        };
        let minter = issuer.as_ref().map(|(_, issuer)| crate::issuer::Minter {
            url: issuer.url.as_str().trim_end_matches('/').to_owned(),
            ring: issuer.ring.clone(),
        });
        let mut broker = Broker::new(
            TokenVerifier::new(Arc::new(jwks), config.verified_token_cache_size),
            authorizer,
            Issuers::standard(
                provider_outbound.clone(),
                config.provider_cache_max,
                metrics.clone(),
                UserGrants {
                    registry: registry.clone(),
                    lease: config.grant_lease,
                    max_wait: config.grant_lease * 2,
                },
                minter,
            ),
            Arc::new(Ledger::new(
                registry.clone(),
                config.authz_cache_size.max(10_000),
            )),
            metrics,
        );
        // The consent callback: its own listener, bound now like the gRPC one.
        let callback = match config.callback_listen {
            Some(addr) => {
                let (listener, public_url) =
                    bind_http(addr, config.public_url.as_ref(), "callback").await?;
                let consents = Arc::new(Consents::new(
                    broker.authorizer().clone(),
                    registry.clone(),
                    provider_outbound.clone(),
                    &public_url,
                )?);
                broker = broker.with_consents(consents.clone());
                Some((listener, consents))
            }
            None => None,
        };
        let proxy = match config.proxy_listen {
            Some(addr) => {
                let (listener, _) = bind_http(addr, None, "proxy").await?;
                let metrics = broker.metrics().clone();
                Some((
                    listener,
                    crate::proxy::Proxy::new(
                        broker.clone(),
                        provider_outbound.clone(),
                        config.provider_timeout,
                        config.proxy_read_timeout,
                        metrics,
                    ),
                ))
            }
            None => None,
        };
        Ok(Self {
            provider_outbound,
            callback,
            issuer,
            proxy,
            listener,
            metrics: endpoint,
            cache,
            tls,
            local_addr,
            broker,
            registry,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the consent callback is served, when it is.
    pub fn callback_addr(&self) -> Option<SocketAddr> {
        self.callback
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// Where Connect's OIDC issuer is served, when it is.
    pub fn issuer_addr(&self) -> Option<SocketAddr> {
        self.issuer
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// Where the credential-injecting proxy is served, when it is.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.proxy
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// The keys Connect's tokens are signed with, when the issuer is served.
    pub fn key_ring(&self) -> Option<Arc<crate::issuer::KeyRing>> {
        self.issuer.as_ref().map(|(_, issuer)| issuer.ring.clone())
    }

    /// Where metrics are served, when they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|m| m.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), AppError> {
        let jwks = self.broker.verifier().jwks().clone();
        let refresher = jwks.clone().spawn_refresher();
        let mut listeners: Vec<Arc<dyn FeedListener>> = vec![Arc::new(Revoker::new(
            self.broker.issuers().clone(),
            self.broker.ledger().clone(),
            self.registry.clone(),
            self.provider_outbound.clone(),
        ))];
        if let Some(cache) = &self.cache {
            listeners.push(cache.clone());
        }
        let follower = crate::feed::spawn_follower(self.registry.clone(), listeners);
        // The HTTP listeners' bounds are the gRPC listener's: the same time to send a request's
        // head, as many connections as requests.
        let limits = connect_runtime::http::HttpLimits {
            header_read_timeout: self.config.request_read_timeout,
            max_connections: self.config.max_concurrent_requests,
        };
        // They drain from the moment shutdown begins, as the gRPC listener does.
        let (http_stopping, _) = tokio::sync::watch::channel(());
        let serve_http = |listener, router, what: &'static str| {
            let mut stopping = http_stopping.subscribe();
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stopping.changed().await;
                };
                let served = connect_runtime::http::serve(listener, router, limits, stopped).await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the {what} stopped");
                }
            })
        };
        let callback = self.callback.map(|(listener, consents)| {
            serve_http(listener, consents.router(), "consent callback")
        });
        let issuer = self.issuer.map(|(listener, issuer)| {
            let keys = crate::issuer::spawn_refresher(
                self.registry.clone(),
                issuer.ring.clone(),
                self.config.signing_keys_refresh,
            );
            (keys, serve_http(listener, issuer.router(), "OIDC issuer"))
        });
        let proxy = self
            .proxy
            .map(|(listener, proxy)| serve_http(listener, proxy.router(), "proxy"));
        let service = TokenBrokerServer::new(TokenBrokerService::new(self.broker.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        let registry = self.registry.clone();
        // Ready once every issuer's keys were fetched once (a failure leaves the issuer cold, to be
        // retried on demand) and the registry answers: without it every call would fail.
        let ready = async move {
            jwks.refresh_all().await;
            registry.wait_until_serving().await;
            Ok(())
        };
        let options = ServeOptions {
            service_names: &["connect.broker.v1.TokenBroker"],
            shutdown_grace: self.config.shutdown_grace,
            max_concurrent_requests: self.config.max_concurrent_requests,
            request_read_timeout: self.config.request_read_timeout,
            max_streams_per_connection: self.config.max_streams_per_connection,
            tls: self.tls,
            metrics: self.metrics,
        };
        let began = std::sync::OnceLock::new();
        let shutdown = async {
            shutdown.await;
            began.get_or_init(tokio::time::Instant::now);
            let _ = http_stopping.send(());
        };
        let result = connect_runtime::serve(
            self.listener,
            Routes::new(service),
            options,
            ready,
            shutdown,
        )
        .await;
        // Drained within the same grace, counted from when shutdown began (a proxied stream may
        // still be running).
        let _ = http_stopping.send(());
        let deadline = *began.get_or_init(tokio::time::Instant::now) + self.config.shutdown_grace;
        let mut http = Vec::new();
        http.extend(callback);
        http.extend(proxy);
        if let Some((keys, server)) = issuer {
            keys.abort();
            http.push(server);
        }
        let drained = futures::future::join_all(http.iter_mut());
        if tokio::time::timeout_at(deadline, drained).await.is_err() {
            tracing::warn!("HTTP requests still running after the shutdown grace: cut off");
        }
        for task in http {
            task.abort();
        }
        refresher.abort();
        follower.abort();
        Ok(result?)
    }
}
