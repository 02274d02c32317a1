//! Faults with real processes: the registry killed with SIGKILL in the middle of concurrent
//! writes keeps every write it acknowledged, each with exactly one audit event, and serves again.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use connect_proto::registry::v1::{self as pb, link_registry_client::LinkRegistryClient};
use connect_runtime::BearerAuth;
use link_registry::{
    app::open_store,
    crypto::SecretCipher,
    domain::{
        Registry,
        model::Role,
        service::{ChainCheck, NewConnector, NewProject, NewTeam},
        types::{
            ConnectorUid, DisplayName, IssuerUrl, ProjectId, ProjectName, SecretInput, TeamId,
            TeamSlug,
        },
    },
};
use secrecy::ExposeSecret;

const PROJECTS: usize = 400;

/// `link-registry serve` on `url` as a child process, and the address it serves on.
fn serve(url: &str) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_link-registry"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", url])
        .env("RUST_LOG", "info")
        .env("LINK_REGISTRY_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run link-registry serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the registry logs until it serves")
            .unwrap();
        if line.contains("serving") && !line.contains("metrics") {
            // `addr=Some(127.0.0.1:PORT)` (or without the `Some(…)`).
            let addr = line
                .split("addr=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(|a| a.trim_start_matches("Some(").trim_end_matches(')'))
                .expect("the serving line names its address");
            break addr.to_owned();
        }
    };
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_killed_during_concurrent_attaches_keeps_every_acknowledged_one() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
    let key_file = dir.path().join("r.db.key");
    // A team, a connector and the projects, written before the server starts.
    let admin_key = {
        let registry = Registry::new(
            Arc::new(open_store(&url).await.unwrap()),
            SecretCipher::from_key_file(&key_file, true).unwrap(),
        );
        let team = TeamId::parse("team_a").unwrap();
        registry
            .create_team(NewTeam {
                id: team.clone(),
                slug: TeamSlug::parse("a").unwrap(),
                issuer: IssuerUrl::parse("https://idp.example/a").unwrap(),
            })
            .await
            .unwrap();
        let (_, key) = registry
            .create_api_key(Some(team), Role::Admin)
            .await
            .unwrap();
        let caller = registry.authenticate(key.expose_secret()).await.unwrap();
        registry
            .create_connector(
                &caller,
                NewConnector {
                    uid: ConnectorUid::parse("api-key/stripe").unwrap(),
                    name: DisplayName::parse("Stripe").unwrap(),
                    config: Default::default(),
                    secrets: SecretInput::parse([("api_key".to_owned(), "sk_1".to_owned())])
                        .unwrap(),
                },
            )
            .await
            .unwrap();
        for i in 0..PROJECTS {
            registry
                .create_project(
                    &caller,
                    NewProject {
                        id: ProjectId::parse(&format!("prj_{i}")).unwrap(),
                        name: ProjectName::parse(&format!("p{i}")).unwrap(),
                    },
                )
                .await
                .unwrap();
        }
        key.expose_secret().to_owned()
    };

    // Eight admins attach projects concurrently; the registry is killed while they do.
    let (mut child, addr) = serve(&url);
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let acknowledged = Arc::new(Mutex::new(BTreeMap::<String, Vec<String>>::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut admin = LinkRegistryClient::with_interceptor(
            channel.clone(),
            BearerAuth::new(&admin_key).unwrap(),
        );
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in (w..PROJECTS).step_by(8) {
                let environments = match i % 3 {
                    0 => vec!["production".to_owned()],
                    1 => vec!["preview".to_owned(), "production".to_owned()],
                    _ => vec!["development".to_owned()],
                };
                let mut request = tonic::Request::new(pb::AttachProjectRequest {
                    connector: "api-key/stripe".into(),
                    project: format!("prj_{i}"),
                    environments: environments.clone(),
                    expire_time: None,
                    ..Default::default()
                });
                request.set_timeout(Duration::from_secs(2));
                match admin.attach_project(request).await {
                    Ok(_) => {
                        acknowledged
                            .lock()
                            .unwrap()
                            .insert(format!("prj_{i}"), environments);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Once some writes are in, the process is killed outright.
    while acknowledged.lock().unwrap().len() < 40 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() < PROJECTS,
        "the kill came mid-load ({} acknowledged)",
        acknowledged.len()
    );

    // A new registry process on the same file serves, and holds every acknowledged attach.
    let (mut again, addr) = serve(&url);
    let mut admin = LinkRegistryClient::with_interceptor(
        tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
        BearerAuth::new(&admin_key).unwrap(),
    );
    let mut links = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_project_links(pb::ListProjectLinksRequest {
                connector: "api-key/stripe".into(),
                page_size: 500,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        links.extend(
            page.links
                .into_iter()
                .map(|l| (l.project_id, l.environments)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    for (project, environments) in &acknowledged {
        assert_eq!(
            links.get(project),
            Some(environments),
            "{project} was acknowledged"
        );
    }
    // Exactly one audit event per link there is (acknowledged or written just before the kill),
    // and the chain is whole.
    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            action: "project.attach".into(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let mut per_target = BTreeMap::<String, usize>::new();
    for event in &events {
        *per_target.entry(event.target.clone()).or_default() += 1;
    }
    assert_eq!(per_target.len(), links.len(), "one event per link");
    assert!(per_target.values().all(|n| *n == 1), "{per_target:?}");
    let store = open_store(&url).await.unwrap();
    let check = Registry::new(Arc::new(store), SecretCipher::ephemeral())
        .verify_audit()
        .await
        .unwrap();
    assert!(matches!(check, ChainCheck::Whole { .. }), "{check:?}");
    again.kill().unwrap();
    again.wait().unwrap();
}

/// The README's PostgreSQL recipe, as an operator runs it: `pg_dump --format=custom` while the
/// registry serves, `pg_restore` into a new database, and a registry started there with the
/// original key file that holds the rows, opens the secrets and verifies its audit chain. Runs
/// when `TEST_DATABASE_URL` names a server (CI sets it) and the PostgreSQL client tools are here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgresql_backup_recipe_restores_a_registry_that_serves() {
    let Some(db) = crate::harness::TestDb::postgres().await else {
        return;
    };
    let app = crate::harness::TestApp::spawn(db).await;
    let mut admin = app.admin();
    admin
        .create_connector(pb::CreateConnectorRequest {
            uid: "api-key/stripe".into(),
            r#type: "api-key".into(),
            name: "Stripe".into(),
            secrets: [("api_key".to_owned(), "sk_live_pg".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for i in 0..20 {
        admin
            .create_project(pb::CreateProjectRequest {
                id: format!("prj_{i}"),
                name: format!("p{i}"),
            })
            .await
            .unwrap();
        admin
            .attach_project(pb::AttachProjectRequest {
                connector: "api-key/stripe".into(),
                project: format!("prj_{i}"),
                environments: vec!["preview".into()],
                expire_time: None,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("registry.dump");
    let out = Command::new("pg_dump")
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .arg(&app.db.url)
        .output()
        .expect("pg_dump (postgresql-client) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let target = crate::harness::TestDb::postgres().await.unwrap();
    let out = Command::new("pg_restore")
        .arg(format!("--dbname={}", target.url))
        .arg("--no-owner")
        .arg(&dump)
        .output()
        .expect("pg_restore is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The original's key file, as the recipe says to keep it.
    let mut config = target.serve_config();
    config.secret_key_file = app.db.serve_config().secret_key_file;
    let (acme, broker) = (app.acme.clone(), app.broker.clone());
    let restored = crate::harness::TestApp::start_with_config(target, config).await;
    let links = restored
        .client(&acme.admin)
        .list_project_links(pb::ListProjectLinksRequest {
            connector: "api-key/stripe".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(links.len(), 20);
    let answer = restored
        .runtime(&broker)
        .authorize(pb::AuthorizeRequest {
            owner_id: "team_acme".into(),
            project_id: "prj_3".into(),
            environment: "preview".into(),
            issuer: crate::harness::ISSUER.into(),
            connector: "api-key/stripe".into(),
            installation_id: String::new(),
        })
        .await
        .expect("the restored registry authorizes")
        .into_inner();
    assert!(
        answer
            .secrets
            .get("api_key")
            .is_some_and(|s| s == "sk_live_pg"),
        "the secret opens with the original key"
    );
    let check = restored.registry.verify_audit().await.unwrap();
    assert!(
        matches!(check, ChainCheck::Whole { events, .. } if events >= 40),
        "{check:?}"
    );
    restored.stop().await;
    app.stop().await;
}
