//! What every provider-backed issuer shares: one bounded HTTP exchange (no redirects, a capped
//! body, a 5xx is no answer), the cache of provider tokens (kept until shortly before they expire,
//! one provider call per key at a time, labelled with whom each was issued for so a revocation
//! finds it), and revocation at the provider (RFC 7009, or GitHub's `DELETE /installation/token`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tracing::Instrument;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};

use super::{Grant, IssuedToken, RevokeOutcome, RevokeScope, TokenOwner};
use crate::{
    error::{BrokerError, Cause, Result},
    metrics::{BrokerMetrics, ProviderOutcome},
};

/// Largest provider answer accepted.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest lifetime believed of a provider's token; longer claims are clamped to it.
pub const MAX_BELIEVED_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);
/// Most cached provider tokens held at once, per issuer.
const MAX_CACHED: u64 = 10_000;

/// How a credential is revoked at its provider.
#[derive(Clone)]
pub enum RevokeWith {
    /// RFC 7009: POST the token to the revocation endpoint, with the client's credentials.
    Rfc7009 {
        url: url::Url,
        basic: Option<String>,
    },
    /// GitHub: `DELETE {api_url}/installation/token`, authenticated with the token itself.
    GitHub { api_url: url::Url },
}

impl std::fmt::Debug for RevokeWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rfc7009 { url, .. } => f
                .debug_struct("Rfc7009")
                .field("url", &url.as_str())
                .finish_non_exhaustive(),
            Self::GitHub { api_url } => f
                .debug_struct("GitHub")
                .field("api_url", &api_url.as_str())
                .finish(),
        }
    }
}

/// A provider token as cached.
#[derive(Clone)]
pub struct CachedToken {
    pub token: SecretString,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
    /// The credential's parts, when it has several.
    pub credential: super::Credential,
    /// How long it is served from the cache.
    pub cache_for: Duration,
    pub owner: TokenOwner,
    pub revoke_with: Option<RevokeWith>,
}

impl CachedToken {
    /// A token that lives `lifetime` (as the provider says, clamped), granted `scopes`.
    pub fn new(
        token: SecretString,
        lifetime: Option<Duration>,
        scopes: Vec<String>,
        max_cache: Duration,
    ) -> Self {
        let lifetime = lifetime.map(|d| d.min(MAX_BELIEVED_LIFETIME));
        let expires_at = lifetime
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .and_then(|d| Utc::now().checked_add_signed(d));
        Self {
            token,
            expires_at,
            scopes,
            credential: Default::default(),
            cache_for: cache_lifetime(lifetime, max_cache),
            owner: TokenOwner::default(),
            revoke_with: None,
        }
    }
}

impl CachedToken {
    /// A token that expires at `expires_at` (`None`: never), as the provider says, cached until
    /// shortly before; the expiry kept exactly, not recomputed from a rounded lifetime.
    pub fn until(
        token: SecretString,
        expires_at: Option<DateTime<Utc>>,
        scopes: Vec<String>,
        max_cache: Duration,
    ) -> Self {
        let lifetime = expires_at.map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO));
        let mut cached = Self::new(token, lifetime, scopes, max_cache);
        cached.expires_at = expires_at;
        cached
    }
}

struct CacheUntilRefresh;

impl moka::Expiry<String, CachedToken> for CacheUntilRefresh {
    fn expire_after_create(&self, _: &String, value: &CachedToken, _: Instant) -> Option<Duration> {
        Some(value.cache_for)
    }
}

/// Why a provider call gave no token; cloneable, since one call may answer many waiters.
#[derive(Clone, Debug)]
pub enum ProviderFailure {
    /// The provider said no (bad credentials, a refused grant, an unreadable answer).
    Rejected(String),
    /// The provider answered `invalid_grant`: the grant (an assertion, a refresh token) is no good.
    InvalidGrant(String),
    Unavailable(String),
    /// The provider does not know the installation (GitHub's 404).
    UnknownInstallation,
    /// The provider refuses what was asked for (GitHub's 422: permissions the app lacks).
    NotAllowed(String),
    /// The user must consent (again): no grant, or the provider refused its refresh token.
    Consent(String),
    /// The registry could not answer a grant question.
    Registry(String),
}

impl ProviderFailure {
    /// The broker error for a token asked of connector `connector_uid`, installation `installation`.
    pub fn into_error(self, connector_uid: &str, installation: &str) -> BrokerError {
        match self {
            Self::Rejected(why) | Self::InvalidGrant(why) => BrokerError::NoValidToken(why),
            Self::Unavailable(why) => BrokerError::ProviderUnavailable(Box::new(Cause(why))),
            Self::UnknownInstallation => BrokerError::InstallationNotFound {
                connector: connector_uid.to_owned(),
                installation: installation.to_owned(),
            },
            Self::NotAllowed(why) => BrokerError::ScopeNotAllowed(why),
            Self::Consent(why) => BrokerError::UserAuthorizationRequired(why),
            Self::Registry(why) => BrokerError::RegistryUnavailable(Box::new(Cause(why))),
        }
    }

    pub fn outcome(&self) -> ProviderOutcome {
        match self {
            Self::Unavailable(_) => ProviderOutcome::Unavailable,
            _ => ProviderOutcome::Rejected,
        }
    }
}

/// No answer from the provider, or a 5xx.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// One provider HTTP exchange, with a bounded body; a 5xx is no answer.
pub async fn send(
    http: &reqwest::Client,
    request: http::Request<Vec<u8>>,
) -> Result<http::Response<Vec<u8>>, Unreachable> {
    let (parts, body) = request.into_parts();
    let mut response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| Unreachable(format!("provider: {}", connect_runtime::ErrorChain(&e))))?;
    let status = response.status();
    if status.is_server_error() {
        return Err(Unreachable(format!("provider answered HTTP {status}")));
    }
    let mut builder = http::Response::builder().status(status);
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Unreachable(format!("provider: {e}")))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(Unreachable("provider answer is too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    builder
        .body(body)
        .map_err(|e| Unreachable(format!("provider answer: {e}")))
}

// OAuth 2.0 requests every OAuth-speaking issuer makes.

/// A form body of `pairs` and, when there are any, `scope`.
pub fn form(pairs: &[(&str, &str)], scopes: &[String]) -> Vec<u8> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        form.append_pair(name, value);
    }
    if !scopes.is_empty() {
        form.append_pair("scope", &scopes.join(" "));
    }
    form.finish().into_bytes()
}

/// HTTP Basic client authentication, each part form-encoded first (RFC 6749 §2.3.1).
pub fn basic_auth(client_id: &SecretString, client_secret: &SecretString) -> String {
    use base64::Engine;
    let encode = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let pair = format!(
        "{}:{}",
        encode(client_id.expose_secret()),
        encode(client_secret.expose_secret())
    );
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// POSTs a grant to the token endpoint and reads the answer as any OAuth token response (with
/// the `oauth2` crate's types); an OAuth error answer is the provider's "no".
pub async fn post_grant(
    http: &reqwest::Client,
    token_url: &url::Url,
    body: Vec<u8>,
    basic: Option<String>,
    what: &str,
) -> Result<oauth2::basic::BasicTokenResponse, ProviderFailure> {
    post_grant_as(http, token_url, body, basic, what).await
}

/// As [`post_grant`], reading the answer as `T` (a token response with extra fields).
pub async fn post_grant_as<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    token_url: &url::Url,
    body: Vec<u8>,
    basic: Option<String>,
    what: &str,
) -> Result<T, ProviderFailure> {
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(token_url.as_str())
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::ACCEPT, "application/json");
    if let Some(basic) = basic {
        request = request.header(http::header::AUTHORIZATION, basic);
    }
    let request = request
        .body(body)
        .map_err(|e| ProviderFailure::Rejected(format!("{what} request: {e}")))?;
    let response = send(http, request)
        .await
        .map_err(|Unreachable(why)| ProviderFailure::Unavailable(why))?;
    if !response.status().is_success() {
        let error = serde_json::from_slice::<oauth2::basic::BasicErrorResponse>(response.body())
            .map(|e| crate::error::provider_text(e.error().as_ref()))
            .unwrap_or_else(|_| format!("HTTP {}", response.status()));
        let why = format!("the provider refused the {what} ({error})");
        return Err(if error == "invalid_grant" {
            ProviderFailure::InvalidGrant(why)
        } else {
            ProviderFailure::Rejected(why)
        });
    }
    serde_json::from_slice(response.body()).map_err(|_| {
        ProviderFailure::Rejected(format!("the provider's {what} answer is unreadable"))
    })
}

/// Whether `token` is valid at least `min_ttl` from now (a token without expiry always is).
pub fn lives_at_least(token: &CachedToken, min_ttl: Duration) -> bool {
    token.expires_at.is_none_or(|at| {
        chrono::Duration::from_std(min_ttl).is_ok_and(|ttl| at - Utc::now() >= ttl)
    })
}

/// How long a token that lives `lifetime` is served from the cache: until a little before the
/// provider would refuse it (10% early, at most a minute), and never longer than `max_cache`.
/// A token without expiry is not cached: nothing says when the provider stops honouring it.
pub fn cache_lifetime(lifetime: Option<Duration>, max_cache: Duration) -> Duration {
    let until_refresh = lifetime.map_or(Duration::ZERO, |d| {
        d.saturating_sub((d / 10).min(Duration::from_secs(60)))
    });
    until_refresh.min(max_cache)
}

/// Provider tokens by key.
pub struct TokenCache {
    cache: moka::future::Cache<String, CachedToken>,
    http: reqwest::Client,
    metrics: BrokerMetrics,
    kind: &'static str,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("kind", &self.kind)
            .field("cached", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// The cache of one connector type's tokens; revocations go out through `http`.
    pub fn new(kind: &'static str, http: reqwest::Client, metrics: BrokerMetrics) -> Self {
        Self {
            cache: moka::future::Cache::builder()
                .max_capacity(MAX_CACHED)
                .expire_after(CacheUntilRefresh)
                .build(),
            http,
            metrics,
            kind,
        }
    }

    /// The cached token of `key` when it lives `min_ttl` longer; otherwise one fetched by
    /// `fetch` (one provider call for all concurrent callers of a key), counted in the metrics.
    async fn get(
        &self,
        key: String,
        min_ttl: Duration,
        fetch: impl Fn() -> BoxFuture<'static, Result<CachedToken, ProviderFailure>>,
    ) -> Result<CachedToken, ProviderFailure> {
        // Set when this call's own fetch ran (not another caller's, not the cache).
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let counted = || {
            let (fetched, metrics, kind, ran) =
                (fetch(), self.metrics.clone(), self.kind, ran.clone());
            async move {
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
                let result = fetched.await;
                let outcome = match &result {
                    Ok(_) => ProviderOutcome::Ok,
                    Err(failure) => failure.outcome(),
                };
                metrics.provider_request(kind, outcome);
                result
            }
        };
        let too_short = || {
            ProviderFailure::Rejected(format!(
                "the provider's tokens do not live the {} s asked for (min_ttl)",
                min_ttl.as_secs()
            ))
        };
        let unshare = |failure: Arc<ProviderFailure>| (*failure).clone();
        let cached = self
            .cache
            .try_get_with(key.clone(), counted())
            .await
            .map_err(unshare)?;
        if lives_at_least(&cached, min_ttl) {
            return Ok(cached);
        }
        // Just fetched and still too short: asking again would give no better token.
        if ran.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(too_short());
        }
        // A cached token that would not live `min_ttl` longer is replaced first.
        self.cache.invalidate(&key).await;
        let fresh = self
            .cache
            .try_get_with(key, counted())
            .await
            .map_err(unshare)?;
        if !lives_at_least(&fresh, min_ttl) {
            return Err(too_short());
        }
        Ok(fresh)
    }

    /// The token `grant` asks for under `key`, valid at least `min_ttl`: cached, or fetched by
    /// `fetch` and labelled with whom it is for and how it is revoked.
    pub async fn issue(
        &self,
        grant: &Grant<'_>,
        key: String,
        min_ttl: Duration,
        revoke_with: Option<RevokeWith>,
        fetch: impl Fn() -> BoxFuture<'static, Result<CachedToken, ProviderFailure>>,
    ) -> Result<IssuedToken> {
        let owner = grant.owner();
        let connector = &grant.authorization.connector_uid;
        let labelled = || {
            let (fetched, owner, revoke_with) = (fetch(), owner.clone(), revoke_with.clone());
            let span = tracing::debug_span!(
                "provider.fetch",
                otel.kind = "client",
                connector = %connector,
                subject = %owner.subject,
            );
            Box::pin(async move {
                let mut token = fetched.instrument(span).await?;
                token.owner = owner;
                token.revoke_with = revoke_with;
                Ok(token)
            }) as BoxFuture<'static, _>
        };
        let cached = self.get(key, min_ttl, labelled).await.map_err(|failure| {
            failure.into_error(&grant.authorization.connector_uid, &owner.installation_id)
        })?;
        Ok(IssuedToken {
            token: cached.token,
            expires_at: cached.expires_at,
            scopes: cached.scopes,
            credential: cached.credential,
        })
    }

    /// Drops every cached token.
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }

    /// Drops every cached token `scope` covers (no provider call).
    pub async fn forget(&self, scope: &RevokeScope) {
        let covered: Vec<Arc<String>> = self
            .cache
            .iter()
            .filter(|(_, token)| scope.covers(&token.owner))
            .map(|(key, _)| key)
            .collect();
        for key in covered {
            self.cache.invalidate(key.as_str()).await;
        }
    }

    /// Drops every cached token `scope` covers, all at once, then revokes each at its provider.
    pub async fn revoke(&self, scope: &RevokeScope) -> Vec<(SecretString, RevokeOutcome)> {
        let covered: Vec<(Arc<String>, CachedToken)> = self
            .cache
            .iter()
            .filter(|(_, token)| scope.covers(&token.owner))
            .collect();
        // Every covered copy goes before the first provider call: no caller gets one of them
        // while the (slow) revocations run.
        for (key, _) in &covered {
            self.cache.invalidate(key.as_str()).await;
        }
        let mut outcomes = Vec::with_capacity(covered.len());
        for (_, token) in covered {
            let outcome = match &token.revoke_with {
                Some(how) => revoke_at(&self.http, &token.token, how, "access_token").await,
                None => RevokeOutcome::Skipped,
            };
            tracing::info!(
                kind = self.kind,
                outcome = outcome.as_str(),
                "revoked a cached provider token"
            );
            outcomes.push((token.token, outcome));
        }
        outcomes
    }
}

/// A request to GitHub's REST API with the headers GitHub asks for.
pub fn github_request(method: http::Method, url: &str) -> http::request::Builder {
    http::Request::builder()
        .method(method)
        .uri(url)
        .header(http::header::ACCEPT, "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .header(http::header::USER_AGENT, "connect-token-broker")
}

/// Revokes `token` (an `access_token` or a `refresh_token`, as RFC 7009 hints) at its provider.
pub async fn revoke_at(
    http: &reqwest::Client,
    token: &SecretString,
    how: &RevokeWith,
    hint: &str,
) -> RevokeOutcome {
    let request = match how {
        RevokeWith::Rfc7009 { url, basic } => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", token.expose_secret());
            form.append_pair("token_type_hint", hint);
            let mut request = http::Request::builder()
                .method(http::Method::POST)
                .uri(url.as_str())
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                );
            if let Some(basic) = basic {
                request = request.header(http::header::AUTHORIZATION, basic);
            }
            request.body(form.finish().into_bytes())
        }
        RevokeWith::GitHub { api_url } => {
            let url = format!(
                "{}/installation/token",
                api_url.as_str().trim_end_matches('/')
            );
            github_request(http::Method::DELETE, &url)
                .header(
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", token.expose_secret()),
                )
                .body(Vec::new())
        }
    };
    let Ok(request) = request else {
        return RevokeOutcome::Failed;
    };
    match send(http, request).await {
        // RFC 7009 §2.2: 200 for a revoked (or already invalid) token; GitHub: 204.
        Ok(response) if response.status().is_success() => RevokeOutcome::Revoked,
        Ok(response) => {
            tracing::warn!(status = %response.status(), "the provider refused a revocation");
            RevokeOutcome::Failed
        }
        Err(Unreachable(why)) => {
            tracing::warn!(error = %why, "a revocation did not reach the provider");
            RevokeOutcome::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_lifetimes_are_clamped_and_never_exceed_the_ceiling() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            cache_lifetime(Some(Duration::from_secs(600)), hour),
            Duration::from_secs(540)
        );
        assert_eq!(
            cache_lifetime(Some(Duration::from_secs(86_400)), hour),
            hour
        );
        assert_eq!(cache_lifetime(Some(Duration::MAX), hour), hour);
        assert_eq!(cache_lifetime(None, hour), Duration::ZERO);
        assert_eq!(cache_lifetime(Some(Duration::ZERO), hour), Duration::ZERO);
    }
}
