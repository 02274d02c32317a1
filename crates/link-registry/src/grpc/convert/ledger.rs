//! The ledger: issuances recorded and listed, tokens revoked and the provider's answers reported.

use connect_proto::registry::v1 as pb;

use super::{Violations, time_of, timestamp};
use crate::domain::{
    RegistryError,
    model::{Issuance, ProviderRevocation},
    service::{NewIssuance, RevocationSummary},
    store::RevokeFilter,
    types::{ConnectorId, ConnectorRef, Environment, InstallationId, ProjectId, TeamId},
};

impl TryFrom<pb::RecordIssuanceRequest> for NewIssuance {
    type Error = RegistryError;

    fn try_from(req: pb::RecordIssuanceRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let Some(i) = req.issuance else {
            v.push("issuance", "issuance is required");
            return v.finish(None);
        };
        let team_id = v.check("issuance.owner_id", TeamId::parse(&i.owner_id));
        let project_id = v.check("issuance.project_id", ProjectId::parse(&i.project_id));
        let environment = v.check("issuance.environment", Environment::parse(&i.environment));
        let connector_id = v.check("issuance.connector_id", ConnectorId::parse(&i.connector_id));
        let issued_at = time_of(i.issue_time);
        if issued_at.is_none() {
            v.push("issuance.issue_time", "issue_time is required");
        }
        let expires_at = time_of(i.expire_time);
        let value = match (team_id, project_id, environment, connector_id, issued_at) {
            (
                Some(team_id),
                Some(project_id),
                Some(environment),
                Some(connector_id),
                Some(issued_at),
            ) => Some(NewIssuance {
                token_id: i.token_id,
                team_id,
                project_id,
                environment,
                connector_id,
                subject: i.subject,
                installation_id: i.installation_id,
                scopes: i.scopes,
                issued_at,
                expires_at,
            }),
            _ => None,
        };
        v.finish(value)
    }
}

/// The filters of `ListIssuances`: each `None` means "any".
#[derive(Debug)]
pub struct IssuanceQuery {
    pub connector: Option<ConnectorRef>,
    pub project: Option<ProjectId>,
    pub environment: Option<Environment>,
}

impl TryFrom<&pb::ListIssuancesRequest> for IssuanceQuery {
    type Error = RegistryError;

    fn try_from(req: &pb::ListIssuancesRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let connector = (!req.connector.is_empty())
            .then(|| v.check("connector", ConnectorRef::parse(&req.connector)))
            .flatten();
        let project = (!req.project.is_empty())
            .then(|| v.check("project", ProjectId::parse(&req.project)))
            .flatten();
        let environment = (!req.environment.is_empty())
            .then(|| v.check("environment", Environment::parse(&req.environment)))
            .flatten();
        v.finish(Some(IssuanceQuery {
            connector,
            project,
            environment,
        }))
    }
}

impl From<Issuance> for pb::Issuance {
    fn from(i: Issuance) -> Self {
        Self {
            token_id: i.token_id,
            connector_id: i.connector_id.to_string(),
            connector_uid: i.connector_uid.to_string(),
            owner_id: i.team_id.to_string(),
            project_id: i.project_id.to_string(),
            environment: i.environment.as_str().to_owned(),
            subject: i.subject,
            installation_id: i.installation_id,
            scopes: i.scopes,
            issue_time: Some(timestamp(i.issued_at)),
            expire_time: i.expires_at.map(timestamp),
            revoked: i.revoked,
            provider_revocation: i
                .provider_revocation
                .map(|o| o.as_str().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// A `RevokeTokensRequest`: the connector and which of its issued tokens to revoke.
#[derive(Debug)]
pub struct TokenRevocation {
    pub connector: ConnectorRef,
    pub filter: RevokeFilter,
}

impl TryFrom<pb::RevokeTokensRequest> for TokenRevocation {
    type Error = RegistryError;

    fn try_from(req: pb::RevokeTokensRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let connector = v.check("connector", ConnectorRef::parse(&req.connector));
        let subject = match req.subject.as_str() {
            "" => None,
            "app" => Some("app".to_owned()),
            other => match other.split_once(':') {
                Some((kind, rest))
                    if !rest.is_empty()
                        && other.len() <= 300
                        && matches!(kind, "user" | "jwt_bearer")
                        && !other.chars().any(char::is_control) =>
                {
                    Some(other.to_owned())
                }
                _ => {
                    v.push(
                        "subject",
                        "subject must be app, user:<id> or jwt_bearer:<sub>",
                    );
                    None
                }
            },
        };
        let installation_id = if req.installation_id.is_empty() {
            None
        } else {
            v.check(
                "installation_id",
                InstallationId::parse(&req.installation_id),
            )
            .map(|i| i.to_string())
        };
        v.finish(connector.map(|connector| TokenRevocation {
            connector,
            filter: RevokeFilter {
                subject,
                installation_id,
            },
        }))
    }
}

/// The team, connector and outcomes of a `ReportRevocationsRequest`.
#[derive(Debug)]
pub struct RevocationReport {
    pub team: TeamId,
    pub connector: ConnectorId,
    /// What the provider answered, per `token_id`.
    pub outcomes: Vec<(String, ProviderRevocation)>,
}

impl TryFrom<pb::ReportRevocationsRequest> for RevocationReport {
    type Error = RegistryError;

    fn try_from(req: pb::ReportRevocationsRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let team = v.check("owner_id", TeamId::parse(&req.owner_id));
        let connector = v.check("connector_id", ConnectorId::parse(&req.connector_id));
        if req.revocations.len() > 10_000 {
            v.push("revocations", "at most 10000 revocations per report");
        }
        let mut outcomes = Vec::with_capacity(req.revocations.len());
        for (n, r) in req.revocations.into_iter().enumerate() {
            let field = format!("revocations[{n}]");
            if r.token_id.len() != 16 || !r.token_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                v.push(&format!("{field}.token_id"), "must be 16 hex digits");
                continue;
            }
            if let Some(outcome) = v.check(
                &format!("{field}.outcome"),
                ProviderRevocation::parse(&r.outcome),
            ) {
                outcomes.push((r.token_id, outcome));
            }
        }
        v.finish(
            team.zip(connector)
                .map(|(team, connector)| RevocationReport {
                    team,
                    connector,
                    outcomes,
                }),
        )
    }
}

impl From<RevocationSummary> for pb::RevokeTokensResponse {
    fn from(s: RevocationSummary) -> Self {
        let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            tokens_found: count(s.tokens_found),
            revoked: count(s.revoked),
            provider_revoked: count(s.provider_revoked),
            provider_skipped: count(s.provider_skipped),
            provider_failed: count(s.provider_failed),
            grants_deleted: count(s.grants_deleted),
        }
    }
}
