//! OIDC ID token verification, shared by the services that accept ID tokens: the token broker
//! (deployment tokens) and the link registry (operators' tokens). In the order of the design:
//! size cap, strict compact-JWS parse and header policy, typed claims ([`jws`]); the issuer on
//! the allow-list before any network request and its keys from the JWKS cache ([`jwks`]); then
//! signature, `iss`, `aud` and `exp` through `openidconnect`'s verifier over keys parsed once
//! ([`keys`]). What a service reads from the claims, and how it caches verified tokens, is the
//! service's.

pub mod jwks;
pub mod jws;
pub mod keys;

/// Why a token was not accepted. Each service maps these to its own errors (and reasons).
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Malformed, refused by the header policy, badly signed, or with wrong claims. The text is
    /// for logs; callers get a generic message.
    #[error("InvalidTokenError: {0}")]
    InvalidToken(String),
    #[error("TokenExpiredError: the token has expired")]
    TokenExpired,
    #[error("TokenNotYetValidError: the token is not valid yet")]
    TokenNotYetValid,
    #[error("IssuerNotTrustedError: {0}")]
    IssuerNotTrusted(String),
    #[error("JwksUnavailableError: the signing keys of the token's issuer could not be fetched")]
    JwksUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl OidcError {
    pub fn invalid_token(why: impl std::fmt::Display) -> Self {
        Self::InvalidToken(why.to_string())
    }
}

pub type Result<T, E = OidcError> = std::result::Result<T, E>;

/// A plain-text cause of a failed fetch.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Cause(pub String);
