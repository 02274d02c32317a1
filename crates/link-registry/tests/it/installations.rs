//! Installations and revocation through a real server, on every backend: installations per
//! connector (ids by type, no destinations of their own, secrets sealed and never returned), the
//! default installation, `Authorize` for an installation, deletion; `RevokeTokens` marking the
//! ledger, announcing the revocation in the feed and counting what brokers report.

use std::time::Duration;

use connect_proto::registry::v1 as pb;
use tonic::Code;

use crate::harness::{
    Client, ISSUER, OTHER_ISSUER, TestApp, TestDb, assert_error, violated_fields,
};

crate::on_every_backend!(
    installations_are_kept_per_connector_and_audited,
    authorize_answers_for_the_installation_asked_for,
    revocations_mark_the_ledger_and_count_what_brokers_report,
);

fn installation(connector: &str, id: &str) -> pb::CreateInstallationRequest {
    pb::CreateInstallationRequest {
        connector: connector.into(),
        installation_id: id.into(),
        ..Default::default()
    }
}

async fn create_connector(
    admin: &mut Client,
    uid: &str,
    config: &[(&str, &str)],
    secrets: &[(&str, &str)],
) -> pb::Connector {
    admin
        .create_connector(pb::CreateConnectorRequest {
            uid: uid.into(),
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secrets: secrets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .await
        .expect("create connector")
        .into_inner()
}

async fn set_default(
    admin: &mut Client,
    connector: &str,
    id: &str,
) -> Result<tonic::Response<pb::Connector>, tonic::Status> {
    admin
        .update_connector(pb::UpdateConnectorRequest {
            connector: connector.into(),
            default_installation_id: id.into(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["default_installation_id".into()],
            }),
            ..Default::default()
        })
        .await
}

async fn list(
    client: &mut Client,
    connector: &str,
    size: i32,
    token: &str,
) -> pb::ListInstallationsResponse {
    client
        .list_installations(pb::ListInstallationsRequest {
            connector: connector.into(),
            page_size: size,
            page_token: token.into(),
        })
        .await
        .expect("list installations")
        .into_inner()
}

async fn installations_are_kept_per_connector_and_audited(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    create_connector(
        &mut admin,
        "github/app",
        &[("app_id", "1")],
        &[("private_key", "pem")],
    )
    .await;
    let created = admin
        .create_installation(pb::CreateInstallationRequest {
            display_name: "Acme org".into(),
            ..installation("github/app", "1001")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            created.installation_id.as_str(),
            created.display_name.as_str(),
            created.connector_uid.as_str(),
            created.owner_id.as_str(),
            created.is_default
        ),
        ("1001", "Acme org", "github/app", "team_acme", false)
    );
    assert_error(
        admin
            .create_installation(installation("github/app", "1001"))
            .await,
        Code::AlreadyExists,
        "ALREADY_EXISTS",
    );
    assert_error(
        admin
            .create_installation(installation("github/nope", "1"))
            .await,
        Code::NotFound,
        "CONNECTOR_NOT_FOUND",
    );
    for (request, field) in [
        (installation("github/app", "acme"), "installation_id"),
        (installation("github/app", "*"), "installation_id"),
        (installation("github/app", ""), "installation_id"),
        (
            pb::CreateInstallationRequest {
                config: [("api_url".to_owned(), "https://evil.example".to_owned())].into(),
                ..installation("github/app", "1003")
            },
            "config[api_url]",
        ),
    ] {
        let status = assert_error(
            admin.create_installation(request).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(violated_fields(&status), [field]);
    }

    // The longest id is a longer name than a display name may be: the default name is cut.
    let long = "9".repeat(128);
    let created = admin
        .create_installation(installation("github/app", &long))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.display_name, "9".repeat(100));
    admin
        .delete_installation(pb::DeleteInstallationRequest {
            connector: "github/app".into(),
            installation_id: long,
        })
        .await
        .unwrap();

    // The default must be one of its installations; deleting it clears it.
    assert_error(
        set_default(&mut admin, "github/app", "9").await,
        Code::NotFound,
        "INSTALLATION_NOT_FOUND",
    );
    let connector = set_default(&mut admin, "github/app", "1001")
        .await
        .unwrap()
        .into_inner();
    assert_eq!(connector.default_installation_id, "1001");

    // Pages in id order, with the default marked.
    for id in ["1002", "1000", "1004"] {
        admin
            .create_installation(installation("github/app", id))
            .await
            .unwrap();
    }
    let mut viewer = app.client(&app.acme.viewer);
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(&mut viewer, "github/app", 2, &token).await;
        assert!(page.installations.len() <= 2);
        seen.extend(
            page.installations
                .iter()
                .map(|i| (i.installation_id.clone(), i.is_default)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1000", "1001", "1002", "1004"]);
    assert_eq!(seen.iter().filter(|(_, d)| *d).count(), 1);
    assert!(seen.contains(&("1001".into(), true)));

    // Viewers read only; another team sees nothing.
    assert_error(
        viewer
            .create_installation(installation("github/app", "5"))
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    let globex = app.new_team("team_globex", "globex", OTHER_ISSUER).await;
    assert_error(
        app.client(&globex.admin)
            .list_installations(pb::ListInstallationsRequest {
                connector: "github/app".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "CONNECTOR_NOT_FOUND",
    );

    let gone = admin
        .delete_installation(pb::DeleteInstallationRequest {
            connector: "github/app".into(),
            installation_id: "1001".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.installation.unwrap().installation_id, "1001");
    assert_eq!(gone.revocation.unwrap().tokens_found, 0);
    let connector = admin
        .get_connector(pb::GetConnectorRequest {
            connector: "github/app".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(connector.default_installation_id, "");
    assert_error(
        admin
            .delete_installation(pb::DeleteInstallationRequest {
                connector: "github/app".into(),
                installation_id: "1001".into(),
            })
            .await,
        Code::NotFound,
        "INSTALLATION_NOT_FOUND",
    );

    // Installation secrets: sealed, named, never returned or audited; a destination move of
    // the connector is refused while they are sealed to it.
    create_connector(
        &mut admin,
        "oauth2/idp",
        &[("token_url", "https://idp.example/token")],
        &[("client_id", "c"), ("client_secret", "s")],
    )
    .await;
    let with_secret = admin
        .create_installation(pb::CreateInstallationRequest {
            secrets: [("client_secret".to_owned(), "tenant-secret-1".to_owned())].into(),
            ..installation("oauth2/idp", "tenant-a")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(with_secret.secret_names, ["client_secret"]);
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
            .filter(|a| **a == "installation.create")
            .count(),
        6
    );
    assert!(actions.contains(&"installation.delete"));
    assert!(actions.contains(&"tokens.revoke"));
    assert!(!format!("{events:?}").contains("tenant-secret-1"));
    app.stop().await;
}

fn authorize(connector: &str, installation: &str) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        owner_id: "team_acme".into(),
        project_id: "prj_web".into(),
        environment: "preview".into(),
        issuer: ISSUER.into(),
        connector: connector.into(),
        installation_id: installation.into(),
    }
}

async fn authorize_answers_for_the_installation_asked_for(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    admin
        .create_project(pb::CreateProjectRequest {
            id: "prj_web".into(),
            name: "web".into(),
        })
        .await
        .unwrap();
    create_connector(&mut admin, "api-key/stripe", &[], &[("api_key", "sk_main")]).await;
    admin
        .attach_project(pb::AttachProjectRequest {
            connector: "api-key/stripe".into(),
            project: "prj_web".into(),
            environments: vec!["preview".into()],
            expire_time: None,
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .create_installation(pb::CreateInstallationRequest {
            config: [("region".to_owned(), "eu".to_owned())].into(),
            secrets: [("api_key".to_owned(), "sk_eu".to_owned())].into(),
            ..installation("api-key/stripe", "acct_eu")
        })
        .await
        .unwrap();
    let mut broker = app.broker();

    // No installation asked, no default: none.
    let answer = broker
        .authorize(authorize("api-key/stripe", ""))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.installation.is_none());
    assert!(answer.installation_secrets.is_empty());
    assert_eq!(answer.secrets["api_key"], "sk_main");

    let answer = broker
        .authorize(authorize("api-key/stripe", "acct_eu"))
        .await
        .unwrap()
        .into_inner();
    let granted = answer.installation.unwrap();
    assert_eq!(granted.installation_id, "acct_eu");
    assert_eq!(granted.config["region"], "eu");
    assert_eq!(answer.installation_secrets["api_key"], "sk_eu");

    // The default answers an empty ask; `*` asks for none in particular.
    set_default(&mut admin, "api-key/stripe", "acct_eu")
        .await
        .unwrap();
    let answer = broker
        .authorize(authorize("api-key/stripe", ""))
        .await
        .unwrap()
        .into_inner();
    let granted = answer.installation.unwrap();
    assert_eq!(
        (granted.installation_id.as_str(), granted.is_default),
        ("acct_eu", true)
    );
    let every = broker
        .authorize(authorize("api-key/stripe", "*"))
        .await
        .unwrap()
        .into_inner();
    assert!(every.installation.is_none());

    assert_error(
        broker
            .authorize(authorize("api-key/stripe", "acct_us"))
            .await,
        Code::NotFound,
        "INSTALLATION_NOT_FOUND",
    );
    let status = assert_error(
        broker.authorize(authorize("api-key/stripe", "a b")).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["installation_id"]);
    // The link decides first: an unlinked project learns nothing about installations.
    let mut unlinked = authorize("api-key/stripe", "acct_us");
    unlinked.project_id = "prj_other".into();
    assert_error(
        broker.authorize(unlinked).await,
        Code::PermissionDenied,
        "CLIENT_NOT_LINKED_TO_PROJECT",
    );
    app.stop().await;
}

fn recorded(
    connector_id: &str,
    token_id: &str,
    subject: &str,
    expires_in: i64,
) -> pb::RecordIssuanceRequest {
    let now = chrono::Utc::now().timestamp();
    pb::RecordIssuanceRequest {
        issuance: Some(pb::Issuance {
            token_id: token_id.into(),
            connector_id: connector_id.into(),
            owner_id: "team_acme".into(),
            project_id: "prj_web".into(),
            environment: "preview".into(),
            subject: subject.into(),
            issue_time: Some(prost_types::Timestamp {
                seconds: now - 10,
                nanos: 0,
            }),
            expire_time: Some(prost_types::Timestamp {
                seconds: now + expires_in,
                nanos: 0,
            }),
            ..Default::default()
        }),
    }
}

fn counts(r: &pb::RevokeTokensResponse) -> (u32, u32, u32, u32, u32) {
    (
        r.tokens_found,
        r.revoked,
        r.provider_revoked,
        r.provider_skipped,
        r.provider_failed,
    )
}

async fn revocations_mark_the_ledger_and_count_what_brokers_report(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.revocation_wait = Duration::from_millis(700)).await;
    let mut admin = app.admin();
    let connector = create_connector(
        &mut admin,
        "oauth2/idp",
        &[
            ("token_url", "https://idp.example/token"),
            ("revocation_url", "https://idp.example/revoke"),
        ],
        &[("client_id", "c"), ("client_secret", "s")],
    )
    .await;
    let mut broker = app.broker();
    let live = "00000000000000a1";
    let failing = "00000000000000a2";
    let expired = "00000000000000a3";
    for request in [
        recorded(&connector.id, live, "app", 3600),
        recorded(&connector.id, failing, "user:ada", 3600),
        recorded(&connector.id, expired, "app", -5),
    ] {
        broker.record_issuance(request).await.unwrap();
    }

    // A broker: follows the feed and reports what "the provider" said about the two it holds.
    let mut feed = app
        .broker()
        .watch_changes(pb::WatchChangesRequest { from_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let reporter = {
        let mut client = app.broker();
        let connector_id = connector.id.clone();
        tokio::spawn(async move {
            loop {
                let event = feed.message().await.unwrap().unwrap();
                if event.action == "tokens.revoke" {
                    assert_eq!(event.connector_id, connector_id);
                    assert_eq!(
                        (event.subject.as_str(), event.installation_id.as_str()),
                        ("", "")
                    );
                    break;
                }
            }
            client
                .report_revocations(pb::ReportRevocationsRequest {
                    owner_id: "team_acme".into(),
                    connector_id,
                    revocations: vec![
                        pb::Revocation {
                            token_id: live.into(),
                            outcome: "revoked".into(),
                        },
                        pb::Revocation {
                            token_id: failing.into(),
                            outcome: "failed".into(),
                        },
                    ],
                })
                .await
                .unwrap()
                .into_inner()
                .updated
        })
    };
    let answer = admin
        .revoke_tokens(pb::RevokeTokensRequest {
            connector: "oauth2/idp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts(&answer), (3, 3, 1, 1, 1));
    assert_eq!(reporter.await.unwrap(), 2);
    let rows = admin
        .list_issuances(pb::ListIssuancesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .issuances;
    let mut outcomes: Vec<(&str, bool, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.token_id.as_str(),
                r.revoked,
                r.provider_revocation.as_str(),
            )
        })
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            (live, true, "revoked"),
            (failing, true, "failed"),
            (expired, true, "skipped")
        ]
    );

    // Once revoked, always: a second revocation finds them and revokes nothing.
    let again = admin
        .revoke_tokens(pb::RevokeTokensRequest {
            connector: connector.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts(&again), (3, 0, 0, 0, 0));

    // One subject only; nobody reports, so after the wait it counts as skipped.
    broker
        .record_issuance(recorded(
            &connector.id,
            "00000000000000b1",
            "user:bob",
            3600,
        ))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let bob = admin
        .revoke_tokens(pb::RevokeTokensRequest {
            connector: "oauth2/idp".into(),
            subject: "user:bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts(&bob), (1, 1, 0, 1, 0));
    assert!(started.elapsed() >= Duration::from_millis(700));

    // Roles and bad input.
    assert_error(
        app.client(&app.acme.viewer)
            .revoke_tokens(pb::RevokeTokensRequest {
                connector: "oauth2/idp".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    let status = assert_error(
        admin
            .revoke_tokens(pb::RevokeTokensRequest {
                connector: "oauth2/idp".into(),
                subject: "robot".into(),
                installation_id: "a b".into(),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["subject", "installation_id"]);
    assert_error(
        app.runtime(&app.acme.admin)
            .report_revocations(pb::ReportRevocationsRequest {
                owner_id: "team_acme".into(),
                connector_id: connector.id.clone(),
                revocations: vec![],
            })
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    let status = assert_error(
        broker
            .report_revocations(pb::ReportRevocationsRequest {
                owner_id: "team_acme".into(),
                connector_id: connector.id.clone(),
                revocations: vec![pb::Revocation {
                    token_id: live.into(),
                    outcome: "maybe".into(),
                }],
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["revocations[0].outcome"]);
    app.stop().await;
}
