//! The test harness: a fresh database per test (a SQLite file in a temp dir, or a new PostgreSQL
//! database under `TEST_DATABASE_URL`), the real server on port 0, and clients that present keys.

use connect_proto::registry::v1::{
    link_registry_client::LinkRegistryClient, registry_runtime_client::RegistryRuntimeClient,
};
use connect_runtime::BearerAuth;
use link_registry::{
    App, AppError, ServeConfig,
    crypto::SecretCipher,
    domain::{
        Registry,
        model::Role,
        service::NewTeam,
        types::{IssuerUrl, TeamId, TeamSlug},
    },
};
use sea_orm::{ConnectionTrait, Database};
use secrecy::ExposeSecret;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, Status, service::interceptor::InterceptedService, transport::Channel};
use tonic_types::StatusExt;

/// A database for one test.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    pub backend: &'static str,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("registry.db").display()
        );
        Self {
            url,
            backend: "sqlite",
            _dir: Some(dir),
        }
    }

    /// An existing SQLite database at `url` (owned by the caller's directory).
    pub fn sqlite_at(url: String) -> Self {
        Self {
            url,
            backend: "sqlite",
            _dir: None,
        }
    }

    /// A new, empty database on the server of `TEST_DATABASE_URL`; `None` when it is unset
    /// (outside CI only: under CI a missing PostgreSQL fails the test instead of skipping it).
    pub async fn postgres() -> Option<Self> {
        let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "TEST_DATABASE_URL must be set under CI: the PostgreSQL suite may not be skipped"
            );
            eprintln!("TEST_DATABASE_URL unset: skipping the PostgreSQL variant");
            return None;
        };
        let name = format!("connect_it_{}", link_registry::crypto::random_token(12));
        let admin = Database::connect(&admin_url)
            .await
            .expect("connect to TEST_DATABASE_URL");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        Some(Self {
            url: format!("{base}/{name}"),
            backend: "postgres",
            _dir: None,
        })
    }

    /// The same PostgreSQL database, for a second registry replica (`None` on SQLite, a one-node
    /// backend).
    pub fn replica(&self) -> Option<TestDb> {
        (self.backend == "postgres").then(|| TestDb {
            url: self.url.clone(),
            backend: self.backend,
            _dir: None,
        })
    }

    /// The serve configuration; PostgreSQL needs an explicit key file, kept beside nothing else.
    pub fn serve_config(&self) -> ServeConfig {
        let mut config = ServeConfig::local(&self.url);
        config.shutdown_grace = std::time::Duration::from_secs(5);
        if self.backend == "postgres" {
            let path = std::env::temp_dir().join(format!(
                "connect-it-{}.key",
                self.url.rsplit('/').next().unwrap_or("db")
            ));
            if !path.exists() {
                SecretCipher::from_key_file(&path, true).expect("key file");
            }
            config.secret_key_file = Some(path);
        }
        config
    }
}

/// Runs a test body once per backend: `mod sqlite` always, `mod postgres` when configured.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::TestDb::sqlite().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(
                    not(postgres_tests),
                    ignore = "TEST_DATABASE_URL is unset: the PostgreSQL variant does not run"
                )]
                async fn $name() {
                    if let Some(db) = $crate::harness::TestDb::postgres().await {
                        super::$name(db).await
                    }
                }
            )*
        }
    };
}

/// A client of the admin API.
pub type Client = LinkRegistryClient<InterceptedService<Channel, BearerAuth>>;
/// A client of the brokers' API.
pub type Runtime = RegistryRuntimeClient<InterceptedService<Channel, BearerAuth>>;

pub const ISSUER: &str = "https://oidc.example.test/acme";
pub const OTHER_ISSUER: &str = "https://oidc.example.test/globex";

/// One team's keys.
#[derive(Clone, Debug)]
pub struct TeamKeys {
    pub admin: String,
    pub viewer: String,
    pub admin_key_id: String,
}

/// A running registry with team `team_acme` (admin and viewer keys) and a broker key.
pub struct TestApp {
    pub db: TestDb,
    pub registry: Registry,
    pub acme: TeamKeys,
    pub broker: String,
    channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), AppError>>>,
}

impl TestApp {
    pub async fn spawn(db: TestDb) -> Self {
        Self::spawn_with(db, |_| {}).await
    }

    /// As [`TestApp::spawn`], with the serve configuration changed by `configure` first.
    pub async fn spawn_with(db: TestDb, configure: impl FnOnce(&mut ServeConfig)) -> Self {
        let mut config = db.serve_config();
        configure(&mut config);
        let mut app = Self::start_with(db, config).await;
        app.acme = app.new_team("team_acme", "acme", ISSUER).await;
        let (_, broker) = app
            .registry
            .create_api_key(None, Role::Broker)
            .await
            .expect("broker key");
        app.broker = broker.expose_secret().to_owned();
        app
    }

    /// Starts a server on an existing database (no new team or keys).
    pub async fn start(db: TestDb) -> Self {
        let config = db.serve_config();
        Self::start_with(db, config).await
    }

    /// As [`TestApp::start`], with `config`.
    pub async fn start_with_config(db: TestDb, config: ServeConfig) -> Self {
        Self::start_with(db, config).await
    }

    async fn start_with(db: TestDb, config: ServeConfig) -> Self {
        let app = App::build(config).await.expect("build app");
        let addr = app.local_addr();
        let registry = app.registry().clone();
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("connect to registry");
        Self {
            db,
            registry,
            acme: TeamKeys {
                admin: String::new(),
                viewer: String::new(),
                admin_key_id: String::new(),
            },
            broker: String::new(),
            channel,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Creates a team with an admin and a viewer key, as `teams create` and `keys create` do.
    pub async fn new_team(&self, id: &str, slug: &str, issuer: &str) -> TeamKeys {
        self.registry
            .create_team(NewTeam {
                id: TeamId::parse(id).unwrap(),
                slug: TeamSlug::parse(slug).unwrap(),
                issuer: IssuerUrl::parse(issuer).unwrap(),
            })
            .await
            .expect("create team");
        let team = Some(TeamId::parse(id).unwrap());
        let (admin_record, admin) = self
            .registry
            .create_api_key(team.clone(), Role::Admin)
            .await
            .unwrap();
        let (_, viewer) = self
            .registry
            .create_api_key(team, Role::Viewer)
            .await
            .unwrap();
        TeamKeys {
            admin: admin.expose_secret().to_owned(),
            viewer: viewer.expose_secret().to_owned(),
            admin_key_id: admin_record.id.to_string(),
        }
    }

    pub fn client(&self, key: &str) -> Client {
        LinkRegistryClient::with_interceptor(self.channel.clone(), BearerAuth::new(key).unwrap())
    }

    pub fn anonymous(&self) -> Client {
        LinkRegistryClient::with_interceptor(self.channel.clone(), BearerAuth::anonymous())
    }

    pub fn anonymous_runtime(&self) -> Runtime {
        RegistryRuntimeClient::with_interceptor(self.channel.clone(), BearerAuth::anonymous())
    }

    pub fn admin(&self) -> Client {
        self.client(&self.acme.admin)
    }

    /// A client of `RegistryRuntime` presenting `key`.
    pub fn runtime(&self, key: &str) -> Runtime {
        RegistryRuntimeClient::with_interceptor(self.channel.clone(), BearerAuth::new(key).unwrap())
    }

    pub fn broker(&self) -> Runtime {
        self.runtime(&self.broker)
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Drains and stops the server; answers with the database for a restart.
    pub async fn stop(mut self) -> TestDb {
        self.shutdown.take().unwrap().send(()).ok();
        self.server
            .take()
            .unwrap()
            .await
            .expect("server task")
            .expect("clean shutdown");
        self.db
    }
}

/// Asserts a gRPC error's code and `ErrorInfo` (domain `connect`), and returns its message.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, Status>,
    code: Code,
    reason: &str,
) -> Status {
    let status = result.expect_err("expected an error");
    assert_eq!(status.code(), code, "{status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "connect");
    assert_eq!(info.reason, reason, "{status:?}");
    status
}

/// The fields named by the `BadRequest` details of a status.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}
