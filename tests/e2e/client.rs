//! The client library (`connect-client`) against the real broker: its cache, its single flight,
//! `min_ttl`, `force_refresh`, `invalidate`, a rotating token file, and typed errors.

use std::{net::SocketAddr, time::Duration};

use connect_client::{ClientBuilder, ConnectClient, Error, OidcToken, TokenParams};
use connect_types::Reason;
use secrecy::{ExposeSecret, SecretString};

use crate::harness::{Stack, TokenEndpoint, scrape};

/// How many `GetToken` calls the broker answered, whatever their outcome.
async fn broker_calls(stack: &Stack) -> u64 {
    let text = scrape(stack.local().broker_metrics_addr().unwrap()).await;
    text.lines()
        .filter(|l| {
            l.starts_with("connect_grpc_requests_total{")
                && l.contains("/connect.broker.v1.TokenBroker/GetToken")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn client(stack: &Stack, token: String) -> ConnectClient {
    ClientBuilder::new(format!("http://{}", stack.broker_addr()))
        .oidc_token(OidcToken::Static(SecretString::from(token)))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_caches_coalesces_and_refreshes() {
    let stack =
        Stack::start_with(|c| c.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)))).await;
    let endpoint = TokenEndpoint::start().await;
    stack
        .linked_oauth_connector("oauth2/crm", &endpoint.url, &[])
        .await;
    let connect = client(&stack, stack.acme.token("prj_web", "preview"));
    let params = TokenParams::default();

    // 100 concurrent calls for one key: one broker call, one token for all.
    let answers =
        futures::future::join_all((0..100).map(|_| connect.get_token("oauth2/crm", &params))).await;
    let ids: std::collections::HashSet<String> =
        answers.into_iter().map(|a| a.unwrap().token_id).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(broker_calls(&stack).await, 1);

    // A cache hit asks nobody.
    let token = connect.get_token("oauth2/crm", &params).await.unwrap();
    assert_eq!(broker_calls(&stack).await, 1);
    assert!(token.token.expose_secret().starts_with("at_1_"));
    assert_eq!(
        (token.connector_uid.as_str(), token.connector_type.as_str()),
        ("oauth2/crm", "oauth2")
    );
    let lives = token
        .expires_at
        .unwrap()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        lives > Duration::from_secs(3500) && lives <= Duration::from_secs(3600),
        "{lives:?}"
    );
    assert!(!format!("{token:?}").contains(token.token.expose_secret()));

    // A token that would not live `min_ttl` longer is fetched again, and the broker (told the
    // same margin) replaces its own cached copy with a fresh provider token.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fresh = connect
        .get_token(
            "oauth2/crm",
            &params.clone().min_ttl(Duration::from_secs(3599)),
        )
        .await
        .unwrap();
    assert_eq!(broker_calls(&stack).await, 2);
    assert_ne!(fresh.token.expose_secret(), token.token.expose_secret());
    assert_eq!(endpoint.calls(), 2);
    // So is a forced one, and one whose entry was dropped.
    connect
        .get_token("oauth2/crm", &params.clone().force_refresh())
        .await
        .unwrap();
    assert_eq!(broker_calls(&stack).await, 3);
    connect.invalidate("oauth2/crm", &params);
    connect.get_token("oauth2/crm", &params).await.unwrap();
    assert_eq!(broker_calls(&stack).await, 4);
    // Other scopes are another key; the order of scopes is not.
    connect
        .get_token("oauth2/crm", &params.clone().scopes(["b", "a"]))
        .await
        .unwrap();
    connect
        .get_token("oauth2/crm", &params.clone().scopes(["a", "b", "a"]))
        .await
        .unwrap();
    assert_eq!(broker_calls(&stack).await, 5);
    // Another caller is another key.
    let production = client(&stack, stack.acme.token("prj_web", "production"));
    assert!(production.get_token("oauth2/crm", &params).await.is_err());
    assert_eq!(broker_calls(&stack).await, 6);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_picked_up_and_errors_are_typed() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("oidc-token");
    std::fs::write(&file, stack.acme.token("prj_web", "preview")).unwrap();
    let connect = ClientBuilder::new(format!("http://{}", stack.broker_addr()))
        .oidc_token(OidcToken::file(&file))
        .build()
        .unwrap();
    let token = connect
        .get_token("api-key/stripe", &TokenParams::default())
        .await
        .unwrap();
    assert_eq!(token.token.expose_secret(), "sk_acme_stripe");
    assert_eq!(token.expires_at, None);

    // The platform rotates the file: the next call presents the new token.
    std::fs::write(&file, stack.acme.token("prj_web", "production")).unwrap();
    let err = connect
        .get_token("api-key/stripe", &TokenParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ClientNotEnabledForEnvironment(_)),
        "{err:?}"
    );
    assert_eq!(err.reason(), Some(Reason::ClientNotEnabledForEnvironment));
    assert!(
        err.to_string()
            .starts_with("ClientNotEnabledForEnvironmentError: "),
        "{err}"
    );

    let docs = client(&stack, stack.acme.token("prj_docs", "preview"));
    let err = docs
        .get_token("api-key/stripe", &TokenParams::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ClientNotLinkedToProject(_)), "{err:?}");
    let err = docs
        .get_token("api-key/nope", &TokenParams::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConnectorNotFound(_)), "{err:?}");
    let err = client(&stack, "not.a.jwt".into())
        .get_token("api-key/stripe", &TokenParams::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidToken(_)), "{err:?}");
    let err = client(&stack, stack.globex.token("prj_web", "preview"))
        .get_token("api-key/stripe", &TokenParams::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConnectorNotFound(_)), "{err:?}");

    // Nothing listening: unavailable, and transient.
    let err = ClientBuilder::new("http://127.0.0.1:9")
        .oidc_token(OidcToken::Static(SecretString::from("x".to_owned())))
        .build()
        .unwrap()
        .get_token("api-key/stripe", &TokenParams::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(err.is_transient());
    stack.stop().await;
}
