//! The persistence boundary. The service speaks to storage only through these traits, one per
//! aggregate (teams, keys, projects, connectors, links, audit, issuances) and [`Store`] over all of them, so
//! its rules are written once and the same store test suite runs against every backend.
//!
//! Every mutation writes its audit event in the same transaction as the change, and every
//! uniqueness or reference rule is left to the database: implementations map its violations to
//! `AlreadyExists` / `FailedPrecondition` instead of checking first.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    changes::Change,
    error::Result,
    model::{
        Actor, ApiKeyRecord, AuditEvent, Connector, Grant, GrantKey, HeldConsent, Installation,
        Issuance, PendingAuthorization, Project, ProjectLink, ProviderRevocation, RoleBinding,
        StoredSecret, Team,
    },
    page::{AuditKey, GrantPageKey, InstallationKey, IssuanceKey, LinkKey, PageRequest},
    types::{
        ConnectorId, ConnectorRef, Environment, EnvironmentSet, InstallationId, KeyId, ProjectId,
        ProjectRef, TeamId, UserId,
    },
};

/// Turns the current connector into the updated one (runs inside the store's transaction), told
/// how many of its installations and user grants hold secrets sealed to its destinations.
pub type ConnectorEdit = Box<dyn FnOnce(&Connector, u64) -> Result<Connector> + Send>;

/// Re-seals one connector's secrets: `None` leaves it as it is (runs inside the transaction).
pub type ConnectorReseal = Box<dyn Fn(&Connector) -> Result<Option<Connector>> + Send + Sync>;

/// Re-seals one sealed value of a connector's (under a new master key): the connector, the name
/// it is sealed under, the value as stored.
pub type SecretReseal =
    Box<dyn Fn(&Connector, &str, &StoredSecret) -> Result<StoredSecret> + Send + Sync>;

/// Which links a list returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkFilter {
    pub connector: Option<ConnectorRef>,
    pub project: Option<ProjectRef>,
    /// Only links with no credential recorded since then (a link never used: attached before
    /// then).
    pub unused_since: Option<DateTime<Utc>>,
}

/// Which audit events a list returns: each field that is set must match exactly; the time range
/// is `[since, until)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// Which issuances a list returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IssuanceFilter {
    pub connector: Option<ConnectorId>,
    pub project: Option<ProjectId>,
    pub environment: Option<Environment>,
}

/// Which credentials a revocation covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RevokeFilter {
    /// `app`, `user:<id>`, … as the ledger names subjects; `None` for all.
    pub subject: Option<String>,
    pub installation_id: Option<String>,
}

/// What marking ledger rows revoked found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    /// Distinct credentials covered, revoked before or not.
    pub tokens_found: u64,
    /// The rows this revocation marked (at most one per credential).
    pub revoked: Vec<Issuance>,
}

/// Which grants a list returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantFilter {
    pub connector: Option<ConnectorId>,
    pub user_id: Option<UserId>,
    pub environment: Option<Environment>,
    /// A project's own grants.
    pub project: Option<ProjectId>,
}

/// How a refresh under a lease ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// New tokens; `refresh_token: None` keeps the stored one (the provider did not rotate it).
    Refreshed {
        access_token: StoredSecret,
        refresh_token: Option<StoredSecret>,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        scopes: Vec<String>,
    },
    /// The provider refused the refresh token: the user must consent again.
    Refused { error: String },
    /// The provider could not be reached: the grant is kept.
    Unavailable { error: String },
}

/// Everything the registry stores.
#[async_trait]
pub trait Store:
    TeamStore
    + KeyStore
    + ProjectStore
    + ConnectorStore
    + LinkStore
    + AuditStore
    + IssuanceStore
    + InstallationStore
    + GrantStore
    + ChangeStore
    + AuthorizeStore
    + EnvironmentStore
    + SigningKeyStore
    + std::fmt::Debug
    + 'static
{
    /// Whether the database answers (for readiness).
    async fn ping(&self) -> Result<()>;
    /// The master key's check (see [`crate::crypto::SecretCipher::key_check`]) and the sealed
    /// key of `token_id`s, once written.
    async fn key_check(&self) -> Result<Option<KeyCheck>>;
    /// Writes the master key's check unless one is there already (another replica's, written
    /// at the same time: the caller reads it back).
    async fn put_key_check(&self, sealed: &str, now: DateTime<Utc>) -> Result<()>;
    /// Writes the sealed key of `token_id`s unless one is there already (the caller reads it
    /// back). Needs the key check written.
    async fn put_token_id_key(&self, sealed: &str) -> Result<()>;
    /// Whether anything sealed under the master key is stored: connectors, installations,
    /// grants, consents under way, refresh tokens waiting for revocation.
    async fn holds_sealed(&self) -> Result<bool>;
    /// A connector with sealed secrets, if there is one.
    async fn sealed_connector(&self) -> Result<Option<Connector>>;
    /// Applies `reseal` to every sealed value (connectors' and installations' secrets, grants'
    /// tokens, consents under way and held, refresh tokens waiting for revocation) and replaces
    /// the key check (and the sealed key of `token_id`s) with `key_check`, all in one
    /// transaction: a failure midway changes nothing. Answers with the number of values re-sealed.
    /// `signing_keys` are the signing keys' private halves sealed under the new key, by kid.
    async fn reseal_everything(
        &self,
        reseal: SecretReseal,
        key_check: &KeyCheck,
        signing_keys: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<u64>;
}

/// The master key's check and the key of `token_id`s sealed under the master key, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCheck {
    pub sealed: String,
    pub token_id_key: Option<String>,
}

/// Teams and the issuer each trusts.
#[async_trait]
pub trait TeamStore: Send + Sync {
    async fn insert_team(&self, team: &Team, actor: &Actor) -> Result<()>;
    async fn team(&self, id: &TeamId) -> Result<Option<Team>>;
}

/// API keys, by digest only.
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn insert_api_key(&self, key: &ApiKeyRecord, actor: &Actor) -> Result<()>;
    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>>;
    /// Every key, or a team's, ordered by id.
    async fn api_keys(&self, team: Option<&TeamId>) -> Result<Vec<ApiKeyRecord>>;
    /// Marks the key revoked at `at` (once: a revoked key keeps its first revocation time) and
    /// answers with it; `NotFound` for an unknown id.
    async fn revoke_api_key(
        &self,
        id: &KeyId,
        actor: &Actor,
        at: DateTime<Utc>,
    ) -> Result<ApiKeyRecord>;
    /// Records that the key was used at `at` (no audit row).
    async fn touch_api_key(&self, id: &KeyId, at: DateTime<Utc>) -> Result<()>;
    /// Stores a role binding; `AlreadyExists` when the team binds that subject or group of that
    /// issuer already.
    async fn insert_role_binding(&self, binding: &RoleBinding, actor: &Actor) -> Result<()>;
    /// A team's role bindings, oldest first.
    async fn role_bindings(&self, team: &TeamId) -> Result<Vec<RoleBinding>>;
    /// Every team's bindings of `issuer` that name `subject` or one of `groups`.
    async fn bindings_matching(
        &self,
        issuer: &str,
        subject: &str,
        groups: &[String],
    ) -> Result<Vec<RoleBinding>>;
    /// Deletes a team's binding and answers with it; `NotFound` for an unknown id.
    async fn delete_role_binding(
        &self,
        team: &TeamId,
        id: &str,
        actor: &Actor,
        at: DateTime<Utc>,
    ) -> Result<RoleBinding>;
}

/// A team's projects.
#[async_trait]
pub trait ProjectStore: Send + Sync {
    async fn insert_project(&self, project: &Project, actor: &Actor) -> Result<()>;
    /// By id first, then by name.
    async fn project(&self, team: &TeamId, project: &ProjectRef) -> Result<Option<Project>>;
    /// Ordered by id, after `page.after`, at most `page.size + 1` rows.
    async fn projects(&self, team: &TeamId, page: &PageRequest<ProjectId>) -> Result<Vec<Project>>;
}

/// A team's connectors and their sealed secrets.
#[async_trait]
pub trait ConnectorStore: Send + Sync {
    async fn insert_connector(&self, connector: &Connector, actor: &Actor) -> Result<()>;
    async fn connector(&self, team: &TeamId, connector: &ConnectorRef)
    -> Result<Option<Connector>>;
    /// Ordered by id, after `page.after`, at most `page.size + 1` rows.
    async fn connectors(
        &self,
        team: &TeamId,
        page: &PageRequest<ConnectorId>,
    ) -> Result<Vec<Connector>>;
    /// `NotFound` when the connector does not exist in the team.
    async fn update_connector(
        &self,
        team: &TeamId,
        connector: &ConnectorRef,
        actor: &Actor,
        edit: ConnectorEdit,
    ) -> Result<Connector>;
    /// Applies `reseal` to every connector with secrets, in one transaction, without audit rows
    /// (the values do not change); answers with the number of connectors rewritten.
    async fn reseal_connectors(&self, reseal: ConnectorReseal) -> Result<u64>;
    /// Deletes the connector and its links; answers with the connector and the number of links.
    async fn delete_connector(
        &self,
        team: &TeamId,
        connector: &ConnectorRef,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<(Connector, u64)>;
}

/// Project links: which projects may use a connector, in which environments.
/// What a link allows: its environments, until when (`None`: no end), and its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkTerms {
    /// The built-in environments (may be empty when custom ones are given).
    pub environments: EnvironmentSet,
    /// Custom environments: as asked, by id or slug; the store is given their ids, sorted.
    pub custom_environments: Vec<super::types::CustomEnvironment>,
    pub expires_at: Option<DateTime<Utc>>,
    pub limits: super::model::LinkLimits,
}

impl LinkTerms {
    /// A link for `environments` that does not expire and has no limits.
    pub fn lasting(environments: EnvironmentSet) -> Self {
        Self {
            environments,
            custom_environments: Vec::new(),
            expires_at: None,
            limits: Default::default(),
        }
    }
}

#[async_trait]
pub trait LinkStore: Send + Sync {
    /// Creates the link or replaces its environments. Concurrent calls for one pair serialize.
    async fn attach(
        &self,
        team: &TeamId,
        connector: &ConnectorRef,
        project: &ProjectRef,
        terms: LinkTerms,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<ProjectLink>;
    /// Removes the link and answers with it as it was.
    async fn detach(
        &self,
        team: &TeamId,
        connector: &ConnectorRef,
        project: &ProjectRef,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<ProjectLink>;
    async fn link(
        &self,
        team: &TeamId,
        connector: &ConnectorRef,
        project: &ProjectRef,
    ) -> Result<ProjectLink>;
    /// Ordered by (connector id, project id), after `page.after`, at most `page.size + 1` rows.
    async fn links(
        &self,
        team: &TeamId,
        filter: &LinkFilter,
        page: &PageRequest<LinkKey>,
    ) -> Result<Vec<ProjectLink>>;
}

/// The audit log (written by every mutation, in its transaction).
#[async_trait]
pub trait IssuanceStore: Send + Sync {
    /// Writes the row unless this (credential, project, environment) of the team is recorded;
    /// whether it wrote it. When the link has a quota and the hour before `now` holds that many
    /// of its issuances already, `QuotaExceeded` and nothing is written; the count and the
    /// write are one transaction per link (its row locked on PostgreSQL).
    async fn record_issuance(&self, issuance: &Issuance, now: DateTime<Utc>) -> Result<bool>;
    /// The team's issuances, newest first.
    async fn issuances(
        &self,
        team: &TeamId,
        filter: &IssuanceFilter,
        page: &PageRequest<IssuanceKey>,
    ) -> Result<Vec<Issuance>>;
    /// Marks the connector's credentials that `filter` covers revoked, with an audit row and a
    /// `tokens.revoke` change (so brokers drop their copies), in one transaction.
    async fn revoke_issuances(
        &self,
        connector: &Connector,
        filter: &RevokeFilter,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Revoked>;
    /// Records what revoking each credential at the provider came to (and marks it revoked): a
    /// known outcome is not overwritten, except `skipped` by a real answer. Rows updated.
    async fn report_revocations(
        &self,
        team: &TeamId,
        connector: &ConnectorId,
        outcomes: &[(String, ProviderRevocation)],
    ) -> Result<u64>;
    /// The provider outcome recorded so far for each of `token_ids` of the connector.
    async fn provider_revocations(
        &self,
        team: &TeamId,
        connector: &ConnectorId,
        token_ids: &[String],
    ) -> Result<Vec<(String, Option<ProviderRevocation>)>>;
}

/// A connector's installations.
#[async_trait]
pub trait InstallationStore: Send + Sync {
    /// `AlreadyExists` when the id is taken for the connector.
    async fn insert_installation(&self, installation: &Installation, actor: &Actor) -> Result<()>;
    async fn installation(
        &self,
        connector: &Connector,
        id: &InstallationId,
    ) -> Result<Option<Installation>>;
    /// Ordered by id, after `page.after`, at most `page.size + 1` rows.
    async fn installations(
        &self,
        connector: &Connector,
        page: &PageRequest<InstallationKey>,
    ) -> Result<Vec<Installation>>;
    /// Deletes it (clearing the connector's default when it was that) and answers with it.
    async fn delete_installation(
        &self,
        team: &TeamId,
        connector: &ConnectorRef,
        id: &InstallationId,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Installation>;
}

/// Users' grants and the consents under way.
#[async_trait]
pub trait GrantStore: Send + Sync {
    /// Stores the grant, replacing the one of its key (a new consent): version incremented,
    /// lease dropped, state active. Answers with the stored row.
    /// With `revoke_replaced`, the refresh token of the grant it replaces is queued (in the same
    /// transaction) for a broker to revoke at the provider.
    async fn put_grant(&self, grant: &Grant, actor: &Actor, revoke_replaced: bool)
    -> Result<Grant>;
    async fn grant(&self, key: &GrantKey) -> Result<Option<Grant>>;
    /// The team's grants, in id order, after `page.after`, at most `page.size + 1` rows.
    async fn grants(
        &self,
        team: &TeamId,
        filter: &GrantFilter,
        page: &PageRequest<GrantPageKey>,
    ) -> Result<Vec<Grant>>;
    /// Takes the refresh lease of grant `id` at `version` until `until`, unless another unexpired
    /// lease holds it, the grant needs consent, or it is no longer at `version` (a refresh
    /// committed since it was read: its refresh token may be spent); whether it did.
    async fn lease_grant(
        &self,
        id: i64,
        version: i64,
        lease_id: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Ends the refresh of lease `lease_id` taken at version `fence`; `None` when that lease is no
    /// longer the grant's (it ran out and another broker took over, or a new consent replaced the
    /// grant): nothing is written then. State changes are audited.
    async fn finish_refresh(
        &self,
        id: i64,
        fence: i64,
        lease_id: &str,
        outcome: RefreshOutcome,
        now: DateTime<Utc>,
    ) -> Result<Option<Grant>>;
    /// Marks a grant that cannot be refreshed (no refresh token) as needing consent.
    async fn require_consent(&self, id: i64, why: &str, now: DateTime<Utc>) -> Result<()>;
    /// Deletes the connector's grants of `user` (all users: `None`) and `installation` (all:
    /// `None`), audited; answers with how many. With `queue_refresh_tokens`, their refresh
    /// tokens wait (sealed) in the same transaction for a broker to revoke them at the provider.
    async fn delete_grants(
        &self,
        connector: &Connector,
        user: Option<&UserId>,
        installation: Option<&str>,
        queue_refresh_tokens: bool,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<u64>;
    /// Claims the queued refresh tokens of the connector's revoked grants until `until` (one
    /// broker at a time; a claim that runs out may be taken again): each with its row id and the
    /// name it was sealed under.
    async fn claim_grant_revocations(
        &self,
        connector: &ConnectorId,
        limit: u64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<(i64, String, StoredSecret)>>;
    /// Removes queued refresh tokens a broker has taken to the provider.
    async fn finish_grant_revocations(&self, connector: &ConnectorId, ids: &[i64]) -> Result<()>;
    /// How many refresh tokens of the connector's revoked grants still wait for a broker.
    async fn queued_grant_revocations(&self, connector: &ConnectorId) -> Result<u64>;
    /// A deleted connector whose refresh tokens still wait for revocation (its tombstone).
    async fn departed_connector(
        &self,
        team: &TeamId,
        connector: &ConnectorId,
    ) -> Result<Option<Connector>>;
    /// As [`Self::claim_grant_revocations`], for a deleted connector's refresh tokens.
    async fn claim_departed_revocations(
        &self,
        connector: &ConnectorId,
        limit: u64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<(i64, String, StoredSecret)>>;
    /// Removes a deleted connector's refresh tokens a broker has taken to the provider, and its
    /// tombstone with the last of them.
    async fn finish_departed_revocations(&self, connector: &ConnectorId, ids: &[i64])
    -> Result<()>;
    /// Stores a consent under way (and drops those that expired).
    async fn insert_pending(&self, pending: &PendingAuthorization) -> Result<()>;
    /// Removes and answers with the pending authorization of `state_hash` started for
    /// `connector`, once: a second call (a replayed state) finds nothing, and a state started for
    /// another connector is neither answered nor removed.
    async fn take_pending(
        &self,
        state_hash: &str,
        connector: &ConnectorId,
    ) -> Result<Option<PendingAuthorization>>;
    /// Holds a consent's exchanged tokens until it is finished or discarded.
    async fn insert_held(&self, held: &HeldConsent) -> Result<()>;
    async fn held(&self, request_id: &str) -> Result<Option<HeldConsent>>;
    /// Stores the held consent's grant and removes it, in one transaction; `None` when another
    /// caller took or discarded it first.
    async fn finish_held(
        &self,
        held: &HeldConsent,
        grant: &Grant,
        revoke_replaced: bool,
    ) -> Result<Option<Grant>>;
    /// Removes the held consent, queuing its refresh token (when `queue_refresh_token`) for a
    /// broker to revoke at the provider, audited as a revocation with `why`; false when another
    /// caller took it first.
    async fn discard_held(
        &self,
        held: &HeldConsent,
        connector: &Connector,
        queue_refresh_token: bool,
        why: &str,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Held consents that expired before `now`, oldest first, at most `limit`.
    async fn expired_held(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<HeldConsent>>;
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Newest first, before `page.after` (an event id), at most `page.size + 1` rows.
    async fn audit_events(
        &self,
        team: &TeamId,
        filter: &AuditFilter,
        page: &PageRequest<AuditKey>,
    ) -> Result<Vec<AuditEvent>>;
    /// Deletes at most `batch` events older than `before` (the oldest first), in one short
    /// statement; answers with how many.
    async fn prune_audit(&self, before: DateTime<Utc>, batch: u64) -> Result<u64>;
    /// Events of `[since, until)` (of one team, or all), in time order, after the event
    /// `(time, id)` of the previous batch; at most `limit`.
    async fn audit_between(
        &self,
        team: Option<&TeamId>,
        (since, until): (DateTime<Utc>, DateTime<Utc>),
        after: Option<(DateTime<Utc>, i64)>,
        limit: u64,
    ) -> Result<Vec<AuditEvent>>;
    /// Where the kept chain starts: the id and hash of the last event retention deleted.
    async fn audit_chain_start(&self) -> Result<Option<(i64, String)>>;
    /// Events after `after_id` in id order, at most `limit`, as stored (for `audit verify`).
    async fn audit_chain_rows(&self, after_id: i64, limit: u64) -> Result<Vec<ChainedRow>>;
}

/// An audit event as its chain hash covers it, with the hashes stored beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainedRow {
    pub id: i64,
    pub team_id: Option<String>,
    pub actor: String,
    pub actor_issuer: Option<String>,
    pub action: String,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub time: DateTime<Utc>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

/// The change feed: every committed change that can alter an `Authorize` answer, by revision.
#[async_trait]
pub trait ChangeStore: Send + Sync {
    /// Changes after `revision`, oldest first, at most `limit`.
    async fn changes_after(&self, revision: i64, limit: u64) -> Result<Vec<Change>>;
    /// The newest revision (0 when there is none) and the oldest still kept.
    async fn revisions(&self) -> Result<(i64, Option<i64>)>;
    /// Changes whenever a newer revision commits (on PostgreSQL, on any replica). It only wakes
    /// watchers up: they read the changes with [`ChangeStore::changes_after`].
    async fn subscribe(&self) -> tokio::sync::watch::Receiver<i64>;
}

/// What the `Authorize` decision reads, found together.
#[derive(Debug, Default)]
pub struct Authorizing {
    pub team: Option<Team>,
    /// The connector the query names, in that team.
    pub connector: Option<Connector>,
    /// That connector's link to the project.
    pub link: Option<ProjectLink>,
}

/// The runtime lookup, in one round trip.
#[async_trait]
pub trait AuthorizeStore: Send + Sync {
    async fn authorizing(
        &self,
        team: &TeamId,
        connector: &ConnectorRef,
        project: &ProjectId,
    ) -> Result<Authorizing>;
}

/// What deleting a custom environment did to the links that enabled it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvironmentRemoval {
    /// Links that enable other environments still, without this one.
    pub updated_links: Vec<ProjectLink>,
    /// Links that enabled this one alone, removed.
    pub removed_links: Vec<ProjectLink>,
}

/// A project's custom environments.
#[async_trait]
pub trait EnvironmentStore: Send + Sync {
    /// `AlreadyExists` when the slug is taken in the project.
    async fn insert_environment(
        &self,
        environment: &super::model::ProjectEnvironment,
        actor: &Actor,
    ) -> Result<()>;
    /// The project's environments, by slug.
    async fn environments(
        &self,
        team: &TeamId,
        project: &ProjectId,
    ) -> Result<Vec<super::model::ProjectEnvironment>>;
    /// The project's environment named by id or slug.
    async fn environment(
        &self,
        team: &TeamId,
        project: &ProjectId,
        named: &super::types::CustomEnvironment,
    ) -> Result<Option<super::model::ProjectEnvironment>>;
    /// Renames an environment (slug and name); `AlreadyExists` when the slug is taken. Its id,
    /// and so its links, stay; tokens naming the old slug no longer match.
    async fn update_environment(
        &self,
        before: &super::model::ProjectEnvironment,
        after: &super::model::ProjectEnvironment,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Deletes an environment and takes it out of every link (removing the links it was the
    /// last environment of), in one transaction.
    async fn delete_environment(
        &self,
        environment: &super::model::ProjectEnvironment,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<EnvironmentRemoval>;
}

/// The keys brokers sign Connect's tokens with.
#[async_trait]
pub trait SigningKeyStore: Send + Sync {
    async fn insert_signing_key(&self, key: &super::model::SigningKey) -> Result<()>;
    /// Every key, oldest first.
    async fn signing_keys(&self) -> Result<Vec<super::model::SigningKey>>;
}
