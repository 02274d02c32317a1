//! A whole Connect system on this machine, as a library: the link registry and the token broker,
//! each a real server on its own port, the broker reaching the registry over gRPC (and TLS when
//! the registry serves it) exactly as in production. `connect-dev`, the end-to-end tests and the
//! benchmark all start their systems through [`LocalStack`], so there is one way to wire it.
//!
//! The caller brings the issuers (the broker must know which it trusts before it starts) and
//! seeds teams, projects and connectors through [`LocalStack::registry`].

mod collector;
mod provider;

pub use collector::OtlpCollector;
pub use provider::{DemoClient, DemoProvider};

use std::{future::Future, net::SocketAddr};

use link_registry::{ServeConfig, domain::Registry, domain::model::Role};
use secrecy::SecretString;
use token_broker::BrokerConfig;
use tokio::{sync::oneshot, task::JoinHandle};

/// A server task and the way to stop it.
#[derive(Debug)]
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn spawn<F>(run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        Self {
            stop: Some(stop),
            task: tokio::spawn(run(stopped)),
        }
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await?
    }
}

/// The registry and the broker, running.
#[derive(Debug)]
pub struct LocalStack {
    registry: Registry,
    registry_addr: SocketAddr,
    registry_url: String,
    broker_addr: SocketAddr,
    registry_metrics: Option<SocketAddr>,
    broker_metrics: Option<SocketAddr>,
    broker_callback: Option<SocketAddr>,
    broker_key: SecretString,
    registry_server: Option<Running>,
    broker_server: Option<Running>,
}

impl LocalStack {
    /// Starts a registry with `registry`, creates a broker key, and starts a broker with the
    /// configuration `broker` makes of the registry's URL and that key.
    pub async fn start(
        registry: ServeConfig,
        broker: impl FnOnce(String, SecretString) -> BrokerConfig,
    ) -> anyhow::Result<Self> {
        Self::start_with_broker_key(registry, None, broker).await
    }

    /// As [`LocalStack::start`], with `broker_key` when it is still a usable broker key of the
    /// registry's database (a new key otherwise): a system started again on the same database
    /// keeps its key.
    pub async fn start_with_broker_key(
        registry: ServeConfig,
        broker_key: Option<SecretString>,
        broker: impl FnOnce(String, SecretString) -> BrokerConfig,
    ) -> anyhow::Result<Self> {
        use secrecy::ExposeSecret;
        let scheme = if registry.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let registry_app = link_registry::App::build(registry).await?;
        let registry_addr = registry_app.local_addr();
        let registry_metrics = registry_app.metrics_addr();
        let registry_url = format!("{scheme}://{registry_addr}");
        let handle = registry_app.registry().clone();
        let registry_server = Running::spawn(|stopped| async move {
            registry_app
                .run_until(async {
                    let _ = stopped.await;
                })
                .await?;
            Ok(())
        });
        let reusable = match broker_key {
            Some(key) => handle
                .authenticate(key.expose_secret())
                .await
                .ok()
                .filter(|caller| caller.role == Role::Broker && caller.broker_teams.is_none())
                .map(|_| key),
            None => None,
        };
        let broker_key = match reusable {
            Some(key) => key,
            None => handle.create_api_key(None, Role::Broker).await?.1,
        };
        let broker_app =
            token_broker::App::build(broker(registry_url.clone(), broker_key.clone())).await?;
        let broker_addr = broker_app.local_addr();
        let broker_metrics = broker_app.metrics_addr();
        let broker_callback = broker_app.callback_addr();
        let broker_server = Running::spawn(|stopped| async move {
            broker_app
                .run_until(async {
                    let _ = stopped.await;
                })
                .await?;
            Ok(())
        });
        Ok(Self {
            registry: handle,
            registry_addr,
            registry_url,
            broker_addr,
            registry_metrics,
            broker_metrics,
            broker_callback,
            broker_key,
            registry_server: Some(registry_server),
            broker_server: Some(broker_server),
        })
    }

    /// The broker's key for the registry.
    pub fn broker_key(&self) -> &SecretString {
        &self.broker_key
    }

    /// The registry's domain service, to seed teams, keys and connectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn registry_addr(&self) -> SocketAddr {
        self.registry_addr
    }

    /// `http://…` or `https://…`, as the broker reaches it.
    pub fn registry_url(&self) -> &str {
        &self.registry_url
    }

    pub fn broker_addr(&self) -> SocketAddr {
        self.broker_addr
    }

    /// Where the registry serves `/metrics`, when it was started with `metrics_listen`.
    pub fn registry_metrics_addr(&self) -> Option<SocketAddr> {
        self.registry_metrics
    }

    /// Where the broker serves `/metrics`, when it was started with `metrics_listen`.
    pub fn broker_metrics_addr(&self) -> Option<SocketAddr> {
        self.broker_metrics
    }

    /// Where the broker serves the consent callback, when it was started with `callback_listen`.
    pub fn broker_callback_addr(&self) -> Option<SocketAddr> {
        self.broker_callback
    }

    /// Stops the registry only (the broker then answers REGISTRY_UNAVAILABLE).
    pub async fn stop_registry(&mut self) -> anyhow::Result<()> {
        match self.registry_server.take() {
            Some(server) => server.stop().await,
            None => Ok(()),
        }
    }

    /// Drains and stops the broker, then the registry.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(server) = self.broker_server.take() {
            server.stop().await?;
        }
        self.stop_registry().await
    }
}
