//! Project links: attach, detach and list.

use super::*;

impl Registry {
    pub async fn attach_project(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        project: &ProjectRef,
        environments: EnvironmentSet,
    ) -> Result<ProjectLink> {
        let team = caller.writable_team()?;
        self.store
            .attach(
                team,
                connector,
                project,
                environments,
                &caller.actor(),
                self.clock.now(),
            )
            .await
    }

    pub async fn detach_project(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        project: &ProjectRef,
    ) -> Result<ProjectLink> {
        let team = caller.writable_team()?;
        self.store
            .detach(team, connector, project, &caller.actor(), self.clock.now())
            .await
    }

    pub async fn get_project_link(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        project: &ProjectRef,
    ) -> Result<ProjectLink> {
        let team = caller.readable_team()?;
        self.store.link(team, connector, project).await
    }

    pub async fn list_project_links(
        &self,
        caller: &Caller,
        filter: LinkFilter,
        page: PageRequest<LinkKey>,
    ) -> Result<Page<ProjectLink>> {
        let team = caller.readable_team()?;
        let rows = self.store.links(team, &filter, &page).await?;
        Ok(Page::from_rows(rows, page.size, |l| LinkKey {
            connector_id: l.connector_id.clone(),
            project_id: l.project_id.clone(),
        }))
    }
}
