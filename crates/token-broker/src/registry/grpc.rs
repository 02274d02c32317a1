//! The gRPC adapter of the registry port: [`RegistryClient`] speaks
//! `connect.registry.v1.RegistryRuntime` over one long-lived channel carrying the broker key, and
//! is the only module of the broker that names the registry's protobuf types. Every call has a
//! deadline (derived from the caller's for `Authorize`, capped). The registry's "no" answers
//! become the matching broker errors; anything else (unreachable, slow, refusing our key, or
//! answering garbage) is REGISTRY_UNAVAILABLE, and never a token.

use std::{future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use connect_proto::registry::v1::{self as pb, registry_runtime_client::RegistryRuntimeClient};
use connect_runtime::BearerAuth;
use connect_types::{Environment, IssuerUrl, ProjectId, Reason, TeamId};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use tonic::{
    Code, Request, Status,
    service::interceptor::InterceptedService,
    transport::{Channel, ClientTlsConfig, Endpoint},
};
use tonic_types::StatusExt;
use tracing::Instrument;

use super::{
    Authorization, Authorizer, Change, ChangeFeed, ChangeKind, ChangeStream, ClaimedRefreshTokens,
    ConsentFinish, GrantAccess, GrantKey, GrantLease, GrantLeases, HeldConsent, InstallationGrant,
    Issuance, IssuanceRecorder, LeaseAnswer, NewConsent, OpenedConsent, PendingConsents,
    RefreshOutcome, Revocations, RevokeScope, StoredGrant, TokenIdKey,
};
use crate::{
    auth::Identity,
    error::{BrokerError, Cause, FieldViolation, Result},
};

type Client = RegistryRuntimeClient<InterceptedService<Channel, BearerAuth>>;

/// The action of a revocation in the change feed.
const TOKENS_REVOKE: &str = "tokens.revoke";
/// A user's grant was replaced by a new consent: its refresh token waits for revocation.
const GRANT_REPLACE: &str = "grant.replace";

#[derive(Clone)]
pub struct RegistryClient {
    channel: Channel,
    client: Client,
    max_timeout: Duration,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("max_timeout", &self.max_timeout)
            .finish_non_exhaustive()
    }
}

/// `what` answered `status`: the registry is of no use for this call.
fn unavailable(what: &'static str) -> impl Fn(Status) -> BrokerError {
    move |status| {
        BrokerError::RegistryUnavailable(Box::new(Cause(format!(
            "{what} answered {:?}: {}",
            status.code(),
            status.message()
        ))))
    }
}

/// A call of the grant RPCs: the registry's "no user grant" is `UserAuthorizationRequired`, a
/// lost lease `LeaseLost`, anything else unavailable.
fn grant_failure(what: &'static str) -> impl Fn(Status) -> BrokerError {
    move |status| {
        let reason = status
            .get_details_error_info()
            .filter(|i| i.domain == connect_types::ERROR_DOMAIN)
            .and_then(|i| Reason::parse(&i.reason));
        match (status.code(), reason) {
            (Code::FailedPrecondition, Some(Reason::UserAuthorizationRequired)) => {
                BrokerError::UserAuthorizationRequired(
                    status
                        .message()
                        .trim_start_matches("UserAuthorizationRequiredError: ")
                        .to_owned(),
                )
            }
            (Code::Aborted, Some(Reason::LeaseLost)) => BrokerError::LeaseLost,
            (Code::FailedPrecondition, Some(Reason::ConsentNotPending)) => {
                BrokerError::ConsentNotPending(
                    status
                        .message()
                        .trim_start_matches("ConsentNotPendingError: ")
                        .to_owned(),
                )
            }
            (Code::PermissionDenied, Some(Reason::ConsentUserMismatch)) => {
                BrokerError::ConsentUserMismatch(
                    status
                        .message()
                        .trim_start_matches("ConsentUserMismatchError: ")
                        .to_owned(),
                )
            }
            (Code::FailedPrecondition, Some(Reason::ProviderAccountChanged)) => {
                BrokerError::ProviderAccountChanged(
                    status
                        .message()
                        .trim_start_matches("ProviderAccountChangedError: ")
                        .to_owned(),
                )
            }
            _ => unavailable(what)(status),
        }
    }
}

/// An answer the registry should never give.
fn garbled(what: &str) -> BrokerError {
    BrokerError::RegistryUnavailable(Box::new(Cause(format!("garbled answer: {what}"))))
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn time(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
}

fn duration(d: Duration) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    })
}

impl From<&GrantKey> for pb::GrantKey {
    fn from(key: &GrantKey) -> Self {
        Self {
            owner_id: key.owner_id.to_string(),
            project_id: key.project_id.to_string(),
            connector_id: key.connector_id.clone(),
            user_id: key.user_id.clone(),
            environment: key.environment.as_str().to_owned(),
            installation_id: key.installation_id.clone(),
        }
    }
}

fn grant_key(key: Option<pb::GrantKey>) -> Result<GrantKey> {
    let key = key.ok_or_else(|| garbled("no grant key"))?;
    Ok(GrantKey {
        owner_id: TeamId::parse(&key.owner_id).map_err(|_| garbled("grant owner"))?,
        project_id: ProjectId::parse(&key.project_id).map_err(|_| garbled("grant project"))?,
        environment: Environment::parse(&key.environment)
            .map_err(|_| garbled("grant environment"))?,
        connector_id: key.connector_id,
        user_id: key.user_id,
        installation_id: key.installation_id,
    })
}

fn grant_access(access: pb::GrantAccess) -> GrantAccess {
    let grant = access.grant.unwrap_or_default();
    GrantAccess {
        access_token: SecretString::from(access.access_token),
        expires_at: time(grant.expire_time.as_ref()),
        scopes: grant.scopes,
    }
}

fn change(event: pb::ChangeEvent) -> Change {
    let kind = if event.resync {
        ChangeKind::Resync
    } else if event.action.is_empty() {
        ChangeKind::Heartbeat
    } else if event.action == TOKENS_REVOKE || event.action == GRANT_REPLACE {
        let scope = RevokeScope {
            owner_id: event.owner_id,
            connector_id: event.connector_id,
            installation_id: (!event.installation_id.is_empty()).then_some(event.installation_id),
            subject: (!event.subject.is_empty()).then_some(event.subject),
        };
        if event.action == GRANT_REPLACE {
            ChangeKind::Replaced(scope)
        } else {
            ChangeKind::Revoked(scope)
        }
    } else {
        ChangeKind::Answers {
            owner_id: event.owner_id,
            connector: (!event.connector_id.is_empty())
                .then_some((event.connector_id, event.connector_uid)),
            project_id: (!event.project_id.is_empty()).then_some(event.project_id),
        }
    };
    Change {
        revision: event.revision,
        kind,
    }
}

impl RegistryClient {
    /// A client that connects on first use and reconnects by itself; over TLS with `tls` (for an
    /// `https://` URL).
    pub fn new(
        url: &str,
        key: &SecretString,
        max_timeout: Duration,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Self> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| BrokerError::internal("registry URL", e))?;
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| BrokerError::internal("registry TLS", e))?;
        }
        let endpoint = endpoint
            .connect_timeout(max_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let auth = BearerAuth::new(key.expose_secret())
            .map_err(|_| BrokerError::internal("registry key", Cause("not ASCII".into())))?;
        let channel = endpoint.connect_lazy();
        Ok(Self {
            client: RegistryRuntimeClient::with_interceptor(channel.clone(), auth),
            channel,
            max_timeout,
        })
    }

    /// Completes once the registry's `RegistryRuntime` reports SERVING (asked over the same
    /// connection, every half second).
    pub async fn wait_until_serving(&self) {
        use tonic_health::pb::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        };
        let mut health = HealthClient::new(self.channel.clone());
        loop {
            let check = HealthCheckRequest {
                service: pb::registry_runtime_server::SERVICE_NAME.into(),
            };
            match health.check(check).await {
                Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => return,
                Ok(_) => tracing::info!(
                    "waiting for the link registry's runtime service to report SERVING"
                ),
                Err(e) => tracing::info!(code = ?e.code(), "waiting for the link registry"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// One unary call under `timeout`.
    async fn unary<Req, Resp, Fut>(
        &self,
        request: Req,
        timeout: Duration,
        call: impl FnOnce(Client, Request<Req>) -> Fut,
    ) -> std::result::Result<Resp, Status>
    where
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, Status>>,
    {
        let mut request = Request::new(request);
        request.set_timeout(timeout);
        call(self.client.clone(), request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// The signing keys of Connect's own tokens, oldest first, with their private halves.
    pub async fn signing_keys(&self) -> Result<Vec<pb::SigningKey>> {
        self.unary(
            pb::GetSigningKeysRequest {},
            self.max_timeout,
            |mut c, r| async move { c.get_signing_keys(r).await },
        )
        .await
        .map(|answer| answer.keys)
        .map_err(unavailable("GetSigningKeys"))
    }

    /// Asks whether `identity` may use `connector` (for `installation`: empty for the default,
    /// `*` for every one).
    pub async fn ask(
        &self,
        identity: &Identity,
        connector: &str,
        installation: &str,
        caller_timeout: Option<Duration>,
    ) -> Result<Authorization> {
        let timeout = caller_timeout.map_or(self.max_timeout, |t| t.min(self.max_timeout));
        let request = pb::AuthorizeRequest {
            owner_id: identity.owner_id.to_string(),
            project_id: identity.project_id.to_string(),
            environment: identity.environment.to_string(),
            issuer: identity.issuer.to_string(),
            connector: connector.to_owned(),
            installation_id: installation.to_owned(),
        };
        let span = tracing::debug_span!(
            "registry.authorize",
            otel.kind = "client",
            connector,
            owner_id = %identity.owner_id,
            project_id = %identity.project_id,
            environment = %identity.environment,
        );
        let answer = self
            .unary(
                request,
                timeout,
                |mut c, r| async move { c.authorize(r).await },
            )
            .instrument(span)
            .await
            .map_err(|status| decision(status, identity, connector, installation))?;
        check_answer(answer, identity, connector, installation)
    }
}

#[async_trait]
impl Authorizer for RegistryClient {
    async fn authorize(
        &self,
        identity: &Arc<Identity>,
        connector: &str,
        installation: &str,
        caller_timeout: Option<Duration>,
    ) -> Result<Arc<Authorization>> {
        self.ask(identity, connector, installation, caller_timeout)
            .await
            .map(Arc::new)
    }
}

#[async_trait]
impl IssuanceRecorder for RegistryClient {
    async fn record(&self, issuance: Issuance) -> Result<bool> {
        let request = pb::RecordIssuanceRequest {
            issuance: Some(pb::Issuance {
                token_id: issuance.token_id,
                connector_id: issuance.connector_id,
                connector_uid: issuance.connector_uid,
                owner_id: issuance.owner_id.to_string(),
                project_id: issuance.project_id.to_string(),
                environment: issuance.environment.as_str().to_owned(),
                subject: issuance.subject,
                installation_id: issuance.installation_id.unwrap_or_default(),
                scopes: issuance.scopes,
                issue_time: Some(timestamp(issuance.issued_at)),
                expire_time: issuance.expires_at.map(timestamp),
                ..Default::default()
            }),
        };
        self.unary(request, self.max_timeout, |mut c, r| async move {
            c.record_issuance(r).await
        })
        .await
        .map(|answer| answer.recorded)
        .map_err(|status| {
            if status.code() == Code::FailedPrecondition {
                BrokerError::CredentialRevoked
            } else if status.code() == Code::ResourceExhausted {
                BrokerError::QuotaExceeded(
                    status
                        .message()
                        .trim_start_matches("QuotaExceededError: ")
                        .to_owned(),
                )
            } else {
                unavailable("RecordIssuance")(status)
            }
        })
    }

    async fn token_id_key(&self) -> Result<TokenIdKey> {
        let answer = self
            .unary(
                pb::GetTokenIdKeyRequest {},
                self.max_timeout,
                |mut c, r| async move { c.get_token_id_key(r).await },
            )
            .await
            .map_err(unavailable("GetTokenIdKey"))?;
        if answer.key.len() != 32 {
            return Err(BrokerError::RegistryUnavailable(Box::new(Cause(
                "GetTokenIdKey answered with a key that is not 32 bytes".into(),
            ))));
        }
        Ok(TokenIdKey::new(&answer.key))
    }
}

#[async_trait]
impl GrantLeases for RegistryClient {
    async fn lease(
        &self,
        key: &GrantKey,
        min_ttl: Duration,
        lease: Duration,
    ) -> Result<LeaseAnswer> {
        use pb::lease_grant_response::Answer;
        let request = pb::LeaseGrantRequest {
            key: Some(key.into()),
            min_ttl: duration(min_ttl),
            lease: duration(lease),
        };
        let answer = self
            .unary(request, self.max_timeout, |mut c, r| async move {
                c.lease_grant(r).await
            })
            .await
            .map_err(grant_failure("LeaseGrant"))?;
        Ok(
            match answer
                .answer
                .ok_or_else(|| garbled("LeaseGrant answered nothing"))?
            {
                Answer::Fresh(access) => LeaseAnswer::Fresh(grant_access(access)),
                Answer::Leased(lease) => LeaseAnswer::Leased(GrantLease {
                    lease_id: lease.lease_id,
                    fence: lease.fence,
                    refresh_token: SecretString::from(lease.refresh_token),
                    scopes: lease.grant.map(|g| g.scopes).unwrap_or_default(),
                }),
                Answer::BusyUntil(until) => LeaseAnswer::BusyUntil(time(Some(&until))),
            },
        )
    }

    async fn commit(
        &self,
        key: &GrantKey,
        lease: &GrantLease,
        outcome: RefreshOutcome,
    ) -> Result<Option<GrantAccess>> {
        use pb::commit_grant_request::Outcome;
        let outcome = match outcome {
            RefreshOutcome::Refreshed(tokens) => Outcome::Refreshed(pb::RefreshedTokens {
                access_token: tokens.access_token.expose_secret().to_owned(),
                refresh_token: tokens
                    .refresh_token
                    .map(|t| t.expose_secret().to_owned())
                    .unwrap_or_default(),
                expire_time: tokens.expires_at.map(timestamp),
                scopes: tokens.scopes,
            }),
            RefreshOutcome::Refused(why) => Outcome::Refused(why),
            RefreshOutcome::Unavailable(why) => Outcome::Unavailable(why),
        };
        let request = pb::CommitGrantRequest {
            key: Some(key.into()),
            lease_id: lease.lease_id.clone(),
            fence: lease.fence,
            outcome: Some(outcome),
        };
        Ok(self
            .unary(request, self.max_timeout, |mut c, r| async move {
                c.commit_grant(r).await
            })
            .await
            .map_err(grant_failure("CommitGrant"))?
            .access
            .map(grant_access))
    }
}

#[async_trait]
impl PendingConsents for RegistryClient {
    async fn begin(&self, consent: NewConsent) -> Result<(String, DateTime<Utc>)> {
        let request = pb::BeginAuthorizationRequest {
            key: Some((&consent.key).into()),
            scopes: consent.scopes,
            return_url: consent.return_url,
            redirect_uri: consent.redirect_uri,
            code_verifier: consent.code_verifier.expose_secret().to_owned(),
            ttl: duration(consent.ttl),
            project_id: consent.project_id.to_string(),
            issuer: consent.issuer.to_string(),
        };
        let begun = self
            .unary(request, self.max_timeout, |mut c, r| async move {
                c.begin_authorization(r).await
            })
            .await
            .map_err(grant_failure("BeginAuthorization"))?;
        let expires_at = time(begun.expire_time.as_ref()).unwrap_or_else(Utc::now);
        Ok((begun.state, expires_at))
    }

    async fn complete(&self, state: &str, connector_id: &str) -> Result<Option<OpenedConsent>> {
        let request = pb::CompleteAuthorizationRequest {
            state: state.to_owned(),
            connector_id: connector_id.to_owned(),
        };
        let opened = match self
            .unary(request, self.max_timeout, |mut c, r| async move {
                c.complete_authorization(r).await
            })
            .await
        {
            Ok(opened) => opened,
            Err(status)
                if matches!(
                    status.code(),
                    Code::FailedPrecondition | Code::InvalidArgument
                ) =>
            {
                return Ok(None);
            }
            Err(status) => return Err(grant_failure("CompleteAuthorization")(status)),
        };
        Ok(Some(OpenedConsent {
            key: grant_key(opened.key)?,
            project_id: ProjectId::parse(&opened.project_id)
                .map_err(|_| garbled("consent project"))?,
            issuer: IssuerUrl::parse(&opened.issuer).map_err(|_| garbled("consent issuer"))?,
            scopes: opened.scopes,
            return_url: opened.return_url,
            redirect_uri: opened.redirect_uri,
            code_verifier: SecretString::from(opened.code_verifier),
        }))
    }

    async fn hold(&self, held: HeldConsent) -> Result<SecretString> {
        let tokens = held.tokens;
        let request = pb::HoldGrantRequest {
            request_id: held.request_id,
            key: Some((&held.key).into()),
            project_id: held.project_id.to_string(),
            issuer: held.issuer.to_string(),
            access_token: tokens.access_token.expose_secret().to_owned(),
            refresh_token: tokens
                .refresh_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned())
                .unwrap_or_default(),
            expire_time: tokens.expires_at.map(timestamp),
            scopes: tokens.scopes,
            ttl: duration(held.ttl),
            provider_subject: held.provider_subject.unwrap_or_default(),
        };
        let held = self
            .unary(request, self.max_timeout, |mut c, r| async move {
                c.hold_grant(r).await
            })
            .await
            .map_err(grant_failure("HoldGrant"))?;
        if held.completion.is_empty() {
            return Err(garbled("no completion secret"));
        }
        Ok(SecretString::from(held.completion))
    }

    async fn finish(&self, identity: &Identity, finish: ConsentFinish) -> Result<StoredGrant> {
        let request = pb::FinishGrantRequest {
            request_id: finish.request_id,
            completion: finish.completion.expose_secret().to_owned(),
            user_id: finish.user_id,
            owner_id: identity.owner_id.to_string(),
            project_id: identity.project_id.to_string(),
            environment: identity.environment.as_str().to_owned(),
            issuer: identity.issuer.to_string(),
            confirm_provider_subject: finish.confirm_provider_subject.unwrap_or_default(),
        };
        let grant = self
            .unary(request, self.max_timeout, |mut c, r| async move {
                c.finish_grant(r).await
            })
            .await
            .map_err(grant_failure("FinishGrant"))?;
        Ok(StoredGrant {
            project: grant.project,
            key: GrantKey {
                owner_id: TeamId::parse(&grant.owner_id).map_err(|_| garbled("grant owner"))?,
                project_id: identity.project_id.clone(),
                environment: Environment::parse(&grant.environment)
                    .map_err(|_| garbled("grant environment"))?,
                connector_id: grant.connector_id,
                user_id: grant.user_id,
                installation_id: grant.installation_id,
            },
            connector_uid: grant.connector_uid,
            scopes: grant.scopes,
            expires_at: time(grant.expire_time.as_ref()),
            refreshable: grant.refreshable,
            updated_at: time(grant.update_time.as_ref()),
            provider_subject: (!grant.provider_subject.is_empty())
                .then_some(grant.provider_subject),
        })
    }
}

#[async_trait]
impl Revocations for RegistryClient {
    async fn report_revocations(
        &self,
        owner_id: &str,
        connector_id: &str,
        outcomes: &[(String, &'static str)],
    ) -> Result<()> {
        let request = pb::ReportRevocationsRequest {
            owner_id: owner_id.to_owned(),
            connector_id: connector_id.to_owned(),
            revocations: outcomes
                .iter()
                .map(|(token_id, outcome)| pb::Revocation {
                    token_id: token_id.clone(),
                    outcome: (*outcome).to_owned(),
                })
                .collect(),
        };
        self.unary(request, self.max_timeout, |mut c, r| async move {
            c.report_revocations(r).await
        })
        .await
        .map(drop)
        .map_err(unavailable("ReportRevocations"))
    }

    async fn claim_grant_revocations(
        &self,
        owner_id: &str,
        connector_id: &str,
    ) -> Result<ClaimedRefreshTokens> {
        let request = pb::ClaimGrantRevocationsRequest {
            owner_id: owner_id.to_owned(),
            connector_id: connector_id.to_owned(),
        };
        let claimed = self
            .unary(request, self.max_timeout, |mut c, r| async move {
                c.claim_grant_revocations(r).await
            })
            .await
            .map_err(grant_failure("ClaimGrantRevocations"))?;
        Ok(ClaimedRefreshTokens {
            revocation_url: claimed.revocation_url,
            client_id: claimed.client_id,
            client_secret: SecretString::from(claimed.client_secret),
            tokens: claimed
                .refresh_tokens
                .into_iter()
                .map(|t| (t.id, SecretString::from(t.refresh_token)))
                .collect(),
        })
    }

    async fn finish_grant_revocations(
        &self,
        owner_id: &str,
        connector_id: &str,
        ids: Vec<i64>,
    ) -> Result<()> {
        let request = pb::FinishGrantRevocationsRequest {
            owner_id: owner_id.to_owned(),
            connector_id: connector_id.to_owned(),
            ids,
        };
        self.unary(request, self.max_timeout, |mut c, r| async move {
            c.finish_grant_revocations(r).await
        })
        .await
        .map(drop)
        .map_err(grant_failure("FinishGrantRevocations"))
    }
}

#[async_trait]
impl ChangeFeed for RegistryClient {
    async fn watch(&self, from_revision: i64) -> Result<ChangeStream> {
        let events = self
            .client
            .clone()
            .watch_changes(Request::new(pb::WatchChangesRequest { from_revision }))
            .await
            .map_err(unavailable("WatchChanges"))?
            .into_inner();
        Ok(events
            .map(|event| event.map(change).map_err(unavailable("WatchChanges")))
            .boxed())
    }
}

/// The registry's "no" as a broker error.
fn decision(
    status: Status,
    identity: &Identity,
    connector: &str,
    installation: &str,
) -> BrokerError {
    let info = status.get_details_error_info();
    let reason = info
        .as_ref()
        .filter(|i| i.domain == connect_types::ERROR_DOMAIN)
        .and_then(|i| Reason::parse(&i.reason));
    match (status.code(), reason) {
        (Code::Unauthenticated, Some(Reason::IssuerNotTrusted)) => {
            BrokerError::IssuerNotTrusted("the token's issuer is not the issuer of its team".into())
        }
        (Code::NotFound, Some(Reason::ConnectorNotFound)) => {
            BrokerError::ConnectorNotFound(connector.to_owned())
        }
        (Code::PermissionDenied, Some(Reason::ClientNotLinkedToProject)) => {
            BrokerError::ClientNotLinkedToProject {
                connector: connector.to_owned(),
                project_id: identity.project_id.to_string(),
            }
        }
        (Code::PermissionDenied, Some(Reason::ClientNotEnabledForEnvironment)) => {
            BrokerError::ClientNotEnabledForEnvironment {
                connector: connector.to_owned(),
                project_id: identity.project_id.to_string(),
                environment: identity.environment.to_string(),
            }
        }
        (Code::PermissionDenied, Some(Reason::LinkExpired)) => BrokerError::LinkExpired {
            connector: connector.to_owned(),
            project_id: identity.project_id.to_string(),
        },
        (Code::FailedPrecondition, Some(Reason::ConnectorSuspended)) => {
            BrokerError::ConnectorSuspended(connector.to_owned())
        }
        (Code::NotFound, Some(Reason::InstallationNotFound)) => BrokerError::InstallationNotFound {
            connector: connector.to_owned(),
            installation: if installation.is_empty() {
                "(default)".to_owned()
            } else {
                installation.to_owned()
            },
        },
        (Code::InvalidArgument, Some(Reason::InvalidArgument)) => {
            let violations = status
                .get_details_bad_request()
                .map(|b| {
                    b.field_violations
                        .into_iter()
                        .map(|v| FieldViolation::new(v.field, v.description))
                        .collect()
                })
                .unwrap_or_default();
            BrokerError::InvalidArgument(violations)
        }
        (code, reason) => BrokerError::RegistryUnavailable(Box::new(Cause(format!(
            "Authorize answered {code:?} ({})",
            reason.map_or("no reason", Reason::as_str)
        )))),
    }
}

/// A yes must be a whole, consistent answer about the asked-for connector (by id or uid), team,
/// project and environment.
fn check_answer(
    answer: pb::AuthorizeResponse,
    identity: &Identity,
    asked: &str,
    installation: &str,
) -> Result<Authorization> {
    let connector = answer.connector.ok_or_else(|| garbled("no connector"))?;
    let link = answer.link.ok_or_else(|| garbled("no link"))?;
    if connector.id.is_empty() || connector.r#type.is_empty() {
        return Err(garbled("connector without id or type"));
    }
    if connector.id != asked && connector.uid != asked {
        return Err(garbled("another connector than the one asked about"));
    }
    if connector.owner_id != identity.owner_id.as_str() {
        return Err(garbled("a connector of another team"));
    }
    // The environment the link enables for this token: the claim itself, or (for a custom
    // environment named by its slug) the id the registry resolved it to.
    let matched = if answer.environment_id.is_empty() {
        identity.environment.as_str()
    } else {
        answer.environment_id.as_str()
    };
    let resolved_custom =
        identity.environment.custom().is_some() && connect_types::is_environment_id(matched);
    if link.connector_id != connector.id
        || link.project_id != identity.project_id.as_str()
        || link.owner_id != identity.owner_id.as_str()
        || (matched != identity.environment.as_str() && !resolved_custom)
        || !link.environments.iter().any(|e| e == matched)
    {
        return Err(garbled(
            "the link does not allow this project and environment",
        ));
    }
    let granted = match answer.installation {
        Some(i) if i.connector_id != connector.id || i.installation_id.is_empty() => {
            return Err(garbled("an installation of another connector"));
        }
        Some(i) => Some(InstallationGrant {
            id: i.installation_id,
            config: i.config.into_iter().collect(),
            secrets: answer
                .installation_secrets
                .into_iter()
                .map(|(k, v)| (k, SecretString::from(v)))
                .collect(),
        }),
        None => None,
    };
    let expected = match installation {
        "" | "*" => None,
        id => Some(id),
    };
    if expected.is_some() && expected != granted.as_ref().map(|i| i.id.as_str()) {
        return Err(garbled("another installation than the one asked about"));
    }
    let link_expires_at = link
        .expire_time
        .map(std::time::SystemTime::try_from)
        .transpose()
        .map_err(|_| garbled("a link expiry out of range"))?;
    // By this broker's clock the link may have run out since the registry answered.
    if link_expires_at.is_some_and(|at| at <= std::time::SystemTime::now()) {
        return Err(BrokerError::LinkExpired {
            connector: asked.to_owned(),
            project_id: identity.project_id.to_string(),
        });
    }
    let subjects = link
        .allowed_subjects
        .iter()
        .map(|s| connect_types::SubjectKind::parse(s))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| garbled("an unknown subject kind in a link's ceiling"))?;
    let ceilings = connect_types::Ceilings {
        scopes: link.allowed_scopes,
        resources: link.allowed_resources,
        installations: link.allowed_installations,
        subjects,
    };
    let mints = connect_types::capabilities(&connector.r#type).is_some_and(|row| row.mints);
    Ok(Authorization {
        link_expires_at,
        ceilings,
        owner_slug: answer.owner_slug,
        project_name: if mints {
            link.project_name
        } else {
            String::new()
        },
        installation: granted,
        connector_id: connector.id,
        connector_uid: connector.uid,
        connector_type: connector.r#type,
        config: connector.config.into_iter().collect(),
        secrets: answer
            .secrets
            .into_iter()
            .map(|(k, v)| (k, SecretString::from(v)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            issuer: IssuerUrl::parse("https://issuer.example").unwrap(),
            owner_id: TeamId::parse("team_a").unwrap(),
            project_id: ProjectId::parse("prj_a").unwrap(),
            environment: Environment::Preview,
        }
    }

    fn answer() -> pb::AuthorizeResponse {
        pb::AuthorizeResponse {
            connector: Some(pb::Connector {
                id: "conn_1".into(),
                uid: "api-key/x".into(),
                r#type: "api-key".into(),
                owner_id: "team_a".into(),
                ..Default::default()
            }),
            link: Some(pb::ProjectLink {
                connector_id: "conn_1".into(),
                project_id: "prj_a".into(),
                owner_id: "team_a".into(),
                environments: vec!["preview".into()],
                ..Default::default()
            }),
            secrets: [("api_key".to_owned(), "k".to_owned())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn change_events_become_the_changes_they_mean() {
        let event = |action: &str| pb::ChangeEvent {
            revision: 7,
            action: action.into(),
            owner_id: "team_a".into(),
            connector_id: "conn_1".into(),
            connector_uid: "api-key/x".into(),
            ..Default::default()
        };
        assert_eq!(change(event("")).kind, ChangeKind::Heartbeat);
        assert_eq!(
            change(pb::ChangeEvent {
                resync: true,
                ..event("")
            })
            .kind,
            ChangeKind::Resync
        );
        assert_eq!(
            change(event("project.attach")),
            Change {
                revision: 7,
                kind: ChangeKind::Answers {
                    owner_id: "team_a".into(),
                    connector: Some(("conn_1".into(), "api-key/x".into())),
                    project_id: None,
                },
            }
        );
        assert_eq!(
            change(pb::ChangeEvent {
                connector_id: String::new(),
                project_id: "prj_a".into(),
                ..event("team.update")
            })
            .kind,
            ChangeKind::Answers {
                owner_id: "team_a".into(),
                connector: None,
                project_id: Some("prj_a".into()),
            }
        );
        assert_eq!(
            change(pb::ChangeEvent {
                subject: "user:ada".into(),
                ..event(TOKENS_REVOKE)
            })
            .kind,
            ChangeKind::Revoked(RevokeScope {
                owner_id: "team_a".into(),
                connector_id: "conn_1".into(),
                installation_id: None,
                subject: Some("user:ada".into()),
            })
        );
        assert_eq!(
            change(pb::ChangeEvent {
                subject: "user:ada".into(),
                ..event(GRANT_REPLACE)
            })
            .kind,
            ChangeKind::Replaced(RevokeScope {
                owner_id: "team_a".into(),
                connector_id: "conn_1".into(),
                installation_id: None,
                subject: Some("user:ada".into()),
            })
        );
    }

    #[test]
    fn a_whole_consistent_answer_is_accepted() {
        let authorization = check_answer(answer(), &identity(), "api-key/x", "").unwrap();
        assert!(check_answer(answer(), &identity(), "conn_1", "").is_ok());
        assert_eq!(authorization.connector_type, "api-key");
        assert!(!format!("{authorization:?}").contains("\"k\""));
    }

    #[test]
    fn an_answer_must_be_about_the_installation_asked_for() {
        let mut a = answer();
        a.installation = Some(pb::Installation {
            connector_id: "conn_1".into(),
            installation_id: "42".into(),
            ..Default::default()
        });
        let granted = check_answer(a.clone(), &identity(), "conn_1", "42").unwrap();
        assert_eq!(granted.installation_id(), Some("42"));
        assert!(check_answer(a.clone(), &identity(), "conn_1", "").is_ok());
        assert!(matches!(
            check_answer(a.clone(), &identity(), "conn_1", "43"),
            Err(BrokerError::RegistryUnavailable(_))
        ));
        a.installation.as_mut().unwrap().connector_id = "conn_2".into();
        assert!(matches!(
            check_answer(a, &identity(), "conn_1", "42"),
            Err(BrokerError::RegistryUnavailable(_))
        ));
        assert!(matches!(
            check_answer(answer(), &identity(), "conn_1", "42"),
            Err(BrokerError::RegistryUnavailable(_))
        ));
    }

    #[test]
    fn garbled_answers_are_registry_unavailable_never_a_yes() {
        type Garble = Box<dyn Fn(&mut pb::AuthorizeResponse)>;
        let garbled: Vec<Garble> = vec![
            Box::new(|a| a.connector = None),
            Box::new(|a| a.link = None),
            Box::new(|a| a.connector.as_mut().unwrap().r#type.clear()),
            Box::new(|a| a.link.as_mut().unwrap().project_id = "prj_other".into()),
            Box::new(|a| a.link.as_mut().unwrap().owner_id = "team_other".into()),
            Box::new(|a| a.link.as_mut().unwrap().connector_id = "conn_2".into()),
            Box::new(|a| a.link.as_mut().unwrap().environments = vec!["production".into()]),
            Box::new(|a| a.link.as_mut().unwrap().owner_id.clear()),
            Box::new(|a| a.connector.as_mut().unwrap().owner_id = "team_other".into()),
            Box::new(|a| {
                let c = a.connector.as_mut().unwrap();
                c.uid = "api-key/other".into();
            }),
        ];
        for garble in garbled {
            let mut a = answer();
            garble(&mut a);
            assert!(matches!(
                check_answer(a, &identity(), "api-key/x", ""),
                Err(BrokerError::RegistryUnavailable(_))
            ));
        }
    }

    #[test]
    fn the_registrys_no_becomes_the_matching_broker_error() {
        use tonic_types::{ErrorDetails, StatusExt};
        let status = |code, reason: &str| {
            let mut details = ErrorDetails::new();
            details.set_error_info(reason, "connect", []);
            Status::with_error_details(code, "x", details)
        };
        let id = identity();
        assert!(matches!(
            decision(
                status(Code::PermissionDenied, "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT"),
                &id,
                "c",
                ""
            ),
            BrokerError::ClientNotEnabledForEnvironment { .. }
        ));
        assert!(matches!(
            decision(status(Code::NotFound, "CONNECTOR_NOT_FOUND"), &id, "c", ""),
            BrokerError::ConnectorNotFound(_)
        ));
        assert!(matches!(
            decision(
                status(Code::NotFound, "INSTALLATION_NOT_FOUND"),
                &id,
                "c",
                "42"
            ),
            BrokerError::InstallationNotFound { .. }
        ));
        // Our own key refused, or anything unexpected: unavailable, not a decision.
        for (code, reason) in [
            (Code::Unauthenticated, "INVALID_KEY"),
            (Code::PermissionDenied, "ROLE_NOT_ALLOWED"),
            (Code::Internal, "INTERNAL"),
            (Code::NotFound, "PROJECT_NOT_FOUND"),
        ] {
            assert!(matches!(
                decision(status(code, reason), &id, "c", ""),
                BrokerError::RegistryUnavailable(_)
            ));
        }
        assert!(matches!(
            decision(Status::unavailable("down"), &id, "c", ""),
            BrokerError::RegistryUnavailable(_)
        ));
    }
}
