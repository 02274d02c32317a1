//! Role bindings: what a person signed in with an operator issuer may do in a team, by the `sub`
//! of their ID token or by a value of its `groups` claim (one of the two; the other is empty, so
//! that one unique index covers both kinds).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000016_role_bindings"
    }
}

#[derive(DeriveIden)]
enum RoleBindings {
    Table,
    Id,
    TeamId,
    Issuer,
    Subject,
    GroupName,
    Role,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Teams {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use RoleBindings as B;
        manager
            .create_table(
                Table::create()
                    .table(B::Table)
                    .col(
                        ColumnDef::new(B::Id)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(B::TeamId).string_len(64).not_null())
                    .col(ColumnDef::new(B::Issuer).string_len(255).not_null())
                    .col(
                        ColumnDef::new(B::Subject)
                            .string_len(255)
                            .not_null()
                            .default(""),
                    )
                    .col(
                        ColumnDef::new(B::GroupName)
                            .string_len(255)
                            .not_null()
                            .default(""),
                    )
                    .col(ColumnDef::new(B::Role).string_len(16).not_null())
                    .col(
                        ColumnDef::new(B::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(B::Table, B::TeamId)
                            .to(Teams::Table, Teams::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("role_bindings_once")
                    .table(B::Table)
                    .col(B::TeamId)
                    .col(B::Issuer)
                    .col(B::Subject)
                    .col(B::GroupName)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RoleBindings::Table).to_owned())
            .await
    }
}
