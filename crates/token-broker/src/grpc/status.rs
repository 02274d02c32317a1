//! Every `BrokerError` → gRPC code, in one exhaustive `match`, with `ErrorInfo` carrying the
//! error's contract reason and `BadRequest` naming bad fields.

pub use connect_types::ERROR_DOMAIN;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::BrokerError;

/// The gRPC code of each error: its [`BrokerError::reason`]'s.
pub fn code(err: &BrokerError) -> Code {
    Code::from(err.reason().code() as i32)
}

/// What a caller is told of `err` (gRPC status message, the proxy's JSON `message`).
pub fn public_message(err: &BrokerError) -> String {
    match err {
        // Causes of internal errors are logged (see `service`), never sent.
        BrokerError::Internal { .. } => "InternalError: internal error".to_owned(),
        // Why a token was refused helps whoever forges one: the caller learns that it was, the
        // broker's log says why (the decision line's `error`).
        BrokerError::InvalidToken(_) => {
            "InvalidTokenError: the bearer token is not a valid deployment token for this broker (its log says why)".to_owned()
        }
        other => other.to_string(),
    }
}

pub fn to_status(err: BrokerError) -> Status {
    let (code, reason) = (code(&err), err.reason());
    let message = public_message(&err);
    let mut details = ErrorDetails::new();
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, []);
    if let BrokerError::InvalidArgument(violations) = &err {
        for v in violations {
            details.add_bad_request_violation(&v.field, &v.description);
        }
    }
    Status::with_error_details(code, message, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn why_a_token_was_refused_stays_in_the_log() {
        let status = to_status(BrokerError::invalid_token("alg is not one of RS256, ES256"));
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().starts_with("InvalidTokenError: "));
        assert!(!status.message().contains("alg"), "{}", status.message());
    }
}
