//! Reading the audit log (every change writes its own event, in the store), exporting it, and
//! keeping its growth under the operator's control: events older than the retention are deleted
//! in small batches, each one short statement, so writers never wait for a long delete.

use super::*;
use crate::domain::{
    audit::{ChainedFields, GENESIS_HASH, chain_hash},
    store::ChainedRow,
};

/// What `link-registry audit verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainCheck {
    /// Every kept event continues the chain: how many, after which pruned event (0: none), and
    /// the newest hash (record it elsewhere to detect a cut tail later).
    Whole {
        events: u64,
        starts_after: i64,
        head: String,
    },
    /// The first event that does not continue the chain, and why.
    Broken { id: i64, problem: &'static str },
}

fn fields(row: &ChainedRow) -> ChainedFields<'_> {
    ChainedFields {
        team_id: row.team_id.as_deref(),
        actor: &row.actor,
        actor_issuer: row.actor_issuer.as_deref(),
        action: &row.action,
        target: &row.target,
        before: row.before.as_deref(),
        after: row.after.as_deref(),
        time: row.time,
    }
}

impl Registry {
    pub async fn list_audit_events(
        &self,
        caller: &Caller,
        filter: &AuditFilter,
        page: PageRequest<AuditKey>,
    ) -> Result<Page<AuditEvent>> {
        let team = caller.readable_team()?;
        let rows = self.store.audit_events(team, filter, &page).await?;
        Ok(Page::from_rows(rows, page.size, |e| AuditKey(e.id)))
    }

    /// Walks the audit chain from where the kept chain starts, recomputing every hash.
    pub async fn verify_audit(&self) -> Result<ChainCheck> {
        const BATCH: u64 = 1000;
        let (starts_after, mut prev) = self
            .store
            .audit_chain_start()
            .await?
            .unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
        let (mut after, mut events) = (starts_after, 0);
        loop {
            let rows = self.store.audit_chain_rows(after, BATCH).await?;
            for row in &rows {
                if row.prev_hash.as_deref() != Some(prev.as_str()) {
                    return Ok(ChainCheck::Broken {
                        id: row.id,
                        problem: "its prev_hash does not continue the chain: an event before it \
                                  was removed, or one was inserted before it",
                    });
                }
                let hash = chain_hash(&prev, &fields(row));
                if row.hash.as_deref() != Some(hash.as_str()) {
                    return Ok(ChainCheck::Broken {
                        id: row.id,
                        problem: "its hash does not match its contents: it was edited (or \
                                  inserted with a wrong hash)",
                    });
                }
                (prev, after, events) = (hash, row.id, events + 1);
            }
            if (rows.len() as u64) < BATCH {
                return Ok(ChainCheck::Whole {
                    events,
                    starts_after,
                    head: prev,
                });
            }
        }
    }

    /// Deletes every event older than `retention`, a batch at a time; answers with how many.
    pub async fn prune_audit(&self, retention: Duration) -> Result<u64> {
        const BATCH: u64 = 1000;
        // A retention longer than the calendar reaches back keeps everything.
        let Some(cutoff) = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|r| self.clock.now().checked_sub_signed(r))
        else {
            return Ok(0);
        };
        let mut total = 0;
        loop {
            let deleted = self.store.prune_audit(cutoff, BATCH).await?;
            total += deleted;
            if deleted < BATCH {
                return Ok(total);
            }
            // Room for writers between batches.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Hands every event of `[since, until)` (of one team, or all) to `each`, in time order;
    /// answers with how many (for `link-registry audit export`).
    pub async fn export_audit(
        &self,
        team: Option<&TeamId>,
        window: (DateTime<Utc>, DateTime<Utc>),
        mut each: impl FnMut(AuditEvent) -> Result<()>,
    ) -> Result<u64> {
        const BATCH: u64 = 500;
        let mut after = None;
        let mut total = 0;
        loop {
            let events = self.store.audit_between(team, window, after, BATCH).await?;
            let last = events.last().map(|e| (e.time, e.id));
            let count = events.len() as u64;
            for event in events {
                each(event)?;
            }
            total += count;
            match last {
                Some(last) if count == BATCH => after = Some(last),
                _ => return Ok(total),
            }
        }
    }
}
