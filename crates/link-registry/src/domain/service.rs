//! The registry's rules: who may do what, how secrets are sealed, and the order of the `Authorize`
//! decision. Handlers call exactly one method here; storage is reached only through [`Store`].

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use connect_types::{UrlPolicy, is_destination_key};

use super::{
    clock::{Clock, SystemClock},
    error::{FieldViolation, RegistryError, Resource, Result},
    model::{
        Actor, ApiKeyRecord, AuditEvent, Authorization, Connector, Project, ProjectLink, Role,
        StoredSecret, Team,
    },
    page::{AuditKey, LinkKey, Page, PageRequest},
    store::{LinkFilter, Store},
    types::{
        ConfigMap, ConnectorId, ConnectorRef, ConnectorUid, DisplayName, Environment,
        EnvironmentSet, IssuerUrl, KeyId, ProjectId, ProjectName, ProjectRef, SecretInput, TeamId,
        TeamSlug,
    },
};
use crate::crypto::{self, SecretAad, SecretCipher};

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub key_id: KeyId,
    pub role: Role,
    /// The team an `admin` or `viewer` key belongs to; `None` for `broker` keys.
    pub team: Option<TeamId>,
}

impl Caller {
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
        Actor::Key(self.key_id.clone())
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

#[derive(Debug)]
pub struct NewConnector {
    pub uid: ConnectorUid,
    pub name: DisplayName,
    pub config: ConfigMap,
    pub secrets: SecretInput,
}

/// The fields an update replaces; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ConnectorUpdate {
    pub name: Option<DisplayName>,
    pub config: Option<ConfigMap>,
    pub secrets: Option<SecretInput>,
}

/// The claims of a verified token, and the connector asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizeQuery {
    pub owner_id: TeamId,
    pub project_id: ProjectId,
    pub environment: Environment,
    pub issuer: String,
    pub connector: ConnectorRef,
}

/// Verified keys, so that the hot path does not read the database for its caller. Entries live
/// for [`KEY_CACHE_TTL`], so a key revoked by another process (`keys revoke`) is refused within
/// that time; each entry keeps its key's expiry, which is checked on every hit. Only usable keys
/// are cached, so unknown keys cannot fill it.
#[derive(Debug, Default)]
struct KeyCache {
    entries: RwLock<HashMap<String, CachedKey>>,
}

#[derive(Clone, Debug)]
struct CachedKey {
    caller: Caller,
    expires_at: Option<DateTime<Utc>>,
    cached_at: Instant,
}

const KEY_CACHE_TTL: Duration = Duration::from_secs(2);
const KEY_CACHE_MAX: usize = 10_000;
/// Least time between two `last_used_at` writes for one key.
const LAST_USED_RESOLUTION: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

impl KeyCache {
    fn get(&self, key_hash: &str, now: DateTime<Utc>) -> Option<Caller> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key_hash)
            .filter(|k| k.cached_at.elapsed() < KEY_CACHE_TTL)
            .filter(|k| k.expires_at.is_none_or(|at| now < at))
            .map(|k| k.caller.clone())
    }

    fn put(&self, key_hash: String, key: CachedKey) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= KEY_CACHE_MAX {
            entries.retain(|_, k| k.cached_at.elapsed() < KEY_CACHE_TTL);
            if entries.len() >= KEY_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(key_hash, key);
    }
}

/// The link registry's domain service.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    cipher: SecretCipher,
    keys: Arc<KeyCache>,
    url_policy: Arc<UrlPolicy>,
    clock: Arc<dyn Clock>,
}

impl Registry {
    /// A registry that accepts public `https` destinations only.
    pub fn new(store: Arc<dyn Store>, cipher: SecretCipher) -> Self {
        Self {
            store,
            cipher,
            keys: Arc::default(),
            url_policy: Arc::new(UrlPolicy::strict()),
            clock: Arc::new(SystemClock),
        }
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

    /// Refuses `*_url` config values that are not allowed destinations, naming each.
    fn check_destinations(&self, config: &ConfigMap) -> Result<()> {
        let violations: Vec<FieldViolation> = config
            .iter()
            .filter(|(key, _)| is_destination_key(key))
            .filter_map(|(key, value)| {
                let refusal = self.url_policy.check_url(value).err()?;
                Some(FieldViolation::new(
                    format!("config[{key}]"),
                    format!("not an allowed destination: {refusal}"),
                ))
            })
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(RegistryError::InvalidArgument(violations))
        }
    }

    /// Re-seals every secret stored before secrets were bound to their destination; answers
    /// with the number of connectors re-sealed. Runs at start, once per old row.
    pub async fn upgrade_sealed_secrets(&self) -> Result<u64> {
        let cipher = self.cipher.clone();
        self.store
            .reseal_connectors(Box::new(move |connector: &Connector| {
                if !connector
                    .secrets
                    .values()
                    .any(|s| SecretCipher::is_legacy(&s.sealed))
                {
                    return Ok(None);
                }
                let open = open_all(&cipher, connector)?;
                let input = SecretInput::from_opened(open);
                let mut next = connector.clone();
                next.secrets = seal_all(&cipher, connector, &next.config, &input);
                Ok(Some(next))
            }))
            .await
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Resolves a presented API key to its caller: a known key that is neither revoked nor
    /// expired.
    pub async fn authenticate(&self, presented: &str) -> Result<Caller> {
        if presented.is_empty() || presented.len() > 256 {
            return Err(RegistryError::InvalidKey);
        }
        let now = self.clock.now();
        let key_hash = crypto::hash_api_key(presented);
        if let Some(caller) = self.keys.get(&key_hash, now) {
            return Ok(caller);
        }
        let record = self
            .store
            .api_key_by_hash(&key_hash)
            .await?
            .filter(|k| k.is_usable(now))
            .ok_or(RegistryError::InvalidKey)?;
        if record
            .last_used_at
            .is_none_or(|at| now - at >= LAST_USED_RESOLUTION)
        {
            // Off the request path: a lost write only leaves `last_used_at` a little old.
            let (store, id) = (self.store.clone(), record.id.clone());
            tokio::spawn(async move {
                if let Err(e) = store.touch_api_key(&id, now).await {
                    tracing::warn!(key_id = %id, error = %e, "cannot record a key's last use");
                }
            });
        }
        let caller = Caller {
            key_id: record.id,
            role: record.role,
            team: record.team_id,
        };
        self.keys.put(
            key_hash,
            CachedKey {
                caller: caller.clone(),
                expires_at: record.expires_at,
                cached_at: Instant::now(),
            },
        );
        Ok(caller)
    }

    // ----- command line -------------------------------------------------------------------------

    pub async fn create_team(&self, new: NewTeam) -> Result<Team> {
        let team = Team {
            id: new.id,
            slug: new.slug,
            issuer: new.issuer,
            created_at: self.clock.now(),
        };
        self.store.insert_team(&team, &Actor::CommandLine).await?;
        Ok(team)
    }

    /// Creates a key and answers with it: the only time it is ever seen in clear.
    pub async fn create_api_key(
        &self,
        team: Option<TeamId>,
        role: Role,
    ) -> Result<(ApiKeyRecord, SecretString)> {
        self.create_expiring_api_key(team, role, None).await
    }

    /// Creates a key that stops working at `expires_at` (`None`: never).
    pub async fn create_expiring_api_key(
        &self,
        team: Option<TeamId>,
        role: Role,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(ApiKeyRecord, SecretString)> {
        let now = self.clock.now();
        if expires_at.is_some_and(|at| at <= now) {
            return Err(RegistryError::invalid(
                "expires_in",
                "the expiry must be in the future",
            ));
        }
        match (role, &team) {
            (Role::Broker, Some(_)) => {
                return Err(RegistryError::invalid(
                    "team",
                    "broker keys serve every team and take no team",
                ));
            }
            (Role::Admin | Role::Viewer, None) => {
                return Err(RegistryError::invalid(
                    "team",
                    "admin and viewer keys need a team",
                ));
            }
            _ => {}
        }
        if let Some(team) = &team
            && self.store.team(team).await?.is_none()
        {
            return Err(RegistryError::not_found(Resource::Team, team));
        }
        let key = crypto::generate_api_key();
        let record = ApiKeyRecord {
            id: crypto::new_key_id(),
            team_id: team,
            role,
            key_hash: crypto::hash_api_key(key.expose_secret()),
            created_at: now,
            expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        self.store
            .insert_api_key(&record, &Actor::CommandLine)
            .await?;
        Ok((record, key))
    }

    /// Every key (or a team's), never the keys themselves: only their records exist.
    pub async fn list_api_keys(&self, team: Option<&TeamId>) -> Result<Vec<ApiKeyRecord>> {
        self.store.api_keys(team).await
    }

    /// Revokes a key; running servers refuse it within [`KEY_CACHE_TTL`].
    pub async fn revoke_api_key(&self, id: &KeyId) -> Result<ApiKeyRecord> {
        self.store
            .revoke_api_key(id, &Actor::CommandLine, self.clock.now())
            .await
    }

    // ----- projects -----------------------------------------------------------------------------

    pub async fn create_project(&self, caller: &Caller, new: NewProject) -> Result<Project> {
        let team = caller.writable_team()?;
        let project = Project {
            team_id: team.clone(),
            id: new.id,
            name: new.name,
            created_at: self.clock.now(),
        };
        self.store.insert_project(&project, &caller.actor()).await?;
        Ok(project)
    }

    pub async fn get_project(&self, caller: &Caller, project: &ProjectRef) -> Result<Project> {
        let team = caller.readable_team()?;
        self.store
            .project(team, project)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Project, project))
    }

    pub async fn list_projects(
        &self,
        caller: &Caller,
        page: PageRequest<ProjectId>,
    ) -> Result<Page<Project>> {
        let team = caller.readable_team()?;
        let rows = self.store.projects(team, &page).await?;
        Ok(Page::from_rows(rows, page.size, |p| p.id.clone()))
    }

    // ----- connectors ---------------------------------------------------------------------------

    pub async fn create_connector(&self, caller: &Caller, new: NewConnector) -> Result<Connector> {
        let team = caller.writable_team()?;
        self.check_destinations(&new.config)?;
        let now = self.clock.now();
        let mut connector = Connector {
            secrets: BTreeMap::new(),
            id: crypto::new_connector_id(),
            team_id: team.clone(),
            uid: new.uid,
            name: new.name,
            config: new.config,
            created_at: now,
            updated_at: now,
        };
        connector.secrets = seal_all(&self.cipher, &connector, &connector.config, &new.secrets);
        self.store
            .insert_connector(&connector, &caller.actor())
            .await?;
        Ok(connector)
    }

    pub async fn get_connector(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
    ) -> Result<Connector> {
        let team = caller.readable_team()?;
        self.store
            .connector(team, connector)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Connector, connector))
    }

    pub async fn list_connectors(
        &self,
        caller: &Caller,
        page: PageRequest<ConnectorId>,
    ) -> Result<Page<Connector>> {
        let team = caller.readable_team()?;
        let rows = self.store.connectors(team, &page).await?;
        Ok(Page::from_rows(rows, page.size, |c| c.id.clone()))
    }

    pub async fn update_connector(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        update: ConnectorUpdate,
    ) -> Result<Connector> {
        let team = caller.writable_team()?;
        if let Some(config) = &update.config {
            self.check_destinations(config)?;
        }
        let cipher = self.cipher.clone();
        let now = self.clock.now();
        let edit = Box::new(move |current: &Connector| {
            let mut next = current.clone();
            if let Some(name) = update.name {
                next.name = name;
            }
            if let Some(config) = update.config {
                let moved = moved_destinations(&current.config, &config);
                // Stored secrets never follow a new destination: they must come with it.
                if !moved.is_empty() && update.secrets.is_none() && !current.secrets.is_empty() {
                    return Err(RegistryError::SecretsRequired {
                        connector: current.uid.to_string(),
                        keys: moved.join(", "),
                    });
                }
                next.config = config;
            }
            if let Some(secrets) = &update.secrets {
                next.secrets = seal_all(&cipher, current, &next.config, secrets);
            }
            next.updated_at = now;
            Ok(next)
        });
        self.store
            .update_connector(team, connector, &caller.actor(), edit)
            .await
    }

    pub async fn delete_connector(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
    ) -> Result<(Connector, u64)> {
        let team = caller.writable_team()?;
        self.store
            .delete_connector(team, connector, &caller.actor(), self.clock.now())
            .await
    }

    // ----- links --------------------------------------------------------------------------------

    pub async fn attach_project(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        project: &ProjectRef,
        environments: EnvironmentSet,
    ) -> Result<ProjectLink> {
        let team = caller.writable_team()?;
        self.store
            .attach(
                team,
                connector,
                project,
                environments,
                &caller.actor(),
                self.clock.now(),
            )
            .await
    }

    pub async fn detach_project(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        project: &ProjectRef,
    ) -> Result<ProjectLink> {
        let team = caller.writable_team()?;
        self.store
            .detach(team, connector, project, &caller.actor(), self.clock.now())
            .await
    }

    pub async fn get_project_link(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        project: &ProjectRef,
    ) -> Result<ProjectLink> {
        let team = caller.readable_team()?;
        self.store.link(team, connector, project).await
    }

    pub async fn list_project_links(
        &self,
        caller: &Caller,
        filter: LinkFilter,
        page: PageRequest<LinkKey>,
    ) -> Result<Page<ProjectLink>> {
        let team = caller.readable_team()?;
        let rows = self.store.links(team, &filter, &page).await?;
        Ok(Page::from_rows(rows, page.size, |l| LinkKey {
            connector_id: l.connector_id.clone(),
            project_id: l.project_id.clone(),
        }))
    }

    // ----- audit --------------------------------------------------------------------------------

    pub async fn list_audit_events(
        &self,
        caller: &Caller,
        page: PageRequest<AuditKey>,
    ) -> Result<Page<AuditEvent>> {
        let team = caller.readable_team()?;
        let rows = self.store.audit_events(team, &page).await?;
        Ok(Page::from_rows(rows, page.size, |e| AuditKey(e.id)))
    }

    // ----- runtime ------------------------------------------------------------------------------

    /// The runtime decision, in the documented order. Any "no" stops it.
    pub async fn authorize(
        &self,
        caller: &Caller,
        query: &AuthorizeQuery,
    ) -> Result<Authorization> {
        if caller.role != Role::Broker {
            return Err(caller.not_allowed());
        }
        let team = self.store.team(&query.owner_id).await?;
        // An unknown team and a wrong issuer answer alike: neither tells whether the team exists.
        if team.is_none_or(|t| t.issuer.as_str() != query.issuer) {
            return Err(RegistryError::IssuerNotTrusted {
                owner_id: query.owner_id.to_string(),
            });
        }
        let connector = self
            .store
            .connector(&query.owner_id, &query.connector)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Connector, &query.connector))?;
        let link = self
            .store
            .link_by_ids(&query.owner_id, &connector.id, &query.project_id)
            .await?
            .ok_or_else(|| RegistryError::ClientNotLinkedToProject {
                connector: connector.uid.to_string(),
                project_id: query.project_id.to_string(),
            })?;
        if !link.environments.contains(query.environment) {
            return Err(RegistryError::ClientNotEnabledForEnvironment {
                connector: connector.uid.to_string(),
                project_id: query.project_id.to_string(),
                environment: query.environment.to_string(),
            });
        }
        let secrets = open_all(&self.cipher, &connector)?;
        Ok(Authorization {
            connector,
            link,
            secrets,
        })
    }
}

/// The `*_url` config keys whose value differs between `before` and `after`.
fn moved_destinations(before: &ConfigMap, after: &ConfigMap) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = before
        .iter()
        .chain(after.iter())
        .map(|(k, _)| k)
        .filter(|k| is_destination_key(k))
        .collect();
    keys.into_iter()
        .filter(|k| before.get(k) != after.get(k))
        .cloned()
        .collect()
}

/// Seals `secrets` for `connector`'s row, bound to the destinations of `config`.
fn seal_all(
    cipher: &SecretCipher,
    connector: &Connector,
    config: &ConfigMap,
    secrets: &SecretInput,
) -> BTreeMap<String, StoredSecret> {
    let destination = crypto::destination_digest(config.iter());
    secrets
        .iter()
        .map(|(name, value)| {
            let aad = SecretAad {
                team_id: connector.team_id.as_str(),
                connector_id: connector.id.as_str(),
                name,
                destination: &destination,
            };
            let stored = StoredSecret {
                sealed: cipher.seal(&aad, value),
                fingerprint: cipher.fingerprint(value),
            };
            (name.clone(), stored)
        })
        .collect()
}

fn open_all(
    cipher: &SecretCipher,
    connector: &Connector,
) -> Result<BTreeMap<String, SecretString>> {
    let destination = crypto::destination_digest(connector.config.iter());
    connector
        .secrets
        .iter()
        .map(|(name, stored)| {
            let aad = SecretAad {
                team_id: connector.team_id.as_str(),
                connector_id: connector.id.as_str(),
                name,
                destination: &destination,
            };
            let value = cipher
                .open(&aad, &stored.sealed)
                .map_err(|e| RegistryError::internal("opening a connector secret", e))?;
            Ok((name.clone(), value))
        })
        .collect()
}
