//! `connect.registry.v1.LinkRegistry`: the admin API, for `admin` and `viewer` keys. A `broker`
//! key is refused here before anything is read; which of the two roles may write is the domain's
//! rule.

use connect_proto::registry::v1::{self as pb, link_registry_server::LinkRegistry};
use tonic::{Request, Response, Status, metadata::MetadataMap};

use super::{ADMIN_API, Reply, convert, reply, status::to_status};
use crate::domain::{
    Caller, FieldViolation, Registry, RegistryError,
    service::{EnvironmentEdit, ExplainQuery, NewConnector, NewProject, NewRoleBinding},
    store::AuditFilter,
    types::KeyId,
};
use crate::operators::Operators;
use convert::{
    Attachment, ConnectorEdit, GrantImport, GrantQuery, InstallationRequest, IssuanceQuery,
    LinkListing, LinkRefs, TokenRevocation, connector_ref, page_request, project_ref,
};

/// The `LinkRegistry` service over a [`Registry`].
#[derive(Debug, Clone)]
pub struct LinkRegistryService {
    registry: Registry,
    /// Verifies people's ID tokens; `None`: API keys only.
    operators: Option<Operators>,
}

impl LinkRegistryService {
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            operators: None,
        }
    }

    /// The same service, accepting people's ID tokens too.
    pub fn with_operators(mut self, operators: Option<Operators>) -> Self {
        self.operators = operators;
        self
    }

    /// The one role check of the admin API: an API key, or a person's ID token and the role
    /// their bindings give them in the team (named with `connect-team` when they have several).
    async fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let bearer = super::admin_bearer(metadata, self.operators.as_ref());
        if let Some(person) = super::person(self.operators.as_ref(), bearer).await {
            let team = super::named_team(metadata)?;
            return self
                .registry
                .person_caller(person?, team.as_ref())
                .await
                .map_err(to_status);
        }
        ADMIN_API.caller(&self.registry, metadata).await
    }
}

#[tonic::async_trait]
impl LinkRegistry for LinkRegistryService {
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

    async fn list_connector_types(
        &self,
        request: Request<pb::ListConnectorTypesRequest>,
    ) -> Reply<pb::ListConnectorTypesResponse> {
        let caller = self.caller(request.metadata()).await?;
        let types = self.registry.connector_types(&caller).map_err(to_status)?;
        Ok(Response::new(pb::ListConnectorTypesResponse {
            types: types.iter().map(convert::connector_type).collect(),
        }))
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
        let edit = ConnectorEdit::try_from(request.into_inner()).map_err(to_status)?;
        reply(
            self.registry
                .update_connector(&caller, &edit.connector, edit.update)
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
        let link = Attachment::try_from(request.into_inner()).map_err(to_status)?;
        reply(
            self.registry
                .attach_project_with(&caller, &link.connector, &link.project, link.terms)
                .await,
        )
    }

    async fn detach_project(
        &self,
        request: Request<pb::DetachProjectRequest>,
    ) -> Reply<pb::DetachProjectResponse> {
        let caller = self.caller(request.metadata()).await?;
        let link = LinkRefs::try_from(request.get_ref()).map_err(to_status)?;
        let link = self
            .registry
            .detach_project(&caller, &link.connector, &link.project)
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
        let link = LinkRefs::try_from(request.get_ref()).map_err(to_status)?;
        reply(
            self.registry
                .get_project_link(&caller, &link.connector, &link.project)
                .await,
        )
    }

    async fn explain_access(
        &self,
        request: Request<pb::ExplainAccessRequest>,
    ) -> Reply<pb::ExplainAccessResponse> {
        let caller = self.caller(request.metadata()).await?;
        let query = ExplainQuery::try_from(request.into_inner()).map_err(to_status)?;
        reply(self.registry.explain_access(&caller, query).await)
    }

    async fn create_environment(
        &self,
        request: Request<pb::CreateEnvironmentRequest>,
    ) -> Reply<pb::Environment> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.into_inner();
        let project = project_ref("project", &req.project).map_err(to_status)?;
        let name = if req.name.is_empty() {
            &req.slug
        } else {
            &req.name
        };
        let name = crate::domain::types::DisplayName::parse(name)
            .map_err(|why| to_status(RegistryError::invalid("name", why)))?;
        reply(
            self.registry
                .create_environment(&caller, &project, &req.slug, name)
                .await,
        )
    }

    async fn list_environments(
        &self,
        request: Request<pb::ListEnvironmentsRequest>,
    ) -> Reply<pb::ListEnvironmentsResponse> {
        let caller = self.caller(request.metadata()).await?;
        let project = project_ref("project", &request.get_ref().project).map_err(to_status)?;
        let environments = self
            .registry
            .list_environments(&caller, &project)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListEnvironmentsResponse {
            environments: environments.into_iter().map(Into::into).collect(),
        }))
    }

    async fn update_environment(
        &self,
        request: Request<pb::UpdateEnvironmentRequest>,
    ) -> Reply<pb::Environment> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.into_inner();
        let project = project_ref("project", &req.project).map_err(to_status)?;
        let named = convert::environment_ref("environment", &req.environment).map_err(to_status)?;
        let name = if req.name.is_empty() {
            None
        } else {
            Some(
                crate::domain::types::DisplayName::parse(&req.name)
                    .map_err(|why| to_status(RegistryError::invalid("name", why)))?,
            )
        };
        let edit = EnvironmentEdit {
            slug: (!req.slug.is_empty()).then_some(req.slug),
            name,
        };
        reply(
            self.registry
                .update_environment(&caller, &project, &named, edit)
                .await,
        )
    }

    async fn delete_environment(
        &self,
        request: Request<pb::DeleteEnvironmentRequest>,
    ) -> Reply<pb::DeleteEnvironmentResponse> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.into_inner();
        let project = project_ref("project", &req.project).map_err(to_status)?;
        let named = convert::environment_ref("environment", &req.environment).map_err(to_status)?;
        let (environment, removal) = self
            .registry
            .delete_environment(&caller, &project, &named)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeleteEnvironmentResponse {
            environment: Some(environment.into()),
            updated_links: removal.updated_links.into_iter().map(Into::into).collect(),
            removed_links: removal.removed_links.into_iter().map(Into::into).collect(),
        }))
    }

    async fn list_project_links(
        &self,
        request: Request<pb::ListProjectLinksRequest>,
    ) -> Reply<pb::ListProjectLinksResponse> {
        let caller = self.caller(request.metadata()).await?;
        let listing = LinkListing::try_from(request.into_inner()).map_err(to_status)?;
        let page = self
            .registry
            .list_project_links(&caller, listing.filter, listing.unused_for, listing.page)
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
        let filter = AuditFilter::try_from(req).map_err(to_status)?;
        let page = page_request(req.page_size, &req.page_token).map_err(to_status)?;
        let page = self
            .registry
            .list_audit_events(&caller, &filter, page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_issuances(
        &self,
        request: Request<pb::ListIssuancesRequest>,
    ) -> Reply<pb::ListIssuancesResponse> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.get_ref();
        let query = IssuanceQuery::try_from(req).map_err(to_status)?;
        let page = page_request(req.page_size, &req.page_token).map_err(to_status)?;
        let page = self
            .registry
            .list_issuances(
                &caller,
                query.connector.as_ref(),
                query.project,
                query.environment,
                page,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListIssuancesResponse {
            issuances: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn create_installation(
        &self,
        request: Request<pb::CreateInstallationRequest>,
    ) -> Reply<pb::Installation> {
        let caller = self.caller(request.metadata()).await?;
        let new = InstallationRequest::try_from(request.into_inner()).map_err(to_status)?;
        let created = self
            .registry
            .create_installation(&caller, &new.connector, new.installation)
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
        let revocation = TokenRevocation::try_from(request.into_inner()).map_err(to_status)?;
        reply(
            self.registry
                .revoke_tokens(&caller, &revocation.connector, revocation.filter)
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
        let import = GrantImport::try_from(req).map_err(to_status)?;
        let (imported, errors) = self
            .registry
            .import_grants(&caller, &import.connector, import.grants)
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
        let query = GrantQuery::try_from(request.into_inner()).map_err(to_status)?;
        let (page, uids) = self
            .registry
            .list_grants(
                &caller,
                query.connector.as_ref(),
                query.user,
                query.environment,
                query.project,
                query.page,
            )
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

    async fn create_role_binding(
        &self,
        request: Request<pb::CreateRoleBindingRequest>,
    ) -> Reply<pb::RoleBinding> {
        let caller = self.caller(request.metadata()).await?;
        let new = NewRoleBinding::try_from(request.into_inner()).map_err(to_status)?;
        reply(self.registry.create_role_binding(&caller, new).await)
    }

    async fn list_role_bindings(
        &self,
        request: Request<pb::ListRoleBindingsRequest>,
    ) -> Reply<pb::ListRoleBindingsResponse> {
        let caller = self.caller(request.metadata()).await?;
        let team = convert::team_of("team", &request.get_ref().team).map_err(to_status)?;
        let bindings = self
            .registry
            .list_role_bindings(&caller, team.as_ref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListRoleBindingsResponse {
            bindings: bindings.into_iter().map(Into::into).collect(),
        }))
    }

    async fn delete_role_binding(
        &self,
        request: Request<pb::DeleteRoleBindingRequest>,
    ) -> Reply<pb::RoleBinding> {
        let caller = self.caller(request.metadata()).await?;
        let id = &request.get_ref().id;
        if id.is_empty() || id.len() > 64 {
            return Err(to_status(crate::domain::RegistryError::invalid(
                "id",
                "id must be a role binding's id (rb_…)",
            )));
        }
        reply(self.registry.delete_role_binding(&caller, id).await)
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Reply<pb::ListApiKeysResponse> {
        let caller = self.caller(request.metadata()).await?;
        let keys = self
            .registry
            .list_team_api_keys(&caller)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.into_iter().map(Into::into).collect(),
        }))
    }

    async fn revoke_api_key(&self, request: Request<pb::RevokeApiKeyRequest>) -> Reply<pb::ApiKey> {
        let caller = self.caller(request.metadata()).await?;
        let id = KeyId::parse(&request.get_ref().id).map_err(|e| {
            to_status(RegistryError::InvalidArgument(vec![FieldViolation::new(
                "id", e,
            )]))
        })?;
        reply(self.registry.revoke_team_api_key(&caller, &id).await)
    }

    /// Any valid credential: no role check beyond authentication.
    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Reply<pb::WhoAmIResponse> {
        // A person bound nowhere learns that they are.
        let bearer = super::admin_bearer(request.metadata(), self.operators.as_ref());
        if let Some(person) = super::person(self.operators.as_ref(), bearer).await {
            return reply(self.registry.who_is(person?).await);
        }
        let caller = super::authenticated(&self.registry, request.metadata()).await?;
        Ok(Response::new(self.registry.who_am_i(&caller).into()))
    }
}
