//! Key lifecycle: an optional expiry, revocation and the time of last use of each API key. One
//! statement per column, since SQLite alters one column at a time.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261126_000002_key_lifecycle"
    }
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    ExpiresAt,
    RevokedAt,
    LastUsedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [ApiKeys::ExpiresAt, ApiKeys::RevokedAt, ApiKeys::LastUsedAt] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ApiKeys::Table)
                        .add_column(ColumnDef::new(column).timestamp_with_time_zone().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
