//! What pages show: the template of each, and the small view models they render. Templates are
//! checked when the crate compiles and escape everything they print.

use askama::Template;
use axum::{
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use crate::session::TeamRole;

/// The environments every team has, in the order pages show them.
pub const ENVIRONMENTS: [&str; 3] = ["production", "preview", "development"];

/// A message carried across a redirect (POST, redirect, GET).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
    /// Undo for a detach: attach the project to the connector again with these environments.
    #[serde(default)]
    pub undo: Option<Undo>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Undo {
    pub connector_id: String,
    pub project_id: String,
    pub environments: Vec<String>,
}

/// The frame of every signed-in page.
#[derive(Clone, Debug)]
pub struct Layout {
    pub title: String,
    pub nav: &'static str,
    pub actor: String,
    pub team: String,
    pub teams: Vec<TeamRole>,
    pub role: String,
    pub csrf: String,
    pub can_write: bool,
    pub is_admin: bool,
    pub flash: Option<Flash>,
}

pub fn render(template: &impl Template) -> Response {
    render_status(StatusCode::OK, template)
}

pub fn render_status(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page failed to render.\n",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub issuer: String,
    pub allow_key_login: bool,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "signed_in.html")]
pub struct SignedInPage {}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub l: Layout,
    pub reason: String,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub l: Layout,
    pub heading: String,
    pub consequence: String,
    pub action: String,
    pub button: String,
    pub back: String,
    pub fields: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct EnvBadge {
    pub name: &'static str,
    pub projects: usize,
}

#[derive(Clone, Debug)]
pub struct ConnectorRow {
    pub id: String,
    pub uid: String,
    pub name: String,
    pub kind: String,
    pub suspended: bool,
    pub links: usize,
    pub badges: Vec<EnvBadge>,
}

#[derive(Template)]
#[template(path = "connectors.html")]
pub struct ConnectorsPage {
    pub l: Layout,
    pub rows: Vec<ConnectorRow>,
    pub next_page: Option<String>,
}

#[derive(Clone, Debug)]
pub struct TypeChoice {
    pub name: String,
    pub description: String,
}

#[derive(Clone, Debug)]
pub struct KeyField {
    pub key: String,
    pub description: String,
    pub required: bool,
    pub value: String,
}

#[derive(Template)]
#[template(path = "connector_new.html")]
pub struct NewConnectorPage {
    pub l: Layout,
    pub types: Vec<TypeChoice>,
    pub chosen: Option<String>,
    pub name: String,
    pub display_name: String,
    pub config: Vec<KeyField>,
    pub secrets: Vec<KeyField>,
    pub error: Option<String>,
    pub fields: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct EnvBox {
    pub name: &'static str,
    pub checked: bool,
}

#[derive(Clone, Debug)]
pub struct LinkRow {
    pub project_id: String,
    pub project_name: String,
    pub envs: Vec<EnvBox>,
}

#[derive(Clone, Debug)]
pub struct InstallationRow {
    pub id: String,
    pub display_name: String,
    pub is_default: bool,
    pub secret_names: String,
}

#[derive(Template)]
#[template(path = "connector.html")]
pub struct ConnectorPage {
    pub l: Layout,
    pub id: String,
    pub uid: String,
    pub name: String,
    pub kind: String,
    pub suspended: bool,
    pub created: String,
    pub config: Vec<(String, String)>,
    pub secret_names: Vec<String>,
    pub installations: Vec<InstallationRow>,
    pub links: Vec<LinkRow>,
    pub addable: Vec<(String, String)>,
    pub new_envs: Vec<EnvBox>,
}

#[derive(Clone, Debug)]
pub struct ProjectRow {
    pub id: String,
    pub name: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "projects.html")]
pub struct ProjectsPage {
    pub l: Layout,
    pub rows: Vec<ProjectRow>,
    pub next_page: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ProjectLinkRow {
    pub connector_id: String,
    pub connector_uid: String,
    pub environments: String,
}

#[derive(Template)]
#[template(path = "project.html")]
pub struct ProjectPage {
    pub l: Layout,
    pub id: String,
    pub name: String,
    pub links: Vec<ProjectLinkRow>,
}

#[derive(Clone, Debug)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
    pub why: String,
    pub fix: String,
    /// Environments to attach with, when the fix is one click.
    pub fix_environments: Vec<String>,
    pub connector_id: String,
    pub project_id: String,
    /// Every check of the registry's decision: name, outcome (`pass`, `fail`, `skip`), detail.
    pub checks: Vec<(String, String, String)>,
}

#[derive(Template)]
#[template(path = "access.html")]
pub struct AccessPage {
    pub l: Layout,
    pub projects: Vec<(String, String)>,
    pub connectors: Vec<(String, String)>,
    pub project: String,
    pub environment: String,
    pub connector: String,
    pub environments: [&'static str; 3],
    pub decision: Option<Decision>,
}

#[derive(Clone, Debug)]
pub struct DiffLine {
    pub key: String,
    pub before: String,
    pub after: String,
    /// `added`, `removed` or `changed`.
    pub kind: &'static str,
}

#[derive(Clone, Debug)]
pub struct AuditRow {
    pub time: String,
    pub actor: String,
    pub actor_issuer: String,
    pub action: String,
    pub target: String,
    pub diff: Vec<DiffLine>,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub l: Layout,
    pub action: String,
    pub actor: String,
    pub target: String,
    pub since: String,
    pub until: String,
    pub rows: Vec<AuditRow>,
    pub csv_query: String,
    pub next_page: Option<String>,
}

#[derive(Clone, Debug)]
pub struct GrantRow {
    pub connector_id: String,
    pub connector_uid: String,
    pub user_id: String,
    pub project: String,
    pub environment: String,
    pub state: String,
    pub scopes: String,
    pub provider_subject: String,
    pub expires: String,
}

#[derive(Template)]
#[template(path = "grants.html")]
pub struct GrantsPage {
    pub l: Layout,
    pub rows: Vec<GrantRow>,
    pub next_page: Option<String>,
}

#[derive(Clone, Debug)]
pub struct IssuanceRow {
    pub token_id: String,
    pub connector_id: String,
    pub connector_uid: String,
    pub project: String,
    pub environment: String,
    pub subject: String,
    pub installation: String,
    pub issued: String,
    pub expires: String,
    pub revoked: bool,
}

#[derive(Template)]
#[template(path = "issuances.html")]
pub struct IssuancesPage {
    pub l: Layout,
    pub connector: String,
    pub project: String,
    pub environment: String,
    pub environments: [&'static str; 3],
    pub connectors: Vec<(String, String)>,
    pub rows: Vec<IssuanceRow>,
    pub next_page: Option<String>,
}

#[derive(Clone, Debug)]
pub struct KeyRow {
    pub id: String,
    pub role: String,
    pub teams: String,
    pub created: String,
    pub expires: String,
    pub last_used: String,
    pub state: &'static str,
    pub revocable: bool,
}

#[derive(Template)]
#[template(path = "keys.html")]
pub struct KeysPage {
    pub l: Layout,
    pub rows: Vec<KeyRow>,
}

#[derive(Template)]
#[template(path = "me.html")]
pub struct MePage {
    pub l: Layout,
    pub kind: String,
    pub issuer: String,
    pub subject: String,
    pub email: String,
    pub key_id: String,
}
