//! GitHub App connectors, installations and revocation end to end: the real broker and registry
//! against a loopback server that answers like GitHub (it verifies the App JWT with the app's
//! public key), and the loopback OAuth endpoint for RFC 7009.

use std::time::Duration;

use connect_proto::{broker::v1 as bpb, registry::v1 as rpb};
use tonic::Code;

use crate::{
    github_api::{APP_ID, GitHubApi, GitHubMode, Grants, app_key},
    harness::{Stack, TokenEndpoint, assert_denied},
};

const APP: &str = "github/acme-app";

fn grants() -> Grants {
    Grants {
        permissions: [
            ("contents".to_owned(), "write".to_owned()),
            ("issues".to_owned(), "write".to_owned()),
            ("metadata".to_owned(), "read".to_owned()),
        ]
        .into(),
        repositories: vec!["web".into(), "api".into(), "docs".into()],
    }
}

/// GitHub knows installation 1001 (and not 1002).
async fn github() -> GitHubApi {
    GitHubApi::start(&[("1001", grants())]).await
}

/// Acme's GitHub App connector `uid` at `api`, linked to `prj_web` for preview and production,
/// with installations 1001 and 1002 registered.
async fn github_connector(stack: &Stack, api: &GitHubApi, uid: &str, private_key: &str) {
    stack
        .create_connector(
            &stack.acme,
            rpb::CreateConnectorRequest {
                uid: uid.into(),
                config: [
                    ("app_id".to_owned(), APP_ID.to_owned()),
                    ("api_url".to_owned(), api.url.clone()),
                ]
                .into(),
                secrets: [("private_key".to_owned(), private_key.to_owned())].into(),
                ..Default::default()
            },
        )
        .await;
    for (id, name) in [("1001", "acme org"), ("1002", "gone org")] {
        stack
            .admin(&stack.acme)
            .create_installation(rpb::CreateInstallationRequest {
                connector: uid.into(),
                installation_id: id.into(),
                display_name: name.into(),
                ..Default::default()
            })
            .await
            .expect("create installation");
    }
    stack
        .attach(&stack.acme, uid, "prj_web", &["preview", "production"])
        .await;
}

async fn set_default(
    stack: &Stack,
    uid: &str,
    installation: &str,
) -> Result<rpb::Connector, tonic::Status> {
    stack
        .admin(&stack.acme)
        .update_connector(rpb::UpdateConnectorRequest {
            connector: uid.into(),
            default_installation_id: installation.into(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["default_installation_id".into()],
            }),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

fn ask(installation: &str, scopes: &[&str], resources: &[&str]) -> bpb::GetTokenRequest {
    bpb::GetTokenRequest {
        connector: APP.into(),
        installation_id: installation.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        resources: resources.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Asks until the answer is not the one a change just made stale (the feed takes milliseconds).
async fn eventually(
    stack: &Stack,
    token: &str,
    request: bpb::GetTokenRequest,
    done: impl Fn(&Result<bpb::GetTokenResponse, tonic::Status>) -> bool,
) -> Result<bpb::GetTokenResponse, tonic::Status> {
    let mut answer = stack.get_token_with(token, request.clone()).await;
    for _ in 0..300 {
        if done(&answer) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        answer = stack.get_token_with(token, request.clone()).await;
    }
    answer
}

async fn revoke(
    stack: &Stack,
    connector: &str,
    subject: &str,
    installation: &str,
) -> rpb::RevokeTokensResponse {
    stack
        .admin(&stack.acme)
        .revoke_tokens(rpb::RevokeTokensRequest {
            connector: connector.into(),
            subject: subject.into(),
            installation_id: installation.into(),
        })
        .await
        .expect("revoke tokens")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_app_issues_installation_tokens_per_partition_narrowed_as_asked() {
    let stack = Stack::start().await;
    let api = github().await;
    github_connector(&stack, &api, APP, &app_key().0).await;
    let preview = stack.acme.token("prj_web", "preview");

    // No installation asked and no default: the type needs one.
    assert_denied(
        stack.get_token_with(&preview, ask("", &[], &[])).await,
        Code::FailedPrecondition,
        "CONNECTOR_INSTALLATION_REQUIRED",
        "ConnectorInstallationRequiredError",
    );
    assert_denied(
        set_default(&stack, APP, "9999").await,
        Code::NotFound,
        "INSTALLATION_NOT_FOUND",
        "InstallationNotFoundError",
    );
    let connector = set_default(&stack, APP, "1001").await.unwrap();
    assert_eq!(connector.default_installation_id, "1001");
    let listed = stack
        .admin(&stack.acme)
        .list_installations(rpb::ListInstallationsRequest {
            connector: APP.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .installations;
    let listed: Vec<(&str, &str, bool)> = listed
        .iter()
        .map(|i| {
            (
                i.installation_id.as_str(),
                i.display_name.as_str(),
                i.is_default,
            )
        })
        .collect();
    assert_eq!(
        listed,
        [("1001", "acme org", true), ("1002", "gone org", false)]
    );

    // The default installation, every permission it has.
    let first = eventually(&stack, &preview, ask("", &[], &[]), Result::is_ok)
        .await
        .unwrap();
    assert!(first.token.starts_with("ghs_"), "{first:?}");
    assert_eq!(first.installation_id, "1001");
    assert_eq!(first.connector.as_ref().unwrap().r#type, "github");
    assert_eq!(
        first.scopes,
        ["contents:write", "issues:write", "metadata:read"]
    );
    let expires = first.expires_at.as_ref().unwrap().seconds - chrono::Utc::now().timestamp();
    assert!((3500..=3600).contains(&expires), "{expires}");
    assert_eq!((api.calls(), api.distinct_jwts()), (1, 1));

    // Cached for the partition: no call, no new App JWT; asking by id is the same installation.
    let again = stack
        .get_token_with(&preview, ask("1001", &[], &[]))
        .await
        .unwrap();
    assert_eq!(again.token, first.token);
    assert_eq!(again.token_id, first.token_id);
    assert_eq!((api.calls(), api.distinct_jwts()), (1, 1));

    // Another environment gets its own credential.
    let production = stack.acme.token("prj_web", "production");
    let other = stack
        .get_token_with(&production, ask("", &[], &[]))
        .await
        .unwrap();
    assert_ne!(other.token, first.token);
    assert_eq!(api.calls(), 2);

    // Narrowed to a repository and a permission.
    let narrow = stack
        .get_token_with(&preview, ask("1001", &["contents:read"], &["web"]))
        .await
        .unwrap();
    assert_ne!(narrow.token, first.token);
    assert_eq!(narrow.scopes, ["contents:read"]);
    assert_eq!(
        api.last_body().unwrap(),
        serde_json::json!({ "repositories": ["web"], "permissions": { "contents": "read" } })
    );
    assert_eq!(api.calls(), 3);

    // What the installation does not grant: GitHub's 422.
    for request in [
        ask("1001", &["administration:write"], &[]),
        ask("1001", &[], &["secret-repo"]),
    ] {
        assert_denied(
            stack.get_token_with(&preview, request).await,
            Code::PermissionDenied,
            "SCOPE_NOT_ALLOWED",
            "ScopeNotAllowedError",
        );
    }
    // An installation the registry does not know, and one GitHub does not know.
    for unknown in ["777", "1002"] {
        assert_denied(
            stack.get_token_with(&preview, ask(unknown, &[], &[])).await,
            Code::NotFound,
            "INSTALLATION_NOT_FOUND",
            "InstallationNotFoundError",
        );
    }
    // Every installation at once is not something GitHub issues; bad narrowing is named.
    let bad = [
        (ask("*", &[], &[]), "installation_id"),
        (ask("1001", &["contents"], &[]), "scopes"),
        (ask("1001", &[], &["acme/web"]), "resources"),
        (ask("not an id", &[], &[]), "installation_id"),
    ];
    for (request, field) in bad {
        let status = assert_denied(
            stack.get_token_with(&preview, request).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "InvalidArgumentError",
        );
        use tonic_types::StatusExt;
        let violations = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, field, "{status:?}");
    }

    // The ledger has each credential with its installation, subject and environment.
    let rows = stack.ledger(APP).await;
    let mut seen: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.installation_id.as_str(),
                r.environment.as_str(),
                r.subject.as_str(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("1001", "preview", "app"),
            ("1001", "preview", "app"),
            ("1001", "production", "app")
        ]
    );
    assert!(rows.iter().any(|r| r.token_id == first.token_id));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_first_calls_make_one_github_call() {
    let stack = Stack::start().await;
    let api = github().await;
    github_connector(&stack, &api, APP, &app_key().0).await;
    let preview = stack.acme.token("prj_web", "preview");
    let calls = (0..100).map(|_| stack.get_token_with(&preview, ask("1001", &[], &["api"])));
    let answers = futures::future::join_all(calls).await;
    let tokens: std::collections::HashSet<String> = answers
        .into_iter()
        .map(|a| a.expect("a token").token)
        .collect();
    assert_eq!(tokens.len(), 1);
    assert_eq!((api.calls(), api.distinct_jwts()), (1, 1));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_failures_map_to_the_contract_and_never_show_the_key() {
    let stack = Stack::start_with(|c| c.provider_timeout = Duration::from_millis(500)).await;
    let api = github().await;
    github_connector(&stack, &api, APP, &app_key().0).await;
    let preview = stack.acme.token("prj_web", "preview");
    for (mode, code, reason, prefix) in [
        (
            GitHubMode::Slow,
            Code::Unavailable,
            "PROVIDER_UNAVAILABLE",
            "ProviderUnavailableError",
        ),
        (
            GitHubMode::ServerError,
            Code::Unavailable,
            "PROVIDER_UNAVAILABLE",
            "ProviderUnavailableError",
        ),
        (
            GitHubMode::Garbage,
            Code::FailedPrecondition,
            "NO_VALID_TOKEN",
            "NoValidTokenError",
        ),
        (
            GitHubMode::NoExpiry,
            Code::FailedPrecondition,
            "NO_VALID_TOKEN",
            "NoValidTokenError",
        ),
    ] {
        api.set_mode(mode);
        assert_denied(
            stack.get_token_with(&preview, ask("1001", &[], &[])).await,
            code,
            reason,
            prefix,
        );
    }
    api.set_mode(GitHubMode::Issue);

    // A key GitHub does not know the app by (401), and no key at all.
    let stranger = {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
            .unwrap()
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap()
            .to_string()
    };
    github_connector(&stack, &api, "github/stranger", &stranger).await;
    github_connector(&stack, &api, "github/not-a-key", "-----BEGIN NOTHING-----").await;
    for uid in ["github/stranger", "github/not-a-key"] {
        let status = assert_denied(
            eventually(
                &stack,
                &preview,
                bpb::GetTokenRequest {
                    connector: uid.into(),
                    installation_id: "1001".into(),
                    ..Default::default()
                },
                |a| !matches!(a, Err(s) if s.code() == Code::PermissionDenied),
            )
            .await,
            Code::FailedPrecondition,
            "NO_VALID_TOKEN",
            "NoValidTokenError",
        );
        assert!(!status.message().contains("PRIVATE KEY"), "{status:?}");
    }
    let logs = crate::harness::captured_logs();
    assert!(!logs.contains("PRIVATE KEY"));
    assert!(!logs.contains("ghs_"), "a GitHub token reached the logs");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_github_tokens_are_revoked_at_github_and_replaced() {
    let stack = Stack::start().await;
    let api = github().await;
    github_connector(&stack, &api, APP, &app_key().0).await;
    let preview = stack.acme.token("prj_web", "preview");
    let production = stack.acme.token("prj_web", "production");
    let first = stack
        .get_token_with(&preview, ask("1001", &[], &[]))
        .await
        .unwrap();
    let other = stack
        .get_token_with(&production, ask("1001", &[], &[]))
        .await
        .unwrap();

    // Another subject's tokens: none.
    let none = revoke(&stack, APP, "user:ada", "").await;
    assert_eq!((none.tokens_found, none.revoked), (0, 0));

    let answer = revoke(&stack, APP, "", "1001").await;
    assert_eq!(
        (
            answer.tokens_found,
            answer.revoked,
            answer.provider_revoked,
            answer.provider_skipped,
            answer.provider_failed
        ),
        (2, 2, 2, 0, 0)
    );
    let revoked = api.revoked();
    assert!(revoked.contains(&first.token) && revoked.contains(&other.token));
    let rows = stack.ledger(APP).await;
    assert!(
        rows.iter()
            .all(|r| r.revoked && r.provider_revocation == "revoked"),
        "{rows:?}"
    );

    // The next call gets a new credential.
    let next = stack
        .get_token_with(&preview, ask("1001", &[], &[]))
        .await
        .unwrap();
    assert_ne!(next.token, first.token);
    assert_eq!(api.calls(), 3);

    // Revoking everything again finds three, of which only the new one was still live.
    let answer = revoke(&stack, APP, "", "").await;
    assert_eq!(
        (answer.tokens_found, answer.revoked, answer.provider_revoked),
        (3, 1, 1)
    );
    assert!(api.revoked().contains(&next.token));

    // Each revocation is audited, without a token.
    let events = stack
        .admin(&stack.acme)
        .list_audit_events(rpb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let revocations = events
        .iter()
        .filter(|e| e.action == "tokens.revoke")
        .count();
    assert_eq!(revocations, 3);
    assert!(!format!("{events:?}").contains("ghs_"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_installation_revokes_its_tokens_and_clears_the_default() {
    let stack = Stack::start().await;
    let api = github().await;
    github_connector(&stack, &api, APP, &app_key().0).await;
    set_default(&stack, APP, "1001").await.unwrap();
    let preview = stack.acme.token("prj_web", "preview");
    let token = eventually(&stack, &preview, ask("", &[], &[]), Result::is_ok)
        .await
        .unwrap();
    let gone = stack
        .admin(&stack.acme)
        .delete_installation(rpb::DeleteInstallationRequest {
            connector: APP.into(),
            installation_id: "1001".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.installation.unwrap().installation_id, "1001");
    let revocation = gone.revocation.unwrap();
    assert_eq!((revocation.revoked, revocation.provider_revoked), (1, 1));
    assert!(api.revoked().contains(&token.token));
    let connector = stack
        .admin(&stack.acme)
        .get_connector(rpb::GetConnectorRequest {
            connector: APP.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(connector.default_installation_id, "");
    assert_denied(
        eventually(&stack, &preview, ask("", &[], &[]), Result::is_err).await,
        Code::FailedPrecondition,
        "CONNECTOR_INSTALLATION_REQUIRED",
        "ConnectorInstallationRequiredError",
    );
    assert_denied(
        stack.get_token_with(&preview, ask("1001", &[], &[])).await,
        Code::NotFound,
        "INSTALLATION_NOT_FOUND",
        "InstallationNotFoundError",
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_are_revoked_with_rfc_7009_where_the_connector_can() {
    let stack = Stack::start().await;
    let endpoint = TokenEndpoint::start().await;
    stack
        .linked_oauth_connector(
            "oauth2/revocable",
            &endpoint.url,
            &[("revocation_url", endpoint.revocation_url().as_str())],
        )
        .await;
    stack
        .linked_oauth_connector("oauth2/plain", &endpoint.url, &[])
        .await;
    let preview = stack.acme.token("prj_web", "preview");
    let revocable = stack.get_token(&preview, "oauth2/revocable").await.unwrap();
    let plain = stack.get_token(&preview, "oauth2/plain").await.unwrap();

    let answer = revoke(&stack, "oauth2/revocable", "app", "").await;
    assert_eq!(
        (answer.tokens_found, answer.revoked, answer.provider_revoked),
        (1, 1, 1)
    );
    assert_eq!(endpoint.revoked(), std::slice::from_ref(&revocable.token));
    let next = stack.get_token(&preview, "oauth2/revocable").await.unwrap();
    assert_ne!(next.token, revocable.token);

    // No revocation endpoint: the ledger and the broker forget it; the provider is skipped.
    let started = std::time::Instant::now();
    let answer = revoke(&stack, "oauth2/plain", "", "").await;
    assert_eq!(
        (
            answer.revoked,
            answer.provider_revoked,
            answer.provider_skipped
        ),
        (1, 0, 1)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no wait for what cannot be revoked"
    );
    assert_eq!(endpoint.revoked().len(), 1);
    let replaced = eventually(
        &stack,
        &preview,
        bpb::GetTokenRequest {
            connector: "oauth2/plain".into(),
            ..Default::default()
        },
        |a| a.as_ref().is_ok_and(|t| t.token != plain.token),
    )
    .await
    .unwrap();
    assert_ne!(replaced.token, plain.token);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installation_of_an_api_key_connector_brings_its_own_key() {
    let stack = Stack::start().await;
    let mut admin = stack.admin(&stack.acme);
    admin
        .create_installation(rpb::CreateInstallationRequest {
            connector: "api-key/stripe".into(),
            installation_id: "acct_eu".into(),
            secrets: [("api_key".to_owned(), "sk_acme_eu".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let listed = admin
        .list_installations(rpb::ListInstallationsRequest {
            connector: "api-key/stripe".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.installations[0].secret_names, ["api_key"]);
    assert!(!format!("{listed:?}").contains("sk_acme_eu"));
    let preview = stack.acme.token("prj_web", "preview");
    let request = |installation: &str| bpb::GetTokenRequest {
        connector: "api-key/stripe".into(),
        installation_id: installation.into(),
        ..Default::default()
    };
    let eu = eventually(&stack, &preview, request("acct_eu"), Result::is_ok)
        .await
        .unwrap();
    assert_eq!(
        (eu.token.as_str(), eu.installation_id.as_str()),
        ("sk_acme_eu", "acct_eu")
    );
    let main = stack.get_token_with(&preview, request("")).await.unwrap();
    assert_eq!(
        (main.token.as_str(), main.installation_id.as_str()),
        ("sk_acme_stripe", "")
    );
    assert_denied(
        stack.get_token_with(&preview, request("*")).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        "InvalidArgumentError",
    );
    // Installations may not carry destinations of their own.
    assert_denied(
        admin
            .create_installation(rpb::CreateInstallationRequest {
                connector: "api-key/stripe".into(),
                installation_id: "acct_us".into(),
                config: [(
                    "token_url".to_owned(),
                    "https://evil.example/token".to_owned(),
                )]
                .into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        "InvalidArgumentError",
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_broker_with_or_without_an_authorization_cache() {
    let stack = Stack::start_with(|c| c.authz_cache_size = 0).await;
    let api = github().await;
    github_connector(&stack, &api, APP, &app_key().0).await;
    // A second broker on the same registry, with the authorization cache on.
    let second = stack.second_broker(|_| {}).await;

    let preview = stack.acme.token("prj_web", "preview");
    let from_first = stack
        .get_token_with(&preview, ask("1001", &[], &[]))
        .await
        .unwrap();
    let from_second = second
        .get_token_with(&preview, ask("1001", &[], &[]))
        .await
        .unwrap();
    assert_ne!(
        from_first.token, from_second.token,
        "each broker asked GitHub for its own"
    );
    assert_eq!(api.calls(), 2);

    let answer = revoke(&stack, APP, "app", "").await;
    assert_eq!(
        (answer.tokens_found, answer.revoked, answer.provider_revoked),
        (2, 2, 2)
    );
    let revoked = api.revoked();
    assert!(revoked.contains(&from_first.token) && revoked.contains(&from_second.token));
    second.stop().await;
    stack.stop().await;
}
