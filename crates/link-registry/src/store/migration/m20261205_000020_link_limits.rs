//! A link's limits and last use: its ceilings and issuance quota (`limits`, JSON; absent: none),
//! when a credential was last recorded for it (`last_issued_at`, filled from the ledger for the
//! links that have one), and the ledger index that counts a link's issuances of the last hour.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000020_link_limits"
    }
}

#[derive(DeriveIden)]
enum ProjectLinks {
    Table,
    Limits,
    LastIssuedAt,
}

#[derive(DeriveIden)]
enum Issuances {
    Table,
    TeamId,
    ConnectorId,
    ProjectId,
    IssuedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ProjectLinks::Table)
                    .add_column(ColumnDef::new(ProjectLinks::Limits).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ProjectLinks::Table)
                    .add_column(
                        ColumnDef::new(ProjectLinks::LastIssuedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("issuances_by_link")
                    .table(Issuances::Table)
                    .col(Issuances::TeamId)
                    .col(Issuances::ConnectorId)
                    .col(Issuances::ProjectId)
                    .col(Issuances::IssuedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE project_links SET last_issued_at = (SELECT MAX(i.issued_at) FROM issuances i \
                 WHERE i.team_id = project_links.team_id AND i.connector_id = project_links.connector_id \
                 AND i.project_id = project_links.project_id)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("issuances_by_link")
                    .table(Issuances::Table)
                    .to_owned(),
            )
            .await?;
        for column in [ProjectLinks::Limits, ProjectLinks::LastIssuedAt] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ProjectLinks::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
