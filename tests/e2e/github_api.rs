//! A loopback server that answers like GitHub's App endpoints: installation access tokens asked
//! with an App JWT (verified with the app's public key: RS256, `iss` the app id, `iat` not in the
//! future, `exp` after now and at most ten minutes after `iat`), narrowed to the installation's
//! permissions and repositories (422 beyond them), 404 for an installation it does not know, and
//! `DELETE /installation/token` revoking the token that authenticates it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{delete, post},
};
use tokio::{net::TcpListener, task::JoinHandle};

pub const APP_ID: &str = "424242";

/// The app's RSA key pair (private PEM, public PEM), made once per test binary.
pub fn app_key() -> &'static (String, String) {
    static KEY: OnceLock<(String, String)> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let public = rsa::RsaPublicKey::from(&private);
        (
            private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            public.to_public_key_pem(LineEnding::LF).unwrap(),
        )
    })
}

/// What an installation grants.
#[derive(Clone, Debug)]
pub struct Grants {
    pub permissions: BTreeMap<String, String>,
    pub repositories: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GitHubMode {
    Issue,
    ServerError,
    /// 201 with a body that is not JSON.
    Garbage,
    /// 201 without `expires_at`.
    NoExpiry,
    /// Answers after two seconds.
    Slow,
}

#[derive(Default)]
struct ApiState {
    installations: Mutex<HashMap<String, Grants>>,
    /// Access token requests (whatever their answer).
    calls: AtomicUsize,
    /// Distinct App JWTs seen.
    jwts: Mutex<HashSet<String>>,
    issued: Mutex<HashSet<String>>,
    revoked: Mutex<HashSet<String>>,
    /// The last accepted request body.
    last_body: Mutex<Option<serde_json::Value>>,
    mode: Mutex<Option<GitHubMode>>,
    salt: u64,
}

pub struct GitHubApi {
    pub url: String,
    state: Arc<ApiState>,
    _task: JoinHandle<()>,
}

impl GitHubApi {
    /// A server that knows installation `id` with `grants`.
    pub async fn start(installations: &[(&str, Grants)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(ApiState {
            salt: rand::random(),
            ..Default::default()
        });
        state.installations.lock().unwrap().extend(
            installations
                .iter()
                .map(|(id, grants)| (id.to_string(), grants.clone())),
        );
        let app = Router::new()
            .route("/app/installations/{id}/access_tokens", post(access_tokens))
            .route("/installation/token", delete(revoke))
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

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn distinct_jwts(&self) -> usize {
        self.state.jwts.lock().unwrap().len()
    }

    pub fn revoked(&self) -> HashSet<String> {
        self.state.revoked.lock().unwrap().clone()
    }

    pub fn last_body(&self) -> Option<serde_json::Value> {
        self.state.last_body.lock().unwrap().clone()
    }

    pub fn set_mode(&self, mode: GitHubMode) {
        *self.state.mode.lock().unwrap() = Some(mode);
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(serde_json::json!({ "message": text }))).into_response()
}

/// Whether the request carries a valid App JWT for our app (and remembers it).
fn app_jwt_is_valid(state: &ApiState, headers: &HeaderMap) -> bool {
    let Some(jwt) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(app_key().1.as_bytes()) else {
        return false;
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.leeway = 0;
    let Ok(data) = jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &validation) else {
        return false;
    };
    let claims = data.claims;
    let now = chrono::Utc::now().timestamp();
    let iss = match &claims["iss"] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(i64::MAX),
        claims["exp"].as_i64().unwrap_or(0),
    );
    let valid = iss == APP_ID && iat <= now + 60 && exp > now && exp - iat <= 600;
    if valid {
        state.jwts.lock().unwrap().insert(jwt.to_owned());
    }
    valid
}

async fn access_tokens(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let n = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let mode = state.mode.lock().unwrap().unwrap_or(GitHubMode::Issue);
    match mode {
        GitHubMode::ServerError => return message(StatusCode::BAD_GATEWAY, "Server Error"),
        GitHubMode::Slow => tokio::time::sleep(Duration::from_secs(2)).await,
        _ => {}
    }
    if !app_jwt_is_valid(&state, &headers) {
        return message(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    }
    let Some(grants) = state.installations.lock().unwrap().get(&id).cloned() else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let asked: serde_json::Value = if body.is_empty() {
        serde_json::json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return message(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
        }
    };
    let mut permissions = grants.permissions.clone();
    if let Some(asked) = asked["permissions"].as_object() {
        let rank = |level: &str| ["read", "write", "admin"].iter().position(|l| *l == level);
        permissions = BTreeMap::new();
        for (name, level) in asked {
            let level = level.as_str().unwrap_or("");
            let granted = grants.permissions.get(name).and_then(|l| rank(l));
            if rank(level).is_none() || granted.is_none() || rank(level) > granted {
                return message(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The permissions requested are not granted to this installation.",
                );
            }
            permissions.insert(name.clone(), level.to_owned());
        }
    }
    let mut repositories = grants.repositories.clone();
    if let Some(asked) = asked["repositories"].as_array() {
        repositories = Vec::new();
        for name in asked {
            let name = name.as_str().unwrap_or("");
            if !grants.repositories.iter().any(|r| r == name) {
                return message(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "There is at least one repository that does not exist or is not accessible to the parent installation.",
                );
            }
            repositories.push(name.to_owned());
        }
    }
    let selection = if asked["repositories"].is_array() {
        "selected"
    } else {
        "all"
    };
    *state.last_body.lock().unwrap() = Some(asked);
    match mode {
        GitHubMode::Garbage => return (StatusCode::CREATED, "<html>oops</html>").into_response(),
        GitHubMode::NoExpiry => {
            return (
                StatusCode::CREATED,
                Json(serde_json::json!({ "token": format!("ghs_noexpiry_{n}") })),
            )
                .into_response();
        }
        _ => {}
    }
    let token = format!(
        "ghs_{n}_{}",
        &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!(
            "{}/{n}",
            state.salt
        )))[..20]
    );
    state.issued.lock().unwrap().insert(token.clone());
    let expires_at = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (
        StatusCode::CREATED,
        Json(serde_json::json!({
            "token": token,
            "expires_at": expires_at,
            "permissions": permissions,
            "repository_selection": selection,
            "repositories": repositories.iter().map(|r| serde_json::json!({ "name": r })).collect::<Vec<_>>(),
        })),
    )
        .into_response()
}

async fn revoke(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    let known = state.issued.lock().unwrap().contains(&token);
    if !known || !state.revoked.lock().unwrap().insert(token) {
        return message(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    StatusCode::NO_CONTENT.into_response()
}
