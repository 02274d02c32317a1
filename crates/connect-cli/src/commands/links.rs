//! Project links: attach (which replaces the environment set), detach, and a connector's links.

use super::*;

pub(crate) async fn attach(
    ctx: &Context,
    connector: String,
    project: String,
    environments: Vec<String>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    limits: crate::cli::LinkLimits,
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
    let before = match ctx
        .registry()?
        .get_project_link(pb::GetProjectLinkRequest {
            connector: connector.clone(),
            project: project.clone(),
        })
        .await
    {
        Ok(link) => Some(link.into_inner()),
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => return Err(ctx.failed()(status)),
    };
    let trimmed = |values: Vec<String>| -> Vec<String> {
        values
            .into_iter()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect()
    };
    let link = ctx
        .registry()?
        .attach_project(pb::AttachProjectRequest {
            connector: connector.clone(),
            project: project.clone(),
            environments: wanted.iter().cloned().collect(),
            expire_time: expires_at.map(|t| prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: 0,
            }),
            allowed_scopes: trimmed(limits.scopes),
            allowed_resources: trimmed(limits.resources),
            allowed_installations: trimmed(limits.installations),
            allowed_subjects: trimmed(limits.subjects),
            max_issuances_per_hour: limits.max_issuances_per_hour,
        })
        .await
        .map_err(ctx.failed())?
        .into_inner();
    // The registry writes nothing when the terms are the link's already.
    let unchanged = before
        .as_ref()
        .is_some_and(|b| b.update_time == link.update_time);
    let removed: Vec<String> = before
        .map(|b| {
            b.environments
                .into_iter()
                .filter(|e| !wanted.contains(e))
                .collect()
        })
        .unwrap_or_default();
    let until = output::time(link.expire_time.as_ref())
        .as_str()
        .map(|t| format!(" until {t}"))
        .unwrap_or_default();
    let limited = output::limits(&link)
        .map(|l| format!(" ({l})"))
        .unwrap_or_default();
    ctx.emit(
        || {
            let envs = format!(
                "{}{until}{limited}",
                output::environments(&link.environments)
            );
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

pub(crate) async fn links(
    ctx: &Context,
    connector: Option<String>,
    unused_for: Option<std::time::Duration>,
) -> Result<(), Failure> {
    let links = links_unused_for(ctx, connector.as_deref().unwrap_or(""), "", unused_for).await?;
    let empty = match (&connector, unused_for) {
        (Some(c), None) => format!("{c} is not linked to any project."),
        (None, None) => "The team has no links.".to_owned(),
        (c, Some(d)) => format!(
            "No link{} has gone unused for {}.",
            c.as_ref().map(|c| format!(" of {c}")).unwrap_or_default(),
            humantime::format_duration(d)
        ),
    };
    // One connector's links as before; every link of the team names each one's connector.
    let every = connector.is_none();
    let mut header = vec![
        "PROJECT",
        "NAME",
        "ENVIRONMENTS",
        "UPDATED",
        "LAST ISSUED",
        "LIMITS",
    ];
    if every {
        header.insert(0, "CONNECTOR");
    }
    ctx.emit_list(
        &links,
        empty,
        &header,
        |l| {
            let mut row = vec![
                l.project_id.clone(),
                l.project_name.clone(),
                output::environments(&l.environments),
                output::short_time(l.update_time.as_ref()),
                match &l.last_issue_time {
                    Some(t) => output::short_time(Some(t)),
                    None => "never".to_owned(),
                },
                output::limits(l).unwrap_or_else(|| "-".to_owned()),
            ];
            if every {
                row.insert(0, l.connector_uid.clone());
            }
            row
        },
        output::link,
    );
    Ok(())
}
