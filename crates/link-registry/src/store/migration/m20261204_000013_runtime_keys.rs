//! Keys the runtime needs: the key `token_id`s are computed under (a random key sealed under the
//! master key, stored next to the key check and written when a registry first needs it), and the
//! teams a `broker` key is limited to (a JSON array of team ids; absent: every team).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000013_runtime_keys"
    }
}

#[derive(DeriveIden)]
enum KeyChecks {
    Table,
    TokenIdKey,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    BrokerTeams,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(KeyChecks::Table)
                    .add_column(ColumnDef::new(KeyChecks::TokenIdKey).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(ColumnDef::new(ApiKeys::BrokerTeams).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .drop_column(ApiKeys::BrokerTeams)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(KeyChecks::Table)
                    .drop_column(KeyChecks::TokenIdKey)
                    .to_owned(),
            )
            .await
    }
}
