//! Custom environments: a project's own environments beside the three built in (`environments`:
//! id `env_…`, a slug unique in the project, a name), and the ones a link enables
//! (`project_links.custom_environments`: their ids, space-separated, sorted). A link's built-in
//! mask may now be empty, when it enables custom environments only; the check that a link enables
//! at least one environment covers both. SQLite cannot change a table's check, so the link table
//! is rebuilt (as `m20261203_000009_keyed_link_tables` did, in one transaction, nothing refers to
//! it); PostgreSQL replaces the check.

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000021_custom_environments"
    }
}

#[derive(DeriveIden)]
enum Environments {
    Table,
    TeamId,
    ProjectId,
    Id,
    Slug,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Projects {
    Table,
    TeamId,
    Id,
}

const SQLITE_REBUILD: &[&str] = &[
    r#"CREATE TABLE "project_links_custom" (
        "team_id" varchar(64) NOT NULL,
        "connector_id" varchar(64) NOT NULL,
        "project_id" varchar(64) NOT NULL,
        "environments" integer NOT NULL,
        "created_at" timestamp_with_timezone_text NOT NULL,
        "updated_at" timestamp_with_timezone_text NOT NULL,
        "expires_at" timestamp_with_timezone_text NULL,
        "limits" text NULL,
        "last_issued_at" timestamp_with_timezone_text NULL,
        "custom_environments" text NOT NULL DEFAULT '',
        PRIMARY KEY ("connector_id", "project_id"),
        FOREIGN KEY ("team_id", "connector_id") REFERENCES "connectors" ("team_id", "id") ON DELETE CASCADE,
        FOREIGN KEY ("team_id", "project_id") REFERENCES "projects" ("team_id", "id") ON DELETE CASCADE,
        CHECK ("environments" BETWEEN 1 AND 7 OR ("environments" = 0 AND "custom_environments" <> ''))
    ) WITHOUT ROWID"#,
    r#"INSERT INTO "project_links_custom"
        ("team_id", "connector_id", "project_id", "environments", "created_at", "updated_at",
         "expires_at", "limits", "last_issued_at")
        SELECT "team_id", "connector_id", "project_id", "environments", "created_at", "updated_at",
         "expires_at", "limits", "last_issued_at"
        FROM "project_links""#,
    r#"DROP TABLE "project_links""#,
    r#"ALTER TABLE "project_links_custom" RENAME TO "project_links""#,
    r#"CREATE INDEX "ix_project_links_team_connector_project"
        ON "project_links" ("team_id", "connector_id", "project_id")"#,
    r#"CREATE INDEX "ix_project_links_team_project_connector"
        ON "project_links" ("team_id", "project_id", "connector_id")"#,
];

const POSTGRES_CHECK: &[&str] = &[
    r#"ALTER TABLE "project_links" ADD COLUMN "custom_environments" text NOT NULL DEFAULT ''"#,
    r#"DO $$ DECLARE c text; BEGIN
        FOR c IN SELECT conname FROM pg_constraint
                 WHERE conrelid = 'project_links'::regclass AND contype = 'c' LOOP
            EXECUTE format('ALTER TABLE project_links DROP CONSTRAINT %I', c);
        END LOOP;
    END $$"#,
    r#"ALTER TABLE "project_links" ADD CONSTRAINT "project_links_enable_some_environment"
        CHECK ("environments" BETWEEN 1 AND 7 OR ("environments" = 0 AND "custom_environments" <> ''))"#,
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use Environments as E;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    .col(ColumnDef::new(E::TeamId).string_len(64).not_null())
                    .col(ColumnDef::new(E::ProjectId).string_len(64).not_null())
                    .col(ColumnDef::new(E::Id).string_len(64).not_null())
                    .col(ColumnDef::new(E::Slug).string_len(64).not_null())
                    .col(ColumnDef::new(E::Name).string_len(100).not_null())
                    .col(
                        ColumnDef::new(E::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(Index::create().col(E::TeamId).col(E::Id))
                    .foreign_key(
                        ForeignKey::create()
                            .from(E::Table, (E::TeamId, E::ProjectId))
                            .to(Projects::Table, (Projects::TeamId, Projects::Id))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("environments_slug_once")
                    .table(E::Table)
                    .col(E::TeamId)
                    .col(E::ProjectId)
                    .col(E::Slug)
                    .unique()
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        let statements = match manager.get_database_backend() {
            DbBackend::Sqlite => SQLITE_REBUILD,
            _ => POSTGRES_CHECK,
        };
        for statement in statements {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    /// All of it or nothing: a rebuild stopped halfway would leave the link table under its
    /// temporary name.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, DatabaseConnection};
    use sea_orm_migration::MigratorTrait;

    use super::super::Migrator;

    async fn strings(db: &DatabaseConnection, sql: &str) -> Vec<String> {
        db.query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            sql,
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect()
    }

    #[tokio::test]
    async fn sqlite_links_survive_the_rebuild_and_may_then_enable_custom_environments_only() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
        let db = crate::store::connect(&url).await.unwrap().db;
        Migrator::up(&db, Some(20)).await.unwrap();
        for statement in [
            "INSERT INTO teams (id, slug, issuer, created_at) VALUES \
             ('team_a', 'a', 'https://issuer.example.test', '2026-01-01T00:00:00+00:00')",
            "INSERT INTO connectors (id, team_id, uid, kind, name, config, secrets, created_at, updated_at) \
             VALUES ('conn_1', 'team_a', 'api-key/one', 'api-key', 'one', '{}', '{}', \
             '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')",
            "INSERT INTO projects (team_id, id, name, created_at) VALUES \
             ('team_a', 'prj_1', 'one', '2026-01-01T00:00:00+00:00'), \
             ('team_a', 'prj_2', 'two', '2026-01-02T00:00:00+00:00')",
            "INSERT INTO project_links (team_id, connector_id, project_id, environments, created_at, \
             updated_at, expires_at, limits, last_issued_at) VALUES ('team_a', 'conn_1', 'prj_1', 3, \
             '2026-01-03T00:00:00+00:00', '2026-01-04T00:00:00+00:00', '2027-01-01T00:00:00+00:00', \
             '{\"max_issuances_per_hour\":5}', '2026-01-05T00:00:00+00:00')",
        ] {
            db.execute_unprepared(statement).await.unwrap();
        }
        Migrator::up(&db, None).await.unwrap();
        assert_eq!(
            strings(
                &db,
                "SELECT connector_id || ' ' || project_id || ' ' || environments || ' ' || expires_at \
                 || ' ' || limits || ' ' || last_issued_at || ' [' || custom_environments || ']' \
                 FROM project_links"
            )
            .await,
            ["conn_1 prj_1 3 2027-01-01T00:00:00+00:00 {\"max_issuances_per_hour\":5} 2026-01-05T00:00:00+00:00 []"]
        );
        // Custom environments only: allowed; no environment at all: refused by the schema.
        db.execute_unprepared(
            "INSERT INTO project_links (team_id, connector_id, project_id, environments, created_at, \
             updated_at, custom_environments) VALUES ('team_a', 'conn_1', 'prj_2', 0, \
             '2026-01-03T00:00:00+00:00', '2026-01-04T00:00:00+00:00', 'env_0123456789abcdefghijklmn')",
        )
        .await
        .unwrap();
        assert!(
            db.execute_unprepared(
                "UPDATE project_links SET custom_environments = '' WHERE project_id = 'prj_2'"
            )
            .await
            .is_err()
        );
        let indexes = strings(
            &db,
            "SELECT name FROM sqlite_master WHERE tbl_name = 'project_links' AND type = 'index' \
             AND sql IS NOT NULL ORDER BY name",
        )
        .await;
        assert_eq!(
            indexes,
            [
                "ix_project_links_team_connector_project",
                "ix_project_links_team_project_connector"
            ]
        );
        assert!(strings(&db, "PRAGMA foreign_key_check").await.is_empty());
    }
}
