//! Command line and environment configuration. Every flag also reads a `TOKEN_BROKER_…`
//! environment variable; `--help` lists both. Tests build [`BrokerConfig`] values directly.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use connect_runtime::{
    LogFormat,
    tls::{ClientTls, ServerTls},
};
use connect_types::{HostRule, IssuerUrl, UrlPolicy};
use secrecy::SecretString;

use crate::outbound::OutboundSettings;

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

    /// Export OpenTelemetry spans over OTLP/gRPC to this collector, e.g.
    /// `http://127.0.0.1:4317` (default: no export; a caller's `traceparent` still reaches the
    /// log lines and the registry).
    #[arg(long, global = true, env = "TOKEN_BROKER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
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
        value_delimiter = ',',
        value_parser = IssuerUrl::parse
    )]
    pub trusted_issuer: Vec<IssuerUrl>,

    /// The `aud` every token must carry.
    #[arg(long, env = "TOKEN_BROKER_AUDIENCE")]
    pub audience: String,

    /// Allowed clock skew for `exp`, `nbf` and `iat`, in seconds (at most 300).
    #[arg(long, env = "TOKEN_BROKER_LEEWAY_SECS", default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(0..=MAX_LEEWAY_SECS))]
    pub leeway_secs: u64,

    /// Refuse tokens issued (`iat`) longer ago than this many seconds, whatever their `exp`.
    /// Unset: only `exp` limits a token's age.
    #[arg(long, env = "TOKEN_BROKER_MAX_TOKEN_AGE_SECS",
        value_parser = clap::value_parser!(u64).range(1..))]
    pub max_token_age_secs: Option<u64>,

    /// Longest wait for the registry's answer, in milliseconds (less when the caller's deadline
    /// is nearer).
    #[arg(long, env = "TOKEN_BROKER_REGISTRY_TIMEOUT_MS", default_value_t = 2000)]
    pub registry_timeout_ms: u64,

    /// Most registry answers (yes and no) kept in the broker's authorization cache, which the
    /// registry's change feed keeps exact. 0 turns the cache off: every call asks the registry.
    #[arg(long, env = "TOKEN_BROKER_AUTHZ_CACHE_SIZE", default_value_t = 100_000)]
    pub authz_cache_size: u64,

    /// While the change feed is silent (disconnected, or no heartbeat), a cached answer is used
    /// only this many milliseconds after it was fetched.
    #[arg(
        long,
        env = "TOKEN_BROKER_AUTHZ_MAX_STALENESS_MS",
        default_value_t = 5000
    )]
    pub authz_max_staleness_ms: u64,

    /// Most verified deployment tokens whose identity is kept (by the token's SHA-256), so a
    /// repeated token is not verified again. 0 verifies every call.
    #[arg(
        long,
        env = "TOKEN_BROKER_VERIFIED_TOKEN_CACHE_SIZE",
        default_value_t = 100_000
    )]
    pub verified_token_cache_size: u64,

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

    /// Longest time a provider token is served from the cache, in seconds, however long the
    /// provider says it lives.
    #[arg(
        long,
        env = "TOKEN_BROKER_PROVIDER_CACHE_MAX_SECS",
        default_value_t = 3600
    )]
    pub provider_cache_max_secs: u64,

    /// How long a broker may take to refresh a user's grant before another broker may take the
    /// refresh over, in milliseconds (at most 120 000; longer than the provider timeout).
    #[arg(long, env = "TOKEN_BROKER_GRANT_LEASE_MS", default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub grant_lease_ms: u64,

    /// Serve the OAuth consent callbacks (`/oauth/callback/{connector id}`, plain HTTP; put TLS in
    /// front) on this address; without it, `StartAuthorization` is refused.
    #[arg(long, env = "TOKEN_BROKER_CALLBACK_LISTEN")]
    pub callback_listen: Option<SocketAddr>,

    /// The public base URL of the callback as browsers and providers reach it, e.g.
    /// `https://connect.example.com` (a connector's redirect URI is this plus
    /// `/oauth/callback/{connector id}`): `https://`, or loopback `http://` under
    /// `--allow-insecure-loopback`. Defaults to `http://` and the callback address.
    #[arg(long, env = "TOKEN_BROKER_PUBLIC_URL")]
    pub public_url: Option<url::Url>,

    /// Serve Connect's OIDC issuer (`/.well-known/openid-configuration` and its JWKS, plain
    /// HTTP; put TLS in front) on this address: the keys the tokens Connect mints are signed with.
    #[arg(long, env = "TOKEN_BROKER_ISSUER_LISTEN")]
    pub issuer_listen: Option<SocketAddr>,

    /// The issuer's public URL (the `iss` of minted tokens; discovery is under it): `https://`,
    /// or loopback `http://`. Defaults to `http://` and the issuer address.
    #[arg(long, env = "TOKEN_BROKER_ISSUER_URL")]
    pub issuer_url: Option<url::Url>,

    /// How long a new signing key is published before it signs (`10m`, `90s`): longer than the
    /// JWKS cache lifetime of 300 s plus --signing-keys-refresh-secs, so verifiers have it first.
    #[arg(long, env = "TOKEN_BROKER_SIGNING_KEY_PUBLISH_DELAY", default_value = "10m",
        value_parser = humantime::parse_duration)]
    pub signing_key_publish_delay: Duration,

    /// How often the signing keys are fetched from the registry.
    #[arg(long, env = "TOKEN_BROKER_SIGNING_KEYS_REFRESH_SECS", default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub signing_keys_refresh_secs: u64,

    /// Serve the credential-injecting proxy (HTTP/1.1 and h2c; put TLS in front) on this
    /// address: `{proxy}/{connector}/{path}` goes to the connector's `proxy_base_url` + `/{path}`
    /// with the credential injected, authorized by the caller's deployment token as `GetToken`.
    #[arg(long, env = "TOKEN_BROKER_PROXY_LISTEN")]
    pub proxy_listen: Option<SocketAddr>,

    /// The proxy gives up on an upstream that sends nothing for this long (`60s`, `5m`); nothing
    /// else bounds a proxied request (no body or total-time cap).
    #[arg(long, env = "TOKEN_BROKER_PROXY_READ_TIMEOUT", default_value = "60s",
        value_parser = humantime::parse_duration)]
    pub proxy_read_timeout: Duration,

    /// Most requests served at once; further ones are refused at once with RESOURCE_EXHAUSTED
    /// instead of queueing.
    #[arg(long, env = "TOKEN_BROKER_MAX_CONCURRENT_REQUESTS", default_value_t = 1024,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent_requests: u64,

    /// A call whose request has not fully arrived this long after its headers is ended with
    /// DEADLINE_EXCEEDED, so that callers who send headers and then nothing cannot hold the
    /// server's slots (server reflection, a bidirectional stream, is exempt).
    #[arg(long, env = "TOKEN_BROKER_REQUEST_READ_TIMEOUT_MS", default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub request_read_timeout_ms: u64,

    /// Most calls one HTTP/2 connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS):
    /// a few connections cannot take every slot of --max-concurrent-requests.
    #[arg(long, env = "TOKEN_BROKER_MAX_STREAMS_PER_CONNECTION", default_value_t = 200,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,

    /// Serve Prometheus metrics on `http://ADDR/metrics`.
    #[arg(long, env = "TOKEN_BROKER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// How long in-flight calls may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "TOKEN_BROKER_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// PEM certificate (chain) to serve gRPC over TLS; without it the server speaks plaintext
    /// h2c.
    #[arg(long, env = "TOKEN_BROKER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "TOKEN_BROKER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA whose client certificates are required (mTLS).
    #[arg(long, env = "TOKEN_BROKER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// PEM CA the registry's certificate must chain to (for an `https://` registry URL; the
    /// system's roots without it).
    #[arg(long, env = "TOKEN_BROKER_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,

    /// PEM client certificate presented to an mTLS registry.
    #[arg(
        long,
        env = "TOKEN_BROKER_REGISTRY_CLIENT_CERT",
        requires = "registry_client_key"
    )]
    pub registry_client_cert: Option<PathBuf>,

    /// PEM private key of `--registry-client-cert`.
    #[arg(
        long,
        env = "TOKEN_BROKER_REGISTRY_CLIENT_KEY",
        requires = "registry_client_cert"
    )]
    pub registry_client_key: Option<PathBuf>,

    /// Allow issuers and providers on loopback addresses, over plain http too. For development
    /// stacks and tests only: every other loopback, private, link-local or metadata destination
    /// stays refused.
    #[arg(long, env = "TOKEN_BROKER_ALLOW_INSECURE_LOOPBACK")]
    pub allow_insecure_loopback: bool,

    /// An internal issuer or provider host the operator trusts: a host name (its addresses are
    /// not checked), an address or a CIDR network. Repeat the flag (or separate with commas in
    /// the variable) for several.
    #[arg(long, env = "TOKEN_BROKER_ALLOW_PROVIDER_HOST", value_delimiter = ',')]
    pub allow_provider_host: Vec<HostRule>,

    /// Pin a host name to an address instead of asking DNS, as `HOST=ADDRESS` (repeatable). The
    /// address is checked like a resolved one.
    #[arg(long = "resolve", env = "TOKEN_BROKER_RESOLVE", value_delimiter = ',', value_parser = parse_pin)]
    pub resolve: Vec<(String, IpAddr)>,
}

fn parse_pin(value: &str) -> Result<(String, IpAddr), String> {
    let (host, addr) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?} is not HOST=ADDRESS"))?;
    let addr = addr
        .trim_matches(['[', ']'])
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    if host.is_empty() {
        return Err("the host name must not be empty".into());
    }
    Ok((host.to_ascii_lowercase(), addr))
}

/// The most clock skew the broker will allow, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    pub registry_url: String,
    pub registry_key: SecretString,
    pub trusted_issuers: Vec<IssuerUrl>,
    pub audience: String,
    /// At most [`MAX_LEEWAY_SECS`].
    pub leeway: Duration,
    pub max_token_age: Option<Duration>,
    pub registry_timeout: Duration,
    /// 0: no authorization cache.
    pub authz_cache_size: u64,
    pub authz_max_staleness: Duration,
    /// 0: every call verifies its token.
    pub verified_token_cache_size: u64,
    pub jwks_timeout: Duration,
    pub jwks_refresh: Duration,
    pub jwks_max_stale: Duration,
    pub kid_refetch_cooldown: Duration,
    pub provider_timeout: Duration,
    pub provider_cache_max: Duration,
    /// How long a user grant's refresh lease lasts.
    pub grant_lease: Duration,
    /// Where the consent callback is served; `None`: no consents.
    pub callback_listen: Option<SocketAddr>,
    /// The callback's public base URL; `None`: `http://` and the bound callback address.
    pub public_url: Option<url::Url>,
    /// Where Connect's OIDC issuer is served; `None`: not.
    pub issuer_listen: Option<SocketAddr>,
    /// The issuer's public URL; `None`: `http://` and the bound issuer address.
    pub issuer_url: Option<url::Url>,
    pub signing_key_publish_delay: Duration,
    pub signing_keys_refresh: Duration,
    /// Where the credential-injecting proxy is served; `None`: not.
    pub proxy_listen: Option<SocketAddr>,
    pub proxy_read_timeout: Duration,
    pub max_concurrent_requests: usize,
    pub request_read_timeout: Duration,
    pub max_streams_per_connection: u32,
    /// Where to serve Prometheus metrics; `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    pub shutdown_grace: Duration,
    /// Serve over TLS; `None`: plaintext h2c.
    pub tls: Option<ServerTls>,
    /// How an `https://` registry is reached.
    pub registry_tls: ClientTls,
    /// Where outbound requests (issuers, JWKS, providers) may go.
    pub outbound: OutboundSettings,
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
            max_token_age: a.max_token_age_secs.map(Duration::from_secs),
            registry_timeout: Duration::from_millis(a.registry_timeout_ms),
            authz_cache_size: a.authz_cache_size,
            authz_max_staleness: Duration::from_millis(a.authz_max_staleness_ms),
            verified_token_cache_size: a.verified_token_cache_size,
            jwks_timeout: Duration::from_millis(a.jwks_timeout_ms),
            jwks_refresh: Duration::from_secs(a.jwks_refresh_secs),
            jwks_max_stale: Duration::from_secs(a.jwks_max_stale_secs),
            kid_refetch_cooldown: Duration::from_secs(a.kid_refetch_cooldown_secs),
            provider_timeout: Duration::from_millis(a.provider_timeout_ms),
            provider_cache_max: Duration::from_secs(a.provider_cache_max_secs),
            grant_lease: Duration::from_millis(a.grant_lease_ms),
            callback_listen: a.callback_listen,
            public_url: a.public_url,
            issuer_listen: a.issuer_listen,
            issuer_url: a.issuer_url,
            signing_key_publish_delay: a.signing_key_publish_delay,
            signing_keys_refresh: Duration::from_secs(a.signing_keys_refresh_secs),
            proxy_listen: a.proxy_listen,
            proxy_read_timeout: a.proxy_read_timeout,
            max_concurrent_requests: usize::try_from(a.max_concurrent_requests)
                .unwrap_or(usize::MAX),
            request_read_timeout: Duration::from_millis(a.request_read_timeout_ms),
            max_streams_per_connection: a.max_streams_per_connection,
            metrics_listen: a.metrics_listen,
            shutdown_grace: Duration::from_secs(a.shutdown_grace_secs),
            tls: a.tls_cert.zip(a.tls_key).map(|(cert, key)| ServerTls {
                cert,
                key,
                client_ca: a.tls_client_ca,
            }),
            registry_tls: ClientTls {
                ca: a.registry_ca,
                identity: a.registry_client_cert.zip(a.registry_client_key),
            },
            outbound: OutboundSettings {
                policy: UrlPolicy {
                    allow_insecure_loopback: a.allow_insecure_loopback,
                    allowed_hosts: a.allow_provider_host,
                },
                pinned: a.resolve.into_iter().fold(
                    HashMap::<String, Vec<IpAddr>>::new(),
                    |mut pins, (host, addr)| {
                        pins.entry(host).or_default().push(addr);
                        pins
                    },
                ),
            },
        }
    }
}

impl BrokerConfig {
    /// A broker on a free loopback port with the default timings, allowed to reach loopback
    /// issuers and providers (as a development stack or a test needs).
    pub fn local(
        registry_url: String,
        registry_key: SecretString,
        issuers: Vec<IssuerUrl>,
        audience: String,
    ) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            registry_url,
            registry_key,
            trusted_issuers: issuers,
            audience,
            leeway: Duration::from_secs(30),
            max_token_age: None,
            registry_timeout: Duration::from_secs(2),
            authz_cache_size: 100_000,
            authz_max_staleness: Duration::from_secs(5),
            verified_token_cache_size: 100_000,
            jwks_timeout: Duration::from_secs(3),
            jwks_refresh: Duration::from_secs(300),
            jwks_max_stale: Duration::from_secs(3600),
            kid_refetch_cooldown: Duration::from_secs(30),
            provider_timeout: Duration::from_secs(5),
            provider_cache_max: Duration::from_secs(3600),
            grant_lease: Duration::from_secs(10),
            callback_listen: None,
            public_url: None,
            issuer_listen: None,
            issuer_url: None,
            signing_key_publish_delay: Duration::from_secs(600),
            signing_keys_refresh: Duration::from_secs(60),
            proxy_listen: None,
            proxy_read_timeout: Duration::from_secs(60),
            max_concurrent_requests: 1024,
            request_read_timeout: Duration::from_secs(5),
            max_streams_per_connection: 200,
            metrics_listen: None,
            shutdown_grace: Duration::from_secs(30),
            tls: None,
            registry_tls: ClientTls::default(),
            outbound: OutboundSettings {
                policy: UrlPolicy::loopback(),
                pinned: HashMap::new(),
            },
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
        assert_eq!(config.outbound.policy, UrlPolicy::strict());
        assert_eq!(config.tls, None);
    }

    #[test]
    fn outbound_relaxations_are_explicit_flags() {
        let cli = Cli::try_parse_from([
            "token-broker",
            "serve",
            "--registry-key",
            "KEY",
            "--trusted-issuer",
            "http://127.0.0.1:8080",
            "--audience",
            "aud",
            "--allow-insecure-loopback",
            "--allow-provider-host",
            "idp.internal",
            "--allow-provider-host",
            "10.20.0.0/16",
            "--resolve",
            "Provider.test=10.0.0.1",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command;
        let config = BrokerConfig::from(args);
        assert!(config.outbound.policy.allow_insecure_loopback);
        assert_eq!(config.outbound.policy.allowed_hosts.len(), 2);
        assert_eq!(
            config.outbound.pinned["provider.test"],
            ["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        for bad in [
            ["--trusted-issuer", "ftp://x"],
            ["--allow-provider-host", "not a host!"],
            ["--resolve", "host-without-address"],
            ["--leeway-secs", "301"],
            ["--max-token-age-secs", "0"],
            ["--max-concurrent-requests", "0"],
        ] {
            let mut argv = vec![
                "token-broker",
                "serve",
                "--registry-key",
                "KEY",
                "--audience",
                "aud",
                "--trusted-issuer",
                "https://idp.example",
            ];
            argv.extend(bad);
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }
}
