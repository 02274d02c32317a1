//! The store against each backend directly: migrations, and the invariants the database itself
//! enforces even when code above it is wrong.

use chrono::Utc;
use link_registry::{
    app::open_store,
    domain::{
        RegistryError, Resource,
        model::{Actor, Project, Team},
        page::PageRequest,
        store::{AuditStore, LinkStore, LinkTerms, ProjectStore, Store, TeamStore},
        types::{
            ConnectorRef, EnvironmentSet, IssuerUrl, ProjectId, ProjectName, ProjectRef, TeamId,
            TeamSlug,
        },
    },
    store::SeaStore,
};
use sea_orm::{ConnectionTrait, Database};

use crate::harness::TestDb;

crate::on_every_backend!(
    migrations_apply_once_and_are_recorded,
    the_schema_refuses_links_across_teams_and_empty_environment_sets,
    unique_rules_answer_already_exists_without_a_prior_check,
    project_references_prefer_the_id_over_a_name,
    every_list_is_an_index_range_in_its_order,
    the_authorize_lookup_only_searches_unique_keys,
    a_project_reference_is_two_key_searches,
    old_audit_events_are_exported_then_deleted_in_batches,
    a_wrong_or_missing_master_key_is_refused_and_never_replaced,
);

fn team(id: &str, slug: &str) -> Team {
    Team {
        id: TeamId::parse(id).unwrap(),
        slug: TeamSlug::parse(slug).unwrap(),
        issuer: IssuerUrl::parse("https://issuer.example.test").unwrap(),
        created_at: Utc::now(),
    }
}

fn project(team: &str, id: &str, name: &str) -> Project {
    Project {
        team_id: TeamId::parse(team).unwrap(),
        id: ProjectId::parse(id).unwrap(),
        name: ProjectName::parse(name).unwrap(),
        created_at: Utc::now(),
    }
}

async fn add_team(store: &SeaStore, id: &str, slug: &str) {
    store
        .insert_team(&team(id, slug), &Actor::CommandLine)
        .await
        .unwrap();
}

async fn add_project(store: &SeaStore, team: &str, id: &str, name: &str) {
    store
        .insert_project(&project(team, id, name), &Actor::CommandLine)
        .await
        .unwrap();
}

async fn migrations_apply_once_and_are_recorded(db: TestDb) {
    let store = open_store(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let again = open_store(&db.url).await.unwrap();
    assert_eq!(
        again.applied_migrations().await.unwrap(),
        [
            "m20261125_000001_initial",
            "m20261126_000002_key_lifecycle",
            "m20261126_000003_change_feed",
            "m20261127_000004_issuances",
            "m20261127_000005_connector_suspension",
            "m20261203_000006_installations",
            "m20261203_000007_grants",
            "m20261203_000008_list_indexes",
            "m20261203_000009_keyed_link_tables",
            "m20261204_000010_held_consents",
            "m20261204_000011_key_check",
            "m20261204_000012_project_grants",
            "m20261204_000013_runtime_keys",
            "m20261204_000014_departed_connectors",
            "m20261204_000015_provider_subjects",
            "m20261204_000016_role_bindings",
            "m20261204_000017_audit_actor_issuer",
            "m20261204_000018_audit_chain",
            "m20261205_000019_link_expiry",
            "m20261205_000020_link_limits",
            "m20261205_000021_custom_environments",
            "m20261205_000022_signing_keys",
        ]
    );
    again.ping().await.unwrap();
}

async fn the_schema_refuses_links_across_teams_and_empty_environment_sets(db: TestDb) {
    let store = open_store(&db.url).await.unwrap();
    add_team(&store, "team_a", "a").await;
    add_team(&store, "team_b", "b").await;
    add_project(&store, "team_b", "prj_b", "b").await;
    let conn = Database::connect(&db.url).await.unwrap();
    let now = "2026-01-01T00:00:00+00:00";
    conn.execute_unprepared(&format!(
        "INSERT INTO connectors (id, team_id, uid, kind, name, config, secrets, created_at, updated_at) \
         VALUES ('conn_aaaaaaaaaaaaaaaaaaaaaaaa', 'team_a', 'api-key/x', 'api-key', 'x', '{{}}', '{{}}', '{now}', '{now}')"
    ))
    .await
    .unwrap();
    // A link claiming team_a's connector for team_b's project breaks a composite foreign key.
    for team in ["team_a", "team_b"] {
        let cross = conn
            .execute_unprepared(&format!(
                "INSERT INTO project_links (team_id, connector_id, project_id, environments, created_at, updated_at) \
                 VALUES ('{team}', 'conn_aaaaaaaaaaaaaaaaaaaaaaaa', 'prj_b', 1, '{now}', '{now}')"
            ))
            .await;
        assert!(cross.is_err(), "cross-team link accepted for {team}");
    }
    add_project(&store, "team_a", "prj_a", "a").await;
    let empty = conn
        .execute_unprepared(&format!(
            "INSERT INTO project_links (team_id, connector_id, project_id, environments, created_at, updated_at) \
             VALUES ('team_a', 'conn_aaaaaaaaaaaaaaaaaaaaaaaa', 'prj_a', 0, '{now}', '{now}')"
        ))
        .await;
    assert!(empty.is_err(), "empty environment set accepted");

    let team_a = TeamId::parse("team_a").unwrap();
    let connector = ConnectorRef::parse("api-key/x").unwrap();
    let envs = EnvironmentSet::parse(&["preview"]).unwrap();
    let other_teams_project = ProjectRef::parse("prj_b").unwrap();
    let err = store
        .attach(
            &team_a,
            &connector,
            &other_teams_project,
            LinkTerms::lasting(envs),
            &Actor::CommandLine,
            Utc::now(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::NotFound {
                resource: Resource::Project,
                ..
            }
        ),
        "{err:?}"
    );
    let own = ProjectRef::parse("prj_a").unwrap();
    store
        .attach(
            &team_a,
            &connector,
            &own,
            LinkTerms::lasting(envs),
            &Actor::CommandLine,
            Utc::now(),
        )
        .await
        .unwrap();
    let links = store
        .links(&team_a, &Default::default(), &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(links.len(), 1);
    // A custom environment id the project does not (or no longer) have is never stored, even
    // when the store is asked directly (as an attach racing the environment's delete would).
    let gone =
        link_registry::domain::types::CustomEnvironment::parse_id("env_0123456789abcdefghijklmn")
            .unwrap();
    let err = store
        .attach(
            &team_a,
            &connector,
            &own,
            LinkTerms {
                custom_environments: vec![gone],
                ..LinkTerms::lasting(envs)
            },
            &Actor::CommandLine,
            Utc::now(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::InvalidArgument(v) if v[0].field == "environments"),
        "{err:?}"
    );
    let links = store
        .links(&team_a, &Default::default(), &PageRequest::first(10))
        .await
        .unwrap();
    assert!(links[0].custom_environments.is_empty());
}

async fn unique_rules_answer_already_exists_without_a_prior_check(db: TestDb) {
    let store = open_store(&db.url).await.unwrap();
    add_team(&store, "team_a", "a").await;
    let dup_slug = store
        .insert_team(&team("team_z", "a"), &Actor::CommandLine)
        .await
        .unwrap_err();
    assert!(
        matches!(
            dup_slug,
            RegistryError::AlreadyExists {
                resource: Resource::Team,
                ..
            }
        ),
        "{dup_slug:?}"
    );
    add_project(&store, "team_a", "prj_1", "one").await;
    let dup = store
        .insert_project(&project("team_a", "prj_1", "two"), &Actor::CommandLine)
        .await
        .unwrap_err();
    assert!(
        matches!(
            dup,
            RegistryError::AlreadyExists {
                resource: Resource::Project,
                ..
            }
        ),
        "{dup:?}"
    );
    let missing_team = store
        .insert_project(&project("team_nope", "prj_1", "one"), &Actor::CommandLine)
        .await
        .unwrap_err();
    assert!(
        matches!(missing_team, RegistryError::FailedPrecondition(_)),
        "{missing_team:?}"
    );
    // A failed insert writes no audit row: the change and its audit event share a transaction.
    let events = store
        .audit_events(
            &TeamId::parse("team_a").unwrap(),
            &Default::default(),
            &PageRequest::first(50),
        )
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["project.create", "team.create"]
    );
}

async fn project_references_prefer_the_id_over_a_name(db: TestDb) {
    let store = open_store(&db.url).await.unwrap();
    add_team(&store, "team_a", "a").await;
    add_project(&store, "team_a", "prj_x", "web").await;
    // A project whose name is another project's id.
    add_project(&store, "team_a", "prj_y", "prj_x").await;
    let team_a = TeamId::parse("team_a").unwrap();
    let found = store
        .project(&team_a, &ProjectRef::parse("prj_x").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id.as_str(), "prj_x");
    let found = store
        .project(&team_a, &ProjectRef::parse("web").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id.as_str(), "prj_x");
    assert!(
        store
            .project(&team_a, &ProjectRef::parse("nope").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

/// Every list query, as the database plans it, reads an index range in the list's order: no
/// full scan of a table, no sort of its rows (which would make later pages cost more).
async fn every_list_is_an_index_range_in_its_order(db: TestDb) {
    let store = open_store(&db.url).await.unwrap();
    let plans = store.list_plans().await.unwrap();
    assert_eq!(plans.len(), 14);
    for (list, lines) in plans {
        let plan = lines.join("\n");
        assert!(!plan.is_empty(), "{list}: no plan");
        // A later page: its key must bound the index range itself.
        let bounded = list.ends_with("first page")
            || lines.iter().any(|l| {
                let l = l.to_ascii_lowercase();
                (l.contains("index cond") || l.starts_with("search"))
                    && (l.contains('>') || l.contains('<'))
            });
        assert!(
            bounded,
            "{list}: the page key does not bound an index range:\n{plan}"
        );
        if db.backend == "postgres" {
            assert!(!plan.contains("Seq Scan"), "{list} scans a table:\n{plan}");
            assert!(!plan.contains("Sort"), "{list} sorts:\n{plan}");
        } else {
            assert!(!plan.contains("TEMP B-TREE"), "{list} sorts:\n{plan}");
            for line in &lines {
                // SQLite says SCAN for a walk over a whole table (or a whole index); a page is a
                // SEARCH: a range of an index.
                assert!(
                    !line.trim_start().starts_with("SCAN"),
                    "{list} scans instead of searching an index range:\n{plan}"
                );
            }
        }
    }
}

/// `Authorize` reads one row of each table by key, whatever their sizes.
async fn the_authorize_lookup_only_searches_unique_keys(db: TestDb) {
    let store = open_store(&db.url).await.unwrap();
    let plans = store.authorize_plans().await.unwrap();
    assert_eq!(plans.len(), 2);
    for (lookup, lines) in plans {
        let plan = lines.join("\n");
        if db.backend == "postgres" {
            assert!(plan.contains("Index"), "{lookup}:\n{plan}");
            assert!(
                !plan.contains("Seq Scan"),
                "{lookup} scans a table:\n{plan}"
            );
            assert!(!plan.contains("Sort"), "{lookup} sorts:\n{plan}");
        } else {
            assert_eq!(lines.len(), 4, "{lookup}: one step per table:\n{plan}");
            for line in &lines {
                let line = line.trim_start();
                assert!(
                    line.starts_with("SEARCH") && line.contains("=?"),
                    "{lookup}: not a search by key:\n{plan}"
                );
                // Projects and links are found in their primary key's own B-tree, with no
                // second descent into a table by rowid.
                if line.starts_with("SEARCH project") {
                    assert!(
                        line.contains("USING PRIMARY KEY"),
                        "{lookup}: not one descent:\n{plan}"
                    );
                }
            }
        }
    }
}

/// A reference that may be an id or a name is looked up by both keys, never by a scan of the
/// team's projects (an `OR` of the two was a scan on SQLite's `WITHOUT ROWID` table).
async fn a_project_reference_is_two_key_searches(db: TestDb) {
    let store = open_store(&db.url).await.unwrap();
    let plans = store.project_lookup_plans().await.unwrap();
    let (lookup, lines) = &plans[0];
    let plan = lines.join("\n");
    if db.backend == "postgres" {
        assert!(plan.contains("Index"), "{lookup}:\n{plan}");
        assert!(!plan.contains("Seq Scan"), "{lookup} scans:\n{plan}");
    } else {
        let searches: Vec<&str> = lines
            .iter()
            .map(|l| l.trim_start())
            .filter(|l| l.starts_with("SEARCH") || l.starts_with("SCAN"))
            .collect();
        assert_eq!(searches.len(), 2, "{lookup}:\n{plan}");
        for line in searches {
            assert!(
                line.starts_with("SEARCH projects") && line.contains("team_id=? AND"),
                "{lookup}: not a key search:\n{plan}"
            );
        }
    }
}

/// `link-registry audit export` prints a window as JSON lines, oldest first; the retention then
/// deletes what is older than it, in batches, and nothing newer.
async fn old_audit_events_are_exported_then_deleted_in_batches(db: TestDb) {
    use std::{process::Command, sync::Arc};
    let store = open_store(&db.url).await.unwrap();
    let now = Utc::now();
    let old = now - chrono::Duration::days(500);
    for i in 0..1100 {
        let mut t = team(&format!("team_old{i:04}"), &format!("old{i:04}"));
        t.created_at = old + chrono::Duration::seconds(i);
        store.insert_team(&t, &Actor::CommandLine).await.unwrap();
    }
    for i in 0..3 {
        add_team(&store, &format!("team_new{i}"), &format!("new{i}")).await;
    }

    let export = |since: String, until: String, team: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_link-registry"));
        command.args([
            "audit",
            "export",
            "--database-url",
            &db.url,
            "--since",
            &since,
            "--until",
            &until,
        ]);
        if let Some(team) = team {
            command.args(["--team", team]);
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let rfc = |t: chrono::DateTime<Utc>| t.to_rfc3339();
    let archived = export(
        rfc(old - chrono::Duration::hours(1)),
        rfc(old + chrono::Duration::days(1)),
        None,
    );
    assert_eq!(archived.len(), 1100);
    assert_eq!(archived[0]["action"], "team.create");
    assert_eq!(archived[0]["owner_id"], "team_old0000");
    assert_eq!(archived[1099]["owner_id"], "team_old1099");
    let one = export(
        rfc(old - chrono::Duration::hours(1)),
        rfc(now + chrono::Duration::hours(1)),
        Some("team_new1"),
    );
    assert_eq!(one.len(), 1);

    let registry = link_registry::domain::Registry::new(
        Arc::new(store),
        link_registry::crypto::SecretCipher::ephemeral(),
    );
    // A retention longer than the calendar reaches back deletes nothing (and does not overflow).
    let none = registry
        .prune_audit(std::time::Duration::from_secs(u64::MAX / 4))
        .await
        .unwrap();
    assert_eq!(none, 0);
    let deleted = registry
        .prune_audit(std::time::Duration::from_secs(400 * 86_400))
        .await
        .unwrap();
    assert_eq!(deleted, 1100);
    let left = export(
        rfc(old - chrono::Duration::hours(1)),
        rfc(now + chrono::Duration::hours(1)),
        None,
    );
    assert_eq!(left.len(), 3);
    assert!(
        left.iter()
            .all(|e| e["owner_id"].as_str().unwrap().starts_with("team_new"))
    );
}

/// The master key is checked at start: a key that does not open the database's secrets is
/// refused (before and after the key check exists), and a SQLite database that holds secrets never
/// gets a new key beside it when its key file is gone.
async fn a_wrong_or_missing_master_key_is_refused_and_never_replaced(db: TestDb) {
    use link_registry::app::{App, AppError};
    let app = crate::harness::TestApp::spawn(db).await;
    app.admin()
        .create_connector(connect_proto::registry::v1::CreateConnectorRequest {
            uid: "api-key/stripe".into(),
            secrets: [("api_key".to_owned(), "sk_live_1".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let db = app.stop().await;
    let other_key = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    std::fs::remove_file(&other_key).unwrap();
    link_registry::crypto::SecretCipher::from_key_file(&other_key, true).unwrap();
    let with_other_key = || {
        let mut config = db.serve_config();
        config.secret_key_file = Some(other_key.to_path_buf());
        config
    };
    assert!(matches!(
        App::build(with_other_key()).await,
        Err(AppError::WrongSecretKey)
    ));
    // A database from before key checks: its connectors' secrets decide.
    let raw = Database::connect(&db.url).await.unwrap();
    raw.execute_unprepared("DELETE FROM key_checks")
        .await
        .unwrap();
    raw.close().await.unwrap();
    assert!(matches!(
        App::build(with_other_key()).await,
        Err(AppError::WrongSecretKey)
    ));
    let store = open_store(&db.url).await.unwrap();
    assert_eq!(store.key_check().await.unwrap(), None, "nothing written");
    if db.backend == "sqlite" {
        let key = link_registry::config::sqlite_path(&db.url).unwrap();
        let key = std::path::PathBuf::from(format!("{}.key", key.display()));
        let aside = key.with_extension("key.aside");
        std::fs::rename(&key, &aside).unwrap();
        let error = App::build(db.serve_config()).await.unwrap_err();
        assert!(
            matches!(&error, AppError::SecretKeyMissing { path } if *path == key),
            "{error}"
        );
        assert!(!key.exists(), "no new key was made next to the secrets");
        std::fs::rename(&aside, &key).unwrap();
    }
    // The right key starts, and writes the check again.
    let app = crate::harness::TestApp::start(db).await;
    assert!(app.registry.verify_master_key().await.unwrap());
    assert!(store.key_check().await.unwrap().is_some());
    app.stop().await;
}
