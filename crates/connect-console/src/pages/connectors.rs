//! Connectors, their Linked Projects, projects and the access check.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, Query},
    response::Response,
};
use connect_proto::registry::v1 as pb;
use futures::future::join_all;
use serde::Deserialize;

use super::{Ctx, Fields, bad_request, path_id, time};
use crate::views::{
    AccessPage, ConfirmPage, ConnectorPage, ConnectorRow, ConnectorsPage, Decision, ENVIRONMENTS,
    EnvBadge, EnvBox, Flash, InstallationRow, KeyField, LinkRow, NewConnectorPage, ProjectLinkRow,
    ProjectPage, ProjectRow, ProjectsPage, TypeChoice, Undo,
};

#[derive(Deserialize, Default)]
pub struct Paging {
    #[serde(default)]
    page_token: String,
}

fn next(token: String) -> Option<String> {
    (!token.is_empty()).then_some(token)
}

/// Every item of a list, page after page of 500 (at most 10 000: a console page shows no more).
async fn every<T, F, Fut>(mut fetch: F) -> Result<Vec<T>, tonic::Status>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let mut items = Vec::new();
    let mut page_token = String::new();
    loop {
        let (page, next) = fetch(page_token).await?;
        items.extend(page);
        if next.is_empty() || items.len() >= 10_000 {
            return Ok(items);
        }
        page_token = next;
    }
}

/// Every link of one connector or one project.
async fn all_links(
    ctx: &Ctx,
    connector: &str,
    project: &str,
) -> Result<Vec<pb::ProjectLink>, tonic::Status> {
    every(|page_token| {
        let mut client = ctx.client.clone();
        let request = pb::ListProjectLinksRequest {
            connector: connector.into(),
            project: project.into(),
            page_size: 500,
            page_token,
            unused_for: None,
        };
        async move {
            let page = client.list_project_links(request).await?.into_inner();
            Ok((page.links, page.next_page_token))
        }
    })
    .await
}

async fn all_projects(ctx: &Ctx) -> Result<Vec<pb::Project>, tonic::Status> {
    every(|page_token| {
        let mut client = ctx.client.clone();
        async move {
            let page = client
                .list_projects(pb::ListProjectsRequest {
                    page_size: 500,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((page.projects, page.next_page_token))
        }
    })
    .await
}

pub(super) async fn all_connectors(ctx: &Ctx) -> Result<Vec<pb::Connector>, tonic::Status> {
    every(|page_token| {
        let mut client = ctx.client.clone();
        async move {
            let page = client
                .list_connectors(pb::ListConnectorsRequest {
                    page_size: 500,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((page.connectors, page.next_page_token))
        }
    })
    .await
}

pub async fn list(ctx: Ctx, Query(paging): Query<Paging>) -> Response {
    let page = match ctx
        .client
        .clone()
        .list_connectors(pb::ListConnectorsRequest {
            page_size: 50,
            page_token: paging.page_token,
        })
        .await
    {
        Ok(page) => page.into_inner(),
        Err(status) => return ctx.failed(status).await,
    };
    let links = join_all(page.connectors.iter().map(|c| all_links(&ctx, &c.id, ""))).await;
    let mut rows = Vec::new();
    for (c, links) in page.connectors.into_iter().zip(links) {
        let links = match links {
            Ok(links) => links,
            Err(status) => return ctx.failed(status).await,
        };
        let badges = ENVIRONMENTS
            .iter()
            .map(|env| EnvBadge {
                name: env,
                projects: links
                    .iter()
                    .filter(|l| l.environments.iter().any(|e| e == env))
                    .count(),
            })
            .filter(|b| b.projects > 0)
            .collect();
        rows.push(ConnectorRow {
            id: c.id,
            uid: c.uid,
            name: c.name,
            kind: c.r#type,
            suspended: c.suspended,
            links: links.len(),
            badges,
        });
    }
    ctx.page(&ConnectorsPage {
        l: ctx.layout("Connectors", "connectors"),
        rows,
        next_page: next(page.next_page_token),
    })
}

#[derive(Deserialize, Default)]
pub struct Chosen {
    #[serde(default, rename = "type")]
    kind: String,
}

async fn new_connector_page(
    ctx: &Ctx,
    chosen: &str,
    entered: Option<&Fields>,
    error: Option<(String, Vec<(String, String)>)>,
) -> Response {
    let types = match ctx
        .client
        .clone()
        .list_connector_types(pb::ListConnectorTypesRequest::default())
        .await
    {
        Ok(types) => types.into_inner().types,
        Err(status) => return ctx.failed(status).await,
    };
    let kind = types.iter().find(|t| t.r#type == chosen);
    let fields = |keys: &[String], required: &[String], prefix: &str| -> Vec<KeyField> {
        let Some(kind) = kind else { return Vec::new() };
        keys.iter()
            .map(|key| KeyField {
                key: key.clone(),
                description: kind.key_descriptions.get(key).cloned().unwrap_or_default(),
                required: required.contains(key),
                // Config is shown again after an error; secrets never are.
                value: if prefix == "config." {
                    entered
                        .map(|f| f.get(&format!("{prefix}{key}")).to_owned())
                        .unwrap_or_default()
                } else {
                    String::new()
                },
            })
            .collect()
    };
    let config = kind
        .map(|k| fields(&k.config_keys, &k.required_config_keys, "config."))
        .unwrap_or_default();
    let secrets = kind
        .map(|k| fields(&k.secret_keys, &k.required_secret_keys, "secret."))
        .unwrap_or_default();
    let (error, violations) = match error {
        Some((e, v)) => (Some(e), v),
        None => (None, Vec::new()),
    };
    ctx.page(&NewConnectorPage {
        l: ctx.layout("New connector", "connectors"),
        types: types
            .iter()
            .map(|t| TypeChoice {
                name: t.r#type.clone(),
                description: t.description.clone(),
            })
            .collect(),
        chosen: kind.map(|k| k.r#type.clone()),
        name: entered
            .map(|f| f.get("name").to_owned())
            .unwrap_or_default(),
        display_name: entered
            .map(|f| f.get("display_name").to_owned())
            .unwrap_or_default(),
        config,
        secrets,
        error,
        fields: violations,
    })
}

pub async fn new_form(ctx: Ctx, Query(chosen): Query<Chosen>) -> Response {
    new_connector_page(&ctx, &chosen.kind, None, None).await
}

pub async fn create(ctx: Ctx, fields: Fields) -> Response {
    let kind = fields.get("type").to_owned();
    let name = fields.get("name").trim().to_owned();
    let config = fields
        .with_prefix("config.")
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect();
    let secrets = fields
        .with_prefix("secret.")
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let request = pb::CreateConnectorRequest {
        uid: format!("{kind}/{name}"),
        r#type: kind.clone(),
        name: match fields.get("display_name").trim() {
            "" => name.clone(),
            display => display.to_owned(),
        },
        config,
        secrets,
    };
    match ctx.client.clone().create_connector(request).await {
        Ok(created) => {
            let created = created.into_inner();
            ctx.ok(
                &format!("/connectors/{}", created.id),
                format!("Created {}. Link projects to it below.", created.uid),
            )
        }
        Err(status) => {
            let refusal = crate::registry::Refusal::from(status);
            if refusal.code == tonic::Code::Unauthenticated {
                return ctx.refused("/", tonic::Status::unauthenticated("")).await;
            }
            new_connector_page(
                &ctx,
                &kind,
                Some(&fields),
                Some((
                    format!("{}: {}", refusal.reason, refusal.message),
                    refusal.fields,
                )),
            )
            .await
        }
    }
}

fn env_boxes(enabled: &[String]) -> Vec<EnvBox> {
    ENVIRONMENTS
        .iter()
        .map(|name| EnvBox {
            name,
            checked: enabled.iter().any(|e| e == name),
        })
        .collect()
}

pub async fn show(ctx: Ctx, Path(id): Path<String>) -> Response {
    let Some(id) = path_id(&id) else {
        return bad_request("Not a connector id.");
    };
    let connector = match ctx
        .client
        .clone()
        .get_connector(pb::GetConnectorRequest {
            connector: id.into(),
        })
        .await
    {
        Ok(c) => c.into_inner(),
        Err(status) => return ctx.failed(status).await,
    };
    let mut installations_client = ctx.client.clone();
    let installations = installations_client.list_installations(pb::ListInstallationsRequest {
        connector: connector.id.clone(),
        page_size: 500,
        page_token: String::new(),
    });
    let (installations, links, projects) = futures::join!(
        installations,
        all_links(&ctx, &connector.id, ""),
        all_projects(&ctx)
    );
    let (installations, links, projects) = match (installations, links, projects) {
        (Ok(i), Ok(l), Ok(p)) => (i.into_inner().installations, l, p),
        (Err(s), _, _) | (_, Err(s), _) | (_, _, Err(s)) => return ctx.failed(s).await,
    };
    let linked: Vec<&str> = links.iter().map(|l| l.project_id.as_str()).collect();
    let config: BTreeMap<_, _> = connector.config.clone().into_iter().collect();
    ctx.page(&ConnectorPage {
        l: ctx.layout(connector.uid.clone(), "connectors"),
        id: connector.id.clone(),
        uid: connector.uid.clone(),
        name: connector.name.clone(),
        kind: connector.r#type.clone(),
        suspended: connector.suspended,
        created: time(connector.create_time.as_ref()),
        config: config.into_iter().collect(),
        secret_names: connector.secret_names.clone(),
        installations: installations
            .into_iter()
            .map(|i| InstallationRow {
                id: i.installation_id,
                display_name: i.display_name,
                is_default: i.is_default,
                secret_names: i.secret_names.join(", "),
            })
            .collect(),
        links: links
            .iter()
            .map(|l| LinkRow {
                project_id: l.project_id.clone(),
                project_name: l.project_name.clone(),
                envs: env_boxes(&l.environments),
            })
            .collect(),
        addable: projects
            .into_iter()
            .filter(|p| !linked.contains(&p.id.as_str()))
            .map(|p| (p.id, p.name))
            .collect(),
        new_envs: env_boxes(&[]),
    })
}

/// Attach, or Save a row: the link's environments become exactly the ticked ones.
pub async fn attach(ctx: Ctx, Path(id): Path<String>, fields: Fields) -> Response {
    let Some(id) = path_id(&id) else {
        return bad_request("Not a connector id.");
    };
    let back = format!("/connectors/{id}");
    let project = fields.get("project").to_owned();
    let environments = fields.all("environments");
    if environments.is_empty() {
        return ctx.redirect(
            &back,
            Flash {
                ok: false,
                text: format!(
                    "Tick at least one environment for {project}, or Detach it to remove its access."
                ),
                undo: None,
            },
        );
    }
    // Saving environments keeps the rest of a link's terms: its end, ceilings and quota (attach
    // replaces everything it is sent, and the page sends environments only).
    let mut client = ctx.client.clone();
    let existing = match client
        .get_project_link(pb::GetProjectLinkRequest {
            connector: id.into(),
            project: project.clone(),
        })
        .await
    {
        Ok(link) => Some(link.into_inner()),
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => return ctx.refused(&back, status).await,
    };
    let existing = existing.unwrap_or_default();
    // The page ticks built-in environments only; the link's custom ones stay.
    let mut environments = environments;
    environments.extend(
        existing
            .environments
            .iter()
            .filter(|e| connect_types::is_environment_id(e))
            .cloned(),
    );
    let kept_expiry = existing
        .expire_time
        .filter(|t| t.seconds > chrono::Utc::now().timestamp());
    match client
        .attach_project(pb::AttachProjectRequest {
            connector: id.into(),
            project: project.clone(),
            environments,
            expire_time: kept_expiry,
            allowed_scopes: existing.allowed_scopes,
            allowed_resources: existing.allowed_resources,
            allowed_installations: existing.allowed_installations,
            allowed_subjects: existing.allowed_subjects,
            max_issuances_per_hour: existing.max_issuances_per_hour,
        })
        .await
    {
        Ok(link) => {
            let link = link.into_inner();
            ctx.ok(
                &back,
                format!(
                    "Saved: {} may use {} in {}.",
                    link.project_name,
                    link.connector_uid,
                    link.environments.join(", ")
                ),
            )
        }
        Err(status) => ctx.refused(&back, status).await,
    }
}

/// Detach acts at once: its consequence is stated beside the button and an Undo follows.
pub async fn detach(ctx: Ctx, Path((id, project)): Path<(String, String)>) -> Response {
    let (Some(id), Some(project)) = (path_id(&id), path_id(&project)) else {
        return bad_request("Not a connector or project id.");
    };
    let back = format!("/connectors/{id}");
    match ctx
        .client
        .clone()
        .detach_project(pb::DetachProjectRequest {
            connector: id.into(),
            project: project.into(),
        })
        .await
    {
        Ok(detached) => {
            let link = detached.into_inner().link.unwrap_or_default();
            ctx.redirect(
                &back,
                Flash {
                    ok: true,
                    text: format!(
                        "Detached {}: its deployments no longer get {} in any environment.",
                        link.project_name, link.connector_uid
                    ),
                    undo: Some(Undo {
                        connector_id: id.into(),
                        project_id: link.project_id,
                        environments: link.environments,
                    }),
                },
            )
        }
        Err(status) => ctx.refused(&back, status).await,
    }
}

pub async fn delete(ctx: Ctx, Path(id): Path<String>, fields: Fields) -> Response {
    let Some(id) = path_id(&id) else {
        return bad_request("Not a connector id.");
    };
    let back = format!("/connectors/{id}");
    if !fields.confirmed() {
        let mut client = ctx.client.clone();
        let (connector, links) = futures::join!(
            client.get_connector(pb::GetConnectorRequest {
                connector: id.into()
            }),
            all_links(&ctx, id, "")
        );
        let (connector, links) = match (connector, links) {
            (Ok(c), Ok(l)) => (c.into_inner(), l),
            (Err(s), _) | (_, Err(s)) => return ctx.failed(s).await,
        };
        return ctx.page(&ConfirmPage {
            l: ctx.layout("Delete connector", "connectors"),
            heading: format!("Delete {}?", connector.uid),
            consequence: format!(
                "Its secrets are destroyed, its {} project link(s) removed, and every deployment \
                 that uses it stops getting tokens at once. This cannot be undone.",
                links.len()
            ),
            action: format!("/connectors/{id}/delete"),
            button: "Delete connector".into(),
            back,
            fields: Vec::new(),
        });
    }
    match ctx
        .client
        .clone()
        .delete_connector(pb::DeleteConnectorRequest {
            connector: id.into(),
        })
        .await
    {
        Ok(deleted) => {
            let deleted = deleted.into_inner();
            let uid = deleted.connector.map(|c| c.uid).unwrap_or_default();
            ctx.ok(
                "/",
                format!("Deleted {uid} and its {} link(s).", deleted.removed_links),
            )
        }
        Err(status) => ctx.refused(&back, status).await,
    }
}

pub async fn projects(ctx: Ctx, Query(paging): Query<Paging>) -> Response {
    let page = match ctx
        .client
        .clone()
        .list_projects(pb::ListProjectsRequest {
            page_size: 50,
            page_token: paging.page_token,
        })
        .await
    {
        Ok(page) => page.into_inner(),
        Err(status) => return ctx.failed(status).await,
    };
    ctx.page(&ProjectsPage {
        l: ctx.layout("Projects", "projects"),
        rows: page
            .projects
            .into_iter()
            .map(|p| ProjectRow {
                created: time(p.create_time.as_ref()),
                id: p.id,
                name: p.name,
            })
            .collect(),
        next_page: next(page.next_page_token),
    })
}

pub async fn create_project(ctx: Ctx, fields: Fields) -> Response {
    match ctx
        .client
        .clone()
        .create_project(pb::CreateProjectRequest {
            id: fields.get("id").trim().into(),
            name: fields.get("name").trim().into(),
        })
        .await
    {
        Ok(p) => {
            let p = p.into_inner();
            ctx.ok("/projects", format!("Added project {} ({}).", p.name, p.id))
        }
        Err(status) => ctx.refused("/projects", status).await,
    }
}

pub async fn project(ctx: Ctx, Path(id): Path<String>) -> Response {
    let Some(id) = path_id(&id) else {
        return bad_request("Not a project id.");
    };
    let project = match ctx
        .client
        .clone()
        .get_project(pb::GetProjectRequest { project: id.into() })
        .await
    {
        Ok(p) => p.into_inner(),
        Err(status) => return ctx.failed(status).await,
    };
    let links = match all_links(&ctx, "", &project.id).await {
        Ok(links) => links,
        Err(status) => return ctx.failed(status).await,
    };
    ctx.page(&ProjectPage {
        l: ctx.layout(project.name.clone(), "projects"),
        id: project.id,
        name: project.name,
        links: links
            .into_iter()
            .map(|l| ProjectLinkRow {
                connector_id: l.connector_id,
                connector_uid: l.connector_uid,
                environments: l.environments.join(", "),
            })
            .collect(),
    })
}

pub async fn disconnect(ctx: Ctx, Path(id): Path<String>, fields: Fields) -> Response {
    let Some(id) = path_id(&id) else {
        return bad_request("Not a project id.");
    };
    let back = format!("/projects/{id}");
    let connector = fields.get("connector").to_owned();
    match ctx
        .client
        .clone()
        .detach_project(pb::DetachProjectRequest {
            connector: connector.clone(),
            project: id.into(),
        })
        .await
    {
        Ok(detached) => {
            let link = detached.into_inner().link.unwrap_or_default();
            ctx.redirect(
                &back,
                Flash {
                    ok: true,
                    text: format!(
                        "Disconnected {} from {}: its deployments no longer get its tokens.",
                        link.connector_uid, link.project_name
                    ),
                    undo: Some(Undo {
                        connector_id: link.connector_id,
                        project_id: link.project_id,
                        environments: link.environments,
                    }),
                },
            )
        }
        Err(status) => ctx.refused(&back, status).await,
    }
}

#[derive(Deserialize, Default)]
pub struct AccessQuery {
    #[serde(default)]
    project: String,
    #[serde(default)]
    environment: String,
    #[serde(default)]
    connector: String,
}

/// The access check: the registry's `ExplainAccess`, the same decision the broker gets, with a
/// one-click fix when the fix is an attach.
async fn decide(ctx: &Ctx, q: &AccessQuery) -> Result<Decision, tonic::Status> {
    let mut client = ctx.client.clone();
    let answer = client
        .explain_access(pb::ExplainAccessRequest {
            project: q.project.clone(),
            environment: q.environment.clone(),
            connector: q.connector.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let failed = answer.checks.iter().find(|c| c.outcome == "fail");
    // Attaching fixes a missing link (for the environment asked) or a missing environment (the
    // link's own, plus the one asked).
    let fix_environments = match failed.map(|c| c.name.as_str()) {
        Some("link") => vec![q.environment.clone()],
        Some("environment") => {
            let link = client
                .get_project_link(pb::GetProjectLinkRequest {
                    connector: q.connector.clone(),
                    project: q.project.clone(),
                })
                .await?
                .into_inner();
            let mut envs = link.environments;
            envs.push(q.environment.clone());
            envs
        }
        _ => Vec::new(),
    };
    let why = match failed {
        Some(check) => check.detail.clone(),
        None => answer
            .checks
            .iter()
            .find(|c| c.name == "environment")
            .map(|c| c.detail.clone())
            .unwrap_or_default(),
    };
    Ok(Decision {
        allowed: answer.allowed,
        reason: connect_types::Reason::parse(&answer.reason)
            .map_or(answer.reason.clone(), |r| r.error_name().to_owned()),
        why,
        fix: failed.map(|c| c.fix.clone()).unwrap_or_default(),
        fix_environments,
        connector_id: q.connector.clone(),
        project_id: q.project.clone(),
        checks: answer
            .checks
            .into_iter()
            .map(|c| (c.name, c.outcome, c.detail))
            .collect(),
    })
}

pub async fn access(ctx: Ctx, Query(q): Query<AccessQuery>) -> Response {
    let (projects, connectors) = futures::join!(all_projects(&ctx), all_connectors(&ctx));
    let (projects, connectors) = match (projects, connectors) {
        (Ok(p), Ok(c)) => (p, c),
        (Err(s), _) | (_, Err(s)) => return ctx.failed(s).await,
    };
    let asked = !q.project.is_empty() && !q.connector.is_empty() && !q.environment.is_empty();
    if asked && !ENVIRONMENTS.contains(&q.environment.as_str()) {
        return bad_request("Not an environment.");
    }
    let decision = if asked {
        match decide(&ctx, &q).await {
            Ok(d) => Some(d),
            Err(status) => return ctx.failed(status).await,
        }
    } else {
        None
    };
    ctx.page(&AccessPage {
        l: ctx.layout("Access check", "access"),
        projects: projects.into_iter().map(|p| (p.id, p.name)).collect(),
        connectors: connectors.into_iter().map(|c| (c.id, c.uid)).collect(),
        project: q.project,
        environment: q.environment,
        connector: q.connector,
        environments: ENVIRONMENTS,
        decision,
    })
}
