//! Users' consents: `StartAuthorization` and the HTTP callback the provider sends the user back
//! to. The flow is OAuth 2.0 authorization code with PKCE (S256). Start: the caller is verified and
//! authorized like `GetToken` (link, environment, installation), a random verifier is made, and
//! the registry keeps it sealed with what the grant is for, under a random single-use `state`
//! that expires; the answer is the provider's `authorize_url` with the challenge and the state.
//! Callback: the state is checked before anything else (taken from the registry, once: a
//! replayed, expired or foreign state finds nothing), the deployment's link is checked again,
//! then a provider `error` or a missing code ends it without a grant; otherwise the code is
//! exchanged at `token_url` with the verifier, the grant stored in the registry, and the browser
//! sent to `return_url`. Every refusal is a short page, never a stack trace; no token, code or
//! verifier appears in a page or a log.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Query, State},
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
    error::{BrokerError, Result, truncate},
    issuers::exchange_code,
    outbound::Outbound,
    registry::{Authorizer, GrantKey, NewConsent, OpenedConsent, PendingConsents},
};

/// How long a consent may take.
const CONSENT_TTL: Duration = Duration::from_secs(600);
/// The callback's path under the public URL.
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
}

/// The consent flow of one broker.
#[derive(Debug)]
pub struct Consents {
    authorizer: Arc<dyn Authorizer>,
    registry: Arc<dyn PendingConsents>,
    outbound: Outbound,
    redirect_uri: url::Url,
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
    /// Consents whose callback browsers and providers reach at `public_url`.
    pub fn new(
        authorizer: Arc<dyn Authorizer>,
        registry: Arc<dyn PendingConsents>,
        outbound: Outbound,
        public_url: &url::Url,
    ) -> Result<Self> {
        let redirect_uri = public_url
            .join(CALLBACK_PATH)
            .map_err(|e| BrokerError::internal("the callback URL", e))?;
        Ok(Self {
            authorizer,
            registry,
            outbound,
            redirect_uri,
        })
    }

    /// Starts `identity`'s user's consent for a connector.
    pub async fn start(
        &self,
        identity: &Arc<Identity>,
        request: StartRequest,
        caller_timeout: Option<Duration>,
    ) -> Result<Started> {
        let loopback = matches!(
            request.return_url.host(),
            Some(url::Host::Domain("localhost"))
        ) || match request.return_url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            _ => false,
        };
        let allowed = request.return_url.scheme() == "https"
            || (loopback && self.outbound.policy().allow_insecure_loopback);
        if !allowed
            || request.return_url.username() != ""
            || request.return_url.password().is_some()
        {
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
        let scopes = if request.scopes.is_empty() {
            config("user_scopes")
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        } else {
            request.scopes.clone()
        };
        let verifier = verifier();
        let key = GrantKey {
            owner_id: identity.owner_id.clone(),
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
                redirect_uri: self.redirect_uri.to_string(),
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
                .append_pair("redirect_uri", self.redirect_uri.as_str())
                .append_pair("state", &state)
                .append_pair("code_challenge", &challenge(&verifier))
                .append_pair("code_challenge_method", "S256");
            if !scopes.is_empty() {
                query.append_pair("scope", &scopes.join(" "));
            }
        }
        let request_id = hex::encode(&Sha256::digest(state.as_bytes())[..8]);
        tracing::info!(target: "connect::consent", request_id, connector = %authorization.connector_uid,
            owner_id = %identity.owner_id, environment = %identity.environment, "consent started");
        Ok(Started {
            url,
            request_id,
            expires_at,
        })
    }

    /// The callback's routes.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(CALLBACK_PATH, get(callback))
            .with_state(self)
    }

    /// One callback, as its page or redirect.
    async fn complete(&self, params: CallbackParams) -> Response {
        // The state first: nothing else is looked at for a request that is not ours.
        let Some(state) = params.state.filter(|s| !s.is_empty() && s.len() <= 256) else {
            return page(
                StatusCode::BAD_REQUEST,
                "This sign-in link is incomplete",
                "The provider sent you back without the request's state. Start again from the application.",
                None,
            );
        };
        let pending = match self.registry.complete(&state).await {
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
        let request_id = hex::encode(&Sha256::digest(state.as_bytes())[..8]);
        if let Some(error) = params.error {
            tracing::info!(target: "connect::consent", request_id, error = %truncate(&error, 64), "consent refused at the provider");
            let text = if error == "access_denied" {
                "You declined the authorization: nothing was stored.".to_owned()
            } else {
                format!(
                    "The provider answered {}: nothing was stored.",
                    truncate(&error, 64)
                )
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
        match self.store(pending, &code).await {
            Ok(()) => {
                tracing::info!(target: "connect::consent", request_id, "consent stored");
                match back {
                    Some(back) => Redirect::to(back.as_str()).into_response(),
                    None => page(
                        StatusCode::OK,
                        "Authorized",
                        "You can close this window.",
                        None,
                    ),
                }
            }
            Err(e) => {
                tracing::warn!(target: "connect::consent", request_id, error = %connect_runtime::ErrorChain(&e), "consent not stored");
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

    /// Checks the deployment's link again, exchanges the code and stores the grant.
    async fn store(&self, pending: OpenedConsent, code: &str) -> Result<()> {
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
        let tokens = exchange_code(
            self.outbound.http(),
            &token_url,
            (secret("client_id"), secret("client_secret")),
            code,
            &pending.redirect_uri,
            &pending.code_verifier,
            pending.scopes,
        )
        .await?;
        self.registry.store_grant(&key, &tokens).await
    }
}

#[derive(Debug, serde::Deserialize)]
struct CallbackParams {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

async fn callback(
    State(consents): State<Arc<Consents>>,
    Query(params): Query<CallbackParams>,
) -> Response {
    consents.complete(params).await
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
