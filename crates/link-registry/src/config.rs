//! Command line and environment configuration. Every flag also reads a `LINK_REGISTRY_…`
//! environment variable; `--help` lists both. Tests build [`ServeConfig`] values directly.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use connect_runtime::{LogFormat, tls::ServerTls};
use connect_types::{HostRule, IssuerUrl, UrlPolicy};

pub use crate::operators::OperatorSettings;

/// The Connect link registry: teams, projects, connectors, project links, and the `Authorize`
/// decision the token broker asks for on every token request.
#[derive(Debug, Parser)]
#[command(name = "link-registry", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve gRPC until SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Apply pending migrations and exit.
    Migrate(DatabaseArgs),
    /// Write a consistent copy of a SQLite registry while it serves (PostgreSQL: pg_dump, see
    /// the README). The copy's secrets open with the same key file: keep that apart.
    Backup(BackupArgs),
    /// Put a backup in place of a SQLite registry that does not exist yet (stop nothing: the
    /// target must be new), migrating it to this version.
    Restore(RestoreArgs),
    /// Manage teams.
    #[command(subcommand)]
    Teams(TeamsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage role bindings: what people signed in with an operator issuer may do.
    #[command(subcommand)]
    Bindings(BindingsCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The master key secrets are sealed with.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// The keys brokers sign Connect's own tokens with (Connect as an OIDC issuer).
    #[command(subcommand)]
    SigningKeys(SigningKeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum SigningKeysCommand {
    /// Add a new ES256 key and print its kid. Brokers publish it as soon as they next fetch the
    /// keys and sign with it after their `--signing-key-publish-delay`; older keys stay
    /// published until the tokens they signed have expired.
    Rotate(SigningKeyArgs),
    /// Print every key: kid, algorithm, when it was added (oldest first).
    List(SigningKeyArgs),
}

#[derive(Clone, Debug, Args)]
pub struct SigningKeyArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The master key (for SQLite, defaults to `<database file>.key`).
    #[arg(long, env = "LINK_REGISTRY_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Re-seal every secret (connectors, installations, grants, consents under way, refresh
    /// tokens waiting for revocation) under a new key, in one transaction: a failure midway
    /// changes nothing. Stop the registries first; start them again with the new key file.
    RotateKey(RotateKeyArgs),
}

#[derive(Clone, Debug, Args)]
pub struct RotateKeyArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The key the secrets are sealed with now (for SQLite, defaults to `<database file>.key`).
    #[arg(long, env = "LINK_REGISTRY_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// The new key: 32 bytes, base64 (`head -c 32 /dev/urandom | base64`); created with mode
    /// 0600 when the file does not exist.
    #[arg(long)]
    pub new_secret_key_file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the events of a time window as JSON lines (oldest first), to archive them before
    /// `--audit-retention` deletes them.
    Export(AuditExportArgs),
    /// Recompute the audit log's hash chain: exits 0 when it is whole (printing the newest hash,
    /// worth recording elsewhere), non-zero naming the first event that was edited, removed or
    /// inserted.
    Verify(DatabaseArgs),
}

#[derive(Clone, Debug, Args)]
pub struct AuditExportArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only this team's events (default: every team's, and the broker-key events of none).
    #[arg(long, env = "LINK_REGISTRY_AUDIT_TEAM")]
    pub team: Option<String>,
    /// The window's start (RFC 3339, e.g. `2026-01-01T00:00:00Z`), included.
    #[arg(long)]
    pub since: String,
    /// The window's end (RFC 3339), excluded (default: now).
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TeamsCommand {
    /// Register a team and the one OIDC issuer it trusts.
    Create(TeamCreateArgs),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it, alone, on stdout. Only its SHA-256 is stored.
    Create(KeyCreateArgs),
    /// Print one line per key: id, team, role, created, expires, last used, state. Never a key.
    List(KeyListArgs),
    /// Revoke a key: running servers refuse it within seconds.
    Revoke(KeyRevokeArgs),
}

#[derive(Clone, Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Where to write the copy (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Clone, Debug, Args)]
pub struct RestoreArgs {
    /// The backup to restore.
    #[arg(long)]
    pub from: PathBuf,
    /// The SQLite database to create from it (its file must not exist).
    #[arg(long, env = "LINK_REGISTRY_DATABASE_URL")]
    pub database_url: String,
}

#[derive(Debug, Subcommand)]
pub enum BindingsCommand {
    /// Bind a subject (`--subject`, the ID token's `sub`) or a group (`--group`, a value of its
    /// `groups` claim) of an operator issuer to a role in a team; prints the binding's id.
    Create(BindingCreateArgs),
    /// Print one line per binding of a team: id, issuer, subject or group, role, created.
    List(BindingListArgs),
    /// Delete a binding: running registries stop honouring it within seconds.
    Delete(BindingDeleteArgs),
}

#[derive(Clone, Debug, Args)]
pub struct BindingCreateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[arg(long)]
    pub team: String,
    /// The operator issuer (as its ID tokens' `iss`).
    #[arg(long)]
    pub issuer: String,
    /// The person's `sub`.
    #[arg(long, conflicts_with = "group", required_unless_present = "group")]
    pub subject: Option<String>,
    /// A value of the `groups` claim.
    #[arg(long)]
    pub group: Option<String>,
    /// `admin` or `viewer`.
    #[arg(long)]
    pub role: String,
}

#[derive(Clone, Debug, Args)]
pub struct BindingListArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[arg(long)]
    pub team: String,
}

#[derive(Clone, Debug, Args)]
pub struct BindingDeleteArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[arg(long)]
    pub team: String,
    /// The binding's id (`rb_…`).
    #[arg(long)]
    pub id: String,
}

#[derive(Clone, Debug, Args)]
pub struct KeyListArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only this team's keys (broker keys belong to no team).
    #[arg(long, env = "LINK_REGISTRY_KEY_TEAM")]
    pub team: Option<String>,
}

#[derive(Clone, Debug, Args)]
pub struct KeyRevokeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The key's id (`key_…`, as `keys list` shows it).
    #[arg(long)]
    pub id: String,
}

#[derive(Clone, Debug, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://PATH?mode=rwc` (a file, created if missing) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
    #[arg(
        long,
        env = "LINK_REGISTRY_DATABASE_URL",
        default_value = "sqlite://registry.db?mode=rwc",
        hide_env_values = true
    )]
    pub database_url: String,
}

#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Address to serve gRPC on (port 0 picks a free port).
    #[arg(long, env = "LINK_REGISTRY_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// File holding the 32-byte AES-256-GCM key (base64) that seals connector secrets. Required
    /// for PostgreSQL. For a SQLite file it defaults to `<database file>.key`, generated on first
    /// start; keep it with the database, since secrets cannot be read back without it.
    #[arg(long, env = "LINK_REGISTRY_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,

    /// How long in-flight calls may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "LINK_REGISTRY_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Largest accepted request message, in bytes.
    #[arg(long, env = "LINK_REGISTRY_MAX_REQUEST_BYTES", default_value_t = 256 * 1024)]
    pub max_request_bytes: usize,

    /// Delete audit events older than this, e.g. `400d` (checked at start and every ten
    /// minutes, in small batches); off by default. `link-registry audit export` archives first.
    #[arg(long, env = "LINK_REGISTRY_AUDIT_RETENTION")]
    pub audit_retention: Option<humantime::Duration>,

    /// How long `RevokeTokens` waits for brokers to report what the providers answered, e.g.
    /// `3s`; credentials no broker reported on by then count as `provider_skipped`.
    #[arg(long, env = "LINK_REGISTRY_REVOCATION_WAIT", default_value = "3s")]
    pub revocation_wait: humantime::Duration,

    /// Most requests served at once; further ones are refused at once with RESOURCE_EXHAUSTED
    /// instead of queueing.
    #[arg(long, env = "LINK_REGISTRY_MAX_CONCURRENT_REQUESTS", default_value_t = 1024,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent_requests: u64,

    /// A call whose request has not fully arrived this long after its headers is ended with
    /// DEADLINE_EXCEEDED, so that callers who send headers and then nothing cannot hold the
    /// server's slots (server reflection, a bidirectional stream, is exempt).
    #[arg(long, env = "LINK_REGISTRY_REQUEST_READ_TIMEOUT_MS", default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub request_read_timeout_ms: u64,

    /// Most calls one HTTP/2 connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS):
    /// a few connections cannot take every slot of --max-concurrent-requests.
    #[arg(long, env = "LINK_REGISTRY_MAX_STREAMS_PER_CONNECTION", default_value_t = 200,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,

    /// PEM certificate (chain) to serve gRPC over TLS; without it the server speaks plaintext
    /// h2c.
    #[arg(long, env = "LINK_REGISTRY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "LINK_REGISTRY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA whose client certificates are required (mTLS): callers without one are refused
    /// during the handshake.
    #[arg(long, env = "LINK_REGISTRY_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Serve Prometheus metrics on `http://ADDR/metrics`.
    #[arg(long, env = "LINK_REGISTRY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Accept connector URLs on loopback addresses, over plain http too. For development stacks
    /// and tests only: every other loopback, private, link-local or metadata destination stays
    /// refused.
    #[arg(long, env = "LINK_REGISTRY_ALLOW_INSECURE_LOOPBACK")]
    pub allow_insecure_loopback: bool,

    /// An internal provider host the operator trusts in connector URLs: a host name, an address
    /// or a CIDR network. Repeat the flag (or separate with commas in the variable) for several.
    #[arg(long, env = "LINK_REGISTRY_ALLOW_PROVIDER_HOST", value_delimiter = ',')]
    pub allow_provider_host: Vec<HostRule>,

    /// An OIDC issuer whose ID tokens people may present instead of an API key (what they may do
    /// comes from role bindings). Repeat (or separate with commas) for several.
    #[arg(
        long,
        env = "LINK_REGISTRY_OPERATOR_ISSUER",
        value_delimiter = ',',
        requires = "operator_audience",
        value_parser = issuer_url
    )]
    pub operator_issuer: Vec<IssuerUrl>,

    /// An audience operator ID tokens may carry: the client id people sign in with (the CLI's,
    /// the console's). Repeat (or separate with commas) for several.
    #[arg(long, env = "LINK_REGISTRY_OPERATOR_AUDIENCE", value_delimiter = ',')]
    pub operator_audience: Vec<String>,
}

#[derive(Clone, Debug, Args)]
pub struct TeamCreateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The team id: the `owner_id` claim of its tokens, e.g. `team_a1b2`.
    #[arg(long, env = "LINK_REGISTRY_TEAM_ID")]
    pub id: String,
    /// A short URL-safe name, e.g. `acme`.
    #[arg(long, env = "LINK_REGISTRY_TEAM_SLUG")]
    pub slug: String,
    /// The OIDC issuer the team's tokens come from, e.g. `https://oidc.vercel.com/acme`.
    #[arg(long, env = "LINK_REGISTRY_TEAM_ISSUER")]
    pub issuer: String,
    /// Succeed without change when the team id or slug is already taken (for setup scripts).
    #[arg(long)]
    pub if_not_exists: bool,
}

#[derive(Clone, Debug, Args)]
pub struct KeyCreateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The team an `admin` or `viewer` key belongs to. For a `broker` key, the teams it may
    /// serve (repeat the flag, or separate with commas); omitted, it serves every team.
    #[arg(
        long = "team",
        env = "LINK_REGISTRY_KEY_TEAM",
        value_delimiter = ',',
        value_name = "TEAM"
    )]
    pub teams: Vec<String>,
    /// `admin` (read and write one team), `viewer` (read one team) or `broker` (the runtime API).
    #[arg(long, env = "LINK_REGISTRY_KEY_ROLE")]
    pub role: String,
    /// Make the key expire after this long, e.g. `30d`, `12h` or `90m` (default: never).
    #[arg(long, env = "LINK_REGISTRY_KEY_EXPIRES_IN")]
    pub expires_in: Option<humantime::Duration>,
}

#[derive(Clone, Debug, Args)]
pub struct LogArgs {
    /// Log line format. Levels come from `RUST_LOG` (default `info`).
    #[arg(
        long,
        global = true,
        env = "LINK_REGISTRY_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,

    /// Export OpenTelemetry spans over OTLP/gRPC to this collector, e.g.
    /// `http://127.0.0.1:4317` (default: no export; a caller's `traceparent` still reaches the
    /// log lines).
    #[arg(long, global = true, env = "LINK_REGISTRY_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Everything `serve` needs, as tests build it.
#[derive(Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub database_url: String,
    pub secret_key_file: Option<PathBuf>,
    pub shutdown_grace: Duration,
    pub max_request_bytes: usize,
    pub max_concurrent_requests: usize,
    pub request_read_timeout: Duration,
    pub max_streams_per_connection: u32,
    /// Serve over TLS; `None`: plaintext h2c.
    pub tls: Option<ServerTls>,
    /// Which connector URLs are accepted.
    pub url_policy: UrlPolicy,
    /// Where to serve Prometheus metrics; `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// How long `RevokeTokens` waits for brokers' reports.
    pub revocation_wait: Duration,
    /// Audit events older than this are deleted; `None`: kept.
    pub audit_retention: Option<Duration>,
    /// The operator issuers people sign in with; `None`: API keys only.
    pub operators: Option<OperatorSettings>,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("secret_key_file", &self.secret_key_file)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("tls", &self.tls)
            .field("url_policy", &self.url_policy)
            .field("metrics_listen", &self.metrics_listen)
            .field("revocation_wait", &self.revocation_wait)
            .field("audit_retention", &self.audit_retention)
            .field("operators", &self.operators)
            .finish()
    }
}

impl From<ServeArgs> for ServeConfig {
    fn from(args: ServeArgs) -> Self {
        Self {
            listen: args.listen,
            database_url: args.database.database_url,
            secret_key_file: args.secret_key_file,
            shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
            max_request_bytes: args.max_request_bytes,
            max_concurrent_requests: usize::try_from(args.max_concurrent_requests)
                .unwrap_or(usize::MAX),
            request_read_timeout: Duration::from_millis(args.request_read_timeout_ms),
            max_streams_per_connection: args.max_streams_per_connection,
            tls: args
                .tls_cert
                .zip(args.tls_key)
                .map(|(cert, key)| ServerTls {
                    cert,
                    key,
                    client_ca: args.tls_client_ca,
                }),
            operators: (!args.operator_issuer.is_empty()).then(|| OperatorSettings {
                issuers: args.operator_issuer,
                audiences: args.operator_audience,
                leeway: Duration::from_secs(30),
                policy: UrlPolicy {
                    allow_insecure_loopback: args.allow_insecure_loopback,
                    allowed_hosts: Vec::new(),
                },
                fetch_timeout: Duration::from_secs(3),
            }),
            url_policy: UrlPolicy {
                allow_insecure_loopback: args.allow_insecure_loopback,
                allowed_hosts: args.allow_provider_host,
            },
            metrics_listen: args.metrics_listen,
            revocation_wait: args.revocation_wait.into(),
            audit_retention: args.audit_retention.map(Into::into),
        }
    }
}

impl ServeConfig {
    /// Serves `database_url` on a free loopback port, with defaults for everything else, accepting
    /// loopback connector URLs (as a development stack or a test needs).
    pub fn local(database_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.into(),
            secret_key_file: None,
            shutdown_grace: Duration::from_secs(30),
            max_request_bytes: 256 * 1024,
            max_concurrent_requests: 1024,
            request_read_timeout: Duration::from_secs(5),
            max_streams_per_connection: 200,
            tls: None,
            url_policy: UrlPolicy::loopback(),
            metrics_listen: None,
            revocation_wait: crate::domain::service::DEFAULT_REVOCATION_WAIT,
            audit_retention: None,
            operators: None,
        }
    }
}

fn issuer_url(value: &str) -> Result<IssuerUrl, String> {
    IssuerUrl::parse(value).map_err(|e| e.to_string())
}

/// The file path of a SQLite URL (`None` for in-memory databases and other backends).
pub fn sqlite_path(database_url: &str) -> Option<PathBuf> {
    let rest = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    let in_memory = path.is_empty() || path == ":memory:" || rest.contains("mode=memory");
    (!in_memory).then(|| PathBuf::from(path))
}

/// The URL with any password replaced, for log lines.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***{}", &url[..scheme_end], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_come_from_the_url() {
        assert_eq!(
            sqlite_path("sqlite://registry.db?mode=rwc"),
            Some("registry.db".into())
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/r.db"),
            Some("/var/lib/r.db".into())
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("sqlite://x.db?mode=memory"), None);
        assert_eq!(sqlite_path("postgres://u@h/db"), None);
    }

    #[test]
    fn debug_output_of_the_config_hides_the_database_password() {
        let config = ServeConfig::local("postgres://u:hunter2@db/connect");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("sqlite://registry.db?mode=rwc"),
            "sqlite://registry.db?mode=rwc"
        );
    }

    #[test]
    fn the_command_line_of_the_contract_parses() {
        let cli = Cli::try_parse_from([
            "link-registry",
            "serve",
            "--listen",
            "127.0.0.1:50051",
            "--database-url",
            "sqlite://registry.db?mode=rwc",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Serve(_)));
        let cli = Cli::try_parse_from([
            "link-registry",
            "serve",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        let tls = ServeConfig::from(args).tls.unwrap();
        assert_eq!(
            tls.client_ca.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
        assert!(Cli::try_parse_from(["link-registry", "serve", "--tls-cert", "c.pem"]).is_err());
        assert!(
            Cli::try_parse_from(["link-registry", "serve", "--tls-client-ca", "ca.pem"]).is_err()
        );
        let cli = Cli::try_parse_from([
            "link-registry",
            "teams",
            "create",
            "--database-url",
            "sqlite://x.db",
            "--id",
            "team_a1b2",
            "--slug",
            "acme",
            "--issuer",
            "https://oidc.vercel.com/acme",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Teams(TeamsCommand::Create(_))
        ));
        let cli = Cli::try_parse_from([
            "link-registry",
            "keys",
            "create",
            "--database-url",
            "sqlite://x.db",
            "--role",
            "broker",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Keys(KeysCommand::Create(_))));
    }

    #[test]
    fn the_key_lifecycle_commands_parse() {
        let cli = Cli::try_parse_from([
            "link-registry",
            "keys",
            "create",
            "--team",
            "team_a",
            "--role",
            "admin",
            "--expires-in",
            "30d",
        ])
        .unwrap();
        let Command::Keys(KeysCommand::Create(args)) = cli.command else {
            panic!("not keys create");
        };
        assert_eq!(
            *args.expires_in.unwrap(),
            Duration::from_secs(30 * 24 * 3600)
        );
        assert!(Cli::try_parse_from(["link-registry", "keys", "list", "--team", "team_a"]).is_ok());
        assert!(Cli::try_parse_from(["link-registry", "keys", "revoke", "--id", "key_1"]).is_ok());
        assert!(Cli::try_parse_from(["link-registry", "keys", "revoke"]).is_err());
        assert!(
            Cli::try_parse_from([
                "link-registry",
                "keys",
                "create",
                "--role",
                "broker",
                "--expires-in",
                "soon"
            ])
            .is_err()
        );
    }
}
