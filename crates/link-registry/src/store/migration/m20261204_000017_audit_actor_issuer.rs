//! The issuer of a person who made a change: audit rows name people `user:<email or sub>`, and
//! the same name may come from two operator issuers.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000017_audit_actor_issuer"
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    ActorIssuer,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AuditEvents::Table)
                    .add_column(ColumnDef::new(AuditEvents::ActorIssuer).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AuditEvents::Table)
                    .drop_column(AuditEvents::ActorIssuer)
                    .to_owned(),
            )
            .await
    }
}
