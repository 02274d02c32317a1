//! The registry's own value types: display names, project references, config
//! and secret maps. The contract's identifiers and environments live in
//! `connect-types` and are re-exported here, so the registry names them in one way.
//!
//! Each type's `parse` is the single place its rules live; a value of the type is valid by
//! construction, so the service and the store never check again. `parse` answers with a
//! human-readable description that the caller attaches to the field it came from.

use std::{collections::BTreeMap, fmt};

pub use connect_types::ids::{
    ConnectorId, ConnectorRef, ConnectorType, ConnectorUid, CustomEnvironment, Environment,
    EnvironmentSet, Invalid, IssuerUrl, KeyId, ProjectId, ProjectName, TeamId, TeamSlug,
    check_chars, truncate,
};
use serde::Serialize;

connect_types::string_newtype!(
    /// A human-facing display name.
    DisplayName
);

impl DisplayName {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        if value.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        if value.chars().count() > 100 {
            return Err("name must be at most 100 characters".into());
        }
        if value.chars().any(char::is_control) || value.trim() != value {
            return Err("name must not contain control characters or surrounding spaces".into());
        }
        Ok(Self(value.to_owned()))
    }
}

connect_types::string_newtype!(
    /// A provider's id for an installation of a connector, e.g. a GitHub installation id.
    InstallationId
);

/// Asks for every installation at once, where the type allows it.
pub const EVERY_INSTALLATION: &str = "*";

impl InstallationId {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        check_chars(
            value,
            "installation_id",
            128,
            |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
            "A-Z, a-z, 0-9, '_', '.' and '-'",
        )?;
        Ok(Self(value.to_owned()))
    }

    /// The id of an installation of a connector of type `kind`, by the type's own rule too
    /// (GitHub's are numbers).
    pub fn parse_for(kind: &str, value: &str) -> Result<Self, Invalid> {
        let id = Self::parse(value)?;
        if let Some(row) = connect_types::capabilities(kind) {
            row.check_installation_id(value)?;
        }
        Ok(id)
    }
}

connect_types::string_newtype!(
    /// The application's id for one of its users, as a `user` subject names it.
    UserId
);

impl UserId {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        if value.is_empty() {
            return Err("user id must not be empty".into());
        }
        if value.len() > 256 {
            return Err("user id must be at most 256 bytes".into());
        }
        if value.chars().any(char::is_control) || value.trim() != value {
            return Err("user id must not contain control characters or surrounding spaces".into());
        }
        Ok(Self(value.to_owned()))
    }
}

/// How a request names a project: a string that is looked up as an id first, then as a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectRef {
    pub id: Option<ProjectId>,
    pub name: Option<ProjectName>,
    raw: String,
}

impl ProjectRef {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        if value.is_empty() {
            return Err("project must not be empty: give its id or name".into());
        }
        let id = ProjectId::parse(value).ok();
        let name = ProjectName::parse(value).ok();
        if id.is_none() && name.is_none() {
            return Err("project must be a project id or a project name".into());
        }
        Ok(Self {
            id,
            name,
            raw: value.to_owned(),
        })
    }
}

impl fmt::Display for ProjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// A connector's non-secret settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ConfigMap(BTreeMap<String, String>);

pub const MAX_CONFIG_ENTRIES: usize = 32;
pub const MAX_CONFIG_VALUE_BYTES: usize = 4096;
pub const MAX_SECRET_ENTRIES: usize = 16;
pub const MAX_SECRET_VALUE_BYTES: usize = 8192;

fn check_map_key(key: &str) -> Result<(), Invalid> {
    check_chars(
        key,
        "key",
        64,
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
        "A-Z, a-z, 0-9, '_', '.' and '-'",
    )
}

impl ConfigMap {
    /// Checks each entry; violations come back as `(key, description)`.
    pub fn parse<'a>(
        entries: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<Self, Vec<(String, Invalid)>> {
        let mut map = BTreeMap::new();
        let mut errors = Vec::new();
        for (key, value) in entries {
            if let Err(e) = check_map_key(key) {
                errors.push((truncate(key, 64), e));
            } else if value.len() > MAX_CONFIG_VALUE_BYTES {
                errors.push((
                    key.clone(),
                    format!("value must be at most {MAX_CONFIG_VALUE_BYTES} bytes"),
                ));
            } else {
                map.insert(key.clone(), value.clone());
            }
        }
        if map.len() + errors.len() > MAX_CONFIG_ENTRIES {
            errors.push((
                String::new(),
                format!("at most {MAX_CONFIG_ENTRIES} entries"),
            ));
        }
        if errors.is_empty() {
            Ok(Self(map))
        } else {
            Err(errors)
        }
    }

    /// From stored, already validated values.
    pub fn from_stored(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// Plaintext secrets on their way in, before they are sealed.
pub struct SecretInput(BTreeMap<String, secrecy::SecretString>);

impl fmt::Debug for SecretInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl SecretInput {
    pub fn parse(
        entries: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, Vec<(String, Invalid)>> {
        let mut map = BTreeMap::new();
        let mut errors = Vec::new();
        for (key, value) in entries {
            if let Err(e) = check_map_key(&key) {
                errors.push((truncate(&key, 64), e));
            } else if value.is_empty() {
                errors.push((key, "secret value must not be empty".into()));
            } else if value.len() > MAX_SECRET_VALUE_BYTES {
                errors.push((
                    key,
                    format!("secret value must be at most {MAX_SECRET_VALUE_BYTES} bytes"),
                ));
            } else {
                map.insert(key, secrecy::SecretString::from(value));
            }
        }
        if map.len() + errors.len() > MAX_SECRET_ENTRIES {
            errors.push((
                String::new(),
                format!("at most {MAX_SECRET_ENTRIES} entries"),
            ));
        }
        if errors.is_empty() {
            Ok(Self(map))
        } else {
            Err(errors)
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &secrecy::SecretString)> {
        self.0.iter()
    }

    /// Values opened from storage, already validated when they were stored.
    pub fn from_opened(values: BTreeMap<String, secrecy::SecretString>) -> Self {
        Self(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_secret_maps_name_their_bad_keys() {
        let good = [("token_url".to_owned(), "https://x".to_owned())];
        assert!(ConfigMap::parse(good.iter().map(|(k, v)| (k, v))).is_ok());
        let bad = [("bad key".to_owned(), "v".to_owned())];
        let errors = ConfigMap::parse(bad.iter().map(|(k, v)| (k, v))).unwrap_err();
        assert_eq!(errors[0].0, "bad key");
        let errors = SecretInput::parse([("api_key".to_owned(), String::new())]).unwrap_err();
        assert_eq!(errors[0].0, "api_key");
        let input = SecretInput::parse([("api_key".to_owned(), "sk_live_1".to_owned())]).unwrap();
        assert!(!format!("{input:?}").contains("sk_live_1"));
    }
}
