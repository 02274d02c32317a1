//! Command line and environment configuration. Every flag also reads a `TOKEN_BROKER_…`
//! environment variable; `--help` lists both. Tests build [`BrokerConfig`] values directly.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};
use connect_runtime::LogFormat;
use secrecy::SecretString;

/// The Connect token broker: trades a deployment's OIDC token for a short-lived provider token,
/// when the link registry says its project and environment are linked to the connector.
#[derive(Debug, Parser)]
#[command(name = "token-broker", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log line format. Levels come from `RUST_LOG` (default `info`).
    #[arg(
        long,
        global = true,
        env = "TOKEN_BROKER_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC until SIGTERM or Ctrl-C.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to serve gRPC on (port 0 picks a free port).
    #[arg(long, env = "TOKEN_BROKER_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,

    /// The link registry's gRPC URL.
    #[arg(
        long,
        env = "TOKEN_BROKER_REGISTRY_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub registry_url: String,

    /// A `broker` key of the link registry (`link-registry keys create --role broker`).
    #[arg(long, env = "TOKEN_BROKER_REGISTRY_KEY", hide_env_values = true)]
    pub registry_key: String,

    /// An OIDC issuer whose tokens are accepted, exactly as its tokens' `iss`. Repeat the flag
    /// (or separate with commas in the variable) for several. Tokens of any other issuer are
    /// refused without a network request.
    #[arg(
        long,
        env = "TOKEN_BROKER_TRUSTED_ISSUER",
        required = true,
        value_delimiter = ','
    )]
    pub trusted_issuer: Vec<String>,

    /// The `aud` every token must carry.
    #[arg(long, env = "TOKEN_BROKER_AUDIENCE")]
    pub audience: String,

    /// Allowed clock skew for `exp`, `nbf` and `iat`, in seconds.
    #[arg(long, env = "TOKEN_BROKER_LEEWAY_SECS", default_value_t = 30)]
    pub leeway_secs: u64,

    /// Longest wait for the registry's answer, in milliseconds (less when the caller's deadline
    /// is nearer).
    #[arg(long, env = "TOKEN_BROKER_REGISTRY_TIMEOUT_MS", default_value_t = 2000)]
    pub registry_timeout_ms: u64,

    /// Timeout of each OIDC discovery or JWKS request, in milliseconds.
    #[arg(long, env = "TOKEN_BROKER_JWKS_TIMEOUT_MS", default_value_t = 3000)]
    pub jwks_timeout_ms: u64,

    /// How often every issuer's keys are fetched again, in seconds.
    #[arg(long, env = "TOKEN_BROKER_JWKS_REFRESH_SECS", default_value_t = 300)]
    pub jwks_refresh_secs: u64,

    /// How long the last fetched keys keep verifying while fetches fail, in seconds.
    #[arg(long, env = "TOKEN_BROKER_JWKS_MAX_STALE_SECS", default_value_t = 3600)]
    pub jwks_max_stale_secs: u64,

    /// Least time between two key fetches caused by an unknown `kid`, in seconds.
    #[arg(
        long,
        env = "TOKEN_BROKER_KID_REFETCH_COOLDOWN_SECS",
        default_value_t = 30
    )]
    pub kid_refetch_cooldown_secs: u64,

    /// Timeout of each provider token request, in milliseconds.
    #[arg(long, env = "TOKEN_BROKER_PROVIDER_TIMEOUT_MS", default_value_t = 5000)]
    pub provider_timeout_ms: u64,

    /// How long in-flight calls may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "TOKEN_BROKER_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    pub registry_url: String,
    pub registry_key: SecretString,
    pub trusted_issuers: Vec<String>,
    pub audience: String,
    pub leeway: Duration,
    pub registry_timeout: Duration,
    pub jwks_timeout: Duration,
    pub jwks_refresh: Duration,
    pub jwks_max_stale: Duration,
    pub kid_refetch_cooldown: Duration,
    pub provider_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl From<ServeArgs> for BrokerConfig {
    fn from(a: ServeArgs) -> Self {
        Self {
            listen: a.listen,
            registry_url: a.registry_url,
            registry_key: SecretString::from(a.registry_key),
            trusted_issuers: a.trusted_issuer,
            audience: a.audience,
            leeway: Duration::from_secs(a.leeway_secs),
            registry_timeout: Duration::from_millis(a.registry_timeout_ms),
            jwks_timeout: Duration::from_millis(a.jwks_timeout_ms),
            jwks_refresh: Duration::from_secs(a.jwks_refresh_secs),
            jwks_max_stale: Duration::from_secs(a.jwks_max_stale_secs),
            kid_refetch_cooldown: Duration::from_secs(a.kid_refetch_cooldown_secs),
            provider_timeout: Duration::from_millis(a.provider_timeout_ms),
            shutdown_grace: Duration::from_secs(a.shutdown_grace_secs),
        }
    }
}

impl BrokerConfig {
    /// A broker on a free loopback port with the default timings.
    pub fn local(
        registry_url: String,
        registry_key: SecretString,
        issuers: Vec<String>,
        audience: String,
    ) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            registry_url,
            registry_key,
            trusted_issuers: issuers,
            audience,
            leeway: Duration::from_secs(30),
            registry_timeout: Duration::from_secs(2),
            jwks_timeout: Duration::from_secs(3),
            jwks_refresh: Duration::from_secs(300),
            jwks_max_stale: Duration::from_secs(3600),
            kid_refetch_cooldown: Duration::from_secs(30),
            provider_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_of_the_contract_parses() {
        let cli = Cli::try_parse_from([
            "token-broker",
            "serve",
            "--listen",
            "127.0.0.1:50052",
            "--registry-url",
            "http://127.0.0.1:50051",
            "--registry-key",
            "KEY",
            "--trusted-issuer",
            "https://oidc.vercel.com/acme",
            "--trusted-issuer",
            "https://oidc.vercel.com/globex",
            "--audience",
            "https://vercel.com/acme",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command;
        let config = BrokerConfig::from(args);
        assert_eq!(config.trusted_issuers.len(), 2);
        assert_eq!(config.audience, "https://vercel.com/acme");
    }
}
