//! A connector's installations. Changes lock the connector row on PostgreSQL, like every other
//! change of a connector, so a deletion and a new default cannot cross.

use super::*;
use crate::domain::{
    model::Installation, page::InstallationKey, store::InstallationStore, types::InstallationId,
};

fn installation_of(connector: &Connector, id: &InstallationId) -> Condition {
    Condition::all()
        .add(installation::Column::ConnectorId.eq(connector.id.as_str()))
        .add(installation::Column::InstallationId.eq(id.as_str()))
}

impl SeaStore {
    /// How many of the connector's installations hold secrets (inside a write transaction).
    pub(super) async fn installations_with_secrets(
        &self,
        txn: &DatabaseTransaction,
        connector: &Connector,
    ) -> Result<u64> {
        installation::Entity::find()
            .filter(installation::Column::ConnectorId.eq(connector.id.as_str()))
            .filter(installation::Column::Secrets.ne("{}"))
            .count(txn)
            .await
            .map_err(storage_error)
    }

    /// Whether the installation exists (inside a write transaction).
    pub(super) async fn installation_exists(
        &self,
        txn: &DatabaseTransaction,
        connector: &Connector,
        id: &InstallationId,
    ) -> Result<bool> {
        let found = installation::Entity::find()
            .filter(installation_of(connector, id))
            .count(txn)
            .await
            .map_err(storage_error)?;
        Ok(found > 0)
    }
}

#[async_trait]
impl InstallationStore for SeaStore {
    async fn insert_installation(&self, i: &Installation, actor: &Actor) -> Result<()> {
        let txn = self.begin_write().await?;
        let connector = self
            .connector_for_update(
                &txn.txn,
                &i.team_id,
                &ConnectorRef::Id(i.connector_id.clone()),
            )
            .await?;
        installation::ActiveModel::from(rows::installation_row(i))
            .insert(&txn.txn)
            .await
            .map_err(|e| {
                write_error(e, |_| RegistryError::AlreadyExists {
                    resource: Resource::Installation,
                    what: format!("'{}' of connector '{}'", i.id, connector.uid),
                })
            })?;
        let scope = ChangeScope::connector(&i.team_id, &connector.id, &connector.uid);
        txn.commit(audit::installation_created(actor, i), Some(scope))
            .await
    }

    async fn installation(
        &self,
        connector: &Connector,
        id: &InstallationId,
    ) -> Result<Option<Installation>> {
        let row = installation::Entity::find()
            .filter(installation_of(connector, id))
            .one(&self.db)
            .await
            .map_err(storage_error)?;
        row.map(|r| rows::installation(r, &connector.uid))
            .transpose()
    }

    async fn installations(
        &self,
        connector: &Connector,
        page: &PageRequest<InstallationKey>,
    ) -> Result<Vec<Installation>> {
        let found = super::lists::installations_page(&connector.id, page)
            .all(&self.db)
            .await
            .map_err(storage_error)?;
        found
            .into_iter()
            .map(|r| rows::installation(r, &connector.uid))
            .collect()
    }

    async fn delete_installation(
        &self,
        team: &TeamId,
        c: &ConnectorRef,
        id: &InstallationId,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Installation> {
        let txn = self.begin_write().await?;
        let connector = self.connector_for_update(&txn.txn, team, c).await?;
        let row = installation::Entity::find()
            .filter(installation_of(&connector, id))
            .one(&txn.txn)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| RegistryError::not_found(Resource::Installation, id))?;
        let gone = rows::installation(row, &connector.uid)?;
        installation::Entity::delete_many()
            .filter(installation_of(&connector, id))
            .exec(&txn.txn)
            .await
            .map_err(storage_error)?;
        if connector.default_installation_id.as_ref() == Some(id) {
            connector::Entity::update_many()
                .col_expr(
                    connector::Column::DefaultInstallationId,
                    Expr::value(Option::<String>::None),
                )
                .filter(connector::Column::Id.eq(connector.id.as_str()))
                .exec(&txn.txn)
                .await
                .map_err(storage_error)?;
        }
        let scope = ChangeScope::connector(team, &connector.id, &connector.uid);
        txn.commit(audit::installation_deleted(actor, &gone, now), Some(scope))
            .await?;
        Ok(gone)
    }
}
