//! The Connect client library: what a service links to get provider tokens from the token broker.
//!
//! [`ConnectClient`] presents the deployment's OIDC token (from `CONNECT_OIDC_TOKEN`,
//! `VERCEL_OIDC_TOKEN`, or a file that is re-read when it changes) to `TokenBroker.GetToken`, and
//! keeps the answers in process: bounded, keyed by the connector, every request field and the
//! caller (the OIDC token's `iss` and `sub`), served until `min_ttl` before they expire. Concurrent
//! calls for one key make one broker call. Errors are typed, one [`Error`] variant per reason of the
//! contract. Users' consents go through [`ConnectClient::start_consent`] and
//! [`ConnectClient::finish_consent`] (see [`consent`]).
//!
//! ```no_run
//! use connect_client::{ConnectClient, TokenParams};
//! use secrecy::ExposeSecret;
//!
//! # async fn run() -> Result<(), connect_client::Error> {
//! // CONNECT_BROKER_URL (default http://127.0.0.1:50052), CONNECT_CA, and the OIDC token from
//! // CONNECT_OIDC_TOKEN, VERCEL_OIDC_TOKEN or CONNECT_OIDC_TOKEN_FILE.
//! let connect = ConnectClient::from_env()?;
//! let slack = connect
//!     .get_token("slack/acme-slack", &TokenParams::default().scopes(["chat:write"]))
//!     .await?;
//! println!("token {} expires at {:?}", slack.token_id, slack.expires_at);
//! let _header = format!("Bearer {}", slack.token.expose_secret());
//! # Ok(())
//! # }
//! ```

pub mod consent;
pub mod error;
pub mod oidc;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use connect_proto::broker::v1 as pb;
use moka::future::Cache;
use secrecy::{ExposeSecret, SecretString};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub use crate::{
    consent::{Grant, StartedConsent},
    error::Error,
    oidc::OidcToken,
};

/// Where the broker is when nothing says otherwise.
pub const DEFAULT_BROKER_URL: &str = "http://127.0.0.1:50052";

/// On whose behalf a token is asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Subject {
    /// The deployment itself.
    #[default]
    App,
    /// One of its users, by the id the service knows them by.
    User(String),
}

/// What to ask for, beyond the connector.
#[derive(Clone, Debug, Default)]
pub struct TokenParams {
    pub subject: Subject,
    pub installation_id: Option<String>,
    pub scopes: Vec<String>,
    /// What to narrow the token to, where the connector type can (GitHub repository names).
    pub resources: Vec<String>,
    /// Least remaining life of a token served from the cache (default: the client's, 30 s).
    pub min_ttl: Option<Duration>,
    /// Ask the broker even when the cache has a token; the answer replaces it.
    pub force_refresh: bool,
    /// Deadline of this call (default: the client's, 10 s).
    pub timeout: Option<Duration>,
}

impl TokenParams {
    pub fn user(id: impl Into<String>) -> Self {
        Self {
            subject: Subject::User(id.into()),
            ..Self::default()
        }
    }

    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    pub fn installation(mut self, id: impl Into<String>) -> Self {
        self.installation_id = Some(id.into());
        self
    }

    pub fn resources<I, S>(mut self, resources: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.resources = resources.into_iter().map(Into::into).collect();
        self
    }

    pub fn min_ttl(mut self, min_ttl: Duration) -> Self {
        self.min_ttl = Some(min_ttl);
        self
    }

    pub fn force_refresh(mut self) -> Self {
        self.force_refresh = true;
        self
    }
}

/// A provider token, as the broker handed it out.
#[derive(Clone)]
pub struct Token {
    pub token: SecretString,
    /// The same for every hand-out of this credential.
    pub token_id: String,
    /// `None`: the credential does not expire.
    pub expires_at: Option<SystemTime>,
    pub scopes: Vec<String>,
    pub connector_id: String,
    pub connector_uid: String,
    pub connector_type: String,
    pub installation_id: Option<String>,
    /// The parts of a credential with several (`aws`: `access_key_id`, `secret_access_key`,
    /// `session_token`); empty otherwise. Each is a secret.
    pub credential: std::collections::BTreeMap<String, SecretString>,
}

impl Token {
    /// Whether it expires within `margin` from now.
    pub fn expires_within(&self, margin: Duration) -> bool {
        self.expires_at
            .is_some_and(|at| at <= SystemTime::now() + margin)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("token_id", &self.token_id)
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .field("connector_uid", &self.connector_uid)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    caller: String,
    connector: String,
    subject: Subject,
    installation_id: Option<String>,
    /// Sorted and without duplicates: the order of scopes does not make another token.
    scopes: Vec<String>,
    /// Sorted and without duplicates, like the scopes.
    resources: Vec<String>,
}

impl CacheKey {
    fn new(caller: String, connector: &str, params: &TokenParams) -> Self {
        let sorted = |values: &[String]| {
            let mut values = values.to_vec();
            values.sort();
            values.dedup();
            values
        };
        Self {
            caller,
            connector: connector.to_owned(),
            subject: params.subject.clone(),
            installation_id: params.installation_id.clone(),
            scopes: sorted(&params.scopes),
            resources: sorted(&params.resources),
        }
    }

    fn is_for(&self, connector: &str, params: &TokenParams) -> bool {
        let other = Self::new(self.caller.clone(), connector, params);
        *self == other
    }
}

/// Cached until the token expires; a token without expiry for `no_expiry_ttl`.
struct UntilExpiry {
    no_expiry_ttl: Duration,
}

impl moka::Expiry<CacheKey, Arc<Token>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &CacheKey,
        token: &Arc<Token>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(match token.expires_at {
            Some(at) => at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
            None => self.no_expiry_ttl,
        })
    }
}

/// How a [`ConnectClient`] is made.
#[derive(Debug)]
pub struct ClientBuilder {
    broker_url: String,
    ca: Option<Vec<u8>>,
    oidc: OidcToken,
    min_ttl: Duration,
    timeout: Duration,
    cache_size: u64,
    no_expiry_ttl: Duration,
    proxy_url: Option<String>,
}

/// The base URL of `connector`'s requests through the credential-injecting proxy at `proxy` (a
/// broker's `--proxy-listen` address): `{proxy}/{url-encoded connector}`. Append the provider
/// API's path and send the deployment's OIDC token as `Authorization: Bearer`.
pub fn proxy_base_url(proxy: &str, connector: &str) -> String {
    /// Everything but RFC 3986's unreserved characters.
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    format!(
        "{}/{}",
        proxy.trim_end_matches('/'),
        percent_encoding::utf8_percent_encode(connector, SEGMENT)
    )
}

impl ClientBuilder {
    /// A client of the broker at `broker_url` (`http://` or `https://`), with the OIDC token from
    /// the environment and default settings.
    pub fn new(broker_url: impl Into<String>) -> Self {
        Self {
            broker_url: broker_url.into(),
            ca: None,
            oidc: OidcToken::Environment,
            min_ttl: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            cache_size: 1000,
            no_expiry_ttl: Duration::from_secs(60),
            proxy_url: None,
        }
    }

    /// The broker's credential-injecting proxy (its `--proxy-listen` address, as reachable), for
    /// [`ConnectClient::proxy_base`].
    pub fn proxy_url(mut self, url: impl Into<String>) -> Self {
        self.proxy_url = Some(url.into());
        self
    }

    /// Trust this PEM CA for an `https://` broker (default: the system's roots).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(pem.into());
        self
    }

    pub fn ca_file(self, path: &Path) -> Result<Self, Error> {
        let pem = std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read CA file {}: {e}", path.display())))?;
        Ok(self.ca_pem(pem))
    }

    pub fn oidc_token(mut self, source: OidcToken) -> Self {
        self.oidc = source;
        self
    }

    /// Least remaining life of a token served from the cache.
    pub fn min_ttl(mut self, min_ttl: Duration) -> Self {
        self.min_ttl = min_ttl;
        self
    }

    /// Deadline of each broker call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Most tokens kept (0: none).
    pub fn cache_size(mut self, entries: u64) -> Self {
        self.cache_size = entries;
        self
    }

    /// How long a token that does not expire (an API key) is kept before the broker is asked
    /// again, so that a detach reaches this process within that time.
    pub fn no_expiry_ttl(mut self, ttl: Duration) -> Self {
        self.no_expiry_ttl = ttl;
        self
    }

    /// The client. It connects on first use.
    pub fn build(self) -> Result<ConnectClient, Error> {
        let mut endpoint = Endpoint::from_shared(self.broker_url.clone())
            .map_err(|e| Error::Config(format!("broker URL '{}': {e}", self.broker_url)))?
            .connect_timeout(self.timeout.min(Duration::from_secs(5)));
        if self.broker_url.starts_with("https://") {
            let tls = match &self.ca {
                Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Error::Config(format!("broker TLS: {e}")))?;
        }
        let cache = Cache::builder()
            .max_capacity(self.cache_size)
            .expire_after(UntilExpiry {
                no_expiry_ttl: self.no_expiry_ttl,
            })
            .support_invalidation_closures()
            .build();
        Ok(ConnectClient {
            inner: Arc::new(Inner {
                broker: pb::token_broker_client::TokenBrokerClient::new(endpoint.connect_lazy()),
                broker_url: self.broker_url,
                oidc: self.oidc,
                min_ttl: self.min_ttl,
                timeout: self.timeout,
                cache,
                proxy_url: self.proxy_url,
            }),
        })
    }
}

/// A client of the token broker; cheap to clone (clones share the connection and the cache).
#[derive(Clone, Debug)]
pub struct ConnectClient {
    inner: Arc<Inner>,
}

struct Inner {
    broker: pb::token_broker_client::TokenBrokerClient<Channel>,
    broker_url: String,
    oidc: OidcToken,
    min_ttl: Duration,
    timeout: Duration,
    cache: Cache<CacheKey, Arc<Token>>,
    proxy_url: Option<String>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectClient")
            .field("broker_url", &self.broker_url)
            .field("cached", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl ConnectClient {
    pub fn builder(broker_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(broker_url)
    }

    /// A client configured by the environment: `CONNECT_BROKER_URL` (default
    /// [`DEFAULT_BROKER_URL`]), `CONNECT_CA` (a PEM file, for an `https://` broker), and the OIDC
    /// token from the file `CONNECT_OIDC_TOKEN_FILE` when it is set, else from
    /// `CONNECT_OIDC_TOKEN` or `VERCEL_OIDC_TOKEN`.
    pub fn from_env() -> Result<Self, Error> {
        let url = std::env::var("CONNECT_BROKER_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_BROKER_URL.to_owned());
        let mut builder = ClientBuilder::new(url);
        if let Some(ca) = std::env::var_os("CONNECT_CA").filter(|v| !v.is_empty()) {
            builder = builder.ca_file(Path::new(&ca))?;
        }
        if let Some(file) = std::env::var_os("CONNECT_OIDC_TOKEN_FILE").filter(|v| !v.is_empty()) {
            builder = builder.oidc_token(OidcToken::file(file));
        }
        if let Some(proxy) = std::env::var("CONNECT_PROXY_URL")
            .ok()
            .filter(|v| !v.is_empty())
        {
            builder = builder.proxy_url(proxy);
        }
        builder.build()
    }

    /// The base URL of `connector`'s requests through the broker's credential-injecting proxy
    /// ([`proxy_base_url`]); send them with [`ConnectClient::proxy_authorization`]. A
    /// configuration error when no proxy URL was given (`CONNECT_PROXY_URL`,
    /// [`ClientBuilder::proxy_url`]).
    pub fn proxy_base(&self, connector: &str) -> Result<String, Error> {
        let proxy = self.inner.proxy_url.as_deref().ok_or_else(|| {
            Error::Config(
                "no proxy URL: set CONNECT_PROXY_URL (or ClientBuilder::proxy_url) to the broker's --proxy-listen address".into(),
            )
        })?;
        Ok(proxy_base_url(proxy, connector))
    }

    /// The `Authorization` value of a proxied request: `Bearer` and the deployment's current OIDC
    /// token. Keep it secret.
    pub fn proxy_authorization(&self) -> Result<SecretString, Error> {
        use secrecy::ExposeSecret;
        let oidc = self.inner.oidc.current()?;
        Ok(SecretString::from(format!(
            "Bearer {}",
            oidc.expose_secret()
        )))
    }

    /// A token for `connector` (its uid, e.g. `slack/acme-slack`, or its id): from the cache while
    /// it lives at least `min_ttl` longer, otherwise from the broker, with one broker call per key
    /// however many callers ask at once.
    pub async fn get_token(&self, connector: &str, params: &TokenParams) -> Result<Token, Error> {
        let inner = &self.inner;
        let oidc = inner.oidc.current()?;
        let key = CacheKey::new(oidc::caller_of(&oidc), connector, params);
        let min_ttl = params.min_ttl.unwrap_or(inner.min_ttl);
        if let Some(cached) = inner.cache.get(&key).await {
            if !params.force_refresh && !cached.expires_within(min_ttl) {
                return Ok((*cached).clone());
            }
            inner.cache.invalidate(&key).await;
        }
        let token = inner
            .cache
            .try_get_with(key, self.fetch(&oidc, connector, params))
            .await
            .map_err(|e| (*e).clone())?;
        Ok((*token).clone())
    }

    /// Drops the cached tokens of `connector` with these parameters, for every caller.
    pub fn invalidate(&self, connector: &str, params: &TokenParams) {
        let (connector, params) = (connector.to_owned(), params.clone());
        if self
            .inner
            .cache
            .invalidate_entries_if(move |key, _| key.is_for(&connector, &params))
            .is_err()
        {
            self.inner.cache.invalidate_all();
        }
    }

    /// Drops every cached token.
    pub fn invalidate_all(&self) {
        self.inner.cache.invalidate_all();
    }

    async fn fetch(
        &self,
        oidc: &SecretString,
        connector: &str,
        params: &TokenParams,
    ) -> Result<Arc<Token>, Error> {
        let inner = &self.inner;
        let min_ttl = params.min_ttl.unwrap_or(inner.min_ttl);
        let mut request = tonic::Request::new(pb::GetTokenRequest {
            connector: connector.to_owned(),
            subject: Some(pb::Subject {
                kind: Some(match &params.subject {
                    Subject::App => pb::subject::Kind::App(pb::AppSubject {}),
                    Subject::User(id) => {
                        pb::subject::Kind::User(pb::UserSubject { id: id.clone() })
                    }
                }),
            }),
            installation_id: params.installation_id.clone().unwrap_or_default(),
            scopes: params.scopes.clone(),
            resources: params.resources.clone(),
            // The broker replaces a provider token that would not outlive our own margin.
            min_ttl: Some(prost_types::Duration {
                seconds: i64::try_from(min_ttl.as_secs()).unwrap_or(i64::MAX),
                nanos: min_ttl.subsec_nanos() as i32,
            }),
        });
        request.set_timeout(params.timeout.unwrap_or(inner.timeout));
        authorize(&mut request, oidc)?;
        let answer = inner
            .broker
            .clone()
            .get_token(request)
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        let connector = answer.connector.unwrap_or_default();
        Ok(Arc::new(Token {
            token: SecretString::from(answer.token),
            token_id: answer.token_id,
            expires_at: answer.expires_at.and_then(system_time),
            scopes: answer.scopes,
            connector_id: connector.id,
            connector_uid: connector.uid,
            connector_type: connector.r#type,
            installation_id: Some(answer.installation_id).filter(|i| !i.is_empty()),
            credential: answer
                .credential
                .into_iter()
                .map(|(name, value)| (name, SecretString::from(value)))
                .collect(),
        }))
    }
}

impl ConnectClient {
    /// The error a broker's status stands for, naming the broker when it could not be reached.
    fn error(&self, status: &tonic::Status) -> Error {
        match Error::from_status(status) {
            Error::Unavailable(why) => {
                Error::Unavailable(format!("broker at {}: {why}", self.inner.broker_url))
            }
            other => other,
        }
    }
}

/// Adds the deployment's OIDC token as the bearer of `request`.
fn authorize<T>(request: &mut tonic::Request<T>, oidc: &SecretString) -> Result<(), Error> {
    let mut bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", oidc.expose_secret())
        .parse()
        .map_err(|_| {
            Error::InvalidToken(
                "InvalidTokenError: the OIDC token is not a valid header value".into(),
            )
        })?;
    bearer.set_sensitive(true);
    request.metadata_mut().insert("authorization", bearer);
    Ok(())
}

fn system_time(at: prost_types::Timestamp) -> Option<SystemTime> {
    let seconds = u64::try_from(at.seconds).ok()?;
    let nanos = u32::try_from(at.nanos).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_ignore_scope_order_but_not_anything_else() {
        let a = CacheKey::new(
            "c".into(),
            "x/y",
            &TokenParams::default().scopes(["b", "a", "a"]),
        );
        let b = CacheKey::new(
            "c".into(),
            "x/y",
            &TokenParams::default().scopes(["a", "b"]),
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            CacheKey::new(
                "d".into(),
                "x/y",
                &TokenParams::default().scopes(["a", "b"])
            )
        );
        assert_ne!(
            a,
            CacheKey::new(
                "c".into(),
                "x/y",
                &TokenParams::user("u").scopes(["a", "b"])
            )
        );
        assert!(a.is_for("x/y", &TokenParams::default().scopes(["a", "b"])));
        assert!(!a.is_for("x/z", &TokenParams::default().scopes(["a", "b"])));
        // Resources make another token; their order does not.
        let narrowed = CacheKey::new(
            "c".into(),
            "x/y",
            &TokenParams::default().resources(["web", "api"]),
        );
        assert_ne!(
            narrowed,
            CacheKey::new("c".into(), "x/y", &TokenParams::default())
        );
        assert!(narrowed.is_for(
            "x/y",
            &TokenParams::default().resources(["api", "web", "api"])
        ));
    }

    #[tokio::test]
    async fn proxy_urls_encode_the_connector_as_one_segment() {
        assert_eq!(
            proxy_base_url("https://proxy.example.com/", "api-key/stripe"),
            "https://proxy.example.com/api-key%2Fstripe"
        );
        assert_eq!(
            proxy_base_url("http://127.0.0.1:8090", "conn_0123abc"),
            "http://127.0.0.1:8090/conn_0123abc"
        );
        let client = ClientBuilder::new("http://127.0.0.1:1").build().unwrap();
        assert!(matches!(client.proxy_base("x/y"), Err(Error::Config(_))));
        let client = ClientBuilder::new("http://127.0.0.1:1")
            .proxy_url("http://p")
            .build()
            .unwrap();
        assert_eq!(
            client.proxy_base("oauth2/crm").unwrap(),
            "http://p/oauth2%2Fcrm"
        );
    }

    #[test]
    fn a_token_never_shows_itself() {
        let token = Token {
            token: SecretString::from("sk_live_secret".to_owned()),
            token_id: "tok_1".into(),
            expires_at: None,
            scopes: vec![],
            connector_id: "conn_1".into(),
            connector_uid: "api-key/x".into(),
            connector_type: "api-key".into(),
            installation_id: None,
            credential: [(
                "secret_access_key".to_owned(),
                SecretString::from("wJalrXUtnFEMI".to_owned()),
            )]
            .into(),
        };
        assert!(!format!("{token:?}").contains("sk_live_secret"));
        assert!(!format!("{token:?}").contains("wJalrXUtnFEMI"));
        assert!(!token.expires_within(Duration::from_secs(3600)));
    }
}
