//! `ExplainAccess` against `GetToken`: over random link states (links attached and detached with
//! random environment sets including a custom environment, random ceilings and ends, a connector
//! suspended and resumed) and random requests (connector, project, environment, installation,
//! subject), the explanation and the broker agree on allowed or denied and on the reason, every
//! time.

use connect_proto::{broker::v1 as bpb, registry::v1 as rpb};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use tonic_types::StatusExt;

use crate::harness::Stack;

const CONNECTORS: [&str; 3] = ["api-key/stripe", "api-key/mail", "api-key/ghost"];
const PROJECTS: [&str; 3] = ["prj_web", "prj_docs", "prj_ghost"];
const ENVIRONMENTS: [&str; 4] = ["production", "preview", "development", "staging"];
const SUBJECTS: [&str; 2] = ["app", "user:ada"];
const INSTALLATIONS: [&str; 2] = ["", "eu"];

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
    const ROUNDS: usize = 60;
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
    // A custom environment in both projects (a token's claim names it by slug), and an
    // installation of each real connector (a ceiling may name it).
    for project in &PROJECTS[..2] {
        admin
            .create_environment(rpb::CreateEnvironmentRequest {
                project: project.to_string(),
                slug: "staging".into(),
                name: String::new(),
            })
            .await
            .unwrap();
    }
    for connector in &CONNECTORS[..2] {
        admin
            .create_installation(rpb::CreateInstallationRequest {
                connector: connector.to_string(),
                installation_id: "eu".into(),
                secrets: [("api_key".to_owned(), "sk_eu".to_owned())].into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let seed = std::env::var("EXPLAIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut compared, mut allowed, mut reasons) = (0, 0, std::collections::BTreeSet::new());
    let mut allowed_in_custom = 0;
    for round in 0..ROUNDS {
        // One or two changes: a link set (with random ceilings, sometimes an end a second away)
        // or removed, or the mail connector suspended or resumed.
        let mut ends = None;
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
                    let expire_time = rng.random_bool(0.15).then(|| {
                        let at = chrono::Utc::now() + chrono::Duration::seconds(1);
                        ends = Some(at);
                        prost_types::Timestamp {
                            seconds: at.timestamp(),
                            nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap(),
                        }
                    });
                    let ceiling = |rng: &mut StdRng, value: &str| {
                        if rng.random_bool(0.25) {
                            vec![value.to_owned()]
                        } else {
                            vec![]
                        }
                    };
                    admin
                        .attach_project(rpb::AttachProjectRequest {
                            connector,
                            project,
                            environments,
                            expire_time,
                            allowed_subjects: ceiling(&mut rng, "app"),
                            allowed_installations: ceiling(&mut rng, "eu"),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
            }
        }
        stack.feed_caught_up().await;
        // No ask straddles an end: both answers come after it.
        if let Some(at) = ends {
            let left = (at - chrono::Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(left + std::time::Duration::from_millis(50)).await;
        }
        for _ in 0..ASKS {
            let connector = *CONNECTORS.choose(&mut rng).unwrap();
            let project = *PROJECTS.choose(&mut rng).unwrap();
            let environment = *ENVIRONMENTS.choose(&mut rng).unwrap();
            let subject = *SUBJECTS.choose(&mut rng).unwrap();
            let installation = *INSTALLATIONS.choose(&mut rng).unwrap();
            let explained = admin
                .explain_access(rpb::ExplainAccessRequest {
                    project: project.into(),
                    environment: environment.into(),
                    connector: connector.into(),
                    subject: subject.into(),
                    installation_id: installation.into(),
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
                            installation_id: installation.into(),
                            ..Default::default()
                        },
                    )
                    .await,
            );
            assert_eq!(
                (explained.allowed, explained.reason.as_str()),
                (got.is_empty(), got.as_str()),
                "seed {seed}, round {round}: {connector} ({installation:?}) for {project} in {environment}: {explained:?}"
            );
            compared += 1;
            allowed += usize::from(explained.allowed);
            allowed_in_custom += usize::from(explained.allowed && environment == "staging");
            reasons.insert(explained.reason);
        }
    }
    eprintln!(
        "{compared} compared, {allowed} allowed ({allowed_in_custom} in the custom environment), reasons {reasons:?}"
    );
    // The walk reached allowed answers (in a custom environment too) and every kind of refusal
    // it can.
    assert!(allowed > 0 && allowed_in_custom > 0, "{reasons:?}");
    for reason in [
        "CLIENT_NOT_LINKED_TO_PROJECT",
        "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
        "CONNECTOR_NOT_FOUND",
        "CONNECTOR_SUSPENDED",
        "USER_AUTHORIZATION_REQUIRED",
        "SUBJECT_NOT_ALLOWED",
        "LINK_EXPIRED",
    ] {
        assert!(
            reasons.contains(reason),
            "{reason} never came up: {reasons:?}"
        );
    }
    stack.stop().await;
}
