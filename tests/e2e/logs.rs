//! Every decision is traceable, and no token or secret is ever logged.

use hmac::Mac;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::harness::{CLIENT_SECRET, Stack, TokenEndpoint, assert_denied, captured_logs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_logged_once_each_and_no_token_or_secret_is_ever_logged() {
    let stack = Stack::start().await;
    let endpoint = TokenEndpoint::start().await;
    stack
        .linked_oauth_connector("oauth2/logged", &endpoint.url, &[])
        .await;

    let oidc_token = stack.acme.token("prj_web", "preview");
    let api_key = stack
        .get_token(&oidc_token, "api-key/stripe")
        .await
        .unwrap();
    let access = stack.get_token(&oidc_token, "oauth2/logged").await.unwrap();
    let denied_token = stack.acme.token("prj_web", "production");
    assert_denied(
        stack.get_token(&denied_token, "api-key/stripe").await,
        Code::PermissionDenied,
        "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
        "ClientNotEnabledForEnvironmentError",
    );
    assert_denied(
        stack
            .get_token("garbage.token.here", "api-key/stripe")
            .await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
        "InvalidTokenError",
    );
    let token_id_key = stack.local().registry().token_id_key().await.unwrap();
    stack.stop().await;

    let logs = captured_logs();
    // Nothing secret, in any log line of any test in this binary.
    for secret in [
        "sk_acme_stripe",
        CLIENT_SECRET,
        access.token.as_str(),
        oidc_token.as_str(),
        denied_token.as_str(),
        oidc_token.rsplit('.').next().unwrap(),
    ] {
        assert!(!logs.contains(secret), "a secret or token reached the logs");
    }

    let events: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["target"] == "connect::decision")
        .collect();
    let find = |token_id: &str| {
        events
            .iter()
            .filter(|e| e["fields"]["token_id"] == token_id)
            .collect::<Vec<_>>()
    };
    for (answer, connector) in [(&api_key, "api-key/stripe"), (&access, "oauth2/logged")] {
        // The token id is the first 16 hex digits of the credential's HMAC-SHA-256 under the
        // registry's key, not of its bare digest (which would confirm a guessed credential).
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&token_id_key).unwrap();
        mac.update(answer.token.as_bytes());
        assert_eq!(
            answer.token_id,
            hex::encode(&mac.finalize().into_bytes()[..8])
        );
        assert_ne!(
            answer.token_id,
            hex::encode(&Sha256::digest(answer.token.as_bytes())[..8])
        );
        let matching = find(&answer.token_id);
        // The access token is this test's own: one event for its one GetToken. (The API key is
        // handed out by other tests of this binary too.)
        if connector == "oauth2/logged" {
            assert_eq!(matching.len(), 1, "one event per GetToken");
        }
        let fields = &matching[0]["fields"];
        assert_eq!(fields["decision"], "allow");
        assert_eq!(fields["connector"], connector);
        assert_eq!(fields["owner_id"], "team_acme");
        assert_eq!(fields["project_id"], "prj_web");
        assert_eq!(fields["environment"], "preview");
    }
    assert!(events.iter().any(|e| e["fields"]["decision"] == "deny"
        && e["fields"]["reason"] == "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT"
        && e["fields"]["environment"] == "production"
        && e["fields"]["owner_id"] == "team_acme"));
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["decision"] == "deny" && e["fields"]["reason"] == "INVALID_TOKEN")
    );
}
