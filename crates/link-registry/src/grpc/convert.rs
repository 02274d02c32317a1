//! Every conversion between wire messages and domain values. Requests become domain inputs through
//! `TryFrom`, collecting one `FieldViolation` per bad field (so a client learns about all of them at
//! once); domain records become messages through `From`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use connect_proto::registry::v1 as pb;
use prost_types::{ListValue, Struct, Timestamp, value::Kind};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::domain::{
    FieldViolation, RegistryError,
    changes::FeedEvent,
    model::{AuditEvent, Authorization, Connector, Issuance, Project, ProjectLink},
    page::{LinkKey, PageKey, PageRequest},
    service::{AuthorizeQuery, ConnectorUpdate, NewConnector, NewIssuance, NewProject},
    store::LinkFilter,
    types::{
        ConfigMap, ConnectorId, ConnectorRef, ConnectorType, ConnectorUid, DisplayName,
        Environment, EnvironmentSet, Invalid, ProjectId, ProjectName, ProjectRef, SecretInput,
        TeamId,
    },
};

/// Collects field violations while a request is converted.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn check<T>(&mut self, field: &str, parsed: Result<T, Invalid>) -> Option<T> {
        parsed
            .map_err(|e| self.0.push(FieldViolation::new(field, e)))
            .ok()
    }

    fn check_map<T>(
        &mut self,
        field: &str,
        parsed: Result<T, Vec<(String, Invalid)>>,
    ) -> Option<T> {
        parsed
            .map_err(|errors| {
                for (key, e) in errors {
                    let name = if key.is_empty() {
                        field.to_owned()
                    } else {
                        format!("{field}[{key}]")
                    };
                    self.0.push(FieldViolation::new(name, e));
                }
            })
            .ok()
    }

    fn push(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// The value when nothing was violated.
    fn finish<T>(self, value: Option<T>) -> Result<T, RegistryError> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(RegistryError::InvalidArgument(self.0)),
        }
    }
}

fn page<K: PageKey>(v: &mut Violations, size: i32, token: &str) -> Option<PageRequest<K>> {
    let size = v.check("page_size", PageRequest::<K>::parse_size(size));
    let after = v.check("page_token", PageRequest::<K>::parse_token(token));
    Some(PageRequest {
        size: size?,
        after: after?,
    })
}

/// A connector reference from a request field.
pub fn connector_ref(field: &str, value: &str) -> Result<ConnectorRef, RegistryError> {
    ConnectorRef::parse(value).map_err(|e| RegistryError::invalid(field, e))
}

impl TryFrom<pb::CreateProjectRequest> for NewProject {
    type Error = RegistryError;

    fn try_from(req: pb::CreateProjectRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let id = v.check("id", ProjectId::parse(&req.id));
        let name = v.check("name", ProjectName::parse(&req.name));
        let value = id.zip(name).map(|(id, name)| NewProject { id, name });
        v.finish(value)
    }
}

pub fn project_ref(field: &str, value: &str) -> Result<ProjectRef, RegistryError> {
    ProjectRef::parse(value).map_err(|e| RegistryError::invalid(field, e))
}

/// `page_size` and `page_token` of a `List*` request.
pub fn page_request<K: PageKey>(size: i32, token: &str) -> Result<PageRequest<K>, RegistryError> {
    let mut v = Violations::default();
    let value = page(&mut v, size, token);
    v.finish(value)
}

impl TryFrom<pb::CreateConnectorRequest> for NewConnector {
    type Error = RegistryError;

    fn try_from(req: pb::CreateConnectorRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let uid = v.check("uid", ConnectorUid::parse(&req.uid));
        if !req.r#type.is_empty()
            && let Some(kind) = v.check("type", ConnectorType::parse(&req.r#type))
            && let Some(uid) = &uid
            && kind != uid.kind()
        {
            v.push(
                "type",
                format!(
                    "type must be the type part of uid ('{}')",
                    uid.kind().as_str()
                ),
            );
        }
        let name = match (&uid, req.name.is_empty()) {
            (Some(uid), true) => v.check("name", DisplayName::parse(uid.name())),
            (None, true) => None, // defaults from the uid, which is already reported
            (_, false) => v.check("name", DisplayName::parse(&req.name)),
        };
        let config = v.check_map("config", ConfigMap::parse(&req.config));
        let secrets = v.check_map("secrets", SecretInput::parse(req.secrets));
        let value = match (uid, name, config, secrets) {
            (Some(uid), Some(name), Some(config), Some(secrets)) => Some(NewConnector {
                uid,
                name,
                config,
                secrets,
            }),
            _ => None,
        };
        v.finish(value)
    }
}

/// The connector reference and the update of an `UpdateConnectorRequest`.
pub fn connector_update(
    req: pb::UpdateConnectorRequest,
) -> Result<(ConnectorRef, ConnectorUpdate), RegistryError> {
    {
        let mut v = Violations::default();
        let connector = v.check("connector", ConnectorRef::parse(&req.connector));
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            v.push(
                "update_mask",
                "update_mask must name at least one of name, config, secrets, suspended",
            );
        }
        let mut update = ConnectorUpdate::default();
        let mut secrets = Some(req.secrets);
        for path in &paths {
            match path.as_str() {
                "name" => update.name = v.check("name", DisplayName::parse(&req.name)),
                "config" => update.config = v.check_map("config", ConfigMap::parse(&req.config)),
                "secrets" => {
                    if let Some(secrets) = secrets.take() {
                        update.secrets = v.check_map("secrets", SecretInput::parse(secrets));
                    }
                }
                "suspended" => update.suspended = Some(req.suspended),
                other => v.push(
                    "update_mask",
                    format!(
                        "unknown path {:?}: only name, config, secrets and suspended can change",
                        crate::domain::types::truncate(other, 40)
                    ),
                ),
            }
        }
        v.finish(connector.map(|c| (c, update)))
    }
}

/// The connector, project and environments of an `AttachProjectRequest`.
pub fn attachment(
    req: pb::AttachProjectRequest,
) -> Result<(ConnectorRef, ProjectRef, EnvironmentSet), RegistryError> {
    {
        let mut v = Violations::default();
        let connector = v.check("connector", ConnectorRef::parse(&req.connector));
        let project = v.check("project", ProjectRef::parse(&req.project));
        let environments = v.check("environments", EnvironmentSet::parse(&req.environments));
        let value = match (connector, project, environments) {
            (Some(c), Some(p), Some(e)) => Some((c, p, e)),
            _ => None,
        };
        v.finish(value)
    }
}

/// The connector and project of a `DetachProject` or `GetProjectLink` request.
pub fn link_refs(
    connector: &str,
    project: &str,
) -> Result<(ConnectorRef, ProjectRef), RegistryError> {
    let mut v = Violations::default();
    let c = v.check("connector", ConnectorRef::parse(connector));
    let p = v.check("project", ProjectRef::parse(project));
    v.finish(c.zip(p))
}

/// The filter and page of a `ListProjectLinksRequest`.
pub fn link_listing(
    req: pb::ListProjectLinksRequest,
) -> Result<(LinkFilter, PageRequest<LinkKey>), RegistryError> {
    {
        let mut v = Violations::default();
        let mut filter = LinkFilter::default();
        if !req.connector.is_empty() {
            filter.connector = v.check("connector", ConnectorRef::parse(&req.connector));
        }
        if !req.project.is_empty() {
            filter.project = v.check("project", ProjectRef::parse(&req.project));
        }
        let page = page(&mut v, req.page_size, &req.page_token);
        v.finish(page.map(|p| (filter, p)))
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
        let value = match (owner_id, project_id, environment, connector) {
            (Some(owner_id), Some(project_id), Some(environment), Some(connector)) => {
                Some(AuthorizeQuery {
                    owner_id,
                    project_id,
                    environment,
                    issuer: req.issuer,
                    connector,
                })
            }
            _ => None,
        };
        v.finish(value)
    }
}

impl TryFrom<pb::RecordIssuanceRequest> for NewIssuance {
    type Error = RegistryError;

    fn try_from(req: pb::RecordIssuanceRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let Some(i) = req.issuance else {
            v.push("issuance", "issuance is required");
            return v.finish(None);
        };
        let team_id = v.check("issuance.owner_id", TeamId::parse(&i.owner_id));
        let project_id = v.check("issuance.project_id", ProjectId::parse(&i.project_id));
        let environment = v.check("issuance.environment", Environment::parse(&i.environment));
        let connector_id = v.check("issuance.connector_id", ConnectorId::parse(&i.connector_id));
        let time = |t: Option<Timestamp>| {
            t.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
        };
        let issued_at = time(i.issue_time);
        if issued_at.is_none() {
            v.push("issuance.issue_time", "issue_time is required");
        }
        let expires_at = time(i.expire_time);
        let value = match (team_id, project_id, environment, connector_id, issued_at) {
            (
                Some(team_id),
                Some(project_id),
                Some(environment),
                Some(connector_id),
                Some(issued_at),
            ) => Some(NewIssuance {
                token_id: i.token_id,
                team_id,
                project_id,
                environment,
                connector_id,
                subject: i.subject,
                installation_id: i.installation_id,
                scopes: i.scopes,
                issued_at,
                expires_at,
            }),
            _ => None,
        };
        v.finish(value)
    }
}

/// The filters of `ListIssuances`: each empty field means "any".
pub type IssuanceQuery = (Option<ConnectorRef>, Option<ProjectId>, Option<Environment>);

pub fn issuance_query(req: &pb::ListIssuancesRequest) -> Result<IssuanceQuery, RegistryError> {
    let mut v = Violations::default();
    let connector = (!req.connector.is_empty())
        .then(|| v.check("connector", ConnectorRef::parse(&req.connector)))
        .flatten();
    let project = (!req.project.is_empty())
        .then(|| v.check("project", ProjectId::parse(&req.project)))
        .flatten();
    let environment = (!req.environment.is_empty())
        .then(|| v.check("environment", Environment::parse(&req.environment)))
        .flatten();
    v.finish(Some((connector, project, environment)))
}

impl From<Issuance> for pb::Issuance {
    fn from(i: Issuance) -> Self {
        Self {
            token_id: i.token_id,
            connector_id: i.connector_id.to_string(),
            connector_uid: i.connector_uid.to_string(),
            owner_id: i.team_id.to_string(),
            project_id: i.project_id.to_string(),
            environment: i.environment.as_str().to_owned(),
            subject: i.subject,
            installation_id: i.installation_id,
            scopes: i.scopes,
            issue_time: Some(timestamp(i.issued_at)),
            expire_time: i.expires_at.map(timestamp),
            revoked: i.revoked,
        }
    }
}

pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

impl From<Project> for pb::Project {
    fn from(p: Project) -> Self {
        Self {
            id: p.id.to_string(),
            name: p.name.to_string(),
            owner_id: p.team_id.to_string(),
            create_time: Some(timestamp(p.created_at)),
        }
    }
}

impl From<Connector> for pb::Connector {
    fn from(c: Connector) -> Self {
        Self {
            secret_names: c.secret_names(),
            r#type: c.uid.kind().as_str().to_owned(),
            id: c.id.to_string(),
            uid: c.uid.to_string(),
            name: c.name.to_string(),
            config: c.config.as_map().clone().into_iter().collect(),
            owner_id: c.team_id.to_string(),
            create_time: Some(timestamp(c.created_at)),
            update_time: Some(timestamp(c.updated_at)),
            suspended: c.suspended,
        }
    }
}

impl From<ProjectLink> for pb::ProjectLink {
    fn from(l: ProjectLink) -> Self {
        Self {
            connector_id: l.connector_id.to_string(),
            connector_uid: l.connector_uid.to_string(),
            project_id: l.project_id.to_string(),
            project_name: l.project_name.to_string(),
            environments: l.environments.names(),
            owner_id: l.team_id.to_string(),
            create_time: Some(timestamp(l.created_at)),
            update_time: Some(timestamp(l.updated_at)),
        }
    }
}

impl From<AuditEvent> for pb::AuditEvent {
    fn from(e: AuditEvent) -> Self {
        Self {
            id: e.id.to_string(),
            owner_id: e.team_id.map(|t| t.to_string()).unwrap_or_default(),
            actor: e.actor,
            action: e.action,
            target: e.target,
            before: e.before.and_then(json_struct),
            after: e.after.and_then(json_struct),
            time: Some(timestamp(e.time)),
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
                }
            }
        }
    }
}

impl From<Authorization> for pb::AuthorizeResponse {
    fn from(a: Authorization) -> Self {
        Self {
            secrets: a
                .secrets
                .iter()
                .map(|(name, value)| (name.clone(), value.expose_secret().to_owned()))
                .collect(),
            connector: Some(a.connector.into()),
            link: Some(a.link.into()),
        }
    }
}

fn json_struct(value: Value) -> Option<Struct> {
    match value {
        Value::Object(map) => Some(Struct {
            fields: map
                .into_iter()
                .map(|(k, v)| (k, json_value(v)))
                .collect::<BTreeMap<_, _>>(),
        }),
        _ => None,
    }
}

fn json_value(value: Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(json_value).collect(),
        }),
        object @ Value::Object(_) => Kind::StructValue(json_struct(object).unwrap_or_default()),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_create_connector_request_names_every_bad_field() {
        let req = pb::CreateConnectorRequest {
            uid: "api-key/stripe".into(),
            r#type: "oauth2".into(),
            name: String::new(),
            config: [("bad key".to_owned(), "x".to_owned())].into(),
            secrets: [("api_key".to_owned(), String::new())].into(),
        };
        let Err(RegistryError::InvalidArgument(violations)) = NewConnector::try_from(req) else {
            panic!("expected InvalidArgument");
        };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["type", "config[bad key]", "secrets[api_key]"]);
    }

    #[test]
    fn a_connector_name_defaults_to_the_uid_name() {
        let req = pb::CreateConnectorRequest {
            uid: "api-key/stripe".into(),
            ..Default::default()
        };
        let new = NewConnector::try_from(req).unwrap();
        assert_eq!(new.name.as_str(), "stripe");
    }

    #[test]
    fn update_masks_must_name_known_fields() {
        let req = pb::UpdateConnectorRequest {
            connector: "api-key/stripe".into(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["uid".into()],
            }),
            ..Default::default()
        };
        let Err(RegistryError::InvalidArgument(violations)) = connector_update(req) else {
            panic!("expected InvalidArgument");
        };
        assert_eq!(violations[0].field, "update_mask");
    }

    #[test]
    fn audit_json_becomes_a_struct() {
        let s = json_struct(serde_json::json!({"a": [1, "x", null], "b": {"c": true}})).unwrap();
        assert!(matches!(s.fields["a"].kind, Some(Kind::ListValue(_))));
        assert!(matches!(s.fields["b"].kind, Some(Kind::StructValue(_))));
    }
}
