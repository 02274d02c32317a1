//! The web console over HTTP, as a browser speaks to it: a real registry, the development issuer
//! signing people in (code + PKCE through its sign-in form), the console on loopback, and a
//! cookie-keeping client whose pages are parsed as HTML. The browser module drives the same
//! console with a real Chromium.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use connect_console::{Console, ConsoleConfig};
use connect_proto::registry::v1::{self as rpb, link_registry_client::LinkRegistryClient};
use connect_runtime::BearerAuth;
use dev_issuer::{DevIssuer, DevPerson};
use link_registry::{
    ServeConfig,
    config::OperatorSettings,
    domain::{
        model::{BindingSubject, Role},
        service::{NewRoleBinding, NewTeam},
        types::{IssuerUrl, TeamId, TeamSlug},
    },
};
use reqwest::{StatusCode, cookie::Jar, header};
use scraper::{Html, Selector};
use secrecy::ExposeSecret;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

pub const SEEDED_SECRET: &str = "sk_live_SEEDED_5ecret_value_91";
pub const SCRIPT_NAME: &str = "<script>alert(1)</script>";
pub const ADA: &str = "ada@demo.example";

type Admin = LinkRegistryClient<InterceptedService<Channel, BearerAuth>>;

/// A running console and the way to stop it.
pub struct RunningConsole {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningConsole {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

/// A registry trusting the dev issuer's people, a team with an admin group and a viewer, seeded
/// projects and a connector with a secret, and a console.
pub struct ConsoleEnv {
    pub issuer: DevIssuer,
    pub stack: connect_dev::LocalStack,
    pub console: RunningConsole,
    pub session_db: String,
    pub admin_key: String,
    pub stripe_id: String,
    _dir: tempfile::TempDir,
}

impl ConsoleEnv {
    pub async fn start() -> Self {
        let issuer = DevIssuer::start(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        issuer.add_person(DevPerson {
            subject: "ada".into(),
            email: ADA.into(),
            groups: vec!["demo-admins".into()],
        });
        issuer.add_person(DevPerson {
            subject: "vic".into(),
            email: "vic@demo.example".into(),
            groups: vec![],
        });
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::local(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("r.db").display()
        ));
        config.operators = Some(OperatorSettings {
            issuers: vec![issuer.issuer_url()],
            audiences: vec!["connect-console".into()],
            leeway: Duration::from_secs(30),
            policy: connect_types::UrlPolicy::loopback(),
            fetch_timeout: Duration::from_secs(3),
        });
        let trusted = vec![issuer.issuer_url()];
        let stack = connect_dev::LocalStack::start(config, |url, key| {
            token_broker::BrokerConfig::local(url, key, trusted, "https://vercel.com/demo".into())
        })
        .await
        .unwrap();
        let team = TeamId::parse("team_demo").unwrap();
        let registry = stack.registry();
        registry
            .create_team(NewTeam {
                id: team.clone(),
                slug: TeamSlug::parse("demo").unwrap(),
                issuer: IssuerUrl::parse(issuer.issuer()).unwrap(),
            })
            .await
            .unwrap();
        for (who, role) in [
            (BindingSubject::Group("demo-admins".into()), Role::Admin),
            (BindingSubject::Subject("vic".into()), Role::Viewer),
        ] {
            registry
                .create_role_binding_as_operator(
                    &team,
                    NewRoleBinding {
                        team: None,
                        issuer: IssuerUrl::parse(issuer.issuer()).unwrap(),
                        who,
                        role,
                    },
                )
                .await
                .unwrap();
        }
        let (_, admin_key) = registry
            .create_api_key(Some(team.clone()), Role::Admin)
            .await
            .unwrap();
        let admin_key = admin_key.expose_secret().to_owned();
        let session_db = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("sessions.db").display()
        );
        let console = start_console(&stack, &issuer, &session_db).await;
        let mut env = Self {
            issuer,
            stack,
            console,
            session_db,
            admin_key,
            stripe_id: String::new(),
            _dir: dir,
        };
        let mut admin = env.admin();
        for (id, name) in [("prj_web", "web"), ("prj_api", "api")] {
            admin
                .create_project(rpb::CreateProjectRequest {
                    id: id.into(),
                    name: name.into(),
                })
                .await
                .unwrap();
        }
        env.stripe_id = admin
            .create_connector(rpb::CreateConnectorRequest {
                uid: "api-key/stripe".into(),
                r#type: "api-key".into(),
                name: SCRIPT_NAME.into(),
                config: Default::default(),
                secrets: [("api_key".to_owned(), SEEDED_SECRET.to_owned())].into(),
            })
            .await
            .unwrap()
            .into_inner()
            .id;
        env
    }

    pub fn admin(&self) -> Admin {
        let channel = Channel::from_shared(format!("http://{}", self.stack.registry_addr()))
            .unwrap()
            .connect_lazy();
        LinkRegistryClient::with_interceptor(channel, BearerAuth::new(&self.admin_key).unwrap())
    }

    pub async fn link(&self, connector: &str, project: &str) -> Option<Vec<String>> {
        match self
            .admin()
            .get_project_link(rpb::GetProjectLinkRequest {
                connector: connector.into(),
                project: project.into(),
            })
            .await
        {
            Ok(link) => Some(link.into_inner().environments),
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => panic!("{status:?}"),
        }
    }
}

pub async fn start_console(
    stack: &connect_dev::LocalStack,
    issuer: &DevIssuer,
    session_db: &str,
) -> RunningConsole {
    let console = Console::build(ConsoleConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        registry_url: format!("http://{}", stack.registry_addr()),
        registry_ca: None,
        public_url: None,
        operator_issuer: issuer.issuer().parse().unwrap(),
        client_id: "connect-console".into(),
        client_secret: None,
        session_database_url: session_db.into(),
        allow_key_login: true,
    })
    .await
    .unwrap();
    let url = format!("http://{}", console.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(console.run(async {
        let _ = stopped.await;
    }));
    RunningConsole {
        url,
        stop: Some(stop),
        task,
    }
}

/// A cookie-keeping HTTP client: `follow` follows redirects, `raw` shows them; both share the
/// cookies, as one browser.
pub struct Browser {
    pub follow: reqwest::Client,
    pub raw: reqwest::Client,
}

pub struct Page {
    pub status: StatusCode,
    pub url: String,
    pub headers: header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn html(&self) -> Html {
        Html::parse_document(&self.body)
    }

    /// The CSRF token of the page's forms.
    pub fn csrf(&self) -> String {
        let selector = Selector::parse("input[name=csrf]").unwrap();
        self.html()
            .select(&selector)
            .next()
            .and_then(|e| e.value().attr("value"))
            .unwrap_or_else(|| panic!("no CSRF token on {}:\n{}", self.url, self.body))
            .to_owned()
    }

    /// The actions of every POST form on the page.
    pub fn post_actions(&self) -> Vec<String> {
        let selector = Selector::parse("form").unwrap();
        self.html()
            .select(&selector)
            .filter(|f| f.value().attr("method") == Some("post"))
            .map(|f| f.value().attr("action").unwrap_or_default().to_owned())
            .collect()
    }

    /// The flash message after a POST-redirect-GET.
    pub fn flash(&self) -> String {
        let selector = Selector::parse(".flash").unwrap();
        self.html()
            .select(&selector)
            .map(|e| e.text().collect::<String>())
            .collect::<Vec<_>>()
            .join(" ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Browser {
    pub fn new() -> Self {
        let jar = Arc::new(Jar::default());
        let build = |policy| {
            reqwest::Client::builder()
                .cookie_provider(jar.clone())
                .redirect(policy)
                .build()
                .unwrap()
        };
        Self {
            follow: build(reqwest::redirect::Policy::limited(10)),
            raw: build(reqwest::redirect::Policy::none()),
        }
    }

    async fn page(response: reqwest::Response) -> Page {
        Page {
            status: response.status(),
            url: response.url().to_string(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&self, url: &str) -> Page {
        Self::page(self.follow.get(url).send().await.unwrap()).await
    }

    pub async fn get_raw(&self, url: &str) -> Page {
        Self::page(self.raw.get(url).send().await.unwrap()).await
    }

    /// A form posted from the console's own page (same origin), redirects followed.
    pub async fn post(&self, base: &str, path: &str, fields: &[(&str, &str)]) -> Page {
        Self::page(
            self.follow
                .post(format!("{base}{path}"))
                .header(header::ORIGIN, base)
                .header("sec-fetch-site", "same-origin")
                .form(fields)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Signs `subject` in at the dev issuer through the console; answers with the callback's
    /// response (the one that sets the session cookie).
    pub async fn sign_in(&self, base: &str, subject: &str) -> Page {
        let authorize = self.get(&format!("{base}/login/start")).await;
        assert_eq!(authorize.status, StatusCode::OK, "{}", authorize.body);
        let html = authorize.html();
        let forms = Selector::parse("form").unwrap();
        let inputs = Selector::parse("input").unwrap();
        let button = Selector::parse(&format!("button[value={subject}]")).unwrap();
        let form = html
            .select(&forms)
            .find(|f| f.select(&button).next().is_some())
            .unwrap_or_else(|| panic!("no sign-in for {subject}: {}", authorize.body));
        let mut fields: Vec<(String, String)> = form
            .select(&inputs)
            .map(|i| {
                (
                    i.value().attr("name").unwrap().to_owned(),
                    i.value().attr("value").unwrap_or_default().to_owned(),
                )
            })
            .collect();
        fields.push(("subject".into(), subject.into()));
        let issuer = url::Url::parse(&authorize.url).unwrap();
        let back = self
            .raw
            .post(issuer.join("/authorize").unwrap())
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(back.status(), StatusCode::SEE_OTHER);
        let callback = back.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            callback.starts_with(&format!("{base}/auth/callback?")),
            "{callback}"
        );
        Self::page(self.raw.get(&callback).send().await.unwrap()).await
    }
}

fn set_cookies(page: &Page) -> Vec<String> {
    page.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn assert_security_headers(page: &Page) {
    let csp = page
        .headers
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap_or_else(|| panic!("no CSP on {} ({})", page.url, page.status))
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(
            page.headers.get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "{name} on {}",
            page.url
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_and_every_form_reaches_its_rpc() {
    let env = ConsoleEnv::start().await;
    let base = env.console.url.clone();
    let browser = Browser::new();

    // Not signed in: every page sends the browser to the sign-in page.
    let first = browser.get_raw(&format!("{base}/")).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    assert_eq!(first.headers[header::LOCATION], "/login");
    let start = browser.get_raw(&format!("{base}/login/start")).await;
    let to = url::Url::parse(start.headers[header::LOCATION].to_str().unwrap()).unwrap();
    assert!(
        to.as_str()
            .starts_with(&format!("{}/authorize?", env.issuer.issuer()))
    );
    let query: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["client_id"], "connect-console");
    assert_eq!(query["redirect_uri"], format!("{base}/auth/callback"));
    assert!(query["state"].len() >= 16 && query["nonce"].len() >= 16);
    let sign_in_cookie = set_cookies(&start).join("\n");
    assert!(sign_in_cookie.contains("HttpOnly") && sign_in_cookie.contains("SameSite=Lax"));

    // Signed in: the session cookie is HttpOnly and strict.
    let signed_in = browser.sign_in(&base, "ada").await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);
    let session_cookie = set_cookies(&signed_in)
        .into_iter()
        .find(|c| c.starts_with("connect_session="))
        .expect("a session cookie");
    assert!(session_cookie.contains("HttpOnly"), "{session_cookie}");
    assert!(
        session_cookie.contains("SameSite=Strict"),
        "{session_cookie}"
    );
    assert!(session_cookie.contains("Path=/"), "{session_cookie}");
    let home = browser.get(&format!("{base}/")).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains(&format!("user:{ADA}")), "{}", home.body);
    assert!(home.body.contains("api-key/stripe"));

    // A project, through the form.
    let created = browser
        .post(
            &base,
            "/projects",
            &[("csrf", &home.csrf()), ("id", "prj_new"), ("name", "new")],
        )
        .await;
    assert!(
        created.flash().contains("Added project new (prj_new)"),
        "{}",
        created.flash()
    );
    let project = env
        .admin()
        .get_project(rpb::GetProjectRequest {
            project: "prj_new".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(project.name, "new");

    // A connector: the type's keys as fields, the secret write-only.
    let form = browser
        .get(&format!("{base}/connectors/new?type=api-key"))
        .await;
    assert!(
        form.body.contains("name=\"secret.api_key\""),
        "{}",
        form.body
    );
    let created = browser
        .post(
            &base,
            "/connectors/new",
            &[
                ("csrf", &form.csrf()),
                ("type", "api-key"),
                ("name", "fresh"),
                ("display_name", "Fresh"),
                ("secret.api_key", "sk_fresh_written_once"),
            ],
        )
        .await;
    assert!(
        created.flash().contains("Created api-key/fresh"),
        "{}",
        created.flash()
    );
    assert!(!created.body.contains("sk_fresh_written_once"));
    let fresh = env
        .admin()
        .get_connector(rpb::GetConnectorRequest {
            connector: "api-key/fresh".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.secret_names, ["api_key"]);
    assert!(created.url.ends_with(&format!("/connectors/{}", fresh.id)));
    // A refused creation shows the registry's reason and keeps the non-secret fields.
    let refused = browser
        .post(
            &base,
            "/connectors/new",
            &[
                ("csrf", &form.csrf()),
                ("type", "api-key"),
                ("name", "fresh"),
                ("secret.api_key", "sk_again"),
            ],
        )
        .await;
    assert!(refused.body.contains("ALREADY_EXISTS"), "{}", refused.body);
    assert!(!refused.body.contains("sk_again"));

    // Linked Projects: attach for two environments, untick one and save, detach, undo.
    let id = env.stripe_id.clone();
    let page = browser.get(&format!("{base}/connectors/{id}")).await;
    let csrf = page.csrf();
    let attached = browser
        .post(
            &base,
            &format!("/connectors/{id}/links"),
            &[
                ("csrf", &csrf),
                ("project", "prj_web"),
                ("environments", "production"),
                ("environments", "preview"),
            ],
        )
        .await;
    assert!(
        attached
            .flash()
            .contains("Saved: web may use api-key/stripe in preview, production"),
        "{}",
        attached.flash()
    );
    assert_eq!(
        env.link(&id, "prj_web").await.unwrap(),
        ["preview", "production"]
    );
    let row = Selector::parse("[data-project=prj_web] input[name=environments]").unwrap();
    let boxes: Vec<_> = attached
        .html()
        .select(&row)
        .map(|i| {
            (
                i.value().attr("value").unwrap().to_owned(),
                i.value().attr("checked").is_some(),
            )
        })
        .collect();
    assert_eq!(
        boxes,
        [
            ("production".to_owned(), true),
            ("preview".to_owned(), true),
            ("development".to_owned(), false)
        ]
    );
    let saved = browser
        .post(
            &base,
            &format!("/connectors/{id}/links"),
            &[
                ("csrf", &csrf),
                ("project", "prj_web"),
                ("environments", "production"),
            ],
        )
        .await;
    assert!(
        saved.flash().contains("in production."),
        "{}",
        saved.flash()
    );
    assert_eq!(env.link(&id, "prj_web").await.unwrap(), ["production"]);
    // Nothing ticked is not a detach: it says what to do instead.
    let nothing = browser
        .post(
            &base,
            &format!("/connectors/{id}/links"),
            &[("csrf", &csrf), ("project", "prj_web")],
        )
        .await;
    assert!(
        nothing.flash().contains("Tick at least one environment"),
        "{}",
        nothing.flash()
    );
    assert_eq!(env.link(&id, "prj_web").await.unwrap(), ["production"]);
    let detached = browser
        .post(
            &base,
            &format!("/connectors/{id}/links/prj_web/detach"),
            &[("csrf", &csrf)],
        )
        .await;
    assert!(
        detached.flash().contains("Detached web"),
        "{}",
        detached.flash()
    );
    assert_eq!(env.link(&id, "prj_web").await, None);
    assert!(
        detached
            .post_actions()
            .contains(&format!("/connectors/{id}/links"))
    );
    let undone = browser
        .post(
            &base,
            &format!("/connectors/{id}/links"),
            &[
                ("csrf", &csrf),
                ("project", "prj_web"),
                ("environments", "production"),
            ],
        )
        .await;
    assert!(undone.flash().starts_with("Saved"), "{}", undone.flash());
    // Save sends the ticked built-in environments; the link keeps its custom environments, its
    // end, its ceilings and its quota.
    let staging = env
        .admin()
        .create_environment(rpb::CreateEnvironmentRequest {
            project: "prj_web".into(),
            slug: "staging".into(),
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let ends = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 3600,
        nanos: 0,
    };
    env.admin()
        .attach_project(rpb::AttachProjectRequest {
            connector: id.clone(),
            project: "prj_web".into(),
            environments: vec!["production".into(), "staging".into()],
            expire_time: Some(ends),
            allowed_subjects: vec!["app".into()],
            max_issuances_per_hour: 7,
            ..Default::default()
        })
        .await
        .unwrap();
    let kept = browser
        .post(
            &base,
            &format!("/connectors/{id}/links"),
            &[
                ("csrf", &csrf),
                ("project", "prj_web"),
                ("environments", "preview"),
            ],
        )
        .await;
    assert!(kept.flash().starts_with("Saved"), "{}", kept.flash());
    let link = env
        .admin()
        .get_project_link(rpb::GetProjectLinkRequest {
            connector: id.clone(),
            project: "prj_web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        link.environments,
        ["preview".to_owned(), staging.id.clone()]
    );
    assert_eq!(link.expire_time, Some(ends));
    assert_eq!(link.allowed_subjects, ["app"]);
    assert_eq!(link.max_issuances_per_hour, 7);
    env_attach(&env, &id, "prj_web", &["production"]).await;

    // The project page disconnects.
    let project_page = browser.get(&format!("{base}/projects/prj_web")).await;
    assert!(project_page.body.contains("Disconnect"));
    let disconnected = browser
        .post(
            &base,
            "/projects/prj_web/disconnect",
            &[("csrf", &csrf), ("connector", &id)],
        )
        .await;
    assert!(
        disconnected
            .flash()
            .contains("Disconnected api-key/stripe from web"),
        "{}",
        disconnected.flash()
    );
    assert_eq!(env.link(&id, "prj_web").await, None);

    // The access check: not linked, then not enabled, then allowed, each with its fix.
    let access =
        |env: &str| format!("{base}/access?project=prj_web&environment={env}&connector={id}");
    let denied = browser.get(&access("preview")).await;
    assert!(
        denied.body.contains("ClientNotLinkedToProjectError"),
        "{}",
        denied.body
    );
    assert!(denied.body.contains("Apply the fix"));
    // Answered by the registry's ExplainAccess: every check, the failing one and its command.
    assert!(
        denied
            .body
            .contains(r#"data-check="link" data-outcome="fail""#),
        "{}",
        denied.body
    );
    assert!(
        denied
            .body
            .contains(r#"data-check="type_rules" data-outcome="skip""#)
    );
    assert!(
        denied.body.contains("Fix:</strong> <code>connect attach "),
        "{}",
        denied.body
    );
    env_attach(&env, &id, "prj_web", &["production"]).await;
    let not_enabled = browser.get(&access("preview")).await;
    assert!(
        not_enabled
            .body
            .contains("ClientNotEnabledForEnvironmentError")
    );
    let allowed = browser.get(&access("production")).await;
    assert!(allowed.body.contains("Allowed"), "{}", allowed.body);

    // The audit: the person's changes, filtered, and the same as CSV.
    let audit = browser
        .get(&format!("{base}/audit?action=project.attach"))
        .await;
    let actions = Selector::parse("tbody tr").unwrap();
    let rows: Vec<_> = audit
        .html()
        .select(&actions)
        .map(|r| r.value().attr("data-action").unwrap().to_owned())
        .collect();
    assert!(
        rows.len() >= 3 && rows.iter().all(|a| a == "project.attach"),
        "{rows:?}"
    );
    assert!(audit.body.contains(&format!("user:{ADA}")));
    assert!(
        audit.body.contains("<del>"),
        "a readable diff: {}",
        audit.body
    );
    let csv = browser
        .get(&format!(
            "{base}/audit.csv?action=project.detach&actor=user:{ADA}"
        ))
        .await;
    assert_eq!(csv.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    let mut lines = csv.body.lines();
    assert_eq!(
        lines.next(),
        Some("time,actor,actor_issuer,action,target,before,after")
    );
    let detaches: Vec<_> = lines.collect();
    assert_eq!(detaches.len(), 2, "{}", csv.body);
    assert!(
        detaches
            .iter()
            .all(|l| l.contains(",project.detach,") && l.contains(&format!("user:{ADA}")))
    );

    // Issuances and their revocation (asked once, counts shown).
    let deployment = dev_issuer::Deployment {
        owner: "demo".into(),
        owner_id: "team_demo".into(),
        project: "web".into(),
        project_id: "prj_web".into(),
        environment: "production".into(),
        audience: "https://vercel.com/demo".into(),
    };
    let token = env.issuer.mint(
        &deployment,
        Duration::from_secs(600),
        dev_issuer::Alg::RS256,
    );
    let mut broker = connect_proto::broker::v1::token_broker_client::TokenBrokerClient::new(
        Channel::from_shared(format!("http://{}", env.stack.broker_addr()))
            .unwrap()
            .connect_lazy(),
    );
    let mut request = tonic::Request::new(connect_proto::broker::v1::GetTokenRequest {
        connector: "api-key/stripe".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    broker
        .get_token(request)
        .await
        .expect("the linked project gets its token");
    let issuances = browser
        .get(&format!("{base}/issuances?connector={id}"))
        .await;
    assert!(issuances.body.contains("prj_web"), "{}", issuances.body);
    let ask = browser
        .post(
            &base,
            "/issuances/revoke",
            &[("csrf", &csrf), ("connector", &id), ("subject", "")],
        )
        .await;
    assert!(ask.body.contains("Revoke tokens?"), "{}", ask.body);
    let revoked = browser
        .post(
            &base,
            "/issuances/revoke",
            &[
                ("csrf", &csrf),
                ("connector", &id),
                ("subject", ""),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert!(
        revoked.flash().contains("1 token(s) found, 1 revoked"),
        "{}",
        revoked.flash()
    );

    // Grants: one imported, revoked from the page.
    let crm = env
        .admin()
        .create_connector(rpb::CreateConnectorRequest {
            uid: "oauth2/crm".into(),
            r#type: "oauth2".into(),
            name: "CRM".into(),
            config: [(
                "token_url".to_owned(),
                "http://127.0.0.1:9/token".to_owned(),
            )]
            .into(),
            secrets: [
                ("client_id".to_owned(), "crm".to_owned()),
                (
                    "client_secret".to_owned(),
                    "crm_client_SECRET_value".to_owned(),
                ),
            ]
            .into(),
        })
        .await
        .unwrap()
        .into_inner();
    let imported = env
        .admin()
        .import_grants(rpb::ImportGrantsRequest {
            connector: crm.id.clone(),
            grants: vec![rpb::ImportedGrant {
                user_id: "bob".into(),
                environment: "production".into(),
                access_token: "at_bob_GRANT_secret".into(),
                refresh_token: "rt_bob_GRANT_secret".into(),
                project: "prj_web".into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imported.imported, 1, "{imported:?}");
    let grants = browser.get(&format!("{base}/grants")).await;
    assert!(grants.body.contains("bob"), "{}", grants.body);
    assert!(!grants.body.contains("GRANT_secret"));
    let revoked = browser
        .post(
            &base,
            "/grants/revoke",
            &[
                ("csrf", &csrf),
                ("connector", &crm.id),
                ("user", "bob"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert!(
        revoked.flash().contains("1 grant(s) deleted"),
        "{}",
        revoked.flash()
    );

    // Keys: listed, one revoked after the question.
    let keys = browser.get(&format!("{base}/keys")).await;
    let key_id = env
        .admin()
        .list_api_keys(rpb::ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys[0]
        .id
        .clone();
    assert!(keys.body.contains(&key_id));
    let ask = browser
        .post(&base, &format!("/keys/{key_id}/revoke"), &[("csrf", &csrf)])
        .await;
    assert!(ask.body.contains("cannot be restored"), "{}", ask.body);
    let revoked = browser
        .post(
            &base,
            &format!("/keys/{key_id}/revoke"),
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert!(
        revoked.flash().contains(&format!("Revoked {key_id}")),
        "{}",
        revoked.flash()
    );

    // Deleting a connector is asked once, with its consequence.
    let ask = browser
        .post(
            &base,
            &format!("/connectors/{}/delete", fresh.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert!(ask.body.contains("cannot be undone"), "{}", ask.body);
    let deleted = browser
        .post(
            &base,
            &format!("/connectors/{}/delete", fresh.id),
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert!(
        deleted.flash().contains("Deleted api-key/fresh"),
        "{}",
        deleted.flash()
    );

    // Who am I.
    let me = browser.get(&format!("{base}/me")).await;
    assert!(
        me.body.contains("operator") && me.body.contains("team_demo"),
        "{}",
        me.body
    );

    // Signing out ends the session for good: the old cookie opens nothing.
    let cookie = session_cookie.split(';').next().unwrap().to_owned();
    let out = browser.post(&base, "/logout", &[("csrf", &csrf)]).await;
    assert!(out.url.ends_with("/login"), "{}", out.url);
    let replay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{base}/"))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::SEE_OTHER);
    assert_eq!(replay.headers()[header::LOCATION], "/login");
}

async fn env_attach(env: &ConsoleEnv, connector: &str, project: &str, environments: &[&str]) {
    env.admin()
        .attach_project(rpb::AttachProjectRequest {
            connector: connector.into(),
            project: project.into(),
            environments: environments.iter().map(|e| e.to_string()).collect(),
            expire_time: None,
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_posts_are_refused_output_is_escaped_and_no_secret_is_rendered() {
    let env = ConsoleEnv::start().await;
    let base = env.console.url.clone();
    let id = env.stripe_id.clone();
    let browser = Browser::new();
    let login = browser.get(&format!("{base}/login")).await;
    assert_security_headers(&login);
    browser.sign_in(&base, "ada").await;
    let page = browser.get(&format!("{base}/connectors/{id}")).await;
    let csrf = page.csrf();
    let attach = format!("{base}/connectors/{id}/links");
    let fields = [
        ("csrf", csrf.as_str()),
        ("project", "prj_web"),
        ("environments", "production"),
    ];

    // Cross-site, from another origin, with no origin at all, without or with a stale token.
    let attempts = [
        browser
            .follow
            .post(&attach)
            .header("sec-fetch-site", "cross-site")
            .header(header::ORIGIN, "http://evil.example")
            .form(&fields),
        browser
            .follow
            .post(&attach)
            .header("sec-fetch-site", "same-site")
            .form(&fields),
        browser
            .follow
            .post(&attach)
            .header(header::ORIGIN, "http://evil.example")
            .form(&fields),
        browser.follow.post(&attach).form(&fields),
        browser
            .follow
            .post(&attach)
            .header(header::ORIGIN, &base)
            .form(&[("project", "prj_web"), ("environments", "production")]),
        browser
            .follow
            .post(&attach)
            .header("sec-fetch-site", "same-origin")
            .form(&[
                ("csrf", "stale"),
                ("project", "prj_web"),
                ("environments", "production"),
            ]),
    ];
    for attempt in attempts {
        let refused = Browser::page(attempt.send().await.unwrap()).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
        assert_security_headers(&refused);
    }
    assert_eq!(
        env.link(&id, "prj_web").await,
        None,
        "no forged POST changed anything"
    );
    // Another method, a page that does not exist: refused, with the headers too.
    let put = browser.follow.put(&attach).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
    let missing = browser.get(&format!("{base}/no/such/page")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_security_headers(&missing);
    // A callback this browser did not start is refused.
    let stray = reqwest::get(format!("{base}/auth/callback?code=x&state=y"))
        .await
        .unwrap();
    assert_eq!(stray.status(), StatusCode::BAD_REQUEST);
    // An API-key sign-in posted from another site is refused.
    let forged_key_login = reqwest::Client::new()
        .post(format!("{base}/login/key"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("key", env.admin_key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged_key_login.status(), StatusCode::FORBIDDEN);

    // The same form from the console's page passes.
    let ok = browser
        .post(&base, &format!("/connectors/{id}/links"), &fields)
        .await;
    assert!(ok.flash().starts_with("Saved"), "{}", ok.flash());

    // Every page: the headers, the connector's name escaped, no secret value.
    let pages = [
        "/".to_owned(),
        format!("/connectors/{id}"),
        "/connectors/new?type=api-key".into(),
        "/projects".into(),
        "/projects/prj_web".into(),
        format!("/access?project=prj_web&environment=production&connector={id}"),
        "/audit".into(),
        "/audit.csv".into(),
        "/grants".into(),
        "/issuances".into(),
        "/keys".into(),
        "/me".into(),
        "/static/console.css".into(),
        "/logout".into(),
    ];
    for path in &pages {
        let page = browser.get(&format!("{base}{path}")).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert_security_headers(&page);
        assert!(
            !page.body.contains(SEEDED_SECRET),
            "{path} shows the secret"
        );
        assert!(!page.body.contains(&env.admin_key), "{path} shows a key");

        if path.ends_with(".css") || path.ends_with(".csv") {
            continue;
        }
        assert!(
            !page.body.to_lowercase().contains("<script"),
            "{path}: {}",
            page.body
        );
        if ["/", "/connectors/"]
            .iter()
            .any(|p| path == p || path.starts_with("/connectors/conn"))
        {
            assert!(
                (page.body.contains("&#60;script&#62;alert(1)")
                    || page.body.contains("&lt;script&gt;alert(1)")),
                "{path}: {}",
                page.body
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_controls_and_sessions_outlive_a_restart_across_replicas() {
    let mut env = ConsoleEnv::start().await;
    let id = env.stripe_id.clone();
    env_attach(&env, &id, "prj_web", &["preview"]).await;
    let base = env.console.url.clone();

    // A viewer: every page without a mutating form; a forged change is the registry's refusal.
    let viewer = Browser::new();
    viewer.sign_in(&base, "vic").await;
    for path in [
        "/".to_owned(),
        format!("/connectors/{id}"),
        "/projects".into(),
        "/projects/prj_web".into(),
        format!("/access?project=prj_api&environment=production&connector={id}"),
        "/audit".into(),
        "/grants".into(),
        format!("/issuances?connector={id}"),
        "/me".into(),
    ] {
        let page = viewer.get(&format!("{base}{path}")).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        let actions = page.post_actions();
        assert!(
            actions.iter().all(|a| a == "/logout" || a == "/team"),
            "{path} offers a viewer {actions:?}"
        );
        assert!(
            !page.body.contains(">Save<") && !page.body.contains(">Detach<"),
            "{path}"
        );
    }
    let keys = viewer.get(&format!("{base}/keys")).await;
    assert_eq!(keys.status, StatusCode::FORBIDDEN);
    assert!(keys.body.contains("ROLE_NOT_ALLOWED"));
    let page = viewer.get(&format!("{base}/")).await;
    let forged = viewer
        .post(
            &base,
            &format!("/connectors/{id}/links"),
            &[
                ("csrf", &page.csrf()),
                ("project", "prj_web"),
                ("environments", "production"),
            ],
        )
        .await;
    assert!(
        forged.flash().contains("ROLE_NOT_ALLOWED"),
        "{}",
        forged.flash()
    );
    assert_eq!(env.link(&id, "prj_web").await.unwrap(), ["preview"]);

    // An admin's session works on a second replica and after the first restarts.
    let admin = Browser::new();
    admin.sign_in(&base, "ada").await;
    let replica = start_console(&env.stack, &env.issuer, &env.session_db).await;
    let there = admin.get(&format!("{}/", replica.url)).await;
    assert_eq!(there.status, StatusCode::OK);
    assert!(
        there.body.contains(&format!("user:{ADA}")),
        "{}",
        there.body
    );
    let old = std::mem::replace(
        &mut env.console,
        start_console(&env.stack, &env.issuer, &env.session_db).await,
    );
    old.stop().await;
    let restarted = admin.get(&format!("{}/", env.console.url)).await;
    assert!(
        restarted.body.contains(&format!("user:{ADA}")),
        "{}",
        restarted.body
    );
    // A change made on the replica is audited as the person.
    let saved = admin
        .post(
            &replica.url,
            &format!("/connectors/{id}/links"),
            &[
                ("csrf", &there.csrf()),
                ("project", "prj_web"),
                ("environments", "development"),
            ],
        )
        .await;
    assert!(saved.flash().starts_with("Saved"), "{}", saved.flash());
    // Signing out on the replica ends the session on the restarted console too.
    admin
        .post(&replica.url, "/logout", &[("csrf", &there.csrf())])
        .await;
    let after = admin.get_raw(&format!("{}/", env.console.url)).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);

    // An API-key sign-in (--allow-key-login) acts as the key.
    let keyed = Browser::new();
    let signed = Browser::page(
        keyed
            .follow
            .post(format!("{base}/login/key", base = env.console.url))
            .header("sec-fetch-site", "same-origin")
            .form(&[("key", env.admin_key.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(signed.status, StatusCode::OK, "{}", signed.body);
    assert!(signed.body.contains("key:key_"), "{}", signed.body);
    assert!(!signed.body.contains(&env.admin_key));
    replica.stop().await;

    // A person bound in two teams picks one in the header; the role follows the team.
    let other = TeamId::parse("team_other").unwrap();
    let registry = env.stack.registry();
    registry
        .create_team(NewTeam {
            id: other.clone(),
            slug: TeamSlug::parse("other").unwrap(),
            issuer: IssuerUrl::parse(env.issuer.issuer()).unwrap(),
        })
        .await
        .unwrap();
    registry
        .create_role_binding_as_operator(
            &other,
            NewRoleBinding {
                team: None,
                issuer: IssuerUrl::parse(env.issuer.issuer()).unwrap(),
                who: BindingSubject::Group("demo-admins".into()),
                role: Role::Viewer,
            },
        )
        .await
        .unwrap();
    let both = Browser::new();
    let base = env.console.url.clone();
    both.sign_in(&base, "ada").await;
    let home = both.get(&format!("{base}/")).await;
    let teams = Selector::parse("select[name=team] option").unwrap();
    let offered: Vec<_> = home
        .html()
        .select(&teams)
        .map(|o| o.value().attr("value").unwrap().to_owned())
        .collect();
    assert_eq!(offered.len(), 2, "{offered:?}");
    assert!(offered.contains(&"team_other".to_owned()));
    let switched = both
        .post(
            &base,
            "/team",
            &[("csrf", &home.csrf()), ("team", "team_other")],
        )
        .await;
    assert!(
        switched.flash().contains("Now acting in team_other"),
        "{}",
        switched.flash()
    );
    assert!(
        !switched.body.contains("api-key/stripe"),
        "another team's rows"
    );
    assert!(
        switched
            .post_actions()
            .iter()
            .all(|a| a == "/logout" || a == "/team"),
        "a viewer there"
    );
    let back = both
        .post(
            &base,
            "/team",
            &[("csrf", &home.csrf()), ("team", "team_demo")],
        )
        .await;
    assert!(back.body.contains("api-key/stripe") && back.body.contains("New connector"));
    let nowhere = both
        .post(
            &base,
            "/team",
            &[("csrf", &home.csrf()), ("team", "team_nope")],
        )
        .await;
    assert!(
        nowhere.flash().contains("You have no role in team_nope"),
        "{}",
        nowhere.flash()
    );
}
