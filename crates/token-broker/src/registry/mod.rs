//! The link registry, as the broker's core sees it: a port in the broker's own terms. The core
//! (`service`, `issuers`, `consent`, `ledger`, `feed`) asks through the traits below and gets the
//! types below; it never names a protobuf message. Three things live here and nothing else does:
//!
//! - the port: [`Authorizer`] (may this deployment use this connector, with what issuing needs),
//!   [`IssuanceRecorder`] (the ledger), [`GrantLeases`] (users' grants, one refresh at a time
//!   across brokers), [`PendingConsents`] (a consent between its start and its callback),
//!   [`Revocations`] (what brokers report and claim) and [`ChangeFeed`] (what changed);
//! - [`RegistryClient`] (`grpc`), the adapter that speaks `connect.registry.v1.RegistryRuntime`
//!   over one channel: the only module of the broker that names the registry's protobuf types.
//!   Every call has a deadline; the registry's "no" becomes the matching broker error, anything
//!   else (unreachable, slow, refusing our key, answering garbage) `REGISTRY_UNAVAILABLE`;
//! - [`CachedAuthorizer`] (`cache`), the authorization cache the change feed keeps exact.
//!
//! The app builds one adapter and hands it to each part as the trait that part needs.

mod cache;
mod grpc;

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use connect_types::{Environment, IssuerUrl, ProjectId, TeamId};
use secrecy::{ExposeSecret, SecretString};

pub use self::{cache::CachedAuthorizer, grpc::RegistryClient};
use crate::{auth::Identity, error::Result};

/// The connector a link allows, with what issuing needs.
#[derive(Clone)]
pub struct Authorization {
    pub connector_id: String,
    pub connector_uid: String,
    pub connector_type: String,
    pub config: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretString>,
    /// The installation the token is for (the asked one, or the connector's default).
    pub installation: Option<InstallationGrant>,
    /// When the link stops authorizing (a time-boxed link); no cached answer outlives it.
    pub link_expires_at: Option<std::time::SystemTime>,
    /// What the link allows at most; checked on every call, cached with the answer.
    pub ceilings: connect_types::Ceilings,
    /// The team's slug, for the `sub` of the tokens Connect mints (the same for every project of
    /// the connector's team, so answers stay shared across projects).
    pub owner_slug: String,
    /// The project's name, for the `sub` of minted tokens: set for types that mint only (empty
    /// otherwise, so other types' answers stay shared across projects).
    pub project_name: String,
}

/// An installation of the connector, with its config and opened secrets.
#[derive(Clone)]
pub struct InstallationGrant {
    pub id: String,
    pub config: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretString>,
}

impl fmt::Debug for InstallationGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallationGrant")
            .field("id", &self.id)
            .field("config", &self.config)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorization")
            .field("connector_id", &self.connector_id)
            .field("connector_uid", &self.connector_uid)
            .field("connector_type", &self.connector_type)
            .field("config", &self.config)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("installation", &self.installation.as_ref().map(|i| &i.id))
            .field("link_expires_at", &self.link_expires_at)
            .field("ceilings", &self.ceilings)
            .finish()
    }
}

/// Whether two secret maps hold exactly the same.
fn same_secrets(a: &BTreeMap<String, SecretString>, b: &BTreeMap<String, SecretString>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((k1, v1), (k2, v2))| k1 == k2 && v1.expose_secret() == v2.expose_secret())
}

impl Authorization {
    /// Whether the link behind this answer has run out.
    pub fn link_expired(&self) -> bool {
        self.link_expires_at
            .is_some_and(|at| at <= std::time::SystemTime::now())
    }

    /// Whether both say exactly the same, secrets and the link's terms included (answers are
    /// shared across projects: one project's link must never lend its terms to another's).
    pub fn same_as(&self, other: &Self) -> bool {
        self.link_expires_at == other.link_expires_at
            && self.ceilings == other.ceilings
            && self.owner_slug == other.owner_slug
            && self.project_name == other.project_name
            && self.connector_id == other.connector_id
            && self.connector_uid == other.connector_uid
            && self.connector_type == other.connector_type
            && self.config == other.config
            && same_secrets(&self.secrets, &other.secrets)
            && match (&self.installation, &other.installation) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    a.id == b.id && a.config == b.config && same_secrets(&a.secrets, &b.secrets)
                }
                _ => false,
            }
    }

    /// The link's ceilings applied to a request: the error of the first one it goes beyond.
    /// `installation_asked` is the request's (`*` for every installation).
    pub fn within_ceilings(
        &self,
        subject: connect_types::SubjectKind,
        installation_asked: Option<&str>,
        scopes: &[String],
        resources: &[String],
    ) -> Result<()> {
        if self.ceilings.is_empty() {
            return Ok(());
        }
        let installation = match installation_asked {
            Some("*") => "*",
            _ => self.installation_id().unwrap_or_default(),
        };
        let refusal = self.ceilings.refusal(&connect_types::CeilingAsk {
            subject: Some(subject),
            installation: Some(installation),
            scopes,
            resources,
        });
        match refusal {
            None => Ok(()),
            Some(refusal) => {
                let why = format!("{refusal} (connector '{}')", self.connector_uid);
                Err(match refusal.reason() {
                    connect_types::Reason::ScopeNotAllowed => {
                        crate::error::BrokerError::ScopeNotAllowed(why)
                    }
                    _ => crate::error::BrokerError::SubjectNotAllowed(why),
                })
            }
        }
    }

    /// The installation's id, if the token is for one.
    pub fn installation_id(&self) -> Option<&str> {
        self.installation.as_ref().map(|i| i.id.as_str())
    }

    /// A config value of the installation, else of the connector.
    pub fn setting(&self, name: &str) -> Option<&String> {
        self.installation
            .as_ref()
            .and_then(|i| i.config.get(name))
            .or_else(|| self.config.get(name))
    }

    /// A secret of the installation, else of the connector.
    pub fn secret(&self, name: &str) -> Option<&SecretString> {
        self.installation
            .as_ref()
            .and_then(|i| i.secrets.get(name))
            .or_else(|| self.secrets.get(name))
    }
}

/// Answers whether `identity` may use `connector`, with what issuing needs.
#[async_trait]
pub trait Authorizer: Send + Sync + fmt::Debug {
    /// `installation`: as the caller asked (empty for the connector's default, `*` for all).
    async fn authorize(
        &self,
        identity: &Arc<Identity>,
        connector: &str,
        installation: &str,
        caller_timeout: Option<Duration>,
    ) -> Result<Arc<Authorization>>;
}

/// One credential handed out to one (team, project, environment), as the ledger records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuance {
    /// The same for every hand-out of the credential.
    pub token_id: String,
    pub connector_id: String,
    pub connector_uid: String,
    pub owner_id: TeamId,
    pub project_id: ProjectId,
    pub environment: Environment,
    /// `app`, `user:<id>`, `token`, `jwt_bearer:<sub>`.
    pub subject: String,
    pub installation_id: Option<String>,
    pub scopes: Vec<String>,
    pub issued_at: DateTime<Utc>,
    /// `None` when the credential does not expire.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Where issuance records go.
#[async_trait]
pub trait IssuanceRecorder: Send + Sync + fmt::Debug {
    /// Records `issuance`; whether it was new there. An error means it was not recorded.
    async fn record(&self, issuance: Issuance) -> Result<bool>;
    /// The key `token_id`s are computed under: the registry's, the same for every broker and
    /// for the database's life.
    async fn token_id_key(&self) -> Result<TokenIdKey>;
}

/// The key of `token_id`s: a credential's `token_id` is the first 16 hex digits of its
/// HMAC-SHA-256 under it, so that the ledger identifies a credential without confirming a
/// guessed one to whoever reads it.
#[derive(Clone)]
pub struct TokenIdKey(hmac::Hmac<sha2::Sha256>);

impl TokenIdKey {
    /// A key from its bytes (the registry sends 32).
    pub fn new(key: &[u8]) -> Self {
        use hmac::Mac;
        Self(hmac::Hmac::new_from_slice(key).expect("HMAC takes a key of any length"))
    }

    /// The `token_id` of `token`.
    pub fn token_id(&self, token: &SecretString) -> String {
        use hmac::Mac;
        use secrecy::ExposeSecret;
        let mut mac = self.0.clone();
        mac.update(token.expose_secret().as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..8])
    }
}

impl fmt::Debug for TokenIdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenIdKey(<redacted>)")
    }
}

/// Which grant: one user of one team's connector, in one environment and installation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantKey {
    pub owner_id: TeamId,
    /// The asking deployment's project: the registry checks its link, and the grant is that
    /// project's own (or the team's, for a connector with `grant_sharing=team`).
    pub project_id: ProjectId,
    pub connector_id: String,
    pub user_id: String,
    pub environment: Environment,
    /// Empty for none.
    pub installation_id: String,
}

/// A user's tokens as a provider gave them. `Debug` never shows a token.
#[derive(Clone)]
pub struct GrantTokens {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
}

impl fmt::Debug for GrantTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantTokens")
            .field("refreshable", &self.refresh_token.is_some())
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// A grant's access token, fresh enough to hand out.
#[derive(Clone)]
pub struct GrantAccess {
    pub access_token: SecretString,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
}

impl fmt::Debug for GrantAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantAccess")
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The refresh lease on a grant: this caller refreshes, once, and commits under `fence`.
#[derive(Clone)]
pub struct GrantLease {
    pub lease_id: String,
    /// The grant's version when leased.
    pub fence: i64,
    pub refresh_token: SecretString,
    /// The grant's scopes (what a refresh that names none keeps).
    pub scopes: Vec<String>,
}

impl fmt::Debug for GrantLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantLease")
            .field("lease_id", &self.lease_id)
            .field("fence", &self.fence)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// What asking for a grant's token answers.
#[derive(Debug)]
pub enum LeaseAnswer {
    /// The access token lives long enough.
    Fresh(GrantAccess),
    /// This caller refreshes.
    Leased(GrantLease),
    /// Another caller is refreshing, until this time at the latest: ask again.
    BusyUntil(Option<DateTime<Utc>>),
}

/// How a refresh under a lease ended.
#[derive(Debug)]
pub enum RefreshOutcome {
    Refreshed(GrantTokens),
    /// The provider refused the refresh token (`invalid_grant`): the grant needs consent.
    Refused(String),
    /// The provider could not be reached (or refused our client): the grant is kept.
    Unavailable(String),
}

/// Users' grants across brokers: the registry decides who refreshes.
#[async_trait]
pub trait GrantLeases: Send + Sync + fmt::Debug {
    /// The access token when it lives at least `min_ttl`, else the refresh lease for `lease` to
    /// exactly one caller and "busy" to the others. No usable grant: `UserAuthorizationRequired`.
    async fn lease(
        &self,
        key: &GrantKey,
        min_ttl: Duration,
        lease: Duration,
    ) -> Result<LeaseAnswer>;
    /// Ends a refresh under a lease; the new access token after `Refreshed`. A lease that ran out
    /// or was superseded: `LeaseLost`.
    async fn commit(
        &self,
        key: &GrantKey,
        lease: &GrantLease,
        outcome: RefreshOutcome,
    ) -> Result<Option<GrantAccess>>;
}

/// A consent being started: what the registry keeps until the callback.
#[derive(Clone)]
pub struct NewConsent {
    pub key: GrantKey,
    pub scopes: Vec<String>,
    pub return_url: String,
    pub redirect_uri: String,
    pub code_verifier: SecretString,
    pub ttl: Duration,
    /// The deployment that asked (the callback authorizes it again).
    pub project_id: ProjectId,
    pub issuer: IssuerUrl,
}

impl fmt::Debug for NewConsent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewConsent")
            .field("key", &self.key)
            .field("scopes", &self.scopes)
            .field("return_url", &self.return_url)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A consent taken back at its callback, once.
#[derive(Clone)]
pub struct OpenedConsent {
    pub key: GrantKey,
    pub scopes: Vec<String>,
    pub return_url: String,
    pub redirect_uri: String,
    pub code_verifier: SecretString,
    pub project_id: ProjectId,
    pub issuer: IssuerUrl,
}

impl fmt::Debug for OpenedConsent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedConsent")
            .field("key", &self.key)
            .field("scopes", &self.scopes)
            .field("return_url", &self.return_url)
            .finish_non_exhaustive()
    }
}

/// A consent whose code was exchanged: its tokens, held until the application finishes it.
#[derive(Clone, Debug)]
pub struct HeldConsent {
    /// The start's `request_id`.
    pub request_id: String,
    pub key: GrantKey,
    /// The deployment that started it.
    pub project_id: ProjectId,
    pub issuer: IssuerUrl,
    pub tokens: GrantTokens,
    /// How long the application has to finish it.
    pub ttl: Duration,
    /// The provider account the consent signed in as, when the provider named one.
    pub provider_subject: Option<String>,
}

/// The application finishing a consent, in the session of `user_id`.
#[derive(Clone)]
pub struct ConsentFinish {
    pub request_id: String,
    pub completion: SecretString,
    pub user_id: String,
    /// The provider account the application confirms for the user (see
    /// `FinishAuthorizationRequest.confirm_provider_subject`).
    pub confirm_provider_subject: Option<String>,
}

impl fmt::Debug for ConsentFinish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsentFinish")
            .field("request_id", &self.request_id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// A stored grant, as the application may see it: never a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredGrant {
    pub key: GrantKey,
    /// The project it belongs to; empty: the team's (`grant_sharing=team`).
    pub project: String,
    pub connector_uid: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub refreshable: bool,
    pub updated_at: Option<DateTime<Utc>>,
    /// The provider account it acts as, when the provider named one.
    pub provider_subject: Option<String>,
}

/// Consents from their start to the grant they end in: begun, taken at the connector's callback,
/// held after the code exchange, finished by the application as the user who started them.
#[async_trait]
pub trait PendingConsents: Send + Sync + fmt::Debug {
    /// Keeps `consent`; answers with its single-use `state` and when it expires.
    async fn begin(&self, consent: NewConsent) -> Result<(String, DateTime<Utc>)>;
    /// Takes the consent of `state` started for `connector_id`, once; `None` for an unknown,
    /// used or expired state, or one started for another connector.
    async fn complete(&self, state: &str, connector_id: &str) -> Result<Option<OpenedConsent>>;
    /// Holds a consent's exchanged tokens; answers with the one-time completion secret.
    async fn hold(&self, held: HeldConsent) -> Result<SecretString>;
    /// Stores the grant of a held consent for the deployment `identity`, when it started it and
    /// `finish.user_id` is its user: `ConsentNotPending`, `ConsentUserMismatch` otherwise.
    async fn finish(&self, identity: &Identity, finish: ConsentFinish) -> Result<StoredGrant>;
}

/// Which credentials a revocation covers: a connector's, optionally of one installation and one
/// subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokeScope {
    pub owner_id: String,
    pub connector_id: String,
    pub installation_id: Option<String>,
    pub subject: Option<String>,
}

/// The refresh tokens of a connector's revoked grants, to revoke at its provider.
#[derive(Clone)]
pub struct ClaimedRefreshTokens {
    pub revocation_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Each with the id that [`Revocations::finish_grant_revocations`] names.
    pub tokens: Vec<(i64, SecretString)>,
}

impl fmt::Debug for ClaimedRefreshTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimedRefreshTokens")
            .field("revocation_url", &self.revocation_url)
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

/// Revocations, the brokers' side: what the provider answered, and revoked grants' refresh
/// tokens to take to it.
#[async_trait]
pub trait Revocations: Send + Sync + fmt::Debug {
    /// Reports, per `token_id`, what the provider answered (`revoked`, `failed`, `skipped`).
    async fn report_revocations(
        &self,
        owner_id: &str,
        connector_id: &str,
        outcomes: &[(String, &'static str)],
    ) -> Result<()>;
    /// Claims (for a minute, one broker at a time) the refresh tokens of the connector's revoked
    /// grants.
    async fn claim_grant_revocations(
        &self,
        owner_id: &str,
        connector_id: &str,
    ) -> Result<ClaimedRefreshTokens>;
    /// Says that claimed refresh tokens were taken to the provider.
    async fn finish_grant_revocations(
        &self,
        owner_id: &str,
        connector_id: &str,
        ids: Vec<i64>,
    ) -> Result<()>;
}

/// One event of the registry's change feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Strictly increasing; the feed resumes after the last one seen.
    pub revision: i64,
    pub kind: ChangeKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// Nothing changed: the feed is alive.
    Heartbeat,
    /// The feed could not replay from where it was asked to: anything cached may be wrong.
    Resync,
    /// `Authorize` answers of this team may have changed: of one connector (known by id and
    /// uid) or all of them, of one project or all of them.
    Answers {
        owner_id: String,
        connector: Option<(String, String)>,
        project_id: Option<String>,
    },
    /// Credentials were revoked.
    Revoked(RevokeScope),
    /// A user's grant was replaced by a new consent: the copies cached of the user's access
    /// token go (not revoked: a copy may already be the new grant's), and the replaced refresh
    /// token waits to be taken to the provider.
    Replaced(RevokeScope),
}

/// The events of one subscription to the feed, ending with an error or when the registry stops.
pub type ChangeStream = futures::stream::BoxStream<'static, Result<Change>>;

/// The registry's change feed.
#[async_trait]
pub trait ChangeFeed: Send + Sync + fmt::Debug {
    /// The events after `from_revision` (0: from now; a registry that cannot replay from there
    /// starts with a resync).
    async fn watch(&self, from_revision: i64) -> Result<ChangeStream>;
}
