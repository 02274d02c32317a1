//! Every `BrokerError` → code and `ErrorInfo.reason`, in one exhaustive `match`; the decision log
//! uses the same reasons.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::BrokerError;

pub const ERROR_DOMAIN: &str = "connect";

pub fn code_and_reason(err: &BrokerError) -> (Code, &'static str) {
    match err {
        BrokerError::InvalidToken(_) => (Code::Unauthenticated, "INVALID_TOKEN"),
        BrokerError::TokenExpired => (Code::Unauthenticated, "TOKEN_EXPIRED"),
        BrokerError::TokenNotYetValid => (Code::Unauthenticated, "TOKEN_NOT_YET_VALID"),
        BrokerError::IssuerNotTrusted(_) => (Code::Unauthenticated, "ISSUER_NOT_TRUSTED"),
        BrokerError::ConnectorNotFound(_) => (Code::NotFound, "CONNECTOR_NOT_FOUND"),
        BrokerError::ClientNotLinkedToProject { .. } => {
            (Code::PermissionDenied, "CLIENT_NOT_LINKED_TO_PROJECT")
        }
        BrokerError::ClientNotEnabledForEnvironment { .. } => {
            (Code::PermissionDenied, "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT")
        }
        BrokerError::ScopeNotAllowed(_) => (Code::PermissionDenied, "SCOPE_NOT_ALLOWED"),
        BrokerError::NoValidToken(_) => (Code::FailedPrecondition, "NO_VALID_TOKEN"),
        BrokerError::ConnectorInstallationRequired(_) => {
            (Code::FailedPrecondition, "CONNECTOR_INSTALLATION_REQUIRED")
        }
        BrokerError::UserAuthorizationRequired(_) => {
            (Code::FailedPrecondition, "USER_AUTHORIZATION_REQUIRED")
        }
        BrokerError::InvalidArgument(_) => (Code::InvalidArgument, "INVALID_ARGUMENT"),
        BrokerError::RegistryUnavailable(_) => (Code::Unavailable, "REGISTRY_UNAVAILABLE"),
        BrokerError::JwksUnavailable(_) => (Code::Unavailable, "JWKS_UNAVAILABLE"),
        BrokerError::ProviderUnavailable(_) => (Code::Unavailable, "PROVIDER_UNAVAILABLE"),
        BrokerError::Internal { .. } => (Code::Internal, "INTERNAL"),
    }
}

pub fn to_status(err: BrokerError) -> Status {
    let (code, reason) = code_and_reason(&err);
    let message = match &err {
        // Causes of internal errors are logged (see `service`), never sent.
        BrokerError::Internal { .. } => "InternalError: internal error".to_owned(),
        other => other.to_string(),
    };
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, ERROR_DOMAIN, []);
    if let BrokerError::InvalidArgument(violations) = &err {
        for v in violations {
            details.add_bad_request_violation(&v.field, &v.description);
        }
    }
    Status::with_error_details(code, message, details)
}
