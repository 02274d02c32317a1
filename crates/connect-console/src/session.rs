//! Sessions and pending sign-ins, kept in a database so that they survive a restart and are
//! shared by every replica pointed at the same one (SQLite by default, PostgreSQL for replicas).
//!
//! The browser holds a 256-bit random secret in its session cookie; the database holds only what
//! the secret hashes to (the row id) and the session sealed with AES-256-GCM under a key derived
//! from the same secret, the row id as associated data. A copy of the database therefore opens no
//! session and yields no ID token, refresh token or API key; the console itself needs no key
//! file. The per-session CSRF token is derived from the secret too, so it is never stored.
//!
//! Concurrency: rows are written whole (insert, replace of the sealed value, delete); the last
//! writer wins, which only matters when two replicas refresh the same person's ID token at the
//! same instant, and then both hold a valid token. Logging out deletes the row: every replica
//! refuses the cookie from then on. Idle and absolute limits are checked on every read against
//! `seen_at` (written at most once a minute) and `created_at`; expired rows are swept when new
//! sessions start.

use std::time::Duration;

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, however busy.
pub const ABSOLUTE: Duration = Duration::from_secs(8 * 60 * 60);
/// A sign-in must come back from the identity provider within this.
pub const SIGN_IN_WINDOW: Duration = Duration::from_secs(10 * 60);
/// `seen_at` is written at most this often.
const SEEN_RESOLUTION: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("a stored session does not open")]
    Sealed,
}

/// How the console speaks for a person to the registry.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Bearer {
    /// Signed in with the operator issuer.
    Person {
        id_token: String,
        refresh_token: Option<String>,
        /// Unix seconds.
        expires_at: i64,
    },
    /// Signed in with an API key (`--allow-key-login`).
    Key { key: String },
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Person { expires_at, .. } => f
                .debug_struct("Person")
                .field("id_token", &"[redacted]")
                .field("expires_at", expires_at)
                .finish(),
            Self::Key { .. } => f.debug_struct("Key").field("key", &"[redacted]").finish(),
        }
    }
}

/// A team the person may act in, as `WhoAmI` answered at sign-in.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TeamRole {
    pub team: String,
    pub role: String,
}

/// What a session holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionData {
    pub bearer: Bearer,
    /// As audit rows name the person (`user:<email>`, `key:<id>`).
    pub actor: String,
    pub teams: Vec<TeamRole>,
    /// The team pages act in (`connect-team`).
    pub team: Option<String>,
}

impl SessionData {
    /// The role in the current team.
    pub fn role(&self) -> Option<&str> {
        let team = self.team.as_deref()?;
        self.teams
            .iter()
            .find(|t| t.team == team)
            .map(|t| t.role.as_str())
    }
}

/// A session as read for one request.
#[derive(Clone)]
pub struct Session {
    pub id: String,
    pub data: SessionData,
    /// The secret's sealing key, to write the session back.
    key: [u8; 32],
    pub csrf: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

/// A sign-in on its way through the identity provider.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingSignIn {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

impl std::fmt::Debug for PendingSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingSignIn([redacted])")
    }
}

fn derive(label: &str, secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"connect-console\0");
    h.update(label.as_bytes());
    h.update(b"\0");
    h.update(secret);
    h.finalize().into()
}

fn decode_secret(cookie: &str) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(cookie).ok()?;
    (bytes.len() == 32).then_some(bytes)
}

fn new_secret() -> (String, Vec<u8>) {
    let secret: [u8; 32] = rand::random();
    (URL_SAFE_NO_PAD.encode(secret), secret.to_vec())
}

fn seal(key: &[u8; 32], aad: &str, plain: &[u8]) -> String {
    let cipher = Aes256Gcm::new(key.into());
    let nonce: [u8; 12] = rand::random();
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: aad.as_bytes(),
            },
        )
        .expect("AES-GCM seals any message of this size");
    let mut out = nonce.to_vec();
    out.extend(sealed);
    URL_SAFE_NO_PAD.encode(out)
}

fn open(key: &[u8; 32], aad: &str, sealed: &str) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    if bytes.len() < 12 {
        return None;
    }
    let (nonce, body) = bytes.split_at(12);
    Aes256Gcm::new(key.into())
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: aad.as_bytes(),
            },
        )
        .ok()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The session and sign-in tables.
#[derive(Clone, Debug)]
pub struct SessionStore {
    db: DatabaseConnection,
}

impl SessionStore {
    /// Opens (creating when needed) the tables at `url` (`sqlite://…?mode=rwc`, `postgres://…`).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let db = Database::connect(url).await?;
        let store = Self { db };
        for ddl in [
            "CREATE TABLE IF NOT EXISTS console_sessions (id VARCHAR(64) PRIMARY KEY, \
             sealed TEXT NOT NULL, created_at BIGINT NOT NULL, seen_at BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS console_sign_ins (id VARCHAR(64) PRIMARY KEY, \
             sealed TEXT NOT NULL, created_at BIGINT NOT NULL)",
        ] {
            store
                .db
                .execute_raw(Statement::from_string(store.backend(), ddl))
                .await?;
        }
        Ok(store)
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// `?` placeholders in the backend's spelling.
    fn statement(&self, sql: &str, values: Vec<Value>) -> Statement {
        let sql = match self.backend() {
            DbBackend::Postgres => {
                let mut out = String::new();
                let mut n = 0;
                for c in sql.chars() {
                    if c == '?' {
                        n += 1;
                        out.push_str(&format!("${n}"));
                    } else {
                        out.push(c);
                    }
                }
                out
            }
            _ => sql.to_owned(),
        };
        Statement::from_sql_and_values(self.backend(), sql, values)
    }

    async fn exec(&self, sql: &str, values: Vec<Value>) -> Result<u64, StoreError> {
        Ok(self
            .db
            .execute_raw(self.statement(sql, values))
            .await?
            .rows_affected())
    }

    /// Starts a session; answers with the cookie value.
    pub async fn create(&self, data: &SessionData) -> Result<String, StoreError> {
        let (cookie, secret) = new_secret();
        let id = hex_id(&secret);
        let key = derive("seal", &secret);
        let sealed = seal(
            &key,
            &id,
            &serde_json::to_vec(data).expect("a session serializes"),
        );
        let now = now();
        self.exec(
            "DELETE FROM console_sessions WHERE seen_at < ? OR created_at < ?",
            vec![
                (now - IDLE.as_secs() as i64).into(),
                (now - ABSOLUTE.as_secs() as i64).into(),
            ],
        )
        .await?;
        self.exec(
            "INSERT INTO console_sessions (id, sealed, created_at, seen_at) VALUES (?, ?, ?, ?)",
            vec![id.into(), sealed.into(), now.into(), now.into()],
        )
        .await?;
        Ok(cookie)
    }

    /// The live session of a cookie; `None` when it is unknown, ended or expired.
    pub async fn get(&self, cookie: &str) -> Result<Option<Session>, StoreError> {
        let Some(secret) = decode_secret(cookie) else {
            return Ok(None);
        };
        let id = hex_id(&secret);
        let row = self
            .db
            .query_one_raw(self.statement(
                "SELECT sealed, created_at, seen_at FROM console_sessions WHERE id = ?",
                vec![id.clone().into()],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sealed: String = row.try_get("", "sealed")?;
        let created_at: i64 = row.try_get("", "created_at")?;
        let seen_at: i64 = row.try_get("", "seen_at")?;
        let now = now();
        if now - seen_at > IDLE.as_secs() as i64 || now - created_at > ABSOLUTE.as_secs() as i64 {
            self.delete_id(&id).await?;
            return Ok(None);
        }
        let key = derive("seal", &secret);
        let data = open(&key, &id, &sealed)
            .and_then(|plain| serde_json::from_slice(&plain).ok())
            .ok_or(StoreError::Sealed)?;
        if now - seen_at >= SEEN_RESOLUTION {
            self.exec(
                "UPDATE console_sessions SET seen_at = ? WHERE id = ?",
                vec![now.into(), id.clone().into()],
            )
            .await?;
        }
        Ok(Some(Session {
            csrf: URL_SAFE_NO_PAD.encode(derive("csrf", &secret)),
            id,
            data,
            key,
        }))
    }

    /// Writes a changed session back (a refreshed token, another team).
    pub async fn save(&self, session: &Session) -> Result<(), StoreError> {
        let sealed = seal(
            &session.key,
            &session.id,
            &serde_json::to_vec(&session.data).expect("a session serializes"),
        );
        self.exec(
            "UPDATE console_sessions SET sealed = ? WHERE id = ?",
            vec![sealed.into(), session.id.clone().into()],
        )
        .await?;
        Ok(())
    }

    /// Ends a session everywhere.
    pub async fn delete(&self, session: &Session) -> Result<(), StoreError> {
        self.delete_id(&session.id).await
    }

    async fn delete_id(&self, id: &str) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM console_sessions WHERE id = ?",
            vec![id.to_owned().into()],
        )
        .await?;
        Ok(())
    }

    /// Records a sign-in on its way out; answers with the cookie value that binds it to the
    /// browser which started it.
    pub async fn begin_sign_in(&self, pending: &PendingSignIn) -> Result<String, StoreError> {
        let (cookie, secret) = new_secret();
        let id = hex_id(&secret);
        let key = derive("sign-in", &secret);
        let sealed = seal(
            &key,
            &id,
            &serde_json::to_vec(pending).expect("a sign-in serializes"),
        );
        let now = now();
        self.exec(
            "DELETE FROM console_sign_ins WHERE created_at < ?",
            vec![(now - SIGN_IN_WINDOW.as_secs() as i64).into()],
        )
        .await?;
        self.exec(
            "INSERT INTO console_sign_ins (id, sealed, created_at) VALUES (?, ?, ?)",
            vec![id.into(), sealed.into(), now.into()],
        )
        .await?;
        Ok(cookie)
    }

    /// Takes the sign-in of a browser's cookie (once: it is deleted).
    pub async fn take_sign_in(&self, cookie: &str) -> Result<Option<PendingSignIn>, StoreError> {
        let Some(secret) = decode_secret(cookie) else {
            return Ok(None);
        };
        let id = hex_id(&secret);
        let row = self
            .db
            .query_one_raw(self.statement(
                "SELECT sealed, created_at FROM console_sign_ins WHERE id = ?",
                vec![id.clone().into()],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        // Whoever deletes the row owns the sign-in: a replayed callback finds nothing.
        if self
            .exec(
                "DELETE FROM console_sign_ins WHERE id = ?",
                vec![id.clone().into()],
            )
            .await?
            == 0
        {
            return Ok(None);
        }
        let sealed: String = row.try_get("", "sealed")?;
        let created_at: i64 = row.try_get("", "created_at")?;
        if now() - created_at > SIGN_IN_WINDOW.as_secs() as i64 {
            return Ok(None);
        }
        Ok(open(&derive("sign-in", &secret), &id, &sealed)
            .and_then(|plain| serde_json::from_slice(&plain).ok()))
    }

    /// How many sessions are stored (for tests and the operator).
    pub async fn count(&self) -> Result<u64, StoreError> {
        let row = self
            .db
            .query_one_raw(self.statement("SELECT COUNT(*) AS n FROM console_sessions", vec![]))
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0) as u64)
    }
}

fn hex_id(secret: &[u8]) -> String {
    let digest = derive("id", secret);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> SessionData {
        SessionData {
            bearer: Bearer::Key {
                key: "cnk_secret".into(),
            },
            actor: "key:key_1".into(),
            teams: vec![TeamRole {
                team: "team_a".into(),
                role: "admin".into(),
            }],
            team: Some("team_a".into()),
        }
    }

    #[tokio::test]
    async fn a_session_opens_with_its_cookie_only_and_ends_on_delete() {
        let dir = tempfile_dir();
        let store = SessionStore::open(&format!("sqlite://{dir}/s.db?mode=rwc"))
            .await
            .unwrap();
        let cookie = store.create(&data()).await.unwrap();
        let session = store.get(&cookie).await.unwrap().unwrap();
        assert_eq!(session.data, data());
        let shown = format!("{session:?}");
        assert!(!shown.contains("cnk_secret") && !shown.contains(&session.csrf));
        // Another cookie, a malformed one: nothing.
        let (other, _) = new_secret();
        assert!(store.get(&other).await.unwrap().is_none());
        assert!(store.get("not base64!").await.unwrap().is_none());
        // The database holds neither the secret nor the key.
        let rows = store
            .db
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT sealed FROM console_sessions",
            ))
            .await
            .unwrap();
        let sealed: String = rows[0].try_get("", "sealed").unwrap();
        assert!(!sealed.contains("cnk_secret") && !sealed.contains(&cookie));
        store.delete(&session).await.unwrap();
        assert!(store.get(&cookie).await.unwrap().is_none());
        // Idle for longer than the limit, or older than the absolute one: gone.
        for (column, age) in [("seen_at", IDLE), ("created_at", ABSOLUTE)] {
            let cookie = store.create(&data()).await.unwrap();
            assert!(store.get(&cookie).await.unwrap().is_some());
            store
                .exec(
                    &format!("UPDATE console_sessions SET {column} = ?"),
                    vec![(now() - age.as_secs() as i64 - 1).into()],
                )
                .await
                .unwrap();
            assert!(store.get(&cookie).await.unwrap().is_none(), "{column}");
        }
        assert_eq!(store.count().await.unwrap(), 0);
        // A sign-in is taken once.
        let pending = PendingSignIn {
            state: "s".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
        };
        let sign_in = store.begin_sign_in(&pending).await.unwrap();
        assert_eq!(
            store.take_sign_in(&sign_in).await.unwrap().unwrap().state,
            "s"
        );
        assert!(store.take_sign_in(&sign_in).await.unwrap().is_none());
    }

    fn tempfile_dir() -> String {
        let dir = std::env::temp_dir().join(format!("console-{:x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.display().to_string()
    }
}
