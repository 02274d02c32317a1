//! The registry's records, as the service and the store exchange them.

use std::{collections::BTreeMap, fmt};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Value, json};

use super::types::{
    ConfigMap, ConnectorId, ConnectorUid, CustomEnvironment, DisplayName, Environment,
    EnvironmentSet, InstallationId, IssuerUrl, KeyId, ProjectId, ProjectName, TeamId, TeamSlug,
    UserId,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Team {
    pub id: TeamId,
    pub slug: TeamSlug,
    pub issuer: IssuerUrl,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Project {
    pub team_id: TeamId,
    pub id: ProjectId,
    pub name: ProjectName,
    pub created_at: DateTime<Utc>,
}

/// One sealed secret: the ciphertext (see `crypto`) and the keyed fingerprint audit rows show.
#[derive(Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StoredSecret {
    pub sealed: String,
    pub fingerprint: String,
}

impl fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSecret")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connector {
    pub id: ConnectorId,
    pub team_id: TeamId,
    pub uid: ConnectorUid,
    pub name: DisplayName,
    pub config: ConfigMap,
    /// Sealed values by secret name.
    pub secrets: BTreeMap<String, StoredSecret>,
    /// Issues nothing while set.
    pub suspended: bool,
    /// The installation a token request without one is for.
    pub default_installation_id: Option<InstallationId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Connector {
    pub fn secret_names(&self) -> Vec<String> {
        self.secrets.keys().cloned().collect()
    }

    /// The connector as audit rows show it: secrets by name and fingerprint only.
    pub fn audit_view(&self) -> Value {
        json!({
            "id": self.id,
            "uid": self.uid,
            "type": self.uid.kind(),
            "name": self.name,
            "config": self.config,
            "suspended": self.suspended,
            "default_installation_id": self.default_installation_id,
            "secrets": secrets_view(&self.secrets),
        })
    }
}

/// Secrets as audit rows show them: by name and fingerprint only.
fn secrets_view(secrets: &BTreeMap<String, StoredSecret>) -> Value {
    secrets
        .iter()
        .map(|(name, s)| (name.clone(), json!({ "fingerprint": s.fingerprint })))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A tenant inside a connector (a GitHub App installation, a Slack workspace): its config and
/// secrets add to the connector's when a token is issued for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installation {
    pub team_id: TeamId,
    pub connector_id: ConnectorId,
    pub connector_uid: ConnectorUid,
    pub id: InstallationId,
    pub display_name: DisplayName,
    pub config: ConfigMap,
    /// Sealed values by secret name.
    pub secrets: BTreeMap<String, StoredSecret>,
    pub created_at: DateTime<Utc>,
}

impl Installation {
    pub fn secret_names(&self) -> Vec<String> {
        self.secrets.keys().cloned().collect()
    }

    pub fn audit_target(&self) -> String {
        format!("installation:{}/{}", self.connector_id, self.id)
    }

    pub fn audit_view(&self) -> Value {
        json!({
            "connector_id": self.connector_id,
            "connector_uid": self.connector_uid,
            "installation_id": self.id,
            "display_name": self.display_name,
            "config": self.config,
            "secrets": secrets_view(&self.secrets),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProjectLink {
    pub team_id: TeamId,
    pub connector_id: ConnectorId,
    pub connector_uid: ConnectorUid,
    pub project_id: ProjectId,
    pub project_name: ProjectName,
    /// The built-in environments it enables (empty when it enables custom ones only).
    pub environments: EnvironmentSet,
    /// The ids of the project's custom environments it enables, sorted.
    pub custom_environments: Vec<CustomEnvironment>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// From then on the link no longer authorizes; `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
    pub limits: LinkLimits,
    /// When a credential was last recorded for the link; `None`: never.
    pub last_issued_at: Option<DateTime<Utc>>,
}

/// What a link allows at most, and how many credentials may be obtained through it in an hour.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkLimits {
    pub ceilings: connect_types::Ceilings,
    /// 0: no quota.
    pub max_issuances_per_hour: u32,
}

impl LinkLimits {
    pub fn is_empty(&self) -> bool {
        self.ceilings.is_empty() && self.max_issuances_per_hour == 0
    }

    /// The stored and audited form.
    pub fn to_json(&self) -> Value {
        let c = &self.ceilings;
        json!({
            "allowed_scopes": c.scopes,
            "allowed_resources": c.resources,
            "allowed_installations": c.installations,
            "allowed_subjects": c.subjects.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "max_issuances_per_hour": self.max_issuances_per_hour,
        })
    }

    /// The limits of [`LinkLimits::to_json`]'s form; `None` when it is not that.
    pub fn from_json(value: &Value) -> Option<Self> {
        let strings = |key: &str| -> Option<Vec<String>> {
            match value.get(key) {
                None => Some(Vec::new()),
                Some(v) => v
                    .as_array()?
                    .iter()
                    .map(|s| s.as_str().map(str::to_owned))
                    .collect(),
            }
        };
        let subjects = strings("allowed_subjects")?
            .iter()
            .map(|s| connect_types::SubjectKind::parse(s))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            ceilings: connect_types::Ceilings {
                scopes: strings("allowed_scopes")?,
                resources: strings("allowed_resources")?,
                installations: strings("allowed_installations")?,
                subjects,
            },
            max_issuances_per_hour: match value.get("max_issuances_per_hour") {
                None => 0,
                Some(n) => u32::try_from(n.as_u64()?).ok()?,
            },
        })
    }
}

impl Serialize for LinkLimits {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// A project's own environment, beside the three built in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProjectEnvironment {
    pub team_id: TeamId,
    pub project_id: ProjectId,
    /// `env_…`; what links store.
    pub id: CustomEnvironment,
    /// Unique in the project; a deployment token's `environment` claim may name it.
    pub slug: String,
    pub name: DisplayName,
    pub created_at: DateTime<Utc>,
}

impl ProjectEnvironment {
    pub fn audit_target(&self) -> String {
        format!("environment:{}", self.id.as_str())
    }

    pub fn audit_view(&self) -> Value {
        json!({
            "id": self.id,
            "project_id": self.project_id,
            "slug": self.slug,
            "name": self.name,
        })
    }
}

impl ProjectLink {
    /// Every environment it enables: the built-in names, then the custom ids.
    pub fn environment_names(&self) -> Vec<String> {
        let mut names = self.environments.names();
        names.extend(
            self.custom_environments
                .iter()
                .map(|e| e.as_str().to_owned()),
        );
        names
    }

    /// Whether it enables `environment` (a custom one by its id).
    pub fn enables(&self, environment: &Environment) -> bool {
        match environment.custom() {
            Some(custom) => self.custom_environments.contains(custom),
            None => self.environments.contains(*environment),
        }
    }

    /// Whether the link has run out at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    pub fn audit_target(&self) -> String {
        format!("link:{}/{}", self.connector_id, self.project_id)
    }

    pub fn audit_view(&self) -> Value {
        let mut view = json!({
            "connector_id": self.connector_id,
            "connector_uid": self.connector_uid,
            "project_id": self.project_id,
            "project_name": self.project_name,
            "environments": self.environment_names(),
            "expires_at": self.expires_at,
        });
        if !self.limits.is_empty() {
            view["limits"] = self.limits.to_json();
        }
        view
    }
}

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Reads and writes one team's rows.
    Admin,
    /// Reads one team's rows.
    Viewer,
    /// Calls `Authorize` for any team.
    Broker,
}

impl Role {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "admin" => Ok(Self::Admin),
            "viewer" => Ok(Self::Viewer),
            "broker" => Ok(Self::Broker),
            _ => Err(format!(
                "role must be admin, viewer or broker (got {value:?})"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Viewer => "viewer",
            Self::Broker => "broker",
        }
    }
}

/// A stored API key: never the key itself, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: KeyId,
    /// `None` exactly for broker keys.
    pub team_id: Option<TeamId>,
    pub role: Role,
    pub key_hash: String,
    pub created_at: DateTime<Utc>,
    /// `None`: the key does not expire.
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Updated at most once a minute.
    pub last_used_at: Option<DateTime<Utc>>,
    /// The teams a `broker` key serves; `None`: every team.
    pub broker_teams: Option<Vec<TeamId>>,
}

impl ApiKeyRecord {
    /// Whether the key may authenticate at `now`.
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }

    /// `active`, `revoked` or `expired`, as `keys list` shows it.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        match (self.revoked_at, self.is_usable(now)) {
            (Some(_), _) => "revoked",
            (None, false) => "expired",
            (None, true) => "active",
        }
    }
}

/// What a person signed in with an operator issuer may do in a team: bound by the `sub` of their
/// ID token, or by a value of its `groups` claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleBinding {
    pub id: String,
    pub team_id: TeamId,
    pub issuer: IssuerUrl,
    pub who: BindingSubject,
    /// `admin` or `viewer`.
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// A person, as a verified ID token of an operator issuer names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    pub issuer: IssuerUrl,
    /// The token's `sub`.
    pub subject: String,
    pub email: Option<String>,
    /// The token's `groups` claim.
    pub groups: Vec<String>,
}

impl Person {
    /// How audit rows and `WhoAmI` name them: their email, else their `sub`.
    pub fn name(&self) -> &str {
        self.email.as_deref().unwrap_or(&self.subject)
    }
}

/// Whom a binding names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindingSubject {
    /// The token's `sub`.
    Subject(String),
    /// A value of the token's `groups` claim.
    Group(String),
}

impl RoleBinding {
    /// The binding as audit rows show it.
    pub fn audit_view(&self) -> Value {
        let (subject, group) = match &self.who {
            BindingSubject::Subject(s) => (Some(s.as_str()), None),
            BindingSubject::Group(g) => (None, Some(g.as_str())),
        };
        json!({
            "id": self.id,
            "issuer": self.issuer.as_str(),
            "subject": subject,
            "group": group,
            "role": self.role.as_str(),
        })
    }
}

/// Who makes a change, as audit rows name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    Key(KeyId),
    /// A person signed in with an operator issuer: `user:<email or sub>`, and that issuer.
    Person {
        name: String,
        issuer: String,
    },
    /// The `link-registry` command line, run by whoever holds the database.
    CommandLine,
    /// A broker acting on its own (a refresh that changed a grant's state).
    Broker,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(id) => write!(f, "key:{id}"),
            Self::Person { name, .. } => write!(f, "user:{name}"),
            Self::CommandLine => f.write_str("cli"),
            Self::Broker => f.write_str("broker"),
        }
    }
}

/// An audit event about to be written, in the transaction of its change.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAuditEvent {
    pub team_id: Option<TeamId>,
    pub actor: Actor,
    pub action: &'static str,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub time: DateTime<Utc>,
}

/// A written audit event.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub id: i64,
    pub team_id: Option<TeamId>,
    pub actor: String,
    /// For a person's change: the issuer of their ID token.
    pub actor_issuer: Option<String>,
    pub action: String,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub time: DateTime<Utc>,
    /// The hash chain: the previous event's hash, and this one's.
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

/// One credential handed out for one (project, environment) of a team, as the ledger keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuance {
    /// Set by the store; 0 before the row is written.
    pub id: i64,
    /// The first 16 hex digits of the credential's SHA-256.
    pub token_id: String,
    pub team_id: TeamId,
    pub project_id: ProjectId,
    pub environment: Environment,
    pub connector_id: ConnectorId,
    pub connector_uid: ConnectorUid,
    /// `app`, or `user:<id>`.
    pub subject: String,
    pub installation_id: String,
    pub scopes: Vec<String>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    /// For a revoked credential: what revoking it at the provider came to.
    pub provider_revocation: Option<ProviderRevocation>,
}

/// What revoking a credential at its provider came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderRevocation {
    Revoked,
    Failed,
    /// The type cannot revoke, the credential had expired, or no broker held it any more.
    Skipped,
}

impl ProviderRevocation {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "revoked" => Ok(Self::Revoked),
            "failed" => Ok(Self::Failed),
            "skipped" => Ok(Self::Skipped),
            _ => Err(format!(
                "outcome must be revoked, failed or skipped (got {:?})",
                connect_types::ids::truncate(value, 20)
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// What a user grant is for: a user of a team's connector, in one environment, for one
/// installation (empty: none).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GrantKey {
    pub team_id: TeamId,
    pub connector_id: ConnectorId,
    /// The project the grant belongs to; `None`: shared by the team's linked projects
    /// (`grant_sharing=team`). On a request, before the registry resolves it: the asking
    /// deployment's project.
    pub project_id: Option<ProjectId>,
    pub user_id: UserId,
    pub environment: Environment,
    pub installation_id: String,
}

impl GrantKey {
    /// The associated-data name of one of the grant's sealed values (a project's grant names its
    /// project; a team's is named as grants were before they had one).
    pub fn sealing_name(&self, what: &str) -> String {
        match &self.project_id {
            Some(project) => format!(
                "grant/{project}/{}/{}/{}/{what}",
                self.user_id, self.environment, self.installation_id
            ),
            None => format!(
                "grant/{}/{}/{}/{what}",
                self.user_id, self.environment, self.installation_id
            ),
        }
    }

    pub fn audit_target(&self) -> String {
        format!(
            "grant:{}/{}/{}/{}/{}",
            self.connector_id,
            self.project_id.as_ref().map_or("*", ProjectId::as_str),
            self.environment,
            self.installation_id,
            self.user_id
        )
    }
}

/// Where a grant stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    Active,
    /// The last refresh found the provider unavailable; the grant is kept and retried.
    RefreshFailed,
    /// The provider refused the refresh token (`invalid_grant`), or there is none to refresh
    /// with: the user must consent again.
    NeedsConsent,
}

impl GrantState {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "active" => Ok(Self::Active),
            "refresh_failed" => Ok(Self::RefreshFailed),
            "needs_consent" => Ok(Self::NeedsConsent),
            _ => Err(format!("unknown grant state {value:?}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::RefreshFailed => "refresh_failed",
            Self::NeedsConsent => "needs_consent",
        }
    }
}

/// A user's grant at a provider, its tokens sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Set by the store; 0 before the row is written.
    pub id: i64,
    pub key: GrantKey,
    pub access_token: StoredSecret,
    pub refresh_token: Option<StoredSecret>,
    /// When the access token expires; `None`: the provider did not say.
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
    pub state: GrantState,
    /// Incremented by every change of the tokens: a refresh commits only against the version it
    /// leased.
    pub version: i64,
    /// The refresh lease: its id and when it runs out.
    pub lease: Option<(String, DateTime<Utc>)>,
    pub last_error: Option<String>,
    pub last_refresh_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The provider account it acts as (the `sub` of the provider's `id_token` or userinfo);
    /// `None` when the provider named none.
    pub provider_subject: Option<String>,
}

impl Grant {
    /// The grant as audit rows show it: never a token.
    pub fn audit_view(&self) -> Value {
        json!({
            "project_id": self.key.project_id.as_ref().map(ProjectId::as_str),
            "user_id": self.key.user_id,
            "environment": self.key.environment.as_str(),
            "installation_id": self.key.installation_id,
            "scopes": self.scopes,
            "state": self.state,
            "expires_at": self.expires_at,
            "refreshable": self.refresh_token.is_some(),
            "last_error": self.last_error,
            "provider_subject": self.provider_subject,
        })
    }
}

/// A consent under way: what the callback needs once the provider sends the user back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingAuthorization {
    /// SHA-256 (hex) of the `state`; the state itself is never stored.
    pub state_hash: String,
    pub key: GrantKey,
    /// The deployment that asked: its project and its token's issuer.
    pub project_id: ProjectId,
    pub issuer: String,
    pub scopes: Vec<String>,
    pub return_url: String,
    pub redirect_uri: String,
    pub code_verifier: StoredSecret,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A consent whose code was exchanged, waiting for the application to finish it as the user who
/// started it.
#[derive(Clone, Debug)]
pub struct HeldConsent {
    /// The first 16 hex digits of the SHA-256 of the consent's `state`.
    pub request_id: String,
    /// SHA-256 (hex) of the one-time completion secret.
    pub completion_hash: String,
    pub key: GrantKey,
    /// The deployment that started it.
    pub project_id: ProjectId,
    pub issuer: String,
    pub access_token: StoredSecret,
    pub refresh_token: Option<StoredSecret>,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// The provider account the consent signed in as, when the provider named one.
    pub provider_subject: Option<String>,
}

impl HeldConsent {
    /// The name each of its tokens is sealed under.
    pub fn sealing_name(&self, token: &str) -> String {
        Self::sealing_name_of(&self.request_id, token)
    }

    pub fn sealing_name_of(request_id: &str, token: &str) -> String {
        format!("held/{request_id}/{token}")
    }

    /// What the audit shows of it: never a token.
    pub fn audit_view(&self) -> Value {
        json!({
            "request_id": self.request_id,
            "user_id": self.key.user_id.as_str(),
            "environment": self.key.environment.as_str(),
            "installation_id": self.key.installation_id,
            "project_id": self.project_id.as_str(),
            "scopes": self.scopes,
            "refreshable": self.refresh_token.is_some(),
        })
    }
}

/// A yes from `Authorize`: everything the broker needs to issue a token.
pub struct Authorization {
    pub connector: Connector,
    pub link: ProjectLink,
    /// The team's slug (the `owner` of what Connect mints for the deployment).
    pub team_slug: TeamSlug,
    /// The environment the token names, as the link enables it (a custom one by its id).
    pub environment: Environment,
    pub secrets: BTreeMap<String, SecretString>,
    /// The installation asked for (or the default) and its opened secrets.
    pub installation: Option<(Installation, BTreeMap<String, SecretString>)>,
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorization")
            .field("connector", &self.connector.id)
            .field("link", &self.link.audit_target())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field(
                "installation",
                &self.installation.as_ref().map(|(i, _)| i.id.as_str()),
            )
            .finish()
    }
}

/// A key the brokers sign Connect's own tokens with, as stored: its private half sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKey {
    /// The RFC 7638 thumbprint of its public key.
    pub kid: String,
    /// `ES256`.
    pub alg: String,
    pub sealed_private_key: String,
    /// The public key as a JWK.
    pub public_jwk: Value,
    pub created_at: DateTime<Utc>,
}

/// A signing key with its private half opened (PKCS#8), for a broker. `Debug` never shows it.
#[derive(Clone)]
pub struct OpenedSigningKey {
    pub kid: String,
    pub alg: String,
    pub pkcs8: secrecy::SecretSlice<u8>,
    pub public_jwk: Value,
    pub created_at: DateTime<Utc>,
}

impl fmt::Debug for OpenedSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedSigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}
