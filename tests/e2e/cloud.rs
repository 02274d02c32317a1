//! Cloud credentials without secrets: `aws`, `gcp` and `azure` connectors trade a token the broker
//! mints at a loopback cloud that speaks each provider's wire format (STS query API in XML,
//! Google's STS and IAM Credentials in JSON, Entra ID's v2 token endpoint) and trusts Connect only
//! as a relying party would: it fetches the discovery document and JWKS over HTTP, caches the
//! JWKS, and checks signature, issuer, audience, expiry and the trust policy's `sub`.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Form, Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use connect_proto::broker::v1 as bpb;
use serde_json::{Value, json};
use tonic::Code;

use crate::harness::{SecondBroker, Stack, assert_denied, captured_logs};

async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Result<T, String> {
    let body = reqwest::get(url)
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// A relying party's view of Connect's issuer: the JWKS, cached for `ttl`, never refetched early
/// (a token signed by a key it has not seen fails).
struct Verifier {
    issuer: String,
    ttl: Duration,
    jwks: Mutex<Option<(Instant, jsonwebtoken::jwk::JwkSet)>>,
    fetches: AtomicUsize,
}

impl Verifier {
    async fn keys(&self) -> Result<jsonwebtoken::jwk::JwkSet, String> {
        if let Some((at, keys)) = &*self.jwks.lock().unwrap()
            && at.elapsed() < self.ttl
        {
            return Ok(keys.clone());
        }
        let discovery: Value =
            get_json(&format!("{}/.well-known/openid-configuration", self.issuer)).await?;
        if discovery["issuer"] != self.issuer.as_str() {
            return Err("discovery names another issuer".into());
        }
        let jwks_uri = discovery["jwks_uri"].as_str().ok_or("no jwks_uri")?;
        let keys: jsonwebtoken::jwk::JwkSet = get_json(jwks_uri).await?;
        self.fetches.fetch_add(1, Ordering::SeqCst);
        *self.jwks.lock().unwrap() = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// The token's claims and kid when it verifies for one of `audiences`.
    async fn verify(&self, token: &str, audiences: &[&str]) -> Result<(Value, String), String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        if header.alg != jsonwebtoken::Algorithm::ES256 {
            return Err("not ES256".into());
        }
        let kid = header.kid.ok_or("no kid")?;
        let keys = self.keys().await?;
        let jwk = keys.find(&kid).ok_or(format!("unknown kid {kid}"))?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Value>(
            token,
            &jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?,
            &validation,
        )
        .map_err(|e| e.to_string())?
        .claims;
        let lifetime = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
        if !(1..=300).contains(&lifetime) {
            return Err(format!("a token living {lifetime} s"));
        }
        Ok((claims, kid))
    }
}

/// What the loopback cloud saw and how it answers.
struct CloudState {
    verifier: Verifier,
    /// The `sub` every trust policy accepts.
    trusted_sub: Mutex<String>,
    calls: AtomicUsize,
    /// Verification failures (a token that did not verify).
    failures: Mutex<Vec<String>>,
    /// Every verified token's claims and kid.
    seen: Mutex<Vec<(Value, String)>>,
    /// AWS: the last form.
    aws_form: Mutex<HashMap<String, String>>,
    /// Google: federated tokens issued (to check generateAccessToken's bearer).
    federated: Mutex<Vec<String>>,
    /// Entra ID: how long its tokens live.
    azure_lifetime: std::sync::atomic::AtomicU64,
    /// Every credential handed out, to check they stay out of logs.
    handed_out: Mutex<Vec<String>>,
}

impl CloudState {
    async fn verify(&self, token: &str, audiences: &[&str]) -> Result<Value, String> {
        match self.verifier.verify(token, audiences).await {
            Ok((claims, kid)) => {
                if claims["sub"] != self.trusted_sub.lock().unwrap().as_str() {
                    return Err(format!("sub {} is not trusted", claims["sub"]));
                }
                self.seen.lock().unwrap().push((claims.clone(), kid));
                Ok(claims)
            }
            Err(why) => {
                self.failures.lock().unwrap().push(why.clone());
                Err(why)
            }
        }
    }

    fn secret(&self, prefix: &str) -> String {
        let value = format!("{prefix}{:032x}", rand::random::<u128>());
        self.handed_out.lock().unwrap().push(value.clone());
        value
    }
}

struct Cloud {
    url: String,
    state: Arc<CloudState>,
    _task: tokio::task::JoinHandle<()>,
}

const ROLE: &str = "arn:aws:iam::123456789012:role/deploy";
const PROVIDER: &str = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/connect/providers/acme";
const SERVICE_ACCOUNT: &str = "deployer@acme-prod.iam.gserviceaccount.com";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const AZURE_CLIENT: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";

impl Cloud {
    async fn start(issuer: &str, jwks_ttl: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(CloudState {
            verifier: Verifier {
                issuer: issuer.to_owned(),
                ttl: jwks_ttl,
                jwks: Mutex::new(None),
                fetches: AtomicUsize::new(0),
            },
            trusted_sub: Mutex::new("owner:acme:project:web:environment:preview".into()),
            calls: AtomicUsize::new(0),
            failures: Mutex::default(),
            seen: Mutex::default(),
            aws_form: Mutex::default(),
            federated: Mutex::default(),
            azure_lifetime: std::sync::atomic::AtomicU64::new(3599),
            handed_out: Mutex::default(),
        });
        let app = Router::new()
            .route("/aws/", post(aws_sts))
            .route("/google/v1/token", post(google_sts))
            .route(
                "/iam/v1/projects/-/serviceAccounts/{call}",
                post(generate_access_token),
            )
            .route("/entra/{tenant}/oauth2/v2.0/token", post(entra_token))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            state,
            _task: task,
        }
    }

    fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    fn failures(&self) -> Vec<String> {
        self.state.failures.lock().unwrap().clone()
    }

    fn last_claims(&self) -> Value {
        self.state.seen.lock().unwrap().last().unwrap().0.clone()
    }
}

fn sts_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("content-type", "text/xml")],
        format!(
            r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>
  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
</ErrorResponse>"#
        ),
    )
        .into_response()
}

/// AWS STS `AssumeRoleWithWebIdentity` (query API, unsigned, XML answer).
async fn aws_sts(
    State(state): State<Arc<CloudState>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    *state.aws_form.lock().unwrap() = form.clone();
    if form.get("Action").map(String::as_str) != Some("AssumeRoleWithWebIdentity")
        || form.get("Version").map(String::as_str) != Some("2011-06-15")
    {
        return sts_error(StatusCode::BAD_REQUEST, "InvalidAction", "unknown action");
    }
    match form.get("RoleArn").map(String::as_str) {
        Some(ROLE) => {}
        Some("arn:aws:iam::123456789012:role/down") => {
            return (StatusCode::SERVICE_UNAVAILABLE, "").into_response();
        }
        Some("arn:aws:iam::123456789012:role/idp-unreachable") => {
            return sts_error(
                StatusCode::BAD_REQUEST,
                "IDPCommunicationError",
                "could not reach the identity provider",
            );
        }
        _ => {
            return sts_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Not authorized to perform sts:AssumeRoleWithWebIdentity",
            );
        }
    }
    let token = form.get("WebIdentityToken").cloned().unwrap_or_default();
    if let Err(why) = state.verify(&token, &["sts.amazonaws.com"]).await {
        return sts_error(StatusCode::BAD_REQUEST, "InvalidIdentityToken", &why);
    }
    let duration: i64 = form
        .get("DurationSeconds")
        .and_then(|d| d.parse().ok())
        .unwrap_or(3600);
    let expiration = (chrono::Utc::now() + chrono::Duration::seconds(duration))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (key_id, secret, session) = (
        state.secret("ASIA"),
        state.secret("wJalr/"),
        state.secret("FwoGZXIvYXdz"),
    );
    (
        [("content-type", "text/xml")],
        format!(
            r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>{sub}</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/deploy/{session_name}</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:{session_name}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{session}</SessionToken>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <Expiration>{expiration}</Expiration>
      <AccessKeyId>{key_id}</AccessKeyId>
    </Credentials>
    <Provider>connect</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#,
            sub = state.trusted_sub.lock().unwrap(),
            session_name = form.get("RoleSessionName").cloned().unwrap_or_default(),
        ),
    )
        .into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// Google's STS: RFC 8693 token exchange of the minted token for a federated access token.
async fn google_sts(
    State(state): State<Arc<CloudState>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange"
        || field("requested_token_type") != "urn:ietf:params:oauth:token-type:access_token"
        || field("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt"
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "bad exchange");
    }
    if field("audience") != PROVIDER {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid.",
        );
    }
    // A provider without allowed audiences: its resource name, with or without `https:`.
    if let Err(why) = state
        .verify(
            field("subject_token"),
            &[PROVIDER, &format!("https:{PROVIDER}")],
        )
        .await
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &why);
    }
    let token = state.secret("ya29.federated.");
    state.federated.lock().unwrap().push(token.clone());
    Json(json!({
        "access_token": token,
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer",
        "expires_in": 3599,
    }))
    .into_response()
}

/// IAM Credentials `generateAccessToken`, authorized by a federated token.
async fn generate_access_token(
    State(state): State<Arc<CloudState>>,
    Path(call): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let google_error = |status: StatusCode, code: &str, message: &str| {
        (
            status,
            Json(
                json!({ "error": { "code": status.as_u16(), "message": message, "status": code } }),
            ),
        )
            .into_response()
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !state.federated.lock().unwrap().iter().any(|t| t == bearer) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    }
    if call != format!("{SERVICE_ACCOUNT}:generateAccessToken") {
        return google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
        );
    }
    let lifetime: i64 = body["lifetime"]
        .as_str()
        .and_then(|l| l.strip_suffix('s'))
        .and_then(|l| l.parse().ok())
        .unwrap_or(3600);
    let scopes = body["scope"].as_array().cloned().unwrap_or_default();
    if scopes.is_empty() {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "scope is empty",
        );
    }
    Json(json!({
        "accessToken": state.secret("ya29.sa."),
        "expireTime": (chrono::Utc::now() + chrono::Duration::seconds(lifetime))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
    .into_response()
}

/// Entra ID's v2 token endpoint: client credentials with a federated client assertion.
async fn entra_token(
    State(state): State<Arc<CloudState>>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if tenant != TENANT {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS90002: Tenant not found.",
        );
    }
    if field("grant_type") != "client_credentials"
        || field("client_assertion_type")
            != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        || field("scope").is_empty()
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "AADSTS900144");
    }
    if field("client_id") != AZURE_CLIENT {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: Application not found in the directory.",
        );
    }
    if let Err(why) = state
        .verify(field("client_assertion"), &["api://AzureADTokenExchange"])
        .await
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            &format!("AADSTS70021: No matching federated identity record found ({why})"),
        );
    }
    let lifetime = state.azure_lifetime.load(Ordering::SeqCst);
    Json(json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": state.secret("eyJ0eXAiOiJKV1Qi.entra."),
    }))
    .into_response()
}

/// A stack whose second broker is an OIDC issuer with a signing key it already signs with.
async fn issuing_stack(publish_delay: Duration) -> (Stack, SecondBroker, String) {
    let stack = Stack::start().await;
    stack.local().registry().rotate_signing_key().await.unwrap();
    let broker = stack
        .second_broker(|c| {
            c.issuer_listen = Some("127.0.0.1:0".parse().unwrap());
            c.signing_key_publish_delay = publish_delay;
            c.signing_keys_refresh = Duration::from_millis(100);
        })
        .await;
    let issuer = format!("http://{}", broker.issuer_addr.unwrap());
    let ring = broker.key_ring.clone().unwrap();
    for _ in 0..200 {
        if ring.signing_kid(chrono::Utc::now()).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ring.signing_kid(chrono::Utc::now()).is_some());
    (stack, broker, issuer)
}

/// Acme's Azure connector `uid` for app registration `client_id` at `authority`, linked.
async fn linked_azure(stack: &Stack, uid: &str, client_id: &str, authority: &str) {
    stack
        .linked_connector(
            uid,
            &[
                ("tenant_id", TENANT),
                ("client_id", client_id),
                ("authority_url", authority),
            ],
            &[],
        )
        .await;
}

fn ask(connector: &str) -> bpb::GetTokenRequest {
    bpb::GetTokenRequest {
        connector: connector.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_credentials_come_from_sts_for_a_minted_token_verified_through_the_published_jwks() {
    let (stack, broker, issuer) = issuing_stack(Duration::from_secs(600)).await;
    let cloud = Cloud::start(&issuer, Duration::from_secs(300)).await;
    let sts = format!("{}/aws/", cloud.url);
    stack
        .linked_connector(
            "aws/prod",
            &[
                ("role_arn", ROLE),
                ("sts_url", &sts),
                ("duration_secs", "900"),
            ],
            &[],
        )
        .await;
    let token = stack.acme.token("prj_web", "preview");

    let answer = broker
        .get_token_with(&token, ask("aws/prod"))
        .await
        .unwrap();
    let credential = &answer.credential;
    let mut parts: Vec<&String> = credential.keys().collect();
    parts.sort();
    assert_eq!(
        parts,
        ["access_key_id", "secret_access_key", "session_token"]
    );
    assert!(credential["access_key_id"].starts_with("ASIA"));
    assert!(credential["secret_access_key"].starts_with("wJalr/"));
    assert_eq!(answer.token, credential["session_token"]);
    let expires = answer.expires_at.unwrap().seconds - chrono::Utc::now().timestamp();
    assert!((890..=900).contains(&expires), "{expires}");
    assert_eq!(answer.connector.unwrap().r#type, "aws");

    // What STS saw: the role, a session named after the deployment, and a token it verified
    // through Connect's discovery and JWKS.
    let form = cloud.state.aws_form.lock().unwrap().clone();
    assert_eq!(form["RoleArn"], ROLE);
    assert_eq!(form["RoleSessionName"], "connect-prj_web-preview");
    assert_eq!(form["DurationSeconds"], "900");
    assert!(cloud.failures().is_empty(), "{:?}", cloud.failures());
    assert_eq!(cloud.state.verifier.fetches.load(Ordering::SeqCst), 1);
    let claims = cloud.last_claims();
    assert_eq!(claims["iss"], issuer.as_str());
    assert_eq!(claims["sub"], "owner:acme:project:web:environment:preview");
    assert_eq!(claims["aud"], "sts.amazonaws.com");
    assert_eq!(claims["owner_id"], "team_acme");
    assert_eq!(claims["project_id"], "prj_web");
    assert_eq!(claims["environment"], "preview");
    assert!(
        claims["connector_id"]
            .as_str()
            .unwrap()
            .starts_with("conn_")
    );

    // Cached until shortly before it expires, and recorded once in the ledger.
    let again = broker
        .get_token_with(&token, ask("aws/prod"))
        .await
        .unwrap();
    assert_eq!(again.credential, answer.credential);
    assert_eq!(cloud.calls(), 1);
    let ledger = stack.ledger("aws/prod").await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].project_id, "prj_web");

    // The link decides, before any cloud call.
    let docs = stack.acme.token("prj_docs", "preview");
    assert_denied(
        broker.get_token_with(&docs, ask("aws/prod")).await,
        Code::PermissionDenied,
        "CLIENT_NOT_LINKED_TO_PROJECT",
        "ClientNotLinkedToProjectError",
    );
    let production = stack.acme.token("prj_web", "production");
    assert_denied(
        broker.get_token_with(&production, ask("aws/prod")).await,
        Code::PermissionDenied,
        "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
        "ClientNotEnabledForEnvironmentError",
    );
    assert_eq!(cloud.calls(), 1);

    // The trust policy refuses another role: NO_VALID_TOKEN with STS's code; an outage and an
    // unreachable identity provider are PROVIDER_UNAVAILABLE.
    for (uid, role) in [
        ("aws/denied", "arn:aws:iam::123456789012:role/other"),
        ("aws/down", "arn:aws:iam::123456789012:role/down"),
        ("aws/idp", "arn:aws:iam::123456789012:role/idp-unreachable"),
    ] {
        stack
            .linked_connector(uid, &[("role_arn", role), ("sts_url", &sts)], &[])
            .await;
    }
    let refused = assert_denied(
        broker.get_token_with(&token, ask("aws/denied")).await,
        Code::FailedPrecondition,
        "NO_VALID_TOKEN",
        "NoValidTokenError",
    );
    assert!(refused.message().contains("AccessDenied"), "{refused:?}");
    for uid in ["aws/down", "aws/idp"] {
        assert_denied(
            broker.get_token_with(&token, ask(uid)).await,
            Code::Unavailable,
            "PROVIDER_UNAVAILABLE",
            "ProviderUnavailableError",
        );
    }
    // Scopes mean nothing to AWS: refused, not ignored.
    assert_denied(
        broker
            .get_token_with(
                &token,
                bpb::GetTokenRequest {
                    scopes: vec!["s3:GetObject".into()],
                    ..ask("aws/prod")
                },
            )
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        "",
    );

    // No credential in the logs.
    let logs = captured_logs();
    for secret in cloud.state.handed_out.lock().unwrap().iter() {
        assert!(!logs.contains(secret.as_str()), "a credential in the logs");
    }
    broker.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_federates_through_sts_and_impersonates_a_service_account() {
    let (stack, broker, issuer) = issuing_stack(Duration::from_secs(600)).await;
    let cloud = Cloud::start(&issuer, Duration::from_secs(300)).await;
    let sts = format!("{}/google/v1/token", cloud.url);
    let iam = format!("{}/iam", cloud.url);
    stack
        .linked_connector(
            "gcp/federated",
            &[("audience", PROVIDER), ("sts_url", &sts)],
            &[],
        )
        .await;
    stack
        .linked_connector(
            "gcp/deployer",
            &[
                ("audience", PROVIDER),
                ("sts_url", &sts),
                ("iam_url", &iam),
                ("service_account", SERVICE_ACCOUNT),
                ("duration_secs", "1200"),
            ],
            &[],
        )
        .await;
    let token = stack.acme.token("prj_web", "preview");

    // The federated token itself, for the default cloud-platform scope.
    let federated = broker
        .get_token_with(&token, ask("gcp/federated"))
        .await
        .unwrap();
    assert!(federated.token.starts_with("ya29.federated."));
    assert!(federated.credential.is_empty());
    assert_eq!(
        federated.scopes,
        ["https://www.googleapis.com/auth/cloud-platform"]
    );
    let claims = cloud.last_claims();
    assert_eq!(claims["aud"], PROVIDER);
    assert_eq!(claims["sub"], "owner:acme:project:web:environment:preview");

    // Impersonation: STS, then generateAccessToken with the federated token, for the asked
    // scope and lifetime.
    let impersonated = broker
        .get_token_with(
            &token,
            bpb::GetTokenRequest {
                scopes: vec!["https://www.googleapis.com/auth/devstorage.read_only".into()],
                ..ask("gcp/deployer")
            },
        )
        .await
        .unwrap();
    assert!(impersonated.token.starts_with("ya29.sa."));
    assert_eq!(
        impersonated.scopes,
        ["https://www.googleapis.com/auth/devstorage.read_only"]
    );
    let expires = impersonated.expires_at.unwrap().seconds - chrono::Utc::now().timestamp();
    assert!((1190..=1200).contains(&expires), "{expires}");
    assert_eq!(cloud.calls(), 3);
    assert!(cloud.failures().is_empty(), "{:?}", cloud.failures());

    // A service account the federated identity may not impersonate; another project's `sub`
    // that the provider's condition refuses.
    stack
        .linked_connector(
            "gcp/other-account",
            &[
                ("audience", PROVIDER),
                ("sts_url", &sts),
                ("iam_url", &iam),
                ("service_account", "admin@acme-prod.iam.gserviceaccount.com"),
            ],
            &[],
        )
        .await;
    let refused = broker
        .get_token_with(&token, ask("gcp/other-account"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("PERMISSION_DENIED"),
        "{refused:?}"
    );
    *cloud.state.trusted_sub.lock().unwrap() =
        "owner:acme:project:web:environment:production".into();
    let refused = broker
        .get_token_with(
            &token,
            bpb::GetTokenRequest {
                scopes: vec!["openid".into()],
                ..ask("gcp/federated")
            },
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("invalid_grant"), "{refused:?}");
    broker.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_takes_the_minted_token_as_a_federated_client_assertion() {
    let (stack, broker, issuer) = issuing_stack(Duration::from_secs(600)).await;
    let cloud = Cloud::start(&issuer, Duration::from_secs(300)).await;
    let authority = format!("{}/entra", cloud.url);
    linked_azure(&stack, "azure/prod", AZURE_CLIENT, &authority).await;
    let token = stack.acme.token("prj_web", "preview");
    let answer = broker
        .get_token_with(&token, ask("azure/prod"))
        .await
        .unwrap();
    assert!(answer.token.starts_with("eyJ0eXAiOiJKV1Qi.entra."));
    assert_eq!(answer.scopes, ["https://management.azure.com/.default"]);
    let claims = cloud.last_claims();
    assert_eq!(claims["aud"], "api://AzureADTokenExchange");
    assert_eq!(claims["iss"], issuer.as_str());

    // An app registration Entra does not know: refused with its own code.
    linked_azure(
        &stack,
        "azure/unknown-app",
        "00000000-0000-0000-0000-000000000000",
        &authority,
    )
    .await;
    let refused = broker
        .get_token_with(&token, ask("azure/unknown-app"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("unauthorized_client"),
        "{refused:?}"
    );
    // A tenant id that would leave the authority's path is refused before any call.
    let calls = cloud.calls();
    stack
        .linked_connector(
            "azure/bad-tenant",
            &[
                ("tenant_id", "../common"),
                ("client_id", AZURE_CLIENT),
                ("authority_url", &authority),
            ],
            &[],
        )
        .await;
    assert_denied(
        broker.get_token_with(&token, ask("azure/bad-tenant")).await,
        Code::FailedPrecondition,
        "NO_VALID_TOKEN",
        "NoValidTokenError",
    );
    assert_eq!(cloud.calls(), calls);

    // A broker that is not an OIDC issuer cannot mint.
    assert_denied(
        stack.get_token(&token, "azure/prod").await,
        Code::FailedPrecondition,
        "FAILED_PRECONDITION",
        "FailedPreconditionError",
    );
    broker.stop().await;
    stack.stop().await;
}

/// A key rotation as a relying party sees it: the new key is published before any token is
/// signed with it, so a verifier that caches the JWKS (and never refetches early) verifies every
/// token, before, during and after the switch.
const PUBLISH_DELAY: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_is_seen_by_a_caching_verifier_without_a_single_failure() {
    let (stack, broker, issuer) = issuing_stack(PUBLISH_DELAY).await;
    // The verifier caches the JWKS for two seconds: longer than between two trades (so a key
    // used as soon as it exists would fail), shorter than the publish delay less the brokers'
    // refresh, as the README asks of real deployments (300 s against 10 min).
    let cloud = Cloud::start(&issuer, Duration::from_secs(2)).await;
    // Entra's tokens live one second here: every call mints and trades anew.
    cloud.state.azure_lifetime.store(1, Ordering::SeqCst);
    let authority = format!("{}/entra", cloud.url);
    linked_azure(&stack, "azure/prod", AZURE_CLIENT, &authority).await;
    let token = stack.acme.token("prj_web", "preview");
    let ring = broker.key_ring.clone().unwrap();
    let first = ring.signing_kid(chrono::Utc::now()).unwrap();
    broker
        .get_token_with(&token, ask("azure/prod"))
        .await
        .unwrap();
    let second = stack.local().registry().rotate_signing_key().await.unwrap();
    let until = Instant::now() + PUBLISH_DELAY + Duration::from_secs(3);
    while Instant::now() < until {
        broker
            .get_token_with(&token, ask("azure/prod"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(cloud.failures().is_empty(), "{:?}", cloud.failures());
    let kids: Vec<String> = cloud
        .state
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, kid)| kid.clone())
        .collect();
    // About one trade a second (each credential is cached for 0.9 s of its second).
    assert!(kids.len() >= 5, "{kids:?}");
    assert_eq!(kids.first(), Some(&first));
    assert_eq!(kids.last(), Some(&second.kid), "the new key took over");
    // Once switched, never back.
    let switched = kids.iter().position(|k| *k == second.kid).unwrap();
    assert!(kids[switched..].iter().all(|k| *k == second.kid));
    broker.stop().await;
    stack.stop().await;
}
