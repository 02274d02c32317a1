//! The built `connect` binary, driven as a user drives it, against a real registry and broker on
//! loopback (started through `connect_dev::LocalStack`) and a development OIDC issuer.

use std::{
    io::Write,
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use connect_dev::LocalStack;
use dev_issuer::{Alg, Deployment, DevIssuer};
use link_registry::{
    ServeConfig,
    domain::{
        model::Role,
        service::NewTeam,
        types::{IssuerUrl, TeamId, TeamSlug},
    },
};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

const AUDIENCE: &str = "https://vercel.com/acme";

struct System {
    stack: LocalStack,
    issuer: DevIssuer,
    admin: String,
    _dir: tempfile::TempDir,
}

/// What one run of `connect` did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> String {
        assert_eq!(self.code, 0, "{self:?}");
        self.stdout
    }

    fn json(self) -> Value {
        serde_json::from_str(&self.ok()).expect("JSON output")
    }

    fn failed(self, code: i32, starts_with: &str) -> String {
        assert_eq!(self.code, code, "{self:?}");
        assert!(self.stderr.starts_with(starts_with), "{self:?}");
        self.stderr
    }
}

impl System {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(configure: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let issuer = DevIssuer::start(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let issuers = vec![issuer.issuer_url()];
        let mut config = ServeConfig::local(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("registry.db").display()
        ));
        configure(&mut config);
        let stack = LocalStack::start(config, |registry_url, key| {
            token_broker::BrokerConfig::local(registry_url, key, issuers, AUDIENCE.into())
        })
        .await
        .unwrap();
        let team = TeamId::parse("team_acme").unwrap();
        stack
            .registry()
            .create_team(NewTeam {
                id: team.clone(),
                slug: TeamSlug::parse("acme").unwrap(),
                issuer: IssuerUrl::parse(issuer.issuer()).unwrap(),
            })
            .await
            .unwrap();
        let (_, admin) = stack
            .registry()
            .create_api_key(Some(team), Role::Admin)
            .await
            .unwrap();
        Self {
            stack,
            issuer,
            admin: admin.expose_secret().to_owned(),
            _dir: dir,
        }
    }

    fn oidc_token(&self, project_id: &str, environment: &str) -> String {
        self.issuer.mint(
            &Deployment {
                owner: "acme".into(),
                owner_id: "team_acme".into(),
                project: "web".into(),
                project_id: project_id.into(),
                environment: environment.into(),
                audience: AUDIENCE.into(),
            },
            Duration::from_secs(600),
            Alg::ES256,
        )
    }

    /// `connect ARGS` with the admin key and both URLs in the environment, `stdin` on its input.
    async fn connect(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_connect"));
        command
            .args(args)
            .env_clear()
            .env(
                "CONNECT_REGISTRY_URL",
                format!("http://{}", self.stack.registry_addr()),
            )
            .env(
                "CONNECT_BROKER_URL",
                format!("http://{}", self.stack.broker_addr()),
            )
            .env("CONNECT_API_KEY", &self.admin)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let stdin = stdin.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().expect("connect runs");
            let mut input = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).unwrap();
            }
            drop(input);
            let out = child.wait_with_output().unwrap();
            Run {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8(out.stdout).unwrap(),
                stderr: String::from_utf8(out.stderr).unwrap(),
            }
        })
        .await
        .unwrap()
    }

    async fn stop(self) {
        self.stack.stop().await.unwrap();
        self.issuer.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_command_in_text_and_json() {
    let system = System::start().await;
    let c = |args: &'static [&'static str]| system.connect(args, None, &[]);
    let mut everything = String::new();

    let out = c(&["projects", "create", "prj_web", "--name", "web"])
        .await
        .ok();
    assert_eq!(out, "Created project prj_web (web)\n");
    let project = system
        .connect(
            &[
                "projects", "create", "prj_docs", "--name", "docs", "-F", "json",
            ],
            None,
            &[],
        )
        .await
        .json();
    assert_eq!(
        (
            project["id"].as_str(),
            project["name"].as_str(),
            project["ownerId"].as_str()
        ),
        (Some("prj_docs"), Some("docs"), Some("team_acme"))
    );
    let projects = c(&["projects", "list"]).await.ok();
    assert!(
        projects.starts_with("ID        NAME  CREATED\nprj_docs  docs  "),
        "{projects}"
    );

    // Secrets from a file and from stdin, never printed back.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("stripe.key");
    std::fs::write(&key_file, "sk_from_file_123\n").unwrap();
    let secret_arg = format!("api_key=@{}", key_file.display());
    let out = system
        .connect(
            &["create", "api-key/stripe", "--secret", &secret_arg],
            None,
            &[],
        )
        .await
        .ok();
    assert!(
        out.starts_with("Created connector api-key/stripe (conn_")
            && out.ends_with(" with secrets api_key\n"),
        "{out}"
    );
    everything.push_str(&out);
    let created = system
        .connect(
            &[
                "create",
                "oauth2/crm",
                "--name",
                "CRM",
                "--config",
                "token_url=https://auth.example.com/token",
                "--secret",
                "client_id=crm-client",
                "--secret",
                "client_secret=@-",
                "-F",
                "json",
            ],
            Some("cs_from_stdin_456\n"),
            &[],
        )
        .await;
    everything.push_str(&created.stdout);
    let created = created.json();
    assert_eq!(created["uid"], "oauth2/crm");
    assert_eq!(created["type"], "oauth2");
    assert_eq!(created["name"], "CRM");
    assert_eq!(
        created["config"]["token_url"],
        "https://auth.example.com/token"
    );
    assert_eq!(
        created["secretNames"],
        serde_json::json!(["client_id", "client_secret"])
    );

    // A missing secret file is named, and nothing is created.
    let err = system
        .connect(
            &[
                "create",
                "api-key/other",
                "--secret",
                "api_key=@/nonexistent/key",
            ],
            None,
            &[],
        )
        .await
        .failed(
            2,
            "InvalidArgumentError: --secret api_key=@/nonexistent/key: cannot read",
        );
    assert!(!err.contains("sk_"));

    let list = c(&["list"]).await.ok();
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("UID             ID"), "{list}");
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[1].starts_with("api-key/stripe  conn_"), "{list}");
    let listed = c(&["list", "-F", "json", "--type", "oauth2"]).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["uid"], "oauth2/crm");

    // explain before the link: denied, the failing check and its fix, the rest skipped.
    let out = c(&[
        "explain",
        "api-key/stripe",
        "--project",
        "web",
        "-e",
        "preview",
    ])
    .await
    .ok();
    assert!(
        out.starts_with(
            "Denied (CLIENT_NOT_LINKED_TO_PROJECT): api-key/stripe for web in preview\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("  ✗ link              api-key/stripe is not linked to project prj_web\n    fix: connect attach api-key/stripe --project prj_web -e preview\n"),
        "{out}"
    );
    assert!(out.contains("  · type_rules"), "{out}");
    let explained = c(&[
        "explain",
        "api-key/stripe",
        "--project",
        "prj_web",
        "-e",
        "preview",
        "-F",
        "json",
    ])
    .await
    .json();
    assert_eq!(explained["allowed"], false);
    assert_eq!(explained["reason"], "CLIENT_NOT_LINKED_TO_PROJECT");
    assert_eq!(explained["checks"].as_array().unwrap().len(), 9);
    assert_eq!(explained["checks"][2]["outcome"], "fail");

    // attach: all three environments by default, `unchanged` the second time.
    let out = c(&["attach", "api-key/stripe", "--project", "prj_web"])
        .await
        .ok();
    assert_eq!(
        out,
        "Attached api-key/stripe to prj_web for development, preview, production\n"
    );
    let out = c(&["attach", "api-key/stripe", "--project", "prj_web"])
        .await
        .ok();
    assert_eq!(
        out,
        "api-key/stripe is already attached to prj_web for development, preview, production: unchanged\n"
    );
    let out = c(&[
        "explain",
        "api-key/stripe",
        "--project",
        "prj_web",
        "-e",
        "preview",
    ])
    .await
    .ok();
    assert!(
        out.starts_with("Allowed: api-key/stripe for prj_web in preview\n  ✓ team"),
        "{out}"
    );
    assert!(!out.contains("fix:"), "{out}");
    // A time-boxed link: --for, then attached again without it (permanent, not "unchanged").
    let timed = c(&[
        "attach",
        "api-key/stripe",
        "--project",
        "prj_web",
        "--for",
        "8h",
        "-F",
        "json",
    ])
    .await
    .json();
    let ends = chrono::DateTime::parse_from_rfc3339(timed["expireTime"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let eight_hours = chrono::Utc::now().timestamp() + 8 * 3600;
    assert!((eight_hours - 5..=eight_hours).contains(&ends), "{timed}");
    let out = c(&["attach", "api-key/stripe", "--project", "prj_web"])
        .await
        .ok();
    assert_eq!(
        out,
        "Attached api-key/stripe to prj_web for development, preview, production\n"
    );
    let out = c(&[
        "attach",
        "api-key/stripe",
        "--project",
        "prj_web",
        "--until",
        "2020-01-01T00:00:00Z",
    ])
    .await
    .failed(1, "InvalidArgumentError");
    assert!(out.contains("expire_time must be in the future"), "{out}");
    c(&[
        "attach",
        "api-key/stripe",
        "--project",
        "prj_web",
        "--for",
        "soon",
    ])
    .await
    .failed(2, "error: invalid value 'soon' for '--for <DURATION>'");
    let same = system
        .connect(
            &[
                "attach",
                "api-key/stripe",
                "--project",
                "prj_web",
                "-e",
                "production,preview",
                "-e",
                "development",
                "-F",
                "json",
            ],
            None,
            &[],
        )
        .await
        .json();
    assert_eq!(same["unchanged"], true);
    let changed = system
        .connect(
            &[
                "attach",
                "api-key/stripe",
                "--project",
                "prj_web",
                "-e",
                "preview",
                "-F",
                "json",
            ],
            None,
            &[],
        )
        .await
        .json();
    assert_eq!(changed["unchanged"], false);
    assert_eq!(changed["environments"], serde_json::json!(["preview"]));
    assert_eq!(changed["projectName"], "web");
    c(&[
        "attach",
        "api-key/stripe",
        "--project",
        "prj_docs",
        "-e",
        "production",
    ])
    .await
    .ok();

    let links = c(&["links", "api-key/stripe"]).await.ok();
    assert_eq!(links.lines().count(), 3, "{links}");
    assert!(
        links.starts_with("PROJECT   NAME  ENVIRONMENTS  UPDATED "),
        "{links}"
    );
    assert!(
        links
            .lines()
            .next()
            .unwrap()
            .ends_with("LAST ISSUED  LIMITS"),
        "{links}"
    );
    assert!(
        links.contains("\nprj_web   web   preview       "),
        "{links}"
    );
    assert!(
        links.lines().nth(1).unwrap().ends_with("never        -"),
        "{links}"
    );

    // Ceilings and a quota: shown by attach and links; bad ones named field by field.
    let out = c(&[
        "attach",
        "api-key/stripe",
        "--project",
        "prj_docs",
        "-e",
        "production",
        "--subjects",
        "app",
        "--max-issuances-per-hour",
        "5",
    ])
    .await
    .ok();
    assert_eq!(
        out,
        "Attached api-key/stripe to prj_docs for production (subjects app; 5/h)\n"
    );
    let limited = c(&["links", "api-key/stripe", "-F", "json"]).await.json();
    let docs = limited
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["projectId"] == "prj_docs")
        .unwrap();
    assert_eq!(docs["allowedSubjects"], json!(["app"]));
    assert_eq!(docs["maxIssuancesPerHour"], 5);
    assert_eq!(docs["lastIssueTime"], Value::Null);
    let err = c(&[
        "attach",
        "api-key/stripe",
        "--project",
        "prj_docs",
        "-e",
        "production",
        "--scopes",
        "read",
        "--subjects",
        "user",
    ])
    .await
    .failed(1, "");
    assert!(err.starts_with("InvalidArgumentError: "), "{err}");
    assert!(
        err.contains("allowed_scopes: api-key connectors issue no scoped tokens"),
        "{err}"
    );
    assert!(
        err.contains("allowed_subjects: api-key connectors do not issue for user subjects"),
        "{err}"
    );
    // Every link of the team, and those unused for a while: none has issued, both were
    // attached just now.
    let every = c(&["links"]).await.ok();
    assert!(every.starts_with("CONNECTOR       PROJECT "), "{every}");
    assert_eq!(every.lines().count(), 3, "{every}");
    let unused = c(&["links", "--unused-for", "30d"]).await.ok();
    assert_eq!(unused, "No link has gone unused for 30days.\n");
    let unused = c(&["links", "--unused-for", "0s", "-F", "json"])
        .await
        .json();
    assert_eq!(unused.as_array().unwrap().len(), 2, "{unused}");

    // Custom environments: created, attached by slug, renamed, removed with what it took along.
    let created = c(&[
        "envs",
        "create",
        "staging",
        "--project",
        "docs",
        "-F",
        "json",
    ])
    .await
    .json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("env_"), "{created}");
    assert_eq!(created["slug"], "staging");
    assert_eq!(created["project"], "prj_docs");
    let listed = c(&["envs", "list", "--project", "docs"]).await.ok();
    assert!(listed.starts_with("ID "), "{listed}");
    assert!(
        listed.contains(&format!("{id}  staging  staging")),
        "{listed}"
    );
    c(&["envs", "create", "production", "--project", "docs"])
        .await
        .failed(
            1,
            "InvalidArgumentError: slug: 'production' is a built-in environment",
        );
    let out = c(&[
        "attach",
        "api-key/stripe",
        "--project",
        "prj_docs",
        "-e",
        "production,staging",
    ])
    .await
    .ok();
    assert!(out.contains(&format!("for production, {id}")), "{out}");
    let out = c(&["envs", "rename", "staging", "stage", "--project", "docs"])
        .await
        .ok();
    assert_eq!(
        out,
        format!("Renamed environment staging to stage ({id})\n")
    );
    let out = c(&["envs", "remove", "stage", "--project", "docs"])
        .await
        .ok();
    assert_eq!(
        out,
        format!("Removed environment stage ({id})\ntaken out of the links of: api-key/stripe\n")
    );
    let out = c(&["envs", "list", "--project", "docs"]).await.ok();
    assert!(out.starts_with("docs has no custom environments"), "{out}");
    let linked = c(&["list", "--project", "prj_docs", "-F", "json"])
        .await
        .json();
    assert_eq!(linked.as_array().unwrap().len(), 1);
    assert_eq!(linked[0]["uid"], "api-key/stripe");

    let out = c(&["detach", "api-key/stripe", "--project", "prj_docs"])
        .await
        .ok();
    assert_eq!(
        out,
        "Detached api-key/stripe from prj_docs (it was enabled for production)\n"
    );

    // remove refuses while linked.
    let err = c(&["remove", "api-key/stripe"]).await.failed(
        1,
        "FailedPreconditionError: api-key/stripe is linked to 1 project(s): prj_web\n",
    );
    assert!(
        err.contains("hint: connect remove api-key/stripe --disconnect-all"),
        "{err}"
    );
    let removed = c(&["remove", "api-key/stripe", "--disconnect-all", "-F", "json"])
        .await
        .json();
    assert_eq!(removed["removedLinks"], 1);
    assert_eq!(removed["connector"]["uid"], "api-key/stripe");
    let out = c(&["remove", "oauth2/crm"]).await.ok();
    assert!(out.starts_with("Removed oauth2/crm (conn_"), "{out}");

    let audit = c(&["audit", "--limit", "3"]).await.ok();
    assert_eq!(audit.lines().count(), 4, "{audit}");
    assert!(audit.starts_with("TIME"), "{audit}");
    assert!(audit.contains("connector.delete"), "{audit}");
    let events = system
        .connect(&["audit", "--limit", "100", "-F", "json"], None, &[])
        .await;
    everything.push_str(&events.stdout);
    let events = events.json();
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"connector.create"), "{actions:?}");
    assert!(actions.contains(&"project.attach"), "{actions:?}");

    // The capability table, as people and programs read it.
    let types = c(&["types"]).await.ok();
    let mut rows = types.lines();
    assert!(
        rows.next().unwrap().starts_with("TYPE     SUBJECTS"),
        "{types}"
    );
    let github = types.lines().find(|l| l.starts_with("github")).unwrap();
    for cell in ["app", "required", "yes", "app_id api_url?", "private_key"] {
        assert!(github.contains(cell), "{github}");
    }
    let oauth2 = types.lines().find(|l| l.starts_with("oauth2")).unwrap();
    assert!(oauth2.contains("app,user,jwt_bearer,token"), "{oauth2}");
    assert!(oauth2.contains("with revocation_url"), "{oauth2}");
    let types = c(&["types", "-F", "json"]).await.json();
    let api_key = &types.as_array().unwrap()[0];
    assert_eq!(api_key["type"], "api-key");
    assert_eq!(api_key["requiredSecretKeys"], json!(["api_key"]));
    assert_eq!(api_key["installations"], "optional");
    assert_eq!(api_key["revocation"], false);

    for secret in ["sk_from_file_123", "cs_from_stdin_456", "crm-client"] {
        assert!(!everything.contains(secret), "{secret} was printed");
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_documented_error_and_usage_errors_exit_2() {
    let system = System::start().await;
    let err = system
        .connect(
            &["attach", "api-key/nope", "--project", "prj_web"],
            None,
            &[],
        )
        .await
        .failed(1, "ConnectorNotFoundError: ");
    assert!(err.contains("\nhint: "), "{err}");
    let err = system
        .connect(&["list"], None, &[("CONNECT_API_KEY", "cnk_wrong")])
        .await
        .failed(1, "InvalidKeyError: ");
    assert!(err.contains("hint: pass a team's API key"), "{err}");
    system
        .connect(&["list"], None, &[("CONNECT_API_KEY", "")])
        .await
        .failed(1, "InvalidKeyError: no API key");
    system
        .connect(&["projects", "create", "prj_x"], None, &[])
        .await
        .failed(
            2,
            "error: the following required arguments were not provided",
        );
    system
        .connect(&["frobnicate"], None, &[])
        .await
        .failed(2, "error: ");
    system
        .connect(&["create", "api-key/x", "--config", "novalue"], None, &[])
        .await
        .failed(2, "InvalidArgumentError: --config expects KEY=VALUE");
    system
        .connect(&["projects", "create", "bad id!", "--name", "x"], None, &[])
        .await
        .failed(1, "InvalidArgumentError: ");
    // Nothing listening there.
    let err = system
        .connect(
            &["list"],
            None,
            &[("CONNECT_REGISTRY_URL", "http://127.0.0.1:9")],
        )
        .await
        .failed(
            1,
            "RegistryUnavailableError: cannot reach the registry at http://127.0.0.1:9",
        );
    assert!(err.contains("hint: is the registry running?"), "{err}");
    let script = system
        .connect(&["completions", "bash"], None, &[])
        .await
        .ok();
    assert!(
        script.contains("_connect()"),
        "{}",
        &script[..200.min(script.len())]
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_prints_the_token_alone_and_says_how_to_fix_a_denial() {
    let system = System::start().await;
    let c = |args: &'static [&'static str], stdin: Option<&'static str>| {
        system.connect(args, stdin, &[])
    };
    c(&["projects", "create", "prj_web", "--name", "web"], None)
        .await
        .ok();
    c(
        &["create", "api-key/stripe", "--secret", "api_key=@-"],
        Some("sk_live_abc"),
    )
    .await
    .ok();
    c(
        &[
            "attach",
            "api-key/stripe",
            "--project",
            "prj_web",
            "-e",
            "preview",
        ],
        None,
    )
    .await
    .ok();

    let preview = system.oidc_token("prj_web", "preview");
    // Suspended, it issues nothing; resumed, it does again.
    let out = c(&["suspend", "api-key/stripe"], None).await.ok();
    assert_eq!(
        out,
        "Suspended api-key/stripe: it issues nothing until `connect resume api-key/stripe`\n"
    );
    let err = system
        .connect(
            &["token", "api-key/stripe"],
            None,
            &[("CONNECT_OIDC_TOKEN", &preview)],
        )
        .await
        .failed(
            1,
            "ConnectorSuspendedError: connector 'api-key/stripe' is suspended\n",
        );
    assert!(
        err.contains("hint: an admin suspended it; `connect resume api-key/stripe`"),
        "{err}"
    );
    let resumed = c(&["resume", "api-key/stripe", "-F", "json"], None)
        .await
        .json();
    assert_eq!(resumed["suspended"], false);
    // The broker learns of it through the registry's change feed, within moments.
    for _ in 0..100 {
        let run = system
            .connect(
                &["token", "api-key/stripe"],
                None,
                &[("CONNECT_OIDC_TOKEN", &preview)],
            )
            .await;
        if run.code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = system
        .connect(
            &["token", "api-key/stripe"],
            None,
            &[("CONNECT_OIDC_TOKEN", &preview)],
        )
        .await
        .ok();
    assert_eq!(out, "sk_live_abc\n");
    let answer = system
        .connect(
            &["token", "api-key/stripe", "-F", "json"],
            None,
            &[("VERCEL_OIDC_TOKEN", &preview)],
        )
        .await
        .json();
    assert_eq!(answer["token"], "sk_live_abc");
    assert_eq!(answer["tokenId"].as_str().unwrap().len(), 16);
    assert_eq!(answer["connector"]["uid"], "api-key/stripe");

    // The ledger shows what was handed out, never the token.
    let ledger = c(&["issuances", "api-key/stripe"], None).await.ok();
    let token_id = answer["tokenId"].as_str().unwrap();
    assert!(
        ledger.starts_with("TOKEN ID          CONNECTOR"),
        "{ledger}"
    );
    assert!(
        ledger.contains(&format!(
            "\n{token_id}  api-key/stripe  prj_web  preview      app"
        )),
        "{ledger}"
    );
    assert!(!ledger.contains("sk_live_abc"));
    let rows = c(
        &["issuances", "--environment", "preview", "-F", "json"],
        None,
    )
    .await
    .json();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["tokenId"], token_id);
    assert_eq!(rows[0]["expireTime"], Value::Null);
    let none = c(&["issuances", "--environment", "production"], None)
        .await
        .ok();
    assert_eq!(none, "No issuances.\n");

    // From a token file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, &preview).unwrap();
    let out = system
        .connect(
            &["token", "api-key/stripe"],
            None,
            &[("CONNECT_OIDC_TOKEN_FILE", file.to_str().unwrap())],
        )
        .await
        .ok();
    assert_eq!(out, "sk_live_abc\n");

    let production = system.oidc_token("prj_web", "production");
    let err = system
        .connect(
            &["token", "api-key/stripe"],
            None,
            &[("CONNECT_OIDC_TOKEN", &production)],
        )
        .await
        .failed(1, "ClientNotEnabledForEnvironmentError: ");
    // The hint reads the link: following it keeps preview.
    assert!(
        err.contains("attach replaces the set, so it lists the ones the link has): connect attach api-key/stripe --project prj_web -e preview,production\n"),
        "{err}"
    );
    // Without an API key the registry cannot be read: the hint says how to list them.
    let err = system
        .connect(
            &["token", "api-key/stripe"],
            None,
            &[("CONNECT_OIDC_TOKEN", &production), ("CONNECT_API_KEY", "")],
        )
        .await
        .failed(1, "ClientNotEnabledForEnvironmentError: ");
    assert!(
        err.contains("hint: `connect links api-key/stripe` shows the environments the link has; attach replaces the set, so list them with production: connect attach api-key/stripe --project prj_web -e <those>,production"),
        "{err}"
    );
    let other = system.oidc_token("prj_other", "preview");
    let err = system
        .connect(
            &["token", "api-key/stripe"],
            None,
            &[("CONNECT_OIDC_TOKEN", &other)],
        )
        .await
        .failed(1, "ClientNotLinkedToProjectError: ");
    assert!(
        err.contains("hint: link it: connect attach api-key/stripe --project prj_other"),
        "{err}"
    );
    let err = system
        .connect(&["token", "api-key/stripe"], None, &[])
        .await
        .failed(1, "InvalidTokenError: no OIDC token");
    assert!(err.contains("hint: set CONNECT_OIDC_TOKEN"), "{err}");
    system
        .connect(
            &["token", "api-key/stripe", "--subject", "someone"],
            None,
            &[("CONNECT_OIDC_TOKEN", &preview)],
        )
        .await
        .failed(
            2,
            "InvalidArgumentError: --subject must be 'app' or 'user:ID'",
        );
    assert!(!err.contains("sk_live_abc"));

    // A time-boxed link whose time ran out: the error, and where the fix comes from.
    c(
        &[
            "attach",
            "api-key/stripe",
            "--project",
            "prj_web",
            "-e",
            "preview",
            "--for",
            "1s",
        ],
        None,
    )
    .await
    .ok();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let expired = system
        .connect(
            &["token", "api-key/stripe"],
            None,
            &[("CONNECT_OIDC_TOKEN", &preview)],
        )
        .await
        .failed(1, "LinkExpiredError: the link of connector 'api-key/stripe' to project 'prj_web' has expired");
    assert!(
        expired.contains("hint: the link was time-boxed and its time ran out; attach it again (with --for or --until for a new end): `connect explain api-key/stripe --project prj_web -e preview` prints the command"),
        "{expired}"
    );

    // The proxy's base URL for a connector: the uid as one encoded segment.
    let url = system
        .connect(
            &[
                "proxy-url",
                "api-key/stripe",
                "--proxy",
                "https://proxy.example.com/",
            ],
            None,
            &[],
        )
        .await
        .ok();
    assert_eq!(url, "https://proxy.example.com/api-key%2Fstripe\n");
    let json = system
        .connect(
            &["proxy-url", "api-key/stripe", "-F", "json"],
            None,
            &[("CONNECT_PROXY_URL", "http://127.0.0.1:8090")],
        )
        .await
        .json();
    assert_eq!(json["url"], "http://127.0.0.1:8090/api-key%2Fstripe");
    assert_eq!(json["connector"], "api-key/stripe");
    let missing = system
        .connect(&["proxy-url", "api-key/stripe"], None, &[])
        .await
        .failed(1, "InvalidArgumentError: no proxy URL");
    assert!(missing.contains("CONNECT_PROXY_URL"), "{missing}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installations_and_revocations_from_the_command_line() {
    let system = System::start().await;
    let c = |args: &'static [&'static str], stdin: Option<&'static str>| {
        system.connect(args, stdin, &[])
    };
    c(&["projects", "create", "prj_web", "--name", "web"], None)
        .await
        .ok();
    c(
        &["create", "api-key/stripe", "--secret", "api_key=sk_main"],
        None,
    )
    .await
    .ok();
    c(&["attach", "api-key/stripe", "--project", "prj_web"], None)
        .await
        .ok();
    let out = c(
        &[
            "installations",
            "add",
            "api-key/stripe",
            "acct_eu",
            "--name",
            "EU account",
            "--secret",
            "api_key=@-",
            "--default",
        ],
        Some("sk_eu_secret\n"),
    )
    .await
    .ok();
    assert_eq!(
        out,
        "Added installation acct_eu to api-key/stripe as its default\n"
    );
    let listed = c(&["installations", "list", "api-key/stripe"], None)
        .await
        .ok();
    assert!(
        listed.starts_with("INSTALLATION  NAME        SECRETS  CREATED"),
        "{listed}"
    );
    assert!(
        listed.contains("acct_eu") && listed.contains("default"),
        "{listed}"
    );
    let json = c(
        &["installations", "list", "api-key/stripe", "-F", "json"],
        None,
    )
    .await
    .json();
    assert_eq!(json[0]["installationId"], "acct_eu");
    assert_eq!(json[0]["isDefault"], true);
    assert_eq!(json[0]["secretNames"][0], "api_key");
    assert!(!json.to_string().contains("sk_eu_secret"));

    // The default installation's key is the token; the ledger and a revocation see it.
    let preview = system.oidc_token("prj_web", "preview");
    let mut token = String::new();
    for _ in 0..100 {
        let run = system
            .connect(
                &["token", "api-key/stripe", "-F", "json"],
                None,
                &[("CONNECT_OIDC_TOKEN", &preview)],
            )
            .await;
        if run.code == 0 {
            token = run.stdout;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token: Value = serde_json::from_str(&token).expect("a token");
    assert_eq!(token["token"], "sk_eu_secret");
    assert_eq!(token["installationId"], "acct_eu");
    let revoked = c(
        &[
            "revoke-tokens",
            "api-key/stripe",
            "--installation-id",
            "acct_eu",
        ],
        None,
    )
    .await
    .ok();
    assert_eq!(
        revoked,
        "api-key/stripe: 1 of 1 credentials revoked (at the provider: 0 revoked, 1 skipped, 0 failed)\n"
    );
    let again = c(&["revoke-tokens", "api-key/stripe", "-F", "json"], None)
        .await
        .json();
    assert_eq!(
        (again["tokensFound"].as_u64(), again["revoked"].as_u64()),
        (Some(1), Some(0))
    );
    c(
        &["revoke-tokens", "api-key/stripe", "--subject", "robot"],
        None,
    )
    .await
    .failed(1, "InvalidArgumentError");

    let removed = c(
        &["installations", "remove", "api-key/stripe", "acct_eu"],
        None,
    )
    .await
    .ok();
    assert!(
        removed.starts_with("Removed installation acct_eu of api-key/stripe; "),
        "{removed}"
    );
    let err = c(
        &["installations", "remove", "api-key/stripe", "acct_eu"],
        None,
    )
    .await
    .failed(1, "InstallationNotFoundError");
    assert!(
        err.contains("hint: `connect installations list <connector>`"),
        "{err}"
    );
    system.stop().await;
}

/// What a new user trips over in the first hour, each through the built binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_hour() {
    let system = System::start().await;
    let c = |args: &'static [&'static str]| system.connect(args, None, &[]);
    c(&["projects", "create", "prj_web", "--name", "web"])
        .await
        .ok();

    // 2. Mistakes are refused when the connector is made, not at the first token.
    let err = c(&["create", "apikey/s10", "--secret", "api_key=sk_1"])
        .await
        .failed(1, "InvalidArgumentError: ");
    assert!(
        err.contains("unknown connector type 'apikey'") && err.contains("api-key, oauth2, github"),
        "{err}"
    );
    let err = c(&["create", "api-key/s7", "--secret", "key=abc"])
        .await
        .failed(1, "InvalidArgumentError: ");
    assert!(
        err.contains("secrets.api_key") && err.contains("required: api_key"),
        "{err}"
    );
    assert!(!err.contains("abc"), "{err}");
    let err = c(&["create", "github/app", "--secret", "private_key=pem"])
        .await
        .failed(1, "InvalidArgumentError: ");
    assert!(err.contains("config.app_id"), "{err}");
    let listed = c(&["list", "-F", "json"]).await.json();
    assert_eq!(listed, json!([]), "nothing was created");

    // 1. attach replaces the set, says so in --help, and names what it removed.
    let help = c(&["attach", "--help"]).await.ok();
    assert!(help.contains("exactly the ones given"), "{help}");
    assert!(help.contains("Replaces"), "{help}");
    c(&["create", "api-key/stripe", "--secret", "api_key=sk_1"])
        .await
        .ok();
    c(&[
        "attach",
        "api-key/stripe",
        "--project",
        "prj_web",
        "-e",
        "preview,production",
    ])
    .await
    .ok();
    let out = c(&[
        "attach",
        "api-key/stripe",
        "--project",
        "prj_web",
        "-e",
        "production",
    ])
    .await
    .ok();
    assert_eq!(
        out,
        "Attached api-key/stripe to prj_web for production (removed: preview)\n"
    );
    let json = c(&[
        "attach",
        "api-key/stripe",
        "--project",
        "prj_web",
        "-e",
        "production,development",
        "-F",
        "json",
    ])
    .await
    .json();
    assert_eq!(json["removedEnvironments"], json!([]));
    let unchanged = c(&[
        "attach",
        "api-key/stripe",
        "--project",
        "prj_web",
        "-e",
        "production,development",
        "-F",
        "json",
    ])
    .await
    .json();
    assert_eq!(unchanged["unchanged"], true);
    // Attaching the same set again wrote nothing: one audit event per change.
    let audit = c(&["audit", "--limit", "100", "-F", "json"]).await.json();
    let attaches = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "project.attach")
        .count();
    assert_eq!(attaches, 3, "{audit}");

    // 3. A bare host:port is http:// on loopback; elsewhere the scheme is asked for; the wrong
    // service is named.
    let registry = system.stack.registry_addr().to_string();
    let broker = system.stack.broker_addr().to_string();
    let out = system
        .connect(&["list"], None, &[("CONNECT_REGISTRY_URL", &registry)])
        .await
        .ok();
    assert!(out.contains("api-key/stripe"), "{out}");
    let err = system
        .connect(&["list", "--registry", "registry.example:50051"], None, &[])
        .await
        .failed(
            2,
            "InvalidArgumentError: --registry 'registry.example:50051' has no scheme",
        );
    assert!(err.contains("https://registry.example:50051"), "{err}");
    let err = system
        .connect(&["list"], None, &[("CONNECT_REGISTRY_URL", &broker)])
        .await
        .failed(1, "UnexpectedError: ");
    assert!(
        err.contains("does not serve the link registry") && err.contains("hint: point --registry"),
        "{err}"
    );
    let preview = system.oidc_token("prj_web", "production");
    let err = system
        .connect(
            &["token", "api-key/stripe", "--broker", &registry],
            None,
            &[("CONNECT_OIDC_TOKEN", &preview)],
        )
        .await
        .failed(1, "UnexpectedError: ");
    assert!(
        err.contains("does not serve the token broker") && err.contains("hint: point --broker"),
        "{err}"
    );

    // 4. Variables are not flags in usage lines; arguments are described.
    let err = c(&["projects", "create", "prj_x"])
        .await
        .failed(2, "error: ");
    assert!(
        err.contains("Usage: connect projects create --name <NAME> <ID>\n"),
        "{err}"
    );
    for (args, wanted) in [
        (&["attach", "--help"][..], "The connector, by uid"),
        (&["attach", "--help"][..], "The project, by id"),
        (&["token", "--help"][..], "The connector, by uid"),
        (
            &["projects", "create", "--help"][..],
            "as deployment tokens carry it",
        ),
    ] {
        let help = system.connect(args, None, &[]).await.ok();
        assert!(help.contains(wanted), "{args:?}: {help}");
    }
    let help = c(&["--help"]).await.ok();
    assert!(help.contains("[env: CONNECT_API_KEY]"), "{help}");
    assert!(!help.contains(&system.admin), "the key is never shown");

    // Who am I: the key in use and its team.
    let out = c(&["whoami"]).await.ok();
    assert!(
        out.starts_with("key:key_") && out.contains(" (api_key)\nteam_acme  admin\n"),
        "{out}"
    );
    let who = c(&["whoami", "-F", "json"]).await.json();
    assert_eq!(
        who["teams"],
        json!([{"teamId": "team_acme", "role": "admin"}])
    );
    assert_eq!(
        who["actor"],
        format!("key:{}", who["keyId"].as_str().unwrap())
    );

    // 5. A malformed --secret is a usage error, and its value is never repeated.
    let err = c(&["create", "api-key/x", "--secret", "=sk_hidden"])
        .await
        .failed(
            2,
            "InvalidArgumentError: --secret expects KEY=VALUE: the KEY before '=' is empty\n",
        );
    assert!(!err.contains("sk_hidden"));
    let err = c(&["create", "api-key/x", "--secret", "sk_hidden"])
        .await
        .failed(
            2,
            "InvalidArgumentError: --secret expects KEY=VALUE: there is no '='\n",
        );
    assert!(!err.contains("sk_hidden"));
    system.stop().await;
}

/// An identity provider of this test (not `dev-issuer`): discovery, a JWKS (one P-256 key), an
/// authorization endpoint that signs in as its configured person at once (or answers an error),
/// and a token endpoint (the code with its PKCE verifier; rotating refresh tokens) that issues
/// ID tokens with `email` and `groups`.
mod idp {
    use std::{
        collections::HashMap,
        net::SocketAddr,
        sync::{Arc, Mutex, atomic::AtomicUsize, atomic::Ordering},
    };

    use axum::{
        Form, Json, Router,
        extract::{Query, State},
        http::{StatusCode, header},
        response::{IntoResponse, Response},
        routing::{get, post},
    };
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use serde_json::{Value, json};
    use sha2::{Digest, Sha256};

    pub struct IdentityProvider {
        pub issuer: String,
        state: Arc<Provider>,
        task: tokio::task::JoinHandle<()>,
    }

    struct Provider {
        issuer: String,
        signing: jsonwebtoken::EncodingKey,
        jwks: Value,
        /// Who signs in, or the error the authorization endpoint answers.
        person: Mutex<Result<(String, String), String>>,
        /// How long ID tokens live, in seconds.
        lifetime: Mutex<i64>,
        codes: Mutex<HashMap<String, (String, String, String)>>,
        refresh_tokens: Mutex<HashMap<String, String>>,
        pub refreshes: AtomicUsize,
    }

    impl IdentityProvider {
        pub async fn start() -> Self {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let point = key.public_key_raw().to_vec();
            let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .unwrap();
            let issuer = format!("http://{}", listener.local_addr().unwrap());
            let state = Arc::new(Provider {
                issuer: issuer.clone(),
                signing: jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())
                    .unwrap(),
                jwks: json!({"keys": [{
                    "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "idp-1",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..]),
                }]}),
                person: Mutex::new(Ok(("ada-sub".into(), "ada@acme.example".into()))),
                lifetime: Mutex::new(600),
                codes: Mutex::default(),
                refresh_tokens: Mutex::default(),
                refreshes: AtomicUsize::new(0),
            });
            let app = Router::new()
                .route("/.well-known/openid-configuration", get(discovery))
                .route("/jwks", get(jwks))
                .route("/authorize", get(authorize))
                .route("/token", post(token))
                .with_state(state.clone());
            let task = tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
            Self {
                issuer,
                state,
                task,
            }
        }

        /// The authorization endpoint answers `error` instead of signing in.
        pub fn refuse(&self, error: &str) {
            *self.state.person.lock().unwrap() = Err(error.into());
        }

        pub fn set_lifetime(&self, seconds: i64) {
            *self.state.lifetime.lock().unwrap() = seconds;
        }

        pub fn refreshes(&self) -> usize {
            self.state.refreshes.load(Ordering::SeqCst)
        }
    }

    impl Drop for IdentityProvider {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn discovery(State(p): State<Arc<Provider>>) -> Json<Value> {
        let i = &p.issuer;
        Json(json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "jwks_uri": format!("{i}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        }))
    }

    async fn jwks(State(p): State<Arc<Provider>>) -> Json<Value> {
        Json(p.jwks.clone())
    }

    async fn authorize(
        State(p): State<Arc<Provider>>,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        let field = |n: &str| q.get(n).cloned().unwrap_or_default();
        let mut back = url::Url::parse(&field("redirect_uri")).unwrap();
        assert_eq!(field("code_challenge_method"), "S256");
        assert_eq!(field("client_id"), "connect-cli");
        match &*p.person.lock().unwrap() {
            Ok(_) => {
                let code = format!("code_{:x}", rand_u64());
                p.codes.lock().unwrap().insert(
                    code.clone(),
                    (
                        field("code_challenge"),
                        field("redirect_uri"),
                        field("nonce"),
                    ),
                );
                back.query_pairs_mut()
                    .append_pair("code", &code)
                    .append_pair("state", &field("state"));
            }
            Err(error) => {
                back.query_pairs_mut()
                    .append_pair("error", error)
                    .append_pair("error_description", "the person said no\u{7}")
                    .append_pair("state", &field("state"));
            }
        }
        (StatusCode::FOUND, [(header::LOCATION, back.to_string())]).into_response()
    }

    fn rand_u64() -> u64 {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::time::SystemTime::now())
    }

    fn tokens(p: &Provider, nonce: Option<&str>) -> Response {
        let (sub, email) = p.person.lock().unwrap().clone().unwrap();
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({
            "iss": p.issuer, "sub": sub, "aud": "connect-cli", "iat": now,
            "exp": now + *p.lifetime.lock().unwrap(),
            "email": email, "groups": ["eng"],
        });
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("idp-1".into());
        let id_token = jsonwebtoken::encode(&header, &claims, &p.signing).unwrap();
        let refresh = format!("rt_{:x}", rand_u64());
        p.refresh_tokens
            .lock()
            .unwrap()
            .insert(refresh.clone(), sub);
        Json(json!({
            "access_token": format!("at_{:x}", rand_u64()),
            "token_type": "Bearer",
            "expires_in": 600,
            "id_token": id_token,
            "refresh_token": refresh,
        }))
        .into_response()
    }

    async fn token(
        State(p): State<Arc<Provider>>,
        Form(form): Form<HashMap<String, String>>,
    ) -> Response {
        let field = |n: &str| form.get(n).cloned().unwrap_or_default();
        let invalid = || {
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "invalid_grant"})),
            )
                .into_response()
        };
        match field("grant_type").as_str() {
            "authorization_code" => {
                let Some((challenge, redirect, nonce)) =
                    p.codes.lock().unwrap().remove(&field("code"))
                else {
                    return invalid();
                };
                let hashed = URL_SAFE_NO_PAD.encode(Sha256::digest(field("code_verifier")));
                if hashed != challenge || field("redirect_uri") != redirect {
                    return invalid();
                }
                tokens(&p, Some(&nonce))
            }
            "refresh_token" => {
                if p.refresh_tokens
                    .lock()
                    .unwrap()
                    .remove(&field("refresh_token"))
                    .is_none()
                {
                    return invalid();
                }
                p.refreshes.fetch_add(1, Ordering::SeqCst);
                tokens(&p, None)
            }
            _ => invalid(),
        }
    }
}

/// `connect login --no-browser` driven as a person would (the test plays the browser), then the
/// commands as that person, a refresh when the ID token nears its expiry, `connect logout`; and a
/// callback with an error or another state stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_acts_by_their_binding_and_signs_out() {
    use std::io::{BufRead, BufReader};
    let idp = idp::IdentityProvider::start().await;
    let operator = link_registry::config::OperatorSettings {
        issuers: vec![connect_types::IssuerUrl::parse(&idp.issuer).unwrap()],
        audiences: vec!["connect-cli".into()],
        leeway: Duration::from_secs(30),
        policy: connect_types::UrlPolicy::loopback(),
        fetch_timeout: Duration::from_secs(3),
    };
    let system = System::start_with(move |c| c.operators = Some(operator)).await;
    let config = tempfile::tempdir().unwrap();
    let config_dir = config.path().join("connect");
    let config_env = config_dir.to_str().unwrap().to_owned();
    let login_file = config_dir.join("login.json");

    // Drives one `connect login`: answers what the browser was sent back with, and the run.
    let login = |idp_issuer: String, config_env: String| async move {
        let mut child = Command::new(env!("CARGO_BIN_EXE_connect"))
            .args(["login", "--issuer", &idp_issuer, "--no-browser"])
            .env_clear()
            .env("CONNECT_CONFIG_DIR", &config_env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let url = loop {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "no URL printed");
            if let Some(url) = line.trim().strip_prefix("http") {
                break format!("http{url}");
            }
        };
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let answer = browser.get(&url).send().await.unwrap();
        assert_eq!(answer.status().as_u16(), 302, "{url}");
        let back = answer.headers()["location"].to_str().unwrap().to_owned();
        (url, back, browser, child, stderr)
    };

    // Without an issuer and no login to take it from: a usage error.
    system
        .connect(
            &["login"],
            None,
            &[("CONNECT_CONFIG_DIR", config_env.as_str())],
        )
        .await
        .failed(2, "InvalidArgumentError: give --issuer");
    // A person bound in no team yet signs in.
    let (url, back, browser, child, mut stderr) =
        login(idp.issuer.clone(), config_env.clone()).await;
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("nonce="),
        "{url}"
    );
    assert!(
        back.starts_with("http://127.0.0.1:") && back.contains("/callback?code="),
        "{back}"
    );
    let page = browser
        .get(&back)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Signed in"), "{page}");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(out.status.success(), "{rest}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("Signed in to {} as ada@acme.example\n", idp.issuer)
    );
    let stored = std::fs::read_to_string(&login_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&login_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let id_token = serde_json::from_str::<Value>(&stored).unwrap()["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!rest.contains(&id_token), "the token is never printed");

    // Without an API key, the login is the credential.
    let as_person = [
        ("CONNECT_API_KEY", ""),
        ("CONNECT_CONFIG_DIR", config_env.as_str()),
    ];
    system
        .connect(&["list"], None, &as_person)
        .await
        .failed(1, "RoleNotAllowedError: no role binding admits this person");
    system
        .connect(&["-F", "json", "whoami"], None, &as_person)
        .await
        .ok();
    // Bound (by group) as Acme's admin, they act; the audit names them.
    system
        .stack
        .registry()
        .create_role_binding_as_operator(
            &link_registry::domain::types::TeamId::parse("team_acme").unwrap(),
            link_registry::domain::service::NewRoleBinding {
                team: None,
                issuer: link_registry::domain::types::IssuerUrl::parse(&idp.issuer).unwrap(),
                who: link_registry::domain::model::BindingSubject::Group("eng".into()),
                role: link_registry::domain::model::Role::Admin,
            },
        )
        .await
        .unwrap();
    let who = system.connect(&["whoami"], None, &as_person).await.ok();
    assert_eq!(who, "user:ada@acme.example (operator)\nteam_acme  admin\n");
    system
        .connect(
            &["projects", "create", "prj_ada", "--name", "ada"],
            None,
            &as_person,
        )
        .await
        .ok();
    let audit = system
        .connect(&["audit", "-F", "json"], None, &[])
        .await
        .json();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "project.create" && e["actor"] == "user:ada@acme.example"),
        "{audit}"
    );

    // An ID token about to expire is refreshed before the call, once.
    idp.set_lifetime(30);
    let mut stored: Value =
        serde_json::from_str(&std::fs::read_to_string(&login_file).unwrap()).unwrap();
    stored["expires_at"] = (chrono::Utc::now().timestamp() + 5).into();
    std::fs::write(&login_file, stored.to_string()).unwrap();
    system
        .connect(&["projects", "list"], None, &as_person)
        .await
        .ok();
    assert_eq!(idp.refreshes(), 1);
    let refreshed: Value =
        serde_json::from_str(&std::fs::read_to_string(&login_file).unwrap()).unwrap();
    assert_ne!(refreshed["id_token"], stored["id_token"]);

    // Signing out forgets the login.
    let out = system.connect(&["logout"], None, &as_person).await.ok();
    assert_eq!(out, "Signed out\n");
    assert!(!login_file.exists());
    system
        .connect(&["list"], None, &as_person)
        .await
        .failed(1, "InvalidKeyError: no API key and no login");

    // The provider's error, or a callback with another state: non-zero, nothing stored.
    idp.refuse("access_denied");
    let (_, back, browser, child, mut stderr) = login(idp.issuer.clone(), config_env.clone()).await;
    assert!(back.contains("error=access_denied"), "{back}");
    browser.get(&back).send().await.unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        rest.contains(
            "LoginError: the identity provider answered access_denied: the person said no\\u{7}"
        ),
        "{rest}"
    );
    assert!(!login_file.exists());
    let (_, back, browser, child, mut stderr) = login(idp.issuer.clone(), config_env.clone()).await;
    let forged = url::Url::parse(&back).unwrap();
    let mut forged_back = forged.clone();
    forged_back.set_query(Some("code=stolen&state=not-this-login"));
    browser.get(forged_back.as_str()).send().await.unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(rest.contains("another state than this login's"), "{rest}");
    assert!(!login_file.exists());
    system.stop().await;
}
