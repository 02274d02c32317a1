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
