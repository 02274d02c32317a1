//! Users' consents: `StartAuthorization`, the HTTP callback the provider sends the user back to,
//! and `FinishAuthorization`. The flow is OAuth 2.0 authorization code with PKCE (S256), bound to
//! the user who started it in two phases (RFC 9700 §4.7: a consent link opened by another person
//! must not become the starter's grant).
//!
//! Start: the caller is verified and authorized like `GetToken` (link, environment, installation),
//! a random verifier is made, and the registry keeps it sealed with what the grant is for, under a
//! random single-use `state` that expires; the answer is the provider's `authorize_url` with the
//! challenge, the state and the connector's own callback, `/oauth/callback/{connector id}`.
//!
//! Callback: the state is checked before anything else (taken from the registry once, and only at
//! the callback of the connector it was started for: a replayed, expired or foreign state finds
//! nothing, and nothing is exchanged), the deployment's link is checked again, then a provider
//! `error` or a missing code ends it without a grant; otherwise the code is exchanged at
//! `token_url` with the verifier and the tokens are *held* in the registry, unusable, and the
//! browser goes to `return_url` with `connect_request_id` and a one-time `connect_completion`.
//!
//! Finish: the application, in the session of whoever came back, calls `FinishAuthorization` with
//! both and its own user id; the registry stores the grant only for the deployment and user that
//! started it, and discards the tokens (revoked at the provider) when another user finishes it or
//! nobody does in time. Every refusal is a short page, never a stack trace; every page carries
//! headers that keep it out of frames, caches and referrers; no token, code, verifier or
//! completion appears in a page or a log.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use base64::Engine;
use chrono::{DateTime, Utc};
use connect_types::SubjectKind;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::{
    auth::Identity,
    error::{BrokerError, Cause, Result, provider_text},
    issuers::{ExchangedCode, exchange_code},
    outbound::Outbound,
    registry::{
        Authorization, Authorizer, ConsentFinish, GrantKey, HeldConsent, NewConsent, OpenedConsent,
        PendingConsents, StoredGrant,
    },
};

/// How long a consent may take to reach its callback, and then to be finished.
const CONSENT_TTL: Duration = Duration::from_secs(600);
/// The callbacks' path under the public URL; each connector's is this plus `/{connector id}`.
pub const CALLBACK_PATH: &str = "/oauth/callback";

/// A validated `StartAuthorization` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartRequest {
    pub connector: String,
    pub user_id: String,
    pub scopes: Vec<String>,
    pub return_url: url::Url,
    pub installation_id: Option<String>,
}

/// What `StartAuthorization` answers.
#[derive(Clone, Debug)]
pub struct Started {
    pub url: url::Url,
    pub request_id: String,
    pub expires_at: DateTime<Utc>,
    /// The connector's callback, to register at the provider.
    pub redirect_uri: url::Url,
}

/// A validated `FinishAuthorization` request.
#[derive(Clone, Debug)]
pub struct FinishRequest {
    pub request_id: String,
    pub completion: SecretString,
    pub user_id: String,
    pub confirm_provider_subject: Option<String>,
}

/// The consent flow of one broker.
#[derive(Debug)]
pub struct Consents {
    authorizer: Arc<dyn Authorizer>,
    registry: Arc<dyn PendingConsents>,
    outbound: Outbound,
    public_url: url::Url,
}

/// A consent's request id: the first 16 hex digits of its state's SHA-256.
fn request_id(state: &str) -> String {
    hex::encode(&Sha256::digest(state.as_bytes())[..8])
}

/// A PKCE verifier: 64 random unreserved characters.
fn verifier() -> SecretString {
    use rand::Rng;
    SecretString::from(
        rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(64)
            .map(char::from)
            .collect::<String>(),
    )
}

/// The S256 challenge of a verifier (RFC 7636 §4.2).
fn challenge(verifier: &SecretString) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.expose_secret().as_bytes()))
}

impl Consents {
    /// Consents whose callbacks browsers and providers reach at `public_url`.
    pub fn new(
        authorizer: Arc<dyn Authorizer>,
        registry: Arc<dyn PendingConsents>,
        outbound: Outbound,
        public_url: &url::Url,
    ) -> Result<Self> {
        let consents = Self {
            authorizer,
            registry,
            outbound,
            public_url: public_url.clone(),
        };
        if !consents.browser_may_use(public_url) {
            return Err(BrokerError::invalid(
                "public_url",
                "--public-url must be https:// without userinfo (plain http only to loopback under --allow-insecure-loopback)",
            ));
        }
        Ok(consents)
    }

    /// The callback of the connector `connector_id`.
    pub fn redirect_uri(&self, connector_id: &str) -> Result<url::Url> {
        self.public_url
            .join(&format!("{CALLBACK_PATH}/{connector_id}"))
            .map_err(|e| BrokerError::internal("the callback URL", e))
    }

    /// Whether a browser may be sent to `url`: `https://`, or plain `http://` to a loopback host
    /// under `--allow-insecure-loopback`; never with userinfo.
    fn browser_may_use(&self, url: &url::Url) -> bool {
        let https =
            url.scheme() == "https" && url.username().is_empty() && url.password().is_none();
        https
            || (self.outbound.policy().allow_insecure_loopback
                && connect_types::is_loopback_http(url.as_str()))
    }

    /// Starts `identity`'s user's consent for a connector.
    pub async fn start(
        &self,
        identity: &Arc<Identity>,
        request: StartRequest,
        caller_timeout: Option<Duration>,
    ) -> Result<Started> {
        if !self.browser_may_use(&request.return_url) {
            return Err(BrokerError::invalid(
                "return_url",
                "return_url must be https:// without userinfo (plain http only to loopback under --allow-insecure-loopback)",
            ));
        }
        let authorization = self
            .authorizer
            .authorize(
                identity,
                &request.connector,
                request.installation_id.as_deref().unwrap_or_default(),
                caller_timeout,
            )
            .await?;
        authorization.within_ceilings(
            SubjectKind::User,
            request.installation_id.as_deref(),
            &request.scopes,
            &[],
        )?;
        let kind = authorization.connector_type.as_str();
        if !connect_types::capabilities(kind).is_some_and(|row| row.accepts(SubjectKind::User)) {
            return Err(BrokerError::invalid(
                "connector",
                format!("user consents are for connectors with user grants, not {kind}"),
            ));
        }
        let config = |name: &str| authorization.setting(name);
        let authorize_url = config("authorize_url").ok_or_else(|| {
            BrokerError::NoValidToken("the connector has no config.authorize_url".into())
        })?;
        let mut url = url::Url::parse(authorize_url).map_err(|_| {
            BrokerError::NoValidToken("the connector's authorize_url is not a URL".into())
        })?;
        if config("token_url").is_none() {
            return Err(BrokerError::NoValidToken(
                "the connector has no config.token_url to exchange the code at".into(),
            ));
        }
        let client_id = authorization.secret("client_id").ok_or_else(|| {
            BrokerError::NoValidToken("the connector has no 'client_id' secret".into())
        })?;
        let scopes = if request.scopes.is_empty() && !authorization.ceilings.scopes.is_empty() {
            authorization.ceilings.scopes.clone()
        } else if request.scopes.is_empty() {
            config("user_scopes")
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        } else {
            request.scopes.clone()
        };
        let redirect_uri = self.redirect_uri(&authorization.connector_id)?;
        let verifier = verifier();
        let key = GrantKey {
            owner_id: identity.owner_id.clone(),
            project_id: identity.project_id.clone(),
            connector_id: authorization.connector_id.clone(),
            user_id: request.user_id.clone(),
            environment: identity.environment,
            installation_id: authorization
                .installation_id()
                .unwrap_or_default()
                .to_owned(),
        };
        let (state, expires_at) = self
            .registry
            .begin(NewConsent {
                key,
                scopes: scopes.clone(),
                return_url: request.return_url.to_string(),
                redirect_uri: redirect_uri.to_string(),
                code_verifier: verifier.clone(),
                ttl: CONSENT_TTL,
                project_id: identity.project_id.clone(),
                issuer: identity.issuer.clone(),
            })
            .await?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", client_id.expose_secret())
                .append_pair("redirect_uri", redirect_uri.as_str())
                .append_pair("state", &state)
                .append_pair("code_challenge", &challenge(&verifier))
                .append_pair("code_challenge_method", "S256");
            if !scopes.is_empty() {
                query.append_pair("scope", &scopes.join(" "));
            }
        }
        let request_id = request_id(&state);
        tracing::info!(target: "connect::consent", request_id, connector = %authorization.connector_uid,
            owner_id = %identity.owner_id, environment = %identity.environment, "consent started");
        Ok(Started {
            url,
            request_id,
            expires_at,
            redirect_uri,
        })
    }

    /// Finishes a consent for the deployment `identity` (see [`PendingConsents::finish`]).
    pub async fn finish(
        &self,
        identity: &Arc<Identity>,
        request: FinishRequest,
    ) -> Result<StoredGrant> {
        let request_id = request.request_id.clone();
        let finished = self
            .registry
            .finish(
                identity,
                ConsentFinish {
                    request_id: request.request_id,
                    completion: request.completion,
                    user_id: request.user_id,
                    confirm_provider_subject: request.confirm_provider_subject,
                },
            )
            .await;
        match &finished {
            Ok(_) => {
                tracing::info!(target: "connect::consent", request_id, "consent finished: grant stored")
            }
            Err(e) => {
                tracing::info!(target: "connect::consent", request_id, reason = e.reason().as_str(), "consent not finished")
            }
        }
        finished
    }

    /// The callbacks' routes: one per connector; the path without a connector (one callback for
    /// every connector, before they had their own) answers that it is no longer served.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(&format!("{CALLBACK_PATH}/{{connector_id}}"), get(callback))
            .route(CALLBACK_PATH, get(retired_callback))
            .fallback(not_found)
            .layer(axum::middleware::map_response(secure))
            .with_state(self)
    }

    /// One callback of the connector `connector_id`, as its page or redirect.
    async fn complete(&self, connector_id: &str, params: CallbackParams) -> Response {
        // The state first: nothing else is looked at for a request that is not ours.
        let Some(state) = params.state.filter(|s| !s.is_empty() && s.len() <= 256) else {
            return page(
                StatusCode::BAD_REQUEST,
                "This sign-in link is incomplete",
                "The provider sent you back without the request's state. Start again from the application.",
                None,
            );
        };
        if connect_types::ConnectorId::parse(connector_id).is_err() {
            return page(
                StatusCode::NOT_FOUND,
                "No such sign-in address",
                "This address does not belong to a connector. Start again from the application.",
                None,
            );
        }
        let pending = match self.registry.complete(&state, connector_id).await {
            Ok(Some(pending)) => pending,
            Ok(None) => {
                return page(
                    StatusCode::BAD_REQUEST,
                    "This sign-in link cannot be used",
                    "It is unknown, was used already, or has expired. Start again from the application.",
                    None,
                );
            }
            Err(e) => {
                tracing::warn!(error = %connect_runtime::ErrorChain(&e), "consent callback: the registry did not answer");
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Connect cannot finish this sign-in now",
                    "Its registry did not answer. Start again from the application in a moment.",
                    None,
                );
            }
        };
        let back = url::Url::parse(&pending.return_url).ok();
        let request_id = request_id(&state);
        if let Some(error) = params.error {
            let error = provider_text(&error);
            tracing::info!(target: "connect::consent", request_id, error, "consent refused at the provider");
            let text = if error == "access_denied" {
                "You declined the authorization: nothing was stored.".to_owned()
            } else {
                format!("The provider answered {error}: nothing was stored.")
            };
            return page(
                StatusCode::FORBIDDEN,
                "Authorization not given",
                &text,
                back.as_ref(),
            );
        }
        let Some(code) = params.code.filter(|c| !c.is_empty() && c.len() <= 4096) else {
            return page(
                StatusCode::BAD_REQUEST,
                "This sign-in link is incomplete",
                "The provider sent you back without an authorization code: nothing was stored.",
                back.as_ref(),
            );
        };
        match self.hold(pending, &code, &request_id).await {
            Ok(completion) => {
                tracing::info!(target: "connect::consent", request_id, "consent held until the application finishes it");
                match back {
                    Some(mut back) => {
                        back.query_pairs_mut()
                            .append_pair("connect_request_id", &request_id)
                            .append_pair("connect_completion", completion.expose_secret());
                        Redirect::to(back.as_str()).into_response()
                    }
                    None => page(
                        StatusCode::OK,
                        "Authorized",
                        "Return to the application to finish.",
                        None,
                    ),
                }
            }
            Err(e) => {
                tracing::warn!(target: "connect::consent", request_id, error = %connect_runtime::ErrorChain(&e), "consent not held");
                let (status, text) = match e {
                    BrokerError::ProviderUnavailable(_) | BrokerError::RegistryUnavailable(_) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "A service Connect needs did not answer: nothing was stored. Start again in a moment.",
                    ),
                    BrokerError::ClientNotLinkedToProject { .. }
                    | BrokerError::ClientNotEnabledForEnvironment { .. }
                    | BrokerError::ConnectorNotFound(_)
                    | BrokerError::ConnectorSuspended(_)
                    | BrokerError::InstallationNotFound { .. } => (
                        StatusCode::FORBIDDEN,
                        "The application may no longer use this connector: nothing was stored.",
                    ),
                    _ => (
                        StatusCode::BAD_GATEWAY,
                        "The provider did not accept the authorization: nothing was stored. Start again from the application.",
                    ),
                };
                page(status, "Authorization not completed", text, back.as_ref())
            }
        }
    }

    /// Checks the deployment's link again, exchanges the code and holds the tokens until the
    /// application finishes the consent; answers with the one-time completion secret.
    async fn hold(
        &self,
        pending: OpenedConsent,
        code: &str,
        request_id: &str,
    ) -> Result<SecretString> {
        let key = pending.key;
        let identity = Arc::new(Identity {
            issuer: pending.issuer,
            owner_id: key.owner_id.clone(),
            project_id: pending.project_id,
            environment: key.environment,
        });
        let authorization = self
            .authorizer
            .authorize(&identity, &key.connector_id, &key.installation_id, None)
            .await?;
        let config = |name: &str| authorization.setting(name);
        let secret = |name: &str| authorization.secret(name);
        let token_url = config("token_url").ok_or_else(|| {
            BrokerError::NoValidToken("the connector has no config.token_url".into())
        })?;
        let token_url = self.outbound.check(token_url).map_err(|_| {
            BrokerError::NoValidToken(
                "the connector's token_url is not an allowed destination".into(),
            )
        })?;
        let exchanged = exchange_code(
            self.outbound.http(),
            &token_url,
            (secret("client_id"), secret("client_secret")),
            code,
            &pending.redirect_uri,
            &pending.code_verifier,
            pending.scopes,
        )
        .await?;
        let provider_subject = self.provider_subject(&authorization, &exchanged).await?;
        self.registry
            .hold(HeldConsent {
                request_id: request_id.to_owned(),
                key,
                project_id: identity.project_id.clone(),
                issuer: identity.issuer.clone(),
                tokens: exchanged.tokens,
                ttl: CONSENT_TTL,
                provider_subject,
            })
            .await
    }

    /// The provider account a consent signed in as: the `sub` of the OpenID `id_token` the
    /// token endpoint returned, else the `sub` (or `id`) of the connector's `userinfo_url`
    /// answer; `None` when the provider names neither.
    async fn provider_subject(
        &self,
        authorization: &Authorization,
        exchanged: &ExchangedCode,
    ) -> Result<Option<String>> {
        if let Some(id_token) = &exchanged.id_token {
            let client_id = authorization.secret("client_id").map(|s| s.expose_secret());
            return id_token_subject(id_token.expose_secret(), client_id)
                .map(Some)
                .map_err(|why| {
                    BrokerError::NoValidToken(format!(
                        "the provider's id_token cannot be used: {why}"
                    ))
                });
        }
        let Some(url) = authorization.setting("userinfo_url") else {
            return Ok(None);
        };
        let url = self.outbound.check(url).map_err(|_| {
            BrokerError::NoValidToken(
                "the connector's userinfo_url is not an allowed destination".into(),
            )
        })?;
        let unavailable = |why: String| BrokerError::ProviderUnavailable(Box::new(Cause(why)));
        let request = http::Request::get(url.as_str())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", exchanged.tokens.access_token.expose_secret()),
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| unavailable(format!("userinfo request: {e}")))?;
        let answer = crate::issuers::send(self.outbound.http(), request)
            .await
            .map_err(|e| unavailable(format!("userinfo: {e}")))?;
        if !answer.status().is_success() {
            return Err(BrokerError::NoValidToken(format!(
                "the provider's userinfo answered HTTP {}",
                answer.status().as_u16()
            )));
        }
        let info: serde_json::Value = serde_json::from_slice(answer.body())
            .map_err(|_| unavailable("userinfo: an unreadable answer".into()))?;
        let subject = match (&info["sub"], &info["id"]) {
            (serde_json::Value::String(sub), _) => sub.clone(),
            (_, serde_json::Value::String(id)) => id.clone(),
            (_, serde_json::Value::Number(id)) => id.to_string(),
            _ => {
                return Err(BrokerError::NoValidToken(
                    "the provider's userinfo names no account (no sub or id)".into(),
                ));
            }
        };
        Ok(Some(provider_text(&subject)))
    }
}

/// The `sub` of an OpenID `id_token` received straight from the token endpoint over TLS, which
/// OpenID Connect Core §3.1.3.7 lets stand in for its signature; its `aud` must name the
/// connector's client (when it has a client id) and it must not have expired.
fn id_token_subject(
    id_token: &str,
    client_id: Option<&str>,
) -> std::result::Result<String, String> {
    use openidconnect::core::{CoreIdToken, CoreIdTokenVerifier};
    let token: CoreIdToken = id_token
        .parse()
        .map_err(|_| "it is not a JWT with OpenID claims".to_owned())?;
    let verifier = CoreIdTokenVerifier::new_insecure_without_verification();
    let claims = token
        .claims(&verifier, |_: Option<&openidconnect::Nonce>| Ok(()))
        .map_err(|e| provider_text(&e.to_string()))?;
    if let Some(client_id) = client_id
        && !claims.audiences().iter().any(|a| a.as_str() == client_id)
    {
        return Err("its aud does not name the connector's client".into());
    }
    Ok(provider_text(claims.subject().as_str()))
}

#[derive(Debug, serde::Deserialize)]
struct CallbackParams {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

async fn callback(
    State(consents): State<Arc<Consents>>,
    Path(connector_id): Path<String>,
    Query(params): Query<CallbackParams>,
) -> Response {
    consents.complete(&connector_id, params).await
}

async fn retired_callback() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "This sign-in address is no longer used",
        "Each connector now has its own callback address. Start again from the application; if this keeps happening, the provider still has the old address registered.",
        None,
    )
}

async fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is nothing here.",
        None,
    )
}

/// Headers on every answer of the callback: no framing, no sniffing, no referrer (the redirect
/// carries a one-time secret to the application), no caching.
async fn secure(mut response: Response) -> Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// A short HTML page, text escaped, with a way back to the application when there is one.
fn page(status: StatusCode, title: &str, text: &str, back: Option<&url::Url>) -> Response {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let link = back
        .map(|b| {
            format!(
                "<p><a href=\"{}\">Back to the application</a></p>",
                escape(b.as_str())
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1><p>{x}</p>{link}</body></html>",
        t = escape(title),
        x = escape(text),
    );
    (status, Html(body)).into_response()
}
