//! A demo OAuth 2.0 provider on loopback, for trying users' consents without a real one: an
//! authorization endpoint that approves at once as its demo user (authorization code bound to a
//! PKCE S256 challenge and the redirect URI), a token endpoint (the code with its verifier,
//! rotating refresh tokens), an RFC 7009 revocation endpoint, and a `/done` page to use as a
//! consent's `return_url`: it shows the `connect_request_id` and `connect_completion` the
//! callback added, and the `FinishAuthorization` call to make with them.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Form, Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::{net::TcpListener, task::JoinHandle};

/// The provider's client registration and what its consent page answers.
#[derive(Clone, Debug)]
pub struct DemoClient {
    pub client_id: String,
    pub client_secret: String,
    /// The provider's account every consent approves as.
    pub user: String,
    /// Shown on the `/done` page with the request id and completion filled in: the command that
    /// finishes the consent (`{request_id}`, `{completion}` are replaced).
    pub finish_hint: String,
}

struct Grant {
    challenge: String,
    redirect_uri: String,
    scope: String,
}

struct ProviderState {
    client: DemoClient,
    codes: Mutex<HashMap<String, Grant>>,
    refresh_tokens: Mutex<HashMap<String, String>>,
}

/// A running demo provider.
pub struct DemoProvider {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for DemoProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoProvider")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl DemoProvider {
    pub async fn start(listen: SocketAddr, client: DemoClient) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ProviderState {
            client,
            codes: Mutex::default(),
            refresh_tokens: Mutex::default(),
        });
        let app = Router::new()
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/revoke", post(revoke))
            .route("/done", get(done))
            .route("/api/whoami", get(whoami))
            .with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, task })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

fn random(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

#[derive(serde::Deserialize)]
struct AuthorizeQuery {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    state: String,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    scope: Option<String>,
}

async fn authorize(
    State(provider): State<Arc<ProviderState>>,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    let Ok(mut back) = url::Url::parse(&q.redirect_uri) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not a URL").into_response();
    };
    if q.response_type != "code"
        || q.client_id != provider.client.client_id
        || q.code_challenge_method.as_deref() != Some("S256")
    {
        return (
            StatusCode::BAD_REQUEST,
            "this provider takes response_type=code, its client_id and PKCE S256 only",
        )
            .into_response();
    }
    let Some(challenge) = q.code_challenge.filter(|c| !c.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "code_challenge is required").into_response();
    };
    let code = random("demo_code_");
    provider.codes.lock().unwrap().insert(
        code.clone(),
        Grant {
            challenge,
            redirect_uri: q.redirect_uri.clone(),
            scope: q.scope.unwrap_or_default(),
        },
    );
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q.state);
    (StatusCode::FOUND, [(header::LOCATION, back.to_string())]).into_response()
}

fn oauth_error(error: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": error })),
    )
        .into_response()
}

/// Whether the request authenticates as the client (HTTP Basic, or `client_id` in the form).
fn client_ok(
    provider: &ProviderState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> bool {
    let client = &provider.client;
    match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        Some(basic) => base64::engine::general_purpose::STANDARD
            .decode(basic)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .is_some_and(|pair| pair == format!("{}:{}", client.client_id, client.client_secret)),
        None => form.get("client_id") == Some(&client.client_id),
    }
}

fn tokens(provider: &ProviderState, scope: &str) -> Response {
    let refresh = random("demo_rt_");
    provider
        .refresh_tokens
        .lock()
        .unwrap()
        .insert(refresh.clone(), scope.to_owned());
    Json(serde_json::json!({
        "access_token": random(&format!("demo_at_{}_", provider.client.user)),
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": refresh,
        "scope": scope,
    }))
    .into_response()
}

async fn token(
    State(provider): State<Arc<ProviderState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !client_ok(&provider, &headers, &form) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "error": "invalid_client" })),
        )
            .into_response();
    }
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    match field("grant_type") {
        "authorization_code" => {
            let Some(grant) = provider.codes.lock().unwrap().remove(field("code")) else {
                return oauth_error("invalid_grant");
            };
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(field("code_verifier").as_bytes()));
            if challenge != grant.challenge || field("redirect_uri") != grant.redirect_uri {
                return oauth_error("invalid_grant");
            }
            tokens(&provider, &grant.scope)
        }
        "refresh_token" => {
            let scope = provider
                .refresh_tokens
                .lock()
                .unwrap()
                .remove(field("refresh_token"));
            match scope {
                Some(scope) => tokens(&provider, &scope),
                None => oauth_error("invalid_grant"),
            }
        }
        _ => oauth_error("unsupported_grant_type"),
    }
}

async fn revoke(
    State(provider): State<Arc<ProviderState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !client_ok(&provider, &headers, &form) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if let Some(token) = form.get("token") {
        provider.refresh_tokens.lock().unwrap().remove(token);
    }
    StatusCode::OK.into_response()
}

async fn done(
    State(provider): State<Arc<ProviderState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Html<String> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let request_id = q.get("connect_request_id").map_or("", String::as_str);
    let completion = q.get("connect_completion").map_or("", String::as_str);
    let command = provider
        .client
        .finish_hint
        .replace("{request_id}", request_id)
        .replace("{completion}", completion);
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Back in the application</title></head>\
         <body><h1>Back in the application</h1>\
         <p>connect_request_id: <code>{}</code><br>connect_completion: <code>{}</code></p>\
         <p>The application now finishes the consent as the signed-in user:</p><pre>{}</pre></body></html>",
        escape(request_id),
        escape(completion),
        escape(&command),
    ))
}

/// The demo API behind the credential-injecting proxy: it answers with the `Authorization` it
/// received (which the proxy masks on the way back).
async fn whoami(headers: axum::http::HeaderMap) -> axum::Json<serde_json::Value> {
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    axum::Json(serde_json::json!({
        "api": "demo",
        "authorization": authorization,
    }))
}
