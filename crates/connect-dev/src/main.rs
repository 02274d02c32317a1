//! `connect-dev`: the whole system on this machine with one command. It starts a development OIDC
//! issuer, the link registry on its embedded SQLite default and the token broker (which reaches
//! the registry over gRPC, as in production), seeds a demo team, project and `api-key` connector
//! linked for `development` only, and prints tokens and `grpcurl` calls to try. A demo OAuth
//! provider and an `oauth2/demo-crm` connector on it show a user's consent end to end.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::Context;
use clap::Parser;
use connect_dev::{DemoClient, DemoProvider, LocalStack};
use dev_issuer::{Alg, Deployment, DevIssuer};
use link_registry::{
    ServeConfig,
    domain::{
        Registry, RegistryError,
        model::Role,
        service::{NewConnector, NewProject, NewTeam},
        types::{
            ConfigMap, ConnectorRef, ConnectorUid, DisplayName, EnvironmentSet, IssuerUrl,
            ProjectId, ProjectName, ProjectRef, SecretInput, TeamId, TeamSlug,
        },
    },
};
use secrecy::{ExposeSecret, SecretString};

/// The keys a run made, kept next to a SQLite database (mode 0600) so that the next run on it
/// reuses them instead of making new ones.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptKeys {
    admin: String,
    broker: String,
}

impl KeptKeys {
    /// Where the keys of `database_url` are kept: beside a SQLite file; nowhere otherwise.
    fn path(database_url: &str) -> Option<std::path::PathBuf> {
        let db = link_registry::config::sqlite_path(database_url)?;
        let mut path = db.into_os_string();
        path.push(".dev-keys");
        Some(path.into())
    }

    fn read(path: &std::path::Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Writes the file whole (a new file renamed over the old one), readable by its owner only.
    fn write(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use std::io::Write;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(&serde_json::to_vec(self)?)?;
        file.persist(path)?;
        Ok(())
    }
}

/// Run the registry, the broker and a dev OIDC issuer locally, seeded with a demo.
#[derive(Debug, Parser)]
#[command(name = "connect-dev", version)]
struct Cli {
    /// The registry's database.
    #[arg(
        long,
        env = "CONNECT_DEV_DATABASE_URL",
        default_value = "sqlite://connect-dev.db?mode=rwc"
    )]
    database_url: String,
    /// Where the link registry serves gRPC.
    #[arg(
        long,
        env = "CONNECT_DEV_REGISTRY_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    registry_listen: SocketAddr,
    /// Where the token broker serves gRPC.
    #[arg(
        long,
        env = "CONNECT_DEV_BROKER_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    broker_listen: SocketAddr,
    /// Where the dev OIDC issuer serves HTTP.
    #[arg(
        long,
        env = "CONNECT_DEV_ISSUER_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    issuer_listen: SocketAddr,
    /// Where the token broker serves the users' consent callbacks (`/oauth/callback/{connector id}`).
    #[arg(
        long,
        env = "CONNECT_DEV_CALLBACK_LISTEN",
        default_value = "127.0.0.1:50053"
    )]
    callback_listen: SocketAddr,
    /// Where the demo OAuth provider (for trying users' consents) serves HTTP.
    #[arg(
        long,
        env = "CONNECT_DEV_PROVIDER_LISTEN",
        default_value = "127.0.0.1:8090"
    )]
    provider_listen: SocketAddr,
    /// Where the token broker serves the credential-injecting proxy.
    #[arg(
        long,
        env = "CONNECT_DEV_PROXY_LISTEN",
        default_value = "127.0.0.1:8094"
    )]
    proxy_listen: SocketAddr,
    /// Where the token broker serves Connect's own OIDC issuer (discovery and JWKS of the tokens
    /// it mints for `aws`, `gcp` and `azure` connectors).
    #[arg(
        long,
        env = "CONNECT_DEV_CONNECT_ISSUER_LISTEN",
        default_value = "127.0.0.1:8095"
    )]
    connect_issuer_listen: SocketAddr,
    /// Where the web console serves HTTP (people sign in at the dev issuer).
    #[arg(
        long,
        env = "CONNECT_DEV_CONSOLE_LISTEN",
        default_value = "127.0.0.1:8088"
    )]
    console_listen: SocketAddr,
    /// Log line format.
    #[arg(long, env = "CONNECT_DEV_LOG_FORMAT", value_enum, default_value_t)]
    log_format: connect_runtime::LogFormat,
}

const TEAM: &str = "team_demo";
const PROJECT: &str = "prj_demo";
const CONNECTOR: &str = "api-key/demo";
const AUDIENCE: &str = "https://vercel.com/demo";
const CRM: &str = "oauth2/demo-crm";
const CRM_CLIENT: (&str, &str) = ("demo-crm", "demo-crm-secret");
/// The person who signs in at the dev issuer, and the group that makes them the demo team's admin.
const PERSON_EMAIL: &str = "ada@demo.example";
const PERSON_GROUP: &str = "demo-admins";
/// The console's client id at the dev issuer.
const CONSOLE_CLIENT: &str = "connect-console";

/// Treats "already there" as done, so that a second run reuses the first run's demo.
fn existing_ok<T>(result: Result<T, RegistryError>) -> anyhow::Result<()> {
    match result {
        Ok(_) | Err(RegistryError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn parsed<T>(value: Result<T, String>) -> anyhow::Result<T> {
    value.map_err(|e| anyhow::anyhow!(e))
}

/// Seeds the demo (what a run before made is kept as it is); answers with an admin key of the
/// demo team (`kept` when it still is one) and what it had to put back.
async fn seed(
    registry: &Registry,
    issuer: &str,
    provider: &DemoProvider,
    kept: Option<&str>,
) -> anyhow::Result<(SecretString, Vec<String>)> {
    let team = parsed(TeamId::parse(TEAM))?;
    existing_ok(
        registry
            .create_team(NewTeam {
                id: team.clone(),
                slug: parsed(TeamSlug::parse("demo"))?,
                issuer: parsed(IssuerUrl::parse(issuer))?,
            })
            .await,
    )?;
    let mut kept_admin = None;
    if let Some(key) = kept
        && let Ok(caller) = registry.authenticate(key).await
        && caller.role == Role::Admin
        && caller.team.as_ref() == Some(&team)
    {
        kept_admin = Some(SecretString::from(key.to_owned()));
    }
    let admin_key = match kept_admin {
        Some(key) => key,
        None => {
            registry
                .create_api_key(Some(team.clone()), Role::Admin)
                .await?
                .1
        }
    };
    let admin = registry.authenticate(admin_key.expose_secret()).await?;
    let mut notes = Vec::new();
    existing_ok(
        registry
            .create_project(
                &admin,
                NewProject {
                    id: parsed(ProjectId::parse(PROJECT))?,
                    name: parsed(ProjectName::parse("demo-app"))?,
                },
            )
            .await,
    )?;
    let secrets = SecretInput::parse([("api_key".to_owned(), "sk_demo_4f9c2e1a7b".to_owned())])
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    existing_ok(
        registry
            .create_connector(
                &admin,
                NewConnector {
                    uid: parsed(ConnectorUid::parse(CONNECTOR))?,
                    name: parsed(DisplayName::parse("Demo API key"))?,
                    config: ConfigMap::from_stored(BTreeMap::from([(
                        "proxy_base_url".to_owned(),
                        provider.url("/api"),
                    )])),
                    secrets,
                },
            )
            .await,
    )?;
    let crm_config = [
        ("token_url", provider.url("/token")),
        ("authorize_url", provider.url("/authorize")),
        ("revocation_url", provider.url("/revoke")),
        ("user_scopes", "contacts.read".to_owned()),
    ];
    let crm_secrets = SecretInput::parse([
        ("client_id".to_owned(), CRM_CLIENT.0.to_owned()),
        ("client_secret".to_owned(), CRM_CLIENT.1.to_owned()),
    ])
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let crm_config: BTreeMap<String, String> = crm_config
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let crm_config = ConfigMap::parse(&crm_config).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    existing_ok(
        registry
            .create_connector(
                &admin,
                NewConnector {
                    uid: parsed(ConnectorUid::parse(CRM))?,
                    name: parsed(DisplayName::parse("Demo CRM (users' consents)"))?,
                    config: crm_config,
                    secrets: crm_secrets,
                },
            )
            .await,
    )?;
    // The demo person's group administers the demo team (people sign in at the dev issuer).
    existing_ok(
        registry
            .create_role_binding_as_operator(
                &team,
                link_registry::domain::service::NewRoleBinding {
                    team: None,
                    issuer: parsed(IssuerUrl::parse(issuer))?,
                    who: link_registry::domain::model::BindingSubject::Group(PERSON_GROUP.into()),
                    role: Role::Admin,
                },
            )
            .await,
    )?;
    // The demo links are for development only, as the printout says: a link changed since the
    // last run is put back, and the run says so.
    let development = parsed(EnvironmentSet::parse(&["development"]))?;
    for connector in [CONNECTOR, CRM] {
        let (connector, project) = (
            parsed(ConnectorRef::parse(connector))?,
            parsed(ProjectRef::parse(PROJECT))?,
        );
        match registry
            .get_project_link(&admin, &connector, &project)
            .await
        {
            Ok(link) if link.environments == development && link.custom_environments.is_empty() => {
                continue;
            }
            Ok(link) => notes.push(format!(
                "The demo link of {connector} had been changed to {}: reset to development only.",
                link.environment_names().join(", ")
            )),
            Err(RegistryError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        registry
            .attach_project(&admin, &connector, &project, development)
            .await?;
    }
    Ok((admin_key, notes))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    connect_runtime::init_logging(cli.log_format);
    // Listening for Ctrl-C and SIGTERM from the start: one that comes while the system starts or
    // prints stops it in order.
    let shutdown = connect_runtime::shutdown_signal();

    let issuer = DevIssuer::start(cli.issuer_listen)
        .await
        .with_context(|| format!("starting the dev issuer on {}", cli.issuer_listen))?;

    let mut registry_config = ServeConfig::local(cli.database_url.clone());
    registry_config.listen = cli.registry_listen;
    // People sign in at the dev issuer too: its demo person administers the demo team.
    issuer.add_person(dev_issuer::DevPerson {
        subject: "ada".into(),
        email: PERSON_EMAIL.into(),
        groups: vec![PERSON_GROUP.into()],
    });
    registry_config.operators = Some(link_registry::config::OperatorSettings {
        issuers: vec![issuer.issuer_url()],
        audiences: vec!["connect-cli".into(), CONSOLE_CLIENT.into()],
        leeway: Duration::from_secs(30),
        policy: connect_types::UrlPolicy::loopback(),
        fetch_timeout: Duration::from_secs(3),
    });
    let issuers = vec![issuer.issuer_url()];
    let keys_file = KeptKeys::path(&cli.database_url);
    let kept = keys_file.as_deref().and_then(KeptKeys::read);
    let stack = LocalStack::start_with_broker_key(
        registry_config,
        kept.as_ref().map(|k| SecretString::from(k.broker.clone())),
        |registry_url, broker_key| {
            let mut broker = token_broker::BrokerConfig::local(
                registry_url,
                broker_key,
                issuers,
                AUDIENCE.to_owned(),
            );
            broker.listen = cli.broker_listen;
            broker.callback_listen = Some(cli.callback_listen);
            broker.proxy_listen = Some(cli.proxy_listen);
            broker.issuer_listen = Some(cli.connect_issuer_listen);
            // The demo's first signing key is made just after the broker starts.
            broker.signing_keys_refresh = Duration::from_secs(5);
            broker.shutdown_grace = Duration::from_secs(5);
            broker
        },
    )
    .await?;
    let (registry_addr, broker_addr) = (stack.registry_addr(), stack.broker_addr());
    if stack.registry().signing_keys().await?.is_empty() {
        stack.registry().rotate_signing_key().await?;
    }

    let deployment = |environment: &str| Deployment {
        owner: "demo".into(),
        owner_id: TEAM.into(),
        project: "demo-app".into(),
        project_id: PROJECT.into(),
        environment: environment.into(),
        audience: AUDIENCE.into(),
    };
    let hour = Duration::from_secs(3600);
    let development = issuer.mint(&deployment("development"), hour, Alg::RS256);
    let finish_hint = format!(
        "grpcurl -plaintext -H 'authorization: Bearer {development}' -d '{{\"request_id\": \"{{request_id}}\", \"completion\": \"{{completion}}\", \"user_id\": \"ada\"}}' {broker_addr} connect.broker.v1.TokenBroker/FinishAuthorization"
    );
    let provider = DemoProvider::start(
        cli.provider_listen,
        DemoClient {
            client_id: CRM_CLIENT.0.to_owned(),
            client_secret: CRM_CLIENT.1.to_owned(),
            user: "ada".to_owned(),
            finish_hint,
        },
    )
    .await
    .with_context(|| {
        format!(
            "starting the demo OAuth provider on {}",
            cli.provider_listen
        )
    })?;
    let (admin_key, notes) = seed(
        stack.registry(),
        issuer.issuer(),
        &provider,
        kept.as_ref().map(|k| k.admin.as_str()),
    )
    .await?;
    if let Some(path) = &keys_file {
        let keys = KeptKeys {
            admin: admin_key.expose_secret().to_owned(),
            broker: stack.broker_key().expose_secret().to_owned(),
        };
        if let Err(e) = keys.write(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep the demo's keys for the next run");
        }
    }
    for note in &notes {
        println!("{note}");
    }
    // The console keeps its sessions beside a SQLite database, or in the same PostgreSQL one.
    let session_database_url = match link_registry::config::sqlite_path(&cli.database_url) {
        Some(db) => format!("sqlite://{}.console-sessions?mode=rwc", db.display()),
        None => cli.database_url.clone(),
    };
    let console = connect_console::Console::build(connect_console::ConsoleConfig {
        listen: cli.console_listen,
        registry_url: format!("http://{registry_addr}"),
        registry_ca: None,
        public_url: None,
        operator_issuer: issuer.issuer().parse()?,
        client_id: CONSOLE_CLIENT.into(),
        client_secret: None,
        session_database_url,
        allow_key_login: true,
    })
    .await
    .with_context(|| format!("starting the console on {}", cli.console_listen))?;
    let console_addr = console.local_addr();
    let (stop_console, console_stopped) = tokio::sync::oneshot::channel::<()>();
    let console_task = tokio::spawn(console.run(async {
        let _ = console_stopped.await;
    }));
    let admin_key = admin_key.expose_secret().to_owned();
    let production = issuer.mint(&deployment("production"), hour, Alg::RS256);
    let get_token = |token: &str| {
        format!(
            "grpcurl -plaintext -H 'authorization: Bearer {token}' -d '{{\"connector\": \"{CONNECTOR}\"}}' {broker_addr} connect.broker.v1.TokenBroker/GetToken"
        )
    };
    let start_command = format!(
        "grpcurl -plaintext -H 'authorization: Bearer {development}' -d '{{\"connector\": \"{CRM}\", \"user_id\": \"ada\", \"return_url\": \"{}\"}}' {broker_addr} connect.broker.v1.TokenBroker/StartAuthorization",
        provider.url("/done")
    );
    let user_token_command = format!(
        "grpcurl -plaintext -H 'authorization: Bearer {development}' -d '{{\"connector\": \"{CRM}\", \"subject\": {{\"user\": {{\"id\": \"ada\"}}}}}}' {broker_addr} connect.broker.v1.TokenBroker/GetToken"
    );
    println!(
        "\nConnect is running (Ctrl-C stops it).\n\
         \n  link registry  {registry_addr}   admin key: {admin_key}\
         \n  token broker   {broker_addr}   consent callbacks: http://{callback}/oauth/callback/<connector id>\
         \n  dev issuer     {issuer_url}\
         \n  web console    http://{console_addr}/   sign in as {PERSON_EMAIL} (or with the admin key)\
         \n\nDemo: team {TEAM}, project {PROJECT} (demo-app), connector {CONNECTOR} linked for development only.\
         \n\nA development deployment token (valid one hour):\n\n  {development}\
         \n\nThis returns the demo connector's token:\n\n  {ok}\
         \n\nThis fails with ClientNotEnabledForEnvironmentError (a production token):\n\n  {denied}\
         \n\nMore tokens: curl '{issuer_url}/token?owner=demo&owner_id={TEAM}&project=demo-app&project_id={PROJECT}&environment=development&audience={AUDIENCE}'\
         \n\nWith the connect command line (cargo install --path crates/connect-cli):\n\
         \n  export CONNECT_REGISTRY_URL=http://{registry_addr} CONNECT_BROKER_URL=http://{broker_addr} CONNECT_API_KEY={admin_key}\
         \n  connect links {CONNECTOR}\
         \n  CONNECT_OIDC_TOKEN={development} connect token {CONNECTOR}\
         \n  connect attach {CONNECTOR} --project {PROJECT} -e development,production\
         \n\nOr sign in as a person ({PERSON_EMAIL}, admin of {TEAM} through the group {PERSON_GROUP}) instead of with the admin key:\n\
         \n  unset CONNECT_API_KEY; connect login --issuer {issuer_url}\
         \n  connect whoami\
         \n\nThrough the credential-injecting proxy (the demo API answers with the Authorization it got; the key is masked on the way back):\n\
         \n  curl -H 'Authorization: Bearer {development}' http://{proxy}/{proxied_connector}/whoami\
         \n\nConnect's own OIDC issuer (what aws, gcp and azure connectors trade): http://{connect_issuer}/.well-known/openid-configuration\
         \n\nA user's consent with {CRM}, against a demo OAuth provider ({provider}) that approves as its user ada:\
         \n  1. start it, then open the answer's \"url\" in a browser:\
         \n     {start}\
         \n  2. the provider approves and the browser lands on {done} with connect_request_id and connect_completion;\
         \n     that page shows the FinishAuthorization call the application makes for its signed-in user (ada)\
         \n  3. ada's token, from her grant (refreshed by Connect when it expires):\
         \n     {user_token}\n",
        issuer_url = issuer.issuer(),
        callback = stack
            .broker_callback_addr()
            .map_or_else(|| "(none)".to_owned(), |a| a.to_string()),
        ok = get_token(&development),
        denied = get_token(&production),
        provider = provider.url(""),
        done = provider.url("/done"),
        start = start_command,
        user_token = user_token_command,
        proxy = cli.proxy_listen,
        proxied_connector = CONNECTOR.replace('/', "%2F"),
        connect_issuer = cli.connect_issuer_listen,
    );

    shutdown.await;
    let _ = stop_console.send(());
    if let Ok(Err(e)) = console_task.await {
        tracing::warn!(error = %e, "the console stopped with an error");
    }
    provider.stop();
    stack.stop().await?;
    issuer.stop().await;
    Ok(())
}
