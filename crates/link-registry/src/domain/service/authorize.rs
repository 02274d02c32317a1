//! The runtime decision the broker asks for, in the documented order.

use tracing::Instrument;

use super::*;

/// The claims of a verified token, and the connector asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizeQuery {
    pub owner_id: TeamId,
    pub project_id: ProjectId,
    pub environment: Environment,
    pub issuer: String,
    pub connector: ConnectorRef,
    pub installation: InstallationAsk,
}

/// Which installation a token is asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum InstallationAsk {
    /// The connector's default, if it has one.
    #[default]
    Default,
    /// `*`: every installation; answered without one (the broker knows which types allow it).
    Every,
    One(InstallationId),
}

/// The connector the lookup found and the project's link to it, when that link is enabled for
/// `environment`; the documented "no" otherwise (unknown connector, not linked, not enabled).
pub(super) fn linked(
    found: crate::domain::store::Authorizing,
    asked: &ConnectorRef,
    project: &ProjectId,
    environment: Environment,
) -> Result<(Connector, ProjectLink)> {
    let connector = found
        .connector
        .ok_or_else(|| RegistryError::not_found(Resource::Connector, asked))?;
    let link = found
        .link
        .ok_or_else(|| RegistryError::ClientNotLinkedToProject {
            connector: connector.uid.to_string(),
            project_id: project.to_string(),
        })?;
    if !link.environments.contains(environment) {
        return Err(RegistryError::ClientNotEnabledForEnvironment {
            connector: connector.uid.to_string(),
            project_id: project.to_string(),
            environment: environment.to_string(),
        });
    }
    Ok((connector, link))
}

impl Registry {
    /// The runtime decision, in the documented order. Any "no" stops it.
    pub async fn authorize(
        &self,
        caller: &Caller,
        query: &AuthorizeQuery,
    ) -> Result<Authorization> {
        caller.serves(&query.owner_id)?;
        let found = self
            .store
            .authorizing(&query.owner_id, &query.connector, &query.project_id)
            .instrument(tracing::debug_span!(
                "store.authorizing",
                owner_id = %query.owner_id,
                project_id = %query.project_id,
                connector = %query.connector,
            ))
            .await?;
        // An unknown team and a wrong issuer answer alike: neither tells whether the team exists.
        if found
            .team
            .as_ref()
            .is_none_or(|t| t.issuer.as_str() != query.issuer)
        {
            return Err(RegistryError::IssuerNotTrusted {
                owner_id: query.owner_id.to_string(),
            });
        }
        let (connector, link) = linked(
            found,
            &query.connector,
            &query.project_id,
            query.environment,
        )?;
        if connector.suspended {
            return Err(RegistryError::ConnectorSuspended {
                connector: connector.uid.to_string(),
            });
        }
        let wanted = match &query.installation {
            InstallationAsk::Default => connector.default_installation_id.clone(),
            InstallationAsk::Every => None,
            InstallationAsk::One(id) => Some(id.clone()),
        };
        let installation = match wanted {
            Some(id) => Some(self.installation_for(&connector, &id).await?),
            None => None,
        };
        let secrets = open_all(&self.cipher, &connector)?;
        Ok(Authorization {
            connector,
            link,
            secrets,
            installation,
        })
    }
}
