//! Time-boxed links: the time from which a link no longer authorizes (absent: never).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000019_link_expiry"
    }
}

#[derive(DeriveIden)]
enum ProjectLinks {
    Table,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ProjectLinks::Table)
                    .add_column(
                        ColumnDef::new(ProjectLinks::ExpiresAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ProjectLinks::Table)
                    .drop_column(ProjectLinks::ExpiresAt)
                    .to_owned(),
            )
            .await
    }
}
