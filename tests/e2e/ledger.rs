//! The issuance ledger end to end: every credential the broker hands out is in the registry's
//! ledger first, provider credentials are never shared across projects or environments, and a
//! credential that cannot be recorded is not handed out.

use connect_proto::broker::v1 as bpb;
use tonic::Code;

use crate::harness::{Stack, TokenEndpoint, assert_denied};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_credential_handed_out_is_in_the_ledger_once_per_project_and_environment() {
    let stack = Stack::start().await;
    let preview = stack.acme.token("prj_web", "preview");
    let first = stack.get_token(&preview, "api-key/stripe").await.unwrap();
    let again = stack.get_token(&preview, "api-key/stripe").await.unwrap();
    assert_eq!(first.token_id, again.token_id);
    let rows = stack.ledger("api-key/stripe").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].token_id, first.token_id);
    assert_eq!(
        (
            rows[0].project_id.as_str(),
            rows[0].environment.as_str(),
            rows[0].subject.as_str(),
            rows[0].connector_uid.as_str(),
        ),
        ("prj_web", "preview", "app", "api-key/stripe")
    );
    assert!(rows[0].expire_time.is_none());
    // The stored API key is the one credential shared across environments: recorded for each.
    stack
        .attach(
            &stack.acme,
            "api-key/stripe",
            "prj_web",
            &["preview", "production"],
        )
        .await;
    let production = stack.acme.token("prj_web", "production");
    let mut answer = stack.get_token(&production, "api-key/stripe").await;
    for _ in 0..200 {
        if answer.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        answer = stack.get_token(&production, "api-key/stripe").await;
    }
    assert_eq!(answer.unwrap().token_id, first.token_id);
    let rows = stack.ledger("api-key/stripe").await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].environment, "production");

    // Provider credentials: one per (team, project, environment).
    let endpoint = TokenEndpoint::start().await;
    stack
        .linked_oauth_connector("oauth2/crm", &endpoint.url, &[])
        .await;
    stack
        .attach(&stack.acme, "oauth2/crm", "prj_docs", &["preview"])
        .await;
    let web = stack.get_token(&preview, "oauth2/crm").await.unwrap();
    let docs_token = stack.acme.token("prj_docs", "preview");
    let docs = stack.get_token(&docs_token, "oauth2/crm").await.unwrap();
    assert_ne!(
        web.token, docs.token,
        "two projects never share a provider token"
    );
    assert_eq!(endpoint.calls(), 2);
    assert_eq!(
        stack
            .get_token(&docs_token, "oauth2/crm")
            .await
            .unwrap()
            .token_id,
        docs.token_id
    );
    let rows = stack.ledger("oauth2/crm").await;
    let recorded: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.token_id.as_str(), r.project_id.as_str()))
        .collect();
    assert_eq!(
        recorded,
        [
            (docs.token_id.as_str(), "prj_docs"),
            (web.token_id.as_str(), "prj_web")
        ]
    );
    let expires = rows[0].expire_time.as_ref().unwrap().seconds;
    assert_eq!(expires, docs.expires_at.unwrap().seconds);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_that_cannot_be_recorded_is_not_handed_out() {
    let mut stack = Stack::start().await;
    let endpoint = TokenEndpoint::start().await;
    stack
        .linked_oauth_connector(
            "oauth2/crm",
            &endpoint.url,
            &[("allowed_scopes", "contacts.read contacts.write")],
        )
        .await;
    // The attach must not reach the broker after the answer below is cached (and drop it).
    stack.feed_caught_up().await;
    let token = stack.acme.token("prj_web", "preview");
    let ask = |scope: &str| bpb::GetTokenRequest {
        connector: "oauth2/crm".into(),
        scopes: vec![scope.into()],
        ..Default::default()
    };
    stack
        .get_token_with(&token, ask("contacts.read"))
        .await
        .unwrap();
    // The registry goes away: the cached authorization still answers for a few seconds, the
    // provider hands out a new token, but the ledger cannot take it, so nobody gets it.
    stack.stop_registry().await;
    assert_denied(
        stack.get_token_with(&token, ask("contacts.write")).await,
        Code::Unavailable,
        "REGISTRY_UNAVAILABLE",
        "RegistryUnavailableError",
    );
    assert_eq!(
        endpoint.calls(),
        2,
        "the provider was asked, the token held back"
    );
    // The token recorded before is still handed out while the cached answer may be used.
    stack
        .get_token_with(&token, ask("contacts.read"))
        .await
        .unwrap();
    stack.stop().await;
}

/// An `api-key` connector's credential is its stored key: once its tokens are revoked, the broker
/// hands the key out nowhere (not in the project it was recorded for, not in another one, not
/// from a broker that never heard of the revocation) until the connector gets a new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_api_key_is_handed_out_nowhere_until_it_is_replaced() {
    use connect_proto::registry::v1 as rpb;
    let stack = Stack::start().await;
    let preview = stack.acme.token("prj_web", "preview");
    let first = stack.get_token(&preview, "api-key/stripe").await.unwrap();
    let revoked = stack
        .admin(&stack.acme)
        .revoke_tokens(rpb::RevokeTokensRequest {
            connector: "api-key/stripe".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.revoked, 1, "{revoked:?}");
    // Where it was recorded before (the broker remembers having recorded it there).
    assert_denied(
        settled(&stack, &preview, |a| a.is_err()).await,
        Code::FailedPrecondition,
        "NO_VALID_TOKEN",
        "NoValidTokenError",
    );
    // Where it never was: the registry refuses to record a revoked credential.
    stack
        .attach(
            &stack.acme,
            "api-key/stripe",
            "prj_web",
            &["preview", "production"],
        )
        .await;
    let production = stack.acme.token("prj_web", "production");
    assert_denied(
        settled(&stack, &production, |a| {
            a.as_ref()
                .is_err_and(|s| s.code() != Code::PermissionDenied)
        })
        .await,
        Code::FailedPrecondition,
        "NO_VALID_TOKEN",
        "NoValidTokenError",
    );
    // A new key works again, everywhere.
    stack
        .admin(&stack.acme)
        .update_connector(rpb::UpdateConnectorRequest {
            connector: "api-key/stripe".into(),
            secrets: [("api_key".to_owned(), "sk_acme_stripe_2".to_owned())].into(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["secrets".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let renewed = settled(&stack, &preview, |a| a.is_ok()).await.unwrap();
    assert_eq!(renewed.token, "sk_acme_stripe_2");
    assert_ne!(renewed.token_id, first.token_id);
    stack.stop().await;
}

/// `GetToken` of `api-key/stripe` until `done` holds of the answer (the broker follows the
/// registry's changes within moments), at most five seconds.
async fn settled(
    stack: &Stack,
    token: &str,
    done: impl Fn(&Result<bpb::GetTokenResponse, tonic::Status>) -> bool,
) -> Result<bpb::GetTokenResponse, tonic::Status> {
    let mut answer = stack.get_token(token, "api-key/stripe").await;
    for _ in 0..500 {
        if done(&answer) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        answer = stack.get_token(token, "api-key/stripe").await;
    }
    answer
}
