//! The tamper-evident audit log: every event chained to the one before it, `audit verify`
//! naming the first event that was edited, removed or inserted, and retention that keeps the
//! kept chain verifiable.

use std::{process::Command, sync::Arc, time::Duration};

use connect_proto::registry::v1 as pb;
use link_registry::{
    app::open_store,
    crypto::SecretCipher,
    domain::{
        Registry,
        audit::{ChainedFields, GENESIS_HASH, chain_hash},
        service::ChainCheck,
    },
    store::connect,
};
use sea_orm::{ConnectionTrait, Database};

use crate::harness::{TestApp, TestDb};

crate::on_every_backend!(
    the_audit_chain_names_the_first_tampered_event_and_survives_retention,
    events_written_before_the_chain_are_chained_by_the_upgrade,
);

async fn verify(db: &TestDb) -> ChainCheck {
    let store = open_store(&db.url).await.expect("open the database");
    Registry::new(Arc::new(store), SecretCipher::ephemeral())
        .verify_audit()
        .await
        .unwrap()
}

/// `link-registry audit verify`: (exit status, stdout, stderr).
fn verify_command(db: &TestDb) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_link-registry"))
        .args(["audit", "verify", "--database-url", &db.url])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run link-registry");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn sql(db: &TestDb, statement: &str) {
    let conn = Database::connect(&db.url).await.unwrap();
    conn.execute_unprepared(statement).await.unwrap();
    conn.close().await.unwrap();
}

async fn events(app: &TestApp) -> Vec<pb::AuditEvent> {
    app.client(&app.acme.admin)
        .list_audit_events(pb::ListAuditEventsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

async fn create_projects(app: &TestApp, names: &[&str]) {
    for name in names {
        app.client(&app.acme.admin)
            .create_project(pb::CreateProjectRequest {
                id: format!("prj_{name}"),
                name: (*name).into(),
            })
            .await
            .unwrap();
    }
}

async fn the_audit_chain_names_the_first_tampered_event_and_survives_retention(db: TestDb) {
    let app = TestApp::spawn(db).await;
    create_projects(&app, &["one", "two", "three", "four"]).await;
    let listed = events(&app).await;
    // Newest first: each event's prev_hash is the next one's hash; the oldest follows genesis
    // (the setup's events are all acme's or the command line's, so the team's list is whole
    // only from its own team row on; check the links that are adjacent in the list).
    for pair in listed.windows(2) {
        if pair[0].id.parse::<i64>().unwrap() == pair[1].id.parse::<i64>().unwrap() + 1 {
            assert_eq!(pair[0].prev_hash, pair[1].hash, "{pair:?}");
        }
        assert_eq!(pair[0].hash.len(), 64);
    }
    let ChainCheck::Whole {
        events: total,
        starts_after: 0,
        head,
    } = verify(&app.db).await
    else {
        panic!("a fresh chain is whole");
    };
    assert!(total >= 5, "{total}");
    assert_eq!(head, listed[0].hash, "the head is the newest event's hash");
    let (ok, out, _) = verify_command(&app.db);
    assert!(
        ok && out.contains(&format!("{total} events")) && out.contains(&head),
        "{out}"
    );

    // An edited event is named; putting it back makes the chain whole again.
    let two: i64 = listed
        .iter()
        .find(|e| e.target == "project:prj_two")
        .unwrap()
        .id
        .parse()
        .unwrap();
    sql(
        &app.db,
        &format!("UPDATE audit_events SET actor = 'key:key_someone_else' WHERE id = {two}"),
    )
    .await;
    assert_eq!(
        verify(&app.db).await,
        ChainCheck::Broken {
            id: two,
            problem: "its hash does not match its contents: it was edited (or inserted with a wrong hash)",
        }
    );
    let (ok, _, err) = verify_command(&app.db);
    assert!(
        !ok && err.contains(&format!("audit chain broken at event {two}")),
        "{err}"
    );
    let actor = &listed
        .iter()
        .find(|e| e.target == "project:prj_two")
        .unwrap()
        .actor;
    sql(
        &app.db,
        &format!("UPDATE audit_events SET actor = '{actor}' WHERE id = {two}"),
    )
    .await;
    assert!(matches!(verify(&app.db).await, ChainCheck::Whole { .. }));

    // An event appended behind the registry's back, even with a correct hash of its own, does
    // not continue the chain.
    let forged = two + 1000;
    sql(
        &app.db,
        &format!(
            "INSERT INTO audit_events (id, team_id, actor, action, target, created_at, prev_hash, hash) \
             VALUES ({forged}, 'team_acme', 'cli', 'project.create', 'project:prj_forged', '2026-01-01 00:00:00+00:00', '{GENESIS_HASH}', '{GENESIS_HASH}')"
        ),
    )
    .await;
    assert!(
        matches!(verify(&app.db).await, ChainCheck::Broken { id, .. } if id == forged),
        "the forged event is named"
    );
    sql(
        &app.db,
        &format!("DELETE FROM audit_events WHERE id = {forged}"),
    )
    .await;

    // Retention deletes a prefix and records where the kept chain starts; new events continue
    // from there.
    let registry = Registry::new(
        Arc::new(open_store(&app.db.url).await.unwrap()),
        SecretCipher::ephemeral(),
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let pruned = registry.prune_audit(Duration::ZERO).await.unwrap();
    assert_eq!(pruned, total);
    let ChainCheck::Whole {
        events: 0,
        starts_after,
        head: kept_head,
    } = verify(&app.db).await
    else {
        panic!("an emptied chain is whole");
    };
    assert_eq!(kept_head, head);
    assert!(starts_after > 0);
    create_projects(&app, &["five", "six", "seven"]).await;
    let ChainCheck::Whole { events: 3, .. } = verify(&app.db).await else {
        panic!("the chain continues after retention");
    };

    // A removed event breaks the chain at the one after it; removing the first kept one breaks
    // it against where retention left it.
    let now = events(&app).await;
    let (seven, six, five): (i64, i64, i64) = (
        now[0].id.parse().unwrap(),
        now[1].id.parse().unwrap(),
        now[2].id.parse().unwrap(),
    );
    sql(
        &app.db,
        &format!("DELETE FROM audit_events WHERE id = {six}"),
    )
    .await;
    assert!(matches!(verify(&app.db).await, ChainCheck::Broken { id, .. } if id == seven));
    sql(
        &app.db,
        &format!("DELETE FROM audit_events WHERE id = {five}"),
    )
    .await;
    assert!(matches!(verify(&app.db).await, ChainCheck::Broken { id, .. } if id == seven));
    let (ok, _, err) = verify_command(&app.db);
    assert!(!ok && err.contains("removed"), "{err}");
}

async fn events_written_before_the_chain_are_chained_by_the_upgrade(db: TestDb) {
    // A registry of the schema before the chain (17 migrations), with events in it.
    let old = connect(&db.url).await.unwrap();
    old.migrate_first(17).await.unwrap();
    sql(
        &db,
        "INSERT INTO audit_events (team_id, actor, action, target, before, after, created_at) VALUES \
         (NULL, 'cli', 'team.create', 'team:team_x', NULL, '{\"id\":\"team_x\"}', '2026-01-01 00:00:00.123456+00:00'), \
         ('team_x', 'key:key_a', 'project.create', 'project:prj_a', NULL, '{\"id\":\"prj_a\"}', '2026-01-01 00:00:01+00:00')",
    )
    .await;
    // The upgrade chains them in id order; the first follows genesis.
    let store = open_store(&db.url).await.unwrap();
    drop(store);
    let ChainCheck::Whole {
        events: 2,
        starts_after: 0,
        head,
    } = verify(&db).await
    else {
        panic!("the upgraded chain is whole");
    };
    let first = chain_hash(
        GENESIS_HASH,
        &ChainedFields {
            team_id: None,
            actor: "cli",
            actor_issuer: None,
            action: "team.create",
            target: "team:team_x",
            before: None,
            after: Some("{\"id\":\"team_x\"}"),
            time: "2026-01-01T00:00:00.123456Z".parse().unwrap(),
        },
    );
    let second = chain_hash(
        &first,
        &ChainedFields {
            team_id: Some("team_x"),
            actor: "key:key_a",
            actor_issuer: None,
            action: "project.create",
            target: "project:prj_a",
            before: None,
            after: Some("{\"id\":\"prj_a\"}"),
            time: "2026-01-01T00:00:01Z".parse().unwrap(),
        },
    );
    assert_eq!(head, second);
}
