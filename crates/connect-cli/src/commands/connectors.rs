//! Connectors: create, list, remove, suspend and resume, and the types Connect knows.

use super::*;

pub(crate) async fn create(
    ctx: &Context,
    uid: String,
    name: Option<String>,
    config: Vec<String>,
    secrets: Vec<String>,
) -> Result<(), Failure> {
    let (config, sealed) = config_and_secrets(config, secrets)?;
    let connector = ctx
        .registry()?
        .create_connector(pb::CreateConnectorRequest {
            uid,
            name: name.unwrap_or_default(),
            config,
            secrets: sealed,
            ..Default::default()
        })
        .await
        .map_err(ctx.failed())?
        .into_inner();
    ctx.emit(
        || {
            let mut text = format!("Created connector {} ({})", connector.uid, connector.id);
            if !connector.secret_names.is_empty() {
                text.push_str(&format!(
                    " with secrets {}",
                    connector.secret_names.join(", ")
                ));
            }
            text
        },
        || output::connector(&connector),
    );
    Ok(())
}

pub(crate) async fn list(
    ctx: &Context,
    project: Option<String>,
    kind: Option<String>,
) -> Result<(), Failure> {
    let mut connectors = all_connectors(ctx).await?;
    connectors.sort_by(|a, b| a.uid.cmp(&b.uid));
    if let Some(kind) = &kind {
        connectors.retain(|c| &c.r#type == kind);
    }
    if let Some(project) = &project {
        let linked: BTreeSet<String> = all_links(ctx, "", project)
            .await?
            .into_iter()
            .map(|l| l.connector_id)
            .collect();
        connectors.retain(|c| linked.contains(&c.id));
    }
    ctx.emit_list(
        &connectors,
        "No connectors.",
        &["UID", "ID", "TYPE", "NAME", "SECRETS", "CREATED"],
        |c| {
            vec![
                c.uid.clone(),
                c.id.clone(),
                c.r#type.clone(),
                c.name.clone(),
                c.secret_names.join(","),
                output::short_time(c.create_time.as_ref()),
            ]
        },
        output::connector,
    );
    Ok(())
}

pub(crate) async fn remove(
    ctx: &Context,
    connector: String,
    disconnect_all: bool,
) -> Result<(), Failure> {
    let links = all_links(ctx, &connector, "").await?;
    if !links.is_empty() && !disconnect_all {
        let projects: Vec<&str> = links.iter().map(|l| l.project_id.as_str()).collect();
        return Err(Failure::new(
            "FailedPreconditionError",
            format!(
                "{connector} is linked to {} project(s): {}",
                links.len(),
                projects.join(", ")
            ),
        )
        .hint(format!(
            "connect remove {connector} --disconnect-all removes it with its links"
        )));
    }
    let removed = ctx
        .registry()?
        .delete_connector(pb::DeleteConnectorRequest {
            connector: connector.clone(),
        })
        .await
        .map_err(ctx.failed())?
        .into_inner();
    let gone = removed.connector.unwrap_or_default();
    ctx.emit(
        || match removed.removed_links {
            0 => format!("Removed {} ({})", gone.uid, gone.id),
            n => format!("Removed {} ({}) and its {n} link(s)", gone.uid, gone.id),
        },
        || {
            json!({
                "connector": output::connector(&gone),
                "removedLinks": removed.removed_links,
            })
        },
    );
    Ok(())
}

pub(crate) async fn suspend(
    ctx: &Context,
    connector: String,
    suspended: bool,
) -> Result<(), Failure> {
    let updated = ctx
        .registry()?
        .update_connector(pb::UpdateConnectorRequest {
            connector,
            suspended,
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["suspended".into()],
            }),
            ..Default::default()
        })
        .await
        .map_err(ctx.failed())?
        .into_inner();
    ctx.emit(
        || {
            if suspended {
                format!(
                    "Suspended {}: it issues nothing until `connect resume {}`",
                    updated.uid, updated.uid
                )
            } else {
                format!("Resumed {}", updated.uid)
            }
        },
        || output::connector(&updated),
    );
    Ok(())
}

/// Keys for a table: required ones as they are, optional ones marked `?`.
fn keys(all: &[String], required: &[String]) -> String {
    all.iter()
        .map(|k| {
            if required.contains(k) {
                k.clone()
            } else {
                format!("{k}?")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) async fn types(ctx: &Context) -> Result<(), Failure> {
    let types = ctx
        .registry()?
        .list_connector_types(pb::ListConnectorTypesRequest {})
        .await
        .map_err(ctx.failed())?
        .into_inner()
        .types;
    ctx.emit_list(
        &types,
        "No connector types.",
        &[
            "TYPE",
            "SUBJECTS",
            "INSTALLATIONS",
            "RESOURCES",
            "REVOCATION",
            "CONFIG",
            "SECRETS",
        ],
        |t| {
            let installations = if t.cross_installation {
                format!("{} (*)", t.installations)
            } else {
                t.installations.clone()
            };
            let revocation = match (t.revocation, t.revocation_config_key.as_str()) {
                (false, _) => "no".to_owned(),
                (true, "") => "yes".to_owned(),
                (true, key) => format!("with {key}"),
            };
            vec![
                t.r#type.clone(),
                t.subjects.join(","),
                installations,
                if t.resources { "yes" } else { "no" }.to_owned(),
                revocation,
                keys(&t.config_keys, &t.required_config_keys),
                keys(&t.secret_keys, &t.required_secret_keys),
            ]
        },
        output::connector_type,
    );
    Ok(())
}
