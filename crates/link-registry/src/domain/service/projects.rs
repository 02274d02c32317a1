//! A team's projects.

use super::*;

impl Registry {
    pub async fn create_project(&self, caller: &Caller, new: NewProject) -> Result<Project> {
        let team = caller.writable_team()?;
        let project = Project {
            team_id: team.clone(),
            id: new.id,
            name: new.name,
            created_at: self.clock.now(),
        };
        self.store.insert_project(&project, &caller.actor()).await?;
        Ok(project)
    }

    pub async fn get_project(&self, caller: &Caller, project: &ProjectRef) -> Result<Project> {
        let team = caller.readable_team()?;
        self.store
            .project(team, project)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Project, project))
    }

    pub async fn list_projects(
        &self,
        caller: &Caller,
        page: PageRequest<ProjectId>,
    ) -> Result<Page<Project>> {
        let team = caller.readable_team()?;
        let rows = self.store.projects(team, &page).await?;
        Ok(Page::from_rows(rows, page.size, |p| p.id.clone()))
    }
}
