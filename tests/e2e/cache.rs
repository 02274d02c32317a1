//! The broker's authorization cache against the real registry and its change feed: every change
//! that alters an answer reaches the broker, and nothing cached outlives a lost feed.

use std::time::{Duration, Instant};

use connect_proto::registry::v1 as rpb;
use tonic::Code;

use crate::harness::{Stack, StackOptions, assert_denied, on_postgres};

/// Polls `GetToken` until it fails with `reason`, at most ten seconds.
async fn until_denied(stack: &Stack, token: &str, connector: &str, reason: &str) {
    let start = Instant::now();
    loop {
        match stack.get_token(token, connector).await {
            Err(status)
                if tonic_types::StatusExt::get_details_error_info(&status)
                    .is_some_and(|i| i.reason == reason) =>
            {
                return;
            }
            other if start.elapsed() < Duration::from_secs(10) => {
                let _ = other;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => panic!("still {other:?} ten seconds after the change"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_that_alters_an_answer_reaches_a_caching_broker() {
    every_change_reaches_the_broker(Stack::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "TEST_DATABASE_URL is unset: the PostgreSQL variant does not run"
)]
async fn every_change_that_alters_an_answer_reaches_a_caching_broker_on_postgres() {
    if let Some(registry) = on_postgres().await {
        every_change_reaches_the_broker(
            Stack::start_with_options(StackOptions {
                registry,
                ..Default::default()
            })
            .await,
        )
        .await;
    }
}

async fn every_change_reaches_the_broker(stack: Stack) {
    let preview = stack.acme.token("prj_web", "preview");
    let production = stack.acme.token("prj_web", "production");
    // Cached yes and cached no.
    for _ in 0..3 {
        assert_eq!(
            stack
                .get_token(&preview, "api-key/stripe")
                .await
                .unwrap()
                .token,
            "sk_acme_stripe"
        );
        assert_denied(
            stack.get_token(&production, "api-key/stripe").await,
            Code::PermissionDenied,
            "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
            "ClientNotEnabledForEnvironmentError",
        );
    }
    let mut admin = stack.admin(&stack.acme);
    // Attaching production turns the cached "no" into a yes, and removes preview.
    stack
        .attach(&stack.acme, "api-key/stripe", "prj_web", &["production"])
        .await;
    until_denied(
        &stack,
        &preview,
        "api-key/stripe",
        "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
    )
    .await;
    assert!(stack.get_token(&production, "api-key/stripe").await.is_ok());
    // A new secret is what the next token carries.
    admin
        .update_connector(rpb::UpdateConnectorRequest {
            connector: "api-key/stripe".into(),
            secrets: [("api_key".to_owned(), "sk_rotated".to_owned())].into(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["secrets".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let start = Instant::now();
    while stack
        .get_token(&production, "api-key/stripe")
        .await
        .unwrap()
        .token
        != "sk_rotated"
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the old secret is still served"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Detaching ends it; deleting the connector makes it unknown, by uid and by id alike.
    let id = admin
        .get_connector(rpb::GetConnectorRequest {
            connector: "api-key/stripe".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    assert!(stack.get_token(&production, &id).await.is_ok());
    admin
        .detach_project(rpb::DetachProjectRequest {
            connector: "api-key/stripe".into(),
            project: "prj_web".into(),
        })
        .await
        .unwrap();
    until_denied(
        &stack,
        &production,
        "api-key/stripe",
        "CLIENT_NOT_LINKED_TO_PROJECT",
    )
    .await;
    until_denied(&stack, &production, &id, "CLIENT_NOT_LINKED_TO_PROJECT").await;
    admin
        .delete_connector(rpb::DeleteConnectorRequest {
            connector: "api-key/stripe".into(),
        })
        .await
        .unwrap();
    until_denied(&stack, &production, "api-key/stripe", "CONNECTOR_NOT_FOUND").await;
    // And a connector created under a name that was unknown is found.
    stack
        .create_connector(
            &stack.acme,
            rpb::CreateConnectorRequest {
                uid: "api-key/stripe".into(),
                secrets: [("api_key".to_owned(), "sk_new".to_owned())].into(),
                ..Default::default()
            },
        )
        .await;
    until_denied(
        &stack,
        &production,
        "api-key/stripe",
        "CLIENT_NOT_LINKED_TO_PROJECT",
    )
    .await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cache_every_call_asks_the_registry() {
    let mut stack = Stack::start_with(|c| c.authz_cache_size = 0).await;
    let token = stack.acme.token("prj_web", "preview");
    stack.get_token(&token, "api-key/stripe").await.unwrap();
    stack.stop_registry().await;
    assert_denied(
        stack.get_token(&token, "api-key/stripe").await,
        Code::Unavailable,
        "REGISTRY_UNAVAILABLE",
        "RegistryUnavailableError",
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_token_is_refused_once_it_expires() {
    let stack = Stack::start_with(|c| c.leeway = Duration::ZERO).await;
    let deployment = stack.acme.deployment("prj_web", "web", "preview");
    let token = stack
        .acme
        .issuer
        .mint(&deployment, Duration::from_secs(2), dev_issuer::Alg::ES256);
    for _ in 0..3 {
        assert!(stack.get_token(&token, "api-key/stripe").await.is_ok());
    }
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_denied(
        stack.get_token(&token, "api-key/stripe").await,
        Code::Unauthenticated,
        "TOKEN_EXPIRED",
        "TokenExpiredError",
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_churn_under_concurrent_calls_gives_no_wrong_answer() {
    churn(Stack::start_with(patient_broker).await).await;
}

/// A debug build on a loaded machine can take seconds to answer 1 000 questions at once: the
/// churn tests are about right answers, not deadlines.
fn patient_broker(config: &mut token_broker::BrokerConfig) {
    config.registry_timeout = Duration::from_secs(10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "TEST_DATABASE_URL is unset: the PostgreSQL variant does not run"
)]
async fn link_churn_under_concurrent_calls_gives_no_wrong_answer_on_postgres() {
    if let Some(registry) = on_postgres().await {
        churn(
            Stack::start_with_options(StackOptions {
                registry,
                broker: Box::new(patient_broker),
                ..Default::default()
            })
            .await,
        )
        .await;
    }
}

/// What one call may answer while the links change under it.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Linked in every state: always this token.
    Always(&'static str),
    /// Linked in some states: this token, or a denial with this reason.
    Either(&'static str, &'static str),
    /// Never linked: always this reason.
    Never(&'static str),
}

/// 1 000 concurrent calls at a time, five times over, of five kinds, while another task keeps
/// changing links: `prj_web` flips between {preview} and {preview, production} on
/// `api-key/stripe`, and `api-key/mail` is attached to and detached from `prj_docs`. Every
/// answer must be one that some state of the links allows, with the right token or reason; once
/// the changes stop, every answer is the final state's.
async fn churn(stack: Stack) {
    stack
        .create_connector(
            &stack.acme,
            rpb::CreateConnectorRequest {
                uid: "api-key/mail".into(),
                secrets: [("api_key".to_owned(), "sk_mail".to_owned())].into(),
                ..Default::default()
            },
        )
        .await;
    let web_preview = stack.acme.token("prj_web", "preview");
    let web_production = stack.acme.token("prj_web", "production");
    let web_development = stack.acme.token("prj_web", "development");
    let docs_preview = stack.acme.token("prj_docs", "preview");
    let globex = stack.globex.token("prj_web", "preview");
    let cases: [(&str, &str, Expect); 5] = [
        (
            &web_preview,
            "api-key/stripe",
            Expect::Always("sk_acme_stripe"),
        ),
        (
            &web_production,
            "api-key/stripe",
            Expect::Either("sk_acme_stripe", "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT"),
        ),
        (
            &web_development,
            "api-key/stripe",
            Expect::Never("CLIENT_NOT_ENABLED_FOR_ENVIRONMENT"),
        ),
        (
            &docs_preview,
            "api-key/mail",
            Expect::Either("sk_mail", "CLIENT_NOT_LINKED_TO_PROJECT"),
        ),
        (
            &globex,
            "api-key/stripe",
            Expect::Never("CONNECTOR_NOT_FOUND"),
        ),
    ];

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churner = {
        let stop = stop.clone();
        let mut admin = stack.admin(&stack.acme);
        let attach =
            |connector: &str, project: &str, environments: &[&str]| rpb::AttachProjectRequest {
                connector: connector.into(),
                project: project.into(),
                environments: environments.iter().map(|e| e.to_string()).collect(),
                expire_time: None,
                ..Default::default()
            };
        let steps = [
            attach("api-key/stripe", "prj_web", &["preview", "production"]),
            attach("api-key/mail", "prj_docs", &["preview"]),
            attach("api-key/stripe", "prj_web", &["preview"]),
        ];
        tokio::spawn(async move {
            let mut changes = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for step in &steps {
                    admin.attach_project(step.clone()).await.unwrap();
                }
                admin
                    .detach_project(rpb::DetachProjectRequest {
                        connector: "api-key/mail".into(),
                        project: "prj_docs".into(),
                    })
                    .await
                    .unwrap();
                changes += 4;
            }
            changes
        })
    };

    let mut seen = std::collections::HashMap::<String, usize>::new();
    for _ in 0..5 {
        let answers = futures::future::join_all((0..1000).map(|i| {
            let (token, connector, expect) = cases[i % cases.len()];
            let stack = &stack;
            async move { (expect, stack.get_token(token, connector).await) }
        }))
        .await;
        for (expect, answer) in answers {
            let outcome = match &answer {
                Ok(issued) => issued.token.clone(),
                Err(status) => tonic_types::StatusExt::get_details_error_info(status)
                    .map_or_else(|| format!("{status:?}"), |i| i.reason),
            };
            let right = match expect {
                Expect::Always(token) => outcome == token,
                Expect::Either(token, reason) => outcome == token || outcome == reason,
                Expect::Never(reason) => outcome == reason,
            };
            // An overloaded registry makes the broker fail closed: no token, never a wrong one.
            let closed = outcome == "REGISTRY_UNAVAILABLE";
            assert!(right || closed, "{expect:?} answered {answer:?}");
            *seen.entry(outcome).or_default() += 1;
        }
    }
    let closed = seen.get("REGISTRY_UNAVAILABLE").copied().unwrap_or(0);
    assert!(
        closed < 2500,
        "most calls must get a definite answer: {seen:?}"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let changes = churner.await.unwrap();
    assert!(changes >= 4, "the links never changed");
    // Both answers of a changing link were seen while it changed.
    for outcome in ["sk_mail", "CLIENT_NOT_LINKED_TO_PROJECT"] {
        assert!(seen.contains_key(outcome), "never saw {outcome}: {seen:?}");
    }
    // The final state: production off, mail detached.
    until_denied(
        &stack,
        &web_production,
        "api-key/stripe",
        "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
    )
    .await;
    until_denied(
        &stack,
        &docs_preview,
        "api-key/mail",
        "CLIENT_NOT_LINKED_TO_PROJECT",
    )
    .await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_reaches_a_caching_broker_and_so_does_the_resumption() {
    let stack = Stack::start().await;
    let token = stack.acme.token("prj_web", "preview");
    stack.get_token(&token, "api-key/stripe").await.unwrap();
    let set = |suspended: bool| rpb::UpdateConnectorRequest {
        connector: "api-key/stripe".into(),
        suspended,
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["suspended".into()],
        }),
        ..Default::default()
    };
    let mut admin = stack.admin(&stack.acme);
    admin.update_connector(set(true)).await.unwrap();
    until_denied(&stack, &token, "api-key/stripe", "CONNECTOR_SUSPENDED").await;
    assert_denied(
        stack.get_token(&token, "api-key/stripe").await,
        Code::FailedPrecondition,
        "CONNECTOR_SUSPENDED",
        "ConnectorSuspendedError",
    );
    admin.update_connector(set(false)).await.unwrap();
    let start = Instant::now();
    while stack.get_token(&token, "api-key/stripe").await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "still suspended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stack.stop().await;
}

/// A time-boxed link ends at every broker at its expiry, although no change event marks it: at a
/// broker following the feed (the registry's answer, LINK_EXPIRED), and at one whose registry
/// connection stalled with a cached yes it would otherwise keep for a minute (it fails closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_boxed_link_ends_at_every_broker_without_a_change_event() {
    let stack = Stack::start().await;
    let cutter = crate::faults::Cutter::start(stack.registry_addr()).await;
    let registry_url = format!("http://{}", cutter.addr);
    let silent = stack
        .second_broker(move |c| {
            c.registry_url = registry_url;
            c.authz_max_staleness = Duration::from_secs(60);
            c.registry_timeout = Duration::from_millis(500);
        })
        .await;
    let ends = chrono::Utc::now() + chrono::Duration::seconds(2);
    let link = stack
        .admin(&stack.acme)
        .attach_project(rpb::AttachProjectRequest {
            connector: "api-key/stripe".into(),
            project: "prj_docs".into(),
            environments: vec!["preview".into()],
            expire_time: Some(prost_types::Timestamp {
                seconds: ends.timestamp(),
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(link.expire_time.unwrap().seconds, ends.timestamp());
    let token = stack.acme.token("prj_docs", "preview");
    let ask = || connect_proto::broker::v1::GetTokenRequest {
        connector: "api-key/stripe".into(),
        ..Default::default()
    };
    // Both brokers hold the yes; then the second one's registry goes silent.
    let mut allowed = false;
    for _ in 0..500 {
        if stack.get_token(&token, "api-key/stripe").await.is_ok()
            && silent.get_token_with(&token, ask()).await.is_ok()
        {
            allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(allowed, "both brokers serve the link before it ends");
    // An answer fetched while the attach's own event arrived is not kept: ask once more after it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    silent.get_token_with(&token, ask()).await.unwrap();
    cutter.stall();
    assert_eq!(
        silent.get_token_with(&token, ask()).await.unwrap().token,
        "sk_acme_stripe",
        "cached while the registry is silent"
    );
    let wait = (ends - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    assert_denied(
        stack.get_token(&token, "api-key/stripe").await,
        Code::PermissionDenied,
        "LINK_EXPIRED",
        "LinkExpiredError: the link of connector 'api-key/stripe' to project 'prj_docs' has expired",
    );
    let after = silent.get_token_with(&token, ask()).await;
    assert_eq!(
        after.as_ref().map_err(|s| s.code()).err(),
        Some(Code::Unavailable),
        "{after:?}"
    );
    // The connection back: the registry's own answer.
    cutter.cut();
    let mut reason = String::new();
    for _ in 0..300 {
        if let Err(status) = silent.get_token_with(&token, ask()).await
            && let Some(info) = tonic_types::StatusExt::get_details_error_info(&status)
        {
            reason = info.reason;
            if reason == "LINK_EXPIRED" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reason, "LINK_EXPIRED");
    silent.stop().await;
    stack.stop().await;
}
