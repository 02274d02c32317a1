//! `api-key` connectors: the connector's `api_key` secret is the token, and it does not expire.

use async_trait::async_trait;

use super::{Grant, IssuedToken, TokenIssuer};
use crate::error::{BrokerError, Result};

#[derive(Debug)]
pub struct ApiKeyIssuer;

#[async_trait]
impl TokenIssuer for ApiKeyIssuer {
    async fn issue(&self, grant: Grant<'_>) -> Result<IssuedToken> {
        grant.require_app_without_installation("api-key")?;
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
        })
    }
}
