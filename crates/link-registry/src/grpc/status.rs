//! Every `RegistryError` → `tonic::Status`, in one exhaustive `match`: adding a variant does not
//! compile until it has a code and a reason. Each status carries `google.rpc.ErrorInfo` (domain
//! `connect`), and invalid arguments carry `google.rpc.BadRequest` naming each field.

use connect_runtime::ErrorChain;
pub use connect_types::ERROR_DOMAIN;
use connect_types::Reason;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{RegistryError, Resource};

/// The contract reason of each error; its gRPC code is the reason's.
pub(crate) fn reason(err: &RegistryError) -> Reason {
    match err {
        RegistryError::InvalidArgument(_) => Reason::InvalidArgument,
        RegistryError::InvalidKey => Reason::InvalidKey,
        RegistryError::RoleNotAllowed { .. } | RegistryError::WrongService { .. } => {
            Reason::RoleNotAllowed
        }
        RegistryError::NotFound { resource, .. } => match resource {
            Resource::Team => Reason::TeamNotFound,
            Resource::Project => Reason::ProjectNotFound,
            Resource::Connector => Reason::ConnectorNotFound,
            Resource::ProjectLink => Reason::ProjectLinkNotFound,
            Resource::Key => Reason::KeyNotFound,
            Resource::Installation => Reason::InstallationNotFound,
            Resource::RoleBinding => Reason::RoleBindingNotFound,
            Resource::Environment => Reason::EnvironmentNotFound,
        },
        RegistryError::AlreadyExists { .. } => Reason::AlreadyExists,
        RegistryError::FailedPrecondition(_) => Reason::FailedPrecondition,
        RegistryError::UserAuthorizationRequired(_) => Reason::UserAuthorizationRequired,
        RegistryError::ConsentNotPending(_) => Reason::ConsentNotPending,
        RegistryError::ConsentUserMismatch(_) => Reason::ConsentUserMismatch,
        RegistryError::NotBound(_) => Reason::RoleNotAllowed,
        RegistryError::OperatorToken(e) => match e {
            connect_oidc::OidcError::InvalidToken(_) => Reason::InvalidToken,
            connect_oidc::OidcError::TokenExpired => Reason::TokenExpired,
            connect_oidc::OidcError::TokenNotYetValid => Reason::TokenNotYetValid,
            connect_oidc::OidcError::IssuerNotTrusted(_) => Reason::IssuerNotTrusted,
            connect_oidc::OidcError::JwksUnavailable(_) => Reason::JwksUnavailable,
        },
        RegistryError::ProviderAccountChanged(_) => Reason::ProviderAccountChanged,
        RegistryError::LeaseLost => Reason::LeaseLost,
        RegistryError::SecretsRequired { .. } | RegistryError::DependentSecretsBound { .. } => {
            Reason::SecretsRequired
        }
        RegistryError::IssuerNotTrusted { .. } => Reason::IssuerNotTrusted,
        RegistryError::ClientNotLinkedToProject { .. } => Reason::ClientNotLinkedToProject,
        RegistryError::ClientNotEnabledForEnvironment { .. } => {
            Reason::ClientNotEnabledForEnvironment
        }
        RegistryError::ConnectorSuspended { .. } => Reason::ConnectorSuspended,
        RegistryError::LinkExpired { .. } => Reason::LinkExpired,
        RegistryError::QuotaExceeded { .. } => Reason::QuotaExceeded,
        RegistryError::StorageUnavailable(_) => Reason::StorageUnavailable,
        RegistryError::Internal { .. } => Reason::Internal,
    }
}

pub fn to_status(err: RegistryError) -> Status {
    let reason = reason(&err);
    let message = match &err {
        RegistryError::StorageUnavailable(source) => {
            tracing::error!(error = %source, "registry database unavailable");
            err.to_string()
        }
        // Why a token is invalid is logged, not told to whoever presented it.
        RegistryError::OperatorToken(connect_oidc::OidcError::InvalidToken(why)) => {
            tracing::info!(reason = "INVALID_TOKEN", why = %why, "an operator token was refused");
            "InvalidTokenError: the token is not a valid operator ID token".to_owned()
        }
        // Causes of internal errors are logged, never sent.
        RegistryError::Internal { context, source } => {
            tracing::error!(context, error = %ErrorChain(source.as_ref()), "internal error");
            "InternalError: internal error".to_owned()
        }
        other => other.to_string(),
    };
    let mut details = ErrorDetails::new();
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, []);
    if let RegistryError::InvalidArgument(violations) = &err {
        for v in violations {
            details.add_bad_request_violation(&v.field, &v.description);
        }
    }
    Status::with_error_details(Code::from(reason.code() as i32), message, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_reach_clients_without_their_cause() {
        let status = to_status(RegistryError::internal(
            "database",
            "connection to 10.0.0.5 refused: password authentication failed",
        ));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("10.0.0.5"));
        assert_eq!(status.get_details_error_info().unwrap().reason, "INTERNAL");
    }

    #[test]
    fn invalid_arguments_name_their_fields() {
        let status = to_status(RegistryError::invalid("uid", "must not be empty"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("InvalidArgumentError"));
        let info = status.get_details_error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("INVALID_ARGUMENT", "connect")
        );
        let bad = status.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations[0].field, "uid");
    }
}
