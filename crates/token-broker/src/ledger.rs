//! The issuance ledger, from the broker's side: every credential is recorded in the registry
//! before it is handed out, once per (credential, team, project, environment), under a `token_id`
//! that is the first 16 hex digits of its HMAC-SHA-256 under the registry's key (fetched once). A
//! credential that cannot be recorded is not handed out. Which records were written is remembered (bounded), so a credential served again
//! from a cache costs no registry call.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::{
    auth::Identity,
    error::Result,
    issuers::Subject,
    registry::{Authorization, Issuance, IssuanceRecorder, TokenIdKey},
};

/// What one hand-out is: the credential and who it goes to.
#[derive(Debug)]
pub struct HandOut<'a> {
    pub identity: &'a Identity,
    pub authorization: &'a Authorization,
    pub subject: &'a Subject,
    pub installation_id: Option<&'a str>,
    pub scopes: &'a [String],
    pub token_id: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
pub struct Ledger {
    recorder: Arc<dyn IssuanceRecorder>,
    /// The SHA-256 of (token id, team, project, environment) of each record written: 32 bytes
    /// an entry, so that 100 000 callers cost little.
    recorded: quick_cache::sync::Cache<[u8; 32], ()>,
    /// The registry's key of `token_id`s, once fetched (it never changes).
    token_id_key: tokio::sync::OnceCell<TokenIdKey>,
}

impl Ledger {
    /// A ledger writing through `recorder`, remembering at most `remember` records.
    pub fn new(recorder: Arc<dyn IssuanceRecorder>, remember: u64) -> Self {
        Self {
            recorder,
            recorded: crate::cache::bounded(remember.max(1)),
            token_id_key: tokio::sync::OnceCell::new(),
        }
    }

    /// Forgets which records were written, so that each credential is recorded (and checked
    /// against revocations by the registry) again before it is next handed out: after a
    /// revocation, or when one may have been missed.
    pub fn forget_recorded(&self) {
        self.recorded.clear();
    }

    /// The `token_id` of `token`: the first 16 hex digits of its HMAC-SHA-256 under the
    /// registry's key, which the first call fetches. An error means the registry could not be
    /// asked for the key.
    pub async fn token_id(&self, token: &SecretString) -> Result<String> {
        let key = self
            .token_id_key
            .get_or_try_init(|| self.recorder.token_id_key())
            .await?;
        Ok(key.token_id(token))
    }

    /// Records `hand_out` unless it is known to be recorded; an error means the credential must
    /// not be handed out.
    pub async fn record(&self, hand_out: HandOut<'_>) -> Result<()> {
        let identity = hand_out.identity;
        let key: [u8; 32] = Sha256::new()
            .chain_update(hand_out.token_id.as_bytes())
            .chain_update([0])
            .chain_update(identity.owner_id.as_str().as_bytes())
            .chain_update([0])
            .chain_update(identity.project_id.as_str().as_bytes())
            .chain_update([0])
            .chain_update(identity.environment.as_str().as_bytes())
            .finalize()
            .into();
        if self.recorded.get(&key).is_some() {
            return Ok(());
        }
        self.recorder
            .record(Issuance {
                token_id: hand_out.token_id.to_owned(),
                connector_id: hand_out.authorization.connector_id.clone(),
                connector_uid: hand_out.authorization.connector_uid.clone(),
                owner_id: identity.owner_id.clone(),
                project_id: identity.project_id.clone(),
                environment: identity.environment,
                subject: hand_out.subject.label(),
                installation_id: hand_out.installation_id.map(str::to_owned),
                scopes: hand_out.scopes.to_vec(),
                issued_at: Utc::now(),
                expires_at: hand_out.expires_at,
            })
            .instrument(tracing::debug_span!(
                "registry.record_issuance",
                otel.kind = "client",
                token_id = hand_out.token_id,
            ))
            .await?;
        self.recorded.insert(key, ());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        sync::{
            Mutex,
            atomic::{AtomicBool, Ordering},
        },
    };

    use connect_types::{Environment, IssuerUrl, ProjectId, TeamId};

    use secrecy::SecretString;

    use super::*;
    use crate::error::BrokerError;

    #[derive(Debug, Default)]
    struct Registry {
        records: Mutex<Vec<Issuance>>,
        down: AtomicBool,
        key_fetches: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl IssuanceRecorder for Registry {
        async fn record(&self, issuance: Issuance) -> Result<bool> {
            if self.down.load(Ordering::SeqCst) {
                return Err(BrokerError::RegistryUnavailable("down".into()));
            }
            self.records.lock().unwrap().push(issuance);
            Ok(true)
        }

        async fn token_id_key(&self) -> Result<TokenIdKey> {
            if self.down.load(Ordering::SeqCst) {
                return Err(BrokerError::RegistryUnavailable("down".into()));
            }
            self.key_fetches.fetch_add(1, Ordering::SeqCst);
            Ok(TokenIdKey::new(&[7; 32]))
        }
    }

    #[tokio::test]
    async fn token_ids_are_keyed_and_the_key_is_fetched_once() {
        use hmac::Mac;
        let registry = Arc::new(Registry::default());
        let ledger = Ledger::new(registry.clone(), 100);
        let token = SecretString::from("sk_live_1".to_owned());
        // Nothing fetched yet and the registry down: no token_id, an error.
        registry.down.store(true, Ordering::SeqCst);
        assert!(matches!(
            ledger.token_id(&token).await,
            Err(BrokerError::RegistryUnavailable(_))
        ));
        registry.down.store(false, Ordering::SeqCst);
        let id = ledger.token_id(&token).await.unwrap();
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&[7; 32]).unwrap();
        mac.update(b"sk_live_1");
        assert_eq!(id, hex::encode(&mac.finalize().into_bytes()[..8]));
        // Not the bare digest: reading the ledger does not confirm a guessed credential.
        assert_ne!(id, hex::encode(&Sha256::digest(b"sk_live_1")[..8]));
        // Fetched once; known afterwards even while the registry is down.
        registry.down.store(true, Ordering::SeqCst);
        assert_eq!(ledger.token_id(&token).await.unwrap(), id);
        let other = ledger
            .token_id(&SecretString::from("sk_live_2".to_owned()))
            .await
            .unwrap();
        assert_ne!(other, id);
        assert_eq!(registry.key_fetches.load(Ordering::SeqCst), 1);
        // Another key, another id: the id depends on the registry's key.
        let elsewhere = TokenIdKey::new(&[8; 32]).token_id(&token);
        assert_ne!(elsewhere, id);
    }

    fn identity(project: &str, environment: Environment) -> Identity {
        Identity {
            issuer: IssuerUrl::parse("https://issuer.example").unwrap(),
            owner_id: TeamId::parse("team_a").unwrap(),
            project_id: ProjectId::parse(project).unwrap(),
            environment,
        }
    }

    #[tokio::test]
    async fn each_credential_is_recorded_once_per_project_and_environment() {
        let registry = Arc::new(Registry::default());
        let ledger = Ledger::new(registry.clone(), 100);
        let authorization = Authorization {
            connector_id: "conn_1".into(),
            connector_uid: "api-key/x".into(),
            connector_type: "api-key".into(),
            config: BTreeMap::new(),
            secrets: BTreeMap::new(),
            installation: None,
            link_expires_at: None,
            ceilings: Default::default(),
            owner_slug: "a".into(),
            project_name: String::new(),
        };
        let token = SecretString::from("sk_live_1".to_owned());
        let id = ledger.token_id(&token).await.unwrap();
        assert_eq!(id.len(), 16);
        assert!(!id.contains("sk_live"));
        let hand_out = |identity| HandOut {
            identity,
            authorization: &authorization,
            subject: &Subject::App,
            installation_id: None,
            scopes: &[],
            token_id: &id,
            expires_at: None,
        };
        let preview = identity("prj_a", Environment::Preview);
        let production = identity("prj_a", Environment::Production);
        for _ in 0..3 {
            ledger.record(hand_out(&preview)).await.unwrap();
        }
        ledger.record(hand_out(&production)).await.unwrap();
        let records = registry.records.lock().unwrap().clone();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].environment, Environment::Preview);
        assert_eq!(records[1].environment, Environment::Production);
        assert_eq!(records[0].token_id, id);
        assert_eq!(records[0].subject, "app");
        // Nothing recorded, nothing handed out.
        registry.down.store(true, Ordering::SeqCst);
        let other = identity("prj_b", Environment::Preview);
        assert!(matches!(
            ledger.record(hand_out(&other)).await,
            Err(BrokerError::RegistryUnavailable(_))
        ));
        // What was recorded before is still known.
        ledger.record(hand_out(&preview)).await.unwrap();
    }
}
