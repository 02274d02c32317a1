//! `link-registry`: serve, migrate, and the administrative commands that need the database itself
//! (creating teams and API keys).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use link_registry::{
    App,
    app::open_store,
    config::{
        AuditCommand, BindingsCommand, Cli, Command, KeysCommand, SecretsCommand, ServeConfig,
        SigningKeysCommand, TeamsCommand, redact_url,
    },
    crypto::SecretCipher,
    domain::{
        Registry, RegistryError,
        model::Role,
        service::NewTeam,
        types::{IssuerUrl, KeyId, TeamId, TeamSlug},
    },
};
use secrecy::ExposeSecret;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match connect_runtime::telemetry::init(
        cli.log.log_format,
        cli.log.otlp_endpoint.as_deref(),
        "link-registry",
    ) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {}", connect_runtime::ErrorChain(&e));
            return ExitCode::FAILURE;
        }
    };
    let result = run(cli.command).await;
    // The spans still queued go out before the process ends.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A registry for the administrative commands, which never touch secrets.
async fn admin_registry(database_url: &str) -> anyhow::Result<Registry> {
    let store = open_store(database_url)
        .await
        .with_context(|| format!("opening {}", redact_url(database_url)))?;
    Ok(Registry::new(
        std::sync::Arc::new(store),
        SecretCipher::ephemeral(),
    ))
}

fn arg<T>(name: &str, parsed: Result<T, String>) -> anyhow::Result<T> {
    parsed.map_err(|e| anyhow::anyhow!("--{name}: {e}"))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let app = App::build(ServeConfig::from(args)).await?;
            app.run_until(connect_runtime::shutdown_signal()).await?;
        }
        Command::Backup(args) => {
            if args.out.exists() {
                anyhow::bail!("--out {}: already exists", args.out.display());
            }
            let store = open_store(&args.database.database_url)
                .await
                .with_context(|| format!("opening {}", redact_url(&args.database.database_url)))?;
            store.backup_to(&args.out).await?;
            tracing::info!(out = %args.out.display(), "backup written: keep the database's key file apart from it");
            println!("{}", args.out.display());
        }
        Command::Restore(args) => {
            let Some(target) = link_registry::config::sqlite_path(&args.database_url) else {
                anyhow::bail!(
                    "restore puts a backup in place of a SQLite file; a PostgreSQL registry is restored with pg_restore (see the README)"
                );
            };
            if target.exists() {
                anyhow::bail!(
                    "{} exists: restore creates a new database (move the old one aside first)",
                    target.display()
                );
            }
            std::fs::copy(&args.from, &target).with_context(|| {
                format!("copying {} to {}", args.from.display(), target.display())
            })?;
            // Migrated to this version (a backup of an older registry), and checked to open as a
            // registry; a file that does not is removed again.
            let opened = async {
                let store = open_store(&args.database_url).await?;
                store.applied_migrations().await
            }
            .await;
            let applied = match opened {
                Ok(applied) => applied,
                Err(e) => {
                    let _ = std::fs::remove_file(&target);
                    anyhow::bail!("{} is not a registry backup: {e}", args.from.display());
                }
            };
            tracing::info!(migrations = applied.len(), "restored");
            println!("{}", target.display());
        }
        Command::Migrate(args) => {
            let store = open_store(&args.database_url).await?;
            let applied = store.applied_migrations().await?;
            tracing::info!(
                count = applied.len(),
                latest = applied.last().map(String::as_str),
                "migrations applied"
            );
        }
        Command::Teams(TeamsCommand::Create(args)) => {
            let team = NewTeam {
                id: arg("id", TeamId::parse(&args.id))?,
                slug: arg("slug", TeamSlug::parse(&args.slug))?,
                issuer: arg("issuer", IssuerUrl::parse(&args.issuer))?,
            };
            let registry = admin_registry(&args.database.database_url).await?;
            let id = team.id.clone();
            match registry.create_team(team).await {
                Ok(_) => {}
                Err(RegistryError::AlreadyExists { .. }) if args.if_not_exists => {
                    tracing::info!(team = %id, "team exists already");
                }
                Err(e) => return Err(e.into()),
            }
            println!("{id}");
        }
        Command::Keys(KeysCommand::Create(args)) => {
            let role = arg("role", Role::parse(&args.role))?;
            let teams = args
                .teams
                .iter()
                .map(|t| arg("team", TeamId::parse(t)))
                .collect::<Result<Vec<_>, _>>()?;
            let expires_at = args
                .expires_in
                .map(|d| {
                    chrono::TimeDelta::from_std(*d)
                        .ok()
                        .and_then(|d| chrono::Utc::now().checked_add_signed(d))
                        .ok_or_else(|| anyhow::anyhow!("--expires-in: too far in the future"))
                })
                .transpose()?;
            let registry = admin_registry(&args.database.database_url).await?;
            let (record, key) = registry
                .create_expiring_api_key(&teams, role, expires_at)
                .await?;
            tracing::info!(key_id = %record.id, role = role.as_str(), "api key created");
            println!("{}", key.expose_secret());
        }
        Command::Keys(KeysCommand::List(args)) => {
            let team = args
                .team
                .as_deref()
                .map(|t| arg("team", TeamId::parse(t)))
                .transpose()?;
            let registry = admin_registry(&args.database.database_url).await?;
            let now = chrono::Utc::now();
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or_else(
                    || "never".to_owned(),
                    |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                )
            };
            for key in registry.list_api_keys(team.as_ref()).await? {
                // A broker key limited to teams shows them, comma-separated.
                let teams = match (&key.team_id, &key.broker_teams) {
                    (Some(team), _) => team.to_string(),
                    (None, Some(teams)) => teams
                        .iter()
                        .map(TeamId::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                    (None, None) => "-".to_owned(),
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    key.id,
                    teams,
                    key.role.as_str(),
                    time(Some(key.created_at)),
                    time(key.expires_at),
                    time(key.last_used_at),
                    key.state(now),
                );
            }
        }
        Command::Bindings(BindingsCommand::Create(args)) => {
            let team = arg("team", TeamId::parse(&args.team))?;
            let request = connect_proto::registry::v1::CreateRoleBindingRequest {
                team: args.team.clone(),
                issuer: args.issuer,
                subject: args.subject.unwrap_or_default(),
                group: args.group.unwrap_or_default(),
                role: args.role,
            };
            let new = link_registry::domain::service::NewRoleBinding::try_from(request)?;
            let registry = admin_registry(&args.database.database_url).await?;
            let binding = registry.create_role_binding_as_operator(&team, new).await?;
            tracing::info!(binding = %binding.id, team = %team, "role binding created");
            println!("{}", binding.id);
        }
        Command::Bindings(BindingsCommand::List(args)) => {
            let team = arg("team", TeamId::parse(&args.team))?;
            let registry = admin_registry(&args.database.database_url).await?;
            for binding in registry.role_bindings_of(&team).await? {
                let who = match &binding.who {
                    link_registry::domain::model::BindingSubject::Subject(s) => {
                        format!("subject:{s}")
                    }
                    link_registry::domain::model::BindingSubject::Group(g) => format!("group:{g}"),
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    binding.id,
                    binding.issuer,
                    who,
                    binding.role.as_str(),
                    binding
                        .created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                );
            }
        }
        Command::Bindings(BindingsCommand::Delete(args)) => {
            let team = arg("team", TeamId::parse(&args.team))?;
            let registry = admin_registry(&args.database.database_url).await?;
            let binding = registry
                .delete_role_binding_as_operator(&team, &args.id)
                .await?;
            tracing::info!(binding = %binding.id, "role binding deleted");
            println!("{}", binding.id);
        }
        Command::Keys(KeysCommand::Revoke(args)) => {
            let id = arg("id", KeyId::parse(&args.id))?;
            let registry = admin_registry(&args.database.database_url).await?;
            let key = registry.revoke_api_key(&id).await?;
            tracing::info!(key_id = %key.id, "api key revoked");
            println!("{}", key.id);
        }
        Command::SigningKeys(command) => {
            let (SigningKeysCommand::Rotate(args) | SigningKeysCommand::List(args)) = &command;
            let url = args.database.database_url.clone();
            let store = open_store(&url)
                .await
                .with_context(|| format!("opening {}", redact_url(&url)))?;
            let mut config = ServeConfig::local(&url);
            config.secret_key_file = args.secret_key_file.clone();
            let holds_sealed = link_registry::domain::store::Store::holds_sealed(&store).await?;
            let cipher = link_registry::app::secret_cipher(&config, holds_sealed)?;
            let registry = Registry::new(std::sync::Arc::new(store), cipher);
            match command {
                SigningKeysCommand::Rotate(_) => {
                    let key = registry.rotate_signing_key().await?;
                    tracing::info!(kid = %key.kid, alg = %key.alg, "signing key added");
                    println!("{}", key.kid);
                }
                SigningKeysCommand::List(_) => {
                    for key in registry.signing_keys().await? {
                        println!("{}\t{}\t{}", key.kid, key.alg, key.created_at.to_rfc3339());
                    }
                }
            }
        }
        Command::Secrets(SecretsCommand::RotateKey(args)) => {
            let url = args.database.database_url;
            let mut config = ServeConfig::local(&url);
            config.secret_key_file = args.secret_key_file;
            let old = link_registry::app::secret_cipher(&config, true)?;
            if config.secret_key_file.as_deref() == Some(args.new_secret_key_file.as_path()) {
                anyhow::bail!("--new-secret-key-file must be another file than the current key");
            }
            let store = open_store(&url)
                .await
                .with_context(|| format!("opening {}", redact_url(&url)))?;
            let registry = Registry::new(std::sync::Arc::new(store), old);
            if !registry.verify_master_key().await? {
                anyhow::bail!(
                    "the current key does not open this database's secrets: nothing was changed"
                );
            }
            let new = SecretCipher::from_key_file(&args.new_secret_key_file, true)?;
            let resealed = registry.rotate_master_key(&new).await?;
            tracing::info!(
                resealed,
                new_key = %args.new_secret_key_file.display(),
                "every secret re-sealed under the new key: start the registries with --secret-key-file set to it"
            );
        }
        Command::Audit(AuditCommand::Verify(database)) => {
            let registry = admin_registry(&database.database_url).await?;
            match registry.verify_audit().await? {
                link_registry::domain::service::ChainCheck::Whole {
                    events,
                    starts_after,
                    head,
                } => {
                    let start = match starts_after {
                        0 => "from the first event".to_owned(),
                        id => format!("after event {id}, where retention left it"),
                    };
                    println!("audit chain whole: {events} events {start}; head {head}");
                }
                link_registry::domain::service::ChainCheck::Broken { id, problem } => {
                    anyhow::bail!("audit chain broken at event {id}: {problem}");
                }
            }
        }
        Command::Audit(AuditCommand::Export(args)) => {
            let time = |flag: &str, value: &str| {
                chrono::DateTime::parse_from_rfc3339(value)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|e| anyhow::anyhow!("--{flag}: not an RFC 3339 time: {e}"))
            };
            let since = time("since", &args.since)?;
            let until = match &args.until {
                Some(until) => time("until", until)?,
                None => chrono::Utc::now(),
            };
            let team = args
                .team
                .as_deref()
                .map(|t| arg("team", TeamId::parse(t)))
                .transpose()?;
            let registry = admin_registry(&args.database.database_url).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let exported = registry
                .export_audit(team.as_ref(), (since, until), |event| {
                    use std::io::Write;
                    let line = serde_json::json!({
                        "id": event.id,
                        "owner_id": event.team_id,
                        "actor": event.actor,
                        "actor_issuer": event.actor_issuer,
                        "action": event.action,
                        "target": event.target,
                        "before": event.before,
                        "after": event.after,
                        "time": event.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    });
                    writeln!(out, "{line}")
                        .map_err(|e| RegistryError::internal("writing the export", e))
                })
                .await?;
            {
                use std::io::Write;
                out.flush()?;
            }
            tracing::info!(exported, "audit events exported");
        }
    }
    Ok(())
}
