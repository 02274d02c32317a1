//! A link's ceilings: what an admin lets a project ask for through one link, whatever the caller
//! puts in its request. Empty lists set no ceiling. The registry checks what it can know
//! (`ExplainAccess`, and the installation in `Authorize`) and the broker the whole request against
//! its cached link, both through [`Ceilings::refusal`]; the broker then asks the provider for
//! [`Ceilings::scopes`] and [`Ceilings::resources`], so a request naming none never means
//! "everything the provider would give".

use std::fmt;

use crate::{Capabilities, FieldViolation, Reason, SubjectKind, capabilities::Scopes, truncate};

/// What a link allows at most.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ceilings {
    /// Scopes a token may carry (GitHub: `name:level` permissions).
    pub scopes: Vec<String>,
    /// Resources a token may be narrowed to (GitHub: repository names).
    pub resources: Vec<String>,
    /// Installations a token may be for.
    pub installations: Vec<String>,
    /// On whose behalf tokens may be asked for.
    pub subjects: Vec<SubjectKind>,
}

/// What a request asks of a link, as far as the asker knows it.
#[derive(Clone, Copy, Debug)]
pub struct CeilingAsk<'a> {
    /// `None` where the asker does not know it (the registry's `Authorize`).
    pub subject: Option<SubjectKind>,
    /// The installation the token would be for: its id, `*` for every installation, `""` for none.
    /// `None` where the asker does not know it.
    pub installation: Option<&'a str>,
    pub scopes: &'a [String],
    pub resources: &'a [String],
}

/// The first ceiling a request goes beyond.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CeilingRefusal {
    Subject(SubjectKind),
    /// The installation's id, `*`, or empty (a token for no installation).
    Installation(String),
    Scope(String),
    Resource(String),
}

impl CeilingRefusal {
    pub fn reason(&self) -> Reason {
        match self {
            Self::Subject(_) | Self::Installation(_) => Reason::SubjectNotAllowed,
            Self::Scope(_) | Self::Resource(_) => Reason::ScopeNotAllowed,
        }
    }

    /// The link field whose ceiling was reached.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Subject(_) => "allowed_subjects",
            Self::Installation(_) => "allowed_installations",
            Self::Scope(_) => "allowed_scopes",
            Self::Resource(_) => "allowed_resources",
        }
    }
}

impl fmt::Display for CeilingRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Subject(kind) => write!(f, "the link does not allow {kind} subjects"),
            Self::Installation(id) if id.is_empty() => f.write_str(
                "the link allows tokens for its allowed installations only, not for none",
            ),
            Self::Installation(id) => {
                write!(
                    f,
                    "the link does not allow installation '{}'",
                    truncate(id, 64)
                )
            }
            Self::Scope(scope) => {
                write!(f, "the link does not allow scope '{}'", truncate(scope, 64))
            }
            Self::Resource(resource) => {
                write!(
                    f,
                    "the link does not allow resource '{}'",
                    truncate(resource, 64)
                )
            }
        }
    }
}

/// The most values one ceiling may list.
pub const MAX_CEILING_VALUES: usize = 100;

impl Ceilings {
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
            && self.resources.is_empty()
            && self.installations.is_empty()
            && self.subjects.is_empty()
    }

    /// The first ceiling `ask` goes beyond, in this order: subject, installation, scopes,
    /// resources. What the asker does not know is not checked.
    pub fn refusal(&self, ask: &CeilingAsk<'_>) -> Option<CeilingRefusal> {
        if let Some(subject) = ask.subject
            && !self.subjects.is_empty()
            && !self.subjects.contains(&subject)
        {
            return Some(CeilingRefusal::Subject(subject));
        }
        if let Some(installation) = ask.installation
            && !self.installations.is_empty()
            && !self.installations.iter().any(|i| i == installation)
        {
            return Some(CeilingRefusal::Installation(installation.to_owned()));
        }
        if let Some(scope) = beyond(&self.scopes, ask.scopes) {
            return Some(CeilingRefusal::Scope(scope.to_owned()));
        }
        if let Some(resource) = beyond(&self.resources, ask.resources) {
            return Some(CeilingRefusal::Resource(resource.to_owned()));
        }
        None
    }

    /// The scopes to ask the provider for: those asked; none asked under a ceiling, the
    /// ceiling's (never the connector's or the provider's default, which may be wider).
    pub fn scopes<'a>(&'a self, asked: &'a [String]) -> &'a [String] {
        if asked.is_empty() {
            &self.scopes
        } else {
            asked
        }
    }

    /// The resources to narrow the token to, like [`Ceilings::scopes`].
    pub fn resources<'a>(&'a self, asked: &'a [String]) -> &'a [String] {
        if asked.is_empty() {
            &self.resources
        } else {
            asked
        }
    }

    /// What is wrong with these ceilings for a connector of `row`'s type (syntax and fit; whether
    /// the installations exist is the registry's to check). Values are sorted and deduplicated
    /// first by [`Ceilings::normalized`].
    pub fn violations(&self, row: &Capabilities) -> Vec<FieldViolation> {
        let mut violations = Vec::new();
        let kind = row.connector_type;
        for (field, len) in [
            ("allowed_scopes", self.scopes.len()),
            ("allowed_resources", self.resources.len()),
            ("allowed_installations", self.installations.len()),
            ("allowed_subjects", self.subjects.len()),
        ] {
            if len > MAX_CEILING_VALUES {
                violations.push(FieldViolation::new(
                    field,
                    format!("at most {MAX_CEILING_VALUES} values"),
                ));
            }
        }
        if !self.scopes.is_empty() && row.scopes == Scopes::None {
            violations.push(FieldViolation::new(
                "allowed_scopes",
                format!("{kind} connectors issue no scoped tokens"),
            ));
        } else if let Some(bad) = self.scopes.iter().find(|s| !row.is_scope(s)) {
            violations.push(FieldViolation::new(
                "allowed_scopes",
                format!(
                    "'{}' is not a scope {kind} connectors take{}",
                    truncate(bad, 40),
                    if row.scopes == Scopes::Permissions {
                        " (name:level, e.g. contents:read)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        if !self.resources.is_empty() && !row.resources {
            violations.push(FieldViolation::new(
                "allowed_resources",
                format!("{kind} connectors cannot narrow tokens to resources"),
            ));
        } else if let Some(bad) = self.resources.iter().find(|r| !is_resource_name(r)) {
            violations.push(FieldViolation::new(
                "allowed_resources",
                format!(
                    "'{}' is not a resource name (letters, digits, '.', '-', '_'; at most 100)",
                    truncate(bad, 40)
                ),
            ));
        }
        if !self.installations.is_empty()
            && row.installations == crate::capabilities::Installations::None
        {
            violations.push(FieldViolation::new(
                "allowed_installations",
                format!("{kind} connectors have no installations"),
            ));
        }
        if let Some(kind_refused) = self.subjects.iter().find(|s| !row.accepts(**s)) {
            violations.push(FieldViolation::new(
                "allowed_subjects",
                format!("{kind} connectors do not issue for {kind_refused} subjects"),
            ));
        }
        violations
    }

    /// The same ceilings with each list sorted and deduplicated.
    pub fn normalized(mut self) -> Self {
        for list in [
            &mut self.scopes,
            &mut self.resources,
            &mut self.installations,
        ] {
            list.sort();
            list.dedup();
        }
        self.subjects.sort_by_key(|s| s.as_str());
        self.subjects.dedup();
        self
    }
}

/// The first of `asked` outside `ceiling`, when there is a ceiling.
fn beyond<'a>(ceiling: &[String], asked: &'a [String]) -> Option<&'a str> {
    if ceiling.is_empty() {
        return None;
    }
    asked
        .iter()
        .find(|a| !ceiling.contains(a))
        .map(String::as_str)
}

/// A resource name as providers spell repositories and the like.
fn is_resource_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl SubjectKind {
    /// The kind of a wire name (`app`, `user`, `jwt_bearer`, `token`).
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn requests_beyond_a_ceiling_are_refused_in_order_and_none_asked_means_the_ceiling() {
        let ceilings = Ceilings {
            scopes: strings(&["read"]),
            resources: strings(&["api"]),
            installations: strings(&["42"]),
            subjects: vec![SubjectKind::App],
        };
        let scopes = strings(&["read", "write"]);
        let ask = CeilingAsk {
            subject: Some(SubjectKind::User),
            installation: Some("7"),
            scopes: &scopes,
            resources: &[],
        };
        assert_eq!(
            ceilings.refusal(&ask),
            Some(CeilingRefusal::Subject(SubjectKind::User))
        );
        let ask = CeilingAsk {
            subject: Some(SubjectKind::App),
            ..ask
        };
        let refusal = ceilings.refusal(&ask).unwrap();
        assert_eq!(refusal, CeilingRefusal::Installation("7".into()));
        assert_eq!(refusal.reason(), Reason::SubjectNotAllowed);
        let ask = CeilingAsk {
            installation: Some("42"),
            ..ask
        };
        let refusal = ceilings.refusal(&ask).unwrap();
        assert_eq!(refusal, CeilingRefusal::Scope("write".into()));
        assert_eq!(refusal.reason(), Reason::ScopeNotAllowed);
        assert_eq!(refusal.to_string(), "the link does not allow scope 'write'");
        let read = strings(&["read"]);
        let web = strings(&["web"]);
        let ask = CeilingAsk {
            scopes: &read,
            resources: &web,
            ..ask
        };
        assert_eq!(
            ceilings.refusal(&ask),
            Some(CeilingRefusal::Resource("web".into()))
        );
        // What the asker does not know is not checked; none asked is within.
        let unknown = CeilingAsk {
            subject: None,
            installation: None,
            scopes: &[],
            resources: &[],
        };
        assert_eq!(ceilings.refusal(&unknown), None);
        assert_eq!(ceilings.scopes(&[]), read.as_slice());
        assert_eq!(ceilings.scopes(&scopes), scopes.as_slice());
        assert_eq!(ceilings.resources(&[]), strings(&["api"]).as_slice());
        // A token for no installation is beyond an installation ceiling.
        let none = CeilingAsk {
            installation: Some(""),
            ..unknown
        };
        assert_eq!(
            ceilings.refusal(&none),
            Some(CeilingRefusal::Installation(String::new()))
        );
        assert_eq!(Ceilings::default().refusal(&ask), None);
        assert!(Ceilings::default().is_empty() && !ceilings.is_empty());
    }

    #[test]
    fn ceilings_are_checked_against_the_type() {
        let github = capabilities("github").unwrap();
        let api_key = capabilities("api-key").unwrap();
        let oauth2 = capabilities("oauth2").unwrap();
        let good = Ceilings {
            scopes: strings(&["contents:read"]),
            resources: strings(&["api", "web.site"]),
            installations: strings(&["42"]),
            subjects: vec![SubjectKind::App],
        };
        assert_eq!(good.violations(github), vec![]);
        let fields = |c: &Ceilings, row| {
            c.violations(row)
                .into_iter()
                .map(|v| v.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fields(&good, api_key),
            ["allowed_scopes", "allowed_resources"]
        );
        let bad = Ceilings {
            scopes: strings(&["contents"]),
            resources: strings(&["a/b"]),
            installations: vec![],
            subjects: vec![SubjectKind::User],
        };
        assert_eq!(
            fields(&bad, github),
            ["allowed_scopes", "allowed_resources", "allowed_subjects"]
        );
        let oauth = Ceilings {
            scopes: strings(&["read", "write:all"]),
            subjects: vec![SubjectKind::User, SubjectKind::JwtBearer],
            ..Ceilings::default()
        };
        assert_eq!(oauth.violations(oauth2), vec![]);
        let quote = Ceilings {
            scopes: strings(&["a\"b"]),
            ..Ceilings::default()
        };
        assert_eq!(fields(&quote, oauth2), ["allowed_scopes"]);
        let many = Ceilings {
            installations: (0..=MAX_CEILING_VALUES).map(|i| i.to_string()).collect(),
            ..Ceilings::default()
        };
        assert_eq!(fields(&many, github), ["allowed_installations"]);
        let normalized = Ceilings {
            scopes: strings(&["b", "a", "b"]),
            subjects: vec![SubjectKind::User, SubjectKind::App, SubjectKind::User],
            ..Ceilings::default()
        }
        .normalized();
        assert_eq!(normalized.scopes, ["a", "b"]);
        assert_eq!(normalized.subjects, [SubjectKind::App, SubjectKind::User]);
        assert_eq!(
            SubjectKind::parse("jwt_bearer"),
            Some(SubjectKind::JwtBearer)
        );
        assert_eq!(SubjectKind::parse("robot"), None);
    }
}
