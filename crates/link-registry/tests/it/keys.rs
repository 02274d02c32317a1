//! The key lifecycle: keys that expire, keys revoked by another process (the `keys` commands),
//! and the commands themselves as an operator runs them.

use std::{
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use connect_proto::registry::v1 as pb;
use link_registry::{
    app::open_store,
    crypto::SecretCipher,
    domain::{Registry, model::Role, types::TeamId},
};
use secrecy::ExposeSecret;
use tonic::Code;

use crate::harness::{TestApp, TestDb, assert_error};

crate::on_every_backend!(
    a_revoked_key_is_refused_by_a_running_server_within_seconds,
    an_expired_key_is_refused,
    role_bindings_are_the_admins_and_audited,
    a_teams_admin_lists_and_revokes_its_keys_and_filters_the_audit,
);

/// A registry over the same database, as the `keys` commands open it.
async fn operator(db: &TestDb) -> Registry {
    let store = open_store(&db.url).await.expect("open the database");
    Registry::new(Arc::new(store), SecretCipher::ephemeral())
}

async fn list_projects(app: &TestApp, key: &str) -> Result<(), tonic::Status> {
    app.client(key)
        .list_projects(pb::ListProjectsRequest::default())
        .await
        .map(|_| ())
}

/// Polls until `key` is refused, at most `within`.
async fn refused_within(app: &TestApp, key: &str, within: Duration) {
    let start = Instant::now();
    loop {
        match list_projects(app, key).await {
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                return;
            }
            Ok(()) if start.elapsed() < within => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(()) => panic!("the key still works after {within:?}"),
        }
    }
}

async fn a_revoked_key_is_refused_by_a_running_server_within_seconds(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let admin = app.acme.admin.clone();
    list_projects(&app, &admin)
        .await
        .expect("a fresh key works");
    let operator = operator(&app.db).await;
    let id = app.acme.admin_key_id.parse_key_id();
    let revoked = operator.revoke_api_key(&id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    refused_within(&app, &admin, Duration::from_secs(5)).await;
    assert_error(
        app.client(&admin)
            .list_projects(pb::ListProjectsRequest::default())
            .await,
        Code::Unauthenticated,
        "INVALID_KEY",
    );
    // Revoking again changes nothing; the other keys still work.
    let again = operator.revoke_api_key(&id).await.unwrap();
    assert_eq!(again.revoked_at, revoked.revoked_at);
    list_projects(&app, &app.acme.viewer.clone())
        .await
        .expect("other keys are untouched");
    // The listing shows it revoked, the audit log has one revocation.
    let keys = operator
        .list_api_keys(Some(&TeamId::parse("team_acme").unwrap()))
        .await
        .unwrap();
    let listed = keys.iter().find(|k| k.id == id).unwrap();
    assert_eq!(listed.state(chrono::Utc::now()), "revoked");
    let events = app
        .client(&app.acme.viewer)
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let revocations: Vec<_> = events.iter().filter(|e| e.action == "key.revoke").collect();
    assert_eq!(revocations.len(), 1, "{events:?}");
    assert_eq!(revocations[0].target, format!("key:{id}"));
    // An unknown key id is a clear not-found.
    let unknown = operator
        .revoke_api_key(&"key_unknown".parse_key_id())
        .await
        .unwrap_err();
    assert!(
        unknown.to_string().starts_with("KeyNotFoundError"),
        "{unknown}"
    );
}

async fn an_expired_key_is_refused(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let expires_at = chrono::Utc::now() + chrono::TimeDelta::seconds(2);
    let (record, key) = app
        .registry
        .create_expiring_api_key(
            &[TeamId::parse("team_acme").unwrap()],
            Role::Viewer,
            Some(expires_at),
        )
        .await
        .unwrap();
    assert_eq!(record.expires_at, Some(expires_at));
    let key = key.expose_secret().to_owned();
    list_projects(&app, &key)
        .await
        .expect("works until it expires");
    refused_within(&app, &key, Duration::from_secs(5)).await;
    // An expiry in the past is refused at creation.
    assert!(
        app.registry
            .create_expiring_api_key(
                &[TeamId::parse("team_acme").unwrap()],
                Role::Viewer,
                Some(chrono::Utc::now() - chrono::TimeDelta::seconds(1)),
            )
            .await
            .is_err()
    );
}

trait ParseKeyId {
    fn parse_key_id(&self) -> link_registry::domain::types::KeyId;
}

impl ParseKeyId for str {
    fn parse_key_id(&self) -> link_registry::domain::types::KeyId {
        link_registry::domain::types::KeyId::parse(self).unwrap()
    }
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_link-registry"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run link-registry");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_keys_commands_list_and_revoke_without_ever_printing_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
    let db = ["--database-url", url.as_str()];
    let cmd = |args: &[&str]| run(&[args, &db[..]].concat());
    let (ok, _, err) = cmd(&[
        "teams",
        "create",
        "--id",
        "team_a",
        "--slug",
        "a",
        "--issuer",
        "https://idp.example/a",
    ]);
    assert!(ok, "{err}");
    let (ok, admin, err) = cmd(&[
        "keys",
        "create",
        "--team",
        "team_a",
        "--role",
        "admin",
        "--expires-in",
        "30d",
    ]);
    assert!(ok, "{err}");
    let admin = admin.trim().to_owned();
    assert!(admin.starts_with("cnk_"));
    let (ok, broker, _) = cmd(&["keys", "create", "--role", "broker"]);
    assert!(ok);
    let broker = broker.trim().to_owned();
    // A broker key limited to teams: each must exist; an admin key belongs to one team.
    let (ok, _, err) = cmd(&[
        "keys", "create", "--role", "broker", "--team", "team_a", "--team", "team_zz",
    ]);
    assert!(!ok && err.contains("team_zz"), "{err}");
    let (ok, _, err) = cmd(&[
        "keys", "create", "--role", "admin", "--team", "team_a", "--team", "team_a2",
    ]);
    assert!(!ok && err.contains("one team"), "{err}");
    let (ok, limited, err) = cmd(&["keys", "create", "--role", "broker", "--team", "team_a"]);
    assert!(ok, "{err}");
    assert!(limited.trim().starts_with("cnk_"));

    let (ok, listing, err) = cmd(&["keys", "list"]);
    assert!(ok, "{err}");
    let lines: Vec<Vec<&str>> = listing.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 3, "{listing}");
    let limited_line = lines
        .iter()
        .find(|l| l[2] == "broker" && l[1] != "-")
        .unwrap();
    assert_eq!(limited_line[1], "team_a", "{listing}");
    let (_, team_only, _) = cmd(&["keys", "list", "--team", "team_a"]);
    assert_eq!(
        team_only.lines().count(),
        2,
        "the admin key and the limited broker key"
    );
    let (ok, _, _) = cmd(&["keys", "revoke", "--id", limited_line[0]]);
    assert!(ok);
    assert!(!listing.contains(&admin) && !listing.contains(&broker));
    let admin_line = lines.iter().find(|l| l[2] == "admin").unwrap();
    assert_eq!(admin_line[1], "team_a");
    assert_ne!(admin_line[4], "never", "the expiry is shown");
    assert_eq!(admin_line[5], "never", "never used yet");
    assert_eq!(admin_line[6], "active");
    let broker_line = lines
        .iter()
        .find(|l| l[2] == "broker" && l[1] == "-")
        .unwrap();
    assert_eq!((broker_line[1], broker_line[4]), ("-", "never"));

    let (ok, revoked, err) = cmd(&["keys", "revoke", "--id", admin_line[0]]);
    assert!(ok, "{err}");
    assert_eq!(revoked.trim(), admin_line[0]);
    let (_, listing, _) = cmd(&["keys", "list", "--team", "team_a"]);
    assert!(listing.lines().all(|l| l.ends_with("revoked")), "{listing}");

    let (ok, out, err) = cmd(&["keys", "revoke", "--id", "key_nosuchkey"]);
    assert!(!ok && out.is_empty());
    assert!(err.contains("KeyNotFoundError"), "{err}");

    // The first role binding, as an operator makes it before anybody can sign in.
    let issuer = "https://login.example.com";
    let (ok, id, err) = cmd(&[
        "bindings",
        "create",
        "--team",
        "team_a",
        "--issuer",
        issuer,
        "--subject",
        "ada",
        "--role",
        "admin",
    ]);
    assert!(ok, "{err}");
    let id = id.trim().to_owned();
    assert!(id.starts_with("rb_"), "{id}");
    let (ok, _, err) = cmd(&[
        "bindings", "create", "--team", "team_a", "--issuer", issuer, "--group", "ops", "--role",
        "viewer",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = cmd(&[
        "bindings",
        "create",
        "--team",
        "team_a",
        "--issuer",
        issuer,
        "--subject",
        "ada",
        "--group",
        "ops",
        "--role",
        "admin",
    ]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");
    let (ok, _, err) = cmd(&[
        "bindings",
        "create",
        "--team",
        "team_nope",
        "--issuer",
        issuer,
        "--subject",
        "x",
        "--role",
        "admin",
    ]);
    assert!(!ok && err.contains("TeamNotFoundError"), "{err}");
    let (ok, listing, err) = cmd(&["bindings", "list", "--team", "team_a"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2, "{listing}");
    assert!(
        lines[0].starts_with(&format!("{id}\t{issuer}\tsubject:ada\tadmin\t")),
        "{listing}"
    );
    assert!(lines[1].contains("\tgroup:ops\tviewer\t"), "{listing}");
    let (ok, out, err) = cmd(&["bindings", "delete", "--team", "team_a", "--id", &id]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), id);
    let (_, listing, _) = cmd(&["bindings", "list", "--team", "team_a"]);
    assert_eq!(listing.lines().count(), 1);
    let (ok, _, err) = cmd(&["bindings", "delete", "--team", "team_a", "--id", &id]);
    assert!(!ok && err.contains("RoleBindingNotFoundError"), "{err}");
}

/// `link-registry serve` until it logs that it serves (then stopped) or exits: whether it served,
/// and what it wrote to stderr.
fn serve_once(args: &[&str]) -> (bool, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_link-registry"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env("LINK_REGISTRY_LOG_FORMAT", "text")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run link-registry serve");
    let mut seen = String::new();
    let mut served = false;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("serving") {
            served = true;
            break;
        }
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(served || !status.success(), "{seen}");
    (served, seen)
}

/// The master key as an operator meets it, through the binary: a wrong key and a missing key
/// file are refused at start with what to do (and no key is made next to the secrets); `secrets
/// rotate-key` re-seals everything, after which only the new key starts the registry.
#[test]
fn a_wrong_missing_or_rotated_master_key_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("r.db");
    let url = format!("sqlite://{}?mode=rwc", db_path.display());
    let key = dir.path().join("r.db.key");
    let db = ["--database-url", url.as_str()];
    // A connector with a secret, sealed under the key file beside the database.
    let (served, log) = serve_once(&db);
    assert!(served, "{log}");
    assert!(key.exists());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open_store(&url).await.unwrap();
        let registry = Registry::new(
            Arc::new(store),
            SecretCipher::from_key_file(&key, false).unwrap(),
        );
        registry
            .create_team(link_registry::domain::service::NewTeam {
                id: TeamId::parse("team_a").unwrap(),
                slug: link_registry::domain::types::TeamSlug::parse("a").unwrap(),
                issuer: link_registry::domain::types::IssuerUrl::parse("https://idp.example/a")
                    .unwrap(),
            })
            .await
            .unwrap();
        let (_, admin) = registry
            .create_api_key(Some(TeamId::parse("team_a").unwrap()), Role::Admin)
            .await
            .unwrap();
        let caller = registry.authenticate(admin.expose_secret()).await.unwrap();
        let secrets = link_registry::domain::types::SecretInput::parse([(
            "api_key".to_owned(),
            "sk_live_1".to_owned(),
        )])
        .unwrap();
        registry
            .create_connector(
                &caller,
                link_registry::domain::service::NewConnector {
                    uid: link_registry::domain::types::ConnectorUid::parse("api-key/stripe")
                        .unwrap(),
                    name: link_registry::domain::types::DisplayName::parse("Stripe").unwrap(),
                    config: Default::default(),
                    secrets,
                },
            )
            .await
            .unwrap();
    });
    // A wrong key.
    let other = dir.path().join("other.key");
    SecretCipher::from_key_file(&other, true).unwrap();
    let other_arg = other.to_str().unwrap();
    let (served, log) = serve_once(&[&db[..], &["--secret-key-file", other_arg]].concat());
    assert!(!served, "{log}");
    assert!(
        log.contains("does not open this database's secrets"),
        "{log}"
    );
    // A missing key file: refused, and no new key beside the secrets.
    let aside = dir.path().join("aside.key");
    std::fs::rename(&key, &aside).unwrap();
    let (served, log) = serve_once(&db);
    assert!(!served, "{log}");
    assert!(log.contains("is missing"), "{log}");
    assert!(!key.exists(), "no key was generated next to the secrets");
    std::fs::rename(&aside, &key).unwrap();
    // Rotation: the new key serves, the old one no longer does.
    let new = dir.path().join("new.key");
    let (ok, out, err) = run(&[
        "secrets",
        "rotate-key",
        "--database-url",
        &url,
        "--secret-key-file",
        key.to_str().unwrap(),
        "--new-secret-key-file",
        new.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(!out.contains("sk_live_1") && !err.contains("sk_live_1"));
    let (served, log) =
        serve_once(&[&db[..], &["--secret-key-file", key.to_str().unwrap()]].concat());
    assert!(!served && log.contains("does not open"), "{log}");
    let (served, log) =
        serve_once(&[&db[..], &["--secret-key-file", new.to_str().unwrap()]].concat());
    assert!(served, "{log}");
}

/// Role bindings through the admin API: by subject and by group, one of the two, admin or viewer,
/// once each; admin keys only, of their own team; deleting one; each change audited as the key.
async fn role_bindings_are_the_admins_and_audited(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let globex = app
        .new_team("team_globex", "globex", crate::harness::OTHER_ISSUER)
        .await;
    let mut admin = app.admin();
    let request = |subject: &str, group: &str, role: &str| pb::CreateRoleBindingRequest {
        issuer: "https://login.example.com".into(),
        subject: subject.into(),
        group: group.into(),
        role: role.into(),
        ..Default::default()
    };
    let ada = admin
        .create_role_binding(request("ada", "", "admin"))
        .await
        .unwrap()
        .into_inner();
    assert!(ada.id.starts_with("rb_"), "{ada:?}");
    assert_eq!(
        (ada.team.as_str(), ada.subject.as_str(), ada.group.as_str()),
        ("team_acme", "ada", "")
    );
    let ops = admin
        .create_role_binding(pb::CreateRoleBindingRequest {
            team: "team_acme".into(),
            ..request("", "ops", "viewer")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ops.group.as_str(), ops.role.as_str()), ("ops", "viewer"));
    assert_error(
        admin
            .create_role_binding(request("ada", "", "viewer"))
            .await,
        Code::AlreadyExists,
        "ALREADY_EXISTS",
    );
    let status = assert_error(
        admin
            .create_role_binding(request("ada", "ops", "broker"))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        crate::harness::violated_fields(&status),
        ["subject", "role"]
    );
    let status = assert_error(
        admin
            .create_role_binding(pb::CreateRoleBindingRequest {
                issuer: "not a url".into(),
                ..request("bob", "", "admin")
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(crate::harness::violated_fields(&status), ["issuer"]);
    // Another team's, or a viewer's: refused.
    assert_error(
        admin
            .create_role_binding(pb::CreateRoleBindingRequest {
                team: "team_globex".into(),
                ..request("bob", "", "admin")
            })
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    let mut viewer = app.client(&app.acme.viewer);
    assert_error(
        viewer
            .create_role_binding(request("bob", "", "admin"))
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    assert_error(
        viewer
            .list_role_bindings(pb::ListRoleBindingsRequest::default())
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    let listed = admin
        .list_role_bindings(pb::ListRoleBindingsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .bindings;
    assert_eq!(listed, [ada.clone(), ops.clone()]);
    let theirs = app
        .client(&globex.admin)
        .list_role_bindings(pb::ListRoleBindingsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .bindings;
    assert!(theirs.is_empty(), "another team sees none of them");
    assert_error(
        app.client(&globex.admin)
            .delete_role_binding(pb::DeleteRoleBindingRequest { id: ada.id.clone() })
            .await,
        Code::NotFound,
        "ROLE_BINDING_NOT_FOUND",
    );
    let deleted = admin
        .delete_role_binding(pb::DeleteRoleBindingRequest { id: ada.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted, ada);
    let listed = admin
        .list_role_bindings(pb::ListRoleBindingsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .bindings;
    assert_eq!(listed, [ops]);
    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<&str> = events
        .iter()
        .filter(|e| e.action.starts_with("binding."))
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        actions,
        ["binding.delete", "binding.create", "binding.create"]
    );
    assert!(
        events
            .iter()
            .filter(|e| e.action.starts_with("binding."))
            .all(|e| e.actor == format!("key:{}", app.acme.admin_key_id))
    );
    app.stop().await;
}

/// `backup` while the registry serves and takes 100 attaches a second, `restore` into a new
/// database, and a registry started on it (with the original key file) that answers as before,
/// whose audit chain verifies and which holds every attach acknowledged before the backup
/// began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_to_a_registry_that_serves() {
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    let mut admin = app.admin();
    admin
        .create_connector(pb::CreateConnectorRequest {
            uid: "api-key/stripe".into(),
            secrets: [("api_key".to_owned(), "sk_live_backup".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .create_project(pb::CreateProjectRequest {
            id: "prj_0".into(),
            name: "p0".into(),
        })
        .await
        .unwrap();
    const PROJECTS: usize = 300;
    for i in 1..=PROJECTS {
        admin
            .create_project(pb::CreateProjectRequest {
                id: format!("prj_{i}"),
                name: format!("p{i}"),
            })
            .await
            .unwrap();
    }
    // A writer attaches a project every 10 ms (100 a second) while the copy is taken, noting
    // when each attach was acknowledged.
    let started = Instant::now();
    let writer = {
        let mut admin = app.admin();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            for i in 1..=PROJECTS {
                tick.tick().await;
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
                acknowledged.push((format!("prj_{i}"), started.elapsed()));
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup.db");
    let url = app.db.url.clone();
    let backup_arg = backup.to_str().unwrap().to_owned();
    let backup_began = started.elapsed();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        run(&["backup", "--database-url", &url, "--out", &backup_arg])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out.trim(), backup.to_str().unwrap());
    let acknowledged = writer.await.unwrap();
    let before_backup: Vec<_> = acknowledged
        .iter()
        .filter(|(_, at)| *at < backup_began)
        .map(|(project, _)| project.clone())
        .collect();
    assert!(
        before_backup.len() >= 50 && before_backup.len() < PROJECTS,
        "the backup was taken mid-load: {} attaches before it",
        before_backup.len()
    );
    // A second backup onto the first is refused.
    let (ok, _, err) = run(&[
        "backup",
        "--database-url",
        &app.db.url,
        "--out",
        backup.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("already exists"), "{err}");

    let restored = dir.path().join("restored.db");
    let restored_url = format!("sqlite://{}?mode=rwc", restored.display());
    let (ok, _, err) = run(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--database-url",
        &restored_url,
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["audit", "verify", "--database-url", &restored_url]);
    assert!(ok && out.contains("audit chain whole"), "{out}{err}");
    let (ok, _, err) = run(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--database-url",
        &restored_url,
    ]);
    assert!(
        !ok && err.contains("exists"),
        "restoring over a database: {err}"
    );

    // The restored registry opens its secrets with the original key and serves them.
    let key_file = link_registry::config::sqlite_path(&app.db.url)
        .map(|p| std::path::PathBuf::from(format!("{}.key", p.display())))
        .unwrap();
    let (acme, broker) = (app.acme.clone(), app.broker.clone());
    // Kept to the end: its directory holds the key file.
    let _original = app.stop().await;
    let mut config = link_registry::ServeConfig::local(&restored_url);
    config.secret_key_file = Some(key_file);
    let restored_db = TestDb::sqlite_at(restored_url);
    let mut served = TestApp::start_with_config(restored_db, config).await;
    served.acme = acme;
    served.broker = broker;
    let answer = served
        .broker()
        .authorize(pb::AuthorizeRequest {
            owner_id: "team_acme".into(),
            project_id: "prj_0".into(),
            environment: "preview".into(),
            issuer: crate::harness::ISSUER.into(),
            connector: "api-key/stripe".into(),
            installation_id: String::new(),
        })
        .await;
    // Not linked: the registry answers from the restored rows (project and connector found).
    crate::harness::assert_error(
        answer,
        Code::PermissionDenied,
        "CLIENT_NOT_LINKED_TO_PROJECT",
    );
    let projects = served
        .admin()
        .list_projects(pb::ListProjectsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .projects;
    assert_eq!(
        projects.len(),
        PROJECTS + 1,
        "every project written before it"
    );
    let mut restored_links = std::collections::BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let page = served
            .admin()
            .list_project_links(pb::ListProjectLinksRequest {
                connector: "api-key/stripe".into(),
                page_size: 500,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        restored_links.extend(page.links.into_iter().map(|l| l.project_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let lost: Vec<_> = before_backup
        .iter()
        .filter(|p| !restored_links.contains(*p))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged before the backup, missing from it: {lost:?}"
    );
    served.stop().await;
}

async fn a_teams_admin_lists_and_revokes_its_keys_and_filters_the_audit(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let globex = app
        .new_team("team_globex", "globex", crate::harness::OTHER_ISSUER)
        .await;
    let admin = app.client(&app.acme.admin);
    let keys = admin
        .clone()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    // Acme's admin and viewer keys; never globex's, never the unlimited broker key.
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k.teams == ["team_acme"]), "{keys:?}");
    // A broker key limited to both teams is listed to each with that team alone.
    app.registry
        .create_expiring_api_key(
            &[
                TeamId::parse("team_acme").unwrap(),
                TeamId::parse("team_globex").unwrap(),
            ],
            Role::Broker,
            None,
        )
        .await
        .unwrap();
    let listed = admin
        .clone()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    let shared = listed
        .iter()
        .find(|k| k.role == "broker")
        .expect("the shared broker key");
    assert_eq!(shared.teams, ["team_acme"], "{shared:?}");
    let viewer_key = keys.iter().find(|k| k.role == "viewer").unwrap().clone();
    assert!(viewer_key.revoke_time.is_none() && viewer_key.create_time.is_some());

    // A viewer may not list or revoke; another team's key is unknown; a malformed id is refused.
    assert_error(
        app.client(&app.acme.viewer)
            .list_api_keys(pb::ListApiKeysRequest::default())
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    let globex_keys = app
        .client(&globex.admin)
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_error(
        admin
            .clone()
            .revoke_api_key(pb::RevokeApiKeyRequest {
                id: globex_keys[0].id.clone(),
            })
            .await,
        Code::NotFound,
        "KEY_NOT_FOUND",
    );
    assert_error(
        admin
            .clone()
            .revoke_api_key(pb::RevokeApiKeyRequest {
                id: "no such".into(),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );

    let revoked = admin
        .clone()
        .revoke_api_key(pb::RevokeApiKeyRequest {
            id: viewer_key.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoke_time.is_some());
    refused_within(&app, &app.acme.viewer, Duration::from_secs(5)).await;
    list_projects(&app, &globex.viewer)
        .await
        .expect("globex's keys are untouched");

    // The audit, filtered: the revocation by the admin's key, and nothing for another action.
    let audit = |filter: pb::ListAuditEventsRequest| {
        let mut admin = admin.clone();
        async move {
            admin
                .list_audit_events(filter)
                .await
                .map(|r| r.into_inner().events)
        }
    };
    let by_action = audit(pb::ListAuditEventsRequest {
        action: "key.revoke".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(by_action.len(), 1, "{by_action:?}");
    assert_eq!(by_action[0].target, format!("key:{}", viewer_key.id));
    assert_eq!(by_action[0].actor, format!("key:{}", app.acme.admin_key_id));
    let both = audit(pb::ListAuditEventsRequest {
        action: "key.revoke".into(),
        actor: format!("key:{}", app.acme.admin_key_id),
        target: format!("key:{}", viewer_key.id),
        start_time: by_action[0].time,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(both, by_action);
    let later = audit(pb::ListAuditEventsRequest {
        action: "key.revoke".into(),
        start_time: Some(prost_types::Timestamp {
            seconds: by_action[0].time.unwrap().seconds + 1,
            nanos: 0,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(later.is_empty(), "{later:?}");
    let none = audit(pb::ListAuditEventsRequest {
        action: "key.revoke".into(),
        actor: "user:nobody".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(none.is_empty());
    let backwards = admin
        .clone()
        .list_audit_events(pb::ListAuditEventsRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: 2_000,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 1_000,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await;
    assert_error(backwards, Code::InvalidArgument, "INVALID_ARGUMENT");
}
