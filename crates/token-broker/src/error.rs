//! The broker's one error type. Each variant is one documented error of the contract; its
//! `Display` starts with the documented name, and `grpc::status` gives it its code and reason.
//! Messages name what was wrong, never the token or a secret.

use std::fmt;

use connect_types::Reason;

pub use connect_types::{FieldViolation, truncate};

/// Text a provider sent back (an OAuth `error`, a message) as callers, pages and logs see it: at
/// most 200 characters, control characters escaped.
pub fn provider_text(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    truncate(&escaped, 200)
}

type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("InvalidTokenError: {0}")]
    InvalidToken(String),

    #[error("TokenExpiredError: the token has expired")]
    TokenExpired,

    #[error("TokenNotYetValidError: the token is not valid yet")]
    TokenNotYetValid,

    #[error("IssuerNotTrustedError: {0}")]
    IssuerNotTrusted(String),

    #[error("ConnectorNotFoundError: connector '{0}' not found")]
    ConnectorNotFound(String),

    #[error(
        "ClientNotLinkedToProjectError: connector '{connector}' is not linked to project '{project_id}'"
    )]
    ClientNotLinkedToProject {
        connector: String,
        project_id: String,
    },

    #[error(
        "ClientNotEnabledForEnvironmentError: connector '{connector}' is linked to project '{project_id}' but not enabled for environment '{environment}'"
    )]
    ClientNotEnabledForEnvironment {
        connector: String,
        project_id: String,
        environment: String,
    },

    #[error("ScopeNotAllowedError: {0}")]
    ScopeNotAllowed(String),

    #[error("SubjectNotAllowedError: {0}")]
    SubjectNotAllowed(String),

    #[error(
        "LinkExpiredError: the link of connector '{connector}' to project '{project_id}' has expired"
    )]
    LinkExpired {
        connector: String,
        project_id: String,
    },

    #[error("NoValidTokenError: {0}")]
    NoValidToken(String),

    /// The link's issuance quota is used up (the registry counts across brokers).
    #[error("QuotaExceededError: {0}")]
    QuotaExceeded(String),
    /// The registry refused to record a credential as handed out: it was revoked, and this broker
    /// did not hear of it.
    #[error("NoValidTokenError: the credential was revoked; ask again for a new one")]
    CredentialRevoked,

    #[error("ConnectorInstallationRequiredError: {0}")]
    ConnectorInstallationRequired(String),

    #[error("ConnectorSuspendedError: connector '{0}' is suspended")]
    ConnectorSuspended(String),

    #[error(
        "InstallationNotFoundError: connector '{connector}' has no installation '{installation}'"
    )]
    InstallationNotFound {
        connector: String,
        installation: String,
    },

    #[error("UserAuthorizationRequiredError: {0}")]
    UserAuthorizationRequired(String),
    #[error("ConsentNotPendingError: {0}")]
    ConsentNotPending(String),
    #[error("ConsentUserMismatchError: {0}")]
    ConsentUserMismatch(String),
    #[error("ProviderAccountChangedError: {0}")]
    ProviderAccountChanged(String),

    /// Something the broker is not set up for (e.g. consents without a callback).
    #[error("FailedPreconditionError: {0}")]
    FailedPrecondition(String),

    /// The registry no longer holds this broker's refresh lease (never leaves the broker).
    #[error("LeaseLostError: the refresh lease of the grant was lost")]
    LeaseLost,

    #[error("InvalidArgumentError: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),

    #[error("RegistryUnavailableError: the link registry could not answer")]
    RegistryUnavailable(#[source] Source),

    #[error("JwksUnavailableError: the signing keys of the token's issuer could not be fetched")]
    JwksUnavailable(#[source] Source),

    #[error("ProviderUnavailableError: the provider's token endpoint could not answer")]
    ProviderUnavailable(#[source] Source),

    /// A bug. Logged with its cause; clients see a generic message.
    #[error("internal error: {context}")]
    Internal {
        context: &'static str,
        #[source]
        source: Source,
    },
}

impl BrokerError {
    /// The contract's `ErrorInfo.reason`, also the `reason` of the decision log.
    pub fn reason(&self) -> Reason {
        match self {
            Self::InvalidToken(_) => Reason::InvalidToken,
            Self::TokenExpired => Reason::TokenExpired,
            Self::TokenNotYetValid => Reason::TokenNotYetValid,
            Self::IssuerNotTrusted(_) => Reason::IssuerNotTrusted,
            Self::ConnectorNotFound(_) => Reason::ConnectorNotFound,
            Self::ClientNotLinkedToProject { .. } => Reason::ClientNotLinkedToProject,
            Self::ClientNotEnabledForEnvironment { .. } => Reason::ClientNotEnabledForEnvironment,
            Self::ScopeNotAllowed(_) => Reason::ScopeNotAllowed,
            Self::SubjectNotAllowed(_) => Reason::SubjectNotAllowed,
            Self::LinkExpired { .. } => Reason::LinkExpired,
            Self::NoValidToken(_) | Self::CredentialRevoked => Reason::NoValidToken,
            Self::QuotaExceeded(_) => Reason::QuotaExceeded,
            Self::ConnectorInstallationRequired(_) => Reason::ConnectorInstallationRequired,
            Self::ConnectorSuspended(_) => Reason::ConnectorSuspended,
            Self::InstallationNotFound { .. } => Reason::InstallationNotFound,
            Self::UserAuthorizationRequired(_) => Reason::UserAuthorizationRequired,
            Self::ConsentNotPending(_) => Reason::ConsentNotPending,
            Self::ConsentUserMismatch(_) => Reason::ConsentUserMismatch,
            Self::ProviderAccountChanged(_) => Reason::ProviderAccountChanged,
            Self::LeaseLost => Reason::LeaseLost,
            Self::FailedPrecondition(_) => Reason::FailedPrecondition,
            Self::InvalidArgument(_) => Reason::InvalidArgument,
            Self::RegistryUnavailable(_) => Reason::RegistryUnavailable,
            Self::JwksUnavailable(_) => Reason::JwksUnavailable,
            Self::ProviderUnavailable(_) => Reason::ProviderUnavailable,
            Self::Internal { .. } => Reason::Internal,
        }
    }

    /// The same error again, for one answer delivered to several callers: sources are kept as
    /// their text.
    pub fn duplicate(&self) -> Self {
        let text = |source: &Source| -> Source {
            Box::new(Cause(
                connect_runtime::ErrorChain(source.as_ref()).to_string(),
            ))
        };
        match self {
            Self::InvalidToken(s) => Self::InvalidToken(s.clone()),
            Self::TokenExpired => Self::TokenExpired,
            Self::TokenNotYetValid => Self::TokenNotYetValid,
            Self::IssuerNotTrusted(s) => Self::IssuerNotTrusted(s.clone()),
            Self::ConnectorNotFound(s) => Self::ConnectorNotFound(s.clone()),
            Self::ClientNotLinkedToProject {
                connector,
                project_id,
            } => Self::ClientNotLinkedToProject {
                connector: connector.clone(),
                project_id: project_id.clone(),
            },
            Self::ClientNotEnabledForEnvironment {
                connector,
                project_id,
                environment,
            } => Self::ClientNotEnabledForEnvironment {
                connector: connector.clone(),
                project_id: project_id.clone(),
                environment: environment.clone(),
            },
            Self::ScopeNotAllowed(s) => Self::ScopeNotAllowed(s.clone()),
            Self::SubjectNotAllowed(s) => Self::SubjectNotAllowed(s.clone()),
            Self::LinkExpired {
                connector,
                project_id,
            } => Self::LinkExpired {
                connector: connector.clone(),
                project_id: project_id.clone(),
            },
            Self::NoValidToken(s) => Self::NoValidToken(s.clone()),
            Self::QuotaExceeded(s) => Self::QuotaExceeded(s.clone()),
            Self::CredentialRevoked => Self::CredentialRevoked,
            Self::ConnectorInstallationRequired(s) => {
                Self::ConnectorInstallationRequired(s.clone())
            }
            Self::ConnectorSuspended(s) => Self::ConnectorSuspended(s.clone()),
            Self::InstallationNotFound {
                connector,
                installation,
            } => Self::InstallationNotFound {
                connector: connector.clone(),
                installation: installation.clone(),
            },
            Self::UserAuthorizationRequired(s) => Self::UserAuthorizationRequired(s.clone()),
            Self::ConsentNotPending(s) => Self::ConsentNotPending(s.clone()),
            Self::ConsentUserMismatch(s) => Self::ConsentUserMismatch(s.clone()),
            Self::ProviderAccountChanged(s) => Self::ProviderAccountChanged(s.clone()),
            Self::LeaseLost => Self::LeaseLost,
            Self::FailedPrecondition(s) => Self::FailedPrecondition(s.clone()),
            Self::InvalidArgument(v) => Self::InvalidArgument(v.clone()),
            Self::RegistryUnavailable(e) => Self::RegistryUnavailable(text(e)),
            Self::JwksUnavailable(e) => Self::JwksUnavailable(text(e)),
            Self::ProviderUnavailable(e) => Self::ProviderUnavailable(text(e)),
            Self::Internal { context, source } => Self::Internal {
                context,
                source: text(source),
            },
        }
    }

    pub fn invalid_token(detail: impl fmt::Display) -> Self {
        Self::InvalidToken(detail.to_string())
    }

    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn internal(context: &'static str, source: impl Into<Source>) -> Self {
        Self::Internal {
            context,
            source: source.into(),
        }
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A plain-text cause, for errors that have no error value of their own.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Cause(pub String);

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

impl From<connect_oidc::OidcError> for BrokerError {
    fn from(e: connect_oidc::OidcError) -> Self {
        use connect_oidc::OidcError as O;
        match e {
            O::InvalidToken(why) => Self::InvalidToken(why),
            O::TokenExpired => Self::TokenExpired,
            O::TokenNotYetValid => Self::TokenNotYetValid,
            O::IssuerNotTrusted(why) => Self::IssuerNotTrusted(why),
            O::JwksUnavailable(source) => Self::JwksUnavailable(source),
        }
    }
}

#[cfg(test)]
mod provider_text_tests {
    use super::provider_text;

    #[test]
    fn provider_text_is_cut_to_200_characters_with_control_characters_escaped() {
        assert_eq!(provider_text("invalid_client"), "invalid_client");
        assert_eq!(
            provider_text("bad\r\nX-Injected: 1\u{1b}[31m"),
            "bad\\r\\nX-Injected: 1\\u{1b}[31m"
        );
        let long = provider_text(&"é".repeat(500));
        assert_eq!(long.chars().count(), 201, "200 and the ellipsis");
    }
}
