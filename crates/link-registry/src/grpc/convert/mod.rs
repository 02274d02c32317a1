//! Every conversion between wire messages and domain values, each next to the messages it
//! converts: one module per resource. Requests become named domain inputs, collecting one
//! `FieldViolation` per bad field (so a client learns about all of them at once); domain records
//! become messages through `From`. This module holds what they share: the violation collector,
//! paging, timestamps and the field rules of tokens, scopes and URLs.

use chrono::{DateTime, Utc};
use connect_proto::registry::v1 as pb;
use prost_types::Timestamp;
use secrecy::SecretString;

use crate::domain::{
    FieldViolation, RegistryError,
    model::GrantKey,
    page::{PageKey, PageRequest},
    types::{
        ConnectorId, ConnectorRef, Environment, InstallationId, Invalid, ProjectId, ProjectRef,
        TeamId, UserId,
    },
};

mod audit;
mod bindings;
mod connectors;
mod grants;
mod ledger;
mod links;
mod projects;

pub use bindings::team_of;
pub use connectors::{ConnectorEdit, InstallationRequest, connector_type, installation};
pub use grants::{
    Commit, Completion, GrantImport, GrantQuery, LeaseQuery, grant, grant_access, lease_answer,
    opened_pending,
};
pub use ledger::{IssuanceQuery, RevocationReport, TokenRevocation};
pub use links::{Attachment, LinkListing, LinkRefs, environment_ref};

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

pub fn project_ref(field: &str, value: &str) -> Result<ProjectRef, RegistryError> {
    ProjectRef::parse(value).map_err(|e| RegistryError::invalid(field, e))
}

/// `page_size` and `page_token` of a `List*` request.
pub fn page_request<K: PageKey>(size: i32, token: &str) -> Result<PageRequest<K>, RegistryError> {
    let mut v = Violations::default();
    let value = page(&mut v, size, token);
    v.finish(value)
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
    let project_id = v.check("key.project_id", ProjectId::parse(&key.project_id));
    Some(GrantKey {
        team_id: team_id?,
        connector_id: connector_id?,
        project_id: Some(project_id?),
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

pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}
