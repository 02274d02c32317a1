//! A project's custom environments, and what deleting one does to its links.

use super::*;
use crate::domain::{
    model::ProjectEnvironment,
    store::{EnvironmentRemoval, EnvironmentStore},
    types::CustomEnvironment,
};

fn already_exists(e: &ProjectEnvironment) -> impl FnOnce(&str) -> RegistryError + '_ {
    move |_| RegistryError::AlreadyExists {
        resource: Resource::Environment,
        what: format!("with slug '{}' in project {}", e.slug, e.project_id),
    }
}

/// Every change to a project's environments may change its answers for every connector.
fn project_scope(e: &ProjectEnvironment) -> ChangeScope {
    ChangeScope {
        project_id: Some(e.project_id.clone()),
        ..ChangeScope::team(&e.team_id)
    }
}

#[async_trait]
impl EnvironmentStore for SeaStore {
    async fn insert_environment(&self, e: &ProjectEnvironment, actor: &Actor) -> Result<()> {
        let txn = self.begin_write().await?;
        environment::ActiveModel::from(rows::environment_row(e))
            .insert(&txn.txn)
            .await
            .map_err(|err| write_error(err, already_exists(e)))?;
        // No link names a new environment yet, but a cached refusal for a token naming its slug
        // is dropped all the same.
        txn.commit(audit::environment_created(actor, e), Some(project_scope(e)))
            .await
    }

    async fn environments(
        &self,
        team: &TeamId,
        project: &ProjectId,
    ) -> Result<Vec<ProjectEnvironment>> {
        environment::Entity::find()
            .filter(environment::Column::TeamId.eq(team.as_str()))
            .filter(environment::Column::ProjectId.eq(project.as_str()))
            .order_by(environment::Column::Slug, Order::Asc)
            .all(&self.db)
            .await
            .map_err(storage_error)?
            .into_iter()
            .map(rows::environment)
            .collect()
    }

    async fn environment(
        &self,
        team: &TeamId,
        project: &ProjectId,
        named: &CustomEnvironment,
    ) -> Result<Option<ProjectEnvironment>> {
        let column = if named.is_id() {
            environment::Column::Id
        } else {
            environment::Column::Slug
        };
        environment::Entity::find()
            .filter(environment::Column::TeamId.eq(team.as_str()))
            .filter(environment::Column::ProjectId.eq(project.as_str()))
            .filter(column.eq(named.as_str()))
            .all(&self.db)
            .await
            .map_err(storage_error)?
            .into_iter()
            .next()
            .map(rows::environment)
            .transpose()
    }

    async fn update_environment(
        &self,
        before: &ProjectEnvironment,
        after: &ProjectEnvironment,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let txn = self.begin_write().await?;
        let updated = environment::Entity::update_many()
            .col_expr(environment::Column::Slug, Expr::value(after.slug.clone()))
            .col_expr(
                environment::Column::Name,
                Expr::value(after.name.to_string()),
            )
            .filter(environment::Column::TeamId.eq(before.team_id.as_str()))
            .filter(environment::Column::Id.eq(before.id.as_str()))
            .exec(&txn.txn)
            .await
            .map_err(|err| write_error(err, already_exists(after)))?;
        if updated.rows_affected == 0 {
            return Err(RegistryError::not_found(
                Resource::Environment,
                before.id.as_str(),
            ));
        }
        txn.commit(
            audit::environment_updated(actor, before, after, now),
            Some(project_scope(after)),
        )
        .await
    }

    async fn delete_environment(
        &self,
        e: &ProjectEnvironment,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<EnvironmentRemoval> {
        use project_link::Column as L;
        let txn = self.begin_write().await?;
        let deleted = environment::Entity::delete_many()
            .filter(environment::Column::TeamId.eq(e.team_id.as_str()))
            .filter(environment::Column::Id.eq(e.id.as_str()))
            .exec(&txn.txn)
            .await
            .map_err(storage_error)?;
        if deleted.rows_affected == 0 {
            return Err(RegistryError::not_found(
                Resource::Environment,
                e.id.as_str(),
            ));
        }
        // The project's links that enable it (few: one project's links, one per connector).
        let query = link_query(&e.team_id)
            .and_where(Expr::col((project_link::Entity, L::ProjectId)).eq(e.project_id.as_str()))
            .and_where(
                Expr::col((project_link::Entity, L::CustomEnvironments))
                    .like(format!("%{}%", e.id.as_str())),
            )
            .to_owned();
        let mut removal = EnvironmentRemoval::default();
        for mut link in fetch_links(&txn.txn, &query).await? {
            if !link.custom_environments.contains(&e.id) {
                continue;
            }
            link.custom_environments.retain(|id| *id != e.id);
            let key = (link.connector_id.to_string(), link.project_id.to_string());
            if link.environments.is_empty() && link.custom_environments.is_empty() {
                project_link::Entity::delete_by_id(key)
                    .exec(&txn.txn)
                    .await
                    .map_err(storage_error)?;
                removal.removed_links.push(link);
            } else {
                project_link::Entity::update_many()
                    .col_expr(
                        L::CustomEnvironments,
                        Expr::value(rows::custom_environments_column(&link.custom_environments)),
                    )
                    .col_expr(L::UpdatedAt, Expr::value(now))
                    .filter(L::ConnectorId.eq(key.0))
                    .filter(L::ProjectId.eq(key.1))
                    .exec(&txn.txn)
                    .await
                    .map_err(storage_error)?;
                link.updated_at = now;
                removal.updated_links.push(link);
            }
        }
        txn.commit(
            audit::environment_deleted(
                actor,
                e,
                &removal.updated_links,
                &removal.removed_links,
                now,
            ),
            Some(project_scope(e)),
        )
        .await?;
        Ok(removal)
    }
}
