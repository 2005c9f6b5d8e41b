//! The blob store's SQLite format: what stores were before the blob log
//! (schema versions 1 and 2), and what a backup is.
//!
//! One table, `blobs(idx, received_at, blob)`:
//! - `idx`: `INTEGER PRIMARY KEY`, from 1, assigned in order, never
//!   reused: schema version 2 records the highest index ever assigned in
//!   `meta(name = 'high_water')` (version 1 used `AUTOINCREMENT`);
//! - `received_at`: unix seconds;
//! - `blob`: exactly [`SEALED_BLOB_LEN`](cwtch_proto::group::SEALED_BLOB_LEN)
//!   bytes (a `CHECK` constraint).
//!
//! The server no longer keeps its blobs here (see [`super::log`]): a store
//! found in this format is moved into a blob log when the server opens its
//! home ([`super::BlobStore::import_sqlite`]), `server backup` writes one
//! (`server restore` reads it), and the ingest benchmarks measure it as
//! their per-row baseline.

use std::ops::{ControlFlow, Range};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::{Blob, Error, MAX_READ_LIMIT, Result, unix_now};

/// `PRAGMA application_id` of a blob store ("CwBS").
const APPLICATION_ID: i32 = 0x4377_4253;
/// `PRAGMA user_version`: the schema version of new stores (2: `idx`
/// without `AUTOINCREMENT`, and the `meta` table).
const SCHEMA_VERSION: i32 = 2;
/// The first schema version, still opened: `AUTOINCREMENT`, no `meta`.
const SCHEMA_VERSION_1: i32 = 1;
/// Page size for new databases. A row is a little over 2 KiB; ingest is
/// bound by the bytes each commit syncs, and with 4 KiB pages each row
/// takes a page of its own (4 KiB written per 2 KiB blob), with 16 KiB
/// pages seven rows share one (2.3 KiB per blob), with 64 KiB pages 31
/// (2.1 KiB per blob, and less CPU per row). A commit of a single blob
/// writes a few whole pages either way; on the machine we measured, a sync
/// costs about 4 ms whether it writes 16 or 256 KiB.
const PAGE_SIZE: u32 = 64 * 1024;
/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page cache of the writer connection, in KiB (SQLite's default is 2 MiB,
/// less than one batch of 1024 blobs, which would spill mid-transaction).
const WRITER_CACHE_KIB: i64 = 32 * 1024;
/// SQLite's automatic checkpoint threshold, in pages (16 MiB of 64 KiB
/// pages).
const AUTOCHECKPOINT_PAGES: u32 = 256;

fn to_sql_int(value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::IndicesExhausted)
}

fn from_sql_int(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::Integrity(format!("negative value {value}")))
}

/// Applies the per-connection settings every connection needs.
fn configure_common(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(())
}

/// The blob table of schema version 2.
const BLOBS_TABLE: &str = "CREATE TABLE blobs (
    idx INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    blob BLOB NOT NULL CHECK (length(blob) = 2048)
)";
/// The blob table of schema version 1.
const BLOBS_TABLE_1: &str = "CREATE TABLE blobs (
    idx INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    blob BLOB NOT NULL CHECK (length(blob) = 2048)
)";
/// Schema version 2's record of the highest index ever assigned.
const META_TABLE: &str = "CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID";

/// Checks that `conn` holds a blob store of a version we know, with that
/// version's tables (a file that only claims the version, say a crafted
/// backup, would otherwise reuse indices or stop retention); returns the
/// version.
fn check_identity(conn: &Connection) -> Result<i32> {
    let app_id: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    if app_id != APPLICATION_ID {
        return Err(Error::NotABlobStore { found: app_id });
    }
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let expected: &[(&str, &str)] = match version {
        SCHEMA_VERSION => &[("blobs", BLOBS_TABLE), ("meta", META_TABLE)],
        SCHEMA_VERSION_1 => &[("blobs", BLOBS_TABLE_1)],
        _ => return Err(Error::UnsupportedVersion { found: version }),
    };
    let words = |sql: &str| sql.split_whitespace().collect::<Vec<_>>().join(" ");
    for (name, create) in expected {
        let found: Option<String> = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        if found.as_deref().map(words) != Some(words(create)) {
            return Err(Error::Integrity(format!(
                "table {name} is not the one schema version {version} has"
            )));
        }
    }
    Ok(version)
}

/// The highest index ever assigned (0 if none), in a blob store of either
/// schema version already checked to be of `version`: the largest of the
/// largest stored index, the recorded high-water mark (version 2) and
/// SQLite's `AUTOINCREMENT` counter (version 1).
///
/// While blobs are stored, the newest of them is the head (pruning takes
/// the oldest first and the newest only with all the rest): a recorded
/// mark above it, or below zero, is refused as corruption.
fn head_of(conn: &Connection, version: i32) -> Result<u64> {
    // One statement: one snapshot, even beside a prune that removes all.
    let recorded = if version == SCHEMA_VERSION_1 {
        "(SELECT seq FROM sqlite_sequence WHERE name = 'blobs')"
    } else {
        "(SELECT value FROM meta WHERE name = 'high_water')"
    };
    let (recorded, max): (Option<i64>, Option<i64>) = conn.query_row(
        &format!("SELECT {recorded}, (SELECT max(idx) FROM blobs)"),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let recorded = recorded.map(from_sql_int).transpose()?.unwrap_or(0);
    match max.map(from_sql_int).transpose()? {
        Some(max) if recorded > max => Err(Error::Integrity(format!(
            "the recorded head {recorded} is past the newest blob {max}"
        ))),
        Some(max) => Ok(max),
        None => Ok(recorded),
    }
}

/// The oldest stored blob: its index and when it was received.
fn query_oldest(conn: &Connection) -> Result<Option<(u64, u64)>> {
    let row: Option<(i64, i64)> = conn
        .prepare_cached("SELECT idx, received_at FROM blobs ORDER BY idx LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match row {
        None => Ok(None),
        // A clock before 1970 would have been stored as 0; never negative.
        Some((idx, at)) => Ok(Some((from_sql_int(idx)?, u64::try_from(at).unwrap_or(0)))),
    }
}

/// Calls `f` with the index, receive time and blob of up to `limit` (at
/// most [`MAX_READ_LIMIT`]) rows with index greater than `cursor`, in index
/// order; returns how many it saw.
fn visit_after<F>(conn: &Connection, cursor: u64, limit: usize, mut f: F) -> Result<usize>
where
    F: FnMut(u64, u64, &Blob) -> ControlFlow<()>,
{
    let limit = limit.min(MAX_READ_LIMIT);
    if limit == 0 {
        return Ok(0);
    }
    // Past the largest index SQLite can hold there is nothing to read.
    let Ok(cursor) = i64::try_from(cursor) else {
        return Ok(0);
    };
    // The limit is part of the SQL text, not a parameter: SQLite re-prepares
    // a statement whose LIMIT parameter is rebound, on every query (a
    // fan-out to 1,000 subscribers spent most of its store time doing so).
    // `limit` is at most MAX_READ_LIMIT: few distinct statements to cache.
    let sql = format!(
        "SELECT idx, received_at, blob FROM blobs WHERE idx > ?1 ORDER BY idx LIMIT {limit}"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![cursor])?;
    let mut seen = 0;
    while let Some(row) = rows.next()? {
        let index = from_sql_int(row.get(0)?)?;
        // A clock before 1970 would have been stored as 0; never negative.
        let at = u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0);
        let bytes = row
            .get_ref(2)?
            .as_blob()
            .map_err(|_| Error::CorruptBlob { index, len: 0 })?;
        let blob: &Blob = bytes.try_into().map_err(|_| Error::CorruptBlob {
            index,
            len: bytes.len(),
        })?;
        seen += 1;
        if f(index, at, blob).is_break() {
            break;
        }
    }
    Ok(seen)
}

fn read_after_vec(conn: &Connection, cursor: u64, limit: usize) -> Result<Vec<(u64, Box<Blob>)>> {
    let mut out = Vec::with_capacity(limit.min(MAX_READ_LIMIT));
    visit_after(conn, cursor, limit, |index, _, blob| {
        out.push((index, Box::new(*blob)));
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// A blob store in the SQLite format (see the module's documentation).
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    head: u64,
    oldest: Option<u64>,
    commits: u64,
    appended: u64,
    last_commit: Duration,
    path: std::path::PathBuf,
    /// The schema version of the file (1 or [`SCHEMA_VERSION`]).
    version: i32,
}

impl SqliteStore {
    /// Opens the store at `path`, creating it if there is no file there.
    ///
    /// Fails with [`Error::NotABlobStore`] or [`Error::UnsupportedVersion`]
    /// for a database that is not one of ours, and with [`Error::Sqlite`]
    /// for a file that is not a database.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure_common(&conn)?;

        let app_id: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
        let objects: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        if app_id == 0 && objects == 0 {
            // A new, empty database: the page size can only be chosen now.
            conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        }
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::NoWal { mode });
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        // Checkpoint (inside commits) about every 16 MiB of WAL, and cut the WAL back to
        // 64 MiB after a checkpoint so an ingest burst does not leave a huge
        // file behind.
        conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)?;
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;

        if app_id == 0 && objects == 0 {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(&format!("{BLOBS_TABLE}; {META_TABLE};"))?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        }
        Self::checked(conn, path)
    }

    /// The store on `conn`, once it is checked to be one of ours.
    fn checked(conn: Connection, path: &Path) -> Result<Self> {
        let version = check_identity(&conn)?;
        let head = head_of(&conn, version)?;
        let oldest = query_oldest(&conn)?.map(|(idx, _)| idx);
        Ok(Self {
            conn,
            head,
            oldest,
            commits: 0,
            appended: 0,
            last_commit: Duration::ZERO,
            path: path.to_owned(),
            version,
        })
    }

    /// Opens an existing store without writing to it (a backup being
    /// restored).
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure_common(&conn)?;
        Self::checked(conn, path)
    }

    /// Makes later commits skip their sync (a backup being written, synced
    /// once at its end).
    pub fn without_sync(&self) -> Result<()> {
        self.conn.pragma_update(None, "synchronous", "OFF")?;
        Ok(())
    }

    /// Deletes every row below `index` (a backup whose source pruned them
    /// while it was being copied).
    pub fn delete_below(&mut self, index: u64) -> Result<()> {
        self.conn.execute(
            "DELETE FROM blobs WHERE idx < ?1",
            params![to_sql_int(index)?],
        )?;
        self.oldest = self
            .oldest
            .map(|o| o.max(index))
            .filter(|&o| o <= self.head);
        Ok(())
    }

    /// Switches the file from WAL to a rollback journal, so that it stands
    /// alone (no `-wal` or `-shm` beside it).
    pub fn standalone(&self) -> Result<()> {
        let _: String = self
            .conn
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
        Ok(())
    }

    /// The path the store was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `blobs` in one transaction (one `fsync`), received now.
    /// Returns their indices; an empty batch returns an empty range at
    /// `head + 1` and writes nothing.
    pub fn append_batch(&mut self, blobs: &[Blob]) -> Result<Range<u64>> {
        self.append_iter(blobs.iter(), unix_now())
    }

    /// [`append_batch`](Self::append_batch) with an explicit receive time
    /// (unix seconds).
    pub fn append_batch_at(&mut self, blobs: &[Blob], received_at: u64) -> Result<Range<u64>> {
        self.append_iter(blobs.iter(), received_at)
    }

    /// The one write path: all of `blobs` in one transaction.
    fn append_iter<'a, I>(&mut self, blobs: I, received_at: u64) -> Result<Range<u64>>
    where
        I: IntoIterator<Item = &'a Blob>,
    {
        let first = self.head.checked_add(1).ok_or(Error::IndicesExhausted)?;
        let received_at = i64::try_from(received_at).unwrap_or(i64::MAX);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut next = first;
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO blobs (idx, received_at, blob) VALUES (?1, ?2, ?3)")?;
            for blob in blobs {
                insert.execute(params![to_sql_int(next)?, received_at, &blob[..]])?;
                next = next.checked_add(1).ok_or(Error::IndicesExhausted)?;
            }
        }
        if next == first {
            // Nothing to write: roll back (no fsync).
            drop(tx);
            return Ok(first..first);
        }
        let started = std::time::Instant::now();
        tx.commit()?;
        self.last_commit = started.elapsed();
        self.head = next - 1;
        self.oldest.get_or_insert(first);
        self.commits += 1;
        self.appended += next - first;
        Ok(first..next)
    }

    /// How long the last append's `COMMIT` took: writing its pages to the
    /// WAL and syncing it (the fsync that makes the batch durable).
    pub fn last_commit_time(&self) -> Duration {
        self.last_commit
    }

    /// Up to `limit` (at most [`MAX_READ_LIMIT`]) blobs with index greater
    /// than `cursor`, oldest first. Page by passing the last index
    /// returned as the next cursor; an empty result means caught up.
    pub fn read_after(&self, cursor: u64, limit: usize) -> Result<Vec<(u64, Box<Blob>)>> {
        read_after_vec(&self.conn, cursor, limit)
    }

    /// The index of the last blob ever stored; 0 if none ever was. The
    /// first index is 1.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The index of the oldest blob stored, if any.
    pub fn oldest(&self) -> Option<u64> {
        self.oldest
    }

    /// Append transactions committed since this store was opened.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Calls `f` with the index, receive time and blob of up to `limit`
    /// (at most [`MAX_READ_LIMIT`]) rows after `cursor`, in order; returns
    /// how many it saw.
    pub fn visit_rows_after<F>(&self, cursor: u64, limit: usize, mut f: F) -> Result<usize>
    where
        F: FnMut(u64, u64, &Blob),
    {
        visit_after(&self.conn, cursor, limit, |i, at, b| {
            f(i, at, b);
            ControlFlow::Continue(())
        })
    }

    /// Inserts rows given with their index and receive time, in one
    /// transaction: each index must be past the head and above the one
    /// before (a backup copies a blob log this way, gaps and all refused).
    pub fn insert_rows<'a, I>(&mut self, rows: I) -> Result<()>
    where
        I: IntoIterator<Item = (u64, u64, &'a Blob)>,
    {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut head = self.head;
        let mut first = None;
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO blobs (idx, received_at, blob) VALUES (?1, ?2, ?3)")?;
            for (index, at, blob) in rows {
                if index <= head || (head != self.head && index != head + 1) {
                    return Err(Error::Integrity(format!(
                        "row {index} does not follow {head}"
                    )));
                }
                let at = i64::try_from(at).unwrap_or(i64::MAX);
                insert.execute(params![to_sql_int(index)?, at, &blob[..]])?;
                first.get_or_insert(index);
                head = index;
            }
        }
        if self.version != SCHEMA_VERSION_1 {
            tx.prepare_cached(
                "INSERT INTO meta (name, value) VALUES ('high_water', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
            )?
            .execute(params![to_sql_int(head)?])?;
        }
        tx.commit()?;
        if let Some(first) = first {
            self.oldest.get_or_insert(first);
            self.head = head;
        }
        Ok(())
    }

    /// Records `high_water` as the highest index ever assigned (a backup of
    /// a log whose blobs were all pruned still knows where it was).
    pub fn set_high_water(&mut self, high_water: u64) -> Result<()> {
        if high_water <= self.head {
            return Ok(());
        }
        self.conn.execute(
            "INSERT INTO meta (name, value) VALUES ('high_water', ?1)
             ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
            params![to_sql_int(high_water)?],
        )?;
        self.head = high_water;
        Ok(())
    }

    /// Runs `PRAGMA integrity_check` and checks the store's own invariants
    /// (the stored blobs are exactly `oldest..=head`, all of the right
    /// size). Reads the whole database.
    pub fn integrity_check(&self) -> Result<()> {
        integrity_check(&self.conn, self.head)
    }

    /// Writes the WAL back into the database file and truncates it.
    pub fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

fn integrity_check(conn: &Connection, head: u64) -> Result<()> {
    let mut problems = Vec::new();
    {
        let mut stmt = conn.prepare("PRAGMA integrity_check(20)")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let line: String = row.get(0)?;
            if line != "ok" {
                problems.push(line);
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Integrity(problems.join("; ")));
    }
    let (count, min, max, wrong): (i64, Option<i64>, Option<i64>, i64) = conn.query_row(
        "SELECT count(*), min(idx), max(idx),
                coalesce(sum(length(blob) != 2048), 0) FROM blobs",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    if wrong != 0 {
        return Err(Error::Integrity(format!("{wrong} blobs of the wrong size")));
    }
    if let (Some(min), Some(max)) = (min, max) {
        if max - min + 1 != count {
            return Err(Error::Integrity(format!(
                "{count} blobs between {min} and {max}: not contiguous"
            )));
        }
        if from_sql_int(max)? != head {
            return Err(Error::Integrity(format!(
                "the newest blob is {max}, the head {head}"
            )));
        }
    }
    Ok(())
}
