//! User grants through a real server, on every backend: imports, the listing admins see, the
//! refresh lease (one holder among concurrent callers, fenced commits, take-over after expiry),
//! the states a refresh leaves, consents under way used once, and revocation deleting grants.

use std::time::Duration;

use connect_proto::registry::v1 as pb;
use tonic::Code;

use crate::harness::{Client, Runtime, TestApp, TestDb, assert_error, violated_fields};

crate::on_every_backend!(
    imported_grants_are_listed_without_their_tokens,
    one_caller_refreshes_and_a_stalled_one_is_fenced_out,
    a_consent_under_way_is_taken_once,
    a_held_consent_is_stored_only_for_its_deployment_and_user,
    a_grant_is_its_projects_unless_the_connector_shares_grants,
    rotating_the_master_key_reseals_everything_and_retires_the_old_key,
    a_broker_key_limited_to_teams_reaches_no_other_team,
);

fn in_seconds(s: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + s,
        nanos: 0,
    })
}

fn duration(d: Duration) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    })
}

fn imported(user: &str, access: &str, refresh: &str, expires_in: i64) -> pb::ImportedGrant {
    pb::ImportedGrant {
        user_id: user.into(),
        environment: "preview".into(),
        access_token: access.into(),
        refresh_token: refresh.into(),
        expire_time: in_seconds(expires_in),
        scopes: vec!["read".into()],
        project: "prj_web".into(),
        ..Default::default()
    }
}

/// Links `connector` to Acme's `prj_web` (created first when missing) for preview.
pub(crate) async fn link_web(admin: &mut Client, connector: &str) {
    let _ = admin
        .create_project(pb::CreateProjectRequest {
            id: "prj_web".into(),
            name: "web".into(),
        })
        .await;
    admin
        .attach_project(pb::AttachProjectRequest {
            connector: connector.into(),
            project: "prj_web".into(),
            environments: vec!["preview".into()],
            expire_time: None,
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Acme's `oauth2/idp` connector; answers with its id.
pub(crate) async fn connector(admin: &mut Client) -> String {
    let id = admin
        .create_connector(pb::CreateConnectorRequest {
            uid: "oauth2/idp".into(),
            config: [(
                "token_url".to_owned(),
                "https://idp.example/token".to_owned(),
            )]
            .into(),
            secrets: [
                ("client_id".to_owned(), "c".to_owned()),
                ("client_secret".to_owned(), "s".to_owned()),
            ]
            .into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    link_web(admin, "oauth2/idp").await;
    id
}

async fn import(admin: &mut Client, grants: Vec<pb::ImportedGrant>) -> pb::ImportGrantsResponse {
    admin
        .import_grants(pb::ImportGrantsRequest {
            connector: "oauth2/idp".into(),
            grants,
        })
        .await
        .unwrap()
        .into_inner()
}

fn key(connector_id: &str, user: &str) -> Option<pb::GrantKey> {
    Some(pb::GrantKey {
        owner_id: "team_acme".into(),
        project_id: "prj_web".into(),
        connector_id: connector_id.into(),
        user_id: user.into(),
        environment: "preview".into(),
        installation_id: String::new(),
    })
}

async fn lease(
    broker: &mut Runtime,
    connector_id: &str,
    user: &str,
    min_ttl: u64,
    lease_for: Duration,
) -> Result<pb::lease_grant_response::Answer, tonic::Status> {
    broker
        .lease_grant(pb::LeaseGrantRequest {
            key: key(connector_id, user),
            min_ttl: duration(Duration::from_secs(min_ttl)),
            lease: duration(lease_for),
        })
        .await
        .map(|r| r.into_inner().answer.expect("an answer"))
}

async fn grants(client: &mut Client) -> Vec<pb::Grant> {
    client
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .grants
}

async fn imported_grants_are_listed_without_their_tokens(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    connector(&mut admin).await;
    let mut bad = imported("", "at_x", "", 60);
    bad.environment = "staging".into();
    let answer = import(
        &mut admin,
        vec![
            imported("ada", "at_ada_secret", "rt_ada_secret", 600),
            bad,
            imported("bob", "at_bob_secret", "", 600),
        ],
    )
    .await;
    assert_eq!(answer.imported, 2);
    assert_eq!(answer.errors.len(), 1);
    assert_eq!(
        (answer.errors[0].index, answer.errors[0].reason.as_str()),
        (1, "INVALID_ARGUMENT")
    );
    assert!(
        answer.errors[0].message.contains("user_id"),
        "{:?}",
        answer.errors
    );

    let listed = grants(&mut app.client(&app.acme.viewer)).await;
    let rows: Vec<(&str, &str, &str, bool, i64)> = listed
        .iter()
        .map(|g| {
            (
                g.user_id.as_str(),
                g.connector_uid.as_str(),
                g.state.as_str(),
                g.refreshable,
                g.version,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("ada", "oauth2/idp", "active", true, 1),
            ("bob", "oauth2/idp", "active", false, 1)
        ]
    );
    assert!(!format!("{listed:?}").contains("_secret"));
    // Importing again replaces: a new version.
    import(
        &mut admin,
        vec![imported("ada", "at_ada_2", "rt_ada_2", 600)],
    )
    .await;
    let listed = grants(&mut admin).await;
    assert_eq!(listed[0].version, 2);

    // Roles: viewers read, brokers do not import, admins do not lease.
    assert_error(
        app.client(&app.acme.viewer)
            .import_grants(pb::ImportGrantsRequest {
                connector: "oauth2/idp".into(),
                grants: vec![],
            })
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    assert_error(
        app.runtime(&app.acme.admin)
            .lease_grant(pb::LeaseGrantRequest {
                key: key(&listed[0].connector_id, "ada"),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"grant.create") && actions.contains(&"grant.replace"));
    let audited = format!("{events:?}");
    assert!(!audited.contains("at_ada") && !audited.contains("rt_ada"));

    // A destination move would send the grants' refresh tokens elsewhere.
    let moved = admin
        .update_connector(pb::UpdateConnectorRequest {
            connector: "oauth2/idp".into(),
            config: [(
                "token_url".to_owned(),
                "https://other.example/token".to_owned(),
            )]
            .into(),
            secrets: [
                ("client_id".to_owned(), "c".to_owned()),
                ("client_secret".to_owned(), "s".to_owned()),
            ]
            .into(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["config".into(), "secrets".into()],
            }),
            ..Default::default()
        })
        .await;
    assert_error(moved, Code::FailedPrecondition, "SECRETS_REQUIRED");

    // Revoking a user's tokens deletes the user's grant.
    let revoked = admin
        .revoke_tokens(pb::RevokeTokensRequest {
            connector: "oauth2/idp".into(),
            subject: "user:ada".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.grants_deleted, 1);
    let users: Vec<String> = grants(&mut admin)
        .await
        .into_iter()
        .map(|g| g.user_id)
        .collect();
    assert_eq!(users, ["bob"]);
    app.stop().await;
}

async fn one_caller_refreshes_and_a_stalled_one_is_fenced_out(db: TestDb) {
    use pb::lease_grant_response::Answer;
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    let conn = connector(&mut admin).await;
    import(
        &mut admin,
        vec![
            imported("ada", "at_1", "rt_1", 30),
            imported("bob", "at_bob", "", -5),
            imported("carol", "at_carol", "rt_carol", 5),
        ],
    )
    .await;
    let mut broker = app.broker();
    let short = Duration::from_secs(1);

    // Fresh enough: the access token as it is.
    let Answer::Fresh(fresh) = lease(&mut broker, &conn, "ada", 10, short).await.unwrap() else {
        panic!("expected the stored token");
    };
    assert_eq!(fresh.access_token, "at_1");

    // Not fresh enough: of 50 concurrent callers exactly one gets the lease, with the refresh token.
    let calls = (0..50).map(|_| {
        let mut broker = app.broker();
        let conn = conn.clone();
        async move { lease(&mut broker, &conn, "ada", 60, Duration::from_secs(30)).await }
    });
    let answers = futures::future::join_all(calls).await;
    let leases: Vec<&pb::GrantLease> = answers
        .iter()
        .filter_map(|a| match a {
            Ok(Answer::Leased(l)) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(leases.len(), 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Ok(Answer::Leased(_) | Answer::BusyUntil(_)))),
        "{answers:?}"
    );
    let held = leases[0].clone();
    assert_eq!((held.refresh_token.as_str(), held.fence), ("rt_1", 1));

    let commit = |lease_id: String, fence: i64, outcome| pb::CommitGrantRequest {
        key: key(&conn, "ada"),
        lease_id,
        fence,
        outcome: Some(outcome),
    };
    let refreshed = |access: &str, refresh: &str| {
        pb::commit_grant_request::Outcome::Refreshed(pb::RefreshedTokens {
            access_token: access.into(),
            refresh_token: refresh.into(),
            expire_time: in_seconds(3600),
            scopes: vec!["read".into()],
        })
    };
    // Another lease id, or another version, writes nothing.
    assert_error(
        broker
            .commit_grant(commit("someone-else".into(), 1, refreshed("at_x", "rt_x")))
            .await,
        Code::Aborted,
        "LEASE_LOST",
    );
    assert_error(
        broker
            .commit_grant(commit(held.lease_id.clone(), 7, refreshed("at_x", "rt_x")))
            .await,
        Code::Aborted,
        "LEASE_LOST",
    );
    let access = broker
        .commit_grant(commit(held.lease_id.clone(), 1, refreshed("at_2", "rt_2")))
        .await
        .unwrap()
        .into_inner()
        .access
        .unwrap();
    assert_eq!(access.access_token, "at_2");
    assert_eq!(access.grant.unwrap().version, 2);

    // A caller that read the grant before that commit and asks for the lease after it cannot
    // take it at the version it read: that refresh token is spent (a provider detecting reuse
    // would revoke the whole grant). At the current version the lease is free.
    {
        use link_registry::domain::{
            model::GrantKey,
            store::GrantStore,
            types::{ConnectorId, Environment, ProjectId, TeamId, UserId},
        };
        let store = link_registry::app::open_store(&app.db.url).await.unwrap();
        let stored = store
            .grant(&GrantKey {
                team_id: TeamId::parse("team_acme").unwrap(),
                connector_id: ConnectorId::parse(&conn).unwrap(),
                project_id: Some(ProjectId::parse("prj_web").unwrap()),
                user_id: UserId::parse("ada").unwrap(),
                environment: Environment::Preview,
                installation_id: String::new(),
            })
            .await
            .unwrap()
            .unwrap();
        let now = chrono::Utc::now();
        let taken = |version| store.lease_grant(stored.id, version, "probe", now, now);
        assert!(!taken(1).await.unwrap(), "a stale read takes no lease");
        assert!(
            taken(2).await.unwrap(),
            "the current version's lease is free"
        );
    }
    let Answer::Fresh(fresh) = lease(&mut broker, &conn, "ada", 60, short).await.unwrap() else {
        panic!("expected the refreshed token");
    };
    assert_eq!(fresh.access_token, "at_2");

    // A stalled holder: its lease runs out, another takes over and commits; the stalled one's
    // commit is fenced out.
    let Answer::Leased(stalled) = lease(&mut broker, &conn, "ada", 7200, short).await.unwrap()
    else {
        panic!("expected a lease");
    };
    assert!(matches!(
        lease(&mut broker, &conn, "ada", 7200, short).await.unwrap(),
        Answer::BusyUntil(_)
    ));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let Answer::Leased(taker) = lease(&mut broker, &conn, "ada", 7200, short).await.unwrap() else {
        panic!("an expired lease is taken over");
    };
    assert_eq!(taker.refresh_token, "rt_2");
    broker
        .commit_grant(commit(
            taker.lease_id.clone(),
            taker.fence,
            refreshed("at_3", ""),
        ))
        .await
        .unwrap();
    assert_error(
        broker
            .commit_grant(commit(
                stalled.lease_id,
                stalled.fence,
                refreshed("at_old", "rt_old"),
            ))
            .await,
        Code::Aborted,
        "LEASE_LOST",
    );
    // Not rotated: the stored refresh token stays.
    let Answer::Leased(next) = lease(&mut broker, &conn, "ada", 7200, short).await.unwrap() else {
        panic!("expected a lease");
    };
    assert_eq!((next.refresh_token.as_str(), next.fence), ("rt_2", 3));

    // The provider refuses the refresh token: consent is needed from then on.
    broker
        .commit_grant(commit(
            next.lease_id,
            next.fence,
            pb::commit_grant_request::Outcome::Refused("invalid_grant".into()),
        ))
        .await
        .unwrap();
    assert_error(
        lease(&mut broker, &conn, "ada", 0, short)
            .await
            .map(tonic::Response::new),
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
    );
    // Expired without a refresh token: the same.
    assert_error(
        lease(&mut broker, &conn, "bob", 0, short)
            .await
            .map(tonic::Response::new),
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
    );
    assert_error(
        lease(&mut broker, &conn, "nobody", 0, short)
            .await
            .map(tonic::Response::new),
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
    );
    // A provider outage keeps the grant: the next caller leases again.
    let Answer::Leased(outage) = lease(&mut broker, &conn, "carol", 60, short).await.unwrap()
    else {
        panic!("expected a lease");
    };
    broker
        .commit_grant(pb::CommitGrantRequest {
            key: key(&conn, "carol"),
            lease_id: outage.lease_id,
            fence: outage.fence,
            outcome: Some(pb::commit_grant_request::Outcome::Unavailable(
                "token endpoint answered 503".into(),
            )),
        })
        .await
        .unwrap();
    assert!(matches!(
        lease(&mut broker, &conn, "carol", 60, short).await.unwrap(),
        Answer::Leased(_)
    ));

    let states: Vec<(String, String)> = grants(&mut admin)
        .await
        .into_iter()
        .map(|g| (g.user_id, g.state))
        .collect();
    assert_eq!(
        states,
        [
            ("ada".into(), "needs_consent".into()),
            ("bob".into(), "needs_consent".into()),
            ("carol".into(), "refresh_failed".into())
        ]
    );
    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "grant.needs_consent")
            .count(),
        2
    );
    assert!(actions.contains(&"grant.refresh_failed"));
    assert!(!format!("{events:?}").contains("rt_"));
    app.stop().await;
}

async fn a_consent_under_way_is_taken_once(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    let conn = connector(&mut admin).await;
    let mut broker = app.broker();
    let verifier = "v".repeat(43);
    let begin = |ttl: Duration, verifier: &str| pb::BeginAuthorizationRequest {
        key: key(&conn, "ada"),
        scopes: vec!["read".into()],
        return_url: "https://app.example/done".into(),
        redirect_uri: "https://connect.example/oauth/callback".into(),
        code_verifier: verifier.into(),
        ttl: duration(ttl),
        project_id: "prj_web".into(),
        issuer: "https://oidc.example.test/acme".into(),
    };
    let started = broker
        .begin_authorization(begin(Duration::from_secs(600), &verifier))
        .await
        .unwrap()
        .into_inner();
    assert!(started.state.len() >= 32);
    let taken = broker
        .complete_authorization(pb::CompleteAuthorizationRequest {
            state: started.state.clone(),
            connector_id: conn.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            taken.code_verifier.as_str(),
            taken.return_url.as_str(),
            taken.key.unwrap().user_id.as_str(),
            taken.project_id.as_str()
        ),
        (
            verifier.as_str(),
            "https://app.example/done",
            "ada",
            "prj_web"
        )
    );
    // Replayed, unknown and expired states are all the same refusal.
    for state in [started.state, "made-up".to_owned()] {
        assert_error(
            broker
                .complete_authorization(pb::CompleteAuthorizationRequest {
                    state,
                    connector_id: conn.clone(),
                })
                .await,
            Code::FailedPrecondition,
            "FAILED_PRECONDITION",
        );
    }
    // A state reaching another connector's callback is neither answered nor used up.
    let other = broker
        .begin_authorization(begin(Duration::from_secs(600), &verifier))
        .await
        .unwrap()
        .into_inner();
    assert_error(
        broker
            .complete_authorization(pb::CompleteAuthorizationRequest {
                state: other.state.clone(),
                connector_id: "conn_aaaaaaaaaaaaaaaaaaaaaaaa".into(),
            })
            .await,
        Code::FailedPrecondition,
        "FAILED_PRECONDITION",
    );
    broker
        .complete_authorization(pb::CompleteAuthorizationRequest {
            state: other.state,
            connector_id: conn.clone(),
        })
        .await
        .unwrap();
    let short = broker
        .begin_authorization(begin(Duration::from_millis(300), &verifier))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_error(
        broker
            .complete_authorization(pb::CompleteAuthorizationRequest {
                state: short.state,
                connector_id: conn.clone(),
            })
            .await,
        Code::FailedPrecondition,
        "FAILED_PRECONDITION",
    );
    let status = assert_error(
        broker
            .begin_authorization(begin(Duration::from_secs(600), "short"))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["code_verifier"]);
    assert_error(
        app.runtime(&app.acme.admin)
            .begin_authorization(begin(Duration::from_secs(600), &verifier))
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    app.stop().await;
}

fn hold(conn: &str, request_id: &str, user: &str, ttl: Duration) -> pb::HoldGrantRequest {
    pb::HoldGrantRequest {
        request_id: request_id.into(),
        key: key(conn, user),
        project_id: "prj_web".into(),
        issuer: "https://oidc.example.test/acme".into(),
        access_token: format!("at_{request_id}"),
        refresh_token: format!("rt_{request_id}"),
        expire_time: in_seconds(3600),
        scopes: vec!["read".into()],
        ttl: duration(ttl),
        provider_subject: String::new(),
    }
}

fn finish(request_id: &str, completion: &str, user: &str) -> pb::FinishGrantRequest {
    pb::FinishGrantRequest {
        request_id: request_id.into(),
        completion: completion.into(),
        user_id: user.into(),
        owner_id: "team_acme".into(),
        project_id: "prj_web".into(),
        environment: "preview".into(),
        issuer: "https://oidc.example.test/acme".into(),
        confirm_provider_subject: String::new(),
    }
}

/// The second phase of a consent: held tokens become a grant only when the deployment that
/// started the consent finishes it as the user it was started for; another user discards them
/// (their refresh token queued for revocation at the provider), and so does the clock.
async fn a_held_consent_is_stored_only_for_its_deployment_and_user(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    let conn = admin
        .create_connector(pb::CreateConnectorRequest {
            uid: "oauth2/revocable".into(),
            config: [
                (
                    "token_url".to_owned(),
                    "https://idp.example/token".to_owned(),
                ),
                (
                    "revocation_url".to_owned(),
                    "https://idp.example/revoke".to_owned(),
                ),
            ]
            .into(),
            secrets: [
                ("client_id".to_owned(), "c".to_owned()),
                ("client_secret".to_owned(), "s".to_owned()),
            ]
            .into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    link_web(&mut admin, "oauth2/revocable").await;
    let mut broker = app.broker();
    let held = broker
        .hold_grant(hold(
            &conn,
            "00000000000000a1",
            "ada",
            Duration::from_secs(600),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(held.completion.len() >= 32, "a completion secret");
    // Nothing is usable before it is finished.
    assert_error(
        lease(&mut broker, &conn, "ada", 0, Duration::from_secs(10))
            .await
            .map(tonic::Response::new),
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
    );
    // Another deployment, or a wrong completion, learns nothing and uses nothing up.
    let mut elsewhere = finish("00000000000000a1", &held.completion, "ada");
    elsewhere.project_id = "prj_other".into();
    for wrong in [
        elsewhere,
        finish("00000000000000a1", "not-the-completion", "ada"),
        finish("00000000000000ff", &held.completion, "ada"),
    ] {
        assert_error(
            broker.finish_grant(wrong).await,
            Code::FailedPrecondition,
            "CONSENT_NOT_PENDING",
        );
    }
    let stored = broker
        .finish_grant(finish("00000000000000a1", &held.completion, "ada"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            stored.user_id.as_str(),
            stored.connector_id.as_str(),
            stored.refreshable
        ),
        ("ada", conn.as_str(), true)
    );
    let Ok(pb::lease_grant_response::Answer::Fresh(access)) =
        lease(&mut broker, &conn, "ada", 0, Duration::from_secs(10)).await
    else {
        panic!("ada's grant answers with its access token");
    };
    assert_eq!(access.access_token, "at_00000000000000a1");
    assert_error(
        broker
            .finish_grant(finish("00000000000000a1", &held.completion, "ada"))
            .await,
        Code::FailedPrecondition,
        "CONSENT_NOT_PENDING",
    );

    // Mallory started it; Ada's browser came back with it; the application finishes as Ada.
    let mallory = broker
        .hold_grant(hold(
            &conn,
            "00000000000000b2",
            "mallory",
            Duration::from_secs(600),
        ))
        .await
        .unwrap()
        .into_inner();
    let status = assert_error(
        broker
            .finish_grant(finish("00000000000000b2", &mallory.completion, "ada"))
            .await,
        Code::PermissionDenied,
        "CONSENT_USER_MISMATCH",
    );
    assert!(!status.message().contains("rt_"), "{}", status.message());
    assert_error(
        lease(&mut broker, &conn, "mallory", 0, Duration::from_secs(10))
            .await
            .map(tonic::Response::new),
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
    );
    assert_error(
        broker
            .finish_grant(finish("00000000000000b2", &mallory.completion, "mallory"))
            .await,
        Code::FailedPrecondition,
        "CONSENT_NOT_PENDING",
    );
    // Nobody finishes this one before it expires.
    let late = broker
        .hold_grant(hold(
            &conn,
            "00000000000000c3",
            "bob",
            Duration::from_millis(200),
        ))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_error(
        broker
            .finish_grant(finish("00000000000000c3", &late.completion, "bob"))
            .await,
        Code::FailedPrecondition,
        "CONSENT_NOT_PENDING",
    );
    // Nor this one, and nobody comes back for it: the registry's sweep discards it.
    broker
        .hold_grant(hold(
            &conn,
            "00000000000000d4",
            "eve",
            Duration::from_millis(200),
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.registry.discard_expired_consents().await.unwrap(), 1);
    assert_eq!(app.registry.discard_expired_consents().await.unwrap(), 0);
    // Every discarded refresh token waits for a broker to revoke it at the provider.
    let claimed = broker
        .claim_grant_revocations(pb::ClaimGrantRevocationsRequest {
            owner_id: "team_acme".into(),
            connector_id: conn.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut tokens: Vec<&str> = claimed
        .refresh_tokens
        .iter()
        .map(|t| t.refresh_token.as_str())
        .collect();
    tokens.sort_unstable();
    assert_eq!(
        tokens,
        [
            "rt_00000000000000b2",
            "rt_00000000000000c3",
            "rt_00000000000000d4"
        ]
    );
    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let discarded: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.target.starts_with("consent:"))
        .map(|e| (e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        discarded,
        [
            ("tokens.revoke", "consent:00000000000000d4"),
            ("tokens.revoke", "consent:00000000000000c3"),
            ("tokens.revoke", "consent:00000000000000b2")
        ]
    );
    assert!(!format!("{events:?}").contains("rt_"));
    assert!(!format!("{events:?}").contains("at_"));
    app.stop().await;
}

fn key_for(conn: &str, project: &str, user: &str) -> Option<pb::GrantKey> {
    let mut key = key(conn, user);
    if let Some(k) = key.as_mut() {
        k.project_id = project.into();
    }
    key
}

/// Project B, linked to the same connector as project A, neither reads nor overwrites A's grant;
/// a project without a link reaches no grant at all; `grant_sharing=team` gives the team's linked
/// projects one grant.
async fn a_grant_is_its_projects_unless_the_connector_shares_grants(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    let conn = connector(&mut admin).await;
    admin
        .create_project(pb::CreateProjectRequest {
            id: "prj_docs".into(),
            name: "docs".into(),
        })
        .await
        .unwrap();
    admin
        .attach_project(pb::AttachProjectRequest {
            connector: "oauth2/idp".into(),
            project: "prj_docs".into(),
            environments: vec!["preview".into()],
            expire_time: None,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        import(&mut admin, vec![imported("ada", "at_web", "rt_web", 3600)])
            .await
            .imported,
        1
    );
    let mut broker = app.broker();
    let lease_as = |project: &'static str, user: &'static str| pb::LeaseGrantRequest {
        key: key_for(&conn, project, user),
        min_ttl: duration(Duration::ZERO),
        lease: duration(Duration::from_secs(10)),
    };
    let Some(pb::lease_grant_response::Answer::Fresh(web)) = broker
        .lease_grant(lease_as("prj_web", "ada"))
        .await
        .unwrap()
        .into_inner()
        .answer
    else {
        panic!("prj_web's grant");
    };
    assert_eq!(web.access_token, "at_web");
    assert_eq!(web.grant.unwrap().project, "prj_web");
    assert_error(
        broker.lease_grant(lease_as("prj_docs", "ada")).await,
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
    );
    admin
        .create_project(pb::CreateProjectRequest {
            id: "prj_other".into(),
            name: "other".into(),
        })
        .await
        .unwrap();
    assert_error(
        broker.lease_grant(lease_as("prj_other", "ada")).await,
        Code::PermissionDenied,
        "CLIENT_NOT_LINKED_TO_PROJECT",
    );
    // prj_docs's own consent for ada does not touch prj_web's.
    let held = broker
        .hold_grant(pb::HoldGrantRequest {
            key: key_for(&conn, "prj_docs", "ada"),
            project_id: "prj_docs".into(),
            ..hold(&conn, "00000000000000e5", "ada", Duration::from_secs(600))
        })
        .await
        .unwrap()
        .into_inner();
    let mut done = finish("00000000000000e5", &held.completion, "ada");
    done.project_id = "prj_docs".into();
    assert_eq!(
        broker
            .finish_grant(done)
            .await
            .unwrap()
            .into_inner()
            .project,
        "prj_docs"
    );
    let listed = admin
        .list_grants(pb::ListGrantsRequest {
            project: "prj_web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].version, 1, "prj_web's grant was not overwritten");
    assert_eq!(grants(&mut admin).await.len(), 2);

    // A connector that shares grants: one grant, for every linked project; imports say so.
    admin
        .update_connector(pb::UpdateConnectorRequest {
            connector: "oauth2/idp".into(),
            config: [
                (
                    "token_url".to_owned(),
                    "https://idp.example/token".to_owned(),
                ),
                ("grant_sharing".to_owned(), "team".to_owned()),
            ]
            .into(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["config".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = import(&mut admin, vec![imported("bob", "at_bob", "rt_bob", 3600)]).await;
    assert_eq!(refused.imported, 0);
    assert_eq!(refused.errors[0].reason, "INVALID_ARGUMENT");
    let mut shared = imported("bob", "at_team", "rt_team", 3600);
    shared.project = String::new();
    assert_eq!(import(&mut admin, vec![shared]).await.imported, 1);
    for project in ["prj_web", "prj_docs"] {
        let Some(pb::lease_grant_response::Answer::Fresh(team)) = broker
            .lease_grant(lease_as(project, "bob"))
            .await
            .unwrap()
            .into_inner()
            .answer
        else {
            panic!("the team's grant for {project}");
        };
        assert_eq!(team.access_token, "at_team");
        assert_eq!(team.grant.unwrap().project, "");
    }
    app.stop().await;
}

/// `secrets rotate-key`: every sealed value (a connector's secret, a grant, a consent under way,
/// a held consent, a refresh token waiting for revocation) opens under the new key afterwards, and
/// the old key no longer starts the registry.
async fn rotating_the_master_key_reseals_everything_and_retires_the_old_key(db: TestDb) {
    use link_registry::{
        app::{App, AppError},
        crypto::SecretCipher,
    };
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    let conn = connector(&mut admin).await;
    // A replaced grant's refresh token waits for revocation (the connector can revoke).
    admin
        .update_connector(pb::UpdateConnectorRequest {
            connector: "oauth2/idp".into(),
            config: [
                (
                    "token_url".to_owned(),
                    "https://idp.example/token".to_owned(),
                ),
                (
                    "revocation_url".to_owned(),
                    "https://idp.example/revoke".to_owned(),
                ),
            ]
            .into(),
            secrets: [
                ("client_id".to_owned(), "c".to_owned()),
                ("client_secret".to_owned(), "s".to_owned()),
            ]
            .into(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["config".into(), "secrets".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .create_installation(pb::CreateInstallationRequest {
            connector: "oauth2/idp".into(),
            installation_id: "inst-1".into(),
            secrets: [("client_secret".to_owned(), "inst_s".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let first = import(&mut admin, vec![imported("ada", "at_ada", "rt_ada", 3600)]).await;
    assert_eq!(first.imported, 1, "{first:?}");
    let mut broker = app.broker();
    let started = broker
        .begin_authorization(pb::BeginAuthorizationRequest {
            key: key(&conn, "bob"),
            return_url: "https://app.example/done".into(),
            redirect_uri: "https://connect.example/oauth/callback/x".into(),
            code_verifier: "v".repeat(43),
            ttl: duration(Duration::from_secs(600)),
            project_id: "prj_web".into(),
            issuer: "https://oidc.example.test/acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let held = broker
        .hold_grant(hold(
            &conn,
            "00000000000000f6",
            "carol",
            Duration::from_secs(600),
        ))
        .await
        .unwrap()
        .into_inner();
    import(
        &mut admin,
        vec![imported("ada", "at_ada2", "rt_ada2", 3600)],
    )
    .await;
    // A deleted connector's refresh token, kept for revocation under its tombstone.
    let gone = admin
        .create_connector(pb::CreateConnectorRequest {
            uid: "oauth2/gone".into(),
            config: [
                (
                    "token_url".to_owned(),
                    "https://gone.example/token".to_owned(),
                ),
                (
                    "revocation_url".to_owned(),
                    "https://gone.example/revoke".to_owned(),
                ),
            ]
            .into(),
            secrets: [
                ("client_id".to_owned(), "gc".to_owned()),
                ("client_secret".to_owned(), "gs".to_owned()),
            ]
            .into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    link_web(&mut admin, "oauth2/gone").await;
    let answer = admin
        .import_grants(pb::ImportGrantsRequest {
            connector: "oauth2/gone".into(),
            grants: vec![imported("dan", "at_dan", "rt_dan", 3600)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.imported, 1);
    admin
        .delete_connector(pb::DeleteConnectorRequest {
            connector: "oauth2/gone".into(),
        })
        .await
        .unwrap();
    let token_id_key = broker
        .get_token_id_key(pb::GetTokenIdKeyRequest {})
        .await
        .unwrap()
        .into_inner()
        .key;
    assert_eq!(token_id_key.len(), 32);
    let old_config = app.db.serve_config();
    let registry = app.registry.clone();
    let new_key = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    std::fs::remove_file(&new_key).unwrap();
    let new = SecretCipher::from_key_file(&new_key, true).unwrap();
    let resealed = registry.rotate_master_key(&new).await.unwrap();
    // client_id, client_secret; the installation's secret; two tokens of the grant; the
    // verifier; two held tokens; one queued refresh token; the deleted connector's client_id,
    // client_secret and kept refresh token.
    assert_eq!(resealed, 12);
    let db = app.stop().await;
    assert!(matches!(
        App::build(old_config).await,
        Err(AppError::WrongSecretKey)
    ));
    let mut config = db.serve_config();
    config.secret_key_file = Some(new_key.to_path_buf());
    let app = TestApp::start_with_config(db, config).await;
    let mut broker = app.runtime(&registry_broker_key(&app).await);
    let Some(pb::lease_grant_response::Answer::Fresh(ada)) = broker
        .lease_grant(pb::LeaseGrantRequest {
            key: key(&conn, "ada"),
            min_ttl: duration(Duration::ZERO),
            lease: duration(Duration::from_secs(10)),
        })
        .await
        .unwrap()
        .into_inner()
        .answer
    else {
        panic!("ada's grant opens under the new key");
    };
    assert_eq!(ada.access_token, "at_ada2");
    let opened = broker
        .complete_authorization(pb::CompleteAuthorizationRequest {
            state: started.state,
            connector_id: conn.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.code_verifier, "v".repeat(43));
    let carol = broker
        .finish_grant(finish("00000000000000f6", &held.completion, "carol"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(carol.user_id, "carol");
    let claimed = broker
        .claim_grant_revocations(pb::ClaimGrantRevocationsRequest {
            owner_id: "team_acme".into(),
            connector_id: conn.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claimed.client_secret, "s");
    let authorized = broker
        .authorize(pb::AuthorizeRequest {
            owner_id: "team_acme".into(),
            project_id: "prj_web".into(),
            environment: "preview".into(),
            issuer: crate::harness::ISSUER.into(),
            connector: "oauth2/idp".into(),
            installation_id: "inst-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(authorized.installation_secrets["client_secret"], "inst_s");
    assert_eq!(claimed.refresh_tokens[0].refresh_token, "rt_ada");
    // The key of token ids survives the rotation: a credential keeps its token_id.
    let after = broker
        .get_token_id_key(pb::GetTokenIdKeyRequest {})
        .await
        .unwrap()
        .into_inner()
        .key;
    assert_eq!(after, token_id_key);
    let kept = broker
        .claim_grant_revocations(pb::ClaimGrantRevocationsRequest {
            owner_id: "team_acme".into(),
            connector_id: gone,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.revocation_url, "https://gone.example/revoke");
    assert_eq!(
        (kept.client_id.as_str(), kept.client_secret.as_str()),
        ("gc", "gs")
    );
    assert_eq!(kept.refresh_tokens.len(), 1);
    assert_eq!(kept.refresh_tokens[0].refresh_token, "rt_dan");
    app.stop().await;
}

/// A new broker key, on a registry started without the test's usual setup.
async fn registry_broker_key(app: &TestApp) -> String {
    use secrecy::ExposeSecret;
    let (_, key) = app
        .registry
        .create_api_key(None, link_registry::domain::model::Role::Broker)
        .await
        .unwrap();
    key.expose_secret().to_owned()
}

/// `keys create --role broker --team T`: such a broker is refused (`ROLE_NOT_ALLOWED`) on every
/// runtime RPC for another team, before anything is read or written, and its change feed carries
/// only its teams' changes; a broker key without teams still serves every team.
async fn a_broker_key_limited_to_teams_reaches_no_other_team(db: TestDb) {
    use futures::StreamExt;
    use link_registry::domain::{model::Role, types::TeamId};
    use secrecy::ExposeSecret;
    let app = TestApp::spawn(db).await;
    let globex = app
        .new_team("team_globex", "globex", crate::harness::OTHER_ISSUER)
        .await;
    let mut admin = app.admin();
    let conn = connector(&mut admin).await;
    let (record, limited) = app
        .registry
        .create_expiring_api_key(&[TeamId::parse("team_globex").unwrap()], Role::Broker, None)
        .await
        .unwrap();
    assert_eq!(
        record.broker_teams,
        Some(vec![TeamId::parse("team_globex").unwrap()])
    );
    let mut limited = app.runtime(limited.expose_secret());
    let mut everyone = app.broker();
    let refused = |result: Result<(), tonic::Status>| {
        let status = result.expect_err("refused for another team");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        let info = tonic_types::StatusExt::get_details_error_info(&status).unwrap();
        assert_eq!(info.reason, "ROLE_NOT_ALLOWED", "{status:?}");
    };
    let authorize = pb::AuthorizeRequest {
        owner_id: "team_acme".into(),
        project_id: "prj_web".into(),
        environment: "preview".into(),
        issuer: crate::harness::ISSUER.into(),
        connector: "oauth2/idp".into(),
        installation_id: String::new(),
    };
    refused(limited.authorize(authorize.clone()).await.map(drop));
    let answer = everyone.authorize(authorize).await.unwrap().into_inner();
    assert_eq!(
        answer.connector.unwrap().id,
        conn,
        "an unlimited key serves Acme"
    );
    let issuance = pb::RecordIssuanceRequest {
        issuance: Some(pb::Issuance {
            token_id: "0123456789abcdef".into(),
            connector_id: conn.clone(),
            owner_id: "team_acme".into(),
            project_id: "prj_web".into(),
            environment: "preview".into(),
            subject: "app".into(),
            issue_time: in_seconds(0),
            ..Default::default()
        }),
    };
    refused(limited.record_issuance(issuance).await.map(drop));
    refused(
        lease(&mut limited, &conn, "ada", 0, Duration::from_secs(10))
            .await
            .map(drop),
    );
    refused(
        limited
            .commit_grant(pb::CommitGrantRequest {
                key: key(&conn, "ada"),
                lease_id: "lease_x".into(),
                fence: 1,
                outcome: Some(pb::commit_grant_request::Outcome::Refused(
                    "invalid_grant".into(),
                )),
            })
            .await
            .map(drop),
    );
    let begin = pb::BeginAuthorizationRequest {
        key: key(&conn, "bob"),
        return_url: "https://app.example/done".into(),
        redirect_uri: "https://connect.example/oauth/callback/x".into(),
        code_verifier: "v".repeat(43),
        ttl: duration(Duration::from_secs(600)),
        project_id: "prj_web".into(),
        issuer: crate::harness::ISSUER.into(),
        ..Default::default()
    };
    refused(limited.begin_authorization(begin.clone()).await.map(drop));
    // A state of Acme's, presented at the callback by Globex's broker: refused (and spent).
    let started = everyone
        .begin_authorization(begin)
        .await
        .unwrap()
        .into_inner();
    refused(
        limited
            .complete_authorization(pb::CompleteAuthorizationRequest {
                state: started.state,
                connector_id: conn.clone(),
            })
            .await
            .map(drop),
    );
    refused(
        limited
            .hold_grant(hold(
                &conn,
                "00000000000000a1",
                "carol",
                Duration::from_secs(60),
            ))
            .await
            .map(drop),
    );
    let held = everyone
        .hold_grant(hold(
            &conn,
            "00000000000000a2",
            "carol",
            Duration::from_secs(60),
        ))
        .await
        .unwrap()
        .into_inner();
    refused(
        limited
            .finish_grant(finish("00000000000000a2", &held.completion, "carol"))
            .await
            .map(drop),
    );
    let carol = everyone
        .finish_grant(finish("00000000000000a2", &held.completion, "carol"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        carol.user_id, "carol",
        "the refusal left the consent pending"
    );
    refused(
        limited
            .claim_grant_revocations(pb::ClaimGrantRevocationsRequest {
                owner_id: "team_acme".into(),
                connector_id: conn.clone(),
            })
            .await
            .map(drop),
    );
    refused(
        limited
            .finish_grant_revocations(pb::FinishGrantRevocationsRequest {
                owner_id: "team_acme".into(),
                connector_id: conn.clone(),
                ids: vec![1],
            })
            .await
            .map(drop),
    );
    refused(
        limited
            .report_revocations(pb::ReportRevocationsRequest {
                owner_id: "team_acme".into(),
                connector_id: conn.clone(),
                revocations: vec![],
            })
            .await
            .map(drop),
    );
    // A connector of another team named with the right team is not found, not served.
    assert_error(
        everyone
            .finish_grant_revocations(pb::FinishGrantRevocationsRequest {
                owner_id: "team_globex".into(),
                connector_id: conn.clone(),
                ids: vec![1],
            })
            .await,
        Code::NotFound,
        "CONNECTOR_NOT_FOUND",
    );
    // Its own team is served; the key of token ids is not a team's.
    assert_error(
        limited
            .authorize(pb::AuthorizeRequest {
                owner_id: "team_globex".into(),
                project_id: "prj_web".into(),
                environment: "preview".into(),
                issuer: crate::harness::OTHER_ISSUER.into(),
                connector: "oauth2/idp".into(),
                installation_id: String::new(),
            })
            .await,
        Code::NotFound,
        "CONNECTOR_NOT_FOUND",
    );
    limited
        .get_token_id_key(pb::GetTokenIdKeyRequest {})
        .await
        .unwrap();
    // The feed: a change of each team; the limited broker hears only Globex's.
    let mut feed = limited
        .watch_changes(pb::WatchChangesRequest { from_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let first = feed.next().await.unwrap().unwrap();
    assert!(first.resync, "{first:?}");
    let mut all = everyone
        .watch_changes(pb::WatchChangesRequest {
            from_revision: first.revision,
        })
        .await
        .unwrap()
        .into_inner();
    for (client, uid) in [
        (&mut admin, "api-key/acme"),
        (&mut app.client(&globex.admin), "api-key/globex"),
    ] {
        client
            .create_connector(pb::CreateConnectorRequest {
                uid: uid.into(),
                secrets: [("api_key".to_owned(), "sk_1".to_owned())].into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let teams_of = |events: Vec<pb::ChangeEvent>| -> Vec<String> {
        events
            .into_iter()
            .filter(|e| !e.action.is_empty())
            .map(|e| e.owner_id)
            .collect()
    };
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(all.next().await.unwrap().unwrap());
        seen.retain(|e| !e.action.is_empty());
    }
    assert_eq!(teams_of(seen), ["team_acme", "team_globex"]);
    let mut heard = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, feed.next()).await {
        heard.push(event.unwrap());
    }
    assert_eq!(teams_of(heard), ["team_globex"]);
    app.stop().await;
}
