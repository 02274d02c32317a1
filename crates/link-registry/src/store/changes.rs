//! The change feed's storage. Rows are appended by [`WriteTxn::commit`](super::WriteTxn::commit)
//! inside the change's own transaction. Revisions must become visible in increasing order, or a
//! watcher that has seen revision 11 could miss a 10 committed after it: SQLite has one writer at a
//! time anyway, and on PostgreSQL every appending transaction first takes one transaction-scoped
//! advisory lock, so appends commit in revision order. A commit then wakes this process's
//! watchers through [`Feed`]; on PostgreSQL it also sends `NOTIFY connect_changes`, which a
//! `LISTEN`ing task of every replica turns into the same wake-up, so a watcher on one replica sees
//! another replica's changes at once. Watchers read the rows themselves (a wake-up only says "look
//! again"), so a lost notification delays an event until the watcher's next poll, never loses it.

use tokio::sync::{OnceCell, watch};

use super::*;
use crate::domain::changes::Change;

/// The `NOTIFY` channel of committed changes.
const CHANNEL: &str = "connect_changes";
/// The advisory lock that orders appends on PostgreSQL.
const APPEND_LOCK: i64 = 0x0063_6f6e_6e65_6374; // "connect"

/// The newest revision this process knows of, for waking watchers.
#[derive(Debug)]
pub(super) struct Feed {
    head: watch::Sender<i64>,
    /// Started on the first subscription, on PostgreSQL only.
    listener: OnceCell<()>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            head: watch::Sender::new(0),
            listener: OnceCell::new(),
        }
    }
}

impl Feed {
    pub(super) fn advance(&self, revision: i64) {
        self.head.send_if_modified(|head| {
            let newer = revision > *head;
            if newer {
                *head = revision;
            }
            newer
        });
    }
}

/// Serializes the transactions that append to the change feed or the audit chain (PostgreSQL;
/// SQLite writers are serialized already). Held until the transaction ends; taking it twice in
/// one transaction is free.
pub(super) async fn lock_appends(txn: &DatabaseTransaction) -> Result<()> {
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({APPEND_LOCK})"))
            .await
            .map_err(storage_error)?;
    }
    Ok(())
}

/// Appends the change row and answers with its revision.
pub(super) async fn append(
    txn: &DatabaseTransaction,
    action: &str,
    scope: ChangeScope,
    at: DateTime<Utc>,
) -> Result<i64> {
    let postgres = txn.get_database_backend() == DbBackend::Postgres;
    lock_appends(txn).await?;
    let (connector_id, connector_uid) = match scope.connector {
        Some((id, uid)) => (Some(id.to_string()), Some(uid.to_string())),
        None => (None, None),
    };
    let row = change::ActiveModel {
        action: sea_orm::Set(action.to_owned()),
        team_id: sea_orm::Set(scope.team_id.to_string()),
        connector_id: sea_orm::Set(connector_id),
        connector_uid: sea_orm::Set(connector_uid),
        project_id: sea_orm::Set(scope.project_id.map(|p| p.to_string())),
        installation_id: sea_orm::Set(scope.installation_id),
        subject: sea_orm::Set(scope.subject),
        created_at: sea_orm::Set(at),
        ..Default::default()
    };
    let revision = change::Entity::insert(row)
        .exec(txn)
        .await
        .map_err(storage_error)?
        .last_insert_id;
    if postgres {
        // Delivered to every listener when (and only if) the transaction commits.
        txn.execute_unprepared(&format!("NOTIFY {CHANNEL}, '{revision}'"))
            .await
            .map_err(storage_error)?;
    }
    Ok(revision)
}

impl SeaStore {
    /// Follows `NOTIFY connect_changes` of every replica until the process ends, reconnecting
    /// after failures.
    fn spawn_listener(&self) {
        let pool = self.db.get_postgres_connection_pool().clone();
        let feed = self.feed.clone();
        tokio::spawn(async move {
            loop {
                let Err(e) = listen(&pool, &feed).await;
                tracing::warn!(error = %e, "change feed listener failed; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

async fn listen(
    pool: &sea_orm::sqlx::PgPool,
    feed: &Feed,
) -> std::result::Result<std::convert::Infallible, sea_orm::sqlx::Error> {
    let mut listener = sea_orm::sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    loop {
        let notification = listener.recv().await?;
        if let Ok(revision) = notification.payload().parse::<i64>() {
            feed.advance(revision);
        }
    }
}

fn change_of(row: change::Model) -> Result<Change> {
    const T: &str = "stored change";
    let corrupt = |e: String| rows::corrupt(T, e);
    let connector = match (row.connector_id, row.connector_uid) {
        (Some(id), Some(uid)) => Some((
            ConnectorId::parse(&id).map_err(corrupt)?,
            ConnectorUid::parse(&uid).map_err(corrupt)?,
        )),
        _ => None,
    };
    Ok(Change {
        revision: row.revision,
        action: row.action,
        scope: ChangeScope {
            team_id: TeamId::parse(&row.team_id).map_err(corrupt)?,
            connector,
            project_id: row
                .project_id
                .map(|p| ProjectId::parse(&p).map_err(corrupt))
                .transpose()?,
            installation_id: row.installation_id,
            subject: row.subject,
        },
    })
}

#[async_trait]
impl ChangeStore for SeaStore {
    async fn changes_after(&self, revision: i64, limit: u64) -> Result<Vec<Change>> {
        let found = change::Entity::find()
            .filter(change::Column::Revision.gt(revision))
            .order_by(change::Column::Revision, Order::Asc)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(storage_error)?;
        found.into_iter().map(change_of).collect()
    }

    async fn revisions(&self) -> Result<(i64, Option<i64>)> {
        let newest = change::Entity::find()
            .order_by(change::Column::Revision, Order::Desc)
            .one(&self.db)
            .await
            .map_err(storage_error)?;
        let oldest = change::Entity::find()
            .order_by(change::Column::Revision, Order::Asc)
            .one(&self.db)
            .await
            .map_err(storage_error)?;
        Ok((newest.map_or(0, |c| c.revision), oldest.map(|c| c.revision)))
    }

    async fn subscribe(&self) -> watch::Receiver<i64> {
        if self.backend() == DbBackend::Postgres {
            self.feed
                .listener
                .get_or_init(|| async { self.spawn_listener() })
                .await;
        }
        self.feed.head.subscribe()
    }
}
