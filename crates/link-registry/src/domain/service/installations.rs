//! A connector's installations: tenants inside it, whose config and secrets add to the
//! connector's when a token is issued for them. Their secrets are sealed like the connector's,
//! bound to the connector's destinations; destinations themselves belong to the connector.

use super::{
    connectors::{open_scoped, seal_all},
    revocations::RevocationSummary,
    *,
};
use crate::domain::{model::Installation, page::InstallationKey, store::RevokeFilter};

#[derive(Debug)]
pub struct NewInstallation {
    /// As the caller wrote it: its rules depend on the connector's type.
    pub id: String,
    pub display_name: Option<DisplayName>,
    pub config: ConfigMap,
    pub secrets: SecretInput,
}

/// The AAD scope of an installation's secrets, apart from the connector's own.
fn sealing_scope(id: &InstallationId) -> String {
    format!("installation/{id}/")
}

impl Registry {
    async fn team_connector(&self, team: &TeamId, connector: &ConnectorRef) -> Result<Connector> {
        self.store
            .connector(team, connector)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Connector, connector))
    }

    pub async fn create_installation(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        new: NewInstallation,
    ) -> Result<Installation> {
        let team = caller.writable_team()?;
        let connector = self.team_connector(team, connector).await?;
        let mut violations = Vec::new();
        let id = InstallationId::parse_for(connector.uid.kind().as_str(), &new.id)
            .map_err(|e| violations.push(FieldViolation::new("installation_id", e)))
            .ok();
        for key in new.config.iter().map(|(k, _)| k) {
            if is_destination_key(key) {
                violations.push(FieldViolation::new(
                    format!("config[{key}]"),
                    "destinations are set on the connector, not on its installations",
                ));
            }
        }
        let Some(id) = id.filter(|_| violations.is_empty()) else {
            return Err(RegistryError::InvalidArgument(violations));
        };
        // The id, as long as a display name may be (ids are ASCII, up to 128 characters).
        let default_name = DisplayName::parse(&id.as_str()[..id.as_str().len().min(100)])
            .map_err(|e| RegistryError::invalid("display_name", e))?;
        let installation = Installation {
            team_id: team.clone(),
            connector_id: connector.id.clone(),
            connector_uid: connector.uid.clone(),
            display_name: new.display_name.unwrap_or(default_name),
            secrets: seal_all(
                &self.cipher,
                &connector,
                &connector.config,
                &new.secrets,
                &sealing_scope(&id),
            ),
            id,
            config: new.config,
            created_at: self.clock.now(),
        };
        self.store
            .insert_installation(&installation, &caller.actor())
            .await?;
        Ok(installation)
    }

    /// The connector's installations, ordered by id, with the connector (for its default).
    pub async fn list_installations(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        page: PageRequest<InstallationKey>,
    ) -> Result<(Connector, Page<Installation>)> {
        let team = caller.readable_team()?;
        let connector = self.team_connector(team, connector).await?;
        let rows = self.store.installations(&connector, &page).await?;
        let page = Page::from_rows(rows, page.size, |i| InstallationKey(i.id.clone()));
        Ok((connector, page))
    }

    /// Deletes the installation, then revokes the credentials issued for it.
    pub async fn delete_installation(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        id: &str,
    ) -> Result<(Installation, RevocationSummary)> {
        let team = caller.writable_team()?;
        let id =
            InstallationId::parse(id).map_err(|e| RegistryError::invalid("installation_id", e))?;
        let gone = self
            .store
            .delete_installation(team, connector, &id, &caller.actor(), self.clock.now())
            .await?;
        let filter = RevokeFilter {
            subject: None,
            installation_id: Some(id.to_string()),
        };
        let summary = self
            .revoke_tokens(caller, &ConnectorRef::Id(gone.connector_id.clone()), filter)
            .await?;
        Ok((gone, summary))
    }

    /// The installation a token is asked for, with its opened secrets.
    pub(super) async fn installation_for(
        &self,
        connector: &Connector,
        id: &InstallationId,
    ) -> Result<(Installation, BTreeMap<String, SecretString>)> {
        let installation = self
            .store
            .installation(connector, id)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Installation, id))?;
        let secrets = open_scoped(
            &self.cipher,
            connector,
            &installation.secrets,
            &sealing_scope(id),
        )?;
        Ok((installation, secrets))
    }
}
