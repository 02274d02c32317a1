//! The whole system on loopback: a dev OIDC issuer per team, the real link registry (SQLite file)
//! and the real token broker, each on port 0, talking over real HTTP and gRPC; plus a loopback
//! OAuth token endpoint. Logs of every test land in one captured buffer (see [`captured_logs`]).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Form, Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use connect_dev::LocalStack;
use connect_proto::{
    broker::v1::{self as bpb, token_broker_client::TokenBrokerClient},
    registry::v1::{self as rpb, link_registry_client::LinkRegistryClient},
};
use connect_runtime::BearerAuth;
use dev_issuer::{Alg, Deployment, DevIssuer};
use link_registry::{
    ServeConfig,
    domain::{
        Registry,
        model::Role,
        service::NewTeam,
        types::{IssuerUrl, TeamId, TeamSlug},
    },
};
use secrecy::ExposeSecret;
use tokio::{net::TcpListener, task::JoinHandle};
use tonic::{
    Code, Request, Status,
    transport::{Channel, ClientTlsConfig},
};
use tonic_types::StatusExt;

pub const AUDIENCE: &str = "https://vercel.com/acme";

/// Every log line of this test binary, as JSON lines.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,h2=info,hyper=info,hyper_util=info,tower=info,sqlx=info,sea_orm=info,reqwest=info,rustls=info",
            ))
            .with_writer(move || LogSink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buffer
    })
}

/// A log writer into a shared buffer.
pub struct LogSink(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One team: its issuer, admin key, and a way to mint its deployments' tokens.
pub struct Team {
    pub id: String,
    pub slug: String,
    pub issuer: DevIssuer,
    pub admin: String,
}

impl Team {
    pub fn deployment(&self, project_id: &str, project: &str, environment: &str) -> Deployment {
        Deployment {
            owner: self.slug.clone(),
            owner_id: self.id.clone(),
            project: project.into(),
            project_id: project_id.into(),
            environment: environment.into(),
            audience: AUDIENCE.into(),
        }
    }

    pub fn token(&self, project_id: &str, environment: &str) -> String {
        self.token_with(project_id, environment, Alg::RS256)
    }

    pub fn token_with(&self, project_id: &str, environment: &str, alg: Alg) -> String {
        let deployment = self.deployment(project_id, "web", environment);
        self.issuer.mint(&deployment, Duration::from_secs(600), alg)
    }
}

pub struct Stack {
    pub acme: Team,
    pub globex: Team,
    registry_channel: Channel,
    broker_channel: Channel,
    local: Option<LocalStack>,
    _dir: tempfile::TempDir,
}

/// How a [`Stack`] differs from the default one.
pub struct StackOptions {
    pub registry: Box<dyn FnOnce(&mut ServeConfig)>,
    pub broker: Box<dyn FnOnce(&mut token_broker::BrokerConfig)>,
    /// TLS of the test's own clients of both servers.
    pub client_tls: Option<ClientTlsConfig>,
    /// Whether to wait for the broker to report SERVING (it never does without its registry).
    pub wait_until_serving: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            registry: Box::new(|_| {}),
            broker: Box::new(|_| {}),
            client_tls: None,
            wait_until_serving: true,
        }
    }
}

async fn dev_issuer() -> DevIssuer {
    DevIssuer::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("dev issuer")
}

async fn team(registry: &Registry, issuer: DevIssuer, id: &str, slug: &str) -> Team {
    registry
        .create_team(NewTeam {
            id: TeamId::parse(id).unwrap(),
            slug: TeamSlug::parse(slug).unwrap(),
            issuer: IssuerUrl::parse(issuer.issuer()).unwrap(),
        })
        .await
        .unwrap();
    let (_, admin) = registry
        .create_api_key(Some(TeamId::parse(id).unwrap()), Role::Admin)
        .await
        .unwrap();
    Team {
        id: id.into(),
        slug: slug.into(),
        issuer,
        admin: admin.expose_secret().to_owned(),
    }
}

/// `GET http://addr/metrics`, checked to be Prometheus text.
pub async fn scrape(addr: SocketAddr) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

/// The value of the sample whose name and labels are exactly `series` (labels in sorted order,
/// as the exposition writes them).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A registry configuration on a new, empty database of the PostgreSQL server `TEST_DATABASE_URL`
/// names; `None` when it is unset (outside CI only: under CI that fails the test).
pub async fn on_postgres() -> Option<Box<dyn FnOnce(&mut ServeConfig)>> {
    use sea_orm::ConnectionTrait;
    let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "TEST_DATABASE_URL must be set under CI: the PostgreSQL variant may not be skipped"
        );
        eprintln!("TEST_DATABASE_URL unset: skipping the PostgreSQL variant");
        return None;
    };
    let name = format!(
        "connect_e2e_{}",
        link_registry::crypto::random_token(12).to_lowercase()
    );
    let admin = sea_orm::Database::connect(&admin_url)
        .await
        .expect("connect to TEST_DATABASE_URL");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    admin.close().await.ok();
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(b, _)| b);
    let url = format!("{base}/{name}");
    let key_file = std::env::temp_dir().join(format!("{name}.key"));
    link_registry::crypto::SecretCipher::from_key_file(&key_file, true).expect("key file");
    Some(Box::new(move |config: &mut ServeConfig| {
        config.database_url = url;
        config.secret_key_file = Some(key_file);
    }))
}

/// Waits until the broker behind `channel` reports SERVING (it does once it reached its
/// registry); generous, since a loaded CI machine runs many stacks at once.
pub async fn wait_until_serving(channel: Channel) {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for _ in 0..1500 {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await;
        if answer.is_ok_and(|a| {
            a.get_ref().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the broker never reported SERVING");
}

/// Every item of a listing: `fetch` answers a page and the next page token for a page token.
pub async fn all_pages<T, F, Fut>(mut fetch: F) -> Vec<T>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = (Vec<T>, String)>,
{
    let (mut all, mut token) = (Vec::new(), String::new());
    loop {
        let (items, next) = fetch(token).await;
        all.extend(items);
        if next.is_empty() {
            return all;
        }
        token = next;
    }
}

/// A channel to a server on loopback, over TLS when `tls` is given.
pub async fn channel(addr: SocketAddr, tls: Option<&ClientTlsConfig>) -> Channel {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://{addr}")).unwrap();
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.clone()).unwrap();
    }
    endpoint.connect().await.expect("connect")
}

impl Stack {
    /// Teams `team_acme` and `team_globex`, each with its own issuer (both trusted by the broker).
    /// Acme has project `prj_web` (`web`), connector `api-key/stripe` (secret `sk_acme_stripe`)
    /// linked to it for `preview` only, and project `prj_docs` with no links.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(
        configure: impl FnOnce(&mut token_broker::BrokerConfig) + 'static,
    ) -> Self {
        Self::start_with_options(StackOptions {
            broker: Box::new(configure),
            ..Default::default()
        })
        .await
    }

    pub async fn start_with_options(options: StackOptions) -> Self {
        log_buffer();
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("registry.db").display()
        );
        let mut registry_config = ServeConfig::local(url);
        (options.registry)(&mut registry_config);
        let (acme_issuer, globex_issuer) = (dev_issuer().await, dev_issuer().await);
        let issuers = vec![acme_issuer.issuer_url(), globex_issuer.issuer_url()];
        let configure = options.broker;
        let local = LocalStack::start(registry_config, move |registry_url, broker_key| {
            let mut config = token_broker::BrokerConfig::local(
                registry_url,
                broker_key,
                issuers,
                AUDIENCE.to_owned(),
            );
            configure(&mut config);
            config
        })
        .await
        .expect("registry and broker");
        let acme = team(local.registry(), acme_issuer, "team_acme", "acme").await;
        let globex = team(local.registry(), globex_issuer, "team_globex", "globex").await;

        let tls = options.client_tls.as_ref();
        let stack = Self {
            registry_channel: channel(local.registry_addr(), tls).await,
            broker_channel: channel(local.broker_addr(), tls).await,
            acme,
            globex,
            local: Some(local),
            _dir: dir,
        };
        if options.wait_until_serving {
            stack.wait_until_serving().await;
        }

        let mut admin = stack.admin(&stack.acme);
        for (id, name) in [("prj_web", "web"), ("prj_docs", "docs")] {
            admin
                .create_project(rpb::CreateProjectRequest {
                    id: id.into(),
                    name: name.into(),
                })
                .await
                .unwrap();
        }
        admin
            .create_connector(rpb::CreateConnectorRequest {
                uid: "api-key/stripe".into(),
                secrets: [("api_key".to_owned(), "sk_acme_stripe".to_owned())].into(),
                ..Default::default()
            })
            .await
            .unwrap();
        stack
            .attach(&stack.acme, "api-key/stripe", "prj_web", &["preview"])
            .await;
        stack
    }

    async fn wait_until_serving(&self) {
        wait_until_serving(self.broker_channel.clone()).await;
    }

    /// A registry client with a team's admin key.
    pub fn admin(
        &self,
        team: &Team,
    ) -> LinkRegistryClient<tonic::service::interceptor::InterceptedService<Channel, BearerAuth>>
    {
        LinkRegistryClient::with_interceptor(
            self.registry_channel.clone(),
            BearerAuth::new(&team.admin).unwrap(),
        )
    }

    pub async fn attach(&self, team: &Team, connector: &str, project: &str, environments: &[&str]) {
        self.admin(team)
            .attach_project(rpb::AttachProjectRequest {
                connector: connector.into(),
                project: project.into(),
                environments: environments.iter().map(|e| e.to_string()).collect(),
                expire_time: None,
                ..Default::default()
            })
            .await
            .expect("attach");
    }

    pub async fn create_connector(
        &self,
        team: &Team,
        request: rpb::CreateConnectorRequest,
    ) -> rpb::Connector {
        self.admin(team)
            .create_connector(request)
            .await
            .expect("create connector")
            .into_inner()
    }

    /// Acme's connector `uid` with `config` and `secrets`, linked to `prj_web` for `preview`.
    pub async fn linked_connector(
        &self,
        uid: &str,
        config: &[(&str, &str)],
        secrets: &[(&str, &str)],
    ) {
        let pairs = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        self.create_connector(
            &self.acme,
            rpb::CreateConnectorRequest {
                uid: uid.into(),
                config: pairs(config),
                secrets: pairs(secrets),
                ..Default::default()
            },
        )
        .await;
        self.attach(&self.acme, uid, "prj_web", &["preview"]).await;
    }

    /// Acme's OAuth connector `uid` for `token_url` (with the endpoint's client credentials),
    /// linked to `prj_web` for `preview`.
    pub async fn linked_oauth_connector(
        &self,
        uid: &str,
        token_url: &str,
        config: &[(&str, &str)],
    ) {
        let mut config = config.to_vec();
        config.push(("token_url", token_url));
        self.linked_connector(
            uid,
            &config,
            &[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)],
        )
        .await;
    }

    /// Acme's issuance ledger for `connector`, newest first.
    pub async fn ledger(&self, connector: &str) -> Vec<rpb::Issuance> {
        self.admin(&self.acme)
            .list_issuances(rpb::ListIssuancesRequest {
                connector: connector.into(),
                ..Default::default()
            })
            .await
            .expect("list issuances")
            .into_inner()
            .issuances
    }

    /// Waits until the broker has applied every change made so far: the feed delivers changes in
    /// order, so once the broker answers for a link made now, it has seen every earlier change
    /// (and no late invalidation will drop what it caches next).
    /// A second broker on the same registry, configured by `configure` from the local defaults.
    pub async fn second_broker(
        &self,
        configure: impl FnOnce(&mut token_broker::BrokerConfig),
    ) -> SecondBroker {
        let (_, key) = self
            .local()
            .registry()
            .create_api_key(None, Role::Broker)
            .await
            .unwrap();
        let mut config = token_broker::BrokerConfig::local(
            self.local().registry_url().to_owned(),
            key.expose_secret().to_owned().into(),
            vec![
                self.acme.issuer.issuer_url(),
                self.globex.issuer.issuer_url(),
            ],
            AUDIENCE.to_owned(),
        );
        configure(&mut config);
        let app = token_broker::App::build(config).await.unwrap();
        let addr = app.local_addr();
        let (issuer_addr, key_ring, proxy_addr) =
            (app.issuer_addr(), app.key_ring(), app.proxy_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            stopped.await.ok();
        }));
        let broker = SecondBroker {
            addr,
            issuer_addr,
            key_ring,
            proxy_addr,
            client: TokenBrokerClient::new(channel(addr, None).await),
            stop: Some(stop),
            task: Some(task),
        };
        wait_until_serving(channel(addr, None).await).await;
        broker
    }

    pub async fn feed_caught_up(&self) {
        static MARKS: AtomicUsize = AtomicUsize::new(0);
        let n = MARKS.fetch_add(1, Ordering::SeqCst);
        let project = format!("prj_mark{n}");
        self.admin(&self.acme)
            .create_project(rpb::CreateProjectRequest {
                id: project.clone(),
                name: format!("mark{n}"),
            })
            .await
            .expect("create a mark project");
        self.attach(&self.acme, "api-key/stripe", &project, &["preview"])
            .await;
        let token = self.acme.token(&project, "preview");
        for _ in 0..1000 {
            if self.get_token(&token, "api-key/stripe").await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the broker never saw a link made ten seconds ago");
    }

    pub fn registry_addr(&self) -> SocketAddr {
        self.local.as_ref().expect("running").registry_addr()
    }

    pub fn broker_addr(&self) -> SocketAddr {
        self.local.as_ref().expect("running").broker_addr()
    }

    /// The local stack itself, while it runs.
    pub fn local(&self) -> &LocalStack {
        self.local.as_ref().expect("running")
    }

    pub fn broker(&self) -> TokenBrokerClient<Channel> {
        TokenBrokerClient::new(self.broker_channel.clone())
    }

    /// The channel to the broker the stack's own calls use.
    pub fn broker_channel(&self) -> Channel {
        self.broker_channel.clone()
    }

    /// `GetToken` for `connector` with `token` as the bearer.
    pub async fn get_token(
        &self,
        token: &str,
        connector: &str,
    ) -> Result<bpb::GetTokenResponse, Status> {
        self.get_token_with(
            token,
            bpb::GetTokenRequest {
                connector: connector.into(),
                ..Default::default()
            },
        )
        .await
    }

    pub async fn get_token_with(
        &self,
        token: &str,
        request: bpb::GetTokenRequest,
    ) -> Result<bpb::GetTokenResponse, Status> {
        let mut request = Request::new(request);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        self.broker()
            .get_token(request)
            .await
            .map(|r| r.into_inner())
    }

    pub async fn stop_registry(&mut self) {
        if let Some(local) = &mut self.local {
            local.stop_registry().await.expect("registry stops cleanly");
        }
    }

    pub async fn stop(mut self) {
        if let Some(local) = self.local.take() {
            local.stop().await.expect("servers stop cleanly");
        }
    }
}

/// Another broker of a [`Stack`]'s registry.
pub struct SecondBroker {
    addr: SocketAddr,
    /// Where its OIDC issuer is served, and its signing keys, when it serves one.
    pub issuer_addr: Option<SocketAddr>,
    pub key_ring: Option<Arc<token_broker::issuer::KeyRing>>,
    /// Where its credential-injecting proxy is served, when it serves one.
    pub proxy_addr: Option<SocketAddr>,
    client: TokenBrokerClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), token_broker::AppError>>>,
}

impl SecondBroker {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn get_token_with(
        &self,
        token: &str,
        request: bpb::GetTokenRequest,
    ) -> Result<bpb::GetTokenResponse, Status> {
        let mut request = Request::new(request);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        self.client
            .clone()
            .get_token(request)
            .await
            .map(|r| r.into_inner())
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// Asserts a gRPC error's code, `ErrorInfo` reason (domain `connect`) and message prefix.
#[track_caller]
pub fn assert_denied<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    reason: &str,
    prefix: &str,
) -> Status {
    let status = result.expect_err("expected an error");
    assert_eq!(status.code(), code, "{status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(
        (info.domain.as_str(), info.reason.as_str()),
        ("connect", reason),
        "{status:?}"
    );
    assert!(status.message().starts_with(prefix), "{status:?}");
    status
}

/// A loopback OAuth 2.0 token endpoint for the client credentials grant.
pub struct TokenEndpoint {
    pub url: String,
    state: Arc<EndpointState>,
    _task: JoinHandle<()>,
}

struct EndpointState {
    /// Makes this endpoint's tokens its own: no other endpoint in the test binary issues them.
    salt: u64,
    calls: AtomicUsize,
    /// The last token exchange's subject token and type.
    exchanged: Mutex<Option<(String, String)>>,
    /// The public key (PEM) JWT bearer assertions must verify with, and the claims of the last
    /// one that did; the `jti`s seen (a replay is refused).
    assertion_key: Mutex<Option<String>>,
    asserted: Mutex<Option<serde_json::Value>>,
    jtis: Mutex<std::collections::HashSet<String>>,
    elsewhere_calls: AtomicUsize,
    mode: Mutex<EndpointMode>,
    /// Tokens revoked through RFC 7009.
    revoked: Mutex<Vec<String>>,
    /// Refresh tokens issued, by value: the user and whether it was used (rotation).
    refresh_tokens: Mutex<std::collections::HashMap<String, (String, bool)>>,
    /// Authorization codes issued: (user, PKCE challenge, redirect_uri, scope).
    codes: Mutex<std::collections::HashMap<String, (String, String, String, String)>>,
    refreshes: AtomicUsize,
    /// Whether a used refresh token is still honoured (no rotation enforcement).
    reuse_refresh_tokens: std::sync::atomic::AtomicBool,
    /// How long user access tokens live, in seconds.
    user_token_lifetime: std::sync::atomic::AtomicU64,
    /// What the simulated user answers at the authorize endpoint: approve, or `access_denied`.
    consent: Mutex<Consent>,
    /// The user the next consent is for.
    consenting_user: Mutex<String>,
    /// Whether the code exchange answers with an OpenID `id_token` naming the user.
    openid: std::sync::atomic::AtomicBool,
}

/// What the loopback provider's user does on its consent screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consent {
    Approve,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointMode {
    Issue,
    RejectClient,
    ServerError,
    /// Answers 307 to `/elsewhere` on the same server (which counts its calls).
    Redirect,
    /// A 2 MiB JSON body.
    Oversized,
    /// `"expires_in": 10000000000000`.
    HugeExpiresIn,
    /// Answers after two seconds.
    Slow,
    /// Answers 200 with the start of a JSON body, then sends nothing more (the connection stays
    /// open).
    StallMidBody,
}

pub const CLIENT_ID: &str = "client_acme";
pub const CLIENT_SECRET: &str = "cs_acme_very_secret";

impl TokenEndpoint {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/oauth/token", listener.local_addr().unwrap());
        let state = Arc::new(EndpointState {
            salt: rand::random(),
            calls: AtomicUsize::new(0),
            exchanged: Mutex::new(None),
            assertion_key: Mutex::new(None),
            asserted: Mutex::new(None),
            jtis: Mutex::new(Default::default()),
            elsewhere_calls: AtomicUsize::new(0),
            mode: Mutex::new(EndpointMode::Issue),
            revoked: Mutex::new(Vec::new()),
            refresh_tokens: Mutex::default(),
            codes: Mutex::default(),
            refreshes: AtomicUsize::new(0),
            reuse_refresh_tokens: std::sync::atomic::AtomicBool::new(false),
            user_token_lifetime: std::sync::atomic::AtomicU64::new(3600),
            consent: Mutex::new(Consent::Approve),
            consenting_user: Mutex::new("ada".into()),
            openid: std::sync::atomic::AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/oauth/token", post(token_endpoint))
            .route("/oauth/revoke", post(revocation_endpoint))
            .route("/oauth/authorize", axum::routing::get(authorize_endpoint))
            .route("/oauth/userinfo", axum::routing::get(userinfo_endpoint))
            .route("/elsewhere", post(elsewhere))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            state,
            _task: task,
        }
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Calls that followed a redirect.
    pub fn elsewhere_calls(&self) -> usize {
        self.state.elsewhere_calls.load(Ordering::SeqCst)
    }

    /// Accepts JWT bearer assertions signed by the key whose public half is `pem`.
    pub fn accept_assertions_from(&self, pem: &str) {
        *self.state.assertion_key.lock().unwrap() = Some(pem.to_owned());
    }

    /// The claims of the last accepted assertion.
    pub fn last_assertion(&self) -> Option<serde_json::Value> {
        self.state.asserted.lock().unwrap().clone()
    }

    /// The subject token and type of the last token exchange.
    pub fn last_exchange(&self) -> Option<(String, String)> {
        self.state.exchanged.lock().unwrap().clone()
    }

    pub fn set_mode(&self, mode: EndpointMode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// A refresh token of `user`, as a consent would have issued it.
    pub fn issue_refresh_token(&self, user: &str) -> String {
        let token = format!("rt_{user}_{:x}", rand::random::<u64>());
        self.state
            .refresh_tokens
            .lock()
            .unwrap()
            .insert(token.clone(), (user.to_owned(), false));
        token
    }

    /// Refresh token grants answered (whatever the answer).
    pub fn refreshes(&self) -> usize {
        self.state.refreshes.load(Ordering::SeqCst)
    }

    /// Honour used refresh tokens again (a provider without rotation enforcement).
    pub fn reuse_refresh_tokens(&self, reuse: bool) {
        self.state
            .reuse_refresh_tokens
            .store(reuse, Ordering::SeqCst);
    }

    /// How long the user access tokens it issues live.
    pub fn set_user_token_lifetime(&self, seconds: u64) {
        self.state
            .user_token_lifetime
            .store(seconds, Ordering::SeqCst);
    }

    /// What the next user does at the consent screen, and who they are.
    pub fn set_consent(&self, consent: Consent, user: &str) {
        *self.state.consent.lock().unwrap() = consent;
        *self.state.consenting_user.lock().unwrap() = user.to_owned();
    }

    /// Whether code exchanges answer with an OpenID `id_token` (`sub`: the consenting user).
    pub fn set_openid(&self, openid: bool) {
        self.state.openid.store(openid, Ordering::SeqCst);
    }

    /// The endpoint's userinfo endpoint: `{"sub": user}` for a user's access token.
    pub fn userinfo_url(&self) -> String {
        self.url.replace("/oauth/token", "/oauth/userinfo")
    }

    /// The endpoint's authorization endpoint.
    pub fn authorize_url(&self) -> String {
        self.url.replace("/oauth/token", "/oauth/authorize")
    }

    /// The endpoint's RFC 7009 revocation endpoint.
    pub fn revocation_url(&self) -> String {
        self.url.replace("/oauth/token", "/oauth/revoke")
    }

    /// The tokens revoked there, in order.
    pub fn revoked(&self) -> Vec<String> {
        self.state.revoked.lock().unwrap().clone()
    }
}

#[derive(serde::Deserialize)]
struct AuthorizeQuery {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    state: String,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    scope: Option<String>,
}

/// The consent screen, answered at once by the simulated user: a redirect to `redirect_uri`
/// with a code (bound to the PKCE challenge) or with `error=access_denied`.
async fn authorize_endpoint(
    State(state): State<Arc<EndpointState>>,
    axum::extract::Query(q): axum::extract::Query<AuthorizeQuery>,
) -> Response {
    if q.response_type != "code"
        || q.client_id != CLIENT_ID
        || q.code_challenge_method.as_deref() != Some("S256")
        || q.code_challenge.as_deref().is_none_or(str::is_empty)
    {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let mut target = url::Url::parse(&q.redirect_uri).unwrap();
    match *state.consent.lock().unwrap() {
        Consent::Deny => {
            target
                .query_pairs_mut()
                .append_pair("error", "access_denied")
                .append_pair("state", &q.state);
        }
        Consent::Approve => {
            let code = format!("code_{:x}", rand::random::<u64>());
            let user = state.consenting_user.lock().unwrap().clone();
            state.codes.lock().unwrap().insert(
                code.clone(),
                (
                    user,
                    q.code_challenge.unwrap_or_default(),
                    q.redirect_uri.clone(),
                    q.scope.unwrap_or_default(),
                ),
            );
            target
                .query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", &q.state);
        }
    }
    (StatusCode::FOUND, [("location", target.to_string())], "").into_response()
}

/// A new access and refresh token for `user`.
fn user_tokens(state: &EndpointState, user: &str, scope: &str) -> Response {
    let n = state.calls.load(Ordering::SeqCst);
    let access = format!("ua_{user}_{n}_{:x}", rand::random::<u32>());
    let refresh = format!("rt_{user}_{:x}", rand::random::<u64>());
    state
        .refresh_tokens
        .lock()
        .unwrap()
        .insert(refresh.clone(), (user.to_owned(), false));
    Json(serde_json::json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": state.user_token_lifetime.load(Ordering::SeqCst),
        "refresh_token": refresh,
        "scope": scope,
    }))
    .into_response()
}

/// Adds an OpenID `id_token` for `user` (issued to [`CLIENT_ID`]) to a token answer.
async fn with_id_token(answer: Response, user: &str) -> Response {
    let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20)
        .await
        .unwrap();
    let mut body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": "https://provider.example",
        "sub": user,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 300,
    });
    body["id_token"] = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"the provider's own key"),
    )
    .unwrap()
    .into();
    Json(body).into_response()
}

/// OpenID userinfo: the user a `ua_<user>_…` access token was issued to.
async fn userinfo_endpoint(headers: HeaderMap) -> Response {
    let user = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ua_"))
        .and_then(|rest| rest.split('_').next());
    match user {
        Some(user) => Json(serde_json::json!({ "sub": user, "name": user })).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

fn invalid_grant() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": "invalid_grant" })),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct RevocationForm {
    token: String,
    token_type_hint: Option<String>,
}

/// RFC 7009: the client authenticates; the token is revoked (200 whether or not it was valid).
async fn revocation_endpoint(
    State(state): State<Arc<EndpointState>>,
    headers: HeaderMap,
    Form(form): Form<RevocationForm>,
) -> Response {
    use base64::Engine;
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Basic {expected}"));
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "error": "invalid_client" })),
        )
            .into_response();
    }
    if form
        .token_type_hint
        .as_deref()
        .is_some_and(|h| h != "access_token" && h != "refresh_token")
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": "unsupported_token_type" })),
        )
            .into_response();
    }
    state.revoked.lock().unwrap().push(form.token);
    StatusCode::OK.into_response()
}

#[derive(serde::Deserialize)]
struct TokenForm {
    grant_type: String,
    scope: Option<String>,
    refresh_token: Option<String>,
    code: Option<String>,
    code_verifier: Option<String>,
    redirect_uri: Option<String>,
    subject_token: Option<String>,
    subject_token_type: Option<String>,
    requested_token_type: Option<String>,
    assertion: Option<String>,
}

/// The subject token this endpoint refuses to exchange.
pub const REFUSED_SUBJECT_TOKEN: &str = "st_refused";

async fn token_endpoint(
    State(state): State<Arc<EndpointState>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    use base64::Engine;
    let n = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let mode = *state.mode.lock().unwrap();
    match mode {
        EndpointMode::ServerError => {
            return (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response();
        }
        EndpointMode::Redirect => {
            return (
                StatusCode::TEMPORARY_REDIRECT,
                [("location", "/elsewhere")],
                "",
            )
                .into_response();
        }
        EndpointMode::Oversized => {
            let padding = "x".repeat(2 * 1024 * 1024);
            return Json(serde_json::json!({
                "access_token": "at_big", "token_type": "bearer", "padding": padding,
            }))
            .into_response();
        }
        EndpointMode::Slow => tokio::time::sleep(Duration::from_secs(2)).await,
        EndpointMode::StallMidBody => {
            let start = futures::stream::iter([Ok::<_, std::io::Error>(
                axum::body::Bytes::from_static(b"{\"access_token\": \"at_"),
            )]);
            let body = futures::StreamExt::chain(start, futures::stream::pending());
            return (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(body),
            )
                .into_response();
        }
        _ => {}
    }
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Basic {expected}"));
    if form.grant_type == "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        // RFC 7523: the assertion is the grant. It must verify with the expected key, name this
        // endpoint as its audience, live at most five minutes, and carry a `jti` never seen.
        let claims = state.assertion_key.lock().unwrap().clone().and_then(|pem| {
            let key = jsonwebtoken::DecodingKey::from_ec_pem(pem.as_bytes()).ok()?;
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
            validation.validate_aud = false;
            validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
            let data = jsonwebtoken::decode::<serde_json::Value>(
                form.assertion.as_deref()?,
                &key,
                &validation,
            )
            .ok()?;
            Some(data.claims)
        });
        let url = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .map(|host| format!("http://{host}/oauth/token"))
            .unwrap_or_default();
        let fresh = claims.as_ref().is_some_and(|c| {
            let lifetime = c["exp"].as_i64().unwrap_or(0) - c["iat"].as_i64().unwrap_or(0);
            let jti = c["jti"].as_str().unwrap_or("").to_owned();
            c["aud"] == url.as_str()
                && (1..=300).contains(&lifetime)
                && !jti.is_empty()
                && state.jtis.lock().unwrap().insert(jti)
        });
        if !fresh {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": "invalid_grant" })),
            )
                .into_response();
        }
        *state.asserted.lock().unwrap() = claims;
        return Json(serde_json::json!({
            "access_token": format!("jb_{n}"),
            "token_type": "Bearer",
            "expires_in": 900,
        }))
        .into_response();
    }
    if authorized && form.grant_type == "refresh_token" {
        // Rotation: a refresh token is good once (unless reuse is allowed); its successor is new.
        state.refreshes.fetch_add(1, Ordering::SeqCst);
        let presented = form.refresh_token.clone().unwrap_or_default();
        let reuse = state.reuse_refresh_tokens.load(Ordering::SeqCst);
        let user = {
            let mut tokens = state.refresh_tokens.lock().unwrap();
            match tokens.get_mut(&presented) {
                Some((user, used)) if !*used || reuse => {
                    *used = true;
                    Some(user.clone())
                }
                _ => None,
            }
        };
        return match user {
            Some(user) => user_tokens(&state, &user, &form.scope.unwrap_or_default()),
            None => invalid_grant(),
        };
    }
    if authorized && form.grant_type == "authorization_code" {
        // RFC 7636: the verifier must hash to the challenge the code was issued for.
        let issued = form
            .code
            .as_ref()
            .and_then(|c| state.codes.lock().unwrap().remove(c));
        let Some((user, challenge, redirect_uri, scope)) = issued else {
            return invalid_grant();
        };
        let verifier = form.code_verifier.clone().unwrap_or_default();
        let hashed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
        if hashed != challenge || form.redirect_uri.as_deref() != Some(redirect_uri.as_str()) {
            return invalid_grant();
        }
        if state.openid.load(Ordering::SeqCst) {
            return with_id_token(user_tokens(&state, &user, &scope), &user).await;
        }
        return user_tokens(&state, &user, &scope);
    }
    if authorized && form.grant_type == "urn:ietf:params:oauth:grant-type:token-exchange" {
        // RFC 8693: a subject token and its type are required; the answer says what it issued.
        let (Some(subject), Some(kind)) = (&form.subject_token, &form.subject_token_type) else {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": "invalid_request" })),
            )
                .into_response();
        };
        *state.exchanged.lock().unwrap() = Some((subject.clone(), kind.clone()));
        if subject == REFUSED_SUBJECT_TOKEN
            || form.requested_token_type.as_deref()
                != Some("urn:ietf:params:oauth:token-type:access_token")
        {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": "invalid_grant" })),
            )
                .into_response();
        }
        return Json(serde_json::json!({
            "access_token": format!("xt_{n}_{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(subject))[..12].to_owned()),
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": 600,
            "scope": form.scope.clone().unwrap_or_default(),
        }))
        .into_response();
    }
    if mode == EndpointMode::RejectClient || !authorized || form.grant_type != "client_credentials"
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "error": "invalid_client" })),
        )
            .into_response();
    }
    // Tokens are random-looking and unique per call, as a real provider's are.
    let token = format!(
        "at_{}_{}",
        n,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!(
            "{}/{n}",
            state.salt
        )))[..16]
            .to_owned()
    );
    let expires_in: u64 = if mode == EndpointMode::HugeExpiresIn {
        10_000_000_000_000
    } else {
        3600
    };
    Json(serde_json::json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": expires_in,
        "scope": form.scope.unwrap_or_default(),
    }))
    .into_response()
}

async fn elsewhere(State(state): State<Arc<EndpointState>>) -> Response {
    state.elsewhere_calls.fetch_add(1, Ordering::SeqCst);
    Json(serde_json::json!({
        "access_token": "at_stolen", "token_type": "bearer", "expires_in": 3600,
    }))
    .into_response()
}
