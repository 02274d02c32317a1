//! `ExplainAccess` against `GetToken`: over random link states (links attached and detached with
//! random environment sets, a connector suspended and resumed) and random requests (connector,
//! project, environment, subject), the explanation and the broker agree on allowed or denied and
//! on the reason, every time.

use connect_proto::{broker::v1 as bpb, registry::v1 as rpb};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use tonic_types::StatusExt;

use crate::harness::Stack;

const CONNECTORS: [&str; 3] = ["api-key/stripe", "api-key/mail", "api-key/ghost"];
const PROJECTS: [&str; 3] = ["prj_web", "prj_docs", "prj_ghost"];
const ENVIRONMENTS: [&str; 3] = ["production", "preview", "development"];
const SUBJECTS: [&str; 2] = ["app", "user:ada"];

/// The reason of a `GetToken` answer; empty when a token came back.
fn reason(answer: Result<bpb::GetTokenResponse, tonic::Status>) -> String {
    match answer {
        Ok(_) => String::new(),
        Err(status) => status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_else(|| format!("no reason: {status:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_access_agrees_with_get_token_over_random_states_and_requests() {
    const ROUNDS: usize = 30;
    const ASKS: usize = 8;
    let stack = Stack::start().await;
    let mut admin = stack.admin(&stack.acme);
    admin
        .create_connector(rpb::CreateConnectorRequest {
            uid: "api-key/mail".into(),
            secrets: [("api_key".to_owned(), "sk_mail".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let seed = std::env::var("EXPLAIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut compared, mut allowed, mut reasons) = (0, 0, std::collections::BTreeSet::new());
    for round in 0..ROUNDS {
        // One or two changes: a link set or removed, or the mail connector suspended or resumed.
        for _ in 0..rng.random_range(1..=2) {
            let connector = CONNECTORS[..2].choose(&mut rng).unwrap().to_string();
            let project = PROJECTS[..2].choose(&mut rng).unwrap().to_string();
            match rng.random_range(0..4) {
                0 => {
                    admin
                        .detach_project(rpb::DetachProjectRequest { connector, project })
                        .await
                        .ok();
                }
                1 => {
                    let suspended = rng.random_bool(0.5);
                    admin
                        .update_connector(rpb::UpdateConnectorRequest {
                            connector: "api-key/mail".into(),
                            suspended,
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["suspended".into()],
                            }),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
                _ => {
                    let environments: Vec<String> = ENVIRONMENTS
                        .iter()
                        .filter(|_| rng.random_bool(0.5))
                        .map(|e| e.to_string())
                        .collect();
                    let environments = if environments.is_empty() {
                        vec![ENVIRONMENTS.choose(&mut rng).unwrap().to_string()]
                    } else {
                        environments
                    };
                    admin
                        .attach_project(rpb::AttachProjectRequest {
                            connector,
                            project,
                            environments,
                            expire_time: None,
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
            }
        }
        stack.feed_caught_up().await;
        for _ in 0..ASKS {
            let connector = *CONNECTORS.choose(&mut rng).unwrap();
            let project = *PROJECTS.choose(&mut rng).unwrap();
            let environment = *ENVIRONMENTS.choose(&mut rng).unwrap();
            let subject = *SUBJECTS.choose(&mut rng).unwrap();
            let explained = admin
                .explain_access(rpb::ExplainAccessRequest {
                    project: project.into(),
                    environment: environment.into(),
                    connector: connector.into(),
                    subject: subject.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let token = stack.acme.token(project, environment);
            let subject = subject.strip_prefix("user:").map(|id| bpb::Subject {
                kind: Some(bpb::subject::Kind::User(bpb::UserSubject { id: id.into() })),
            });
            let got = reason(
                stack
                    .get_token_with(
                        &token,
                        bpb::GetTokenRequest {
                            connector: connector.into(),
                            subject,
                            ..Default::default()
                        },
                    )
                    .await,
            );
            assert_eq!(
                (explained.allowed, explained.reason.as_str()),
                (got.is_empty(), got.as_str()),
                "seed {seed}, round {round}: {connector} for {project} in {environment}: {explained:?}"
            );
            compared += 1;
            allowed += usize::from(explained.allowed);
            reasons.insert(explained.reason);
        }
    }
    eprintln!("{compared} compared, {allowed} allowed, reasons {reasons:?}");
    // The walk reached allowed answers and every kind of refusal it can.
    assert!(allowed > 0, "{reasons:?}");
    for reason in [
        "CLIENT_NOT_LINKED_TO_PROJECT",
        "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
        "CONNECTOR_NOT_FOUND",
        "CONNECTOR_SUSPENDED",
        "USER_AUTHORIZATION_REQUIRED",
    ] {
        assert!(
            reasons.contains(reason),
            "{reason} never came up: {reasons:?}"
        );
    }
    stack.stop().await;
}
