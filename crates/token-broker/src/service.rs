//! `GetToken`, end to end: verify the caller's token, ask the registry, issue, and log the
//! decision. The broker fails closed: only a yes from every step lets a token out.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::{
    auth::{Identity, TokenVerifier},
    authorizer::Authorizer,
    error::{BrokerError, Result},
    issuers::{Grant, Issuers, Subject},
};

/// A validated `GetToken` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// The connector's uid or id.
    pub connector: String,
    pub subject: Subject,
    pub installation_id: Option<String>,
    pub scopes: Vec<String>,
}

/// A token on its way out.
pub struct Issued {
    pub token: SecretString,
    pub token_id: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub connector_id: String,
    pub connector_uid: String,
    pub connector_type: String,
    pub installation_id: Option<String>,
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("token_id", &self.token_id)
            .field("connector_uid", &self.connector_uid)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct Broker {
    verifier: TokenVerifier,
    authorizer: Arc<dyn Authorizer>,
    issuers: Issuers,
}

/// The first 16 hex digits of a token's SHA-256: enough to match a token a user reports against
/// the log, useless for recovering it.
pub fn token_digest(token: &SecretString) -> String {
    hex::encode(&Sha256::digest(token.expose_secret().as_bytes())[..8])
}

impl Broker {
    pub fn new(verifier: TokenVerifier, authorizer: Arc<dyn Authorizer>, issuers: Issuers) -> Self {
        Self {
            verifier,
            authorizer,
            issuers,
        }
    }

    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    /// Answers one `GetToken` and writes its decision log event.
    pub async fn get_token(
        &self,
        bearer: Result<&str>,
        request: Result<TokenRequest>,
        caller_timeout: Option<Duration>,
    ) -> Result<Issued> {
        let mut identity = None;
        let result = self
            .decide(bearer, &request, caller_timeout, &mut identity)
            .await;
        let connector = request.as_ref().map(|r| r.connector.as_str()).unwrap_or("");
        let (owner_id, project_id, environment) = identity
            .as_ref()
            .map(|i: &Identity| {
                (
                    i.owner_id.as_str(),
                    i.project_id.as_str(),
                    i.environment.as_str(),
                )
            })
            .unwrap_or_default();
        match &result {
            Ok(issued) => tracing::info!(
                target: "connect::decision",
                decision = "allow",
                reason = "OK",
                connector,
                connector_id = %issued.connector_id,
                owner_id,
                project_id,
                environment,
                token_id = %issued.token_id,
                token_sha256 = %token_digest(&issued.token),
                "GetToken"
            ),
            Err(e) => tracing::info!(
                target: "connect::decision",
                decision = "deny",
                reason = e.reason().as_str(),
                connector,
                owner_id,
                project_id,
                environment,
                error = %e,
                "GetToken"
            ),
        }
        if let Err(
            e @ (BrokerError::Internal { .. }
            | BrokerError::RegistryUnavailable(_)
            | BrokerError::JwksUnavailable(_)
            | BrokerError::ProviderUnavailable(_)),
        ) = &result
        {
            tracing::warn!(error = %connect_runtime::ErrorChain(e), "GetToken failed on a dependency");
        }
        result
    }

    async fn decide(
        &self,
        bearer: Result<&str>,
        request: &Result<TokenRequest>,
        caller_timeout: Option<Duration>,
        identity_out: &mut Option<Identity>,
    ) -> Result<Issued> {
        let identity = self.verifier.verify(bearer?).await?;
        *identity_out = Some(identity.clone());
        let request = request.as_ref().map_err(clone_invalid)?;
        let authorization = self
            .authorizer
            .authorize(&identity, &request.connector, caller_timeout)
            .await?;
        let issued = self
            .issuers
            .issue(Grant {
                authorization: &authorization,
                subject: &request.subject,
                installation_id: request.installation_id.as_deref(),
                scopes: &request.scopes,
            })
            .await?;
        Ok(Issued {
            token: issued.token,
            token_id: format!("tok_{}", random_suffix()),
            expires_at: issued.expires_at,
            connector_id: authorization.connector_id.clone(),
            connector_uid: authorization.connector_uid.clone(),
            connector_type: authorization.connector_type.clone(),
            installation_id: request.installation_id.clone(),
            scopes: issued.scopes,
        })
    }
}

/// A request that failed validation fails the call, after authentication.
fn clone_invalid(err: &BrokerError) -> BrokerError {
    match err {
        BrokerError::InvalidArgument(v) => BrokerError::InvalidArgument(v.clone()),
        other => BrokerError::invalid("request", other.to_string()),
    }
}

fn random_suffix() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .map(|b| (b as char).to_ascii_lowercase())
        .take(24)
        .collect()
}
