//! Signing people in with the operator issuer through `openidconnect`: authorization code with
//! PKCE (S256), `state` and `nonce`, the ID token verified against the issuer's JWKS (RS256 or
//! ES256), and refreshed with the refresh token before it expires. The discovery document is
//! read on first use and kept; a failed read is tried again on the next sign-in.

use std::time::Duration;

use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RefreshToken, Scope,
    core::{CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata},
};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use crate::{config::ConsoleConfig, session::PendingSignIn};

/// The `openidconnect` client as discovery makes it, with the console's redirect.
type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

#[derive(Debug)]
pub struct SignIn {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: Option<secrecy::SecretString>,
    redirect: RedirectUrl,
    http: reqwest::Client,
    metadata: OnceCell<CoreProviderMetadata>,
}

/// A person's tokens after a sign-in or a refresh.
pub struct Tokens {
    pub id_token: String,
    pub refresh_token: Option<String>,
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SignInError(String);

fn provider_text(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn algs() -> [CoreJwsSigningAlgorithm; 2] {
    [
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    ]
}

impl SignIn {
    pub fn new(config: &ConsoleConfig, public_url: &url::Url) -> anyhow::Result<Self> {
        let issuer = IssuerUrl::new(
            config
                .operator_issuer
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
        )?;
        let redirect = RedirectUrl::new(
            public_url
                .join("auth/callback")
                .map_err(|e| anyhow::anyhow!("--public-url: {e}"))?
                .to_string(),
        )?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            issuer,
            client_id: ClientId::new(config.client_id.clone()),
            client_secret: config.client_secret.clone(),
            redirect,
            http,
            metadata: OnceCell::new(),
        })
    }

    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    async fn metadata(&self) -> Result<&CoreProviderMetadata, SignInError> {
        self.metadata
            .get_or_try_init(|| async {
                CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
                    .await
                    .map_err(|e| {
                        SignInError(format!(
                            "cannot read the identity provider's discovery document: {}",
                            provider_text(&e.to_string())
                        ))
                    })
            })
            .await
    }

    /// The client at the provider, its redirect set.
    async fn client(&self) -> Result<Client, SignInError> {
        let metadata = self.metadata().await?.clone();
        Ok(CoreClient::from_provider_metadata(
            metadata,
            self.client_id.clone(),
            self.client_secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose_secret().to_owned())),
        )
        .set_redirect_uri(self.redirect.clone()))
    }

    /// Where to send the browser, and what to keep until it comes back.
    pub async fn start(&self) -> Result<(String, PendingSignIn), SignInError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("offline_access".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok((
            url.to_string(),
            PendingSignIn {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
            },
        ))
    }

    /// Exchanges the code that came back for verified tokens.
    pub async fn finish(&self, code: &str, pending: PendingSignIn) -> Result<Tokens, SignInError> {
        let client = self.client().await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SignInError(format!("the identity provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                SignInError(format!(
                    "the code exchange failed: {}",
                    provider_text(&e.to_string())
                ))
            })?;
        let id_token = token.extra_fields().id_token().ok_or_else(|| {
            SignInError("the identity provider answered without an ID token".into())
        })?;
        let verifier = client.id_token_verifier().set_allowed_algs(algs());
        let claims = id_token
            .claims(&verifier, &Nonce::new(pending.nonce))
            .map_err(|e| SignInError(format!("the ID token is not valid: {e}")))?;
        Ok(Tokens {
            id_token: id_token.to_string(),
            refresh_token: token.refresh_token().map(|t| t.secret().clone()),
            expires_at: claims.expiration().timestamp(),
        })
    }

    /// New tokens for a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, SignInError> {
        let client = self.client().await?;
        let refresh = RefreshToken::new(refresh_token.to_owned());
        let token = client
            .exchange_refresh_token(&refresh)
            .map_err(|e| SignInError(format!("the identity provider has no token endpoint: {e}")))?
            .request_async(&self.http)
            .await
            .map_err(|e| {
                SignInError(format!(
                    "the sign-in could not be refreshed: {}",
                    provider_text(&e.to_string())
                ))
            })?;
        let id_token = token
            .extra_fields()
            .id_token()
            .ok_or_else(|| SignInError("the refresh answered without an ID token".into()))?;
        let verifier = client.id_token_verifier().set_allowed_algs(algs());
        let claims = id_token
            .claims(&verifier, |_: Option<&Nonce>| Ok(()))
            .map_err(|e| SignInError(format!("the refreshed ID token is not valid: {e}")))?;
        Ok(Tokens {
            id_token: id_token.to_string(),
            refresh_token: token
                .refresh_token()
                .map(|t| t.secret().clone())
                .or_else(|| Some(refresh_token.to_owned())),
            expires_at: claims.expiration().timestamp(),
        })
    }
}
