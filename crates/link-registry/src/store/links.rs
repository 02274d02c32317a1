//! Project links, joined with their connector uid and project name for every answer.

use super::*;

/// Links of one team with their connector uid and project name. The two names are scalar
/// subqueries by primary key rather than joins, so that they are looked up for the rows a page
/// returns only: joined, PostgreSQL planned a memoized join sized for every link of the team
/// and spent 2 ms setting it up for a first page at a million links.
pub(super) fn link_query(team: &TeamId) -> SelectStatement {
    use project_link::Column as L;
    let link = |c: L| Expr::col((project_link::Entity, c));
    let uid = Query::select()
        .column((connector::Entity, connector::Column::Uid))
        .from(connector::Entity)
        .and_where(
            Expr::col((connector::Entity, connector::Column::Id))
                .equals((project_link::Entity, L::ConnectorId)),
        )
        .to_owned();
    let name = Query::select()
        .column((project::Entity, project::Column::Name))
        .from(project::Entity)
        .and_where(
            Expr::col((project::Entity, project::Column::TeamId))
                .equals((project_link::Entity, L::TeamId)),
        )
        .and_where(
            Expr::col((project::Entity, project::Column::Id))
                .equals((project_link::Entity, L::ProjectId)),
        )
        .to_owned();
    Query::select()
        .columns([
            (project_link::Entity, L::TeamId),
            (project_link::Entity, L::ConnectorId),
            (project_link::Entity, L::ProjectId),
            (project_link::Entity, L::Environments),
            (project_link::Entity, L::CreatedAt),
            (project_link::Entity, L::UpdatedAt),
            (project_link::Entity, L::ExpiresAt),
            (project_link::Entity, L::Limits),
            (project_link::Entity, L::LastIssuedAt),
            (project_link::Entity, L::CustomEnvironments),
        ])
        .expr_as(Expr::SubQuery(None, Box::new(uid.into())), "connector_uid")
        .expr_as(Expr::SubQuery(None, Box::new(name.into())), "project_name")
        .from(project_link::Entity)
        .and_where(link(L::TeamId).eq(team.as_str()))
        .to_owned()
}

pub(super) async fn fetch_links<C: ConnectionTrait>(
    db: &C,
    query: &SelectStatement,
) -> Result<Vec<ProjectLink>> {
    let statement = db.get_database_backend().build(query);
    let found = rows::LinkRow::find_by_statement(statement)
        .all(db)
        .await
        .map_err(storage_error)?;
    found.into_iter().map(rows::link).collect()
}

pub(super) async fn find_link<C: ConnectionTrait>(
    db: &C,
    team: &TeamId,
    connector: &ConnectorId,
    project: &ProjectId,
) -> Result<Option<ProjectLink>> {
    use project_link::Column as L;
    let query = link_query(team)
        .and_where(Expr::col((project_link::Entity, L::ConnectorId)).eq(connector.as_str()))
        .and_where(Expr::col((project_link::Entity, L::ProjectId)).eq(project.as_str()))
        .to_owned();
    Ok(fetch_links(db, &query).await?.into_iter().next())
}

impl SeaStore {
    /// Both sides of a link, inside a write transaction (the connector row locked on PostgreSQL).
    async fn link_parties(
        &self,
        txn: &DatabaseTransaction,
        team: &TeamId,
        c: &ConnectorRef,
        p: &ProjectRef,
    ) -> Result<(Connector, Project)> {
        let connector = self.connector_for_update(txn, team, c).await?;
        let project = find_project(txn, team, p)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Project, p))?;
        Ok((connector, project))
    }
}

#[async_trait]
impl LinkStore for SeaStore {
    async fn attach(
        &self,
        team: &TeamId,
        c: &ConnectorRef,
        p: &ProjectRef,
        terms: LinkTerms,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<ProjectLink> {
        let LinkTerms {
            environments,
            custom_environments,
            expires_at,
            limits,
        } = terms;
        let txn = self.begin_write().await?;
        let (connector, project) = self.link_parties(&txn.txn, team, c, p).await?;
        // The custom environments named still exist (locked on PostgreSQL, so that a delete
        // running at the same time waits for this attach and then takes them out of it).
        if !custom_environments.is_empty() {
            let mut select = environment::Entity::find()
                .filter(environment::Column::TeamId.eq(team.as_str()))
                .filter(environment::Column::ProjectId.eq(project.id.as_str()))
                .filter(
                    environment::Column::Id
                        .is_in(custom_environments.iter().map(|e| e.as_str().to_owned())),
                );
            if self.backend() == DbBackend::Postgres {
                select = select.lock_exclusive();
            }
            let found = select.all(&txn.txn).await.map_err(storage_error)?;
            if found.len() != custom_environments.len() {
                return Err(RegistryError::invalid(
                    "environments",
                    "an environment named was removed meanwhile: list the project's environments again",
                ));
            }
        }
        let before = find_link(&txn.txn, team, &connector.id, &project.id).await?;
        // The terms it has already: nothing is written, audited or announced.
        if let Some(unchanged) = before.as_ref().filter(|b| {
            b.environments == environments
                && b.custom_environments == custom_environments
                && b.expires_at == expires_at
                && b.limits == limits
        }) {
            return Ok(unchanged.clone());
        }
        let row = project_link::ActiveModel::from(project_link::Model {
            team_id: team.to_string(),
            connector_id: connector.id.to_string(),
            project_id: project.id.to_string(),
            environments: environments.bits(),
            created_at: now,
            updated_at: now,
            expires_at,
            limits: rows::limits_column(&limits),
            last_issued_at: before.as_ref().and_then(|b| b.last_issued_at),
            custom_environments: rows::custom_environments_column(&custom_environments),
        });
        project_link::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    project_link::Column::ConnectorId,
                    project_link::Column::ProjectId,
                ])
                .update_columns([
                    project_link::Column::Environments,
                    project_link::Column::UpdatedAt,
                    project_link::Column::ExpiresAt,
                    project_link::Column::Limits,
                    project_link::Column::CustomEnvironments,
                ])
                .to_owned(),
            )
            .exec_without_returning(&txn.txn)
            .await
            .map_err(|e| {
                write_error(e, |_| {
                    RegistryError::internal("upserting a link", "conflict")
                })
            })?;
        let after = ProjectLink {
            team_id: team.clone(),
            connector_id: connector.id,
            connector_uid: connector.uid,
            project_id: project.id,
            project_name: project.name,
            environments,
            custom_environments,
            created_at: before.as_ref().map_or(now, |b| b.created_at),
            updated_at: now,
            expires_at,
            limits,
            last_issued_at: before.as_ref().and_then(|b| b.last_issued_at),
        };
        let scope = ChangeScope::link(
            team,
            &after.connector_id,
            &after.connector_uid,
            &after.project_id,
        );
        txn.commit(
            audit::project_attached(actor, before.as_ref(), &after),
            Some(scope),
        )
        .await?;
        Ok(after)
    }

    async fn detach(
        &self,
        team: &TeamId,
        c: &ConnectorRef,
        p: &ProjectRef,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<ProjectLink> {
        let txn = self.begin_write().await?;
        let (connector, project) = self.link_parties(&txn.txn, team, c, p).await?;
        let link = find_link(&txn.txn, team, &connector.id, &project.id)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::ProjectLink, format!("{c} → {p}")))?;
        project_link::Entity::delete_by_id((connector.id.to_string(), project.id.to_string()))
            .exec(&txn.txn)
            .await
            .map_err(storage_error)?;
        let scope = ChangeScope::link(
            team,
            &link.connector_id,
            &link.connector_uid,
            &link.project_id,
        );
        txn.commit(audit::project_detached(actor, &link, now), Some(scope))
            .await?;
        Ok(link)
    }

    async fn link(&self, team: &TeamId, c: &ConnectorRef, p: &ProjectRef) -> Result<ProjectLink> {
        let connector = self
            .connector(team, c)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Connector, c))?;
        let project = find_project(&self.db, team, p)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Project, p))?;
        find_link(&self.db, team, &connector.id, &project.id)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::ProjectLink, format!("{c} → {p}")))
    }

    async fn links(
        &self,
        team: &TeamId,
        filter: &LinkFilter,
        page: &PageRequest<LinkKey>,
    ) -> Result<Vec<ProjectLink>> {
        let connector = match &filter.connector {
            Some(c) => Some(
                self.connector(team, c)
                    .await?
                    .ok_or_else(|| RegistryError::not_found(Resource::Connector, c))?
                    .id,
            ),
            None => None,
        };
        let project = match &filter.project {
            Some(p) => Some(
                find_project(&self.db, team, p)
                    .await?
                    .ok_or_else(|| RegistryError::not_found(Resource::Project, p))?
                    .id,
            ),
            None => None,
        };
        let mut query = super::lists::links_page(team, connector.as_ref(), project.as_ref(), page);
        if let Some(since) = filter.unused_since {
            use project_link::Column as L;
            let column = |c: L| Expr::col((project_link::Entity, c));
            query.and_where(
                Expr::expr(sea_orm::sea_query::Func::coalesce([
                    column(L::LastIssuedAt),
                    column(L::CreatedAt),
                ]))
                .lte(since),
            );
        }
        fetch_links(&self.db, &query).await
    }
}
