//! The change feed brokers follow: what it sends, replay from a revision, heartbeats, who may
//! watch, and replicas of one PostgreSQL database seeing each other's changes.

use std::{sync::Arc, time::Duration};

use connect_proto::registry::v1 as pb;
use link_registry::{app::open_store, crypto::SecretCipher, domain::Registry};
use tonic::{Code, Streaming};

use crate::harness::{Client, Runtime, TestApp, TestDb, assert_error};

crate::on_every_backend!(
    the_feed_replays_and_follows_every_change_that_can_alter_an_answer,
    a_quiet_feed_sends_heartbeats,
    only_brokers_may_watch_and_a_revoked_key_ends_the_feed,
    stopping_the_registry_ends_the_feed,
);

async fn watch(client: &mut Runtime, from_revision: i64) -> Streaming<pb::ChangeEvent> {
    client
        .watch_changes(pb::WatchChangesRequest { from_revision })
        .await
        .expect("watch changes")
        .into_inner()
}

/// The next event that is not a heartbeat.
async fn next_change(feed: &mut Streaming<pb::ChangeEvent>) -> pb::ChangeEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), feed.message())
            .await
            .expect("an event within 10 s")
            .expect("the feed is healthy")
            .expect("the feed is open");
        if !event.action.is_empty() || event.resync {
            return event;
        }
    }
}

async fn make_changes(admin: &mut Client) {
    admin
        .create_project(pb::CreateProjectRequest {
            id: "prj_web".into(),
            name: "web".into(),
        })
        .await
        .unwrap();
    admin
        .create_connector(pb::CreateConnectorRequest {
            uid: "api-key/stripe".into(),
            secrets: [("api_key".to_owned(), "sk".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .attach_project(pb::AttachProjectRequest {
            connector: "api-key/stripe".into(),
            project: "web".into(),
            environments: vec!["preview".into()],
            expire_time: None,
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .update_connector(pb::UpdateConnectorRequest {
            connector: "api-key/stripe".into(),
            name: "Stripe".into(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .detach_project(pb::DetachProjectRequest {
            connector: "api-key/stripe".into(),
            project: "prj_web".into(),
        })
        .await
        .unwrap();
    admin
        .delete_connector(pb::DeleteConnectorRequest {
            connector: "api-key/stripe".into(),
        })
        .await
        .unwrap();
}

/// The events `make_changes` causes, in order: (action, project).
const EXPECTED: [(&str, &str); 5] = [
    ("connector.create", ""),
    ("project.attach", "prj_web"),
    ("connector.update", ""),
    ("project.detach", "prj_web"),
    ("connector.delete", ""),
];

fn check(events: &[pb::ChangeEvent], after: i64) {
    let mut last = after;
    let connector_id = &events[0].connector_id;
    assert!(connector_id.starts_with("conn_"), "{events:?}");
    for (event, (action, project)) in events.iter().zip(EXPECTED) {
        assert!(event.revision > last, "revisions increase: {events:?}");
        last = event.revision;
        assert!(!event.resync);
        assert_eq!(
            (event.action.as_str(), event.project_id.as_str()),
            (action, project),
            "{events:?}"
        );
        assert_eq!(event.owner_id, "team_acme");
        assert_eq!(&event.connector_id, connector_id);
        assert_eq!(event.connector_uid, "api-key/stripe");
    }
}

async fn the_feed_replays_and_follows_every_change_that_can_alter_an_answer(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let mut broker = app.broker();
    let mut live = watch(&mut broker, 0).await;
    let start = next_change(&mut live).await;
    assert!(
        start.resync,
        "a watcher from 0 starts with a resync: {start:?}"
    );
    assert!(start.revision >= 1, "the team's creation is a change");

    make_changes(&mut app.admin()).await;
    let mut seen = Vec::new();
    for _ in EXPECTED {
        seen.push(next_change(&mut live).await);
    }
    check(&seen, start.revision);

    // A watcher that saw `start` replays exactly what it missed, without a resync.
    let mut resumed = watch(&mut broker, start.revision).await;
    let mut replayed = Vec::new();
    for _ in EXPECTED {
        replayed.push(next_change(&mut resumed).await);
    }
    assert_eq!(replayed, seen);
    // Resuming from the last revision replays nothing; a revision the registry never had resyncs.
    let last = seen.last().unwrap().revision;
    let mut current = watch(&mut broker, last).await;
    let heartbeat = tokio::time::timeout(Duration::from_secs(10), current.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            heartbeat.revision,
            heartbeat.resync,
            heartbeat.action.as_str()
        ),
        (last, false, "")
    );
    let mut future = watch(&mut broker, last + 1000).await;
    let resync = next_change(&mut future).await;
    assert!(resync.resync);
    assert_eq!(resync.revision, last);
}

async fn a_quiet_feed_sends_heartbeats(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let mut feed = watch(&mut app.broker(), 0).await;
    let start = next_change(&mut feed).await;
    for _ in 0..2 {
        let beat = tokio::time::timeout(Duration::from_secs(10), feed.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(beat.revision, start.revision);
        assert!(beat.action.is_empty() && !beat.resync, "{beat:?}");
    }
}

async fn only_brokers_may_watch_and_a_revoked_key_ends_the_feed(db: TestDb) {
    let app = TestApp::spawn(db).await;
    assert_error(
        app.runtime(&app.acme.admin)
            .watch_changes(pb::WatchChangesRequest { from_revision: 0 })
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    assert_error(
        app.anonymous_runtime()
            .watch_changes(pb::WatchChangesRequest { from_revision: 0 })
            .await,
        Code::Unauthenticated,
        "INVALID_KEY",
    );
    let status = assert_error(
        app.broker()
            .watch_changes(pb::WatchChangesRequest { from_revision: -1 })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(crate::harness::violated_fields(&status), ["from_revision"]);

    let mut feed = watch(&mut app.broker(), 0).await;
    next_change(&mut feed).await;
    // The operator revokes the broker's key from another process.
    let store = open_store(&app.db.url).await.unwrap();
    let operator = Registry::new(Arc::new(store), SecretCipher::ephemeral());
    let broker_key = operator
        .list_api_keys(None)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.team_id.is_none())
        .unwrap();
    operator.revoke_api_key(&broker_key.id).await.unwrap();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), feed.message())
            .await
            .expect("the feed ends within 10 s")
        {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let status = ended.expect_err("the feed ends with an error");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

async fn stopping_the_registry_ends_the_feed(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let mut feed = watch(&mut app.broker(), 0).await;
    next_change(&mut feed).await;
    let stopping = tokio::spawn(app.stop());
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(10), feed.message())
        .await
        .expect("the feed ends when the registry stops")
    {}
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_postgresql_database_see_each_others_changes() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let replica_db = db.replica().unwrap();
    let a = TestApp::spawn(db).await;
    let mut b = TestApp::start(replica_db).await;
    b.broker = a.broker.clone();
    let mut feed = watch(&mut b.broker(), 0).await;
    let start = next_change(&mut feed).await;
    // Changes made through replica A arrive on a feed served by replica B.
    make_changes(&mut a.admin()).await;
    let mut seen = Vec::new();
    for _ in EXPECTED {
        seen.push(next_change(&mut feed).await);
    }
    check(&seen, start.revision);
    // And writes through both replicas interleave into one ordered feed.
    let mut admin_b = b.client(&a.acme.admin);
    let mut admin_a = a.admin();
    for i in 0..4 {
        let client = if i % 2 == 0 {
            &mut admin_a
        } else {
            &mut admin_b
        };
        client
            .create_connector(pb::CreateConnectorRequest {
                uid: format!("api-key/n{i}"),
                secrets: [("api_key".to_owned(), format!("sk_{i}"))].into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut last = seen.last().unwrap().revision;
    let mut uids = Vec::new();
    for _ in 0..4 {
        let event = next_change(&mut feed).await;
        assert!(event.revision > last);
        last = event.revision;
        uids.push(event.connector_uid);
    }
    assert_eq!(
        uids,
        ["api-key/n0", "api-key/n1", "api-key/n2", "api-key/n3"]
    );
}
