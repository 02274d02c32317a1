//! User grants end to end: the real brokers and registry against a loopback OAuth provider that
//! implements authorization code with PKCE, refresh with rotation (a used refresh token answers
//! `invalid_grant`) and RFC 7009, and counts its refreshes.

use std::time::Duration;

use connect_proto::{broker::v1 as bpb, registry::v1 as rpb};
use tonic::Code;

use crate::harness::{
    EndpointMode, Stack, StackOptions, TokenEndpoint, assert_denied, on_postgres,
};

const CRM: &str = "oauth2/crm";

fn for_user(user: &str) -> bpb::GetTokenRequest {
    bpb::GetTokenRequest {
        connector: CRM.into(),
        subject: Some(bpb::Subject {
            kind: Some(bpb::subject::Kind::User(bpb::UserSubject {
                id: user.into(),
            })),
        }),
        ..Default::default()
    }
}

fn in_seconds(s: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + s,
        nanos: 0,
    })
}

/// Acme's `oauth2/crm` at `endpoint` (with its revocation and authorize endpoints), linked to
/// `prj_web` for preview and production.
async fn crm(stack: &Stack, endpoint: &TokenEndpoint) {
    stack
        .linked_oauth_connector(
            CRM,
            &endpoint.url,
            &[
                ("revocation_url", endpoint.revocation_url().as_str()),
                ("authorize_url", endpoint.authorize_url().as_str()),
                ("user_scopes", "contacts.read"),
            ],
        )
        .await;
    stack
        .attach(&stack.acme, CRM, "prj_web", &["preview", "production"])
        .await;
    stack.feed_caught_up().await;
}

/// Imports `user`'s preview grant: `access` expiring in `expires_in` seconds, with `refresh`.
async fn import(stack: &Stack, user: &str, access: &str, refresh: &str, expires_in: i64) {
    let answer = stack
        .admin(&stack.acme)
        .import_grants(rpb::ImportGrantsRequest {
            connector: CRM.into(),
            grants: vec![rpb::ImportedGrant {
                user_id: user.into(),
                environment: "preview".into(),
                access_token: access.into(),
                refresh_token: refresh.into(),
                expire_time: in_seconds(expires_in),
                scopes: vec!["contacts.read".into()],
                project: "prj_web".into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.imported, 1, "{answer:?}");
}

async fn grant_states(stack: &Stack) -> Vec<(String, String)> {
    stack
        .admin(&stack.acme)
        .list_grants(rpb::ListGrantsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .grants
        .into_iter()
        .map(|g| (g.user_id, g.state))
        .collect()
}

/// One refresh is the promise while the leaseholder finishes within its lease; a debug build on a
/// loaded machine can take seconds per registry call, so these tests give it a minute (after
/// that, another broker may take over and is fenced: `a_broker_that_dies_mid_refresh…`).
fn patient_lease(config: &mut token_broker::BrokerConfig) {
    config.grant_lease = Duration::from_secs(60);
    config.registry_timeout = Duration::from_secs(10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_and_a_hundred_callers_refresh_an_expiring_grant_once() {
    one_refresh_across_brokers(Stack::start_with(patient_lease).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "TEST_DATABASE_URL is unset: the PostgreSQL variant does not run"
)]
async fn two_brokers_and_a_hundred_callers_refresh_an_expiring_grant_once_on_postgres() {
    if let Some(registry) = on_postgres().await {
        one_refresh_across_brokers(
            Stack::start_with_options(StackOptions {
                registry,
                broker: Box::new(patient_lease),
                ..Default::default()
            })
            .await,
        )
        .await;
    }
}

async fn one_refresh_across_brokers(stack: Stack) {
    let endpoint = TokenEndpoint::start().await;
    crm(&stack, &endpoint).await;
    let second = stack.second_broker(patient_lease).await;
    // Within the 30 s every caller asks for by default: it must be refreshed first.
    let refresh = endpoint.issue_refresh_token("ada");
    import(&stack, "ada", "ua_seed", &refresh, 10).await;
    let preview = stack.acme.token("prj_web", "preview");

    let first = (0..50).map(|_| stack.get_token_with(&preview, for_user("ada")));
    let other = (0..50).map(|_| second.get_token_with(&preview, for_user("ada")));
    let (first, other) = futures::future::join(
        futures::future::join_all(first),
        futures::future::join_all(other),
    )
    .await;
    let tokens: std::collections::HashSet<String> = first
        .into_iter()
        .chain(other)
        .map(|a| a.expect("every caller gets the token").token)
        .collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let token = tokens.into_iter().next().unwrap();
    assert!(
        token.starts_with("ua_ada_"),
        "the refreshed token, not the seed: {token}"
    );
    assert_eq!(endpoint.refreshes(), 1);

    // Fresh now: no refresh, from either broker.
    let again = second
        .get_token_with(&preview, for_user("ada"))
        .await
        .unwrap();
    assert_eq!(again.token, token);
    let answer = stack
        .get_token_with(&preview, for_user("ada"))
        .await
        .unwrap();
    assert!(answer.expires_at.unwrap().seconds > chrono::Utc::now().timestamp() + 3000);
    assert_eq!(endpoint.refreshes(), 1);

    // Another user's grant, and another environment's, are their own: none here.
    assert_denied(
        stack.get_token_with(&preview, for_user("bob")).await,
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
        "UserAuthorizationRequiredError",
    );
    let production = stack.acme.token("prj_web", "production");
    assert_denied(
        stack.get_token_with(&production, for_user("ada")).await,
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
        "UserAuthorizationRequiredError",
    );
    // A scope the user did not grant needs a new consent.
    let mut wider = for_user("ada");
    wider.scopes = vec!["contacts.write".into()];
    assert_denied(
        stack.get_token_with(&preview, wider).await,
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
        "UserAuthorizationRequiredError",
    );
    let rows = stack.ledger(CRM).await;
    assert!(
        rows.iter()
            .any(|r| r.subject == "user:ada" && r.environment == "preview")
    );
    assert!(!crate::harness::captured_logs().contains(&refresh));
    second.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_token_requires_consent_and_an_outage_keeps_the_grant() {
    let stack = Stack::start().await;
    let endpoint = TokenEndpoint::start().await;
    crm(&stack, &endpoint).await;
    let preview = stack.acme.token("prj_web", "preview");
    // A refresh token the provider does not honour.
    import(&stack, "ada", "ua_seed", "rt_unknown", 5).await;
    assert_denied(
        stack.get_token_with(&preview, for_user("ada")).await,
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
        "UserAuthorizationRequiredError",
    );
    assert_eq!(endpoint.refreshes(), 1);
    // From then on, no call to the provider: the user must consent again.
    assert_denied(
        stack.get_token_with(&preview, for_user("ada")).await,
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
        "UserAuthorizationRequiredError",
    );
    assert_eq!(endpoint.refreshes(), 1);

    // An outage: PROVIDER_UNAVAILABLE, and the grant is kept for the next call.
    let refresh = endpoint.issue_refresh_token("bob");
    import(&stack, "bob", "ua_seed_bob", &refresh, 5).await;
    endpoint.set_mode(crate::harness::EndpointMode::ServerError);
    assert_denied(
        stack.get_token_with(&preview, for_user("bob")).await,
        Code::Unavailable,
        "PROVIDER_UNAVAILABLE",
        "ProviderUnavailableError",
    );
    assert_eq!(
        grant_states(&stack).await,
        [
            ("ada".to_owned(), "needs_consent".to_owned()),
            ("bob".to_owned(), "refresh_failed".to_owned())
        ]
    );
    endpoint.set_mode(crate::harness::EndpointMode::Issue);
    let token = stack
        .get_token_with(&preview, for_user("bob"))
        .await
        .unwrap();
    assert!(token.token.starts_with("ua_bob_"));
    assert_eq!(grant_states(&stack).await[1].1, "active");
    let events = stack
        .admin(&stack.acme)
        .list_audit_events(rpb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    for action in [
        "grant.needs_consent",
        "grant.refresh_failed",
        "grant.recovered",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    stack.stop().await;
}

/// A client of the registry's runtime API with a new broker key, as a broker would be.
async fn runtime_client(
    stack: &Stack,
) -> rpb::registry_runtime_client::RegistryRuntimeClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        connect_runtime::BearerAuth,
    >,
> {
    use link_registry::domain::model::Role;
    use secrecy::ExposeSecret;
    let (_, key) = stack
        .local()
        .registry()
        .create_api_key(None, Role::Broker)
        .await
        .unwrap();
    rpb::registry_runtime_client::RegistryRuntimeClient::with_interceptor(
        crate::harness::channel(stack.registry_addr(), None).await,
        connect_runtime::BearerAuth::new(key.expose_secret()).unwrap(),
    )
}

/// A broker that leased the grant and refreshed it at the provider, then died before it
/// committed: the test plays that broker with the registry's broker RPCs.
async fn die_mid_refresh(
    stack: &Stack,
    endpoint: &TokenEndpoint,
    connector_id: &str,
    rotated_at: &str,
) {
    let mut registry = runtime_client(stack).await;
    let answer = registry
        .lease_grant(rpb::LeaseGrantRequest {
            key: Some(rpb::GrantKey {
                owner_id: "team_acme".into(),
                project_id: "prj_web".into(),
                connector_id: connector_id.into(),
                user_id: "ada".into(),
                environment: "preview".into(),
                installation_id: String::new(),
            }),
            min_ttl: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
            lease: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(rpb::lease_grant_response::Answer::Leased(lease)) = answer.answer else {
        panic!("expected the lease: {answer:?}");
    };
    // The provider answers (and rotates the refresh token); the broker dies before CommitGrant.
    let answer = reqwest::Client::new()
        .post(&endpoint.url)
        .basic_auth(
            crate::harness::CLIENT_ID,
            Some(crate::harness::CLIENT_SECRET),
        )
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", lease.refresh_token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{rotated_at}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_dies_mid_refresh_leaves_no_stuck_lease() {
    let stack = Stack::start_with(|c| c.grant_lease = Duration::from_secs(1)).await;
    let endpoint = TokenEndpoint::start().await;
    crm(&stack, &endpoint).await;
    let connector = stack
        .admin(&stack.acme)
        .get_connector(rpb::GetConnectorRequest {
            connector: CRM.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let preview = stack.acme.token("prj_web", "preview");

    // A provider that rotates: the old refresh token is refused, so the user must consent again,
    // after one more refresh attempt and no retry loop.
    let refresh = endpoint.issue_refresh_token("ada");
    import(&stack, "ada", "ua_seed", &refresh, 5).await;
    die_mid_refresh(&stack, &endpoint, &connector.id, "rotating").await;
    let started = std::time::Instant::now();
    assert_denied(
        stack.get_token_with(&preview, for_user("ada")).await,
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
        "UserAuthorizationRequiredError",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(endpoint.refreshes(), 2);
    assert_denied(
        stack.get_token_with(&preview, for_user("ada")).await,
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
        "UserAuthorizationRequiredError",
    );
    assert_eq!(endpoint.refreshes(), 2);

    // A provider that still honours the old refresh token: the next call succeeds.
    endpoint.reuse_refresh_tokens(true);
    let refresh = endpoint.issue_refresh_token("ada");
    import(&stack, "ada", "ua_seed", &refresh, 5).await;
    die_mid_refresh(&stack, &endpoint, &connector.id, "reusing").await;
    let token = stack
        .get_token_with(&preview, for_user("ada"))
        .await
        .unwrap();
    assert!(token.token.starts_with("ua_ada_"));
    assert_eq!(endpoint.refreshes(), 4);
    stack.stop().await;
}

/// A broker process killed (SIGKILL) while the provider still holds its refresh request: the
/// grant survives untouched, and the next caller, on another broker, refreshes it once, as soon as
/// the dead broker's lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_refresh_leaves_the_grant_to_the_next_caller() {
    const LEASE: Duration = Duration::from_secs(2);
    let stack = Stack::start_with(|c| {
        c.grant_lease = LEASE;
        c.provider_timeout = Duration::from_millis(1500);
    })
    .await;
    let endpoint = TokenEndpoint::start().await;
    crm(&stack, &endpoint).await;
    let preview = stack.acme.token("prj_web", "preview");
    let refresh = endpoint.issue_refresh_token("ada");
    import(&stack, "ada", "ua_seed", &refresh, 5).await;

    let mut doomed = crate::faults::BrokerProcess::spawn(
        &stack,
        &["--grant-lease-ms", "2000", "--provider-timeout-ms", "1500"],
    )
    .await;
    endpoint.set_mode(EndpointMode::StallMidBody);
    let asked = endpoint.calls();
    let pending = {
        let mut client = doomed.client.clone();
        let mut request = tonic::Request::new(for_user("ada"));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {preview}").parse().unwrap(),
        );
        tokio::spawn(async move { client.get_token(request).await })
    };
    let waiting = std::time::Instant::now();
    while endpoint.calls() == asked {
        assert!(waiting.elapsed() < Duration::from_secs(20), "no refresh");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    doomed.kill();
    let killed = std::time::Instant::now();
    let lost = pending.await.unwrap();
    assert!(lost.is_err(), "{lost:?}");
    endpoint.set_mode(EndpointMode::Issue);
    assert_eq!(
        grant_states(&stack).await,
        [("ada".to_owned(), "active".to_owned())]
    );

    let token = stack
        .get_token_with(&preview, for_user("ada"))
        .await
        .unwrap();
    assert!(token.token.starts_with("ua_ada_"), "{}", token.token);
    assert_eq!(endpoint.refreshes(), 1, "one refresh, by the next caller");
    assert!(
        killed.elapsed() < LEASE * 2 + Duration::from_secs(3),
        "{:?}",
        killed.elapsed()
    );
    let again = stack
        .get_token_with(&preview, for_user("ada"))
        .await
        .unwrap();
    assert_eq!(again.token, token.token);
    assert_eq!(endpoint.refreshes(), 1);
    assert_eq!(
        grant_states(&stack).await,
        [("ada".to_owned(), "active".to_owned())]
    );
    stack.stop().await;
}

async fn start(
    stack: &Stack,
    token: &str,
    user: &str,
    return_url: &str,
) -> Result<bpb::StartAuthorizationResponse, tonic::Status> {
    let mut request = tonic::Request::new(bpb::StartAuthorizationRequest {
        connector: CRM.into(),
        user_id: user.into(),
        return_url: return_url.into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    stack
        .broker()
        .start_authorization(request)
        .await
        .map(|r| r.into_inner())
}

/// The application's second step, in the session of `user`.
async fn finish(
    stack: &Stack,
    token: &str,
    back: &str,
    user: &str,
) -> Result<bpb::FinishAuthorizationResponse, tonic::Status> {
    let mut request = tonic::Request::new(bpb::FinishAuthorizationRequest {
        request_id: query(back, "connect_request_id"),
        completion: query(back, "connect_completion"),
        user_id: user.into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    stack
        .broker()
        .finish_authorization(request)
        .await
        .map(|r| r.into_inner())
}

/// Waits until the provider has seen `count` revocations.
async fn revoked_at_provider(endpoint: &TokenEndpoint, count: usize) -> Vec<String> {
    for _ in 0..100 {
        if endpoint.revoked().len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    endpoint.revoked()
}

/// The browser: follows the provider's redirect to the callback once, answers with the
/// callback's status, `Location` and page.
async fn browse(url: &str) -> (u16, Option<String>, String) {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut answer = browser.get(url).send().await.unwrap();
    if answer.status().as_u16() == 302 {
        let next = answer.headers()["location"].to_str().unwrap().to_owned();
        answer = browser.get(next).send().await.unwrap();
    }
    let status = answer.status().as_u16();
    let location = answer
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    (status, location, answer.text().await.unwrap())
}

fn query(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_stores_a_grant_and_the_callback_refuses_what_it_must() {
    let stack = Stack::start_with(|c| {
        c.callback_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let callback = stack.local().broker_callback_addr().unwrap();
    let endpoint = TokenEndpoint::start().await;
    crm(&stack, &endpoint).await;
    let preview = stack.acme.token("prj_web", "preview");
    let back = "http://127.0.0.1:9/settings/connected";

    // Start: the provider's consent page with PKCE (S256), our callback and a state.
    let started = start(&stack, &preview, "ada", back).await.unwrap();
    assert!(
        started.url.starts_with(&endpoint.authorize_url()),
        "{}",
        started.url
    );
    assert_eq!(query(&started.url, "code_challenge_method"), "S256");
    assert_eq!(query(&started.url, "code_challenge").len(), 43);
    assert_eq!(query(&started.url, "scope"), "contacts.read");
    assert_eq!(query(&started.url, "redirect_uri"), started.redirect_uri);
    let crm_id = stack
        .admin(&stack.acme)
        .get_connector(rpb::GetConnectorRequest {
            connector: CRM.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    assert_eq!(
        started.redirect_uri,
        format!("http://{callback}/oauth/callback/{crm_id}")
    );
    assert_eq!(started.request_id.len(), 16);
    let expires = started.expires_at.unwrap().seconds - chrono::Utc::now().timestamp();
    assert!((590..=600).contains(&expires), "{expires}");

    // The user approves: the code is exchanged and held, the browser sent back with the request
    // id and a one-time completion; nothing is usable until the application finishes it.
    let (status, location, _) = browse(&started.url).await;
    assert_eq!(status, 303);
    let came_back = location.unwrap();
    assert!(came_back.starts_with(&format!("{back}?")), "{came_back}");
    assert_eq!(query(&came_back, "connect_request_id"), started.request_id);
    assert!(query(&came_back, "connect_completion").len() >= 32);
    assert_denied(
        stack.get_token_with(&preview, for_user("ada")).await,
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
        "UserAuthorizationRequiredError",
    );
    // Another deployment of the team cannot finish it.
    let docs_preview = stack.acme.token("prj_docs", "preview");
    assert_denied(
        finish(&stack, &docs_preview, &came_back, "ada").await,
        Code::FailedPrecondition,
        "CONSENT_NOT_PENDING",
        "ConsentNotPendingError",
    );
    let finished = finish(&stack, &preview, &came_back, "ada").await.unwrap();
    let grant = finished.grant.unwrap();
    assert_eq!(
        (
            grant.user_id.as_str(),
            grant.connector_uid.as_str(),
            grant.environment.as_str(),
            grant.refreshable
        ),
        ("ada", CRM, "preview", true)
    );
    assert_eq!(grant.scopes, ["contacts.read"]);
    assert_denied(
        finish(&stack, &preview, &came_back, "ada").await,
        Code::FailedPrecondition,
        "CONSENT_NOT_PENDING",
        "ConsentNotPendingError",
    );
    let token = stack
        .get_token_with(&preview, for_user("ada"))
        .await
        .unwrap();
    assert!(token.token.starts_with("ua_ada_"), "{}", token.token);
    assert_eq!(token.scopes, ["contacts.read"]);
    // The grant is the preview environment's only.
    let production = stack.acme.token("prj_web", "production");
    assert_denied(
        stack.get_token_with(&production, for_user("ada")).await,
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
        "UserAuthorizationRequiredError",
    );

    // Replayed, made-up and missing states: a page, no grant.
    let state = query(&started.url, "state");
    let replay = format!("{}?state={state}&code=code_again", started.redirect_uri);
    let (status, _, page) = browse(&replay).await;
    assert_eq!(status, 400);
    assert!(
        page.contains("cannot be used") && !page.contains(&state),
        "{page}"
    );
    let (status, _, _) = browse(&format!("{}?state=made-up&code=x", started.redirect_uri)).await;
    assert_eq!(status, 400);
    let (status, _, _) = browse(&format!("{}?code=x", started.redirect_uri)).await;
    assert_eq!(status, 400);
    // The callback every connector once shared is not served any more.
    let (status, _, page) = browse(&format!(
        "http://{callback}/oauth/callback?state={state}&code=x"
    ))
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("no longer used"), "{page}");

    // The user declines: a page, no grant.
    endpoint.set_consent(crate::harness::Consent::Deny, "bob");
    let declined = start(&stack, &preview, "bob", back).await.unwrap();
    let (status, _, page) = browse(&declined.url).await;
    assert_eq!(status, 403);
    assert!(page.contains("declined"), "{page}");
    // A callback without a code: a page, no grant (and the state is used up).
    let carol = start(&stack, &preview, "carol", back).await.unwrap();
    let no_code = format!(
        "{}?state={}",
        carol.redirect_uri,
        query(&carol.url, "state")
    );
    assert_eq!(browse(&no_code).await.0, 400);
    for user in ["bob", "carol"] {
        assert_denied(
            stack.get_token_with(&preview, for_user(user)).await,
            Code::FailedPrecondition,
            "USER_AUTHORIZATION_REQUIRED",
            "UserAuthorizationRequiredError",
        );
    }

    // Bad starts.
    for bad in [
        "ftp://example.com/x",
        "http://example.com/done",
        "not a url",
    ] {
        assert_denied(
            start(&stack, &preview, "ada", bad).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "InvalidArgumentError",
        );
    }
    let docs = stack.acme.token("prj_docs", "preview");
    assert_denied(
        start(&stack, &docs, "ada", back).await,
        Code::PermissionDenied,
        "CLIENT_NOT_LINKED_TO_PROJECT",
        "ClientNotLinkedToProjectError",
    );

    // Revoking the user's tokens: the grant is deleted, the token revoked at the provider.
    let revoked = stack
        .admin(&stack.acme)
        .revoke_tokens(rpb::RevokeTokensRequest {
            connector: CRM.into(),
            subject: "user:ada".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((revoked.grants_deleted, revoked.provider_revoked), (1, 1));
    // The access token a broker held, and the grant's refresh token, both revoked (RFC 7009).
    let at_provider = endpoint.revoked();
    assert!(at_provider.contains(&token.token), "{at_provider:?}");
    assert!(
        at_provider.iter().any(|t| t.starts_with("rt_ada_")),
        "{at_provider:?}"
    );
    assert_denied(
        stack.get_token_with(&preview, for_user("ada")).await,
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
        "UserAuthorizationRequiredError",
    );
    let logs = crate::harness::captured_logs();
    assert!(!logs.contains(&state) && !logs.contains(&token.token));
    stack.stop().await;
}

/// RFC 9700 §4.7: Mallory starts a consent for herself and gets Ada to open the provider link.
/// Ada approves at the provider as herself; her browser comes back to the application, which
/// finishes the consent in Ada's session. Nothing is stored for Mallory, Ada's tokens are revoked
/// at the provider, and Mallory cannot finish it herself either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_link_opened_by_another_user_stores_nothing() {
    let stack = Stack::start_with(|c| {
        c.callback_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let endpoint = TokenEndpoint::start().await;
    crm(&stack, &endpoint).await;
    let preview = stack.acme.token("prj_web", "preview");
    let back = "http://127.0.0.1:9/settings/connected";

    // The application uses the client library, as the README shows.
    let connect = connect_client::ClientBuilder::new(format!("http://{}", stack.broker_addr()))
        .oidc_token(connect_client::OidcToken::Static(
            secrecy::SecretString::from(preview.clone()),
        ))
        .build()
        .unwrap();
    let mallorys = connect.start_consent(CRM, "mallory", back).await.unwrap();
    endpoint.set_consent(crate::harness::Consent::Approve, "ada");
    let (status, location, _) = browse(&mallorys.url).await;
    assert_eq!(status, 303);
    let came_back = location.unwrap();
    let finished = connect
        .finish_consent(
            &query(&came_back, "connect_request_id"),
            &query(&came_back, "connect_completion"),
            "ada",
        )
        .await;
    assert!(
        matches!(&finished, Err(connect_client::Error::ConsentUserMismatch(m)) if m.starts_with("ConsentUserMismatchError: ")),
        "{finished:?}"
    );
    for user in ["mallory", "ada"] {
        assert_denied(
            stack.get_token_with(&preview, for_user(user)).await,
            Code::FailedPrecondition,
            "USER_AUTHORIZATION_REQUIRED",
            "UserAuthorizationRequiredError",
        );
    }
    // The tokens Ada's consent produced are revoked at the provider (RFC 7009).
    let revoked = revoked_at_provider(&endpoint, 1).await;
    assert!(
        revoked.iter().any(|t| t.starts_with("rt_ada_")),
        "{revoked:?}"
    );
    // Mallory, holding the link Ada came back with, finds nothing left to finish.
    assert_denied(
        finish(&stack, &preview, &came_back, "mallory").await,
        Code::FailedPrecondition,
        "CONSENT_NOT_PENDING",
        "ConsentNotPendingError",
    );
    let audit = stack
        .admin(&stack.acme)
        .list_audit_events(rpb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        audit.iter().any(|e| e.action == "tokens.revoke"
            && e.target == format!("consent:{}", mallorys.request_id)),
        "{audit:?}"
    );
    assert!(!audit.iter().any(|e| e.action.starts_with("grant.")));
    stack.stop().await;
}

/// One callback per connector: a state started for `oauth2/crm` that reaches another
/// connector's callback is refused before anything is exchanged, and still works at its own.
/// Every answer of the callback carries the headers that keep it out of frames and caches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_at_another_connectors_callback_is_refused() {
    let stack = Stack::start_with(|c| {
        c.callback_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let endpoint = TokenEndpoint::start().await;
    crm(&stack, &endpoint).await;
    let other = TokenEndpoint::start().await;
    stack
        .linked_oauth_connector(
            "oauth2/other",
            &other.url,
            &[("authorize_url", other.authorize_url().as_str())],
        )
        .await;
    stack
        .attach(&stack.acme, "oauth2/other", "prj_web", &["preview"])
        .await;
    stack.feed_caught_up().await;
    let preview = stack.acme.token("prj_web", "preview");
    let back = "http://127.0.0.1:9/done";
    let for_crm = start(&stack, &preview, "ada", back).await.unwrap();
    let mut request = tonic::Request::new(bpb::StartAuthorizationRequest {
        connector: "oauth2/other".into(),
        user_id: "ada".into(),
        return_url: back.into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {preview}").parse().unwrap(),
    );
    let for_other = stack
        .broker()
        .start_authorization(request)
        .await
        .unwrap()
        .into_inner();
    assert_ne!(for_crm.redirect_uri, for_other.redirect_uri);

    let state = query(&for_crm.url, "state");
    let calls = (endpoint.calls(), other.calls());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let wrong = client
        .get(format!(
            "{}?state={state}&code=stolen",
            for_other.redirect_uri
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 400);
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(wrong.headers()[name], value, "{name}");
    }
    assert!(
        wrong.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(
        (endpoint.calls(), other.calls()),
        calls,
        "nothing exchanged"
    );
    // The state is still good at its own connector's callback.
    let (status, location, _) = browse(&for_crm.url).await;
    assert_eq!(status, 303);
    let came_back = location.unwrap();
    assert_eq!(query(&came_back, "connect_request_id"), for_crm.request_id);
    assert_eq!(
        came_back.split_once('?').unwrap().0,
        back,
        "back to the application"
    );
    finish(&stack, &preview, &came_back, "ada").await.unwrap();
    stack.stop().await;
}

/// A user who consents again replaces their grant: the refresh token the old grant held is
/// revoked at the provider, the new one kept; importing the same refresh token again revokes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_consent_revokes_the_refresh_token_it_replaces() {
    let stack = Stack::start_with(|c| {
        c.callback_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let endpoint = TokenEndpoint::start().await;
    crm(&stack, &endpoint).await;
    let preview = stack.acme.token("prj_web", "preview");
    let back = "http://127.0.0.1:9/done";
    import(&stack, "ada", "at_old", "rt_ada_old", 3600).await;
    import(&stack, "ada", "at_old", "rt_ada_old", 3600).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(endpoint.revoked().is_empty(), "{:?}", endpoint.revoked());
    let started = start(&stack, &preview, "ada", back).await.unwrap();
    let (_, location, _) = browse(&started.url).await;
    finish(&stack, &preview, &location.unwrap(), "ada")
        .await
        .unwrap();
    let revoked = revoked_at_provider(&endpoint, 1).await;
    assert_eq!(revoked, ["rt_ada_old"]);
    let token = stack
        .get_token_with(&preview, for_user("ada"))
        .await
        .unwrap();
    assert!(token.token.starts_with("ua_ada_"), "{}", token.token);
    stack.stop().await;
}

/// The provider account a grant acts as: the `sub` of the OpenID `id_token` (or of userinfo) is
/// kept with the grant and listed; a re-consent for the same user that signed in at the provider
/// as another account is refused (and stays pending) until the application confirms that account
/// for the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconsent_as_another_provider_account_needs_the_applications_confirmation() {
    let stack = Stack::start_with(|c| {
        c.callback_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let endpoint = TokenEndpoint::start().await;
    endpoint.set_openid(true);
    crm(&stack, &endpoint).await;
    let preview = stack.acme.token("prj_web", "preview");
    let back = "http://127.0.0.1:9/settings/connected";
    let connect = connect_client::ClientBuilder::new(format!("http://{}", stack.broker_addr()))
        .oidc_token(connect_client::OidcToken::Static(
            secrecy::SecretString::from(preview.clone()),
        ))
        .build()
        .unwrap();
    let consent_as = |provider_user: &'static str| {
        let (connect, endpoint) = (&connect, &endpoint);
        async move {
            endpoint.set_consent(crate::harness::Consent::Approve, provider_user);
            let started = connect.start_consent(CRM, "ada", back).await.unwrap();
            let (status, location, _) = browse(&started.url).await;
            assert_eq!(status, 303);
            location.unwrap()
        }
    };
    let came_back = consent_as("ada").await;
    let first = connect
        .finish_consent(
            &query(&came_back, "connect_request_id"),
            &query(&came_back, "connect_completion"),
            "ada",
        )
        .await
        .unwrap();
    assert_eq!(first.provider_subject, "ada");
    // Ada's session, but at the provider somebody signed in as "eve".
    let came_back = consent_as("eve").await;
    let (request_id, completion) = (
        query(&came_back, "connect_request_id"),
        query(&came_back, "connect_completion"),
    );
    let refused = connect
        .finish_consent(&request_id, &completion, "ada")
        .await;
    assert!(
        matches!(&refused, Err(connect_client::Error::ProviderAccountChanged(m)) if m.contains("'eve'") && m.contains("'ada'")),
        "{refused:?}"
    );
    let token = stack
        .get_token_with(&preview, for_user("ada"))
        .await
        .unwrap();
    assert!(
        token.token.starts_with("ua_ada_"),
        "the grant still acts as ada"
    );
    // Confirming another account than the consent's changes nothing either.
    let wrong = connect
        .finish_consent_confirming(&request_id, &completion, "ada", "mallory")
        .await;
    assert!(
        matches!(
            &wrong,
            Err(connect_client::Error::ProviderAccountChanged(_))
        ),
        "{wrong:?}"
    );
    let replaced = connect
        .finish_consent_confirming(&request_id, &completion, "ada", "eve")
        .await
        .unwrap();
    assert_eq!(replaced.provider_subject, "eve");
    let listed = stack
        .admin(&stack.acme)
        .list_grants(rpb::ListGrantsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].provider_subject, "eve");
    let token = stack
        .get_token_with(&preview, for_user("ada"))
        .await
        .unwrap();
    assert!(token.token.starts_with("ua_eve_"), "{}", token.token);

    // Without an id_token, the connector's userinfo_url names the account.
    endpoint.set_openid(false);
    stack
        .linked_oauth_connector(
            "oauth2/info",
            &endpoint.url,
            &[
                ("authorize_url", endpoint.authorize_url().as_str()),
                ("userinfo_url", endpoint.userinfo_url().as_str()),
                ("user_scopes", "contacts.read"),
            ],
        )
        .await;
    stack.feed_caught_up().await;
    endpoint.set_consent(crate::harness::Consent::Approve, "bob");
    let started = connect
        .start_consent("oauth2/info", "bob", back)
        .await
        .unwrap();
    let (_, location, _) = browse(&started.url).await;
    let came_back = location.unwrap();
    let bob = connect
        .finish_consent(
            &query(&came_back, "connect_request_id"),
            &query(&came_back, "connect_completion"),
            "bob",
        )
        .await
        .unwrap();
    assert_eq!(bob.provider_subject, "bob");
    stack.stop().await;
}

/// Deleting a connector revokes, at its provider, the refresh tokens its grants and queue held
/// (RFC 7009 at its `revocation_url`, with its client credentials), although the connector and its
/// grants are gone; what was kept for that goes once it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_connector_revokes_its_grants_refresh_tokens() {
    let stack = Stack::start().await;
    let endpoint = TokenEndpoint::start().await;
    crm(&stack, &endpoint).await;
    import(&stack, "ada", "at_ada", "rt_ada", 3600).await;
    import(&stack, "bob", "at_bob", "rt_bob_old", 3600).await;
    // Bob's first refresh token is replaced: queued for revocation, maybe revoked already.
    import(&stack, "bob", "at_bob", "rt_bob", 3600).await;
    revoked_at_provider(&endpoint, 1).await;
    let connector_id = stack
        .admin(&stack.acme)
        .get_connector(rpb::GetConnectorRequest {
            connector: CRM.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    stack
        .admin(&stack.acme)
        .delete_connector(rpb::DeleteConnectorRequest {
            connector: CRM.into(),
        })
        .await
        .unwrap();
    let mut revoked = revoked_at_provider(&endpoint, 3).await;
    revoked.sort();
    assert_eq!(revoked, ["rt_ada", "rt_bob", "rt_bob_old"]);
    // Nothing is left to revoke: what was kept for it went with the last token.
    let mut registry = runtime_client(&stack).await;
    let mut left = None;
    for _ in 0..100 {
        let claimed = registry
            .claim_grant_revocations(rpb::ClaimGrantRevocationsRequest {
                owner_id: "team_acme".into(),
                connector_id: connector_id.clone(),
            })
            .await;
        match claimed {
            Err(status) if status.code() == Code::NotFound => {
                left = None;
                break;
            }
            Err(status) => panic!("{status:?}"),
            Ok(answer) => left = Some(answer.into_inner()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left.is_none(), "still kept: {left:?}");
    stack.stop().await;
}

/// Two projects linked to one connector: the user grant `prj_web`'s deployment uses is not
/// `prj_docs`'s, through the broker's own path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_project_on_the_same_connector_cannot_use_a_projects_grant() {
    let stack = Stack::start().await;
    let endpoint = TokenEndpoint::start().await;
    crm(&stack, &endpoint).await;
    stack
        .attach(&stack.acme, CRM, "prj_docs", &["preview"])
        .await;
    stack.feed_caught_up().await;
    import(&stack, "ada", "at_ada_web", "rt_ada_web", 3600).await;
    let web = stack.acme.token("prj_web", "preview");
    let token = stack.get_token_with(&web, for_user("ada")).await.unwrap();
    assert_eq!(token.token, "at_ada_web");
    let docs = stack.acme.token("prj_docs", "preview");
    assert_denied(
        stack.get_token_with(&docs, for_user("ada")).await,
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
        "UserAuthorizationRequiredError",
    );
    stack.stop().await;
}

/// connect-dev's demo OAuth provider, through the whole consent its printout walks a user
/// through: start, the provider's approval (code bound to PKCE S256), the callback, the `/done`
/// page showing the finish call, the finish, and the user's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_devs_demo_provider_goes_through_a_whole_consent() {
    let stack = Stack::start_with(|c| {
        c.callback_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let provider = connect_dev::DemoProvider::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        connect_dev::DemoClient {
            client_id: crate::harness::CLIENT_ID.into(),
            client_secret: crate::harness::CLIENT_SECRET.into(),
            user: "ada".into(),
            finish_hint: "finish {request_id} {completion}".into(),
        },
    )
    .await
    .unwrap();
    stack
        .linked_oauth_connector(
            "oauth2/demo-crm",
            &provider.url("/token"),
            &[
                ("authorize_url", provider.url("/authorize").as_str()),
                ("revocation_url", provider.url("/revoke").as_str()),
                ("user_scopes", "contacts.read"),
            ],
        )
        .await;
    stack.feed_caught_up().await;
    let preview = stack.acme.token("prj_web", "preview");
    let mut request = tonic::Request::new(bpb::StartAuthorizationRequest {
        connector: "oauth2/demo-crm".into(),
        user_id: "ada".into(),
        return_url: provider.url("/done"),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {preview}").parse().unwrap(),
    );
    let started = stack
        .broker()
        .start_authorization(request)
        .await
        .unwrap()
        .into_inner();
    let (status, location, _) = browse(&started.url).await;
    assert_eq!(status, 303);
    let came_back = location.unwrap();
    let page = reqwest::get(&came_back)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!(
            "finish {} {}",
            started.request_id,
            query(&came_back, "connect_completion")
        )),
        "{page}"
    );
    let mut finish_request = tonic::Request::new(bpb::FinishAuthorizationRequest {
        request_id: query(&came_back, "connect_request_id"),
        completion: query(&came_back, "connect_completion"),
        user_id: "ada".into(),
        ..Default::default()
    });
    finish_request.metadata_mut().insert(
        "authorization",
        format!("Bearer {preview}").parse().unwrap(),
    );
    let grant = stack
        .broker()
        .finish_authorization(finish_request)
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap();
    assert_eq!((grant.user_id.as_str(), grant.refreshable), ("ada", true));
    let token = stack
        .get_token_with(
            &preview,
            bpb::GetTokenRequest {
                connector: "oauth2/demo-crm".into(),
                ..for_user("ada")
            },
        )
        .await
        .unwrap();
    assert!(token.token.starts_with("demo_at_ada_"), "{}", token.token);
    provider.stop();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_a_callback_starts_no_consent() {
    let stack = Stack::start().await;
    let endpoint = TokenEndpoint::start().await;
    crm(&stack, &endpoint).await;
    let preview = stack.acme.token("prj_web", "preview");
    assert_denied(
        start(&stack, &preview, "ada", "https://app.example/done").await,
        Code::FailedPrecondition,
        "FAILED_PRECONDITION",
        "FailedPreconditionError",
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_never_live_min_ttl_cost_one_refresh_not_a_loop() {
    let stack = Stack::start().await;
    let endpoint = TokenEndpoint::start().await;
    crm(&stack, &endpoint).await;
    endpoint.set_user_token_lifetime(10);
    let refresh = endpoint.issue_refresh_token("ada");
    import(&stack, "ada", "ua_seed", &refresh, 5).await;
    let preview = stack.acme.token("prj_web", "preview");
    // The default min_ttl is 30 s; the provider's tokens live 10 s.
    assert_denied(
        stack.get_token_with(&preview, for_user("ada")).await,
        Code::FailedPrecondition,
        "NO_VALID_TOKEN",
        "NoValidTokenError",
    );
    assert_eq!(endpoint.refreshes(), 1);
    // A caller content with 5 s gets the refreshed token without another refresh.
    let mut short = for_user("ada");
    short.min_ttl = Some(prost_types::Duration {
        seconds: 5,
        nanos: 0,
    });
    let token = stack.get_token_with(&preview, short).await.unwrap();
    assert!(token.token.starts_with("ua_ada_"));
    assert_eq!(endpoint.refreshes(), 1);
    stack.stop().await;
}

/// A link's scope ceiling bounds users' grants: a stored grant carrying a scope beyond it is not
/// handed out, one lacking the ceiling's scopes needs a new consent, a consent asking beyond it is
/// refused, and one asking for nothing asks the provider for the ceiling's scopes (not the
/// connector's `user_scopes`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_links_scope_ceiling_bounds_stored_grants_and_new_consents() {
    let stack = Stack::start_with(|c| {
        c.callback_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let endpoint = TokenEndpoint::start().await;
    crm(&stack, &endpoint).await;
    import(&stack, "ada", "at_ada_read", "rt_ada", 3600).await;
    // Cy consented to more, before any ceiling.
    stack
        .admin(&stack.acme)
        .import_grants(rpb::ImportGrantsRequest {
            connector: CRM.into(),
            grants: vec![rpb::ImportedGrant {
                user_id: "cy".into(),
                environment: "preview".into(),
                access_token: "at_cy_broad".into(),
                refresh_token: "rt_cy".into(),
                expire_time: in_seconds(3600),
                scopes: vec!["contacts.read".into(), "contacts.write".into()],
                project: "prj_web".into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    let attach = |scopes: &[&str]| {
        let mut admin = stack.admin(&stack.acme);
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        async move {
            admin
                .attach_project(rpb::AttachProjectRequest {
                    connector: CRM.into(),
                    project: "prj_web".into(),
                    environments: vec!["preview".into(), "production".into()],
                    allowed_scopes: scopes,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    };
    attach(&["contacts.read"]).await;
    stack.feed_caught_up().await;
    let preview = stack.acme.token("prj_web", "preview");

    // Within the ceiling: handed out. Beyond it (consented before the ceiling): not.
    let ada = stack
        .get_token_with(&preview, for_user("ada"))
        .await
        .unwrap();
    assert_eq!(ada.token, "at_ada_read");
    assert_denied(
        stack.get_token_with(&preview, for_user("cy")).await,
        Code::PermissionDenied,
        "SCOPE_NOT_ALLOWED",
        "ScopeNotAllowedError: the user's grant carries scope 'contacts.write', beyond the link's allowed scopes",
    );
    // A consent asking beyond the ceiling is refused before any provider is involved.
    let mut beyond = tonic::Request::new(bpb::StartAuthorizationRequest {
        connector: CRM.into(),
        user_id: "bob".into(),
        return_url: "http://127.0.0.1:9/back".into(),
        scopes: vec!["contacts.write".into()],
        ..Default::default()
    });
    beyond.metadata_mut().insert(
        "authorization",
        format!("Bearer {preview}").parse().unwrap(),
    );
    assert_denied(
        stack
            .broker()
            .start_authorization(beyond)
            .await
            .map(|r| r.into_inner()),
        Code::PermissionDenied,
        "SCOPE_NOT_ALLOWED",
        "ScopeNotAllowedError: the link does not allow scope 'contacts.write'",
    );

    // Another ceiling: a consent asking for nothing asks for its scopes, and a grant without
    // them needs a new consent.
    attach(&["contacts.list"]).await;
    stack.feed_caught_up().await;
    let started = start(&stack, &preview, "bob", "http://127.0.0.1:9/back")
        .await
        .unwrap();
    assert_eq!(query(&started.url, "scope"), "contacts.list");
    assert_denied(
        stack.get_token_with(&preview, for_user("ada")).await,
        Code::FailedPrecondition,
        "USER_AUTHORIZATION_REQUIRED",
        "UserAuthorizationRequiredError: the user did not grant scope 'contacts.list'",
    );

    // Without a ceiling the broad grant is handed out again.
    attach(&[]).await;
    stack.feed_caught_up().await;
    let cy = stack
        .get_token_with(&preview, for_user("cy"))
        .await
        .unwrap();
    assert_eq!(cy.token, "at_cy_broad");
    stack.stop().await;
}
