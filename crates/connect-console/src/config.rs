//! `connect-console serve` settings: clap derive, each flag with its environment variable.

use std::{net::SocketAddr, path::PathBuf};

use clap::Args;
use secrecy::SecretString;
use url::Url;

#[derive(Args, Clone, Debug)]
pub struct ConsoleArgs {
    /// Address to listen on.
    #[arg(long, env = "CONNECT_CONSOLE_LISTEN", default_value = "127.0.0.1:8088")]
    pub listen: SocketAddr,
    /// The link registry's URL (`https://…`, or `http://…` on loopback).
    #[arg(long, env = "CONNECT_CONSOLE_REGISTRY_URL")]
    pub registry_url: String,
    /// A PEM file of the CA that signed the registry's certificate (default: the system's roots).
    #[arg(long, env = "CONNECT_CONSOLE_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,
    /// The URL people open, as their browsers see it (its origin is the one POSTs must come
    /// from; https makes cookies `Secure` and `__Host-`).
    #[arg(long, env = "CONNECT_CONSOLE_PUBLIC_URL")]
    pub public_url: Url,
    /// The operator issuer people sign in with (the registry's `--operator-issuer`).
    #[arg(long, env = "CONNECT_CONSOLE_OPERATOR_ISSUER")]
    pub operator_issuer: Url,
    /// The console's client id at that issuer (one of the registry's `--operator-audience`).
    #[arg(
        long,
        env = "CONNECT_CONSOLE_CLIENT_ID",
        default_value = "connect-console"
    )]
    pub client_id: String,
    /// A file holding the client secret, for an issuer that treats the console as a
    /// confidential client (PKCE is used either way).
    #[arg(long, env = "CONNECT_CONSOLE_CLIENT_SECRET_FILE")]
    pub client_secret_file: Option<PathBuf>,
    /// Where sessions live: SQLite for one console, PostgreSQL shared by replicas.
    #[arg(
        long,
        env = "CONNECT_CONSOLE_SESSION_DATABASE_URL",
        default_value = "sqlite://connect-console.db?mode=rwc"
    )]
    pub session_database_url: String,
    /// Adds an API-key sign-in form (break-glass and development).
    #[arg(long, env = "CONNECT_CONSOLE_ALLOW_KEY_LOGIN")]
    pub allow_key_login: bool,
}

/// The console's settings, as tests and `connect-dev` build them directly.
#[derive(Clone, Debug)]
pub struct ConsoleConfig {
    pub listen: SocketAddr,
    pub registry_url: String,
    pub registry_ca: Option<Vec<u8>>,
    /// `None`: `http://` and the address the console bound (loopback development and tests).
    pub public_url: Option<Url>,
    pub operator_issuer: Url,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub session_database_url: String,
    pub allow_key_login: bool,
}

impl ConsoleArgs {
    pub fn into_config(self) -> anyhow::Result<ConsoleConfig> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))
        };
        let registry_ca = self
            .registry_ca
            .as_ref()
            .map(|p| read(p, "--registry-ca"))
            .transpose()?;
        let client_secret = self
            .client_secret_file
            .as_ref()
            .map(|p| read(p, "--client-secret-file"))
            .transpose()?
            .map(|bytes| SecretString::from(String::from_utf8_lossy(&bytes).trim().to_owned()));
        Ok(ConsoleConfig {
            listen: self.listen,
            registry_url: self.registry_url,
            registry_ca,
            public_url: Some(self.public_url),
            operator_issuer: self.operator_issuer,
            client_id: self.client_id,
            client_secret,
            session_database_url: self.session_database_url,
            allow_key_login: self.allow_key_login,
        })
    }
}
