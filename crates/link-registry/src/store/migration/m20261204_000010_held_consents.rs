//! Consents between their callback and the application's finish: the tokens the code exchange
//! returned, sealed, with the SHA-256 of the one-time completion secret and the deployment and
//! user that started them. Nothing here is usable by `GetToken`; an expired or refused one is
//! deleted and its refresh token queued for revocation.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000010_held_consents"
    }
}

#[derive(DeriveIden)]
enum HeldConsents {
    Table,
    RequestId,
    CompletionHash,
    TeamId,
    ProjectId,
    Issuer,
    ConnectorId,
    UserId,
    Environment,
    InstallationId,
    AccessToken,
    RefreshToken,
    TokenExpiresAt,
    Scopes,
    ExpiresAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Connectors {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let text =
            |c: HeldConsents, len: u32| ColumnDef::new(c).string_len(len).not_null().to_owned();
        manager
            .create_table(
                Table::create()
                    .table(HeldConsents::Table)
                    .col(
                        ColumnDef::new(HeldConsents::RequestId)
                            .string_len(32)
                            .not_null()
                            .primary_key(),
                    )
                    .col(text(HeldConsents::CompletionHash, 64))
                    .col(text(HeldConsents::TeamId, 64))
                    .col(text(HeldConsents::ProjectId, 64))
                    .col(text(HeldConsents::Issuer, 255))
                    .col(text(HeldConsents::ConnectorId, 64))
                    .col(text(HeldConsents::UserId, 256))
                    .col(text(HeldConsents::Environment, 16))
                    .col(text(HeldConsents::InstallationId, 128))
                    .col(ColumnDef::new(HeldConsents::AccessToken).text().not_null())
                    .col(ColumnDef::new(HeldConsents::RefreshToken).text().null())
                    .col(
                        ColumnDef::new(HeldConsents::TokenExpiresAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(HeldConsents::Scopes).text().not_null())
                    .col(
                        ColumnDef::new(HeldConsents::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(HeldConsents::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(HeldConsents::Table, HeldConsents::ConnectorId)
                            .to(Connectors::Table, Connectors::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("held_consents_by_expiry")
                    .table(HeldConsents::Table)
                    .col(HeldConsents::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(HeldConsents::Table).to_owned())
            .await
    }
}
