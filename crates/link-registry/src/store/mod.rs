//! The sea-orm implementation of [`Store`], for SQLite and PostgreSQL; the backend comes from the
//! URL scheme.
//!
//! Writes run in transactions that serialize where they must: on SQLite every write transaction
//! starts with `BEGIN IMMEDIATE` (behind an in-process gate, so our own writers queue fairly
//! instead of polling the file lock), which makes concurrent writers wait rather than fail with
//! "database is locked"; on PostgreSQL a change to a connector or its links first locks the
//! connector row, so concurrent attaches of one pair apply one after the other and each audit row
//! sees the true "before".

mod entity;
mod migration;
mod rows;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, EntityTrait, FromQueryResult,
    IntoActiveModel, Order, QueryFilter, QueryOrder, QuerySelect, SqlErr, TransactionOptions,
    TransactionTrait,
    sea_query::{Expr, ExprTrait, OnConflict, Query, SelectStatement},
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};
use sea_orm_migration::MigratorTrait;
use tokio::sync::{Mutex, OwnedMutexGuard};

use self::{
    entity::{api_key, audit_event, connector, project, project_link, team},
    migration::Migrator,
};
use crate::domain::{
    RegistryError, Resource, Result, audit,
    model::{Actor, ApiKeyRecord, AuditEvent, Connector, Project, ProjectLink, Team},
    page::{AuditKey, LinkKey, PageRequest},
    store::{ConnectorEdit, ConnectorReseal, LinkFilter, Store},
    types::{ConnectorId, ConnectorRef, EnvironmentSet, KeyId, ProjectId, ProjectRef, TeamId},
};

/// How long a SQLite writer waits for another process's write lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(15);

/// A registry database.
#[derive(Clone, Debug)]
pub struct SeaStore {
    db: DatabaseConnection,
    /// Present on SQLite: one writer at a time within this process.
    write_gate: Option<Arc<Mutex<()>>>,
}

/// Opens the database at `url` (`sqlite://…` or `postgres://…`) without migrating it.
pub async fn connect(url: &str) -> Result<SeaStore> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30));
    let sqlite = url.starts_with("sqlite:");
    if sqlite {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // Every connection to an in-memory database is a new database: keep exactly one.
        options.max_connections(if in_memory { 1 } else { 8 });
        options.map_sqlx_sqlite_opts(move |o| {
            let o = o
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .create_if_missing(true);
            if in_memory {
                o
            } else {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
            }
        });
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        options.max_connections(16);
    } else {
        return Err(RegistryError::invalid(
            "database_url",
            "database URL must start with sqlite:// or postgres://",
        ));
    }
    let db = Database::connect(options).await.map_err(storage_error)?;
    Ok(SeaStore {
        db,
        write_gate: sqlite.then(|| Arc::new(Mutex::new(()))),
    })
}

/// A write transaction, holding the SQLite write gate while it lives.
struct WriteTxn {
    txn: DatabaseTransaction,
    _gate: Option<OwnedMutexGuard<()>>,
}

impl SeaStore {
    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<()> {
        Migrator::up(&self.db, None)
            .await
            .map_err(|e| RegistryError::internal("applying migrations", e))
    }

    /// Names of migrations applied so far, oldest first.
    pub async fn applied_migrations(&self) -> Result<Vec<String>> {
        let migrations = Migrator::get_applied_migrations(&self.db)
            .await
            .map_err(storage_error)?;
        Ok(migrations.iter().map(|m| m.name().to_owned()).collect())
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    async fn begin_write(&self) -> Result<WriteTxn> {
        let gate = match &self.write_gate {
            Some(gate) => Some(gate.clone().lock_owned().await),
            None => None,
        };
        let options = TransactionOptions {
            sqlite_transaction_mode: gate
                .is_some()
                .then_some(sea_orm::SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        let txn = self
            .db
            .begin_with_options(options)
            .await
            .map_err(storage_error)?;
        Ok(WriteTxn { txn, _gate: gate })
    }

    /// Finds a connector inside a write transaction; on PostgreSQL the row stays locked until
    /// the transaction ends.
    async fn connector_for_update(
        &self,
        txn: &DatabaseTransaction,
        team: &TeamId,
        connector: &ConnectorRef,
    ) -> Result<Connector> {
        let mut select = connector::Entity::find()
            .filter(connector::Column::TeamId.eq(team.as_str()))
            .filter(connector_condition(connector));
        if self.backend() == DbBackend::Postgres {
            select = select.lock_exclusive();
        }
        let row = select.one(txn).await.map_err(storage_error)?;
        row.map(rows::connector)
            .transpose()?
            .ok_or_else(|| RegistryError::not_found(Resource::Connector, connector))
    }
}

fn connector_condition(connector: &ConnectorRef) -> Condition {
    match connector {
        ConnectorRef::Id(id) => Condition::all().add(connector::Column::Id.eq(id.as_str())),
        ConnectorRef::Uid(uid) => Condition::all().add(connector::Column::Uid.eq(uid.as_str())),
    }
}

/// Any database failure that is not a constraint the caller can act on.
fn storage_error(err: DbErr) -> RegistryError {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => {
            RegistryError::StorageUnavailable(Box::new(err))
        }
        other => RegistryError::internal("database", other),
    }
}

/// Maps a unique violation to `AlreadyExists`, a foreign-key violation to `FailedPrecondition`.
fn write_error(err: DbErr, already_exists: impl FnOnce(&str) -> RegistryError) -> RegistryError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(detail)) => already_exists(&detail),
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => RegistryError::FailedPrecondition(
            "a row this change refers to does not exist (any more)".into(),
        ),
        _ => storage_error(err),
    }
}

async fn insert_audit(
    txn: &DatabaseTransaction,
    event: crate::domain::model::NewAuditEvent,
) -> Result<()> {
    audit_event::Entity::insert(rows::audit_event_row(event))
        .exec_without_returning(txn)
        .await
        .map_err(storage_error)?;
    Ok(())
}

async fn commit(txn: WriteTxn) -> Result<()> {
    txn.txn.commit().await.map_err(storage_error)
}

async fn find_project<C: ConnectionTrait>(
    db: &C,
    team: &TeamId,
    project: &ProjectRef,
) -> Result<Option<Project>> {
    let mut any = Condition::any();
    if let Some(id) = &project.id {
        any = any.add(project::Column::Id.eq(id.as_str()));
    }
    if let Some(name) = &project.name {
        any = any.add(project::Column::Name.eq(name.as_str()));
    }
    let rows = project::Entity::find()
        .filter(project::Column::TeamId.eq(team.as_str()))
        .filter(any)
        .all(db)
        .await
        .map_err(storage_error)?;
    // One project may match by id and another by name: the id wins.
    let by_id = |row: &project::Model| project.id.as_ref().is_some_and(|id| row.id == id.as_str());
    let best = match rows.iter().position(by_id) {
        Some(i) => rows.into_iter().nth(i),
        None => rows.into_iter().next(),
    };
    best.map(rows::project).transpose()
}

/// Links of one team joined with their connector uid and project name.
fn link_query(team: &TeamId) -> SelectStatement {
    use project_link::Column as L;
    Query::select()
        .columns([
            (project_link::Entity, L::TeamId),
            (project_link::Entity, L::ConnectorId),
            (project_link::Entity, L::ProjectId),
            (project_link::Entity, L::Environments),
            (project_link::Entity, L::CreatedAt),
            (project_link::Entity, L::UpdatedAt),
        ])
        .expr_as(
            Expr::col((connector::Entity, connector::Column::Uid)),
            "connector_uid",
        )
        .expr_as(
            Expr::col((project::Entity, project::Column::Name)),
            "project_name",
        )
        .from(project_link::Entity)
        .inner_join(
            connector::Entity,
            Expr::col((connector::Entity, connector::Column::Id))
                .equals((project_link::Entity, L::ConnectorId)),
        )
        .inner_join(
            project::Entity,
            Expr::col((project::Entity, project::Column::TeamId))
                .equals((project_link::Entity, L::TeamId))
                .and(
                    Expr::col((project::Entity, project::Column::Id))
                        .equals((project_link::Entity, L::ProjectId)),
                ),
        )
        .and_where(Expr::col((project_link::Entity, L::TeamId)).eq(team.as_str()))
        .to_owned()
}

async fn fetch_links<C: ConnectionTrait>(
    db: &C,
    query: &SelectStatement,
) -> Result<Vec<ProjectLink>> {
    let statement = db.get_database_backend().build(query);
    let found = rows::LinkRow::find_by_statement(statement)
        .all(db)
        .await
        .map_err(storage_error)?;
    found.into_iter().map(rows::link).collect()
}

async fn find_link<C: ConnectionTrait>(
    db: &C,
    team: &TeamId,
    connector: &ConnectorId,
    project: &ProjectId,
) -> Result<Option<ProjectLink>> {
    use project_link::Column as L;
    let query = link_query(team)
        .and_where(Expr::col((project_link::Entity, L::ConnectorId)).eq(connector.as_str()))
        .and_where(Expr::col((project_link::Entity, L::ProjectId)).eq(project.as_str()))
        .to_owned();
    Ok(fetch_links(db, &query).await?.into_iter().next())
}

#[async_trait]
impl Store for SeaStore {
    async fn ping(&self) -> Result<()> {
        self.db.ping().await.map_err(storage_error)
    }

    async fn insert_team(&self, team: &Team, actor: &Actor) -> Result<()> {
        let txn = self.begin_write().await?;
        team::ActiveModel::from(team::Model {
            id: team.id.to_string(),
            slug: team.slug.to_string(),
            issuer: team.issuer.to_string(),
            created_at: team.created_at,
        })
        .insert(&txn.txn)
        .await
        .map_err(|e| {
            write_error(e, |_| RegistryError::AlreadyExists {
                resource: Resource::Team,
                what: format!("with id '{}' or slug '{}'", team.id, team.slug),
            })
        })?;
        insert_audit(&txn.txn, audit::team_created(actor, team)).await?;
        commit(txn).await
    }

    async fn team(&self, id: &TeamId) -> Result<Option<Team>> {
        let row = team::Entity::find_by_id(id.as_str())
            .one(&self.db)
            .await
            .map_err(storage_error)?;
        row.map(rows::team).transpose()
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord, actor: &Actor) -> Result<()> {
        let txn = self.begin_write().await?;
        api_key::ActiveModel::from(api_key::Model {
            id: key.id.to_string(),
            team_id: key.team_id.as_ref().map(ToString::to_string),
            role: key.role.as_str().to_owned(),
            key_hash: key.key_hash.clone(),
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            last_used_at: key.last_used_at,
        })
        .insert(&txn.txn)
        .await
        .map_err(|e| {
            write_error(e, |_| {
                RegistryError::internal("inserting an api key", "key id or hash collision")
            })
        })?;
        insert_audit(&txn.txn, audit::key_created(actor, key)).await?;
        commit(txn).await
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row = api_key::Entity::find()
            .filter(api_key::Column::KeyHash.eq(key_hash))
            .one(&self.db)
            .await
            .map_err(storage_error)?;
        row.map(rows::api_key).transpose()
    }

    async fn api_keys(&self, team: Option<&TeamId>) -> Result<Vec<ApiKeyRecord>> {
        let mut select = api_key::Entity::find().order_by(api_key::Column::Id, Order::Asc);
        if let Some(team) = team {
            select = select.filter(api_key::Column::TeamId.eq(team.as_str()));
        }
        let found = select.all(&self.db).await.map_err(storage_error)?;
        found.into_iter().map(rows::api_key).collect()
    }

    async fn revoke_api_key(
        &self,
        id: &KeyId,
        actor: &Actor,
        at: DateTime<Utc>,
    ) -> Result<ApiKeyRecord> {
        let txn = self.begin_write().await?;
        let row = api_key::Entity::find_by_id(id.as_str())
            .one(&txn.txn)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| RegistryError::not_found(Resource::Key, id))?;
        let mut key = rows::api_key(row)?;
        if key.revoked_at.is_none() {
            key.revoked_at = Some(at);
            api_key::Entity::update_many()
                .col_expr(api_key::Column::RevokedAt, Expr::value(at))
                .filter(api_key::Column::Id.eq(id.as_str()))
                .exec(&txn.txn)
                .await
                .map_err(storage_error)?;
            insert_audit(&txn.txn, audit::key_revoked(actor, &key, at)).await?;
        }
        commit(txn).await?;
        Ok(key)
    }

    async fn touch_api_key(&self, id: &KeyId, at: DateTime<Utc>) -> Result<()> {
        let txn = self.begin_write().await?;
        api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, Expr::value(at))
            .filter(api_key::Column::Id.eq(id.as_str()))
            .exec(&txn.txn)
            .await
            .map_err(storage_error)?;
        commit(txn).await
    }

    async fn insert_project(&self, p: &Project, actor: &Actor) -> Result<()> {
        let txn = self.begin_write().await?;
        project::ActiveModel::from(project::Model {
            team_id: p.team_id.to_string(),
            id: p.id.to_string(),
            name: p.name.to_string(),
            created_at: p.created_at,
        })
        .insert(&txn.txn)
        .await
        .map_err(|e| {
            write_error(e, |detail| RegistryError::AlreadyExists {
                resource: Resource::Project,
                what: if detail.contains("name") {
                    format!("named '{}'", p.name)
                } else {
                    format!("with id '{}'", p.id)
                },
            })
        })?;
        insert_audit(&txn.txn, audit::project_created(actor, p)).await?;
        commit(txn).await
    }

    async fn project(&self, team: &TeamId, project: &ProjectRef) -> Result<Option<Project>> {
        find_project(&self.db, team, project).await
    }

    async fn projects(&self, team: &TeamId, page: &PageRequest<ProjectId>) -> Result<Vec<Project>> {
        let mut select = project::Entity::find()
            .filter(project::Column::TeamId.eq(team.as_str()))
            .order_by(project::Column::Id, Order::Asc)
            .limit(page.limit());
        if let Some(after) = &page.after {
            select = select.filter(project::Column::Id.gt(after.as_str()));
        }
        let found = select.all(&self.db).await.map_err(storage_error)?;
        found.into_iter().map(rows::project).collect()
    }

    async fn insert_connector(&self, c: &Connector, actor: &Actor) -> Result<()> {
        let txn = self.begin_write().await?;
        connector::ActiveModel::from(rows::connector_row(c))
            .insert(&txn.txn)
            .await
            .map_err(|e| {
                write_error(e, |_| RegistryError::AlreadyExists {
                    resource: Resource::Connector,
                    what: format!("with uid '{}'", c.uid),
                })
            })?;
        insert_audit(&txn.txn, audit::connector_created(actor, c)).await?;
        commit(txn).await
    }

    async fn connector(&self, team: &TeamId, c: &ConnectorRef) -> Result<Option<Connector>> {
        let row = connector::Entity::find()
            .filter(connector::Column::TeamId.eq(team.as_str()))
            .filter(connector_condition(c))
            .one(&self.db)
            .await
            .map_err(storage_error)?;
        row.map(rows::connector).transpose()
    }

    async fn connectors(
        &self,
        team: &TeamId,
        page: &PageRequest<ConnectorId>,
    ) -> Result<Vec<Connector>> {
        let mut select = connector::Entity::find()
            .filter(connector::Column::TeamId.eq(team.as_str()))
            .order_by(connector::Column::Id, Order::Asc)
            .limit(page.limit());
        if let Some(after) = &page.after {
            select = select.filter(connector::Column::Id.gt(after.as_str()));
        }
        let found = select.all(&self.db).await.map_err(storage_error)?;
        found.into_iter().map(rows::connector).collect()
    }

    async fn update_connector(
        &self,
        team: &TeamId,
        c: &ConnectorRef,
        actor: &Actor,
        edit: ConnectorEdit,
    ) -> Result<Connector> {
        let txn = self.begin_write().await?;
        let before = self.connector_for_update(&txn.txn, team, c).await?;
        let after = edit(&before)?;
        let row = rows::connector_row(&after).into_active_model().reset_all();
        row.update(&txn.txn).await.map_err(|e| {
            write_error(e, |_| RegistryError::AlreadyExists {
                resource: Resource::Connector,
                what: format!("with uid '{}'", after.uid),
            })
        })?;
        insert_audit(&txn.txn, audit::connector_updated(actor, &before, &after)).await?;
        commit(txn).await?;
        Ok(after)
    }

    async fn reseal_connectors(&self, reseal: ConnectorReseal) -> Result<u64> {
        let txn = self.begin_write().await?;
        let rows = connector::Entity::find()
            .filter(connector::Column::Secrets.ne("{}"))
            .all(&txn.txn)
            .await
            .map_err(storage_error)?;
        let mut rewritten = 0;
        for row in rows {
            if let Some(next) = reseal(&rows::connector(row)?)? {
                rows::connector_row(&next)
                    .into_active_model()
                    .reset_all()
                    .update(&txn.txn)
                    .await
                    .map_err(storage_error)?;
                rewritten += 1;
            }
        }
        commit(txn).await?;
        Ok(rewritten)
    }

    async fn delete_connector(
        &self,
        team: &TeamId,
        c: &ConnectorRef,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<(Connector, u64)> {
        use project_link::Column as L;
        let txn = self.begin_write().await?;
        let connector = self.connector_for_update(&txn.txn, team, c).await?;
        let links = fetch_links(
            &txn.txn,
            &link_query(team)
                .and_where(
                    Expr::col((project_link::Entity, L::ConnectorId)).eq(connector.id.as_str()),
                )
                .to_owned(),
        )
        .await?;
        // Links go with their connector by the foreign key's ON DELETE CASCADE.
        connector::Entity::delete_by_id(connector.id.as_str())
            .exec(&txn.txn)
            .await
            .map_err(storage_error)?;
        insert_audit(
            &txn.txn,
            audit::connector_deleted(actor, &connector, &links, now),
        )
        .await?;
        commit(txn).await?;
        Ok((connector, links.len() as u64))
    }

    async fn attach(
        &self,
        team: &TeamId,
        c: &ConnectorRef,
        p: &ProjectRef,
        environments: EnvironmentSet,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<ProjectLink> {
        let txn = self.begin_write().await?;
        let connector = self.connector_for_update(&txn.txn, team, c).await?;
        let project = find_project(&txn.txn, team, p)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Project, p))?;
        let before = find_link(&txn.txn, team, &connector.id, &project.id).await?;
        let row = project_link::ActiveModel::from(project_link::Model {
            team_id: team.to_string(),
            connector_id: connector.id.to_string(),
            project_id: project.id.to_string(),
            environments: environments.bits(),
            created_at: now,
            updated_at: now,
        });
        project_link::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    project_link::Column::ConnectorId,
                    project_link::Column::ProjectId,
                ])
                .update_columns([
                    project_link::Column::Environments,
                    project_link::Column::UpdatedAt,
                ])
                .to_owned(),
            )
            .exec_without_returning(&txn.txn)
            .await
            .map_err(|e| {
                write_error(e, |_| {
                    RegistryError::internal("upserting a link", "conflict")
                })
            })?;
        let after = ProjectLink {
            team_id: team.clone(),
            connector_id: connector.id,
            connector_uid: connector.uid,
            project_id: project.id,
            project_name: project.name,
            environments,
            created_at: before.as_ref().map_or(now, |b| b.created_at),
            updated_at: now,
        };
        insert_audit(
            &txn.txn,
            audit::project_attached(actor, before.as_ref(), &after),
        )
        .await?;
        commit(txn).await?;
        Ok(after)
    }

    async fn detach(
        &self,
        team: &TeamId,
        c: &ConnectorRef,
        p: &ProjectRef,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<ProjectLink> {
        let txn = self.begin_write().await?;
        let connector = self.connector_for_update(&txn.txn, team, c).await?;
        let project = find_project(&txn.txn, team, p)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Project, p))?;
        let link = find_link(&txn.txn, team, &connector.id, &project.id)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::ProjectLink, format!("{c} → {p}")))?;
        project_link::Entity::delete_by_id((connector.id.to_string(), project.id.to_string()))
            .exec(&txn.txn)
            .await
            .map_err(storage_error)?;
        insert_audit(&txn.txn, audit::project_detached(actor, &link, now)).await?;
        commit(txn).await?;
        Ok(link)
    }

    async fn link(&self, team: &TeamId, c: &ConnectorRef, p: &ProjectRef) -> Result<ProjectLink> {
        let connector = self
            .connector(team, c)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Connector, c))?;
        let project = find_project(&self.db, team, p)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Project, p))?;
        find_link(&self.db, team, &connector.id, &project.id)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::ProjectLink, format!("{c} → {p}")))
    }

    async fn link_by_ids(
        &self,
        team: &TeamId,
        connector: &ConnectorId,
        project: &ProjectId,
    ) -> Result<Option<ProjectLink>> {
        find_link(&self.db, team, connector, project).await
    }

    async fn links(
        &self,
        team: &TeamId,
        filter: &LinkFilter,
        page: &PageRequest<LinkKey>,
    ) -> Result<Vec<ProjectLink>> {
        use project_link::Column as L;
        let mut query = link_query(team);
        if let Some(c) = &filter.connector {
            let connector = self
                .connector(team, c)
                .await?
                .ok_or_else(|| RegistryError::not_found(Resource::Connector, c))?;
            query.and_where(
                Expr::col((project_link::Entity, L::ConnectorId)).eq(connector.id.as_str()),
            );
        }
        if let Some(p) = &filter.project {
            let project = find_project(&self.db, team, p)
                .await?
                .ok_or_else(|| RegistryError::not_found(Resource::Project, p))?;
            query
                .and_where(Expr::col((project_link::Entity, L::ProjectId)).eq(project.id.as_str()));
        }
        if let Some(after) = &page.after {
            let (connector_id, project_id) =
                (after.connector_id.as_str(), after.project_id.as_str());
            let connector_col = Expr::col((project_link::Entity, L::ConnectorId));
            let project_col = Expr::col((project_link::Entity, L::ProjectId));
            query.cond_where(
                Condition::any()
                    .add(connector_col.clone().gt(connector_id))
                    .add(
                        Condition::all()
                            .add(connector_col.eq(connector_id))
                            .add(project_col.gt(project_id)),
                    ),
            );
        }
        query
            .order_by((project_link::Entity, L::ConnectorId), Order::Asc)
            .order_by((project_link::Entity, L::ProjectId), Order::Asc)
            .limit(page.limit());
        fetch_links(&self.db, &query).await
    }

    async fn audit_events(
        &self,
        team: &TeamId,
        page: &PageRequest<AuditKey>,
    ) -> Result<Vec<AuditEvent>> {
        let mut select = audit_event::Entity::find()
            .filter(audit_event::Column::TeamId.eq(team.as_str()))
            .order_by(audit_event::Column::Id, Order::Desc)
            .limit(page.limit());
        if let Some(AuditKey(before)) = page.after {
            select = select.filter(audit_event::Column::Id.lt(before));
        }
        let found = select.all(&self.db).await.map_err(storage_error)?;
        found.into_iter().map(rows::audit_event).collect()
    }
}
