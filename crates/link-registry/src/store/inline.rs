//! The `Authorize` lookup on a SQLite file, read on the calling thread.
//!
//! The SQLite driver under sea-orm runs every connection on a thread of its own and hands each
//! query there and each answer back: two thread wake-ups per lookup. Under load those wake-ups
//! (futex calls and context switches) were about 40 % of the registry's CPU, against about 1 % for
//! SQLite's own work on a lookup of a few key searches (measured with `perf` under h2load). So this
//! one hot, read-only statement runs on a small pool of plain SQLite connections instead, on the
//! task's own thread: a lookup holds it for microseconds, like a short lock. The connections are
//! `query_only`, each query is its own read transaction (WAL: it never waits for the writer and
//! sees every committed change), and a busy or failing read falls back to the driver's path, so
//! this only ever changes the cost of an answer, never the answer.

use std::{path::PathBuf, sync::Mutex, time::Duration};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

/// Idle connections kept for reuse; more are opened while more lookups run at once.
const KEEP: usize = 8;
/// How long a read may wait on a lock (WAL readers normally never do).
const BUSY: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub(super) struct InlineReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// One answer row of the lookup, as [`super::authorize`] reads it.
pub(super) type Row = super::authorize::AuthorizeRow;

impl InlineReads {
    /// Inline reads of the SQLite file behind `url` (`sqlite://PATH?…`), when the URL names a
    /// plain file.
    pub(super) fn for_url(url: &str) -> Option<Self> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next()?;
        if path.is_empty() || path.contains('%') || path.contains(":memory:") {
            return None;
        }
        Some(Self {
            path: PathBuf::from(path),
            idle: Mutex::default(),
        })
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY)?;
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -2048;")?;
        Ok(conn)
    }

    /// Runs `sql` with `values` and reads its one row, if any.
    pub(super) fn lookup(&self, sql: &str, values: [&str; 3]) -> rusqlite::Result<Option<Row>> {
        let taken = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match taken {
            Some(conn) => conn,
            None => self.open()?,
        };
        let answer = conn
            .prepare_cached(sql)
            .and_then(|mut statement| statement.query_row(values, read_row).optional());
        if answer.is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < KEEP {
                idle.push(conn);
            }
        }
        answer
    }
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        t_id: row.get("t_id")?,
        t_slug: row.get("t_slug")?,
        t_issuer: row.get("t_issuer")?,
        t_created_at: row.get("t_created_at")?,
        c_id: row.get("c_id")?,
        c_uid: row.get("c_uid")?,
        c_kind: row.get("c_kind")?,
        c_name: row.get("c_name")?,
        c_config: row.get("c_config")?,
        c_secrets: row.get("c_secrets")?,
        c_suspended: row.get("c_suspended")?,
        c_default_installation_id: row.get("c_default_installation_id")?,
        c_created_at: row.get("c_created_at")?,
        c_updated_at: row.get("c_updated_at")?,
        l_environments: row.get("l_environments")?,
        l_created_at: row.get("l_created_at")?,
        l_updated_at: row.get("l_updated_at")?,
        l_expires_at: row.get("l_expires_at")?,
        l_limits: row.get("l_limits")?,
        l_custom_environments: row.get("l_custom_environments")?,
        p_name: row.get("p_name")?,
    })
}
