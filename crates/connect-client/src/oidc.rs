//! Where the client's OIDC token comes from: a value, the environment (read at every call, so a
//! platform that refreshes the variable is followed), or a file re-read whenever it changes (as
//! Kubernetes projected service-account tokens rotate).

use std::{path::PathBuf, sync::Mutex, time::SystemTime};

use secrecy::{ExposeSecret, SecretString};

use crate::Error;

/// The variables read by [`OidcToken::Environment`], in order.
pub const TOKEN_VARIABLES: [&str; 2] = ["CONNECT_OIDC_TOKEN", "VERCEL_OIDC_TOKEN"];

/// A source of the deployment's OIDC token.
#[derive(Debug)]
pub enum OidcToken {
    /// This token, always.
    Static(SecretString),
    /// `CONNECT_OIDC_TOKEN`, else `VERCEL_OIDC_TOKEN`, read at each call.
    Environment,
    /// The contents of a file (surrounding white space trimmed), read again when its modification
    /// time or size changes.
    File(TokenFile),
}

impl OidcToken {
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::File(TokenFile {
            path: path.into(),
            last: Mutex::new(None),
        })
    }

    /// The token to present now.
    pub fn current(&self) -> Result<SecretString, Error> {
        match self {
            Self::Static(token) => Ok(token.clone()),
            Self::Environment => TOKEN_VARIABLES
                .iter()
                .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
                .map(|v| SecretString::from(v.trim().to_owned()))
                .ok_or_else(|| {
                    Error::MissingOidcToken(format!("set {}", TOKEN_VARIABLES.join(" or ")))
                }),
            Self::File(file) => file.current(),
        }
    }
}

/// A token file and what was last read from it.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    last: Mutex<Option<(SystemTime, u64, SecretString)>>,
}

impl TokenFile {
    fn current(&self) -> Result<SecretString, Error> {
        let unreadable = |e: std::io::Error| {
            Error::MissingOidcToken(format!("cannot read {}: {e}", self.path.display()))
        };
        let meta = std::fs::metadata(&self.path).map_err(unreadable)?;
        let stamp = (meta.modified().map_err(unreadable)?, meta.len());
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((modified, len, token)) = last.as_ref()
            && (*modified, *len) == stamp
        {
            return Ok(token.clone());
        }
        let text = std::fs::read_to_string(&self.path).map_err(unreadable)?;
        let token = text.trim();
        if token.is_empty() {
            return Err(Error::MissingOidcToken(format!(
                "{} is empty",
                self.path.display()
            )));
        }
        let token = SecretString::from(token.to_owned());
        *last = Some((stamp.0, stamp.1, token.clone()));
        Ok(token)
    }
}

/// The claims of a JWT, read WITHOUT checking its signature: only for telling callers apart and
/// for hints, never for deciding anything (the broker verifies). `None` for anything else.
pub fn unverified_claims(token: &SecretString) -> Option<serde_json::Value> {
    use base64::Engine;
    let part = token.expose_secret().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Who a token says its caller is, for keeping different callers' tokens apart in the cache: the
/// `iss` and `sub` claims, read without verification (the broker verifies). A token whose claims
/// cannot be read is known by its digest.
pub(crate) fn caller_of(token: &SecretString) -> String {
    use base64::Engine;
    match unverified_claims(token)
        .as_ref()
        .and_then(|c| Some((c.get("iss")?.as_str()?, c.get("sub")?.as_str()?)))
    {
        Some((iss, sub)) => format!("{iss}\u{0}{sub}"),
        None => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(token.expose_secret().as_bytes());
            format!(
                "sha256:{}",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_read_again_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("connect-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let source = OidcToken::file(&path);
        assert_eq!(source.current().unwrap().expose_secret(), "first");
        std::fs::write(&path, "second-token").unwrap();
        assert_eq!(source.current().unwrap().expose_secret(), "second-token");
        std::fs::write(&path, "  ").unwrap();
        assert!(matches!(source.current(), Err(Error::MissingOidcToken(_))));
        std::fs::remove_file(&path).unwrap();
        let err = source.current().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("InvalidTokenError: no OIDC token"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn callers_are_told_apart_by_issuer_and_subject() {
        use base64::Engine;
        let token = |claims: &str| {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            SecretString::from(format!("{}.{}.sig", b64.encode("{}"), b64.encode(claims)))
        };
        let a = caller_of(&token(
            r#"{"iss":"https://i","sub":"owner:a:project:p:environment:preview","exp":1}"#,
        ));
        let a_again = caller_of(&token(
            r#"{"iss":"https://i","sub":"owner:a:project:p:environment:preview","exp":2}"#,
        ));
        let b = caller_of(&token(
            r#"{"iss":"https://i","sub":"owner:a:project:p:environment:production"}"#,
        ));
        assert_eq!(a, a_again);
        assert_ne!(a, b);
        let opaque = caller_of(&SecretString::from("not-a-jwt".to_owned()));
        assert!(opaque.starts_with("sha256:"));
        assert!(!opaque.contains("not-a-jwt"));
    }
}
