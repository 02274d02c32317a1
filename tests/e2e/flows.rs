//! `GetToken` end to end: what is allowed, what is denied, and what happens when a dependency
//! goes away.

use std::time::Duration;

use connect_proto::{broker::v1 as bpb, registry::v1 as rpb};
use dev_issuer::Alg;
use tonic::Code;

use crate::harness::{EndpointMode, Stack, TokenEndpoint, assert_denied};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_connector_hands_its_key_to_a_linked_environment() {
    let stack = Stack::start().await;
    for alg in [Alg::RS256, Alg::ES256] {
        let token = stack.acme.token_with("prj_web", "preview", alg);
        let answer = stack.get_token(&token, "api-key/stripe").await.unwrap();
        assert_eq!(answer.token, "sk_acme_stripe");
        assert_eq!(answer.token_id.len(), 16, "{}", answer.token_id);
        assert!(answer.expires_at.is_none());
        let connector = answer.connector.unwrap();
        assert_eq!(
            (connector.uid.as_str(), connector.r#type.as_str()),
            ("api-key/stripe", "api-key")
        );
        assert!(connector.id.starts_with("conn_"));
        assert!(answer.scopes.is_empty());
        // By id as by uid; one credential keeps its token id (the ledger's) across hand-outs.
        let again = stack.get_token(&token, &connector.id).await.unwrap();
        assert_eq!(again.token, "sk_acme_stripe");
        assert_eq!(again.token_id, answer.token_id);
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth2_connector_issues_client_credentials_tokens_and_caches_them() {
    let stack = Stack::start().await;
    let endpoint = TokenEndpoint::start().await;
    stack
        .linked_oauth_connector(
            "oauth2/crm",
            &endpoint.url,
            &[
                ("scopes", "contacts.read"),
                ("allowed_scopes", "contacts.read contacts.write"),
            ],
        )
        .await;
    let token = stack.acme.token("prj_web", "preview");

    let first = stack.get_token(&token, "oauth2/crm").await.unwrap();
    assert!(first.token.starts_with("at_1_"), "{first:?}");
    assert_eq!(first.scopes, ["contacts.read"]);
    let expires = first.expires_at.unwrap().seconds - chrono_now();
    assert!((3500..=3600).contains(&expires), "expires in {expires}s");
    assert_eq!(first.connector.as_ref().unwrap().r#type, "oauth2");

    // Cached per (connector, scopes): no second provider call.
    let second = stack.get_token(&token, "oauth2/crm").await.unwrap();
    assert_eq!(second.token, first.token);
    assert_eq!(
        second.token_id, first.token_id,
        "one credential, one token id"
    );
    assert_eq!(endpoint.calls(), 1);

    // Other scopes are another token; concurrent misses make one provider call.
    let request = || bpb::GetTokenRequest {
        connector: "oauth2/crm".into(),
        scopes: vec!["contacts.write".into(), "contacts.read".into()],
        ..Default::default()
    };
    let answers =
        futures::future::join_all((0..10).map(|_| stack.get_token_with(&token, request()))).await;
    let tokens: std::collections::HashSet<String> =
        answers.into_iter().map(|a| a.unwrap().token).collect();
    assert_eq!(tokens.len(), 1);
    assert_eq!(endpoint.calls(), 2);

    // A scope the connector does not allow is refused before the provider is asked.
    let more = bpb::GetTokenRequest {
        connector: "oauth2/crm".into(),
        scopes: vec!["admin".into()],
        ..Default::default()
    };
    assert_denied(
        stack.get_token_with(&token, more).await,
        Code::PermissionDenied,
        "SCOPE_NOT_ALLOWED",
        "ScopeNotAllowedError",
    );
    assert_eq!(endpoint.calls(), 2);

    // Provider answers: 4xx → no valid token; 5xx → unavailable.
    let fresh = |scope: &str| bpb::GetTokenRequest {
        connector: "oauth2/crm".into(),
        scopes: vec![scope.into()],
        ..Default::default()
    };
    endpoint.set_mode(EndpointMode::RejectClient);
    assert_denied(
        stack.get_token_with(&token, fresh("contacts.write")).await,
        Code::FailedPrecondition,
        "NO_VALID_TOKEN",
        "NoValidTokenError",
    );
    endpoint.set_mode(EndpointMode::ServerError);
    assert_denied(
        stack.get_token_with(&token, fresh("contacts.write")).await,
        Code::Unavailable,
        "PROVIDER_UNAVAILABLE",
        "ProviderUnavailableError",
    );
    endpoint.set_mode(EndpointMode::Issue);
    assert!(
        stack
            .get_token_with(&token, fresh("contacts.write"))
            .await
            .is_ok()
    );

    // A user subject cannot be served by the client credentials grant.
    let user = bpb::GetTokenRequest {
        connector: "oauth2/crm".into(),
        subject: Some(bpb::Subject {
            kind: Some(bpb::subject::Kind::User(bpb::UserSubject {
                id: "u_1".into(),
            })),
        }),
        ..Default::default()
    };
    assert_denied(
        stack.get_token_with(&token, user).await,
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
        "UserAuthorizationRequiredError",
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_token_endpoint_is_provider_unavailable() {
    let stack = Stack::start().await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", closed.local_addr().unwrap());
    drop(closed);
    stack.linked_oauth_connector("oauth2/gone", &url, &[]).await;
    let token = stack.acme.token("prj_web", "preview");
    assert_denied(
        stack.get_token(&token, "oauth2/gone").await,
        Code::Unavailable,
        "PROVIDER_UNAVAILABLE",
        "ProviderUnavailableError",
    );
    stack.stop().await;
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_without_a_link_is_denied() {
    let stack = Stack::start().await;
    let token = stack.acme.token("prj_docs", "preview");
    assert_denied(
        stack.get_token(&token, "api-key/stripe").await,
        Code::PermissionDenied,
        "CLIENT_NOT_LINKED_TO_PROJECT",
        "ClientNotLinkedToProjectError",
    );
    // A project the registry has never heard of is no different.
    let token = stack.acme.token("prj_unknown", "preview");
    assert_denied(
        stack.get_token(&token, "api-key/stripe").await,
        Code::PermissionDenied,
        "CLIENT_NOT_LINKED_TO_PROJECT",
        "ClientNotLinkedToProjectError",
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_another_environment_is_denied() {
    let stack = Stack::start().await;
    for env in ["production", "development"] {
        let token = stack.acme.token("prj_web", env);
        assert_denied(
            stack.get_token(&token, "api-key/stripe").await,
            Code::PermissionDenied,
            "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
            "ClientNotEnabledForEnvironmentError",
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_connector_is_not_found() {
    let stack = Stack::start().await;
    let token = stack.acme.token("prj_web", "preview");
    for connector in ["api-key/nope", "conn_000000000000000000000000"] {
        assert_denied(
            stack.get_token(&token, connector).await,
            Code::NotFound,
            "CONNECTOR_NOT_FOUND",
            "ConnectorNotFoundError",
        );
    }
    let status = assert_denied(
        stack.get_token(&token, "").await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        "InvalidArgumentError",
    );
    assert!(status.message().contains("connector"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_teams_connector_is_not_found() {
    let stack = Stack::start().await;
    let acme_connector = stack
        .admin(&stack.acme)
        .get_connector(rpb::GetConnectorRequest {
            connector: "api-key/stripe".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut globex = stack.admin(&stack.globex);
    globex
        .create_project(rpb::CreateProjectRequest {
            id: "prj_shop".into(),
            name: "shop".into(),
        })
        .await
        .unwrap();
    let token = stack.globex.token("prj_shop", "preview");
    for connector in ["api-key/stripe", acme_connector.id.as_str()] {
        assert_denied(
            stack.get_token(&token, connector).await,
            Code::NotFound,
            "CONNECTOR_NOT_FOUND",
            "ConnectorNotFoundError",
        );
    }
    // Globex's token claiming to be Acme's deployment: the issuer is not Acme's.
    let forged = stack.globex.issuer.mint(
        &stack.acme.deployment("prj_web", "web", "preview"),
        Duration::from_secs(600),
        Alg::RS256,
    );
    assert_denied(
        stack.get_token(&forged, "api-key/stripe").await,
        Code::Unauthenticated,
        "ISSUER_NOT_TRUSTED",
        "IssuerNotTrustedError",
    );
    stack.stop().await;
}

/// Without the authorization cache every call asks the registry, so the very next call after a
/// detach is denied. (With it, the detach reaches the broker through the change feed; see
/// `cache::every_change_that_alters_an_answer_reaches_a_caching_broker`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detaching_denies_the_very_next_call() {
    let stack = Stack::start_with(|c| c.authz_cache_size = 0).await;
    let token = stack.acme.token("prj_web", "preview");
    stack.get_token(&token, "api-key/stripe").await.unwrap();
    stack
        .admin(&stack.acme)
        .detach_project(rpb::DetachProjectRequest {
            connector: "api-key/stripe".into(),
            project: "web".into(),
        })
        .await
        .unwrap();
    assert_denied(
        stack.get_token(&token, "api-key/stripe").await,
        Code::PermissionDenied,
        "CLIENT_NOT_LINKED_TO_PROJECT",
        "ClientNotLinkedToProjectError",
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_down_means_unavailable_and_no_token() {
    let mut stack = Stack::start_with(|c| c.authz_max_staleness = Duration::from_millis(300)).await;
    let token = stack.acme.token("prj_web", "preview");
    stack.get_token(&token, "api-key/stripe").await.unwrap();
    stack.stop_registry().await;
    // A question never answered before has no answer anywhere.
    assert_denied(
        stack.get_token(&token, "api-key/other").await,
        Code::Unavailable,
        "REGISTRY_UNAVAILABLE",
        "RegistryUnavailableError",
    );
    // A cached answer outlives the registry's feed by the staleness limit at most.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_denied(
        stack.get_token(&token, "api-key/stripe").await,
        Code::Unavailable,
        "REGISTRY_UNAVAILABLE",
        "RegistryUnavailableError",
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_never_answers_times_out_as_unavailable() {
    // A listener that accepts connections and says nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let stack = Stack::start().await;
    // A second broker, pointed at the silent registry, with a short registry timeout.
    let mut config = token_broker::BrokerConfig::local(
        format!("http://{silent_addr}"),
        secrecy::SecretString::from("cnk_unused"),
        vec![stack.acme.issuer.issuer_url()],
        crate::harness::AUDIENCE.to_owned(),
    );
    config.registry_timeout = Duration::from_millis(300);
    let app = token_broker::App::build(config).await.unwrap();
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let mut client = bpb::token_broker_client::TokenBrokerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(bpb::GetTokenRequest {
        connector: "api-key/stripe".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", stack.acme.token("prj_web", "preview"))
            .parse()
            .unwrap(),
    );
    let started = std::time::Instant::now();
    assert_denied(
        client.get_token(request).await,
        Code::Unavailable,
        "REGISTRY_UNAVAILABLE",
        "RegistryUnavailableError",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let _ = stop.send(());
    let _ = server.await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_key_cache_keeps_verifying_through_a_jwks_outage() {
    let stack = Stack::start().await;
    let token = stack.acme.token("prj_web", "preview");
    stack.get_token(&token, "api-key/stripe").await.unwrap();
    stack.acme.issuer.set_online(false);
    let fresh = stack.acme.token("prj_web", "preview");
    assert_eq!(
        stack
            .get_token(&fresh, "api-key/stripe")
            .await
            .unwrap()
            .token,
        "sk_acme_stripe"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_older_than_the_stale_limit_stop_verifying_during_an_outage() {
    let stack = Stack::start_with(|c| {
        c.jwks_max_stale = Duration::ZERO;
        c.kid_refetch_cooldown = Duration::ZERO;
    })
    .await;
    let token = stack.acme.token("prj_web", "preview");
    stack.get_token(&token, "api-key/stripe").await.unwrap();
    stack.acme.issuer.set_online(false);
    assert_denied(
        stack.get_token(&token, "api-key/stripe").await,
        Code::Unavailable,
        "JWKS_UNAVAILABLE",
        "JwksUnavailableError",
    );
    stack.acme.issuer.set_online(true);
    stack.get_token(&token, "api-key/stripe").await.unwrap();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_a_discovery_document_naming_another_issuer_are_never_used() {
    // Served at one address, its discovery document claims to be another issuer.
    let liar = dev_issuer::DevIssuer::start_as(
        "127.0.0.1:0".parse().unwrap(),
        Some("https://issuer.example.com".into()),
    )
    .await
    .unwrap();
    let served_at = format!("http://{}", liar.local_addr());
    let trusted = connect_types::IssuerUrl::parse(&served_at).unwrap();
    let stack = Stack::start_with(move |c| c.trusted_issuers.push(trusted)).await;
    let mut claims = liar.claims(
        &stack.acme.deployment("prj_web", "web", "preview"),
        Duration::from_secs(600),
    );
    claims["iss"] = served_at.into();
    let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": liar.kid(Alg::RS256) });
    let token = liar.sign(&header, &claims, Alg::RS256);
    assert_denied(
        stack.get_token(&token, "api-key/stripe").await,
        Code::Unavailable,
        "JWKS_UNAVAILABLE",
        "JwksUnavailableError",
    );
    assert_eq!(
        liar.jwks_fetches(),
        0,
        "the JWKS of a mismatched discovery document is not fetched"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_are_picked_up_with_one_fetch() {
    let stack = Stack::start_with(|c| c.kid_refetch_cooldown = Duration::ZERO).await;
    let token = stack.acme.token("prj_web", "preview");
    stack.get_token(&token, "api-key/stripe").await.unwrap();
    let fetches = stack.acme.issuer.jwks_fetches();
    stack.acme.issuer.rotate();
    let rotated = stack.acme.token("prj_web", "preview");
    // Twenty concurrent calls with the new kid: one fetch between them.
    let answers =
        futures::future::join_all((0..20).map(|_| stack.get_token(&rotated, "api-key/stripe")))
            .await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().is_ok_and(|a| a.token == "sk_acme_stripe")),
        "{answers:?}"
    );
    assert_eq!(stack.acme.issuer.jwks_fetches(), fetches + 1);
    // The retired key is gone from the JWKS: its tokens no longer verify.
    assert_denied(
        stack.get_token(&token, "api-key/stripe").await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
        "InvalidTokenError",
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_refetch_at_most_once_per_cooldown() {
    let stack = Stack::start().await;
    let token = stack.acme.token("prj_web", "preview");
    stack.get_token(&token, "api-key/stripe").await.unwrap();
    let fetches = stack.acme.issuer.jwks_fetches();
    let claims = stack.acme.issuer.claims(
        &stack.acme.deployment("prj_web", "web", "preview"),
        Duration::from_secs(60),
    );
    for i in 0..5 {
        let header =
            serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": format!("made-up-{i}") });
        let forged = stack.acme.issuer.sign(&header, &claims, Alg::RS256);
        assert_denied(
            stack.get_token(&forged, "api-key/stripe").await,
            Code::Unauthenticated,
            "INVALID_TOKEN",
            "InvalidTokenError",
        );
    }
    assert!(
        stack.acme.issuer.jwks_fetches() <= fetches + 1,
        "{} fetches",
        stack.acme.issuer.jwks_fetches() - fetches
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_mixed_calls_get_exactly_the_right_answers() {
    // Correctness under load, not latency: a loaded machine must not turn answers into timeouts.
    let stack = Stack::start_with(|c| c.registry_timeout = Duration::from_secs(60)).await;
    // Acme: web → stripe for preview (from the stack), docs → stripe for production.
    stack
        .attach(&stack.acme, "api-key/stripe", "prj_docs", &["production"])
        .await;
    // Globex: shop → its own connector for development and preview.
    let mut globex = stack.admin(&stack.globex);
    globex
        .create_project(rpb::CreateProjectRequest {
            id: "prj_shop".into(),
            name: "shop".into(),
        })
        .await
        .unwrap();
    stack
        .create_connector(
            &stack.globex,
            rpb::CreateConnectorRequest {
                uid: "api-key/stripe".into(),
                secrets: [("api_key".to_owned(), "sk_globex_stripe".to_owned())].into(),
                ..Default::default()
            },
        )
        .await;
    stack
        .attach(
            &stack.globex,
            "api-key/stripe",
            "prj_shop",
            &["development", "preview"],
        )
        .await;

    #[derive(Clone, Copy)]
    enum Team {
        Acme,
        Globex,
    }
    let cases: Vec<(Team, &str, &str, Option<&str>)> = vec![
        (Team::Acme, "prj_web", "preview", Some("sk_acme_stripe")),
        (Team::Acme, "prj_web", "production", None),
        (Team::Acme, "prj_web", "development", None),
        (Team::Acme, "prj_docs", "production", Some("sk_acme_stripe")),
        (Team::Acme, "prj_docs", "preview", None),
        (Team::Acme, "prj_shop", "preview", None),
        (
            Team::Globex,
            "prj_shop",
            "development",
            Some("sk_globex_stripe"),
        ),
        (
            Team::Globex,
            "prj_shop",
            "preview",
            Some("sk_globex_stripe"),
        ),
        (Team::Globex, "prj_shop", "production", None),
        (Team::Globex, "prj_web", "preview", None),
    ];
    let tokens: Vec<String> = cases
        .iter()
        .map(|(team, project, env, _)| match team {
            Team::Acme => stack.acme.token(project, env),
            Team::Globex => stack.globex.token(project, env),
        })
        .collect();
    let calls = (0..1000).map(|i| {
        let case = i % cases.len();
        let token = tokens[case].clone();
        let expected = cases[case].3;
        let stack = &stack;
        async move {
            (
                case,
                expected,
                stack.get_token(&token, "api-key/stripe").await,
            )
        }
    });
    let results = futures::stream::iter(calls)
        .buffer_unordered(100)
        .collect::<Vec<_>>()
        .await;
    let mut wrong = Vec::new();
    for (case, expected, result) in &results {
        let right = match (expected, result) {
            (Some(secret), Ok(answer)) => answer.token == *secret,
            (None, Err(status)) => status.code() == Code::PermissionDenied,
            _ => false,
        };
        if !right {
            wrong.push((
                case,
                result
                    .as_ref()
                    .map(|a| a.token_id.clone())
                    .map_err(|s| s.code()),
            ));
        }
    }
    assert_eq!(results.len(), 1000);
    assert!(wrong.is_empty(), "{} wrong answers: {wrong:?}", wrong.len());
    stack.stop().await;
}

use futures::StreamExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_ttl_replaces_a_token_that_would_expire_too_soon() {
    let stack = Stack::start().await;
    let endpoint = TokenEndpoint::start().await;
    stack
        .linked_oauth_connector("oauth2/crm", &endpoint.url, &[])
        .await;
    let token = stack.acme.token("prj_web", "preview");
    let with_ttl = |seconds: i64| bpb::GetTokenRequest {
        connector: "oauth2/crm".into(),
        min_ttl: Some(prost_types::Duration { seconds, nanos: 0 }),
        ..Default::default()
    };
    // The provider's tokens live an hour: half an hour is served from the cache.
    let first = stack.get_token_with(&token, with_ttl(1800)).await.unwrap();
    let again = stack.get_token_with(&token, with_ttl(1800)).await.unwrap();
    assert_eq!(first.token, again.token);
    assert_eq!(endpoint.calls(), 1);
    // Two hours is more than any of its tokens lives: one new try, then NO_VALID_TOKEN.
    assert_denied(
        stack.get_token_with(&token, with_ttl(7200)).await,
        Code::FailedPrecondition,
        "NO_VALID_TOKEN",
        "NoValidTokenError",
    );
    assert_eq!(endpoint.calls(), 2);
    // Out of range, and resources no type here takes.
    let status = assert_denied(
        stack.get_token_with(&token, with_ttl(3 * 24 * 3600)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        "InvalidArgumentError",
    );
    assert!(status.message().contains("min_ttl"), "{status:?}");
    let status = assert_denied(
        stack
            .get_token_with(
                &token,
                bpb::GetTokenRequest {
                    connector: "oauth2/crm".into(),
                    resources: vec!["acme/web".into()],
                    ..Default::default()
                },
            )
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        "InvalidArgumentError",
    );
    assert!(status.message().contains("resources"), "{status:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_subject_is_exchanged_at_the_provider() {
    let stack = Stack::start().await;
    let endpoint = TokenEndpoint::start().await;
    stack
        .linked_oauth_connector("oauth2/exchange", &endpoint.url, &[])
        .await;
    let oidc = stack.acme.token("prj_web", "preview");
    let exchange = |subject: &str, kind: &str| bpb::GetTokenRequest {
        connector: "oauth2/exchange".into(),
        subject: Some(bpb::Subject {
            kind: Some(bpb::subject::Kind::Token(bpb::TokenSubject {
                token: subject.into(),
                token_type: kind.into(),
            })),
        }),
        scopes: vec!["mail.read".into()],
        ..Default::default()
    };
    let answer = stack
        .get_token_with(&oidc, exchange("st_user_4711", ""))
        .await
        .unwrap();
    assert!(answer.token.starts_with("xt_1_"), "{answer:?}");
    assert_eq!(answer.scopes, ["mail.read"]);
    let lives = answer.expires_at.unwrap().seconds - chrono_now();
    assert!((590..=600).contains(&lives), "{lives}");
    assert_eq!(
        endpoint.last_exchange(),
        Some((
            "st_user_4711".to_owned(),
            "urn:ietf:params:oauth:token-type:access_token".to_owned()
        ))
    );
    // The same subject token is served from the cache; another one is exchanged.
    let again = stack
        .get_token_with(&oidc, exchange("st_user_4711", ""))
        .await
        .unwrap();
    assert_eq!(again.token, answer.token);
    assert_eq!(endpoint.calls(), 1);
    let jwt_type = "urn:ietf:params:oauth:token-type:jwt";
    let other = stack
        .get_token_with(&oidc, exchange("st_user_4712", jwt_type))
        .await
        .unwrap();
    assert_ne!(other.token, answer.token);
    assert_eq!(endpoint.last_exchange().unwrap().1, jwt_type);
    // The app's own client credentials token is another credential again.
    let app = stack.get_token(&oidc, "oauth2/exchange").await.unwrap();
    assert!(app.token.starts_with("at_"), "{app:?}");
    // A refused exchange is the provider's "no".
    assert_denied(
        stack
            .get_token_with(&oidc, exchange(crate::harness::REFUSED_SUBJECT_TOKEN, ""))
            .await,
        Code::FailedPrecondition,
        "NO_VALID_TOKEN",
        "NoValidTokenError: the provider refused the token exchange (invalid_grant)",
    );
    // Types that do not exchange say so; an empty subject token is malformed.
    let mut api_key = exchange("st_user_4711", "");
    api_key.connector = "api-key/stripe".into();
    let status = assert_denied(
        stack.get_token_with(&oidc, api_key).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        "InvalidArgumentError",
    );
    assert!(status.message().contains("subject.token"), "{status:?}");
    assert_denied(
        stack.get_token_with(&oidc, exchange("", "")).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        "InvalidArgumentError",
    );
    // The ledger says a token was exchanged, never which.
    let rows = stack
        .admin(&stack.acme)
        .list_issuances(rpb::ListIssuancesRequest {
            connector: "oauth2/exchange".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .issuances;
    let subjects: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(subjects, ["app", "token", "token"]);
    stack.stop().await;
    let logs = crate::harness::captured_logs();
    assert!(!logs.contains("st_user_4711") && !logs.contains("st_user_4712"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_bearer_subject_gets_a_token_for_an_assertion_the_broker_signs() {
    let stack = Stack::start().await;
    let endpoint = TokenEndpoint::start().await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    endpoint.accept_assertions_from(&key.public_key_pem());
    stack
        .create_connector(
            &stack.acme,
            rpb::CreateConnectorRequest {
                uid: "oauth2/workspace".into(),
                config: [
                    ("token_url".to_owned(), endpoint.url.clone()),
                    (
                        "jwt_bearer_subjects".to_owned(),
                        "svc@acme.example, ops@*".to_owned(),
                    ),
                ]
                .into(),
                secrets: [
                    ("client_id".to_owned(), crate::harness::CLIENT_ID.to_owned()),
                    ("assertion_key".to_owned(), key.serialize_pem()),
                ]
                .into(),
                ..Default::default()
            },
        )
        .await;
    stack
        .attach(&stack.acme, "oauth2/workspace", "prj_web", &["preview"])
        .await;
    let oidc = stack.acme.token("prj_web", "preview");
    let bearer = |sub: &str, claims: &[(&str, &str)]| bpb::GetTokenRequest {
        connector: "oauth2/workspace".into(),
        subject: Some(bpb::Subject {
            kind: Some(bpb::subject::Kind::JwtBearer(bpb::JwtBearerSubject {
                sub: sub.into(),
                additional_claims: claims
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    let answer = stack
        .get_token_with(&oidc, bearer("svc@acme.example", &[("tenant", "acme")]))
        .await
        .unwrap();
    assert_eq!(answer.token, "jb_1");
    let claims = endpoint.last_assertion().unwrap();
    assert_eq!(
        claims["iss"],
        crate::harness::CLIENT_ID,
        "iss defaults to the client id"
    );
    assert_eq!(claims["sub"], "svc@acme.example");
    assert_eq!(
        claims["aud"],
        endpoint.url.as_str(),
        "aud defaults to the token endpoint"
    );
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    assert_eq!(claims["jti"].as_str().unwrap().len(), 24);
    // Cached: no second assertion for the same subject; another subject signs a new one.
    stack
        .get_token_with(&oidc, bearer("svc@acme.example", &[("tenant", "acme")]))
        .await
        .unwrap();
    assert_eq!(endpoint.calls(), 1);
    let other = stack
        .get_token_with(&oidc, bearer("ops@acme.example", &[]))
        .await
        .unwrap();
    assert_eq!(other.token, "jb_2");
    assert_ne!(
        endpoint.last_assertion().unwrap()["jti"],
        claims["jti"],
        "every assertion has its own jti"
    );
    // Reserved claims are the broker's to set.
    let status = assert_denied(
        stack
            .get_token_with(&oidc, bearer("svc@acme.example", &[("exp", "9999999999")]))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        "InvalidArgumentError",
    );
    assert!(status.message().contains("additional_claims"), "{status:?}");
    // The connector's admins choose the subjects; iss and aud are theirs too. Refused before any
    // provider call.
    let calls = endpoint.calls();
    assert_denied(
        stack
            .get_token_with(&oidc, bearer("root@acme.example", &[]))
            .await,
        Code::PermissionDenied,
        "SUBJECT_NOT_ALLOWED",
        "SubjectNotAllowedError: JWT bearer subject 'root@acme.example' is not among the connector's jwt_bearer_subjects",
    );
    for (field, subject) in [
        (
            "subject.jwt_bearer.iss",
            bpb::JwtBearerSubject {
                sub: "svc@acme.example".into(),
                iss: "https://attacker.example".into(),
                ..Default::default()
            },
        ),
        (
            "subject.jwt_bearer.aud",
            bpb::JwtBearerSubject {
                sub: "svc@acme.example".into(),
                aud: "https://other-provider.example/token".into(),
                ..Default::default()
            },
        ),
    ] {
        let status = assert_denied(
            stack
                .get_token_with(
                    &oidc,
                    bpb::GetTokenRequest {
                        connector: "oauth2/workspace".into(),
                        subject: Some(bpb::Subject {
                            kind: Some(bpb::subject::Kind::JwtBearer(subject)),
                        }),
                        ..Default::default()
                    },
                )
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "InvalidArgumentError",
        );
        assert!(status.message().contains(field), "{status:?}");
    }
    assert_eq!(
        endpoint.calls(),
        calls,
        "no provider call for a refused subject"
    );
    // The configured issuer signs from now on (an update changes the connector's answers).
    stack
        .admin(&stack.acme)
        .update_connector(rpb::UpdateConnectorRequest {
            connector: "oauth2/workspace".into(),
            config: [
                ("token_url".to_owned(), endpoint.url.clone()),
                (
                    "jwt_bearer_subjects".to_owned(),
                    "svc@acme.example, ops@*".to_owned(),
                ),
                ("assertion_iss".to_owned(), "acme-signer".to_owned()),
            ]
            .into(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["config".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    stack.feed_caught_up().await;
    stack
        .get_token_with(&oidc, bearer("ops@acme.example", &[("n", "2")]))
        .await
        .unwrap();
    assert_eq!(endpoint.last_assertion().unwrap()["iss"], "acme-signer");
    // An assertion the provider does not accept (signed by another key) is its "no".
    let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    endpoint.accept_assertions_from(&stranger.public_key_pem());
    assert_denied(
        stack
            .get_token_with(&oidc, bearer("ops@new.example", &[]))
            .await,
        Code::FailedPrecondition,
        "NO_VALID_TOKEN",
        "NoValidTokenError: the provider refused the JWT bearer grant (invalid_grant)",
    );
    let rows = stack
        .admin(&stack.acme)
        .list_issuances(rpb::ListIssuancesRequest {
            connector: "oauth2/workspace".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .issuances;
    let subjects: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "jwt_bearer:ops@acme.example",
            "jwt_bearer:ops@acme.example",
            "jwt_bearer:svc@acme.example"
        ]
    );
    stack.stop().await;
    assert!(!crate::harness::captured_logs().contains("PRIVATE KEY"));
}
