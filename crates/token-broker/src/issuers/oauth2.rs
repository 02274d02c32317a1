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

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use connect_types::is_scope_token;
use futures::future::BoxFuture;
use oauth2::{
    ClientId, ClientSecret, RequestTokenError, Scope, TokenResponse, TokenUrl, basic::BasicClient,
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::{
    Grant, IssuedToken, RevokeOutcome, RevokeScope, TokenIssuer,
    provider::{
        CachedToken, ProviderFailure, RevokeWith, TokenCache, Unreachable, basic_auth, form,
        post_grant, send,
    },
    user::{self, UserGrants},
};
use crate::{
    error::{BrokerError, Result},
    issuers::{JwtBearer, Subject, SubjectToken},
    metrics::BrokerMetrics,
    outbound::Outbound,
};

pub struct OAuth2ClientCredentialsIssuer {
    outbound: Outbound,
    max_cache: Duration,
    cache: TokenCache,
    /// Where users' grants are; `None`: user subjects need authorization.
    users: Option<UserGrants>,
}

/// How long a user's access token must stay valid when the caller asks for no `min_ttl`.
const DEFAULT_USER_MIN_TTL: Duration = Duration::from_secs(30);

impl std::fmt::Debug for OAuth2ClientCredentialsIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2ClientCredentialsIssuer")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

fn split_scopes(value: Option<&String>) -> Vec<String> {
    value
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

impl OAuth2ClientCredentialsIssuer {
    /// An issuer whose provider calls go through `outbound` (no redirects: following one from a
    /// token endpoint would resend the credentials elsewhere).
    /// Tokens are cached until shortly before they expire, and never longer than `max_cache`.
    pub fn new(outbound: Outbound, max_cache: Duration, metrics: BrokerMetrics) -> Self {
        Self {
            cache: TokenCache::new("oauth2", outbound.http().clone(), metrics),
            outbound,
            max_cache,
            users: None,
        }
    }

    /// The same issuer, answering user subjects from the grants of `users`.
    pub fn with_user_grants(mut self, users: UserGrants) -> Self {
        self.users = Some(users);
        self
    }

    /// A user's access token: the stored grant's, refreshed when it would expire within
    /// `min_ttl` (see `user`).
    async fn user_token(
        &self,
        grant: &Grant<'_>,
        user_id: &str,
        token_url: url::Url,
        revoke_with: Option<RevokeWith>,
    ) -> Result<IssuedToken> {
        let Some(users) = self.users.clone() else {
            return Err(BrokerError::UserAuthorizationRequired(
                "this broker keeps no user grants".into(),
            ));
        };
        let min_ttl = if grant.min_ttl.is_zero() {
            DEFAULT_USER_MIN_TTL
        } else {
            grant.min_ttl
        };
        let installation = grant.installation().map_or("", |i| i.id.as_str());
        let key = user::grant_key(
            grant.identity,
            &grant.authorization.connector_id,
            user_id,
            installation,
        );
        // Cached per asking project, as grants are each project's (a team's shared grant costs
        // each project one lease the first time): another project's deployment never gets a
        // token from this project's grant out of the cache.
        let cache_key = hex::encode(
            Sha256::new()
                .chain_update(b"user\0")
                .chain_update(key.owner_id.as_str().as_bytes())
                .chain_update([0])
                .chain_update(key.project_id.as_str().as_bytes())
                .chain_update([0])
                .chain_update(key.connector_id.as_bytes())
                .chain_update([0])
                .chain_update(key.environment.as_str().as_bytes())
                .chain_update([0])
                .chain_update(key.installation_id.as_bytes())
                .chain_update([0])
                .chain_update(key.user_id.as_bytes())
                .chain_update([0])
                .chain_update(token_url.as_str().as_bytes())
                .finalize(),
        );
        let basic = user::client_auth(
            grant.optional_secret("client_id"),
            grant.optional_secret("client_secret"),
        );
        let (http, max_cache) = (self.outbound.http().clone(), self.max_cache);
        let fetch_one = || {
            let (users, key, refresher) = (
                users.clone(),
                key.clone(),
                user::Refresher {
                    http: http.clone(),
                    token_url: token_url.clone(),
                    basic: basic.clone(),
                    max_cache,
                },
            );
            Box::pin(async move { users.token(key, min_ttl, refresher).await })
                as BoxFuture<'static, _>
        };
        let issued = self
            .cache
            .issue(grant, cache_key, min_ttl, revoke_with, fetch_one)
            .await?;
        if let Some(missing) = grant.scopes.iter().find(|s| !issued.scopes.contains(s)) {
            return Err(BrokerError::UserAuthorizationRequired(format!(
                "the user did not grant scope '{}': ask for it in a new authorization",
                crate::error::truncate(missing, 40)
            )));
        }
        Ok(issued)
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
                    crate::error::provider_text(r.error().as_ref())
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
    let granted = response
        .scopes()
        .map(|s| s.iter().map(|s| s.to_string()).collect())
        .unwrap_or(asked);
    CachedToken::new(
        SecretString::from(response.access_token().secret().to_owned()),
        response.expires_in(),
        granted,
        max_cache,
    )
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
/// Whether `sub` is among a comma-separated list of exact subjects and `prefix*` patterns.
fn subject_allowed(patterns: &str, sub: &str) -> bool {
    patterns
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| match p.strip_suffix('*') {
            Some(prefix) => sub.starts_with(prefix),
            None => sub == p,
        })
}

/// The connector's admins decide what a JWT bearer assertion may say: the `sub` a caller asks
/// for must be one of `jwt_bearer_subjects`, and `iss` and `aud` come from the connector's
/// config only. Checked before any provider call.
fn bearer_allowed(grant: &Grant<'_>, bearer: &JwtBearer) -> Result<()> {
    if bearer.iss.is_some() || bearer.aud.is_some() {
        return Err(BrokerError::invalid(
            if bearer.iss.is_some() {
                "subject.jwt_bearer.iss"
            } else {
                "subject.jwt_bearer.aud"
            },
            "the assertion's iss and aud come from the connector's config (assertion_iss, assertion_aud), not from the caller",
        ));
    }
    let Some(patterns) = grant.config("jwt_bearer_subjects") else {
        return Err(BrokerError::SubjectNotAllowed(
            "the connector allows no JWT bearer subjects (its admins set config.jwt_bearer_subjects)".into(),
        ));
    };
    if !subject_allowed(patterns, &bearer.sub) {
        return Err(BrokerError::SubjectNotAllowed(format!(
            "JWT bearer subject '{}' is not among the connector's jwt_bearer_subjects",
            crate::error::truncate(&bearer.sub, 80)
        )));
    }
    Ok(())
}

fn assertion_key(grant: &Grant<'_>) -> Result<AssertionKey> {
    let algorithm = match grant.config("assertion_alg").map(String::as_str) {
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
        iss: grant.config("assertion_iss").cloned(),
        aud: grant.config("assertion_aud").cloned(),
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
    /// The connector's `assertion_iss` and `assertion_aud`.
    iss: Option<String>,
    aud: Option<String>,
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
    let iss = match (&key.iss, &credentials.0) {
        (Some(iss), _) => iss.clone(),
        (None, Some(client_id)) => client_id.expose_secret().to_owned(),
        (None, None) => {
            return Err(ProviderFailure::Rejected(
                "a JWT bearer grant needs the connector's assertion_iss config or client_id secret"
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
        key.aud
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

#[async_trait]
impl TokenIssuer for OAuth2ClientCredentialsIssuer {
    async fn issue(&self, grant: Grant<'_>) -> Result<IssuedToken> {
        let token_url = grant.config("token_url").ok_or_else(|| {
            BrokerError::NoValidToken("the connector has no config.token_url".into())
        })?;
        let token_url = self.outbound.check(token_url).map_err(|refusal| {
            tracing::warn!(connector = %grant.authorization.connector_uid, %refusal,
                "refusing the connector's token_url");
            BrokerError::NoValidToken(
                "the connector's token_url is not an allowed destination".into(),
            )
        })?;
        let secret = |name: &str| grant.optional_secret(name).cloned();
        // Where the connector names a revocation endpoint (RFC 7009), its tokens can be revoked.
        let revoke_with = match grant.config("revocation_url") {
            Some(url) => match self.outbound.check(url) {
                Ok(url) => Some(RevokeWith::Rfc7009 {
                    url,
                    basic: match (secret("client_id"), secret("client_secret")) {
                        (Some(id), Some(secret)) => Some(basic_auth(&id, &secret)),
                        _ => None,
                    },
                }),
                Err(refusal) => {
                    tracing::warn!(connector = %grant.authorization.connector_uid, %refusal,
                        "refusing the connector's revocation_url");
                    None
                }
            },
            None => None,
        };
        if let Subject::User(user_id) = grant.subject {
            return self
                .user_token(&grant, user_id, token_url, revoke_with)
                .await;
        }
        let token_url = TokenUrl::from_url(token_url);
        let how = match grant.subject {
            // The assertion is the grant: client credentials go along only when there are both.
            Subject::JwtBearer(bearer) => {
                bearer_allowed(&grant, bearer)?;
                How::Bearer(
                    (secret("client_id"), secret("client_secret")),
                    assertion_key(&grant)?,
                    bearer,
                )
            }
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
            split_scopes(grant.config("scopes"))
        } else {
            grant.scopes.to_vec()
        };
        if let Some(bad) = scopes.iter().find(|s| !is_scope_token(s)) {
            return Err(BrokerError::invalid(
                "scopes",
                format!("'{}' is not a valid scope", crate::error::truncate(bad, 40)),
            ));
        }
        if let Some(allowed) = grant.config("allowed_scopes") {
            let allowed = split_scopes(Some(allowed));
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
        let installation = grant.installation().map_or("", |i| i.id.as_str());
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
                .chain_update(installation.as_bytes())
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
            let fetched: BoxFuture<'static, _> = match &how {
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
            fetched
        };
        self.cache
            .issue(&grant, key, grant.min_ttl, revoke_with, fetch_one)
            .await
    }

    async fn revoke(&self, scope: &RevokeScope) -> Vec<(SecretString, RevokeOutcome)> {
        self.cache.revoke(scope).await
    }

    async fn forget(&self, scope: &RevokeScope) {
        self.cache.forget(scope).await;
    }

    fn forget_all(&self) {
        self.cache.forget_all();
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
    fn jwt_bearer_subjects_are_exact_or_prefixes() {
        let allowed = "svc@acme.example, ops-*,, ";
        assert!(subject_allowed(allowed, "svc@acme.example"));
        assert!(subject_allowed(allowed, "ops-eu"));
        assert!(subject_allowed(allowed, "ops-"));
        assert!(!subject_allowed(allowed, "svc@acme.example.evil"));
        assert!(!subject_allowed(allowed, "xsvc@acme.example"));
        assert!(!subject_allowed(allowed, "ops"));
        assert!(!subject_allowed(allowed, ""));
        assert!(!subject_allowed("", "anyone"));
        assert!(subject_allowed("*", "anyone"));
    }
}
