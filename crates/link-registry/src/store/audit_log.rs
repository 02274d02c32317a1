//! The audit log: appended by [`WriteTxn::commit`](super::WriteTxn::commit), read newest first.

use super::*;

pub(super) async fn insert_audit(txn: &DatabaseTransaction, event: NewAuditEvent) -> Result<()> {
    audit_event::Entity::insert(rows::audit_event_row(event))
        .exec_without_returning(txn)
        .await
        .map_err(storage_error)?;
    Ok(())
}

#[async_trait]
impl AuditStore for SeaStore {
    async fn audit_events(
        &self,
        team: &TeamId,
        page: &PageRequest<AuditKey>,
    ) -> Result<Vec<AuditEvent>> {
        let found = super::lists::audit_page(team, page)
            .all(&self.db)
            .await
            .map_err(storage_error)?;
        found.into_iter().map(rows::audit_event).collect()
    }
}
