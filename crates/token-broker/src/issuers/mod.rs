//! The issuer boundary: how a connector of each type turns an authorization into a token. The
//! verification path never looks inside; a new provider type, installations, user subjects or a
//! refresh-token grant are new [`TokenIssuer`]s registered in [`Issuers`].

mod api_key;
mod cloud;
mod github;
mod oauth2;
mod provider;
mod user;

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use connect_types::{RowAsk, RowRefusal, SubjectKind, capabilities};
use secrecy::SecretString;

pub use self::{
    api_key::ApiKeyIssuer,
    cloud::{Cloud, CloudIssuer},
    github::GitHubAppIssuer,
    oauth2::OAuth2ClientCredentialsIssuer,
    provider::{RevokeWith, revoke_at, send},
    user::{ExchangedCode, UserGrants, exchange_code},
};
use crate::{
    auth::Identity,
    error::{BrokerError, Result},
    metrics::BrokerMetrics,
    outbound::Outbound,
    registry::{Authorization, InstallationGrant, RevokeScope},
};

/// HTTP Basic client authentication from a client id and secret (`None` when either is empty).
pub fn basic_auth_of(client_id: &str, client_secret: &str) -> Option<String> {
    if client_id.is_empty() || client_secret.is_empty() {
        return None;
    }
    Some(provider::basic_auth(
        &SecretString::from(client_id.to_owned()),
        &SecretString::from(client_secret.to_owned()),
    ))
}

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

impl Subject {
    pub fn kind(&self) -> SubjectKind {
        match self {
            Subject::App => SubjectKind::App,
            Subject::User(_) => SubjectKind::User,
            Subject::Token(_) => SubjectKind::Token,
            Subject::JwtBearer(_) => SubjectKind::JwtBearer,
        }
    }

    /// The subject as the ledger and revocations name it: `app`, `user:<id>`, `token`,
    /// `jwt_bearer:<sub>`.
    pub fn label(&self) -> String {
        match self {
            Subject::App => "app".to_owned(),
            Subject::User(id) => format!("user:{id}"),
            Subject::Token(_) => "token".to_owned(),
            Subject::JwtBearer(bearer) => format!("jwt_bearer:{}", bearer.sub),
        }
    }
}

/// Everything an issuer may use: the authorized connector and the caller's request.
#[derive(Debug)]
pub struct Grant<'a> {
    /// Who asks: provider credentials are never shared across (team, project, environment).
    pub identity: &'a Identity,
    pub authorization: &'a Authorization,
    pub subject: &'a Subject,
    pub scopes: &'a [String],
    pub resources: &'a [String],
    /// How long the token must stay valid at least.
    pub min_ttl: std::time::Duration,
}

impl Grant<'_> {
    /// The installation the token is for, if any.
    pub fn installation(&self) -> Option<&InstallationGrant> {
        self.authorization.installation.as_ref()
    }

    /// A secret the connector (or its installation, first) must have.
    pub fn secret(&self, name: &str) -> Result<&SecretString> {
        self.optional_secret(name).ok_or_else(|| {
            BrokerError::NoValidToken(format!("the connector has no '{name}' secret"))
        })
    }

    /// A secret of the installation, else of the connector.
    pub fn optional_secret(&self, name: &str) -> Option<&SecretString> {
        self.authorization.secret(name)
    }

    /// A config value of the installation, else of the connector.
    pub fn config(&self, name: &str) -> Option<&String> {
        self.authorization.setting(name)
    }

    /// Who the token is for, as cached copies are labelled for revocation.
    pub fn owner(&self) -> TokenOwner {
        TokenOwner {
            owner_id: self.identity.owner_id.to_string(),
            connector_id: self.authorization.connector_id.clone(),
            installation_id: self
                .installation()
                .map(|i| i.id.clone())
                .unwrap_or_default(),
            subject: self.subject.label(),
        }
    }
}

/// Whom a cached provider credential was issued for, so a revocation finds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenOwner {
    pub owner_id: String,
    pub connector_id: String,
    /// Empty when the token is for no installation.
    pub installation_id: String,
    /// [`Subject::label`].
    pub subject: String,
}

impl RevokeScope {
    pub fn covers(&self, owner: &TokenOwner) -> bool {
        owner.owner_id == self.owner_id
            && owner.connector_id == self.connector_id
            && self
                .installation_id
                .as_ref()
                .is_none_or(|i| *i == owner.installation_id)
            && self.subject.as_ref().is_none_or(|s| *s == owner.subject)
    }
}

/// What revoking one credential at its provider came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    Failed,
    /// The connector has no way to revoke at the provider; the copy was dropped.
    Skipped,
}

impl RevokeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// A provider credential.
#[derive(Clone)]
pub struct IssuedToken {
    pub token: SecretString,
    /// `None` when the credential does not expire.
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
    /// The parts of a credential with several (AWS's keys and session token); empty otherwise.
    pub credential: Credential,
}

/// A credential's named parts (`GetTokenResponse.credential`). `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct Credential(pub std::collections::BTreeMap<String, SecretString>);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait TokenIssuer: Send + Sync + std::fmt::Debug {
    /// Issues a token. The type's row of the capability table was applied before: the subject
    /// is one the type issues for, the installation and resources are as its rules allow.
    async fn issue(&self, grant: Grant<'_>) -> Result<IssuedToken>;

    /// Drops the cached credentials `scope` covers and revokes them at the provider where the
    /// type can; answers with each credential dropped and the outcome.
    async fn revoke(&self, _scope: &RevokeScope) -> Vec<(SecretString, RevokeOutcome)> {
        Vec::new()
    }

    /// Drops every cached credential (no provider call).
    fn forget_all(&self) {}

    /// Drops the cached credentials `scope` covers (no provider call).
    async fn forget(&self, _scope: &RevokeScope) {}
}

/// Issuers by connector type.
#[derive(Clone, Debug, Default)]
pub struct Issuers {
    by_type: HashMap<String, Arc<dyn TokenIssuer>>,
}

impl Issuers {
    /// `api-key`, `oauth2` (with users' grants from `users`), `github`, and `aws`, `gcp` and
    /// `azure` (minting with `minter`; none: this broker cannot), with provider calls made through
    /// `outbound` and provider tokens cached at most `max_cache`.
    pub fn standard(
        outbound: Outbound,
        max_cache: Duration,
        metrics: BrokerMetrics,
        users: UserGrants,
        minter: Option<crate::issuer::Minter>,
    ) -> Self {
        let mut issuers = Self::default();
        issuers.register("api-key", Arc::new(ApiKeyIssuer));
        issuers.register(
            "oauth2",
            Arc::new(
                OAuth2ClientCredentialsIssuer::new(outbound.clone(), max_cache, metrics.clone())
                    .with_user_grants(users),
            ),
        );
        issuers.register(
            "github",
            Arc::new(GitHubAppIssuer::new(
                outbound.clone(),
                max_cache,
                metrics.clone(),
            )),
        );
        for cloud in [Cloud::Aws, Cloud::Gcp, Cloud::Azure] {
            issuers.register(
                cloud.kind(),
                Arc::new(CloudIssuer::new(
                    cloud,
                    outbound.clone(),
                    max_cache,
                    metrics.clone(),
                    minter.clone(),
                )),
            );
        }
        issuers
    }

    /// Drops every issuer's cached credentials.
    pub fn forget_all(&self) {
        for issuer in self.by_type.values() {
            issuer.forget_all();
        }
    }

    /// Drops what every issuer holds of `scope`, without provider calls.
    pub async fn forget(&self, scope: &RevokeScope) {
        for issuer in self.by_type.values() {
            issuer.forget(scope).await;
        }
    }

    /// Revokes what every issuer holds of `scope`.
    pub async fn revoke(&self, scope: &RevokeScope) -> Vec<(SecretString, RevokeOutcome)> {
        let mut outcomes = Vec::new();
        for issuer in self.by_type.values() {
            outcomes.extend(issuer.revoke(scope).await);
        }
        outcomes
    }

    pub fn register(&mut self, connector_type: &str, issuer: Arc<dyn TokenIssuer>) {
        self.by_type.insert(connector_type.to_owned(), issuer);
    }

    /// Issues through the connector type's issuer, after the rules of its row in the capability
    /// table: installations, resources, subjects. `installation_asked` is the request's (`*` for
    /// every installation).
    pub async fn issue(
        &self,
        grant: Grant<'_>,
        installation_asked: Option<&str>,
    ) -> Result<IssuedToken> {
        let kind = &grant.authorization.connector_type;
        let (Some(issuer), Some(row)) = (self.by_type.get(kind), capabilities(kind)) else {
            return Err(BrokerError::NoValidToken(format!(
                "connectors of type '{kind}' cannot issue tokens"
            )));
        };
        let refusal = row.refusal(RowAsk {
            every_installation: installation_asked == Some("*"),
            has_installation: grant.installation().is_some(),
            resources: !grant.resources.is_empty(),
            subject: grant.subject.kind(),
        });
        if let Some(refusal) = refusal {
            return Err(match refusal {
                RowRefusal::EveryInstallation => BrokerError::invalid(
                    "installation_id",
                    format!(
                        "{kind} connectors issue tokens for one installation at a time, not `*`"
                    ),
                ),
                RowRefusal::InstallationRequired => {
                    BrokerError::ConnectorInstallationRequired(format!(
                        "connector '{}' issues tokens for an installation: pass installation_id, or set the connector's default_installation_id",
                        grant.authorization.connector_uid
                    ))
                }
                RowRefusal::Resources => BrokerError::invalid(
                    "resources",
                    format!("{kind} connectors cannot narrow tokens to resources"),
                ),
                RowRefusal::Subject(SubjectKind::User) => {
                    BrokerError::UserAuthorizationRequired(format!(
                        "{kind} connectors issue application tokens only; no user has authorized this connector"
                    ))
                }
                RowRefusal::Subject(SubjectKind::Token) => BrokerError::invalid(
                    "subject.token",
                    format!("{kind} connectors do not exchange tokens"),
                ),
                RowRefusal::Subject(SubjectKind::JwtBearer) => BrokerError::invalid(
                    "subject.jwt_bearer",
                    format!("{kind} connectors do not take JWT bearer grants"),
                ),
                RowRefusal::Subject(SubjectKind::App) => BrokerError::invalid(
                    "subject",
                    format!("{kind} connectors issue for users only: name one"),
                ),
            });
        }
        issuer.issue(grant).await
    }
}
