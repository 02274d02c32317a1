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

use futures::StreamExt;
use secrecy::ExposeSecret;

use crate::{
    issuers::{Issuers, RevokeOutcome, RevokeWith, basic_auth_of, revoke_at},
    ledger::Ledger,
    outbound::Outbound,
    registry::{CachedAuthorizer, Change, ChangeFeed, ChangeKind, Revocations, RevokeScope},
};

/// Something that acts on the change feed's events.
pub trait FeedListener: Send + Sync {
    fn apply(&self, change: &Change);
}

impl FeedListener for CachedAuthorizer {
    fn apply(&self, change: &Change) {
        CachedAuthorizer::apply(self, change);
    }
}

/// Follows `feed` until the task is aborted, handing each event to every listener in order.
pub fn spawn_follower(
    feed: Arc<dyn ChangeFeed>,
    listeners: Vec<Arc<dyn FeedListener>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // A live feed sends a heartbeat every second; three missed ones mean it is gone.
        let silence = Duration::from_secs(3);
        let revision = AtomicI64::new(0);
        let mut backoff = Duration::from_millis(100);
        loop {
            match feed.watch(revision.load(Ordering::SeqCst)).await {
                Ok(mut stream) => loop {
                    match tokio::time::timeout(silence, stream.next()).await {
                        Ok(Some(Ok(change))) => {
                            for listener in &listeners {
                                listener.apply(&change);
                            }
                            revision.fetch_max(change.revision, Ordering::SeqCst);
                            backoff = Duration::from_millis(100);
                        }
                        Ok(None) => break,
                        Ok(Some(Err(e))) => {
                            tracing::warn!(error = %e, "change feed ended");
                            break;
                        }
                        Err(_) => {
                            tracing::warn!("change feed silent; reconnecting");
                            break;
                        }
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow the change feed");
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
    /// Names the revoked credentials in reports by their `token_id`.
    ledger: Arc<Ledger>,
    registry: Arc<dyn Revocations>,
    /// For the refresh tokens of revoked user grants.
    outbound: Outbound,
    synced_once: AtomicBool,
}

impl Revoker {
    pub fn new(
        issuers: Issuers,
        ledger: Arc<Ledger>,
        registry: Arc<dyn Revocations>,
        outbound: Outbound,
    ) -> Self {
        Self {
            issuers,
            ledger,
            registry,
            outbound,
            synced_once: AtomicBool::new(false),
        }
    }
}

/// Takes the refresh tokens of the connector's revoked user grants (if this broker is first) and
/// revokes each at the connector's `revocation_url` (RFC 7009).
async fn revoke_grants(registry: &dyn Revocations, outbound: &Outbound, scope: &RevokeScope) {
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
    if claimed.tokens.is_empty() {
        return;
    }
    let Ok(url) = outbound.check(&claimed.revocation_url) else {
        tracing::warn!("the connector's revocation_url is not an allowed destination");
        return;
    };
    let how = RevokeWith::Rfc7009 {
        url,
        basic: basic_auth_of(&claimed.client_id, claimed.client_secret.expose_secret()),
    };
    let mut done = Vec::with_capacity(claimed.tokens.len());
    for (id, token) in &claimed.tokens {
        let outcome = revoke_at(outbound.http(), token, &how, "refresh_token").await;
        if outcome != RevokeOutcome::Revoked {
            tracing::warn!(
                outcome = outcome.as_str(),
                "a revoked grant's refresh token was not revoked at the provider"
            );
        }
        done.push(*id);
    }
    if let Err(e) = registry
        .finish_grant_revocations(&scope.owner_id, &scope.connector_id, done)
        .await
    {
        tracing::warn!(error = %e, "cannot say the revoked grants' refresh tokens were revoked");
    }
}

impl FeedListener for Revoker {
    fn apply(&self, change: &Change) {
        let scope = match &change.kind {
            ChangeKind::Resync => {
                if self.synced_once.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        "the change feed resynced: dropping every cached provider token"
                    );
                    self.issuers.forget_all();
                    self.ledger.forget_recorded();
                }
                return;
            }
            ChangeKind::Replaced(scope) => {
                let (issuers, registry, outbound, scope) = (
                    self.issuers.clone(),
                    self.registry.clone(),
                    self.outbound.clone(),
                    scope.clone(),
                );
                tokio::spawn(async move {
                    issuers.forget(&scope).await;
                    revoke_grants(&*registry, &outbound, &scope).await;
                });
                return;
            }
            ChangeKind::Revoked(scope) => {
                // A credential handed out before (an `api-key` connector's stored key, above all)
                // is recorded again before it is next handed out, and the registry refuses it if
                // it is revoked.
                self.ledger.forget_recorded();
                scope.clone()
            }
            ChangeKind::Heartbeat | ChangeKind::Answers { .. } => return,
        };
        let (issuers, ledger, registry, outbound) = (
            self.issuers.clone(),
            self.ledger.clone(),
            self.registry.clone(),
            self.outbound.clone(),
        );
        tokio::spawn(async move {
            // A user's grants, or a discarded consent's tokens (`consent:<request id>`).
            if scope
                .subject
                .as_deref()
                .is_none_or(|s| s.starts_with("user:") || s.starts_with("consent:"))
            {
                revoke_grants(&*registry, &outbound, &scope).await;
            }
            let mut outcomes: Vec<(String, &'static str)> = Vec::new();
            for (token, outcome) in issuers.revoke(&scope).await {
                match ledger.token_id(&token).await {
                    Ok(token_id) => outcomes.push((token_id, outcome.as_str())),
                    Err(e) => tracing::warn!(error = %e,
                        "cannot name a revoked credential in the report: the registry's key of token ids is unknown"),
                }
            }
            if outcomes.is_empty() {
                return;
            }
            let mut backoff = Duration::from_millis(100);
            for attempt in 1..=3 {
                match registry
                    .report_revocations(&scope.owner_id, &scope.connector_id, &outcomes)
                    .await
                {
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
