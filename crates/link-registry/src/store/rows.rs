//! Conversions between table rows and domain records. Rows were written by this code, so a row
//! that does not parse means a corrupted database: it surfaces as an internal error naming the
//! table, never as a panic.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::FromQueryResult;

use super::entity::{api_key, audit_event, connector, installation, issuance, project, team};
use crate::domain::{
    RegistryError, Result,
    model::{
        ApiKeyRecord, AuditEvent, Connector, Installation, Issuance, NewAuditEvent, Project,
        ProjectLink, ProviderRevocation, Role, Team,
    },
    types::{
        ConfigMap, ConnectorId, ConnectorUid, DisplayName, Environment, EnvironmentSet,
        InstallationId, IssuerUrl, KeyId, ProjectId, ProjectName, TeamId, TeamSlug,
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
    })
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
}

pub fn link(row: LinkRow) -> Result<ProjectLink> {
    const T: &str = "stored project link";
    Ok(ProjectLink {
        team_id: parse(T, TeamId::parse(&row.team_id))?,
        connector_id: parse(T, ConnectorId::parse(&row.connector_id))?,
        connector_uid: parse(T, ConnectorUid::parse(&row.connector_uid))?,
        project_id: parse(T, ProjectId::parse(&row.project_id))?,
        project_name: parse(T, ProjectName::parse(&row.project_name))?,
        environments: EnvironmentSet::from_bits(row.environments)
            .ok_or_else(|| corrupt(T, format!("environment mask {}", row.environments)))?,
        created_at: row.created_at,
        updated_at: row.updated_at,
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
        action: row.action,
        target: row.target,
        before: json(row.before)?,
        after: json(row.after)?,
        time: row.created_at,
    })
}

pub fn audit_event_row(event: NewAuditEvent) -> audit_event::ActiveModel {
    use sea_orm::ActiveValue::{NotSet, Set};
    audit_event::ActiveModel {
        id: NotSet,
        team_id: Set(event.team_id.map(|t| t.to_string())),
        actor: Set(event.actor.to_string()),
        action: Set(event.action.to_owned()),
        target: Set(event.target),
        before: Set(event.before.map(|v| v.to_string())),
        after: Set(event.after.map(|v| v.to_string())),
        created_at: Set(event.time),
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
