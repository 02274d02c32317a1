//! `connect.registry.v1.RegistryRuntime`: what token brokers ask while they serve deployments,
//! for `broker` keys only. An `admin` or `viewer` key is refused here before anything is read.

use connect_proto::registry::v1::{self as pb, registry_runtime_server::RegistryRuntime};
use secrecy::ExposeSecret;
use tonic::{Request, Response, Status, metadata::MetadataMap};

use super::{RUNTIME_API, Reply, bearer, convert, reply, status::to_status};
use crate::domain::{
    Caller, Registry, RegistryError,
    service::{AuthorizeQuery, FinishConsent, NewHeld, NewIssuance, NewPending},
};

/// The `RegistryRuntime` service over a [`Registry`].
#[derive(Debug, Clone)]
pub struct RegistryRuntimeService {
    registry: Registry,
}

impl RegistryRuntimeService {
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }

    /// The one role check of the runtime API.
    async fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        RUNTIME_API.caller(&self.registry, metadata).await
    }
}

/// The change feed's events as the wire carries them.
type ChangeStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ChangeEvent, Status>> + Send>>;

#[tonic::async_trait]
impl RegistryRuntime for RegistryRuntimeService {
    type WatchChangesStream = ChangeStream;

    async fn watch_changes(
        &self,
        request: Request<pb::WatchChangesRequest>,
    ) -> Reply<Self::WatchChangesStream> {
        use tokio_stream::StreamExt;
        self.caller(request.metadata()).await?;
        // The feed checks the key again while it runs, so a revoked key's feed ends.
        let key = bearer(request.metadata())
            .ok_or_else(|| to_status(RegistryError::InvalidKey))?
            .to_owned();
        let from = request.into_inner().from_revision;
        let events = self
            .registry
            .watch_changes(secrecy::SecretString::from(key), from)
            .await
            .map_err(to_status)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(events)
            .map(|event| event.map(pb::ChangeEvent::from).map_err(to_status));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn record_issuance(
        &self,
        request: Request<pb::RecordIssuanceRequest>,
    ) -> Reply<pb::RecordIssuanceResponse> {
        let caller = self.caller(request.metadata()).await?;
        let issuance = NewIssuance::try_from(request.into_inner()).map_err(to_status)?;
        let recorded = self
            .registry
            .record_issuance(&caller, issuance)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RecordIssuanceResponse { recorded }))
    }

    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Reply<pb::AuthorizeResponse> {
        let caller = self.caller(request.metadata()).await?;
        let query = AuthorizeQuery::try_from(request.into_inner()).map_err(to_status)?;
        let result = self.registry.authorize(&caller, &query).await;
        match &result {
            Ok(_) => tracing::debug!(owner_id = %query.owner_id, project_id = %query.project_id,
                environment = %query.environment, connector = %query.connector, "authorized"),
            Err(e) => tracing::debug!(owner_id = %query.owner_id, project_id = %query.project_id,
                environment = %query.environment, connector = %query.connector, reason = %e, "denied"),
        }
        reply(result)
    }

    async fn begin_authorization(
        &self,
        request: Request<pb::BeginAuthorizationRequest>,
    ) -> Reply<pb::BeginAuthorizationResponse> {
        let caller = self.caller(request.metadata()).await?;
        let pending = NewPending::try_from(request.into_inner()).map_err(to_status)?;
        let (state, expires_at) = self
            .registry
            .begin_authorization(&caller, pending)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::BeginAuthorizationResponse {
            state,
            expire_time: Some(convert::timestamp(expires_at)),
        }))
    }

    async fn complete_authorization(
        &self,
        request: Request<pb::CompleteAuthorizationRequest>,
    ) -> Reply<pb::CompleteAuthorizationResponse> {
        let caller = self.caller(request.metadata()).await?;
        let completion = convert::Completion::try_from(request.get_ref()).map_err(to_status)?;
        let opened = self
            .registry
            .complete_authorization(&caller, completion.state, &completion.connector)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::opened_pending(opened)))
    }

    async fn hold_grant(
        &self,
        request: Request<pb::HoldGrantRequest>,
    ) -> Reply<pb::HoldGrantResponse> {
        let caller = self.caller(request.metadata()).await?;
        let held = NewHeld::try_from(request.into_inner()).map_err(to_status)?;
        let (completion, expires_at) = self
            .registry
            .hold_grant(&caller, held)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::HoldGrantResponse {
            completion: completion.expose_secret().to_owned(),
            expire_time: Some(convert::timestamp(expires_at)),
        }))
    }

    async fn finish_grant(&self, request: Request<pb::FinishGrantRequest>) -> Reply<pb::Grant> {
        let caller = self.caller(request.metadata()).await?;
        let finish = FinishConsent::try_from(request.into_inner()).map_err(to_status)?;
        let (stored, uid) = self
            .registry
            .finish_grant(&caller, finish)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::grant(stored, uid.as_str())))
    }

    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Reply<pb::LeaseGrantResponse> {
        let caller = self.caller(request.metadata()).await?;
        let query = convert::LeaseQuery::try_from(request.into_inner()).map_err(to_status)?;
        let answer = self
            .registry
            .lease_grant(&caller, &query.key, query.min_ttl, query.lease)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::lease_answer(answer)))
    }

    async fn commit_grant(
        &self,
        request: Request<pb::CommitGrantRequest>,
    ) -> Reply<pb::CommitGrantResponse> {
        let caller = self.caller(request.metadata()).await?;
        let commit = convert::Commit::try_from(request.into_inner()).map_err(to_status)?;
        let access = self
            .registry
            .commit_grant(
                &caller,
                &commit.key,
                &commit.lease_id,
                commit.fence,
                commit.report,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CommitGrantResponse {
            access: access.map(convert::grant_access),
        }))
    }

    async fn claim_grant_revocations(
        &self,
        request: Request<pb::ClaimGrantRevocationsRequest>,
    ) -> Reply<pb::ClaimGrantRevocationsResponse> {
        use secrecy::ExposeSecret;
        let caller = self.caller(request.metadata()).await?;
        let req = request.get_ref();
        let team = crate::domain::types::TeamId::parse(&req.owner_id)
            .map_err(|e| to_status(RegistryError::invalid("owner_id", e)))?;
        let connector = crate::domain::types::ConnectorId::parse(&req.connector_id)
            .map_err(|e| to_status(RegistryError::invalid("connector_id", e)))?;
        let (connector, secrets, tokens) = self
            .registry
            .claim_grant_revocations(&caller, &team, &connector)
            .await
            .map_err(to_status)?;
        let secret = |name: &str| {
            secrets
                .get(name)
                .map(|s| s.expose_secret().to_owned())
                .unwrap_or_default()
        };
        Ok(Response::new(pb::ClaimGrantRevocationsResponse {
            revocation_url: connector
                .config
                .get("revocation_url")
                .unwrap_or_default()
                .to_owned(),
            client_id: secret("client_id"),
            client_secret: secret("client_secret"),
            refresh_tokens: tokens
                .iter()
                .map(|(id, t)| pb::ClaimedRefreshToken {
                    id: *id,
                    refresh_token: t.expose_secret().to_owned(),
                })
                .collect(),
        }))
    }

    async fn finish_grant_revocations(
        &self,
        request: Request<pb::FinishGrantRevocationsRequest>,
    ) -> Reply<pb::FinishGrantRevocationsResponse> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.into_inner();
        let team = crate::domain::types::TeamId::parse(&req.owner_id)
            .map_err(|e| to_status(RegistryError::invalid("owner_id", e)))?;
        let connector = crate::domain::types::ConnectorId::parse(&req.connector_id)
            .map_err(|e| to_status(RegistryError::invalid("connector_id", e)))?;
        if req.ids.len() > 1000 {
            return Err(to_status(RegistryError::invalid("ids", "at most 1000 ids")));
        }
        self.registry
            .finish_grant_revocations(&caller, &team, &connector, &req.ids)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::FinishGrantRevocationsResponse {}))
    }

    async fn report_revocations(
        &self,
        request: Request<pb::ReportRevocationsRequest>,
    ) -> Reply<pb::ReportRevocationsResponse> {
        let caller = self.caller(request.metadata()).await?;
        let report =
            convert::RevocationReport::try_from(request.into_inner()).map_err(to_status)?;
        let updated = self
            .registry
            .report_revocations(&caller, &report.team, &report.connector, report.outcomes)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ReportRevocationsResponse {
            updated: u32::try_from(updated).unwrap_or(u32::MAX),
        }))
    }

    async fn get_token_id_key(
        &self,
        request: Request<pb::GetTokenIdKeyRequest>,
    ) -> Reply<pb::GetTokenIdKeyResponse> {
        let caller = self.caller(request.metadata()).await?;
        let key = self
            .registry
            .token_id_key_for(&caller)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetTokenIdKeyResponse {
            key: key.to_vec(),
        }))
    }

    async fn get_signing_keys(
        &self,
        request: Request<pb::GetSigningKeysRequest>,
    ) -> Reply<pb::GetSigningKeysResponse> {
        use secrecy::ExposeSecret;
        let caller = self.caller(request.metadata()).await?;
        let keys = self
            .registry
            .signing_keys_for(&caller)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetSigningKeysResponse {
            keys: keys
                .into_iter()
                .map(|k| pb::SigningKey {
                    private_key: k.pkcs8.expose_secret().to_vec(),
                    public_jwk: k.public_jwk.to_string(),
                    create_time: Some(convert::timestamp(k.created_at)),
                    kid: k.kid,
                    alg: k.alg,
                })
                .collect(),
        }))
    }
}
