//! The issuance ledger: brokers record, teams list newest first with filters and pages, each
//! (credential, project, environment) once, and every team sees only its own.

use connect_proto::registry::v1 as pb;
use tonic::Code;

use crate::harness::{Client, OTHER_ISSUER, Runtime, TestApp, TestDb, assert_error};

crate::on_every_backend!(
    brokers_record_each_credential_once_and_teams_list_their_own,
    only_brokers_record_and_only_the_team_reads,
    the_largest_requests_a_broker_accepts_fit_the_ledger,
    a_revoked_credential_is_not_recorded_again,
);

async fn seed(admin: &mut Client) -> String {
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
        .unwrap()
        .into_inner()
        .id
}

pub(crate) fn issuance(
    connector_id: &str,
    token_id: &str,
    project: &str,
    environment: &str,
) -> pb::Issuance {
    pb::Issuance {
        token_id: token_id.into(),
        connector_id: connector_id.into(),
        owner_id: "team_acme".into(),
        project_id: project.into(),
        environment: environment.into(),
        subject: "app".into(),
        scopes: vec!["read".into(), "write".into()],
        issue_time: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        }),
        expire_time: Some(prost_types::Timestamp {
            seconds: 1_800_003_600,
            nanos: 0,
        }),
        ..Default::default()
    }
}

async fn record(broker: &mut Runtime, issuance: pb::Issuance) -> bool {
    broker
        .record_issuance(pb::RecordIssuanceRequest {
            issuance: Some(issuance),
        })
        .await
        .expect("record")
        .into_inner()
        .recorded
}

async fn list(client: &mut Client, request: pb::ListIssuancesRequest) -> pb::ListIssuancesResponse {
    client
        .list_issuances(request)
        .await
        .expect("list issuances")
        .into_inner()
}

async fn brokers_record_each_credential_once_and_teams_list_their_own(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (mut admin, mut broker) = (app.admin(), app.broker());
    let connector = seed(&mut admin).await;
    assert!(
        record(
            &mut broker,
            issuance(&connector, "0123456789abcdef", "prj_web", "preview")
        )
        .await
    );
    // Once per (credential, project, environment).
    assert!(
        !record(
            &mut broker,
            issuance(&connector, "0123456789abcdef", "prj_web", "preview")
        )
        .await
    );
    assert!(
        record(
            &mut broker,
            issuance(&connector, "0123456789abcdef", "prj_web", "production")
        )
        .await
    );
    assert!(
        record(
            &mut broker,
            issuance(&connector, "fedcba9876543210", "prj_docs", "preview")
        )
        .await
    );

    let all = list(&mut admin, pb::ListIssuancesRequest::default()).await;
    let seen: Vec<(&str, &str, &str)> = all
        .issuances
        .iter()
        .map(|i| {
            (
                i.token_id.as_str(),
                i.project_id.as_str(),
                i.environment.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("fedcba9876543210", "prj_docs", "preview"),
            ("0123456789abcdef", "prj_web", "production"),
            ("0123456789abcdef", "prj_web", "preview"),
        ],
        "newest first"
    );
    let first = &all.issuances[2];
    assert_eq!(first.connector_uid, "api-key/stripe");
    assert_eq!(first.owner_id, "team_acme");
    assert_eq!(first.subject, "app");
    assert_eq!(first.scopes, ["read", "write"]);
    assert_eq!(first.issue_time.as_ref().unwrap().seconds, 1_800_000_000);
    assert_eq!(first.expire_time.as_ref().unwrap().seconds, 1_800_003_600);
    assert!(!first.revoked);

    // Filters, by connector uid or id, project and environment.
    for (connector_ref, project, environment, expected) in [
        ("api-key/stripe", "", "", 3),
        (connector.as_str(), "prj_web", "", 2),
        ("", "", "production", 1),
        ("", "prj_docs", "production", 0),
    ] {
        let found = list(
            &mut admin,
            pb::ListIssuancesRequest {
                connector: connector_ref.into(),
                project: project.into(),
                environment: environment.into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            found.issuances.len(),
            expected,
            "{connector_ref} {project} {environment}"
        );
    }
    // Pages.
    let page = list(
        &mut admin,
        pb::ListIssuancesRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(page.issuances.len(), 2);
    let rest = list(
        &mut admin,
        pb::ListIssuancesRequest {
            page_size: 2,
            page_token: page.next_page_token,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rest.issuances.len(), 1);
    assert_eq!(rest.issuances[0].environment, "preview");
    assert!(rest.next_page_token.is_empty());
    // Viewers read; another team sees nothing of it.
    let mut viewer = app.client(&app.acme.viewer);
    assert_eq!(
        list(&mut viewer, pb::ListIssuancesRequest::default())
            .await
            .issuances
            .len(),
        3
    );
    let globex = app.new_team("team_globex", "globex", OTHER_ISSUER).await;
    let mut other = app.client(&globex.admin);
    assert!(
        list(&mut other, pb::ListIssuancesRequest::default())
            .await
            .issuances
            .is_empty()
    );
    assert_error(
        other
            .list_issuances(pb::ListIssuancesRequest {
                connector: "api-key/stripe".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "CONNECTOR_NOT_FOUND",
    );
    app.stop().await;
}

async fn only_brokers_record_and_only_the_team_reads(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (mut admin, mut broker) = (app.admin(), app.broker());
    let connector = seed(&mut admin).await;
    assert_error(
        app.runtime(&app.acme.admin)
            .record_issuance(pb::RecordIssuanceRequest {
                issuance: Some(issuance(
                    &connector,
                    "0123456789abcdef",
                    "prj_web",
                    "preview",
                )),
            })
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    assert_error(
        app.client(&app.broker)
            .list_issuances(pb::ListIssuancesRequest::default())
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    // A connector of another team (or none) is not recorded against this one.
    let mut foreign = issuance(&connector, "0123456789abcdef", "prj_web", "preview");
    foreign.owner_id = "team_globex".into();
    assert_error(
        broker
            .record_issuance(pb::RecordIssuanceRequest {
                issuance: Some(foreign),
            })
            .await,
        Code::NotFound,
        "CONNECTOR_NOT_FOUND",
    );
    // Malformed records are refused field by field.
    let mut bad = issuance(&connector, "NOT-HEX", "prj_web", "Staging");
    bad.issue_time = None;
    let status = broker
        .record_issuance(pb::RecordIssuanceRequest {
            issuance: Some(bad),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = crate::harness::violated_fields(&status);
    assert!(
        fields.contains(&"issuance.environment".to_owned()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"issuance.issue_time".to_owned()),
        "{fields:?}"
    );
    let mut bad_id = issuance(&connector, "NOT-HEX", "prj_web", "preview");
    bad_id.subject = String::new();
    let status = broker
        .record_issuance(pb::RecordIssuanceRequest {
            issuance: Some(bad_id),
        })
        .await
        .unwrap_err();
    let fields = crate::harness::violated_fields(&status);
    assert_eq!(
        fields,
        ["issuance.token_id", "issuance.subject"],
        "{status:?}"
    );
    assert!(
        list(&mut admin, pb::ListIssuancesRequest::default())
            .await
            .issuances
            .is_empty()
    );
    app.stop().await;
}

/// A 256-character jwt-bearer subject and 50 scopes of 256 characters (a large GitHub permission
/// set) are what a broker accepts: their record fits, or the credential could not be handed out.
async fn the_largest_requests_a_broker_accepts_fit_the_ledger(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (mut admin, mut broker) = (app.admin(), app.broker());
    let connector = seed(&mut admin).await;
    let mut large = issuance(&connector, "00000000000000aa", "prj_web", "preview");
    large.subject = format!("jwt_bearer:{}", "s".repeat(256));
    large.scopes = (0..50)
        .map(|n| format!("{n:03}{}", "p".repeat(253)))
        .collect();
    assert!(record(&mut broker, large.clone()).await);
    let listed = list(&mut admin, pb::ListIssuancesRequest::default()).await;
    assert_eq!(listed.issuances[0].subject, large.subject);
    assert_eq!(listed.issuances[0].scopes, large.scopes);
    app.stop().await;
}

/// A broker that did not hear of a revocation and would hand the credential out again is
/// refused: for the project it was revoked for and for any other.
async fn a_revoked_credential_is_not_recorded_again(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| {
        c.revocation_wait = std::time::Duration::from_millis(100);
    })
    .await;
    let (mut admin, mut broker) = (app.admin(), app.broker());
    let connector = seed(&mut admin).await;
    assert!(
        record(
            &mut broker,
            issuance(&connector, "00000000000000bb", "prj_web", "preview")
        )
        .await
    );
    let revoked = admin
        .revoke_tokens(pb::RevokeTokensRequest {
            connector: "api-key/stripe".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.revoked, 1);
    for (project, environment) in [("prj_web", "preview"), ("prj_docs", "production")] {
        assert_error(
            broker
                .record_issuance(pb::RecordIssuanceRequest {
                    issuance: Some(issuance(
                        &connector,
                        "00000000000000bb",
                        project,
                        environment,
                    )),
                })
                .await,
            Code::FailedPrecondition,
            "FAILED_PRECONDITION",
        );
    }
    // Another credential is recorded as before.
    assert!(
        record(
            &mut broker,
            issuance(&connector, "00000000000000cc", "prj_web", "preview")
        )
        .await
    );
    app.stop().await;
}
