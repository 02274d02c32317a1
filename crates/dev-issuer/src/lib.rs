//! A development OIDC issuer: OIDC discovery and a JWKS on loopback, and Vercel-shaped deployment
//! tokens (claims `owner_id`, `project_id`, `environment`, …) for any team, project and
//! environment, signed RS256 or ES256. Keys rotate on demand and the JWKS can be taken offline,
//! so that tests can exercise the broker's key cache. Never use it outside development.
//!
//! Signing goes through the `jsonwebtoken` crate, an implementation independent of the
//! `openidconnect` verifier the broker uses. It also signs people in ([`people`]) for
//! `connect login`.

mod people;

pub use people::DevPerson;

use std::{
    net::SocketAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// Which key signs a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Alg {
    RS256,
    ES256,
}

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

fn random_kid(prefix: &str) -> String {
    use rand::Rng;
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(12)
        .map(char::from)
        .collect();
    format!("{prefix}-{suffix}")
}

impl SigningKey {
    fn rsa() -> Self {
        use rsa::{pkcs1::EncodeRsaPrivateKey, traits::PublicKeyParts};
        let key =
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key generation");
        let der = key.to_pkcs1_der().expect("RSA key encoding");
        let kid = random_kid("rs");
        let jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        });
        Self {
            kid,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk,
        }
    }

    fn ec() -> Self {
        use p256_13::{elliptic_curve::sec1::ToEncodedPoint, pkcs8::EncodePrivateKey};
        let key = p256_13::SecretKey::random(&mut p256_13::elliptic_curve::rand_core::OsRng);
        let der = key.to_pkcs8_der().expect("EC key encoding");
        let point = key.public_key().to_encoded_point(false);
        let kid = random_kid("es");
        let jwk = json!({
            "kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(point.x().expect("uncompressed point")),
            "y": URL_SAFE_NO_PAD.encode(point.y().expect("uncompressed point")),
        });
        Self {
            kid,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            jwk,
        }
    }
}

struct KeyRing {
    rs: SigningKey,
    es: SigningKey,
}

impl KeyRing {
    fn new() -> Self {
        Self {
            rs: SigningKey::rsa(),
            es: SigningKey::ec(),
        }
    }

    fn key(&self, alg: Alg) -> &SigningKey {
        match alg {
            Alg::RS256 => &self.rs,
            Alg::ES256 => &self.es,
        }
    }
}

struct Shared {
    issuer: String,
    local_addr: SocketAddr,
    keys: RwLock<KeyRing>,
    jwks_online: AtomicBool,
    discovery_fetches: AtomicUsize,
    jwks_fetches: AtomicUsize,
    /// The people it signs in, the codes waiting for their exchange, the refresh tokens issued.
    people: RwLock<Vec<DevPerson>>,
    codes: std::sync::Mutex<std::collections::HashMap<String, people::Code>>,
    refresh_tokens: std::sync::Mutex<std::collections::HashMap<String, (DevPerson, String)>>,
}

impl Shared {
    fn jwks(&self) -> Value {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        json!({ "keys": [keys.rs.jwk, keys.es.jwk] })
    }
}

/// What a deployment token says: Vercel's claims for one team, project and environment.
#[derive(Clone, Debug, Deserialize)]
pub struct Deployment {
    /// The team's slug, e.g. `acme`.
    pub owner: String,
    pub owner_id: String,
    /// The project's name, e.g. `web`.
    pub project: String,
    pub project_id: String,
    pub environment: String,
    pub audience: String,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// A running development issuer.
pub struct DevIssuer {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.shared.issuer)
            .finish()
    }
}

impl DevIssuer {
    /// Serves on `addr` (port 0 picks one); the issuer is `http://<bound address>`.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_as(addr, None).await
    }

    /// Serves on `addr` under the issuer URL `issuer` (for a listener on 0.0.0.0 that clients
    /// reach at another address); `None` means `http://<bound address>`.
    pub async fn start_as(addr: SocketAddr, issuer: Option<String>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let issuer = match issuer {
            Some(issuer) => issuer.trim_end_matches('/').to_owned(),
            None => format!("http://{local_addr}"),
        };
        let shared = Arc::new(Shared {
            issuer,
            local_addr,
            keys: RwLock::new(KeyRing::new()),
            jwks_online: AtomicBool::new(true),
            discovery_fetches: AtomicUsize::new(0),
            jwks_fetches: AtomicUsize::new(0),
            people: RwLock::new(Vec::new()),
            codes: Default::default(),
            refresh_tokens: Default::default(),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/jwks", get(jwks))
            .route("/token", get(mint_endpoint))
            .route(
                "/authorize",
                get(people::authorize_page).post(people::sign_in),
            )
            .route("/oauth/token", axum::routing::post(people::token))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "dev issuer stopped");
            }
        });
        Ok(Self {
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The issuer as the broker's configuration takes it.
    pub fn issuer_url(&self) -> connect_types::IssuerUrl {
        connect_types::IssuerUrl::parse(&self.shared.issuer)
            .expect("a loopback http URL without a trailing slash is an issuer URL")
    }

    /// The address the issuer listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The current key id for `alg`.
    pub fn kid(&self, alg: Alg) -> String {
        self.read_keys().key(alg).kid.clone()
    }

    /// The claims of a token for `deployment`, valid from now for `ttl`.
    pub fn claims(&self, deployment: &Deployment, ttl: Duration) -> Value {
        claims(&self.shared.issuer, deployment, ttl)
    }

    /// A signed token for `deployment`, valid for `ttl`.
    pub fn mint(&self, deployment: &Deployment, ttl: Duration, alg: Alg) -> String {
        let claims = self.claims(deployment, ttl);
        let kid = self.kid(alg);
        self.sign(
            &json!({ "alg": alg_name(alg), "typ": "JWT", "kid": kid }),
            &claims,
            alg,
        )
    }

    /// Signs any header and claims, exactly as given, with the current `alg` key: for tests that
    /// need tokens a real issuer would never make.
    pub fn sign(&self, header: &Value, claims: &Value, alg: Alg) -> String {
        self.sign_text(&header.to_string(), &claims.to_string(), alg)
    }

    /// Signs a header and claims given as exact JSON texts (which may be malformed on purpose).
    pub fn sign_text(&self, header: &str, claims: &str, alg: Alg) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let keys = self.read_keys();
        let algorithm = match alg {
            Alg::RS256 => Algorithm::RS256,
            Alg::ES256 => Algorithm::ES256,
        };
        let signature = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &keys.key(alg).encoding,
            algorithm,
        )
        .expect("signing with a generated key");
        format!("{signing_input}.{signature}")
    }

    /// Someone `connect login` may sign in as.
    pub fn add_person(&self, person: DevPerson) {
        self.shared
            .people
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(person);
    }

    /// Replaces both signing keys; the old ones disappear from the JWKS.
    pub fn rotate(&self) {
        let fresh = KeyRing::new();
        *self.shared.keys.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    /// Takes the discovery document and JWKS offline (HTTP 503) or back online.
    pub fn set_online(&self, online: bool) {
        self.shared.jwks_online.store(online, Ordering::SeqCst);
    }

    /// How many times the JWKS was fetched.
    /// The JWKS as served at `jwks_uri`.
    pub fn jwks(&self) -> Value {
        self.shared.jwks()
    }

    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// How many times the discovery document was fetched.
    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// Stops serving.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, KeyRing> {
        self.shared.keys.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn alg_name(alg: Alg) -> &'static str {
    match alg {
        Alg::RS256 => "RS256",
        Alg::ES256 => "ES256",
    }
}

fn claims(issuer: &str, d: &Deployment, ttl: Duration) -> Value {
    let now = now();
    json!({
        "iss": issuer,
        "sub": format!("owner:{}:project:{}:environment:{}", d.owner, d.project, d.environment),
        "aud": d.audience,
        "owner": d.owner,
        "owner_id": d.owner_id,
        "project": d.project,
        "project_id": d.project_id,
        "environment": d.environment,
        "iat": now,
        "nbf": now,
        "exp": now + ttl.as_secs() as i64,
    })
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    shared.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    if !shared.jwks_online.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(json!({
        "issuer": shared.issuer,
        "jwks_uri": format!("{}/.well-known/jwks", shared.issuer),
        "authorization_endpoint": format!("{}/authorize", shared.issuer),
        "token_endpoint": format!("{}/oauth/token", shared.issuer),
        "subject_types_supported": ["public"],
        "response_types_supported": ["code", "id_token"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "scopes_supported": ["openid", "email", "offline_access"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "owner", "owner_id",
            "project", "project_id", "environment", "email", "groups", "nonce"],
    }))
    .into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if !shared.jwks_online.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(shared.jwks()).into_response()
}

#[derive(Deserialize)]
struct MintQuery {
    #[serde(flatten)]
    deployment: Deployment,
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    alg: Option<Alg>,
}

/// Signs `claims` with the current key of `alg`.
fn sign_claims(shared: &Shared, claims: &Value, alg: Alg) -> String {
    let keys = shared.keys.read().unwrap_or_else(|e| e.into_inner());
    let key = keys.key(alg);
    let mut header = jsonwebtoken::Header::new(match alg {
        Alg::RS256 => Algorithm::RS256,
        Alg::ES256 => Algorithm::ES256,
    });
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("signing with a generated key")
}

/// `GET /token?owner=…&owner_id=…&project=…&project_id=…&environment=…&audience=…`: a token, as
/// a deployment would receive it.
async fn mint_endpoint(State(shared): State<Arc<Shared>>, Query(q): Query<MintQuery>) -> Response {
    let ttl = Duration::from_secs(q.ttl_secs.unwrap_or(3600).min(24 * 3600));
    let alg = q.alg.unwrap_or(Alg::RS256);
    let claims = claims(&shared.issuer, &q.deployment, ttl);
    let keys = shared.keys.read().unwrap_or_else(|e| e.into_inner());
    let key = keys.key(alg);
    let mut header = jsonwebtoken::Header::new(match alg {
        Alg::RS256 => Algorithm::RS256,
        Alg::ES256 => Algorithm::ES256,
    });
    header.kid = Some(key.kid.clone());
    match jsonwebtoken::encode(&header, &claims, &key.encoding) {
        Ok(token) => token.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
