//! Every conversion between wire messages and domain values. Requests become domain inputs through
//! `TryFrom`, collecting one `FieldViolation` per bad field (so a client learns about all of them at
//! once); domain records become messages through `From`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use connect_proto::registry::v1 as pb;
use prost_types::{ListValue, Struct, Timestamp, value::Kind};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::domain::{
    FieldViolation, RegistryError,
    changes::FeedEvent,
    model::{
        AuditEvent, Authorization, Connector, Grant, GrantKey, Installation, Issuance, Project,
        ProjectLink, ProviderRevocation,
    },
    page::{LinkKey, PageKey, PageRequest},
    service::{
        AuthorizeQuery, ConnectorUpdate, GrantAccess, GrantTokens, InstallationAsk, LeaseAnswer,
        NewConnector, NewInstallation, NewIssuance, NewPending, NewProject, RefreshReport,
        RevocationSummary,
    },
    store::{LinkFilter, RevokeFilter},
    types::{
        ConfigMap, ConnectorId, ConnectorRef, ConnectorType, ConnectorUid, DisplayName,
        EVERY_INSTALLATION, Environment, EnvironmentSet, InstallationId, Invalid, ProjectId,
        ProjectName, ProjectRef, SecretInput, TeamId, UserId, truncate,
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
                "update_mask must name at least one of name, config, secrets, suspended, default_installation_id",
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
                "default_installation_id" => {
                    update.default_installation_id = if req.default_installation_id.is_empty() {
                        Some(None)
                    } else {
                        v.check(
                            "default_installation_id",
                            InstallationId::parse(&req.default_installation_id),
                        )
                        .map(Some)
                    }
                }
                other => v.push(
                    "update_mask",
                    format!(
                        "unknown path {:?}: only name, config, secrets, suspended and default_installation_id can change",
                        crate::domain::types::truncate(other, 40)
                    ),
                ),
            }
        }
        v.finish(connector.map(|c| (c, update)))
    }
}

/// The connector, project and environments of an `AttachProjectRequest`.
/// An `AttachProjectRequest`: the link and the environment set it is to have.
#[derive(Debug)]
pub struct Attachment {
    pub connector: ConnectorRef,
    pub project: ProjectRef,
    pub environments: EnvironmentSet,
}

pub fn attachment(req: pb::AttachProjectRequest) -> Result<Attachment, RegistryError> {
    let mut v = Violations::default();
    let connector = v.check("connector", ConnectorRef::parse(&req.connector));
    let project = v.check("project", ProjectRef::parse(&req.project));
    let environments = v.check("environments", EnvironmentSet::parse(&req.environments));
    let value = match (connector, project, environments) {
        (Some(connector), Some(project), Some(environments)) => Some(Attachment {
            connector,
            project,
            environments,
        }),
        _ => None,
    };
    v.finish(value)
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
        let installation = match req.installation_id.as_str() {
            "" => Some(InstallationAsk::Default),
            EVERY_INSTALLATION => Some(InstallationAsk::Every),
            id => v
                .check("installation_id", InstallationId::parse(id))
                .map(InstallationAsk::One),
        };
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

/// The filters of `ListIssuances`: each `None` means "any".
#[derive(Debug)]
pub struct IssuanceQuery {
    pub connector: Option<ConnectorRef>,
    pub project: Option<ProjectId>,
    pub environment: Option<Environment>,
}

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
    v.finish(Some(IssuanceQuery {
        connector,
        project,
        environment,
    }))
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
            provider_revocation: i
                .provider_revocation
                .map(|o| o.as_str().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// The connector and the installation of a `CreateInstallationRequest`.
pub fn new_installation(
    req: pb::CreateInstallationRequest,
) -> Result<(ConnectorRef, NewInstallation), RegistryError> {
    {
        let mut v = Violations::default();
        let connector = v.check("connector", ConnectorRef::parse(&req.connector));
        if req.installation_id.is_empty() {
            v.push("installation_id", "installation_id must not be empty");
        }
        let display_name = if req.display_name.is_empty() {
            Some(None)
        } else {
            v.check("display_name", DisplayName::parse(&req.display_name))
                .map(Some)
        };
        let config = v.check_map("config", ConfigMap::parse(&req.config));
        let secrets = v.check_map("secrets", SecretInput::parse(req.secrets));
        let value = match (connector, display_name, config, secrets) {
            (Some(connector), Some(display_name), Some(config), Some(secrets)) => Some((
                connector,
                NewInstallation {
                    id: req.installation_id,
                    display_name,
                    config,
                    secrets,
                },
            )),
            _ => None,
        };
        v.finish(value)
    }
}

/// The connector and filter of a `RevokeTokensRequest`.
pub fn revocation(
    req: pb::RevokeTokensRequest,
) -> Result<(ConnectorRef, RevokeFilter), RegistryError> {
    let mut v = Violations::default();
    let connector = v.check("connector", ConnectorRef::parse(&req.connector));
    let subject = match req.subject.as_str() {
        "" => None,
        "app" => Some("app".to_owned()),
        other => match other.split_once(':') {
            Some((kind, rest))
                if !rest.is_empty()
                    && other.len() <= 300
                    && matches!(kind, "user" | "jwt_bearer")
                    && !other.chars().any(char::is_control) =>
            {
                Some(other.to_owned())
            }
            _ => {
                v.push(
                    "subject",
                    "subject must be app, user:<id> or jwt_bearer:<sub>",
                );
                None
            }
        },
    };
    let installation_id = if req.installation_id.is_empty() {
        None
    } else {
        v.check(
            "installation_id",
            InstallationId::parse(&req.installation_id),
        )
        .map(|i| i.to_string())
    };
    v.finish(connector.map(|c| {
        (
            c,
            RevokeFilter {
                subject,
                installation_id,
            },
        )
    }))
}

/// The team, connector and outcomes of a `ReportRevocationsRequest`.
#[derive(Debug)]
pub struct RevocationReport {
    pub team: TeamId,
    pub connector: ConnectorId,
    /// What the provider answered, per `token_id`.
    pub outcomes: Vec<(String, ProviderRevocation)>,
}

pub fn revocation_report(
    req: pb::ReportRevocationsRequest,
) -> Result<RevocationReport, RegistryError> {
    let mut v = Violations::default();
    let team = v.check("owner_id", TeamId::parse(&req.owner_id));
    let connector = v.check("connector_id", ConnectorId::parse(&req.connector_id));
    if req.revocations.len() > 10_000 {
        v.push("revocations", "at most 10000 revocations per report");
    }
    let mut outcomes = Vec::with_capacity(req.revocations.len());
    for (n, r) in req.revocations.into_iter().enumerate() {
        let field = format!("revocations[{n}]");
        if r.token_id.len() != 16 || !r.token_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            v.push(&format!("{field}.token_id"), "must be 16 hex digits");
            continue;
        }
        if let Some(outcome) = v.check(
            &format!("{field}.outcome"),
            ProviderRevocation::parse(&r.outcome),
        ) {
            outcomes.push((r.token_id, outcome));
        }
    }
    v.finish(
        team.zip(connector)
            .map(|(team, connector)| RevocationReport {
                team,
                connector,
                outcomes,
            }),
    )
}

impl From<RevocationSummary> for pb::RevokeTokensResponse {
    fn from(s: RevocationSummary) -> Self {
        let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            tokens_found: count(s.tokens_found),
            revoked: count(s.revoked),
            provider_revoked: count(s.provider_revoked),
            provider_skipped: count(s.provider_skipped),
            provider_failed: count(s.provider_failed),
            grants_deleted: count(s.grants_deleted),
        }
    }
}

/// Longest token, URL or scope accepted in a grant.
const MAX_GRANT_TOKEN: usize = 8192;
const MAX_URL: usize = 2048;
const MAX_GRANT_SCOPES: usize = 100;

fn printable(value: &str) -> bool {
    !value.chars().any(char::is_control)
}

fn grant_key_of(v: &mut Violations, key: Option<pb::GrantKey>) -> Option<GrantKey> {
    let Some(key) = key else {
        v.push("key", "key is required");
        return None;
    };
    let team_id = v.check("key.owner_id", TeamId::parse(&key.owner_id));
    let connector_id = v.check("key.connector_id", ConnectorId::parse(&key.connector_id));
    let user_id = v.check("key.user_id", UserId::parse(&key.user_id));
    let environment = v.check("key.environment", Environment::parse(&key.environment));
    let installation_id = installation_of(v, "key.installation_id", key.installation_id);
    Some(GrantKey {
        team_id: team_id?,
        connector_id: connector_id?,
        user_id: user_id?,
        environment: environment?,
        installation_id: installation_id?,
    })
}

/// An installation id, or empty for none.
fn installation_of(v: &mut Violations, field: &str, value: String) -> Option<String> {
    if value.is_empty() {
        return Some(value);
    }
    v.check(field, InstallationId::parse(&value))
        .map(|i| i.to_string())
}

fn scopes_of(v: &mut Violations, field: &str, scopes: Vec<String>) -> Vec<String> {
    if scopes.len() > MAX_GRANT_SCOPES {
        v.push(field, format!("at most {MAX_GRANT_SCOPES} scopes"));
    }
    if scopes
        .iter()
        .any(|s| s.is_empty() || s.len() > 256 || s.contains(' ') || !printable(s))
    {
        v.push(
            field,
            "scopes must be 1 to 256 printable characters without spaces",
        );
    }
    scopes
}

fn token_of(
    v: &mut Violations,
    field: &str,
    value: String,
    required: bool,
) -> Option<SecretString> {
    if value.is_empty() {
        if required {
            v.push(field, format!("{field} is required"));
        }
        return None;
    }
    if value.len() > MAX_GRANT_TOKEN || !printable(&value) {
        v.push(
            field,
            format!("{field} must be at most {MAX_GRANT_TOKEN} printable characters"),
        );
        return None;
    }
    Some(SecretString::from(value))
}

fn url_of(v: &mut Violations, field: &str, value: String) -> String {
    if value.is_empty() || value.len() > MAX_URL || !printable(&value) {
        v.push(
            field,
            format!("{field} must be 1 to {MAX_URL} printable characters"),
        );
    }
    value
}

fn time_of(t: Option<Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
}

fn duration_of(
    v: &mut Violations,
    field: &str,
    d: Option<prost_types::Duration>,
) -> Option<std::time::Duration> {
    match d {
        Some(d) if d.seconds >= 0 && d.nanos >= 0 => Some(std::time::Duration::new(
            d.seconds as u64,
            d.nanos.clamp(0, 999_999_999) as u32,
        )),
        Some(_) => {
            v.push(field, format!("{field} must not be negative"));
            None
        }
        None => Some(std::time::Duration::ZERO),
    }
}

/// Each grant of an `ImportGrantsRequest`, converted on its own: a bad one is that grant's error.
pub type ImportedGrants = Vec<Result<(UserId, Environment, String, GrantTokens), RegistryError>>;

pub fn imported_grants(
    req: pb::ImportGrantsRequest,
) -> Result<(ConnectorRef, ImportedGrants), RegistryError> {
    let connector = connector_ref("connector", &req.connector)?;
    let grants = req
        .grants
        .into_iter()
        .map(|g| {
            let mut v = Violations::default();
            let user_id = v.check("user_id", UserId::parse(&g.user_id));
            let environment = v.check("environment", Environment::parse(&g.environment));
            let installation = installation_of(&mut v, "installation_id", g.installation_id);
            let access_token = token_of(&mut v, "access_token", g.access_token, true);
            let refresh_token = token_of(&mut v, "refresh_token", g.refresh_token, false);
            let scopes = scopes_of(&mut v, "scopes", g.scopes);
            let value = match (user_id, environment, installation, access_token) {
                (Some(u), Some(e), Some(i), Some(access_token)) => Some((
                    u,
                    e,
                    i,
                    GrantTokens {
                        access_token,
                        refresh_token,
                        expires_at: time_of(g.expire_time),
                        scopes,
                    },
                )),
                _ => None,
            };
            v.finish(value)
        })
        .collect();
    Ok((connector, grants))
}

/// The filters and page of a `ListGrantsRequest`: each `None` means "any".
#[derive(Debug)]
pub struct GrantQuery {
    pub connector: Option<ConnectorRef>,
    pub user: Option<UserId>,
    pub environment: Option<Environment>,
    pub page: PageRequest<crate::domain::page::GrantPageKey>,
}

pub fn grant_query(req: pb::ListGrantsRequest) -> Result<GrantQuery, RegistryError> {
    let mut v = Violations::default();
    let connector = (!req.connector.is_empty())
        .then(|| v.check("connector", ConnectorRef::parse(&req.connector)))
        .flatten();
    let user = (!req.user_id.is_empty())
        .then(|| v.check("user_id", UserId::parse(&req.user_id)))
        .flatten();
    let environment = (!req.environment.is_empty())
        .then(|| v.check("environment", Environment::parse(&req.environment)))
        .flatten();
    let page = page(&mut v, req.page_size, &req.page_token);
    v.finish(page.map(|page| GrantQuery {
        connector,
        user,
        environment,
        page,
    }))
}

pub fn new_pending(req: pb::BeginAuthorizationRequest) -> Result<NewPending, RegistryError> {
    let mut v = Violations::default();
    let key = grant_key_of(&mut v, req.key);
    let scopes = scopes_of(&mut v, "scopes", req.scopes);
    let return_url = url_of(&mut v, "return_url", req.return_url);
    let redirect_uri = url_of(&mut v, "redirect_uri", req.redirect_uri);
    // RFC 7636 §4.1: 43 to 128 unreserved characters.
    let verifier_ok = (43..=128).contains(&req.code_verifier.len())
        && req
            .code_verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !verifier_ok {
        v.push(
            "code_verifier",
            "code_verifier must be 43 to 128 unreserved characters",
        );
    }
    let ttl = duration_of(&mut v, "ttl", req.ttl);
    let project_id = v.check("project_id", ProjectId::parse(&req.project_id));
    if req.issuer.is_empty() || req.issuer.len() > 255 {
        v.push("issuer", "issuer must be 1 to 255 characters");
    }
    let value = key
        .zip(ttl)
        .zip(project_id)
        .map(|((key, ttl), project_id)| NewPending {
            key,
            project_id,
            issuer: req.issuer,
            scopes,
            return_url,
            redirect_uri,
            code_verifier: SecretString::from(req.code_verifier),
            ttl,
        });
    v.finish(value)
}

pub fn grant_to_store(
    req: pb::StoreGrantRequest,
) -> Result<(GrantKey, GrantTokens), RegistryError> {
    let mut v = Violations::default();
    let key = grant_key_of(&mut v, req.key);
    let access_token = token_of(&mut v, "access_token", req.access_token, true);
    let refresh_token = token_of(&mut v, "refresh_token", req.refresh_token, false);
    let scopes = scopes_of(&mut v, "scopes", req.scopes);
    let value = key.zip(access_token).map(|(key, access_token)| {
        (
            key,
            GrantTokens {
                access_token,
                refresh_token,
                expires_at: time_of(req.expire_time),
                scopes,
            },
        )
    });
    v.finish(value)
}

/// A `LeaseGrantRequest`: the grant, how long its access token must live to be answered as it
/// is, and how long a refresh lease lasts.
#[derive(Debug)]
pub struct LeaseQuery {
    pub key: GrantKey,
    pub min_ttl: std::time::Duration,
    pub lease: std::time::Duration,
}

pub fn lease_query(req: pb::LeaseGrantRequest) -> Result<LeaseQuery, RegistryError> {
    let mut v = Violations::default();
    let key = grant_key_of(&mut v, req.key);
    let min_ttl = duration_of(&mut v, "min_ttl", req.min_ttl);
    let lease = duration_of(&mut v, "lease", req.lease);
    let value = match (key, min_ttl, lease) {
        (Some(key), Some(min_ttl), Some(lease)) => Some(LeaseQuery {
            key,
            min_ttl,
            lease,
        }),
        _ => None,
    };
    v.finish(value)
}

/// A `CommitGrantRequest`: the grant, the lease and grant version it was refreshed under, and
/// how the refresh went.
#[derive(Debug)]
pub struct Commit {
    pub key: GrantKey,
    pub lease_id: String,
    pub fence: i64,
    pub report: RefreshReport,
}

pub fn commit(req: pb::CommitGrantRequest) -> Result<Commit, RegistryError> {
    use pb::commit_grant_request::Outcome;
    let mut v = Violations::default();
    let key = grant_key_of(&mut v, req.key);
    if req.lease_id.is_empty() || req.lease_id.len() > 64 {
        v.push("lease_id", "lease_id must be 1 to 64 characters");
    }
    let report = match req.outcome {
        Some(Outcome::Refreshed(t)) => {
            let access_token = token_of(&mut v, "refreshed.access_token", t.access_token, true);
            let refresh_token = token_of(&mut v, "refreshed.refresh_token", t.refresh_token, false);
            let scopes = scopes_of(&mut v, "refreshed.scopes", t.scopes);
            access_token.map(|access_token| {
                RefreshReport::Refreshed(GrantTokens {
                    access_token,
                    refresh_token,
                    expires_at: time_of(t.expire_time),
                    scopes,
                })
            })
        }
        Some(Outcome::Refused(error)) => Some(RefreshReport::Refused(truncate(&error, 300))),
        Some(Outcome::Unavailable(error)) => {
            Some(RefreshReport::Unavailable(truncate(&error, 300)))
        }
        None => {
            v.push(
                "outcome",
                "one of refreshed, refused, unavailable is required",
            );
            None
        }
    };
    v.finish(key.zip(report).map(|(key, report)| Commit {
        key,
        lease_id: req.lease_id,
        fence: req.fence,
        report,
    }))
}

fn grant_key_message(key: &GrantKey) -> pb::GrantKey {
    pb::GrantKey {
        owner_id: key.team_id.to_string(),
        connector_id: key.connector_id.to_string(),
        user_id: key.user_id.to_string(),
        environment: key.environment.as_str().to_owned(),
        installation_id: key.installation_id.clone(),
    }
}

/// A grant as admins see it; `uid` is its connector's.
pub fn grant(g: Grant, uid: &str) -> pb::Grant {
    pb::Grant {
        connector_id: g.key.connector_id.to_string(),
        connector_uid: uid.to_owned(),
        owner_id: g.key.team_id.to_string(),
        user_id: g.key.user_id.to_string(),
        environment: g.key.environment.as_str().to_owned(),
        installation_id: g.key.installation_id.clone(),
        scopes: g.scopes,
        state: g.state.as_str().to_owned(),
        expire_time: g.expires_at.map(timestamp),
        refreshable: g.refresh_token.is_some(),
        last_error: g.last_error.unwrap_or_default(),
        last_refresh_time: g.last_refresh_at.map(timestamp),
        create_time: Some(timestamp(g.created_at)),
        update_time: Some(timestamp(g.updated_at)),
        version: g.version,
    }
}

pub fn grant_access(a: GrantAccess) -> pb::GrantAccess {
    pb::GrantAccess {
        access_token: a.access_token.expose_secret().to_owned(),
        grant: Some(grant(a.grant, "")),
    }
}

pub fn lease_answer(answer: LeaseAnswer) -> pb::LeaseGrantResponse {
    use pb::lease_grant_response::Answer;
    let answer = match answer {
        LeaseAnswer::Fresh(access) => Answer::Fresh(grant_access(access)),
        LeaseAnswer::Leased {
            lease_id,
            fence,
            refresh_token,
            grant: g,
        } => Answer::Leased(pb::GrantLease {
            lease_id,
            fence,
            refresh_token: refresh_token.expose_secret().to_owned(),
            grant: Some(grant(g, "")),
        }),
        LeaseAnswer::Busy { until } => Answer::BusyUntil(timestamp(until)),
    };
    pb::LeaseGrantResponse {
        answer: Some(answer),
    }
}

pub fn opened_pending(
    p: crate::domain::service::OpenedPending,
) -> pb::CompleteAuthorizationResponse {
    pb::CompleteAuthorizationResponse {
        key: Some(grant_key_message(&p.key)),
        scopes: p.scopes,
        return_url: p.return_url,
        redirect_uri: p.redirect_uri,
        code_verifier: p.code_verifier.expose_secret().to_owned(),
        project_id: p.project_id.to_string(),
        issuer: p.issuer,
    }
}

/// An installation as the wire shows it; `default` says whether it is its connector's default.
pub fn installation(i: Installation, default: Option<&InstallationId>) -> pb::Installation {
    pb::Installation {
        is_default: default == Some(&i.id),
        secret_names: i.secret_names(),
        connector_id: i.connector_id.to_string(),
        connector_uid: i.connector_uid.to_string(),
        installation_id: i.id.to_string(),
        display_name: i.display_name.to_string(),
        config: i.config.as_map().clone().into_iter().collect(),
        owner_id: i.team_id.to_string(),
        create_time: Some(timestamp(i.created_at)),
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
            default_installation_id: c
                .default_installation_id
                .map(|i| i.to_string())
                .unwrap_or_default(),
        }
    }
}

/// A connector type's row of the capability table as `ListConnectorTypes` answers it.
pub fn connector_type(row: &connect_types::Capabilities) -> pb::ConnectorTypeCapabilities {
    use connect_types::Revocation;
    let names = |keys: &[connect_types::capabilities::Key], only_required: bool| {
        keys.iter()
            .filter(|k| k.required || !only_required)
            .map(|k| k.name.to_owned())
            .collect()
    };
    pb::ConnectorTypeCapabilities {
        r#type: row.connector_type.to_owned(),
        description: row.description.to_owned(),
        subjects: row.subjects.iter().map(|s| s.as_str().to_owned()).collect(),
        installations: row.installations.as_str().to_owned(),
        cross_installation: row.cross_installation,
        resources: row.resources,
        revocation: row.revocation != Revocation::None,
        revocation_config_key: match row.revocation {
            Revocation::WhenConfigured(key) => key.to_owned(),
            Revocation::None | Revocation::Always => String::new(),
        },
        config_keys: names(row.config_keys, false),
        secret_keys: names(row.secret_keys, false),
        required_config_keys: names(row.config_keys, true),
        required_secret_keys: names(row.secret_keys, true),
        key_descriptions: row
            .config_keys
            .iter()
            .chain(row.secret_keys)
            .map(|k| (k.name.to_owned(), k.description.to_owned()))
            .collect(),
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
                    installation_id: change.scope.installation_id.unwrap_or_default(),
                    subject: change.scope.subject.unwrap_or_default(),
                }
            }
        }
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
            secrets: open(&a.secrets),
            connector: Some(a.connector.into()),
            link: Some(a.link.into()),
            installation,
            installation_secrets,
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
