//! Revocation. The registry never holds a credential, so it cannot revoke one at the provider
//! itself: it marks the ledger rows revoked and appends a `tokens.revoke` change in the same
//! transaction; every broker following the feed drops its cached copies, revokes those at the
//! provider where the type can, and reports what the provider said (`ReportRevocations`). The
//! answer waits for those reports a bounded time; a credential no broker reported on by then was
//! held by none (evicted, or its broker restarted) and counts as skipped.

use super::*;
use crate::domain::{
    model::ProviderRevocation,
    store::{RevokeFilter, Revoked},
    types::UserId,
};

/// What `RevokeTokens` answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevocationSummary {
    pub tokens_found: u64,
    pub revoked: u64,
    pub provider_revoked: u64,
    pub provider_skipped: u64,
    pub provider_failed: u64,
    /// Stored user grants deleted: their users must consent again.
    pub grants_deleted: u64,
}

/// How often the reports are looked for while waiting.
const POLL: Duration = Duration::from_millis(25);

/// Whether credentials of this connector can be revoked at the provider (its type's row).
pub(super) fn provider_can_revoke(connector: &Connector) -> bool {
    connect_types::capabilities(connector.uid.kind().as_str())
        .is_some_and(|row| row.can_revoke(|key| connector.config.get(key)))
}

impl Registry {
    /// Revokes the connector's credentials that `filter` covers (admin keys).
    pub async fn revoke_tokens(
        &self,
        caller: &Caller,
        connector: &ConnectorRef,
        filter: RevokeFilter,
    ) -> Result<RevocationSummary> {
        let team = caller.writable_team()?;
        let connector = self
            .store
            .connector(team, connector)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Connector, connector))?;
        // The stored grants first: from then on no broker can refresh one of them.
        let user = match filter.subject.as_deref() {
            None => Some(None),
            Some(subject) => match subject.strip_prefix("user:").map(UserId::parse) {
                Some(Ok(user)) => Some(Some(user)),
                _ => None,
            },
        };
        let revocable = provider_can_revoke(&connector);
        let grants_deleted = match user {
            Some(user) => {
                self.store
                    .delete_grants(
                        &connector,
                        user.as_ref(),
                        filter.installation_id.as_deref(),
                        revocable,
                        &caller.actor(),
                        self.clock.now(),
                    )
                    .await?
            }
            None => 0,
        };
        let revoked = self
            .store
            .revoke_issuances(&connector, &filter, &caller.actor(), self.clock.now())
            .await?;
        let summary = self.settle(&connector, revoked).await?;
        // The deleted grants' refresh tokens: a broker takes them to the provider; wait for that
        // as long as for the reports.
        let deadline = Instant::now() + self.revocation_wait;
        while grants_deleted > 0
            && revocable
            && Instant::now() < deadline
            && self.store.queued_grant_revocations(&connector.id).await? > 0
        {
            tokio::time::sleep(POLL).await;
        }
        Ok(RevocationSummary {
            grants_deleted,
            ..summary
        })
    }

    /// Takes the refresh tokens of the connector's revoked grants, with what revoking them at
    /// the provider needs (broker keys).
    pub async fn claim_grant_revocations(
        &self,
        caller: &Caller,
        team: &TeamId,
        connector: &ConnectorId,
    ) -> Result<(
        Connector,
        BTreeMap<String, SecretString>,
        Vec<(i64, SecretString)>,
    )> {
        caller.serves(team)?;
        let now = self.clock.now();
        let until = now + chrono::Duration::minutes(1);
        let reference = ConnectorRef::Id(connector.clone());
        // A live connector's queue; else what a deleted one left, under its tombstone.
        let (connector, claimed) = match self.store.connector(team, &reference).await? {
            Some(live) => {
                let claimed = self
                    .store
                    .claim_grant_revocations(&live.id, 1000, now, until)
                    .await?;
                (live, claimed)
            }
            None => {
                let departed = self
                    .store
                    .departed_connector(team, connector)
                    .await?
                    .ok_or_else(|| RegistryError::not_found(Resource::Connector, reference))?;
                let claimed = self
                    .store
                    .claim_departed_revocations(&departed.id, 1000, now, until)
                    .await?;
                (departed, claimed)
            }
        };
        let mut tokens = Vec::with_capacity(claimed.len());
        for (id, name, sealed) in claimed {
            tokens.push((id, self.open_grant_secret(&connector, &name, &sealed)?));
        }
        let secrets = super::connectors::open_all(&self.cipher, &connector)?;
        Ok((connector, secrets, tokens))
    }

    /// A broker took these claimed refresh tokens to the provider (broker keys).
    pub async fn finish_grant_revocations(
        &self,
        caller: &Caller,
        team: &TeamId,
        connector: &ConnectorId,
        ids: &[i64],
    ) -> Result<()> {
        caller.serves(team)?;
        let reference = ConnectorRef::Id(connector.clone());
        if self.store.connector(team, &reference).await?.is_some() {
            return self.store.finish_grant_revocations(connector, ids).await;
        }
        if self
            .store
            .departed_connector(team, connector)
            .await?
            .is_some()
        {
            return self.store.finish_departed_revocations(connector, ids).await;
        }
        Err(RegistryError::not_found(Resource::Connector, reference))
    }

    /// Waits (bounded) for the brokers' reports on the credentials the provider can revoke, and
    /// counts what became of each.
    async fn settle(&self, connector: &Connector, revoked: Revoked) -> Result<RevocationSummary> {
        let now = self.clock.now();
        let can_revoke = provider_can_revoke(connector);
        let (awaited, skipped): (Vec<_>, Vec<_>) = revoked
            .revoked
            .iter()
            .partition(|row| can_revoke && row.expires_at.is_none_or(|at| at > now));
        let team = &connector.team_id;
        let skip = |rows: Vec<String>| -> Vec<(String, ProviderRevocation)> {
            rows.into_iter()
                .map(|t| (t, ProviderRevocation::Skipped))
                .collect()
        };
        self.store
            .report_revocations(
                team,
                &connector.id,
                &skip(skipped.iter().map(|r| r.token_id.clone()).collect()),
            )
            .await?;
        let awaited: Vec<String> = awaited.iter().map(|r| r.token_id.clone()).collect();
        let deadline = Instant::now() + self.revocation_wait;
        let outcomes = loop {
            let outcomes = self
                .store
                .provider_revocations(team, &connector.id, &awaited)
                .await?;
            if outcomes.iter().all(|(_, o)| o.is_some()) || Instant::now() >= deadline {
                break outcomes;
            }
            tokio::time::sleep(POLL).await;
        };
        let unreported: Vec<String> = outcomes
            .iter()
            .filter(|(_, o)| o.is_none())
            .map(|(t, _)| t.clone())
            .collect();
        self.store
            .report_revocations(team, &connector.id, &skip(unreported))
            .await?;
        let mut summary = RevocationSummary {
            tokens_found: revoked.tokens_found,
            revoked: revoked.revoked.len() as u64,
            provider_skipped: skipped.len() as u64,
            ..Default::default()
        };
        for (_, outcome) in outcomes {
            match outcome {
                Some(ProviderRevocation::Revoked) => summary.provider_revoked += 1,
                Some(ProviderRevocation::Failed) => summary.provider_failed += 1,
                Some(ProviderRevocation::Skipped) | None => summary.provider_skipped += 1,
            }
        }
        Ok(summary)
    }

    /// A broker's report of what the provider answered to its revocations (broker keys).
    pub async fn report_revocations(
        &self,
        caller: &Caller,
        team: &TeamId,
        connector: &ConnectorId,
        outcomes: Vec<(String, ProviderRevocation)>,
    ) -> Result<u64> {
        caller.serves(team)?;
        self.store
            .report_revocations(team, connector, &outcomes)
            .await
    }
}
