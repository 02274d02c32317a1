//! Every `google.rpc.ErrorInfo.reason` Connect answers with, and the documented error name that
//! starts the message of each. Services map a reason to their gRPC code; clients map it back to a
//! typed error with [`Reason::parse`].

use std::fmt;

/// `ErrorInfo.domain` of every Connect error.
pub const ERROR_DOMAIN: &str = "connect";

macro_rules! reasons {
    ($($(#[$meta:meta])* $variant:ident = $reason:literal, $name:literal;)*) => {
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
    InvalidToken = "INVALID_TOKEN", "InvalidTokenError";
    TokenExpired = "TOKEN_EXPIRED", "TokenExpiredError";
    TokenNotYetValid = "TOKEN_NOT_YET_VALID", "TokenNotYetValidError";
    IssuerNotTrusted = "ISSUER_NOT_TRUSTED", "IssuerNotTrustedError";
    ConnectorNotFound = "CONNECTOR_NOT_FOUND", "ConnectorNotFoundError";
    TeamNotFound = "TEAM_NOT_FOUND", "TeamNotFoundError";
    ProjectNotFound = "PROJECT_NOT_FOUND", "ProjectNotFoundError";
    ProjectLinkNotFound = "PROJECT_LINK_NOT_FOUND", "ProjectLinkNotFoundError";
    KeyNotFound = "KEY_NOT_FOUND", "KeyNotFoundError";
    /// No such installation of the connector (or the provider does not know it).
    InstallationNotFound = "INSTALLATION_NOT_FOUND", "InstallationNotFoundError";
    ClientNotLinkedToProject = "CLIENT_NOT_LINKED_TO_PROJECT", "ClientNotLinkedToProjectError";
    ClientNotEnabledForEnvironment = "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT", "ClientNotEnabledForEnvironmentError";
    ScopeNotAllowed = "SCOPE_NOT_ALLOWED", "ScopeNotAllowedError";
    NoValidToken = "NO_VALID_TOKEN", "NoValidTokenError";
    ConnectorInstallationRequired = "CONNECTOR_INSTALLATION_REQUIRED", "ConnectorInstallationRequiredError";
    /// An admin suspended the connector: it issues nothing until resumed.
    ConnectorSuspended = "CONNECTOR_SUSPENDED", "ConnectorSuspendedError";
    UserAuthorizationRequired = "USER_AUTHORIZATION_REQUIRED", "UserAuthorizationRequiredError";
    InvalidArgument = "INVALID_ARGUMENT", "InvalidArgumentError";
    /// A connector's destination changed without its secrets being supplied again.
    SecretsRequired = "SECRETS_REQUIRED", "SecretsRequiredError";
    FailedPrecondition = "FAILED_PRECONDITION", "FailedPreconditionError";
    /// A broker's refresh lease on a user grant ran out or was superseded (broker ↔ registry).
    LeaseLost = "LEASE_LOST", "LeaseLostError";
    AlreadyExists = "ALREADY_EXISTS", "AlreadyExistsError";
    InvalidKey = "INVALID_KEY", "InvalidKeyError";
    RoleNotAllowed = "ROLE_NOT_ALLOWED", "RoleNotAllowedError";
    RegistryUnavailable = "REGISTRY_UNAVAILABLE", "RegistryUnavailableError";
    JwksUnavailable = "JWKS_UNAVAILABLE", "JwksUnavailableError";
    ProviderUnavailable = "PROVIDER_UNAVAILABLE", "ProviderUnavailableError";
    StorageUnavailable = "STORAGE_UNAVAILABLE", "StorageUnavailableError";
    Internal = "INTERNAL", "InternalError";
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
        assert_eq!(
            Reason::ClientNotEnabledForEnvironment.error_name(),
            "ClientNotEnabledForEnvironmentError"
        );
    }
}
