//! On SQLite, `projects` and `project_links` become `WITHOUT ROWID` tables: each row is stored in
//! its primary key's B-tree, so finding a project or a link by its key is one descent instead of
//! two (the key's index, then the table by rowid). `Authorize` finds one of each on every call;
//! at a million links it touched five pages the operating system had to copy in, now three.
//! PostgreSQL has no rowid tables and is left as it is.
//!
//! The tables are rebuilt in one transaction with foreign keys enforced throughout, in an order
//! in which no `DROP TABLE` cascades to rows that are kept: the new link table refers to the new
//! project table while both have temporary names, the old link table is dropped before the old
//! project table (whose drop then has no child rows left), and renaming the new project table
//! updates the new link table's reference to it.

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000009_keyed_link_tables"
    }
}

const REBUILD: &[&str] = &[
    r#"CREATE TABLE "projects_keyed" (
        "team_id" varchar(64) NOT NULL,
        "id" varchar(64) NOT NULL,
        "name" varchar(100) NOT NULL,
        "created_at" timestamp_with_timezone_text NOT NULL,
        PRIMARY KEY ("team_id", "id"),
        FOREIGN KEY ("team_id") REFERENCES "teams" ("id") ON DELETE CASCADE
    ) WITHOUT ROWID"#,
    r#"INSERT INTO "projects_keyed" ("team_id", "id", "name", "created_at")
        SELECT "team_id", "id", "name", "created_at" FROM "projects""#,
    r#"CREATE TABLE "project_links_keyed" (
        "team_id" varchar(64) NOT NULL,
        "connector_id" varchar(64) NOT NULL,
        "project_id" varchar(64) NOT NULL,
        "environments" integer NOT NULL,
        "created_at" timestamp_with_timezone_text NOT NULL,
        "updated_at" timestamp_with_timezone_text NOT NULL,
        PRIMARY KEY ("connector_id", "project_id"),
        FOREIGN KEY ("team_id", "connector_id") REFERENCES "connectors" ("team_id", "id") ON DELETE CASCADE,
        FOREIGN KEY ("team_id", "project_id") REFERENCES "projects_keyed" ("team_id", "id") ON DELETE CASCADE,
        CHECK ("environments" BETWEEN 1 AND 7)
    ) WITHOUT ROWID"#,
    r#"INSERT INTO "project_links_keyed"
        ("team_id", "connector_id", "project_id", "environments", "created_at", "updated_at")
        SELECT "team_id", "connector_id", "project_id", "environments", "created_at", "updated_at"
        FROM "project_links""#,
    r#"DROP TABLE "project_links""#,
    r#"DROP TABLE "projects""#,
    r#"ALTER TABLE "projects_keyed" RENAME TO "projects""#,
    r#"ALTER TABLE "project_links_keyed" RENAME TO "project_links""#,
    r#"CREATE UNIQUE INDEX "ux_projects_team_name" ON "projects" ("team_id", "name")"#,
    r#"CREATE INDEX "ix_project_links_team_connector_project"
        ON "project_links" ("team_id", "connector_id", "project_id")"#,
    r#"CREATE INDEX "ix_project_links_team_project_connector"
        ON "project_links" ("team_id", "project_id", "connector_id")"#,
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Sqlite {
            return Ok(());
        }
        let db = manager.get_connection();
        for statement in REBUILD {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    /// All of it or nothing: a rebuild stopped halfway would leave the tables under their
    /// temporary names.
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
    async fn sqlite_links_and_projects_survive_the_rebuild_and_keep_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
        // The registry's own connections (foreign keys on), migrated as far as before this one.
        let db = crate::store::connect(&url).await.unwrap().db;
        Migrator::up(&db, Some(8)).await.unwrap();
        for statement in [
            "INSERT INTO teams (id, slug, issuer, created_at) VALUES \
             ('team_a', 'a', 'https://issuer.example.test', '2026-01-01T00:00:00+00:00')",
            "INSERT INTO connectors (id, team_id, uid, kind, name, config, secrets, created_at, updated_at) \
             VALUES ('conn_1', 'team_a', 'api-key/one', 'api-key', 'one', '{}', '{}', \
             '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')",
            "INSERT INTO projects (team_id, id, name, created_at) VALUES \
             ('team_a', 'prj_1', 'one', '2026-01-01T00:00:00+00:00'), \
             ('team_a', 'prj_2', 'two', '2026-01-02T00:00:00+00:00')",
            "INSERT INTO project_links (team_id, connector_id, project_id, environments, created_at, updated_at) \
             VALUES ('team_a', 'conn_1', 'prj_1', 3, '2026-01-03T00:00:00+00:00', '2026-01-04T00:00:00+00:00'), \
             ('team_a', 'conn_1', 'prj_2', 4, '2026-01-05T00:00:00+00:00', '2026-01-06T00:00:00+00:00')",
        ] {
            db.execute_unprepared(statement).await.unwrap();
        }

        Migrator::up(&db, None).await.unwrap();

        assert_eq!(
            strings(
                &db,
                "SELECT team_id || ' ' || id || ' ' || name || ' ' || created_at FROM projects ORDER BY id"
            )
            .await,
            [
                "team_a prj_1 one 2026-01-01T00:00:00+00:00",
                "team_a prj_2 two 2026-01-02T00:00:00+00:00"
            ]
        );
        assert_eq!(
            strings(
                &db,
                "SELECT team_id || ' ' || connector_id || ' ' || project_id || ' ' || environments \
                 || ' ' || created_at || ' ' || updated_at FROM project_links ORDER BY project_id"
            )
            .await,
            [
                "team_a conn_1 prj_1 3 2026-01-03T00:00:00+00:00 2026-01-04T00:00:00+00:00",
                "team_a conn_1 prj_2 4 2026-01-05T00:00:00+00:00 2026-01-06T00:00:00+00:00"
            ]
        );
        let schema = strings(
            &db,
            "SELECT name || ': ' || sql FROM sqlite_master WHERE tbl_name IN ('projects', 'project_links') \
             AND sql IS NOT NULL ORDER BY name",
        )
        .await;
        let names: Vec<&str> = schema
            .iter()
            .map(|s| s.split(':').next().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "ix_project_links_team_connector_project",
                "ix_project_links_team_project_connector",
                "project_links",
                "projects",
                "ux_projects_team_name"
            ]
        );
        for table in ["projects: ", "project_links: "] {
            let sql = schema.iter().find(|s| s.starts_with(table)).unwrap();
            assert!(sql.ends_with("WITHOUT ROWID"), "{sql}");
            assert!(!sql.contains("_keyed"), "{sql}");
        }
        assert!(strings(&db, "PRAGMA foreign_key_check").await.is_empty());

        // The keys and the references still hold: a second link of the same pair is refused, a
        // link to a missing project is refused, and deleting a project deletes its link.
        let duplicate = db
            .execute_unprepared(
                "INSERT INTO project_links VALUES ('team_a', 'conn_1', 'prj_1', 1, 'x', 'x')",
            )
            .await;
        assert!(duplicate.is_err());
        let dangling = db
            .execute_unprepared(
                "INSERT INTO project_links VALUES ('team_a', 'conn_1', 'prj_9', 1, 'x', 'x')",
            )
            .await;
        assert!(dangling.is_err());
        db.execute_unprepared("DELETE FROM projects WHERE id = 'prj_1'")
            .await
            .unwrap();
        assert_eq!(
            strings(&db, "SELECT project_id FROM project_links").await,
            ["prj_2"]
        );
    }
}
