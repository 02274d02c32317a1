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
        filter: &AuditFilter,
        page: &PageRequest<AuditKey>,
    ) -> Result<Vec<AuditEvent>> {
        let found = super::lists::audit_page(team, filter, page)
            .all(&self.db)
            .await
            .map_err(storage_error)?;
        found.into_iter().map(rows::audit_event).collect()
    }

    async fn prune_audit(&self, before: DateTime<Utc>, batch: u64) -> Result<u64> {
        use audit_event::Column as A;
        // One bounded statement per batch: writers wait at most for one batch.
        let oldest = Query::select()
            .column(A::Id)
            .from(audit_event::Entity)
            .and_where(Expr::col(A::CreatedAt).lt(before))
            .order_by(A::Id, Order::Asc)
            .limit(batch)
            .to_owned();
        let deleted = audit_event::Entity::delete_many()
            .filter(A::Id.in_subquery(oldest))
            .exec(&self.db)
            .await
            .map_err(storage_error)?;
        Ok(deleted.rows_affected)
    }

    async fn audit_between(
        &self,
        team: Option<&TeamId>,
        (since, until): (DateTime<Utc>, DateTime<Utc>),
        after: Option<(DateTime<Utc>, i64)>,
        limit: u64,
    ) -> Result<Vec<AuditEvent>> {
        use audit_event::Column as A;
        let mut select = audit_event::Entity::find()
            .filter(A::CreatedAt.gte(since))
            .filter(A::CreatedAt.lt(until))
            .order_by(A::CreatedAt, Order::Asc)
            .order_by(A::Id, Order::Asc)
            .limit(limit);
        if let Some(team) = team {
            select = select.filter(A::TeamId.eq(team.as_str()));
        }
        if let Some((time, id)) = after {
            select = select.filter(
                Expr::tuple([Expr::col(A::CreatedAt), Expr::col(A::Id)])
                    .gt(Expr::tuple([Expr::val(time), Expr::val(id)])),
            );
        }
        let found = select.all(&self.db).await.map_err(storage_error)?;
        found.into_iter().map(rows::audit_event).collect()
    }
}
