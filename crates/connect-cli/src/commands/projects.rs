//! The team's projects, and who the caller is.

use super::*;

pub(crate) async fn create_project(ctx: &Context, id: String, name: String) -> Result<(), Failure> {
    let project = ctx
        .registry()?
        .create_project(pb::CreateProjectRequest { id, name })
        .await
        .map_err(ctx.failed())?
        .into_inner();
    ctx.emit(
        || format!("Created project {} ({})", project.id, project.name),
        || output::project(&project),
    );
    Ok(())
}

pub(crate) async fn list_projects(ctx: &Context) -> Result<(), Failure> {
    let all = collect(usize::MAX, |page_size, page_token| async move {
        let page = ctx
            .registry()?
            .list_projects(pb::ListProjectsRequest {
                page_size,
                page_token,
            })
            .await
            .map_err(ctx.failed())?
            .into_inner();
        Ok((page.projects, page.next_page_token))
    })
    .await?;
    ctx.emit_list(
        &all,
        "No projects.",
        &["ID", "NAME", "CREATED"],
        |p| {
            vec![
                p.id.clone(),
                p.name.clone(),
                output::short_time(p.create_time.as_ref()),
            ]
        },
        output::project,
    );
    Ok(())
}

/// `connect envs create|list|rename|remove`.
pub(crate) async fn envs(ctx: &Context, command: crate::cli::EnvsCommand) -> Result<(), Failure> {
    use crate::cli::EnvsCommand as E;
    let mut registry = ctx.registry()?;
    match command {
        E::Create {
            slug,
            project,
            name,
        } => {
            let created = registry
                .create_environment(pb::CreateEnvironmentRequest {
                    project,
                    slug,
                    name: name.unwrap_or_default(),
                })
                .await
                .map_err(ctx.failed())?
                .into_inner();
            ctx.emit(
                || {
                    format!(
                        "Created environment {} ({}) of {}",
                        created.slug, created.id, created.project
                    )
                },
                || output::environment(&created),
            );
        }
        E::List { project } => {
            let all = registry
                .list_environments(pb::ListEnvironmentsRequest {
                    project: project.clone(),
                })
                .await
                .map_err(ctx.failed())?
                .into_inner()
                .environments;
            ctx.emit_list(
                &all,
                format!("{project} has no custom environments (production, preview and development are built in)."),
                &["ID", "SLUG", "NAME", "CREATED"],
                |e| {
                    vec![
                        e.id.clone(),
                        e.slug.clone(),
                        e.name.clone(),
                        output::short_time(e.create_time.as_ref()),
                    ]
                },
                output::environment,
            );
        }
        E::Rename {
            environment,
            slug,
            project,
            name,
        } => {
            let renamed = registry
                .update_environment(pb::UpdateEnvironmentRequest {
                    project,
                    environment: environment.clone(),
                    slug,
                    name: name.unwrap_or_default(),
                })
                .await
                .map_err(ctx.failed())?
                .into_inner();
            ctx.emit(
                || {
                    format!(
                        "Renamed environment {environment} to {} ({})",
                        renamed.slug, renamed.id
                    )
                },
                || output::environment(&renamed),
            );
        }
        E::Remove {
            environment,
            project,
        } => {
            let removed = registry
                .delete_environment(pb::DeleteEnvironmentRequest {
                    project,
                    environment,
                })
                .await
                .map_err(ctx.failed())?
                .into_inner();
            let gone = removed.environment.clone().unwrap_or_default();
            let uids = |links: &[pb::ProjectLink]| {
                links
                    .iter()
                    .map(|l| l.connector_uid.clone())
                    .collect::<Vec<_>>()
            };
            ctx.emit(
                || {
                    let mut text = format!("Removed environment {} ({})", gone.slug, gone.id);
                    if !removed.updated_links.is_empty() {
                        text.push_str(&format!(
                            "\ntaken out of the links of: {}",
                            uids(&removed.updated_links).join(", ")
                        ));
                    }
                    if !removed.removed_links.is_empty() {
                        text.push_str(&format!(
                            "\nlinks removed (it was their only environment): {}",
                            uids(&removed.removed_links).join(", ")
                        ));
                    }
                    text
                },
                || {
                    serde_json::json!({
                        "environment": output::environment(&gone),
                        "updatedLinks": removed.updated_links.iter().map(output::link).collect::<Vec<_>>(),
                        "removedLinks": removed.removed_links.iter().map(output::link).collect::<Vec<_>>(),
                    })
                },
            );
        }
    }
    Ok(())
}

pub(crate) async fn whoami(ctx: &Context) -> Result<(), Failure> {
    let who = ctx
        .registry()?
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map_err(ctx.failed())?
        .into_inner();
    ctx.emit(
        || {
            let mut text = format!("{} ({})", who.actor, who.kind);
            if who.teams.is_empty() {
                text.push_str("\nevery team (a broker key)");
            }
            for team in &who.teams {
                text.push_str(&format!("\n{}  {}", team.team_id, team.role));
            }
            text
        },
        || {
            json!({
                "kind": who.kind,
                "actor": who.actor,
                "keyId": who.key_id,
                "issuer": who.issuer,
                "subject": who.subject,
                "email": who.email,
                "teams": who.teams.iter().map(|t| json!({"teamId": t.team_id, "role": t.role})).collect::<Vec<_>>(),
            })
        },
    );
    Ok(())
}
