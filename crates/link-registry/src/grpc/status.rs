//! Every `RegistryError` → `tonic::Status`, in one exhaustive `match`: adding a variant does not
//! compile until it has a code and a reason. Each status carries `google.rpc.ErrorInfo` (domain
//! `connect`), and invalid arguments carry `google.rpc.BadRequest` naming each field.

use connect_runtime::ErrorChain;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{RegistryError, Resource};

/// `ErrorInfo.domain` of every Connect error.
pub const ERROR_DOMAIN: &str = "connect";

pub fn to_status(err: RegistryError) -> Status {
    let (code, reason) = match &err {
        RegistryError::InvalidArgument(_) => (Code::InvalidArgument, "INVALID_ARGUMENT"),
        RegistryError::InvalidKey => (Code::Unauthenticated, "INVALID_KEY"),
        RegistryError::RoleNotAllowed { .. } => (Code::PermissionDenied, "ROLE_NOT_ALLOWED"),
        RegistryError::NotFound { resource, .. } => (
            Code::NotFound,
            match resource {
                Resource::Team => "TEAM_NOT_FOUND",
                Resource::Project => "PROJECT_NOT_FOUND",
                Resource::Connector => "CONNECTOR_NOT_FOUND",
                Resource::ProjectLink => "PROJECT_LINK_NOT_FOUND",
            },
        ),
        RegistryError::AlreadyExists { .. } => (Code::AlreadyExists, "ALREADY_EXISTS"),
        RegistryError::FailedPrecondition(_) => (Code::FailedPrecondition, "FAILED_PRECONDITION"),
        RegistryError::IssuerNotTrusted { .. } => (Code::Unauthenticated, "ISSUER_NOT_TRUSTED"),
        RegistryError::ClientNotLinkedToProject { .. } => {
            (Code::PermissionDenied, "CLIENT_NOT_LINKED_TO_PROJECT")
        }
        RegistryError::ClientNotEnabledForEnvironment { .. } => {
            (Code::PermissionDenied, "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT")
        }
        RegistryError::StorageUnavailable(source) => {
            tracing::error!(error = %source, "registry database unavailable");
            (Code::Unavailable, "STORAGE_UNAVAILABLE")
        }
        RegistryError::Internal { context, source } => {
            tracing::error!(context, error = %ErrorChain(source.as_ref()), "internal error");
            let mut details = ErrorDetails::new();
            details.set_error_info("INTERNAL", ERROR_DOMAIN, []);
            return Status::with_error_details(
                Code::Internal,
                "InternalError: internal error",
                details,
            );
        }
    };
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, ERROR_DOMAIN, []);
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
