//! The issuance ledger: one row per credential handed out for one (project, environment) of a
//! team, written before the broker hands it out. The credential itself is never stored, only the
//! first 16 hex digits of its SHA-256.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000004_issuances"
    }
}

#[derive(DeriveIden)]
enum Issuances {
    Table,
    Id,
    TeamId,
    TokenId,
    ProjectId,
    Environment,
    ConnectorId,
    ConnectorUid,
    Subject,
    InstallationId,
    Scopes,
    IssuedAt,
    ExpiresAt,
    Revoked,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Issuances::Table)
                    .col(
                        ColumnDef::new(Issuances::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Issuances::TeamId).string_len(64).not_null())
                    .col(ColumnDef::new(Issuances::TokenId).string_len(16).not_null())
                    .col(
                        ColumnDef::new(Issuances::ProjectId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Issuances::Environment)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Issuances::ConnectorId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Issuances::ConnectorUid)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Issuances::Subject)
                            .string_len(300)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Issuances::InstallationId)
                            .string_len(200)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Issuances::Scopes).text().not_null())
                    .col(
                        ColumnDef::new(Issuances::IssuedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Issuances::ExpiresAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Issuances::Revoked)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        // Recorded once per (credential, project, environment) of a team.
        manager
            .create_index(
                Index::create()
                    .name("issuances_once")
                    .table(Issuances::Table)
                    .col(Issuances::TeamId)
                    .col(Issuances::TokenId)
                    .col(Issuances::ProjectId)
                    .col(Issuances::Environment)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Newest first, per team and per connector.
        manager
            .create_index(
                Index::create()
                    .name("issuances_by_team")
                    .table(Issuances::Table)
                    .col(Issuances::TeamId)
                    .col(Issuances::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("issuances_by_connector")
                    .table(Issuances::Table)
                    .col(Issuances::TeamId)
                    .col(Issuances::ConnectorId)
                    .col(Issuances::Id)
                    .to_owned(),
            )
            .await
    }
}
