//! `connect`: the Connect command line. See `connect --help`.

mod cli;
mod commands;
mod error;
mod login;
mod output;

use std::process::ExitCode;

use clap::CommandFactory;
use connect_proto::registry::v1::link_registry_client::LinkRegistryClient;
use serde_json::Value;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use crate::{
    cli::{Cli, Command, Format, InstallationsCommand, ProjectsCommand},
    commands::{audit, connectors, installations, links, projects, tokens},
    error::Failure,
};

fn main() -> ExitCode {
    let cli = Cli::parse_with_variables();
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
            if failure.usage {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Adds the credential (an API key or the login's ID token), and the team a person acts in, to
/// every registry call.
#[derive(Clone)]
struct ApiKey(Option<MetadataValue<Ascii>>, Option<MetadataValue<Ascii>>);

impl Interceptor for ApiKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            request.metadata_mut().insert("authorization", key.clone());
        }
        if let Some(team) = &self.1 {
            request.metadata_mut().insert("connect-team", team.clone());
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

/// A server's URL as given: with its scheme; a bare `host:port` (grpcurl's form) is taken as
/// `http://` on loopback, and refused elsewhere with the scheme to add.
fn service_url(raw: &str, flag: &str) -> Result<String, Failure> {
    if raw.contains("://") {
        return Ok(raw.to_owned());
    }
    let host = match raw.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => raw,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(format!("http://{raw}"))
    } else {
        Err(Failure::usage(format!(
            "{flag} '{raw}' has no scheme: give https://{raw} (or http://{raw} for a plaintext server)"
        )))
    }
}

fn endpoint(url: &str, ca: Option<&[u8]>, what: &str) -> Result<Endpoint, Failure> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| Failure::usage(format!("{what} URL '{url}': {e}")))?;
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

async fn run(mut cli: Cli) -> Result<(), Failure> {
    cli.registry = service_url(&cli.registry, "--registry")?;
    cli.broker = service_url(&cli.broker, "--broker")?;
    let ca = match &cli.ca {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| Failure::usage(format!("cannot read --ca {}: {e}", path.display())))?,
        ),
        None => None,
    };
    // `token` speaks to the broker; it reads the registry only for a better hint, when it has a
    // key.
    // Signing in and out speak to the identity provider only.
    match &cli.command {
        Command::Login {
            issuer,
            client_id,
            no_browser,
        } => {
            let issuer = match issuer {
                Some(issuer) => issuer.clone(),
                None => login::stored_issuer()
                    .ok_or_else(|| Failure::usage("give --issuer: the identity provider's URL"))?,
            };
            let who = login::login(&issuer, client_id, *no_browser).await?;
            println!("Signed in to {issuer} as {who}");
            return Ok(());
        }
        Command::Logout => {
            let was = login::logout()?;
            println!("{}", if was { "Signed out" } else { "Not signed in" });
            return Ok(());
        }
        _ => {}
    }
    let needs_registry = !matches!(
        cli.command,
        Command::Token { .. } | Command::ProxyUrl { .. } | Command::Completions { .. }
    );
    let may_read_registry = matches!(cli.command, Command::Token { .. })
        && cli.api_key.as_deref().is_some_and(|k| !k.is_empty());
    let registry = if needs_registry || may_read_registry {
        let key = match cli.api_key.as_deref().filter(|k| !k.is_empty()) {
            Some(key) => match format!("Bearer {key}").parse::<MetadataValue<Ascii>>() {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    Some(value)
                }
                Err(_) if needs_registry => {
                    return Err(Failure::new(
                        "InvalidKeyError",
                        "the API key is not printable ASCII",
                    ));
                }
                // `token` reads the registry only for a hint: an unusable key means no hint.
                Err(_) => None,
            },
            // No key: the person's login, refreshed when it is about to expire.
            None => match login::bearer().await? {
                Some(token) => {
                    let mut value: MetadataValue<Ascii> =
                        format!("Bearer {token}").parse().map_err(|_| {
                            Failure::new("InvalidKeyError", "the stored login is not ASCII")
                        })?;
                    value.set_sensitive(true);
                    Some(value)
                }
                None => {
                    return Err(Failure::new("InvalidKeyError", "no API key and no login").hint(
                        "pass a team's API key with --api-key or CONNECT_API_KEY \
                         (link-registry keys create --team TEAM --role admin), or sign in: connect login --issuer URL",
                    ));
                }
            },
        };
        let team = match cli.team.as_deref().filter(|t| !t.is_empty()) {
            Some(team) => Some(
                team.parse::<MetadataValue<Ascii>>()
                    .map_err(|_| Failure::usage(format!("--team '{team}' is not a team id")))?,
            ),
            None => None,
        };
        let channel = endpoint(&cli.registry, ca.as_deref(), "registry")?.connect_lazy();
        Some(LinkRegistryClient::with_interceptor(
            channel,
            ApiKey(key, team),
        ))
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
        } => connectors::create(&ctx, connector, name, config, secrets).await,
        Command::List { project, kind } => connectors::list(&ctx, project, kind).await,
        Command::Projects(ProjectsCommand::Create { id, name }) => {
            projects::create_project(&ctx, id, name).await
        }
        Command::Projects(ProjectsCommand::List) => projects::list_projects(&ctx).await,
        Command::Envs(command) => projects::envs(&ctx, command).await,
        Command::Attach {
            connector,
            project,
            environments,
            for_,
            until,
            limits,
        } => {
            let expires_at = match (for_, until) {
                (Some(d), _) => chrono::Duration::from_std(d)
                    .ok()
                    .and_then(|d| chrono::Utc::now().checked_add_signed(d)),
                (None, until) => until,
            };
            links::attach(&ctx, connector, project, environments, expires_at, limits).await
        }
        Command::Detach { connector, project } => links::detach(&ctx, connector, project).await,
        Command::Explain {
            connector,
            project,
            environment,
            subject,
            installation_id,
            scopes,
            resources,
        } => {
            let request = connect_proto::registry::v1::ExplainAccessRequest {
                project,
                environment,
                connector,
                installation_id: installation_id.unwrap_or_default(),
                subject,
                scopes,
                resources,
            };
            links::explain(&ctx, request).await
        }
        Command::Links {
            connector,
            unused_for,
        } => links::links(&ctx, connector, unused_for).await,
        Command::Remove {
            connector,
            disconnect_all,
        } => connectors::remove(&ctx, connector, disconnect_all).await,
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
            tokens::token(&ctx, &cli.broker, ca, connector, subject, params).await
        }
        Command::ProxyUrl { connector, proxy } => {
            let Some(proxy) = proxy.filter(|p| !p.trim().is_empty()) else {
                return Err(Failure::new("InvalidArgumentError", "no proxy URL").hint(
                    "pass --proxy URL or set CONNECT_PROXY_URL: a broker's --proxy-listen address, as services reach it",
                ));
            };
            if !(proxy.starts_with("https://") || proxy.starts_with("http://")) {
                return Err(Failure::new(
                    "InvalidArgumentError",
                    "the proxy URL must start with https:// or http://",
                ));
            }
            let url = connect_client::proxy_base_url(&proxy, &connector);
            ctx.emit(
                || url.clone(),
                || serde_json::json!({ "connector": connector, "url": url }),
            );
            Ok(())
        }
        Command::Installations(InstallationsCommand::Add {
            connector,
            installation_id,
            name,
            config,
            secrets,
            default,
        }) => {
            let new = installations::NewInstallation {
                id: installation_id,
                name,
                config,
                secrets,
                default,
            };
            installations::add_installation(&ctx, connector, new).await
        }
        Command::Installations(InstallationsCommand::List { connector }) => {
            installations::list_installations(&ctx, connector).await
        }
        Command::Installations(InstallationsCommand::Remove {
            connector,
            installation_id,
        }) => installations::remove_installation(&ctx, connector, installation_id).await,
        Command::RevokeTokens {
            connector,
            subject,
            installation_id,
        } => tokens::revoke_tokens(&ctx, connector, subject, installation_id).await,
        Command::Suspend { connector } => connectors::suspend(&ctx, connector, true).await,
        Command::Resume { connector } => connectors::suspend(&ctx, connector, false).await,
        Command::Types => connectors::types(&ctx).await,
        Command::Whoami => projects::whoami(&ctx).await,
        // Answered before any client was made.
        Command::Login { .. } | Command::Logout => Ok(()),
        Command::Audit { limit } => audit::audit(&ctx, limit).await,
        Command::Issuances {
            connector,
            project,
            environment,
            limit,
        } => tokens::issuances(&ctx, connector, project, environment, limit).await,
        Command::Grants {
            connector,
            project,
            user,
            environment,
            limit,
        } => tokens::grants(&ctx, connector, project, user, environment, limit).await,
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
