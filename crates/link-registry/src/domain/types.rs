//! Parse-don't-validate newtypes for every identifier and value the registry accepts.
//!
//! Each type's `parse` is the single place its rules live; a value of the type is valid by
//! construction, so the service and the store never check again. `parse` answers with a
//! human-readable description that the caller attaches to the field it came from.

use std::{collections::BTreeMap, fmt};

use serde::Serialize;

/// Why a single value was rejected (the field name is added by whoever knows it).
pub type Invalid = String;

fn check_chars(
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

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    /// A team's id, the `owner_id` claim of its tokens, e.g. `team_a1b2`.
    TeamId
);
string_newtype!(
    /// A team's URL-safe short name, e.g. `acme`.
    TeamSlug
);
string_newtype!(
    /// An OIDC issuer URL, e.g. `https://oidc.vercel.com/acme`.
    IssuerUrl
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
    /// A human-facing display name.
    DisplayName
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
            if !connect_runtime::is_loopback_http(value) {
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
    const SUFFIX_LEN: usize = 24;

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

    /// A fresh random id.
    pub fn generate() -> Self {
        Self(format!(
            "{}{}",
            Self::PREFIX,
            crate::crypto::random_token(Self::SUFFIX_LEN)
        ))
    }
}

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

    pub fn generate() -> Self {
        Self(format!("key_{}", crate::crypto::random_token(16)))
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

/// A deployment environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Environment {
    Production,
    Preview,
    Development,
}

impl Environment {
    pub const ALL: [Environment; 3] = [Self::Development, Self::Preview, Self::Production];

    pub fn parse(value: &str) -> Result<Self, Invalid> {
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

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Preview => "preview",
            Self::Development => "development",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::Development => 1,
            Self::Preview => 2,
            Self::Production => 4,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-empty set of environments. Stored as a bit mask: development 1, preview 2, production 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnvironmentSet(u8);

impl EnvironmentSet {
    /// Parses a list of environment names; duplicates collapse, the list must not be empty.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, Invalid> {
        if values.is_empty() {
            return Err(
                "environments must name at least one of production, preview, development".into(),
            );
        }
        let mut bits = 0;
        for value in values {
            bits |= Environment::parse(value.as_ref())?.bit();
        }
        Ok(Self(bits))
    }

    /// From the stored bit mask.
    pub fn from_bits(bits: i32) -> Option<Self> {
        (1..=7).contains(&bits).then_some(Self(bits as u8))
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
        serializer.collect_seq(self.iter().map(Environment::as_str))
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
}

/// What a `List*` call asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// How many items at most (1 to [`PageRequest::MAX_SIZE`]).
    pub size: u64,
    /// The sort key of the last item of the previous page.
    pub after: Option<String>,
}

impl PageRequest {
    pub const DEFAULT_SIZE: u64 = 50;
    pub const MAX_SIZE: u64 = 500;

    pub fn first(size: u64) -> Self {
        Self { size, after: None }
    }

    /// Parses `page_size` (0 means the default, larger than the maximum means the maximum).
    pub fn parse_size(size: i32) -> Result<u64, Invalid> {
        match size {
            0 => Ok(Self::DEFAULT_SIZE),
            n if n < 0 => Err("page_size must not be negative".into()),
            n => Ok((n as u64).min(Self::MAX_SIZE)),
        }
    }

    /// Parses an opaque `page_token` made by [`PageRequest::token_after`].
    pub fn parse_token(token: &str) -> Result<Option<String>, Invalid> {
        use base64::Engine;
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || Invalid::from("page_token is not a token this server issued");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        text.strip_prefix("v1:")
            .map(|key| Some(key.to_owned()))
            .ok_or_else(invalid)
    }

    /// The token that continues after the item with this sort key.
    pub fn token_after(key: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{key}"))
    }
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Empty on the last page.
    pub next_page_token: String,
}

impl<T> Page<T> {
    /// Builds a page from up to `size + 1` rows fetched in order: the extra row, if present,
    /// proves there is a next page.
    pub fn from_rows(mut rows: Vec<T>, size: u64, key: impl Fn(&T) -> String) -> Self {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last()
                .map(|last| PageRequest::token_after(&key(last)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Self {
            items: rows,
            next_page_token,
        }
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
    fn page_tokens_round_trip_and_garbage_is_rejected() {
        let token = PageRequest::token_after("prj_1");
        assert_eq!(
            PageRequest::parse_token(&token).unwrap().as_deref(),
            Some("prj_1")
        );
        assert_eq!(PageRequest::parse_token("").unwrap(), None);
        assert!(PageRequest::parse_token("not a token!").is_err());
        assert!(PageRequest::parse_token("aGVsbG8").is_err());
        assert_eq!(PageRequest::parse_size(0).unwrap(), 50);
        assert_eq!(PageRequest::parse_size(10_000).unwrap(), 500);
        assert!(PageRequest::parse_size(-1).is_err());
    }

    #[test]
    fn pages_know_whether_more_rows_follow() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(page.items, [1, 2]);
        assert_eq!(
            PageRequest::parse_token(&page.next_page_token)
                .unwrap()
                .as_deref(),
            Some("2")
        );
        let last = Page::from_rows(vec![1, 2], 2, |n| n.to_string());
        assert!(last.next_page_token.is_empty());
    }

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
