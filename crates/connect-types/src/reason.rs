//! Every `google.rpc.ErrorInfo.reason` Connect answers with, the documented error name that
//! starts the message of each, and the one gRPC code it always comes with. Services map their
//! errors to a reason and take the code from here; clients map a reason back to a typed error
//! with [`Reason::parse`]. Bad fields travel as [`FieldViolation`]s (`google.rpc.BadRequest`).

use std::fmt;

/// `ErrorInfo.domain` of every Connect error.
pub const ERROR_DOMAIN: &str = "connect";

/// The gRPC status codes Connect answers with, numbered as gRPC numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum GrpcCode {
    InvalidArgument = 3,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// A field that failed validation, for `google.rpc.BadRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

macro_rules! reasons {
    ($($(#[$meta:meta])* $variant:ident = $reason:literal, $name:literal, $code:ident;)*) => {
        /// An `ErrorInfo.reason` of the contract.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$meta])* $variant,)*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The wire form, e.g. `CLIENT_NOT_LINKED_TO_PROJECT`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $reason,)*
                }
            }

            /// The documented error name that starts the message, e.g.
            /// `ClientNotLinkedToProjectError`.
            pub fn error_name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// The gRPC code every error with this reason carries.
            pub fn code(self) -> GrpcCode {
                match self {
                    $(Self::$variant => GrpcCode::$code,)*
                }
            }

            /// The reason of a wire string, if it is one of ours.
            pub fn parse(value: &str) -> Option<Self> {
                match value {
                    $($reason => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    InvalidToken = "INVALID_TOKEN", "InvalidTokenError", Unauthenticated;
    TokenExpired = "TOKEN_EXPIRED", "TokenExpiredError", Unauthenticated;
    TokenNotYetValid = "TOKEN_NOT_YET_VALID", "TokenNotYetValidError", Unauthenticated;
    IssuerNotTrusted = "ISSUER_NOT_TRUSTED", "IssuerNotTrustedError", Unauthenticated;
    ConnectorNotFound = "CONNECTOR_NOT_FOUND", "ConnectorNotFoundError", NotFound;
    TeamNotFound = "TEAM_NOT_FOUND", "TeamNotFoundError", NotFound;
    ProjectNotFound = "PROJECT_NOT_FOUND", "ProjectNotFoundError", NotFound;
    ProjectLinkNotFound = "PROJECT_LINK_NOT_FOUND", "ProjectLinkNotFoundError", NotFound;
    KeyNotFound = "KEY_NOT_FOUND", "KeyNotFoundError", NotFound;
    /// No role binding with that id in the caller's team.
    RoleBindingNotFound = "ROLE_BINDING_NOT_FOUND", "RoleBindingNotFoundError", NotFound;
    /// No custom environment with that id or slug in the project.
    EnvironmentNotFound = "ENVIRONMENT_NOT_FOUND", "EnvironmentNotFoundError", NotFound;
    /// No such installation of the connector (or the provider does not know it).
    InstallationNotFound = "INSTALLATION_NOT_FOUND", "InstallationNotFoundError", NotFound;
    ClientNotLinkedToProject = "CLIENT_NOT_LINKED_TO_PROJECT", "ClientNotLinkedToProjectError", PermissionDenied;
    ClientNotEnabledForEnvironment = "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT", "ClientNotEnabledForEnvironmentError", PermissionDenied;
    ScopeNotAllowed = "SCOPE_NOT_ALLOWED", "ScopeNotAllowedError", PermissionDenied;
    /// A time-boxed link whose time ran out: it no longer authorizes.
    LinkExpired = "LINK_EXPIRED", "LinkExpiredError", PermissionDenied;
    /// A subject the connector does not allow callers to ask for (e.g. a JWT bearer `sub`
    /// outside its `jwt_bearer_subjects`).
    SubjectNotAllowed = "SUBJECT_NOT_ALLOWED", "SubjectNotAllowedError", PermissionDenied;
    /// A link's `max_issuances_per_hour` is used up: no new credential for it this hour.
    QuotaExceeded = "QUOTA_EXCEEDED", "QuotaExceededError", ResourceExhausted;
    NoValidToken = "NO_VALID_TOKEN", "NoValidTokenError", FailedPrecondition;
    ConnectorInstallationRequired = "CONNECTOR_INSTALLATION_REQUIRED", "ConnectorInstallationRequiredError", FailedPrecondition;
    /// An admin suspended the connector: it issues nothing until resumed.
    ConnectorSuspended = "CONNECTOR_SUSPENDED", "ConnectorSuspendedError", FailedPrecondition;
    UserAuthorizationRequired = "USER_AUTHORIZATION_REQUIRED", "UserAuthorizationRequiredError", FailedPrecondition;
    /// `FinishAuthorization` for a consent that is unknown, expired, already finished, or was
    /// started by another deployment.
    ConsentNotPending = "CONSENT_NOT_PENDING", "ConsentNotPendingError", FailedPrecondition;
    /// `FinishAuthorization` as another user than the one who started the consent: its tokens
    /// are discarded.
    ConsentUserMismatch = "CONSENT_USER_MISMATCH", "ConsentUserMismatchError", PermissionDenied;
    /// `FinishAuthorization` of a consent that signed in as another provider account than the
    /// user's grant acts as, without `confirm_provider_subject`: the consent stays held.
    ProviderAccountChanged = "PROVIDER_ACCOUNT_CHANGED", "ProviderAccountChangedError", FailedPrecondition;
    InvalidArgument = "INVALID_ARGUMENT", "InvalidArgumentError", InvalidArgument;
    /// A connector's destination changed without its secrets being supplied again.
    SecretsRequired = "SECRETS_REQUIRED", "SecretsRequiredError", FailedPrecondition;
    FailedPrecondition = "FAILED_PRECONDITION", "FailedPreconditionError", FailedPrecondition;
    /// A broker's refresh lease on a user grant ran out or was superseded (broker ↔ registry).
    LeaseLost = "LEASE_LOST", "LeaseLostError", Aborted;
    AlreadyExists = "ALREADY_EXISTS", "AlreadyExistsError", AlreadyExists;
    InvalidKey = "INVALID_KEY", "InvalidKeyError", Unauthenticated;
    RoleNotAllowed = "ROLE_NOT_ALLOWED", "RoleNotAllowedError", PermissionDenied;
    RegistryUnavailable = "REGISTRY_UNAVAILABLE", "RegistryUnavailableError", Unavailable;
    JwksUnavailable = "JWKS_UNAVAILABLE", "JwksUnavailableError", Unavailable;
    ProviderUnavailable = "PROVIDER_UNAVAILABLE", "ProviderUnavailableError", Unavailable;
    StorageUnavailable = "STORAGE_UNAVAILABLE", "StorageUnavailableError", Unavailable;
    Internal = "INTERNAL", "InternalError", Internal;
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_and_names_an_error() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(*reason));
            assert!(reason.error_name().ends_with("Error"), "{reason}");
            assert_eq!(
                reason.as_str(),
                reason.as_str().to_ascii_uppercase(),
                "wire reasons are upper case"
            );
        }
        assert_eq!(Reason::parse("SOMETHING_ELSE"), None);
        // The contract's table of codes.
        assert_eq!(
            Reason::ClientNotLinkedToProject.code(),
            GrpcCode::PermissionDenied
        );
        assert_eq!(Reason::InvalidToken.code(), GrpcCode::Unauthenticated);
        assert_eq!(Reason::ConnectorNotFound.code(), GrpcCode::NotFound);
        assert_eq!(Reason::NoValidToken.code(), GrpcCode::FailedPrecondition);
        assert_eq!(Reason::RegistryUnavailable.code(), GrpcCode::Unavailable);
        assert_eq!(Reason::InvalidKey.code(), GrpcCode::Unauthenticated);
        assert_eq!(Reason::RoleNotAllowed.code(), GrpcCode::PermissionDenied);
        assert_eq!(Reason::AlreadyExists.code(), GrpcCode::AlreadyExists);
        assert_eq!(GrpcCode::Unauthenticated as i32, 16);
        assert_eq!(
            Reason::ClientNotEnabledForEnvironment.error_name(),
            "ClientNotEnabledForEnvironmentError"
        );
    }
}
