//! Typed errors: one variant per reason of the contract, with the broker's message (which starts
//! with the documented error name), plus what can go wrong before or around the call.

use connect_types::Reason;
use tonic::Code;
use tonic_types::StatusExt;

macro_rules! errors {
    ($($variant:ident),* $(,)?) => {
        /// Why a token could not be had. Every reason of the contract is a variant carrying the
        /// broker's message; [`Error::reason`] gives the wire reason back.
        #[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
        #[non_exhaustive]
        pub enum Error {
            $(
                #[error("{0}")]
                $variant(String),
            )*
            /// No OIDC token to present: none of the configured sources has one.
            #[error("InvalidTokenError: no OIDC token: {0}")]
            MissingOidcToken(String),
            /// The broker could not be reached, or did not answer in time.
            #[error("BrokerUnavailableError: {0}")]
            Unavailable(String),
            /// The client's own configuration is unusable (URL, CA file).
            #[error("ConfigError: {0}")]
            Config(String),
            /// An answer without a reason of the contract (another server on that address?).
            #[error("UnexpectedError: {code:?}: {message}")]
            Unexpected { code: Code, message: String },
        }

        impl Error {
            /// The contract's reason, for errors that have one.
            pub fn reason(&self) -> Option<Reason> {
                match self {
                    $(Self::$variant(_) => Some(Reason::$variant),)*
                    Self::MissingOidcToken(_) => Some(Reason::InvalidToken),
                    Self::Unavailable(_) | Self::Config(_) | Self::Unexpected { .. } => None,
                }
            }

            fn with_reason(reason: Reason, message: String) -> Self {
                match reason {
                    $(Reason::$variant => Self::$variant(message),)*
                }
            }
        }
    };
}

errors! {
    InvalidToken,
    TokenExpired,
    TokenNotYetValid,
    IssuerNotTrusted,
    ConnectorNotFound,
    TeamNotFound,
    ProjectNotFound,
    ProjectLinkNotFound,
    KeyNotFound,
    RoleBindingNotFound,
    EnvironmentNotFound,
    InstallationNotFound,
    ClientNotLinkedToProject,
    ClientNotEnabledForEnvironment,
    ScopeNotAllowed,
    SubjectNotAllowed,
    LinkExpired,
    QuotaExceeded,
    NoValidToken,
    ConnectorInstallationRequired,
    ConnectorSuspended,
    UserAuthorizationRequired,
    ConsentNotPending,
    ConsentUserMismatch,
    ProviderAccountChanged,
    InvalidArgument,
    SecretsRequired,
    FailedPrecondition,
    LeaseLost,
    AlreadyExists,
    InvalidKey,
    RoleNotAllowed,
    RegistryUnavailable,
    JwksUnavailable,
    ProviderUnavailable,
    StorageUnavailable,
    Internal,
}

impl Error {
    /// The error a gRPC status stands for: its `ErrorInfo` reason (domain `connect`) when it has
    /// one; otherwise what its code says.
    pub fn from_status(status: &tonic::Status) -> Self {
        let reason = status
            .get_details_error_info()
            .filter(|info| info.domain == connect_types::ERROR_DOMAIN)
            .and_then(|info| Reason::parse(&info.reason));
        let message = status.message().to_owned();
        match (reason, status.code()) {
            (Some(reason), _) => Self::with_reason(reason, message),
            (None, Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled) => {
                Self::Unavailable(format!("{:?}: {message}", status.code()))
            }
            (None, code) => Self::Unexpected { code, message },
        }
    }

    /// Whether trying again later may succeed (the broker or one of its dependencies was out).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_)
                | Self::RegistryUnavailable(_)
                | Self::JwksUnavailable(_)
                | Self::ProviderUnavailable(_)
                | Self::StorageUnavailable(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_variant_and_comes_back() {
        for reason in Reason::ALL {
            let message = format!("{}: something", reason.error_name());
            let mut status = tonic::Status::with_error_details(
                Code::FailedPrecondition,
                message.clone(),
                tonic_types::ErrorDetails::with_error_info(
                    reason.as_str(),
                    connect_types::ERROR_DOMAIN,
                    std::collections::HashMap::new(),
                ),
            );
            let error = Error::from_status(&status);
            assert_eq!(error.reason(), Some(*reason), "{error:?}");
            assert_eq!(error.to_string(), message);
            // Another domain's reason is not ours.
            status = tonic::Status::with_error_details(
                Code::FailedPrecondition,
                message,
                tonic_types::ErrorDetails::with_error_info(
                    reason.as_str(),
                    "example.com",
                    std::collections::HashMap::new(),
                ),
            );
            assert!(matches!(
                Error::from_status(&status),
                Error::Unexpected {
                    code: Code::FailedPrecondition,
                    ..
                }
            ));
        }
        assert!(matches!(
            Error::from_status(&tonic::Status::unavailable("connection refused")),
            Error::Unavailable(_)
        ));
        assert!(Error::ProviderUnavailable(String::new()).is_transient());
        assert!(!Error::ClientNotLinkedToProject(String::new()).is_transient());
    }
}
