//! The gRPC edge of `connect.registry.v1.LinkRegistry`. Each handler authenticates the caller,
//! converts the request (`convert`), makes one call to the domain service and converts the answer;
//! every error leaves through `status::to_status`.

pub mod convert;
pub mod status;

use connect_proto::registry::v1::{self as pb, link_registry_server::LinkRegistry};
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::domain::{
    Caller, Registry, RegistryError,
    service::{AuthorizeQuery, NewConnector, NewIssuance, NewProject},
};
use convert::{
    attachment, connector_ref, connector_update, link_listing, link_refs, page_request, project_ref,
};
use status::to_status;

/// The `LinkRegistry` service over a [`Registry`].
#[derive(Debug, Clone)]
pub struct LinkRegistryService {
    registry: Registry,
}

impl LinkRegistryService {
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }

    async fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let key = bearer(metadata).ok_or_else(|| to_status(RegistryError::InvalidKey))?;
        self.registry.authenticate(key).await.map_err(to_status)
    }
}

/// The key of exactly one `authorization: Bearer <key>` value (the shared bearer rule).
fn bearer(metadata: &MetadataMap) -> Option<&str> {
    let values = metadata
        .get_all("authorization")
        .iter()
        .map(|v| v.as_bytes());
    connect_types::bearer_token(values, MAX_KEY_BYTES).ok()
}

/// Longest API key looked at; longer ones are refused before hashing.
const MAX_KEY_BYTES: usize = 256;

type Reply<T> = Result<Response<T>, Status>;

fn reply<T, U: From<T>>(result: Result<T, RegistryError>) -> Reply<U> {
    result.map(|v| Response::new(v.into())).map_err(to_status)
}

/// The change feed's events as the wire carries them.
type ChangeStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ChangeEvent, Status>> + Send>>;

#[tonic::async_trait]
impl LinkRegistry for LinkRegistryService {
    type WatchChangesStream = ChangeStream;

    async fn watch_changes(
        &self,
        request: Request<pb::WatchChangesRequest>,
    ) -> Reply<Self::WatchChangesStream> {
        use tokio_stream::StreamExt;
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

    async fn create_project(
        &self,
        request: Request<pb::CreateProjectRequest>,
    ) -> Reply<pb::Project> {
        let caller = self.caller(request.metadata()).await?;
        let new = NewProject::try_from(request.into_inner()).map_err(to_status)?;
        reply(self.registry.create_project(&caller, new).await)
    }

    async fn get_project(&self, request: Request<pb::GetProjectRequest>) -> Reply<pb::Project> {
        let caller = self.caller(request.metadata()).await?;
        let project = project_ref("project", &request.get_ref().project).map_err(to_status)?;
        reply(self.registry.get_project(&caller, &project).await)
    }

    async fn list_projects(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> Reply<pb::ListProjectsResponse> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.get_ref();
        let page = page_request(req.page_size, &req.page_token).map_err(to_status)?;
        let page = self
            .registry
            .list_projects(&caller, page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListProjectsResponse {
            projects: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn create_connector(
        &self,
        request: Request<pb::CreateConnectorRequest>,
    ) -> Reply<pb::Connector> {
        let caller = self.caller(request.metadata()).await?;
        let new = NewConnector::try_from(request.into_inner()).map_err(to_status)?;
        reply(self.registry.create_connector(&caller, new).await)
    }

    async fn get_connector(
        &self,
        request: Request<pb::GetConnectorRequest>,
    ) -> Reply<pb::Connector> {
        let caller = self.caller(request.metadata()).await?;
        let connector =
            connector_ref("connector", &request.get_ref().connector).map_err(to_status)?;
        reply(self.registry.get_connector(&caller, &connector).await)
    }

    async fn list_connectors(
        &self,
        request: Request<pb::ListConnectorsRequest>,
    ) -> Reply<pb::ListConnectorsResponse> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.get_ref();
        let page = page_request(req.page_size, &req.page_token).map_err(to_status)?;
        let page = self
            .registry
            .list_connectors(&caller, page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListConnectorsResponse {
            connectors: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_connector(
        &self,
        request: Request<pb::UpdateConnectorRequest>,
    ) -> Reply<pb::Connector> {
        let caller = self.caller(request.metadata()).await?;
        let (connector, update) = connector_update(request.into_inner()).map_err(to_status)?;
        reply(
            self.registry
                .update_connector(&caller, &connector, update)
                .await,
        )
    }

    async fn delete_connector(
        &self,
        request: Request<pb::DeleteConnectorRequest>,
    ) -> Reply<pb::DeleteConnectorResponse> {
        let caller = self.caller(request.metadata()).await?;
        let connector =
            connector_ref("connector", &request.get_ref().connector).map_err(to_status)?;
        let (connector, removed_links) = self
            .registry
            .delete_connector(&caller, &connector)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeleteConnectorResponse {
            connector: Some(connector.into()),
            removed_links: u32::try_from(removed_links).unwrap_or(u32::MAX),
        }))
    }

    async fn attach_project(
        &self,
        request: Request<pb::AttachProjectRequest>,
    ) -> Reply<pb::ProjectLink> {
        let caller = self.caller(request.metadata()).await?;
        let (connector, project, environments) =
            attachment(request.into_inner()).map_err(to_status)?;
        reply(
            self.registry
                .attach_project(&caller, &connector, &project, environments)
                .await,
        )
    }

    async fn detach_project(
        &self,
        request: Request<pb::DetachProjectRequest>,
    ) -> Reply<pb::DetachProjectResponse> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.get_ref();
        let (connector, project) = link_refs(&req.connector, &req.project).map_err(to_status)?;
        let link = self
            .registry
            .detach_project(&caller, &connector, &project)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DetachProjectResponse {
            link: Some(link.into()),
        }))
    }

    async fn get_project_link(
        &self,
        request: Request<pb::GetProjectLinkRequest>,
    ) -> Reply<pb::ProjectLink> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.get_ref();
        let (connector, project) = link_refs(&req.connector, &req.project).map_err(to_status)?;
        reply(
            self.registry
                .get_project_link(&caller, &connector, &project)
                .await,
        )
    }

    async fn list_project_links(
        &self,
        request: Request<pb::ListProjectLinksRequest>,
    ) -> Reply<pb::ListProjectLinksResponse> {
        let caller = self.caller(request.metadata()).await?;
        let (filter, page) = link_listing(request.into_inner()).map_err(to_status)?;
        let page = self
            .registry
            .list_project_links(&caller, filter, page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListProjectLinksResponse {
            links: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Reply<pb::ListAuditEventsResponse> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.get_ref();
        let page = page_request(req.page_size, &req.page_token).map_err(to_status)?;
        let page = self
            .registry
            .list_audit_events(&caller, page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
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

    async fn list_issuances(
        &self,
        request: Request<pb::ListIssuancesRequest>,
    ) -> Reply<pb::ListIssuancesResponse> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.get_ref();
        let (connector, project, environment) = convert::issuance_query(req).map_err(to_status)?;
        let page = page_request(req.page_size, &req.page_token).map_err(to_status)?;
        let page = self
            .registry
            .list_issuances(&caller, connector.as_ref(), project, environment, page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListIssuancesResponse {
            issuances: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
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

    async fn create_installation(
        &self,
        request: Request<pb::CreateInstallationRequest>,
    ) -> Reply<pb::Installation> {
        let caller = self.caller(request.metadata()).await?;
        let (connector, new) =
            convert::new_installation(request.into_inner()).map_err(to_status)?;
        let created = self
            .registry
            .create_installation(&caller, &connector, new)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::installation(created, None)))
    }

    async fn list_installations(
        &self,
        request: Request<pb::ListInstallationsRequest>,
    ) -> Reply<pb::ListInstallationsResponse> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.get_ref();
        let connector = connector_ref("connector", &req.connector).map_err(to_status)?;
        let page = page_request(req.page_size, &req.page_token).map_err(to_status)?;
        let (connector, page) = self
            .registry
            .list_installations(&caller, &connector, page)
            .await
            .map_err(to_status)?;
        let default = connector.default_installation_id.as_ref();
        Ok(Response::new(pb::ListInstallationsResponse {
            installations: page
                .items
                .into_iter()
                .map(|i| convert::installation(i, default))
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn delete_installation(
        &self,
        request: Request<pb::DeleteInstallationRequest>,
    ) -> Reply<pb::DeleteInstallationResponse> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.get_ref();
        let connector = connector_ref("connector", &req.connector).map_err(to_status)?;
        let (gone, revocation) = self
            .registry
            .delete_installation(&caller, &connector, &req.installation_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeleteInstallationResponse {
            installation: Some(convert::installation(gone, None)),
            revocation: Some(revocation.into()),
        }))
    }

    async fn revoke_tokens(
        &self,
        request: Request<pb::RevokeTokensRequest>,
    ) -> Reply<pb::RevokeTokensResponse> {
        let caller = self.caller(request.metadata()).await?;
        let (connector, filter) = convert::revocation(request.into_inner()).map_err(to_status)?;
        reply(
            self.registry
                .revoke_tokens(&caller, &connector, filter)
                .await,
        )
    }

    async fn import_grants(
        &self,
        request: Request<pb::ImportGrantsRequest>,
    ) -> Reply<pb::ImportGrantsResponse> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.into_inner();
        let users: Vec<String> = req.grants.iter().map(|g| g.user_id.clone()).collect();
        let (connector, grants) = convert::imported_grants(req).map_err(to_status)?;
        let (imported, errors) = self
            .registry
            .import_grants(&caller, &connector, grants)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ImportGrantsResponse {
            imported: u32::try_from(imported).unwrap_or(u32::MAX),
            errors: errors
                .into_iter()
                .map(|(index, error)| {
                    let status = to_status(error);
                    pb::ImportGrantError {
                        index: i32::try_from(index).unwrap_or(i32::MAX),
                        user_id: users.get(index).cloned().unwrap_or_default(),
                        reason: tonic_types::StatusExt::get_details_error_info(&status)
                            .map(|i| i.reason)
                            .unwrap_or_default(),
                        message: status.message().to_owned(),
                    }
                })
                .collect(),
        }))
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Reply<pb::ListGrantsResponse> {
        let caller = self.caller(request.metadata()).await?;
        let (connector, user, environment, page) =
            convert::grant_query(request.into_inner()).map_err(to_status)?;
        let (page, uids) = self
            .registry
            .list_grants(&caller, connector.as_ref(), user, environment, page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListGrantsResponse {
            grants: page
                .items
                .into_iter()
                .map(|g| {
                    let uid = uids
                        .get(&g.key.connector_id)
                        .map(|u| u.to_string())
                        .unwrap_or_default();
                    convert::grant(g, &uid)
                })
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn begin_authorization(
        &self,
        request: Request<pb::BeginAuthorizationRequest>,
    ) -> Reply<pb::BeginAuthorizationResponse> {
        let caller = self.caller(request.metadata()).await?;
        let pending = convert::new_pending(request.into_inner()).map_err(to_status)?;
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
        let state = &request.get_ref().state;
        if state.is_empty() || state.len() > 256 {
            return Err(to_status(RegistryError::invalid(
                "state",
                "state must be 1 to 256 characters",
            )));
        }
        let opened = self
            .registry
            .complete_authorization(&caller, state)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::opened_pending(opened)))
    }

    async fn store_grant(&self, request: Request<pb::StoreGrantRequest>) -> Reply<pb::Grant> {
        let caller = self.caller(request.metadata()).await?;
        let (key, tokens) = convert::grant_to_store(request.into_inner()).map_err(to_status)?;
        let stored = self
            .registry
            .store_grant(&caller, key, tokens)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::grant(stored, "")))
    }

    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Reply<pb::LeaseGrantResponse> {
        let caller = self.caller(request.metadata()).await?;
        let (key, min_ttl, lease) =
            convert::lease_query(request.into_inner()).map_err(to_status)?;
        let answer = self
            .registry
            .lease_grant(&caller, &key, min_ttl, lease)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::lease_answer(answer)))
    }

    async fn commit_grant(
        &self,
        request: Request<pb::CommitGrantRequest>,
    ) -> Reply<pb::CommitGrantResponse> {
        let caller = self.caller(request.metadata()).await?;
        let (key, lease_id, fence, report) =
            convert::commit(request.into_inner()).map_err(to_status)?;
        let access = self
            .registry
            .commit_grant(&caller, &key, &lease_id, fence, report)
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
        let connector = crate::domain::types::ConnectorId::parse(&req.connector_id)
            .map_err(|e| to_status(RegistryError::invalid("connector_id", e)))?;
        if req.ids.len() > 1000 {
            return Err(to_status(RegistryError::invalid("ids", "at most 1000 ids")));
        }
        self.registry
            .finish_grant_revocations(&caller, &connector, &req.ids)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::FinishGrantRevocationsResponse {}))
    }

    async fn report_revocations(
        &self,
        request: Request<pb::ReportRevocationsRequest>,
    ) -> Reply<pb::ReportRevocationsResponse> {
        let caller = self.caller(request.metadata()).await?;
        let (team, connector, outcomes) =
            convert::revocation_report(request.into_inner()).map_err(to_status)?;
        let updated = self
            .registry
            .report_revocations(&caller, &team, &connector, outcomes)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ReportRevocationsResponse {
            updated: u32::try_from(updated).unwrap_or(u32::MAX),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(values: &[&str]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for v in values {
            map.append("authorization", v.parse().unwrap());
        }
        map
    }

    #[test]
    fn exactly_one_bearer_value_is_accepted() {
        assert_eq!(bearer(&metadata(&["Bearer abc"])), Some("abc"));
        assert_eq!(bearer(&metadata(&["bearer abc"])), Some("abc"));
        assert_eq!(bearer(&metadata(&[])), None);
        assert_eq!(bearer(&metadata(&["Basic abc"])), None);
        assert_eq!(bearer(&metadata(&["abc"])), None);
        assert_eq!(bearer(&metadata(&["Bearer a", "Bearer b"])), None);
    }
}
