//! `connect`: the Connect command line. See `connect --help`.

mod cli;
mod error;
mod output;

use std::{
    collections::{BTreeSet, HashMap},
    io::Read,
    process::ExitCode,
};

use clap::{CommandFactory, Parser};
use connect_proto::registry::v1::{self as pb, link_registry_client::LinkRegistryClient};
use serde_json::{Value, json};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use crate::{
    cli::{Cli, Command, Format, InstallationsCommand, ProjectsCommand},
    error::{Caller, Failure},
};

const ALL_ENVIRONMENTS: [&str; 3] = ["production", "preview", "development"];
const PAGE: i32 = 500;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("InternalError: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{}", failure.message);
            if let Some(hint) = failure.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Adds the API key to every registry call.
#[derive(Clone)]
struct ApiKey(Option<MetadataValue<Ascii>>);

impl Interceptor for ApiKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            request.metadata_mut().insert("authorization", key.clone());
        }
        Ok(request)
    }
}

type Registry = LinkRegistryClient<InterceptedService<Channel, ApiKey>>;

/// What every command has at hand.
struct Context {
    cli_registry: String,
    format: Format,
    registry: Option<Registry>,
}

impl Context {
    /// The registry client; the commands that use it are the ones given one.
    fn registry(&self) -> Result<Registry, Failure> {
        self.registry.clone().ok_or_else(|| {
            Failure::new(
                "InternalError",
                "this command has no registry client: please report it",
            )
        })
    }

    fn failed(&self) -> impl Fn(tonic::Status) -> Failure + '_ {
        |status| Failure::from_registry(&status, &self.cli_registry)
    }

    /// Prints a list as a table (or `empty` when there is nothing), or as a JSON array.
    fn emit_list<T>(
        &self,
        items: &[T],
        empty: impl std::fmt::Display,
        header: &[&str],
        row: impl Fn(&T) -> Vec<String>,
        json: impl Fn(&T) -> Value,
    ) {
        self.emit(
            || {
                if items.is_empty() {
                    return empty.to_string();
                }
                let rows: Vec<Vec<String>> = items.iter().map(row).collect();
                output::table(header, &rows)
            },
            || Value::Array(items.iter().map(json).collect()),
        );
    }

    /// Prints `text` or `json`, as asked.
    fn emit(&self, text: impl FnOnce() -> String, json: impl FnOnce() -> Value) {
        match self.format {
            Format::Text => println!("{}", text()),
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&json()).unwrap_or_default()
            ),
        }
    }
}

fn endpoint(url: &str, ca: Option<&[u8]>, what: &str) -> Result<Endpoint, Failure> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| Failure::new("InvalidArgumentError", format!("{what} URL '{url}': {e}")))?;
    if url.starts_with("https://") {
        let tls = match ca {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| Failure::new("InvalidArgumentError", format!("{what} TLS: {e}")))?;
    }
    Ok(endpoint)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let ca = match &cli.ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            Failure::new(
                "InvalidArgumentError",
                format!("cannot read --ca {}: {e}", path.display()),
            )
        })?),
        None => None,
    };
    let needs_registry = !matches!(
        cli.command,
        Command::Token { .. } | Command::Completions { .. }
    );
    let registry = if needs_registry {
        let key = match cli.api_key.as_deref().filter(|k| !k.is_empty()) {
            Some(key) => {
                let mut value: MetadataValue<Ascii> =
                    format!("Bearer {key}").parse().map_err(|_| {
                        Failure::new("InvalidKeyError", "the API key is not printable ASCII")
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => {
                return Err(Failure::new("InvalidKeyError", "no API key").hint(
                    "pass a team's API key with --api-key or CONNECT_API_KEY \
                     (link-registry keys create --team TEAM --role admin)",
                ));
            }
        };
        let channel = endpoint(&cli.registry, ca.as_deref(), "registry")?.connect_lazy();
        Some(LinkRegistryClient::with_interceptor(channel, ApiKey(key)))
    } else {
        None
    };
    let ctx = Context {
        cli_registry: cli.registry.clone(),
        format: cli.format,
        registry,
    };
    match cli.command {
        Command::Create {
            connector,
            name,
            config,
            secrets,
        } => create(&ctx, connector, name, config, secrets).await,
        Command::List { project, kind } => list(&ctx, project, kind).await,
        Command::Projects(ProjectsCommand::Create { id, name }) => {
            create_project(&ctx, id, name).await
        }
        Command::Projects(ProjectsCommand::List) => list_projects(&ctx).await,
        Command::Attach {
            connector,
            project,
            environments,
        } => attach(&ctx, connector, project, environments).await,
        Command::Detach { connector, project } => detach(&ctx, connector, project).await,
        Command::Links { connector } => links(&ctx, connector).await,
        Command::Remove {
            connector,
            disconnect_all,
        } => remove(&ctx, connector, disconnect_all).await,
        Command::Token {
            connector,
            subject,
            installation_id,
            scopes,
            resources,
        } => {
            let params = connect_client::TokenParams {
                installation_id,
                scopes,
                resources,
                ..Default::default()
            };
            token(&ctx, &cli.broker, ca, connector, subject, params).await
        }
        Command::Installations(InstallationsCommand::Add {
            connector,
            installation_id,
            name,
            config,
            secrets,
            default,
        }) => {
            let new = NewInstallation {
                id: installation_id,
                name,
                config,
                secrets,
                default,
            };
            add_installation(&ctx, connector, new).await
        }
        Command::Installations(InstallationsCommand::List { connector }) => {
            list_installations(&ctx, connector).await
        }
        Command::Installations(InstallationsCommand::Remove {
            connector,
            installation_id,
        }) => remove_installation(&ctx, connector, installation_id).await,
        Command::RevokeTokens {
            connector,
            subject,
            installation_id,
        } => revoke_tokens(&ctx, connector, subject, installation_id).await,
        Command::Suspend { connector } => suspend(&ctx, connector, true).await,
        Command::Resume { connector } => suspend(&ctx, connector, false).await,
        Command::Audit { limit } => audit(&ctx, limit).await,
        Command::Issuances {
            connector,
            project,
            environment,
            limit,
        } => issuances(&ctx, connector, project, environment, limit).await,
        Command::Grants {
            connector,
            user,
            environment,
            limit,
        } => grants(&ctx, connector, user, environment, limit).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "connect",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

/// `KEY=VALUE` pairs.
fn pairs(values: Vec<String>, flag: &str) -> Result<Vec<(String, String)>, Failure> {
    values
        .into_iter()
        .map(|v| match v.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(Failure::new(
                "InvalidArgumentError",
                format!(
                    "{flag} expects KEY=VALUE, got '{}'",
                    v.split('=').next().unwrap_or("")
                ),
            )),
        })
        .collect()
}

/// A secret's value: itself, the contents of `@FILE`, or stdin for `@-` (once); one trailing
/// newline is dropped from what is read.
fn secret_value(key: &str, value: String, stdin_taken: &mut bool) -> Result<String, Failure> {
    let Some(source) = value.strip_prefix('@') else {
        return Ok(value);
    };
    let text = if source == "-" {
        if std::mem::replace(stdin_taken, true) {
            return Err(Failure::new(
                "InvalidArgumentError",
                format!("--secret {key}=@-: only one secret can be read from stdin"),
            ));
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::new("InvalidArgumentError", format!("--secret {key}=@-: {e}")))?;
        text
    } else {
        std::fs::read_to_string(source).map_err(|e| {
            Failure::new(
                "InvalidArgumentError",
                format!("--secret {key}=@{source}: cannot read the file: {e}"),
            )
        })?
    };
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    Ok(text.to_owned())
}

/// `--config` and `--secret` values as the request maps, secrets read from files or stdin.
type Maps = (HashMap<String, String>, HashMap<String, String>);

fn config_and_secrets(config: Vec<String>, secrets: Vec<String>) -> Result<Maps, Failure> {
    let config: HashMap<String, String> = pairs(config, "--config")?.into_iter().collect();
    let mut stdin_taken = false;
    let mut sealed = HashMap::new();
    for (key, value) in pairs(secrets, "--secret")? {
        let value = secret_value(&key, value, &mut stdin_taken)?;
        sealed.insert(key, value);
    }
    Ok((config, sealed))
}

async fn create(
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

async fn all_connectors(ctx: &Context) -> Result<Vec<pb::Connector>, Failure> {
    collect(usize::MAX, |page_size, page_token| async move {
        let page = ctx
            .registry()?
            .list_connectors(pb::ListConnectorsRequest {
                page_size,
                page_token,
            })
            .await
            .map_err(ctx.failed())?
            .into_inner();
        Ok((page.connectors, page.next_page_token))
    })
    .await
}

async fn all_links(
    ctx: &Context,
    connector: &str,
    project: &str,
) -> Result<Vec<pb::ProjectLink>, Failure> {
    collect(usize::MAX, |page_size, page_token| async move {
        let page = ctx
            .registry()?
            .list_project_links(pb::ListProjectLinksRequest {
                connector: connector.to_owned(),
                project: project.to_owned(),
                page_size,
                page_token,
            })
            .await
            .map_err(ctx.failed())?
            .into_inner();
        Ok((page.links, page.next_page_token))
    })
    .await
}

/// The items of a paged list, at most `limit`, asking `page(page_size, page_token)` for each
/// page until the list ends.
async fn collect<T, F, Fut>(limit: usize, mut page: F) -> Result<Vec<T>, Failure>
where
    F: FnMut(i32, String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), Failure>>,
{
    let mut all = Vec::new();
    let mut page_token = String::new();
    while all.len() < limit {
        let size = i32::try_from(limit - all.len()).unwrap_or(PAGE).min(PAGE);
        let (items, next) = page(size, page_token).await?;
        all.extend(items);
        if next.is_empty() {
            break;
        }
        page_token = next;
    }
    all.truncate(limit);
    Ok(all)
}

async fn list(ctx: &Context, project: Option<String>, kind: Option<String>) -> Result<(), Failure> {
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

async fn create_project(ctx: &Context, id: String, name: String) -> Result<(), Failure> {
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

async fn list_projects(ctx: &Context) -> Result<(), Failure> {
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

async fn attach(
    ctx: &Context,
    connector: String,
    project: String,
    environments: Vec<String>,
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
    let (link, unchanged) = match current {
        Ok(link)
            if link
                .get_ref()
                .environments
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                == wanted =>
        {
            (link.into_inner(), true)
        }
        Ok(_) => (attach_now(ctx, &connector, &project, &wanted).await?, false),
        Err(status) if status.code() == tonic::Code::NotFound => {
            (attach_now(ctx, &connector, &project, &wanted).await?, false)
        }
        Err(status) => return Err(ctx.failed()(status)),
    };
    ctx.emit(
        || {
            let envs = output::environments(&link.environments);
            if unchanged {
                format!(
                    "{} is already attached to {} for {envs}: unchanged",
                    link.connector_uid, link.project_id
                )
            } else {
                format!(
                    "Attached {} to {} for {envs}",
                    link.connector_uid, link.project_id
                )
            }
        },
        || {
            let mut value = output::link(&link);
            value["unchanged"] = json!(unchanged);
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
) -> Result<pb::ProjectLink, Failure> {
    Ok(ctx
        .registry()?
        .attach_project(pb::AttachProjectRequest {
            connector: connector.to_owned(),
            project: project.to_owned(),
            environments: environments.iter().cloned().collect(),
        })
        .await
        .map_err(ctx.failed())?
        .into_inner())
}

async fn detach(ctx: &Context, connector: String, project: String) -> Result<(), Failure> {
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

async fn links(ctx: &Context, connector: String) -> Result<(), Failure> {
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

async fn remove(ctx: &Context, connector: String, disconnect_all: bool) -> Result<(), Failure> {
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

/// The OIDC token's `project_id` and `environment`, unverified, for hints.
fn caller_of(token: &secrecy::SecretString) -> Caller {
    let claims = connect_client::oidc::unverified_claims(token).unwrap_or_default();
    let claim = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    Caller {
        project_id: claim("project_id"),
        environment: claim("environment"),
    }
}

async fn token(
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
                return Err(Failure::new(
                    "InvalidArgumentError",
                    format!("--subject must be 'app' or 'user:ID', not '{other}'"),
                ));
            }
        },
    };
    let source = match std::env::var_os("CONNECT_OIDC_TOKEN_FILE").filter(|v| !v.is_empty()) {
        Some(file) => connect_client::OidcToken::file(file),
        None => connect_client::OidcToken::Environment,
    };
    let caller = source.current().map(|t| caller_of(&t)).unwrap_or_default();
    let mut builder = connect_client::ClientBuilder::new(broker)
        .oidc_token(source)
        .cache_size(0);
    if let Some(pem) = ca {
        builder = builder.ca_pem(pem);
    }
    let fail = |e: connect_client::Error| error::from_client(&e, &connector, &caller);
    let client = builder.build().map_err(fail)?;
    let params = connect_client::TokenParams { subject, ..params };
    let token = client.get_token(&connector, &params).await.map_err(fail)?;
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
            })
        },
    );
    Ok(())
}

async fn audit(ctx: &Context, limit: u32) -> Result<(), Failure> {
    let events = collect(limit as usize, |page_size, page_token| async move {
        let page = ctx
            .registry()?
            .list_audit_events(pb::ListAuditEventsRequest {
                page_size,
                page_token,
            })
            .await
            .map_err(ctx.failed())?
            .into_inner();
        Ok((page.events, page.next_page_token))
    })
    .await?;
    ctx.emit_list(
        &events,
        "No audit events.",
        &["TIME", "ACTOR", "ACTION", "TARGET"],
        |e| {
            vec![
                output::short_time(e.time.as_ref()),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
            ]
        },
        output::audit_event,
    );
    Ok(())
}

async fn issuances(
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

async fn suspend(ctx: &Context, connector: String, suspended: bool) -> Result<(), Failure> {
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

/// An installation as `installations add` takes it.
struct NewInstallation {
    id: String,
    name: Option<String>,
    config: Vec<String>,
    secrets: Vec<String>,
    default: bool,
}

async fn add_installation(
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

async fn list_installations(ctx: &Context, connector: String) -> Result<(), Failure> {
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

async fn remove_installation(
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

async fn revoke_tokens(
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

async fn grants(
    ctx: &Context,
    connector: Option<String>,
    user: Option<String>,
    environment: Option<String>,
    limit: u32,
) -> Result<(), Failure> {
    let (connector, user_id, environment) = (
        connector.unwrap_or_default(),
        user.unwrap_or_default(),
        environment.unwrap_or_default(),
    );
    let found = collect(limit as usize, |page_size, page_token| {
        let request = pb::ListGrantsRequest {
            connector: connector.clone(),
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
            "USER",
            "ENVIRONMENT",
            "INSTALLATION",
            "STATE",
            "EXPIRES",
            "SCOPES",
        ],
        |g| {
            vec![
                g.connector_uid.clone(),
                g.user_id.clone(),
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
