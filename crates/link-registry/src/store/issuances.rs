//! The issuance ledger: written once per (credential, project, environment), read newest first.

use super::*;
use crate::domain::{
    model::{Issuance, ProviderRevocation},
    page::IssuanceKey,
    store::{IssuanceFilter, IssuanceStore, RevokeFilter, Revoked},
};

/// Most values in one `IN (…)` list.
const CHUNK: usize = 500;

#[async_trait]
impl IssuanceStore for SeaStore {
    async fn record_issuance(&self, issuance: &Issuance) -> Result<bool> {
        let once = OnConflict::columns([
            issuance::Column::TeamId,
            issuance::Column::TokenId,
            issuance::Column::ProjectId,
            issuance::Column::Environment,
        ])
        .do_nothing()
        .to_owned();
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
        // Ledger rows are no change of anyone's answer and carry no audit event: a plain insert,
        // outside the SQLite write gate's transactions but under its busy timeout.
        match issuance::Entity::insert(rows::issuance_row(issuance))
            .on_conflict(once)
            .exec_without_returning(&self.db)
            .await
        {
            Ok(written) => Ok(written > 0),
            Err(DbErr::RecordNotInserted) => Ok(false),
            Err(e) => Err(storage_error(e)),
        }
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
