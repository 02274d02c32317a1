//! Grants belong to a project: a `project_id` column (empty: the team's, for connectors with
//! `grant_sharing=team`), part of the grant's unique key. Grants stored before have no project and
//! are therefore the team's: connectors that do not share grants ask their users to consent again.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000012_project_grants"
    }
}

#[derive(DeriveIden)]
enum Grants {
    Table,
    ProjectId,
    ConnectorId,
    UserId,
    Environment,
    InstallationId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Grants::Table)
                    .add_column(
                        ColumnDef::new(Grants::ProjectId)
                            .string_len(64)
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("grants_once")
                    .table(Grants::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("grants_once_per_project")
                    .table(Grants::Table)
                    .col(Grants::ConnectorId)
                    .col(Grants::ProjectId)
                    .col(Grants::UserId)
                    .col(Grants::Environment)
                    .col(Grants::InstallationId)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("grants_once_per_project")
                    .table(Grants::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Grants::Table)
                    .drop_column(Grants::ProjectId)
                    .to_owned(),
            )
            .await
    }
}
