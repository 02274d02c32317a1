//! What a deleted connector leaves to revoke. Deleting a connector deletes its grants (and the
//! refresh tokens queued for revocation) by foreign key; the refresh tokens it held must still be
//! revoked at the provider. The connector's row is kept as a tombstone in `departed_connectors`
//! (the same columns: its revocation endpoint, client credentials and the binding its sealed
//! values open under) and each refresh token in `departed_revocations` until a broker has taken it
//! to the provider; the tombstone goes with its last token.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000014_departed_connectors"
    }
}

#[derive(DeriveIden)]
enum DepartedConnectors {
    Table,
    Id,
    TeamId,
    Uid,
    Kind,
    Name,
    Config,
    Secrets,
    Suspended,
    CreatedAt,
    UpdatedAt,
    DefaultInstallationId,
}

#[derive(DeriveIden)]
enum DepartedRevocations {
    Table,
    Id,
    ConnectorId,
    RefreshToken,
    SealingName,
    ClaimedUntil,
    CreatedAt,
}

fn time(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use DepartedConnectors as C;
        use DepartedRevocations as R;
        manager
            .create_table(
                Table::create()
                    .table(C::Table)
                    .col(
                        ColumnDef::new(C::Id)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(C::TeamId).string_len(64).not_null())
                    .col(ColumnDef::new(C::Uid).string_len(255).not_null())
                    .col(ColumnDef::new(C::Kind).string_len(64).not_null())
                    .col(ColumnDef::new(C::Name).string_len(400).not_null())
                    .col(ColumnDef::new(C::Config).text().not_null())
                    .col(ColumnDef::new(C::Secrets).text().not_null())
                    .col(ColumnDef::new(C::Suspended).boolean().not_null())
                    .col(time(C::CreatedAt))
                    .col(time(C::UpdatedAt))
                    .col(
                        ColumnDef::new(C::DefaultInstallationId)
                            .string_len(255)
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .col(
                        ColumnDef::new(R::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(R::ConnectorId).string_len(64).not_null())
                    .col(ColumnDef::new(R::RefreshToken).text().not_null())
                    .col(ColumnDef::new(R::SealingName).text().not_null())
                    .col(
                        ColumnDef::new(R::ClaimedUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(time(R::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(R::Table, R::ConnectorId)
                            .to(C::Table, C::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("departed_revocations_by_connector")
                    .table(R::Table)
                    .col(R::ConnectorId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DepartedRevocations::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(DepartedConnectors::Table).to_owned())
            .await
    }
}
