//! A project's custom environments: created, listed, renamed and deleted by admins; named by id
//! or slug wherever an environment is (links, a deployment token's `environment` claim).

use super::*;
use crate::domain::{
    model::ProjectEnvironment, store::EnvironmentRemoval, types::CustomEnvironment,
};

/// What an environment update changes (`None`: keep).
#[derive(Clone, Debug, Default)]
pub struct EnvironmentEdit {
    pub slug: Option<String>,
    pub name: Option<DisplayName>,
}

impl Registry {
    /// Creates a custom environment for `project`: a new `env_…` id, `slug` (not a built-in
    /// name, unique in the project) and `name`.
    pub async fn create_environment(
        &self,
        caller: &Caller,
        project: &ProjectRef,
        slug: &str,
        name: DisplayName,
    ) -> Result<ProjectEnvironment> {
        let team = caller.writable_team()?;
        connect_types::check_environment_slug(slug)
            .map_err(|why| RegistryError::invalid("slug", why))?;
        let project = self.get_project(caller, project).await?;
        let environment = ProjectEnvironment {
            team_id: team.clone(),
            project_id: project.id,
            id: CustomEnvironment::id_from_suffix(&crypto::random_token(24))
                .expect("random lowercase alphanumerics make a valid environment id"),
            slug: slug.to_owned(),
            name,
            created_at: self.clock.now(),
        };
        self.store
            .insert_environment(&environment, &caller.actor())
            .await?;
        Ok(environment)
    }

    /// The project's custom environments, by slug (admins and viewers).
    pub async fn list_environments(
        &self,
        caller: &Caller,
        project: &ProjectRef,
    ) -> Result<Vec<ProjectEnvironment>> {
        let project = self.get_project(caller, project).await?;
        self.store.environments(&project.team_id, &project.id).await
    }

    /// The project's environment named by id or slug; `ENVIRONMENT_NOT_FOUND` otherwise.
    async fn project_environment(
        &self,
        caller: &Caller,
        project: &ProjectRef,
        named: &CustomEnvironment,
    ) -> Result<ProjectEnvironment> {
        let project = self.get_project(caller, project).await?;
        self.store
            .environment(&project.team_id, &project.id, named)
            .await?
            .ok_or_else(|| {
                RegistryError::not_found(
                    Resource::Environment,
                    format!("{} in project {}", named.as_str(), project.name),
                )
            })
    }

    /// Renames an environment; its id, and so its links, stay.
    pub async fn update_environment(
        &self,
        caller: &Caller,
        project: &ProjectRef,
        named: &CustomEnvironment,
        edit: EnvironmentEdit,
    ) -> Result<ProjectEnvironment> {
        caller.writable_team()?;
        if let Some(slug) = &edit.slug {
            connect_types::check_environment_slug(slug)
                .map_err(|why| RegistryError::invalid("slug", why))?;
        }
        let before = self.project_environment(caller, project, named).await?;
        let after = ProjectEnvironment {
            slug: edit.slug.unwrap_or_else(|| before.slug.clone()),
            name: edit.name.unwrap_or_else(|| before.name.clone()),
            ..before.clone()
        };
        if after == before {
            return Ok(after);
        }
        self.store
            .update_environment(&before, &after, &caller.actor(), self.clock.now())
            .await?;
        Ok(after)
    }

    /// Deletes an environment and takes it out of every link; a link it was the last
    /// environment of is removed. Answers with the environment and what happened to the links.
    pub async fn delete_environment(
        &self,
        caller: &Caller,
        project: &ProjectRef,
        named: &CustomEnvironment,
    ) -> Result<(ProjectEnvironment, EnvironmentRemoval)> {
        caller.writable_team()?;
        let environment = self.project_environment(caller, project, named).await?;
        let removal = self
            .store
            .delete_environment(&environment, &caller.actor(), self.clock.now())
            .await?;
        Ok((environment, removal))
    }

    /// The ids of the custom environments `named` (ids or slugs) of `project`, sorted; each one
    /// the project does not have is a violation of `environments`.
    pub(super) async fn environment_ids(
        &self,
        team: &TeamId,
        project: &ProjectRef,
        named: &[CustomEnvironment],
        violations: &mut Vec<FieldViolation>,
    ) -> Result<Vec<CustomEnvironment>> {
        if named.is_empty() {
            return Ok(Vec::new());
        }
        let Some(project) = self.store.project(team, project).await? else {
            return Err(RegistryError::not_found(Resource::Project, project));
        };
        let known = self.store.environments(team, &project.id).await?;
        let mut ids = Vec::with_capacity(named.len());
        for name in named {
            match known
                .iter()
                .find(|e| e.id == *name || e.slug == name.as_str())
            {
                Some(environment) => ids.push(environment.id),
                None => violations.push(FieldViolation::new(
                    "environments",
                    format!(
                        "project {} has no environment '{}' (connect envs list --project {})",
                        project.name,
                        name.as_str(),
                        project.name
                    ),
                )),
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}
