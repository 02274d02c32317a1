//! The master key's check: a constant sealed under the key the database's secrets are sealed
//! with, written when the key is first used. A registry opens it at start and refuses a key that
//! does not.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000011_key_check"
    }
}

#[derive(DeriveIden)]
enum KeyChecks {
    Table,
    Id,
    Sealed,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KeyChecks::Table)
                    .col(
                        ColumnDef::new(KeyChecks::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(KeyChecks::Sealed).text().not_null())
                    .col(
                        ColumnDef::new(KeyChecks::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(KeyChecks::Table).to_owned())
            .await
    }
}
