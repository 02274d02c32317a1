//! Every `RegistryError` → `tonic::Status`, in one exhaustive `match`: adding a variant does not
//! compile until it has a code and a reason. Each status carries `google.rpc.ErrorInfo` (domain
//! `connect`), and invalid arguments carry `google.rpc.BadRequest` naming each field.

use connect_runtime::ErrorChain;
pub use connect_types::ERROR_DOMAIN;
use connect_types::Reason;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{RegistryError, Resource};

pub fn to_status(err: RegistryError) -> Status {
    let (code, reason) = match &err {
        RegistryError::InvalidArgument(_) => (Code::InvalidArgument, Reason::InvalidArgument),
        RegistryError::InvalidKey => (Code::Unauthenticated, Reason::InvalidKey),
        RegistryError::RoleNotAllowed { .. } | RegistryError::WrongService { .. } => {
            (Code::PermissionDenied, Reason::RoleNotAllowed)
        }
        RegistryError::NotFound { resource, .. } => (
            Code::NotFound,
            match resource {
                Resource::Team => Reason::TeamNotFound,
                Resource::Project => Reason::ProjectNotFound,
                Resource::Connector => Reason::ConnectorNotFound,
                Resource::ProjectLink => Reason::ProjectLinkNotFound,
                Resource::Key => Reason::KeyNotFound,
                Resource::Installation => Reason::InstallationNotFound,
            },
        ),
        RegistryError::AlreadyExists { .. } => (Code::AlreadyExists, Reason::AlreadyExists),
        RegistryError::FailedPrecondition(_) => {
            (Code::FailedPrecondition, Reason::FailedPrecondition)
        }
        RegistryError::UserAuthorizationRequired(_) => {
            (Code::FailedPrecondition, Reason::UserAuthorizationRequired)
        }
        RegistryError::LeaseLost => (Code::Aborted, Reason::LeaseLost),
        RegistryError::SecretsRequired { .. } | RegistryError::DependentSecretsBound { .. } => {
            (Code::FailedPrecondition, Reason::SecretsRequired)
        }
        RegistryError::IssuerNotTrusted { .. } => (Code::Unauthenticated, Reason::IssuerNotTrusted),
        RegistryError::ClientNotLinkedToProject { .. } => {
            (Code::PermissionDenied, Reason::ClientNotLinkedToProject)
        }
        RegistryError::ClientNotEnabledForEnvironment { .. } => (
            Code::PermissionDenied,
            Reason::ClientNotEnabledForEnvironment,
        ),
        RegistryError::ConnectorSuspended { .. } => {
            (Code::FailedPrecondition, Reason::ConnectorSuspended)
        }
        RegistryError::StorageUnavailable(source) => {
            tracing::error!(error = %source, "registry database unavailable");
            (Code::Unavailable, Reason::StorageUnavailable)
        }
        RegistryError::Internal { context, source } => {
            tracing::error!(context, error = %ErrorChain(source.as_ref()), "internal error");
            let mut details = ErrorDetails::new();
            details.set_error_info(Reason::Internal.as_str(), ERROR_DOMAIN, []);
            return Status::with_error_details(
                Code::Internal,
                "InternalError: internal error",
                details,
            );
        }
    };
    let mut details = ErrorDetails::new();
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, []);
    if let RegistryError::InvalidArgument(violations) = &err {
        for v in violations {
            details.add_bad_request_violation(&v.field, &v.description);
        }
    }
    Status::with_error_details(code, err.to_string(), details)
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
