//! A link's ceilings and issuance quota through the real broker and registry: ceilings refuse
//! before any provider call and narrow what is asked; a quota is shared by two brokers while
//! cached hand-outs stay free.

use connect_proto::{broker::v1 as bpb, registry::v1 as rpb};
use tonic::Code;

use crate::harness::{Stack, TokenEndpoint, assert_denied};

fn ask(scopes: &[&str]) -> bpb::GetTokenRequest {
    bpb::GetTokenRequest {
        connector: "oauth2/idp".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

async fn attach_web(stack: &Stack, terms: rpb::AttachProjectRequest) {
    stack
        .admin(&stack.acme)
        .attach_project(rpb::AttachProjectRequest {
            connector: "oauth2/idp".into(),
            project: "prj_web".into(),
            environments: vec!["preview".into()],
            ..terms
        })
        .await
        .expect("attach");
    stack.feed_caught_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceilings_refuse_before_any_provider_call_and_narrow_what_is_asked() {
    let stack = Stack::start().await;
    let endpoint = TokenEndpoint::start().await;
    stack
        .linked_oauth_connector("oauth2/idp", &endpoint.url, &[("scopes", "read write")])
        .await;
    attach_web(
        &stack,
        rpb::AttachProjectRequest {
            allowed_scopes: strings(&["read"]),
            allowed_subjects: strings(&["app"]),
            ..Default::default()
        },
    )
    .await;
    let token = stack.acme.token("prj_web", "preview");

    assert_denied(
        stack.get_token_with(&token, ask(&["read", "write"])).await,
        Code::PermissionDenied,
        "SCOPE_NOT_ALLOWED",
        "ScopeNotAllowedError: the link does not allow scope 'write' (connector 'oauth2/idp')",
    );
    let bearer = bpb::GetTokenRequest {
        subject: Some(bpb::Subject {
            kind: Some(bpb::subject::Kind::JwtBearer(bpb::JwtBearerSubject {
                sub: "svc".into(),
                ..Default::default()
            })),
        }),
        ..ask(&[])
    };
    assert_denied(
        stack.get_token_with(&token, bearer).await,
        Code::PermissionDenied,
        "SUBJECT_NOT_ALLOWED",
        "SubjectNotAllowedError: the link does not allow jwt_bearer subjects",
    );
    assert_eq!(endpoint.calls(), 0, "refused before any provider call");

    // Naming no scopes asks for the link's, not the connector's wider default.
    let narrowed = stack.get_token_with(&token, ask(&[])).await.unwrap();
    assert_eq!(narrowed.scopes, ["read"]);
    assert_eq!(endpoint.calls(), 1);
    let again = stack.get_token_with(&token, ask(&["read"])).await.unwrap();
    assert_eq!(again.token, narrowed.token, "served from the cache");
    assert_eq!(endpoint.calls(), 1);

    // Without the ceiling the connector's default applies again, and `write` may be asked.
    attach_web(&stack, rpb::AttachProjectRequest::default()).await;
    let wide = stack.get_token_with(&token, ask(&[])).await.unwrap();
    assert_eq!(wide.scopes, ["read", "write"]);
    stack
        .get_token_with(&token, ask(&["write"]))
        .await
        .expect("no ceiling");
    // And a ceiling set again is seen at once by the cached answer's next use.
    attach_web(
        &stack,
        rpb::AttachProjectRequest {
            allowed_scopes: strings(&["read"]),
            ..Default::default()
        },
    )
    .await;
    assert_denied(
        stack.get_token_with(&token, ask(&["write"])).await,
        Code::PermissionDenied,
        "SCOPE_NOT_ALLOWED",
        "ScopeNotAllowedError: ",
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_links_quota_is_shared_by_two_brokers_and_cached_hand_outs_are_free() {
    let stack = Stack::start().await;
    let endpoint = TokenEndpoint::start().await;
    stack
        .linked_oauth_connector("oauth2/idp", &endpoint.url, &[])
        .await;
    attach_web(
        &stack,
        rpb::AttachProjectRequest {
            max_issuances_per_hour: 2,
            ..Default::default()
        },
    )
    .await;
    let other = stack.second_broker(|_| {}).await;
    let token = stack.acme.token("prj_web", "preview");

    // Each scope set is a new credential: one at each broker fills the hour.
    let a = stack.get_token_with(&token, ask(&["a"])).await.unwrap();
    other.get_token_with(&token, ask(&["b"])).await.unwrap();
    let refused = assert_denied(
        other.get_token_with(&token, ask(&["c"])).await,
        Code::ResourceExhausted,
        "QUOTA_EXCEEDED",
        "QuotaExceededError: the link of connector 'oauth2/idp' to project 'prj_web' obtained its 2 credentials of the last hour",
    );
    assert!(!refused.message().contains("at_"), "{refused:?}");
    assert_denied(
        stack.get_token_with(&token, ask(&["c"])).await,
        Code::ResourceExhausted,
        "QUOTA_EXCEEDED",
        "QuotaExceededError: ",
    );
    // What a broker holds already is handed out again without counting.
    for _ in 0..5 {
        let cached = stack.get_token_with(&token, ask(&["a"])).await.unwrap();
        assert_eq!(cached.token, a.token);
        other.get_token_with(&token, ask(&["b"])).await.unwrap();
    }
    let ledger = stack.ledger("oauth2/idp").await;
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    // A credential obtained beyond the quota is not handed out, and not recorded.
    assert!(endpoint.calls() >= 3);
    // A higher quota lets the held one out; it is recorded then.
    attach_web(
        &stack,
        rpb::AttachProjectRequest {
            max_issuances_per_hour: 3,
            ..Default::default()
        },
    )
    .await;
    other.get_token_with(&token, ask(&["c"])).await.unwrap();
    assert_eq!(stack.ledger("oauth2/idp").await.len(), 3);
    let link = stack
        .admin(&stack.acme)
        .get_project_link(rpb::GetProjectLinkRequest {
            connector: "oauth2/idp".into(),
            project: "prj_web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(link.last_issue_time.is_some());
    other.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_in_a_custom_environment_is_matched_by_slug_or_id_until_renamed_or_removed() {
    let stack = Stack::start().await;
    let mut admin = stack.admin(&stack.acme);
    let staging = admin
        .create_environment(rpb::CreateEnvironmentRequest {
            project: "prj_docs".into(),
            slug: "staging".into(),
            name: "Staging".into(),
        })
        .await
        .unwrap()
        .into_inner();
    stack
        .attach(&stack.acme, "api-key/stripe", "prj_docs", &["staging"])
        .await;
    stack.feed_caught_up().await;
    for claim in ["staging", staging.id.as_str()] {
        let token = stack.acme.token("prj_docs", claim);
        let issued = stack.get_token(&token, "api-key/stripe").await.unwrap();
        assert_eq!(issued.token, "sk_acme_stripe", "{claim}");
    }
    // Another environment of the project, and one it does not have, are not enabled.
    for claim in ["preview", "qa"] {
        assert_denied(
            stack
                .get_token(&stack.acme.token("prj_docs", claim), "api-key/stripe")
                .await,
            Code::PermissionDenied,
            "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
            "ClientNotEnabledForEnvironmentError: ",
        );
    }
    // The same slug in a token for another project means that project's environment.
    assert_denied(
        stack
            .get_token(&stack.acme.token("prj_web", "staging"), "api-key/stripe")
            .await,
        Code::PermissionDenied,
        "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
        "ClientNotEnabledForEnvironmentError: ",
    );

    // A rename reaches the caching broker: the old slug no longer matches, the new one does.
    admin
        .update_environment(rpb::UpdateEnvironmentRequest {
            project: "prj_docs".into(),
            environment: "staging".into(),
            slug: "stage".into(),
            name: String::new(),
        })
        .await
        .unwrap();
    stack.feed_caught_up().await;
    assert_denied(
        stack
            .get_token(&stack.acme.token("prj_docs", "staging"), "api-key/stripe")
            .await,
        Code::PermissionDenied,
        "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
        "ClientNotEnabledForEnvironmentError: ",
    );
    let stage = stack.acme.token("prj_docs", "stage");
    stack.get_token(&stage, "api-key/stripe").await.unwrap();

    // Removed: the link had no other environment, so it is gone too.
    let removed = admin
        .delete_environment(rpb::DeleteEnvironmentRequest {
            project: "prj_docs".into(),
            environment: staging.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.removed_links.len(), 1);
    stack.feed_caught_up().await;
    assert_denied(
        stack.get_token(&stage, "api-key/stripe").await,
        Code::PermissionDenied,
        "CLIENT_NOT_LINKED_TO_PROJECT",
        "ClientNotLinkedToProjectError: ",
    );
    stack.stop().await;
}
