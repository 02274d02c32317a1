//! `connect-console serve` settings: clap derive, each flag with its environment variable.

use std::{net::SocketAddr, path::PathBuf};

use clap::Args;
use secrecy::SecretString;
use url::Url;

#[derive(Args, Clone)]
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

/// A database URL without its password, for `Debug` output.
fn redacted(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(not a URL)".to_owned(),
    }
}

impl std::fmt::Debug for ConsoleArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleArgs")
            .field("listen", &self.listen)
            .field("registry_url", &self.registry_url)
            .field("public_url", &self.public_url.as_str())
            .field("operator_issuer", &self.operator_issuer.as_str())
            .field("client_id", &self.client_id)
            .field(
                "session_database_url",
                &redacted(&self.session_database_url),
            )
            .field("allow_key_login", &self.allow_key_login)
            .finish_non_exhaustive()
    }
}

/// The console's settings, as tests and `connect-dev` build them directly.
#[derive(Clone)]
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

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("listen", &self.listen)
            .field("registry_url", &self.registry_url)
            .field("public_url", &self.public_url.as_ref().map(Url::as_str))
            .field("operator_issuer", &self.operator_issuer.as_str())
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "session_database_url",
                &redacted(&self.session_database_url),
            )
            .field("allow_key_login", &self.allow_key_login)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_session_database_password() {
        let config = ConsoleConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            registry_url: "http://127.0.0.1:1".into(),
            registry_ca: None,
            public_url: None,
            operator_issuer: "https://idp.example".parse().unwrap(),
            client_id: "connect-console".into(),
            client_secret: Some(SecretString::from("cs_very_secret")),
            session_database_url: "postgres://console:pg_Secret_pw@db/connect".into(),
            allow_key_login: false,
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("pg_Secret_pw") && !shown.contains("cs_very_secret"),
            "{shown}"
        );
        assert!(
            shown.contains("postgres://console:****@db/connect"),
            "{shown}"
        );
    }
}
