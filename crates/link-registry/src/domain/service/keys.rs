//! Teams and API keys: what the operator's commands create, and how a presented key becomes
//! a [`Caller`].

use super::*;

/// Verified keys, so that the hot path does not read the database for its caller. Entries live
/// for [`KEY_CACHE_TTL`], so a key revoked by another process (`keys revoke`) is refused within
/// that time; each entry keeps its key's expiry, which is checked on every hit. Only usable keys
/// are cached, so unknown keys cannot fill it.
#[derive(Debug, Default)]
pub(super) struct KeyCache {
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

impl Registry {
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
            key_id: Some(record.id),
            person: None,
            role: record.role,
            team: record.team_id,
            broker_teams: record.broker_teams.map(Arc::from),
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
        self.create_expiring_api_key(team.as_slice(), role, None)
            .await
    }

    /// Creates a key that stops working at `expires_at` (`None`: never). An `admin` or `viewer`
    /// key belongs to exactly one of `teams`; a `broker` key serves the `teams` given, or every
    /// team when none is.
    pub async fn create_expiring_api_key(
        &self,
        teams: &[TeamId],
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
        let (team, broker_teams) = match (role, teams) {
            (Role::Broker, []) => (None, None),
            (Role::Broker, teams) => {
                let mut teams = teams.to_vec();
                teams.sort();
                teams.dedup();
                (None, Some(teams))
            }
            (Role::Admin | Role::Viewer, [team]) => (Some(team.clone()), None),
            (Role::Admin | Role::Viewer, []) => {
                return Err(RegistryError::invalid(
                    "team",
                    "admin and viewer keys need a team",
                ));
            }
            (Role::Admin | Role::Viewer, _) => {
                return Err(RegistryError::invalid(
                    "team",
                    "admin and viewer keys belong to one team",
                ));
            }
        };
        for team in teams {
            if self.store.team(team).await?.is_none() {
                return Err(RegistryError::not_found(Resource::Team, team));
            }
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
            broker_teams,
        };
        self.store
            .insert_api_key(&record, &Actor::CommandLine)
            .await?;
        Ok((record, key))
    }

    /// Every key (or a team's, with the broker keys limited to it), never the keys
    /// themselves: only their records exist.
    pub async fn list_api_keys(&self, team: Option<&TeamId>) -> Result<Vec<ApiKeyRecord>> {
        let keys = self.store.api_keys(None).await?;
        Ok(match team {
            None => keys,
            Some(team) => keys
                .into_iter()
                .filter(|k| {
                    k.team_id.as_ref() == Some(team)
                        || k.broker_teams.as_ref().is_some_and(|t| t.contains(team))
                })
                .collect(),
        })
    }

    /// The caller's team's keys (admin): its own and the broker keys limited to it, those named
    /// with this team only (which other teams a broker key serves is not this team's business).
    pub async fn list_team_api_keys(&self, caller: &Caller) -> Result<Vec<ApiKeyRecord>> {
        let team = caller.writable_team()?;
        let mut keys = self.list_api_keys(Some(team)).await?;
        for key in &mut keys {
            if key.broker_teams.is_some() {
                key.broker_teams = Some(vec![team.clone()]);
            }
        }
        Ok(keys)
    }

    /// Revokes one of the caller's team's admin or viewer keys (admin). Another team's key and a
    /// broker key (the operator's) are unknown here, so that ids reveal nothing.
    pub async fn revoke_team_api_key(&self, caller: &Caller, id: &KeyId) -> Result<ApiKeyRecord> {
        let team = caller.writable_team()?;
        let owned = self
            .store
            .api_keys(Some(team))
            .await?
            .into_iter()
            .any(|k| &k.id == id);
        if !owned {
            return Err(RegistryError::not_found(Resource::Key, id));
        }
        self.store
            .revoke_api_key(id, &caller.actor(), self.clock.now())
            .await
    }

    /// Revokes a key; running servers refuse it within [`KEY_CACHE_TTL`].
    pub async fn revoke_api_key(&self, id: &KeyId) -> Result<ApiKeyRecord> {
        self.store
            .revoke_api_key(id, &Actor::CommandLine, self.clock.now())
            .await
    }
}

/// A role binding as an admin (or the command line) asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRoleBinding {
    /// The team named in the request, if any: it must be the caller's.
    pub team: Option<TeamId>,
    pub issuer: IssuerUrl,
    pub who: BindingSubject,
    pub role: Role,
}

/// Who a credential is, as `WhoAmI` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhoAmI {
    /// `api_key` (and `operator` for people, once they sign in).
    pub kind: &'static str,
    /// As audit rows name it.
    pub actor: String,
    pub key_id: Option<KeyId>,
    /// The teams it may act in, and as what.
    pub teams: Vec<(TeamId, Role)>,
    /// For a person: who their token names.
    pub person: Option<Person>,
}

impl Registry {
    /// Binds a subject or group of an operator issuer to a role in the caller's team (admin).
    pub async fn create_role_binding(
        &self,
        caller: &Caller,
        new: NewRoleBinding,
    ) -> Result<RoleBinding> {
        let team = Self::own_team(caller, new.team.as_ref())?;
        self.insert_binding(team, new, caller.actor()).await
    }

    /// `link-registry bindings create`: a binding made by whoever holds the database (the
    /// team's first, before anybody can sign in).
    pub async fn create_role_binding_as_operator(
        &self,
        team: &TeamId,
        new: NewRoleBinding,
    ) -> Result<RoleBinding> {
        if self.store.team(team).await?.is_none() {
            return Err(RegistryError::not_found(Resource::Team, team));
        }
        self.insert_binding(team.clone(), new, Actor::CommandLine)
            .await
    }

    async fn insert_binding(
        &self,
        team: TeamId,
        new: NewRoleBinding,
        actor: Actor,
    ) -> Result<RoleBinding> {
        if !matches!(new.role, Role::Admin | Role::Viewer) {
            return Err(RegistryError::invalid(
                "role",
                "a person is bound as admin or viewer",
            ));
        }
        let binding = RoleBinding {
            id: format!("rb_{}", crypto::random_token(20)),
            team_id: team,
            issuer: new.issuer,
            who: new.who,
            role: new.role,
            created_at: self.clock.now(),
        };
        self.store.insert_role_binding(&binding, &actor).await?;
        Ok(binding)
    }

    /// The caller's team's role bindings (admin).
    pub async fn list_role_bindings(
        &self,
        caller: &Caller,
        team: Option<&TeamId>,
    ) -> Result<Vec<RoleBinding>> {
        let team = Self::own_team(caller, team)?;
        self.store.role_bindings(&team).await
    }

    /// A team's role bindings, for the command line.
    pub async fn role_bindings_of(&self, team: &TeamId) -> Result<Vec<RoleBinding>> {
        self.store.role_bindings(team).await
    }

    /// Deletes one of the caller's team's bindings (admin); the person it bound loses that role
    /// within the seconds the registry keeps verified callers.
    pub async fn delete_role_binding(&self, caller: &Caller, id: &str) -> Result<RoleBinding> {
        let team = caller.writable_team()?;
        self.store
            .delete_role_binding(team, id, &caller.actor(), self.clock.now())
            .await
    }

    /// `link-registry bindings delete`.
    pub async fn delete_role_binding_as_operator(
        &self,
        team: &TeamId,
        id: &str,
    ) -> Result<RoleBinding> {
        self.store
            .delete_role_binding(team, id, &Actor::CommandLine, self.clock.now())
            .await
    }

    /// The teams a person is bound in, each with their strongest role (admin over viewer).
    async fn person_teams(&self, person: &Person) -> Result<Vec<(TeamId, Role)>> {
        let bindings = self
            .store
            .bindings_matching(person.issuer.as_str(), &person.subject, &person.groups)
            .await?;
        let mut teams: Vec<(TeamId, Role)> = Vec::new();
        for binding in bindings {
            match teams.iter_mut().find(|(t, _)| *t == binding.team_id) {
                Some((_, role)) if binding.role == Role::Admin => *role = Role::Admin,
                Some(_) => {}
                None => teams.push((binding.team_id, binding.role)),
            }
        }
        Ok(teams)
    }

    /// A person as a caller of the admin API: their role in `team` (the `connect-team` they
    /// named) or in the one team they are bound in. No binding: `ROLE_NOT_ALLOWED`; several
    /// teams and none named: `INVALID_ARGUMENT` naming `connect-team`. Bindings are read on
    /// every call, so a deleted one stops counting at once.
    pub async fn person_caller(&self, person: Person, team: Option<&TeamId>) -> Result<Caller> {
        let teams = self.person_teams(&person).await?;
        let unbound = || {
            RegistryError::NotBound(match team {
                Some(team) => format!(" in team '{team}'"),
                None => String::new(),
            })
        };
        let (team, role) = match (team, teams.as_slice()) {
            (_, []) => return Err(unbound()),
            (Some(asked), teams) => teams
                .iter()
                .find(|(t, _)| t == asked)
                .cloned()
                .ok_or_else(unbound)?,
            (None, [one]) => one.clone(),
            (None, teams) => {
                let names: Vec<&str> = teams.iter().map(|(t, _)| t.as_str()).collect();
                return Err(RegistryError::invalid(
                    "connect-team",
                    format!(
                        "you are bound in several teams ({}): name one with the metadata connect-team: <team id> (connect --team)",
                        names.join(", ")
                    ),
                ));
            }
        };
        Ok(Caller {
            key_id: None,
            person: Some(Arc::new(person)),
            role,
            team: Some(team),
            broker_teams: None,
        })
    }

    /// Who a person is and where they may act.
    pub async fn who_is(&self, person: Person) -> Result<WhoAmI> {
        let teams = self.person_teams(&person).await?;
        Ok(WhoAmI {
            kind: "operator",
            actor: Actor::Person {
                name: person.name().to_owned(),
                issuer: person.issuer.to_string(),
            }
            .to_string(),
            key_id: None,
            teams,
            person: Some(person),
        })
    }

    /// Who the caller is and where it may act (any valid credential).
    pub fn who_am_i(&self, caller: &Caller) -> WhoAmI {
        let teams = match (&caller.team, &caller.broker_teams) {
            (Some(team), _) => vec![(team.clone(), caller.role)],
            (None, Some(teams)) => teams.iter().map(|t| (t.clone(), caller.role)).collect(),
            (None, None) => Vec::new(),
        };
        WhoAmI {
            kind: "api_key",
            actor: caller.actor().to_string(),
            key_id: caller.key_id.clone(),
            teams,
            person: None,
        }
    }

    /// The caller's (admin) team, which a request naming a team must name.
    fn own_team(caller: &Caller, asked: Option<&TeamId>) -> Result<TeamId> {
        let team = caller.writable_team()?;
        match asked {
            Some(asked) if asked != team => Err(caller.not_allowed()),
            _ => Ok(team.clone()),
        }
    }
}
