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
