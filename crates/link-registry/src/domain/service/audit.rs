//! Reading the audit log (every change writes its own event, in the store).

use super::*;

impl Registry {
    pub async fn list_audit_events(
        &self,
        caller: &Caller,
        page: PageRequest<AuditKey>,
    ) -> Result<Page<AuditEvent>> {
        let team = caller.readable_team()?;
        let rows = self.store.audit_events(team, &page).await?;
        Ok(Page::from_rows(rows, page.size, |e| AuditKey(e.id)))
    }
}
