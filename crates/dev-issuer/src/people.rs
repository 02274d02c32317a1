//! The development issuer serves people too, so that `connect login` works on a laptop: an
//! authorization endpoint with a sign-in page listing the configured people (no passwords: it is
//! a development issuer), authorization codes bound to a PKCE S256 challenge and the redirect URI
//! (loopback only), and a token endpoint that exchanges them for ID tokens with `email` and
//! `groups`, with rotating refresh tokens.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Form, Json,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{Alg, Shared, now};

/// A person the development issuer signs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevPerson {
    /// Their `sub`.
    pub subject: String,
    pub email: String,
    pub groups: Vec<String>,
}

/// A code waiting for its exchange.
pub(crate) struct Code {
    person: DevPerson,
    client_id: String,
    challenge: String,
    redirect_uri: String,
    nonce: Option<String>,
}

/// How long the ID tokens it issues to people live.
const ID_TOKEN_SECS: i64 = 600;

#[derive(Deserialize)]
pub(crate) struct AuthorizeQuery {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    state: String,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    nonce: Option<String>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The redirect URI, when it is a loopback `http` URL (RFC 8252 §7.3); nothing else is served.
fn loopback(redirect_uri: &str) -> Option<url::Url> {
    let url = url::Url::parse(redirect_uri).ok()?;
    let host_ok = match url.host()? {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(d) => d == "localhost",
    };
    (url.scheme() == "http" && host_ok).then_some(url)
}

/// `GET /authorize`: the sign-in page, one button per person.
pub(crate) async fn authorize_page(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    if q.response_type != "code"
        || q.code_challenge_method.as_deref() != Some("S256")
        || q.code_challenge.as_deref().is_none_or(str::is_empty)
        || loopback(&q.redirect_uri).is_none()
    {
        return (
            StatusCode::BAD_REQUEST,
            "this issuer takes response_type=code with PKCE S256 and a loopback redirect_uri",
        )
            .into_response();
    }
    let people = shared
        .people
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let hidden = |name: &str, value: &str| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            escape(value)
        )
    };
    let mut form = String::new();
    for person in &people {
        form.push_str(&format!(
            "<form method=\"post\" action=\"/authorize\">{}{}{}{}{}<button name=\"subject\" value=\"{}\">Sign in as {}</button></form>",
            hidden("client_id", &q.client_id),
            hidden("redirect_uri", &q.redirect_uri),
            hidden("state", &q.state),
            hidden("code_challenge", q.code_challenge.as_deref().unwrap_or_default()),
            hidden("nonce", q.nonce.as_deref().unwrap_or_default()),
            escape(&person.subject),
            escape(&person.email),
        ));
    }
    if people.is_empty() {
        form.push_str("<p>This development issuer has nobody to sign in.</p>");
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign in (development)</title></head>\
         <body><h1>Sign in</h1><p>A development issuer: pick who you are.</p>{form}</body></html>"
    ))
    .into_response()
}

#[derive(Deserialize)]
pub(crate) struct SignIn {
    client_id: String,
    redirect_uri: String,
    state: String,
    code_challenge: String,
    #[serde(default)]
    nonce: String,
    subject: String,
}

/// `POST /authorize`: signs the chosen person in and sends the browser back with a code.
pub(crate) async fn sign_in(State(shared): State<Arc<Shared>>, Form(f): Form<SignIn>) -> Response {
    let Some(mut back) = loopback(&f.redirect_uri) else {
        return (
            StatusCode::BAD_REQUEST,
            "redirect_uri must be loopback http",
        )
            .into_response();
    };
    let person = shared
        .people
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|p| p.subject == f.subject)
        .cloned();
    let Some(person) = person else {
        return (StatusCode::BAD_REQUEST, "nobody of that name").into_response();
    };
    let code = format!("dev_code_{:032x}", rand::random::<u128>());
    shared
        .codes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            code.clone(),
            Code {
                person,
                client_id: f.client_id,
                challenge: f.code_challenge,
                redirect_uri: f.redirect_uri,
                nonce: (!f.nonce.is_empty()).then_some(f.nonce),
            },
        );
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &f.state);
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, back.to_string())],
    )
        .into_response()
}

fn oauth_error(error: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response()
}

/// ID token and refresh token for `person`, issued to `client_id`.
fn tokens(shared: &Shared, person: &DevPerson, client_id: &str, nonce: Option<&str>) -> Response {
    let now = now();
    let mut claims = json!({
        "iss": shared.issuer, "sub": person.subject, "aud": client_id,
        "iat": now, "nbf": now, "exp": now + ID_TOKEN_SECS,
        "email": person.email, "groups": person.groups,
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = nonce.into();
    }
    let id_token = crate::sign_claims(shared, &claims, Alg::RS256);
    let refresh = format!("dev_rt_{:032x}", rand::random::<u128>());
    shared
        .refresh_tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(refresh.clone(), (person.clone(), client_id.to_owned()));
    Json(json!({
        "access_token": format!("dev_at_{:032x}", rand::random::<u128>()),
        "token_type": "Bearer",
        "expires_in": ID_TOKEN_SECS,
        "id_token": id_token,
        "refresh_token": refresh,
    }))
    .into_response()
}

/// `POST /oauth/token`: the code with its PKCE verifier, or a refresh token (rotated).
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    match field("grant_type") {
        "authorization_code" => {
            let code = shared
                .codes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(field("code"));
            let Some(code) = code else {
                return oauth_error("invalid_grant");
            };
            let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(field("code_verifier")));
            if challenge != code.challenge
                || field("redirect_uri") != code.redirect_uri
                || field("client_id") != code.client_id
            {
                return oauth_error("invalid_grant");
            }
            tokens(
                &shared,
                &code.person,
                &code.client_id,
                code.nonce.as_deref(),
            )
        }
        "refresh_token" => {
            let found = shared
                .refresh_tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(field("refresh_token"));
            match found {
                Some((person, client_id)) => tokens(&shared, &person, &client_id, None),
                None => oauth_error("invalid_grant"),
            }
        }
        _ => oauth_error("unsupported_grant_type"),
    }
}
