#![allow(clippy::type_complexity)]
//! PLACEHOLDER, replaced by the encrypted store on the `profile` branch:
//! same API, no encryption. Only here so the peer daemon compiles while the
//! real store is being written.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use zeroize::Zeroizing;

/// Record tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// Identity, name, settings.
    Meta,
    /// Contacts.
    Contacts,
    /// Message history.
    Messages,
    /// Groups.
    Groups,
    /// Outgoing queue.
    Outbox,
    /// Known servers.
    Servers,
    /// Recent sealed blobs.
    Blobs,
}

/// Store errors.
#[derive(Debug)]
pub enum StoreError {
    /// SQLite failed.
    Sqlite(rusqlite::Error),
    /// Wrong password.
    WrongPassword,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Sqlite(e) => write!(f, "storage error: {e}"),
            StoreError::WrongPassword => f.write_str("wrong password"),
        }
    }
}
impl std::error::Error for StoreError {}
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

/// The profile store.
pub struct ProfileStore {
    db: Mutex<Connection>,
}

/// A transaction.
pub struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
}

impl Tx<'_> {
    /// Put.
    pub fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT OR REPLACE INTO records(t, k, v) VALUES (?1, ?2, ?3)",
            params![table as i64, key, value],
        )?;
        Ok(())
    }
    /// Delete.
    pub fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), StoreError> {
        self.tx.execute(
            "DELETE FROM records WHERE t = ?1 AND k = ?2",
            params![table as i64, key],
        )?;
        Ok(())
    }
}

impl ProfileStore {
    fn init(path: &Path) -> Result<Self, StoreError> {
        let db = Connection::open(path)?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS records(t INTEGER, k BLOB, v BLOB, PRIMARY KEY(t, k));",
        )?;
        Ok(ProfileStore { db: Mutex::new(db) })
    }
    /// Create.
    pub fn create(path: &Path, _password: &[u8]) -> Result<Self, StoreError> {
        Self::init(path)
    }
    /// Open.
    pub fn open(path: &Path, _password: &[u8]) -> Result<Self, StoreError> {
        Self::init(path)
    }
    /// Put.
    pub fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.transaction(|tx| tx.put(table, key, value))
    }
    /// Get.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        Ok(db
            .query_row(
                "SELECT v FROM records WHERE t = ?1 AND k = ?2",
                params![table as i64, key],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()?
            .map(Zeroizing::new))
    }
    /// Delete.
    pub fn delete(&self, table: Table, key: &[u8]) -> Result<(), StoreError> {
        self.transaction(|tx| tx.delete(table, key))
    }
    /// Scan.
    pub fn scan(&self, table: Table) -> Result<Vec<(Vec<u8>, Zeroizing<Vec<u8>>)>, StoreError> {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = db.prepare("SELECT k, v FROM records WHERE t = ?1")?;
        let rows = stmt.query_map(params![table as i64], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                Zeroizing::new(r.get::<_, Vec<u8>>(1)?),
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
    /// Transaction.
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let tx = db.transaction()?;
        let mut t = Tx { tx };
        let out = f(&mut t)?;
        t.tx.commit()?;
        Ok(out)
    }
}
