//! Every list walked a few rows a page while rows are added and removed between its pages: a
//! keyset page continues after the last row seen, so nothing is skipped or repeated, rows added
//! behind the cursor are not seen, rows added ahead are, and rows removed ahead are not. (Links
//! in each filter: `rpc::link_pages_stay_exact_while_links_change_between_them`.)

use connect_proto::registry::v1 as pb;

use crate::harness::{Client, TestApp, TestDb};

crate::on_every_backend!(
    projects_connectors_and_installations_page_exactly_while_they_change,
    audit_issuance_and_grant_pages_stay_exact_while_they_change,
);

/// Walks a list: `page(token)` answers one page's keys and the next token; `between(n)` runs
/// after page `n` (from 0) when another follows. Answers every key seen, in order.
async fn walk(
    mut page: impl AsyncFnMut(String) -> (Vec<String>, String),
    mut between: impl AsyncFnMut(usize),
) -> Vec<String> {
    let (mut seen, mut token) = (Vec::new(), String::new());
    for n in 0.. {
        let (keys, next) = page(token).await;
        seen.extend(keys);
        if next.is_empty() {
            break;
        }
        token = next;
        between(n).await;
    }
    seen
}

async fn create_connector(admin: &mut Client, uid: String) -> String {
    admin
        .create_connector(pb::CreateConnectorRequest {
            uid,
            secrets: [("api_key".to_owned(), "sk".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

fn strings<const N: usize>(v: [&str; N]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn projects_connectors_and_installations_page_exactly_while_they_change(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    let project = |id: &str| pb::CreateProjectRequest {
        id: id.into(),
        name: id.replace("prj_", "p"),
    };
    for i in 1..=6 {
        admin
            .create_project(project(&format!("prj_{i:02}")))
            .await
            .unwrap();
    }

    // Projects (no project is ever deleted): one added behind the cursor, one ahead.
    let mut lister = app.admin();
    let mut writer = app.admin();
    let seen = walk(
        async |token| {
            let page = lister
                .list_projects(pb::ListProjectsRequest {
                    page_size: 2,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            let ids = page.projects.into_iter().map(|p| p.id).collect();
            (ids, page.next_page_token)
        },
        async |n| {
            if n == 0 {
                writer.create_project(project("prj_00")).await.unwrap();
                writer.create_project(project("prj_07")).await.unwrap();
            }
        },
    )
    .await;
    assert_eq!(
        seen,
        strings([
            "prj_01", "prj_02", "prj_03", "prj_04", "prj_05", "prj_06", "prj_07"
        ])
    );

    // Connectors (ids are random, so what is ahead is known only once they exist): after the
    // first page the last one is deleted and two are created; those whose id sorts after the
    // cursor are seen, the others not.
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create_connector(&mut admin, format!("api-key/c{i}")).await);
    }
    ids.sort();
    let mut added = Vec::new();
    let cursor = std::cell::RefCell::new(String::new());
    let seen = walk(
        async |token| {
            let page = lister
                .list_connectors(pb::ListConnectorsRequest {
                    page_size: 2,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            let ids: Vec<String> = page.connectors.into_iter().map(|c| c.id).collect();
            *cursor.borrow_mut() = ids.last().cloned().unwrap_or_default();
            (ids, page.next_page_token)
        },
        async |n| {
            if n == 0 {
                writer
                    .delete_connector(pb::DeleteConnectorRequest {
                        connector: ids[4].clone(),
                    })
                    .await
                    .unwrap();
                for i in 5..7 {
                    added.push((
                        create_connector(&mut writer, format!("api-key/c{i}")).await,
                        cursor.borrow().clone(),
                    ));
                }
            }
        },
    )
    .await;
    let mut expected: Vec<String> = ids[..4].to_vec();
    expected.extend(
        added
            .iter()
            .filter(|(id, cursor)| id > cursor)
            .map(|(id, _)| id.clone()),
    );
    expected.sort();
    assert_eq!(seen, expected, "added after the cursor {added:?}");

    // Installations of one connector (ids chosen by the admin): one added behind, one ahead, one
    // ahead removed.
    create_connector(&mut admin, "api-key/tenants".into()).await;
    for i in 1..=6 {
        admin
            .create_installation(pb::CreateInstallationRequest {
                connector: "api-key/tenants".into(),
                installation_id: format!("i{i:02}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let seen = walk(
        async |token| {
            let page = lister
                .list_installations(pb::ListInstallationsRequest {
                    connector: "api-key/tenants".into(),
                    page_size: 2,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            let ids = page
                .installations
                .into_iter()
                .map(|i| i.installation_id)
                .collect();
            (ids, page.next_page_token)
        },
        async |n| {
            if n == 0 {
                for id in ["i00", "i07"] {
                    writer
                        .create_installation(pb::CreateInstallationRequest {
                            connector: "api-key/tenants".into(),
                            installation_id: id.into(),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
                writer
                    .delete_installation(pb::DeleteInstallationRequest {
                        connector: "api-key/tenants".into(),
                        installation_id: "i05".into(),
                    })
                    .await
                    .unwrap();
            }
        },
    )
    .await;
    assert_eq!(seen, strings(["i01", "i02", "i03", "i04", "i06", "i07"]));
    app.stop().await;
}

async fn audit_issuance_and_grant_pages_stay_exact_while_they_change(db: TestDb) {
    use link_registry::domain::store::AuditStore;
    let app = TestApp::spawn(db).await;
    let mut admin = app.admin();
    for i in 0..4 {
        admin
            .create_project(pb::CreateProjectRequest {
                id: format!("prj_{i}"),
                name: format!("p{i}"),
            })
            .await
            .unwrap();
    }
    let connector = crate::grants::connector(&mut admin).await;
    let mut lister = app.admin();
    let mut writer = app.admin();

    // Audit events, newest first: the events a walk's changes add are newer (behind it); the
    // retention removes the oldest (ahead of it).
    let all = lister
        .list_audit_events(pb::ListAuditEventsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let ids: Vec<String> = all.iter().map(|e| e.id.to_string()).collect();
    assert!(ids.len() >= 6, "{ids:?}");
    let store = link_registry::app::open_store(&app.db.url).await.unwrap();
    let seen = walk(
        async |token| {
            let page = lister
                .list_audit_events(pb::ListAuditEventsRequest {
                    page_size: 2,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let ids = page.events.into_iter().map(|e| e.id.to_string()).collect();
            (ids, page.next_page_token)
        },
        async |n| {
            if n == 0 {
                writer
                    .create_project(pb::CreateProjectRequest {
                        id: "prj_new".into(),
                        name: "new".into(),
                    })
                    .await
                    .unwrap();
                let pruned = store.prune_audit(chrono::Utc::now(), 2).await.unwrap();
                assert_eq!(pruned, 2);
            }
        },
    )
    .await;
    assert_eq!(seen, ids[..ids.len() - 2], "the two oldest were pruned");

    // Issuances, newest first: those recorded during the walk are behind it.
    let mut broker = app.broker();
    let issuance = |n: usize| pb::RecordIssuanceRequest {
        issuance: Some(crate::ledger::issuance(
            &connector,
            &format!("{n:016x}"),
            &format!("prj_{}", n % 4),
            "preview",
        )),
    };
    for n in 0..6 {
        broker.record_issuance(issuance(n)).await.unwrap();
    }
    let mut late = app.broker();
    let seen = walk(
        async |token| {
            let page = lister
                .list_issuances(pb::ListIssuancesRequest {
                    page_size: 2,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let ids = page.issuances.into_iter().map(|i| i.token_id).collect();
            (ids, page.next_page_token)
        },
        async |n| {
            if n < 2 {
                late.record_issuance(issuance(6 + n)).await.unwrap();
            }
        },
    )
    .await;
    let newest_first: Vec<String> = (0..6).rev().map(|n| format!("{n:016x}")).collect();
    assert_eq!(seen, newest_first);

    // Grants, oldest first: a new user's grant is ahead (seen), a revoked one ahead is gone, and
    // a grant imported again over one already seen is not seen twice.
    let grant = |user: &str| pb::ImportedGrant {
        user_id: user.into(),
        environment: "preview".into(),
        access_token: format!("at_{user}"),
        refresh_token: format!("rt_{user}"),
        expire_time: Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() + 600,
            nanos: 0,
        }),
        project: "prj_web".into(),
        ..Default::default()
    };
    let import = |users: &[&str]| pb::ImportGrantsRequest {
        connector: "oauth2/idp".into(),
        grants: users.iter().map(|u| grant(u)).collect(),
    };
    let answer = admin
        .import_grants(import(&["u1", "u2", "u3", "u4", "u5", "u6"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.imported, 6, "{answer:?}");
    let seen = walk(
        async |token| {
            let page = lister
                .list_grants(pb::ListGrantsRequest {
                    page_size: 2,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let users = page.grants.into_iter().map(|g| g.user_id).collect();
            (users, page.next_page_token)
        },
        async |n| {
            if n == 0 {
                writer.import_grants(import(&["u1", "u7"])).await.unwrap();
                writer
                    .revoke_tokens(pb::RevokeTokensRequest {
                        connector: "oauth2/idp".into(),
                        subject: "user:u5".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        },
    )
    .await;
    assert_eq!(seen, strings(["u1", "u2", "u3", "u4", "u6", "u7"]));
    app.stop().await;
}
