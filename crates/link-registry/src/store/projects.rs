//! A team's projects, found by id or by name.

use super::*;

pub(super) async fn find_project<C: ConnectionTrait>(
    db: &C,
    team: &TeamId,
    project: &ProjectRef,
) -> Result<Option<Project>> {
    let mut any = Condition::any();
    if let Some(id) = &project.id {
        any = any.add(project::Column::Id.eq(id.as_str()));
    }
    if let Some(name) = &project.name {
        any = any.add(project::Column::Name.eq(name.as_str()));
    }
    let rows = project::Entity::find()
        .filter(project::Column::TeamId.eq(team.as_str()))
        .filter(any)
        .all(db)
        .await
        .map_err(storage_error)?;
    // One project may match by id and another by name: the id wins.
    let by_id = |row: &project::Model| project.id.as_ref().is_some_and(|id| row.id == id.as_str());
    let best = match rows.iter().position(by_id) {
        Some(i) => rows.into_iter().nth(i),
        None => rows.into_iter().next(),
    };
    best.map(rows::project).transpose()
}

#[async_trait]
impl ProjectStore for SeaStore {
    async fn insert_project(&self, p: &Project, actor: &Actor) -> Result<()> {
        let txn = self.begin_write().await?;
        project::ActiveModel::from(project::Model {
            team_id: p.team_id.to_string(),
            id: p.id.to_string(),
            name: p.name.to_string(),
            created_at: p.created_at,
        })
        .insert(&txn.txn)
        .await
        .map_err(|e| {
            write_error(e, |detail| RegistryError::AlreadyExists {
                resource: Resource::Project,
                what: if detail.contains("name") {
                    format!("named '{}'", p.name)
                } else {
                    format!("with id '{}'", p.id)
                },
            })
        })?;
        // Authorize reads no project row: a new project changes no answer.
        txn.commit(audit::project_created(actor, p), None).await
    }

    async fn project(&self, team: &TeamId, project: &ProjectRef) -> Result<Option<Project>> {
        find_project(&self.db, team, project).await
    }

    async fn projects(&self, team: &TeamId, page: &PageRequest<ProjectId>) -> Result<Vec<Project>> {
        let found = super::lists::projects_page(team, page)
            .all(&self.db)
            .await
            .map_err(storage_error)?;
        found.into_iter().map(rows::project).collect()
    }
}
