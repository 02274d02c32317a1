//! The gRPC edge of `connect.broker.v1.TokenBroker`: take the bearer token and the caller's
//! deadline from the metadata, convert the request, make one call to the [`Broker`].

pub mod convert;
pub mod status;

use std::time::Duration;

use connect_proto::broker::v1::{self as pb, token_broker_server::TokenBroker};
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    auth::jws::MAX_TOKEN_BYTES,
    error::{BrokerError, Result},
    service::{Broker, TokenRequest},
};

#[derive(Debug, Clone)]
pub struct TokenBrokerService {
    broker: Broker,
}

impl TokenBrokerService {
    pub fn new(broker: Broker) -> Self {
        Self { broker }
    }
}

/// The token of exactly one `authorization: Bearer <token>` value, size-capped before anything
/// (the shared bearer rule).
pub fn bearer(metadata: &MetadataMap) -> Result<&str> {
    let values = metadata
        .get_all("authorization")
        .iter()
        .map(|v| v.as_bytes());
    connect_types::bearer_token(values, MAX_TOKEN_BYTES).map_err(BrokerError::invalid_token)
}

/// The caller's remaining time, from the `grpc-timeout` header.
pub fn caller_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl TokenBroker for TokenBrokerService {
    async fn get_token(
        &self,
        request: Request<pb::GetTokenRequest>,
    ) -> Result<Response<pb::GetTokenResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let token_request = TokenRequest::try_from(message);
        self.broker
            .get_token(bearer(&metadata), token_request, caller_timeout(&metadata))
            .await
            .map(|issued| Response::new(issued.into()))
            .map_err(status::to_status)
    }

    async fn start_authorization(
        &self,
        request: Request<pb::StartAuthorizationRequest>,
    ) -> Result<Response<pb::StartAuthorizationResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let start = crate::consent::StartRequest::try_from(message);
        self.broker
            .start_authorization(bearer(&metadata), start, caller_timeout(&metadata))
            .await
            .map(|started| {
                Response::new(pb::StartAuthorizationResponse {
                    url: started.url.to_string(),
                    request_id: started.request_id,
                    expires_at: Some(prost_types::Timestamp {
                        seconds: started.expires_at.timestamp(),
                        nanos: 0,
                    }),
                    redirect_uri: started.redirect_uri.to_string(),
                })
            })
            .map_err(status::to_status)
    }

    async fn finish_authorization(
        &self,
        request: Request<pb::FinishAuthorizationRequest>,
    ) -> Result<Response<pb::FinishAuthorizationResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let finish = crate::consent::FinishRequest::try_from(message);
        self.broker
            .finish_authorization(bearer(&metadata), finish)
            .await
            .map(|grant| {
                Response::new(pb::FinishAuthorizationResponse {
                    grant: Some(convert::grant(grant)),
                })
            })
            .map_err(status::to_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let t = |v: &str| {
            let mut m = MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            caller_timeout(&m)
        };
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("150m"), Some(Duration::from_millis(150)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("10x"), None);
        assert_eq!(t("S"), None);
    }

    #[test]
    fn bearer_needs_exactly_one_bounded_value() {
        let m = |values: &[&str]| {
            let mut m = MetadataMap::new();
            for v in values {
                m.append("authorization", v.parse().unwrap());
            }
            m
        };
        assert_eq!(bearer(&m(&["Bearer abc"])).unwrap(), "abc");
        assert!(bearer(&m(&[])).is_err());
        assert!(bearer(&m(&["Bearer a", "Bearer b"])).is_err());
        assert!(bearer(&m(&["Basic abc"])).is_err());
        assert!(bearer(&m(&["Bearer "])).is_err());
        let big = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(bearer(&m(&[big.as_str()])).is_err());
    }
}
