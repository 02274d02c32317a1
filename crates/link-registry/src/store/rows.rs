//! Conversions between table rows and domain records. Rows were written by this code, so a row
//! that does not parse means a corrupted database: it surfaces as an internal error naming the
//! table, never as a panic.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::FromQueryResult;

use super::entity::{
    api_key, audit_event, authorization_request, connector, environment, grant, held_consent,
    installation, issuance, project, role_binding, team,
};
use crate::domain::{
    RegistryError, Result,
    model::{
        ApiKeyRecord, AuditEvent, BindingSubject, Connector, Grant, GrantKey, GrantState,
        HeldConsent, Installation, Issuance, LinkLimits, NewAuditEvent, PendingAuthorization,
        Project, ProjectEnvironment, ProjectLink, ProviderRevocation, Role, RoleBinding,
        StoredSecret, Team,
    },
    types::{
        ConfigMap, ConnectorId, ConnectorUid, CustomEnvironment, DisplayName, Environment,
        EnvironmentSet, InstallationId, IssuerUrl, KeyId, ProjectId, ProjectName, TeamId, TeamSlug,
        UserId,
    },
};

pub(super) fn corrupt(table: &'static str, detail: impl Into<String>) -> RegistryError {
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Corrupt(String);
    RegistryError::internal(table, Corrupt(detail.into()))
}

fn parse<T>(table: &'static str, parsed: Result<T, String>) -> Result<T> {
    parsed.map_err(|e| corrupt(table, e))
}

pub fn team(row: team::Model) -> Result<Team> {
    const T: &str = "stored team";
    Ok(Team {
        id: parse(T, TeamId::parse(&row.id))?,
        slug: parse(T, TeamSlug::parse(&row.slug))?,
        issuer: parse(T, IssuerUrl::parse(&row.issuer))?,
        created_at: row.created_at,
    })
}

pub fn api_key(row: api_key::Model) -> Result<ApiKeyRecord> {
    const T: &str = "stored api key";
    Ok(ApiKeyRecord {
        id: parse(T, KeyId::parse(&row.id))?,
        team_id: row
            .team_id
            .map(|t| parse(T, TeamId::parse(&t)))
            .transpose()?,
        role: parse(T, Role::parse(&row.role))?,
        key_hash: row.key_hash,
        created_at: row.created_at,
        expires_at: row.expires_at,
        revoked_at: row.revoked_at,
        last_used_at: row.last_used_at,
        broker_teams: row
            .broker_teams
            .map(|text| {
                let ids: Vec<String> =
                    serde_json::from_str(&text).map_err(|e| corrupt(T, e.to_string()))?;
                ids.iter()
                    .map(|t| parse(T, TeamId::parse(t)))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?,
    })
}

pub fn role_binding(row: role_binding::Model) -> Result<RoleBinding> {
    const T: &str = "stored role binding";
    let who = match (row.subject.is_empty(), row.group_name.is_empty()) {
        (false, true) => BindingSubject::Subject(row.subject),
        (true, false) => BindingSubject::Group(row.group_name),
        _ => return Err(corrupt(T, "exactly one of subject and group must be set")),
    };
    Ok(RoleBinding {
        id: row.id,
        team_id: parse(T, TeamId::parse(&row.team_id))?,
        issuer: parse(T, IssuerUrl::parse(&row.issuer))?,
        who,
        role: parse(T, Role::parse(&row.role))?,
        created_at: row.created_at,
    })
}

pub fn role_binding_row(b: &RoleBinding) -> role_binding::Model {
    let (subject, group_name) = match &b.who {
        BindingSubject::Subject(s) => (s.clone(), String::new()),
        BindingSubject::Group(g) => (String::new(), g.clone()),
    };
    role_binding::Model {
        id: b.id.clone(),
        team_id: b.team_id.to_string(),
        issuer: b.issuer.to_string(),
        subject,
        group_name,
        role: b.role.as_str().to_owned(),
        created_at: b.created_at,
    }
}

pub fn project(row: project::Model) -> Result<Project> {
    const T: &str = "stored project";
    Ok(Project {
        team_id: parse(T, TeamId::parse(&row.team_id))?,
        id: parse(T, ProjectId::parse(&row.id))?,
        name: parse(T, ProjectName::parse(&row.name))?,
        created_at: row.created_at,
    })
}

pub fn connector(row: connector::Model) -> Result<Connector> {
    const T: &str = "stored connector";
    let config: BTreeMap<String, String> =
        serde_json::from_str(&row.config).map_err(|e| corrupt(T, e.to_string()))?;
    Ok(Connector {
        id: parse(T, ConnectorId::parse(&row.id))?,
        team_id: parse(T, TeamId::parse(&row.team_id))?,
        uid: parse(T, ConnectorUid::parse(&row.uid))?,
        name: parse(T, DisplayName::parse(&row.name))?,
        config: ConfigMap::from_stored(config),
        secrets: serde_json::from_str(&row.secrets).map_err(|e| corrupt(T, e.to_string()))?,
        suspended: row.suspended,
        default_installation_id: row
            .default_installation_id
            .map(|i| parse(T, InstallationId::parse(&i)))
            .transpose()?,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub fn connector_row(c: &Connector) -> connector::Model {
    connector::Model {
        id: c.id.to_string(),
        team_id: c.team_id.to_string(),
        uid: c.uid.to_string(),
        kind: c.uid.kind().as_str().to_owned(),
        name: c.name.to_string(),
        config: serde_json::to_string(c.config.as_map()).expect("a string map serializes"),
        secrets: serde_json::to_string(&c.secrets).expect("a string map serializes"),
        suspended: c.suspended,
        default_installation_id: c.default_installation_id.as_ref().map(|i| i.to_string()),
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

pub fn installation(
    row: installation::Model,
    connector_uid: &ConnectorUid,
) -> Result<Installation> {
    const T: &str = "stored installation";
    let config: BTreeMap<String, String> =
        serde_json::from_str(&row.config).map_err(|e| corrupt(T, e.to_string()))?;
    Ok(Installation {
        team_id: parse(T, TeamId::parse(&row.team_id))?,
        connector_id: parse(T, ConnectorId::parse(&row.connector_id))?,
        connector_uid: connector_uid.clone(),
        id: parse(T, InstallationId::parse(&row.installation_id))?,
        display_name: parse(T, DisplayName::parse(&row.display_name))?,
        config: ConfigMap::from_stored(config),
        secrets: serde_json::from_str(&row.secrets).map_err(|e| corrupt(T, e.to_string()))?,
        created_at: row.created_at,
    })
}

pub fn installation_row(i: &Installation) -> installation::Model {
    installation::Model {
        team_id: i.team_id.to_string(),
        connector_id: i.connector_id.to_string(),
        installation_id: i.id.to_string(),
        display_name: i.display_name.to_string(),
        config: serde_json::to_string(i.config.as_map()).expect("a string map serializes"),
        secrets: serde_json::to_string(&i.secrets).expect("a string map serializes"),
        created_at: i.created_at,
    }
}

/// A link joined with its connector's uid and its project's name.
#[derive(Debug, FromQueryResult)]
pub struct LinkRow {
    pub team_id: String,
    pub connector_id: String,
    pub connector_uid: String,
    pub project_id: String,
    pub project_name: String,
    pub environments: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub limits: Option<String>,
    pub last_issued_at: Option<DateTime<Utc>>,
    pub custom_environments: String,
}

/// The stored form of a link's custom environment ids.
pub fn custom_environments_column(ids: &[CustomEnvironment]) -> String {
    ids.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(" ")
}

pub fn environment(row: environment::Model) -> Result<ProjectEnvironment> {
    const T: &str = "stored environment";
    Ok(ProjectEnvironment {
        team_id: parse(T, TeamId::parse(&row.team_id))?,
        project_id: parse(T, ProjectId::parse(&row.project_id))?,
        id: parse(T, CustomEnvironment::parse_id(&row.id))?,
        slug: row.slug,
        name: parse(T, DisplayName::parse(&row.name))?,
        created_at: row.created_at,
    })
}

pub fn environment_row(e: &ProjectEnvironment) -> environment::Model {
    environment::Model {
        team_id: e.team_id.to_string(),
        project_id: e.project_id.to_string(),
        id: e.id.as_str().to_owned(),
        slug: e.slug.clone(),
        name: e.name.to_string(),
        created_at: e.created_at,
    }
}

/// A link's stored limits (`None`: none).
pub fn link_limits(stored: Option<&str>) -> Result<LinkLimits> {
    const T: &str = "stored link limits";
    let Some(text) = stored else {
        return Ok(LinkLimits::default());
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| corrupt(T, e.to_string()))?;
    LinkLimits::from_json(&value).ok_or_else(|| corrupt(T, "not the limits' form".to_owned()))
}

/// The stored form of `limits`: `None` when there are none.
pub fn limits_column(limits: &LinkLimits) -> Option<String> {
    (!limits.is_empty()).then(|| limits.to_json().to_string())
}

pub fn link(row: LinkRow) -> Result<ProjectLink> {
    const T: &str = "stored project link";
    Ok(ProjectLink {
        team_id: parse(T, TeamId::parse(&row.team_id))?,
        connector_id: parse(T, ConnectorId::parse(&row.connector_id))?,
        connector_uid: parse(T, ConnectorUid::parse(&row.connector_uid))?,
        project_id: parse(T, ProjectId::parse(&row.project_id))?,
        project_name: parse(T, ProjectName::parse(&row.project_name))?,
        environments: EnvironmentSet::from_stored_bits(row.environments)
            .ok_or_else(|| corrupt(T, format!("environment mask {}", row.environments)))?,
        custom_environments: row
            .custom_environments
            .split_whitespace()
            .map(|id| parse(T, CustomEnvironment::parse_id(id)))
            .collect::<Result<_>>()?,
        created_at: row.created_at,
        updated_at: row.updated_at,
        expires_at: row.expires_at,
        limits: link_limits(row.limits.as_deref())?,
        last_issued_at: row.last_issued_at,
    })
}

pub fn audit_event(row: audit_event::Model) -> Result<AuditEvent> {
    const T: &str = "stored audit event";
    let json = |text: Option<String>| {
        text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(T, e.to_string())))
            .transpose()
    };
    Ok(AuditEvent {
        id: row.id,
        team_id: row
            .team_id
            .map(|t| parse(T, TeamId::parse(&t)))
            .transpose()?,
        actor: row.actor,
        actor_issuer: row.actor_issuer,
        action: row.action,
        target: row.target,
        before: json(row.before)?,
        after: json(row.after)?,
        time: row.created_at,
        prev_hash: row.prev_hash,
        hash: row.hash,
    })
}

/// The row of a new event, chained to the event before it (`prev_hash`).
pub fn audit_event_row(event: NewAuditEvent, prev_hash: String) -> audit_event::ActiveModel {
    use sea_orm::ActiveValue::{NotSet, Set};
    let team_id = event.team_id.map(|t| t.to_string());
    let actor = event.actor.to_string();
    let actor_issuer = match &event.actor {
        crate::domain::model::Actor::Person { issuer, .. } => Some(issuer.clone()),
        _ => None,
    };
    let before = event.before.map(|v| v.to_string());
    let after = event.after.map(|v| v.to_string());
    let hash = crate::domain::audit::chain_hash(
        &prev_hash,
        &crate::domain::audit::ChainedFields {
            team_id: team_id.as_deref(),
            actor: &actor,
            actor_issuer: actor_issuer.as_deref(),
            action: event.action,
            target: &event.target,
            before: before.as_deref(),
            after: after.as_deref(),
            time: event.time,
        },
    );
    audit_event::ActiveModel {
        id: NotSet,
        team_id: Set(team_id),
        actor: Set(actor),
        actor_issuer: Set(actor_issuer),
        action: Set(event.action.to_owned()),
        target: Set(event.target),
        before: Set(before),
        after: Set(after),
        created_at: Set(event.time),
        prev_hash: Set(Some(prev_hash)),
        hash: Set(Some(hash)),
    }
}

pub fn issuance(row: issuance::Model) -> Result<Issuance> {
    const T: &str = "stored issuance";
    Ok(Issuance {
        id: row.id,
        token_id: row.token_id,
        team_id: parse(T, TeamId::parse(&row.team_id))?,
        project_id: parse(T, ProjectId::parse(&row.project_id))?,
        environment: parse(T, Environment::parse(&row.environment))?,
        connector_id: parse(T, ConnectorId::parse(&row.connector_id))?,
        connector_uid: parse(T, ConnectorUid::parse(&row.connector_uid))?,
        subject: row.subject,
        installation_id: row.installation_id,
        scopes: row.scopes.split_whitespace().map(str::to_owned).collect(),
        issued_at: row.issued_at,
        expires_at: row.expires_at,
        revoked: row.revoked,
        provider_revocation: row
            .provider_revocation
            .map(|o| parse(T, ProviderRevocation::parse(&o)))
            .transpose()?,
    })
}

pub fn issuance_row(issuance: &Issuance) -> issuance::ActiveModel {
    use sea_orm::ActiveValue::{NotSet, Set};
    issuance::ActiveModel {
        id: NotSet,
        team_id: Set(issuance.team_id.to_string()),
        token_id: Set(issuance.token_id.clone()),
        project_id: Set(issuance.project_id.to_string()),
        environment: Set(issuance.environment.as_str().to_owned()),
        connector_id: Set(issuance.connector_id.to_string()),
        connector_uid: Set(issuance.connector_uid.to_string()),
        subject: Set(issuance.subject.clone()),
        installation_id: Set(issuance.installation_id.clone()),
        scopes: Set(issuance.scopes.join(" ")),
        issued_at: Set(issuance.issued_at),
        expires_at: Set(issuance.expires_at),
        revoked: Set(issuance.revoked),
        provider_revocation: Set(issuance.provider_revocation.map(|o| o.as_str().to_owned())),
    }
}

fn sealed(table: &'static str, text: &str) -> Result<StoredSecret> {
    serde_json::from_str(text).map_err(|e| corrupt(table, e.to_string()))
}

fn sealed_text(secret: &StoredSecret) -> String {
    serde_json::to_string(secret).expect("a sealed secret serializes")
}

/// A grant's key from its columns; an empty `project_id` is the team's grant.
fn grant_key(
    table: &'static str,
    team_id: &str,
    connector_id: &str,
    project_id: &str,
    user_id: &str,
    environment: &str,
    installation_id: String,
) -> Result<GrantKey> {
    Ok(GrantKey {
        team_id: parse(table, TeamId::parse(team_id))?,
        connector_id: parse(table, ConnectorId::parse(connector_id))?,
        project_id: match project_id {
            "" => None,
            project => Some(parse(table, ProjectId::parse(project))?),
        },
        user_id: parse(table, UserId::parse(user_id))?,
        environment: parse(table, Environment::parse(environment))?,
        installation_id,
    })
}

/// The key of a consent under way (its project is the asking deployment's) and that project.
fn requested_key(
    table: &'static str,
    team_id: &str,
    connector_id: &str,
    project_id: &str,
    user_id: &str,
    environment: &str,
    installation_id: String,
) -> Result<(GrantKey, ProjectId)> {
    let key = grant_key(
        table,
        team_id,
        connector_id,
        project_id,
        user_id,
        environment,
        installation_id,
    )?;
    let project = key
        .project_id
        .clone()
        .ok_or_else(|| corrupt(table, "no project".to_owned()))?;
    Ok((key, project))
}

pub fn grant(row: grant::Model) -> Result<Grant> {
    const T: &str = "stored grant";
    let key = grant_key(
        T,
        &row.team_id,
        &row.connector_id,
        &row.project_id,
        &row.user_id,
        &row.environment,
        row.installation_id,
    )?;
    Ok(Grant {
        id: row.id,
        key,
        access_token: sealed(T, &row.access_token)?,
        refresh_token: row.refresh_token.map(|t| sealed(T, &t)).transpose()?,
        expires_at: row.expires_at,
        scopes: row.scopes.split_whitespace().map(str::to_owned).collect(),
        state: parse(T, GrantState::parse(&row.state))?,
        version: row.version,
        lease: row.lease_id.zip(row.lease_expires_at),
        last_error: row.last_error,
        last_refresh_at: row.last_refresh_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
        provider_subject: row.provider_subject,
    })
}

pub fn grant_row(g: &Grant) -> grant::Model {
    grant::Model {
        id: g.id,
        team_id: g.key.team_id.to_string(),
        project_id: g
            .key
            .project_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        connector_id: g.key.connector_id.to_string(),
        user_id: g.key.user_id.to_string(),
        environment: g.key.environment.as_str().to_owned(),
        installation_id: g.key.installation_id.clone(),
        access_token: sealed_text(&g.access_token),
        refresh_token: g.refresh_token.as_ref().map(sealed_text),
        expires_at: g.expires_at,
        scopes: g.scopes.join(" "),
        state: g.state.as_str().to_owned(),
        version: g.version,
        lease_id: g.lease.as_ref().map(|(id, _)| id.clone()),
        lease_expires_at: g.lease.as_ref().map(|(_, until)| *until),
        last_error: g.last_error.clone(),
        last_refresh_at: g.last_refresh_at,
        created_at: g.created_at,
        updated_at: g.updated_at,
        provider_subject: g.provider_subject.clone(),
    }
}

pub fn held(row: held_consent::Model) -> Result<HeldConsent> {
    const T: &str = "stored held consent";
    let (key, project_id) = requested_key(
        T,
        &row.team_id,
        &row.connector_id,
        &row.project_id,
        &row.user_id,
        &row.environment,
        row.installation_id,
    )?;
    Ok(HeldConsent {
        key,
        request_id: row.request_id,
        completion_hash: row.completion_hash,
        project_id,
        issuer: row.issuer,
        access_token: sealed(T, &row.access_token)?,
        refresh_token: row.refresh_token.map(|t| sealed(T, &t)).transpose()?,
        token_expires_at: row.token_expires_at,
        scopes: row.scopes.split_whitespace().map(str::to_owned).collect(),
        expires_at: row.expires_at,
        created_at: row.created_at,
        provider_subject: row.provider_subject,
    })
}

pub fn held_row(h: &HeldConsent) -> held_consent::Model {
    held_consent::Model {
        request_id: h.request_id.clone(),
        completion_hash: h.completion_hash.clone(),
        team_id: h.key.team_id.to_string(),
        project_id: h.project_id.to_string(),
        issuer: h.issuer.clone(),
        connector_id: h.key.connector_id.to_string(),
        user_id: h.key.user_id.to_string(),
        environment: h.key.environment.as_str().to_owned(),
        installation_id: h.key.installation_id.clone(),
        access_token: sealed_text(&h.access_token),
        refresh_token: h.refresh_token.as_ref().map(sealed_text),
        token_expires_at: h.token_expires_at,
        scopes: h.scopes.join(" "),
        expires_at: h.expires_at,
        created_at: h.created_at,
        provider_subject: h.provider_subject.clone(),
    }
}

pub fn pending(row: authorization_request::Model) -> Result<PendingAuthorization> {
    const T: &str = "stored authorization request";
    let (key, project_id) = requested_key(
        T,
        &row.team_id,
        &row.connector_id,
        &row.project_id,
        &row.user_id,
        &row.environment,
        row.installation_id,
    )?;
    Ok(PendingAuthorization {
        key,
        state_hash: row.state_hash,
        project_id,
        issuer: row.issuer,
        scopes: row.scopes.split_whitespace().map(str::to_owned).collect(),
        return_url: row.return_url,
        redirect_uri: row.redirect_uri,
        code_verifier: sealed(T, &row.code_verifier)?,
        expires_at: row.expires_at,
        created_at: row.created_at,
    })
}

pub fn pending_row(p: &PendingAuthorization) -> authorization_request::Model {
    authorization_request::Model {
        state_hash: p.state_hash.clone(),
        team_id: p.key.team_id.to_string(),
        project_id: p.project_id.to_string(),
        issuer: p.issuer.clone(),
        connector_id: p.key.connector_id.to_string(),
        user_id: p.key.user_id.to_string(),
        environment: p.key.environment.as_str().to_owned(),
        installation_id: p.key.installation_id.clone(),
        scopes: p.scopes.join(" "),
        return_url: p.return_url.clone(),
        redirect_uri: p.redirect_uri.clone(),
        code_verifier: sealed_text(&p.code_verifier),
        expires_at: p.expires_at,
        created_at: p.created_at,
    }
}
