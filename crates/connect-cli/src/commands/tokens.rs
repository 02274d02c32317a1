//! Credentials: a token from the broker, revoking what a connector issued, the issuance ledger and users' grants.

use super::*;

/// The OIDC token's `project_id` and `environment`, unverified, for hints.
fn caller_of(token: &secrecy::SecretString) -> Caller {
    let claims = connect_client::oidc::unverified_claims(token).unwrap_or_default();
    let claim = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    Caller {
        project_id: claim("project_id"),
        environment: claim("environment"),
        ..Caller::default()
    }
}

pub(crate) async fn token(
    ctx: &Context,
    broker: &str,
    ca: Option<Vec<u8>>,
    connector: String,
    subject: String,
    params: connect_client::TokenParams,
) -> Result<(), Failure> {
    let subject = match subject.as_str() {
        "app" => connect_client::Subject::App,
        other => match other.strip_prefix("user:") {
            Some(id) if !id.is_empty() => connect_client::Subject::User(id.to_owned()),
            _ => {
                return Err(Failure::usage(format!(
                    "--subject must be 'app' or 'user:ID', not '{other}'"
                )));
            }
        },
    };
    let source = match std::env::var_os("CONNECT_OIDC_TOKEN_FILE").filter(|v| !v.is_empty()) {
        Some(file) => connect_client::OidcToken::file(file),
        None => connect_client::OidcToken::Environment,
    };
    let mut caller = source.current().map(|t| caller_of(&t)).unwrap_or_default();
    caller.broker_url = broker.to_owned();
    let mut builder = connect_client::ClientBuilder::new(broker)
        .oidc_token(source)
        .cache_size(0);
    if let Some(pem) = ca {
        builder = builder.ca_pem(pem);
    }
    let client = builder
        .build()
        .map_err(|e| error::from_client(&e, &connector, &caller))?;
    let params = connect_client::TokenParams { subject, ..params };
    let token = match client.get_token(&connector, &params).await {
        Ok(token) => token,
        Err(e) => {
            if matches!(e, connect_client::Error::ClientNotEnabledForEnvironment(_)) {
                caller.link_environments = link_environments(ctx, &connector, &caller).await;
            }
            return Err(error::from_client(&e, &connector, &caller));
        }
    };
    ctx.emit(
        || {
            use secrecy::ExposeSecret;
            token.token.expose_secret().to_owned()
        },
        || {
            use secrecy::ExposeSecret;
            json!({
                "token": token.token.expose_secret(),
                "tokenId": token.token_id,
                "expiresAt": token.expires_at.map(|at| {
                    chrono::DateTime::<chrono::Utc>::from(at)
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                }),
                "connector": {
                    "id": token.connector_id,
                    "uid": token.connector_uid,
                    "type": token.connector_type,
                },
                "installationId": token.installation_id.clone().unwrap_or_default(),
                "scopes": token.scopes,
                "credential": token
                    .credential
                    .iter()
                    .map(|(name, value)| (name.clone(), value.expose_secret().to_owned()))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            })
        },
    );
    Ok(())
}

/// The environments the caller's link has, when an API key lets the registry be read.
async fn link_environments(ctx: &Context, connector: &str, caller: &Caller) -> Option<Vec<String>> {
    let project = caller.project_id.clone()?;
    let link = ctx
        .registry
        .clone()?
        .get_project_link(pb::GetProjectLinkRequest {
            connector: connector.to_owned(),
            project,
        })
        .await
        .ok()?
        .into_inner();
    Some(link.environments)
}

pub(crate) async fn revoke_tokens(
    ctx: &Context,
    connector: String,
    subject: Option<String>,
    installation_id: Option<String>,
) -> Result<(), Failure> {
    let answer = ctx
        .registry()?
        .revoke_tokens(pb::RevokeTokensRequest {
            connector: connector.clone(),
            subject: subject.unwrap_or_default(),
            installation_id: installation_id.unwrap_or_default(),
        })
        .await
        .map_err(ctx.failed())?
        .into_inner();
    ctx.emit(
        || format!("{connector}: {}", output::revocation_summary(&answer)),
        || output::revocation(&answer),
    );
    Ok(())
}

pub(crate) async fn issuances(
    ctx: &Context,
    connector: Option<String>,
    project: Option<String>,
    environment: Option<String>,
    limit: u32,
) -> Result<(), Failure> {
    let (connector, project, environment) = (
        connector.unwrap_or_default(),
        project.unwrap_or_default(),
        environment.unwrap_or_default(),
    );
    let found = collect(limit as usize, |page_size, page_token| {
        let request = pb::ListIssuancesRequest {
            connector: connector.clone(),
            project: project.clone(),
            environment: environment.clone(),
            page_size,
            page_token,
        };
        async move {
            let page = ctx
                .registry()?
                .list_issuances(request)
                .await
                .map_err(ctx.failed())?
                .into_inner();
            Ok((page.issuances, page.next_page_token))
        }
    })
    .await?;
    ctx.emit_list(
        &found,
        "No issuances.",
        &[
            "TOKEN ID",
            "CONNECTOR",
            "PROJECT",
            "ENVIRONMENT",
            "SUBJECT",
            "SCOPES",
            "ISSUED",
            "EXPIRES",
            "",
        ],
        |i| {
            vec![
                i.token_id.clone(),
                i.connector_uid.clone(),
                i.project_id.clone(),
                i.environment.clone(),
                i.subject.clone(),
                i.scopes.join(","),
                output::short_time(i.issue_time.as_ref()),
                match &i.expire_time {
                    Some(_) => output::short_time(i.expire_time.as_ref()),
                    None => "never".to_owned(),
                },
                match (i.revoked, i.provider_revocation.as_str()) {
                    (false, _) => String::new(),
                    (true, "") => "revoked".to_owned(),
                    (true, provider) => format!("revoked (provider: {provider})"),
                },
            ]
        },
        output::issuance,
    );
    Ok(())
}

pub(crate) async fn grants(
    ctx: &Context,
    connector: Option<String>,
    project: Option<String>,
    user: Option<String>,
    environment: Option<String>,
    limit: u32,
) -> Result<(), Failure> {
    let (connector, project, user_id, environment) = (
        connector.unwrap_or_default(),
        project.unwrap_or_default(),
        user.unwrap_or_default(),
        environment.unwrap_or_default(),
    );
    let found = collect(limit as usize, |page_size, page_token| {
        let request = pb::ListGrantsRequest {
            connector: connector.clone(),
            project: project.clone(),
            user_id: user_id.clone(),
            environment: environment.clone(),
            page_size,
            page_token,
        };
        async move {
            let page = ctx
                .registry()?
                .list_grants(request)
                .await
                .map_err(ctx.failed())?
                .into_inner();
            Ok((page.grants, page.next_page_token))
        }
    })
    .await?;
    ctx.emit_list(
        &found,
        "No user grants.",
        &[
            "CONNECTOR",
            "PROJECT",
            "USER",
            "PROVIDER ACCOUNT",
            "ENVIRONMENT",
            "INSTALLATION",
            "STATE",
            "EXPIRES",
            "SCOPES",
        ],
        |g| {
            vec![
                g.connector_uid.clone(),
                if g.project.is_empty() {
                    "(team)".to_owned()
                } else {
                    g.project.clone()
                },
                g.user_id.clone(),
                if g.provider_subject.is_empty() {
                    "-".to_owned()
                } else {
                    g.provider_subject.clone()
                },
                g.environment.clone(),
                g.installation_id.clone(),
                g.state.clone(),
                output::short_time(g.expire_time.as_ref()),
                g.scopes.join(","),
            ]
        },
        output::grant,
    );
    Ok(())
}
