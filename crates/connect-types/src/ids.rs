//! Parse-don't-validate newtypes for the identifiers and values of the contract.
//!
//! Each type's `parse` is the single place its rules live; a value of the type is valid by
//! construction, so no caller checks again. `parse` answers with a human-readable description
//! that the caller attaches to the field it came from.

use std::fmt;

use serde::Serialize;

/// Why a single value was rejected (the field name is added by whoever knows it).
pub type Invalid = String;

pub fn check_chars(
    value: &str,
    what: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    charset: &str,
) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if value.len() > max {
        return Err(format!("{what} must be at most {max} characters"));
    }
    if !value.chars().all(allowed) {
        return Err(format!("{what} may contain only {charset}"));
    }
    Ok(())
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
}

/// A validated string newtype: the struct, `as_str`, `Display` and `AsRef<str>`. Its `parse`
/// (the rules) is written beside each use. Crates with value types of their own use it too.
#[macro_export]
macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// An OIDC issuer URL, e.g. `https://oidc.vercel.com/acme`: exactly the `iss` of its tokens.
    IssuerUrl
);
string_newtype!(
    /// A team's id, the `owner_id` claim of its tokens, e.g. `team_a1b2`.
    TeamId
);
string_newtype!(
    /// A team's URL-safe short name, e.g. `acme`.
    TeamSlug
);
string_newtype!(
    /// A project's external id, the `project_id` claim, e.g. `prj_9f8e`.
    ProjectId
);
string_newtype!(
    /// A project's display name, unique in its team, e.g. `web`.
    ProjectName
);
string_newtype!(
    /// A connector's opaque id, `conn_` and 24 lowercase alphanumerics.
    ConnectorId
);
string_newtype!(
    /// The id of an API key, `key_…`; the actor of audit events.
    KeyId
);

impl TeamId {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        check_chars(
            value,
            "team id",
            64,
            is_id_char,
            "A-Z, a-z, 0-9, '_' and '-'",
        )?;
        Ok(Self(value.to_owned()))
    }
}

impl TeamSlug {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        check_chars(
            value,
            "team slug",
            48,
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
            "a-z, 0-9 and '-'",
        )?;
        Ok(Self(value.to_owned()))
    }
}

impl IssuerUrl {
    /// An `https://` URL (or `http://` for a loopback development issuer) with a host, without
    /// query, fragment or trailing slash: exactly the form of a token's `iss` claim.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        if value.is_empty() {
            return Err("issuer must not be empty".into());
        }
        if value.len() > 255 {
            return Err("issuer must be at most 255 characters".into());
        }
        let rest = if let Some(rest) = value.strip_prefix("https://") {
            rest
        } else if let Some(rest) = value.strip_prefix("http://") {
            if !crate::url_policy::is_loopback_http(value) {
                return Err("issuer must use https (http only for a loopback host)".into());
            }
            rest
        } else {
            return Err("issuer must be an https:// URL".into());
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err("issuer must name a host".into());
        }
        if value.ends_with('/') {
            return Err("issuer must not end with '/'".into());
        }
        if value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
        {
            return Err("issuer must not contain whitespace, a query or a fragment".into());
        }
        Ok(Self(value.to_owned()))
    }
}

impl ProjectId {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        check_chars(
            value,
            "project id",
            64,
            is_id_char,
            "A-Z, a-z, 0-9, '_' and '-'",
        )?;
        Ok(Self(value.to_owned()))
    }
}

impl ProjectName {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        check_chars(
            value,
            "project name",
            100,
            is_name_char,
            "a-z, 0-9, '.', '_' and '-'",
        )?;
        Ok(Self(value.to_owned()))
    }
}

impl ConnectorId {
    pub const PREFIX: &'static str = "conn_";
    pub const SUFFIX_LEN: usize = 24;

    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let valid = value.strip_prefix(Self::PREFIX).is_some_and(|suffix| {
            suffix.len() == Self::SUFFIX_LEN
                && suffix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
        if !valid {
            return Err("connector id must be 'conn_' followed by 24 of a-z and 0-9".into());
        }
        Ok(Self(value.to_owned()))
    }

    /// The id with this random suffix (24 of `a-z0-9`).
    pub fn from_suffix(suffix: &str) -> Result<Self, Invalid> {
        Self::parse(&format!("{}{suffix}", Self::PREFIX))
    }
}

impl KeyId {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        check_chars(
            value,
            "key id",
            64,
            is_id_char,
            "A-Z, a-z, 0-9, '_' and '-'",
        )?;
        Ok(Self(value.to_owned()))
    }

    /// The id with this random suffix.
    pub fn from_suffix(suffix: &str) -> Result<Self, Invalid> {
        Self::parse(&format!("key_{suffix}"))
    }
}

/// A connector's team-unique `<type>/<name>`, e.g. `api-key/stripe`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ConnectorUid(String);

impl ConnectorUid {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let Some((kind, name)) = value.split_once('/') else {
            return Err("connector uid must be '<type>/<name>'".into());
        };
        ConnectorType::parse(kind)?;
        check_chars(
            name,
            "connector name",
            64,
            is_name_char,
            "a-z, 0-9, '.', '_' and '-'",
        )?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the slash.
    pub fn kind(&self) -> ConnectorType {
        ConnectorType(
            self.0
                .split_once('/')
                .map(|(k, _)| k)
                .unwrap_or_default()
                .to_owned(),
        )
    }

    /// The part after the slash.
    pub fn name(&self) -> &str {
        self.0.split_once('/').map(|(_, n)| n).unwrap_or_default()
    }
}

impl fmt::Display for ConnectorUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A connector type such as `api-key` or `oauth2`: `[a-z][a-z0-9-]{0,31}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ConnectorType(String);

impl ConnectorType {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        check_chars(
            value,
            "connector type",
            32,
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
            "a-z, 0-9 and '-'",
        )?;
        if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err("connector type must start with a letter".into());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a request names a connector: its id or its uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectorRef {
    Id(ConnectorId),
    Uid(ConnectorUid),
}

impl ConnectorRef {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        if value.is_empty() {
            return Err(
                "connector must not be empty: give its id (conn_…) or uid (<type>/<name>)".into(),
            );
        }
        if value.contains('/') {
            ConnectorUid::parse(value).map(Self::Uid)
        } else if value.starts_with(ConnectorId::PREFIX) {
            ConnectorId::parse(value).map(Self::Id)
        } else {
            Err("connector must be an id (conn_…) or a uid (<type>/<name>)".into())
        }
    }
}

impl fmt::Display for ConnectorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => id.fmt(f),
            Self::Uid(uid) => uid.fmt(f),
        }
    }
}

/// A deployment environment: one of the three built in, or a project's own (`Custom`: its id
/// `env_…` or its slug, as a deployment token's `environment` claim or an admin names it; the
/// registry resolves it against the project's environments).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Environment {
    Production,
    Preview,
    Development,
    Custom(CustomEnvironment),
}

/// The longest custom environment slug.
pub const MAX_ENVIRONMENT_SLUG: usize = 40;

/// A custom environment's id (`env_` and 24 lower-case letters or digits) or slug (lower-case
/// letters, digits and `-`, starting with a letter or digit, at most 40, never a built-in name),
/// held inline so that an [`Environment`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CustomEnvironment {
    len: u8,
    bytes: [u8; MAX_ENVIRONMENT_SLUG],
}

impl CustomEnvironment {
    pub fn as_str(&self) -> &str {
        // Built only from validated ASCII.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }

    /// Whether this names the environment by its id (`env_…`) rather than its slug.
    pub fn is_id(&self) -> bool {
        self.as_str().starts_with(ENVIRONMENT_ID_PREFIX)
    }

    /// A fresh id (`env_` and 24 lower-case letters or digits from `suffix`).
    pub fn id_from_suffix(suffix: &str) -> Result<Self, Invalid> {
        let id = format!("{ENVIRONMENT_ID_PREFIX}{suffix}");
        if is_environment_id(&id) {
            Ok(Self::new(&id))
        } else {
            Err("an environment id is env_ and 24 lower-case letters or digits".into())
        }
    }

    /// A stored id.
    pub fn parse_id(value: &str) -> Result<Self, Invalid> {
        if is_environment_id(value) {
            Ok(Self::new(value))
        } else {
            Err(format!(
                "not an environment id (env_…): {:?}",
                truncate(value, 40)
            ))
        }
    }

    fn new(value: &str) -> Self {
        let mut bytes = [0; MAX_ENVIRONMENT_SLUG];
        bytes[..value.len()].copy_from_slice(value.as_bytes());
        Self {
            len: value.len() as u8,
            bytes,
        }
    }
}

impl Serialize for CustomEnvironment {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Debug for CustomEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// How a custom environment's id starts.
pub const ENVIRONMENT_ID_PREFIX: &str = "env_";

/// Whether `value` is a custom environment id: `env_` and 24 lower-case letters or digits.
pub fn is_environment_id(value: &str) -> bool {
    value
        .strip_prefix(ENVIRONMENT_ID_PREFIX)
        .is_some_and(|rest| {
            rest.len() == 24
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Checks a custom environment slug: lower-case letters, digits and `-`, starting with a letter or
/// digit, at most 40 characters, and not a built-in environment's name.
pub fn check_environment_slug(value: &str) -> Result<(), Invalid> {
    if Environment::builtin(value).is_ok() {
        return Err(format!(
            "'{value}' is a built-in environment: a custom environment needs another slug"
        ));
    }
    let shaped = !value.is_empty()
        && value.len() <= MAX_ENVIRONMENT_SLUG
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if shaped {
        Ok(())
    } else {
        Err(format!(
            "slug must be 1 to {MAX_ENVIRONMENT_SLUG} lower-case letters, digits and '-', starting with a letter or digit (got {:?})",
            truncate(value, 48)
        ))
    }
}

impl Environment {
    pub const ALL: [Environment; 3] = [Self::Development, Self::Preview, Self::Production];

    /// A built-in environment, a custom environment's id, or a custom environment's slug.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        if let Ok(builtin) = Self::builtin(value) {
            return Ok(builtin);
        }
        if is_environment_id(value) || check_environment_slug(value).is_ok() {
            return Ok(Self::Custom(CustomEnvironment::new(value)));
        }
        Err(format!(
            "environment must be production, preview, development, or a custom environment's id (env_…) or slug (got {:?})",
            truncate(value, 48)
        ))
    }

    /// One of the three built-in environments only.
    pub fn builtin(value: &str) -> Result<Self, Invalid> {
        match value {
            "production" => Ok(Self::Production),
            "preview" => Ok(Self::Preview),
            "development" => Ok(Self::Development),
            _ => Err(format!(
                "environment must be one of production, preview, development (got {:?})",
                truncate(value, 32)
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Production => "production",
            Self::Preview => "preview",
            Self::Development => "development",
            Self::Custom(custom) => custom.as_str(),
        }
    }

    /// The custom environment this names, if it is not a built-in one.
    pub fn custom(&self) -> Option<&CustomEnvironment> {
        match self {
            Self::Custom(custom) => Some(custom),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::Development => 1,
            Self::Preview => 2,
            Self::Production => 4,
            Self::Custom(_) => 0,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of the built-in environments. Stored as a bit mask: development 1, preview 2,
/// production 4. Parsed from a request it is never empty; a link whose environments are all
/// custom ones holds the empty set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnvironmentSet(u8);

impl EnvironmentSet {
    /// Parses a list of built-in environment names; duplicates collapse, the list must not be
    /// empty.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, Invalid> {
        if values.is_empty() {
            return Err(
                "environments must name at least one of production, preview, development".into(),
            );
        }
        let mut bits = 0;
        for value in values {
            bits |= Environment::builtin(value.as_ref())?.bit();
        }
        Ok(Self(bits))
    }

    /// The built-in ones of `environments` (custom ones are left to the caller).
    pub fn of(environments: &[Environment]) -> Self {
        Self(environments.iter().fold(0, |bits, e| bits | e.bit()))
    }

    /// From the stored bit mask.
    pub fn from_bits(bits: i32) -> Option<Self> {
        (1..=7).contains(&bits).then_some(Self(bits as u8))
    }

    /// From a stored mask that may be empty (a link with custom environments only).
    pub fn from_stored_bits(bits: i32) -> Option<Self> {
        (0..=7).contains(&bits).then_some(Self(bits as u8))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn bits(self) -> i32 {
        i32::from(self.0)
    }

    pub fn contains(self, environment: Environment) -> bool {
        self.0 & environment.bit() != 0
    }

    /// The members in a stable order: development, preview, production.
    pub fn iter(self) -> impl Iterator<Item = Environment> {
        Environment::ALL
            .into_iter()
            .filter(move |e| self.contains(*e))
    }

    pub fn names(self) -> Vec<String> {
        self.iter().map(|e| e.as_str().to_owned()).collect()
    }
}

impl Serialize for EnvironmentSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(|e| e.as_str().to_owned()))
    }
}

/// A shortened copy of untrusted input, safe to echo in an error message.
pub fn truncate(value: &str, max: usize) -> String {
    let mut out: String = value.chars().take(max).collect();
    if value.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn connector_refs_are_told_apart_by_their_shape() {
        assert!(matches!(
            ConnectorRef::parse("api-key/stripe"),
            Ok(ConnectorRef::Uid(_))
        ));
        assert!(matches!(
            ConnectorRef::parse("conn_0123456789abcdefghijklmn"),
            Ok(ConnectorRef::Id(_))
        ));
        assert!(ConnectorRef::parse("stripe").is_err());
        assert!(ConnectorRef::parse("conn_short").is_err());
        assert!(ConnectorRef::parse("API/x").is_err());
        assert!(ConnectorRef::parse("api-key/").is_err());
        assert!(ConnectorRef::parse("").is_err());
    }

    #[test]
    fn environment_sets_deduplicate_and_reject_unknown_names() {
        let set = EnvironmentSet::parse(&["preview", "production", "preview"]).unwrap();
        assert_eq!(set.names(), ["preview", "production"]);
        assert!(!set.contains(Environment::Development));
        assert!(EnvironmentSet::parse::<&str>(&[]).is_err());
        assert!(EnvironmentSet::parse(&["staging"]).is_err());
        assert!(EnvironmentSet::parse(&["Production"]).is_err());
        assert_eq!(EnvironmentSet::from_bits(set.bits()), Some(set));
        assert_eq!(EnvironmentSet::from_bits(0), None);
        assert_eq!(EnvironmentSet::from_bits(8), None);
    }

    #[test]
    fn issuers_must_be_https_or_loopback_http() {
        assert!(IssuerUrl::parse("https://oidc.vercel.com/acme").is_ok());
        assert!(IssuerUrl::parse("http://127.0.0.1:8080").is_ok());
        assert!(IssuerUrl::parse("http://localhost:9000/x").is_ok());
        assert!(IssuerUrl::parse("http://[::1]:8080").is_ok());
        assert!(IssuerUrl::parse("http://evil.example.com").is_err());
        assert!(IssuerUrl::parse("http://[::2]:80").is_err());
        assert!(IssuerUrl::parse("http://127.0.0.1.evil.com").is_err());
        assert!(IssuerUrl::parse("https://oidc.vercel.com/acme/").is_err());
        assert!(IssuerUrl::parse("https://x?y").is_err());
        assert!(IssuerUrl::parse("https://").is_err());
        assert!(IssuerUrl::parse("ftp://x").is_err());
    }

    #[test]
    fn custom_environments_are_ids_or_slugs_never_built_in_names() {
        let staging = Environment::parse("staging").unwrap();
        assert_eq!(staging.as_str(), "staging");
        assert!(!staging.custom().unwrap().is_id());
        let id = Environment::parse("env_0123456789abcdefghijklmn").unwrap();
        assert!(id.custom().unwrap().is_id());
        assert_eq!(
            format!("{id:?}"),
            "Custom(\"env_0123456789abcdefghijklmn\")"
        );
        assert_eq!(Environment::parse("preview").unwrap(), Environment::Preview);
        for bad in ["", "Staging", "-qa", "a b", "env_short", &"x".repeat(41)] {
            assert!(Environment::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Environment::builtin("staging").is_err());
        assert!(check_environment_slug("production").is_err());
        assert!(check_environment_slug("qa-2").is_ok());
        assert!(check_environment_slug("env_x").is_err());
        assert!(EnvironmentSet::parse(&["staging"]).is_err());
        let set = EnvironmentSet::of(&[staging, Environment::Production]);
        assert_eq!(set.names(), ["production"]);
        assert!(!set.contains(staging));
        assert_eq!(
            EnvironmentSet::from_stored_bits(0).map(|s| s.is_empty()),
            Some(true)
        );
    }

    #[test]
    fn ids_from_random_suffixes_follow_their_rules() {
        assert!(ConnectorId::from_suffix("0123456789abcdefghijklmn").is_ok());
        assert!(ConnectorId::from_suffix("short").is_err());
        assert_eq!(KeyId::from_suffix("abc").unwrap().as_str(), "key_abc");
        assert!(TeamId::parse("team a").is_err());
        assert!(ProjectName::parse("Web").is_err());
    }

    mod laws {
        use proptest::prelude::*;

        use super::super::*;

        const NAMES: [&str; 3] = ["production", "preview", "development"];

        proptest! {
            /// A set holds exactly the environments named (in any order, repeated or not); a
            /// name that is not an environment, or none at all, is refused.
            #[test]
            fn environment_sets_hold_what_was_named(
                picks in prop::collection::vec(0usize..3, 0..6),
                stranger in "[a-z]{1,12}",
            ) {
                let names: Vec<&str> = picks.iter().map(|&i| NAMES[i]).collect();
                match EnvironmentSet::parse(&names) {
                    Ok(set) => {
                        let held: Vec<String> = set.iter().map(|e| e.as_str().to_owned()).collect();
                        let held: Vec<&str> = held.iter().map(String::as_str).collect();
                        for name in NAMES {
                            prop_assert_eq!(held.contains(&name), names.contains(&name));
                        }
                        prop_assert_eq!(held.len(), NAMES.iter().filter(|n| names.contains(n)).count());
                    }
                    Err(_) => prop_assert!(names.is_empty()),
                }
                if !NAMES.contains(&stranger.as_str()) {
                    let mut with_stranger = names.clone();
                    with_stranger.push(&stranger);
                    prop_assert!(EnvironmentSet::parse(&with_stranger).is_err());
                }
            }
        }
    }
}
