//! Installations (tenants inside a connector: a GitHub App installation, a Slack workspace), a
//! connector's default installation, and revocation: the change feed says which installation and
//! subject a revocation covers, and each ledger row keeps what the provider answered when its
//! credential was revoked there.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000006_installations"
    }
}

#[derive(DeriveIden)]
enum Installations {
    Table,
    TeamId,
    ConnectorId,
    InstallationId,
    DisplayName,
    Config,
    Secrets,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Connectors {
    Table,
    Id,
    DefaultInstallationId,
}

#[derive(DeriveIden)]
enum Changes {
    Table,
    InstallationId,
    Subject,
}

#[derive(DeriveIden)]
enum Issuances {
    Table,
    TeamId,
    ConnectorId,
    InstallationId,
    ProviderRevocation,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Installations::Table)
                    .col(
                        ColumnDef::new(Installations::TeamId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Installations::ConnectorId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Installations::InstallationId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Installations::DisplayName)
                            .string_len(100)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Installations::Config).text().not_null())
                    .col(ColumnDef::new(Installations::Secrets).text().not_null())
                    .col(
                        ColumnDef::new(Installations::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(Installations::ConnectorId)
                            .col(Installations::InstallationId),
                    )
                    // An installation goes with its connector.
                    .foreign_key(
                        ForeignKey::create()
                            .from(Installations::Table, Installations::ConnectorId)
                            .to(Connectors::Table, Connectors::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // SQLite alters one column per statement.
        manager
            .alter_table(
                Table::alter()
                    .table(Connectors::Table)
                    .add_column(
                        ColumnDef::new(Connectors::DefaultInstallationId)
                            .string_len(128)
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        for column in [Changes::InstallationId, Changes::Subject] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Changes::Table)
                        .add_column(ColumnDef::new(column).string_len(300).null())
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Issuances::Table)
                    .add_column(
                        ColumnDef::new(Issuances::ProviderRevocation)
                            .string_len(16)
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        // What a revocation covers: a connector's credentials, optionally of one installation.
        manager
            .create_index(
                Index::create()
                    .name("issuances_by_installation")
                    .table(Issuances::Table)
                    .col(Issuances::TeamId)
                    .col(Issuances::ConnectorId)
                    .col(Issuances::InstallationId)
                    .to_owned(),
            )
            .await
    }
}
