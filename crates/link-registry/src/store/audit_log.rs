//! The audit log: appended by [`WriteTxn::commit`](super::WriteTxn::commit), read newest first.
//!
//! Every event is chained to the one before it (`domain::audit::chain_hash`). Appends take the
//! append lock first (PostgreSQL; SQLite writers are serialized already), so the event read as
//! the chain's head is the one the new event follows, and ids grow in chain order. Retention
//! deletes a prefix of the chain (by id) and records the last deleted event's id and hash in
//! `audit_chain`, where verification then starts.

use super::*;
use crate::domain::{audit::GENESIS_HASH, store::ChainedRow};

/// The hash the next event follows: the newest event's, or where the kept chain starts.
async fn chain_head(txn: &DatabaseTransaction) -> Result<String> {
    use audit_event::Column as A;
    let newest: Option<Option<String>> = audit_event::Entity::find()
        .select_only()
        .column(A::Hash)
        .order_by(A::Id, Order::Desc)
        .limit(1)
        .into_tuple()
        .one(txn)
        .await
        .map_err(storage_error)?;
    if let Some(hash) = newest {
        return hash.ok_or_else(|| rows::corrupt("audit chain", "the newest event has no hash"));
    }
    let start = audit_chain::Entity::find_by_id(1)
        .one(txn)
        .await
        .map_err(storage_error)?;
    Ok(start.map_or_else(|| GENESIS_HASH.to_owned(), |s| s.hash))
}

pub(super) async fn insert_audit(txn: &DatabaseTransaction, event: NewAuditEvent) -> Result<()> {
    changes::lock_appends(txn).await?;
    let prev = chain_head(txn).await?;
    audit_event::Entity::insert(rows::audit_event_row(event, prev))
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
        // One short transaction per batch: writers wait at most for one batch. A prefix of the
        // chain goes (every id up to the batch's newest), so the kept chain stays whole.
        let txn = self.begin_write().await?;
        changes::lock_appends(&txn.txn).await?;
        let oldest: Vec<(i64, Option<String>)> = audit_event::Entity::find()
            .select_only()
            .column(A::Id)
            .column(A::Hash)
            .filter(A::CreatedAt.lt(before))
            .order_by(A::Id, Order::Asc)
            .limit(batch)
            .into_tuple()
            .all(&txn.txn)
            .await
            .map_err(storage_error)?;
        let Some((last_id, last_hash)) = oldest.last().cloned() else {
            txn.commit_unaudited().await?;
            return Ok(0);
        };
        let deleted = audit_event::Entity::delete_many()
            .filter(A::Id.lte(last_id))
            .exec(&txn.txn)
            .await
            .map_err(storage_error)?;
        let start = audit_chain::ActiveModel {
            id: sea_orm::Set(1),
            after_id: sea_orm::Set(last_id),
            hash: sea_orm::Set(
                last_hash.ok_or_else(|| rows::corrupt("audit chain", "an event has no hash"))?,
            ),
        };
        audit_chain::Entity::insert(start)
            .on_conflict(
                OnConflict::column(audit_chain::Column::Id)
                    .update_columns([audit_chain::Column::AfterId, audit_chain::Column::Hash])
                    .to_owned(),
            )
            .exec_without_returning(&txn.txn)
            .await
            .map_err(storage_error)?;
        txn.commit_unaudited().await?;
        Ok(deleted.rows_affected)
    }

    async fn audit_chain_start(&self) -> Result<Option<(i64, String)>> {
        Ok(audit_chain::Entity::find_by_id(1)
            .one(&self.db)
            .await
            .map_err(storage_error)?
            .map(|s| (s.after_id, s.hash)))
    }

    async fn audit_chain_rows(&self, after_id: i64, limit: u64) -> Result<Vec<ChainedRow>> {
        use audit_event::Column as A;
        let found = audit_event::Entity::find()
            .filter(A::Id.gt(after_id))
            .order_by(A::Id, Order::Asc)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(storage_error)?;
        Ok(found
            .into_iter()
            .map(|r| ChainedRow {
                id: r.id,
                team_id: r.team_id,
                actor: r.actor,
                actor_issuer: r.actor_issuer,
                action: r.action,
                target: r.target,
                before: r.before,
                after: r.after,
                time: r.created_at,
                prev_hash: r.prev_hash,
                hash: r.hash,
            })
            .collect())
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
