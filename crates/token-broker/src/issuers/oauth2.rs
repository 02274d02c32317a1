//! `oauth2` connectors: the client credentials grant (RFC 6749 §4.4) against the connector's
//! `config.token_url`, with secrets `client_id` and `client_secret`, through the `oauth2` crate;
//! for a `token` subject, RFC 8693 token exchange with the same client credentials; for a
//! `jwt_bearer` subject, an RFC 7523 assertion signed with the secret `assertion_key`
//! (`jsonwebtoken`). The `oauth2` crate has no request types for the last two: their forms are
//! built here and the answers read with the crate's token and error types.
//!
//! Scopes: the request's, or the connector's default `config.scopes` (space-separated); where
//! `config.allowed_scopes` is set, asking for any other scope is refused. Access tokens are cached
//! per (connector, credentials, scopes) until shortly before they expire, and concurrent misses for
//! one key make a single provider call. A 4xx answer means the credentials are no good
//! (NO_VALID_TOKEN); a 5xx, a timeout or no answer means the provider is unavailable.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use oauth2::{
    ClientId, ClientSecret, RequestTokenError, Scope, TokenResponse, TokenUrl, basic::BasicClient,
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::{Grant, IssuedToken, TokenIssuer};
use crate::{
    error::{BrokerError, Cause, Result},
    issuers::{JwtBearer, Subject, SubjectToken},
    metrics::{BrokerMetrics, ProviderOutcome},
    outbound::Outbound,
};

/// Largest token response accepted.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest lifetime believed of a provider's `expires_in`; larger claims are clamped to it.
const MAX_BELIEVED_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);
/// Most cached access tokens held at once.
const MAX_CACHED: u64 = 10_000;

#[derive(Clone)]
struct CachedToken {
    token: SecretString,
    expires_at: Option<DateTime<Utc>>,
    scopes: Vec<String>,
    cache_for: Duration,
}

struct CacheUntilRefresh;

impl moka::Expiry<String, CachedToken> for CacheUntilRefresh {
    fn expire_after_create(&self, _: &String, value: &CachedToken, _: Instant) -> Option<Duration> {
        Some(value.cache_for)
    }
}

/// Why a provider call gave no token; cloneable, since one call may answer many waiters.
#[derive(Clone, Debug)]
enum ProviderFailure {
    Rejected(String),
    Unavailable(String),
}

impl From<ProviderFailure> for BrokerError {
    fn from(failure: ProviderFailure) -> Self {
        match failure {
            ProviderFailure::Rejected(why) => BrokerError::NoValidToken(why),
            ProviderFailure::Unavailable(why) => {
                BrokerError::ProviderUnavailable(Box::new(Cause(why)))
            }
        }
    }
}

/// The transport error the `oauth2` crate sees: no answer, or a 5xx.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unreachable(String);

pub struct OAuth2ClientCredentialsIssuer {
    outbound: Outbound,
    metrics: BrokerMetrics,
    max_cache: Duration,
    cache: moka::future::Cache<String, CachedToken>,
}

impl std::fmt::Debug for OAuth2ClientCredentialsIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2ClientCredentialsIssuer")
            .field("cached", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

fn split_scopes(value: Option<&String>) -> Vec<String> {
    value
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn is_scope_token(scope: &str) -> bool {
    // RFC 6749 §3.3: %x21 / %x23-5B / %x5D-7E
    !scope.is_empty()
        && scope.len() <= 256
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

impl OAuth2ClientCredentialsIssuer {
    /// An issuer whose provider calls go through `outbound` (no redirects: following one from a
    /// token endpoint would resend the credentials elsewhere).
    /// Tokens are cached until shortly before they expire, and never longer than `max_cache`.
    pub fn new(outbound: Outbound, max_cache: Duration, metrics: BrokerMetrics) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(MAX_CACHED)
            .expire_after(CacheUntilRefresh)
            .build();
        Self {
            outbound,
            metrics,
            max_cache,
            cache,
        }
    }
}

/// One client credentials exchange.
async fn fetch(
    http: reqwest::Client,
    max_cache: Duration,
    token_url: TokenUrl,
    client_id: SecretString,
    client_secret: SecretString,
    scopes: Vec<String>,
) -> Result<CachedToken, ProviderFailure> {
    {
        let client = BasicClient::new(ClientId::new(client_id.expose_secret().to_owned()))
            .set_client_secret(ClientSecret::new(client_secret.expose_secret().to_owned()))
            .set_token_uri(token_url);
        let http = ProviderHttp(http);
        let response = client
            .exchange_client_credentials()
            .add_scopes(scopes.iter().cloned().map(Scope::new))
            .request_async(&http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => ProviderFailure::Rejected(format!(
                    "the provider refused the client credentials ({})",
                    r.error()
                )),
                RequestTokenError::Request(Unreachable(why)) => ProviderFailure::Unavailable(why),
                RequestTokenError::Parse(..) => {
                    ProviderFailure::Rejected("the provider's token response is unreadable".into())
                }
                RequestTokenError::Other(why) => ProviderFailure::Rejected(why),
            })?;
        Ok(cached_from(&response, scopes, max_cache))
    }
}

/// What is kept of a provider's token answer.
fn cached_from(
    response: &oauth2::basic::BasicTokenResponse,
    asked: Vec<String>,
    max_cache: Duration,
) -> CachedToken {
    // A provider's numbers are not trusted to be sane: clamped before any arithmetic.
    let lifetime = response.expires_in().map(|d| d.min(MAX_BELIEVED_LIFETIME));
    let expires_at = lifetime
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| Utc::now().checked_add_signed(d));
    let granted = response
        .scopes()
        .map(|s| s.iter().map(|s| s.to_string()).collect())
        .unwrap_or(asked);
    CachedToken {
        token: SecretString::from(response.access_token().secret().to_owned()),
        expires_at,
        scopes: granted,
        cache_for: cache_lifetime(lifetime, max_cache),
    }
}

/// The grant type of RFC 8693 token exchange.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// One RFC 8693 token exchange: the caller's subject token for the provider's access token,
/// with the connector's client credentials.
async fn exchange(
    http: reqwest::Client,
    max_cache: Duration,
    token_url: url::Url,
    (client_id, client_secret): (SecretString, SecretString),
    scopes: Vec<String>,
    subject: SubjectToken,
) -> Result<CachedToken, ProviderFailure> {
    let body = form(
        &[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", subject.token.expose_secret()),
            ("subject_token_type", &subject.token_type),
            ("requested_token_type", super::ACCESS_TOKEN_TYPE),
        ],
        &scopes,
    );
    let basic = Some(basic_auth(&client_id, &client_secret));
    let answer = post_grant(&http, &token_url, body, basic, "token exchange").await?;
    Ok(cached_from(&answer, scopes, max_cache))
}

/// The connector's assertion key and algorithm (`config.assertion_alg`: `ES256`, the default, or
/// `RS256`).
fn assertion_key(grant: &Grant<'_>) -> Result<AssertionKey> {
    let algorithm = match grant
        .authorization
        .config
        .get("assertion_alg")
        .map(String::as_str)
    {
        None | Some("ES256") => jsonwebtoken::Algorithm::ES256,
        Some("RS256") => jsonwebtoken::Algorithm::RS256,
        Some(other) => {
            return Err(BrokerError::NoValidToken(format!(
                "the connector's assertion_alg '{}' is neither ES256 nor RS256",
                crate::error::truncate(other, 20)
            )));
        }
    };
    Ok(AssertionKey {
        algorithm,
        pem: grant.secret("assertion_key")?.clone(),
    })
}

/// Which grant a request makes, with what it needs.
enum How<'g> {
    ClientCredentials((SecretString, SecretString)),
    Exchange((SecretString, SecretString), &'g SubjectToken),
    Bearer(
        (Option<SecretString>, Option<SecretString>),
        AssertionKey,
        &'g JwtBearer,
    ),
}

impl How<'_> {
    /// What sets this grant's tokens apart in the cache key: the credentials and, by digest, the
    /// subject (the key never holds a subject token).
    fn key_part(&self) -> String {
        let mut digest = Sha256::new();
        let mut add = |part: &str| {
            digest.update(part.as_bytes());
            digest.update([0]);
        };
        match self {
            How::ClientCredentials((id, secret)) => {
                add("client_credentials");
                add(id.expose_secret());
                add(secret.expose_secret());
            }
            How::Exchange((id, secret), subject) => {
                add("token_exchange");
                add(id.expose_secret());
                add(secret.expose_secret());
                add(&subject.token_type);
                add(subject.token.expose_secret());
            }
            How::Bearer((id, secret), key, bearer) => {
                add("jwt_bearer");
                add(id.as_ref().map_or("", |v| v.expose_secret()));
                add(secret.as_ref().map_or("", |v| v.expose_secret()));
                add(key.pem.expose_secret());
                add(&bearer.sub);
                add(bearer.iss.as_deref().unwrap_or(""));
                add(bearer.aud.as_deref().unwrap_or(""));
                for (name, value) in &bearer.additional_claims {
                    add(name);
                    add(value);
                }
            }
        }
        hex::encode(digest.finalize())
    }
}

/// The grant type of RFC 7523 JWT bearer grants.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Longest life of an assertion the broker signs.
const ASSERTION_LIFETIME: i64 = 300;

/// How the broker signs assertions for one connector.
#[derive(Clone)]
struct AssertionKey {
    algorithm: jsonwebtoken::Algorithm,
    pem: SecretString,
}

/// One RFC 7523 JWT bearer grant: an assertion signed now (unique `jti`, `exp` five minutes on),
/// traded at the token endpoint, with the client credentials when the connector has both.
async fn jwt_bearer(
    http: reqwest::Client,
    max_cache: Duration,
    token_url: url::Url,
    credentials: (Option<SecretString>, Option<SecretString>),
    scopes: Vec<String>,
    (key, bearer): (AssertionKey, JwtBearer),
) -> Result<CachedToken, ProviderFailure> {
    let iss = match (&bearer.iss, &credentials.0) {
        (Some(iss), _) => iss.clone(),
        (None, Some(client_id)) => client_id.expose_secret().to_owned(),
        (None, None) => {
            return Err(ProviderFailure::Rejected(
                "a JWT bearer grant needs subject.jwt_bearer.iss or the connector's client_id secret"
                    .into(),
            ));
        }
    };
    let now = Utc::now().timestamp();
    let mut claims = serde_json::Map::new();
    for (name, value) in &bearer.additional_claims {
        claims.insert(name.clone(), serde_json::Value::String(value.clone()));
    }
    claims.insert("iss".into(), iss.into());
    claims.insert("sub".into(), bearer.sub.clone().into());
    claims.insert(
        "aud".into(),
        bearer
            .aud
            .clone()
            .unwrap_or_else(|| token_url.to_string())
            .into(),
    );
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + ASSERTION_LIFETIME).into());
    claims.insert("jti".into(), unique_id().into());
    let encoding = match key.algorithm {
        jsonwebtoken::Algorithm::RS256 => {
            jsonwebtoken::EncodingKey::from_rsa_pem(key.pem.expose_secret().as_bytes())
        }
        _ => jsonwebtoken::EncodingKey::from_ec_pem(key.pem.expose_secret().as_bytes()),
    }
    .map_err(|_| {
        ProviderFailure::Rejected(
            "the connector's assertion_key is not a PEM private key for its assertion_alg".into(),
        )
    })?;
    let assertion = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(key.algorithm),
        &claims,
        &encoding,
    )
    .map_err(|_| ProviderFailure::Rejected("the assertion could not be signed".into()))?;
    let body = form(
        &[("grant_type", JWT_BEARER), ("assertion", &assertion)],
        &scopes,
    );
    let basic = match &credentials {
        (Some(id), Some(secret)) => Some(basic_auth(id, secret)),
        _ => None,
    };
    let answer = post_grant(&http, &token_url, body, basic, "JWT bearer grant").await?;
    Ok(cached_from(&answer, scopes, max_cache))
}

/// 24 random lower-case letters and digits.
fn unique_id() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(|b| (b as char).to_ascii_lowercase())
        .collect()
}

/// A form body of `pairs` and, when there are any, `scope`.
fn form(pairs: &[(&str, &str)], scopes: &[String]) -> Vec<u8> {
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
fn basic_auth(client_id: &SecretString, client_secret: &SecretString) -> String {
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
async fn post_grant(
    http: &reqwest::Client,
    token_url: &url::Url,
    body: Vec<u8>,
    basic: Option<String>,
    what: &str,
) -> Result<oauth2::basic::BasicTokenResponse, ProviderFailure> {
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
            .map(|e| e.error().to_string())
            .unwrap_or_else(|_| format!("HTTP {}", response.status()));
        return Err(ProviderFailure::Rejected(format!(
            "the provider refused the {what} ({error})"
        )));
    }
    serde_json::from_slice(response.body()).map_err(|_| {
        ProviderFailure::Rejected(format!("the provider's {what} answer is unreadable"))
    })
}

/// Whether `token` is valid at least `min_ttl` from now (a token without expiry always is).
fn lives_at_least(token: &CachedToken, min_ttl: Duration) -> bool {
    token.expires_at.is_none_or(|at| {
        chrono::Duration::from_std(min_ttl).is_ok_and(|ttl| at - Utc::now() >= ttl)
    })
}

/// How long a token that lives `lifetime` is served from the cache: until a little before the
/// provider would refuse it (10% early, at most a minute), and never longer than `max_cache`.
/// A token without expiry is not cached: nothing says when the provider stops honouring it.
fn cache_lifetime(lifetime: Option<Duration>, max_cache: Duration) -> Duration {
    let until_refresh = lifetime.map_or(Duration::ZERO, |d| {
        d.saturating_sub((d / 10).min(Duration::from_secs(60)))
    });
    until_refresh.min(max_cache)
}

/// The HTTP client the `oauth2` crate calls.
struct ProviderHttp(reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for ProviderHttp {
    type Error = Unreachable;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<oauth2::HttpResponse, Unreachable>> + Send + 'c,
        >,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(send(&self.0, request))
    }
}

/// One provider HTTP exchange for the `oauth2` crate, with a bounded body; a 5xx is no answer.
async fn send(
    http: &reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, Unreachable> {
    let (parts, body) = request.into_parts();
    let mut response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            Unreachable(format!(
                "token endpoint: {}",
                connect_runtime::ErrorChain(&e)
            ))
        })?;
    let status = response.status();
    if status.is_server_error() {
        return Err(Unreachable(format!(
            "token endpoint answered HTTP {status}"
        )));
    }
    let mut builder = http::Response::builder().status(status);
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Unreachable(format!("token endpoint: {e}")))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(Unreachable("token endpoint answer is too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    builder
        .body(body)
        .map_err(|e| Unreachable(format!("token endpoint answer: {e}")))
}

#[async_trait]
impl TokenIssuer for OAuth2ClientCredentialsIssuer {
    async fn issue(&self, grant: Grant<'_>) -> Result<IssuedToken> {
        grant.require_no_user("oauth2")?;
        if grant.installation_id.is_some() {
            return Err(BrokerError::invalid(
                "installation_id",
                "oauth2 connectors have no installations",
            ));
        }
        let config = &grant.authorization.config;
        let token_url = config.get("token_url").ok_or_else(|| {
            BrokerError::NoValidToken("the connector has no config.token_url".into())
        })?;
        let token_url = self.outbound.check(token_url).map_err(|refusal| {
            tracing::warn!(connector = %grant.authorization.connector_uid, %refusal,
                "refusing the connector's token_url");
            BrokerError::NoValidToken(
                "the connector's token_url is not an allowed destination".into(),
            )
        })?;
        let token_url = TokenUrl::from_url(token_url);
        let secret = |name: &str| grant.authorization.secrets.get(name).cloned();
        let how = match grant.subject {
            // The assertion is the grant: client credentials go along only when there are both.
            Subject::JwtBearer(bearer) => How::Bearer(
                (secret("client_id"), secret("client_secret")),
                assertion_key(&grant)?,
                bearer,
            ),
            Subject::Token(subject) => How::Exchange(
                (
                    grant.secret("client_id")?.clone(),
                    grant.secret("client_secret")?.clone(),
                ),
                subject,
            ),
            _ => How::ClientCredentials((
                grant.secret("client_id")?.clone(),
                grant.secret("client_secret")?.clone(),
            )),
        };

        let mut scopes = if grant.scopes.is_empty() {
            split_scopes(config.get("scopes"))
        } else {
            grant.scopes.to_vec()
        };
        if let Some(bad) = scopes.iter().find(|s| !is_scope_token(s)) {
            return Err(BrokerError::invalid(
                "scopes",
                format!("'{}' is not a valid scope", crate::error::truncate(bad, 40)),
            ));
        }
        if config.contains_key("allowed_scopes") {
            let allowed = split_scopes(config.get("allowed_scopes"));
            if let Some(extra) = scopes.iter().find(|s| !allowed.contains(s)) {
                return Err(BrokerError::ScopeNotAllowed(format!(
                    "scope '{extra}' is not allowed for this connector"
                )));
            }
        }
        scopes.sort();
        scopes.dedup();

        // Per (team, project, environment): one environment's tokens are never another's.
        let identity = grant.identity;
        let key = hex::encode(
            Sha256::new()
                .chain_update(identity.owner_id.as_str().as_bytes())
                .chain_update([0])
                .chain_update(identity.project_id.as_str().as_bytes())
                .chain_update([0])
                .chain_update(identity.environment.as_str().as_bytes())
                .chain_update([0])
                .chain_update(grant.authorization.connector_id.as_bytes())
                .chain_update([0])
                .chain_update(token_url.as_str().as_bytes())
                .chain_update([0])
                .chain_update(how.key_part().as_bytes())
                .chain_update([0])
                .chain_update(scopes.join(" ").as_bytes())
                .finalize(),
        );
        // Owned values only: the cache may run this future on behalf of several callers.
        let fetch_one = || {
            let (http, max_cache, scopes) =
                (self.outbound.http().clone(), self.max_cache, scopes.clone());
            let fetched: futures::future::BoxFuture<'static, _> = match &how {
                How::ClientCredentials((id, secret)) => Box::pin(fetch(
                    http,
                    max_cache,
                    token_url.clone(),
                    id.clone(),
                    secret.clone(),
                    scopes,
                )),
                How::Exchange(credentials, subject) => Box::pin(exchange(
                    http,
                    max_cache,
                    token_url.url().clone(),
                    credentials.clone(),
                    scopes,
                    (*subject).clone(),
                )),
                How::Bearer(credentials, key, bearer) => Box::pin(jwt_bearer(
                    http,
                    max_cache,
                    token_url.url().clone(),
                    credentials.clone(),
                    scopes,
                    (key.clone(), (*bearer).clone()),
                )),
            };
            let metrics = self.metrics.clone();
            async move {
                let result = fetched.await;
                let outcome = match &result {
                    Ok(_) => ProviderOutcome::Ok,
                    Err(ProviderFailure::Unavailable(_)) => ProviderOutcome::Unavailable,
                    Err(_) => ProviderOutcome::Rejected,
                };
                metrics.provider_request("oauth2", outcome);
                result
            }
        };
        let provider_error = |failure: Arc<ProviderFailure>| BrokerError::from((*failure).clone());
        let mut cached = self
            .cache
            .try_get_with(key.clone(), fetch_one())
            .await
            .map_err(provider_error)?;
        // A cached token that would not live `min_ttl` longer is replaced first.
        if !lives_at_least(&cached, grant.min_ttl) {
            self.cache.invalidate(&key).await;
            cached = self
                .cache
                .try_get_with(key, fetch_one())
                .await
                .map_err(provider_error)?;
            if !lives_at_least(&cached, grant.min_ttl) {
                return Err(BrokerError::NoValidToken(format!(
                    "the provider's tokens do not live the {} s asked for (min_ttl)",
                    grant.min_ttl.as_secs()
                )));
            }
        }
        Ok(IssuedToken {
            token: cached.token,
            expires_at: cached.expires_at,
            scopes: cached.scopes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_tokens_follow_rfc_6749() {
        assert!(is_scope_token("repo:read"));
        assert!(is_scope_token("https://api.example.com/read"));
        assert!(!is_scope_token("two words"));
        assert!(!is_scope_token("quote\"d"));
        assert!(!is_scope_token(""));
        assert_eq!(split_scopes(Some(&" a  b ".to_owned())), ["a", "b"]);
    }

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
