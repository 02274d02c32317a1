//! OIDC verification of deployment tokens, in the order of the design: size cap and strict
//! compact-JWS parse, header policy and typed claims ([`jws`]), `iss` on the allow-list (before
//! any network request), the key from the JWKS cache ([`jwks`]), then signature, `iss`, `aud` and
//! `exp` through `openidconnect`'s verifier over keys parsed once ([`keys`]), then `nbf`/`iat`
//! and the identity claims. Any "no" stops it. The first three are `connect-oidc`'s, shared with
//! the registry; the deployment's claims and the cache of verified tokens are the broker's.

pub use connect_oidc::{jwks, jws, keys};

use std::sync::Arc;
use tracing::Instrument;

use chrono::Utc;
use openidconnect::{
    ClaimsVerificationError, EmptyAdditionalClaims, IdToken, Nonce,
    core::{CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm},
};

use connect_types::{Environment, IssuerUrl, ProjectId, TeamId};

use sha2::Digest;

use self::jwks::JwksCache;
use crate::error::{BrokerError, Result};

/// The claims of a Vercel-style deployment token, each with its JSON type.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: jws::Audience,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub owner_id: String,
    pub project_id: String,
    pub environment: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
}

type DeploymentIdToken = IdToken<
    EmptyAdditionalClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// Who is calling, as a verified token says, in the contract's types. Verification hands it out
/// behind an `Arc`, so that the caches keyed by it hold one copy per caller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub issuer: IssuerUrl,
    pub owner_id: TeamId,
    pub project_id: ProjectId,
    pub environment: Environment,
}

/// Verifies deployment tokens against the trusted issuers.
///
/// The identities of tokens verified before are kept by the SHA-256 of the exact token (bounded
/// in number, and at most [`VERIFIED_TTL`] each), so a deployment calling with the same token
/// pays for its signature once. A kept identity is used only while its token's time checks still
/// pass and its signing key is still among the issuer's keys: a key that leaves the JWKS takes
/// its tokens with it at the next refresh.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    jwks: Arc<JwksCache>,
    verified: Option<Arc<quick_cache::sync::Cache<[u8; 32], Arc<Verified>>>>,
}

/// Longest time a verified token's identity is kept.
pub const VERIFIED_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// What is kept of a verified token.
#[derive(Debug)]
pub struct Verified {
    identity: Arc<Identity>,
    verified_at: std::time::Instant,
    kid: String,
    exp: i64,
    nbf: i64,
    iat: i64,
}

impl TokenVerifier {
    /// A verifier keeping at most `cache_size` verified tokens (0: none).
    pub fn new(jwks: Arc<JwksCache>, cache_size: u64) -> Self {
        let verified = (cache_size > 0).then(|| Arc::new(crate::cache::bounded(cache_size)));
        Self { jwks, verified }
    }

    /// The time checks of the design, with the configured leeway and maximum age.
    fn check_times(&self, exp: i64, nbf: i64, iat: i64) -> Result<()> {
        let now = Utc::now().timestamp();
        let leeway = i64::try_from(self.jwks.settings().leeway.as_secs()).unwrap_or(i64::MAX);
        if exp <= now.saturating_sub(leeway) {
            return Err(BrokerError::TokenExpired);
        }
        if nbf > now.saturating_add(leeway) || iat > now.saturating_add(leeway) {
            return Err(BrokerError::TokenNotYetValid);
        }
        if let Some(max_age) = self.jwks.settings().max_token_age {
            let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
            if iat < now.saturating_sub(max_age).saturating_sub(leeway) {
                return Err(BrokerError::TokenExpired);
            }
        }
        Ok(())
    }

    pub async fn verify(&self, raw: &str) -> Result<Arc<Identity>> {
        let Some(cache) = &self.verified else {
            return self
                .verify_fully(raw)
                .instrument(tracing::debug_span!("verify_signature"))
                .await
                .map(|v| v.identity);
        };
        let digest: [u8; 32] = sha2::Sha256::digest(raw.as_bytes()).into();
        if let Some(known) = cache.get(&digest) {
            if known.verified_at.elapsed() < VERIFIED_TTL
                && self
                    .jwks
                    .still_knows(known.identity.issuer.as_str(), &known.kid)
            {
                self.check_times(known.exp, known.nbf, known.iat)?;
                return Ok(known.identity.clone());
            }
            cache.remove(&digest);
        }
        let verified = Arc::new(
            self.verify_fully(raw)
                .instrument(tracing::debug_span!("verify_signature"))
                .await?,
        );
        cache.insert(digest, verified.clone());
        Ok(verified.identity.clone())
    }

    pub fn jwks(&self) -> &Arc<JwksCache> {
        &self.jwks
    }

    async fn verify_fully(&self, raw: &str) -> Result<Verified> {
        let token = jws::parse::<Claims>(raw)?;
        let claims = &token.claims;
        if !self.jwks.is_trusted(&claims.iss) {
            return Err(BrokerError::IssuerNotTrusted(
                "the token's issuer is not trusted by this broker".into(),
            ));
        }
        let keys = self.jwks.key_set(&claims.iss, &token.header.kid).await?;

        let id_token: DeploymentIdToken = raw
            .parse()
            .map_err(|e| BrokerError::invalid_token(format!("token: {e}")))?;
        id_token
            .claims(&keys.verifier, |_: Option<&Nonce>| Ok(()))
            .map_err(claims_error)?;

        self.check_times(claims.exp, claims.nbf, claims.iat)?;
        let environment = Environment::parse(&claims.environment).map_err(|_| {
            BrokerError::invalid_token(
                "environment claim is not production, preview or development",
            )
        })?;
        let (Ok(owner_id), Ok(project_id)) = (
            TeamId::parse(&claims.owner_id),
            ProjectId::parse(&claims.project_id),
        ) else {
            return Err(BrokerError::invalid_token(
                "owner_id and project_id claims must be 1 to 64 of A-Z, a-z, 0-9, '_', '-'",
            ));
        };
        let issuer = IssuerUrl::parse(&claims.iss)
            .map_err(|_| BrokerError::invalid_token("iss is not an issuer URL"))?;
        // `sub` is `owner:<team>:project:<name>:environment:<env>`: it must agree with the claim.
        if let Some((_, env)) = claims.sub.rsplit_once(":environment:")
            && env != claims.environment
        {
            return Err(BrokerError::invalid_token(
                "sub names another environment than the environment claim",
            ));
        }
        Ok(Verified {
            identity: Arc::new(Identity {
                issuer,
                owner_id,
                project_id,
                environment,
            }),
            verified_at: std::time::Instant::now(),
            kid: token.header.kid.clone(),
            exp: claims.exp,
            nbf: claims.nbf,
            iat: claims.iat,
        })
    }
}

fn claims_error(err: ClaimsVerificationError) -> BrokerError {
    match err {
        ClaimsVerificationError::Expired(_) => BrokerError::TokenExpired,
        ClaimsVerificationError::InvalidAudience(_) => {
            BrokerError::invalid_token("aud does not name this broker's audience")
        }
        ClaimsVerificationError::InvalidIssuer(_) => {
            BrokerError::invalid_token("iss does not match the issuer's keys")
        }
        ClaimsVerificationError::SignatureVerification(e) => {
            BrokerError::invalid_token(format!("signature: {e}"))
        }
        other => BrokerError::invalid_token(other),
    }
}
