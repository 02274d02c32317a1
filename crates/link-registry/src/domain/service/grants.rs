//! Users' grants. The registry keeps them sealed and decides, for every broker and replica at
//! once, who refreshes a grant: `lease_grant` answers with the access token when it is fresh
//! enough, with a lease (and the refresh token) to exactly one caller when it is not, and with
//! "busy until" to the others, who ask again; `commit_grant` stores the refreshed tokens only under
//! the lease and version it was given (a fencing token), so a rotated refresh token is stored
//! before the new access token leaves the broker, and a broker that stalled past its lease cannot
//! overwrite a newer grant. A refusal of the refresh token (`invalid_grant`) makes the grant need
//! consent again; a provider outage keeps it.
//!
//! The consent flow's state lives here too, so the callback may reach any broker: a pending
//! authorization per random `state` (stored by its SHA-256), taken once.

use sha2::{Digest, Sha256};

use super::*;
use crate::domain::{
    model::{Grant, GrantKey, GrantState, HeldConsent, PendingAuthorization},
    page::GrantPageKey,
    store::{GrantFilter, RefreshOutcome},
    types::UserId,
};

/// Longest lease a broker may ask for.
const MAX_LEASE: Duration = Duration::from_secs(120);
/// Longest life of a pending authorization.
const MAX_PENDING: Duration = Duration::from_secs(3600);
/// Most grants in one `ImportGrants`.
pub const MAX_IMPORT: usize = 1000;

/// One grant of an import, for the importing caller's team and the named connector.
#[derive(Debug)]
pub struct ImportedGrant {
    /// The project it is for; `None` for a connector that shares grants (`grant_sharing=team`).
    pub project: Option<ProjectId>,
    pub user: UserId,
    pub environment: Environment,
    /// An installation id, or empty for none.
    pub installation: String,
    pub tokens: GrantTokens,
}

/// Tokens of a grant on their way in (a callback's code exchange, an import).
pub struct GrantTokens {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for GrantTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantTokens")
            .field("refreshable", &self.refresh_token.is_some())
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// A grant and its opened access token.
pub struct GrantAccess {
    pub grant: Grant,
    pub access_token: SecretString,
}

impl std::fmt::Debug for GrantAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantAccess")
            .field("grant", &self.grant.key)
            .finish_non_exhaustive()
    }
}

/// What `lease_grant` answers.
#[derive(Debug)]
pub enum LeaseAnswer {
    /// The access token lives long enough: use it.
    Fresh(GrantAccess),
    /// This caller refreshes: with this refresh token, under this lease, against this version.
    Leased {
        lease_id: String,
        fence: i64,
        refresh_token: SecretString,
        grant: Grant,
    },
    /// Another caller is refreshing until then at the latest: ask again.
    Busy { until: DateTime<Utc> },
}

/// A consent under way, opened for the callback.
pub struct OpenedPending {
    pub key: GrantKey,
    pub project_id: ProjectId,
    pub issuer: String,
    pub scopes: Vec<String>,
    pub return_url: String,
    pub redirect_uri: String,
    pub code_verifier: SecretString,
}

impl std::fmt::Debug for OpenedPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedPending")
            .field("key", &self.key)
            .field("return_url", &self.return_url)
            .finish_non_exhaustive()
    }
}

/// A consent about to start.
#[derive(Debug)]
pub struct NewPending {
    pub key: GrantKey,
    pub project_id: ProjectId,
    pub issuer: String,
    pub scopes: Vec<String>,
    pub return_url: String,
    pub redirect_uri: String,
    pub code_verifier: SecretString,
    pub ttl: Duration,
}

/// A consent's exchanged tokens, to hold until the application finishes it.
#[derive(Debug)]
pub struct NewHeld {
    pub request_id: String,
    pub key: GrantKey,
    pub project_id: ProjectId,
    pub issuer: String,
    pub tokens: GrantTokens,
    pub ttl: Duration,
    /// The provider account the consent signed in as, when the provider named one.
    pub provider_subject: Option<String>,
}

/// The application finishing a held consent, from a verified deployment token.
pub struct FinishConsent {
    pub request_id: String,
    pub completion: SecretString,
    pub user_id: UserId,
    pub team_id: TeamId,
    pub project_id: ProjectId,
    pub environment: Environment,
    pub issuer: String,
    /// The provider account the application confirms for this user: needed when the consent
    /// signed in as another account than the user's grant acts as.
    pub confirm_provider_subject: Option<String>,
}

impl std::fmt::Debug for FinishConsent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinishConsent")
            .field("request_id", &self.request_id)
            .field("user_id", &self.user_id)
            .field("team_id", &self.team_id)
            .field("project_id", &self.project_id)
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

/// Most held consents discarded in one sweep.
const SWEEP: u64 = 100;

/// How a refresh ended, as the broker reports it.
#[derive(Debug)]
pub enum RefreshReport {
    Refreshed(GrantTokens),
    Refused(String),
    Unavailable(String),
}

/// The SHA-256 (hex) of a consent's `state`.
pub fn state_hash(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

impl Registry {
    fn seal_for(&self, connector: &Connector, name: &str, value: &SecretString) -> StoredSecret {
        SecretBinding::current(connector).seal(&self.cipher, name, value)
    }

    /// Opens one of a grant's sealed values (for revocation, after the grant is gone).
    pub(super) fn open_grant_secret(
        &self,
        connector: &Connector,
        name: &str,
        stored: &StoredSecret,
    ) -> Result<SecretString> {
        self.open_for(connector, name, stored)
    }

    fn open_for(
        &self,
        connector: &Connector,
        name: &str,
        stored: &StoredSecret,
    ) -> Result<SecretString> {
        SecretBinding::current(connector).open(&self.cipher, name, stored, "opening a user grant")
    }

    /// Whether the connector's grants are the team's rather than each project's.
    fn shares_grants(connector: &Connector) -> bool {
        connector.config.get("grant_sharing") == Some("team")
    }

    /// The grant a deployment of `key.project_id` asks for: that project's link to the connector
    /// checked for the environment (as `Authorize` checks it), then the key of the project's own
    /// grant, or of the team's when the connector shares grants (`grant_sharing=team`).
    async fn resolve_grant(&self, key: &GrantKey) -> Result<(GrantKey, Connector)> {
        let Some(project) = key.project_id.clone() else {
            return Err(RegistryError::invalid(
                "key.project_id",
                "project_id is required",
            ));
        };
        let reference = ConnectorRef::Id(key.connector_id.clone());
        let found = self
            .store
            .authorizing(&key.team_id, &reference, &project)
            .await?;
        let environment = self
            .asked_environment(&key.team_id, &project, key.environment)
            .await?;
        let (connector, _) = super::authorize::linked(
            found,
            &reference,
            &project,
            environment,
            self.clock.now(),
            &mut super::authorize::Silent,
        )?;
        let mut resolved = key.clone();
        resolved.project_id = (!Self::shares_grants(&connector)).then_some(project);
        Ok((resolved, connector))
    }

    fn sealed_grant(&self, connector: &Connector, key: GrantKey, tokens: GrantTokens) -> Grant {
        let now = self.clock.now();
        Grant {
            id: 0,
            access_token: self.seal_for(
                connector,
                &key.sealing_name("access"),
                &tokens.access_token,
            ),
            refresh_token: tokens
                .refresh_token
                .as_ref()
                .map(|t| self.seal_for(connector, &key.sealing_name("refresh"), t)),
            key,
            expires_at: tokens.expires_at,
            scopes: tokens.scopes,
            state: GrantState::Active,
            version: 0,
            lease: None,
            last_error: None,
            last_refresh_at: None,
            created_at: now,
            updated_at: now,
            provider_subject: None,
        }
    }

    fn access(&self, connector: &Connector, grant: Grant) -> Result<GrantAccess> {
        let access_token = self.open_for(
            connector,
            &grant.key.sealing_name("access"),
            &grant.access_token,
        )?;
        Ok(GrantAccess {
            grant,
            access_token,
        })
    }

    fn consent_required(key: &GrantKey, why: &str) -> RegistryError {
        RegistryError::UserAuthorizationRequired(format!(
            "user '{}' has {why} for this connector in {}",
            connect_types::ids::truncate(key.user_id.as_str(), 64),
            key.environment
        ))
    }

    /// Imports grants from another system (admin keys); answers with how many were stored and
    /// the index and error of each that was not.
    pub async fn import_grants(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        grants: Vec<std::result::Result<ImportedGrant, RegistryError>>,
    ) -> Result<(u64, Vec<(usize, RegistryError)>)> {
        let team = caller.writable_team()?;
        if grants.len() > MAX_IMPORT {
            return Err(RegistryError::invalid(
                "grants",
                format!("at most {MAX_IMPORT} grants per call"),
            ));
        }
        let connector = self
            .store
            .connector(team, connector)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Connector, connector))?;
        let shared = Self::shares_grants(&connector);
        let revocable = super::revocations::provider_can_revoke(&connector);
        let mut imported = 0;
        let mut errors = Vec::new();
        for (index, grant) in grants.into_iter().enumerate() {
            let stored = match grant {
                Ok(imported) if imported.project.is_some() == shared => {
                    Err(RegistryError::invalid(
                        "project",
                        if shared {
                            "this connector shares grants with the team's projects (grant_sharing=team): project must be empty"
                        } else {
                            "project is required: a grant belongs to one project (unless the connector's grant_sharing is team)"
                        },
                    ))
                }
                Ok(imported) => {
                    let key = GrantKey {
                        team_id: team.clone(),
                        connector_id: connector.id.clone(),
                        project_id: imported.project,
                        user_id: imported.user,
                        environment: imported.environment,
                        installation_id: imported.installation,
                    };
                    let grant = self.sealed_grant(&connector, key, imported.tokens);
                    self.store
                        .put_grant(&grant, &caller.actor(), revocable)
                        .await
                        .map(|_| ())
                }
                Err(e) => Err(e),
            };
            match stored {
                Ok(()) => imported += 1,
                Err(
                    e @ (RegistryError::StorageUnavailable(_) | RegistryError::Internal { .. }),
                ) => {
                    return Err(e);
                }
                Err(e) => errors.push((index, e)),
            }
        }
        Ok((imported, errors))
    }

    /// The team's grants (admin and viewer keys), in id order: their state, never their tokens.
    pub async fn list_grants(
        &self,
        caller: &Caller,
        connector: Option<&ConnectorRef>,
        user_id: Option<UserId>,
        environment: Option<Environment>,
        project: Option<ProjectId>,
        page: PageRequest<GrantPageKey>,
    ) -> Result<(Page<Grant>, BTreeMap<ConnectorId, ConnectorUid>)> {
        let team = caller.readable_team()?;
        let connector = match connector {
            Some(reference) => Some(
                self.store
                    .connector(team, reference)
                    .await?
                    .ok_or_else(|| RegistryError::not_found(Resource::Connector, reference))?,
            ),
            None => None,
        };
        let filter = GrantFilter {
            connector: connector.as_ref().map(|c| c.id.clone()),
            user_id,
            environment,
            project,
        };
        let rows = self.store.grants(team, &filter, &page).await?;
        let page = Page::from_rows(rows, page.size, |g| GrantPageKey(g.id));
        let mut uids = BTreeMap::new();
        for grant in &page.items {
            if !uids.contains_key(&grant.key.connector_id)
                && let Some(c) = self
                    .store
                    .connector(team, &ConnectorRef::Id(grant.key.connector_id.clone()))
                    .await?
            {
                uids.insert(c.id, c.uid);
            }
        }
        Ok((page, uids))
    }

    /// The grant's access token as stored (broker keys), whatever its age.
    pub async fn grant_access(&self, caller: &Caller, key: &GrantKey) -> Result<GrantAccess> {
        caller.serves(&key.team_id)?;
        let (key, connector) = self.resolve_grant(key).await?;
        let key = &key;
        let grant = self
            .store
            .grant(key)
            .await?
            .ok_or_else(|| Self::consent_required(key, "not authorized Connect"))?;
        if grant.state == GrantState::NeedsConsent {
            return Err(Self::consent_required(key, "to authorize Connect again"));
        }
        self.access(&connector, grant)
    }

    /// The access token when it lives `min_ttl` longer; else the refresh lease for `lease_for`,
    /// or "busy" while another caller holds it (broker keys).
    pub async fn lease_grant(
        &self,
        caller: &Caller,
        key: &GrantKey,
        min_ttl: Duration,
        lease_for: Duration,
    ) -> Result<LeaseAnswer> {
        caller.serves(&key.team_id)?;
        if lease_for.is_zero() || lease_for > MAX_LEASE {
            return Err(RegistryError::invalid(
                "lease",
                format!(
                    "lease must be more than 0 and at most {} s",
                    MAX_LEASE.as_secs()
                ),
            ));
        }
        let (key, connector) = self.resolve_grant(key).await?;
        let key = &key;
        let grant = self
            .store
            .grant(key)
            .await?
            .ok_or_else(|| Self::consent_required(key, "not authorized Connect"))?;
        if grant.state == GrantState::NeedsConsent {
            return Err(Self::consent_required(key, "to authorize Connect again"));
        }
        let now = self.clock.now();
        let lives = chrono::Duration::from_std(min_ttl).unwrap_or(chrono::Duration::MAX);
        let fresh = |grant: &Grant| grant.expires_at.is_none_or(|at| at - now >= lives);
        if fresh(&grant) {
            return Ok(LeaseAnswer::Fresh(self.access(&connector, grant)?));
        }
        let Some(sealed) = grant.refresh_token.clone() else {
            self.store
                .require_consent(
                    grant.id,
                    "the access token expired and there is no refresh token",
                    now,
                )
                .await?;
            return Err(Self::consent_required(key, "to authorize Connect again"));
        };
        let lease_id = crypto::random_token(24);
        let until = now + chrono::Duration::from_std(lease_for).unwrap_or(chrono::Duration::MAX);
        if self
            .store
            .lease_grant(grant.id, grant.version, &lease_id, until, now)
            .await?
        {
            let refresh_token =
                self.open_for(&connector, &grant.key.sealing_name("refresh"), &sealed)?;
            return Ok(LeaseAnswer::Leased {
                lease_id,
                fence: grant.version,
                refresh_token,
                grant,
            });
        }
        // Someone else holds it, refreshed it since our read, or it needs consent now: look again.
        match self.store.grant(key).await? {
            Some(now_grant) if now_grant.state == GrantState::NeedsConsent => {
                Err(Self::consent_required(key, "to authorize Connect again"))
            }
            Some(now_grant) if fresh(&now_grant) => {
                Ok(LeaseAnswer::Fresh(self.access(&connector, now_grant)?))
            }
            Some(now_grant) => Ok(LeaseAnswer::Busy {
                until: now_grant.lease.map_or(now, |(_, until)| until),
            }),
            None => Err(Self::consent_required(key, "not authorized Connect")),
        }
    }

    /// Ends a refresh under a lease (broker keys): new tokens are stored (a rotated refresh token
    /// with them) and the new access token answered; a refusal makes the grant need consent; an
    /// outage keeps it. `LeaseLost` when the lease or version is no longer the grant's.
    pub async fn commit_grant(
        &self,
        caller: &Caller,
        key: &GrantKey,
        lease_id: &str,
        fence: i64,
        report: RefreshReport,
    ) -> Result<Option<GrantAccess>> {
        caller.serves(&key.team_id)?;
        let (key, connector) = self.resolve_grant(key).await?;
        let key = &key;
        let grant = self
            .store
            .grant(key)
            .await?
            .ok_or(RegistryError::LeaseLost)?;
        let outcome = match report {
            RefreshReport::Refreshed(tokens) => RefreshOutcome::Refreshed {
                access_token: self.seal_for(
                    &connector,
                    &key.sealing_name("access"),
                    &tokens.access_token,
                ),
                refresh_token: tokens
                    .refresh_token
                    .as_ref()
                    .map(|t| self.seal_for(&connector, &key.sealing_name("refresh"), t)),
                expires_at: tokens.expires_at,
                scopes: tokens.scopes,
            },
            RefreshReport::Refused(error) => RefreshOutcome::Refused { error },
            RefreshReport::Unavailable(error) => RefreshOutcome::Unavailable { error },
        };
        let refreshed = matches!(outcome, RefreshOutcome::Refreshed { .. });
        let after = self
            .store
            .finish_refresh(grant.id, fence, lease_id, outcome, self.clock.now())
            .await?
            .ok_or(RegistryError::LeaseLost)?;
        if refreshed {
            self.access(&connector, after).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Starts a consent (broker keys): answers with the random `state` for the provider.
    pub async fn begin_authorization(
        &self,
        caller: &Caller,
        pending: NewPending,
    ) -> Result<(String, DateTime<Utc>)> {
        caller.serves(&pending.key.team_id)?;
        if pending.ttl.is_zero() || pending.ttl > MAX_PENDING {
            return Err(RegistryError::invalid(
                "ttl",
                format!(
                    "ttl must be more than 0 and at most {} s",
                    MAX_PENDING.as_secs()
                ),
            ));
        }
        if pending.key.project_id.as_ref() != Some(&pending.project_id) {
            return Err(RegistryError::invalid(
                "key.project_id",
                "key.project_id must be the project_id of the deployment that asks",
            ));
        }
        // The deployment's link is checked here too: a broker key reaches only linked grants.
        let (_, connector) = self.resolve_grant(&pending.key).await?;
        let state = crypto::random_token(32);
        let hash = state_hash(&state);
        let now = self.clock.now();
        let expires_at =
            now + chrono::Duration::from_std(pending.ttl).unwrap_or(chrono::Duration::MAX);
        let stored = PendingAuthorization {
            code_verifier: self.seal_for(
                &connector,
                &format!("pending/{hash}/verifier"),
                &pending.code_verifier,
            ),
            state_hash: hash,
            key: pending.key,
            project_id: pending.project_id,
            issuer: pending.issuer,
            scopes: pending.scopes,
            return_url: pending.return_url,
            redirect_uri: pending.redirect_uri,
            expires_at,
            created_at: now,
        };
        self.store.insert_pending(&stored).await?;
        Ok((state, expires_at))
    }

    /// Takes the consent of `state` started for `connector` (broker keys), once: an unknown, used
    /// or expired state, or one started for another connector, is `FailedPrecondition`.
    pub async fn complete_authorization(
        &self,
        caller: &Caller,
        state: &str,
        connector: &ConnectorId,
    ) -> Result<OpenedPending> {
        // The team is known only from the consent: a broker limited to other teams is refused
        // once the state is taken (it cannot be used afterwards by anyone).
        if caller.role != Role::Broker {
            return Err(caller.not_allowed());
        }
        let unknown = || {
            RegistryError::FailedPrecondition(
                "this authorization is unknown, was used already, or has expired".into(),
            )
        };
        let hash = state_hash(state);
        let pending = self
            .store
            .take_pending(&hash, connector)
            .await?
            .ok_or_else(unknown)?;
        caller.serves(&pending.key.team_id)?;
        if pending.expires_at <= self.clock.now() {
            return Err(unknown());
        }
        if pending.key.project_id.as_ref() != Some(&pending.project_id) {
            return Err(RegistryError::invalid(
                "key.project_id",
                "key.project_id must be the project_id of the deployment that asks",
            ));
        }
        // The deployment's link is checked here too: a broker key reaches only linked grants.
        let (_, connector) = self.resolve_grant(&pending.key).await?;
        let code_verifier = self.open_for(
            &connector,
            &format!("pending/{hash}/verifier"),
            &pending.code_verifier,
        )?;
        Ok(OpenedPending {
            key: pending.key,
            project_id: pending.project_id,
            issuer: pending.issuer,
            scopes: pending.scopes,
            return_url: pending.return_url,
            redirect_uri: pending.redirect_uri,
            code_verifier,
        })
    }

    /// Holds a consent's exchanged tokens (broker keys: the callback after the code exchange)
    /// until the application finishes it; answers with the one-time completion secret and when
    /// the hold ends.
    pub async fn hold_grant(
        &self,
        caller: &Caller,
        held: NewHeld,
    ) -> Result<(SecretString, DateTime<Utc>)> {
        caller.serves(&held.key.team_id)?;
        if held.ttl.is_zero() || held.ttl > MAX_PENDING {
            return Err(RegistryError::invalid(
                "ttl",
                format!(
                    "ttl must be more than 0 and at most {} s",
                    MAX_PENDING.as_secs()
                ),
            ));
        }
        if held.key.project_id.as_ref() != Some(&held.project_id) {
            return Err(RegistryError::invalid(
                "key.project_id",
                "key.project_id must be the project_id of the deployment that started it",
            ));
        }
        let (_, connector) = self.resolve_grant(&held.key).await?;
        let completion = SecretString::from(crypto::random_token(32));
        let now = self.clock.now();
        let expires_at =
            now + chrono::Duration::from_std(held.ttl).unwrap_or(chrono::Duration::MAX);
        let name = |token| HeldConsent::sealing_name_of(&held.request_id, token);
        let stored = HeldConsent {
            completion_hash: state_hash(completion.expose_secret()),
            access_token: self.seal_for(&connector, &name("access"), &held.tokens.access_token),
            refresh_token: held
                .tokens
                .refresh_token
                .as_ref()
                .map(|t| self.seal_for(&connector, &name("refresh"), t)),
            request_id: held.request_id,
            key: held.key,
            project_id: held.project_id,
            issuer: held.issuer,
            token_expires_at: held.tokens.expires_at,
            scopes: held.tokens.scopes,
            expires_at,
            created_at: now,
            provider_subject: held.provider_subject,
        };
        self.store.insert_held(&stored).await?;
        Ok((completion, expires_at))
    }

    /// Finishes a held consent (broker keys, for a verified deployment): stores its grant when the
    /// deployment is the one that started it and `user_id` the user it was started for. Another
    /// user discards it (its refresh token revoked at the provider where the connector can);
    /// anything else unknown, expired or finished already is `ConsentNotPending`.
    /// Answers with the stored grant and its connector's uid.
    pub async fn finish_grant(
        &self,
        caller: &Caller,
        finish: FinishConsent,
    ) -> Result<(Grant, ConnectorUid)> {
        caller.serves(&finish.team_id)?;
        let not_pending = || {
            RegistryError::ConsentNotPending(
                "this consent is unknown, was finished already, has expired, or was started by another deployment".into(),
            )
        };
        let held = self
            .store
            .held(&finish.request_id)
            .await?
            .ok_or_else(not_pending)?;
        let same_deployment = held.completion_hash == state_hash(finish.completion.expose_secret())
            && held.key.team_id == finish.team_id
            && held.project_id == finish.project_id
            && held.key.environment == finish.environment
            && held.issuer == finish.issuer;
        if !same_deployment {
            return Err(not_pending());
        }
        let (key, connector) = self.resolve_grant(&held.key).await?;
        let now = self.clock.now();
        if held.expires_at <= now {
            self.discard(&held, &connector, "expired").await?;
            return Err(not_pending());
        }
        if held.key.user_id != finish.user_id {
            if !self.discard(&held, &connector, "user_mismatch").await? {
                return Err(not_pending());
            }
            return Err(RegistryError::ConsentUserMismatch(format!(
                "this consent was started for another user than '{}': its tokens were discarded",
                connect_types::ids::truncate(finish.user_id.as_str(), 64)
            )));
        }
        // A consent that signed in as another provider account than the user's grant acts as
        // replaces it only when the application confirms that account for this user; until then
        // it stays held (and expires as any other).
        if let Some(existing) = self.store.grant(&key).await?
            && let (Some(was), Some(now_as)) = (&existing.provider_subject, &held.provider_subject)
            && was != now_as
            && finish.confirm_provider_subject.as_deref() != Some(now_as.as_str())
        {
            return Err(RegistryError::ProviderAccountChanged(format!(
                "this consent signed in as provider account '{}', but the user's grant acts as '{}': finish it with confirm_provider_subject set to the new account to replace the grant",
                connect_types::ids::truncate(now_as, 64),
                connect_types::ids::truncate(was, 64),
            )));
        }
        let tokens = GrantTokens {
            access_token: self.open_for(
                &connector,
                &held.sealing_name("access"),
                &held.access_token,
            )?,
            refresh_token: held
                .refresh_token
                .as_ref()
                .map(|t| self.open_for(&connector, &held.sealing_name("refresh"), t))
                .transpose()?,
            expires_at: held.token_expires_at,
            scopes: held.scopes.clone(),
        };
        let mut grant = self.sealed_grant(&connector, key, tokens);
        grant.provider_subject = held.provider_subject.clone();
        let stored = self
            .store
            .finish_held(
                &held,
                &grant,
                super::revocations::provider_can_revoke(&connector),
            )
            .await?
            .ok_or_else(not_pending)?;
        Ok((stored, connector.uid))
    }

    /// Discards a held consent, queuing its refresh token when the connector can revoke it.
    async fn discard(&self, held: &HeldConsent, connector: &Connector, why: &str) -> Result<bool> {
        let revocable = super::revocations::provider_can_revoke(connector);
        let discarded = self
            .store
            .discard_held(
                held,
                connector,
                revocable,
                why,
                &Actor::Broker,
                self.clock.now(),
            )
            .await?;
        if discarded {
            tracing::info!(target: "connect::consent", request_id = %held.request_id, why, "held consent discarded");
        }
        Ok(discarded)
    }

    /// Discards held consents nobody finished in time (the registry runs it every few seconds);
    /// answers with how many.
    pub async fn discard_expired_consents(&self) -> Result<u64> {
        let mut discarded = 0;
        for held in self.store.expired_held(self.clock.now(), SWEEP).await? {
            let reference = ConnectorRef::Id(held.key.connector_id.clone());
            let Some(connector) = self.store.connector(&held.key.team_id, &reference).await? else {
                continue; // deleted with its connector
            };
            if self.discard(&held, &connector, "expired").await? {
                discarded += 1;
            }
        }
        Ok(discarded)
    }
}
