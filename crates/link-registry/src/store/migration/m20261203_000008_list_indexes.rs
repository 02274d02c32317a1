//! Indexes in the order of every list, so that each page is an index range without a sort:
//! links of a team by (connector, project) and, for one project, by (project, connector) (which
//! replaces the index on (team, project) it extends); issuances of one project newest first; audit
//! events by time, for retention and export.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000008_list_indexes"
    }
}

#[derive(DeriveIden)]
enum ProjectLinks {
    Table,
    TeamId,
    ConnectorId,
    ProjectId,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Issuances {
    Table,
    Id,
    TeamId,
    ProjectId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("ix_project_links_team_connector_project")
                    .table(ProjectLinks::Table)
                    .col(ProjectLinks::TeamId)
                    .col(ProjectLinks::ConnectorId)
                    .col(ProjectLinks::ProjectId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_project_links_team_project_connector")
                    .table(ProjectLinks::Table)
                    .col(ProjectLinks::TeamId)
                    .col(ProjectLinks::ProjectId)
                    .col(ProjectLinks::ConnectorId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("ix_project_links_team_project")
                    .table(ProjectLinks::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("issuances_by_project")
                    .table(Issuances::Table)
                    .col(Issuances::TeamId)
                    .col(Issuances::ProjectId)
                    .col(Issuances::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_audit_events_time")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::CreatedAt)
                    .col(AuditEvents::Id)
                    .to_owned(),
            )
            .await
    }
}
