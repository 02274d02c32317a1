//! `GetToken`, end to end: verify the caller's token, ask the registry, issue, and record the
//! decision (one log event and the metrics, in [`Broker::record`]). The broker fails closed: only a
//! yes from every step lets a token out.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::{
    auth::{Identity, TokenVerifier},
    consent::{Consents, StartRequest, Started},
    error::{BrokerError, Result},
    issuers::{Grant, Issuers, Subject},
    ledger::{HandOut, Ledger},
    metrics::BrokerMetrics,
    registry::Authorizer,
};

/// A validated `GetToken` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// The connector's uid or id.
    pub connector: String,
    pub subject: Subject,
    /// As asked: `None` for the connector's default, `*` for every installation.
    pub installation_id: Option<String>,
    pub scopes: Vec<String>,
    /// What to narrow the token to, where the type can (GitHub repositories).
    pub resources: Vec<String>,
    /// The token must stay valid at least this long.
    pub min_ttl: Option<Duration>,
}

/// A token on its way out.
pub struct Issued {
    pub token: SecretString,
    pub token_id: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub installation_id: Option<String>,
    pub scopes: Vec<String>,
    pub credential: crate::issuers::Credential,
    /// The registry's answer it was issued under: the connector (id, uid, type, config).
    pub authorization: Arc<crate::registry::Authorization>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("token_id", &self.token_id)
            .field("connector_uid", &self.authorization.connector_uid)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct Broker {
    verifier: TokenVerifier,
    authorizer: Arc<dyn Authorizer>,
    issuers: Issuers,
    ledger: Arc<Ledger>,
    metrics: BrokerMetrics,
    /// Users' consents; `None` when the callback is not served.
    consents: Option<Arc<Consents>>,
}

impl Broker {
    pub fn new(
        verifier: TokenVerifier,
        authorizer: Arc<dyn Authorizer>,
        issuers: Issuers,
        ledger: Arc<Ledger>,
        metrics: BrokerMetrics,
    ) -> Self {
        Self {
            verifier,
            authorizer,
            issuers,
            ledger,
            metrics,
            consents: None,
        }
    }

    /// The same broker, starting users' consents through `consents`.
    pub fn with_consents(mut self, consents: Arc<Consents>) -> Self {
        self.consents = Some(consents);
        self
    }

    pub fn authorizer(&self) -> &Arc<dyn Authorizer> {
        &self.authorizer
    }

    /// Answers one `StartAuthorization`: verified and authorized like `GetToken`.
    pub async fn start_authorization(
        &self,
        bearer: Result<&str>,
        request: Result<StartRequest>,
        caller_timeout: Option<Duration>,
    ) -> Result<Started> {
        let identity = self.verified(bearer, "StartAuthorization").await?;
        let request = request?;
        let Some(consents) = &self.consents else {
            return Err(BrokerError::FailedPrecondition(
                "this broker serves no consent callback (--callback-listen)".into(),
            ));
        };
        let result = consents.start(&identity, request, caller_timeout).await;
        if let Err(e) = &result {
            tracing::info!(target: "connect::decision", decision = "deny", reason = e.reason().as_str(),
                owner_id = %identity.owner_id, project_id = %identity.project_id,
                environment = %identity.environment, error = %e, "StartAuthorization");
        }
        result
    }

    /// Answers one `FinishAuthorization`: the caller verified like `GetToken`; the registry
    /// decides whether it is the deployment and user that started the consent.
    pub async fn finish_authorization(
        &self,
        bearer: Result<&str>,
        request: Result<crate::consent::FinishRequest>,
    ) -> Result<crate::registry::StoredGrant> {
        let identity = self.verified(bearer, "FinishAuthorization").await?;
        let request = request?;
        let Some(consents) = &self.consents else {
            return Err(BrokerError::FailedPrecondition(
                "this broker serves no consent callback (--callback-listen)".into(),
            ));
        };
        let result = consents.finish(&identity, request).await;
        if let Ok(stored) = &result {
            // What this broker cached of the user's access token may be the grant this consent
            // replaced: the next call takes the new one (other brokers hear it from the feed).
            self.issuers
                .forget(&crate::registry::RevokeScope {
                    owner_id: stored.key.owner_id.to_string(),
                    connector_id: stored.key.connector_id.clone(),
                    installation_id: Some(stored.key.installation_id.clone()),
                    subject: Some(format!("user:{}", stored.key.user_id)),
                })
                .await;
        }
        if let Err(e) = &result {
            tracing::info!(target: "connect::decision", decision = "deny", reason = e.reason().as_str(),
                owner_id = %identity.owner_id, project_id = %identity.project_id,
                environment = %identity.environment, error = %e, "FinishAuthorization");
        }
        result
    }

    /// The caller's identity; a refusal is logged with its reason (callers get a generic one).
    async fn verified(&self, bearer: Result<&str>, rpc: &'static str) -> Result<Arc<Identity>> {
        let verified = match bearer {
            Ok(bearer) => self.verifier.verify(bearer).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &verified {
            tracing::info!(target: "connect::decision", decision = "deny",
                reason = e.reason().as_str(), error = %e, "{rpc}");
        }
        verified
    }

    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn metrics(&self) -> &BrokerMetrics {
        &self.metrics
    }

    pub fn issuers(&self) -> &Issuers {
        &self.issuers
    }

    /// Answers one `GetToken` and records its decision.
    pub async fn get_token(
        &self,
        bearer: Result<&str>,
        request: Result<TokenRequest>,
        caller_timeout: Option<Duration>,
    ) -> Result<Issued> {
        let started = Instant::now();
        let verified = match bearer {
            Ok(bearer) => self.verifier.verify(bearer).await,
            Err(e) => Err(e),
        };
        let (identity, result) = match verified {
            Ok(identity) => {
                let result = self.grant(&identity, &request, caller_timeout).await;
                (Some(identity), result)
            }
            Err(e) => (None, Err(e)),
        };
        self.record(&request, identity.as_deref(), &result, started.elapsed());
        result
    }

    /// The steps after authentication: the registry's answer, then the connector type's issuer.
    async fn grant(
        &self,
        identity: &Arc<Identity>,
        request: &Result<TokenRequest>,
        caller_timeout: Option<Duration>,
    ) -> Result<Issued> {
        let request = request.as_ref().map_err(BrokerError::duplicate)?;
        let asked = request.installation_id.as_deref();
        let authorization = self
            .authorizer
            .authorize(
                identity,
                &request.connector,
                asked.unwrap_or_default(),
                caller_timeout,
            )
            .await?;
        // The link's ceilings, before any provider call; a request naming no scopes or resources
        // is narrowed to the link's.
        authorization.within_ceilings(
            request.subject.kind(),
            asked,
            &request.scopes,
            &request.resources,
        )?;
        let ceilings = &authorization.ceilings;
        let issued = self
            .issuers
            .issue(
                Grant {
                    identity,
                    authorization: &authorization,
                    subject: &request.subject,
                    scopes: ceilings.scopes(&request.scopes),
                    resources: ceilings.resources(&request.resources),
                    min_ttl: request.min_ttl.unwrap_or_default(),
                },
                asked,
            )
            .await?;
        // A user's grant may carry more than the link now allows (consented before the ceiling,
        // or widened by the provider): not handed out.
        if matches!(request.subject, crate::issuers::Subject::User(_))
            && let Some(beyond) = issued
                .scopes
                .iter()
                .find(|s| !ceilings.scopes.is_empty() && !ceilings.scopes.contains(s))
        {
            return Err(BrokerError::ScopeNotAllowed(format!(
                "the user's grant carries scope '{}', beyond the link's allowed scopes (connector '{}'): the user must authorize again within them",
                connect_types::truncate(beyond, 64),
                authorization.connector_uid
            )));
        }
        let installation_id = authorization.installation_id();
        // Recorded before it leaves; a credential that cannot be recorded is not handed out.
        let token_id = self.ledger.token_id(&issued.token).await?;
        let recorded = self
            .ledger
            .record(HandOut {
                identity,
                authorization: &authorization,
                subject: &request.subject,
                installation_id,
                scopes: &issued.scopes,
                token_id: &token_id,
                expires_at: issued.expires_at,
            })
            .await;
        if let Err(BrokerError::CredentialRevoked) = &recorded {
            // The feed missed a revocation: every cached copy is suspect, as after a resync.
            tracing::warn!(token_id = %token_id,
                "a cached credential was revoked without this broker hearing of it: dropping every cached provider credential");
            self.issuers.forget_all();
            self.ledger.forget_recorded();
        }
        recorded?;
        Ok(Issued {
            token: issued.token,
            token_id,
            expires_at: issued.expires_at,
            installation_id: installation_id.map(str::to_owned),
            scopes: issued.scopes,
            credential: issued.credential,
            authorization,
        })
    }

    /// The one place a decision is logged and counted.
    fn record(
        &self,
        request: &Result<TokenRequest>,
        identity: Option<&Identity>,
        result: &Result<Issued>,
        took: Duration,
    ) {
        let connector = request.as_ref().map(|r| r.connector.as_str()).unwrap_or("");
        let (owner_id, project_id, environment) = identity
            .map(|i| {
                (
                    i.owner_id.as_str(),
                    i.project_id.as_str(),
                    i.environment.as_str(),
                )
            })
            .unwrap_or_default();
        match result {
            Ok(issued) => {
                self.metrics.get_token(true, "OK", took);
                tracing::info!(
                    target: "connect::decision",
                    decision = "allow",
                    reason = "OK",
                    connector,
                    connector_id = %issued.authorization.connector_id,
                    owner_id,
                    project_id,
                    environment,
                    token_id = %issued.token_id,
                    "GetToken"
                );
            }
            Err(e) => {
                let reason = e.reason().as_str();
                self.metrics.get_token(false, reason, took);
                tracing::info!(
                    target: "connect::decision",
                    decision = "deny",
                    reason,
                    connector,
                    owner_id,
                    project_id,
                    environment,
                    error = %e,
                    "GetToken"
                );
                if let BrokerError::Internal { .. }
                | BrokerError::RegistryUnavailable(_)
                | BrokerError::JwksUnavailable(_)
                | BrokerError::ProviderUnavailable(_) = e
                {
                    tracing::warn!(error = %connect_runtime::ErrorChain(e), "GetToken failed on a dependency");
                }
            }
        }
    }
}
