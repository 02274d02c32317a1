//! The registry's rules: who may do what, how secrets are sealed, and the order of the `Authorize`
//! decision. Handlers call exactly one method here; storage is reached only through [`Store`].
//! One file per aggregate: keys (and teams), projects, connectors, links, audit, and the runtime
//! `Authorize`.

mod audit;
mod authorize;
mod changes;
mod connectors;
mod environments;
mod grants;
mod installations;
mod issuances;
mod keys;
mod links;
mod projects;
mod revocations;

pub use self::{
    audit::ChainCheck,
    authorize::{
        AccessCheck, AuthorizeQuery, CHECKS, CheckOutcome, ExplainQuery, Explanation,
        InstallationAsk, Refusal,
    },
    changes::HEARTBEAT,
    connectors::{ConnectorUpdate, NewConnector},
    environments::EnvironmentEdit,
    grants::{
        FinishConsent, GrantAccess, GrantTokens, ImportedGrant, LeaseAnswer, NewHeld, NewPending,
        OpenedPending, RefreshReport,
    },
    installations::NewInstallation,
    issuances::NewIssuance,
    keys::{NewRoleBinding, WhoAmI},
    revocations::RevocationSummary,
};
use self::{
    connectors::{SecretBinding, open_all},
    keys::KeyCache,
};

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use connect_types::{Capabilities, UrlPolicy, is_destination_key};

use super::{
    clock::{Clock, SystemClock},
    error::{FieldViolation, RegistryError, Resource, Result},
    model::{
        Actor, ApiKeyRecord, AuditEvent, Authorization, BindingSubject, Connector,
        OpenedSigningKey, Person, Project, ProjectLink, Role, RoleBinding, SigningKey,
        StoredSecret, Team,
    },
    page::{AuditKey, LinkKey, Page, PageRequest},
    store::{AuditFilter, KeyCheck, LinkFilter, LinkTerms, Store},
    types::{
        ConfigMap, ConnectorId, ConnectorRef, ConnectorUid, DisplayName, Environment,
        EnvironmentSet, InstallationId, IssuerUrl, KeyId, ProjectId, ProjectName, ProjectRef,
        SecretInput, TeamId, TeamSlug,
    },
};
use crate::crypto::{self, SecretAad, SecretCipher};

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The API key presented; `None` for a person.
    pub key_id: Option<KeyId>,
    /// The person signed in; `None` for an API key.
    pub person: Option<Arc<Person>>,
    pub role: Role,
    /// The team an `admin` or `viewer` key belongs to; `None` for `broker` keys.
    pub team: Option<TeamId>,
    /// The teams a `broker` key is limited to; `None`: every team.
    pub broker_teams: Option<Arc<[TeamId]>>,
}

impl Caller {
    /// Whether this caller is a broker that may serve `team`: `ROLE_NOT_ALLOWED` for another
    /// role, and for a broker key limited to other teams.
    fn serves(&self, team: &TeamId) -> Result<()> {
        if self.role != Role::Broker {
            return Err(self.not_allowed());
        }
        match &self.broker_teams {
            Some(teams) if !teams.contains(team) => Err(self.not_allowed()),
            _ => Ok(()),
        }
    }

    /// Whether a change of `team` may reach this caller's feed.
    fn sees(&self, team: &TeamId) -> bool {
        self.broker_teams
            .as_ref()
            .is_none_or(|teams| teams.contains(team))
    }

    fn readable_team(&self) -> Result<&TeamId> {
        match (self.role, &self.team) {
            (Role::Admin | Role::Viewer, Some(team)) => Ok(team),
            _ => Err(self.not_allowed()),
        }
    }

    fn writable_team(&self) -> Result<&TeamId> {
        match (self.role, &self.team) {
            (Role::Admin, Some(team)) => Ok(team),
            _ => Err(self.not_allowed()),
        }
    }

    fn not_allowed(&self) -> RegistryError {
        RegistryError::RoleNotAllowed {
            role: self.role.as_str(),
        }
    }

    fn actor(&self) -> Actor {
        match (&self.key_id, &self.person) {
            (Some(key), _) => Actor::Key(key.clone()),
            (None, Some(person)) => Actor::Person {
                name: person.name().to_owned(),
                issuer: person.issuer.to_string(),
            },
            (None, None) => Actor::CommandLine,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTeam {
    pub id: TeamId,
    pub slug: TeamSlug,
    pub issuer: IssuerUrl,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewProject {
    pub id: ProjectId,
    pub name: ProjectName,
}

/// The link registry's domain service.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    cipher: SecretCipher,
    keys: Arc<KeyCache>,
    url_policy: Arc<UrlPolicy>,
    clock: Arc<dyn Clock>,
    /// Turns true when the registry stops: long-lived calls (the change feed) end then.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// How long `RevokeTokens` waits for the brokers' reports.
    revocation_wait: Duration,
}

/// How long `RevokeTokens` waits for brokers by default.
pub const DEFAULT_REVOCATION_WAIT: Duration = Duration::from_secs(3);

impl Registry {
    /// A registry that accepts public `https` destinations only.
    pub fn new(store: Arc<dyn Store>, cipher: SecretCipher) -> Self {
        Self {
            store,
            cipher,
            keys: Arc::default(),
            url_policy: Arc::new(UrlPolicy::strict()),
            clock: Arc::new(SystemClock),
            stopping: tokio::sync::watch::Sender::new(false).subscribe(),
            revocation_wait: DEFAULT_REVOCATION_WAIT,
        }
    }

    /// The same registry, waiting at most `wait` for brokers' revocation reports.
    pub fn with_revocation_wait(mut self, wait: Duration) -> Self {
        self.revocation_wait = wait;
        self
    }

    /// The same registry, ending its long-lived calls when `stopping` turns true.
    pub fn with_stopping(mut self, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stopping = stopping;
        self
    }

    /// The same registry, taking every timestamp from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same registry, checking connector destinations against `policy`.
    pub fn with_url_policy(mut self, policy: UrlPolicy) -> Self {
        self.url_policy = Arc::new(policy);
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}
