//! People as callers: ID tokens of an operator issuer (a small identity provider of these tests,
//! not `dev-issuer`: discovery and a JWKS on loopback, ES256) as the bearer, what role bindings
//! give them, WhoAmI, the audit's actors, and every refusal.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use connect_proto::registry::v1 as pb;
use connect_types::{IssuerUrl, UrlPolicy};
use link_registry::config::OperatorSettings;
use serde_json::{Value, json};
use tonic::Code;

use crate::harness::{Client, TestApp, TestDb};

/// The error of a call answered as a value (see `harness::assert_error`).
fn assert_error<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    reason: &str,
) -> tonic::Status {
    crate::harness::assert_error(result.map(tonic::Response::new), code, reason)
}

crate::on_every_backend!(people_act_by_their_bindings_and_are_audited_by_name);

/// An identity provider: discovery, a JWKS with one P-256 key, and tokens it signs.
struct IdentityProvider {
    issuer: String,
    signing: jsonwebtoken::EncodingKey,
    task: tokio::task::JoinHandle<()>,
}

impl IdentityProvider {
    async fn start() -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = key.public_key_raw().to_vec();
        assert_eq!(
            (point.len(), point[0]),
            (65, 4),
            "an uncompressed P-256 point"
        );
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "idp-1",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        });
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let jwks = json!({ "keys": [jwk] });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let discovery = discovery.clone();
                    async move { axum::Json(discovery) }
                }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || {
                    let jwks = jwks.clone();
                    async move { axum::Json(jwks) }
                }),
            );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            signing: jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())
                .unwrap(),
            issuer,
            task,
        }
    }

    /// An ID token for `sub` with `extra` claims (which may replace the defaults).
    fn token(&self, sub: &str, extra: Value) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({
            "iss": self.issuer, "sub": sub, "aud": "connect-cli",
            "iat": now, "exp": now + 300,
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("idp-1".into());
        jsonwebtoken::encode(&header, &claims, &self.signing).unwrap()
    }

    fn settings(&self) -> OperatorSettings {
        OperatorSettings {
            issuers: vec![IssuerUrl::parse(&self.issuer).unwrap()],
            audiences: vec!["connect-cli".into(), "connect-console".into()],
            leeway: Duration::from_secs(30),
            policy: UrlPolicy::loopback(),
            fetch_timeout: Duration::from_secs(3),
        }
    }
}

impl Drop for IdentityProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn projects(client: &mut Client, team: Option<&str>) -> Result<Vec<String>, tonic::Status> {
    let mut request = tonic::Request::new(pb::ListProjectsRequest::default());
    if let Some(team) = team {
        request
            .metadata_mut()
            .insert("connect-team", team.parse().unwrap());
    }
    client
        .list_projects(request)
        .await
        .map(|r| r.into_inner().projects.into_iter().map(|p| p.id).collect())
}

async fn create_project(
    client: &mut Client,
    team: Option<&str>,
    id: &str,
) -> Result<pb::Project, tonic::Status> {
    let mut request = tonic::Request::new(pb::CreateProjectRequest {
        id: id.into(),
        name: id.into(),
    });
    if let Some(team) = team {
        request
            .metadata_mut()
            .insert("connect-team", team.parse().unwrap());
    }
    client.create_project(request).await.map(|r| r.into_inner())
}

fn binding(
    idp: &IdentityProvider,
    subject: &str,
    group: &str,
    role: &str,
) -> pb::CreateRoleBindingRequest {
    pb::CreateRoleBindingRequest {
        issuer: idp.issuer.clone(),
        subject: subject.into(),
        group: group.into(),
        role: role.into(),
        ..Default::default()
    }
}

async fn people_act_by_their_bindings_and_are_audited_by_name(db: TestDb) {
    let idp = Arc::new(IdentityProvider::start().await);
    let settings = idp.settings();
    let app = TestApp::spawn_with(db, move |c| c.operators = Some(settings)).await;
    let globex = app
        .new_team("team_globex", "globex", crate::harness::OTHER_ISSUER)
        .await;
    let ada_token = idp.token(
        "ada-sub",
        json!({"email": "ada@acme.example", "groups": ["eng"]}),
    );
    let mut ada = app.client(&ada_token);

    // Signed in but bound nowhere: refused, and WhoAmI says so.
    assert_error(
        projects(&mut ada, None).await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    let who = ada
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            who.kind.as_str(),
            who.actor.as_str(),
            who.subject.as_str(),
            who.email.as_str()
        ),
        (
            "operator",
            "user:ada@acme.example",
            "ada-sub",
            "ada@acme.example"
        )
    );
    assert_eq!(who.issuer, idp.issuer);
    assert!(who.teams.is_empty());

    // Bound by subject as Acme's admin: she acts, and the audit names her.
    let by_subject = app
        .admin()
        .create_role_binding(binding(&idp, "ada-sub", "", "admin"))
        .await
        .unwrap()
        .into_inner();
    create_project(&mut ada, None, "prj_ada").await.unwrap();
    let events = app
        .admin()
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let created = events
        .iter()
        .find(|e| e.action == "project.create" && e.target.ends_with("prj_ada"))
        .unwrap();
    assert_eq!(created.actor, "user:ada@acme.example");
    assert_eq!(created.actor_issuer, idp.issuer);

    // Bound by group as Globex's viewer too: two teams, so she names one.
    app.client(&globex.admin)
        .create_role_binding(binding(&idp, "", "eng", "viewer"))
        .await
        .unwrap();
    let status = assert_error(
        projects(&mut ada, None).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(status.message().contains("connect-team"), "{status:?}");
    assert_eq!(
        projects(&mut ada, Some("team_acme")).await.unwrap(),
        ["prj_ada"]
    );
    assert!(
        projects(&mut ada, Some("team_globex"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_error(
        create_project(&mut ada, Some("team_globex"), "prj_nope").await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    let who = ada
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut teams: Vec<(String, String)> =
        who.teams.into_iter().map(|t| (t.team_id, t.role)).collect();
    teams.sort();
    assert_eq!(
        teams,
        [
            ("team_acme".to_owned(), "admin".to_owned()),
            ("team_globex".to_owned(), "viewer".to_owned())
        ]
    );
    // Bob is in the group only; the console's audience is accepted too.
    let bob_token = idp.token("bob", json!({"groups": ["eng"], "aud": "connect-console"}));
    let mut bob = app.client(&bob_token);
    assert!(projects(&mut bob, None).await.unwrap().is_empty());
    assert_error(
        projects(&mut bob, Some("team_acme")).await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );

    // Deleting the binding takes effect at once.
    app.admin()
        .delete_role_binding(pb::DeleteRoleBindingRequest { id: by_subject.id })
        .await
        .unwrap();
    assert_error(
        projects(&mut ada, Some("team_acme")).await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );

    // Tokens that are not good enough.
    let refused = |token: String, code: Code, reason: &'static str| {
        let app = &app;
        async move {
            let status = assert_error(projects(&mut app.client(&token), None).await, code, reason);
            assert!(!status.message().contains(&token));
        }
    };
    let now = chrono::Utc::now().timestamp();
    refused(
        idp.token("bob", json!({"groups": ["eng"], "aud": "someone-else"})),
        Code::Unauthenticated,
        "INVALID_TOKEN",
    )
    .await;
    refused(
        idp.token(
            "bob",
            json!({"groups": ["eng"], "exp": now - 120, "iat": now - 600}),
        ),
        Code::Unauthenticated,
        "TOKEN_EXPIRED",
    )
    .await;
    refused(
        idp.token(
            "bob",
            json!({"groups": ["eng"], "iss": "https://elsewhere.example"}),
        ),
        Code::Unauthenticated,
        "ISSUER_NOT_TRUSTED",
    )
    .await;
    let unsigned = {
        let mut parts: Vec<String> = bob_token.split('.').map(str::to_owned).collect();
        parts[0] = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"idp-1"}"#);
        parts[2] = URL_SAFE_NO_PAD.encode(b"x");
        parts.join(".")
    };
    refused(unsigned, Code::Unauthenticated, "INVALID_TOKEN").await;
    let symmetric = jsonwebtoken::encode(
        &{
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            h.kid = Some("idp-1".into());
            h
        },
        &json!({"iss": idp.issuer, "sub": "bob", "aud": "connect-cli", "iat": now, "exp": now + 300, "groups": ["eng"]}),
        &jsonwebtoken::EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    refused(symmetric, Code::Unauthenticated, "INVALID_TOKEN").await;
    let tampered = {
        let mut parts: Vec<String> = bob_token.split('.').map(str::to_owned).collect();
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        claims["sub"] = "ada-sub".into();
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        parts.join(".")
    };
    refused(tampered, Code::Unauthenticated, "INVALID_TOKEN").await;
    // A person's token is no key for the brokers' service.
    assert_error(
        app.runtime(&bob_token)
            .get_token_id_key(pb::GetTokenIdKeyRequest {})
            .await
            .map(tonic::Response::into_inner),
        Code::Unauthenticated,
        "INVALID_KEY",
    );
    app.stop().await;
}
