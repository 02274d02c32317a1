//! The `Authorize` lookup in one query: the team, the connector it names (by id or uid) and that
//! connector's link to the project, joined from the team outwards so each missing part is told
//! apart by its absent columns. It is the cold path of every broker, so it costs one round trip.

use sea_orm::{Statement, sea_query::IntoIden};

use super::*;
use crate::domain::store::{AuthorizeStore, Authorizing};

/// One row of the lookup; the connector and link columns are absent when those rows are.
#[derive(Debug, FromQueryResult)]
pub(super) struct AuthorizeRow {
    pub(super) t_id: String,
    pub(super) t_slug: String,
    pub(super) t_issuer: String,
    pub(super) t_created_at: DateTime<Utc>,
    pub(super) c_id: Option<String>,
    pub(super) c_uid: Option<String>,
    pub(super) c_kind: Option<String>,
    pub(super) c_name: Option<String>,
    pub(super) c_config: Option<String>,
    pub(super) c_secrets: Option<String>,
    pub(super) c_suspended: Option<bool>,
    pub(super) c_default_installation_id: Option<String>,
    pub(super) c_created_at: Option<DateTime<Utc>>,
    pub(super) c_updated_at: Option<DateTime<Utc>>,
    pub(super) l_environments: Option<i32>,
    pub(super) l_created_at: Option<DateTime<Utc>>,
    pub(super) l_updated_at: Option<DateTime<Utc>>,
    pub(super) l_expires_at: Option<DateTime<Utc>>,
    pub(super) l_limits: Option<String>,
    pub(super) l_custom_environments: Option<String>,
    pub(super) p_name: Option<String>,
}

impl SeaStore {
    /// The lookup's row, read inline where the store can (a SQLite file), else through the
    /// driver.
    async fn authorize_row(&self, by_id: bool, values: [&str; 3]) -> Result<Option<AuthorizeRow>> {
        let backend = self.backend();
        let sql = lookup_sql(backend, by_id);
        if let Some(inline) = &self.inline {
            match inline.lookup(sql, values) {
                Ok(row) => return Ok(row),
                // Busy, or anything else: the driver's path answers instead.
                Err(e) => {
                    tracing::debug!(error = %e, "inline Authorize read failed; using the pool")
                }
            }
        }
        let statement =
            Statement::from_sql_and_values(backend, sql, values.map(sea_orm::Value::from));
        AuthorizeRow::find_by_statement(statement)
            .one(&self.db)
            .await
            .map_err(storage_error)
    }
}

#[async_trait]
impl AuthorizeStore for SeaStore {
    async fn authorizing(
        &self,
        team: &TeamId,
        c: &ConnectorRef,
        project: &ProjectId,
    ) -> Result<Authorizing> {
        // The SQL is the same for every call on a backend (built once); only the values change,
        // in the order of their placeholders: the connector's id or uid, the project, the team.
        let (by_id, named) = match c {
            ConnectorRef::Id(id) => (true, id.as_str()),
            ConnectorRef::Uid(uid) => (false, uid.as_str()),
        };
        let Some(row) = self
            .authorize_row(by_id, [named, project.as_str(), team.as_str()])
            .await?
        else {
            return Ok(Authorizing::default());
        };
        let found_team = rows::team(team::Model {
            id: row.t_id.clone(),
            slug: row.t_slug,
            issuer: row.t_issuer,
            created_at: row.t_created_at,
        })?;
        let connector = match (
            row.c_id,
            row.c_uid,
            row.c_kind,
            row.c_name,
            row.c_config,
            row.c_secrets,
            row.c_suspended,
            row.c_created_at,
            row.c_updated_at,
        ) {
            (
                Some(id),
                Some(uid),
                Some(kind),
                Some(name),
                Some(config),
                Some(secrets),
                Some(suspended),
                Some(created_at),
                Some(updated_at),
            ) => Some(rows::connector(connector::Model {
                id,
                team_id: row.t_id.clone(),
                uid,
                kind,
                name,
                config,
                secrets,
                suspended,
                created_at,
                updated_at,
                default_installation_id: row.c_default_installation_id,
            })?),
            _ => None,
        };
        let link = match (
            &connector,
            row.l_environments,
            row.l_created_at,
            row.l_updated_at,
            row.p_name,
        ) {
            (
                Some(connector),
                Some(environments),
                Some(created_at),
                Some(updated_at),
                Some(name),
            ) => Some(rows::link(rows::LinkRow {
                team_id: row.t_id,
                connector_id: connector.id.to_string(),
                connector_uid: connector.uid.to_string(),
                project_id: project.to_string(),
                project_name: name,
                environments,
                created_at,
                updated_at,
                expires_at: row.l_expires_at,
                limits: row.l_limits,
                custom_environments: row.l_custom_environments.unwrap_or_default(),
                // Not read on the runtime path.
                last_issued_at: None,
            })?),
            _ => None,
        };
        Ok(Authorizing {
            team: Some(found_team),
            connector,
            link,
        })
    }
}

impl SeaStore {
    /// The plans of the `Authorize` lookup, naming the connector by id and by uid (see
    /// [`SeaStore::list_plans`]).
    pub async fn authorize_plans(&self) -> Result<Vec<(&'static str, Vec<String>)>> {
        let backend = self.backend();
        let statement = |by_id| {
            Statement::from_sql_and_values(
                backend,
                lookup_sql(backend, by_id),
                ["api-key/plan".into(), "prj_plan".into(), "team_plan".into()],
            )
        };
        self.explain(vec![
            ("authorize by connector id", statement(true)),
            ("authorize by connector uid", statement(false)),
        ])
        .await
    }
}

/// The lookup's SQL on `backend`, naming the connector by id or by uid; built on first use.
fn lookup_sql(backend: DbBackend, by_id: bool) -> &'static str {
    static BUILT: [std::sync::OnceLock<String>; 4] = [const { std::sync::OnceLock::new() }; 4];
    let slot = usize::from(by_id) + if backend == DbBackend::Postgres { 2 } else { 0 };
    BUILT[slot].get_or_init(|| {
        let built = backend.build(&lookup_query(by_id));
        debug_assert_eq!(
            built.values.map(|v| v.0.len()),
            Some(3),
            "three placeholders: connector, project, team"
        );
        built.sql
    })
}

/// The lookup with placeholder values: the connector (by id or uid), the project, the team.
fn lookup_query(by_id: bool) -> SelectStatement {
    use connector::Column as C;
    use project_link::Column as L;
    let named = Expr::col((connector::Entity, if by_id { C::Id } else { C::Uid })).eq("");
    let (team, project) = ("", "");
    let mut query = Query::select();
    for (table, column, alias) in [
        (
            team::Entity.into_iden(),
            team::Column::Id.into_iden(),
            "t_id",
        ),
        (
            team::Entity.into_iden(),
            team::Column::Slug.into_iden(),
            "t_slug",
        ),
        (
            team::Entity.into_iden(),
            team::Column::Issuer.into_iden(),
            "t_issuer",
        ),
        (
            team::Entity.into_iden(),
            team::Column::CreatedAt.into_iden(),
            "t_created_at",
        ),
        (connector::Entity.into_iden(), C::Id.into_iden(), "c_id"),
        (connector::Entity.into_iden(), C::Uid.into_iden(), "c_uid"),
        (connector::Entity.into_iden(), C::Kind.into_iden(), "c_kind"),
        (connector::Entity.into_iden(), C::Name.into_iden(), "c_name"),
        (
            connector::Entity.into_iden(),
            C::Config.into_iden(),
            "c_config",
        ),
        (
            connector::Entity.into_iden(),
            C::Secrets.into_iden(),
            "c_secrets",
        ),
        (
            connector::Entity.into_iden(),
            C::Suspended.into_iden(),
            "c_suspended",
        ),
        (
            connector::Entity.into_iden(),
            C::DefaultInstallationId.into_iden(),
            "c_default_installation_id",
        ),
        (
            connector::Entity.into_iden(),
            C::CreatedAt.into_iden(),
            "c_created_at",
        ),
        (
            connector::Entity.into_iden(),
            C::UpdatedAt.into_iden(),
            "c_updated_at",
        ),
        (
            project_link::Entity.into_iden(),
            L::Environments.into_iden(),
            "l_environments",
        ),
        (
            project_link::Entity.into_iden(),
            L::CreatedAt.into_iden(),
            "l_created_at",
        ),
        (
            project_link::Entity.into_iden(),
            L::UpdatedAt.into_iden(),
            "l_updated_at",
        ),
        (
            project_link::Entity.into_iden(),
            L::ExpiresAt.into_iden(),
            "l_expires_at",
        ),
        (
            project_link::Entity.into_iden(),
            L::Limits.into_iden(),
            "l_limits",
        ),
        (
            project_link::Entity.into_iden(),
            L::CustomEnvironments.into_iden(),
            "l_custom_environments",
        ),
        (
            project::Entity.into_iden(),
            project::Column::Name.into_iden(),
            "p_name",
        ),
    ] {
        query.expr_as(Expr::col((table, column)), alias);
    }
    query
        .from(team::Entity)
        .left_join(
            connector::Entity,
            Expr::col((connector::Entity, C::TeamId))
                .equals((team::Entity, team::Column::Id))
                .and(named),
        )
        .left_join(
            project_link::Entity,
            Expr::col((project_link::Entity, L::ConnectorId))
                .equals((connector::Entity, C::Id))
                .and(Expr::col((project_link::Entity, L::ProjectId)).eq(project)),
        )
        .left_join(
            project::Entity,
            Expr::col((project::Entity, project::Column::TeamId))
                .equals((project_link::Entity, L::TeamId))
                .and(
                    Expr::col((project::Entity, project::Column::Id))
                        .equals((project_link::Entity, L::ProjectId)),
                ),
        )
        .and_where(Expr::col((team::Entity, team::Column::Id)).eq(team));
    // No `LIMIT`: every join is on a unique key, so there is at most one row, and SQLite
    // re-prepares a statement whose `LIMIT` is a bound parameter each time it is bound
    // (measured: a third of the registry's CPU per call went to parsing it again).
    query
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Arc};

    use secrecy::ExposeSecret;

    use super::*;
    use crate::{
        crypto::SecretCipher,
        domain::{
            Registry,
            model::Role,
            service::{NewConnector, NewProject, NewTeam},
            types::{
                ConfigMap, ConnectorUid, DisplayName, EnvironmentSet, IssuerUrl, ProjectName,
                ProjectRef, SecretInput, TeamSlug,
            },
        },
    };

    /// The lookup through the driver, as every backend reads it.
    async fn through_pool(store: &SeaStore, by_id: bool, values: [&str; 3]) -> String {
        let statement = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            lookup_sql(DbBackend::Sqlite, by_id),
            values.map(sea_orm::Value::from),
        );
        let row = AuthorizeRow::find_by_statement(statement)
            .one(&store.db)
            .await
            .unwrap();
        format!("{row:?}")
    }

    #[tokio::test]
    async fn the_inline_sqlite_lookup_reads_exactly_what_the_driver_reads() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
        let store = crate::app::open_store(&url).await.unwrap();
        let registry = Registry::new(Arc::new(store.clone()), SecretCipher::ephemeral());
        let team = TeamId::parse("team_a").unwrap();
        registry
            .create_team(NewTeam {
                id: team.clone(),
                slug: TeamSlug::parse("a").unwrap(),
                issuer: IssuerUrl::parse("https://issuer.example.test/a").unwrap(),
            })
            .await
            .unwrap();
        let (_, key) = registry
            .create_api_key(Some(team), Role::Admin)
            .await
            .unwrap();
        let admin = registry.authenticate(key.expose_secret()).await.unwrap();
        registry
            .create_project(
                &admin,
                NewProject {
                    id: ProjectId::parse("prj_a").unwrap(),
                    name: ProjectName::parse("a").unwrap(),
                },
            )
            .await
            .unwrap();
        let connector = registry
            .create_connector(
                &admin,
                NewConnector {
                    uid: ConnectorUid::parse("api-key/one").unwrap(),
                    name: DisplayName::parse("one").unwrap(),
                    config: ConfigMap::from_stored(BTreeMap::from([(
                        "region".to_owned(),
                        "eu".to_owned(),
                    )])),
                    secrets: SecretInput::parse([("api_key".to_owned(), "sk_1".to_owned())])
                        .unwrap(),
                },
            )
            .await
            .unwrap();
        registry
            .attach_project(
                &admin,
                &ConnectorRef::parse("api-key/one").unwrap(),
                &ProjectRef::parse("prj_a").unwrap(),
                EnvironmentSet::parse(&["preview", "production"]).unwrap(),
            )
            .await
            .unwrap();

        let inline = store.inline.as_ref().expect("a SQLite file reads inline");
        let id = connector.id.to_string();
        for (by_id, values) in [
            (true, [id.as_str(), "prj_a", "team_a"]),
            (false, ["api-key/one", "prj_a", "team_a"]),
            (false, ["api-key/one", "prj_other", "team_a"]),
            (false, ["api-key/none", "prj_a", "team_a"]),
            (false, ["api-key/one", "prj_a", "team_none"]),
        ] {
            let read = inline
                .lookup(lookup_sql(DbBackend::Sqlite, by_id), values)
                .unwrap();
            let pooled = through_pool(&store, by_id, values).await;
            assert_eq!(format!("{read:?}"), pooled, "{values:?}");
        }
        // A whole answer, read inline: the link and every connector column.
        let found = store
            .authorizing(
                &TeamId::parse("team_a").unwrap(),
                &ConnectorRef::parse("api-key/one").unwrap(),
                &ProjectId::parse("prj_a").unwrap(),
            )
            .await
            .unwrap();
        let connector = found.connector.expect("the connector");
        assert_eq!(connector.config.get("region"), Some("eu"));
        assert!(!connector.suspended);
        let link = found.link.expect("the link");
        assert_eq!(link.project_name.as_str(), "a");
        // In-memory databases read through the driver only.
        let memory = crate::store::connect("sqlite::memory:").await.unwrap();
        assert!(memory.inline.is_none());
    }
}
