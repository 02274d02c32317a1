//! The registry's one error type. Every variant maps to exactly one gRPC code and
//! `ErrorInfo.reason` (see `grpc::status`); the `Display` text of the client-facing variants starts
//! with the documented error name, so a person reading it knows which error of the contract it is.

use std::fmt;

pub use connect_types::FieldViolation;

/// The kinds of rows a caller can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Team,
    Project,
    Connector,
    ProjectLink,
    Key,
    Installation,
    RoleBinding,
    Environment,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Team => "team",
            Self::Project => "project",
            Self::Connector => "connector",
            Self::ProjectLink => "project link",
            Self::Key => "key",
            Self::Installation => "installation",
            Self::RoleBinding => "role binding",
            Self::Environment => "environment",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("InvalidArgumentError: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),

    #[error("InvalidKeyError: missing, malformed or unknown API key")]
    InvalidKey,

    #[error("RoleNotAllowedError: a {role} key may not call this method")]
    RoleNotAllowed { role: &'static str },

    /// An operator's ID token that was not accepted.
    #[error(transparent)]
    OperatorToken(#[from] connect_oidc::OidcError),

    /// A person signed in whom no role binding admits (in the team they named).
    #[error("RoleNotAllowedError: no role binding admits this person{0}")]
    NotBound(String),

    /// A key presented to the service its role does not call (a broker key on the admin API, an
    /// admin key on the brokers' one).
    #[error("RoleNotAllowedError: a {role} key may not call {service}; {role} keys call {instead}")]
    WrongService {
        role: &'static str,
        service: &'static str,
        instead: &'static str,
    },

    #[error("{}NotFoundError: {resource} '{name}' not found", pascal(*.resource))]
    NotFound { resource: Resource, name: String },

    #[error("AlreadyExistsError: {resource} {what} already exists")]
    AlreadyExists { resource: Resource, what: String },

    #[error("FailedPreconditionError: {0}")]
    FailedPrecondition(String),

    /// A connector's destination (`*_url` config) changes, but its secrets are not supplied again.
    #[error(
        "SecretsRequiredError: changing {keys} of connector '{connector}' sends its secrets to a new destination: supply the secrets again in the same update"
    )]
    SecretsRequired { connector: String, keys: String },

    /// A connector's destination changes, but installations or user grants hold secrets sealed
    /// to it.
    #[error(
        "SecretsRequiredError: changing {keys} of connector '{connector}' would send {dependents} installation secrets or user grants to a new destination: remove those installations and revoke those grants first"
    )]
    DependentSecretsBound {
        connector: String,
        keys: String,
        dependents: u64,
    },

    /// No usable grant of the user: consent is needed (first, or again).
    #[error("UserAuthorizationRequiredError: {0}")]
    UserAuthorizationRequired(String),
    #[error("ConsentNotPendingError: {0}")]
    ConsentNotPending(String),
    #[error("ConsentUserMismatchError: {0}")]
    ConsentUserMismatch(String),
    #[error("ProviderAccountChangedError: {0}")]
    ProviderAccountChanged(String),

    /// A refresh lease that is no longer the grant's: another broker took over, or a new consent
    /// replaced the grant.
    #[error("LeaseLostError: the refresh lease of this grant is no longer held")]
    LeaseLost,

    #[error("IssuerNotTrustedError: the issuer is not the trusted issuer of team '{owner_id}'")]
    IssuerNotTrusted { owner_id: String },

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

    #[error(
        "LinkExpiredError: the link of connector '{connector}' to project '{project_id}' expired at {expired_at}"
    )]
    LinkExpired {
        connector: String,
        project_id: String,
        expired_at: String,
    },

    #[error("ConnectorSuspendedError: connector '{connector}' is suspended")]
    ConnectorSuspended { connector: String },

    /// The link's issuance quota for the last hour is used up.
    #[error(
        "QuotaExceededError: the link of connector '{connector}' to project '{project_id}' obtained its {quota} credentials of the last hour; cached ones are still handed out"
    )]
    QuotaExceeded {
        connector: String,
        project_id: String,
        quota: u32,
    },

    /// The database cannot be reached (retryable).
    #[error("StorageUnavailableError: the registry database cannot be reached")]
    StorageUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// A bug or an infrastructure failure. Logged with its cause; clients see a generic message.
    #[error("internal error: {context}")]
    Internal {
        context: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl RegistryError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn not_found(resource: Resource, name: impl fmt::Display) -> Self {
        Self::NotFound {
            resource,
            name: name.to_string(),
        }
    }

    pub fn internal(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Internal {
            context,
            source: source.into(),
        }
    }
}

fn pascal(resource: Resource) -> &'static str {
    match resource {
        Resource::Team => "Team",
        Resource::Project => "Project",
        Resource::Connector => "Connector",
        Resource::ProjectLink => "ProjectLink",
        Resource::Key => "Key",
        Resource::Installation => "Installation",
        Resource::RoleBinding => "RoleBinding",
        Resource::Environment => "Environment",
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_start_with_the_documented_error_name() {
        let e = RegistryError::not_found(Resource::Connector, "api-key/stripe");
        assert_eq!(
            e.to_string(),
            "ConnectorNotFoundError: connector 'api-key/stripe' not found"
        );
        let e = RegistryError::invalid("uid", "must not be empty");
        assert_eq!(
            e.to_string(),
            "InvalidArgumentError: uid: must not be empty"
        );
        assert!(
            RegistryError::ClientNotEnabledForEnvironment {
                connector: "c".into(),
                project_id: "p".into(),
                environment: "production".into()
            }
            .to_string()
            .starts_with("ClientNotEnabledForEnvironmentError")
        );
    }
}
