//! How a failed command reads: the contract's error name first, the server's message, and one
//! line saying what to do about it.

use connect_types::Reason;
use tonic::Code;
use tonic_types::StatusExt;

/// A command that did not do what it was asked.
#[derive(Debug)]
pub struct Failure {
    /// The first line: `SomethingError: what happened`.
    pub message: String,
    /// What to do about it, when there is something to say.
    pub hint: Option<String>,
    /// The command line itself was wrong (exit status 2, as for clap's own usage errors).
    pub usage: bool,
}

impl Failure {
    pub fn new(name: &str, message: impl std::fmt::Display) -> Self {
        Self {
            message: format!("{name}: {message}"),
            hint: None,
            usage: false,
        }
    }

    /// A mistake in the command line, found before anything was asked of a server.
    pub fn usage(message: impl std::fmt::Display) -> Self {
        Self {
            usage: true,
            ..Self::new("InvalidArgumentError", message)
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        if self.hint.is_none() {
            self.hint = Some(hint.into());
        }
        self
    }

    /// A registry answer that is an error.
    pub fn from_registry(status: &tonic::Status, registry_url: &str) -> Self {
        let reason = reason_of(status);
        let failure = match reason {
            Some(reason) => with_name(reason.error_name(), status.message()),
            None if status.code() == Code::Unavailable => Self::new(
                Reason::RegistryUnavailable.error_name(),
                format!(
                    "cannot reach the registry at {registry_url}: {}",
                    status.message()
                ),
            ),
            None if status.code() == Code::Unimplemented => Self::new(
                "UnexpectedError",
                format!(
                    "{registry_url} does not serve the link registry (connect.registry.v1.LinkRegistry)"
                ),
            )
            .hint(
                "point --registry or CONNECT_REGISTRY_URL at the link registry (not the token broker): http://127.0.0.1:50051 locally",
            ),
            None => Self::new(
                "UnexpectedError",
                format!("{:?}: {}", status.code(), status.message()),
            ),
        };
        match reason {
            Some(Reason::InvalidKey) => failure.hint(
                "pass a team's API key with --api-key or CONNECT_API_KEY \
                 (link-registry keys create --team TEAM --role admin)",
            ),
            Some(Reason::RoleNotAllowed) => {
                failure.hint("this command changes the registry: it needs an admin key")
            }
            Some(Reason::ProjectNotFound) => failure
                .hint("register the project first: connect projects create <prj_id> --name NAME"),
            Some(Reason::ConnectorNotFound) => failure.hint(
                "`connect list` shows the team's connectors; `connect create <type/name>` makes one",
            ),
            Some(Reason::ProjectLinkNotFound) => {
                failure.hint("`connect links <connector>` shows where a connector is linked")
            }
            Some(Reason::AlreadyExists) => {
                failure.hint("it exists already: `connect list` or `connect projects list` shows it")
            }
            Some(Reason::InstallationNotFound) => failure.hint(
                "`connect installations list <connector>` shows its installations",
            ),
            Some(Reason::SecretsRequired) => failure.hint(
                "changing where a connector sends its secrets needs the secrets again: pass every --secret",
            ),
            _ if status.code() == Code::Unavailable => failure
                .hint("is the registry running? point --registry or CONNECT_REGISTRY_URL at it"),
            _ => failure,
        }
    }
}

fn reason_of(status: &tonic::Status) -> Option<Reason> {
    status
        .get_details_error_info()
        .filter(|i| i.domain == connect_types::ERROR_DOMAIN)
        .and_then(|i| Reason::parse(&i.reason))
}

/// `message` as it is when it already starts with `name`, else prefixed with it.
fn with_name(name: &str, message: &str) -> Failure {
    if message.starts_with(name) {
        Failure {
            message: message.to_owned(),
            hint: None,
            usage: false,
        }
    } else {
        Failure::new(name, message)
    }
}

/// What `connect token` knows of the caller, for its hints: the OIDC token's claims, unverified,
/// the broker it asked, and the environments the link has when the registry could be read.
#[derive(Debug, Default)]
pub struct Caller {
    pub project_id: Option<String>,
    pub environment: Option<String>,
    pub broker_url: String,
    pub link_environments: Option<Vec<String>>,
}

/// A client error of `connect token`, with the `connect` command that would fix it.
pub fn from_client(error: &connect_client::Error, connector: &str, caller: &Caller) -> Failure {
    use connect_client::Error as E;
    let failure = Failure {
        message: error.to_string(),
        hint: None,
        usage: false,
    };
    let project = caller.project_id.as_deref().unwrap_or("<prj_id>");
    let environment = caller.environment.as_deref().unwrap_or("<environment>");
    match error {
        // `attach` replaces the link's set: the command lists what it has and the one missing.
        E::ClientNotEnabledForEnvironment(_) => match &caller.link_environments {
            Some(has) => {
                let mut all: Vec<&str> = has.iter().map(String::as_str).collect();
                if !all.contains(&environment) {
                    all.push(environment);
                }
                failure.hint(format!(
                    "enable it for this environment too (attach replaces the set, so it lists the ones the link has): connect attach {connector} --project {project} -e {}",
                    all.join(",")
                ))
            }
            None => failure.hint(format!(
                "`connect links {connector}` shows the environments the link has; attach replaces the set, so list them with {environment}: connect attach {connector} --project {project} -e <those>,{environment}"
            )),
        },
        E::Unexpected {
            code: tonic::Code::Unimplemented,
            ..
        } => Failure {
            message: format!(
                "UnexpectedError: {} does not serve the token broker (connect.broker.v1.TokenBroker)",
                caller.broker_url
            ),
            hint: None,
            usage: false,
        }
        .hint(
            "point --broker or CONNECT_BROKER_URL at the token broker (not the link registry): http://127.0.0.1:50052 locally",
        ),
        E::ClientNotLinkedToProject(_) => failure.hint(format!(
            "link it: connect attach {connector} --project {project}"
        )),
        E::ConnectorSuspended(_) => failure.hint(format!(
            "an admin suspended it; `connect resume {connector}` lets it issue again"
        )),
        E::LinkExpired(_) => failure.hint(format!(
            "the link was time-boxed and its time ran out; attach it again (with --for or --until for a new end): `connect explain {connector} --project {project} -e {environment}` prints the command"
        )),
        E::SubjectNotAllowed(_) => failure.hint(format!(
            "the link's ceilings (allowed subjects and installations, `connect links {connector}`) or, for JWT bearer grants, the connector's jwt_bearer_subjects bound what may be asked; `connect explain {connector} --project {project} -e {environment}` shows which"
        )),
        E::ScopeNotAllowed(_) => failure.hint(format!(
            "ask within the link's allowed scopes and resources (`connect links {connector}` shows them), or have an admin widen them with connect attach"
        )),
        E::QuotaExceeded(_) => failure.hint(format!(
            "the link's max issuances per hour are used up; tokens already held are still handed out, new ones after the hour has room (`connect links {connector}` shows the quota)"
        )),
        E::ConnectorInstallationRequired(_) => failure.hint(format!(
            "pass --installation-id, or give the connector a default: connect installations add {connector} <id> --default"
        )),
        E::InstallationNotFound(_) => failure.hint(format!(
            "`connect installations list {connector}` shows its installations"
        )),
        E::ConnectorNotFound(_) => failure.hint(
            "`connect list` shows the team's connectors (with an admin or viewer key)",
        ),
        E::MissingOidcToken(_) | E::InvalidToken(_) | E::TokenExpired(_) => failure.hint(
            "set CONNECT_OIDC_TOKEN or VERCEL_OIDC_TOKEN (or CONNECT_OIDC_TOKEN_FILE) to a current deployment token",
        ),
        E::IssuerNotTrusted(_) => failure.hint(
            "the broker must trust the token's issuer (--trusted-issuer) and it must be the team's issuer",
        ),
        E::Unavailable(_) => failure
            .hint("is the broker running? point --broker or CONNECT_BROKER_URL at it"),
        _ => failure,
    }
}
