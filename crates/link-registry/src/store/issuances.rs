//! The issuance ledger: written once per (credential, project, environment), read newest first.

use super::*;
use crate::domain::{
    model::Issuance,
    page::IssuanceKey,
    store::{IssuanceFilter, IssuanceStore},
};

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
        let mut select = issuance::Entity::find()
            .filter(issuance::Column::TeamId.eq(team.as_str()))
            .order_by(issuance::Column::Id, Order::Desc)
            .limit(page.limit());
        if let Some(connector) = &filter.connector {
            select = select.filter(issuance::Column::ConnectorId.eq(connector.as_str()));
        }
        if let Some(project) = &filter.project {
            select = select.filter(issuance::Column::ProjectId.eq(project.as_str()));
        }
        if let Some(environment) = filter.environment {
            select = select.filter(issuance::Column::Environment.eq(environment.as_str()));
        }
        if let Some(IssuanceKey(before)) = page.after {
            select = select.filter(issuance::Column::Id.lt(before));
        }
        let found = select.all(&self.db).await.map_err(storage_error)?;
        found.into_iter().map(rows::issuance).collect()
    }
}
