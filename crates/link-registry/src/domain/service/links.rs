//! Project links: attach, detach and list.

use super::*;

impl Registry {
    /// Links `connector` to `project` for exactly `environments`, with no end.
    pub async fn attach_project(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        project: &ProjectRef,
        environments: EnvironmentSet,
    ) -> Result<ProjectLink> {
        self.attach_project_until(caller, connector, project, environments, None)
            .await
    }

    /// Links `connector` to `project` for exactly `environments` until `expires_at` (in the
    /// future; `None`: no end).
    pub async fn attach_project_until(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        project: &ProjectRef,
        environments: EnvironmentSet,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<ProjectLink> {
        let team = caller.writable_team()?;
        let now = self.clock.now();
        if expires_at.is_some_and(|at| at <= now) {
            return Err(RegistryError::invalid(
                "expire_time",
                "expire_time must be in the future",
            ));
        }
        self.store
            .attach(
                team,
                connector,
                project,
                LinkTerms {
                    environments,
                    expires_at,
                },
                &caller.actor(),
                now,
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
