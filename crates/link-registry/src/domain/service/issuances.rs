//! The issuance ledger: the broker records each credential before handing it out; admins and
//! viewers list them.

use super::*;
use crate::domain::{model::Issuance, page::IssuanceKey, store::IssuanceFilter};

/// A credential the broker is about to hand out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewIssuance {
    pub token_id: String,
    pub team_id: TeamId,
    pub project_id: ProjectId,
    pub environment: Environment,
    pub connector_id: ConnectorId,
    pub subject: String,
    pub installation_id: String,
    pub scopes: Vec<String>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The longest subject (`jwt_bearer:` and a subject of up to 256 characters), installation id and
/// scope list (50 scopes of up to 256 characters: large GitHub permission sets) the ledger keeps,
/// in bytes.
const MAX_SUBJECT: usize = 300;
const MAX_INSTALLATION: usize = 200;
const MAX_SCOPES: usize = 16 * 1024;

impl Registry {
    /// Records `issuance` (broker keys only) unless it is recorded already; whether it wrote it.
    /// Its connector must be its team's.
    pub async fn record_issuance(&self, caller: &Caller, issuance: NewIssuance) -> Result<bool> {
        caller.serves(&issuance.team_id)?;
        let mut violations = Vec::new();
        if issuance.token_id.len() != 16
            || !issuance
                .token_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            violations.push(FieldViolation::new(
                "issuance.token_id",
                "must be 16 lower-case hex digits",
            ));
        }
        for (field, value, max) in [
            ("issuance.subject", issuance.subject.len(), MAX_SUBJECT),
            (
                "issuance.installation_id",
                issuance.installation_id.len(),
                MAX_INSTALLATION,
            ),
            (
                "issuance.scopes",
                issuance.scopes.join(" ").len(),
                MAX_SCOPES,
            ),
        ] {
            if value > max {
                violations.push(FieldViolation::new(field, format!("at most {max} bytes")));
            }
        }
        if issuance.subject.is_empty() {
            violations.push(FieldViolation::new("issuance.subject", "must not be empty"));
        }
        if !violations.is_empty() {
            return Err(RegistryError::InvalidArgument(violations));
        }
        let connector = self
            .store
            .connector(
                &issuance.team_id,
                &ConnectorRef::Id(issuance.connector_id.clone()),
            )
            .await?
            .ok_or_else(|| {
                RegistryError::not_found(
                    Resource::Connector,
                    ConnectorRef::Id(issuance.connector_id.clone()),
                )
            })?;
        let issuance = Issuance {
            id: 0,
            token_id: issuance.token_id,
            team_id: issuance.team_id,
            project_id: issuance.project_id,
            environment: issuance.environment,
            connector_id: connector.id,
            connector_uid: connector.uid,
            subject: issuance.subject,
            installation_id: issuance.installation_id,
            scopes: issuance.scopes,
            issued_at: issuance.issued_at,
            expires_at: issuance.expires_at,
            revoked: false,
            provider_revocation: None,
        };
        self.store
            .record_issuance(&issuance, self.clock.now())
            .await
    }

    /// The team's issuances, newest first (admin and viewer keys).
    pub async fn list_issuances(
        &self,
        caller: &Caller,
        connector: Option<&ConnectorRef>,
        project: Option<ProjectId>,
        environment: Option<Environment>,
        page: PageRequest<IssuanceKey>,
    ) -> Result<Page<Issuance>> {
        let team = caller.readable_team()?;
        let connector = match connector {
            Some(reference) => Some(
                self.store
                    .connector(team, reference)
                    .await?
                    .ok_or_else(|| RegistryError::not_found(Resource::Connector, reference))?
                    .id,
            ),
            None => None,
        };
        let filter = IssuanceFilter {
            connector,
            project,
            environment,
        };
        let rows = self.store.issuances(team, &filter, &page).await?;
        Ok(Page::from_rows(rows, page.size, |i| IssuanceKey(i.id)))
    }
}
