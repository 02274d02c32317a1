//! The change feed: one row per committed change that can alter an `Authorize` answer, numbered
//! by a revision that increases in commit order (see `store::WriteTxn::commit`).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261126_000003_change_feed"
    }
}

#[derive(DeriveIden)]
enum Changes {
    Table,
    Revision,
    Action,
    TeamId,
    ConnectorId,
    ConnectorUid,
    ProjectId,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Changes::Table)
                    .col(
                        ColumnDef::new(Changes::Revision)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Changes::Action).string_len(64).not_null())
                    .col(ColumnDef::new(Changes::TeamId).string_len(64).not_null())
                    .col(ColumnDef::new(Changes::ConnectorId).string_len(64).null())
                    .col(ColumnDef::new(Changes::ConnectorUid).string_len(128).null())
                    .col(ColumnDef::new(Changes::ProjectId).string_len(64).null())
                    .col(
                        ColumnDef::new(Changes::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }
}
