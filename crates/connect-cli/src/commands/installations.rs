//! A connector's installations: tenants inside it, such as GitHub App installations.

use super::*;

/// An installation as `installations add` takes it.
pub(crate) struct NewInstallation {
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    pub(crate) config: Vec<String>,
    pub(crate) secrets: Vec<String>,
    pub(crate) default: bool,
}

pub(crate) async fn add_installation(
    ctx: &Context,
    connector: String,
    new: NewInstallation,
) -> Result<(), Failure> {
    let (config, secrets) = config_and_secrets(new.config, new.secrets)?;
    let mut registry = ctx.registry()?;
    let mut created = registry
        .create_installation(pb::CreateInstallationRequest {
            connector: connector.clone(),
            installation_id: new.id.clone(),
            display_name: new.name.unwrap_or_default(),
            config,
            secrets,
        })
        .await
        .map_err(ctx.failed())?
        .into_inner();
    if new.default {
        registry
            .update_connector(pb::UpdateConnectorRequest {
                connector: connector.clone(),
                default_installation_id: new.id,
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["default_installation_id".into()],
                }),
                ..Default::default()
            })
            .await
            .map_err(ctx.failed())?;
        created.is_default = true;
    }
    ctx.emit(
        || {
            let mut text = format!(
                "Added installation {} to {}",
                created.installation_id, created.connector_uid
            );
            if created.is_default {
                text.push_str(" as its default");
            }
            text
        },
        || output::installation(&created),
    );
    Ok(())
}

pub(crate) async fn list_installations(ctx: &Context, connector: String) -> Result<(), Failure> {
    let found = collect(usize::MAX, |page_size, page_token| {
        let request = pb::ListInstallationsRequest {
            connector: connector.clone(),
            page_size,
            page_token,
        };
        async move {
            let page = ctx
                .registry()?
                .list_installations(request)
                .await
                .map_err(ctx.failed())?
                .into_inner();
            Ok((page.installations, page.next_page_token))
        }
    })
    .await?;
    ctx.emit_list(
        &found,
        format!("{connector} has no installations."),
        &["INSTALLATION", "NAME", "SECRETS", "CREATED", ""],
        |i| {
            vec![
                i.installation_id.clone(),
                i.display_name.clone(),
                i.secret_names.join(","),
                output::short_time(i.create_time.as_ref()),
                if i.is_default { "default" } else { "" }.to_owned(),
            ]
        },
        output::installation,
    );
    Ok(())
}

pub(crate) async fn remove_installation(
    ctx: &Context,
    connector: String,
    installation_id: String,
) -> Result<(), Failure> {
    let gone = ctx
        .registry()?
        .delete_installation(pb::DeleteInstallationRequest {
            connector,
            installation_id,
        })
        .await
        .map_err(ctx.failed())?
        .into_inner();
    let installation = gone.installation.unwrap_or_default();
    let revocation = gone.revocation.unwrap_or_default();
    ctx.emit(
        || {
            format!(
                "Removed installation {} of {}; {}",
                installation.installation_id,
                installation.connector_uid,
                output::revocation_summary(&revocation)
            )
        },
        || {
            json!({
                "installation": output::installation(&installation),
                "revocation": output::revocation(&revocation),
            })
        },
    );
    Ok(())
}
