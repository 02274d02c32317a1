//! Wire ⇄ domain for `GetToken` and the consent RPCs.

use connect_proto::broker::v1::{self as pb, subject::Kind};
use secrecy::SecretString;

use crate::{
    error::{BrokerError, FieldViolation, truncate},
    issuers::{ACCESS_TOKEN_TYPE, JwtBearer, Subject, SubjectToken},
    service::{Issued, TokenRequest},
};

/// Longest connector reference accepted (a uid is at most `<32>/<64>`).
const MAX_CONNECTOR_LEN: usize = 100;
const MAX_SCOPES: usize = 50;
/// Most resources one token can be narrowed to (GitHub allows 500 repositories).
const MAX_RESOURCES: usize = 500;
/// Largest subject token accepted for an exchange.
const MAX_SUBJECT_TOKEN: usize = 16 * 1024;
/// Longest `min_ttl` a caller may ask for.
const MAX_MIN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn printable(value: &str) -> bool {
    value.chars().all(|c| c.is_ascii_graphic())
}

impl TryFrom<pb::GetTokenRequest> for TokenRequest {
    type Error = BrokerError;

    fn try_from(req: pb::GetTokenRequest) -> Result<Self, Self::Error> {
        let mut violations = Vec::new();
        if req.connector.is_empty() {
            violations.push(FieldViolation::new(
                "connector",
                "connector must name a connector by uid (<type>/<name>) or id (conn_…)",
            ));
        } else if req.connector.len() > MAX_CONNECTOR_LEN || !printable(&req.connector) {
            violations.push(FieldViolation::new(
                "connector",
                format!("connector must be at most {MAX_CONNECTOR_LEN} printable characters"),
            ));
        }
        let subject = match req.subject.and_then(|s| s.kind) {
            None | Some(Kind::App(_)) => Subject::App,
            Some(Kind::User(user))
                if !user.id.is_empty() && user.id.len() <= 256 && printable(&user.id) =>
            {
                Subject::User(user.id)
            }
            Some(Kind::User(_)) => {
                violations.push(FieldViolation::new(
                    "subject.user.id",
                    "a user subject needs an id of 1 to 256 printable characters",
                ));
                Subject::App
            }
            Some(Kind::JwtBearer(j)) => {
                const RESERVED: [&str; 7] = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti"];
                let field_ok = |v: &str| v.len() <= 256 && printable(v);
                if j.sub.is_empty() || !field_ok(&j.sub) {
                    violations.push(FieldViolation::new(
                        "subject.jwt_bearer.sub",
                        "sub must be 1 to 256 printable characters",
                    ));
                }
                for (name, value) in [("iss", &j.iss), ("aud", &j.aud)] {
                    if !field_ok(value) {
                        violations.push(FieldViolation::new(
                            format!("subject.jwt_bearer.{name}"),
                            format!("{name} must be at most 256 printable characters"),
                        ));
                    }
                }
                if j.additional_claims.len() > 20
                    || j.additional_claims.iter().any(|(k, v)| {
                        k.is_empty()
                            || !field_ok(k)
                            || v.len() > 1024
                            || RESERVED.contains(&k.as_str())
                    })
                {
                    violations.push(FieldViolation::new(
                        "subject.jwt_bearer.additional_claims",
                        "at most 20 claims, none of iss, sub, aud, exp, iat, nbf or jti",
                    ));
                }
                Subject::JwtBearer(JwtBearer {
                    sub: j.sub,
                    iss: Some(j.iss).filter(|v| !v.is_empty()),
                    aud: Some(j.aud).filter(|v| !v.is_empty()),
                    additional_claims: j.additional_claims.into_iter().collect(),
                })
            }
            Some(Kind::Token(t)) => {
                if t.token.is_empty() || t.token.len() > MAX_SUBJECT_TOKEN || !printable(&t.token) {
                    violations.push(FieldViolation::new(
                        "subject.token.token",
                        format!("the subject token must be 1 to {MAX_SUBJECT_TOKEN} printable characters"),
                    ));
                }
                if t.token_type.len() > 256 || !printable(&t.token_type) {
                    violations.push(FieldViolation::new(
                        "subject.token.token_type",
                        "token_type must be at most 256 printable characters",
                    ));
                }
                Subject::Token(SubjectToken {
                    token: SecretString::from(t.token),
                    token_type: if t.token_type.is_empty() {
                        ACCESS_TOKEN_TYPE.to_owned()
                    } else {
                        t.token_type
                    },
                })
            }
        };
        if req.installation_id != "*"
            && (req.installation_id.len() > 128
                || !req
                    .installation_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            violations.push(FieldViolation::new(
                "installation_id",
                "installation_id must be `*` or at most 128 characters of A-Z, a-z, 0-9, '_', '.' and '-'",
            ));
        }
        if req.scopes.len() > MAX_SCOPES {
            violations.push(FieldViolation::new(
                "scopes",
                format!("at most {MAX_SCOPES} scopes"),
            ));
        }
        if let Some(bad) = req
            .scopes
            .iter()
            .find(|s| s.is_empty() || s.len() > 256 || !printable(s))
        {
            violations.push(FieldViolation::new(
                "scopes",
                format!("'{}' is not a valid scope", truncate(bad, 40)),
            ));
        }
        if req.resources.len() > MAX_RESOURCES {
            violations.push(FieldViolation::new(
                "resources",
                format!("at most {MAX_RESOURCES} resources"),
            ));
        }
        if let Some(bad) = req
            .resources
            .iter()
            .find(|r| r.is_empty() || r.len() > 256 || !printable(r))
        {
            violations.push(FieldViolation::new(
                "resources",
                format!("'{}' is not a valid resource", truncate(bad, 40)),
            ));
        }
        let min_ttl = match req.min_ttl {
            None => None,
            Some(d) if d.seconds < 0 || d.nanos < 0 => {
                violations.push(FieldViolation::new(
                    "min_ttl",
                    "min_ttl must not be negative",
                ));
                None
            }
            Some(d) => {
                let ttl = std::time::Duration::new(
                    d.seconds as u64,
                    d.nanos.clamp(0, 999_999_999) as u32,
                );
                if ttl > MAX_MIN_TTL {
                    violations.push(FieldViolation::new(
                        "min_ttl",
                        "min_ttl may be at most a day",
                    ));
                }
                Some(ttl)
            }
        };
        if !violations.is_empty() {
            return Err(BrokerError::InvalidArgument(violations));
        }
        Ok(TokenRequest {
            connector: req.connector,
            subject,
            installation_id: (!req.installation_id.is_empty()).then_some(req.installation_id),
            scopes: req.scopes,
            resources: req.resources,
            min_ttl,
        })
    }
}

impl From<Issued> for pb::GetTokenResponse {
    fn from(issued: Issued) -> Self {
        use secrecy::ExposeSecret;
        Self {
            token: issued.token.expose_secret().to_owned(),
            token_id: issued.token_id,
            expires_at: issued.expires_at.map(|t| prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: t.timestamp_subsec_nanos() as i32,
            }),
            connector: Some(pb::ConnectorRef {
                id: issued.authorization.connector_id.clone(),
                uid: issued.authorization.connector_uid.clone(),
                r#type: issued.authorization.connector_type.clone(),
            }),
            installation_id: issued.installation_id.unwrap_or_default(),
            scopes: issued.scopes,
            credential: issued
                .credential
                .0
                .into_iter()
                .map(|(name, value)| (name, value.expose_secret().to_owned()))
                .collect(),
        }
    }
}

impl TryFrom<pb::StartAuthorizationRequest> for crate::consent::StartRequest {
    type Error = BrokerError;

    fn try_from(req: pb::StartAuthorizationRequest) -> Result<Self, Self::Error> {
        let mut violations = Vec::new();
        if req.connector.is_empty()
            || req.connector.len() > MAX_CONNECTOR_LEN
            || !printable(&req.connector)
        {
            violations.push(FieldViolation::new(
                "connector",
                "connector must name a connector by uid (<type>/<name>) or id (conn_…)",
            ));
        }
        if req.user_id.is_empty() || req.user_id.len() > 256 || !printable(&req.user_id) {
            violations.push(FieldViolation::new(
                "user_id",
                "user_id must be 1 to 256 printable characters",
            ));
        }
        if req.scopes.len() > MAX_SCOPES
            || req
                .scopes
                .iter()
                .any(|s| s.is_empty() || s.len() > 256 || !printable(s))
        {
            violations.push(FieldViolation::new(
                "scopes",
                format!("at most {MAX_SCOPES} scopes of 1 to 256 printable characters"),
            ));
        }
        let return_url = url::Url::parse(&req.return_url)
            .ok()
            .filter(|u| req.return_url.len() <= 2048 && matches!(u.scheme(), "https" | "http"));
        if return_url.is_none() {
            violations.push(FieldViolation::new(
                "return_url",
                "return_url must be an absolute https:// URL of at most 2048 characters",
            ));
        }
        let installation_ok = req.installation_id.is_empty()
            || (req.installation_id.len() <= 128
                && req
                    .installation_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
        if !installation_ok {
            violations.push(FieldViolation::new(
                "installation_id",
                "installation_id must be at most 128 characters of A-Z, a-z, 0-9, '_', '.' and '-'",
            ));
        }
        match return_url {
            Some(return_url) if violations.is_empty() => Ok(Self {
                connector: req.connector,
                user_id: req.user_id,
                scopes: req.scopes,
                return_url,
                installation_id: (!req.installation_id.is_empty()).then_some(req.installation_id),
            }),
            _ => Err(BrokerError::InvalidArgument(violations)),
        }
    }
}

impl TryFrom<pb::FinishAuthorizationRequest> for crate::consent::FinishRequest {
    type Error = BrokerError;

    fn try_from(req: pb::FinishAuthorizationRequest) -> Result<Self, Self::Error> {
        let mut violations = Vec::new();
        if req.request_id.len() != 16
            || !req
                .request_id
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            violations.push(FieldViolation::new(
                "request_id",
                "request_id must be the 16 hex digits of connect_request_id",
            ));
        }
        if req.completion.is_empty() || req.completion.len() > 256 || !printable(&req.completion) {
            violations.push(FieldViolation::new(
                "completion",
                "completion must be the connect_completion the callback added to return_url",
            ));
        }
        if req.user_id.is_empty() || req.user_id.len() > 256 || !printable(&req.user_id) {
            violations.push(FieldViolation::new(
                "user_id",
                "user_id must be 1 to 256 printable characters",
            ));
        }
        if req.confirm_provider_subject.chars().count() > 255
            || req.confirm_provider_subject.chars().any(char::is_control)
        {
            violations.push(FieldViolation::new(
                "confirm_provider_subject",
                "confirm_provider_subject must be at most 255 characters, without control characters",
            ));
        }
        if !violations.is_empty() {
            return Err(BrokerError::InvalidArgument(violations));
        }
        Ok(Self {
            request_id: req.request_id,
            completion: SecretString::from(req.completion),
            user_id: req.user_id,
            confirm_provider_subject: (!req.confirm_provider_subject.is_empty())
                .then_some(req.confirm_provider_subject),
        })
    }
}

/// A stored grant as `FinishAuthorization` answers it.
pub fn grant(g: crate::registry::StoredGrant) -> pb::Grant {
    let time = |t: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    };
    pb::Grant {
        connector_id: g.key.connector_id,
        connector_uid: g.connector_uid,
        user_id: g.key.user_id,
        environment: g.key.environment.as_str().to_owned(),
        installation_id: g.key.installation_id,
        scopes: g.scopes,
        expire_time: g.expires_at.map(time),
        refreshable: g.refreshable,
        update_time: g.updated_at.map(time),
        project: g.project,
        provider_subject: g.provider_subject.unwrap_or_default(),
    }
}
