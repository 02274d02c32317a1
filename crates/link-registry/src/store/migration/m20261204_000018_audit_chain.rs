//! The tamper-evident audit log: `prev_hash` and `hash` on every event, the table that records
//! where the kept chain starts after retention, and the chain computed over the events already
//! written (oldest first, in batches).

use sea_orm::{ConnectionTrait, Statement};
use sea_orm_migration::prelude::*;

use crate::domain::audit::{ChainedFields, GENESIS_HASH, chain_hash};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000018_audit_chain"
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum AuditChain {
    Table,
    Id,
    AfterId,
    Hash,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [AuditEvents::PrevHash, AuditEvents::Hash] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AuditEvents::Table)
                        .add_column(ColumnDef::new(column).string_len(64).null())
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(AuditChain::Table)
                    .col(
                        ColumnDef::new(AuditChain::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AuditChain::AfterId).big_integer().not_null())
                    .col(ColumnDef::new(AuditChain::Hash).string_len(64).not_null())
                    .to_owned(),
            )
            .await?;
        backfill(manager.get_connection()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditChain::Table).to_owned())
            .await?;
        for column in [AuditEvents::Hash, AuditEvents::PrevHash] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AuditEvents::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Chains the events written before this migration, in id order.
async fn backfill(db: &SchemaManagerConnection<'_>) -> Result<(), DbErr> {
    const BATCH: i64 = 1000;
    let backend = db.get_database_backend();
    let placeholder = |n: usize| match backend {
        sea_orm::DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    };
    let mut prev = GENESIS_HASH.to_owned();
    let mut after = 0_i64;
    loop {
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "SELECT id, team_id, actor, actor_issuer, action, target, before, after, created_at \
                     FROM audit_events WHERE id > {} ORDER BY id LIMIT {BATCH}",
                    placeholder(1)
                ),
                [after.into()],
            ))
            .await?;
        for row in &rows {
            let id: i64 = row.try_get("", "id")?;
            let text = |c: &str| row.try_get::<Option<String>>("", c);
            let (team_id, actor_issuer, before, after_json) = (
                text("team_id")?,
                text("actor_issuer")?,
                text("before")?,
                text("after")?,
            );
            let actor: String = row.try_get("", "actor")?;
            let action: String = row.try_get("", "action")?;
            let target: String = row.try_get("", "target")?;
            let time: chrono::DateTime<chrono::Utc> = row.try_get("", "created_at")?;
            let hash = chain_hash(
                &prev,
                &ChainedFields {
                    team_id: team_id.as_deref(),
                    actor: &actor,
                    actor_issuer: actor_issuer.as_deref(),
                    action: &action,
                    target: &target,
                    before: before.as_deref(),
                    after: after_json.as_deref(),
                    time,
                },
            );
            db.execute_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "UPDATE audit_events SET prev_hash = {}, hash = {} WHERE id = {}",
                    placeholder(1),
                    placeholder(2),
                    placeholder(3)
                ),
                [prev.clone().into(), hash.clone().into(), id.into()],
            ))
            .await?;
            prev = hash;
            after = id;
        }
        if (rows.len() as i64) < BATCH {
            return Ok(());
        }
    }
}
