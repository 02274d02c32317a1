//! Signing in and out, switching teams, and who am I.

use axum::{
    Extension,
    extract::{Query, State as AxumState},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::cookie::{CookieJar, SameSite};
use connect_proto::registry::v1 as pb;
use serde::Deserialize;

use super::{Ctx, Fields};
use crate::{
    State,
    security::Loaded,
    session::{Bearer, SessionData, TeamRole},
    views::{ConfirmPage, LoginPage, MePage, SignedInPage, render, render_status},
};

fn login_error(state: &State, status: StatusCode, error: impl Into<String>) -> Response {
    render_status(
        status,
        &LoginPage {
            issuer: state.sign_in.issuer().to_owned(),
            allow_key_login: state.config.allow_key_login,
            error: Some(error.into()),
        },
    )
}

fn with_cookie(mut response: Response, cookie: String) -> Response {
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

pub async fn login_page(
    AxumState(state): AxumState<State>,
    Extension(loaded): Extension<Loaded>,
) -> Response {
    if loaded.0.is_some() {
        return Redirect::to("/").into_response();
    }
    render(&LoginPage {
        issuer: state.sign_in.issuer().to_owned(),
        allow_key_login: state.config.allow_key_login,
        error: None,
    })
}

/// Sends the browser to the identity provider, remembering the sign-in under a cookie of this
/// browser (`SameSite=Lax`: it must come back on the provider's redirect).
pub async fn login_start(AxumState(state): AxumState<State>) -> Response {
    let (url, pending) = match state.sign_in.start().await {
        Ok(started) => started,
        Err(e) => return login_error(&state, StatusCode::BAD_GATEWAY, e.to_string()),
    };
    let cookie = match state.sessions.begin_sign_in(&pending).await {
        Ok(cookie) => cookie,
        Err(e) => {
            tracing::error!(error = %e, "cannot record a sign-in");
            return login_error(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                "Sessions are unavailable.",
            );
        }
    };
    let cookie = state
        .cookies
        .cookie(state.cookies.sign_in, cookie, SameSite::Lax);
    with_cookie(Redirect::to(&url).into_response(), cookie.to_string())
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Who a bearer is, as the registry answers; `None` with a message for the sign-in page.
async fn who(state: &State, bearer: &str) -> Result<pb::WhoAmIResponse, String> {
    let mut client = state.registry.as_caller(bearer, None);
    match client.who_am_i(pb::WhoAmIRequest::default()).await {
        Ok(who) => Ok(who.into_inner()),
        Err(status) => {
            let refusal = crate::registry::Refusal::from(status);
            Err(format!(
                "The registry refused this sign-in ({}): {}",
                refusal.reason, refusal.message
            ))
        }
    }
}

async fn start_session(state: &State, bearer: Bearer, who: pb::WhoAmIResponse) -> Response {
    let teams: Vec<TeamRole> = who
        .teams
        .iter()
        .map(|t| TeamRole {
            team: t.team_id.clone(),
            role: t.role.clone(),
        })
        .collect();
    if teams.is_empty() {
        return login_error(
            state,
            StatusCode::FORBIDDEN,
            format!(
                "{} is signed in but has no role in any team: ask an admin for a role binding.",
                who.actor
            ),
        );
    }
    let data = SessionData {
        bearer,
        actor: who.actor,
        team: teams.first().map(|t| t.team.clone()),
        teams,
    };
    let cookie = match state.sessions.create(&data).await {
        Ok(cookie) => cookie,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a session");
            return login_error(
                state,
                StatusCode::SERVICE_UNAVAILABLE,
                "Sessions are unavailable.",
            );
        }
    };
    tracing::info!(actor = %data.actor, "signed in to the console");
    let session = state
        .cookies
        .cookie(state.cookies.session, cookie, SameSite::Strict);
    // A page rather than a redirect: the strict session cookie is not sent on a redirect chain
    // that began at the identity provider, but is on this page's own navigation.
    let response = render(&SignedInPage {});
    let response = with_cookie(response, session.to_string());
    with_cookie(
        response,
        state.cookies.removal(state.cookies.sign_in).to_string(),
    )
}

/// The identity provider's redirect back: the browser's own sign-in, its `state`, the code.
pub async fn callback(
    AxumState(state): AxumState<State>,
    jar: CookieJar,
    Query(back): Query<Callback>,
) -> Response {
    let pending = match jar.get(state.cookies.sign_in) {
        Some(cookie) => state.sessions.take_sign_in(cookie.value()).await,
        None => Ok(None),
    };
    let pending = match pending {
        Ok(Some(pending)) => pending,
        Ok(None) => {
            return login_error(
                &state,
                StatusCode::BAD_REQUEST,
                "This sign-in was not started in this browser or took too long: sign in again.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read a sign-in");
            return login_error(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                "Sessions are unavailable.",
            );
        }
    };
    if let Some(error) = back.error {
        let description = back.error_description.unwrap_or_default();
        return login_error(
            &state,
            StatusCode::BAD_REQUEST,
            format!("The identity provider answered {error}: {description}"),
        );
    }
    if back.state.as_deref() != Some(pending.state.as_str()) {
        return login_error(
            &state,
            StatusCode::BAD_REQUEST,
            "The identity provider came back with another sign-in's state: sign in again.",
        );
    }
    let Some(code) = back.code else {
        return login_error(
            &state,
            StatusCode::BAD_REQUEST,
            "The identity provider sent no code.",
        );
    };
    let tokens = match state.sign_in.finish(&code, pending).await {
        Ok(tokens) => tokens,
        Err(e) => return login_error(&state, StatusCode::BAD_GATEWAY, e.to_string()),
    };
    let who = match who(&state, &tokens.id_token).await {
        Ok(who) => who,
        Err(message) => return login_error(&state, StatusCode::FORBIDDEN, message),
    };
    start_session(
        &state,
        Bearer::Person {
            id_token: tokens.id_token,
            refresh_token: tokens.refresh_token,
            expires_at: tokens.expires_at,
        },
        who,
    )
    .await
}

/// `--allow-key-login`: a session speaking with an API key.
pub async fn login_key(AxumState(state): AxumState<State>, fields: Fields) -> Response {
    if !state.config.allow_key_login {
        return (StatusCode::NOT_FOUND, "Not found.\n").into_response();
    }
    let key = fields.get("key").trim().to_owned();
    if key.is_empty() || key.len() > 256 {
        return login_error(&state, StatusCode::BAD_REQUEST, "Give an API key.");
    }
    let who = match who(&state, &key).await {
        Ok(who) => who,
        Err(message) => return login_error(&state, StatusCode::FORBIDDEN, message),
    };
    let mut response = start_session(&state, Bearer::Key { key }, who).await;
    if response.status() == StatusCode::OK {
        // Same-site already: no page in between is needed.
        let cookies: Vec<_> = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        response = Redirect::to("/").into_response();
        for c in cookies {
            response.headers_mut().append(header::SET_COOKIE, c);
        }
    }
    response
}

pub async fn logout_page(ctx: Ctx) -> Response {
    ctx.page(&ConfirmPage {
        l: ctx.layout("Sign out", ""),
        heading: "Sign out".into(),
        consequence: "This ends your session in every tab and on every console replica.".into(),
        action: "/logout".into(),
        button: "Sign out".into(),
        back: "/".into(),
        fields: Vec::new(),
    })
}

/// Ends the session everywhere: its row is deleted, so the cookie opens nothing any more.
pub async fn logout(ctx: Ctx) -> Response {
    if let Err(e) = ctx.state.sessions.delete(&ctx.session).await {
        tracing::error!(error = %e, "cannot end a session");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "Sessions are unavailable.\n",
        )
            .into_response();
    }
    tracing::info!(actor = %ctx.session.data.actor, "signed out of the console");
    with_cookie(
        Redirect::to("/login").into_response(),
        ctx.state
            .cookies
            .removal(ctx.state.cookies.session)
            .to_string(),
    )
}

pub async fn switch_team(mut ctx: Ctx, fields: Fields) -> Response {
    let team = fields.get("team");
    if !ctx.session.data.teams.iter().any(|t| t.team == team) {
        return ctx.redirect(
            "/me",
            crate::views::Flash {
                ok: false,
                text: format!("You have no role in {team}."),
                undo: None,
            },
        );
    }
    ctx.session.data.team = Some(team.to_owned());
    if let Err(e) = ctx.state.sessions.save(&ctx.session).await {
        tracing::error!(error = %e, "cannot store a session");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "Sessions are unavailable.\n",
        )
            .into_response();
    }
    ctx.ok("/", format!("Now acting in {team}."))
}

/// Who am I, asked of the registry (so a role granted or taken away since sign-in shows here
/// and in the session's menus from now on).
pub async fn me(mut ctx: Ctx) -> Response {
    let who = match ctx.client.who_am_i(pb::WhoAmIRequest::default()).await {
        Ok(who) => who.into_inner(),
        Err(status) => return ctx.failed(status).await,
    };
    let teams: Vec<TeamRole> = who
        .teams
        .iter()
        .map(|t| TeamRole {
            team: t.team_id.clone(),
            role: t.role.clone(),
        })
        .collect();
    if teams != ctx.session.data.teams {
        ctx.session.data.teams = teams;
        if ctx
            .session
            .data
            .team
            .as_ref()
            .is_none_or(|t| !ctx.session.data.teams.iter().any(|r| &r.team == t))
        {
            ctx.session.data.team = ctx.session.data.teams.first().map(|t| t.team.clone());
        }
        if let Err(e) = ctx.state.sessions.save(&ctx.session).await {
            tracing::warn!(error = %e, "cannot store a session");
        }
    }
    ctx.page(&MePage {
        l: ctx.layout("Who am I", ""),
        kind: who.kind,
        issuer: who.issuer,
        subject: who.subject,
        email: who.email,
        key_id: who.key_id,
    })
}
