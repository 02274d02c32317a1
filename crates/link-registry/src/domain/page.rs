//! Pages of every list, and their tokens, in one place. A list names the type of its sort key
//! ([`PageKey`]): the edge parses a `page_token` into that type (a token of another list, or one
//! this server did not make, is `INVALID_ARGUMENT`), the store continues after a typed key, and
//! [`Page::from_rows`] makes the next token. Tokens are opaque to clients: base64url of `v1:` and
//! the key's text form.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use super::types::{ConnectorId, InstallationId, Invalid, ProjectId};

/// The sort key of a list's rows, with its text form inside page tokens.
pub trait PageKey: Sized {
    fn encode(&self) -> String;
    fn decode(text: &str) -> Option<Self>;
}

impl PageKey for ProjectId {
    fn encode(&self) -> String {
        self.to_string()
    }

    fn decode(text: &str) -> Option<Self> {
        Self::parse(text).ok()
    }
}

impl PageKey for ConnectorId {
    fn encode(&self) -> String {
        self.to_string()
    }

    fn decode(text: &str) -> Option<Self> {
        Self::parse(text).ok()
    }
}

/// Links are listed by (connector id, project id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkKey {
    pub connector_id: ConnectorId,
    pub project_id: ProjectId,
}

impl PageKey for LinkKey {
    fn encode(&self) -> String {
        format!("{}/{}", self.connector_id, self.project_id)
    }

    fn decode(text: &str) -> Option<Self> {
        let (connector, project) = text.split_once('/')?;
        Some(Self {
            connector_id: ConnectorId::parse(connector).ok()?,
            project_id: ProjectId::parse(project).ok()?,
        })
    }
}

/// Audit events are listed newest first, by event id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditKey(pub i64);

impl PageKey for AuditKey {
    fn encode(&self) -> String {
        self.0.to_string()
    }

    fn decode(text: &str) -> Option<Self> {
        text.parse().ok().filter(|id| *id > 0).map(Self)
    }
}

/// Issuances are listed newest first, by row id (`i` before the number, so that no other list's
/// token passes for one of theirs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssuanceKey(pub i64);

impl PageKey for IssuanceKey {
    fn encode(&self) -> String {
        format!("i{}", self.0)
    }

    fn decode(text: &str) -> Option<Self> {
        text.strip_prefix('i')?
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .map(Self)
    }
}

/// A connector's installations are listed by id (`n` before it, so that no other list's token
/// passes for one of theirs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallationKey(pub InstallationId);

impl PageKey for InstallationKey {
    fn encode(&self) -> String {
        format!("n{}", self.0)
    }

    fn decode(text: &str) -> Option<Self> {
        InstallationId::parse(text.strip_prefix('n')?)
            .ok()
            .map(Self)
    }
}

/// Grants are listed in id order (`g` before the number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantPageKey(pub i64);

impl PageKey for GrantPageKey {
    fn encode(&self) -> String {
        format!("g{}", self.0)
    }

    fn decode(text: &str) -> Option<Self> {
        text.strip_prefix('g')?
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .map(Self)
    }
}

/// What a `List*` call asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest<K> {
    /// How many items at most (1 to [`MAX_PAGE_SIZE`]).
    pub size: u64,
    /// The sort key of the last item of the previous page.
    pub after: Option<K>,
}

pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 500;

impl<K: PageKey> PageRequest<K> {
    pub fn first(size: u64) -> Self {
        Self { size, after: None }
    }

    /// How many rows a store fetches: one more than the page, to know whether another follows.
    pub fn limit(&self) -> u64 {
        self.size + 1
    }

    /// Parses `page_size` (0 means the default, larger than the maximum means the maximum).
    pub fn parse_size(size: i32) -> Result<u64, Invalid> {
        match size {
            0 => Ok(DEFAULT_PAGE_SIZE),
            n if n < 0 => Err("page_size must not be negative".into()),
            n => Ok((n as u64).min(MAX_PAGE_SIZE)),
        }
    }

    /// Parses an opaque `page_token` made for this list by [`Page::from_rows`].
    pub fn parse_token(token: &str) -> Result<Option<K>, Invalid> {
        if token.is_empty() {
            return Ok(None);
        }
        let key = URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.strip_prefix("v1:").and_then(K::decode));
        key.map(Some)
            .ok_or_else(|| "page_token is not a token this server issued for this list".into())
    }
}

/// The token that continues after the item with this sort key.
pub fn token_after(key: &impl PageKey) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{}", key.encode()))
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
    pub fn from_rows<K: PageKey>(mut rows: Vec<T>, size: u64, key: impl Fn(&T) -> K) -> Self {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last()
                .map(|last| token_after(&key(last)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_rejected() {
        let project = ProjectId::parse("prj_1").unwrap();
        let token = token_after(&project);
        assert_eq!(
            PageRequest::<ProjectId>::parse_token(&token).unwrap(),
            Some(project)
        );
        assert_eq!(PageRequest::<ProjectId>::parse_token("").unwrap(), None);
        assert!(PageRequest::<ProjectId>::parse_token("not a token!").is_err());
        assert!(PageRequest::<ProjectId>::parse_token("aGVsbG8").is_err());
        // A token of one list is refused by another.
        assert!(PageRequest::<AuditKey>::parse_token(&token).is_err());
        assert!(PageRequest::<LinkKey>::parse_token(&token).is_err());
        assert!(PageRequest::<AuditKey>::parse_token(&token_after(&AuditKey(7))).is_ok());
        assert_eq!(PageRequest::<ProjectId>::parse_size(0).unwrap(), 50);
        assert_eq!(PageRequest::<ProjectId>::parse_size(10_000).unwrap(), 500);
        assert!(PageRequest::<ProjectId>::parse_size(-1).is_err());
    }

    #[test]
    fn link_keys_carry_both_ids() {
        let key = LinkKey {
            connector_id: ConnectorId::parse("conn_0123456789abcdefghijklmn").unwrap(),
            project_id: ProjectId::parse("prj_web").unwrap(),
        };
        let token = token_after(&key);
        assert_eq!(
            PageRequest::<LinkKey>::parse_token(&token).unwrap(),
            Some(key)
        );
    }

    #[test]
    fn pages_know_whether_more_rows_follow() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |n| AuditKey(*n));
        assert_eq!(page.items, [1, 2]);
        assert_eq!(
            PageRequest::<AuditKey>::parse_token(&page.next_page_token).unwrap(),
            Some(AuditKey(2))
        );
        let last = Page::from_rows(vec![1, 2], 2, |n| AuditKey(*n));
        assert!(last.next_page_token.is_empty());
    }

    mod laws {
        use proptest::prelude::*;

        use super::super::*;

        fn id(prefix: &'static str) -> impl Strategy<Value = String> {
            "[A-Za-z0-9_-]{1,40}".prop_map(move |s| format!("{prefix}{s}"))
        }

        proptest! {
            /// Every list's token carries its key back (row ids are positive), and no other list
            /// takes it.
            #[test]
            fn page_tokens_round_trip(
                project in id("prj_"),
                connector in "[a-z0-9]{24}",
                n in 1..i64::MAX,
                installation in "[A-Za-z0-9._-]{1,60}",
            ) {
                let project = ProjectId::parse(&project).unwrap();
                let connector = ConnectorId::parse(&format!("conn_{connector}")).unwrap();
                let link = LinkKey { connector_id: connector.clone(), project_id: project.clone() };
                prop_assert_eq!(PageRequest::<ProjectId>::parse_token(&token_after(&project)).unwrap(), Some(project.clone()));
                prop_assert_eq!(PageRequest::<ConnectorId>::parse_token(&token_after(&connector)).unwrap(), Some(connector));
                prop_assert_eq!(PageRequest::<LinkKey>::parse_token(&token_after(&link)).unwrap(), Some(link.clone()));
                prop_assert_eq!(PageRequest::<AuditKey>::parse_token(&token_after(&AuditKey(n))).unwrap(), Some(AuditKey(n)));
                prop_assert_eq!(PageRequest::<IssuanceKey>::parse_token(&token_after(&IssuanceKey(n))).unwrap(), Some(IssuanceKey(n)));
                prop_assert_eq!(PageRequest::<GrantPageKey>::parse_token(&token_after(&GrantPageKey(n))).unwrap(), Some(GrantPageKey(n)));
                if let Ok(installation) = InstallationId::parse(&installation) {
                    let key = InstallationKey(installation);
                    prop_assert_eq!(PageRequest::<InstallationKey>::parse_token(&token_after(&key)).unwrap(), Some(key));
                }
                // A token is refused by every list it was not made for.
                prop_assert!(PageRequest::<AuditKey>::parse_token(&token_after(&link)).is_err());
                prop_assert!(PageRequest::<LinkKey>::parse_token(&token_after(&project)).is_err());
                prop_assert!(PageRequest::<IssuanceKey>::parse_token(&token_after(&AuditKey(n))).is_err());
                prop_assert!(PageRequest::<GrantPageKey>::parse_token(&token_after(&IssuanceKey(n))).is_err());
            }

            /// Whatever text comes as a token: refused or a key, never a panic.
            #[test]
            fn any_text_is_a_key_or_refused(text in ".{0,80}") {
                let _ = PageRequest::<LinkKey>::parse_token(&text);
                let _ = PageRequest::<AuditKey>::parse_token(&text);
                let _ = PageRequest::<InstallationKey>::parse_token(&text);
            }
        }
    }
}
