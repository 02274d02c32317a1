//! The broker's authorization cache against the real registry and its change feed: every change
//! that alters an answer reaches the broker, and nothing cached outlives a lost feed.

use std::time::{Duration, Instant};

use connect_proto::registry::v1 as rpb;
use tonic::Code;

use crate::harness::{Stack, assert_denied};

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
    let stack = Stack::start().await;
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
