//! The issuer boundary: how a connector of each type turns an authorization into a token. The
//! verification path never looks inside; a new provider type, installations, user subjects or a
//! refresh-token grant are new [`TokenIssuer`]s registered in [`Issuers`].

mod api_key;
mod oauth2;

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;

pub use self::{api_key::ApiKeyIssuer, oauth2::OAuth2ClientCredentialsIssuer};
use crate::{
    error::{BrokerError, Result},
    metrics::BrokerMetrics,
    outbound::Outbound,
    registry::Authorization,
};

/// On whose behalf a token is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    App,
    User(String),
    /// RFC 8693: the caller's token, to exchange for the provider's.
    Token(SubjectToken),
    /// RFC 7523: an assertion the broker signs, for this subject.
    JwtBearer(JwtBearer),
}

/// What a JWT bearer assertion says beyond what the broker sets itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtBearer {
    pub sub: String,
    pub iss: Option<String>,
    pub aud: Option<String>,
    pub additional_claims: std::collections::BTreeMap<String, String>,
}

/// RFC 8693's type of an OAuth access token: a subject token's type when the caller names none,
/// and the type every exchange asks for.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A subject token and its RFC 8693 type. `Debug` never shows the token.
#[derive(Clone)]
pub struct SubjectToken {
    pub token: SecretString,
    pub token_type: String,
}

impl std::fmt::Debug for SubjectToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectToken")
            .field("token_type", &self.token_type)
            .finish_non_exhaustive()
    }
}

impl PartialEq for SubjectToken {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret;
        self.token_type == other.token_type
            && self.token.expose_secret() == other.token.expose_secret()
    }
}

impl Eq for SubjectToken {}

/// Everything an issuer may use: the authorized connector and the caller's request.
#[derive(Debug)]
pub struct Grant<'a> {
    /// Who asks: provider credentials are never shared across (team, project, environment).
    pub identity: &'a crate::auth::Identity,
    pub authorization: &'a Authorization,
    pub subject: &'a Subject,
    pub installation_id: Option<&'a str>,
    pub scopes: &'a [String],
    /// How long the token must stay valid at least.
    pub min_ttl: std::time::Duration,
}

impl Grant<'_> {
    /// A secret the connector must have.
    pub fn secret(&self, name: &str) -> Result<&SecretString> {
        self.authorization.secrets.get(name).ok_or_else(|| {
            BrokerError::NoValidToken(format!("the connector has no '{name}' secret"))
        })
    }

    /// Refuses user subjects, for types that have no user grants.
    pub fn require_no_user(&self, kind: &str) -> Result<()> {
        if let Subject::User(_) = self.subject {
            return Err(BrokerError::UserAuthorizationRequired(format!(
                "{kind} connectors issue application tokens only; no user has authorized this connector"
            )));
        }
        Ok(())
    }

    /// Refuses user and token subjects and installations, for types that have none of them.
    pub fn require_app_without_installation(&self, kind: &str) -> Result<()> {
        self.require_no_user(kind)?;
        if let Subject::Token(_) = self.subject {
            return Err(BrokerError::invalid(
                "subject.token",
                format!("{kind} connectors do not exchange tokens"),
            ));
        }
        if let Subject::JwtBearer(_) = self.subject {
            return Err(BrokerError::invalid(
                "subject.jwt_bearer",
                format!("{kind} connectors do not take JWT bearer grants"),
            ));
        }
        if self.installation_id.is_some() {
            return Err(BrokerError::invalid(
                "installation_id",
                format!("{kind} connectors have no installations"),
            ));
        }
        Ok(())
    }
}

/// A provider credential.
#[derive(Clone)]
pub struct IssuedToken {
    pub token: SecretString,
    /// `None` when the credential does not expire.
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait TokenIssuer: Send + Sync + std::fmt::Debug {
    async fn issue(&self, grant: Grant<'_>) -> Result<IssuedToken>;
}

/// Issuers by connector type.
#[derive(Clone, Debug, Default)]
pub struct Issuers {
    by_type: HashMap<String, Arc<dyn TokenIssuer>>,
}

impl Issuers {
    /// `api-key` and `oauth2` (client credentials), with provider calls made through `outbound`
    /// and provider tokens cached at most `max_cache`.
    pub fn standard(outbound: Outbound, max_cache: Duration, metrics: BrokerMetrics) -> Self {
        let mut issuers = Self::default();
        issuers.register("api-key", Arc::new(ApiKeyIssuer));
        issuers.register(
            "oauth2",
            Arc::new(OAuth2ClientCredentialsIssuer::new(
                outbound, max_cache, metrics,
            )),
        );
        issuers
    }

    pub fn register(&mut self, connector_type: &str, issuer: Arc<dyn TokenIssuer>) {
        self.by_type.insert(connector_type.to_owned(), issuer);
    }

    pub async fn issue(&self, grant: Grant<'_>) -> Result<IssuedToken> {
        let kind = &grant.authorization.connector_type;
        let issuer = self.by_type.get(kind).ok_or_else(|| {
            BrokerError::NoValidToken(format!("connectors of type '{kind}' cannot issue tokens"))
        })?;
        issuer.issue(grant).await
    }
}
