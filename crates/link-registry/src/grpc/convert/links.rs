//! Links and the decisions made on them: attach, detach and list requests, `Authorize` in and
//! out, and the change feed's events.

use std::collections::BTreeMap;

use connect_proto::registry::v1 as pb;
use secrecy::ExposeSecret;

use super::{Violations, installation, page, timestamp};
use crate::domain::{
    RegistryError,
    changes::FeedEvent,
    model::{Authorization, LinkLimits, ProjectEnvironment, ProjectLink},
    page::{LinkKey, PageRequest},
    service::{AuthorizeQuery, ExplainQuery, Explanation, InstallationAsk, Refusal},
    store::{LinkFilter, LinkTerms},
    types::{
        ConnectorRef, CustomEnvironment, EVERY_INSTALLATION, Environment, EnvironmentSet,
        InstallationId, ProjectId, ProjectRef, TeamId,
    },
};

/// An `AttachProjectRequest`: the link and the terms it is to have.
#[derive(Debug)]
pub struct Attachment {
    pub connector: ConnectorRef,
    pub project: ProjectRef,
    pub terms: LinkTerms,
}

/// A link's environments as asked: the built-in ones, and custom ones by id or slug (resolved
/// against the project's by the registry); at least one.
fn environments(
    v: &mut Violations,
    names: &[String],
) -> Option<(EnvironmentSet, Vec<CustomEnvironment>)> {
    if names.is_empty() {
        v.push(
            "environments",
            "environments must name at least one environment: production, preview, development, or a custom one",
        );
        return None;
    }
    let mut parsed = Vec::with_capacity(names.len());
    for name in names {
        parsed.push(v.check("environments", Environment::parse(name))?);
    }
    let mut custom: Vec<CustomEnvironment> =
        parsed.iter().filter_map(|e| e.custom().copied()).collect();
    custom.sort();
    custom.dedup();
    Some((EnvironmentSet::of(&parsed), custom))
}

/// Subject kinds by their wire names, each unknown one a violation of `allowed_subjects`.
fn subject_kinds(v: &mut Violations, names: &[String]) -> Vec<connect_types::SubjectKind> {
    let mut kinds = Vec::with_capacity(names.len());
    for name in names {
        match connect_types::SubjectKind::parse(name) {
            Some(kind) => kinds.push(kind),
            None => v.push(
                "allowed_subjects",
                format!(
                    "'{}' is not a subject kind: app, user, jwt_bearer or token",
                    connect_types::truncate(name, 40)
                ),
            ),
        }
    }
    kinds
}

impl TryFrom<pb::AttachProjectRequest> for Attachment {
    type Error = RegistryError;

    fn try_from(req: pb::AttachProjectRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let connector = v.check("connector", ConnectorRef::parse(&req.connector));
        let project = v.check("project", ProjectRef::parse(&req.project));
        let environments = environments(&mut v, &req.environments);
        let expires_at = match req.expire_time {
            None => Some(None),
            Some(t) => match super::time_of(Some(t)) {
                Some(at) => Some(Some(at)),
                None => {
                    v.push("expire_time", "expire_time is not a valid time");
                    None
                }
            },
        };
        let subjects = subject_kinds(&mut v, &req.allowed_subjects);
        let limits = LinkLimits {
            ceilings: connect_types::Ceilings {
                scopes: req.allowed_scopes,
                resources: req.allowed_resources,
                installations: req.allowed_installations,
                subjects,
            },
            max_issuances_per_hour: req.max_issuances_per_hour,
        };
        let value = match (connector, project, environments, expires_at) {
            (
                Some(connector),
                Some(project),
                Some((environments, custom_environments)),
                Some(expires_at),
            ) => Some(Attachment {
                connector,
                project,
                terms: LinkTerms {
                    environments,
                    custom_environments,
                    expires_at,
                    limits,
                },
            }),
            _ => None,
        };
        v.finish(value)
    }
}

/// The link a `DetachProject` or `GetProjectLink` request names.
#[derive(Debug)]
pub struct LinkRefs {
    pub connector: ConnectorRef,
    pub project: ProjectRef,
}

impl LinkRefs {
    pub fn parse(connector: &str, project: &str) -> Result<Self, RegistryError> {
        let mut v = Violations::default();
        let connector = v.check("connector", ConnectorRef::parse(connector));
        let project = v.check("project", ProjectRef::parse(project));
        v.finish(
            connector
                .zip(project)
                .map(|(connector, project)| Self { connector, project }),
        )
    }
}

impl TryFrom<&pb::DetachProjectRequest> for LinkRefs {
    type Error = RegistryError;

    fn try_from(req: &pb::DetachProjectRequest) -> Result<Self, Self::Error> {
        Self::parse(&req.connector, &req.project)
    }
}

impl TryFrom<&pb::GetProjectLinkRequest> for LinkRefs {
    type Error = RegistryError;

    fn try_from(req: &pb::GetProjectLinkRequest) -> Result<Self, Self::Error> {
        Self::parse(&req.connector, &req.project)
    }
}

/// A `ListProjectLinksRequest`: which links (`None` filters mean "any") and which page.
#[derive(Debug)]
pub struct LinkListing {
    pub filter: LinkFilter,
    /// Only links unused for at least this long.
    pub unused_for: Option<chrono::Duration>,
    pub page: PageRequest<LinkKey>,
}

impl TryFrom<pb::ListProjectLinksRequest> for LinkListing {
    type Error = RegistryError;

    fn try_from(req: pb::ListProjectLinksRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let mut filter = LinkFilter::default();
        if !req.connector.is_empty() {
            filter.connector = v.check("connector", ConnectorRef::parse(&req.connector));
        }
        if !req.project.is_empty() {
            filter.project = v.check("project", ProjectRef::parse(&req.project));
        }
        let unused_for = match req.unused_for {
            None => Some(None),
            Some(d) => match std::time::Duration::try_from(d)
                .ok()
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .filter(|d| *d <= chrono::Duration::days(36_500))
            {
                Some(d) => Some(Some(d)),
                None => {
                    v.push(
                        "unused_for",
                        "unused_for must be a duration of 0 to 100 years",
                    );
                    None
                }
            },
        };
        let page = page(&mut v, req.page_size, &req.page_token);
        v.finish(page.zip(unused_for).map(|(page, unused_for)| Self {
            filter,
            unused_for,
            page,
        }))
    }
}

impl From<ProjectLink> for pb::ProjectLink {
    fn from(l: ProjectLink) -> Self {
        Self {
            connector_id: l.connector_id.to_string(),
            connector_uid: l.connector_uid.to_string(),
            project_id: l.project_id.to_string(),
            project_name: l.project_name.to_string(),
            environments: l.environment_names(),
            owner_id: l.team_id.to_string(),
            create_time: Some(timestamp(l.created_at)),
            update_time: Some(timestamp(l.updated_at)),
            expire_time: l.expires_at.map(timestamp),
            allowed_scopes: l.limits.ceilings.scopes,
            allowed_resources: l.limits.ceilings.resources,
            allowed_installations: l.limits.ceilings.installations,
            allowed_subjects: l
                .limits
                .ceilings
                .subjects
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            max_issuances_per_hour: l.limits.max_issuances_per_hour,
            last_issue_time: l.last_issued_at.map(timestamp),
        }
    }
}

/// `installation_id` of a runtime question: empty for the connector's default, `*` for every one.
fn installation_ask(v: &mut Violations, id: &str) -> Option<InstallationAsk> {
    match id {
        "" => Some(InstallationAsk::Default),
        EVERY_INSTALLATION => Some(InstallationAsk::Every),
        id => v
            .check("installation_id", InstallationId::parse(id))
            .map(InstallationAsk::One),
    }
}

impl TryFrom<pb::ExplainAccessRequest> for ExplainQuery {
    type Error = RegistryError;

    fn try_from(req: pb::ExplainAccessRequest) -> Result<Self, Self::Error> {
        use connect_types::SubjectKind;
        let mut v = Violations::default();
        let project = v.check("project", ProjectRef::parse(&req.project));
        let environment = v.check("environment", Environment::parse(&req.environment));
        let connector = v.check("connector", ConnectorRef::parse(&req.connector));
        let installation = installation_ask(&mut v, &req.installation_id);
        let subject = match req.subject.as_str() {
            "" | "app" => Some(SubjectKind::App),
            "jwt_bearer" => Some(SubjectKind::JwtBearer),
            "token" => Some(SubjectKind::Token),
            user if user.strip_prefix("user:").is_some_and(|id| !id.is_empty()) => {
                Some(SubjectKind::User)
            }
            _ => {
                v.push(
                    "subject",
                    "subject must be app, user:<id>, jwt_bearer or token",
                );
                None
            }
        };
        let value = match (project, environment, connector, installation, subject) {
            (
                Some(project),
                Some(environment),
                Some(connector),
                Some(installation),
                Some(subject),
            ) => Some(ExplainQuery {
                project,
                environment,
                connector,
                installation,
                subject,
                scopes: req.scopes,
                resources: req.resources,
            }),
            _ => None,
        };
        v.finish(value)
    }
}

impl From<Explanation> for pb::ExplainAccessResponse {
    fn from(e: Explanation) -> Self {
        Self {
            allowed: e.refusal.is_none(),
            reason: match &e.refusal {
                None => String::new(),
                Some(Refusal::Decision(error)) => {
                    crate::grpc::status::reason(error).as_str().into()
                }
                Some(Refusal::TypeRule(reason) | Refusal::Ceiling(reason)) => {
                    reason.as_str().into()
                }
            },
            checks: e
                .checks
                .into_iter()
                .map(|c| pb::AccessCheck {
                    name: c.name.into(),
                    outcome: c.outcome.as_str().into(),
                    detail: c.detail,
                    fix: c.fix,
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::AuthorizeRequest> for AuthorizeQuery {
    type Error = RegistryError;

    fn try_from(req: pb::AuthorizeRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let owner_id = v.check("owner_id", TeamId::parse(&req.owner_id));
        let project_id = v.check("project_id", ProjectId::parse(&req.project_id));
        let environment = v.check("environment", Environment::parse(&req.environment));
        if req.issuer.is_empty() || req.issuer.len() > 255 {
            v.push("issuer", "issuer must be 1 to 255 characters");
        }
        let connector = v.check("connector", ConnectorRef::parse(&req.connector));
        let installation = installation_ask(&mut v, &req.installation_id);
        let value = match (owner_id, project_id, environment, connector, installation) {
            (
                Some(owner_id),
                Some(project_id),
                Some(environment),
                Some(connector),
                Some(installation),
            ) => Some(AuthorizeQuery {
                owner_id,
                project_id,
                environment,
                issuer: req.issuer,
                connector,
                installation,
            }),
            _ => None,
        };
        v.finish(value)
    }
}

impl From<Authorization> for pb::AuthorizeResponse {
    fn from(a: Authorization) -> Self {
        let open = |secrets: &BTreeMap<String, secrecy::SecretString>| {
            secrets
                .iter()
                .map(|(name, value)| (name.clone(), value.expose_secret().to_owned()))
                .collect()
        };
        let (installation, installation_secrets) = match &a.installation {
            Some((i, secrets)) => (
                Some(installation(
                    i.clone(),
                    a.connector.default_installation_id.as_ref(),
                )),
                open(secrets),
            ),
            None => (None, Default::default()),
        };
        Self {
            environment_id: a.environment.as_str().to_owned(),
            owner_slug: a.team_slug.to_string(),
            secrets: open(&a.secrets),
            connector: Some(a.connector.into()),
            link: Some(a.link.into()),
            installation,
            installation_secrets,
        }
    }
}

impl From<FeedEvent> for pb::ChangeEvent {
    fn from(event: FeedEvent) -> Self {
        match event {
            FeedEvent::Resync { revision } => Self {
                revision,
                resync: true,
                ..Default::default()
            },
            FeedEvent::Heartbeat { revision } => Self {
                revision,
                ..Default::default()
            },
            FeedEvent::Change(change) => {
                let (connector_id, connector_uid) = change
                    .scope
                    .connector
                    .map(|(id, uid)| (id.to_string(), uid.to_string()))
                    .unwrap_or_default();
                Self {
                    revision: change.revision,
                    action: change.action,
                    owner_id: change.scope.team_id.to_string(),
                    connector_id,
                    connector_uid,
                    project_id: change
                        .scope
                        .project_id
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    resync: false,
                    installation_id: change.scope.installation_id.unwrap_or_default(),
                    subject: change.scope.subject.unwrap_or_default(),
                }
            }
        }
    }
}

impl From<ProjectEnvironment> for pb::Environment {
    fn from(e: ProjectEnvironment) -> Self {
        Self {
            id: e.id.as_str().to_owned(),
            slug: e.slug,
            name: e.name.to_string(),
            project: e.project_id.to_string(),
            create_time: Some(timestamp(e.created_at)),
        }
    }
}

/// A custom environment named by id or slug in `field`.
pub fn environment_ref(field: &str, value: &str) -> Result<CustomEnvironment, RegistryError> {
    match Environment::parse(value) {
        Ok(Environment::Custom(custom)) => Ok(custom),
        Ok(_) => Err(RegistryError::invalid(
            field,
            format!("{value} is a built-in environment: it cannot be changed or removed"),
        )),
        Err(why) => Err(RegistryError::invalid(field, why)),
    }
}
