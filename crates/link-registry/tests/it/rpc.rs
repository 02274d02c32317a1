//! Every `LinkRegistry` RPC through a real server, on every backend: roles, tenant isolation,
//! validation, pagination, audit, concurrency and restarts.

use std::collections::HashSet;

use connect_proto::registry::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::{
    Client, ISSUER, OTHER_ISSUER, TestApp, TestDb, assert_error, violated_fields,
};

async fn create_project(client: &mut Client, id: &str, name: &str) -> pb::Project {
    client
        .create_project(pb::CreateProjectRequest {
            id: id.into(),
            name: name.into(),
        })
        .await
        .expect("create project")
        .into_inner()
}

async fn create_connector(client: &mut Client, uid: &str, api_key: &str) -> pb::Connector {
    client
        .create_connector(pb::CreateConnectorRequest {
            uid: uid.into(),
            config: [("region".to_owned(), "eu".to_owned())].into(),
            secrets: [("api_key".to_owned(), api_key.to_owned())].into(),
            ..Default::default()
        })
        .await
        .expect("create connector")
        .into_inner()
}

async fn attach(
    client: &mut Client,
    connector: &str,
    project: &str,
    envs: &[&str],
) -> pb::ProjectLink {
    client
        .attach_project(pb::AttachProjectRequest {
            connector: connector.into(),
            project: project.into(),
            environments: envs.iter().map(|e| e.to_string()).collect(),
            expire_time: None,
            ..Default::default()
        })
        .await
        .expect("attach")
        .into_inner()
}

fn authorize(team: &str, project: &str, env: &str, connector: &str) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        owner_id: team.into(),
        project_id: project.into(),
        environment: env.into(),
        issuer: ISSUER.into(),
        connector: connector.into(),
        ..Default::default()
    }
}

/// A team with project `prj_web` (`web`), connector `api-key/stripe` and a link for preview.
async fn seeded(db: TestDb) -> (TestApp, pb::Connector) {
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    create_project(&mut admin, "prj_web", "web").await;
    let connector = create_connector(&mut admin, "api-key/stripe", "sk_test_51Hx").await;
    attach(&mut admin, "api-key/stripe", "web", &["preview"]).await;
    (app, connector)
}

crate::on_every_backend!(
    the_documented_sequence_answers_as_the_contract_says,
    calls_without_one_valid_bearer_key_are_unauthenticated,
    viewers_read_but_cannot_write,
    broker_keys_may_call_only_authorize,
    each_service_refuses_the_other_services_keys_on_every_rpc,
    connector_types_answer_the_capability_table_to_admins_and_viewers,
    one_team_can_neither_see_nor_change_another,
    authorize_checks_issuer_then_connector_then_link_then_environment,
    no_admin_rpc_ever_returns_a_secret,
    attach_replaces_the_environment_set,
    detach_removes_only_the_link,
    deleting_a_connector_removes_its_links,
    update_connector_changes_only_the_masked_fields,
    duplicates_are_already_exists,
    invalid_fields_are_named_in_bad_request,
    lists_page_through_every_row_exactly_once,
    link_pages_stay_exact_while_links_change_between_them,
    every_change_is_audited_newest_first,
    fifty_concurrent_attaches_leave_exactly_one_link,
    data_survives_a_restart,
    a_suspended_connector_authorizes_nothing_until_resumed,
    explain_access_walks_the_decision_and_names_each_fix,
    a_time_boxed_link_stops_authorizing_at_its_expiry,
);

async fn a_time_boxed_link_stops_authorizing_at_its_expiry(db: TestDb) {
    let (app, _) = seeded(db).await;
    let (mut admin, mut broker) = (app.admin(), app.broker());
    let at = |seconds: i64| {
        Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() + seconds,
            nanos: 0,
        })
    };
    let timed = |expire_time| pb::AttachProjectRequest {
        connector: "api-key/stripe".into(),
        project: "prj_web".into(),
        environments: vec!["preview".into()],
        expire_time,
        ..Default::default()
    };
    // A time in the past is refused, and changes nothing.
    let status = assert_error(
        admin.attach_project(timed(at(-60))).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["expire_time"]);
    let ends = at(2);
    let link = admin
        .attach_project(timed(ends))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(link.expire_time, ends);
    let listed = admin
        .list_project_links(pb::ListProjectLinksRequest {
            connector: "api-key/stripe".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(listed[0].expire_time, ends);
    let ask = || authorize("team_acme", "prj_web", "preview", "api-key/stripe");
    broker.authorize(ask()).await.unwrap();
    let explained = admin
        .explain_access(explain("prj_web", "preview", "api-key/stripe"))
        .await
        .unwrap()
        .into_inner();
    assert!(explained.allowed);
    assert!(
        explained.checks[4]
            .detail
            .starts_with("the link expires at "),
        "{explained:?}"
    );

    // Past its end: refused, without any write; still listed.
    tokio::time::sleep(std::time::Duration::from_millis(2300)).await;
    let status = assert_error(
        broker.authorize(ask()).await,
        Code::PermissionDenied,
        "LINK_EXPIRED",
    );
    assert!(
        status
            .message()
            .starts_with("LinkExpiredError: the link of connector 'api-key/stripe' to project 'prj_web' expired at "),
        "{status:?}"
    );
    let explained = admin
        .explain_access(explain("prj_web", "preview", "api-key/stripe"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explained.reason, "LINK_EXPIRED");
    assert_eq!(
        (
            explained.checks[4].name.as_str(),
            explained.checks[4].outcome.as_str()
        ),
        ("link_expiry", "fail")
    );
    assert_eq!(
        explained.checks[4].fix,
        "connect attach api-key/stripe --project prj_web -e preview --for 8h (or without --for: no expiry)"
    );
    let listed = admin
        .get_project_link(pb::GetProjectLinkRequest {
            connector: "api-key/stripe".into(),
            project: "prj_web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.expire_time, ends);

    // Attached again without an end: permanent, and audited with the end it had.
    let permanent = admin
        .attach_project(timed(None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(permanent.expire_time, None);
    broker.authorize(ask()).await.unwrap();
    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            action: "project.attach".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let field = |s: &Option<prost_types::Struct>| {
        s.as_ref()
            .and_then(|s| s.fields.get("expires_at"))
            .and_then(|v| v.kind.clone())
    };
    assert!(matches!(
        field(&events[0].before),
        Some(prost_types::value::Kind::StringValue(_))
    ));
    assert_eq!(
        field(&events[0].after),
        Some(prost_types::value::Kind::NullValue(0))
    );
    assert_eq!(
        events.len(),
        3,
        "the first attach, the time-boxed one, the permanent one"
    );
}

fn explain(project: &str, env: &str, connector: &str) -> pb::ExplainAccessRequest {
    pb::ExplainAccessRequest {
        project: project.into(),
        environment: env.into(),
        connector: connector.into(),
        ..Default::default()
    }
}

/// `(name, outcome)` of every check, and the failed one's detail and fix.
type Outcomes<'a> = (Vec<(&'a str, &'a str)>, Option<(&'a str, &'a str)>);

fn outcomes(answer: &pb::ExplainAccessResponse) -> Outcomes<'_> {
    let all = answer
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.outcome.as_str()))
        .collect();
    let failed = answer
        .checks
        .iter()
        .find(|c| c.outcome == "fail")
        .map(|c| (c.detail.as_str(), c.fix.as_str()));
    (all, failed)
}

async fn explain_access_walks_the_decision_and_names_each_fix(db: TestDb) {
    const NAMES: [&str; 9] = [
        "team",
        "connector",
        "link",
        "environment",
        "link_expiry",
        "connector_active",
        "installation",
        "ceilings",
        "type_rules",
    ];
    let (app, _) = seeded(db).await;
    let (mut admin, mut broker) = (app.admin(), app.broker());
    // Each case: what is asked, then the reason and the first failing check (None: allowed).
    let mut ask = async |request: pb::ExplainAccessRequest| {
        let answer = app
            .client(&app.acme.viewer)
            .explain_access(request.clone())
            .await
            .unwrap()
            .into_inner();
        let names: Vec<&str> = answer.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, NAMES, "{answer:?}");
        // The broker's `Authorize` agrees wherever the registry decides alone.
        let decided = broker
            .authorize(pb::AuthorizeRequest {
                installation_id: request.installation_id.clone(),
                ..authorize(
                    "team_acme",
                    &request.project,
                    &request.environment,
                    &request.connector,
                )
            })
            .await;
        if answer.checks[7].outcome != "fail" && answer.checks[8].outcome != "fail" {
            match &decided {
                Ok(_) => assert!(answer.allowed, "{answer:?}"),
                Err(status) => assert_eq!(
                    status.get_details_error_info().unwrap().reason,
                    answer.reason
                ),
            }
        }
        answer
    };

    let allowed = ask(explain("prj_web", "preview", "api-key/stripe")).await;
    assert!(allowed.allowed && allowed.reason.is_empty(), "{allowed:?}");
    assert!(
        allowed
            .checks
            .iter()
            .all(|c| c.outcome == "pass" && c.fix.is_empty())
    );
    assert!(allowed.checks[3].detail.contains("preview"), "{allowed:?}");

    let env = ask(explain("prj_web", "production", "api-key/stripe")).await;
    assert_eq!(env.reason, "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT");
    let (checks, failed) = outcomes(&env);
    assert_eq!(
        checks,
        [
            ("team", "pass"),
            ("connector", "pass"),
            ("link", "pass"),
            ("environment", "fail"),
            ("link_expiry", "skip"),
            ("connector_active", "skip"),
            ("installation", "skip"),
            ("ceilings", "skip"),
            ("type_rules", "skip"),
        ]
    );
    assert_eq!(
        failed,
        Some((
            "the link enables preview only, not production",
            "connect attach api-key/stripe --project prj_web -e preview,production"
        ))
    );

    let unlinked = ask(explain("prj_nowhere", "preview", "api-key/stripe")).await;
    assert_eq!(unlinked.reason, "CLIENT_NOT_LINKED_TO_PROJECT");
    assert_eq!(
        outcomes(&unlinked).1.unwrap().1,
        "connect attach api-key/stripe --project prj_nowhere -e preview"
    );
    let unknown = ask(explain("prj_web", "preview", "api-key/nope")).await;
    assert_eq!(unknown.reason, "CONNECTOR_NOT_FOUND");
    assert_eq!(outcomes(&unknown).0[1], ("connector", "fail"));
    let installation = ask(pb::ExplainAccessRequest {
        installation_id: "inst_9".into(),
        ..explain("prj_web", "preview", "api-key/stripe")
    })
    .await;
    assert_eq!(installation.reason, "INSTALLATION_NOT_FOUND");
    assert_eq!(outcomes(&installation).0[6], ("installation", "fail"));
    // The type's rules, which the broker applies: an api-key connector issues for the app only
    // (and a project may be named by its name).
    let user = app
        .admin()
        .explain_access(pb::ExplainAccessRequest {
            subject: "user:ada".into(),
            ..explain("web", "preview", "api-key/stripe")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.reason, "USER_AUTHORIZATION_REQUIRED");
    assert_eq!(outcomes(&user).0[8], ("type_rules", "fail"));

    admin
        .update_connector(pb::UpdateConnectorRequest {
            connector: "api-key/stripe".into(),
            suspended: true,
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["suspended".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let suspended = ask(explain("prj_web", "preview", "api-key/stripe")).await;
    assert_eq!(suspended.reason, "CONNECTOR_SUSPENDED");
    assert_eq!(
        outcomes(&suspended).1,
        Some((
            "api-key/stripe is suspended: it issues nothing",
            "connect resume api-key/stripe"
        ))
    );

    // Bad input names its fields; another team's connector is unknown; nothing was audited.
    let status = assert_error(
        admin
            .explain_access(pb::ExplainAccessRequest {
                subject: "robot".into(),
                ..explain("web", "Staging", "api-key/stripe")
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["environment", "subject"]);
    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        events[0].action, "connector.update",
        "explaining writes nothing"
    );
}

async fn a_suspended_connector_authorizes_nothing_until_resumed(db: TestDb) {
    let (app, connector) = seeded(db).await;
    assert!(!connector.suspended);
    let (mut admin, mut broker) = (app.admin(), app.broker());
    let set = |suspended: bool| pb::UpdateConnectorRequest {
        connector: "api-key/stripe".into(),
        suspended,
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["suspended".into()],
        }),
        ..Default::default()
    };
    let suspended = admin
        .update_connector(set(true))
        .await
        .unwrap()
        .into_inner();
    assert!(suspended.suspended);
    assert_eq!(suspended.secret_names, ["api_key"], "nothing else changed");
    let status = assert_error(
        broker
            .authorize(authorize(
                "team_acme",
                "prj_web",
                "preview",
                "api-key/stripe",
            ))
            .await,
        Code::FailedPrecondition,
        "CONNECTOR_SUSPENDED",
    );
    assert_eq!(
        status.message(),
        "ConnectorSuspendedError: connector 'api-key/stripe' is suspended"
    );
    // Earlier checks still come first: a suspended connector tells nothing to an unlinked project.
    assert_error(
        broker
            .authorize(authorize(
                "team_acme",
                "prj_other",
                "preview",
                "api-key/stripe",
            ))
            .await,
        Code::PermissionDenied,
        "CLIENT_NOT_LINKED_TO_PROJECT",
    );
    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events[0].action, "connector.update");
    let flag = |s: &Option<prost_types::Struct>| {
        s.as_ref().and_then(|s| s.fields.get("suspended")).cloned()
    };
    assert_eq!(
        flag(&events[0].before).and_then(|v| v.kind),
        Some(prost_types::value::Kind::BoolValue(false))
    );
    assert_eq!(
        flag(&events[0].after).and_then(|v| v.kind),
        Some(prost_types::value::Kind::BoolValue(true))
    );
    let resumed = admin
        .update_connector(set(false))
        .await
        .unwrap()
        .into_inner();
    assert!(!resumed.suspended);
    broker
        .authorize(authorize(
            "team_acme",
            "prj_web",
            "preview",
            "api-key/stripe",
        ))
        .await
        .expect("resumed connectors authorize again");
    app.stop().await;
}

async fn the_documented_sequence_answers_as_the_contract_says(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    let mut broker = app.broker();

    let project = create_project(&mut admin, "prj_9f8e", "web").await;
    assert_eq!(
        (project.id.as_str(), project.owner_id.as_str()),
        ("prj_9f8e", "team_acme")
    );
    let connector = create_connector(&mut admin, "api-key/stripe", "sk_live_abc").await;
    assert!(connector.id.starts_with("conn_"));
    assert_eq!(
        (connector.r#type.as_str(), connector.name.as_str()),
        ("api-key", "stripe")
    );
    assert_eq!(connector.secret_names, ["api_key"]);

    let link = attach(&mut admin, "api-key/stripe", "prj_9f8e", &["development"]).await;
    assert_eq!(link.environments, ["development"]);
    assert_eq!(
        (link.connector_id.as_str(), link.project_name.as_str()),
        (connector.id.as_str(), "web")
    );

    let links = admin
        .list_project_links(pb::ListProjectLinksRequest {
            connector: "api-key/stripe".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(links.links, std::slice::from_ref(&link));
    assert!(links.next_page_token.is_empty());

    let granted = broker
        .authorize(authorize(
            "team_acme",
            "prj_9f8e",
            "development",
            "api-key/stripe",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.secrets["api_key"], "sk_live_abc");
    assert_eq!(granted.connector.unwrap().id, connector.id);
    assert_eq!(granted.link.unwrap(), link);

    let status = assert_error(
        broker
            .authorize(authorize(
                "team_acme",
                "prj_9f8e",
                "production",
                "api-key/stripe",
            ))
            .await,
        Code::PermissionDenied,
        "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
    );
    assert!(
        status
            .message()
            .starts_with("ClientNotEnabledForEnvironmentError")
    );

    let detached = admin
        .detach_project(pb::DetachProjectRequest {
            connector: "api-key/stripe".into(),
            project: "prj_9f8e".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detached.link.unwrap(), link);

    let status = assert_error(
        broker
            .authorize(authorize(
                "team_acme",
                "prj_9f8e",
                "development",
                "api-key/stripe",
            ))
            .await,
        Code::PermissionDenied,
        "CLIENT_NOT_LINKED_TO_PROJECT",
    );
    assert!(
        status
            .message()
            .starts_with("ClientNotLinkedToProjectError")
    );

    // Health reports SERVING once the server is ready.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel());
    for service in [
        "",
        "connect.registry.v1.LinkRegistry",
        "connect.registry.v1.RegistryRuntime",
    ] {
        // Readiness follows the first database ping, moments after the listener opens.
        let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
        let mut status = 0;
        for _ in 0..250 {
            status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            if status == serving {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(status, serving, "{service}");
    }
    app.stop().await;
}

async fn calls_without_one_valid_bearer_key_are_unauthenticated(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let request = || pb::ListProjectsRequest::default();
    assert_error(
        app.anonymous().list_projects(request()).await,
        Code::Unauthenticated,
        "INVALID_KEY",
    );
    assert_error(
        app.client("cnk_not_a_key").list_projects(request()).await,
        Code::Unauthenticated,
        "INVALID_KEY",
    );

    let mut basic = tonic::Request::new(request());
    basic.metadata_mut().insert(
        "authorization",
        format!("Basic {}", app.acme.admin).parse().unwrap(),
    );
    assert_error(
        app.anonymous().list_projects(basic).await,
        Code::Unauthenticated,
        "INVALID_KEY",
    );

    let mut two = tonic::Request::new(request());
    two.metadata_mut().append(
        "authorization",
        format!("Bearer {}", app.acme.admin).parse().unwrap(),
    );
    two.metadata_mut().append(
        "authorization",
        format!("Bearer {}", app.acme.admin).parse().unwrap(),
    );
    assert_error(
        app.anonymous().list_projects(two).await,
        Code::Unauthenticated,
        "INVALID_KEY",
    );

    assert!(app.admin().list_projects(request()).await.is_ok());
}

async fn viewers_read_but_cannot_write(db: TestDb) {
    let (app, connector) = seeded(db).await;
    let mut viewer = app.client(&app.acme.viewer);
    assert_eq!(
        viewer
            .list_projects(pb::ListProjectsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .projects
            .len(),
        1
    );
    let read = viewer
        .get_connector(pb::GetConnectorRequest {
            connector: connector.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read, connector);
    viewer
        .get_project(pb::GetProjectRequest {
            project: "web".into(),
        })
        .await
        .unwrap();
    viewer
        .get_project_link(pb::GetProjectLinkRequest {
            connector: "api-key/stripe".into(),
            project: "web".into(),
        })
        .await
        .unwrap();
    viewer
        .list_connectors(pb::ListConnectorsRequest::default())
        .await
        .unwrap();
    viewer
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap();

    let denied = |r| assert_error(r, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    denied(
        viewer
            .create_project(pb::CreateProjectRequest {
                id: "prj_x".into(),
                name: "x".into(),
            })
            .await
            .map(|r| r.map(drop)),
    );
    denied(
        viewer
            .create_connector(pb::CreateConnectorRequest {
                uid: "api-key/x".into(),
                ..Default::default()
            })
            .await
            .map(|r| r.map(drop)),
    );
    denied(
        viewer
            .attach_project(pb::AttachProjectRequest {
                connector: "api-key/stripe".into(),
                project: "web".into(),
                environments: vec!["production".into()],
                expire_time: None,
                ..Default::default()
            })
            .await
            .map(|r| r.map(drop)),
    );
    denied(
        viewer
            .detach_project(pb::DetachProjectRequest {
                connector: "api-key/stripe".into(),
                project: "web".into(),
            })
            .await
            .map(|r| r.map(drop)),
    );
    denied(
        viewer
            .delete_connector(pb::DeleteConnectorRequest {
                connector: "api-key/stripe".into(),
            })
            .await
            .map(|r| r.map(drop)),
    );
    denied(
        viewer
            .update_connector(pb::UpdateConnectorRequest {
                connector: "api-key/stripe".into(),
                name: "n".into(),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".into()],
                }),
                ..Default::default()
            })
            .await
            .map(|r| r.map(drop)),
    );
    denied(
        app.runtime(&app.acme.viewer)
            .authorize(authorize(
                "team_acme",
                "prj_web",
                "preview",
                "api-key/stripe",
            ))
            .await
            .map(|r| r.map(drop)),
    );

    // Nothing changed.
    let link = app
        .admin()
        .get_project_link(pb::GetProjectLinkRequest {
            connector: "api-key/stripe".into(),
            project: "web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(link.environments, ["preview"]);
}

/// The fully-qualified method paths of one of the registry's services, from the descriptor set
/// that reflection serves.
fn methods_of(service: &str) -> Vec<String> {
    use connect_proto::prost::Message;
    let set =
        connect_proto::prost_types::FileDescriptorSet::decode(connect_proto::FILE_DESCRIPTOR_SET)
            .unwrap();
    set.file
        .iter()
        .filter(|f| f.package() == "connect.registry.v1")
        .flat_map(|f| &f.service)
        .filter(|s| s.name() == service)
        .flat_map(|s| &s.method)
        .map(|m| format!("/connect.registry.v1.{service}/{}", m.name()))
        .collect()
}

/// Calls `path` with an empty request message, presenting `key`.
async fn call_empty(
    channel: tonic::transport::Channel,
    path: &str,
    key: &str,
) -> Result<tonic::Response<()>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(path).unwrap();
    grpc.unary(request, path, tonic_prost::ProstCodec::<(), ()>::default())
        .await
}

async fn each_service_refuses_the_other_services_keys_on_every_rpc(db: TestDb) {
    let (app, _) = seeded(db).await;
    let admin_api = methods_of("LinkRegistry");
    let runtime_api = methods_of("RegistryRuntime");
    assert!(admin_api.len() >= 20, "{admin_api:?}");
    assert_eq!(runtime_api.len(), 14, "{runtime_api:?}");
    // Each refusal names the service the key belongs on.
    let refused = [
        (
            &admin_api,
            vec![app.broker.clone()],
            "keys call connect.registry.v1.RegistryRuntime",
        ),
        (
            &runtime_api,
            vec![app.acme.admin.clone(), app.acme.viewer.clone()],
            "keys call connect.registry.v1.LinkRegistry",
        ),
    ];
    for (methods, keys, hint) in refused {
        for path in methods {
            // Any valid credential may ask who it is (below).
            if path.ends_with("/WhoAmI") {
                continue;
            }
            for key in &keys {
                let status = assert_error(
                    call_empty(app.channel(), path, key).await,
                    Code::PermissionDenied,
                    "ROLE_NOT_ALLOWED",
                );
                assert!(
                    status.message().starts_with("RoleNotAllowedError: a ")
                        && status.message().ends_with(hint),
                    "{path}: {status:?}"
                );
            }
            // An unknown key is unauthenticated on both.
            assert_error(
                call_empty(app.channel(), path, "not-a-key").await,
                Code::Unauthenticated,
                "INVALID_KEY",
            );
        }
    }
    // WhoAmI answers every valid key, with its role; an unknown key is unauthenticated.
    for (key, role) in [
        (&app.acme.admin, "admin"),
        (&app.acme.viewer, "viewer"),
        (&app.broker, ""),
    ] {
        let who = app
            .client(key)
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(who.kind, "api_key");
        assert!(who.actor.starts_with("key:key_"), "{who:?}");
        assert_eq!(who.actor, format!("key:{}", who.key_id));
        match role {
            "" => assert!(who.teams.is_empty(), "a broker key of every team: {who:?}"),
            role => {
                assert_eq!(who.teams.len(), 1);
                assert_eq!(
                    (who.teams[0].team_id.as_str(), who.teams[0].role.as_str()),
                    ("team_acme", role)
                );
            }
        }
    }
    assert_error(
        app.client("not-a-key").who_am_i(pb::WhoAmIRequest {}).await,
        Code::Unauthenticated,
        "INVALID_KEY",
    );
    // The broker-only RPCs are gone from the admin API.
    for rpc in ["Authorize", "WatchChanges", "LeaseGrant", "RecordIssuance"] {
        assert!(!admin_api.iter().any(|m| m.ends_with(&format!("/{rpc}"))));
        let status = call_empty(
            app.channel(),
            &format!("/connect.registry.v1.LinkRegistry/{rpc}"),
            &app.broker,
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{rpc}: {status:?}");
    }
    app.stop().await;
}

async fn connector_types_answer_the_capability_table_to_admins_and_viewers(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let admin = app
        .admin()
        .list_connector_types(pb::ListConnectorTypesRequest {})
        .await
        .unwrap()
        .into_inner()
        .types;
    let viewer = app
        .client(&app.acme.viewer)
        .list_connector_types(pb::ListConnectorTypesRequest {})
        .await
        .unwrap()
        .into_inner()
        .types;
    assert_eq!(admin, viewer);
    let kinds: Vec<&str> = admin.iter().map(|t| t.r#type.as_str()).collect();
    assert_eq!(
        kinds,
        ["api-key", "oauth2", "github", "aws", "gcp", "azure"]
    );

    let api_key = &admin[0];
    assert_eq!(api_key.subjects, ["app"]);
    assert_eq!(api_key.installations, "optional");
    assert!(!api_key.revocation && !api_key.resources && !api_key.cross_installation);
    assert_eq!(api_key.secret_keys, ["api_key"]);
    assert_eq!(api_key.required_secret_keys, ["api_key"]);
    assert_eq!(
        api_key.config_keys,
        ["proxy_base_url", "proxy_auth", "proxy_basic_user"]
    );

    let oauth2 = &admin[1];
    assert_eq!(oauth2.subjects, ["app", "user", "jwt_bearer", "token"]);
    assert!(oauth2.revocation);
    assert_eq!(oauth2.revocation_config_key, "revocation_url");
    assert_eq!(oauth2.required_config_keys, ["token_url"]);
    assert!(oauth2.config_keys.contains(&"authorize_url".to_owned()));
    assert!(oauth2.secret_keys.contains(&"assertion_key".to_owned()));
    assert!(oauth2.key_descriptions["token_url"].contains("token endpoint"));

    let github = &admin[2];
    assert_eq!(github.subjects, ["app"]);
    assert_eq!(github.installations, "required");
    assert!(github.resources && github.revocation);
    assert_eq!(github.revocation_config_key, "");
    assert_eq!(github.required_config_keys, ["app_id"]);
    assert_eq!(github.required_secret_keys, ["private_key"]);

    // The clouds store no secret: Connect mints what they trust.
    for (cloud, required) in [
        (&admin[3], vec!["role_arn"]),
        (&admin[4], vec!["audience"]),
        (&admin[5], vec!["tenant_id", "client_id"]),
    ] {
        assert!(cloud.secret_keys.is_empty(), "{}", cloud.r#type);
        assert_eq!(cloud.required_config_keys, required, "{}", cloud.r#type);
        assert_eq!(cloud.subjects, ["app"]);
        assert!(!cloud.revocation);
    }

    assert_error(
        app.anonymous()
            .list_connector_types(pb::ListConnectorTypesRequest {})
            .await,
        Code::Unauthenticated,
        "INVALID_KEY",
    );
    app.stop().await;
}

async fn broker_keys_may_call_only_authorize(db: TestDb) {
    let (app, _) = seeded(db).await;
    let mut broker = app.broker();
    let mut broker_on_admin = app.client(&app.broker);
    let denied = |r| assert_error(r, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    denied(
        broker_on_admin
            .list_projects(pb::ListProjectsRequest::default())
            .await
            .map(|r| r.map(drop)),
    );
    denied(
        broker_on_admin
            .get_connector(pb::GetConnectorRequest {
                connector: "api-key/stripe".into(),
            })
            .await
            .map(|r| r.map(drop)),
    );
    denied(
        broker_on_admin
            .list_audit_events(pb::ListAuditEventsRequest::default())
            .await
            .map(|r| r.map(drop)),
    );
    denied(
        broker_on_admin
            .create_project(pb::CreateProjectRequest {
                id: "prj_x".into(),
                name: "x".into(),
            })
            .await
            .map(|r| r.map(drop)),
    );
    assert!(
        broker
            .authorize(authorize(
                "team_acme",
                "prj_web",
                "preview",
                "api-key/stripe"
            ))
            .await
            .is_ok()
    );
    // Admins may not ask for decrypted secrets.
    denied(
        app.runtime(&app.acme.admin)
            .authorize(authorize(
                "team_acme",
                "prj_web",
                "preview",
                "api-key/stripe",
            ))
            .await
            .map(|r| r.map(drop)),
    );
}

async fn one_team_can_neither_see_nor_change_another(db: TestDb) {
    let (app, acme_connector) = seeded(db).await;
    let globex = app.new_team("team_globex", "globex", OTHER_ISSUER).await;
    let mut other = app.client(&globex.admin);
    create_project(&mut other, "prj_globex", "shop").await;
    create_connector(&mut other, "api-key/other", "sk_other").await;

    // Globex sees only its own rows.
    let projects = other
        .list_projects(pb::ListProjectsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .projects;
    assert_eq!(
        projects.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["prj_globex"]
    );
    let connectors = other
        .list_connectors(pb::ListConnectorsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .connectors;
    assert_eq!(
        connectors
            .iter()
            .map(|c| c.uid.as_str())
            .collect::<Vec<_>>(),
        ["api-key/other"]
    );
    assert!(
        other
            .list_project_links(pb::ListProjectLinksRequest::default())
            .await
            .unwrap()
            .into_inner()
            .links
            .is_empty()
    );
    let events = other
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        events.iter().all(|e| e.owner_id == "team_globex"),
        "{events:?}"
    );

    // Acme's ids are simply not found for Globex, by id and by uid or name.
    for connector in [acme_connector.id.as_str(), "api-key/stripe"] {
        assert_error(
            other
                .get_connector(pb::GetConnectorRequest {
                    connector: connector.into(),
                })
                .await,
            Code::NotFound,
            "CONNECTOR_NOT_FOUND",
        );
        assert_error(
            other
                .delete_connector(pb::DeleteConnectorRequest {
                    connector: connector.into(),
                })
                .await,
            Code::NotFound,
            "CONNECTOR_NOT_FOUND",
        );
        assert_error(
            other
                .update_connector(pb::UpdateConnectorRequest {
                    connector: connector.into(),
                    name: "mine".into(),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["name".into()],
                    }),
                    ..Default::default()
                })
                .await,
            Code::NotFound,
            "CONNECTOR_NOT_FOUND",
        );
        assert_error(
            other
                .attach_project(pb::AttachProjectRequest {
                    connector: connector.into(),
                    project: "prj_globex".into(),
                    environments: vec!["production".into()],
                    expire_time: None,
                    ..Default::default()
                })
                .await,
            Code::NotFound,
            "CONNECTOR_NOT_FOUND",
        );
    }
    for project in ["prj_web", "web"] {
        assert_error(
            other
                .get_project(pb::GetProjectRequest {
                    project: project.into(),
                })
                .await,
            Code::NotFound,
            "PROJECT_NOT_FOUND",
        );
        assert_error(
            other
                .attach_project(pb::AttachProjectRequest {
                    connector: "api-key/other".into(),
                    project: project.into(),
                    environments: vec!["production".into()],
                    expire_time: None,
                    ..Default::default()
                })
                .await,
            Code::NotFound,
            "PROJECT_NOT_FOUND",
        );
    }
    // The same project id and connector uid are free to use in another team.
    create_project(&mut other, "prj_web", "web").await;
    create_connector(&mut other, "api-key/stripe", "sk_globex").await;
    attach(&mut other, "api-key/stripe", "prj_web", &["production"]).await;

    // Acme's link and secret are untouched by Globex's same-named rows.
    let granted = app
        .broker()
        .authorize(authorize(
            "team_acme",
            "prj_web",
            "preview",
            "api-key/stripe",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.secrets["api_key"], "sk_test_51Hx");
    assert_error(
        app.broker()
            .authorize(authorize(
                "team_acme",
                "prj_web",
                "production",
                "api-key/stripe",
            ))
            .await,
        Code::PermissionDenied,
        "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
    );
}

async fn authorize_checks_issuer_then_connector_then_link_then_environment(db: TestDb) {
    let (app, connector) = seeded(db).await;
    let globex = app.new_team("team_globex", "globex", OTHER_ISSUER).await;
    create_connector(&mut app.client(&globex.admin), "api-key/globex-only", "sk").await;
    let mut broker = app.broker();

    // Issuer first: a wrong issuer fails even for an unknown connector.
    let mut wrong_issuer = authorize("team_acme", "prj_web", "preview", "api-key/nope");
    wrong_issuer.issuer = OTHER_ISSUER.into();
    let status = assert_error(
        broker.authorize(wrong_issuer).await,
        Code::Unauthenticated,
        "ISSUER_NOT_TRUSTED",
    );
    assert!(status.message().starts_with("IssuerNotTrustedError"));
    assert_error(
        broker
            .authorize(authorize(
                "team_unknown",
                "prj_web",
                "preview",
                "api-key/stripe",
            ))
            .await,
        Code::Unauthenticated,
        "ISSUER_NOT_TRUSTED",
    );
    // Then the connector, in the token's team only.
    let status = assert_error(
        broker
            .authorize(authorize(
                "team_acme",
                "prj_nolink",
                "production",
                "api-key/nope",
            ))
            .await,
        Code::NotFound,
        "CONNECTOR_NOT_FOUND",
    );
    assert!(status.message().starts_with("ConnectorNotFoundError"));
    assert_error(
        broker
            .authorize(authorize(
                "team_acme",
                "prj_web",
                "preview",
                "api-key/globex-only",
            ))
            .await,
        Code::NotFound,
        "CONNECTOR_NOT_FOUND",
    );
    // Then the link, then the environment.
    assert_error(
        broker
            .authorize(authorize(
                "team_acme",
                "prj_unregistered",
                "production",
                "api-key/stripe",
            ))
            .await,
        Code::PermissionDenied,
        "CLIENT_NOT_LINKED_TO_PROJECT",
    );
    assert_error(
        broker
            .authorize(authorize(
                "team_acme",
                "prj_web",
                "production",
                &connector.id,
            ))
            .await,
        Code::PermissionDenied,
        "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
    );
    // By id as by uid.
    let granted = broker
        .authorize(authorize("team_acme", "prj_web", "preview", &connector.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.connector.unwrap().uid, "api-key/stripe");
    // Malformed requests are rejected before any lookup.
    let status = assert_error(
        broker
            .authorize(authorize(
                "team_acme",
                "prj_web",
                "Staging",
                "api-key/stripe",
            ))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["environment"]);
    let empty = pb::AuthorizeRequest {
        environment: "preview".into(),
        ..Default::default()
    };
    let status = assert_error(
        broker.authorize(empty).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        violated_fields(&status),
        ["owner_id", "project_id", "issuer", "connector"]
    );
}

/// The `Debug` text of an answer, to search it for leaks.
fn shown(answer: impl std::fmt::Debug) -> String {
    format!("{answer:?}")
}

async fn no_admin_rpc_ever_returns_a_secret(db: TestDb) {
    const SECRET: &str = "sk_live_must_never_leak_9c1f";
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    create_project(&mut admin, "prj_web", "web").await;
    let mut seen = Vec::new();
    seen.push(shown(
        create_connector(&mut admin, "api-key/stripe", SECRET).await,
    ));
    seen.push(shown(
        attach(&mut admin, "api-key/stripe", "web", &["preview"]).await,
    ));
    seen.push(shown(
        admin
            .get_connector(pb::GetConnectorRequest {
                connector: "api-key/stripe".into(),
            })
            .await
            .unwrap()
            .into_inner(),
    ));
    seen.push(shown(
        admin
            .list_connectors(pb::ListConnectorsRequest::default())
            .await
            .unwrap()
            .into_inner(),
    ));
    seen.push(shown(
        admin
            .update_connector(pb::UpdateConnectorRequest {
                connector: "api-key/stripe".into(),
                secrets: [("api_key".to_owned(), format!("{SECRET}_2"))].into(),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["secrets".into()],
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner(),
    ));
    seen.push(shown(
        admin
            .list_audit_events(pb::ListAuditEventsRequest::default())
            .await
            .unwrap()
            .into_inner(),
    ));
    seen.push(shown(
        admin
            .delete_connector(pb::DeleteConnectorRequest {
                connector: "api-key/stripe".into(),
            })
            .await
            .unwrap()
            .into_inner(),
    ));
    seen.push(shown(
        admin
            .list_audit_events(pb::ListAuditEventsRequest::default())
            .await
            .unwrap()
            .into_inner(),
    ));
    for text in &seen {
        assert!(
            !text.contains("sk_live_must_never_leak"),
            "secret leaked: {text}"
        );
    }
    // The audit rows say that the secret changed, by fingerprint.
    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let update = events
        .iter()
        .find(|e| e.action == "connector.update")
        .unwrap();
    let fingerprint =
        |s: &Option<prost_types::Struct>| format!("{:?}", s.as_ref().unwrap().fields["secrets"]);
    assert_ne!(fingerprint(&update.before), fingerprint(&update.after));
}

async fn attach_replaces_the_environment_set(db: TestDb) {
    let (app, _) = seeded(db).await;
    let mut admin = app.admin();
    let first = admin
        .get_project_link(pb::GetProjectLinkRequest {
            connector: "api-key/stripe".into(),
            project: "web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let link = attach(
        &mut admin,
        "api-key/stripe",
        "prj_web",
        &["production", "development", "production"],
    )
    .await;
    assert_eq!(link.environments, ["development", "production"]);
    assert_eq!(link.create_time, first.create_time);
    let mut broker = app.broker();
    broker
        .authorize(authorize(
            "team_acme",
            "prj_web",
            "production",
            "api-key/stripe",
        ))
        .await
        .unwrap();
    assert_error(
        broker
            .authorize(authorize(
                "team_acme",
                "prj_web",
                "preview",
                "api-key/stripe",
            ))
            .await,
        Code::PermissionDenied,
        "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
    );
    for bad in [
        vec![],
        vec!["staging".to_owned()],
        vec!["Production".to_owned()],
    ] {
        let status = assert_error(
            admin
                .attach_project(pb::AttachProjectRequest {
                    connector: "api-key/stripe".into(),
                    project: "web".into(),
                    environments: bad,
                    expire_time: None,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(violated_fields(&status), ["environments"]);
    }
    let links = admin
        .list_project_links(pb::ListProjectLinksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].environments, ["development", "production"]);
}

async fn detach_removes_only_the_link(db: TestDb) {
    let (app, connector) = seeded(db).await;
    let mut admin = app.admin();
    admin
        .detach_project(pb::DetachProjectRequest {
            connector: connector.id.clone(),
            project: "prj_web".into(),
        })
        .await
        .unwrap();
    assert_error(
        admin
            .detach_project(pb::DetachProjectRequest {
                connector: connector.id.clone(),
                project: "prj_web".into(),
            })
            .await,
        Code::NotFound,
        "PROJECT_LINK_NOT_FOUND",
    );
    assert_error(
        admin
            .get_project_link(pb::GetProjectLinkRequest {
                connector: connector.id.clone(),
                project: "web".into(),
            })
            .await,
        Code::NotFound,
        "PROJECT_LINK_NOT_FOUND",
    );
    // Connector, secrets and project stay: linking again authorizes with the same secret.
    assert_eq!(
        admin
            .get_connector(pb::GetConnectorRequest {
                connector: connector.id.clone()
            })
            .await
            .unwrap()
            .into_inner(),
        connector
    );
    admin
        .get_project(pb::GetProjectRequest {
            project: "prj_web".into(),
        })
        .await
        .unwrap();
    attach(&mut admin, &connector.id, "web", &["preview"]).await;
    let granted = app
        .broker()
        .authorize(authorize(
            "team_acme",
            "prj_web",
            "preview",
            "api-key/stripe",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.secrets["api_key"], "sk_test_51Hx");
}

async fn deleting_a_connector_removes_its_links(db: TestDb) {
    let (app, connector) = seeded(db).await;
    let mut admin = app.admin();
    create_project(&mut admin, "prj_api", "api").await;
    attach(&mut admin, "api-key/stripe", "api", &["production"]).await;
    let other = create_connector(&mut admin, "api-key/other", "sk_other").await;
    attach(&mut admin, &other.id, "api", &["production"]).await;

    let deleted = admin
        .delete_connector(pb::DeleteConnectorRequest {
            connector: "api-key/stripe".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.removed_links, 2);
    assert_eq!(deleted.connector.unwrap(), connector);
    assert_error(
        admin
            .get_connector(pb::GetConnectorRequest {
                connector: connector.id.clone(),
            })
            .await,
        Code::NotFound,
        "CONNECTOR_NOT_FOUND",
    );
    let links = admin
        .list_project_links(pb::ListProjectLinksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(
        links
            .iter()
            .map(|l| l.connector_uid.as_str())
            .collect::<Vec<_>>(),
        ["api-key/other"]
    );
    assert_error(
        app.broker()
            .authorize(authorize(
                "team_acme",
                "prj_web",
                "preview",
                "api-key/stripe",
            ))
            .await,
        Code::NotFound,
        "CONNECTOR_NOT_FOUND",
    );
    // The uid is free again.
    create_connector(&mut admin, "api-key/stripe", "sk_new").await;
}

async fn update_connector_changes_only_the_masked_fields(db: TestDb) {
    let (app, connector) = seeded(db).await;
    let mut admin = app.admin();
    let mask = |paths: &[&str]| {
        Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        })
    };
    let renamed = admin
        .update_connector(pb::UpdateConnectorRequest {
            connector: "api-key/stripe".into(),
            name: "Stripe (live)".into(),
            config: [("ignored".to_owned(), "x".to_owned())].into(),
            update_mask: mask(&["name"]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.name, "Stripe (live)");
    assert_eq!(renamed.config, connector.config);
    assert_eq!(renamed.create_time, connector.create_time);

    let rotated = admin
        .update_connector(pb::UpdateConnectorRequest {
            connector: connector.id.clone(),
            config: [("region".to_owned(), "us".to_owned())].into(),
            secrets: [
                ("api_key".to_owned(), "sk_rotated".to_owned()),
                ("webhook".to_owned(), "whsec".to_owned()),
            ]
            .into(),
            update_mask: mask(&["config", "secrets"]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.name, "Stripe (live)");
    assert_eq!(rotated.config["region"], "us");
    assert_eq!(rotated.secret_names, ["api_key", "webhook"]);
    let granted = app
        .broker()
        .authorize(authorize(
            "team_acme",
            "prj_web",
            "preview",
            "api-key/stripe",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.secrets["api_key"], "sk_rotated");
    assert_eq!(granted.secrets["webhook"], "whsec");

    let status = assert_error(
        admin
            .update_connector(pb::UpdateConnectorRequest {
                connector: "api-key/stripe".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["update_mask"]);
}

async fn duplicates_are_already_exists(db: TestDb) {
    let (app, _) = seeded(db).await;
    let mut admin = app.admin();
    let status = assert_error(
        admin
            .create_project(pb::CreateProjectRequest {
                id: "prj_web".into(),
                name: "other".into(),
            })
            .await,
        Code::AlreadyExists,
        "ALREADY_EXISTS",
    );
    assert!(status.message().contains("prj_web"), "{status:?}");
    let status = assert_error(
        admin
            .create_project(pb::CreateProjectRequest {
                id: "prj_other".into(),
                name: "web".into(),
            })
            .await,
        Code::AlreadyExists,
        "ALREADY_EXISTS",
    );
    assert!(status.message().contains("'web'"), "{status:?}");
    assert_error(
        admin
            .create_connector(pb::CreateConnectorRequest {
                uid: "api-key/stripe".into(),
                secrets: [("api_key".to_owned(), "sk_again".to_owned())].into(),
                ..Default::default()
            })
            .await,
        Code::AlreadyExists,
        "ALREADY_EXISTS",
    );
    assert_eq!(
        admin
            .list_projects(pb::ListProjectsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .projects
            .len(),
        1
    );
}

async fn invalid_fields_are_named_in_bad_request(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    let status = assert_error(
        admin
            .create_project(pb::CreateProjectRequest {
                id: "prj 1".into(),
                name: "Web!".into(),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(status.message().starts_with("InvalidArgumentError"));
    assert_eq!(violated_fields(&status), ["id", "name"]);

    let status = assert_error(
        admin
            .create_connector(pb::CreateConnectorRequest {
                uid: "api-key/stripe".into(),
                r#type: "oauth2".into(),
                config: [("k".to_owned(), "v".repeat(5000))].into(),
                secrets: (0..20).map(|i| (format!("s{i}"), "v".to_owned())).collect(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["type", "config[k]", "secrets"]);

    for connector in ["", "stripe", "conn_tooshort", &"a/".repeat(200)] {
        let status = assert_error(
            admin
                .get_connector(pb::GetConnectorRequest {
                    connector: connector.into(),
                })
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(violated_fields(&status), ["connector"]);
    }
    let status = assert_error(
        admin
            .list_projects(pb::ListProjectsRequest {
                page_size: -1,
                page_token: "garbage!".into(),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["page_size", "page_token"]);
    let status = assert_error(
        admin
            .list_audit_events(pb::ListAuditEventsRequest {
                page_size: 1,
                page_token: connect_like_token("abc"),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["page_token"]);

    // A request over the size limit is refused before it is decoded.
    let huge = admin
        .create_project(pb::CreateProjectRequest {
            id: "prj_x".into(),
            name: "x".repeat(400_000),
        })
        .await
        .unwrap_err();
    assert_eq!(huge.code(), Code::OutOfRange, "{huge:?}");
}

/// A token of the server's format whose key is not valid for the list it is used with.
fn connect_like_token(key: &str) -> String {
    link_registry::domain::page::token_after(
        &link_registry::domain::types::ProjectId::parse(key).unwrap(),
    )
}

async fn lists_page_through_every_row_exactly_once(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    for i in 0..7 {
        create_project(&mut admin, &format!("prj_{i:02}"), &format!("p{i}")).await;
    }
    for i in 0..3 {
        create_connector(&mut admin, &format!("api-key/c{i}"), "sk").await;
    }
    for c in 0..3 {
        for p in 0..3 {
            attach(
                &mut admin,
                &format!("api-key/c{c}"),
                &format!("prj_{p:02}"),
                &["preview"],
            )
            .await;
        }
    }

    let mut ids = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list_projects(pb::ListProjectsRequest {
                page_size: 3,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        ids.extend(page.projects.into_iter().map(|p| p.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(
        ids,
        (0..7).map(|i| format!("prj_{i:02}")).collect::<Vec<_>>()
    );

    let mut links = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_project_links(pb::ListProjectLinksRequest {
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.links.len() <= 2);
        links.extend(
            page.links
                .into_iter()
                .map(|l| (l.connector_id, l.project_id)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(links.len(), 9);
    assert_eq!(links.iter().collect::<HashSet<_>>().len(), 9);
    let mut sorted = links.clone();
    sorted.sort();
    assert_eq!(links, sorted);

    let by_project = admin
        .list_project_links(pb::ListProjectLinksRequest {
            project: "p0".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(by_project.len(), 3);
    assert!(by_project.iter().all(|l| l.project_id == "prj_00"));
    let by_both = admin
        .list_project_links(pb::ListProjectLinksRequest {
            project: "p0".into(),
            connector: "api-key/c1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(by_both.len(), 1);

    let first = admin
        .list_connectors(pb::ListConnectorsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rest = admin
        .list_connectors(pb::ListConnectorsRequest {
            page_size: 2,
            page_token: first.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.connectors.len() + rest.connectors.len(), 3);
    assert!(rest.next_page_token.is_empty());

    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_audit_events(pb::ListAuditEventsRequest {
                page_size: 4,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        events.extend(
            page.events
                .into_iter()
                .map(|e| e.id.parse::<i64>().unwrap()),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // 7 projects + 3 connectors + 9 attaches, plus the team and its two keys.
    assert_eq!(events.len(), 7 + 3 + 9 + 3);
    assert!(
        events.windows(2).all(|w| w[0] > w[1]),
        "newest first: {events:?}"
    );
}

async fn every_change_is_audited_newest_first(db: TestDb) {
    let (app, connector) = seeded(db).await;
    let mut admin = app.admin();
    attach(&mut admin, "api-key/stripe", "web", &["production"]).await;
    admin
        .detach_project(pb::DetachProjectRequest {
            connector: "api-key/stripe".into(),
            project: "web".into(),
        })
        .await
        .unwrap();
    admin
        .update_connector(pb::UpdateConnectorRequest {
            connector: "api-key/stripe".into(),
            name: "Renamed".into(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .delete_connector(pb::DeleteConnectorRequest {
            connector: "api-key/stripe".into(),
        })
        .await
        .unwrap();

    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "connector.delete",
            "connector.update",
            "project.detach",
            "project.attach",
            "project.attach",
            "connector.create",
            "project.create",
            "key.create",
            "key.create",
            "team.create",
        ]
    );
    let by_admin: Vec<&pb::AuditEvent> = events
        .iter()
        .filter(|e| e.action != "team.create" && e.action != "key.create")
        .collect();
    assert!(
        by_admin
            .iter()
            .all(|e| e.actor == format!("key:{}", app.acme.admin_key_id)),
        "{by_admin:?}"
    );
    assert!(
        events
            .iter()
            .filter(|e| e.action == "team.create")
            .all(|e| e.actor == "cli")
    );

    let text = |s: &Option<prost_types::Struct>, field: &str| -> String {
        match &s.as_ref().unwrap().fields[field].kind {
            Some(prost_types::value::Kind::StringValue(v)) => v.clone(),
            Some(prost_types::value::Kind::ListValue(l)) => {
                format!("{:?}", l.values.iter().map(|v| &v.kind).collect::<Vec<_>>())
            }
            other => format!("{other:?}"),
        }
    };
    let reattach = &events[3];
    assert!(text(&reattach.before, "environments").contains("preview"));
    assert!(text(&reattach.after, "environments").contains("production"));
    assert_eq!(reattach.target, format!("link:{}/prj_web", connector.id));
    let first_attach = &events[4];
    assert!(first_attach.before.is_none());
    let delete = &events[0];
    assert!(delete.after.is_none());
    assert_eq!(text(&delete.before, "uid"), "api-key/stripe");
    let update = &events[1];
    assert_eq!(
        (
            text(&update.before, "name").as_str(),
            text(&update.after, "name").as_str()
        ),
        ("stripe", "Renamed")
    );
    let time = |e: &pb::AuditEvent| e.time.map(|t| (t.seconds, t.nanos)).unwrap();
    assert!(events.windows(2).all(|w| time(&w[0]) >= time(&w[1])));
}

async fn fifty_concurrent_attaches_leave_exactly_one_link(db: TestDb) {
    let (app, _) = seeded(db).await;
    create_project(&mut app.admin(), "prj_busy", "busy").await;
    let all = ["development", "preview", "production"];
    let calls = (0..50).map(|i| {
        let mut client = app.admin();
        let envs = vec![all[i % 3].to_owned()];
        tokio::spawn(async move {
            client
                .attach_project(pb::AttachProjectRequest {
                    connector: "api-key/stripe".into(),
                    project: "busy".into(),
                    environments: envs,
                    expire_time: None,
                    ..Default::default()
                })
                .await
        })
    });
    let results = futures::future::join_all(calls).await;
    for result in results {
        let link = result
            .unwrap()
            .unwrap_or_else(|s| panic!("attach failed: {s:?}"))
            .into_inner();
        assert_eq!(link.project_id, "prj_busy");
    }
    let links = app
        .admin()
        .list_project_links(pb::ListProjectLinksRequest {
            project: "busy".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].environments.len(), 1);

    let events = app
        .admin()
        .list_audit_events(pb::ListAuditEventsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let attaches: Vec<_> = events
        .iter()
        .filter(|e| e.target.ends_with("/prj_busy"))
        .collect();
    // One event per attach that changed the link (one that found the set it asked for wrote
    // nothing).
    assert!((1..=50).contains(&attaches.len()), "{}", attaches.len());
    // Serialized: exactly one of them created the link (the oldest, with the whole link); each
    // later one records only what it changed, and what it saw before is what the ones before it
    // left. Replaying them gives the link as it is.
    assert_eq!(attaches.iter().filter(|e| e.before.is_none()).count(), 1);
    let mut oldest_first = attaches.iter().rev();
    let created = oldest_first.next().unwrap();
    assert!(
        created.before.is_none(),
        "the oldest attach created the link"
    );
    let mut state = created.after.clone().unwrap().fields;
    assert!(state.contains_key("project_id") && state.contains_key("environments"));
    for event in oldest_first {
        let (before, after) = (event.before.as_ref(), event.after.as_ref());
        let (before, after) = (&before.unwrap().fields, &after.unwrap().fields);
        assert!(before.keys().eq(after.keys()), "{event:?}");
        assert!(before.keys().all(|k| k == "environments"), "{event:?}");
        for (field, was) in before {
            assert_eq!(state.get(field), Some(was), "audit chain broken");
        }
        state.extend(after.clone());
    }
    let replayed: Vec<String> = match &state["environments"].kind {
        Some(prost_types::value::Kind::ListValue(l)) => l
            .values
            .iter()
            .map(|v| match &v.kind {
                Some(prost_types::value::Kind::StringValue(s)) => s.clone(),
                other => panic!("{other:?}"),
            })
            .collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(replayed, links[0].environments);
}

async fn data_survives_a_restart(db: TestDb) {
    let (app, connector) = seeded(db).await;
    let keys = app.acme.clone();
    let broker_key = app.broker.clone();
    let db = app.stop().await;

    let mut app = TestApp::start(db).await;
    app.acme = keys;
    app.broker = broker_key;
    let read = app
        .admin()
        .get_connector(pb::GetConnectorRequest {
            connector: "api-key/stripe".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read, connector);
    // The sealed secret opens with the key from the first run.
    let granted = app
        .broker()
        .authorize(authorize(
            "team_acme",
            "prj_web",
            "preview",
            "api-key/stripe",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.secrets["api_key"], "sk_test_51Hx");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_as_soon_as_shutdown_begins() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    let mut health = HealthClient::new(app.channel());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "connect.registry.v1.LinkRegistry".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // NOT_SERVING until the database answered, then SERVING.
    loop {
        let status = watch.message().await.unwrap().unwrap().status;
        if status == ServingStatus::Serving as i32 {
            break;
        }
        assert_eq!(status, ServingStatus::NotServing as i32);
    }
    // The open watch is an in-flight call: shutdown reports NOT_SERVING on it, then drains it
    // within the grace period.
    let stopping = tokio::spawn(app.stop());
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    stopping.await.unwrap();
}

/// Walks `request`'s pages of 3, calling `between` after each page; answers the (connector id,
/// project id) of every link seen, in order.
async fn walk_links(
    admin: &mut Client,
    request: pb::ListProjectLinksRequest,
    mut between: impl AsyncFnMut(&mut Client, usize),
) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let mut token = String::new();
    for page_number in 0.. {
        let page = admin
            .list_project_links(pb::ListProjectLinksRequest {
                page_size: 3,
                page_token: token,
                ..request.clone()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(
            page.links
                .into_iter()
                .map(|l| (l.connector_id, l.project_id)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        between(admin, page_number).await;
    }
    seen
}

/// Keyset pages: a link added behind the cursor is not seen, one added ahead is, one removed
/// ahead is not; nothing is skipped or seen twice, for every filter.
async fn link_pages_stay_exact_while_links_change_between_them(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    for i in 0..6 {
        create_project(&mut admin, &format!("prj_{i:02}"), &format!("p{i}")).await;
    }
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            create_connector(&mut admin, &format!("api-key/c{i}"), "sk")
                .await
                .id,
        );
    }
    // Links c × p for p in 1..=4: every connector's first and last project are free.
    for c in 0..3 {
        for p in 1..=4 {
            attach(
                &mut admin,
                &format!("api-key/c{c}"),
                &format!("prj_{p:02}"),
                &["preview"],
            )
            .await;
        }
    }
    let order = |mut v: Vec<(String, String)>| {
        v.sort();
        v
    };
    let link = |c: usize, p: usize| (ids[c].clone(), format!("prj_{p:02}"));

    // Unfiltered: after the first page, add one link behind and one ahead, remove one ahead.
    let mut sorted_ids = ids.clone();
    sorted_ids.sort();
    let c_low = ids.iter().position(|i| *i == sorted_ids[0]).unwrap();
    let c_high = ids.iter().position(|i| *i == sorted_ids[2]).unwrap();
    let c_mid = ids.iter().position(|i| *i == sorted_ids[1]).unwrap();
    let seen = walk_links(&mut admin, Default::default(), async |admin, n| {
        if n == 0 {
            attach(admin, &format!("api-key/c{c_low}"), "prj_00", &["preview"]).await;
            attach(admin, &format!("api-key/c{c_high}"), "prj_05", &["preview"]).await;
            admin
                .detach_project(pb::DetachProjectRequest {
                    connector: format!("api-key/c{c_high}"),
                    project: "prj_04".into(),
                })
                .await
                .unwrap();
        }
    })
    .await;
    let mut expected = Vec::new();
    for c in 0..3 {
        for p in 1..=4 {
            expected.push(link(c, p));
        }
    }
    expected.retain(|l| *l != link(c_high, 4));
    expected.push(link(c_high, 5));
    assert_eq!(
        seen,
        order(expected),
        "behind the cursor, ({}, prj_00) is not seen",
        ids[c_low]
    );

    // One connector (untouched so far): a project added ahead is seen, one behind is not.
    let middle = format!("api-key/c{c_mid}");
    let seen = walk_links(
        &mut admin,
        pb::ListProjectLinksRequest {
            connector: middle.clone(),
            ..Default::default()
        },
        async |admin, n| {
            if n == 0 {
                attach(admin, &middle, "prj_00", &["preview"]).await;
                attach(admin, &middle, "prj_05", &["preview"]).await;
            }
        },
    )
    .await;
    let projects: Vec<&str> = seen.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(projects, ["prj_01", "prj_02", "prj_03", "prj_04", "prj_05"]);

    // One project: the connectors in id order, each once.
    let seen = walk_links(
        &mut admin,
        pb::ListProjectLinksRequest {
            project: "prj_02".into(),
            ..Default::default()
        },
        async |_, _| {},
    )
    .await;
    assert_eq!(seen, order((0..3).map(|c| link(c, 2)).collect()));
    app.stop().await;
}
