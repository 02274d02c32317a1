//! The initial schema: teams, API keys, projects, connectors, project links and audit events.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000001_initial"
    }
}

#[derive(DeriveIden)]
enum Teams {
    Table,
    Id,
    Slug,
    Issuer,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    TeamId,
    Role,
    KeyHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Projects {
    Table,
    TeamId,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Connectors {
    Table,
    Id,
    TeamId,
    Uid,
    Kind,
    Name,
    Config,
    Secrets,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ProjectLinks {
    Table,
    TeamId,
    ConnectorId,
    ProjectId,
    Environments,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    TeamId,
    Actor,
    Action,
    Target,
    Before,
    After,
    CreatedAt,
}

fn id(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string_len(64).not_null().to_owned()
}

fn time(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
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
                    .table(Teams::Table)
                    .col(id(Teams::Id).primary_key())
                    .col(
                        ColumnDef::new(Teams::Slug)
                            .string_len(48)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Teams::Issuer).string_len(255).not_null())
                    .col(time(Teams::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(id(ApiKeys::Id).primary_key())
                    .col(ColumnDef::new(ApiKeys::TeamId).string_len(64).null())
                    .col(ColumnDef::new(ApiKeys::Role).string_len(16).not_null())
                    .col(
                        ColumnDef::new(ApiKeys::KeyHash)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(time(ApiKeys::CreatedAt))
                    .check(Expr::col(ApiKeys::Role).is_in(["admin", "viewer", "broker"]))
                    // Broker keys have no team; every other key has exactly one.
                    .check(
                        Expr::col(ApiKeys::Role)
                            .eq("broker")
                            .eq(Expr::col(ApiKeys::TeamId).is_null()),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiKeys::Table, ApiKeys::TeamId)
                            .to(Teams::Table, Teams::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Projects::Table)
                    .col(id(Projects::TeamId))
                    .col(id(Projects::Id))
                    .col(ColumnDef::new(Projects::Name).string_len(100).not_null())
                    .col(time(Projects::CreatedAt))
                    .primary_key(Index::create().col(Projects::TeamId).col(Projects::Id))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Projects::Table, Projects::TeamId)
                            .to(Teams::Table, Teams::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_projects_team_name")
                    .table(Projects::Table)
                    .col(Projects::TeamId)
                    .col(Projects::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Connectors::Table)
                    .col(id(Connectors::Id).primary_key())
                    .col(id(Connectors::TeamId))
                    .col(ColumnDef::new(Connectors::Uid).string_len(100).not_null())
                    .col(ColumnDef::new(Connectors::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(Connectors::Name).string_len(400).not_null())
                    .col(ColumnDef::new(Connectors::Config).text().not_null())
                    .col(ColumnDef::new(Connectors::Secrets).text().not_null())
                    .col(time(Connectors::CreatedAt))
                    .col(time(Connectors::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Connectors::Table, Connectors::TeamId)
                            .to(Teams::Table, Teams::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_connectors_team_uid")
                    .table(Connectors::Table)
                    .col(Connectors::TeamId)
                    .col(Connectors::Uid)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The target of the links' composite foreign key.
        manager
            .create_index(
                Index::create()
                    .name("ux_connectors_team_id")
                    .table(Connectors::Table)
                    .col(Connectors::TeamId)
                    .col(Connectors::Id)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ProjectLinks::Table)
                    .col(id(ProjectLinks::TeamId))
                    .col(id(ProjectLinks::ConnectorId))
                    .col(id(ProjectLinks::ProjectId))
                    .col(
                        ColumnDef::new(ProjectLinks::Environments)
                            .integer()
                            .not_null(),
                    )
                    .col(time(ProjectLinks::CreatedAt))
                    .col(time(ProjectLinks::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(ProjectLinks::ConnectorId)
                            .col(ProjectLinks::ProjectId),
                    )
                    .check(Expr::col(ProjectLinks::Environments).between(1, 7))
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                ProjectLinks::Table,
                                (ProjectLinks::TeamId, ProjectLinks::ConnectorId),
                            )
                            .to(Connectors::Table, (Connectors::TeamId, Connectors::Id))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                ProjectLinks::Table,
                                (ProjectLinks::TeamId, ProjectLinks::ProjectId),
                            )
                            .to(Projects::Table, (Projects::TeamId, Projects::Id))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_project_links_team_project")
                    .table(ProjectLinks::Table)
                    .col(ProjectLinks::TeamId)
                    .col(ProjectLinks::ProjectId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(
                        ColumnDef::new(AuditEvents::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AuditEvents::TeamId).string_len(64).null())
                    .col(ColumnDef::new(AuditEvents::Actor).string_len(64).not_null())
                    .col(
                        ColumnDef::new(AuditEvents::Action)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::Target)
                            .string_len(200)
                            .not_null(),
                    )
                    .col(ColumnDef::new(AuditEvents::Before).text().null())
                    .col(ColumnDef::new(AuditEvents::After).text().null())
                    .col(time(AuditEvents::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_audit_events_team_id")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::TeamId)
                    .col(AuditEvents::Id)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditEvents::Table.into_iden(),
            ProjectLinks::Table.into_iden(),
            Connectors::Table.into_iden(),
            Projects::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Teams::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
