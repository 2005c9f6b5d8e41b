//! The server's durable blob store (SQLite, WAL, group commit).
//!
//! A Cwtch server keeps opaque sealed blobs, each exactly
//! [`SEALED_BLOB_LEN`] bytes, and hands them out by index. This module is
//! the one place they are written to disk.
//!
//! # What is stored
//! One SQLite table, `blobs(idx, received_at, blob)`:
//! - `idx`: `INTEGER PRIMARY KEY`, starting at 1, assigned in order by the
//!   store (never by SQLite), never reused, even after every blob has been
//!   pruned: each prune transaction also records the highest index ever
//!   assigned in `meta(name = 'high_water')`, and opening a store takes the
//!   larger of that and the largest stored index. (Schema version 1 used
//!   `AUTOINCREMENT`, whose counter row in `sqlite_sequence` every commit
//!   rewrote: one more 64 KiB page per commit. Stores of version 1 are
//!   still opened, and keep their counter.)
//! - `received_at`: unix seconds when the server took the blob, for
//!   age-based retention;
//! - `blob`: exactly [`SEALED_BLOB_LEN`] bytes (also a `CHECK` constraint).
//!
//! Nothing else: the server never stores who posted, from where, or any
//! per-group data.
//!
//! Because indices are assigned consecutively and retention always removes
//! the oldest blobs first, the stored blobs are always the contiguous range
//! `oldest..=head`; [`Stats`] relies on this and
//! [`BlobStore::integrity_check`] verifies it.
//!
//! # Durability
//! The database is in WAL mode with `synchronous=FULL`: every commit syncs
//! the write-ahead log before it returns, so a blob acknowledged after its
//! commit survives `kill -9` and power loss (as far as the disk honours
//! `fsync`). `NORMAL` would only sync at checkpoints, and a power loss could
//! then lose acknowledged posts.
//!
//! Durable writes cost one `fsync` per transaction, so throughput comes from
//! group commit: [`BlobStore::append_batch`] writes a whole batch in one
//! transaction, and [`GroupCommitter`] gathers concurrent posts from async
//! tasks into such batches on a dedicated writer thread.
//!
//! # Privacy at rest
//! `secure_delete` is on, so pruned blobs are overwritten with zeros in the
//! database pages rather than left in free pages.
//!
//! # Reading
//! [`BlobReader`] is a second, read-only connection: WAL lets it read while
//! the writer commits. All reads are bounded by [`MAX_READ_LIMIT`] blobs.
//! [`ReadThread`] runs one on a thread of its own, for async code that must
//! not wait for the disk; [`GroupCommitter::read_recent`] answers from the
//! last blobs committed, kept in memory.
//! A reader pages with `read_after(cursor, limit)`; when blobs after the
//! cursor were pruned, the first index returned is more than `cursor + 1`,
//! so a client can tell what it missed.
//!
//! # Example
//! ```
//! use cwtch_node::blob_store::{BlobReader, BlobStore, GroupCommitter, RetentionPolicy};
//! use cwtch_proto::group::SEALED_BLOB_LEN;
//!
//! # fn main() -> Result<(), cwtch_node::blob_store::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("blobs.sqlite");
//! let policy = RetentionPolicy { max_blobs: Some(1_000_000), ..RetentionPolicy::UNLIMITED };
//! let committer = GroupCommitter::start(BlobStore::open(&path, policy)?)?;
//! let reader = BlobReader::open(&path)?;
//! let mut watch = committer.watch_head();
//!
//! smol::block_on(async {
//!     // Resolves once the blob is durable; many posts share one fsync.
//!     let index = committer.submit(Box::new([7u8; SEALED_BLOB_LEN])).await?;
//!     assert_eq!(index, 1);
//!     assert_eq!(watch.changed().await?, 1);
//!     let page = reader.read_after(0, 100)?;
//!     assert_eq!(page[0].0, 1);
//!     Ok::<_, cwtch_node::blob_store::Error>(())
//! })?;
//! let store = committer.shutdown()?;
//! assert_eq!(store.head(), 1);
//! # Ok(())
//! # }
//! ```

mod committer;
mod reads;

pub use committer::{CommitLatency, CommitterConfig, GroupCommitter, HeadWatch};
pub use reads::{ReadThread, Run};

use std::ops::{ControlFlow, Range};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cwtch_proto::group::SEALED_BLOB_LEN;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

/// One sealed blob as the store keeps it.
pub type Blob = [u8; SEALED_BLOB_LEN];

/// The most blobs one read returns (2 MiB of blobs); larger limits are
/// clamped to it, so a read never allocates without bound.
pub const MAX_READ_LIMIT: usize = 1024;

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
/// Rows deleted per prune transaction, so that the writer is never held
/// for long.
const PRUNE_CHUNK: u64 = 4096;
/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page cache of the writer connection, in KiB (SQLite's default is 2 MiB,
/// less than one batch of 1024 blobs, which would spill mid-transaction).
const WRITER_CACHE_KIB: i64 = 32 * 1024;
/// SQLite's automatic checkpoint threshold, in pages (16 MiB of 64 KiB
/// pages), used when no [`GroupCommitter`] checkpoints in the background.
const AUTOCHECKPOINT_PAGES: u32 = 256;

/// Everything that can go wrong in the blob store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A blob of the wrong length was offered.
    #[error("blob is {len} bytes; sealed blobs are exactly {SEALED_BLOB_LEN} bytes")]
    WrongSize {
        /// The length offered.
        len: usize,
    },
    /// A stored blob has the wrong length: the database was altered.
    #[error("stored blob {index} is {len} bytes, not {SEALED_BLOB_LEN}: the database is corrupt")]
    CorruptBlob {
        /// Its index.
        index: u64,
        /// Its length.
        len: usize,
    },
    /// The file is a SQLite database but not a blob store.
    #[error("not a blob store (application_id {found:#x})")]
    NotABlobStore {
        /// The application id found.
        found: i32,
    },
    /// The blob store was written by an unknown schema version.
    #[error(
        "unsupported blob store schema version {found} (this build knows {SCHEMA_VERSION_1} and {SCHEMA_VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        found: i32,
    },
    /// SQLite refused to put the database in WAL mode.
    #[error("could not enable WAL mode (journal_mode is {mode})")]
    NoWal {
        /// The journal mode SQLite reports.
        mode: String,
    },
    /// `PRAGMA integrity_check` or the store's own invariants failed.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// No more indices (2^63 - 1 blobs have been stored).
    #[error("blob indices exhausted")]
    IndicesExhausted,
    /// The group committer has stopped (shut down, or after a fatal error).
    #[error("the group committer has stopped")]
    Closed,
    /// The committer's queue is full; try again later.
    #[error("the group committer's queue is full")]
    QueueFull,
    /// A post would not get the index it was promised when queued (after
    /// a failed commit): the committer stops rather than break the promise.
    #[error("a promised index would go to another blob")]
    IndexMismatch,
    /// The batch this post was part of failed to commit; it is not stored.
    #[error("commit failed: {0}")]
    CommitFailed(Arc<Error>),
    /// The writer thread could not be started.
    #[error("could not start the writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The writer thread panicked.
    #[error("the writer thread panicked")]
    WriterPanicked,
    /// An error from SQLite.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How much the store keeps; `None` means no limit. Applied by
/// [`BlobStore::prune`], always removing the oldest blobs first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep at most this many blobs.
    pub max_blobs: Option<u64>,
    /// Keep at most this many bytes of blobs (counted as
    /// `blobs * SEALED_BLOB_LEN`, the payload; the file is somewhat larger).
    pub max_bytes: Option<u64>,
    /// Remove blobs received more than this long ago.
    pub max_age: Option<Duration>,
}

impl RetentionPolicy {
    /// Keep everything.
    pub const UNLIMITED: Self = Self {
        max_blobs: None,
        max_bytes: None,
        max_age: None,
    };
}

/// What [`BlobStore::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Blobs removed in all.
    pub removed: u64,
    /// Of those, removed to get under `max_blobs` / `max_bytes`.
    pub removed_for_space: u64,
    /// Of those, removed only because they were older than `max_age`.
    pub removed_for_age: u64,
    /// The oldest index still stored, if any.
    pub oldest: Option<u64>,
}

/// A snapshot of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blobs stored.
    pub blobs: u64,
    /// Bytes of blobs stored (`blobs * SEALED_BLOB_LEN`).
    pub bytes: u64,
    /// The index of the last blob ever stored (0 if none ever was); it
    /// does not go down when blobs are pruned.
    pub head: u64,
    /// The index of the oldest blob still stored.
    pub oldest: Option<u64>,
    /// When the oldest blob still stored was received (unix seconds).
    pub oldest_received_at: Option<u64>,
    /// Append transactions committed since this store was opened (each is
    /// one `fsync` of the WAL).
    pub commits: u64,
    /// Blobs appended since this store was opened.
    pub appended: u64,
}

/// The current time in unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

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
/// schema version: the largest of the largest stored index, the recorded
/// high-water mark (version 2) and SQLite's `AUTOINCREMENT` counter
/// (version 1).
///
/// While blobs are stored, the newest of them is the head (pruning takes
/// the oldest first and the newest only with all the rest): a recorded
/// mark above it, or below zero, is refused as corruption, since it would
/// make the next prune delete far past what is stored.
pub(crate) fn query_head(conn: &Connection) -> Result<u64> {
    head_of(conn, check_identity(conn)?)
}

/// [`query_head`] in a store already checked to be of `version`.
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

/// Calls `f` for up to `limit` (at most [`MAX_READ_LIMIT`]) blobs with
/// index greater than `cursor`, in index order; returns how many it saw.
fn visit_after<F>(conn: &Connection, cursor: u64, limit: usize, mut f: F) -> Result<usize>
where
    F: FnMut(u64, &Blob) -> ControlFlow<()>,
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
    let sql = format!("SELECT idx, blob FROM blobs WHERE idx > ?1 ORDER BY idx LIMIT {limit}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![cursor])?;
    let mut seen = 0;
    while let Some(row) = rows.next()? {
        let index = from_sql_int(row.get(0)?)?;
        let bytes = row
            .get_ref(1)?
            .as_blob()
            .map_err(|_| Error::CorruptBlob { index, len: 0 })?;
        let blob: &Blob = bytes.try_into().map_err(|_| Error::CorruptBlob {
            index,
            len: bytes.len(),
        })?;
        seen += 1;
        if f(index, blob).is_break() {
            break;
        }
    }
    Ok(seen)
}

fn read_after_vec(conn: &Connection, cursor: u64, limit: usize) -> Result<Vec<(u64, Box<Blob>)>> {
    let mut out = Vec::with_capacity(limit.min(MAX_READ_LIMIT));
    visit_after(conn, cursor, limit, |index, blob| {
        out.push((index, Box::new(*blob)));
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// Turns a slice into a blob, or says why not.
pub fn blob_from_slice(bytes: &[u8]) -> Result<&Blob> {
    bytes
        .try_into()
        .map_err(|_| Error::WrongSize { len: bytes.len() })
}

/// The durable store of sealed blobs (synchronous; one writer).
///
/// Use it directly from one thread, or hand it to a [`GroupCommitter`] to
/// share it between async tasks.
#[derive(Debug)]
pub struct BlobStore {
    conn: Connection,
    policy: RetentionPolicy,
    head: u64,
    oldest: Option<u64>,
    commits: u64,
    appended: u64,
    last_commit: Duration,
    path: std::path::PathBuf,
    /// The schema version of the file (1 or [`SCHEMA_VERSION`]).
    version: i32,
}

impl BlobStore {
    /// Opens the store at `path`, creating it if there is no file there.
    ///
    /// Fails with [`Error::NotABlobStore`] or [`Error::UnsupportedVersion`]
    /// for a database that is not one of ours, and with [`Error::Sqlite`]
    /// for a file that is not a database.
    pub fn open(path: impl AsRef<Path>, policy: RetentionPolicy) -> Result<Self> {
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
        let version = check_identity(&conn)?;

        let head = head_of(&conn, version)?;
        let oldest = query_oldest(&conn)?.map(|(idx, _)| idx);
        Ok(Self {
            conn,
            policy,
            head,
            oldest,
            commits: 0,
            appended: 0,
            last_commit: Duration::ZERO,
            path: path.to_owned(),
            version,
        })
    }

    /// The path the store was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The retention policy [`prune`](Self::prune) applies.
    pub fn policy(&self) -> RetentionPolicy {
        self.policy
    }

    /// Replaces the retention policy (applied at the next prune).
    pub fn set_policy(&mut self, policy: RetentionPolicy) {
        self.policy = policy;
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

    /// Appends one blob given as a slice, refusing any length but
    /// [`SEALED_BLOB_LEN`] with [`Error::WrongSize`].
    pub fn append(&mut self, blob: &[u8]) -> Result<u64> {
        let blob = blob_from_slice(blob)?;
        Ok(self.append_iter(std::iter::once(blob), unix_now())?.start)
    }

    /// Appends blobs given as slices in one transaction; if any has the
    /// wrong length nothing is written and [`Error::WrongSize`] is returned.
    pub fn append_slices(&mut self, blobs: &[&[u8]]) -> Result<Range<u64>> {
        // Validate everything before writing anything.
        for blob in blobs {
            blob_from_slice(blob)?;
        }
        let blobs = blobs.iter().filter_map(|b| <&Blob>::try_from(*b).ok());
        self.append_iter(blobs, unix_now())
    }

    /// The one write path: all of `blobs` in one transaction.
    pub(crate) fn append_iter<'a, I>(&mut self, blobs: I, received_at: u64) -> Result<Range<u64>>
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

    /// Like [`read_after`](Self::read_after) without copying: calls `f`
    /// with each blob in turn (stop early with `ControlFlow::Break`).
    /// Returns how many blobs `f` saw.
    pub fn visit_after<F>(&self, cursor: u64, limit: usize, f: F) -> Result<usize>
    where
        F: FnMut(u64, &Blob) -> ControlFlow<()>,
    {
        visit_after(&self.conn, cursor, limit, f)
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

    /// Removes the oldest blobs until the retention policy holds at `now`
    /// (unix seconds): first down to `max_blobs` and `max_bytes`, then
    /// every blob received before `now - max_age` (a blob exactly
    /// `max_age` old is kept). Age pruning removes a prefix: it stops at
    /// the first blob young enough, so the stored blobs stay contiguous
    /// even if the clock once went backwards.
    pub fn prune(&mut self, now: u64) -> Result<PruneStats> {
        let mut stats = PruneStats {
            oldest: self.oldest,
            ..PruneStats::default()
        };
        let Some(oldest) = self.oldest else {
            return Ok(stats);
        };
        let stored = self.head - oldest + 1;
        let mut keep = stored;
        if let Some(max) = self.policy.max_blobs {
            keep = keep.min(max);
        }
        if let Some(max) = self.policy.max_bytes {
            keep = keep.min(max / SEALED_BLOB_LEN as u64);
        }
        // The first index kept for space reasons (head + 1: none).
        let space_cut = self.head + 1 - keep;
        let mut cut = space_cut;
        if let Some(max_age) = self.policy.max_age {
            let cutoff = now.saturating_sub(max_age.as_secs());
            let cutoff = i64::try_from(cutoff).unwrap_or(i64::MAX);
            let young: Option<i64> = self
                .conn
                .prepare_cached(
                    "SELECT idx FROM blobs WHERE idx >= ?1 AND received_at >= ?2
                     ORDER BY idx LIMIT 1",
                )?
                .query_row(params![to_sql_int(cut)?, cutoff], |r| r.get(0))
                .optional()?;
            cut = match young {
                Some(idx) => from_sql_int(idx)?,
                None => self.head + 1,
            };
        }
        if cut <= oldest {
            return Ok(stats);
        }
        // Delete in chunks so no single transaction holds the writer long.
        let mut from = oldest;
        while from < cut {
            let to = cut.min(from.saturating_add(PRUNE_CHUNK));
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached("DELETE FROM blobs WHERE idx < ?1")?
                .execute(params![to_sql_int(to)?])?;
            if self.version != SCHEMA_VERSION_1 {
                // In the same transaction as the delete: if it removes the
                // last blob, the index stays known.
                tx.prepare_cached(
                    "INSERT INTO meta (name, value) VALUES ('high_water', ?1)
                     ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                )?
                .execute(params![to_sql_int(self.head)?])?;
            }
            tx.commit()?;
            self.oldest = if to > self.head { None } else { Some(to) };
            from = to;
        }
        stats.removed = cut - oldest;
        stats.removed_for_space = space_cut.max(oldest) - oldest;
        stats.removed_for_age = stats.removed - stats.removed_for_space;
        stats.oldest = self.oldest;
        Ok(stats)
    }

    /// A snapshot of the store.
    pub fn stats(&self) -> Result<Stats> {
        let oldest = query_oldest(&self.conn)?;
        let blobs = oldest.map_or(0, |(idx, _)| self.head.saturating_sub(idx) + 1);
        Ok(Stats {
            blobs,
            bytes: blobs.saturating_mul(SEALED_BLOB_LEN as u64),
            head: self.head,
            oldest: oldest.map(|(idx, _)| idx),
            oldest_received_at: oldest.map(|(_, at)| at),
            commits: self.commits,
            appended: self.appended,
        })
    }

    /// Runs `PRAGMA integrity_check` and checks the store's own invariants
    /// (the stored blobs are exactly `oldest..=head`, all of the right
    /// size). Reads the whole database.
    pub fn integrity_check(&self) -> Result<()> {
        integrity_check(&self.conn, self.head)
    }

    /// Turns SQLite's automatic checkpoints (run by the committing
    /// connection, inside the commit) off, for a background checkpointer,
    /// or back on.
    pub(crate) fn set_autocheckpoint(&self, on: bool) -> Result<()> {
        let pages = if on { AUTOCHECKPOINT_PAGES } else { 0 };
        self.conn.pragma_update(None, "wal_autocheckpoint", pages)?;
        Ok(())
    }

    /// `PRAGMA wal_checkpoint(RESTART)`: finishes copying the WAL into the
    /// database file so that the next commit starts the WAL over. Returns
    /// whether it completed.
    ///
    /// It never waits for readers: a reader of an old snapshot (a long
    /// fetch, `server backup`'s one read transaction) would hold every
    /// commit behind it for the busy timeout, again after every batch. With
    /// no busy handler the restart gives up at once and is tried again
    /// later; the WAL grows meanwhile, and everything stays durable.
    pub(crate) fn checkpoint_restart(&self) -> Result<bool> {
        self.conn.busy_timeout(std::time::Duration::ZERO)?;
        let busy = self
            .conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(busy? == 0)
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

/// A second read-write connection that only runs checkpoints (see
/// [`GroupCommitter`]). A checkpoint syncs the WAL, copies it into the
/// database file and syncs that before the WAL may be reused.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    conn: Connection,
}

/// What one checkpoint did, in WAL frames (pages).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckpointOutcome {
    /// Frames in the WAL.
    pub(crate) log: i64,
}

impl Checkpointer {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure_common(&conn)?;
        check_identity(&conn)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(Self { conn })
    }

    /// `PRAGMA wal_checkpoint(PASSIVE)`: copies what it can without
    /// blocking the writer.
    pub(crate) fn checkpoint(&self) -> Result<CheckpointOutcome> {
        let log: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?;
        Ok(CheckpointOutcome { log })
    }
}

/// A read-only connection to a blob store, for reading while a
/// [`BlobStore`] (or [`GroupCommitter`]) writes: WAL lets readers and the
/// writer work at once. Each call sees the latest committed state.
#[derive(Debug)]
pub struct BlobReader {
    conn: Connection,
}

impl BlobReader {
    /// Opens an existing blob store read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure_common(&conn)?;
        check_identity(&conn)?;
        Ok(Self { conn })
    }

    /// See [`BlobStore::read_after`].
    pub fn read_after(&self, cursor: u64, limit: usize) -> Result<Vec<(u64, Box<Blob>)>> {
        read_after_vec(&self.conn, cursor, limit)
    }

    /// See [`BlobStore::visit_after`].
    pub fn visit_after<F>(&self, cursor: u64, limit: usize, f: F) -> Result<usize>
    where
        F: FnMut(u64, &Blob) -> ControlFlow<()>,
    {
        visit_after(&self.conn, cursor, limit, f)
    }

    /// The index of the last blob ever committed (0 if none).
    pub fn head(&self) -> Result<u64> {
        query_head(&self.conn)
    }

    /// The index of the oldest blob stored, if any.
    pub fn oldest(&self) -> Result<Option<u64>> {
        Ok(query_oldest(&self.conn)?.map(|(idx, _)| idx))
    }
}
