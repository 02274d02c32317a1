//! A team's connectors: their destinations are checked against the outbound-URL policy, and
//! their secrets are sealed bound to those destinations and never follow a new one.

use super::*;

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
    pub suspended: Option<bool>,
    /// `Some(None)` clears the default installation.
    pub default_installation_id: Option<Option<InstallationId>>,
}

impl Registry {
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

    /// Checks the master key against the database: the key check when there is one; otherwise
    /// (a database from before key checks, or a new one) a connector's sealed secrets, after
    /// which the check is written. False: this key does not open the database's secrets.
    pub async fn verify_master_key(&self) -> Result<bool> {
        if let Some(check) = self.store.key_check().await? {
            return Ok(self.cipher.opens_key_check(&check.sealed));
        }
        if let Some(connector) = self.store.sealed_connector().await?
            && open_for_upgrade(&self.cipher, &connector).is_err()
        {
            return Ok(false);
        }
        self.store
            .put_key_check(&self.cipher.key_check(), self.clock.now())
            .await?;
        // Read back: a replica that started at the same time with another key wrote first.
        Ok(self
            .store
            .key_check()
            .await?
            .is_some_and(|check| self.cipher.opens_key_check(&check.sealed)))
    }

    /// The key of `token_id`s, for a broker.
    pub async fn token_id_key_for(&self, caller: &Caller) -> Result<[u8; 32]> {
        if caller.role != Role::Broker {
            return Err(caller.not_allowed());
        }
        self.token_id_key().await
    }

    /// The key `token_id`s are computed under: random, written (sealed) next to the key check
    /// the first time it is asked for, the same for every replica and broker afterwards, and
    /// kept across master key rotations, so a credential's `token_id` never changes.
    pub async fn token_id_key(&self) -> Result<[u8; 32]> {
        let check = self.store.key_check().await?;
        let sealed = match check.and_then(|c| c.token_id_key) {
            Some(sealed) => sealed,
            None => {
                if !self.verify_master_key().await? {
                    return Err(RegistryError::internal(
                        "writing the key of token ids",
                        "the master key does not open this database's secrets",
                    ));
                }
                let fresh = crypto::random_key();
                self.store
                    .put_token_id_key(&self.cipher.seal_token_id_key(&fresh))
                    .await?;
                // Read back: another replica may have written first.
                self.store
                    .key_check()
                    .await?
                    .and_then(|c| c.token_id_key)
                    .ok_or_else(|| {
                        RegistryError::internal("writing the key of token ids", "nothing stored")
                    })?
            }
        };
        self.cipher.open_token_id_key(&sealed).map_err(|_| {
            RegistryError::internal(
                "opening the key of token ids",
                "it does not open under the master key",
            )
        })
    }

    /// Re-seals every sealed value under `new` and makes `new` the key the database checks, in
    /// one transaction; answers with the number of values re-sealed. Run it while no registry
    /// serves the database: afterwards only `new` opens the secrets.
    pub async fn rotate_master_key(&self, new: &SecretCipher) -> Result<u64> {
        let token_id_key = self.token_id_key().await?;
        let check = KeyCheck {
            sealed: new.key_check(),
            token_id_key: Some(new.seal_token_id_key(&token_id_key)),
        };
        let mut signing_keys = Vec::new();
        for key in self.store.signing_keys().await? {
            let opened = self.open_signing_key(&key)?;
            signing_keys.push((
                key.kid.clone(),
                new.seal_signing_key(&key.kid, opened.pkcs8.expose_secret()),
            ));
        }
        let (old, next) = (self.cipher.clone(), new.clone());
        self.store
            .reseal_everything(
                Box::new(move |connector, name, stored| {
                    let binding = SecretBinding::current(connector);
                    let value = binding.open(&old, name, stored, "re-sealing under a new key")?;
                    Ok(binding.seal(&next, name, &value))
                }),
                &check,
                &signing_keys,
                self.clock.now(),
            )
            .await
    }

    /// Adds a new ES256 signing key (brokers publish it as soon as they see it and sign with
    /// it after their publish delay); the older ones stay.
    pub async fn rotate_signing_key(&self) -> Result<SigningKey> {
        if !self.verify_master_key().await? {
            return Err(RegistryError::internal(
                "adding a signing key",
                "the master key does not open this database's secrets",
            ));
        }
        let (pkcs8, public_jwk, kid) = crypto::new_signing_key();
        let key = SigningKey {
            sealed_private_key: self.cipher.seal_signing_key(&kid, &pkcs8),
            kid,
            alg: "ES256".into(),
            public_jwk,
            created_at: self.clock.now(),
        };
        self.store.insert_signing_key(&key).await?;
        Ok(key)
    }

    /// Every signing key, oldest first, as stored (their private halves sealed).
    pub async fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        self.store.signing_keys().await
    }

    /// Every signing key with its private half opened, for a broker of every team: whoever
    /// holds them can sign as Connect for any team, so a broker key limited to some teams gets
    /// none (`ROLE_NOT_ALLOWED`).
    pub async fn signing_keys_for(&self, caller: &Caller) -> Result<Vec<OpenedSigningKey>> {
        if caller.role != Role::Broker || caller.broker_teams.is_some() {
            return Err(caller.not_allowed());
        }
        self.store
            .signing_keys()
            .await?
            .iter()
            .map(|key| self.open_signing_key(key))
            .collect()
    }

    fn open_signing_key(&self, key: &SigningKey) -> Result<OpenedSigningKey> {
        let pkcs8 = self
            .cipher
            .open_signing_key(&key.kid, &key.sealed_private_key)
            .map_err(|_| {
                RegistryError::internal(
                    "opening a signing key",
                    "it does not open under the master key",
                )
            })?;
        Ok(OpenedSigningKey {
            kid: key.kid.clone(),
            alg: key.alg.clone(),
            pkcs8: pkcs8.into(),
            public_jwk: key.public_jwk.clone(),
            created_at: key.created_at,
        })
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
                let open = open_for_upgrade(&cipher, connector)?;
                let input = SecretInput::from_opened(open);
                let mut next = connector.clone();
                next.secrets = seal_all(&cipher, connector, &next.config, &input, "");
                Ok(Some(next))
            }))
            .await
    }

    pub async fn create_connector(&self, caller: &Caller, new: NewConnector) -> Result<Connector> {
        let team = caller.writable_team()?;
        check_type_needs(
            &new.uid,
            &new.config,
            new.secrets.iter().map(|(name, _)| name.as_str()),
        )?;
        self.check_destinations(&new.config)?;
        let now = self.clock.now();
        let mut connector = Connector {
            secrets: BTreeMap::new(),
            id: crypto::new_connector_id(),
            team_id: team.clone(),
            uid: new.uid,
            name: new.name,
            config: new.config,
            suspended: false,
            default_installation_id: None,
            created_at: now,
            updated_at: now,
        };
        connector.secrets = seal_all(
            &self.cipher,
            &connector,
            &connector.config,
            &new.secrets,
            "",
        );
        self.store
            .insert_connector(&connector, &caller.actor())
            .await?;
        Ok(connector)
    }

    /// Every connector type and what it can do (admin and viewer keys).
    pub fn connector_types(&self, caller: &Caller) -> Result<&'static [Capabilities]> {
        caller.readable_team()?;
        Ok(connect_types::CONNECTOR_TYPES)
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
        // What the type requires is checked when config or secrets change (a connector stored
        // before the rule can still be renamed or suspended).
        let needs_check = update.config.is_some() || update.secrets.is_some();
        let edit = Box::new(move |current: &Connector, sealed_dependents: u64| {
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
                // Installations' secrets and users' grants are sealed to the same destinations.
                if !moved.is_empty() && sealed_dependents > 0 {
                    return Err(RegistryError::DependentSecretsBound {
                        connector: current.uid.to_string(),
                        keys: moved.join(", "),
                        dependents: sealed_dependents,
                    });
                }
                next.config = config;
            }
            if let Some(secrets) = &update.secrets {
                next.secrets = seal_all(&cipher, current, &next.config, secrets, "");
            }
            if let Some(default) = update.default_installation_id {
                next.default_installation_id = default;
            }
            if let Some(suspended) = update.suspended {
                next.suspended = suspended;
            }
            if needs_check {
                check_type_needs(
                    &next.uid,
                    &next.config,
                    next.secrets.keys().map(String::as_str),
                )?;
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
}

/// Refuses a connector of a type Connect does not know, or without a config value or secret its
/// type requires (its row of the capability table), each with a field violation that says what
/// is known or required: mistakes show when the connector is made, not at the first token.
fn check_type_needs<'a>(
    uid: &ConnectorUid,
    config: &ConfigMap,
    secret_names: impl Iterator<Item = &'a str>,
) -> Result<()> {
    let kind = uid.kind();
    let Some(row) = connect_types::capabilities(kind.as_str()) else {
        return Err(RegistryError::invalid(
            "uid",
            format!(
                "unknown connector type '{}': the known types are {} (`connect types` describes each)",
                connect_types::truncate(kind.as_str(), 64),
                connect_types::known_types()
            ),
        ));
    };
    let secrets: std::collections::BTreeSet<&str> = secret_names.collect();
    let names = |keys: &[connect_types::Key]| {
        keys.iter()
            .filter(|k| k.required)
            .map(|k| k.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut violations = Vec::new();
    for key in row.config_keys.iter().filter(|k| k.required) {
        if config.get(key.name).is_none_or(str::is_empty) {
            violations.push(FieldViolation::new(
                format!("config.{}", key.name),
                format!(
                    "a {} connector needs the config value {} ({}); required: {}",
                    row.connector_type,
                    key.name,
                    key.description,
                    names(row.config_keys)
                ),
            ));
        }
    }
    for key in row.secret_keys.iter().filter(|k| k.required) {
        if !secrets.contains(key.name) {
            violations.push(FieldViolation::new(
                format!("secrets.{}", key.name),
                format!(
                    "a {} connector needs the secret {} ({}); required: {}",
                    row.connector_type,
                    key.name,
                    key.description,
                    names(row.secret_keys)
                ),
            ));
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(RegistryError::InvalidArgument(violations))
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

/// What every secret of a connector, its installations and its users' grants is sealed to: the
/// team, the connector and the digest of its destinations (`*_url` config). Built once per
/// connector and config, then used for each secret.
pub(super) struct SecretBinding<'a> {
    team_id: &'a str,
    connector_id: &'a str,
    destination: String,
}

impl<'a> SecretBinding<'a> {
    /// `connector`'s secrets as sealed to the destinations of `config` (its own, or the one an
    /// update is about to store).
    pub(super) fn new(connector: &'a Connector, config: &ConfigMap) -> Self {
        Self {
            team_id: connector.team_id.as_str(),
            connector_id: connector.id.as_str(),
            destination: crypto::destination_digest(config.iter()),
        }
    }

    /// `connector`'s secrets as they are stored now.
    pub(super) fn current(connector: &'a Connector) -> Self {
        Self::new(connector, &connector.config)
    }

    fn aad<'n>(&'n self, name: &'n str) -> SecretAad<'n> {
        SecretAad {
            team_id: self.team_id,
            connector_id: self.connector_id,
            name,
            destination: &self.destination,
        }
    }

    /// Seals the secret `name` (scoped, e.g. `installation/<id>/api_key`).
    pub(super) fn seal(
        &self,
        cipher: &SecretCipher,
        name: &str,
        value: &SecretString,
    ) -> StoredSecret {
        StoredSecret {
            sealed: cipher.seal(&self.aad(name), value),
            fingerprint: cipher.fingerprint(value),
        }
    }

    /// Opens the secret `name`; `what` names it in the error of a value that does not open.
    pub(super) fn open(
        &self,
        cipher: &SecretCipher,
        name: &str,
        stored: &StoredSecret,
        what: &'static str,
    ) -> Result<SecretString> {
        cipher
            .open(&self.aad(name), &stored.sealed)
            .map_err(|e| RegistryError::internal(what, e))
    }
}

/// Seals `secrets` for `connector`'s row (or, with a `scope` of `installation/<id>/`, for one of
/// its installations), bound to the destinations of `config`.
pub(super) fn seal_all(
    cipher: &SecretCipher,
    connector: &Connector,
    config: &ConfigMap,
    secrets: &SecretInput,
    scope: &str,
) -> BTreeMap<String, StoredSecret> {
    let binding = SecretBinding::new(connector, config);
    secrets
        .iter()
        .map(|(name, value)| {
            let stored = binding.seal(cipher, &format!("{scope}{name}"), value);
            (name.clone(), stored)
        })
        .collect()
}

pub(super) fn open_all(
    cipher: &SecretCipher,
    connector: &Connector,
) -> Result<BTreeMap<String, SecretString>> {
    open_scoped(cipher, connector, &connector.secrets, "")
}

/// Opens a connector's secrets whether sealed before the destination binding or after: for the
/// key check and the upgrade at start only (nothing else opens the older form).
fn open_for_upgrade(
    cipher: &SecretCipher,
    connector: &Connector,
) -> Result<BTreeMap<String, SecretString>> {
    let binding = SecretBinding::current(connector);
    connector
        .secrets
        .iter()
        .map(|(name, stored)| {
            let aad = binding.aad(name);
            let opened = if SecretCipher::is_legacy(&stored.sealed) {
                cipher.open_legacy(&aad, &stored.sealed)
            } else {
                cipher.open(&aad, &stored.sealed)
            };
            let value =
                opened.map_err(|e| RegistryError::internal("opening a connector secret", e))?;
            Ok((name.clone(), value))
        })
        .collect()
}

/// Opens secrets sealed by [`seal_all`] with `scope`.
pub(super) fn open_scoped(
    cipher: &SecretCipher,
    connector: &Connector,
    secrets: &BTreeMap<String, StoredSecret>,
    scope: &str,
) -> Result<BTreeMap<String, SecretString>> {
    let binding = SecretBinding::current(connector);
    secrets
        .iter()
        .map(|(name, stored)| {
            let value = binding.open(
                cipher,
                &format!("{scope}{name}"),
                stored,
                "opening a connector secret",
            )?;
            Ok((name.clone(), value))
        })
        .collect()
}
