//! Following the registry's change feed: one task per broker reads the feed (resuming from the
//! last revision it saw, reconnecting after failures) and hands every event to each listener — the
//! authorization cache, which drops the answers a change may have made wrong, and the
//! [`Revoker`], which acts on revocations.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use connect_proto::registry::v1 as pb;

use secrecy::SecretString;

use crate::{
    issuers::{Issuers, RevokeOutcome, RevokeScope, RevokeWith, basic_auth_of, revoke_at},
    outbound::Outbound,
    registry::RegistryClient,
};

/// Something that acts on the change feed's events.
pub trait FeedListener: Send + Sync {
    fn apply(&self, event: &pb::ChangeEvent);
}

/// The action of a revocation in the feed.
pub const TOKENS_REVOKE: &str = "tokens.revoke";

/// Follows `registry`'s change feed until the task is aborted, handing each event to every
/// listener in order.
pub fn spawn_follower(
    registry: RegistryClient,
    listeners: Vec<Arc<dyn FeedListener>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // A live feed sends a heartbeat every second; three missed ones mean it is gone.
        let silence = Duration::from_secs(3);
        let revision = AtomicI64::new(0);
        let mut backoff = Duration::from_millis(100);
        loop {
            match registry
                .watch_changes(revision.load(Ordering::SeqCst))
                .await
            {
                Ok(mut stream) => loop {
                    match tokio::time::timeout(silence, stream.message()).await {
                        Ok(Ok(Some(event))) => {
                            for listener in &listeners {
                                listener.apply(&event);
                            }
                            revision.fetch_max(event.revision, Ordering::SeqCst);
                            backoff = Duration::from_millis(100);
                        }
                        Ok(Ok(None)) => break,
                        Ok(Err(status)) => {
                            tracing::warn!(code = ?status.code(), "change feed ended");
                            break;
                        }
                        Err(_) => {
                            tracing::warn!("change feed silent; reconnecting");
                            break;
                        }
                    }
                },
                Err(status) => {
                    tracing::warn!(code = ?status.code(), "cannot follow the change feed");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    })
}

/// Acts on revocations: drops the cached provider credentials a `tokens.revoke` covers, revokes
/// them at the provider where the type can, and reports each outcome to the registry. A resync
/// after the first one (the feed could not replay, so a revocation may have been missed) drops
/// every cached provider credential.
#[derive(Debug)]
pub struct Revoker {
    issuers: Issuers,
    registry: RegistryClient,
    /// For the refresh tokens of revoked user grants.
    outbound: Outbound,
    synced_once: AtomicBool,
}

impl Revoker {
    pub fn new(issuers: Issuers, registry: RegistryClient, outbound: Outbound) -> Self {
        Self {
            issuers,
            registry,
            outbound,
            synced_once: AtomicBool::new(false),
        }
    }
}

/// Takes the refresh tokens of the connector's revoked user grants (if this broker is first) and
/// revokes each at the connector's `revocation_url` (RFC 7009).
async fn revoke_grants(registry: &RegistryClient, outbound: &Outbound, scope: &RevokeScope) {
    let claimed = match registry
        .claim_grant_revocations(&scope.owner_id, &scope.connector_id)
        .await
    {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the refresh tokens of revoked grants");
            return;
        }
    };
    if claimed.refresh_tokens.is_empty() {
        return;
    }
    let Ok(url) = outbound.check(&claimed.revocation_url) else {
        tracing::warn!("the connector's revocation_url is not an allowed destination");
        return;
    };
    let how = RevokeWith::Rfc7009 {
        url,
        basic: basic_auth_of(&claimed.client_id, &claimed.client_secret),
    };
    let mut done = Vec::with_capacity(claimed.refresh_tokens.len());
    for claimed in claimed.refresh_tokens {
        let token = SecretString::from(claimed.refresh_token);
        let outcome = revoke_at(outbound.http(), &token, &how, "refresh_token").await;
        if outcome != RevokeOutcome::Revoked {
            tracing::warn!(
                outcome = outcome.as_str(),
                "a revoked grant's refresh token was not revoked at the provider"
            );
        }
        done.push(claimed.id);
    }
    if let Err(e) = registry
        .finish_grant_revocations(&scope.owner_id, &scope.connector_id, done)
        .await
    {
        tracing::warn!(error = %e, "cannot say the revoked grants' refresh tokens were revoked");
    }
}

impl FeedListener for Revoker {
    fn apply(&self, event: &pb::ChangeEvent) {
        if event.resync {
            if self.synced_once.swap(true, Ordering::SeqCst) {
                tracing::warn!("the change feed resynced: dropping every cached provider token");
                self.issuers.forget_all();
            }
            return;
        }
        if event.action != TOKENS_REVOKE {
            return;
        }
        let scope = RevokeScope {
            owner_id: event.owner_id.clone(),
            connector_id: event.connector_id.clone(),
            installation_id: (!event.installation_id.is_empty())
                .then(|| event.installation_id.clone()),
            subject: (!event.subject.is_empty()).then(|| event.subject.clone()),
        };
        let (issuers, registry, outbound) = (
            self.issuers.clone(),
            self.registry.clone(),
            self.outbound.clone(),
        );
        tokio::spawn(async move {
            if scope
                .subject
                .as_deref()
                .is_none_or(|s| s.starts_with("user:"))
            {
                revoke_grants(&registry, &outbound, &scope).await;
            }
            let outcomes = issuers.revoke(&scope).await;
            if outcomes.is_empty() {
                return;
            }
            let report = pb::ReportRevocationsRequest {
                owner_id: scope.owner_id.clone(),
                connector_id: scope.connector_id.clone(),
                revocations: outcomes
                    .iter()
                    .map(|(token_id, outcome)| pb::Revocation {
                        token_id: token_id.clone(),
                        outcome: outcome.as_str().to_owned(),
                    })
                    .collect(),
            };
            let mut backoff = Duration::from_millis(100);
            for attempt in 1..=3 {
                match registry.report_revocations(report.clone()).await {
                    Ok(()) => return,
                    Err(e) if attempt < 3 => {
                        tracing::warn!(error = %e, "reporting revocations failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff *= 4;
                    }
                    Err(e) => tracing::warn!(error = %e, "reporting revocations failed"),
                }
            }
        });
    }
}
