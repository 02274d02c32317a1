//! `github` connectors (GitHub Apps): config `app_id` and `api_url` (default
//! `https://api.github.com`), secret `private_key` (PEM). A token is an installation access
//! token, asked of `POST {api_url}/app/installations/{id}/access_tokens` with a short App JWT
//! (RS256, `iss` = the app id, `iat` a minute back for clock drift, `exp` nine minutes on). The JWT
//! is signed only when a new installation token is needed: tokens are cached per (team, project,
//! environment, installation, narrowing) until shortly before GitHub's `expires_at`, and
//! concurrent misses of one key make a single call. `resources` narrow the token to repositories
//! (names, as GitHub takes them), `scopes` of the form `name:level` to permissions.
//!
//! GitHub's answers: 201 with `token`, `expires_at`, `permissions`; 404 for an installation it
//! does not know (INSTALLATION_NOT_FOUND); 422 for permissions or repositories the installation
//! does not grant (SCOPE_NOT_ALLOWED); 401/403 for a bad app id or key, or a suspended
//! installation (NO_VALID_TOKEN); a 5xx, a timeout or no answer is PROVIDER_UNAVAILABLE.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    Grant, IssuedToken, RevokeOutcome, RevokeScope, TokenIssuer,
    provider::{
        CachedToken, ProviderFailure, RevokeWith, TokenCache, Unreachable, github_request, send,
    },
};
use crate::{
    error::{BrokerError, Result, truncate},
    metrics::BrokerMetrics,
    outbound::Outbound,
};

const DEFAULT_API_URL: &str = "https://api.github.com";
/// How long an App JWT lives (GitHub accepts at most ten minutes).
const APP_JWT_LIFETIME: i64 = 540;
/// How far an App JWT's `iat` is set back, for clock drift.
const APP_JWT_BACKDATE: i64 = 60;

pub struct GitHubAppIssuer {
    outbound: Outbound,
    max_cache: Duration,
    cache: TokenCache,
}

impl std::fmt::Debug for GitHubAppIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubAppIssuer")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl GitHubAppIssuer {
    pub fn new(outbound: Outbound, max_cache: Duration, metrics: BrokerMetrics) -> Self {
        Self {
            cache: TokenCache::new("github", outbound.http().clone(), metrics),
            outbound,
            max_cache,
        }
    }
}

/// `name:level` scopes as GitHub permissions, or the violation.
fn permissions(scopes: &[String]) -> Result<BTreeMap<String, String>> {
    let mut permissions = BTreeMap::new();
    for scope in scopes {
        let Some((name, level)) = connect_types::permission(scope) else {
            return Err(BrokerError::invalid(
                "scopes",
                format!(
                    "'{}' is not a GitHub permission: use name:level, e.g. contents:read (levels read, write, admin)",
                    truncate(scope, 40)
                ),
            ));
        };
        if let Some(other) = permissions.insert(name.to_owned(), level.to_owned())
            && other != level
        {
            return Err(BrokerError::invalid(
                "scopes",
                format!("permission '{name}' is asked for at two levels"),
            ));
        }
    }
    Ok(permissions)
}

/// Repository names as GitHub takes them (without the owner), sorted and deduplicated.
fn repositories(resources: &[String]) -> Result<Vec<String>> {
    let mut names = Vec::with_capacity(resources.len());
    for name in resources {
        let valid = !name.is_empty()
            && name.len() <= 100
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(BrokerError::invalid(
                "resources",
                format!(
                    "'{}' is not a repository name: give the name without its owner, e.g. web",
                    truncate(name, 40)
                ),
            ));
        }
        names.push(name.clone());
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// What GitHub answers with an installation token.
#[derive(Deserialize)]
struct InstallationToken {
    token: String,
    expires_at: Option<String>,
    #[serde(default)]
    permissions: BTreeMap<String, serde_json::Value>,
}

/// GitHub's error body.
#[derive(Deserialize)]
struct GitHubError {
    message: Option<String>,
}

/// What one installation token request needs.
struct Ask {
    http: reqwest::Client,
    max_cache: Duration,
    url: String,
    app_id: String,
    private_key: SecretString,
    body: Vec<u8>,
}

/// Signs an App JWT and asks GitHub for an installation token.
async fn ask(ask: Ask) -> Result<CachedToken, ProviderFailure> {
    let now = Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": ask.app_id,
        "iat": now - APP_JWT_BACKDATE,
        "exp": now + APP_JWT_LIFETIME,
    });
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(ask.private_key.expose_secret().as_bytes())
        .map_err(|_| {
        ProviderFailure::Rejected(
            "the connector's private_key is not an RSA private key in PEM".into(),
        )
    })?;
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .map_err(|_| ProviderFailure::Rejected("the App JWT could not be signed".into()))?;
    let request = github_request(http::Method::POST, &ask.url)
        .header(http::header::AUTHORIZATION, format!("Bearer {jwt}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(ask.body)
        .map_err(|e| ProviderFailure::Rejected(format!("installation token request: {e}")))?;
    let response = send(&ask.http, request)
        .await
        .map_err(|Unreachable(why)| ProviderFailure::Unavailable(why))?;
    let status = response.status();
    let message = || {
        serde_json::from_slice::<GitHubError>(response.body())
            .ok()
            .and_then(|e| e.message)
            .map(|m| truncate(&m, 200))
            .unwrap_or_else(|| format!("HTTP {status}"))
    };
    match status.as_u16() {
        200 | 201 => {}
        404 => return Err(ProviderFailure::UnknownInstallation),
        422 => {
            return Err(ProviderFailure::NotAllowed(format!(
                "GitHub refused the permissions or repositories asked for: {}",
                message()
            )));
        }
        401 => {
            return Err(ProviderFailure::Rejected(format!(
                "GitHub refused the App JWT ({}): check the connector's app_id and private_key",
                message()
            )));
        }
        _ => {
            return Err(ProviderFailure::Rejected(format!(
                "GitHub refused the installation token ({})",
                message()
            )));
        }
    }
    let answer: InstallationToken = serde_json::from_slice(response.body()).map_err(|_| {
        ProviderFailure::Rejected("GitHub's installation token answer is unreadable".into())
    })?;
    if answer.token.is_empty() {
        return Err(ProviderFailure::Rejected(
            "GitHub's installation token answer has no token".into(),
        ));
    }
    let expires_at = answer
        .expires_at
        .as_deref()
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
        .map(|at| at.with_timezone(&Utc))
        .ok_or_else(|| {
            ProviderFailure::Rejected(
                "GitHub's installation token answer has no readable expires_at".into(),
            )
        })?;
    let lifetime = (expires_at - Utc::now())
        .to_std()
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            ProviderFailure::Rejected("GitHub answered with an expired installation token".into())
        })?;
    let granted = answer
        .permissions
        .iter()
        .map(|(name, level)| format!("{name}:{}", level.as_str().unwrap_or("?")))
        .collect();
    Ok(CachedToken::new(
        SecretString::from(answer.token),
        Some(lifetime),
        granted,
        ask.max_cache,
    ))
}

#[async_trait]
impl TokenIssuer for GitHubAppIssuer {
    async fn issue(&self, grant: Grant<'_>) -> Result<IssuedToken> {
        let Some(installation) = grant.installation() else {
            return Err(BrokerError::ConnectorInstallationRequired(
                "a github connector issues tokens for an installation".into(),
            ));
        };
        let app_id = grant
            .config("app_id")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| BrokerError::NoValidToken("the connector has no config.app_id".into()))?
            .clone();
        let api_url = grant
            .config("api_url")
            .map_or(DEFAULT_API_URL, String::as_str);
        let api_url = self.outbound.check(api_url).map_err(|refusal| {
            tracing::warn!(connector = %grant.authorization.connector_uid, %refusal,
                "refusing the connector's api_url");
            BrokerError::NoValidToken(
                "the connector's api_url is not an allowed destination".into(),
            )
        })?;
        let private_key = grant.secret("private_key")?.clone();
        let permissions = permissions(grant.scopes)?;
        let repositories = repositories(grant.resources)?;
        let mut body = serde_json::Map::new();
        if !repositories.is_empty() {
            body.insert("repositories".into(), repositories.clone().into());
        }
        if !permissions.is_empty() {
            body.insert(
                "permissions".into(),
                serde_json::to_value(&permissions).unwrap_or_default(),
            );
        }
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let base = api_url.as_str().trim_end_matches('/').to_owned();
        let url = format!("{base}/app/installations/{}/access_tokens", installation.id);

        // Per (team, project, environment, installation, narrowing, app and key).
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
                .chain_update(url.as_bytes())
                .chain_update([0])
                .chain_update(app_id.as_bytes())
                .chain_update([0])
                .chain_update(Sha256::digest(private_key.expose_secret().as_bytes()))
                .chain_update([0])
                .chain_update(&body)
                .finalize(),
        );
        let fetch_one = || {
            Box::pin(ask(Ask {
                http: self.outbound.http().clone(),
                max_cache: self.max_cache,
                url: url.clone(),
                app_id: app_id.clone(),
                private_key: private_key.clone(),
                body: body.clone(),
            })) as BoxFuture<'static, _>
        };
        let revoke_with = Some(RevokeWith::GitHub { api_url });
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
    fn scopes_become_permissions_and_bad_ones_are_named() {
        let asked = ["contents:read".to_owned(), "issues:write".to_owned()];
        let p = permissions(&asked).unwrap();
        assert_eq!(p["contents"], "read");
        assert_eq!(p["issues"], "write");
        for bad in ["contents", "contents:owner", "Contents:read", ":read"] {
            assert!(
                matches!(
                    permissions(&[bad.to_owned()]),
                    Err(BrokerError::InvalidArgument(v)) if v[0].field == "scopes"
                ),
                "{bad}"
            );
        }
        assert!(permissions(&["contents:read".into(), "contents:write".into()]).is_err());
        assert!(permissions(&["contents:read".into(), "contents:read".into()]).is_ok());
    }

    #[test]
    fn resources_are_repository_names() {
        let asked = ["web".to_owned(), "api".to_owned(), "web".to_owned()];
        assert_eq!(repositories(&asked).unwrap(), ["api", "web"]);
        for bad in ["acme/web", "", "we b"] {
            assert!(repositories(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }
}
