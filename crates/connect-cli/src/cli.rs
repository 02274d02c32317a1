//! The command line, as clap reads it. Every global flag also reads a `CONNECT_…` variable
//! ([`GLOBAL_VARIABLES`]): read into the flag's default rather than with clap's `env`, which would
//! count a variable as a given flag and print it in every usage line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Connect: short-lived provider credentials for deployments, without long-lived secrets in
/// them. Admin commands speak to the link registry with an API key; `token` speaks to the token
/// broker with the deployment's OIDC token.
#[derive(Debug, Parser)]
#[command(name = "connect", version)]
pub struct Cli {
    /// The link registry's gRPC URL [env: CONNECT_REGISTRY_URL].
    #[arg(long, global = true, default_value = "http://127.0.0.1:50051")]
    pub registry: String,

    /// The token broker's gRPC URL [env: CONNECT_BROKER_URL].
    #[arg(long, global = true, default_value = "http://127.0.0.1:50052")]
    pub broker: String,

    /// A registry API key (admin for changes, viewer for reading) [env: CONNECT_API_KEY].
    /// Without one, the login of `connect login` is used.
    #[arg(long, global = true, hide_default_value = true)]
    pub api_key: Option<String>,

    /// The team to act in, for a person bound in several [env: CONNECT_TEAM].
    #[arg(long, global = true)]
    pub team: Option<String>,

    /// PEM CA to trust for `https://` URLs (default: the system's roots) [env: CONNECT_CA].
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,

    /// Output: aligned text for people, or JSON (proto JSON field names) for programs
    /// [env: CONNECT_FORMAT].
    #[arg(short = 'F', long, global = true, value_enum, default_value_t)]
    pub format: Format,

    #[command(subcommand)]
    pub command: Command,
}

/// The global flags and the variables they read.
pub const GLOBAL_VARIABLES: [(&str, &str); 6] = [
    ("registry", "CONNECT_REGISTRY_URL"),
    ("broker", "CONNECT_BROKER_URL"),
    ("api_key", "CONNECT_API_KEY"),
    ("team", "CONNECT_TEAM"),
    ("ca", "CONNECT_CA"),
    ("format", "CONNECT_FORMAT"),
];

impl Cli {
    /// The command line with the global flags' variables as their defaults (a flag given on
    /// the command line still wins).
    pub fn command_with_variables() -> clap::Command {
        use clap::CommandFactory;
        let mut command = Self::command();
        for (id, variable) in GLOBAL_VARIABLES {
            let Some(value) = std::env::var(variable).ok().filter(|v| !v.is_empty()) else {
                continue;
            };
            // Once per process: the command line lives as long as it.
            let value: &'static str = Box::leak(value.into_boxed_str());
            command = command.mut_arg(id, |arg| arg.default_value(value));
        }
        command
    }

    /// Parses the process's arguments (exiting on a usage error, status 2).
    pub fn parse_with_variables() -> Self {
        use clap::FromArgMatches;
        let matches = Self::command_with_variables().get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

fn parse_time(value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{value:?} is not an RFC 3339 time ({e}), e.g. 2026-12-11T18:00:00Z"))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a connector, e.g. `connect create api-key/stripe --secret api_key=@key.txt`.
    Create {
        /// `<type>/<name>`, e.g. `oauth2/crm`.
        connector: String,
        /// Display name (default: the name part of the uid).
        #[arg(long)]
        name: Option<String>,
        /// A config value; repeat for several.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// A secret: `KEY=VALUE`, `KEY=@FILE` (read from a file) or `KEY=@-` (read from stdin), so
        /// that it need not sit in shell history. Repeat for several.
        #[arg(long = "secret", value_name = "KEY=VALUE|KEY=@FILE|KEY=@-")]
        secrets: Vec<String>,
    },
    /// List the team's connectors.
    List {
        /// Only those linked to this project.
        #[arg(long)]
        project: Option<String>,
        /// Only those of this type.
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
    },
    /// Manage projects.
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Manage a project's custom environments (beside production, preview and development).
    #[command(subcommand)]
    Envs(EnvsCommand),
    /// Link a connector to a project for some environments (default: all three). The link's
    /// environments become exactly the ones given: list every environment it should keep
    /// (`connect links <CONNECTOR>` shows them); the output names any it removed.
    Attach {
        /// The connector, by uid (`api-key/stripe`) or id.
        connector: String,
        /// The project, by id (`prj_…`) or name.
        #[arg(long)]
        project: String,
        /// `production`, `preview`, `development`, or a custom environment's slug or id; repeat
        /// or separate with commas. Replaces the link's set.
        #[arg(short = 'e', long = "environment", value_delimiter = ',')]
        environments: Vec<String>,
        /// The link stops authorizing after this long (`8h`, `90m`, `3d`): LinkExpiredError.
        /// Without `--for` or `--until` the link does not expire (attaching again without them
        /// makes a time-boxed link permanent).
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "until")]
        for_: Option<std::time::Duration>,
        /// The link stops authorizing at this time (RFC 3339, e.g. `2026-12-11T18:00:00Z`).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        #[command(flatten)]
        limits: LinkLimits,
    },
    /// Why a deployment of a project in an environment would (not) get a connector's token:
    /// each check of the registry's decision, what it found and, for the failing one, the fix.
    Explain {
        /// The connector, by uid or id.
        connector: String,
        /// The project, by id or name.
        #[arg(long)]
        project: String,
        /// `production`, `preview`, `development`, or a custom environment's slug or id.
        #[arg(short = 'e', long = "environment")]
        environment: String,
        /// `app`, or `user:ID`.
        #[arg(long, default_value = "app")]
        subject: String,
        #[arg(long)]
        installation_id: Option<String>,
        /// Scopes the token would be asked for, separated by commas.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Resources the token would be narrowed to, separated by commas.
        #[arg(long, value_delimiter = ',')]
        resources: Vec<String>,
    },
    /// Remove a connector's link to a project.
    Detach {
        /// The connector, by uid or id.
        connector: String,
        /// The project, by id or name.
        #[arg(long)]
        project: String,
    },
    /// The projects a connector is linked to, and for which environments; without a connector,
    /// every link of the team.
    Links {
        /// The connector, by uid or id.
        connector: Option<String>,
        /// Only links with no credential issued for at least this long (`30d`, `12h`); a link
        /// never used counts from when it was first attached.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        unused_for: Option<std::time::Duration>,
    },
    /// Delete a connector; refused while it is linked unless `--disconnect-all`.
    Remove {
        /// The connector, by uid or id.
        connector: String,
        /// Delete its links too.
        #[arg(long)]
        disconnect_all: bool,
    },
    /// Get a token from the broker with the OIDC token of `CONNECT_OIDC_TOKEN` or
    /// `VERCEL_OIDC_TOKEN` (or the file `CONNECT_OIDC_TOKEN_FILE`); prints the token alone.
    Token {
        /// The connector, by uid or id.
        connector: String,
        /// `app`, or `user:ID`.
        #[arg(long, default_value = "app")]
        subject: String,
        #[arg(long)]
        installation_id: Option<String>,
        /// Scopes, separated by commas (for `github`: permissions, e.g. `contents:read`).
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Resources to narrow the token to, separated by commas (for `github`: repositories).
        #[arg(long, value_delimiter = ',')]
        resources: Vec<String>,
    },
    /// Print the base URL of a connector's requests through the broker's credential-injecting
    /// proxy: append the provider API's path and send the deployment's OIDC token as
    /// `Authorization: Bearer`.
    ProxyUrl {
        /// The connector, by uid or id.
        connector: String,
        /// The proxy (a broker's --proxy-listen address, as the service reaches it).
        #[arg(long, env = "CONNECT_PROXY_URL")]
        proxy: Option<String>,
    },
    /// Manage a connector's installations: tenants inside it, such as a GitHub App installation.
    #[command(subcommand)]
    Installations(InstallationsCommand),
    /// Revoke the credentials a connector issued (all, or one subject's or installation's): the
    /// brokers drop their copies and revoke them at the provider where the type can.
    RevokeTokens {
        /// The connector, by uid or id.
        connector: String,
        /// Only this subject's: `app` or `user:ID`.
        #[arg(long)]
        subject: Option<String>,
        /// Only this installation's.
        #[arg(long)]
        installation_id: Option<String>,
    },
    /// Stop a connector from issuing anything (deployments get ConnectorSuspendedError).
    Suspend {
        /// The connector, by uid or id.
        connector: String,
    },
    /// Let a suspended connector issue again.
    Resume {
        /// The connector, by uid or id.
        connector: String,
    },
    /// The connector types the registry knows and what each can do: subjects, installations,
    /// resources, revocation, and the config and secret keys it reads (`?`: optional).
    Types,
    /// Who the registry takes you for (the API key or the login in use), and where you may act.
    Whoami,
    /// Sign in with the company's identity provider (authorization code with PKCE, a loopback
    /// redirect): the ID token is kept in the config directory ($CONNECT_CONFIG_DIR, default
    /// ~/.config/connect, mode 0600), refreshed as it expires, and used when no API key is given.
    Login {
        /// The identity provider (its issuer URL) [env: CONNECT_LOGIN_ISSUER]; default: the one
        /// of the stored login.
        #[arg(long, env = "CONNECT_LOGIN_ISSUER")]
        issuer: Option<String>,
        /// The client id the registry accepts as audience [env: CONNECT_LOGIN_CLIENT_ID].
        #[arg(long, env = "CONNECT_LOGIN_CLIENT_ID", default_value = "connect-cli")]
        client_id: String,
        /// Print the URL to open instead of opening a browser.
        #[arg(long)]
        no_browser: bool,
    },
    /// Forget the stored login.
    Logout,
    /// The team's audit log, newest first.
    Audit {
        /// How many events.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// The credentials handed out (the issuance ledger), newest first.
    Issuances {
        /// Only this connector's.
        connector: Option<String>,
        /// Only this project's (an id or name).
        #[arg(long)]
        project: Option<String>,
        /// Only this environment's.
        #[arg(long)]
        environment: Option<String>,
        /// How many at most.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Users' grants and their state (`needs_consent`: the user must authorize again).
    Grants {
        /// Only this connector's.
        connector: Option<String>,
        /// Only this project's own grants (a project id).
        #[arg(long)]
        project: Option<String>,
        /// Only this user's (the application's user id).
        #[arg(long)]
        user: Option<String>,
        /// Only this environment's.
        #[arg(long)]
        environment: Option<String>,
        /// How many at most.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Register a project by the id its OIDC tokens carry as `project_id`.
    Create {
        /// The project's id, as deployment tokens carry it (`project_id`), e.g. `prj_web`.
        id: String,
        /// A name people know it by.
        #[arg(long)]
        name: String,
    },
    /// List the team's projects.
    List,
}

#[derive(Debug, Subcommand)]
pub enum EnvsCommand {
    /// Create a custom environment; links and deployment tokens name it by slug or id.
    Create {
        /// Lower-case letters, digits and `-`, not a built-in environment's name.
        slug: String,
        /// The project, by id or name.
        #[arg(long)]
        project: String,
        /// Display name (default: the slug).
        #[arg(long)]
        name: Option<String>,
    },
    /// List a project's custom environments.
    List {
        #[arg(long)]
        project: String,
    },
    /// Give an environment a new slug (and name); links keep it (they store its id), tokens
    /// naming the old slug no longer match.
    Rename {
        /// The environment, by slug or id.
        environment: String,
        /// The new slug.
        slug: String,
        #[arg(long)]
        project: String,
        /// A new display name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete an environment: it is taken out of every link, and links left with none are
    /// removed (the output names them).
    Remove {
        /// The environment, by slug or id.
        environment: String,
        #[arg(long)]
        project: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum InstallationsCommand {
    /// Register an installation, e.g. `connect installations add github/acme-app 1001 --default`.
    Add {
        /// The connector, by uid or id.
        connector: String,
        /// The provider's id for it (for `github`: the installation number).
        installation_id: String,
        /// Display name (default: the id).
        #[arg(long)]
        name: Option<String>,
        /// A config value that adds to the connector's; repeat for several.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// A secret of this installation: `KEY=VALUE`, `KEY=@FILE` or `KEY=@-`.
        #[arg(long = "secret", value_name = "KEY=VALUE|KEY=@FILE|KEY=@-")]
        secrets: Vec<String>,
        /// Make it the connector's default installation.
        #[arg(long)]
        default: bool,
    },
    /// List a connector's installations.
    List {
        /// The connector, by uid or id.
        connector: String,
    },
    /// Remove an installation and revoke the credentials issued for it.
    Remove {
        /// The connector, by uid or id.
        connector: String,
        /// The installation's id.
        installation_id: String,
    },
}

/// A link's ceilings and quota (`connect attach`). Each replaces what the link had: an attach
/// without them leaves the link without ceilings or quota.
#[derive(Args, Debug, Default, Clone)]
pub struct LinkLimits {
    /// The only scopes tokens may carry, separated by commas (`github`: permissions such as
    /// `contents:read`); a request naming none gets these. ScopeNotAllowedError beyond them.
    #[arg(long, value_delimiter = ',', value_name = "SCOPES")]
    pub scopes: Vec<String>,
    /// The only resources tokens may be narrowed to (`github`: repositories), separated by
    /// commas; a request naming none is narrowed to these.
    #[arg(long, value_delimiter = ',', value_name = "RESOURCES")]
    pub resources: Vec<String>,
    /// The only installations tokens may be for, separated by commas.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub installations: Vec<String>,
    /// The only subject kinds tokens may be asked for: `app`, `user`, `jwt_bearer`, `token`.
    #[arg(long, value_delimiter = ',', value_name = "KINDS")]
    pub subjects: Vec<String>,
    /// At most this many credentials newly obtained for the link in any hour, across every
    /// broker (cached ones are still handed out): QuotaExceededError beyond it. 0: no quota.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_issuances_per_hour: u32,
}
