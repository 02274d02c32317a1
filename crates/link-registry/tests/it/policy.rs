//! Policy on a link beyond "linked or not": ceilings (validated, stored, audited, explained and
//! sent to brokers), the issuance quota counted where issuances are recorded, and unused links
//! found from the ledger.

use connect_proto::registry::v1 as pb;
use tonic::Code;

use crate::{
    harness::{Client, Runtime, TestApp, TestDb, assert_error, violated_fields},
    ledger::issuance,
};

crate::on_every_backend!(
    link_ceilings_are_checked_stored_explained_and_replaced_whole,
    the_issuance_quota_counts_a_links_new_credentials_of_the_last_hour,
    concurrent_records_never_exceed_the_quota,
    unused_links_are_found_from_the_ledger,
    custom_environments_are_named_by_id_or_slug_and_deleting_one_cleans_links,
);

/// Team acme with projects `web` and `docs`, connector `oauth2/idp` with installations `acme`
/// and `beta`.
async fn seeded(db: TestDb) -> (TestApp, pb::Connector) {
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    for (id, name) in [("prj_web", "web"), ("prj_docs", "docs")] {
        admin
            .create_project(pb::CreateProjectRequest {
                id: id.into(),
                name: name.into(),
            })
            .await
            .unwrap();
    }
    let connector = admin
        .create_connector(pb::CreateConnectorRequest {
            uid: "oauth2/idp".into(),
            config: [(
                "token_url".to_owned(),
                "https://idp.example/token".to_owned(),
            )]
            .into(),
            secrets: [("client_id".to_owned(), "c".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for id in ["acme", "beta"] {
        admin
            .create_installation(pb::CreateInstallationRequest {
                connector: "oauth2/idp".into(),
                installation_id: id.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    (app, connector)
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn attach(project: &str) -> pb::AttachProjectRequest {
    pb::AttachProjectRequest {
        connector: "oauth2/idp".into(),
        project: project.into(),
        environments: strings(&["preview", "production"]),
        ..Default::default()
    }
}

fn explain(scopes: &[&str], subject: &str, installation: &str) -> pb::ExplainAccessRequest {
    pb::ExplainAccessRequest {
        project: "web".into(),
        environment: "preview".into(),
        connector: "oauth2/idp".into(),
        installation_id: installation.into(),
        subject: subject.into(),
        scopes: strings(scopes),
        resources: vec![],
    }
}

async fn link_ceilings_are_checked_stored_explained_and_replaced_whole(db: TestDb) {
    let (app, connector) = seeded(db).await;
    let mut admin = app.admin();

    // Bad ceilings: every field named, nothing stored.
    let refused = assert_error(
        admin
            .attach_project(pb::AttachProjectRequest {
                allowed_scopes: strings(&["read", "two words"]),
                allowed_resources: strings(&["repo"]),
                allowed_installations: strings(&["acme", "nope"]),
                allowed_subjects: strings(&["app", "jwt_bearer", "app"]),
                max_issuances_per_hour: 2_000_000,
                ..attach("web")
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    let mut fields = violated_fields(&refused);
    fields.sort();
    assert_eq!(
        fields,
        [
            "allowed_installations",
            "allowed_resources",
            "allowed_scopes",
            "max_issuances_per_hour",
        ],
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains("oauth2/idp has no installation 'nope'"),
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains("'two words' is not a scope oauth2 connectors take"),
        "{refused:?}"
    );
    // An unknown subject kind is a malformed request, refused before the rest is looked at.
    let refused = assert_error(
        admin
            .attach_project(pb::AttachProjectRequest {
                allowed_subjects: strings(&["robot"]),
                ..attach("web")
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&refused), ["allowed_subjects"]);
    assert_error(
        admin
            .get_project_link(pb::GetProjectLinkRequest {
                connector: "oauth2/idp".into(),
                project: "web".into(),
            })
            .await,
        Code::NotFound,
        "PROJECT_LINK_NOT_FOUND",
    );

    // Good ones: stored sorted and deduplicated, answered by every read.
    let link = admin
        .attach_project(pb::AttachProjectRequest {
            allowed_scopes: strings(&["write", "read", "read"]),
            allowed_installations: strings(&["acme"]),
            allowed_subjects: strings(&["user", "app"]),
            max_issuances_per_hour: 3,
            ..attach("web")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(link.allowed_scopes, ["read", "write"]);
    assert_eq!(link.allowed_installations, ["acme"]);
    assert_eq!(link.allowed_subjects, ["app", "user"]);
    assert!(link.allowed_resources.is_empty());
    assert_eq!(link.max_issuances_per_hour, 3);
    assert_eq!(link.last_issue_time, None);
    let read = app
        .client(&app.acme.viewer)
        .get_project_link(pb::GetProjectLinkRequest {
            connector: "oauth2/idp".into(),
            project: "web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read, link);
    // The same terms again change nothing (no audit event, same update time).
    let again = admin
        .attach_project(pb::AttachProjectRequest {
            allowed_scopes: strings(&["read", "write"]),
            allowed_installations: strings(&["acme"]),
            allowed_subjects: strings(&["app", "user"]),
            max_issuances_per_hour: 3,
            ..attach("web")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.update_time, link.update_time);

    // Brokers get the ceilings with the answer (they apply them to what a caller asks); the
    // registry's Authorize decides the link alone.
    let mut broker = app.broker();
    let authorized = broker
        .authorize(pb::AuthorizeRequest {
            owner_id: "team_acme".into(),
            project_id: "prj_web".into(),
            environment: "preview".into(),
            issuer: crate::harness::ISSUER.into(),
            connector: "oauth2/idp".into(),
            installation_id: "beta".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(authorized.link.unwrap().allowed_installations, ["acme"]);

    // ExplainAccess names the ceiling each ask goes beyond, and the fix.
    let mut viewer = app.client(&app.acme.viewer);
    let mut ask = async |request| viewer.explain_access(request).await.unwrap().into_inner();
    let within = ask(explain(&["read"], "app", "acme")).await;
    assert!(within.allowed, "{within:?}");
    let ceilings = within.checks.iter().find(|c| c.name == "ceilings").unwrap();
    assert_eq!(
        (ceilings.outcome.as_str(), ceilings.detail.as_str()),
        ("pass", "within the link's ceilings")
    );
    for (request, reason, detail) in [
        (
            explain(&["read", "admin"], "app", "acme"),
            "SCOPE_NOT_ALLOWED",
            "the link does not allow scope 'admin'",
        ),
        (
            explain(&[], "token", "acme"),
            "SUBJECT_NOT_ALLOWED",
            "the link does not allow token subjects",
        ),
        (
            explain(&[], "app", "beta"),
            "SUBJECT_NOT_ALLOWED",
            "the link does not allow installation 'beta'",
        ),
        (
            explain(&[], "app", ""),
            "SUBJECT_NOT_ALLOWED",
            "the link allows tokens for its allowed installations only, not for none",
        ),
    ] {
        let answer = ask(request).await;
        assert!(!answer.allowed, "{answer:?}");
        assert_eq!(answer.reason, reason, "{answer:?}");
        let failed = answer.checks.iter().find(|c| c.outcome == "fail").unwrap();
        assert_eq!(failed.name, "ceilings");
        assert_eq!(failed.detail, detail);
        assert!(
            failed
                .fix
                .contains("connect attach oauth2/idp --project web"),
            "{failed:?}"
        );
        assert_eq!(answer.checks.last().unwrap().outcome, "skip");
    }

    // Audited with the limits after; an attach without them removes them (terms are whole).
    let plain = admin
        .attach_project(attach("web"))
        .await
        .unwrap()
        .into_inner();
    assert!(plain.allowed_scopes.is_empty() && plain.allowed_subjects.is_empty());
    assert_eq!(plain.max_issuances_per_hour, 0);
    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let json = |s: &Option<prost_types::Struct>| format!("{s:?}");
    assert_eq!(events[0].action, "project.attach");
    assert!(json(&events[0].before).contains("max_issuances_per_hour"));
    assert!(!json(&events[0].after).contains("limits"));
    assert!(json(&events[1].after).contains("allowed_installations"));

    // A type that narrows to no resources and has no installations refuses those ceilings.
    admin
        .create_connector(pb::CreateConnectorRequest {
            uid: "api-key/stripe".into(),
            secrets: [("api_key".to_owned(), "sk".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = assert_error(
        admin
            .attach_project(pb::AttachProjectRequest {
                connector: "api-key/stripe".into(),
                allowed_scopes: strings(&["read"]),
                allowed_subjects: strings(&["user"]),
                ..attach("web")
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        violated_fields(&refused),
        ["allowed_scopes", "allowed_subjects"]
    );
    assert!(!connector.id.is_empty());
}

async fn record(
    broker: &mut Runtime,
    connector: &str,
    token: &str,
    project: &str,
    seconds_ago: i64,
) -> Result<bool, tonic::Status> {
    let now = chrono::Utc::now();
    let mut issued = issuance(connector, token, project, "preview");
    issued.issue_time = Some(prost_types::Timestamp {
        seconds: now.timestamp() - seconds_ago,
        nanos: i32::try_from(now.timestamp_subsec_nanos()).unwrap(),
    });
    issued.expire_time = None;
    broker
        .record_issuance(pb::RecordIssuanceRequest {
            issuance: Some(issued),
        })
        .await
        .map(|r| r.into_inner().recorded)
}

fn token(i: usize) -> String {
    format!("{i:016x}")
}

async fn the_issuance_quota_counts_a_links_new_credentials_of_the_last_hour(db: TestDb) {
    let (app, connector) = seeded(db).await;
    let mut admin = app.admin();
    for project in ["web", "docs"] {
        admin
            .attach_project(pb::AttachProjectRequest {
                max_issuances_per_hour: 3,
                ..attach(project)
            })
            .await
            .unwrap();
    }
    let mut broker = app.broker();
    let id = connector.id.as_str();
    // Two credentials from two hours ago are outside the window.
    for i in 0..2 {
        assert!(
            record(&mut broker, id, &token(i), "prj_web", 7200)
                .await
                .unwrap()
        );
    }
    for i in 2..5 {
        assert!(
            record(&mut broker, id, &token(i), "prj_web", 0)
                .await
                .unwrap()
        );
    }
    let refused = assert_error(
        record(&mut broker, id, &token(5), "prj_web", 0)
            .await
            .map(tonic::Response::new),
        Code::ResourceExhausted,
        "QUOTA_EXCEEDED",
    );
    assert_eq!(
        refused.message(),
        format!(
            "QuotaExceededError: the link of connector 'oauth2/idp' to project 'prj_web' obtained its 3 credentials of the last hour; cached ones are still handed out"
        )
    );
    // A credential recorded before is no new one: it does not count and is not refused.
    assert!(
        !record(&mut broker, id, &token(4), "prj_web", 0)
            .await
            .unwrap()
    );
    // Another link's quota is its own.
    assert!(
        record(&mut broker, id, &token(6), "prj_docs", 0)
            .await
            .unwrap()
    );
    // Raising the quota lets the next one through; removing it, every one.
    admin
        .attach_project(pb::AttachProjectRequest {
            max_issuances_per_hour: 4,
            ..attach("web")
        })
        .await
        .unwrap();
    assert!(
        record(&mut broker, id, &token(7), "prj_web", 0)
            .await
            .unwrap()
    );
    assert!(
        record(&mut broker, id, &token(8), "prj_web", 0)
            .await
            .is_err()
    );
    admin.attach_project(attach("web")).await.unwrap();
    assert!(
        record(&mut broker, id, &token(9), "prj_web", 0)
            .await
            .unwrap()
    );
    // The refused ones are not in the ledger.
    let listed = admin
        .list_issuances(pb::ListIssuancesRequest {
            project: "prj_web".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .issuances;
    let mut ids: Vec<String> = listed.into_iter().map(|i| i.token_id).collect();
    ids.sort();
    let expected: Vec<String> = [0, 1, 2, 3, 4, 7, 9].into_iter().map(token).collect();
    assert_eq!(ids, expected);
}

async fn concurrent_records_never_exceed_the_quota(db: TestDb) {
    let (app, connector) = seeded(db).await;
    app.admin()
        .attach_project(pb::AttachProjectRequest {
            max_issuances_per_hour: 5,
            ..attach("web")
        })
        .await
        .unwrap();
    let calls = (0..24).map(|i| {
        let (mut broker, id) = (app.broker(), connector.id.clone());
        tokio::spawn(async move { record(&mut broker, &id, &token(100 + i), "prj_web", 0).await })
    });
    let mut recorded = 0;
    let mut exhausted = 0;
    for call in futures::future::join_all(calls).await {
        match call.unwrap() {
            Ok(true) => recorded += 1,
            Err(status) if status.code() == Code::ResourceExhausted => exhausted += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((recorded, exhausted), (5, 19));
}

async fn unused_links_are_found_from_the_ledger(db: TestDb) {
    let (app, connector) = seeded(db).await;
    let mut admin = app.admin();
    admin
        .create_project(pb::CreateProjectRequest {
            id: "prj_api".into(),
            name: "api".into(),
        })
        .await
        .unwrap();
    for project in ["web", "docs", "api"] {
        admin.attach_project(attach(project)).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let mut broker = app.broker();
    let id = connector.id.as_str();
    // web used just now; docs 40 days ago (and once more long before); api never.
    record(&mut broker, id, &token(1), "prj_web", 0)
        .await
        .unwrap();
    record(&mut broker, id, &token(2), "prj_docs", 40 * 86_400)
        .await
        .unwrap();
    record(&mut broker, id, &token(3), "prj_docs", 90 * 86_400)
        .await
        .unwrap();
    let unused = async |client: &mut Client, seconds: i64, page_size: i32| {
        let mut found = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_project_links(pb::ListProjectLinksRequest {
                    unused_for: Some(prost_types::Duration { seconds, nanos: 0 }),
                    page_size,
                    page_token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            found.extend(page.links);
            if page.next_page_token.is_empty() {
                break found;
            }
            page_token = page.next_page_token;
        }
    };
    let projects = |links: &[pb::ProjectLink]| {
        let mut p: Vec<String> = links.iter().map(|l| l.project_id.clone()).collect();
        p.sort();
        p
    };
    let mut viewer = app.client(&app.acme.viewer);
    let month = unused(&mut viewer, 30 * 86_400, 100).await;
    assert_eq!(projects(&month), ["prj_docs"]);
    let docs_used = month[0].last_issue_time.unwrap().seconds;
    assert!((chrono::Utc::now().timestamp() - 40 * 86_400 - docs_used).abs() < 5);
    // A second: docs, and api (never used, attached over a second ago), page by page.
    let second = unused(&mut viewer, 1, 1).await;
    assert_eq!(projects(&second), ["prj_api", "prj_docs"]);
    assert!(second.iter().any(|l| l.last_issue_time.is_none()));
    // A year: none.
    assert!(unused(&mut viewer, 365 * 86_400, 100).await.is_empty());
    // Bad durations are named.
    let refused = assert_error(
        viewer
            .list_project_links(pb::ListProjectLinksRequest {
                unused_for: Some(prost_types::Duration {
                    seconds: -5,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&refused), ["unused_for"]);
}

async fn create_env(admin: &mut Client, project: &str, slug: &str) -> pb::Environment {
    admin
        .create_environment(pb::CreateEnvironmentRequest {
            project: project.into(),
            slug: slug.into(),
            name: String::new(),
        })
        .await
        .expect("create environment")
        .into_inner()
}

fn authorize_in(environment: &str, connector: &str) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        owner_id: "team_acme".into(),
        project_id: "prj_web".into(),
        environment: environment.into(),
        issuer: crate::harness::ISSUER.into(),
        connector: connector.into(),
        installation_id: if connector.starts_with("oauth2/") {
            "acme".into()
        } else {
            String::new()
        },
    }
}

async fn custom_environments_are_named_by_id_or_slug_and_deleting_one_cleans_links(db: TestDb) {
    let (app, _) = seeded(db).await;
    let mut admin = app.admin();
    admin
        .create_connector(pb::CreateConnectorRequest {
            uid: "api-key/stripe".into(),
            secrets: [("api_key".to_owned(), "sk".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Created with an id; slugs checked; unique in the project, not across projects.
    let staging = create_env(&mut admin, "web", "staging").await;
    assert!(
        staging.id.starts_with("env_") && staging.id.len() == 28,
        "{staging:?}"
    );
    assert_eq!(
        (
            staging.slug.as_str(),
            staging.name.as_str(),
            staging.project.as_str()
        ),
        ("staging", "staging", "prj_web")
    );
    for (slug, field) in [("production", "slug"), ("Bad Slug", "slug"), ("", "slug")] {
        let refused = assert_error(
            admin
                .create_environment(pb::CreateEnvironmentRequest {
                    project: "web".into(),
                    slug: slug.into(),
                    name: "x".into(),
                })
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(violated_fields(&refused), [field], "{slug}");
    }
    assert_error(
        admin
            .create_environment(pb::CreateEnvironmentRequest {
                project: "web".into(),
                slug: "staging".into(),
                name: "again".into(),
            })
            .await,
        Code::AlreadyExists,
        "ALREADY_EXISTS",
    );
    let docs_staging = create_env(&mut admin, "docs", "staging").await;
    assert_ne!(docs_staging.id, staging.id);
    let mut viewer = app.client(&app.acme.viewer);
    let listed = viewer
        .list_environments(pb::ListEnvironmentsRequest {
            project: "prj_web".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .environments;
    assert_eq!(listed, std::slice::from_ref(&staging));
    assert_error(
        viewer
            .create_environment(pb::CreateEnvironmentRequest {
                project: "web".into(),
                slug: "qa".into(),
                name: String::new(),
            })
            .await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );

    // Links name it by slug or id and store the id; an unknown one is named.
    let only_staging = admin
        .attach_project(pb::AttachProjectRequest {
            environments: strings(&["staging"]),
            ..attach("web")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_staging.environments, std::slice::from_ref(&staging.id));
    let both = admin
        .attach_project(pb::AttachProjectRequest {
            connector: "api-key/stripe".into(),
            environments: strings(&[&staging.id, "preview", "staging"]),
            ..attach("web")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        both.environments,
        ["preview".to_owned(), staging.id.clone()]
    );
    let refused = assert_error(
        admin
            .attach_project(pb::AttachProjectRequest {
                environments: strings(&["preview", "qa", &docs_staging.id]),
                ..attach("web")
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&refused), ["environments", "environments"]);
    assert!(
        refused
            .message()
            .contains("project web has no environment 'qa'")
    );

    // A token's claim matches by slug or by id; the answer says which environment matched.
    let mut broker = app.broker();
    for claim in ["staging", staging.id.as_str()] {
        let answer = broker
            .authorize(authorize_in(claim, "oauth2/idp"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.environment_id, staging.id, "{claim}");
        assert_eq!(answer.owner_slug, "acme");
    }
    let preview = broker
        .authorize(authorize_in("preview", "api-key/stripe"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preview.environment_id, "preview");
    for claim in ["preview", "qa", docs_staging.id.as_str()] {
        assert_error(
            broker.authorize(authorize_in(claim, "oauth2/idp")).await,
            Code::PermissionDenied,
            "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
        );
    }
    let unknown = viewer
        .explain_access(pb::ExplainAccessRequest {
            environment: "qa".into(),
            installation_id: "acme".into(),
            ..explain(&[], "app", "acme")
        })
        .await
        .unwrap()
        .into_inner();
    let failed = unknown.checks.iter().find(|c| c.outcome == "fail").unwrap();
    assert_eq!(failed.detail, "project prj_web has no environment 'qa'");
    assert!(
        failed.fix.starts_with(
            "connect envs create qa --project prj_web, then connect attach oauth2/idp"
        ),
        "{failed:?}"
    );

    // A rename keeps the links (ids); tokens naming the old slug no longer match.
    let renamed = admin
        .update_environment(pb::UpdateEnvironmentRequest {
            project: "web".into(),
            environment: "staging".into(),
            slug: "stage".into(),
            name: "Stage".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (renamed.id.as_str(), renamed.slug.as_str()),
        (staging.id.as_str(), "stage")
    );
    assert_error(
        broker
            .authorize(authorize_in("staging", "oauth2/idp"))
            .await,
        Code::PermissionDenied,
        "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
    );
    broker
        .authorize(authorize_in("stage", "oauth2/idp"))
        .await
        .expect("the new slug matches");
    assert_error(
        admin
            .update_environment(pb::UpdateEnvironmentRequest {
                project: "web".into(),
                environment: "preview".into(),
                slug: "pre".into(),
                name: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );

    // Deleting takes it out of every link and removes the links it was the last one of.
    let deleted = admin
        .delete_environment(pb::DeleteEnvironmentRequest {
            project: "web".into(),
            environment: "stage".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.environment.unwrap().id, staging.id);
    let uids = |links: &[pb::ProjectLink]| {
        links
            .iter()
            .map(|l| (l.connector_uid.clone(), l.environments.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        uids(&deleted.updated_links),
        [("api-key/stripe".to_owned(), vec!["preview".to_owned()])]
    );
    assert_eq!(uids(&deleted.removed_links).len(), 1);
    assert_eq!(deleted.removed_links[0].connector_uid, "oauth2/idp");
    assert_error(
        admin
            .get_project_link(pb::GetProjectLinkRequest {
                connector: "oauth2/idp".into(),
                project: "web".into(),
            })
            .await,
        Code::NotFound,
        "PROJECT_LINK_NOT_FOUND",
    );
    let kept = admin
        .get_project_link(pb::GetProjectLinkRequest {
            connector: "api-key/stripe".into(),
            project: "web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.environments, ["preview"]);
    assert_error(
        admin
            .delete_environment(pb::DeleteEnvironmentRequest {
                project: "web".into(),
                environment: "stage".into(),
            })
            .await,
        Code::NotFound,
        "ENVIRONMENT_NOT_FOUND",
    );
    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events[0].action, "environment.delete");
    let after = format!("{:?}", events[0].after);
    assert!(
        after.contains("links_removed") && after.contains("oauth2/idp"),
        "{after}"
    );
    // The other project's environment of the same slug is untouched.
    let docs = viewer
        .list_environments(pb::ListEnvironmentsRequest {
            project: "docs".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .environments;
    assert_eq!(docs, [docs_staging]);
}
