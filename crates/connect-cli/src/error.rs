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
}

impl Failure {
    pub fn new(name: &str, message: impl std::fmt::Display) -> Self {
        Self {
            message: format!("{name}: {message}"),
            hint: None,
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
        }
    } else {
        Failure::new(name, message)
    }
}

/// What `connect token` knows of the caller, for its hints: the OIDC token's claims, unverified.
#[derive(Debug, Default)]
pub struct Caller {
    pub project_id: Option<String>,
    pub environment: Option<String>,
}

/// A client error of `connect token`, with the `connect` command that would fix it.
pub fn from_client(error: &connect_client::Error, connector: &str, caller: &Caller) -> Failure {
    use connect_client::Error as E;
    let failure = Failure {
        message: error.to_string(),
        hint: None,
    };
    let project = caller.project_id.as_deref().unwrap_or("<prj_id>");
    match error {
        E::ClientNotEnabledForEnvironment(_) => failure.hint(format!(
            "enable it for this environment (with the ones it has): connect attach {connector} --project {project} -e {}",
            caller.environment.as_deref().unwrap_or("<environment>")
        )),
        E::ClientNotLinkedToProject(_) => failure.hint(format!(
            "link it: connect attach {connector} --project {project}"
        )),
        E::ConnectorSuspended(_) => failure.hint(format!(
            "an admin suspended it; `connect resume {connector}` lets it issue again"
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
