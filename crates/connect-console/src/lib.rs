//! The Connect web console: the Linked Projects UI and the rest of an admin's day (connectors,
//! projects, the access check, audit, grants, issuances, keys) for people signed in with their
//! identity provider.
//!
//! It is a thin client of the registry's admin API: every page is one or a few `LinkRegistry`
//! calls made with the signed-in person's own ID token (or API key, with `--allow-key-login`), so
//! the registry decides and audits exactly as for the `connect` command line. Pages are rendered
//! on the server from compile-time-checked templates; forms post and redirect (no script at all);
//! every response carries a strict Content-Security-Policy and the other security headers, and
//! every state-changing request is a POST checked for its origin and its session's CSRF token.

pub mod config;
mod pages;
mod registry;
mod security;
pub mod session;
mod signin;
mod views;

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use tokio::net::TcpListener;

pub use config::ConsoleConfig;
use registry::RegistryClient;
use session::SessionStore;
use signin::SignIn;

/// Everything a request handler needs.
#[derive(Debug)]
pub(crate) struct AppState {
    pub config: ConsoleConfig,
    /// The URL people open (`--public-url`, or the bound address).
    pub public_url: url::Url,
    pub sessions: SessionStore,
    pub registry: RegistryClient,
    pub sign_in: SignIn,
    /// Cookie names (`__Host-` prefixed when the public URL is https).
    pub cookies: security::CookieNames,
}

pub(crate) type State = Arc<AppState>;

/// A console bound to its listener, ready to serve.
#[derive(Debug)]
pub struct Console {
    listener: TcpListener,
    router: Router,
}

impl Console {
    /// Binds the listener, opens the session database and connects to the registry (lazily: a
    /// registry that is down makes pages fail, not the console).
    pub async fn build(config: ConsoleConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let public_url = match &config.public_url {
            Some(url) => url.clone(),
            None => url::Url::parse(&format!("http://{}/", listener.local_addr()?))?,
        };
        let sessions = SessionStore::open(&config.session_database_url).await?;
        let registry = RegistryClient::connect(&config)?;
        let sign_in = SignIn::new(&config, &public_url)?;
        let cookies = security::CookieNames::for_url(&public_url);
        let state = Arc::new(AppState {
            config,
            public_url,
            sessions,
            registry,
            sign_in,
            cookies,
        });
        Ok(Self {
            listener,
            router: pages::router(state),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        connect_runtime::http::serve(
            self.listener,
            self.router,
            connect_runtime::http::HttpLimits::default(),
            shutdown,
        )
        .await?;
        Ok(())
    }
}
