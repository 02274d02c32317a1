//! The issuance ledger: written once per (credential, project, environment), read newest first.

use super::*;
use crate::domain::{
    model::{Issuance, ProviderRevocation},
    page::IssuanceKey,
    store::{IssuanceFilter, IssuanceStore, RevokeFilter, Revoked},
};

/// Most values in one `IN (…)` list.
const CHUNK: usize = 500;

/// The link an issuance is for, locked for update when `lock`.
async fn link_row<C: ConnectionTrait>(
    db: &C,
    issuance: &Issuance,
    lock: bool,
) -> Result<Option<project_link::Model>> {
    let mut select = project_link::Entity::find()
        .filter(project_link::Column::TeamId.eq(issuance.team_id.as_str()))
        .filter(project_link::Column::ConnectorId.eq(issuance.connector_id.as_str()))
        .filter(project_link::Column::ProjectId.eq(issuance.project_id.as_str()));
    if lock {
        select = select.lock_exclusive();
    }
    Ok(select
        .all(db)
        .await
        .map_err(storage_error)?
        .into_iter()
        .next())
}

/// Writes the ledger row unless it is there; whether it wrote it.
async fn insert_issuance<C: ConnectionTrait>(db: &C, issuance: &Issuance) -> Result<bool> {
    let once = OnConflict::columns([
        issuance::Column::TeamId,
        issuance::Column::TokenId,
        issuance::Column::ProjectId,
        issuance::Column::Environment,
    ])
    .do_nothing()
    .to_owned();
    match issuance::Entity::insert(rows::issuance_row(issuance))
        .on_conflict(once)
        .exec_without_returning(db)
        .await
    {
        Ok(written) => Ok(written > 0),
        Err(DbErr::RecordNotInserted) => Ok(false),
        Err(e) => Err(storage_error(e)),
    }
}

/// Moves the link's last use forward to the issuance (never back).
async fn mark_used<C: ConnectionTrait>(db: &C, issuance: &Issuance) -> Result<()> {
    use project_link::Column as L;
    project_link::Entity::update_many()
        .col_expr(L::LastIssuedAt, Expr::value(issuance.issued_at))
        .filter(L::TeamId.eq(issuance.team_id.as_str()))
        .filter(L::ConnectorId.eq(issuance.connector_id.as_str()))
        .filter(L::ProjectId.eq(issuance.project_id.as_str()))
        .filter(
            Condition::any()
                .add(L::LastIssuedAt.is_null())
                .add(L::LastIssuedAt.lt(issuance.issued_at)),
        )
        .exec(db)
        .await
        .map_err(storage_error)?;
    Ok(())
}

#[async_trait]
impl IssuanceStore for SeaStore {
    async fn record_issuance(&self, issuance: &Issuance, now: DateTime<Utc>) -> Result<bool> {
        // A credential revoked before (for any project) is never recorded as handed out again.
        let revoked = issuance::Entity::find()
            .filter(issuance::Column::TeamId.eq(issuance.team_id.as_str()))
            .filter(issuance::Column::TokenId.eq(issuance.token_id.as_str()))
            .filter(issuance::Column::Revoked.eq(true))
            .count(&self.db)
            .await
            .map_err(storage_error)?;
        if revoked > 0 {
            return Err(RegistryError::FailedPrecondition(
                "this credential was revoked: it must not be handed out; ask again for a new one"
                    .into(),
            ));
        }
        let quota = match link_row(&self.db, issuance, false).await? {
            Some(link) => rows::link_limits(link.limits.as_deref())?.max_issuances_per_hour,
            None => 0,
        };
        if quota == 0 {
            // Ledger rows are no change of anyone's answer and carry no audit event: a plain
            // insert, outside the SQLite write gate's transactions but under its busy timeout.
            let written = insert_issuance(&self.db, issuance).await?;
            if written {
                mark_used(&self.db, issuance).await?;
            }
            return Ok(written);
        }
        // Counted and written in one transaction per link: on PostgreSQL its row is locked, so
        // two registries (or two brokers' calls) never both take the last unit of the hour.
        let txn = self.begin_write().await?;
        let postgres = self.backend() == DbBackend::Postgres;
        let link = link_row(&txn.txn, issuance, postgres).await?;
        let quota = match &link {
            Some(link) => rows::link_limits(link.limits.as_deref())?.max_issuances_per_hour,
            None => 0,
        };
        use issuance::Column as I;
        let recorded = issuance::Entity::find()
            .filter(I::TeamId.eq(issuance.team_id.as_str()))
            .filter(I::TokenId.eq(issuance.token_id.as_str()))
            .filter(I::ProjectId.eq(issuance.project_id.as_str()))
            .filter(I::Environment.eq(issuance.environment.as_str()))
            .count(&txn.txn)
            .await
            .map_err(storage_error)?;
        if recorded > 0 {
            return Ok(false);
        }
        if quota > 0 {
            let hour_ago = now - chrono::Duration::hours(1);
            let used = issuance::Entity::find()
                .filter(I::TeamId.eq(issuance.team_id.as_str()))
                .filter(I::ConnectorId.eq(issuance.connector_id.as_str()))
                .filter(I::ProjectId.eq(issuance.project_id.as_str()))
                .filter(I::IssuedAt.gt(hour_ago))
                .count(&txn.txn)
                .await
                .map_err(storage_error)?;
            if used >= u64::from(quota) {
                return Err(RegistryError::QuotaExceeded {
                    connector: issuance.connector_uid.to_string(),
                    project_id: issuance.project_id.to_string(),
                    quota,
                });
            }
        }
        let written = insert_issuance(&txn.txn, issuance).await?;
        if written {
            mark_used(&txn.txn, issuance).await?;
        }
        txn.commit_unaudited().await?;
        Ok(written)
    }

    async fn issuances(
        &self,
        team: &TeamId,
        filter: &IssuanceFilter,
        page: &PageRequest<IssuanceKey>,
    ) -> Result<Vec<Issuance>> {
        let found = super::lists::issuances_page(team, filter, page)
            .all(&self.db)
            .await
            .map_err(storage_error)?;
        found.into_iter().map(rows::issuance).collect()
    }

    async fn revoke_issuances(
        &self,
        connector: &Connector,
        filter: &RevokeFilter,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Revoked> {
        use issuance::Column as I;
        let txn = self.begin_write().await?;
        let mut select = issuance::Entity::find()
            .filter(I::TeamId.eq(connector.team_id.as_str()))
            .filter(I::ConnectorId.eq(connector.id.as_str()))
            .order_by(I::Id, Order::Asc);
        if let Some(subject) = &filter.subject {
            select = select.filter(I::Subject.eq(subject.as_str()));
        }
        if let Some(installation) = &filter.installation_id {
            select = select.filter(I::InstallationId.eq(installation.as_str()));
        }
        let rows = select.all(&txn.txn).await.map_err(storage_error)?;
        let mut found = std::collections::HashSet::new();
        let mut revoking = std::collections::HashSet::new();
        let mut revoked = Vec::new();
        let mut ids = Vec::new();
        for row in rows {
            found.insert(row.token_id.clone());
            if !row.revoked {
                ids.push(row.id);
                if revoking.insert(row.token_id.clone()) {
                    revoked.push(rows::issuance(row)?);
                }
            }
        }
        for chunk in ids.chunks(CHUNK) {
            issuance::Entity::update_many()
                .col_expr(I::Revoked, Expr::value(true))
                .filter(I::Id.is_in(chunk.iter().copied()))
                .exec(&txn.txn)
                .await
                .map_err(storage_error)?;
        }
        let tokens_found = found.len() as u64;
        let event = audit::tokens_revoked(
            actor,
            connector,
            filter,
            tokens_found,
            revoked.len() as u64,
            now,
        );
        let scope = ChangeScope {
            installation_id: filter.installation_id.clone(),
            subject: filter.subject.clone(),
            ..ChangeScope::connector(&connector.team_id, &connector.id, &connector.uid)
        };
        txn.commit(event, Some(scope)).await?;
        for row in &mut revoked {
            row.revoked = true;
        }
        Ok(Revoked {
            tokens_found,
            revoked,
        })
    }

    async fn report_revocations(
        &self,
        team: &TeamId,
        connector: &ConnectorId,
        outcomes: &[(String, ProviderRevocation)],
    ) -> Result<u64> {
        use issuance::Column as I;
        let mut updated = 0;
        for (token_id, outcome) in outcomes {
            // A known outcome stays; only `skipped` gives way to a provider's real answer.
            let open = match outcome {
                ProviderRevocation::Skipped => {
                    Condition::all().add(I::ProviderRevocation.is_null())
                }
                _ => Condition::any()
                    .add(I::ProviderRevocation.is_null())
                    .add(I::ProviderRevocation.eq(ProviderRevocation::Skipped.as_str())),
            };
            let result = issuance::Entity::update_many()
                .col_expr(I::Revoked, Expr::value(true))
                .col_expr(I::ProviderRevocation, Expr::value(outcome.as_str()))
                .filter(I::TeamId.eq(team.as_str()))
                .filter(I::ConnectorId.eq(connector.as_str()))
                .filter(I::TokenId.eq(token_id.as_str()))
                .filter(open)
                .exec(&self.db)
                .await
                .map_err(storage_error)?;
            updated += result.rows_affected;
        }
        Ok(updated)
    }

    async fn provider_revocations(
        &self,
        team: &TeamId,
        connector: &ConnectorId,
        token_ids: &[String],
    ) -> Result<Vec<(String, Option<ProviderRevocation>)>> {
        use issuance::Column as I;
        let mut outcomes = std::collections::BTreeMap::new();
        for chunk in token_ids.chunks(CHUNK) {
            let rows: Vec<(String, Option<String>)> = issuance::Entity::find()
                .select_only()
                .column(I::TokenId)
                .column(I::ProviderRevocation)
                .filter(I::TeamId.eq(team.as_str()))
                .filter(I::ConnectorId.eq(connector.as_str()))
                .filter(I::TokenId.is_in(chunk.iter().map(String::as_str)))
                .into_tuple()
                .all(&self.db)
                .await
                .map_err(storage_error)?;
            for (token_id, outcome) in rows {
                let outcome = outcome
                    .map(|o| ProviderRevocation::parse(&o))
                    .transpose()
                    .map_err(|e| rows::corrupt("stored issuance", e))?;
                // Any row of the credential with an outcome tells it.
                let slot = outcomes.entry(token_id).or_insert(None);
                if slot.is_none() {
                    *slot = outcome;
                }
            }
        }
        Ok(outcomes.into_iter().collect())
    }
}
