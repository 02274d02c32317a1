//! User grants: what a user consented to at a provider (sealed access and refresh tokens), per
//! (connector, user, environment, installation), with the lease that lets one broker at a time
//! refresh it and the version that fences a broker whose lease ran out; the pending
//! authorization requests of the consent flow, each usable once; and the refresh tokens of revoked
//! grants, waiting for a broker to revoke them at the provider.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000007_grants"
    }
}

#[derive(DeriveIden)]
enum Grants {
    Table,
    Id,
    TeamId,
    ConnectorId,
    UserId,
    Environment,
    InstallationId,
    AccessToken,
    RefreshToken,
    ExpiresAt,
    Scopes,
    State,
    Version,
    LeaseId,
    LeaseExpiresAt,
    LastError,
    LastRefreshAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AuthorizationRequests {
    Table,
    StateHash,
    TeamId,
    ProjectId,
    Issuer,
    ConnectorId,
    UserId,
    Environment,
    InstallationId,
    Scopes,
    ReturnUrl,
    RedirectUri,
    CodeVerifier,
    ExpiresAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum GrantRevocations {
    Table,
    Id,
    TeamId,
    ConnectorId,
    RefreshToken,
    SealingName,
    ClaimedUntil,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Connectors {
    Table,
    Id,
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
        manager
            .create_table(
                Table::create()
                    .table(Grants::Table)
                    .col(
                        ColumnDef::new(Grants::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Grants::TeamId).string_len(64).not_null())
                    .col(
                        ColumnDef::new(Grants::ConnectorId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Grants::UserId).string_len(256).not_null())
                    .col(
                        ColumnDef::new(Grants::Environment)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Grants::InstallationId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Grants::AccessToken).text().not_null())
                    .col(ColumnDef::new(Grants::RefreshToken).text().null())
                    .col(
                        ColumnDef::new(Grants::ExpiresAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(Grants::Scopes).text().not_null())
                    .col(ColumnDef::new(Grants::State).string_len(32).not_null())
                    .col(ColumnDef::new(Grants::Version).big_integer().not_null())
                    .col(ColumnDef::new(Grants::LeaseId).string_len(64).null())
                    .col(
                        ColumnDef::new(Grants::LeaseExpiresAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(Grants::LastError).string_len(300).null())
                    .col(
                        ColumnDef::new(Grants::LastRefreshAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(time(Grants::CreatedAt))
                    .col(time(Grants::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Grants::Table, Grants::ConnectorId)
                            .to(Connectors::Table, Connectors::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One grant per (connector, user, environment, installation).
        manager
            .create_index(
                Index::create()
                    .name("grants_once")
                    .table(Grants::Table)
                    .col(Grants::ConnectorId)
                    .col(Grants::UserId)
                    .col(Grants::Environment)
                    .col(Grants::InstallationId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("grants_by_team")
                    .table(Grants::Table)
                    .col(Grants::TeamId)
                    .col(Grants::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuthorizationRequests::Table)
                    .col(
                        ColumnDef::new(AuthorizationRequests::StateHash)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(AuthorizationRequests::TeamId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuthorizationRequests::ProjectId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuthorizationRequests::Issuer)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuthorizationRequests::ConnectorId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuthorizationRequests::UserId)
                            .string_len(256)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuthorizationRequests::Environment)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuthorizationRequests::InstallationId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuthorizationRequests::Scopes)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuthorizationRequests::ReturnUrl)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuthorizationRequests::RedirectUri)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuthorizationRequests::CodeVerifier)
                            .text()
                            .not_null(),
                    )
                    .col(time(AuthorizationRequests::ExpiresAt))
                    .col(time(AuthorizationRequests::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                AuthorizationRequests::Table,
                                AuthorizationRequests::ConnectorId,
                            )
                            .to(Connectors::Table, Connectors::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Refresh tokens of revoked grants, until a broker takes them to the provider (RFC 7009).
        manager
            .create_table(
                Table::create()
                    .table(GrantRevocations::Table)
                    .col(
                        ColumnDef::new(GrantRevocations::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(GrantRevocations::TeamId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(GrantRevocations::ConnectorId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(GrantRevocations::RefreshToken)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(GrantRevocations::SealingName)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(GrantRevocations::ClaimedUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(time(GrantRevocations::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(GrantRevocations::Table, GrantRevocations::ConnectorId)
                            .to(Connectors::Table, Connectors::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }
}
