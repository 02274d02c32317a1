//! User grants: imports, listings, consents begun and opened, grants stored, leased for refresh
//! and committed.

use connect_proto::registry::v1 as pb;
use secrecy::{ExposeSecret, SecretString};

use super::{
    Violations, connector_ref, duration_of, grant_key_of, installation_of, page, scopes_of,
    time_of, timestamp, token_of, url_of,
};
use crate::domain::{
    RegistryError,
    model::{Grant, GrantKey},
    page::{GrantPageKey, PageRequest},
    service::{
        FinishConsent, GrantAccess, GrantTokens, ImportedGrant, LeaseAnswer, NewHeld, NewPending,
        OpenedPending, RefreshReport,
    },
    types::{ConnectorId, ConnectorRef, Environment, ProjectId, TeamId, UserId, truncate},
};

/// An `ImportGrantsRequest`: the connector, and each grant converted on its own (a bad one is
/// that grant's error, not the request's).
#[derive(Debug)]
pub struct GrantImport {
    pub connector: ConnectorRef,
    pub grants: Vec<Result<ImportedGrant, RegistryError>>,
}

impl TryFrom<pb::ImportGrantsRequest> for GrantImport {
    type Error = RegistryError;

    fn try_from(req: pb::ImportGrantsRequest) -> Result<Self, Self::Error> {
        let connector = connector_ref("connector", &req.connector)?;
        let grants = req.grants.into_iter().map(imported_grant).collect();
        Ok(Self { connector, grants })
    }
}

fn imported_grant(g: pb::ImportedGrant) -> Result<ImportedGrant, RegistryError> {
    let mut v = Violations::default();
    let user = v.check("user_id", UserId::parse(&g.user_id));
    let environment = v.check("environment", Environment::parse(&g.environment));
    let installation = installation_of(&mut v, "installation_id", g.installation_id);
    let access_token = token_of(&mut v, "access_token", g.access_token, true);
    let refresh_token = token_of(&mut v, "refresh_token", g.refresh_token, false);
    let scopes = scopes_of(&mut v, "scopes", g.scopes);
    let project = match g.project.as_str() {
        "" => Some(None),
        project => v.check("project", ProjectId::parse(project)).map(Some),
    };
    let value = match (user, environment, installation, access_token, project) {
        (Some(user), Some(environment), Some(installation), Some(access_token), Some(project)) => {
            Some(ImportedGrant {
                project,
                user,
                environment,
                installation,
                tokens: GrantTokens {
                    access_token,
                    refresh_token,
                    expires_at: time_of(g.expire_time),
                    scopes,
                },
            })
        }
        _ => None,
    };
    v.finish(value)
}

/// The filters and page of a `ListGrantsRequest`: each `None` means "any".
#[derive(Debug)]
pub struct GrantQuery {
    pub connector: Option<ConnectorRef>,
    pub user: Option<UserId>,
    pub environment: Option<Environment>,
    pub project: Option<ProjectId>,
    pub page: PageRequest<GrantPageKey>,
}

impl TryFrom<pb::ListGrantsRequest> for GrantQuery {
    type Error = RegistryError;

    fn try_from(req: pb::ListGrantsRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let connector = (!req.connector.is_empty())
            .then(|| v.check("connector", ConnectorRef::parse(&req.connector)))
            .flatten();
        let user = (!req.user_id.is_empty())
            .then(|| v.check("user_id", UserId::parse(&req.user_id)))
            .flatten();
        let environment = (!req.environment.is_empty())
            .then(|| v.check("environment", Environment::parse(&req.environment)))
            .flatten();
        let project = (!req.project.is_empty())
            .then(|| v.check("project", ProjectId::parse(&req.project)))
            .flatten();
        let page = page(&mut v, req.page_size, &req.page_token);
        v.finish(page.map(|page| GrantQuery {
            connector,
            user,
            environment,
            project,
            page,
        }))
    }
}

impl TryFrom<pb::BeginAuthorizationRequest> for NewPending {
    type Error = RegistryError;

    fn try_from(req: pb::BeginAuthorizationRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let key = grant_key_of(&mut v, req.key);
        let scopes = scopes_of(&mut v, "scopes", req.scopes);
        let return_url = url_of(&mut v, "return_url", req.return_url);
        let redirect_uri = url_of(&mut v, "redirect_uri", req.redirect_uri);
        // RFC 7636 §4.1: 43 to 128 unreserved characters.
        let verifier_ok = (43..=128).contains(&req.code_verifier.len())
            && req
                .code_verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if !verifier_ok {
            v.push(
                "code_verifier",
                "code_verifier must be 43 to 128 unreserved characters",
            );
        }
        let ttl = duration_of(&mut v, "ttl", req.ttl);
        let project_id = v.check("project_id", ProjectId::parse(&req.project_id));
        if req.issuer.is_empty() || req.issuer.len() > 255 {
            v.push("issuer", "issuer must be 1 to 255 characters");
        }
        let value = key
            .zip(ttl)
            .zip(project_id)
            .map(|((key, ttl), project_id)| NewPending {
                key,
                project_id,
                issuer: req.issuer,
                scopes,
                return_url,
                redirect_uri,
                code_verifier: SecretString::from(req.code_verifier),
                ttl,
            });
        v.finish(value)
    }
}

/// A `CompleteAuthorizationRequest`: the state the callback received and the connector whose
/// callback it was.
#[derive(Debug)]
pub struct Completion<'a> {
    pub state: &'a str,
    pub connector: ConnectorId,
}

impl<'a> TryFrom<&'a pb::CompleteAuthorizationRequest> for Completion<'a> {
    type Error = RegistryError;

    fn try_from(req: &'a pb::CompleteAuthorizationRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        if req.state.is_empty() || req.state.len() > 256 {
            v.push("state", "state must be 1 to 256 characters");
        }
        let connector = v.check("connector_id", ConnectorId::parse(&req.connector_id));
        v.finish(connector.map(|connector| Completion {
            state: &req.state,
            connector,
        }))
    }
}

/// The consent request id a callback or a finish names: 16 lowercase hex digits.
fn request_id_of(v: &mut Violations, value: String) -> String {
    if value.len() != 16
        || !value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        v.push("request_id", "request_id must be 16 lowercase hex digits");
    }
    value
}

impl TryFrom<pb::HoldGrantRequest> for NewHeld {
    type Error = RegistryError;

    fn try_from(req: pb::HoldGrantRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let request_id = request_id_of(&mut v, req.request_id);
        let key = grant_key_of(&mut v, req.key);
        let project_id = v.check("project_id", ProjectId::parse(&req.project_id));
        if req.issuer.is_empty() || req.issuer.len() > 255 {
            v.push("issuer", "issuer must be 1 to 255 characters");
        }
        let access_token = token_of(&mut v, "access_token", req.access_token, true);
        let refresh_token = token_of(&mut v, "refresh_token", req.refresh_token, false);
        let scopes = scopes_of(&mut v, "scopes", req.scopes);
        let ttl = duration_of(&mut v, "ttl", req.ttl);
        let provider_subject =
            provider_subject_of(&mut v, "provider_subject", req.provider_subject);
        let value = match (key, project_id, access_token, ttl) {
            (Some(key), Some(project_id), Some(access_token), Some(ttl)) => Some(NewHeld {
                request_id,
                key,
                project_id,
                issuer: req.issuer,
                tokens: GrantTokens {
                    access_token,
                    refresh_token,
                    expires_at: time_of(req.expire_time),
                    scopes,
                },
                ttl,
                provider_subject,
            }),
            _ => None,
        };
        v.finish(value)
    }
}

impl TryFrom<pb::FinishGrantRequest> for FinishConsent {
    type Error = RegistryError;

    fn try_from(req: pb::FinishGrantRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let request_id = request_id_of(&mut v, req.request_id);
        if req.completion.is_empty() || req.completion.len() > 256 {
            v.push("completion", "completion must be 1 to 256 characters");
        }
        let user_id = v.check("user_id", UserId::parse(&req.user_id));
        let team_id = v.check("owner_id", TeamId::parse(&req.owner_id));
        let project_id = v.check("project_id", ProjectId::parse(&req.project_id));
        let environment = v.check("environment", Environment::parse(&req.environment));
        if req.issuer.is_empty() || req.issuer.len() > 255 {
            v.push("issuer", "issuer must be 1 to 255 characters");
        }
        let confirm_provider_subject = provider_subject_of(
            &mut v,
            "confirm_provider_subject",
            req.confirm_provider_subject,
        );
        let value = match (user_id, team_id, project_id, environment) {
            (Some(user_id), Some(team_id), Some(project_id), Some(environment)) => {
                Some(FinishConsent {
                    request_id,
                    completion: SecretString::from(req.completion),
                    user_id,
                    team_id,
                    project_id,
                    environment,
                    issuer: req.issuer,
                    confirm_provider_subject,
                })
            }
            _ => None,
        };
        v.finish(value)
    }
}

/// A provider account (`sub`): empty for none, else at most 255 characters without control
/// characters.
fn provider_subject_of(v: &mut Violations, field: &str, value: String) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    if value.chars().count() > 255 || value.chars().any(char::is_control) {
        v.push(
            field,
            "a provider account is at most 255 characters, without control characters",
        );
        return None;
    }
    Some(value)
}

/// A `LeaseGrantRequest`: the grant, how long its access token must live to be answered as it
/// is, and how long a refresh lease lasts.
#[derive(Debug)]
pub struct LeaseQuery {
    pub key: GrantKey,
    pub min_ttl: std::time::Duration,
    pub lease: std::time::Duration,
}

impl TryFrom<pb::LeaseGrantRequest> for LeaseQuery {
    type Error = RegistryError;

    fn try_from(req: pb::LeaseGrantRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let key = grant_key_of(&mut v, req.key);
        let min_ttl = duration_of(&mut v, "min_ttl", req.min_ttl);
        let lease = duration_of(&mut v, "lease", req.lease);
        let value = match (key, min_ttl, lease) {
            (Some(key), Some(min_ttl), Some(lease)) => Some(LeaseQuery {
                key,
                min_ttl,
                lease,
            }),
            _ => None,
        };
        v.finish(value)
    }
}

/// A `CommitGrantRequest`: the grant, the lease and grant version it was refreshed under, and
/// how the refresh went.
#[derive(Debug)]
pub struct Commit {
    pub key: GrantKey,
    pub lease_id: String,
    pub fence: i64,
    pub report: RefreshReport,
}

impl TryFrom<pb::CommitGrantRequest> for Commit {
    type Error = RegistryError;

    fn try_from(req: pb::CommitGrantRequest) -> Result<Self, Self::Error> {
        use pb::commit_grant_request::Outcome;
        let mut v = Violations::default();
        let key = grant_key_of(&mut v, req.key);
        if req.lease_id.is_empty() || req.lease_id.len() > 64 {
            v.push("lease_id", "lease_id must be 1 to 64 characters");
        }
        let report = match req.outcome {
            Some(Outcome::Refreshed(t)) => {
                let access_token = token_of(&mut v, "refreshed.access_token", t.access_token, true);
                let refresh_token =
                    token_of(&mut v, "refreshed.refresh_token", t.refresh_token, false);
                let scopes = scopes_of(&mut v, "refreshed.scopes", t.scopes);
                access_token.map(|access_token| {
                    RefreshReport::Refreshed(GrantTokens {
                        access_token,
                        refresh_token,
                        expires_at: time_of(t.expire_time),
                        scopes,
                    })
                })
            }
            Some(Outcome::Refused(error)) => Some(RefreshReport::Refused(truncate(&error, 300))),
            Some(Outcome::Unavailable(error)) => {
                Some(RefreshReport::Unavailable(truncate(&error, 300)))
            }
            None => {
                v.push(
                    "outcome",
                    "one of refreshed, refused, unavailable is required",
                );
                None
            }
        };
        v.finish(key.zip(report).map(|(key, report)| Commit {
            key,
            lease_id: req.lease_id,
            fence: req.fence,
            report,
        }))
    }
}

fn grant_key_message(key: &GrantKey) -> pb::GrantKey {
    pb::GrantKey {
        project_id: key
            .project_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        owner_id: key.team_id.to_string(),
        connector_id: key.connector_id.to_string(),
        user_id: key.user_id.to_string(),
        environment: key.environment.as_str().to_owned(),
        installation_id: key.installation_id.clone(),
    }
}

/// A grant as admins see it; `uid` is its connector's.
pub fn grant(g: Grant, uid: &str) -> pb::Grant {
    pb::Grant {
        project: g
            .key
            .project_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        connector_id: g.key.connector_id.to_string(),
        connector_uid: uid.to_owned(),
        owner_id: g.key.team_id.to_string(),
        user_id: g.key.user_id.to_string(),
        environment: g.key.environment.as_str().to_owned(),
        installation_id: g.key.installation_id.clone(),
        scopes: g.scopes,
        state: g.state.as_str().to_owned(),
        expire_time: g.expires_at.map(timestamp),
        refreshable: g.refresh_token.is_some(),
        last_error: g.last_error.unwrap_or_default(),
        last_refresh_time: g.last_refresh_at.map(timestamp),
        create_time: Some(timestamp(g.created_at)),
        update_time: Some(timestamp(g.updated_at)),
        version: g.version,
        provider_subject: g.provider_subject.unwrap_or_default(),
    }
}

pub fn grant_access(a: GrantAccess) -> pb::GrantAccess {
    pb::GrantAccess {
        access_token: a.access_token.expose_secret().to_owned(),
        grant: Some(grant(a.grant, "")),
    }
}

pub fn lease_answer(answer: LeaseAnswer) -> pb::LeaseGrantResponse {
    use pb::lease_grant_response::Answer;
    let answer = match answer {
        LeaseAnswer::Fresh(access) => Answer::Fresh(grant_access(access)),
        LeaseAnswer::Leased {
            lease_id,
            fence,
            refresh_token,
            grant: g,
        } => Answer::Leased(pb::GrantLease {
            lease_id,
            fence,
            refresh_token: refresh_token.expose_secret().to_owned(),
            grant: Some(grant(g, "")),
        }),
        LeaseAnswer::Busy { until } => Answer::BusyUntil(timestamp(until)),
    };
    pb::LeaseGrantResponse {
        answer: Some(answer),
    }
}

pub fn opened_pending(p: OpenedPending) -> pb::CompleteAuthorizationResponse {
    pb::CompleteAuthorizationResponse {
        key: Some(grant_key_message(&p.key)),
        scopes: p.scopes,
        return_url: p.return_url,
        redirect_uri: p.redirect_uri,
        code_verifier: p.code_verifier.expose_secret().to_owned(),
        project_id: p.project_id.to_string(),
        issuer: p.issuer,
    }
}
