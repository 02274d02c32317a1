//! Role bindings, API keys and `WhoAmI`.

use super::*;
use crate::domain::{
    model::{ApiKeyRecord, BindingSubject, Role, RoleBinding},
    service::{NewRoleBinding, WhoAmI},
    types::IssuerUrl,
};

/// A subject or group name: 1 to 255 characters, no control characters.
fn name_of(v: &mut Violations, field: &str, value: &str) -> Option<String> {
    if value.is_empty() || value.chars().count() > 255 || value.chars().any(char::is_control) {
        v.push(
            field,
            format!("{field} must be 1 to 255 characters, without control characters"),
        );
        return None;
    }
    Some(value.to_owned())
}

/// The team a request names, if it names one.
pub fn team_of(field: &str, value: &str) -> Result<Option<TeamId>, RegistryError> {
    if value.is_empty() {
        return Ok(None);
    }
    TeamId::parse(value)
        .map(Some)
        .map_err(|e| RegistryError::invalid(field, e))
}

impl TryFrom<pb::CreateRoleBindingRequest> for NewRoleBinding {
    type Error = RegistryError;

    fn try_from(req: pb::CreateRoleBindingRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let team = match team_of("team", &req.team) {
            Ok(team) => team,
            Err(_) => {
                v.push("team", "team must be a team id");
                None
            }
        };
        let issuer = v.check("issuer", IssuerUrl::parse(&req.issuer));
        let who = match (req.subject.is_empty(), req.group.is_empty()) {
            (false, true) => name_of(&mut v, "subject", &req.subject).map(BindingSubject::Subject),
            (true, false) => name_of(&mut v, "group", &req.group).map(BindingSubject::Group),
            _ => {
                v.push("subject", "give exactly one of subject and group");
                None
            }
        };
        let role = match Role::parse(&req.role) {
            Ok(role @ (Role::Admin | Role::Viewer)) => Some(role),
            _ => {
                v.push("role", "role must be admin or viewer");
                None
            }
        };
        let value = match (issuer, who, role) {
            (Some(issuer), Some(who), Some(role)) => Some(NewRoleBinding {
                team,
                issuer,
                who,
                role,
            }),
            _ => None,
        };
        v.finish(value)
    }
}

impl From<RoleBinding> for pb::RoleBinding {
    fn from(b: RoleBinding) -> Self {
        let (subject, group) = match b.who {
            BindingSubject::Subject(s) => (s, String::new()),
            BindingSubject::Group(g) => (String::new(), g),
        };
        Self {
            id: b.id,
            team: b.team_id.to_string(),
            issuer: b.issuer.to_string(),
            subject,
            group,
            role: b.role.as_str().to_owned(),
            create_time: Some(timestamp(b.created_at)),
        }
    }
}

impl From<WhoAmI> for pb::WhoAmIResponse {
    fn from(w: WhoAmI) -> Self {
        let person = w.person.as_ref();
        Self {
            kind: w.kind.to_owned(),
            actor: w.actor,
            key_id: w.key_id.map(|k| k.to_string()).unwrap_or_default(),
            issuer: person.map(|p| p.issuer.to_string()).unwrap_or_default(),
            subject: person.map(|p| p.subject.clone()).unwrap_or_default(),
            email: person.and_then(|p| p.email.clone()).unwrap_or_default(),
            teams: w
                .teams
                .into_iter()
                .map(|(team, role)| pb::TeamRole {
                    team_id: team.to_string(),
                    role: role.as_str().to_owned(),
                })
                .collect(),
        }
    }
}

impl From<ApiKeyRecord> for pb::ApiKey {
    fn from(k: ApiKeyRecord) -> Self {
        let teams = match (k.team_id, k.broker_teams) {
            (Some(team), _) => vec![team.to_string()],
            (None, Some(teams)) => teams.iter().map(ToString::to_string).collect(),
            (None, None) => Vec::new(),
        };
        Self {
            id: k.id.to_string(),
            role: k.role.as_str().to_owned(),
            teams,
            create_time: Some(timestamp(k.created_at)),
            expire_time: k.expires_at.map(timestamp),
            revoke_time: k.revoked_at.map(timestamp),
            last_use_time: k.last_used_at.map(timestamp),
        }
    }
}
