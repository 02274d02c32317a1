//! Teams and the issuer each trusts.

use super::*;

#[async_trait]
impl TeamStore for SeaStore {
    async fn insert_team(&self, team: &Team, actor: &Actor) -> Result<()> {
        let txn = self.begin_write().await?;
        team::ActiveModel::from(team::Model {
            id: team.id.to_string(),
            slug: team.slug.to_string(),
            issuer: team.issuer.to_string(),
            created_at: team.created_at,
        })
        .insert(&txn.txn)
        .await
        .map_err(|e| {
            write_error(e, |_| RegistryError::AlreadyExists {
                resource: Resource::Team,
                what: format!("with id '{}' or slug '{}'", team.id, team.slug),
            })
        })?;
        // A team that did not exist was refused as ISSUER_NOT_TRUSTED; that answer may change.
        txn.commit(
            audit::team_created(actor, team),
            Some(ChangeScope::team(&team.id)),
        )
        .await
    }

    async fn team(&self, id: &TeamId) -> Result<Option<Team>> {
        let row = team::Entity::find_by_id(id.as_str())
            .one(&self.db)
            .await
            .map_err(storage_error)?;
        row.map(rows::team).transpose()
    }
}
