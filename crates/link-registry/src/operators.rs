//! People as callers: an operator's OIDC ID token presented as the bearer, verified with the same
//! code as the broker's deployment tokens (`connect-oidc`: size cap, strict parse and header
//! policy, the issuer on the allow-list before any fetch, the JWKS cache, signature, `iss`, `aud`,
//! `exp` through `openidconnect`), then `nbf` and `iat` with the leeway. What the person may do
//! comes from the registry's role bindings (the domain's `person_caller`).

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use connect_oidc::{
    OidcError,
    jwks::{Fetcher, JwksCache, JwksSettings},
    jws::{self, Audience},
};
use connect_runtime::outbound::{Outbound, OutboundSettings};
use connect_types::{IssuerUrl, UrlPolicy};
use openidconnect::{
    EmptyAdditionalClaims, IdToken, Nonce,
    core::{CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm},
};
use serde::Deserialize;

use crate::domain::model::Person;

type OperatorIdToken = IdToken<
    EmptyAdditionalClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// The claims the registry reads of an operator's ID token, each with its JSON type.
#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    iat: i64,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

/// Which operator issuers the registry trusts, and for which audiences.
#[derive(Clone, Debug)]
pub struct OperatorSettings {
    pub issuers: Vec<IssuerUrl>,
    /// The client ids people sign in with (the CLI's, the console's): `aud` must name one.
    pub audiences: Vec<String>,
    pub leeway: Duration,
    /// Which discovery and JWKS URLs may be fetched.
    pub policy: UrlPolicy,
    pub fetch_timeout: Duration,
}

/// Verifies operators' ID tokens.
#[derive(Debug, Clone)]
pub struct Operators {
    jwks: Arc<JwksCache>,
    leeway: i64,
}

impl Operators {
    pub fn new(settings: &OperatorSettings) -> Result<Self, reqwest::Error> {
        let outbound = Outbound::new(
            &OutboundSettings {
                policy: settings.policy.clone(),
                pinned: Default::default(),
            },
            settings.fetch_timeout,
        )?;
        let jwks = JwksCache::new(
            &settings.issuers,
            Fetcher {
                http: outbound.http().clone(),
                policy: outbound.policy().clone(),
                on_fetch: Arc::new(|ok| {
                    if !ok {
                        tracing::warn!("an operator issuer's keys could not be fetched");
                    }
                }),
            },
            JwksSettings {
                audiences: settings.audiences.clone(),
                leeway: settings.leeway,
                max_token_age: None,
                refresh_every: Duration::from_secs(300),
                max_stale: Duration::from_secs(3600),
                kid_refetch_cooldown: Duration::from_secs(30),
            },
        );
        Ok(Self {
            jwks: Arc::new(jwks),
            leeway: i64::try_from(settings.leeway.as_secs()).unwrap_or(i64::MAX),
        })
    }

    /// Keeps every issuer's keys fresh until the task is aborted.
    pub fn spawn_refresher(&self) -> tokio::task::JoinHandle<()> {
        self.jwks.clone().spawn_refresher()
    }

    /// Whether `bearer` looks like a token (three dot-separated parts) rather than an API key.
    pub fn looks_like_token(bearer: &str) -> bool {
        bearer.split('.').count() == 3
    }

    /// The person a valid ID token of a trusted operator issuer names.
    pub async fn verify(&self, raw: &str) -> Result<Person, OidcError> {
        let token = jws::parse::<Claims>(raw)?;
        let claims = &token.claims;
        if !self.jwks.is_trusted(&claims.iss) {
            return Err(OidcError::IssuerNotTrusted(
                "the token's issuer is not an operator issuer of this registry".into(),
            ));
        }
        let keys = self.jwks.key_set(&claims.iss, &token.header.kid).await?;
        let id_token: OperatorIdToken = raw
            .parse()
            .map_err(|e| OidcError::invalid_token(format!("token: {e}")))?;
        id_token
            .claims(&keys.verifier, |_: Option<&Nonce>| Ok(()))
            .map_err(|e| match e {
                openidconnect::ClaimsVerificationError::Expired(_) => OidcError::TokenExpired,
                other => OidcError::invalid_token(other),
            })?;
        if !self.jwks.accepts_audience(&claims.aud) {
            return Err(OidcError::invalid_token(
                "aud names none of this registry's operator audiences",
            ));
        }
        let now = Utc::now().timestamp();
        if claims.exp <= now.saturating_sub(self.leeway) {
            return Err(OidcError::TokenExpired);
        }
        if claims.nbf.unwrap_or(0) > now.saturating_add(self.leeway)
            || claims.iat > now.saturating_add(self.leeway)
        {
            return Err(OidcError::TokenNotYetValid);
        }
        if claims.sub.is_empty() || claims.sub.len() > 255 {
            return Err(OidcError::invalid_token("sub must be 1 to 255 bytes"));
        }
        let issuer = IssuerUrl::parse(&claims.iss)
            .map_err(|_| OidcError::invalid_token("iss is not an issuer URL"))?;
        Ok(Person {
            issuer,
            subject: claims.sub.clone(),
            email: claims
                .email
                .clone()
                .filter(|e| !e.is_empty() && e.len() <= 255 && !e.chars().any(char::is_control)),
            groups: claims.groups.clone(),
        })
    }
}
