//! Project links: attach (which replaces the environment set), detach, and a connector's links.

use super::*;

pub(crate) async fn attach(
    ctx: &Context,
    connector: String,
    project: String,
    environments: Vec<String>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), Failure> {
    let wanted: BTreeSet<String> = if environments.is_empty() {
        ALL_ENVIRONMENTS.iter().map(|e| e.to_string()).collect()
    } else {
        environments
            .iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect()
    };
    let current = ctx
        .registry()?
        .get_project_link(pb::GetProjectLinkRequest {
            connector: connector.clone(),
            project: project.clone(),
        })
        .await;
    let mut removed: Vec<String> = Vec::new();
    let (link, unchanged) = match current {
        Ok(link)
            if expires_at.is_none()
                && link.get_ref().expire_time.is_none()
                && link
                    .get_ref()
                    .environments
                    .iter()
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    == wanted =>
        {
            (link.into_inner(), true)
        }
        Ok(before) => {
            removed = before
                .into_inner()
                .environments
                .into_iter()
                .filter(|e| !wanted.contains(e))
                .collect();
            (
                attach_now(ctx, &connector, &project, &wanted, expires_at).await?,
                false,
            )
        }
        Err(status) if status.code() == tonic::Code::NotFound => (
            attach_now(ctx, &connector, &project, &wanted, expires_at).await?,
            false,
        ),
        Err(status) => return Err(ctx.failed()(status)),
    };
    let until = output::time(link.expire_time.as_ref())
        .as_str()
        .map(|t| format!(" until {t}"))
        .unwrap_or_default();
    ctx.emit(
        || {
            let envs = format!("{}{until}", output::environments(&link.environments));
            if unchanged {
                format!(
                    "{} is already attached to {} for {envs}: unchanged",
                    link.connector_uid, link.project_id
                )
            } else if removed.is_empty() {
                format!(
                    "Attached {} to {} for {envs}",
                    link.connector_uid, link.project_id
                )
            } else {
                format!(
                    "Attached {} to {} for {envs} (removed: {})",
                    link.connector_uid,
                    link.project_id,
                    removed.join(", ")
                )
            }
        },
        || {
            let mut value = output::link(&link);
            value["unchanged"] = json!(unchanged);
            value["removedEnvironments"] = json!(removed);
            value
        },
    );
    Ok(())
}

async fn attach_now(
    ctx: &Context,
    connector: &str,
    project: &str,
    environments: &BTreeSet<String>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<pb::ProjectLink, Failure> {
    Ok(ctx
        .registry()?
        .attach_project(pb::AttachProjectRequest {
            connector: connector.to_owned(),
            project: project.to_owned(),
            environments: environments.iter().cloned().collect(),
            expire_time: expires_at.map(|t| prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: 0,
            }),
        })
        .await
        .map_err(ctx.failed())?
        .into_inner())
}

/// `ExplainAccess`: a verdict line, then one line per check (`✓` pass, `✗` fail, `·` skipped)
/// and the fix under the failing one; exit status 0 whether allowed or not (the answer is the
/// output).
pub(crate) async fn explain(
    ctx: &Context,
    request: pb::ExplainAccessRequest,
) -> Result<(), Failure> {
    let asked = format!(
        "{} for {} in {}",
        request.connector, request.project, request.environment
    );
    let answer = ctx
        .registry()?
        .explain_access(request)
        .await
        .map_err(ctx.failed())?
        .into_inner();
    ctx.emit(
        || {
            let mut out = if answer.allowed {
                format!("Allowed: {asked}")
            } else {
                format!("Denied ({}): {asked}", answer.reason)
            };
            for check in &answer.checks {
                let mark = match check.outcome.as_str() {
                    "pass" => "✓",
                    "fail" => "✗",
                    _ => "·",
                };
                out.push_str(&format!("\n  {mark} {:<17} {}", check.name, check.detail));
                if !check.fix.is_empty() {
                    out.push_str(&format!("\n    fix: {}", check.fix));
                }
            }
            out
        },
        || {
            json!({
                "allowed": answer.allowed,
                "reason": answer.reason,
                "checks": answer.checks.iter().map(|c| json!({
                    "name": c.name,
                    "outcome": c.outcome,
                    "detail": c.detail,
                    "fix": c.fix,
                })).collect::<Vec<_>>(),
            })
        },
    );
    Ok(())
}

pub(crate) async fn detach(
    ctx: &Context,
    connector: String,
    project: String,
) -> Result<(), Failure> {
    let link = ctx
        .registry()?
        .detach_project(pb::DetachProjectRequest { connector, project })
        .await
        .map_err(ctx.failed())?
        .into_inner()
        .link
        .unwrap_or_default();
    ctx.emit(
        || {
            format!(
                "Detached {} from {} (it was enabled for {})",
                link.connector_uid,
                link.project_id,
                output::environments(&link.environments)
            )
        },
        || output::link(&link),
    );
    Ok(())
}

pub(crate) async fn links(ctx: &Context, connector: String) -> Result<(), Failure> {
    let links = all_links(ctx, &connector, "").await?;
    ctx.emit_list(
        &links,
        format!("{connector} is not linked to any project."),
        &["PROJECT", "NAME", "ENVIRONMENTS", "UPDATED"],
        |l| {
            vec![
                l.project_id.clone(),
                l.project_name.clone(),
                output::environments(&l.environments),
                output::short_time(l.update_time.as_ref()),
            ]
        },
        output::link,
    );
    Ok(())
}
