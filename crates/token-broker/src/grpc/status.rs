//! Every `BrokerError` → gRPC code, in one exhaustive `match`, with `ErrorInfo` carrying the
//! error's contract reason and `BadRequest` naming bad fields.

pub use connect_types::ERROR_DOMAIN;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::BrokerError;

/// The gRPC code of each error; its `ErrorInfo.reason` is [`BrokerError::reason`].
pub fn code(err: &BrokerError) -> Code {
    match err {
        BrokerError::InvalidToken(_) => Code::Unauthenticated,
        BrokerError::TokenExpired => Code::Unauthenticated,
        BrokerError::TokenNotYetValid => Code::Unauthenticated,
        BrokerError::IssuerNotTrusted(_) => Code::Unauthenticated,
        BrokerError::ConnectorNotFound(_) => Code::NotFound,
        BrokerError::ClientNotLinkedToProject { .. } => Code::PermissionDenied,
        BrokerError::ClientNotEnabledForEnvironment { .. } => Code::PermissionDenied,
        BrokerError::ScopeNotAllowed(_) => Code::PermissionDenied,
        BrokerError::NoValidToken(_) => Code::FailedPrecondition,
        BrokerError::ConnectorInstallationRequired(_) => Code::FailedPrecondition,
        BrokerError::ConnectorSuspended(_) => Code::FailedPrecondition,
        BrokerError::InstallationNotFound { .. } => Code::NotFound,
        BrokerError::UserAuthorizationRequired(_) => Code::FailedPrecondition,
        BrokerError::LeaseLost => Code::Aborted,
        BrokerError::FailedPrecondition(_) => Code::FailedPrecondition,
        BrokerError::InvalidArgument(_) => Code::InvalidArgument,
        BrokerError::RegistryUnavailable(_) => Code::Unavailable,
        BrokerError::JwksUnavailable(_) => Code::Unavailable,
        BrokerError::ProviderUnavailable(_) => Code::Unavailable,
        BrokerError::Internal { .. } => Code::Internal,
    }
}

pub fn to_status(err: BrokerError) -> Status {
    let (code, reason) = (code(&err), err.reason());
    let message = match &err {
        // Causes of internal errors are logged (see `service`), never sent.
        BrokerError::Internal { .. } => "InternalError: internal error".to_owned(),
        other => other.to_string(),
    };
    let mut details = ErrorDetails::new();
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, []);
    if let BrokerError::InvalidArgument(violations) = &err {
        for v in violations {
            details.add_bad_request_violation(&v.field, &v.description);
        }
    }
    Status::with_error_details(code, message, details)
}
