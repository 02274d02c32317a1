//! Routes and what every page shares: the signed-in context (session, registry client, flash
//! message), form fields, redirects and the way a registry refusal is shown.

mod admin;
mod auth;
mod connectors;
mod records;

use axum::{
    Router,
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderValue, StatusCode, header, request::Parts},
    middleware,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use axum_extra::extract::cookie::{CookieJar, SameSite};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use prost_types::Timestamp;

use crate::{
    State,
    registry::{Client, Refusal},
    security::{self, Loaded},
    session::{Bearer, Session},
    views::{ErrorPage, Flash, Layout, render_status},
};

pub fn router(state: State) -> Router {
    Router::new()
        .route("/login", get(auth::login_page))
        .route("/login/start", get(auth::login_start))
        .route("/login/key", post(auth::login_key))
        .route("/auth/callback", get(auth::callback))
        .route("/logout", get(auth::logout_page).post(auth::logout))
        .route("/team", post(auth::switch_team))
        .route("/me", get(auth::me))
        .route("/", get(connectors::list))
        .route(
            "/connectors/new",
            get(connectors::new_form).post(connectors::create),
        )
        .route("/connectors/{id}", get(connectors::show))
        .route("/connectors/{id}/links", post(connectors::attach))
        .route(
            "/connectors/{id}/links/{project}/detach",
            post(connectors::detach),
        )
        .route("/connectors/{id}/delete", post(connectors::delete))
        .route(
            "/projects",
            get(connectors::projects).post(connectors::create_project),
        )
        .route("/projects/{id}", get(connectors::project))
        .route("/projects/{id}/disconnect", post(connectors::disconnect))
        .route("/access", get(connectors::access))
        .route("/audit", get(records::audit))
        .route("/audit.csv", get(records::audit_csv))
        .route("/grants", get(records::grants))
        .route("/grants/revoke", post(records::revoke_grant))
        .route("/issuances", get(records::issuances))
        .route("/issuances/revoke", post(records::revoke_tokens))
        .route("/keys", get(admin::keys))
        .route("/keys/{id}/revoke", post(admin::revoke_key))
        .route("/static/console.css", get(stylesheet))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::gate,
        ))
        .with_state(state)
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/console.css"),
    )
        .into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not found.\n").into_response()
}

/// A signed-in request: its session, a registry client speaking as the person, and the flash
/// message the last redirect left. Without a session the request goes to the sign-in page.
pub struct Ctx {
    pub state: State,
    pub session: Session,
    pub client: Client,
    flash: Option<Flash>,
}

impl FromRequestParts<State> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, Response> {
        let session = parts.extensions.get::<Loaded>().and_then(|l| l.0.clone());
        let Some(mut session) = session else {
            return Err(Redirect::to("/login").into_response());
        };
        if let Bearer::Person {
            refresh_token,
            expires_at,
            ..
        } = &session.data.bearer
            && *expires_at - 60 < chrono::Utc::now().timestamp()
        {
            let refreshed = match refresh_token {
                Some(token) => state.sign_in.refresh(token).await.ok(),
                None => None,
            };
            let Some(tokens) = refreshed else {
                let _ = state.sessions.delete(&session).await;
                return Err(Redirect::to("/login").into_response());
            };
            session.data.bearer = Bearer::Person {
                id_token: tokens.id_token,
                refresh_token: tokens.refresh_token,
                expires_at: tokens.expires_at,
            };
            if let Err(e) = state.sessions.save(&session).await {
                tracing::warn!(error = %e, "cannot store a refreshed session");
            }
        }
        let jar = CookieJar::from_headers(&parts.headers);
        let flash = jar
            .get(state.cookies.flash)
            .and_then(|c| URL_SAFE_NO_PAD.decode(c.value()).ok())
            .and_then(|bytes| serde_json::from_slice::<Flash>(&bytes).ok())
            .map(|mut flash| {
                // An undo names ids that become a form's path: only well-formed ones.
                if flash.undo.as_ref().is_some_and(|u| {
                    path_id(&u.connector_id).is_none() || path_id(&u.project_id).is_none()
                }) {
                    flash.undo = None;
                }
                flash
            });
        let bearer = match &session.data.bearer {
            Bearer::Person { id_token, .. } => id_token.as_str(),
            Bearer::Key { key } => key.as_str(),
        };
        let client = state
            .registry
            .as_caller(bearer, session.data.team.as_deref());
        Ok(Self {
            state: state.clone(),
            session,
            client,
            flash,
        })
    }
}

impl Ctx {
    pub fn layout(&self, title: impl Into<String>, nav: &'static str) -> Layout {
        let role = self.session.data.role().unwrap_or("none").to_owned();
        Layout {
            title: title.into(),
            nav,
            actor: self.session.data.actor.clone(),
            team: self.session.data.team.clone().unwrap_or_default(),
            teams: self.session.data.teams.clone(),
            can_write: role == "admin",
            is_admin: role == "admin",
            role,
            csrf: self.session.csrf.clone(),
            flash: self.flash.clone(),
        }
    }

    /// A page, clearing the flash message it showed.
    pub fn page(&self, template: &impl askama::Template) -> Response {
        let mut response = render_status(StatusCode::OK, template);
        if self.flash.is_some() {
            let removal = self.state.cookies.removal(self.state.cookies.flash);
            if let Ok(value) = HeaderValue::from_str(&removal.to_string()) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        response
    }

    /// Redirects (303) to `to` with a message for the next page.
    pub fn redirect(&self, to: &str, flash: Flash) -> Response {
        let value = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&flash).expect("a flash serializes"));
        let cookie = self
            .state
            .cookies
            .cookie(self.state.cookies.flash, value, SameSite::Strict);
        let mut response = Redirect::to(to).into_response();
        if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        response
    }

    pub fn ok(&self, to: &str, text: impl Into<String>) -> Response {
        self.redirect(
            to,
            Flash {
                ok: true,
                text: text.into(),
                undo: None,
            },
        )
    }

    /// A refused change: back to `to` with the reason (the session ends when the registry no
    /// longer accepts its credential).
    pub async fn refused(&self, to: &str, status: tonic::Status) -> Response {
        let refusal = Refusal::from(status);
        if refusal.code == tonic::Code::Unauthenticated {
            return self.signed_out().await;
        }
        let mut text = format!("{}: {}", refusal.reason, refusal.message);
        for (field, description) in &refusal.fields {
            text.push_str(&format!(" ({field}: {description})"));
        }
        self.redirect(
            to,
            Flash {
                ok: false,
                text,
                undo: None,
            },
        )
    }

    /// A page that could not be read: the reason, the message and the bad fields.
    pub async fn failed(&self, status: tonic::Status) -> Response {
        let refusal = Refusal::from(status);
        if refusal.code == tonic::Code::Unauthenticated {
            return self.signed_out().await;
        }
        let code = match refusal.code {
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_GATEWAY,
        };
        render_status(
            code,
            &ErrorPage {
                l: self.layout("Cannot show this page", ""),
                reason: refusal.reason,
                message: refusal.message,
                fields: refusal.fields,
            },
        )
    }

    async fn signed_out(&self) -> Response {
        let _ = self.state.sessions.delete(&self.session).await;
        let mut response = Redirect::to("/login").into_response();
        let removal = self.state.cookies.removal(self.state.cookies.session);
        if let Ok(value) = HeaderValue::from_str(&removal.to_string()) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        response
    }
}

/// A posted form's fields in order (repeated names kept, as checkboxes send them).
pub struct Fields(Vec<(String, String)>);

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self(
            url::form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

impl Fields {
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0
            .iter()
            .filter_map(move |(k, v)| Some((k.strip_prefix(prefix)?, v.as_str())))
    }

    pub fn confirmed(&self) -> bool {
        self.get("confirm") == "yes"
    }
}

/// A time as pages show it (UTC, to the second).
pub fn time(t: Option<&Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A path segment for an id taken from a URL or a form: ids never need escaping, so anything
/// else is refused rather than carried into a redirect.
pub fn path_id(id: &str) -> Option<&str> {
    (!id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then_some(id)
}

pub fn bad_request(text: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("{text}\n")).into_response()
}
