//! The issuance ledger, from the broker's side: every credential is recorded in the registry
//! before it is handed out, once per (credential, team, project, environment), under a `token_id`
//! that is the first 16 hex digits of its SHA-256. A credential that cannot be recorded is not
//! handed out. Which records were written is remembered (bounded), so a credential served again
//! from a cache costs no registry call.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::{
    auth::Identity,
    error::Result,
    issuers::Subject,
    registry::{Authorization, Issuance, IssuanceRecorder},
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
}

impl Ledger {
    /// A ledger writing through `recorder`, remembering at most `remember` records.
    pub fn new(recorder: Arc<dyn IssuanceRecorder>, remember: u64) -> Self {
        Self {
            recorder,
            recorded: crate::cache::bounded(remember.max(1)),
        }
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
    use crate::{error::BrokerError, issuers::token_id};

    #[derive(Debug, Default)]
    struct Registry {
        records: Mutex<Vec<Issuance>>,
        down: AtomicBool,
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
        };
        let token = SecretString::from("sk_live_1".to_owned());
        let id = token_id(&token);
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
