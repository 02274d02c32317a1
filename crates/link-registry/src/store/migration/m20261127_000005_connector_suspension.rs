//! Connectors can be suspended: a suspended connector issues nothing until it is resumed.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000005_connector_suspension"
    }
}

#[derive(DeriveIden)]
enum Connectors {
    Table,
    Suspended,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Connectors::Table)
                    .add_column(
                        ColumnDef::new(Connectors::Suspended)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await
    }
}
