//! Reading the audit log (every change writes its own event, in the store), exporting it, and
//! keeping its growth under the operator's control: events older than the retention are deleted
//! in small batches, each one short statement, so writers never wait for a long delete.

use super::*;

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
