//! A team's projects, found by id or by name.

use sea_orm::QueryTrait;

use super::*;

pub(super) async fn find_project<C: ConnectionTrait>(
    db: &C,
    team: &TeamId,
    project: &ProjectRef,
) -> Result<Option<Project>> {
    let Some(query) = project_query(team, project) else {
        return Ok(None);
    };
    let rows = project::Model::find_by_statement(db.get_database_backend().build(&query))
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

/// One key search per way `project` names a project, joined by `UNION ALL`: an `OR` of the two
/// would scan the team's projects on SQLite, which cannot union two index searches of a
/// `WITHOUT ROWID` table.
fn project_query(team: &TeamId, project: &ProjectRef) -> Option<SelectStatement> {
    let by = |column: project::Column, value: &str| {
        project::Entity::find()
            .filter(project::Column::TeamId.eq(team.as_str()))
            .filter(column.eq(value))
            .into_query()
    };
    let mut searches = project
        .id
        .iter()
        .map(|id| by(project::Column::Id, id.as_str()))
        .chain(
            project
                .name
                .iter()
                .map(|name| by(project::Column::Name, name.as_str())),
        );
    let mut query = searches.next()?;
    for other in searches {
        query.union(sea_orm::sea_query::UnionType::All, other);
    }
    Some(query)
}

impl SeaStore {
    /// The plan of finding a project by a reference that is both an id and a name (see
    /// [`SeaStore::list_plans`]).
    pub async fn project_lookup_plans(&self) -> Result<Vec<(&'static str, Vec<String>)>> {
        let team = TeamId::parse("team_plan").map_err(|e| RegistryError::invalid("team", e))?;
        let project =
            ProjectRef::parse("prj_plan").map_err(|e| RegistryError::invalid("project", e))?;
        let query = project_query(&team, &project)
            .ok_or_else(|| RegistryError::internal("planning", "no project search"))?;
        self.explain(vec![(
            "project by id or name",
            self.backend().build(&query),
        )])
        .await
    }
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
