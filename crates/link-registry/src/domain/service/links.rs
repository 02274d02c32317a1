//! Project links: attach, detach and list.

use super::*;

/// The highest issuance quota a link may have.
pub const MAX_ISSUANCES_PER_HOUR: u32 = 1_000_000;

impl Registry {
    /// Links `connector` to `project` for exactly `environments`, with no end and no limits.
    pub async fn attach_project(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        project: &ProjectRef,
        environments: EnvironmentSet,
    ) -> Result<ProjectLink> {
        self.attach_project_with(caller, connector, project, LinkTerms::lasting(environments))
            .await
    }

    /// Links `connector` to `project` on exactly `terms`: an end in the future (`None`: none),
    /// ceilings that fit the connector's type and name its installations, a quota (0: none).
    /// Terms replace the link's terms whole.
    pub async fn attach_project_with(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        project: &ProjectRef,
        mut terms: LinkTerms,
    ) -> Result<ProjectLink> {
        let team = caller.writable_team()?;
        let now = self.clock.now();
        let mut violations = Vec::new();
        if terms.expires_at.is_some_and(|at| at <= now) {
            violations.push(FieldViolation::new(
                "expire_time",
                "expire_time must be in the future",
            ));
        }
        if terms.limits.max_issuances_per_hour > MAX_ISSUANCES_PER_HOUR {
            violations.push(FieldViolation::new(
                "max_issuances_per_hour",
                format!("at most {MAX_ISSUANCES_PER_HOUR} (0: no quota)"),
            ));
        }
        terms.custom_environments = self
            .environment_ids(team, project, &terms.custom_environments, &mut violations)
            .await?;
        terms.limits.ceilings = std::mem::take(&mut terms.limits.ceilings).normalized();
        if !terms.limits.ceilings.is_empty() {
            let found = self
                .store
                .connector(team, connector)
                .await?
                .ok_or_else(|| RegistryError::not_found(Resource::Connector, connector))?;
            let kind = found.uid.kind();
            if let Some(row) = connect_types::capabilities(kind.as_str()) {
                violations.extend(terms.limits.ceilings.violations(row));
            }
            for id in &terms.limits.ceilings.installations {
                let known = match InstallationId::parse(id) {
                    Ok(id) => self.store.installation(&found, &id).await?.is_some(),
                    Err(_) => false,
                };
                if !known {
                    violations.push(FieldViolation::new(
                        "allowed_installations",
                        format!(
                            "{} has no installation '{}' (connect installations list {})",
                            found.uid,
                            connect_types::truncate(id, 64),
                            found.uid
                        ),
                    ));
                }
            }
        }
        if !violations.is_empty() {
            return Err(RegistryError::InvalidArgument(violations));
        }
        self.store
            .attach(team, connector, project, terms, &caller.actor(), now)
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

    /// The team's links matching `filter`; with `unused_for`, only those with no credential
    /// recorded for at least that long (a link never used counts from its first attach).
    pub async fn list_project_links(
        &self,
        caller: &Caller,
        mut filter: LinkFilter,
        unused_for: Option<chrono::Duration>,
        page: PageRequest<LinkKey>,
    ) -> Result<Page<ProjectLink>> {
        let team = caller.readable_team()?;
        if let Some(unused_for) = unused_for {
            filter.unused_since = self.clock.now().checked_sub_signed(unused_for);
        }
        let rows = self.store.links(team, &filter, &page).await?;
        Ok(Page::from_rows(rows, page.size, |l| LinkKey {
            connector_id: l.connector_id.clone(),
            project_id: l.project_id.clone(),
        }))
    }
}
