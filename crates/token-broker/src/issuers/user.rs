//! `user` subjects on `oauth2` connectors: the access token of the user's stored grant (per
//! connector, user, environment of the caller, installation), refreshed when it would expire
//! within `min_ttl`. The registry decides who refreshes, across every broker: `LeaseGrant`
//! answers the access token when it is fresh enough, gives the refresh lease (with the refresh
//! token) to exactly one caller and "busy" to the others, who ask again shortly; the leaseholder
//! refreshes at `token_url` once and reports with `CommitGrant` under its lease and version, so a
//! rotated refresh token is stored before the new access token is handed out. `invalid_grant`
//! makes the grant need consent (USER_AUTHORIZATION_REQUIRED from then on); an outage keeps it
//! (PROVIDER_UNAVAILABLE). A lost lease (the broker stalled past it) means another broker took
//! over: this one asks again and gets that broker's token. Within one broker, concurrent callers
//! for one grant share one such exchange (the provider token cache's single flight).

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use oauth2::TokenResponse;
use secrecy::{ExposeSecret, SecretString};

use super::provider::{CachedToken, ProviderFailure, basic_auth, form, post_grant, post_grant_as};
use crate::{
    error::{BrokerError, Result},
    registry::{
        GrantAccess, GrantKey, GrantLease, GrantLeases, GrantTokens, LeaseAnswer, RefreshOutcome,
    },
};

/// How user tokens are obtained: from whom, holding leases how long, waiting how long at most.
#[derive(Clone, Debug)]
pub struct UserGrants {
    pub registry: Arc<dyn GrantLeases>,
    /// How long a refresh may take before another broker may take it over.
    pub lease: Duration,
    /// Longest wait for another caller's refresh.
    pub max_wait: Duration,
}

/// What one refresh needs from the connector.
pub(super) struct Refresher {
    pub http: reqwest::Client,
    pub token_url: url::Url,
    pub basic: Option<String>,
    pub max_cache: Duration,
}

/// A grant's access token as the cache keeps it (with the grant's own expiry).
fn cached(access: GrantAccess, max_cache: Duration) -> CachedToken {
    CachedToken::until(
        access.access_token,
        access.expires_at,
        access.scopes,
        max_cache,
    )
}

fn registry_failure(e: BrokerError) -> ProviderFailure {
    match e {
        BrokerError::UserAuthorizationRequired(why) => ProviderFailure::Consent(why),
        other => ProviderFailure::Registry(connect_runtime::ErrorChain(&other).to_string()),
    }
}

impl UserGrants {
    /// The user's access token for `key`, valid at least `min_ttl`: as stored, or refreshed by
    /// this caller under the lease, or by whoever holds it.
    pub(super) async fn token(
        &self,
        key: GrantKey,
        min_ttl: Duration,
        refresher: Refresher,
    ) -> std::result::Result<CachedToken, ProviderFailure> {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            let answer = self
                .registry
                .lease(&key, min_ttl, self.lease)
                .await
                .map_err(registry_failure)?;
            match answer {
                LeaseAnswer::Fresh(access) => return Ok(cached(access, refresher.max_cache)),
                LeaseAnswer::Leased(lease) => {
                    match self.refresh(&key, lease, &refresher).await? {
                        Some(token) => return Ok(token),
                        // Fenced out: someone else refreshed; ask again for their token.
                        None => continue,
                    }
                }
                LeaseAnswer::BusyUntil(until) => {
                    if started.elapsed() >= self.max_wait {
                        return Err(ProviderFailure::Unavailable(
                            "another broker's refresh of this grant did not finish in time".into(),
                        ));
                    }
                    let left = until
                        .and_then(|u| (u - Utc::now()).to_std().ok())
                        .unwrap_or(Duration::ZERO);
                    tokio::time::sleep(pause.min(left.max(Duration::from_millis(5)))).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
            }
        }
    }

    /// Refreshes under `lease` once and commits; `None` when the lease was lost meanwhile.
    async fn refresh(
        &self,
        key: &GrantKey,
        lease: GrantLease,
        refresher: &Refresher,
    ) -> std::result::Result<Option<CachedToken>, ProviderFailure> {
        let body = form(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", lease.refresh_token.expose_secret()),
            ],
            &[],
        );
        let answer = post_grant(
            &refresher.http,
            &refresher.token_url,
            body,
            refresher.basic.clone(),
            "refresh token",
        )
        .await;
        let (outcome, failure) = match answer {
            Ok(tokens) => {
                let expires_at = tokens
                    .expires_in()
                    .map(|d| d.min(super::provider::MAX_BELIEVED_LIFETIME))
                    .and_then(|d| chrono::Duration::from_std(d).ok())
                    .and_then(|d| Utc::now().checked_add_signed(d));
                // RFC 6749 §5.1: no scope (or an empty one) means the scope of the grant.
                let granted: Vec<String> = tokens
                    .scopes()
                    .map(|s| {
                        s.iter()
                            .map(|s| s.to_string())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                let granted = if granted.is_empty() {
                    lease.scopes.clone()
                } else {
                    granted
                };
                let refreshed = GrantTokens {
                    access_token: SecretString::from(tokens.access_token().secret().to_owned()),
                    refresh_token: tokens
                        .refresh_token()
                        .map(|t| SecretString::from(t.secret().to_owned())),
                    expires_at,
                    scopes: granted,
                };
                (RefreshOutcome::Refreshed(refreshed), None)
            }
            Err(ProviderFailure::InvalidGrant(why)) => (
                RefreshOutcome::Refused(why.clone()),
                Some(ProviderFailure::Consent(format!(
                    "the provider refused the user's refresh token: the user must authorize Connect again ({why})"
                ))),
            ),
            Err(ProviderFailure::Unavailable(why)) => (
                RefreshOutcome::Unavailable(why.clone()),
                Some(ProviderFailure::Unavailable(why)),
            ),
            // Our client credentials, not the user's grant: keep the grant.
            Err(other) => {
                let why = match &other {
                    ProviderFailure::Rejected(why) => why.clone(),
                    _ => "the refresh failed".to_owned(),
                };
                (RefreshOutcome::Unavailable(why), Some(other))
            }
        };
        let committed = self.registry.commit(key, &lease, outcome).await;
        match (committed, failure) {
            (Ok(_), Some(failure)) => Err(failure),
            (Ok(Some(access)), None) => Ok(Some(cached(access, refresher.max_cache))),
            (Ok(None), None) => Err(ProviderFailure::Registry(
                "CommitGrant answered no token after a refresh".into(),
            )),
            (Err(BrokerError::LeaseLost), _) => {
                tracing::warn!("a grant refresh lost its lease before it committed; asking again");
                Ok(None)
            }
            (Err(e), _) => Err(registry_failure(e)),
        }
    }
}

/// The grant key of a user token request.
pub(super) fn grant_key(
    identity: &crate::auth::Identity,
    connector_id: &str,
    user_id: &str,
    installation_id: &str,
) -> GrantKey {
    GrantKey {
        owner_id: identity.owner_id.clone(),
        project_id: identity.project_id.clone(),
        connector_id: connector_id.to_owned(),
        user_id: user_id.to_owned(),
        environment: identity.environment,
        installation_id: installation_id.to_owned(),
    }
}

/// HTTP Basic client authentication of a connector that has both client secrets.
pub(super) fn client_auth(
    id: Option<&SecretString>,
    secret: Option<&SecretString>,
) -> Option<String> {
    Some(basic_auth(id?, secret?))
}

/// What a token endpoint adds for OpenID Connect: the `id_token` naming the account that
/// signed in (OpenID Connect Core §3.1.3.3).
#[derive(Clone, serde::Deserialize, serde::Serialize)]
pub struct OpenIdFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

impl std::fmt::Debug for OpenIdFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenIdFields").finish_non_exhaustive()
    }
}

impl oauth2::ExtraTokenFields for OpenIdFields {}

/// The answer to a code exchange: the user's tokens and, from an OpenID provider, its
/// `id_token`.
#[derive(Debug)]
pub struct ExchangedCode {
    pub tokens: GrantTokens,
    pub id_token: Option<SecretString>,
}

/// The authorization code grant (RFC 6749 §4.1.3) with the PKCE verifier (RFC 7636): `code` for
/// the user's tokens at `token_url`, with the client's credentials.
pub async fn exchange_code(
    http: &reqwest::Client,
    token_url: &url::Url,
    (client_id, client_secret): (Option<&SecretString>, Option<&SecretString>),
    code: &str,
    redirect_uri: &str,
    code_verifier: &SecretString,
    asked: Vec<String>,
) -> Result<ExchangedCode> {
    let mut pairs = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", code_verifier.expose_secret()),
    ];
    // A public client names itself in the form; a confidential one authenticates.
    let basic = client_auth(client_id, client_secret);
    if basic.is_none()
        && let Some(id) = client_id
    {
        pairs.push(("client_id", id.expose_secret()));
    }
    let body = form(&pairs, &[]);
    let tokens: oauth2::StandardTokenResponse<OpenIdFields, oauth2::basic::BasicTokenType> =
        post_grant_as(http, token_url, body, basic, "authorization code")
            .await
            .map_err(|failure| failure.into_error("", ""))?;
    let granted: Vec<String> = tokens
        .scopes()
        .map(|s| {
            s.iter()
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let id_token = tokens
        .extra_fields()
        .id_token
        .as_ref()
        .map(|t| SecretString::from(t.clone()));
    let tokens = GrantTokens {
        access_token: SecretString::from(tokens.access_token().secret().to_owned()),
        refresh_token: tokens
            .refresh_token()
            .map(|t| SecretString::from(t.secret().to_owned())),
        expires_at: tokens
            .expires_in()
            .map(|d| d.min(super::provider::MAX_BELIEVED_LIFETIME))
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .and_then(|d| Utc::now().checked_add_signed(d)),
        scopes: if granted.is_empty() { asked } else { granted },
    };
    Ok(ExchangedCode { tokens, id_token })
}
