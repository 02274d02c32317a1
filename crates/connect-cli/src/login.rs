//! People sign in: `connect login` (OAuth 2.0 authorization code with PKCE S256 and a loopback
//! redirect, RFC 8252, through `openidconnect`: discovery, the ID token verified against the
//! issuer's keys and the login's nonce), the stored login the other commands present instead of
//! an API key (refreshed before it expires), and `connect logout`.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use openidconnect::{
    AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, RefreshToken, Scope,
    core::{CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata},
};
use serde::{Deserialize, Serialize};

use crate::error::Failure;

/// What a login keeps, in `login.json` of the config directory (mode 0600).
#[derive(Serialize, Deserialize)]
struct StoredLogin {
    issuer: String,
    client_id: String,
    id_token: String,
    refresh_token: Option<String>,
    /// The ID token's `exp` (Unix seconds).
    expires_at: i64,
}

/// A stored ID token is refreshed this long before it expires.
const REFRESH_BEFORE: i64 = 60;
/// How long `connect login` waits for the browser to come back.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// The directory the login is kept in: `$CONNECT_CONFIG_DIR`, else `~/.config/connect`.
fn config_dir() -> Result<PathBuf, Failure> {
    if let Some(dir) = std::env::var_os("CONNECT_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".config").join("connect")),
        None => Err(Failure::usage(
            "no config directory: set CONNECT_CONFIG_DIR (or HOME)",
        )),
    }
}

fn login_file() -> Result<PathBuf, Failure> {
    Ok(config_dir()?.join("login.json"))
}

fn login_failure(message: impl std::fmt::Display) -> Failure {
    Failure::new("LoginError", message)
}

/// Text from the identity provider, as it may reach the terminal: at most 200 characters,
/// control characters escaped.
fn provider_text(text: &str) -> String {
    text.chars()
        .take(200)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn http_client() -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| login_failure(format!("cannot build an HTTP client: {e}")))
}

async fn discover(http: &reqwest::Client, issuer: &str) -> Result<CoreProviderMetadata, Failure> {
    let issuer_url = IssuerUrl::new(issuer.to_owned())
        .map_err(|e| Failure::usage(format!("--issuer '{issuer}': {e}")))?;
    CoreProviderMetadata::discover_async(issuer_url, http)
        .await
        .map_err(|e| {
            login_failure(format!(
                "cannot read the issuer's discovery document: {}",
                provider_text(&e.to_string())
            ))
        })
}

/// The ID token verifier of a client: RS256 and ES256 only.
fn algs() -> [CoreJwsSigningAlgorithm; 2] {
    [
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    ]
}

/// Writes the login whole (a new file renamed over the old one), readable by its owner only.
fn store(path: &Path, login: &StoredLogin) -> Result<(), Failure> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| login_failure(format!("cannot create {}: {e}", dir.display())))?;
    let write = || -> std::io::Result<()> {
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(&serde_json::to_vec(login).expect("a login serializes"))?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|e| login_failure(format!("cannot write {}: {e}", path.display())))
}

/// What the browser brought back to the loopback redirect.
#[derive(Debug, Default, Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `connect login`: signs in at `issuer` as client `client_id`; answers with who signed in.
pub async fn login(issuer: &str, client_id: &str, no_browser: bool) -> Result<String, Failure> {
    let http = http_client()?;
    let metadata = discover(&http, issuer).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| login_failure(format!("cannot listen on loopback: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| login_failure(format!("cannot listen on loopback: {e}")))?
        .port();
    let redirect = RedirectUrl::new(format!("http://127.0.0.1:{port}/callback"))
        .expect("a loopback URL is a URL");
    let client =
        CoreClient::from_provider_metadata(metadata, ClientId::new(client_id.into()), None)
            .set_redirect_uri(redirect);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("offline_access".into()))
        .set_pkce_challenge(challenge)
        .url();
    eprintln!("Open this URL in a browser to sign in:\n\n  {url}\n");
    if !no_browser && let Err(e) = webbrowser::open(url.as_str()) {
        eprintln!("(cannot open a browser here: {e}; open the URL yourself)");
    }
    // One request comes back to the loopback redirect; whatever it carries ends the wait.
    let (sender, received) = tokio::sync::oneshot::channel::<Callback>();
    let sender = Arc::new(Mutex::new(Some(sender)));
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(
            move |axum::extract::Query(callback): axum::extract::Query<Callback>| {
                let sender = sender.clone();
                async move {
                    let failed = callback.error.is_some();
                    if let Some(sender) = sender.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        let _ = sender.send(callback);
                    }
                    axum::response::Html(if failed {
                        "<p>Sign-in failed: see the terminal.</p>"
                    } else {
                        "<p>Signed in to Connect. You can close this window.</p>"
                    })
                }
            },
        ),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let callback = tokio::time::timeout(LOGIN_TIMEOUT, received).await;
    server.abort();
    let callback = match callback {
        Ok(Ok(callback)) => callback,
        _ => return Err(login_failure("nobody came back from the browser in time")),
    };
    if let Some(error) = callback.error {
        let description = callback
            .error_description
            .map(|d| format!(": {}", provider_text(&d)))
            .unwrap_or_default();
        return Err(login_failure(format!(
            "the identity provider answered {}{description}",
            provider_text(&error)
        )));
    }
    if callback.state.as_deref() != Some(state.secret().as_str()) {
        return Err(login_failure(
            "the browser came back with another state than this login's: nothing was stored",
        ));
    }
    let Some(code) = callback.code else {
        return Err(login_failure("the browser came back without a code"));
    };
    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| login_failure(format!("the issuer has no token endpoint: {e}")))?
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .map_err(|e| {
            login_failure(format!(
                "the code exchange failed: {}",
                provider_text(&e.to_string())
            ))
        })?;
    let id_token = token
        .extra_fields()
        .id_token()
        .ok_or_else(|| login_failure("the issuer answered without an ID token"))?;
    let verifier = client.id_token_verifier().set_allowed_algs(algs());
    let claims = id_token
        .claims(&verifier, &nonce)
        .map_err(|e| login_failure(format!("the ID token is not valid: {e}")))?;
    let who = claims
        .email()
        .map(|e| e.to_string())
        .unwrap_or_else(|| claims.subject().to_string());
    store(
        &login_file()?,
        &StoredLogin {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            id_token: id_token.to_string(),
            refresh_token: token.refresh_token().map(|t| t.secret().clone()),
            expires_at: claims.expiration().timestamp(),
        },
    )?;
    Ok(who)
}

/// The stored login's ID token, refreshed first when it expires within a minute; `None` when
/// nobody signed in.
pub async fn bearer() -> Result<Option<String>, Failure> {
    // Without a config directory nobody can have signed in.
    let Ok(path) = login_file() else {
        return Ok(None);
    };
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    let mut login: StoredLogin = serde_json::from_slice(&bytes).map_err(|_| {
        login_failure(format!(
            "{} is not a login: connect logout, then connect login",
            path.display()
        ))
    })?;
    if login.expires_at - REFRESH_BEFORE > chrono::Utc::now().timestamp() {
        return Ok(Some(login.id_token));
    }
    let expired = || login_failure("the login expired: connect login");
    let Some(refresh) = login.refresh_token.clone() else {
        return Err(expired());
    };
    let http = http_client()?;
    let metadata = discover(&http, &login.issuer).await?;
    let client =
        CoreClient::from_provider_metadata(metadata, ClientId::new(login.client_id.clone()), None);
    let refresh = RefreshToken::new(refresh);
    let token = client
        .exchange_refresh_token(&refresh)
        .map_err(|e| login_failure(format!("the issuer has no token endpoint: {e}")))?
        .request_async(&http)
        .await
        .map_err(|e| {
            login_failure(format!(
                "the login could not be refreshed ({}): connect login",
                provider_text(&e.to_string())
            ))
        })?;
    let id_token = token.extra_fields().id_token().ok_or_else(expired)?;
    let verifier = client.id_token_verifier().set_allowed_algs(algs());
    let claims = id_token
        .claims(&verifier, |_: Option<&Nonce>| Ok(()))
        .map_err(|e| login_failure(format!("the refreshed ID token is not valid: {e}")))?;
    login.expires_at = claims.expiration().timestamp();
    login.id_token = id_token.to_string();
    if let Some(rotated) = token.refresh_token() {
        login.refresh_token = Some(rotated.secret().clone());
    }
    store(&path, &login)?;
    Ok(Some(login.id_token))
}

/// The issuer of the stored login, if there is one (to sign in there again).
pub fn stored_issuer() -> Option<String> {
    let bytes = std::fs::read(login_file().ok()?).ok()?;
    serde_json::from_slice::<StoredLogin>(&bytes)
        .ok()
        .map(|login| login.issuer)
}

/// `connect logout`: forgets the stored login; whether there was one.
pub fn logout() -> Result<bool, Failure> {
    let path = login_file()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(login_failure(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}
