//! The sea-orm implementation of [`Store`], for SQLite and PostgreSQL; the backend comes from the
//! URL scheme.
//!
//! Writes run in transactions that serialize where they must: on SQLite every write transaction
//! starts with `BEGIN IMMEDIATE` on the one connection kept for writes (behind an in-process
//! gate, so our own writers queue fairly instead of polling the file lock), which makes
//! concurrent writers wait rather than fail with "database is locked"; on PostgreSQL a change to
//! a connector or its links first locks the connector row, so concurrent attaches of one pair
//! apply one after the other and each audit row sees the true "before".

mod audit_log;
mod authorize;
mod changes;
mod connectors;
mod entity;
mod environments;
mod grants;
mod inline;
mod installations;
mod issuances;
mod keys;
mod links;
mod lists;
mod migration;
mod projects;
mod rows;
mod teams;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, EntityTrait, FromQueryResult,
    IntoActiveModel, Order, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr,
    TransactionOptions, TransactionTrait,
    sea_query::{Expr, ExprTrait, OnConflict, Query, SelectStatement},
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};
use sea_orm_migration::MigratorTrait;
use tokio::sync::{Mutex, OwnedMutexGuard};

use self::{
    entity::{
        api_key, audit_chain, audit_event, authorization_request, change, connector,
        departed_connector, departed_revocation, environment, grant, grant_revocation,
        held_consent, installation, issuance, key_check, project, project_link, role_binding,
        signing_key, team,
    },
    links::{fetch_links, link_query},
    migration::Migrator,
    projects::find_project,
};
use crate::domain::{
    RegistryError, Resource, Result, audit,
    changes::ChangeScope,
    model::{
        Actor, ApiKeyRecord, AuditEvent, BindingSubject, Connector, NewAuditEvent, Project,
        ProjectLink, RoleBinding, StoredSecret, Team,
    },
    page::{AuditKey, LinkKey, PageRequest},
    store::{
        AuditFilter, AuditStore, ChangeStore, ConnectorEdit, ConnectorReseal, ConnectorStore,
        KeyCheck, KeyStore, LinkFilter, LinkStore, LinkTerms, ProjectStore, SecretReseal, Store,
        TeamStore,
    },
    types::{ConnectorId, ConnectorRef, ConnectorUid, KeyId, ProjectId, ProjectRef, TeamId},
};

/// How long a SQLite writer waits for another process's write lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(15);

/// A registry database.
#[derive(Clone, Debug)]
pub struct SeaStore {
    db: DatabaseConnection,
    /// Present on a SQLite file: the connection write transactions run on.
    writer: Option<DatabaseConnection>,
    /// Present on SQLite: one writer at a time within this process.
    write_gate: Option<Arc<Mutex<()>>>,
    /// Present on a SQLite file: the `Authorize` lookup read on the calling thread.
    inline: Option<Arc<inline::InlineReads>>,
    /// The newest revision of the change feed this process knows of (see `changes`).
    feed: Arc<changes::Feed>,
}

/// Opens the database at `url` (`sqlite://…` or `postgres://…`) without migrating it.
pub async fn connect(url: &str) -> Result<SeaStore> {
    let mut options = ConnectOptions::new(url.to_owned());
    // A pooled connection is checked with a ping only after it sat idle for half a minute (one a
    // server, proxy or firewall may have dropped): a ping on every checkout, the default, doubled
    // the round trips of `Authorize` (on SQLite, two more hops to its worker thread per call).
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        .test_before_acquire_if_idle_for(Duration::from_secs(30));
    let sqlite = url.starts_with("sqlite:");
    let in_memory = sqlite && (url.contains(":memory:") || url.contains("mode=memory"));
    if sqlite {
        // Every connection to an in-memory database is a new database: keep exactly one.
        options.max_connections(if in_memory { 1 } else { sqlite_readers() });
        sqlite_pragmas(&mut options, in_memory, READ_CACHE_KIB);
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        options.max_connections(16);
    } else {
        return Err(RegistryError::invalid(
            "database_url",
            "database URL must start with sqlite:// or postgres://",
        ));
    }
    // SQLite: write transactions get a connection of their own. A SQLite connection drops its
    // whole page cache when it starts a read after another connection wrote, so writers taking
    // turns over the pool each re-read the B-tree paths of a change from the file; the one writer
    // keeps them cached (measured with `registry_scale`: 1 900 – 2 300 attaches/s at a thousand
    // links instead of 1 400 – 1 600, and 0.85 – 0.97 of that at a million links instead of
    // 0.79 – 0.87). An in-memory database has only its one connection.
    let writer = if sqlite && !in_memory {
        let mut write_options = options.clone();
        write_options.max_connections(1).min_connections(1);
        sqlite_pragmas(&mut write_options, false, WRITE_CACHE_KIB);
        Some(
            Database::connect(write_options)
                .await
                .map_err(storage_error)?,
        )
    } else {
        None
    };
    let db = Database::connect(options).await.map_err(storage_error)?;
    Ok(SeaStore {
        db,
        writer,
        write_gate: sqlite.then(|| Arc::new(Mutex::new(()))),
        inline: (sqlite && !in_memory)
            .then(|| inline::InlineReads::for_url(url).map(Arc::new))
            .flatten(),
        feed: Arc::default(),
    })
}

/// Page cache of each SQLite connection, KiB. Small for readers: a reader drops its whole cache
/// at its first read after any write, and dropping 16 MiB took a millisecond (measured at a
/// million links, with attaches between the calls: `Authorize` p99 1.4 – 1.9 ms with 16 MiB,
/// 0.4 – 0.5 ms with 2 MiB; the pages come from the operating system's cache). The one writer
/// keeps its cache, but 2 MiB holds the B-tree paths it reuses: with 16 MiB it went on filling
/// with appended audit and change-feed pages (the soak's registry grew 0.17 MiB a minute for 30
/// minutes), for no gain (`registry_scale`, attaches/s at 1k and 1M links: 1 635 / 1 659 with
/// 16 MiB, 1 780 / 1 745 with 2 MiB).
const READ_CACHE_KIB: u32 = 2 * 1024;
const WRITE_CACHE_KIB: u32 = 2 * 1024;

/// SQLite read connections: two per core, between 2 and 8. A read is CPU work, and each
/// connection is one more cache to drop after a write: on two cores, at a million links, four
/// readers (2 MiB caches) answered 19 000 – 22 000 `Authorize` calls/s at 32 in flight in three
/// runs, eight 14 700 in one, two 15 600 – 15 800 in two.
fn sqlite_readers() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    (cores * 2).clamp(2, 8)
}

fn sqlite_pragmas(options: &mut ConnectOptions, in_memory: bool, cache_kib: u32) {
    let cache_size = format!("-{cache_kib}");
    options.map_sqlx_sqlite_opts(move |o| {
        let o = o
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .create_if_missing(true);
        if in_memory {
            o
        } else {
            // WAL, so readers never wait for the writer.
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .pragma("cache_size", cache_size.clone())
        }
    });
}

/// A write transaction, holding the SQLite write gate while it lives. It is the one way the
/// store changes anything: a mutation ends with [`WriteTxn::commit`], which appends the change's
/// audit event, and its change-feed row when it can alter an `Authorize` answer, in the same
/// transaction, so a change and its records commit together or not at all. Dropped without a
/// commit, it rolls back.
struct WriteTxn {
    txn: DatabaseTransaction,
    _gate: Option<OwnedMutexGuard<()>>,
    feed: Arc<changes::Feed>,
}

impl WriteTxn {
    /// Appends `event` and, for a change of `scope`, the next change-feed revision; commits.
    async fn commit(self, event: NewAuditEvent, scope: Option<ChangeScope>) -> Result<()> {
        let action = event.action;
        self.commit_as(event, scope.map(|scope| (action, scope)))
            .await
    }

    /// As [`WriteTxn::commit`], with the change-feed action given apart from the audit's (a grant
    /// replaced is audited as such, and on the feed a revocation of the old one's tokens).
    async fn commit_as(
        self,
        event: NewAuditEvent,
        change: Option<(&'static str, ChangeScope)>,
    ) -> Result<()> {
        self.commit_changes(event, change.into_iter().collect())
            .await
    }

    /// As [`WriteTxn::commit_as`], with any number of changes on the feed, in order.
    async fn commit_changes(
        self,
        event: NewAuditEvent,
        changes: Vec<(&'static str, ChangeScope)>,
    ) -> Result<()> {
        let mut revision = None;
        for (action, scope) in changes {
            revision = Some(changes::append(&self.txn, action, scope, event.time).await?);
        }
        audit_log::insert_audit(&self.txn, event).await?;
        self.txn.commit().await.map_err(storage_error)?;
        if let Some(revision) = revision {
            self.feed.advance(revision);
        }
        Ok(())
    }

    /// Commits a change that no audit row describes: bookkeeping that changes no value a caller
    /// can see (re-sealing secrets, a key's last use).
    async fn commit_unaudited(self) -> Result<()> {
        self.txn.commit().await.map_err(storage_error)
    }
}

impl SeaStore {
    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<()> {
        Migrator::up(&self.db, None)
            .await
            .map_err(|e| RegistryError::internal("applying migrations", e))?;
        // No ANALYZE / PRAGMA optimize on SQLite: measured at 100 000 links, its statistics make
        // the planner sort a large team's links for a first page (25 ms) instead of reading the
        // index in order (0.9 ms without them); the list queries are shaped for its heuristics.
        Ok(())
    }

    /// Applies the first `count` migrations only: the schema an older registry left, the
    /// starting point of upgrade tests.
    pub async fn migrate_first(&self, count: u32) -> Result<()> {
        Migrator::up(&self.db, Some(count))
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

    /// Writes a consistent copy of a SQLite database to `out` (`VACUUM INTO`: one read
    /// transaction, so writers carry on and the copy is one moment of the database). `out` must
    /// not exist. PostgreSQL databases are backed up with `pg_dump` (see the README).
    pub async fn backup_to(&self, out: &std::path::Path) -> Result<()> {
        if self.backend() != DbBackend::Sqlite {
            return Err(RegistryError::FailedPrecondition(
                "a PostgreSQL registry is backed up with pg_dump (see the README's recipe)".into(),
            ));
        }
        let out = out.to_str().ok_or_else(|| {
            RegistryError::invalid("out", "the backup's path must be valid UTF-8")
        })?;
        self.db
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "VACUUM INTO ?",
                [out.into()],
            ))
            .await
            .map_err(storage_error)?;
        Ok(())
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
            .writer
            .as_ref()
            .unwrap_or(&self.db)
            .begin_with_options(options)
            .await
            .map_err(storage_error)?;
        Ok(WriteTxn {
            txn,
            _gate: gate,
            feed: self.feed.clone(),
        })
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

#[async_trait]
impl Store for SeaStore {
    async fn ping(&self) -> Result<()> {
        self.db.ping().await.map_err(storage_error)
    }

    async fn key_check(&self) -> Result<Option<KeyCheck>> {
        Ok(key_check::Entity::find_by_id(1)
            .one(&self.db)
            .await
            .map_err(storage_error)?
            .map(|row| KeyCheck {
                sealed: row.sealed,
                token_id_key: row.token_id_key,
            }))
    }

    async fn put_token_id_key(&self, sealed: &str) -> Result<()> {
        // Two replicas starting at once both write one: the first stays.
        key_check::Entity::update_many()
            .col_expr(key_check::Column::TokenIdKey, Expr::value(sealed))
            .filter(key_check::Column::Id.eq(1))
            .filter(key_check::Column::TokenIdKey.is_null())
            .exec(&self.db)
            .await
            .map_err(storage_error)?;
        Ok(())
    }

    async fn put_key_check(&self, sealed: &str, now: DateTime<Utc>) -> Result<()> {
        // Two replicas starting on a new database both write one: the first stays.
        let row = key_check::ActiveModel::from(key_check::Model {
            id: 1,
            sealed: sealed.to_owned(),
            created_at: now,
            token_id_key: None,
        });
        match key_check::Entity::insert(row)
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(key_check::Column::Id)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
        {
            Ok(_) | Err(DbErr::RecordNotInserted) => Ok(()),
            Err(e) => Err(storage_error(e)),
        }
    }

    async fn holds_sealed(&self) -> Result<bool> {
        let db = &self.db;
        let counts = [
            connector::Entity::find().count(db).await,
            installation::Entity::find().count(db).await,
            grant::Entity::find().count(db).await,
            authorization_request::Entity::find().count(db).await,
            held_consent::Entity::find().count(db).await,
            grant_revocation::Entity::find().count(db).await,
            departed_connector::Entity::find().count(db).await,
            signing_key::Entity::find().count(db).await,
        ];
        for count in counts {
            if count.map_err(storage_error)? > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn reseal_everything(
        &self,
        reseal: SecretReseal,
        key_check: &KeyCheck,
        signing_keys: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<u64> {
        use std::collections::HashMap;
        let txn = self.begin_write().await?;
        let db = &txn.txn;
        for (kid, sealed) in signing_keys {
            signing_key::Entity::update_many()
                .col_expr(signing_key::Column::PrivateKey, Expr::value(sealed.clone()))
                .filter(signing_key::Column::Kid.eq(kid.as_str()))
                .exec(db)
                .await
                .map_err(storage_error)?;
        }
        let corrupt = |what: &'static str, e: serde_json::Error| rows::corrupt(what, e.to_string());
        let mut count = 0u64;
        let mut connectors = HashMap::new();
        for row in connector::Entity::find()
            .all(db)
            .await
            .map_err(storage_error)?
        {
            let connector = rows::connector(row)?;
            if !connector.secrets.is_empty() {
                let mut next = connector.clone();
                for (name, stored) in &mut next.secrets {
                    *stored = reseal(&connector, name, stored)?;
                    count += 1;
                }
                rows::connector_row(&next)
                    .into_active_model()
                    .reset_all()
                    .update(db)
                    .await
                    .map_err(storage_error)?;
            }
            connectors.insert(connector.id.to_string(), connector);
        }
        // Deleted connectors whose refresh tokens wait for revocation: their secrets and tokens.
        for row in departed_connector::Entity::find()
            .all(db)
            .await
            .map_err(storage_error)?
        {
            let departed = rows::connector(row.into())?;
            let mut next = departed.clone();
            for (name, stored) in &mut next.secrets {
                *stored = reseal(&departed, name, stored)?;
                count += 1;
            }
            departed_connector::ActiveModel::from(departed_connector::Model::from(
                rows::connector_row(&next),
            ))
            .reset_all()
            .update(db)
            .await
            .map_err(storage_error)?;
            connectors.insert(departed.id.to_string(), departed);
        }
        for row in departed_revocation::Entity::find()
            .all(db)
            .await
            .map_err(storage_error)?
        {
            let stored: StoredSecret =
                serde_json::from_str(&row.refresh_token).map_err(|e| corrupt("revocation", e))?;
            let departed = connectors.get(&row.connector_id).ok_or_else(|| {
                rows::corrupt("sealed value", format!("no connector {}", row.connector_id))
            })?;
            let next = reseal(departed, &row.sealing_name, &stored)?;
            count += 1;
            let mut active = departed_revocation::ActiveModel::from(row);
            active.refresh_token =
                sea_orm::Set(serde_json::to_string(&next).expect("a sealed secret serializes"));
            active.update(db).await.map_err(storage_error)?;
        }
        let of = |id: &str| {
            connectors
                .get(id)
                .ok_or_else(|| rows::corrupt("sealed value", format!("no connector {id}")))
        };
        for row in installation::Entity::find()
            .all(db)
            .await
            .map_err(storage_error)?
        {
            let mut secrets: std::collections::BTreeMap<String, StoredSecret> =
                serde_json::from_str(&row.secrets).map_err(|e| corrupt("installation", e))?;
            if secrets.is_empty() {
                continue;
            }
            let connector = of(&row.connector_id)?;
            for (name, stored) in &mut secrets {
                let sealed_as = format!("installation/{}/{name}", row.installation_id);
                *stored = reseal(connector, &sealed_as, stored)?;
                count += 1;
            }
            let mut active = installation::ActiveModel::from(row);
            active.secrets =
                sea_orm::Set(serde_json::to_string(&secrets).expect("a string map serializes"));
            active.update(db).await.map_err(storage_error)?;
        }
        for row in grant::Entity::find().all(db).await.map_err(storage_error)? {
            let g = rows::grant(row)?;
            let connector = of(g.key.connector_id.as_str())?;
            let mut next = g.clone();
            next.access_token = reseal(connector, &g.key.sealing_name("access"), &g.access_token)?;
            next.refresh_token = g
                .refresh_token
                .as_ref()
                .map(|t| reseal(connector, &g.key.sealing_name("refresh"), t))
                .transpose()?;
            count += 1 + u64::from(g.refresh_token.is_some());
            rows::grant_row(&next)
                .into_active_model()
                .reset_all()
                .update(db)
                .await
                .map_err(storage_error)?;
        }
        for row in authorization_request::Entity::find()
            .all(db)
            .await
            .map_err(storage_error)?
        {
            let p = rows::pending(row)?;
            let connector = of(p.key.connector_id.as_str())?;
            let mut next = p.clone();
            next.code_verifier = reseal(
                connector,
                &format!("pending/{}/verifier", p.state_hash),
                &p.code_verifier,
            )?;
            count += 1;
            rows::pending_row(&next)
                .into_active_model()
                .reset_all()
                .update(db)
                .await
                .map_err(storage_error)?;
        }
        for row in held_consent::Entity::find()
            .all(db)
            .await
            .map_err(storage_error)?
        {
            let h = rows::held(row)?;
            let connector = of(h.key.connector_id.as_str())?;
            let mut next = h.clone();
            next.access_token = reseal(connector, &h.sealing_name("access"), &h.access_token)?;
            next.refresh_token = h
                .refresh_token
                .as_ref()
                .map(|t| reseal(connector, &h.sealing_name("refresh"), t))
                .transpose()?;
            count += 1 + u64::from(h.refresh_token.is_some());
            rows::held_row(&next)
                .into_active_model()
                .reset_all()
                .update(db)
                .await
                .map_err(storage_error)?;
        }
        for row in grant_revocation::Entity::find()
            .all(db)
            .await
            .map_err(storage_error)?
        {
            let stored: StoredSecret =
                serde_json::from_str(&row.refresh_token).map_err(|e| corrupt("revocation", e))?;
            let connector = of(&row.connector_id)?;
            let next = reseal(connector, &row.sealing_name, &stored)?;
            count += 1;
            let mut active = grant_revocation::ActiveModel::from(row);
            active.refresh_token =
                sea_orm::Set(serde_json::to_string(&next).expect("a sealed secret serializes"));
            active.update(db).await.map_err(storage_error)?;
        }
        key_check::Entity::delete_many()
            .exec(db)
            .await
            .map_err(storage_error)?;
        key_check::ActiveModel::from(key_check::Model {
            id: 1,
            sealed: key_check.sealed.clone(),
            created_at: now,
            token_id_key: key_check.token_id_key.clone(),
        })
        .insert(db)
        .await
        .map_err(storage_error)?;
        txn.commit_unaudited().await?;
        Ok(count + signing_keys.len() as u64)
    }

    async fn sealed_connector(&self) -> Result<Option<Connector>> {
        connector::Entity::find()
            .filter(connector::Column::Secrets.ne("{}"))
            .one(&self.db)
            .await
            .map_err(storage_error)?
            .map(rows::connector)
            .transpose()
    }
}

#[async_trait]
impl crate::domain::store::SigningKeyStore for SeaStore {
    async fn insert_signing_key(&self, key: &crate::domain::model::SigningKey) -> Result<()> {
        signing_key::ActiveModel::from(signing_key::Model {
            kid: key.kid.clone(),
            alg: key.alg.clone(),
            private_key: key.sealed_private_key.clone(),
            public_jwk: key.public_jwk.to_string(),
            created_at: key.created_at,
        })
        .insert(&self.db)
        .await
        .map_err(storage_error)?;
        Ok(())
    }

    async fn signing_keys(&self) -> Result<Vec<crate::domain::model::SigningKey>> {
        signing_key::Entity::find()
            .order_by(signing_key::Column::CreatedAt, Order::Asc)
            .all(&self.db)
            .await
            .map_err(storage_error)?
            .into_iter()
            .map(|row| {
                Ok(crate::domain::model::SigningKey {
                    public_jwk: serde_json::from_str(&row.public_jwk)
                        .map_err(|e| rows::corrupt("stored signing key", e.to_string()))?,
                    kid: row.kid,
                    alg: row.alg,
                    sealed_private_key: row.private_key,
                    created_at: row.created_at,
                })
            })
            .collect()
    }
}
