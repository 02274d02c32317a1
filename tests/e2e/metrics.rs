//! `--metrics-listen`: both servers serve Prometheus text with the contract's metric names, and the
//! numbers are the calls that were made.

use std::net::SocketAddr;

use tonic::Code;

use crate::harness::{Stack, StackOptions, TokenEndpoint, assert_denied, sample, scrape};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_servers_count_what_they_did() {
    let local = || SocketAddr::from(([127, 0, 0, 1], 0));
    let stack = Stack::start_with_options(StackOptions {
        registry: Box::new(move |c| c.metrics_listen = Some(local())),
        broker: Box::new(move |c| c.metrics_listen = Some(local())),
        ..Default::default()
    })
    .await;
    let endpoint = TokenEndpoint::start().await;
    stack
        .linked_oauth_connector("oauth2/crm", &endpoint.url, &[])
        .await;
    // The setup's changes reach the broker's cache before anything is counted (one arriving
    // between the two stripe calls would drop the first answer and make the second a miss);
    // what the wait itself called is taken off below.
    stack.feed_caught_up().await;
    let broker_before = scrape(stack.local().broker_metrics_addr().unwrap()).await;
    let registry_before = scrape(stack.local().registry_metrics_addr().unwrap()).await;
    let since = |before: &str, after: &str, series: &str| {
        Some(sample(after, series).unwrap_or(0.0) - sample(before, series).unwrap_or(0.0))
    };
    let preview = stack.acme.token("prj_web", "preview");
    let production = stack.acme.token("prj_web", "production");
    for _ in 0..2 {
        stack.get_token(&preview, "api-key/stripe").await.unwrap();
    }
    stack.get_token(&preview, "oauth2/crm").await.unwrap();
    assert_denied(
        stack.get_token(&production, "api-key/stripe").await,
        Code::PermissionDenied,
        "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
        "ClientNotEnabledForEnvironmentError",
    );
    assert_denied(
        stack.get_token("not-a-jwt", "api-key/stripe").await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
        "InvalidTokenError",
    );

    let broker = scrape(stack.local().broker_metrics_addr().unwrap()).await;
    let get = |series: &str| since(&broker_before, &broker, series);
    assert_eq!(
        get(r#"connect_get_token_total{outcome="allow",reason="OK"}"#),
        Some(3.0),
        "{broker}"
    );
    assert_eq!(
        get(
            r#"connect_get_token_total{outcome="deny",reason="CLIENT_NOT_ENABLED_FOR_ENVIRONMENT"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        get(r#"connect_get_token_total{outcome="deny",reason="INVALID_TOKEN"}"#),
        Some(1.0)
    );
    assert_eq!(
        get(r#"connect_get_token_duration_seconds_count{outcome="allow"}"#),
        Some(3.0)
    );
    // The first stripe call, the oauth2 call and the production call asked the registry.
    assert_eq!(
        get(r#"connect_authorization_cache_total{result="miss"}"#),
        Some(3.0)
    );
    assert_eq!(
        get(r#"connect_authorization_cache_total{result="hit"}"#),
        Some(1.0)
    );
    // Both teams' issuers, fetched once at startup.
    assert_eq!(
        sample(&broker, r#"connect_jwks_fetches_total{outcome="ok"}"#),
        Some(2.0)
    );
    assert_eq!(
        get(r#"connect_provider_requests_total{outcome="ok",type="oauth2"}"#),
        Some(1.0)
    );
    assert_eq!(
        get(
            r#"connect_grpc_requests_total{code="OK",method="/connect.broker.v1.TokenBroker/GetToken"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        get(
            r#"connect_grpc_requests_total{code="PERMISSION_DENIED",method="/connect.broker.v1.TokenBroker/GetToken"}"#
        ),
        Some(1.0)
    );

    let registry = scrape(stack.local().registry_metrics_addr().unwrap()).await;
    assert_eq!(
        since(
            &registry_before,
            &registry,
            r#"connect_grpc_requests_total{code="OK",method="/connect.registry.v1.RegistryRuntime/Authorize"}"#
        ),
        Some(2.0),
        "{registry}"
    );
    assert_eq!(
        since(
            &registry_before,
            &registry,
            r#"connect_grpc_requests_total{code="PERMISSION_DENIED",method="/connect.registry.v1.RegistryRuntime/Authorize"}"#
        ),
        Some(1.0)
    );
    // An unknown method does not become a label of its own.
    let missing = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
        .post(format!(
            "http://{}/connect.nothing.v1.X/Y",
            stack.registry_addr()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(missing.headers()["grpc-status"], "12");
    let registry = scrape(stack.local().registry_metrics_addr().unwrap()).await;
    assert!(!registry.contains("connect.nothing"), "{registry}");
    assert_eq!(
        sample(
            &registry,
            r#"connect_grpc_requests_total{code="UNIMPLEMENTED",method="unknown"}"#
        ),
        Some(1.0)
    );
    stack.stop().await;
}
