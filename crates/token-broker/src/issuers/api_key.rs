//! `api-key` connectors: the `api_key` secret (an installation's, else the connector's) is the
//! token, and it does not expire.

use async_trait::async_trait;

use super::{Grant, IssuedToken, TokenIssuer};
use crate::error::{BrokerError, Result};

#[derive(Debug)]
pub struct ApiKeyIssuer;

#[async_trait]
impl TokenIssuer for ApiKeyIssuer {
    async fn issue(&self, grant: Grant<'_>) -> Result<IssuedToken> {
        if !grant.scopes.is_empty() {
            return Err(BrokerError::invalid(
                "scopes",
                "api-key connectors have no scopes",
            ));
        }
        Ok(IssuedToken {
            token: grant.secret("api_key")?.clone(),
            expires_at: None,
            scopes: Vec::new(),
            credential: Default::default(),
        })
    }
}
