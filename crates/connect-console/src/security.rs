//! The console's one gate, in front of every route: it reads the session, refuses a
//! state-changing request that did not come from one of the console's own pages, and puts the
//! security headers on every response (errors and static files included).
//!
//! A POST passes when the browser says it is same-origin (`Sec-Fetch-Site`) or, from a browser
//! that does not send that header, when `Origin` is the public URL's origin; and when its form
//! carries the session's CSRF token (the API-key sign-in, which has no session yet, is checked
//! for its origin only). Every other method but GET and HEAD is refused.

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State as AxumState},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use sha2::{Digest, Sha256};

use crate::{State, session::Session};

/// The largest form the console reads.
pub const MAX_FORM: usize = 256 * 1024;

/// Where a request's session was found (by the gate, for the handlers).
#[derive(Clone, Debug)]
pub struct Loaded(pub Option<Session>);

#[derive(Clone, Debug)]
pub struct CookieNames {
    pub session: &'static str,
    pub sign_in: &'static str,
    pub flash: &'static str,
    pub secure: bool,
}

impl CookieNames {
    pub fn for_url(url: &url::Url) -> Self {
        if url.scheme() == "https" {
            Self {
                session: "__Host-connect_session",
                sign_in: "__Host-connect_sign_in",
                flash: "__Host-connect_flash",
                secure: true,
            }
        } else {
            Self {
                session: "connect_session",
                sign_in: "connect_sign_in",
                flash: "connect_flash",
                secure: false,
            }
        }
    }

    /// A cookie for the whole console, never readable by script; `SameSite=Strict` unless it
    /// must come back on the identity provider's redirect (`Lax`).
    pub fn cookie(
        &self,
        name: &'static str,
        value: String,
        same_site: SameSite,
    ) -> Cookie<'static> {
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(same_site)
            .build()
    }

    pub fn removal(&self, name: &'static str) -> Cookie<'static> {
        let mut c = self.cookie(name, String::new(), SameSite::Strict);
        c.make_removal();
        c
    }
}

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

fn forbidden(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("Forbidden: {why}\n"),
    )
        .into_response()
}

fn same_origin(state: &State, request: &Request) -> bool {
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() == b"same-origin";
    }
    let origin = state.public_url.origin().ascii_serialization();
    headers
        .get(header::ORIGIN)
        .is_some_and(|o| o.as_bytes() == origin.as_bytes())
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The gate.
pub async fn gate(AxumState(state): AxumState<State>, request: Request, next: Next) -> Response {
    let mut response = check(state.clone(), request, next).await;
    let headers = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(
        headers,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        headers,
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    set(
        headers,
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=(), payment=()",
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    if state.cookies.secure {
        set(
            headers,
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000",
        );
    }
    response
}

async fn check(state: State, request: Request, next: Next) -> Response {
    let jar = CookieJar::from_headers(request.headers());
    let session = match jar.get(state.cookies.session) {
        Some(cookie) => match state.sessions.get(cookie.value()).await {
            Ok(session) => session,
            Err(e) => {
                tracing::error!(error = %connect_runtime::ErrorChain(&e), "cannot read a session");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Sessions are unavailable.\n",
                )
                    .into_response();
            }
        },
        None => None,
    };
    let method = request.method().clone();
    if method == Method::GET || method == Method::HEAD {
        let mut request = request;
        request.extensions_mut().insert(Loaded(session));
        return next.run(request).await;
    }
    if method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD, POST")],
        )
            .into_response();
    }
    if !same_origin(&state, &request) {
        return forbidden("this form was not sent from the console's own pages");
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_FORM).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.\n").into_response();
    };
    let sent = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    let without_session = parts.uri.path() == "/login/key";
    match (&session, sent) {
        (Some(session), Some(sent)) if digest(&sent) == digest(&session.csrf) => {}
        (None, _) if without_session => {}
        (None, _) => {
            return axum::response::Redirect::to("/login").into_response();
        }
        _ => return forbidden("the form's CSRF token is missing or stale; reload the page"),
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(Loaded(session));
    next.run(request).await
}
