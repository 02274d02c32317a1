//! Per-issuer signing keys: OIDC discovery, JWKS over HTTP, and the cache in front of them.
//!
//! Only configured issuers have an entry, so a token from any other issuer is refused before any
//! request is made. For each issuer the current key set is an immutable snapshot behind a lock
//! that is held only to clone an `Arc`, never across an await. A refresher task fetches ahead of
//! expiry; a token with an unknown `kid` triggers at most one fetch in flight per issuer (single
//! flight, by an async mutex that the fetch holds) and at most one per cooldown. When fetches
//! fail, the last good keys keep verifying until `max_stale` after their fetch, then tokens fail
//! with JWKS_UNAVAILABLE.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use chrono::Utc;
use connect_types::{IssuerUrl, UrlPolicy};
use openidconnect::{ClientId, IdTokenVerifier, JsonWebKeySet, core::CoreJwsSigningAlgorithm};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::{Cause, OidcError, Result, keys::PreparedKey};

/// Largest discovery document accepted.
const MAX_DISCOVERY_BYTES: usize = 64 * 1024;
/// Largest JWKS accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug)]
pub struct JwksSettings {
    /// The audiences a token's `aud` must name one of (at least one).
    pub audiences: Vec<String>,
    /// Allowed clock skew for `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Tokens issued longer ago than this are refused, whatever their `exp`.
    pub max_token_age: Option<Duration>,
    /// How often the refresher fetches every issuer's keys.
    pub refresh_every: Duration,
    /// How long after their fetch keys keep verifying when refreshes fail.
    pub max_stale: Duration,
    /// Least time between two fetches caused by unknown `kid`s.
    pub kid_refetch_cooldown: Duration,
}

/// One fetch of an issuer's keys, with the verifier built over them.
pub struct KeySet {
    pub verifier: IdTokenVerifier<'static, PreparedKey>,
    kids: HashMap<String, ()>,
    fetched_at: Instant,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids.keys().collect::<Vec<_>>())
            .field("age", &self.fetched_at.elapsed())
            .finish()
    }
}

impl KeySet {
    pub fn has_kid(&self, kid: &str) -> bool {
        self.kids.contains_key(kid)
    }
}

#[derive(Debug, Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_failed: bool,
}

#[derive(Debug)]
struct IssuerKeys {
    issuer: String,
    current: RwLock<Option<Arc<KeySet>>>,
    /// Held for the whole of a fetch: the single flight.
    fetch: Mutex<FetchState>,
}

impl IssuerKeys {
    fn snapshot(&self, max_stale: Duration) -> Option<Arc<KeySet>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|set| set.fetched_at.elapsed() <= max_stale)
            .cloned()
    }

    fn replace(&self, set: Arc<KeySet>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(set);
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

/// How the cache reaches issuers: an HTTP client (whose timeout bounds each fetch, and whose
/// resolver may refuse addresses) and the policy discovery and JWKS URLs must pass.
#[derive(Clone)]
pub struct Fetcher {
    pub http: reqwest::Client,
    pub policy: UrlPolicy,
    /// Told of each fetch: whether it succeeded (for a metric).
    pub on_fetch: Arc<dyn Fn(bool) + Send + Sync>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The trusted issuers and their keys.
#[derive(Debug)]
pub struct JwksCache {
    issuers: HashMap<String, Arc<IssuerKeys>>,
    fetcher: Fetcher,
    settings: JwksSettings,
}

impl JwksCache {
    /// The cache of `trusted_issuers`, fetching through `fetcher`.
    pub fn new(trusted_issuers: &[IssuerUrl], fetcher: Fetcher, settings: JwksSettings) -> Self {
        let issuers = trusted_issuers
            .iter()
            .map(|issuer| {
                let issuer = issuer.as_str().to_owned();
                let keys = IssuerKeys {
                    issuer: issuer.clone(),
                    current: RwLock::new(None),
                    fetch: Mutex::new(FetchState::default()),
                };
                (issuer, Arc::new(keys))
            })
            .collect();
        Self {
            issuers,
            fetcher,
            settings,
        }
    }

    pub fn settings(&self) -> &JwksSettings {
        &self.settings
    }

    /// Whether `kid` is among `issuer`'s current (not too stale) keys; no fetch.
    pub fn still_knows(&self, issuer: &str, kid: &str) -> bool {
        self.issuers.get(issuer).is_some_and(|entry| {
            entry
                .snapshot(self.settings.max_stale)
                .is_some_and(|set| set.has_kid(kid))
        })
    }

    /// Whether `aud` names one of the accepted audiences.
    pub fn accepts_audience(&self, aud: &crate::jws::Audience) -> bool {
        self.settings.audiences.iter().any(|a| aud.contains(a))
    }

    pub fn is_trusted(&self, issuer: &str) -> bool {
        self.issuers.contains_key(issuer)
    }

    /// The key set of `issuer` that knows `kid`, fetching when the cache cannot answer.
    pub async fn key_set(&self, issuer: &str, kid: &str) -> Result<Arc<KeySet>> {
        let entry = self.issuers.get(issuer).ok_or_else(|| {
            OidcError::IssuerNotTrusted("the token's issuer is not trusted here".into())
        })?;
        if let Some(set) = entry.snapshot(self.settings.max_stale)
            && set.has_kid(kid)
        {
            return Ok(set);
        }
        self.refetch_for(entry, kid).await
    }

    async fn refetch_for(&self, entry: &IssuerKeys, kid: &str) -> Result<Arc<KeySet>> {
        let unknown_kid =
            || OidcError::invalid_token("the token's kid is not among its issuer's keys");
        let mut state = entry.fetch.lock().await;
        // Whoever held the lock before us may have fetched what we need.
        let usable = entry.snapshot(self.settings.max_stale);
        if let Some(set) = &usable
            && set.has_kid(kid)
        {
            return Ok(set.clone());
        }
        let in_cooldown = state
            .last_attempt
            .is_some_and(|at| at.elapsed() < self.settings.kid_refetch_cooldown);
        if in_cooldown {
            return match usable {
                Some(_) => Err(unknown_kid()),
                None if state.last_failed => Err(OidcError::JwksUnavailable(Box::new(Cause(
                    "the last fetch failed moments ago".into(),
                )))),
                None => Err(unknown_kid()),
            };
        }
        state.last_attempt = Some(Instant::now());
        match self.fetch(&entry.issuer).await {
            Ok(set) => {
                state.last_failed = false;
                let set = Arc::new(set);
                entry.replace(set.clone());
                if set.has_kid(kid) {
                    Ok(set)
                } else {
                    Err(unknown_kid())
                }
            }
            Err(e) => {
                state.last_failed = true;
                tracing::warn!(issuer = %entry.issuer, error = %e, "JWKS fetch failed");
                match usable {
                    Some(_) => Err(unknown_kid()),
                    None => Err(OidcError::JwksUnavailable(Box::new(e))),
                }
            }
        }
    }

    /// Refreshes every issuer's keys now; failures keep the previous keys.
    pub async fn refresh_all(&self) {
        for entry in self.issuers.values() {
            let mut state = entry.fetch.lock().await;
            state.last_attempt = Some(Instant::now());
            match self.fetch(&entry.issuer).await {
                Ok(set) => {
                    state.last_failed = false;
                    tracing::debug!(issuer = %entry.issuer, keys = set.kids.len(), "JWKS refreshed");
                    entry.replace(Arc::new(set));
                }
                Err(e) => {
                    state.last_failed = true;
                    tracing::warn!(issuer = %entry.issuer, error = %e, "JWKS refresh failed; keeping the last good keys");
                }
            }
        }
    }

    /// Refreshes every issuer every `refresh_every` (the first time one period from now), until
    /// the task is aborted.
    pub fn spawn_refresher(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let every = self.settings.refresh_every;
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                self.refresh_all().await;
            }
        })
    }

    /// One discovery + JWKS fetch, counted.
    async fn fetch(&self, issuer: &str) -> Result<KeySet, Cause> {
        let result = self.fetch_uncounted(issuer).await;
        (self.fetcher.on_fetch)(result.is_ok());
        result
    }

    async fn fetch_uncounted(&self, issuer: &str) -> Result<KeySet, Cause> {
        let discovery_url = format!("{issuer}/.well-known/openid-configuration");
        let discovery_url = self
            .check(&discovery_url)
            .map_err(|e| Cause(format!("discovery URL: {e}")))?;
        let body = get_bounded(&self.fetcher.http, discovery_url, MAX_DISCOVERY_BYTES).await?;
        let discovery: Discovery =
            serde_json::from_slice(&body).map_err(|e| Cause(format!("discovery document: {e}")))?;
        if discovery.issuer != issuer {
            return Err(Cause(format!(
                "discovery document names issuer '{}', not '{issuer}'",
                discovery.issuer
            )));
        }
        let jwks_uri = self
            .check(&discovery.jwks_uri)
            .map_err(|e| Cause(format!("jwks_uri: {e}")))?;
        let body = get_bounded(&self.fetcher.http, jwks_uri, MAX_JWKS_BYTES).await?;
        let raw: RawKeySet =
            serde_json::from_slice(&body).map_err(|e| Cause(format!("JWKS: {e}")))?;
        let mut keys = Vec::new();
        let mut kids = HashMap::new();
        for value in raw.keys {
            match PreparedKey::from_jwk(value) {
                Ok(key) if key.is_usable() => {
                    if let Some(kid) = key.kid() {
                        kids.insert(kid.to_owned(), ());
                        keys.push(key);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(issuer, error = %e, "skipping a JWKS key"),
            }
        }
        let leeway = chrono::Duration::from_std(self.settings.leeway).unwrap_or_default();
        let first = self.settings.audiences.first().cloned().unwrap_or_default();
        let verifier = IdTokenVerifier::new_public_client(
            ClientId::new(first),
            openidconnect::IssuerUrl::new(issuer.to_owned())
                .map_err(|e| Cause(format!("issuer URL: {e}")))?,
            JsonWebKeySet::new(keys),
        )
        .set_allowed_algs([
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        ])
        // `exp` is checked against a clock set back by the leeway.
        .set_time_fn(move || Utc::now() - leeway)
        // With several accepted audiences the verifier cannot name one: the caller checks `aud`
        // against all of them (`accepts_audience`).
        .require_audience_match(self.settings.audiences.len() == 1);
        Ok(KeySet {
            verifier,
            kids,
            fetched_at: Instant::now(),
        })
    }
}

impl JwksCache {
    /// `url` when the fetch policy allows it.
    fn check(&self, url: &str) -> Result<reqwest::Url, connect_types::UrlRefusal> {
        self.fetcher.policy.check_url(url)
    }
}

/// GETs `url` and reads at most `max` bytes of a successful answer.
async fn get_bounded(
    http: &reqwest::Client,
    url: reqwest::Url,
    max: usize,
) -> Result<Vec<u8>, Cause> {
    let mut response = http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| Cause(format!("GET {url}: {}", connect_runtime::ErrorChain(&e))))?;
    if !response.status().is_success() {
        return Err(Cause(format!("GET {url}: HTTP {}", response.status())));
    }
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(Cause(format!("GET {url}: answer larger than {max} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Cause(format!("GET {url}: {e}")))?
    {
        if body.len() + chunk.len() > max {
            return Err(Cause(format!("GET {url}: answer larger than {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
